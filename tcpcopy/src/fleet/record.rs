//! `--record`: the recorder that stream mode's reader hands its reassembled sessions to
//! (instead of replaying them), and the publisher task that puts them into JetStream.
//!
//! A session is encoded as it arrives ([`super::wire::SessionWriter`]) and published only
//! once it is over, whole: memory is bounded by `--queue-mb` (a session that does not fit is
//! dropped whole and counted, never cut), acknowledgements are awaited in a bounded window, and
//! a failed publish is retried with backoff under the same message ids (JetStream drops what
//! it already has). Payload bytes are never logged.

use super::nats::{self, BrokerSecrets, NewStream};
use super::plan::BrokerUrl;
use super::wire::{self, CloseReason, Dir, FleetRecord, SessionWriter};
use crate::mapping::TargetMapping;
use crate::stream::reassembly::{EndReason, SessionId, Side, StreamEvent};
use async_nats::jetstream;
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

/// Messages awaiting their acknowledgement at once.
const WINDOW: usize = 1024;
/// After the capture ends: how long the publisher may still try to deliver what is queued.
const FLUSH: Duration = Duration::from_secs(15);

/// What the recorder did (printed at the end).
#[derive(Debug, Default)]
pub struct RecordCounters {
    /// Sessions of the recorded service seen.
    pub sessions: AtomicU64,
    /// Sessions stored in the stream (every part acknowledged).
    pub published: AtomicU64,
    /// Messages stored (parts).
    pub messages: AtomicU64,
    /// Payload bytes stored.
    pub bytes: AtomicU64,
    /// Parts the broker already had (a re-send after a lost acknowledgement).
    pub duplicates: AtomicU64,
    /// Sessions dropped whole: no room in the `--queue-mb` bound (a slow or absent broker).
    pub dropped_full: AtomicU64,
    /// Sessions given up after the capture ended, the broker still not acknowledging.
    pub dropped_broker: AtomicU64,
    /// Publish attempts that failed and were retried.
    pub retries: AtomicU64,
}

impl RecordCounters {
    /// The counters as metrics (`--metrics`).
    pub fn metrics(&self, s: &mut tcpclone::metrics::Snapshot) {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let rows: [(&'static str, &'static str, &AtomicU64); 8] = [
            ("tcpclone_tcpcopy_fleet_record_sessions_seen", "[capture] Sessions of the recorded service seen", &self.sessions),
            ("tcpclone_tcpcopy_fleet_record_sessions_stored", "[broker] Sessions stored in the stream (every part acknowledged)", &self.published),
            ("tcpclone_tcpcopy_fleet_record_messages_stored", "[broker] Messages (session parts) stored", &self.messages),
            ("tcpclone_tcpcopy_fleet_record_stored_bytes", "[broker] Payload bytes stored", &self.bytes),
            ("tcpclone_tcpcopy_fleet_record_duplicate_parts", "[broker] Parts the broker already had (a re-send after a lost acknowledgement)", &self.duplicates),
            ("tcpclone_tcpcopy_fleet_record_sessions_dropped_queue_full", "[queue] Sessions dropped whole: no room within --queue-mb (a slow or absent broker)", &self.dropped_full),
            ("tcpclone_tcpcopy_fleet_record_sessions_dropped_unacknowledged", "[broker] Sessions given up at the end, the broker still not acknowledging", &self.dropped_broker),
            ("tcpclone_tcpcopy_fleet_record_publish_retries", "[broker] Publish attempts that failed and were retried", &self.retries),
        ];
        for (name, help, a) in rows {
            s.counter(name, help, g(a));
        }
    }
}

/// One finished session on its way to the broker.
struct Outgoing {
    subject: String,
    session: u64,
    msgs: Vec<Bytes>,
    _permit: OwnedSemaphorePermit,
}

struct Building {
    uid: u64,
    writer: SessionWriter,
    permit: Option<OwnedSemaphorePermit>,
    held: usize,
}

