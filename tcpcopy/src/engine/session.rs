//! One cloned connection: client stream in (as captured), target's headers in (as intercept
//! reports them), segments to the target out.
//!
//! Sans-IO like the rest of the engine: time comes in through [`Ctx::now`].

use super::packet::{self, OutSegment, Path, PathSums, Segment, TcpOpts, ACK, FIN, PSH, RST, SYN};
use super::{EngineConfig, EngineEvent, EngineStats};
use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};
use tcpclone::flow::FlowKey;
use tcpclone::seq::SeqNumber;

/// Shared, mutable context a session works in.
pub(crate) struct Ctx<'a> {
    pub cfg: &'a EngineConfig,
    pub stats: &'a mut EngineStats,
    pub events: &'a mut VecDeque<EngineEvent>,
    pub mem: &'a mut usize,
    pub ip_id: &'a mut u16,
    pub paths: &'a mut PathRtts,
    pub now: Instant,
}

/// Round-trip time towards each target address, learnt from every session's samples, so that a
/// new session starts with what earlier ones measured (Linux keeps the same per destination in
/// tcp_metrics). Without it every short connection would start from the fixed initial RTO:
/// too long when a SYN is lost, too short when the target is busy (each SYN sent twice).
///
/// A short list searched in order: it holds at most one entry per `-x` target address (a
/// handful), and it is touched on every RTT sample, where hashing an `IpAddr` with SipHash cost
/// more than the rest of the sample.
#[derive(Debug, Default)]
pub(crate) struct PathRtts(Vec<(IpAddr, PathRtt)>);

impl PathRtts {
    fn get(&self, to: IpAddr) -> Option<&PathRtt> {
        self.0.iter().find(|(a, _)| *a == to).map(|(_, p)| p)
    }
}

/// Smoothed RTT and its variation (RFC 6298 §2) towards one target address, in nanoseconds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PathRtt {
    srtt: u64,
    rttvar: u64,
}

impl Ctx<'_> {
    /// The RTO a new (or re-established) session towards `to` starts with: the path's when one
    /// was measured, else the configured initial RTO.
    pub fn initial_rto(&self, to: IpAddr) -> Duration {
        match self.paths.get(to) {
            Some(p) => rto_of(self.cfg, p.srtt, p.rttvar),
            None => self.cfg.initial_rto,
        }
    }

    /// Folds one session's RTT sample into the path's estimate (RFC 6298 §2, gains 1/8, 1/4).
    pub fn learn_rtt(&mut self, to: IpAddr, r: u64) {
        match self.paths.0.iter_mut().find(|(a, _)| *a == to) {
            Some((_, p)) => {
                p.rttvar = smooth(p.rttvar, 3, p.srtt.abs_diff(r), 4);
                p.srtt = smooth(p.srtt, 7, r, 8);
            }
            None => self.paths.0.push((
                to,
                PathRtt {
                    srtt: r,
                    rttvar: r / 2,
                },
            )),
        }
    }
}

/// RTO = SRTT + max(G, 4·RTTVAR), clamped to the configured bounds (RFC 6298 §2.3).
///
/// RTT arithmetic is done on nanoseconds in a `u64` (584 years): the same exact integer
/// arithmetic as on `Duration` (whose division also rounds down to the nanosecond), without
/// splitting seconds and nanoseconds at every step.
fn rto_of(cfg: &EngineConfig, srtt: u64, rttvar: u64) -> Duration {
    let g = 1_000_000; // clock granularity G: 1 ms
    Duration::from_nanos(srtt.saturating_add(rttvar.saturating_mul(4).max(g)))
        .clamp(cfg.min_rto, cfg.max_rto)
}

/// `(old · keep + new) / div`: the RFC 6298 gains (7/8, 3/4), rounding down.
fn smooth(old: u64, keep: u64, new: u64, div: u64) -> u64 {
    old.saturating_mul(keep).saturating_add(new) / div
}

/// A duration in nanoseconds, saturating.
fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Where a session stands towards the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    /// Our SYN is out (or about to be); captured data is held.
    SynSent,
    /// Handshake done; data flows.
    Established,
    /// A capture gap reset the clone; waiting for the next request boundary to re-establish.
    Resync,
    /// The target reset us; absorbing the client's segments until it ends.
    Dead,
    /// Both FINs exchanged; lingering to re-acknowledge a retransmitted target FIN.
    TimeWait,
}

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EndReason {
    Completed,
    ClientReset,
    TargetReset,
    Timeout,
    Handshake,
    Retransmits,
    Replaced,
    Gap,
}

/// A request boundary: client data whose ack moved since the previous client data.
#[derive(Debug, Clone, Copy)]
struct Boundary {
    seq: SeqNumber,
    /// Bytes production sent in answer to the previous request (the client's ack movement).
    expected: u32,
}

/// A captured segment held out of order.
#[derive(Debug)]
struct Held {
    seq: SeqNumber,
    ack: Option<SeqNumber>,
    fin: bool,
    data: Vec<u8>,
}

/// What one held segment costs beyond its bytes, counted against the memory budget: its map
/// entry (key and `Held`) and its share of the B-tree node, counted high. Thousands of tiny
/// segments cost far more than their payload.
const HELD_OVERHEAD: usize = std::mem::size_of::<(i32, Held)>() + 16;

/// Memory one held segment of `len` bytes accounts for.
fn held_cost(len: usize) -> usize {
    len + HELD_OVERHEAD
}

