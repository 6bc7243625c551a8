//! The validity rules of the protocol that both the encoder and the decoder apply: a session's
//! two addresses, and a response entry's IP + TCP header.
//!
//! Pure checks over values and bytes; they must never allocate or panic on any input.

use std::net::{IpAddr, SocketAddr};

use super::{ProtoError, MAX_HEADER_LEN, MAX_PREFIX};

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
    if h.len() > MAX_HEADER_LEN {
        return Err(ProtoError::BadHeader {
            index,
            reason: "longer than the maximum header length",
            offset: base + MAX_HEADER_LEN as u64,
        });
    }
    let (tcp_at, header_len, _) = layout(h, index, base)?;
    if header_len != h.len() {
        return Err(ProtoError::BadHeader {
            index,
            reason: "length differs from IP + TCP header lengths",
            offset: base + tcp_at as u64 + 12,
        });
    }
    Ok(tcp_at)
}

/// Splits a captured response (IP + TCP header, then as much of the payload as was captured)
/// into its header and its payload bytes, with the checks of [`check_header`] on the header.
/// The payload held may be shorter than the segment's (the capture's snap length), never
/// longer: bytes past what the IP header gives (Ethernet padding) are cut off.
pub fn split_response(entry: &[u8]) -> Result<(&[u8], &[u8]), ProtoError> {
    let r = CheckedResponse::new(entry)?;
    Ok((r.header, r.payload))
}

/// A captured response checked once (as [`split_response`] does), for code that needs its
/// parts more than once per response: intercept finds the session by it and batches it.
#[derive(Debug, Clone, Copy)]
pub struct CheckedResponse<'a> {
    header: &'a [u8],
    payload: &'a [u8],
    tcp_at: usize,
}

impl<'a> CheckedResponse<'a> {
    /// Checks `entry` as [`split_response`] does.
    pub fn new(entry: &'a [u8]) -> Result<Self, ProtoError> {
        let (tcp_at, header_len, payload_len) = layout(entry, 0, 0)?;
        let end = entry.len().min(header_len + payload_len);
        Ok(CheckedResponse {
            header: &entry[..header_len],
            payload: &entry[header_len..end],
            tcp_at,
        })
    }

    /// The IP + TCP header (a valid one, exactly as long as its length fields say).
    pub fn header(&self) -> &'a [u8] {
        self.header
    }

    /// The payload bytes held (possibly fewer than the segment carried).
    pub fn payload(&self) -> &'a [u8] {
        self.payload
    }

    /// The offset of the TCP header in [`CheckedResponse::header`].
    pub fn tcp_at(&self) -> usize {
        self.tcp_at
    }

    /// The TCP header as a view (checked with the rest: its fields are there).
    pub fn tcp(&self) -> crate::wire::TcpPacket<&'a [u8]> {
        crate::wire::TcpPacket::new_prechecked(&self.header[self.tcp_at..])
    }

    /// The IP header's source and destination (checked with the rest: the header is whole).
    pub fn addrs(&self) -> (IpAddr, IpAddr) {
        if self.header[0] >> 4 == 4 {
            let (s, d) = crate::wire::layout_addrs_v4(self.header);
            (s.into(), d.into())
        } else {
            let (s, d) = crate::wire::layout_addrs_v6(self.header);
            (s.into(), d.into())
        }
    }
}

/// Checks a `PrefixedResponses` entry's prefix length against the agreed `max` and the payload
/// length its header gives; `at` is the offset of the prefix length in errors.
pub(super) fn check_prefix(
    header: &[u8],
    prefix_len: usize,
    max: usize,
    index: usize,
    at: u64,
) -> Result<(), ProtoError> {
    let payload = layout(header, index, 0).map_or(0, |(_, _, p)| p);
    let allowed = max.min(MAX_PREFIX).min(payload);
    if prefix_len > allowed {
        return Err(ProtoError::PrefixTooLong {
            index,
            len: prefix_len,
            max: allowed,
            offset: at,
        });
    }
    Ok(())
}

