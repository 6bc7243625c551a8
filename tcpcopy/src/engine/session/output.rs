//! What the session sends the target next: a RST, our SYN, data (a fast retransmission, then new
//! or gone-back-N bytes up to the next held request and the window), our FIN, or a bare ACK.

use super::{EngineSession, SessionCtx, State};
use crate::engine::packet::{self, OutSegment, Path, TcpOpts, ACK, FIN, PSH, RST, SYN};
use tcpclone::seq::SeqNumber;

/// What [`EngineSession::transmit`] wrote: the packet's length and, for a super-segment, its MSS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Sent {
    pub len: usize,
    pub gso_size: Option<u16>,
    /// With [`SessionCtx::payload_by_ref`], a super-segment's payload left in the client stream:
    /// `len` bytes from `seq`, after the `len` header bytes written.
    pub payload: Option<(SeqNumber, u32)>,
}

impl EngineSession {
    /// How far data may go now: captured, not past the next held request, within the window.
    #[inline]
    fn data_limit(&self) -> SeqNumber {
        let mut lim = self.stream.next();
        if let Some(b) = self.pacer.next_boundary() {
            lim = lim.min(b);
        }
        self.snd.limit(lim)
    }

    /// Our FIN may go: everything before it sent, no request held at it, room in the window,
    /// and, when data comes before it, some of that data acknowledged.
    ///
    /// Until the target acknowledges our first bytes it may have no socket for us: a listener
    /// in SYN-cookie mode whose accept queue was full dropped the segment that completed the
    /// handshake. It resets a FIN after that segment (the FIN's sequence number no longer checks
    /// as a cookie), while a retransmission of the first segment still completes the handshake
    /// once the queue has room. A FIN sent at once got every redone handshake reset the same way
    /// and the request lost.
    fn fin_ready(&self) -> bool {
        match self.stream.fin() {
            Some(f) => {
                let first = self.snd.iss + 1;
                self.snd.nxt == f
                    && self.stream.next() == f
                    && self.pacer.next_boundary() != Some(f)
                    && self.snd.una + self.snd.wnd.max(1) >= f
                    && (self.snd.una > first || f == first)
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
            && (self.snd.fast_rexmit || self.snd.nxt < self.data_limit() || self.fin_ready())
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

    /// Writes the next segment for the target into `buf`.
    pub fn transmit(&mut self, cx: &mut SessionCtx<'_>, buf: &mut [u8]) -> Option<Sent> {
        *cx.ip_id = cx.ip_id.wrapping_add(1);
        let id = *cx.ip_id;
        if let Some(seq) = self.pending_rst[0] {
            self.pending_rst = [self.pending_rst[1], None];
            let flags = if self.tgt.rcv_nxt == SeqNumber(0) {
                RST
            } else {
                RST | ACK
            };
            let seg = self.out(seq, self.tgt.rcv_nxt, flags, TcpOpts::default(), id)?;
            return self.emit(cx, &seg, buf);
        }
        if self.end.is_none() && self.pending_syn {
            return self.send_syn(cx, buf, id);
        }
        if self.end.is_none() && self.state == State::Established {
            if self.snd.fast_rexmit {
                self.snd.fast_rexmit = false;
                let end = self.snd.max.min(self.stream.next());
                let len = (end.diff(self.snd.una).max(0) as usize).min(self.snd.seg_max);
                let len = self.gatherable(self.snd.una, len);
                if len > 0 {
                    return self.send_data(cx, self.snd.una, len, buf, id);
                }
            }
            let lim = self.data_limit();
            if self.snd.nxt < lim {
                let len = (lim.diff(self.snd.nxt) as usize).min(self.snd.burst_max(cx.cfg));
                let seq = self.snd.nxt;
                let len = self.gatherable(seq, len);
                let n = self.send_data(cx, seq, len, buf, id);
                self.snd.probe = false;
                return n;
            }
            if self.fin_ready() {
                return self.send_fin(cx, buf, id);
            }
        }
        if self.pending_ack {
            self.pending_ack = false;
            let seq = if self.state == State::TimeWait {
                self.snd.max
            } else {
                self.snd.nxt
            };
            let opts = TcpOpts {
                ts: self.tgt.ts_opt(),
                ..TcpOpts::default()
            };
            let seg = self.out(seq, self.tgt.rcv_nxt, ACK, opts, id)?;
            return self.emit(cx, &seg, buf);
        }
        None
    }

    /// Our SYN (first or retransmitted), starting the handshake's RTT sample.
    fn send_syn(&mut self, cx: &mut SessionCtx<'_>, buf: &mut [u8], id: u16) -> Option<Sent> {
        let now = cx.now;
        self.pending_syn = false;
        let mut opts = self.syn_opts;
        if opts.ts.is_some() {
            opts.ts = Some((self.tgt.syn_ts(), 0));
        }
        let seg = self.out(self.snd.iss, SeqNumber(0), SYN, opts, id)?;
        self.snd.nxt = self.snd.iss + 1;
        self.snd.max = self.snd.max.max(self.snd.nxt);
        self.pacer.on_new_data_sent(now);
        self.snd.rto_at.get_or_insert(now + self.snd.rto);
        if self.snd.retries > 0 {
            cx.stats.segments_retransmitted += 1;
        }
        self.emit(cx, &seg, buf)
    }

    /// Our FIN, once everything before it went.
    fn send_fin(&mut self, cx: &mut SessionCtx<'_>, buf: &mut [u8], id: u16) -> Option<Sent> {
        let now = cx.now;
        let f = self.snd.nxt;
        let opts = TcpOpts {
            ts: self.tgt.ts_opt(),
            ..TcpOpts::default()
        };
        let seg = self.out(f, self.tgt.rcv_nxt, FIN | ACK, opts, id)?;
        if f < self.snd.max {
            cx.stats.segments_retransmitted += 1;
        }
        self.snd.nxt = f + 1;
        if self.snd.nxt > self.snd.max {
            self.snd.max = self.snd.nxt;
            self.pacer.on_new_data_sent(now);
        }
        self.snd.rto_at.get_or_insert(now + self.snd.rto);
        self.pending_ack = false;
        self.emit(cx, &seg, buf)
    }

    /// Of `len` bytes from `seq`, what one segment takes: the stream gives at most two pieces
    /// at once (with capture-block pieces among them a super-segment may end short). `len`
    /// when none is held there (the send then finds nothing, as before).
    #[inline]
    fn gatherable(&self, seq: SeqNumber, len: usize) -> usize {
        match self.stream.span(seq, len) {
            0 => len,
            n => n,
        }
    }

    fn send_data(
        &mut self,
        cx: &mut SessionCtx<'_>,
        seq: SeqNumber,
        len: usize,
        buf: &mut [u8],
        id: u16,
    ) -> Option<Sent> {
        let now = cx.now;
        let payload = self.stream.bytes(seq, len)?;
        let opts = TcpOpts {
            ts: self.tgt.ts_opt(),
            ..TcpOpts::default()
        };
        let mut seg = self.out(seq, self.tgt.rcv_nxt, ACK | PSH, opts, id)?;
        seg.payload = payload;
        let seg_max = self.snd.seg_max;
        // A super-segment leaves its TCP checksum to the kernel (or to the software
        // segmentation of the fallback path): summing 64 KiB here would be wasted.
        let gso_size = (len > seg_max).then_some(seg_max as u16);
        // A super-segment's payload may stay where it is, for the sender to gather: copying
        // 64 KiB here only for the kernel to copy it again is the sender's largest cost on
        // uploads after the kernel's own copy.
        let by_ref = gso_size.is_some() && cx.payload_by_ref;
        let n = if by_ref {
            packet::build_headers(&seg, buf)?
        } else {
            packet::build_with(&seg, buf, gso_size.is_some())?
        };
        let pieces = len.div_ceil(seg_max.max(1)).max(1);
        // The pieces carry consecutive IPv4 identifications (the kernel numbers them).
        *cx.ip_id = cx.ip_id.wrapping_add((pieces - 1) as u16);
        let end = seq + len as u32;
        let first_send = seq >= self.snd.max;
        if first_send {
            cx.stats.bytes_sent += len as u64;
        } else {
            cx.stats.segments_retransmitted += pieces as u64;
        }
        if self
            .pacer
            .on_request_bytes_sent(seq, end, first_send, now, cx.cfg.no_wait)
        {
            cx.stats.requests_sent += 1;
            if cx.cfg.request_timing_events {
                // The report's endpoint: a released request starts where the send side stood,
                // so at this segment's first byte.
                let n = len.min(crate::engine::REQUEST_PREVIEW);
                let bytes = self
                    .stream
                    .bytes(seq, n)
                    .map(|(a, b)| [a, b].concat().into_boxed_slice());
                self.report.get_or_insert_with(Default::default).request =
                    bytes.map(|bytes| super::report::TimedRequest {
                        seq,
                        sent: now,
                        bytes,
                    });
            }
        }
        if self.snd.on_sent(seq, end, now) {
            self.pacer.on_new_data_sent(now);
        }
        self.pending_ack = false;
        cx.stats.segments_sent += pieces as u64;
        tracing::trace!(parent: &self.span, seq = seq.value(), len, "data");
        Some(Sent {
            len: n,
            gso_size,
            payload: by_ref.then_some((seq, len as u32)),
        })
    }

    fn emit(
        &mut self,
        cx: &mut SessionCtx<'_>,
        seg: &OutSegment<'_>,
        buf: &mut [u8],
    ) -> Option<Sent> {
        let n = packet::build(seg, buf)?;
        cx.stats.segments_sent += 1;
        tracing::trace!(parent: &self.span, seq = seg.seq.value(), flags = seg.flags, "control");
        Some(Sent {
            len: n,
            gso_size: None,
            payload: None,
        })
    }
}
