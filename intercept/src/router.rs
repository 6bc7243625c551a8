//! The session registry: which tcpcopy connection owns which session, parking of responses
//! that arrive before their registration, and per-connection `Responses` batches.
//!
//! Pure code: time comes in as an argument, frames go out through [`Router::poll_transmit`].
//!
//! Rules (documented for users in docs/security.md; the frames in docs/protocol.md):
//! - A session is `(client, target)` as tcpcopy registers it; a captured response belongs to it
//!   when the response's (destination, source) equals it.
//! - A session belongs to the connection that registered it. A `SessionAdd` for it from
//!   another tcpcopy instance (the instance id of its `Hello`) is refused and counted, so a
//!   peer holding the key cannot take over another's sessions. The same instance (another of
//!   its `-C` connections, or itself reconnecting) takes it over. A `SessionRemove` from a
//!   connection that does not own the session is ignored.
//! - When a connection goes away its sessions stay reserved for its instance for
//!   [`RouterConfig::owner_grace`]; after that any peer may register them (a restarted
//!   tcpcopy is a new instance).
//! - One connection registers at most [`RouterConfig::max_sessions_per_peer`] sessions; more
//!   are refused and counted, so one peer cannot fill the table for all.
//! - A response with no owner is parked for [`RouterConfig::park_timeout`] (5 s by default,
//!   TCPCopy parks 30 s): long enough to cover the race between tcpcopy's `SessionAdd` and the
//!   target's SYN-ACK and tcpcopy's first reconnect attempts after an intercept restart, short
//!   enough that stale headers do not pile up. At most [`RouterConfig::park_max`] headers are
//!   parked in total (the oldest is dropped first) and [`RouterConfig::park_max_per_session`]
//!   per session (later ones dropped), so memory stays bounded (~20 MB at the defaults).
//! - Parked responses are delivered in capture order on registration; expired or evicted ones
//!   are counted as "dropped unknown".
//! - A session's responses still go to the connection that removed it for
//!   [`RouterConfig::removed_keep`] (at most [`RouterConfig::removed_max`] sessions remembered):
//!   tcpcopy answers a segment of a session it no longer has with a reset, as a TCP stack
//!   would. A FIN the target sends again because the clone's ACK or RST was lost would
//!   otherwise be parked and dropped, and the target's socket would stay in FIN-WAIT-1 or
//!   LAST-ACK for as long as it retries.

use crate::batch::HeaderBatch;
use bytes::Bytes;
use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tcpclone::flow::hash_socket_addr;
use tcpclone::proto::{CheckedResponse, ResponsesBuilder};
use tcpclone::shrink::Shrink;
use tcpclone::wire::TcpFlags;

/// Identifies one tcpcopy connection.
pub type PeerId = u64;

/// A session as tcpcopy registers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionKey {
    /// The client address as the target sees it.
    pub client: SocketAddr,
    /// The target address.
    pub target: SocketAddr,
}

/// Two or six packed words, looked up for every response.
impl Hash for SessionKey {
    fn hash<H: Hasher>(&self, h: &mut H) {
        hash_socket_addr(&self.client, h);
        hash_socket_addr(&self.target, h);
    }
}

/// The router's maps: foldhash rather than SipHash, since a lookup runs for every response the
/// target sends. Its seed differs per process but is not a secret key, and the keys hold client
/// addresses that production's clients chose: what colliding keys could cost is bounded by the
/// caps on sessions and parked responses (`RouterConfig`).
type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Limits and timings of the router.
#[derive(Debug, Clone)]
pub struct RouterConfig {
    /// How long an unowned response waits for its registration.
    pub park_timeout: Duration,
    /// Most parked responses in total.
    pub park_max: usize,
    /// Most parked responses per session.
    pub park_max_per_session: usize,
    /// Most registered sessions in total; more `SessionAdd`s are refused and counted.
    pub max_sessions: usize,
    /// Most sessions one connection registers; more `SessionAdd`s are refused and counted.
    pub max_sessions_per_peer: usize,
    /// How long the sessions of a departed instance stay reserved for it.
    pub owner_grace: Duration,
    /// Largest `Responses` frame built.
    pub max_frame_len: usize,
    /// How long a removed session's responses still go to the connection that removed it.
    pub removed_keep: Duration,
    /// Most removed sessions remembered for that (the oldest is forgotten first).
    pub removed_max: usize,
}

impl Default for RouterConfig {
    fn default() -> Self {
        RouterConfig {
            park_timeout: Duration::from_secs(5),
            park_max: 65_536,
            park_max_per_session: 256,
            max_sessions: 1_000_000,
            max_sessions_per_peer: 262_144,
            owner_grace: Duration::from_secs(10),
            max_frame_len: 256 * 1024,
            // The target retransmits a FIN 0.2, 0.6, 1.4, 3, 6.2, 12.6 and 25.4 s after the
            // first (its timeout doubling); one answer that gets through is enough.
            removed_keep: Duration::from_secs(30),
            removed_max: 65_536,
        }
    }
}

