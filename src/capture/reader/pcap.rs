//! Classic pcap: the magic numbers, the rest of the 24-byte file header, and the 16-byte record
//! headers (copying path and in-place fast path).
//!
//! Owns nothing but the parsing of those headers into the reader's state; it must never read
//! pcapng blocks or allocate per record.

use std::io::BufRead;

use super::{arr, caplen_limit, Block, CaptureReader, Endian, Interface, Loc, TsScale};
use crate::capture::error::{CaptureError, CaptureErrorKind};
use crate::capture::{LinkType, Timestamp, TsPrecision};

// pcap magic numbers as read little-endian from the first four bytes.
const PCAP_MICRO_LE: u32 = 0xa1b2_c3d4;
const PCAP_MICRO_BE: u32 = 0xd4c3_b2a1;
const PCAP_NANO_LE: u32 = 0xa1b2_3c4d;
const PCAP_NANO_BE: u32 = 0x4d3c_b2a1;

/// The byte order and timestamp precision a pcap magic number (read little-endian) names, or
/// `None` if it is not a pcap magic.
pub(super) fn magic(m: u32) -> Option<(Endian, TsPrecision)> {
    match m {
        PCAP_MICRO_LE => Some((Endian::Little, TsPrecision::Micro)),
        PCAP_MICRO_BE => Some((Endian::Big, TsPrecision::Micro)),
        PCAP_NANO_LE => Some((Endian::Little, TsPrecision::Nano)),
        PCAP_NANO_BE => Some((Endian::Big, TsPrecision::Nano)),
        _ => None,
    }
}

impl<R: BufRead> CaptureReader<R> {
    /// Reads the 20 bytes of the pcap file header after its magic number.
    pub(super) fn read_pcap_header(
        &mut self,
        endian: Endian,
        precision: TsPrecision,
    ) -> Result<(), CaptureError> {
        let mut rest = [0u8; 20];
        let n = self.fill_arr(&mut rest)?;
        if n < 20 {
            return Err(self.err(CaptureErrorKind::HeaderCutShort {
                what: "pcap file header",
                offset: 0,
                needed: 24,
                present: 4 + n as u64,
            }));
        }
        let major = endian.u16(arr(&rest, 0));
        let minor = endian.u16(arr(&rest, 2));
        if major != 2 {
            return Err(self.err(CaptureErrorKind::UnsupportedVersion {
                what: "pcap",
                offset: 4,
                major,
                minor,
            }));
        }
        let snaplen = endian.u32(arr(&rest, 12));
        // The low 16 bits are the link type; the upper bits may carry FCS information
        // (draft-ietf-opsawg-pcap §4, LinkType and additional information).
        let linktype = LinkType(endian.u32(arr(&rest, 16)) & 0xffff);
        self.endian = endian;
        self.first = Some(Interface {
            linktype,
            snaplen,
            scale: match precision {
                TsPrecision::Micro => TsScale::Mul(1000),
                TsPrecision::Nano => TsScale::Mul(1),
            },
            offset_secs: 0,
        });
        // Made once, zeroed by the allocator (calloc): large zeroed blocks come straight from the OS.
        self.buf = vec![0; caplen_limit(snaplen) as usize];
        Ok(())
    }

    pub(super) fn next_pcap(&mut self) -> Result<Option<Block>, CaptureError> {
        let start = self.pos;
        let mut h = [0u8; 16];
        let n = self.fill_arr(&mut h)?;
        if n == 0 {
            return Ok(None);
        }
        if n < 16 {
            return Err(self.err(CaptureErrorKind::RecordHeaderCutShort {
                offset: start,
                present: n as u64,
            }));
        }
        let e = self.endian;
        let secs = e.u32(arr(&h, 0));
        let frac = e.u32(arr(&h, 4));
        let caplen = e.u32(arr(&h, 8));
        let orig_len = e.u32(arr(&h, 12));
        // Set by read_file_header for every pcap file.
        let iface = self.first.unwrap_or(Interface {
            linktype: LinkType::ETHERNET,
            snaplen: 0,
            scale: TsScale::Mul(1000),
            offset_secs: 0,
        });
        self.check_caplen(start, caplen, iface.snaplen)?;
        let got = self.fill_buf(0, caplen as usize)?;
        if got < caplen as usize {
            return Err(self.err(CaptureErrorKind::RecordCutShort {
                offset: start,
                caplen,
                left: got as u64,
            }));
        }
        let ts = Timestamp(u64::from(secs) * 1_000_000_000 + iface.scale.to_ns(u64::from(frac)));
        Ok(Some(Block::Packet {
            ts,
            orig_len,
            linktype: iface.linktype,
            caplen: caplen as usize,
            loc: Loc::Own,
        }))
    }

    /// Fast path: a pcap record that is valid and lies whole in the source buffer is returned in
    /// place. Anything else (short buffer, absurd caplen, end of file, read error) returns `None`
    /// without consuming, and the copying path reads it and reports any error.
    pub(super) fn peek_pcap(&mut self) -> Option<Block> {
        let iface = self.first?;
        let e = self.endian;
        let avail = self.r.fill_buf().ok()?;
        if avail.len() < 16 {
            return None;
        }
        let caplen = e.u32(arr(avail, 8));
        if caplen > caplen_limit(iface.snaplen) || avail.len() - 16 < caplen as usize {
            return None;
        }
        let secs = e.u32(arr(avail, 0));
        let frac = e.u32(arr(avail, 4));
        let orig_len = e.u32(arr(avail, 12));
        let total = 16 + caplen as usize;
        self.pending = total;
        self.pos += total as u64;
        Some(Block::Packet {
            ts: Timestamp(u64::from(secs) * 1_000_000_000 + iface.scale.to_ns(u64::from(frac))),
            orig_len,
            linktype: iface.linktype,
            caplen: caplen as usize,
            loc: Loc::Source(16),
        })
    }
}
