//! RESP values as trees, for the protocol-aware diff (not the hot path).

use super::scan::{find_crlf, parse_int, scan, Scan, ScanError};
use crate::decode::{DecodeError, Protocol};

/// A RESP value decoded into a tree for the protocol-aware diff, its strings borrowed from the
/// encoded bytes (a reply's [`DecodedMessage::body`]). Not for the hot path: it allocates per aggregate.
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
        // The scanner reads lengths with parse_int (`-01` is -1 too): so must this.
        b'$' | b'*' if parse_int(line) == Some(-1) => (Value::Null, next),
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
