//! pcapng: section header blocks (byte order per section), interface description blocks (link
//! type, snaplen, `if_tsresol`, `if_tsoffset`), enhanced, simple and obsolete packet blocks, and
//! every other block skipped with its length checked (draft-ietf-opsawg-pcapng).
//!
//! Owns the block framing only; it must never read classic pcap records or allocate per packet
//! (interface blocks, rare, are read into the reader's one buffer).

use std::io::BufRead;

use super::CaptureFormat;
use super::{
    arr, caplen_limit, Block, CaptureReader, Endian, Interface, Loc, TsScale, INITIAL_BUFFER,
};
use crate::capture::error::{CaptureError, CaptureErrorKind, HexBytes};
use crate::capture::{LinkType, Timestamp};

/// Largest interface description block read (they only hold a few options).
const MAX_IDB_LEN: u32 = 1 << 20;

// pcapng block types (draft-ietf-opsawg-pcapng §4, §10.1).
pub(super) const BT_SHB: u32 = 0x0a0d_0d0a;
const BT_IDB: u32 = 0x0000_0001;
const BT_OBSOLETE_PB: u32 = 0x0000_0002;
const BT_SPB: u32 = 0x0000_0003;
const BT_EPB: u32 = 0x0000_0006;
/// pcapng byte-order magic as written by a little-endian writer.
const BOM_LE: [u8; 4] = [0x4d, 0x3c, 0x2b, 0x1a];
/// pcapng byte-order magic as written by a big-endian writer.
const BOM_BE: [u8; 4] = [0x1a, 0x2b, 0x3c, 0x4d];
// pcapng interface description options (§4.2).
const OPT_ENDOFOPT: u16 = 0;
const IF_TSRESOL: u16 = 9;
const IF_TSOFFSET: u16 = 14;

impl<R: BufRead> CaptureReader<R> {
    /// Starts a pcapng file whose first four bytes (a section header block type) were read:
    /// reads that section header, then looks ahead to the first interface.
    pub(super) fn start_pcapng(&mut self) -> Result<(), CaptureError> {
        self.format = CaptureFormat::Pcapng;
        self.buf = vec![0; INITIAL_BUFFER];
        let mut len = [0u8; 4];
        let n = self.fill_arr(&mut len)?;
        if n < 4 {
            return Err(self.err(CaptureErrorKind::HeaderCutShort {
                what: "pcapng section header",
                offset: 0,
                needed: 28,
                present: 4 + n as u64,
            }));
        }
        self.read_shb(0, len)?;
        // Look ahead to the first interface so linktype()/precision()/snaplen() answer.
        // Only non-packet blocks can come before it (a packet block would name an
        // interface that does not exist yet, which is an error), so no packet is lost.
        while self.first.is_none() {
            if self.read_block()?.is_none() {
                break;
            }
        }
        Ok(())
    }

    /// Reads a section header block whose type (and 4-byte length field, still raw because the
    /// byte order comes after it) have been consumed; `start` is where the block begins.
    fn read_shb(&mut self, start: u64, len_raw: [u8; 4]) -> Result<(), CaptureError> {
        let mut bom = [0u8; 4];
        let n = self.fill_arr(&mut bom)?;
        if n < 4 {
            return Err(self.err(CaptureErrorKind::HeaderCutShort {
                what: "pcapng section header",
                offset: start,
                needed: 28,
                present: 8 + n as u64,
            }));
        }
        let endian = match bom {
            BOM_LE => Endian::Little,
            BOM_BE => Endian::Big,
            _ => {
                return Err(self.err(CaptureErrorKind::BadByteOrderMagic {
                    offset: start + 8,
                    magic: HexBytes(bom.to_vec()),
                }))
            }
        };
        let length = endian.u32(len_raw);
        self.check_block_length(
            start,
            length,
            28,
            "shorter than a section header block (28)",
        )?;
        let mut fixed = [0u8; 12];
        let n = self.fill_arr(&mut fixed)?;
        if n < 12 {
            return Err(self.err(CaptureErrorKind::HeaderCutShort {
                what: "pcapng section header",
                offset: start,
                needed: 28,
                present: 12 + n as u64,
            }));
        }
        let major = endian.u16(arr(&fixed, 0));
        let minor = endian.u16(arr(&fixed, 2));
        if major != 1 {
            return Err(self.err(CaptureErrorKind::UnsupportedVersion {
                what: "pcapng",
                offset: start + 12,
                major,
                minor,
            }));
        }
        // Options (shb_hardware, shb_os, ...) are not needed.
        self.endian = endian;
        self.interfaces.clear();
        self.finish_block(start, length, u64::from(length) - 28)
    }

