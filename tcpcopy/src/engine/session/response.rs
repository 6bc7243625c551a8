//! The target's segments (the headers intercept reports): the handshake, acknowledgments and
//! windows, its answer bytes (what opens the release gate) and its FIN or RST.

use super::{send::seg_limit, EngineSession, RawEndReason, SessionCtx, State};
use crate::engine::packet::{RawSegment, ACK, FIN, RST, SYN};
use crate::engine::EngineEvent;
use std::time::Duration;
use tcpclone::seq::SeqNumber;

/// How long after our last progress a reset without ACK still means "never accepted": less
/// than the shortest time a connection that answered can take to vanish (FIN_WAIT2 and
/// TIME_WAIT last a minute on Linux).
const NO_SOCKET_RESET_WINDOW: Duration = Duration::from_secs(30);

/// Handshakes one session may redo: an overloaded listener can prune a request socket more
/// than once, but a target that keeps refusing is not retried for ever.
const MAX_REDONE_HANDSHAKES: u8 = 3;

/// A target sequence number near enough to `rcv_nxt` to be this connection's: anything else on
/// the 4-tuple is an earlier connection's late segment.
fn in_receive_range(seq: SeqNumber, rcv_nxt: SeqNumber) -> bool {
    (-(1 << 24)..(1 << 26)).contains(&seq.diff(rcv_nxt))
}

impl EngineSession {
    /// The IP+TCP headers of one target segment (payload length from the IP header).
    pub fn on_response(&mut self, cx: &mut SessionCtx<'_>, seg: &RawSegment<'_>) {
        let _g = self.enter_span();
        self.timers.last_activity = cx.now;
        // The target's TSval is taken only from this connection's segments: a late report of
        // an earlier connection on the 4-tuple carries another clock, and echoing it got our
        // handshake's ACK dropped (Linux checks its TSecr) and the request lost.
        match self.state {
            State::SynSent => self.syn_sent_response(cx, seg),
            State::Established => self.established_response(cx, seg),
            State::Resync => {
                if seg.has(ACK) && !seg.has(RST) && !seg.has(SYN) {
                    self.pending_rst = [Some(seg.ack), None];
                }
            }
            State::Dead => {}
            State::TimeWait => {
                if let Some((v, _)) = seg.opts.ts {
                    self.tgt.note_target_ts(v);
                }
                if seg.has(FIN) {
                    // Our last ACK was lost: if this one is too, the next retransmission comes
                    // twice as late.
                    self.timers.lossy = true;
                    self.timers.linger_from(cx.now, cx.cfg.linger);
                    self.pending_ack = true;
                }
            }
        }
    }

    /// Our SYN is out: a SYN-ACK establishes, a RST refuses, a bare ACK is a stale connection.
    fn syn_sent_response(&mut self, cx: &mut SessionCtx<'_>, seg: &RawSegment<'_>) {
        let first = self.snd.iss + 1;
        if self.abandon_redo(cx, seg) {
            self.established_response(cx, seg);
            return;
        }
        if seg.has(SYN) && seg.has(ACK) && seg.ack == first && !seg.has(RST) {
            self.establish(cx, seg);
        } else if seg.has(RST) {
            if seg.has(ACK) && seg.ack == first {
                cx.stats.handshakes_refused += 1;
                self.state = State::Dead;
                self.snd.rto_at = None;
                self.pending_syn = false;
                if self.stream.fin().is_some() || self.client_rst {
                    self.finish(cx, RawEndReason::TargetReset);
                }
            }
        } else if seg.has(ACK) && !seg.has(SYN) {
            // A stale connection on this 4-tuple answers our SYN: reset it exactly
            // (RFC 5961 §3 wants the RST at the receiver's rcv_nxt), then our SYN goes again.
            self.pending_rst = [Some(seg.ack), None];
            cx.stats.resets_sent += 1;
        }
    }