/// One cloned connection.
#[derive(Debug)]
pub(crate) struct Session {
    /// The captured flow (client → service).
    pub capture: FlowKey,
    /// Client address as the target sees it.
    pub client: SocketAddr,
    /// Target address.
    pub target: SocketAddr,
    pub state: State,
    /// The client's ISN (or the fake one), to tell a retransmitted SYN from port reuse.
    pub client_isn: SeqNumber,
    syn_opts: TcpOpts,
    iss: SeqNumber,
    // --- client stream as captured ---
    cap_nxt: SeqNumber,
    buf: VecDeque<u8>,
    buf_seq: SeqNumber,
    /// Segments held out of order, by their offset from `ooo_anchor` (sequence numbers wrap,
    /// offsets within the window do not): finding, inserting and taking the next in order cost
    /// O(log n) however many are held.
    ooo: BTreeMap<i32, Held>,
    /// `cap_nxt` when the first of the held segments arrived.
    ooo_anchor: SeqNumber,
    /// Memory the held segments account for ([`held_cost`]).
    ooo_bytes: usize,
    /// `merge_held` is running (it feeds segments back through `accept`, which calls it).
    merging: bool,
    boundaries: VecDeque<Boundary>,
    last_data_ack: Option<SeqNumber>,
    client_fin: Option<SeqNumber>,
    client_rst: bool,
    gap_at: Option<Instant>,
    // --- our send side ---
    snd_una: SeqNumber,
    snd_nxt: SeqNumber,
    snd_max: SeqNumber,
    snd_wnd: u32,
    snd_shift: u8,
    seg_max: usize,
    rto: Duration,
    /// Smoothed RTT and its variation in nanoseconds.
    srtt: Option<u64>,
    rttvar: u64,
    rtt_probe: Option<(SeqNumber, Instant)>,
    rto_at: Option<Instant>,
    retries: u8,
    dupacks: u8,
    fast_rexmit: bool,
    probe: bool,
    last_progress: Instant,
    // --- the target's side ---
    rcv_nxt: SeqNumber,
    target_fin: bool,
    ts_ok: bool,
    ts_recent: SeqNumber,
    ts_out: SeqNumber,
    ts_client: SeqNumber,
    ts_offset: u32,
    // --- conversation pacing ---
    resp_since: u64,
    last_resp_at: Option<Instant>,
    last_new_data_at: Instant,
    timing_seq: Option<SeqNumber>,
    req_sent_at: Option<Instant>,
    // --- pending output and bookkeeping ---
    pending_syn: bool,
    /// rcv_nxt of a SYN-ACK replaced by a newer one: the target's RST at it is not for us.
    abandoned_rcv: Option<SeqNumber>,
    /// Handshakes done again after a RST that came before any data was acked.
    redone_handshakes: u8,
    pending_ack: bool,
    pending_rst: [Option<SeqNumber>; 2],
    pub last_activity: Instant,
    linger_until: Option<Instant>,
    /// Set when the session is over; the engine removes it once its output is flushed.
    pub end: Option<EndReason>,
    /// The deadline currently scheduled in the engine's timer heap.
    pub timer_at: Option<Instant>,
    /// In the engine's ready queue.
    pub queued: bool,
    /// Checksum sums of the fixed header words towards the target (`None`: address families
    /// differ, nothing can be sent; the engine never pairs them).
    sums: Option<PathSums>,
    span: tracing::Span,
}

/// Largest payload per segment given the MTU, MSS limits and option overhead.
fn seg_limit(cfg: &EngineConfig, target_mss: Option<u16>, v6: bool, ts: bool) -> usize {
    let ip = if v6 { 40 } else { 20 };
    let opt = if ts { 12 } else { 0 };
    let by_mtu = usize::from(cfg.mtu).saturating_sub(ip + 20 + opt);
    let mut lim = by_mtu;
    if let Some(m) = cfg.mss {
        lim = lim.min(usize::from(m).saturating_sub(opt));
    }
    // RFC 9293 §3.7.1: without an MSS option assume 536 (IPv4) / 1220 (IPv6).
    let tm = target_mss.map_or(if v6 { 1220 } else { 536 }, usize::from);
    lim.min(tm.saturating_sub(opt)).max(64)
}

