//! From a captured frame to its IP + TCP header: link layers intercept understands.
//!
//! Pure parsing over borrowed bytes (no I/O, no allocation, no panics on any input).

use tcpclone::capture::LinkType;
use tcpclone::wire::{parse_layout, parse_link, IpProtocol, TcpPacket, WireErrorKind, LINK_TYPES};

/// Link-layer header bytes to add to the IP + TCP header room when choosing the snap length.
pub const MAX_LINK_HEADER: usize = 14 + 2 * 4; // Ethernet with two VLAN tags; SLL 16, SLL2 20
/// Snap length: link header + the largest IP + TCP header carried (256).
pub const SNAPLEN: i32 = (MAX_LINK_HEADER + tcpclone::proto::MAX_HEADER_LEN) as i32;

/// Snap length with `--response-prefix N`: room for N payload bytes after the largest header.
pub fn snaplen(prefix: usize) -> i32 {
    SNAPLEN + prefix.min(tcpclone::proto::MAX_PREFIX) as i32
}

/// Why a frame yields no IP + TCP header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// The link type is not one intercept parses.
    #[error("unsupported link type {0}")]
    Unsupported(u32),
    /// The frame is shorter than its link header.
    #[error("frame shorter than its link header")]
    Truncated,
    /// The link header names a protocol other than IPv4/IPv6.
    #[error("not IP (ethertype {0:#06x})")]
    NotIp(u16),
    /// A raw-IP frame whose version is neither 4 nor 6.
    #[error("raw IP frame with version {0}")]
    BadVersion(u8),
}

/// Whether intercept parses frames of `linktype` (map a libpcap DLT with
/// [`LinkType::from_dlt`] first).
pub fn supported(linktype: LinkType) -> bool {
    LINK_TYPES.contains(&linktype)
}

/// Returns the bytes from the start of the IP header (the rest of the captured frame). Only
/// the link header is read, so a frame cut by the snap length anywhere after it is fine.
pub fn ip_payload(linktype: LinkType, frame: &[u8]) -> Result<&[u8], LinkError> {
    let link = parse_link(linktype, frame).map_err(|e| match e.kind {
        WireErrorKind::UnsupportedLinkType(t) => LinkError::Unsupported(t),
        WireErrorKind::BadVersion(v) => LinkError::BadVersion(v),
        _ => LinkError::Truncated,
    })?;
    if !link.ethertype.is_ip() {
        return Err(LinkError::NotIp(link.ethertype.0));
    }
    frame.get(link.l3_offset..).ok_or(LinkError::Truncated)
}

/// Returns the IP + TCP header (options included, payload cut) of a captured frame, or
/// `None` when it is not a complete, unfragmented TCP header. The layers are read with the
/// library's views (`tcpclone::wire`), the one parser of the workspace.
pub fn ip_tcp_header(linktype: LinkType, frame: &[u8]) -> Option<&[u8]> {
    let layout = parse_layout(linktype, frame).ok()?;
    let ip = layout.ip?;
    if ip.protocol != IpProtocol::TCP || ip.fragment.is_some() {
        return None;
    }
    let l4 = ip.l4_offset?;
    let tcp = TcpPacket::new_checked(frame.get(l4..)?).ok()?;
    frame.get(layout.l3_offset..l4 + tcp.header_len())
}

/// The IP + TCP header of a captured frame followed by up to `prefix` bytes of its payload (as
/// far as the capture holds it, never past the IP length: link padding is not payload), or
/// `None` as for [`ip_tcp_header`]. With `prefix` 0 it is exactly [`ip_tcp_header`].
pub fn ip_tcp_response(linktype: LinkType, frame: &[u8], prefix: usize) -> Option<&[u8]> {
    let header = ip_tcp_header(linktype, frame)?;
    if prefix == 0 {
        return Some(header);
    }
    // The header is a slice of `frame`: the payload follows it there.
    let start = header.as_ptr() as usize - frame.as_ptr() as usize;
    let (_, payload) = tcpclone::proto::split_response(frame.get(start..)?).ok()?;
    let keep = payload.len().min(prefix);
    frame.get(start..start + header.len() + keep)
}

