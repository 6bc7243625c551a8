//! The byte queue behind a client stream: one small buffer while a conversation holds few
//! unacknowledged bytes, fixed-size chunks once it holds many, and the pool the emptied chunks
//! wait in for the next burst of any session.
//!
//! An upload's bytes wait here until the target acknowledges them: megabytes per session when
//! the target lags. A buffer that grows by doubling copies all it holds at each step and faults
//! its fresh pages in, and a large one freed when its session ends or is shed goes back to the
//! kernel, for the next session to fault in again. Chunks are written once and never moved; an
//! emptied chunk is reused as it is.

use std::collections::VecDeque;
use std::ops::Deref;
use tcpclone::sys::ring::HeldBytes;

/// A chunk's size: at least the largest payload an IP packet carries, so that the bytes of
/// one segment lie in at most two chunks ([`Chunks::slices`]).
pub(crate) const CHUNK: usize = 64 * 1024;

/// A sole buffer up to this size grows in place and stays with its session when it empties
/// (it costs less than the pool's bookkeeping); bytes beyond it move into chunks.
pub(crate) const KEEP_SMALL: usize = 16 * 1024;

/// The capacity a small buffer of `cap` bytes grows to for `need` bytes (at most
/// [`KEEP_SMALL`]): doubling, so that a stream growing a little at a time copies little.
/// [`Chunks::growth_for`] and [`Chunks::append`] must agree on it.
fn small_capacity(need: usize, cap: usize) -> usize {
    need.max(cap * 2).min(KEEP_SMALL)
}

/// A piece of a stream: a buffer of ours, or bytes still in the capture ring where the kernel
/// wrote them (counted against the ring, not the engine's memory; `R` is
/// [`HeldBytes`] but for tests).
#[derive(Debug)]
enum Piece<R> {
    Own(Vec<u8>),
    Ring(R),
}

impl<R: Deref<Target = [u8]>> Piece<R> {
    #[inline]
    fn bytes(&self) -> &[u8] {
        match self {
            Piece::Own(b) => b,
            Piece::Ring(h) => h,
        }
    }

    #[inline]
    fn len(&self) -> usize {
        self.bytes().len()
    }

    /// Room left in a buffer of ours; none in ring bytes.
    #[inline]
    fn room(&self) -> usize {
        match self {
            Piece::Own(b) => b.capacity() - b.len(),
            Piece::Ring(_) => 0,
        }
    }
}

/// The bytes of a stream, oldest first.
#[derive(Debug)]
pub(crate) struct Chunks<R = HeldBytes> {
    /// One buffer of at most [`KEEP_SMALL`] or [`CHUNK`] bytes, or several pieces. Without ring
    /// pieces, every chunk but the last is full (a position maps to a chunk by division). Each
    /// buffer's length is what was written into it; none ever grows past its capacity (no
    /// reallocation). Bytes appended after ring bytes go into a new chunk.
    q: VecDeque<Piece<R>>,
    /// Bytes of the first piece already taken off the front.
    head: usize,
    /// Bytes held.
    len: usize,
    /// The buffers' capacity (what the memory budget counts).
    cap: usize,
    /// Ring pieces in `q`.
    rings: usize,
    /// `q` had ring pieces since it was last down to one buffer of ours: pieces need not be
    /// full, so positions are found by searching `starts`.
    mixed: bool,
    /// While `mixed`, where each piece of `q` starts in the stream (bytes since an arbitrary
    /// origin that never moves): `starts[i + 1] == starts[i] + q[i].len()`, since only the
    /// last piece grows. A binary search finds a position among hundreds of ring pieces.
    /// Empty otherwise: a stream that never holds ring bytes allocates nothing for it.
    starts: VecDeque<usize>,
    /// Where the first byte held lies in the stream (on the same origin as `starts`).
    front: usize,
}

impl<R> Default for Chunks<R> {
    fn default() -> Self {
        Chunks {
            q: VecDeque::new(),
            head: 0,
            len: 0,
            cap: 0,
            rings: 0,
            mixed: false,
            starts: VecDeque::new(),
            front: 0,
        }
    }
}

