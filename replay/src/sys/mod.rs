//! The only unsafe code of `replay`, system calls only (STYLE.md rule 23): the interface
//! queries (index, MTU, hardware type), the AF_PACKET sender ([`sender`]), and the calls the
//! paced sender's clock and scheduling make ([`thread`]). What to do with their results (retry
//! policy, frame size checks, ring geometry, RT throttling) lives in safe modules:
//! [`crate::tx`], [`crate::clock`], [`crate::sched`].
#![allow(unsafe_code)]

pub mod sender;
pub mod thread;

pub use sender::ReplaySender;
pub use thread::{
    monotonic_ns, request_short_slice, set_fifo, sleep_until_monotonic, tighten_timer_slack,
};

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// ARPHRD_ETHER: the interface carries Ethernet frames.
pub const ARPHRD_ETHER: u16 = 1;

/// What replay needs to know about an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayInterface {
    /// Interface index.
    pub index: i32,
    /// MTU (largest network-layer packet).
    pub mtu: u32,
    /// Hardware type (ARPHRD_*).
    pub hw_type: u16,
}

fn ifreq_for(name: &str) -> io::Result<libc::ifreq> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a valid interface name",
        ));
    }
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    Ok(req)
}

pub(crate) fn socket(proto: u16) -> io::Result<OwnedFd> {
    // SAFETY: plain system call; the returned descriptor is checked and then owned.
    let fd = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            proto.to_be() as i32,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Looks up an interface by name (in the current network namespace).
pub fn interface(name: &str) -> io::Result<ReplayInterface> {
    let cname = CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in name"))?;
    // SAFETY: cname is a valid NUL-terminated string.
    let index = unsafe { libc::if_nametoindex(cname.as_ptr()) };
    if index == 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = socket(0)?;
    let mut req = ifreq_for(name)?;
    // SAFETY: SIOCGIFMTU fills ifr_ifru.ifru_mtu of the ifreq we own.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCGIFMTU, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the ioctl above wrote the mtu member of the union.
    let mtu = unsafe { req.ifr_ifru.ifru_mtu } as u32;
    let mut req = ifreq_for(name)?;
    // SAFETY: SIOCGIFHWADDR fills ifr_ifru.ifru_hwaddr of the ifreq we own.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCGIFHWADDR, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the ioctl above wrote the hwaddr member of the union.
    let hw_type = unsafe { req.ifr_ifru.ifru_hwaddr.sa_family };
    Ok(ReplayInterface {
        index: index as i32,
        mtu,
        hw_type,
    })
}
