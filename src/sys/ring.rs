//! A `TPACKET_V3` capture ring on an `AF_PACKET` socket of our own: the kernel fills blocks
//! of frames in memory shared with us, and we read them in place and hand each block back.
//! One wake-up per retired block (full, or `retire_ms` after its first frame), no copy.
//! With [`RingConfig::frame_size`] the ring is `TPACKET_V2` instead: the kernel hands over each
//! frame as soon as it is written and wakes the reader for it, which costs a wake-up per frame
//! when traffic is light but never holds a frame back (a `TPACKET_V3` block holds its first
//! frame for up to `retire_ms`, at least 1 ms); a busy reader still drains many frames per
//! wake-up. Each "block" handed out is then one frame slot.
//!
//! The socket is `SOCK_DGRAM`: the kernel strips the link header, so every device (Ethernet,
//! `any`, tun, loopback) gives frames that start at the network header, and the BPF filter is
//! compiled for raw IP. Several sockets can share the traffic of a device through a
//! `PACKET_FANOUT` group (by symmetric flow hash: one TCP connection, both directions, one
//! socket).
//!
//! A block's bytes can outlive the reading of it: [`RingBlock::hold`] gives [`HeldBytes`], a
//! counted reference to part of the block, and the block goes back to the kernel only when
//! the last of them is dropped (a client stream keeps its upload's bytes where the kernel
//! wrote them, instead of copying them, until the target has them). The kernel fills blocks in
//! order and stops, dropping frames, at a block still held: the holder must let go before the
//! kernel comes round to it ([`PacketRing::oldest_held_age`] says how close it is).
//!
//! Must never: give out a block the kernel still owns, or a view of a block after it went
//! back. [`RingBlock`] borrows the ring mutably, so a second block cannot be taken while one
//! is read; its drop returns the block unless bytes of it are held, and the last
//! [`HeldBytes`] of a block returns it. The mapping lives as long as the ring or any held
//! bytes of it.

use super::SysError;
use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

/// `SOL_PACKET` (linux/socket.h).
const SOL_PACKET: libc::c_int = 263;
/// Socket options of `SOL_PACKET` (linux/if_packet.h).
const PACKET_RX_RING: libc::c_int = 5;
const PACKET_STATISTICS: libc::c_int = 6;
const PACKET_VERSION: libc::c_int = 10;
const PACKET_FANOUT: libc::c_int = 18;
const PACKET_IGNORE_OUTGOING: libc::c_int = 23;
/// `TPACKET_V2` and `TPACKET_V3` (enum tpacket_versions).
const TPACKET_V2: libc::c_int = 1;
const TPACKET_V3: libc::c_int = 2;
/// `PACKET_FANOUT_HASH`: spread by the kernel's symmetric flow hash.
const PACKET_FANOUT_HASH: u32 = 0;
/// `PACKET_FANOUT_FLAG_DEFRAG`: reassemble IP fragments before choosing a socket.
const PACKET_FANOUT_FLAG_DEFRAG: u32 = 0x8000;
/// `PACKET_FANOUT_FLAG_UNIQUEID`: the kernel picks a group id no other socket uses.
const PACKET_FANOUT_FLAG_UNIQUEID: u32 = 0x2000;
/// `PACKET_FANOUT_FLAG_IGNORE_OUTGOING` (Linux 5.0+): a fanout group delivers through a hook
/// of its own, which ignores `PACKET_IGNORE_OUTGOING` on the member sockets.
const PACKET_FANOUT_FLAG_IGNORE_OUTGOING: u32 = 0x4000;
/// `ETH_P_ALL` (linux/if_ether.h).
const ETH_P_ALL: u16 = 0x0003;
/// Offset of `block_status` in `struct tpacket_block_desc`.
const BLOCK_STATUS_AT: usize = 8;

/// One classic BPF instruction (`struct sock_filter`), e.g. from libpcap's compiler.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SockFilter {
    /// Opcode.
    pub code: u16,
    /// Jump if true.
    pub jt: u8,
    /// Jump if false.
    pub jf: u8,
    /// Constant.
    pub k: u32,
}

impl SockFilter {
    /// An instruction from its text `code jt jf k` (how libpcap's compiled programs print
    /// one, e.g. `pcap::BpfInstruction`'s `Display`); `None` when the text is not that.
    pub fn from_text(text: &str) -> Option<SockFilter> {
        let mut w = text.split_whitespace().map(|w| w.parse::<u32>().ok());
        let (code, jt, jf, k) = (w.next()??, w.next()??, w.next()??, w.next()??);
        if w.next().is_some() {
            return None;
        }
        Some(SockFilter {
            code: u16::try_from(code).ok()?,
            jt: u8::try_from(jt).ok()?,
            jf: u8::try_from(jf).ok()?,
            k,
        })
    }
}

