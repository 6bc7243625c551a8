//! The replayer: a reader thread (capture → decode → reassembly → dispatch) and one tokio task
//! per replayed session (copy) that connects to the target, sends the client's bytes on the
//! original schedule (scaled, or at top speed), gated on the target's responses, and measures
//! every request for the report.
//!
//! Memory: queued replay data is bounded by a byte semaphore (`--queue-mb`); offline, the reader
//! waits for room (and, when timed, stays at most [`LOOKAHEAD`] ahead of the schedule); live,
//! a session that does not fit is dropped whole and counted.

use super::decode::decode;
use super::proxy;
use super::reassembly::{Reassembler, ReassemblyConfig, SessionId, Side, StreamEvent};
use super::source::{build_filter, LiveSource};
use super::tls::{Conn, KeyLogFollower, TargetTls, TlsFilter};
use super::{StreamCommon, StreamOptions, StreamSource};
use crate::mapping::TargetMapping;
use crate::report::exchange::{analyze_burst, arrival, FieldConfig, MAX_PIPELINED};
use crate::report::{
    Collector, DiffInput, Outcome, ProductionSample, Report, RequestSample, DIFF_CAP,
};
use anyhow::Context as _;
use bytes::Bytes;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tcpclone::capture::CaptureReader;
use tcpclone::capture::PacketSource;
use tcpclone::decode::Protocol;
use tokio::net::TcpStream;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

/// How far ahead of the schedule the offline reader reads.
pub const LOOKAHEAD: Duration = Duration::from_millis(500);
thread_local! {
    /// The read buffer of this worker thread, shared by all its connections.
    static READ_BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0u8; 64 * 1024]);
}

/// Request bytes kept to name a request in diff examples.
const PREVIEW: usize = 96;
/// After the last request of a session that did not end with a FIN: quiet time that ends the response.
const QUIET: Duration = Duration::from_millis(100);

/// The reader's session counts as `--metrics` reads them (the reader keeps its own and stores
/// them here; the summary takes the reader's at the end).
#[derive(Default)]
struct ReaderCounts {
    seen: AtomicU64,
    without_syn: AtomicU64,
    partial: AtomicU64,
    sampled_out: AtomicU64,
    replayed: AtomicU64,
    /// `--tls-keylog`: the decryption counts, copied when sessions come and at the end.
    tls: Mutex<Option<crate::report::TlsCounts>>,
}

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
    fields: Option<FieldConfig>,
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

/// What the reader hands to a session task.
enum Item {
    Data {
        side: Side,
        ts: u64,
        bytes: Bytes,
        len: usize,
        new_message: bool,
        server_seen: bool,
        _permit: Option<OwnedSemaphorePermit>,
    },
    Fin {
        side: Side,
        ts: u64,
    },
    Close,
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
    /// `--from`: acknowledges the recorded session once every copy's task has ended.
    _done: Option<crate::fleet::from::DoneToken>,
}

