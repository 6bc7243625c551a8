//! Where captured client segments come from: live devices through libpcap (an mmap ring sized
//! by -B, a BPF filter built from -x) or a capture file replayed with its own timing. Both hand
//! the engine thread batches of IP packets over one crossbeam channel.
//!
//! The ring: by default libpcap's immediate mode, a TPACKET_V2 ring that wakes us per packet;
//! every packet takes a fixed slot sized for the largest one (64 KiB), so 128 MB hold 2,048
//! packets. With --capture-block MS libpcap uses TPACKET_V3, whose blocks hold packets back to
//! back (an 8 MB ring holds some 80,000 small segments instead of 128) and are handed over when
//! full or MS ms after their first packet. Block mode suits a small -B on a busy host (a capture
//! thread kept off the CPU for a few ms overruns 128 slots). It is not the default: it wakes the
//! capture thread less often, which leaves the host more CPU, but under load segments reach the
//! engine later (the soak's capture-to-engine medians of both modes: docs/benchmarks.md). Neither
//! copies in the kernel; the engine thread measures capture-to-send latency and the summary
//! prints its percentiles.
//!
//! This module never sends anything and never captures tcpcopy's own output: the filter excludes
//! every target address and port, and the direction is set to inbound where the device allows.

use super::counters::Counters;
use super::sys;
use crate::mapping::TargetMapping;
use anyhow::{anyhow, Context, Result};
use crossbeam_channel::{Receiver, Sender, TrySendError};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tcpclone::capture::LinkType;
use tcpclone::sys::ring::Wake;
use tcpclone::wire::parse_link;
use tracing::{debug, info, warn};

/// Snap length: a whole GRO/GSO super-segment plus its link header, and not one byte more. In
/// immediate mode (the default) libpcap uses a TPACKET_V2 ring of fixed-size slots: `snaplen`
/// plus its slot
/// header (68 bytes on Ethernet, 84 on cooked `any` captures) rounded up to 16, in blocks of a
/// power-of-two number of pages. At 65,440 a slot fits a 64 KiB block, so -B MB hold -B × 16
/// slots; a few bytes more and every slot takes a 128 KiB block, half of it unused (the ring
/// then costs twice -B). Super-segments stay below this: GRO and GSO stop at 64 KiB less the
/// headers (45 × 1,448-byte segments make a 65,226-byte frame).
const SNAPLEN: i32 = 65_440;
/// On loopback a single segment can be 65,535 bytes of IP (its MTU is 64 KiB): keep it whole.
const SNAPLEN_LOOPBACK: i32 = 65_535 + 64;
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
/// How often a capture thread reads pcap's kernel drop counters.
const STATS_EVERY: Duration = Duration::from_millis(500);

/// Captured IP packets, copied out of the ring into one buffer.
#[derive(Debug, Default)]
pub struct Batch {
    /// Packet bytes back to back.
    pub data: Vec<u8>,
    /// Per packet: end offset in `data` and capture time in ns since the Unix epoch.
    pub packets: Vec<(usize, u64)>,
    /// When the first packet went in.
    opened: Option<Instant>,
}

impl Batch {
    /// Iterates over (capture time ns, IP packet).
    pub fn iter(&self) -> impl Iterator<Item = (u64, &[u8])> {
        let mut start = 0;
        self.packets.iter().map(move |&(end, ts)| {
            let p = &self.data[start..end];
            start = end;
            (ts, p)
        })
    }

    fn push(&mut self, ts_ns: u64, ip: &[u8]) {
        if self.packets.is_empty() {
            self.opened = Some(Instant::now());
        }
        self.data.extend_from_slice(ip);
        self.packets.push((self.data.len(), ts_ns));
    }

    fn clear(&mut self) {
        self.data.clear();
        self.packets.clear();
        self.opened = None;
    }

    /// Whether the batch should go now (full, big, or old enough).
    fn due(&self) -> bool {
        self.packets.len() >= BATCH_PACKETS
            || self.data.len() >= BATCH_BYTES
            || self.opened.is_some_and(|t| t.elapsed() >= BATCH_AGE)
    }

    fn is_empty(&self) -> bool {
        self.packets.is_empty()
    }
}

/// Empty batches handed back by the engine thread for reuse, so steady state allocates nothing;
/// it also counts the bytes of the batches handed over and not yet given back (what the
/// capture side holds in user space, bounded by -B per device).
#[derive(Debug, Clone)]
pub struct BatchPool {
    tx: Sender<Batch>,
    rx: Receiver<Batch>,
    queued: Arc<AtomicUsize>,
}

