//! The recording format (version 1): how a reassembled session is laid out in JetStream
//! messages. Pure code: bytes in, records out (and back); no sockets, no clocks.
//!
//! A session is one or more messages ("parts") on one subject, in order. Every message starts
//! with a fixed header, then holds whole records:
//!
//! ```text
//! header   "TCPF"  version:u8=1  flags:u8 (bit 0: last part)  session:u64  part:u32
//! record   kind:u8  len:u32  body[len]            (all integers big-endian)
//!   1 OPEN   client:addr  server:addr  ts:u64  syn_seen:u8  host_len:u8  host[host_len]
//!   2 DATA   side:u8 (0 client, 1 server)  ts:u64  flags:u8 (bit 0 new request,
//!            bit 1 server seen)  bytes[rest]
//!   3 FIN    side:u8  ts:u64
//!   4 CLOSE  ts:u64  reason:u8  partial:u8
//! addr     family:u8 (4 or 6)  ip[4 or 16]  port:u16
//! ```
//!
//! Times are capture times in ns since the Unix epoch. A session is complete when its parts
//! 0..=last are all there; the first record of part 0 is OPEN and the last record of the last
//! part is CLOSE. Record kinds this version does not know are skipped (their length says how
//! far), so a later version may add records; a different version byte is refused.
//! The message id (JetStream de-duplication) is `<session as 16 hex digits>-<part>`.
//! This module must never log: the records hold production payloads.
//!
//! Layout: this file holds the format's constants, its types, the session ids and
//! [`merge_data`]; `write.rs` cuts a session into messages ([`SessionWriter`]), `read.rs`
//! decodes one message ([`decode`]). Neither may log.

mod read;
mod write;

pub use read::{decode, fuzz_decode};
pub use write::SessionWriter;

use bytes::Bytes;
use std::net::{IpAddr, SocketAddr};
use thiserror::Error;

/// The first bytes of every message of the format.
pub const MAGIC: [u8; 4] = *b"TCPF";
/// The format version this code writes and reads.
pub const VERSION: u8 = 1;
/// Bytes of the message header.
pub const HEADER_LEN: usize = 18;
/// Bytes of a record header (kind and length).
pub const RECORD_HEADER_LEN: usize = 5;
/// The smallest message payload [`SessionWriter`] accepts (room for the largest fixed record).
pub const MIN_PAYLOAD: usize = 1024;

const OPEN: u8 = 1;
const DATA: u8 = 2;
const FIN: u8 = 3;
const CLOSE: u8 = 4;

/// Who sent a record's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// The client (replayed).
    Client,
    /// The server (production's answers, recorded with `--with-responses`).
    Server,
}

/// Why a recorded session ended (the reassembler's reasons, as numbers on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// Both sides closed.
    Fin,
    /// A reset.
    Reset,
    /// Idle timeout.
    Idle,
    /// The capture ended.
    EndOfInput,
    /// Bytes missing from the capture.
    Hole,
    /// Port reuse.
    Replaced,
    /// A reason this version does not know.
    Other(u8),
}

impl CloseReason {
    fn to_u8(self) -> u8 {
        match self {
            CloseReason::Fin => 0,
            CloseReason::Reset => 1,
            CloseReason::Idle => 2,
            CloseReason::EndOfInput => 3,
            CloseReason::Hole => 4,
            CloseReason::Replaced => 5,
            CloseReason::Other(n) => n,
        }
    }

    fn from_u8(n: u8) -> Self {
        match n {
            0 => CloseReason::Fin,
            1 => CloseReason::Reset,
            2 => CloseReason::Idle,
            3 => CloseReason::EndOfInput,
            4 => CloseReason::Hole,
            5 => CloseReason::Replaced,
            n => CloseReason::Other(n),
        }
    }
}

