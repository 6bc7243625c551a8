//! The pacing schedule: when each packet is due, from capture timing, a multiplier, a packet rate
//! or a bit rate. Time is passed in; this module never reads a clock and never sleeps.
//!
//! Every due time is computed from an absolute origin (the start of the run, or of the current
//! file pass) and the packet's position, never by adding a gap to the previous due time, so
//! rounding and late wake-ups cannot accumulate into drift (tcpreplay's `--multiplier` drifts by
//! +24–46 % because it does). Due times are nanoseconds after the start of the run.

use crate::capture::Timestamp;
use thiserror::Error;

/// How packets are timed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Timing {
    /// The capture's own gaps divided by `multiplier` (1.0 = as captured, 2.0 = twice as fast).
    Capture {
        /// Speed-up factor, finite and > 0.
        multiplier: f64,
    },
    /// A fixed packet rate (packets per second, > 0).
    Pps(f64),
    /// A fixed bit rate in megabits per second (10^6 bit/s, > 0), counted over frame bytes as
    /// tcpreplay counts them (link-layer header and payload; no preamble, FCS or gap).
    Mbps(f64),
    /// As fast as the sink takes packets.
    TopSpeed,
}

/// A timing value that cannot be used.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum PaceError {
    /// The rate or multiplier is zero, negative, NaN or infinite.
    #[error("{flag}: {value} is not a positive finite number")]
    NotPositive {
        /// The flag that carried the value.
        flag: &'static str,
        /// The value given.
        value: f64,
    },
}

fn positive(flag: &'static str, value: f64) -> Result<f64, PaceError> {
    if value.is_finite() && value > 0.0 {
        Ok(value)
    } else {
        Err(PaceError::NotPositive { flag, value })
    }
}

impl Timing {
    /// Capture timing sped up by `multiplier` (`-x/--multiplier`).
    pub fn multiplier(multiplier: f64) -> Result<Self, PaceError> {
        Ok(Timing::Capture {
            multiplier: positive("--multiplier", multiplier)?,
        })
    }
    /// A fixed packet rate (`-p/--pps`).
    pub fn pps(pps: f64) -> Result<Self, PaceError> {
        Ok(Timing::Pps(positive("--pps", pps)?))
    }
    /// A fixed bit rate in Mbit/s (`-M/--mbps`).
    pub fn mbps(mbps: f64) -> Result<Self, PaceError> {
        Ok(Timing::Mbps(positive("--mbps", mbps)?))
    }
    /// True for top speed (no waiting at all).
    pub fn is_top_speed(&self) -> bool {
        matches!(self, Timing::TopSpeed)
    }
}

/// Computes the due time of each packet in turn.
///
/// Feed it every packet in sending order with [`Pacer::schedule`]; call [`Pacer::new_segment`]
/// when a new input file (or a new loop over the inputs) begins, so capture timing restarts
/// there instead of waiting across the gap between two files.
#[derive(Debug, Clone)]
pub struct Pacer {
    timing: Timing,
    /// Packets scheduled so far in the whole run.
    count: u64,
    /// Frame bytes scheduled so far in the whole run.
    bytes: u64,
    /// Capture timing: due time of the current segment's first packet.
    segment_base: u64,
    /// Capture timing: capture timestamp of the current segment's first packet.
    segment_first_ts: Option<u64>,
    /// Capture timing: largest capture offset seen in this segment (timestamps never go back).
    segment_max_offset: u64,
    /// Due time returned last.
    last_due: u64,
}

impl Pacer {
    /// A pacer for `timing`, starting at due time 0.
    pub fn new(timing: Timing) -> Self {
        Pacer {
            timing,
            count: 0,
            bytes: 0,
            segment_base: 0,
            segment_first_ts: None,
            segment_max_offset: 0,
            last_due: 0,
        }
    }

    /// The timing this pacer follows.
    pub fn timing(&self) -> Timing {
        self.timing
    }