impl Plan {
    fn sched(&self, ctx: &Ctx, ts: u64) -> Option<Instant> {
        ctx.timed.then(|| {
            self.base
                + Duration::from_secs_f64(ts.saturating_sub(self.t0) as f64 / 1e9 / ctx.speedup)
        })
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
        dropped: AtomicU64::new(0),
        published: ReaderCounts::default(),
        target_tls,
        target_tls_failed: Mutex::new(Default::default()),
        stopping: tokio_util::sync::CancellationToken::new(),
        verdict: VerdictCtx {
            protocol: v.protocol()?,
            fields,
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
                super::log_info(&format!("--stream: capturing with filter `{f}`"));
                reader.pump(&mut src, cfg.clone(), ctx.start, Duration::ZERO, &stop)?;
                let drops = src.kernel_drops.load(Ordering::Relaxed);
                if drops > 0 {
                    super::log_warn(&format!("the kernel dropped {drops} captured packets"));
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

/// Fleet mode's counters, for `--metrics`.
struct FleetCounters {
    /// `--record`.
    record: Option<Arc<crate::fleet::record::RecordCounters>>,
    /// `--from`.
    worker: Option<Arc<crate::fleet::from::WorkerCounters>>,
}

/// `--tls-keylog`'s counts as metrics (the report's `tls` section).
fn tls_metrics(
    s: &mut tcpclone::metrics::Snapshot,
    t: &crate::report::TlsCounts,
    target_failed: &Mutex<std::collections::BTreeMap<String, u64>>,
) {
    let rows: [(&'static str, &'static str, u64); 11] = [
        (
            "tcpclone_tcpcopy_stream_tls_sessions_decrypted",
            "[capture] TLS sessions decrypted with the key log (their plaintext replayed)",
            t.decrypted,
        ),
        (
            "tcpclone_tcpcopy_stream_tls_sessions_plaintext",
            "[capture] Sessions that were not TLS (replayed as they were)",
            t.plaintext,
        ),
        (
            "tcpclone_tcpcopy_stream_tls_sessions_without_keys",
            "[capture] TLS sessions whose secrets are not in the key log (not replayed)",
            t.without_keys,
        ),
        (
            "tcpclone_tcpcopy_stream_tls_sessions_incomplete",
            "[capture] TLS sessions that ended before their handshake did",
            t.incomplete,
        ),
        (
            "tcpclone_tcpcopy_stream_tls_records_auth_failed",
            "[capture] TLS records that failed authentication (wrong key, damaged bytes)",
            t.auth_failures,
        ),
        (
            "tcpclone_tcpcopy_stream_tls_early_records_rejected",
            "[capture] 0-RTT records the server had rejected (skipped as it skipped them)",
            t.early_rejected,
        ),
        (
            "tcpclone_tcpcopy_stream_tls_sessions_cut",
            "[capture] TLS sessions whose bytes end inside a record (capture loss)",
            t.cut_records,
        ),
        (
            "tcpclone_tcpcopy_stream_tls_sessions_failed",
            "[capture] TLS sessions that failed otherwise (malformed handshake, bad secret)",
            t.failed,
        ),
        (
            "tcpclone_tcpcopy_stream_tls_sessions_unsupported",
            "[capture] TLS sessions of a cipher suite or version tcpcopy cannot decrypt",
            t.unsupported.values().sum(),
        ),
        (
            "tcpclone_tcpcopy_stream_tls_sessions_resumed",
            "[capture] Resumed sessions among the decrypted ones",
            t.resumed,
        ),
        (
            "tcpclone_tcpcopy_stream_tls_target_handshakes_failed",
            "[target] TLS handshakes with the target that failed (--target-tls)",
            target_failed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .values()
                .sum(),
        ),
    ];
    for (name, help, v) in rows {
        s.counter(name, help, v);
    }
}

/// `--metrics`: serves the run's figures at `addr` until dropped. A scrape reads the published
/// session counts and locks the report's collector for a moment.
fn serve_metrics(
    addr: std::net::SocketAddr,
    ctx: Arc<Ctx>,
    budget: Arc<Semaphore>,
    budget_total: usize,
    fleet: FleetCounters,
) -> anyhow::Result<tcpclone::metrics::MetricsServer> {
    let registry = tcpclone::metrics::registry(
        tcpclone::build::VERSION,
        tcpclone::build::COMMIT,
        move || {
            let mut s = tcpclone::metrics::Snapshot::default();
            let p = &ctx.published;
            let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
            s.counter(
                "tcpclone_tcpcopy_stream_sessions_seen",
                "[capture] Sessions found in the capture (or the recording)",
                get(&p.seen),
            );
            s.counter(
                "tcpclone_tcpcopy_stream_sessions_replayed",
                "[target] Sessions replayed to the target (-n copies included)",
                get(&p.replayed),
            );
            s.counter(
                "tcpclone_tcpcopy_stream_sessions_sampled_out",
                "[capture] Sessions skipped by -r sampling",
                get(&p.sampled_out),
            );
            s.counter(
                "tcpclone_tcpcopy_stream_sessions_without_syn",
                "[capture] Sessions whose SYN was not captured (replayed from what was)",
                get(&p.without_syn),
            );
            s.counter(
                "tcpclone_tcpcopy_stream_sessions_partial",
                "[capture] Sessions with bytes the capture lost (replayed up to the hole)",
                get(&p.partial),
            );
            s.counter(
                "tcpclone_tcpcopy_stream_sessions_dropped",
                "[queue] Sessions dropped whole: the queue bound (--queue-mb) was reached",
                get(&ctx.dropped),
            );
            s.counter(
                "tcpclone_tcpcopy_stream_connect_failures",
                "[target] Connections to the target that could not be made",
                get(&ctx.connect_failed),
            );
            s.gauge(
                "tcpclone_tcpcopy_stream_sessions_active",
                "[target] Sessions being replayed now",
                i64::try_from(ctx.active.load(Ordering::Relaxed)).unwrap_or(i64::MAX),
            );
            s.gauge(
                "tcpclone_tcpcopy_stream_queued_bytes",
                "[queue] Captured bytes waiting for their sessions (at most --queue-mb)",
                i64::try_from(budget_total.saturating_sub(budget.available_permits()))
                    .unwrap_or(i64::MAX),
            );
            if let Some(r) = &fleet.record {
                r.metrics(&mut s);
            }
            if let Some(w) = &fleet.worker {
                w.metrics(&mut s);
            }
            if let Some(t) = p.tls.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
                tls_metrics(&mut s, t, &ctx.target_tls_failed);
            }
            ctx.collector
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .metrics(&mut s);
            s
        },
    );
    Ok(tcpclone::metrics::MetricsServer::start(addr, registry)?)
}

struct Route {
    txs: Vec<InboxTx>,
    /// Production's responses go to the sessions (compared, or decoded for the report).
    keep_server: bool,
}

struct Reader<'a> {
    ctx: Arc<Ctx>,
    handle: tokio::runtime::Handle,
    common: &'a StreamCommon,
    budget: Arc<Semaphore>,
    budget_total: usize,
    live: bool,
    routes: HashMap<SessionId, Route>,
    seen: u64,
    without_syn: u64,
    partial: u64,
    sampled_out: u64,
    replayed: u64,
    /// `--tls-keylog`: the decryption stage between reassembly and replay.
    tls: Option<TlsFilter>,
    /// The sum of the TLS counts when they were last published for `--metrics`.
    tls_published_at: std::cell::Cell<u64>,
    /// Live `--tls-keylog`: reads the key log's new lines.
    follower: Option<KeyLogFollower>,
    /// When the key log was last read (wall time: it is a file, not the capture).
    followed_at: Instant,
    /// Capture time of the last retry of the sessions waiting for secrets.
    polled_ts: u64,
    /// `--record`: sessions go to JetStream instead of being replayed.
    recorder: Option<crate::fleet::record::Recorder>,
    /// `--from`: the token of the session being dispatched, for its plans.
    done_token: Option<crate::fleet::from::DoneToken>,
}

impl crate::fleet::from::Dispatch for Reader<'_> {
    fn dispatch_session(
        &mut self,
        events: Vec<StreamEvent>,
        t0: u64,
        base: Instant,
        done: crate::fleet::from::DoneToken,
    ) {
        self.done_token = Some(done);
        for ev in events {
            self.dispatch_plain(ev, t0, base, Duration::ZERO);
        }
        self.done_token = None;
        self.publish(None);
    }
}

impl Reader<'_> {
    /// Stores the session counts for `--metrics`, with `pending`: what the reassembler still
    /// running has counted and not handed over yet.
    fn publish(&self, pending: Option<&super::reassembly::ReassemblyStats>) {
        let p = &self.ctx.published;
        let (ws, pa) = pending.map_or((0, 0), |st| (st.without_syn, st.partial));
        p.seen.store(self.seen, Ordering::Relaxed);
        p.without_syn
            .store(self.without_syn + ws, Ordering::Relaxed);
        p.partial.store(self.partial + pa, Ordering::Relaxed);
        p.sampled_out.store(self.sampled_out, Ordering::Relaxed);
        p.replayed.store(self.replayed, Ordering::Relaxed);
        if let Some(t) = &self.tls {
            // A copy when a count moved (they only grow: their sum says so), not per packet.
            let c = &t.counts;
            let sum = c.decrypted
                + c.plaintext
                + c.without_keys
                + c.incomplete
                + c.auth_failures
                + c.early_rejected
                + c.cut_records
                + c.failed
                + c.resumed
                + c.unsupported.values().sum::<u64>();
            if sum != self.tls_published_at.get() {
                self.tls_published_at.set(sum);
                *p.tls.lock().unwrap_or_else(|e| e.into_inner()) = Some(c.clone());
            }
        }
    }

    /// Reads `src` to its end through a fresh reassembler; returns the capture's time span.
    fn pump<S: PacketSource>(
        &mut self,
        src: &mut S,
        cfg: ReassemblyConfig,
        base: Instant,
        orig_base: Duration,
        stop: &AtomicBool,
    ) -> anyhow::Result<Duration> {
        let mut r = Reassembler::new(cfg);
        let mut t0: Option<u64> = None;
        let mut last = 0u64;
        let mut read_error = None;
        loop {
            let p = match src.next_packet() {
                Ok(Some(p)) => p,
                Ok(None) => break,
                Err(e) => {
                    // Replay what was read before the damage; the run still fails at the end.
                    read_error = Some(anyhow::Error::new(e));
                    break;
                }
            };
            let ts = p.ts.0;
            let first = *t0.get_or_insert(ts);
            last = last.max(ts);
            if self.ctx.timed {
                let due = base
                    + Duration::from_secs_f64(
                        ts.saturating_sub(first) as f64 / 1e9 / self.ctx.speedup,
                    );
                // In slices, so that SIGINT/SIGTERM is seen during long gaps of the capture.
                loop {
                    let now = Instant::now();
                    if due <= now + LOOKAHEAD || stop.load(Ordering::Relaxed) {
                        break;
                    }
                    std::thread::sleep((due - now - LOOKAHEAD).min(Duration::from_millis(100)));
                }
            }
            if let Some(seg) = decode(p.linktype, p.data) {
                r.handle_segment(ts, &seg);
            }
            let mut dispatched = false;
            while let Some(ev) = r.poll_event() {
                self.dispatch(ev, first, base, orig_base);
                dispatched = true;
            }
            // The counts move with sessions, not packets: published when an event came.
            if dispatched {
                self.publish(Some(&r.stats()));
            }
            self.follow_keys(ts, false, first, base, orig_base);
            if stop.load(Ordering::Relaxed) {
                break;
            }
        }
        r.finish(last);
        while let Some(ev) = r.poll_event() {
            self.dispatch(ev, t0.unwrap_or(0), base, orig_base);
        }
        self.follow_keys(last, true, t0.unwrap_or(0), base, orig_base);
        let st = r.stats();
        self.without_syn += st.without_syn;
        self.partial += st.partial;
        self.publish(None);
        if let Some(e) = read_error {
            return Err(e);
        }
        Ok(Duration::from_nanos(
            last.saturating_sub(t0.unwrap_or(last)),
        ))
    }

