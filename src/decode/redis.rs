//! Redis serialization protocol, RESP2 and RESP3 (<https://redis.io/docs/latest/develop/reference/protocol-spec/>).
//!
//! Requests are commands: arrays of bulk strings, or inline commands (a line of words, as typed
//! into telnet). Replies are any RESP value: simple string, error, integer, bulk string, array and
//! the RESP2 nulls; RESP3's null, double, boolean, big number, verbatim string, map, set,
//! attribute (kept with the value it annotates), push and blob error. Nesting is bounded by
//! [`Limits::max_depth`]; a value must fit in [`Limits::max_buffered`] since it is scanned whole.
//! RESP3 streamed strings and aggregates (`$?`, `*?`) are not decoded: they make the stream opaque.
//!
//! Messages borrow straight from the input buffer: a reply's [`DecodedMessage::body`] is its encoded
//! value, a command's arguments are spans into it.

mod scan;
mod value;

use scan::{find_crlf, parse_int, reply_class, scan, skip_attributes, Scan, ScanError};
pub use value::Value;

use super::{
    DecodeError, DecodedMessage, Decoder, Detail, Direction, Limits, Protocol, ResponseClass,
    Summary,
};

/// The type of a reply, as the report counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReplyKind {
    /// `+OK`.
    Simple,
    /// `-ERR ...`.
    Error,
    /// `:42`.
    Integer,
    /// `$5\r\nhello`.
    Bulk,
    /// `*2...`.
    Array,
    /// RESP2 `$-1` / `*-1`, RESP3 `_`.
    Null,
    /// RESP3 `,3.14`.
    Double,
    /// RESP3 `#t`.
    Boolean,
    /// RESP3 `(3492890328409238509324850943850943825024385`.
    BigNumber,
    /// RESP3 `=15\r\ntxt:Some string`.
    Verbatim,
    /// RESP3 `%2...`.
    Map,
    /// RESP3 `~3...`.
    Set,
    /// RESP3 `>3...`: out of band, answers no command.
    Push,
    /// RESP3 `!21\r\nSYNTAX invalid syntax`.
    BlobError,
}

impl ReplyKind {
    /// Lower-case name for reports.
    pub fn name(self) -> &'static str {
        match self {
            ReplyKind::Simple => "simple",
            ReplyKind::Error => "error",
            ReplyKind::Integer => "integer",
            ReplyKind::Bulk => "bulk",
            ReplyKind::Array => "array",
            ReplyKind::Null => "null",
            ReplyKind::Double => "double",
            ReplyKind::Boolean => "boolean",
            ReplyKind::BigNumber => "bignumber",
            ReplyKind::Verbatim => "verbatim",
            ReplyKind::Map => "map",
            ReplyKind::Set => "set",
            ReplyKind::Push => "push",
            ReplyKind::BlobError => "blob-error",
        }
    }
}

/// A command's arguments (command name first); empty for replies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RedisDetail<'a> {
    data: &'a [u8],
    spans: &'a [(usize, usize)],
}

impl<'a> RedisDetail<'a> {
    /// The arguments in order, the command name first, as sent (not upper-cased).
    pub fn args(&self) -> impl Iterator<Item = &'a [u8]> + 'a {
        let data = self.data;
        self.spans.iter().map(move |&(a, b)| &data[a..b])
    }

    /// Number of arguments, the command name included.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// True for a reply (no arguments).
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }
}

/// The incremental RESP decoder of one direction.
#[derive(Debug)]
pub struct RedisDecoder {
    dir: Direction,
    limits: Limits,
    /// Bytes fed; `buf[start..]` are not decoded yet; `buf[0]` is at stream offset `buf_offset`.
    buf: Vec<u8>,
    start: usize,
    buf_offset: u64,
    /// Do not scan again before `buf` is this long (a value seen incomplete needs that much).
    need: usize,
    finished: bool,
    opaque: bool,
    /// Reusable per message: the command's argument spans and upper-cased name.
    spans: Vec<(usize, usize)>,
    endpoint: String,
    /// A long string reply being streamed through (see [`Streamed`]).
    streamed: Option<Streamed>,
}

