//! System calls of the live glue: raw IPv4/IPv6 sockets with the IP header included, the
//! packet socket with virtio-net headers for segmentation offload, `sendmmsg` over both, and
//! `poll(2)` on a capture descriptor. The only module of tcpcopy allowed `unsafe`.
//!
//! A send error is never fatal here: it is returned as a [`SendError`] kind that the caller
//! counts; EINTR is retried at once, EAGAIN/ENOBUFS a few times with a short pause.
#![allow(unsafe_code)]

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};
use tcpclone::wire::gso::{segment, TcpLayout, VnetHeader, VNET_HDR_LEN};

use crate::engine::{Engine, PayloadRef};

use super::netlink::Netlink;
use super::nexthop::{Hop, HopStats, NextHops};

/// `IPPROTO_RAW` (RFC 791 protocol 255): on Linux a raw socket of this protocol sends packets
/// whose IP header the caller wrote (IP_HDRINCL implied; for IPv6 since Linux 4.5).
const IPPROTO_RAW: i32 = 255;
/// Socket send buffer asked for (the kernel caps it at `wmem_max`, doubled).
const SNDBUF: usize = 8 << 20;
/// Tries for EAGAIN/ENOBUFS before the packet is dropped (and counted).
const BUSY_TRIES: u32 = 4;

/// Why one packet was not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendError {
    /// The kernel's buffers stayed full (EAGAIN/ENOBUFS) through every retry.
    Busy,
    /// The packet is larger than the route's MTU (EMSGSIZE).
    TooLarge,
    /// No socket for this address family (it could not be opened at start).
    NoSocket,
    /// Any other refusal (EPERM from a firewall, EHOSTUNREACH, ...).
    Refused,
}

/// Raw sockets for IPv4 and IPv6 packets that carry their own IP header.
#[derive(Debug)]
pub struct RawSender {
    v4: Option<Socket>,
    v6: Option<Socket>,
}

fn open(domain: Domain) -> io::Result<Socket> {
    let s = Socket::new(domain, Type::RAW, Some(Protocol::from(IPPROTO_RAW)))?;
    if domain == Domain::IPV4 {
        // Implied by IPPROTO_RAW on Linux; set explicitly for clarity.
        s.set_header_included_v4(true)?;
    }
    let _ = s.set_send_buffer_size(SNDBUF);
    Ok(s)
}

impl RawSender {
    /// Opens the sockets needed for the address families in use; fails only when a needed one
    /// cannot be opened (no CAP_NET_RAW).
    pub fn open(need_v4: bool, need_v6: bool) -> io::Result<RawSender> {
        let v4 = if need_v4 {
            Some(open(Domain::IPV4)?)
        } else {
            None
        };
        let v6 = if need_v6 {
            Some(open(Domain::IPV6)?)
        } else {
            None
        };
        Ok(RawSender { v4, v6 })
    }

    /// Sends one whole IP packet (header included) to `dst`.
    pub fn send(&self, packet: &[u8], dst: IpAddr) -> Result<(), SendError> {
        let (sock, addr) = match dst {
            IpAddr::V4(_) => (self.v4.as_ref(), SockAddr::from(SocketAddr::new(dst, 0))),
            // For IPv6 raw sockets the port field must be 0 (it is the protocol on some systems).
            IpAddr::V6(_) => (self.v6.as_ref(), SockAddr::from(SocketAddr::new(dst, 0))),
        };
        let sock = sock.ok_or(SendError::NoSocket)?;
        let mut busy = 0;
        loop {
            match sock.send_to(packet, &addr) {
                Ok(_) => return Ok(()),
                Err(e) => match e.raw_os_error() {
                    Some(libc::EINTR) => continue,
                    Some(libc::EAGAIN) | Some(libc::ENOBUFS) => {
                        busy += 1;
                        if busy >= BUSY_TRIES {
                            return Err(SendError::Busy);
                        }
                        std::thread::sleep(Duration::from_micros(50 << busy));
                    }
                    Some(libc::EMSGSIZE) => return Err(SendError::TooLarge),
                    _ => return Err(SendError::Refused),
                },
            }
        }
    }
}

