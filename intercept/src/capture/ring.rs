//! The ring back end (the default): the library's `TPACKET_V3` ring, read in place. The kernel
//! hands over a block of frames when it is full or 1 ms after its first frame; the capture
//! thread copies each frame's IP + TCP header into one [`HeaderBatch`], gives the block back,
//! and sends the batch: one wake-up and one channel send per block, not per packet.
//!
//! With `--workers N`, each device gets N rings in one `PACKET_FANOUT` group (the kernel
//! spreads the traffic by flow, so one connection's responses stay in one ring and in order),
//! each read by its own thread.
//!
//! A ring whose device goes down or away reports an error on its socket (or its name no longer
//! maps to its index): the thread counts it, closes the ring and reopens it with backoff, like
//! the libpcap back end. When the rings of a group are reopened, the first one starts a new
//! group and the others join it (the old group stays bound to the old device).

use super::{reopen_with_backoff, DEVICE_BUFFER};
use crate::batch::HeaderBatch;
use crate::linklayer::ip_tcp_response;
use crate::server::Stats;
use anyhow::Context;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tcpclone::capture::tpacket::{BlockView, PACKET_OUTGOING};
use tcpclone::capture::LinkType;
use tcpclone::sys::ring::{interface_index, poll_many, Fanout, PacketRing, RingConfig, SockFilter};
use tokio::sync::mpsc;

/// Bytes per block. A frame takes at most ~340 bytes of it (ring headers and the snap
/// length), so a full block holds some 500 small segments; 64 MB per device make 1,024 blocks.
const BLOCK_SIZE: usize = 64 << 10;
/// Fewest blocks per ring, however many workers share the device's buffer.
const MIN_BLOCKS: usize = 16;
/// A block with frames is handed over at most this long after its first frame (ms): responses
/// reach tcpcopy within about a millisecond even when the traffic is light.
const RETIRE_MS: u32 = 1;
/// Longest sleep in `poll` before looking at the stop flag again.
const POLL_MS: i32 = 100;
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

/// One ring of a device, ready for its thread.
#[derive(Debug)]
pub struct RingCapture {
    rings: Arc<DeviceRings>,
    index: usize,
    ring: PacketRing,
    ifindex: u32,
    generation: u64,
}

