//! The report per endpoint or command: requests, errors by class and latency percentiles of the
//! target and production side by side, largest regressions first; latency over time; the
//! protocol-aware comparison with the noise learned from `--baseline-target`.
//!
//! Pure: fed [`RequestSample`]s carrying an [`Exchange`] (decoded in the session task), it
//! builds report sections at the end. Memory is bounded: at most [`MAX_ENDPOINTS`] endpoints
//! (then `(other)`), [`MAX_TIMELINE`] time buckets, [`MAX_PENDING`] differing responses kept
//! until the noise is known.

use super::exchange::{diff_fields, Exchange, FieldConfig, FieldDiff};
use super::{Outcome, Percentiles, RequestSample};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Duration;

/// Most endpoints reported; later ones are counted under [`OTHER`].
pub const MAX_ENDPOINTS: usize = 100;
/// The endpoint that collects the ones past [`MAX_ENDPOINTS`].
pub const OTHER: &str = "(other)";
/// Most points of the latency-over-time series (buckets widen to stay under it).
pub const MAX_TIMELINE: usize = 120;
/// Most differing responses kept until the end of the run (the rest count as real differences).
pub const MAX_PENDING: usize = 20_000;
/// Differing responses shown as examples, in all and per endpoint (so that one endpoint that
/// differs everywhere does not hide the others).
pub const MAX_FIELD_EXAMPLES: usize = 20;
/// See [`MAX_FIELD_EXAMPLES`].
pub const MAX_FIELD_EXAMPLES_PER_ENDPOINT: usize = 3;

/// One side's figures for one endpoint.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EndpointSide {
    /// Requests.
    pub requests: u64,
    /// Errors: HTTP 4xx/5xx, Redis error replies, and requests the target never answered
    /// (reset, refused, timed out, closed).
    pub errors: u64,
    /// errors / requests.
    pub error_rate: f64,
    /// Errors by class: HTTP status (`500`), Redis error prefix (`ERR`), or how the connection
    /// failed (`reset`, `timed_out`...).
    pub errors_by_class: BTreeMap<String, u64>,
    /// Latency (first response byte − last request byte), ms.
    pub latency_ms: Percentiles,
    /// The same latency as a histogram (µs, 2 significant digits; [`super::hist`]), for
    /// `report merge`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_hist: Option<String>,
}

/// Protocol-aware comparison of one endpoint.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EndpointDiff {
    /// Responses compared (both decoded).
    pub compared: u64,
    /// Responses with a field that differs, noise left out.
    pub differing: u64,
    /// Field paths learned as noise from `--baseline-target` (ignored here).
    pub noise: Vec<String>,
}

/// One endpoint (HTTP method + path template) or command (Redis).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EndpointReport {
    /// `http` or `redis`.
    pub protocol: String,
    /// `GET /users/{id}`, `HGETALL`.
    pub endpoint: String,
    /// The target.
    pub test: EndpointSide,
    /// Production, when its responses were in the capture.
    pub production: Option<EndpointSide>,
    /// test p99 / production p99.
    pub p99_ratio: Option<f64>,
    /// `--diff`: the comparison of this endpoint.
    pub diff: Option<EndpointDiff>,
    /// `report compare`: only OLD has this endpoint (its figures are under `production`; the
    /// `test` side is empty). Listed, not judged by `--fail-if` rules.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub gone: bool,
}

/// How much of the traffic the decoders could read.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DecodeCounts {
    /// Requests decoded, by protocol.
    pub decoded: BTreeMap<String, u64>,
    /// Requests that could not be decoded (counted under no endpoint).
    pub opaque_requests: u64,
    /// Sessions with at least one such request (never a failure of the run).
    pub opaque_sessions: u64,
    /// Responses present but not decodable.
    pub opaque_responses: u64,
}

/// Latency percentiles of one time bucket.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TimePoint {
    /// Bucket start, seconds since the start (test: of the run; production: of the capture).
    pub t_s: f64,
    /// Requests measured in it.
    pub count: u64,
    /// Median latency, ms.
    pub p50: f64,
    /// 99th percentile, ms.
    pub p99: f64,
    /// The bucket's latencies as a histogram (µs, 2 significant digits; [`super::hist`]), for
    /// `report merge`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hist: Option<String>,
}

/// Latency over time.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Timeline {
    /// Bucket width in seconds: 0.1 s for runs up to 12 s, then 1 s, doubled as often as
    /// needed to stay under [`MAX_TIMELINE`] points.
    pub bucket_s: f64,
    /// The target.
    pub test: Vec<TimePoint>,
    /// Production.
    pub production: Vec<TimePoint>,
}

