//! Reading pcap and pcapng capture files from any `std::io::Read`.
//!
//! The format is detected from the first four bytes (never from the file name): classic pcap in
//! either byte order with microsecond (0xa1b2c3d4) or nanosecond (0xa1b23c4d) timestamps, or pcapng
//! (section header block 0x0a0d0d0a). For pcapng this reads section header, interface description,
//! enhanced, simple and obsolete packet blocks, skips every other block (name resolution, interface
//! statistics, decryption secrets, custom, ...), honours `if_tsresol` (power of 10 or of 2) and
//! `if_tsoffset` per interface, and follows byte-order and interface changes across sections.
//!
//! Reading allocates nothing per packet. The source is a `BufRead` (a `BufReader<File>` from
//! [`CaptureReader::open`], or a `&[u8]` for a capture in memory): a record that lies whole in the
//! source's buffer is handed out in place, without a copy; one that straddles the end of that
//! buffer is copied into one buffer owned by the reader and reused. Both paths check the same
//! things; the in-place path only takes records that are valid, and leaves everything else
//! (including every error) to the copying path.
//!
//! Errors: a malformed file gives a [`CaptureError`] with the byte offset. A file cut off in the
//! middle of a record first yields every whole record, then the next call returns the error (for
//! which [`CaptureError::is_truncation`] is true and [`CaptureError::offset`] is where the cut
//! record starts). After any error the reader is finished: later calls return `Ok(None)`.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;

use super::error::{CaptureError, CaptureErrorKind, HexBytes};
use super::{LinkType, Packet, PacketSource, Timestamp, TsPrecision};

/// Largest caplen accepted from any file (libpcap's MAXIMUM_SNAPLEN, 256 KiB).
pub const MAX_CAPLEN: u32 = 262_144;

/// Caplen accepted whatever the snaplen says: a full 64 KiB IP datagram (as captured with
/// segmentation offload) plus room for any link-layer header.
const ALWAYS_ACCEPTED_CAPLEN: u32 = 65_535 + 256;

/// Largest interface description block read (they only hold a few options).
const MAX_IDB_LEN: u32 = 1 << 20;

/// Size of the reusable packet buffer made up front (grown only for rare larger needs).
const INITIAL_BUFFER: usize = MAX_CAPLEN as usize;

// pcap magic numbers as read little-endian from the first four bytes.
const PCAP_MICRO_LE: u32 = 0xa1b2_c3d4;
const PCAP_MICRO_BE: u32 = 0xd4c3_b2a1;
const PCAP_NANO_LE: u32 = 0xa1b2_3c4d;
const PCAP_NANO_BE: u32 = 0x4d3c_b2a1;

// pcapng block types (draft-ietf-opsawg-pcapng §4, §10.1).
const BT_SHB: u32 = 0x0a0d_0d0a;
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

/// Which container format a capture file uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaptureFormat {
    /// Classic libpcap format.
    Pcap,
    /// pcapng (next generation) format.
    Pcapng,
}

/// Byte order of a file or pcapng section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endian {
    Little,
    Big,
}

impl Endian {
    fn u16(self, b: [u8; 2]) -> u16 {
        match self {
            Endian::Little => u16::from_le_bytes(b),
            Endian::Big => u16::from_be_bytes(b),
        }
    }
    fn u32(self, b: [u8; 4]) -> u32 {
        match self {
            Endian::Little => u32::from_le_bytes(b),
            Endian::Big => u32::from_be_bytes(b),
        }
    }
    fn i64(self, b: [u8; 8]) -> i64 {
        match self {
            Endian::Little => i64::from_le_bytes(b),
            Endian::Big => i64::from_be_bytes(b),
        }
    }
}

/// Copies `N` bytes at `at` out of `b`; the caller has checked the bounds.
fn arr<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&b[at..at + N]);
    out
}

/// How a pcapng interface's timestamp units become nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TsScale {
    /// Units of 10^-n s with n ≤ 9: multiply.
    Mul(u64),
    /// Units of 10^-n s with n > 9: divide (0 means "too fine to matter": always 0 ns).
    Div(u128),
    /// Units of 2^-n s.
    Pow2(u32),
}

impl TsScale {
    fn from_tsresol(v: u8) -> TsScale {
        let n = u32::from(v & 0x7f);
        if v & 0x80 != 0 {
            TsScale::Pow2(n)
        } else if n <= 9 {
            TsScale::Mul(10u64.pow(9 - n))
        } else {
            TsScale::Div(10u128.checked_pow(n - 9).unwrap_or(0))
        }
    }

    fn to_ns(self, units: u64) -> u64 {
        match self {
            TsScale::Mul(m) => units.saturating_mul(m),
            TsScale::Div(0) => 0,
            TsScale::Div(d) => (u128::from(units) / d) as u64,
            TsScale::Pow2(n) => ((u128::from(units) * 1_000_000_000) >> n) as u64,
        }
    }

    /// Finer than a microsecond means the nanosecond precision is needed to keep it.
    fn precision(self) -> TsPrecision {
        match self {
            TsScale::Mul(m) if m >= 1000 => TsPrecision::Micro,
            TsScale::Pow2(n) if n < 20 => TsPrecision::Micro,
            _ => TsPrecision::Nano,
        }
    }
}