    /// Live `--tls-keylog`: reads new key log lines (at most every 50 ms) and retries the
    /// sessions waiting for their secrets (on new lines, and every 100 ms of capture time for
    /// the wait bound); `end`: last chance for every waiting session.
    fn follow_keys(&mut self, ts: u64, end: bool, t0: u64, base: Instant, orig_base: Duration) {
        let (Some(f), Some(filter)) = (self.follower.as_mut(), self.tls.as_mut()) else {
            return;
        };
        let mut fresh = 0;
        if end || self.followed_at.elapsed() >= Duration::from_millis(50) {
            self.followed_at = Instant::now();
            fresh = f.read_new(filter.keys_mut());
        }
        if !end && fresh == 0 && ts.saturating_sub(self.polled_ts) < 100_000_000 {
            return;
        }
        self.polled_ts = ts;
        let mut evs = Vec::new();
        filter.poll(ts, end, &mut evs);
        for ev in evs {
            self.dispatch_plain(ev, t0, base, orig_base);
        }
    }

    fn drop_session(&mut self, id: SessionId) {
        if let Some(route) = self.routes.remove(&id) {
            self.ctx
                .dropped
                .fetch_add(route.txs.len() as u64, Ordering::Relaxed);
        }
    }

    fn dispatch(&mut self, ev: StreamEvent, t0: u64, base: Instant, orig_base: Duration) {
        match self.tls.as_mut() {
            Some(f) => {
                // Sessions are counted when captured; the filter opens them for replay later.
                if matches!(ev, StreamEvent::Open { .. }) {
                    self.seen += 1;
                }
                let mut evs = Vec::new();
                f.handle(ev, &mut evs);
                for ev in evs {
                    self.dispatch_plain(ev, t0, base, orig_base);
                }
            }
            None => self.dispatch_plain(ev, t0, base, orig_base),
        }
    }

    fn dispatch_plain(&mut self, ev: StreamEvent, t0: u64, base: Instant, orig_base: Duration) {
        if let Some(rec) = self.recorder.as_mut() {
            if matches!(ev, StreamEvent::Open { .. }) && self.tls.is_none() {
                self.seen += 1;
            }
            rec.handle(ev, &self.common.mappings, self.common.percentage);
            return;
        }
        match ev {
            StreamEvent::Open { id, key, ts, .. } => {
                if self.tls.is_none() {
                    self.seen += 1;
                }
                if self.common.percentage < 100
                    && key.src_hash() % 100 >= u64::from(self.common.percentage)
                {
                    self.sampled_out += 1;
                    return;
                }
                // Never replay our own replays (live capture seeing the target connections).
                if self.common.mappings.iter().any(|m| m.target == key.dst) {
                    return;
                }
                let Some(target) = find_target(&self.common.mappings, key.dst) else {
                    return;
                };
                if self.live && self.budget.available_permits() == 0 {
                    self.ctx
                        .dropped
                        .fetch_add(u64::from(self.common.copies), Ordering::Relaxed);
                    return;
                }
                let captured = self.tls.as_mut().and_then(|f| f.take_captured(id));
                let tls = self
                    .ctx
                    .target_tls
                    .as_ref()
                    .map(|t| t.for_session(captured.as_ref(), target));
                let protocol = self
                    .ctx
                    .verdict
                    .protocol
                    .unwrap_or_else(|| Protocol::from_port(key.dst.port()));
                let mut txs = Vec::new();
                for copy in 0..self.common.copies {
                    let (tx, rx) = Inbox::new();
                    let plan = Plan {
                        id: id * u64::from(self.common.copies) + u64::from(copy),
                        key,
                        target,
                        open_ts: ts,
                        t0,
                        base,
                        orig_base,
                        tls: tls.clone(),
                        protocol,
                        baseline: false,
                        _done: self.done_token.clone(),
                    };
                    self.ctx.active.fetch_add(1, Ordering::SeqCst);
                    let guard = ActiveGuard(self.ctx.clone());
                    self.handle
                        .spawn(session(self.ctx.clone(), plan, rx, guard));
                    txs.push(tx);
                    self.replayed += 1;
                }
                if let Some(b) = self.ctx.verdict.baseline {
                    // One more copy, to the baseline; not counted as replayed.
                    let (tx, rx) = Inbox::new();
                    let plan = Plan {
                        id: id | 1 << 63,
                        key,
                        target: b,
                        open_ts: ts,
                        t0,
                        base,
                        orig_base,
                        tls: self
                            .ctx
                            .target_tls
                            .as_ref()
                            .map(|t| t.for_session(captured.as_ref(), b)),
                        protocol,
                        baseline: true,
                        _done: self.done_token.clone(),
                    };
                    self.ctx.active.fetch_add(1, Ordering::SeqCst);
                    let guard = ActiveGuard(self.ctx.clone());
                    self.handle
                        .spawn(session(self.ctx.clone(), plan, rx, guard));
                    txs.push(tx);
                }
                let keep_server = self.ctx.diff || protocol != Protocol::Tcp;
                self.routes.insert(id, Route { txs, keep_server });
            }
            StreamEvent::Data {
                id,
                side,
                ts,
                bytes,
                new_message,
                server_seen,
            } => {
                if !self.routes.contains_key(&id) {
                    return;
                }
                let len = bytes.len();
                let bytes = if side == Side::Server && !self.routes[&id].keep_server {
                    Bytes::new()
                } else {
                    bytes
                };
                let need = bytes.len().min(self.budget_total) as u32;
                let copies = self.routes[&id].txs.len();
                let mut permits = Vec::with_capacity(copies);
                for _ in 0..copies {
                    let p = if need == 0 {
                        None
                    } else if self.live {
                        match self.budget.clone().try_acquire_many_owned(need) {
                            Ok(p) => Some(p),
                            Err(_) => {
                                self.drop_session(id);
                                return;
                            }
                        }
                    } else {
                        self.handle
                            .block_on(self.budget.clone().acquire_many_owned(need))
                            .ok()
                    };
                    permits.push(p);
                }
                let route = &self.routes[&id];
                for (tx, p) in route.txs.iter().zip(permits) {
                    tx.send(Item::Data {
                        side,
                        ts,
                        bytes: bytes.clone(),
                        len,
                        new_message,
                        server_seen,
                        _permit: p,
                    });
                }
            }
            StreamEvent::Fin { id, side, ts } => {
                if let Some(route) = self.routes.get(&id) {
                    for tx in &route.txs {
                        tx.send(Item::Fin { side, ts });
                    }
                }
            }
            StreamEvent::Close { id, .. } => {
                if let Some(route) = self.routes.remove(&id) {
                    for tx in &route.txs {
                        tx.send(Item::Close);
                    }
                }
            }
        }
    }
}

