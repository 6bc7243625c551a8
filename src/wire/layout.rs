//! Where the layers of a frame start: L2 header and VLAN tags, L3 (IPv4/IPv6 with extension
//! headers and fragments), L4. Parsed once per packet; the rewriter, the engine and the replay
//! statistics all work from a [`Layout`] instead of re-parsing.

use super::checksum;
use super::{
    be16, EtherType, EthernetFrame, IpProtocol, Ipv4Packet, Ipv6FragmentHeader, Ipv6Packet, Layer,
    Sll2Header, SllHeader, VlanHeader, WireError, WireErrorKind,
};
use super::{TcpPacket, UdpPacket};
use crate::capture::LinkType;
use crate::flow::FlowKey;
use std::net::IpAddr;

/// IP version of the L3 header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IpVersion {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

/// Fragment fields of an IPv4 header or IPv6 Fragment extension header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FragmentInfo {
    /// Offset of this fragment's data in bytes.
    pub offset: u16,
    /// More fragments follow.
    pub more: bool,
}

/// The IP part of a [`Layout`]. Offsets are from the start of the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpInfo {
    /// IPv4 or IPv6.
    pub version: IpVersion,
    /// Bytes from the start of the IP header to the upper-layer header (IPv6: fixed header plus
    /// the extension headers walked).
    pub header_len: usize,
    /// Declared length of the whole IP packet (IPv4 total length, IPv6 40 + payload length).
    pub total_len: usize,
    /// Upper-layer protocol (after IPv6 extension headers).
    pub protocol: IpProtocol,
    /// Offset of the upper-layer protocol's byte for IPv6 (the `next header` field that names it),
    /// or of the IPv4 protocol field.
    pub protocol_field: usize,
    /// Fragment fields, when this packet is a fragment.
    pub fragment: Option<FragmentInfo>,
    /// Offset of the L4 header: `None` for non-first fragments and when the headers before it
    /// were cut short by the capture.
    pub l4_offset: Option<usize>,
    /// The whole IP packet (per its length field) is in the captured bytes.
    pub complete: bool,
}

impl IpInfo {
    /// True for a datagram whose L4 header and payload are all here and unfragmented, so its
    /// L4 checksum can be computed.
    pub fn l4_checksummable(&self) -> bool {
        self.complete && self.fragment.is_none() && self.l4_offset.is_some()
    }
}

/// Offsets and protocols of one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Layout {
    /// The frame's link type.
    pub linktype: LinkType,
    /// Offset of the L3 header (= length of the link header including VLAN tags).
    pub l3_offset: usize,
    /// Number of 802.1Q/802.1ad tags walked.
    pub vlan_tags: u8,
    /// Offset of the EtherType field naming L3 (the innermost one), if the link type has one.
    pub ethertype_offset: Option<usize>,
    /// The L3 protocol (synthesised from the IP version for raw-IP link types).
    pub ethertype: EtherType,
    /// IP details when L3 is IPv4 or IPv6.
    pub ip: Option<IpInfo>,
}

/// Where L3 starts in a frame and what it is: the link header and VLAN tags only, nothing of
/// L3 itself is read (beyond the version nibble for raw-IP link types), so it works on frames
/// cut short anywhere after the link header (a small snap length).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LinkLayout {
    /// Offset of the L3 header (= length of the link header including VLAN tags).
    pub l3_offset: usize,
    /// Number of 802.1Q/802.1ad tags walked.
    pub vlan_tags: u8,
    /// Offset of the EtherType field naming L3 (the innermost one), if the link type has one.
    pub ethertype_offset: Option<usize>,
    /// The L3 protocol (synthesised from the IP version for raw-IP link types).
    pub ethertype: EtherType,
    /// Packet type of a Linux cooked header (0 to us, ..., 4 sent by us; see
    /// [`SllHeader::packet_type`]), `None` for other link types.
    pub packet_type: Option<u16>,
}

