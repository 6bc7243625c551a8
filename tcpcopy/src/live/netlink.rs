//! The kernel's answer to "how does a packet to this address leave?", asked over rtnetlink
//! (`netlink-sys` for the socket, `netlink-packet-route` for the messages): the route
//! (`RTM_GETROUTE`, as `ip route get`), the output device's link type (`RTM_GETLINK`) and the
//! next hop's neighbour entry (`RTM_GETNEIGH` for one address). Requests are answered by the
//! kernel before `send` returns; a receive timeout bounds the wait anyway.

use super::nexthop::{Lookup, Resolved};
use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_REQUEST};
use netlink_packet_route::link::{LinkAttribute, LinkLayerType, LinkMessage};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage, RouteType};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::time::Duration;

/// The longest a lookup waits for the kernel's answer.
const REPLY_TIMEOUT: Duration = Duration::from_millis(200);

/// A route-netlink socket for lookups.
pub struct Netlink {
    sock: Socket,
    seq: u32,
    buf: Vec<u8>,
    /// Ethernet devices' own MACs by interface index, `None` for other link types (the type
    /// does not change while a device lives; a re-created device gets a new index).
    links: HashMap<u32, Option<[u8; 6]>>,
}

impl std::fmt::Debug for Netlink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Netlink").field("seq", &self.seq).finish()
    }
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

impl Netlink {
    /// Opens and binds the socket (no privilege needed).
    pub fn open() -> io::Result<Netlink> {
        let mut sock = Socket::new(NETLINK_ROUTE)?;
        sock.bind_auto()?;
        sock.connect(&SocketAddr::new(0, 0))?;
        socket2::SockRef::from(&sock).set_read_timeout(Some(REPLY_TIMEOUT))?;
        Ok(Netlink {
            sock,
            seq: 0,
            buf: vec![0; 16 * 1024],
            links: HashMap::new(),
        })
    }

    /// Sends one request and returns the kernel's one answer: `None` for "no such entry".
    fn ask(&mut self, req: RouteNetlinkMessage) -> io::Result<Option<RouteNetlinkMessage>> {
        self.seq = self.seq.wrapping_add(1);
        let mut hdr = NetlinkHeader::default();
        hdr.flags = NLM_F_REQUEST;
        hdr.sequence_number = self.seq;
        let mut msg = NetlinkMessage::new(hdr, NetlinkPayload::from(req));
        msg.finalize();
        let mut out = vec![0u8; msg.header.length as usize];
        msg.serialize(&mut out);
        self.sock.send(&out, 0)?;
        // Answers to earlier requests that timed out may still be queued: skip them.
        for _ in 0..16 {
            let n = self.sock.recv(&mut &mut self.buf[..], 0)?;
            let mut off = 0;
            while off < n {
                let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&self.buf[off..n])
                    .map_err(|_| bad("malformed rtnetlink reply"))?;
                let len = reply.header.length as usize;
                if reply.header.sequence_number == self.seq {
                    return match reply.payload {
                        NetlinkPayload::InnerMessage(m) => Ok(Some(m)),
                        NetlinkPayload::Error(e) => match e.code {
                            None => Ok(None),
                            Some(c) if -c.get() == libc::ENOENT || -c.get() == libc::ESRCH => {
                                Ok(None)
                            }
                            Some(c) => Err(io::Error::from_raw_os_error(-c.get())),
                        },
                        _ => Ok(None),
                    };
                }
                if len == 0 {
                    break;
                }
                off += len.next_multiple_of(4);
            }
        }
        Err(bad("no rtnetlink reply to our request"))
    }

    /// The MAC of `ifindex` when it is an Ethernet device.
    fn ethernet_mac(&mut self, ifindex: u32) -> io::Result<Option<[u8; 6]>> {
        if let Some(&e) = self.links.get(&ifindex) {
            return Ok(e);
        }
        let mut m = LinkMessage::default();
        m.header.index = ifindex;
        let mac = match self.ask(RouteNetlinkMessage::GetLink(m))? {
            Some(RouteNetlinkMessage::NewLink(l))
                if l.header.link_layer_type == LinkLayerType::Ether =>
            {
                l.attributes.iter().find_map(|a| match a {
                    LinkAttribute::Address(b) => <[u8; 6]>::try_from(b.as_slice()).ok(),
                    _ => None,
                })
            }
            _ => None,
        };
        self.links.insert(ifindex, mac);
        Ok(mac)
    }
}

