//! The replayer of stream mode, split by concern:
//!
//! - `reader.rs`: the reader thread (capture → decode → reassembly → TLS → dispatch), which
//!   opens a session task per replayed copy and feeds it;
//! - `inbox.rs`: the memory-bounded queue between the reader and each session task;
//! - `session.rs`: the session core, sans-IO (time and bytes in; what to write and when to wake
//!   out), which gates each request by the shared conversation core (`crate::conversation`);
//! - `task.rs`: the thin tokio task that connects to the target and drives the core;
//! - `measure.rs`: each request's measurements, turned into the report's samples;
//! - `metrics.rs`: `--metrics`, the run's figures while it runs.
//!
//! This file holds the run: its checks, the shared state ([`Ctx`]) and the loop over the input.
//!
//! Memory: queued replay data is bounded by a byte semaphore (`--queue-mb`); offline, the reader
//! waits for room (and, when timed, stays at most [`LOOKAHEAD`] ahead of the schedule); live,
//! a session that does not fit is dropped whole and counted.

mod inbox;
mod measure;
mod metrics;
mod reader;
mod session;
mod task;

use super::proxy;
use super::reassembly::ReassemblyConfig;
use super::source::{build_filter, LiveSource};
use super::tls::{KeyLogFollower, TargetTls, TlsFilter};
use super::{StreamCommon, StreamOptions, StreamSource};
use crate::mapping::TargetMapping;
use crate::report::exchange::FieldConfig;
use crate::report::{Collector, Report};
use anyhow::Context as _;
use metrics::{serve_metrics, FleetCounters};
use reader::{Reader, ReaderCounts};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tcpclone::capture::CaptureReader;
use tcpclone::decode::Protocol;
use tokio::sync::{Notify, Semaphore};

/// How far ahead of the schedule the offline reader reads.
pub const LOOKAHEAD: Duration = Duration::from_millis(500);

/// Shared state of a run.
struct Ctx {
    start: Instant,
    speedup: f64,
    timed: bool,
    no_wait: bool,
    diff: bool,
    proxy: Option<proxy::ProxyVersion>,
    response_timeout: Duration,
    connect_timeout: Duration,
    session_interval: Option<Duration>,
    next_slot: Mutex<Option<Instant>>,
    collector: Mutex<Collector>,
    active: AtomicUsize,
    idle: Notify,
    connect_failed: AtomicU64,
    /// Connections to `--baseline-target` that could not be made.
    baseline_connect_failed: AtomicU64,
    dropped: AtomicU64,
    /// The reader's session counts, published for `--metrics` as they change.
    published: ReaderCounts,
    /// `--target-tls` settings.
    target_tls: Option<TargetTls>,
    /// TLS handshakes with the target that failed, by rustls's reason.
    target_tls_failed: Mutex<std::collections::BTreeMap<String, u64>>,
    /// Cancelled on SIGINT/SIGTERM: sessions not started yet are skipped, schedule waits end.
    stopping: tokio_util::sync::CancellationToken,
    /// Verdicts (`--protocol`, `--diff` fields, `--baseline-target`).
    verdict: VerdictCtx,
}

/// What the per-endpoint report and the protocol-aware diff need from the replay.
struct VerdictCtx {
    /// `--protocol`; `None`: by the captured server port.
    protocol: Option<Protocol>,
    /// `--diff`: compare decoded responses by these fields.
    fields: Option<Arc<FieldConfig>>,
    /// `--baseline-target`: every session is replayed there too, to learn the noise.
    baseline: Option<SocketAddr>,
}

