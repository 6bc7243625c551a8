//! What CI reads of the verdicts: the failed rules as lines for standard error, and the JUnit
//! XML of `--junit` (a suite of rules, a suite of endpoints). Pure: strings out.

use super::{Report, Verdict};
use std::fmt::Write as _;

/// One line per failed verdict, for standard error.
pub fn failures_text(v: &[Verdict]) -> String {
    let mut s = String::new();
    for x in v.iter().filter(|x| x.failed) {
        let _ = match &x.endpoint {
            Some(e) => writeln!(s, "--fail-if `{}` [{e}]: {}", x.rule, x.detail),
            None => writeln!(s, "--fail-if `{}`: {}", x.rule, x.detail),
        };
    }
    s
}

fn xml(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_control() || *c == '\n' || *c == '\t')
        .collect::<String>()
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

/// The JUnit XML: a suite `verdicts` with one test case per verdict, and a suite `endpoints`
/// with one per endpoint (failed when a rule failed on it).
pub fn render_junit(r: &Report) -> String {
    let v = &r.verdicts;
    let mut s = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let vf = v.iter().filter(|x| x.failed).count();
    let ep_failed = |name: &str| {
        v.iter()
            .filter(|x| x.failed && x.endpoint.as_deref() == Some(name))
            .collect::<Vec<_>>()
    };
    let ef = r
        .endpoints
        .iter()
        .filter(|e| !ep_failed(&e.endpoint).is_empty())
        .count();
    let _ = writeln!(
        s,
        "<testsuites name=\"tcpcopy\" tests=\"{}\" failures=\"{}\">",
        v.len() + r.endpoints.len(),
        vf + ef
    );
    let _ = writeln!(
        s,
        "  <testsuite name=\"verdicts\" tests=\"{}\" failures=\"{vf}\">",
        v.len()
    );
    for x in v {
        let name = match &x.endpoint {
            Some(e) => format!("{} [{e}]", x.rule),
            None => x.rule.clone(),
        };
        let _ = write!(
            s,
            "    <testcase classname=\"tcpcopy.verdict\" name=\"{}\">",
            xml(&name)
        );
        if x.failed {
            let _ = write!(
                s,
                "<failure message=\"{}\">{}</failure>",
                xml(&x.detail),
                xml(&x.detail)
            );
        } else {
            let _ = write!(s, "<system-out>{}</system-out>", xml(&x.detail));
        }
        s.push_str("</testcase>\n");
    }
    s.push_str("  </testsuite>\n");
    let _ = writeln!(
        s,
        "  <testsuite name=\"endpoints\" tests=\"{}\" failures=\"{ef}\">",
        r.endpoints.len()
    );
    for e in &r.endpoints {
        let figures = format!(
            "requests {} errors {} p50 {:.3} ms p99 {:.3} ms{}",
            e.test.requests,
            e.test.errors,
            e.test.latency_ms.p50,
            e.test.latency_ms.p99,
            e.production.as_ref().map_or(String::new(), |p| format!(
                " (production: errors {} p50 {:.3} ms p99 {:.3} ms)",
                p.errors, p.latency_ms.p50, p.latency_ms.p99
            ))
        );
        let _ = write!(
            s,
            "    <testcase classname=\"tcpcopy.endpoint\" name=\"{}\">",
            xml(&e.endpoint)
        );
        let failed = ep_failed(&e.endpoint);
        if !failed.is_empty() {
            let msg: Vec<String> = failed
                .iter()
                .map(|x| format!("{}: {}", x.rule, x.detail))
                .collect();
            let _ = write!(
                s,
                "<failure message=\"{}\">{}</failure>",
                xml(&msg.join("; ")),
                xml(&figures)
            );
        } else {
            let _ = write!(s, "<system-out>{}</system-out>", xml(&figures));
        }
        s.push_str("</testcase>\n");
    }
    s.push_str("  </testsuite>\n</testsuites>\n");
    s
}
