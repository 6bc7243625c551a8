//! The default capture: each worker's own TPACKET_V3 ring per device, read in place, the
//! devices' rings of all workers in one fanout group (by flow hash, so a session stays on one
//! worker), and opened again when a named device is deleted and re-created.

use super::{compile_for_ring, ip_version_ok};
use anyhow::{Context, Result};
use std::sync::{Arc, Mutex};
use tracing::debug;

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
    /// Whether the rings ask the kernel to skip this host's outgoing frames (not with a
    /// report: production's answers are among them, see [`super::ring_filter`]).
    ignore_outgoing: bool,
    /// The index the newest rings are bound to and their fanout group: the first worker to see
    /// a new index opens a new group, the others join it (a group's members must share one
    /// device, so the old group cannot be joined).
    current: Mutex<(u32, Option<u16>)>,
}

impl LiveRing {
    /// The ring's block timeout: the kernel hands a block over at most this long after its
    /// first frame.
    pub fn block_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(u64::from(self.spec.retire_ms.max(1)))
    }

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
            frame_size: None,
            filter: &spec.filter,
            fanout,
            ignore_outgoing: spec.ignore_outgoing,
        })
        .with_context(|| format!("-i/--interface: cannot capture on `{}` again", self.name))?;
        *current = (now, ring.fanout_id());
        self.ring = ring;
        self.ifindex = now;
        Ok(true)
    }
}

/// Block size for a ring of `bytes`: a power of two from 128 KiB to 1 MiB, small enough that
/// the ring has some 4,000 blocks where it can. Under a steady trickle the kernel retires a
/// block per timeout however little it holds, so the number of blocks, not their size, sets
/// how long a worker may fall behind before the kernel drops: 2,048 blocks of 1 ms (the default
/// 256 MB) are two seconds. 128 KiB still holds two of the largest GRO frames a veth or NIC
/// makes (45 segments of 1,448 bytes and their headers).
///
/// It wastes room on some uploads: the kernel starts a new block when the next frame does not
/// fit, and a 64 KB request that comes as one such frame and a few hundred bytes leaves too
/// little for the next request's (redis SETs of 64 KB: one per block, 2,997 blocks filled for
/// 197 MB). Blocks of 256 KiB hold three, but a default ring of them has half the blocks: a
/// worker that fell a second behind on short connections (a lossy target, 28,000
/// connections/s) overflowed it, where 2,048 blocks held.
pub fn ring_block_size(bytes: usize) -> usize {
    let per = (bytes / 4096).max(1);
    let pow = if per.is_power_of_two() {
        per
    } else {
        per.next_power_of_two() / 2
    };
    pow.clamp(128 << 10, 1 << 20)
}

/// Opens `workers` rings on every device, each device's rings in one fanout group, `ring_bytes`
/// per device shared among the workers. `outgoing`: keep this host's outgoing frames (the
/// report on; `filter` is then [`super::ring_filter`], which lets only production's answers
/// through among them); without it the kernel skips them. The fanout's hash is symmetric
/// (computed from the addresses and ports, whatever the frame's direction), so both
/// directions of a connection reach one worker. Returns the rings per worker.
pub fn open_rings(
    devices: &[String],
    filter: &str,
    ring_bytes: usize,
    workers: usize,
    retire_ms: u32,
    outgoing: bool,
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
            ignore_outgoing: !outgoing,
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
                frame_size: None,
                filter: &prog,
                fanout,
                ignore_outgoing: !outgoing,
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

/// The IP packet of a ring frame and whether this host sent it, or why it is skipped.
/// `outgoing`: the ring keeps outgoing frames (the report on: they are production's answers,
/// for [`crate::engine::Engine::handle_production_captured`], never client data); without it
/// they are skipped (kernels before 4.20 deliver them despite `PACKET_IGNORE_OUTGOING`).
pub fn ring_ip<'a>(
    f: &tcpclone::capture::tpacket::RingFrame<'a>,
    outgoing: bool,
) -> Result<(&'a [u8], bool), Skip> {
    use tcpclone::capture::tpacket::PACKET_OUTGOING;
    let sent_here = f.pkt_type == PACKET_OUTGOING;
    if (sent_here && !outgoing) || !f.protocol.is_ip() || !ip_version_ok(f.data) {
        return Err(Skip::NotIp);
    }
    if f.truncated() {
        return Err(Skip::Truncated);
    }
    Ok((f.data, sent_here))
}

/// Why a captured frame does not reach the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// Not IP, or this host's own output.
    NotIp,
    /// Cut short by the ring.
    Truncated,
}

#[cfg(test)]
mod tests {
    use super::ring_block_size;
    use tcpclone::capture::tpacket::{BLOCK_HEADER_LEN, FRAME_HEADER_LEN, SOCKADDR_LL_LEN};

    #[test]
    fn the_default_ring_has_two_seconds_of_blocks_and_large_rings_larger_blocks() {
        let mib = 1usize << 20;
        assert_eq!(ring_block_size(256 * mib), 128 << 10);
        assert_eq!((256 * mib) / ring_block_size(256 * mib), 2048);
        assert_eq!(ring_block_size(mib), 128 << 10);
        assert_eq!(ring_block_size(1024 * mib), 256 << 10);
        assert_eq!(ring_block_size(3000 * mib), 512 << 10);
        assert_eq!(ring_block_size(64 * 1024 * mib), 1 << 20);
    }

    #[test]
    fn a_smallest_block_holds_two_of_the_largest_gro_frames() {
        // Where the kernel puts an Ethernet frame in a TPACKET_V3 block (af_packet.c): the
        // network header on a 16-byte boundary after the frame header and the link-layer
        // address, each frame's start on an 8-byte boundary after the block header.
        let align = |n: usize, a: usize| n.div_ceil(a) * a;
        let hdr = FRAME_HEADER_LEN + SOCKADDR_LL_LEN;
        let macoff = align(hdr + 16, 16) - 14;
        let ip_len = 20 + 32 + 45 * 1448; // GRO stops below 64 KiB
        let frame = align(macoff + 14 + ip_len, 8);
        assert!(BLOCK_HEADER_LEN + 2 * frame < ring_block_size(1));
    }

    #[test]
    fn a_smallest_block_holds_one_64k_request_and_256k_three() {
        // A 64 KiB request (a redis SET of 64 KB: 65,583 bytes) comes as a GRO frame of 45
        // segments and one of the rest; a 128 KiB block misses the second request's large
        // frame by a few hundred bytes.
        let align = |n: usize, a: usize| n.div_ceil(a) * a;
        let hdr = FRAME_HEADER_LEN + SOCKADDR_LL_LEN;
        let macoff = align(hdr + 16, 16) - 14;
        let frame = |payload: usize| align(macoff + 14 + 20 + 32 + payload, 8);
        let request = frame(45 * 1448) + frame(65_583 - 45 * 1448);
        let fits = |block: usize| (block - BLOCK_HEADER_LEN) / request;
        // (The last request's small frame may start the next block: a slight overestimate.)
        assert_eq!(fits(128 << 10), 1);
        assert_eq!(fits(ring_block_size(256 << 20)), 1);
        assert_eq!(fits(256 << 10), 3);
        assert!(BLOCK_HEADER_LEN + request + frame(45 * 1448) > 128 << 10);
    }
}