fn family(ip: IpAddr) -> (AddressFamily, u8) {
    match ip {
        IpAddr::V4(_) => (AddressFamily::Inet, 32),
        IpAddr::V6(_) => (AddressFamily::Inet6, 128),
    }
}

fn route_ip(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

/// Neighbour states whose link address may be used now (RFC 4861 §7.3.2; STALE and DELAY
/// entries still hold the last address confirmed).
fn usable(state: NeighbourState) -> bool {
    matches!(
        state,
        NeighbourState::Reachable
            | NeighbourState::Stale
            | NeighbourState::Delay
            | NeighbourState::Probe
            | NeighbourState::Permanent
            | NeighbourState::Noarp
    )
}

impl Lookup for Netlink {
    fn lookup(&mut self, dst: IpAddr) -> io::Result<Resolved> {
        let (fam, prefix) = family(dst);
        let mut r = RouteMessage::default();
        r.header.address_family = fam;
        r.header.destination_prefix_length = prefix;
        r.attributes
            .push(RouteAttribute::Destination(RouteAddress::from(dst)));
        let Some(RouteNetlinkMessage::NewRoute(route)) =
            self.ask(RouteNetlinkMessage::GetRoute(r))?
        else {
            return Ok(Resolved::NotEthernet);
        };
        if route.header.kind != RouteType::Unicast {
            return Ok(Resolved::NotEthernet); // local, blackhole, unreachable...
        }
        let mut oif = None;
        let mut via = None;
        for a in &route.attributes {
            match a {
                RouteAttribute::Oif(i) => oif = Some(*i),
                RouteAttribute::Gateway(g) => via = route_ip(g),
                _ => {}
            }
        }
        let Some(oif) = oif else {
            return Ok(Resolved::NotEthernet);
        };
        let Some(src_mac) = self.ethernet_mac(oif)? else {
            return Ok(Resolved::NotEthernet);
        };
        let hop = via.filter(|g| g.is_ipv4() == dst.is_ipv4()).unwrap_or(dst);
        let mut n = NeighbourMessage::default();
        n.header.family = family(hop).0;
        n.header.ifindex = oif;
        n.attributes
            .push(NeighbourAttribute::Destination(match hop {
                IpAddr::V4(a) => NeighbourAddress::Inet(a),
                IpAddr::V6(a) => NeighbourAddress::Inet6(a),
            }));
        let Some(RouteNetlinkMessage::NewNeighbour(entry)) =
            self.ask(RouteNetlinkMessage::GetNeighbour(n))?
        else {
            return Ok(Resolved::Unresolved);
        };
        if !usable(entry.header.state) {
            return Ok(Resolved::Unresolved);
        }
        let mac = entry.attributes.iter().find_map(|a| match a {
            NeighbourAttribute::LinkLayerAddress(b) => <[u8; 6]>::try_from(b.as_slice()).ok(),
            _ => None,
        });
        Ok(match mac {
            Some(mac) => Resolved::Ether {
                ifindex: oif,
                src_mac,
                mac,
            },
            None => Resolved::Unresolved,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Loopback is always there and never Ethernet: the lookup must say so, not fail.
    #[test]
    fn loopback_is_not_served_by_the_packet_path() {
        let Ok(mut nl) = Netlink::open() else {
            eprintln!("SKIPPED netlink lookup test: no route-netlink socket here");
            return;
        };
        let got = nl.lookup("127.0.0.1".parse().unwrap()).unwrap();
        assert_eq!(got, Resolved::NotEthernet);
        let got = nl.lookup("::1".parse().unwrap());
        // A host without IPv6 answers with an error; with it, loopback is local.
        if let Ok(got) = got {
            assert_eq!(got, Resolved::NotEthernet);
        }
    }
}
