//! The release gate (the rule is in the parent module's header): requests held at their
//! boundaries until the target answered the one before.
//!
//! Holds no bytes and sends nothing: the caller tells it where requests start
//! ([`super::RequestBoundaries`] decides), what the target answered and how far its send side
//! got; it answers whether the next request may go, when to look again, and which request's
//! latency is being timed.

use super::boundary::RequestStart;
use std::collections::VecDeque;
use std::time::{Duration, Instant};
use tcpclone::seq::SeqNumber;

/// The release gate's options: what differs between modes and runs is here, not in a copy.
#[derive(Debug, Clone, Copy)]
pub(crate) struct GateRules {
    /// Pacing off: every request goes as soon as it is captured (`--no-wait`).
    pub no_wait: bool,
    /// Quiet time after the target's last answer byte that ends its answer. Stream mode sets
    /// it to zero: its next request goes once the answer began, then waits for its think time
    /// in the capture (the original schedule), which holds the rest of the answer's time.
    pub idle_gap: Duration,
    /// Longest wait for an answer after the last new byte was sent.
    pub response_timeout: Duration,
    /// Longest a request with data waits at the gate after it was captured, once its session
    /// holds [`GateRules::lag_min_bytes`] not sent (`None`: as long as the other rules say).
    /// A target slower than production would otherwise fall further behind with every request
    /// of a busy connection, and the requests waiting would fill the capture ring until
    /// connections are shed; past this lag the request goes behind the unanswered one instead,
    /// as a pipelining client's would.
    pub max_lag: Option<Duration>,
    /// Client bytes captured and not sent below which [`GateRules::max_lag`] does not apply
    /// ([`PIPELINE_MIN_BYTES`] but in tests).
    pub lag_min_bytes: u64,
}

/// Client bytes captured and not sent below which a session's requests wait for their answers
/// however late ([`GateRules::max_lag`]). Small requests are copied out of the capture ring as
/// they come, so waiting ones cost only their bytes: a clone that lags behind them runs late
/// and catches up once production's client pauses. Sent pipelined, they would make the target
/// keep pace with production, and a target that shares production's CPUs (as in our lab) would
/// then take production's CPU while it runs; a clone of a busy keep-alive connection there
/// lagged by more than 64 KiB of requests. Uploads stay in the ring, and reach this in a few
/// requests: waiting longer would fill the ring and get connections shed.
pub(crate) const PIPELINE_MIN_BYTES: u64 = 1 << 20;

/// A request held at the gate: where it starts and what production answered the one before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Boundary {
    /// First sequence number of the request.
    pub seq: SeqNumber,
    /// Bytes production sent in answer to the previous request (the client's ack movement).
    pub expected: u32,
    /// When the request was captured, for [`GateRules::max_lag`]; `None` for a bare FIN (a
    /// server may abort a request whose client closed, so a FIN never goes before the answer)
    /// and in stream mode.
    pub captured_at: Option<Instant>,
}

/// Why a gate opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Opened {
    /// The answer came (or the target closed, went quiet after answering, or timed out, or
    /// pacing is off): the answer count starts over.
    Answered,
    /// [`GateRules::max_lag`] passed first: the request goes behind the unanswered one, whose
    /// answer is still owed.
    Lagged,
}

/// What one [`RequestPacer::release`] let go other than on an answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Released {
    /// Requests released by the response timeout with no answer at all.
    pub timeouts: u64,
    /// Requests released by [`GateRules::max_lag`] before the previous one's answer.
    pub lagged: u64,
}

/// One conversation's request pacing: boundaries not yet released, the answer counted since
/// the last release, and the request whose latency is being timed.
#[derive(Debug)]
pub(crate) struct RequestPacer {
    /// Boundaries not yet released, in sequence order.
    boundaries: VecDeque<Boundary>,
    /// Answer bytes (and FIN) from the target since the last release on an answer.
    resp_since: u64,
    /// Answer bytes production sent to the requests released by lag since then: the target
    /// owes them before the next request's own answer counts.
    owed: u64,
    /// The first request released by lag while a timed one awaits its answer: the timed
    /// request's bytes end there (later bytes are not its last segments).
    timed_end: Option<SeqNumber>,
    /// When the target's last new answer byte came.
    last_resp_at: Option<Instant>,
    /// When the send side last sent a byte it had never sent before.
    last_new_data_at: Instant,
    /// The first byte of the request to time once it is sent.
    timing_seq: Option<SeqNumber>,
    /// When the timed request's last byte went (`None`: nothing is timed).
    req_sent_at: Option<Instant>,
}

