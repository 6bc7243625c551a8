//! The counting allocator of the allocation and memory tests: the only unsafe code of the lab.
//!
//! A test installs it with
//! `#[global_allocator] static GLOBAL: tcpclone_lab::sys::Counting = tcpclone_lab::sys::Counting;`
//! and reads what was allocated, by the calling thread ([`allocs`], [`live_bytes`]: not
//! disturbed by the test harness's other threads) or by the whole process ([`total_allocs`],
//! [`total_live_bytes`]: for code that allocates on threads of its own).
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// The system allocator, counting.
pub struct Counting;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
    static LIVE_BYTES: Cell<i64> = const { Cell::new(0) };
}
static TOTAL_ALLOCS: AtomicU64 = AtomicU64::new(0);
static TOTAL_LIVE_BYTES: AtomicI64 = AtomicI64::new(0);

fn note(allocs: u64, bytes: i64) {
    // try_with: the thread-locals may already be gone while a thread shuts down.
    let _ = ALLOCS.try_with(|c| c.set(c.get() + allocs));
    let _ = LIVE_BYTES.try_with(|c| c.set(c.get() + bytes));
    TOTAL_ALLOCS.fetch_add(allocs, Ordering::Relaxed);
    TOTAL_LIVE_BYTES.fetch_add(bytes, Ordering::Relaxed);
}

// SAFETY: every method forwards to the system allocator unchanged; the bookkeeping only touches
// const-initialised thread-locals and atomics, which never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(1, layout.size() as i64);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(1, layout.size() as i64);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        note(0, -(layout.size() as i64));
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(1, new_size as i64 - layout.size() as i64);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Allocations (and reallocations) made by this thread so far.
pub fn allocs() -> u64 {
    ALLOCS.with(Cell::get)
}

/// Bytes allocated minus bytes freed by this thread so far.
pub fn live_bytes() -> i64 {
    LIVE_BYTES.with(Cell::get)
}

/// Allocations (and reallocations) made by every thread so far.
pub fn total_allocs() -> u64 {
    TOTAL_ALLOCS.load(Ordering::Relaxed)
}

/// Bytes allocated minus bytes freed by every thread so far.
pub fn total_live_bytes() -> i64 {
    TOTAL_LIVE_BYTES.load(Ordering::Relaxed)
}
