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

use super::{
    DecodeError, Decoder, Detail, Direction, Limits, Message, Protocol, ResponseClass, Summary,
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

/// Writes the template of a request target into `out` (cleared first): the path without query
/// or fragment, with every segment that looks like an id replaced by `{id}`. An absolute-form
/// target (`http://host/p`) keeps its path only; `*` stays `*`.
pub fn path_template(target: &str, out: &mut String) {
    out.clear();
    push_template(target, out);
}

/// [`path_template`] appended to `out`.
fn push_template(target: &str, out: &mut String) {
    let mut path = target;
    if let Some(rest) = path
        .strip_prefix("http://")
        .or_else(|| path.strip_prefix("https://"))
    {
        path = rest.find('/').map_or("/", |i| &rest[i..]);
    }
    let end = path.find(['?', '#']).unwrap_or(path.len());
    let path = &path[..end];
    if path.is_empty() {
        out.push('/');
        return;
    }
    for (i, seg) in path.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        if is_id(seg) {
            out.push_str("{id}");
        } else {
            out.push_str(seg);
        }
    }
}

/// True for a path segment that names one item rather than a route: all digits, a UUID, a
/// long hex string, or a long token mixing letters and digits (base64url ids, hashes).
fn is_id(seg: &str) -> bool {
    let b = seg.as_bytes();
    if b.is_empty() {
        return false;
    }
    if b.iter().all(u8::is_ascii_digit) {
        return true;
    }
    let hexish = |c: &u8| c.is_ascii_hexdigit() || *c == b'-';
    // UUID: 8-4-4-4-12 hex digits.
    if b.len() == 36
        && b.iter().all(hexish)
        && [8, 13, 18, 23].iter().all(|&i| b[i] == b'-')
        && b.iter().filter(|&&c| c == b'-').count() == 4
    {
        return true;
    }
    let digits = b.iter().filter(|c| c.is_ascii_digit()).count();
    // Hex ids (object ids, hashes): 16 or more hex digits with at least one decimal digit, so
    // that long words made of a-f letters stay words.
    if b.len() >= 16 && b.iter().all(u8::is_ascii_hexdigit) && digits > 0 {
        return true;
    }
    // Opaque tokens: 20 or more of [A-Za-z0-9_-] with both letters and digits.
    b.len() >= 20
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'-' || *c == b'_')
        && digits > 0
        && b.iter().any(u8::is_ascii_alphabetic)
}

/// The head of an HTTP message: start line and headers, borrowed from the decoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpHead<'a> {
    /// The request method; `None` for responses.
    pub method: Option<&'a str>,
    /// The request target as sent (path and query); `None` for responses.
    pub target: Option<&'a str>,
    /// The status code; `None` for requests.
    pub status: Option<u16>,
    /// The reason phrase of a response; `None` for requests.
    pub reason: Option<&'a str>,
    /// Minor version: 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub version: u8,
    head: &'a [u8],
    spans: &'a [HeaderSpan],
}

impl<'a> HttpHead<'a> {
    /// The headers in order, names as sent.
    pub fn headers(&self) -> impl Iterator<Item = (&'a str, &'a [u8])> + 'a {
        let head = self.head;
        self.spans.iter().map(move |s| {
            let name = std::str::from_utf8(&head[s.name.0..s.name.1]).unwrap_or("");
            (name, &head[s.value.0..s.value.1])
        })
    }

    /// The value of the first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&'a [u8]> {
        self.headers()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// The raw head bytes, start line to the empty line included.
    pub fn raw(&self) -> &'a [u8] {
        self.head
    }
}

