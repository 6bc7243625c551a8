//! The collector of both modes: per-request samples in ([`RequestSample`], measured by the
//! caller), a finished [`Report`] out. Pure: no clock, no socket, no file.

use super::{
    curve, endpoints, exchange, hist, micros, percentiles, Curves, DiffExample, DiffReport,
    Histograms, Report, SessionCounts, SideReport, Throughput, TlsCounts, DIFF_CAP,
    MAX_DIFF_EXAMPLES, MAX_POINTS, SCHEMA, SCHEMA_VERSION,
};
use hdrhistogram::Histogram;
use regex::bytes::Regex;
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::time::Duration;

/// Merges 100 ms slots `k` at a time into requests per second.
fn rates(slots: &[u64], k: usize, bucket_s: f64) -> Vec<f64> {
    slots
        .chunks(k)
        .map(|c| c.iter().sum::<u64>() as f64 / bucket_s)
        .collect()
}

/// How one replayed request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The target answered (at least one byte).
    Answered,
    /// The connection was reset before or while answering.
    Reset,
    /// The connection was refused (or could not be made).
    Refused,
    /// No answer within the response timeout.
    TimedOut,
    /// The target closed the connection without answering.
    Closed,
    /// Sent, and no answer was expected (production did not answer either).
    Unanswered,
}

/// Production's timing of the same request, from capture timestamps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProductionSample {
    /// First response byte − last request byte.
    pub latency: Duration,
    /// Last response byte − last request byte.
    pub ttlb: Duration,
    /// Response bytes.
    pub bytes_in: u64,
    /// When the request was made, since the start of the capture.
    pub at: Duration,
}

/// One replayed request, as measured.
#[derive(Debug, Clone, Default)]
pub struct RequestSample {
    /// Session number (stable within a run).
    pub session: u64,
    /// Request number within the session (0-based).
    pub index: u32,
    /// When its last byte was sent, since the start of the run.
    pub sent_at: Duration,
    /// First response byte − last request byte (test server).
    pub latency: Option<Duration>,
    /// Last response byte − last request byte (test server).
    pub ttlb: Option<Duration>,
    /// Request bytes sent.
    pub bytes_out: u64,
    /// Response bytes received.
    pub bytes_in: u64,
    /// How it ended.
    pub outcome: Option<Outcome>,
    /// How late it was sent against the schedule.
    pub slip: Option<Duration>,
    /// Production's timing, when its response is in the capture.
    pub production: Option<ProductionSample>,
    /// The first bytes of the request (names it in diff examples).
    pub request_preview: Vec<u8>,
    /// Responses to compare (`--diff`): production's and the test server's (capped), with lengths.
    pub diff: Option<DiffInput>,
    /// The request and its responses decoded (endpoint, classes, fields), when the session's
    /// protocol has a decoder.
    pub exchange: Option<exchange::Exchange>,
    /// A request replayed to `--baseline-target`: teaches noise, counts nowhere else.
    pub baseline: bool,
}

/// Both responses of one request, for `--diff`.
#[derive(Debug, Clone, Default)]
pub struct DiffInput {
    /// Production's response (first [`DIFF_CAP`] bytes).
    pub production: Vec<u8>,
    /// Its full length.
    pub production_len: u64,
    /// The test server's response (first [`DIFF_CAP`] bytes).
    pub test: Vec<u8>,
    /// Its full length.
    pub test_len: u64,
}

/// Escapes bytes for a report line: printable ASCII as is, the rest as `\r`, `\n`, `\xNN`.
pub fn escape(bytes: &[u8], max: usize) -> String {
    let mut s = String::new();
    for &b in bytes.iter().take(max) {
        match b {
            b'\r' => s.push_str("\\r"),
            b'\n' => s.push_str("\\n"),
            b'\\' => s.push_str("\\\\"),
            0x20..=0x7e => s.push(b as char),
            _ => {
                let _ = write!(s, "\\x{b:02x}");
            }
        }
    }
    if bytes.len() > max {
        s.push('…');
    }
    s
}

