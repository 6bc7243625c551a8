//! The AF_PACKET sender: frames go out through a PACKET_TX_RING (TPACKET_V2), or `sendmmsg`
//! batches when the ring cannot be set up. System calls only: how big a frame may be, how the
//! ring is shaped and what a failed send does next are decided in [`crate::tx`].
//!
//! Frames are copied into the shared ring and handed to the kernel in batches with one `send()`
//! kick: every few hundred frames, and whenever the loop flushes (a paced loop flushes before it
//! waits, so a packet sent on time is kicked at once, and packets sent late go out in a batch).
//! A full ring, ENOBUFS or EAGAIN is waited out and counted as a retry, never dropped.
#![allow(unsafe_code)]

use super::ReplayInterface;
use crate::pipeline::Output;
use crate::tx::{self, Retry, RetryCounts, RingGeometry, TOP_SPEED_BATCH};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};
use tcpclone::capture::{FailReason, Packet, PacketSink, SendOutcome};
use tcpclone::stats::ReplayStats;

fn setsockopt<T>(fd: &OwnedFd, level: i32, name: i32, value: &T) -> io::Result<()> {
    // SAFETY: value points to a live T of the size passed.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            value as *const T as *const libc::c_void,
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Waits up to `ms` for the socket to become writable (ring slots or buffer space freed).
fn poll_out(fd: &OwnedFd, ms: i32) {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: p is one valid pollfd.
    unsafe {
        libc::poll(&mut p, 1, ms);
    }
}

/// Does what the retry policy says about the failed send `e`: returns once it is time to try
/// again, or the error when the send failed for good.
fn wait_to_retry(fd: &OwnedFd, retries: &mut RetryCounts, e: io::Error) -> io::Result<()> {
    let r = tx::on_send_error(e.raw_os_error());
    retries.count(r);
    match r {
        Retry::Now => Ok(()),
        Retry::Sleep(d) => {
            std::thread::sleep(d);
            Ok(())
        }
        Retry::PollWritable(ms) => {
            poll_out(fd, ms);
            Ok(())
        }
        Retry::Fail => Err(io::Error::new(
            e.kind(),
            format!("AF_PACKET send failed: {e}"),
        )),
    }
}

/// Bytes between the start of a TPACKET_V2 frame and its data, when sending.
const TX_DATA_OFFSET: usize = libc::TPACKET2_HDRLEN - std::mem::size_of::<libc::sockaddr_ll>();

/// Size of struct virtio_net_hdr.
const VNET_HDR_LEN: usize = 10;

/// The mmap'ed TX ring.
struct Ring {
    map: *mut u8,
    map_len: usize,
    frame_size: usize,
    frame_nr: usize,
    head: usize,
    /// Frames start with a virtio_net_hdr whose `hdr_len` covers the whole frame, so the kernel
    /// copies each frame into the skb instead of attaching ring pages that the veth/bridge receive
    /// path must then copy again (skb_copy_ubufs, a page allocation per packet).
    vnet: bool,
}

impl Ring {
    fn status(&self, i: usize) -> &AtomicU32 {
        // SAFETY: frame i lies inside the mapping (i < frame_nr, frames are contiguous); the
        // kernel's tpacket2_hdr starts with the 4-byte aligned u32 tp_status, which the kernel
        // and we both access atomically.
        unsafe { &*(self.map.add(i * self.frame_size) as *const AtomicU32) }
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // SAFETY: map/map_len are exactly what mmap returned; nothing borrows the ring now.
        unsafe {
            libc::munmap(self.map as *mut libc::c_void, self.map_len);
        }
    }
}

/// A batch of frames for the `sendmmsg` fallback.
struct MmsgBatch {
    buf: Vec<u8>,
    lens: Vec<usize>,
    slot: usize,
    iov: Vec<libc::iovec>,
    msgs: Vec<libc::mmsghdr>,
}

enum Mode {
    Ring(Ring),
    Mmsg(MmsgBatch),
}

/// An AF_PACKET sender bound to one interface.
pub struct ReplaySender {
    fd: OwnedFd,
    mode: Mode,
    /// Largest frame the interface takes without a VLAN tag (MTU + link header).
    max_frame: usize,
    /// Frames handed over since the last kick.
    pending: usize,
    /// Kick after this many frames.
    batch: usize,
    retries: RetryCounts,
}

// SAFETY: the ring mapping is owned by this sender alone and moves with it; no other thread
// holds a pointer into it.
unsafe impl Send for ReplaySender {}

impl ReplaySender {
    /// Opens a sender on `iface`. `batched` kicks the kernel every few hundred frames (top speed);
    /// otherwise every frame is kicked as it is queued. `force_mmsg` skips the TX ring.
    pub fn open(iface: &ReplayInterface, batched: bool, force_mmsg: bool) -> io::Result<Self> {
        let fd = super::socket(0)?;
        let max_frame = tx::max_frame(iface.mtu, iface.hw_type);
        // Send straight to the driver, as trafgen does (best effort: old kernels lack it).
        let _ = setsockopt(&fd, libc::SOL_PACKET, libc::PACKET_QDISC_BYPASS, &1i32);
        // Room for a full ring in flight; SO_SNDBUFFORCE needs CAP_NET_ADMIN, SO_SNDBUF does not.
        let sndbuf: i32 = 16 << 20;
        if setsockopt(&fd, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, &sndbuf).is_err() {
            let _ = setsockopt(&fd, libc::SOL_SOCKET, libc::SO_SNDBUF, &sndbuf);
        }
        let mode = if force_mmsg {
            Mode::Mmsg(Self::batch(max_frame + 4))
        } else {
            match Self::ring(&fd, max_frame + 4) {
                Ok(r) => Mode::Ring(r),
                Err(_) => Mode::Mmsg(Self::batch(max_frame + 4)),
            }
        };
        // SAFETY: sockaddr_ll is plain old data; all-zero is valid, then filled in.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = 0; // send only: protocol 0 registers no receive hook
        sll.sll_ifindex = iface.index;
        // SAFETY: sll is a valid sockaddr_ll of the size passed.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                &sll as *const libc::sockaddr_ll as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        let batch = if batched { TOP_SPEED_BATCH } else { 1 };
        Ok(ReplaySender {
            fd,
            mode,
            max_frame,
            pending: 0,
            batch,
            retries: RetryCounts::default(),
        })
    }

    /// True when frames go through the mmap'ed TX ring (false: `sendmmsg` fallback).
    pub fn uses_ring(&self) -> bool {
        matches!(self.mode, Mode::Ring(_))
    }

    fn ring(fd: &OwnedFd, largest: usize) -> io::Result<Ring> {
        setsockopt(
            fd,
            libc::SOL_PACKET,
            libc::PACKET_VERSION,
            &(libc::tpacket_versions::TPACKET_V2 as i32),
        )?;
        // Must come before the ring; best effort (see `Ring::vnet`).
        let vnet = setsockopt(fd, libc::SOL_PACKET, libc::PACKET_VNET_HDR, &1i32).is_ok();
        // Frames the kernel cannot send (e.g. malformed) are skipped instead of blocking the ring.
        setsockopt(fd, libc::SOL_PACKET, libc::PACKET_LOSS, &1i32)?;
        let g = RingGeometry::for_frames(largest, TX_DATA_OFFSET + VNET_HDR_LEN);
        let req = libc::tpacket_req {
            tp_block_size: g.block_size as u32,
            tp_block_nr: g.block_nr as u32,
            tp_frame_size: g.frame_size as u32,
            tp_frame_nr: g.frame_nr as u32,
        };
        setsockopt(fd, libc::SOL_PACKET, libc::PACKET_TX_RING, &req)?;
        let map_len = g.map_len();
        // SAFETY: maps the ring the kernel just allocated for this socket; checked below.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd.as_raw_fd(),
                0,
            )
        };
        if map == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Ring {
            map: map as *mut u8,
            map_len,
            frame_size: g.frame_size,
            frame_nr: g.frame_nr,
            head: 0,
            vnet,
        })
    }

    fn batch(largest: usize) -> MmsgBatch {
        let slot = largest.next_power_of_two();
        MmsgBatch {
            buf: vec![0; slot * TOP_SPEED_BATCH],
            lens: Vec::with_capacity(TOP_SPEED_BATCH),
            slot,
            iov: Vec::with_capacity(TOP_SPEED_BATCH),
            msgs: Vec::with_capacity(TOP_SPEED_BATCH),
        }
    }

    fn slot_free(&self) -> bool {
        match &self.mode {
            Mode::Ring(r) => r.status(r.head).load(Ordering::Acquire) == libc::TP_STATUS_AVAILABLE,
            Mode::Mmsg(_) => true,
        }
    }

    /// Hands every queued frame to the kernel without waiting for it to finish.
    fn kick(&mut self) -> io::Result<()> {
        if self.pending == 0 {
            return Ok(());
        }
        match &mut self.mode {
            Mode::Ring(_) => loop {
                // SAFETY: a zero-length send on a TX-ring socket only tells the kernel to send
                // the frames marked SEND_REQUEST; no user buffer is read.
                let r = unsafe {
                    libc::send(self.fd.as_raw_fd(), std::ptr::null(), 0, libc::MSG_DONTWAIT)
                };
                if r >= 0 {
                    self.pending = 0;
                    return Ok(());
                }
                let e = io::Error::last_os_error();
                wait_to_retry(&self.fd, &mut self.retries, e)?;
            },
            Mode::Mmsg(b) => {
                b.iov.clear();
                b.msgs.clear();
                for (i, &len) in b.lens.iter().enumerate() {
                    b.iov.push(libc::iovec {
                        // SAFETY: slot i lies inside buf (i < TOP_SPEED_BATCH).
                        iov_base: unsafe { b.buf.as_mut_ptr().add(i * b.slot) }
                            as *mut libc::c_void,
                        iov_len: len,
                    });
                }
                for i in 0..b.iov.len() {
                    // SAFETY: mmsghdr is plain old data; all-zero is valid, then filled in.
                    let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
                    // SAFETY: b.iov is not resized until the send below is done.
                    m.msg_hdr.msg_iov = unsafe { b.iov.as_mut_ptr().add(i) };
                    m.msg_hdr.msg_iovlen = 1;
                    b.msgs.push(m);
                }
                let mut done = 0;
                while done < b.msgs.len() {
                    // SAFETY: msgs[done..] are valid mmsghdrs pointing at live iovecs and buffers.
                    let r = unsafe {
                        libc::sendmmsg(
                            self.fd.as_raw_fd(),
                            b.msgs.as_mut_ptr().add(done),
                            (b.msgs.len() - done) as u32,
                            0,
                        )
                    };
                    if r >= 0 {
                        done += r as usize;
                        continue;
                    }
                    let e = io::Error::last_os_error();
                    wait_to_retry(&self.fd, &mut self.retries, e)?;
                }
                b.lens.clear();
                self.pending = 0;
                Ok(())
            }
        }
    }

    /// Kicks the kernel and waits (up to 5 s) until every frame has left the ring.
    fn drain(&mut self) -> io::Result<()> {
        self.kick()?;
        if let Mode::Ring(ring) = &self.mode {
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                let busy = (0..ring.frame_nr)
                    .any(|i| ring.status(i).load(Ordering::Acquire) != libc::TP_STATUS_AVAILABLE);
                if !busy || Instant::now() > deadline {
                    break;
                }
                // Frames still marked SEND_REQUEST (socket buffer was full): send them.
                // SAFETY: as in `kick`.
                unsafe { libc::send(self.fd.as_raw_fd(), std::ptr::null(), 0, libc::MSG_DONTWAIT) };
                poll_out(&self.fd, 1);
            }
        }
        Ok(())
    }
}

