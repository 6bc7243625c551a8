//! PROXY protocol headers (HAProxy's "The PROXY protocol", versions 1 and 2) sent first on each
//! replayed connection so that the target sees the original client address. Pure encoders.

use std::net::SocketAddr;

/// Which PROXY protocol version to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProxyVersion {
    /// Human-readable version 1 (spec §2.1).
    V1,
    /// Binary version 2 (spec §2.2).
    V2,
}

/// The 12-byte version 2 signature (spec §2.2).
pub const V2_SIGNATURE: [u8; 12] = [
    0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A,
];

/// Encodes the header announcing a connection from `client` to `server`.
pub fn encode(version: ProxyVersion, client: SocketAddr, server: SocketAddr) -> Vec<u8> {
    match version {
        ProxyVersion::V1 => encode_v1(client, server),
        ProxyVersion::V2 => encode_v2(client, server),
    }
}

/// Version 1: `PROXY TCP4|TCP6 src dst sport dport\r\n`; mixed families give `PROXY UNKNOWN\r\n`.
pub fn encode_v1(client: SocketAddr, server: SocketAddr) -> Vec<u8> {
    let fam = match (client, server) {
        (SocketAddr::V4(_), SocketAddr::V4(_)) => "TCP4",
        (SocketAddr::V6(_), SocketAddr::V6(_)) => "TCP6",
        _ => return b"PROXY UNKNOWN\r\n".to_vec(),
    };
    format!(
        "PROXY {fam} {} {} {} {}\r\n",
        client.ip(),
        server.ip(),
        client.port(),
        server.port()
    )
    .into_bytes()
}

/// Version 2: signature, ver/cmd 0x21 (v2, PROXY), family 0x11 (TCP/IPv4) or 0x21 (TCP/IPv6),
/// address block length, then addresses and ports in network order. Mixed families: LOCAL.
pub fn encode_v2(client: SocketAddr, server: SocketAddr) -> Vec<u8> {
    let mut out = V2_SIGNATURE.to_vec();
    match (client, server) {
        (SocketAddr::V4(c), SocketAddr::V4(s)) => {
            out.extend_from_slice(&[0x21, 0x11, 0, 12]);
            out.extend_from_slice(&c.ip().octets());
            out.extend_from_slice(&s.ip().octets());
            out.extend_from_slice(&c.port().to_be_bytes());
            out.extend_from_slice(&s.port().to_be_bytes());
        }
        (SocketAddr::V6(c), SocketAddr::V6(s)) => {
            out.extend_from_slice(&[0x21, 0x21, 0, 36]);
            out.extend_from_slice(&c.ip().octets());
            out.extend_from_slice(&s.ip().octets());
            out.extend_from_slice(&c.port().to_be_bytes());
            out.extend_from_slice(&s.port().to_be_bytes());
        }
        // LOCAL command, AF_UNSPEC: the receiver uses the real connection addresses.
        _ => out.extend_from_slice(&[0x20, 0x00, 0, 0]),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use hex_literal::hex;

    #[test]
    fn v1_matches_spec_examples() {
        let c = "198.18.0.1:56324".parse().unwrap();
        let s = "198.18.1.1:443".parse().unwrap();
        assert_eq!(
            encode_v1(c, s),
            b"PROXY TCP4 198.18.0.1 198.18.1.1 56324 443\r\n"
        );
        let c6 = "[2001:db8::1]:1000".parse().unwrap();
        let s6 = "[2001:db8::2]:80".parse().unwrap();
        assert_eq!(
            encode_v1(c6, s6),
            b"PROXY TCP6 2001:db8::1 2001:db8::2 1000 80\r\n"
        );
        assert_eq!(encode_v1(c, s6), b"PROXY UNKNOWN\r\n");
        // Spec §2.1: at most 107 bytes.
        let big = "[2001:db8:ffff:ffff:ffff:ffff:ffff:ffff]:65535"
            .parse()
            .unwrap();
        assert!(encode_v1(big, big).len() <= 107);
    }

    #[test]
    fn v2_bytes() {
        let c = "198.18.0.1:56324".parse().unwrap();
        let s = "198.18.1.1:443".parse().unwrap();
        assert_eq!(
            encode_v2(c, s),
            hex!("0d0a0d0a000d0a515549540a 21 11 000c c6120001 c6120101 dc04 01bb").to_vec()
        );
        let c6 = "[2001:db8::1]:1000".parse().unwrap();
        let s6 = "[2001:db8::2]:80".parse().unwrap();
        let v6 = encode_v2(c6, s6);
        assert_eq!(v6.len(), 16 + 36);
        assert_eq!(&v6[12..16], &[0x21, 0x21, 0x00, 0x24]);
        assert_eq!(&v6[48..52], &hex!("03e8 0050"));
        assert_eq!(&encode_v2(c, s6)[12..16], &[0x20, 0x00, 0, 0]);
    }
}
