//! The session engine: sans-IO TCP session cloning.
//!
//! Captured client segments and intercept's reports of the target's responses come in with the
//! time as an argument; segments to send to the target come out of `poll_transmit`. No sockets,
//! no clocks, no files here (STYLE.md rules 1–2): `now` is always the caller's.
//!
//! One [`Engine`] holds every cloned session of a tcpcopy worker, keyed by the captured 4-tuple
//! (client, service) and, for the target's responses, by the 4-tuple the target sees
//! (client after `-c`/`-n`, target).

mod config;
mod fuzz;
mod packet;
mod session;
pub mod shared;
mod stats;
#[cfg(test)]
pub(crate) mod tests;

pub use config::{EngineConfig, DEFAULT_MAX_LAG};
pub use fuzz::fuzz_engine;
pub use packet::checksums_ok;
pub use stats::{EngineStats, LATENCY_BUCKETS};

use crate::conversation::SparePool;
use packet::{parse, OutSegment, Path, RawSegment, TcpOpts, ACK, FIN, RST, SYN};
pub use session::report::ProductionAnswer;
use session::{EngineSession, SessionCtx};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;
use tcpclone::flow::{hash_socket_addr, FlowKey};
use tcpclone::seq::SeqNumber;
use tcpclone::shrink::Shrink;
use tcpclone::sys::ring::{HeldBytes, HoldBytes};

/// A packet ready for the sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit {
    /// Bytes written into the caller's buffer (a whole IPv4/IPv6 packet; checksums complete
    /// unless `gso_size` is set).
    pub len: usize,
    /// Destination address (for `sendto` on the raw socket).
    pub dst: IpAddr,
    /// Set for a super-segment (see [`EngineConfig::gso_max`]): the MSS to cut its payload
    /// into. Its TCP checksum field then holds only the pseudo-header sum, for the kernel to
    /// finish (`tcpclone::wire::gso`).
    pub gso_size: Option<u16>,
    /// From [`Engine::poll_transmit_by_ref`]: the super-segment's payload, not written after
    /// the `len` header bytes; [`Engine::payload`] gives it.
    pub payload: Option<PayloadRef>,
}

/// Where a super-segment's payload lies in its session's client stream (see
/// [`Engine::poll_transmit_by_ref`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PayloadRef {
    id: u32,
    gen: u32,
    seq: SeqNumber,
    len: u32,
}

impl PayloadRef {
    /// Payload bytes.
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// Whether there are none (never, for a super-segment).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Things the glue must act on besides sending packets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineEvent {
    /// Register this session with intercept (`proto::Message::SessionAdd`).
    SessionAdded {
        /// Client address as the target sees it.
        client: SocketAddr,
        /// Target address.
        target: SocketAddr,
    },
    /// Unregister it (`proto::Message::SessionRemove`).
    SessionRemoved {
        /// Client address as the target sees it.
        client: SocketAddr,
        /// Target address.
        target: SocketAddr,
    },
    /// A request went out and the target's first answer was reported (only with
    /// [`EngineConfig::request_timing_events`]).
    RequestTiming {
        /// Client address as the target sees it.
        client: SocketAddr,
        /// Target address.
        target: SocketAddr,
        /// When the request's first byte was sent.
        sent: Instant,
        /// When the target's first answer was reported.
        answered: Instant,
        /// The first bytes of the request (the segment that carried its start, at most
        /// [`REQUEST_PREVIEW`] bytes), for the report's endpoint.
        request: Vec<u8>,
        /// The first bytes of the answer as intercept reported them (`--response-prefix`;
        /// empty without), for the report's response class.
        answer: Vec<u8>,
        /// Production's answer to the same request, when the capture holds it (both
        /// directions captured).
        production: Option<ProductionAnswer>,
    },
    /// A request went out and its session ended before the target answered it (only with
    /// [`EngineConfig::request_timing_events`]).
    RequestUnanswered {
        /// Client address as the target sees it.
        client: SocketAddr,
        /// Target address.
        target: SocketAddr,
        /// When the request's first byte was sent.
        sent: Instant,
        /// The first bytes of the request, as in [`EngineEvent::RequestTiming`].
        request: Vec<u8>,
        /// Why no answer came.
        why: Unanswered,
    },
}

/// Why a request got no answer: how its session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unanswered {
    /// The target reset the connection.
    Reset,
    /// The target stopped acknowledging, or the session timed out.
    TimedOut,
    /// The target closed the connection without answering.
    Closed,
    /// The capture ended the session first (the client reset it, reused its port, or
    /// captured bytes were lost): not the target's doing.
    Cut,
}

/// Most request bytes kept per timed request for the report (an HTTP request head, a Redis
/// command and its key).
pub const REQUEST_PREVIEW: usize = 1024;

/// FxHash-style hasher: the maps are keyed by addresses we saw, not by attacker-chosen strings
/// worth SipHash, and this is the per-packet hot path.
#[derive(Default)]
struct FastHasher(u64);

