//! The pacing schedule: when each packet is due, from capture timing, a multiplier, a packet rate
//! or a bit rate. Time is passed in; this module never reads a clock and never sleeps.
//!
//! Every due time is computed from an absolute origin (the start of the run, or of the current
//! file pass) and the packet's position, never by adding a gap to the previous due time, so
//! rounding and late wake-ups cannot accumulate into drift (tcpreplay's `--multiplier` does add
//! gaps, and drifts: docs/benchmarks.md). Due times are nanoseconds after the start of the run.

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
    /// How a sender that fell behind gets back on the schedule.
    catch_up: CatchUp,
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
            catch_up: CatchUp::default(),
        }
    }

    /// The same pacer with another catch-up policy (see [`CatchUp`]).
    pub fn with_catch_up(self, catch_up: CatchUp) -> Self {
        Pacer { catch_up, ..self }
    }

    /// The timing this pacer follows.
    pub fn timing(&self) -> Timing {
        self.timing
    }

    /// The catch-up policy senders of this schedule follow, fresh (nothing sent yet).
    pub fn catch_up(&self) -> CatchUp {
        CatchUp {
            prev: None,
            ..self.catch_up
        }
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

/// How a sender that fell behind the schedule gets back on it.
///
/// Due times never move (see [`Pacer`]), so a packet that leaves late (the sender's core was
/// taken away) puts the sender behind by that much. Sending the next packets back to back until
/// caught up, as tcpreplay does, turns one stall into two or more wrong gaps: the late one and
/// almost-zero ones (each off by nearly a whole interval). Instead, while behind by at most a
/// bound, each gap is shortened by a part of the debt: `1/spread` of it (at least 1 µs, at most
/// all of it), and never by more than a share of the intended gap. One stall then costs one late
/// gap and a tail of gaps each off by a small part of the stall, shrinking as it is repaid. When
/// stalls keep coming, the debt settles where its `1/spread` equals what they add per packet, so
/// the repayment is spread evenly over all gaps instead of making a few gaps very wrong; the
/// long-run rate stays exact. A debt above the bound (a long stall) is sent back to back down to
/// the bound, as tcpreplay does, so the run never trails its schedule by more than the bound for
/// long. Gaps the schedule itself makes zero (equal capture timestamps) stay zero.
///
/// Feed it every paced packet in order: [`CatchUp::release`] gives the time a packet may leave,
/// [`CatchUp::sent`] records when it did. Times are ns on any one clock.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CatchUp {
    /// Largest share (0..=1) of an intended gap that a gap is shortened by while behind.
    share: f64,
    /// A gap repays `1/spread` of the debt (within the share); 1 repays all the share allows.
    spread: u64,
    /// Debt in ns above which the rest goes back to back.
    max_debt_ns: u64,
    /// Due and send time of the previous packet.
    prev: Option<(u64, u64)>,
}

/// Share of the intended gap that a gap may be shortened by while catching up (see [`CatchUp`]).
pub const CATCH_UP_SHARE: f64 = 0.25;
/// Each gap repays 1/32 of the debt (see [`CatchUp`]): a stall is repaid over ~100 packets.
pub const CATCH_UP_SPREAD: u64 = 32;
/// Smallest repayment of a gap, so a small debt ends instead of shrinking forever.
const CATCH_UP_MIN_REPAY_NS: u64 = 1_000;
/// Debt in ns (10 ms) above which [`CatchUp`] sends back to back down to it: a run stays within
/// 10 ms of its schedule once a stall is over, so rates over seconds stay exact.
pub const CATCH_UP_MAX_DEBT_NS: u64 = 10_000_000;

impl Default for CatchUp {
    fn default() -> Self {
        CatchUp::new(CATCH_UP_SHARE, CATCH_UP_MAX_DEBT_NS)
    }
}

impl CatchUp {
    /// Catching up by at most `share` (0..=1) of each gap while the debt is at most
    /// `max_debt_ns`, repaying [`CATCH_UP_SPREAD`]th of the debt a gap. `share` 1 (or a bound
    /// of 0) is tcpreplay's back-to-back catch-up.
    pub fn new(share: f64, max_debt_ns: u64) -> Self {
        let share = if share.is_nan() {
            1.0
        } else {
            share.clamp(0.0, 1.0)
        };
        CatchUp {
            share,
            spread: CATCH_UP_SPREAD,
            max_debt_ns,
            prev: None,
        }
    }

    /// The same policy repaying `1/spread` of the debt a gap (1: all the share allows; share 1
    /// stays back to back whatever the spread).
    pub fn with_spread(self, spread: u64) -> Self {
        CatchUp {
            spread: spread.max(1),
            ..self
        }
    }