/// Link types [`parse_link`] and [`parse_layout`] decode.
pub const LINK_TYPES: [LinkType; 6] = [
    LinkType::ETHERNET,
    LinkType::LINUX_SLL,
    LinkType::LINUX_SLL2,
    LinkType::RAW,
    LinkType::IPV4,
    LinkType::IPV6,
];

/// Most VLAN tags walked before giving up on finding L3.
const MAX_TAGS: u8 = 4;

/// Parses the link header of `frame` (of `linktype`) and its VLAN tags: where L3 starts and
/// which protocol it is. Errors name the layer and the byte offset within `frame`.
pub fn parse_link(linktype: LinkType, frame: &[u8]) -> Result<LinkLayout, WireError> {
    let (mut off, mut ethertype, mut et_off, packet_type) = match linktype {
        LinkType::ETHERNET => {
            let f = EthernetFrame::new_checked(frame)?;
            (
                EthernetFrame::<&[u8]>::HEADER_LEN,
                f.ethertype(),
                Some(12),
                None,
            )
        }
        LinkType::LINUX_SLL => {
            let h = SllHeader::new_checked(frame)?;
            let pt = Some(h.packet_type());
            (SllHeader::<&[u8]>::HEADER_LEN, h.protocol(), Some(14), pt)
        }
        LinkType::LINUX_SLL2 => {
            let h = Sll2Header::new_checked(frame)?;
            let pt = Some(u16::from(h.packet_type()));
            (Sll2Header::<&[u8]>::HEADER_LEN, h.protocol(), Some(0), pt)
        }
        LinkType::RAW => {
            let et = ip_by_version(frame.first().copied())?;
            (0, et, None, None)
        }
        // The 4-byte address family is in the host byte order of whoever captured (NULL):
        // the IP version nibble after it says the same and cannot be misread.
        LinkType::NULL | LinkType::LOOP => {
            if frame.len() < 4 {
                return Err(WireError::truncated(Layer::Link, 4, frame.len()));
            }
            let et = ip_by_version(frame.get(4).copied()).map_err(|e| e.at(4))?;
            (4, et, None, None)
        }
        LinkType::IPV4 => (0, EtherType::IPV4, None, None),
        LinkType::IPV6 => (0, EtherType::IPV6, None, None),
        other => {
            return Err(WireError {
                layer: Layer::Link,
                offset: 0,
                kind: WireErrorKind::UnsupportedLinkType(other.0),
            })
        }
    };
    let mut tags = 0u8;
    while ethertype.is_vlan() && tags < MAX_TAGS {
        let v = VlanHeader::new_checked(&frame[off..]).map_err(|e| e.at(off))?;
        et_off = Some(off + 2);
        ethertype = v.ethertype();
        off += VlanHeader::<&[u8]>::HEADER_LEN;
        tags += 1;
    }
    Ok(LinkLayout {
        l3_offset: off,
        vlan_tags: tags,
        ethertype_offset: et_off,
        ethertype,
        packet_type,
    })
}

/// The IP ethertype a raw-IP frame's first byte names (its version nibble).
fn ip_by_version(first: Option<u8>) -> Result<EtherType, WireError> {
    match first.map(|b| b >> 4) {
        Some(4) => Ok(EtherType::IPV4),
        Some(6) => Ok(EtherType::IPV6),
        Some(v) => Err(WireError {
            layer: Layer::Ipv4,
            offset: 0,
            kind: WireErrorKind::BadVersion(v),
        }),
        None => Err(WireError::truncated(Layer::Ipv4, 1, 0)),
    }
}

/// Parses the link header of `frame` (of `linktype`) and, when it carries IP, the IP headers.
/// Errors name the layer and the byte offset within `frame`. The IP header must be all there,
/// the rest of the packet need not be: a frame cut by the snap length parses, with
/// [`IpInfo::complete`] false.
pub fn parse_layout(linktype: LinkType, frame: &[u8]) -> Result<Layout, WireError> {
    let link = parse_link(linktype, frame)?;
    let off = link.l3_offset;
    let ip = match link.ethertype {
        EtherType::IPV4 => Some(parse_ipv4(frame, off)?),
        EtherType::IPV6 => Some(parse_ipv6(frame, off)?),
        _ => None,
    };
    Ok(Layout {
        linktype,
        l3_offset: off,
        vlan_tags: link.vlan_tags,
        ethertype_offset: link.ethertype_offset,
        ethertype: link.ethertype,
        ip,
    })
}

