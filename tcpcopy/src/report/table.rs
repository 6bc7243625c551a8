//! The table printed at the end of a run (and of `report compare` / `report merge`). Pure.

use super::{Percentiles, Report, TlsCounts};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// The `tls:` lines of the table (also shown in the HTML report).
pub fn render_tls(s: &mut String, t: &TlsCounts) {
    let list = |m: &std::collections::BTreeMap<String, u64>| {
        m.iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let _ = writeln!(
        s,
        "tls: {} decrypted ({} resumed), {} without keys, {} plaintext, {} incomplete, {} failed, {} cut records, {} records failed authentication, {} rejected 0-RTT records",
        t.decrypted, t.resumed, t.without_keys, t.plaintext, t.incomplete, t.failed, t.cut_records, t.auth_failures, t.early_rejected
    );
    if !t.suites.is_empty() {
        let _ = writeln!(s, "tls suites: {}", list(&t.suites));
    }
    if !t.alpn.is_empty() {
        let _ = writeln!(s, "tls alpn: {}", list(&t.alpn));
    }
    if !t.sni.is_empty() {
        let _ = writeln!(s, "tls sni: {}", list(&t.sni));
    }
    if !t.unsupported.is_empty() {
        let _ = writeln!(s, "tls unsupported: {}", list(&t.unsupported));
    }
    if !t.target_handshake_failed.is_empty() {
        let _ = writeln!(
            s,
            "tls handshakes with the target failed: {}",
            list(&t.target_handshake_failed)
        );
    }
}

/// The human-readable table printed at the end of a run.
pub fn render_table(r: &Report) -> String {
    let mut s = String::new();
    let p = r.production.as_ref();
    let _ = writeln!(
        s,
        "{:<24}{:>14}{:>14}",
        "",
        "test",
        if p.is_some() { "production" } else { "" }
    );
    let row = |s: &mut String, name: &str, t: String, pv: Option<String>| {
        let _ = writeln!(s, "{:<24}{:>14}{:>14}", name, t, pv.unwrap_or_default());
    };
    let t = &r.test;
    row(
        &mut s,
        "requests",
        t.requests.to_string(),
        p.map(|p| p.requests.to_string()),
    );
    row(
        &mut s,
        "answered",
        t.answered.to_string(),
        p.map(|p| p.answered.to_string()),
    );
    row(
        &mut s,
        "errors",
        t.errors.to_string(),
        p.map(|p| p.errors.to_string()),
    );
    let _ = writeln!(
        s,
        "{:<24}reset {} · refused {} · timed out {} · closed {} · unanswered {}",
        "  of which", t.reset, t.refused, t.timed_out, t.closed, t.unanswered
    );
    row(
        &mut s,
        "requests/s",
        format!("{:.1}", t.rps),
        p.map(|p| format!("{:.1}", p.rps)),
    );
    type Pick = fn(&Percentiles) -> f64;
    let lines: [(&str, Pick); 5] = [
        ("latency p50 (ms)", |x| x.p50),
        ("latency p90 (ms)", |x| x.p90),
        ("latency p99 (ms)", |x| x.p99),
        ("latency p99.9 (ms)", |x| x.p999),
        ("latency max (ms)", |x| x.max),
    ];
    for (name, f) in lines {
        row(
            &mut s,
            name,
            format!("{:.3}", f(&t.latency_ms)),
            p.map(|p| format!("{:.3}", f(&p.latency_ms))),
        );
    }
    row(
        &mut s,
        "to last byte p50 (ms)",
        format!("{:.3}", t.ttlb_ms.p50),
        p.map(|p| format!("{:.3}", p.ttlb_ms.p50)),
    );
    row(
        &mut s,
        "bytes sent",
        t.bytes_sent.to_string(),
        p.map(|p| p.bytes_sent.to_string()),
    );
    row(
        &mut s,
        "bytes received",
        t.bytes_received.to_string(),
        p.map(|p| p.bytes_received.to_string()),
    );
    let ss = &r.sessions;
    let _ = writeln!(
        s,
        "sessions: {} in capture, {} replayed, {} partial, {} without SYN, {} sampled out, {} dropped, {} connect failed{}",
        ss.seen, ss.replayed, ss.partial, ss.without_syn, ss.sampled_out, ss.dropped, ss.connect_failed,
        if ss.repeats > 0 || r.source.as_deref().is_some_and(|s| s.starts_with("jetstream ")) {
            format!(", {} repeats (redelivered)", ss.repeats)
        } else {
            String::new()
        }
    );
    if ss.baseline_connect_failed > 0 {
        let _ = writeln!(
            s,
            "baseline target: {} connections could not be made",
            ss.baseline_connect_failed
        );
    }
    if let Some(n) = r.merged_from {
        let _ = writeln!(s, "merged from {n} reports");
    }
    if let Some(t) = &r.tls {
        render_tls(&mut s, t);
    }
    let _ = writeln!(
        s,
        "slip behind schedule: p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        r.slip_ms.p50, r.slip_ms.p99, r.slip_ms.max
    );
    if let Some(d) = &r.diff {
        let _ = writeln!(
            s,
            "diff: {}/{} responses match ({:.1} %)",
            d.matched,
            d.compared,
            d.match_rate * 100.0
        );
        for e in &d.examples {
            let _ = writeln!(
                s,
                "  session {} request {}: {}  (production {} B, test {} B, first difference at {})\n    production: {}\n    test:       {}",
                e.session, e.index, e.request, e.production_len, e.test_len, e.first_difference, e.production_excerpt, e.test_excerpt
            );
        }
    }
    render_endpoints(&mut s, r);
    let _ = writeln!(s, "duration: {:.3} s", r.duration_s);
    s
}

/// `500: 3, ERR: 1` from a class map.
pub fn classes_text(m: &BTreeMap<String, u64>) -> String {
    m.iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The endpoint lines of the table (with the decode counts, the field diffs, the learned noise
/// and the verdicts).
pub fn render_endpoints(s: &mut String, r: &Report) {
    if let Some(d) = &r.decode {
        let _ = writeln!(
            s,
            "decoded: {} · opaque: {} requests in {} sessions, {} responses",
            classes_text(&d.decoded),
            d.opaque_requests,
            d.opaque_sessions,
            d.opaque_responses
        );
    }
    if !r.endpoints.is_empty() {
        let _ = writeln!(
            s,
            "{:<32}{:>9}{:>14}{:>20}{:>20}{:>9}  errors (test / production)",
            "endpoint", "requests", "errors", "p50 ms test/prod", "p99 ms test/prod", "p99 x"
        );
        for e in &r.endpoints {
            let p = e.production.as_ref();
            let pair = |t: f64, p: Option<f64>| match p {
                Some(p) => format!("{t:.2}/{p:.2}"),
                None => format!("{t:.2}/–"),
            };
            if e.gone {
                let _ = writeln!(
                    s,
                    "{:<32}{:>9}{:>14}{:>20}{:>20}{:>9}  gone: only in OLD ({} requests there)",
                    e.endpoint,
                    0,
                    format!("–/{}", p.map_or(0, |p| p.errors)),
                    pair(0.0, p.map(|p| p.latency_ms.p50)).replacen("0.00", "–", 1),
                    pair(0.0, p.map(|p| p.latency_ms.p99)).replacen("0.00", "–", 1),
                    "–",
                    p.map_or(0, |p| p.requests),
                );
                continue;
            }
            let _ = writeln!(
                s,
                "{:<32}{:>9}{:>14}{:>20}{:>20}{:>9}  {} / {}",
                e.endpoint,
                e.test.requests,
                format!(
                    "{}/{}",
                    e.test.errors,
                    p.map_or("–".to_string(), |p| p.errors.to_string())
                ),
                pair(e.test.latency_ms.p50, p.map(|p| p.latency_ms.p50)),
                pair(e.test.latency_ms.p99, p.map(|p| p.latency_ms.p99)),
                e.p99_ratio.map_or("–".to_string(), |x| format!("{x:.2}")),
                classes_text(&e.test.errors_by_class),
                p.map_or(String::new(), |p| classes_text(&p.errors_by_class)),
            );
        }
    }
    if let Some(d) = &r.diff {
        for e in &d.fields {
            let _ = writeln!(
                s,
                "  differs: {} {} (session {} request {})",
                e.endpoint,
                e.key.as_deref().unwrap_or(""),
                e.session,
                e.index
            );
            for f in &e.fields {
                let _ = writeln!(
                    s,
                    "    {}: production {} · test {}",
                    f.path,
                    f.production.as_deref().unwrap_or("(absent)"),
                    f.test.as_deref().unwrap_or("(absent)")
                );
            }
        }
        if d.baseline_compared > 0 || !d.noise.is_empty() {
            let _ = writeln!(
                s,
                "noise learned from {} baseline responses:",
                d.baseline_compared
            );
            for (ep, paths) in &d.noise {
                let _ = writeln!(s, "  {ep}: {}", paths.join(", "));
            }
        }
    }
    for v in &r.verdicts {
        let _ = writeln!(
            s,
            "verdict {}: {}{} — {}",
            if v.failed { "FAIL" } else { "pass" },
            v.rule,
            v.endpoint
                .as_deref()
                .map_or(String::new(), |e| format!(" [{e}]")),
            v.detail
        );
    }
}
