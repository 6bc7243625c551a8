//! Views over the blocks of a Linux `TPACKET_V3` capture ring (linux/if_packet.h), read in
//! place: the kernel hands a whole block of frames to user space at once, and the frames are
//! borrowed from it until the block goes back ([`crate::sys::ring`] does the mapping and the
//! hand-back; this module only reads bytes). [`frame_v2`] reads one frame of a `TPACKET_V2`
//! ring, which the kernel hands over frame by frame.
//!
//! The ring is written by the kernel in host byte order, except the link-level protocol of
//! `sockaddr_ll`, which is big-endian. Everything is bounds-checked: a corrupt block gives
//! [`TpacketError`], never a panic or a read outside the block.
//!
//! Must never: write to the block, or keep a frame beyond the borrow of its block.

use crate::wire::EtherType;

/// `struct tpacket_block_desc` with `tpacket_hdr_v1`: 48 bytes.
pub const BLOCK_HEADER_LEN: usize = 48;
/// `struct tpacket3_hdr`: 48 bytes (already a multiple of `TPACKET_ALIGNMENT`, 16).
pub const FRAME_HEADER_LEN: usize = 48;
/// `struct sockaddr_ll`, which follows the frame header in `SOCK_DGRAM` and `SOCK_RAW` rings.
pub const SOCKADDR_LL_LEN: usize = 20;
/// `struct tpacket2_hdr` (a `TPACKET_V2` frame's header): 32 bytes, already aligned.
pub const FRAME2_HEADER_LEN: usize = 32;
/// `TP_STATUS_USER` (linux/if_packet.h): the block belongs to user space.
pub const TP_STATUS_USER: u32 = 1;
/// `TP_STATUS_KERNEL`: the block belongs to the kernel.
pub const TP_STATUS_KERNEL: u32 = 0;
/// `TP_STATUS_LOSING`: the kernel dropped packets (the ring was full) since its drop counter
/// was last read (`PACKET_STATISTICS`) before it handed this block or frame over.
pub const TP_STATUS_LOSING: u32 = 1 << 2;
/// `TP_STATUS_BLK_TMO`: the block was retired by its timeout rather than by being full.
pub const TP_STATUS_BLK_TMO: u32 = 1 << 5;
/// `PACKET_OUTGOING` (linux/if_packet.h): a frame this host sent.
pub const PACKET_OUTGOING: u8 = 4;

/// A malformed block: what is wrong and where (byte offset in the block).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TpacketError {
    /// The block is shorter than its header or than the length it claims.
    #[error("tpacket block: {0} bytes, shorter than its header or its own length")]
    ShortBlock(usize),
    /// A frame header or its data lies outside the block.
    #[error("tpacket block: frame at byte {0} runs past the end of the block")]
    FrameOutOfBounds(usize),
    /// A frame's next offset does not move forward (the walk would loop).
    #[error("tpacket block: frame at byte {0} has a next offset that does not advance")]
    BadNextOffset(usize),
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

/// One retired block of a `TPACKET_V3` ring, checked once.
#[derive(Debug, Clone, Copy)]
pub struct BlockView<'a> {
    bytes: &'a [u8],
    num_pkts: u32,
    first: usize,
}

impl<'a> BlockView<'a> {
    /// Checks the block header (the frames are checked as they are walked).
    pub fn new_checked(bytes: &'a [u8]) -> Result<Self, TpacketError> {
        let short = TpacketError::ShortBlock(bytes.len());
        if bytes.len() < BLOCK_HEADER_LEN {
            return Err(short);
        }
        let num_pkts = u32_at(bytes, 12).ok_or(short)?;
        let first = u32_at(bytes, 16).ok_or(short)? as usize;
        let blk_len = u32_at(bytes, 20).ok_or(short)? as usize;
        if blk_len > bytes.len() {
            return Err(short);
        }
        Ok(BlockView {
            bytes: &bytes[..blk_len.max(BLOCK_HEADER_LEN)],
            num_pkts,
            first,
        })
    }

    /// `block_status` (`TP_STATUS_*` bits).
    pub fn status(&self) -> u32 {
        u32_at(self.bytes, 8).unwrap_or(0)
    }

    /// Number of frames the kernel says the block holds.
    pub fn num_pkts(&self) -> u32 {
        self.num_pkts
    }

    /// The block's sequence number (increases by one per retired block).
    pub fn seq_num(&self) -> u64 {
        self.bytes
            .get(24..32)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_ne_bytes)
            .unwrap_or(0)
    }

    /// The frames in order; a malformed frame ends the walk with its error.
    pub fn frames(&self) -> Frames<'a> {
        Frames {
            bytes: self.bytes,
            at: self.first,
            left: self.num_pkts,
            bad_next: None,
        }
    }
}

