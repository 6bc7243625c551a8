//! Flow keys: the TCP/UDP 4-tuple that names a session, in either direction.
//!
//! Pure values; no I/O.

use std::hash::Hasher;
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

/// Feeds a socket address to a hasher as packed words: one for IPv4 (address and port), three
/// for IPv6. For map keys hashed on every packet or response: `derive(Hash)` on `SocketAddr`
/// writes the variant, the octets with their length and the port separately, six to ten
/// hasher rounds per address. Equal addresses feed equal words, so a key whose `Hash` uses this
/// agrees with its derived `Eq` (an IPv6 address's flow label and scope are left out: keys
/// that differ only there collide, which a map resolves).
pub fn hash_socket_addr<H: Hasher>(a: &SocketAddr, h: &mut H) {
    match a {
        SocketAddr::V4(a) => {
            h.write_u64(u64::from(a.ip().to_bits()) << 16 | u64::from(a.port()));
        }
        SocketAddr::V6(a) => {
            let ip = a.ip().to_bits();
            h.write_u64(ip as u64);
            h.write_u64((ip >> 64) as u64);
            h.write_u64(1 << 32 | u64::from(a.port()));
        }
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

    /// What a hasher was fed, word by word.
    #[derive(Default)]
    struct Words(Vec<u64>);

    impl Hasher for Words {
        fn finish(&self) -> u64 {
            0
        }
        fn write(&mut self, _: &[u8]) {
            unreachable!("hash_socket_addr feeds whole words only")
        }
        fn write_u64(&mut self, i: u64) {
            self.0.push(i);
        }
    }

    fn words(a: &str) -> Vec<u64> {
        let mut h = Words::default();
        hash_socket_addr(&a.parse().unwrap(), &mut h);
        h.0
    }

    #[test]
    fn socket_addrs_are_fed_as_packed_words() {
        assert_eq!(words("198.18.0.1:80"), vec![0xc612_0001_0050]);
        assert_ne!(words("198.18.0.1:80"), words("198.18.0.1:81"));
        assert_eq!(
            words("[2001:db8::1]:443"),
            vec![1, 0x2001_0db8_0000_0000, 1 << 32 | 443]
        );
        // An IPv4-mapped IPv6 address is another address: its words differ from the IPv4 one.
        assert_ne!(words("[::ffff:198.18.0.1]:80"), words("198.18.0.1:80"));
    }
}
