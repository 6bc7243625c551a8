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

use bytes::Bytes;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
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
pub enum Record {
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
    pub records: Vec<Record>,
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

fn put_addr(out: &mut Vec<u8>, a: SocketAddr) {
    match a.ip() {
        IpAddr::V4(ip) => {
            out.push(4);
            out.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            out.push(6);
            out.extend_from_slice(&ip.octets());
        }
    }
    out.extend_from_slice(&a.port().to_be_bytes());
}

fn dir_u8(d: Dir) -> u8 {
    match d {
        Dir::Client => 0,
        Dir::Server => 1,
    }
}

/// Cuts one session into messages of at most `max_payload` bytes: records go in whole while
/// they fit; DATA larger than the room left is split into several DATA records (only the first
/// keeps "new request"). Feed it in session order, then [`SessionWriter::finish`].
#[derive(Debug)]
pub struct SessionWriter {
    session: u64,
    max_payload: usize,
    cur: Vec<u8>,
    done: Vec<Vec<u8>>,
    bytes: usize,
}

impl SessionWriter {
    /// A writer for session `session`; `max_payload` is the broker's limit (at least
    /// [`MIN_PAYLOAD`] is used).
    pub fn new(session: u64, max_payload: usize) -> Self {
        let mut w = SessionWriter {
            session,
            max_payload: max_payload.max(MIN_PAYLOAD),
            cur: Vec::new(),
            done: Vec::new(),
            bytes: 0,
        };
        w.start_part();
        w
    }

    /// Bytes encoded so far (all parts).
    pub fn encoded_len(&self) -> usize {
        self.bytes + self.cur.len()
    }

    fn start_part(&mut self) {
        self.cur.clear();
        self.cur.extend_from_slice(&MAGIC);
        self.cur.push(VERSION);
        self.cur.push(0);
        self.cur.extend_from_slice(&self.session.to_be_bytes());
        self.cur
            .extend_from_slice(&(self.done.len() as u32).to_be_bytes());
    }

    fn room(&self) -> usize {
        self.max_payload.saturating_sub(self.cur.len())
    }

    fn seal(&mut self) {
        let part = std::mem::take(&mut self.cur);
        self.bytes += part.len();
        self.done.push(part);
        self.start_part();
    }

    fn put(&mut self, kind: u8, body: &[u8]) {
        if RECORD_HEADER_LEN + body.len() > self.room() {
            self.seal();
        }
        self.cur.push(kind);
        self.cur
            .extend_from_slice(&(body.len() as u32).to_be_bytes());
        self.cur.extend_from_slice(body);
    }

    /// Adds a record.
    pub fn push(&mut self, rec: &Record) {
        let mut body = Vec::with_capacity(48);
        match rec {
            Record::Open {
                client,
                server,
                ts,
                syn_seen,
                host,
            } => {
                put_addr(&mut body, *client);
                put_addr(&mut body, *server);
                body.extend_from_slice(&ts.to_be_bytes());
                body.push(u8::from(*syn_seen));
                // Cut at a character boundary within 255 bytes.
                let mut n = host.len().min(255);
                while !host.is_char_boundary(n) {
                    n -= 1;
                }
                body.push(n as u8);
                body.extend_from_slice(&host.as_bytes()[..n]);
                self.put(OPEN, &body);
            }
            Record::Data {
                dir,
                ts,
                new_message,
                server_seen,
                bytes,
            } => {
                const FIXED: usize = 10;
                let mut rest = &bytes[..];
                let mut first = true;
                loop {
                    // Start a new part rather than write a DATA record with a tiny slice.
                    if self.room() < RECORD_HEADER_LEN + FIXED + rest.len().min(64) {
                        self.seal();
                    }
                    let take = rest.len().min(self.room() - RECORD_HEADER_LEN - FIXED);
                    body.clear();
                    body.push(dir_u8(*dir));
                    body.extend_from_slice(&ts.to_be_bytes());
                    body.push(u8::from(*new_message && first) | (u8::from(*server_seen) << 1));
                    body.extend_from_slice(&rest[..take]);
                    self.put(DATA, &body);
                    rest = &rest[take..];
                    first = false;
                    if rest.is_empty() {
                        break;
                    }
                }
            }
            Record::Fin { dir, ts } => {
                body.push(dir_u8(*dir));
                body.extend_from_slice(&ts.to_be_bytes());
                self.put(FIN, &body);
            }
            Record::Close {
                ts,
                reason,
                partial,
            } => {
                body.extend_from_slice(&ts.to_be_bytes());
                body.push(reason.to_u8());
                body.push(u8::from(*partial));
                self.put(CLOSE, &body);
            }
        }
    }

