//! The benchmark report of both modes: per-request samples in, an end-of-run [`Report`] out
//! (latency and time-to-last-byte histograms for the test server and production, outcomes, rates,
//! throughput over time, response comparison), rendered as a table, versioned JSON or HTML.
//!
//! Pure but for [`write_files`]: samples carry durations measured by the caller; nothing here
//! reads a clock or a socket, and `render_*` return strings.

pub mod compare;
pub mod endpoints;
pub mod exchange;
pub mod html;
pub mod metrics;
pub mod verdict;

pub use endpoints::{
    DecodeCounts, EndpointDiff, EndpointReport, EndpointSide, FieldDiffExample, Timeline,
};
pub use verdict::Verdict;

use hdrhistogram::Histogram;
use regex::bytes::Regex;
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::time::Duration;

/// The JSON schema name written in every report.
pub const SCHEMA: &str = "tcpclone.report";
/// The JSON schema version; bumped on any incompatible change of field names or meaning.
pub const SCHEMA_VERSION: u32 = 1;
/// How many differing responses the report keeps as examples.
pub const MAX_DIFF_EXAMPLES: usize = 10;
/// Most throughput buckets in a report.
pub const MAX_POINTS: usize = 300;

/// Merges 100 ms slots `k` at a time into requests per second.
fn rates(slots: &[u64], k: usize, bucket_s: f64) -> Vec<f64> {
    slots
        .chunks(k)
        .map(|c| c.iter().sum::<u64>() as f64 / bucket_s)
        .collect()
}

/// Bytes of a response kept for comparison (longer responses: this prefix plus the length).
pub const DIFF_CAP: usize = 64 * 1024;

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

/// Latency figures in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    /// Samples.
    pub count: u64,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Maximum.
    pub max: f64,
}

/// One side's figures (the test server, or production).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SideReport {
    /// Requests.
    pub requests: u64,
    /// Answered.
    pub answered: u64,
    /// Reset.
    pub reset: u64,
    /// Refused.
    pub refused: u64,
    /// Timed out.
    pub timed_out: u64,
    /// Closed without an answer.
    pub closed: u64,
    /// Sent with no answer expected.
    pub unanswered: u64,
    /// reset + refused + timed_out + closed.
    pub errors: u64,
    /// Requests per second over the span of the requests.
    pub rps: f64,
    /// Request bytes.
    pub bytes_sent: u64,
    /// Response bytes.
    pub bytes_received: u64,
    /// First response byte − last request byte.
    pub latency_ms: Percentiles,
    /// Last response byte − last request byte.
    pub ttlb_ms: Percentiles,
}

/// Session counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionCounts {
    /// Sessions found in the capture.
    pub seen: u64,
    /// Sessions replayed (copies included).
    pub replayed: u64,
    /// Skipped by `-r` sampling.
    pub sampled_out: u64,
    /// Sessions whose SYN was not in the capture.
    pub without_syn: u64,
    /// Sessions with missing bytes (replayed up to the hole).
    pub partial: u64,
    /// Dropped because the queue bound was reached (live).
    pub dropped: u64,
    /// Connections that could not be made.
    pub connect_failed: u64,
    /// Connections to `--baseline-target` that could not be made (stream mode; not in
    /// `connect_failed`, which counts the test target's).
    #[serde(default)]
    pub baseline_connect_failed: u64,
}

/// TLS counters of stream mode (`--tls-keylog`, `--target-tls`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsCounts {
    /// Captured TLS sessions decrypted (their plaintext replayed).
    pub decrypted: u64,
    /// Sessions that were not TLS (replayed as they were).
    pub plaintext: u64,
    /// TLS sessions whose secrets are not in the key log (not replayed).
    pub without_keys: u64,
    /// TLS sessions that ended before their handshake did.
    pub incomplete: u64,
    /// Records that failed authentication (a wrong key, damaged bytes); skipped.
    pub auth_failures: u64,
    /// 0-RTT records the server had rejected; skipped as it skipped them.
    pub early_rejected: u64,
    /// Sessions whose bytes end inside a record (capture loss, a cut capture).
    pub cut_records: u64,
    /// Sessions that failed for another reason (malformed handshake, bad secret).
    pub failed: u64,
    /// Resumed sessions among the decrypted ones.
    pub resumed: u64,
    /// Unsupported cipher suites (or versions) by name, with their session counts.
    pub unsupported: std::collections::BTreeMap<String, u64>,
    /// Decrypted sessions by version and suite.
    pub suites: std::collections::BTreeMap<String, u64>,
    /// Decrypted sessions by negotiated ALPN protocol.
    pub alpn: std::collections::BTreeMap<String, u64>,
    /// Decrypted sessions by the client's SNI (the first [`MAX_SNI`] names, then `(other)`).
    #[serde(default)]
    pub sni: std::collections::BTreeMap<String, u64>,
    /// TLS handshakes with the target that failed, by rustls's reason.
    pub target_handshake_failed: std::collections::BTreeMap<String, u64>,
}