/// A session's queue of items: a deque that grows with what is queued (a tokio channel would
/// allocate a block of 32 items per session up front; 10,000 sessions make that count).
struct Inbox {
    q: Mutex<VecDeque<Item>>,
    notify: Notify,
    closed: AtomicBool,
}

/// The reader's end of an [`Inbox`]; dropping it closes the inbox.
struct InboxTx(Arc<Inbox>);

impl InboxTx {
    fn send(&self, item: Item) {
        self.0
            .q
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back(item);
        self.0.notify.notify_one();
    }
}

impl Drop for InboxTx {
    fn drop(&mut self) {
        self.0.closed.store(true, Ordering::SeqCst);
        self.0.notify.notify_one();
    }
}

impl Inbox {
    fn new() -> (InboxTx, Arc<Inbox>) {
        let inbox = Arc::new(Inbox {
            q: Mutex::new(VecDeque::new()),
            notify: Notify::new(),
            closed: AtomicBool::new(false),
        });
        (InboxTx(inbox.clone()), inbox)
    }

    fn pop(&self) -> Option<Item> {
        self.q.lock().unwrap_or_else(|e| e.into_inner()).pop_front()
    }

    /// Next item; `None` once the sender is gone and the queue is empty.
    async fn recv(&self) -> Option<Item> {
        loop {
            if let Some(i) = self.pop() {
                return Some(i);
            }
            if self.closed.load(Ordering::SeqCst) {
                return self.pop();
            }
            // notify_one leaves a permit when nobody waits: no wake-up is lost.
            self.notify.notified().await;
        }
    }
}

/// One request being measured.
struct Req {
    index: u32,
    /// The request's first bytes: [`PREVIEW`] of them, or up to [`DIFF_CAP`] when decoded.
    preview: Vec<u8>,
    /// More request bytes were sent than `preview` holds.
    preview_cut: bool,
    bytes_out: u64,
    last_write: Instant,
    slip: Option<Duration>,
    prod_req_last_ts: u64,
    prod_resp_first_ts: Option<u64>,
    prod_resp_last_ts: Option<u64>,
    prod_bytes: u64,
    prod_resp: Vec<u8>,
    first_resp: Option<Instant>,
    last_resp: Option<Instant>,
    bytes_in: u64,
    resp: Vec<u8>,
    /// When each read of `resp` arrived (offset of its first byte): the latency of each
    /// request of a pipelined burst. Production's likewise, by capture timestamp.
    resp_marks: Vec<(u64, Instant)>,
    prod_marks: Vec<(u64, u64)>,
    timed_out: bool,
    expects: bool,
}

/// The state of one session copy.
struct Session {
    ctx: Arc<Ctx>,
    plan: Plan,
    stream: Conn,
    reqs: VecDeque<Req>,
    next_index: u32,
    /// Production spoke before the first request.
    prod_banner: bool,
    test_banner_at: Option<Instant>,
    eof: bool,
    reset: bool,
    broken: bool,
    /// How late past timers fired, to be taken off later waits.
    timer_debt: Duration,
}

impl Session {
    fn on_read(&mut self, at: Instant, data: &[u8]) {
        // The latest request whose last byte went out before these bytes came in.
        match self.reqs.iter_mut().rev().find(|r| r.last_write <= at) {
            Some(r) => {
                r.first_resp.get_or_insert(at);
                r.last_resp = Some(at);
                r.bytes_in += data.len() as u64;
                if (self.ctx.diff || self.plan.protocol != Protocol::Tcp) && r.resp.len() < DIFF_CAP
                {
                    let n = (DIFF_CAP - r.resp.len()).min(data.len());
                    if r.resp_marks.len() < MAX_PIPELINED {
                        r.resp_marks.push((r.resp.len() as u64, at));
                    }
                    r.resp.extend_from_slice(&data[..n]);
                }
            }
            None => {
                self.test_banner_at.get_or_insert(at);
            }
        }
    }