/// Where one header's name and value sit in the head buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderSpan {
    name: (usize, usize),
    value: (usize, usize),
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

    /// Parses a head at `buf[start..]`; `Ok(false)` when it is not complete yet. On success the
    /// head is copied into `msg`, the bytes are consumed and `state` says how the body is framed.
    fn parse_head(&mut self) -> Result<bool, DecodeError> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let off = self.msg.offset;
        let avail = &self.buf[self.start..];
        let mut cfg = httparse::ParserConfig::default();
        cfg.allow_spaces_after_header_name_in_responses(true)
            .allow_obsolete_multiline_headers_in_responses(true)
            .allow_multiple_spaces_in_response_status_delimiters(true);
        let m = &mut self.msg;
        m.body.clear();
        m.body_len = 0;
        m.tunnel = false;
        m.spans.clear();
        m.method = (0, 0);
        m.target = (0, 0);
        m.reason = (0, 0);
        m.status = 0;
        let base = avail.as_ptr() as usize;
        // Where a borrowed piece of the head sits, as offsets from its start.
        // httparse hands back a static "" for a missing reason phrase: anything outside the
        // input is an empty span.
        let span = |s: &[u8]| match (s.as_ptr() as usize).checked_sub(base) {
            Some(a) if a + s.len() <= avail.len() => (a, a + s.len()),
            _ => (0, 0),
        };
        let n = match self.dir {
            Direction::Request => {
                let mut req = httparse::Request::new(&mut headers);
                match cfg.parse_request(&mut req, avail) {
                    Ok(httparse::Status::Complete(n)) => {
                        // httparse only returns Complete with all fields set.
                        let (Some(method), Some(path), Some(v)) =
                            (req.method, req.path, req.version)
                        else {
                            return Err(malformed(off, "request line"));
                        };
                        m.method = span(method.as_bytes());
                        m.target = span(path.as_bytes());
                        m.version = v;
                        n
                    }
                    Ok(httparse::Status::Partial) => return Ok(false),
                    Err(_) => return Err(malformed(off, "request head")),
                }
            }
            Direction::Response => {
                let mut resp = httparse::Response::new(&mut headers);
                match cfg.parse_response(&mut resp, avail) {
                    Ok(httparse::Status::Complete(n)) => {
                        let (Some(code), Some(v)) = (resp.code, resp.version) else {
                            return Err(malformed(off, "status line"));
                        };
                        m.status = code;
                        m.version = v;
                        m.reason = span(resp.reason.unwrap_or("").as_bytes());
                        n
                    }
                    Ok(httparse::Status::Partial) => return Ok(false),
                    Err(_) => return Err(malformed(off, "response head")),
                }
            }
        };
        if n > self.limits.max_buffered {
            return Err(too_large(off, self.limits.max_buffered));
        }
        // Framing from the headers (RFC 9112 section 6.3).
        let mut chunked = false;
        let mut has_te = false;
        let mut length: Option<u64> = None;
        let mut bad_length = false;
        for h in headers.iter().take_while(|h| !h.name.is_empty()) {
            m.spans.push(HeaderSpan {
                name: span(h.name.as_bytes()),
                value: span(h.value),
            });
            if h.name.eq_ignore_ascii_case("transfer-encoding") {
                has_te = true;
                // Only the final coding decides whether the body is chunked.
                chunked = h
                    .value
                    .rsplit(|&b| b == b',')
                    .next()
                    .is_some_and(|c| c.trim_ascii().eq_ignore_ascii_case(b"chunked"));
            } else if h.name.eq_ignore_ascii_case("content-length") {
                // A list of identical values is allowed (RFC 9110 section 8.6); different ones are not.
                for v in h.value.split(|&b| b == b',') {
                    match parse_decimal(v.trim_ascii()) {
                        Some(l) if length.is_none_or(|x| x == l) => length = Some(l),
                        _ => bad_length = true,
                    }
                }
            }
        }
        m.head.clear();
        m.head.extend_from_slice(&avail[..n]);
        self.start += n;

        self.state = match self.dir {
            Direction::Request => {
                let method = &m.head[m.method.0..m.method.1];
                let target = std::str::from_utf8(&m.head[m.target.0..m.target.1]).unwrap_or("/");
                m.endpoint.clear();
                // httparse checked the method is a token (ASCII).
                m.endpoint
                    .push_str(std::str::from_utf8(method).unwrap_or("?"));
                m.endpoint.push(' ');
                push_template(target, &mut m.endpoint);
                if method == b"CONNECT" {
                    State::Tunnel
                } else if has_te {
                    if !chunked {
                        return Err(malformed(off, "transfer-encoding of a request"));
                    }
                    State::Chunked(Chunk::Size)
                } else if bad_length {
                    return Err(malformed(off, "content-length"));
                } else {
                    match length {
                        Some(0) | None => State::Head,
                        Some(l) => State::Length(l),
                    }
                }
            }
            Direction::Response => {
                let status = m.status;
                let interim = (100..200).contains(&status) && status != 101;
                let req = if interim {
                    self.pending.front().copied()
                } else {
                    self.pending.pop_front()
                }
                .unwrap_or(ReqKind::Other);
                if status == 101 || (req == ReqKind::Connect && (200..300).contains(&status)) {
                    State::Tunnel
                } else if interim || status == 204 || status == 304 || req == ReqKind::Head {
                    State::Head
                } else if has_te {
                    if chunked {
                        State::Chunked(Chunk::Size)
                    } else {
                        State::UntilClose
                    }
                } else if bad_length {
                    return Err(malformed(off, "content-length"));
                } else {
                    match length {
                        Some(0) => State::Head,
                        Some(l) => State::Length(l),
                        None => State::UntilClose,
                    }
                }
            }
        };
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

    fn poll_message(&mut self) -> Result<Option<Message<'_>>, DecodeError> {
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
        Ok(Some(Message {
            summary,
            offset: m.offset,
            wire_len: end - m.offset,
            body: &m.body,
            body_len: m.body_len,
            detail,
        }))
    }

    fn note_request(&mut self, request: &Message<'_>) {
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

#[cfg(test)]
mod tests;
