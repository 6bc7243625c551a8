//! Redis serialization protocol, RESP2 and RESP3 (<https://redis.io/docs/latest/develop/reference/protocol-spec/>).
//!
//! Requests are commands: arrays of bulk strings, or inline commands (a line of words, as typed
//! into telnet). Replies are any RESP value: simple string, error, integer, bulk string, array and
//! the RESP2 nulls; RESP3's null, double, boolean, big number, verbatim string, map, set,
//! attribute (kept with the value it annotates), push and blob error. Nesting is bounded by
//! [`Limits::max_depth`]; a value must fit in [`Limits::max_buffered`] since it is scanned whole.
//! RESP3 streamed strings and aggregates (`$?`, `*?`) are not decoded: they make the stream opaque.
//!
//! Messages borrow straight from the input buffer: a reply's [`Message::body`] is its encoded
//! value, a command's arguments are spans into it.

mod scan;
mod value;

use scan::{find_crlf, parse_int, reply_class, scan, skip_attributes, Scan, ScanError};
pub use value::Value;

use super::{
    DecodeError, Decoder, Detail, Direction, Limits, Message, Protocol, ResponseClass, Summary,
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
        }
    }

    fn error(&self, kind: ErrKind) -> DecodeError {
        let offset = self.buf_offset + self.start as u64;
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
            ErrKind::Truncated => DecodeError::Truncated {
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
                Ok(Scan::Incomplete(need)) => return incomplete(need, self),
                Err(ScanError::Malformed(w)) => return Err(ErrKind::Malformed(w)),
                Err(ScanError::TooDeep) => return Err(ErrKind::TooDeep),
            };
            if end - begin > self.limits.max_buffered {
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

    fn poll_message(&mut self) -> Result<Option<Message<'_>>, DecodeError> {
        if self.opaque {
            return Ok(None);
        }
        let (begin, end) = match self.next_bounds() {
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
        Ok(Some(Message {
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

    fn is_opaque(&self) -> bool {
        self.opaque
    }
}

#[cfg(test)]
mod tests;
