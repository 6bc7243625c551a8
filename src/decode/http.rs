//! HTTP/1.0 and HTTP/1.1 (RFC 9112): requests and responses of a keep-alive, possibly pipelined
//! connection.
//!
//! Start lines and headers are parsed by `httparse` (no hand-written header parser here); this
//! file adds the message framing of RFC 9112 section 6: bodies by `Content-Length`, the chunked
//! transfer coding (section 7.1, parsed incrementally, trailers skipped), responses that end at
//! close, and responses without a body (to `HEAD`, 1xx, 204, 304). The response decoder learns
//! the request methods through [`Decoder::note_request`], in order. After `101 Switching
//! Protocols` or a 2xx to `CONNECT` the rest of the stream is not HTTP and passes through as
//! [`Summary::Data`].
//!
//! Requests are keyed by method and path template: ids in the path are folded into `{id}` and the
//! query string is dropped ([`path_template`]).

use std::collections::VecDeque;

mod head;
mod template;

pub use head::{HeaderSpan, HttpHead};
pub use template::path_template;

use super::{
    DecodeError, DecodedMessage, Decoder, Detail, Direction, Limits, Protocol, ResponseClass,
    Summary,
};

/// Most headers in one message; more makes the stream opaque.
const MAX_HEADERS: usize = 96;

/// The status class label of `status` (RFC 9110 section 15): `1xx` to `5xx`, or `other`.
pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        500..=599 => "5xx",
        _ => "other",
    }
}

/// What a response needs to know about its request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReqKind {
    Head,
    Connect,
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Waiting for a chunk-size line.
    Size,
    /// Inside chunk data.
    Data(u64),
    /// The CRLF after chunk data.
    DataEnd,
    /// Trailer fields up to the empty line.
    Trailers,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Head,
    Length(u64),
    Chunked(Chunk),
    UntilClose,
    /// Not HTTP any more (after an upgrade or a CONNECT tunnel).
    Tunnel,
}

/// The incremental HTTP/1.x decoder of one direction.
#[derive(Debug)]
pub struct HttpDecoder {
    dir: Direction,
    limits: Limits,
    /// Bytes fed; `buf[start..]` are not decoded yet; `buf[0]` is at stream offset `buf_offset`.
    buf: Vec<u8>,
    start: usize,
    buf_offset: u64,
    state: State,
    finished: bool,
    opaque: bool,
    /// The message being decoded.
    msg: Current,
    /// Methods of requests whose responses have not been decoded yet (response side).
    pending: VecDeque<ReqKind>,
}

/// The message being assembled: reusable buffers, cleared per message.
#[derive(Debug, Default)]
struct Current {
    offset: u64,
    head: Vec<u8>,
    spans: Vec<HeaderSpan>,
    method: (usize, usize),
    target: (usize, usize),
    reason: (usize, usize),
    status: u16,
    version: u8,
    endpoint: String,
    body: Vec<u8>,
    body_len: u64,
    /// The message is data passed through after a tunnel started.
    tunnel: bool,
}

impl HttpDecoder {
    /// A decoder of requests or responses.
    pub fn new(dir: Direction, limits: Limits) -> HttpDecoder {
        HttpDecoder {
            dir,
            limits,
            buf: Vec::new(),
            start: 0,
            buf_offset: 0,
            state: State::Head,
            finished: false,
            opaque: false,
            msg: Current::default(),
            pending: VecDeque::new(),
        }
    }

    fn offset_now(&self) -> u64 {
        self.buf_offset + self.start as u64
    }

    fn malformed(&self, what: &'static str) -> DecodeError {
        malformed(self.msg.offset, what)
    }

    fn too_large(&self) -> DecodeError {
        too_large(self.msg.offset, self.limits.max_buffered)
    }

    fn truncated(&self) -> DecodeError {
        DecodeError::Truncated {
            protocol: Protocol::Http,
            offset: self.msg.offset,
        }
    }

