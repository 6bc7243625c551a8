//! The paced sender's system calls: the monotonic clock and absolute sleeps that
//! [`crate::clock`] builds its wait on, and this thread's timer slack and scheduling.
#![allow(unsafe_code)]

use std::io;
use std::time::Duration;

/// Makes this thread's sleeps wake within ~1 µs of the asked time instead of the default 50 µs
/// timer slack, so the spin before each paced packet stays short.
pub fn tighten_timer_slack() {
    // SAFETY: PR_SET_TIMERSLACK takes a plain integer and affects only the calling thread.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0);
    }
}

/// struct sched_attr of sched_setattr(2) (the libc crate does not define it).
#[repr(C)]
#[derive(Default)]
struct SchedAttr {
    size: u32,
    sched_policy: u32,
    sched_flags: u64,
    sched_nice: i32,
    sched_priority: u32,
    sched_runtime: u64,
    sched_deadline: u64,
    sched_period: u64,
    sched_util_min: u32,
    sched_util_max: u32,
}

/// Asks the fair scheduler for a short time slice (`slice` ≥ 100 µs) for this thread: on an
/// EEVDF kernel (Linux ≥ 6.12) a thread waking with a slice shorter than the running task's
/// preempts it instead of waiting for that task's slice to end, so a sender that sleeps between
/// packets gets its core back on time when other work shares it. It does not raise the thread's
/// share of the CPU, needs no privilege, and is ignored by older kernels (best effort).
pub fn request_short_slice(slice: Duration) {
    // SAFETY: getpriority reads this process's nice value; errno is reset first as the man page
    // asks (a nice of -1 is a valid return).
    let nice = unsafe {
        *libc::__errno_location() = 0;
        libc::getpriority(libc::PRIO_PROCESS, 0)
    };
    let attr = SchedAttr {
        size: std::mem::size_of::<SchedAttr>() as u32,
        sched_policy: libc::SCHED_OTHER as u32,
        sched_nice: nice,
        sched_runtime: slice.as_nanos() as u64,
        ..SchedAttr::default()
    };
    // SAFETY: attr is a valid sched_attr whose size field matches; pid 0 is the calling thread.
    unsafe {
        libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const SchedAttr, 0);
    }
}

/// Runs this thread under SCHED_FIFO at `priority` (1–99), so no ordinary task delays its
/// wake-ups. Needs CAP_SYS_NICE (or an RLIMIT_RTPRIO that allows it).
pub fn set_fifo(priority: i32) -> io::Result<()> {
    let p = libc::sched_param {
        sched_priority: priority,
    };
    // SAFETY: p is a valid sched_param; pid 0 is the calling thread.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &p) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// CLOCK_MONOTONIC now, in nanoseconds (the clock `Instant` reads on Linux).
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec to write into; CLOCK_MONOTONIC always exists.
    unsafe {
        libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts);
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Sleeps until CLOCK_MONOTONIC reads `deadline_ns` (an absolute time, so neither the time spent
/// computing the sleep nor an interrupted sleep moves the wake-up); returns early on a signal.
pub fn sleep_until_monotonic(deadline_ns: u64) {
    let ts = libc::timespec {
        tv_sec: (deadline_ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (deadline_ns % 1_000_000_000) as libc::c_long,
    };
    // SAFETY: ts is a valid timespec; no remaining-time pointer is needed with TIMER_ABSTIME.
    unsafe {
        libc::clock_nanosleep(
            libc::CLOCK_MONOTONIC,
            libc::TIMER_ABSTIME,
            &ts,
            std::ptr::null_mut(),
        );
    }
}
