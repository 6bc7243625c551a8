//! What a session keeps for the report (only with `EngineConfig::request_timing_events`): the
//! first bytes of the request being timed, and production's answers as the capture shows them
//! (when tcpcopy captures both directions), keyed by the client sequence number each request
//! starts at, which the clone shares with the captured connection.
//!
//! Pure bookkeeping; bounded: at most [`MAX_PRODUCTION`] requests are remembered per session.

use std::collections::VecDeque;
use std::time::Instant;
use tcpclone::seq::SeqNumber;

/// Most captured requests whose production answer is remembered per session, waiting for the
/// clone's answer to the same request.
const MAX_PRODUCTION: usize = 32;
/// Most bytes of production's answer kept (as intercept's prefix: the class is in them).
const PRODUCTION_PREFIX: usize = 64;

/// One captured request and production's answer to it.
#[derive(Debug)]
struct Captured {
    /// The client sequence number it starts at.
    seq: SeqNumber,
    /// When its last captured byte came.
    last_byte_at: Instant,
    /// When production's first answer byte came, and its first bytes.
    answer: Option<(Instant, Box<[u8]>)>,
}

/// Production's answer to a request, as captured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductionAnswer {
    /// When the request's last byte was captured.
    pub request_at: Instant,
    /// When production's first answer byte was captured.
    pub answered_at: Instant,
    /// Its first bytes.
    pub prefix: Vec<u8>,
}

/// The request being timed.
#[derive(Debug)]
pub(crate) struct TimedRequest {
    /// Its first sequence number.
    pub seq: SeqNumber,
    /// When its first byte was sent.
    pub sent: Instant,
    /// Its first bytes.
    pub bytes: Box<[u8]>,
}

/// A request the target answered before production's answer was captured: its timing waits
/// for production's (or, at most, for the session's next answer, its end, or the end of the
/// run), so that a production slower than the test build still has its column.
#[derive(Debug)]
pub(crate) struct Waiting {
    /// The request's first sequence number.
    pub seq: SeqNumber,
    /// When its first byte was sent.
    pub sent: Instant,
    /// When the target's answer was reported.
    pub answered: Instant,
    /// Its first bytes.
    pub request: Vec<u8>,
    /// The answer's first bytes.
    pub answer: Vec<u8>,
}

/// The report's state of one session.
#[derive(Debug, Default)]
pub(crate) struct SessionReport {
    /// The request being timed (sent, not answered yet).
    pub request: Option<TimedRequest>,
    /// The answered request waiting for production's answer.
    pub waiting: Option<Waiting>,
    captured: VecDeque<Captured>,
}

impl SessionReport {
    /// Captured client data `[seq, end)` at `now`: a new request when production answered the
    /// previous one (or none is open), else more of the open one (its last byte moves).
    pub fn on_client_data(&mut self, now: Instant, seq: SeqNumber, end: SeqNumber) {
        match self.captured.back_mut() {
            Some(c) if c.answer.is_none() => {
                if end > c.seq {
                    c.last_byte_at = now;
                }
            }
            Some(c) if seq <= c.seq => {} // a retransmission of an answered request
            _ => {
                if self.captured.len() >= MAX_PRODUCTION {
                    self.captured.pop_front();
                }
                self.captured.push_back(Captured {
                    seq,
                    last_byte_at: now,
                    answer: None,
                });
            }
        }
    }

    /// Production's answer bytes captured at `now` (`payload` non-empty): the first ones answer
    /// the open request. Returns the waiting request they answer, with production's answer.
    pub fn on_production_data(
        &mut self,
        now: Instant,
        payload: &[u8],
    ) -> Option<(Waiting, ProductionAnswer)> {
        let c = self.captured.back_mut().filter(|c| c.answer.is_none())?;
        let n = payload.len().min(PRODUCTION_PREFIX);
        c.answer = Some((now, payload[..n].into()));
        let seq = c.seq;
        if self.waiting.as_ref().is_some_and(|w| w.seq == seq) {
            let w = self.waiting.take()?;
            let p = self.take_production(seq)?;
            return Some((w, p));
        }
        None
    }

    /// Whether production's answer to the request at `seq` may still be captured: the capture
    /// has the request, not yet its answer (call after [`Self::take_production`] found none).
    pub fn production_may_come(&self, seq: SeqNumber) -> bool {
        self.captured
            .front()
            .is_some_and(|c| c.seq == seq && c.answer.is_none())
    }

    /// Production's answer to the request starting at `seq`, when captured; forgets it and
    /// every earlier request.
    pub fn take_production(&mut self, seq: SeqNumber) -> Option<ProductionAnswer> {
        while self.captured.front().is_some_and(|c| c.seq < seq) {
            self.captured.pop_front();
        }
        let c = self.captured.front().filter(|c| c.seq == seq)?;
        let (answered_at, prefix) = c.answer.as_ref()?;
        let p = ProductionAnswer {
            request_at: c.last_byte_at,
            answered_at: *answered_at,
            prefix: prefix.to_vec(),
        };
        self.captured.pop_front();
        Some(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn answers_pair_with_their_request_by_sequence_number() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut r = SessionReport::default();
        r.on_client_data(ms(0), SeqNumber(100), SeqNumber(110));
        r.on_client_data(ms(1), SeqNumber(110), SeqNumber(120)); // same request, last byte
        assert!(r
            .on_production_data(ms(5), b"HTTP/1.1 200 OK\r\n")
            .is_none());
        r.on_production_data(ms(6), b"more of the body"); // not the first bytes
        r.on_client_data(ms(10), SeqNumber(120), SeqNumber(130));
        r.on_client_data(ms(10), SeqNumber(100), SeqNumber(110)); // retransmitted: no request
        r.on_production_data(ms(14), b"HTTP/1.1 500 Boom\r\n");
        r.on_client_data(ms(20), SeqNumber(130), SeqNumber(140)); // not answered yet
                                                                  // The clone's second request is answered first: the first is forgotten with it.
        let p = r.take_production(SeqNumber(120)).unwrap();
        assert_eq!((p.request_at, p.answered_at), (ms(10), ms(14)));
        assert_eq!(p.prefix, b"HTTP/1.1 500 Boom\r\n");
        assert_eq!(r.take_production(SeqNumber(100)), None);
        assert_eq!(r.take_production(SeqNumber(130)), None, "no answer yet");
        r.on_production_data(ms(25), &[b'x'; 100]);
        let p = r.take_production(SeqNumber(130)).unwrap();
        assert_eq!(p.prefix.len(), PRODUCTION_PREFIX);
    }

    #[test]
    fn bounded() {
        let t0 = Instant::now();
        let mut r = SessionReport::default();
        for i in 0..1000u32 {
            r.on_client_data(t0, SeqNumber(i * 10), SeqNumber(i * 10 + 10));
            r.on_production_data(t0, b"+OK\r\n");
        }
        assert_eq!(r.captured.len(), MAX_PRODUCTION);
    }
}