/// A top-level blob reply (`$`, `!`, `=`) longer than [`Limits::max_body`], decoded as it
/// arrives instead of buffered whole: its first `max_body` bytes are kept (as much as a buffered
/// reply would keep), the rest is counted and dropped, so a `GET` of a 100 MB value takes no more
/// memory than a short one and never hits [`Limits::max_buffered`].
#[derive(Debug, Default)]
struct Streamed {
    /// Stream offset of its first byte.
    offset: u64,
    /// Its encoded length: header line, data and the final CRLF.
    total: u64,
    /// Bytes of it decoded so far.
    seen: u64,
    /// Where the `:` of a verbatim string sits in the encoding (0: not a verbatim string).
    colon: u64,
    /// A byte that must be `:`, `\r` or `\n` was not; reported when the value is complete, as
    /// a buffered decode would (it sees the bytes only once they are all there).
    bad: bool,
    /// The first `max_body` bytes of the encoding.
    kept: Vec<u8>,
}

impl RedisDecoder {
    /// A decoder of commands or replies.
    pub fn new(dir: Direction, limits: Limits) -> RedisDecoder {
        RedisDecoder {
            dir,
            limits,
            buf: Vec::new(),
            start: 0,
            buf_offset: 0,
            need: 0,
            finished: false,
            opaque: false,
            spans: Vec::new(),
            endpoint: String::new(),
            streamed: None,
        }
    }

    /// True when a top-level reply of type `t` and `total` encoded bytes is streamed rather
    /// than buffered: a blob that a message would not keep whole anyway.
    fn streams(&self, t: u8, total: usize) -> bool {
        self.dir == Direction::Response
            && matches!(t, b'$' | b'!' | b'=')
            && total > self.limits.max_body
    }

    /// Starts streaming the blob at `buf[begin..]` if [`streams`](Self::streams) says so; its
    /// header line is complete (the scanner read its length).
    fn start_streamed(&mut self, begin: usize, need: usize) -> bool {
        let t = self.buf[begin];
        if !self.streams(t, need - begin) {
            return false;
        }
        let colon = match (t, find_crlf(&self.buf, begin + 1)) {
            (b'=', Some(cr)) => (cr + 2 + 3 - begin) as u64,
            _ => 0,
        };
        self.need = 0;
        let mut kept = std::mem::take(&mut self.streamed.get_or_insert_default().kept);
        kept.clear();
        self.streamed = Some(Streamed {
            offset: self.buf_offset + begin as u64,
            total: (need - begin) as u64,
            seen: 0,
            colon,
            bad: false,
            kept,
        });
        true
    }

