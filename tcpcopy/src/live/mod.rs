//! Live raw-mode glue: the capture, the workers, the sending and signals around the sans-IO
//! engine.
//!
//! Data path: each worker thread ([`worker`]) reads its share of the capture ring in place
//! (or copied batches from a file or libpcap), feeds the frames to its own engine, sends what
//! the engine produced with `sendmmsg`, and runs its own connections to intercept
//! ([`channel`]): the engine's registrations go out on them, and the responses intercept
//! reports for this worker's sessions come back on them, to the same engine. A worker sleeps in
//! one `poll` over its rings, its intercept sockets and a wake-up descriptor, with the engine's
//! `poll_timeout` as deadline. This thread only starts them, waits for signals and prints
//! `--stats`. Nothing here decides anything about TCP: that is the engine's job.

pub mod capture;
pub mod channel;
pub mod counters;
pub mod metrics;
pub mod netlink;
pub mod nexthop;
pub mod shed;
pub mod sys;
pub mod worker;

use crate::config::raw::{Settings, Source};
use crate::engine::shared::SharedClients;
use crate::engine::EngineStats;
use crate::engine::{Engine, EngineConfig};
use anyhow::{anyhow, Context, Result};
use capture::{CopiedBatch, CopiedBatchPool, CHANNEL_BATCHES, POOL_BATCHES};
use counters::Counters;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tcpclone::sys::ring::Wake;
use tracing::{error, info, warn};
use worker::{Feed, Worker};

/// The ring's block timeout without --capture-block: a segment waits at most about this long
/// in a block before its worker sees it.
const DEFAULT_BLOCK_MS: u32 = 1;

/// What a run did, printed at exit.
#[derive(Debug)]
pub struct LiveSummary {
    /// The counters at the end, `name=value` pairs.
    pub counters: Vec<(&'static str, u64)>,
    /// The engine's own report (sessions cloned/completed/aborted, retransmissions, ...).
    pub engine: String,
    /// Capture-to-engine latency percentiles in µs: (p50, p99, p99.9, max, samples).
    pub latency_us: (u64, u64, u64, u64, u64),
    /// Sessions each worker cloned, by worker index (how the fanout spread them).
    pub per_worker: Vec<u64>,
    /// CPU time of each worker's thread, by worker index.
    pub per_worker_cpu: Vec<Duration>,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// CPU time of the process.
    pub cpu: Duration,
    /// A `--fail-if` rule broke: the run exits 1.
    pub verdict_failed: bool,
}

impl std::fmt::Display for LiveSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "tcpcopy summary: ran {:.3}s, cpu {:.3}s",
            self.elapsed.as_secs_f64(),
            self.cpu.as_secs_f64()
        )?;
        writeln!(f, "  engine: {}", self.engine)?;
        if self.per_worker.len() > 1 {
            let v: Vec<String> = self.per_worker.iter().map(u64::to_string).collect();
            let c: Vec<String> = self
                .per_worker_cpu
                .iter()
                .map(|d| format!("{:.3}s", d.as_secs_f64()))
                .collect();
            writeln!(
                f,
                "  workers: {}, sessions cloned per worker: {}, cpu per worker: {}",
                self.per_worker.len(),
                v.join(" "),
                c.join(" ")
            )?;
        }
        let mut line = String::new();
        for (k, v) in &self.counters {
            line.push_str(&format!("{k}={v} "));
        }
        writeln!(f, "  counters: {}", line.trim_end())?;
        let (p50, p99, p999, max, n) = self.latency_us;
        write!(
            f,
            "  capture->engine latency_us: p50={p50} p99={p99} p99.9={p999} max={max} samples={n}"
        )
    }
}

/// A capture-to-engine latency histogram in µs, as the workers keep them.
fn new_latency_histogram() -> hdrhistogram::Histogram<u64> {
    hdrhistogram::Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds")
}

