//! When a worker sheds connections: the rule, on plain numbers (the backlog of its rings and
//! the time), so that it can be tested without a ring. The worker applies what it says to its
//! engine ([`crate::engine::Engine::set_shedding`], [`crate::engine::Engine::shed_heaviest`],
//! [`crate::engine::Engine::allow_resume`]).
//!
//! The ring is there to absorb bursts (the default holds a 200 MB upload that the clones send
//! more slowly than production received it), so nothing is shed while it copes; but once it
//! is full the kernel drops frames of every session alike, each hole cuts a request, and a
//! worker that must hold and merge around the holes falls further behind.
//!
//! The backlog (blocks waiting in the rings) is judged over windows of [`WINDOW`] in which the
//! worker ran and took blocks: it is behind when the backlog did not shrink over such a window
//! although the kernel reported losses in it or 7/8 of the ring space waits. A worker that
//! only did not run for a while (a busy host, a stopped process) finds a backlog that shrinks
//! as soon as it reads, and sheds nothing. Behind, new connections are shed; and at the end of
//! every window over which a backlog of half the ring or more did not shrink, live clones
//! too: as many (the heaviest first) as carried the share of the traffic the worker could not
//! keep up with (the growth over what came in: the blocks taken plus the growth; at least
//! one), at most half at once, so that one short window does not shed everything. Under a
//! quarter waiting it has caught up: new connections are cloned again, and shed ones come back
//! one per [`RESUME_EVERY`], each from its next request.

use std::time::{Duration, Instant};

/// The backlog's growth is judged over windows this long.
pub const WINDOW: Duration = Duration::from_millis(10);
/// ... or over this much of one, when the ring is nearly full.
const EARLY: Duration = Duration::from_millis(1);
/// Once caught up, one shed connection is let back this often (from its next request).
pub const RESUME_EVERY: Duration = Duration::from_millis(50);
/// A worker with this share of its ring space waiting (NUM/DEN), not shrinking while it reads,
/// is about to overflow.
const FULL_NUM: usize = 7;
const FULL_DEN: usize = 8;
/// While shedding, live clones are shed when the backlog did not shrink and this share (1/N)
/// waits.
const CLONES_FROM: usize = 2;
/// Below this share (1/N) of the ring space waiting, the worker has caught up.
const UNTIL: usize = 4;
/// Most of the traffic given up at once.
const MAX_SHARE: f64 = 0.5;

/// What the backlog looks like now.
#[derive(Debug, Clone, Copy)]
pub struct Backlog {
    /// Blocks (frames of a `TPACKET_V2` ring) waiting, over all the worker's rings.
    pub waiting: usize,
    /// Blocks in those rings.
    pub blocks: usize,
    /// Blocks taken so far (wrapping).
    pub taken: usize,
}

/// What the worker is to do to its engine.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Actions {
    /// Stop shedding new connections: caught up.
    pub stop: bool,
    /// Let one shed connection back from its next request.
    pub allow_resume: bool,
    /// Start shedding new connections: behind.
    pub start: bool,
    /// Shed the heaviest live clones that carried this share of the traffic.
    pub shed_share: Option<f64>,
}

/// The rule's state for one worker.
#[derive(Debug, Default)]
pub struct ShedPolicy {
    /// When the current window ends, and the backlog's waiting and taken blocks when it began.
    window: Option<(Instant, usize, usize)>,
    /// When the next shed connection may be let back.
    resume_at: Option<Instant>,
    /// A ring reported kernel losses in the current window.
    overflowed: bool,
}

impl ShedPolicy {
    /// A ring reported kernel losses.
    pub fn overflowed(&mut self) {
        self.overflowed = true;
    }