    /// Checks a pcapng block total length: a multiple of 4 and at least `min`.
    fn check_block_length(
        &self,
        start: u64,
        length: u32,
        min: u32,
        too_short: &'static str,
    ) -> Result<(), CaptureError> {
        if length % 4 != 0 {
            return Err(self.err(CaptureErrorKind::BlockLength {
                offset: start,
                length,
                why: "not a multiple of 4",
            }));
        }
        if length < min {
            return Err(self.err(CaptureErrorKind::BlockLength {
                offset: start,
                length,
                why: too_short,
            }));
        }
        Ok(())
    }

    /// Skips `rest` bytes of a block (the bytes before its trailing length), then reads and checks
    /// the trailing length.
    fn finish_block(&mut self, start: u64, length: u32, rest: u64) -> Result<(), CaptureError> {
        let got = self.skip(rest)?;
        if got < rest {
            return Err(self.cut_short(start, length));
        }
        self.read_trailer(start, length)
    }

    fn read_trailer(&mut self, start: u64, length: u32) -> Result<(), CaptureError> {
        let mut t = [0u8; 4];
        let n = self.fill_arr(&mut t)?;
        if n < 4 {
            return Err(self.cut_short(start, length));
        }
        let trailing = self.endian.u32(t);
        if trailing != length {
            return Err(self.err(CaptureErrorKind::BlockTrailerMismatch {
                offset: start,
                leading: length,
                trailing,
            }));
        }
        Ok(())
    }

    fn cut_short(&self, start: u64, length: u32) -> CaptureError {
        self.err(CaptureErrorKind::BlockCutShort {
            offset: start,
            length,
            left: self.pos - start,
        })
    }

    /// Reads one pcapng block; `Ok(None)` at a clean end of file.
    fn read_block(&mut self) -> Result<Option<Block>, CaptureError> {
        let start = self.pos;
        let mut hdr = [0u8; 8];
        let n = self.fill_arr(&mut hdr)?;
        if n == 0 {
            return Ok(None);
        }
        if n < 8 {
            return Err(self.err(CaptureErrorKind::HeaderCutShort {
                what: "pcapng block header",
                offset: start,
                needed: 8,
                present: n as u64,
            }));
        }
        let btype = self.endian.u32(arr(&hdr, 0));
        if btype == BT_SHB {
            self.read_shb(start, arr(&hdr, 4))?;
            return Ok(Some(Block::Other));
        }
        let length = self.endian.u32(arr(&hdr, 4));
        match btype {
            BT_IDB => {
                self.check_block_length(start, length, 20, "shorter than an interface block (20)")?;
                if length > MAX_IDB_LEN {
                    return Err(self.err(CaptureErrorKind::BlockTooLarge {
                        block: "interface description block",
                        offset: start,
                        length,
                        limit: MAX_IDB_LEN,
                    }));
                }
                let body = length as usize - 8;
                if self.fill_buf(0, body)? < body {
                    return Err(self.cut_short(start, length));
                }
                let trailing = self.endian.u32(arr(&self.buf, body - 4));
                if trailing != length {
                    return Err(self.err(CaptureErrorKind::BlockTrailerMismatch {
                        offset: start,
                        leading: length,
                        trailing,
                    }));
                }
                let iface = self.parse_idb(start, body - 4)?;
                if self.first.is_none() {
                    self.first = Some(iface);
                }
                self.interfaces.push(iface);
                Ok(Some(Block::Interface))
            }
            BT_EPB | BT_OBSOLETE_PB => {
                let what = if btype == BT_EPB {
                    "enhanced packet block"
                } else {
                    "packet block"
                };
                self.check_block_length(start, length, 32, "shorter than a packet block (32)")?;
                let mut f = [0u8; 20];
                if self.fill_arr(&mut f)? < 20 {
                    return Err(self.cut_short(start, length));
                }
                let e = self.endian;
                let if_id = if btype == BT_EPB {
                    e.u32(arr(&f, 0))
                } else {
                    u32::from(e.u16(arr(&f, 0)))
                };
                let units = (u64::from(e.u32(arr(&f, 4))) << 32) | u64::from(e.u32(arr(&f, 8)));
                let caplen = e.u32(arr(&f, 12));
                let orig_len = e.u32(arr(&f, 16));
                let iface = self.interface(start, what, if_id)?;
                if caplen > length - 32 {
                    return Err(self.err(CaptureErrorKind::BadBlock {
                        block: what,
                        offset: start,
                        why: "caplen runs past the end of the block",
                    }));
                }
                self.check_caplen(start, caplen, iface.snaplen)?;
                self.packet_body(start, length, 28, caplen, iface.ts(units), orig_len, iface)
            }
            BT_SPB => {
                self.check_block_length(
                    start,
                    length,
                    16,
                    "shorter than a simple packet block (16)",
                )?;
                let mut f = [0u8; 4];
                if self.fill_arr(&mut f)? < 4 {
                    return Err(self.cut_short(start, length));
                }
                let orig_len = self.endian.u32(f);
                let iface = self.interface(start, "simple packet block", 0)?;
                let mut caplen = orig_len.min(length - 16);
                if iface.snaplen != 0 {
                    caplen = caplen.min(iface.snaplen);
                }
                self.check_caplen(start, caplen, iface.snaplen)?;
                // A simple packet block has no timestamp.
                self.packet_body(start, length, 12, caplen, Timestamp(0), orig_len, iface)
            }
            _ => {
                self.check_block_length(start, length, 12, "shorter than 12")?;
                self.finish_block(start, length, u64::from(length) - 12)?;
                Ok(Some(Block::Other))
            }
        }
    }

