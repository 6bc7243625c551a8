//! Captured client segments: into the client stream (in order or held beyond a hole, the
//! conversation core's [`crate::conversation::ReorderQueue`]), request boundaries found by the
//! conversation core's rule ([`crate::conversation::RequestBoundaries`], raw mode's
//! [`BoundaryRules::RAW`]) and held at its gate, and a capture gap turned into a reset of the clone and a re-establishment at the next
//! request.

use super::{EngineSession, RawEndReason, SessionCtx, State};
use crate::conversation::{BoundaryRules, Held};
use crate::engine::packet::{RawSegment, ACK, FIN, RST, SYN};
use std::borrow::Cow;
use tcpclone::seq::SeqNumber;

/// Payloads from this size up stay in the capture block they arrived in (GRO's super-frames on
/// uploads; a payload of one MSS is copied).
const HOLD_MIN: usize = 8 * 1024;
/// Payloads above this (a BIG TCP super-frame) are copied: a ring piece must fit in one chunk
/// when it is copied out ([`crate::engine::Engine::copy_ring_bytes`]).
const HOLD_MAX: usize = crate::conversation::CHUNK;
/// Payloads stay in the ring only while the target keeps up with the session: less than this
/// captured and not yet acknowledged by the target. Behind a lagging target, bytes wait long
/// and would keep their blocks from the kernel until copied anyway
/// ([`crate::engine::Engine::copy_ring_bytes`]): they are copied at once, as small ones are.
const HOLD_BACKLOG: usize = 16 << 20;

impl EngineSession {
    /// A captured client segment of this session (not a port-reusing SYN: the engine handles those).
    pub fn on_captured(&mut self, cx: &mut SessionCtx<'_>, seg: &RawSegment<'_>) {
        let _g = self.enter_span();
        self.timers.last_activity = cx.now;
        if let Some((v, _)) = seg.opts.ts {
            self.tgt.note_client_ts(v);
        }
        if seg.has(SYN) {
            return; // a retransmitted SYN: our own handshake retransmits
        }
        let ack = seg.has(ACK).then_some(seg.ack);
        match self.state {
            State::Dead | State::TimeWait => {
                if self.state == State::Dead && (seg.has(FIN) || seg.has(RST)) {
                    self.finish(cx, RawEndReason::TargetReset);
                }
            }
            State::Resync => {
                if seg.has(RST) || seg.has(FIN) && seg.payload.is_empty() {
                    self.finish(cx, RawEndReason::Gap);
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
                if let Some(a) = ack {
                    if seg.payload.is_empty() && !seg.has(FIN) {
                        self.starts.note_handshake_ack(a);
                    }
                }
                if !seg.payload.is_empty() || seg.has(FIN) {
                    self.accept(cx, seg.seq, ack, Cow::Borrowed(seg.payload), seg.has(FIN));
                }
                self.open_gates(cx);
            }
        }
    }

    /// Client bytes (and FIN) at `seq`: appended when in order, held beyond a hole. Bytes
    /// already held (handed back after a gap) come owned, so that holding them again beyond
    /// another hole moves them instead of copying: a capture that drops often leaves many
    /// holes in one session, and copying its held bytes again at each would cost the worker
    /// more than the capture it is behind on.
    fn accept(
        &mut self,
        cx: &mut SessionCtx<'_>,
        seq: SeqNumber,
        ack: Option<SeqNumber>,
        data: Cow<'_, [u8]>,
        fin: bool,
    ) {
        if self.end.is_some() {
            return;
        }
        let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
        let end = seq + len;
        let cap_nxt = self.stream.next();
        let Some(new) = self.stream.new_part(seq, &data) else {
            self.hold(cx, seq, ack, data, fin);
            return;
        };
        if !new.is_empty() {
            let limit = cx.cfg.max_session_buffer;
            let spares = cx.spares.count();
            // A large payload stays in the capture block it arrived in: copying an upload's
            // every byte out of the ring was the worker's largest cost on uploads, before the
            // kernel's own copy when sending. Small ones are copied: they cost less than the
            // piece they would make, and sends gather at most two pieces.
            let ring =
                (HOLD_MIN..=HOLD_MAX).contains(&new.len()) && self.stream.unacked() < HOLD_BACKLOG;
            let in_ring = ring.then(|| cx.hold.and_then(|b| b.hold(new))).flatten();
            // Ring bytes allocate nothing; the session's limit counts them all the same.
            let grow = |cx: &SessionCtx<'_>| {
                let g = self.stream.growth_for(new.len(), limit, cx.spares);
                g.map(|g| if in_ring.is_some() { 0 } else { g })
            };
            // Making room may free the spares the first answer counted on: asked again then.
            let fits = grow(cx).is_some_and(|g| cx.fits(g))
                && (cx.spares.count() == spares || grow(cx).is_some_and(|g| cx.fits(g)));
            if !fits {
                cx.stats.buffer_overflows += 1;
                self.gap(cx);
                return;
            }
            if ack.is_some() {
                let start = self.starts.on_client_data(ack, &BoundaryRules::RAW);
                self.pacer
                    .note_request(start, cap_nxt, cx.cfg.no_wait, Some(cx.now));
            }
            match in_ring {
                Some(h) => {
                    cx.stats.bytes_in_ring += h.len() as u64;
                    self.stream.append_ring(h);
                }
                None => self.stream.append(new, cx.spares, cx.mem),
            }
        }
        if fin && end == self.stream.next() && self.stream.fin().is_none() {
            if data.is_empty() && ack.is_some() {
                let start = self.starts.on_client_data(ack, &BoundaryRules::RAW);
                self.pacer
                    .note_request(start, self.stream.next(), cx.cfg.no_wait, None);
            }
            self.stream.set_fin(self.stream.next());
        }
        self.merge_held(cx);
    }

