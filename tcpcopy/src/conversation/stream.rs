//! Raw mode's client stream as captured: the in-order bytes not yet acknowledged by the target,
//! the segments held beyond a hole (the shared [`ReorderQueue`]), and the client's FIN.
//!
//! Memory is counted against a counter the caller passes in (the engine's budget is shared by
//! all its sessions); what is counted is what is allocated, not just the bytes in use. This module
//! decides nothing about requests (that is [`super::RequestBoundaries`]) and never copies a byte
//! twice.

use super::order::{Held, ReorderQueue};
use std::collections::{btree_map, VecDeque};
use tcpclone::seq::SeqNumber;

/// A non-empty buffer larger than this shrinks at the periodic trim when it is mostly unused.
const SHRINK_ABOVE: usize = 1 << 20;

/// The most buffers [`SparePool`] keeps.
const MAX_SPARES: usize = 64;

/// A buffer this small stays with its session when it empties (it costs less than the pool's
/// bookkeeping).
const KEEP_SMALL: usize = 16 * 1024;

/// Emptied client-stream buffers kept for the next burst of any session. Without it a session
/// whose requests are large (uploads) grows a buffer from nothing for each request, copying it
/// at each doubling and faulting its fresh pages in, and frees it again once the target
/// acknowledged it: work per byte that outgrew the one copy the bytes need. The spares'
/// capacity stays counted in the engine's memory (it is allocated); the pool keeps at most
/// [`MAX_SPARES`] buffers and `limit` bytes and frees what it cannot keep.
#[derive(Debug)]
pub(crate) struct SparePool {
    bufs: Vec<VecDeque<u8>>,
    bytes: usize,
    limit: usize,
    /// A spare was asked for since the last [`SparePool::trim`].
    used: bool,
}

impl SparePool {
    /// A pool that keeps at most `limit` bytes of spare capacity.
    pub fn new(limit: usize) -> SparePool {
        SparePool {
            bufs: Vec::new(),
            bytes: 0,
            limit,
            used: false,
        }
    }

    /// Capacity held by the spares (counted in the engine's memory).
    #[inline]
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Takes an emptied buffer: kept, or freed and taken off `mem`.
    fn put(&mut self, mut buf: VecDeque<u8>, mem: &mut usize) {
        buf.clear();
        let cap = buf.capacity();
        if cap > KEEP_SMALL && self.bufs.len() < MAX_SPARES && self.bytes + cap <= self.limit {
            self.bytes += cap;
            self.bufs.push(buf);
        } else {
            *mem = mem.saturating_sub(cap);
        }
    }

    /// The largest spare, when it is larger than `than`. The largest, not the first that
    /// holds the bytes at hand: they are the start of a burst whose size is not known yet,
    /// and a spare taken too small grows again (a copy at each doubling, fresh pages faulted
    /// in) while the large ones wait.
    fn take(&mut self, than: usize) -> Option<VecDeque<u8>> {
        if self.bufs.is_empty() {
            return None;
        }
        self.used = true;
        let (i, b) = self
            .bufs
            .iter()
            .enumerate()
            .max_by_key(|(_, b)| b.capacity())?;
        if b.capacity() <= than {
            return None;
        }
        let b = self.bufs.swap_remove(i);
        self.bytes -= b.capacity();
        Some(b)
    }

    /// Frees the spares when none was asked for since the last call (the engine calls it every
    /// few seconds: spares outlive the bursts that use them by no more than that).
    pub fn trim(&mut self, mem: &mut usize) {
        if !std::mem::take(&mut self.used) {
            self.clear(mem);
        }
    }

    /// Whether `n` more bytes fit under `limit` (0: no limit) with `mem` in use, after freeing
    /// the spares if they alone stand in the way: memory a live session needs comes before
    /// buffers kept for bursts that may never come.
    pub fn room_for(&mut self, n: usize, limit: usize, mem: &mut usize) -> bool {
        let fits = |mem: usize| limit == 0 || mem + n <= limit;
        if !fits(*mem) && self.bytes > 0 {
            self.clear(mem);
        }
        fits(*mem)
    }

    /// Frees every spare (memory is short).
    pub fn clear(&mut self, mem: &mut usize) {
        *mem = mem.saturating_sub(self.bytes);
        self.bytes = 0;
        self.bufs = Vec::new();
    }
}

