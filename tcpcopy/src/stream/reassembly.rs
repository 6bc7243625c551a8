//! TCP stream reassembly for stream mode: captured segments and their timestamps in, ordered
//! stream events out (session opened, in-order data per direction with message boundaries, FIN,
//! session ended).
//!
//! Sans-IO (STYLE.md rule 2): no sockets, no clock, no files. Time is the capture timestamp passed
//! to [`Reassembler::handle_segment`]. Memory is bounded by the sessions in flight: data leaves as
//! soon as it is in order, and out-of-order data per direction is capped.
//!
//! The rules are the conversation core's, shared with raw mode (`crate::conversation`): each
//! direction is put in order by a `ReorderQueue` (new parts, held segments, their cost), and a
//! client chunk's request boundary is `RequestBoundaries`' decision under
//! `BoundaryRules::STREAM` (the client's ack moved since its previous data, or the server sent
//! data since then, or it is the first). What is stream mode's own here: both directions, sessions
//! found by 4-tuple with their ends (FIN, RST, idle, port reuse), and a hole ends a session.

use crate::conversation::{BoundaryRules, Held, ReorderQueue, RequestBoundaries};
use bytes::Bytes;
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use tcpclone::flow::FlowKey;
use tcpclone::seq::SeqNumber;

/// Identifies one reassembled session within one [`Reassembler`].
pub type SessionId = u64;

/// Which side sent something.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// The client (the side that is replayed).
    Client,
    /// The server (production; its data is only measured and compared).
    Server,
}

/// One TCP segment as captured, already parsed.
#[derive(Debug, Clone, Copy)]
pub struct Segment<'a> {
    /// Sender address and port.
    pub src: SocketAddr,
    /// Receiver address and port.
    pub dst: SocketAddr,
    /// Sequence number.
    pub seq: SeqNumber,
    /// Acknowledgment number, when the ACK flag is set.
    pub ack: Option<SeqNumber>,
    /// SYN flag.
    pub syn: bool,
    /// FIN flag.
    pub fin: bool,
    /// RST flag.
    pub rst: bool,
    /// TCP payload.
    pub payload: &'a [u8],
}

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EndReason {
    /// Both sides closed (or the client closed and no server packet was ever seen).
    Fin,
    /// Either side reset the connection.
    Reset,
    /// Nothing was seen for the idle timeout.
    Idle,
    /// The capture ended while the session was open.
    EndOfInput,
    /// Bytes are missing from the capture; the session stops before the hole.
    Hole,
    /// The same 4-tuple started a new connection (port reuse).
    Replaced,
}

/// What the reassembler reports, in capture order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEvent {
    /// A new session: `key` runs from the client to the server.
    Open {
        /// Session id.
        id: SessionId,
        /// Client → server 4-tuple.
        key: FlowKey,
        /// Capture time of the session's first segment (ns).
        ts: u64,
        /// Whether the client's SYN is in the capture.
        syn_seen: bool,
    },
    /// In-order bytes from one side.
    Data {
        /// Session id.
        id: SessionId,
        /// Sender.
        side: Side,
        /// Capture time of the segment that made these bytes in order (ns).
        ts: u64,
        /// The bytes.
        bytes: Bytes,
        /// For client data: these bytes begin a new request.
        new_message: bool,
        /// Whether any server→client segment of this session has been seen so far.
        server_seen: bool,
    },
    /// One side's FIN, once all its data before it was delivered.
    Fin {
        /// Session id.
        id: SessionId,
        /// Who closed.
        side: Side,
        /// Capture time (ns).
        ts: u64,
    },
    /// The session is over; no more events for `id`.
    Close {
        /// Session id.
        id: SessionId,
        /// Capture time (ns).
        ts: u64,
        /// Why.
        reason: EndReason,
        /// Bytes were missing (a hole, or out-of-order data never filled): replayed only up to it.
        partial: bool,
    },
}

/// Reassembler settings.
#[derive(Debug, Clone)]
pub struct ReassemblyConfig {
    /// Server endpoints (`None` address: any); the other side of a matching segment is the client.
    /// Empty: any; without a SYN the lower port is taken as the server.
    pub servers: Vec<(Option<IpAddr>, u16)>,
    /// A session idle this long (capture time, ns) ends.
    pub idle_timeout_ns: u64,
    /// A gap in a direction not filled within this time (capture time, ns) is a hole.
    pub hole_timeout_ns: u64,
    /// Out-of-order data held per direction before the gap is declared a hole, counted as
    /// what it allocates (the conversation core's `held_cost`: each piece's bytes plus its entry).
    pub max_out_of_order: usize,
}

