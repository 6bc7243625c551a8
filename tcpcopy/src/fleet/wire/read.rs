//! Reading the recording format: [`decode`] checks one message's header and yields its records,
//! skipping kinds this version does not know; [`fuzz_decode`] is the fuzz target's body.
//!
//! Must never log nor panic on any input (messages come from a broker others can write to).

use std::net::{Ipv4Addr, Ipv6Addr};

use super::*;

struct Cursor<'a> {
    buf: &'a [u8],
    off: usize,
    base: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], FormatError> {
        if self.buf.len() - self.off < n {
            return Err(FormatError::Truncated {
                offset: self.base + self.off,
                what,
            });
        }
        let s = &self.buf[self.off..self.off + n];
        self.off += n;
        Ok(s)
    }
    fn u8(&mut self, what: &'static str) -> Result<u8, FormatError> {
        Ok(self.take(1, what)?[0])
    }
    fn u16(&mut self, what: &'static str) -> Result<u16, FormatError> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, FormatError> {
        let b = self.take(4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self, what: &'static str) -> Result<u64, FormatError> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }
    fn bad(&self, what: &'static str) -> FormatError {
        FormatError::Bad {
            offset: self.base + self.off,
            what,
        }
    }
    fn flag(&mut self, what: &'static str) -> Result<bool, FormatError> {
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(self.bad(what)),
        }
    }
    fn dir(&mut self) -> Result<Dir, FormatError> {
        match self.u8("side")? {
            0 => Ok(Dir::Client),
            1 => Ok(Dir::Server),
            _ => Err(self.bad("side")),
        }
    }
    fn addr(&mut self) -> Result<SocketAddr, FormatError> {
        let ip = match self.u8("address family")? {
            4 => {
                let b = self.take(4, "IPv4 address")?;
                IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
            }
            6 => {
                let mut a = [0u8; 16];
                a.copy_from_slice(self.take(16, "IPv6 address")?);
                IpAddr::V6(Ipv6Addr::from(a))
            }
            _ => return Err(self.bad("address family")),
        };
        Ok(SocketAddr::new(ip, self.u16("port")?))
    }
}

/// Decodes one message. Payload bytes are copied out of `msg` only as [`Bytes`] slices of it.
pub fn decode(msg: &Bytes) -> Result<Part, FormatError> {
    if msg.len() < MAGIC.len() || msg[..4] != MAGIC {
        return Err(FormatError::Foreign);
    }
    let mut c = Cursor {
        buf: msg,
        off: 4,
        base: 0,
    };
    let version = c.u8("version")?;
    if version != VERSION {
        return Err(FormatError::Version(version));
    }
    let flags = c.u8("flags")?;
    if flags & !1 != 0 {
        return Err(FormatError::Bad {
            offset: 5,
            what: "message flags",
        });
    }
    let session = c.u64("session id")?;
    let part = c.u32("part")?;
    let mut records = Vec::new();
    let mut unknown_records = 0;
    while c.off < msg.len() {
        let kind = c.u8("record kind")?;
        let len = c.u32("record length")? as usize;
        let start = c.off;
        let body = c.take(len, "record body")?;
        let mut r = Cursor {
            buf: body,
            off: 0,
            base: start,
        };
        let rec = match kind {
            OPEN => {
                let client = r.addr()?;
                let server = r.addr()?;
                let ts = r.u64("time")?;
                let syn_seen = r.flag("syn flag")?;
                let n = r.u8("host length")? as usize;
                let host = std::str::from_utf8(r.take(n, "host")?)
                    .map_err(|_| r.bad("host (not UTF-8)"))?
                    .to_string();
                FleetRecord::Open {
                    client,
                    server,
                    ts,
                    syn_seen,
                    host,
                }
            }
            DATA => {
                let dir = r.dir()?;
                let ts = r.u64("time")?;
                let f = r.u8("data flags")?;
                if f & !3 != 0 {
                    return Err(r.bad("data flags"));
                }
                let bytes = msg.slice(start + r.off..start + len);
                r.off = len;
                FleetRecord::Data {
                    dir,
                    ts,
                    new_message: f & 1 != 0,
                    server_seen: f & 2 != 0,
                    bytes,
                }
            }
            FIN => FleetRecord::Fin {
                dir: r.dir()?,
                ts: r.u64("time")?,
            },
            CLOSE => FleetRecord::Close {
                ts: r.u64("time")?,
                reason: CloseReason::from_u8(r.u8("close reason")?),
                partial: r.flag("partial flag")?,
            },
            _ => {
                unknown_records += 1;
                continue;
            }
        };
        if r.off != len {
            return Err(r.bad("record length (bytes left over)"));
        }
        records.push(rec);
    }
    Ok(Part {
        session,
        part,
        last: flags & 1 != 0,
        records,
        unknown_records,
    })
}

/// The fuzz target's body (`fuzz/fuzz_targets/fleet_decoder.rs`): decoding never panics, and
/// what decodes re-encodes (through [`SessionWriter`]) to records that decode the same.
pub fn fuzz_decode(data: &[u8]) {
    let msg = Bytes::copy_from_slice(data);
    let Ok(part) = decode(&msg) else {
        return;
    };
    let mut w = SessionWriter::new(part.session, 1 << 20);
    for r in &part.records {
        w.push(r);
    }
    let again: Vec<FleetRecord> = w
        .finish()
        .into_iter()
        .flat_map(|m| {
            decode(&Bytes::from(m))
                .map(|p| p.records)
                .unwrap_or_default()
        })
        .collect();
    assert_eq!(merge_data(again), merge_data(part.records));
}