#[derive(Default)]
pub(super) struct SideAcc {
    pub(super) requests: u64,
    pub(super) outcomes: [u64; 6],
    pub(super) bytes_sent: u64,
    pub(super) bytes_received: u64,
    pub(super) first: Option<Duration>,
    pub(super) last: Option<Duration>,
    pub(super) buckets: Vec<u64>,
}

impl SideAcc {
    fn at(&mut self, t: Duration) {
        self.first = Some(self.first.map_or(t, |f| f.min(t)));
        self.last = Some(self.last.map_or(t, |l| l.max(t)));
        // 100 ms slots (up to 100 hours); merged into at most MAX_POINTS buckets at the end.
        let b = (t.as_millis() / 100) as usize;
        if b < 3_600_000 {
            if self.buckets.len() <= b {
                self.buckets.resize(b + 1, 0);
            }
            self.buckets[b] += 1;
        }
    }

    fn finish(
        &self,
        lat: &Histogram<u64>,
        ttlb: &Histogram<u64>,
        span_floor: Duration,
    ) -> SideReport {
        let span = match (self.first, self.last) {
            (Some(f), Some(l)) => (l - f).max(span_floor),
            _ => span_floor,
        };
        let o = self.outcomes;
        SideReport {
            requests: self.requests,
            answered: o[0],
            reset: o[1],
            refused: o[2],
            timed_out: o[3],
            closed: o[4],
            unanswered: o[5],
            errors: o[1] + o[2] + o[3] + o[4],
            rps: if span.is_zero() {
                0.0
            } else {
                self.requests as f64 / span.as_secs_f64()
            },
            bytes_sent: self.bytes_sent,
            bytes_received: self.bytes_received,
            latency_ms: percentiles(lat),
            ttlb_ms: percentiles(ttlb),
        }
    }
}

/// Accumulates samples and builds the report.
pub struct Collector {
    pub(super) mode: String,
    pub(super) test: SideAcc,
    pub(super) prod: SideAcc,
    pub(super) test_lat: Histogram<u64>,
    pub(super) test_ttlb: Histogram<u64>,
    pub(super) prod_lat: Histogram<u64>,
    pub(super) prod_ttlb: Histogram<u64>,
    pub(super) slip: Histogram<u64>,
    /// Session counters, filled in by the caller.
    pub sessions: SessionCounts,
    /// TLS counters, filled in by stream mode when TLS flags are given.
    pub tls: Option<TlsCounts>,
    /// What is replayed ([`Report::source`]), filled in by the caller.
    pub source: Option<String>,
    pub(super) diff: Option<(Vec<Regex>, DiffReport)>,
    pub(super) endpoints: endpoints::EndpointCollector,
    /// Fleet replay: requests of sessions replayed again, by endpoint ([`Report::repeated_requests`]).
    pub(super) repeated: std::collections::BTreeMap<String, u64>,
}

/// The key of [`Report::repeated_requests`] for requests no decoder named.
pub const OPAQUE_ENDPOINT: &str = "(opaque)";

/// A `--diff-ignore` expression that does not compile.
#[derive(Debug, thiserror::Error)]
#[error("--diff-ignore `{expr}`: {source}")]
pub struct DiffIgnoreError {
    /// The expression.
    pub expr: String,
    /// Why it does not compile.
    pub source: regex::Error,
}

