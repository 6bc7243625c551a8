//! IPv6 fixed header (RFC 8200 §3) and the Fragment extension header (RFC 8200 §4.5).

use super::{be16, be32, put16, put32, IpProtocol, Layer, WireError, WireErrorKind};
use std::net::Ipv6Addr;

/// A view of an IPv6 packet's fixed 40-byte header; the payload length may exceed the buffer
/// (a snapped capture) and [`payload`](Self::payload) returns what was captured.
#[derive(Debug, Clone)]
pub struct Ipv6Packet<T> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    /// Length of the fixed header.
    pub const HEADER_LEN: usize = 40;

    /// Wraps `buffer` after checking the version and that the fixed header is all there.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let b = buffer.as_ref();
        if b.len() < Self::HEADER_LEN {
            return Err(WireError::truncated(Layer::Ipv6, Self::HEADER_LEN, b.len()));
        }
        if b[0] >> 4 != 6 {
            return Err(WireError {
                layer: Layer::Ipv6,
                offset: 0,
                kind: WireErrorKind::BadVersion(b[0] >> 4),
            });
        }
        Ok(Ipv6Packet { buffer })
    }

    /// Gives the buffer back.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Traffic class (8 bits).
    pub fn traffic_class(&self) -> u8 {
        ((be32(self.buffer.as_ref(), 0) >> 20) & 0xff) as u8
    }

    /// Flow label (20 bits).
    pub fn flow_label(&self) -> u32 {
        be32(self.buffer.as_ref(), 0) & 0x000f_ffff
    }

    /// Payload length field (extension headers + upper layer).
    pub fn payload_len(&self) -> u16 {
        be16(self.buffer.as_ref(), 4)
    }

    /// Next header of the fixed header.
    pub fn next_header(&self) -> IpProtocol {
        IpProtocol(self.buffer.as_ref()[6])
    }

    /// Hop limit.
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[7]
    }

    /// Source address.
    pub fn src_addr(&self) -> Ipv6Addr {
        let mut a = [0u8; 16];
        a.copy_from_slice(&self.buffer.as_ref()[8..24]);
        Ipv6Addr::from(a)
    }

    /// Destination address.
    pub fn dst_addr(&self) -> Ipv6Addr {
        let mut a = [0u8; 16];
        a.copy_from_slice(&self.buffer.as_ref()[24..40]);
        Ipv6Addr::from(a)
    }

    /// The payload as captured (extension headers included).
    pub fn payload(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        let end = (Self::HEADER_LEN + usize::from(self.payload_len())).min(b.len());
        &b[Self::HEADER_LEN..end]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6Packet<T> {
    /// Sets the traffic class.
    pub fn set_traffic_class(&mut self, tc: u8) {
        let b = self.buffer.as_mut();
        let w = (be32(b, 0) & 0xf00f_ffff) | (u32::from(tc) << 20);
        put32(b, 0, w);
    }

    /// Sets the flow label (masked to 20 bits).
    pub fn set_flow_label(&mut self, fl: u32) {
        let b = self.buffer.as_mut();
        let w = (be32(b, 0) & 0xfff0_0000) | (fl & 0x000f_ffff);
        put32(b, 0, w);
    }

    /// Sets the payload length.
    pub fn set_payload_len(&mut self, v: u16) {
        put16(self.buffer.as_mut(), 4, v);
    }

    /// Sets the next header of the fixed header.
    pub fn set_next_header(&mut self, p: IpProtocol) {
        self.buffer.as_mut()[6] = p.0;
    }

    /// Sets the hop limit.
    pub fn set_hop_limit(&mut self, v: u8) {
        self.buffer.as_mut()[7] = v;
    }

    /// Sets the source address (upper-layer checksums untouched).
    pub fn set_src_addr(&mut self, a: Ipv6Addr) {
        self.buffer.as_mut()[8..24].copy_from_slice(&a.octets());
    }

    /// Sets the destination address (upper-layer checksums untouched).
    pub fn set_dst_addr(&mut self, a: Ipv6Addr) {
        self.buffer.as_mut()[24..40].copy_from_slice(&a.octets());
    }
}

/// A view of the 8-byte IPv6 Fragment extension header.
#[derive(Debug, Clone)]
pub struct Ipv6FragmentHeader<T> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv6FragmentHeader<T> {
    /// Length of the fragment header.
    pub const HEADER_LEN: usize = 8;

    /// Wraps `buffer` after checking it holds a whole fragment header.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let have = buffer.as_ref().len();
        if have < Self::HEADER_LEN {
            return Err(WireError::truncated(Layer::Ipv6, Self::HEADER_LEN, have));
        }
        Ok(Ipv6FragmentHeader { buffer })
    }

    /// Next header after this one.
    pub fn next_header(&self) -> IpProtocol {
        IpProtocol(self.buffer.as_ref()[0])
    }

    /// Fragment offset in bytes.
    pub fn frag_offset(&self) -> u16 {
        be16(self.buffer.as_ref(), 2) & 0xfff8
    }

    /// More-fragments flag.
    pub fn more_frags(&self) -> bool {
        be16(self.buffer.as_ref(), 2) & 1 != 0
    }

    /// Identification.
    pub fn ident(&self) -> u32 {
        be32(self.buffer.as_ref(), 4)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6FragmentHeader<T> {
    /// Sets next header, offset (bytes, multiple of 8), MF flag and identification.
    pub fn set(&mut self, next: IpProtocol, offset: u16, more: bool, ident: u32) {
        let b = self.buffer.as_mut();
        b[0] = next.0;
        b[1] = 0;
        put16(b, 2, (offset & 0xfff8) | u16::from(more));
        put32(b, 4, ident);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hex_literal::hex;

    // IPv6 header of the first SYN in pcaps/http_ipv6.pcap (flow label 0xcf4c4, hop limit 64).
    const HDR: [u8; 40] = hex!(
        "600cf4c4 0028 06 40"
        "20010db8020000000000000000000001"
        "20010db8020000000000000000000002"
    );
    const FRAG: [u8; 8] = hex!("11 00 05c9 12345678");

    #[test]
    fn deconstruct() {
        let p = Ipv6Packet::new_checked(&HDR[..]).unwrap();
        assert_eq!((p.traffic_class(), p.flow_label()), (0, 0xcf4c4));
        assert_eq!(
            (p.payload_len(), p.next_header(), p.hop_limit()),
            (40, IpProtocol::TCP, 64)
        );
        assert_eq!(p.src_addr(), "2001:db8:200::1".parse::<Ipv6Addr>().unwrap());
        assert_eq!(p.dst_addr(), "2001:db8:200::2".parse::<Ipv6Addr>().unwrap());
        assert!(p.payload().is_empty());
        let f = Ipv6FragmentHeader::new_checked(&FRAG[..]).unwrap();
        assert_eq!(
            (f.next_header(), f.frag_offset(), f.more_frags(), f.ident()),
            (IpProtocol::UDP, 1480, true, 0x12345678)
        );
    }

    #[test]
    fn construct() {
        let mut b = [0u8; 40];
        b[0] = 0x60;
        let mut p = Ipv6Packet::new_checked(&mut b[..]).unwrap();
        p.set_traffic_class(0xb8);
        p.set_flow_label(0xcf4c4);
        p.set_traffic_class(0);
        p.set_payload_len(40);
        p.set_next_header(IpProtocol::TCP);
        p.set_hop_limit(64);
        p.set_src_addr("2001:db8:200::1".parse().unwrap());
        p.set_dst_addr("2001:db8:200::2".parse().unwrap());
        assert_eq!(b, HDR);
        let mut f = [0u8; 8];
        Ipv6FragmentHeader::new_checked(&mut f[..]).unwrap().set(
            IpProtocol::UDP,
            1480,
            true,
            0x12345678,
        );
        assert_eq!(f, FRAG);
    }

    #[test]
    fn errors() {
        assert!(Ipv6Packet::new_checked(&HDR[..39]).is_err());
        let mut v = HDR;
        v[0] = 0x40;
        assert!(Ipv6Packet::new_checked(&v[..]).is_err());
        assert!(Ipv6FragmentHeader::new_checked(&FRAG[..7]).is_err());
    }
}
