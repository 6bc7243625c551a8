//! One request and its responses (production's, the target's) decoded with the library's
//! protocol decoders: the endpoint the report groups by, each response's class, and, for the
//! protocol-aware `--diff`, each response as named fields (`status`, `header:content-type`,
//! `$.user.id`, Redis `$[2]`) that two responses are compared by.
//!
//! Pure: bytes in, values out. Runs in the session task (outside the collector's lock). A
//! request or response the decoder cannot read makes the exchange *opaque*: counted, never an
//! error of the run.

use super::DIFF_CAP;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use tcpclone::decode::{
    redis, DecodedMessage, Decoder, Detail, Direction, Limits, Protocol, ResponseClass, Summary,
};

/// Longest field value kept for a diff example (characters).
const SHOWN: usize = 120;

/// What the protocol-aware comparison looks at (`--diff-header`, `--diff-ignore-path`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldConfig {
    /// HTTP headers compared, lower-case (default: `content-type`).
    pub headers: Vec<String>,
    /// Field paths never compared: a path equal to one, or below it (`$.meta` hides
    /// `$.meta.ts`).
    pub ignore_paths: Vec<String>,
}

impl FieldConfig {
    /// True when `path` is one of the ignore paths or below one.
    pub fn ignored(&self, path: &str) -> bool {
        self.ignore_paths.iter().any(|ig| covers(ig, path))
    }
}

/// True when `path` is `prefix` or a field below it.
pub fn covers(prefix: &str, path: &str) -> bool {
    path == prefix
        || (path.starts_with(prefix)
            && matches!(path.as_bytes().get(prefix.len()), Some(b'.' | b'[')))
}

/// One decoded response.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DecodedResponse {
    /// Its class: the HTTP status (`200`, `503`), the Redis reply type or error prefix.
    pub class: String,
    /// An error: HTTP 4xx/5xx, a Redis error reply.
    pub error: bool,
    /// Its fields, path → value, when responses are compared.
    pub fields: BTreeMap<String, String>,
}

/// One request decoded, with its responses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Exchange {
    /// The protocol it was decoded as.
    pub protocol: &'static str,
    /// The endpoint (`GET /users/{id}`, `HGETALL`); `None` when the request is opaque.
    pub endpoint: Option<String>,
    /// What names the request within its endpoint in a diff: the HTTP target as sent, the
    /// Redis key (first argument).
    pub key: Option<String>,
    /// The target's response; `None` when missing or opaque.
    pub test: Option<DecodedResponse>,
    /// Production's response; `None` when missing or opaque.
    pub production: Option<DecodedResponse>,
    /// A response (bytes present) could not be decoded.
    pub response_opaque: bool,
}

/// A field whose value differs between two responses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldDiff {
    /// The field (`status`, `header:content-type`, `$.price`, `$[1]`, `body`).
    pub path: String,
    /// Its value in the reference response (production), `None` when absent there.
    pub production: Option<String>,
    /// Its value in the compared response, `None` when absent there.
    pub test: Option<String>,
}

/// The fields of `a` (reference) and `b` whose values differ, ignore paths left out.
pub fn diff_fields(
    a: &BTreeMap<String, String>,
    b: &BTreeMap<String, String>,
    cfg: &FieldConfig,
) -> Vec<FieldDiff> {
    let mut out = Vec::new();
    let cut = |s: &String| {
        let mut t: String = s.chars().take(SHOWN).collect();
        if t.len() < s.len() {
            t.push('…');
        }
        t
    };
    for (path, va) in a {
        if cfg.ignored(path) {
            continue;
        }
        match b.get(path) {
            Some(vb) if vb == va => {}
            vb => out.push(FieldDiff {
                path: path.clone(),
                production: Some(cut(va)),
                test: vb.map(cut),
            }),
        }
    }
    for (path, vb) in b {
        if !a.contains_key(path) && !cfg.ignored(path) {
            out.push(FieldDiff {
                path: path.clone(),
                production: None,
                test: Some(cut(vb)),
            });
        }
    }
    out
}

/// One request of a burst (requests sent back to back before any answer: HTTP pipelining,
/// Redis pipelines), paired with its own responses: HTTP/1.1 and RESP answer in request order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pipelined {
    /// The request and its responses.
    pub exchange: Exchange,
    /// Offset of its response's first byte in the target's response bytes.
    pub test_at: Option<u64>,
    /// Likewise in production's response bytes.
    pub production_at: Option<u64>,
    /// When the read that brought the first byte of the target's response arrived, as fed to
    /// [`BurstDecoder::feed_test`]: where its latency is read.
    pub test_time: Option<u64>,
    /// Capture time (ns) of the packet that brought production's response's first byte.
    pub production_time: Option<u64>,
    /// The burst its last byte was written in ([`BurstDecoder::set_burst`]): a request split
    /// across two bursts belongs to the second.
    pub burst: u32,
}

/// Decodes every request of a burst and pairs each with its responses as the bytes pass:
/// request bytes as they are written, each side's response bytes as they are read, so a burst
/// of any size (`redis-cli --pipe`, `redis-benchmark -P 64`) is counted whole without holding
/// its bytes. What it keeps: the decoders' undecoded tails (bounded by [`Limits`]), and per
/// request its endpoint, key and classed responses (with `--diff` fields, each value cut to
/// [`FIELD_CAP`]).
///
/// A response is paired with the oldest request not yet answered on its side; a response that
/// arrives before its request is decoded waits in its decoder (an HTTP server may answer `413`
/// before the request's body ends).
pub struct BurstDecoder {
    protocol: Protocol,
    req: Box<dyn Decoder + Send>,
    /// No more requests are decoded: the stream ended, or stopped being this protocol.
    req_failed: bool,
    /// The request stream stopped being this protocol (or ended inside a request).
    req_opaque: bool,
    /// Requests not taken yet ([`pop_through`](Self::pop_through)), oldest first; `out[0]` is
    /// request number `base` of the conversation.
    out: VecDeque<Pipelined>,
    base: usize,
    /// The burst requests decoded now belong to.
    tag: u32,
    production: Side,
    test: Side,
}

impl std::fmt::Debug for BurstDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BurstDecoder")
            .field("protocol", &self.protocol)
            .field("requests", &self.out.len())
            .finish()
    }
}