    /// Starts a new segment (next file, next loop): under capture timing its first packet is due
    /// right when the previous segment's last packet was.
    pub fn new_segment(&mut self) {
        self.segment_base = self.last_due;
        self.segment_first_ts = None;
        self.segment_max_offset = 0;
    }

    /// Due time, in nanoseconds after the start of the run, of the next packet (captured at `ts`,
    /// `frame_len` bytes long). `None` means "now" (top speed).
    pub fn schedule(&mut self, ts: Timestamp, frame_len: usize) -> Option<u64> {
        let n = self.count;
        let bytes_before = self.bytes;
        self.count += 1;
        self.bytes += frame_len as u64;
        let due = match self.timing {
            Timing::TopSpeed => return None,
            Timing::Pps(pps) => ns_from_secs(n as f64 / pps),
            Timing::Mbps(mbps) => ns_from_secs(bytes_before as f64 * 8.0 / (mbps * 1e6)),
            Timing::Capture { multiplier } => {
                let first = *self.segment_first_ts.get_or_insert(ts.0);
                // A timestamp earlier than one already seen (reordered capture) is sent at once.
                let offset = ts.0.saturating_sub(first).max(self.segment_max_offset);
                self.segment_max_offset = offset;
                let scaled = if multiplier == 1.0 {
                    offset
                } else {
                    ns_from_secs(offset as f64 / 1e9 / multiplier)
                };
                self.segment_base.saturating_add(scaled)
            }
        };
        self.last_due = due;
        Some(due)
    }
}

/// Rounds seconds to whole nanoseconds (saturating; f64 is exact to the nanosecond for ~104 days).
fn ns_from_secs(secs: f64) -> u64 {
    let ns = (secs * 1e9).round();
    if ns >= u64::MAX as f64 {
        u64::MAX
    } else {
        ns as u64
    }
}

/// What a sender should do to wait for a due time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitStep {
    /// The packet is due: send it now.
    Go,
    /// Sleep this many nanoseconds, then ask again.
    Sleep(u64),
    /// Close to due: spin (re-read the clock) and ask again.
    Spin,
}

/// How to wait for `due` when the clock reads `now` (both ns after the start): sleep until
/// `spin_ns` before the due time (so the CPU is idle between packets), then spin for the last
/// stretch (so the wake-up error of the sleep does not reach the wire).
pub fn wait_step(now: u64, due: u64, spin_ns: u64) -> WaitStep {
    if now >= due {
        WaitStep::Go
    } else if due - now > spin_ns {
        WaitStep::Sleep(due - now - spin_ns)
    } else {
        WaitStep::Spin
    }
}

/// The spin window, learned from how late the sender's sleeps wake up.
///
/// A sleep asked to end at `t` ends at `t + oversleep`: tens of microseconds on a quiet machine,
/// milliseconds when the thread waits for a busy core. The window tracks a high quantile of the
/// oversleeps seen (a streaming estimate, so no history is kept) and spins that long plus a
/// margin, so most wake-ups land before the due time. A wait no longer than the starting window
/// is spun whole (at high rates a sleep would only make the packet late); a longer one spins at
/// most a CPU budget, a share of the wait but at least a floor, so a slow rate never turns into
/// busy waiting however late the wake-ups are.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SpinWindow {
    /// Current estimate of the tracked oversleep quantile, in ns.
    estimate_ns: f64,
    /// The window the run started with, in ns: waits up to this long are spun whole.
    initial_ns: u64,
    /// Smallest window, in ns.
    min_ns: u64,
    /// Largest window, in ns.
    max_ns: u64,
    /// Largest share of a longer wait that may be spun (0..=1)…
    budget: f64,
    /// …unless that is less than this many ns.
    budget_floor_ns: u64,
}

/// Quantile of the oversleeps that the window covers.
const SPIN_QUANTILE: f64 = 0.99;
/// Step of the quantile estimate when a sample falls below it, in ns (a sample above moves it up
/// by `q/(1-q)` times this, so the estimate settles where a share `q` of the samples lie below).
const SPIN_STEP_NS: f64 = 100.0;
/// Added to the estimate: the clock read and the send after the spin.
const SPIN_MARGIN_NS: u64 = 10_000;

