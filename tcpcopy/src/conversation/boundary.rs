//! Where a request starts in the client's stream (the rule is in the parent module's header).
//!
//! Sees only what the capture shows of a conversation, in stream order: the ack on each piece of
//! client data, and (where the mode sees it) that production's answer bytes came. Holds no bytes
//! and no time; what a start means (hold it at the gate, or mark a new message) is the caller's.

use tcpclone::seq::SeqNumber;

/// What differs between the modes in where a request starts: named here, not in a copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BoundaryRules {
    /// The client's first data is a request start. Raw mode: off, the handshake is "request
    /// 0" and its first request is released with the handshake. Stream mode: on, every request
    /// is a message to time and measure.
    pub first_data_starts: bool,
    /// Production's answer bytes seen since the client's previous data make the next client
    /// data a request start, even when its ack did not move (a capture that holds the answer but
    /// not the client's ack of it). Stream mode: on. Raw mode: off; it captures the client's
    /// side only and never reports production's answer.
    pub server_data_starts: bool,
}

impl BoundaryRules {
    /// Raw mode's rules: the ack moved, nothing else.
    pub const RAW: BoundaryRules = BoundaryRules {
        first_data_starts: false,
        server_data_starts: false,
    };
    /// Stream mode's rules: the first data, the ack moved, or production spoke.
    pub const STREAM: BoundaryRules = BoundaryRules {
        first_data_starts: true,
        server_data_starts: true,
    };
}

/// Whether a piece of client data starts a request, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RequestStart {
    /// The same request goes on.
    Continues,
    /// The client's first data ([`BoundaryRules::first_data_starts`]).
    First,
    /// Production's answer came since the client's previous data, its ack did not show it
    /// ([`BoundaryRules::server_data_starts`]).
    AfterServerData,
    /// The client's ack moved since its previous data: production answered `expected` bytes
    /// (and FIN) to the request before, which the next one waits for.
    AckMoved {
        /// How far the ack moved.
        expected: u32,
    },
}

impl RequestStart {
    /// A request starts here.
    #[inline]
    pub fn is_start(self) -> bool {
        self != RequestStart::Continues
    }
}

/// One conversation's request boundaries: the client's ack on its last data, and what came
/// since.
#[derive(Debug, Default)]
pub(crate) struct RequestBoundaries {
    /// The client's ack on its last data (or on the handshake's third ACK); the highest seen.
    last_data_ack: Option<SeqNumber>,
    /// Client data was seen.
    data_seen: bool,
    /// Production's answer bytes came since the client's last data.
    server_spoke: bool,
}

impl RequestBoundaries {
    /// Nothing seen yet.
    pub fn new() -> RequestBoundaries {
        RequestBoundaries::default()
    }

    /// Forgets the conversation (re-establishment after a capture gap).
    pub fn restart(&mut self) {
        *self = RequestBoundaries::default();
    }

    /// The handshake's third ACK (no data, no FIN): the handshake is "request 0", so the first
    /// data whose ack moved past it (a server greeting) is a start that waits for the greeting.
    #[inline]
    pub fn note_handshake_ack(&mut self, ack: SeqNumber) {
        if self.last_data_ack.is_none() {
            self.last_data_ack = Some(ack);
        }
    }

    /// Client data was seen since the start (or the last restart).
    #[inline]
    pub fn data_seen(&self) -> bool {
        self.data_seen
    }

    /// Production's answer bytes were captured (in stream order).
    #[inline]
    pub fn on_server_data(&mut self) {
        self.server_spoke = true;
    }

    /// Client data (or a bare FIN) carrying `ack`, in stream order: whether it starts a request
    /// under `rules`. The ack moved is checked first, so that the start says what production
    /// answered. An ack lower than one already seen (a segment sent earlier, captured late)
    /// neither starts a request nor hides the next one's movement.
    #[inline]
    pub fn on_client_data(
        &mut self,
        ack: Option<SeqNumber>,
        rules: &BoundaryRules,
    ) -> RequestStart {
        let start = match (self.last_data_ack, ack) {
            (Some(l), Some(a)) if a > l => {
                self.last_data_ack = Some(a);
                RequestStart::AckMoved {
                    expected: a.diff(l) as u32,
                }
            }
            (None, Some(a)) => {
                self.last_data_ack = Some(a);
                RequestStart::Continues
            }
            _ => RequestStart::Continues,
        };
        let start = match start {
            RequestStart::Continues if rules.first_data_starts && !self.data_seen => {
                RequestStart::First
            }
            RequestStart::Continues if rules.server_data_starts && self.server_spoke => {
                RequestStart::AfterServerData
            }
            s => s,
        };
        self.data_seen = true;
        self.server_spoke = false;
        start
    }

