//! Live raw-mode glue: capture threads, raw sending, the intercept channel and signals around
//! the sans-IO engine, which runs on its own thread (the caller's).
//!
//! Data flow: capture thread(s) → crossbeam channel of [`capture::Batch`]es → engine thread →
//! raw socket; intercept channel (tokio thread) → crossbeam channel of response headers →
//! engine thread; engine events → tokio channel → intercept. The engine thread sleeps in one
//! `select` on those channels with the engine's `poll_timeout` as deadline, so any input wakes it.
//! Nothing here decides anything about TCP: that is the engine's job.

pub mod capture;
pub mod channel;
pub mod counters;
pub mod sys;

use crate::cli::{check_targets, Settings, Source};
use crate::engine::{Engine, EngineConfig, EngineEvent};
use anyhow::{anyhow, Context, Result};
use capture::{Batch, BatchPool, CHANNEL_BATCHES, POOL_BATCHES};
use channel::ToChannel;
use counters::Counters;
use crossbeam_channel::{select, Receiver};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{error, info, warn};

/// Buffer for one outgoing packet (`poll_transmit` needs at least 65,535 bytes).
const TX_BUF: usize = 65_536;
/// After the end of an --offline file: stop once nothing was sent or received for this long.
const OFFLINE_IDLE: Duration = Duration::from_secs(3);
/// Longest the engine thread sleeps without looking at stop flags and stats.
const MAX_SLEEP: Duration = Duration::from_millis(250);
/// How often the engine gives back memory a past peak of sessions left ([`Engine::compact`])
/// and the allocator's free pages go back to the kernel ([`tcpclone::sys::release_free_memory`]).
const COMPACT_EVERY: Duration = Duration::from_secs(5);
/// Most response batches taken from the queue before due timers run (bounds the time timers
/// wait while intercept keeps sending).
const RESPONSE_DRAIN: usize = 64;

/// What a run did, printed at exit.
#[derive(Debug)]
pub struct Summary {
    /// The counters at the end, `name=value` pairs.
    pub counters: Vec<(&'static str, u64)>,
    /// The engine's own report (sessions cloned/completed/aborted, retransmissions, ...).
    pub engine: String,
    /// Capture-to-engine latency percentiles in µs: (p50, p99, p99.9, max, samples).
    pub latency_us: (u64, u64, u64, u64, u64),
    /// Wall time of the run.
    pub elapsed: Duration,
    /// CPU time of the process.
    pub cpu: Duration,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "tcpcopy summary: ran {:.3}s, cpu {:.3}s",
            self.elapsed.as_secs_f64(),
            self.cpu.as_secs_f64()
        )?;
        writeln!(f, "  engine: {}", self.engine)?;
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
        session_timeout: s.session_timeout,
        keepalive_timeout: s.keepalive_timeout,
        max_memory: usize::try_from(s.engine_memory).unwrap_or(usize::MAX),
        request_timing_events: !s.report.is_empty(),
        ..EngineConfig::default()
    }
}

/// This host's addresses, for the production-safety check.
fn local_addresses() -> Vec<IpAddr> {
    match pcap::Device::list() {
        Ok(devs) => devs
            .iter()
            .flat_map(|d| d.addresses.iter().map(|a| a.addr))
            .collect(),
        Err(e) => {
            warn!(error = %e, "cannot list local addresses; the local-target check is skipped");
            Vec::new()
        }
    }
}

/// Checks the production-safety rules (issue 5); `--force` turns refusals into warnings.
pub fn safety_check(settings: &Settings) -> Result<()> {
    let problems = check_targets(settings, &local_addresses());
    if problems.is_empty() {
        return Ok(());
    }
    if settings.force {
        for p in &problems {
            warn!("--force: {p}");
        }
        return Ok(());
    }
    Err(anyhow!(
        "-x/--mapping: refused: {} (--force overrides)",
        problems.join("; ")
    ))
}

/// Reads the shared secret, refusing a file that group or others can read.
fn read_secret(path: &std::path::Path) -> Result<tcpclone::proto::secure::Psk> {
    use std::os::unix::fs::PermissionsExt;
    let ctx = || format!("--secret-file {}", path.display());
    let meta = std::fs::metadata(path).with_context(ctx)?;
    tcpclone::proto::secure::check_secret_mode(meta.permissions().mode()).with_context(ctx)?;
    let text = std::fs::read(path).with_context(ctx)?;
    tcpclone::proto::secure::Psk::from_hex_text(&text).with_context(ctx)
}