    fn interface(
        &self,
        start: u64,
        block: &'static str,
        id: u32,
    ) -> Result<Interface, CaptureError> {
        match self.interfaces.get(id as usize) {
            Some(i) => Ok(*i),
            None => Err(self.err(CaptureErrorKind::UnknownInterface {
                block,
                offset: start,
                interface: id,
                count: self.interfaces.len(),
            })),
        }
    }

    /// Reads a packet's data into the buffer, skips padding and options, checks the trailer.
    /// `read` is how many bytes of the block have been consumed so far.
    #[allow(clippy::too_many_arguments)]
    fn packet_body(
        &mut self,
        start: u64,
        length: u32,
        read: u32,
        caplen: u32,
        ts: Timestamp,
        orig_len: u32,
        iface: Interface,
    ) -> Result<Option<Block>, CaptureError> {
        if self.fill_buf(0, caplen as usize)? < caplen as usize {
            return Err(self.cut_short(start, length));
        }
        let rest = u64::from(length) - u64::from(read) - u64::from(caplen) - 4;
        self.finish_block(start, length, rest)?;
        Ok(Some(Block::Packet {
            ts,
            orig_len,
            linktype: iface.linktype,
            caplen: caplen as usize,
            loc: Loc::Own,
        }))
    }

    /// Parses an interface description block body held in `self.buf[..end]`.
    fn parse_idb(&self, start: u64, end: usize) -> Result<Interface, CaptureError> {
        let e = self.endian;
        let b = &self.buf[..end];
        let mut iface = Interface {
            linktype: LinkType(u32::from(e.u16(arr(b, 0)))),
            snaplen: e.u32(arr(b, 4)),
            scale: TsScale::Mul(1000),
            offset_secs: 0,
        };
        let bad = |why| {
            self.err(CaptureErrorKind::BadBlock {
                block: "interface description block",
                offset: start,
                why,
            })
        };
        let mut at = 8;
        while at < b.len() {
            if b.len() - at < 4 {
                return Err(bad("option header runs past the end of the block"));
            }
            let code = e.u16(arr(b, at));
            let len = usize::from(e.u16(arr(b, at + 2)));
            let padded = (len + 3) & !3;
            if b.len() - at - 4 < padded {
                return Err(bad("option runs past the end of the block"));
            }
            let v = &b[at + 4..at + 4 + len];
            match code {
                OPT_ENDOFOPT => break,
                IF_TSRESOL if len == 1 => iface.scale = TsScale::from_tsresol(v[0]),
                IF_TSOFFSET if len == 8 => iface.offset_secs = e.i64(arr(v, 0)),
                IF_TSRESOL | IF_TSOFFSET => {
                    return Err(bad("if_tsresol or if_tsoffset has the wrong length"))
                }
                _ => {}
            }
            at += 4 + padded;
        }
        Ok(iface)
    }

    /// Fast path for pcapng: an enhanced packet block that is valid in every respect the copying
    /// path checks and lies whole in the source buffer is returned in place; otherwise `None`.
    fn peek_epb(&mut self) -> Option<Block> {
        let e = self.endian;
        let avail = self.r.fill_buf().ok()?;
        if avail.len() < 32 || e.u32(arr(avail, 0)) != BT_EPB {
            return None;
        }
        let length = e.u32(arr(avail, 4));
        if length % 4 != 0 || length < 32 || avail.len() < length as usize {
            return None;
        }
        let iface = *self.interfaces.get(e.u32(arr(avail, 8)) as usize)?;
        let units = (u64::from(e.u32(arr(avail, 12))) << 32) | u64::from(e.u32(arr(avail, 16)));
        let caplen = e.u32(arr(avail, 20));
        let orig_len = e.u32(arr(avail, 24));
        if caplen > length - 32
            || caplen > caplen_limit(iface.snaplen)
            || e.u32(arr(avail, length as usize - 4)) != length
        {
            return None;
        }
        self.pending = length as usize;
        self.pos += u64::from(length);
        Some(Block::Packet {
            ts: iface.ts(units),
            orig_len,
            linktype: iface.linktype,
            caplen: caplen as usize,
            loc: Loc::Source(28),
        })
    }

    pub(super) fn next_pcapng(&mut self) -> Result<Option<Block>, CaptureError> {
        loop {
            if let Some(b) = self.peek_epb() {
                return Ok(Some(b));
            }
            match self.read_block()? {
                Some(Block::Interface | Block::Other) => {}
                other => return Ok(other),
            }
        }
    }
}
