//! Linux cooked capture headers: SLL (v1, 16 bytes) and SLL2 (v2, 20 bytes), as written by
//! `tcpdump -i any` (see pcap-linktype(7), LINKTYPE_LINUX_SLL and LINKTYPE_LINUX_SLL2).

use super::{be16, be32, put16, EtherType, Layer, WireError};

/// A view of a Linux cooked v1 header.
#[derive(Debug, Clone)]
pub struct SllHeader<T> {
    buffer: T,
}

impl<T: AsRef<[u8]>> SllHeader<T> {
    /// Length of the SLL header.
    pub const HEADER_LEN: usize = 16;

    /// Wraps `buffer` after checking it holds a whole header.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let have = buffer.as_ref().len();
        if have < Self::HEADER_LEN {
            return Err(WireError::truncated(Layer::Sll, Self::HEADER_LEN, have));
        }
        Ok(SllHeader { buffer })
    }

    /// Packet type: 0 to us, 1 broadcast, 2 multicast, 3 to someone else, 4 sent by us.
    pub fn packet_type(&self) -> u16 {
        be16(self.buffer.as_ref(), 0)
    }

    /// ARPHRD_ type of the capturing device (1 = Ethernet).
    pub fn arphrd_type(&self) -> u16 {
        be16(self.buffer.as_ref(), 2)
    }

    /// The link-layer source address (its first `addr_len` bytes of 8 are meaningful).
    pub fn addr(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        let n = usize::from(be16(b, 4)).min(8);
        &b[6..6 + n]
    }

    /// The protocol field: an EtherType for Ethernet-like devices.
    pub fn protocol(&self) -> EtherType {
        EtherType(be16(self.buffer.as_ref(), 14))
    }

    /// Everything after the header.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[Self::HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> SllHeader<T> {
    /// Sets the protocol field.
    pub fn set_protocol(&mut self, p: EtherType) {
        put16(self.buffer.as_mut(), 14, p.0);
    }
}

/// A view of a Linux cooked v2 header.
#[derive(Debug, Clone)]
pub struct Sll2Header<T> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Sll2Header<T> {
    /// Length of the SLL2 header.
    pub const HEADER_LEN: usize = 20;

    /// Wraps `buffer` after checking it holds a whole header.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let have = buffer.as_ref().len();
        if have < Self::HEADER_LEN {
            return Err(WireError::truncated(Layer::Sll2, Self::HEADER_LEN, have));
        }
        Ok(Sll2Header { buffer })
    }

    /// The protocol field: an EtherType for Ethernet-like devices.
    pub fn protocol(&self) -> EtherType {
        EtherType(be16(self.buffer.as_ref(), 0))
    }

    /// Interface index of the capturing device.
    pub fn ifindex(&self) -> u32 {
        be32(self.buffer.as_ref(), 4)
    }

    /// ARPHRD_ type of the capturing device (1 = Ethernet).
    pub fn arphrd_type(&self) -> u16 {
        be16(self.buffer.as_ref(), 8)
    }

    /// Packet type: 0 to us, 1 broadcast, 2 multicast, 3 to someone else, 4 sent by us.
    pub fn packet_type(&self) -> u8 {
        self.buffer.as_ref()[10]
    }

    /// The link-layer source address (its first `addr_len` bytes of 8 are meaningful).
    pub fn addr(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        let n = usize::from(b[11]).min(8);
        &b[12..12 + n]
    }

    /// Everything after the header.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[Self::HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Sll2Header<T> {
    /// Sets the protocol field.
    pub fn set_protocol(&mut self, p: EtherType) {
        put16(self.buffer.as_mut(), 0, p.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hex_literal::hex;

    // Headers of an outgoing IPv4 frame from pcaps/http_sll.pcap and pcaps/http_sll2.pcap.
    const SLL: [u8; 16] = hex!("0004 0001 0006 0200c612c8010000 0800");
    const SLL2: [u8; 20] = hex!("0800 0000 00000002 0001 04 06 0200c612c8010000");

    #[test]
    fn deconstruct_sll() {
        let h = SllHeader::new_checked(&SLL[..]).unwrap();
        assert_eq!(
            (h.packet_type(), h.arphrd_type(), h.protocol()),
            (4, 1, EtherType::IPV4)
        );
        assert_eq!(h.addr(), &hex!("0200c612c801"));
        assert!(SllHeader::new_checked(&SLL[..15]).is_err());
    }

    #[test]
    fn construct_sll() {
        let mut b = SLL;
        b[14] = 0;
        SllHeader::new_checked(&mut b[..])
            .unwrap()
            .set_protocol(EtherType::IPV4);
        assert_eq!(b, SLL);
    }

    #[test]
    fn deconstruct_sll2() {
        let h = Sll2Header::new_checked(&SLL2[..]).unwrap();
        assert_eq!(
            (h.protocol(), h.ifindex(), h.arphrd_type()),
            (EtherType::IPV4, 2, 1)
        );
        assert_eq!((h.packet_type(), h.addr()), (4, &hex!("0200c612c801")[..]));
        assert!(Sll2Header::new_checked(&SLL2[..19]).is_err());
    }

    #[test]
    fn construct_sll2() {
        let mut b = SLL2;
        b[0] = 0;
        Sll2Header::new_checked(&mut b[..])
            .unwrap()
            .set_protocol(EtherType::IPV4);
        assert_eq!(b, SLL2);
    }
}