/// The recorder: lives on stream mode's reader thread.
pub struct Recorder {
    url: BrokerUrl,
    partitions: u32,
    max_payload: usize,
    host: String,
    with_responses: bool,
    live: bool,
    budget: Arc<Semaphore>,
    budget_total: usize,
    sessions: HashMap<SessionId, Building>,
    tx: Option<mpsc::UnboundedSender<Outgoing>>,
    publisher: Option<tokio::task::JoinHandle<()>>,
    deadline: Arc<Mutex<Option<Instant>>>,
    handle: tokio::runtime::Handle,
    /// The counters.
    pub counters: Arc<RecordCounters>,
}

/// The recorder's settings (from the checked flags).
#[derive(Debug, Clone)]
pub struct RecordSettings {
    /// Where.
    pub url: BrokerUrl,
    /// A new stream's settings (partitions, replicas, limits).
    pub stream: NewStream,
    /// Also record the server's data.
    pub with_responses: bool,
    /// Live capture (drop on a full queue) or a file (wait for room).
    pub live: bool,
    /// `--queue-mb` in bytes.
    pub queue_bytes: usize,
}

impl Recorder {
    /// Connects, opens (or creates) the stream and starts the publisher on `handle`'s runtime.
    pub fn start(
        s: RecordSettings,
        secrets: &BrokerSecrets,
        handle: &tokio::runtime::Handle,
    ) -> anyhow::Result<Recorder> {
        let (client, js) =
            handle.block_on(async {
                let client = nats::connect(&s.url, secrets, "recorder").await?;
                let js = jetstream::new(client.clone());
                let st = nats::ensure_stream(&js, &s.url, &s.stream).await?;
                let subjects = &st.cached_info().config.subjects;
                anyhow::ensure!(
                subjects.iter().any(|x| x == &format!("{}.p.*", s.url.stream)),
                "stream {} at {} does not take subjects {}.p.*: not a tcpclone recording stream",
                s.url.stream,
                s.url.server,
                s.url.stream
            );
                anyhow::Ok((client, js))
            })?;
        let max_payload = client.server_info().max_payload.max(wire::MIN_PAYLOAD);
        let counters = Arc::new(RecordCounters::default());
        let (tx, rx) = mpsc::unbounded_channel();
        let deadline = Arc::new(Mutex::new(None));
        let publisher = handle.spawn(publish_loop(js, rx, counters.clone(), deadline.clone()));
        eprintln!(
            "tcpcopy --stream: recording into stream {} at {} ({} partitions, messages up to {} bytes)",
            s.url.stream, s.url.server, s.stream.partitions, max_payload
        );
        Ok(Recorder {
            url: s.url,
            partitions: s.stream.partitions,
            max_payload,
            host: host_name(),
            with_responses: s.with_responses,
            live: s.live,
            budget: Arc::new(Semaphore::new(s.queue_bytes.max(1 << 20))),
            budget_total: s.queue_bytes.max(1 << 20),
            sessions: HashMap::new(),
            tx: Some(tx),
            publisher: Some(publisher),
            deadline,
            handle: handle.clone(),
            counters,
        })
    }

    /// Takes room for `n` more bytes of a session; false when there is none (the caller drops
    /// the session). From a file, waits for the publisher to free room first.
    fn reserve(&self, b: &mut Building, n: usize) -> bool {
        if n > self.budget_total {
            return false;
        }
        let n = n as u32;
        let got = match self.budget.clone().try_acquire_many_owned(n) {
            Ok(p) => Some(p),
            Err(_) if !self.live => self
                .handle
                .block_on(async {
                    tokio::time::timeout(
                        Duration::from_secs(30),
                        self.budget.clone().acquire_many_owned(n),
                    )
                    .await
                })
                .ok()
                .and_then(Result::ok),
            Err(_) => None,
        };
        let Some(p) = got else {
            return false;
        };
        match &mut b.permit {
            Some(have) => have.merge(p),
            None => b.permit = Some(p),
        }
        b.held += n as usize;
        true
    }