    /// The target's SYN-ACK: the window, scaling, timestamps and MSS are settled, and the
    /// handshake's round trip is the first RTT sample.
    fn establish(&mut self, cx: &mut SessionCtx<'_>, seg: &RawSegment<'_>) {
        let now = cx.now;
        self.state = State::Established;
        cx.stats.handshakes += 1;
        self.tgt.rcv_nxt = seg.seq + 1;
        let snd = &mut self.snd;
        snd.una = snd.iss + 1;
        snd.nxt = snd.nxt.max(snd.una);
        snd.max = snd.max.max(snd.una);
        let ws_ok = self.syn_opts.wscale.is_some() && seg.opts.wscale.is_some();
        snd.shift = if ws_ok {
            seg.opts.wscale.unwrap_or(0)
        } else {
            0
        };
        snd.wnd = u32::from(seg.window); // RFC 7323 §2.2: never scaled in a SYN
        self.tgt.ts_ok = self.syn_opts.ts.is_some() && seg.opts.ts.is_some();
        if let Some((v, _)) = seg.opts.ts {
            self.tgt.start_target_ts(v);
        }
        snd.seg_max = seg_limit(cx.cfg, seg.opts.mss, self.target.is_ipv6(), self.tgt.ts_ok);
        if snd.retries == 0 {
            let r = now.saturating_duration_since(self.pacer.last_new_data_at());
            self.rtt_sample(cx, r);
        }
        self.snd.retries = 0;
        self.snd.rto_at = None;
        self.pending_ack = true;
        self.snd.last_progress = now;
        self.pacer.on_established(now, self.snd.iss + 1);
        tracing::trace!(parent: &self.span, "established");
        self.open_gates(cx);
    }

    /// A target segment once established, in steps: a newer SYN-ACK, stale segments, an early
    /// RST (handshake redone), a RST, a lost third ACK, then ack, answer bytes and FIN.
    fn established_response(&mut self, cx: &mut SessionCtx<'_>, seg: &RawSegment<'_>) {
        self.abandon_adoption(cx, seg);
        if self.adopt_newer_syn_ack(cx, seg) || self.is_stale(cx, seg) {
            return;
        }
        if let Some((v, _)) = seg.opts.ts {
            self.tgt.note_target_ts(v);
        }
        if seg.has(RST) {
            if self.redo_handshake_on_early_rst(cx, seg) {
                return;
            }
            self.on_target_reset(cx);
            return;
        }
        if seg.has(SYN) {
            self.pending_ack = true; // our third ACK was lost
            return;
        }
        if seg.has(ACK) {
            self.on_target_ack(cx, seg);
        }
        self.on_answer_bytes(cx, seg);
        if seg.has(FIN) {
            if self.tgt.take_fin(seg.seq, seg.payload_len) {
                // Production's FIN moved the client's ack by one too.
                self.pacer.on_answer_fin(cx.now);
            }
            self.pending_ack = true;
        }
        self.check_done(cx);
        self.check_client_rst(cx);
        self.open_gates(cx);
    }

    /// The target answered our retransmitted SYN with a new ISN: its first request socket is
    /// gone and only the newest SYN-ACK is live (an ACK of the old one gets a RST). While the
    /// target has acknowledged none of our data, adopt it and resend with the new ack.
    fn adopt_newer_syn_ack(&mut self, cx: &mut SessionCtx<'_>, seg: &RawSegment<'_>) -> bool {
        let first = self.snd.iss + 1;
        if !(seg.has(SYN)
            && seg.has(ACK)
            && !seg.has(RST)
            && seg.ack == first
            && seg.seq + 1 != self.tgt.rcv_nxt
            && self.snd.una == first
            && !self.tgt.fin)
        {
            return false;
        }
        cx.stats.syn_ack_adopted += 1;
        self.tgt.abandoned_rcv = Some(self.tgt.rcv_nxt);
        self.tgt.rcv_nxt = seg.seq + 1;
        if let Some((v, _)) = seg.opts.ts {
            self.tgt.start_target_ts(v);
        }
        self.snd.nxt = self.snd.una;
        self.snd.dupacks = 0;
        self.pending_ack = true;
        true
    }

    /// A segment of the connection whose SYN-ACK we gave up for a newer one acknowledges our
    /// data: the target established that one after all (our ACK reached its request socket
    /// before the retransmitted SYN drew the newer SYN-ACK, or a SYN-cookie listener accepted
    /// either). Only one connection can hold the 4-tuple, so go back to it; otherwise its
    /// answer reads as stale for ever and the target's socket never closes.
    fn abandon_adoption(&mut self, cx: &mut SessionCtx<'_>, seg: &RawSegment<'_>) {
        let Some(first_rcv) = self.tgt.abandoned_rcv else {
            return;
        };
        if !(self.acks_our_data_near(seg, first_rcv)
            && seg.seq.diff(first_rcv).unsigned_abs()
                < seg.seq.diff(self.tgt.rcv_nxt).unsigned_abs())
        {
            return;
        }
        cx.stats.redo_abandoned += 1;
        // The newer SYN-ACK is the abandoned one now: the target's RST for our segments on it
        // is not for us.
        self.tgt.abandoned_rcv = Some(self.tgt.rcv_nxt);
        self.tgt.rcv_nxt = first_rcv;
        if let Some((v, _)) = seg.opts.ts {
            self.tgt.start_target_ts(v);
        }
        self.snd.nxt = self.snd.una;
        self.snd.dupacks = 0;
    }