impl RequestPacer {
    /// A pacer with nothing captured yet; `now` starts the response timeout.
    pub fn new(now: Instant) -> RequestPacer {
        RequestPacer {
            boundaries: VecDeque::new(),
            resp_since: 0,
            owed: 0,
            timed_end: None,
            last_resp_at: None,
            last_new_data_at: now,
            timing_seq: None,
            req_sent_at: None,
        }
    }

    /// Forgets the conversation (re-establishment after a capture gap); boundaries are kept as
    /// they are, the caller clears them with the bytes ([`RequestPacer::clear_boundaries`]).
    /// The response timeout restarts when the new handshake's SYN goes.
    pub fn restart(&mut self) {
        self.resp_since = 0;
        self.owed = 0;
        self.timed_end = None;
        self.last_resp_at = None;
        self.req_sent_at = None;
        self.timing_seq = None;
    }

    /// Drops every boundary not yet released (the bytes behind them are gone).
    pub fn clear_boundaries(&mut self) {
        self.boundaries.clear();
    }

    /// No boundary is waiting.
    #[inline]
    pub fn is_idle(&self) -> bool {
        self.boundaries.is_empty()
    }

    /// The next boundary held, if any: no byte at or past it may be sent yet.
    #[inline]
    pub fn next_boundary(&self) -> Option<SeqNumber> {
        self.boundaries.front().map(|b| b.seq)
    }

    /// A boundary at `at` whose caller knows what production answered before it (stream mode:
    /// the reassembled conversation says so directly, no ack to read it from); `expected` as in
    /// [`RequestStart::AckMoved`].
    pub fn note_boundary(&mut self, at: SeqNumber, expected: u32) {
        self.boundaries.push_back(Boundary {
            seq: at,
            expected,
            captured_at: None,
        });
    }

    /// Stream mode: the response timeout counts from `now`, when the request reached the gate
    /// (its session task can get it long after the previous write), not from the last write.
    pub fn wait_from(&mut self, now: Instant) {
        self.last_new_data_at = now;
    }

    /// A request goes without a boundary released for it (stream mode: production did not
    /// answer the one before): the answer count starts over with it.
    pub fn reset_answer(&mut self) {
        self.resp_since = 0;
        self.owed = 0;
        self.last_resp_at = None;
    }

    /// Client data (or a bare FIN) at `at` that [`super::RequestBoundaries`] found to be
    /// `start`: a request whose ack moved is held there. With `no_wait` nothing is held, the
    /// request is only timed. `captured_at`: when data was captured (`None` for a bare FIN).
    #[inline]
    pub fn note_request(
        &mut self,
        start: RequestStart,
        at: SeqNumber,
        no_wait: bool,
        captured_at: Option<Instant>,
    ) {
        if let RequestStart::AckMoved { expected } = start {
            if !no_wait {
                self.boundaries.push_back(Boundary {
                    seq: at,
                    expected,
                    captured_at,
                });
            } else if self.timing_seq.is_none() {
                self.timing_seq = Some(at);
            }
        }
    }

    /// The release gate for boundary `b` at `now` (`peer_closed`: the target sent its FIN;
    /// `ahead`: client bytes captured beyond the send side): whether it is open, and why.
    #[inline]
    fn gate(
        &self,
        b: &Boundary,
        now: Instant,
        rules: &GateRules,
        peer_closed: bool,
        ahead: u64,
    ) -> Option<Opened> {
        let answered = rules.no_wait
            || peer_closed
            || self.resp_since >= self.owed + u64::from(b.expected)
            || (self.resp_since > self.owed
                && self.last_resp_at.is_some_and(|t| now >= t + rules.idle_gap))
            || now >= self.last_new_data_at + rules.response_timeout;
        if answered {
            return Some(Opened::Answered);
        }
        self.lag_end(b, rules, ahead)
            .is_some_and(|t| now >= t)
            .then_some(Opened::Lagged)
    }