    /// The earliest time the packet due at `due` may leave: its due time, or, while the previous
    /// packet left late by no more than the bound, the previous send time plus the gap shortened
    /// by this packet's repayment.
    pub fn release(&self, due: u64) -> u64 {
        let Some((prev_due, prev_sent)) = self.prev else {
            return due;
        };
        let debt = prev_sent.saturating_sub(prev_due);
        let gap = due.saturating_sub(prev_due);
        if debt == 0 || gap == 0 || debt > self.max_debt_ns {
            return due;
        }
        let most = (gap as f64 * self.share).round() as u64;
        let spread = if self.share >= 1.0 { 1 } else { self.spread };
        let repay = (debt / spread)
            .max(CATCH_UP_MIN_REPAY_NS)
            .min(most)
            .min(debt);
        // prev_sent + gap - repay, never before its own due time (repay <= debt).
        due.saturating_add(debt - repay)
    }

    /// Whether the packet due at `due`, leaving at `now`, is late by half its intended gap or
    /// more past the time [`CatchUp::release`] gave it: its gap will be off by that much (the
    /// sender's CPU was taken away, or it woke up late). The first packet is never late.
    pub fn is_late(&self, due: u64, now: u64) -> bool {
        let Some((prev_due, _)) = self.prev else {
            return false;
        };
        let gap = due.saturating_sub(prev_due);
        gap > 0 && now.saturating_sub(self.release(due)) >= gap.div_ceil(2)
    }

    /// Records that the packet due at `due` left at `sent`.
    pub fn sent(&mut self, due: u64, sent: u64) {
        self.prev = Some((due, sent));
    }

    /// How far behind its due time the last packet left, in ns (0 when on time).
    pub fn debt_ns(&self) -> u64 {
        self.prev.map_or(0, |(due, sent)| sent.saturating_sub(due))
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

    /// Sends `n` packets of `pacer` through `catch_up` on a scripted clock: the sender cannot run
    /// during the `stalls` (start, end) ns, and each send takes 1 µs. Returns (due, sent) times.
    fn scripted(
        pacer: &mut Pacer,
        catch_up: &mut CatchUp,
        n: u64,
        gaps_ns: impl Fn(u64) -> u64,
        stalls: &[(u64, u64)],
    ) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        let mut now = 0u64;
        let mut capture = 0u64;
        let mut stall = 0;
        for i in 0..n {
            capture += gaps_ns(i);
            let due = pacer.schedule(ts(capture), 100).unwrap();
            let mut at = now.max(catch_up.release(due));
            // `stalls` are in order and apart: skip those that ended, wait out the one under way.
            while stalls.get(stall).is_some_and(|&(_, end)| end <= at) {
                stall += 1;
            }
            if let Some(&(_, end)) = stalls.get(stall).filter(|&&(start, _)| start <= at) {
                at = end;
            }
            catch_up.sent(due, at);
            out.push((due, at));
            now = at + 1_000;
        }
        out
    }

    fn gaps(sent: &[(u64, u64)]) -> Vec<u64> {
        sent.windows(2).map(|w| w[1].1 - w[0].1).collect()
    }