/// Decrements the active-session count when a session task ends.
struct ActiveGuard(Arc<Ctx>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        if self.0.active.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// One replayed session copy.
struct Plan {
    id: u64,
    key: tcpclone::flow::FlowKey,
    target: SocketAddr,
    open_ts: u64,
    /// Capture time of the loop's first packet, and the instant it maps to.
    t0: u64,
    base: Instant,
    /// Original-time offset of this loop (production throughput axis).
    orig_base: Duration,
    /// `--target-tls`: the rustls config (ALPN) and server name for this session.
    tls: Option<(
        Arc<rustls::ClientConfig>,
        rustls::pki_types::ServerName<'static>,
    )>,
    /// The protocol its requests and responses are decoded as.
    protocol: Protocol,
    /// A copy replayed to `--baseline-target` (teaches noise; not in the target's figures).
    baseline: bool,
    /// `--from`: acknowledges the recorded session once every copy's task has ended, stores
    /// its sent mark before the first write, and says whether it is a repeat.
    done: Option<crate::fleet::from::DoneToken>,
}

impl Plan {
    /// The copy's original schedule.
    fn schedule(&self, ctx: &Ctx) -> session::Schedule {
        session::Schedule {
            timed: ctx.timed,
            speedup: ctx.speedup,
            base: self.base,
            t0: self.t0,
        }
    }

    /// What the copy's samples say about it.
    fn sample_context(&self, ctx: &Ctx) -> measure::SampleContext {
        measure::SampleContext {
            session: self.id,
            start: ctx.start,
            t0: self.t0,
            orig_base: self.orig_base,
            protocol: self.protocol,
            diff: ctx.diff,
            fields: ctx.verdict.fields.clone(),
            baseline: self.baseline,
        }
    }

    /// The release gate's options in stream mode (see `session.rs`).
    fn gate_rules(&self, ctx: &Ctx) -> crate::conversation::GateRules {
        crate::conversation::GateRules {
            no_wait: ctx.no_wait,
            idle_gap: Duration::ZERO,
            response_timeout: ctx.response_timeout,
            // The capture's own timing paces stream mode's requests.
            max_lag: None,
            lag_min_bytes: 0,
        }
    }
}

fn find_target(mappings: &[TargetMapping], dst: SocketAddr) -> Option<SocketAddr> {
    mappings
        .iter()
        .find(|m| m.online_port == dst.port() && m.online_ip.is_none_or(|ip| ip == dst.ip()))
        .map(|m| m.target)
}

/// The capture file: the one opened before the privilege drop, or opened now by path.
fn open_offline(
    opts: &StreamOptions,
    path: &std::path::Path,
) -> anyhow::Result<CaptureReader<std::io::BufReader<std::fs::File>>> {
    match &opts.offline_capture {
        Some(c) => c.reader(),
        None => Ok(CaptureReader::open(path)?),
    }
}

/// Replays according to `common` and `opts`. Returns the report and, when the input failed
/// part-way (a damaged capture, a capture device gone), that error: what was read is replayed.
pub fn run(
    common: &StreamCommon,
    opts: &StreamOptions,
) -> anyhow::Result<(Report, Option<anyhow::Error>)> {
    anyhow::ensure!(
        !common.mappings.is_empty(),
        "stream mode needs at least one -x mapping"
    );
    anyhow::ensure!(
        common.speedup > 0.0 && common.speedup.is_finite(),
        "-a/--speedup must be > 0"
    );
    anyhow::ensure!(common.copies >= 1, "-n/--copies must be at least 1");
    anyhow::ensure!(common.percentage <= 100, "-r/--percentage must be 0..100");
    anyhow::ensure!(opts.loops >= 1, "--loop must be at least 1");
    for p in &opts.report {
        let ok = matches!(
            p.extension().and_then(|e| e.to_str()),
            Some("json" | "html" | "htm")
        );
        anyhow::ensure!(
            ok,
            "--report {}: the file name must end in .json or .html",
            p.display()
        );
    }
    if let Some(r) = opts.max_sessions_per_sec {
        anyhow::ensure!(r > 0.0, "--max-sessions-per-sec must be > 0");
    }
    if let StreamSource::Offline(path) = &common.source {
        // Fail before anything starts when the file cannot be read at all.
        open_offline(opts, path)?;
    }
    let t = &opts.tls;
    if !t.target_tls
        && (t.target_sni.is_some()
            || t.target_ca.is_some()
            || t.target_insecure
            || t.target_cert.is_some()
            || t.target_key.is_some()
            || t.target_alpn.is_some())
    {
        anyhow::bail!("--target-sni/-ca/-insecure/-cert/-key/-alpn need --target-tls");
    }
    let target_tls = t.target_tls.then(|| TargetTls::new(t)).transpose()?;
    // `--from` replays a recording on its original timing, like a capture file.
    let live = matches!(common.source, StreamSource::Live { .. }) && opts.fleet.from.is_none();
    anyhow::ensure!(
        t.tls_key_wait.is_finite() && t.tls_key_wait >= 0.0,
        "--tls-key-wait must be a number of seconds >= 0"
    );
    let (tls_filter, follower) = match &t.tls_keylog {
        Some(path) => {
            let file = t.keylog_file();
            let (keys, offset, lines) = super::tls::load_keylog_from(path, file, common.force)?;
            if live {
                // Live: the key log grows while sessions are captured; records wait for their
                // secrets within --tls-key-wait and half the queue bound.
                let wait = (t.tls_key_wait * 1e9) as u64;
                let max_held = (opts.queue_mb.max(1) << 20) / 2;
                (
                    Some(TlsFilter::with_wait(keys, true, wait, max_held)),
                    Some(KeyLogFollower::with_file(
                        path,
                        file.and_then(|f| f.try_clone().ok()),
                        offset,
                        lines,
                    )),
                )
            } else {
                (Some(TlsFilter::new(keys)), None)
            }
        }
        None => (None, None),
    };
    let mut collector = Collector::new("stream", opts.diff.then_some(opts.diff_ignore.as_slice()))?;
    let v = &opts.verdict;
    let fields = opts.diff.then(|| v.field_config());
    if let Some(f) = &fields {
        collector = collector.with_fields(f.clone());
    }
    anyhow::ensure!(
        v.baseline_target.is_none() || opts.diff,
        "--baseline-target: needs --diff (the baseline teaches which response fields are noise)"
    );
    let ctx = Arc::new(Ctx {
        start: Instant::now(),
        speedup: common.speedup,
        timed: !opts.topspeed && !live,
        no_wait: common.no_wait,
        diff: opts.diff,
        proxy: opts.proxy_protocol,
        response_timeout: Duration::from_secs_f64(opts.response_timeout.max(0.001)),
        connect_timeout: Duration::from_secs_f64(opts.connect_timeout.max(0.001)),
        session_interval: opts
            .max_sessions_per_sec
            .map(|r| Duration::from_secs_f64(1.0 / r)),
        next_slot: Mutex::new(None),
        collector: Mutex::new(collector),
        active: AtomicUsize::new(0),
        idle: Notify::new(),
        connect_failed: AtomicU64::new(0),
        baseline_connect_failed: AtomicU64::new(0),
        dropped: AtomicU64::new(0),
        published: ReaderCounts::default(),
        target_tls,
        target_tls_failed: Mutex::new(Default::default()),
        stopping: tokio_util::sync::CancellationToken::new(),
        verdict: VerdictCtx {
            protocol: v.protocol()?,
            fields: fields.map(Arc::new),
            baseline: v.baseline_target,
        },
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        let _ = signal_hook::flag::register(sig, stop.clone());
    }
    let budget = Arc::new(Semaphore::new(opts.queue_mb.max(1) << 20));
    let mut reader = Reader {
        ctx: ctx.clone(),
        handle: rt.handle().clone(),
        common,
        budget,
        budget_total: opts.queue_mb.max(1) << 20,
        live,
        routes: HashMap::new(),
        seen: 0,
        without_syn: 0,
        partial: 0,
        sampled_out: 0,
        replayed: 0,
        tls: tls_filter,
        tls_published_at: std::cell::Cell::new(u64::MAX),
        follower,
        followed_at: Instant::now(),
        polled_ts: 0,
        recorder: None,
        done_token: None,
    };
    // Fleet mode (tcpcopy/src/fleet): --record swaps replay for the recorder, --from swaps the
    // capture for a worker pulling from JetStream.
    let fleet = crate::fleet::Hooks::new(opts, common, live, rt.handle())?;
    reader.recorder = fleet.recorder;
    let worker_counters = Arc::new(crate::fleet::from::WorkerCounters::default());
    let _metrics = match opts.metrics {
        Some(addr) => Some(serve_metrics(
            addr,
            ctx.clone(),
            reader.budget.clone(),
            reader.budget_total,
            FleetCounters {
                record: reader.recorder.as_ref().map(|r| r.counters.clone()),
                worker: fleet.worker.is_some().then(|| worker_counters.clone()),
            },
        )?),
        None => None,
    };
    let cfg = ReassemblyConfig {
        servers: common
            .mappings
            .iter()
            .map(|m| (m.online_ip, m.online_port))
            .collect(),
        idle_timeout_ns: opts.stream_idle_timeout.saturating_mul(1_000_000_000),
        ..Default::default()
    };
    let result: anyhow::Result<()> = (|| {
        if let Some(w) = &fleet.worker {
            return crate::fleet::run_worker(
                &mut reader,
                w,
                opts,
                rt.handle(),
                &stop,
                worker_counters.clone(),
            );
        }
        match &common.source {
            StreamSource::Offline(path) => {
                let mut base = ctx.start;
                let mut orig_base = Duration::ZERO;
                for _ in 0..opts.loops {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let mut src = open_offline(opts, path)?;
                    let span = reader.pump(&mut src, cfg.clone(), base, orig_base, &stop)?;
                    base += Duration::from_secs_f64(span.as_secs_f64() / ctx.speedup)
                        + Duration::from_millis(1);
                    orig_base += span + Duration::from_millis(1);
                    if !ctx.timed {
                        base = Instant::now();
                    }
                }
            }
            StreamSource::Live { interfaces, filter } => {
                // --tls-keylog needs the server's side too: its ServerHello names the suite
                // and the version, without which no record can be decrypted.
                let both = opts.with_responses || opts.tls.tls_keylog.is_some();
                let f = build_filter(&common.mappings, both, filter.as_deref());
                let mut src = LiveSource::open(
                    interfaces,
                    &f,
                    opts.queue_mb,
                    stop.clone(),
                    opts.duration.map(Duration::from_secs_f64),
                )?;
                // Sessions waiting for their secrets wait on capture time: keep it moving.
                src.idle_ticks = opts.tls.tls_keylog.is_some();
                crate::stream::log_info(&format!("--stream: capturing with filter `{f}`"));
                reader.pump(&mut src, cfg.clone(), ctx.start, Duration::ZERO, &stop)?;
                let drops = src.kernel_drops.load(Ordering::Relaxed);
                if drops > 0 {
                    crate::stream::log_warn(&format!(
                        "the kernel dropped {drops} captured packets"
                    ));
                }
            }
        }
        Ok(())
    })();
    if let Some(rec) = reader.recorder.take() {
        crate::fleet::finish_recorder(rec, opts);
    }
    // Close every session still routed (interrupted), then wait for the tasks.
    reader.routes.clear();
    if stop.load(Ordering::Relaxed) {
        ctx.stopping.cancel();
    }
    let waited = ctx.clone();
    rt.block_on(async move {
        loop {
            let notified = waited.idle.notified();
            if waited.active.load(Ordering::SeqCst) == 0 {
                break;
            }
            let _ = tokio::time::timeout(Duration::from_millis(100), notified).await;
        }
    });
    let mut c = ctx.collector.lock().unwrap_or_else(|e| e.into_inner());
    c.sessions.seen = reader.seen;
    c.sessions.without_syn = reader.without_syn;
    c.sessions.partial = reader.partial;
    c.sessions.sampled_out = reader.sampled_out;
    c.sessions.replayed = reader.replayed;
    c.sessions.dropped = ctx.dropped.load(Ordering::Relaxed);
    c.sessions.connect_failed = ctx.connect_failed.load(Ordering::Relaxed);
    c.sessions.baseline_connect_failed = ctx.baseline_connect_failed.load(Ordering::Relaxed);
    c.sessions.repeats = worker_counters.repeats.load(Ordering::Relaxed);
    c.source = Some(crate::fleet::report_source(
        fleet.worker.as_ref(),
        &common.source,
    ));
    if reader.tls.is_some() || ctx.target_tls.is_some() {
        let mut counts = reader.tls.take().map(|f| f.counts).unwrap_or_default();
        counts.target_handshake_failed = ctx
            .target_tls_failed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        c.tls = Some(counts);
    }
    Ok((c.finish(ctx.start.elapsed()), result.err()))
}

#[cfg(test)]
mod tests;