/// What the router counted (monotonic, except `sessions` and `parked_now`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RouterCounters {
    /// Responses handed to the router.
    pub responses: u64,
    /// Responses put in a batch for their owner (directly or after parking).
    pub routed: u64,
    /// Responses parked because no connection owned their session yet.
    pub parked: u64,
    /// Parked responses later delivered to their owner.
    pub unparked: u64,
    /// Parked responses that expired or were evicted: no owner ever appeared.
    pub dropped_unknown: u64,
    /// Responses that were not a valid IP + TCP header.
    pub malformed: u64,
    /// `SessionAdd`s refused because `max_sessions` was reached.
    pub sessions_refused: u64,
    /// `SessionAdd`s refused because another instance owns the session.
    pub sessions_owned_elsewhere: u64,
    /// `SessionAdd`s refused because the connection holds `max_sessions_per_peer` already.
    pub sessions_over_peer_cap: u64,
    /// Sessions registered now.
    pub sessions: u64,
    /// Responses parked now.
    pub parked_now: u64,
    /// Responses of sessions removed lately, routed to the connection that removed them
    /// (counted in `routed` too).
    pub routed_after_remove: u64,
}

#[derive(Debug, Default)]
struct Peer {
    /// The tcpcopy instance id its `Hello` gave.
    instance: u64,
    /// Payload bytes granted per response (`Options`); 0: `Responses` frames, headers only.
    prefix: usize,
    batch: Option<ResponsesBuilder>,
    /// Sessions it owns (`Owner::Live` entries of the router's table naming it). A count, not
    /// a set: a set cost a second table insert and remove per session, and only the rare
    /// departure of a connection needs to find its sessions (one pass over the table then).
    sessions: usize,
}

/// Who a registered session belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owner {
    /// A connected peer.
    Live(PeerId),
    /// The peer went away at `since`; the session stays reserved for its instance until the
    /// grace period ends.
    Gone { instance: u64, since: Instant },
}

/// The registry plus batches (see the module docs).
#[derive(Debug)]
pub struct Router {
    cfg: RouterConfig,
    sessions: Map<SessionKey, Owner>,
    /// Entries of `sessions` that are `Owner::Gone`.
    gone: usize,
    /// When the next sweep of expired `Owner::Gone` entries is due.
    next_sweep: Option<Instant>,
    peers: Map<PeerId, Peer>,
    parked: Map<SessionKey, VecDeque<(u64, Bytes)>>,
    park_order: VecDeque<(Instant, SessionKey, u64)>,
    parked_len: usize,
    park_seq: u64,
    ready: VecDeque<(PeerId, Bytes)>,
    counters: RouterCounters,
    /// Sessions removed lately and not registered again: the connection that removed each, and
    /// the removal's number.
    removed: Map<SessionKey, (PeerId, u64)>,
    /// The removals, oldest first: when, which session, its number (an entry whose number
    /// differs from the map's is stale: the session was registered or removed again since).
    removed_order: VecDeque<(Instant, SessionKey, u64)>,
    removed_seq: u64,
}

/// The (client, target) session a response belongs to: its (destination, source).
/// `None` unless `h` is a valid IP + TCP header (optionally followed by payload bytes).
pub fn session_of(h: &[u8]) -> Option<SessionKey> {
    CheckedResponse::new(h).ok().map(|r| key_of(&r))
}

/// [`session_of`] a response checked once for both the lookup and the batch.
fn key_of(r: &CheckedResponse<'_>) -> SessionKey {
    let (src, dst) = r.addrs();
    let tcp = r.tcp();
    SessionKey {
        client: SocketAddr::new(dst, tcp.dst_port()),
        target: SocketAddr::new(src, tcp.src_port()),
    }
}

impl Router {
    /// An empty router.
    pub fn new(cfg: RouterConfig) -> Self {
        Router {
            cfg,
            sessions: Map::default(),
            gone: 0,
            next_sweep: None,
            peers: Map::default(),
            parked: Map::default(),
            park_order: VecDeque::new(),
            parked_len: 0,
            park_seq: 0,
            ready: VecDeque::new(),
            counters: RouterCounters::default(),
            removed: Map::default(),
            removed_order: VecDeque::new(),
            removed_seq: 0,
        }
    }

    /// Current counters.
    pub fn counters(&self) -> RouterCounters {
        let mut c = self.counters;
        c.sessions = (self.sessions.len() - self.gone) as u64;
        c.parked_now = self.parked_len as u64;
        c
    }

    /// The connected peer that owns a session, if any.
    pub fn owner(&self, key: &SessionKey) -> Option<PeerId> {
        match self.sessions.get(key) {
            Some(Owner::Live(p)) => Some(*p),
            _ => None,
        }
    }

    /// A tcpcopy connection of instance `instance` (its `Hello`) finished its opening.
    pub fn add_peer(&mut self, peer: PeerId, instance: u64) {
        self.peers.entry(peer).or_default().instance = instance;
    }

