//! `--metrics` for raw mode: the counters of the summary and `--stats`, read where they are
//! already kept (the glue's atomics, the engine figures each worker publishes, the latency
//! histograms the workers publish) each time Prometheus scrapes.
//!
//! Names follow Prometheus' conventions (`tcpclone_tcpcopy_<stage>_<what>_<unit>_total`);
//! each HELP text starts with the stage in brackets, so a loss can be placed from the metrics
//! alone: `[capture]` → `[kernel drops]` → `[engine]` → `[send]` → `[target]`, answers back
//! through `[intercept channel]`.

use super::counters::Counters;
use crate::engine::{EngineStats, LATENCY_BUCKETS};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use tcpclone::metrics::{HistogramSample, MetricsServer, Snapshot};

/// Each worker's capture-to-engine latency (µs), as last published.
pub type PublishedLatency = Arc<Mutex<Vec<hdrhistogram::Histogram<u64>>>>;

/// Each worker thread's CPU time (ns), as last published: an operator sees what tcpcopy costs
/// the host, worker by worker (a worker sharing its CPU with a busy neighbour shows as the
/// one that used less).
pub type WorkerCpu = Arc<Vec<AtomicU64>>;

/// Upper bounds of the capture-to-engine latency buckets, in seconds.
const CAPTURE_BOUNDS: [f64; 13] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];

/// Starts the `/metrics` server on `addr`.
pub fn serve(
    addr: SocketAddr,
    counters: Arc<Counters>,
    engine: Arc<Mutex<Vec<EngineStats>>>,
    latency: PublishedLatency,
    worker_cpu: WorkerCpu,
) -> Result<MetricsServer, tcpclone::metrics::MetricsError> {
    let registry = tcpclone::metrics::registry(
        tcpclone::build::VERSION,
        tcpclone::build::COMMIT,
        move || {
            let engine = engine.lock().unwrap_or_else(|p| p.into_inner()).clone();
            let latency = latency.lock().unwrap_or_else(|p| p.into_inner());
            let cpu: Vec<u64> = worker_cpu.iter().map(|c| c.load(Relaxed)).collect();
            snapshot(&counters, &engine, &latency, &cpu)
        },
    );
    MetricsServer::start(addr, registry)
}

