//! Captured frames to [`Segment`]s through the library's packet views ([`parse_layout`]: the
//! link layer with 802.1Q/802.1ad tags, Linux cooked v1/v2, raw IP, BSD loopback, then IPv4/IPv6
//! with extension headers, then TCP): the one parser raw mode's front end, intercept and
//! replay use too. Pure; non-TCP or malformed frames give `None` (they are
//! counted by the caller, never fatal).

use super::reassembly::Segment;
use std::net::SocketAddr;
use tcpclone::capture::LinkType;
use tcpclone::wire::{parse_layout, TcpFlags};

/// Parses one captured frame into a TCP segment, or `None` when it is not a whole TCP segment
/// (not IP or not TCP, a fragment, a header cut short, or a packet cut by the snap length:
/// a segment without all its payload would put a hole in the stream).
pub fn decode(linktype: LinkType, data: &[u8]) -> Option<Segment<'_>> {
    let layout = parse_layout(linktype, data).ok()?;
    let ip = layout.ip?;
    if !ip.complete || ip.fragment.is_some() {
        return None;
    }
    let (src_ip, dst_ip) = layout.addrs(data)?;
    let tcp = layout.tcp(data)?;
    let flags = tcp.flags();
    let (src_port, dst_port, seq, ack) = (tcp.src_port(), tcp.dst_port(), tcp.seq(), tcp.ack());
    // The payload borrows the frame, not the view.
    let hl = tcp.header_len();
    let payload = tcp.into_inner().get(hl..)?;
    Some(Segment {
        src: SocketAddr::new(src_ip, src_port),
        dst: SocketAddr::new(dst_ip, dst_port),
        seq,
        ack: flags.contains(TcpFlags::ACK).then_some(ack),
        syn: flags.contains(TcpFlags::SYN),
        fin: flags.contains(TcpFlags::FIN),
        rst: flags.contains(TcpFlags::RST),
        payload,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use hex_literal::hex;
    use tcpclone::seq::SeqNumber;

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
    fn decodes_every_link_layer() {
        let ip = &PING[14..];
        let framed = |link: &[u8]| [link, ip].concat();
        let cases: [(LinkType, Vec<u8>); 6] = [
            // 802.1ad + 802.1Q.
            (
                LinkType::ETHERNET,
                framed(&hex!("020000000002 020000000001 88a8 00c8 8100 0005 0800")),
            ),
            (
                LinkType::LINUX_SLL,
                framed(&hex!("0000 0001 0006 0200000000010000 0800")),
            ),
            // SLL2, outgoing: stream mode keeps both directions.
            (
                LinkType::LINUX_SLL2,
                framed(&hex!("0800 0000 00000002 0001 04 06 0200000000010000")),
            ),
            (LinkType::IPV4, ip.to_vec()),
            (LinkType(0), framed(&[2, 0, 0, 0])),
            (LinkType::RAW, ip.to_vec()),
        ];
        for (lt, frame) in cases {
            let s = decode(lt, &frame).unwrap_or_else(|| panic!("{lt}"));
            assert_eq!(
                (s.payload, s.seq),
                (&b"PING\r\n"[..], SeqNumber(1000)),
                "{lt}"
            );
        }
    }

    #[test]
    fn rejects_garbage() {
        assert!(decode(LinkType::ETHERNET, &PING[..30]).is_none());
        assert!(decode(LinkType::LINUX_SLL2, &[0u8; 10]).is_none());
        assert!(decode(LinkType(147), &PING).is_none());
        // Cut short: inside a tag, and inside the TCP payload (a snapped capture).
        let mut vlan = hex!("020000000002 020000000001 8100 0005 0800").to_vec();
        vlan.extend_from_slice(&PING[14..]);
        assert!(decode(LinkType::ETHERNET, &vlan).is_some());
        assert!(decode(LinkType::ETHERNET, &vlan[..16]).is_none());
        assert!(decode(LinkType::ETHERNET, &PING[..56]).is_none());
        // Not IP, and an IPv4 ethertype in front of an IPv6 version nibble.
        let mut arp = PING;
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert!(decode(LinkType::ETHERNET, &arp).is_none());
        let mut v6 = PING;
        v6[14] = 0x65;
        assert!(decode(LinkType::ETHERNET, &v6).is_none());
        assert!(decode(LinkType(0), &[2, 0, 0]).is_none());
    }
}