    /// Takes one of stream mode's events (after sampling: `mappings` and `percentage` pick the
    /// sessions as replay would).
    pub fn handle(&mut self, ev: StreamEvent, mappings: &[TargetMapping], percentage: u32) {
        match ev {
            StreamEvent::Open {
                id,
                key,
                ts,
                syn_seen,
            } => {
                if percentage < 100 && key.src_hash() % 100 >= u64::from(percentage) {
                    return;
                }
                let ours = mappings.iter().any(|m| {
                    m.online_port == key.dst.port()
                        && m.online_ip.is_none_or(|ip| ip == key.dst.ip())
                });
                if !ours || mappings.iter().any(|m| m.target == key.dst) {
                    return;
                }
                self.counters.sessions.fetch_add(1, Ordering::Relaxed);
                let uid = wire::session_id(&self.host, key.src, key.dst, ts);
                let mut b = Building {
                    uid,
                    writer: SessionWriter::new(uid, self.max_payload),
                    permit: None,
                    held: 0,
                };
                b.writer.push(&FleetRecord::Open {
                    client: key.src,
                    server: key.dst,
                    ts,
                    syn_seen,
                    host: self.host.clone(),
                });
                self.sessions.insert(id, b);
                self.account(id);
            }
            StreamEvent::Data {
                id,
                side,
                ts,
                bytes,
                new_message,
                server_seen,
            } => {
                if side == Side::Server && !self.with_responses {
                    return;
                }
                let Some(b) = self.sessions.get_mut(&id) else {
                    return;
                };
                b.writer.push(&FleetRecord::Data {
                    dir: dir(side),
                    ts,
                    new_message,
                    // Without the server's data in the recording, the replayer must not take
                    // "server seen, no answer" to mean that production did not answer.
                    server_seen: server_seen && self.with_responses,
                    bytes,
                });
                self.account(id);
            }
            StreamEvent::Fin { id, side, ts } => {
                if let Some(b) = self.sessions.get_mut(&id) {
                    b.writer.push(&FleetRecord::Fin { dir: dir(side), ts });
                }
            }
            StreamEvent::Close {
                id,
                ts,
                reason,
                partial,
            } => {
                let Some(mut b) = self.sessions.remove(&id) else {
                    return;
                };
                b.writer.push(&FleetRecord::Close {
                    ts,
                    reason: close_reason(reason),
                    partial,
                });
                let extra = b.writer.encoded_len().saturating_sub(b.held);
                if extra > 0 && !self.reserve(&mut b, extra) {
                    self.counters.dropped_full.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                let Some(permit) = b.permit.take() else {
                    return;
                };
                let p = wire::partition(b.uid, self.partitions);
                let out = Outgoing {
                    subject: self.url.subject(p),
                    session: b.uid,
                    msgs: b.writer.finish().into_iter().map(Bytes::from).collect(),
                    _permit: permit,
                };
                if let Some(tx) = &self.tx {
                    let _ = tx.send(out);
                }
            }
        }
    }

    /// Keeps the bytes a session holds within the bound; drops the session when there is no room.
    fn account(&mut self, id: SessionId) {
        let Some(mut b) = self.sessions.remove(&id) else {
            return;
        };
        let len = b.writer.encoded_len();
        if len > b.held {
            // Reserve in growing steps, not per record.
            let want = (len - b.held).max(b.held / 2).max(512);
            if !self.reserve(&mut b, want) {
                self.counters.dropped_full.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        self.sessions.insert(id, b);
    }

    /// After the capture: sessions still open are dropped (the reassembler closed every session
    /// it had, so these are none), what is queued is delivered within [`FLUSH`].
    pub fn finish(mut self) -> Arc<RecordCounters> {
        self.sessions.clear();
        self.tx = None;
        *self.deadline.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now() + FLUSH);
        if let Some(p) = self.publisher.take() {
            let _ = self.handle.block_on(p);
        }
        self.counters.clone()
    }

    /// One line saying what was recorded.
    pub fn summary(url: &BrokerUrl, c: &RecordCounters) -> String {
        format!(
            "recorded into {} at {}: {} sessions seen, {} stored ({} messages, {} bytes, {} duplicate parts), \
             {} dropped (queue full), {} dropped (broker not acknowledging), {} publish retries",
            url.stream,
            url.server,
            c.sessions.load(Ordering::Relaxed),
            c.published.load(Ordering::Relaxed),
            c.messages.load(Ordering::Relaxed),
            c.bytes.load(Ordering::Relaxed),
            c.duplicates.load(Ordering::Relaxed),
            c.dropped_full.load(Ordering::Relaxed),
            c.dropped_broker.load(Ordering::Relaxed),
            c.retries.load(Ordering::Relaxed),
        )
    }
}

fn dir(s: Side) -> Dir {
    match s {
        Side::Client => Dir::Client,
        Side::Server => Dir::Server,
    }
}

fn close_reason(r: EndReason) -> CloseReason {
    match r {
        EndReason::Fin => CloseReason::Fin,
        EndReason::Reset => CloseReason::Reset,
        EndReason::Idle => CloseReason::Idle,
        EndReason::EndOfInput => CloseReason::EndOfInput,
        EndReason::Hole => CloseReason::Hole,
        EndReason::Replaced => CloseReason::Replaced,
    }
}

/// The capturing host's name, as recorded in every session's OPEN.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

/// Publishes sessions as they come, each in its own task, at most [`WINDOW`] messages
/// unacknowledged at once.
async fn publish_loop(
    js: jetstream::Context,
    mut rx: mpsc::UnboundedReceiver<Outgoing>,
    counters: Arc<RecordCounters>,
    deadline: Arc<Mutex<Option<Instant>>>,
) {
    let window = Arc::new(Semaphore::new(WINDOW));
    let mut tasks = tokio::task::JoinSet::new();
    while let Some(out) = rx.recv().await {
        let n = out.msgs.len().clamp(1, WINDOW) as u32;
        let Ok(slot) = window.clone().acquire_many_owned(n).await else {
            break;
        };
        tasks.spawn(publish_session(
            js.clone(),
            out,
            counters.clone(),
            deadline.clone(),
            slot,
        ));
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
}

/// Publishes one session's parts in order and awaits every acknowledgement; on any failure,
/// backs off and sends them all again (same ids: the broker keeps one copy).
async fn publish_session(
    js: jetstream::Context,
    out: Outgoing,
    counters: Arc<RecordCounters>,
    deadline: Arc<Mutex<Option<Instant>>>,
    _slot: OwnedSemaphorePermit,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let mut acks = Vec::with_capacity(out.msgs.len());
        let mut failed = false;
        for (i, m) in out.msgs.iter().enumerate() {
            let publish = jetstream::message::PublishMessage::build()
                .payload(m.clone())
                .message_id(wire::message_id(out.session, i as u32));
            match js.send_publish(out.subject.clone(), publish).await {
                Ok(ack) => acks.push(ack),
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
        let mut dup = 0;
        if !failed {
            for a in acks {
                match a.await {
                    Ok(ack) => dup += u64::from(ack.duplicate),
                    Err(_) => failed = true,
                }
            }
        }
        if !failed {
            counters.published.fetch_add(1, Ordering::Relaxed);
            counters
                .messages
                .fetch_add(out.msgs.len() as u64, Ordering::Relaxed);
            counters.bytes.fetch_add(
                out.msgs.iter().map(|m| m.len() as u64).sum(),
                Ordering::Relaxed,
            );
            counters.duplicates.fetch_add(dup, Ordering::Relaxed);
            return;
        }
        let give_up = deadline
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|d| Instant::now() >= d);
        if give_up {
            counters.dropped_broker.fetch_add(1, Ordering::Relaxed);
            return;
        }
        counters.retries.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}