/// One pcapng interface (or the single implicit interface of a pcap file).
#[derive(Debug, Clone, Copy)]
struct Interface {
    linktype: LinkType,
    snaplen: u32,
    scale: TsScale,
    /// `if_tsoffset`: seconds added to every timestamp.
    offset_secs: i64,
}

impl Interface {
    fn ts(&self, units: u64) -> Timestamp {
        let ns = self.scale.to_ns(units);
        if self.offset_secs == 0 {
            return Timestamp(ns);
        }
        let t = i128::from(ns) + i128::from(self.offset_secs) * 1_000_000_000;
        Timestamp(t.clamp(0, i128::from(u64::MAX)) as u64)
    }
}

/// The largest caplen accepted for a snaplen: up to twice the snaplen, and always a full 64 KiB
/// datagram plus link header, but never above [`MAX_CAPLEN`]. A snaplen of 0 means "unset".
pub fn caplen_limit(snaplen: u32) -> u32 {
    if snaplen == 0 {
        return MAX_CAPLEN;
    }
    snaplen
        .saturating_mul(2)
        .clamp(ALWAYS_ACCEPTED_CAPLEN, MAX_CAPLEN)
}

/// Where a packet's bytes are.
#[derive(Clone, Copy)]
enum Loc {
    /// At the start of the reader's own buffer (copied there).
    Own,
    /// In the source's `BufRead` buffer at this offset (not copied; consumed on the next call).
    Source(usize),
}

/// What the next record or block turned out to be.
enum Block {
    /// A packet of `caplen` bytes at `loc`.
    Packet {
        ts: Timestamp,
        orig_len: u32,
        linktype: LinkType,
        caplen: usize,
        loc: Loc,
    },
    /// An interface description was added to the current section.
    Interface,
    /// Any other block (section header, statistics, names, ...) was read or skipped.
    Other,
}

/// Reads `buf.len()` bytes unless the stream ends first; returns how many were read, or the
/// count read before an I/O error together with it.
fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> Result<usize, (usize, io::Error)> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err((n, e)),
        }
    }
    Ok(n)
}

/// A pcap or pcapng file reader that yields packets one by one without allocating.
///
/// A record that lies whole in the source's `BufRead` buffer is handed out in place (no copy);
/// any other record is copied into one reused buffer owned by the reader.
pub struct CaptureReader<R: BufRead> {
    r: R,
    name: String,
    /// Bytes consumed from the start of the file.
    pos: u64,
    format: CaptureFormat,
    /// Byte order of the file (pcap) or current section (pcapng).
    endian: Endian,
    /// pcap: the one interface. pcapng: the first interface of the file, once seen.
    first: Option<Interface>,
    /// pcapng: the interfaces of the current section.
    interfaces: Vec<Interface>,
    /// The reused packet buffer.
    buf: Vec<u8>,
    /// Bytes of the source buffer handed out in place by the last call, consumed by the next.
    pending: usize,
    /// Set after an error: later calls return `Ok(None)`.
    done: bool,
}

impl<R: BufRead> std::fmt::Debug for CaptureReader<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaptureReader")
            .field("name", &self.name)
            .field("format", &self.format)
            .field("pos", &self.pos)
            .field("endian", &self.endian)
            .field("first", &self.first)
            .field("interfaces", &self.interfaces)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl CaptureReader<BufReader<File>> {
    /// Opens a capture file by path (buffered); errors name the file as the path was given.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, CaptureError> {
        let path = path.as_ref();
        let name = path.display().to_string();
        let fail = |kind| CaptureError::new(&name, kind);
        let file = File::open(path).map_err(|source| fail(CaptureErrorKind::Open { source }))?;
        let meta = file
            .metadata()
            .map_err(|source| fail(CaptureErrorKind::Open { source }))?;
        if meta.is_dir() {
            return Err(fail(CaptureErrorKind::IsDirectory));
        }
        CaptureReader::from_reader(BufReader::with_capacity(1 << 18, file), name)
    }
}

impl<R: BufRead> CaptureReader<R> {
    /// Reads the file header from `r` and detects the format; `name` is used in error messages.
    /// Give a buffered reader (`BufReader`, or `&[u8]` for bytes in memory).
    pub fn from_reader(r: R, name: impl Into<String>) -> Result<Self, CaptureError> {
        let mut reader = CaptureReader {
            r,
            name: name.into(),
            pos: 0,
            format: CaptureFormat::Pcap,
            endian: Endian::Little,
            first: None,
            interfaces: Vec::new(),
            buf: Vec::new(),
            pending: 0,
            done: false,
        };
        reader.read_file_header()?;
        Ok(reader)
    }

    /// The name used in error messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the file is pcap or pcapng.
    pub fn format(&self) -> CaptureFormat {
        self.format
    }

    /// Link type of the first interface (pcap: of the file). A pcapng file that describes no
    /// interface at all holds no packets; it reports Ethernet.
    pub fn linktype(&self) -> LinkType {
        self.first.map_or(LinkType::ETHERNET, |i| i.linktype)
    }

    /// Timestamp precision of the first interface: `Nano` when its resolution is finer than 1 µs.
    pub fn precision(&self) -> TsPrecision {
        self.first
            .map_or(TsPrecision::Micro, |i| i.scale.precision())
    }