#[repr(C)]
struct SockFprog {
    len: libc::c_ushort,
    filter: *const SockFilter,
}

#[repr(C)]
struct TpacketReq3 {
    block_size: u32,
    block_nr: u32,
    frame_size: u32,
    frame_nr: u32,
    retire_blk_tov: u32,
    sizeof_priv: u32,
    feature_req_word: u32,
}

#[repr(C)]
struct TpacketReq {
    block_size: u32,
    block_nr: u32,
    frame_size: u32,
    frame_nr: u32,
}

#[repr(C)]
#[derive(Default)]
struct TpacketStatsV3 {
    packets: u32,
    drops: u32,
    freeze_q_cnt: u32,
}

/// How to open a ring.
#[derive(Debug, Clone)]
pub struct RingConfig<'a> {
    /// Device index (0: every device, like `-i any`).
    pub ifindex: u32,
    /// Bytes per block: a power of two, at least a page, and larger than the largest frame.
    pub block_size: usize,
    /// Number of blocks.
    pub block_count: usize,
    /// A block with frames goes to user space at most this long after it was opened (ms).
    pub retire_ms: u32,
    /// `Some(bytes)`: a `TPACKET_V2` ring of frame slots this large (a multiple of 16 that
    /// divides `block_size`), each handed over on its own as soon as it is written;
    /// `retire_ms` is then unused. `None`: `TPACKET_V3` blocks.
    pub frame_size: Option<usize>,
    /// The BPF program, compiled for raw IP (empty: everything).
    pub filter: &'a [SockFilter],
    /// Share the device's traffic with other rings by flow hash (`PACKET_FANOUT`).
    pub fanout: Option<Fanout>,
    /// Ask the kernel not to deliver frames this host sends (Linux 4.20+; older kernels
    /// deliver them and the reader must skip `PACKET_OUTGOING`).
    pub ignore_outgoing: bool,
}

/// A `PACKET_FANOUT` membership.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fanout {
    /// Start a group under an id the kernel picks unused (so another process's group is never
    /// joined by accident); [`PacketRing::fanout_id`] tells it to the other members.
    New,
    /// Join the group with this id.
    Join(u16),
}

/// Kernel counters of a ring since the last read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RingStats {
    /// Frames that passed the filter (including dropped ones).
    pub packets: u32,
    /// Frames dropped because no block was free.
    pub drops: u32,
}

/// A mapped `TPACKET_V3` (or, with a frame size, `TPACKET_V2`) receive ring.
#[derive(Debug)]
pub struct PacketRing {
    fd: OwnedFd,
    map: Arc<Mapping>,
    next: usize,
    /// Blocks (frame slots) taken so far.
    taken: u64,
    /// Slots handed out with bytes still held and when (in `taken`), oldest first (some may
    /// have been given back since: [`PacketRing::oldest_held_age`] drops those from the
    /// front).
    held: VecDeque<(usize, u64)>,
    /// Whether the kernel accepted `PACKET_IGNORE_OUTGOING`.
    pub ignores_outgoing: bool,
    fanout_id: Option<u16>,
    /// The last count [`PacketRing::waiting`] found, less the slots taken since: where its
    /// search starts. An atomic only so that `waiting` can take `&self` in a shared ring.
    waiting_hint: AtomicUsize,
}

/// The ring's memory, shared by the ring and the bytes held from it.
#[derive(Debug)]
struct Mapping {
    map: *mut u8,
    map_len: usize,
    block_size: usize,
    /// Bytes of what is handed out at once: a block (V3) or a frame slot (V2).
    slot_size: usize,
    /// Number of those.
    slot_count: usize,
    /// Where a slot's status word is: `block_status` of a block descriptor (V3), `tp_status`
    /// at the start of a frame (V2).
    status_at: usize,
    /// Per slot: bytes of it are held ([`HeldBytes`]), so its `TP_STATUS_USER` is ours and
    /// not a new block's.
    held: Box<[AtomicBool]>,
    /// Per slot: the reader's count of blocks taken when the slot was last held (tells a
    /// hold from an earlier one of the same slot in [`PacketRing::oldest_held_age`]).
    held_seq: Box<[AtomicU64]>,
}