/// One response that differs from production's, by field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldDiffExample {
    /// Endpoint or command.
    pub endpoint: String,
    /// The request target (HTTP) or key (Redis).
    pub key: Option<String>,
    /// Session number.
    pub session: u64,
    /// Request number within the session.
    pub index: u32,
    /// The differing fields (noise left out).
    pub fields: Vec<FieldDiff>,
}

/// Latency histogram of the per-endpoint and per-second figures: 2 significant digits keep
/// each one near 30 KB (the run totals keep 3).
fn small_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 2).expect("static histogram bounds")
}

#[derive(Default)]
struct SideEp {
    requests: u64,
    errors: u64,
    classes: BTreeMap<String, u64>,
    lat: Option<Histogram<u64>>,
}

impl SideEp {
    fn add(&mut self, error: Option<&str>, latency: Option<Duration>) {
        self.requests += 1;
        if let Some(c) = error {
            self.errors += 1;
            *self.classes.entry(c.to_string()).or_default() += 1;
        }
        if let Some(l) = latency {
            let _ = self
                .lat
                .get_or_insert_with(small_hist)
                .record(super::micros(l));
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
            latency_ms: self
                .lat
                .as_ref()
                .map(super::percentiles)
                .unwrap_or_default(),
            latency_hist: self.lat.as_ref().map(super::hist::encode),
        }
    }
}

#[derive(Default)]
struct EpAcc {
    protocol: &'static str,
    test: SideEp,
    prod: SideEp,
    compared: u64,
}

/// Histograms per time slot: 100 ms slots while the run fits in [`MAX_TIMELINE`] of them
/// (12 s), then 1 s, then doubling; slots merge when the run outgrows them.
struct TimeAcc {
    /// Slot width in units of 100 ms: 1, 10, 20, 40...
    width: u64,
    buckets: Vec<Histogram<u64>>,
}

impl Default for TimeAcc {
    fn default() -> Self {
        TimeAcc {
            width: 1,
            buckets: Vec::new(),
        }
    }
}

impl TimeAcc {
    fn add(&mut self, at: Duration, latency: Duration) {
        // Up to 100 hours; a sample past that is left out of the chart (not the totals).
        if at.as_secs() >= 360_000 {
            return;
        }
        let tenths = (at.as_millis() / 100) as u64;
        let mut i = (tenths / self.width) as usize;
        while i >= MAX_TIMELINE {
            // 100 ms slots become seconds, then seconds double.
            let f = if self.width == 1 { 10 } else { 2 };
            let old = std::mem::take(&mut self.buckets);
            let mut merged: Vec<Histogram<u64>> = Vec::with_capacity(old.len() / f + 1);
            for (j, h) in old.into_iter().enumerate() {
                if j % f == 0 {
                    merged.push(h);
                } else if let Some(last) = merged.last_mut() {
                    let _ = last.add(&h);
                }
            }
            self.buckets = merged;
            self.width *= f as u64;
            i = (tenths / self.width) as usize;
        }
        while self.buckets.len() <= i {
            self.buckets.push(small_hist());
        }
        let _ = self.buckets[i].record(super::micros(latency));
    }

    /// The points with slots of `width` (a multiple of this side's: both sides are drawn with
    /// the wider side's slots).
    fn points(&self, width: u64) -> Vec<TimePoint> {
        let k = (width / self.width).max(1) as usize;
        self.buckets
            .chunks(k)
            .enumerate()
            .filter_map(|(i, c)| {
                let mut h = small_hist();
                for x in c {
                    let _ = h.add(x);
                }
                (!h.is_empty()).then(|| time_point((i as u64 * width) as f64 / 10.0, &h))
            })
            .collect()
    }
}

/// The point of a time bucket starting at `t_s` holding `h`.
pub(crate) fn time_point(t_s: f64, h: &Histogram<u64>) -> TimePoint {
    TimePoint {
        t_s,
        count: h.len(),
        p50: h.value_at_quantile(0.5) as f64 / 1000.0,
        p99: h.value_at_quantile(0.99) as f64 / 1000.0,
        hist: Some(super::hist::encode(h)),
    }
}

struct Pending {
    endpoint: String,
    key: Option<String>,
    session: u64,
    index: u32,
    diffs: Vec<FieldDiff>,
}

