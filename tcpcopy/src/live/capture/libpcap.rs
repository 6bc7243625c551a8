//! `--capture pcap`: libpcap on a thread per device (immediate mode, or TPACKET_V3 blocks with
//! `--capture-block MS`), its packets copied into batches for the worker. Kept for devices and
//! kernels where the ring cannot serve; the ring is the default.

use super::copied::{ship, CopiedBatch, CopiedBatchPool};
use super::{strip_link, supported_dlt};
use crate::live::counters::Counters;
use crate::live::sys;
use anyhow::{anyhow, Context, Result};
use crossbeam_channel::Sender;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tcpclone::sys::ring::Wake;
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
/// How often a capture thread reads pcap's kernel drop counters.
const STATS_EVERY: Duration = Duration::from_millis(500);

fn ts_ns(h: &pcap::PacketHeader, nano: bool) -> u64 {
    let sub = h.ts.tv_usec as u64;
    (h.ts.tv_sec as u64) * 1_000_000_000 + if nano { sub } else { sub * 1000 }
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
    tx: Sender<CopiedBatch>,
    wake: Arc<Wake>,
    pool: CopiedBatchPool,
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