// SAFETY: the mapping is reached only through this value, whose fields are never changed after
// it is made; what threads share in it is read through atomics (the status words and `held`)
// or is a held slot's bytes, which nobody writes (the kernel writes only slots it owns).
unsafe impl Send for Mapping {}
// SAFETY: as above: `&Mapping` gives only atomic access and reads of held slots.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Byte offset of slot `i` in the mapping: frames never straddle blocks, so a block's
    /// tail shorter than a frame is skipped (none is when the frame size divides the block).
    fn slot_at(&self, i: usize) -> usize {
        let per_block = self.block_size / self.slot_size;
        (i / per_block) * self.block_size + (i % per_block) * self.slot_size
    }

    fn status(&self, i: usize) -> &AtomicU32 {
        // SAFETY: slot `i` < slot_count lies inside the mapping, whose start is page-aligned;
        // slots start at multiples of 16 (blocks are pages, frames TPACKET_ALIGNMENT), so the
        // status word (offset 8 of a block, 0 of a frame) is 4-byte aligned; the kernel and we
        // access it as one 32-bit word, which is what AtomicU32 is.
        unsafe { &*(self.map.add(self.slot_at(i) + self.status_at) as *const AtomicU32) }
    }

    /// Whether slot `i` holds frames the kernel handed over and we have not read yet.
    fn ready(&self, i: usize) -> bool {
        // Acquire on `held` first: a slot given back is marked so only after its status went
        // back to the kernel, so a slot seen unheld shows the kernel's status or a newer one.
        !self.held[i].load(Ordering::Acquire)
            && self.status(i).load(Ordering::Acquire) & crate::capture::tpacket::TP_STATUS_USER != 0
    }

    /// Gives slot `i` back to the kernel.
    fn give_back(&self, i: usize) {
        // Release: our reads of the block happen before the kernel may write it again.
        self.status(i)
            .store(crate::capture::tpacket::TP_STATUS_KERNEL, Ordering::Release);
        self.held[i].store(false, Ordering::Release);
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `map`/`map_len` are exactly what mmap returned, and nothing refers to the
        // mapping any more (the ring and every held slot own a counted reference to it). The
        // pages outlive the socket (mmap took references to them), so the socket may be closed
        // first.
        unsafe {
            libc::munmap(self.map.cast(), self.map_len);
        }
    }
}

fn last(call: &str) -> SysError {
    SysError::Call {
        call: call.to_string(),
        source: io::Error::last_os_error(),
    }
}

fn setsockopt<T>(fd: RawFd, opt: libc::c_int, val: &T, name: &str) -> Result<(), SysError> {
    // SAFETY: `val` points to a live `T` for the duration of the call and the length passed is
    // exactly its size; the kernel only reads it.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            SOL_PACKET,
            opt,
            (val as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(last(name));
    }
    Ok(())
}

/// The index of device `name` (`if_nametoindex`).
pub fn interface_index(name: &str) -> Result<u32, SysError> {
    let c = std::ffi::CString::new(name).map_err(|_| SysError::Call {
        call: format!("if_nametoindex({name:?})"),
        source: io::Error::from(io::ErrorKind::InvalidInput),
    })?;
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if i == 0 {
        return Err(last(&format!("if_nametoindex({name:?})")));
    }
    Ok(i)
}

/// How many of `n` slots in a row are ready, given `ready(k)`: whether the slot `k` places
/// after the reader's next one is; the kernel fills them in order, so `ready` is true up to
/// the count and false after it. `hint` is a guess of the count (the last one found): three
/// looks confirm it, and a wrong one still narrows the binary search (a dozen looks for
/// thousands of slots, each at a block of its own in a mapping of hundreds of MB, which the
/// worker pays once or twice per block it reads).
fn count_ready(n: usize, hint: usize, ready: impl Fn(usize) -> bool) -> usize {
    if n == 0 || !ready(0) {
        return 0;
    }
    // `lo` slots are known to be ready, at most `hi` are. From the hint, steps of 1, 2, 4...
    // towards the count bound it (the count moves by a few between looks), then halving.
    let (mut lo, mut hi) = (1, n);
    let h = hint.clamp(1, n);
    let mut step = 1;
    if ready(h - 1) {
        lo = h;
        while lo < hi {
            let probe = (h + step).min(hi);
            if !ready(probe - 1) {
                hi = probe - 1;
                break;
            }
            lo = probe;
            step *= 2;
        }
    } else {
        hi = h - 1;
        while lo < hi {
            let probe = h.saturating_sub(step).max(lo);
            if ready(probe - 1) {
                lo = probe;
                break;
            }
            hi = probe - 1;
            step *= 2;
        }
    }
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if ready(mid - 1) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    lo
}