fn parse_ipv4(frame: &[u8], off: usize) -> Result<IpInfo, WireError> {
    let p = Ipv4Packet::new_checked(&frame[off..]).map_err(|e| e.at(off))?;
    let hl = p.header_len();
    let total = p.packet_len();
    let fragment = p.is_fragment().then(|| FragmentInfo {
        offset: p.frag_offset(),
        more: p.more_frags(),
    });
    let first = p.frag_offset() == 0;
    Ok(IpInfo {
        version: IpVersion::V4,
        header_len: hl,
        total_len: total,
        protocol: p.protocol(),
        protocol_field: off + 9,
        fragment,
        l4_offset: first.then_some(off + hl),
        complete: frame.len() - off >= total,
    })
}

fn parse_ipv6(frame: &[u8], off: usize) -> Result<IpInfo, WireError> {
    let p = Ipv6Packet::new_checked(&frame[off..]).map_err(|e| e.at(off))?;
    let total = Ipv6Packet::<&[u8]>::HEADER_LEN + usize::from(p.payload_len());
    let mut next = p.next_header();
    let mut nh_field = off + 6;
    let mut at = off + Ipv6Packet::<&[u8]>::HEADER_LEN;
    let mut fragment = None;
    let mut reachable = true;
    // Walk extension headers (RFC 8200 §4) up to the upper-layer header.
    for _ in 0..16 {
        match next {
            IpProtocol::HOPOPT
            | IpProtocol::IPV6_ROUTE
            | IpProtocol::IPV6_OPTS
            | IpProtocol(135) => {
                if frame.len() < at + 2 {
                    reachable = false;
                    break;
                }
                let len = (usize::from(frame[at + 1]) + 1) * 8;
                nh_field = at;
                next = IpProtocol(frame[at]);
                at += len;
            }
            IpProtocol::AH => {
                if frame.len() < at + 2 {
                    reachable = false;
                    break;
                }
                let len = (usize::from(frame[at + 1]) + 2) * 4;
                nh_field = at;
                next = IpProtocol(frame[at]);
                at += len;
            }
            IpProtocol::IPV6_FRAG => {
                let Ok(f) = Ipv6FragmentHeader::new_checked(&frame[at.min(frame.len())..]) else {
                    reachable = false;
                    break;
                };
                fragment = Some(FragmentInfo {
                    offset: f.frag_offset(),
                    more: f.more_frags(),
                });
                nh_field = at;
                next = f.next_header();
                at += Ipv6FragmentHeader::<&[u8]>::HEADER_LEN;
                if f.frag_offset() != 0 {
                    // Non-first fragment: what follows is data, not a header.
                    reachable = false;
                    break;
                }
            }
            _ => break,
        }
    }
    if at > frame.len() {
        reachable = false;
    }
    Ok(IpInfo {
        version: IpVersion::V6,
        header_len: at - off,
        total_len: total,
        protocol: next,
        protocol_field: nh_field,
        fragment,
        l4_offset: reachable.then_some(at),
        complete: frame.len() - off >= total,
    })
}