/// An `AF_PACKET` socket that sends IP packets as Ethernet frames to a next hop's MAC, each
/// behind a virtio-net header (`PACKET_VNET_HDR`), so that a TCP super-segment goes to the
/// device in one piece and the kernel (or the NIC) segments it and finishes its checksums.
/// `SOCK_RAW` (the kernel takes virtio-net headers on those only): each frame's Ethernet header
/// is ours, a third piece of the message. Its protocol is 0, so it never receives.
#[derive(Debug)]
pub struct PacketSender {
    sock: Socket,
}

/// Link header bytes the kernel puts before each packet of a [`PacketSender`] (Ethernet; the
/// packet path serves Ethernet devices only).
pub const ETHER_HDR_LEN: usize = 14;

impl PacketSender {
    /// Opens the socket (CAP_NET_RAW needed, like the raw IP sockets).
    pub fn open() -> io::Result<PacketSender> {
        let sock = Socket::new(Domain::PACKET, Type::RAW, None)?;
        let on: libc::c_int = 1;
        // SAFETY: setsockopt reads `size_of::<c_int>()` bytes from a pointer to a live c_int;
        // the descriptor is the socket we own.
        let rc = unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_VNET_HDR,
                &on as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        let _ = sock.set_send_buffer_size(SNDBUF);
        Ok(PacketSender { sock })
    }
}

/// `sockaddr_ll` for a frame out of `ifindex` to `mac`, carrying `v6` or IPv4.
fn link_addr(ifindex: u32, mac: [u8; 6], v6: bool) -> libc::sockaddr_ll {
    let proto = if v6 { libc::ETH_P_IPV6 } else { libc::ETH_P_IP } as u16;
    let mut addr = [0u8; 8];
    addr[..6].copy_from_slice(&mac);
    libc::sockaddr_ll {
        sll_family: libc::AF_PACKET as u16,
        sll_protocol: proto.to_be(),
        sll_ifindex: ifindex as i32,
        sll_hatype: 0,
        sll_pkttype: 0,
        sll_halen: 6,
        sll_addr: addr,
    }
}

/// Most packets one `sendmmsg` carries.
pub const TX_BATCH: usize = 64;
/// Room a packet may need (`Engine::poll_transmit` wants at least 65,535 bytes).
pub const TX_SLOT: usize = 65_536;
/// Bytes of the queue's buffer: a full batch of MTU-sized packets, or a few super-segments,
/// plus one slot of room.
const TX_ARENA: usize = TX_BATCH * 1536 + 4 * TX_SLOT;

/// Outcome of one [`TxQueue::flush`]: packets and bytes sent, and the failures by kind.
/// Packets are counted as they appear on the wire: a super-segment counts its pieces.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Flushed {
    /// Packets the kernel took.
    pub sent: u64,
    /// Their bytes (IP packets, link headers not counted).
    pub bytes: u64,
    /// Of `sent`: packets that left through the packet socket.
    pub via_packet: u64,
    /// Super-segments handed to the kernel whole (each counted by its pieces in `sent`).
    pub gso_frames: u64,
    /// Super-segments cut in software because their destination takes the raw path.
    pub gso_soft: u64,
    /// Dropped after EAGAIN/ENOBUFS retries.
    pub busy: u64,
    /// Refused as larger than the route's MTU.
    pub too_large: u64,
    /// Refused for another reason (or no socket for the family).
    pub refused: u64,
    /// Of `refused`: super-segments whose payload had left the engine before the flush.
    pub stale: u64,
    /// System calls made.
    pub calls: u64,
}

/// A packet waiting in the queue.
#[derive(Debug, Clone, Copy)]
struct Queued {
    off: usize,
    len: usize,
    dst: IpAddr,
    gso_size: Option<u16>,
    /// The payload after the `len` header bytes, still in the engine.
    payload: Option<PayloadRef>,
}

/// Which socket a message goes through; a run of one lane is one `sendmmsg`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lane {
    Packet,
    RawV4,
    RawV6,
}

/// One message of a flush: where its bytes are, and how to address it.
#[derive(Debug, Clone, Copy)]
struct Planned {
    lane: Lane,
    /// In the arena (false) or the software-segmentation buffer (true).
    soft: bool,
    off: usize,
    len: usize,
    /// The payload gathered from the engine after the `len` bytes (packet lane only).
    payload: Option<PayloadRef>,
    dst: IpAddr,
    /// Packet lane: device and next hop.
    hop: (u32, [u8; 6]),
    /// Packet lane: the Ethernet header.
    ether: [u8; ETHER_HDR_LEN],
    /// Packet lane: the virtio-net header.
    vnet: [u8; VNET_HDR_LEN],
    /// Packets on the wire.
    pieces: u64,
}