impl PacketRing {
    /// Opens, filters, maps and binds the ring (needs `CAP_NET_RAW`).
    pub fn open(cfg: &RingConfig<'_>) -> Result<PacketRing, SysError> {
        if let Some(f) = cfg.frame_size {
            // The kernel refuses these too (EINVAL); ours would divide by zero first.
            if f < 80 || f % 16 != 0 || f > cfg.block_size {
                return Err(SysError::Call {
                    call: format!("packet ring: frame size {f}"),
                    source: io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "must be a multiple of 16 between 80 and the block size",
                    ),
                });
            }
        }
        // Protocol 0 until bind: no frame is queued before the filter is in place.
        // SAFETY: plain integer arguments.
        let raw =
            unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(last("socket(AF_PACKET, SOCK_DGRAM)"));
        }
        // SAFETY: `raw` is a descriptor we just opened and own alone.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let s = fd.as_raw_fd();
        if !cfg.filter.is_empty() {
            let prog = SockFprog {
                len: cfg.filter.len().min(usize::from(u16::MAX)) as libc::c_ushort,
                filter: cfg.filter.as_ptr(),
            };
            // SAFETY: `prog` points to `len` instructions that live across the call; the kernel
            // copies them.
            let rc = unsafe {
                libc::setsockopt(
                    s,
                    libc::SOL_SOCKET,
                    libc::SO_ATTACH_FILTER,
                    (&prog as *const SockFprog).cast(),
                    std::mem::size_of::<SockFprog>() as libc::socklen_t,
                )
            };
            if rc != 0 {
                return Err(last("setsockopt(SO_ATTACH_FILTER)"));
            }
        }
        let version = if cfg.frame_size.is_some() {
            (&TPACKET_V2, "setsockopt(PACKET_VERSION, TPACKET_V2)")
        } else {
            (&TPACKET_V3, "setsockopt(PACKET_VERSION, TPACKET_V3)")
        };
        setsockopt(s, PACKET_VERSION, version.0, version.1)?;
        let ignores_outgoing = cfg.ignore_outgoing
            && setsockopt(s, PACKET_IGNORE_OUTGOING, &1 as &libc::c_int, "").is_ok();
        let (slot_size, slot_count, status_at) = match cfg.frame_size {
            Some(frame) => {
                let frame_nr = (cfg.block_size / frame) * cfg.block_count;
                let req = TpacketReq {
                    block_size: cfg.block_size as u32,
                    block_nr: cfg.block_count as u32,
                    frame_size: frame as u32,
                    frame_nr: frame_nr as u32,
                };
                setsockopt(s, PACKET_RX_RING, &req, "setsockopt(PACKET_RX_RING)")?;
                (frame, frame_nr, 0)
            }
            None => {
                let frame_size = 2048u32;
                let req = TpacketReq3 {
                    block_size: cfg.block_size as u32,
                    block_nr: cfg.block_count as u32,
                    frame_size,
                    frame_nr: (cfg.block_size as u32 / frame_size) * cfg.block_count as u32,
                    retire_blk_tov: cfg.retire_ms.max(1),
                    sizeof_priv: 0,
                    feature_req_word: 0,
                };
                setsockopt(s, PACKET_RX_RING, &req, "setsockopt(PACKET_RX_RING)")?;
                (cfg.block_size, cfg.block_count, BLOCK_STATUS_AT)
            }
        };
        let map_len = cfg.block_size * cfg.block_count;
        // SAFETY: a new shared mapping of the ring the kernel just allocated for `s`; no
        // address hint, so it cannot overlap anything of ours.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                s,
                0,
            )
        };
        if map == libc::MAP_FAILED {
            return Err(last("mmap(packet ring)"));
        }
        let ring = PacketRing {
            fd,
            map: Arc::new(Mapping {
                map: map.cast(),
                map_len,
                block_size: cfg.block_size,
                slot_size,
                slot_count,
                status_at,
                held: (0..slot_count).map(|_| AtomicBool::new(false)).collect(),
                held_seq: (0..slot_count).map(|_| AtomicU64::new(0)).collect(),
            }),
            next: 0,
            taken: 0,
            held: VecDeque::new(),
            ignores_outgoing,
            fanout_id: None,
            waiting_hint: AtomicUsize::new(0),
        };
        // SAFETY: sockaddr_ll is plain integers; all-zero is valid before we fill it.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = ETH_P_ALL.to_be();
        sll.sll_ifindex = cfg.ifindex as i32;
        // SAFETY: `sll` is a valid sockaddr_ll and we pass its exact size.
        let rc = unsafe {
            libc::bind(
                s,
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(last("bind(AF_PACKET)"));
        }
        let mut ring = ring;
        if let Some(f) = cfg.fanout {
            let mut mode = PACKET_FANOUT_HASH | PACKET_FANOUT_FLAG_DEFRAG;
            if ring.ignores_outgoing {
                mode |= PACKET_FANOUT_FLAG_IGNORE_OUTGOING;
            }
            let val = match f {
                Fanout::New => (mode | PACKET_FANOUT_FLAG_UNIQUEID) << 16,
                Fanout::Join(id) => u32::from(id) | (mode << 16),
            };
            setsockopt(s, PACKET_FANOUT, &val, "setsockopt(PACKET_FANOUT)")?;
            let mut got: u32 = 0;
            let mut len = std::mem::size_of::<u32>() as libc::socklen_t;
            // SAFETY: `got` is writable for `len` bytes and `len` is passed by pointer.
            let rc = unsafe {
                libc::getsockopt(
                    s,
                    SOL_PACKET,
                    PACKET_FANOUT,
                    (&mut got as *mut u32).cast(),
                    &mut len,
                )
            };
            if rc != 0 {
                return Err(last("getsockopt(PACKET_FANOUT)"));
            }
            ring.fanout_id = Some(got as u16);
        }
        Ok(ring)
    }

    /// The socket, to wait on with `poll` (readable when a block is ready).
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Whether the kernel has handed the next block (or frame) over (without taking it).
    pub fn has_block(&self) -> bool {
        self.map.ready(self.next)
    }

    /// Whether the kernel has handed over the block (or frame) `ahead` places after the next
    /// one as well.
    fn ready_ahead(&self, ahead: usize) -> bool {
        let i = (self.next + ahead) % self.map.slot_count;
        self.map.ready(i)
    }

    /// How many blocks (frames of a `TPACKET_V2` ring) the kernel has handed over and the
    /// reader has not taken yet: how far behind the reader is, out of
    /// [`PacketRing::slot_count`]. The kernel fills them in order, so a search of their status
    /// words from the last count finds it ([`count_ready`]: three loads when it did not move).
    pub fn waiting(&self) -> usize {
        let hint = self.waiting_hint.load(Ordering::Relaxed);
        let n = count_ready(self.map.slot_count, hint, |k| self.ready_ahead(k));
        self.waiting_hint.store(n, Ordering::Relaxed);
        n
    }

    /// How many blocks (frame slots) the kernel has handed over since the ring was opened:
    /// those taken and those waiting. Its growth over time is the rate the kernel fills the
    /// ring at.
    pub fn filled(&self) -> u64 {
        self.taken + self.waiting() as u64
    }

    /// Blocks in the ring (frame slots of a `TPACKET_V2` ring).
    pub fn slot_count(&self) -> usize {
        self.map.slot_count
    }

    /// Whether bytes of the block (frame slot) taken last are still held. The kernel's `poll`
    /// then says the ring is readable whether a new block is there or not (it looks at the
    /// block before the one it is filling, and takes any that is not its own for one waiting
    /// to be read): poll the ring with a timeout instead of its descriptor.
    pub fn last_taken_held(&self) -> bool {
        let n = self.map.slot_count;
        self.map.held[(self.next + n - 1) % n].load(Ordering::Acquire)
    }

    /// How many blocks (frame slots) the reader has taken since the one `h` lies in (1: the
    /// block taken last); `None` for bytes of another ring.
    pub fn held_age(&self, h: &HeldBytes) -> Option<usize> {
        // `h` keeps its slot held, so the slot's count is its hold's.
        Arc::ptr_eq(&h.pin.map, &self.map)
            .then(|| (self.taken - self.map.held_seq[h.pin.index].load(Ordering::Relaxed)) as usize)
    }

    /// How many blocks (frame slots) the reader has taken since the oldest one whose bytes are
    /// still held, 0 when none is. The kernel stops at that block once it has filled the rest
    /// of the ring: at [`PacketRing::slot_count`] the ring is full and frames are dropped.
    pub fn oldest_held_age(&mut self) -> usize {
        while let Some(&(i, seq)) = self.held.front() {
            // Still held, and by this hold (not a later one of the same slot).
            if self.map.held[i].load(Ordering::Acquire)
                && self.map.held_seq[i].load(Ordering::Relaxed) == seq
            {
                return (self.taken - seq) as usize;
            }
            self.held.pop_front();
        }
        0
    }

    /// The next block the kernel has handed over, if any (a `TPACKET_V2` ring: the next frame
    /// slot). The frames it holds are valid until the returned value is dropped, which gives
    /// the block back.
    pub fn next_block(&mut self) -> Option<RingBlock<'_>> {
        let i = self.next;
        // Acquire: the frames' bytes were written before the kernel set the status. A slot
        // still held is not a new one: the kernel has come round to it and waits there.
        if !self.map.ready(i) {
            return None;
        }
        // SAFETY: the slot is ours (TP_STATUS_USER) until we set it back to TP_STATUS_KERNEL
        // in RingBlock's drop or the last HeldBytes' of it; the slice covers slot `i` only,
        // inside the mapping, which lives as long as the ring.
        let bytes = unsafe {
            std::slice::from_raw_parts(self.map.map.add(self.map.slot_at(i)), self.map.slot_size)
        };
        Some(RingBlock {
            ring: self,
            bytes,
            index: i,
            pin: std::cell::OnceCell::new(),
        })
    }

    /// Kernel counters since the last call (reading resets them).
    pub fn stats(&self) -> io::Result<RingStats> {
        let mut st = TpacketStatsV3::default();
        let mut len = std::mem::size_of::<TpacketStatsV3>() as libc::socklen_t;
        // SAFETY: `st` is writable for `len` bytes and `len` is passed by pointer as required.
        let rc = unsafe {
            libc::getsockopt(
                self.fd(),
                SOL_PACKET,
                PACKET_STATISTICS,
                (&mut st as *mut TpacketStatsV3).cast(),
                &mut len,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(RingStats {
            packets: st.packets,
            drops: st.drops,
        })
    }

    /// The fanout group this ring is in, for the other members to join.
    pub fn fanout_id(&self) -> Option<u16> {
        self.fanout_id
    }

    /// Bytes of the mapping (what `-B` pays for).
    pub fn mapped_bytes(&self) -> usize {
        self.map.map_len
    }
}

/// A block handed over by the kernel; dropping it gives it back.
#[derive(Debug)]
pub struct RingBlock<'a> {
    ring: &'a mut PacketRing,
    bytes: &'a [u8],
    index: usize,
    /// Made by the first [`RingBlock::hold`]: the block then goes back with the last
    /// [`HeldBytes`] of it.
    pin: std::cell::OnceCell<Arc<Pin>>,
}