/// The client stream of one conversation.
#[derive(Debug)]
pub(crate) struct ClientStream {
    /// The next sequence number expected from the client and the segments held beyond a hole.
    order: ReorderQueue,
    /// In-order bytes from `buf_seq` up to `next`, not yet acknowledged by the target.
    buf: VecDeque<u8>,
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
            buf: VecDeque::new(),
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

    /// An empty buffer too small for `n` more bytes is swapped for a spare from `pool` (the
    /// spare is counted in `mem` already; the small buffer is freed).
    #[inline]
    pub fn adopt_spare(&mut self, pool: &mut SparePool, n: usize, mem: &mut usize) {
        let cap = self.buf.capacity();
        if !self.buf.is_empty() || cap >= n {
            return;
        }
        if let Some(spare) = pool.take(cap) {
            *mem = mem.saturating_sub(cap);
            self.buf = spare;
        }
    }

    /// How much the buffer must grow to take `n` more bytes: doubling (amortised), never past
    /// `cap_limit`. `None` when the bytes would not fit under `cap_limit` at all.
    #[inline]
    pub fn growth_for(&self, n: usize, cap_limit: usize) -> Option<usize> {
        let need = self.buf.len() + n;
        if need > cap_limit {
            return None;
        }
        let cap = self.buf.capacity();
        Some(if need <= cap {
            0
        } else {
            need.max(cap * 2).min(cap_limit).saturating_sub(cap)
        })
    }

    /// Appends the in-order bytes `new` (at [`ClientStream::next`]) after growing the buffer by
    /// `grow` ([`ClientStream::growth_for`]); the allocation is added to `mem`.
    #[inline]
    pub fn append(&mut self, new: &[u8], grow: usize, mem: &mut usize) {
        if grow > 0 {
            let cap = self.buf.capacity();
            self.buf.reserve_exact(cap + grow - self.buf.len());
            *mem += self.buf.capacity() - cap;
        }
        self.buf.extend(new);
        self.order.advance(new.len());
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
        pool.put(std::mem::take(&mut self.buf), mem);
        self.fin = None;
        self.order.take_all_held(mem)
    }

    /// Gives back every buffer (the conversation is over or its target is gone).
    pub fn release(&mut self, pool: &mut SparePool, mem: &mut usize) {
        pool.put(std::mem::take(&mut self.buf), mem);
        // Dropped: the conversation is over.
        drop(self.order.take_all_held(mem));
    }

    /// The target acknowledged everything before `ack`: drops those bytes and returns how many.
    /// An emptied buffer goes to `pool` (a small one stays). A large one that is mostly unused
    /// but not empty keeps its size here: [`ClientStream::trim`] shrinks it, every few seconds,
    /// if it still is then. Shrinking on the acknowledgement made an upload that the target
    /// acknowledges as it goes shrink and regrow its buffer with every window.
    #[inline]
    pub fn acked(&mut self, ack: SeqNumber, pool: &mut SparePool, mem: &mut usize) -> usize {
        let drop = ack.diff(self.buf_seq).clamp(0, self.buf.len() as i32) as usize;
        if drop > 0 {
            self.buf.drain(..drop);
            self.buf_seq = self.buf_seq + drop as u32;
            let cap = self.buf.capacity();
            if self.buf.is_empty() && cap > KEEP_SMALL {
                pool.put(std::mem::take(&mut self.buf), mem);
            }
        }
        drop
    }

    /// Shrinks a large buffer that is mostly unused to twice the bytes it holds (the engine
    /// calls it every few seconds): a long conversation that never empties keeps no burst's
    /// worth for ever.
    pub fn trim(&mut self, mem: &mut usize) {
        let cap = self.buf.capacity();
        if cap > SHRINK_ABOVE && self.buf.len() < cap / 8 {
            self.buf.shrink_to(self.buf.len() * 2);
            *mem = mem.saturating_sub(cap - self.buf.capacity());
        }
    }

