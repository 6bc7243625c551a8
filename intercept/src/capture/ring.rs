//! The ring back end (the default): the library's capture ring in its `TPACKET_V2` form, read
//! in place. The kernel hands each frame over as soon as it is written; the ring's task, on the
//! runtime thread of the router, copies the IP + TCP header of every frame ready into one
//! [`HeaderBatch`], giving each slot back as it goes, and sends the batch: one channel send per
//! wake-up, however many frames it found. A busy target fills batches of many responses; a
//! quiet one gets each response reported at once.
//!
//! Not `TPACKET_V3` blocks, although they cost fewer wake-ups: a block is handed over when full
//! or 1 ms (the least the kernel takes) after its first frame, and tcpcopy waits for the
//! target's answer to one request before it sends the next of that connection. With one
//! request in flight per connection no block ever fills, so every request paid up to a
//! millisecond, and a clone of a busy keep-alive service (redis-benchmark, 10 connections,
//! ~100,000 requests/s) fell behind production without bound. `--capture blocks` still reads
//! blocks, for a target whose host has no CPU to spare for a wake-up per response.
//!
//! With `--workers N`, each device gets N rings in one `PACKET_FANOUT` group (the kernel
//! spreads the traffic by flow, so one connection's responses stay in one ring and in order),
//! each read by its own task, on a runtime of N threads.
//!
//! A ring whose device goes down or away reports an error on its socket (or its name no longer
//! maps to its index): the task counts it, closes the ring and reopens it with backoff, like
//! the libpcap back end. When the rings of a group are reopened, the first one starts a new
//! group and the others join it (the old group stays bound to the old device).

use super::{reopen_with_backoff, DEVICE_BUFFER};
use crate::batch::HeaderBatch;
use crate::linklayer::ip_tcp_response;
use crate::server::Stats;
use crate::sys::AsyncRing;
use anyhow::Context;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tcpclone::capture::tpacket::{frame_v2, BlockView, RingFrame, PACKET_OUTGOING};
use tcpclone::capture::LinkType;
use tcpclone::sys::ring::{interface_index, Fanout, PacketRing, RingConfig, SockFilter};
use tokio::sync::mpsc;

/// Bytes per block (the kernel allocates the ring in blocks; frames never straddle them).
const BLOCK_SIZE: usize = 64 << 10;
/// Fewest blocks per ring, however many workers share the device's buffer.
const MIN_BLOCKS: usize = 16;
/// Most headers in one batch: a reader that finds more frames ready sends several batches, so
/// the router starts on the first ones sooner.
const MAX_BATCH: usize = 1024;
/// A wake-up that found at least this many responses means many connections are answered at
/// once: the thread then lets the next ones gather for [`GATHER`] before it looks again.
/// Fewer means few requests in flight, each waiting for its own answer's report: those go at
/// once (a closed loop of 10 connections never has more than 10 answers pending).
const BUSY_BATCH: usize = 16;
/// How long a busy ring gathers frames: a fifth of the 1 ms blocks' worst case, and one
/// wake-up (here and in tcpcopy) per many answers instead of one per few.
const GATHER: Duration = Duration::from_micros(200);
/// Where a `SOCK_DGRAM` `TPACKET_V2` frame's data starts in its slot: the kernel puts it at
/// `TPACKET_ALIGN(TPACKET2_HDRLEN) + 16` (`tpacket2_hdr` and `sockaddr_ll`, aligned, plus room
/// for a link header).
const SLOT_HEADERS: usize = 80;
/// Longest wait for the ring before looking at the stop flag again.
const STOP_EVERY: Duration = Duration::from_millis(100);
/// How often kernel drops are read and the device's index checked.
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// Bytes of each frame the kernel keeps (from the network header): every IP + TCP header fits.
const SNAP: u32 = tcpclone::proto::MAX_HEADER_LEN as u32;

