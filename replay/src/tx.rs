//! What the AF_PACKET sender decides, apart from the system calls it makes ([`crate::sys`]):
//! which frames fit the interface (the MTU check), how the TX ring is shaped, and what a failed
//! send does next (the retry policy and its counters). Safe and pure: tests drive it directly.

use std::time::Duration;
use tcpclone::stats::ReplayStats;

/// Frames per kick at top speed (and per `sendmmsg` batch).
pub const TOP_SPEED_BATCH: usize = 256;

/// Largest frame an interface takes without a VLAN tag: its MTU plus the Ethernet header on
/// an Ethernet interface (`hw_type` ARPHRD_ETHER, 1), nothing on the others (raw IP, tun).
pub fn max_frame(mtu: u32, hw_type: u16) -> usize {
    let link_header = if hw_type == 1 { 14 } else { 0 };
    mtu as usize + link_header
}

/// Whether `data` is larger than the interface takes: `max_frame`, plus 4 bytes when the frame
/// carries an 802.1Q/802.1ad tag (the tag is not part of the MTU).
pub fn too_large(data: &[u8], max_frame: usize) -> bool {
    let tagged =
        data.len() >= 14 && matches!(u16::from_be_bytes([data[12], data[13]]), 0x8100 | 0x88a8);
    data.len() > max_frame + if tagged { 4 } else { 0 }
}

/// The shape of a PACKET_TX_RING (`struct tpacket_req`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingGeometry {
    /// Bytes per frame slot (a power of two, at least 2 KiB).
    pub frame_size: usize,
    /// Bytes per block (at least 64 KiB, whole frames).
    pub block_size: usize,
    /// Blocks (about 4 MiB in all, at least 2).
    pub block_nr: usize,
    /// Frame slots in the ring.
    pub frame_nr: usize,
}

impl RingGeometry {
    /// A ring whose slots hold `largest` bytes of frame after `header` bytes (the TPACKET_V2
    /// header and the optional virtio_net_hdr).
    pub fn for_frames(largest: usize, header: usize) -> Self {
        let frame_size = (header + largest).next_power_of_two().max(2048);
        let block_size = frame_size.max(1 << 16);
        let block_nr = ((4usize << 20) / block_size).max(2);
        RingGeometry {
            frame_size,
            block_size,
            block_nr,
            frame_nr: block_nr * (block_size / frame_size),
        }
    }

    /// Bytes to map.
    pub fn map_len(&self) -> usize {
        self.block_size * self.block_nr
    }
}

/// What to do after a send (or kick) failed with `errno`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Interrupted by a signal: try again at once, not counted.
    Now,
    /// ENOBUFS: the device queue is full; sleep this long, then try again.
    Sleep(Duration),
    /// EAGAIN: the socket buffer is full; wait up to this many ms for it to drain, then retry.
    PollWritable(i32),
    /// Anything else: the send failed.
    Fail,
}

/// The retry policy: a full queue or buffer is waited out, never a reason to drop a frame.
pub fn on_send_error(errno: Option<i32>) -> Retry {
    match errno {
        Some(libc::EINTR) => Retry::Now,
        // Short: the qdisc drains in microseconds, and the packets behind wait on this one.
        Some(libc::ENOBUFS) => Retry::Sleep(Duration::from_micros(20)),
        Some(libc::EAGAIN) => Retry::PollWritable(10),
        _ => Retry::Fail,
    }
}

/// Retries counted since the summary last took them, by cause.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RetryCounts {
    /// The TX ring had no free slot.
    pub ring_full: u64,
    /// ENOBUFS.
    pub enobufs: u64,
    /// EAGAIN.
    pub eagain: u64,
}

impl RetryCounts {
    /// Counts `r` (the interrupted and the failed are not retries to report).
    pub fn count(&mut self, r: Retry) {
        match r {
            Retry::Sleep(_) => self.enobufs += 1,
            Retry::PollWritable(_) => self.eagain += 1,
            Retry::Now | Retry::Fail => {}
        }
    }

    /// Moves the counts into the run's statistics, under the names the summary prints.
    pub fn drain_into(&mut self, stats: &mut ReplayStats) {
        let c = std::mem::take(self);
        stats.retried.add("TX ring full", c.ring_full);
        stats.retried.add("ENOBUFS", c.enobufs);
        stats.retried.add("EAGAIN", c.eagain);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mtu_check_allows_a_vlan_tag_and_only_that() {
        let m = max_frame(1500, 1);
        assert_eq!(m, 1514);
        assert_eq!(
            max_frame(1500, 65534),
            1500,
            "no link header on a tun device"
        );
        let mut f = vec![0u8; 1514];
        assert!(!too_large(&f, m));
        f.push(0);
        assert!(too_large(&f, m), "one byte over, untagged");
        let mut tagged = vec![0u8; 1518];
        tagged[12..14].copy_from_slice(&[0x81, 0x00]);
        assert!(!too_large(&tagged, m));
        tagged.push(0);
        assert!(too_large(&tagged, m));
        tagged[12..14].copy_from_slice(&[0x88, 0xa8]);
        tagged.pop();
        assert!(!too_large(&tagged, m), "802.1ad counts as a tag too");
        assert!(
            !too_large(&[0u8; 10], m),
            "shorter than a header: not too large"
        );
    }

    #[test]
    fn ring_geometry_is_whole_slots_of_about_four_mib() {
        let g = RingGeometry::for_frames(1518, 48);
        assert_eq!(g.frame_size, 2048);
        assert_eq!(g.block_size, 65536);
        assert_eq!(g.block_nr, 64);
        assert_eq!(g.frame_nr, 64 * 32);
        assert_eq!(g.map_len(), 4 << 20);
        // Jumbo frames: fewer, larger slots, still at least two blocks.
        let j = RingGeometry::for_frames(65_540, 48);
        assert_eq!(j.frame_size, 131_072);
        assert_eq!(j.block_size, 131_072);
        assert_eq!(j.block_nr, 32);
        assert_eq!(j.frame_nr, 32);
        let huge = RingGeometry::for_frames(4 << 20, 48);
        assert_eq!(huge.block_nr, 2);
    }

    #[test]
    fn full_queues_are_waited_out_and_counted_other_errors_fail() {
        let mut c = RetryCounts::default();
        for e in [
            libc::EINTR,
            libc::ENOBUFS,
            libc::ENOBUFS,
            libc::EAGAIN,
            libc::EPERM,
        ] {
            c.count(on_send_error(Some(e)));
        }
        assert_eq!(on_send_error(Some(libc::EINTR)), Retry::Now);
        assert!(
            matches!(on_send_error(Some(libc::ENOBUFS)), Retry::Sleep(d) if d < Duration::from_millis(1))
        );
        assert_eq!(on_send_error(Some(libc::EAGAIN)), Retry::PollWritable(10));
        assert_eq!(on_send_error(Some(libc::EMSGSIZE)), Retry::Fail);
        assert_eq!(on_send_error(None), Retry::Fail);
        c.ring_full = 3;
        let mut st = ReplayStats::default();
        c.drain_into(&mut st);
        assert_eq!(c, RetryCounts::default(), "taken, not copied");
        let got: Vec<(String, u64)> = st.retried.iter().map(|(r, n)| (r.to_string(), n)).collect();
        for want in [("TX ring full", 3), ("ENOBUFS", 2), ("EAGAIN", 1)] {
            assert!(got.contains(&(want.0.to_string(), want.1)), "{got:?}");
        }
    }
}
