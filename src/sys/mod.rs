//! Least privilege and log files for the tcpclone binaries: the library's one module that makes
//! system calls.
//!
//! tcpcopy and intercept open what needs privileges first (capture handles, raw sockets, the
//! listening socket, log and pid files), then call [`drop_privileges`]: the process switches to
//! an unprivileged user and keeps only `CAP_NET_RAW`, which a capture handle needs to be reopened
//! after its interface went down. [`LogFile`] is a log writer that SIGHUP handlers reopen (for
//! logrotate); [`chown_to_user`] hands a file created as root to that user first.
//!
//! Must never: run after the caller has started threads (`capset` changes only the calling
//! thread, so the other threads would keep every capability), or log per packet.
#![allow(unsafe_code)]

pub mod ring;

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// `CAP_NET_RAW` (linux/capability.h): raw and packet sockets.
pub const CAP_NET_RAW: u32 = 13;
/// `_LINUX_CAPABILITY_VERSION_3` (linux/capability.h): 64-bit capability sets in two words.
const CAP_VERSION_3: u32 = 0x2008_0522;

/// Errors from [`drop_privileges`] and friends: what failed and on what.
#[derive(Debug, thiserror::Error)]
pub enum SysError {
    /// No such user in the password database.
    #[error("--user {0:?}: no such user")]
    NoSuchUser(String),
    /// A system call failed.
    #[error("{call}: {source}")]
    Call {
        /// The call (and its argument) that failed.
        call: String,
        /// The OS error.
        source: io::Error,
    },
    /// After the switch the process could still become root again.
    #[error("privileges not dropped: setuid(0) still succeeds")]
    StillRoot,
    /// `--user` names root (uid 0): running as root is what the switch is for.
    #[error("--user {0:?} is root: name an unprivileged user (e.g. nobody)")]
    RootUser(String),
}

fn call_err(call: impl Into<String>) -> SysError {
    SysError::Call {
        call: call.into(),
        source: io::Error::last_os_error(),
    }
}

/// A user's ids from the password database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserIds {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
}

/// What [`drop_privileges`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// Switched from root to this user.
    Switched(UserIds),
    /// Not root: nothing to switch; capabilities other than `CAP_NET_RAW` (if kept) were cleared.
    NotRoot,
}

/// Looks `name` up in the password database (numeric ids are accepted as `uid` or `uid:gid`).
pub fn lookup_user(name: &str) -> Result<UserIds, SysError> {
    if let Some((u, g)) = name.split_once(':') {
        if let (Ok(uid), Ok(gid)) = (u.parse(), g.parse()) {
            return Ok(UserIds { uid, gid });
        }
    }
    let cname = CString::new(name).map_err(|_| SysError::NoSuchUser(name.to_string()))?;
    let mut pwd: libc::passwd = {
        // SAFETY: passwd is a plain C struct of integers and pointers; all-zero is a valid value
        // that getpwnam_r overwrites.
        unsafe { std::mem::zeroed() }
    };
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the duration of the call; `buf` is writable for its
    // length; getpwnam_r writes only into `pwd`, `buf` and `result`.
    let rc = unsafe {
        libc::getpwnam_r(
            cname.as_ptr(),
            &mut pwd,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        )
    };
    if rc != 0 || result.is_null() {
        if let Ok(uid) = name.parse::<u32>() {
            return Ok(UserIds { uid, gid: uid });
        }
        return Err(SysError::NoSuchUser(name.to_string()));
    }
    Ok(UserIds {
        uid: pwd.pw_uid,
        gid: pwd.pw_gid,
    })
}

/// Gives `path` to `user` (so that the user can reopen it after [`drop_privileges`]). A no-op
/// when not root. Follows nothing: a symlink at `path` is refused (ELOOP), so a link planted
/// in a directory another user can write cannot turn this into a chown of any file.
pub fn chown_to_user(path: &Path, user: &str) -> Result<(), SysError> {
    if !is_root() {
        return Ok(());
    }
    let f = open_nofollow(path, false).map_err(|e| SysError::Call {
        call: format!("open {}", path.display()),
        source: e,
    })?;
    give_to_user(&f, path, user)
}

