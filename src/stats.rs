//! Counters and summaries shared by the binaries: what a replay sent, rewrote, passed through,
//! truncated, failed and retried (each with its reason), printed in tcpreplay's summary shape or
//! as one JSON object.
//!
//! Counting never allocates: reasons are `&'static str` kept in a fixed number of slots. Time is
//! passed in (elapsed nanoseconds); this module never reads a clock.

use serde::ser::{SerializeMap, SerializeStruct, Serializer};
use serde::Serialize;
use std::fmt;

/// How many distinct reasons one counter keeps apart; further reasons are added to the last.
const REASON_SLOTS: usize = 8;

/// A count broken down by reason, without allocating.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReasonCounts {
    slots: [(&'static str, u64); REASON_SLOTS],
    used: usize,
}

impl ReasonCounts {
    /// Counts `n` more for `reason`.
    pub fn add(&mut self, reason: &'static str, n: u64) {
        if n == 0 {
            return;
        }
        if let Some(slot) = self.slots[..self.used].iter_mut().find(|s| s.0 == reason) {
            slot.1 += n;
        } else if self.used < REASON_SLOTS {
            self.slots[self.used] = (reason, n);
            self.used += 1;
        } else {
            // Out of slots: fold into the last one rather than lose the count.
            self.slots[REASON_SLOTS - 1].0 = "other reasons";
            self.slots[REASON_SLOTS - 1].1 += n;
        }
    }

    /// Counts one more for `reason`.
    pub fn incr(&mut self, reason: &'static str) {
        self.add(reason, 1);
    }

    /// Sum over all reasons.
    pub fn total(&self) -> u64 {
        self.iter().map(|(_, n)| n).sum()
    }

    /// The count for one reason (0 when never seen).
    pub fn get(&self, reason: &str) -> u64 {
        self.iter()
            .find(|(r, _)| *r == reason)
            .map_or(0, |(_, n)| n)
    }

    /// (reason, count) pairs in the order first seen.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        self.slots[..self.used].iter().copied()
    }

    /// Adds every count of `other` into `self`.
    pub fn merge(&mut self, other: &ReasonCounts) {
        for (r, n) in other.iter() {
            self.add(r, n);
        }
    }
}

impl Serialize for ReasonCounts {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        struct Reasons<'a>(&'a ReasonCounts);
        impl Serialize for Reasons<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut m = s.serialize_map(Some(self.0.used))?;
                for (r, n) in self.0.iter() {
                    m.serialize_entry(r, &n)?;
                }
                m.end()
            }
        }
        let mut st = s.serialize_struct("ReasonCounts", 2)?;
        st.serialize_field("total", &self.total())?;
        st.serialize_field("reasons", &Reasons(self))?;
        st.end()
    }
}

impl fmt::Display for ReasonCounts {
    /// `12 (too large for the MTU: 10, kernel refused: 2)`, or `0`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.total())?;
        if self.used > 0 {
            f.write_str(" (")?;
            for (i, (r, n)) in self.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write!(f, "{r}: {n}")?;
            }
            f.write_str(")")?;
        }
        Ok(())
    }
}

/// The counters of one replay (or one sender thread of it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct ReplayStats {
    /// Packets the sink accepted (sent on the wire, queued in the ring, or written).
    pub packets_sent: u64,
    /// Frame bytes of those packets.
    pub bytes_sent: u64,
    /// Packets changed by the rewrite step (a packet split by `--tso-split` counts once).
    pub rewritten: u64,
    /// Packets that did not parse and were passed through unchanged, by reason.
    pub unparsed: ReasonCounts,
    /// Packets cut short (e.g. `--mtu-trunc`), by reason.
    pub truncated: ReasonCounts,
    /// Packets not sent, by reason (e.g. larger than the interface MTU).
    pub failed: ReasonCounts,
    /// Sends that had to be tried again (e.g. ENOBUFS, EAGAIN: ring or queue full), by reason.
    pub retried: ReasonCounts,
    /// Paced packets that left half their gap or more after their time, as the sender saw it
    /// (its CPU was taken away, or it woke up late).
    pub late: u64,
}

impl ReplayStats {
    /// Counts one packet accepted by the sink.
    pub fn sent(&mut self, frame_len: usize) {
        self.packets_sent += 1;
        self.bytes_sent += frame_len as u64;
    }

    /// Adds another thread's counters into these.
    pub fn merge(&mut self, other: &ReplayStats) {
        self.packets_sent += other.packets_sent;
        self.bytes_sent += other.bytes_sent;
        self.rewritten += other.rewritten;
        self.unparsed.merge(&other.unparsed);
        self.truncated.merge(&other.truncated);
        self.failed.merge(&other.failed);
        self.retried.merge(&other.retried);
        self.late += other.late;
    }

    /// The summary after `elapsed_ns` nanoseconds, printable as text or JSON.
    pub fn summary(&self, elapsed_ns: u64) -> ReplaySummary<'_> {
        ReplaySummary {
            stats: self,
            elapsed_ns,
        }
    }
}

/// Counters plus the time they took: tcpreplay's summary shape through `Display`, one JSON
/// object through `Serialize`.
#[derive(Debug, Clone, Copy)]
pub struct ReplaySummary<'a> {
    stats: &'a ReplayStats,
    elapsed_ns: u64,
}

