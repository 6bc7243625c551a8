//! The session engine: sans-IO TCP session cloning.
//!
//! Captured client segments and intercept's reports of the target's responses come in with the
//! time as an argument; segments to send to the target come out of `poll_transmit`. No sockets,
//! no clocks, no files here (STYLE.md rules 1–2).

use std::net::IpAddr;
use std::time::Instant;

/// Configuration of the engine, built by the CLI layer from validated flags.
#[derive(Debug, Clone, Default)]
pub struct EngineConfig {}

/// A packet ready for the raw socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit {
    /// Bytes written into the caller's buffer (a whole IPv4/IPv6 packet, checksums complete).
    pub len: usize,
    /// Destination address (for `sendto` on the raw socket).
    pub dst: IpAddr,
}

/// Things the glue must act on besides sending packets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineEvent {
    /// Register this session with intercept (`proto::Message::SessionAdd`).
    SessionAdded {
        /// Client address as the target sees it.
        client: std::net::SocketAddr,
        /// Target address.
        target: std::net::SocketAddr,
    },
    /// Unregister it (`proto::Message::SessionRemove`).
    SessionRemoved {
        /// Client address as the target sees it.
        client: std::net::SocketAddr,
        /// Target address.
        target: std::net::SocketAddr,
    },
}

/// The engine: all cloned sessions of one tcpcopy worker.
#[derive(Debug, Default)]
pub struct Engine {
    _cfg: EngineConfig,
}

impl Engine {
    /// A new engine.
    pub fn new(cfg: EngineConfig) -> Self {
        Engine { _cfg: cfg }
    }

    /// A captured client→service IP packet (IPv4 or IPv6 header first; may be a GSO/GRO
    /// super-segment with an unfinished checksum).
    pub fn handle_captured(&mut self, _now: Instant, _ip_packet: &[u8]) {}

    /// The IP+TCP headers of one target response, as intercept reported them.
    pub fn handle_response(&mut self, _now: Instant, _ip_tcp_headers: &[u8]) {}

    /// Runs timers due at `now` (retransmission, request release, session timeouts).
    pub fn handle_timeout(&mut self, _now: Instant) {}

    /// When `handle_timeout` should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        None
    }

    /// Writes the next packet to send into `buf` (at least 65,535 bytes).
    pub fn poll_transmit(&mut self, _now: Instant, _buf: &mut [u8]) -> Option<Transmit> {
        None
    }

    /// Next event for the glue.
    pub fn poll_event(&mut self) -> Option<EngineEvent> {
        None
    }
}
