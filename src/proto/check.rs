//! The validity rules of the protocol that both the encoder and the decoder apply: a session's
//! two addresses, and a response entry's IP + TCP header.
//!
//! Pure checks over values and bytes; they must never allocate or panic on any input.

use std::net::SocketAddr;

use super::{ProtoError, MAX_HEADER_LEN};

/// Checks a session's addresses: no port 0, no unspecified or multicast address, one family.
pub(super) fn check_session(
    what: &'static str,
    client: &SocketAddr,
    target: &SocketAddr,
) -> Result<(), ProtoError> {
    for a in [client, target] {
        if a.port() == 0 {
            return Err(ProtoError::Unencodable {
                what,
                reason: "port 0",
            });
        }
        if a.ip().is_unspecified() || a.ip().is_multicast() {
            return Err(ProtoError::Unencodable {
                what,
                reason: "unspecified or multicast address",
            });
        }
    }
    if client.is_ipv4() != target.is_ipv4() {
        return Err(ProtoError::Unencodable {
            what,
            reason: "client and target families differ",
        });
    }
    Ok(())
}

/// Checks that `h` is one complete IPv4/IPv6 header followed by one complete TCP header and
/// nothing else, and returns the offset of the TCP header. `base` is added to the offsets in
/// errors; `index` names the entry in them.
pub fn check_header(h: &[u8], index: usize, base: u64) -> Result<usize, ProtoError> {
    let bad = |reason: &'static str, at: usize| ProtoError::BadHeader {
        index,
        reason,
        offset: base + at as u64,
    };
    if h.len() > MAX_HEADER_LEN {
        return Err(bad("longer than the maximum header length", MAX_HEADER_LEN));
    }
    let Some(&first) = h.first() else {
        return Err(bad("empty", 0));
    };
    let tcp_at = match first >> 4 {
        4 => {
            if h.len() < 20 {
                return Err(bad("IPv4 header truncated", h.len()));
            }
            let ihl = usize::from(first & 0x0f) * 4;
            if ihl < 20 {
                return Err(bad("IPv4 header length below 20", 0));
            }
            if h[9] != 6 {
                return Err(bad("IPv4 protocol is not TCP", 9));
            }
            let frag = u16::from_be_bytes([h[6], h[7]]);
            if frag & 0x3fff != 0 {
                return Err(bad("IPv4 fragment", 6));
            }
            let total = usize::from(u16::from_be_bytes([h[2], h[3]]));
            if total < h.len() {
                return Err(bad("IPv4 total length shorter than the headers", 2));
            }
            ihl
        }
        6 => {
            if h.len() < 40 {
                return Err(bad("IPv6 header truncated", h.len()));
            }
            let payload = usize::from(u16::from_be_bytes([h[4], h[5]]));
            if payload + 40 < h.len() {
                return Err(bad("IPv6 payload length shorter than the headers", 4));
            }
            let mut next = h[6];
            let mut at = 40;
            loop {
                match next {
                    6 => break at,
                    // RFC 8200 §4: hop-by-hop, routing, destination options.
                    0 | 43 | 60 => {
                        if at + 8 > h.len() {
                            return Err(bad("IPv6 extension header truncated", at));
                        }
                        next = h[at];
                        at += (usize::from(h[at + 1]) + 1) * 8;
                    }
                    _ => return Err(bad("IPv6 next header is not TCP", at)),
                }
            }
        }
        _ => return Err(bad("IP version is neither 4 nor 6", 0)),
    };
    if tcp_at + 20 > h.len() {
        return Err(bad("TCP header truncated", tcp_at.min(h.len())));
    }
    let doff = usize::from(h[tcp_at + 12] >> 4) * 4;
    if doff < 20 {
        return Err(bad("TCP data offset below 20", tcp_at + 12));
    }
    if tcp_at + doff != h.len() {
        return Err(bad(
            "length differs from IP + TCP header lengths",
            tcp_at + 12,
        ));
    }
    Ok(tcp_at)
}
