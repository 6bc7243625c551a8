//! IPv4 header (RFC 791), including the fragment fields.

use super::checksum;
use super::{be16, put16, IpProtocol, Layer, WireError, WireErrorKind};
use std::net::Ipv4Addr;

/// A view of an IPv4 packet. `new_checked` guarantees the whole header (IHL*4 bytes) is present;
/// the total length may exceed the buffer (a snapped capture), and [`payload`](Self::payload)
/// returns what was captured.
#[derive(Debug, Clone)]
pub struct Ipv4Packet<T> {
    buffer: T,
}

/// Flag bit "more fragments" in the flags/offset word.
const MF: u16 = 0x2000;
/// Flag bit "don't fragment".
const DF: u16 = 0x4000;

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// Length of the header without options.
    pub const MIN_HEADER_LEN: usize = 20;

    /// Wraps `buffer` after checking version, IHL and that the header is all there.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let b = buffer.as_ref();
        if b.len() < Self::MIN_HEADER_LEN {
            return Err(WireError::truncated(
                Layer::Ipv4,
                Self::MIN_HEADER_LEN,
                b.len(),
            ));
        }
        let err = |kind| WireError {
            layer: Layer::Ipv4,
            offset: 0,
            kind,
        };
        if b[0] >> 4 != 4 {
            return Err(err(WireErrorKind::BadVersion(b[0] >> 4)));
        }
        let hl = usize::from(b[0] & 0x0f) * 4;
        if hl < Self::MIN_HEADER_LEN {
            return Err(err(WireErrorKind::BadHeaderLength(hl)));
        }
        if b.len() < hl {
            return Err(WireError::truncated(Layer::Ipv4, hl, b.len()));
        }
        let total = usize::from(be16(b, 2));
        // 0 is what Linux writes in a GSO super-segment longer than 64 KiB (BIG TCP): the
        // packet is then as long as what was captured (see `packet_len`).
        if total < hl && total != 0 {
            return Err(err(WireErrorKind::BadTotalLength(total)));
        }
        Ok(Ipv4Packet { buffer })
    }

    /// Gives the buffer back.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Header length in bytes (IHL * 4).
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[0] & 0x0f) * 4
    }

    /// The TOS / DSCP+ECN byte.
    pub fn tos(&self) -> u8 {
        self.buffer.as_ref()[1]
    }

    /// Total length field (header + payload).
    pub fn total_len(&self) -> u16 {
        be16(self.buffer.as_ref(), 2)
    }

    /// Length of the whole packet: the total-length field, or for a super-segment that carries
    /// 0 there (BIG TCP, RFC 2675's idea for IPv4 as Linux does it), the buffer's length.
    pub fn packet_len(&self) -> usize {
        match usize::from(self.total_len()) {
            0 => self.buffer.as_ref().len(),
            n => n,
        }
    }

    /// Identification.
    pub fn ident(&self) -> u16 {
        be16(self.buffer.as_ref(), 4)
    }

    /// Don't-fragment flag.
    pub fn dont_frag(&self) -> bool {
        be16(self.buffer.as_ref(), 6) & DF != 0
    }

    /// More-fragments flag.
    pub fn more_frags(&self) -> bool {
        be16(self.buffer.as_ref(), 6) & MF != 0
    }

    /// Fragment offset in bytes.
    pub fn frag_offset(&self) -> u16 {
        (be16(self.buffer.as_ref(), 6) & 0x1fff) * 8
    }

    /// True when this is a fragment (MF set or offset non-zero).
    pub fn is_fragment(&self) -> bool {
        be16(self.buffer.as_ref(), 6) & (MF | 0x1fff) != 0
    }

    /// Time to live.
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[8]
    }

    /// Protocol of the payload.
    pub fn protocol(&self) -> IpProtocol {
        IpProtocol(self.buffer.as_ref()[9])
    }

    /// Header checksum field.
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), 10)
    }

    /// Source address.
    pub fn src_addr(&self) -> Ipv4Addr {
        let b = self.buffer.as_ref();
        Ipv4Addr::new(b[12], b[13], b[14], b[15])
    }

    /// Destination address.
    pub fn dst_addr(&self) -> Ipv4Addr {
        let b = self.buffer.as_ref();
        Ipv4Addr::new(b[16], b[17], b[18], b[19])
    }

    /// True when the header checksum verifies.
    pub fn verify_checksum(&self) -> bool {
        checksum::verifies(&self.buffer.as_ref()[..self.header_len()], 0)
    }

    /// The payload as captured: from the end of the header to the total length, or to the end of
    /// the buffer if the capture was cut shorter.
    pub fn payload(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        let end = self.packet_len().min(b.len());
        &b[self.header_len()..end]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    /// Sets the TOS byte (checksum untouched).
    pub fn set_tos(&mut self, v: u8) {
        self.buffer.as_mut()[1] = v;
    }

    /// Sets the total length (checksum untouched).
    pub fn set_total_len(&mut self, v: u16) {
        put16(self.buffer.as_mut(), 2, v);
    }

    /// Sets the identification (checksum untouched).
    pub fn set_ident(&mut self, v: u16) {
        put16(self.buffer.as_mut(), 4, v);
    }

    /// Sets the TTL (checksum untouched).
    pub fn set_ttl(&mut self, v: u8) {
        self.buffer.as_mut()[8] = v;
    }

    /// Sets the protocol (checksum untouched).
    pub fn set_protocol(&mut self, p: IpProtocol) {
        self.buffer.as_mut()[9] = p.0;
    }

    /// Sets the checksum field.
    pub fn set_checksum(&mut self, v: u16) {
        put16(self.buffer.as_mut(), 10, v);
    }

    /// Sets the source address (checksums untouched).
    pub fn set_src_addr(&mut self, a: Ipv4Addr) {
        self.buffer.as_mut()[12..16].copy_from_slice(&a.octets());
    }

    /// Sets the destination address (checksums untouched).
    pub fn set_dst_addr(&mut self, a: Ipv4Addr) {
        self.buffer.as_mut()[16..20].copy_from_slice(&a.octets());
    }

    /// Recomputes the header checksum in full.
    pub fn fill_checksum(&mut self) {
        let hl = self.header_len();
        let c = checksum::ipv4_header(&self.buffer.as_ref()[..hl]);
        self.set_checksum(c);
    }

    /// Mutable payload as captured (see [`payload`](Self::payload)).
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let hl = self.header_len();
        let end = self.packet_len().min(self.buffer.as_ref().len());
        &mut self.buffer.as_mut()[hl..end]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zero_total_length_is_a_big_super_segment() {
        let mut p = [0u8; 100];
        p[0] = 0x45;
        p[9] = 6;
        let v = Ipv4Packet::new_checked(&p[..]).unwrap();
        assert_eq!((v.total_len(), v.packet_len()), (0, 100));
        assert_eq!(v.payload().len(), 80);
        p[3] = 10; // 10 < 20: still refused
        assert!(Ipv4Packet::new_checked(&p[..]).is_err());
    }
    use hex_literal::hex;

    // IPv4 header of the first SYN in pcaps/http_keepalive.pcap.
    const HDR: [u8; 20] = hex!("4500003c65744000 4006b91e c612c801 c612c802");

    #[test]
    fn deconstruct() {
        let p = Ipv4Packet::new_checked(&HDR[..]).unwrap();
        assert_eq!(
            (p.header_len(), p.total_len(), p.ident(), p.ttl()),
            (20, 60, 0x6574, 64)
        );
        assert_eq!(p.protocol(), IpProtocol::TCP);
        assert!(p.dont_frag() && !p.more_frags() && !p.is_fragment());
        assert_eq!(p.src_addr(), Ipv4Addr::new(198, 18, 200, 1));
        assert_eq!(p.dst_addr(), Ipv4Addr::new(198, 18, 200, 2));
        assert!(p.verify_checksum());
        // Snapped: total length 60 but only the header captured.
        assert!(p.payload().is_empty());
    }

    #[test]
    fn construct() {
        let mut b = [0u8; 20];
        b[0] = 0x45;
        b[3] = 20; // new_checked needs a total length covering the header
        b[6] = 0x40;
        let mut p = Ipv4Packet::new_checked(&mut b[..]).unwrap();
        p.set_total_len(60);
        p.set_ident(0x6574);
        p.set_ttl(64);
        p.set_protocol(IpProtocol::TCP);
        p.set_src_addr(Ipv4Addr::new(198, 18, 200, 1));
        p.set_dst_addr(Ipv4Addr::new(198, 18, 200, 2));
        p.fill_checksum();
        assert_eq!(b, HDR);
    }

    #[test]
    fn fragments_and_errors() {
        let mut b = HDR;
        b[6] = 0x20; // MF, offset 0: first fragment
        b[7] = 0x00;
        let p = Ipv4Packet::new_checked(&b[..]).unwrap();
        assert!(p.is_fragment() && p.more_frags() && p.frag_offset() == 0);
        b[6] = 0x00;
        b[7] = 0xb9; // offset 185*8
        let p = Ipv4Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.frag_offset(), 1480);
        assert!(Ipv4Packet::new_checked(&HDR[..19]).is_err());
        let mut v = HDR;
        v[0] = 0x65;
        assert!(Ipv4Packet::new_checked(&v[..]).is_err());
        v[0] = 0x44;
        assert!(Ipv4Packet::new_checked(&v[..]).is_err());
        v[0] = 0x46; // 24-byte header in 20 bytes
        assert!(Ipv4Packet::new_checked(&v[..]).is_err());
        let mut t = HDR;
        t[3] = 10; // total length below header
        assert!(Ipv4Packet::new_checked(&t[..]).is_err());
    }
}
