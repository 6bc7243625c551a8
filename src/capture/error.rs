//! Errors of the capture-file layer: each names the file, what is wrong and the byte offset, and
//! displays as one line, e.g. `capture.pcap: record cut short at byte 1234 (caplen 60, 20 bytes left)`.

use std::fmt;
use std::io;

/// An error reading or writing a capture file: the file's name plus what went wrong where.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {kind}")]
pub struct CaptureError {
    /// The file (or stream) name given when the reader or writer was made.
    pub file: String,
    /// What is wrong, with its byte offset.
    pub kind: CaptureErrorKind,
}

impl CaptureError {
    pub(crate) fn new(file: &str, kind: CaptureErrorKind) -> Self {
        CaptureError {
            file: file.to_owned(),
            kind,
        }
    }

    /// Byte offset in the file where the problem is, when there is one.
    ///
    /// For a cut-short record or block this is where that record starts, so every byte before it
    /// belongs to whole records that were already returned: "file truncated at byte N".
    pub fn offset(&self) -> Option<u64> {
        use CaptureErrorKind::*;
        match &self.kind {
            Open { .. } | IsDirectory | Empty => None,
            BadMagic { .. } => Some(0),
            HeaderCutShort { offset, .. }
            | UnsupportedVersion { offset, .. }
            | RecordHeaderCutShort { offset, .. }
            | RecordCutShort { offset, .. }
            | AbsurdCaplen { offset, .. }
            | BlockLength { offset, .. }
            | BlockTrailerMismatch { offset, .. }
            | BlockCutShort { offset, .. }
            | BlockTooLarge { offset, .. }
            | BadByteOrderMagic { offset, .. }
            | BadBlock { offset, .. }
            | UnknownInterface { offset, .. }
            | Read { offset, .. }
            | Write { offset, .. }
            | LinkTypeMismatch { offset, .. } => Some(*offset),
        }
    }

    /// True when the file simply ends in the middle of a record, header or block (a capture that
    /// was cut off, e.g. tcpdump killed mid-write); every whole record before the cut was returned.
    pub fn is_truncation(&self) -> bool {
        matches!(
            self.kind,
            CaptureErrorKind::HeaderCutShort { .. }
                | CaptureErrorKind::RecordHeaderCutShort { .. }
                | CaptureErrorKind::RecordCutShort { .. }
                | CaptureErrorKind::BlockCutShort { .. }
        )
    }
}

