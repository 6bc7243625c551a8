//! One raw-mode worker: its share of the capture (rings read in place), its own engine shard,
//! timers and sender, on one thread that sleeps in one `poll`.
//!
//! A wake-up takes every block the kernel has handed over, feeds the frames to the engine
//! straight from the ring (no copy, no hand-off to another thread), gives the blocks back,
//! reads the responses intercept reported for this worker's sessions from the worker's own
//! intercept connections ([`InterceptLink`]), runs due timers, and sends everything the engine
//! produced with as few `sendmmsg` calls as the batch allows.
//! Files (`--offline`) and the libpcap fallback (`--capture pcap`) feed the same loop through
//! a channel of copied batches instead of rings.
//!
//! Nothing here decides anything about TCP: that is the engine's job.

use super::capture::{self, CopiedBatch, CopiedBatchPool, LiveRing, Skip};
use super::channel::{InterceptLink, ToChannel};
use super::counters::Counters;
use super::nexthop::HopStats;
use super::shed::{Backlog, ShedPolicy};
use super::sys::{Flushed, TxQueue};
use crate::engine::{Engine, EngineEvent, EngineStats};
use crossbeam_channel::Receiver;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tcpclone::capture::tpacket::BlockView;
use tcpclone::sys::ring::{poll_fds, HeldBytes, PollFd, Wake};
use tracing::{debug, info, warn};

/// Longest a worker sleeps without looking at its stop flag and publishing its counters.
const MAX_SLEEP: Duration = Duration::from_millis(250);
/// How often a worker gives back memory a past peak of sessions left ([`Engine::compact`]).
pub const COMPACT_EVERY: Duration = Duration::from_secs(5);
/// How often a worker publishes its engine's counters for `--stats` and the summary.
const PUBLISH_EVERY: Duration = Duration::from_millis(200);
/// Most blocks taken from one ring per round, so that responses and timers are not starved
/// by a ring that refills as fast as it is read.
const BLOCKS_PER_ROUND: usize = 8;
/// How often a worker looks whether a named capture device was deleted and re-created.
const RING_CHECK_EVERY: Duration = Duration::from_secs(1);
/// After the end of an --offline file: stop once nothing was sent or received for this long.
const OFFLINE_IDLE: Duration = Duration::from_secs(3);
/// What the kernel may still fill of a ring, at least, when the worker starts copying the
/// client bytes sessions hold in its blocks out: the kernel stops at a held block when it comes
/// round to it, and it goes on filling while the worker copies (at memory speed on loopback or
/// a veth). Half the ring up to this much, and a quarter of larger rings.
const COPY_HEADROOM: usize = 128 << 20;

/// Most of a ring whose held bytes one copy-out copies: copying is at memory speed, and the
/// worker reads no block meanwhile while the kernel fills them as fast.
const COPY_BURST: usize = 16 << 20;

/// A worker whose last block read is held sleeps at most this long (or the block timeout,
/// shorter) before it looks at the ring again: a longer `--capture-block` would leave full
/// blocks unread, and held blocks uncopied, for as long.
const HELD_RECHECK_MAX: Duration = Duration::from_millis(1);

/// How long a worker may be kept from reading its ring (other threads on its core, a copy-out,
/// a slow send) without the kernel coming round to a block the sessions hold. On a host whose
/// cores production keeps busy, the scheduler leaves a runnable worker off its CPU for a
/// scheduling period (24 ms by default) now and then.
const STALL_BUDGET: Duration = Duration::from_millis(50);

/// The shortest span a ring's fill rate is measured over. Short: an upload at memory speed
/// fills a small ring within a window of the stalls' length (50 ms windows let the 64 MB ring
/// of `redis_set_64k_values_small_ring` overflow before its rate was known).
const FILL_WINDOW: Duration = Duration::from_millis(5);

/// The fill rate's peak halves every this long once the kernel fills the ring more slowly.
const FILL_HALF_LIFE: Duration = Duration::from_secs(2);

/// How fast the kernel has filled a ring lately, in blocks per second: its peak over windows
/// of at least [`FILL_WINDOW`], decaying slowly.
#[derive(Default)]
struct FillRate {
    /// When the current window began, and the ring's [`PacketRing::filled`] count then.
    ///
    /// [`PacketRing::filled`]: tcpclone::sys::ring::PacketRing::filled
    start: Option<(Instant, u64)>,
    peak: f64,
}