impl Default for ReassemblyConfig {
    fn default() -> Self {
        ReassemblyConfig {
            servers: Vec::new(),
            idle_timeout_ns: 120_000_000_000,
            hole_timeout_ns: 3_000_000_000,
            max_out_of_order: 4 << 20,
        }
    }
}

/// Counters kept by the reassembler.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReassemblyStats {
    /// Sessions opened.
    pub sessions: u64,
    /// Sessions whose client SYN was not in the capture.
    pub without_syn: u64,
    /// Sessions that ended with missing bytes.
    pub partial: u64,
    /// Segments that carried only bytes already delivered (retransmissions, duplicates).
    pub retransmitted: u64,
    /// Segments that arrived ahead of a gap.
    pub out_of_order: u64,
    /// Segments ignored (no session, not matching the server list, after a hole).
    pub ignored: u64,
}

#[derive(Debug, Default)]
struct Direction {
    /// The next in-order byte and the pieces held beyond a hole (the conversation core's),
    /// once the direction's first sequence number is known.
    order: Option<ReorderQueue>,
    /// Offset of the next in-order byte from the first one.
    next_off: u64,
    /// Capture time since which a gap has been waiting.
    gap_since: Option<u64>,
    /// Offset of the FIN, when seen.
    fin_off: Option<u64>,
    fin_done: bool,
    seen: bool,
    /// Furthest offset the peer acknowledged (it received bytes up to there).
    acked_off: Option<u64>,
}

impl Direction {
    /// Bytes the peer acknowledged that the capture does not hold (beyond a FIN's sequence slot).
    fn acked_missing(&self) -> bool {
        let fin_extra = u64::from(self.fin_off.is_some());
        self.acked_off
            .is_some_and(|a| a > self.next_off + fin_extra)
    }

    /// A gap that the peer has acknowledged past while later data waits: the capture lost bytes.
    fn holed(&self) -> bool {
        self.holds_any() && self.acked_missing()
    }

    /// Pieces are held beyond a gap.
    fn holds_any(&self) -> bool {
        self.order.as_ref().is_some_and(|q| !q.nothing_held())
    }

    /// What the held pieces are counted as.
    fn held_bytes(&self) -> usize {
        self.order.as_ref().map_or(0, ReorderQueue::held_bytes)
    }

    /// Offset of `seq` relative to the next in-order byte's offset.
    fn offset_of(&self, seq: SeqNumber) -> Option<i64> {
        let next = self.order.as_ref()?.next();
        Some(self.next_off as i64 + i64::from(seq.diff(next)))
    }
}

#[derive(Debug)]
struct Session {
    id: SessionId,
    dirs: [Direction; 2],
    last_ts: u64,
    /// Where the client's requests start (the conversation core's rule).
    starts: RequestBoundaries,
    client_isn: Option<SeqNumber>,
}

fn idx(side: Side) -> usize {
    match side {
        Side::Client => 0,
        Side::Server => 1,
    }
}

fn other(side: Side) -> Side {
    match side {
        Side::Client => Side::Server,
        Side::Server => Side::Client,
    }
}

/// Reassembles every session of a capture, streaming.
#[derive(Debug)]
pub struct Reassembler {
    config: ReassemblyConfig,
    sessions: HashMap<FlowKey, Session>,
    /// Sessions that ended on a hole: their later segments are ignored (until a new SYN).
    dead: HashMap<FlowKey, u64>,
    events: VecDeque<StreamEvent>,
    next_id: SessionId,
    last_sweep: u64,
    stats: ReassemblyStats,
    /// Memory all sessions' held pieces account for.
    held_bytes: usize,
}

