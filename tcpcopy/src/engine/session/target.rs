//! The target's side of one clone: what it sent us (as intercept reports it) and the timestamps
//! both ways (RFC 7323).
//!
//! Pure bookkeeping: no packets are built or parsed here.

use tcpclone::seq::SeqNumber;

/// What we know of the target's half of the connection.
#[derive(Debug)]
pub(super) struct TargetSide {
    /// Next byte expected from the target (0 before its SYN-ACK).
    pub rcv_nxt: SeqNumber,
    /// The target sent its FIN.
    pub fin: bool,
    /// Both SYNs carried timestamps: every segment carries them (RFC 7323 §3.2).
    pub ts_ok: bool,
    /// The target's latest TSval, echoed back.
    ts_recent: SeqNumber,
    /// Our last TSval sent.
    ts_out: SeqNumber,
    /// The client's latest TSval (shifted by `ts_offset`), which ours follow.
    ts_client: SeqNumber,
    /// Added to the client's TSvals so they keep rising across a replaced session on the same
    /// 4-tuple (RFC 7323 §5.5).
    ts_offset: u32,
    /// `rcv_nxt` of a SYN-ACK replaced by a newer one: the target's RST at it is not for us.
    pub abandoned_rcv: Option<SeqNumber>,
    /// Handshakes done again after a RST that came before any data was acked.
    pub redone_handshakes: u8,
}

impl TargetSide {
    /// The target's side before its SYN-ACK; `client_ts` is the TSval of the client's first
    /// segment, `prev_ts` our last TSval on this 4-tuple (a replaced session).
    pub fn new(client_ts: u32, prev_ts: Option<SeqNumber>) -> TargetSide {
        // Keep TSval rising per 4-tuple across a replaced session (RFC 7323 §5.5 / TIME_WAIT).
        let ts_offset = match prev_ts {
            Some(p) if SeqNumber(client_ts) <= p => (p + 1).diff(SeqNumber(client_ts)) as u32,
            _ => 0,
        };
        let ts0 = SeqNumber(client_ts) + ts_offset;
        TargetSide {
            rcv_nxt: SeqNumber(0),
            fin: false,
            ts_ok: false,
            ts_recent: SeqNumber(0),
            ts_out: ts0,
            ts_client: ts0,
            ts_offset,
            abandoned_rcv: None,
            redone_handshakes: 0,
        }
    }

    /// Forgets the target's side (re-establishment after a capture gap).
    pub fn restart(&mut self) {
        self.rcv_nxt = SeqNumber(0);
        self.fin = false;
        self.ts_ok = false;
    }

    /// Our last TSval.
    #[inline]
    pub fn last_ts(&self) -> SeqNumber {
        self.ts_out
    }

    /// The client's TSval `v` on a captured segment: ours follow it.
    #[inline]
    pub fn note_client_ts(&mut self, v: u32) {
        let t = SeqNumber(v) + self.ts_offset;
        self.ts_client = self.ts_client.max(t);
    }

    /// The target's TSval `v` on one of this connection's segments.
    #[inline]
    pub fn note_target_ts(&mut self, v: u32) {
        self.ts_recent = self.ts_recent.max(SeqNumber(v));
    }

    /// The TSval `v` of the SYN-ACK that opens this connection: what we echo from now on,
    /// whatever an earlier connection on the 4-tuple sent. Linux (6.x) drops an ACK completing
    /// the handshake unless its TSecr is one of the TSvals its SYN-ACKs carried.
    pub fn start_target_ts(&mut self, v: u32) {
        self.ts_recent = SeqNumber(v);
    }

    /// Our TSval for a SYN: never lower than the last one sent.
    pub fn syn_ts(&mut self) -> u32 {
        self.ts_out = self.ts_out.max(self.ts_client);
        self.ts_out.value()
    }

    /// The timestamp option (TSval, TSecr) for a segment after the handshake, if negotiated.
    #[inline]
    pub fn ts_opt(&mut self) -> Option<(u32, u32)> {
        if !self.ts_ok {
            return None;
        }
        self.ts_out = self.ts_out.max(self.ts_client);
        Some((self.ts_out.value(), self.ts_recent.value()))
    }

    /// The target's payload `[seq, seq + len)`: returns how many bytes are new (moving
    /// `rcv_nxt` past them).
    #[inline]
    pub fn take_payload(&mut self, seq: SeqNumber, len: u32) -> u64 {
        let end = seq + len;
        if end > self.rcv_nxt {
            let from = seq.max(self.rcv_nxt);
            let new = u64::from(end.diff(from) as u32);
            self.rcv_nxt = end;
            return new;
        }
        0
    }

    /// The target's FIN after `len` payload bytes at `seq`: returns `true` when it is new.
    #[inline]
    pub fn take_fin(&mut self, seq: SeqNumber, len: u32) -> bool {
        let fin_end = seq + len + 1;
        self.fin = true;
        if fin_end > self.rcv_nxt {
            self.rcv_nxt = fin_end;
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tsval_keeps_rising_across_a_replaced_session() {
        let mut t = TargetSide::new(100, Some(SeqNumber(500)));
        assert_eq!(t.syn_ts(), 501);
        t.note_client_ts(150);
        assert_eq!(t.syn_ts(), 551);
        let mut fresh = TargetSide::new(100, Some(SeqNumber(50)));
        assert_eq!(fresh.syn_ts(), 100);
    }

    #[test]
    fn ts_option_only_once_negotiated_and_echoes_the_target() {
        let mut t = TargetSide::new(7, None);
        assert_eq!(t.ts_opt(), None);
        t.ts_ok = true;
        t.note_target_ts(40);
        t.note_target_ts(30); // older: ignored
        assert_eq!(t.ts_opt(), Some((7, 40)));
        assert_eq!(t.last_ts(), SeqNumber(7));
    }

    #[test]
    fn payload_and_fin_count_only_new_bytes() {
        let mut t = TargetSide::new(0, None);
        t.rcv_nxt = SeqNumber(1000);
        assert_eq!(t.take_payload(SeqNumber(1000), 10), 10);
        assert_eq!(t.take_payload(SeqNumber(1005), 10), 5, "overlap");
        assert_eq!(t.take_payload(SeqNumber(1000), 5), 0, "duplicate");
        assert!(t.take_fin(SeqNumber(1015), 0));
        assert_eq!(t.rcv_nxt, SeqNumber(1016));
        assert!(!t.take_fin(SeqNumber(1015), 0), "retransmitted FIN");
        assert!(t.fin);
    }
}