    /// A plain ACK (no SYN, no RST) that acknowledges some of our data and whose sequence
    /// number lies in the receive range around `rcv`: the target's answer on the connection
    /// whose sequence numbers start near `rcv`.
    fn acks_our_data_near(&self, seg: &RawSegment<'_>, rcv: SeqNumber) -> bool {
        seg.has(ACK)
            && !seg.has(SYN)
            && !seg.has(RST)
            && seg.ack > self.snd.iss + 1
            && seg.ack <= self.snd.max
            && in_receive_range(seg.seq, rcv)
    }

    /// A late segment of an earlier connection on this 4-tuple (port reuse, re-establishment)
    /// carries sequence numbers far from ours: never let it move rcv_nxt or end the session.
    /// Nor the target's answer to our ACK of a SYN-ACK we abandoned.
    fn is_stale(&mut self, cx: &mut SessionCtx<'_>, seg: &RawSegment<'_>) -> bool {
        let stale = !in_receive_range(seg.seq, self.tgt.rcv_nxt)
            || seg.has(RST) && self.tgt.abandoned_rcv == Some(seg.seq);
        if stale {
            cx.stats.responses_stale += 1;
        }
        stale
    }

    /// Reset before any of our data was acked: the target dropped the request socket our ACK
    /// was for (a newer SYN-ACK of a retransmitted SYN is on its way or lost, or a listener
    /// whose accept queue overflowed pruned it). Do the handshake again with the same ISN
    /// instead of losing the request.
    ///
    /// After a retransmission the target might have answered (reports lost) and dropped the
    /// connection since, and a new handshake would deliver the request twice. A connection
    /// that answered ends with a reset carrying ACK (an abort) or, once its FIN_WAIT2 or
    /// TIME_WAIT is over, not before a minute. So after a retransmission only a reset
    /// without ACK (the answer of a host that has no socket for the 4-tuple) within
    /// [`NO_SOCKET_RESET_WINDOW`] of our last progress redoes the handshake: the reset an
    /// overloaded listener sends when our retransmitted ACK finds its request socket pruned.
    fn redo_handshake_on_early_rst(
        &mut self,
        cx: &mut SessionCtx<'_>,
        seg: &RawSegment<'_>,
    ) -> bool {
        let first = self.snd.iss + 1;
        let no_socket_reset = !seg.has(ACK)
            && cx.now.saturating_duration_since(self.snd.last_progress) < NO_SOCKET_RESET_WINDOW;
        if !(seg.seq == self.tgt.rcv_nxt
            && self.snd.una == first
            && self.snd.max > first
            && !self.tgt.fin
            && (self.snd.retries == 0 || no_socket_reset)
            && self.tgt.redone_handshakes < MAX_REDONE_HANDSHAKES)
        {
            return false;
        }
        cx.stats.handshakes_redone += 1;
        self.tgt.redone_handshakes += 1;
        self.state = State::SynSent;
        self.snd.nxt = self.snd.iss;
        self.snd.una = self.snd.iss;
        self.snd.dupacks = 0;
        self.snd.stop();
        self.pending_syn = true;
        true
    }

    /// Redoing the handshake, a target segment acknowledges data we sent on the connection we
    /// gave up: that connection lives, so take it up again where it is instead of resetting it
    /// as stale and sending the request a second time on a new one.
    ///
    /// A reset without ACK does not prove the target has no connection: a listener in SYN-cookie
    /// mode whose accept queue dropped our first data segment resets every later segment (its
    /// sequence number no longer encodes the cookie) and still accepts that first segment's
    /// retransmission, which may be on its way when the reset makes us redo the handshake. The
    /// redo keeps our ISN, so an ack between our first byte and the highest we sent belongs to
    /// this sequence space and no other connection's.
    fn abandon_redo(&mut self, cx: &mut SessionCtx<'_>, seg: &RawSegment<'_>) -> bool {
        if !(self.tgt.redone_handshakes > 0 && self.acks_our_data_near(seg, self.tgt.rcv_nxt)) {
            return false;
        }
        let first = self.snd.iss + 1;
        cx.stats.redo_abandoned += 1;
        self.state = State::Established;
        self.pending_syn = false;
        // A reset queued for what looked like a stale connection is for this one.
        self.pending_rst = [None, None];
        self.snd.una = first;
        self.snd.nxt = first;
        self.snd.dupacks = 0;
        // The ack this segment carries moves `una` and re-arms the timer.
        true
    }

    /// The target reset the clone: absorb the client until it ends (counted as the session's
    /// end once the client closed too).
    fn on_target_reset(&mut self, cx: &mut SessionCtx<'_>) {
        tracing::debug!(parent: &self.span, "target reset");
        self.state = State::Dead;
        self.snd.stop();
        self.release_buffers(cx);
        if self.stream.fin().is_some() || self.client_rst {
            self.finish(cx, RawEndReason::TargetReset);
        } else {
            cx.stats.target_resets += 1;
        }
    }