#[cfg(test)]
mod tests {
    use super::*;

    const IP_TCP: [u8; 40] = [
        0x45, 0, 0, 45, 0, 0, 0x40, 0, 64, 6, 0, 0, 198, 18, 0, 2, 198, 18, 0, 1, //
        0x18, 0xeb, 0x9c, 0x40, 0, 0, 0, 1, 0, 0, 0, 2, 0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0,
    ];

    fn with_payload(link: &[u8]) -> Vec<u8> {
        let mut v = link.to_vec();
        v.extend_from_slice(&IP_TCP);
        v.extend_from_slice(b"+OK\r\n");
        v
    }

    #[test]
    fn ethernet_vlan_sll_sll2_raw() {
        let eth = with_payload(&[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 0x08, 0x00]);
        assert_eq!(ip_tcp_header(LinkType::ETHERNET, &eth), Some(&IP_TCP[..]));
        let vlan = with_payload(&[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 0x81, 0, 0, 5, 0x08, 0]);
        assert_eq!(ip_tcp_header(LinkType::ETHERNET, &vlan), Some(&IP_TCP[..]));
        let mut sll = [0u8; 16];
        sll[14..].copy_from_slice(&[0x08, 0x00]);
        assert_eq!(
            ip_tcp_header(LinkType::LINUX_SLL, &with_payload(&sll)),
            Some(&IP_TCP[..])
        );
        let mut sll2 = [0u8; 20];
        sll2[..2].copy_from_slice(&[0x08, 0x00]);
        assert_eq!(
            ip_tcp_header(LinkType::LINUX_SLL2, &with_payload(&sll2)),
            Some(&IP_TCP[..])
        );
        assert_eq!(
            ip_tcp_header(LinkType::RAW, &with_payload(&[])),
            Some(&IP_TCP[..])
        );
    }

    #[test]
    fn response_prefix_stops_at_the_ip_length_and_the_snap() {
        let mut eth = with_payload(&[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 0x08, 0x00]);
        // Ethernet padding after the 5 payload bytes the IP length gives.
        eth.extend_from_slice(&[0; 9]);
        let r = ip_tcp_response(LinkType::ETHERNET, &eth, 256).unwrap();
        assert_eq!(&r[..40], &IP_TCP[..]);
        assert_eq!(&r[40..], b"+OK\r\n");
        assert_eq!(
            &ip_tcp_response(LinkType::ETHERNET, &eth, 1).unwrap()[40..],
            b"+"
        );
        assert_eq!(
            ip_tcp_response(LinkType::ETHERNET, &eth, 0),
            ip_tcp_header(LinkType::ETHERNET, &eth)
        );
        // Cut by the snap length inside the payload: what was captured.
        assert_eq!(
            &ip_tcp_response(LinkType::ETHERNET, &eth[..14 + 42], 256).unwrap()[40..],
            b"+O"
        );
        assert_eq!(snaplen(0), SNAPLEN);
        assert_eq!(snaplen(1000), SNAPLEN + 256);
    }

    #[test]
    fn rejects_non_tcp_and_short() {
        let arp = with_payload(&[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 0x08, 0x06]);
        assert_eq!(
            ip_payload(LinkType::ETHERNET, &arp),
            Err(LinkError::NotIp(0x0806))
        );
        let mut udp = IP_TCP;
        udp[9] = 17;
        assert_eq!(ip_tcp_header(LinkType::RAW, &udp), None);
        assert_eq!(ip_tcp_header(LinkType::RAW, &IP_TCP[..30]), None);
        assert_eq!(ip_tcp_header(LinkType::ETHERNET, &[0; 5]), None);
        assert_eq!(
            ip_payload(LinkType(147), &IP_TCP),
            Err(LinkError::Unsupported(147))
        );
        for n in 0..IP_TCP.len() {
            let _ = ip_tcp_header(LinkType::LINUX_SLL2, &IP_TCP[..n]);
        }
    }