impl Layout {
    /// The L3 bytes of `frame` (everything after the link header).
    pub fn l3<'a>(&self, frame: &'a [u8]) -> &'a [u8] {
        frame.get(self.l3_offset..).unwrap_or(&[])
    }

    /// End of the IP packet within `frame`: its declared length, or the end of the capture.
    pub fn ip_end(&self, frame_len: usize) -> usize {
        match self.ip {
            Some(ip) => (self.l3_offset + ip.total_len).min(frame_len),
            None => frame_len,
        }
    }

    /// The L4 bytes (header and payload up to the IP packet's end, Ethernet padding excluded).
    pub fn l4<'a>(&self, frame: &'a [u8]) -> Option<&'a [u8]> {
        let start = self.ip?.l4_offset?;
        let end = self.ip_end(frame.len());
        frame.get(start..end)
    }

    /// The TCP view of `frame`'s L4 bytes, when L4 is TCP and its header is all there.
    pub fn tcp<'a>(&self, frame: &'a [u8]) -> Option<TcpPacket<&'a [u8]>> {
        if self.ip?.protocol != IpProtocol::TCP {
            return None;
        }
        TcpPacket::new_checked(self.l4(frame)?).ok()
    }

    /// The UDP view of `frame`'s L4 bytes, when L4 is UDP and its header is all there.
    pub fn udp<'a>(&self, frame: &'a [u8]) -> Option<UdpPacket<&'a [u8]>> {
        if self.ip?.protocol != IpProtocol::UDP {
            return None;
        }
        UdpPacket::new_checked(self.l4(frame)?).ok()
    }

    /// Source and destination IP addresses of `frame`, when L3 is IP.
    pub fn addrs(&self, frame: &[u8]) -> Option<(IpAddr, IpAddr)> {
        let l3 = self.l3(frame);
        match self.ip?.version {
            IpVersion::V4 => {
                let (s, d) = v4_addrs(l3);
                Some((IpAddr::from(s), IpAddr::from(d)))
            }
            IpVersion::V6 => {
                let (s, d) = v6_addrs(l3);
                Some((IpAddr::from(s), IpAddr::from(d)))
            }
        }
    }

    /// The directed TCP/UDP 4-tuple of `frame`, when its L4 header is there.
    pub fn flow_key(&self, frame: &[u8]) -> Option<FlowKey> {
        let (s, d) = self.addrs(frame)?;
        let (sp, dp) = match (self.tcp(frame), self.udp(frame)) {
            (Some(t), _) => (t.src_port(), t.dst_port()),
            (_, Some(u)) => (u.src_port(), u.dst_port()),
            _ => return None,
        };
        Some(FlowKey::new(s, sp, d, dp))
    }

    /// Verifies the checksums of `frame` described by this layout: `(ipv4 header, l4)`, each
    /// `None` when it does not apply or cannot be computed (fragment, cut short, no checksum).
    pub fn verify_checksums(&self, frame: &[u8]) -> (Option<bool>, Option<bool>) {
        let Some(ip) = self.ip else {
            return (None, None);
        };
        let l3 = self.l3(frame);
        let v4 = match ip.version {
            IpVersion::V4 => l3.get(..ip.header_len).map(|h| checksum::verifies(h, 0)),
            IpVersion::V6 => None,
        };
        if !ip.l4_checksummable() {
            return (v4, None);
        }
        let Some(seg) = self.l4(frame) else {
            return (v4, None);
        };
        let Some(off) = checksum::l4_checksum_offset(ip.protocol) else {
            return (v4, None);
        };
        if seg.len() < off + 2 {
            return (v4, None);
        }
        let stored = be16(seg, off);
        let l4 = match ip.version {
            IpVersion::V4 => {
                if ip.protocol == IpProtocol::UDP && stored == 0 {
                    return (v4, None);
                }
                let (s, d) = v4_addrs(l3);
                checksum::l4_v4(s, d, ip.protocol, seg).map(|c| c == stored)
            }
            IpVersion::V6 => {
                let (s, d) = v6_addrs(l3);
                checksum::l4_v6(s, d, ip.protocol, seg).map(|c| c == stored)
            }
        };
        (v4, l4)
    }
}

/// Source and destination of an IPv4 header known to be at least 20 bytes long.
pub(crate) fn v4_addrs(l3: &[u8]) -> ([u8; 4], [u8; 4]) {
    let mut s = [0u8; 4];
    let mut d = [0u8; 4];
    s.copy_from_slice(&l3[12..16]);
    d.copy_from_slice(&l3[16..20]);
    (s, d)
}