impl FillRate {
    /// Takes the ring's count of blocks filled so far.
    fn update(&mut self, now: Instant, filled: u64) {
        let Some((t, f)) = self.start else {
            self.start = Some((now, filled));
            return;
        };
        let dt = now.saturating_duration_since(t);
        if dt < FILL_WINDOW {
            // A burst shows before its window closes: what the kernel filled so far, over a
            // whole window (about what the window will show, never a rate of a few blocks in a
            // microsecond). Payloads read at the start of a burst at memory speed are held for
            // a millisecond or two this way, not for the whole window: the kernel may come round
            // to them if the worker is then kept from its CPU.
            let so_far = filled.saturating_sub(f) as f64 / FILL_WINDOW.as_secs_f64();
            self.peak = self.peak.max(so_far);
            return;
        }
        // A ring opened again counts from 0: that window says nothing.
        let rate = filled.saturating_sub(f) as f64 / dt.as_secs_f64();
        let decay = 0.5f64.powf(dt.as_secs_f64() / FILL_HALF_LIFE.as_secs_f64());
        self.peak = rate.max(self.peak * decay);
        self.start = Some((now, filled));
    }

    /// Blocks the kernel fills at the peak rate while the worker is kept away for
    /// [`STALL_BUDGET`].
    fn stall_blocks(&self) -> usize {
        (self.peak * STALL_BUDGET.as_secs_f64()).ceil() as usize
    }
}

/// When a ring of `blocks` blocks of `block_bytes` holds client bytes, in blocks the kernel
/// filled since the oldest block still held (or, with none, the first block not read yet):
/// payloads stay in the ring while fewer than `.0`; from `.0` on, the sessions copy out the
/// bytes they hold in blocks older than `.1`, [`COPY_BURST`] (at most a quarter of the ring)
/// less: not all at once, so that a copy-out does not stall the reading (all of them where `.0`
/// is that close to the kernel, on a small ring filled fast); and hold new payloads again. `.0`
/// leaves the kernel [`COPY_HEADROOM`], and at least `stall_blocks`, what it fills while the
/// worker is kept away ([`STALL_BUDGET`]): a ring too small for that at the rate it fills holds
/// nothing (`.0` is 0) and payloads are copied as they are read.
///
/// Payloads are held up to the copy-out itself, not copied as they arrive from a quarter of
/// the ring earlier on: a clone that lags for a moment then copies nothing, and one that lags
/// for long copies what it would have copied anyway. A copy is what makes a lagging clone lag
/// more: each byte copied out of the ring costs the worker a copy and fresh pages on top of
/// the kernel's copy when sending (the A/B runs: docs/benchmarks.md, "ring hold").
fn ring_hold(blocks: usize, block_bytes: usize, stall_blocks: usize) -> (usize, usize) {
    let quarter = blocks / 4;
    let headroom = quarter
        .max((blocks / 2).min(COPY_HEADROOM / block_bytes.max(1)))
        .max(stall_blocks)
        .max(1)
        .min(blocks);
    let copy_above = blocks - headroom;
    let burst = quarter.min(COPY_BURST / block_bytes.max(1)).max(1);
    (copy_above, copy_above.saturating_sub(burst))
}

/// At most one log line about shedding per worker this often.
const SHED_LOG_EVERY: Duration = Duration::from_secs(10);

/// What a worker is fed from.
pub enum Feed {
    /// Rings read in place, one per device.
    Rings(Vec<LiveRing>),
    /// Copied batches from a file or the libpcap fallback.
    Batches {
        /// The batches; disconnected when the producer is done.
        rx: Receiver<CopiedBatch>,
        /// Where used batches go back.
        pool: CopiedBatchPool,
        /// Whether the end of the feed ends the run (a file).
        offline: bool,
    },
}

/// Everything a worker shares with the rest of the process.
pub struct Shared {
    /// Glue counters (atomics).
    pub counters: Arc<Counters>,
    /// Set to stop every worker.
    pub stop: Arc<AtomicBool>,
    /// Each worker's latest engine counters, by worker index.
    pub engine_stats: Arc<Mutex<Vec<EngineStats>>>,
    /// --report: every answered request's timing, endpoint and class.
    pub report: Option<Arc<Mutex<crate::report::Collector>>>,
    /// --protocol: how the report decodes requests (`None`: by the target's port).
    pub protocol: Option<tcpclone::decode::Protocol>,
    /// Time zero of the report's samples and of the rate cap.
    pub origin: Instant,
    /// --metrics: each worker's capture-to-engine latency, copied at every publish.
    pub latency: Option<super::metrics::PublishedLatency>,
    /// Shed connections when a ring falls behind (not --no-shed).
    pub shed: bool,
    /// Each worker's thread CPU time, published with its counters (`--metrics`).
    pub cpu: super::metrics::WorkerCpu,
    /// --nice: the workers' nice value.
    pub nice: i32,
}

/// One worker's state.
pub struct Worker {
    /// Index (0-based), also in the engine-stats table.
    pub index: usize,
    feed: Feed,
    wake: Arc<Wake>,
    core: Core,
    /// An --offline file's stamps on the run's clock (the report's production times).
    file_clock: capture::FileClock,
    /// When to shed connections ([`Worker::watch_backlog`]).
    shed: ShedPolicy,
    /// Each ring's fill rate, by its index in the feed.
    fill: Vec<FillRate>,
    /// Blocks taken from the rings so far (wrapping).
    blocks_taken: usize,
    /// When a start of shedding was last logged.
    shed_logged: Option<Instant>,
    /// The current shedding's start was logged: its stop is too.
    shed_stop_logs: bool,
}