impl Hasher for FastHasher {
    fn finish(&self) -> u64 {
        // The multiply-xor rounds leave the low bits (hashbrown's bucket index) depending on the
        // low input bits only; fold the full 128-bit product so every input bit reaches them.
        let m = u128::from(self.0) * 0x9e37_79b9_7f4a_7c15;
        (m as u64) ^ ((m >> 64) as u64)
    }
    fn write(&mut self, bytes: &[u8]) {
        for c in bytes.chunks(8) {
            let mut w = [0u8; 8];
            w[..c.len()].copy_from_slice(c);
            self.write_u64(u64::from_le_bytes(w));
        }
    }
    fn write_u8(&mut self, i: u8) {
        self.write_u64(u64::from(i));
    }
    fn write_u16(&mut self, i: u16) {
        self.write_u64(u64::from(i));
    }
    fn write_u32(&mut self, i: u32) {
        self.write_u64(u64::from(i));
    }
    fn write_u64(&mut self, i: u64) {
        self.0 = (self.0.rotate_left(5) ^ i).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn write_usize(&mut self, i: usize) {
        self.write_u64(i as u64);
    }
}

type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FastHasher>>;

/// A map key of two socket addresses (a captured flow, or client and target), hashed as two or
/// six packed words ([`hash_socket_addr`]) instead of field by field, on every packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct AddrPair(SocketAddr, SocketAddr);

impl AddrPair {
    fn of_flow(k: &FlowKey) -> Self {
        AddrPair(k.src, k.dst)
    }
}

impl Hash for AddrPair {
    fn hash<H: Hasher>(&self, h: &mut H) {
        hash_socket_addr(&self.0, h);
        hash_socket_addr(&self.1, h);
    }
}

/// The clones of one captured connection (one per `-n` copy).
#[derive(Debug, Clone)]
enum Ids {
    One(u32),
    Many(Vec<u32>),
}

impl Ids {
    fn as_slice(&self) -> &[u32] {
        match self {
            Ids::One(i) => std::slice::from_ref(i),
            Ids::Many(v) => v,
        }
    }
}

#[derive(Debug)]
struct Slot {
    gen: u32,
    session: Option<EngineSession>,
}

/// A reset for a connection we hold no session for (a late answer of a finished one).
#[derive(Debug, Clone, Copy)]
struct StrayReset {
    client: SocketAddr,
    target: SocketAddr,
    seq: SeqNumber,
}

/// Stale entries the timer heap may hold before it is compacted, at the least: below this the
/// heap is small and compacting would cost more than it saves.
const TIMERS_COMPACT_MIN: usize = 4096;
/// Bytes charged per session against the memory budget besides its buffers.
pub const SESSION_OVERHEAD: usize = std::mem::size_of::<EngineSession>() + 160;

/// Spare buffer capacity the engine keeps for the next burst: an eighth of the memory budget,
/// at most 64 MiB (what a few dozen concurrent uploads reuse); freed first when memory is short.
fn spare_limit(max_memory: usize) -> usize {
    const MAX: usize = 64 << 20;
    if max_memory == 0 {
        MAX
    } else {
        (max_memory / 8).min(MAX)
    }
}

/// The engine: all cloned sessions of one tcpcopy worker.
#[derive(Debug)]
pub struct Engine {
    cfg: EngineConfig,
    slots: Vec<Slot>,
    free: Vec<u32>,
    by_capture: FastMap<AddrPair, Ids>,
    by_target: FastMap<AddrPair, u32>,
    /// Deadlines (time, slot, generation). An entry goes stale when its session ends or sets
    /// an earlier deadline; stale ones are skipped when they come due, and dropped by
    /// [`Engine::compact_timers`] once they outnumber the live ones (the session timeout is
    /// 10 minutes by default, so otherwise they would pile up for that long).
    timers: BinaryHeap<Reverse<(Instant, u32, u32)>>,
    /// `timers` is compacted when it grows past this length.
    timers_compact_at: usize,
    ready: VecDeque<(u32, u32)>,
    strays: VecDeque<StrayReset>,
    events: VecDeque<EngineEvent>,
    stats: EngineStats,
    mem: usize,
    /// Emptied client-stream buffers for the next burst (counted in `mem`).
    spares: SparePool,
    ip_id: u16,
    /// Per target address: the RTT its sessions measured (bounded by the -x targets).
    paths: session::PathRtts,
    /// Until then, the capture is known to have lost packets lately ([`Engine::capture_lost`]).
    lost_until: Option<Instant>,
    /// The capture is falling behind ([`Engine::set_shedding`]): new connections are shed.
    shedding: bool,
    /// Connections shed, by captured 4-tuple: their segments are ignored until they end, or
    /// until a request of theirs starts after the overload ([`ShedFlow`]).
    shed: FastMap<AddrPair, ShedFlow>,
    /// Whether a shed connection may be cloned again from its next request
    /// ([`Engine::allow_resume`]).
    resume_allowed: bool,
}

/// A connection shed while the capture fell behind.
#[derive(Debug, Clone, Copy)]
struct ShedFlow {
    /// When a segment of it was last captured.
    seen: Instant,
    /// The acknowledgment number of its client's last data segment: a data segment that
    /// acknowledges more starts a new request (the server answered in between), raw mode's
    /// request boundary, where a clone can start again once the overload is over.
    ack: Option<SeqNumber>,
}

/// Most connections one engine remembers as shed (about 100 bytes each). Past it a shed
/// connection is not remembered: once the overload is over, its next data segment starts a
/// clone mid-stream (perhaps mid-request), as a connection open before tcpcopy started does.
const MAX_SHED_FLOWS: usize = 1 << 16;

/// Client-port candidates next to the client's own before [`Engine::allocate`] looks further.
const NEAR_PORTS: usize = 16;

/// The jump between far candidates (plus the near step): about 0.62 of the port range, so
/// that successive jumps land far from each other and from the client's block of ports.
const FAR_PORT_STRIDE: usize = 40_009;

impl Drop for Engine {
    fn drop(&mut self) {
        if self.stats.packets_captured > 0 {
            tracing::info!("engine final counters: {}", self.stats());
        }
    }
}

impl Default for Engine {
    fn default() -> Self {
        Engine::new(EngineConfig::default())
    }
}

macro_rules! ctx {
    ($self:ident, $now:expr) => {
        SessionCtx {
            cfg: &$self.cfg,
            stats: &mut $self.stats,
            events: &mut $self.events,
            mem: &mut $self.mem,
            spares: &mut $self.spares,
            ip_id: &mut $self.ip_id,
            paths: &mut $self.paths,
            capture_lossy: $self.lost_until.is_some_and(|t| $now < t),
            payload_by_ref: false,
            hold: None,
            now: $now,
        }
    };
}

impl Engine {
    /// A new engine.
    pub fn new(mut cfg: EngineConfig) -> Self {
        cfg.copies = cfg.copies.max(1);
        cfg.percentage = cfg.percentage.clamp(1, 100);
        cfg.mtu = cfg.mtu.max(576);
        let max_memory = cfg.max_memory;
        Engine {
            cfg,
            slots: Vec::new(),
            free: Vec::new(),
            by_capture: FastMap::default(),
            by_target: FastMap::default(),
            timers: BinaryHeap::new(),
            timers_compact_at: TIMERS_COMPACT_MIN,
            ready: VecDeque::new(),
            strays: VecDeque::new(),
            events: VecDeque::new(),
            stats: EngineStats::default(),
            mem: 0,
            spares: SparePool::new(spare_limit(max_memory)),
            ip_id: 0,
            paths: Default::default(),
            lost_until: None,
            shedding: false,
            shed: FastMap::default(),
            resume_allowed: false,
        }
    }