/// Gives the open file `f` (opened from `path`) to `user` through its descriptor (`fchown`),
/// so what is chowned is what was opened, not whatever the path names by then. A no-op when
/// not root.
pub fn give_to_user(f: &File, path: &Path, user: &str) -> Result<(), SysError> {
    if !is_root() {
        return Ok(());
    }
    let ids = lookup_user(user)?;
    std::os::unix::fs::fchown(f, Some(ids.uid), Some(ids.gid)).map_err(|e| SysError::Call {
        call: format!("fchown {}", path.display()),
        source: e,
    })
}

/// Opens `path` without following a symlink in its last component (`O_NOFOLLOW`: a symlink is
/// refused with ELOOP): read-only, or for appending (created, mode 0644) with `append`.
pub fn open_nofollow(path: &Path, append: bool) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut o = OpenOptions::new();
    if append {
        o.create(true).append(true).mode(0o644);
    } else {
        o.read(true);
    }
    o.custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| nofollow_error(path, e))
}

/// Creates (or truncates) `path` for writing, refusing a symlink (`O_NOFOLLOW`), mode 0644.
pub fn create_nofollow(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| nofollow_error(path, e))
}

/// ELOOP from `O_NOFOLLOW` reads as "too many levels of symbolic links": say what it means.
fn nofollow_error(path: &Path, e: io::Error) -> io::Error {
    if e.raw_os_error() == Some(libc::ELOOP) {
        io::Error::new(
            e.kind(),
            format!("{} is a symbolic link: refused", path.display()),
        )
    } else {
        e
    }
}

/// Writes this process's id to a new pid file: `O_CREAT|O_EXCL|O_NOFOLLOW`, so neither a
/// symlink nor another file planted at `path` is written through. A stale pid file (a regular
/// file naming a process that no longer runs) is removed first; one naming a live process is
/// refused.
pub fn write_pid_file(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let create = || {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)
    };
    let mut f = match create() {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let meta = std::fs::symlink_metadata(path)?;
            if !meta.file_type().is_file() {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!(
                        "{} exists and is not a regular file: refused",
                        path.display()
                    ),
                ));
            }
            let old = std::fs::read_to_string(path).unwrap_or_default();
            if let Ok(pid) = old.trim().parse::<u32>() {
                if pid != std::process::id() && Path::new(&format!("/proc/{pid}")).exists() {
                    return Err(io::Error::new(
                        io::ErrorKind::AlreadyExists,
                        format!("{} names process {pid}, which is running", path.display()),
                    ));
                }
            }
            std::fs::remove_file(path)?;
            create()?
        }
        Err(e) => return Err(e),
    };
    writeln!(f, "{}", std::process::id())?;
    Ok(f)
}

/// The effective user id.
pub fn effective_uid() -> u32 {
    // SAFETY: geteuid has no arguments and cannot fail.
    unsafe { libc::geteuid() }
}

/// Whether the effective user is root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no arguments and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Sets this thread's effective and permitted capabilities to `mask` (bit n = capability n),
/// inheritable to none.
fn capset(mask: u64) -> Result<(), SysError> {
    let mut hdr = CapHeader {
        version: CAP_VERSION_3,
        pid: 0,
    };
    let lo = mask as u32;
    let hi = (mask >> 32) as u32;
    let data = [
        CapData {
            effective: lo,
            permitted: lo,
            inheritable: 0,
        },
        CapData {
            effective: hi,
            permitted: hi,
            inheritable: 0,
        },
    ];
    // SAFETY: capset reads one header and two data words (version 3), all valid and live.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &mut hdr as *mut CapHeader, data.as_ptr()) };
    if rc != 0 {
        return Err(call_err(format!("capset({mask:#x})")));
    }
    Ok(())
}

/// This thread's permitted capabilities (bit n = capability n).
pub fn permitted_capabilities() -> Result<u64, SysError> {
    let mut hdr = CapHeader {
        version: CAP_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: capget writes two data words (version 3) into `data`, which is valid and writable.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_capget,
            &mut hdr as *mut CapHeader,
            data.as_mut_ptr(),
        )
    };
    if rc != 0 {
        return Err(call_err("capget"));
    }
    Ok(u64::from(data[0].permitted) | (u64::from(data[1].permitted) << 32))
}

fn prctl(option: libc::c_int, arg: libc::c_ulong, what: &str) -> Result<(), SysError> {
    // SAFETY: the prctl options used here take integer arguments only.
    let rc = unsafe { libc::prctl(option, arg, 0 as libc::c_ulong, 0 as libc::c_ulong, 0) };
    if rc != 0 {
        return Err(call_err(what));
    }
    Ok(())
}