/// One side's responses (production's or the target's) being decoded.
struct Side {
    dec: Box<dyn Decoder + Send>,
    /// Number (in the conversation) of the request its next response answers.
    next: usize,
    /// Bytes fed so far, and the end of the last message decoded.
    fed: u64,
    consumed: u64,
    /// (offset of a read's first byte, its arrival) for reads not yet decoded, in stream
    /// order; the one holding byte `consumed` first. A few entries: each read is decoded as it
    /// arrives, unless its response's request is not decoded yet.
    marks: VecDeque<(u64, u64)>,
    /// The stream stopped being this protocol.
    failed: bool,
    /// Responses came with no request left to answer: the rest of the side is not paired.
    stopped: bool,
}

impl Side {
    fn new(protocol: Protocol) -> Self {
        Side {
            dec: protocol.decoder(Direction::Response, response_limits()),
            next: 0,
            fed: 0,
            consumed: 0,
            marks: VecDeque::new(),
            failed: false,
            stopped: false,
        }
    }

    /// Takes the next bytes, read at `at`; false when there is nothing to decode (then
    /// [`drain`](Self::drain) need not run).
    fn feed(&mut self, data: &[u8], at: u64) -> bool {
        if data.is_empty() || self.failed || self.stopped {
            return false;
        }
        self.marks.push_back((self.fed, at));
        self.fed += data.len() as u64;
        self.dec.feed(data);
        true
    }

    /// Pairs every complete response with its request while there is one to pair with.
    /// `more_requests`: requests may still be decoded (else a response with none is dropped).
    fn drain(
        &mut self,
        out: &mut VecDeque<Pipelined>,
        base: usize,
        more_requests: bool,
        fields: Option<&FieldConfig>,
        set: SetResponse,
    ) {
        while !self.failed && !self.stopped {
            if self.next >= base + out.len() && more_requests {
                // Its request is not decoded yet: the response waits in the decoder.
                break;
            }
            match self.dec.poll_message() {
                Ok(Some(m)) => {
                    self.consumed = m.offset + m.wire_len;
                    if !answers_a_request(&m) {
                        continue;
                    }
                    let Some(i) = self.next.checked_sub(base) else {
                        // Its request was already taken (reported without this response).
                        self.next += 1;
                        continue;
                    };
                    let Some(p) = out.get_mut(i) else {
                        self.stopped = true;
                        break;
                    };
                    self.next += 1;
                    let r = decode_response(&m, fields, false);
                    p.exchange.response_opaque |= r.is_none();
                    let opaque = r.is_none();
                    let when = arrival_in(&self.marks, m.offset);
                    set(p, r, m.offset, when);
                    if opaque {
                        self.failed = true;
                    }
                }
                Ok(None) => break,
                Err(_) => self.failed = true,
            }
        }
        // Marks before the read that holds the next response's first byte are done with.
        while self.marks.len() > 1 && self.marks[1].0 <= self.consumed {
            self.marks.pop_front();
        }
    }

    /// The side's stream ends here: `cut` says more was sent than it was fed (then the
    /// response it stops inside is classed from its head, [`Decoder::poll_partial`]).
    fn finish(
        &mut self,
        cut: bool,
        out: &mut VecDeque<Pipelined>,
        base: usize,
        fields: Option<&FieldConfig>,
        set: SetResponse,
    ) {
        if self.fed == 0 {
            return;
        }
        if !cut {
            self.dec.finish();
        }
        self.drain(out, base, false, fields, set);
        let i = self.next.saturating_sub(base);
        if cut && !self.failed && !self.stopped && i < out.len() && self.next >= base {
            if let Some(m) = self.dec.poll_partial().filter(|m| answers_a_request(m)) {
                let r = decode_response(&m, fields, true);
                let p = &mut out[i];
                self.next += 1;
                p.exchange.response_opaque |= r.is_none();
                let when = arrival_in(&self.marks, m.offset);
                set(p, r, m.offset, when);
            }
        }
        // Responses the bytes held do not reach (cut by a cap, or after bytes that are not
        // this protocol) are opaque; ones the server never sent are just missing.
        if cut || self.failed {
            for p in out.iter_mut().skip(self.next.saturating_sub(base)) {
                p.exchange.response_opaque = true;
            }
        }
    }
}

/// Stores a side's response in its request: the response, its offset, its arrival.
type SetResponse = fn(&mut Pipelined, Option<DecodedResponse>, u64, Option<u64>);

fn set_test(p: &mut Pipelined, r: Option<DecodedResponse>, at: u64, t: Option<u64>) {
    (p.exchange.test, p.test_at, p.test_time) = (r, Some(at), t);
}

fn set_production(p: &mut Pipelined, r: Option<DecodedResponse>, at: u64, t: Option<u64>) {
    (p.exchange.production, p.production_at, p.production_time) = (r, Some(at), t);
}

/// The decoders' limits for responses: a body or value is kept up to [`DIFF_CAP`] bytes (what
/// a field diff compares; the rest is counted), longer Redis strings are streamed through.
fn response_limits() -> Limits {
    Limits {
        max_body: DIFF_CAP,
        ..Limits::default()
    }
}

/// The arrival of the read that brought byte `offset`, among `marks` (see [`arrival`]).
fn arrival_in(marks: &VecDeque<(u64, u64)>, offset: u64) -> Option<u64> {
    let i = marks.partition_point(|&(o, _)| o <= offset);
    i.checked_sub(1).map(|i| marks[i].1)
}

impl BurstDecoder {
    /// A burst of `protocol` requests, nothing fed yet.
    pub fn new(protocol: Protocol) -> BurstDecoder {
        BurstDecoder {
            protocol,
            req: protocol.decoder(Direction::Request, Limits::default()),
            req_failed: false,
            req_opaque: false,
            out: VecDeque::new(),
            base: 0,
            tag: 0,
            production: Side::new(protocol),
            test: Side::new(protocol),
        }
    }

    /// The request stream is not this protocol (from some point on), or ended inside a request.
    pub fn requests_opaque(&self) -> bool {
        self.req_opaque
    }

    /// Requests decoded so far and not taken.
    pub fn requests(&self) -> usize {
        self.out.len()
    }