    /// The capture lost packets (the kernel's ring overflowed) just before what comes next.
    /// For one gap timeout from `now`, a hole in a client stream is a gap at once: the segment
    /// it misses is most likely among those lost and will never come, and holding everything
    /// behind it costs a copy of every held byte and memory, on a worker that is behind
    /// already.
    pub fn capture_lost(&mut self, now: Instant) {
        self.lost_until = Some(now + self.cfg.gap_timeout);
    }

    /// The capture is falling behind (`on`; the worker's ring is filling faster than it is
    /// read) or has caught up again. While on, new connections are not cloned: each is
    /// remembered as shed and its segments ignored until it ends or, once the overload is
    /// over, until its next request starts (a clone then starts there, as for a connection
    /// open before tcpcopy started). What the target sees is whole requests; frames lost at
    /// random in the kernel instead break requests of every session.
    pub fn set_shedding(&mut self, on: bool) {
        self.shedding = on;
        self.resume_allowed &= !on;
    }

    /// Lets one shed connection be cloned again from its next request, once not shedding:
    /// the caller lets them back one at a time, a little apart, so that the load comes back
    /// gradually instead of all at once and straight into another overload.
    pub fn allow_resume(&mut self) {
        self.resume_allowed = !self.shedding;
    }

    /// Whether new connections are being shed ([`Engine::set_shedding`]).
    pub fn shedding(&self) -> bool {
        self.shedding
    }

    /// Connections remembered as shed now.
    pub fn shed_flows(&self) -> usize {
        self.shed.len()
    }

    /// Gives up the live clones whose clients sent the most bytes since the last call (every
    /// copy of each such connection), the heaviest first, until those given up carried `share`
    /// (0..=1) of the bytes all live clones captured since then, and at least one: the capture
    /// keeps falling behind although new connections are shed, and bulk uploads are what a
    /// worker cannot keep up with. Their targets get a RST; the connections' later segments
    /// are ignored as those of new connections shed ([`Engine::set_shedding`]). Returns how many connections were shed (none when no live
    /// clone captured a byte since the last call). Linear in the sessions: the caller calls it
    /// a few times a second at most, only while behind.
    pub fn shed_heaviest(&mut self, now: Instant, share: f64) -> usize {
        // (bytes, connection); copies of one connection (-n) count it once.
        let mut heavy: Vec<(u32, AddrPair)> = Vec::new();
        for s in self.slots.iter_mut().filter_map(|s| s.session.as_mut()) {
            let bytes = std::mem::take(&mut s.recent_bytes);
            if s.is_cloning() && bytes > 0 {
                heavy.push((bytes, AddrPair::of_flow(&s.capture)));
            }
        }
        heavy.sort_unstable_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        heavy.dedup_by(|a, b| a.1 == b.1);
        let total: u64 = heavy.iter().map(|h| u64::from(h.0)).sum();
        let want = (share.clamp(0.0, 1.0) * total as f64) as u64;
        let (mut carried, mut n) = (0u64, 0usize);
        for (bytes, pair) in heavy {
            if n > 0 && carried >= want {
                break;
            }
            carried += u64::from(bytes);
            n += 1;
            self.shed_connection(now, pair);
        }
        n
    }

    /// Copies the client bytes still in the capture blocks `which` picks into buffers of the
    /// engine, so that the kernel gets those blocks back (it stops at a held block when it
    /// comes round to it). A session the memory budget has no room for loses its bytes as in
    /// a capture gap.
    pub fn copy_ring_bytes(&mut self, now: Instant, which: &dyn Fn(&HeldBytes) -> bool) {
        for i in 0..self.slots.len() {
            let gen = self.slots[i].gen;
            let Some(s) = self.slots[i].session.as_mut() else {
                continue;
            };
            if !s.holds_ring() {
                continue;
            }
            let mut cx = ctx!(self, now);
            s.copy_ring(&mut cx, which);
            self.after(i as u32, gen, true);
        }
    }

    /// Resets and ends every clone of the captured connection `pair` and remembers it as shed.
    fn shed_connection(&mut self, now: Instant, pair: AddrPair) {
        let ids = self
            .by_capture
            .get(&pair)
            .map(|ids| ids.as_slice().to_vec())
            .unwrap_or_default();
        for id in ids {
            let gen = self.slots[id as usize].gen;
            if let Some(s) = self.slots[id as usize].session.as_mut() {
                let mut cx = ctx!(self, now);
                s.shed(&mut cx);
            }
            self.after(id, gen, true);
        }
        self.remember_shed(pair, now, None);
    }