/// Hands the free pages of every malloc arena back to the kernel (glibc's `malloc_trim`); a
/// no-op elsewhere. glibc returns memory on its own only from the top of the main heap: pages
/// freed inside a heap, and in the per-thread arenas (capture threads, tokio workers), stay
/// resident after a peak (what one call gave back in tcpcopy's soak: docs/benchmarks.md).
/// It walks the free chunks of each arena under that arena's lock, so call it every few
/// seconds, not per packet.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only reads and updates the allocator's own state, under its locks; it
    // is safe to call at any time from any thread.
    let _ = unsafe { libc::malloc_trim(0) };
}

/// CPU time (user + system) of the whole process so far: the summaries, the benches and the
/// `process_cpu_seconds_total` metric. Zero if the kernel refuses (it does not for our own
/// process).
pub fn process_cpu_time() -> std::time::Duration {
    rusage_cpu(libc::RUSAGE_SELF)
}

/// CPU time (user + system) of the calling thread so far (Linux `RUSAGE_THREAD`): what one
/// worker thread used, softirq work the kernel charged to it included.
pub fn thread_cpu_time() -> std::time::Duration {
    rusage_cpu(libc::RUSAGE_THREAD)
}

fn rusage_cpu(who: libc::c_int) -> std::time::Duration {
    let mut ru = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a whole `rusage` into the pointer we pass, which points to
    // zero-initialised storage of the right type and size.
    if unsafe { libc::getrusage(who, ru.as_mut_ptr()) } != 0 {
        return std::time::Duration::ZERO;
    }
    // SAFETY: getrusage succeeded, so the struct is initialised (it was zeroed before anyway).
    let ru = unsafe { ru.assume_init() };
    let tv = |t: libc::timeval| {
        std::time::Duration::new(
            u64::try_from(t.tv_sec).unwrap_or(0),
            u32::try_from(t.tv_usec).unwrap_or(0) * 1000,
        )
    };
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Sets the nice value of the calling thread only (Linux applies `setpriority` with a thread
/// id to that thread, and threads it creates later start with it). Lowering it needs
/// `CAP_SYS_NICE` or a high enough `RLIMIT_NICE`; raising it needs nothing.
pub fn set_thread_nice(nice: i32) -> Result<(), SysError> {
    // SAFETY: gettid has no arguments and cannot fail.
    let tid = unsafe { libc::syscall(libc::SYS_gettid) } as libc::id_t;
    // SAFETY: setpriority takes plain integers.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, nice) } != 0 {
        return Err(call_err(format!("setpriority(thread {tid}, {nice})")));
    }
    Ok(())
}

/// The nice value of the calling thread.
pub fn thread_nice() -> i32 {
    // SAFETY: gettid has no arguments and cannot fail.
    let tid = unsafe { libc::syscall(libc::SYS_gettid) } as libc::id_t;
    // SAFETY: getpriority takes plain integers (-1 is a valid answer; errors cannot happen
    // for our own thread id).
    unsafe { libc::getpriority(libc::PRIO_PROCESS, tid) }
}

/// Switches the process to `user` keeping only `CAP_NET_RAW` (when `keep_net_raw`), in
/// permitted and effective; also drops every other capability from the bounding set and sets
/// no-new-privileges. Call it once all privileged opens are done and BEFORE starting threads.
///
/// When not started as root (e.g. a user given `cap_net_raw+ep` with setcap), there is no user
/// to switch: it clears every capability except `CAP_NET_RAW` (if kept) and logs one line.
pub fn drop_privileges(user: &str, keep_net_raw: bool) -> Result<Dropped, SysError> {
    let keep: u64 = if keep_net_raw { 1 << CAP_NET_RAW } else { 0 };
    // Refused whether or not we are root now: a configuration naming root is a mistake.
    let ids = lookup_user(user)?;
    if ids.uid == 0 {
        return Err(SysError::RootUser(user.to_string()));
    }
    if !is_root() {
        // Keep what we were given of CAP_NET_RAW, nothing else.
        let have = permitted_capabilities()?;
        capset(have & keep)?;
        tracing::info!(
            "not root: running as uid {} (no --user switch){}",
            // SAFETY: getuid has no arguments and cannot fail.
            unsafe { libc::getuid() },
            if have & keep != 0 {
                ", keeping CAP_NET_RAW"
            } else {
                ""
            }
        );
        return Ok(Dropped::NotRoot);
    }
    // Bounding set: nothing but what we keep can ever come back (needs CAP_SETPCAP: do it first).
    for cap in 0..64u32 {
        if keep & (1 << cap) != 0 {
            continue;
        }
        // SAFETY: PR_CAPBSET_READ takes an integer; it returns 1, 0, or -1 (EINVAL past the
        // last capability the kernel knows).
        let known = unsafe { libc::prctl(libc::PR_CAPBSET_READ, cap as libc::c_ulong, 0, 0, 0) };
        if known < 0 {
            break;
        }
        if known == 1 {
            prctl(
                libc::PR_CAPBSET_DROP,
                cap as libc::c_ulong,
                &format!("prctl(PR_CAPBSET_DROP, {cap})"),
            )?;
        }
    }
    prctl(libc::PR_SET_KEEPCAPS, 1, "prctl(PR_SET_KEEPCAPS)")?;
    let groups = [ids.gid as libc::gid_t];
    // SAFETY: `groups` is a valid array of one gid.
    if unsafe { libc::setgroups(1, groups.as_ptr()) } != 0 {
        return Err(call_err(format!("setgroups([{}])", ids.gid)));
    }
    // SAFETY: setgid/setuid take plain integers. glibc applies them to every thread.
    if unsafe { libc::setgid(ids.gid) } != 0 {
        return Err(call_err(format!("setgid({})", ids.gid)));
    }
    // SAFETY: as above.
    if unsafe { libc::setuid(ids.uid) } != 0 {
        return Err(call_err(format!("setuid({})", ids.uid)));
    }
    // KEEPCAPS kept the permitted set across setuid but cleared the effective one: keep only
    // CAP_NET_RAW in both.
    capset(keep)?;
    prctl(libc::PR_SET_KEEPCAPS, 0, "prctl(PR_SET_KEEPCAPS, 0)")?;
    prctl(libc::PR_SET_NO_NEW_PRIVS, 1, "prctl(PR_SET_NO_NEW_PRIVS)")?;
    if ids.uid != 0 {
        // SAFETY: setuid takes an integer; it must fail now.
        if unsafe { libc::setuid(0) } == 0 {
            return Err(SysError::StillRoot);
        }
    }
    tracing::info!(
        "privileges dropped to {user} (uid {}, gid {}){}",
        ids.uid,
        ids.gid,
        if keep_net_raw {
            ", keeping only CAP_NET_RAW"
        } else {
            ""
        }
    );
    Ok(Dropped::Switched(ids))
}

/// An append-mode log file that [`reopen`](LogFile::reopen) replaces with a fresh open of the
/// same path (call it on SIGHUP, after logrotate moved the file). Cheap to clone; all clones
/// write to the current file. Use it with tracing-subscriber as
/// `.with_writer(move || log.clone())`.
#[derive(Clone, Debug)]
pub struct LogFile {
    path: PathBuf,
    file: Arc<Mutex<File>>,
}

impl LogFile {
    /// Opens (creating) `path` for appending.
    pub fn open(path: &Path) -> io::Result<Self> {
        let f = Self::open_file(path)?;
        Ok(LogFile {
            path: path.to_path_buf(),
            file: Arc::new(Mutex::new(f)),
        })
    }

    fn open_file(path: &Path) -> io::Result<File> {
        // No symlink: as root, a link planted where the log goes would append to any file.
        open_nofollow(path, true)
    }

    /// Gives the open log file to `user` through its descriptor (see [`give_to_user`]).
    pub fn give_to_user(&self, user: &str) -> Result<(), SysError> {
        let f = self.file.lock().unwrap_or_else(|p| p.into_inner());
        give_to_user(&f, &self.path, user)
    }

    /// The path this log writes to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reopens the path; on failure the old file stays in use and the error is returned.
    pub fn reopen(&self) -> io::Result<()> {
        let f = Self::open_file(&self.path)?;
        let mut cur = self.file.lock().unwrap_or_else(|p| p.into_inner());
        let _ = cur.flush();
        *cur = f;
        Ok(())
    }
}

impl Write for LogFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .write(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.file
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .write_all(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.lock().unwrap_or_else(|p| p.into_inner()).flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_grows_with_work_and_a_thread_sees_only_its_own() {
        use std::time::{Duration, Instant};
        // Spins until the calling thread itself has used `d` of CPU (by wall clock a busy
        // machine could leave it descheduled the whole time), at most 20 s.
        let spin = |d: Duration| {
            let (start, wall) = (thread_cpu_time(), Instant::now());
            let mut x = 0u64;
            while thread_cpu_time() - start < d && wall.elapsed() < Duration::from_secs(20) {
                for _ in 0..10_000 {
                    x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
                }
            }
        };
        let p0 = process_cpu_time();
        let t0 = thread_cpu_time();
        spin(Duration::from_millis(50));
        let other = std::thread::spawn(move || {
            let start = thread_cpu_time();
            spin(Duration::from_millis(150));
            thread_cpu_time() - start
        })
        .join()
        .unwrap();
        let mine = thread_cpu_time() - t0;
        let all = process_cpu_time() - p0;
        assert!(mine >= Duration::from_millis(50), "{mine:?}");
        assert!(other >= Duration::from_millis(150), "{other:?}");
        // The process counts both threads; this thread's count leaves the other's out.
        assert!(
            all >= mine + other / 2,
            "process {all:?}, threads {mine:?} + {other:?}"
        );
        assert!(
            mine < Duration::from_millis(130),
            "the thread's own only: {mine:?}"
        );
    }

    #[test]
    fn lookup_root_and_numeric() {
        assert_eq!(lookup_user("root").unwrap(), UserIds { uid: 0, gid: 0 });
        assert_eq!(
            lookup_user("123:456").unwrap(),
            UserIds { uid: 123, gid: 456 }
        );
        assert!(matches!(
            lookup_user("no-such-user-tcpclone"),
            Err(SysError::NoSuchUser(_))
        ));
    }

    fn nice_of(tid: libc::id_t) -> i32 {
        // SAFETY: getpriority takes plain integers.
        unsafe { libc::getpriority(libc::PRIO_PROCESS, tid) }
    }

    #[test]
    fn thread_nice_is_per_thread() {
        let main_tid = std::process::id() as libc::id_t;
        let before = nice_of(main_tid);
        let (tid, nice) = std::thread::spawn(|| {
            // Raising the nice value needs no privilege.
            set_thread_nice(7).unwrap();
            // SAFETY: gettid has no arguments.
            let tid = unsafe { libc::syscall(libc::SYS_gettid) } as libc::id_t;
            assert_eq!(thread_nice(), nice_of(tid));
            (tid, nice_of(tid))
        })
        .join()
        .unwrap();
        assert_ne!(tid, main_tid);
        assert_eq!(nice, 7);
        assert_eq!(nice_of(main_tid), before, "other threads keep theirs");
    }

    #[test]
    fn symlinks_are_refused_and_pid_files_exclusive() {
        let d = tempfile::tempdir().unwrap();
        let victim = d.path().join("victim");
        std::fs::write(&victim, "keep\n").unwrap();
        let link = d.path().join("link");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        let e = write_pid_file(&link).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        let e = create_nofollow(&link).unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        assert!(LogFile::open(&link).is_err());
        assert!(chown_to_user(&link, "nobody").is_err() || !is_root());
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep\n");
        // A stale pid file is replaced; a live one (ours, from another path's view: pid 1) refused.
        let pid = d.path().join("pid");
        std::fs::write(&pid, "999999999\n").unwrap();
        write_pid_file(&pid).unwrap();
        assert_eq!(
            std::fs::read_to_string(&pid).unwrap(),
            format!("{}\n", std::process::id())
        );
        std::fs::write(&pid, "1\n").unwrap();
        let e = write_pid_file(&pid).unwrap_err();
        assert!(e.to_string().contains("running"), "{e}");
    }

    #[test]
    fn root_is_no_user_to_drop_to() {
        if !is_root() {
            return; // not root: drop_privileges does not switch users
        }
        // Refused before anything changes: the test process keeps running as root.
        assert!(matches!(
            drop_privileges("root", true),
            Err(SysError::RootUser(_))
        ));
        assert_eq!(effective_uid(), 0);
    }

    #[test]
    fn log_file_reopens_after_rename() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("log");
        let mut log = LogFile::open(&p).unwrap();
        writeln!(log, "one").unwrap();
        std::fs::rename(&p, d.path().join("log.1")).unwrap();
        writeln!(log, "two").unwrap();
        log.reopen().unwrap();
        writeln!(log.clone(), "three").unwrap();
        assert_eq!(
            std::fs::read_to_string(d.path().join("log.1")).unwrap(),
            "one\ntwo\n"
        );
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "three\n");
    }
}
