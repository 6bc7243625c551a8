//! The tcpcopy–intercept protocol: versioned, length-prefixed binary frames.
//!
//! Pure encoder/decoder over byte buffers; the sockets live in the binaries. A decoder never
//! trusts a length prefix beyond its maximum frame length and never panics on hostile input.
//!
//! # Wire format (version 1)
//!
//! Every frame is `len: u32 BE` (bytes that follow: type byte + body, ≥ 1), `type: u8`, body.
//! The whole frame (4 + `len`) is at most [`MAX_FRAME_LEN`] bytes. All integers are big-endian.
//!
//! | type | message          | body |
//! |------|------------------|------|
//! | 1    | `Hello`          | `version u16, role u8 (1 tcpcopy, 2 intercept), instance u64` |
//! | 2    | `SessionAdd`     | `client addr, target addr` |
//! | 3    | `SessionRemove`  | `client addr, target addr` |
//! | 4    | `Responses`      | `count u16 (≥ 1)`, then `count` × (`len u16`, IP header + TCP header) |
//! | 5    | `Ping`           | empty |
//! | 6    | `Pong`           | empty |
//!
//! An address is `family u8 (4 or 6), IP (4 or 16 bytes), port u16`; the port is never 0, the
//! IP is neither unspecified nor multicast, and both addresses of a session share a family
//! (IPv6 flow info and scope id are not carried). Each response header is a complete IPv4 or
//! IPv6 header (IPv6 extension headers other than fragments allowed) followed by a complete TCP
//! header with options and no payload; its length is at most [`MAX_HEADER_LEN`].
//!
//! A `Hello` with a version above [`VERSION`] may carry extra trailing bytes (a later version's
//! fields); the receiver sees the version and decides. Everything else must be exact.
//!
//! # The conversation
//!
//! tcpcopy connects (and, with a secret, runs the [`secure`] handshake first), sends `Hello`
//! (role tcpcopy), then `SessionAdd` before it sends a session's SYN (or first segment) to the
//! target and `SessionRemove` when the session ends. intercept answers `Hello` (role
//! intercept) and streams `Responses` batches for the sessions that connection registered.
//! Either side may send `Ping`; the other answers `Pong`. [`client::Channel`] implements the
//! tcpcopy side of this as pure code.

pub mod client;
pub mod secure;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Protocol version carried in the handshake.
pub const VERSION: u16 = 1;
/// intercept's default listening port (TCPCopy's 36524, kept for users' firewall rules).
pub const DEFAULT_PORT: u16 = 36524;
/// Largest frame either side accepts (header included).
pub const MAX_FRAME_LEN: usize = 1 << 20;
/// Largest IP + TCP header carried in a `Responses` entry (IPv6 with extension headers).
pub const MAX_HEADER_LEN: usize = 256;
/// Most entries in one `Responses` frame (the count is a u16).
pub const MAX_BATCH: usize = u16::MAX as usize;
/// Bytes of the length prefix.
pub const LEN_PREFIX: usize = 4;

const TYPE_HELLO: u8 = 1;
const TYPE_SESSION_ADD: u8 = 2;
const TYPE_SESSION_REMOVE: u8 = 3;
const TYPE_RESPONSES: u8 = 4;
const TYPE_PING: u8 = 5;
const TYPE_PONG: u8 = 6;

const HELLO_BODY: usize = 2 + 1 + 8;
const ROLE_TCPCOPY: u8 = 1;
const ROLE_INTERCEPT: u8 = 2;
/// Largest `Hello` body accepted (room for a later version's fields).
const MAX_HELLO_BODY: usize = 256;
/// Largest session body: two IPv6 addresses.
const MAX_SESSION_BODY: usize = 2 * (1 + 16 + 2);

/// Which end of the channel sent a `Hello`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A tcpcopy instance.
    Tcpcopy,
    /// An intercept instance.
    Intercept,
}