    /// The connection agreed on `prefix` payload bytes per response (`Options`): its batches
    /// become `PrefixedResponses` (the batch being built goes out first, as it was).
    pub fn set_prefix(&mut self, peer: PeerId, prefix: usize) {
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        if let Some(f) = p.batch.take().and_then(|mut b| b.finish()) {
            self.ready.push_back((peer, f));
        }
        p.prefix = prefix;
    }

    /// A tcpcopy connection went away at `now`: its unsent batch is forgotten, its sessions
    /// stay reserved for its instance for the grace period.
    pub fn remove_peer(&mut self, now: Instant, peer: PeerId) {
        if let Some(p) = self.peers.remove(&peer) {
            if p.sessions > 0 {
                for o in self.sessions.values_mut() {
                    if *o == Owner::Live(peer) {
                        *o = Owner::Gone {
                            instance: p.instance,
                            since: now,
                        };
                        self.gone += 1;
                    }
                }
            }
            if self.gone > 0 && self.next_sweep.is_none() {
                self.next_sweep = Some(now + self.cfg.owner_grace);
            }
        }
        self.ready.retain(|(p, _)| *p != peer);
    }

    /// `SessionAdd` from `peer` at `now`: it owns `key` from now on unless another instance
    /// owns it (refused and counted), or the peer is at its cap; parked responses of that
    /// session go into its batch.
    pub fn session_add(&mut self, now: Instant, peer: PeerId, key: SessionKey) {
        let Some(me) = self.peers.get(&peer) else {
            return;
        };
        let (instance, mine) = (me.instance, me.sessions);
        // `entry` makes room for a key it does not find: a full table is asked first, so that
        // a refused registration cannot grow it past the cap.
        if self.sessions.len() >= self.cfg.max_sessions && !self.sessions.contains_key(&key) {
            self.counters.sessions_refused += 1;
            return;
        }
        // One hash and one probe of the big table for the look-up and the insert: a busy
        // target's clones register and release tens of thousands of sessions a second.
        match self.sessions.entry(key) {
            Entry::Occupied(mut e) => {
                let prev = *e.get();
                match prev {
                    Owner::Live(o) if o == peer => return, // a repeat: nothing changes
                    Owner::Live(o) => {
                        if self.peers.get(&o).is_some_and(|p| p.instance != instance) {
                            self.counters.sessions_owned_elsewhere += 1;
                            return;
                        }
                    }
                    Owner::Gone { instance: i, since } => {
                        if i != instance
                            && now.saturating_duration_since(since) < self.cfg.owner_grace
                        {
                            self.counters.sessions_owned_elsewhere += 1;
                            return;
                        }
                    }
                }
                if mine >= self.cfg.max_sessions_per_peer {
                    self.counters.sessions_over_peer_cap += 1;
                    return;
                }
                match prev {
                    Owner::Live(old) => {
                        if let Some(p) = self.peers.get_mut(&old) {
                            p.sessions -= 1;
                        }
                    }
                    Owner::Gone { .. } => self.gone -= 1,
                }
                e.insert(Owner::Live(peer));
            }
            Entry::Vacant(e) => {
                if mine >= self.cfg.max_sessions_per_peer {
                    self.counters.sessions_over_peer_cap += 1;
                    return;
                }
                e.insert(Owner::Live(peer));
            }
        }
        if let Some(p) = self.peers.get_mut(&peer) {
            p.sessions += 1;
        }
        // Registered again: the memory of an earlier removal must not route anything now.
        if !self.removed.is_empty() {
            self.removed.remove(&key);
        }
        if self.parked.is_empty() {
            return;
        }
        if let Some(q) = self.parked.remove(&key) {
            self.parked_len -= q.len();
            for (_, h) in q {
                self.counters.unparked += 1;
                // Checked when parked: this cannot fail.
                if let Ok(r) = CheckedResponse::new(&h) {
                    self.route(peer, &r);
                }
            }
        }
    }

    /// `SessionRemove` from `peer` at `now`: ignored unless `peer` owns `key`. The session's
    /// late responses still go to `peer` for a while (see the module docs).
    pub fn session_remove(&mut self, now: Instant, peer: PeerId, key: SessionKey) {
        // Not `entry`: it would make room for a key it does not find (a late or forged remove).
        if self.sessions.get(&key) == Some(&Owner::Live(peer)) {
            self.sessions.remove(&key);
            if let Some(p) = self.peers.get_mut(&peer) {
                p.sessions -= 1;
            }
            if self.cfg.removed_max > 0 {
                self.forget_removed(now);
                while self.removed_order.len() >= self.cfg.removed_max {
                    self.forget_oldest_removed();
                }
                self.removed_seq += 1;
                self.removed.insert(key, (peer, self.removed_seq));
                self.removed_order.push_back((now, key, self.removed_seq));
            }
        }
    }

    /// Forgets the removed sessions older than `removed_keep`.
    fn forget_removed(&mut self, now: Instant) {
        let keep = self.cfg.removed_keep;
        while self
            .removed_order
            .front()
            .is_some_and(|(t, _, _)| now.saturating_duration_since(*t) >= keep)
        {
            self.forget_oldest_removed();
        }
    }