impl<R: Deref<Target = [u8]>> Chunks<R> {
    /// Bytes held.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Bytes allocated.
    #[inline]
    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// Whether some bytes are ring bytes.
    #[inline]
    pub fn holds_ring(&self) -> bool {
        self.rings > 0
    }

    /// A sole buffer smaller than a chunk (or none): the small phase.
    #[inline]
    fn small(&self) -> bool {
        self.q.len() <= 1
            && self
                .q
                .back()
                .is_none_or(|b| matches!(b, Piece::Own(b) if b.capacity() < CHUNK))
    }

    /// Puts a piece at the back (while `mixed`, with its start: after the last piece, or
    /// where the first piece starts when it is the first).
    fn push(&mut self, p: Piece<R>) {
        if self.mixed {
            let start = match (self.starts.back(), self.q.back()) {
                (Some(s), Some(b)) => s + b.len(),
                _ => self.front - self.head,
            };
            self.starts.push_back(start);
        }
        self.q.push_back(p);
    }

    /// Ring pieces come or go: with them, positions are searched among the pieces' starts;
    /// without, every chunk but the last is full again.
    fn set_mixed(&mut self, mixed: bool) {
        if mixed && !self.mixed {
            let mut at = self.front - self.head;
            for p in &self.q {
                self.starts.push_back(at);
                at += p.len();
            }
        } else if !mixed {
            self.starts.clear();
        }
        self.mixed = mixed;
    }

    /// Takes the last piece off.
    fn pop_back(&mut self) -> Option<Piece<R>> {
        self.starts.pop_back();
        self.q.pop_back()
    }

    /// Bytes newly allocated by appending `n` bytes when the pool has `spares` chunks.
    pub fn growth_for(&self, n: usize, spares: usize) -> usize {
        if self.small() {
            let cap = self.cap;
            let need = self.len + n;
            if need <= cap {
                0
            } else if need <= KEEP_SMALL {
                small_capacity(need, cap) - cap
            } else {
                need.div_ceil(CHUNK).saturating_sub(spares) * CHUNK
            }
        } else {
            let room = self.q.back().map_or(0, Piece::room);
            n.saturating_sub(room)
                .div_ceil(CHUNK)
                .saturating_sub(spares)
                * CHUNK
        }
    }

    /// Appends `data`, taking chunks from `pool` before allocating; what is allocated or freed
    /// is added to or taken off `mem`.
    pub fn append(&mut self, mut data: &[u8], pool: &mut SparePool, mem: &mut usize) {
        if data.is_empty() {
            return;
        }
        let n = data.len();
        if self.small() {
            let need = self.len + n;
            let cap = self.cap;
            if need <= KEEP_SMALL {
                if need > cap {
                    // Grows in place: a copy of at most KEEP_SMALL bytes.
                    let mut b = Vec::with_capacity(small_capacity(need, cap));
                    if let Some(Piece::Own(old)) = self.pop_back() {
                        b.extend_from_slice(&old[self.head..]);
                    }
                    self.head = 0;
                    *mem += b.capacity() - cap;
                    self.cap = b.capacity();
                    self.push(Piece::Own(b));
                } else if let Some(Piece::Own(b)) = self.q.back_mut() {
                    if self.head + need > b.capacity() {
                        b.drain(..self.head);
                        self.head = 0;
                        if let Some(s) = self.starts.front_mut() {
                            *s = self.front;
                        }
                    }
                }
                if let Some(Piece::Own(b)) = self.q.back_mut() {
                    b.extend_from_slice(data);
                }
                self.len = need;
                return;
            }
            // Into chunks: the small buffer's bytes move once, it is freed.
            let mut c = pool.take(mem);
            if let Some(Piece::Own(old)) = self.pop_back() {
                c.extend_from_slice(&old[self.head..]);
                *mem = mem.saturating_sub(old.capacity());
            }
            self.head = 0;
            self.cap = c.capacity();
            self.push(Piece::Own(c));
        }
        while !data.is_empty() {
            let room = self.q.back().map_or(0, Piece::room);
            if room == 0 {
                let c = pool.take(mem);
                self.cap += c.capacity();
                self.push(Piece::Own(c));
                continue;
            }
            let k = room.min(data.len());
            if let Some(Piece::Own(b)) = self.q.back_mut() {
                b.extend_from_slice(&data[..k]);
            }
            data = &data[k..];
        }
        self.len += n;
    }