/// Distinct SNI names kept in [`TlsCounts::sni`].
pub const MAX_SNI: usize = 50;

/// One differing response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiffExample {
    /// Session number.
    pub session: u64,
    /// Request number within the session.
    pub index: u32,
    /// The request's first bytes (escaped).
    pub request: String,
    /// Production's response length.
    pub production_len: u64,
    /// The test server's response length.
    pub test_len: u64,
    /// First differing byte offset (after masking).
    pub first_difference: u64,
    /// Production's response around the difference (escaped).
    pub production_excerpt: String,
    /// The test server's response around the difference (escaped).
    pub test_excerpt: String,
}

/// `--diff` results.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DiffReport {
    /// Responses compared.
    pub compared: u64,
    /// Equal after masking.
    pub matched: u64,
    /// matched / compared.
    pub match_rate: f64,
    /// The masking expressions.
    pub ignore: Vec<String>,
    /// The first differing responses.
    pub examples: Vec<DiffExample>,
    /// Protocol-aware comparison: the HTTP headers compared.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<String>,
    /// Protocol-aware comparison: the field paths never compared (`--diff-ignore-path`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ignore_paths: Vec<String>,
    /// Protocol-aware comparison: the first differing responses, by field.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<FieldDiffExample>,
    /// Field paths learned as noise per endpoint (`--baseline-target`).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub noise: std::collections::BTreeMap<String, Vec<String>>,
    /// Baseline responses compared with production's to learn the noise.
    #[serde(default)]
    pub baseline_compared: u64,
}

/// A point of a latency percentile curve.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CurvePoint {
    /// Percentile (0–100).
    pub percentile: f64,
    /// Latency (ms).
    pub ms: f64,
}

/// Completed requests per time bucket.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Throughput {
    /// Bucket width in seconds (a multiple of 0.1 s, chosen for at most 300 buckets).
    pub bucket_s: f64,
    /// Test server: requests per second in each bucket since the start of the run.
    pub test: Vec<f64>,
    /// Production: requests per second in each bucket since the start of the capture.
    pub production: Vec<f64>,
}

/// The end-of-run report (JSON schema `tcpclone.report`, version [`SCHEMA_VERSION`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Always [`SCHEMA`].
    pub schema: String,
    /// [`SCHEMA_VERSION`].
    pub version: u32,
    /// `stream` or `raw`.
    pub mode: String,
    /// Wall time of the run (s).
    pub duration_s: f64,
    /// The test server.
    pub test: SideReport,
    /// Production, when its responses were in the capture.
    pub production: Option<SideReport>,
    /// Sessions.
    pub sessions: SessionCounts,
    /// Lateness against the schedule (ms).
    pub slip_ms: Percentiles,
    /// Response comparison, with `--diff`.
    pub diff: Option<DiffReport>,
    /// Latency percentile curves.
    pub latency_curve: Curves,
    /// Throughput over time.
    pub throughput: Throughput,
    /// TLS counters, when stream mode decrypted or replayed over TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsCounts>,
    /// Per endpoint or command (decoded sessions), largest regressions first.
    #[serde(default)]
    pub endpoints: Vec<EndpointReport>,
    /// How many requests the decoders read, and how many were opaque.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decode: Option<DecodeCounts>,
    /// Latency p50/p99 per second (or wider buckets on long runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_over_time: Option<Timeline>,
    /// `--fail-if` rules evaluated.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verdicts: Vec<Verdict>,
}

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

/// Latency percentile curves of both sides.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Curves {
    /// Test server.
    pub test: Vec<CurvePoint>,
    /// Production (empty when unknown).
    pub production: Vec<CurvePoint>,
}

fn hist() -> Histogram<u64> {
    // Microseconds, 1 µs .. 1 h, 3 significant digits.
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("static histogram bounds")
}

fn micros(d: Duration) -> u64 {
    (d.as_micros() as u64).clamp(1, 3_600_000_000)
}

fn percentiles(h: &Histogram<u64>) -> Percentiles {
    if h.is_empty() {
        return Percentiles::default();
    }
    let ms = |v: u64| v as f64 / 1000.0;
    Percentiles {
        count: h.len(),
        mean: h.mean() / 1000.0,
        p50: ms(h.value_at_quantile(0.5)),
        p90: ms(h.value_at_quantile(0.9)),
        p99: ms(h.value_at_quantile(0.99)),
        p999: ms(h.value_at_quantile(0.999)),
        max: ms(h.max()),
    }
}

