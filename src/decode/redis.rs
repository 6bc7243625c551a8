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

/// What scanning a value found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scan {
    /// The value ends at this absolute index.
    Complete(usize),
    /// More bytes are needed; the buffer must reach at least this length before trying again.
    Incomplete(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ScanError {
    Malformed(&'static str),
    TooDeep,
}

/// Index of the `\r` of the first `\r\n` at or after `pos`.
fn find_crlf(buf: &[u8], pos: usize) -> Option<usize> {
    let rel = buf.get(pos..)?.windows(2).position(|w| w == b"\r\n")?;
    Some(pos + rel)
}

/// A signed decimal as RESP writes lengths and integers (a 64-bit signed value).
fn parse_int(s: &[u8]) -> Option<i64> {
    let (neg, digits) = match s.split_first() {
        Some((b'-', d)) => (true, d),
        Some((b'+', d)) => (false, d),
        _ => (false, s),
    };
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    // 19 digits fit in an i128 whatever they are; the range check is the conversion.
    let v = digits
        .iter()
        .fold(0i128, |a, &d| a * 10 + i128::from(d - b'0'));
    i64::try_from(if neg { -v } else { v }).ok()
}

/// Scans one RESP value starting at `pos`; `depth` is its nesting level.
fn scan(buf: &[u8], pos: usize, depth: usize, max_depth: usize) -> Result<Scan, ScanError> {
    if depth > max_depth {
        return Err(ScanError::TooDeep);
    }
    let Some(&t) = buf.get(pos) else {
        return Ok(Scan::Incomplete(pos + 1));
    };
    let Some(cr) = find_crlf(buf, pos + 1) else {
        return Ok(Scan::Incomplete(buf.len() + 1));
    };
    let line = &buf[pos + 1..cr];
    let next = cr + 2;
    let ok = |valid: bool, what| {
        if valid {
            Ok(Scan::Complete(next))
        } else {
            Err(ScanError::Malformed(what))
        }
    };
    match t {
        b'+' | b'-' => Ok(Scan::Complete(next)),
        b':' => ok(parse_int(line).is_some(), "integer"),
        b'(' => {
            let d = line.strip_prefix(b"-").unwrap_or(line);
            ok(
                !d.is_empty() && d.iter().all(u8::is_ascii_digit),
                "big number",
            )
        }
        b',' => ok(
            !line.is_empty()
                && line
                    .iter()
                    .all(|c| c.is_ascii_digit() || b"+-.eEinfa".contains(c)),
            "double",
        ),
        b'#' => ok(line == b"t" || line == b"f", "boolean"),
        b'_' => ok(line.is_empty(), "null"),
        b'$' | b'!' | b'=' => {
            let Some(len) = parse_int(line) else {
                return Err(ScanError::Malformed("blob length"));
            };
            if len == -1 && t == b'$' {
                return Ok(Scan::Complete(next));
            }
            let Ok(len) = usize::try_from(len) else {
                return Err(ScanError::Malformed("blob length"));
            };
            if t == b'=' && len < 4 {
                return Err(ScanError::Malformed("verbatim string"));
            }
            let end = next.saturating_add(len).saturating_add(2);
            if buf.len() < end {
                return Ok(Scan::Incomplete(end));
            }
            if &buf[end - 2..end] != b"\r\n" || (t == b'=' && buf[next + 3] != b':') {
                return Err(ScanError::Malformed("blob"));
            }
            Ok(Scan::Complete(end))
        }
        b'*' | b'~' | b'>' | b'%' | b'|' => {
            let Some(n) = parse_int(line) else {
                return Err(ScanError::Malformed("aggregate length"));
            };
            if n == -1 && t == b'*' {
                return Ok(Scan::Complete(next));
            }
            let Ok(n) = u64::try_from(n) else {
                return Err(ScanError::Malformed("aggregate length"));
            };
            let items = if matches!(t, b'%' | b'|') { n * 2 } else { n };
            let mut at = next;
            for _ in 0..items {
                match scan(buf, at, depth + 1, max_depth)? {
                    Scan::Complete(e) => at = e,
                    inc => return Ok(inc),
                }
            }
            if t == b'|' {
                // An attribute annotates the value that follows it: one message with it.
                return scan(buf, at, depth, max_depth);
            }
            Ok(Scan::Complete(at))
        }
        _ => Err(ScanError::Malformed("type byte")),
    }
}

/// Where the annotated value of a reply starts (after any attributes). The reply is complete.
fn skip_attributes(buf: &[u8], mut pos: usize, max_depth: usize) -> usize {
    while buf.get(pos) == Some(&b'|') {
        let Some(cr) = find_crlf(buf, pos + 1) else {
            return pos;
        };
        let n = parse_int(&buf[pos + 1..cr]).unwrap_or(0).max(0) as u64;
        let mut at = cr + 2;
        for _ in 0..n * 2 {
            match scan(buf, at, 1, max_depth) {
                Ok(Scan::Complete(e)) => at = e,
                _ => return pos,
            }
        }
        pos = at;
    }
    pos
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

/// The first space-separated word of an error message (`ERR`, `WRONGTYPE`).
fn first_word(s: &[u8]) -> &str {
    let w = s.split(|&c| c == b' ').next().unwrap_or(b"");
    std::str::from_utf8(w).unwrap_or("?")
}

/// Kind and error prefix of one complete encoded value (attributes already skipped).
fn reply_class(v: &[u8]) -> (ReplyKind, Option<&str>) {
    let line_end = find_crlf(v, 1).unwrap_or(v.len());
    let kind = match v.first().copied().unwrap_or(b'_') {
        b'+' => ReplyKind::Simple,
        b'-' => return (ReplyKind::Error, Some(first_word(&v[1..line_end]))),
        b':' => ReplyKind::Integer,
        b'$' if v.starts_with(b"$-1\r") => ReplyKind::Null,
        b'$' => ReplyKind::Bulk,
        b'*' if v.starts_with(b"*-1\r") => ReplyKind::Null,
        b'*' => ReplyKind::Array,
        b',' => ReplyKind::Double,
        b'#' => ReplyKind::Boolean,
        b'(' => ReplyKind::BigNumber,
        b'=' => ReplyKind::Verbatim,
        b'%' => ReplyKind::Map,
        b'~' => ReplyKind::Set,
        b'>' => ReplyKind::Push,
        b'!' => {
            let data = v
                .get(line_end + 2..v.len().saturating_sub(2))
                .unwrap_or(b"");
            return (ReplyKind::BlobError, Some(first_word(data)));
        }
        _ => ReplyKind::Null,
    };
    (kind, None)
}

/// A RESP value decoded into a tree for the protocol-aware diff, its strings borrowed from the
/// encoded bytes (a reply's [`Message::body`]). Not for the hot path: it allocates per aggregate.
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    /// Simple string.
    Simple(&'a [u8]),
    /// Error, the whole message (`ERR unknown command`).
    Error(&'a [u8]),
    /// Integer.
    Integer(i64),
    /// Bulk string.
    Bulk(&'a [u8]),
    /// Any null (RESP2 `$-1` / `*-1`, RESP3 `_`).
    Null,
    /// Double, as sent (`3.14`, `inf`), so that equal text compares equal.
    Double(&'a [u8]),
    /// Boolean.
    Boolean(bool),
    /// Big number, as sent.
    BigNumber(&'a [u8]),
    /// Verbatim string: its three-letter format (`txt`, `mkd`) and text.
    Verbatim(&'a [u8], &'a [u8]),
    /// Blob error, the whole message.
    BlobError(&'a [u8]),
    /// Array.
    Array(Vec<Value<'a>>),
    /// Set.
    Set(Vec<Value<'a>>),
    /// Push (out of band).
    Push(Vec<Value<'a>>),
    /// Map, pairs in order sent.
    Map(Vec<(Value<'a>, Value<'a>)>),
    /// A value and the attributes sent before it.
    Attributed(Vec<(Value<'a>, Value<'a>)>, Box<Value<'a>>),
}

impl<'a> Value<'a> {
    /// Decodes exactly one complete value filling `bytes` (nesting at most `max_depth`).
    pub fn parse(bytes: &'a [u8], max_depth: usize) -> Result<Value<'a>, DecodeError> {
        let malformed = |what| DecodeError::Malformed {
            protocol: Protocol::Redis,
            what,
            offset: 0,
        };
        // Validate first, with the same scanner the decoder uses; the tree builder below then
        // never meets a short or inconsistent value.
        match scan(bytes, 0, 0, max_depth) {
            Ok(Scan::Complete(end)) if end == bytes.len() => {}
            Ok(Scan::Complete(_)) => return Err(malformed("bytes after the value")),
            Ok(Scan::Incomplete(_)) => {
                return Err(DecodeError::Truncated {
                    protocol: Protocol::Redis,
                    offset: 0,
                })
            }
            Err(ScanError::Malformed(w)) => return Err(malformed(w)),
            Err(ScanError::TooDeep) => {
                return Err(DecodeError::TooDeep {
                    protocol: Protocol::Redis,
                    limit: max_depth,
                    offset: 0,
                })
            }
        }
        build(bytes, 0)
            .map(|(v, _)| v)
            .ok_or_else(|| malformed("value"))
    }
}

/// Builds the value at `pos` of bytes `scan` accepted; its end. `None` only on a scanner bug.
fn build(buf: &[u8], pos: usize) -> Option<(Value<'_>, usize)> {
    let t = *buf.get(pos)?;
    let cr = find_crlf(buf, pos + 1)?;
    let line = buf.get(pos + 1..cr)?;
    let next = cr + 2;
    let blob = |len: usize| buf.get(next..next + len).map(|b| (b, next + len + 2));
    let many = |n: usize, mut at: usize| {
        let mut v = Vec::with_capacity(n.min(1024));
        for _ in 0..n {
            let (x, e) = build(buf, at)?;
            v.push(x);
            at = e;
        }
        Some((v, at))
    };
    let pairs = |n: usize, mut at: usize| {
        let mut v = Vec::with_capacity(n.min(1024));
        for _ in 0..n {
            let (k, e) = build(buf, at)?;
            let (x, e) = build(buf, e)?;
            v.push((k, x));
            at = e;
        }
        Some((v, at))
    };
    let len = || parse_int(line).and_then(|l| usize::try_from(l).ok());
    Some(match t {
        b'+' => (Value::Simple(line), next),
        b'-' => (Value::Error(line), next),
        b':' => (Value::Integer(parse_int(line)?), next),
        b',' => (Value::Double(line), next),
        b'#' => (Value::Boolean(line == b"t"), next),
        b'(' => (Value::BigNumber(line), next),
        b'_' => (Value::Null, next),
        b'$' | b'*' if line == b"-1" => (Value::Null, next),
        b'$' => blob(len()?).map(|(b, e)| (Value::Bulk(b), e))?,
        b'!' => blob(len()?).map(|(b, e)| (Value::BlobError(b), e))?,
        b'=' => {
            let (b, e) = blob(len()?)?;
            (Value::Verbatim(b.get(..3)?, b.get(4..)?), e)
        }
        b'*' => many(len()?, next).map(|(v, e)| (Value::Array(v), e))?,
        b'~' => many(len()?, next).map(|(v, e)| (Value::Set(v), e))?,
        b'>' => many(len()?, next).map(|(v, e)| (Value::Push(v), e))?,
        b'%' => pairs(len()?, next).map(|(v, e)| (Value::Map(v), e))?,
        b'|' => {
            let (attrs, e) = pairs(len()?, next)?;
            let (v, e) = build(buf, e)?;
            (Value::Attributed(attrs, Box::new(v)), e)
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests;