    /// Requests decoded from now on belong to burst `tag` (a conversation decoded across
    /// bursts: stream mode feeds one decoder per connection, so that a request or response
    /// cut by a burst boundary is still one message, paired in order).
    pub fn set_burst(&mut self, tag: u32) {
        self.tag = tag;
    }

    /// Takes the oldest request if it belongs to burst `tag` or an earlier one; its responses
    /// are whatever came so far (one that comes later is dropped, the pairs after it stay).
    pub fn pop_through(&mut self, tag: u32) -> Option<Pipelined> {
        if self.out.front()?.burst > tag {
            return None;
        }
        self.base += 1;
        self.out.pop_front()
    }

    /// The conversation is over: every stream is whole (a message that runs until close ends
    /// here, one cut short makes its side opaque); the requests are then taken with
    /// [`pop_through`](Self::pop_through).
    pub fn end(&mut self, fields: Option<&FieldConfig>) {
        self.finish_streams(false, false, false, fields);
    }

    fn finish_streams(
        &mut self,
        request_cut: bool,
        production_cut: bool,
        test_cut: bool,
        fields: Option<&FieldConfig>,
    ) {
        if !request_cut && !self.req_failed {
            self.req.finish();
            self.drain_requests(fields);
        }
        self.req_failed = true;
        let base = self.base;
        self.production
            .finish(production_cut, &mut self.out, base, fields, set_production);
        self.test
            .finish(test_cut, &mut self.out, base, fields, set_test);
    }

    /// The next request bytes of the burst, in order.
    pub fn feed_request(&mut self, data: &[u8], fields: Option<&FieldConfig>) {
        if data.is_empty() || self.req_failed {
            return;
        }
        self.req.feed(data);
        self.drain_requests(fields);
    }

    /// The target's next response bytes, read at `at` (any clock in nanoseconds, the same for
    /// the whole burst).
    pub fn feed_test(&mut self, data: &[u8], at: u64, fields: Option<&FieldConfig>) {
        if self.test.feed(data, at) {
            let (more, base) = (!self.req_failed, self.base);
            self.test.drain(&mut self.out, base, more, fields, set_test);
        }
    }

    /// Production's next response bytes, captured at `ts` (ns).
    pub fn feed_production(&mut self, data: &[u8], ts: u64, fields: Option<&FieldConfig>) {
        if self.production.feed(data, ts) {
            let (more, base) = (!self.req_failed, self.base);
            self.production
                .drain(&mut self.out, base, more, fields, set_production);
        }
    }

    /// The burst is over: every request with its responses, in order. `request_cut`,
    /// `production_cut`, `test_cut`: more bytes were sent on that side than were fed (a caller
    /// that holds only the first bytes); else each stream is whole (a message that runs until
    /// close ends here). Always at least one element: a burst whose first request cannot be
    /// decoded is one opaque exchange (no endpoint).
    pub fn finish(
        mut self,
        request_cut: bool,
        production_cut: bool,
        test_cut: bool,
        fields: Option<&FieldConfig>,
    ) -> Vec<Pipelined> {
        if !request_cut && !self.req_failed {
            self.req.finish();
            self.drain_requests(fields);
        }
        if self.out.is_empty() && self.base == 0 {
            return vec![Pipelined {
                exchange: Exchange {
                    protocol: self.protocol.name(),
                    ..Default::default()
                },
                ..Default::default()
            }];
        }
        self.finish_streams(true, production_cut, test_cut, fields);
        self.out.into()
    }

    fn drain_requests(&mut self, fields: Option<&FieldConfig>) {
        let mut added = false;
        while !self.req_failed {
            match self.req.poll_message() {
                Ok(Some(m)) => {
                    let Some((endpoint, key)) = describe_request(&m) else {
                        (self.req_failed, self.req_opaque) = (true, true);
                        break;
                    };
                    self.production.dec.note_request(&m);
                    self.test.dec.note_request(&m);
                    self.out.push_back(Pipelined {
                        exchange: Exchange {
                            protocol: self.protocol.name(),
                            endpoint: Some(endpoint),
                            key,
                            ..Default::default()
                        },
                        burst: self.tag,
                        ..Default::default()
                    });
                    added = true;
                }
                Ok(None) => break,
                Err(_) => (self.req_failed, self.req_opaque) = (true, true),
            }
        }
        // Responses that waited for these requests (or, the request stream being over, for
        // none) are paired now.
        if added || self.req_failed {
            let (more, base) = (!self.req_failed, self.base);
            self.production
                .drain(&mut self.out, base, more, fields, set_production);
            self.test.drain(&mut self.out, base, more, fields, set_test);
        }
    }
}

/// Decodes the first request of `request` with its responses; see [`analyze_burst`].
pub fn analyze(
    protocol: Protocol,
    request: &[u8],
    request_cut: bool,
    production: Option<(&[u8], bool)>,
    test: Option<(&[u8], bool)>,
    fields: Option<&FieldConfig>,
) -> Exchange {
    analyze_burst(protocol, request, request_cut, production, test, fields)
        .into_iter()
        .next()
        .map(|p| p.exchange)
        .unwrap_or_default()
}

/// Decodes every request of a burst held whole (or its first bytes) and pairs each with its
/// responses, in order: [`BurstDecoder`] fed in one piece each. `request` holds the request
/// bytes (`request_cut`: more were sent than it holds); the responses likewise. `fields`: also
/// split the responses into fields.
///
/// A response cut by the cap (its body goes on past the bytes held) is still decoded from its
/// head ([`Decoder::poll_partial`]); responses after the cap are missing (`None`), and counted
/// opaque. Interim HTTP responses (1xx but 101) and RESP3 pushes answer no request and are
/// skipped. Arrival times are not known here (`test_time`/`production_time` are `None`).
pub fn analyze_burst(
    protocol: Protocol,
    request: &[u8],
    request_cut: bool,
    production: Option<(&[u8], bool)>,
    test: Option<(&[u8], bool)>,
    fields: Option<&FieldConfig>,
) -> Vec<Pipelined> {
    let mut b = BurstDecoder::new(protocol);
    b.feed_request(request, fields);
    let (production, production_cut) = production.unwrap_or_default();
    let (test, test_cut) = test.unwrap_or_default();
    b.feed_production(production, 0, fields);
    b.feed_test(test, 0, fields);
    let mut out = b.finish(request_cut, production_cut, test_cut, fields);
    // No arrival times were given.
    for p in &mut out {
        (p.test_time, p.production_time) = (None, None);
    }
    out
}