impl SpinWindow {
    /// A window starting at `initial_ns`, kept within `min_ns..=max_ns`, with no CPU budget.
    pub fn new(initial_ns: u64, min_ns: u64, max_ns: u64) -> Self {
        let max_ns = max_ns.max(min_ns);
        SpinWindow {
            estimate_ns: initial_ns.saturating_sub(SPIN_MARGIN_NS) as f64,
            initial_ns,
            min_ns,
            max_ns,
            budget: 1.0,
            budget_floor_ns: 0,
        }
    }

    /// The same window spinning at most a share `budget` (0..=1) of a wait longer than the
    /// starting window, or `floor_ns` if that is more.
    pub fn with_budget(self, budget: f64, floor_ns: u64) -> Self {
        SpinWindow {
            budget: budget.clamp(0.0, 1.0),
            budget_floor_ns: floor_ns,
            ..self
        }
    }

    /// The window learned so far (before the CPU budget of a given wait), in ns.
    pub fn window_ns(&self) -> u64 {
        (self.estimate_ns as u64 + SPIN_MARGIN_NS).clamp(self.min_ns, self.max_ns)
    }

    /// How long to spin before a due time that is `wait_ns` away: all of it up to the starting
    /// window, otherwise the learned window cut to the CPU budget of this wait.
    pub fn spin_for(&self, wait_ns: u64) -> u64 {
        if wait_ns <= self.initial_ns {
            return wait_ns;
        }
        let cap = ((wait_ns as f64 * self.budget) as u64).max(self.budget_floor_ns);
        self.window_ns().min(cap)
    }