/// The rings of one device and what reopening them needs.
#[derive(Debug)]
struct DeviceRings {
    device: String,
    prog: Vec<SockFilter>,
    workers: usize,
    block_count: usize,
    /// Bytes per frame slot: the ring headers and the snap length, rounded up to a power of two;
    /// `None`: `TPACKET_V3` blocks (`--capture blocks`).
    frame_size: Option<usize>,
    /// Index of `lo`, whose frames this host sends are seen twice (outgoing, then incoming).
    lo_ifindex: Option<i32>,
    group: Mutex<Group>,
    /// `Group::generation`, readable without the lock on every round.
    generation: AtomicU64,
    /// Payload bytes kept after each header (`--response-prefix`).
    prefix: usize,
}

/// The device's current fanout group.
#[derive(Debug, Default)]
struct Group {
    /// Bumped by the first ring that reopens after an error: rings of an older generation are
    /// in a dead group and must reopen too.
    generation: u64,
    /// The group's id once a ring of this generation opened.
    id: Option<u16>,
}

/// One ring of a device, ready for its task.
#[derive(Debug)]
pub struct RingCapture {
    rings: Arc<DeviceRings>,
    ring: PacketRing,
    ifindex: u32,
    generation: u64,
}

/// Opens `workers` rings on `device` (`any`: every device), filtered by `filter`.
/// `prefix`: payload bytes kept after each header (`--response-prefix`); `blocks`: read
/// `TPACKET_V3` blocks instead of frames.
pub fn open(
    device: &str,
    filter: &str,
    workers: usize,
    prefix: usize,
    blocks: bool,
) -> anyhow::Result<Vec<RingCapture>> {
    anyhow::ensure!(workers >= 1, "--workers must be at least 1");
    let prefix = prefix.min(tcpclone::proto::MAX_PREFIX);
    let prog =
        tcpclone::capture::bpf::compile_for_ring(filter, SNAP + prefix as u32).context("-F")?;
    let per_ring = DEVICE_BUFFER / workers;
    let rings = Arc::new(DeviceRings {
        device: device.to_string(),
        prog,
        workers,
        block_count: (per_ring / BLOCK_SIZE).max(MIN_BLOCKS),
        frame_size: (!blocks).then(|| (SLOT_HEADERS + SNAP as usize + prefix).next_power_of_two()),
        lo_ifindex: interface_index("lo")
            .ok()
            .and_then(|i| i32::try_from(i).ok()),
        group: Mutex::new(Group::default()),
        generation: AtomicU64::new(0),
        prefix,
    });
    (0..workers)
        .map(|_| {
            let (ring, ifindex, generation) = rings.open_ring(None)?;
            Ok(RingCapture {
                rings: rings.clone(),
                ring,
                ifindex,
                generation,
            })
        })
        .collect()
}

impl DeviceRings {
    /// Opens one ring in the device's current group. `failed`: the generation of a ring that
    /// just failed, which starts a new generation if nobody did yet.
    fn open_ring(&self, failed: Option<u64>) -> anyhow::Result<(PacketRing, u32, u64)> {
        let dev = &self.device;
        // Held while opening, so that the rings reopening together agree on one new group.
        let mut g = self.group.lock().unwrap_or_else(|e| e.into_inner());
        if failed == Some(g.generation) {
            g.generation += 1;
            g.id = None;
            self.generation.store(g.generation, Relaxed);
        }
        let ifindex = if dev == "any" {
            0
        } else {
            interface_index(dev).with_context(|| format!("capture device {dev}"))?
        };
        let fanout = (self.workers > 1).then(|| g.id.map_or(Fanout::New, Fanout::Join));
        let ring = PacketRing::open(&RingConfig {
            ifindex,
            block_size: BLOCK_SIZE,
            block_count: self.block_count,
            retire_ms: 1,
            frame_size: self.frame_size,
            filter: &self.prog,
            fanout,
            // Responses are often this host's own output (intercept on the target): only on
            // loopback, where they come back in, are they seen twice.
            ignore_outgoing: self.lo_ifindex.is_some_and(|lo| lo as u32 == ifindex),
        })
        .with_context(|| format!("cannot capture on {dev} (root or CAP_NET_RAW needed)"))?;
        // Bound to a device that is down, the socket holds ENETDOWN: not a usable capture
        // (libpcap refuses such a device too).
        if let Some(e) = tcpclone::sys::ring::take_socket_error(ring.fd())? {
            anyhow::bail!("capture device {dev}: {e}");
        }
        if g.id.is_none() {
            g.id = ring.fanout_id();
        }
        Ok((ring, ifindex, g.generation))
    }
}