/// A worker's engine and what surrounds it: the sender, the limits, the figures.
struct Core {
    engine: Engine,
    tx: TxQueue,
    /// This worker's connections to intercept.
    link: InterceptLink,
    /// Unsent registration bytes already added to the shared gauge.
    unsent_published: u64,
    shared: Shared,
    latency: hdrhistogram::Histogram<u64>,
    last_activity: Instant,
    /// --max-pps/--max-mbps (this worker's share), in ns since `origin`.
    cap: Option<tcpclone::limit::RateCap>,
    /// Packets are waiting for the cap until then.
    held_until: Option<Instant>,
    /// Next-hop lookup counts already added to the shared counters.
    hops_published: HopStats,
}

/// What a worker hands back when it ends.
pub struct WorkerEnd {
    /// Capture-to-engine latency, µs.
    pub latency: hdrhistogram::Histogram<u64>,
    /// The engine's final counters.
    pub stats: EngineStats,
    /// CPU time the worker's thread used.
    pub cpu: Duration,
}

impl Worker {
    /// A worker over `feed`, registering its sessions and reading their responses on `link`
    /// (`wake` is rung by anyone who sets the stop flag).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        index: usize,
        feed: Feed,
        link: InterceptLink,
        wake: Arc<Wake>,
        engine: Engine,
        tx: TxQueue,
        cap: Option<tcpclone::limit::RateCap>,
        shared: Shared,
    ) -> Worker {
        Worker {
            index,
            feed,
            wake,
            file_clock: capture::FileClock::default(),
            shed: ShedPolicy::default(),
            fill: Vec::new(),
            blocks_taken: 0,
            shed_logged: None,
            shed_stop_logs: false,
            core: Core {
                engine,
                tx,
                link,
                unsent_published: 0,
                shared,
                latency: hdrhistogram::Histogram::new_with_bounds(1, 60_000_000, 3)
                    .expect("histogram bounds"),
                last_activity: Instant::now(),
                cap,
                held_until: None,
                hops_published: HopStats::default(),
            },
        }
    }

    /// Runs until the stop flag is set (or the end of an --offline file has drained).
    pub fn run(mut self) -> WorkerEnd {
        // --nice, whatever the thread that started us had (--capture-nice is for libpcap's
        // capture threads only; see main).
        let nice = self.core.shared.nice;
        if tcpclone::sys::thread_nice() != nice {
            if let Err(e) = tcpclone::sys::set_thread_nice(nice) {
                warn!(worker = self.index, "cannot run at nice {nice}: {e}");
            }
        }
        let mut next_compact = Instant::now() + COMPACT_EVERY;
        let mut next_publish = Instant::now();
        let mut next_ring_check = Instant::now() + RING_CHECK_EVERY;
        let mut eof = false;
        let mut fds = Vec::new();
        let mut ready = Vec::new();
        // Whether intercept's sockets may hold something: after a poll, after a read that
        // left bytes behind, or once the rings gave work (time passed). Otherwise the round
        // that finds nothing left before sleeping skips a read that could only say EAGAIN;
        // anything that arrives meanwhile wakes the poll at once.
        let mut link_due = true;
        loop {
            if self.core.shared.stop.load(Ordering::Relaxed) {
                break;
            }
            let mut busy = self.read_feed(&mut eof);
            // Responses before timers: when the worker runs behind, a retransmission timer
            // that is due may be answered by a response already in the socket; firing it
            // first would resend for nothing and load a worker that is already late.
            let timers_due = |core: &Core, now: Instant| {
                core.engine.poll_timeout().is_some_and(|t| t <= now)
                    || core.held_until.is_some_and(|t| t <= now)
            };
            if link_due || busy || timers_due(&self.core, Instant::now()) {
                let (read, more) = self.core.take_responses();
                busy |= read || more;
                link_due = more;
            }
            let now = Instant::now();
            if timers_due(&self.core, now) {
                self.core.engine.handle_timeout(now);
            }
            self.core.flush(now);
            if now >= next_publish {
                self.publish();
                next_publish = now + PUBLISH_EVERY;
            }
            if now >= next_compact {
                self.core.engine.compact();
                self.core.engine.expire_shed(now);
                next_compact = now + COMPACT_EVERY;
            }
            if now >= next_ring_check {
                self.reopen_recreated_rings();
                next_ring_check = now + RING_CHECK_EVERY;
            }
            if eof {
                let live = self.core.engine.stats().sessions_active;
                if live == 0 || self.core.last_activity.elapsed() >= OFFLINE_IDLE {
                    info!(
                        live_sessions = live,
                        "capture file done and sessions drained; stopping"
                    );
                    break;
                }
            }
            if busy {
                continue;
            }
            // Nothing to do: sleep until a block, a response, the stop flag or a deadline.
            self.wake.park();
            if self.feed_ready() {
                self.wake.unpark(false);
                continue;
            }
            let mut deadline = now + MAX_SLEEP;
            if let Some(t) = self.core.engine.poll_timeout() {
                deadline = deadline.min(t);
            }
            if let Some(t) = self.core.held_until {
                deadline = deadline.min(t);
            }
            if let Some(t) = self.core.link.poll_timeout() {
                deadline = deadline.min(t);
            }
            if eof {
                deadline = deadline.min(now + Duration::from_millis(50));
            }
            fds.clear();
            fds.push(PollFd::new(self.wake.fd(), true, false));
            if let Feed::Rings(rings) = &self.feed {
                for r in rings {
                    if r.ring.last_taken_held() {
                        // Its descriptor would poll readable at once (see last_taken_held):
                        // looked at again after the block timeout, by when the kernel has
                        // handed over anything captured now. poll skips a negative fd.
                        deadline = deadline.min(now + r.block_timeout().min(HELD_RECHECK_MAX));
                        fds.push(PollFd::new(-1, true, false));
                    } else {
                        fds.push(PollFd::new(r.ring.fd(), true, false));
                    }
                }
            }
            self.core.link.poll_fds(&mut fds);
            let wait = deadline.saturating_duration_since(Instant::now());
            // Round up: a poll that returns a few µs before a timer is due would spin.
            let ms = wait.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
            if let Err(e) = poll_fds(&mut fds, ms) {
                warn!(worker = self.index, error = %e, "poll failed");
                std::thread::sleep(Duration::from_millis(10));
            }
            link_due = true;
            // fds[0] is the wake-up's eventfd: read only when something wrote to it.
            self.wake.unpark(fds[0].is_ready());
            ready.clear();
            ready.extend(fds.iter().map(PollFd::is_ready));
            self.take_ring_errors(&ready);
        }
        if self.core.shared.report.is_some() {
            // Answered requests still waiting for production's answer go in without it.
            self.core.engine.flush_report();
            self.core.forward_events(Instant::now());
        }
        self.publish();
        WorkerEnd {
            stats: self.core.engine.stats(),
            latency: self.core.latency,
            cpu: tcpclone::sys::thread_cpu_time(),
        }
    }

    /// A ring that polls readable without a block holds a socket error (ENETDOWN when its
    /// device went down): take it, or every poll returns at once and the worker spins. The
    /// ring keeps working when the device comes back up; `-i any` never sees this.
    fn take_ring_errors(&mut self, ready: &[bool]) {
        let Feed::Rings(rings) = &self.feed else {
            return;
        };
        // ready[0] is the wake fd; the rings follow in order.
        for (r, _) in rings
            .iter()
            .zip(ready.iter().skip(1))
            .filter(|(r, &ready)| ready && !r.ring.has_block())
        {
            match tcpclone::sys::ring::take_socket_error(r.ring.fd()) {
                Ok(None) => {}
                Ok(Some(e)) | Err(e) => {
                    let c = &self.core.shared.counters;
                    c.add(&c.capture_errors, 1);
                    warn!(device = %r.name, error = %e, "capture error; the ring stays open");
                }
            }
        }
    }

    /// Opens again the rings whose named device was deleted and re-created (see
    /// [`LiveRing::reopen_if_recreated`]); a failure is counted and tried again next time.
    fn reopen_recreated_rings(&mut self) {
        let Feed::Rings(rings) = &mut self.feed else {
            return;
        };
        let c = &self.core.shared.counters;
        for r in rings.iter_mut() {
            match r.reopen_if_recreated() {
                Ok(false) => {}
                Ok(true) => {
                    c.add(&c.capture_reopens, 1);
                    // Bytes held in the old ring would never be found old by the new one:
                    // copied now (rare), so that the old mapping goes too.
                    self.core.engine.copy_ring_bytes(Instant::now(), &|_| true);
                    info!(worker = self.index, device = %r.name, ifindex = r.ifindex, "capture device re-created; ring opened again");
                }
                Err(e) => {
                    c.add(&c.capture_errors, 1);
                    warn!(worker = self.index, device = %r.name, "{e:#}");
                }
            }
        }
    }

    /// Whether the feed has something to read right now.
    fn feed_ready(&mut self) -> bool {
        match &mut self.feed {
            Feed::Rings(rings) => rings.iter().any(|r| r.ring.has_block()),
            Feed::Batches { rx, .. } => !rx.is_empty(),
        }
    }

    /// Sheds connections while the worker cannot keep up with its capture and its ring
    /// overflows ([`super::shed`] says when).
    fn watch_backlog(&mut self) {
        let Feed::Rings(rings) = &self.feed else {
            return;
        };
        if !self.core.shared.shed {
            return;
        }
        let (waiting, blocks) = rings.iter().fold((0, 0), |(w, n), r| {
            (w + r.ring.waiting(), n + r.ring.slot_count())
        });
        let now = Instant::now();
        let engine = &mut self.core.engine;
        let a = self.shed.observe(
            now,
            Backlog {
                waiting,
                blocks,
                taken: self.blocks_taken,
            },
            engine.shedding(),
            engine.shed_flows() > 0,
        );
        // Under a lasting overload a worker starts and stops shedding several times a
        // second: a start is logged once per SHED_LOG_EVERY at most, with its stop (the
        // counters have every event).
        if a.stop {
            engine.set_shedding(false);
            if std::mem::take(&mut self.shed_stop_logs) {
                let st = engine.stats();
                info!(
                    worker = self.index,
                    shed = st.shed_sessions,
                    shed_new = st.shed_new,
                    resumed = st.shed_resumed,
                    "capture caught up: cloning new connections again"
                );
            }
        }
        if a.allow_resume {
            engine.allow_resume();
        }
        if a.start {
            engine.set_shedding(true);
            let c = &self.core.shared.counters;
            c.add(&c.overloads, 1);
            if self.shed_logged.is_none_or(|t| now >= t + SHED_LOG_EVERY) {
                self.shed_logged = Some(now);
                self.shed_stop_logs = true;
                warn!(
                    worker = self.index,
                    waiting_blocks = waiting,
                    ring_blocks = blocks,
                    overloads = Counters::get(&c.overloads),
                    "capture overflowing: shedding connections until it catches up"
                );
            }
        }
        if let Some(share) = a.shed_share {
            let n = engine.shed_heaviest(now, share);
            if n > 0 {
                debug!(
                    worker = self.index,
                    connections = n,
                    share = format_args!("{share:.2}"),
                    "capture still falling behind: heaviest clones shed"
                );
            }
        }
    }

    /// Feeds what the capture has to the engine; returns whether there was anything.
    fn read_feed(&mut self, eof: &mut bool) -> bool {
        self.watch_backlog();
        let mut any = false;
        match &mut self.feed {
            Feed::Rings(rings) => {
                let c = self.core.shared.counters.clone();
                // With the report on, the rings keep production's answers (this host's
                // outgoing frames) and the frames' stamps time production.
                let report = self.core.shared.report.is_some();
                self.fill.resize_with(rings.len(), FillRate::default);
                for (r, fill) in rings.iter_mut().zip(&mut self.fill) {
                    // Payloads stay in the ring only while this worker keeps up with it: behind,
                    // held blocks would soon have to be copied out (below), a block at a time.
                    let n = r.ring.slot_count();
                    fill.update(Instant::now(), r.ring.filled());
                    let (hold_below, copy_older) =
                        ring_hold(n, r.ring.mapped_bytes() / n.max(1), fill.stall_blocks());
                    let may_hold = r.ring.oldest_held_age() + r.ring.waiting() < hold_below;
                    for _ in 0..BLOCKS_PER_ROUND {
                        let Some(block) = r.ring.next_block() else {
                            break;
                        };
                        any = true;
                        self.blocks_taken = self.blocks_taken.wrapping_add(1);
                        let now = Instant::now();
                        // The ring overflowed before this block: holes in the sessions' streams
                        // from here on are most likely lost segments (see Engine::capture_lost).
                        let losing = block.losing();
                        if losing {
                            self.core.engine.capture_lost(now);
                            self.shed.overflowed();
                        }
                        let wall_then = if report { capture::wall_ns() } else { 0 };
                        let (mut frames, mut bytes, mut not_ip, mut cut) = (0u64, 0u64, 0, 0);
                        let mut stamps = [0u64; 64];
                        let mut n_stamps = 0;
                        match BlockView::new_checked(block.bytes()) {
                            Ok(view) => {
                                for f in view.frames() {
                                    let f = match f {
                                        Ok(f) => f,
                                        Err(e) => {
                                            c.add(&c.capture_errors, 1);
                                            warn!(device = %r.name, "{e}");
                                            break;
                                        }
                                    };
                                    frames += 1;
                                    match capture::ring_ip(&f, report) {
                                        Ok((ip, outgoing)) => {
                                            bytes += ip.len() as u64;
                                            let engine = &mut self.core.engine;
                                            let at = if report {
                                                capture::live_stamp(now, wall_then, f.ts_ns)
                                            } else {
                                                now
                                            };
                                            if outgoing {
                                                engine.handle_production_captured(at, ip);
                                            } else if may_hold {
                                                engine.handle_captured_in(now, at, ip, &block);
                                            } else {
                                                engine.handle_captured_at(now, at, ip);
                                            }
                                            if n_stamps < stamps.len() {
                                                stamps[n_stamps] = f.ts_ns;
                                                n_stamps += 1;
                                            }
                                        }
                                        Err(Skip::NotIp) => not_ip += 1,
                                        Err(Skip::Truncated) => cut += 1,
                                    }
                                }
                            }
                            Err(e) => {
                                c.add(&c.capture_errors, 1);
                                warn!(device = %r.name, "{e}");
                            }
                        }
                        // The frames were read in place; the kernel may fill the block again once
                        // no session holds bytes of it.
                        drop(block);
                        // The kernel stops at a held block when it comes round to it: well
                        // before, the sessions copy what they hold in the older blocks and let
                        // them go (see `ring_hold`).
                        let age = r.ring.oldest_held_age();
                        let waiting = if age > 0 { r.ring.waiting() } else { 0 };
                        // The kernel fills blocks in order and cannot pass a held one: a ring
                        // full up to it stays full until the copy-out below (reading a block
                        // moves one from `waiting` to `age`), so this sees every such stop.
                        if age > 0 && age + waiting >= n {
                            c.add(&c.ring_hold_overruns, 1);
                        }
                        if age > 0 && age + waiting >= hold_below {
                            let ring = &r.ring;
                            let old = |h: &HeldBytes| {
                                ring.held_age(h).is_some_and(|a| a + waiting > copy_older)
                            };
                            self.core.engine.copy_ring_bytes(now, &old);
                            c.add(&c.ring_copyouts, 1);
                        }
                        if losing {
                            // Reading the counter resets it, and with it the next blocks' flag.
                            read_ring_drops(r, &c);
                        }
                        c.add(&c.captured_frames, frames);
                        c.add(&c.captured_bytes, bytes);
                        if not_ip > 0 {
                            c.add(&c.not_ip, not_ip);
                        }
                        if cut > 0 {
                            c.add(&c.truncated, cut);
                        }
                        let wall = capture::wall_ns();
                        for &ts in &stamps[..n_stamps] {
                            let _ = self
                                .core
                                .latency
                                .record((wall.saturating_sub(ts) / 1000).max(1));
                        }
                        // Send what this block produced before reading the next one: the
                        // target sees segments as soon as the engine has them.
                        self.core.flush(now);
                    }
                }
            }
            Feed::Batches { rx, pool, offline } => {
                for _ in 0..BLOCKS_PER_ROUND {
                    match rx.try_recv() {
                        Ok(batch) => {
                            any = true;
                            let now = Instant::now();
                            if self.core.shared.report.is_none() {
                                for (_, ip) in batch.iter() {
                                    self.core.engine.handle_captured(now, ip);
                                }
                            } else {
                                // The report's production times on the capture's stamps:
                                // a file's own, or a live capture's.
                                let wall_then = capture::wall_ns();
                                for (_, stamp, ip) in batch.iter_stamped() {
                                    let at = if *offline {
                                        self.file_clock.at(now, stamp)
                                    } else {
                                        capture::live_stamp(now, wall_then, stamp)
                                    };
                                    self.core.engine.handle_captured_at(now, at, ip);
                                }
                            }
                            let wall = capture::wall_ns();
                            for (ts, _) in batch.iter() {
                                let _ = self
                                    .core
                                    .latency
                                    .record((wall.saturating_sub(ts) / 1000).max(1));
                            }
                            pool.give(batch);
                            self.core.flush(now);
                        }
                        Err(crossbeam_channel::TryRecvError::Empty) => break,
                        Err(crossbeam_channel::TryRecvError::Disconnected) => {
                            if *offline && !*eof {
                                *eof = true;
                                self.core.last_activity = Instant::now();
                            }
                            break;
                        }
                    }
                }
            }
        }
        any
    }
}

