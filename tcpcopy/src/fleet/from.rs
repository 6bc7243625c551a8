//! `--from`: a replay worker. It pulls its partitions' messages from their durable consumers,
//! assembles whole sessions ([`super::assemble::Assembler`]), hands each to stream mode's
//! replayer (through [`Dispatch`]) and acknowledges its messages once every copy of it has been
//! replayed. A session delivered again (its worker died before acknowledging) is replayed again;
//! it counts as a repeat when its sent mark says a worker had begun to replay it
//! ([`super::done`]). Payload bytes are never logged.

pub use super::done::{Dispatch, DoneToken};

use super::done::{Done, SentMark};
use super::nats::{self, BrokerSecrets};
use super::plan::{self, Assembler, BrokerUrl, WorkerSpec};
use super::wire::{self, CloseReason, Dir, FleetRecord};
use crate::stream::reassembly::{EndReason, Side, StreamEvent};
use async_nats::jetstream::{self, consumer, message::Acker};
use futures_util::StreamExt as _;
use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;

/// Messages fetched from one consumer at a time.
const BATCH: usize = 512;

/// What a worker did (printed at the end).
#[derive(Debug, Default)]
pub struct WorkerCounters {
    /// Whole sessions received.
    pub sessions: AtomicU64,
    /// Sessions handed to the replayer.
    pub replayed: AtomicU64,
    /// Sessions delivered again after another delivery was not acknowledged.
    pub redelivered: AtomicU64,
    /// Redelivered sessions a worker had begun to replay before (their sent mark was there):
    /// replayed again (at-least-once), their requests counted as repeats in the report. An
    /// upper bound on the sessions the target ran twice ([`super::done`] says by how much).
    pub repeats: AtomicU64,
    /// Sessions whose sent mark could not be stored (replayed anyway; delivered again, they
    /// would not count as repeats).
    pub unmarked: AtomicU64,
    /// Sessions outside --from-time/--to-time (acknowledged, not replayed).
    pub outside_window: AtomicU64,
    /// Messages that are not this format (another publisher's), acknowledged and skipped.
    pub foreign: AtomicU64,
    /// Sessions whose records are out of order (acknowledged, not replayed).
    pub malformed: AtomicU64,
    /// Sessions some part of which never came (a recorder stopped mid-publish), given up.
    pub incomplete: AtomicU64,
}

impl WorkerCounters {
    /// The counters as metrics (`--metrics`).
    pub fn metrics(&self, s: &mut tcpclone::metrics::Snapshot) {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let rows: [(&'static str, &'static str, &AtomicU64); 9] = [
            ("tcpclone_tcpcopy_fleet_worker_sessions_received", "[broker] Whole sessions this worker received from JetStream", &self.sessions),
            ("tcpclone_tcpcopy_fleet_worker_sessions_replayed", "[target] Received sessions handed to the replayer", &self.replayed),
            ("tcpclone_tcpcopy_fleet_worker_sessions_redelivered", "[broker] Sessions delivered again after an unacknowledged delivery", &self.redelivered),
            ("tcpclone_tcpcopy_fleet_worker_sessions_repeated", "[target] Redelivered sessions a worker had begun to replay before (replayed again)", &self.repeats),
            ("tcpclone_tcpcopy_fleet_worker_sessions_unmarked", "[broker] Sessions whose sent mark could not be stored (replayed anyway)", &self.unmarked),
            ("tcpclone_tcpcopy_fleet_worker_sessions_outside_window", "[broker] Sessions outside --from-time/--to-time (acknowledged, not replayed)", &self.outside_window),
            ("tcpclone_tcpcopy_fleet_worker_foreign_messages", "[broker] Messages not in tcpcopy's format (acknowledged, skipped)", &self.foreign),
            ("tcpclone_tcpcopy_fleet_worker_sessions_malformed", "[broker] Sessions whose records are out of order (acknowledged, not replayed)", &self.malformed),
            ("tcpclone_tcpcopy_fleet_worker_sessions_incomplete", "[broker] Sessions a part of which never came (given up)", &self.incomplete),
        ];
        for (name, help, a) in rows {
            s.counter(name, help, g(a));
        }
    }

