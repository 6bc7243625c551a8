//! The real clock: monotonic time since the run started, and the sleep-then-spin wait.
//!
//! The wait follows [`tcpclone::pace::wait_step`]: sleep until the spin window before the due
//! time (so a 1,000 pps replay idles the CPU), then spin on the clock for the last stretch (so the
//! timer's wake-up error does not reach the wire). Sleeps are absolute (`clock_nanosleep` with
//! `TIMER_ABSTIME` on CLOCK_MONOTONIC) and the window is learned from how late they wake up
//! ([`SpinWindow`]), within a CPU budget. Sleeps are cut into slices so a stop flag is noticed.

use crate::pipeline::Clock;
use crate::sys;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tcpclone::pace::{wait_step, SpinWindow, WaitStep};

/// The spin window a run starts with, before it has learned anything.
pub const DEFAULT_SPIN: Duration = Duration::from_micros(100);

/// Smallest spin window: below it a wait is not worth a sleep.
const MIN_SPIN: Duration = Duration::from_micros(20);

/// Largest spin window.
const MAX_SPIN: Duration = Duration::from_micros(500);

/// Share of a wait longer than [`DEFAULT_SPIN`] that may be spun, and the spin that share may
/// always reach: caps the CPU a slow paced replay uses whatever the wake-ups do (1,000 pps: 80 µs
/// of each 1 ms gap at most, so well under 10 % of a core; 100 pps: 400 µs of 10 ms).
const SPIN_BUDGET: f64 = 0.08;
const SPIN_BUDGET_FLOOR: Duration = Duration::from_micros(80);

/// Longest single sleep, so SIGINT is noticed quickly during long capture gaps.
const MAX_SLEEP_NS: u64 = 50_000_000;

/// Monotonic clock started at construction.
#[derive(Debug, Clone, Copy)]
pub struct SystemClock {
    /// CLOCK_MONOTONIC reading (ns) of time 0.
    origin_ns: u64,
    spin: SpinWindow,
}

impl SystemClock {
    /// A clock reading 0 now, starting with a spin window of `spin`.
    pub fn new(spin: Duration) -> Self {
        Self::with_origin(Instant::now(), spin)
    }
    /// A clock sharing another clock's origin (for sender threads).
    pub fn with_origin(start: Instant, spin: Duration) -> Self {
        let origin_ns = sys::monotonic_ns().saturating_sub(start.elapsed().as_nanos() as u64);
        SystemClock {
            origin_ns,
            spin: SpinWindow::new(
                spin.as_nanos() as u64,
                MIN_SPIN.as_nanos() as u64,
                MAX_SPIN.as_nanos() as u64,
            )
            .with_budget(SPIN_BUDGET, SPIN_BUDGET_FLOOR.as_nanos() as u64),
        }
    }
    /// The spin window learned so far.
    pub fn spin_window(&self) -> Duration {
        Duration::from_nanos(self.spin.window_ns())
    }
}

impl Clock for SystemClock {
    fn now(&mut self) -> u64 {
        sys::monotonic_ns().saturating_sub(self.origin_ns)
    }

    fn wait_until(&mut self, due: u64, stop: &AtomicBool) {
        let now = self.now();
        let spin = self.spin.spin_for(due.saturating_sub(now));
        let mut now = now;
        loop {
            match wait_step(now, due, spin) {
                WaitStep::Go => return,
                WaitStep::Sleep(ns) => {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let wake = now + ns.min(MAX_SLEEP_NS);
                    sys::sleep_until_monotonic(self.origin_ns + wake);
                    now = self.now();
                    if ns <= MAX_SLEEP_NS {
                        // The sleep that should end where the spin starts: learn how late it was.
                        self.spin.observe(now.saturating_sub(wake));
                    }
                }
                WaitStep::Spin => {
                    std::hint::spin_loop();
                    now = self.now();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_until_due_and_learns_a_bounded_window() {
        let mut c = SystemClock::new(DEFAULT_SPIN);
        let stop = AtomicBool::new(false);
        let start = c.now();
        for i in 1..=50u64 {
            let due = start + i * 2_000_000;
            c.wait_until(due, &stop);
            assert!(c.now() >= due);
        }
        let w = c.spin_window();
        assert!(w >= MIN_SPIN && w <= MAX_SPIN, "{w:?}");
        // A raised stop flag ends a long wait at once.
        stop.store(true, Ordering::Relaxed);
        let t = Instant::now();
        let far = c.now() + 10_000_000_000;
        c.wait_until(far, &stop);
        assert!(t.elapsed() < Duration::from_secs(1));
    }
}