/// A block (or frame slot) kept from the kernel while bytes of it are held.
#[derive(Debug)]
struct Pin {
    map: Arc<Mapping>,
    index: usize,
}

impl Drop for Pin {
    fn drop(&mut self) {
        self.map.give_back(self.index);
    }
}

/// Bytes of a ring block kept in place ([`RingBlock::hold`]); the block goes back to the
/// kernel when the last of its held bytes is dropped. Cheap to clone.
#[derive(Debug, Clone)]
pub struct HeldBytes {
    pin: Arc<Pin>,
    /// Offset in the block and length.
    off: u32,
    len: u32,
}

impl std::ops::Deref for HeldBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        let m = &self.pin.map;
        // SAFETY: the slot is held (its status stays TP_STATUS_USER, so the kernel does not
        // write it) for as long as this value's pin lives, and the mapping lives as long as the
        // pin; `off + len` lies inside the slot (checked in RingBlock::hold, only shrunk since).
        unsafe {
            std::slice::from_raw_parts(
                m.map.add(m.slot_at(self.pin.index) + self.off as usize),
                self.len as usize,
            )
        }
    }
}

/// Keeps part of a block read in place, for a reader that hands out sub-slices of it
/// ([`RingBlock`] does; a source that copied its frames holds nothing).
pub trait HoldBytes {
    /// `part`, which must lie inside this block, as [`HeldBytes`]; `None` otherwise.
    fn hold(&self, part: &[u8]) -> Option<HeldBytes>;
}

