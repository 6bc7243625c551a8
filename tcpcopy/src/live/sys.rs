//! System calls of the live glue: raw IPv4/IPv6 sockets with the IP header included, and
//! `poll(2)` on a capture descriptor. The only module of tcpcopy allowed `unsafe`.
//!
//! A send error is never fatal here: it is returned as a [`SendError`] kind that the caller
//! counts; EINTR is retried at once, EAGAIN/ENOBUFS a few times with a short pause.
#![allow(unsafe_code)]

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::RawFd;
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