/// Opens `workers` rings on `device` (`any`: every device), filtered by `filter`.
/// `prefix`: payload bytes kept after each header (`--response-prefix`).
pub fn open(
    device: &str,
    filter: &str,
    workers: usize,
    prefix: usize,
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
        lo_ifindex: interface_index("lo")
            .ok()
            .and_then(|i| i32::try_from(i).ok()),
        group: Mutex::new(Group::default()),
        generation: AtomicU64::new(0),
        prefix,
    });
    (0..workers)
        .map(|index| {
            let (ring, ifindex, generation) = rings.open_ring(None)?;
            Ok(RingCapture {
                rings: rings.clone(),
                index,
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
            retire_ms: RETIRE_MS,
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

/// What one block held.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BlockCounts {
    /// Frames captured (loopback's second copies not included).
    pub captured: u64,
    /// Captured frames that gave no IP + TCP header.
    pub not_tcp: u64,
    /// Whether the block was malformed (its frames from the fault on are lost).
    pub bad: bool,
}

/// Copies the IP + TCP header of every frame of a ring block into `batch`. `lo_ifindex`: the
/// index of `lo`, whose outgoing frames are skipped (the same bytes come back in as incoming,
/// as libpcap also skips them); elsewhere outgoing frames are kept, they are the responses of
/// a target intercept runs on.
pub fn read_block(block: &[u8], lo_ifindex: Option<i32>, batch: &mut HeaderBatch) -> BlockCounts {
    read_block_prefix(block, lo_ifindex, 0, batch)
}

/// [`read_block`] keeping up to `prefix` payload bytes after each header.
pub fn read_block_prefix(
    block: &[u8],
    lo_ifindex: Option<i32>,
    prefix: usize,
    batch: &mut HeaderBatch,
) -> BlockCounts {
    let mut n = BlockCounts::default();
    let view = match BlockView::new_checked(block) {
        Ok(v) => v,
        Err(e) => {
            tracing::debug!("{e}");
            n.bad = true;
            return n;
        }
    };
    for f in view.frames() {
        let f = match f {
            Ok(f) => f,
            Err(e) => {
                tracing::debug!("{e}");
                n.bad = true;
                break;
            }
        };
        if f.pkt_type == PACKET_OUTGOING && Some(f.ifindex) == lo_ifindex {
            continue;
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
    n
}

impl RingCapture {
    /// Device name as given to `-i`.
    pub fn device(&self) -> &str {
        &self.rings.device
    }

    /// Which of the device's rings this is (0-based).
    pub fn index(&self) -> usize {
        self.index
    }

    /// Captures until `stop` is set or the router's queue closes; blocks when the router is
    /// behind (the kernel then drops, and those drops are counted from the ring's stats).
    pub fn run(self, tx: mpsc::Sender<HeaderBatch>, stats: Arc<Stats>, stop: Arc<AtomicBool>) {
        let RingCapture {
            rings,
            mut ring,
            mut ifindex,
            mut generation,
            ..
        } = self;
        let dev = rings.device.as_str();
        let mut last_check = Instant::now();
        let mut ready = Vec::new();
        while !stop.load(Relaxed) {
            loop {
                let Some(block) = ring.next_block() else {
                    break;
                };
                let bytes = block.bytes();
                let mut batch = HeaderBatch::with_capacity(
                    BlockView::new_checked(bytes).map_or(0, |v| v.num_pkts() as usize * 64),
                );
                let n = read_block_prefix(bytes, rings.lo_ifindex, rings.prefix, &mut batch);
                // The headers are copied: the kernel may fill the block again.
                drop(block);
                stats.captured.fetch_add(n.captured, Relaxed);
                if n.not_tcp > 0 {
                    stats.not_tcp.fetch_add(n.not_tcp, Relaxed);
                }
                if n.bad {
                    stats.capture_errors.fetch_add(1, Relaxed);
                }
                if !batch.is_empty() && tx.blocking_send(batch).is_err() {
                    read_drops(&ring, &stats);
                    return;
                }
                if stop.load(Relaxed) {
                    break;
                }
            }
            let mut failed = None;
            if last_check.elapsed() >= CHECK_EVERY {
                last_check = Instant::now();
                read_drops(&ring, &stats);
                if dev != "any" {
                    match interface_index(dev) {
                        Ok(i) if i == ifindex => {}
                        Ok(_) => failed = Some("device re-created".to_string()),
                        Err(e) => failed = Some(e.to_string()),
                    }
                }
            }
            if failed.is_none() && rings.generation.load(Relaxed) == generation {
                let fd = ring.fd();
                match poll_many(&[fd], POLL_MS, &mut ready) {
                    // Readable without a block: the socket holds an error (ENETDOWN when the
                    // device went down or away).
                    Ok(()) if ready.first() == Some(&true) && !ring.has_block() => {
                        match tcpclone::sys::ring::take_socket_error(fd) {
                            Ok(None) => {}
                            Ok(Some(e)) | Err(e) => failed = Some(e.to_string()),
                        }
                    }
                    Ok(()) => {}
                    Err(e) => failed = Some(format!("poll: {e}")),
                }
            }
            let regroup = rings.generation.load(Relaxed) != generation;
            if failed.is_none() && !regroup {
                continue;
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
            let Some(opened) = reopen_with_backoff(dev, &stop, || rings.open_ring(failed_gen))
            else {
                return;
            };
            (ring, ifindex, generation) = opened;
            stats.capture_reopens.fetch_add(1, Relaxed);
            tracing::info!("capture on {dev} reopened");
        }
        read_drops(&ring, &stats);
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
    use tcpclone::capture::tpacket::build::block;

    /// IPv4 + TCP from the target 198.18.0.2:6379 to 198.18.0.1:40000, then `+OK\r\n`.
    const RESPONSE: [u8; 45] = [
        0x45, 0, 0, 45, 0, 0, 0x40, 0, 64, 6, 0, 0, 198, 18, 0, 2, 198, 18, 0, 1, //
        0x18, 0xeb, 0x9c, 0x40, 0, 0, 0, 1, 0, 0, 0, 2, 0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0, //
        b'+', b'O', b'K', b'\r', b'\n',
    ];
    const PACKET_HOST: u8 = 0;
    /// The ifindex `build::block` gives every frame.
    const BUILT_IFINDEX: i32 = 2;

    fn with_seq(seq: u8) -> [u8; 45] {
        let mut r = RESPONSE;
        r[27] = seq;
        r
    }

    #[test]
    fn one_block_is_one_batch_of_headers_in_order() {
        let (a, b, c) = (with_seq(1), with_seq(2), with_seq(3));
        let blk = block(&[
            (1, PACKET_HOST, 0x0800, &a),
            (2, PACKET_HOST, 0x0800, &b),
            (3, PACKET_HOST, 0x0800, &c[..42]), // cut by the snap length: header still whole
        ]);
        let mut batch = HeaderBatch::default();
        let n = read_block(&blk, None, &mut batch);
        assert_eq!(
            n,
            BlockCounts {
                captured: 3,
                not_tcp: 0,
                bad: false
            }
        );
        let got: Vec<&[u8]> = batch.iter().collect();
        assert_eq!(got, vec![&a[..40], &b[..40], &c[..40]]);
    }

    #[test]
    fn outgoing_frames_are_skipped_on_loopback_only() {
        let a = with_seq(1);
        let blk = block(&[
            (1, PACKET_OUTGOING, 0x0800, &a),
            (2, PACKET_HOST, 0x0800, &a),
        ]);
        // On lo the outgoing copy is the incoming one seen early: skipped, not counted.
        let mut batch = HeaderBatch::default();
        let n = read_block(&blk, Some(BUILT_IFINDEX), &mut batch);
        assert_eq!((n.captured, n.not_tcp, batch.len()), (1, 0, 1));
        // Elsewhere an outgoing frame is a response the target sent: kept.
        let mut batch = HeaderBatch::default();
        let n = read_block(&blk, Some(1), &mut batch);
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
        let blk = block(&[
            (1, PACKET_HOST, 0x0800, &udp),
            (2, PACKET_HOST, 0x0806, &arp),
            (3, PACKET_HOST, 0x0800, &resp[..30]), // TCP header cut short
            (4, PACKET_HOST, 0x0800, &v6_nibble_in_v4),
            (5, PACKET_HOST, 0x0800, &[]),
            (6, PACKET_HOST, 0x0800, &resp),
        ]);
        let mut batch = HeaderBatch::default();
        let n = read_block(&blk, None, &mut batch);
        assert_eq!((n.captured, n.not_tcp, n.bad), (6, 5, false));
        assert_eq!(batch.iter().collect::<Vec<_>>(), vec![&resp[..40]]);
    }

    #[test]
    fn a_corrupt_block_keeps_what_came_before_the_fault() {
        let a = with_seq(1);
        let mut blk = block(&[(1, PACKET_HOST, 0x0800, &a), (2, PACKET_HOST, 0x0800, &a)]);
        // The first frame's next offset of zero: the walk cannot reach the second.
        let at = tcpclone::capture::tpacket::BLOCK_HEADER_LEN;
        blk[at..at + 4].copy_from_slice(&0u32.to_ne_bytes());
        let mut batch = HeaderBatch::default();
        let n = read_block(&blk, None, &mut batch);
        assert_eq!((n.captured, batch.len(), n.bad), (1, 1, true));
        let n = read_block(&blk[..10], None, &mut batch);
        assert_eq!((n.captured, n.bad), (0, true));
        // Every prefix and every flipped byte: no panic, and never more headers than frames.
        for len in 0..blk.len() {
            let mut b = HeaderBatch::default();
            let n = read_block(&blk[..len], None, &mut b);
            assert!(b.len() as u64 <= n.captured);
        }
        for i in 0..blk.len() {
            let mut c = blk.clone();
            c[i] ^= 0xff;
            let mut b = HeaderBatch::default();
            let n = read_block(&c, None, &mut b);
            assert!(b.len() as u64 <= n.captured);
        }
    }
}