    /// Reads what the socket holds, without waiting (into the worker thread's buffer: no buffer
    /// per connection).
    fn drain_ready(&mut self) {
        while !self.eof {
            let res = READ_BUF.with(|b| {
                let mut buf = b.borrow_mut();
                let r = self.stream.try_read(&mut buf[..]);
                let at = Instant::now();
                match r {
                    Ok(0) => Ok(None),
                    Ok(n) => {
                        self.on_read(at, &buf[..n]);
                        Ok(Some(()))
                    }
                    Err(e) => Err(e),
                }
            });
            match res {
                Ok(Some(())) => {}
                Ok(None) => self.eof = true,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    self.eof = true;
                    self.reset = true;
                }
            }
        }
    }

    /// Reads the socket until `cond` holds, the socket ends, or `deadline` passes.
    /// A stop (SIGINT/SIGTERM) ends `interruptible` waits (schedule, not answers) at once.
    async fn pump_until(
        &mut self,
        deadline: Option<Instant>,
        interruptible: bool,
        cond: impl Fn(&Session) -> bool,
    ) -> bool {
        let stopping = self.ctx.stopping.clone();
        let timed = deadline.is_some();
        let at = deadline.unwrap_or_else(Instant::now);
        loop {
            if cond(self) {
                return true;
            }
            if self.eof {
                return false;
            }
            let ready = tokio::select! {
                r = self.stream.readable() => Some(r.is_ok()),
                _ = tokio::time::sleep_until(at.into()), if timed => None,
                _ = stopping.cancelled(), if interruptible => None,
            };
            match ready {
                Some(true) => self.drain_ready(),
                Some(false) => {
                    self.eof = true;
                    self.reset = true;
                }
                None => return cond(self),
            }
        }
    }

    /// Writes all of `bytes`, reading whatever arrives meanwhile (a server that answers while
    /// we write must never block us). False when the connection failed.
    async fn send(&mut self, bytes: &[u8]) -> bool {
        let mut off = 0;
        while off < bytes.len() {
            match self.stream.try_write(&bytes[off..]) {
                Ok(n) => off += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    let eof = self.eof;
                    let readable = tokio::select! {
                        r = self.stream.writable() => if r.is_err() { return false } else { false },
                        r = self.stream.readable(), if !eof => r.is_ok(),
                    };
                    if readable {
                        self.drain_ready();
                    }
                }
                Err(_) => return false,
            }
        }
        true
    }

    /// Waits until the previous request may be followed (its response has begun, and the
    /// original think time has passed), then until `ts`'s place in the schedule.
    async fn gate(&mut self, ts: u64) {
        let expects = match self.reqs.back() {
            Some(prev) => prev.expects,
            None => self.prod_banner && !self.ctx.no_wait,
        };
        if expects && !self.broken {
            let deadline = Instant::now() + self.ctx.response_timeout;
            let begun = self
                .pump_until(Some(deadline), false, |s| match s.reqs.back() {
                    Some(r) => r.first_resp.is_some(),
                    None => s.test_banner_at.is_some(),
                })
                .await;
            if !begun && !self.eof {
                if let Some(r) = self.reqs.back_mut() {
                    r.timed_out = true;
                }
            }
        }
        let mut send_at = self.plan.sched(&self.ctx, ts);
        if self.ctx.timed {
            // The original think time, counted from the start of the previous response.
            let think = match self.reqs.back() {
                Some(r) => r.prod_resp_first_ts.zip(r.first_resp),
                None => None,
            };
            if let Some((pf, tf)) = think {
                let t = tf
                    + Duration::from_secs_f64(
                        ts.saturating_sub(pf) as f64 / 1e9 / self.ctx.speedup,
                    );
                send_at = Some(send_at.map_or(t, |s| s.max(t)));
            }
        }
        if let Some(at) = send_at {
            // Timer overshoot (tokio's timer ticks in milliseconds) is paid back on later waits
            // so that it does not pile up over a session's think times.
            let now = Instant::now();
            if at > now {
                let pay = self.timer_debt.min(at - now);
                self.timer_debt -= pay;
                let at = at - pay;
                if at > now {
                    self.pump_until(Some(at), true, |_| false).await;
                    self.timer_debt += Instant::now().saturating_duration_since(at);
                }
            }
        }
        self.drain_ready();
    }

    /// The samples of one request burst: the first request's, then one per request pipelined
    /// after it (decoded), each timed to its own response's first byte.
    fn finish_req(&mut self, mut r: Req, out: &mut Vec<RequestSample>) {
        let outcome = if r.bytes_in > 0 {
            Outcome::Answered
        } else if self.reset {
            Outcome::Reset
        } else if r.timed_out {
            Outcome::TimedOut
        } else if self.eof {
            Outcome::Closed
        } else if !r.expects {
            Outcome::Unanswered
        } else {
            Outcome::TimedOut
        };
        let production = match (r.prod_resp_first_ts, r.prod_resp_last_ts) {
            (Some(f), Some(l)) => Some(ProductionSample {
                latency: Duration::from_nanos(f.saturating_sub(r.prod_req_last_ts)),
                ttlb: Duration::from_nanos(l.saturating_sub(r.prod_req_last_ts)),
                bytes_in: r.prod_bytes,
                at: self.plan.orig_base
                    + Duration::from_nanos(r.prod_req_last_ts.saturating_sub(self.plan.t0)),
            }),
            _ => None,
        };
        let mut burst = Vec::new();
        if self.plan.protocol != Protocol::Tcp {
            let prod = r
                .prod_resp_first_ts
                .map(|_| (&r.prod_resp[..], r.prod_bytes > r.prod_resp.len() as u64));
            let test = Some((&r.resp[..], r.bytes_in > r.resp.len() as u64));
            burst = analyze_burst(
                self.plan.protocol,
                &r.preview,
                r.preview_cut,
                prod,
                test,
                self.ctx.verdict.fields.as_ref(),
            );
        }
        let mut burst = burst.into_iter();
        let exchange = burst.next().map(|p| p.exchange);
        r.preview.truncate(PREVIEW);
        let diff = (self.ctx.diff && r.prod_resp_first_ts.is_some()).then_some(DiffInput {
            production: r.prod_resp,
            production_len: r.prod_bytes,
            test: r.resp,
            test_len: r.bytes_in,
        });
        let sent_at = r.last_write.saturating_duration_since(self.ctx.start);
        let first = RequestSample {
            session: self.plan.id,
            index: r.index,
            sent_at,
            latency: r
                .first_resp
                .map(|f| f.saturating_duration_since(r.last_write)),
            ttlb: r
                .last_resp
                .map(|l| l.saturating_duration_since(r.last_write)),
            bytes_out: r.bytes_out,
            bytes_in: r.bytes_in,
            outcome: Some(outcome),
            slip: r.slip,
            production,
            request_preview: r.preview,
            diff,
            exchange,
            baseline: self.plan.baseline,
        };
        let production = first.production;
        out.push(first);
        for p in burst {
            let latency = p
                .test_at
                .and_then(|o| arrival(&r.resp_marks, o))
                .map(|t| t.saturating_duration_since(r.last_write));
            let prod_at = p.production_at.and_then(|o| arrival(&r.prod_marks, o));
            let production = production
                .as_ref()
                .zip(prod_at)
                .map(|(b, ts)| ProductionSample {
                    latency: Duration::from_nanos(ts.saturating_sub(r.prod_req_last_ts)),
                    bytes_in: 0,
                    ..*b
                });
            out.push(RequestSample {
                session: self.plan.id,
                index: r.index,
                sent_at,
                latency,
                outcome: Some(if latency.is_some() {
                    Outcome::Answered
                } else {
                    outcome
                }),
                production,
                exchange: Some(p.exchange),
                baseline: self.plan.baseline,
                ..Default::default()
            });
        }
    }

    fn flush_all(&mut self, keep: usize) {
        let mut out = Vec::new();
        while self.reqs.len() > keep {
            if let Some(r) = self.reqs.pop_front() {
                self.finish_req(r, &mut out);
            }
        }
        if !out.is_empty() {
            let mut c = self.ctx.collector.lock().unwrap_or_else(|e| e.into_inner());
            for s in out {
                c.record(s);
            }
        }
    }
}

async fn connect(ctx: &Ctx, plan: &Plan) -> Result<Conn, Outcome> {
    let tcp = match tokio::time::timeout(ctx.connect_timeout, TcpStream::connect(plan.target)).await
    {
        Ok(Ok(s)) => s,
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            return Err(Outcome::Refused)
        }
        Ok(Err(_)) => return Err(Outcome::Refused),
        Err(_) => return Err(Outcome::TimedOut),
    };
    let _ = tcp.set_nodelay(true);
    let Some((cfg, name)) = plan.tls.clone() else {
        return Ok(Conn::Tcp(tcp));
    };
    match super::tls::connect(tcp, cfg, name, ctx.connect_timeout).await {
        Ok(c) => Ok(c),
        Err(reason) => {
            *ctx.target_tls_failed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(reason)
                .or_default() += 1;
            Err(Outcome::Refused)
        }
    }
}

