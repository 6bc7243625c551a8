//! `--metrics` in stream mode: the run's figures served while it runs, read from the reader's
//! published counts, the shared state and the report's collector.

use super::Ctx;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::Semaphore;

/// Fleet mode's counters, for `--metrics`.
pub(super) struct FleetCounters {
    /// `--record`.
    pub record: Option<Arc<crate::fleet::record::RecordCounters>>,
    /// `--from`.
    pub worker: Option<Arc<crate::fleet::from::WorkerCounters>>,
}

/// `--tls-keylog`'s counts as metrics (the report's `tls` section).
fn tls_metrics(
    s: &mut tcpclone::metrics::Snapshot,
    t: &crate::report::TlsCounts,
    target_failed: &Mutex<std::collections::BTreeMap<String, u64>>,
) {
    let rows: [(&'static str, &'static str, u64); 11] = [
        (
            "tcpclone_tcpcopy_stream_tls_sessions_decrypted",
            "[capture] TLS sessions decrypted with the key log (their plaintext replayed)",
            t.decrypted,
        ),
        (
            "tcpclone_tcpcopy_stream_tls_sessions_plaintext",
            "[capture] Sessions that were not TLS (replayed as they were)",
            t.plaintext,
        ),
        (
            "tcpclone_tcpcopy_stream_tls_sessions_without_keys",
            "[capture] TLS sessions whose secrets are not in the key log (not replayed)",
            t.without_keys,
        ),
        (
            "tcpclone_tcpcopy_stream_tls_sessions_incomplete",
            "[capture] TLS sessions that ended before their handshake did",
            t.incomplete,
        ),
        (
            "tcpclone_tcpcopy_stream_tls_records_auth_failed",
            "[capture] TLS records that failed authentication (wrong key, damaged bytes)",
            t.auth_failures,
        ),
        (
            "tcpclone_tcpcopy_stream_tls_early_records_rejected",
            "[capture] 0-RTT records the server had rejected (skipped as it skipped them)",
            t.early_rejected,
        ),
        (
            "tcpclone_tcpcopy_stream_tls_sessions_cut",
            "[capture] TLS sessions whose bytes end inside a record (capture loss)",
            t.cut_records,
        ),
        (
            "tcpclone_tcpcopy_stream_tls_sessions_failed",
            "[capture] TLS sessions that failed otherwise (malformed handshake, bad secret)",
            t.failed,
        ),
        (
            "tcpclone_tcpcopy_stream_tls_sessions_unsupported",
            "[capture] TLS sessions of a cipher suite or version tcpcopy cannot decrypt",
            t.unsupported.values().sum(),
        ),
        (
            "tcpclone_tcpcopy_stream_tls_sessions_resumed",
            "[capture] Resumed sessions among the decrypted ones",
            t.resumed,
        ),
        (
            "tcpclone_tcpcopy_stream_tls_target_handshakes_failed",
            "[target] TLS handshakes with the target that failed (--target-tls)",
            target_failed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .values()
                .sum(),
        ),
    ];
    for (name, help, v) in rows {
        s.counter(name, help, v);
    }
}

/// `--metrics`: serves the run's figures at `addr` until dropped. A scrape reads the published
/// session counts and locks the report's collector for a moment.
pub(super) fn serve_metrics(
    addr: std::net::SocketAddr,
    ctx: Arc<Ctx>,
    budget: Arc<Semaphore>,
    budget_total: usize,
    fleet: FleetCounters,
) -> anyhow::Result<tcpclone::metrics::MetricsServer> {
    let registry = tcpclone::metrics::registry(
        tcpclone::build::VERSION,
        tcpclone::build::COMMIT,
        move || {
            let mut s = tcpclone::metrics::Snapshot::default();
            let p = &ctx.published;
            let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
            s.counter(
                "tcpclone_tcpcopy_stream_sessions_seen",
                "[capture] Sessions found in the capture (or the recording)",
                get(&p.seen),
            );
            s.counter(
                "tcpclone_tcpcopy_stream_sessions_replayed",
                "[target] Sessions replayed to the target (-n copies included)",
                get(&p.replayed),
            );
            s.counter(
                "tcpclone_tcpcopy_stream_sessions_sampled_out",
                "[capture] Sessions skipped by -r sampling",
                get(&p.sampled_out),
            );
            s.counter(
                "tcpclone_tcpcopy_stream_sessions_without_syn",
                "[capture] Sessions whose SYN was not captured (replayed from what was)",
                get(&p.without_syn),
            );
            s.counter(
                "tcpclone_tcpcopy_stream_sessions_partial",
                "[capture] Sessions with bytes the capture lost (replayed up to the hole)",
                get(&p.partial),
            );
            s.counter(
                "tcpclone_tcpcopy_stream_sessions_dropped",
                "[queue] Sessions dropped whole: the queue bound (--queue-mb) was reached",
                get(&ctx.dropped),
            );
            s.counter(
                "tcpclone_tcpcopy_stream_connect_failures",
                "[target] Connections to the target that could not be made",
                get(&ctx.connect_failed),
            );
            s.counter(
                "tcpclone_tcpcopy_stream_baseline_connect_failures",
                "[baseline] Connections to --baseline-target that could not be made",
                get(&ctx.baseline_connect_failed),
            );
            s.gauge(
                "tcpclone_tcpcopy_stream_sessions_active",
                "[target] Sessions being replayed now",
                i64::try_from(ctx.active.load(Ordering::Relaxed)).unwrap_or(i64::MAX),
            );
            s.gauge(
                "tcpclone_tcpcopy_stream_queued_bytes",
                "[queue] Captured bytes waiting for their sessions (at most --queue-mb)",
                i64::try_from(budget_total.saturating_sub(budget.available_permits()))
                    .unwrap_or(i64::MAX),
            );
            if let Some(r) = &fleet.record {
                r.metrics(&mut s);
            }
            if let Some(w) = &fleet.worker {
                w.metrics(&mut s);
            }
            if let Some(t) = p.tls.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
                tls_metrics(&mut s, t, &ctx.target_tls_failed);
            }
            ctx.collector
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .metrics(&mut s);
            s
        },
    );
    Ok(tcpclone::metrics::MetricsServer::start(addr, registry)?)
}
