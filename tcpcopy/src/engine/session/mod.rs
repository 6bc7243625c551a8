//! One cloned connection: client stream in (as captured), target's headers in (as intercept
//! reports them), segments to the target out.
//!
//! Sans-IO like the rest of the engine: time comes in through [`SessionCtx::now`]. The session
//! is split by concern, each part a struct with its own tests:
//!
//! - the client stream, its out-of-order holds, the request boundaries and the release gate:
//!   [`crate::conversation`] (the one place for each of these rules, shared with stream mode);
//! - our send side (sequence space, RTO/RTT, retransmission): [`send`];
//! - the target's side (its sequence numbers, timestamps): [`target`];
//! - the session's other timers: [`timers`];
//!
//! and its inputs by file: captured client segments ([`client`]), the target's segments
//! ([`response`]), output ([`output`]). This module holds the state machine's lifecycle: creation,
//! ending, timeouts. It never reads a clock, a socket or a file.

mod client;
mod output;
pub(crate) mod report;
mod response;
mod send;
mod target;
mod timers;

pub(crate) use send::PathRtts;

use super::packet::{PathSums, RawSegment, TcpOpts};
use super::{EngineConfig, EngineEvent, EngineStats, ProductionAnswer, Unanswered};
use crate::conversation::{ClientStream, GateRules, RequestBoundaries, RequestPacer, SparePool};
use send::SendSide;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Instant;
use target::TargetSide;
use tcpclone::flow::FlowKey;
use tcpclone::seq::SeqNumber;
use tcpclone::sys::ring::{HeldBytes, HoldBytes};
use timers::{Earliest, Timers};

/// Shared, mutable context a session works in: the engine's configuration, counters and
/// budgets, and the caller's `now`.
pub(crate) struct SessionCtx<'a> {
    pub cfg: &'a EngineConfig,
    pub stats: &'a mut EngineStats,
    pub events: &'a mut VecDeque<EngineEvent>,
    pub mem: &'a mut usize,
    /// Emptied client-stream buffers, shared by the engine's sessions.
    pub spares: &'a mut SparePool,
    pub ip_id: &'a mut u16,
    pub paths: &'a mut PathRtts,
    /// The capture lost packets lately ([`crate::engine::Engine::capture_lost`]).
    pub capture_lossy: bool,
    /// Leave super-segments' payload in the client stream ([`crate::engine::Engine::payload`]).
    pub payload_by_ref: bool,
    /// The capture block the segment being handled lies in, when its bytes can stay there
    /// ([`crate::engine::Engine::handle_captured_in`]).
    pub hold: Option<&'a dyn HoldBytes>,
    pub now: Instant,
}

impl SessionCtx<'_> {
    /// The release gate's rules from the engine's configuration.
    #[inline]
    fn gate_rules(&self) -> GateRules {
        gate_rules(self.cfg)
    }

    /// Room in the engine's memory budget for `n` more bytes, once the spare buffers are freed
    /// if that is what it takes.
    #[inline]
    fn fits(&mut self, n: usize) -> bool {
        self.spares.room_for(n, self.cfg.max_memory, self.mem)
    }
}

/// The release gate's rules from the engine's configuration.
#[inline]
fn gate_rules(cfg: &EngineConfig) -> GateRules {
    GateRules {
        no_wait: cfg.no_wait,
        idle_gap: cfg.idle_gap,
        response_timeout: cfg.response_timeout,
        max_lag: cfg.max_lag,
        lag_min_bytes: cfg.lag_min_bytes,
    }
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

/// Why a raw-mode session ended (counted in [`EngineStats`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RawEndReason {
    Completed,
    ClientReset,
    TargetReset,
    Timeout,
    Handshake,
    Retransmits,
    Replaced,
    Gap,
    /// The capture fell behind and this clone was given up to keep the others whole
    /// ([`crate::engine::Engine::shed_heaviest`]).
    Shed,
}

