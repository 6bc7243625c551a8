//! The head of an HTTP message: start line and headers parsed by `httparse`, copied into the
//! decoder's reusable buffers, and the body framing they declare (RFC 9112 section 6).

use super::template::push_template;
use super::{
    malformed, parse_decimal, too_large, Chunk, Direction, HttpDecoder, ReqKind, State, MAX_HEADERS,
};
use crate::decode::DecodeError;

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
    pub(super) head: &'a [u8],
    pub(super) spans: &'a [HeaderSpan],
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

impl HttpDecoder {
    /// Parses a head at `buf[start..]`; `Ok(false)` when it is not complete yet. On success the
    /// head is copied into `msg`, the bytes are consumed and `state` says how the body is framed.
    pub(super) fn parse_head(&mut self) -> Result<bool, DecodeError> {
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