/// One protocol message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// First frame in each direction: version and who is speaking.
    Hello {
        /// Protocol version ([`VERSION`]).
        version: u16,
        /// Sender's role.
        role: Role,
        /// Sender's instance id (random per process), for logs and routing.
        instance: u64,
    },
    /// tcpcopy → intercept: route the target's responses for this (client, target) pair to me.
    SessionAdd {
        /// The client address and port as the target sees it (after `-c` / port shift).
        client: SocketAddr,
        /// The target address and port.
        target: SocketAddr,
    },
    /// tcpcopy → intercept: the session ended; stop routing it.
    SessionRemove {
        /// As in `SessionAdd`.
        client: SocketAddr,
        /// As in `SessionAdd`.
        target: SocketAddr,
    },
    /// intercept → tcpcopy: a batch of the target's responses, each its IP header + TCP header
    /// (with options), no payload (the IP length field still tells the payload length).
    Responses {
        /// One entry per response packet.
        headers: Vec<Bytes>,
    },
    /// Either way: liveness probe; the other end answers with `Pong`.
    Ping,
    /// Answer to `Ping`.
    Pong,
}

/// What went wrong in a frame, and where.
///
/// `offset` is the position of the offending byte in the whole stream the [`Decoder`] has
/// been fed (counting from 0 at the first byte of the connection); for encoding errors it is
/// the position inside the message being encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    /// The length prefix exceeds the maximum frame length.
    #[error("frame length {len} exceeds the maximum {max} at byte {offset}")]
    FrameTooLong {
        /// Frame length claimed (prefix included).
        len: u64,
        /// Maximum accepted.
        max: usize,
        /// Offset of the length prefix.
        offset: u64,
    },
    /// The length prefix is 0 (no type byte).
    #[error("empty frame (length 0) at byte {offset}")]
    EmptyFrame {
        /// Offset of the length prefix.
        offset: u64,
    },
    /// The type byte names no message.
    #[error("unknown frame type {ty} at byte {offset}")]
    UnknownType {
        /// The type byte.
        ty: u8,
        /// Offset of the type byte.
        offset: u64,
    },
    /// The body length does not fit the message type.
    #[error("{what}: body length {len} not allowed at byte {offset}")]
    BadLength {
        /// Message type.
        what: &'static str,
        /// Body length found.
        len: usize,
        /// Offset of the length prefix.
        offset: u64,
    },
    /// A field runs past the end of the frame.
    #[error("{what}: truncated at byte {offset}")]
    Truncated {
        /// The field.
        what: &'static str,
        /// Offset where the field starts.
        offset: u64,
    },
    /// Bytes left over after the last field.
    #[error("{what}: {extra} trailing bytes at byte {offset}")]
    Trailing {
        /// Message type.
        what: &'static str,
        /// How many.
        extra: usize,
        /// Offset of the first extra byte.
        offset: u64,
    },
    /// A field holds a value that is not allowed.
    #[error("{what}: invalid value {value} at byte {offset}")]
    Invalid {
        /// The field.
        what: &'static str,
        /// The value found.
        value: u64,
        /// Offset of the field.
        offset: u64,
    },
    /// A `Responses` entry is not a well-formed IP + TCP header.
    #[error("response header {index}: {reason} at byte {offset}")]
    BadHeader {
        /// Index of the entry in its batch.
        index: usize,
        /// What is wrong.
        reason: &'static str,
        /// Offset of the offending byte.
        offset: u64,
    },
    /// A message cannot be encoded (too many or too large entries).
    #[error("cannot encode {what}: {reason}")]
    Unencodable {
        /// Message type.
        what: &'static str,
        /// Why.
        reason: &'static str,
    },
}

impl Message {
    /// Name of the message type, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Message::Hello { .. } => "Hello",
            Message::SessionAdd { .. } => "SessionAdd",
            Message::SessionRemove { .. } => "SessionRemove",
            Message::Responses { .. } => "Responses",
            Message::Ping => "Ping",
            Message::Pong => "Pong",
        }
    }
}