/// Packets written in place by the engine and sent together with `sendmmsg`: through the
/// packet socket where the next hop is an Ethernet neighbour (super-segments whole), else
/// through the raw IP sockets (super-segments cut in software first). One call per run of one
/// lane, in the order queued.
#[derive(Debug)]
pub struct TxQueue {
    raw: RawSender,
    packet: Option<(PacketSender, NextHops<Netlink>)>,
    arena: Vec<u8>,
    used: usize,
    queued: Vec<Queued>,
    plan: Vec<Planned>,
    soft: Vec<u8>,
    scratch: Vec<u8>,
    /// A super-segment's headers and payload joined, to be cut in software.
    joined: Vec<u8>,
}

impl TxQueue {
    /// A queue over `raw`'s sockets, and the packet path when `packet` is given.
    pub fn new(raw: RawSender, packet: Option<(PacketSender, Netlink)>) -> TxQueue {
        TxQueue {
            raw,
            packet: packet.map(|(p, nl)| (p, NextHops::new(nl))),
            arena: vec![0u8; TX_ARENA],
            used: 0,
            queued: Vec::with_capacity(TX_BATCH),
            plan: Vec::with_capacity(TX_BATCH),
            soft: Vec::new(),
            scratch: Vec::new(),
            joined: Vec::new(),
        }
    }

    /// Next-hop lookup counters (zero without the packet path).
    pub fn hop_stats(&self) -> HopStats {
        self.packet
            .as_ref()
            .map(|(_, h)| h.stats)
            .unwrap_or_default()
    }

    /// Whether the next packet must wait for a flush (no room, or a full batch).
    pub fn is_full(&self) -> bool {
        self.queued.len() >= TX_BATCH || self.arena.len() - self.used < TX_SLOT
    }

    /// Packets queued and not sent yet.
    pub fn len(&self) -> usize {
        self.queued.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.queued.is_empty()
    }

    /// Room for the next packet (at least [`TX_SLOT`] bytes; call [`TxQueue::is_full`] first).
    pub fn slot(&mut self) -> &mut [u8] {
        &mut self.arena[self.used..]
    }

    /// Queues the `len` bytes just written into [`TxQueue::slot`]; `gso_size` marks a
    /// super-segment and `payload` one whose payload the engine still holds (see
    /// `engine::Transmit`): it is gathered from there when the queue is flushed.
    pub fn push(
        &mut self,
        len: usize,
        dst: IpAddr,
        gso_size: Option<u16>,
        payload: Option<PayloadRef>,
    ) {
        self.queued.push(Queued {
            off: self.used,
            len,
            dst,
            gso_size,
            payload,
        });
        // 16-byte aligned starts keep the IP headers aligned for the kernel's copy.
        self.used = (self.used + len).next_multiple_of(16).min(self.arena.len());
    }

