//! System calls of the live glue: raw IPv4/IPv6 sockets with the IP header included, and
//! `poll(2)` on a capture descriptor. The only module of tcpcopy allowed `unsafe`.
//!
//! A send error is never fatal here: it is returned as a [`SendError`] kind that the caller
//! counts; EINTR is retried at once, EAGAIN/ENOBUFS a few times with a short pause.
#![allow(unsafe_code)]

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

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

/// Most packets one `sendmmsg` carries.
pub const TX_BATCH: usize = 64;
/// Room a packet may need (`Engine::poll_transmit` wants at least 65,535 bytes).
pub const TX_SLOT: usize = 65_536;
/// Bytes of the queue's buffer: a full batch of MTU-sized packets plus one slot of room.
const TX_ARENA: usize = TX_BATCH * 1536 + TX_SLOT;

/// Outcome of one [`TxQueue::flush`]: packets and bytes sent, and the failures by kind.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Flushed {
    /// Packets the kernel took.
    pub sent: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Dropped after EAGAIN/ENOBUFS retries.
    pub busy: u64,
    /// Refused as larger than the route's MTU.
    pub too_large: u64,
    /// Refused for another reason (or no socket for the family).
    pub refused: u64,
    /// System calls made.
    pub calls: u64,
}

/// Packets written in place by the engine and sent together with `sendmmsg`, one call per run
/// of packets of one address family.
#[derive(Debug)]
pub struct TxQueue {
    raw: RawSender,
    arena: Vec<u8>,
    used: usize,
    /// (offset, length, destination) per queued packet.
    queued: Vec<(usize, usize, IpAddr)>,
}

impl TxQueue {
    /// A queue over `raw`'s sockets.
    pub fn new(raw: RawSender) -> TxQueue {
        TxQueue {
            raw,
            arena: vec![0u8; TX_ARENA],
            used: 0,
            queued: Vec::with_capacity(TX_BATCH),
        }
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

    /// Queues the `len` bytes just written into [`TxQueue::slot`].
    pub fn push(&mut self, len: usize, dst: IpAddr) {
        self.queued.push((self.used, len, dst));
        // 16-byte aligned starts keep the IP headers aligned for the kernel's copy.
        self.used = (self.used + len).next_multiple_of(16).min(self.arena.len());
    }

    /// Sends everything queued; never fails as a whole (failures are counted per packet).
    pub fn flush(&mut self) -> Flushed {
        let mut out = Flushed::default();
        let mut i = 0;
        while i < self.queued.len() {
            let v4 = self.queued[i].2.is_ipv4();
            let mut end = i + 1;
            while end < self.queued.len() && self.queued[end].2.is_ipv4() == v4 {
                end += 1;
            }
            let sock = if v4 {
                self.raw.v4.as_ref()
            } else {
                self.raw.v6.as_ref()
            };
            match sock {
                Some(sock) => self.send_run(sock.as_raw_fd(), i, end, &mut out),
                None => out.refused += (end - i) as u64,
            }
            i = end;
        }
        self.queued.clear();
        self.used = 0;
        out
    }

    /// Sends queued[from..to] (one family) with as few `sendmmsg` calls as the kernel allows.
    fn send_run(&self, fd: RawFd, from: usize, to: usize, out: &mut Flushed) {
        let n = to - from;
        let mut addrs: Vec<SockAddr> = Vec::with_capacity(n);
        let mut iovs: Vec<libc::iovec> = Vec::with_capacity(n);
        for &(off, len, dst) in &self.queued[from..to] {
            addrs.push(SockAddr::from(SocketAddr::new(dst, 0)));
            iovs.push(libc::iovec {
                iov_base: self.arena[off..].as_ptr() as *mut libc::c_void,
                iov_len: len,
            });
        }
        let mut msgs: Vec<libc::mmsghdr> = (0..n)
            .map(|k| {
                // SAFETY: msghdr is plain integers and pointers; all-zero is a valid value.
                let mut h: libc::msghdr = unsafe { std::mem::zeroed() };
                h.msg_name = addrs[k].as_ptr() as *mut libc::c_void;
                h.msg_namelen = addrs[k].len();
                h.msg_iov = &iovs[k] as *const libc::iovec as *mut libc::iovec;
                h.msg_iovlen = 1;
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
            // point into `addrs`, `iovs` and `self.arena`, all alive and unmoved for the call;
            // the kernel only reads them (and writes msg_len).
            let rc =
                unsafe { libc::sendmmsg(fd, msgs[k..].as_mut_ptr(), (n - k) as libc::c_uint, 0) };
            if rc > 0 {
                for m in &msgs[k..k + rc as usize] {
                    out.sent += 1;
                    out.bytes += u64::from(m.msg_len);
                }
                k += rc as usize;
                busy = 0;
                continue;
            }
            // Message k failed: the same policy as [`RawSender::send`].
            match io::Error::last_os_error().raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EAGAIN) | Some(libc::ENOBUFS) => {
                    busy += 1;
                    if busy >= BUSY_TRIES {
                        out.busy += 1;
                        k += 1;
                        busy = 0;
                    } else {
                        std::thread::sleep(Duration::from_micros(50 << busy));
                    }
                }
                Some(libc::EMSGSIZE) => {
                    out.too_large += 1;
                    k += 1;
                }
                _ => {
                    out.refused += 1;
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

/// Process CPU time (user + system) so far, for the summary and the bench script.
pub fn cpu_time() -> Duration {
    let mut ru = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a whole `rusage` into the pointer we pass, which points to
    // zero-initialised storage of the right type and size.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, ru.as_mut_ptr()) };
    if rc != 0 {
        return Duration::ZERO;
    }
    // SAFETY: getrusage succeeded, so the struct is initialised (it was zeroed before anyway).
    let ru = unsafe { ru.assume_init() };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, (t.tv_usec as u32) * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}
