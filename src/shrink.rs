//! Giving back what a past peak left allocated: one policy for the long-lived maps and queues
//! of tcpcopy's engine and intercept's router, which call [`Shrink::shrink_if_oversized`] on
//! them every few seconds.
//!
//! A collection is shrunk once its capacity exceeds [`SHRINK_FACTOR`] times its length plus
//! [`SHRINK_SLACK`], down to twice its length: the hysteresis keeps a load that comes and goes
//! from reallocating back and forth, and small collections are never touched.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{BuildHasher, Hash};

/// Capacity over length above which a collection gives memory back.
pub const SHRINK_FACTOR: usize = 4;
/// Capacity (in elements) any collection keeps without being shrunk.
pub const SHRINK_SLACK: usize = 1024;

/// Whether a collection of `len` elements with room for `cap` should give memory back.
pub fn oversized(cap: usize, len: usize) -> bool {
    cap > SHRINK_FACTOR * len + SHRINK_SLACK
}

/// A collection that can give back capacity far above its length.
pub trait Shrink {
    /// Shrinks to twice the length when [`oversized`]; does nothing otherwise.
    fn shrink_if_oversized(&mut self);
}

macro_rules! impl_shrink {
    ($ty:ty, $($gen:tt)*) => {
        impl<$($gen)*> Shrink for $ty {
            fn shrink_if_oversized(&mut self) {
                if oversized(self.capacity(), self.len()) {
                    self.shrink_to(2 * self.len());
                }
            }
        }
    };
}

impl_shrink!(Vec<T>, T);
impl_shrink!(VecDeque<T>, T);
impl_shrink!(HashMap<K, V, S>, K: Eq + Hash, V, S: BuildHasher);
impl_shrink!(HashSet<T, S>, T: Eq + Hash, S: BuildHasher);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shrinks_only_far_above_the_length() {
        let mut v: Vec<u8> = Vec::with_capacity(SHRINK_SLACK);
        v.push(1);
        v.shrink_if_oversized();
        assert_eq!(v.capacity(), SHRINK_SLACK, "small ones are left alone");

        let mut m: HashMap<u32, u32> = (0..50_000).map(|i| (i, i)).collect();
        m.retain(|&k, _| k < 100);
        let before = m.capacity();
        m.shrink_if_oversized();
        assert!(
            m.capacity() < before / 4 && m.capacity() >= 200,
            "{}",
            m.capacity()
        );
        assert_eq!(m.len(), 100);
        let after = m.capacity();
        m.shrink_if_oversized();
        assert_eq!(m.capacity(), after, "no second shrink at twice the length");
    }
}
