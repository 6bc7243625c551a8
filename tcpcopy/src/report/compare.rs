//! `tcpcopy report compare OLD.json NEW.json`: two saved runs side by side, without replaying.
//!
//! The result is an ordinary [`Report`]: NEW's target figures as `test`, OLD's target figures in
//! the place of `production` (run totals and per endpoint), so that the same table, HTML page
//! and `--fail-if` rules apply (`production.p99` then reads OLD's p99). Pure.

use super::Report;

/// Why a saved report cannot be compared.
#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    /// Not a tcpclone report, or a newer schema.
    #[error("{path}: {what}")]
    Schema {
        /// The file.
        path: String,
        /// What is wrong with it.
        what: String,
    },
}

/// Parses a saved JSON report, checking its schema name and version.
pub fn load(path: &str, text: &str) -> Result<Report, CompareError> {
    let bad = |what: String| CompareError::Schema {
        path: path.to_string(),
        what,
    };
    let r: Report =
        serde_json::from_str(text).map_err(|e| bad(format!("not a tcpclone JSON report: {e}")))?;
    if r.schema != super::SCHEMA {
        return Err(bad(format!(
            "schema `{}`, expected `{}`",
            r.schema,
            super::SCHEMA
        )));
    }
    if r.version > super::SCHEMA_VERSION {
        return Err(bad(format!(
            "schema version {} is newer than this tcpcopy's {}",
            r.version,
            super::SCHEMA_VERSION
        )));
    }
    Ok(r)
}

/// NEW against OLD, as one report (see the module comment). Endpoints only OLD has are listed
/// after the others, marked `gone` (their OLD figures as `production`, an empty `test` side):
/// an endpoint that vanished is news, but there is nothing of NEW's to judge.
pub fn compare(old: &Report, new: &Report) -> Report {
    let mut r = new.clone();
    r.mode = "compare".to_string();
    r.production = Some(old.test.clone());
    r.latency_curve.production = old.latency_curve.test.clone();
    r.throughput.production = old.throughput.test.clone();
    if let (Some(t), Some(o)) = (r.latency_over_time.as_mut(), old.latency_over_time.as_ref()) {
        if (t.bucket_s - o.bucket_s).abs() < 1e-9 {
            t.production = o.test.clone();
        } else {
            t.production.clear();
        }
    }
    for e in &mut r.endpoints {
        let before = old.endpoints.iter().find(|o| o.endpoint == e.endpoint);
        e.production = before.map(|o| o.test.clone());
        e.p99_ratio = e
            .production
            .as_ref()
            .filter(|p| p.latency_ms.p99 > 0.0 && e.test.latency_ms.count > 0)
            .map(|p| e.test.latency_ms.p99 / p.latency_ms.p99);
    }
    super::endpoints::sort_regressions(&mut r.endpoints);
    let mut gone: Vec<_> = old
        .endpoints
        .iter()
        .filter(|o| !new.endpoints.iter().any(|e| e.endpoint == o.endpoint))
        .map(|o| super::EndpointReport {
            protocol: o.protocol.clone(),
            endpoint: o.endpoint.clone(),
            test: Default::default(),
            production: Some(o.test.clone()),
            p99_ratio: None,
            diff: None,
            gone: true,
        })
        .collect();
    gone.sort_by(|a, b| a.endpoint.cmp(&b.endpoint));
    r.endpoints.extend(gone);
    // OLD's target histograms stand where production's were, as its figures do.
    if let Some(h) = r.histograms.as_mut() {
        match &old.histograms {
            Some(o) => {
                h.production_latency = o.test_latency.clone();
                h.production_ttlb = o.test_ttlb.clone();
            }
            None => r.histograms = None,
        }
    }
    r.verdicts.clear();
    r
}

#[cfg(test)]
mod tests {
    use super::super::{EndpointReport, EndpointSide, Percentiles};
    use super::*;

    fn run(slow_p99: f64) -> Report {
        let ep = |name: &str, p99: f64| EndpointReport {
            protocol: "http".into(),
            endpoint: name.into(),
            test: EndpointSide {
                requests: 10,
                latency_ms: Percentiles {
                    count: 10,
                    p99,
                    ..Default::default()
                },
                ..Default::default()
            },
            ..Default::default()
        };
        Report {
            schema: super::super::SCHEMA.into(),
            version: super::super::SCHEMA_VERSION,
            endpoints: vec![ep("GET /a", 1.0), ep("GET /slow", slow_p99)],
            ..Default::default()
        }
    }

    #[test]
    fn endpoints_only_old_has_are_listed_as_gone_and_not_judged() {
        let mut old = run(1.0);
        old.endpoints.push(EndpointReport {
            protocol: "http".into(),
            endpoint: "GET /retired".into(),
            test: EndpointSide {
                requests: 7,
                errors: 1,
                ..Default::default()
            },
            ..Default::default()
        });
        let new = run(1.0);
        let c = compare(&old, &new);
        let last = c.endpoints.last().unwrap();
        assert_eq!(last.endpoint, "GET /retired");
        assert!(last.gone);
        assert_eq!(last.test.requests, 0);
        assert_eq!(last.production.as_ref().unwrap().requests, 7);
        assert!(c.endpoints[..2].iter().all(|e| !e.gone));
        // Table, JSON and HTML name it as gone.
        let table = super::super::render_table(&c);
        assert!(
            table
                .lines()
                .any(|l| l.starts_with("GET /retired") && l.contains("gone")),
            "{table}"
        );
        let json = super::super::render_json(&c);
        assert!(json.contains("\"gone\": true"), "{json}");
        let back = load("c.json", &json).unwrap();
        assert!(back.endpoints.iter().any(|e| e.gone));
        let html = super::super::html::render_html(&c).unwrap();
        assert!(
            html.contains("GET /retired") && html.contains("gone"),
            "{html}"
        );
        // A rule on every endpoint judges the two NEW has, not the gone one.
        let rule = super::super::verdict::Rule::parse("endpoint=*: errors > 0").unwrap();
        let v = super::super::verdict::evaluate(&[rule], &c);
        assert_eq!(v.len(), 2);
        assert!(v
            .iter()
            .all(|x| !x.failed && x.endpoint.as_deref() != Some("GET /retired")));
    }

    #[test]
    fn new_against_old_ranks_the_slowdown_first() {
        let old = run(1.0);
        let new = run(10.0);
        let text = super::super::render_json(&old);
        let old = load("old.json", &text).unwrap();
        let c = compare(&old, &new);
        assert_eq!(c.endpoints[0].endpoint, "GET /slow");
        assert_eq!(c.endpoints[0].p99_ratio, Some(10.0));
        let rule =
            super::super::verdict::Rule::parse("endpoint=*: p99 > 2 * production.p99").unwrap();
        let v = super::super::verdict::evaluate(&[rule], &c);
        let failed: Vec<_> = v.iter().filter(|x| x.failed).collect();
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0].endpoint.as_deref(), Some("GET /slow"));
        assert!(load("x.json", "{}").is_err());
        let mut future = old.clone();
        future.version = 99;
        assert!(load("x.json", &super::super::render_json(&future))
            .unwrap_err()
            .to_string()
            .contains("newer"));
    }
}