    /// The streamed blob, complete: its message, and the decoder ready for the next one.
    fn streamed_message(&mut self) -> Option<DecodedMessage<'_>> {
        let st = self.streamed.as_mut()?;
        let (offset, total) = (st.offset, st.total);
        st.total = 0;
        st.seen = 0;
        let st = self.streamed.as_ref()?;
        let (kind, error_prefix) = reply_class(&st.kept);
        Some(DecodedMessage {
            summary: Summary::Response(ResponseClass::Redis { kind, error_prefix }),
            offset,
            wire_len: total,
            body: &st.kept,
            body_len: total,
            detail: Detail::Redis(RedisDetail {
                data: &st.kept,
                spans: &[],
            }),
        })
    }

    /// Decodes what arrived of the streamed blob; `Ok(true)` once it is complete.
    fn step_streamed(&mut self) -> Result<bool, ErrKind> {
        let max_body = self.limits.max_body;
        let Some(st) = self.streamed.as_mut() else {
            return Ok(false);
        };
        let avail = &self.buf[self.start..];
        let n = (avail.len() as u64).min(st.total - st.seen) as usize;
        let chunk = &avail[..n];
        let expect = [
            (st.colon, b':'),
            (st.total - 2, b'\r'),
            (st.total - 1, b'\n'),
        ];
        for (pos, want) in expect {
            if pos > 0 && pos >= st.seen && pos < st.seen + n as u64 {
                st.bad |= chunk[(pos - st.seen) as usize] != want;
            }
        }
        let keep = max_body.saturating_sub(st.kept.len()).min(n);
        st.kept.extend_from_slice(&chunk[..keep]);
        st.seen += n as u64;
        self.start += n;
        if st.seen < st.total {
            return if self.finished {
                Err(ErrKind::Truncated)
            } else {
                Ok(false)
            };
        }
        if st.bad {
            return Err(ErrKind::Malformed("blob"));
        }
        Ok(true)
    }

    fn error(&self, kind: ErrKind) -> DecodeError {
        let offset = match &self.streamed {
            Some(st) if st.total > 0 => st.offset,
            _ => self.buf_offset + self.start as u64,
        };
        match kind {
            ErrKind::Malformed(what) => DecodeError::Malformed {
                protocol: Protocol::Redis,
                what,
                offset,
            },
            ErrKind::TooDeep => DecodeError::TooDeep {
                protocol: Protocol::Redis,
                limit: self.limits.max_depth,
                offset,
            },
            ErrKind::TooLarge => DecodeError::TooLarge {
                protocol: Protocol::Redis,
                limit: self.limits.max_buffered,
                offset,
            },
            ErrKind::Truncated | ErrKind::Streaming => DecodeError::Truncated {
                protocol: Protocol::Redis,
                offset,
            },
        }
    }

    /// Finds the next message; `Ok(Some((begin, end)))` with its absolute bounds in `buf`.
    fn next_bounds(&mut self) -> Result<Option<(usize, usize)>, ErrKind> {
        loop {
            let avail = self.buf.len() - self.start;
            if avail == 0 {
                return Ok(None);
            }
            let incomplete = |need: usize, this: &mut Self| {
                // `need` never passes the value's true end, so this holds however bytes arrive.
                if need.saturating_sub(this.start) > this.limits.max_buffered {
                    return Err(ErrKind::TooLarge);
                }
                if this.finished {
                    return Err(ErrKind::Truncated);
                }
                this.need = need;
                Ok(None)
            };
            if self.buf.len() < self.need {
                let need = self.need;
                return incomplete(need, self);
            }
            let begin = self.start;
            if self.dir == Direction::Request && self.buf[begin] != b'*' {
                // An inline command: one line of words ending in LF (CR optional).
                let Some(nl) = self.buf[begin..].iter().position(|&b| b == b'\n') else {
                    return incomplete(self.buf.len() + 1, self);
                };
                let end = begin + nl + 1;
                let line = &self.buf[begin..begin + nl];
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                self.spans.clear();
                let mut i = 0;
                while i < line.len() {
                    if line[i].is_ascii_whitespace() {
                        i += 1;
                        continue;
                    }
                    let s = i;
                    while i < line.len() && !line[i].is_ascii_whitespace() {
                        i += 1;
                    }
                    self.spans.push((begin + s, begin + i));
                }
                if self.spans.is_empty() {
                    // Redis skips empty inline lines; so do we.
                    self.start = end;
                    continue;
                }
                if end - begin > self.limits.max_buffered {
                    return Err(ErrKind::TooLarge);
                }
                return Ok(Some((begin, end)));
            }
            let end = match scan(&self.buf, begin, 0, self.limits.max_depth) {
                Ok(Scan::Complete(end)) => end,
                Ok(Scan::Incomplete(need)) => {
                    if self.start_streamed(begin, need) {
                        return Err(ErrKind::Streaming);
                    }
                    return incomplete(need, self);
                }
                Err(ScanError::Malformed(w)) => return Err(ErrKind::Malformed(w)),
                Err(ScanError::TooDeep) => return Err(ErrKind::TooDeep),
            };
            // A blob that a split stream would have streamed is not held to the buffer limit
            // either: the same bytes give the same messages however they arrive.
            if end - begin > self.limits.max_buffered && !self.streams(self.buf[begin], end - begin)
            {
                return Err(ErrKind::TooLarge);
            }
            if self.dir == Direction::Request {
                self.command_spans(begin, end)?;
            }
            return Ok(Some((begin, end)));
        }
    }

    /// Fills `spans` with the arguments of the command array at `buf[begin..end]`.
    fn command_spans(&mut self, begin: usize, end: usize) -> Result<(), ErrKind> {
        self.spans.clear();
        let buf = &self.buf[..end];
        let cr = find_crlf(buf, begin + 1).ok_or(ErrKind::Malformed("command"))?;
        let n = parse_int(&buf[begin + 1..cr]).unwrap_or(-1);
        if n < 1 {
            return Err(ErrKind::Malformed("command (empty array)"));
        }
        let mut at = cr + 2;
        for _ in 0..n {
            if buf.get(at) != Some(&b'$') {
                return Err(ErrKind::Malformed("command (argument not a bulk string)"));
            }
            let cr = find_crlf(buf, at + 1).ok_or(ErrKind::Malformed("command"))?;
            let len = parse_int(&buf[at + 1..cr])
                .and_then(|l| usize::try_from(l).ok())
                .ok_or(ErrKind::Malformed("command (null argument)"))?;
            self.spans.push((cr + 2, cr + 2 + len));
            at = cr + 2 + len + 2;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy)]
