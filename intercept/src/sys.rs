//! The system calls intercept needs that std does not offer.
#![allow(unsafe_code)]

/// Raises the soft open-file limit to the hard limit; returns (old soft, new soft).
pub fn raise_nofile_limit() -> std::io::Result<(u64, u64)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit for getrlimit to fill.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let old = lim.rlim_cur;
    if lim.rlim_cur < lim.rlim_max {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: `lim` is a valid rlimit; raising the soft limit up to the hard one is allowed.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok((old, lim.rlim_cur))
}

/// A capture ring the runtime waits on: readable when the kernel has handed a frame (or a
/// block) over, in error when the device went down or away.
pub struct AsyncRing(tokio::io::unix::AsyncFd<RingSocket>);

/// The ring, seen by the runtime as its socket.
pub struct RingSocket(pub tcpclone::sys::ring::PacketRing);

impl std::os::fd::AsRawFd for RingSocket {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.0.fd()
    }
}

impl AsyncRing {
    /// Registers `ring` with the current runtime's reactor, for reading and errors.
    pub fn new(ring: tcpclone::sys::ring::PacketRing) -> std::io::Result<AsyncRing> {
        use tokio::io::Interest;
        // SAFETY: the AsyncFd owns the ring, which owns its socket: the descriptor stays open,
        // and `fd()` names the same one, until the AsyncFd is dropped or `into_inner` returns
        // the ring (after deregistering it).
        let fd = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(
                RingSocket(ring),
                Interest::READABLE | Interest::ERROR,
            )
        }
        .map_err(std::io::Error::from)?;
        Ok(AsyncRing(fd))
    }

    /// Waits until the ring is readable or in error and clears that readiness, so that the
    /// next wait sleeps until a frame or an error comes after this call (one that came since
    /// the readiness was seen keeps it set). Read the ring dry after each wait.
    pub async fn wait(&mut self) -> std::io::Result<()> {
        use tokio::io::Interest;
        let mut g = self
            .0
            .ready_mut(Interest::READABLE | Interest::ERROR)
            .await?;
        g.clear_ready();
        Ok(())
    }

    /// The ring.
    pub fn ring(&mut self) -> &mut tcpclone::sys::ring::PacketRing {
        &mut self.0.get_mut().0
    }

    /// The ring, no longer registered.
    pub fn into_inner(self) -> tcpclone::sys::ring::PacketRing {
        self.0.into_inner().0
    }
}