    /// Learns from one sleep that was asked to end at some time and ended `oversleep_ns` later.
    pub fn observe(&mut self, oversleep_ns: u64) {
        let x = oversleep_ns as f64;
        if x > self.estimate_ns {
            self.estimate_ns += SPIN_STEP_NS * SPIN_QUANTILE / (1.0 - SPIN_QUANTILE);
        } else {
            self.estimate_ns = (self.estimate_ns - SPIN_STEP_NS).max(0.0);
        }
        // Never further out than the window can reach, so a burst of very late wake-ups (the
        // machine was busy) is forgotten as quickly as it came.
        self.estimate_ns = self.estimate_ns.min(self.max_ns as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    /// A virtual clock whose sleeps overshoot by a pseudo-random 0–`jitter` ns, like a real
    /// kernel timer, and whose spins cost `spin_cost` ns.
    struct VirtualClock {
        now: u64,
        rng: u64,
        jitter: u64,
        spin_cost: u64,
        slept: u64,
        spun: u64,
    }

    impl VirtualClock {
        fn new(jitter: u64) -> Self {
            VirtualClock {
                now: 0,
                rng: 0x9e37_79b9_7f4a_7c15,
                jitter,
                spin_cost: 50,
                slept: 0,
                spun: 0,
            }
        }
        fn rand(&mut self) -> u64 {
            self.rng ^= self.rng << 13;
            self.rng ^= self.rng >> 7;
            self.rng ^= self.rng << 17;
            self.rng
        }
        /// Waits for `due` the way the sender does; returns the send time.
        fn wait(&mut self, due: Option<u64>, spin_ns: u64) -> u64 {
            if let Some(due) = due {
                loop {
                    match wait_step(self.now, due, spin_ns) {
                        WaitStep::Go => break,
                        WaitStep::Sleep(d) => {
                            let over = if self.jitter == 0 {
                                0
                            } else {
                                self.rand() % self.jitter
                            };
                            self.now += d + over;
                            self.slept += d + over;
                        }
                        WaitStep::Spin => {
                            self.now += self.spin_cost;
                            self.spun += self.spin_cost;
                        }
                    }
                }
            }
            // Sending itself takes a little time.
            self.now += 300;
            self.now - 300
        }
    }

    fn ts(ns: u64) -> Timestamp {
        Timestamp(1_700_000_000 * SEC + ns)
    }

    #[test]
    fn pps_schedule_is_exact_and_absolute() {
        let mut p = Pacer::new(Timing::pps(1000.0).unwrap());
        let dues: Vec<u64> = (0..5).map(|_| p.schedule(ts(0), 60).unwrap()).collect();
        assert_eq!(dues, vec![0, 1_000_000, 2_000_000, 3_000_000, 4_000_000]);
        // A non-integer gap (3 pps) is rounded per packet, never accumulated.
        let mut p = Pacer::new(Timing::pps(3.0).unwrap());
        let last = (0..=3000)
            .map(|_| p.schedule(ts(0), 60).unwrap())
            .last()
            .unwrap();
        assert_eq!(last, 1000 * SEC);
    }

    #[test]
    fn mbps_counts_frame_bytes() {
        // 1 Mbit/s: a 125-byte frame takes 1 ms; the next is due when the previous has "left".
        let mut p = Pacer::new(Timing::mbps(1.0).unwrap());
        assert_eq!(p.schedule(ts(0), 125), Some(0));
        assert_eq!(p.schedule(ts(0), 250), Some(1_000_000));
        assert_eq!(p.schedule(ts(0), 60), Some(3_000_000));
    }

    #[test]
    fn capture_timing_follows_offsets_and_multiplier() {
        let offsets = [0, 1_500_000, 1_500_001, 40_000_000, 2 * SEC];
        let mut p1 = Pacer::new(Timing::multiplier(1.0).unwrap());
        let mut p2 = Pacer::new(Timing::multiplier(2.0).unwrap());
        for &o in &offsets {
            assert_eq!(p1.schedule(ts(o), 100), Some(o));
            assert_eq!(
                p2.schedule(ts(o), 100),
                Some((o as f64 / 2.0).round() as u64)
            );
        }
    }

    #[test]
    fn capture_timing_never_goes_back_and_restarts_per_segment() {
        let mut p = Pacer::new(Timing::multiplier(1.0).unwrap());
        assert_eq!(p.schedule(ts(0), 60), Some(0));
        assert_eq!(p.schedule(ts(5_000), 60), Some(5_000));
        // Reordered packet: sent straight after the previous one, not in the past.
        assert_eq!(p.schedule(ts(1_000), 60), Some(5_000));
        assert_eq!(p.schedule(ts(9_000), 60), Some(9_000));
        // A second file captured a day later starts where the first ended.
        p.new_segment();
        assert_eq!(p.schedule(ts(86_400 * SEC), 60), Some(9_000));
        assert_eq!(p.schedule(ts(86_400 * SEC + 1_000), 60), Some(10_000));
    }

    #[test]
    fn top_speed_never_waits() {
        let mut p = Pacer::new(Timing::TopSpeed);
        assert_eq!(p.schedule(ts(0), 60), None);
        assert_eq!(p.schedule(ts(SEC), 60), None);
    }

    #[test]
    fn bad_values_name_the_flag() {
        for v in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let e = Timing::pps(v).unwrap_err();
            assert!(e.to_string().starts_with("--pps:"), "{e}");
        }
        assert!(Timing::multiplier(0.0)
            .unwrap_err()
            .to_string()
            .contains("--multiplier"));
        assert!(Timing::mbps(-3.0)
            .unwrap_err()
            .to_string()
            .contains("--mbps"));
    }

    #[test]
    fn wait_step_sleeps_then_spins() {
        assert_eq!(wait_step(0, 1_000_000, 100_000), WaitStep::Sleep(900_000));
        assert_eq!(wait_step(950_000, 1_000_000, 100_000), WaitStep::Spin);
        assert_eq!(wait_step(1_000_000, 1_000_000, 100_000), WaitStep::Go);
        assert_eq!(wait_step(2_000_000, 1_000_000, 100_000), WaitStep::Go);
    }

    /// Late wake-ups (up to 60 µs, larger than the spin window would absorb) must not add up:
    /// after 100,000 packets the total time is still the asked rate to within one gap's jitter.
    #[test]
    fn late_wakeups_do_not_accumulate() {
        for timing in [
            Timing::pps(10_000.0).unwrap(),
            Timing::multiplier(2.0).unwrap(),
        ] {
            let mut clock = VirtualClock::new(60_000);
            let mut p = Pacer::new(timing);
            let n = 100_000u64;
            let mut first = 0;
            let mut last = 0;
            let mut worst_err = 0u64;
            for i in 0..n {
                // Capture gaps of 200 µs, so ×2 is also 10,000 pps.
                let due = p.schedule(ts(i * 200_000), 100);
                let sent = clock.wait(due, 100_000);
                worst_err = worst_err.max(sent.abs_diff(due.unwrap()));
                if i == 0 {
                    first = sent;
                }
                last = sent;
            }
            let rate = (n - 1) as f64 * 1e9 / (last - first) as f64;
            assert!(
                (rate - 10_000.0).abs() / 10_000.0 < 1e-4,
                "{timing:?}: rate {rate}"
            );
            // Spinning the last 100 µs absorbs the 0–60 µs sleep overshoot entirely.
            assert!(
                worst_err <= 1_000,
                "{timing:?}: worst gap error {worst_err} ns"
            );
        }
    }

    /// Sleeping until the spin window keeps spinning to a small share of the time at 1,000 pps.
    #[test]
    fn spins_only_the_last_stretch() {
        let mut clock = VirtualClock::new(20_000);
        let mut p = Pacer::new(Timing::pps(1000.0).unwrap());
        for _ in 0..10_000 {
            let due = p.schedule(ts(0), 100);
            clock.wait(due, 100_000);
        }
        let busy = clock.spun as f64 / clock.now as f64;
        assert!(busy < 0.10, "spinning {:.1} % of the time", busy * 100.0);
        assert!(clock.slept > clock.spun * 5);
    }

    /// The window settles near the 99th percentile of the oversleeps, stays within its bounds
    /// and within the CPU budget of each wait.
    #[test]
    fn spin_window_learns_the_oversleep_tail() {
        let mut w = SpinWindow::new(100_000, 20_000, 500_000).with_budget(0.08, 80_000);
        assert_eq!(w.window_ns(), 100_000);
        // Oversleeps spread evenly over 0..40 µs with 0.5 % at 150 µs: p99 ≈ 40 µs.
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        for i in 0..200_000u64 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let x = if i % 200 == 0 { 150_000 } else { rng % 40_000 };
            w.observe(x);
        }
        let win = w.window_ns();
        assert!((40_000..=65_000).contains(&win), "window {win} ns");
        // Longer waits get the learned window (within every budget cap here); waits up to the
        // starting 100 µs (10,000 pps and up) are spun whole.
        assert_eq!(w.spin_for(1_000_000), win);
        assert_eq!(w.spin_for(150_000), win);
        assert_eq!(w.spin_for(90_000), 90_000);

        // A quiet machine (oversleep ~5 µs) shrinks it to the floor.
        for _ in 0..10_000 {
            w.observe(5_000);
        }
        assert_eq!(w.window_ns(), 20_000);
        // A busy one grows it to the largest window; the budget then caps what one wait spins:
        // 8 % of a 4 ms wait, and 80 µs of a 1 ms wait (8 % would be less).
        for _ in 0..10_000 {
            w.observe(3_000_000);
        }
        assert_eq!(w.window_ns(), 500_000);
        assert_eq!(w.spin_for(4_000_000), 320_000);
        assert_eq!(w.spin_for(1_000_000), 80_000);
        assert_eq!(w.spin_for(200_000), 80_000);
        assert_eq!(w.spin_for(100_000), 100_000);
        // Without a budget the learned window is spun whatever the wait.
        let mut free = SpinWindow::new(100_000, 20_000, 500_000);
        for _ in 0..10_000 {
            free.observe(3_000_000);
        }
        assert_eq!(free.spin_for(1_000_000), 500_000);
    }
}