/// The engine's configuration from the validated flags.
pub fn engine_config(s: &Settings) -> EngineConfig {
    EngineConfig {
        mappings: s.mappings.clone(),
        client_ips: s.client_ips.clone(),
        copies: u16::try_from(s.copies).unwrap_or(u16::MAX).max(1),
        port_shift: s.port_shift,
        percentage: s.percentage,
        mtu: s.mtu,
        mss: s.mss,
        no_wait: s.no_wait,
        max_lag: s.max_lag,
        session_timeout: s.session_timeout,
        keepalive_timeout: s.keepalive_timeout,
        max_memory: usize::try_from(s.engine_memory).unwrap_or(usize::MAX),
        request_timing_events: s.wants_report(),
        ..EngineConfig::default()
    }
}

/// This host's addresses, for the production-safety check.
fn local_addresses() -> Result<Vec<IpAddr>, String> {
    pcap::Device::list()
        .map(|devs| {
            devs.iter()
                .flat_map(|d| d.addresses.iter().map(|a| a.addr))
                .collect()
        })
        .map_err(|e| format!("cannot list this host's addresses to check the targets ({e})"))
}

/// Checks the production-safety rules (issue 5); `--force` turns refusals into warnings.
pub fn safety_check(settings: &Settings) -> Result<()> {
    for p in safety_check_targets(&settings.mappings, &settings.client_nets, settings.force)? {
        warn!("--force: {p}");
    }
    Ok(())
}

/// What the production-safety rule ([`crate::config::check_mapping_targets`]) finds wrong
/// with the targets on this host, in every mode. Fails closed: when this host's addresses
/// cannot be listed, that is a problem too (refused unless `--force`).
pub fn target_problems(
    mappings: &[crate::mapping::TargetMapping],
    client_nets: &[ipnet::IpNet],
) -> Vec<String> {
    crate::config::check_mapping_targets_listed(mappings, client_nets, local_addresses())
}

/// The production-safety rules for any mode ([`target_problems`]). With `force`, returns the
/// problems overridden (for the caller to warn about) instead of refusing.
pub fn safety_check_targets(
    mappings: &[crate::mapping::TargetMapping],
    client_nets: &[ipnet::IpNet],
    force: bool,
) -> Result<Vec<String>> {
    let problems = target_problems(mappings, client_nets);
    if problems.is_empty() || force {
        return Ok(problems);
    }
    Err(anyhow!(
        "-x/--mapping: refused: {} (--force overrides)",
        problems.join("; ")
    ))
}

/// Reads the shared secret once, safely (see [`tcpclone::proto::secure::read_secret_file`]).
pub fn read_secret(path: &std::path::Path) -> Result<tcpclone::proto::secure::Psk> {
    tcpclone::proto::secure::read_secret_file(path).context("--secret-file")
}

/// Most payload one super-segment carries (whole MSS pieces of it; the IP packet stays under
/// the 64 KiB that GSO takes).
const GSO_MAX: usize = 64_000;