impl BatchPool {
    /// A pool holding at most `n` spare batches.
    pub fn new(n: usize) -> Self {
        let (tx, rx) = crossbeam_channel::bounded(n);
        BatchPool {
            tx,
            rx,
            queued: Arc::default(),
        }
    }
    fn take(&self) -> Batch {
        self.rx.try_recv().unwrap_or_default()
    }
    /// Bytes handed to the engine and not yet given back.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }
    /// Returns a used batch. One that grew while the engine was behind is freed instead, so
    /// the pool never keeps a backlog's worth of memory.
    pub fn give(&self, mut b: Batch) {
        self.queued.fetch_sub(b.data.len(), Ordering::Relaxed);
        if b.data.capacity() > 2 * BATCH_BYTES || b.packets.capacity() > 2 * BATCH_PACKETS {
            return;
        }
        b.clear();
        let _ = self.tx.try_send(b);
    }
}

/// The BPF filter: `tcp and dst port P [and dst host IP]` OR'ed across the mappings, minus
/// anything addressed to a target (our own output), ANDed with the user's `-F`.
pub fn capture_filter(mappings: &[TargetMapping], user: Option<&str>) -> String {
    let wanted: Vec<String> = mappings
        .iter()
        .map(|m| match m.online_ip {
            Some(ip) => format!("(dst port {} and dst host {ip})", m.online_port),
            None => format!("(dst port {})", m.online_port),
        })
        .collect();
    let mut targets: Vec<String> = mappings
        .iter()
        .map(|m| {
            format!(
                "(dst host {} and dst port {})",
                m.target.ip(),
                m.target.port()
            )
        })
        .collect();
    targets.sort();
    targets.dedup();
    // Loopback sessions on the production host (health checks, admin tools) are not client
    // traffic and could not be sent anywhere with a 127/8 or ::1 source.
    let mut f = format!(
        "tcp and ({}) and not ({}) and not src net 127.0.0.0/8 and not src host ::1",
        wanted.join(" or "),
        targets.join(" or ")
    );
    if let Some(u) = user {
        f = format!("({f}) and ({u})");
    }
    f
}

/// pcap `DLT_*` values handled (what `pcap_datalink` returns, also for files).
mod dlt {
    pub const NULL: i32 = 0;
    pub const EN10MB: i32 = 1;
    pub const RAW_LINUX: i32 = 12;
    pub const RAW_BSD: i32 = 14;
    pub const RAW: i32 = 101;
    pub const LOOP: i32 = 108;
    pub const LINUX_SLL: i32 = 113;
    pub const IPV4: i32 = 228;
    pub const IPV6: i32 = 229;
    pub const LINUX_SLL2: i32 = 276;
}

/// `PACKET_OUTGOING` in the cooked headers' packet type (linux/if_packet.h).
const PACKET_OUTGOING: u16 = 4;

fn ip_version_ok(p: &[u8]) -> bool {
    matches!(p.first().map(|b| b >> 4), Some(4) | Some(6))
}

/// Strips the link layer: the IP packet inside a frame, or `None` when the frame is not IP, is
/// one of this host's outgoing frames (cooked captures say so), or is too short.
pub fn strip_link(dlt: i32, frame: &[u8]) -> Option<&[u8]> {
    let link = parse_link(LinkType::from_dlt(dlt), frame).ok()?;
    if link.packet_type == Some(PACKET_OUTGOING) || !link.ethertype.is_ip() {
        return None;
    }
    let ip = frame.get(link.l3_offset..)?;
    ip_version_ok(ip).then_some(ip)
}

/// Whether a device's link type is one we can strip.
fn supported_dlt(d: i32) -> bool {
    use dlt::*;
    [
        NULL, EN10MB, RAW_LINUX, RAW_BSD, RAW, LOOP, LINUX_SLL, IPV4, IPV6, LINUX_SLL2,
    ]
    .contains(&d)
}

fn ts_ns(h: &pcap::PacketHeader, nano: bool) -> u64 {
    let sub = h.ts.tv_usec as u64;
    (h.ts.tv_sec as u64) * 1_000_000_000 + if nano { sub } else { sub * 1000 }
}

/// The BPF program of `filter` for a capture ring (the library's one filter builder), keeping
/// whole frames.
pub fn compile_for_ring(filter: &str) -> Result<Vec<tcpclone::sys::ring::SockFilter>> {
    tcpclone::capture::bpf::compile_for_ring(filter, u32::MAX).context("-F/--filter")
}

