//! Captured packets copied into batches, for the sources that cannot be read in place (libpcap
//! and files): a batch, the pool that recycles batches, and the hand-over to the worker with
//! its memory bound. Never used by the ring capture (read in place).

use crossbeam_channel::{Receiver, Sender, TrySendError};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tcpclone::sys::ring::Wake;

/// Packets per batch at most (the batch also goes as soon as the ring is empty).
const BATCH_PACKETS: usize = 256;
/// Bytes per batch at most: 64 KB super-segments would otherwise make a batch of 16 MB.
const BATCH_BYTES: usize = 256 * 1024;
/// Oldest packet in a batch at most: under a steady load the ring is never empty, and a batch
/// must not sit here collecting packets while the engine waits.
const BATCH_AGE: Duration = Duration::from_micros(200);
/// Batches in flight to the engine before the capture thread stops handing over (the ring then
/// buffers); the bytes in flight are bounded separately (see [`ship`]).
pub const CHANNEL_BATCHES: usize = 1024;
/// Spare batches kept for reuse.
pub const POOL_BATCHES: usize = 64;
/// Captured IP packets, copied out of the ring into one buffer.
#[derive(Debug, Default)]
pub struct CopiedBatch {
    /// Packet bytes back to back.
    pub data: Vec<u8>,
    /// Per packet: end offset in `data`, when it was handed over (ns since the Unix epoch, the
    /// capture-to-engine latency's start) and when it was captured (ns since the Unix epoch:
    /// the same for a live capture, the file's own stamp for `--offline`; the report's
    /// production times).
    pub packets: Vec<(usize, u64, u64)>,
    /// When the first packet went in.
    opened: Option<Instant>,
}

impl CopiedBatch {
    /// Iterates over (capture time ns, IP packet).
    pub fn iter(&self) -> impl Iterator<Item = (u64, &[u8])> {
        self.iter_stamped().map(|(ts, _, p)| (ts, p))
    }

    /// Iterates over (hand-over time ns, capture time ns, IP packet).
    pub fn iter_stamped(&self) -> impl Iterator<Item = (u64, u64, &[u8])> {
        let mut start = 0;
        self.packets.iter().map(move |&(end, ts, stamp)| {
            let p = &self.data[start..end];
            start = end;
            (ts, stamp, p)
        })
    }

    /// A live capture's packet, captured (and handed over) at `ts_ns`.
    pub(crate) fn push(&mut self, ts_ns: u64, ip: &[u8]) {
        self.push_stamped(ts_ns, ts_ns, ip);
    }

    /// A packet handed over at `ts_ns` that was captured at `stamp_ns` (a file's packet).
    pub(crate) fn push_stamped(&mut self, ts_ns: u64, stamp_ns: u64, ip: &[u8]) {
        if self.packets.is_empty() {
            self.opened = Some(Instant::now());
        }
        self.data.extend_from_slice(ip);
        self.packets.push((self.data.len(), ts_ns, stamp_ns));
    }

    fn clear(&mut self) {
        self.data.clear();
        self.packets.clear();
        self.opened = None;
    }

    /// Whether the batch should go now (full, big, or old enough).
    pub(crate) fn due(&self) -> bool {
        self.packets.len() >= BATCH_PACKETS
            || self.data.len() >= BATCH_BYTES
            || self.opened.is_some_and(|t| t.elapsed() >= BATCH_AGE)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.packets.is_empty()
    }
}

/// Empty batches handed back by the engine thread for reuse, so steady state allocates nothing;
/// it also counts the bytes of the batches handed over and not yet given back (what the
/// capture side holds in user space, bounded by -B per device).
#[derive(Debug, Clone)]
pub struct CopiedBatchPool {
    tx: Sender<CopiedBatch>,
    rx: Receiver<CopiedBatch>,
    queued: Arc<AtomicUsize>,
}