impl Session {
    /// A session for a captured SYN (`fake == false`) or for the first data segment of a
    /// connection already open when we started (`fake == true`: SYN at seq − 1).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        cx: &mut Ctx<'_>,
        capture: FlowKey,
        client: SocketAddr,
        target: SocketAddr,
        seg: &Segment<'_>,
        fake: bool,
        prev_ts: Option<SeqNumber>,
    ) -> Session {
        let now = cx.now;
        let iss = if fake { seg.seq - 1 } else { seg.seq };
        let v6 = target.is_ipv6();
        let ip_len = if v6 { 40 } else { 20 };
        let mss_cap = u16::try_from(usize::from(cx.cfg.mtu).saturating_sub(ip_len + 20).max(536))
            .unwrap_or(1460);
        let mss_lim = cx.cfg.mss.map_or(mss_cap, |m| m.min(mss_cap));
        let syn_opts = if fake {
            TcpOpts {
                mss: Some(mss_lim),
                wscale: Some(7),
                sack_perm: false,
                ts: seg.opts.ts.map(|(v, _)| (v, 0)),
            }
        } else {
            TcpOpts {
                mss: Some(seg.opts.mss.map_or(mss_lim, |m| m.min(mss_lim))),
                wscale: seg.opts.wscale,
                sack_perm: seg.opts.sack_perm,
                ts: seg.opts.ts.map(|(v, _)| (v, 0)),
            }
        };
        let client_ts = seg.opts.ts.map_or(0, |(v, _)| v);
        // Keep TSval rising per 4-tuple across a replaced session (RFC 7323 §5.5 / TIME_WAIT).
        let ts_offset = match prev_ts {
            Some(p) if SeqNumber(client_ts) <= p => (p + 1).diff(SeqNumber(client_ts)) as u32,
            _ => 0,
        };
        let ts0 = SeqNumber(client_ts) + ts_offset;
        let span = tracing::debug_span!("session", client = %client, target = %target);
        let mut s = Session {
            capture,
            client,
            target,
            state: State::SynSent,
            client_isn: iss,
            syn_opts,
            iss,
            cap_nxt: iss + 1,
            buf: VecDeque::new(),
            buf_seq: iss + 1,
            ooo: BTreeMap::new(),
            ooo_anchor: iss + 1,
            ooo_bytes: 0,
            merging: false,
            boundaries: VecDeque::new(),
            last_data_ack: None,
            client_fin: None,
            client_rst: false,
            gap_at: None,
            snd_una: iss,
            snd_nxt: iss,
            snd_max: iss,
            snd_wnd: 0,
            snd_shift: 0,
            seg_max: 536,
            rto: cx.initial_rto(target.ip()),
            srtt: None,
            rttvar: 0,
            rtt_probe: None,
            rto_at: None,
            retries: 0,
            dupacks: 0,
            fast_rexmit: false,
            probe: false,
            last_progress: now,
            rcv_nxt: SeqNumber(0),
            target_fin: false,
            ts_ok: false,
            ts_recent: SeqNumber(0),
            ts_out: ts0,
            ts_client: ts0,
            ts_offset,
            resp_since: 0,
            last_resp_at: None,
            last_new_data_at: now,
            timing_seq: None,
            req_sent_at: None,
            pending_syn: true,
            abandoned_rcv: None,
            redone_handshakes: 0,
            pending_ack: false,
            pending_rst: [None, None],
            last_activity: now,
            linger_until: None,
            end: None,
            timer_at: None,
            queued: false,
            sums: PathSums::new(client.ip(), target.ip()),
            span,
        };
        tracing::trace!(parent: &s.span, fake, iss = iss.value(), "new session");
        if fake {
            s.on_captured(cx, seg);
        }
        s
    }

    /// Enters the session's span for one input; nothing to clone or enter when it is disabled
    /// (the usual case outside debugging: `debug_span!` under an `info` filter).
    fn enter_span(&self) -> Option<tracing::span::EnteredSpan> {
        (!self.span.is_disabled()).then(|| self.span.clone().entered())
    }

    /// Bytes this session holds in buffers (for the memory budget): the stream buffer's
    /// allocated capacity, not just the bytes in it, and the out-of-order segments.
    pub fn buffered(&self) -> usize {
        self.buf.capacity() + self.ooo_bytes
    }

    /// Our last TSval, for a session that replaces this one on the same 4-tuple.
    pub fn last_ts(&self) -> SeqNumber {
        self.ts_out
    }

    /// Captured client data not yet acknowledged by the target, or sent and not yet answered with
    /// the target's FIN: a new SYN on this client port must not reset this clone, it finishes
    /// on its own 4-tuple.
    pub fn still_delivering(&self) -> bool {
        self.end.is_none()
            && matches!(self.state, State::SynSent | State::Established)
            && (self.cap_nxt > self.snd_una.max(self.iss + 1)
                || self.state == State::Established
                    && self.cap_nxt > self.iss + 1
                    && !self.target_fin)
    }

    /// Hands the reset of the old connection over to its replacement (port reuse).
    pub fn inherit_reset(&mut self, old: &Session) {
        if matches!(old.state, State::SynSent | State::Established) && old.end.is_none() {
            self.pending_rst = old.rst_seqs();
        }
    }

    fn rst_seqs(&self) -> [Option<SeqNumber>; 2] {
        if self.state == State::SynSent {
            return [Some(self.iss + 1), None];
        }
        let second = (self.snd_max != self.snd_una).then_some(self.snd_max);
        [Some(self.snd_una), second]
    }

    pub fn finish(&mut self, cx: &mut Ctx<'_>, reason: EndReason) {
        if self.end.is_some() {
            return;
        }
        let st = &mut *cx.stats;
        match reason {
            EndReason::Completed => st.sessions_completed += 1,
            EndReason::ClientReset => st.sessions_client_reset += 1,
            EndReason::TargetReset => st.aborted_target_reset += 1,
            EndReason::Timeout => st.aborted_timeout += 1,
            EndReason::Handshake => st.aborted_handshake += 1,
            EndReason::Retransmits => st.aborted_retransmits += 1,
            EndReason::Replaced => st.aborted_replaced += 1,
            EndReason::Gap => st.aborted_gap += 1,
        }
        tracing::debug!(parent: &self.span, ?reason, "session ends");
        self.end = Some(reason);
        self.fast_rexmit = false;
        self.pending_syn = false;
        self.rto_at = None;
        self.release_buffers(cx);
    }

    fn abort(&mut self, cx: &mut Ctx<'_>, reason: EndReason) {
        if matches!(self.state, State::SynSent | State::Established) {
            self.pending_rst = self.rst_seqs();
            cx.stats.resets_sent += 1;
        }
        self.finish(cx, reason);
    }

    fn release_buffers(&mut self, cx: &mut Ctx<'_>) {
        *cx.mem = cx.mem.saturating_sub(self.buffered());
        self.buf = VecDeque::new();
        self.ooo = BTreeMap::new();
        self.ooo_bytes = 0;
        self.boundaries.clear();
    }

    fn note_client_ts(&mut self, seg: &Segment<'_>) {
        if let Some((v, _)) = seg.opts.ts {
            let t = SeqNumber(v) + self.ts_offset;
            self.ts_client = self.ts_client.max(t);
        }
    }

    // ------------------------------------------------------------------ client side

    /// A captured client segment of this session (not a port-reusing SYN: the engine handles those).
    pub fn on_captured(&mut self, cx: &mut Ctx<'_>, seg: &Segment<'_>) {
        let _g = self.enter_span();
        self.last_activity = cx.now;
        self.note_client_ts(seg);
        if seg.has(SYN) {
            return; // a retransmitted SYN: our own handshake retransmits
        }
        let ack = seg.has(ACK).then_some(seg.ack);
        match self.state {
            State::Dead | State::TimeWait => {
                if self.state == State::Dead && (seg.has(FIN) || seg.has(RST)) {
                    self.finish(cx, EndReason::TargetReset);
                }
            }
            State::Resync => {
                if seg.has(RST) || seg.has(FIN) && seg.payload.is_empty() {
                    self.finish(cx, EndReason::Gap);
                    return;
                }
                self.resync_feed(cx, seg.seq, ack, seg.payload, seg.has(FIN));
            }
            State::SynSent | State::Established => {
                if seg.has(RST) {
                    self.client_rst = true;
                    self.check_client_rst(cx);
                    return;
                }
                if ack.is_some()
                    && seg.payload.is_empty()
                    && !seg.has(FIN)
                    && self.last_data_ack.is_none()
                {
                    // The handshake's third ACK: the handshake is "request 0" for pacing (a server
                    // greeting moves the next data's ack).
                    self.last_data_ack = ack;
                }
                if !seg.payload.is_empty() || seg.has(FIN) {
                    self.accept(cx, seg.seq, ack, seg.payload, seg.has(FIN));
                }
                self.open_gates(cx);
            }
        }
    }

    fn accept(
        &mut self,
        cx: &mut Ctx<'_>,
        seq: SeqNumber,
        ack: Option<SeqNumber>,
        data: &[u8],
        fin: bool,
    ) {
        if self.end.is_some() {
            return;
        }
        let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
        let end = seq + len;
        if seq > self.cap_nxt {
            // A hole: hold the segment; a request boundary beyond the hole proves a missed segment.
            let cost = held_cost(data.len());
            if self.ooo_bytes + cost > cx.cfg.max_session_buffer || !self.fits(cx, cost) {
                cx.stats.buffer_overflows += 1;
                self.gap(cx);
                return;
            }
            self.hold(cx, seq, ack, data, fin);
            // A request boundary beyond the hole proves a missed segment (production answered
            // the request the hole is in); allow only a short reordering window then.
            let proven = matches!((ack, self.last_data_ack), (Some(a), Some(l)) if a > l && !data.is_empty());
            let wait = if proven {
                cx.cfg.reorder_window
            } else {
                cx.cfg.gap_timeout
            };
            let at = cx.now + wait;
            self.gap_at = Some(self.gap_at.map_or(at, |g| g.min(at)));
            return;
        }
        if end >= self.cap_nxt && !data.is_empty() {
            let skip = self.cap_nxt.diff(seq) as usize;
            let new = &data[skip.min(data.len())..];
            if !new.is_empty() {
                let need = self.buf.len() + new.len();
                let cap = self.buf.capacity();
                // Grow by doubling (amortised), never past the per-session cap; what is
                // allocated is what counts against the budget.
                let grow = if need <= cap {
                    0
                } else {
                    need.max(cap * 2)
                        .min(cx.cfg.max_session_buffer)
                        .saturating_sub(cap)
                };
                if need > cx.cfg.max_session_buffer || !self.fits(cx, grow) {
                    cx.stats.buffer_overflows += 1;
                    self.gap(cx);
                    return;
                }
                if grow > 0 {
                    self.buf.reserve_exact(cap + grow - self.buf.len());
                    *cx.mem += self.buf.capacity() - cap;
                }
                if let Some(a) = ack {
                    self.note_request(cx, a);
                }
                self.buf.extend(new);
                self.cap_nxt = self.cap_nxt + new.len() as u32;
            }
        }
        if fin && end == self.cap_nxt && self.client_fin.is_none() {
            if data.is_empty() {
                if let Some(a) = ack {
                    self.note_request(cx, a);
                }
            }
            self.client_fin = Some(self.cap_nxt);
        }
        self.merge_held(cx);
    }

    /// Records a request boundary at `cap_nxt` when the client's ack moved.
    fn note_request(&mut self, cx: &mut Ctx<'_>, ack: SeqNumber) {
        match self.last_data_ack {
            Some(l) if ack > l => {
                if !cx.cfg.no_wait {
                    let expected = ack.diff(l) as u32;
                    self.boundaries.push_back(Boundary {
                        seq: self.cap_nxt,
                        expected,
                    });
                } else if self.timing_seq.is_none() {
                    self.timing_seq = Some(self.cap_nxt);
                }
                self.last_data_ack = Some(ack);
            }
            Some(_) => {}
            None => self.last_data_ack = Some(ack),
        }
    }

    fn fits(&self, cx: &Ctx<'_>, n: usize) -> bool {
        cx.cfg.max_memory == 0 || *cx.mem + n <= cx.cfg.max_memory
    }

    fn hold(
        &mut self,
        cx: &mut Ctx<'_>,
        seq: SeqNumber,
        ack: Option<SeqNumber>,
        data: &[u8],
        fin: bool,
    ) {
        if self.ooo.is_empty() {
            self.ooo_anchor = self.cap_nxt;
        }
        let key = seq.diff(self.ooo_anchor);
        if let Some(h) = self.ooo.get(&key) {
            if h.data.len() >= data.len() {
                return; // a retransmission of what is held
            }
            // A longer segment from the same place supersedes the shorter one.
            let old = held_cost(h.data.len());
            self.ooo_bytes -= old;
            *cx.mem = cx.mem.saturating_sub(old);
        }
        let cost = held_cost(data.len());
        self.ooo_bytes += cost;
        *cx.mem += cost;
        self.ooo.insert(
            key,
            Held {
                seq,
                ack,
                fin,
                data: data.to_vec(),
            },
        );
    }

    fn merge_held(&mut self, cx: &mut Ctx<'_>) {
        // `accept` calls back here: the outer call does the work, in a loop, so that a long
        // run of held segments is not a recursion as deep as the run.
        if self.merging {
            return;
        }
        self.merging = true;
        // The held segment with the lowest sequence number is the only candidate.
        while let Some(first) = self.ooo.first_entry() {
            if first.get().seq > self.cap_nxt {
                break;
            }
            let h = first.remove();
            let cost = held_cost(h.data.len());
            self.ooo_bytes -= cost;
            *cx.mem = cx.mem.saturating_sub(cost);
            self.accept(cx, h.seq, h.ack, &h.data, h.fin);
            if self.state == State::Resync || self.end.is_some() {
                self.merging = false;
                return;
            }
        }
        self.merging = false;
        if self.ooo.is_empty() {
            self.gap_at = None;
        }
    }

    /// A segment is missing from the capture: reset the clone and wait for the next request.
    fn gap(&mut self, cx: &mut Ctx<'_>) {
        cx.stats.gaps += 1;
        tracing::debug!(parent: &self.span, hole = self.cap_nxt.value(), "capture gap: resetting the clone");
        if matches!(self.state, State::SynSent | State::Established) {
            self.pending_rst = self.rst_seqs();
            cx.stats.resets_sent += 1;
        }
        self.state = State::Resync;
        self.pending_syn = false;
        self.pending_ack = false;
        self.fast_rexmit = false;
        self.rto_at = None;
        self.gap_at = None;
        *cx.mem = cx.mem.saturating_sub(self.buf.capacity());
        self.buf = VecDeque::new();
        self.boundaries.clear();
        self.client_fin = None;
        let held = std::mem::take(&mut self.ooo);
        *cx.mem = cx.mem.saturating_sub(self.ooo_bytes);
        self.ooo_bytes = 0;
        // In sequence order: the map is.
        for h in held.into_values() {
            if self.state == State::Resync {
                self.resync_feed(cx, h.seq, h.ack, &h.data, h.fin);
            } else if self.end.is_none() {
                self.accept(cx, h.seq, h.ack, &h.data, h.fin);
            }
        }
    }

    /// Follows the client stream after a gap until a request boundary, then re-establishes.
    fn resync_feed(
        &mut self,
        cx: &mut Ctx<'_>,
        seq: SeqNumber,
        ack: Option<SeqNumber>,
        data: &[u8],
        fin: bool,
    ) {
        if data.is_empty() {
            if fin {
                self.finish(cx, EndReason::Gap);
            }
            return;
        }
        let end = seq + data.len() as u32;
        if seq == self.cap_nxt {
            if let (Some(a), Some(l)) = (ack, self.last_data_ack) {
                if a > l {
                    self.restart(cx, seq, ack, data, fin);
                    return;
                }
            }
        } else if seq < self.cap_nxt && end <= self.cap_nxt {
            return;
        }
        // Same request continuing, or a new run whose predecessor we did not see.
        self.cap_nxt = end;
        if let Some(a) = ack {
            self.last_data_ack = Some(self.last_data_ack.map_or(a, |l| l.max(a)));
        }
        if fin {
            self.finish(cx, EndReason::Gap);
        }
    }

    fn restart(
        &mut self,
        cx: &mut Ctx<'_>,
        seq: SeqNumber,
        ack: Option<SeqNumber>,
        data: &[u8],
        fin: bool,
    ) {
        cx.stats.reestablished += 1;
        tracing::debug!(parent: &self.span, seq = seq.value(), "re-establishing after a gap");
        let iss = seq - 1;
        self.iss = iss;
        self.state = State::SynSent;
        self.cap_nxt = seq;
        self.buf_seq = seq;
        self.snd_una = iss;
        self.snd_nxt = iss;
        self.snd_max = iss;
        self.snd_wnd = 0;
        self.rto = cx.initial_rto(self.target.ip());
        self.rtt_probe = None;
        self.retries = 0;
        self.dupacks = 0;
        self.rcv_nxt = SeqNumber(0);
        self.target_fin = false;
        self.ts_ok = false;
        self.last_data_ack = None;
        self.resp_since = 0;
        self.last_resp_at = None;
        self.req_sent_at = None;
        self.timing_seq = None;
        self.pending_syn = true;
        self.last_progress = cx.now;
        self.accept(cx, seq, ack, data, fin);
    }

    fn check_client_rst(&mut self, cx: &mut Ctx<'_>) {
        if self.client_rst && self.snd_una >= self.cap_nxt {
            self.abort(cx, EndReason::ClientReset);
        }
    }

    // ------------------------------------------------------------------ target side

    /// The IP+TCP headers of one target segment (payload length from the IP header).
    pub fn on_response(&mut self, cx: &mut Ctx<'_>, seg: &Segment<'_>) {
        let _g = self.enter_span();
        self.last_activity = cx.now;
        if let Some((v, _)) = seg.opts.ts {
            self.ts_recent = self.ts_recent.max(SeqNumber(v));
        }
        match self.state {
            State::SynSent => {
                if seg.has(SYN) && seg.has(ACK) && seg.ack == self.iss + 1 && !seg.has(RST) {
                    self.establish(cx, seg);
                } else if seg.has(RST) {
                    if seg.has(ACK) && seg.ack == self.iss + 1 {
                        cx.stats.handshakes_refused += 1;
                        self.state = State::Dead;
                        self.rto_at = None;
                        self.pending_syn = false;
                        if self.client_fin.is_some() || self.client_rst {
                            self.finish(cx, EndReason::TargetReset);
                        }
                    }
                } else if seg.has(ACK) && !seg.has(SYN) {
                    // A stale connection on this 4-tuple answers our SYN: reset it exactly
                    // (RFC 5961 §3 wants the RST at the receiver's rcv_nxt), then our SYN goes again.
                    self.pending_rst = [Some(seg.ack), None];
                    cx.stats.resets_sent += 1;
                }
            }
            State::Established => self.established_response(cx, seg),
            State::Resync => {
                if seg.has(ACK) && !seg.has(RST) && !seg.has(SYN) {
                    self.pending_rst = [Some(seg.ack), None];
                }
            }
            State::Dead => {}
            State::TimeWait => {
                if seg.has(FIN) {
                    self.pending_ack = true;
                }
            }
        }
    }

    fn establish(&mut self, cx: &mut Ctx<'_>, seg: &Segment<'_>) {
        let now = cx.now;
        self.state = State::Established;
        cx.stats.handshakes += 1;
        self.rcv_nxt = seg.seq + 1;
        self.snd_una = self.iss + 1;
        self.snd_nxt = self.snd_nxt.max(self.snd_una);
        self.snd_max = self.snd_max.max(self.snd_una);
        let ws_ok = self.syn_opts.wscale.is_some() && seg.opts.wscale.is_some();
        self.snd_shift = if ws_ok {
            seg.opts.wscale.unwrap_or(0)
        } else {
            0
        };
        self.snd_wnd = u32::from(seg.window); // RFC 7323 §2.2: never scaled in a SYN
        self.ts_ok = self.syn_opts.ts.is_some() && seg.opts.ts.is_some();
        self.seg_max = seg_limit(cx.cfg, seg.opts.mss, self.target.is_ipv6(), self.ts_ok);
        if self.retries == 0 {
            self.rtt_sample(cx, now.saturating_duration_since(self.last_new_data_at));
        }
        self.retries = 0;
        self.rto_at = None;
        self.pending_ack = true;
        self.last_progress = now;
        self.last_new_data_at = now;
        self.resp_since = 0;
        self.last_resp_at = None;
        if self.timing_seq.is_none() {
            self.timing_seq = Some(self.iss + 1);
        }
        tracing::trace!(parent: &self.span, "established");
        self.open_gates(cx);
    }

    fn established_response(&mut self, cx: &mut Ctx<'_>, seg: &Segment<'_>) {
        let now = cx.now;
        // The target answered our retransmitted SYN with a new ISN: its first request socket is
        // gone and only the newest SYN-ACK is live (an ACK of the old one gets a RST). While the
        // target has acknowledged none of our data, adopt it and resend with the new ack.
        if seg.has(SYN)
            && seg.has(ACK)
            && !seg.has(RST)
            && seg.ack == self.iss + 1
            && seg.seq + 1 != self.rcv_nxt
            && self.snd_una == self.iss + 1
            && !self.target_fin
        {
            cx.stats.syn_ack_adopted += 1;
            self.abandoned_rcv = Some(self.rcv_nxt);
            self.rcv_nxt = seg.seq + 1;
            self.snd_nxt = self.snd_una;
            self.dupacks = 0;
            self.pending_ack = true;
            return;
        }
        // A late segment of an earlier connection on this 4-tuple (port reuse, re-establishment)
        // carries sequence numbers far from ours: never let it move rcv_nxt or end the session.
        let d = seg.seq.diff(self.rcv_nxt);
        if !(-(1 << 24)..(1 << 26)).contains(&d) {
            cx.stats.responses_stale += 1;
            return;
        }
        if seg.has(RST) && self.abandoned_rcv == Some(seg.seq) {
            // The target's answer to our ACK of the SYN-ACK we abandoned.
            cx.stats.responses_stale += 1;
            return;
        }
        if seg.has(RST)
            && seg.seq == self.rcv_nxt
            && self.snd_una == self.iss + 1
            && self.snd_max > self.iss + 1
            && !self.target_fin
            && self.retries == 0
            && self.redone_handshakes < 2
        {
            // Reset before any of our data was acked: the target dropped the request socket our
            // ACK was for (a newer SYN-ACK of a retransmitted SYN is on its way or lost). Do the
            // handshake again with the same ISN instead of losing the request. Only as the answer
            // to our first transmission: after a retransmission timeout the target may have
            // answered (reports lost) and since dropped the connection, and a new handshake
            // would deliver the request twice.
            cx.stats.handshakes_redone += 1;
            self.redone_handshakes += 1;
            self.state = State::SynSent;
            self.snd_nxt = self.iss;
            self.snd_una = self.iss;
            self.dupacks = 0;
            self.fast_rexmit = false;
            self.rto_at = None;
            self.pending_syn = true;
            return;
        }
        if seg.has(RST) {
            tracing::debug!(parent: &self.span, "target reset");
            self.state = State::Dead;
            self.rto_at = None;
            self.fast_rexmit = false;
            self.release_buffers(cx);
            if self.client_fin.is_some() || self.client_rst {
                self.finish(cx, EndReason::TargetReset);
            } else {
                cx.stats.target_resets += 1;
            }
            return;
        }
        if seg.has(SYN) {
            self.pending_ack = true; // our third ACK was lost
            return;
        }
        if seg.has(ACK) {
            let wnd = u32::from(seg.window) << self.snd_shift;
            if seg.ack > self.snd_una && seg.ack <= self.snd_max {
                self.on_ack_advance(cx, seg.ack);
            } else if seg.ack == self.snd_una
                && seg.payload_len == 0
                && !seg.has(FIN)
                && self.snd_max > self.snd_una
                && wnd == self.snd_wnd
            {
                self.dupacks = self.dupacks.saturating_add(1);
                if self.dupacks == 3 {
                    self.fast_rexmit = true;
                    cx.stats.fast_retransmits += 1;
                    self.rtt_probe = None;
                }
            }
            self.snd_wnd = wnd;
            if wnd > 0 {
                self.probe = false;
            } else if self.rto_at.is_none()
                && self.snd_una == self.snd_max
                && self.cap_nxt > self.snd_nxt
            {
                // Persist timer (RFC 9293 §3.8.6.1): a lost window update must not stall us.
                self.rto_at = Some(now + self.rto);
            }
        }
        let len = seg.payload_len;
        if len > 0 {
            let end = seg.seq + len;
            if end > self.rcv_nxt {
                let from = seg.seq.max(self.rcv_nxt);
                let new = u64::from(end.diff(from) as u32);
                self.rcv_nxt = end;
                self.resp_since += new;
                cx.stats.response_bytes += new;
                self.last_resp_at = Some(now);
                self.last_progress = now;
                if let Some(sent) = self.req_sent_at.take() {
                    cx.stats.record_latency(now.saturating_duration_since(sent));
                    if cx.cfg.request_timing_events {
                        cx.events.push_back(EngineEvent::RequestTiming {
                            client: self.client,
                            target: self.target,
                            sent,
                            answered: now,
                        });
                    }
                }
            }
            self.pending_ack = true;
        }
        if seg.has(FIN) {
            let fin_end = seg.seq + len + 1;
            if fin_end > self.rcv_nxt {
                self.rcv_nxt = fin_end;
                // Production's FIN moved the client's ack by one too.
                self.resp_since += 1;
                self.last_resp_at = Some(now);
            }
            self.target_fin = true;
            self.pending_ack = true;
        }
        self.check_done(cx);
        self.check_client_rst(cx);
        self.open_gates(cx);
    }

    fn on_ack_advance(&mut self, cx: &mut Ctx<'_>, ack: SeqNumber) {
        let now = cx.now;
        let drop = ack.diff(self.buf_seq).clamp(0, self.buf.len() as i32) as usize;
        if drop > 0 {
            self.buf.drain(..drop);
            self.buf_seq = self.buf_seq + drop as u32;
            cx.stats.bytes_acked += drop as u64;
            // Give back what a past burst left allocated: all of it once empty, down to twice
            // the bytes held once under a quarter of it is used.
            let cap = self.buf.capacity();
            if self.buf.is_empty() && cap > 16 * 1024 {
                self.buf = VecDeque::new();
            } else if cap > 64 * 1024 && self.buf.len() < cap / 4 {
                self.buf.shrink_to(self.buf.len() * 2);
            }
            *cx.mem = cx.mem.saturating_sub(cap - self.buf.capacity());
        }
        self.snd_una = ack;
        if self.snd_nxt < ack {
            self.snd_nxt = ack;
        }
        if let Some((probe_end, at)) = self.rtt_probe {
            if ack >= probe_end {
                self.rtt_probe = None;
                if self.retries == 0 {
                    self.rtt_sample(cx, now.saturating_duration_since(at));
                }
            }
        }
        self.retries = 0;
        self.dupacks = 0;
        self.fast_rexmit = false;
        self.last_progress = now;
        self.rto_at = (self.snd_una < self.snd_max).then(|| now + self.rto);
    }

    /// RFC 6298 §2 RTT estimation.
    fn rtt_sample(&mut self, cx: &mut Ctx<'_>, r: Duration) {
        let r = nanos(r);
        match self.srtt {
            None => {
                self.srtt = Some(r);
                self.rttvar = r / 2;
            }
            Some(s) => {
                self.rttvar = smooth(self.rttvar, 3, s.abs_diff(r), 4);
                self.srtt = Some(smooth(s, 7, r, 8));
            }
        }
        let s = self.srtt.unwrap_or(r);
        self.rto = rto_of(cx.cfg, s, self.rttvar);
        cx.learn_rtt(self.target.ip(), r);
    }

    fn check_done(&mut self, cx: &mut Ctx<'_>) {
        let fin_acked = self.client_fin.is_some_and(|f| self.snd_una > f);
        if self.target_fin && fin_acked && self.state == State::Established {
            self.state = State::TimeWait;
            self.rto_at = None;
            self.linger_until = Some(cx.now + cx.cfg.linger);
            self.release_buffers(cx);
        }
    }

    // ------------------------------------------------------------------ pacing

    fn gate_open(&self, cx: &Ctx<'_>, b: &Boundary) -> bool {
        let now = cx.now;
        cx.cfg.no_wait
            || self.target_fin
            || self.resp_since >= u64::from(b.expected)
            || (self.resp_since > 0
                && self
                    .last_resp_at
                    .is_some_and(|t| now >= t + cx.cfg.idle_gap))
            || now >= self.last_new_data_at + cx.cfg.response_timeout
    }

    fn open_gates(&mut self, cx: &mut Ctx<'_>) {
        if self.state != State::Established || self.end.is_some() {
            return;
        }
        while let Some(b) = self.boundaries.front().copied() {
            if self.snd_max != b.seq || !self.gate_open(cx, &b) {
                break;
            }
            if self.resp_since == 0 && !cx.cfg.no_wait {
                cx.stats.pacing_timeouts += 1;
            }
            self.boundaries.pop_front();
            self.resp_since = 0;
            self.last_resp_at = None;
            self.timing_seq = Some(b.seq);
        }
    }

    fn pacing_deadline(&self, cfg: &EngineConfig) -> Option<Instant> {
        let b = self.boundaries.front()?;
        if self.state != State::Established || self.snd_max != b.seq {
            return None;
        }
        let timeout = self.last_new_data_at + cfg.response_timeout;
        match self.last_resp_at {
            Some(t) if self.resp_since > 0 => Some(timeout.min(t + cfg.idle_gap)),
            _ => Some(timeout),
        }
    }

    // ------------------------------------------------------------------ timers

    /// The earliest instant this session needs `on_timeout`.
    pub fn next_deadline(&self, cfg: &EngineConfig) -> Option<Instant> {
        let mut d = self.last_activity + cfg.session_timeout;
        let mut take = |t: Option<Instant>| {
            if let Some(t) = t {
                d = d.min(t);
            }
        };
        if self.end.is_some() {
            return None; // only flushing its last segments
        }
        take(self.linger_until);
        take(self.rto_at);
        take(self.gap_at);
        if self.half_closed_idle() {
            take(Some(self.last_activity + cfg.linger));
        }
        take(self.pacing_deadline(cfg));
        if self.outstanding() {
            take(Some(self.last_progress + cfg.keepalive_timeout));
        }
        Some(d)
    }

    /// The target closed, everything we had is delivered, and the client has not closed yet.
    fn half_closed_idle(&self) -> bool {
        self.state == State::Established
            && self.target_fin
            && self.client_fin.is_none()
            && !self.client_rst
            && self.snd_una == self.cap_nxt
            && self.boundaries.is_empty()
    }

    fn outstanding(&self) -> bool {
        match self.state {
            State::SynSent => true,
            State::Established => self.snd_una < self.snd_max || self.snd_max < self.cap_nxt,
            _ => false,
        }
    }

    /// Runs whatever is due at `cx.now`.
    pub fn on_timeout(&mut self, cx: &mut Ctx<'_>) {
        let _g = self.enter_span();
        let now = cx.now;
        if self.linger_until.is_some_and(|t| now >= t) {
            self.finish(cx, EndReason::Completed);
            return;
        }
        if self.end.is_some() {
            return;
        }
        if now >= self.last_activity + cx.cfg.session_timeout {
            self.abort(cx, EndReason::Timeout);
            return;
        }
        if self.outstanding() && now >= self.last_progress + cx.cfg.keepalive_timeout {
            self.abort(cx, EndReason::Timeout);
            return;
        }
        if self.half_closed_idle() && now >= self.last_activity + cx.cfg.linger {
            // The target closed and the client's FIN never showed up (missed by the capture, or
            // the client lingers): close our side so the target does not sit in FIN_WAIT_2.
            tracing::debug!(parent: &self.span, "closing a half-closed clone");
            cx.stats.half_closed_timeouts += 1;
            self.client_fin = Some(self.cap_nxt);
            return;
        }
        if self.gap_at.is_some_and(|t| now >= t) {
            self.gap(cx);
            return;
        }
        if self.rto_at.is_some_and(|t| now >= t) {
            self.rto_at = None;
            self.retries = self.retries.saturating_add(1);
            self.rto = (self.rto * 2).min(cx.cfg.max_rto);
            self.rtt_probe = None;
            match self.state {
                State::SynSent => {
                    if self.retries > cx.cfg.max_syn_retries {
                        self.abort(cx, EndReason::Handshake);
                        return;
                    }
                    cx.stats.rto_expirations += 1;
                    self.pending_syn = true;
                }
                State::Established => {
                    if self.retries > cx.cfg.max_retransmits {
                        self.abort(cx, EndReason::Retransmits);
                        return;
                    }
                    if self.snd_una < self.snd_max {
                        cx.stats.rto_expirations += 1;
                        self.snd_nxt = self.snd_una; // go back N (RFC 6298 §5.4)
                        self.dupacks = 0;
                    } else if self.snd_wnd == 0 {
                        self.probe = true; // zero-window probe (RFC 9293 §3.8.6.1)
                    }
                }
                _ => {}
            }
        }
        self.open_gates(cx);
    }

    // ------------------------------------------------------------------ output

    fn data_limit(&self) -> SeqNumber {
        let mut lim = self.cap_nxt;
        if let Some(b) = self.boundaries.front() {
            lim = lim.min(b.seq);
        }
        let wnd = if self.probe && self.snd_una == self.snd_max {
            self.snd_wnd.max(1)
        } else {
            self.snd_wnd
        };
        lim.min(self.snd_una + wnd)
    }

    fn fin_ready(&self) -> bool {
        match self.client_fin {
            Some(f) => {
                self.snd_nxt == f
                    && self.cap_nxt == f
                    && self.boundaries.front().is_none_or(|b| b.seq != f)
                    && self.snd_una + self.snd_wnd.max(1) >= f
            }
            None => false,
        }
    }

    /// True when `transmit` has something to write.
    pub fn wants_transmit(&self) -> bool {
        if self.pending_rst[0].is_some() || self.pending_ack {
            return true;
        }
        if self.end.is_some() {
            return false;
        }
        if self.pending_syn {
            return true;
        }
        self.state == State::Established
            && (self.fast_rexmit || self.snd_nxt < self.data_limit() || self.fin_ready())
    }

    fn ts_opt(&mut self) -> Option<(u32, u32)> {
        if !self.ts_ok {
            return None;
        }
        self.ts_out = self.ts_out.max(self.ts_client);
        Some((self.ts_out.value(), self.ts_recent.value()))
    }

    fn out(
        &self,
        seq: SeqNumber,
        ack: SeqNumber,
        flags: u8,
        opts: TcpOpts,
        ip_id: u16,
    ) -> Option<OutSegment<'static>> {
        Some(OutSegment {
            path: Path {
                src: self.client,
                dst: self.target,
                sums: self.sums?,
            },
            seq,
            ack,
            flags,
            window: 65535,
            opts,
            payload: (&[], &[]),
            ip_id,
        })
    }

    /// Most new payload bytes one transmit carries: one MSS, or whole MSS pieces up to
    /// `gso_max` when segmentation offload is on (and the IP packet stays under 64 KiB).
    fn burst_max(&self, cfg: &EngineConfig) -> usize {
        let mss = self.seg_max.max(1);
        let lim = cfg.gso_max.min(65_535 - 60 - 60);
        if lim <= mss {
            return mss;
        }
        lim / mss * mss
    }

    /// Writes the next segment for the target into `buf`.
    pub fn transmit(&mut self, cx: &mut Ctx<'_>, buf: &mut [u8]) -> Option<Sent> {
        *cx.ip_id = cx.ip_id.wrapping_add(1);
        let id = *cx.ip_id;
        let now = cx.now;
        if let Some(seq) = self.pending_rst[0] {
            self.pending_rst = [self.pending_rst[1], None];
            let flags = if self.rcv_nxt == SeqNumber(0) {
                RST
            } else {
                RST | ACK
            };
            let seg = self.out(seq, self.rcv_nxt, flags, TcpOpts::default(), id)?;
            return self.emit(cx, &seg, buf);
        }
        if self.end.is_none() && self.pending_syn {
            self.pending_syn = false;
            let mut opts = self.syn_opts;
            if opts.ts.is_some() {
                self.ts_out = self.ts_out.max(self.ts_client);
                opts.ts = Some((self.ts_out.value(), 0));
            }
            let seg = self.out(self.iss, SeqNumber(0), SYN, opts, id)?;
            self.snd_nxt = self.iss + 1;
            self.snd_max = self.snd_max.max(self.snd_nxt);
            self.last_new_data_at = now;
            self.rto_at.get_or_insert(now + self.rto);
            if self.retries > 0 {
                cx.stats.segments_retransmitted += 1;
            }
            return self.emit(cx, &seg, buf);
        }
        if self.end.is_none() && self.state == State::Established {
            if self.fast_rexmit {
                self.fast_rexmit = false;
                let end = self.snd_max.min(self.cap_nxt);
                let len = (end.diff(self.snd_una).max(0) as usize).min(self.seg_max);
                if len > 0 {
                    return self.send_data(cx, self.snd_una, len, buf, id);
                }
            }
            let lim = self.data_limit();
            if self.snd_nxt < lim {
                let len = (lim.diff(self.snd_nxt) as usize).min(self.burst_max(cx.cfg));
                let seq = self.snd_nxt;
                let n = self.send_data(cx, seq, len, buf, id);
                self.probe = false;
                return n;
            }
            if self.fin_ready() {
                let f = self.snd_nxt;
                let opts = TcpOpts {
                    ts: self.ts_opt(),
                    ..TcpOpts::default()
                };
                let seg = self.out(f, self.rcv_nxt, FIN | ACK, opts, id)?;
                if f < self.snd_max {
                    cx.stats.segments_retransmitted += 1;
                }
                self.snd_nxt = f + 1;
                if self.snd_nxt > self.snd_max {
                    self.snd_max = self.snd_nxt;
                    self.last_new_data_at = now;
                }
                self.rto_at.get_or_insert(now + self.rto);
                self.pending_ack = false;
                return self.emit(cx, &seg, buf);
            }
        }
        if self.pending_ack {
            self.pending_ack = false;
            let seq = if self.state == State::TimeWait {
                self.snd_max
            } else {
                self.snd_nxt
            };
            let opts = TcpOpts {
                ts: self.ts_opt(),
                ..TcpOpts::default()
            };
            let seg = self.out(seq, self.rcv_nxt, ACK, opts, id)?;
            return self.emit(cx, &seg, buf);
        }
        None
    }

    fn send_data(
        &mut self,
        cx: &mut Ctx<'_>,
        seq: SeqNumber,
        len: usize,
        buf: &mut [u8],
        id: u16,
    ) -> Option<Sent> {
        let now = cx.now;
        let off = seq.diff(self.buf_seq);
        if off < 0 || off as usize + len > self.buf.len() {
            return None;
        }
        let off = off as usize;
        let opts = TcpOpts {
            ts: self.ts_opt(),
            ..TcpOpts::default()
        };
        let mut seg = self.out(seq, self.rcv_nxt, ACK | PSH, opts, id)?;
        let (a, b) = self.buf.as_slices();
        seg.payload = if off + len <= a.len() {
            (&a[off..off + len], &[][..])
        } else if off >= a.len() {
            (&b[off - a.len()..off - a.len() + len], &[][..])
        } else {
            (&a[off..], &b[..len - (a.len() - off)])
        };
        // A super-segment leaves its TCP checksum to the kernel (or to the software
        // segmentation of the fallback path): summing 64 KiB here would be wasted.
        let gso_size = (len > self.seg_max).then_some(self.seg_max as u16);
        let n = packet::build_with(&seg, buf, gso_size.is_some())?;
        let pieces = len.div_ceil(self.seg_max.max(1)).max(1);
        // The pieces carry consecutive IPv4 identifications (the kernel numbers them).
        *cx.ip_id = cx.ip_id.wrapping_add((pieces - 1) as u16);
        let end = seq + len as u32;
        if seq < self.snd_max {
            cx.stats.segments_retransmitted += pieces as u64;
        } else {
            cx.stats.bytes_sent += len as u64;
            // Latency counts from the request's last byte: while its answer is awaited (the
            // next request is held meanwhile), each later segment of it moves the start.
            if !cx.cfg.no_wait && self.req_sent_at.is_some() && len > 0 {
                self.req_sent_at = Some(now);
            }
        }
        if let Some(t) = self.timing_seq {
            if t >= seq && t < end {
                self.timing_seq = None;
                self.req_sent_at = Some(now);
                cx.stats.requests_sent += 1;
            }
        }
        if seq == self.snd_nxt {
            self.snd_nxt = end;
        }
        if end > self.snd_max {
            if self.rtt_probe.is_none() && seq >= self.snd_max {
                self.rtt_probe = Some((end, now));
            }
            self.snd_max = end;
            self.last_new_data_at = now;
        }
        self.rto_at.get_or_insert(now + self.rto);
        self.pending_ack = false;
        cx.stats.segments_sent += pieces as u64;
        tracing::trace!(parent: &self.span, seq = seq.value(), len, "data");
        Some(Sent { len: n, gso_size })
    }

    fn emit(&mut self, cx: &mut Ctx<'_>, seg: &OutSegment<'_>, buf: &mut [u8]) -> Option<Sent> {
        let n = packet::build(seg, buf)?;
        cx.stats.segments_sent += 1;
        tracing::trace!(parent: &self.span, seq = seg.seq.value(), flags = seg.flags, "control");
        Some(Sent {
            len: n,
            gso_size: None,
        })
    }
}

/// What [`Session::transmit`] wrote: the packet's length and, for a super-segment, its MSS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Sent {
    pub len: usize,
    pub gso_size: Option<u16>,
}