/// One scrape's families: the glue's counters, then each worker's engine figures.
pub fn snapshot(
    c: &Counters,
    engine: &[EngineStats],
    latency: &[hdrhistogram::Histogram<u64>],
    worker_cpu_ns: &[u64],
) -> Snapshot {
    let mut s = Snapshot::default();
    let g = Counters::get;
    macro_rules! counter {
        ($field:ident, $name:literal, $help:literal) => {
            s.counter(concat!("tcpclone_tcpcopy_", $name), $help, g(&c.$field));
        };
    }
    counter!(
        captured_frames,
        "capture_frames",
        "[capture] Frames the capture delivered after the BPF filter"
    );
    counter!(
        captured_bytes,
        "capture_bytes",
        "[capture] Bytes of IP packets handed to the engine"
    );
    counter!(
        not_ip,
        "capture_not_ip_frames",
        "[capture] Frames skipped: not IP, or our own outgoing ones"
    );
    counter!(
        truncated,
        "capture_truncated_frames",
        "[capture] Frames skipped: cut short by the snap length"
    );
    counter!(
        capture_errors,
        "capture_errors",
        "[capture] Capture read errors (device down, ...), retried"
    );
    counter!(
        capture_reopens,
        "capture_reopens",
        "[capture] Capture rings opened again on a device deleted and re-created under its name"
    );
    counter!(
        overloads,
        "capture_overloads",
        "[capture] Times a worker fell behind with its ring nearly full and began to shed connections"
    );
    counter!(
        ring_copyouts,
        "capture_ring_copyouts",
        "[capture] Times a worker copied the client bytes still held in its ring, the kernel coming round to them"
    );
    counter!(
        ring_hold_overruns,
        "capture_ring_hold_overruns",
        "[capture] Times the kernel was found stopped at a ring block still held (frames dropped because of the hold)"
    );
    counter!(
        kernel_drops,
        "kernel_dropped_packets",
        "[kernel drops] Packets the kernel dropped because the capture ring was full"
    );
    counter!(
        if_drops,
        "interface_dropped_packets",
        "[kernel drops] Packets the interface dropped (libpcap ps_ifdrop)"
    );
    counter!(
        sent_packets,
        "send_packets",
        "[send] Packets sent to the target through the raw socket"
    );
    counter!(
        sent_bytes,
        "send_bytes",
        "[send] Bytes of IP packets sent to the target"
    );
    counter!(
        send_calls,
        "send_calls",
        "[send] sendmmsg calls made (packets over calls is the batching)"
    );
    counter!(
        send_busy,
        "send_busy_dropped_packets",
        "[send] Packets dropped after EAGAIN/ENOBUFS retries"
    );
    counter!(
        send_too_large,
        "send_too_large_packets",
        "[send] Packets refused as larger than the route MTU"
    );
    counter!(
        send_refused,
        "send_refused_packets",
        "[send] Packets the kernel refused for another reason"
    );
    counter!(
        rate_held,
        "send_rate_held",
        "[send] Times --max-pps/--max-mbps held packets back (none dropped)"
    );
    counter!(
        sessions_added,
        "intercept_registrations",
        "[intercept channel] Sessions registered with intercept"
    );
    counter!(
        sessions_removed,
        "intercept_unregistrations",
        "[intercept channel] Sessions unregistered with intercept"
    );
    counter!(
        responses,
        "intercept_responses",
        "[intercept channel] Response headers received from intercept"
    );
    counter!(
        channel_connects,
        "intercept_connects",
        "[intercept channel] Connections established to intercepts (first ones and reconnects)"
    );
    counter!(
        channel_failures,
        "intercept_failures",
        "[intercept channel] Connections to intercepts lost or failed"
    );
    counter!(
        registrations_lost,
        "intercept_registrations_lost",
        "[intercept channel] Registrations dropped: too much unsent to intercept already (it is not reading)"
    );
    counter!(
        response_pauses,
        "intercept_response_pauses",
        "[intercept channel] Times a worker left intercept's data in the socket to serve its capture first"
    );
    s.gauge(
        "tcpclone_tcpcopy_intercept_unsent_bytes",
        "[intercept channel] Bytes of registrations not yet written to intercept (all workers)",
        i64::try_from(g(&c.registrations_unsent)).unwrap_or(i64::MAX),
    );

    macro_rules! engine {
        ($field:ident, $name:literal, $help:literal) => {
            let v: Vec<u64> = engine.iter().map(|e| e.$field).collect();
            s.counter_per_worker(concat!("tcpclone_tcpcopy_", $name), $help, &v);
        };
    }
    engine!(
        packets_captured,
        "engine_packets",
        "[engine] IP packets handed to the engine"
    );
    engine!(
        packets_ignored,
        "engine_ignored_packets",
        "[engine] Packets ignored: not TCP, malformed, fragments, or not to a mapped service"
    );
    engine!(
        segments_in,
        "engine_segments",
        "[engine] TCP segments of mapped services"
    );
    engine!(
        bytes_captured,
        "engine_payload_bytes",
        "[engine] Client payload bytes captured"
    );
    engine!(
        bytes_in_ring,
        "engine_payload_bytes_in_ring",
        "[engine] Client payload bytes kept in the capture ring instead of copied"
    );
    engine!(
        sessions_cloned,
        "sessions_cloned",
        "[engine] Sessions (clones, one per copy) created"
    );
    engine!(
        sessions_completed,
        "sessions_completed",
        "[engine] Sessions ended by FIN in both directions"
    );
    engine!(
        sessions_client_reset,
        "sessions_client_reset",
        "[engine] Sessions ended by the client's RST"
    );
    engine!(
        refused_memory,
        "sessions_refused_memory",
        "[engine] Sessions refused: memory budget (-m)"
    );
    engine!(
        refused_ports,
        "sessions_refused_ports",
        "[engine] Sessions refused: no free client port or address"
    );
    engine!(
        refused_family,
        "sessions_refused_family",
        "[engine] Sessions refused: the client's address family cannot reach the target"
    );
    engine!(
        sampled_out,
        "sessions_sampled_out",
        "[engine] Sessions left out by -r"
    );
    engine!(
        shed_sessions,
        "sessions_shed",
        "[capture] Live clones given up, the heaviest first, while the capture fell behind"
    );
    engine!(
        shed_new,
        "sessions_shed_new",
        "[capture] New connections not cloned while the capture fell behind"
    );
    engine!(
        shed_segments,
        "engine_shed_segments",
        "[capture] Captured segments of shed connections, ignored"
    );
    engine!(
        shed_resumed,
        "sessions_shed_resumed",
        "[capture] Shed connections cloned again from their next request once the capture caught up"
    );
    engine!(
        aborted_target_reset,
        "sessions_aborted_target_reset",
        "[target] Sessions aborted: the target reset the connection"
    );
    engine!(
        aborted_timeout,
        "sessions_aborted_timeout",
        "[engine] Sessions aborted: idle (-t) or stalled (-k) timeout"
    );
    engine!(
        aborted_handshake,
        "sessions_aborted_handshake",
        "[target] Sessions aborted: the target never completed the handshake"
    );
    engine!(
        aborted_retransmits,
        "sessions_aborted_retransmits",
        "[target] Sessions aborted: too many retransmission timeouts"
    );
    engine!(
        aborted_replaced,
        "sessions_aborted_replaced",
        "[engine] Sessions aborted: replaced by a new connection on the same client port"
    );
    engine!(aborted_gap, "sessions_aborted_gap", "[capture] Sessions aborted: the client finished while the clone waited to re-establish after a capture gap");
    engine!(
        half_closed_timeouts,
        "sessions_half_closed_timeouts",
        "[engine] Clones whose client never closed after the target did: we sent the FIN"
    );
    engine!(
        handshakes,
        "target_handshakes",
        "[target] Handshakes completed with the target"
    );
    engine!(
        handshakes_refused,
        "target_handshakes_refused",
        "[target] Handshakes the target refused with RST"
    );
    engine!(
        handshakes_redone,
        "target_handshakes_redone",
        "[target] Handshakes done again after a target RST before any data was acked"
    );
    engine!(
        redo_abandoned,
        "target_redo_abandoned",
        "[target] Redone handshakes or adopted SYN-ACKs given up: the first connection acknowledged our data after all"
    );
    engine!(
        syn_ack_adopted,
        "target_syn_ack_adopted",
        "[target] SYN-ACKs with a new ISN adopted before any data was acked"
    );
    engine!(
        target_resets,
        "target_resets",
        "[target] Target RSTs on established clones"
    );
    engine!(
        reuse_detached,
        "engine_reuse_detached",
        "[engine] New SYNs on a client port still delivering: the new clone got another port"
    );
    engine!(
        linger_taken_over,
        "engine_linger_taken_over",
        "[engine] Client addresses of clones lingering in TIME_WAIT taken over by new clones"
    );
    engine!(
        segments_sent,
        "engine_segments_sent",
        "[engine] Segments the engine wrote (all kinds)"
    );
    engine!(
        segments_retransmitted,
        "engine_segments_retransmitted",
        "[engine] Segments retransmitted (RTO, fast retransmit, SYN retries)"
    );
    engine!(
        rto_expirations,
        "engine_rto_expirations",
        "[engine] Retransmission timeouts"
    );
    engine!(
        fast_retransmits,
        "engine_fast_retransmits",
        "[engine] Fast retransmits (three duplicate acks)"
    );
    engine!(
        bytes_sent,
        "engine_payload_sent_bytes",
        "[engine] New client payload bytes sent to the target"
    );
    engine!(
        bytes_acked,
        "target_payload_acked_bytes",
        "[target] Client payload bytes the target acknowledged"
    );
    engine!(
        gaps,
        "capture_gaps",
        "[capture] Gaps in the captured client stream (missed segments)"
    );
    engine!(
        resets_sent,
        "engine_resets_sent",
        "[engine] RSTs sent to the target (gaps, aborts, stale connections)"
    );
    engine!(
        reestablished,
        "engine_reestablished",
        "[engine] Clones re-established after a gap"
    );
    engine!(
        buffer_overflows,
        "engine_buffer_overflows",
        "[engine] Buffers that hit the per-session or total limit"
    );
    engine!(
        responses,
        "engine_responses",
        "[intercept channel] Target reports handed to the engine"
    );
    engine!(
        responses_unmatched,
        "engine_responses_unmatched",
        "[intercept channel] Target reports for no known session"
    );
    engine!(
        responses_stale,
        "engine_responses_stale",
        "[intercept channel] Target reports of an earlier connection on the same 4-tuple"
    );
    engine!(
        response_bytes,
        "target_response_bytes",
        "[target] Target payload bytes reported"
    );
    engine!(
        requests_sent,
        "requests_sent",
        "[send] Requests sent to the target"
    );
    engine!(
        requests_answered,
        "requests_answered",
        "[target] Requests whose answer intercept reported"
    );
    engine!(
        pacing_timeouts,
        "requests_pacing_timeouts",
        "[target] Requests released by the response timeout rather than an answer"
    );
    engine!(
        requests_pipelined,
        "requests_pipelined",
        "[target] Requests sent before the previous one's answer, --max-lag behind production"
    );
    let aborted: Vec<u64> = engine.iter().map(EngineStats::aborted).collect();
    s.counter_per_worker(
        "tcpclone_tcpcopy_sessions_aborted",
        "[engine] Sessions ended other than by a normal close (all reasons)",
        &aborted,
    );
    let active: Vec<i64> = engine.iter().map(|e| gauge(e.sessions_active)).collect();
    s.gauge_per_worker(
        "tcpclone_tcpcopy_sessions_active",
        "[engine] Sessions alive now",
        &active,
    );
    let memory: Vec<i64> = engine.iter().map(|e| gauge(e.memory_bytes)).collect();
    s.gauge_per_worker(
        "tcpclone_tcpcopy_engine_memory_bytes",
        "[engine] Bytes accounted against the memory budget (-m) now",
        &memory,
    );
    s.histogram_per_worker(
        "tcpclone_tcpcopy_request_latency_seconds",
        "[target] Time from a request's last segment sent to its answer reported by intercept",
        engine.iter().map(request_latency).collect(),
    );
    let cpu: Vec<f64> = worker_cpu_ns.iter().map(|&ns| ns as f64 / 1e9).collect();
    s.seconds_per_worker(
        "tcpclone_tcpcopy_worker_cpu_seconds",
        "[engine] CPU time of each worker thread, user and system (the kernel's work for its sends included); the process's is process_cpu_seconds_total",
        &cpu,
    );
    s.histogram_per_worker(
        "tcpclone_tcpcopy_capture_to_engine_latency_seconds",
        "[capture] Time from the kernel's capture timestamp to the engine handling the packet (sent right after)",
        latency.iter().map(capture_latency).collect(),
    );
    s
}