    /// The rule at `now`, for a backlog `b`, an engine that is `shedding` new connections or
    /// not, and has shed connections to let back (`shed_flows`).
    pub fn observe(
        &mut self,
        now: Instant,
        b: Backlog,
        shedding: bool,
        shed_flows: bool,
    ) -> Actions {
        let mut a = Actions::default();
        let mut shedding = shedding;
        if shedding && b.waiting * UNTIL < b.blocks {
            a.stop = true;
            shedding = false;
            self.resume_at = Some(now + RESUME_EVERY);
        }
        if !shedding && shed_flows && self.resume_at.is_none_or(|t| now >= t) {
            a.allow_resume = true;
            self.resume_at = Some(now + RESUME_EVERY);
        }
        let next = (now + WINDOW, b.waiting, b.taken);
        let Some((end, was, taken_then)) = self.window else {
            self.window = Some(next);
            return a;
        };
        // A window is judged at its end, or early once 7/8 of the ring waits and the backlog
        // grew over at least [`EARLY`] of it: at gigabytes a second the last eighth of the
        // ring fills in a few milliseconds.
        let early = now + WINDOW >= end + EARLY
            && b.waiting > was
            && b.waiting * FULL_DEN >= b.blocks * FULL_NUM;
        if now < end && !early {
            return a;
        }
        self.window = Some(next);
        let overflowed = std::mem::take(&mut self.overflowed);
        let taken = b.taken.wrapping_sub(taken_then);
        // Not judged: a window that ended long ago (the worker did not run), one in which it
        // took nothing, or a backlog that shrank.
        if now > end + WINDOW || taken == 0 || b.waiting < was {
            return a;
        }
        if !shedding {
            if !overflowed && b.waiting * FULL_DEN < b.blocks * FULL_NUM {
                return a;
            }
            a.start = true;
        }
        if b.waiting * CLONES_FROM >= b.blocks {
            let grew = b.waiting - was;
            a.shed_share = Some((grew as f64 / (taken + grew) as f64).min(MAX_SHARE));
        }
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BLOCKS: usize = 2048;

    fn backlog(waiting: usize, taken: usize) -> Backlog {
        Backlog {
            waiting,
            blocks: BLOCKS,
            taken,
        }
    }

    /// A policy whose first window began at `t0` with `waiting` blocks, 0 taken.
    fn started(t0: Instant, waiting: usize) -> ShedPolicy {
        let mut p = ShedPolicy::default();
        assert_eq!(
            p.observe(t0, backlog(waiting, 0), false, false),
            Actions::default()
        );
        p
    }

    #[test]
    fn a_ring_that_holds_a_burst_sheds_nothing() {
        let t0 = Instant::now();
        let mut p = started(t0, 100);
        // Growing fast, but only to 3/4 of the ring.
        let a = p.observe(t0 + WINDOW, backlog(1536, 50), false, false);
        assert_eq!(a, Actions::default());
    }

    #[test]
    fn seven_eighths_and_not_shrinking_starts_and_sheds_by_the_share_not_kept_up_with() {
        let t0 = Instant::now();
        let mut p = started(t0, 1700);
        // 100 blocks taken while 100 more came: the worker kept up with half of what came in.
        let a = p.observe(t0 + WINDOW, backlog(1800, 100), false, false);
        assert!(a.start);
        assert_eq!(a.shed_share, Some(0.5));
        // Next window: 10 more waiting, 90 taken: a tenth was not kept up with.
        let a = p.observe(t0 + 2 * WINDOW, backlog(1810, 190), true, true);
        assert!(!a.start && !a.stop && !a.allow_resume);
        assert_eq!(a.shed_share, Some(0.1));
        // Mid-window, under 7/8 of the ring: nothing judged.
        let a = p.observe(t0 + 2 * WINDOW + WINDOW / 2, backlog(1700, 300), true, true);
        assert_eq!(a, Actions::default());
    }

    #[test]
    fn a_nearly_full_ring_is_judged_before_its_window_ends() {
        let t0 = Instant::now();
        let mut p = started(t0, 1700);
        assert_eq!(
            p.observe(t0 + EARLY / 2, backlog(1850, 20), false, false),
            Actions::default()
        );
        // 200 more blocks waiting after a millisecond in which 40 were taken.
        let a = p.observe(t0 + EARLY, backlog(1900, 40), false, false);
        assert!(a.start);
        assert_eq!(a.shed_share, Some(0.5));
    }

    #[test]
    fn kernel_losses_start_shedding_below_seven_eighths() {
        let t0 = Instant::now();
        let mut p = started(t0, 600);
        p.overflowed();
        let a = p.observe(t0 + WINDOW, backlog(700, 40), false, false);
        assert!(a.start);
        assert_eq!(
            a.shed_share, None,
            "under half the ring: new connections only"
        );
        // The losses were of that window: the next one, without, judges the backlog alone.
        let mut p = started(t0, 600);
        p.overflowed();
        let a = p.observe(t0 + WINDOW, backlog(500, 40), false, false);
        assert!(!a.start, "the backlog shrank: the worker copes");
    }

    #[test]
    fn a_worker_that_did_not_run_sheds_nothing_for_the_backlog_it_finds() {
        let t0 = Instant::now();
        let mut p = started(t0, 10);
        p.overflowed();
        // Stopped for a second: the ring is full when it runs again.
        let a = p.observe(
            t0 + Duration::from_secs(1),
            backlog(BLOCKS, 0),
            false,
            false,
        );
        assert_eq!(a, Actions::default());
        // It reads: the backlog shrinks.
        let a = p.observe(
            t0 + Duration::from_secs(1) + WINDOW,
            backlog(BLOCKS - 300, 300),
            false,
            false,
        );
        assert_eq!(a, Actions::default());
        // A window in which it took nothing is not judged either.
        let a = p.observe(
            t0 + Duration::from_secs(1) + 2 * WINDOW,
            backlog(BLOCKS - 300, 300),
            false,
            false,
        );
        assert_eq!(a, Actions::default());
    }

    #[test]
    fn caught_up_it_stops_and_lets_shed_connections_back_one_at_a_time() {
        let t0 = Instant::now();
        let mut p = started(t0, 1900);
        assert!(
            p.observe(t0 + WINDOW, backlog(1950, 10), false, false)
                .start
        );
        // Under a quarter: stop; the first connection comes back RESUME_EVERY later.
        let t1 = t0 + 5 * WINDOW;
        let a = p.observe(t1, backlog(400, 2000), true, true);
        assert!(a.stop && !a.allow_resume);
        assert!(
            !p.observe(t1 + RESUME_EVERY / 2, backlog(10, 2400), false, true)
                .allow_resume
        );
        assert!(
            p.observe(t1 + RESUME_EVERY, backlog(10, 2400), false, true)
                .allow_resume
        );
        assert!(
            !p.observe(t1 + RESUME_EVERY, backlog(10, 2400), false, true)
                .allow_resume
        );
        assert!(
            p.observe(t1 + 2 * RESUME_EVERY, backlog(10, 2400), false, true)
                .allow_resume
        );
        // Nothing to let back: nothing allowed.
        assert!(
            !p.observe(t1 + 4 * RESUME_EVERY, backlog(10, 2400), false, false)
                .allow_resume
        );
    }
}
