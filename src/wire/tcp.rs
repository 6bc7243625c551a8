//! TCP header (RFC 9293 §3.1) and its options: MSS (kind 2), window scale (kind 3, RFC 7323),
//! SACK-permitted and SACK (kinds 4, 5, RFC 2018), timestamps (kind 8, RFC 7323).

use super::{be16, be32, put16, put32, Layer, WireError, WireErrorKind};
use crate::seq::SeqNumber;

/// TCP control bits (the low 9 bits of the offset/flags word).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TcpFlags(pub u16);

impl TcpFlags {
    /// No more data from sender.
    pub const FIN: u16 = 0x001;
    /// Synchronize sequence numbers.
    pub const SYN: u16 = 0x002;
    /// Reset the connection.
    pub const RST: u16 = 0x004;
    /// Push function.
    pub const PSH: u16 = 0x008;
    /// Acknowledgment field significant.
    pub const ACK: u16 = 0x010;
    /// Urgent pointer field significant.
    pub const URG: u16 = 0x020;
    /// ECN echo (RFC 3168).
    pub const ECE: u16 = 0x040;
    /// Congestion window reduced (RFC 3168).
    pub const CWR: u16 = 0x080;

    /// True when every bit of `mask` is set.
    pub const fn contains(self, mask: u16) -> bool {
        self.0 & mask == mask
    }
}

/// One TCP option as found in the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpOption<'a> {
    /// End of option list (kind 0).
    End,
    /// No-operation padding (kind 1).
    Nop,
    /// Maximum segment size (kind 2).
    Mss(u16),
    /// Window scale shift count (kind 3).
    WindowScale(u8),
    /// SACK permitted (kind 4).
    SackPermitted,
    /// SACK blocks, raw (kind 5).
    Sack(&'a [u8]),
    /// Timestamps: value and echo reply (kind 8).
    Timestamps {
        /// TSval.
        val: u32,
        /// TSecr.
        ecr: u32,
    },
    /// Any other option, with its data.
    Unknown {
        /// Option kind.
        kind: u8,
        /// Option data after kind and length.
        data: &'a [u8],
    },
}

/// Iterator over the options of a TCP header, yielding `(offset within the options, option)`.
/// A malformed option ends the iteration.
#[derive(Debug, Clone)]
pub struct TcpOptions<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Iterator for TcpOptions<'a> {
    type Item = (usize, TcpOption<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        let d = self.data;
        let at = self.pos;
        let kind = *d.get(at)?;
        match kind {
            0 => {
                self.pos = d.len();
                Some((at, TcpOption::End))
            }
            1 => {
                self.pos += 1;
                Some((at, TcpOption::Nop))
            }
            _ => {
                let len = usize::from(*d.get(at + 1)?);
                if len < 2 || at + len > d.len() {
                    self.pos = d.len();
                    return None;
                }
                let body = &d[at + 2..at + len];
                self.pos += len;
                let opt = match (kind, len) {
                    (2, 4) => TcpOption::Mss(be16(body, 0)),
                    (3, 3) => TcpOption::WindowScale(body[0]),
                    (4, 2) => TcpOption::SackPermitted,
                    (5, _) => TcpOption::Sack(body),
                    (8, 10) => TcpOption::Timestamps {
                        val: be32(body, 0),
                        ecr: be32(body, 4),
                    },
                    _ => TcpOption::Unknown { kind, data: body },
                };
                Some((at, opt))
            }
        }
    }
}

/// A view of a TCP segment: `new_checked` guarantees the whole header (data offset * 4 bytes).
#[derive(Debug, Clone)]
pub struct TcpPacket<T> {
    buffer: T,
}

impl<T: AsRef<[u8]>> TcpPacket<T> {
    /// Length of the header without options.
    pub const MIN_HEADER_LEN: usize = 20;

