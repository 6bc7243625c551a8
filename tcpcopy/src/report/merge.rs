//! `tcpcopy report merge A.json B.json ...`: one report from the reports of several replay
//! workers (fleet mode: each `--from --worker K/N` writes its own `--report`).
//!
//! Latency figures are merged exactly: every percentile comes from the sum of the workers'
//! HdrHistograms (schema version 2 carries them, [`super::hist`]), so the merged p99 is the p99
//! of one run over all the samples. Counts are summed; latency over time is merged per time
//! bucket (histograms added); requests per second are summed (the workers replay at the same
//! time). Pure: reports in, a report out.

use super::endpoints::{self, EndpointDiff, EndpointReport, EndpointSide, Timeline};
use super::{hist, DecodeCounts, DiffReport, Histograms, Report, SideReport, TlsCounts};
use hdrhistogram::Histogram;
use std::collections::{BTreeMap, BTreeSet};

/// Why reports cannot be merged: one line naming the file.
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    /// Not a report, or of a newer schema.
    #[error(transparent)]
    Load(#[from] super::compare::CompareError),
    /// A report that cannot be merged with the others.
    #[error("{path}: {what}")]
    Input {
        /// The file.
        path: String,
        /// What is wrong with it.
        what: String,
    },
    /// Nothing to merge.
    #[error("no reports to merge")]
    Empty,
}

fn input(path: &str, what: impl Into<String>) -> MergeError {
    MergeError::Input {
        path: path.to_string(),
        what: what.into(),
    }
}

/// Parses a saved JSON report for merging: a tcpclone report of a run (not of `report
/// compare`) that carries its histograms (schema version 2 or later).
pub fn load(path: &str, text: &str) -> Result<Report, MergeError> {
    let r = super::compare::load(path, text)?;
    if r.mode == "compare" {
        return Err(input(
            path,
            "a `report compare` result, not a run's report: merge the runs' reports",
        ));
    }
    if r.histograms.is_none() {
        return Err(input(
            path,
            format!(
                "schema version {} carries no latency histograms (written by an older tcpcopy): \
                 replay again with this one to merge",
                r.version
            ),
        ));
    }
    Ok(r)
}

/// A histogram sum over the files.
#[derive(Default)]
struct Sum(Option<Histogram<u64>>);

impl Sum {
    fn add(&mut self, path: &str, field: &str, text: &str) -> Result<(), MergeError> {
        let h = hist::decode(field, text).map_err(|e| input(path, e.to_string()))?;
        match &mut self.0 {
            Some(a) => hist::add(field, a, &h).map_err(|e| input(path, e.to_string())),
            None => {
                self.0 = Some(h);
                Ok(())
            }
        }
    }

    fn percentiles(&self) -> super::Percentiles {
        self.0.as_ref().map(super::percentiles).unwrap_or_default()
    }

    fn curve(&self) -> Vec<super::CurvePoint> {
        self.0.as_ref().map(super::curve).unwrap_or_default()
    }

    fn encode(&self) -> String {
        hist::encode(self.0.as_ref().unwrap_or(&hist::new()))
    }
}