/// One captured frame, borrowed from its block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingFrame<'a> {
    /// Capture time, ns since the Unix epoch (the ring is asked for ns stamps).
    pub ts_ns: u64,
    /// Length on the wire (may exceed `data` when the block could not hold it all).
    pub wire_len: u32,
    /// `sll_pkttype`: `PACKET_HOST`, `PACKET_OUTGOING`, ...
    pub pkt_type: u8,
    /// `sll_protocol`: the link-level protocol of what `data` holds.
    pub protocol: EtherType,
    /// `sll_ifindex`: the device the frame was seen on.
    pub ifindex: i32,
    /// The captured bytes from the network header on (`SOCK_DGRAM` rings) or the link header on
    /// (`SOCK_RAW` rings).
    pub data: &'a [u8],
}

impl RingFrame<'_> {
    /// Whether the kernel cut the frame short.
    pub fn truncated(&self) -> bool {
        (self.data.len() as u64) < u64::from(self.wire_len)
    }
}

/// One frame of a `TPACKET_V2` ring (its slot: header, `sockaddr_ll`, data), checked.
pub fn frame_v2(slot: &[u8]) -> Result<RingFrame<'_>, TpacketError> {
    let oob = TpacketError::FrameOutOfBounds(0);
    let hdr = slot.get(..FRAME2_HEADER_LEN + SOCKADDR_LL_LEN).ok_or(oob)?;
    let wire_len = u32_at(hdr, 4).ok_or(oob)?;
    let snaplen = u32_at(hdr, 8).ok_or(oob)? as usize;
    let mac = usize::from(u16_at(hdr, 12).ok_or(oob)?);
    let net = usize::from(u16_at(hdr, 14).ok_or(oob)?);
    let sec = u64::from(u32_at(hdr, 16).ok_or(oob)?);
    let nsec = u64::from(u32_at(hdr, 20).ok_or(oob)?);
    let ll = &hdr[FRAME2_HEADER_LEN..];
    let start = mac.min(net).max(FRAME2_HEADER_LEN + SOCKADDR_LL_LEN);
    let data = slot.get(start..start + snaplen).ok_or(oob)?;
    Ok(RingFrame {
        ts_ns: sec * 1_000_000_000 + nsec,
        wire_len,
        pkt_type: ll[10],
        protocol: EtherType(u16::from_be_bytes([ll[2], ll[3]])),
        ifindex: i32::from_ne_bytes([ll[4], ll[5], ll[6], ll[7]]),
        data,
    })
}

/// Iterator over the frames of a [`BlockView`].
#[derive(Debug, Clone)]
pub struct Frames<'a> {
    bytes: &'a [u8],
    at: usize,
    left: u32,
    bad_next: Option<usize>,
}

impl<'a> Frames<'a> {
    fn frame(&self) -> Result<(RingFrame<'a>, u32), TpacketError> {
        let b = self.bytes;
        let at = self.at;
        let oob = TpacketError::FrameOutOfBounds(at);
        let hdr = b
            .get(at..at + FRAME_HEADER_LEN + SOCKADDR_LL_LEN)
            .ok_or(oob)?;
        let next = u32_at(hdr, 0).ok_or(oob)?;
        let sec = u64::from(u32_at(hdr, 4).ok_or(oob)?);
        let nsec = u64::from(u32_at(hdr, 8).ok_or(oob)?);
        let snaplen = u32_at(hdr, 12).ok_or(oob)? as usize;
        let wire_len = u32_at(hdr, 16).ok_or(oob)?;
        let mac = usize::from(u16_at(hdr, 24).ok_or(oob)?);
        let net = usize::from(u16_at(hdr, 26).ok_or(oob)?);
        let ll = &hdr[FRAME_HEADER_LEN..];
        let protocol = EtherType(u16::from_be_bytes([ll[2], ll[3]]));
        let ifindex = i32::from_ne_bytes([ll[4], ll[5], ll[6], ll[7]]);
        let pkt_type = ll[10];
        // tp_mac is where the captured bytes start (for SOCK_DGRAM it equals tp_net).
        let start = at + mac.min(net).max(FRAME_HEADER_LEN + SOCKADDR_LL_LEN);
        let data = b.get(start..start + snaplen).ok_or(oob)?;
        Ok((
            RingFrame {
                ts_ns: sec * 1_000_000_000 + nsec,
                wire_len,
                pkt_type,
                protocol,
                ifindex,
                data,
            },
            next,
        ))
    }
}