impl CopiedBatchPool {
    /// A pool holding at most `n` spare batches.
    pub fn new(n: usize) -> Self {
        let (tx, rx) = crossbeam_channel::bounded(n);
        CopiedBatchPool {
            tx,
            rx,
            queued: Arc::default(),
        }
    }
    pub(crate) fn take(&self) -> CopiedBatch {
        self.rx.try_recv().unwrap_or_default()
    }
    /// Bytes handed to the engine and not yet given back.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }
    /// Returns a used batch. One that grew while the engine was behind is freed instead, so
    /// the pool never keeps a backlog's worth of memory.
    pub fn give(&self, mut b: CopiedBatch) {
        self.queued.fetch_sub(b.data.len(), Ordering::Relaxed);
        if b.data.capacity() > 2 * BATCH_BYTES || b.packets.capacity() > 2 * BATCH_PACKETS {
            return;
        }
        b.clear();
        let _ = self.tx.try_send(b);
    }
}

/// Hands the batch to the engine. When the engine is behind (its channel full, or `limit`
/// bytes already handed over and not processed), a live capture keeps the batch and goes on
/// appending to it — compact, unlike an immediate-mode kernel ring, whose slots are sized for 64 KB
/// super-segments — as long as everything it holds stays within `limit`; at the limit it waits
/// for the engine, and the kernel ring buffers meanwhile (and drops, counted, when full).
/// `limit` 0 always waits (files, the final flush). Returns false when the engine is gone or
/// `stop` is set while waiting.
pub(crate) fn ship(
    tx: &Sender<CopiedBatch>,
    wake: &Wake,
    pool: &CopiedBatchPool,
    batch: &mut CopiedBatch,
    limit: usize,
    stop: &AtomicBool,
) -> bool {
    loop {
        if batch.is_empty() {
            return true;
        }
        let len = batch.data.len();
        let queued = pool.queued();
        if limit == 0 || queued == 0 || queued + len <= limit {
            // Counted before the engine can give it back.
            pool.queued.fetch_add(len, Ordering::Relaxed);
            match tx.try_send(std::mem::take(batch)) {
                Ok(()) => {
                    *batch = pool.take();
                    wake.notify();
                    return true;
                }
                Err(TrySendError::Full(b)) => {
                    pool.queued.fetch_sub(len, Ordering::Relaxed);
                    *batch = b;
                }
                Err(TrySendError::Disconnected(_)) => return false,
            }
            if limit == 0 {
                pool.queued.fetch_add(len, Ordering::Relaxed);
                let full = std::mem::replace(batch, pool.take());
                let ok = tx.send(full).is_ok();
                wake.notify();
                return ok;
            }
        }
        if pool.queued() + len < limit {
            return true; // keep collecting
        }
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        std::thread::sleep(Duration::from_micros(500));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ship_keeps_collecting_while_the_engine_is_behind_within_the_limit() {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let pool = CopiedBatchPool::new(4);
        let stop = AtomicBool::new(false);
        let wake = Wake::new().unwrap();
        let mut b = CopiedBatch::default();
        b.push(1, &[0u8; 100]);
        assert!(ship(&tx, &wake, &pool, &mut b, 1000, &stop));
        assert!(b.is_empty());
        assert_eq!(pool.queued(), 100);
        // The channel is full: the batch is kept, nothing counted twice.
        b.push(2, &[0u8; 100]);
        assert!(ship(&tx, &wake, &pool, &mut b, 1000, &stop));
        assert_eq!((b.packets.len(), pool.queued()), (1, 100));
        // The engine is done with the first: the kept one goes.
        pool.give(rx.recv().unwrap());
        assert_eq!(pool.queued(), 0);
        assert!(ship(&tx, &wake, &pool, &mut b, 1000, &stop));
        assert_eq!((b.is_empty(), pool.queued()), (true, 100));
        // Over the limit it waits for the engine; a stop ends the wait.
        b.push(3, &[0u8; 950]);
        stop.store(true, Ordering::Relaxed);
        assert!(!ship(&tx, &wake, &pool, &mut b, 1000, &stop));
        assert_eq!(b.packets.len(), 1, "nothing lost from the batch");
    }

    #[test]
    fn batch_iterates_in_order() {
        let mut b = CopiedBatch::default();
        b.push(1, b"ab");
        b.push(2, b"cde");
        let v: Vec<_> = b.iter().collect();
        assert_eq!(v, vec![(1, &b"ab"[..]), (2, &b"cde"[..])]);
    }
}
