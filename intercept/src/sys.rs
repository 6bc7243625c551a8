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

/// Reads and clears the pending error of socket `fd` (`SO_ERROR`), e.g. `ENETDOWN` on a
/// packet socket whose device went down; `None` when there is none.
pub fn take_socket_error(fd: std::os::fd::RawFd) -> std::io::Result<Option<std::io::Error>> {
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
        return Err(std::io::Error::last_os_error());
    }
    Ok((err != 0).then(|| std::io::Error::from_raw_os_error(err)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_error_of_a_healthy_socket_and_of_no_socket() {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&s);
        assert!(take_socket_error(fd).unwrap().is_none());
        assert!(take_socket_error(-1).is_err());
    }
}