    /// Snapshot length of the first interface (pcap: of the file); 0 when unset.
    pub fn snaplen(&self) -> u32 {
        self.first.map_or(0, |i| i.snaplen)
    }

    /// Bytes consumed so far: after `Ok(None)` at the end, the file's length.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// Gives back the underlying reader, positioned after the last packet returned.
    pub fn into_inner(mut self) -> R {
        self.r.consume(self.pending);
        self.r
    }

    fn err(&self, kind: CaptureErrorKind) -> CaptureError {
        CaptureError::new(&self.name, kind)
    }

    /// Reads into `self.buf[range]`, advancing the position; returns how many bytes came.
    fn fill_buf(&mut self, from: usize, len: usize) -> Result<usize, CaptureError> {
        if self.buf.len() < from + len {
            let want = (from + len).max(self.buf.len() * 2);
            self.buf.resize(want, 0);
        }
        match read_full(&mut self.r, &mut self.buf[from..from + len]) {
            Ok(n) => {
                self.pos += n as u64;
                Ok(n)
            }
            Err((n, source)) => {
                self.pos += n as u64;
                Err(self.err(CaptureErrorKind::Read {
                    offset: self.pos,
                    source,
                }))
            }
        }
    }

    /// Reads into a small array, advancing the position; returns how many bytes came.
    fn fill_arr(&mut self, out: &mut [u8]) -> Result<usize, CaptureError> {
        match read_full(&mut self.r, out) {
            Ok(n) => {
                self.pos += n as u64;
                Ok(n)
            }
            Err((n, source)) => {
                self.pos += n as u64;
                Err(self.err(CaptureErrorKind::Read {
                    offset: self.pos,
                    source,
                }))
            }
        }
    }

    /// Discards `len` bytes, advancing the position; returns how many were there.
    fn skip(&mut self, len: u64) -> Result<u64, CaptureError> {
        let mut n = 0u64;
        let mut scratch = [0u8; 512];
        while n < len {
            let step = (len - n).min(scratch.len() as u64) as usize;
            let got = self.fill_arr(&mut scratch[..step])?;
            n += got as u64;
            if got < step {
                break;
            }
        }
        Ok(n)
    }