/// One record of a recorded session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FleetRecord {
    /// The session began.
    Open {
        /// The original client address.
        client: SocketAddr,
        /// The original server address.
        server: SocketAddr,
        /// Capture time of the first segment (ns since the epoch).
        ts: u64,
        /// Whether the client's SYN was captured.
        syn_seen: bool,
        /// The capturing host (at most 255 bytes).
        host: String,
    },
    /// In-order bytes from one side.
    Data {
        /// Sender.
        dir: Dir,
        /// Capture time (ns since the epoch).
        ts: u64,
        /// Client data: these bytes begin a new request.
        new_message: bool,
        /// A server segment of this session had been seen by then.
        server_seen: bool,
        /// The bytes.
        bytes: Bytes,
    },
    /// One side's FIN.
    Fin {
        /// Who closed.
        dir: Dir,
        /// Capture time (ns since the epoch).
        ts: u64,
    },
    /// The session is over.
    Close {
        /// Capture time (ns since the epoch).
        ts: u64,
        /// Why.
        reason: CloseReason,
        /// Bytes were missing from the capture.
        partial: bool,
    },
}

/// One decoded message: a part of a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// The session's id (see [`session_id`]).
    pub session: u64,
    /// This part's index, from 0.
    pub part: u32,
    /// Whether this is the session's last part.
    pub last: bool,
    /// The records, in order.
    pub records: Vec<FleetRecord>,
    /// Records of kinds this version does not know (skipped).
    pub unknown_records: u32,
}

/// Why a message is not a valid part of this format.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FormatError {
    /// It does not start with the format's magic: some other publisher's message.
    #[error("not a tcpclone recording message (no TCPF magic)")]
    Foreign,
    /// A version this code does not read.
    #[error("recording format version {0} is not supported (this tcpcopy reads version 1)")]
    Version(u8),
    /// The message ends inside something.
    #[error("truncated at byte {offset}: {what}")]
    Truncated {
        /// Where.
        offset: usize,
        /// What was being read.
        what: &'static str,
    },
    /// A field holds a value the format does not allow.
    #[error("bad {what} at byte {offset}")]
    Bad {
        /// Where.
        offset: usize,
        /// Which field.
        what: &'static str,
    },
}

/// The id of a recorded session: a hash of the capturing host, the 4-tuple and the open time
/// (the same session recorded twice gets the same id, so JetStream drops the re-send).
pub fn session_id(host: &str, client: SocketAddr, server: SocketAddr, open_ts: u64) -> u64 {
    let mut h = Fnv::new();
    h.feed(host.as_bytes());
    h.feed(&[0xff]);
    feed_addr(&mut h, client);
    feed_addr(&mut h, server);
    h.feed(&open_ts.to_be_bytes());
    h.finish()
}

/// The partition of a session: its subject is `STREAM.p.<partition>`.
pub fn partition(session: u64, partitions: u32) -> u32 {
    // The id is already a hash; a final mix spreads its low bits.
    let mut x = session ^ (session >> 33);
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    (x % u64::from(partitions.max(1))) as u32
}

/// The JetStream message id (`Nats-Msg-Id`) of a part.
pub fn message_id(session: u64, part: u32) -> String {
    format!("{session:016x}-{part}")
}

struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
    fn feed(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

fn feed_addr(h: &mut Fnv, a: SocketAddr) {
    match a.ip() {
        IpAddr::V4(ip) => h.feed(&ip.octets()),
        IpAddr::V6(ip) => h.feed(&ip.octets()),
    }
    h.feed(&a.port().to_be_bytes());
}
/// Joins DATA records that a writer split (same side and time, no new request between), so that
/// two cuts of one session compare equal.
pub fn merge_data(records: Vec<FleetRecord>) -> Vec<FleetRecord> {
    let mut out: Vec<FleetRecord> = Vec::with_capacity(records.len());
    for r in records {
        if let (
            Some(FleetRecord::Data {
                dir: d0,
                ts: t0,
                server_seen: s0,
                bytes: b0,
                ..
            }),
            FleetRecord::Data {
                dir,
                ts,
                new_message: false,
                server_seen,
                bytes,
            },
        ) = (out.last_mut(), &r)
        {
            if d0 == dir && t0 == ts && s0 == server_seen {
                let mut v = b0.to_vec();
                v.extend_from_slice(bytes);
                *b0 = Bytes::from(v);
                continue;
            }
        }
        out.push(r);
    }
    out
}

#[cfg(test)]
mod tests;