    /// The session's messages, in order; the last one is flagged last.
    pub fn finish(mut self) -> Vec<Vec<u8>> {
        if self.cur.len() > HEADER_LEN || self.done.is_empty() {
            self.cur[5] |= 1;
            let part = std::mem::take(&mut self.cur);
            self.done.push(part);
        } else if let Some(last) = self.done.last_mut() {
            last[5] |= 1;
        }
        self.done
    }
}

struct Cursor<'a> {
    buf: &'a [u8],
    off: usize,
    base: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], FormatError> {
        if self.buf.len() - self.off < n {
            return Err(FormatError::Truncated {
                offset: self.base + self.off,
                what,
            });
        }
        let s = &self.buf[self.off..self.off + n];
        self.off += n;
        Ok(s)
    }
    fn u8(&mut self, what: &'static str) -> Result<u8, FormatError> {
        Ok(self.take(1, what)?[0])
    }
    fn u16(&mut self, what: &'static str) -> Result<u16, FormatError> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, FormatError> {
        let b = self.take(4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self, what: &'static str) -> Result<u64, FormatError> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }
    fn bad(&self, what: &'static str) -> FormatError {
        FormatError::Bad {
            offset: self.base + self.off,
            what,
        }
    }
    fn flag(&mut self, what: &'static str) -> Result<bool, FormatError> {
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(self.bad(what)),
        }
    }
    fn dir(&mut self) -> Result<Dir, FormatError> {
        match self.u8("side")? {
            0 => Ok(Dir::Client),
            1 => Ok(Dir::Server),
            _ => Err(self.bad("side")),
        }
    }
    fn addr(&mut self) -> Result<SocketAddr, FormatError> {
        let ip = match self.u8("address family")? {
            4 => {
                let b = self.take(4, "IPv4 address")?;
                IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
            }
            6 => {
                let mut a = [0u8; 16];
                a.copy_from_slice(self.take(16, "IPv6 address")?);
                IpAddr::V6(Ipv6Addr::from(a))
            }
            _ => return Err(self.bad("address family")),
        };
        Ok(SocketAddr::new(ip, self.u16("port")?))
    }
}

/// Decodes one message. Payload bytes are copied out of `msg` only as [`Bytes`] slices of it.
pub fn decode(msg: &Bytes) -> Result<Part, FormatError> {
    if msg.len() < MAGIC.len() || msg[..4] != MAGIC {
        return Err(FormatError::Foreign);
    }
    let mut c = Cursor {
        buf: msg,
        off: 4,
        base: 0,
    };
    let version = c.u8("version")?;
    if version != VERSION {
        return Err(FormatError::Version(version));
    }
    let flags = c.u8("flags")?;
    if flags & !1 != 0 {
        return Err(FormatError::Bad {
            offset: 5,
            what: "message flags",
        });
    }
    let session = c.u64("session id")?;
    let part = c.u32("part")?;
    let mut records = Vec::new();
    let mut unknown_records = 0;
    while c.off < msg.len() {
        let kind = c.u8("record kind")?;
        let len = c.u32("record length")? as usize;
        let start = c.off;
        let body = c.take(len, "record body")?;
        let mut r = Cursor {
            buf: body,
            off: 0,
            base: start,
        };
        let rec = match kind {
            OPEN => {
                let client = r.addr()?;
                let server = r.addr()?;
                let ts = r.u64("time")?;
                let syn_seen = r.flag("syn flag")?;
                let n = r.u8("host length")? as usize;
                let host = std::str::from_utf8(r.take(n, "host")?)
                    .map_err(|_| r.bad("host (not UTF-8)"))?
                    .to_string();
                Record::Open {
                    client,
                    server,
                    ts,
                    syn_seen,
                    host,
                }
            }
            DATA => {
                let dir = r.dir()?;
                let ts = r.u64("time")?;
                let f = r.u8("data flags")?;
                if f & !3 != 0 {
                    return Err(r.bad("data flags"));
                }
                let bytes = msg.slice(start + r.off..start + len);
                r.off = len;
                Record::Data {
                    dir,
                    ts,
                    new_message: f & 1 != 0,
                    server_seen: f & 2 != 0,
                    bytes,
                }
            }
            FIN => Record::Fin {
                dir: r.dir()?,
                ts: r.u64("time")?,
            },
            CLOSE => Record::Close {
                ts: r.u64("time")?,
                reason: CloseReason::from_u8(r.u8("close reason")?),
                partial: r.flag("partial flag")?,
            },
            _ => {
                unknown_records += 1;
                continue;
            }
        };
        if r.off != len {
            return Err(r.bad("record length (bytes left over)"));
        }
        records.push(rec);
    }
    Ok(Part {
        session,
        part,
        last: flags & 1 != 0,
        records,
        unknown_records,
    })
}

/// The fuzz target's body (`fuzz/fuzz_targets/fleet_decoder.rs`): decoding never panics, and
/// what decodes re-encodes (through [`SessionWriter`]) to records that decode the same.
pub fn fuzz_decode(data: &[u8]) {
    let msg = Bytes::copy_from_slice(data);
    let Ok(part) = decode(&msg) else {
        return;
    };
    let mut w = SessionWriter::new(part.session, 1 << 20);
    for r in &part.records {
        w.push(r);
    }
    let again: Vec<Record> = w
        .finish()
        .into_iter()
        .flat_map(|m| {
            decode(&Bytes::from(m))
                .map(|p| p.records)
                .unwrap_or_default()
        })
        .collect();
    assert_eq!(merge_data(again), merge_data(part.records));
}

/// Joins DATA records that a writer split (same side and time, no new request between), so that
/// two cuts of one session compare equal.
pub fn merge_data(records: Vec<Record>) -> Vec<Record> {
    let mut out: Vec<Record> = Vec::with_capacity(records.len());
    for r in records {
        if let (
            Some(Record::Data {
                dir: d0,
                ts: t0,
                server_seen: s0,
                bytes: b0,
                ..
            }),
            Record::Data {
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