    /// Wraps `buffer` after checking the data offset and that the header is all there.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let b = buffer.as_ref();
        if b.len() < Self::MIN_HEADER_LEN {
            return Err(WireError::truncated(
                Layer::Tcp,
                Self::MIN_HEADER_LEN,
                b.len(),
            ));
        }
        let hl = usize::from(b[12] >> 4) * 4;
        if hl < Self::MIN_HEADER_LEN {
            return Err(WireError {
                layer: Layer::Tcp,
                offset: 0,
                kind: WireErrorKind::BadHeaderLength(hl),
            });
        }
        if b.len() < hl {
            return Err(WireError::truncated(Layer::Tcp, hl, b.len()));
        }
        Ok(TcpPacket { buffer })
    }

    /// A view of a header the caller has already checked as [`TcpPacket::new_checked`] does
    /// (the protocol's response checks do), so it is not checked twice per response.
    pub(crate) fn new_prechecked(buffer: T) -> Self {
        debug_assert!(TcpPacket::new_checked(buffer.as_ref()).is_ok());
        TcpPacket { buffer }
    }

    /// Gives the buffer back.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Source port.
    pub fn src_port(&self) -> u16 {
        be16(self.buffer.as_ref(), 0)
    }

    /// Destination port.
    pub fn dst_port(&self) -> u16 {
        be16(self.buffer.as_ref(), 2)
    }

    /// Sequence number.
    pub fn seq(&self) -> SeqNumber {
        SeqNumber(be32(self.buffer.as_ref(), 4))
    }

    /// Acknowledgment number.
    pub fn ack(&self) -> SeqNumber {
        SeqNumber(be32(self.buffer.as_ref(), 8))
    }

    /// Header length in bytes (data offset * 4).
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[12] >> 4) * 4
    }

    /// Control bits.
    pub fn flags(&self) -> TcpFlags {
        TcpFlags(be16(self.buffer.as_ref(), 12) & 0x01ff)
    }

    /// Window (unscaled).
    pub fn window(&self) -> u16 {
        be16(self.buffer.as_ref(), 14)
    }

    /// Checksum field.
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), 16)
    }

    /// Urgent pointer.
    pub fn urgent(&self) -> u16 {
        be16(self.buffer.as_ref(), 18)
    }

    /// The raw option bytes.
    pub fn options_raw(&self) -> &[u8] {
        &self.buffer.as_ref()[Self::MIN_HEADER_LEN..self.header_len()]
    }

    /// Iterator over the options.
    pub fn options(&self) -> TcpOptions<'_> {
        TcpOptions {
            data: self.options_raw(),
            pos: 0,
        }
    }

    /// The MSS option, if present.
    pub fn mss(&self) -> Option<u16> {
        self.options().find_map(|(_, o)| match o {
            TcpOption::Mss(v) => Some(v),
            _ => None,
        })
    }

    /// The window-scale shift, if present.
    pub fn window_scale(&self) -> Option<u8> {
        self.options().find_map(|(_, o)| match o {
            TcpOption::WindowScale(v) => Some(v),
            _ => None,
        })
    }

    /// The timestamps option `(TSval, TSecr)`, if present.
    pub fn timestamps(&self) -> Option<(u32, u32)> {
        self.options().find_map(|(_, o)| match o {
            TcpOption::Timestamps { val, ecr } => Some((val, ecr)),
            _ => None,
        })
    }

    /// Offset of the timestamps option's TSval within the segment, if present.
    pub fn timestamps_offset(&self) -> Option<usize> {
        self.options().find_map(|(at, o)| match o {
            TcpOption::Timestamps { .. } => Some(Self::MIN_HEADER_LEN + at + 2),
            _ => None,
        })
    }

    /// The payload (everything after the header).
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TcpPacket<T> {
    /// Sets the source port (checksum untouched).
    pub fn set_src_port(&mut self, v: u16) {
        put16(self.buffer.as_mut(), 0, v);
    }

    /// Sets the destination port (checksum untouched).
    pub fn set_dst_port(&mut self, v: u16) {
        put16(self.buffer.as_mut(), 2, v);
    }

    /// Sets the sequence number (checksum untouched).
    pub fn set_seq(&mut self, v: SeqNumber) {
        put32(self.buffer.as_mut(), 4, v.0);
    }

    /// Sets the acknowledgment number (checksum untouched).
    pub fn set_ack(&mut self, v: SeqNumber) {
        put32(self.buffer.as_mut(), 8, v.0);
    }

    /// Sets the control bits, keeping the data offset (checksum untouched).
    pub fn set_flags(&mut self, f: TcpFlags) {
        let b = self.buffer.as_mut();
        let w = (be16(b, 12) & 0xfe00) | (f.0 & 0x01ff);
        put16(b, 12, w);
    }

    /// Sets the window (checksum untouched).
    pub fn set_window(&mut self, v: u16) {
        put16(self.buffer.as_mut(), 14, v);
    }

    /// Sets the checksum field.
    pub fn set_checksum(&mut self, v: u16) {
        put16(self.buffer.as_mut(), 16, v);
    }

    /// Sets the timestamps option in place, if present; returns false when there is none.
    pub fn set_timestamps(&mut self, val: u32, ecr: u32) -> bool {
        match self.timestamps_offset() {
            Some(off) => {
                let b = self.buffer.as_mut();
                put32(b, off, val);
                put32(b, off + 4, ecr);
                true
            }
            None => false,
        }
    }

    /// Mutable payload.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let hl = self.header_len();
        &mut self.buffer.as_mut()[hl..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hex_literal::hex;

    // The SYN of pcaps/http_keepalive.pcap: 40-byte header with MSS, SACK-permitted, TS, NOP, WS.
    const SYN: [u8; 40] = hex!(
        "eb16 0050 c49ba9f6 00000000 a002 faf0 1c58 0000"
        "020405b4 0402 080ac1c4b2ba00000000 01 03030a"
    );

    #[test]
    fn deconstruct() {
        let t = TcpPacket::new_checked(&SYN[..]).unwrap();
        assert_eq!((t.src_port(), t.dst_port()), (60182, 80));
        assert_eq!((t.seq(), t.ack()), (SeqNumber(3298535926), SeqNumber(0)));
        assert_eq!(
            (t.header_len(), t.window(), t.checksum()),
            (40, 64240, 0x1c58)
        );
        assert!(t.flags().contains(TcpFlags::SYN) && !t.flags().contains(TcpFlags::ACK));
        assert_eq!(t.mss(), Some(1460));
        assert_eq!(t.window_scale(), Some(10));
        assert_eq!(t.timestamps(), Some((3250893498, 0)));
        assert_eq!(t.timestamps_offset(), Some(28));
        assert!(t.options().any(|(_, o)| o == TcpOption::SackPermitted));
        assert!(t.payload().is_empty());
    }

    #[test]
    fn construct() {
        let mut b = [0u8; 40];
        b[12] = 0xa0;
        b[20..40].copy_from_slice(&SYN[20..40]);
        let mut t = TcpPacket::new_checked(&mut b[..]).unwrap();
        t.set_src_port(60182);
        t.set_dst_port(80);
        t.set_seq(SeqNumber(3298535926));
        t.set_ack(SeqNumber(0));
        t.set_flags(TcpFlags(TcpFlags::SYN));
        t.set_window(64240);
        t.set_checksum(0x1c58);
        assert!(t.set_timestamps(3250893498, 0));
        assert_eq!(b, SYN);
    }

    #[test]
    fn malformed() {
        assert!(TcpPacket::new_checked(&SYN[..19]).is_err());
        assert!(TcpPacket::new_checked(&SYN[..39]).is_err());
        let mut b = SYN;
        b[12] = 0x40;
        assert!(TcpPacket::new_checked(&b[..]).is_err());
        // An option whose length runs past the header ends the iteration without panicking.
        let mut b = SYN;
        b[21] = 200;
        let t = TcpPacket::new_checked(&b[..]).unwrap();
        assert_eq!(t.options().count(), 0);
        assert_eq!(t.mss(), None);
    }
}