impl ReplaySummary<'_> {
    /// Seconds elapsed.
    pub fn seconds(&self) -> f64 {
        self.elapsed_ns as f64 / 1e9
    }
    /// Bytes per second (0 when no time elapsed).
    pub fn bytes_per_sec(&self) -> f64 {
        self.rate(self.stats.bytes_sent)
    }
    /// Megabits per second (10^6 bit/s).
    pub fn mbps(&self) -> f64 {
        self.bytes_per_sec() * 8.0 / 1e6
    }
    /// Packets per second.
    pub fn pps(&self) -> f64 {
        self.rate(self.stats.packets_sent)
    }
    fn rate(&self, n: u64) -> f64 {
        if self.elapsed_ns == 0 {
            0.0
        } else {
            n as f64 / self.seconds()
        }
    }
}

impl fmt::Display for ReplaySummary<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.stats;
        writeln!(
            f,
            "Actual: {} packets ({} bytes) sent in {:.6} seconds",
            s.packets_sent,
            s.bytes_sent,
            self.seconds()
        )?;
        writeln!(
            f,
            "Rated: {:.1} Bps, {:.3} Mbps, {:.2} pps",
            self.bytes_per_sec(),
            self.mbps(),
            self.pps()
        )?;
        writeln!(f, "Rewritten packets:          {}", s.rewritten)?;
        writeln!(f, "Passed through unparsed:    {}", s.unparsed)?;
        writeln!(f, "Truncated packets:          {}", s.truncated)?;
        writeln!(f, "Failed packets:             {}", s.failed)?;
        writeln!(f, "Retried packets:            {}", s.retried)?;
        write!(f, "Late packets:               {}", s.late)
    }
}

impl Serialize for ReplaySummary<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let st = self.stats;
        let mut m = s.serialize_struct("Summary", 13)?;
        m.serialize_field("packets_sent", &st.packets_sent)?;
        m.serialize_field("bytes_sent", &st.bytes_sent)?;
        m.serialize_field("seconds", &self.seconds())?;
        m.serialize_field("bytes_per_sec", &self.bytes_per_sec())?;
        m.serialize_field("mbps", &self.mbps())?;
        m.serialize_field("pps", &self.pps())?;
        m.serialize_field("rewritten", &st.rewritten)?;
        m.serialize_field("unparsed", &st.unparsed)?;
        m.serialize_field("truncated", &st.truncated)?;
        m.serialize_field("failed", &st.failed)?;
        m.serialize_field("retried", &st.retried)?;
        m.serialize_field("late", &st.late)?;
        m.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ReplayStats {
        let mut s = ReplayStats::default();
        for _ in 0..1000 {
            s.sent(60);
        }
        s.rewritten = 990;
        s.unparsed.incr("not IP");
        s.failed.add("larger than MTU 1500", 3);
        s.failed.incr("kernel refused");
        s.retried.add("ENOBUFS", 7);
        s.late = 2;
        s
    }

    #[test]
    fn text_has_tcpreplay_shape() {
        let s = sample();
        let text = s.summary(2_000_000_000).to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "Actual: 1000 packets (60000 bytes) sent in 2.000000 seconds"
        );
        assert_eq!(lines[1], "Rated: 30000.0 Bps, 0.240 Mbps, 500.00 pps");
        assert!(lines[2].ends_with(" 990"), "{}", lines[2]);
        assert!(lines[3].ends_with("1 (not IP: 1)"), "{}", lines[3]);
        assert!(
            lines[5].ends_with("4 (larger than MTU 1500: 3, kernel refused: 1)"),
            "{}",
            lines[5]
        );
        assert!(lines[6].ends_with("7 (ENOBUFS: 7)"), "{}", lines[6]);
        assert_eq!(lines[7], "Late packets:               2");
        assert_eq!(lines.len(), 8);
    }

    #[test]
    fn json_is_one_object_with_reasons() {
        let s = sample();
        let v: serde_json::Value = serde_json::to_value(s.summary(2_000_000_000)).unwrap();
        assert_eq!(v["packets_sent"], 1000);
        assert_eq!(v["bytes_sent"], 60000);
        assert_eq!(v["pps"], 500.0);
        assert_eq!(v["failed"]["total"], 4);
        assert_eq!(v["failed"]["reasons"]["larger than MTU 1500"], 3);
        assert_eq!(v["retried"]["reasons"]["ENOBUFS"], 7);
        assert_eq!(v["truncated"]["total"], 0);
        assert_eq!(v["late"], 2);
        let line = serde_json::to_string(&s.summary(1)).unwrap();
        assert!(!line.contains('\n'));
    }

    #[test]
    fn zero_elapsed_has_zero_rates() {
        let s = sample();
        let sum = s.summary(0);
        assert_eq!(sum.pps(), 0.0);
        assert!(sum.to_string().contains("0.00 pps"));
    }

    #[test]
    fn reasons_merge_and_overflow_keep_the_total() {
        const NAMES: [&str; 12] = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l"];
        let mut r = ReasonCounts::default();
        for (i, name) in NAMES.iter().enumerate() {
            r.add(name, i as u64 + 1);
        }
        assert_eq!(r.total(), (1..=12).sum::<u64>());
        assert_eq!(r.get("a"), 1);
        let mut a = sample();
        a.merge(&sample());
        assert_eq!(a.packets_sent, 2000);
        assert_eq!(a.failed.get("larger than MTU 1500"), 6);
        assert_eq!(a.failed.total(), 8);
    }
}
