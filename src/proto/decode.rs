//! Reading frames: the incremental [`FrameDecoder`] and the parsing of each message body.
//!
//! A length prefix is never trusted beyond the maximum frame length, the type and body length
//! are checked as soon as the first five bytes arrive; this module must never panic on hostile
//! input nor touch a socket.

use bytes::{Bytes, BytesMut};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::check::{check_header, check_prefix};
use super::*;

/// Incremental frame decoder: feed it the bytes received so far, take whole messages out.
///
/// It never allocates beyond its maximum frame length, checks the type byte and the body
/// length allowed for that type as soon as the first 5 bytes arrive (so a hostile length
/// prefix is rejected before any buffering), and after an error it stays failed.
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    max_frame_len: usize,
    /// Longest `PrefixedResponses` prefix accepted: what was agreed (0 until then).
    max_prefix: usize,
    consumed: u64,
    failed: Option<ProtoError>,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameDecoder {
    /// A decoder that accepts frames up to [`MAX_FRAME_LEN`].
    pub fn new() -> Self {
        Self::with_max_frame_len(MAX_FRAME_LEN)
    }

    /// A decoder that accepts frames up to `max` bytes (at most [`MAX_FRAME_LEN`]).
    /// intercept uses a small limit: it never receives `Responses`.
    pub fn with_max_frame_len(max: usize) -> Self {
        FrameDecoder {
            max_frame_len: max.min(MAX_FRAME_LEN),
            max_prefix: 0,
            consumed: 0,
            failed: None,
        }
    }

    /// Accepts `PrefixedResponses` prefixes of up to `max` bytes (the length agreed with
    /// `Options`, at most [`MAX_PREFIX`]); a longer one is [`ProtoError::PrefixTooLong`].
    pub fn set_max_prefix(&mut self, max: usize) {
        self.max_prefix = max.min(MAX_PREFIX);
    }

    /// Bytes of the stream consumed so far (whole frames).
    pub fn consumed(&self) -> u64 {
        self.consumed
    }

    /// Takes the next whole message out of `buf`, `Ok(None)` when more bytes are needed.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Message>, ProtoError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        match self.decode_inner(buf) {
            Err(e) => {
                self.failed = Some(e.clone());
                Err(e)
            }
            ok => ok,
        }
    }

    fn decode_inner(&mut self, buf: &mut BytesMut) -> Result<Option<Message>, ProtoError> {
        let max_prefix = self.max_prefix;
        if buf.len() < LEN_PREFIX {
            return Ok(None);
        }
        let at = self.consumed;
        let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        if len == 0 {
            return Err(ProtoError::EmptyFrame { offset: at });
        }
        let total = LEN_PREFIX as u64 + len as u64;
        if total > self.max_frame_len as u64 {
            return Err(ProtoError::FrameTooLong {
                len: total,
                max: self.max_frame_len,
                offset: at,
            });
        }
        if buf.len() > LEN_PREFIX {
            check_type_len(buf[LEN_PREFIX], len - 1, at)?;
        }
        let total = total as usize;
        if buf.len() < total {
            buf.reserve(total - buf.len());
            return Ok(None);
        }
        let frame = buf.split_to(total).freeze();
        let msg = parse_frame(frame, at, max_prefix)?;
        self.consumed += total as u64;
        Ok(Some(msg))
    }
}

fn check_type_len(ty: u8, body: usize, at: u64) -> Result<(), ProtoError> {
    let (what, ok) = match ty {
        TYPE_HELLO => ("Hello", (HELLO_BODY..=MAX_HELLO_BODY).contains(&body)),
        TYPE_SESSION_ADD => ("SessionAdd", (2 * 7..=MAX_SESSION_BODY).contains(&body)),
        TYPE_SESSION_REMOVE => ("SessionRemove", (2 * 7..=MAX_SESSION_BODY).contains(&body)),
        TYPE_RESPONSES => ("Responses", body >= 2 + 2 + 40),
        TYPE_PING => ("Ping", body == 0),
        TYPE_PONG => ("Pong", body == 0),
        TYPE_OPTIONS => ("Options", body == OPTIONS_BODY),
        TYPE_PREFIXED => ("PrefixedResponses", body >= 2 + 4 + 40),
        ty => {
            return Err(ProtoError::UnknownType {
                ty,
                offset: at + LEN_PREFIX as u64,
            })
        }
    };
    if ok {
        Ok(())
    } else {
        Err(ProtoError::BadLength {
            what,
            len: body,
            offset: at,
        })
    }
}

