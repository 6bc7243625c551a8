//! ICMP (RFC 792) and ICMPv6 (RFC 4443) common header: type, code, checksum.

use super::{be16, put16, Layer, WireError};

/// A view of an ICMP or ICMPv6 message; `new_checked` guarantees the 4-byte common header.
#[derive(Debug, Clone)]
pub struct IcmpPacket<T> {
    buffer: T,
}

impl<T: AsRef<[u8]>> IcmpPacket<T> {
    /// Length of the common header.
    pub const HEADER_LEN: usize = 4;

    /// Wraps `buffer` after checking it holds the common header.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let have = buffer.as_ref().len();
        if have < Self::HEADER_LEN {
            return Err(WireError::truncated(Layer::Icmp, Self::HEADER_LEN, have));
        }
        Ok(IcmpPacket { buffer })
    }

    /// Message type (e.g. 8 echo request, 128 ICMPv6 echo request).
    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[0]
    }

    /// Message code.
    pub fn code(&self) -> u8 {
        self.buffer.as_ref()[1]
    }

    /// Checksum field.
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), 2)
    }

    /// The message body after the common header.
    pub fn body(&self) -> &[u8] {
        &self.buffer.as_ref()[Self::HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> IcmpPacket<T> {
    /// Sets type and code.
    pub fn set_type_code(&mut self, t: u8, c: u8) {
        let b = self.buffer.as_mut();
        b[0] = t;
        b[1] = c;
    }

    /// Sets the checksum field.
    pub fn set_checksum(&mut self, v: u16) {
        put16(self.buffer.as_mut(), 2, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::checksum;
    use hex_literal::hex;

    // ICMP echo request, id 1, seq 1, payload "abcd" (checksum computed by hand).
    const ECHO: [u8; 12] = hex!("08 00 3337 0001 0001 61626364");

    #[test]
    fn deconstruct() {
        let i = IcmpPacket::new_checked(&ECHO[..]).unwrap();
        assert_eq!((i.msg_type(), i.code(), i.checksum()), (8, 0, 0x3337));
        assert_eq!(i.body().len(), 8);
        assert!(checksum::verifies(&ECHO, 0));
        assert!(IcmpPacket::new_checked(&ECHO[..3]).is_err());
    }

    #[test]
    fn construct() {
        let mut b = [0u8; 12];
        b[4..].copy_from_slice(&ECHO[4..]);
        let mut i = IcmpPacket::new_checked(&mut b[..]).unwrap();
        i.set_type_code(8, 0);
        let c = checksum::finish(checksum::sum_skipping(&ECHO, 2, 0));
        i.set_checksum(c);
        assert_eq!(b, ECHO);
    }
}