/// One device's ring of one worker.
pub struct LiveRing {
    /// Device name as given to -i.
    pub name: String,
    /// The ring.
    pub ring: tcpclone::sys::ring::PacketRing,
    /// The device index the ring is bound to (0: every device).
    pub ifindex: u32,
    /// How to open it again, shared by the device's rings of every worker.
    pub spec: Arc<RingSpec>,
}

/// What a device's rings were opened with, to open them again on a device deleted and
/// re-created under the same name (a new index: the old rings stay bound to the dead one and
/// would see nothing for the rest of the run; a device that only went down and up keeps its
/// index and its rings).
pub struct RingSpec {
    filter: Vec<tcpclone::sys::ring::SockFilter>,
    block_size: usize,
    block_count: usize,
    retire_ms: u32,
    workers: usize,
    /// The index the newest rings are bound to and their fanout group: the first worker to see
    /// a new index opens a new group, the others join it (a group's members must share one
    /// device, so the old group cannot be joined).
    current: Mutex<(u32, Option<u16>)>,
}

impl LiveRing {
    /// Opens this ring again when its device name now names another device index. `Ok(true)`
    /// when it did; `Ok(false)` when there is nothing to do (same index, `any`, or the device
    /// is absent for now).
    pub fn reopen_if_recreated(&mut self) -> Result<bool> {
        use tcpclone::sys::ring::{interface_index, Fanout, PacketRing, RingConfig};
        if self.ifindex == 0 {
            return Ok(false);
        }
        let Ok(now) = interface_index(&self.name) else {
            return Ok(false);
        };
        if now == self.ifindex {
            return Ok(false);
        }
        let spec = &self.spec;
        let mut current = spec.current.lock().unwrap_or_else(|p| p.into_inner());
        let fanout = match (spec.workers, *current) {
            (1, _) => None,
            (_, (i, Some(group))) if i == now => Some(Fanout::Join(group)),
            _ => Some(Fanout::New),
        };
        let ring = PacketRing::open(&RingConfig {
            ifindex: now,
            block_size: spec.block_size,
            block_count: spec.block_count,
            retire_ms: spec.retire_ms,
            filter: &spec.filter,
            fanout,
            ignore_outgoing: true,
        })
        .with_context(|| format!("-i/--interface: cannot capture on `{}` again", self.name))?;
        *current = (now, ring.fanout_id());
        self.ring = ring;
        self.ifindex = now;
        Ok(true)
    }
}

/// Block size for a ring of `bytes`: a power of two from 128 KiB (a 64 KiB GRO frame and its
/// headers must fit) to 1 MiB, small enough that the ring has some 1,000 blocks where it can.
/// Under a steady trickle the kernel retires a block per timeout however little it holds, so
/// the number of blocks, not their size, sets how long a worker may fall behind before the
/// kernel drops: 1,024 blocks of 1 ms are a second.
pub fn ring_block_size(bytes: usize) -> usize {
    let per = (bytes / 1024).max(1);
    let pow = if per.is_power_of_two() {
        per
    } else {
        per.next_power_of_two() / 2
    };
    pow.clamp(128 << 10, 1 << 20)
}

/// Opens `workers` rings on every device, each device's rings in one fanout group, `ring_bytes`
/// per device shared among the workers. Returns the rings per worker.
pub fn open_rings(
    devices: &[String],
    filter: &str,
    ring_bytes: usize,
    workers: usize,
    retire_ms: u32,
) -> Result<Vec<Vec<LiveRing>>> {
    use tcpclone::sys::ring::{interface_index, Fanout, PacketRing, RingConfig};
    let prog = compile_for_ring(filter)?;
    let per_worker = (ring_bytes / workers.max(1)).max(128 << 10);
    let block_size = ring_block_size(per_worker);
    let block_count = (per_worker / block_size).max(2);
    let mut out: Vec<Vec<LiveRing>> = (0..workers).map(|_| Vec::new()).collect();
    for dev in devices {
        let ifindex = if dev == "any" {
            0
        } else {
            interface_index(dev).with_context(|| format!("-i/--interface: `{dev}`"))?
        };
        let mut group = None;
        let spec = Arc::new(RingSpec {
            filter: prog.clone(),
            block_size,
            block_count,
            retire_ms,
            workers,
            current: Mutex::new((ifindex, None)),
        });
        for rings in out.iter_mut() {
            let fanout = match (workers, group) {
                (1, _) => None,
                (_, None) => Some(Fanout::New),
                (_, Some(id)) => Some(Fanout::Join(id)),
            };
            let ring = PacketRing::open(&RingConfig {
                ifindex,
                block_size,
                block_count,
                retire_ms,
                filter: &prog,
                fanout,
                ignore_outgoing: true,
            })
            .with_context(|| format!("-i/--interface: cannot capture on `{dev}`"))?;
            group = group.or(ring.fanout_id());
            rings.push(LiveRing {
                name: dev.clone(),
                ring,
                ifindex,
                spec: spec.clone(),
            });
        }
        *spec.current.lock().unwrap_or_else(|p| p.into_inner()) = (ifindex, group);
        debug!(device = %dev, workers, block_size, block_count, "capture rings open");
    }
    Ok(out)
}

