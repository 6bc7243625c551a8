//! One direction's byte stream put back in order: the next sequence number expected, and the
//! segments captured beyond a hole held until it fills.
//!
//! Both modes use it: raw mode's client stream ([`super::ClientStream`]) and each direction of
//! stream mode's reassembly (`stream::reassembly`). What a mode does with a hole (raw mode
//! resets the clone, stream mode ends the session) and where in-order bytes go are the
//! caller's; where a segment's new bytes start, what is held, what a held segment costs and the
//! order held segments come back in are decided here only.
//!
//! Memory is counted against a counter the caller passes in (raw mode's engine shares one budget
//! among its sessions); what is counted is what a held segment allocates, not only its payload.

use std::collections::{btree_map, BTreeMap};
use tcpclone::seq::SeqNumber;

/// A captured segment held out of order.
#[derive(Debug)]
pub(crate) struct Held {
    /// Its first sequence number.
    pub seq: SeqNumber,
    /// The sender's ack on it, if the ACK flag was set.
    pub ack: Option<SeqNumber>,
    /// It carried a FIN.
    pub fin: bool,
    /// Its payload.
    pub data: Vec<u8>,
}

/// What one held segment costs beyond its bytes, counted against the memory budget: its map
/// entry (key and `Held`) and its share of the B-tree node, counted high. Thousands of tiny
/// segments cost far more than their payload.
const HELD_OVERHEAD: usize = std::mem::size_of::<(i32, Held)>() + 16;

/// Memory one held segment of `len` bytes accounts for.
#[inline]
pub(crate) fn held_cost(len: usize) -> usize {
    len + HELD_OVERHEAD
}

/// The next sequence number expected in one direction and the segments held beyond it.
#[derive(Debug)]
pub(crate) struct ReorderQueue {
    /// The next sequence number expected (everything before it came in order).
    next: SeqNumber,
    /// Segments held out of order, by their offset from `anchor` (sequence numbers wrap,
    /// offsets within the window do not): finding, inserting and taking the next in order cost
    /// O(log n) however many are held, never a scan of them.
    held: BTreeMap<i32, Held>,
    /// `next` when the first of the held segments arrived.
    anchor: SeqNumber,
    /// Memory the held segments account for ([`held_cost`]).
    held_bytes: usize,
}

impl ReorderQueue {
    /// An empty queue whose first byte is `start`.
    pub fn new(start: SeqNumber) -> ReorderQueue {
        ReorderQueue {
            next: start,
            held: BTreeMap::new(),
            anchor: start,
            held_bytes: 0,
        }
    }

    /// The next sequence number expected: every byte before it came in order.
    #[inline]
    pub fn next(&self) -> SeqNumber {
        self.next
    }

    /// Moves the next expected byte to `next` (bytes taken, or passed over after a hole).
    #[inline]
    pub fn set_next(&mut self, next: SeqNumber) {
        self.next = next;
    }

    /// `n` more bytes were taken in order.
    #[inline]
    pub fn advance(&mut self, n: usize) {
        self.next = self.next + n as u32;
    }

