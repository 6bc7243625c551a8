//! A cap on what a sender puts on the wire: packets per second and bytes per second, each a
//! token bucket. Time is passed in as nanoseconds since any fixed origin; this module never
//! reads a clock and never sleeps.
//!
//! The sender asks [`RateCap::ready_at`] before each packet and holds the packet until then,
//! and reports what it sent with [`RateCap::charge`]. A bucket may go into debt by the last
//! packet (its size is only known once built), so the long-run rate is the cap exactly and a
//! burst is at most [`BURST`] worth of the rate (or one packet, when that is more).
//!
//! tcpcopy's `--max-pps` and `--max-mbps` use it: packets are held, never dropped, so cloned
//! sessions stay whole; what cannot go out waits in the sessions' buffers, which count against
//! the memory budget, so a sustained excess ends in new sessions being refused.

use std::time::Duration;

/// The longest burst a bucket allows, as time at the full rate.
pub const BURST: Duration = Duration::from_millis(10);

/// Smallest burst of a byte bucket: one largest IP packet.
const MIN_BYTE_BURST: f64 = 65_535.0;

/// Why a cap was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CapError {
    /// A rate that is zero, negative, or not a number.
    #[error("{what}: must be a positive number (got {value})")]
    NotPositive {
        /// Which rate.
        what: &'static str,
        /// The value given.
        value: f64,
    },
}

#[derive(Debug, Clone)]
struct Bucket {
    /// Tokens per nanosecond.
    rate: f64,
    burst: f64,
    tokens: f64,
    last: u64,
}

impl Bucket {
    fn new(per_sec: f64, min_burst: f64) -> Bucket {
        let burst = (per_sec * BURST.as_secs_f64()).max(min_burst);
        Bucket {
            rate: per_sec / 1e9,
            burst,
            tokens: burst,
            last: 0,
        }
    }

    fn refill(&mut self, now: u64) {
        if now > self.last {
            self.tokens = (self.tokens + (now - self.last) as f64 * self.rate).min(self.burst);
            self.last = now;
        }
    }

    /// When the bucket has a token again (at or before `now` means now).
    fn ready_at(&mut self, now: u64) -> u64 {
        self.refill(now);
        if self.tokens > 0.0 {
            now
        } else {
            // Strictly after the debt is paid back.
            now + ((-self.tokens) / self.rate).floor() as u64 + 1
        }
    }

    fn charge(&mut self, now: u64, n: f64) {
        self.refill(now);
        self.tokens -= n;
    }
}

/// Packet and byte rate caps; either may be absent.
#[derive(Debug, Clone)]
pub struct RateCap {
    pps: Option<Bucket>,
    bytes: Option<Bucket>,
}

impl RateCap {
    /// A cap of `max_pps` packets and `max_mbps` megabits (10^6 bits) per second of IP bytes.
    /// `None` when neither is given.
    pub fn new(max_pps: Option<f64>, max_mbps: Option<f64>) -> Result<Option<RateCap>, CapError> {
        let check = |what, v: Option<f64>| match v {
            Some(x) if !(x.is_finite() && x > 0.0) => Err(CapError::NotPositive { what, value: x }),
            _ => Ok(v),
        };
        let pps = check("max pps", max_pps)?;
        let mbps = check("max Mbps", max_mbps)?;
        if pps.is_none() && mbps.is_none() {
            return Ok(None);
        }
        Ok(Some(RateCap {
            pps: pps.map(|p| Bucket::new(p, 1.0)),
            bytes: mbps.map(|m| Bucket::new(m * 1e6 / 8.0, MIN_BYTE_BURST)),
        }))
    }

    /// When the next packet may be sent, in the caller's nanoseconds (`<= now`: at once).
    pub fn ready_at(&mut self, now: u64) -> u64 {
        let a = self.pps.as_mut().map_or(now, |b| b.ready_at(now));
        let b = self.bytes.as_mut().map_or(now, |b| b.ready_at(now));
        a.max(b)
    }

    /// Accounts one sent packet of `len` bytes.
    pub fn charge(&mut self, now: u64, len: usize) {
        if let Some(b) = self.pps.as_mut() {
            b.charge(now, 1.0);
        }
        if let Some(b) = self.bytes.as_mut() {
            b.charge(now, len as f64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Sends as fast as the cap lets for `secs` seconds of simulated time; returns
    /// (packets, bytes).
    fn drive(cap: &mut RateCap, len: usize, secs: u64) -> (u64, u64) {
        let end = secs * 1_000_000_000;
        let (mut now, mut n, mut bytes) = (0u64, 0u64, 0u64);
        loop {
            let at = cap.ready_at(now);
            now = now.max(at);
            if now >= end {
                return (n, bytes);
            }
            cap.charge(now, len);
            n += 1;
            bytes += len as u64;
        }
    }

    #[test]
    fn none_without_rates_and_errors_on_bad_ones() {
        assert!(RateCap::new(None, None).unwrap().is_none());
        assert!(RateCap::new(Some(0.0), None).is_err());
        assert!(RateCap::new(None, Some(-1.0)).is_err());
        assert!(RateCap::new(Some(f64::NAN), None).is_err());
    }

    #[test]
    fn packet_rate_is_held() {
        let mut cap = RateCap::new(Some(1000.0), None).unwrap().unwrap();
        let (n, _) = drive(&mut cap, 100, 10);
        // 10 s at 1000 pps plus the first burst (10 ms = 10 packets).
        assert!((10_000..=10_011).contains(&n), "{n}");
    }

    #[test]
    fn byte_rate_is_held() {
        // 8 Mbps = 1 MB/s of 1000-byte packets = 1000 pps.
        let mut cap = RateCap::new(None, Some(8.0)).unwrap().unwrap();
        let (_, bytes) = drive(&mut cap, 1000, 10);
        let burst = 65_535 + 1000;
        assert!(
            (10_000_000..=10_000_000 + burst).contains(&bytes),
            "{bytes}"
        );
    }

    #[test]
    fn the_lower_of_both_caps_wins() {
        // 1000 pps, but 0.8 Mbps of 1000-byte packets is only 100 pps.
        let mut cap = RateCap::new(Some(1000.0), Some(0.8)).unwrap().unwrap();
        let (n, _) = drive(&mut cap, 1000, 10);
        assert!((1000..=1000 + 66).contains(&n), "{n}");
    }

    #[test]
    fn idle_time_does_not_bank_more_than_a_burst() {
        let mut cap = RateCap::new(Some(100_000.0), None).unwrap().unwrap();
        // A minute idle, then as fast as allowed at one instant: at most the burst.
        let now = 60_000_000_000u64;
        let mut n = 0;
        while cap.ready_at(now) <= now {
            cap.charge(now, 64);
            n += 1;
            assert!(n < 10_000, "no bound");
        }
        assert_eq!(n, 1000, "10 ms of 100k pps");
    }

    proptest! {
        #[test]
        fn never_faster_than_the_cap(pps in 1.0f64..5e4, len in 40usize..9000, secs in 1u64..3) {
            let mut cap = RateCap::new(Some(pps), None).unwrap().unwrap();
            let (n, _) = drive(&mut cap, len, secs);
            let most = pps * secs as f64 + (pps * BURST.as_secs_f64()).max(1.0) + 1.0;
            prop_assert!((n as f64) <= most, "{} > {}", n, most);
            prop_assert!((n as f64) >= pps * secs as f64 - 1.0, "{} too few", n);
        }
    }
}