impl Collector {
    /// A collector for `mode` (`stream` or `raw`); `diff` holds the `--diff-ignore` expressions
    /// when responses are compared.
    pub fn new(mode: &str, diff: Option<&[String]>) -> Result<Self, DiffIgnoreError> {
        let diff = match diff {
            Some(exprs) => {
                let res = exprs
                    .iter()
                    .map(|e| {
                        Regex::new(e).map_err(|source| DiffIgnoreError {
                            expr: e.clone(),
                            source,
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Some((
                    res,
                    DiffReport {
                        ignore: exprs.to_vec(),
                        ..Default::default()
                    },
                ))
            }
            None => None,
        };
        Ok(Collector {
            mode: mode.to_string(),
            test: SideAcc::default(),
            prod: SideAcc::default(),
            test_lat: hist::new(),
            test_ttlb: hist::new(),
            prod_lat: hist::new(),
            prod_ttlb: hist::new(),
            slip: hist::new(),
            sessions: SessionCounts::default(),
            tls: None,
            source: None,
            diff,
            endpoints: endpoints::EndpointCollector::new(None),
            repeated: std::collections::BTreeMap::new(),
        })
    }

    /// Compares decoded responses field by field (protocol-aware `--diff`) with `fields`.
    pub fn with_fields(mut self, fields: exchange::FieldConfig) -> Self {
        if let Some((_, d)) = self.diff.as_mut() {
            d.headers = fields.headers.clone();
            d.ignore_paths = fields.ignore_paths.clone();
        }
        self.endpoints = endpoints::EndpointCollector::new(Some(fields));
        self
    }

    /// Counts `s` (recorded too, with [`Collector::record`]) as a repeat: a request of a fleet
    /// session a worker had replayed before, sent to the target again.
    pub fn count_repeat(&mut self, s: &RequestSample) {
        if s.baseline {
            return;
        }
        let ep = s
            .exchange
            .as_ref()
            .and_then(|e| e.endpoint.clone())
            .unwrap_or_else(|| OPAQUE_ENDPOINT.to_string());
        *self.repeated.entry(ep).or_default() += 1;
    }

    /// Adds one request.
    pub fn record(&mut self, s: RequestSample) {
        if s.baseline {
            if let Some(ex) = &s.exchange {
                self.endpoints.learn(ex);
            }
            return;
        }
        self.test.requests += 1;
        let outcome = s.outcome.unwrap_or(Outcome::Unanswered);
        let by_fields = self.endpoints.record(&s, outcome);
        let oi = match outcome {
            Outcome::Answered => 0,
            Outcome::Reset => 1,
            Outcome::Refused => 2,
            Outcome::TimedOut => 3,
            Outcome::Closed => 4,
            Outcome::Unanswered => 5,
        };
        self.test.outcomes[oi] += 1;
        self.test.bytes_sent += s.bytes_out;
        self.test.bytes_received += s.bytes_in;
        self.test.at(s.sent_at);
        if let Some(l) = s.latency {
            let _ = self.test_lat.record(micros(l));
        }
        if let Some(t) = s.ttlb {
            let _ = self.test_ttlb.record(micros(t));
        }
        if let Some(sl) = s.slip {
            let _ = self.slip.record(micros(sl));
        }
        if let Some(p) = s.production {
            self.prod.requests += 1;
            self.prod.outcomes[0] += 1;
            self.prod.bytes_sent += s.bytes_out;
            self.prod.bytes_received += p.bytes_in;
            self.prod.at(p.at);
            let _ = self.prod_lat.record(micros(p.latency));
            let _ = self.prod_ttlb.record(micros(p.ttlb));
        }
        let d = s
            .diff
            .as_ref()
            .filter(|_| !by_fields && s.production.is_some());
        if let (Some((res, rep)), Some(d)) = (self.diff.as_mut(), d) {
            rep.compared += 1;
            let mask = |b: &[u8]| -> Vec<u8> {
                let mut v = b.to_vec();
                for re in res.iter() {
                    v = re.replace_all(&v, &b"\x00masked\x00"[..]).into_owned();
                }
                v
            };
            let (p, t) = (mask(&d.production), mask(&d.test));
            // Equal masked bytes imply equal lengths, except past the cap: compare lengths there.
            let capped = d.production_len as usize > DIFF_CAP || d.test_len as usize > DIFF_CAP;
            let len_ok = !capped || d.production_len == d.test_len;
            if p == t && len_ok {
                rep.matched += 1;
            } else if rep.examples.len() < MAX_DIFF_EXAMPLES {
                let at = p
                    .iter()
                    .zip(t.iter())
                    .position(|(a, b)| a != b)
                    .unwrap_or(p.len().min(t.len()));
                let from = at.saturating_sub(16);
                rep.examples.push(DiffExample {
                    session: s.session,
                    index: s.index,
                    request: escape(&s.request_preview, 96),
                    production_len: d.production_len,
                    test_len: d.test_len,
                    first_difference: at as u64,
                    production_excerpt: escape(p.get(from..).unwrap_or(&[]), 64),
                    test_excerpt: escape(t.get(from..).unwrap_or(&[]), 64),
                });
            }
        }
    }

    /// Raw mode: adds `n` requests that went out but whose answer intercept never reported
    /// (counted as unanswered; no timing), and the byte totals the engine counted, which its
    /// per-request samples do not carry.
    pub fn add_raw_totals(&mut self, n: u64, bytes_sent: u64, bytes_received: u64) {
        self.test.requests += n;
        self.test.outcomes[5] += n;
        self.test.bytes_sent += bytes_sent;
        self.test.bytes_received += bytes_received;
    }

    /// Builds the report; `duration` is the run's wall time.
    pub fn finish(&self, duration: Duration) -> Report {
        let n = self.test.buckets.len().max(self.prod.buckets.len());
        let k = n.div_ceil(MAX_POINTS).max(1);
        let bucket_s = 0.1 * k as f64;
        let floor = Duration::from_millis(1);
        let test = self.test.finish(&self.test_lat, &self.test_ttlb, floor);
        let production = (self.prod.requests > 0)
            .then(|| self.prod.finish(&self.prod_lat, &self.prod_ttlb, floor));
        let eps = self.endpoints.finish();
        let diff = self.diff.as_ref().map(|(_, d)| {
            let mut d = d.clone();
            // Compared field by field: equal unless a field other than noise differs.
            d.compared += eps.compared;
            d.matched += eps.compared - eps.differing;
            d.fields = eps.examples.clone();
            d.noise = eps.noise.clone();
            d.baseline_compared = eps.baseline_compared;
            d.match_rate = if d.compared == 0 {
                0.0
            } else {
                d.matched as f64 / d.compared as f64
            };
            d
        });
        Report {
            schema: SCHEMA.to_string(),
            version: SCHEMA_VERSION,
            mode: self.mode.clone(),
            source: self.source.clone(),
            merged_from: None,
            duration_s: duration.as_secs_f64(),
            test,
            production,
            sessions: self.sessions,
            slip_ms: percentiles(&self.slip),
            diff,
            latency_curve: Curves {
                test: curve(&self.test_lat),
                production: curve(&self.prod_lat),
            },
            throughput: Throughput {
                bucket_s,
                test: rates(&self.test.buckets, k, bucket_s),
                production: rates(&self.prod.buckets, k, bucket_s),
            },
            tls: self.tls.clone(),
            repeated_requests: self.repeated.clone(),
            endpoints: eps.endpoints,
            decode: eps.decode,
            latency_over_time: eps.timeline,
            verdicts: Vec::new(),
            histograms: Some(Histograms {
                test_latency: hist::encode(&self.test_lat),
                test_ttlb: hist::encode(&self.test_ttlb),
                production_latency: hist::encode(&self.prod_lat),
                production_ttlb: hist::encode(&self.prod_ttlb),
                slip: hist::encode(&self.slip),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{render_json, render_table};
    use super::*;

    fn sample(i: u32, lat_us: u64, prod_us: u64) -> RequestSample {
        RequestSample {
            session: 1,
            index: i,
            sent_at: Duration::from_millis(u64::from(i) * 10),
            latency: Some(Duration::from_micros(lat_us)),
            ttlb: Some(Duration::from_micros(lat_us + 10)),
            bytes_out: 10,
            bytes_in: 20,
            outcome: Some(Outcome::Answered),
            production: Some(ProductionSample {
                latency: Duration::from_micros(prod_us),
                ttlb: Duration::from_micros(prod_us),
                bytes_in: 20,
                at: Duration::from_millis(u64::from(i) * 20),
            }),
            request_preview: format!("GET /k{i}\r\n").into_bytes(),
            ..Default::default()
        }
    }

    #[test]
    fn repeats_count_by_endpoint_and_never_the_baseline() {
        let mut c = Collector::new("stream", None).unwrap();
        let named = |ep: &str| RequestSample {
            exchange: Some(exchange::Exchange {
                protocol: "redis",
                endpoint: Some(ep.into()),
                ..Default::default()
            }),
            ..sample(0, 100, 100)
        };
        for s in [
            named("SET"),
            named("SET"),
            named("GET"),
            sample(1, 100, 100),
        ] {
            c.count_repeat(&s);
            c.record(s);
        }
        let baseline = RequestSample {
            baseline: true,
            ..named("GET")
        };
        c.count_repeat(&baseline);
        c.record(baseline);
        c.record(named("GET"));
        let r = c.finish(Duration::from_secs(1));
        let want: std::collections::BTreeMap<String, u64> =
            [("SET", 2), ("GET", 1), (OPAQUE_ENDPOINT, 1)]
                .into_iter()
                .map(|(k, n)| (k.to_string(), n))
                .collect();
        assert_eq!(r.repeated_requests, want);
        assert_eq!(r.test.requests, 5);
        assert!(render_json(&r).contains("\"repeated_requests\""));
    }

    #[test]
    fn percentiles_and_rates() {
        let mut c = Collector::new("stream", None).unwrap();
        for i in 0..200 {
            c.record(sample(i, 1000 + u64::from(i), 500));
        }
        let r = c.finish(Duration::from_secs(2));
        assert_eq!(r.test.requests, 200);
        assert_eq!(r.test.answered, 200);
        assert!(
            (r.test.latency_ms.p50 - 1.1).abs() < 0.01,
            "{}",
            r.test.latency_ms.p50
        );
        assert!((r.test.latency_ms.max - 1.199).abs() < 0.01);
        let p = r.production.as_ref().unwrap();
        assert!((p.latency_ms.p50 - 0.5).abs() < 0.01);
        // 200 requests over 1.99 s (test) and 3.98 s (production).
        assert!((r.test.rps - 200.0 / 1.99).abs() < 0.5, "{}", r.test.rps);
        assert!((p.rps - 200.0 / 3.98).abs() < 0.5);
        let total: f64 = r.throughput.test.iter().sum::<f64>() * r.throughput.bucket_s;
        assert!((total - 200.0).abs() < 1e-6, "{total}");
        assert!((r.throughput.bucket_s - 0.1).abs() < 1e-9);
        // 200 requests 10 ms apart: 10 per 100 ms slot, 100 per second.
        assert!(
            r.throughput.test.iter().all(|&v| (v - 100.0).abs() < 1e-6),
            "{:?}",
            r.throughput.test
        );
        assert_eq!(r.latency_curve.test.len(), 81);
        let table = render_table(&r);
        assert!(table.contains("latency p99.9 (ms)"));
        let back: Report = serde_json::from_str(&render_json(&r)).unwrap();
        assert_eq!(back.test, r.test);
        assert_eq!(back.throughput, r.throughput);
        assert_eq!(back.version, SCHEMA_VERSION);
    }

    #[test]
    fn diff_with_masking_and_examples() {
        let mut c = Collector::new("stream", Some(&["Date: [^\\r]*".to_string()])).unwrap();
        for i in 0..10u32 {
            let mut s = sample(i, 100, 100);
            let prod = format!("HTTP/1.1 200 OK\r\nDate: Mon {i}\r\n\r\nvalue{i}").into_bytes();
            let test = if i == 3 {
                b"HTTP/1.1 200 OK\r\nDate: Tue\r\n\r\nother".to_vec()
            } else {
                format!("HTTP/1.1 200 OK\r\nDate: Tue {i}{i}\r\n\r\nvalue{i}").into_bytes()
            };
            s.diff = Some(DiffInput {
                production_len: prod.len() as u64,
                production: prod,
                test_len: test.len() as u64,
                test,
            });
            c.record(s);
        }
        let r = c.finish(Duration::from_secs(1));
        let d = r.diff.unwrap();
        assert_eq!((d.compared, d.matched), (10, 9));
        assert_eq!(d.examples.len(), 1);
        assert_eq!(d.examples[0].index, 3);
        assert!(d.examples[0].request.contains("GET /k3"));
        assert!(Collector::new("stream", Some(&["(".to_string()])).is_err());
    }

    #[test]
    fn escapes() {
        assert_eq!(escape(b"a\r\n\x01\\", 10), "a\\r\\n\\x01\\\\");
        assert_eq!(escape(b"abcdef", 3), "abc…");
    }
}
