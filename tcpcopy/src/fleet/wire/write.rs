//! Writing the recording format: [`SessionWriter`] cuts one session into messages of at most
//! the broker's payload, records whole while they fit, DATA split where it must.
//!
//! Must never log (the records hold production payloads) nor reorder records.

use std::net::{IpAddr, SocketAddr};

use super::*;

fn put_addr(out: &mut Vec<u8>, a: SocketAddr) {
    match a.ip() {
        IpAddr::V4(ip) => {
            out.push(4);
            out.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            out.push(6);
            out.extend_from_slice(&ip.octets());
        }
    }
    out.extend_from_slice(&a.port().to_be_bytes());
}

fn dir_u8(d: Dir) -> u8 {
    match d {
        Dir::Client => 0,
        Dir::Server => 1,
    }
}

/// Cuts one session into messages of at most `max_payload` bytes: records go in whole while
/// they fit; DATA larger than the room left is split into several DATA records (only the first
/// keeps "new request"). Feed it in session order, then [`SessionWriter::finish`].
#[derive(Debug)]
pub struct SessionWriter {
    session: u64,
    max_payload: usize,
    cur: Vec<u8>,
    done: Vec<Vec<u8>>,
    bytes: usize,
}

impl SessionWriter {
    /// A writer for session `session`; `max_payload` is the broker's limit (at least
    /// [`MIN_PAYLOAD`] is used).
    pub fn new(session: u64, max_payload: usize) -> Self {
        let mut w = SessionWriter {
            session,
            max_payload: max_payload.max(MIN_PAYLOAD),
            cur: Vec::new(),
            done: Vec::new(),
            bytes: 0,
        };
        w.start_part();
        w
    }

    /// Bytes encoded so far (all parts).
    pub fn encoded_len(&self) -> usize {
        self.bytes + self.cur.len()
    }

    fn start_part(&mut self) {
        self.cur.clear();
        self.cur.extend_from_slice(&MAGIC);
        self.cur.push(VERSION);
        self.cur.push(0);
        self.cur.extend_from_slice(&self.session.to_be_bytes());
        self.cur
            .extend_from_slice(&(self.done.len() as u32).to_be_bytes());
    }

    fn room(&self) -> usize {
        self.max_payload.saturating_sub(self.cur.len())
    }

    fn seal(&mut self) {
        let part = std::mem::take(&mut self.cur);
        self.bytes += part.len();
        self.done.push(part);
        self.start_part();
    }

    fn put(&mut self, kind: u8, body: &[u8]) {
        if RECORD_HEADER_LEN + body.len() > self.room() {
            self.seal();
        }
        self.cur.push(kind);
        self.cur
            .extend_from_slice(&(body.len() as u32).to_be_bytes());
        self.cur.extend_from_slice(body);
    }

    /// Adds a record.
    pub fn push(&mut self, rec: &FleetRecord) {
        let mut body = Vec::with_capacity(48);
        match rec {
            FleetRecord::Open {
                client,
                server,
                ts,
                syn_seen,
                host,
            } => {
                put_addr(&mut body, *client);
                put_addr(&mut body, *server);
                body.extend_from_slice(&ts.to_be_bytes());
                body.push(u8::from(*syn_seen));
                // Cut at a character boundary within 255 bytes.
                let mut n = host.len().min(255);
                while !host.is_char_boundary(n) {
                    n -= 1;
                }
                body.push(n as u8);
                body.extend_from_slice(&host.as_bytes()[..n]);
                self.put(OPEN, &body);
            }
            FleetRecord::Data {
                dir,
                ts,
                new_message,
                server_seen,
                bytes,
            } => {
                const FIXED: usize = 10;
                let mut rest = &bytes[..];
                let mut first = true;
                loop {
                    // Start a new part rather than write a DATA record with a tiny slice.
                    if self.room() < RECORD_HEADER_LEN + FIXED + rest.len().min(64) {
                        self.seal();
                    }
                    let take = rest.len().min(self.room() - RECORD_HEADER_LEN - FIXED);
                    body.clear();
                    body.push(dir_u8(*dir));
                    body.extend_from_slice(&ts.to_be_bytes());
                    body.push(u8::from(*new_message && first) | (u8::from(*server_seen) << 1));
                    body.extend_from_slice(&rest[..take]);
                    self.put(DATA, &body);
                    rest = &rest[take..];
                    first = false;
                    if rest.is_empty() {
                        break;
                    }
                }
            }
            FleetRecord::Fin { dir, ts } => {
                body.push(dir_u8(*dir));
                body.extend_from_slice(&ts.to_be_bytes());
                self.put(FIN, &body);
            }
            FleetRecord::Close {
                ts,
                reason,
                partial,
            } => {
                body.extend_from_slice(&ts.to_be_bytes());
                body.push(reason.to_u8());
                body.push(u8::from(*partial));
                self.put(CLOSE, &body);
            }
        }
    }

    /// The session's messages, in order; the last one is flagged last.
    pub fn finish(mut self) -> Vec<Vec<u8>> {
        if self.cur.len() > HEADER_LEN || self.done.is_empty() {
            self.cur[5] |= 1;
            let part = std::mem::take(&mut self.cur);
            self.done.push(part);
        } else if let Some(last) = self.done.last_mut() {
            last[5] |= 1;
        }
        self.done
    }
}