/// Runs raw mode until SIGINT/SIGTERM (or the end of an --offline file) and returns the summary.
pub fn run(settings: Settings) -> Result<Summary> {
    let started = Instant::now();
    let counters = Arc::new(Counters::default());
    let stop = Arc::new(AtomicBool::new(false));
    let filter = capture::build_filter(&settings.mappings, settings.user_filter.as_deref());
    info!(filter = %filter, "capture filter");

    let need_v4 = settings.mappings.iter().any(|m| m.target.is_ipv4());
    let need_v6 = settings.mappings.iter().any(|m| m.target.is_ipv6());
    let raw = sys::RawSender::open(need_v4, need_v6)
        .context("cannot open raw IP sockets (root or CAP_NET_RAW needed)")?;

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

    let pool = BatchPool::new(POOL_BATCHES);
    let (cap_tx, cap_rx) = crossbeam_channel::bounded::<Batch>(CHANNEL_BATCHES);
    let mut capture_threads = Vec::new();
    match &settings.source {
        Source::Live { interfaces } => {
            for lc in capture::open_live(
                interfaces,
                &filter,
                settings.capture_buffer,
                settings.capture_block_ms,
            )? {
                let (tx, pool, c, s) =
                    (cap_tx.clone(), pool.clone(), counters.clone(), stop.clone());
                // -B per device for the ring, and as much again for what the engine has yet to
                // process (the devices' threads share one channel, so one shared limit).
                let limit = settings.capture_buffer * interfaces.len();
                let nice = settings.capture_nice;
                capture_threads.push(
                    std::thread::Builder::new()
                        .name("capture".into())
                        .spawn(move || capture::run_live(lc, nice, limit, tx, pool, c, s))?,
                );
            }
            // The capture threads inherited --capture-nice from this thread (see main); the
            // engine and the channel run at the ordinary priority.
            if tcpclone::sys::thread_nice() != 0 {
                if let Err(e) = tcpclone::sys::set_thread_nice(0) {
                    warn!("cannot put the engine thread back to nice 0: {e}");
                }
            }
            info!(devices = ?interfaces, ring_mb = settings.capture_buffer >> 20, "capturing");
        }
        Source::Offline { path, speedup } => {
            let (path, speedup, tx, pool, c, s, f) = (
                path.clone(),
                *speedup,
                cap_tx.clone(),
                pool.clone(),
                counters.clone(),
                stop.clone(),
                filter.clone(),
            );
            // Open errors surface here, before anything runs.
            pcap::Capture::from_file(&path)
                .with_context(|| format!("--offline: cannot read `{}`", path.display()))?;
            capture_threads.push(std::thread::Builder::new().name("offline".into()).spawn(
                move || {
                    if let Err(e) = capture::run_offline(&path, &f, speedup, tx, pool, c, s) {
                        error!("{e:#}");
                    }
                },
            )?);
        }
    }
    drop(cap_tx);

    let (resp_tx, resp_rx) = crossbeam_channel::unbounded();
    let psk = match &settings.secret_file {
        Some(p) => Some(read_secret(p)?),
        None => {
            warn!("no --secret-file: the channel to intercept is unauthenticated and unencrypted");
            None
        }
    };
    let channel = channel::spawn(
        settings.intercepts.clone(),
        settings.connections,
        channel::instance_id(),
        psk,
        resp_tx,
        counters.clone(),
    )?;

    let engine = Engine::new(engine_config(&settings));
    let offline = matches!(settings.source, Source::Offline { .. });
    let mut lp = EngineLoop {
        engine,
        raw,
        counters: counters.clone(),
        channel_tx: channel.tx.clone(),
        buf: vec![0u8; TX_BUF],
        latency: hdrhistogram::Histogram::new_with_bounds(1, 60_000_000, 3)
            .expect("histogram bounds"),
        last_activity: Instant::now(),
        cap: tcpclone::limit::RateCap::new(settings.max_pps, settings.max_mbps)
            .context("--max-pps/--max-mbps")?,
        origin: Instant::now(),
        held_until: None,
        report: if settings.report.is_empty() {
            None
        } else {
            Some(crate::report::Collector::new("raw", None)?)
        },
    };
    let latency_us = lp.run(cap_rx, &resp_rx, &sig_rx, &pool, settings.stats, offline);

    // Shutdown: stop capture, close the channel, and report.
    stop.store(true, Ordering::Relaxed);
    sig_handle.close();
    let engine_report = lp.engine_report();
    let report = lp
        .report
        .take()
        .map(|c| raw_report(c, &lp.engine.stats(), settings.copies, started.elapsed()));
    drop(lp);
    channel.shutdown();
    for t in capture_threads {
        let _ = t.join();
    }
    if let Some(r) = &report {
        print!("{}", crate::report::render_table(r));
        crate::report::write_files(r, &settings.report)?;
    }
    Ok(Summary {
        counters: counters.pairs(),
        engine: engine_report,
        latency_us,
        elapsed: started.elapsed(),
        cpu: sys::cpu_time(),
    })
}