    fn remember_shed(&mut self, pair: AddrPair, now: Instant, ack: Option<SeqNumber>) {
        if self.shed.len() < MAX_SHED_FLOWS {
            self.shed.insert(pair, ShedFlow { seen: now, ack });
        }
    }

    /// Forgets shed connections not seen for the session timeout (their client vanished
    /// without a FIN or RST that the capture saw). Call it every few seconds.
    pub fn expire_shed(&mut self, now: Instant) {
        if self.shed.is_empty() {
            return;
        }
        let timeout = self.cfg.session_timeout;
        self.shed
            .retain(|_, f| now.saturating_duration_since(f.seen) < timeout);
        self.shed.shrink_if_oversized();
    }

    /// A captured segment of a connection that has no clone: `true` when it is (or now
    /// becomes) a shed connection's, counted and ignored; `false` when it is to be cloned as
    /// usual (a shed connection's new SYN or next request once the overload is over).
    fn shed_segment(
        &mut self,
        now: Instant,
        key: &FlowKey,
        seg: &RawSegment<'_>,
        is_syn: bool,
    ) -> bool {
        let pair = AddrPair::of_flow(key);
        let data = !seg.payload.is_empty() && !seg.has(RST) && !seg.has(SYN);
        if let Some(f) = self.shed.get_mut(&pair) {
            let ack = seg.has(ACK).then_some(seg.ack);
            let new_request = data && ack.is_some() && f.ack.is_some() && ack != f.ack;
            if !self.shedding && (is_syn || new_request && self.resume_allowed) {
                // Over the overload: the client port is used again (a new connection), or
                // the connection's next request starts; cloned from here.
                self.shed.remove(&pair);
                self.stats.shed_resumed += 1;
                self.resume_allowed &= is_syn;
                return false;
            }
            self.stats.shed_segments += 1;
            if seg.has(FIN) || seg.has(RST) {
                self.shed.remove(&pair);
            } else {
                f.seen = now;
                if data {
                    f.ack = ack;
                }
            }
            return true;
        }
        if !self.shedding || !(is_syn || data) || !self.sampled_in(key) {
            return false;
        }
        self.stats.shed_new += 1;
        self.stats.shed_segments += 1;
        if !seg.has(FIN) {
            self.remember_shed(pair, now, (data && seg.has(ACK)).then_some(seg.ack));
        }
        true
    }

    /// The configuration in use.
    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> EngineStats {
        let mut s = self.stats.clone();
        s.memory_bytes = self.mem as u64;
        s
    }

    /// Sessions alive now.
    pub fn session_count(&self) -> usize {
        self.by_target.len()
    }

    /// Bytes accounted against the memory budget now (session overhead plus buffers).
    pub fn memory_used(&self) -> usize {
        self.mem
    }

    /// Bytes the live sessions account for: [`Engine::memory_used`] without the spare buffers
    /// kept for the next burst.
    pub fn memory_in_sessions(&self) -> usize {
        self.mem - self.spares.bytes()
    }

    /// The budget's bytes counted afresh from the live sessions; tests check that the running
    /// count `memory_used` never drifts from it.
    #[cfg(test)]
    pub(crate) fn memory_recount(&self) -> usize {
        self.slots
            .iter()
            .filter_map(|s| s.session.as_ref())
            .map(|s| SESSION_OVERHEAD + s.buffered())
            .sum::<usize>()
            + self.spares.bytes()
    }

    fn target_for(&self, dst: IpAddr, port: u16) -> Option<SocketAddr> {
        let to = SocketAddr::new(dst, port);
        if self.cfg.mappings.iter().any(|m| m.target == to) {
            return None; // our own output, seen by a capture that matches any address
        }
        self.cfg
            .mappings
            .iter()
            .find(|m| m.online_port == port && m.online_ip.is_none_or(|ip| ip == dst))
            .map(|m| m.target)
    }

    /// A captured client→service IP packet (IPv4 or IPv6 header first; may be a GSO/GRO
    /// super-segment with an unfinished checksum).
    #[inline]
    pub fn handle_captured(&mut self, now: Instant, ip_packet: &[u8]) {
        self.handle_captured_at(now, now, ip_packet);
    }

    /// [`Engine::handle_captured`] of a packet the capture stamped `captured_at` (on the
    /// capture's clock, mapped onto `now`'s): the report's production times are read on it, so
    /// that production's latency is the capture's and not when the worker got to the packet.
    /// Everything else runs on `now`.
    pub fn handle_captured_at(&mut self, now: Instant, captured_at: Instant, ip_packet: &[u8]) {
        self.captured(now, captured_at, ip_packet, None);
    }

    /// [`Engine::handle_captured_at`] of a packet read in place from the capture block
    /// `block`: a large in-order payload stays there instead of being copied, until the target
    /// has it or [`Engine::copy_ring_bytes`] is called (the block goes back to the kernel when
    /// no session holds bytes of it).
    pub fn handle_captured_in(
        &mut self,
        now: Instant,
        captured_at: Instant,
        ip_packet: &[u8],
        block: &dyn HoldBytes,
    ) {
        self.captured(now, captured_at, ip_packet, Some(block));
    }

