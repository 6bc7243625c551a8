//! Splitting TCP super-frames (captured with TSO/GSO, up to 64 KB) into MTU-sized segments.

use super::fill_checksums;
use crate::capture::LinkType;
use crate::seq::SeqNumber;
use crate::wire::{be16, parse_layout, put16, IpProtocol, IpVersion, TcpFlags, WireError};

/// Why a frame could not be split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TsoError {
    /// The headers did not parse.
    #[error("cannot split: {0}")]
    Unparsed(#[from] WireError),
    /// Not a TCP segment (only TCP can be re-segmented).
    #[error("cannot split a non-TCP frame larger than the MTU")]
    NotTcp,
    /// Part of the datagram is missing from the capture, or it is an IP fragment.
    #[error("cannot split a frame whose capture is cut short or that is an IP fragment")]
    Incomplete,
    /// The MTU does not leave room for one byte of payload after the headers.
    #[error("MTU {mtu} leaves no room for payload after {headers} bytes of IP and TCP headers")]
    MtuTooSmall {
        /// The MTU asked for.
        mtu: usize,
        /// IP + TCP header bytes per segment.
        headers: usize,
    },
}

/// Splits the TCP frame `frame` whose IP packet is longer than `mtu` into segments whose IP
/// packets are at most `mtu` bytes, calling `emit` with each (built in `scratch`, which is reused
/// so no allocation happens once it is large enough). Sequence numbers advance by the payload
/// carried; IPv4 identifications count up from the original; FIN and PSH stay only on the last
/// segment and CWR only on the first; checksums are computed in full. A frame that already fits
/// is emitted unchanged. Returns the number of segments emitted.
pub fn tso_split(
    linktype: LinkType,
    frame: &[u8],
    mtu: usize,
    scratch: &mut Vec<u8>,
    mut emit: impl FnMut(&[u8]),
) -> Result<usize, TsoError> {
    let layout = parse_layout(linktype, frame)?;
    let ip = layout.ip.ok_or(TsoError::NotTcp)?;
    if ip.total_len <= mtu {
        emit(frame);
        return Ok(1);
    }
    if ip.protocol != IpProtocol::TCP {
        return Err(TsoError::NotTcp);
    }
    if !ip.l4_checksummable() {
        return Err(TsoError::Incomplete);
    }
    let l3 = layout.l3_offset;
    let l4 = ip.l4_offset.ok_or(TsoError::Incomplete)?;
    let ip_end = layout.ip_end(frame.len());
    if ip_end < l4 + 20 {
        return Err(TsoError::Incomplete);
    }
    let tcp_hl = usize::from(frame[l4 + 12] >> 4) * 4;
    let hdr_end = l4 + tcp_hl;
    if tcp_hl < 20 || hdr_end > ip_end {
        return Err(TsoError::Incomplete);
    }
    let headers = hdr_end - l3;
    if mtu <= headers {
        return Err(TsoError::MtuTooSmall { mtu, headers });
    }
    let mss = mtu - headers;
    let payload = &frame[hdr_end..ip_end];
    let seq0 = SeqNumber(u32::from_be_bytes([
        frame[l4 + 4],
        frame[l4 + 5],
        frame[l4 + 6],
        frame[l4 + 7],
    ]));
    let ident0 = be16(frame, l3 + 4);
    let flags0 = be16(frame, l4 + 12);
    let count = payload.len().div_ceil(mss);
    for (i, chunk) in payload.chunks(mss).enumerate() {
        scratch.clear();
        scratch.extend_from_slice(&frame[..hdr_end]);
        scratch.extend_from_slice(chunk);
        let ip_len = headers + chunk.len();
        match ip.version {
            IpVersion::V4 => {
                put16(scratch, l3 + 2, ip_len as u16);
                put16(scratch, l3 + 4, ident0.wrapping_add(i as u16));
            }
            IpVersion::V6 => put16(scratch, l3 + 4, (ip_len - 40) as u16),
        }
        let seq = seq0 + (i * mss) as u32;
        scratch[l4 + 4..l4 + 8].copy_from_slice(&seq.value().to_be_bytes());
        let mut flags = flags0;
        if i + 1 != count {
            flags &= !(TcpFlags::FIN | TcpFlags::PSH);
        }
        if i != 0 {
            flags &= !TcpFlags::CWR;
        }
        put16(scratch, l4 + 12, flags);
        let seg_layout = parse_layout(linktype, scratch)?;
        fill_checksums(&seg_layout, scratch);
        emit(scratch);
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Ipv4Packet, TcpPacket};
    use etherparse::PacketBuilder;

    fn big_frame(v6: bool, len: usize, flags_fin_psh_cwr: bool) -> Vec<u8> {
        let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
        let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
        let b = if v6 {
            b.ipv6(
                [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
                [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
                64,
            )
        } else {
            b.ipv4([198, 18, 0, 1], [198, 18, 0, 2], 64)
        };
        let mut t = b.tcp(40000, 80, u32::MAX - 1000, 65535).ack(7);
        if flags_fin_psh_cwr {
            t = t.fin().psh().cwr();
        }
        let mut out = Vec::new();
        t.write(&mut out, &payload).unwrap();
        out
    }

    #[test]
    fn splits_ipv4_and_ipv6() {
        for v6 in [false, true] {
            let f = big_frame(v6, 5000, true);
            let mut segs: Vec<Vec<u8>> = Vec::new();
            let n = tso_split(LinkType::ETHERNET, &f, 1500, &mut Vec::new(), |s| {
                segs.push(s.to_vec())
            })
            .unwrap();
            assert_eq!(n, segs.len());
            let mss = if v6 { 1440 } else { 1460 };
            assert_eq!(n, 5000usize.div_ceil(mss));
            let mut data = Vec::new();
            for (i, s) in segs.iter().enumerate() {
                let l = parse_layout(LinkType::ETHERNET, s).unwrap();
                let ip = l.ip.unwrap();
                assert!(ip.total_len <= 1500);
                assert_eq!(l.verify_checksums(s).1, Some(true), "segment {i}");
                if !v6 {
                    assert_eq!(l.verify_checksums(s).0, Some(true));
                    let p = Ipv4Packet::new_checked(&s[14..]).unwrap();
                    assert_eq!(
                        p.ident(),
                        Ipv4Packet::new_checked(&f[14..])
                            .unwrap()
                            .ident()
                            .wrapping_add(i as u16)
                    );
                }
                let t = TcpPacket::new_checked(l.l4(s).unwrap()).unwrap();
                assert_eq!(t.seq(), SeqNumber(u32::MAX - 1000) + (i * mss) as u32);
                let last = i + 1 == n;
                assert_eq!(t.flags().contains(TcpFlags::FIN), last);
                assert_eq!(t.flags().contains(TcpFlags::PSH), last);
                assert_eq!(t.flags().contains(TcpFlags::CWR), i == 0);
                assert!(t.flags().contains(TcpFlags::ACK));
                data.extend_from_slice(t.payload());
            }
            let orig = TcpPacket::new_checked(
                parse_layout(LinkType::ETHERNET, &f)
                    .unwrap()
                    .l4(&f)
                    .unwrap(),
            )
            .unwrap();
            assert_eq!(data, orig.payload());
        }
    }

    #[test]
    fn small_frames_pass_and_errors() {
        let f = big_frame(false, 100, false);
        let mut got = Vec::new();
        assert_eq!(
            tso_split(LinkType::ETHERNET, &f, 1500, &mut Vec::new(), |s| got =
                s.to_vec()),
            Ok(1)
        );
        assert_eq!(got, f);
        let f = big_frame(false, 3000, false);
        assert!(matches!(
            tso_split(LinkType::ETHERNET, &f, 40, &mut Vec::new(), |_| {}),
            Err(TsoError::MtuTooSmall { .. })
        ));
        assert_eq!(
            tso_split(
                LinkType::ETHERNET,
                &f[..2000],
                1500,
                &mut Vec::new(),
                |_| {}
            ),
            Err(TsoError::Incomplete)
        );
    }
}