fn curve(h: &Histogram<u64>) -> Vec<CurvePoint> {
    if h.is_empty() {
        return Vec::new();
    }
    // Evenly spaced in "nines": 0 %, 90 %, 99 %, 99.9 %, 99.99 %.
    (0..=80)
        .map(|i| {
            let nines = f64::from(i) * 0.05;
            let q = 1.0 - 10f64.powf(-nines);
            CurvePoint {
                percentile: q * 100.0,
                ms: h.value_at_quantile(q) as f64 / 1000.0,
            }
        })
        .collect()
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
struct SideAcc {
    requests: u64,
    outcomes: [u64; 6],
    bytes_sent: u64,
    bytes_received: u64,
    first: Option<Duration>,
    last: Option<Duration>,
    buckets: Vec<u64>,
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
    mode: String,
    test: SideAcc,
    prod: SideAcc,
    test_lat: Histogram<u64>,
    test_ttlb: Histogram<u64>,
    prod_lat: Histogram<u64>,
    prod_ttlb: Histogram<u64>,
    slip: Histogram<u64>,
    /// Session counters, filled in by the caller.
    pub sessions: SessionCounts,
    /// TLS counters, filled in by stream mode when TLS flags are given.
    pub tls: Option<TlsCounts>,
    diff: Option<(Vec<Regex>, DiffReport)>,
    endpoints: endpoints::EndpointCollector,
}

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
            test_lat: hist(),
            test_ttlb: hist(),
            prod_lat: hist(),
            prod_ttlb: hist(),
            slip: hist(),
            sessions: SessionCounts::default(),
            tls: None,
            diff,
            endpoints: endpoints::EndpointCollector::new(None),
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
            endpoints: eps.endpoints,
            decode: eps.decode,
            latency_over_time: eps.timeline,
            verdicts: Vec::new(),
        }
    }
}

/// Evaluates `rules` into `report.verdicts`; true when one failed.
pub fn apply_verdicts(report: &mut Report, rules: &[verdict::Rule]) -> bool {
    report.verdicts = verdict::evaluate(rules, report);
    report.verdicts.iter().any(|v| v.failed)
}

/// Serializes a report as pretty JSON.
pub fn render_json(r: &Report) -> String {
    serde_json::to_string_pretty(r).unwrap_or_default()
}

/// Writes `report` to each path: `.json` as JSON, `.html`/`.htm` as the HTML page; any other
/// extension, or a failed write, is an error naming the path.
pub fn write_files(report: &Report, paths: &[std::path::PathBuf]) -> anyhow::Result<()> {
    for path in paths {
        let text = match path.extension().and_then(|e| e.to_str()) {
            Some("json") => render_json(report),
            Some("html" | "htm") => html::render_html(report).map_err(|e| {
                anyhow::anyhow!(
                    "--report {}: drawing the charts failed: {e}",
                    path.display()
                )
            })?,
            _ => anyhow::bail!(
                "--report {}: the file name must end in .json or .html",
                path.display()
            ),
        };
        write_output(path, text.as_bytes())
            .map_err(|e| anyhow::anyhow!("--report {}: {e}", path.display()))?;
    }
    Ok(())
}

/// Output files (`--report`, `--junit`) opened before the switch to `--user`, by path. A run
/// started as root creates them while it may still enter every directory, hands them to the
/// user, and writes them at the end through these descriptors: a directory only root can
/// enter still receives its reports. Process-wide, as the files are the process's.
static OPENED_OUTPUTS: std::sync::Mutex<Vec<(std::path::PathBuf, std::fs::File)>> =
    std::sync::Mutex::new(Vec::new());

/// Keeps `file`, opened for `path` before a privilege drop, for [`write_output`].
pub fn keep_open(path: &std::path::Path, file: std::fs::File) {
    let mut o = OPENED_OUTPUTS.lock().unwrap_or_else(|p| p.into_inner());
    o.push((path.to_path_buf(), file));
}

/// Writes `bytes` as the whole of `path`: through the descriptor [`keep_open`] holds for it
/// when there is one (truncated first), else by path.
pub fn write_output(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::{Seek, Write};
    let kept = {
        let o = OPENED_OUTPUTS.lock().unwrap_or_else(|p| p.into_inner());
        o.iter()
            .find(|(p, _)| p == path)
            .map(|(_, f)| f.try_clone())
    };
    match kept {
        Some(f) => {
            let mut f = f?;
            f.set_len(0)?;
            f.rewind()?;
            f.write_all(bytes)
        }
        None => std::fs::write(path, bytes),
    }
}

/// True when `path` names a report format (`.json`, `.html`, `.htm`).
pub fn known_extension(path: &std::path::Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("json" | "html" | "htm")
    )
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
        "sessions: {} in capture, {} replayed, {} partial, {} without SYN, {} sampled out, {} dropped, {} connect failed",
        ss.seen, ss.replayed, ss.partial, ss.without_syn, ss.sampled_out, ss.dropped, ss.connect_failed
    );
    if ss.baseline_connect_failed > 0 {
        let _ = writeln!(
            s,
            "baseline target: {} connections could not be made",
            ss.baseline_connect_failed
        );
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
    endpoints::render_text(&mut s, r);
    let _ = writeln!(s, "duration: {:.3} s", r.duration_s);
    s
}

#[cfg(test)]
mod tests {
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