fn gauge(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The engine's log2 buckets: bucket i holds [2^i, 2^(i+1)) µs; the last one everything above.
fn request_latency(e: &EngineStats) -> HistogramSample {
    let bounds: Vec<f64> = (0..LATENCY_BUCKETS - 1)
        .map(|i| (1u64 << (i + 1)) as f64 / 1e6)
        .collect();
    HistogramSample::from_buckets(
        e.latency_us_sum as f64 / 1e6,
        &bounds,
        &e.latency_us_log2[..LATENCY_BUCKETS - 1],
        e.latency_us_log2[LATENCY_BUCKETS - 1],
    )
}

fn capture_latency(h: &hdrhistogram::Histogram<u64>) -> HistogramSample {
    crate::report::metrics::hdr_micros(h, &CAPTURE_BOUNDS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    #[test]
    fn names_carry_worker_labels_and_summary_values() {
        let c = Counters::default();
        c.sent_packets.store(42, Ordering::Relaxed);
        c.kernel_drops.store(3, Ordering::Relaxed);
        let mut a = EngineStats {
            sessions_cloned: 5,
            sessions_active: 2,
            ..EngineStats::default()
        };
        a.latency_us_log2[9] = 4; // 512..1024 µs
        a.latency_us_sum = 4 * 600;
        let b = EngineStats {
            sessions_cloned: 7,
            ..EngineStats::default()
        };
        let mut h = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
        h.record(300).unwrap();
        h.record(2_000_000).unwrap();
        let reg = tcpclone::metrics::registry("v", "c", move || {
            snapshot(
                &c,
                &[a.clone(), b.clone()],
                std::slice::from_ref(&h),
                &[250_000_000, 1_500_000_000],
            )
        });
        let t = tcpclone::metrics::render(&reg);
        for want in [
            "tcpclone_tcpcopy_send_packets_total 42\n",
            "tcpclone_tcpcopy_kernel_dropped_packets_total 3\n",
            "tcpclone_tcpcopy_sessions_cloned_total{worker=\"0\"} 5\n",
            "tcpclone_tcpcopy_sessions_cloned_total{worker=\"1\"} 7\n",
            "tcpclone_tcpcopy_sessions_active{worker=\"0\"} 2\n",
            "tcpclone_tcpcopy_request_latency_seconds_bucket{worker=\"0\",le=\"0.000512\"} 0\n",
            "tcpclone_tcpcopy_request_latency_seconds_bucket{worker=\"0\",le=\"0.001024\"} 4\n",
            "tcpclone_tcpcopy_request_latency_seconds_count{worker=\"0\"} 4\n",
            "tcpclone_tcpcopy_capture_to_engine_latency_seconds_bucket{worker=\"0\",le=\"0.0005\"} 1\n",
            "tcpclone_tcpcopy_capture_to_engine_latency_seconds_bucket{worker=\"0\",le=\"1\"} 1\n",
            "tcpclone_tcpcopy_capture_to_engine_latency_seconds_bucket{worker=\"0\",le=\"+Inf\"} 2\n",
            "# HELP tcpclone_tcpcopy_kernel_dropped_packets_total [kernel drops]",
            "tcpclone_tcpcopy_worker_cpu_seconds_total{worker=\"0\"} 0.25\n",
            "tcpclone_tcpcopy_worker_cpu_seconds_total{worker=\"1\"} 1.5\n",
        ] {
            assert!(t.contains(want), "missing {want:?} in\n{t}");
        }
    }
}