    fn read_file_header(&mut self) -> Result<(), CaptureError> {
        let mut magic = [0u8; 4];
        let n = self.fill_arr(&mut magic)?;
        if n == 0 {
            return Err(self.err(CaptureErrorKind::Empty));
        }
        if n < 4 {
            return Err(self.err(CaptureErrorKind::HeaderCutShort {
                what: "file header",
                offset: 0,
                needed: 4,
                present: n as u64,
            }));
        }
        let (endian, precision) = match u32::from_le_bytes(magic) {
            PCAP_MICRO_LE => (Endian::Little, TsPrecision::Micro),
            PCAP_MICRO_BE => (Endian::Big, TsPrecision::Micro),
            PCAP_NANO_LE => (Endian::Little, TsPrecision::Nano),
            PCAP_NANO_BE => (Endian::Big, TsPrecision::Nano),
            BT_SHB => {
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
                return Ok(());
            }
            _ => {
                return Err(self.err(CaptureErrorKind::BadMagic {
                    magic: HexBytes(magic.to_vec()),
                }))
            }
        };
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

    fn check_caplen(&self, start: u64, caplen: u32, snaplen: u32) -> Result<(), CaptureError> {
        let limit = caplen_limit(snaplen);
        if caplen > limit {
            return Err(self.err(CaptureErrorKind::AbsurdCaplen {
                offset: start,
                caplen,
                snaplen,
                limit,
            }));
        }
        Ok(())
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

    fn next_pcap(&mut self) -> Result<Option<Block>, CaptureError> {
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
    fn peek_pcap(&mut self) -> Option<Block> {
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

    fn next_pcapng(&mut self) -> Result<Option<Block>, CaptureError> {
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

impl<R: BufRead> PacketSource for CaptureReader<R> {
    type Error = CaptureError;

    /// Next packet; `Ok(None)` at the end of the file and after an error was returned.
    fn next_packet(&mut self) -> Result<Option<Packet<'_>>, CaptureError> {
        if self.done {
            return Ok(None);
        }
        if self.pending > 0 {
            self.r.consume(self.pending);
            self.pending = 0;
        }
        let res = match self.format {
            CaptureFormat::Pcap => match self.peek_pcap() {
                Some(b) => Ok(Some(b)),
                None => self.next_pcap(),
            },
            CaptureFormat::Pcapng => self.next_pcapng(),
        };
        match res {
            Ok(Some(Block::Packet {
                ts,
                orig_len,
                linktype,
                caplen,
                loc,
            })) => {
                let data = match loc {
                    Loc::Own => &self.buf[..caplen],
                    Loc::Source(off) => {
                        // The fast path just looked at this buffer and nothing was consumed, so
                        // the same bytes are there; check anyway rather than trust the source.
                        let there = matches!(self.r.fill_buf(), Ok(b) if b.len() >= off + caplen);
                        if !there {
                            self.done = true;
                            return Err(self.err(CaptureErrorKind::Read {
                                offset: self.pos,
                                source: io::Error::other("source buffer changed between reads"),
                            }));
                        }
                        let b = self.r.fill_buf().ok().unwrap_or_default();
                        b.get(off..off + caplen).unwrap_or_default()
                    }
                };
                Ok(Some(Packet {
                    ts,
                    orig_len,
                    linktype,
                    data,
                }))
            }
            Ok(_) => Ok(None),
            Err(e) => {
                self.done = true;
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hex_literal::hex;

    /// pcap, little-endian, microseconds, Ethernet, snaplen 65535: two records.
    const PCAP_LE_US: [u8; 62] = hex!(
        "d4c3b2a1 0200 0400 00000000 00000000 ffff0000 01000000" // file header
        "00105e5f 40e20100 04000000 3c000000 deadbeef" // 1600000000.123456, caplen 4, len 60
        "01105e5f 3f420f00 02000000 02000000 0102" // 1600000001.999999, caplen 2
    );
    /// The same two records, big-endian, microseconds.
    const PCAP_BE_US: [u8; 62] = hex!(
        "a1b2c3d4 0002 0004 00000000 00000000 0000ffff 00000001"
        "5f5e1000 0001e240 00000004 0000003c deadbeef"
        "5f5e1001 000f423f 00000002 00000002 0102"
    );
    /// pcap, little-endian, nanoseconds, raw IP, snaplen 262144: one record.
    const PCAP_LE_NS: [u8; 43] = hex!(
        "4d3cb2a1 0200 0400 00000000 00000000 00000400 65000000"
        "00105e5f 15cd5b07 03000000 03000000 aabbcc" // 1600000000.123456789
    );
    /// The same, big-endian.
    const PCAP_BE_NS: [u8; 43] = hex!(
        "a1b23c4d 0002 0004 00000000 00000000 00040000 00000065"
        "5f5e1000 075bcd15 00000003 00000003 aabbcc"
    );

    /// pcapng, two sections. Section 1 (little-endian): interface 0 Ethernet with the default
    /// µs resolution, interface 1 raw IP with if_tsresol 9 (ns), interface 2 SLL2 with
    /// if_tsresol 2^-20; a name resolution block; one EPB per interface; an interface statistics
    /// block; a simple packet block; a decryption secrets block. Section 2 (big-endian): one
    /// Ethernet interface and one EPB.
    const PCAPNG: [u8; 400] = hex!(
        // SHB, LE, length 28
        "0a0d0d0a 1c000000 4d3c2b1a 0100 0000 ffffffffffffffff 1c000000"
        // IDB 0: Ethernet, snaplen 262144, no options (length 20)
        "01000000 14000000 0100 0000 00000400 14000000"
        // IDB 1: raw IP, snaplen 65535, if_tsresol 9 (length 32)
        "01000000 20000000 6500 0000 ffff0000 0900 0100 09000000 0000 0000 20000000"
        // IDB 2: SLL2, snaplen 0, if_tsresol 0x94 = 2^-20 s (length 32)
        "01000000 20000000 1401 0000 00000000 0900 0100 94000000 0000 0000 20000000"
        // NRB (skipped): length 16, only nrb_record_end
        "04000000 10000000 00000000 10000000"
        // EPB on interface 0: units of µs 1600000000123456, caplen 5, len 5
        "06000000 28000000 00000000 31af0500 40e2a507 05000000 05000000 0102030405 000000 28000000"
        // EPB on interface 1: units of ns 1600000000123456789, caplen 3, len 64
        "06000000 24000000 01000000 85573416 15cdfbdf 03000000 40000000 aabbcc 00 24000000"
        // EPB on interface 2: 1600000000.5 s in units of 2^-20 s, caplen 1, len 1, with an
        // opt_comment "hi" that is skipped (length 48)
        "06000000 30000000 02000000 e1f50500 00000800 01000000 01000000 ee 000000"
        "0100 0200 68690000 0000 0000 30000000"
        // ISB (skipped): length 24
        "05000000 18000000 00000000 31af0500 40e2a507 18000000"
        // SPB: original length 3 on interface 0 (length 20)
        "03000000 14000000 03000000 aabbcc00 14000000"
        // DSB (skipped): length 20
        "0a000000 14000000 544c534b 00000000 14000000"
        // SHB, BE, length 28
        "0a0d0d0a 0000001c 1a2b3c4d 0001 0000 ffffffffffffffff 0000001c"
        // IDB 0 of section 2: Ethernet, snaplen 65536
        "00000001 00000014 0001 0000 00010000 00000014"
        // EPB: µs 1600000000123457, caplen 4, len 4
        "00000006 00000024 00000000 0005af31 07a5e241 00000004 00000004 cafef00d 00000024"
    );

    /// (timestamp, original length, link type, bytes) of each packet read.
    type Packets = Vec<(Timestamp, u32, LinkType, Vec<u8>)>;

    fn read_all(bytes: &[u8]) -> (Packets, Option<CaptureError>) {
        let mut r = CaptureReader::from_reader(bytes, "t.pcap").expect("header reads");
        let mut out = Vec::new();
        loop {
            match r.next_packet() {
                Ok(Some(p)) => out.push((p.ts, p.orig_len, p.linktype, p.data.to_vec())),
                Ok(None) => return (out, None),
                Err(e) => {
                    assert!(
                        r.next_packet().unwrap().is_none(),
                        "reader is fused after an error"
                    );
                    return (out, Some(e));
                }
            }
        }
    }

    fn open_err(bytes: &[u8]) -> String {
        CaptureReader::from_reader(bytes, "t.pcap")
            .unwrap_err()
            .to_string()
    }

    fn read_err(bytes: &[u8]) -> (usize, CaptureError) {
        let (pkts, err) = read_all(bytes);
        (pkts.len(), err.expect("an error"))
    }

    fn ts(secs: u64, nanos: u32) -> Timestamp {
        Timestamp::from_parts(secs, nanos)
    }

    #[test]
    fn pcap_micro_both_byte_orders() {
        for bytes in [&PCAP_LE_US[..], &PCAP_BE_US[..]] {
            let r = CaptureReader::from_reader(bytes, "t.pcap").unwrap();
            assert_eq!(r.format(), CaptureFormat::Pcap);
            assert_eq!(r.linktype(), LinkType::ETHERNET);
            assert_eq!(r.precision(), TsPrecision::Micro);
            assert_eq!(r.snaplen(), 65535);
            let (pkts, err) = read_all(bytes);
            assert!(err.is_none());
            assert_eq!(
                pkts,
                vec![
                    (
                        ts(1_600_000_000, 123_456_000),
                        60,
                        LinkType::ETHERNET,
                        hex!("deadbeef").to_vec()
                    ),
                    (
                        ts(1_600_000_001, 999_999_000),
                        2,
                        LinkType::ETHERNET,
                        vec![1, 2]
                    ),
                ]
            );
        }
    }

    #[test]
    fn pcap_nano_both_byte_orders() {
        for bytes in [&PCAP_LE_NS[..], &PCAP_BE_NS[..]] {
            let r = CaptureReader::from_reader(bytes, "t.pcap").unwrap();
            assert_eq!(r.precision(), TsPrecision::Nano);
            assert_eq!(r.linktype(), LinkType::RAW);
            assert_eq!(r.snaplen(), 262_144);
            let (pkts, err) = read_all(bytes);
            assert!(err.is_none());
            assert_eq!(
                pkts,
                vec![(
                    ts(1_600_000_000, 123_456_789),
                    3,
                    LinkType::RAW,
                    hex!("aabbcc").to_vec()
                )]
            );
        }
    }

    #[test]
    fn pcapng_sections_interfaces_tsresol_and_skipped_blocks() {
        let r = CaptureReader::from_reader(&PCAPNG[..], "t.pcapng").unwrap();
        assert_eq!(r.format(), CaptureFormat::Pcapng);
        assert_eq!(r.linktype(), LinkType::ETHERNET);
        assert_eq!(r.precision(), TsPrecision::Micro);
        assert_eq!(r.snaplen(), 262_144);
        let (pkts, err) = read_all(&PCAPNG);
        assert!(err.is_none(), "{err:?}");
        assert_eq!(
            pkts,
            vec![
                (
                    ts(1_600_000_000, 123_456_000),
                    5,
                    LinkType::ETHERNET,
                    vec![1, 2, 3, 4, 5]
                ),
                (
                    ts(1_600_000_000, 123_456_789),
                    64,
                    LinkType::RAW,
                    hex!("aabbcc").to_vec()
                ),
                (
                    ts(1_600_000_000, 500_000_000),
                    1,
                    LinkType::LINUX_SLL2,
                    vec![0xee]
                ),
                // A simple packet block carries no timestamp.
                (Timestamp(0), 3, LinkType::ETHERNET, hex!("aabbcc").to_vec()),
                (
                    ts(1_600_000_000, 123_457_000),
                    4,
                    LinkType::ETHERNET,
                    hex!("cafef00d").to_vec()
                ),
            ]
        );
    }

    #[test]
    fn pcapng_first_interface_decides_precision() {
        // Section header, then only IDB 1 of the fixture (ns resolution): Nano.
        let mut f = PCAPNG[..28].to_vec();
        f.extend_from_slice(&PCAPNG[48..80]);
        let r = CaptureReader::from_reader(&f[..], "t.pcapng").unwrap();
        assert_eq!(r.precision(), TsPrecision::Nano);
        assert_eq!(r.linktype(), LinkType::RAW);
        assert_eq!(r.snaplen(), 65535);
    }

    #[test]
    fn tsresol_conversions() {
        assert_eq!(TsScale::from_tsresol(6).to_ns(1_500_000), 1_500_000_000);
        assert_eq!(TsScale::from_tsresol(9).to_ns(7), 7);
        assert_eq!(TsScale::from_tsresol(0).to_ns(3), 3_000_000_000);
        assert_eq!(TsScale::from_tsresol(12).to_ns(5_000), 5);
        assert_eq!(TsScale::from_tsresol(0x80 | 10).to_ns(1024), 1_000_000_000);
        assert_eq!(
            TsScale::from_tsresol(0x80 | 30).to_ns(1 << 30),
            1_000_000_000
        );
        assert_eq!(TsScale::from_tsresol(0x7f).to_ns(u64::MAX), 0);
        assert_eq!(TsScale::from_tsresol(0xff).to_ns(u64::MAX), 0);
        assert_eq!(TsScale::from_tsresol(6).precision(), TsPrecision::Micro);
        assert_eq!(TsScale::from_tsresol(7).precision(), TsPrecision::Nano);
        assert_eq!(
            TsScale::from_tsresol(0x80 | 19).precision(),
            TsPrecision::Micro
        );
        assert_eq!(
            TsScale::from_tsresol(0x80 | 20).precision(),
            TsPrecision::Nano
        );
    }

    #[test]
    fn if_tsoffset_is_added() {
        // SHB + IDB with if_tsoffset = 100 s + EPB at 1 s.
        let f = hex!(
            "0a0d0d0a 1c000000 4d3c2b1a 0100 0000 ffffffffffffffff 1c000000"
            "01000000 24000000 0100 0000 00000000 0e00 0800 6400000000000000 0000 0000 24000000"
            "06000000 20000000 00000000 00000000 40420f00 00000000 00000000 20000000"
        );
        let (pkts, err) = read_all(&f);
        assert!(err.is_none());
        assert_eq!(pkts[0].0, ts(101, 0));
    }

    #[test]
    fn unknown_linktype_still_reads() {
        let mut f = PCAP_LE_US;
        f[20..24].copy_from_slice(&147u32.to_le_bytes());
        let r = CaptureReader::from_reader(&f[..], "t.pcap").unwrap();
        assert_eq!(r.linktype(), LinkType(147));
        assert_eq!(r.linktype().to_string(), "linktype 147");
        let (pkts, err) = read_all(&f);
        assert!(err.is_none());
        assert_eq!(pkts.len(), 2);
        assert_eq!(pkts[0].2, LinkType(147));
    }

    #[test]
    fn fcs_bits_above_the_linktype_are_ignored() {
        let mut f = PCAP_LE_US;
        f[20..24].copy_from_slice(&(0x1400_0000u32 | 1).to_le_bytes());
        assert_eq!(
            CaptureReader::from_reader(&f[..], "t").unwrap().linktype(),
            LinkType::ETHERNET
        );
    }

    // ---- bad input: each with its exact one-line message and offset ----

    #[test]
    fn empty_file() {
        assert_eq!(open_err(&[]), "t.pcap: empty file (0 bytes)");
    }

    #[test]
    fn wrong_magic() {
        assert_eq!(
            open_err(b"\x7fELF\x02\x01\x01\x00"),
            "t.pcap: not a pcap or pcapng file: unknown magic 0x7f454c46 at byte 0"
        );
        assert_eq!(
            open_err(b"GET / HTTP/1.1\r\n"),
            "t.pcap: not a pcap or pcapng file: unknown magic 0x47455420 at byte 0"
        );
    }

    #[test]
    fn header_cut_short() {
        assert_eq!(
            open_err(&PCAP_LE_US[..10]),
            "t.pcap: pcap file header cut short at byte 0 (24 bytes needed, 10 present)"
        );
        assert_eq!(
            open_err(&PCAP_LE_US[..3]),
            "t.pcap: file header cut short at byte 0 (4 bytes needed, 3 present)"
        );
        assert_eq!(
            open_err(&PCAPNG[..6]),
            "t.pcap: pcapng section header cut short at byte 0 (28 bytes needed, 6 present)"
        );
        assert_eq!(
            open_err(&PCAPNG[..20]),
            "t.pcap: pcapng section header cut short at byte 0 (28 bytes needed, 20 present)"
        );
        let e = CaptureReader::from_reader(&PCAP_LE_US[..23], "t.pcap").unwrap_err();
        assert!(e.is_truncation());
        assert_eq!(e.offset(), Some(0));
    }

    #[test]
    fn unsupported_pcap_version() {
        let mut f = PCAP_LE_US;
        f[4] = 1;
        assert_eq!(
            open_err(&f),
            "t.pcap: unsupported pcap version 1.4 at byte 4"
        );
    }

    #[test]
    fn record_cut_short_gives_whole_records_first() {
        // Cut in the middle of the second record's data: 24 + 20 + 16 + 1.
        let f = &PCAP_LE_US[..61];
        let (pkts, err) = read_all(f);
        assert_eq!(pkts.len(), 1, "the whole first record comes out");
        assert_eq!(pkts[0].3, hex!("deadbeef"));
        let err = err.unwrap();
        assert_eq!(
            err.to_string(),
            "t.pcap: record cut short at byte 44 (caplen 2, 1 bytes left)"
        );
        assert!(err.is_truncation());
        assert_eq!(err.offset(), Some(44));
    }

    #[test]
    fn record_header_cut_short() {
        let (n, err) = read_err(&PCAP_LE_US[..51]);
        assert_eq!(n, 1);
        assert_eq!(
            err.to_string(),
            "t.pcap: record header cut short at byte 44 (16 bytes needed, 7 present)"
        );
        assert!(err.is_truncation());
    }

    #[test]
    fn every_cut_point_yields_the_records_before_it() {
        let ends = [24usize, 44, 62];
        for cut in 24..PCAP_LE_US.len() {
            let (pkts, err) = read_all(&PCAP_LE_US[..cut]);
            let whole = ends.iter().filter(|&&e| e <= cut).count() - 1;
            assert_eq!(pkts.len(), whole, "cut at {cut}");
            match err {
                None => assert!(ends.contains(&cut)),
                Some(e) => {
                    assert!(e.is_truncation());
                    assert_eq!(e.offset(), Some(ends[whole] as u64), "cut at {cut}");
                }
            }
        }
    }

    #[test]
    fn absurd_caplen() {
        let mut f = PCAP_LE_US.to_vec();
        f[32..36].copy_from_slice(&300_000u32.to_le_bytes());
        let (n, err) = read_err(&f);
        assert_eq!(n, 0);
        assert_eq!(
            err.to_string(),
            "t.pcap: absurd caplen 300000 at byte 24 (snaplen 65535, limit 131070)"
        );
        assert!(!err.is_truncation());
        // Far above a small snaplen.
        let mut f = PCAP_LE_US.to_vec();
        f[16..20].copy_from_slice(&96u32.to_le_bytes());
        f[52..56].copy_from_slice(&70_000u32.to_le_bytes());
        let (n, err) = read_err(&f);
        assert_eq!(n, 1);
        assert_eq!(
            err.to_string(),
            "t.pcap: absurd caplen 70000 at byte 44 (snaplen 96, limit 65791)"
        );
    }

    #[test]
    fn caplen_above_snaplen_but_plausible_is_read() {
        // tcpdump -s 96 files never exceed 96, but a TSO frame in a 65535-snaplen file can.
        assert_eq!(caplen_limit(65535), 131_070);
        assert_eq!(caplen_limit(96), 65_791);
        assert_eq!(caplen_limit(0), MAX_CAPLEN);
        assert_eq!(caplen_limit(u32::MAX), MAX_CAPLEN);
        let mut f = PCAP_LE_US[..24].to_vec();
        f[16..20].copy_from_slice(&1500u32.to_le_bytes());
        f.extend_from_slice(&hex!("00000000 00000000 a00f0000 a00f0000"));
        f.extend(std::iter::repeat_n(7u8, 4000));
        let (pkts, err) = read_all(&f);
        assert!(err.is_none());
        assert_eq!(pkts[0].3.len(), 4000);
    }

    /// PCAPNG cut to its first section header, IDB 0 and `tail`.
    fn ng_with(tail: &[u8]) -> Vec<u8> {
        let mut f = PCAPNG[..48].to_vec();
        f.extend_from_slice(tail);
        f
    }

    #[test]
    fn pcapng_block_length_not_multiple_of_4() {
        let (n, err) = read_err(&ng_with(&hex!("06000000 1e000000 00000000")));
        assert_eq!(n, 0);
        assert_eq!(
            err.to_string(),
            "t.pcap: corrupt pcapng block length 30 at byte 48 (not a multiple of 4)"
        );
    }

    #[test]
    fn pcapng_block_length_too_small() {
        let (_, err) = read_err(&ng_with(&hex!("07000000 08000000 08000000")));
        assert_eq!(
            err.to_string(),
            "t.pcap: corrupt pcapng block length 8 at byte 48 (shorter than 12)"
        );
        let (_, err) = read_err(&ng_with(&hex!("06000000 10000000 00000000 10000000")));
        assert_eq!(
            err.to_string(),
            "t.pcap: corrupt pcapng block length 16 at byte 48 (shorter than a packet block (32))"
        );
        let mut shb = PCAPNG[..28].to_vec();
        shb[4] = 0x18;
        assert_eq!(
            open_err(&shb),
            "t.pcap: corrupt pcapng block length 24 at byte 0 (shorter than a section header block (28))"
        );
    }

    #[test]
    fn pcapng_trailing_length_mismatch() {
        let (_, err) = read_err(&ng_with(&hex!("04000000 10000000 00000000 14000000")));
        assert_eq!(
            err.to_string(),
            "t.pcap: corrupt pcapng block length at byte 48 (leading length 16, trailing length 20)"
        );
        // Also in a packet block and an interface block.
        let mut f = PCAPNG[..48].to_vec();
        f.extend_from_slice(&PCAPNG[128..168]);
        let last = f.len() - 4;
        f[last] = 0x2c;
        let (n, err) = read_err(&f);
        assert_eq!(n, 0);
        assert_eq!(
            err.to_string(),
            "t.pcap: corrupt pcapng block length at byte 48 (leading length 40, trailing length 44)"
        );
        let mut f = PCAPNG[..48].to_vec();
        f[47] = 1;
        assert_eq!(
            open_err(&f),
            "t.pcap: corrupt pcapng block length at byte 28 (leading length 20, trailing length 16777236)"
        );
    }

    #[test]
    fn pcapng_cut_short_gives_whole_packets_first() {
        // Everything up to the SPB (at byte 276), then 10 bytes of it.
        let (pkts, err) = read_all(&PCAPNG[..286]);
        assert_eq!(pkts.len(), 3);
        let err = err.unwrap();
        assert_eq!(
            err.to_string(),
            "t.pcap: pcapng block cut short at byte 276 (block length 20, 10 bytes left)"
        );
        assert!(err.is_truncation());
        // Cut inside a block header.
        let (pkts, err) = read_all(&PCAPNG[..279]);
        assert_eq!(pkts.len(), 3);
        assert_eq!(
            err.unwrap().to_string(),
            "t.pcap: pcapng block header cut short at byte 276 (8 bytes needed, 3 present)"
        );
    }

    #[test]
    fn pcapng_every_cut_point_is_a_clean_end_or_a_truncation() {
        for cut in 28..PCAPNG.len() {
            let Ok(mut r) = CaptureReader::from_reader(&PCAPNG[..cut], "t") else {
                continue;
            };
            loop {
                match r.next_packet() {
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(e) => {
                        assert!(e.is_truncation(), "cut at {cut}: {e}");
                        break;
                    }
                }
            }
        }
    }

    #[test]
    fn pcapng_unknown_interface() {
        let (_, err) = read_err(&ng_with(
            &PCAPNG[128..168]
                .iter()
                .enumerate()
                .map(|(i, &b)| if i == 8 { 3 } else { b })
                .collect::<Vec<_>>(),
        ));
        assert_eq!(
            err.to_string(),
            "t.pcap: pcapng enhanced packet block at byte 48 names interface 3, but the section describes 1"
        );
    }

    #[test]
    fn pcapng_caplen_past_block_end() {
        let mut epb = PCAPNG[128..168].to_vec();
        epb[20] = 9;
        let (_, err) = read_err(&ng_with(&epb));
        assert_eq!(
            err.to_string(),
            "t.pcap: corrupt pcapng enhanced packet block at byte 48 (caplen runs past the end of the block)"
        );
    }

    #[test]
    fn pcapng_bad_byte_order_magic() {
        let mut f = PCAPNG[..28].to_vec();
        f[8..12].copy_from_slice(b"abcd");
        assert_eq!(
            open_err(&f),
            "t.pcap: bad pcapng byte-order magic 0x61626364 at byte 8"
        );
    }

    #[test]
    fn pcapng_option_overrun() {
        let mut idb = PCAPNG[48..80].to_vec();
        idb[18] = 0x20; // if_tsresol length 32
        let mut f = PCAPNG[..28].to_vec();
        f.extend_from_slice(&idb);
        assert_eq!(
            open_err(&f),
            "t.pcap: corrupt pcapng interface description block at byte 28 (option runs past the end of the block)"
        );
    }

    #[test]
    fn missing_file_and_directory() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.pcap");
        let e = CaptureReader::open(&missing).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "{}: cannot open: No such file or directory (os error 2)",
                missing.display()
            )
        );
        let e = CaptureReader::open(dir.path()).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "{}: is a directory, not a capture file",
                dir.path().display()
            )
        );
        let empty = dir.path().join("empty.pcap");
        std::fs::write(&empty, b"").unwrap();
        assert_eq!(
            CaptureReader::open(&empty).unwrap_err().to_string(),
            format!("{}: empty file (0 bytes)", empty.display())
        );
        let good = dir.path().join("good.pcapng");
        std::fs::write(&good, PCAPNG).unwrap();
        let mut r = CaptureReader::open(&good).unwrap();
        let mut n = 0;
        while r.next_packet().unwrap().is_some() {
            n += 1;
        }
        assert_eq!(n, 5);
        assert_eq!(r.position(), PCAPNG.len() as u64);
    }

    /// Reads everything through a `BufReader` of the given capacity (records straddle its buffer).
    fn read_all_buffered(bytes: &[u8], cap: usize) -> (Packets, Option<String>) {
        let mut r = match CaptureReader::from_reader(io::BufReader::with_capacity(cap, bytes), "t")
        {
            Ok(r) => r,
            Err(e) => return (Vec::new(), Some(e.to_string())),
        };
        let mut out = Vec::new();
        loop {
            match r.next_packet() {
                Ok(Some(p)) => out.push((p.ts, p.orig_len, p.linktype, p.data.to_vec())),
                Ok(None) => return (out, None),
                Err(e) => return (out, Some(e.to_string())),
            }
        }
    }

    #[test]
    fn in_place_and_copying_paths_agree() {
        let files: [&[u8]; 4] = [&PCAP_LE_US, &PCAP_BE_NS, &PCAPNG, &PCAPNG[..286]];
        for f in files {
            let whole = read_all_buffered(f, 1 << 16);
            for cap in [1, 3, 8, 16, 20, 31, 36, 40, 64, 100] {
                assert_eq!(read_all_buffered(f, cap), whole, "capacity {cap}");
            }
            // And at every cut point.
            for cut in 0..f.len() {
                let whole = read_all_buffered(&f[..cut], 1 << 16);
                for cap in [1, 17, 44] {
                    assert_eq!(
                        read_all_buffered(&f[..cut], cap),
                        whole,
                        "cut {cut} capacity {cap}"
                    );
                }
            }
        }
    }

    #[test]
    fn into_inner_is_positioned_after_the_last_packet() {
        let mut r = CaptureReader::from_reader(&PCAP_LE_US[..], "t").unwrap();
        assert!(r.next_packet().unwrap().is_some());
        assert_eq!(r.position(), 44);
        assert_eq!(r.into_inner(), &PCAP_LE_US[44..]);
    }

    #[test]
    fn read_errors_carry_the_offset() {
        /// Gives `ok` bytes, then fails.
        struct Failing<'a>(&'a [u8]);
        impl Read for Failing<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.0.is_empty() {
                    return Err(io::Error::other("disk on fire"));
                }
                let n = buf.len().min(self.0.len());
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let mut r =
            CaptureReader::from_reader(io::BufReader::new(Failing(&PCAP_LE_US[..50])), "t.pcap")
                .unwrap();
        assert!(r.next_packet().unwrap().is_some());
        let e = r.next_packet().unwrap_err();
        assert_eq!(e.to_string(), "t.pcap: read error at byte 50: disk on fire");
        assert!(!e.is_truncation());
    }
}
