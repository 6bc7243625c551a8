//! Writing frames: [`encode`] for any message, [`ResponsesBuilder`] for intercept's `Responses`
//! batches built one header at a time.
//!
//! Every frame written passes the checks of `check.rs` first; this module must never write a
//! frame the decoder would refuse, nor touch a socket.

use bytes::{BufMut, Bytes, BytesMut};
use std::net::{IpAddr, SocketAddr};

use super::check::{check_header, check_session};
use super::*;

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