    /// When `b` goes by [`GateRules::max_lag`], if it may.
    #[inline]
    fn lag_end(&self, b: &Boundary, rules: &GateRules, ahead: u64) -> Option<Instant> {
        if ahead < rules.lag_min_bytes {
            return None;
        }
        b.captured_at.zip(rules.max_lag).map(|(t, lag)| t + lag)
    }

    /// Releases every boundary the send side reached (`sent_upto`: its highest sequence number
    /// sent; `ahead`: client bytes captured beyond it) whose gate is open; says how many went
    /// with no answer.
    #[inline]
    pub fn release(
        &mut self,
        now: Instant,
        sent_upto: SeqNumber,
        rules: &GateRules,
        peer_closed: bool,
        ahead: u64,
    ) -> Released {
        let mut r = Released::default();
        while let Some(b) = self.boundaries.front().copied() {
            if sent_upto != b.seq {
                break;
            }
            let Some(why) = self.gate(&b, now, rules, peer_closed, ahead) else {
                break;
            };
            self.boundaries.pop_front();
            match why {
                Opened::Answered => {
                    if self.resp_since == 0 && !rules.no_wait {
                        r.timeouts += 1;
                    }
                    self.resp_since = 0;
                    self.owed = 0;
                    self.last_resp_at = None;
                    self.timing_seq = Some(b.seq);
                    self.timed_end = None;
                }
                Opened::Lagged => {
                    // Not timed: its answer comes behind the one awaited, whose latency the
                    // next answer ends.
                    r.lagged += 1;
                    self.owed += u64::from(b.expected);
                    if self.req_sent_at.is_some() || self.timing_seq.is_some() {
                        self.timed_end.get_or_insert(b.seq);
                    }
                }
            }
        }
        r
    }

    /// When the gate of the next boundary opens by time alone, once the send side reached it.
    #[inline]
    pub fn deadline(&self, sent_upto: SeqNumber, rules: &GateRules, ahead: u64) -> Option<Instant> {
        let b = self.boundaries.front()?;
        if sent_upto != b.seq {
            return None;
        }
        let mut at = self.last_new_data_at + rules.response_timeout;
        if let Some(t) = self.last_resp_at.filter(|_| self.resp_since > self.owed) {
            at = at.min(t + rules.idle_gap);
        }
        if let Some(t) = self.lag_end(b, rules, ahead) {
            at = at.min(t);
        }
        Some(at)
    }

    /// Until when requests sent pipelined ([`GateRules::max_lag`]) still await an answer before
    /// the one the target is on, if any: the target reads those from its socket after answering,
    /// and a reset of the connection meanwhile would destroy them unread. `None` once their
    /// answers came; past the instant given, the response timeout after the last new byte, the
    /// wait is over whatever came.
    #[inline]
    pub fn owed_until(&self, rules: &GateRules) -> Option<Instant> {
        (self.resp_since < self.owed).then(|| self.last_new_data_at + rules.response_timeout)
    }

    /// A handshake completed at `now`: the answer count starts over, and the first request is
    /// timed unless one already is.
    pub fn on_established(&mut self, now: Instant, first: SeqNumber) {
        self.last_new_data_at = now;
        self.resp_since = 0;
        self.owed = 0;
        self.last_resp_at = None;
        if self.timing_seq.is_none() {
            self.timing_seq = Some(first);
        }
    }

    /// The send side sent bytes it had never sent before (or a SYN/FIN) at `now`.
    #[inline]
    pub fn on_new_data_sent(&mut self, now: Instant) {
        self.last_new_data_at = now;
    }

    /// When new data was last sent (for the handshake's RTT sample).
    #[inline]
    pub fn last_new_data_at(&self) -> Instant {
        self.last_new_data_at
    }