impl Core {
    /// Runs this worker's intercept connections for one round and hands every response
    /// header they read to the engine as it is decoded. Returns (anything read, more may be
    /// waiting in a socket).
    fn take_responses(&mut self) -> (bool, bool) {
        let now = Instant::now();
        let engine = &mut self.engine;
        let mut headers = 0u64;
        let r = self.link.pump(now, &mut |h, prefix| {
            headers += 1;
            engine.handle_response_with_prefix(now, h, prefix);
        });
        if headers > 0 {
            self.last_activity = now;
        }
        r
    }

    /// Sends everything the engine has ready (within the rate cap) and forwards its events.
    fn flush(&mut self, now: Instant) {
        // Registrations first: intercept must know a clone before its SYN reaches the target,
        // or the SYN-ACK arrives unowned (parked at best, dropped at worst).
        self.forward_events(now);
        self.link.write(now);
        let now_ns = now.saturating_duration_since(self.shared.origin).as_nanos() as u64;
        self.held_until = None;
        loop {
            if let Some(cap) = self.cap.as_mut() {
                let at = cap.ready_at(now_ns);
                if at > now_ns {
                    // Over the cap: what is left stays in the sessions until then.
                    self.held_until = Some(self.shared.origin + Duration::from_nanos(at));
                    let c = &self.shared.counters;
                    c.add(&c.rate_held, 1);
                    break;
                }
            }
            if self.tx.is_full() {
                self.send_queued(now);
            }
            // Super-segments' payloads stay in the sessions until the queue is flushed: the
            // engine is asked for nothing else until then.
            let Some(t) = self.engine.poll_transmit_by_ref(now, self.tx.slot()) else {
                break;
            };
            self.last_activity = now;
            if let Some(cap) = self.cap.as_mut() {
                cap.charge(now_ns, t.len + t.payload.map_or(0, |r| r.len()));
            }
            self.tx.push(t.len, t.dst, t.gso_size, t.payload);
        }
        self.forward_events(now);
        self.link.write(now);
        self.send_queued(now);
    }