/// What is wrong with a capture file, and where.
#[derive(Debug, thiserror::Error)]
pub enum CaptureErrorKind {
    /// The file could not be opened (missing, no permission, ...).
    #[error("cannot open: {source}")]
    Open {
        /// The operating system's reason.
        source: io::Error,
    },
    /// The path names a directory.
    #[error("is a directory, not a capture file")]
    IsDirectory,
    /// The file holds no bytes at all.
    #[error("empty file (0 bytes)")]
    Empty,
    /// The first four bytes are neither a pcap nor a pcapng magic number.
    #[error("not a pcap or pcapng file: unknown magic {magic} at byte 0")]
    BadMagic {
        /// The first bytes of the file, in hex.
        magic: HexBytes,
    },
    /// The file (or section) header ends before it is complete.
    #[error("{what} cut short at byte {offset} ({needed} bytes needed, {present} present)")]
    HeaderCutShort {
        /// Which header.
        what: &'static str,
        /// Where that header starts.
        offset: u64,
        /// Its full size.
        needed: u64,
        /// How many of its bytes the file holds.
        present: u64,
    },
    /// A pcap file of a version this reader does not know (only 2.x is pcap as libpcap writes it).
    #[error("unsupported {what} version {major}.{minor} at byte {offset}")]
    UnsupportedVersion {
        /// "pcap" or "pcapng".
        what: &'static str,
        /// Where the version field is.
        offset: u64,
        /// Major version.
        major: u16,
        /// Minor version.
        minor: u16,
    },
    /// A pcap record header (16 bytes) ends early.
    #[error("record header cut short at byte {offset} (16 bytes needed, {present} present)")]
    RecordHeaderCutShort {
        /// Where the record starts.
        offset: u64,
        /// How many header bytes the file holds.
        present: u64,
    },
    /// A pcap record's data ends before its caplen.
    #[error("record cut short at byte {offset} (caplen {caplen}, {left} bytes left)")]
    RecordCutShort {
        /// Where the record (its 16-byte header) starts.
        offset: u64,
        /// The record's captured length.
        caplen: u32,
        /// How many data bytes the file still holds after the record header.
        left: u64,
    },
    /// A captured length no real capture has (bigger than 256 KiB, or far above the snaplen).
    #[error("absurd caplen {caplen} at byte {offset} (snaplen {snaplen}, limit {limit})")]
    AbsurdCaplen {
        /// Where the record or block starts.
        offset: u64,
        /// The captured length it claims.
        caplen: u32,
        /// The file's (or interface's) snaplen, 0 when unset.
        snaplen: u32,
        /// The largest caplen accepted for that snaplen.
        limit: u32,
    },
    /// A pcapng block total length that cannot be right.
    #[error("corrupt pcapng block length {length} at byte {offset} ({why})")]
    BlockLength {
        /// Where the block starts.
        offset: u64,
        /// The block total length it claims.
        length: u32,
        /// Why it is wrong.
        why: &'static str,
    },
    /// A pcapng block's trailing length differs from its leading length.
    #[error(
        "corrupt pcapng block length at byte {offset} (leading length {leading}, trailing length {trailing})"
    )]
    BlockTrailerMismatch {
        /// Where the block starts.
        offset: u64,
        /// The length at the block's start.
        leading: u32,
        /// The length at the block's end.
        trailing: u32,
    },
    /// A pcapng block ends before its total length.
    #[error("pcapng block cut short at byte {offset} (block length {length}, {left} bytes left)")]
    BlockCutShort {
        /// Where the block starts.
        offset: u64,
        /// The block total length it claims.
        length: u32,
        /// How many bytes of the block the file holds, counted from the block's start.
        left: u64,
    },
    /// A pcapng block this reader must hold whole (interface description) is implausibly large.
    #[error("pcapng {block} at byte {offset} is {length} bytes long (limit {limit})")]
    BlockTooLarge {
        /// Which block.
        block: &'static str,
        /// Where the block starts.
        offset: u64,
        /// The block total length it claims.
        length: u32,
        /// The largest accepted.
        limit: u32,
    },
    /// A pcapng section header whose byte-order magic is not 0x1A2B3C4D in either order.
    #[error("bad pcapng byte-order magic {magic} at byte {offset}")]
    BadByteOrderMagic {
        /// Where the section header block starts.
        offset: u64,
        /// The four bytes found.
        magic: HexBytes,
    },
    /// A pcapng block whose contents do not fit its length (a field or option overruns it).
    #[error("corrupt pcapng {block} at byte {offset} ({why})")]
    BadBlock {
        /// Which block.
        block: &'static str,
        /// Where the block starts.
        offset: u64,
        /// What is wrong.
        why: &'static str,
    },
    /// A pcapng packet block that names an interface the section has not described.
    #[error(
        "pcapng {block} at byte {offset} names interface {interface}, but the section describes {count}"
    )]
    UnknownInterface {
        /// Which block.
        block: &'static str,
        /// Where the block starts.
        offset: u64,
        /// The interface id it names.
        interface: u32,
        /// How many interfaces the section has described so far.
        count: usize,
    },
    /// The operating system failed a read.
    #[error("read error at byte {offset}: {source}")]
    Read {
        /// Where reading stopped.
        offset: u64,
        /// The operating system's reason.
        source: io::Error,
    },
    /// The operating system failed a write.
    #[error("write error at byte {offset}: {source}")]
    Write {
        /// How many bytes had been written before.
        offset: u64,
        /// The operating system's reason.
        source: io::Error,
    },
    /// A packet of another link type was given to a pcap writer (one pcap file has one link type).
    #[error(
        "packet of link type {packet} cannot be written at byte {offset} of a {file} pcap file"
    )]
    LinkTypeMismatch {
        /// Where the record would have gone.
        offset: u64,
        /// The packet's link type.
        packet: super::LinkType,
        /// The file's link type.
        file: super::LinkType,
    },
}

/// A few raw bytes, shown as `0x` and hex digits in error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HexBytes(pub Vec<u8>);

impl fmt::Display for HexBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("0x")?;
        for b in &self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}
