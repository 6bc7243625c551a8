//! Packet capture files: pcap and pcapng reading (format detected by content), pcap writing,
//! and the packet-source / packet-sink traits that live capture, files and senders share.
//!
//! This module reads and writes through `std::io::BufRead`/`Write` only; it never opens sockets
//! (files only when asked, by [`CaptureReader::open`] and [`PcapWriter::create`]).
//!
//! - [`CaptureReader`]: pcap (both byte orders, µs and ns) and pcapng (sections, interfaces with
//!   their own link types and `if_tsresol`); no allocation per packet. Errors ([`CaptureError`])
//!   name the file, what is wrong and the byte offset, on one line. A file cut mid-record gives
//!   every whole record first; the next call then returns the error, for which
//!   [`CaptureError::is_truncation`] is true and [`CaptureError::offset`] says where the cut
//!   record starts ("file X truncated at byte N"). After an error the reader returns `Ok(None)`.
//! - [`PcapWriter`]: classic pcap, µs or ns; µs timestamps are truncated as libpcap does.
//! - [`PreloadedCapture`]: a whole capture in one buffer plus a 24-byte-per-packet index.

use std::fmt;

/// A link-layer header type (pcap LINKTYPE_*); unknown values still parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LinkType(pub u32);

impl LinkType {
    /// LINKTYPE_NULL (0): BSD loopback, a 4-byte address family in the host's byte order,
    /// then IP (captures taken on macOS's or a BSD's `lo0`).
    pub const NULL: LinkType = LinkType(0);
    /// LINKTYPE_ETHERNET (1).
    pub const ETHERNET: LinkType = LinkType(1);
    /// LINKTYPE_RAW (101): raw IPv4 or IPv6.
    pub const RAW: LinkType = LinkType(101);
    /// LINKTYPE_LOOP (108): OpenBSD loopback, [`LinkType::NULL`] with the family in network
    /// byte order.
    pub const LOOP: LinkType = LinkType(108);
    /// LINKTYPE_LINUX_SLL (113): Linux cooked capture v1 (`tcpdump -i any`, older libpcap).
    pub const LINUX_SLL: LinkType = LinkType(113);
    /// LINKTYPE_IPV4 (228): raw IPv4.
    pub const IPV4: LinkType = LinkType(228);
    /// LINKTYPE_IPV6 (229): raw IPv6.
    pub const IPV6: LinkType = LinkType(229);
    /// LINKTYPE_LINUX_SLL2 (276): Linux cooked capture v2 (`tcpdump -i any`, libpcap ≥ 1.10).
    pub const LINUX_SLL2: LinkType = LinkType(276);

    /// The link type of a libpcap `DLT_*` value (what `pcap_datalink` returns for devices and
    /// files): DLT_RAW, 12 on Linux and 14 on OpenBSD, is [`LinkType::RAW`]; the other values
    /// handled here are the same number in both. A negative value is an unknown link type.
    pub fn from_dlt(dlt: i32) -> LinkType {
        match dlt {
            12 | 14 => LinkType::RAW,
            d => LinkType(u32::try_from(d).unwrap_or(u32::MAX)),
        }
    }
}

impl fmt::Display for LinkType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match *self {
            LinkType::NULL => "NULL",
            LinkType::ETHERNET => "EN10MB",
            LinkType::LOOP => "LOOP",
            LinkType::RAW => "RAW",
            LinkType::LINUX_SLL => "LINUX_SLL",
            LinkType::IPV4 => "IPV4",
            LinkType::IPV6 => "IPV6",
            LinkType::LINUX_SLL2 => "LINUX_SLL2",
            _ => return write!(f, "linktype {}", self.0),
        };
        f.write_str(name)
    }
}

/// Timestamp resolution of a capture file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TsPrecision {
    /// Microseconds (classic pcap magic 0xa1b2c3d4).
    Micro,
    /// Nanoseconds (pcap magic 0xa1b23c4d, or pcapng if_tsresol 9).
    Nano,
}

/// A capture timestamp in nanoseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// Builds a timestamp from seconds and nanoseconds.
    pub const fn from_parts(secs: u64, nanos: u32) -> Self {
        Timestamp(secs * 1_000_000_000 + nanos as u64)
    }
    /// Whole seconds.
    pub const fn secs(self) -> u64 {
        self.0 / 1_000_000_000
    }
    /// Nanoseconds within the second.
    pub const fn subsec_nanos(self) -> u32 {
        (self.0 % 1_000_000_000) as u32
    }
}

/// One captured packet, borrowed from the source's buffer until the next call.
#[derive(Debug, Clone, Copy)]
pub struct Packet<'a> {
    /// When it was captured.
    pub ts: Timestamp,
    /// Length on the wire (may exceed `data.len()` when the capture was snapped).
    pub orig_len: u32,
    /// Link-layer type of `data`.
    pub linktype: LinkType,
    /// The captured bytes, starting at the link-layer header.
    pub data: &'a [u8],
}

/// Anything that yields packets one at a time: capture files, live capture, preloaded stores.
pub trait PacketSource {
    /// The error this source reports.
    type Error: std::error::Error + Send + Sync + 'static;
    /// Next packet, or `Ok(None)` at the end of the source (end of file, or stop).
    fn next_packet(&mut self) -> Result<Option<Packet<'_>>, Self::Error>;
}

/// What a sink did with one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendOutcome {
    /// Accepted (sent, queued in a ring, or written).
    Sent,
    /// Refused for a reason that is counted and reported (e.g. larger than the MTU).
    Failed(FailReason),
}

/// Why a sink refused a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailReason {
    /// Frame longer than the interface MTU allows.
    TooLarge,
    /// The kernel refused the frame.
    KernelRefused,
}

/// Anything that takes packets: interfaces, raw sockets, pcap writers.
pub trait PacketSink {
    /// The error this sink reports for failures that stop the run (not per-packet refusals).
    type Error: std::error::Error + Send + Sync + 'static;
    /// Takes one packet.
    fn send(&mut self, packet: &Packet<'_>) -> Result<SendOutcome, Self::Error>;
    /// Pushes out anything batched.
    fn flush(&mut self) -> Result<(), Self::Error>;
}

pub mod bpf;
mod error;
mod preload;
mod reader;
pub mod tpacket;
mod writer;

pub use error::{CaptureError, CaptureErrorKind, HexBytes};
pub use preload::{PreloadError, PreloadedCapture};
pub use reader::{caplen_limit, CaptureFormat, CaptureReader, MAX_CAPLEN};
pub use writer::{PcapWriter, DEFAULT_SNAPLEN};

#[cfg(test)]
mod tests {
    use super::LinkType;

    #[test]
    fn link_type_from_dlt() {
        assert_eq!(LinkType::from_dlt(12), LinkType::RAW);
        assert_eq!(LinkType::from_dlt(14), LinkType::RAW);
        assert_eq!(LinkType::from_dlt(1), LinkType::ETHERNET);
        assert_eq!(LinkType::from_dlt(276), LinkType::LINUX_SLL2);
        assert_eq!(LinkType::from_dlt(-1), LinkType(u32::MAX));
    }
}
