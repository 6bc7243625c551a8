//! The glue's counters (capture, raw send, intercept channel), shared between threads as
//! relaxed atomics. The engine's own session counters are reported beside them.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// Counters bumped by the capture threads, the engine thread and the channel.
#[derive(Debug, Default)]
pub struct Counters {
    /// Frames the capture delivered (after the BPF filter).
    pub captured_frames: AtomicU64,
    /// Bytes of IP packets handed to the engine.
    pub captured_bytes: AtomicU64,
    /// Frames that were not IP (or our own outgoing ones) and were skipped.
    pub not_ip: AtomicU64,
    /// Frames cut short by the snap length (skipped).
    pub truncated: AtomicU64,
    /// Packets the kernel dropped because the capture ring was full (pcap `ps_drop`).
    pub kernel_drops: AtomicU64,
    /// Packets the interface dropped (pcap `ps_ifdrop`).
    pub if_drops: AtomicU64,
    /// Capture read errors (device down, ...), retried.
    pub capture_errors: AtomicU64,
    /// Capture rings opened again on a device deleted and re-created under the same name.
    pub capture_reopens: AtomicU64,
    /// Times a worker fell behind with its ring nearly full (7/8) and began to shed
    /// connections.
    pub overloads: AtomicU64,
    /// Times a worker copied the client bytes its sessions still held in its ring's blocks,
    /// because the kernel was coming round to the oldest of them (the target lagged).
    pub ring_copyouts: AtomicU64,
    /// Times a worker found the kernel stopped at a block its sessions still held: the ring
    /// was full up to it, and the kernel dropped frames because of the hold (should stay 0).
    pub ring_hold_overruns: AtomicU64,
    /// Packets sent to the target.
    pub sent_packets: AtomicU64,
    /// Bytes sent to the target (IP packets).
    pub sent_bytes: AtomicU64,
    /// `sendmmsg` calls made (packets sent over calls: the batching achieved).
    pub send_calls: AtomicU64,
    /// Of `sent_packets`: those that left through the packet socket (--send packet).
    pub sent_via_packet: AtomicU64,
    /// Super-segments handed to the kernel whole, for it or the NIC to cut.
    pub gso_frames: AtomicU64,
    /// Super-segments cut in software because their destination took the raw socket.
    pub gso_soft: AtomicU64,
    /// Next-hop lookups (route and neighbour, over rtnetlink) made by the packet path.
    pub hop_lookups: AtomicU64,
    /// Of those: next hops without a usable neighbour entry (sent raw meanwhile).
    pub hop_unresolved: AtomicU64,
    /// Packets dropped after EAGAIN/ENOBUFS retries.
    pub send_busy: AtomicU64,
    /// Packets refused as larger than the route MTU.
    pub send_too_large: AtomicU64,
    /// Packets refused for another reason.
    pub send_refused: AtomicU64,
    /// Times --max-pps/--max-mbps held packets back (they went later, none was dropped).
    pub rate_held: AtomicU64,
    /// Response headers received from intercept.
    pub responses: AtomicU64,
    /// Sessions the engine registered.
    pub sessions_added: AtomicU64,
    /// Sessions the engine unregistered.
    pub sessions_removed: AtomicU64,
    /// Connections established to intercepts (first ones and reconnects).
    pub channel_connects: AtomicU64,
    /// Channel connections lost or failed.
    pub channel_failures: AtomicU64,
    /// Registrations dropped because the intercept connections had too much unsent already
    /// (intercept not reading), or refused by the channel.
    pub registrations_lost: AtomicU64,
    /// Times a worker stopped reading an intercept connection to serve its capture first (the
    /// rest waits in the socket): a sign that responses arrive faster than it takes them.
    pub response_pauses: AtomicU64,
    /// Bytes of registrations the intercept connections have not written yet, all workers (a
    /// gauge, bounded per worker by [`COMMAND_BACKLOG`]).
    ///
    /// [`COMMAND_BACKLOG`]: super::channel::COMMAND_BACKLOG
    pub registrations_unsent: AtomicU64,
}

impl Counters {
    /// Adds `n` to one counter.
    pub fn add(&self, c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    /// Subtracts `n` from a gauge.
    pub fn sub(&self, c: &AtomicU64, n: u64) {
        c.fetch_sub(n, Ordering::Relaxed);
    }

    /// Reads one counter.
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }

    /// The counters as `name=value` pairs, in a fixed order.
    pub fn pairs(&self) -> Vec<(&'static str, u64)> {
        let g = Self::get;
        vec![
            ("captured", g(&self.captured_frames)),
            ("captured_bytes", g(&self.captured_bytes)),
            ("skipped_not_ip", g(&self.not_ip)),
            ("truncated", g(&self.truncated)),
            ("kernel_drops", g(&self.kernel_drops)),
            ("if_drops", g(&self.if_drops)),
            ("capture_errors", g(&self.capture_errors)),
            ("capture_reopens", g(&self.capture_reopens)),
            ("overloads", g(&self.overloads)),
            ("ring_copyouts", g(&self.ring_copyouts)),
            ("ring_hold_overruns", g(&self.ring_hold_overruns)),
            ("sent", g(&self.sent_packets)),
            ("sent_bytes", g(&self.sent_bytes)),
            ("send_calls", g(&self.send_calls)),
            ("sent_via_packet", g(&self.sent_via_packet)),
            ("gso_frames", g(&self.gso_frames)),
            ("gso_soft", g(&self.gso_soft)),
            ("hop_lookups", g(&self.hop_lookups)),
            ("hop_unresolved", g(&self.hop_unresolved)),
            ("send_busy_dropped", g(&self.send_busy)),
            ("send_too_large", g(&self.send_too_large)),
            ("send_refused", g(&self.send_refused)),
            ("rate_held", g(&self.rate_held)),
            ("responses", g(&self.responses)),
            ("sessions_added", g(&self.sessions_added)),
            ("sessions_removed", g(&self.sessions_removed)),
            ("intercept_connects", g(&self.channel_connects)),
            ("intercept_failures", g(&self.channel_failures)),
            ("registrations_lost", g(&self.registrations_lost)),
            ("registrations_unsent_bytes", g(&self.registrations_unsent)),
            ("response_pauses", g(&self.response_pauses)),
        ]
    }

    /// One line `name=value ...`.
    pub fn line(&self) -> String {
        let mut s = String::new();
        for (k, v) in self.pairs() {
            let _ = write!(s, "{k}={v} ");
        }
        s.pop();
        s
    }
}