/// One cloned connection of the raw-mode engine.
#[derive(Debug)]
pub(crate) struct EngineSession {
    /// The captured flow (client → service).
    pub capture: FlowKey,
    /// Client address as the target sees it.
    pub client: SocketAddr,
    /// Target address.
    pub target: SocketAddr,
    pub state: State,
    /// The client's ISN (or the fake one), to tell a retransmitted SYN from port reuse.
    pub client_isn: SeqNumber,
    /// Options of our SYN (the client's, limited by our MTU and `--mss`).
    syn_opts: TcpOpts,
    /// The client stream as captured.
    stream: ClientStream,
    /// Where requests start (raw mode's rule: the client's ack moved).
    starts: RequestBoundaries,
    /// The release gate.
    pacer: RequestPacer,
    /// The client reset its connection (carried through once its data is delivered).
    client_rst: bool,
    /// Our send side.
    snd: SendSide,
    /// The target's side.
    tgt: TargetSide,
    /// Timers other than the retransmission timer.
    timers: Timers,
    // --- pending output ---
    pending_syn: bool,
    pending_ack: bool,
    pending_rst: [Option<SeqNumber>; 2],
    /// Client payload bytes captured since the engine last looked for the heaviest clone to
    /// shed ([`crate::engine::Engine::shed_heaviest`]).
    pub recent_bytes: u32,
    /// Set when the session is over; the engine removes it once its output is flushed.
    pub end: Option<RawEndReason>,
    /// The deadline currently scheduled in the engine's timer heap.
    pub timer_at: Option<Instant>,
    /// In the engine's ready queue.
    pub queued: bool,
    /// Checksum sums of the fixed header words towards the target (`None`: address families
    /// differ, nothing can be sent; the engine never pairs them).
    sums: Option<PathSums>,
    /// With the report on: the request being timed, production's answers as captured.
    report: Option<Box<report::SessionReport>>,
    span: tracing::Span,
}