/// Appends one encoded frame for `msg` to `dst`.
///
/// Checks the message as the decoder would (valid addresses, valid headers, sizes), so a frame
/// that was encoded is always decodable; on error nothing is appended.
pub fn encode(msg: &Message, dst: &mut BytesMut) -> Result<(), ProtoError> {
    let start = dst.len();
    match msg {
        Message::Hello {
            version,
            role,
            instance,
        } => {
            dst.reserve(LEN_PREFIX + 1 + HELLO_BODY);
            dst.put_u32((1 + HELLO_BODY) as u32);
            dst.put_u8(TYPE_HELLO);
            dst.put_u16(*version);
            dst.put_u8(match role {
                Role::Tcpcopy => ROLE_TCPCOPY,
                Role::Intercept => ROLE_INTERCEPT,
            });
            dst.put_u64(*instance);
        }
        Message::SessionAdd { client, target } | Message::SessionRemove { client, target } => {
            let what = msg.name();
            check_session(what, client, target)?;
            let ty = if matches!(msg, Message::SessionAdd { .. }) {
                TYPE_SESSION_ADD
            } else {
                TYPE_SESSION_REMOVE
            };
            let body = addr_len(client) + addr_len(target);
            dst.reserve(LEN_PREFIX + 1 + body);
            dst.put_u32((1 + body) as u32);
            dst.put_u8(ty);
            put_addr(dst, client);
            put_addr(dst, target);
        }
        Message::Responses { headers } => {
            if headers.is_empty() {
                return Err(ProtoError::Unencodable {
                    what: "Responses",
                    reason: "empty batch",
                });
            }
            let mut b = ResponsesBuilder::new();
            for h in headers {
                if !b.push(h)? {
                    return Err(ProtoError::Unencodable {
                        what: "Responses",
                        reason: "batch exceeds the maximum frame length or count",
                    });
                }
            }
            b.finish_into(dst);
        }
        Message::Ping | Message::Pong => {
            dst.reserve(LEN_PREFIX + 1);
            dst.put_u32(1);
            dst.put_u8(if matches!(msg, Message::Ping) {
                TYPE_PING
            } else {
                TYPE_PONG
            });
        }
    }
    debug_assert!(dst.len() - start <= MAX_FRAME_LEN);
    Ok(())
}

fn addr_len(a: &SocketAddr) -> usize {
    match a {
        SocketAddr::V4(_) => 1 + 4 + 2,
        SocketAddr::V6(_) => 1 + 16 + 2,
    }
}

fn put_addr(dst: &mut BytesMut, a: &SocketAddr) {
    match a.ip() {
        IpAddr::V4(ip) => {
            dst.put_u8(4);
            dst.put_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            dst.put_u8(6);
            dst.put_slice(&ip.octets());
        }
    }
    dst.put_u16(a.port());
}

fn check_session(
    what: &'static str,
    client: &SocketAddr,
    target: &SocketAddr,
) -> Result<(), ProtoError> {
    for a in [client, target] {
        if a.port() == 0 {
            return Err(ProtoError::Unencodable {
                what,
                reason: "port 0",
            });
        }
        if a.ip().is_unspecified() || a.ip().is_multicast() {
            return Err(ProtoError::Unencodable {
                what,
                reason: "unspecified or multicast address",
            });
        }
    }
    if client.is_ipv4() != target.is_ipv4() {
        return Err(ProtoError::Unencodable {
            what,
            reason: "client and target families differ",
        });
    }
    Ok(())
}

/// Builds a `Responses` frame in place, one header at a time, without a `Vec` of entries.
///
/// intercept's router keeps one builder per tcpcopy connection and copies each captured header
/// straight into it; [`finish`](Self::finish) hands out the finished frame as `Bytes`.
#[derive(Debug)]
pub struct ResponsesBuilder {
    buf: BytesMut,
    count: usize,
    max_frame_len: usize,
}

impl Default for ResponsesBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl ResponsesBuilder {
    /// An empty builder limited to [`MAX_FRAME_LEN`].
    pub fn new() -> Self {
        Self::with_max_frame_len(MAX_FRAME_LEN)
    }

    /// An empty builder whose frames stay within `max` bytes (clamped to 64..=[`MAX_FRAME_LEN`]).
    pub fn with_max_frame_len(max: usize) -> Self {
        let max_frame_len = max.clamp(64 + MAX_HEADER_LEN, MAX_FRAME_LEN);
        ResponsesBuilder {
            buf: BytesMut::new(),
            count: 0,
            max_frame_len,
        }
    }

    /// Number of headers in the batch being built.
    pub fn len(&self) -> usize {
        self.count
    }

    /// True when no header has been pushed since the last finish.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Bytes the finished frame would take now.
    pub fn frame_len(&self) -> usize {
        if self.count == 0 {
            0
        } else {
            self.buf.len()
        }
    }

    /// True when a header of `len` bytes would no longer fit.
    pub fn would_overflow(&self, len: usize) -> bool {
        let cur = if self.count == 0 {
            LEN_PREFIX + 1 + 2
        } else {
            self.buf.len()
        };
        self.count >= MAX_BATCH || cur + 2 + len > self.max_frame_len
    }

