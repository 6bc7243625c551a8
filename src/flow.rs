//! Flow keys: the TCP/UDP 4-tuple that names a session, in either direction.
//!
//! Pure values; no I/O.

use std::net::{IpAddr, SocketAddr};

/// A directed 4-tuple: source address and port, destination address and port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey {
    /// Source (for a client→server flow: the client).
    pub src: SocketAddr,
    /// Destination (for a client→server flow: the server).
    pub dst: SocketAddr,
}

impl FlowKey {
    /// Builds a key from addresses and ports.
    pub fn new(src_ip: IpAddr, src_port: u16, dst_ip: IpAddr, dst_port: u16) -> Self {
        FlowKey {
            src: SocketAddr::new(src_ip, src_port),
            dst: SocketAddr::new(dst_ip, dst_port),
        }
    }

    /// The same flow seen from the other direction.
    pub fn reversed(self) -> Self {
        FlowKey {
            src: self.dst,
            dst: self.src,
        }
    }

    /// A stable 64-bit hash of the source address and port (FNV-1a), used for `-r` sampling
    /// so that the same client lands in the same bucket on every run and every host.
    pub fn src_hash(&self) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut feed = |b: u8| {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        };
        match self.src.ip() {
            IpAddr::V4(a) => a.octets().iter().for_each(|b| feed(*b)),
            IpAddr::V6(a) => a.octets().iter().for_each(|b| feed(*b)),
        }
        self.src.port().to_be_bytes().iter().for_each(|b| feed(*b));
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reversed_swaps_ends() {
        let k = FlowKey::new(
            "198.18.0.1".parse().unwrap(),
            40000,
            "198.18.1.1".parse().unwrap(),
            80,
        );
        assert_eq!(k.reversed().src, k.dst);
        assert_eq!(k.reversed().reversed(), k);
        assert_ne!(k.src_hash(), k.reversed().src_hash());
    }
}