impl PacketSink for ReplaySender {
    type Error = io::Error;

    fn send(&mut self, packet: &Packet<'_>) -> io::Result<SendOutcome> {
        let data = packet.data;
        if tx::too_large(data, self.max_frame) {
            return Ok(SendOutcome::Failed(FailReason::TooLarge));
        }
        match &mut self.mode {
            Mode::Ring(_) => {
                if !self.slot_free() {
                    // Ring full: hand the queued frames over and wait for a slot.
                    self.retries.ring_full += 1;
                    self.pending = self.pending.max(1);
                    self.kick()?;
                    while !self.slot_free() {
                        // SAFETY: as in `kick`.
                        unsafe {
                            libc::send(self.fd.as_raw_fd(), std::ptr::null(), 0, libc::MSG_DONTWAIT)
                        };
                        poll_out(&self.fd, 10);
                    }
                }
                let Mode::Ring(ring) = &mut self.mode else {
                    unreachable!("mode checked above")
                };
                let frame = ring.head;
                // SAFETY: the frame is AVAILABLE, so the kernel does not touch it until we set
                // SEND_REQUEST; the data fits (frame_size ≥ TX_DATA_OFFSET + VNET_HDR_LEN + max_frame + 4 and
                // the length was checked above); tpacket2_hdr is 4-byte aligned at the frame start.
                unsafe {
                    let base = ring.map.add(frame * ring.frame_size);
                    let mut at = base.add(TX_DATA_OFFSET);
                    let mut len = data.len();
                    if ring.vnet {
                        // virtio_net_hdr: no offload flags, GSO none, hdr_len = the whole frame
                        // (little-endian, as the kernel reads it on this host).
                        let mut h = [0u8; VNET_HDR_LEN];
                        h[2..4].copy_from_slice(&(data.len() as u16).to_le_bytes());
                        std::ptr::copy_nonoverlapping(h.as_ptr(), at, VNET_HDR_LEN);
                        at = at.add(VNET_HDR_LEN);
                        len += VNET_HDR_LEN;
                    }
                    std::ptr::copy_nonoverlapping(data.as_ptr(), at, data.len());
                    let hdr = base as *mut libc::tpacket2_hdr;
                    (*hdr).tp_len = len as u32;
                    (*hdr).tp_snaplen = len as u32;
                }
                ring.status(frame)
                    .store(libc::TP_STATUS_SEND_REQUEST, Ordering::Release);
                ring.head = (frame + 1) % ring.frame_nr;
            }
            Mode::Mmsg(b) => {
                let i = b.lens.len();
                b.buf[i * b.slot..i * b.slot + data.len()].copy_from_slice(data);
                b.lens.push(data.len());
                if b.lens.len() == TOP_SPEED_BATCH {
                    self.pending += 1;
                    self.kick()?;
                    return Ok(SendOutcome::Sent);
                }
            }
        }
        self.pending += 1;
        if self.pending >= self.batch {
            self.kick()?;
        }
        Ok(SendOutcome::Sent)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.kick()
    }
}

impl Output for ReplaySender {
    fn drain_retries(&mut self, stats: &mut ReplayStats) {
        self.retries.drain_into(stats);
    }
    fn finish(&mut self) -> io::Result<()> {
        self.drain()
    }
}