/// The IP packet of a ring frame, or why it is skipped.
pub fn ring_ip<'a>(f: &tcpclone::capture::tpacket::RingFrame<'a>) -> Result<&'a [u8], Skip> {
    use tcpclone::capture::tpacket::PACKET_OUTGOING;
    if f.pkt_type == PACKET_OUTGOING || !f.protocol.is_ip() || !ip_version_ok(f.data) {
        return Err(Skip::NotIp);
    }
    if f.truncated() {
        return Err(Skip::Truncated);
    }
    Ok(f.data)
}

/// Why a captured frame does not reach the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// Not IP, or this host's own output.
    NotIp,
    /// Cut short by the ring.
    Truncated,
}

/// One opened live device, ready for its thread.
pub struct LiveCapture {
    name: String,
    cap: pcap::Capture<pcap::Active>,
    dlt: i32,
}

/// Opens every device with the filter; any failure names the device. `block_ms`: hand packets
/// over in blocks held at most that long (TPACKET_V3); `None`: immediate mode (TPACKET_V2).
pub fn open_live(
    devices: &[String],
    filter: &str,
    ring_bytes: usize,
    block_ms: Option<u32>,
) -> Result<Vec<LiveCapture>> {
    let mut out = Vec::new();
    for dev in devices {
        let cap = pcap::Capture::from_device(dev.as_str())
            .and_then(|c| {
                c.immediate_mode(block_ms.is_none())
                    .snaplen(if dev == "lo" {
                        SNAPLEN_LOOPBACK
                    } else {
                        SNAPLEN
                    })
                    .buffer_size(ring_bytes.min(i32::MAX as usize) as i32)
                    .promisc(false)
                    .precision(pcap::Precision::Nano)
                    // In block mode the block retire timeout; in immediate mode unused (the
                    // handle is non-blocking and we poll).
                    .timeout(block_ms.map_or(100, |ms| ms as i32))
                    .open()
            })
            .with_context(|| format!("-i/--interface: cannot capture on `{dev}`"))?;
        let mut cap = cap;
        let dlt = cap.get_datalink().0;
        if !supported_dlt(dlt) {
            return Err(anyhow!(
                "-i/--interface: `{dev}` has link type {dlt}, which tcpcopy cannot read"
            ));
        }
        cap.filter(filter, true)
            .with_context(|| format!("-F/--filter: bad filter `{filter}` on `{dev}`"))?;
        match cap.direction(pcap::Direction::In) {
            Ok(()) => debug!(device = %dev, "capturing inbound only"),
            Err(e) => {
                info!(device = %dev, error = %e, "device cannot filter by direction; the BPF filter alone excludes our output")
            }
        }
        let cap = cap
            .setnonblock()
            .with_context(|| format!("cannot make capture on `{dev}` non-blocking"))?;
        out.push(LiveCapture {
            name: dev.clone(),
            cap,
            dlt,
        });
    }
    Ok(out)
}