    /// A segment beyond a hole: held, with a deadline for the hole to fill.
    fn hold(
        &mut self,
        cx: &mut SessionCtx<'_>,
        seq: SeqNumber,
        ack: Option<SeqNumber>,
        data: Cow<'_, [u8]>,
        fin: bool,
    ) {
        if cx.capture_lossy && self.stream.nothing_held() {
            // The capture lost packets lately: the segment the hole misses is among them and
            // will never come. Holding (a copy of) everything behind it for a reordering
            // window cost an overloaded worker a third more work per byte; the gap is
            // declared now and this segment is read for the next request instead.
            self.gap(cx);
            self.feed_after_gap(cx, seq, ack, data, fin);
            return;
        }
        let cost = crate::conversation::held_cost(data.len());
        if self.stream.held_bytes() + cost > cx.cfg.max_session_buffer || !cx.fits(cost) {
            cx.stats.buffer_overflows += 1;
            self.gap(cx);
            return;
        }
        let has_data = !data.is_empty();
        let lossy = cx.capture_lossy;
        let held = Held {
            seq,
            ack,
            fin,
            data: data.into_owned(),
        };
        self.stream.hold(held, cx.mem);
        if lossy {
            // Segments held from before the loss: this one joins them, and the gap hands them
            // all back in sequence order.
            self.gap(cx);
            return;
        }
        // A request boundary beyond the hole proves a missed segment (production answered
        // the request the hole is in); allow only a short reordering window then.
        let wait = if self.starts.proves_missed(ack, has_data) {
            cx.cfg.reorder_window
        } else {
            cx.cfg.gap_timeout
        };
        self.timers.gap_by(cx.now + wait);
    }

    /// Feeds held segments that are now in order back through `accept`.
    fn merge_held(&mut self, cx: &mut SessionCtx<'_>) {
        // `accept` calls back here: the outer call does the work, in a loop, so that a long
        // run of held segments is not a recursion as deep as the run.
        if !self.stream.begin_merge() {
            return;
        }
        while let Some(h) = self.stream.take_next_held(cx.mem) {
            self.accept(cx, h.seq, h.ack, Cow::Owned(h.data), h.fin);
            if self.state == State::Resync || self.end.is_some() {
                self.stream.end_merge();
                return;
            }
        }
        self.stream.end_merge();
        if self.stream.nothing_held() {
            self.timers.gap_at = None;
        }
    }