    fn send_queued(&mut self, now: Instant) {
        if self.tx.is_empty() {
            return;
        }
        let f: Flushed = self.tx.flush(now, &self.engine);
        let c = &self.shared.counters;
        c.add(&c.sent_packets, f.sent);
        c.add(&c.sent_bytes, f.bytes);
        c.add(&c.send_calls, f.calls);
        c.add(&c.sent_via_packet, f.via_packet);
        c.add(&c.gso_frames, f.gso_frames);
        if f.gso_soft > 0 {
            c.add(&c.gso_soft, f.gso_soft);
        }
        if f.busy > 0 {
            c.add(&c.send_busy, f.busy);
        }
        if f.too_large > 0 {
            c.add(&c.send_too_large, f.too_large);
        }
        if f.refused > 0 {
            c.add(&c.send_refused, f.refused);
        }
    }

    /// Forwards the engine's session events to the intercept connections.
    fn forward_events(&mut self, now: Instant) {
        while let Some(ev) = self.engine.poll_event() {
            let c = &self.shared.counters;
            let cmd = match ev {
                EngineEvent::SessionAdded { client, target } => {
                    c.add(&c.sessions_added, 1);
                    ToChannel::Add(client, target)
                }
                EngineEvent::SessionRemoved { client, target } => {
                    c.add(&c.sessions_removed, 1);
                    ToChannel::Remove(client, target)
                }
                EngineEvent::RequestTiming {
                    client,
                    target,
                    sent,
                    answered,
                    request,
                    answer,
                    production,
                } => {
                    if let Some(r) = &self.shared.report {
                        use std::hash::{BuildHasher, BuildHasherDefault};
                        let h = BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default();
                        let protocol = self.shared.protocol.unwrap_or_else(|| {
                            tcpclone::decode::Protocol::from_port(target.port())
                        });
                        // Decoded here, outside the collector's lock.
                        let sample = crate::report::raw::raw_sample(
                            protocol,
                            &crate::report::raw::RawAnswer {
                                session: h.hash_one((client, target)),
                                sent_at: sent.saturating_duration_since(self.shared.origin),
                                latency: answered.saturating_duration_since(sent),
                                request: &request,
                                answer_prefix: &answer,
                                production: production.as_ref().map(|p| {
                                    crate::report::raw::RawProduction {
                                        at: p
                                            .request_at
                                            .saturating_duration_since(self.shared.origin),
                                        latency: p
                                            .answered_at
                                            .saturating_duration_since(p.request_at),
                                        prefix: &p.prefix,
                                    }
                                }),
                            },
                        );
                        r.lock().unwrap_or_else(|p| p.into_inner()).record(sample);
                    }
                    continue;
                }
                EngineEvent::RequestUnanswered {
                    client,
                    target,
                    sent,
                    request,
                    why,
                } => {
                    if let Some(r) = &self.shared.report {
                        use std::hash::{BuildHasher, BuildHasherDefault};
                        let h = BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default();
                        let protocol = self.shared.protocol.unwrap_or_else(|| {
                            tcpclone::decode::Protocol::from_port(target.port())
                        });
                        let sample = crate::report::raw::raw_unanswered_sample(
                            protocol,
                            &crate::report::raw::RawUnanswered {
                                session: h.hash_one((client, target)),
                                sent_at: sent.saturating_duration_since(self.shared.origin),
                                request: &request,
                                why,
                            },
                        );
                        r.lock().unwrap_or_else(|p| p.into_inner()).record(sample);
                    }
                    continue;
                }
            };
            self.link.register(now, cmd);
        }
    }
}

