//! The reader thread: packets from the capture (or a recording) through decode, reassembly and
//! the TLS stage; each session opened is sampled, mapped to its target and given one task per
//! copy, and its events are dispatched into the tasks' inboxes within the `--queue-mb` budget.
//! Never touches a target connection; its counts are published for `--metrics`.

use super::inbox::{Inbox, InboxTx, Item};
use super::{find_target, ActiveGuard, Ctx, Plan, LOOKAHEAD};
use crate::stream::decode::decode;
use crate::stream::reassembly::{Reassembler, ReassemblyConfig, SessionId, Side, StreamEvent};
use crate::stream::tls::{KeyLogFollower, TlsFilter};
use crate::stream::StreamCommon;
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tcpclone::capture::PacketSource;
use tcpclone::decode::Protocol;
use tokio::sync::Semaphore;

/// The reader's session counts as `--metrics` reads them (the reader keeps its own and stores
/// them here; the summary takes the reader's at the end).
#[derive(Default)]
pub(super) struct ReaderCounts {
    pub(super) seen: AtomicU64,
    pub(super) without_syn: AtomicU64,
    pub(super) partial: AtomicU64,
    pub(super) sampled_out: AtomicU64,
    pub(super) replayed: AtomicU64,
    /// `--tls-keylog`: the decryption counts, copied when sessions come and at the end.
    pub(super) tls: Mutex<Option<crate::report::TlsCounts>>,
}

/// Where one captured session goes: the inboxes of its copies.
pub(super) struct Route {
    txs: Vec<InboxTx>,
    /// Production's responses go to the sessions (compared, or decoded for the report).
    keep_server: bool,
}

pub(super) struct Reader<'a> {
    pub(super) ctx: Arc<Ctx>,
    pub(super) handle: tokio::runtime::Handle,
    pub(super) common: &'a StreamCommon,
    pub(super) budget: Arc<Semaphore>,
    pub(super) budget_total: usize,
    pub(super) live: bool,
    pub(super) routes: HashMap<SessionId, Route>,
    pub(super) seen: u64,
    pub(super) without_syn: u64,
    pub(super) partial: u64,
    pub(super) sampled_out: u64,
    pub(super) replayed: u64,
    /// `--tls-keylog`: the decryption stage between reassembly and replay.
    pub(super) tls: Option<TlsFilter>,
    /// The sum of the TLS counts when they were last published for `--metrics`.
    pub(super) tls_published_at: std::cell::Cell<u64>,
    /// Live `--tls-keylog`: reads the key log's new lines.
    pub(super) follower: Option<KeyLogFollower>,
    /// When the key log was last read (wall time: it is a file, not the capture).
    pub(super) followed_at: Instant,
    /// Capture time of the last retry of the sessions waiting for secrets.
    pub(super) polled_ts: u64,
    /// `--record`: sessions go to JetStream instead of being replayed.
    pub(super) recorder: Option<crate::fleet::record::Recorder>,
    /// `--from`: the token of the session being dispatched, for its plans.
    pub(super) done_token: Option<crate::fleet::from::DoneToken>,
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
    fn publish(&self, pending: Option<&crate::stream::reassembly::ReassemblyStats>) {
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
    pub(super) fn pump<S: PacketSource>(
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
            // Sessions given up or opened by the key log's wait move the TLS counts too.
            dispatched |= self.follow_keys(ts, false, first, base, orig_base);
            // The counts move with sessions, not packets: published when an event came or the
            // sessions waiting for their secrets were retried.
            if dispatched {
                self.publish(Some(&r.stats()));
            }
            if stop.load(Ordering::Relaxed) {
                break;
            }
        }
        r.finish(last);
        while let Some(ev) = r.poll_event() {
            self.dispatch(ev, t0.unwrap_or(0), base, orig_base);
        }
        let _ = self.follow_keys(last, true, t0.unwrap_or(0), base, orig_base);
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
    /// the wait bound); `end`: last chance for every waiting session. Returns whether they
    /// were retried (their counts may have moved).
    fn follow_keys(
        &mut self,
        ts: u64,
        end: bool,
        t0: u64,
        base: Instant,
        orig_base: Duration,
    ) -> bool {
        let (Some(f), Some(filter)) = (self.follower.as_mut(), self.tls.as_mut()) else {
            return false;
        };
        let mut fresh = 0;
        if end || self.followed_at.elapsed() >= Duration::from_millis(50) {
            self.followed_at = Instant::now();
            fresh = f.read_new(filter.keys_mut());
        }
        if !end && fresh == 0 && ts.saturating_sub(self.polled_ts) < 100_000_000 {
            return false;
        }
        self.polled_ts = ts;
        let mut evs = Vec::new();
        filter.poll(ts, end, &mut evs);
        for ev in evs {
            self.dispatch_plain(ev, t0, base, orig_base);
        }
        true
    }

    /// Starts the task of one session copy; returns its inbox.
    fn spawn(&self, plan: Plan) -> InboxTx {
        let (tx, rx) = Inbox::new();
        self.ctx.active.fetch_add(1, Ordering::SeqCst);
        let guard = ActiveGuard(self.ctx.clone());
        self.handle
            .spawn(super::task::run(self.ctx.clone(), plan, rx, guard));
        tx
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
                let done = &self.done_token;
                let plan = |id, target, tls, baseline| Plan {
                    id,
                    key,
                    target,
                    open_ts: ts,
                    t0,
                    base,
                    orig_base,
                    tls,
                    protocol,
                    baseline,
                    done: done.clone(),
                };
                let copies = u64::from(self.common.copies);
                let mut plans: Vec<Plan> = (0..copies)
                    .map(|copy| plan(id * copies + copy, target, tls.clone(), false))
                    .collect();
                self.replayed += copies;
                if let Some(b) = self.ctx.verdict.baseline {
                    // One more copy, to the baseline; not counted as replayed.
                    let tls = self
                        .ctx
                        .target_tls
                        .as_ref()
                        .map(|t| t.for_session(captured.as_ref(), b));
                    plans.push(plan(id | 1 << 63, b, tls, true));
                }
                let txs = plans.into_iter().map(|p| self.spawn(p)).collect();
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
                        permit: p,
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