    #[test]
    fn qinq_snapped_and_truncated() {
        // 802.1ad + 802.1Q, a 1,400-byte segment cut at SNAPLEN: total length > bytes captured.
        let mut f = vec![0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 0x88, 0xa8, 0, 200];
        f.extend_from_slice(&[0x81, 0, 0, 5, 0x08, 0]);
        let ip_at = f.len();
        f.extend_from_slice(&IP_TCP);
        f[ip_at + 2..ip_at + 4].copy_from_slice(&1440u16.to_be_bytes());
        f.resize(SNAPLEN as usize, b'x');
        let h = ip_tcp_header(LinkType::ETHERNET, &f).unwrap();
        assert_eq!(
            (&h[..2], &h[4..], h.len()),
            (&[0x45, 0][..], &IP_TCP[4..], 40)
        );
        assert_eq!(
            ip_payload(LinkType::ETHERNET, &f).unwrap().len(),
            SNAPLEN as usize - 22
        );
        // Cut inside the inner tag, inside the cooked headers, and an empty raw frame.
        assert_eq!(
            ip_payload(LinkType::ETHERNET, &f[..19]),
            Err(LinkError::Truncated)
        );
        assert_eq!(
            ip_payload(LinkType::LINUX_SLL, &[0; 15]),
            Err(LinkError::Truncated)
        );
        assert_eq!(
            ip_payload(LinkType::LINUX_SLL2, &[8, 0]),
            Err(LinkError::Truncated)
        );
        assert_eq!(ip_payload(LinkType::RAW, &[]), Err(LinkError::Truncated));
        assert_eq!(
            ip_payload(LinkType::RAW, &[0x30; 40]),
            Err(LinkError::BadVersion(3))
        );
        // Cooked frames are reported whatever their packet type (responses leave the target).
        let mut sll2 = [0u8; 20];
        sll2[..2].copy_from_slice(&[0x08, 0x00]);
        sll2[10] = 4;
        assert_eq!(
            ip_tcp_header(LinkType::LINUX_SLL2, &with_payload(&sll2)),
            Some(&IP_TCP[..])
        );
    }

    #[test]
    fn supported_link_types() {
        for d in [1, 12, 14, 101, 113, 228, 229, 276] {
            assert!(supported(LinkType::from_dlt(d)), "DLT {d}");
        }
        for d in [0, 108, 147] {
            assert!(!supported(LinkType::from_dlt(d)), "DLT {d}");
        }
    }

    #[test]
    fn fragments_and_other_protocols_give_no_header() {
        let mut frag = IP_TCP;
        frag[6] = 0x20; // more fragments: the TCP header may be whole, the segment is not
        assert_eq!(ip_tcp_header(LinkType::RAW, &frag), None);
        let mut later = IP_TCP;
        later[7] = 0x10; // a later fragment: no TCP header at all
        assert_eq!(ip_tcp_header(LinkType::RAW, &later), None);
        let mut udp = IP_TCP;
        udp[9] = 17;
        assert_eq!(ip_tcp_header(LinkType::RAW, &udp), None);
        let mut doff = IP_TCP;
        doff[32] = 0xf0; // options announced beyond the snap
        assert_eq!(ip_tcp_header(LinkType::RAW, &doff), None);
        assert_eq!(ip_tcp_header(LinkType::RAW, &IP_TCP), Some(&IP_TCP[..]));
    }

    #[test]
    fn ipv6_with_extension_header() {
        let mut v = vec![0x60, 0, 0, 0, 0, 36, 60, 64];
        v.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        v.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        v.extend_from_slice(&[6, 0, 1, 4, 0, 0, 0, 0]); // destination options → TCP
        v.extend_from_slice(&IP_TCP[20..]);
        assert_eq!(ip_tcp_header(LinkType::RAW, &v).map(<[u8]>::len), Some(68));
        tcpclone::proto::check_header(&v, 0, 0).unwrap();
    }
}