/// The per-endpoint accumulator inside the report's collector.
#[derive(Default)]
pub struct EndpointCollector {
    eps: HashMap<String, EpAcc>,
    counts: DecodeCounts,
    opaque_sessions: HashSet<u64>,
    test_time: TimeAcc,
    prod_time: TimeAcc,
    /// `--diff` with decodable responses: what is compared.
    fields: Option<FieldConfig>,
    pending: Vec<Pending>,
    /// Differing responses past [`MAX_PENDING`]: real differences, by endpoint.
    overflow: HashMap<String, u64>,
    noise: HashMap<String, BTreeSet<String>>,
    baseline_compared: u64,
}

/// What [`EndpointCollector::finish`] adds to the report.
pub struct EndpointSections {
    /// Per endpoint, largest regressions first.
    pub endpoints: Vec<EndpointReport>,
    /// Decoded and opaque counts (`None` when nothing was decoded or opaque).
    pub decode: Option<DecodeCounts>,
    /// Latency over time (`None` without latency samples).
    pub timeline: Option<Timeline>,
    /// Responses compared field by field, and how many differ (noise left out).
    pub compared: u64,
    /// Of them, differing.
    pub differing: u64,
    /// The first differing responses.
    pub examples: Vec<FieldDiffExample>,
    /// The noise learned, per endpoint.
    pub noise: BTreeMap<String, Vec<String>>,
    /// Baseline responses compared with production's to learn it.
    pub baseline_compared: u64,
}

fn outcome_class(o: Outcome) -> Option<&'static str> {
    match o {
        Outcome::Answered | Outcome::Unanswered => None,
        Outcome::Reset => Some("reset"),
        Outcome::Refused => Some("refused"),
        Outcome::TimedOut => Some("timed_out"),
        Outcome::Closed => Some("closed"),
    }
}

impl EndpointCollector {
    /// A collector; `fields`: compare responses field by field (`--diff`).
    pub fn new(fields: Option<FieldConfig>) -> Self {
        EndpointCollector {
            fields,
            ..Default::default()
        }
    }

    fn endpoint_key(&mut self, endpoint: &str) -> String {
        if self.eps.contains_key(endpoint) || self.eps.len() < MAX_ENDPOINTS {
            endpoint.to_string()
        } else {
            OTHER.to_string()
        }
    }

    /// A `--baseline-target` sample: what differs between baseline and production is noise.
    pub fn learn(&mut self, ex: &Exchange) {
        let (Some(cfg), Some(ep), Some(p), Some(b)) = (
            self.fields.as_ref(),
            ex.endpoint.as_deref(),
            ex.production.as_ref(),
            ex.test.as_ref(),
        ) else {
            return;
        };
        self.baseline_compared += 1;
        let diffs = diff_fields(&p.fields, &b.fields, cfg);
        if !diffs.is_empty() {
            let set = self.noise.entry(ep.to_string()).or_default();
            // Bounded: a response that differs everywhere teaches at most this many paths.
            for d in diffs.into_iter().take(1000) {
                set.insert(d.path);
            }
        }
    }

    /// Adds one replayed request (of the target). Returns true when it was compared field by
    /// field (the byte comparison is then skipped).
    pub fn record(&mut self, s: &RequestSample, outcome: Outcome) -> bool {
        let Some(ex) = s.exchange.as_ref() else {
            return false;
        };
        if ex.response_opaque {
            self.counts.opaque_responses += 1;
        }
        let Some(endpoint) = ex.endpoint.as_deref() else {
            self.counts.opaque_requests += 1;
            self.opaque_sessions.insert(s.session);
            return false;
        };
        *self
            .counts
            .decoded
            .entry(ex.protocol.to_string())
            .or_default() += 1;
        let key = self.endpoint_key(endpoint);
        let acc = self.eps.entry(key.clone()).or_default();
        acc.protocol = ex.protocol;
        let test_err = outcome_class(outcome).or_else(|| {
            ex.test
                .as_ref()
                .filter(|t| t.error)
                .map(|t| t.class.as_str())
        });
        acc.test.add(test_err, s.latency);
        if let Some(l) = s.latency {
            self.test_time.add(s.sent_at, l);
        }
        if let Some(p) = &s.production {
            let perr = ex
                .production
                .as_ref()
                .filter(|r| r.error)
                .map(|r| r.class.as_str());
            acc.prod.add(perr, Some(p.latency));
            self.prod_time.add(p.at, p.latency);
        }
        let (Some(cfg), Some(p), Some(t)) = (
            self.fields.as_ref(),
            ex.production.as_ref(),
            ex.test.as_ref(),
        ) else {
            return false;
        };
        acc.compared += 1;
        let diffs = diff_fields(&p.fields, &t.fields, cfg);
        if !diffs.is_empty() {
            if self.pending.len() < MAX_PENDING {
                self.pending.push(Pending {
                    endpoint: key,
                    key: ex.key.clone(),
                    session: s.session,
                    index: s.index,
                    diffs,
                });
            } else {
                *self.overflow.entry(key).or_default() += 1;
            }
        }
        true
    }