/// Merges `reports` (each with the path it came from, named in errors) into one.
pub fn merge(reports: &[(String, Report)]) -> Result<Report, MergeError> {
    let Some((first_path, first)) = reports.first() else {
        return Err(MergeError::Empty);
    };
    for (path, r) in reports {
        if r.mode != first.mode {
            return Err(input(
                path,
                format!(
                    "a `{}` run's report, but {first_path} is of a `{}` run",
                    r.mode, first.mode
                ),
            ));
        }
        if r.source != first.source {
            let name = |s: &Option<String>| s.clone().unwrap_or_else(|| "(unknown)".into());
            return Err(input(
                path,
                format!(
                    "replayed `{}`, but {first_path} replayed `{}`: reports of different \
                     captures do not merge",
                    name(&r.source),
                    name(&first.source)
                ),
            ));
        }
    }
    let mut out = Report {
        schema: super::SCHEMA.to_string(),
        version: super::SCHEMA_VERSION,
        mode: first.mode.clone(),
        source: first.source.clone(),
        merged_from: Some(
            reports
                .iter()
                .map(|(_, r)| r.merged_from.unwrap_or(1))
                .sum(),
        ),
        ..Default::default()
    };
    let [mut tl, mut tt, mut pl, mut pt, mut slip] = Default::default();
    let mut production: Option<SideReport> = None;
    let mut eps: BTreeMap<String, EpSum> = BTreeMap::new();
    for (path, r) in reports {
        let h = r
            .histograms
            .as_ref()
            .ok_or_else(|| input(path, "no latency histograms"))?;
        add_hists(path, h, [&mut tl, &mut tt, &mut pl, &mut pt, &mut slip])?;
        out.duration_s = out.duration_s.max(r.duration_s);
        add_side(&mut out.test, &r.test);
        if let Some(p) = &r.production {
            add_side(production.get_or_insert_with(Default::default), p);
        }
        add_sessions(&mut out.sessions, &r.sessions);
        add_map(&mut out.repeated_requests, &r.repeated_requests);
        if let Some(d) = &r.diff {
            add_diff(out.diff.get_or_insert_with(Default::default), d);
        }
        if let Some(t) = &r.tls {
            add_tls(out.tls.get_or_insert_with(Default::default), t);
        }
        if let Some(d) = &r.decode {
            add_decode(out.decode.get_or_insert_with(Default::default), d);
        }
        for e in r.endpoints.iter().filter(|e| !e.gone) {
            eps.entry(e.endpoint.clone()).or_default().add(path, e)?;
        }
    }
    out.test.latency_ms = tl.percentiles();
    out.test.ttlb_ms = tt.percentiles();
    if let Some(p) = production.as_mut() {
        p.latency_ms = pl.percentiles();
        p.ttlb_ms = pt.percentiles();
    }
    out.production = production;
    out.slip_ms = slip.percentiles();
    out.latency_curve = super::Curves {
        test: tl.curve(),
        production: pl.curve(),
    };
    out.histograms = Some(Histograms {
        test_latency: tl.encode(),
        test_ttlb: tt.encode(),
        production_latency: pl.encode(),
        production_ttlb: pt.encode(),
        slip: slip.encode(),
    });
    if let Some(d) = out.diff.as_mut() {
        d.match_rate = if d.compared == 0 {
            0.0
        } else {
            d.matched as f64 / d.compared as f64
        };
    }
    out.throughput = merge_throughput(reports);
    out.latency_over_time = merge_timelines(reports)?;
    out.endpoints = eps.into_iter().map(|(name, e)| e.finish(name)).collect();
    endpoints::sort_regressions(&mut out.endpoints);
    Ok(out)
}

fn add_hists(path: &str, h: &Histograms, sums: [&mut Sum; 5]) -> Result<(), MergeError> {
    let fields = [
        ("histograms.test_latency", &h.test_latency),
        ("histograms.test_ttlb", &h.test_ttlb),
        ("histograms.production_latency", &h.production_latency),
        ("histograms.production_ttlb", &h.production_ttlb),
        ("histograms.slip", &h.slip),
    ];
    for (sum, (field, text)) in sums.into_iter().zip(fields) {
        sum.add(path, field, text)?;
    }
    Ok(())
}

/// Counts summed; the percentiles are filled in from the histograms afterwards.
fn add_side(a: &mut SideReport, b: &SideReport) {
    a.requests += b.requests;
    a.answered += b.answered;
    a.reset += b.reset;
    a.refused += b.refused;
    a.timed_out += b.timed_out;
    a.closed += b.closed;
    a.unanswered += b.unanswered;
    a.errors += b.errors;
    // The workers replay side by side over the same span: their rates add up.
    a.rps += b.rps;
    a.bytes_sent += b.bytes_sent;
    a.bytes_received += b.bytes_received;
}

fn add_sessions(a: &mut super::SessionCounts, b: &super::SessionCounts) {
    a.seen += b.seen;
    a.replayed += b.replayed;
    a.sampled_out += b.sampled_out;
    a.without_syn += b.without_syn;
    a.partial += b.partial;
    a.dropped += b.dropped;
    a.connect_failed += b.connect_failed;
    a.repeats += b.repeats;
    a.baseline_connect_failed += b.baseline_connect_failed;
}

fn add_map(a: &mut BTreeMap<String, u64>, b: &BTreeMap<String, u64>) {
    for (k, v) in b {
        *a.entry(k.clone()).or_default() += v;
    }
}

