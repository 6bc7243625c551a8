//! Captured frames to [`Segment`]s: strips the link layer (Ethernet/802.1Q, Linux cooked v1/v2,
//! raw IP) and parses IPv4/IPv6 and TCP with etherparse. Pure; non-TCP or malformed frames give
//! `None` (they are counted by the caller, never fatal).

use super::reassembly::Segment;
use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use std::net::{IpAddr, SocketAddr};
use tcpclone::capture::LinkType;
use tcpclone::seq::SeqNumber;

/// Parses one captured frame into a TCP segment, or `None` when it is not a whole TCP segment.
pub fn decode(linktype: LinkType, data: &[u8]) -> Option<Segment<'_>> {
    let sliced = match linktype {
        LinkType::ETHERNET => SlicedPacket::from_ethernet(data).ok()?,
        LinkType::RAW | LinkType::IPV4 | LinkType::IPV6 => SlicedPacket::from_ip(data).ok()?,
        LinkType::LINUX_SLL => SlicedPacket::from_linux_sll(data).ok()?,
        // SLL2: 20-byte header, protocol type in its first two bytes.
        LinkType::LINUX_SLL2 => {
            if data.len() < 20 || !matches!(u16::from_be_bytes([data[0], data[1]]), 0x0800 | 0x86dd)
            {
                return None;
            }
            SlicedPacket::from_ip(&data[20..]).ok()?
        }
        // BSD loopback (DLT_NULL, 0): 4-byte family header.
        LinkType(0) => SlicedPacket::from_ip(data.get(4..)?).ok()?,
        _ => return None,
    };
    let (src_ip, dst_ip): (IpAddr, IpAddr) = match sliced.net.as_ref()? {
        NetSlice::Ipv4(v4) => (
            v4.header().source_addr().into(),
            v4.header().destination_addr().into(),
        ),
        NetSlice::Ipv6(v6) => (
            v6.header().source_addr().into(),
            v6.header().destination_addr().into(),
        ),
        _ => return None,
    };
    let TransportSlice::Tcp(tcp) = sliced.transport? else {
        return None;
    };
    Some(Segment {
        src: SocketAddr::new(src_ip, tcp.source_port()),
        dst: SocketAddr::new(dst_ip, tcp.destination_port()),
        seq: SeqNumber(tcp.sequence_number()),
        ack: tcp.ack().then(|| SeqNumber(tcp.acknowledgment_number())),
        syn: tcp.syn(),
        fin: tcp.fin(),
        rst: tcp.rst(),
        payload: tcp.payload(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use hex_literal::hex;

    /// Ethernet + IPv4 + TCP (PSH|ACK) 198.18.0.1:40000 → 198.18.1.1:6379, payload "PING\r\n".
    const PING: [u8; 60] = hex!(
        "020000000002 020000000001 0800"
        "4500002e 0001 4000 4006 0000 c6120001 c6120101"
        "9c40 18eb 000003e8 00001388 5018 ffff 0000 0000"
        "50494e470d0a"
    );

    #[test]
    fn decodes_ethernet_ipv4_tcp() {
        let s = decode(LinkType::ETHERNET, &PING).unwrap();
        assert_eq!(s.src, "198.18.0.1:40000".parse().unwrap());
        assert_eq!(s.dst, "198.18.1.1:6379".parse().unwrap());
        assert_eq!(s.seq, SeqNumber(1000));
        assert_eq!(s.ack, Some(SeqNumber(5000)));
        assert!(!s.syn && !s.fin && !s.rst);
        assert_eq!(s.payload, b"PING\r\n");
        // The same packet as raw IP.
        assert_eq!(
            decode(LinkType::RAW, &PING[14..]).unwrap().payload,
            b"PING\r\n"
        );
    }

    #[test]
    fn rejects_garbage() {
        assert!(decode(LinkType::ETHERNET, &PING[..30]).is_none());
        assert!(decode(LinkType::LINUX_SLL2, &[0u8; 10]).is_none());
        assert!(decode(LinkType(147), &PING).is_none());
    }
}