    /// Moves up to `max` undecoded bytes into the body, keeping at most `max_body` of them.
    fn take_body(&mut self, max: u64) -> u64 {
        let avail = self.buf.len() - self.start;
        let n = (avail as u64).min(max) as usize;
        let keep = self
            .limits
            .max_body
            .saturating_sub(self.msg.body.len())
            .min(n);
        self.msg
            .body
            .extend_from_slice(&self.buf[self.start..self.start + keep]);
        self.msg.body_len += n as u64;
        self.start += n;
        n as u64
    }

    /// Advances the state machine; `Ok(true)` when a whole message is ready in `self.msg`.
    fn step(&mut self) -> Result<bool, DecodeError> {
        loop {
            let avail = self.buf.len() - self.start;
            match self.state {
                State::Head => {
                    if avail == 0 {
                        return Ok(false);
                    }
                    self.msg.offset = self.offset_now();
                    match self.parse_head()? {
                        true => {
                            if matches!(self.state, State::Head | State::Tunnel) {
                                // No body: the head is the whole message.
                                return Ok(true);
                            }
                        }
                        false => {
                            if avail > self.limits.max_buffered {
                                return Err(self.too_large());
                            }
                            if self.finished {
                                return Err(self.truncated());
                            }
                            return Ok(false);
                        }
                    }
                }
                State::Length(rem) => {
                    let rem = rem - self.take_body(rem);
                    self.state = State::Length(rem);
                    if rem == 0 {
                        self.state = State::Head;
                        return Ok(true);
                    }
                    if self.finished {
                        return Err(self.truncated());
                    }
                    return Ok(false);
                }
                State::UntilClose => {
                    self.take_body(u64::MAX);
                    if self.finished {
                        self.state = State::Head;
                        return Ok(true);
                    }
                    return Ok(false);
                }
                State::Tunnel => {
                    if avail == 0 {
                        return Ok(false);
                    }
                    self.msg.offset = self.offset_now();
                    self.msg.tunnel = true;
                    self.msg.body.clear();
                    self.msg.body_len = 0;
                    self.take_body(u64::MAX);
                    return Ok(true);
                }
                State::Chunked(c) => {
                    if !self.step_chunk(c)? {
                        if self.finished {
                            return Err(self.truncated());
                        }
                        return Ok(false);
                    }
                    if self.state == State::Head {
                        return Ok(true);
                    }
                }
            }
        }
    }

    /// One step of the chunked coding (RFC 9112 section 7.1); `Ok(false)` when it needs bytes.
    fn step_chunk(&mut self, c: Chunk) -> Result<bool, DecodeError> {
        let avail = &self.buf[self.start..];
        match c {
            Chunk::Size => match httparse::parse_chunk_size(avail) {
                Ok(httparse::Status::Complete((n, size))) => {
                    if n > self.limits.max_buffered {
                        return Err(self.too_large());
                    }
                    self.start += n;
                    self.state = State::Chunked(if size == 0 {
                        Chunk::Trailers
                    } else {
                        Chunk::Data(size)
                    });
                }
                Ok(httparse::Status::Partial) => {
                    if avail.len() > self.limits.max_buffered {
                        return Err(self.too_large());
                    }
                    return Ok(false);
                }
                Err(_) => return Err(self.malformed("chunk size")),
            },
            Chunk::Data(rem) => {
                let rem = rem - self.take_body(rem);
                self.state = State::Chunked(if rem == 0 {
                    Chunk::DataEnd
                } else {
                    Chunk::Data(rem)
                });
                if rem > 0 {
                    return Ok(false);
                }
            }
            Chunk::DataEnd => {
                if avail.len() < 2 {
                    if avail.first().is_some_and(|&b| b != b'\r') {
                        return Err(self.malformed("chunk end"));
                    }
                    return Ok(false);
                }
                if &avail[..2] != b"\r\n" {
                    return Err(self.malformed("chunk end"));
                }
                self.start += 2;
                self.state = State::Chunked(Chunk::Size);
            }
            Chunk::Trailers => {
                let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
                match httparse::parse_headers(avail, &mut headers) {
                    Ok(httparse::Status::Complete((n, _))) => {
                        if n > self.limits.max_buffered {
                            return Err(self.too_large());
                        }
                        self.start += n;
                        self.state = State::Head;
                    }
                    Ok(httparse::Status::Partial) => {
                        if avail.len() > self.limits.max_buffered {
                            return Err(self.too_large());
                        }
                        return Ok(false);
                    }
                    Err(_) => return Err(self.malformed("chunked trailer")),
                }
            }
        }
        Ok(true)
    }
}