    /// The target's ack and window: new data acknowledged, a duplicate ack, or a window update.
    fn on_target_ack(&mut self, cx: &mut SessionCtx<'_>, seg: &RawSegment<'_>) {
        let wnd = u32::from(seg.window) << self.snd.shift;
        if seg.ack > self.snd.una && seg.ack <= self.snd.max {
            self.on_ack_advance(cx, seg.ack);
        } else if seg.ack == self.snd.una
            && seg.payload_len == 0
            && !seg.has(FIN)
            && self.snd.max > self.snd.una
            && wnd == self.snd.wnd
            && self.snd.on_dupack()
        {
            cx.stats.fast_retransmits += 1;
            self.timers.lossy = true;
        }
        self.snd.wnd = wnd;
        if wnd > 0 {
            self.snd.probe = false;
        } else if self.snd.rto_at.is_none()
            && self.snd.una == self.snd.max
            && self.stream.next() > self.snd.nxt
        {
            // Persist timer (RFC 9293 §3.8.6.1): a lost window update must not stall us.
            self.snd.rto_at = Some(cx.now + self.snd.rto);
        }
    }

    /// The target's answer bytes: counted for the release gate, and the end of the timed
    /// request's latency.
    fn on_answer_bytes(&mut self, cx: &mut SessionCtx<'_>, seg: &RawSegment<'_>) {
        if seg.payload_len == 0 {
            return;
        }
        let now = cx.now;
        let new = self.tgt.take_payload(seg.seq, seg.payload_len);
        if new < u64::from(seg.payload_len) {
            // The target sent some of it again: it lost our ACK, or we lost its segment.
            self.timers.lossy = true;
        }
        if new > 0 {
            cx.stats.response_bytes += new;
            self.snd.last_progress = now;
            if let Some(sent) = self.pacer.on_answer(new, now) {
                cx.stats.record_latency(now.saturating_duration_since(sent));
                if cx.cfg.request_timing_events {
                    // The prefix is the answer's first bytes only when this segment starts it.
                    let starts = new == u64::from(seg.payload_len);
                    // A timing still waiting for production goes without it: a new answer
                    // means a new request.
                    if let Some(ev) = self.report_flush() {
                        cx.events.push_back(ev);
                    }
                    let answer = if starts {
                        seg.payload.to_vec()
                    } else {
                        Vec::new()
                    };
                    let r = self.report.get_or_insert_with(Default::default);
                    let (request, production) = match r.request.take() {
                        Some(q) => {
                            let p = r.take_production(q.seq);
                            if p.is_none() && r.production_may_come(q.seq) {
                                // Production has not answered yet: wait for it.
                                r.waiting = Some(super::report::Waiting {
                                    seq: q.seq,
                                    sent,
                                    answered: now,
                                    request: Vec::from(q.bytes),
                                    answer,
                                });
                                self.pending_ack = true;
                                return;
                            }
                            (Vec::from(q.bytes), p)
                        }
                        None => (Vec::new(), None),
                    };
                    cx.events.push_back(EngineEvent::RequestTiming {
                        client: self.client,
                        target: self.target,
                        sent,
                        answered: now,
                        request,
                        answer,
                        production,
                    });
                }
            }
        }
        self.pending_ack = true;
    }

    /// New data acknowledged: the client stream lets go of it and the send side moves on.
    fn on_ack_advance(&mut self, cx: &mut SessionCtx<'_>, ack: SeqNumber) {
        let dropped = self.stream.acked(ack, cx.spares, cx.mem);
        cx.stats.bytes_acked += dropped as u64;
        if let Some(r) = self.snd.on_ack(cx.cfg, ack, cx.now) {
            cx.paths.learn(self.target.ip(), r);
        }
    }

    /// RFC 6298 §2 RTT estimation, for this session and its path.
    fn rtt_sample(&mut self, cx: &mut SessionCtx<'_>, r: std::time::Duration) {
        let r = self.snd.rtt_sample(cx.cfg, r);
        cx.paths.learn(self.target.ip(), r);
    }

    /// Both FINs are through: linger in TIME_WAIT.
    fn check_done(&mut self, cx: &mut SessionCtx<'_>) {
        let fin_acked = self.stream.fin().is_some_and(|f| self.snd.una > f);
        if self.tgt.fin && fin_acked && self.state == State::Established {
            self.state = State::TimeWait;
            self.snd.rto_at = None;
            self.timers.linger_from(cx.now, cx.cfg.linger);
            self.release_buffers(cx);
        }
    }
}
