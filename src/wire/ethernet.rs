//! Ethernet II header (IEEE 802.3) and 802.1Q / 802.1ad VLAN tags.

use super::{be16, put16, EtherType, Layer, WireError};
use std::fmt;
use std::str::FromStr;

/// A 48-bit IEEE MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// ff:ff:ff:ff:ff:ff.
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);

    /// True for group (multicast and broadcast) addresses: the I/G bit of the first octet.
    pub const fn is_multicast(&self) -> bool {
        self.0[0] & 1 == 1
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

/// Error parsing a MAC address written as six `:`-separated groups of one or two hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{0}` is not a MAC address (expected six hex octets separated by `:`, e.g. 02:00:5e:10:00:01)"
)]
pub struct MacParseError(pub String);

impl FromStr for MacAddr {
    type Err = MacParseError;
    /// Parses tcprewrite's form: `aa:bb:cc:dd:ee:ff`, one or two hex digits per octet.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || MacParseError(s.to_string());
        let mut out = [0u8; 6];
        let mut n = 0;
        for part in s.split(':') {
            if n == 6 || part.is_empty() || part.len() > 2 {
                return Err(err());
            }
            out[n] = u8::from_str_radix(part, 16).map_err(|_| err())?;
            n += 1;
        }
        if n != 6 {
            return Err(err());
        }
        Ok(MacAddr(out))
    }
}

/// A view of an Ethernet II frame: destination, source, EtherType, payload.
#[derive(Debug, Clone)]
pub struct EthernetFrame<T> {
    buffer: T,
}

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    /// Length of the Ethernet II header.
    pub const HEADER_LEN: usize = 14;

    /// Wraps `buffer` after checking it holds a whole header.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let have = buffer.as_ref().len();
        if have < Self::HEADER_LEN {
            return Err(WireError::truncated(
                Layer::Ethernet,
                Self::HEADER_LEN,
                have,
            ));
        }
        Ok(EthernetFrame { buffer })
    }

    /// Gives the buffer back.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Destination address.
    pub fn dst_addr(&self) -> MacAddr {
        let b = self.buffer.as_ref();
        MacAddr([b[0], b[1], b[2], b[3], b[4], b[5]])
    }

    /// Source address.
    pub fn src_addr(&self) -> MacAddr {
        let b = self.buffer.as_ref();
        MacAddr([b[6], b[7], b[8], b[9], b[10], b[11]])
    }

    /// The EtherType field (0x8100 when a VLAN tag follows).
    pub fn ethertype(&self) -> EtherType {
        EtherType(be16(self.buffer.as_ref(), 12))
    }

    /// Everything after the 14-byte header.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[Self::HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EthernetFrame<T> {
    /// Sets the destination address.
    pub fn set_dst_addr(&mut self, a: MacAddr) {
        self.buffer.as_mut()[0..6].copy_from_slice(&a.0);
    }

    /// Sets the source address.
    pub fn set_src_addr(&mut self, a: MacAddr) {
        self.buffer.as_mut()[6..12].copy_from_slice(&a.0);
    }

    /// Sets the EtherType field.
    pub fn set_ethertype(&mut self, t: EtherType) {
        put16(self.buffer.as_mut(), 12, t.0);
    }

    /// Mutable payload.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[Self::HEADER_LEN..]
    }
}

/// A view of one 4-byte VLAN tag body as it follows a TPID: TCI (PCP, DEI, VID) and the
/// EtherType of what comes next (IEEE 802.1Q §9.6).
#[derive(Debug, Clone)]
pub struct VlanHeader<T> {
    buffer: T,
}

impl<T: AsRef<[u8]>> VlanHeader<T> {
    /// Length of the TCI plus the inner EtherType.
    pub const HEADER_LEN: usize = 4;

    /// Wraps `buffer` after checking it holds a whole tag.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let have = buffer.as_ref().len();
        if have < Self::HEADER_LEN {
            return Err(WireError::truncated(Layer::Vlan, Self::HEADER_LEN, have));
        }
        Ok(VlanHeader { buffer })
    }

    /// Priority code point (3 bits).
    pub fn pcp(&self) -> u8 {
        self.buffer.as_ref()[0] >> 5
    }

    /// Drop eligible indicator (formerly CFI).
    pub fn dei(&self) -> bool {
        self.buffer.as_ref()[0] & 0x10 != 0
    }

    /// VLAN identifier (12 bits).
    pub fn vid(&self) -> u16 {
        be16(self.buffer.as_ref(), 0) & 0x0fff
    }

    /// EtherType of the encapsulated payload.
    pub fn ethertype(&self) -> EtherType {
        EtherType(be16(self.buffer.as_ref(), 2))
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> VlanHeader<T> {
    /// Sets PCP, DEI and VID at once (VID is masked to 12 bits, PCP to 3).
    pub fn set_tci(&mut self, pcp: u8, dei: bool, vid: u16) {
        let tci = (u16::from(pcp & 7) << 13) | (u16::from(dei) << 12) | (vid & 0x0fff);
        put16(self.buffer.as_mut(), 0, tci);
    }

    /// Sets the inner EtherType.
    pub fn set_ethertype(&mut self, t: EtherType) {
        put16(self.buffer.as_mut(), 2, t.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hex_literal::hex;

    // First frame of pcaps/http_vlan.pcap, cut after the VLAN tag.
    const TAGGED: [u8; 18] = hex!("0200c612c802 0200c612c801 8100 0064 0800");

    #[test]
    fn deconstruct() {
        let f = EthernetFrame::new_checked(&TAGGED[..]).unwrap();
        assert_eq!(f.dst_addr().to_string(), "02:00:c6:12:c8:02");
        assert_eq!(f.src_addr(), MacAddr(hex!("0200c612c801")));
        assert_eq!(f.ethertype(), EtherType::VLAN);
        let v = VlanHeader::new_checked(f.payload()).unwrap();
        assert_eq!(
            (v.vid(), v.pcp(), v.dei(), v.ethertype()),
            (100, 0, false, EtherType::IPV4)
        );
    }

    #[test]
    fn construct() {
        let mut buf = [0u8; 18];
        let mut f = EthernetFrame::new_checked(&mut buf[..]).unwrap();
        f.set_dst_addr("02:00:c6:12:c8:02".parse().unwrap());
        f.set_src_addr("2:0:c6:12:c8:1".parse().unwrap());
        f.set_ethertype(EtherType::VLAN);
        let mut v = VlanHeader::new_checked(f.payload_mut()).unwrap();
        v.set_tci(0, false, 100);
        v.set_ethertype(EtherType::IPV4);
        assert_eq!(buf, TAGGED);
    }

    #[test]
    fn short_and_bad() {
        assert!(EthernetFrame::new_checked(&TAGGED[..13]).is_err());
        assert!(VlanHeader::new_checked(&TAGGED[..3]).is_err());
        for bad in [
            "",
            "zz:00:00:00:00:00",
            "1:2:3:4:5",
            "1:2:3:4:5:6:7",
            "02-00-00-00-00-01",
            "123:0:0:0:0:0",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad}");
        }
    }
}