/// Where the response at byte `offset` of a response stream arrived: the time of the last
/// `marks` entry (offset of a read's first byte, its time; in stream order) at or before it.
pub fn arrival<T: Copy>(marks: &[(u64, T)], offset: u64) -> Option<T> {
    let i = marks.partition_point(|&(o, _)| o <= offset);
    i.checked_sub(1).map(|i| marks[i].1)
}

/// A response that answers a request: not an interim HTTP response (1xx but 101), not a RESP3
/// push, not tunnelled data.
fn answers_a_request(m: &DecodedMessage<'_>) -> bool {
    match m.summary {
        Summary::Response(ResponseClass::Http { status }) => {
            !(100..200).contains(&status) || status == 101
        }
        Summary::Response(ResponseClass::Redis { kind, .. }) => kind != redis::ReplyKind::Push,
        _ => true,
    }
}

/// Fuzzing entry point (`fuzz/fuzz_targets/exchange.rs`): byte 0 picks the protocol, whether
/// the request and the responses were cut by the cap, and whether fields are compared; then
/// three chunks (request, production's response, the target's), each a 16-bit big-endian length
/// and its bytes. Never panics on any bytes; checks what must hold of any burst.
#[doc(hidden)]
pub fn fuzz_exchange(data: &[u8]) {
    let Some((&sel, mut rest)) = data.split_first() else {
        return;
    };
    let protocol = Protocol::ALL[usize::from(sel % 3)];
    let mut chunk = || {
        let (len, tail) = match rest {
            [a, b, tail @ ..] => (usize::from(*a) << 8 | usize::from(*b), tail),
            _ => (rest.len(), &[][..]),
        };
        let len = len.min(tail.len());
        let (c, tail) = tail.split_at(len);
        rest = tail;
        c
    };
    let (request, production, test) = (chunk(), chunk(), chunk());
    let (request_cut, prod_cut, test_cut) = (sel & 4 != 0, sel & 8 != 0, sel & 16 != 0);
    let cfg = FieldConfig {
        headers: vec!["content-type".into()],
        ignore_paths: vec!["$.ts".into()],
    };
    let fields = (sel & 32 != 0).then_some(&cfg);
    let burst = analyze_burst(
        protocol,
        request,
        request_cut,
        Some((production, prod_cut)),
        Some((test, test_cut)),
        fields,
    );
    assert!(!burst.is_empty());
    // Responses pair in order: offsets rise, and none follows a missing one on the same side
    // (a response after a gap would answer the wrong request).
    for (side, bytes) in [(true, test), (false, production)] {
        let mut last = None;
        let mut gap = false;
        for p in &burst {
            let (at, r) = if side {
                (p.test_at, &p.exchange.test)
            } else {
                (p.production_at, &p.exchange.production)
            };
            match at {
                Some(o) => {
                    assert!(!gap, "a response after a missing one");
                    assert!(last.is_none_or(|l| o > l), "offsets out of order");
                    assert!(o < bytes.len() as u64);
                    last = Some(o);
                }
                None => {
                    assert!(r.is_none());
                    gap = true;
                }
            }
        }
    }
    if burst[0].exchange.endpoint.is_none() {
        assert_eq!(burst.len(), 1, "an opaque burst is one exchange");
    }
    // The same bytes on both sides, whole: no differences.
    let same = analyze_burst(
        protocol,
        request,
        request_cut,
        Some((test, test_cut)),
        Some((test, test_cut)),
        Some(&cfg),
    );
    for p in &same {
        if let (Some(a), Some(b)) = (&p.exchange.production, &p.exchange.test) {
            assert!(diff_fields(&a.fields, &b.fields, &cfg).is_empty());
        }
    }
    // The first exchange is what `analyze` gives.
    let first = analyze(
        protocol,
        request,
        request_cut,
        Some((production, prod_cut)),
        Some((test, test_cut)),
        fields,
    );
    assert_eq!(first, burst[0].exchange);
}

fn describe_request(m: &DecodedMessage<'_>) -> Option<(String, Option<String>)> {
    let Summary::Request { endpoint } = m.summary else {
        return None;
    };
    let key = match m.detail {
        Detail::Http(h) => h.target.map(str::to_string),
        Detail::Redis(r) => r.args().nth(1).map(|k| lossy(k, SHOWN)),
        Detail::None => None,
    };
    Some((endpoint.to_string(), key))
}

fn lossy(b: &[u8], max: usize) -> String {
    super::escape(b, max)
}

/// Longest field value kept whole (bytes): a longer one is kept as its first bytes, its length
/// and a hash of the whole, so that two values still compare equal exactly when they are,
/// while a burst of many large replies does not keep them all (`--diff` on a pipeline).
pub const FIELD_CAP: usize = 1024;

/// A field value as compared: the bytes escaped, or for a value past [`FIELD_CAP`] its first
/// bytes, its length and a hash of the whole.
fn field_value(b: &[u8]) -> String {
    if b.len() <= FIELD_CAP {
        return lossy(b, usize::MAX);
    }
    // FNV-1a: stable across runs and builds (saved reports are compared later).
    let hash = b.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &x| {
        (h ^ u64::from(x)).wrapping_mul(0x0100_0000_01b3)
    });
    format!(
        "{}… ({} bytes, fnv1a {hash:016x})",
        lossy(&b[..FIELD_CAP], usize::MAX),
        b.len()
    )
}