    fn captured(
        &mut self,
        now: Instant,
        captured_at: Instant,
        ip_packet: &[u8],
        hold: Option<&dyn HoldBytes>,
    ) {
        self.stats.packets_captured += 1;
        let Some(seg) = parse(ip_packet, false) else {
            self.stats.packets_ignored += 1;
            return;
        };
        let Some(target) = self.target_for(seg.dst, seg.dst_port) else {
            // With the report on, the capture holds production's answers too.
            if !(self.cfg.request_timing_events && self.production_answer(captured_at, &seg)) {
                self.stats.packets_ignored += 1;
            }
            return;
        };
        self.stats.segments_in += 1;
        self.stats.bytes_captured += seg.payload.len() as u64;
        let key = FlowKey::new(seg.src, seg.src_port, seg.dst, seg.dst_port);
        let is_syn = seg.has(SYN) && !seg.has(ACK) && !seg.has(RST);
        if let Some(ids) = self.by_capture.get(&AddrPair::of_flow(&key)) {
            let ids = ids.clone();
            if is_syn && self.reuse_would_cut(&ids, seg.seq) {
                // The client reused its port while our clone still holds data the target has
                // not acknowledged: let that clone finish on its own 4-tuple and clone the new
                // connection on another client port (allocate skips ports in use).
                self.stats.reuse_detached += 1;
                self.by_capture.remove(&AddrPair::of_flow(&key));
                self.create(now, key, target, &seg, false);
                return;
            }
            let mut new_connection = false;
            for &id in ids.as_slice() {
                let gen = self.slots[id as usize].gen;
                let Some(s) = self.slots[id as usize].session.as_mut() else {
                    continue;
                };
                if self.cfg.request_timing_events && !seg.payload.is_empty() {
                    s.report_client_data(captured_at, seg.seq, seg.payload.len());
                }
                s.recent_bytes = s
                    .recent_bytes
                    .saturating_add(u32::try_from(seg.payload.len()).unwrap_or(u32::MAX));
                if is_syn && seg.seq != s.client_isn {
                    new_connection = true;
                    self.replace(now, id, &seg);
                } else {
                    let mut cx = ctx!(self, now);
                    cx.hold = hold;
                    s.on_captured(&mut cx, &seg);
                }
                self.after(id, gen, true);
            }
            // With -n above 1 the copies of the old connection can end at different times:
            // the new connection replaced those still there and needs the others anew.
            let copies = usize::from(self.cfg.copies);
            let missing = copies.saturating_sub(ids.as_slice().len());
            if new_connection && missing > 0 && self.room_for_sessions(missing) {
                self.clone_copies(now, key, target, &seg, false, missing);
            }
            return;
        }
        if (self.shedding || !self.shed.is_empty()) && self.shed_segment(now, &key, &seg, is_syn) {
            return;
        }
        if is_syn {
            self.create(now, key, target, &seg, false);
        } else if !seg.payload.is_empty() && !seg.has(RST) && !seg.has(SYN) {
            self.create(now, key, target, &seg, true);
        }
    }

    /// A segment this host sent from a service to its client, captured at `captured_at`
    /// (production's answer on the production host; the report on): only ever production's
    /// side of the report, never client data, never cloned.
    pub fn handle_production_captured(&mut self, captured_at: Instant, ip_packet: &[u8]) {
        self.stats.packets_captured += 1;
        let counted = self.cfg.request_timing_events
            && parse(ip_packet, false).is_some_and(|seg| self.production_answer(captured_at, &seg));
        if !counted {
            self.stats.packets_ignored += 1;
        }
    }

    /// A captured segment from a service to its client (the report on): its payload is
    /// production's answer on the clones of that connection. False when it belongs to none.
    fn production_answer(&mut self, now: Instant, seg: &RawSegment<'_>) -> bool {
        let key = FlowKey::new(seg.dst, seg.dst_port, seg.src, seg.src_port);
        let Some(ids) = self.by_capture.get(&AddrPair::of_flow(&key)) else {
            return false;
        };
        if !seg.payload.is_empty() {
            for &id in ids.as_slice() {
                if let Some(s) = self.slots[id as usize].session.as_mut() {
                    if let Some(ev) = s.report_production_data(now, seg.payload) {
                        self.events.push_back(ev);
                    }
                }
            }
        }
        true
    }

    /// A SYN with a new ISN would replace (reset) a clone that is still delivering.
    fn reuse_would_cut(&self, ids: &Ids, isn: SeqNumber) -> bool {
        ids.as_slice().iter().any(|&id| {
            self.slots[id as usize]
                .session
                .as_ref()
                .is_some_and(|s| s.client_isn != isn && s.still_delivering())
        })
    }

    fn sampled_in(&self, key: &FlowKey) -> bool {
        self.cfg.percentage >= 100 || key.src_hash() % 100 < u64::from(self.cfg.percentage)
    }

    fn create(
        &mut self,
        now: Instant,
        key: FlowKey,
        target: SocketAddr,
        seg: &RawSegment<'_>,
        fake: bool,
    ) {
        if !self.sampled_in(&key) {
            if !fake {
                self.stats.sampled_out += 1;
            }
            return;
        }
        let copies = usize::from(self.cfg.copies);
        if self.room_for_sessions(copies) {
            self.clone_copies(now, key, target, seg, fake, copies);
        }
    }

    /// Room in the memory budget for `n` more sessions, the spare buffers freed first if that
    /// is what it takes; a refusal is counted.
    fn room_for_sessions(&mut self, n: usize) -> bool {
        let need = SESSION_OVERHEAD * n;
        let room = self
            .spares
            .room_for(need, self.cfg.max_memory, &mut self.mem);
        if !room {
            self.stats.refused_memory += 1;
        }
        room
    }