impl RingBlock<'_> {
    /// Whether the kernel had dropped packets since the ring's drop counter was last read
    /// ([`PacketRing::stats`]) when it handed this block over: some of the traffic that came
    /// before this block's frames is missing.
    pub fn losing(&self) -> bool {
        self.ring.map.status(self.index).load(Ordering::Relaxed)
            & crate::capture::tpacket::TP_STATUS_LOSING
            != 0
    }

    /// The block's bytes (read them with [`crate::capture::tpacket::BlockView`]; a
    /// `TPACKET_V2` frame slot with [`crate::capture::tpacket::frame_v2`]).
    pub fn bytes(&self) -> &[u8] {
        self.bytes
    }
}

impl HoldBytes for RingBlock<'_> {
    fn hold(&self, part: &[u8]) -> Option<HeldBytes> {
        let base = self.bytes.as_ptr() as usize;
        let at = (part.as_ptr() as usize).checked_sub(base)?;
        if at + part.len() > self.bytes.len() {
            return None;
        }
        let pin = self.pin.get_or_init(|| {
            self.ring.map.held_seq[self.index].store(self.ring.taken, Ordering::Relaxed);
            self.ring.map.held[self.index].store(true, Ordering::Release);
            Arc::new(Pin {
                map: self.ring.map.clone(),
                index: self.index,
            })
        });
        Some(HeldBytes {
            pin: pin.clone(),
            off: at as u32,
            len: part.len() as u32,
        })
    }
}