async fn session(ctx: Arc<Ctx>, plan: Plan, items: Arc<Inbox>, _guard: ActiveGuard) {
    if let Some(at) = plan.sched(&ctx, plan.open_ts) {
        // Stopped before its start: the session is not replayed at all.
        tokio::select! {
            _ = tokio::time::sleep_until(at.into()) => {}
            _ = ctx.stopping.cancelled() => return,
        }
    }
    if let Some(iv) = ctx.session_interval {
        let slot = {
            let mut next = ctx.next_slot.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            let slot = next.map_or(now, |n| n.max(now));
            *next = Some(slot + iv);
            slot
        };
        tokio::time::sleep_until(slot.into()).await;
    }
    let stream = match connect(&ctx, &plan).await {
        Ok(s) => s,
        Err(outcome) => {
            if !plan.baseline {
                ctx.connect_failed.fetch_add(1, Ordering::Relaxed);
            }
            let mut n = 0u32;
            let mut samples = Vec::new();
            while let Some(item) = items.recv().await {
                match item {
                    Item::Data {
                        side: Side::Client,
                        new_message,
                        bytes,
                        len,
                        ..
                    } if new_message || n == 0 => {
                        // The endpoints of requests that never went out still count, each
                        // request of a pipelined burst too.
                        let burst = if plan.protocol == Protocol::Tcp {
                            Vec::new()
                        } else {
                            let c = bytes.len().min(DIFF_CAP);
                            analyze_burst(plan.protocol, &bytes[..c], c < len, None, None, None)
                        };
                        let mut burst = burst.into_iter().map(|p| p.exchange);
                        let sample = RequestSample {
                            session: plan.id,
                            index: n,
                            sent_at: ctx.start.elapsed(),
                            outcome: Some(outcome),
                            baseline: plan.baseline,
                            ..Default::default()
                        };
                        samples.push(RequestSample {
                            bytes_out: len as u64,
                            request_preview: bytes[..bytes.len().min(PREVIEW)].to_vec(),
                            exchange: burst.next(),
                            ..sample.clone()
                        });
                        for ex in burst {
                            samples.push(RequestSample {
                                exchange: Some(ex),
                                ..sample.clone()
                            });
                        }
                        n += 1;
                    }
                    Item::Close => break,
                    _ => {}
                }
            }
            let mut c = ctx.collector.lock().unwrap_or_else(|e| e.into_inner());
            for s in samples {
                c.record(s);
            }
            return;
        }
    };
    let mut s = Session {
        ctx: ctx.clone(),
        plan,
        stream,
        reqs: VecDeque::new(),
        next_index: 0,
        prod_banner: false,
        test_banner_at: None,
        eof: false,
        reset: false,
        broken: false,
        timer_debt: Duration::ZERO,
    };
    if let Some(v) = ctx.proxy {
        let hdr = proxy::encode(v, s.plan.key.src, s.plan.key.dst);
        if !s.send(&hdr).await {
            s.broken = true;
        }
    }
    let mut client_fin = false;
    let mut server_seen_any = false;
    while let Some(item) = items.recv().await {
        match item {
            Item::Data {
                side: Side::Client,
                ts,
                bytes,
                new_message,
                server_seen,
                ..
            } => {
                server_seen_any |= server_seen;
                if new_message || s.reqs.is_empty() {
                    // Production's answer (or its absence) to the previous request is known now.
                    refine_expects(&mut s, server_seen_any);
                    s.gate(ts).await;
                    s.flush_all(1);
                    let slip = s
                        .plan
                        .sched(&ctx, ts)
                        .map(|due| Instant::now().saturating_duration_since(due));
                    let index = s.next_index;
                    s.next_index += 1;
                    s.reqs.push_back(Req {
                        index,
                        preview: Vec::new(),
                        preview_cut: false,
                        bytes_out: 0,
                        last_write: Instant::now(),
                        slip,
                        prod_req_last_ts: ts,
                        prod_resp_first_ts: None,
                        prod_resp_last_ts: None,
                        prod_bytes: 0,
                        prod_resp: Vec::new(),
                        resp_marks: Vec::new(),
                        prod_marks: Vec::new(),
                        first_resp: None,
                        last_resp: None,
                        bytes_in: 0,
                        resp: Vec::new(),
                        timed_out: false,
                        // Refined when the next request comes: production answered, or no
                        // server packets are in the capture at all.
                        expects: !ctx.no_wait,
                    });
                }
                let broken = s.broken || s.reset;
                // Taken before the write: an answer can be read before write_all returns here.
                let write_at = Instant::now();
                let ok = !broken && s.send(&bytes).await;
                if !ok {
                    s.broken = true;
                }
                if let Some(r) = s.reqs.back_mut() {
                    let cap = if s.plan.protocol == Protocol::Tcp {
                        PREVIEW
                    } else {
                        DIFF_CAP
                    };
                    let n = cap.saturating_sub(r.preview.len()).min(bytes.len());
                    r.preview.extend_from_slice(&bytes[..n]);
                    r.preview_cut |= n < bytes.len();
                    if ok {
                        r.bytes_out += bytes.len() as u64;
                    }
                    r.last_write = write_at;
                    r.prod_req_last_ts = ts;
                }
            }
            Item::Data {
                side: Side::Server,
                ts,
                bytes,
                len,
                ..
            } => {
                server_seen_any = true;
                match s.reqs.back_mut() {
                    Some(r) => {
                        r.prod_resp_first_ts.get_or_insert(ts);
                        r.prod_resp_last_ts = Some(ts);
                        r.prod_bytes += len as u64;
                        if r.prod_resp.len() < DIFF_CAP && !bytes.is_empty() {
                            let n = (DIFF_CAP - r.prod_resp.len()).min(bytes.len());
                            if r.prod_marks.len() < MAX_PIPELINED {
                                r.prod_marks.push((r.prod_resp.len() as u64, ts));
                            }
                            r.prod_resp.extend_from_slice(&bytes[..n]);
                        }
                    }
                    None => s.prod_banner = true,
                }
            }
            Item::Fin {
                side: Side::Client,
                ts,
            } => {
                refine_expects(&mut s, server_seen_any);
                s.gate(ts).await;
                let _ = s.stream.shutdown().await;
                client_fin = true;
            }
            Item::Fin { .. } => {}
            Item::Close => break,
        }
    }
    // The end: wait for the last answer, then for the end of it.
    refine_expects(&mut s, server_seen_any);
    if !client_fin {
        s.gate(0).await;
    }
    let deadline = Instant::now() + ctx.response_timeout;
    if client_fin {
        s.pump_until(Some(deadline), false, |_| false).await;
    } else {
        loop {
            let last = s.reqs.back().and_then(|r| r.last_resp).or(s.test_banner_at);
            let quiet_until = last.map_or(Instant::now(), |l| l + QUIET).min(deadline);
            if quiet_until <= Instant::now() || s.eof {
                break;
            }
            let before = s.reqs.back().map(|r| r.bytes_in);
            s.pump_until(Some(quiet_until), false, |_| false).await;
            if s.reqs.back().map(|r| r.bytes_in) == before {
                break;
            }
        }
    }
    s.drain_ready();
    s.flush_all(0);
}