impl<'a> Iterator for Frames<'a> {
    type Item = Result<RingFrame<'a>, TpacketError>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(at) = self.bad_next.take() {
            self.left = 0;
            return Some(Err(TpacketError::BadNextOffset(at)));
        }
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        match self.frame() {
            Ok((f, next)) => {
                if self.left > 0 {
                    if next == 0 {
                        // Frames are claimed but the walk cannot reach them: this frame is
                        // good, the next call reports the fault.
                        self.bad_next = Some(self.at);
                    }
                    self.at += next as usize;
                }
                Some(Ok(f))
            }
            Err(e) => {
                self.left = 0;
                Some(Err(e))
            }
        }
    }
}

/// Builds a block as the kernel lays it out, for tests of code that reads rings.
pub mod build {
    use super::*;

    /// A `SOCK_DGRAM` block holding `frames` (timestamp ns, pkt_type, ethertype, bytes).
    pub fn block(frames: &[(u64, u8, u16, &[u8])]) -> Vec<u8> {
        let mut b = vec![0u8; BLOCK_HEADER_LEN];
        b[0..4].copy_from_slice(&3u32.to_ne_bytes()); // version: TPACKET_V3 block descriptor
        b[8..12].copy_from_slice(&TP_STATUS_USER.to_ne_bytes());
        b[12..16].copy_from_slice(&(frames.len() as u32).to_ne_bytes());
        b[16..20].copy_from_slice(&(BLOCK_HEADER_LEN as u32).to_ne_bytes());
        let mut starts = Vec::new();
        for &(ts, ty, proto, data) in frames {
            let at = b.len();
            starts.push(at);
            let mut h = vec![0u8; FRAME_HEADER_LEN + SOCKADDR_LL_LEN];
            h[4..8].copy_from_slice(&((ts / 1_000_000_000) as u32).to_ne_bytes());
            h[8..12].copy_from_slice(&((ts % 1_000_000_000) as u32).to_ne_bytes());
            h[12..16].copy_from_slice(&(data.len() as u32).to_ne_bytes());
            h[16..20].copy_from_slice(&(data.len() as u32).to_ne_bytes());
            // Data 16-aligned after the sockaddr_ll, as TPACKET_ALIGN does.
            let off = (FRAME_HEADER_LEN + SOCKADDR_LL_LEN).next_multiple_of(16) as u16;
            h[24..26].copy_from_slice(&off.to_ne_bytes());
            h[26..28].copy_from_slice(&off.to_ne_bytes());
            let ll = FRAME_HEADER_LEN;
            h[ll..ll + 2].copy_from_slice(&17u16.to_ne_bytes()); // AF_PACKET
            h[ll + 2..ll + 4].copy_from_slice(&proto.to_be_bytes());
            h[ll + 4..ll + 8].copy_from_slice(&2i32.to_ne_bytes());
            h[ll + 10] = ty;
            h.resize(usize::from(off), 0);
            b.extend_from_slice(&h);
            b.extend_from_slice(data);
            b.resize(b.len().next_multiple_of(16), 0);
        }
        for (i, &at) in starts.iter().enumerate() {
            let next = starts.get(i + 1).map_or(0, |&n| (n - at) as u32);
            b[at..at + 4].copy_from_slice(&next.to_ne_bytes());
        }
        let len = b.len() as u32;
        b[20..24].copy_from_slice(&len.to_ne_bytes());
        b
    }

    /// A `SOCK_DGRAM` `TPACKET_V2` frame slot of `slot` bytes holding `data` (cut to fit),
    /// handed to user space; the data where the kernel puts it (`TPACKET_ALIGN(52) + 16`).
    pub fn frame_v2(slot: usize, ts: u64, ty: u8, proto: u16, data: &[u8]) -> Vec<u8> {
        let off = (FRAME2_HEADER_LEN + SOCKADDR_LL_LEN).next_multiple_of(16) + 16;
        let mut b = vec![0u8; slot.max(off)];
        let kept = data.len().min(b.len() - off);
        b[0..4].copy_from_slice(&TP_STATUS_USER.to_ne_bytes());
        b[4..8].copy_from_slice(&(data.len() as u32).to_ne_bytes());
        b[8..12].copy_from_slice(&(kept as u32).to_ne_bytes());
        b[12..14].copy_from_slice(&(off as u16).to_ne_bytes());
        b[14..16].copy_from_slice(&(off as u16).to_ne_bytes());
        b[16..20].copy_from_slice(&((ts / 1_000_000_000) as u32).to_ne_bytes());
        b[20..24].copy_from_slice(&((ts % 1_000_000_000) as u32).to_ne_bytes());
        let ll = FRAME2_HEADER_LEN;
        b[ll..ll + 2].copy_from_slice(&17u16.to_ne_bytes()); // AF_PACKET
        b[ll + 2..ll + 4].copy_from_slice(&proto.to_be_bytes());
        b[ll + 4..ll + 8].copy_from_slice(&2i32.to_ne_bytes());
        b[ll + 10] = ty;
        b[off..off + kept].copy_from_slice(&data[..kept]);
        b
    }
}