    /// Clones `n` copies of `key` on client addresses free among live sessions and maps the
    /// capture's 4-tuple to them (beside the copies it already has).
    fn clone_copies(
        &mut self,
        now: Instant,
        key: FlowKey,
        target: SocketAddr,
        seg: &RawSegment<'_>,
        fake: bool,
        n: usize,
    ) {
        let mut ids = Vec::with_capacity(n);
        for k in 0..n {
            let Some((client, last_ts)) = self.allocate(now, &key, k, target) else {
                continue;
            };
            let mut cx = ctx!(self, now);
            let s = EngineSession::new(&mut cx, key, client, target, seg, fake, last_ts);
            let id = self.insert(s);
            self.events
                .push_back(EngineEvent::SessionAdded { client, target });
            self.stats.sessions_cloned += 1;
            ids.push(id);
        }
        let gens: Vec<(u32, u32)> = ids
            .iter()
            .map(|&i| (i, self.slots[i as usize].gen))
            .collect();
        let pair = AddrPair::of_flow(&key);
        if let Some(old) = self.by_capture.remove(&pair) {
            ids.splice(0..0, old.as_slice().iter().copied());
        }
        match ids.len() {
            0 => return,
            1 => self.by_capture.insert(pair, Ids::One(ids[0])),
            _ => self.by_capture.insert(pair, Ids::Many(ids)),
        };
        for (id, gen) in gens {
            self.after(id, gen, true);
        }
    }

    /// Picks the client address the target will see for copy `k`, free among live sessions.
    /// Candidates: the client's port, [`NEAR_PORTS`] neighbours, then ports spread over the range.
    /// When none is free, the first candidate whose clone only lingers in TIME_WAIT is taken
    /// over (ended as completed), as the kernel reuses a TIME_WAIT port: with `-n` above 1
    /// and no `-c`, the copies share the client's own port space, and at tens of thousands of
    /// short connections a second the clones lingering 2 s hold most of it. The new clone's
    /// TSval keeps rising from the old one's, so that the target's TIME_WAIT takes its SYN.
    /// Returns the address and, when it was taken over, the TSval to continue from.
    fn allocate(
        &mut self,
        now: Instant,
        key: &FlowKey,
        k: usize,
        target: SocketAddr,
    ) -> Option<(SocketAddr, Option<SeqNumber>)> {
        let base = key.src.port();
        let shift = usize::from(self.cfg.port_shift.max(1));
        let copies = usize::from(self.cfg.copies);
        let wrap = |off: usize| -> u16 {
            if off == 0 {
                return base;
            }
            // Shifted ports stay in 1024..=65535.
            let span = 65536 - 1024;
            let p = (usize::from(base.max(1024)) - 1024 + off) % span + 1024;
            p as u16
        };
        let ips = &self.cfg.client_ips;
        let ip_hash = FlowKey::new(key.src.ip(), 0, key.src.ip(), 0).src_hash() as usize;
        let mut family_ok = false;
        let mut lingering = None;
        for attempt in 0..256usize {
            let cand = if ips.is_empty() {
                // The client's port and its neighbours first (TCPCopy's port shift), then
                // strides across the whole range: while a slow target keeps clones alive, a
                // burst of reused client ports can hold every neighbour (the client takes its
                // ports in sequence), and 256 of them were all taken.
                let far = attempt.saturating_sub(NEAR_PORTS) * FAR_PORT_STRIDE;
                SocketAddr::new(key.src.ip(), wrap((k + attempt * copies) * shift + far))
            } else {
                let n = ips.len();
                let i = (ip_hash % n + k + attempt) % n;
                SocketAddr::new(ips[i], wrap(((k + attempt) / n) * shift))
            };
            if cand.is_ipv4() != target.is_ipv4() {
                if ips.is_empty() {
                    break;
                }
                continue;
            }
            family_ok = true;
            match self.by_target.get(&AddrPair(cand, target)) {
                None => {
                    if self
                        .cfg
                        .shared_clients
                        .as_ref()
                        .is_none_or(|sh| sh.claim(cand, target))
                    {
                        return Some((cand, None));
                    }
                }
                Some(&id) => {
                    let lingers = self.slots[id as usize]
                        .session
                        .as_ref()
                        .is_some_and(|s| s.state == session::State::TimeWait);
                    if lingers && lingering.is_none() {
                        lingering = Some(id);
                    }
                }
            }
        }
        if let Some(id) = lingering {
            let gen = self.slots[id as usize].gen;
            if let Some(s) = self.slots[id as usize].session.as_mut() {
                let (client, ts) = (s.client, s.last_ts());
                let mut cx = ctx!(self, now);
                s.finish(&mut cx, session::RawEndReason::Completed);
                self.stats.linger_taken_over += 1;
                // Gone now, with whatever re-acknowledgment it still had to send.
                if self.slots[id as usize].gen == gen {
                    self.remove(id);
                }
                let free = !self.by_target.contains_key(&AddrPair(client, target))
                    && self
                        .cfg
                        .shared_clients
                        .as_ref()
                        .is_none_or(|sh| sh.claim(client, target));
                if free {
                    return Some((client, Some(ts)));
                }
            }
        }
        if family_ok {
            self.stats.refused_ports += 1;
        } else {
            self.stats.refused_family += 1;
        }
        None
    }

    fn insert(&mut self, s: EngineSession) -> u32 {
        self.mem += SESSION_OVERHEAD;
        self.stats.sessions_active += 1;
        let key = AddrPair(s.client, s.target);
        let id = match self.free.pop() {
            Some(id) => {
                self.slots[id as usize].session = Some(s);
                id
            }
            None => {
                self.slots.push(Slot {
                    gen: 0,
                    session: Some(s),
                });
                (self.slots.len() - 1) as u32
            }
        };
        self.by_target.insert(key, id);
        id
    }