/// Without production's answer in a capture that has server packets, the last request expects none.
fn refine_expects(s: &mut Session, server_seen_any: bool) {
    if let Some(r) = s.reqs.back_mut() {
        if server_seen_any && r.prod_resp_first_ts.is_none() {
            r.expects = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::parse_mappings;
    use etherparse::PacketBuilder;
    use std::io::{BufRead, BufReader, Write};

    /// One frame of the fixture capture.
    struct F {
        ts_us: u64,
        from_client: bool,
        cport: u16,
        seq: u32,
        ack: Option<u32>,
        flags: &'static str,
        payload: &'static [u8],
    }

    fn pcap(frames: &[F]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
        out.extend_from_slice(&2u16.to_le_bytes());
        out.extend_from_slice(&4u16.to_le_bytes());
        out.extend_from_slice(&[0; 8]);
        out.extend_from_slice(&65535u32.to_le_bytes());
        out.extend_from_slice(&1u32.to_le_bytes());
        for f in frames {
            let (c, s) = ([198, 18, 0, 1], [198, 18, 1, 1]);
            let (src, dst, sp, dp) = if f.from_client {
                (c, s, f.cport, 7000)
            } else {
                (s, c, 7000, f.cport)
            };
            let mut b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
                .ipv4(src, dst, 64)
                .tcp(sp, dp, f.seq, 65535);
            if f.flags.contains('S') {
                b = b.syn();
            }
            if f.flags.contains('F') {
                b = b.fin();
            }
            if let Some(a) = f.ack {
                b = b.ack(a);
            }
            let mut frame = Vec::new();
            b.write(&mut frame, f.payload).unwrap();
            out.extend_from_slice(&((1_700_000_000 + f.ts_us / 1_000_000) as u32).to_le_bytes());
            out.extend_from_slice(&((f.ts_us % 1_000_000) as u32).to_le_bytes());
            out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
            out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
            out.extend_from_slice(&frame);
        }
        out
    }

    fn fixture() -> Vec<u8> {
        let f = |ts_us, from_client, cport, seq, ack, flags, payload| F {
            ts_us,
            from_client,
            cport,
            seq,
            ack,
            flags,
            payload,
        };
        pcap(&[
            // Session A: handshake, two exchanges, close.
            f(0, true, 40000, 100, None, "S", b""),
            f(100, false, 40000, 900, Some(101), "S", b""),
            f(200, true, 40000, 101, Some(901), "", b""),
            f(1000, true, 40000, 101, Some(901), "", b"a1\n"),
            f(1300, false, 40000, 901, Some(104), "", b"R:a1\n"),
            f(20000, true, 40000, 104, Some(906), "", b"a2\n"),
            f(20500, false, 40000, 906, Some(107), "", b"R:a2\n"),
            // Session B: no SYN in the capture; its request comes in two segments, one of them
            // retransmitted.
            f(21000, true, 40001, 5000, Some(7000), "", b"GET "),
            f(21050, true, 40001, 5000, Some(7000), "", b"GET "),
            f(21100, true, 40001, 5004, Some(7000), "", b"1\n"),
            f(21400, false, 40001, 7000, Some(5006), "", b"R:GET 1\n"),
            f(30000, true, 40000, 107, Some(911), "F", b""),
            f(30100, false, 40000, 911, Some(108), "F", b""),
            f(30200, true, 40001, 5006, Some(7008), "F", b""),
            f(30300, false, 40001, 7008, Some(5007), "F", b""),
        ])
    }

    /// A line server: answers every line with `R:<line>`; returns what each connection sent.
    fn line_server() -> (SocketAddr, std::sync::mpsc::Receiver<Vec<u8>>) {
        line_server_with(Some(Duration::ZERO))
    }

    /// A line server that answers every line after `delay`, or never (`None`: it only reads,
    /// and closes when the client does); returns what each connection sent.
    fn line_server_with(
        delay: Option<Duration>,
    ) -> (SocketAddr, std::sync::mpsc::Receiver<Vec<u8>>) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for c in l.incoming() {
                let Ok(c) = c else { break };
                let tx = tx.clone();
                std::thread::spawn(move || {
                    let mut w = c.try_clone().unwrap();
                    let mut got = Vec::new();
                    let mut r = BufReader::new(c);
                    let mut line = Vec::new();
                    while r.read_until(b'\n', &mut line).unwrap_or(0) > 0 {
                        got.extend_from_slice(&line);
                        if let Some(d) = delay {
                            std::thread::sleep(d);
                            let _ = w.write_all(&[b"R:".as_slice(), &line].concat());
                        }
                        line.clear();
                    }
                    let _ = tx.send(got);
                });
            }
        });
        (addr, rx)
    }

    #[test]
    fn replays_sessions_in_order_with_copies_and_measures() {
        let (addr, rx) = line_server();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.pcap");
        std::fs::write(&path, fixture()).unwrap();
        let common = StreamCommon {
            mappings: parse_mappings(&format!("7000-{addr}")).unwrap(),
            percentage: 100,
            copies: 2,
            speedup: 1.0,
            no_wait: false,
            source: StreamSource::Offline(path),
            force: false,
        };
        let opts = StreamOptions {
            diff: true,
            ..Default::default()
        };
        let (r, err) = run(&common, &opts).unwrap();
        assert!(err.is_none());
        let mut got: Vec<Vec<u8>> = (0..4)
            .map(|_| rx.recv_timeout(Duration::from_secs(5)).unwrap())
            .collect();
        got.sort();
        assert_eq!(
            got,
            vec![
                b"GET 1\n".to_vec(),
                b"GET 1\n".to_vec(),
                b"a1\na2\n".to_vec(),
                b"a1\na2\n".to_vec()
            ]
        );
        assert_eq!(r.test.requests, 6);
        assert_eq!(r.test.answered, 6);
        assert_eq!(r.sessions.seen, 2);
        assert_eq!(r.sessions.replayed, 4);
        assert_eq!(r.sessions.without_syn, 1);
        let p = r.production.as_ref().unwrap();
        assert_eq!(p.requests, 6);
        // Production latencies: 300 µs, 500 µs, 300 µs.
        assert!(
            (p.latency_ms.p50 - 0.3).abs() < 0.01,
            "{}",
            p.latency_ms.p50
        );
        let d = r.diff.unwrap();
        assert_eq!((d.compared, d.matched), (6, 6));
        // Timed: session A's second request is 19 ms after the first; the run lasts ≥ 30 ms.
        assert!(r.duration_s >= 0.029, "{}", r.duration_s);
    }

    fn common_for(addr: SocketAddr, path: std::path::PathBuf) -> StreamCommon {
        StreamCommon {
            mappings: parse_mappings(&format!("7000-{addr}")).unwrap(),
            percentage: 100,
            copies: 1,
            speedup: 1.0,
            no_wait: false,
            source: StreamSource::Offline(path),
            force: false,
        }
    }

    #[test]
    fn no_wait_pipelines_without_waiting_for_answers() {
        // A server that never answers: without -W every request would wait the response
        // timeout (3 s) before the next one; with -W all of them go out at once.
        let (addr, rx) = line_server_with(None);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.pcap");
        std::fs::write(&path, fixture()).unwrap();
        let common = StreamCommon {
            no_wait: true,
            ..common_for(addr, path)
        };
        let opts = StreamOptions {
            topspeed: true,
            response_timeout: 3.0,
            ..Default::default()
        };
        let (r, _) = run(&common, &opts).unwrap();
        let mut got: Vec<Vec<u8>> = (0..2)
            .map(|_| rx.recv_timeout(Duration::from_secs(5)).unwrap())
            .collect();
        got.sort();
        assert_eq!(got, vec![b"GET 1\n".to_vec(), b"a1\na2\n".to_vec()]);
        assert_eq!(r.test.requests, 3);
        assert_eq!(r.test.timed_out, 0, "{r:?}");
        assert!(r.duration_s < 2.0, "-W waited: {} s", r.duration_s);
    }

    #[test]
    fn slow_target_is_waited_for_and_the_slip_reported() {
        // Answers 60 ms late: session A's second request (19 ms after production's answer in
        // the capture) goes out ≥ 60 ms behind its place in the schedule, and is still sent.
        let (addr, _rx) = line_server_with(Some(Duration::from_millis(60)));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.pcap");
        std::fs::write(&path, fixture()).unwrap();
        let (r, _) = run(&common_for(addr, path), &StreamOptions::default()).unwrap();
        assert_eq!((r.test.requests, r.test.answered), (3, 3), "{r:?}");
        assert!(r.slip_ms.max >= 50.0, "slip {:?}", r.slip_ms);
        assert!(r.test.latency_ms.p50 >= 59.0, "{:?}", r.test.latency_ms);
        assert!(crate::report::render_table(&r).contains("slip behind schedule"));
    }

    #[test]
    fn server_that_speaks_first_is_waited_for() {
        // Production sent a banner before the client's first request; the test server sends
        // its banner 150 ms after accepting. The request must not go out before it (the
        // server checks that nothing has arrived when it sends the banner), even at top speed.
        let f = |ts_us, from_client, seq, ack, flags, payload| F {
            ts_us,
            from_client,
            cport: 40000,
            seq,
            ack,
            flags,
            payload,
        };
        let cap = pcap(&[
            f(0, true, 100, None, "S", b""),
            f(100, false, 900, Some(101), "S", b""),
            f(200, true, 101, Some(901), "", b""),
            f(500, false, 901, Some(101), "", b"HI\n"),
            f(1000, true, 101, Some(904), "", b"a1\n"),
            f(1300, false, 904, Some(104), "", b"R:a1\n"),
            f(2000, true, 104, Some(909), "F", b""),
            f(2100, false, 909, Some(105), "F", b""),
        ]);
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let (c, _) = l.accept().unwrap();
            std::thread::sleep(Duration::from_millis(150));
            c.set_nonblocking(true).unwrap();
            let early = c.peek(&mut [0u8; 8]).is_ok();
            c.set_nonblocking(false).unwrap();
            let mut w = c.try_clone().unwrap();
            w.write_all(b"HI\n").unwrap();
            let mut r = BufReader::new(c);
            let mut line = Vec::new();
            r.read_until(b'\n', &mut line).unwrap();
            w.write_all(b"R:a1\n").unwrap();
            let _ = tx.send((early, line));
        });
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("banner.pcap");
        std::fs::write(&path, cap).unwrap();
        let opts = StreamOptions {
            topspeed: true,
            ..Default::default()
        };
        let (r, _) = run(&common_for(addr, path), &opts).unwrap();
        let (early, line) = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert!(!early, "the request went out before the server's banner");
        assert_eq!(line, b"a1\n");
        assert_eq!((r.test.requests, r.test.answered), (1, 1), "{r:?}");
        // Measured from the request, not from the connection: the banner wait is not latency.
        assert!(r.test.latency_ms.max < 100.0, "{:?}", r.test.latency_ms);
    }

    #[test]
    fn loop_sampling_and_session_rate() {
        let (addr, rx) = line_server();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.pcap");
        std::fs::write(&path, fixture()).unwrap();
        let mut common = StreamCommon {
            mappings: parse_mappings(&format!("7000-{addr}")).unwrap(),
            percentage: 0,
            copies: 1,
            speedup: 1.0,
            no_wait: false,
            source: StreamSource::Offline(path),
            force: false,
        };
        let (r, _) = run(
            &common,
            &StreamOptions {
                topspeed: true,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(
            (r.sessions.seen, r.sessions.sampled_out, r.test.requests),
            (2, 2, 0)
        );
        // --loop 3 at 10 sessions/s: 6 sessions, the last starting ≥ 0.5 s after the first.
        common.percentage = 100;
        let opts = StreamOptions {
            topspeed: true,
            loops: 3,
            max_sessions_per_sec: Some(10.0),
            ..Default::default()
        };
        let (r, _) = run(&common, &opts).unwrap();
        assert_eq!(r.sessions.replayed, 6);
        assert_eq!(r.test.answered, 9);
        assert!(r.duration_s >= 0.5, "{}", r.duration_s);
        let got: Vec<Vec<u8>> = (0..6)
            .map(|_| rx.recv_timeout(Duration::from_secs(5)).unwrap())
            .collect();
        assert_eq!(
            got.iter().filter(|g| g.as_slice() == b"a1\na2\n").count(),
            3
        );
    }

    #[test]
    fn refused_target_counts_every_request() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.pcap");
        std::fs::write(&path, fixture()).unwrap();
        let common = StreamCommon {
            mappings: parse_mappings(&format!("7000-127.0.0.1:{port}")).unwrap(),
            percentage: 100,
            copies: 1,
            speedup: 1.0,
            no_wait: false,
            source: StreamSource::Offline(path),
            force: false,
        };
        let (r, _) = run(
            &common,
            &StreamOptions {
                topspeed: true,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(r.test.requests, 3);
        assert_eq!(r.test.refused, 3);
        assert_eq!(r.sessions.connect_failed, 2);
    }

    #[test]
    fn bad_inputs_fail_with_one_line() {
        let common = StreamCommon {
            mappings: parse_mappings("7000-127.0.0.1:1").unwrap(),
            percentage: 100,
            copies: 1,
            speedup: 1.0,
            no_wait: false,
            source: StreamSource::Offline("/nonexistent/x.pcap".into()),
            force: false,
        };
        let e = run(&common, &StreamOptions::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent/x.pcap"), "{e}");
        let e = run(
            &common,
            &StreamOptions {
                report: vec!["r.txt".into()],
                ..Default::default()
            },
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("must end in .json or .html"), "{e}");
    }
}