    /// Appends bytes that stay in the capture ring: nothing is copied or allocated.
    pub fn append_ring(&mut self, h: R) {
        if h.is_empty() {
            return;
        }
        self.len += h.len();
        self.rings += 1;
        self.set_mixed(true);
        self.push(Piece::Ring(h));
    }

    /// Memory [`Chunks::copy_ring`] allocates for the ring pieces `which` picks when the pool
    /// has `spares` chunks.
    pub fn copy_ring_growth(&self, spares: usize, which: &dyn Fn(&R) -> bool) -> usize {
        // What copy_ring does, counting the chunks it takes: room left in the piece before.
        let (mut room, mut chunks) = (None, 0usize);
        for (i, p) in self.q.iter().enumerate() {
            match p {
                Piece::Ring(h) if which(h) => {
                    let len = h.len() - if i == 0 { self.head } else { 0 };
                    room = match room {
                        Some(r) if r >= len => Some(r - len),
                        _ => {
                            chunks += 1;
                            Some(CHUNK - len)
                        }
                    };
                }
                Piece::Ring(_) => room = None,
                Piece::Own(_) => room = Some(p.room()),
            }
        }
        chunks.saturating_sub(spares) * CHUNK
    }

    /// Copies the ring pieces `which` picks into buffers of ours and lets go of them (the
    /// kernel is coming round to their blocks). A piece goes whole into the room left in the
    /// buffer before it, or else into a chunk of its own: pieces are never split (a range of
    /// bytes lies in no more pieces than before) and small ones share chunks.
    pub fn copy_ring(&mut self, pool: &mut SparePool, mem: &mut usize, which: &dyn Fn(&R) -> bool) {
        if self.rings == 0 {
            return;
        }
        let head = self.head;
        self.starts.clear();
        for (i, p) in std::mem::take(&mut self.q).into_iter().enumerate() {
            match p {
                Piece::Ring(h) if which(&h) => {
                    let bytes = &h[if i == 0 { head } else { 0 }..];
                    if i == 0 {
                        self.head = 0;
                    }
                    self.rings -= 1;
                    if let Some(Piece::Own(b)) = self.q.back_mut() {
                        if b.capacity() - b.len() >= bytes.len() {
                            b.extend_from_slice(bytes);
                            continue;
                        }
                    }
                    let mut c = pool.take(mem);
                    c.extend_from_slice(bytes);
                    self.cap += c.capacity();
                    self.push(Piece::Own(c));
                }
                p => self.push(p),
            }
        }
        if self.q.len() <= 1 && self.rings == 0 {
            self.set_mixed(false);
        }
    }

    /// Takes `n` bytes off the front; emptied chunks go to `pool` (a small buffer stays).
    pub fn consume(&mut self, n: usize, pool: &mut SparePool, mem: &mut usize) {
        let n = n.min(self.len);
        self.len -= n;
        self.head += n;
        self.front += n;
        if self.len == 0 {
            if self.small() {
                if let Some(Piece::Own(b)) = self.q.back_mut() {
                    b.clear();
                    if let Some(s) = self.starts.front_mut() {
                        *s = self.front;
                    }
                }
                self.head = 0;
            } else {
                self.give_back(pool, mem);
            }
            return;
        }
        // Bytes remain, so a fully consumed first piece has others behind it.
        while self.q.front().is_some_and(|b| self.head >= b.len()) {
            if let Some(p) = self.q.pop_front() {
                self.starts.pop_front();
                self.head -= p.len();
                self.release(p, pool, mem);
            }
        }
        if self.q.len() <= 1 && self.rings == 0 {
            self.set_mixed(false);
        }
    }

    /// A piece taken off: a chunk goes to `pool`, ring bytes are let go.
    fn release(&mut self, p: Piece<R>, pool: &mut SparePool, mem: &mut usize) {
        match p {
            Piece::Own(c) => {
                self.cap -= c.capacity();
                pool.put(c, mem);
            }
            Piece::Ring(_) => self.rings -= 1,
        }
    }