    /// A segment is missing from the capture: reset the clone and wait for the next request.
    pub(super) fn gap(&mut self, cx: &mut SessionCtx<'_>) {
        cx.stats.gaps += 1;
        tracing::debug!(parent: &self.span, hole = self.stream.next().value(), "capture gap: resetting the clone");
        if matches!(self.state, State::SynSent | State::Established) {
            self.pending_rst = self.rst_seqs();
            cx.stats.resets_sent += 1;
        }
        self.state = State::Resync;
        self.pending_syn = false;
        self.pending_ack = false;
        self.snd.stop();
        self.timers.gap_at = None;
        self.pacer.clear_boundaries();
        // In sequence order: the stream hands them back so.
        for h in self.stream.drop_for_gap(cx.spares, cx.mem) {
            if !self.feed_after_gap(cx, h.seq, h.ack, Cow::Owned(h.data), h.fin) {
                break;
            }
        }
    }

    /// Reads a segment after a gap: towards the next request while resyncing, as usual once
    /// the clone restarted. `false` once the session has ended (a FIN may have finished it,
    /// which leaves it in Resync): nothing more is read.
    fn feed_after_gap(
        &mut self,
        cx: &mut SessionCtx<'_>,
        seq: SeqNumber,
        ack: Option<SeqNumber>,
        data: Cow<'_, [u8]>,
        fin: bool,
    ) -> bool {
        if self.end.is_some() {
            return false;
        }
        if self.state == State::Resync {
            self.resync_feed(cx, seq, ack, &data, fin);
        } else {
            self.accept(cx, seq, ack, data, fin);
        }
        true
    }

    /// Follows the client stream after a gap until a request boundary, then re-establishes.
    fn resync_feed(
        &mut self,
        cx: &mut SessionCtx<'_>,
        seq: SeqNumber,
        ack: Option<SeqNumber>,
        data: &[u8],
        fin: bool,
    ) {
        if data.is_empty() {
            if fin {
                self.finish(cx, RawEndReason::Gap);
            }
            return;
        }
        let end = seq + data.len() as u32;
        let cap_nxt = self.stream.next();
        if seq == cap_nxt {
            if self.starts.ack_moved(ack) {
                self.restart(cx, seq, ack, data, fin);
                return;
            }
        } else if seq < cap_nxt && end <= cap_nxt {
            return;
        }
        // Same request continuing, or a new run whose predecessor we did not see.
        self.stream.skip_to(end);
        if let Some(a) = ack {
            self.starts.follow_ack(a);
        }
        if fin {
            self.finish(cx, RawEndReason::Gap);
        }
    }

    /// Re-establishes the clone with a new handshake whose first byte is the request at `seq`.
    fn restart(
        &mut self,
        cx: &mut SessionCtx<'_>,
        seq: SeqNumber,
        ack: Option<SeqNumber>,
        data: &[u8],
        fin: bool,
    ) {
        cx.stats.reestablished += 1;
        tracing::debug!(parent: &self.span, seq = seq.value(), "re-establishing after a gap");
        self.state = State::SynSent;
        self.stream.restart(seq);
        let rto = cx.paths.initial_rto(cx.cfg, self.target.ip());
        self.snd.restart(seq - 1, rto, cx.now);
        self.tgt.restart();
        self.pacer.restart();
        self.starts.restart();
        self.pending_syn = true;
        self.accept(cx, seq, ack, Cow::Borrowed(data), fin);
    }

    /// The client's RST goes to the target once everything before it is delivered, and the
    /// target answered the requests sent pipelined before the last one (a reset destroys
    /// what its application has not read yet; production answered them before the client reset).
    pub(super) fn check_client_rst(&mut self, cx: &mut SessionCtx<'_>) {
        if self.client_rst
            && self.snd.una >= self.stream.next()
            && self
                .pacer
                .owed_until(&cx.gate_rules())
                .is_none_or(|t| cx.now >= t)
        {
            self.abort(cx, RawEndReason::ClientReset);
        }
    }
}