impl Worker {
    fn publish(&mut self) {
        let hops = self.core.tx.hop_stats();
        let c = &self.core.shared.counters;
        c.add(
            &c.hop_lookups,
            hops.lookups - self.core.hops_published.lookups,
        );
        c.add(
            &c.hop_unresolved,
            hops.unresolved - self.core.hops_published.unresolved,
        );
        self.core.hops_published = hops;
        let unsent = self.core.link.unsent_bytes();
        if unsent >= self.core.unsent_published {
            c.add(&c.registrations_unsent, unsent - self.core.unsent_published);
        } else {
            c.sub(&c.registrations_unsent, self.core.unsent_published - unsent);
        }
        self.core.unsent_published = unsent;
        if let Feed::Rings(rings) = &self.feed {
            for r in rings {
                read_ring_drops(r, &self.core.shared.counters);
            }
        }
        let mut t = self
            .core
            .shared
            .engine_stats
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(slot) = t.get_mut(self.index) {
            *slot = self.core.engine.stats();
        }
        drop(t);
        if let Some(l) = &self.core.shared.latency {
            let mut l = l.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(slot) = l.get_mut(self.index) {
                slot.reset();
                let _ = slot.add(&self.core.latency);
            }
        }
        if let Some(c) = self.core.shared.cpu.get(self.index) {
            let ns = tcpclone::sys::thread_cpu_time().as_nanos();
            c.store(u64::try_from(ns).unwrap_or(u64::MAX), Ordering::Relaxed);
        }
    }
}