/// What the frames read held.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Frames captured (loopback's second copies not included).
    pub captured: u64,
    /// Captured frames that gave no IP + TCP header.
    pub not_tcp: u64,
    /// Frame slots (or blocks, `--capture blocks`) whose ring headers were malformed: the
    /// frame, or the block's frames from the fault on, are lost.
    pub bad: u64,
}

/// Copies the IP + TCP header (and up to `prefix` payload bytes) of the frame in `slot` into
/// `batch`, counting it in `n`. `lo_ifindex`: the index of `lo`, whose outgoing frames are
/// skipped (the same bytes come back in as incoming, as libpcap also skips them); elsewhere
/// outgoing frames are kept, they are the responses of a target intercept runs on.
pub fn read_frame(
    slot: &[u8],
    lo_ifindex: Option<i32>,
    prefix: usize,
    batch: &mut HeaderBatch,
    n: &mut Counts,
) {
    match frame_v2(slot) {
        Ok(f) => push_frame(&f, lo_ifindex, prefix, batch, n),
        Err(e) => {
            tracing::debug!("{e}");
            n.bad += 1;
        }
    }
}

/// [`read_frame`] for every frame of a `TPACKET_V3` block (`--capture blocks`); a malformed
/// block counts once, its frames from the fault on are lost.
pub fn read_block(
    block: &[u8],
    lo_ifindex: Option<i32>,
    prefix: usize,
    batch: &mut HeaderBatch,
    n: &mut Counts,
) {
    let view = match BlockView::new_checked(block) {
        Ok(v) => v,
        Err(e) => {
            tracing::debug!("{e}");
            n.bad += 1;
            return;
        }
    };
    for f in view.frames() {
        match f {
            Ok(f) => push_frame(&f, lo_ifindex, prefix, batch, n),
            Err(e) => {
                tracing::debug!("{e}");
                n.bad += 1;
                return;
            }
        }
    }
}

fn push_frame(
    f: &RingFrame<'_>,
    lo_ifindex: Option<i32>,
    prefix: usize,
    batch: &mut HeaderBatch,
    n: &mut Counts,
) {
    if f.pkt_type == PACKET_OUTGOING && Some(f.ifindex) == lo_ifindex {
        return;
    }
    n.captured += 1;
    // The frame starts at the network header (a SOCK_DGRAM ring): raw IP.
    let header = f
        .protocol
        .is_ip()
        .then(|| ip_tcp_response(LinkType::RAW, f.data, prefix))
        .flatten();
    if !header.is_some_and(|h| batch.push(h)) {
        n.not_tcp += 1;
    }
}

