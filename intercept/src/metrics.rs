//! `--metrics` for intercept: the summary's counters, read from [`Stats`] at each scrape.
//!
//! Each HELP text starts with the stage in brackets: `[capture]` and `[kernel drops]` for
//! the target's responses captured here, `[intercept channel]` for routing them to the
//! tcpcopy instances connected.

use crate::server::Stats;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use tcpclone::metrics::Snapshot;

/// Depth of the capture → router queue, read at a scrape (`None` once it has closed).
pub type QueueDepth = Box<dyn Fn() -> Option<u64> + Send + Sync>;

/// One scrape's families.
pub fn snapshot(st: &Stats, queue: Option<u64>) -> Snapshot {
    let mut s = Snapshot::default();
    let g = |a: &AtomicU64| a.load(Relaxed);
    macro_rules! counter {
        ($field:ident, $name:literal, $help:literal) => {
            s.counter(concat!("tcpclone_intercept_", $name), $help, g(&st.$field));
        };
    }
    counter!(
        captured,
        "capture_packets",
        "[capture] Response packets delivered by the capture (all devices)"
    );
    counter!(
        not_tcp,
        "capture_not_tcp_packets",
        "[capture] Captured packets that were not a complete IP + TCP header"
    );
    counter!(
        capture_errors,
        "capture_errors",
        "[capture] Capture read errors (e.g. the interface went down)"
    );
    counter!(
        capture_reopens,
        "capture_reopens",
        "[capture] Capture handles reopened after an error"
    );
    counter!(
        kernel_drops,
        "kernel_dropped_packets",
        "[kernel drops] Response packets the kernel dropped before capture"
    );
    counter!(
        malformed,
        "malformed_packets",
        "[intercept channel] Responses the router refused as malformed"
    );
    counter!(
        routed,
        "routed_packets",
        "[intercept channel] Responses routed to the tcpcopy that owns the session"
    );
    counter!(
        parked,
        "parked_packets",
        "[intercept channel] Responses parked: no owner registered yet"
    );
    counter!(
        unparked,
        "unparked_packets",
        "[intercept channel] Parked responses delivered later"
    );
    counter!(
        dropped_unknown,
        "dropped_unknown_packets",
        "[intercept channel] Responses dropped: no owner appeared in time, or parking was full"
    );
    counter!(
        routed_after_remove,
        "routed_after_remove_packets",
        "[intercept channel] Responses of sessions removed lately, sent to the tcpcopy that removed them"
    );
    counter!(dropped_slow_peer, "dropped_slow_peer_packets", "[intercept channel] Responses dropped: their tcpcopy connection was not reading fast enough");
    counter!(
        sessions_refused,
        "sessions_refused",
        "[intercept channel] Registrations refused (session limit)"
    );
    counter!(
        peers_total,
        "peer_connections",
        "[intercept channel] tcpcopy connections established since start"
    );
    counter!(
        rejected_not_allowed,
        "rejected_not_allowed",
        "[intercept channel] Connections refused by --allow"
    );
    counter!(
        rejected_cap,
        "rejected_over_cap",
        "[intercept channel] Connections closed at --max-pending or --max-peers"
    );
    counter!(
        handshake_failed,
        "handshake_failed",
        "[intercept channel] Openings that failed authentication or sent a bad Hello"
    );
    counter!(
        handshake_timeout,
        "handshake_timeouts",
        "[intercept channel] Openings that did not finish in time"
    );
    counter!(
        protocol_errors,
        "protocol_errors",
        "[intercept channel] Connections closed for a malformed, out-of-place or stalled frame"
    );
    counter!(
        accept_errors,
        "accept_errors",
        "[intercept channel] accept() failures (EMFILE and friends)"
    );
    let gauge = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    s.gauge(
        "tcpclone_intercept_sessions_registered",
        "[intercept channel] Sessions registered by tcpcopy now",
        gauge(g(&st.sessions)),
    );
    s.gauge(
        "tcpclone_intercept_peers",
        "[intercept channel] tcpcopy connections established now (0: no tcpcopy gets responses)",
        gauge(g(&st.peers_now)),
    );
    if let Some(q) = queue {
        s.gauge(
            "tcpclone_intercept_capture_queue_batches",
            "[capture] Batches of captured headers waiting for the router (queue depth)",
            gauge(q),
        );
    }
    s
}

/// Starts the `/metrics` server on `addr`.
pub fn serve(
    addr: std::net::SocketAddr,
    stats: Arc<Stats>,
    queue: QueueDepth,
) -> Result<tcpclone::metrics::MetricsServer, tcpclone::metrics::MetricsError> {
    let registry = tcpclone::metrics::registry(
        tcpclone::build::VERSION,
        tcpclone::build::COMMIT,
        move || snapshot(&stats, queue()),
    );
    tcpclone::metrics::MetricsServer::start(addr, registry)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_counters_and_gauges_are_named_by_stage() {
        let st = Stats::default();
        st.routed.store(9, Relaxed);
        st.peers_now.store(1, Relaxed);
        st.kernel_drops.store(2, Relaxed);
        let t = tcpclone::metrics::render(&tcpclone::metrics::registry("v", "c", move || {
            snapshot(&st, Some(3))
        }));
        for want in [
            "tcpclone_intercept_routed_packets_total 9\n",
            "tcpclone_intercept_peers 1\n",
            "tcpclone_intercept_kernel_dropped_packets_total 2\n",
            "tcpclone_intercept_capture_queue_batches 3\n",
            "# HELP tcpclone_intercept_kernel_dropped_packets_total [kernel drops]",
        ] {
            assert!(t.contains(want), "missing {want:?} in\n{t}");
        }
    }
}