    /// A new SYN on a client port that still has a session: end the old clone cleanly and start
    /// a new one on the same target-side 4-tuple with TSval still rising.
    fn replace(&mut self, now: Instant, id: u32, seg: &RawSegment<'_>) {
        let Some(mut old) = self.slots[id as usize].session.take() else {
            return;
        };
        let reason = if old.state == session::State::TimeWait {
            session::RawEndReason::Completed
        } else {
            session::RawEndReason::Replaced
        };
        let mut cx = ctx!(self, now);
        let mut s = EngineSession::new(
            &mut cx,
            old.capture,
            old.client,
            old.target,
            seg,
            false,
            Some(old.last_ts()),
        );
        s.inherit_reset(&old);
        old.finish(&mut cx, reason);
        self.stats.sessions_cloned += 1;
        self.slots[id as usize].session = Some(s);
    }

    fn remove(&mut self, id: u32) {
        let slot = &mut self.slots[id as usize];
        let Some(s) = slot.session.take() else { return };
        slot.gen = slot.gen.wrapping_add(1);
        self.free.push(id);
        self.mem = self.mem.saturating_sub(SESSION_OVERHEAD + s.buffered());
        self.stats.sessions_active = self.stats.sessions_active.saturating_sub(1);
        self.by_target.remove(&AddrPair(s.client, s.target));
        if let Some(sh) = &self.cfg.shared_clients {
            sh.release(s.client, s.target);
        }
        let cap = AddrPair::of_flow(&s.capture);
        if let Some(ids) = self.by_capture.get_mut(&cap) {
            match ids {
                Ids::One(i) if *i == id => {
                    self.by_capture.remove(&cap);
                }
                Ids::Many(v) => {
                    v.retain(|i| *i != id);
                    if v.is_empty() {
                        self.by_capture.remove(&cap);
                    }
                }
                Ids::One(_) => {}
            }
        }
        self.events.push_back(EngineEvent::SessionRemoved {
            client: s.client,
            target: s.target,
        });
    }

    /// Bookkeeping after a session was touched: removal, ready queue, timer.
    fn after(&mut self, id: u32, gen: u32, may_queue: bool) {
        let slot = &mut self.slots[id as usize];
        if slot.gen != gen {
            return;
        }
        let Some(s) = slot.session.as_mut() else {
            return;
        };
        let wants = s.wants_transmit();
        if s.end.is_some() && !wants {
            self.remove(id);
            return;
        }
        if wants && may_queue && !s.queued {
            s.queued = true;
            self.ready.push_back((id, gen));
        }
        if let Some(d) = s.next_deadline(&self.cfg) {
            if s.timer_at.is_none_or(|t| d < t) {
                s.timer_at = Some(d);
                self.timers.push(Reverse((d, id, gen)));
                if self.timers.len() > self.timers_compact_at {
                    self.compact_timers();
                }
            }
        }
    }

    /// Whether a timer entry still stands for its session's deadline (what `handle_timeout`
    /// checks before acting on one).
    fn timer_live(slots: &[Slot], t: Instant, id: u32, gen: u32) -> bool {
        slots.get(id as usize).is_some_and(|slot| {
            slot.gen == gen && slot.session.as_ref().is_some_and(|s| s.timer_at == Some(t))
        })
    }

    /// Drops the stale entries of the timer heap (O(n), run when the heap has doubled since the
    /// last time, so O(1) per deadline set) and gives back the capacity they held.
    fn compact_timers(&mut self) {
        let slots = &self.slots;
        let mut v = std::mem::take(&mut self.timers).into_vec();
        v.retain(|Reverse((t, id, gen))| Self::timer_live(slots, *t, *id, *gen));
        v.shrink_if_oversized();
        self.timers = BinaryHeap::from(v);
        self.timers_compact_at = (2 * self.timers.len()).max(TIMERS_COMPACT_MIN);
    }

    /// The report (on), at the end of the run: every answered request still waiting for
    /// production's answer goes out without it ([`EngineEvent::RequestTiming`]).
    pub fn flush_report(&mut self) {
        for s in self.slots.iter_mut().filter_map(|s| s.session.as_mut()) {
            if let Some(ev) = s.report_flush() {
                self.events.push_back(ev);
            }
        }
    }

    /// Gives back memory that a past peak of sessions left behind: stale timers, capacity of
    /// the maps and queues far above what they hold now, empty session slots at the end of the
    /// slot table. Call it every few seconds between `handle_*`/`poll_*` calls; it does nothing
    /// when nothing is oversized. (The allocator can only return what the engine frees: a map
    /// sized for yesterday's peak stays resident as long as it exists.)
    pub fn compact(&mut self) {
        self.spares.trim(&mut self.mem);
        // Empty slots at the end go (their ids leave the free list; stale references to them
        // in the ready queue and the timers are dropped below, so a slot created again at the
        // same index cannot be mistaken for the old one).
        let live_end = self
            .slots
            .iter()
            .rposition(|s| s.session.is_some())
            .map_or(0, |i| i + 1);
        if live_end < self.slots.len() {
            self.slots.truncate(live_end);
            self.free.retain(|&id| (id as usize) < live_end);
            self.ready.retain(|&(id, _)| (id as usize) < live_end);
        }
        self.compact_timers();
        self.slots.shrink_if_oversized();
        self.free.shrink_if_oversized();
        self.ready.shrink_if_oversized();
        self.strays.shrink_if_oversized();
        self.events.shrink_if_oversized();
        self.by_capture.shrink_if_oversized();
        self.by_target.shrink_if_oversized();
    }