/// `partial`: the body is only the first bytes of a longer one.
fn decode_response(
    m: &DecodedMessage<'_>,
    cfg: Option<&FieldConfig>,
    partial: bool,
) -> Option<DecodedResponse> {
    let Summary::Response(class) = m.summary else {
        return None;
    };
    let label = match class {
        ResponseClass::Http { status } => status.to_string(),
        c => c.class().to_string(),
    };
    let mut out = DecodedResponse {
        class: label,
        error: class.is_error(),
        fields: BTreeMap::new(),
    };
    let Some(cfg) = cfg else {
        return Some(out);
    };
    let f = &mut out.fields;
    match m.detail {
        Detail::Http(h) => {
            if let Some(s) = h.status {
                f.insert("status".into(), s.to_string());
            }
            for name in &cfg.headers {
                if let Some(v) = h.header(name) {
                    f.insert(format!("header:{name}"), lossy(v, 1024));
                }
            }
            let json_type = h
                .header("content-type")
                .is_some_and(|v| v.windows(4).any(|w| w.eq_ignore_ascii_case(b"json")));
            let parsed = (json_type || m.body.first().is_some_and(|b| matches!(b, b'{' | b'[')))
                && !m.body_truncated()
                && !partial;
            match parsed
                .then(|| serde_json::from_slice::<serde_json::Value>(m.body).ok())
                .flatten()
            {
                Some(v) => flatten_json(&v, "$".to_string(), f),
                None if m.body_len > 0 => {
                    f.insert("body".into(), field_value(m.body));
                    if m.body_truncated() {
                        f.insert("body_len".into(), m.body_len.to_string());
                    }
                    if partial || m.body_truncated() {
                        // Only the first bytes were held: compare them, and say so.
                        f.insert("body_cut".into(), "true".into());
                    }
                }
                None => {}
            }
        }
        _ => match redis::Value::parse(m.body, Limits::default().max_depth) {
            Ok(v) if !partial && !m.body_truncated() => flatten_redis(&v, "$".to_string(), f),
            _ => {
                // Only the first bytes of a long reply were kept: compare those, and say so.
                f.insert("$".into(), field_value(m.body));
                if partial || m.body_truncated() {
                    f.insert("body_len".into(), m.body_len.to_string());
                    f.insert("body_cut".into(), "true".into());
                }
            }
        },
    }
    Some(out)
}

/// JSON into `path → value` leaves: `$.a.b`, `$.list[0]`; empty containers are leaves too.
fn flatten_json(v: &serde_json::Value, path: String, out: &mut BTreeMap<String, String>) {
    use serde_json::Value as J;
    match v {
        J::Object(m) if !m.is_empty() => {
            for (k, x) in m {
                let simple = !k.is_empty()
                    && k.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                let p = if simple {
                    format!("{path}.{k}")
                } else {
                    format!("{path}[{}]", J::String(k.clone()))
                };
                flatten_json(x, p, out);
            }
        }
        J::Array(a) if !a.is_empty() => {
            for (i, x) in a.iter().enumerate() {
                flatten_json(x, format!("{path}[{i}]"), out);
            }
        }
        leaf => {
            out.insert(path, leaf.to_string());
        }
    }
}