    /// Chooses each queued packet's lane (cutting super-segments for the raw path).
    fn plan(&mut self, now: Instant, engine: &Engine, out: &mut Flushed) {
        self.plan.clear();
        let mut soft_used = 0;
        for i in 0..self.queued.len() {
            let q = self.queued[i];
            let raw_lane = if q.dst.is_ipv4() {
                Lane::RawV4
            } else {
                Lane::RawV6
            };
            let mut pkt = &self.arena[q.off..q.off + q.len];
            let layout = TcpLayout::of_split(pkt, q.payload.map_or(0, |r| r.len())).ok();
            let payload = match q.payload.map(|r| (engine.payload(&r), layout)) {
                None => None,
                Some((Some(p), Some(_))) => Some(p),
                Some((gone, _)) => {
                    // Not sent: the bytes left the engine (never expected between the engine's
                    // transmit and this flush), or headers that do not parse.
                    out.refused += 1;
                    out.stale += u64::from(gone.is_none());
                    continue;
                }
            };
            let hop = match (&mut self.packet, layout) {
                (Some((_, hops)), Some(_)) => hops.hop(q.dst, now),
                _ => Hop::Raw,
            };
            let gso = q.gso_size.filter(|_| layout.is_some());
            let pieces = match (gso, layout) {
                (Some(g), Some(l)) => l.payload_len().div_ceil(usize::from(g).max(1)).max(1),
                _ => 1,
            } as u64;
            match hop {
                Hop::Packet {
                    ifindex,
                    src_mac,
                    mac,
                } => {
                    let mut ether = [0u8; ETHER_HDR_LEN];
                    ether[..6].copy_from_slice(&mac);
                    ether[6..12].copy_from_slice(&src_mac);
                    let proto = if q.dst.is_ipv6() {
                        libc::ETH_P_IPV6
                    } else {
                        libc::ETH_P_IP
                    };
                    ether[12..].copy_from_slice(&(proto as u16).to_be_bytes());
                    let vnet = match layout {
                        Some(l) if gso.is_some() => VnetHeader::for_tcp(&l, ETHER_HDR_LEN, gso),
                        _ => VnetHeader::plain(),
                    };
                    self.plan.push(Planned {
                        lane: Lane::Packet,
                        soft: false,
                        off: q.off,
                        len: q.len,
                        payload: q.payload,
                        dst: q.dst,
                        hop: (ifindex, mac),
                        ether,
                        vnet: vnet.to_bytes(),
                        pieces,
                    });
                    if pieces > 1 {
                        out.gso_frames += 1;
                    }
                }
                Hop::Raw if gso.is_none() && payload.is_none() => self.plan.push(Planned {
                    lane: raw_lane,
                    soft: false,
                    off: q.off,
                    len: q.len,
                    payload: None,
                    dst: q.dst,
                    hop: (0, [0; 6]),
                    ether: [0; ETHER_HDR_LEN],
                    vnet: [0; VNET_HDR_LEN],
                    pieces: 1,
                }),
                Hop::Raw => {
                    // The raw socket takes whole packets only: cut it here as the kernel would.
                    if let Some((a, b)) = payload {
                        self.joined.clear();
                        self.joined.extend_from_slice(pkt);
                        self.joined.extend_from_slice(a);
                        self.joined.extend_from_slice(b);
                        pkt = &self.joined;
                    }
                    let g = usize::from(gso.unwrap_or(1));
                    let hdr = layout.map_or(0, |l| l.header_len());
                    // Each piece repeats the headers and starts 16-byte aligned.
                    let need = pkt.len() + pieces as usize * (hdr + 16);
                    if self.soft.len() < soft_used + need {
                        self.soft.resize(soft_used + need, 0);
                    }
                    if self.scratch.len() < hdr + g {
                        self.scratch.resize(hdr + g, 0);
                    }
                    let (soft, plan) = (&mut self.soft, &mut self.plan);
                    let res = segment(pkt, g, &mut self.scratch, |piece| {
                        if soft.len() < soft_used + piece.len() {
                            soft.resize(soft_used + piece.len(), 0);
                        }
                        soft[soft_used..soft_used + piece.len()].copy_from_slice(piece);
                        plan.push(Planned {
                            lane: raw_lane,
                            soft: true,
                            off: soft_used,
                            len: piece.len(),
                            payload: None,
                            dst: q.dst,
                            hop: (0, [0; 6]),
                            ether: [0; ETHER_HDR_LEN],
                            vnet: [0; VNET_HDR_LEN],
                            pieces: 1,
                        });
                        soft_used = (soft_used + piece.len()).next_multiple_of(16);
                    });
                    match res {
                        Ok(_) => out.gso_soft += 1,
                        Err(_) => out.refused += pieces,
                    }
                }
            }
        }
    }

    /// Sends everything queued, gathering payloads left by reference from `engine` (which must
    /// not have handled anything but transmits since they were queued); never fails as a whole
    /// (failures are counted per packet).
    pub fn flush(&mut self, now: Instant, engine: &Engine) -> Flushed {
        let mut out = Flushed::default();
        self.plan(now, engine, &mut out);
        let mut i = 0;
        while i < self.plan.len() {
            let lane = self.plan[i].lane;
            let mut end = i + 1;
            while end < self.plan.len() && self.plan[end].lane == lane {
                end += 1;
            }
            let fd = match lane {
                Lane::Packet => self.packet.as_ref().map(|(p, _)| p.sock.as_raw_fd()),
                Lane::RawV4 => self.raw.v4.as_ref().map(|s| s.as_raw_fd()),
                Lane::RawV6 => self.raw.v6.as_ref().map(|s| s.as_raw_fd()),
            };
            match fd {
                Some(fd) => self.send_run(fd, i, end, engine, &mut out),
                None => out.refused += self.plan[i..end].iter().map(|p| p.pieces).sum::<u64>(),
            }
            i = end;
        }
        self.queued.clear();
        self.plan.clear();
        self.used = 0;
        out
    }