    /// The IP+TCP headers of one target response, as intercept reported them.
    pub fn handle_response(&mut self, now: Instant, ip_tcp_headers: &[u8]) {
        self.handle_response_with_prefix(now, ip_tcp_headers, &[]);
    }

    /// [`handle_response`](Self::handle_response) with the first bytes of the response's
    /// payload (intercept's `--response-prefix`), which the report reads the answer's class
    /// from (only with [`EngineConfig::request_timing_events`]).
    pub fn handle_response_with_prefix(
        &mut self,
        now: Instant,
        ip_tcp_headers: &[u8],
        prefix: &[u8],
    ) {
        self.stats.responses += 1;
        let Some(mut seg) = parse(ip_tcp_headers, true) else {
            self.stats.responses_unmatched += 1;
            return;
        };
        let client = SocketAddr::new(seg.dst, seg.dst_port);
        let target = SocketAddr::new(seg.src, seg.src_port);
        let Some(&id) = self.by_target.get(&AddrPair(client, target)) else {
            self.stats.responses_unmatched += 1;
            // No socket here: answer like a TCP stack would (RFC 9293 §3.10.7.1), so the
            // target does not keep the connection in LAST_ACK or ESTABLISHED.
            if seg.has(ACK) && !seg.has(RST) && self.strays.len() < 1024 {
                self.strays.push_back(StrayReset {
                    client,
                    target,
                    seq: seg.ack,
                });
            }
            return;
        };
        // A response's payload is never sent anywhere: the field carries the prefix intercept
        // reported, for the report (at most what the IP header announces).
        seg.payload = &prefix[..prefix.len().min(seg.payload_len as usize)];
        let gen = self.slots[id as usize].gen;
        if let Some(s) = self.slots[id as usize].session.as_mut() {
            let mut cx = ctx!(self, now);
            s.on_response(&mut cx, &seg);
        }
        self.after(id, gen, true);
    }

    /// Runs timers due at `now` (retransmission, request release, session timeouts).
    pub fn handle_timeout(&mut self, now: Instant) {
        // Bounded: a deadline a handler re-arms at or before `now` waits for the next call.
        let mut budget = self.timers.len();
        while let Some(&Reverse((t, id, gen))) = self.timers.peek() {
            if t > now || budget == 0 {
                break;
            }
            budget -= 1;
            self.timers.pop();
            let slot = &mut self.slots[id as usize];
            if slot.gen != gen {
                continue;
            }
            let Some(s) = slot.session.as_mut() else {
                continue;
            };
            if s.timer_at != Some(t) {
                continue;
            }
            s.timer_at = None;
            let mut cx = ctx!(self, now);
            s.on_timeout(&mut cx);
            self.after(id, gen, true);
        }
    }

    /// When `handle_timeout` should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.peek().map(|r| r.0 .0)
    }

    /// Writes the next packet to send into `buf` (at least 65,535 bytes).
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        self.next_transmit(now, buf, false)
    }

    /// [`Engine::poll_transmit`], but a super-segment's payload stays in its session: `buf`
    /// gets its headers only and [`Transmit::payload`] says where the payload lies, for
    /// [`Engine::payload`] to give when the packet is sent. Between the two calls the engine
    /// may only be asked for more transmits: handling captured packets, responses or timeouts
    /// may move or drop the bytes (the reference then gives nothing, never other bytes).
    pub fn poll_transmit_by_ref(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        self.next_transmit(now, buf, true)
    }

    /// The payload of a [`Transmit`] from [`Engine::poll_transmit_by_ref`], in the client
    /// stream's one or two pieces; `None` when the session is gone or the bytes left its buffer.
    pub fn payload(&self, r: &PayloadRef) -> Option<(&[u8], &[u8])> {
        let slot = self.slots.get(r.id as usize)?;
        if slot.gen != r.gen {
            return None;
        }
        slot.session.as_ref()?.payload(r.seq, r.len as usize)
    }

    fn next_transmit(&mut self, now: Instant, buf: &mut [u8], by_ref: bool) -> Option<Transmit> {
        if let Some(r) = self.strays.pop_front() {
            self.ip_id = self.ip_id.wrapping_add(1);
            let path = Path::new(r.client, r.target);
            if let Some(seg) = path.map(|path| OutSegment {
                path,
                seq: r.seq,
                ack: SeqNumber(0),
                flags: RST,
                window: 0,
                opts: TcpOpts::default(),
                payload: (&[], &[]),
                ip_id: self.ip_id,
            }) {
                if let Some(len) = packet::build(&seg, buf) {
                    self.stats.segments_sent += 1;
                    self.stats.resets_sent += 1;
                    return Some(Transmit {
                        len,
                        dst: r.target.ip(),
                        gso_size: None,
                        payload: None,
                    });
                }
            }
        }
        while let Some((id, gen)) = self.ready.pop_front() {
            let slot = &mut self.slots[id as usize];
            if slot.gen != gen {
                continue;
            }
            let Some(s) = slot.session.as_mut() else {
                continue;
            };
            s.queued = false;
            let dst = s.target.ip();
            let mut cx = ctx!(self, now);
            cx.payload_by_ref = by_ref;
            let out = s.transmit(&mut cx, buf);
            self.after(id, gen, out.is_some());
            if let Some(sent) = out {
                return Some(Transmit {
                    len: sent.len,
                    dst,
                    gso_size: sent.gso_size,
                    payload: sent
                        .payload
                        .map(|(seq, len)| PayloadRef { id, gen, seq, len }),
                });
            }
        }
        None
    }

    /// Next event for the glue.
    pub fn poll_event(&mut self) -> Option<EngineEvent> {
        self.events.pop_front()
    }
}