impl Reassembler {
    /// A reassembler with no sessions.
    pub fn new(config: ReassemblyConfig) -> Self {
        Reassembler {
            config,
            sessions: HashMap::new(),
            dead: HashMap::new(),
            events: VecDeque::new(),
            next_id: 0,
            last_sweep: 0,
            stats: ReassemblyStats::default(),
            held_bytes: 0,
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> ReassemblyStats {
        self.stats
    }

    /// Memory the out-of-order pieces of all open sessions account for.
    pub fn held_bytes(&self) -> usize {
        self.held_bytes
    }

    /// Sessions currently open.
    pub fn sessions_in_flight(&self) -> usize {
        self.sessions.len()
    }

    /// Next event, in capture order.
    pub fn poll_event(&mut self) -> Option<StreamEvent> {
        self.events.pop_front()
    }

    fn is_server(&self, addr: SocketAddr) -> bool {
        self.config
            .servers
            .iter()
            .any(|(ip, port)| *port == addr.port() && ip.is_none_or(|ip| ip == addr.ip()))
    }

    /// Which side of a new session sent `seg`, or `None` when it is not ours.
    fn classify_new(&self, seg: &Segment<'_>) -> Option<Side> {
        if self.config.servers.is_empty() {
            if seg.syn {
                return Some(if seg.ack.is_some() {
                    Side::Server
                } else {
                    Side::Client
                });
            }
            return Some(if seg.dst.port() <= seg.src.port() {
                Side::Client
            } else {
                Side::Server
            });
        }
        if self.is_server(seg.dst) {
            Some(Side::Client)
        } else if self.is_server(seg.src) {
            Some(Side::Server)
        } else {
            None
        }
    }

    /// Feeds one captured segment at capture time `ts` (ns).
    pub fn handle_segment(&mut self, ts: u64, seg: &Segment<'_>) {
        if ts >= self.last_sweep + 1_000_000_000 {
            self.handle_timeout(ts);
        }
        let fwd = FlowKey {
            src: seg.src,
            dst: seg.dst,
        };
        let (key, side) = if self.sessions.contains_key(&fwd) {
            (fwd, Side::Client)
        } else if self.sessions.contains_key(&fwd.reversed()) {
            (fwd.reversed(), Side::Server)
        } else {
            // A new session starts only on a SYN or on data (stray ACKs, FINs and RSTs of sessions
            // already over must not resurrect them).
            if seg.rst || (!seg.syn && seg.payload.is_empty()) {
                self.stats.ignored += 1;
                return;
            }
            let Some(side) = self.classify_new(seg) else {
                self.stats.ignored += 1;
                return;
            };
            let key = if side == Side::Client {
                fwd
            } else {
                fwd.reversed()
            };
            if self.dead.contains_key(&key) && !(seg.syn && side == Side::Client) {
                self.dead.insert(key, ts);
                self.stats.ignored += 1;
                return;
            }
            self.dead.remove(&key);
            self.open(key, ts, seg.syn && side == Side::Client);
            (key, side)
        };
        // Port reuse: a fresh client SYN with another ISN on a session that already carried data.
        if side == Side::Client && seg.syn && seg.ack.is_none() {
            let s = &self.sessions[&key];
            if s.client_isn.is_some_and(|isn| isn != seg.seq)
                || (s.client_isn.is_none() && s.starts.data_seen())
            {
                self.close(key, ts, EndReason::Replaced);
                self.open(key, ts, true);
            }
        }
        self.handle_in_session(key, side, ts, seg);
    }

    fn open(&mut self, key: FlowKey, ts: u64, syn_seen: bool) {
        let id = self.next_id;
        self.next_id += 1;
        self.stats.sessions += 1;
        if !syn_seen {
            self.stats.without_syn += 1;
        }
        self.sessions.insert(
            key,
            Session {
                id,
                dirs: [Direction::default(), Direction::default()],
                last_ts: ts,
                starts: RequestBoundaries::new(),
                client_isn: None,
            },
        );
        self.events.push_back(StreamEvent::Open {
            id,
            key,
            ts,
            syn_seen,
        });
    }

    fn handle_in_session(&mut self, key: FlowKey, side: Side, ts: u64, seg: &Segment<'_>) {
        let max_ooo = self.config.max_out_of_order;
        let Some(s) = self.sessions.get_mut(&key) else {
            return;
        };
        s.last_ts = ts;
        let d = &mut s.dirs[idx(side)];
        d.seen = true;
        if seg.syn {
            if side == Side::Client && seg.ack.is_none() {
                s.client_isn = Some(seg.seq);
            }
            if d.order.is_none() {
                d.order = Some(ReorderQueue::new(seg.seq + 1));
            }
        }
        let data_seq = if seg.syn { seg.seq + 1 } else { seg.seq };
        if d.order.is_none() && (!seg.payload.is_empty() || seg.fin) {
            d.order = Some(ReorderQueue::new(data_seq));
        }
        let mut delivered: Vec<(Vec<u8>, Option<SeqNumber>)> = Vec::new();
        if let (Some(off), Some(q)) = (d.offset_of(data_seq), d.order.as_mut()) {
            if !seg.payload.is_empty() {
                match q.new_part(data_seq, seg.payload) {
                    Some([]) => self.stats.retransmitted += 1,
                    Some(new) => {
                        q.advance(new.len());
                        d.next_off += new.len() as u64;
                        delivered.push((new.to_vec(), seg.ack));
                    }
                    None => {
                        self.stats.out_of_order += 1;
                        let held = Held {
                            seq: data_seq,
                            ack: seg.ack,
                            fin: false,
                            data: seg.payload.to_vec(),
                        };
                        q.hold(held, &mut self.held_bytes);
                        d.gap_since.get_or_insert(ts);
                    }
                }
                // What became in order, overlaps trimmed, in sequence order.
                while let Some(mut h) = q.take_next_held(&mut self.held_bytes) {
                    let new = q.new_part(h.seq, &h.data).map_or(0, <[u8]>::len);
                    if new > 0 {
                        h.data.drain(..h.data.len() - new);
                        q.advance(new);
                        d.next_off += new as u64;
                        delivered.push((h.data, h.ack));
                    }
                }
                if q.nothing_held() {
                    d.gap_since = None;
                }
            }
            if seg.fin {
                d.fin_off
                    .get_or_insert((off + seg.payload.len() as i64).max(0) as u64);
            }
        }
        let hole_by_size = d.held_bytes() > max_ooo;
        let server_seen = s.dirs[1].seen;
        let id = s.id;
        for (bytes, ack) in delivered {
            let new_message = match side {
                Side::Client => s
                    .starts
                    .on_client_data(ack, &BoundaryRules::STREAM)
                    .is_start(),
                Side::Server => {
                    s.starts.on_server_data();
                    false
                }
            };
            self.events.push_back(StreamEvent::Data {
                id,
                side,
                ts,
                bytes: Bytes::from(bytes),
                new_message,
                server_seen,
            });
        }
        // FIN delivered once everything before it is in order.
        let d = &mut s.dirs[idx(side)];
        if !d.fin_done && d.fin_off.is_some_and(|f| f <= d.next_off) {
            d.fin_done = true;
            self.events.push_back(StreamEvent::Fin { id, side, ts });
        }
        // An ack beyond what we hold from the other side means the capture missed bytes; it is
        // a hole once later data waits behind the gap (an ack captured before the data it
        // acknowledges is only reordering).
        if let Some(ack) = seg.ack {
            let o = &mut s.dirs[idx(other(side))];
            if let Some(off) = o.offset_of(ack) {
                if off > 0 && off - (o.next_off as i64) < (1 << 30) {
                    let off = off as u64;
                    o.acked_off = Some(o.acked_off.map_or(off, |a| a.max(off)));
                }
            }
        }
        let hole = hole_by_size || s.dirs.iter().any(Direction::holed);
        if hole {
            self.close(key, ts, EndReason::Hole);
            return;
        }
        if seg.rst {
            self.close(key, ts, EndReason::Reset);
            return;
        }
        let s = &self.sessions[&key];
        let client_done = s.dirs[0].fin_done;
        let server_done = s.dirs[1].fin_done || !s.dirs[1].seen;
        if client_done && server_done {
            self.close(key, ts, EndReason::Fin);
        }
    }

    fn close(&mut self, key: FlowKey, ts: u64, reason: EndReason) {
        let Some(mut s) = self.sessions.remove(&key) else {
            return;
        };
        let partial =
            reason == EndReason::Hole || s.dirs.iter().any(|d| d.holds_any() || d.acked_missing());
        for q in s.dirs.iter_mut().filter_map(|d| d.order.as_mut()) {
            drop(q.take_all_held(&mut self.held_bytes));
        }
        if partial {
            self.stats.partial += 1;
        }
        if reason == EndReason::Hole {
            self.dead.insert(key, ts);
        }
        self.events.push_back(StreamEvent::Close {
            id: s.id,
            ts,
            reason,
            partial,
        });
    }

    /// Ends idle sessions and declares long-standing gaps holes, at capture time `ts` (ns).
    pub fn handle_timeout(&mut self, ts: u64) {
        self.last_sweep = ts;
        let idle = self.config.idle_timeout_ns;
        let hole = self.config.hole_timeout_ns;
        let mut ending: Vec<(FlowKey, EndReason, SessionId)> = Vec::new();
        for (k, s) in &self.sessions {
            if ts.saturating_sub(s.last_ts) >= idle {
                ending.push((*k, EndReason::Idle, s.id));
            } else if s
                .dirs
                .iter()
                .any(|d| d.gap_since.is_some_and(|g| ts.saturating_sub(g) >= hole))
            {
                ending.push((*k, EndReason::Hole, s.id));
            }
        }
        ending.sort_by_key(|e| e.2);
        for (k, r, _) in ending {
            self.close(k, ts, r);
        }
        self.dead.retain(|_, t| ts.saturating_sub(*t) < idle);
    }

    /// The input is over: ends every open session, in the order they were opened.
    pub fn finish(&mut self, ts: u64) {
        let mut keys: Vec<(SessionId, FlowKey)> =
            self.sessions.iter().map(|(k, s)| (s.id, *k)).collect();
        keys.sort();
        for (_, k) in keys {
            self.close(k, ts, EndReason::EndOfInput);
        }
        self.dead.clear();
    }
}

#[cfg(test)]
mod tests;