    /// Appends one IP + TCP header after checking it. Returns `Ok(false)` (nothing appended)
    /// when the batch is full: finish it and push again.
    pub fn push(&mut self, header: &[u8]) -> Result<bool, ProtoError> {
        check_header(header, self.count, 0)?;
        if self.would_overflow(header.len()) {
            return Ok(false);
        }
        if self.count == 0 {
            self.buf.clear();
            self.buf.reserve(LEN_PREFIX + 1 + 2 + 2 + header.len());
            self.buf.put_u32(0); // patched in finish
            self.buf.put_u8(TYPE_RESPONSES);
            self.buf.put_u16(0); // patched in finish
        }
        self.buf.put_u16(header.len() as u16);
        self.buf.put_slice(header);
        self.count += 1;
        Ok(true)
    }

    fn patch(&mut self) {
        let len = (self.buf.len() - LEN_PREFIX) as u32;
        self.buf[0..4].copy_from_slice(&len.to_be_bytes());
        self.buf[5..7].copy_from_slice(&(self.count as u16).to_be_bytes());
        self.count = 0;
    }

    /// The finished frame (length prefix included), or `None` when empty; the builder starts over.
    pub fn finish(&mut self) -> Option<Bytes> {
        if self.count == 0 {
            return None;
        }
        self.patch();
        Some(self.buf.split().freeze())
    }

    /// Appends the finished frame to `dst` (nothing when empty); the builder starts over.
    pub fn finish_into(&mut self, dst: &mut BytesMut) {
        if self.count == 0 {
            return;
        }
        self.patch();
        dst.extend_from_slice(&self.buf);
        self.buf.clear();
    }
}

/// Checks that `h` is one complete IPv4/IPv6 header followed by one complete TCP header and
/// nothing else, and returns the offset of the TCP header. `base` is added to the offsets in
/// errors; `index` names the entry in them.
pub fn check_header(h: &[u8], index: usize, base: u64) -> Result<usize, ProtoError> {
    let bad = |reason: &'static str, at: usize| ProtoError::BadHeader {
        index,
        reason,
        offset: base + at as u64,
    };
    if h.len() > MAX_HEADER_LEN {
        return Err(bad("longer than the maximum header length", MAX_HEADER_LEN));
    }
    let Some(&first) = h.first() else {
        return Err(bad("empty", 0));
    };
    let tcp_at = match first >> 4 {
        4 => {
            if h.len() < 20 {
                return Err(bad("IPv4 header truncated", h.len()));
            }
            let ihl = usize::from(first & 0x0f) * 4;
            if ihl < 20 {
                return Err(bad("IPv4 header length below 20", 0));
            }
            if h[9] != 6 {
                return Err(bad("IPv4 protocol is not TCP", 9));
            }
            let frag = u16::from_be_bytes([h[6], h[7]]);
            if frag & 0x3fff != 0 {
                return Err(bad("IPv4 fragment", 6));
            }
            let total = usize::from(u16::from_be_bytes([h[2], h[3]]));
            if total < h.len() {
                return Err(bad("IPv4 total length shorter than the headers", 2));
            }
            ihl
        }
        6 => {
            if h.len() < 40 {
                return Err(bad("IPv6 header truncated", h.len()));
            }
            let payload = usize::from(u16::from_be_bytes([h[4], h[5]]));
            if payload + 40 < h.len() {
                return Err(bad("IPv6 payload length shorter than the headers", 4));
            }
            let mut next = h[6];
            let mut at = 40;
            loop {
                match next {
                    6 => break at,
                    // RFC 8200 §4: hop-by-hop, routing, destination options.
                    0 | 43 | 60 => {
                        if at + 8 > h.len() {
                            return Err(bad("IPv6 extension header truncated", at));
                        }
                        next = h[at];
                        at += (usize::from(h[at + 1]) + 1) * 8;
                    }
                    _ => return Err(bad("IPv6 next header is not TCP", at)),
                }
            }
        }
        _ => return Err(bad("IP version is neither 4 nor 6", 0)),
    };
    if tcp_at + 20 > h.len() {
        return Err(bad("TCP header truncated", tcp_at.min(h.len())));
    }
    let doff = usize::from(h[tcp_at + 12] >> 4) * 4;
    if doff < 20 {
        return Err(bad("TCP data offset below 20", tcp_at + 12));
    }
    if tcp_at + doff != h.len() {
        return Err(bad(
            "length differs from IP + TCP header lengths",
            tcp_at + 12,
        ));
    }
    Ok(tcp_at)
}