    /// The report sections.
    pub fn finish(&self) -> EndpointSections {
        let mut differing: HashMap<&str, u64> = HashMap::new();
        for (k, n) in &self.overflow {
            *differing.entry(k).or_default() += n;
        }
        let mut examples = Vec::new();
        for p in &self.pending {
            let noise = self.noise.get(&p.endpoint);
            let real: Vec<FieldDiff> = p
                .diffs
                .iter()
                .filter(|d| noise.is_none_or(|n| !n.contains(&d.path)))
                .cloned()
                .collect();
            if real.is_empty() {
                continue;
            }
            let n = differing.entry(&p.endpoint).or_default();
            *n += 1;
            if *n as usize <= MAX_FIELD_EXAMPLES_PER_ENDPOINT && examples.len() < MAX_FIELD_EXAMPLES
            {
                examples.push(FieldDiffExample {
                    endpoint: p.endpoint.clone(),
                    key: p.key.clone(),
                    session: p.session,
                    index: p.index,
                    fields: real,
                });
            }
        }
        let mut endpoints: Vec<EndpointReport> = self
            .eps
            .iter()
            .map(|(name, a)| {
                let test = a.test.finish();
                let production = (a.prod.requests > 0).then(|| a.prod.finish());
                let p99_ratio = production
                    .as_ref()
                    .filter(|p| p.latency_ms.p99 > 0.0 && test.latency_ms.count > 0)
                    .map(|p| test.latency_ms.p99 / p.latency_ms.p99);
                EndpointReport {
                    protocol: a.protocol.to_string(),
                    endpoint: name.clone(),
                    test,
                    production,
                    p99_ratio,
                    diff: self.fields.as_ref().map(|_| EndpointDiff {
                        compared: a.compared,
                        differing: differing.get(name.as_str()).copied().unwrap_or(0),
                        noise: self
                            .noise
                            .get(name)
                            .map(|n| n.iter().cloned().collect())
                            .unwrap_or_default(),
                    }),
                    gone: false,
                }
            })
            .collect();
        sort_regressions(&mut endpoints);
        let mut counts = self.counts.clone();
        counts.opaque_sessions = self.opaque_sessions.len() as u64;
        let decoded_any = !counts.decoded.is_empty() || counts.opaque_requests > 0;
        let width = self.test_time.width.max(self.prod_time.width);
        let timeline = (!self.test_time.buckets.is_empty() || !self.prod_time.buckets.is_empty())
            .then(|| Timeline {
                bucket_s: width as f64 / 10.0,
                test: self.test_time.points(width),
                production: self.prod_time.points(width),
            });
        let compared = self.eps.values().map(|a| a.compared).sum();
        EndpointSections {
            endpoints,
            decode: decoded_any.then_some(counts),
            timeline,
            compared,
            differing: differing.values().sum(),
            examples,
            noise: self
                .noise
                .iter()
                .map(|(k, v)| (k.clone(), v.iter().cloned().collect()))
                .collect(),
            baseline_compared: self.baseline_compared,
        }
    }
}

/// Sorts endpoints largest regressions first (see [`regression_key`]), then by name.
pub fn sort_regressions(endpoints: &mut [EndpointReport]) {
    endpoints.sort_by(|a, b| {
        regression_key(b)
            .partial_cmp(&regression_key(a))
            .unwrap_or(std::cmp::Ordering::Equal)
            .then_with(|| a.endpoint.cmp(&b.endpoint))
    });
}

/// How an endpoint ranks among regressions: more errors than production first (by how many
/// more, as a rate), then the slowdown of its p99 against production's (or its own p99 when
/// production is unknown... ranked after every compared one).
fn regression_key(e: &EndpointReport) -> (f64, f64, f64) {
    let err_up = match &e.production {
        Some(p) => e.test.error_rate - p.error_rate,
        None => e.test.error_rate,
    };
    let err_up = if err_up > 0.0 { err_up } else { 0.0 };
    match e.p99_ratio {
        Some(r) => (err_up, 1.0, r),
        None => (err_up, 0.0, e.test.latency_ms.p99),
    }
}