fn add_diff(a: &mut DiffReport, b: &DiffReport) {
    a.compared += b.compared;
    a.matched += b.matched;
    // Options: the same flags on every worker; the first report's stand.
    if a.ignore.is_empty() {
        a.ignore = b.ignore.clone();
    }
    if a.headers.is_empty() {
        a.headers = b.headers.clone();
    }
    if a.ignore_paths.is_empty() {
        a.ignore_paths = b.ignore_paths.clone();
    }
    let room = super::MAX_DIFF_EXAMPLES.saturating_sub(a.examples.len());
    a.examples.extend(b.examples.iter().take(room).cloned());
    let room = endpoints::MAX_FIELD_EXAMPLES.saturating_sub(a.fields.len());
    a.fields.extend(b.fields.iter().take(room).cloned());
    for (ep, paths) in &b.noise {
        let set: BTreeSet<String> = a
            .noise
            .remove(ep)
            .unwrap_or_default()
            .into_iter()
            .chain(paths.iter().cloned())
            .collect();
        a.noise.insert(ep.clone(), set.into_iter().collect());
    }
    a.baseline_compared += b.baseline_compared;
}

fn add_tls(a: &mut TlsCounts, b: &TlsCounts) {
    a.decrypted += b.decrypted;
    a.plaintext += b.plaintext;
    a.without_keys += b.without_keys;
    a.incomplete += b.incomplete;
    a.auth_failures += b.auth_failures;
    a.early_rejected += b.early_rejected;
    a.cut_records += b.cut_records;
    a.failed += b.failed;
    a.resumed += b.resumed;
    add_map(&mut a.unsupported, &b.unsupported);
    add_map(&mut a.suites, &b.suites);
    add_map(&mut a.alpn, &b.alpn);
    add_map(&mut a.sni, &b.sni);
    add_map(&mut a.target_handshake_failed, &b.target_handshake_failed);
}

fn add_decode(a: &mut DecodeCounts, b: &DecodeCounts) {
    add_map(&mut a.decoded, &b.decoded);
    a.opaque_requests += b.opaque_requests;
    // Each worker replays its own sessions: no session is counted twice.
    a.opaque_sessions += b.opaque_sessions;
    a.opaque_responses += b.opaque_responses;
}

/// One side of one endpoint, summed.
#[derive(Default)]
struct EpSideSum {
    requests: u64,
    errors: u64,
    classes: BTreeMap<String, u64>,
    lat: Sum,
}

impl EpSideSum {
    fn add(&mut self, path: &str, field: &str, s: &EndpointSide) -> Result<(), MergeError> {
        self.requests += s.requests;
        self.errors += s.errors;
        add_map(&mut self.classes, &s.errors_by_class);
        match &s.latency_hist {
            Some(h) => self.lat.add(path, field, h),
            None if s.latency_ms.count > 0 => Err(input(
                path,
                format!("{field}: latency figures without their histogram"),
            )),
            None => Ok(()),
        }
    }

    fn finish(&self) -> EndpointSide {
        EndpointSide {
            requests: self.requests,
            errors: self.errors,
            error_rate: if self.requests == 0 {
                0.0
            } else {
                self.errors as f64 / self.requests as f64
            },
            errors_by_class: self.classes.clone(),
            latency_ms: self.lat.percentiles(),
            latency_hist: self.lat.0.as_ref().map(hist::encode),
        }
    }
}

#[derive(Default)]
struct EpSum {
    protocol: String,
    test: EpSideSum,
    production: Option<EpSideSum>,
    diff: Option<(EndpointDiff, BTreeSet<String>)>,
}

impl EpSum {
    fn add(&mut self, path: &str, e: &EndpointReport) -> Result<(), MergeError> {
        self.protocol.clone_from(&e.protocol);
        let field = |side: &str| format!("endpoints[{}].{side}", e.endpoint);
        self.test.add(path, &field("test"), &e.test)?;
        if let Some(p) = &e.production {
            self.production.get_or_insert_with(Default::default).add(
                path,
                &field("production"),
                p,
            )?;
        }
        if let Some(d) = &e.diff {
            let (sum, noise) = self.diff.get_or_insert_with(Default::default);
            sum.compared += d.compared;
            sum.differing += d.differing;
            noise.extend(d.noise.iter().cloned());
        }
        Ok(())
    }