    /// Sends plan[from..to] (one lane) with as few `sendmmsg` calls as the kernel allows.
    fn send_run(&self, fd: RawFd, from: usize, to: usize, engine: &Engine, out: &mut Flushed) {
        let run = &self.plan[from..to];
        let n = run.len();
        let mut ip_addrs: Vec<SockAddr> = Vec::new();
        let mut ll_addrs: Vec<libc::sockaddr_ll> = Vec::new();
        let mut iovs: Vec<([libc::iovec; 5], usize)> = Vec::with_capacity(n);
        let mut bytes_of: Vec<usize> = Vec::with_capacity(n);
        let iov = |b: &[u8]| libc::iovec {
            iov_base: b.as_ptr() as *mut libc::c_void,
            iov_len: b.len(),
        };
        for p in run {
            let bytes = if p.soft { &self.soft } else { &self.arena };
            let data = iov(&bytes[p.off..p.off + p.len]);
            if p.lane == Lane::Packet {
                ll_addrs.push(link_addr(p.hop.0, p.hop.1, p.dst.is_ipv6()));
                // plan() found the payload; the engine has not changed since.
                let (a, b) = p
                    .payload
                    .and_then(|r| engine.payload(&r))
                    .unwrap_or((&[], &[]));
                let mut v = [iov(&p.vnet), iov(&p.ether), data, data, data];
                let mut k = 3;
                for piece in [a, b] {
                    if !piece.is_empty() {
                        v[k] = iov(piece);
                        k += 1;
                    }
                }
                iovs.push((v, k));
                bytes_of.push(p.len + a.len() + b.len());
            } else {
                ip_addrs.push(SockAddr::from(SocketAddr::new(p.dst, 0)));
                iovs.push(([data; 5], 1));
                bytes_of.push(p.len);
            }
        }
        let mut msgs: Vec<libc::mmsghdr> = (0..n)
            .map(|k| {
                // SAFETY: msghdr is plain integers and pointers; all-zero is a valid value.
                let mut h: libc::msghdr = unsafe { std::mem::zeroed() };
                h.msg_iov = iovs[k].0.as_ptr() as *mut libc::iovec;
                h.msg_iovlen = iovs[k].1;
                if run[k].lane == Lane::Packet {
                    h.msg_name = &ll_addrs[k] as *const libc::sockaddr_ll as *mut libc::c_void;
                    h.msg_namelen = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
                } else {
                    h.msg_name = ip_addrs[k].as_ptr() as *mut libc::c_void;
                    h.msg_namelen = ip_addrs[k].len();
                }
                libc::mmsghdr {
                    msg_hdr: h,
                    msg_len: 0,
                }
            })
            .collect();
        let mut k = 0;
        let mut busy = 0;
        while k < n {
            out.calls += 1;
            // SAFETY: msgs[k..] are initialised mmsghdrs whose name, iovec and data pointers
            // point into `ll_addrs`/`ip_addrs`, `iovs`, `run[..].vnet`/`.ether`, `self.arena`,
            // `self.soft` and the client streams of `engine` (borrowed for this whole call, so
            // unchanged), all alive and unmoved for the call; the kernel only reads them (and
            // writes msg_len).
            let rc =
                unsafe { libc::sendmmsg(fd, msgs[k..].as_mut_ptr(), (n - k) as libc::c_uint, 0) };
            if rc > 0 {
                for (p, b) in run[k..k + rc as usize].iter().zip(&bytes_of[k..]) {
                    out.sent += p.pieces;
                    out.bytes += *b as u64;
                    if p.lane == Lane::Packet {
                        out.via_packet += p.pieces;
                    }
                }
                k += rc as usize;
                busy = 0;
                continue;
            }
            // Message k failed: the same policy as [`RawSender::send`].
            let pieces = run[k].pieces;
            match io::Error::last_os_error().raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EAGAIN) | Some(libc::ENOBUFS) => {
                    busy += 1;
                    if busy >= BUSY_TRIES {
                        out.busy += pieces;
                        k += 1;
                        busy = 0;
                    } else {
                        std::thread::sleep(Duration::from_micros(50 << busy));
                    }
                }
                Some(libc::EMSGSIZE) => {
                    out.too_large += pieces;
                    k += 1;
                }
                _ => {
                    out.refused += pieces;
                    k += 1;
                }
            }
        }
    }
}