/// Source and destination of an IPv6 header known to be at least 40 bytes long.
pub(crate) fn v6_addrs(l3: &[u8]) -> ([u8; 16], [u8; 16]) {
    let mut s = [0u8; 16];
    let mut d = [0u8; 16];
    s.copy_from_slice(&l3[8..24]);
    d.copy_from_slice(&l3[24..40]);
    (s, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hex_literal::hex;

    // The first SYN of pcaps/http_vlan.pcap: Ethernet + 802.1Q 100 + IPv4 + TCP (74+4 bytes).
    const VLAN_SYN: [u8; 78] = hex!(
        "0200c612c802 0200c612c801 8100 0064 0800"
        "4500003c65744000 4006b91e c612c801 c612c802"
        "eb16 0050 c49ba9f6 00000000 a002 faf0 626a 0000"
        "020405b4 0402 080ac1c4b2ba00000000 01 03030a"
    );

    #[test]
    fn bsd_loopback_headers_of_either_byte_order() {
        let ip = &VLAN_SYN[18..];
        for (lt, af) in [
            (LinkType::NULL, [2u8, 0, 0, 0]),
            (LinkType::NULL, [0, 0, 0, 2]),
            (LinkType::LOOP, [0, 0, 0, 2]),
        ] {
            let frame = [&af[..], ip].concat();
            let l = parse_layout(lt, &frame).unwrap();
            assert_eq!((l.l3_offset, l.ethertype), (4, EtherType::IPV4), "{lt}");
            assert_eq!(l.tcp(&frame).unwrap().dst_port(), 80);
        }
        let v6 = [
            &[30u8, 0, 0, 0][..],
            &[0x60, 0, 0, 0, 0, 0, 6, 64],
            &[0; 32],
        ]
        .concat();
        assert_eq!(
            parse_link(LinkType::NULL, &v6).unwrap().ethertype,
            EtherType::IPV6
        );
        // Cut inside the family, or a family followed by something that is not IP.
        assert!(parse_link(LinkType::NULL, &[2, 0, 0]).is_err());
        let e = parse_link(LinkType::NULL, &[2, 0, 0, 0, 0x15]).unwrap_err();
        assert_eq!(e.offset, 4);
    }

    #[test]
    fn vlan_ipv4_tcp() {
        let l = parse_layout(LinkType::ETHERNET, &VLAN_SYN).unwrap();
        assert_eq!(
            (l.l3_offset, l.vlan_tags, l.ethertype),
            (18, 1, EtherType::IPV4)
        );
        assert_eq!(l.ethertype_offset, Some(16));
        let ip = l.ip.unwrap();
        assert_eq!(
            (ip.header_len, ip.total_len, ip.protocol),
            (20, 60, IpProtocol::TCP)
        );
        assert_eq!(ip.l4_offset, Some(38));
        assert!(ip.complete && ip.l4_checksummable());
        assert_eq!(l.verify_checksums(&VLAN_SYN), (Some(true), Some(true)));
        let k = l.flow_key(&VLAN_SYN).unwrap();
        assert_eq!(
            (k.src.to_string(), k.dst.to_string()),
            ("198.18.200.1:60182".into(), "198.18.200.2:80".into())
        );
        assert_eq!(l.tcp(&VLAN_SYN).unwrap().mss(), Some(1460));
        assert!(l.udp(&VLAN_SYN).is_none());
        // Snapped: not complete, L4 not checksummable.
        let l = parse_layout(LinkType::ETHERNET, &VLAN_SYN[..60]).unwrap();
        assert!(!l.ip.unwrap().complete);
        assert_eq!(l.verify_checksums(&VLAN_SYN[..60]), (Some(true), None));
    }

    #[test]
    fn ipv6_with_fragment_header() {
        // IPv6, Hop-by-Hop (8 bytes) -> Fragment (offset 0, MF) -> UDP.
        let mut f = Vec::new();
        f.extend_from_slice(&hex!("60000000 0018 00 40"));
        f.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        f.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        f.extend_from_slice(&hex!("2c00 010400000000")); // HBH: next=44, len 0, PadN
        f.extend_from_slice(&hex!("1100 0001 00000007")); // Frag: next=17, offset 0, MF
        f.extend_from_slice(&hex!("0035 0035 0010 0000")); // UDP
        let l = parse_layout(LinkType::RAW, &f).unwrap();
        let ip = l.ip.unwrap();
        assert_eq!(
            (ip.version, ip.protocol, ip.header_len),
            (IpVersion::V6, IpProtocol::UDP, 56)
        );
        assert_eq!(
            ip.fragment,
            Some(FragmentInfo {
                offset: 0,
                more: true
            })
        );
        assert_eq!((ip.l4_offset, ip.protocol_field), (Some(56), 48));
        assert!(!ip.l4_checksummable());
        // Non-first fragment: no L4 header.
        f[50] = 0x05;
        f[51] = 0xc8;
        let ip = parse_layout(LinkType::RAW, &f).unwrap().ip.unwrap();
        assert_eq!(ip.l4_offset, None);
    }

    #[test]
    fn ipv4_non_first_fragment_and_errors() {
        let mut f = VLAN_SYN;
        f[24] = 0x00;
        f[25] = 0x10; // offset 128
        let ip = parse_layout(LinkType::ETHERNET, &f).unwrap().ip.unwrap();
        assert_eq!(ip.l4_offset, None);
        assert_eq!(
            ip.fragment,
            Some(FragmentInfo {
                offset: 128,
                more: false
            })
        );
        let e = parse_layout(LinkType::ETHERNET, &VLAN_SYN[..30]).unwrap_err();
        assert_eq!((e.layer, e.offset), (Layer::Ipv4, 18));
        let e = parse_layout(LinkType::ETHERNET, &VLAN_SYN[..16]).unwrap_err();
        assert_eq!((e.layer, e.offset), (Layer::Vlan, 14));
        assert!(parse_layout(LinkType(147), &VLAN_SYN).is_err());
        // ARP is L2-only: parses, no IP.
        let mut arp = VLAN_SYN;
        arp[16] = 0x08;
        arp[17] = 0x06;
        assert!(parse_layout(LinkType::ETHERNET, &arp).unwrap().ip.is_none());
    }

    /// A 1,400-byte TCP segment behind Ethernet + 802.1ad + 802.1Q, cut at intercept's snap
    /// length (278): the IP total length is far beyond the bytes captured.
    fn qinq_snapped() -> Vec<u8> {
        let mut f = hex!("0200c612c802 0200c612c801 88a8 00c8 8100 0064 0800").to_vec();
        f.extend_from_slice(&VLAN_SYN[18..]);
        f[24..26].copy_from_slice(&1440u16.to_be_bytes()); // IPv4 total length
        f.resize(278, 0x61);
        f
    }

    #[test]
    fn link_only() {
        let l = parse_link(LinkType::ETHERNET, &VLAN_SYN).unwrap();
        assert_eq!(
            l,
            LinkLayout {
                l3_offset: 18,
                vlan_tags: 1,
                ethertype_offset: Some(16),
                ethertype: EtherType::IPV4,
                packet_type: None,
            }
        );
        // QinQ, snapped: the link part and the IP header parse; the packet is not complete.
        let f = qinq_snapped();
        let l = parse_link(LinkType::ETHERNET, &f).unwrap();
        assert_eq!(
            (l.l3_offset, l.vlan_tags, l.ethertype),
            (22, 2, EtherType::IPV4)
        );
        let full = parse_layout(LinkType::ETHERNET, &f).unwrap();
        let ip = full.ip.unwrap();
        assert_eq!(
            (full.l3_offset, ip.total_len, ip.complete),
            (22, 1440, false)
        );
        assert_eq!(ip.l4_offset, Some(42));
        assert!(full.tcp(&f).is_some());
        // Only the link header is needed: an IP header cut short still gives L3's offset.
        let l = parse_link(LinkType::ETHERNET, &f[..30]).unwrap();
        assert_eq!(l.l3_offset, 22);
        assert!(parse_layout(LinkType::ETHERNET, &f[..30]).is_err());
        // Truncated link header or tag, unknown link type, raw IP with a bad version.
        let e = parse_link(LinkType::ETHERNET, &f[..13]).unwrap_err();
        assert_eq!((e.layer, e.offset), (Layer::Ethernet, 0));
        let e = parse_link(LinkType::ETHERNET, &f[..20]).unwrap_err();
        assert_eq!((e.layer, e.offset), (Layer::Vlan, 18));
        let e = parse_link(LinkType(147), &f).unwrap_err();
        assert_eq!(e.kind, WireErrorKind::UnsupportedLinkType(147));
        let e = parse_link(LinkType::RAW, &[0x30; 20]).unwrap_err();
        assert_eq!(e.kind, WireErrorKind::BadVersion(3));
        assert!(parse_link(LinkType::RAW, &[]).is_err());
        let l = parse_link(LinkType::RAW, &VLAN_SYN[18..]).unwrap();
        assert_eq!((l.l3_offset, l.ethertype), (0, EtherType::IPV4));
        let l = parse_link(LinkType::IPV6, &[]).unwrap();
        assert_eq!((l.l3_offset, l.ethertype), (0, EtherType::IPV6));
        // Agrees with parse_layout wherever both parse.
        for (lt, frame) in [
            (LinkType::ETHERNET, &VLAN_SYN[..]),
            (LinkType::ETHERNET, &f[..]),
            (LinkType::RAW, &VLAN_SYN[18..]),
        ] {
            let (a, b) = (
                parse_link(lt, frame).unwrap(),
                parse_layout(lt, frame).unwrap(),
            );
            assert_eq!(
                (a.l3_offset, a.vlan_tags, a.ethertype_offset, a.ethertype),
                (b.l3_offset, b.vlan_tags, b.ethertype_offset, b.ethertype)
            );
        }
    }

    #[test]
    fn sll_and_sll2() {
        let mut sll = hex!("0004 0001 0006 0200c612c8010000 0800").to_vec();
        sll.extend_from_slice(&VLAN_SYN[18..]);
        let l = parse_layout(LinkType::LINUX_SLL, &sll).unwrap();
        assert_eq!((l.l3_offset, l.ethertype_offset), (16, Some(14)));
        assert_eq!(l.ip.unwrap().l4_offset, Some(36));
        // The cooked packet type (4: sent by this host) comes with the link part.
        let link = parse_link(LinkType::LINUX_SLL, &sll).unwrap();
        assert_eq!((link.l3_offset, link.packet_type), (16, Some(4)));
        let mut sll2 = hex!("0800 0000 00000002 0001 04 06 0200c612c8010000").to_vec();
        sll2.extend_from_slice(&VLAN_SYN[18..]);
        let l = parse_layout(LinkType::LINUX_SLL2, &sll2).unwrap();
        assert_eq!((l.l3_offset, l.ethertype_offset), (20, Some(0)));
        assert_eq!(l.verify_checksums(&sll2), (Some(true), Some(true)));
        sll2[10] = 0;
        sll2[..2].copy_from_slice(&[0x86, 0xdd]);
        let link = parse_link(LinkType::LINUX_SLL2, &sll2).unwrap();
        assert_eq!(
            (link.l3_offset, link.packet_type, link.ethertype),
            (20, Some(0), EtherType::IPV6)
        );
        let e = parse_link(LinkType::LINUX_SLL2, &sll2[..19]).unwrap_err();
        assert_eq!(e.layer, Layer::Sll2);
        assert!(EtherType::IPV6.is_ip() && EtherType::IPV4.is_ip() && !EtherType::ARP.is_ip());
    }
}