    fn finish(self, endpoint: String) -> EndpointReport {
        let test = self.test.finish();
        let production = self.production.map(|p| p.finish());
        let p99_ratio = production
            .as_ref()
            .filter(|p| p.latency_ms.p99 > 0.0 && test.latency_ms.count > 0)
            .map(|p| test.latency_ms.p99 / p.latency_ms.p99);
        EndpointReport {
            protocol: self.protocol,
            endpoint,
            test,
            production,
            p99_ratio,
            diff: self.diff.map(|(mut d, noise)| {
                d.noise = noise.into_iter().collect();
                d
            }),
            gone: false,
        }
    }
}

/// Requests per second over time: each report's buckets are put into the widest bucket width
/// among them (by their start) and their rates added.
fn merge_throughput(reports: &[(String, Report)]) -> super::Throughput {
    let width = reports
        .iter()
        .map(|(_, r)| r.throughput.bucket_s)
        .fold(0.1_f64, f64::max);
    let side = |pick: fn(&super::Throughput) -> &Vec<f64>| {
        let mut counts: Vec<f64> = Vec::new();
        for (_, r) in reports {
            let b = r.throughput.bucket_s;
            for (i, rate) in pick(&r.throughput).iter().enumerate() {
                let at = ((i as f64 * b) / width + 1e-9).floor() as usize;
                // Bounded like the collector's (100 hours of 100 ms slots).
                if at >= 3_600_000 {
                    continue;
                }
                if counts.len() <= at {
                    counts.resize(at + 1, 0.0);
                }
                counts[at] += rate * b;
            }
        }
        counts.into_iter().map(|c| c / width).collect()
    };
    super::Throughput {
        bucket_s: width,
        test: side(|t| &t.test),
        production: side(|t| &t.production),
    }
}

/// Latency over time: the widest bucket width among the reports (widened further to stay
/// under [`endpoints::MAX_TIMELINE`] points), each bucket's histograms added.
fn merge_timelines(reports: &[(String, Report)]) -> Result<Option<Timeline>, MergeError> {
    let lines: Vec<(&str, &Timeline)> = reports
        .iter()
        .filter_map(|(p, r)| r.latency_over_time.as_ref().map(|t| (p.as_str(), t)))
        .collect();
    if lines.is_empty() {
        return Ok(None);
    }
    // Widths in tenths of a second, as the collector keeps them (no float drift in `t_s`).
    let tenths = |s: f64| (s * 10.0).round().max(0.0) as u64;
    let mut width = lines
        .iter()
        .map(|(_, t)| tenths(t.bucket_s))
        .fold(1, u64::max);
    let last = lines
        .iter()
        .flat_map(|(_, t)| t.test.iter().chain(&t.production))
        .map(|p| tenths(p.t_s))
        .fold(0, u64::max)
        .min(3_600_000);
    // The collector's widths: 100 ms, then 1 s, then doubling.
    while last / width >= endpoints::MAX_TIMELINE as u64 {
        width *= if width == 1 { 10 } else { 2 };
    }
    let mut sides: [Vec<Sum>; 2] = Default::default();
    for (path, t) in &lines {
        for (k, points) in [&t.test, &t.production].into_iter().enumerate() {
            for p in points {
                let at = (tenths(p.t_s) / width) as usize;
                if at >= endpoints::MAX_TIMELINE {
                    continue;
                }
                let Some(h) = &p.hist else {
                    return Err(input(
                        path,
                        format!("latency_over_time at {} s has no histogram", p.t_s),
                    ));
                };
                if sides[k].len() <= at {
                    sides[k].resize_with(at + 1, Sum::default);
                }
                sides[k][at].add(path, "latency_over_time", h)?;
            }
        }
    }
    let points = |sums: &[Sum]| {
        sums.iter()
            .enumerate()
            .filter_map(|(i, s)| {
                let h = s.0.as_ref()?;
                (!h.is_empty()).then(|| endpoints::time_point((i as u64 * width) as f64 / 10.0, h))
            })
            .collect()
    };
    Ok(Some(Timeline {
        bucket_s: width as f64 / 10.0,
        test: points(&sides[0]),
        production: points(&sides[1]),
    }))
}

#[cfg(test)]
mod tests {
    use super::super::exchange::{DecodedResponse, Exchange};
    use super::super::{Collector, Outcome, ProductionSample, RequestSample};
    use super::*;
    use std::time::Duration;