impl RingCapture {
    /// Captures until `stop` is set or the router's queue closes; waits when the router is
    /// behind (the kernel then drops, and those drops are counted from the ring's stats).
    ///
    /// A task on the runtime thread that also runs the router and the connections' writers,
    /// not a thread of its own: a batch then costs that thread one wake-up, where a capture
    /// thread cost two (its own, and the router's when it handed the batch over), and those
    /// wake-ups were most of intercept's CPU on a busy target.
    pub async fn run(
        self,
        tx: mpsc::Sender<HeaderBatch>,
        stats: Arc<Stats>,
        stop: Arc<AtomicBool>,
    ) {
        let RingCapture {
            rings,
            mut ring,
            mut ifindex,
            mut generation,
            ..
        } = self;
        let dev = rings.device.clone();
        let mut last_check = Instant::now();
        let read = if rings.frame_size.is_some() {
            read_frame
        } else {
            read_block
        };
        'open: loop {
            let mut afd = match AsyncRing::new(ring) {
                Ok(a) => a,
                Err(e) => {
                    // Not expected of a socket on Linux; the ring is closed with the error.
                    stats.capture_errors.fetch_add(1, Relaxed);
                    tracing::error!("capture on {dev}: cannot wait on the ring: {e}");
                    return;
                }
            };
            let failed = loop {
                if stop.load(Relaxed) {
                    break None;
                }
                let wait = (last_check + CHECK_EVERY).min(Instant::now() + STOP_EVERY);
                let woken = tokio::select! {
                    r = afd.wait() => match r {
                        Ok(()) => true,
                        Err(e) => break Some(format!("poll: {e}")),
                    },
                    _ = tokio::time::sleep_until(wait.into()) => false,
                };
                // Woken without a frame: the socket holds an error (ENETDOWN when the device
                // went down or away).
                if woken && !afd.ring().has_block() {
                    match tcpclone::sys::ring::take_socket_error(afd.ring().fd()) {
                        Ok(None) => {}
                        Ok(Some(e)) | Err(e) => break Some(e.to_string()),
                    }
                }
                loop {
                    let Some(found) = read_ready(afd.ring(), &rings, read, &tx, &stats).await
                    else {
                        read_drops(afd.ring(), &stats);
                        return;
                    };
                    if found < BUSY_BATCH || rings.frame_size.is_none() || stop.load(Relaxed) {
                        break;
                    }
                    // Many answers at once: the router and the writers send these first, then
                    // the next ones gather with the thread off the CPU (nothing else of ours
                    // is waiting then), one wake-up for many. Not a timer of the runtime's:
                    // it would round 200 us up to a millisecond, and the ring's readiness
                    // would wake the thread meanwhile anyway.
                    tokio::task::yield_now().await;
                    std::thread::sleep(GATHER);
                }
                if last_check.elapsed() >= CHECK_EVERY {
                    last_check = Instant::now();
                    read_drops(afd.ring(), &stats);
                    if dev != "any" {
                        match interface_index(&dev) {
                            Ok(i) if i == ifindex => {}
                            Ok(_) => break Some("device re-created".to_string()),
                            Err(e) => break Some(e.to_string()),
                        }
                    }
                }
                if rings.generation.load(Relaxed) != generation {
                    break None;
                }
            };
            ring = afd.into_inner();
            let regroup = rings.generation.load(Relaxed) != generation;
            if failed.is_none() && !regroup {
                // Stopped.
                break 'open;
            }
            match &failed {
                Some(why) => {
                    stats.capture_errors.fetch_add(1, Relaxed);
                    tracing::error!("capture on {dev}: {why}; reopening");
                }
                None => tracing::info!(
                    "capture on {dev}: another ring of the device was reopened; joining its group"
                ),
            }
            read_drops(&ring, &stats);
            // Out of the old group before the new one forms.
            drop(ring);
            let failed_gen = failed.is_some().then_some(generation);
            let (r, d, s) = (rings.clone(), dev.clone(), stop.clone());
            // Off the runtime: the backoff sleeps, and the other rings and the router go on.
            let opened = tokio::task::spawn_blocking(move || {
                reopen_with_backoff(&d, &s, || r.open_ring(failed_gen))
            })
            .await
            .ok()
            .flatten();
            let Some(opened) = opened else {
                return;
            };
            (ring, ifindex, generation) = opened;
            stats.capture_reopens.fetch_add(1, Relaxed);
            tracing::info!("capture on {dev} reopened");
        }
        read_drops(&ring, &stats);
    }
}

/// Reads every frame (or block) the kernel has handed over into batches of at most
/// [`MAX_BATCH`] headers and sends them to the router; the count of headers found, `None` once
/// the router is gone.
async fn read_ready(
    ring: &mut PacketRing,
    rings: &DeviceRings,
    read: fn(&[u8], Option<i32>, usize, &mut HeaderBatch, &mut Counts),
    tx: &mpsc::Sender<HeaderBatch>,
    stats: &Stats,
) -> Option<usize> {
    let mut found = 0;
    loop {
        // Small to start: a quiet target's wake-up brings one or two headers.
        let mut batch = HeaderBatch::with_capacity(1024);
        let mut n = Counts::default();
        while batch.len() < MAX_BATCH {
            let Some(slot) = ring.next_block() else {
                break;
            };
            read(
                slot.bytes(),
                rings.lo_ifindex,
                rings.prefix,
                &mut batch,
                &mut n,
            );
            // The header is copied: the slot goes back to the kernel at once.
        }
        stats.captured.fetch_add(n.captured, Relaxed);
        if n.not_tcp > 0 {
            stats.not_tcp.fetch_add(n.not_tcp, Relaxed);
        }
        if n.bad > 0 {
            stats.capture_errors.fetch_add(n.bad, Relaxed);
        }
        if batch.is_empty() {
            return Some(found);
        }
        found += batch.len();
        let full = batch.len() >= MAX_BATCH;
        tx.send(batch).await.ok()?;
        if !full {
            return Some(found);
        }
    }
}

