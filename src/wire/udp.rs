//! UDP header (RFC 768).

use super::{be16, put16, Layer, WireError};

/// A view of a UDP datagram; `new_checked` guarantees the 8-byte header.
#[derive(Debug, Clone)]
pub struct UdpPacket<T> {
    buffer: T,
}

impl<T: AsRef<[u8]>> UdpPacket<T> {
    /// Length of the UDP header.
    pub const HEADER_LEN: usize = 8;

    /// Wraps `buffer` after checking it holds the header.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let have = buffer.as_ref().len();
        if have < Self::HEADER_LEN {
            return Err(WireError::truncated(Layer::Udp, Self::HEADER_LEN, have));
        }
        Ok(UdpPacket { buffer })
    }

    /// Source port.
    pub fn src_port(&self) -> u16 {
        be16(self.buffer.as_ref(), 0)
    }

    /// Destination port.
    pub fn dst_port(&self) -> u16 {
        be16(self.buffer.as_ref(), 2)
    }

    /// Length field (header + data).
    pub fn len(&self) -> u16 {
        be16(self.buffer.as_ref(), 4)
    }

    /// True when the length field says there is no data.
    pub fn is_empty(&self) -> bool {
        self.len() <= 8
    }

    /// Checksum field (0 = none, IPv4 only).
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), 6)
    }

    /// The data after the header, as captured.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[Self::HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> UdpPacket<T> {
    /// Sets the source port (checksum untouched).
    pub fn set_src_port(&mut self, v: u16) {
        put16(self.buffer.as_mut(), 0, v);
    }

    /// Sets the destination port (checksum untouched).
    pub fn set_dst_port(&mut self, v: u16) {
        put16(self.buffer.as_mut(), 2, v);
    }

    /// Sets the length field.
    pub fn set_len(&mut self, v: u16) {
        put16(self.buffer.as_mut(), 4, v);
    }

    /// Sets the checksum field.
    pub fn set_checksum(&mut self, v: u16) {
        put16(self.buffer.as_mut(), 6, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hex_literal::hex;

    // A DNS query header: 198.18.0.1:5353 -> :53, 12 bytes of data.
    const DGRAM: [u8; 12] = hex!("14e9 0035 0014 abcd 01020304");

    #[test]
    fn deconstruct() {
        let u = UdpPacket::new_checked(&DGRAM[..]).unwrap();
        assert_eq!(
            (u.src_port(), u.dst_port(), u.len(), u.checksum()),
            (5353, 53, 20, 0xabcd)
        );
        assert_eq!(u.payload(), &hex!("01020304"));
        assert!(!u.is_empty());
        assert!(UdpPacket::new_checked(&DGRAM[..7]).is_err());
    }

    #[test]
    fn construct() {
        let mut b = [0u8; 12];
        b[8..].copy_from_slice(&DGRAM[8..]);
        let mut u = UdpPacket::new_checked(&mut b[..]).unwrap();
        u.set_src_port(5353);
        u.set_dst_port(53);
        u.set_len(20);
        u.set_checksum(0xabcd);
        assert_eq!(b, DGRAM);
    }
}