    /// Request `i` of a run: endpoint by `i % 3`, latencies spread so that percentiles differ
    /// between halves.
    fn sample(i: u64, lat_us: u64) -> RequestSample {
        let ep = ["GET /a", "GET /b", "GET /users/{id}"][(i % 3) as usize];
        let resp = |class: &str| DecodedResponse {
            class: class.into(),
            error: class == "500",
            fields: Default::default(),
        };
        RequestSample {
            session: i / 4,
            index: (i % 4) as u32,
            sent_at: Duration::from_millis(i * 7),
            latency: Some(Duration::from_micros(lat_us)),
            ttlb: Some(Duration::from_micros(lat_us * 2)),
            bytes_out: 10,
            bytes_in: 100 + i,
            outcome: Some(if i % 11 == 0 {
                Outcome::Reset
            } else {
                Outcome::Answered
            }),
            slip: Some(Duration::from_micros(i % 50 + 1)),
            production: Some(ProductionSample {
                latency: Duration::from_micros(lat_us / 2 + 1),
                ttlb: Duration::from_micros(lat_us),
                bytes_in: 100,
                at: Duration::from_millis(i * 9),
            }),
            exchange: Some(Exchange {
                protocol: "http",
                endpoint: Some(ep.into()),
                key: None,
                production: Some(resp("200")),
                test: Some(resp(if i % 13 == 0 { "500" } else { "200" })),
                response_opaque: false,
            }),
            ..Default::default()
        }
    }

    fn lat(i: u64, seed: u64) -> u64 {
        // Deterministic spread over 50 µs .. ~80 ms.
        50 + (i.wrapping_mul(2_654_435_761).wrapping_add(seed) % 80_000)
    }

    fn run(samples: impl Iterator<Item = RequestSample>, repeats: u64) -> Report {
        let mut c = Collector::new("stream", None).unwrap();
        c.source = Some("jetstream prod (replay replay)".into());
        // The first `repeats` requests are those of sessions replayed again.
        for (i, s) in samples.enumerate() {
            if (i as u64) < repeats {
                c.count_repeat(&s);
            }
            c.record(s);
        }
        c.sessions.seen = 10;
        c.sessions.replayed = 10 + repeats;
        c.sessions.repeats = repeats;
        c.finish(Duration::from_secs(4))
    }

    fn through_json(path: &str, r: &Report) -> (String, Report) {
        (
            path.to_string(),
            load(path, &super::super::render_json(r)).unwrap(),
        )
    }