    fn forget_oldest_removed(&mut self) {
        if let Some((_, key, seq)) = self.removed_order.pop_front() {
            if self.removed.get(&key).is_some_and(|&(_, s)| s == seq) {
                self.removed.remove(&key);
            }
        }
    }

    /// One captured response (IP + TCP header): batched for its owner, or parked. `now` must
    /// not go backwards between calls (parking expires in arrival order).
    pub fn handle_response(&mut self, now: Instant, header: Bytes) {
        let h: &[u8] = &header;
        self.handle(now, h, Some(&header));
    }

    /// The responses of one capture batch, in order: each exactly as
    /// [`handle_response`](Self::handle_response) would take it.
    pub fn handle_responses(&mut self, now: Instant, batch: &HeaderBatch) {
        for h in batch {
            self.handle(now, h, None);
        }
    }

    /// `owned`: `header` as `Bytes` when the caller has it, so parking need not copy it.
    fn handle(&mut self, now: Instant, header: &[u8], owned: Option<&Bytes>) {
        self.counters.responses += 1;
        let Ok(checked) = CheckedResponse::new(header) else {
            self.counters.malformed += 1;
            return;
        };
        let key = key_of(&checked);
        let owner = self.sessions.get(&key).copied();
        if let Some(Owner::Live(peer)) = owner {
            self.route(peer, &checked);
            return;
        }
        self.expire(now);
        // A removed session's late segment goes to the connection that removed it, unless the
        // session is reserved for a departed instance (an entry of any kind here), or the
        // segment is a SYN: that opens a new session on the same addresses, whose registration
        // may still be on its way (parked for it, as any other).
        if let Some(&(peer, _)) = self.removed.get(&key) {
            if owner.is_none()
                && !checked.tcp().flags().contains(TcpFlags::SYN)
                && self.peers.contains_key(&peer)
                && self.route(peer, &checked)
            {
                self.counters.routed_after_remove += 1;
                return;
            }
        }
        let q = self.parked.entry(key).or_default();
        if q.len() >= self.cfg.park_max_per_session {
            self.counters.dropped_unknown += 1;
            return;
        }
        if self.parked_len >= self.cfg.park_max {
            // Evict the oldest parked response to make room.
            self.pop_oldest(None);
        }
        self.park_seq += 1;
        // A header from a batch is only borrowed (the batch goes once read): parking copies it.
        let header = owned
            .cloned()
            .unwrap_or_else(|| Bytes::copy_from_slice(header));
        let q = self.parked.entry(key).or_default();
        q.push_back((self.park_seq, header));
        self.park_order.push_back((now, key, self.park_seq));
        self.parked_len += 1;
        self.counters.parked += 1;
        if self.park_order.len() > 2 * self.cfg.park_max + 1024 {
            // Drop stale order entries (released on registration) so the index stays bounded.
            let parked = &self.parked;
            self.park_order
                .retain(|(_, k, s)| parked.get(k).is_some_and(|q| q.iter().any(|(x, _)| x == s)));
        }
    }

    /// Removes the oldest live parked entry; with `before`, only if parked before that instant.
    /// Returns false when there is none (or it is not old enough).
    fn pop_oldest(&mut self, before: Option<Instant>) -> bool {
        while let Some(&(t, key, seq)) = self.park_order.front() {
            if before.is_some_and(|b| t > b) {
                return false;
            }
            self.park_order.pop_front();
            let Some(q) = self.parked.get_mut(&key) else {
                continue;
            };
            if q.front().map(|(s, _)| *s) != Some(seq) {
                continue; // stale: already delivered
            }
            q.pop_front();
            if q.is_empty() {
                self.parked.remove(&key);
            }
            self.parked_len -= 1;
            self.counters.dropped_unknown += 1;
            return true;
        }
        false
    }

    /// Drops parked responses older than the park timeout, and the reservations of departed
    /// instances older than the grace period.
    pub fn expire(&mut self, now: Instant) {
        if let Some(limit) = now.checked_sub(self.cfg.park_timeout) {
            while self.pop_oldest(Some(limit)) {}
        }
        self.forget_removed(now);
        if self.next_sweep.is_some_and(|t| t <= now) {
            // One pass over the table per grace period at most, and only while some
            // reservation is held.
            let grace = self.cfg.owner_grace;
            let mut oldest_kept: Option<Instant> = None;
            let mut kept = 0;
            self.sessions.retain(|_, o| match *o {
                Owner::Gone { since, .. } if now.saturating_duration_since(since) >= grace => false,
                Owner::Gone { since, .. } => {
                    oldest_kept = Some(oldest_kept.map_or(since, |t| t.min(since)));
                    kept += 1;
                    true
                }
                Owner::Live(_) => true,
            });
            self.gone = kept;
            self.next_sweep = oldest_kept.map(|t| t + grace);
        }
    }