/// Incremental frame decoder: feed it the bytes received so far, take whole messages out.
///
/// It never allocates beyond its maximum frame length, checks the type byte and the body
/// length allowed for that type as soon as the first 5 bytes arrive (so a hostile length
/// prefix is rejected before any buffering), and after an error it stays failed.
#[derive(Debug, Clone)]
pub struct Decoder {
    max_frame_len: usize,
    consumed: u64,
    failed: Option<ProtoError>,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder {
    /// A decoder that accepts frames up to [`MAX_FRAME_LEN`].
    pub fn new() -> Self {
        Self::with_max_frame_len(MAX_FRAME_LEN)
    }

    /// A decoder that accepts frames up to `max` bytes (at most [`MAX_FRAME_LEN`]).
    /// intercept uses a small limit: it never receives `Responses`.
    pub fn with_max_frame_len(max: usize) -> Self {
        Decoder {
            max_frame_len: max.min(MAX_FRAME_LEN),
            consumed: 0,
            failed: None,
        }
    }

    /// Bytes of the stream consumed so far (whole frames).
    pub fn consumed(&self) -> u64 {
        self.consumed
    }

    /// Takes the next whole message out of `buf`, `Ok(None)` when more bytes are needed.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Message>, ProtoError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        match self.decode_inner(buf) {
            Err(e) => {
                self.failed = Some(e.clone());
                Err(e)
            }
            ok => ok,
        }
    }

    fn decode_inner(&mut self, buf: &mut BytesMut) -> Result<Option<Message>, ProtoError> {
        if buf.len() < LEN_PREFIX {
            return Ok(None);
        }
        let at = self.consumed;
        let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        if len == 0 {
            return Err(ProtoError::EmptyFrame { offset: at });
        }
        let total = LEN_PREFIX as u64 + len as u64;
        if total > self.max_frame_len as u64 {
            return Err(ProtoError::FrameTooLong {
                len: total,
                max: self.max_frame_len,
                offset: at,
            });
        }
        if buf.len() > LEN_PREFIX {
            check_type_len(buf[LEN_PREFIX], len - 1, at)?;
        }
        let total = total as usize;
        if buf.len() < total {
            buf.reserve(total - buf.len());
            return Ok(None);
        }
        let frame = buf.split_to(total).freeze();
        let msg = parse_frame(frame, at)?;
        self.consumed += total as u64;
        Ok(Some(msg))
    }
}

fn check_type_len(ty: u8, body: usize, at: u64) -> Result<(), ProtoError> {
    let (what, ok) = match ty {
        TYPE_HELLO => ("Hello", (HELLO_BODY..=MAX_HELLO_BODY).contains(&body)),
        TYPE_SESSION_ADD => ("SessionAdd", (2 * 7..=MAX_SESSION_BODY).contains(&body)),
        TYPE_SESSION_REMOVE => ("SessionRemove", (2 * 7..=MAX_SESSION_BODY).contains(&body)),
        TYPE_RESPONSES => ("Responses", body >= 2 + 2 + 40),
        TYPE_PING => ("Ping", body == 0),
        TYPE_PONG => ("Pong", body == 0),
        ty => {
            return Err(ProtoError::UnknownType {
                ty,
                offset: at + LEN_PREFIX as u64,
            })
        }
    };
    if ok {
        Ok(())
    } else {
        Err(ProtoError::BadLength {
            what,
            len: body,
            offset: at,
        })
    }
}

/// A cursor over one frame body that reports stream offsets.
struct Body {
    b: Bytes,
    pos: usize,
    base: u64,
    what: &'static str,
}

