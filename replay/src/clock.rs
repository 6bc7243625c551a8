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

/// How a paced sender waits for a packet's due time (`-T/--timer`, tcpreplay's flag; its
/// `select` and `ioport` timers have no counterpart here).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Timer {
    /// Sleep, then spin the last stretch (the learned spin window, within a CPU budget).
    #[default]
    Hybrid,
    /// Spin on the clock for the whole wait, as tcpreplay's default `gtod` timer does: a core
    /// busy at any rate, and no wake-up to wait for.
    Gtod,
    /// Sleep for the whole wait (`clock_nanosleep` to the due time), no spin.
    Nano,
}

/// Monotonic clock started at construction.
#[derive(Debug, Clone, Copy)]
pub struct SystemClock {
    /// CLOCK_MONOTONIC reading (ns) of time 0.
    origin_ns: u64,
    spin: SpinWindow,
    timer: Timer,
}

impl SystemClock {
    /// A clock reading 0 now, starting with a spin window of `spin`.
    pub fn new(spin: Duration) -> Self {
        Self::with_origin(Instant::now(), spin)
    }
    /// The same clock waiting with `timer` (default [`Timer::Hybrid`]).
    pub fn with_timer(self, timer: Timer) -> Self {
        SystemClock { timer, ..self }
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
            timer: Timer::Hybrid,
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
        let wait = due.saturating_sub(now);
        let spin = match self.timer {
            Timer::Hybrid => self.spin.spin_for(wait),
            Timer::Gtod => wait,
            Timer::Nano => 0,
        };
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
                    if self.timer == Timer::Gtod && stop.load(Ordering::Relaxed) {
                        return;
                    }
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

    #[test]
    fn every_timer_waits_until_due_and_gtod_notices_stop() {
        for timer in [Timer::Hybrid, Timer::Gtod, Timer::Nano] {
            let mut c = SystemClock::new(DEFAULT_SPIN).with_timer(timer);
            let stop = AtomicBool::new(false);
            for due in [c.now() + 50_000, c.now() + 300_000, c.now() + 3_000_000] {
                c.wait_until(due, &stop);
                assert!(c.now() >= due, "{timer:?}");
            }
        }
        // Spinning the whole wait still ends at once when asked to stop.
        let mut c = SystemClock::new(DEFAULT_SPIN).with_timer(Timer::Gtod);
        let stop = AtomicBool::new(true);
        let t = Instant::now();
        let far = c.now() + 10_000_000_000;
        c.wait_until(far, &stop);
        assert!(t.elapsed() < Duration::from_secs(1));
    }
}