#[cfg(test)]
mod tests {
    use super::super::exchange::DecodedResponse;
    use super::super::ProductionSample;
    use super::*;

    fn resp(class: &str, error: bool, fields: &[(&str, &str)]) -> DecodedResponse {
        DecodedResponse {
            class: class.into(),
            error,
            fields: fields
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn sample(ep: &str, ms: u64, prod_ms: u64, t: DecodedResponse) -> RequestSample {
        RequestSample {
            session: 7,
            latency: Some(Duration::from_millis(ms)),
            production: Some(ProductionSample {
                latency: Duration::from_millis(prod_ms),
                ttlb: Duration::from_millis(prod_ms),
                bytes_in: 1,
                at: Duration::from_millis(ms),
            }),
            exchange: Some(Exchange {
                protocol: "http",
                endpoint: Some(ep.into()),
                key: Some(format!("{ep}?k")),
                production: Some(resp("200", false, &[("$.v", "1"), ("$.id", "a")])),
                test: Some(t),
                response_opaque: false,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn regressions_first_errors_by_class_and_noise() {
        let cfg = FieldConfig::default();
        let mut c = EndpointCollector::new(Some(cfg));
        let ok = || resp("200", false, &[("$.v", "1"), ("$.id", "b")]);
        for _ in 0..50 {
            c.record(&sample("GET /fast", 1, 1, ok()), Outcome::Answered);
            c.record(&sample("GET /slow", 30, 1, ok()), Outcome::Answered);
            c.record(
                &sample("GET /broken", 1, 1, resp("500", true, &[])),
                Outcome::Answered,
            );
        }
        c.record(
            &sample("GET /fast", 1, 1, resp("200", false, &[("$.v", "2")])),
            Outcome::Answered,
        );
        // Opaque requests are counted, under no endpoint.
        let mut opaque = sample("x", 1, 1, ok());
        opaque.exchange.as_mut().unwrap().endpoint = None;
        c.record(&opaque, Outcome::Answered);
        // The baseline's $.id differs from production's: noise for GET /fast.
        let base = sample("GET /fast", 1, 1, ok());
        c.learn(base.exchange.as_ref().unwrap());
        let s = c.finish();
        let names: Vec<&str> = s.endpoints.iter().map(|e| e.endpoint.as_str()).collect();
        assert_eq!(names, ["GET /broken", "GET /slow", "GET /fast"]);
        let broken = &s.endpoints[0];
        assert_eq!(broken.test.errors_by_class["500"], 50);
        assert_eq!(broken.production.as_ref().unwrap().errors, 0);
        assert!(s.endpoints[1].p99_ratio.unwrap() > 20.0);
        let fast = &s.endpoints[2];
        // 51 compared; $.id is noise, so only the response with $.v changed differs.
        let d = fast.diff.as_ref().unwrap();
        assert_eq!((d.compared, d.differing), (51, 1));
        assert_eq!(d.noise, ["$.id"]);
        // Noise is learned per endpoint: on /slow, $.id still differs in every response.
        assert_eq!(s.endpoints[1].diff.as_ref().unwrap().differing, 50);
        let fast_ex: Vec<_> = s
            .examples
            .iter()
            .filter(|e| e.endpoint == "GET /fast")
            .collect();
        assert_eq!(fast_ex.len(), 1);
        assert_eq!(fast_ex[0].fields[0].path, "$.v");
        assert_eq!(fast_ex[0].key.as_deref(), Some("GET /fast?k"));
        let dec = s.decode.unwrap();
        assert_eq!((dec.opaque_requests, dec.opaque_sessions), (1, 1));
        assert_eq!(dec.decoded["http"], 151);
        let tl = s.timeline.unwrap();
        assert_eq!(tl.bucket_s, 0.1);
        assert!(tl.test[0].p99 >= 29.0);
    }

    #[test]
    fn timeline_merges_buckets_to_stay_bounded() {
        let mut t = TimeAcc::default();
        for s in 0..1000u64 {
            t.add(Duration::from_secs(s), Duration::from_millis(s + 1));
        }
        assert!(t.buckets.len() <= MAX_TIMELINE);
        // 1000 s in at most 120 slots: 100 ms, 1 s, 2, 4, 8, 16 s.
        assert_eq!(t.width, 160);
        let pts = t.points(t.width);
        let n: u64 = pts.iter().map(|p| p.count).sum();
        assert_eq!(n, 1000);
    }
}