impl Drop for RingBlock<'_> {
    fn drop(&mut self) {
        match self.pin.take() {
            // Given back by the last held bytes of it (perhaps this drop).
            Some(pin) => {
                let seq = self.ring.map.held_seq[self.index].load(Ordering::Relaxed);
                self.ring.held.push_back((self.index, seq));
                drop(pin);
            }
            None => self.ring.map.give_back(self.index),
        }
        self.ring.next = (self.index + 1) % self.ring.map.slot_count;
        self.ring.taken += 1;
        let hint = self.ring.waiting_hint.get_mut();
        *hint = hint.saturating_sub(1);
    }
}

/// An `eventfd` that wakes a thread sleeping in `poll`, written only when that thread said it
/// is about to sleep (so a busy thread costs its producers no system call).
#[derive(Debug)]
pub struct Wake {
    fd: OwnedFd,
    parked: std::sync::atomic::AtomicBool,
}

impl Wake {
    /// A new non-blocking eventfd.
    pub fn new() -> Result<Wake, SysError> {
        // SAFETY: plain integer arguments.
        let raw = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if raw < 0 {
            return Err(last("eventfd"));
        }
        Ok(Wake {
            // SAFETY: a descriptor we just opened and own alone.
            fd: unsafe { OwnedFd::from_raw_fd(raw) },
            parked: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// The descriptor to `poll` (readable after [`Wake::notify`] of a parked thread).
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Producers: call after queueing work.
    pub fn notify(&self) {
        if self.parked.swap(false, Ordering::SeqCst) {
            let one: u64 = 1;
            // SAFETY: writes 8 bytes from a live u64; an eventfd takes exactly that. A full
            // counter (EAGAIN) still leaves the fd readable, which is all we need.
            unsafe {
                libc::write(self.fd(), (&one as *const u64).cast(), 8);
            }
        }
    }

    /// The consumer, before it checks its queues one last time and sleeps.
    pub fn park(&self) {
        self.parked.store(true, Ordering::SeqCst);
    }

    /// The consumer, after waking (or deciding not to sleep): clears the flag, and the counter
    /// when `readable` (`poll` reported the descriptor readable). A consumer woken by anything
    /// else makes no system call here; a count a producer writes after that stays, and the
    /// next `poll` returns at once and drains it.
    pub fn unpark(&self, readable: bool) {
        self.parked.store(false, Ordering::SeqCst);
        if !readable {
            return;
        }
        let mut v: u64 = 0;
        // SAFETY: reads at most 8 bytes into a live u64; EAGAIN (nothing to read) is fine.
        unsafe {
            libc::read(self.fd(), (&mut v as *mut u64).cast(), 8);
        }
    }
}

/// Reads and clears the pending error of socket `fd` (`SO_ERROR`), e.g. `ENETDOWN` on a
/// packet socket whose device went down; `None` when there is none. (A packet socket in error
/// stays readable for `poll` until the error is taken.)
pub fn take_socket_error(fd: RawFd) -> io::Result<Option<io::Error>> {
    let mut err: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `err` is writable for `len` bytes and `len` is passed by pointer, as getsockopt
    // requires; an invalid `fd` makes the call fail, nothing else.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            (&mut err as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((err != 0).then(|| io::Error::from_raw_os_error(err)))
}

/// Waits until one of `fds` is readable or `timeout_ms` passes (-1: no limit); returns the
/// readable ones' `revents` in `ready` (same order). EINTR counts as a timeout.
pub fn poll_many(fds: &[RawFd], timeout_ms: i32, ready: &mut Vec<bool>) -> io::Result<()> {
    let mut pfds: Vec<PollFd> = fds.iter().map(|&fd| PollFd::new(fd, true, false)).collect();
    poll_fds(&mut pfds, timeout_ms)?;
    ready.clear();
    ready.extend(pfds.iter().map(|p| p.is_ready()));
    Ok(())
}

/// One descriptor for [`poll_fds`]: what to wait for, and what happened.
#[derive(Debug, Clone, Copy)]
#[repr(transparent)]
pub struct PollFd(libc::pollfd);

impl PollFd {
    /// Waits for `fd` to be readable and/or writable (errors and hang-ups are always reported).
    pub fn new(fd: RawFd, read: bool, write: bool) -> PollFd {
        let mut events = 0;
        if read {
            events |= libc::POLLIN;
        }
        if write {
            events |= libc::POLLOUT;
        }
        PollFd(libc::pollfd {
            fd,
            events,
            revents: 0,
        })
    }

    /// The descriptor.
    pub fn fd(&self) -> RawFd {
        self.0.fd
    }

    /// Whether the last [`poll_fds`] reported anything for it (readable, writable, error or
    /// hang-up).
    pub fn is_ready(&self) -> bool {
        self.0.revents != 0
    }
}

/// Waits until one of `fds` is ready for what it asks or `timeout_ms` passes (-1: no limit);
/// each entry's readiness is then in it. EINTR counts as a timeout (nothing ready).
pub fn poll_fds(fds: &mut [PollFd], timeout_ms: i32) -> io::Result<()> {
    for p in fds.iter_mut() {
        p.0.revents = 0;
    }
    // SAFETY: `PollFd` is `repr(transparent)` over `libc::pollfd`, so `fds` is a valid array of
    // exactly `len` pollfds, borrowed mutably across the call.
    let rc = unsafe {
        libc::poll(
            fds.as_mut_ptr().cast::<libc::pollfd>(),
            fds.len() as libc::nfds_t,
            timeout_ms,
        )
    };
    if rc < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EINTR) {
            return Ok(());
        }
        return Err(e);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::count_ready;

    /// Every count of ready slots in rings of up to 40, from every hint: the same count as
    /// looking at each slot, and from a right hint in three looks.
    #[test]
    fn count_ready_finds_the_count_from_any_hint() {
        for n in (0..=40usize).chain([2047, 2048]) {
            // Every count and hint of the small rings; of the default ring's 2,048 blocks, a
            // sample (with the counts next to each hint).
            let by = if n > 40 { 61 } else { 1 };
            let counts = (0..=n).step_by(by).chain([1, n.saturating_sub(1), n]);
            for w in counts.filter(|&w| w <= n) {
                for hint in (0..=n + 2)
                    .step_by(by)
                    .flat_map(|h| [h, h + 1, h.saturating_sub(1), w + 2, w.saturating_sub(3)])
                {
                    let looks = std::cell::Cell::new(0);
                    let got = count_ready(n, hint, |k| {
                        assert!(k < n.max(1), "looked past the ring: {k} of {n}");
                        looks.set(looks.get() + 1);
                        k < w
                    });
                    assert_eq!(got, w, "n {n}, ready {w}, hint {hint}");
                    if hint == w && w > 1 {
                        assert!(looks.get() <= 3, "n {n}, ready {w}: {} looks", looks.get());
                    }
                    let log = (usize::BITS - n.leading_zeros()) as usize;
                    assert!(
                        looks.get() <= 2 * log + 3,
                        "n {n}, ready {w}, hint {hint}: {} looks",
                        looks.get()
                    );
                    if w > 0 && hint.abs_diff(w) <= 3 {
                        assert!(
                            looks.get() <= 7,
                            "n {n}, ready {w}, hint {hint}: {} looks",
                            looks.get()
                        );
                    }
                }
            }
        }
    }

    use super::*;

    #[test]
    fn filter_instructions_from_text() {
        assert_eq!(
            SockFilter::from_text("48 0 0 0"),
            Some(SockFilter {
                code: 48,
                jt: 0,
                jf: 0,
                k: 0
            })
        );
        assert_eq!(
            SockFilter::from_text("21 0 5 4294967295"),
            Some(SockFilter {
                code: 21,
                jt: 0,
                jf: 5,
                k: u32::MAX
            })
        );
        for bad in [
            "",
            "1 2 3",
            "1 2 3 4 5",
            "70000 0 0 0",
            "1 300 0 0",
            "a b c d",
        ] {
            assert_eq!(SockFilter::from_text(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn socket_error_taken_once() {
        let w = Wake::new().unwrap();
        assert!(take_socket_error(w.fd()).is_err(), "not a socket");
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        use std::os::fd::AsRawFd;
        assert!(take_socket_error(s.as_raw_fd()).unwrap().is_none());
        assert!(take_socket_error(-1).is_err());
    }

    #[test]
    fn wake_is_readable_only_when_parked() {
        let w = Wake::new().unwrap();
        let mut ready = Vec::new();
        w.notify();
        poll_many(&[w.fd()], 0, &mut ready).unwrap();
        assert_eq!(ready, vec![false], "a busy consumer is not woken");
        w.park();
        w.notify();
        poll_many(&[w.fd()], 0, &mut ready).unwrap();
        assert_eq!(ready, vec![true]);
        // Woken by something else: the counter stays for the next poll.
        w.unpark(false);
        poll_many(&[w.fd()], 0, &mut ready).unwrap();
        assert_eq!(ready, vec![true], "a count left is seen by the next poll");
        w.unpark(true);
        poll_many(&[w.fd()], 0, &mut ready).unwrap();
        assert_eq!(
            ready,
            vec![false],
            "unpark clears the counter it was told of"
        );
    }
}