    /// One line for the end of the run.
    pub fn summary(&self, url: &BrokerUrl, w: WorkerSpec) -> String {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        format!(
            "worker {}/{} of {} at {}: {} sessions received, {} replayed, {} repeats (replayed \
             before), {} redelivered, {} outside the time window, {} foreign messages skipped, \
             {} malformed, {} incomplete, {} unmarked",
            w.k,
            w.n,
            url.stream,
            url.server,
            g(&self.sessions),
            g(&self.replayed),
            g(&self.repeats),
            g(&self.redelivered),
            g(&self.outside_window),
            g(&self.foreign),
            g(&self.malformed),
            g(&self.incomplete),
            g(&self.unmarked),
        )
    }
}

/// A worker's settings (from the checked flags).
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// Where.
    pub url: BrokerUrl,
    /// Which share.
    pub worker: WorkerSpec,
    /// `--start-at`.
    pub start_at: Option<u64>,
    /// `--from-time`.
    pub from_time: Option<u64>,
    /// `--to-time`.
    pub to_time: Option<u64>,
    /// `--replay-name`.
    pub replay_name: String,
    /// `--ack-wait`.
    pub ack_wait: Duration,
    /// Whether the replay keeps the original timing (not --topspeed).
    pub timed: bool,
    /// `-x`: a session whose recorded server is a target is refused (production).
    pub mappings: Vec<crate::mapping::TargetMapping>,
    /// `--force`: such a session is replayed after a warning instead.
    pub force: bool,
}

fn wall_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// How long a worker retries the broker's requests that fail (timeouts while a JetStream
/// cluster elects new leaders) before it gives up.
const RETRY_FOR: Duration = Duration::from_secs(30);

/// Opens the stream and this worker's consumers, and settles the replay's time origin (capture
/// time `t0`) and its start (wall clock).
async fn set_up(
    js: &jetstream::Context,
    s: &WorkerSettings,
) -> anyhow::Result<(
    jetstream::stream::Stream,
    Vec<consumer::PullConsumer>,
    u64,
    u64,
)> {
    let mut st = nats::open_stream(js, &s.url).await?;
    let mut consumers = Vec::new();
    for p in s.worker.partitions(partitions_of(&mut st, &s.url).await?) {
        consumers.push(nats::partition_consumer(&st, &s.url, &s.replay_name, p, s.ack_wait).await?);
    }
    let t0 = match s.from_time {
        Some(t) => t,
        None => first_open(&mut st).await.unwrap_or(0),
    };
    let start = match (s.timed, s.start_at) {
        (false, _) => wall_ns(),
        (true, Some(at)) => at,
        (true, None) => {
            nats::agree_start(js, &st, &s.url, &s.replay_name, wall_ns() + 1_000_000_000).await?
        }
    };
    Ok((st, consumers, t0, start))
}