enum ErrKind {
    Malformed(&'static str),
    TooDeep,
    TooLarge,
    Truncated,
    /// Not an error: a streamed blob started ([`RedisDecoder::streamed`]).
    Streaming,
}

impl Decoder for RedisDecoder {
    fn protocol(&self) -> Protocol {
        Protocol::Redis
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
            self.need = self.need.saturating_sub(self.start);
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
        let in_stream = self.streamed.as_ref().is_some_and(|s| s.total > 0);
        let bounds = if in_stream {
            Err(ErrKind::Streaming)
        } else {
            self.next_bounds()
        };
        let bounds = match bounds {
            Err(ErrKind::Streaming) => match self.step_streamed() {
                Ok(true) => return Ok(self.streamed_message()),
                Ok(false) => return Ok(None),
                Err(k) => Err(k),
            },
            b => b,
        };
        let (begin, end) = match bounds {
            Ok(Some(b)) => b,
            Ok(None) => return Ok(None),
            Err(k) => {
                let e = self.error(k);
                self.opaque = true;
                self.buf = Vec::new();
                self.start = 0;
                return Err(e);
            }
        };
        self.start = end;
        self.need = 0;
        let buf = &self.buf;
        let summary = match self.dir {
            Direction::Request => {
                self.endpoint.clear();
                let (a, b) = self.spans[0];
                for &c in &buf[a..b] {
                    self.endpoint.push(char::from(c.to_ascii_uppercase()));
                }
                Summary::Request {
                    endpoint: &self.endpoint,
                }
            }
            Direction::Response => {
                let v = skip_attributes(buf, begin, self.limits.max_depth);
                let (kind, error_prefix) = reply_class(&buf[v..end]);
                Summary::Response(ResponseClass::Redis { kind, error_prefix })
            }
        };
        let wire_len = (end - begin) as u64;
        let keep = (end - begin).min(self.limits.max_body);
        Ok(Some(DecodedMessage {
            summary,
            offset: self.buf_offset + begin as u64,
            wire_len,
            body: &buf[begin..begin + keep],
            body_len: wire_len,
            detail: Detail::Redis(RedisDetail {
                data: buf,
                spans: if self.dir == Direction::Request {
                    &self.spans
                } else {
                    &[]
                },
            }),
        }))
    }

    fn poll_partial(&mut self) -> Option<DecodedMessage<'_>> {
        if self.opaque || self.dir != Direction::Response {
            return None;
        }
        let offset = self.buf_offset + self.start as u64;
        let (offset, body, body_len) = match &self.streamed {
            Some(st) if st.total > 0 => (st.offset, &st.kept[..], st.seen),
            _ => {
                let rest = &self.buf[self.start..];
                let keep = rest.len().min(self.limits.max_body);
                (offset, &rest[..keep], rest.len() as u64)
            }
        };
        // The type byte and its line say what the reply is; an attribute would hide it.
        if body.first().is_none_or(|&t| t == b'|') || find_crlf(body, 1).is_none() {
            return None;
        }
        let (kind, error_prefix) = reply_class(body);
        Some(DecodedMessage {
            summary: Summary::Response(ResponseClass::Redis { kind, error_prefix }),
            offset,
            wire_len: body_len,
            body,
            body_len,
            detail: Detail::Redis(RedisDetail {
                data: body,
                spans: &[],
            }),
        })
    }

    fn is_opaque(&self) -> bool {
        self.opaque
    }
}

#[cfg(test)]
mod tests;
