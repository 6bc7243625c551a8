//! Framing of RESP values: where one value ends, without building it, and what type of reply
//! it is. Shared by the decoder and the diff's tree parser ([`super::Value`]), so both accept
//! exactly the same bytes.

use super::ReplyKind;

/// What scanning a value found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Scan {
    /// The value ends at this absolute index.
    Complete(usize),
    /// More bytes are needed; the buffer must reach at least this length before trying again.
    Incomplete(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ScanError {
    Malformed(&'static str),
    TooDeep,
}

/// Index of the `\r` of the first `\r\n` at or after `pos`.
pub(super) fn find_crlf(buf: &[u8], pos: usize) -> Option<usize> {
    let rel = buf.get(pos..)?.windows(2).position(|w| w == b"\r\n")?;
    Some(pos + rel)
}

/// A signed decimal as RESP writes lengths and integers (a 64-bit signed value).
pub(super) fn parse_int(s: &[u8]) -> Option<i64> {
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
pub(super) fn scan(
    buf: &[u8],
    pos: usize,
    depth: usize,
    max_depth: usize,
) -> Result<Scan, ScanError> {
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
pub(super) fn skip_attributes(buf: &[u8], mut pos: usize, max_depth: usize) -> usize {
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

/// Longest error prefix kept (bytes).
const MAX_PREFIX: usize = 64;

/// The first space-separated word of an error message (`ERR`, `WRONGTYPE`).
pub(super) fn first_word(s: &[u8]) -> &str {
    let w = s.split(|&c| c == b' ').next().unwrap_or(b"");
    // Capped so that a streamed blob error, of which only the first bytes are kept, gets the
    // same prefix as a buffered one.
    let w = &w[..w.len().min(MAX_PREFIX)];
    std::str::from_utf8(w).unwrap_or("?")
}

/// Kind and error prefix of one complete encoded value (attributes already skipped).
pub(super) fn reply_class(v: &[u8]) -> (ReplyKind, Option<&str>) {
    let line_end = find_crlf(v, 1).unwrap_or(v.len());
    // RESP2 nulls: a length of -1, read as the scanner reads lengths (`-01` too).
    let null = parse_int(v.get(1..line_end).unwrap_or(b"")) == Some(-1);
    let kind = match v.first().copied().unwrap_or(b'_') {
        b'+' => ReplyKind::Simple,
        b'-' => return (ReplyKind::Error, Some(first_word(&v[1..line_end]))),
        b':' => ReplyKind::Integer,
        b'$' if null => ReplyKind::Null,
        b'$' => ReplyKind::Bulk,
        b'*' if null => ReplyKind::Null,
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
