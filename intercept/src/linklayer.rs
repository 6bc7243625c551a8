//! From a captured frame to its IP + TCP header: link layers intercept understands.
//!
//! Pure parsing over borrowed bytes (no I/O, no allocation, no panics on any input).

use tcpclone::capture::LinkType;

/// Link-layer header bytes to add to the IP + TCP header room when choosing the snap length.
pub const MAX_LINK_HEADER: usize = 14 + 2 * 4; // Ethernet with two VLAN tags; SLL 16, SLL2 20
/// Snap length: link header + the largest IP + TCP header carried (256).
pub const SNAPLEN: i32 = (MAX_LINK_HEADER + tcpclone::proto::MAX_HEADER_LEN) as i32;

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const ETHERTYPE_VLAN: u16 = 0x8100;
const ETHERTYPE_QINQ: u16 = 0x88a8;

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
}

/// Returns the bytes from the start of the IP header (the rest of the captured frame).
pub fn ip_payload(linktype: LinkType, frame: &[u8]) -> Result<&[u8], LinkError> {
    let (proto, at) = match linktype {
        LinkType::ETHERNET => {
            if frame.len() < 14 {
                return Err(LinkError::Truncated);
            }
            let mut at = 12;
            let mut ty = u16::from_be_bytes([frame[12], frame[13]]);
            while ty == ETHERTYPE_VLAN || ty == ETHERTYPE_QINQ {
                at += 4;
                if frame.len() < at + 2 {
                    return Err(LinkError::Truncated);
                }
                ty = u16::from_be_bytes([frame[at], frame[at + 1]]);
            }
            (ty, at + 2)
        }
        LinkType::LINUX_SLL => {
            if frame.len() < 16 {
                return Err(LinkError::Truncated);
            }
            (u16::from_be_bytes([frame[14], frame[15]]), 16)
        }
        LinkType::LINUX_SLL2 => {
            if frame.len() < 20 {
                return Err(LinkError::Truncated);
            }
            (u16::from_be_bytes([frame[0], frame[1]]), 20)
        }
        LinkType::RAW | LinkType::IPV4 | LinkType::IPV6 | LinkType(12) | LinkType(14) => {
            return Ok(frame)
        }
        other => return Err(LinkError::Unsupported(other.0)),
    };
    if proto != ETHERTYPE_IPV4 && proto != ETHERTYPE_IPV6 {
        return Err(LinkError::NotIp(proto));
    }
    Ok(&frame[at..])
}

/// Returns the IP + TCP header (options included, payload cut) of a captured frame, or
/// `None` when it is not a complete, unfragmented TCP header.
pub fn ip_tcp_header(linktype: LinkType, frame: &[u8]) -> Option<&[u8]> {
    let ip = ip_payload(linktype, frame).ok()?;
    let first = *ip.first()?;
    let tcp_at = match first >> 4 {
        4 => {
            let ihl = usize::from(first & 0x0f) * 4;
            if ip.len() < 20 || ihl < 20 || ip[9] != 6 {
                return None;
            }
            ihl
        }
        6 => {
            if ip.len() < 40 {
                return None;
            }
            let mut next = ip[6];
            let mut at = 40;
            loop {
                match next {
                    6 => break at,
                    0 | 43 | 60 => {
                        if ip.len() < at + 8 {
                            return None;
                        }
                        next = ip[at];
                        at += (usize::from(ip[at + 1]) + 1) * 8;
                    }
                    _ => return None,
                }
            }
        }
        _ => return None,
    };
    if ip.len() < tcp_at + 20 {
        return None;
    }
    let end = tcp_at + usize::from(ip[tcp_at + 12] >> 4) * 4;
    ip.get(..end)
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