    /// A data segment seen past a hole in the capture proves the hole when its ack moved:
    /// production answered the request the hole is in.
    #[inline]
    pub fn proves_missed(&self, ack: Option<SeqNumber>, has_data: bool) -> bool {
        has_data && self.ack_moved(ack)
    }

    /// Client data after a capture gap starts a new request when its ack moved; else the same
    /// request continues.
    #[inline]
    pub fn ack_moved(&self, ack: Option<SeqNumber>) -> bool {
        matches!((ack, self.last_data_ack), (Some(a), Some(l)) if a > l)
    }

    /// Follows the client's ack while the stream is not replayed (after a capture gap).
    pub fn follow_ack(&mut self, ack: SeqNumber) {
        self.last_data_ack = Some(self.last_data_ack.map_or(ack, |l| l.max(ack)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn after_handshake() -> RequestBoundaries {
        let mut b = RequestBoundaries::new();
        b.note_handshake_ack(SeqNumber(5001));
        b
    }

    #[test]
    fn raw_rules_start_a_request_only_where_the_ack_moved() {
        let r = BoundaryRules::RAW;
        let mut b = after_handshake();
        assert_eq!(
            b.on_client_data(Some(SeqNumber(5001)), &r),
            RequestStart::Continues
        );
        assert_eq!(
            b.on_client_data(Some(SeqNumber(5001)), &r),
            RequestStart::Continues
        );
        b.on_server_data(); // never reported in raw mode; the rule ignores it anyway
        assert_eq!(b.on_client_data(None, &r), RequestStart::Continues);
        assert_eq!(
            b.on_client_data(Some(SeqNumber(5101)), &r),
            RequestStart::AckMoved { expected: 100 }
        );
        assert_eq!(b.last_data_ack, Some(SeqNumber(5101)));
    }

    #[test]
    fn a_greeting_makes_the_first_data_wait() {
        let mut b = after_handshake();
        assert_eq!(
            b.on_client_data(Some(SeqNumber(5013)), &BoundaryRules::RAW),
            RequestStart::AckMoved { expected: 12 }
        );
    }

    #[test]
    fn stream_rules_also_start_at_the_first_data_and_after_production_spoke() {
        let r = BoundaryRules::STREAM;
        let mut b = RequestBoundaries::new();
        assert_eq!(
            b.on_client_data(Some(SeqNumber(1)), &r),
            RequestStart::First
        );
        assert_eq!(
            b.on_client_data(Some(SeqNumber(1)), &r),
            RequestStart::Continues
        );
        b.on_server_data();
        assert_eq!(
            b.on_client_data(Some(SeqNumber(1)), &r),
            RequestStart::AfterServerData
        );
        assert_eq!(b.on_client_data(None, &r), RequestStart::Continues);
        b.on_server_data();
        assert_eq!(
            b.on_client_data(Some(SeqNumber(30)), &r),
            RequestStart::AckMoved { expected: 29 },
            "the ack says how much production answered"
        );
    }

    #[test]
    fn a_late_lower_ack_does_not_hide_the_next_movement() {
        let r = BoundaryRules::RAW;
        let mut b = after_handshake();
        assert!(b.on_client_data(Some(SeqNumber(5101)), &r).is_start());
        assert!(!b.on_client_data(Some(SeqNumber(5050)), &r).is_start());
        assert_eq!(
            b.on_client_data(Some(SeqNumber(5201)), &r),
            RequestStart::AckMoved { expected: 100 }
        );
    }

    #[test]
    fn missed_segment_is_proven_by_a_moved_ack_with_data() {
        let b = after_handshake();
        assert!(b.proves_missed(Some(SeqNumber(5002)), true));
        assert!(!b.proves_missed(Some(SeqNumber(5002)), false));
        assert!(!b.proves_missed(Some(SeqNumber(5001)), true));
        assert!(!b.proves_missed(None, true));
        assert!(b.ack_moved(Some(SeqNumber(5002))));
    }
}