    /// New request bytes `[seq, end)` went at `now`: returns `true` when they carry the start
    /// of the request being timed (one more request sent). Latency counts from the request's
    /// last byte: while its answer is awaited, each later segment of it moves the start.
    #[inline]
    pub fn on_request_bytes_sent(
        &mut self,
        seq: SeqNumber,
        end: SeqNumber,
        first_send: bool,
        now: Instant,
        no_wait: bool,
    ) -> bool {
        let timed_bytes = self.timed_end.is_none_or(|e| seq < e);
        if first_send && !no_wait && self.req_sent_at.is_some() && end > seq && timed_bytes {
            self.req_sent_at = Some(now);
        }
        match self.timing_seq {
            Some(t) if t >= seq && t < end => {
                self.timing_seq = None;
                self.req_sent_at = Some(now);
                true
            }
            _ => false,
        }
    }

    /// `n` new answer bytes from the target at `now`; returns when the timed request was sent
    /// (its latency ends now).
    #[inline]
    pub fn on_answer(&mut self, n: u64, now: Instant) -> Option<Instant> {
        self.resp_since += n;
        self.last_resp_at = Some(now);
        self.req_sent_at.take()
    }

    /// The target's FIN: it moved production's client ack by one too.
    #[inline]
    pub fn on_answer_fin(&mut self, now: Instant) {
        self.resp_since += 1;
        self.last_resp_at = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: GateRules = GateRules {
        no_wait: false,
        idle_gap: Duration::from_millis(3),
        response_timeout: Duration::from_millis(500),
        max_lag: None,
        lag_min_bytes: PIPELINE_MIN_BYTES,
    };

    /// Enough bytes beyond the send side for the lag rule.
    const BIG: u64 = PIPELINE_MIN_BYTES;

    const MOVED: RequestStart = RequestStart::AckMoved { expected: 100 };

    fn pacer() -> (RequestPacer, Instant) {
        let now = Instant::now();
        (RequestPacer::new(now), now)
    }

    #[test]
    fn held_only_where_the_ack_moved() {
        let (mut p, _) = pacer();
        p.note_request(RequestStart::Continues, SeqNumber(1001), false, None);
        p.note_request(RequestStart::First, SeqNumber(1001), false, None);
        p.note_request(RequestStart::AfterServerData, SeqNumber(1010), false, None);
        assert_eq!(
            p.next_boundary(),
            None,
            "nothing production answered to wait for"
        );
        p.note_request(MOVED, SeqNumber(1020), false, None);
        assert_eq!(p.next_boundary(), Some(SeqNumber(1020)));
        assert_eq!(p.boundaries[0].expected, 100);
    }

    #[test]
    fn no_wait_times_but_never_holds() {
        let (mut p, now) = pacer();
        p.note_request(MOVED, SeqNumber(1020), true, None);
        assert!(p.is_idle());
        assert!(p.on_request_bytes_sent(SeqNumber(1020), SeqNumber(1030), true, now, true));
    }

    #[test]
    fn gate_opens_on_full_answer_idle_gap_fin_or_timeout() {
        let (mut p, t0) = pacer();
        p.note_request(MOVED, SeqNumber(1020), false, None);
        let b = p.boundaries[0];
        assert!(p.gate(&b, t0, &RULES, false, BIG).is_none());
        assert!(p.gate(&b, t0, &RULES, true, BIG).is_some(), "target closed");
        assert!(p
            .gate(&b, t0 + RULES.response_timeout, &RULES, false, BIG)
            .is_some());
        p.on_answer(40, t0);
        assert!(p
            .gate(&b, t0 + Duration::from_millis(2), &RULES, false, BIG)
            .is_none());
        assert!(
            p.gate(&b, t0 + RULES.idle_gap, &RULES, false, BIG)
                .is_some(),
            "quiet after an answer"
        );
        p.on_answer(60, t0);
        assert!(
            p.gate(&b, t0, &RULES, false, BIG).is_some(),
            "all 100 bytes answered"
        );
    }

    #[test]
    fn release_waits_for_the_send_side_and_counts_timeouts() {
        let (mut p, t0) = pacer();
        p.note_request(MOVED, SeqNumber(1020), false, None);
        let late = t0 + RULES.response_timeout;
        assert_eq!(
            p.release(late, SeqNumber(1010), &RULES, false, BIG)
                .timeouts,
            0
        );
        assert_eq!(
            p.next_boundary(),
            Some(SeqNumber(1020)),
            "send side not there yet"
        );
        assert_eq!(p.deadline(SeqNumber(1010), &RULES, BIG), None);
        assert_eq!(p.deadline(SeqNumber(1020), &RULES, BIG), Some(late));
        assert_eq!(
            p.release(late, SeqNumber(1020), &RULES, false, BIG)
                .timeouts,
            1,
            "no answer: a timeout"
        );
        assert!(p.is_idle());
        // The released request is the one timed next.
        assert!(p.on_request_bytes_sent(SeqNumber(1020), SeqNumber(1030), true, late, false));
        assert_eq!(p.on_answer(5, late + RULES.idle_gap), Some(late));
    }

    #[test]
    fn deadline_after_an_answer_is_the_idle_gap() {
        let (mut p, t0) = pacer();
        p.note_request(MOVED, SeqNumber(1020), false, None);
        let t1 = t0 + Duration::from_millis(10);
        p.on_answer(1, t1);
        assert_eq!(
            p.deadline(SeqNumber(1020), &RULES, BIG),
            Some(t1 + RULES.idle_gap)
        );
        assert_eq!(
            p.release(t1 + RULES.idle_gap, SeqNumber(1020), &RULES, false, BIG),
            Released::default()
        );
        assert!(p.is_idle());
    }

    #[test]
    fn stream_mode_options_answer_begun_and_timeout_from_the_gate() {
        // Stream mode: no idle gap (the answer began is enough), boundaries noted by the
        // caller, the timeout counted from when the request reached the gate.
        let rules = GateRules {
            idle_gap: Duration::ZERO,
            ..RULES
        };
        let (mut p, t0) = pacer();
        let _ = p.on_answer(9, t0);
        p.reset_answer();
        let t1 = t0 + Duration::from_secs(5);
        p.note_boundary(SeqNumber(3), 100);
        p.wait_from(t1);
        assert_eq!(p.release(t1, SeqNumber(3), &rules, false, BIG).timeouts, 0);
        assert!(!p.is_idle(), "an earlier request's answer does not count");
        assert_eq!(
            p.deadline(SeqNumber(3), &rules, BIG),
            Some(t1 + RULES.response_timeout)
        );
        let _ = p.on_answer(1, t1 + Duration::from_millis(1));
        let t2 = t1 + Duration::from_millis(1);
        assert_eq!(p.deadline(SeqNumber(3), &rules, BIG), Some(t2));
        assert_eq!(p.release(t2, SeqNumber(3), &rules, false, BIG).timeouts, 0);
        assert!(p.is_idle(), "one answer byte of 100 opens it");
    }

    const LAGGING: GateRules = GateRules {
        max_lag: Some(Duration::from_millis(20)),
        ..RULES
    };

    #[test]
    fn a_request_past_the_lag_goes_before_the_answer_which_is_then_owed() {
        let (mut p, t0) = pacer();
        let lag = LAGGING.max_lag.unwrap();
        p.note_request(MOVED, SeqNumber(1020), false, Some(t0));
        p.note_request(MOVED, SeqNumber(1040), false, Some(t0));
        assert_eq!(p.deadline(SeqNumber(1020), &LAGGING, BIG), Some(t0 + lag));
        let early = t0 + lag - Duration::from_millis(1);
        assert_eq!(
            p.release(early, SeqNumber(1020), &LAGGING, false, BIG),
            Released::default()
        );
        let late = t0 + lag;
        assert_eq!(
            p.release(late, SeqNumber(1020), &LAGGING, false, BIG),
            Released {
                timeouts: 0,
                lagged: 1
            }
        );
        assert_eq!(p.next_boundary(), Some(SeqNumber(1040)));
        // The first request's answer (100 bytes, as production's) is owed: it does not open
        // the second's gate; the second's own 100 do.
        p.on_answer(100, late);
        let b = p.boundaries[0];
        assert_eq!(
            p.gate(&b, late, &RULES, false, BIG),
            None,
            "owed answer, no lag rule"
        );
        assert_eq!(p.gate(&b, late, &LAGGING, false, BIG), Some(Opened::Lagged));
        p.on_answer(100, late);
        assert_eq!(
            p.gate(&b, late, &LAGGING, false, BIG),
            Some(Opened::Answered)
        );
        assert_eq!(
            p.release(late, SeqNumber(1040), &LAGGING, false, BIG),
            Released::default()
        );
        assert!(p.is_idle());
        assert_eq!(p.owed, 0, "in step again");
    }

    #[test]
    fn a_bare_fin_and_stream_mode_never_go_by_lag() {
        let (mut p, t0) = pacer();
        p.note_request(MOVED, SeqNumber(1020), false, None);
        let late = t0 + Duration::from_millis(100);
        assert_eq!(
            p.release(late, SeqNumber(1020), &LAGGING, false, BIG),
            Released::default()
        );
        assert_eq!(
            p.deadline(SeqNumber(1020), &LAGGING, BIG),
            Some(t0 + RULES.response_timeout)
        );
        // Short requests (less than PIPELINE_MIN_BYTES captured and not sent) wait too.
        let (mut p, t0) = pacer();
        p.note_request(MOVED, SeqNumber(1020), false, Some(t0));
        let small = PIPELINE_MIN_BYTES - 1;
        assert_eq!(
            p.release(late, SeqNumber(1020), &LAGGING, false, small),
            Released::default()
        );
        assert_eq!(
            p.deadline(SeqNumber(1020), &LAGGING, small),
            Some(t0 + RULES.response_timeout)
        );
        // Off (--max-lag 0): data waits for the answer however old.
        let (mut p, t0) = pacer();
        p.note_request(MOVED, SeqNumber(1020), false, Some(t0));
        assert_eq!(
            p.release(late, SeqNumber(1020), &RULES, false, BIG),
            Released::default()
        );
    }

    #[test]
    fn a_pipelined_request_neither_moves_nor_takes_the_timed_ones_latency() {
        let (mut p, t0) = pacer();
        p.on_established(t0, SeqNumber(1000));
        assert!(p.on_request_bytes_sent(SeqNumber(1000), SeqNumber(1020), true, t0, false));
        p.note_request(MOVED, SeqNumber(1020), false, Some(t0));
        let late = t0 + Duration::from_millis(20);
        assert_eq!(
            p.release(late, SeqNumber(1020), &LAGGING, false, BIG)
                .lagged,
            1
        );
        // The pipelined request's bytes go: the timed request's last byte stays at t0.
        assert!(!p.on_request_bytes_sent(SeqNumber(1020), SeqNumber(1040), true, late, false));
        assert_eq!(p.on_answer(100, late + Duration::from_millis(1)), Some(t0));
        assert_eq!(p.on_answer(100, late + Duration::from_millis(2)), None);
    }

    #[test]
    fn quiet_after_the_owed_answer_alone_does_not_open_the_gate() {
        let (mut p, t0) = pacer();
        p.note_request(MOVED, SeqNumber(1020), false, Some(t0));
        p.note_request(
            RequestStart::AckMoved { expected: 50 },
            SeqNumber(1040),
            false,
            Some(t0 + Duration::from_secs(1)),
        );
        let late = t0 + Duration::from_millis(20);
        assert_eq!(
            p.release(late, SeqNumber(1020), &LAGGING, false, BIG)
                .lagged,
            1
        );
        p.on_answer(100, late);
        let quiet = late + RULES.idle_gap;
        assert_eq!(
            p.release(quiet, SeqNumber(1040), &LAGGING, false, BIG),
            Released::default()
        );
        assert_eq!(
            p.deadline(SeqNumber(1040), &LAGGING, BIG),
            Some(t0 + RULES.response_timeout),
            "no idle gap: what came was owed"
        );
        p.on_answer(10, quiet);
        assert_eq!(
            p.release(
                quiet + RULES.idle_gap,
                SeqNumber(1040),
                &LAGGING,
                false,
                BIG
            ),
            Released::default(),
            "the second request's answer began and went quiet"
        );
        assert!(p.is_idle());
    }
}