impl EngineSession {
    /// A session for a captured SYN (`fake == false`) or for the first data segment of a
    /// connection already open when we started (`fake == true`: SYN at seq − 1).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        cx: &mut SessionCtx<'_>,
        capture: FlowKey,
        client: SocketAddr,
        target: SocketAddr,
        seg: &RawSegment<'_>,
        fake: bool,
        prev_ts: Option<SeqNumber>,
    ) -> EngineSession {
        let now = cx.now;
        let iss = if fake { seg.seq - 1 } else { seg.seq };
        let span = tracing::debug_span!("session", client = %client, target = %target);
        let mut s = EngineSession {
            capture,
            client,
            target,
            state: State::SynSent,
            client_isn: iss,
            syn_opts: syn_opts(cx.cfg, seg, target.is_ipv6(), fake),
            stream: ClientStream::new(iss + 1),
            starts: RequestBoundaries::new(),
            pacer: RequestPacer::new(now),
            client_rst: false,
            snd: SendSide::new(iss, cx.paths.initial_rto(cx.cfg, target.ip()), now),
            tgt: TargetSide::new(seg.opts.ts.map_or(0, |(v, _)| v), prev_ts),
            timers: Timers::new(now),
            pending_syn: true,
            pending_ack: false,
            pending_rst: [None, None],
            recent_bytes: 0,
            end: None,
            timer_at: None,
            queued: false,
            sums: PathSums::new(client.ip(), target.ip()),
            report: None,
            span,
        };
        tracing::trace!(parent: &s.span, fake, iss = iss.value(), "new session");
        if fake {
            s.on_captured(cx, seg);
        }
        s
    }

    /// The report (on): captured client data `[seq, seq + len)` at `now`.
    pub fn report_client_data(&mut self, now: Instant, seq: SeqNumber, len: usize) {
        let end = seq + u32::try_from(len).unwrap_or(u32::MAX);
        self.report
            .get_or_insert_with(Default::default)
            .on_client_data(now, seq, end);
    }

    /// The report (on): production's answer bytes captured at `now`; the timing of the request
    /// they answer when it was waiting for them.
    pub fn report_production_data(&mut self, now: Instant, payload: &[u8]) -> Option<EngineEvent> {
        let (w, p) = self
            .report
            .get_or_insert_with(Default::default)
            .on_production_data(now, payload)?;
        Some(self.timing_event(w, Some(p)))
    }

    /// The report (on): the timing waiting for production's answer, without it (the session
    /// ends, or the run).
    pub fn report_flush(&mut self) -> Option<EngineEvent> {
        let w = self.report.as_mut()?.waiting.take()?;
        Some(self.timing_event(w, None))
    }

    fn timing_event(
        &self,
        w: report::Waiting,
        production: Option<ProductionAnswer>,
    ) -> EngineEvent {
        EngineEvent::RequestTiming {
            client: self.client,
            target: self.target,
            sent: w.sent,
            answered: w.answered,
            request: w.request,
            answer: w.answer,
            production,
        }
    }

    /// Enters the session's span for one input; nothing to clone or enter when it is disabled
    /// (the usual case outside debugging: `debug_span!` under an `info` filter).
    fn enter_span(&self) -> Option<tracing::span::EnteredSpan> {
        (!self.span.is_disabled()).then(|| self.span.clone().entered())
    }

    /// The client stream's `len` bytes from `seq` (a payload left by reference).
    pub fn payload(&self, seq: SeqNumber, len: usize) -> Option<(&[u8], &[u8])> {
        self.stream.bytes(seq, len)
    }

    /// Whether some of the client stream's bytes are still in a capture block.
    pub fn holds_ring(&self) -> bool {
        self.stream.holds_ring()
    }

    /// Copies the client stream's bytes still in the capture blocks `which` picks into
    /// buffers of ours; with no room for them in the memory budget they are dropped as in a
    /// capture gap.
    pub fn copy_ring(&mut self, cx: &mut SessionCtx<'_>, which: &dyn Fn(&HeldBytes) -> bool) {
        let spares = cx.spares.count();
        let grow = |cx: &SessionCtx<'_>| self.stream.copy_ring_growth(cx.spares, which);
        // Making room may free the spares the first answer counted on: asked again then.
        if cx.fits(grow(cx)) && (cx.spares.count() == spares || cx.fits(grow(cx))) {
            self.stream.copy_ring(cx.spares, cx.mem, which);
        } else {
            cx.stats.buffer_overflows += 1;
            self.gap(cx);
        }
    }

    /// Bytes this session holds in buffers (for the memory budget).
    pub fn buffered(&self) -> usize {
        self.stream.buffered()
    }

    /// Our last TSval, for a session that replaces this one on the same 4-tuple.
    pub fn last_ts(&self) -> SeqNumber {
        self.tgt.last_ts()
    }

    /// Captured client data not yet acknowledged by the target, or sent and not yet answered with
    /// the target's FIN: a new SYN on this client port must not reset this clone, it finishes
    /// on its own 4-tuple.
    pub fn still_delivering(&self) -> bool {
        let first = self.snd.iss + 1;
        let cap_nxt = self.stream.next();
        self.end.is_none()
            && matches!(self.state, State::SynSent | State::Established)
            && (cap_nxt > self.snd.una.max(first)
                || self.state == State::Established && cap_nxt > first && !self.tgt.fin)
    }

    /// Hands the reset of the old connection over to its replacement (port reuse).
    pub fn inherit_reset(&mut self, old: &EngineSession) {
        if matches!(old.state, State::SynSent | State::Established) && old.end.is_none() {
            self.pending_rst = old.rst_seqs();
        }
    }

    fn rst_seqs(&self) -> [Option<SeqNumber>; 2] {
        self.snd.rst_seqs(self.state == State::SynSent)
    }

    /// Ends the session for `reason` (once): counts it, stops sending and frees its buffers.
    pub fn finish(&mut self, cx: &mut SessionCtx<'_>, reason: RawEndReason) {
        if self.end.is_some() {
            return;
        }
        let st = &mut *cx.stats;
        match reason {
            RawEndReason::Completed => st.sessions_completed += 1,
            RawEndReason::ClientReset => st.sessions_client_reset += 1,
            RawEndReason::TargetReset => st.aborted_target_reset += 1,
            RawEndReason::Timeout => st.aborted_timeout += 1,
            RawEndReason::Handshake => st.aborted_handshake += 1,
            RawEndReason::Retransmits => st.aborted_retransmits += 1,
            RawEndReason::Replaced => st.aborted_replaced += 1,
            RawEndReason::Gap => st.aborted_gap += 1,
            RawEndReason::Shed => st.shed_sessions += 1,
        }
        tracing::debug!(parent: &self.span, ?reason, "session ends");
        if let Some(ev) = self.report_flush() {
            cx.events.push_back(ev);
        }
        // The report (on): the request the target never answered ends here, with why.
        if let Some(q) = self.report.as_mut().and_then(|r| r.request.take()) {
            st.requests_unanswered += 1;
            cx.events.push_back(EngineEvent::RequestUnanswered {
                client: self.client,
                target: self.target,
                sent: q.sent,
                request: q.bytes.into_vec(),
                why: match reason {
                    RawEndReason::TargetReset => Unanswered::Reset,
                    RawEndReason::Timeout | RawEndReason::Retransmits | RawEndReason::Handshake => {
                        Unanswered::TimedOut
                    }
                    RawEndReason::Completed => Unanswered::Closed,
                    RawEndReason::ClientReset
                    | RawEndReason::Replaced
                    | RawEndReason::Gap
                    | RawEndReason::Shed => Unanswered::Cut,
                },
            });
        }
        self.end = Some(reason);
        self.snd.stop();
        self.pending_syn = false;
        self.release_buffers(cx);
    }

    /// Gives the clone up because the capture is falling behind: the target gets a RST and
    /// the session ends once it is out (the engine then ignores the connection's segments).
    pub fn shed(&mut self, cx: &mut SessionCtx<'_>) {
        if self.end.is_none() {
            self.abort(cx, RawEndReason::Shed);
        }
    }

    /// Still cloning: handshaking or established, not over.
    #[inline]
    pub fn is_cloning(&self) -> bool {
        self.end.is_none() && matches!(self.state, State::SynSent | State::Established)
    }

    fn abort(&mut self, cx: &mut SessionCtx<'_>, reason: RawEndReason) {
        if matches!(self.state, State::SynSent | State::Established) {
            self.pending_rst = self.rst_seqs();
            cx.stats.resets_sent += 1;
            // Nothing after the reset: an ACK behind it (of the target's FIN, say) moves a
            // target whose copy of the reset was lost to FIN_WAIT2 for a minute, where without
            // it the target's retransmission finds no session and draws another reset.
            self.pending_ack = false;
            self.state = State::Dead;
        }
        self.finish(cx, reason);
    }

    fn release_buffers(&mut self, cx: &mut SessionCtx<'_>) {
        self.stream.release(cx.spares, cx.mem);
        self.pacer.clear_boundaries();
    }

    // ------------------------------------------------------------------ pacing

    /// Releases the requests whose gate opened (see [`crate::conversation`]).
    fn open_gates(&mut self, cx: &mut SessionCtx<'_>) {
        if self.state != State::Established || self.end.is_some() || self.pacer.is_idle() {
            return;
        }
        let rules = cx.gate_rules();
        let r = self
            .pacer
            .release(cx.now, self.snd.max, &rules, self.tgt.fin, self.unsent());
        cx.stats.pacing_timeouts += r.timeouts;
        cx.stats.requests_pipelined += r.lagged;
    }

    // ------------------------------------------------------------------ timers

    /// The earliest instant this session needs `on_timeout`.
    #[inline]
    pub fn next_deadline(&self, cfg: &EngineConfig) -> Option<Instant> {
        if self.end.is_some() {
            return None; // only flushing its last segments
        }
        let mut d = Earliest(self.timers.last_activity + cfg.session_timeout);
        d.take(self.timers.linger_until);
        d.take(self.snd.rto_at);
        d.take(self.timers.gap_at);
        if self.half_closed_idle() {
            d.take(Some(self.timers.last_activity + cfg.linger));
        }
        if self.state == State::Established {
            let rules = gate_rules(cfg);
            d.take(self.pacer.deadline(self.snd.max, &rules, self.unsent()));
            if self.client_rst {
                d.take(self.pacer.owed_until(&rules));
            }
        }
        if self.outstanding() {
            d.take(Some(self.snd.last_progress + cfg.keepalive_timeout));
        }
        Some(d.0)
    }

    /// The target closed, everything we had is delivered, and the client has not closed yet.
    #[inline]
    fn half_closed_idle(&self) -> bool {
        self.state == State::Established
            && self.tgt.fin
            && self.stream.fin().is_none()
            && !self.client_rst
            && self.snd.una == self.stream.next()
            && self.pacer.is_idle()
    }

    /// Client bytes captured and not sent yet (for the release gate's lag rule).
    #[inline]
    fn unsent(&self) -> u64 {
        self.stream.next().diff(self.snd.max).max(0) as u64
    }

    #[inline]
    fn outstanding(&self) -> bool {
        match self.state {
            State::SynSent => true,
            State::Established => self.snd.una < self.snd.max || self.snd.max < self.stream.next(),
            _ => false,
        }
    }

    /// Runs whatever is due at `cx.now`.
    pub fn on_timeout(&mut self, cx: &mut SessionCtx<'_>) {
        let _g = self.enter_span();
        let now = cx.now;
        if Timers::due(self.timers.linger_until, now) {
            self.finish(cx, RawEndReason::Completed);
            return;
        }
        if self.end.is_some() {
            return;
        }
        if now >= self.timers.last_activity + cx.cfg.session_timeout {
            self.abort(cx, RawEndReason::Timeout);
            return;
        }
        if self.outstanding() && now >= self.snd.last_progress + cx.cfg.keepalive_timeout {
            self.abort(cx, RawEndReason::Timeout);
            return;
        }
        if self.half_closed_idle() && now >= self.timers.last_activity + cx.cfg.linger {
            // The target closed and the client's FIN never showed up (missed by the capture, or
            // the client lingers): close our side so the target does not sit in FIN_WAIT_2.
            tracing::debug!(parent: &self.span, "closing a half-closed clone");
            cx.stats.half_closed_timeouts += 1;
            self.stream.set_fin(self.stream.next());
            return;
        }
        if Timers::due(self.timers.gap_at, now) {
            self.gap(cx);
            return;
        }
        if Timers::due(self.snd.rto_at, now) {
            self.on_rto(cx);
            if self.end.is_some() {
                return;
            }
        }
        self.open_gates(cx);
        self.check_client_rst(cx);
    }

    /// The retransmission timer fired: back off, then resend the SYN, go back N, or probe a
    /// zero window; too many tries abort the clone.
    fn on_rto(&mut self, cx: &mut SessionCtx<'_>) {
        self.snd.back_off(cx.cfg.max_rto);
        self.timers.lossy = true;
        match self.state {
            State::SynSent => {
                if self.snd.retries > cx.cfg.max_syn_retries {
                    self.abort(cx, RawEndReason::Handshake);
                    return;
                }
                cx.stats.rto_expirations += 1;
                self.pending_syn = true;
            }
            State::Established => {
                if self.snd.retries > cx.cfg.max_retransmits {
                    self.abort(cx, RawEndReason::Retransmits);
                    return;
                }
                if self.snd.una < self.snd.max {
                    cx.stats.rto_expirations += 1;
                    self.snd.nxt = self.snd.una; // go back N (RFC 6298 §5.4)
                    self.snd.dupacks = 0;
                } else if self.snd.wnd == 0 {
                    self.snd.probe = true; // zero-window probe (RFC 9293 §3.8.6.1)
                }
            }
            _ => {}
        }
    }
}

/// Options of our SYN: the client's (or, faking the handshake of a connection already open, ours),
/// the MSS limited by our MTU and `--mss`; the timestamp echo is left for the transmit.
fn syn_opts(cfg: &EngineConfig, seg: &RawSegment<'_>, v6: bool, fake: bool) -> TcpOpts {
    let ip_len = if v6 { 40 } else { 20 };
    let mss_cap =
        u16::try_from(usize::from(cfg.mtu).saturating_sub(ip_len + 20).max(536)).unwrap_or(1460);
    let mss_lim = cfg.mss.map_or(mss_cap, |m| m.min(mss_cap));
    if fake {
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
    }
}
