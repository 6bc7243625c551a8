//! `--metrics` for replay: the summary's counters, as the reporter last published them
//! (every 100 ms while sending, and at the end). Stages in HELP: `[input]`, `[rewrite]`,
//! `[send]`.

use std::sync::{Arc, Mutex};
use tcpclone::metrics::{Family, Snapshot, Values};
use tcpclone::stats::{ReasonCounts, ReplayStats};

/// The counters the reporter publishes for scrapes.
pub type Published = Arc<Mutex<ReplayStats>>;

fn by_reason(name: &'static str, help: &'static str, r: &ReasonCounts) -> Family {
    Family {
        name,
        help,
        values: Values::Counter(
            r.iter()
                .map(|(reason, n)| (vec![("reason", reason.to_string())], n))
                .collect(),
        ),
    }
}

/// One scrape's families.
pub fn snapshot(st: &ReplayStats) -> Snapshot {
    let mut s = Snapshot::default();
    s.counter(
        "tcpclone_replay_sent_packets",
        "[send] Packets the sink accepted (sent on the wire, queued in the ring, or written)",
        st.packets_sent,
    );
    s.counter(
        "tcpclone_replay_sent_bytes",
        "[send] Frame bytes of the packets sent",
        st.bytes_sent,
    );
    s.counter(
        "tcpclone_replay_rewritten_packets",
        "[rewrite] Packets changed by the rewrite step",
        st.rewritten,
    );
    s.counter(
        "tcpclone_replay_late_packets",
        "[send] Paced packets that left half their gap or more after their time",
        st.late,
    );
    s.families.push(by_reason(
        "tcpclone_replay_unparsed_packets",
        "[input] Packets that did not parse and were passed through unchanged, by reason",
        &st.unparsed,
    ));
    s.families.push(by_reason(
        "tcpclone_replay_truncated_packets",
        "[rewrite] Packets cut short (e.g. --mtu-trunc), by reason",
        &st.truncated,
    ));
    s.families.push(by_reason(
        "tcpclone_replay_failed_packets",
        "[send] Packets not sent, by reason",
        &st.failed,
    ));
    s.families.push(by_reason(
        "tcpclone_replay_send_retries",
        "[send] Sends tried again (ENOBUFS, EAGAIN: ring or queue full), by reason",
        &st.retried,
    ));
    s
}

/// Starts the `/metrics` server on `addr`.
pub fn serve(
    addr: std::net::SocketAddr,
    published: Published,
) -> Result<tcpclone::metrics::MetricsServer, tcpclone::metrics::MetricsError> {
    let registry = tcpclone::metrics::registry(
        tcpclone::build::VERSION,
        tcpclone::build::COMMIT,
        move || snapshot(&published.lock().unwrap_or_else(|p| p.into_inner())),
    );
    tcpclone::metrics::MetricsServer::start(addr, registry)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_reasons() {
        let mut st = ReplayStats::default();
        st.sent(100);
        st.sent(60);
        st.failed.add("too large", 2);
        let t = tcpclone::metrics::render(&tcpclone::metrics::registry("v", "c", move || {
            snapshot(&st)
        }));
        for want in [
            "tcpclone_replay_sent_packets_total 2\n",
            "tcpclone_replay_sent_bytes_total 160\n",
            "tcpclone_replay_failed_packets_total{reason=\"too large\"} 2\n",
        ] {
            assert!(t.contains(want), "missing {want:?} in\n{t}");
        }
    }
}