    /// Drops every byte: chunks go to `pool`, a small buffer is freed, ring bytes are let go.
    pub fn give_back(&mut self, pool: &mut SparePool, mem: &mut usize) {
        for p in std::mem::take(&mut self.q) {
            if let Piece::Own(c) = p {
                pool.put(c, mem);
            }
        }
        self.front += self.len;
        self.head = 0;
        self.len = 0;
        self.cap = 0;
        self.rings = 0;
        self.set_mixed(false);
    }

    /// The piece position `p` bytes past the first piece's start lies in, and where in it.
    #[inline]
    fn find(&self, mut p: usize) -> Option<(usize, usize)> {
        if !self.mixed {
            // Every chunk but the last is full.
            return Some(if self.q.len() == 1 {
                (0, p)
            } else {
                (p / CHUNK, p % CHUNK)
            });
        }
        let at = self.starts.front()? + p;
        let i = self.starts.partition_point(|&s| s <= at).checked_sub(1)?;
        p = at - self.starts[i];
        (p < self.q[i].len()).then_some((i, p))
    }

    /// How many of the `max` bytes from offset `off` lie in at most two pieces (what
    /// [`Chunks::slices`] gives at once); 0 when none is held there.
    pub fn span(&self, off: usize, max: usize) -> usize {
        let max = max.min(self.len.saturating_sub(off)).min(CHUNK);
        if max == 0 || !self.mixed {
            return max;
        }
        let Some((i, o)) = self.find(self.head + off) else {
            return 0;
        };
        let first = self.q[i].len() - o;
        max.min(first + self.q.get(i + 1).map_or(0, Piece::len))
    }

    /// The `len` bytes from offset `off`, in one or two pieces; `None` when they are not all
    /// held, `len` is over a chunk, or they lie in more than two pieces ([`Chunks::span`]).
    pub fn slices(&self, off: usize, len: usize) -> Option<(&[u8], &[u8])> {
        if off + len > self.len || len > CHUNK {
            return None;
        }
        if len == 0 {
            return Some((&[][..], &[][..]));
        }
        let (i, o) = self.find(self.head + off)?;
        let a = self.q.get(i)?.bytes();
        let first = (a.len() - o).min(len);
        let rest = len - first;
        let b = if rest == 0 {
            &[][..]
        } else {
            self.q.get(i + 1)?.bytes().get(..rest)?
        };
        Some((&a[o..o + first], b))
    }
}

/// Emptied chunks kept for the next burst of any session. Their capacity stays counted in the
/// engine's memory (it is allocated); the pool keeps at most `limit` bytes and frees what it
/// cannot keep, and small buffers.
#[derive(Debug)]
pub(crate) struct SparePool {
    chunks: Vec<Vec<u8>>,
    limit: usize,
    /// A chunk was taken since the last [`SparePool::trim`].
    used: bool,
}

impl SparePool {
    /// A pool that keeps at most `limit` bytes of chunks.
    pub fn new(limit: usize) -> SparePool {
        SparePool {
            chunks: Vec::new(),
            limit,
            used: false,
        }
    }

    /// Capacity held by the spares (counted in the engine's memory).
    #[inline]
    pub fn bytes(&self) -> usize {
        self.chunks.len() * CHUNK
    }

    /// Chunks kept.
    #[inline]
    pub fn count(&self) -> usize {
        self.chunks.len()
    }

    /// An empty chunk: a spare, or a new one added to `mem`.
    fn take(&mut self, mem: &mut usize) -> Vec<u8> {
        match self.chunks.pop() {
            Some(c) => {
                self.used = true;
                c
            }
            None => {
                *mem += CHUNK;
                Vec::with_capacity(CHUNK)
            }
        }
    }

    /// Takes a buffer given up: a chunk is kept if there is room, anything else is freed and
    /// taken off `mem`.
    fn put(&mut self, mut c: Vec<u8>, mem: &mut usize) {
        if c.capacity() == CHUNK && self.bytes() + CHUNK <= self.limit {
            c.clear();
            self.chunks.push(c);
        } else {
            *mem = mem.saturating_sub(c.capacity());
        }
    }