    /// The `len` bytes from `seq`, in the buffer's one or two pieces; `None` when they are not
    /// all held (acknowledged already, or not captured yet).
    #[inline]
    pub fn bytes(&self, seq: SeqNumber, len: usize) -> Option<(&[u8], &[u8])> {
        let off = seq.diff(self.buf_seq);
        if off < 0 || off as usize + len > self.buf.len() {
            return None;
        }
        let off = off as usize;
        let (a, b) = self.buf.as_slices();
        Some(if off + len <= a.len() {
            (&a[off..off + len], &[][..])
        } else if off >= a.len() {
            (&b[off - a.len()..off - a.len() + len], &[][..])
        } else {
            (&a[off..], &b[..len - (a.len() - off)])
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::order::tests::held;
    use super::*;

    #[test]
    fn appends_in_order_and_counts_the_allocation() {
        let mut s = ClientStream::new(SeqNumber(100));
        let mut mem = 0;
        let grow = s.growth_for(5, 1 << 20).unwrap();
        assert!(grow >= 5);
        s.append(b"hello", grow, &mut mem);
        assert_eq!(s.next(), SeqNumber(105));
        assert_eq!(mem, s.buffered());
        assert_eq!(s.bytes(SeqNumber(101), 3), Some((&b"ell"[..], &[][..])));
        assert_eq!(s.bytes(SeqNumber(103), 3), None, "past what was captured");
        assert_eq!(s.growth_for(10, 12), None, "over the per-session cap");
    }

    #[test]
    fn acked_bytes_leave_and_wrapped_bytes_read_in_two_pieces() {
        let mut s = ClientStream::new(SeqNumber(u32::MAX - 1));
        let mut mem = 0;
        let g = s.growth_for(8, 1 << 20).unwrap();
        s.append(b"abcdefgh", g, &mut mem);
        let mut pool = SparePool::new(1 << 20);
        assert_eq!(s.acked(SeqNumber(u32::MAX - 1) + 6, &mut pool, &mut mem), 6);
        let g = s.growth_for(6, 1 << 20).unwrap();
        s.append(b"ijklmn", g, &mut mem);
        let (a, b) = s.bytes(SeqNumber(u32::MAX - 1) + 6, 8).unwrap();
        assert_eq!([a, b].concat(), b"ghijklmn");
        assert_eq!(mem, s.buffered());
    }

    #[test]
    fn a_gap_hands_back_held_segments_and_frees_everything() {
        let mut s = ClientStream::new(SeqNumber(0));
        let mut mem = 0;
        let g = s.growth_for(3, 1 << 20).unwrap();
        s.append(b"abc", g, &mut mem);
        s.set_fin(SeqNumber(3));
        s.hold(held(20, b"z"), &mut mem);
        s.hold(held(9, b"y"), &mut mem);
        let mut pool = SparePool::new(0);
        let seqs: Vec<_> = s.drop_for_gap(&mut pool, &mut mem).map(|h| h.seq).collect();
        assert_eq!(seqs, [SeqNumber(9), SeqNumber(20)]);
        assert_eq!((mem, s.buffered(), s.fin()), (0, 0, None));
    }

    /// Appends `n` bytes at the stream's end, growing as the engine does.
    fn push(s: &mut ClientStream, pool: &mut SparePool, n: usize, mem: &mut usize) -> usize {
        s.adopt_spare(pool, n, mem);
        let g = s.growth_for(n, 64 << 20).unwrap();
        s.append(&vec![7u8; n], g, mem);
        g
    }

    #[test]
    fn an_emptied_large_buffer_serves_the_next_burst_of_any_session() {
        let mut pool = SparePool::new(8 << 20);
        let mut mem = 0;
        let mut a = ClientStream::new(SeqNumber(0));
        for _ in 0..4 {
            push(&mut a, &mut pool, 64 * 1024, &mut mem);
        }
        let cap = a.buffered();
        assert!(cap >= 256 * 1024);
        // Acknowledged: the buffer goes to the pool, still counted.
        a.acked(SeqNumber(256 * 1024), &mut pool, &mut mem);
        assert_eq!((a.buffered(), pool.bytes(), mem), (0, cap, cap));
        // Another session's upload takes it whole: no growth, nothing newly counted.
        let mut b = ClientStream::new(SeqNumber(0));
        for _ in 0..4 {
            assert_eq!(push(&mut b, &mut pool, 64 * 1024, &mut mem), 0);
        }
        assert_eq!((b.buffered(), pool.bytes(), mem), (cap, 0, cap));
        // Memory short: the spares go first.
        b.release(&mut pool, &mut mem);
        assert_eq!(mem, cap);
        pool.clear(&mut mem);
        assert_eq!((pool.bytes(), mem), (0, 0));
    }

    #[test]
    fn spares_nobody_asks_for_are_freed_at_the_next_trim() {
        let mut pool = SparePool::new(8 << 20);
        let mut mem = 0;
        let mut a = ClientStream::new(SeqNumber(0));
        push(&mut a, &mut pool, 100 * 1024, &mut mem);
        a.acked(SeqNumber(100 * 1024), &mut pool, &mut mem);
        let cap = pool.bytes();
        assert!(cap > 0);
        // Taken and given back since the last trim: kept.
        let mut b = ClientStream::new(SeqNumber(0));
        push(&mut b, &mut pool, 100 * 1024, &mut mem);
        b.acked(SeqNumber(100 * 1024), &mut pool, &mut mem);
        pool.trim(&mut mem);
        assert_eq!((pool.bytes(), mem), (cap, cap));
        // Nobody asked since: freed.
        pool.trim(&mut mem);
        assert_eq!((pool.bytes(), mem), (0, 0));
    }

    #[test]
    fn spares_are_freed_only_when_they_alone_stand_in_the_way() {
        let mut pool = SparePool::new(1 << 20);
        let mut mem = 0;
        let mut a = ClientStream::new(SeqNumber(0));
        push(&mut a, &mut pool, 64 * 1024, &mut mem);
        a.acked(SeqNumber(64 * 1024), &mut pool, &mut mem);
        let spare = pool.bytes();
        assert!(spare >= 64 * 1024 && mem == spare);
        assert!(pool.room_for(1000, mem + 1000, &mut mem), "fits: kept");
        assert_eq!(pool.bytes(), spare);
        assert!(pool.room_for(1000, 0, &mut mem), "no limit: kept");
        assert_eq!(pool.bytes(), spare);
        assert!(
            pool.room_for(1000, 2000, &mut mem),
            "fits once the spares go"
        );
        assert_eq!((pool.bytes(), mem), (0, 0));
        assert!(!pool.room_for(3000, 2000, &mut mem), "never fits");
    }

    #[test]
    fn the_pool_frees_what_it_cannot_keep_and_small_buffers_stay_home() {
        let mut pool = SparePool::new(100 * 1024);
        let mut mem = 0;
        let mut a = ClientStream::new(SeqNumber(0));
        push(&mut a, &mut pool, 200 * 1024, &mut mem);
        a.acked(SeqNumber(200 * 1024), &mut pool, &mut mem);
        assert_eq!((pool.bytes(), mem), (0, 0), "over the pool's limit: freed");
        let mut b = ClientStream::new(SeqNumber(0));
        push(&mut b, &mut pool, 100, &mut mem);
        let small = b.buffered();
        b.acked(SeqNumber(100), &mut pool, &mut mem);
        assert_eq!((b.buffered(), pool.bytes(), mem), (small, 0, small));
    }

    #[test]
    fn a_large_buffer_acknowledged_as_it_goes_keeps_its_size() {
        let mut pool = SparePool::new(0);
        let mut mem = 0;
        let mut a = ClientStream::new(SeqNumber(0));
        push(&mut a, &mut pool, 512 * 1024, &mut mem);
        let cap = a.buffered();
        // Acked down to a small tail, then the request goes on: no shrinking and growing.
        a.acked(SeqNumber(500 * 1024), &mut pool, &mut mem);
        assert_eq!(a.buffered(), cap);
        assert_eq!(push(&mut a, &mut pool, 64 * 1024, &mut mem), 0);
        assert_eq!(mem, a.buffered());
        // Larger than 1 MiB and an eighth used when the trim comes: shrunk, and counted so.
        push(&mut a, &mut pool, 2 << 20, &mut mem);
        let big = a.buffered();
        let held = 576 * 1024 + (2 << 20);
        a.acked(SeqNumber(held as u32 - 100 * 1024), &mut pool, &mut mem);
        assert_eq!(a.buffered(), big, "not on the acknowledgement");
        a.trim(&mut mem);
        assert!(a.buffered() < big && a.buffered() >= 200 * 1024);
        assert_eq!(mem, a.buffered());
        // A buffer still well used is left alone.
        let now = a.buffered();
        a.trim(&mut mem);
        assert_eq!(a.buffered(), now);
    }

    #[test]
    fn a_new_burst_takes_the_largest_spare() {
        let mut pool = SparePool::new(64 << 20);
        let mut mem = 0;
        for n in [64 * 1024, 1 << 20, 256 * 1024] {
            let mut s = ClientStream::new(SeqNumber(0));
            push(&mut s, &mut pool, n, &mut mem);
            s.acked(SeqNumber(n as u32), &mut pool, &mut mem);
        }
        let mut b = ClientStream::new(SeqNumber(0));
        // The first bytes of the burst would fit the smallest; the largest is taken.
        assert_eq!(push(&mut b, &mut pool, 1000, &mut mem), 0);
        assert!(b.buffered() >= 1 << 20);
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