fn malformed(offset: u64, what: &'static str) -> DecodeError {
    DecodeError::Malformed {
        protocol: Protocol::Http,
        what,
        offset,
    }
}

fn too_large(offset: u64, limit: usize) -> DecodeError {
    DecodeError::TooLarge {
        protocol: Protocol::Http,
        limit,
        offset,
    }
}

/// A decimal number of at most 19 digits (no sign, no spaces).
fn parse_decimal(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 19 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(s.iter().fold(0u64, |a, &d| a * 10 + u64::from(d - b'0')))
}

impl Decoder for HttpDecoder {
    fn protocol(&self) -> Protocol {
        Protocol::Http
    }

    fn direction(&self) -> Direction {
        self.dir
    }

    fn feed(&mut self, data: &[u8]) {
        if self.opaque {
            return;
        }
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.buf_offset += self.start as u64;
            self.start = 0;
        }
        self.buf.extend_from_slice(data);
    }

    fn finish(&mut self) {
        self.finished = true;
    }

    fn poll_message(&mut self) -> Result<Option<DecodedMessage<'_>>, DecodeError> {
        if self.opaque {
            return Ok(None);
        }
        match self.step() {
            Ok(true) => {}
            Ok(false) => return Ok(None),
            Err(e) => {
                self.opaque = true;
                self.buf = Vec::new();
                self.start = 0;
                return Err(e);
            }
        }
        Ok(Some(self.current()))
    }

    fn poll_partial(&mut self) -> Option<DecodedMessage<'_>> {
        // Only a message whose head was decoded and whose body is still arriving.
        if self.opaque || matches!(self.state, State::Head | State::Tunnel) {
            return None;
        }
        Some(self.current())
    }

    fn note_request(&mut self, request: &DecodedMessage<'_>) {
        if self.dir != Direction::Response {
            return;
        }
        if let Detail::Http(h) = request.detail {
            self.pending.push_back(match h.method {
                Some("HEAD") => ReqKind::Head,
                Some("CONNECT") => ReqKind::Connect,
                _ => ReqKind::Other,
            });
        }
    }

    fn is_opaque(&self) -> bool {
        self.opaque
    }
}

impl HttpDecoder {
    /// The message in `msg`, as far as it was decoded.
    fn current(&self) -> DecodedMessage<'_> {
        let m = &self.msg;
        let end = self.offset_now();
        let text = |r: (usize, usize)| std::str::from_utf8(&m.head[r.0..r.1]).unwrap_or("");
        let (summary, detail) = if m.tunnel {
            (Summary::Data, Detail::None)
        } else {
            let head = HttpHead {
                method: (self.dir == Direction::Request).then(|| text(m.method)),
                target: (self.dir == Direction::Request).then(|| text(m.target)),
                status: (self.dir == Direction::Response).then_some(m.status),
                reason: (self.dir == Direction::Response).then(|| text(m.reason)),
                version: m.version,
                head: &m.head,
                spans: &m.spans,
            };
            let summary = match self.dir {
                Direction::Request => Summary::Request {
                    endpoint: &m.endpoint,
                },
                Direction::Response => Summary::Response(ResponseClass::Http { status: m.status }),
            };
            (summary, Detail::Http(head))
        };
        DecodedMessage {
            summary,
            offset: m.offset,
            wire_len: end - m.offset,
            body: &m.body,
            body_len: m.body_len,
            detail,
        }
    }
}

#[cfg(test)]
mod tests;