/// A cursor over one frame body that reports stream offsets.
struct Body {
    b: Bytes,
    pos: usize,
    base: u64,
    what: &'static str,
}

impl Body {
    fn at(&self) -> u64 {
        self.base + self.pos as u64
    }
    /// The next `n` bytes, kept (a reference to the frame's buffer, not a copy).
    fn take(&mut self, n: usize, field: &'static str) -> Result<Bytes, ProtoError> {
        let at = self.pos;
        self.field(n, field)?;
        Ok(self.b.slice(at..at + n))
    }
    /// The next `n` bytes, read in place: a field's value is read at once, and a `Bytes` for
    /// it cost an atomic count up and down on the frame's buffer, for every field of every
    /// message.
    fn field(&mut self, n: usize, field: &'static str) -> Result<&[u8], ProtoError> {
        if self.b.len() - self.pos < n {
            return Err(ProtoError::Truncated {
                what: field,
                offset: self.at(),
            });
        }
        let at = self.pos;
        self.pos += n;
        Ok(&self.b[at..at + n])
    }
    fn u8(&mut self, field: &'static str) -> Result<u8, ProtoError> {
        Ok(self.field(1, field)?[0])
    }
    fn u16(&mut self, field: &'static str) -> Result<u16, ProtoError> {
        let b = self.field(2, field)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u64(&mut self, field: &'static str) -> Result<u64, ProtoError> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.field(8, field)?);
        Ok(u64::from_be_bytes(b))
    }
    fn addr(&mut self, field: &'static str) -> Result<SocketAddr, ProtoError> {
        let fam_at = self.at();
        let ip: IpAddr = match self.u8(field)? {
            4 => {
                let o = self.field(4, field)?;
                Ipv4Addr::new(o[0], o[1], o[2], o[3]).into()
            }
            6 => {
                let mut a = [0u8; 16];
                a.copy_from_slice(self.field(16, field)?);
                Ipv6Addr::from(a).into()
            }
            f => {
                return Err(ProtoError::Invalid {
                    what: field,
                    value: f.into(),
                    offset: fam_at,
                })
            }
        };
        if ip.is_unspecified() || ip.is_multicast() {
            return Err(ProtoError::Invalid {
                what: field,
                value: 0,
                offset: fam_at + 1,
            });
        }
        let port_at = self.at();
        let port = self.u16(field)?;
        if port == 0 {
            return Err(ProtoError::Invalid {
                what: field,
                value: 0,
                offset: port_at,
            });
        }
        Ok(SocketAddr::new(ip, port))
    }
    fn end(&self) -> Result<(), ProtoError> {
        let extra = self.b.len() - self.pos;
        if extra != 0 {
            return Err(ProtoError::Trailing {
                what: self.what,
                extra,
                offset: self.at(),
            });
        }
        Ok(())
    }
}

fn parse_frame(frame: Bytes, at: u64, max_prefix: usize) -> Result<Message, ProtoError> {
    let ty = frame[LEN_PREFIX];
    check_type_len(ty, frame.len() - LEN_PREFIX - 1, at)?;
    let base = at + LEN_PREFIX as u64 + 1;
    let mut b = Body {
        b: frame.slice(LEN_PREFIX + 1..),
        pos: 0,
        base,
        what: "",
    };
    let msg = match ty {
        TYPE_HELLO => {
            b.what = "Hello";
            let version = b.u16("Hello version")?;
            let role_at = b.at();
            let role = match b.u8("Hello role")? {
                ROLE_TCPCOPY => Role::Tcpcopy,
                ROLE_INTERCEPT => Role::Intercept,
                r => {
                    return Err(ProtoError::Invalid {
                        what: "Hello role",
                        value: r.into(),
                        offset: role_at,
                    })
                }
            };
            let instance = b.u64("Hello instance")?;
            if version > VERSION {
                b.pos = b.b.len(); // a later version's fields: the receiver decides on the version
            }
            Message::Hello {
                version,
                role,
                instance,
            }
        }
        TYPE_SESSION_ADD | TYPE_SESSION_REMOVE => {
            let add = ty == TYPE_SESSION_ADD;
            b.what = if add { "SessionAdd" } else { "SessionRemove" };
            let client = b.addr("session client address")?;
            let target_at = b.at();
            let target = b.addr("session target address")?;
            if client.is_ipv4() != target.is_ipv4() {
                return Err(ProtoError::Invalid {
                    what: "session target family (differs from client)",
                    value: if target.is_ipv4() { 4 } else { 6 },
                    offset: target_at,
                });
            }
            if add {
                Message::SessionAdd { client, target }
            } else {
                Message::SessionRemove { client, target }
            }
        }
        TYPE_RESPONSES => {
            b.what = "Responses";
            let count_at = b.at();
            let count = usize::from(b.u16("Responses count")?);
            if count == 0 {
                return Err(ProtoError::Invalid {
                    what: "Responses count",
                    value: 0,
                    offset: count_at,
                });
            }
            // Each entry takes at least 2 + 40 bytes: reject an impossible count before allocating.
            if count * 42 > b.b.len() - b.pos {
                return Err(ProtoError::Invalid {
                    what: "Responses count",
                    value: count as u64,
                    offset: count_at,
                });
            }
            let mut headers = Vec::with_capacity(count);
            for index in 0..count {
                let len_at = b.at();
                let len = usize::from(b.u16("Responses entry length")?);
                if len > MAX_HEADER_LEN {
                    return Err(ProtoError::BadHeader {
                        index,
                        reason: "longer than the maximum header length",
                        offset: len_at,
                    });
                }
                let h_at = b.at();
                let h = b.take(len, "Responses entry")?;
                check_header(&h, index, h_at)?;
                headers.push(h);
            }
            Message::Responses { headers }
        }
        TYPE_OPTIONS => {
            b.what = "Options";
            let p_at = b.at();
            let response_prefix = b.u16("Options response prefix")?;
            if usize::from(response_prefix) > MAX_PREFIX {
                return Err(ProtoError::Invalid {
                    what: "Options response prefix",
                    value: response_prefix.into(),
                    offset: p_at,
                });
            }
            Message::Options { response_prefix }
        }
        TYPE_PREFIXED => {
            b.what = "PrefixedResponses";
            let count_at = b.at();
            let count = usize::from(b.u16("PrefixedResponses count")?);
            // Each entry takes at least 4 + 40 bytes: reject an impossible count before
            // allocating.
            if count == 0 || count * 44 > b.b.len() - b.pos {
                return Err(ProtoError::Invalid {
                    what: "PrefixedResponses count",
                    value: count as u64,
                    offset: count_at,
                });
            }
            let mut entries = Vec::with_capacity(count);
            for index in 0..count {
                let len_at = b.at();
                let hlen = usize::from(b.u16("PrefixedResponses header length")?);
                let plen_at = b.at();
                let plen = usize::from(b.u16("PrefixedResponses prefix length")?);
                if hlen > MAX_HEADER_LEN {
                    return Err(ProtoError::BadHeader {
                        index,
                        reason: "longer than the maximum header length",
                        offset: len_at,
                    });
                }
                let h_at = b.at();
                let header = b.take(hlen, "PrefixedResponses header")?;
                check_header(&header, index, h_at)?;
                check_prefix(&header, plen, max_prefix, index, plen_at)?;
                let prefix = b.take(plen, "PrefixedResponses prefix")?;
                entries.push(PrefixedResponse { header, prefix });
            }
            Message::PrefixedResponses { entries }
        }
        TYPE_PING => Message::Ping,
        TYPE_PONG => Message::Pong,
        _ => unreachable!("type checked by check_type_len"),
    };
    b.end()?;
    Ok(msg)
}
