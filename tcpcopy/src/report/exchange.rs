//! One request and its responses (production's, the target's) decoded with the library's
//! protocol decoders: the endpoint the report groups by, each response's class, and, for the
//! protocol-aware `--diff`, each response as named fields (`status`, `header:content-type`,
//! `$.user.id`, Redis `$[2]`) that two responses are compared by.
//!
//! Pure: bytes in, values out. Runs in the session task (outside the collector's lock). A
//! request or response the decoder cannot read makes the exchange *opaque*: counted, never an
//! error of the run.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use tcpclone::decode::{redis, Decoder, Detail, Direction, Limits, Message, Protocol, Summary};

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

/// Decodes one exchange. `request` holds the request bytes (`request_cut`: more were sent than
/// it holds); the responses likewise. `fields`: also split the responses into fields.
pub fn analyze(
    protocol: Protocol,
    request: &[u8],
    request_cut: bool,
    production: Option<(&[u8], bool)>,
    test: Option<(&[u8], bool)>,
    fields: Option<&FieldConfig>,
) -> Exchange {
    let limits = Limits::default();
    let mut ex = Exchange {
        protocol: protocol.name(),
        ..Default::default()
    };
    let mut req = protocol.decoder(Direction::Request, limits);
    let mut prod_dec = protocol.decoder(Direction::Response, limits);
    let mut test_dec = protocol.decoder(Direction::Response, limits);
    req.feed(request);
    let described = first_message(req.as_mut(), !request_cut, |m| {
        let described = describe_request(m);
        prod_dec.note_request(m);
        test_dec.note_request(m);
        described
    });
    let Some((endpoint, key)) = described else {
        return ex;
    };
    ex.endpoint = Some(endpoint);
    ex.key = key;
    let mut one = |dec: &mut Box<dyn Decoder + Send>, side: Option<(&[u8], bool)>| {
        let (bytes, cut) = side?;
        if bytes.is_empty() {
            return None;
        }
        dec.feed(bytes);
        let r = first_message(dec.as_mut(), !cut, |m| decode_response(m, fields));
        if r.is_none() {
            ex.response_opaque = true;
        }
        r
    };
    let p = one(&mut prod_dec, production);
    let t = one(&mut test_dec, test);
    ex.production = p;
    ex.test = t;
    ex
}

/// The first message of a stream, mapped by `f`; `None` when there is none or the stream is
/// not this protocol. `complete`: the bytes fed are the whole stream (finish may end a message
/// that runs until close).
fn first_message<T>(
    dec: &mut dyn Decoder,
    complete: bool,
    f: impl FnOnce(&Message<'_>) -> Option<T>,
) -> Option<T> {
    match dec.poll_message() {
        Ok(Some(m)) => return f(&m),
        Ok(None) => {}
        Err(_) => return None,
    }
    if !complete {
        return None;
    }
    dec.finish();
    match dec.poll_message() {
        Ok(Some(m)) => f(&m),
        _ => None,
    }
}

fn describe_request(m: &Message<'_>) -> Option<(String, Option<String>)> {
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

fn decode_response(m: &Message<'_>, cfg: Option<&FieldConfig>) -> Option<DecodedResponse> {
    let Summary::Response(class) = m.summary else {
        return None;
    };
    let label = match class {
        tcpclone::decode::ResponseClass::Http { status } => status.to_string(),
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
                && !m.body_truncated();
            match parsed
                .then(|| serde_json::from_slice::<serde_json::Value>(m.body).ok())
                .flatten()
            {
                Some(v) => flatten_json(&v, "$".to_string(), f),
                None if m.body_len > 0 => {
                    f.insert("body".into(), lossy(m.body, usize::MAX));
                    if m.body_truncated() {
                        f.insert("body_len".into(), m.body_len.to_string());
                    }
                }
                None => {}
            }
        }
        _ => match redis::Value::parse(m.body, Limits::default().max_depth) {
            Ok(v) => flatten_redis(&v, "$".to_string(), f),
            Err(_) => {
                f.insert("$".into(), lossy(m.body, usize::MAX));
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
        out.insert(path.clone(), format!("{kind} {}", lossy(b, usize::MAX)));
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

    #[test]
    fn covers_only_whole_segments() {
        assert!(covers("$.ts", "$.ts"));
        assert!(covers("$.meta", "$.meta.ts"));
        assert!(covers("$.list", "$.list[3]"));
        assert!(!covers("$.ts", "$.tsx"));
    }
}
