//! Measurements of one replayed session: what each request sent and got back, on the target and
//! in production, turned into the report's [`RequestSample`]s.
//!
//! Pure bookkeeping: instants and bytes come from the session core, nothing here reads a clock
//! or a socket, and nothing decides when a request goes (that is the session core's gate).

use crate::report::exchange::{analyze_burst, BurstDecoder, Exchange, FieldConfig};
use crate::report::{DiffInput, Outcome, ProductionSample, RequestSample, DIFF_CAP};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tcpclone::decode::Protocol;

/// Request bytes kept to name a request in diff examples.
pub(super) const PREVIEW: usize = 96;

/// What the samples of one session copy say about it, fixed for its life.
#[derive(Debug, Clone)]
pub(super) struct SampleContext {
    /// The copy's id in the report.
    pub session: u64,
    /// When the run started (requests' `sent_at` count from it).
    pub start: Instant,
    /// Capture time of the loop's first packet.
    pub t0: u64,
    /// Original-time offset of this loop (production's throughput axis).
    pub orig_base: Duration,
    /// The protocol requests and responses are decoded as.
    pub protocol: Protocol,
    /// `--diff`: responses are kept for the comparison.
    pub diff: bool,
    /// `--diff` fields.
    pub fields: Option<Arc<FieldConfig>>,
    /// A copy replayed to `--baseline-target`.
    pub baseline: bool,
}

impl SampleContext {
    /// Response bytes are kept (up to [`DIFF_CAP`] a burst) for the byte comparison of
    /// `--diff`; decoding needs none kept, it reads them as they pass.
    pub fn keeps_responses(&self) -> bool {
        self.diff
    }

    /// The samples of a request burst that never went out (the connection could not be
    /// made): `bytes` are its first captured bytes, `len` how many it had. The endpoints of
    /// requests that never went out still count, each request of a pipelined burst too.
    pub fn unsent(
        &self,
        index: u32,
        now: Instant,
        outcome: Outcome,
        bytes: &[u8],
        len: usize,
        out: &mut Vec<RequestSample>,
    ) {
        let burst = if self.protocol == Protocol::Tcp {
            Vec::new()
        } else {
            analyze_burst(self.protocol, bytes, bytes.len() < len, None, None, None)
        };
        let mut burst = burst.into_iter().map(|p| p.exchange);
        let sample = RequestSample {
            session: self.session,
            index,
            sent_at: now.saturating_duration_since(self.start),
            outcome: Some(outcome),
            baseline: self.baseline,
            ..Default::default()
        };
        out.push(RequestSample {
            bytes_out: len as u64,
            request_preview: bytes[..bytes.len().min(PREVIEW)].to_vec(),
            exchange: burst.next(),
            ..sample.clone()
        });
        for ex in burst {
            out.push(RequestSample {
                exchange: Some(ex),
                ..sample.clone()
            });
        }
    }
}

/// One request being measured.
#[derive(Debug)]
pub(super) struct Req {
    pub index: u32,
    /// The request's first [`PREVIEW`] bytes.
    pub preview: Vec<u8>,
    /// More request bytes were sent than `preview` holds.
    pub preview_cut: bool,
    pub bytes_out: u64,
    /// When its last byte went (answers that came after it are its answers).
    pub last_write: Instant,
    /// How far behind its place in the schedule it went.
    pub slip: Option<Duration>,
    pub prod_req_last_ts: u64,
    pub prod_resp_first_ts: Option<u64>,
    pub prod_resp_last_ts: Option<u64>,
    pub prod_bytes: u64,
    pub prod_resp: Vec<u8>,
    pub first_resp: Option<Instant>,
    pub last_resp: Option<Instant>,
    pub bytes_in: u64,
    pub resp: Vec<u8>,
    /// The gate gave up waiting for its answer.
    pub timed_out: bool,
    /// Production answered it (or the capture has no server packets at all): an answer is due.
    pub expects: bool,
}

impl Req {
    /// A request that starts at `now`, captured at `ts`.
    pub fn new(index: u32, now: Instant, ts: u64, slip: Option<Duration>, expects: bool) -> Req {
        Req {
            index,
            preview: Vec::new(),
            preview_cut: false,
            bytes_out: 0,
            last_write: now,
            slip,
            prod_req_last_ts: ts,
            prod_resp_first_ts: None,
            prod_resp_last_ts: None,
            prod_bytes: 0,
            prod_resp: Vec::new(),
            first_resp: None,
            last_resp: None,
            bytes_in: 0,
            resp: Vec::new(),
            timed_out: false,
            expects,
        }
    }

    /// Bytes of the request captured at `ts` were written at `at` (`ok`: they went out).
    pub fn wrote(&mut self, bytes: &[u8], ok: bool, at: Instant, ts: u64) {
        let n = PREVIEW.saturating_sub(self.preview.len()).min(bytes.len());
        self.preview.extend_from_slice(&bytes[..n]);
        self.preview_cut |= n < bytes.len();
        if ok {
            self.bytes_out += bytes.len() as u64;
        }
        self.last_write = at;
        self.prod_req_last_ts = ts;
    }