    #[test]
    fn catch_up_release_arithmetic() {
        // Spread 1: each gap repays all the share allows (half of it here).
        let mut c = CatchUp::new(0.5, 2_000_000).with_spread(1);
        // Nothing sent yet, or the previous packet on time: the due time.
        assert_eq!(c.release(1_000), 1_000);
        c.sent(0, 0);
        assert_eq!(c.release(100_000), 100_000);
        // 30 µs late at 100 µs gaps: at least 50 µs after it, not before its own due time.
        c.sent(100_000, 130_000);
        assert_eq!(c.release(200_000), 200_000);
        // 80 µs late: 50 µs after it (due 200 µs, released at 230 µs).
        c.sent(100_000, 180_000);
        assert_eq!(c.release(200_000), 230_000);
        assert_eq!(c.debt_ns(), 80_000);
        // 2 ms late is within a 2 ms bound; a ns more is not: back to back (the due time, long
        // past).
        c.sent(100_000, 2_100_000);
        assert_eq!(c.release(200_000), 2_150_000);
        c.sent(100_000, 2_100_001);
        assert_eq!(c.release(200_000), 200_000);
        // A zero gap in the schedule stays zero.
        c.sent(100_000, 180_000);
        assert_eq!(c.release(100_000), 100_000);

        // The default spread: a gap repays 1/32 of the debt, at least 1 µs, at most the share.
        let mut c = CatchUp::new(0.5, 2_000_000);
        // (sent, release of the next packet) with 100 µs gaps, the previous due at 100 µs:
        for (sent, release) in [
            (180_000, 277_500),     // 80 µs behind: repays 2.5 µs
            (130_000, 229_000),     // 30 µs behind: 1/32 is under 1 µs, so 1 µs
            (100_400, 200_000),     // 400 ns behind: all of it
            (2_100_000, 2_150_000), // 2 ms behind: 62.5 µs is over the share, so 50 µs
        ] {
            c.sent(100_000, sent);
            assert_eq!(c.release(200_000), release, "sent at {sent}");
        }

        // Late: half the gap or more past the release time (not the due time: a packet that
        // keeps to the repayment is not late).
        let mut c = CatchUp::new(0.5, 2_000_000);
        assert!(!c.is_late(100_000, 10_000_000), "the first packet");
        c.sent(100_000, 180_000); // released at 277.5 µs
        assert!(!c.is_late(200_000, 327_499));
        assert!(c.is_late(200_000, 327_500));
        c.sent(100_000, 100_000);
        assert!(!c.is_late(100_000, 900_000), "a zero gap");
        assert!(c.is_late(200_000, 250_000));

        // Share 1 is back to back at once, whatever the spread.
        for b2b in [
            CatchUp::new(1.0, 2_000_000),
            CatchUp::new(1.0, 2_000_000).with_spread(32),
        ] {
            let mut b2b = b2b;
            b2b.sent(100_000, 180_000);
            assert_eq!(b2b.release(200_000), 200_000);
        }
    }

    /// A 730 µs stall at 10,000 pps: back-to-back catch-up makes the late gap and then seven
    /// gaps of ~1 µs (each off by ~99 µs). Repaying all the share allows (spread 1, share 0.5)
    /// makes the late gap and then 15 gaps of 50 µs (off by 50 µs). The default spread makes
    /// the late gap and then a tail of gaps off by 1/32 of what is left (23 µs, then less), and
    /// is back on the schedule after a bounded number of packets.
    #[test]
    fn a_stall_costs_one_late_gap_and_is_repaid_within_a_bound() {
        let t = 100_000u64;
        let stall = [(100 * t - 10_000, 100 * t + 730_000)];
        let run = |mut c: CatchUp| {
            let mut p = Pacer::new(Timing::pps(10_000.0).unwrap());
            scripted(&mut p, &mut c, 400, |_| 0, &stall)
        };
        let bad = |g: &[u64], tol: u64| g.iter().filter(|&&g| g.abs_diff(t) > tol).count();

        let burst = run(CatchUp::new(1.0, 0));
        let g = gaps(&burst);
        assert_eq!(g[99], t + 730_000, "the late gap");
        assert_eq!(&g[100..107], &[1_000; 7], "then back to back");
        assert_eq!(bad(&g, t / 2), 8);

        let share = run(CatchUp::new(0.5, CATCH_UP_MAX_DEBT_NS).with_spread(1));
        let g = gaps(&share);
        assert_eq!(g[99], t + 730_000, "the same late gap");
        // Then no gap is off by more than half an interval: one bad gap instead of eight.
        assert_eq!(bad(&g, t / 2), 1);
        // The debt (730 µs) is repaid at 50 µs a packet: on time from packet 100 + 15 on.
        let on_time = share.iter().position(|&(d, s)| s == d && d > 100 * t);
        assert_eq!(on_time, Some(115));
        assert!(g[115..].iter().all(|&g| g == t));

        let spread = run(CatchUp::new(0.5, CATCH_UP_MAX_DEBT_NS));
        let g = gaps(&spread);
        assert_eq!(g[99], t + 730_000, "the same late gap");
        // Then every gap is off by at most 730/32 µs, less and less until on time.
        assert_eq!(bad(&g, 730_000 / 32), 1);
        let errs: Vec<u64> = g[100..].iter().map(|&g| t - g).collect();
        assert!(errs.windows(2).all(|w| w[1] <= w[0]), "{:?}", &errs[..40]);
        // 730 µs shrinks by 1/32 a packet to 32 µs (~99 packets), then by 1 µs (~32 more).
        let on_time = spread
            .iter()
            .position(|&(d, s)| s == d && d > 100 * t)
            .unwrap();
        assert!(
            (200..=240).contains(&on_time),
            "on time from packet {on_time}"
        );
        assert!(g[on_time..].iter().all(|&g| g == t));
        // Never early, never behind by more than the stall.
        assert!(spread
            .iter()
            .all(|&(d, s)| s >= d && s - d <= 730_000 + 10_000));
    }