    #[test]
    fn merged_figures_equal_one_run_over_all_samples() {
        let n = 600;
        let w0 = run(
            (0..n).filter(|i| i % 2 == 0).map(|i| sample(i, lat(i, 1))),
            2,
        );
        let w1 = run(
            (0..n).filter(|i| i % 2 == 1).map(|i| sample(i, lat(i, 1))),
            1,
        );
        let all = run((0..n).map(|i| sample(i, lat(i, 1))), 0);
        let m = merge(&[through_json("w0.json", &w0), through_json("w1.json", &w1)]).unwrap();
        assert_eq!(m.merged_from, Some(2));
        // Latency: exactly one run's percentiles.
        assert_eq!(m.test.latency_ms, all.test.latency_ms);
        assert_eq!(m.test.ttlb_ms, all.test.ttlb_ms);
        assert_eq!(m.slip_ms, all.slip_ms);
        let (mp, ap) = (
            m.production.as_ref().unwrap(),
            all.production.as_ref().unwrap(),
        );
        assert_eq!(mp.latency_ms, ap.latency_ms);
        assert_eq!(m.latency_curve, all.latency_curve);
        assert_ne!(w0.test.latency_ms.p99, all.test.latency_ms.p99);
        // Counts: summed.
        assert_eq!(m.test.requests, n);
        assert_eq!(
            (m.test.answered, m.test.reset, m.test.errors),
            (all.test.answered, all.test.reset, all.test.errors)
        );
        assert_eq!(m.test.bytes_received, all.test.bytes_received);
        assert_eq!(m.sessions.replayed, 23);
        assert_eq!(m.sessions.repeats, 3);
        // The repeated requests, by endpoint: the workers' added up, through their JSON.
        let repeated = |r: &Report| r.repeated_requests.values().sum::<u64>();
        assert_eq!((repeated(&w0), repeated(&w1)), (2, 1));
        assert_eq!(repeated(&m), 3);
        for (ep, n) in &m.repeated_requests {
            let each = |r: &Report| r.repeated_requests.get(ep).copied().unwrap_or(0);
            assert_eq!(*n, each(&w0) + each(&w1), "{ep}");
        }
        assert!(all.repeated_requests.is_empty());
        assert!(!super::super::render_json(&all).contains("repeated_requests"));
        assert_eq!(m.decode, all.decode);
        // Per endpoint: the same figures as one run, histograms included.
        assert_eq!(m.endpoints.len(), 3);
        for e in &all.endpoints {
            let got = m
                .endpoints
                .iter()
                .find(|x| x.endpoint == e.endpoint)
                .unwrap();
            assert_eq!(got.test.requests, e.test.requests);
            assert_eq!(got.test.errors_by_class, e.test.errors_by_class);
            assert_eq!(got.test.latency_ms, e.test.latency_ms, "{}", e.endpoint);
            assert_eq!(got.production, e.production);
            assert_eq!(got.p99_ratio, e.p99_ratio);
        }
        let order = |r: &Report| {
            r.endpoints
                .iter()
                .map(|e| e.endpoint.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(order(&m), order(&all));
        // Latency over time: bucket by bucket, the same as one run.
        let (mt, at) = (
            m.latency_over_time.clone().unwrap(),
            all.latency_over_time.clone().unwrap(),
        );
        assert_eq!(mt.bucket_s, at.bucket_s);
        let strip = |v: &[endpoints::TimePoint]| {
            v.iter()
                .map(|p| (p.t_s, p.count, p.p50, p.p99))
                .collect::<Vec<_>>()
        };
        assert_eq!(strip(&mt.test), strip(&at.test));
        assert_eq!(strip(&mt.production), strip(&at.production));
        // Requests over time: the same totals.
        let total = |t: &super::super::Throughput| t.test.iter().sum::<f64>() * t.bucket_s;
        assert!((total(&m.throughput) - n as f64).abs() < 1e-6);
        // The merged report merges again (a merge of merges), and reads back.
        let again = merge(&[through_json("m.json", &m), through_json("w0.json", &w0)]).unwrap();
        assert_eq!(again.merged_from, Some(3));
        assert_eq!(again.test.requests, n + n / 2);
        assert!(super::super::render_table(&m).contains("3 repeats (redelivered)"));
        assert!(super::super::render_table(&m).contains("merged from 2 reports"));
    }

    #[test]
    fn bad_files_are_one_line_naming_the_file() {
        let w0 = run((0..30).map(|i| sample(i, lat(i, 2))), 0);
        let err = |r: Result<Report, MergeError>| {
            let e = r.unwrap_err().to_string();
            assert!(!e.contains('\n'), "{e}");
            e
        };
        let e = err(load("x.json", "not json"));
        assert!(e.starts_with("x.json: not a tcpclone JSON report"), "{e}");
        let e = err(load("y.json", r#"{"schema":"other","version":1}"#));
        assert!(e.starts_with("y.json: "), "{e}");
        // A version 1 report: no histograms.
        let mut v1 = w0.clone();
        v1.version = 1;
        v1.histograms = None;
        let e = err(load("old.json", &super::super::render_json(&v1)));
        assert!(
            e.starts_with("old.json: schema version 1 carries no latency histograms"),
            "{e}"
        );
        // A comparison is not a run.
        let c = super::super::compare::compare(&w0, &w0);
        let e = err(load("c.json", &super::super::render_json(&c)));
        assert!(e.contains("report compare"), "{e}");
        // Different captures, different modes.
        let mut other = w0.clone();
        other.source = Some("offline other.pcap".into());
        let e = err(merge(&[
            ("a.json".into(), w0.clone()),
            ("b.json".into(), other),
        ]));
        assert!(
            e.starts_with("b.json: replayed `offline other.pcap`"),
            "{e}"
        );
        let mut raw = w0.clone();
        raw.mode = "raw".into();
        let e = err(merge(&[
            ("a.json".into(), w0.clone()),
            ("r.json".into(), raw),
        ]));
        assert!(e.starts_with("r.json: a `raw` run's report"), "{e}");
        // A damaged histogram.
        let mut bad = w0.clone();
        bad.histograms.as_mut().unwrap().test_latency = "AAAA".into();
        let e = err(merge(&[
            ("a.json".into(), w0.clone()),
            ("d.json".into(), bad),
        ]));
        assert!(
            e.starts_with("d.json: histogram `histograms.test_latency`"),
            "{e}"
        );
        assert!(matches!(merge(&[]), Err(MergeError::Empty)));
    }
}
