//! The real clock: monotonic time since the run started, and the sleep-then-spin wait.
//!
//! The wait follows [`tcpclone::pace::wait_step`]: sleep until `spin` before the due time (so a
//! 1,000 pps replay idles the CPU), then spin on the clock for the last stretch (so the timer's
//! wake-up error does not reach the wire). Sleeps are cut into slices so a stop flag is noticed.

use crate::pipeline::Clock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tcpclone::pace::{wait_step, WaitStep};

/// How long before the due time sleeping stops and spinning starts.
pub const DEFAULT_SPIN: Duration = Duration::from_micros(100);

/// Longest single sleep, so SIGINT is noticed quickly during long capture gaps.
const MAX_SLEEP: Duration = Duration::from_millis(50);

/// Monotonic clock started at construction.
#[derive(Debug, Clone, Copy)]
pub struct SystemClock {
    start: Instant,
    spin_ns: u64,
}

impl SystemClock {
    /// A clock reading 0 now, spinning the last `spin` of every wait.
    pub fn new(spin: Duration) -> Self {
        SystemClock {
            start: Instant::now(),
            spin_ns: spin.as_nanos() as u64,
        }
    }
    /// A clock sharing another clock's origin (for sender threads).
    pub fn with_origin(start: Instant, spin: Duration) -> Self {
        SystemClock {
            start,
            spin_ns: spin.as_nanos() as u64,
        }
    }
}

impl Clock for SystemClock {
    fn now(&mut self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    fn wait_until(&mut self, due: u64, stop: &AtomicBool) {
        loop {
            match wait_step(self.now(), due, self.spin_ns) {
                WaitStep::Go => return,
                WaitStep::Sleep(ns) => {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    std::thread::sleep(Duration::from_nanos(ns).min(MAX_SLEEP));
                }
                WaitStep::Spin => std::hint::spin_loop(),
            }
        }
    }
}
