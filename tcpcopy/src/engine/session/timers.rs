//! A session's clocks other than the retransmission timer (that one is the send side's): when it
//! was last active, when a hole in the capture is given up on and when TIME_WAIT ends. (The
//! deadline the engine's timer heap holds for it is the engine's, on the session.)
//!
//! Instants only, all of them given by the caller: nothing here reads a clock.

use std::time::{Duration, Instant};

/// How many times the default linger a clone lingers after a loss on its path. The target
/// retransmits its FIN when our last ACK is lost, after its retransmission timeout, and that
/// timeout grows with the losses it saw (a request retransmitted twice made it 2.6 s in a lab
/// run with 1 % loss, past the default 2 s: the target stayed in LAST_ACK, its FIN unanswered).
const LOSSY_LINGER_FACTOR: u32 = 5;

/// The session's timers.
#[derive(Debug)]
pub(super) struct Timers {
    /// The last captured or reported segment of this session.
    pub last_activity: Instant,
    /// End of TIME_WAIT (lingering to re-acknowledge a retransmitted target FIN).
    pub linger_until: Option<Instant>,
    /// When a hole in the capture is declared a gap.
    pub gap_at: Option<Instant>,
    /// A segment of this connection was lost, ours or the target's: TIME_WAIT lasts longer.
    pub lossy: bool,
}

impl Timers {
    /// Timers of a session that starts at `now`.
    pub fn new(now: Instant) -> Timers {
        Timers {
            last_activity: now,
            linger_until: None,
            gap_at: None,
            lossy: false,
        }
    }

    /// TIME_WAIT from `now`, `linger` being the default (longer after a loss); never shortened.
    pub fn linger_from(&mut self, now: Instant, linger: Duration) {
        let d = if self.lossy {
            linger * LOSSY_LINGER_FACTOR
        } else {
            linger
        };
        self.linger_until = Some(self.linger_until.map_or(now + d, |t| t.max(now + d)));
    }

    /// A hole must be filled by `at`; an earlier deadline already set stays.
    #[inline]
    pub fn gap_by(&mut self, at: Instant) {
        self.gap_at = Some(self.gap_at.map_or(at, |g| g.min(at)));
    }

    /// `t` is set and has come at `now`.
    #[inline]
    pub fn due(t: Option<Instant>, now: Instant) -> bool {
        t.is_some_and(|t| now >= t)
    }
}

/// The earliest of several optional deadlines, starting from one that is always there.
#[derive(Debug, Clone, Copy)]
pub(super) struct Earliest(pub Instant);

impl Earliest {
    /// Takes `t` into account.
    #[inline]
    pub fn take(&mut self, t: Option<Instant>) {
        if let Some(t) = t {
            self.0 = self.0.min(t);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_earliest_gap_deadline_stays() {
        let t0 = Instant::now();
        let mut t = Timers::new(t0);
        t.gap_by(t0 + Duration::from_secs(2));
        t.gap_by(t0 + Duration::from_secs(5));
        assert_eq!(t.gap_at, Some(t0 + Duration::from_secs(2)));
        t.gap_by(t0 + Duration::from_secs(1));
        assert_eq!(t.gap_at, Some(t0 + Duration::from_secs(1)));
        assert!(!Timers::due(t.gap_at, t0));
        assert!(Timers::due(t.gap_at, t0 + Duration::from_secs(1)));
        assert!(!Timers::due(None, t0));
    }

    #[test]
    fn earliest_ignores_missing_deadlines() {
        let t0 = Instant::now();
        let mut e = Earliest(t0 + Duration::from_secs(9));
        e.take(None);
        e.take(Some(t0 + Duration::from_secs(3)));
        e.take(Some(t0 + Duration::from_secs(4)));
        assert_eq!(e.0, t0 + Duration::from_secs(3));
    }
}