    /// The part of `data` (captured at `seq`) that is new and in order: empty when all of it
    /// came before (a retransmission), `None` when it starts beyond a hole (to be held).
    #[inline]
    pub fn new_part<'a>(&self, seq: SeqNumber, data: &'a [u8]) -> Option<&'a [u8]> {
        if seq > self.next {
            return None;
        }
        let skip = self.next.diff(seq) as usize;
        Some(&data[skip.min(data.len())..])
    }

    /// Memory the held segments account for.
    #[inline]
    pub fn held_bytes(&self) -> usize {
        self.held_bytes
    }

    /// No segment is held out of order.
    #[inline]
    pub fn nothing_held(&self) -> bool {
        self.held.is_empty()
    }

    /// Holds a segment captured beyond a hole. A retransmission of what is held is dropped; a
    /// longer segment from the same place supersedes the shorter one. Its cost is added to
    /// `mem`.
    pub fn hold(&mut self, seg: Held, mem: &mut usize) {
        if self.held.is_empty() {
            self.anchor = self.next;
        }
        let key = seg.seq.diff(self.anchor);
        if let Some(h) = self.held.get(&key) {
            if h.data.len() >= seg.data.len() {
                return;
            }
            let old = held_cost(h.data.len());
            self.held_bytes -= old;
            *mem = mem.saturating_sub(old);
        }
        let cost = held_cost(seg.data.len());
        self.held_bytes += cost;
        *mem += cost;
        self.held.insert(key, seg);
    }

    /// Takes the held segment that now starts in order (at or before [`ReorderQueue::next`]),
    /// if any: the one with the lowest sequence number is the only candidate. The caller takes
    /// its new part ([`ReorderQueue::new_part`]) and moves `next` past it.
    #[inline]
    pub fn take_next_held(&mut self, mem: &mut usize) -> Option<Held> {
        let first = self.held.first_entry()?;
        if first.get().seq > self.next {
            return None;
        }
        let h = first.remove();
        let cost = held_cost(h.data.len());
        self.held_bytes -= cost;
        *mem = mem.saturating_sub(cost);
        Some(h)
    }

    /// Hands back every held segment in sequence order (a hole: the caller decides what they
    /// still mean); their cost leaves `mem`.
    pub fn take_all_held(&mut self, mem: &mut usize) -> btree_map::IntoValues<i32, Held> {
        *mem = mem.saturating_sub(self.held_bytes);
        self.held_bytes = 0;
        std::mem::take(&mut self.held).into_values()
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A held segment of `data` at `seq`, no ack, no FIN.
    pub(in crate::conversation) fn held(seq: u32, data: &[u8]) -> Held {
        Held {
            seq: SeqNumber(seq),
            ack: None,
            fin: false,
            data: data.to_vec(),
        }
    }

    #[test]
    fn new_part_trims_what_came_before_and_refuses_what_is_beyond_a_hole() {
        let q = ReorderQueue::new(SeqNumber(10));
        assert_eq!(q.new_part(SeqNumber(8), b"abcd"), Some(&b"cd"[..]));
        assert_eq!(q.new_part(SeqNumber(10), b"ab"), Some(&b"ab"[..]));
        assert_eq!(
            q.new_part(SeqNumber(4), b"ab"),
            Some(&b""[..]),
            "retransmission"
        );
        assert_eq!(q.new_part(SeqNumber(11), b"ab"), None, "beyond a hole");
        let wrapped = ReorderQueue::new(SeqNumber(1));
        assert_eq!(
            wrapped.new_part(SeqNumber(u32::MAX), b"xyz"),
            Some(&b"z"[..])
        );
    }

    #[test]
    fn held_segments_come_back_in_order_and_free_their_cost() {
        let mut q = ReorderQueue::new(SeqNumber(0));
        let mut mem = 0;
        q.hold(held(10, b"bbbb"), &mut mem);
        q.hold(held(5, b"aaaaa"), &mut mem);
        q.hold(held(5, b"aa"), &mut mem); // a shorter retransmission: dropped
        assert_eq!(mem, held_cost(4) + held_cost(5));
        assert!(q.take_next_held(&mut mem).is_none(), "hole at 0..5");
        q.set_next(SeqNumber(5));
        let h = q.take_next_held(&mut mem).unwrap();
        assert_eq!((h.seq, h.data.len()), (SeqNumber(5), 5));
        assert_eq!(q.held_bytes(), held_cost(4));
        assert_eq!(mem, held_cost(4));
        assert!(!q.nothing_held());
    }

    #[test]
    fn a_longer_segment_supersedes_a_held_one() {
        let mut q = ReorderQueue::new(SeqNumber(0));
        let mut mem = 0;
        q.hold(held(5, b"ab"), &mut mem);
        q.hold(held(5, b"abcd"), &mut mem);
        assert_eq!(mem, held_cost(4));
        assert_eq!(q.held_bytes(), held_cost(4));
    }

    #[test]
    fn held_order_survives_the_sequence_wrap() {
        let start = SeqNumber(u32::MAX - 5);
        let mut q = ReorderQueue::new(start);
        let mut mem = 0;
        q.hold(held(4, b"late"), &mut mem); // past the wrap
        q.hold(held(u32::MAX - 1, b"early"), &mut mem);
        let seqs: Vec<_> = q.take_all_held(&mut mem).map(|h| h.seq).collect();
        assert_eq!(seqs, [SeqNumber(u32::MAX - 1), SeqNumber(4)]);
        assert_eq!((mem, q.held_bytes()), (0, 0));
    }

    #[test]
    fn many_held_segments_drain_in_order() {
        // 200,000 one-byte segments held last first, then taken back one at a time. (That
        // this stays linear in time is measured by the tests of both modes that drive it:
        // `engine::tests` and `stream::reassembly`.)
        let n = 200_000u32;
        let mut q = ReorderQueue::new(SeqNumber(0));
        let mut mem = 0;
        for i in (1..=n).rev() {
            q.hold(held(i, b"x"), &mut mem);
        }
        q.set_next(SeqNumber(1));
        let mut taken = 0u32;
        while let Some(h) = q.take_next_held(&mut mem) {
            let new = q.new_part(h.seq, &h.data).unwrap().len();
            q.advance(new);
            taken += new as u32;
        }
        assert_eq!(taken, n);
        assert_eq!((mem, q.held_bytes()), (0, 0));
        assert!(q.nothing_held());
    }
}