/// Hands the batch to the engine. When the engine is behind (its channel full, or `limit`
/// bytes already handed over and not processed), a live capture keeps the batch and goes on
/// appending to it — compact, unlike an immediate-mode kernel ring, whose slots are sized for 64 KB
/// super-segments — as long as everything it holds stays within `limit`; at the limit it waits
/// for the engine, and the kernel ring buffers meanwhile (and drops, counted, when full).
/// `limit` 0 always waits (files, the final flush). Returns false when the engine is gone or
/// `stop` is set while waiting.
fn ship(
    tx: &Sender<Batch>,
    wake: &Wake,
    pool: &BatchPool,
    batch: &mut Batch,
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

/// Runs one live capture until `stop` is set or the engine goes away. The thread first sets
/// its nice value to `nice` (0: left alone): under load it must drain the kernel ring before
/// anything else on the host, or segments are lost for good. What it hands to the engine and
/// the engine has not processed yet stays within `limit` bytes (see [`ship`]).
// The producer side of the worker's batch channel (tx, wake, pool, counters, stop) is passed
// as it is; bundling it would only rename the same five things.
#[allow(clippy::too_many_arguments)]
pub fn run_live(
    mut lc: LiveCapture,
    nice: i32,
    limit: usize,
    tx: Sender<Batch>,
    wake: Arc<Wake>,
    pool: BatchPool,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
) {
    // Inherited from the thread that started us when it could (see main), else set here (a
    // non-root user needs RLIMIT_NICE for that, e.g. systemd's LimitNICE).
    if nice != 0 && tcpclone::sys::thread_nice() != nice {
        match tcpclone::sys::set_thread_nice(nice) {
            Ok(()) => debug!(device = %lc.name, nice, "capture thread priority set"),
            Err(e) => warn!(
                device = %lc.name,
                "--capture-nice {nice}: {e}; kernel capture drops are more likely under load"
            ),
        }
    }
    let fd = std::os::fd::AsRawFd::as_raw_fd(&lc.cap);
    let mut batch = pool.take();
    let mut last_stats = Instant::now();
    let (mut drop_seen, mut ifdrop_seen) = (0u32, 0u32);
    while !stop.load(Ordering::Relaxed) {
        match lc.cap.next_packet() {
            Ok(p) => {
                counters.add(&counters.captured_frames, 1);
                if p.header.caplen < p.header.len {
                    counters.add(&counters.truncated, 1);
                    continue;
                }
                match strip_link(lc.dlt, p.data) {
                    Some(ip) => {
                        counters.add(&counters.captured_bytes, ip.len() as u64);
                        batch.push(ts_ns(p.header, true), ip);
                        if batch.due() && !ship(&tx, &wake, &pool, &mut batch, limit, &stop) {
                            return;
                        }
                    }
                    None => counters.add(&counters.not_ip, 1),
                }
            }
            Err(pcap::Error::TimeoutExpired) => {
                // Ring empty: hand over what we have now (this is what keeps latency low),
                // then sleep in poll until the kernel has more.
                if !ship(&tx, &wake, &pool, &mut batch, limit, &stop) {
                    return;
                }
                if last_stats.elapsed() >= STATS_EVERY {
                    last_stats = Instant::now();
                    read_drops(&mut lc, &counters, &mut drop_seen, &mut ifdrop_seen);
                }
                if let Err(e) = sys::poll_readable(fd, Duration::from_millis(100)) {
                    warn!(device = %lc.name, error = %e, "poll on capture failed");
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
            Err(e) => {
                // The device went down or away: count, wait, keep trying (issue 5).
                counters.add(&counters.capture_errors, 1);
                warn!(device = %lc.name, error = %e, "capture error; retrying");
                let _ = ship(&tx, &wake, &pool, &mut batch, limit, &stop);
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
    read_drops(&mut lc, &counters, &mut drop_seen, &mut ifdrop_seen);
    let _ = ship(&tx, &wake, &pool, &mut batch, 0, &stop);
}

fn read_drops(
    lc: &mut LiveCapture,
    counters: &Counters,
    drop_seen: &mut u32,
    ifdrop_seen: &mut u32,
) {
    if let Ok(s) = lc.cap.stats() {
        counters.add(
            &counters.kernel_drops,
            u64::from(s.dropped.wrapping_sub(*drop_seen)),
        );
        counters.add(
            &counters.if_drops,
            u64::from(s.if_dropped.wrapping_sub(*ifdrop_seen)),
        );
        *drop_seen = s.dropped;
        *ifdrop_seen = s.if_dropped;
    }
}

/// The libpcap DLT to compile a filter for frames of `linktype` (LINKTYPE_RAW is DLT_RAW, 12 on
/// Linux; the other link types read here have the same number in both).
fn dlt_of(linktype: LinkType) -> i32 {
    if linktype == LinkType::RAW {
        dlt::RAW_LINUX
    } else {
        i32::try_from(linktype.0).unwrap_or(-1)
    }
}

/// Replays a capture file (pcap or pcapng, read by the library's reader) into the engine with
/// its own timing divided by `speedup` (the library's pacing schedule); packets go through the
/// same BPF filter as a live capture. Returns when the file ends or on `stop`.
#[allow(clippy::too_many_arguments)]
pub fn run_offline(
    path: &Path,
    filter: &str,
    speedup: f64,
    tx: Sender<Batch>,
    wake: Arc<Wake>,
    pool: BatchPool,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
) -> Result<()> {
    use tcpclone::capture::{CaptureReader, PacketSource};
    use tcpclone::pace::{Pacer, Timing};
    let mut reader = CaptureReader::open(path)
        .with_context(|| format!("--offline: cannot read `{}`", path.display()))?;
    let mut pacer = Pacer::new(Timing::multiplier(speedup).context("-a/--speedup")?);
    // One compiled filter per link type (a pcapng file may have interfaces of several).
    let mut programs: std::collections::HashMap<u32, pcap::BpfProgram> = Default::default();
    let mut batch = pool.take();
    let origin = Instant::now();
    loop {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let p = match reader.next_packet() {
            Ok(Some(p)) => p,
            Ok(None) => break,
            Err(e) => {
                let _ = ship(&tx, &wake, &pool, &mut batch, 0, &stop);
                return Err(anyhow!("--offline: {e}"));
            }
        };
        let dlt = dlt_of(p.linktype);
        if !supported_dlt(dlt) {
            let _ = ship(&tx, &wake, &pool, &mut batch, 0, &stop);
            return Err(anyhow!(
                "--offline: `{}` has link type {}, which tcpcopy cannot read",
                path.display(),
                p.linktype
            ));
        }
        let prog = match programs.entry(p.linktype.0) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                let dead = pcap::Capture::dead(pcap::Linktype(dlt))
                    .map_err(|e| anyhow!("cannot set up the BPF compiler: {e}"))?;
                v.insert(
                    dead.compile(filter, true)
                        .with_context(|| format!("-F/--filter: bad filter `{filter}`"))?,
                )
            }
        };
        if !prog.filter(p.data) {
            continue;
        }
        counters.add(&counters.captured_frames, 1);
        if (p.orig_len as usize) > p.data.len() {
            counters.add(&counters.truncated, 1);
            continue;
        }
        let due_ns = pacer.schedule(p.ts, p.data.len()).unwrap_or(0);
        let Some(ip) = strip_link(dlt, p.data) else {
            counters.add(&counters.not_ip, 1);
            continue;
        };
        let due = origin + Duration::from_nanos(due_ns);
        if due > Instant::now() {
            // Hand over what is due before sleeping until this packet's time.
            if !ship(&tx, &wake, &pool, &mut batch, 0, &stop) {
                return Ok(());
            }
            sleep_until(due, &stop);
        }
        counters.add(&counters.captured_bytes, ip.len() as u64);
        // Live time, so the engine's latency figures stay meaningful.
        batch.push(wall_ns(), ip);
        if batch.due() && !ship(&tx, &wake, &pool, &mut batch, 0, &stop) {
            return Ok(());
        }
    }
    let _ = ship(&tx, &wake, &pool, &mut batch, 0, &stop);
    info!(file = %path.display(), "end of capture file");
    Ok(())
}

fn sleep_until(due: Instant, stop: &AtomicBool) {
    loop {
        let now = Instant::now();
        if now >= due || stop.load(Ordering::Relaxed) {
            return;
        }
        std::thread::sleep((due - now).min(Duration::from_millis(50)));
    }
}

/// Wall clock in ns since the Unix epoch (the timebase of capture timestamps).
pub fn wall_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::parse_mappings;

    #[test]
    fn filter_from_mappings() {
        let m = parse_mappings("6379-198.18.1.2:6380,198.18.0.1:80-[2001:db8::2]:80").unwrap();
        let f = capture_filter(&m, Some("not src net 198.18.5.0/24"));
        assert_eq!(
            f,
            "(tcp and ((dst port 6379) or (dst port 80 and dst host 198.18.0.1)) and not \
             ((dst host 198.18.1.2 and dst port 6380) or (dst host 2001:db8::2 and dst port 80)) \
             and not src net 127.0.0.0/8 and not src host ::1) and (not src net 198.18.5.0/24)"
        );
        // It must compile (IPv4 and IPv6 primitives alike).
        let dead = pcap::Capture::dead(pcap::Linktype(dlt::LINUX_SLL2)).unwrap();
        dead.compile(&f, true).unwrap();
    }

    #[test]
    fn filter_excludes_our_output() {
        let m = parse_mappings("6379-198.18.1.2:6379").unwrap();
        let dead = pcap::Capture::dead(pcap::Linktype(dlt::RAW_LINUX)).unwrap();
        let prog = dead.compile(&capture_filter(&m, None), true).unwrap();
        let mut to_prod = ipv4_tcp([198, 18, 10, 2], [198, 18, 10, 1], 6379);
        assert!(prog.filter(&to_prod));
        to_prod[16..20].copy_from_slice(&[198, 18, 1, 2]);
        assert!(
            !prog.filter(&to_prod),
            "a packet to the target must not be captured"
        );
    }

    fn ipv4_tcp(src: [u8; 4], dst: [u8; 4], dport: u16) -> Vec<u8> {
        let mut p = vec![0u8; 40];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&40u16.to_be_bytes());
        p[8] = 64;
        p[9] = 6;
        p[12..16].copy_from_slice(&src);
        p[16..20].copy_from_slice(&dst);
        p[20..22].copy_from_slice(&40000u16.to_be_bytes());
        p[22..24].copy_from_slice(&dport.to_be_bytes());
        p[32] = 0x50;
        p
    }

    #[test]
    fn strips_link_layers() {
        let ip = ipv4_tcp([198, 18, 10, 2], [198, 18, 10, 1], 80);
        let mut eth = vec![0u8; 12];
        eth.extend_from_slice(&[0x81, 0x00, 0, 5, 0x08, 0x00]);
        eth.extend_from_slice(&ip);
        assert_eq!(strip_link(dlt::EN10MB, &eth), Some(&ip[..]));
        let mut sll2 = vec![
            0x08, 0x00, 0, 0, 0, 0, 0, 2, 0, 1, 0, 6, 0, 0, 0, 0, 0, 0, 0, 0,
        ];
        sll2.extend_from_slice(&ip);
        assert_eq!(strip_link(dlt::LINUX_SLL2, &sll2), Some(&ip[..]));
        sll2[10] = PACKET_OUTGOING as u8;
        assert_eq!(
            strip_link(dlt::LINUX_SLL2, &sll2),
            None,
            "our own outgoing frames are skipped"
        );
        let mut sll = vec![0, 0, 0, 1, 0, 6, 0, 0, 0, 0, 0, 0, 0, 0, 0x86, 0xdd];
        let mut v6 = vec![0x60u8];
        v6.extend_from_slice(&[0; 39]);
        sll.extend_from_slice(&v6);
        assert_eq!(strip_link(dlt::LINUX_SLL, &sll), Some(&v6[..]));
        assert_eq!(strip_link(dlt::RAW_LINUX, &ip), Some(&ip[..]));
        assert_eq!(strip_link(dlt::EN10MB, &[0u8; 13]), None);
        assert_eq!(strip_link(dlt::EN10MB, &[0u8; 20]), None, "not IP");
        assert_eq!(strip_link(dlt::RAW, &[0x30u8; 20]), None, "bad version");
    }

    #[test]
    fn strips_qinq_cooked_raw_and_loopback() {
        let ip = ipv4_tcp([198, 18, 10, 2], [198, 18, 10, 1], 80);
        // 802.1ad outer tag + 802.1Q inner tag.
        let mut qinq = vec![0u8; 12];
        qinq.extend_from_slice(&[0x88, 0xa8, 0, 200, 0x81, 0x00, 0, 5, 0x08, 0x00]);
        qinq.extend_from_slice(&ip);
        assert_eq!(strip_link(dlt::EN10MB, &qinq), Some(&ip[..]));
        // Truncated inside the second tag, and a tag hiding something that is not IP.
        assert_eq!(strip_link(dlt::EN10MB, &qinq[..20]), None);
        qinq[20..22].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(strip_link(dlt::EN10MB, &qinq), None, "ARP inside tags");
        // Ethertype IPv4, but the header behind it is not IP (version 0).
        let mut eth = vec![0u8; 12];
        eth.extend_from_slice(&[0x08, 0x00]);
        eth.extend_from_slice(&[0u8; 40]);
        assert_eq!(strip_link(dlt::EN10MB, &eth), None, "bad version");
        // SLL: incoming is kept, outgoing skipped, truncated header refused.
        let mut sll = vec![0, 0, 0, 1, 0, 6, 0, 0, 0, 0, 0, 0, 0, 0, 0x08, 0x00];
        sll.extend_from_slice(&ip);
        assert_eq!(strip_link(dlt::LINUX_SLL, &sll), Some(&ip[..]));
        sll[1] = PACKET_OUTGOING as u8;
        assert_eq!(strip_link(dlt::LINUX_SLL, &sll), None, "outgoing: skipped");
        assert_eq!(strip_link(dlt::LINUX_SLL, &sll[..15]), None);
        // SLL2 truncated.
        let mut sll2 = vec![0x86, 0xdd, 0, 0, 0, 0, 0, 2, 0, 1, 0, 6];
        sll2.extend_from_slice(&[0; 7]);
        assert_eq!(strip_link(dlt::LINUX_SLL2, &sll2), None);
        // Raw IP under every DLT that means it; an empty frame.
        for d in [dlt::RAW, dlt::RAW_LINUX, dlt::RAW_BSD, dlt::IPV4] {
            assert_eq!(strip_link(d, &ip), Some(&ip[..]), "DLT {d}");
        }
        assert_eq!(strip_link(dlt::RAW_LINUX, &[]), None);
        // BSD loopback: 4-byte address family first.
        let mut null = vec![2, 0, 0, 0];
        null.extend_from_slice(&ip);
        assert_eq!(strip_link(dlt::NULL, &null), Some(&ip[..]));
        assert_eq!(strip_link(dlt::LOOP, &null), Some(&ip[..]));
        assert_eq!(strip_link(dlt::NULL, &null[..3]), None);
        // A link type we do not read.
        assert_eq!(strip_link(147, &ip), None);
    }

    #[test]
    fn supported_dlts_are_the_ones_stripped() {
        let ip = ipv4_tcp([198, 18, 10, 2], [198, 18, 10, 1], 80);
        for d in -1..300 {
            // A frame of that DLT carrying `ip`, where we know how to build one.
            let frame: Vec<u8> = match d {
                dlt::EN10MB => [&[0u8; 12][..], &[0x08, 0x00], &ip].concat(),
                dlt::LINUX_SLL => [&[0u8; 14][..], &[0x08, 0x00], &ip].concat(),
                dlt::LINUX_SLL2 => [&[0x08, 0x00][..], &[0u8; 18], &ip].concat(),
                dlt::NULL | dlt::LOOP => [&[2u8, 0, 0, 0][..], &ip].concat(),
                _ => ip.clone(),
            };
            assert_eq!(strip_link(d, &frame).is_some(), supported_dlt(d), "DLT {d}");
        }
    }

    #[test]
    fn ship_keeps_collecting_while_the_engine_is_behind_within_the_limit() {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let pool = BatchPool::new(4);
        let stop = AtomicBool::new(false);
        let wake = Wake::new().unwrap();
        let mut b = Batch::default();
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

    /// Runs `run_offline` on `path` with `filter` and returns the packets handed over and the
    /// result.
    fn offline(path: &Path, filter: &str) -> (Vec<Vec<u8>>, Result<()>, Arc<Counters>) {
        let (tx, rx) = crossbeam_channel::unbounded();
        let pool = BatchPool::new(4);
        let counters = Arc::new(Counters::default());
        let r = run_offline(
            path,
            filter,
            1000.0,
            tx,
            Arc::new(Wake::new().unwrap()),
            pool,
            counters.clone(),
            Arc::new(AtomicBool::new(false)),
        );
        let pkts = rx
            .try_iter()
            .flat_map(|b: Batch| b.iter().map(|(_, p)| p.to_vec()).collect::<Vec<_>>())
            .collect();
        (pkts, r, counters)
    }

    #[test]
    fn offline_reads_the_file_through_the_filter_in_order() {
        let pcap = Path::new(env!("CARGO_MANIFEST_DIR")).join("../pcaps/redis.pcap");
        let (pkts, r, c) = offline(&pcap, "tcp and dst port 6379");
        r.unwrap();
        // tshark -r pcaps/redis.pcap -Y tcp.dstport==6379 | wc -l
        assert_eq!(pkts.len(), 438);
        assert_eq!(Counters::get(&c.captured_frames), 438);
        assert!(pkts
            .iter()
            .all(|p| p[0] >> 4 == 4 && p[22..24] == 6379u16.to_be_bytes()));
    }

    #[test]
    fn offline_cut_file_keeps_what_was_read_and_names_the_offset() {
        let pcap = Path::new(env!("CARGO_MANIFEST_DIR")).join("../pcaps/redis.pcap");
        let data = std::fs::read(&pcap).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let cut = dir.path().join("cut.pcap");
        std::fs::write(&cut, &data[..data.len() / 2]).unwrap();
        let (pkts, r, _) = offline(&cut, "tcp");
        let e = format!("{:#}", r.unwrap_err());
        assert!(
            e.contains("--offline") && e.contains("cut short at byte"),
            "{e}"
        );
        assert!(!pkts.is_empty(), "packets before the cut were handed over");
        let junk = dir.path().join("junk.pcap");
        std::fs::write(&junk, b"not a capture at all").unwrap();
        let (_, r, _) = offline(&junk, "tcp");
        assert!(format!("{:#}", r.unwrap_err()).contains("--offline"));
    }

    #[test]
    fn batch_iterates_in_order() {
        let mut b = Batch::default();
        b.push(1, b"ab");
        b.push(2, b"cde");
        let v: Vec<_> = b.iter().collect();
        assert_eq!(v, vec![(1, &b"ab"[..]), (2, &b"cde"[..])]);
    }
}