/// Adds a ring's kernel drop counter (read and reset) to the counters.
pub fn read_ring_drops(r: &LiveRing, counters: &Counters) {
    match r.ring.stats() {
        Ok(s) => counters.add(&counters.kernel_drops, u64::from(s.drops)),
        Err(e) => warn!(device = %r.name, error = %e, "cannot read capture drop counters"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rings_up_to_256_mb_keep_half_ahead_of_the_kernel() {
        // The default 256 MB in 2,048 blocks of 128 KiB; 128 MB; 64 MB.
        assert_eq!(ring_hold(2048, 128 << 10, 0), (1024, 896));
        assert_eq!(ring_hold(4096, 32 << 10, 0), (2048, 1536));
        assert_eq!(ring_hold(512, 128 << 10, 0), (256, 128));
    }

    #[test]
    fn larger_rings_keep_the_headroom_or_a_quarter() {
        // 384 MB: 128 MB ahead; 1 GB in 4,096 blocks of 256 KiB: a quarter ahead.
        assert_eq!(ring_hold(3072, 128 << 10, 0), (2048, 1920));
        assert_eq!(ring_hold(4096, 256 << 10, 0), (3072, 3008));
    }

    #[test]
    fn a_fast_filling_ring_keeps_a_stall_ahead_of_the_kernel() {
        // The default ring filled at 2 GB/s (16,000 blocks/s: 800 in 50 ms): half still does.
        assert_eq!(ring_hold(2048, 128 << 10, 800), (1024, 896));
        // At 4 GB/s: 1,600 blocks ahead.
        assert_eq!(ring_hold(2048, 128 << 10, 1600), (448, 320));
        // A 64 MB ring at 1 GB/s (400 blocks in 50 ms), and one it cannot hold a stall of.
        assert_eq!(ring_hold(512, 128 << 10, 400), (112, 0));
        assert_eq!(ring_hold(512, 128 << 10, 900), (0, 0));
    }

    #[test]
    fn fill_rate_takes_the_peak_and_lets_it_decay() {
        let t0 = Instant::now();
        let mut f = FillRate::default();
        f.update(t0, 0);
        // 1,000 blocks in 100 ms: 10,000 a second, 500 in a stall.
        f.update(t0 + Duration::from_millis(100), 1000);
        assert_eq!(f.stall_blocks(), 500);
        // Idle for two half-lives: a quarter of the peak is left.
        f.update(t0 + Duration::from_millis(4100), 1000);
        assert_eq!(f.stall_blocks(), 125);
        // A ring opened again counts from 0 without a negative rate.
        f.update(t0 + Duration::from_millis(4200), 3);
        assert!(f.stall_blocks() <= 125);
    }

    #[test]
    fn a_burst_counts_before_its_window_closes() {
        let t0 = Instant::now();
        let mut f = FillRate::default();
        f.update(t0, 0);
        // 10 blocks within 1 ms: at least 10 in the window, 2,000 a second, 100 in a stall.
        f.update(t0 + Duration::from_millis(1), 10);
        let stall = f.stall_blocks();
        assert!((99..=101).contains(&stall), "{stall}");
        // 100 within 2 ms: 20,000 a second.
        f.update(t0 + Duration::from_millis(2), 100);
        let stall = f.stall_blocks();
        assert!((999..=1001).contains(&stall), "{stall}");
        // The window closes on 100 in 5 ms: the peak stays.
        f.update(t0 + Duration::from_millis(5), 100);
        let stall = f.stall_blocks();
        assert!((999..=1001).contains(&stall), "{stall}");
    }

    #[test]
    fn copies_take_older_blocks_than_the_copy_point_on_any_ring() {
        for blocks in 2..3000 {
            for block_bytes in [0, 1, 4096, 128 << 10, 1 << 20, usize::MAX] {
                for stall in [0, blocks / 3, blocks * 2] {
                    let (copy_at, older) = ring_hold(blocks, block_bytes, stall);
                    assert!(
                        older <= copy_at && copy_at < blocks,
                        "{blocks} x {block_bytes}, stall {stall}"
                    );
                }
            }
        }
    }
}
