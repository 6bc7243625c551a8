//! Which path a packet for the target takes: the packet socket (a whole Ethernet frame to the
//! next hop's MAC, where a super-segment goes out in one piece) or the raw IP socket (the kernel
//! routes and resolves). The answers come from the kernel's routing and neighbour tables (see
//! `netlink`) and are cached per destination for a short while, so a moved neighbour or route is
//! followed within a second and a lookup costs nothing per packet.
//!
//! The miss path: while the next hop has no usable neighbour entry the raw socket carries the
//! packets, which makes the kernel resolve the neighbour as for any routed packet; the lookup is
//! asked again shortly after. No system call here: the lookups sit behind [`Lookup`].

use std::io;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// How long a found next hop is used before it is looked up again.
const HIT_TTL: Duration = Duration::from_secs(1);
/// How long a destination without a resolved neighbour stays on the raw path before the next
/// look (the raw packets sent meanwhile make the kernel resolve it).
const MISS_TTL: Duration = Duration::from_millis(50);
/// How long a destination the packet path cannot serve (loopback, tunnel, local address, a
/// failed lookup) stays on the raw path before the next look.
const NO_PATH_TTL: Duration = Duration::from_secs(5);
/// Destinations remembered (the targets of `-x`, or their gateways: a handful).
const MAX_ENTRIES: usize = 64;

/// What the kernel's tables say about reaching `dst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolved {
    /// An Ethernet device and the next hop's MAC from a usable neighbour entry.
    Ether {
        /// Output device.
        ifindex: u32,
        /// The device's own link address.
        src_mac: [u8; 6],
        /// Next hop's link address.
        mac: [u8; 6],
    },
    /// An Ethernet next hop whose neighbour entry is missing, incomplete or failed.
    Unresolved,
    /// A route the packet path does not serve: a local address, loopback, a device without
    /// Ethernet headers (tun, ip tunnels), no route.
    NotEthernet,
}

/// The kernel's routing and neighbour lookup.
pub trait Lookup {
    /// Looks up how `dst` is reached now.
    fn lookup(&mut self, dst: IpAddr) -> io::Result<Resolved>;
}

/// The path chosen for one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hop {
    /// The packet socket, this device, from and to these MACs.
    Packet {
        /// Output device.
        ifindex: u32,
        /// The device's own link address.
        src_mac: [u8; 6],
        /// Next hop's link address.
        mac: [u8; 6],
    },
    /// The raw IP socket.
    Raw,
}

/// Counts of the lookups, for the summary.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct HopStats {
    /// Lookups made (cache misses and expiries).
    pub lookups: u64,
    /// Lookups that found no usable neighbour entry (the raw path resolves it).
    pub unresolved: u64,
    /// Lookups that failed or found a path the packet socket cannot serve.
    pub no_path: u64,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    dst: IpAddr,
    hop: Hop,
    until: Instant,
}

/// A small cache of next hops in front of a [`Lookup`].
#[derive(Debug)]
pub struct NextHops<L> {
    lookup: L,
    entries: Vec<Entry>,
    /// Lookup counters.
    pub stats: HopStats,
}

impl<L: Lookup> NextHops<L> {
    /// An empty cache over `lookup`.
    pub fn new(lookup: L) -> NextHops<L> {
        NextHops {
            lookup,
            entries: Vec::new(),
            stats: HopStats::default(),
        }
    }

    /// The path for a packet to `dst` at `now`.
    pub fn hop(&mut self, dst: IpAddr, now: Instant) -> Hop {
        if let Some(e) = self.entries.iter().find(|e| e.dst == dst) {
            if now < e.until {
                return e.hop;
            }
        }
        self.stats.lookups += 1;
        let (hop, ttl) = match self.lookup.lookup(dst) {
            Ok(Resolved::Ether {
                ifindex,
                src_mac,
                mac,
            }) => (
                Hop::Packet {
                    ifindex,
                    src_mac,
                    mac,
                },
                HIT_TTL,
            ),
            Ok(Resolved::Unresolved) => {
                self.stats.unresolved += 1;
                (Hop::Raw, MISS_TTL)
            }
            Ok(Resolved::NotEthernet) | Err(_) => {
                self.stats.no_path += 1;
                (Hop::Raw, NO_PATH_TTL)
            }
        };
        let entry = Entry {
            dst,
            hop,
            until: now + ttl,
        };
        match self.entries.iter_mut().find(|e| e.dst == dst) {
            Some(e) => *e = entry,
            None => {
                if self.entries.len() >= MAX_ENTRIES {
                    self.entries.retain(|e| now < e.until);
                    if self.entries.len() >= MAX_ENTRIES {
                        self.entries.remove(0);
                    }
                }
                self.entries.push(entry);
            }
        }
        hop
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// Answers from a script, counting the calls.
    struct Script(VecDeque<io::Result<Resolved>>, usize);

    impl Lookup for Script {
        fn lookup(&mut self, _dst: IpAddr) -> io::Result<Resolved> {
            self.1 += 1;
            self.0.pop_front().unwrap_or(Ok(Resolved::NotEthernet))
        }
    }

    const MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const SRC: [u8; 6] = [2, 0, 0, 0, 0, 2];
    const DST: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(198, 18, 1, 2));

