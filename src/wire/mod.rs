//! Packet views over borrowed bytes (Ethernet, 802.1Q, Linux cooked SLL/SLL2, IPv4 incl.
//! fragments, IPv6 with extension headers, TCP, UDP, ICMP/ICMPv6), the [`Layout`] of a frame
//! (where L2, L3 and L4 start), and checksums (full and RFC 1624 incremental).
//!
//! Every view checks its length once in `new_checked`; after that no accessor can panic. Getters
//! need `T: AsRef<[u8]>`, setters `T: AsMut<[u8]>`, so a view works over `&[u8]`, `&mut [u8]` and
//! `Vec<u8>` alike. This module never logs, never allocates per packet and never performs I/O.

pub mod checksum;
mod ethernet;
pub mod gso;
mod icmp;
mod ipv4;
mod ipv6;
mod layout;
mod sll;
mod tcp;
mod udp;

pub use ethernet::{EthernetFrame, MacAddr, MacParseError, VlanHeader};
pub use icmp::IcmpPacket;
pub use ipv4::Ipv4Packet;
pub use ipv6::{Ipv6FragmentHeader, Ipv6Packet};
pub use layout::{
    parse_layout, parse_link, FragmentInfo, IpInfo, IpVersion, Layout, LinkLayout, LINK_TYPES,
};
pub(crate) use layout::{v4_addrs as layout_addrs_v4, v6_addrs as layout_addrs_v6};
pub use sll::{Sll2Header, SllHeader};
pub use tcp::{TcpFlags, TcpOption, TcpOptions, TcpPacket};
pub use udp::UdpPacket;

use std::fmt;

/// An EtherType (IEEE 802.3 Length/Type field); unknown values still parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EtherType(pub u16);

impl EtherType {
    /// Internet Protocol version 4 (RFC 894).
    pub const IPV4: EtherType = EtherType(0x0800);
    /// Address Resolution Protocol (RFC 826).
    pub const ARP: EtherType = EtherType(0x0806);
    /// IEEE 802.1Q VLAN tag (C-tag).
    pub const VLAN: EtherType = EtherType(0x8100);
    /// IEEE 802.1ad service VLAN tag (S-tag, QinQ).
    pub const QINQ: EtherType = EtherType(0x88a8);
    /// Internet Protocol version 6 (RFC 2464).
    pub const IPV6: EtherType = EtherType(0x86dd);

    /// True for the tag protocol identifiers of 802.1Q and 802.1ad.
    pub const fn is_vlan(self) -> bool {
        self.0 == 0x8100 || self.0 == 0x88a8 || self.0 == 0x9100
    }

    /// True for IPv4 and IPv6.
    pub const fn is_ip(self) -> bool {
        self.0 == Self::IPV4.0 || self.0 == Self::IPV6.0
    }
}

impl fmt::Display for EtherType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{:04x}", self.0)
    }
}

/// An IP protocol / IPv6 next-header number (IANA registry); unknown values still parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IpProtocol(pub u8);

impl IpProtocol {
    /// IPv6 Hop-by-Hop Options (RFC 8200 §4.3).
    pub const HOPOPT: IpProtocol = IpProtocol(0);
    /// Internet Control Message Protocol (RFC 792).
    pub const ICMP: IpProtocol = IpProtocol(1);
    /// Transmission Control Protocol (RFC 9293).
    pub const TCP: IpProtocol = IpProtocol(6);
    /// User Datagram Protocol (RFC 768).
    pub const UDP: IpProtocol = IpProtocol(17);
    /// IPv6 Routing header (RFC 8200 §4.4).
    pub const IPV6_ROUTE: IpProtocol = IpProtocol(43);
    /// IPv6 Fragment header (RFC 8200 §4.5).
    pub const IPV6_FRAG: IpProtocol = IpProtocol(44);
    /// Authentication Header (RFC 4302).
    pub const AH: IpProtocol = IpProtocol(51);
    /// ICMP for IPv6 (RFC 4443).
    pub const ICMPV6: IpProtocol = IpProtocol(58);
    /// IPv6 No Next Header (RFC 8200 §4.7).
    pub const IPV6_NONXT: IpProtocol = IpProtocol(59);
    /// IPv6 Destination Options (RFC 8200 §4.6).
    pub const IPV6_OPTS: IpProtocol = IpProtocol(60);
}