    /// When [`expire`](Self::expire) next has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let park = self
            .park_order
            .front()
            .map(|(t, _, _)| *t + self.cfg.park_timeout);
        match (park, self.next_sweep) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Puts `h` in `peer`'s batch; false when it could not (no such peer, or a header too
    /// large for a frame).
    fn route(&mut self, peer: PeerId, h: &CheckedResponse<'_>) -> bool {
        let Some(p) = self.peers.get_mut(&peer) else {
            return false;
        };
        let max = self.cfg.max_frame_len;
        let prefix = p.prefix;
        let b = p.batch.get_or_insert_with(|| {
            if prefix > 0 {
                ResponsesBuilder::with_prefix(max, prefix)
            } else {
                ResponsesBuilder::with_max_frame_len(max)
            }
        });
        if !b.push_checked(h) {
            // Full: send it and start the next.
            if let Some(f) = b.finish() {
                self.ready.push_back((peer, f));
            }
            if !b.push_checked(h) {
                return false;
            }
        }
        self.counters.routed += 1;
        true
    }

    /// Closes every non-empty batch (call when the input queue is drained).
    pub fn flush(&mut self) {
        for (&id, p) in self.peers.iter_mut() {
            if let Some(f) = p.batch.as_mut().and_then(|b| b.finish()) {
                self.ready.push_back((id, f));
            }
        }
    }

    /// Gives back the memory a past peak left behind: maps and queues whose capacity is far
    /// above what they hold now (a map sized for a peak of sessions otherwise stays resident,
    /// e.g. 2.4 MB for 16,384 sessions). Call it every few seconds; it does nothing when
    /// nothing is oversized.
    pub fn shrink(&mut self) {
        self.sessions.shrink_if_oversized();
        self.parked.shrink_if_oversized();
        self.park_order.shrink_if_oversized();
        self.removed.shrink_if_oversized();
        self.removed_order.shrink_if_oversized();
        self.ready.shrink_if_oversized();
    }

