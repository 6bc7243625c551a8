//! Writing frames: [`encode`] for any message, [`ResponsesBuilder`] for intercept's `Responses`
//! batches built one header at a time.
//!
//! Every frame written passes the checks of `check.rs` first; this module must never write a
//! frame the decoder would refuse, nor touch a socket.

use bytes::{BufMut, Bytes, BytesMut};
use std::net::{IpAddr, SocketAddr};

use super::check::{check_header, check_prefix, check_session, CheckedResponse};
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
            for (i, h) in headers.iter().enumerate() {
                // Exact here: a message's header never carries payload bytes.
                check_header(h, i, 0)?;
                if !b.push(h)? {
                    return Err(ProtoError::Unencodable {
                        what: "Responses",
                        reason: "batch exceeds the maximum frame length or count",
                    });
                }
            }
            b.finish_into(dst);
        }
        Message::Options { response_prefix } => {
            if usize::from(*response_prefix) > MAX_PREFIX {
                return Err(ProtoError::Unencodable {
                    what: "Options",
                    reason: "response prefix above the maximum",
                });
            }
            dst.reserve(LEN_PREFIX + 1 + OPTIONS_BODY);
            dst.put_u32((1 + OPTIONS_BODY) as u32);
            dst.put_u8(TYPE_OPTIONS);
            dst.put_u16(*response_prefix);
        }
        Message::PrefixedResponses { entries } => {
            if entries.is_empty() {
                return Err(ProtoError::Unencodable {
                    what: "PrefixedResponses",
                    reason: "empty batch",
                });
            }
            let mut b = ResponsesBuilder::with_prefix(MAX_FRAME_LEN, MAX_PREFIX);
            for (i, e) in entries.iter().enumerate() {
                check_header(&e.header, i, 0)?;
                check_prefix(&e.header, e.prefix.len(), MAX_PREFIX, i, 0)?;
                if !b.push_parts(&e.header, &e.prefix) {
                    return Err(ProtoError::Unencodable {
                        what: "PrefixedResponses",
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
/// Builds a `Responses` frame (or, with a prefix length, a `PrefixedResponses` frame) in
/// place, one response at a time, without a `Vec` of entries.
///
/// intercept's router keeps one builder per tcpcopy connection and copies each captured
/// response straight into it; [`finish`](Self::finish) hands out the finished frame as `Bytes`.
#[derive(Debug)]
pub struct ResponsesBuilder {
    buf: BytesMut,
    count: usize,
    max_frame_len: usize,
    /// Payload bytes kept per entry; `None`: a version-1 `Responses` frame (headers only).
    prefix: Option<usize>,
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
        let max_frame_len = max.clamp(64 + MAX_HEADER_LEN + MAX_PREFIX, MAX_FRAME_LEN);
        ResponsesBuilder {
            buf: BytesMut::new(),
            count: 0,
            max_frame_len,
            prefix: None,
        }
    }

    /// A builder of `PrefixedResponses` frames keeping up to `prefix` payload bytes of each
    /// response (clamped to [`MAX_PREFIX`]), frames within `max` bytes as in
    /// [`with_max_frame_len`](Self::with_max_frame_len).
    pub fn with_prefix(max: usize, prefix: usize) -> Self {
        let mut b = Self::with_max_frame_len(max);
        b.prefix = Some(prefix.min(MAX_PREFIX));
        b
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

    /// True when an entry of `len` bytes (header and prefix) would no longer fit.
    pub fn would_overflow(&self, len: usize) -> bool {
        let cur = if self.count == 0 {
            LEN_PREFIX + 1 + 2
        } else {
            self.buf.len()
        };
        let lens = if self.prefix.is_some() { 4 } else { 2 };
        self.count >= MAX_BATCH || cur + lens + len > self.max_frame_len
    }

    /// Appends one captured response: an IP + TCP header, optionally followed by the first
    /// bytes of its payload (as a capture with a longer snap length holds it), checked. A
    /// `Responses` builder keeps the header only, a `PrefixedResponses` one the header and up
    /// to its prefix length of payload. Returns `Ok(false)` (nothing appended) when the batch
    /// is full: finish it and push again.
    pub fn push(&mut self, response: &[u8]) -> Result<bool, ProtoError> {
        let checked = CheckedResponse::new(response).map_err(|e| match e {
            ProtoError::BadHeader { reason, offset, .. } => ProtoError::BadHeader {
                index: self.count,
                reason,
                offset,
            },
            e => e,
        })?;
        Ok(self.push_checked(&checked))
    }

    /// [`ResponsesBuilder::push`] of a response already checked: `false` (nothing appended)
    /// when the batch is full.
    pub fn push_checked(&mut self, response: &CheckedResponse<'_>) -> bool {
        let payload = response.payload();
        let keep = self.prefix.map_or(0, |p| p.min(payload.len()));
        self.push_parts(response.header(), &payload[..keep])
    }

    /// Appends a checked header and its prefix (empty for a `Responses` builder); false when
    /// the batch is full.
    fn push_parts(&mut self, header: &[u8], prefix: &[u8]) -> bool {
        if self.would_overflow(header.len() + prefix.len()) {
            return false;
        }
        if self.count == 0 {
            self.buf.clear();
            self.buf
                .reserve(LEN_PREFIX + 1 + 2 + 4 + header.len() + prefix.len());
            self.buf.put_u32(0); // patched in finish
            self.buf.put_u8(if self.prefix.is_some() {
                TYPE_PREFIXED
            } else {
                TYPE_RESPONSES
            });
            self.buf.put_u16(0); // patched in finish
        }
        self.buf.put_u16(header.len() as u16);
        if self.prefix.is_some() {
            self.buf.put_u16(prefix.len() as u16);
        }
        self.buf.put_slice(header);
        self.buf.put_slice(prefix);
        self.count += 1;
        true
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