/// The offset of the TCP header, the IP + TCP header length and the payload length the IP
/// header gives, for `h` holding at least one complete IPv4/IPv6 + TCP header.
fn layout(h: &[u8], index: usize, base: u64) -> Result<(usize, usize, usize), ProtoError> {
    let bad = |reason: &'static str, at: usize| ProtoError::BadHeader {
        index,
        reason,
        offset: base + at as u64,
    };
    if h.len() > MAX_HEADER_LEN + MAX_PREFIX {
        return Err(bad("longer than the maximum header length", MAX_HEADER_LEN));
    }
    let Some(&first) = h.first() else {
        return Err(bad("empty", 0));
    };
    let (tcp_at, ip_total) = match first >> 4 {
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
            (ihl, total)
        }
        6 => {
            if h.len() < 40 {
                return Err(bad("IPv6 header truncated", h.len()));
            }
            let payload = usize::from(u16::from_be_bytes([h[4], h[5]]));
            let mut next = h[6];
            let mut at = 40;
            loop {
                match next {
                    6 => break (at, payload + 40),
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
    let header_len = tcp_at + doff;
    if header_len > h.len() || header_len > MAX_HEADER_LEN {
        return Err(bad(
            "length differs from IP + TCP header lengths",
            tcp_at + 12,
        ));
    }
    if ip_total < header_len {
        return Err(if first >> 4 == 4 {
            bad("IPv4 total length shorter than the headers", 2)
        } else {
            bad("IPv6 payload length shorter than the headers", 4)
        });
    }
    Ok((tcp_at, header_len, ip_total - header_len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::TcpFlags;

    /// An IPv6 response with a hop-by-hop header before TCP: the view starts at the TCP header.
    #[test]
    fn the_tcp_view_starts_past_ipv6_extension_headers() {
        let mut h = vec![0u8; 40 + 8 + 20];
        h[0] = 0x60;
        h[4..6].copy_from_slice(&(8u16 + 20).to_be_bytes());
        h[6] = 0; // hop-by-hop
        h[40] = 6; // then TCP
        h[48..50].copy_from_slice(&8080u16.to_be_bytes());
        h[50..52].copy_from_slice(&40000u16.to_be_bytes());
        h[60] = 5 << 4;
        h[61] = 0x12; // SYN + ACK
        let r = CheckedResponse::new(&h).unwrap();
        assert_eq!(r.tcp_at(), 48);
        let tcp = r.tcp();
        assert_eq!((tcp.src_port(), tcp.dst_port()), (8080, 40000));
        assert!(tcp.flags().contains(TcpFlags::SYN) && tcp.flags().contains(TcpFlags::ACK));
        h[8..24].copy_from_slice(
            &"2001:db8::2"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets(),
        );
        h[24..40].copy_from_slice(
            &"2001:db8::1"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets(),
        );
        let r = CheckedResponse::new(&h).unwrap();
        assert_eq!(
            r.addrs(),
            (
                "2001:db8::2".parse().unwrap(),
                "2001:db8::1".parse().unwrap()
            )
        );
    }

    /// An IPv4 response with options: the addresses come from the fixed header.
    #[test]
    fn ipv4_addresses_and_ports_of_a_response_with_options() {
        let mut h = vec![0u8; 24 + 20];
        h[0] = 0x46; // IHL 6: one word of options
        h[2..4].copy_from_slice(&44u16.to_be_bytes());
        h[9] = 6;
        h[12..16].copy_from_slice(&[198, 18, 1, 2]);
        h[16..20].copy_from_slice(&[198, 18, 10, 2]);
        h[24..26].copy_from_slice(&6380u16.to_be_bytes());
        h[26..28].copy_from_slice(&40000u16.to_be_bytes());
        h[36] = 5 << 4;
        h[37] = 0x10; // ACK
        let r = CheckedResponse::new(&h).unwrap();
        assert_eq!(r.tcp_at(), 24);
        assert_eq!(
            r.addrs(),
            (
                "198.18.1.2".parse().unwrap(),
                "198.18.10.2".parse().unwrap()
            )
        );
        assert_eq!((r.tcp().src_port(), r.tcp().dst_port()), (6380, 40000));
    }
}
