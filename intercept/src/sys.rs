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

/// Hands the free pages of every malloc arena back to the kernel (glibc's `malloc_trim`); a
/// no-op elsewhere. glibc returns memory on its own only from the top of the main heap: pages
/// freed inside a heap, and in the per-thread arenas (capture and tokio workers), stay
/// resident after a peak. It walks the free chunks of each arena under that arena's lock, so
/// call it every few seconds, not per packet.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only reads and updates the allocator's own state, under its locks; it
    // is safe to call at any time from any thread.
    let _ = unsafe { libc::malloc_trim(0) };
}
