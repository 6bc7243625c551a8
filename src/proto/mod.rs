//! The tcpcopy–intercept protocol: versioned, length-prefixed binary frames.
//!
//! Pure encoder/decoder over byte buffers; the sockets live in the binaries. A decoder never
//! trusts a length prefix beyond [`MAX_FRAME_LEN`] and never panics on hostile input.

use bytes::Bytes;
use std::net::SocketAddr;

/// Protocol version carried in the handshake.
pub const VERSION: u16 = 1;
/// intercept's default listening port (TCPCopy's 36524, kept for users' firewall rules).
pub const DEFAULT_PORT: u16 = 36524;
/// Largest frame either side accepts (header included).
pub const MAX_FRAME_LEN: usize = 1 << 20;

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