impl fmt::Display for IpProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            IpProtocol::TCP => f.write_str("TCP"),
            IpProtocol::UDP => f.write_str("UDP"),
            IpProtocol::ICMP => f.write_str("ICMP"),
            IpProtocol::ICMPV6 => f.write_str("ICMPv6"),
            _ => write!(f, "protocol {}", self.0),
        }
    }
}

/// The protocol layer a [`WireError`] was found in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Layer {
    /// Ethernet header.
    Ethernet,
    /// 802.1Q / 802.1ad tag.
    Vlan,
    /// Linux cooked capture v1 header.
    Sll,
    /// Linux cooked capture v2 header.
    Sll2,
    /// IPv4 header.
    Ipv4,
    /// IPv6 header or one of its extension headers.
    Ipv6,
    /// TCP header.
    Tcp,
    /// UDP header.
    Udp,
    /// ICMP or ICMPv6 header.
    Icmp,
    /// The link type itself.
    Link,
}

impl fmt::Display for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Layer::Ethernet => "Ethernet",
            Layer::Vlan => "802.1Q",
            Layer::Sll => "Linux cooked (SLL)",
            Layer::Sll2 => "Linux cooked v2 (SLL2)",
            Layer::Ipv4 => "IPv4",
            Layer::Ipv6 => "IPv6",
            Layer::Tcp => "TCP",
            Layer::Udp => "UDP",
            Layer::Icmp => "ICMP",
            Layer::Link => "link layer",
        })
    }
}

/// What is wrong with a header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WireErrorKind {
    /// Fewer bytes than the header needs.
    Truncated {
        /// Bytes the header needs.
        need: usize,
        /// Bytes available.
        have: usize,
    },
    /// The version field is not the expected one.
    BadVersion(u8),
    /// A header-length field is smaller than the fixed header.
    BadHeaderLength(usize),
    /// The total-length field is smaller than the header.
    BadTotalLength(usize),
    /// A link type these views do not decode.
    UnsupportedLinkType(u32),
}

/// A malformed or too-short header: which layer, at which byte offset of the frame, and what.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[error("{layer} header at byte {offset}: {kind}")]
pub struct WireError {
    /// The layer whose header is bad.
    pub layer: Layer,
    /// Byte offset of that header within the buffer given to the view (or frame, for layouts).
    pub offset: usize,
    /// What is wrong.
    pub kind: WireErrorKind,
}

impl fmt::Display for WireErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            WireErrorKind::Truncated { need, have } => {
                write!(f, "cut short ({have} bytes, needs {need})")
            }
            WireErrorKind::BadVersion(v) => write!(f, "wrong version {v}"),
            WireErrorKind::BadHeaderLength(l) => write!(f, "header length {l} is too small"),
            WireErrorKind::BadTotalLength(l) => {
                write!(f, "total length {l} is smaller than the header")
            }
            WireErrorKind::UnsupportedLinkType(t) => write!(f, "unsupported link type {t}"),
        }
    }
}

impl WireError {
    pub(crate) const fn truncated(layer: Layer, need: usize, have: usize) -> Self {
        WireError {
            layer,
            offset: 0,
            kind: WireErrorKind::Truncated { need, have },
        }
    }

    /// The same error with its offset moved by `base` (a view's error placed in its frame).
    pub const fn at(mut self, base: usize) -> Self {
        self.offset += base;
        self
    }
}

/// Reads a big-endian u16 at `off` (panics out of bounds: callers check first).
#[inline]
pub(crate) fn be16(b: &[u8], off: usize) -> u16 {
    u16::from_be_bytes([b[off], b[off + 1]])
}

/// Reads a big-endian u32 at `off` (panics out of bounds: callers check first).
#[inline]
pub(crate) fn be32(b: &[u8], off: usize) -> u32 {
    u32::from_be_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

/// Writes a big-endian u16 at `off` (panics out of bounds: callers check first).
#[inline]
pub(crate) fn put16(b: &mut [u8], off: usize, v: u16) {
    b[off..off + 2].copy_from_slice(&v.to_be_bytes());
}

/// Writes a big-endian u32 at `off` (panics out of bounds: callers check first).
#[inline]
pub(crate) fn put32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_be_bytes());
}