/// A RESP value into `path → "type value"` leaves: `$`, `$[0]`, `$["field"]` for maps.
fn flatten_redis(v: &redis::Value<'_>, path: String, out: &mut BTreeMap<String, String>) {
    use redis::Value as V;
    let leaf = |out: &mut BTreeMap<String, String>, kind: &str, b: &[u8]| {
        out.insert(path.clone(), format!("{kind} {}", field_value(b)));
    };
    match v {
        V::Simple(b) => leaf(out, "simple", b),
        V::Error(b) => leaf(out, "error", b),
        V::Integer(i) => leaf(out, "integer", i.to_string().as_bytes()),
        V::Bulk(b) => leaf(out, "bulk", b),
        V::Null => leaf(out, "null", b""),
        V::Double(b) => leaf(out, "double", b),
        V::Boolean(x) => leaf(out, "boolean", if *x { b"true" } else { b"false" }),
        V::BigNumber(b) => leaf(out, "bignumber", b),
        V::Verbatim(_, b) => leaf(out, "verbatim", b),
        V::BlobError(b) => leaf(out, "error", b),
        V::Array(xs) | V::Set(xs) | V::Push(xs) if !xs.is_empty() => {
            for (i, x) in xs.iter().enumerate() {
                flatten_redis(x, format!("{path}[{i}]"), out);
            }
        }
        V::Array(_) | V::Set(_) | V::Push(_) => leaf(out, "array", b"(empty)"),
        V::Map(kv) if !kv.is_empty() => {
            for (i, (k, x)) in kv.iter().enumerate() {
                let name = match k {
                    V::Simple(b) | V::Bulk(b) => format!("{path}[\"{}\"]", lossy(b, 200)),
                    _ => format!("{path}{{{i}}}"),
                };
                flatten_redis(x, name, out);
            }
        }
        V::Map(_) => leaf(out, "map", b"(empty)"),
        // Attributes are metadata about the reply, not the reply.
        V::Attributed(_, inner) => flatten_redis(inner, path, out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> FieldConfig {
        FieldConfig {
            headers: vec!["content-type".into()],
            ignore_paths: vec!["$.ts".into()],
        }
    }

    #[test]
    fn http_json_fields_and_diff() {
        let req = b"GET /users/42?x=1 HTTP/1.1\r\nHost: a\r\n\r\n";
        let body_p = br#"{"id":42,"ts":1.5,"tags":["a","b"],"name":"x"}"#;
        let body_t = br#"{"id":42,"ts":9.5,"tags":["a","c"],"name":"x"}"#;
        let resp = |b: &[u8], status: &str| {
            let mut v = format!(
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                b.len()
            )
            .into_bytes();
            v.extend_from_slice(b);
            v
        };
        let (p, t) = (resp(body_p, "200 OK"), resp(body_t, "503 Busy"));
        let ex = analyze(
            Protocol::Http,
            req,
            false,
            Some((&p, false)),
            Some((&t, false)),
            Some(&cfg()),
        );
        assert_eq!(ex.endpoint.as_deref(), Some("GET /users/{id}"));
        assert_eq!(ex.key.as_deref(), Some("/users/42?x=1"));
        let (pr, tr) = (ex.production.unwrap(), ex.test.unwrap());
        assert_eq!((pr.class.as_str(), pr.error), ("200", false));
        assert_eq!((tr.class.as_str(), tr.error), ("503", true));
        assert_eq!(pr.fields["$.tags[1]"], "\"b\"");
        let d = diff_fields(&pr.fields, &tr.fields, &cfg());
        let paths: Vec<&str> = d.iter().map(|d| d.path.as_str()).collect();
        // $.ts is ignored; status and the changed array element are named.
        assert_eq!(paths, ["$.tags[1]", "status"]);
        assert_eq!(d[1].production.as_deref(), Some("200"));
        assert_eq!(d[1].test.as_deref(), Some("503"));
    }

    #[test]
    fn redis_values_are_compared_by_type_and_value() {
        let req = b"*2\r\n$3\r\nGET\r\n$5\r\nuser1\r\n";
        let ex = analyze(
            Protocol::Redis,
            req,
            false,
            Some((b"$5\r\nalice\r\n", false)),
            Some((b"-ERR nope\r\n", false)),
            Some(&cfg()),
        );
        assert_eq!(ex.endpoint.as_deref(), Some("GET"));
        assert_eq!(ex.key.as_deref(), Some("user1"));
        let (p, t) = (ex.production.unwrap(), ex.test.unwrap());
        assert!(t.error && !p.error);
        assert_eq!(t.class, "ERR");
        let d = diff_fields(&p.fields, &t.fields, &cfg());
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].path, "$");
        assert_eq!(d[0].production.as_deref(), Some("bulk alice"));
        assert_eq!(d[0].test.as_deref(), Some("error ERR nope"));
    }

    #[test]
    fn garbage_is_opaque_and_never_panics() {
        let ex = analyze(
            Protocol::Http,
            b"\x16\x03\x01\x00garbage",
            false,
            Some((b"x", false)),
            None,
            Some(&cfg()),
        );
        assert_eq!(ex.endpoint, None);
        // A request cut by the cap without a whole message is opaque, not an error.
        let ex = analyze(
            Protocol::Http,
            b"GET /a HTTP/1.1\r\nHo",
            true,
            None,
            None,
            None,
        );
        assert_eq!(ex.endpoint, None);
        // A response that is not HTTP is opaque; the request still counts.
        let ex = analyze(
            Protocol::Http,
            b"GET /a HTTP/1.1\r\n\r\n",
            false,
            None,
            Some((b"SSH-2.0\r\n", false)),
            None,
        );
        assert_eq!(ex.endpoint.as_deref(), Some("GET /a"));
        assert!(ex.response_opaque && ex.test.is_none());
    }

    proptest::proptest! {
        /// Any bytes, as any protocol, on either side: an exchange (maybe opaque), never a
        /// panic; a response compared with itself never differs.
        #[test]
        fn any_bytes_decode_without_panic(
            p in 0usize..3,
            req in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
            resp in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
            cut in proptest::prelude::any::<bool>(),
        ) {
            let protocol = Protocol::ALL[p];
            let mut request = match protocol {
                Protocol::Http => b"GET /a/1 HTTP/1.1\r\n\r\n".to_vec(),
                _ => b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n".to_vec(),
            };
            let prefix = match protocol {
                Protocol::Http => &b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n"[..],
                _ => &b""[..],
            };
            for r in [&req[..], &request.clone()[..]] {
                let resp = [prefix, &resp[..]].concat();
                let ex = analyze(protocol, r, cut, Some((&resp, cut)), Some((&resp, false)), Some(&cfg()));
                if let (Some(a), Some(b)) = (&ex.production, &ex.test) {
                    if !cut {
                        proptest::prop_assert!(diff_fields(&a.fields, &b.fields, &cfg()).is_empty());
                    }
                }
            }
            request.extend_from_slice(&req);
            let _ = analyze(protocol, &request, false, None, Some((&resp, true)), None);
        }
    }

    /// `n` Redis commands `SET k{i} v` / `GET k{i}` alternating, and their replies.
    fn redis_burst(n: usize) -> (Vec<u8>, Vec<u8>) {
        let (mut req, mut resp) = (Vec::new(), Vec::new());
        for i in 0..n {
            let k = format!("k{i}");
            if i % 2 == 0 {
                req.extend(
                    format!("*3\r\n$3\r\nSET\r\n${}\r\n{k}\r\n$1\r\nv\r\n", k.len()).bytes(),
                );
                resp.extend_from_slice(b"+OK\r\n");
            } else {
                req.extend(format!("*2\r\n$3\r\nGET\r\n${}\r\n{k}\r\n", k.len()).bytes());
                resp.extend(format!("${}\r\n{k}\r\n", k.len()).bytes());
            }
        }
        (req, resp)
    }

    #[test]
    fn a_redis_pipeline_counts_every_command_with_its_own_reply() {
        let (req, resp) = redis_burst(16);
        let burst = analyze_burst(
            Protocol::Redis,
            &req,
            false,
            Some((&resp, false)),
            Some((&resp, false)),
            Some(&cfg()),
        );
        assert_eq!(burst.len(), 16);
        let mut at = 0;
        for (i, p) in burst.iter().enumerate() {
            let ex = &p.exchange;
            let (ep, class) = if i % 2 == 0 {
                ("SET", "simple")
            } else {
                ("GET", "bulk")
            };
            assert_eq!(ex.endpoint.as_deref(), Some(ep), "request {i}");
            assert_eq!(ex.key.as_deref(), Some(format!("k{i}").as_str()));
            assert_eq!(ex.test.as_ref().unwrap().class, class);
            assert_eq!(p.test_at, Some(at));
            assert_eq!(p.production_at, Some(at));
            assert!(!ex.response_opaque);
            // Each reply is its own request's: the GET of k{i} answered k{i}.
            if i % 2 == 1 {
                let v = &ex.test.as_ref().unwrap().fields["$"];
                assert_eq!(v, &format!("bulk k{i}"));
            }
            // `+OK\r\n`, or `$len\r\nk{i}\r\n`.
            at += if i % 2 == 0 {
                5
            } else {
                6 + format!("k{i}").len() as u64
            };
        }
        // Replies after a RESP3 push still pair in order; a target that answered only half
        // leaves the rest missing, not opaque.
        let (req, resp) = redis_burst(4);
        let mut pushed = b">2\r\n+message\r\n+hi\r\n".to_vec();
        pushed.extend_from_slice(&resp[..5 + 8]);
        let burst = analyze_burst(
            Protocol::Redis,
            &req,
            false,
            None,
            Some((&pushed, false)),
            None,
        );
        let classes: Vec<_> = burst
            .iter()
            .map(|p| p.exchange.test.as_ref().map(|t| t.class.as_str()))
            .collect();
        assert_eq!(classes, [Some("simple"), Some("bulk"), None, None]);
        assert!(burst.iter().all(|p| !p.exchange.response_opaque));
    }

    #[test]
    fn pipelined_http_pairs_responses_in_order() {
        let req = b"GET /a/1 HTTP/1.1\r\nHost: x\r\n\r\nHEAD /b HTTP/1.1\r\nHost: x\r\n\r\n\
                    POST /c HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcGET /d HTTP/1.1\r\n\r\n";
        let resp = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi\
                     HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n\
                     HTTP/1.1 100 Continue\r\n\r\n\
                     HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n\
                     HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";
        let burst = analyze_burst(Protocol::Http, req, false, None, Some((resp, false)), None);
        let got: Vec<_> = burst
            .iter()
            .map(|p| {
                let t = p.exchange.test.as_ref().unwrap();
                (
                    p.exchange.endpoint.clone().unwrap(),
                    t.class.clone(),
                    t.error,
                )
            })
            .collect();
        let want = [
            ("GET /a/{id}", "200", false),
            ("HEAD /b", "200", false),
            ("POST /c", "201", false),
            ("GET /d", "404", true),
        ];
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(want) {
            assert_eq!((g.0.as_str(), g.1.as_str(), g.2), w);
        }
        // The HEAD response has no body although it names 99 bytes.
        let at_201 = resp.windows(12).position(|w| w == b"HTTP/1.1 201");
        assert_eq!(burst[2].test_at, at_201.map(|p| p as u64));
    }

    #[test]
    fn a_response_past_the_cap_is_classed_from_its_head() {
        let body = vec![b'x'; 1 << 20];
        let head = format!(
            "HTTP/1.1 503 Busy\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        let whole = [head.as_bytes(), &body].concat();
        // What stream mode holds: the first 64 KiB, and the knowledge that more came.
        let held = &whole[..64 << 10];
        let req = b"GET /big HTTP/1.1\r\n\r\nGET /next HTTP/1.1\r\n\r\n";
        let burst = analyze_burst(
            Protocol::Http,
            req,
            false,
            Some((held, true)),
            Some((held, true)),
            Some(&cfg()),
        );
        let ex = &burst[0].exchange;
        let t = ex.test.as_ref().expect("classed from its head");
        assert_eq!((t.class.as_str(), t.error), ("503", true));
        assert!(!ex.response_opaque);
        assert_eq!(t.fields["body_cut"], "true");
        assert!(diff_fields(&ex.production.as_ref().unwrap().fields, &t.fields, &cfg()).is_empty());
        // The next response is past the cap: not seen, counted opaque.
        assert!(burst[1].exchange.test.is_none() && burst[1].exchange.response_opaque);
        // A 1 MiB Redis value likewise.
        let mut v = format!("${}\r\n", body.len()).into_bytes();
        v.extend_from_slice(&body);
        v.extend_from_slice(b"\r\n");
        let ex = analyze(
            Protocol::Redis,
            b"GET big\r\n",
            false,
            None,
            Some((&v[..64 << 10], true)),
            Some(&cfg()),
        );
        assert_eq!(ex.test.map(|t| t.class), Some("bulk".to_string()));
        assert!(!ex.response_opaque);
        // Whole, it is a plain bulk reply with its first bytes kept.
        let ex = analyze(
            Protocol::Redis,
            b"GET big\r\n",
            false,
            None,
            Some((&v, false)),
            None,
        );
        assert_eq!(ex.test.map(|t| t.class), Some("bulk".to_string()));
    }

    #[test]
    fn arrival_is_the_read_that_brought_the_byte() {
        let marks = [(0u64, 10u32), (100, 20), (250, 30)];
        assert_eq!(arrival(&marks, 0), Some(10));
        assert_eq!(arrival(&marks, 99), Some(10));
        assert_eq!(arrival(&marks, 100), Some(20));
        assert_eq!(arrival(&marks, 10_000), Some(30));
        assert_eq!(arrival::<u32>(&[], 5), None);
        assert_eq!(arrival(&[(5u64, 1u8)], 4), None);
    }

    proptest::proptest! {
        /// A burst of n Redis commands, its replies cut anywhere: n exchanges; replies that
        /// are in the bytes pair with their own command, none pair out of order.
        #[test]
        fn pipelines_pair_in_order(n in 1usize..40, cut in 0usize..2000) {
            let (req, resp) = redis_burst(n);
            let cut = cut.min(resp.len());
            let burst = analyze_burst(Protocol::Redis, &req, false, None, Some((&resp[..cut], cut < resp.len())), None);
            proptest::prop_assert_eq!(burst.len(), n);
            let mut seen_missing = false;
            for (i, p) in burst.iter().enumerate() {
                match &p.exchange.test {
                    Some(t) => {
                        proptest::prop_assert!(!seen_missing);
                        proptest::prop_assert_eq!(t.class.as_str(), if i % 2 == 0 { "simple" } else { "bulk" });
                    }
                    None => seen_missing = true,
                }
            }
        }
    }

    /// Feeds a burst to a [`BurstDecoder`] as stream mode does: the request in `req_pieces`,
    /// then each side's responses in pieces, read `i` of the target at time `i`, production's
    /// at `1000 + i`; returns the burst and the offset of each read of the target.
    fn stream_burst(
        protocol: Protocol,
        req: &[u8],
        resp: &[u8],
        req_piece: usize,
        resp_pieces: &[usize],
        fields: Option<&FieldConfig>,
    ) -> (Vec<Pipelined>, Vec<(u64, u64)>) {
        let mut b = BurstDecoder::new(protocol);
        for c in req.chunks(req_piece.max(1)) {
            b.feed_request(c, fields);
        }
        let mut marks = Vec::new();
        let (mut at, mut i) = (0, 0);
        while at < resp.len() {
            let n = resp_pieces[i % resp_pieces.len()].clamp(1, resp.len() - at);
            marks.push((at as u64, i as u64));
            b.feed_test(&resp[at..at + n], i as u64, fields);
            b.feed_production(&resp[at..at + n], 1000 + i as u64, fields);
            at += n;
            i += 1;
        }
        (b.finish(false, false, false, fields), marks)
    }

    #[test]
    fn twenty_thousand_pipelined_commands_in_one_burst_are_counted_exactly() {
        // 20,000 SET/GET alternating: about 640 KiB of commands, ten times the old 64 KiB.
        let n = 20_000;
        let (req, resp) = redis_burst(n);
        assert!(req.len() > 8 * DIFF_CAP);
        let (burst, marks) = stream_burst(
            Protocol::Redis,
            &req,
            &resp,
            1448,
            &[1448, 7, 65536, 3000],
            Some(&cfg()),
        );
        assert_eq!(burst.len(), n);
        let mut at = 0u64;
        for (i, p) in burst.iter().enumerate() {
            let ex = &p.exchange;
            let k = format!("k{i}");
            assert_eq!(ex.key.as_deref(), Some(k.as_str()), "request {i}");
            assert!(!ex.response_opaque, "request {i}");
            let t = ex.test.as_ref().unwrap();
            if i % 2 == 0 {
                assert_eq!(
                    (ex.endpoint.as_deref(), t.class.as_str()),
                    (Some("SET"), "simple")
                );
            } else {
                assert_eq!(ex.endpoint.as_deref(), Some("GET"));
                // Its own reply: the GET of k{i} answered k{i}.
                assert_eq!(t.fields["$"], format!("bulk {k}"));
            }
            assert_eq!(ex.production, ex.test);
            assert_eq!(p.test_at, Some(at));
            // Timed by the read that brought its first byte.
            assert_eq!(p.test_time, arrival(&marks, at), "request {i}");
            assert_eq!(p.production_time, arrival(&marks, at).map(|t| t + 1000));
            at += if i % 2 == 0 { 5 } else { 6 + k.len() as u64 };
        }
        // The whole burst at once gives the same exchanges.
        let whole = analyze_burst(
            Protocol::Redis,
            &req,
            false,
            Some((&resp, false)),
            Some((&resp, false)),
            Some(&cfg()),
        );
        assert_eq!(whole.len(), n);
        assert!(whole
            .iter()
            .zip(&burst)
            .all(|(a, b)| a.exchange == b.exchange));
    }

    #[test]
    fn a_response_that_comes_before_its_request_is_decoded_waits_for_it() {
        // An HTTP server may answer before the request's body ends (413, 100-continue).
        let req = b"POST /up HTTP/1.1\r\nContent-Length: 5\r\n\r\nabcdeGET /n HTTP/1.1\r\n\r\n";
        let resp = b"HTTP/1.1 413 Too Large\r\nContent-Length: 0\r\n\r\n\
                     HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
        let mut b = BurstDecoder::new(Protocol::Http);
        b.feed_request(&req[..30], None);
        b.feed_test(&resp[..], 7, None);
        assert_eq!(b.requests(), 0);
        b.feed_request(&req[30..], None);
        assert_eq!(b.requests(), 2);
        let burst = b.finish(false, false, false, None);
        let got: Vec<_> = burst
            .iter()
            .map(|p| {
                (
                    p.exchange.test.as_ref().unwrap().class.as_str(),
                    p.test_time,
                )
            })
            .collect();
        assert_eq!(got, [("413", Some(7)), ("200", Some(7))]);
        // Responses with no request left are dropped, the pairs stay.
        let mut b = BurstDecoder::new(Protocol::Redis);
        b.feed_request(b"PING\r\n", None);
        b.feed_test(b"+PONG\r\n+EXTRA\r\n", 1, None);
        let burst = b.finish(false, false, false, None);
        assert_eq!(burst.len(), 1);
        assert_eq!(burst[0].exchange.test.as_ref().unwrap().class, "simple");
    }

    #[test]
    fn a_long_value_is_compared_by_its_first_bytes_and_a_hash() {
        let v = |c: u8| {
            let body = vec![c; 100_000];
            [format!("${}\r\n", body.len()).as_bytes(), &body, b"\r\n"].concat()
        };
        let changed = |at: usize| [&v(b'a')[..at], b"b", &v(b'a')[at + 1..]].concat();
        let a = v(b'a');
        // A change past the first bytes shown but within the cap is found (by the hash); one
        // past the cap is not, and the fields say the value was cut.
        let (b, c) = (changed(50_000), changed(99_000));
        for (other, same) in [(&a, true), (&b, false), (&c, true)] {
            let ex = analyze(
                Protocol::Redis,
                b"GET k\r\n",
                false,
                Some((&a, false)),
                Some((other, false)),
                Some(&cfg()),
            );
            let (p, t) = (ex.production.unwrap(), ex.test.unwrap());
            assert!(p.fields["$"].len() < 2 * FIELD_CAP);
            assert_eq!(p.fields["body_cut"], "true");
            assert_eq!(diff_fields(&p.fields, &t.fields, &cfg()).is_empty(), same);
        }
    }

    proptest::proptest! {
        /// A pipelined burst fed in pieces cut anywhere, on every side: the same exchanges as
        /// the burst decoded whole, each timed by the read that brought its response's first
        /// byte.
        #[test]
        fn split_points_anywhere_give_the_same_burst(
            n in 1usize..60,
            http in proptest::prelude::any::<bool>(),
            req_piece in 1usize..400,
            pieces in proptest::collection::vec(1usize..300, 1..8),
        ) {
            let (req, resp) = if http {
                let (mut q, mut r) = (Vec::new(), Vec::new());
                for i in 0..n {
                    q.extend(format!("GET /u/{i} HTTP/1.1\r\nHost: x\r\n\r\n").bytes());
                    let body = format!("{{\"id\":{i}}}");
                    r.extend(format!("HTTP/1.1 {} OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", 200 + i % 3, body.len()).bytes());
                }
                (q, r)
            } else {
                redis_burst(n)
            };
            let protocol = if http { Protocol::Http } else { Protocol::Redis };
            let (burst, marks) = stream_burst(protocol, &req, &resp, req_piece, &pieces, Some(&cfg()));
            let whole = analyze_burst(protocol, &req, false, Some((&resp, false)), Some((&resp, false)), Some(&cfg()));
            proptest::prop_assert_eq!(burst.len(), n);
            for (a, b) in whole.iter().zip(&burst) {
                proptest::prop_assert_eq!(&a.exchange, &b.exchange);
                proptest::prop_assert!(b.exchange.test.is_some());
                let at = b.test_at.unwrap();
                proptest::prop_assert_eq!(b.test_time, arrival(&marks, at));
            }
        }
    }

    #[test]
    fn covers_only_whole_segments() {
        assert!(covers("$.ts", "$.ts"));
        assert!(covers("$.meta", "$.meta.ts"));
        assert!(covers("$.list", "$.list[3]"));
        assert!(!covers("$.ts", "$.tsx"));
    }
}