/// Runs a worker to the end: until its partitions hold nothing more for it and every session
/// it took is replayed and acknowledged, or `stop`.
pub fn run<D: Dispatch>(
    d: &mut D,
    s: &WorkerSettings,
    secrets: &BrokerSecrets,
    handle: &tokio::runtime::Handle,
    stop: &AtomicBool,
    counters: Arc<WorkerCounters>,
) -> anyhow::Result<Arc<WorkerCounters>> {
    let (js, st, consumers, t0, start) = handle.block_on(async {
        let client = nats::connect(&s.url, secrets, "worker").await?;
        let js = jetstream::ContextBuilder::new()
            .timeout(Duration::from_secs(10))
            .build(client);
        // The broker answered: a JetStream cluster electing leaders (a node just died) may still
        // time out for a while, so the set-up is retried for up to RETRY_FOR.
        let began = Instant::now();
        loop {
            match set_up(&js, s).await {
                Ok((st, consumers, t0, start)) => break anyhow::Ok((js, st, consumers, t0, start)),
                Err(e) if began.elapsed() < RETRY_FOR => {
                    tracing::debug!("worker set-up: {e:#}; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => return Err(e),
            }
        }
    })?;
    let now_wall = wall_ns();
    let now = Instant::now();
    let base = if start >= now_wall {
        now + Duration::from_nanos(start - now_wall)
    } else {
        now.checked_sub(Duration::from_nanos(now_wall - start))
            .unwrap_or(now)
    };
    eprintln!(
        "tcpcopy --stream: worker {}/{} replaying {} partitions of stream {} at {}{}",
        s.worker.k,
        s.worker.n,
        consumers.len(),
        s.url.stream,
        s.url.server,
        if s.timed {
            format!(
                ", capture time {} at {}",
                plan::format_time(t0),
                plan::format_time(start)
            )
        } else {
            String::new()
        }
    );
    let (ack_tx, mut ack_rx) = mpsc::unbounded_channel::<Vec<Acker>>();
    let acker = handle.spawn(async move {
        while let Some(batch) = ack_rx.recv().await {
            for a in batch {
                let _ = a.ack().await;
            }
        }
    });
    let (fin_tx, mut fin_rx) = mpsc::unbounded_channel::<u64>();
    let in_flight = Arc::new(AtomicUsize::new(0));
    let mut replaying: HashSet<u64> = HashSet::new();
    let mut asm: Assembler<Acker> = Assembler::default();
    let mut next_id: u64 = 0;
    let mut failing_since: Option<Instant> = None;
    let mut warned: BTreeSet<String> = BTreeSet::new();
    let result: anyhow::Result<()> = (|| {
        loop {
            if stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            let mut got = 0usize;
            for c in &consumers {
                let msgs = match handle.block_on(fetch(c)) {
                    Ok(m) => {
                        failing_since = None;
                        m
                    }
                    Err(e) => {
                        let since = *failing_since.get_or_insert_with(Instant::now);
                        anyhow::ensure!(since.elapsed() < RETRY_FOR, "{e:#}");
                        std::thread::sleep(Duration::from_millis(200));
                        continue;
                    }
                };
                got += msgs.len();
                for m in msgs {
                    let redelivered = m.info().map(|i| i.delivered > 1).unwrap_or(false);
                    let (msg, ack) = m.split();
                    // Another publisher's message, another version's, or a damaged one: none
                    // can be replayed.
                    let part = match wire::decode(&msg.payload) {
                        Ok(p) => p,
                        Err(_) => {
                            counters.foreign.fetch_add(1, Ordering::Relaxed);
                            let _ = ack_tx.send(vec![ack]);
                            continue;
                        }
                    };
                    let Some(sess) = asm.add(part, ack, redelivered) else {
                        continue;
                    };
                    while let Ok(id) = fin_rx.try_recv() {
                        replaying.remove(&id);
                    }
                    if replaying.contains(&sess.session) {
                        // Delivered again while this worker still replays it: the first
                        // delivery's acknowledgement covers it.
                        continue;
                    }
                    counters.sessions.fetch_add(1, Ordering::Relaxed);
                    let mark = s.url.sent_subject(&s.replay_name, sess.session);
                    // Only a redelivered session can have been replayed before.
                    let repeat = sess.redelivered
                        && handle.block_on(was_sent(&st, &mark, &mut failing_since))?;
                    if sess.redelivered {
                        counters.redelivered.fetch_add(1, Ordering::Relaxed);
                    }
                    if repeat {
                        counters.repeats.fetch_add(1, Ordering::Relaxed);
                    }
                    if !plan::well_formed(&sess.records) {
                        counters.malformed.fetch_add(1, Ordering::Relaxed);
                        let _ = ack_tx.send(sess.handles);
                        continue;
                    }
                    let (open_ts, server) = match &sess.records[0] {
                        FleetRecord::Open { ts, server, .. } => (*ts, Some(*server)),
                        _ => (0, None),
                    };
                    let inside = s.from_time.is_none_or(|f| open_ts >= f)
                        && s.to_time.is_none_or(|t| open_ts < t);
                    if !inside {
                        counters.outside_window.fetch_add(1, Ordering::Relaxed);
                        let _ = ack_tx.send(sess.handles);
                        continue;
                    }
                    // Fail closed before any byte of it is replayed; the session stays
                    // unacknowledged (redelivered to a worker with a sound -x).
                    if let Some(p) = server
                        .and_then(|a| crate::stream::guard::recorded_server_problem(&s.mappings, a))
                    {
                        anyhow::ensure!(s.force, "-x/--mapping: refused: {p} (--force overrides)");
                        if warned.insert(p.clone()) {
                            crate::stream::log_warn(&format!("warning: --force: {p}"));
                        }
                    }
                    next_id += 1;
                    let events = to_events(next_id, sess.records);
                    in_flight.fetch_add(1, Ordering::SeqCst);
                    replaying.insert(sess.session);
                    let token = DoneToken::new(Done {
                        handles: sess.handles,
                        acks: ack_tx.clone(),
                        in_flight: in_flight.clone(),
                        session: sess.session,
                        finished: fin_tx.clone(),
                        repeat,
                        mark: SentMark {
                            js: js.clone(),
                            subject: mark,
                            stored: tokio::sync::OnceCell::new(),
                            counters: counters.clone(),
                        },
                    });
                    counters.replayed.fetch_add(1, Ordering::Relaxed);
                    d.dispatch_session(events, t0, base, token);
                }
            }
            if got > 0 {
                continue;
            }
            if in_flight.load(Ordering::SeqCst) > 0 {
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
            // Nothing came and nothing is being replayed: done when the consumers have nothing
            // pending for anyone. Messages another worker holds unacknowledged come back after
            // --ack-wait; parts of sessions that never became whole are given up when nobody
            // else holds anything.
            let (pending, ack_pending) = match handle.block_on(pending_of(&consumers)) {
                Ok(p) => p,
                Err(e) => {
                    let since = *failing_since.get_or_insert_with(Instant::now);
                    anyhow::ensure!(since.elapsed() < RETRY_FOR, "{e:#}");
                    std::thread::sleep(Duration::from_millis(200));
                    continue;
                }
            };
            if pending > 0 {
                continue;
            }
            let held = asm.held() as u64;
            if ack_pending <= held {
                let waiting = asm.waiting() as u64;
                let handles = asm.take_incomplete();
                counters.incomplete.fetch_add(waiting, Ordering::Relaxed);
                if !handles.is_empty() {
                    let _ = ack_tx.send(handles);
                }
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    })();
    drop(ack_tx);
    // The pull loop ends with nothing in flight (or on a stop): every acknowledgement is queued;
    // wait for the acker to send them (on a stop, tasks still replaying hold their tokens).
    let _ = handle.block_on(async { tokio::time::timeout(Duration::from_secs(5), acker).await });
    result.map(|()| counters)
}

/// Whether the sent mark `subject` is in the stream: a worker began to replay the session
/// before. Failing requests (a cluster electing leaders) are retried for up to [`RETRY_FOR`].
async fn was_sent(
    st: &jetstream::stream::Stream,
    subject: &str,
    failing_since: &mut Option<Instant>,
) -> anyhow::Result<bool> {
    use jetstream::stream::LastRawMessageErrorKind as Kind;
    loop {
        match st.get_last_raw_message_by_subject(subject).await {
            Ok(_) => {
                *failing_since = None;
                return Ok(true);
            }
            Err(e) if matches!(e.kind(), Kind::NoMessageFound) => {
                *failing_since = None;
                return Ok(false);
            }
            Err(e) => {
                let since = *failing_since.get_or_insert_with(Instant::now);
                anyhow::ensure!(since.elapsed() < RETRY_FOR, "reading {subject}: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// One no-wait batch from a consumer (empty when it has nothing).
pub(super) async fn fetch(c: &consumer::PullConsumer) -> anyhow::Result<Vec<jetstream::Message>> {
    let mut batch = c
        .fetch()
        .max_messages(BATCH)
        .messages()
        .await
        .map_err(|e| anyhow::anyhow!("fetching from the stream: {e}"))?;
    let mut out = Vec::new();
    while let Some(m) = batch.next().await {
        match m {
            Ok(m) => out.push(m),
            Err(e) => anyhow::bail!("fetching from the stream: {e}"),
        }
    }
    Ok(out)
}

async fn pending_of(consumers: &[consumer::PullConsumer]) -> anyhow::Result<(u64, u64)> {
    let mut pending = 0;
    let mut ack_pending = 0;
    for c in consumers {
        let mut c = c.clone();
        let i = c
            .info()
            .await
            .map_err(|e| anyhow::anyhow!("consumer info: {e}"))?;
        pending += i.num_pending;
        ack_pending += i.num_ack_pending as u64;
    }
    Ok((pending, ack_pending))
}

/// How many partitions the stream was recorded with: as its description says (set when
/// `--record` created it), else the highest `STREAM.p.<n>` subject + 1, at least 64.
async fn partitions_of(st: &mut jetstream::stream::Stream, url: &BrokerUrl) -> anyhow::Result<u32> {
    if let Some(n) = st
        .cached_info()
        .config
        .description
        .as_deref()
        .and_then(|d| d.split_once("partitions="))
        .and_then(|(_, n)| n.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse::<u32>().ok())
        .filter(|n| (1..=4096).contains(n))
    {
        return Ok(n);
    }
    let prefix = format!("{}.p.", url.stream);
    let mut max = 0u32;
    let mut subjects = st
        .info_with_subjects(format!("{prefix}*"))
        .await
        .map_err(|e| anyhow::anyhow!("stream {} subjects: {e}", url.stream))?;
    while let Some(x) = subjects.next().await {
        let (subject, _) = x.map_err(|e| anyhow::anyhow!("stream {} subjects: {e}", url.stream))?;
        if let Some(n) = subject
            .strip_prefix(&prefix)
            .and_then(|n| n.parse::<u32>().ok())
        {
            max = max.max(n + 1);
        }
    }
    // Partitions with no message yet still belong to someone: round up to the default layout.
    Ok(max.max(64))
}

/// The capture time of the first recorded session in the stream (the replay's time origin).
async fn first_open(st: &mut jetstream::stream::Stream) -> Option<u64> {
    let info = st.info().await.ok()?;
    let (first, last) = (info.state.first_sequence, info.state.last_sequence);
    for seq in first..=last.min(first.saturating_add(1000)) {
        let Ok(m) = st.get_raw_message(seq).await else {
            continue;
        };
        if let Ok(p) = wire::decode(&m.payload) {
            if let Some(FleetRecord::Open { ts, .. }) = p.records.first() {
                return Some(*ts);
            }
        }
    }
    None
}

/// One recorded session as stream mode's events, under local session id `id`.
fn to_events(id: u64, records: Vec<FleetRecord>) -> Vec<StreamEvent> {
    let side = |d: Dir| match d {
        Dir::Client => Side::Client,
        Dir::Server => Side::Server,
    };
    records
        .into_iter()
        .map(|r| match r {
            FleetRecord::Open {
                client,
                server,
                ts,
                syn_seen,
                ..
            } => StreamEvent::Open {
                id,
                key: tcpclone::flow::FlowKey {
                    src: client,
                    dst: server,
                },
                ts,
                syn_seen,
            },
            FleetRecord::Data {
                dir,
                ts,
                new_message,
                server_seen,
                bytes,
            } => StreamEvent::Data {
                id,
                side: side(dir),
                ts,
                bytes,
                new_message,
                server_seen,
            },
            FleetRecord::Fin { dir, ts } => StreamEvent::Fin {
                id,
                side: side(dir),
                ts,
            },
            FleetRecord::Close {
                ts,
                reason,
                partial,
            } => StreamEvent::Close {
                id,
                ts,
                reason: match reason {
                    CloseReason::Fin => EndReason::Fin,
                    CloseReason::Reset => EndReason::Reset,
                    CloseReason::Idle => EndReason::Idle,
                    CloseReason::Hole => EndReason::Hole,
                    CloseReason::Replaced => EndReason::Replaced,
                    CloseReason::EndOfInput | CloseReason::Other(_) => EndReason::EndOfInput,
                },
                partial,
            },
        })
        .collect()
}
