//! What stream mode serves at `--metrics`: the report's running figures (requests and their
//! outcomes, bytes, latency of the target and of production), read from the collector when
//! Prometheus scrapes, so a scrape costs the replay nothing but a lock.

use super::Collector;
use tcpclone::metrics::{HistogramSample, Snapshot};

/// Upper bounds of the request latency buckets, in seconds.
pub const LATENCY_BOUNDS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// A histogram of microseconds as a Prometheus histogram in seconds over `bounds`; the sum is
/// taken from the bucket values HdrHistogram keeps (within its 3 significant digits).
pub fn hdr_micros(h: &hdrhistogram::Histogram<u64>, bounds: &[f64]) -> HistogramSample {
    let mut counts = vec![0u64; bounds.len()];
    let mut over = 0;
    let mut sum_us = 0f64;
    for v in h.iter_recorded() {
        let us = h.highest_equivalent(v.value_iterated_to());
        let n = v.count_at_value();
        sum_us += us as f64 * n as f64;
        let secs = us as f64 / 1e6;
        match bounds.iter().position(|&b| secs <= b) {
            Some(i) => counts[i] += n,
            None => over += n,
        }
    }
    HistogramSample::from_buckets(sum_us / 1e6, bounds, &counts, over)
}

impl Collector {
    /// Adds the report's running figures to `s` (names `tcpclone_tcpcopy_stream_*`).
    pub fn metrics(&self, s: &mut Snapshot) {
        let t = &self.test;
        s.counter(
            "tcpclone_tcpcopy_stream_requests",
            "[target] Requests replayed to the target (finished: answered or failed)",
            t.requests,
        );
        let outcomes: [(&'static str, &'static str); 6] = [
            (
                "tcpclone_tcpcopy_stream_requests_answered",
                "[target] Replayed requests the target answered",
            ),
            (
                "tcpclone_tcpcopy_stream_requests_reset",
                "[target] Replayed requests whose connection the target reset",
            ),
            (
                "tcpclone_tcpcopy_stream_requests_refused",
                "[target] Replayed requests whose connection the target refused",
            ),
            (
                "tcpclone_tcpcopy_stream_requests_timed_out",
                "[target] Replayed requests without an answer within --response-timeout",
            ),
            (
                "tcpclone_tcpcopy_stream_requests_closed",
                "[target] Replayed requests whose connection the target closed unanswered",
            ),
            (
                "tcpclone_tcpcopy_stream_requests_unanswered",
                "[target] Replayed requests production did not answer either (none expected)",
            ),
        ];
        for ((name, help), v) in outcomes.into_iter().zip(t.outcomes) {
            s.counter(name, help, v);
        }
        s.counter(
            "tcpclone_tcpcopy_stream_sent_bytes",
            "[target] Request bytes sent to the target",
            t.bytes_sent,
        );
        s.counter(
            "tcpclone_tcpcopy_stream_received_bytes",
            "[target] Response bytes received from the target",
            t.bytes_received,
        );
        s.counter(
            "tcpclone_tcpcopy_stream_production_requests",
            "[capture] Requests production answered in the capture (the comparison's baseline)",
            self.prod.requests,
        );
        s.counter(
            "tcpclone_tcpcopy_stream_production_received_bytes",
            "[capture] Response bytes production sent in the capture",
            self.prod.bytes_received,
        );
        if let Some((_, d)) = &self.diff {
            // As the report counts them: byte comparisons, plus the field-by-field ones.
            let eps = self.endpoints.finish();
            s.counter(
                "tcpclone_tcpcopy_stream_diff_compared",
                "[target] Responses of the target compared with production's (--diff)",
                d.compared + eps.compared,
            );
            s.counter(
                "tcpclone_tcpcopy_stream_diff_matched",
                "[target] Compared responses equal to production's (after masks and noise)",
                d.matched + eps.compared - eps.differing,
            );
        }
        s.histogram(
            "tcpclone_tcpcopy_stream_request_latency_seconds",
            "[target] Time from a request's last byte sent to the target's first answer byte",
            hdr_micros(&self.test_lat, &LATENCY_BOUNDS),
        );
        s.histogram(
            "tcpclone_tcpcopy_stream_production_request_latency_seconds",
            "[capture] The same for production, from the capture's timestamps",
            hdr_micros(&self.prod_lat, &LATENCY_BOUNDS),
        );
    }
}