/// Adds the ring's kernel drops since the last read to `stats`.
fn read_drops(ring: &PacketRing, stats: &Stats) {
    if let Ok(s) = ring.stats() {
        stats.kernel_drops.fetch_add(u64::from(s.drops), Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tcpclone::capture::tpacket::build;

    /// IPv4 + TCP from the target 198.18.0.2:6379 to 198.18.0.1:40000, then `+OK\r\n`.
    const RESPONSE: [u8; 45] = [
        0x45, 0, 0, 45, 0, 0, 0x40, 0, 64, 6, 0, 0, 198, 18, 0, 2, 198, 18, 0, 1, //
        0x18, 0xeb, 0x9c, 0x40, 0, 0, 0, 1, 0, 0, 0, 2, 0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0, //
        b'+', b'O', b'K', b'\r', b'\n',
    ];
    const PACKET_HOST: u8 = 0;
    /// The ifindex `build::frame_v2` gives every frame.
    const BUILT_IFINDEX: i32 = 2;
    const SLOT: usize = 256;

    fn with_seq(seq: u8) -> [u8; 45] {
        let mut r = RESPONSE;
        r[27] = seq;
        r
    }

    /// Reads the frames (pkt_type, ethertype, bytes) as slots of a ring, in order.
    fn read(frames: &[(u8, u16, &[u8])], lo: Option<i32>, batch: &mut HeaderBatch) -> Counts {
        let mut n = Counts::default();
        for (i, &(ty, proto, data)) in frames.iter().enumerate() {
            let slot = build::frame_v2(SLOT, i as u64, ty, proto, data);
            read_frame(&slot, lo, 0, batch, &mut n);
        }
        n
    }

    #[test]
    fn frames_read_together_are_one_batch_of_headers_in_order() {
        let (a, b, c) = (with_seq(1), with_seq(2), with_seq(3));
        let mut batch = HeaderBatch::default();
        let n = read(
            &[
                (PACKET_HOST, 0x0800, &a),
                (PACKET_HOST, 0x0800, &b),
                (PACKET_HOST, 0x0800, &c[..42]), // cut by the snap length: header still whole
            ],
            None,
            &mut batch,
        );
        assert_eq!(
            n,
            Counts {
                captured: 3,
                not_tcp: 0,
                bad: 0
            }
        );
        let got: Vec<&[u8]> = batch.iter().collect();
        assert_eq!(got, vec![&a[..40], &b[..40], &c[..40]]);
    }

    #[test]
    fn the_prefix_keeps_payload_bytes_after_the_header() {
        let a = with_seq(1);
        let slot = build::frame_v2(SLOT, 1, PACKET_HOST, 0x0800, &a);
        let (mut batch, mut n) = (HeaderBatch::default(), Counts::default());
        read_frame(&slot, None, 3, &mut batch, &mut n);
        assert_eq!(batch.iter().next(), Some(&a[..43]));
    }

    #[test]
    fn outgoing_frames_are_skipped_on_loopback_only() {
        let a = with_seq(1);
        let frames = [
            (PACKET_OUTGOING, 0x0800, &a[..]),
            (PACKET_HOST, 0x0800, &a[..]),
        ];
        // On lo the outgoing copy is the incoming one seen early: skipped, not counted.
        let mut batch = HeaderBatch::default();
        let n = read(&frames, Some(BUILT_IFINDEX), &mut batch);
        assert_eq!((n.captured, n.not_tcp, batch.len()), (1, 0, 1));
        // Elsewhere an outgoing frame is a response the target sent: kept.
        let mut batch = HeaderBatch::default();
        let n = read(&frames, Some(1), &mut batch);
        assert_eq!((n.captured, n.not_tcp, batch.len()), (2, 0, 2));
    }

    #[test]
    fn non_tcp_frames_are_counted_not_sent() {
        let resp = with_seq(9);
        let mut udp = RESPONSE;
        udp[9] = 17;
        let arp = [0u8; 28];
        let mut v6_nibble_in_v4 = RESPONSE;
        v6_nibble_in_v4[0] = 0x35;
        let mut batch = HeaderBatch::default();
        let n = read(
            &[
                (PACKET_HOST, 0x0800, &udp),
                (PACKET_HOST, 0x0806, &arp),
                (PACKET_HOST, 0x0800, &resp[..30]), // TCP header cut short
                (PACKET_HOST, 0x0800, &v6_nibble_in_v4),
                (PACKET_HOST, 0x0800, &[]),
                (PACKET_HOST, 0x0800, &resp),
            ],
            None,
            &mut batch,
        );
        assert_eq!((n.captured, n.not_tcp, n.bad), (6, 5, 0));
        assert_eq!(batch.iter().collect::<Vec<_>>(), vec![&resp[..40]]);
    }

    #[test]
    fn a_block_reads_like_its_frames_one_by_one() {
        let (a, b) = (with_seq(1), with_seq(2));
        let frames = [
            (1, PACKET_OUTGOING, 0x0800, &a[..]),
            (2, PACKET_HOST, 0x0800, &a[..]),
            (3, PACKET_HOST, 0x0806, &[0u8; 28][..]),
            (4, PACKET_HOST, 0x0800, &b[..]),
        ];
        let blk = build::block(&frames);
        let (mut from_block, mut nb) = (HeaderBatch::default(), Counts::default());
        read_block(&blk, Some(BUILT_IFINDEX), 0, &mut from_block, &mut nb);
        let mut one_by_one = HeaderBatch::default();
        let frames: Vec<_> = frames.iter().map(|&(_, t, p, d)| (t, p, d)).collect();
        let nf = read(&frames, Some(BUILT_IFINDEX), &mut one_by_one);
        assert_eq!(nb, nf);
        assert_eq!((nb.captured, nb.not_tcp, nb.bad), (3, 1, 0));
        assert_eq!(from_block, one_by_one);
        // A block cut short: counted bad once, what came before kept.
        let (mut cut, mut nc) = (HeaderBatch::default(), Counts::default());
        read_block(&blk[..20], None, 0, &mut cut, &mut nc);
        assert_eq!((nc.captured, nc.bad, cut.len()), (0, 1, 0));
    }

    #[test]
    fn a_corrupt_slot_is_counted_and_the_next_is_read() {
        let a = with_seq(1);
        let mut bad = build::frame_v2(SLOT, 1, PACKET_HOST, 0x0800, &a);
        bad[8..12].copy_from_slice(&10_000u32.to_ne_bytes()); // snap length past the slot
        let good = build::frame_v2(SLOT, 2, PACKET_HOST, 0x0800, &a);
        let (mut batch, mut n) = (HeaderBatch::default(), Counts::default());
        read_frame(&bad, None, 0, &mut batch, &mut n);
        read_frame(&good, None, 0, &mut batch, &mut n);
        assert_eq!((n.captured, n.bad, batch.len()), (1, 1, 1));
        // Every prefix and every flipped byte: no panic, and never more headers than frames.
        for len in 0..good.len() {
            let (mut b, mut n) = (HeaderBatch::default(), Counts::default());
            read_frame(&good[..len], None, 0, &mut b, &mut n);
            assert!(b.len() as u64 <= n.captured);
        }
        for i in 0..good.len() {
            let mut c = good.clone();
            c[i] ^= 0xff;
            let (mut b, mut n) = (HeaderBatch::default(), Counts::default());
            read_frame(&c, None, 0, &mut b, &mut n);
            assert!(b.len() as u64 <= n.captured);
        }
    }
}