    /// The next finished `Responses` frame and the connection it is for.
    pub fn poll_transmit(&mut self) -> Option<(PeerId, Bytes)> {
        self.ready.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use tcpclone::proto::{FrameDecoder, Message};

    fn hdr(client_port: u16, seq: u32) -> Bytes {
        let mut h = vec![
            0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0, 198, 18, 0, 2, 198, 18, 0, 1, //
            0x18, 0xeb, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0x50, 0x10, 0xff, 0xff, 0, 0, 0, 0,
        ];
        h[22..24].copy_from_slice(&client_port.to_be_bytes());
        h[24..28].copy_from_slice(&seq.to_be_bytes());
        Bytes::from(h)
    }

    fn key(client_port: u16) -> SessionKey {
        SessionKey {
            client: SocketAddr::new([198, 18, 0, 1].into(), client_port),
            target: "198.18.0.2:6379".parse().unwrap(),
        }
    }

    /// All frames ready, decoded: (peer, seqs of the headers).
    fn drain(r: &mut Router) -> Vec<(PeerId, Vec<u32>)> {
        r.flush();
        let mut v = Vec::new();
        while let Some((p, f)) = r.poll_transmit() {
            let mut b = BytesMut::from(&f[..]);
            let Some(Message::Responses { headers }) = FrameDecoder::new().decode(&mut b).unwrap()
            else {
                panic!()
            };
            v.push((
                p,
                headers
                    .iter()
                    .map(|h| u32::from_be_bytes([h[24], h[25], h[26], h[27]]))
                    .collect(),
            ));
        }
        v
    }

    #[test]
    fn shrink_gives_back_a_past_peak_and_keeps_what_is_live() {
        let t = Instant::now();
        let mut r = Router::new(RouterConfig::default());
        r.add_peer(1, 1);
        for p in 1000..21_000 {
            r.session_add(t, 1, key(p));
        }
        for p in 1000..20_999 {
            r.session_remove(t, 1, key(p));
        }
        let peak = r.sessions.capacity();
        assert!(peak >= 20_000, "{peak}");
        r.shrink();
        assert!(
            r.sessions.capacity() <= tcpclone::shrink::SHRINK_SLACK + 2,
            "capacity after shrink: {}",
            r.sessions.capacity(),
        );
        // The session still registered is routed as before.
        r.handle_response(t, hdr(20_999, 7));
        assert_eq!(drain(&mut r), vec![(1, vec![7])]);
        // Nothing oversized: nothing changes.
        let cap = r.sessions.capacity();
        r.shrink();
        assert_eq!(r.sessions.capacity(), cap);
    }

    #[test]
    fn routes_to_owner_and_same_instance_takes_over() {
        let t = Instant::now();
        let mut r = Router::new(RouterConfig::default());
        // Connections 1 and 3 are one tcpcopy instance (7, with -C 2); connection 2 another (8).
        r.add_peer(1, 7);
        r.add_peer(2, 8);
        r.add_peer(3, 7);
        r.session_add(t, 1, key(1000));
        r.session_add(t, 2, key(2000));
        assert_eq!(session_of(&hdr(1000, 0)), Some(key(1000)));
        r.handle_response(t, hdr(1000, 1));
        r.handle_response(t, hdr(2000, 2));
        r.handle_response(t, hdr(1000, 3));
        let mut got = drain(&mut r);
        got.sort();
        assert_eq!(got, vec![(1, vec![1, 3]), (2, vec![2])]);
        // The same instance's other connection takes session 1000; a late remove from the
        // old connection is ignored.
        r.session_add(t, 3, key(1000));
        r.session_remove(t, 1, key(1000));
        r.handle_response(t, hdr(1000, 4));
        assert_eq!(drain(&mut r), vec![(3, vec![4])]);
        r.session_remove(t, 3, key(1000));
        assert_eq!(r.owner(&key(1000)), None);
        assert_eq!(r.counters().routed, 4);
        assert_eq!(r.counters().sessions_owned_elsewhere, 0);
    }

    #[test]
    fn another_instance_cannot_take_a_live_session() {
        let t = Instant::now();
        let mut r = Router::new(RouterConfig::default());
        r.add_peer(1, 7);
        r.add_peer(2, 8);
        r.session_add(t, 1, key(1000));
        // The thief registers the victim's session, then asks to drop it.
        r.session_add(t, 2, key(1000));
        r.session_remove(t, 2, key(1000));
        assert_eq!(r.owner(&key(1000)), Some(1));
        assert_eq!(r.counters().sessions_owned_elsewhere, 1);
        r.handle_response(t, hdr(1000, 5));
        assert_eq!(
            drain(&mut r),
            vec![(1, vec![5])],
            "the owner keeps delivering"
        );
        // Parked responses go to the registrant whose add is accepted, not to a refused one.
        r.handle_response(t, hdr(3000, 6));
        r.session_add(t, 1, key(3000));
        r.session_add(t, 2, key(3000));
        assert_eq!(drain(&mut r), vec![(1, vec![6])]);
        assert_eq!(r.counters().sessions_owned_elsewhere, 2);
    }

    #[test]
    fn a_departed_owner_keeps_its_sessions_for_the_grace_period() {
        let t = Instant::now();
        let grace = Duration::from_secs(10);
        let mut r = Router::new(RouterConfig {
            owner_grace: grace,
            ..Default::default()
        });
        r.add_peer(1, 7);
        r.add_peer(2, 8);
        r.session_add(t, 1, key(1000));
        r.session_add(t, 1, key(1001));
        r.remove_peer(t, 1);
        assert_eq!(r.owner(&key(1000)), None);
        assert_eq!(
            r.counters().sessions,
            0,
            "reservations are not live sessions"
        );
        // Another instance within the grace period: refused.
        let t1 = t + grace - Duration::from_millis(1);
        r.session_add(t1, 2, key(1000));
        assert_eq!(r.owner(&key(1000)), None);
        assert_eq!(r.counters().sessions_owned_elsewhere, 1);
        // The same instance reconnecting: at once.
        r.add_peer(3, 7);
        r.session_add(t1, 3, key(1001));
        assert_eq!(r.owner(&key(1001)), Some(3));
        // After the grace period anyone; the sweep then forgets the rest.
        assert_eq!(r.poll_timeout(), Some(t + grace));
        r.session_add(t + grace, 2, key(1000));
        assert_eq!(r.owner(&key(1000)), Some(2));
        r.remove_peer(t + grace, 2);
        r.expire(t + grace);
        assert_eq!(r.poll_timeout(), Some(t + 2 * grace));
        r.expire(t + 2 * grace);
        assert!(r.sessions.len() == 1 && r.gone == 0, "{:?}", r.sessions);
        assert_eq!(r.poll_timeout(), None);
    }

    #[test]
    fn one_peer_registers_at_most_its_cap() {
        let t = Instant::now();
        let mut r = Router::new(RouterConfig {
            max_sessions_per_peer: 100,
            ..Default::default()
        });
        r.add_peer(1, 7);
        r.add_peer(2, 8);
        for p in 0..1000 {
            r.session_add(t, 1, key(10_000 + p));
        }
        let c = r.counters();
        assert_eq!((c.sessions, c.sessions_over_peer_cap), (100, 900));
        // Another peer still registers; a removal makes room again.
        r.session_add(t, 2, key(1));
        r.session_remove(t, 1, key(10_000));
        r.session_add(t, 1, key(20_000));
        assert_eq!(r.owner(&key(1)), Some(2));
        assert_eq!(r.owner(&key(20_000)), Some(1));
        assert_eq!(r.counters().sessions, 101);
    }

    #[test]
    fn a_take_over_moves_the_count_and_a_departure_reserves_only_what_the_peer_owns() {
        let t = Instant::now();
        let mut r = Router::new(RouterConfig {
            max_sessions_per_peer: 2,
            ..Default::default()
        });
        // Connections 1 and 2 are one instance (7).
        r.add_peer(1, 7);
        r.add_peer(2, 7);
        r.session_add(t, 1, key(1000));
        r.session_add(t, 1, key(1001));
        r.session_add(t, 1, key(1002));
        assert_eq!(r.counters().sessions_over_peer_cap, 1);
        // Connection 2 takes 1001 over: connection 1 has room for one more, 2 for one.
        r.session_add(t, 2, key(1001));
        r.session_add(t, 1, key(1002));
        r.session_add(t, 2, key(1003));
        r.session_add(t, 2, key(1004));
        let c = r.counters();
        assert_eq!((c.sessions, c.sessions_over_peer_cap), (4, 2));
        assert_eq!(r.owner(&key(1002)), Some(1));
        // Connection 1 leaves: its two sessions are reserved, connection 2's stay live.
        r.remove_peer(t, 1);
        assert_eq!(r.counters().sessions, 2);
        assert_eq!((r.owner(&key(1000)), r.owner(&key(1002))), (None, None));
        assert_eq!(
            (r.owner(&key(1001)), r.owner(&key(1003))),
            (Some(2), Some(2))
        );
        assert_eq!(r.gone, 2);
        // A repeat and a removal by the owner keep its count right: room for one again.
        r.session_add(t, 2, key(1001));
        r.session_remove(t, 2, key(1003));
        r.session_add(t, 2, key(1005));
        assert_eq!(r.owner(&key(1005)), Some(2));
        r.session_add(t, 2, key(1006));
        assert_eq!(r.counters().sessions_over_peer_cap, 3);
    }

    #[test]
    fn a_removed_sessions_late_responses_go_to_its_last_owner_for_a_while() {
        let t = Instant::now();
        let mut r = Router::new(RouterConfig {
            removed_keep: Duration::from_secs(30),
            removed_max: 2,
            ..Default::default()
        });
        r.add_peer(1, 7);
        r.add_peer(2, 8);
        for p in [1000, 1001, 1002] {
            r.session_add(t, 1, key(p));
        }
        r.session_remove(t, 1, key(1000));
        r.session_remove(t, 1, key(1001));
        assert_eq!(r.owner(&key(1000)), None);
        // A FIN the target sends again 3 s later reaches the connection that removed it.
        let t3 = t + Duration::from_secs(3);
        r.handle_response(t3, hdr(1000, 1));
        assert_eq!(drain(&mut r), vec![(1, vec![1])]);
        assert_eq!(r.counters().routed_after_remove, 1);
        // Not a SYN: that opens a new session on the same addresses, which waits (parked) for
        // its own registration.
        let mut syn = hdr(1000, 9).to_vec();
        syn[33] = 0x12;
        r.handle_response(t3, Bytes::from(syn));
        assert!(drain(&mut r).is_empty());
        // At most `removed_max` are remembered, the oldest forgotten first.
        r.session_remove(t3, 1, key(1002));
        r.handle_response(t3, hdr(1000, 2));
        r.handle_response(t3, hdr(1002, 3));
        assert_eq!(drain(&mut r), vec![(1, vec![3])]);
        assert_eq!(r.counters().parked_now, 2);
        // A new registration of the key goes before the memory of the old one, even by
        // another instance.
        r.session_add(t3, 2, key(1001));
        r.handle_response(t3, hdr(1001, 4));
        assert_eq!(drain(&mut r), vec![(2, vec![4])]);
        // ...and replaces it: once that owner goes, the session is reserved for its instance
        // and nothing goes to the connection that removed it before.
        r.remove_peer(t3, 2);
        r.handle_response(t3, hdr(1001, 7));
        assert!(drain(&mut r).is_empty());
        // After `removed_keep`, a response is parked like any other without an owner.
        let t34 = t + Duration::from_secs(34);
        r.handle_response(t34, hdr(1002, 5));
        assert!(drain(&mut r).is_empty());
        // So is one whose connection went away.
        r.session_add(t34, 1, key(2000));
        r.session_remove(t34, 1, key(2000));
        r.remove_peer(t34, 1);
        r.handle_response(t34, hdr(2000, 6));
        assert!(drain(&mut r).is_empty());
        assert_eq!(r.counters().routed_after_remove, 2);
        assert_eq!(r.counters().parked_now, 2);
        // A session removed, registered and removed again within one instant: forgetting the
        // first removal keeps the second.
        let mut r = Router::new(RouterConfig {
            removed_max: 2,
            ..Default::default()
        });
        r.add_peer(1, 7);
        r.session_add(t, 1, key(5000));
        r.session_remove(t, 1, key(5000));
        r.session_add(t, 1, key(5000));
        r.session_remove(t, 1, key(5000));
        r.session_add(t, 1, key(5001));
        r.session_remove(t, 1, key(5001));
        r.handle_response(t, hdr(5000, 8));
        assert_eq!(drain(&mut r), vec![(1, vec![8])]);
    }

    #[test]
    fn parks_until_registered_then_expires() {
        let t = Instant::now();
        let mut r = Router::new(RouterConfig::default());
        r.add_peer(1, 1);
        r.handle_response(t, hdr(1000, 1));
        r.handle_response(t + Duration::from_millis(10), hdr(1000, 2));
        r.handle_response(t + Duration::from_millis(20), hdr(3000, 9));
        assert!(drain(&mut r).is_empty());
        assert_eq!(r.counters().parked_now, 3);
        r.session_add(t, 1, key(1000));
        assert_eq!(drain(&mut r), vec![(1, vec![1, 2])]);
        assert_eq!(r.poll_timeout(), Some(t + Duration::from_secs(5)));
        r.expire(t + Duration::from_millis(5019));
        assert_eq!(r.counters().dropped_unknown, 0);
        r.expire(t + Duration::from_millis(5020));
        let c = r.counters();
        assert_eq!(
            (c.parked, c.unparked, c.dropped_unknown, c.parked_now),
            (3, 2, 1, 0)
        );
        assert_eq!(r.poll_timeout(), None);
        r.session_add(t, 1, key(3000));
        assert!(drain(&mut r).is_empty());
    }

    #[test]
    fn parking_is_bounded() {
        let t = Instant::now();
        let cfg = RouterConfig {
            park_max: 100,
            park_max_per_session: 10,
            // Removed sessions forgotten at once: each round below parks again.
            removed_max: 0,
            ..Default::default()
        };
        let mut r = Router::new(cfg);
        for port in 1..=50u16 {
            for s in 0..20 {
                r.handle_response(t, hdr(port, s));
            }
        }
        let c = r.counters();
        assert_eq!(c.parked_now, 100);
        assert_eq!(c.responses, 1000);
        assert_eq!(c.parked + 500, 1000); // 10 per session accepted
        assert_eq!(c.dropped_unknown, 500 + 400);
        // Register and release parks many times: the order index stays bounded.
        r.add_peer(1, 1);
        for round in 0..5000u32 {
            let port = 60_000 + (round % 100) as u16;
            r.handle_response(t, hdr(port, round));
            r.session_add(t, 1, key(port));
            r.session_remove(t, 1, key(port));
        }
        assert!(r.park_order.len() <= 2 * 100 + 1024 + 1);
        assert_eq!(r.counters().unparked, 5000);
    }

    #[test]
    fn ipv6_session_key() {
        let mut h = vec![0x60, 0, 0, 0, 0, 20, 6, 64];
        h.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        h.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        h.extend_from_slice(&[
            0, 80, 0x9c, 0x40, 0, 0, 0, 1, 0, 0, 0, 2, 0x50, 0x12, 0xff, 0xff, 0, 0, 0, 0,
        ]);
        let k = session_of(&h).unwrap();
        assert_eq!(k.client, "[2001:db8::1]:40000".parse().unwrap());
        assert_eq!(k.target, "[2001:db8::2]:80".parse().unwrap());
        let t = Instant::now();
        let mut r = Router::new(RouterConfig::default());
        r.add_peer(5, 5);
        r.session_add(t, 5, k);
        r.handle_response(Instant::now(), Bytes::from(h));
        r.flush();
        assert_eq!(r.poll_transmit().map(|(p, _)| p), Some(5));
    }

    #[test]
    fn a_batch_routes_and_parks_like_its_headers_one_by_one() {
        let t = Instant::now();
        let feed = [
            hdr(1000, 1),
            hdr(3000, 2),
            Bytes::from_static(b"garbage"),
            hdr(1000, 3),
            hdr(3000, 4),
        ];
        let run = |batched: bool| {
            let mut r = Router::new(RouterConfig::default());
            r.add_peer(1, 1);
            r.session_add(t, 1, key(1000));
            if batched {
                let mut b = HeaderBatch::with_capacity(0);
                for h in &feed {
                    b.push(h);
                }
                r.handle_responses(t, &b);
            } else {
                for h in &feed {
                    r.handle_response(t, h.clone());
                }
            }
            let before = drain(&mut r);
            r.session_add(t, 1, key(3000));
            (before, drain(&mut r), r.counters())
        };
        let (before, after, c) = run(true);
        assert_eq!(before, vec![(1, vec![1, 3])]);
        assert_eq!(after, vec![(1, vec![2, 4])], "parked in capture order");
        assert_eq!(
            (c.responses, c.malformed, c.parked, c.unparked),
            (5, 1, 2, 2)
        );
        assert_eq!(run(false), (before, after, c));
    }

    #[test]
    fn malformed_headers_counted() {
        let mut r = Router::new(RouterConfig::default());
        r.handle_response(Instant::now(), Bytes::from_static(b"garbage"));
        assert_eq!(r.counters().malformed, 1);
    }

    #[test]
    fn full_batches_split() {
        let t = Instant::now();
        let cfg = RouterConfig {
            max_frame_len: 1000,
            ..Default::default()
        };
        let mut r = Router::new(cfg);
        r.add_peer(1, 1);
        r.session_add(t, 1, key(1000));
        for s in 0..100 {
            r.handle_response(t, hdr(1000, s));
        }
        let got = drain(&mut r);
        assert!(got.len() > 1);
        let all: Vec<u32> = got.into_iter().flat_map(|(_, v)| v).collect();
        assert_eq!(all, (0..100).collect::<Vec<_>>());
    }
}
