//! Raw mode's client stream as captured: the in-order bytes not yet acknowledged by the target,
//! the segments held beyond a hole (the shared [`ReorderQueue`]), and the client's FIN.
//!
//! Memory is counted against a counter the caller passes in (the engine's budget is shared by
//! all its sessions); what is counted is what is allocated, not just the bytes in use. This module
//! decides nothing about requests (that is [`super::RequestBoundaries`]) and never copies a byte
//! twice.

use super::chunks::{Chunks, SparePool};
use super::order::{Held, ReorderQueue};
use std::collections::btree_map;
use tcpclone::seq::SeqNumber;
use tcpclone::sys::ring::HeldBytes;

/// The client stream of one conversation.
#[derive(Debug)]
pub(crate) struct ClientStream {
    /// The next sequence number expected from the client and the segments held beyond a hole.
    order: ReorderQueue,
    /// In-order bytes from `buf_seq` up to `next`, not yet acknowledged by the target.
    buf: Chunks,
    /// Sequence number of `buf`'s first byte.
    buf_seq: SeqNumber,
    /// Held segments are being merged back (the caller's merge loop feeds them through its own
    /// accept path, which would start another merge).
    merging: bool,
    /// Where the client's FIN is, once it is in order.
    fin: Option<SeqNumber>,
}

impl ClientStream {
    /// An empty stream whose first byte is `start`.
    pub fn new(start: SeqNumber) -> ClientStream {
        ClientStream {
            order: ReorderQueue::new(start),
            buf: Chunks::default(),
            buf_seq: start,
            merging: false,
            fin: None,
        }
    }

    /// Starts over at `start` (re-establishment after a capture gap, buffers already dropped).
    pub fn restart(&mut self, start: SeqNumber) {
        self.order.set_next(start);
        self.buf_seq = start;
    }

    /// The next sequence number expected: every byte before it has been captured in order.
    #[inline]
    pub fn next(&self) -> SeqNumber {
        self.order.next()
    }