/// The engine thread's state.
struct EngineLoop {
    engine: Engine,
    raw: sys::RawSender,
    counters: Arc<Counters>,
    channel_tx: tokio::sync::mpsc::UnboundedSender<ToChannel>,
    buf: Vec<u8>,
    latency: hdrhistogram::Histogram<u64>,
    last_activity: Instant,
    /// --max-pps/--max-mbps, in ns since `origin`.
    cap: Option<tcpclone::limit::RateCap>,
    origin: Instant,
    /// Packets are waiting for the cap until then.
    held_until: Option<Instant>,
    /// --report: every answered request's timing.
    report: Option<crate::report::Collector>,
}

/// The end-of-run report of raw mode: the answered requests' samples already in `c`, plus the
/// engine's totals (requests never answered, bytes, sessions).
fn raw_report(
    mut c: crate::report::Collector,
    st: &crate::engine::EngineStats,
    copies: u32,
    elapsed: Duration,
) -> crate::report::Report {
    c.add_raw_totals(
        st.requests_sent.saturating_sub(st.requests_answered),
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
    };
    c.finish(elapsed)
}

impl EngineLoop {
    fn run(
        &mut self,
        cap_rx: Receiver<Batch>,
        resp_rx: &Receiver<channel::ResponseBatch>,
        sig_rx: &Receiver<i32>,
        pool: &BatchPool,
        stats: Option<Duration>,
        offline: bool,
    ) -> (u64, u64, u64, u64, u64) {
        let mut cap_rx = cap_rx;
        let mut eof = false;
        let mut next_stats = stats.map(|d| Instant::now() + d);
        let mut next_compact = Instant::now() + COMPACT_EVERY;
        loop {
            let now = Instant::now();
            let mut deadline = now + MAX_SLEEP;
            if let Some(t) = self.engine.poll_timeout() {
                deadline = deadline.min(t);
            }
            if let Some(t) = next_stats {
                deadline = deadline.min(t);
            }
            if let Some(t) = self.held_until {
                deadline = deadline.min(t);
            }
            select! {
                recv(cap_rx) -> b => match b {
                    Ok(batch) => {
                        let now = Instant::now();
                        for (_, ip) in batch.iter() {
                            self.engine.handle_captured(now, ip);
                        }
                        self.flush(now);
                        let wall = capture::wall_ns();
                        for (ts, _) in batch.iter() {
                            let _ = self.latency.record((wall.saturating_sub(ts) / 1000).max(1));
                        }
                        pool.give(batch);
                    }
                    Err(_) => {
                        // All capture threads ended: the --offline file is done.
                        cap_rx = crossbeam_channel::never();
                        eof = true;
                        self.last_activity = Instant::now();
                    }
                },
                recv(resp_rx) -> r => if let Ok(headers) = r {
                    self.take_responses(&headers);
                },
                recv(sig_rx) -> s => {
                    info!(signal = s.unwrap_or(0), "stopping");
                    break;
                },
                default(deadline.saturating_duration_since(now)) => {},
            }
            // Responses before timers: when the engine runs behind, a retransmission timer
            // that is due may be answered by a response already queued; firing it first would
            // resend for nothing and put more load on an engine that is already late.
            for _ in 0..RESPONSE_DRAIN {
                match resp_rx.try_recv() {
                    Ok(headers) => self.take_responses(&headers),
                    Err(_) => break,
                }
            }
            let now = Instant::now();
            if self.engine.poll_timeout().is_some_and(|t| t <= now) {
                self.engine.handle_timeout(now);
                self.flush(now);
            } else if self.held_until.is_some_and(|t| t <= now) {
                self.flush(now);
            }
            if let Some(t) = next_stats {
                if t <= now {
                    // Through the log: standard error, or the -l file.
                    info!(target: "tcpcopy::stats", "{} | engine: {}", self.counters.line(), self.engine_report());
                    next_stats = Some(now + stats.unwrap_or(Duration::from_secs(1)));
                }
            }
            if now >= next_compact {
                self.engine.compact();
                tcpclone::sys::release_free_memory();
                next_compact = now + COMPACT_EVERY;
            }
            if offline && eof {
                let live = Counters::get(&self.counters.sessions_added)
                    .saturating_sub(Counters::get(&self.counters.sessions_removed));
                if live == 0 || self.last_activity.elapsed() >= OFFLINE_IDLE {
                    info!(
                        live_sessions = live,
                        "capture file done and sessions drained; stopping"
                    );
                    break;
                }
            }
        }
        let h = &self.latency;
        (
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.99),
            h.value_at_quantile(0.999),
            h.max(),
            h.len(),
        )
    }

    /// Hands one batch of response headers from intercept to the engine, then sends what they
    /// released.
    fn take_responses(&mut self, headers: &channel::ResponseBatch) {
        let now = Instant::now();
        for h in headers.iter() {
            self.engine.handle_response(now, h);
        }
        self.counters
            .sub(&self.counters.responses_queued, headers.bytes());
        if !headers.is_empty() {
            self.last_activity = now;
        }
        self.flush(now);
    }

    /// Sends everything the engine has ready and forwards its events.
    fn flush(&mut self, now: Instant) {
        // Registrations first: intercept must know a clone before its SYN reaches the target,
        // or the SYN-ACK arrives unowned (parked at best, dropped at worst).
        self.forward_events();
        let now_ns = now.saturating_duration_since(self.origin).as_nanos() as u64;
        self.held_until = None;
        loop {
            if let Some(cap) = self.cap.as_mut() {
                let at = cap.ready_at(now_ns);
                if at > now_ns {
                    // Over the cap: what is left stays in the sessions until then.
                    self.held_until = Some(self.origin + Duration::from_nanos(at));
                    self.counters.add(&self.counters.rate_held, 1);
                    break;
                }
            }
            let Some(t) = self.engine.poll_transmit(now, &mut self.buf) else {
                break;
            };
            self.last_activity = now;
            let pkt = &self.buf[..t.len];
            if let Some(cap) = self.cap.as_mut() {
                cap.charge(now_ns, t.len);
            }
            match self.raw.send(pkt, t.dst) {
                Ok(()) => {
                    self.counters.add(&self.counters.sent_packets, 1);
                    self.counters.add(&self.counters.sent_bytes, t.len as u64);
                }
                Err(e) => {
                    let c = &self.counters;
                    let counter = match e {
                        sys::SendError::Busy => &c.send_busy,
                        sys::SendError::TooLarge => &c.send_too_large,
                        sys::SendError::NoSocket | sys::SendError::Refused => &c.send_refused,
                    };
                    c.add(counter, 1);
                }
            }
        }
        self.forward_events();
    }

    /// Forwards the engine's session events to the intercept channel.
    fn forward_events(&mut self) {
        while let Some(ev) = self.engine.poll_event() {
            let cmd = match ev {
                EngineEvent::SessionAdded { client, target } => {
                    self.counters.add(&self.counters.sessions_added, 1);
                    ToChannel::Add(client, target)
                }
                EngineEvent::SessionRemoved { client, target } => {
                    self.counters.add(&self.counters.sessions_removed, 1);
                    ToChannel::Remove(client, target)
                }
                EngineEvent::RequestTiming {
                    client,
                    target,
                    sent,
                    answered,
                } => {
                    if let Some(c) = self.report.as_mut() {
                        use std::hash::{BuildHasher, BuildHasherDefault};
                        let h = BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default();
                        c.record(crate::report::RequestSample {
                            session: h.hash_one((client, target)),
                            sent_at: sent.saturating_duration_since(self.origin),
                            latency: Some(answered.saturating_duration_since(sent)),
                            outcome: Some(crate::report::Outcome::Answered),
                            ..Default::default()
                        });
                    }
                    continue;
                }
            };
            let _ = self.channel_tx.send(cmd);
        }
    }

    /// The engine's counters, one line.
    fn engine_report(&self) -> String {
        self.engine.stats().to_string()
    }
}