    /// A stall longer than the bound (30 ms = 300 gaps at 10,000 pps, bound 10 ms) is sent back
    /// to back down to the bound, then repaid within the share, so the sender trails for a
    /// bounded time.
    #[test]
    fn a_long_stall_is_burst_down_to_the_bound() {
        let t = 100_000u64;
        let mut p = Pacer::new(Timing::pps(10_000.0).unwrap());
        let mut c = CatchUp::new(0.5, CATCH_UP_MAX_DEBT_NS);
        let sent = scripted(&mut p, &mut c, 1_000, |_| 0, &[(50 * t, 350 * t)]);
        let g = gaps(&sent);
        // The debt after each send: above 10 ms only while bursting, then shrinking by at most
        // half an interval a packet.
        let debts: Vec<u64> = sent.iter().map(|&(d, s)| s - d).collect();
        let burst_end = debts
            .iter()
            .rposition(|&d| d > CATCH_UP_MAX_DEBT_NS)
            .unwrap();
        assert!(g[50..burst_end].iter().all(|&g| g == 1_000), "back to back");
        for w in debts[burst_end + 1..].windows(2) {
            assert!(w[1] <= w[0] && w[0] - w[1] <= t / 2, "{w:?}");
        }
        let on_time = debts.iter().rposition(|&d| d > 0).unwrap() + 1;
        // ~200 packets at 1 µs; then 10 ms of debt at 50 µs a packet down to 1.6 ms (~170),
        // 1/32 a packet down to 32 µs (~125), 1 µs a packet (~32).
        assert!(burst_end <= 50 + 202, "burst until packet {burst_end}");
        assert!(on_time <= 50 + 202 + 340, "on time from packet {on_time}");
        assert!(sent[on_time..].iter().all(|&(d, s)| s == d));
    }

    /// Over 200,000 packets with a stall of 0–1 ms every ~50 packets (random), the rate from the
    /// first to the last packet is the asked one: debts are repaid, not dropped or carried.
    #[test]
    fn catch_up_keeps_the_long_run_rate_exact() {
        let mut rng = 0x853c_49e6_748f_ea9bu64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        for (timing, gap) in [
            (Timing::pps(10_000.0).unwrap(), 100_000),
            (Timing::pps(1_000.0).unwrap(), 1_000_000),
            // Capture gaps of 200 µs at ×2 (10,000 pps), so the multiplier path is covered too.
            (Timing::multiplier(2.0).unwrap(), 100_000),
        ] {
            let n = 200_000u64;
            let mut stalls = Vec::new();
            let mut at = 0u64;
            while at < n * gap {
                at += next() % (100 * gap) + 1;
                let len = next() % 1_000_000;
                stalls.push((at, at + len));
                at += len;
            }
            let mut p = Pacer::new(timing);
            let mut c = CatchUp::default();
            let sent = scripted(
                &mut p,
                &mut c,
                n,
                |i| if i == 0 { 0 } else { 200_000 },
                &stalls,
            );
            assert!(sent.iter().all(|&(d, s)| s >= d), "{timing:?}: early");
            // The debt stays small: it settles where 1/32 of it repays what the stalls add
            // (0.5 ms every ~50 gaps of 100 µs on average, ~10 µs a packet, so ~320 µs; less
            // at 1,000 pps, where stalls are rarer per packet), and even
            // clustered stalls keep it far from the bound, so nothing is ever sent back to back.
            let debts: Vec<u64> = sent.iter().map(|&(d, s)| s - d).collect();
            let mean = debts.iter().sum::<u64>() as f64 / n as f64;
            assert!(mean < 500_000.0, "{timing:?}: mean debt {mean} ns");
            let most = *debts.iter().max().unwrap();
            assert!(
                most < CATCH_UP_MAX_DEBT_NS / 2,
                "{timing:?}: debt reached {most} ns"
            );
            // So over the whole run the rate is the asked one to 0.01 %.
            let (first, last) = (sent[0].1, sent[n as usize - 1].1);
            let want = (n - 1) * gap;
            let off = (last - first).abs_diff(want);
            assert!(off * 10_000 <= want, "{timing:?}: {off} ns off over {want}");
            // And no gap is shorter than the share allows (bursts need a debt over 10 ms).
            let least = (gap as f64 * (1.0 - CATCH_UP_SHARE)) as u64;
            assert!(gaps(&sent).iter().all(|&g| g >= least), "{timing:?}");
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