    /// The target answered `data` at `at`; kept up to [`DIFF_CAP`] when `keep`.
    pub fn answered(&mut self, at: Instant, data: &[u8], keep: bool) {
        self.first_resp.get_or_insert(at);
        self.last_resp = Some(at);
        self.bytes_in += data.len() as u64;
        if keep && self.resp.len() < DIFF_CAP {
            let n = (DIFF_CAP - self.resp.len()).min(data.len());
            self.resp.extend_from_slice(&data[..n]);
        }
    }

    /// Production answered `len` bytes (`bytes`: those the capture kept, maybe none) at capture
    /// time `ts`; kept up to [`DIFF_CAP`] when `keep`.
    pub fn production_answered(&mut self, ts: u64, bytes: &[u8], len: usize, keep: bool) {
        self.prod_resp_first_ts.get_or_insert(ts);
        self.prod_resp_last_ts = Some(ts);
        self.prod_bytes += len as u64;
        if keep && self.prod_resp.len() < DIFF_CAP && !bytes.is_empty() {
            let n = (DIFF_CAP - self.prod_resp.len()).min(bytes.len());
            self.prod_resp.extend_from_slice(&bytes[..n]);
        }
    }

    /// The report's samples of this request burst: the first request's, then one per request
    /// pipelined after it, each timed to its own response's first byte; `eof`/`reset`: how the
    /// connection ended. `conv`: the connection's decoder, whose requests of this burst (and of
    /// earlier ones not taken) are taken here.
    pub fn finish(
        mut self,
        cx: &SampleContext,
        eof: bool,
        reset: bool,
        conv: Option<&mut BurstDecoder>,
        out: &mut Vec<RequestSample>,
    ) {
        let outcome = if self.bytes_in > 0 {
            Outcome::Answered
        } else if reset {
            Outcome::Reset
        } else if self.timed_out {
            Outcome::TimedOut
        } else if eof {
            Outcome::Closed
        } else if !self.expects {
            Outcome::Unanswered
        } else {
            Outcome::TimedOut
        };
        let production = match (self.prod_resp_first_ts, self.prod_resp_last_ts) {
            (Some(f), Some(l)) => Some(ProductionSample {
                latency: Duration::from_nanos(f.saturating_sub(self.prod_req_last_ts)),
                ttlb: Duration::from_nanos(l.saturating_sub(self.prod_req_last_ts)),
                bytes_in: self.prod_bytes,
                at: cx.orig_base
                    + Duration::from_nanos(self.prod_req_last_ts.saturating_sub(cx.t0)),
            }),
            _ => None,
        };
        let mut burst = Vec::new();
        let mut opaque = None;
        if let Some(conv) = conv {
            while let Some(p) = conv.pop_through(self.index) {
                burst.push(p);
            }
            // No request ended in this burst: it holds the start of one that ends in a later
            // burst (nothing to count here), or bytes that are not the protocol (opaque).
            if burst.is_empty() && conv.requests_opaque() {
                opaque = Some(Exchange {
                    protocol: cx.protocol.name(),
                    ..Default::default()
                });
            }
        }
        let mut burst = burst.into_iter();
        let exchange = burst.next().map(|p| p.exchange).or(opaque);
        self.preview.truncate(PREVIEW);
        let diff = (cx.diff && self.prod_resp_first_ts.is_some()).then_some(DiffInput {
            production: self.prod_resp,
            production_len: self.prod_bytes,
            test: self.resp,
            test_len: self.bytes_in,
        });
        let sent_at = self.last_write.saturating_duration_since(cx.start);
        let first = RequestSample {
            session: cx.session,
            index: self.index,
            sent_at,
            latency: self
                .first_resp
                .map(|f| f.saturating_duration_since(self.last_write)),
            ttlb: self
                .last_resp
                .map(|l| l.saturating_duration_since(self.last_write)),
            bytes_out: self.bytes_out,
            bytes_in: self.bytes_in,
            outcome: Some(outcome),
            slip: self.slip,
            production,
            request_preview: self.preview,
            diff,
            exchange,
            baseline: cx.baseline,
        };
        let production = first.production;
        out.push(first);
        for p in burst {
            let latency = p.test_time.map(|t| {
                (cx.start + Duration::from_nanos(t)).saturating_duration_since(self.last_write)
            });
            let prod_at = p.production_time;
            let production = production
                .as_ref()
                .zip(prod_at)
                .map(|(b, ts)| ProductionSample {
                    latency: Duration::from_nanos(ts.saturating_sub(self.prod_req_last_ts)),
                    bytes_in: 0,
                    ..*b
                });
            out.push(RequestSample {
                session: cx.session,
                index: self.index,
                sent_at,
                latency,
                outcome: Some(if latency.is_some() {
                    Outcome::Answered
                } else {
                    outcome
                }),
                production,
                exchange: Some(p.exchange),
                baseline: cx.baseline,
                ..Default::default()
            });
        }
    }
}