impl Body {
    fn at(&self) -> u64 {
        self.base + self.pos as u64
    }
    fn take(&mut self, n: usize, field: &'static str) -> Result<Bytes, ProtoError> {
        if self.b.len() - self.pos < n {
            return Err(ProtoError::Truncated {
                what: field,
                offset: self.at(),
            });
        }
        let s = self.b.slice(self.pos..self.pos + n);
        self.pos += n;
        Ok(s)
    }
    fn u8(&mut self, field: &'static str) -> Result<u8, ProtoError> {
        Ok(self.take(1, field)?[0])
    }
    fn u16(&mut self, field: &'static str) -> Result<u16, ProtoError> {
        Ok(self.take(2, field)?.get_u16())
    }
    fn u64(&mut self, field: &'static str) -> Result<u64, ProtoError> {
        Ok(self.take(8, field)?.get_u64())
    }
    fn addr(&mut self, field: &'static str) -> Result<SocketAddr, ProtoError> {
        let fam_at = self.at();
        let ip: IpAddr = match self.u8(field)? {
            4 => {
                let o = self.take(4, field)?;
                Ipv4Addr::new(o[0], o[1], o[2], o[3]).into()
            }
            6 => {
                let o = self.take(16, field)?;
                let mut a = [0u8; 16];
                a.copy_from_slice(&o);
                Ipv6Addr::from(a).into()
            }
            f => {
                return Err(ProtoError::Invalid {
                    what: field,
                    value: f.into(),
                    offset: fam_at,
                })
            }
        };
        if ip.is_unspecified() || ip.is_multicast() {
            return Err(ProtoError::Invalid {
                what: field,
                value: 0,
                offset: fam_at + 1,
            });
        }
        let port_at = self.at();
        let port = self.u16(field)?;
        if port == 0 {
            return Err(ProtoError::Invalid {
                what: field,
                value: 0,
                offset: port_at,
            });
        }
        Ok(SocketAddr::new(ip, port))
    }
    fn end(&self) -> Result<(), ProtoError> {
        let extra = self.b.len() - self.pos;
        if extra != 0 {
            return Err(ProtoError::Trailing {
                what: self.what,
                extra,
                offset: self.at(),
            });
        }
        Ok(())
    }
}

fn parse_frame(frame: Bytes, at: u64) -> Result<Message, ProtoError> {
    let ty = frame[LEN_PREFIX];
    check_type_len(ty, frame.len() - LEN_PREFIX - 1, at)?;
    let base = at + LEN_PREFIX as u64 + 1;
    let mut b = Body {
        b: frame.slice(LEN_PREFIX + 1..),
        pos: 0,
        base,
        what: "",
    };
    let msg = match ty {
        TYPE_HELLO => {
            b.what = "Hello";
            let version = b.u16("Hello version")?;
            let role_at = b.at();
            let role = match b.u8("Hello role")? {
                ROLE_TCPCOPY => Role::Tcpcopy,
                ROLE_INTERCEPT => Role::Intercept,
                r => {
                    return Err(ProtoError::Invalid {
                        what: "Hello role",
                        value: r.into(),
                        offset: role_at,
                    })
                }
            };
            let instance = b.u64("Hello instance")?;
            if version > VERSION {
                b.pos = b.b.len(); // a later version's fields: the receiver decides on the version
            }
            Message::Hello {
                version,
                role,
                instance,
            }
        }
        TYPE_SESSION_ADD | TYPE_SESSION_REMOVE => {
            let add = ty == TYPE_SESSION_ADD;
            b.what = if add { "SessionAdd" } else { "SessionRemove" };
            let client = b.addr("session client address")?;
            let target_at = b.at();
            let target = b.addr("session target address")?;
            if client.is_ipv4() != target.is_ipv4() {
                return Err(ProtoError::Invalid {
                    what: "session target family (differs from client)",
                    value: if target.is_ipv4() { 4 } else { 6 },
                    offset: target_at,
                });
            }
            if add {
                Message::SessionAdd { client, target }
            } else {
                Message::SessionRemove { client, target }
            }
        }
        TYPE_RESPONSES => {
            b.what = "Responses";
            let count_at = b.at();
            let count = usize::from(b.u16("Responses count")?);
            if count == 0 {
                return Err(ProtoError::Invalid {
                    what: "Responses count",
                    value: 0,
                    offset: count_at,
                });
            }
            // Each entry takes at least 2 + 40 bytes: reject an impossible count before allocating.
            if count * 42 > b.b.len() - b.pos {
                return Err(ProtoError::Invalid {
                    what: "Responses count",
                    value: count as u64,
                    offset: count_at,
                });
            }
            let mut headers = Vec::with_capacity(count);
            for index in 0..count {
                let len_at = b.at();
                let len = usize::from(b.u16("Responses entry length")?);
                if len > MAX_HEADER_LEN {
                    return Err(ProtoError::BadHeader {
                        index,
                        reason: "longer than the maximum header length",
                        offset: len_at,
                    });
                }
                let h_at = b.at();
                let h = b.take(len, "Responses entry")?;
                check_header(&h, index, h_at)?;
                headers.push(h);
            }
            Message::Responses { headers }
        }
        TYPE_PING => Message::Ping,
        TYPE_PONG => Message::Pong,
        _ => unreachable!("type checked by check_type_len"),
    };
    b.end()?;
    Ok(msg)
}

#[cfg(test)]
mod tests;