    /// The part of `data` (captured at `seq`) that is new and in order; `None` beyond a hole
    /// (the shared rule, [`ReorderQueue::new_part`]).
    #[inline]
    pub fn new_part<'a>(&self, seq: SeqNumber, data: &'a [u8]) -> Option<&'a [u8]> {
        self.order.new_part(seq, data)
    }

    /// Moves past bytes that are not replayed (after a capture gap).
    pub fn skip_to(&mut self, next: SeqNumber) {
        self.order.set_next(next);
    }

    /// Where the client's FIN is, once captured in order.
    #[inline]
    pub fn fin(&self) -> Option<SeqNumber> {
        self.fin
    }

    /// The client's FIN is at `at`.
    #[inline]
    pub fn set_fin(&mut self, at: SeqNumber) {
        self.fin = Some(at);
    }

    /// Bytes accounted for: the buffer's allocated capacity, not just the bytes in it, and the
    /// held segments.
    #[inline]
    pub fn buffered(&self) -> usize {
        self.buf.capacity() + self.order.held_bytes()
    }

    /// Memory the held segments account for.
    #[inline]
    pub fn held_bytes(&self) -> usize {
        self.order.held_bytes()
    }

    /// No segment is held out of order.
    #[inline]
    pub fn nothing_held(&self) -> bool {
        self.order.nothing_held()
    }

    /// How much memory appending `n` bytes allocates, the pool's spare chunks used first.
    /// `None` when the bytes held would exceed `cap_limit`.
    #[inline]
    pub fn growth_for(&self, n: usize, cap_limit: usize, pool: &SparePool) -> Option<usize> {
        (self.buf.len() + n <= cap_limit).then(|| self.buf.growth_for(n, pool.count()))
    }

    /// Appends the in-order bytes `new` (at [`ClientStream::next`]), taking chunks from `pool`
    /// first; what is allocated is added to `mem`.
    #[inline]
    pub fn append(&mut self, new: &[u8], pool: &mut SparePool, mem: &mut usize) {
        self.buf.append(new, pool, mem);
        self.order.advance(new.len());
    }

    /// [`ClientStream::append`] of bytes that stay in the capture ring (nothing is allocated;
    /// the caller checked [`ClientStream::growth_for`]'s limit).
    #[inline]
    pub fn append_ring(&mut self, new: HeldBytes) {
        let n = new.len();
        self.buf.append_ring(new);
        self.order.advance(n);
    }

    /// In-order bytes captured and not yet acknowledged by the target.
    #[inline]
    pub fn unacked(&self) -> usize {
        self.buf.len()
    }

    /// Whether some in-order bytes are still in the capture ring.
    #[inline]
    pub fn holds_ring(&self) -> bool {
        self.buf.holds_ring()
    }

    /// Memory [`ClientStream::copy_ring`] allocates, the pool's spare chunks used first.
    #[inline]
    pub fn copy_ring_growth(&self, pool: &SparePool, which: &dyn Fn(&HeldBytes) -> bool) -> usize {
        self.buf.copy_ring_growth(pool.count(), which)
    }

    /// Copies the bytes still in the capture ring that `which` picks into buffers of ours.
    #[inline]
    pub fn copy_ring(
        &mut self,
        pool: &mut SparePool,
        mem: &mut usize,
        which: &dyn Fn(&HeldBytes) -> bool,
    ) {
        self.buf.copy_ring(pool, mem, which);
    }

    /// Holds a segment captured beyond a hole ([`ReorderQueue::hold`]).
    #[inline]
    pub fn hold(&mut self, seg: Held, mem: &mut usize) {
        self.order.hold(seg, mem);
    }

    /// Starts merging held segments back; `false` when a merge is already running (the caller's
    /// outer loop does the work, so a long run of held segments is not a deep recursion).
    #[inline]
    pub fn begin_merge(&mut self) -> bool {
        !std::mem::replace(&mut self.merging, true)
    }

    /// The merge loop is done.
    #[inline]
    pub fn end_merge(&mut self) {
        self.merging = false;
    }

    /// Takes the held segment that now starts in order, if any
    /// ([`ReorderQueue::take_next_held`]).
    #[inline]
    pub fn take_next_held(&mut self, mem: &mut usize) -> Option<Held> {
        self.order.take_next_held(mem)
    }

    /// Drops the in-order bytes and the FIN (a capture gap), then hands back every held
    /// segment in sequence order.
    pub fn drop_for_gap(
        &mut self,
        pool: &mut SparePool,
        mem: &mut usize,
    ) -> btree_map::IntoValues<i32, Held> {
        self.buf.give_back(pool, mem);
        self.fin = None;
        self.order.take_all_held(mem)
    }

    /// Gives back every buffer (the conversation is over or its target is gone).
    pub fn release(&mut self, pool: &mut SparePool, mem: &mut usize) {
        self.buf.give_back(pool, mem);
        // Dropped: the conversation is over.
        drop(self.order.take_all_held(mem));
    }

    /// The target acknowledged everything before `ack`: drops those bytes and returns how many.
    /// Emptied chunks go to `pool`; a small buffer stays.
    #[inline]
    pub fn acked(&mut self, ack: SeqNumber, pool: &mut SparePool, mem: &mut usize) -> usize {
        let drop = ack.diff(self.buf_seq).clamp(0, self.buf.len() as i32) as usize;
        if drop > 0 {
            self.buf.consume(drop, pool, mem);
            self.buf_seq = self.buf_seq + drop as u32;
        }
        drop
    }

    /// How many of the `max` bytes from `seq` one [`ClientStream::bytes`] can give (they lie
    /// in at most two pieces); 0 when none is held there.
    #[inline]
    pub fn span(&self, seq: SeqNumber, max: usize) -> usize {
        usize::try_from(seq.diff(self.buf_seq)).map_or(0, |off| self.buf.span(off, max))
    }

    /// The `len` bytes from `seq`, in the buffer's one or two pieces; `None` when they are not
    /// all held (acknowledged already, or not captured yet) or lie in more pieces
    /// ([`ClientStream::span`]).
    #[inline]
    pub fn bytes(&self, seq: SeqNumber, len: usize) -> Option<(&[u8], &[u8])> {
        let off = usize::try_from(seq.diff(self.buf_seq)).ok()?;
        self.buf.slices(off, len)
    }
}