    fn hops(answers: Vec<io::Result<Resolved>>) -> NextHops<Script> {
        NextHops::new(Script(answers.into(), 0))
    }

    #[test]
    fn a_found_neighbour_is_cached_then_looked_up_again() {
        let t0 = Instant::now();
        let ether = Resolved::Ether {
            ifindex: 3,
            src_mac: SRC,
            mac: MAC,
        };
        let mut h = hops(vec![Ok(ether), Ok(ether)]);
        let want = Hop::Packet {
            ifindex: 3,
            src_mac: SRC,
            mac: MAC,
        };
        assert_eq!(h.hop(DST, t0), want);
        for k in 0..100 {
            assert_eq!(h.hop(DST, t0 + Duration::from_millis(k)), want);
        }
        assert_eq!(h.lookup.1, 1, "one lookup per second, not per packet");
        assert_eq!(h.hop(DST, t0 + HIT_TTL), want);
        assert_eq!(h.lookup.1, 2);
    }

    #[test]
    fn a_miss_takes_the_raw_path_until_the_kernel_resolved_it() {
        let t0 = Instant::now();
        let mut h = hops(vec![
            Ok(Resolved::Unresolved),
            Ok(Resolved::Unresolved),
            Ok(Resolved::Ether {
                ifindex: 3,
                src_mac: SRC,
                mac: MAC,
            }),
        ]);
        assert_eq!(h.hop(DST, t0), Hop::Raw);
        // Within the miss interval: no new lookup, still raw (those packets resolve it).
        assert_eq!(h.hop(DST, t0 + MISS_TTL / 2), Hop::Raw);
        assert_eq!(h.lookup.1, 1);
        assert_eq!(h.hop(DST, t0 + MISS_TTL), Hop::Raw);
        let later = t0 + MISS_TTL * 2;
        assert_eq!(
            h.hop(DST, later),
            Hop::Packet {
                ifindex: 3,
                src_mac: SRC,
                mac: MAC
            }
        );
        assert_eq!(h.stats.unresolved, 2);
        assert_eq!(h.stats.lookups, 3);
    }

    #[test]
    fn a_path_the_packet_socket_cannot_serve_stays_raw_and_is_rechecked() {
        let t0 = Instant::now();
        let mut h = hops(vec![
            Ok(Resolved::NotEthernet),
            Err(io::Error::other("netlink closed")),
            Ok(Resolved::Ether {
                ifindex: 9,
                src_mac: SRC,
                mac: MAC,
            }),
        ]);
        assert_eq!(h.hop(DST, t0), Hop::Raw);
        assert_eq!(
            h.hop(DST, t0 + NO_PATH_TTL - Duration::from_millis(1)),
            Hop::Raw
        );
        assert_eq!(h.hop(DST, t0 + NO_PATH_TTL), Hop::Raw); // the failed lookup
        assert_eq!(
            h.hop(DST, t0 + NO_PATH_TTL * 2),
            Hop::Packet {
                ifindex: 9,
                src_mac: SRC,
                mac: MAC
            }
        );
        assert_eq!(h.stats.no_path, 2);
    }

    #[test]
    fn the_cache_stays_small() {
        let t0 = Instant::now();
        let mut h = hops(vec![]);
        for k in 0..1000u32 {
            let dst = IpAddr::V4(std::net::Ipv4Addr::from(0xc612_0000 + k));
            h.hop(dst, t0);
        }
        assert!(h.entries.len() <= MAX_ENTRIES);
    }
}