#[cfg(test)]
mod tests {
    use super::build::block;
    use super::*;

    const IP: [u8; 20] = [
        0x45, 0, 0, 20, 0, 0, 0, 0, 64, 6, 0, 0, 198, 18, 10, 2, 198, 18, 10, 1,
    ];

    #[test]
    fn walks_frames_in_order() {
        let b = block(&[
            (1_500_000_000_123, 0, 0x0800, &IP),
            (1_500_000_001_000, PACKET_OUTGOING, 0x86dd, &IP[..10]),
        ]);
        let v = BlockView::new_checked(&b).unwrap();
        assert_eq!(v.num_pkts(), 2);
        assert_eq!(v.status() & TP_STATUS_USER, TP_STATUS_USER);
        let f: Vec<_> = v.frames().collect::<Result<_, _>>().unwrap();
        assert_eq!(f.len(), 2);
        assert_eq!(f[0].ts_ns, 1_500_000_000_123);
        assert_eq!(f[0].data, &IP[..]);
        assert_eq!(f[0].protocol, EtherType::IPV4);
        assert_eq!(f[0].ifindex, 2);
        assert!(!f[0].truncated());
        assert_eq!(f[1].pkt_type, PACKET_OUTGOING);
        assert_eq!(f[1].protocol, EtherType::IPV6);
        assert_eq!(f[1].data, &IP[..10]);
    }

    #[test]
    fn a_v2_frame_reads_like_a_block_frame_and_a_bad_slot_is_an_error() {
        let slot = super::build::frame_v2(128, 1_500_000_000_123, PACKET_OUTGOING, 0x0800, &IP);
        let f = frame_v2(&slot).unwrap();
        assert_eq!(f.ts_ns, 1_500_000_000_123);
        assert_eq!(f.data, &IP[..]);
        assert_eq!(
            (f.protocol, f.ifindex, f.pkt_type),
            (EtherType::IPV4, 2, PACKET_OUTGOING)
        );
        assert!(!f.truncated());
        // Cut to the slot: 96 bytes leave 16 of data.
        let cut = super::build::frame_v2(96, 1, 0, 0x0800, &IP);
        assert!(frame_v2(&cut).unwrap().truncated());
        // A snap length past the slot, and every prefix: errors, never panics.
        let mut bad = slot.clone();
        bad[8..12].copy_from_slice(&10_000u32.to_ne_bytes());
        assert_eq!(frame_v2(&bad), Err(TpacketError::FrameOutOfBounds(0)));
        for n in 0..slot.len() {
            let _ = frame_v2(&slot[..n]);
        }
    }

    #[test]
    fn corrupt_blocks_are_errors_not_panics() {
        assert_eq!(
            BlockView::new_checked(&[0u8; 10]).unwrap_err(),
            TpacketError::ShortBlock(10)
        );
        let mut b = block(&[(1, 0, 0x0800, &IP), (2, 0, 0x0800, &IP)]);
        // A next offset of zero with frames left would loop.
        b[BLOCK_HEADER_LEN..BLOCK_HEADER_LEN + 4].copy_from_slice(&0u32.to_ne_bytes());
        let v = BlockView::new_checked(&b).unwrap();
        let r: Vec<_> = v.frames().collect();
        assert!(r[0].is_ok());
        assert!(matches!(r[1], Err(TpacketError::BadNextOffset(_))));
        assert_eq!(r.len(), 2);
        // A snap length past the end of the block.
        let mut b = block(&[(1, 0, 0x0800, &IP)]);
        let at = BLOCK_HEADER_LEN + 12;
        b[at..at + 4].copy_from_slice(&10_000u32.to_ne_bytes());
        let v = BlockView::new_checked(&b).unwrap();
        assert!(matches!(
            v.frames().next(),
            Some(Err(TpacketError::FrameOutOfBounds(_)))
        ));
        // More frames claimed than present.
        let mut b = block(&[(1, 0, 0x0800, &IP)]);
        b[12..16].copy_from_slice(&5u32.to_ne_bytes());
        let v = BlockView::new_checked(&b).unwrap();
        assert_eq!(v.frames().filter(|f| f.is_ok()).count(), 1);
        // Every prefix of a good block, and every byte flipped, still never panics.
        let good = block(&[(1, 0, 0x0800, &IP), (2, 4, 0x86dd, &IP)]);
        for n in 0..good.len() {
            crate::fuzz::tpacket_block(&good[..n]);
        }
        for i in 0..good.len() {
            let mut b = good.clone();
            b[i] ^= 0xff;
            crate::fuzz::tpacket_block(&b);
        }
    }
}