#[cfg(test)]
mod tests {
    use super::super::chunks::CHUNK;
    use super::super::order::tests::held;
    use super::*;

    /// Appends `data` as the engine does; returns what was newly allocated.
    fn push(s: &mut ClientStream, pool: &mut SparePool, data: &[u8], mem: &mut usize) -> usize {
        let g = s.growth_for(data.len(), 64 << 20, pool).unwrap();
        let before = *mem;
        s.append(data, pool, mem);
        assert_eq!(*mem - before, g, "growth_for told what append allocates");
        g
    }

    #[test]
    fn appends_in_order_and_counts_the_allocation() {
        let mut s = ClientStream::new(SeqNumber(100));
        let (mut pool, mut mem) = (SparePool::new(0), 0);
        assert!(push(&mut s, &mut pool, b"hello", &mut mem) >= 5);
        assert_eq!(s.next(), SeqNumber(105));
        assert_eq!(mem, s.buffered());
        assert_eq!(s.bytes(SeqNumber(101), 3), Some((&b"ell"[..], &[][..])));
        assert_eq!(s.bytes(SeqNumber(103), 3), None, "past what was captured");
        assert_eq!(s.bytes(SeqNumber(99), 3), None, "before what is held");
        assert_eq!(
            s.growth_for(10, 12, &pool),
            None,
            "over the per-session cap"
        );
    }

    #[test]
    fn acked_bytes_leave_and_bytes_across_chunks_read_in_two_pieces() {
        let start = SeqNumber(u32::MAX - 1);
        let mut s = ClientStream::new(start);
        let (mut pool, mut mem) = (SparePool::new(1 << 20), 0);
        let data: Vec<u8> = (0..3 * CHUNK).map(|i| (i % 251) as u8).collect();
        push(&mut s, &mut pool, &data[..2 * CHUNK], &mut mem);
        assert_eq!(s.acked(start + 6, &mut pool, &mut mem), 6);
        push(&mut s, &mut pool, &data[2 * CHUNK..], &mut mem);
        let at = CHUNK as u32 - 100;
        let (a, b) = s.bytes(start + at, 1448).unwrap();
        assert_eq!((a.len(), b.len()), (100, 1348));
        assert_eq!([a, b].concat(), &data[at as usize..at as usize + 1448]);
        assert_eq!(mem, s.buffered());
        // Acknowledged past the first chunk: it waits in the pool for any session.
        s.acked(start + CHUNK as u32 + 1, &mut pool, &mut mem);
        assert_eq!((pool.bytes(), mem), (CHUNK, s.buffered() + CHUNK));
        let mut t = ClientStream::new(SeqNumber(0));
        assert_eq!(
            push(&mut t, &mut pool, &data[..CHUNK], &mut mem),
            0,
            "a spare, nothing allocated"
        );
    }

    #[test]
    fn a_gap_hands_back_held_segments_and_frees_everything() {
        let mut s = ClientStream::new(SeqNumber(0));
        let (mut pool, mut mem) = (SparePool::new(0), 0);
        push(&mut s, &mut pool, b"abc", &mut mem);
        s.set_fin(SeqNumber(3));
        s.hold(held(20, b"z"), &mut mem);
        s.hold(held(9, b"y"), &mut mem);
        let seqs: Vec<_> = s.drop_for_gap(&mut pool, &mut mem).map(|h| h.seq).collect();
        assert_eq!(seqs, [SeqNumber(9), SeqNumber(20)]);
        assert_eq!((mem, s.buffered(), s.fin()), (0, 0, None));
    }

    #[test]
    fn one_merge_at_a_time() {
        let mut s = ClientStream::new(SeqNumber(0));
        assert!(s.begin_merge());
        assert!(!s.begin_merge());
        s.end_merge();
        assert!(s.begin_merge());
    }
}
