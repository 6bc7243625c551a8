//! The tcpcopy–intercept protocol: versioned, length-prefixed binary frames.
//!
//! Pure encoder/decoder over byte buffers; the sockets live in the binaries. A decoder never
//! trusts a length prefix beyond its maximum frame length and never panics on hostile input.
//!
//! # Wire format (version 2; version 1 is version 2 without types 7 and 8)
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
//! | 7    | `Options`        | `response_prefix u16` (version 2) |
//! | 8    | `PrefixedResponses` | `count u16 (≥ 1)`, then `count` × (`hlen u16`, `plen u16`, header, `plen` payload bytes) (version 2) |
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
//! # Response prefixes (version 2)
//!
//! A `PrefixedResponses` entry is a `Responses` entry followed by the first `plen` bytes of that
//! segment's payload (at most the payload length the IP header gives, at most the length the
//! two ends agreed with `Options`, at most [`MAX_PREFIX`]): enough for the report to read an
//! HTTP status line or a RESP reply's type and error prefix. An entry whose prefix is longer
//! than agreed is a protocol error ([`ProtoError::PrefixTooLong`]): the connection is dropped,
//! as for any malformed frame.
//!
//! # The conversation
//!
//! tcpcopy connects (and, with a secret, runs the [`secure`] handshake first), sends `Hello`
//! (role tcpcopy), then `SessionAdd` before it sends a session's SYN (or first segment) to the
//! target and `SessionRemove` when the session ends. intercept answers `Hello` (role
//! intercept) and streams `Responses` batches for the sessions that connection registered.
//! Either side may send `Ping`; the other answers `Pong`. [`client::Channel`] implements the
//! tcpcopy side of this as pure code.
//!
//! Version negotiation: each end answers with the lower of the two versions (intercept answers a
//! version-1 `Hello` with a version-1 `Hello`, so tcpcopy builds from before version 2 keep
//! working). tcpcopy sends a version-2 `Hello` only when it wants response prefixes, followed by
//! `Options { response_prefix: N }` (the most bytes it wants); intercept answers with its own
//! `Options` giving what it grants (at most N, at most its `--response-prefix`, 0: none), and from
//! then on sends `PrefixedResponses` when the grant is above 0. An intercept from before version
//! 2 closes the connection on a version-2 `Hello`; [`client::Channel`] then falls back to
//! version 1 (headers only) on the next connection.
//!
//! # Layout
//!
//! This file holds the message types, the errors and the wire constants; `encode.rs` writes
//! frames ([`encode`], [`ResponsesBuilder`]), `decode.rs` reads them ([`FrameDecoder`]), and
//! `check.rs` holds the validity rules both sides apply (addresses, response headers), so that
//! a frame that encodes always decodes.

mod check;
pub mod client;
mod decode;
mod encode;
pub mod secure;

pub use check::check_header;
pub use check::{split_response, CheckedResponse};
pub use decode::FrameDecoder;
pub use encode::{encode, ResponsesBuilder};

use bytes::Bytes;
use std::net::SocketAddr;

/// Highest protocol version spoken (2: `Options` and `PrefixedResponses`).
pub const VERSION: u16 = 2;
/// Lowest protocol version still accepted from a peer (headers only).
pub const MIN_VERSION: u16 = 1;
/// The version that brought response prefixes.
pub const VERSION_PREFIX: u16 = 2;
/// Most payload bytes a `PrefixedResponses` entry may carry (an HTTP status line, a RESP
/// error prefix).
pub const MAX_PREFIX: usize = 256;
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

pub(super) const TYPE_HELLO: u8 = 1;
pub(super) const TYPE_SESSION_ADD: u8 = 2;
pub(super) const TYPE_SESSION_REMOVE: u8 = 3;
pub(super) const TYPE_RESPONSES: u8 = 4;
pub(super) const TYPE_PING: u8 = 5;
pub(super) const TYPE_PONG: u8 = 6;
pub(super) const TYPE_OPTIONS: u8 = 7;
pub(super) const TYPE_PREFIXED: u8 = 8;

pub(super) const HELLO_BODY: usize = 2 + 1 + 8;
pub(super) const OPTIONS_BODY: usize = 2;
pub(super) const ROLE_TCPCOPY: u8 = 1;
pub(super) const ROLE_INTERCEPT: u8 = 2;
/// Largest `Hello` body accepted (room for a later version's fields).
pub(super) const MAX_HELLO_BODY: usize = 256;
/// Largest session body: two IPv6 addresses.
pub(super) const MAX_SESSION_BODY: usize = 2 * (1 + 16 + 2);

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
    /// Version 2, both ways after `Hello`: tcpcopy asks for up to `response_prefix` payload
    /// bytes per response, intercept answers with what it grants (0: none).
    Options {
        /// Payload bytes per response entry, at most [`MAX_PREFIX`].
        response_prefix: u16,
    },
    /// Version 2, intercept → tcpcopy once a prefix was granted: `Responses` entries each with
    /// the first bytes of the segment's payload.
    PrefixedResponses {
        /// One entry per response packet.
        entries: Vec<PrefixedResponse>,
    },
}

/// One entry of `PrefixedResponses`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrefixedResponse {
    /// IP header + TCP header, as in `Responses`.
    pub header: Bytes,
    /// The first bytes of the segment's payload (empty for a segment without payload).
    pub prefix: Bytes,
}

/// What went wrong in a frame, and where.
///
/// `offset` is the position of the offending byte in the whole stream the [`FrameDecoder`] has
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
    /// A `PrefixedResponses` entry carries more payload than agreed, or than its segment has.
    #[error("response {index}: prefix of {len} bytes exceeds the {max} allowed at byte {offset}")]
    PrefixTooLong {
        /// Index of the entry in its batch.
        index: usize,
        /// Prefix length found.
        len: usize,
        /// Most allowed (the agreed length, or the segment's payload length if shorter).
        max: usize,
        /// Offset of the prefix length.
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
            Message::Options { .. } => "Options",
            Message::PrefixedResponses { .. } => "PrefixedResponses",
        }
    }
}

#[cfg(test)]
mod tests;