/// Waits until `fd` is readable or `timeout` passes. Returns whether it is readable (EINTR
/// counts as not yet).
pub fn poll_readable(fd: RawFd, timeout: Duration) -> io::Result<bool> {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
    // SAFETY: `pfd` is a valid, initialised pollfd that lives across the call, and we pass a
    // count of exactly one element.
    let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EINTR) {
            return Ok(false);
        }
        return Err(e);
    }
    Ok(rc > 0 && pfd.revents & (libc::POLLIN | libc::POLLERR | libc::POLLHUP) != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An IPv4 TCP super-segment of `n` payload bytes behind 12 bytes of options (52 bytes of
    /// headers, so pieces are not multiples of 16), checksum left partial as the engine leaves it.
    fn super_segment(n: usize) -> Vec<u8> {
        let mut p = vec![0u8; 52 + n];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&((52 + n) as u16).to_be_bytes());
        p[6] = 0x40;
        p[8] = 64;
        p[9] = 6;
        p[12..16].copy_from_slice(&[198, 18, 10, 2]);
        p[16..20].copy_from_slice(&[198, 18, 1, 2]);
        p[32] = 8 << 4;
        p[33] = 0x18;
        p[40..52].copy_from_slice(&[1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]);
        p
    }

    /// Without sockets (no privileges needed) every packet is refused, but the plan still cuts
    /// super-segments for the raw path: each piece counted, none lost to a panic.
    #[test]
    fn super_segments_for_the_raw_path_are_cut_in_software() {
        let raw = RawSender::open(false, false).unwrap();
        let mut q = TxQueue::new(raw, None);
        let now = Instant::now();
        // As many 64 KB super-segments as the arena takes, then small packets between them.
        let mut pushed: usize = 0;
        let mut pieces = 0;
        while !q.is_full() {
            let n = if pushed % 2 == 0 { 63_712 } else { 100 };
            let pkt = super_segment(n);
            q.slot()[..pkt.len()].copy_from_slice(&pkt);
            let gso = (n > 1448).then_some(1448);
            q.push(pkt.len(), pkt_dst(), gso, None);
            pieces += n.div_ceil(1448) as u64;
            pushed += 1;
        }
        assert!(pushed >= 4);
        let f = q.flush(now, &Engine::default());
        assert_eq!(f.gso_soft, pushed.div_ceil(2) as u64);
        assert_eq!(f.refused, pieces, "every piece counted once");
        assert_eq!((f.sent, f.gso_frames), (0, 0));
        assert!(q.is_empty());
    }

    /// A super-segment whose payload the engine still holds takes the raw path joined to its
    /// headers and cut in software; one whose bytes left the engine before the flush is
    /// counted, not sent.
    #[test]
    fn payloads_left_in_the_engine_are_gathered_or_counted_when_gone() {
        use crate::engine::tests::gso::{gso_config, upload};
        use crate::engine::tests::{session_established_with, Seg, CLIENT_ISN, RESP};
        let mut h = session_established_with(gso_config());
        upload(&mut h, 20_000);
        let raw = RawSender::open(false, false).unwrap();
        let mut q = TxQueue::new(raw, None);
        let now = h.now;
        let t =
            h.e.poll_transmit_by_ref(now, q.slot())
                .expect("a super-segment");
        assert!(t.payload.is_some());
        q.push(t.len, t.dst, t.gso_size, t.payload);
        let f = q.flush(now, &h.e);
        let pieces = 20_000u64.div_ceil(u64::from(t.gso_size.unwrap()));
        assert_eq!((f.gso_soft, f.refused, f.stale), (1, pieces, 0));
        // Retransmitted after the timeout, but acknowledged before the flush.
        h.advance(Duration::from_secs(3));
        let now = h.now;
        let t =
            h.e.poll_transmit_by_ref(now, q.slot())
                .expect("a retransmission");
        q.push(t.len, t.dst, t.gso_size, t.payload);
        h.respond(Seg {
            ack: CLIENT_ISN + 1 + 20_000,
            ..RESP
        });
        let f = q.flush(now, &h.e);
        assert_eq!((f.gso_soft, f.refused, f.stale), (0, 1, 1));
    }

    fn pkt_dst() -> IpAddr {
        IpAddr::V4(std::net::Ipv4Addr::new(198, 18, 1, 2))
    }
}