/// Runs raw mode until SIGINT/SIGTERM (or the end of an --offline file) and returns the summary.
pub fn run(settings: Settings) -> Result<LiveSummary> {
    let started = Instant::now();
    let counters = Arc::new(Counters::default());
    let stop = Arc::new(AtomicBool::new(false));
    let filter = capture::capture_filter_with(
        &settings.mappings,
        settings.user_filter.as_deref(),
        settings.wants_report(),
    );

    let need_v4 = settings.mappings.iter().any(|m| m.target.is_ipv4());
    let need_v6 = settings.mappings.iter().any(|m| m.target.is_ipv6());
    // One pair of raw sockets per worker, opened before anything runs.
    let mut raws = (0..settings.workers.max(1))
        .map(|_| sys::RawSender::open(need_v4, need_v6))
        .collect::<Result<Vec<_>, _>>()
        .context("cannot open raw IP sockets (root or CAP_NET_RAW needed)")?;
    // The packet path beside them (--send packet), also opened before the privilege drop.
    // Without it every clone takes the raw sockets, as with --send raw.
    let mut packets: Vec<Option<(sys::PacketSender, netlink::Netlink)>> =
        (0..settings.workers.max(1))
            .map(|_| {
                if !settings.send_packet {
                    return None;
                }
                match sys::PacketSender::open().and_then(|p| Ok((p, netlink::Netlink::open()?))) {
                    Ok(pair) => Some(pair),
                    Err(e) => {
                        warn!(error = %e, "packet socket unavailable; sending through raw IP sockets only");
                        None
                    }
                }
            })
            .collect();

    // Signals first, so a SIGTERM during start-up is not lost.
    let (sig_tx, sig_rx) = crossbeam_channel::bounded::<i32>(4);
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ])
    .context("cannot install signal handlers")?;
    let sig_handle = signals.handle();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            // Not a capture thread: back to the ordinary priority (see --capture-nice).
            let _ = tcpclone::sys::set_thread_nice(0);
            let mut seen = 0;
            for sig in signals.forever() {
                seen += 1;
                if seen > 1 {
                    eprintln!("tcpcopy: second signal, exiting at once");
                    std::process::exit(130);
                }
                let _ = sig_tx.send(sig);
            }
        })?;

    let workers = settings.workers.max(1);
    let pool = CopiedBatchPool::new(POOL_BATCHES);
    let (cap_tx, cap_rx) = crossbeam_channel::bounded::<CopiedBatch>(CHANNEL_BATCHES);
    let wakes: Vec<Arc<Wake>> = (0..workers)
        .map(|_| Wake::new().map(Arc::new))
        .collect::<Result<_, _>>()
        .context("cannot create the workers' wake-up eventfds")?;
    let mut capture_threads = Vec::new();
    let mut feeds: Vec<Feed> = Vec::new();
    match &settings.source {
        Source::Live { interfaces } if !settings.capture_pcap => {
            // With the report on, the rings also keep production's answers sent from here.
            let filter = capture::ring_filter(
                &settings.mappings,
                settings.user_filter.as_deref(),
                settings.wants_report(),
            );
            info!(filter = %filter, "capture filter");
            let rings = capture::open_rings(
                interfaces,
                &filter,
                settings.capture_buffer,
                workers,
                settings.capture_block_ms.unwrap_or(DEFAULT_BLOCK_MS),
                settings.wants_report(),
            )?;
            feeds.extend(rings.into_iter().map(Feed::Rings));
            info!(devices = ?interfaces, ring_mb = settings.capture_buffer >> 20, workers, "capturing");
        }
        Source::Live { interfaces } => {
            info!(filter = %filter, "capture filter");
            for lc in capture::open_live(
                interfaces,
                &filter,
                settings.capture_buffer,
                settings.capture_block_ms,
            )? {
                let (tx, wake, p, c, s) = (
                    cap_tx.clone(),
                    wakes[0].clone(),
                    pool.clone(),
                    counters.clone(),
                    stop.clone(),
                );
                // -B per device for the ring, and as much again for what the engine has yet to
                // process (the devices' threads share one channel, so one shared limit).
                let limit = settings.capture_buffer * interfaces.len();
                let nice = settings.capture_nice;
                capture_threads.push(
                    std::thread::Builder::new()
                        .name("capture".into())
                        .spawn(move || capture::run_live(lc, nice, limit, tx, wake, p, c, s))?,
                );
            }
            feeds.push(Feed::Batches {
                rx: cap_rx.clone(),
                pool: pool.clone(),
                offline: false,
            });
            info!(devices = ?interfaces, ring_mb = settings.capture_buffer >> 20, "capturing with libpcap");
        }
        Source::Offline { path, speedup } => {
            info!(filter = %filter, "capture filter");
            let (path, speedup, tx, wake, p, c, s, f) = (
                path.clone(),
                *speedup,
                cap_tx.clone(),
                wakes[0].clone(),
                pool.clone(),
                counters.clone(),
                stop.clone(),
                filter.clone(),
            );
            // Open errors surface here, before anything runs.
            tcpclone::capture::CaptureReader::open(&path)
                .with_context(|| format!("--offline: cannot read `{}`", path.display()))?;
            capture_threads.push(std::thread::Builder::new().name("offline".into()).spawn(
                move || {
                    if let Err(e) = capture::run_offline(&path, &f, speedup, tx, wake, p, c, s) {
                        error!("{e:#}");
                    }
                },
            )?);
            feeds.push(Feed::Batches {
                rx: cap_rx.clone(),
                pool: pool.clone(),
                offline: true,
            });
        }
    }
    drop(cap_tx);
    drop(cap_rx);

    let psk = match (&settings.psk, &settings.secret_file) {
        (Some(k), _) => Some(k.clone()),
        (None, Some(p)) => Some(read_secret(p)?),
        (None, None) => {
            warn!("--insecure: the channel to intercept is unauthenticated and unencrypted");
            None
        }
    };
    let shared_clients = SharedClients::group(workers);
    // One instance id for the process: intercept sees every worker's connections as one
    // tcpcopy (a worker's sessions may move to another of its connections after a reconnect).
    let instance = channel::instance_id();
    let origin = Instant::now();
    let engine_stats = Arc::new(Mutex::new(vec![EngineStats::default(); workers]));
    let worker_cpu: metrics::WorkerCpu =
        Arc::new((0..workers).map(|_| AtomicU64::new(0)).collect());
    let (_metrics, published_latency) = match settings.metrics {
        Some(addr) => {
            let l: metrics::PublishedLatency = Arc::new(Mutex::new(
                (0..workers).map(|_| new_latency_histogram()).collect(),
            ));
            let server = metrics::serve(
                addr,
                counters.clone(),
                engine_stats.clone(),
                l.clone(),
                worker_cpu.clone(),
            )?;
            info!(address = %server.local_addr(), "serving /metrics");
            (Some(server), Some(l))
        }
        None => (None, None),
    };
    let report = if !settings.wants_report() {
        None
    } else {
        Some(Arc::new(Mutex::new(crate::report::Collector::new(
            "raw", None,
        )?)))
    };
    // Limits split among the workers (see --workers).
    let share = |v: Option<f64>| v.map(|x| x / workers as f64);
    let mut handles = Vec::new();
    for (index, (feed, clients)) in feeds.into_iter().zip(shared_clients).enumerate() {
        let mut cfg = engine_config(&settings);
        cfg.max_memory /= workers;
        if workers > 1 {
            cfg.shared_clients = Some(clients);
        }
        let raw = raws.pop().context("a raw socket pair per worker")?;
        let packet = packets.pop().flatten();
        // Super-segments only where something can carry them whole, and never under a rate cap
        // (it paces packet by packet).
        if packet.is_some() && settings.max_pps.is_none() && settings.max_mbps.is_none() {
            cfg.gso_max = GSO_MAX;
        }
        let link = channel::InterceptLink::new(
            &settings.intercepts,
            settings.connections as usize,
            instance,
            psk.clone(),
            channel::COMMAND_BACKLOG,
            counters.clone(),
        )
        .with_response_prefix(settings.response_prefix);
        let worker = Worker::new(
            index,
            feed,
            link,
            wakes[index].clone(),
            Engine::new(cfg),
            sys::TxQueue::new(raw, packet),
            tcpclone::limit::RateCap::new(share(settings.max_pps), share(settings.max_mbps))
                .context("--max-pps/--max-mbps")?,
            worker::Shared {
                counters: counters.clone(),
                stop: stop.clone(),
                engine_stats: engine_stats.clone(),
                report: report.clone(),
                protocol: settings.protocol,
                origin,
                latency: published_latency.clone(),
                shed: settings.shed,
                cpu: worker_cpu.clone(),
                nice: settings.worker_nice,
            },
        );
        handles.push(
            std::thread::Builder::new()
                .name(format!("worker-{index}"))
                .spawn(move || worker.run())?,
        );
    }
    // libpcap's capture threads inherited --capture-nice from this thread (see main); the
    // workers set themselves to --nice, and this thread, which only waits for signals and prints
    // --stats, goes back to 0.
    if tcpclone::sys::thread_nice() != 0 {
        if let Err(e) = tcpclone::sys::set_thread_nice(0) {
            warn!("cannot put the main thread back to nice 0: {e}");
        }
    }
    let total_stats = || {
        let t = engine_stats.lock().unwrap_or_else(|p| p.into_inner());
        let mut sum = EngineStats::default();
        for s in t.iter() {
            sum.merge(s);
        }
        sum
    };
    let stats = settings.stats;
    let mut next_stats = stats.map(|d| Instant::now() + d);
    // The allocator's free pages go back to the kernel from here, once for the process: the
    // workers compact their own engines, but malloc_trim walks every thread's arena.
    let mut next_trim = Instant::now() + worker::COMPACT_EVERY;
    loop {
        if handles.iter().any(|h| h.is_finished()) {
            break; // the end of an --offline file (or a worker that failed)
        }
        let now = Instant::now();
        let mut wait = Duration::from_millis(100);
        if let Some(t) = next_stats {
            wait = wait.min(t.saturating_duration_since(now));
        }
        match sig_rx.recv_timeout(wait) {
            Ok(sig) => {
                info!(signal = sig, "stopping");
                break;
            }
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
        }
        if next_trim <= Instant::now() {
            tcpclone::sys::release_free_memory();
            next_trim = Instant::now() + worker::COMPACT_EVERY;
        }
        if let Some(t) = next_stats {
            if t <= Instant::now() {
                // Through the log: standard error, or the -l file.
                info!(target: "tcpcopy::stats", "{} | engine: {}", counters.line(), total_stats());
                next_stats = Some(Instant::now() + stats.unwrap_or(Duration::from_secs(1)));
            }
        }
    }

    // Shutdown: stop the workers and the capture, close the channel, and report.
    stop.store(true, Ordering::Relaxed);
    for w in &wakes {
        w.park();
        w.notify();
    }
    sig_handle.close();
    let mut latency = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)
        .expect("histogram bounds");
    let mut final_stats = EngineStats::default();
    let mut per_worker = Vec::new();
    let mut per_worker_cpu = Vec::new();
    for h in handles {
        match h.join() {
            Ok(end) => {
                let _ = latency.add(&end.latency);
                per_worker.push(end.stats.sessions_cloned);
                per_worker_cpu.push(end.cpu);
                final_stats.merge(&end.stats);
            }
            Err(_) => error!("a worker panicked"),
        }
    }
    // Every worker has ended, so the collector has no other owner left.
    let report = report
        .and_then(|c| Arc::try_unwrap(c).ok())
        .map(|m| m.into_inner().unwrap_or_else(|p| p.into_inner()))
        .map(|c| raw_report(c, &final_stats, settings.copies, started.elapsed()));
    for t in capture_threads {
        let _ = t.join();
    }
    let mut verdict_failed = false;
    if let Some(mut r) = report {
        verdict_failed = crate::report::conclude(
            &mut r,
            &settings.fail_if,
            true,
            &settings.report,
            settings.junit.as_deref(),
        )?;
    }
    let h = &latency;
    Ok(LiveSummary {
        counters: counters.pairs(),
        engine: final_stats.to_string(),
        latency_us: (
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.99),
            h.value_at_quantile(0.999),
            h.max(),
            h.len(),
        ),
        per_worker,
        per_worker_cpu,
        elapsed: started.elapsed(),
        cpu: tcpclone::sys::process_cpu_time(),
        verdict_failed,
    })
}

/// The end-of-run report of raw mode: the answered requests' samples already in `c`, plus the
/// engine's totals (requests never answered, bytes, sessions).
fn raw_report(
    mut c: crate::report::Collector,
    st: &crate::engine::EngineStats,
    copies: u32,
    elapsed: Duration,
) -> crate::report::Report {
    // The requests never answered whose session ended are samples already (with their
    // endpoint); those still waiting at the end count in the totals only.
    c.add_raw_totals(
        st.requests_sent
            .saturating_sub(st.requests_answered)
            .saturating_sub(st.requests_unanswered),
        st.bytes_sent,
        st.response_bytes,
    );
    c.sessions = crate::report::SessionCounts {
        seen: st.sessions_cloned.div_ceil(u64::from(copies.max(1))) + st.sampled_out,
        replayed: st.sessions_cloned,
        sampled_out: st.sampled_out,
        without_syn: 0,
        // Sessions that lost captured bytes and were reset at the hole.
        partial: st.aborted_gap,
        dropped: st.refused_memory + st.refused_ports + st.refused_family,
        connect_failed: st.aborted_handshake,
        repeats: 0,
        baseline_connect_failed: 0,
    };
    c.finish(elapsed)
}
