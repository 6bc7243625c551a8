//! TCP segmentation offload for a sender of whole IP packets: the virtio-net header that a packet
//! socket with `PACKET_VNET_HDR` reads before each frame (`struct virtio_net_hdr`, virtio 1.x
//! §5.1.6), the partial checksum the kernel expects of such a super-segment, and the same
//! segmentation done in software for a path that cannot take a super-segment (a raw IP socket).
//!
//! A super-segment is one IPv4 or IPv6 packet carrying TCP whose payload is longer than the
//! session's MSS; the kernel (or the NIC) cuts it into `gso_size` pieces, copying the headers,
//! advancing the sequence number and the IPv4 identification, and filling every checksum. This
//! module never performs I/O and never panics on malformed input.

use super::checksum;
use super::IpProtocol;

/// Bytes of `struct virtio_net_hdr` (without the `num_buffers` field of the mergeable variant).
pub const VNET_HDR_LEN: usize = 10;
/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`: the checksum at `csum_start + csum_offset` is to be finished.
pub const VNET_F_NEEDS_CSUM: u8 = 1;
/// `VIRTIO_NET_HDR_GSO_NONE`.
pub const VNET_GSO_NONE: u8 = 0;
/// `VIRTIO_NET_HDR_GSO_TCPV4`.
pub const VNET_GSO_TCPV4: u8 = 1;
/// `VIRTIO_NET_HDR_GSO_TCPV6`.
pub const VNET_GSO_TCPV6: u8 = 4;
/// Offset of the checksum inside the TCP header (RFC 9293 §3.1).
const TCP_CSUM_OFFSET: u16 = 16;
/// TCP flags cleared on every piece but the last (FIN, PSH) and on every piece but the first (CWR).
const FIN_PSH: u8 = 0x09;
const CWR: u8 = 0x80;

/// Why a packet cannot be described or segmented.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GsoError {
    /// Not a whole IPv4/IPv6 packet whose next header is TCP (IPv6 extension headers included).
    #[error("not an IPv4/IPv6 packet carrying TCP directly")]
    NotTcp,
    /// A header or the payload the IP header announces is cut short.
    #[error("packet truncated: {need} bytes announced, {have} present")]
    Truncated {
        /// Bytes the headers announce.
        need: usize,
        /// Bytes present.
        have: usize,
    },
    /// `gso_size` is zero, or a piece does not fit the output buffer.
    #[error("segment size {0} unusable for this packet or buffer")]
    BadSize(usize),
}

/// Where the headers of a TCP packet end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpLayout {
    /// True for IPv6.
    pub v6: bool,
    /// IP header bytes.
    pub ip_len: usize,
    /// TCP header bytes (with options).
    pub tcp_len: usize,
    /// Whole packet bytes as the IP header announces them.
    pub total: usize,
}

impl TcpLayout {
    /// Reads the layout of `packet` (an IP packet with TCP right after the IP header).
    pub fn of(packet: &[u8]) -> Result<TcpLayout, GsoError> {
        TcpLayout::of_split(packet, 0)
    }

    /// The layout of a packet given as its headers, whole, and `payload_len` bytes of payload
    /// that lie elsewhere (a sender that gathers the payload from where it is kept). `of` is
    /// `of_split(packet, 0)`.
    pub fn of_split(packet: &[u8], payload_len: usize) -> Result<TcpLayout, GsoError> {
        let have = packet.len().saturating_add(payload_len);
        let short = |need: usize| GsoError::Truncated { need, have };
        let first = *packet.first().ok_or(short(1))?;
        let (v6, ip_len, total) = match first >> 4 {
            4 => {
                let ihl = usize::from(first & 0x0f) * 4;
                if packet.len() < 20 || ihl < 20 {
                    return Err(short(20));
                }
                if packet[9] != IpProtocol::TCP.0
                    || u16::from_be_bytes([packet[6], packet[7]]) & 0x3fff != 0
                {
                    return Err(GsoError::NotTcp);
                }
                (
                    false,
                    ihl,
                    usize::from(u16::from_be_bytes([packet[2], packet[3]])),
                )
            }
            6 => {
                if packet.len() < 40 {
                    return Err(short(40));
                }
                if packet[6] != IpProtocol::TCP.0 {
                    return Err(GsoError::NotTcp);
                }
                (
                    true,
                    40,
                    40 + usize::from(u16::from_be_bytes([packet[4], packet[5]])),
                )
            }
            _ => return Err(GsoError::NotTcp),
        };
        if total > have {
            return Err(short(total));
        }
        if total < ip_len + 20 || packet.len() < ip_len + 20 {
            return Err(short(ip_len + 20));
        }
        let tcp_len = usize::from(packet[ip_len + 12] >> 4) * 4;
        if tcp_len < 20 || ip_len + tcp_len > total || ip_len + tcp_len > packet.len() {
            return Err(short(ip_len + tcp_len.max(20)));
        }
        Ok(TcpLayout {
            v6,
            ip_len,
            tcp_len,
            total,
        })
    }

    /// Header bytes (IP + TCP).
    pub fn header_len(&self) -> usize {
        self.ip_len + self.tcp_len
    }

    /// TCP payload bytes.
    pub fn payload_len(&self) -> usize {
        self.total - self.header_len()
    }
}

/// `struct virtio_net_hdr` as a packet socket reads it (host byte order: the kernel reads it
/// with `vio_le()`, which is the host's order for packet sockets).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VnetHeader {
    /// `VNET_F_*` bits.
    pub flags: u8,
    /// `VNET_GSO_*`.
    pub gso_type: u8,
    /// Bytes of headers (link + IP + TCP) before the payload.
    pub hdr_len: u16,
    /// Payload bytes per piece (the MSS), 0 without segmentation.
    pub gso_size: u16,
    /// Where the checksummed part starts, counted from the link header.
    pub csum_start: u16,
    /// Where the checksum lies, counted from `csum_start`.
    pub csum_offset: u16,
}

impl VnetHeader {
    /// The header for a TCP packet `layout` behind `link_len` bytes of link header: the TCP
    /// checksum left to the kernel, and segmentation into `gso_size` pieces when the payload
    /// is longer than that (a shorter one is sent as it is).
    pub fn for_tcp(layout: &TcpLayout, link_len: usize, gso_size: Option<u16>) -> VnetHeader {
        let hdr = link_len + layout.header_len();
        let gso = gso_size.filter(|&g| g > 0 && layout.payload_len() > usize::from(g));
        VnetHeader {
            flags: VNET_F_NEEDS_CSUM,
            gso_type: match (gso, layout.v6) {
                (None, _) => VNET_GSO_NONE,
                (Some(_), false) => VNET_GSO_TCPV4,
                (Some(_), true) => VNET_GSO_TCPV6,
            },
            hdr_len: u16::try_from(hdr).unwrap_or(u16::MAX),
            gso_size: gso.unwrap_or(0),
            csum_start: u16::try_from(link_len + layout.ip_len).unwrap_or(u16::MAX),
            csum_offset: TCP_CSUM_OFFSET,
        }
    }

    /// The header for a packet whose checksums are complete and that is sent whole.
    pub fn plain() -> VnetHeader {
        VnetHeader::default()
    }

    /// The 10 bytes the kernel reads.
    pub fn to_bytes(&self) -> [u8; VNET_HDR_LEN] {
        let mut b = [0u8; VNET_HDR_LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_ne_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_ne_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_ne_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_ne_bytes());
        b
    }

    /// Reads the 10 bytes back (for tests and captures taken with a vnet header).
    pub fn from_bytes(b: &[u8; VNET_HDR_LEN]) -> VnetHeader {
        let ne = |i: usize| u16::from_ne_bytes([b[i], b[i + 1]]);
        VnetHeader {
            flags: b[0],
            gso_type: b[1],
            hdr_len: ne(2),
            gso_size: ne(4),
            csum_start: ne(6),
            csum_offset: ne(8),
        }
    }
}

/// The value a TCP checksum field holds while the kernel is to finish it (`CHECKSUM_PARTIAL`):
/// the folded, not complemented, sum of the pseudo-header for `tcp_len` bytes of TCP, as Linux's
/// `__tcp_v4_send_check`/`__tcp_v6_send_check` leave it. `pseudo` is the pseudo-header sum
/// without the length.
pub fn partial_tcp_checksum(pseudo: u32, tcp_len: usize) -> u16 {
    let len = tcp_len as u32;
    checksum::fold(pseudo + (len & 0xffff) + (len >> 16))
}

/// Cuts `packet` (a super-segment) into pieces of at most `mss` payload bytes, as the kernel's
/// TCP segmentation does, writing each piece into `scratch` with every checksum complete and
/// handing it to `emit`. Returns the number of pieces. A packet whose payload fits in `mss` is
/// emitted once, its checksums recomputed (so a partial checksum is finished).
pub fn segment(
    packet: &[u8],
    mss: usize,
    scratch: &mut [u8],
    mut emit: impl FnMut(&[u8]),
) -> Result<usize, GsoError> {
    let l = TcpLayout::of(packet)?;
    if mss == 0 {
        return Err(GsoError::BadSize(0));
    }
    let hdr = l.header_len();
    let payload = &packet[hdr..l.total];
    let piece = mss.min(payload.len().max(1));
    if scratch.len() < hdr + piece.min(payload.len()) {
        return Err(GsoError::BadSize(mss));
    }
    let pieces = payload.len().div_ceil(mss).max(1);
    let seq0 = u32::from_be_bytes([
        packet[l.ip_len + 4],
        packet[l.ip_len + 5],
        packet[l.ip_len + 6],
        packet[l.ip_len + 7],
    ]);
    let id0 = u16::from_be_bytes([packet[4], packet[5]]);
    let flags0 = packet[l.ip_len + 13];
    for k in 0..pieces {
        let from = (k * mss).min(payload.len());
        let to = ((k + 1) * mss).min(payload.len());
        let body = &payload[from..to];
        let n = hdr + body.len();
        let out = &mut scratch[..n];
        out[..hdr].copy_from_slice(&packet[..hdr]);
        out[hdr..].copy_from_slice(body);
        let mut flags = flags0;
        if k + 1 < pieces {
            flags &= !FIN_PSH;
        }
        if k > 0 {
            flags &= !CWR;
        }
        let t = l.ip_len;
        out[t + 4..t + 8].copy_from_slice(&seq0.wrapping_add(from as u32).to_be_bytes());
        out[t + 13] = flags;
        let tcp_bytes = (n - t) as u32;
        let sum = if l.v6 {
            out[4..6].copy_from_slice(&(tcp_bytes as u16).to_be_bytes());
            let s: [u8; 16] = out[8..24].try_into().unwrap_or([0; 16]);
            let d: [u8; 16] = out[24..40].try_into().unwrap_or([0; 16]);
            checksum::l4_v6(s, d, IpProtocol::TCP, &out[t..])
        } else {
            out[2..4].copy_from_slice(&(n as u16).to_be_bytes());
            out[4..6].copy_from_slice(&id0.wrapping_add(k as u16).to_be_bytes());
            let c = checksum::ipv4_header(&out[..t]);
            out[10..12].copy_from_slice(&c.to_be_bytes());
            let s: [u8; 4] = out[12..16].try_into().unwrap_or([0; 4]);
            let d: [u8; 4] = out[16..20].try_into().unwrap_or([0; 4]);
            checksum::l4_v4(s, d, IpProtocol::TCP, &out[t..])
        };
        let c = sum.ok_or(GsoError::NotTcp)?;
        out[t + 16..t + 18].copy_from_slice(&c.to_be_bytes());
        emit(out);
    }
    Ok(pieces)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Ipv4Packet, TcpPacket};

    /// An IPv4 TCP packet 198.18.0.1:40000 → 198.18.1.1:80, seq 1000, ACK|PSH|FIN, the
    /// timestamp option, id 7, `n` payload bytes counting up, checksums complete.
    fn v4(n: usize) -> Vec<u8> {
        let tcp_len = 32 + n;
        let mut p = vec![0u8; 20 + tcp_len];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&((20 + tcp_len) as u16).to_be_bytes());
        p[4..6].copy_from_slice(&7u16.to_be_bytes());
        p[6] = 0x40;
        p[8] = 64;
        p[9] = 6;
        p[12..16].copy_from_slice(&[198, 18, 0, 1]);
        p[16..20].copy_from_slice(&[198, 18, 1, 1]);
        let t = &mut p[20..];
        t[0..2].copy_from_slice(&40000u16.to_be_bytes());
        t[2..4].copy_from_slice(&80u16.to_be_bytes());
        t[4..8].copy_from_slice(&1000u32.to_be_bytes());
        t[8..12].copy_from_slice(&5u32.to_be_bytes());
        t[12] = 8 << 4;
        t[13] = 0x19;
        t[14..16].copy_from_slice(&512u16.to_be_bytes());
        t[20..32].copy_from_slice(&[1, 1, 8, 10, 0, 0, 0, 9, 0, 0, 0, 3]);
        for (i, b) in t[32..].iter_mut().enumerate() {
            *b = i as u8;
        }
        let c = checksum::l4_v4([198, 18, 0, 1], [198, 18, 1, 1], IpProtocol::TCP, t).unwrap();
        t[16..18].copy_from_slice(&c.to_be_bytes());
        let c = checksum::ipv4_header(&p[..20]);
        p[10..12].copy_from_slice(&c.to_be_bytes());
        p
    }

    fn v6(n: usize) -> Vec<u8> {
        let tcp_len = 20 + n;
        let mut p = vec![0u8; 40 + tcp_len];
        p[0] = 0x60;
        p[4..6].copy_from_slice(&(tcp_len as u16).to_be_bytes());
        p[6] = 6;
        p[7] = 64;
        p[8..10].copy_from_slice(&[0x20, 0x01]);
        p[10..12].copy_from_slice(&[0x0d, 0xb8]);
        p[23] = 1;
        p[24..26].copy_from_slice(&[0x20, 0x01]);
        p[26..28].copy_from_slice(&[0x0d, 0xb8]);
        p[39] = 2;
        let t = &mut p[40..];
        t[2..4].copy_from_slice(&80u16.to_be_bytes());
        t[4..8].copy_from_slice(&u32::MAX.to_be_bytes());
        t[12] = 5 << 4;
        t[13] = 0x18;
        for (i, b) in t[20..].iter_mut().enumerate() {
            *b = (i * 7) as u8;
        }
        p
    }

    fn pieces(p: &[u8], mss: usize) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut scratch = vec![0u8; 65536];
        segment(p, mss, &mut scratch, |s| out.push(s.to_vec())).unwrap();
        out
    }

    #[test]
    fn layout_reads_both_families() {
        let l = TcpLayout::of(&v4(100)).unwrap();
        assert_eq!((l.v6, l.ip_len, l.tcp_len, l.total), (false, 20, 32, 152));
        assert_eq!(l.payload_len(), 100);
        let l = TcpLayout::of(&v6(10)).unwrap();
        assert_eq!((l.v6, l.ip_len, l.tcp_len, l.total), (true, 40, 20, 70));
    }

    #[test]
    fn layout_refuses_what_is_not_whole_tcp() {
        let mut p = v4(10);
        p[9] = 17;
        assert_eq!(TcpLayout::of(&p), Err(GsoError::NotTcp));
        let p = v4(10);
        assert!(matches!(
            TcpLayout::of(&p[..p.len() - 1]),
            Err(GsoError::Truncated { .. })
        ));
        let mut p = v4(10);
        p[6] = 0x20; // more fragments
        assert_eq!(TcpLayout::of(&p), Err(GsoError::NotTcp));
        assert!(TcpLayout::of(&[]).is_err());
        assert!(TcpLayout::of(&[0x45]).is_err());
        let mut p = v4(0);
        p[32] = 0xf0; // data offset 60 > what is there
        assert!(TcpLayout::of(&p).is_err());
    }

    /// Headers alone with the payload's length read like the whole packet; headers cut short,
    /// or a payload length that disagrees with the IP header, are refused.
    #[test]
    fn a_split_layout_reads_like_the_whole_packet() {
        for p in [v4(3000), v6(5000)] {
            let whole = TcpLayout::of(&p).unwrap();
            let hdr = whole.header_len();
            let pay = whole.payload_len();
            assert_eq!(TcpLayout::of_split(&p[..hdr], pay), Ok(whole));
            assert!(TcpLayout::of_split(&p[..hdr], pay - 1).is_err());
            assert!(TcpLayout::of_split(&p[..hdr - 1], pay + 1).is_err());
            assert!(TcpLayout::of_split(&p[..19], 10_000).is_err());
        }
    }

    #[test]
    fn vnet_header_for_super_and_small_segments() {
        let l = TcpLayout::of(&v4(3000)).unwrap();
        let h = VnetHeader::for_tcp(&l, 14, Some(1448));
        assert_eq!(h.flags, VNET_F_NEEDS_CSUM);
        assert_eq!(h.gso_type, VNET_GSO_TCPV4);
        assert_eq!((h.hdr_len, h.gso_size), (14 + 52, 1448));
        assert_eq!((h.csum_start, h.csum_offset), (34, 16));
        assert_eq!(VnetHeader::from_bytes(&h.to_bytes()), h);
        // A payload within one MSS is not a GSO packet (the kernel would refuse it as one).
        let l = TcpLayout::of(&v4(1448)).unwrap();
        let h = VnetHeader::for_tcp(&l, 14, Some(1448));
        assert_eq!((h.gso_type, h.gso_size), (VNET_GSO_NONE, 0));
        let l = TcpLayout::of(&v6(5000)).unwrap();
        let h = VnetHeader::for_tcp(&l, 14, Some(1220));
        assert_eq!((h.gso_type, h.csum_start), (VNET_GSO_TCPV6, 54));
        assert_eq!(VnetHeader::plain().to_bytes(), [0; VNET_HDR_LEN]);
    }

    #[test]
    fn partial_checksum_finishes_to_the_full_one() {
        // The kernel finishes a partial checksum by adding the segment's bytes to the field and
        // complementing: that must give what a full computation gives.
        let mut p = v4(999);
        let full = u16::from_be_bytes([p[36], p[37]]);
        let pseudo =
            checksum::pseudo_header_v4([198, 18, 0, 1], [198, 18, 1, 1], IpProtocol::TCP, 0);
        let part = partial_tcp_checksum(pseudo, p.len() - 20);
        p[36..38].copy_from_slice(&part.to_be_bytes());
        let finished = checksum::finish(checksum::sum(&p[20..], 0));
        assert_eq!(finished, full);
    }

    #[test]
    fn segments_like_the_kernel() {
        let p = v4(4000);
        let out = pieces(&p, 1448);
        assert_eq!(
            out.iter().map(|s| s.len()).collect::<Vec<_>>(),
            [1500, 1500, 1156]
        );
        let mut payload = Vec::new();
        for (k, s) in out.iter().enumerate() {
            let ip = Ipv4Packet::new_checked(&s[..]).unwrap();
            assert!(ip.verify_checksum());
            assert_eq!(ip.ident(), 7 + k as u16);
            assert_eq!(usize::from(ip.total_len()), s.len());
            let tcp = TcpPacket::new_checked(&s[20..]).unwrap();
            assert_eq!(tcp.seq().value(), 1000 + 1448 * k as u32);
            let c = checksum::l4_v4([198, 18, 0, 1], [198, 18, 1, 1], IpProtocol::TCP, &s[20..]);
            assert_eq!(c, Some(tcp.checksum()));
            let last = k == out.len() - 1;
            assert_eq!(
                tcp.flags().0 & u16::from(FIN_PSH) != 0,
                last,
                "FIN/PSH only on the last piece"
            );
            assert_eq!(tcp.timestamps(), Some((9, 3)), "options copied");
            payload.extend_from_slice(tcp.payload());
        }
        assert_eq!(payload, &p[52..]);
    }

    #[test]
    fn segments_v6_across_sequence_wrap() {
        let p = v6(2500);
        let out = pieces(&p, 1220);
        assert_eq!(out.len(), 3);
        let seqs: Vec<u32> = out
            .iter()
            .map(|s| TcpPacket::new_checked(&s[40..]).unwrap().seq().value())
            .collect();
        assert_eq!(seqs, [u32::MAX, 1219, 2439]);
        for s in &out {
            assert_eq!(usize::from(u16::from_be_bytes([s[4], s[5]])), s.len() - 40);
            let src: [u8; 16] = s[8..24].try_into().unwrap();
            let dst: [u8; 16] = s[24..40].try_into().unwrap();
            let c = checksum::l4_v6(src, dst, IpProtocol::TCP, &s[40..]).unwrap();
            assert_eq!(c, u16::from_be_bytes([s[56], s[57]]));
        }
    }

    #[test]
    fn a_small_packet_comes_out_whole_with_its_checksum_finished() {
        let mut p = v4(10);
        let good = p.clone();
        p[36] ^= 0x5a; // as if it held a partial checksum
        let out = pieces(&p, 1448);
        assert_eq!(out, vec![good]);
        let out = pieces(&v4(0), 1448);
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn bad_sizes_and_garbage_are_errors_not_panics() {
        let p = v4(100);
        let mut scratch = [0u8; 60];
        assert_eq!(
            segment(&p, 0, &mut scratch, |_| {}),
            Err(GsoError::BadSize(0))
        );
        assert_eq!(
            segment(&p, 1448, &mut scratch, |_| {}),
            Err(GsoError::BadSize(1448))
        );
        let mut big = [0u8; 2048];
        for n in 0..80 {
            let mut q = v4(20);
            q.truncate(n);
            let _ = segment(&q, 8, &mut big, |_| {});
        }
    }
}
