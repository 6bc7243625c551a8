//! TCP sequence numbers with wrapping (RFC 793 §3.3, RFC 1982 serial-number) comparison.
//!
//! No bare `u32` arithmetic on seq/ack anywhere else in the suite: use [`SeqNumber`].

use core::cmp::Ordering;
use core::ops::{Add, Sub};

/// A TCP sequence (or acknowledgment) number; ordering wraps modulo 2^32.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SeqNumber(pub u32);

impl SeqNumber {
    /// The raw 32-bit value as carried on the wire.
    pub const fn value(self) -> u32 {
        self.0
    }

    /// Signed distance `self - other`, valid while the two are within 2^31 of each other.
    pub const fn diff(self, other: SeqNumber) -> i32 {
        self.0.wrapping_sub(other.0) as i32
    }

    /// The larger of two sequence numbers in wrapping order.
    pub fn max(self, other: SeqNumber) -> SeqNumber {
        if self >= other {
            self
        } else {
            other
        }
    }

    /// The smaller of two sequence numbers in wrapping order.
    pub fn min(self, other: SeqNumber) -> SeqNumber {
        if self <= other {
            self
        } else {
            other
        }
    }
}

impl Add<u32> for SeqNumber {
    type Output = SeqNumber;
    fn add(self, rhs: u32) -> SeqNumber {
        SeqNumber(self.0.wrapping_add(rhs))
    }
}

impl Sub<u32> for SeqNumber {
    type Output = SeqNumber;
    fn sub(self, rhs: u32) -> SeqNumber {
        SeqNumber(self.0.wrapping_sub(rhs))
    }
}

impl PartialOrd for SeqNumber {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for SeqNumber {
    /// Wrapping order: `a < b` when `b - a` is in `1..2^31`.
    fn cmp(&self, other: &Self) -> Ordering {
        self.diff(*other).cmp(&0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wraps_around() {
        let a = SeqNumber(u32::MAX - 1);
        let b = a + 4;
        assert_eq!(b, SeqNumber(2));
        assert!(a < b);
        assert_eq!(b.diff(a), 4);
        assert_eq!(a.diff(b), -4);
        assert_eq!(b - 4, a);
        assert_eq!(a.max(b), b);
        assert_eq!(a.min(b), a);
    }
}