    /// Frees the spares when none was taken since the last call (the engine calls it every
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
        if !fits(*mem) && !self.chunks.is_empty() {
            self.clear(mem);
        }
        fits(*mem)
    }

    /// Frees every spare (memory is short).
    pub fn clear(&mut self, mem: &mut usize) {
        *mem = mem.saturating_sub(self.bytes());
        self.chunks = Vec::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` bytes counting up from `from` (mod 251: no period that divides a chunk).
    fn bytes(from: usize, n: usize) -> Vec<u8> {
        (from..from + n).map(|i| (i % 251) as u8).collect()
    }

    fn read(c: &Chunks, off: usize, len: usize) -> Vec<u8> {
        let (a, b) = c.slices(off, len).unwrap();
        [a, b].concat()
    }

    #[test]
    fn small_streams_stay_in_one_buffer_that_grows_in_place() {
        let (mut c, mut pool, mut mem) =
            (Chunks::<HeldBytes>::default(), SparePool::new(1 << 20), 0);
        assert_eq!(c.growth_for(100, 0), 100);
        c.append(&bytes(0, 100), &mut pool, &mut mem);
        assert_eq!((c.len(), c.capacity(), mem), (100, 100, 100));
        assert_eq!(c.growth_for(50, 0), 100, "doubles");
        c.append(&bytes(100, 50), &mut pool, &mut mem);
        assert_eq!((c.capacity(), mem), (200, 200));
        assert_eq!(read(&c, 0, 150), bytes(0, 150));
        // Taken off the front and written again: compacted, not grown.
        c.consume(120, &mut pool, &mut mem);
        assert_eq!(c.growth_for(150, 0), 0);
        c.append(&bytes(150, 150), &mut pool, &mut mem);
        assert_eq!((c.len(), c.capacity()), (180, 200));
        assert_eq!(read(&c, 0, 180), bytes(120, 180));
        // Emptied: it stays with the stream.
        c.consume(180, &mut pool, &mut mem);
        assert_eq!((c.len(), c.capacity(), pool.bytes(), mem), (0, 200, 0, 200));
    }

    #[test]
    fn large_streams_move_into_chunks_once_and_read_across_them() {
        let (mut c, mut pool, mut mem) =
            (Chunks::<HeldBytes>::default(), SparePool::new(1 << 20), 0);
        c.append(&bytes(0, 1000), &mut pool, &mut mem);
        let total = 5 * CHUNK + 123;
        // Past KEEP_SMALL: the 1000 bytes move into the first chunk, the small buffer is freed.
        assert_eq!(c.growth_for(total - 1000, 0), 6 * CHUNK);
        for (at, n) in [
            (1000, 20_000),
            (21_000, 3 * CHUNK),
            (21_000 + 3 * CHUNK, total - 21_000 - 3 * CHUNK),
        ] {
            c.append(&bytes(at, n), &mut pool, &mut mem);
        }
        assert_eq!((c.len(), c.capacity(), mem), (total, 6 * CHUNK, 6 * CHUNK));
        // A segment across a chunk boundary comes in two pieces; one inside a chunk in one.
        let (a, b) = c.slices(CHUNK - 10, 1448).unwrap();
        assert_eq!((a.len(), b.len()), (10, 1438));
        assert_eq!(read(&c, CHUNK - 10, 1448), bytes(CHUNK - 10, 1448));
        assert_eq!(c.slices(CHUNK, 1448).unwrap().1.len(), 0);
        assert_eq!(read(&c, 2 * CHUNK + 7, CHUNK), bytes(2 * CHUNK + 7, CHUNK));
        assert_eq!(c.slices(total - 10, 11), None, "past what is held");
        assert_eq!(c.slices(0, CHUNK + 1), None, "over a chunk");
        assert_eq!(
            Chunks::<HeldBytes>::default().slices(0, 0),
            Some((&[][..], &[][..]))
        );
        // Acknowledged past two chunks: they go to the pool, still counted; reads follow.
        c.consume(2 * CHUNK + 5, &mut pool, &mut mem);
        assert_eq!(
            (c.capacity(), pool.bytes(), mem),
            (4 * CHUNK, 2 * CHUNK, 6 * CHUNK)
        );
        assert_eq!(read(&c, 0, 3000), bytes(2 * CHUNK + 5, 3000));
        let left = total - 2 * CHUNK - 5;
        assert_eq!(read(&c, left - 100, 100), bytes(total - 100, 100));
        // Written on: the tail chunk fills, then spares are used before anything is allocated.
        assert_eq!(c.growth_for(2 * CHUNK, pool.count()), 0);
        c.append(&bytes(total, 2 * CHUNK), &mut pool, &mut mem);
        assert_eq!((pool.bytes(), mem), (0, 6 * CHUNK));
        assert_eq!(read(&c, left, 2000), bytes(total, 2000));
        // Emptied: every chunk goes to the pool.
        c.consume(c.len(), &mut pool, &mut mem);
        assert_eq!(
            (c.len(), c.capacity(), pool.bytes(), mem),
            (0, 0, 6 * CHUNK, 6 * CHUNK)
        );
    }

    #[test]
    fn the_next_session_takes_the_spares_and_allocates_nothing() {
        let (mut pool, mut mem) = (SparePool::new(8 * CHUNK), 0);
        let mut a = Chunks::<HeldBytes>::default();
        a.append(&bytes(0, 4 * CHUNK), &mut pool, &mut mem);
        a.give_back(&mut pool, &mut mem);
        assert_eq!((pool.count(), mem), (4, 4 * CHUNK));
        let mut b = Chunks::<HeldBytes>::default();
        assert_eq!(b.growth_for(3 * CHUNK, pool.count()), 0);
        b.append(&bytes(0, 3 * CHUNK), &mut pool, &mut mem);
        assert_eq!((pool.count(), mem), (1, 4 * CHUNK));
        assert_eq!(read(&b, CHUNK + 1, 100), bytes(CHUNK + 1, 100));
    }

    #[test]
    fn the_pool_frees_what_it_cannot_keep_and_small_buffers() {
        let (mut pool, mut mem) = (SparePool::new(2 * CHUNK), 0);
        let mut a = Chunks::<HeldBytes>::default();
        a.append(&bytes(0, 4 * CHUNK), &mut pool, &mut mem);
        a.give_back(&mut pool, &mut mem);
        assert_eq!((pool.count(), mem), (2, 2 * CHUNK), "over the limit: freed");
        let mut b = Chunks::<HeldBytes>::default();
        b.append(&bytes(0, 100), &mut pool, &mut mem);
        b.give_back(&mut pool, &mut mem);
        assert_eq!((pool.count(), mem), (2, 2 * CHUNK), "small: freed");
    }

    #[test]
    fn spares_nobody_takes_are_freed_at_the_next_trim() {
        let (mut pool, mut mem) = (SparePool::new(8 * CHUNK), 0);
        let mut a = Chunks::<HeldBytes>::default();
        a.append(&bytes(0, 2 * CHUNK), &mut pool, &mut mem);
        a.give_back(&mut pool, &mut mem);
        a.append(&bytes(0, CHUNK), &mut pool, &mut mem);
        a.give_back(&mut pool, &mut mem);
        pool.trim(&mut mem);
        assert_eq!(
            (pool.bytes(), mem),
            (2 * CHUNK, 2 * CHUNK),
            "taken since: kept"
        );
        pool.trim(&mut mem);
        assert_eq!((pool.bytes(), mem), (0, 0));
    }

    #[test]
    fn spares_are_freed_only_when_they_alone_stand_in_the_way() {
        let (mut pool, mut mem) = (SparePool::new(8 * CHUNK), 0);
        let mut a = Chunks::<HeldBytes>::default();
        a.append(&bytes(0, CHUNK), &mut pool, &mut mem);
        a.give_back(&mut pool, &mut mem);
        assert_eq!(mem, CHUNK);
        assert!(pool.room_for(1000, mem + 1000, &mut mem), "fits: kept");
        assert!(pool.room_for(1000, 0, &mut mem), "no limit: kept");
        assert_eq!(pool.bytes(), CHUNK);
        assert!(
            pool.room_for(1000, 2000, &mut mem),
            "fits once the spares go"
        );
        assert_eq!((pool.bytes(), mem), (0, 0));
        assert!(!pool.room_for(3000, 2000, &mut mem), "never fits");
    }

    #[test]
    fn ring_pieces_copied_out_share_chunks_and_read_the_same() {
        let (mut c, mut pool, mut mem) = (Chunks::<Vec<u8>>::default(), SparePool::new(0), 0);
        for k in 0..8 {
            c.append_ring(bytes(k * 8192, 8192));
        }
        assert_eq!(
            (c.len(), c.capacity(), mem),
            (8 * 8192, 0, 0),
            "ring bytes cost nothing"
        );
        assert!(c.holds_ring());
        let all = |_: &Vec<u8>| true;
        assert_eq!(
            c.copy_ring_growth(0, &all),
            CHUNK,
            "eight 8 KiB pieces fill one chunk"
        );
        c.copy_ring(&mut pool, &mut mem, &all);
        assert_eq!((c.capacity(), mem), (CHUNK, CHUNK));
        assert!(!c.holds_ring());
        let (a, b) = c.slices(8000, 1000).unwrap();
        assert_eq!([a, b].concat(), bytes(8000, 1000));
    }

    proptest::proptest! {
        /// Any run of appends, acknowledgements and give-backs reads back as a plain queue
        /// would, and the memory counted is what the buffers and the pool hold.
        #[test]
        fn reads_as_a_queue_and_counts_what_it_holds(
            ops in proptest::collection::vec((0u8..10, 0usize..3 * CHUNK), 1..60),
        ) {
            // Ring pieces are plain vectors here (the real ones need a capture ring).
            let (mut c, mut pool, mut mem) =
                (Chunks::<Vec<u8>>::default(), SparePool::new(4 * CHUNK), 0);
            let mut model = std::collections::VecDeque::new();
            let mut next = 0;
            for (op, n) in ops {
                match op {
                    0..=3 => {
                        let data = bytes(next, n % (CHUNK + 5000));
                        next += data.len();
                        let g = c.growth_for(data.len(), pool.count());
                        let before = mem;
                        c.append(&data, &mut pool, &mut mem);
                        proptest::prop_assert!(mem <= before + g);
                        model.extend(data);
                    }
                    8 => {
                        // One packet's payload, left in the ring.
                        let data = bytes(next, n % 65_496);
                        next += data.len();
                        c.append_ring(data.clone());
                        model.extend(data);
                    }
                    9 => {
                        // The pieces of odd length, or all of them.
                        let which = |h: &Vec<u8>| n % 2 == 0 || h.len() % 2 == 1;
                        let g = c.copy_ring_growth(pool.count(), &which);
                        let before = mem;
                        c.copy_ring(&mut pool, &mut mem, &which);
                        proptest::prop_assert!(mem <= before + g);
                        proptest::prop_assert!(
                            g == 0 || mem == before + g,
                            "copy_ring_growth told what copy_ring allocates"
                        );
                        proptest::prop_assert!(n % 2 == 1 || !c.holds_ring());
                    }
                    4..=6 => {
                        let k = n.min(model.len());
                        c.consume(k, &mut pool, &mut mem);
                        model.drain(..k);
                    }
                    _ => {
                        c.give_back(&mut pool, &mut mem);
                        model.clear();
                    }
                }
                proptest::prop_assert_eq!(c.len(), model.len());
                proptest::prop_assert_eq!(mem, c.capacity() + pool.bytes());
                // While mixed, every piece starts where the one before ends, the first where
                // the front is; otherwise no start is kept.
                proptest::prop_assert_eq!(c.starts.len(), if c.mixed { c.q.len() } else { 0 });
                for i in 1..c.starts.len() {
                    proptest::prop_assert_eq!(c.starts[i], c.starts[i - 1] + c.q[i - 1].len());
                }
                if let Some(s) = c.starts.front() {
                    proptest::prop_assert_eq!(s + c.head, c.front);
                }
                if !model.is_empty() {
                    let off = n % model.len();
                    let want_len = (n / 3).min(model.len() - off).min(CHUNK);
                    // What one read gives: all of it, or at least up to the end of the next
                    // piece.
                    let len = c.span(off, want_len);
                    proptest::prop_assert!(len > 0 || want_len == 0);
                    proptest::prop_assert!(len == want_len || c.slices(off, len + 1).is_none());
                    let (a, b) = c.slices(off, len).unwrap();
                    let want: Vec<u8> = model.range(off..off + len).copied().collect();
                    proptest::prop_assert_eq!([a, b].concat(), want);
                }
            }
        }
    }
}
