//! Reading pcap and pcapng capture files from any `std::io::Read`.
//!
//! The format is detected from the first four bytes (never from the file name): classic pcap in
//! either byte order with microsecond (0xa1b2c3d4) or nanosecond (0xa1b23c4d) timestamps, or pcapng
//! (section header block 0x0a0d0d0a). For pcapng this reads section header, interface description,
//! enhanced, simple and obsolete packet blocks, skips every other block (name resolution, interface
//! statistics, decryption secrets, custom, ...), honours `if_tsresol` (power of 10 or of 2) and
//! `if_tsoffset` per interface, and follows byte-order and interface changes across sections.
//! Simple packet blocks carry no timestamp; their packets get `Timestamp(0)`.
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
//!
//! Layout: this file holds the reader itself (its buffers, the byte plumbing, the format
//! dispatch and the [`PacketSource`] impl) and the pieces both formats share (byte order, the
//! interface and its timestamp scale, the caplen limit). `pcap.rs` reads classic pcap records,
//! `pcapng.rs` pcapng blocks. None of them opens anything but the file [`CaptureReader::open`]
//! is given, and none may allocate per packet.

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

/// Size of the reusable packet buffer made up front (grown only for rare larger needs).
const INITIAL_BUFFER: usize = MAX_CAPLEN as usize;

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

    /// Reads the first four bytes and hands over to the format they name.
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
        let magic_le = u32::from_le_bytes(magic);
        if let Some((endian, precision)) = pcap::magic(magic_le) {
            return self.read_pcap_header(endian, precision);
        }
        if magic_le == pcapng::BT_SHB {
            return self.start_pcapng();
        }
        Err(self.err(CaptureErrorKind::BadMagic {
            magic: HexBytes(magic.to_vec()),
        }))
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

mod pcap;
mod pcapng;

#[cfg(test)]
mod tests;
