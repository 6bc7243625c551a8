//! Property tests of the protocol decoders (`tcpclone::decode`): a generated sequence of messages,
//! encoded and fed in pieces split anywhere, decodes to the messages generated — the same ones
//! whatever the split.

use proptest::prelude::*;
use tcpclone::decode::{decode_pieces, Decoder, Direction, Limits, OwnedMessage, Protocol};

/// Cuts `data` at the given points (taken modulo its length, sorted).
fn pieces<'a>(data: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut at: Vec<usize> = cuts.iter().map(|c| c % (data.len() + 1)).collect();
    at.sort_unstable();
    let mut out = Vec::new();
    let mut prev = 0;
    for c in at {
        out.push(&data[prev..c]);
        prev = c;
    }
    out.push(&data[prev..]);
    out
}

fn decode(dec: &mut dyn Decoder, parts: Vec<&[u8]>) -> Vec<OwnedMessage> {
    let (msgs, err) = decode_pieces(dec, parts);
    assert_eq!(err, None);
    msgs
}

// ---- HTTP ----

#[derive(Debug, Clone)]
enum Framing {
    None,
    Length,
    Chunked(Vec<usize>, bool),
}

fn segment() -> impl Strategy<Value = (String, bool)> {
    prop_oneof![
        "[a-z]{1,8}".prop_map(|s| (s, false)),
        (0u64..10_000_000).prop_map(|n| (n.to_string(), true)),
        any::<u128>().prop_map(|u| {
            let h = format!("{u:032x}");
            (
                format!(
                    "{}-{}-{}-{}-{}",
                    &h[..8],
                    &h[8..12],
                    &h[12..16],
                    &h[16..20],
                    &h[20..]
                ),
                true,
            )
        }),
    ]
}

fn framing() -> impl Strategy<Value = Framing> {
    prop_oneof![
        Just(Framing::None),
        Just(Framing::Length),
        (prop::collection::vec(1usize..40, 0..4), any::<bool>())
            .prop_map(|(c, t)| Framing::Chunked(c, t)),
    ]
}

/// Encodes a body with `framing`; returns the header lines and the framed body.
fn frame_body(body: &[u8], framing: &Framing) -> (String, Vec<u8>) {
    match framing {
        Framing::None => (String::new(), Vec::new()),
        Framing::Length => (format!("Content-Length: {}\r\n", body.len()), body.to_vec()),
        Framing::Chunked(sizes, trailer) => {
            let mut out = Vec::new();
            let mut rest = body;
            for &s in sizes.iter().chain(std::iter::once(&usize::MAX)) {
                if rest.is_empty() {
                    break;
                }
                let n = s.min(rest.len());
                out.extend_from_slice(format!("{n:x}\r\n").as_bytes());
                out.extend_from_slice(&rest[..n]);
                out.extend_from_slice(b"\r\n");
                rest = &rest[n..];
            }
            out.extend_from_slice(b"0\r\n");
            if *trailer {
                out.extend_from_slice(b"X-Checksum: 1\r\n");
            }
            out.extend_from_slice(b"\r\n");
            ("Transfer-Encoding: chunked\r\n".to_string(), out)
        }
    }
}

#[derive(Debug, Clone)]
struct Req {
    method: &'static str,
    segs: Vec<(String, bool)>,
    query: bool,
    body: Vec<u8>,
    framing: Framing,
}

fn req() -> impl Strategy<Value = Req> {
    (
        prop::sample::select(vec!["GET", "POST", "PUT", "DELETE", "HEAD", "PATCH"]),
        prop::collection::vec(segment(), 0..4),
        any::<bool>(),
        prop::collection::vec(any::<u8>(), 0..60),
        framing(),
    )
        .prop_map(|(method, segs, query, body, framing)| Req {
            method,
            segs,
            query,
            body,
            framing,
        })
}

impl Req {
    fn encode(&self, out: &mut Vec<u8>) {
        let path: String = self.segs.iter().map(|(s, _)| format!("/{s}")).collect();
        let path = if path.is_empty() { "/".into() } else { path };
        let q = if self.query { "?a=1&b=%20" } else { "" };
        let (hdr, body) = frame_body(&self.body, &self.framing);
        out.extend_from_slice(
            format!("{} {path}{q} HTTP/1.1\r\nHost: h\r\n{hdr}\r\n", self.method).as_bytes(),
        );
        out.extend_from_slice(&body);
    }

    fn endpoint(&self) -> String {
        let path: String = self
            .segs
            .iter()
            .map(|(s, id)| {
                if *id {
                    "/{id}".to_string()
                } else {
                    format!("/{s}")
                }
            })
            .collect();
        format!(
            "req {} {}",
            self.method,
            if path.is_empty() { "/" } else { &path }
        )
    }

    fn sent_body(&self) -> &[u8] {
        match self.framing {
            Framing::None => b"",
            _ => &self.body,
        }
    }
}

#[derive(Debug, Clone)]
struct Resp {
    status: u16,
    body: Vec<u8>,
    framing: Framing,
}

fn resp() -> impl Strategy<Value = Resp> {
    (
        prop::sample::select(vec![200u16, 201, 204, 301, 304, 404, 500, 503]),
        prop::collection::vec(any::<u8>(), 0..60),
        framing(),
    )
        .prop_map(|(status, body, framing)| Resp {
            status,
            body,
            // A response without a length ends at close: only the last one may (see below).
            framing: match framing {
                Framing::None => Framing::Length,
                f => f,
            },
        })
}

impl Resp {
    fn has_body(&self, method: &str) -> bool {
        method != "HEAD" && self.status != 204 && self.status != 304
    }

    fn encode(&self, method: &str, last: bool, out: &mut Vec<u8>) {
        let (hdr, body) = if !self.has_body(method) {
            (String::new(), Vec::new())
        } else if last && self.body.len() % 3 == 0 {
            // Until close: no length at all.
            (String::new(), self.body.clone())
        } else {
            frame_body(&self.body, &self.framing)
        };
        out.extend_from_slice(format!("HTTP/1.1 {} X\r\n{hdr}\r\n", self.status).as_bytes());
        out.extend_from_slice(&body);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn http_conversation_decodes_whatever_the_split(
        pairs in prop::collection::vec((req(), resp()), 1..6),
        cuts_c in prop::collection::vec(any::<usize>(), 0..12),
        cuts_s in prop::collection::vec(any::<usize>(), 0..12),
    ) {
        let mut client = Vec::new();
        let mut server = Vec::new();
        for (i, (q, r)) in pairs.iter().enumerate() {
            q.encode(&mut client);
            r.encode(q.method, i + 1 == pairs.len(), &mut server);
        }
        let limits = Limits::default();
        let mut reqs = Protocol::Http.decoder(Direction::Request, limits);
        let mut resps = Protocol::Http.decoder(Direction::Response, limits);
        // Requests reach the response decoder as the report's caller would pass them.
        reqs.feed(&client);
        reqs.finish();
        while let Some(m) = reqs.poll_message().unwrap() {
            resps.note_request(&m);
        }
        let whole = decode(resps.as_mut(), vec![&server]);

        let mut reqs2 = Protocol::Http.decoder(Direction::Request, limits);
        let got = decode(reqs2.as_mut(), pieces(&client, &cuts_c));
        let want: Vec<(String, &[u8])> = pairs.iter().map(|(q, _)| (q.endpoint(), q.sent_body())).collect();
        let got_pairs: Vec<(String, &[u8])> = got.iter().map(|m| (m.summary.clone(), &m.body[..])).collect();
        prop_assert_eq!(got_pairs, want);
        prop_assert_eq!(got.iter().map(|m| m.wire_len).sum::<u64>(), client.len() as u64);

        let mut resps2 = Protocol::Http.decoder(Direction::Response, limits);
        for (q, _) in &pairs {
            let mut r = Protocol::Http.decoder(Direction::Request, limits);
            let mut one = Vec::new();
            q.encode(&mut one);
            r.feed(&one);
            let m = r.poll_message().unwrap().unwrap();
            resps2.note_request(&m);
        }
        let split = decode(resps2.as_mut(), pieces(&server, &cuts_s));
        prop_assert_eq!(&split, &whole);
        prop_assert_eq!(split.len(), pairs.len());
        for ((q, r), m) in pairs.iter().zip(&split) {
            prop_assert!(m.summary.contains(&format!("status: {} }}", r.status)), "{}", m.summary);
            let want: &[u8] = if r.has_body(q.method) { &r.body } else { b"" };
            prop_assert_eq!(&m.body[..], want);
        }
    }
}

// ---- Redis ----

#[derive(Debug, Clone)]
enum Resp3 {
    Simple(String),
    Error(String, String),
    Int(i64),
    Bulk(Vec<u8>),
    Null,
    Bool(bool),
    Double(f64),
    Big(String),
    Verbatim(String),
    BlobError(String),
    Array(Vec<Resp3>),
    Set(Vec<Resp3>),
    Push(Vec<Resp3>),
    Map(Vec<(Resp3, Resp3)>),
    Attr(Vec<(Resp3, Resp3)>, Box<Resp3>),
}

fn resp3() -> impl Strategy<Value = Resp3> {
    let leaf = prop_oneof![
        "[a-zA-Z ]{0,12}".prop_map(Resp3::Simple),
        ("[A-Z]{2,9}", "[a-z ]{0,12}").prop_map(|(p, m)| Resp3::Error(p, m)),
        any::<i64>().prop_map(|i| Resp3::Int(i / 2)),
        prop::collection::vec(any::<u8>(), 0..30).prop_map(Resp3::Bulk),
        Just(Resp3::Null),
        any::<bool>().prop_map(Resp3::Bool),
        (-1e9f64..1e9).prop_map(Resp3::Double),
        "-?[1-9][0-9]{0,40}".prop_map(Resp3::Big),
        "[a-z ]{0,12}".prop_map(Resp3::Verbatim),
        "[A-Z]{2,9}".prop_map(Resp3::BlobError),
    ];
    leaf.prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Resp3::Array),
            prop::collection::vec(inner.clone(), 0..4).prop_map(Resp3::Set),
            prop::collection::vec(inner.clone(), 1..4).prop_map(Resp3::Push),
            prop::collection::vec((inner.clone(), inner.clone()), 0..3).prop_map(Resp3::Map),
            (
                prop::collection::vec((inner.clone(), inner.clone()), 1..2),
                inner
            )
                .prop_map(|(a, v)| Resp3::Attr(a, Box::new(v))),
        ]
    })
}

impl Resp3 {
    fn encode(&self, out: &mut Vec<u8>) {
        let mut w = |s: String| out.extend_from_slice(s.as_bytes());
        match self {
            Resp3::Simple(s) => w(format!("+{s}\r\n")),
            Resp3::Error(p, m) => w(format!("-{p} {m}\r\n")),
            Resp3::Int(i) => w(format!(":{i}\r\n")),
            Resp3::Bulk(b) => {
                w(format!("${}\r\n", b.len()));
                out.extend_from_slice(b);
                out.extend_from_slice(b"\r\n");
            }
            Resp3::Null => w("_\r\n".into()),
            Resp3::Bool(b) => w(format!("#{}\r\n", if *b { 't' } else { 'f' })),
            Resp3::Double(d) => w(format!(",{d}\r\n")),
            Resp3::Big(b) => w(format!("({b}\r\n")),
            Resp3::Verbatim(s) => w(format!("={}\r\ntxt:{s}\r\n", s.len() + 4)),
            Resp3::BlobError(p) => w(format!("!{}\r\n{p} x\r\n", p.len() + 2)),
            Resp3::Array(v) | Resp3::Set(v) | Resp3::Push(v) => {
                let t = match self {
                    Resp3::Array(_) => '*',
                    Resp3::Set(_) => '~',
                    _ => '>',
                };
                w(format!("{t}{}\r\n", v.len()));
                for x in v {
                    x.encode(out);
                }
            }
            Resp3::Map(kv) | Resp3::Attr(kv, _) => {
                let t = if matches!(self, Resp3::Map(_)) {
                    '%'
                } else {
                    '|'
                };
                w(format!("{t}{}\r\n", kv.len()));
                for (k, v) in kv {
                    k.encode(out);
                    v.encode(out);
                }
                if let Resp3::Attr(_, v) = self {
                    v.encode(out);
                }
            }
        }
    }

    /// The class label the report shows for this reply.
    fn class(&self) -> String {
        match self {
            Resp3::Simple(_) => "simple".into(),
            Resp3::Error(p, _) => p.clone(),
            Resp3::Int(_) => "integer".into(),
            Resp3::Bulk(_) => "bulk".into(),
            Resp3::Null => "null".into(),
            Resp3::Bool(_) => "boolean".into(),
            Resp3::Double(_) => "double".into(),
            Resp3::Big(_) => "bignumber".into(),
            Resp3::Verbatim(_) => "verbatim".into(),
            Resp3::BlobError(p) => p.clone(),
            Resp3::Array(_) => "array".into(),
            Resp3::Set(_) => "set".into(),
            Resp3::Push(_) => "push".into(),
            Resp3::Map(_) => "map".into(),
            Resp3::Attr(_, v) => v.class(),
        }
    }
}

fn command() -> impl Strategy<Value = (bool, Vec<Vec<u8>>)> {
    (
        any::<bool>(),
        "[a-zA-Z]{1,10}",
        prop::collection::vec(prop::collection::vec(any::<u8>(), 0..20), 0..4),
    )
        .prop_map(|(inline, name, mut args)| {
            if inline {
                // Inline arguments are words: no whitespace or line ends inside.
                for a in &mut args {
                    a.retain(|c| !c.is_ascii_whitespace());
                    if a.is_empty() {
                        a.push(b'x');
                    }
                }
            }
            args.insert(0, name.into_bytes());
            (inline, args)
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn redis_replies_decode_whatever_the_split(
        values in prop::collection::vec(resp3(), 1..8),
        cuts in prop::collection::vec(any::<usize>(), 0..16),
    ) {
        let mut data = Vec::new();
        let mut bounds = Vec::new();
        for v in &values {
            let s = data.len();
            v.encode(&mut data);
            bounds.push(s..data.len());
        }
        let limits = Limits::default();
        let whole = decode(Protocol::Redis.decoder(Direction::Response, limits).as_mut(), vec![&data]);
        let split = decode(Protocol::Redis.decoder(Direction::Response, limits).as_mut(), pieces(&data, &cuts));
        prop_assert_eq!(&split, &whole);
        prop_assert_eq!(split.len(), values.len());
        for ((m, v), b) in split.iter().zip(&values).zip(&bounds) {
            prop_assert_eq!(m.summary.rsplit(' ').next().unwrap(), v.class());
            prop_assert_eq!(&m.body[..], &data[b.clone()]);
            prop_assert!(tcpclone::decode::redis::Value::parse(&m.body, 32).is_ok());
        }
    }

    #[test]
    fn redis_commands_decode_whatever_the_split(
        cmds in prop::collection::vec(command(), 1..8),
        cuts in prop::collection::vec(any::<usize>(), 0..16),
    ) {
        let mut data = Vec::new();
        for (inline, args) in &cmds {
            if *inline {
                for (i, a) in args.iter().enumerate() {
                    if i > 0 {
                        data.push(b' ');
                    }
                    data.extend_from_slice(a);
                }
                data.extend_from_slice(b"\r\n");
            } else {
                data.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
                for a in args {
                    data.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
                    data.extend_from_slice(a);
                    data.extend_from_slice(b"\r\n");
                }
            }
        }
        let limits = Limits::default();
        let whole = decode(Protocol::Redis.decoder(Direction::Request, limits).as_mut(), vec![&data]);
        let split = decode(Protocol::Redis.decoder(Direction::Request, limits).as_mut(), pieces(&data, &cuts));
        prop_assert_eq!(&split, &whole);
        let want: Vec<String> = cmds
            .iter()
            .map(|(_, a)| format!("req {}", String::from_utf8_lossy(&a[0]).to_ascii_uppercase()))
            .collect();
        let got: Vec<String> = split.iter().map(|m| m.summary.clone()).collect();
        prop_assert_eq!(got, want);
        prop_assert_eq!(split.iter().map(|m| m.wire_len).sum::<u64>(), data.len() as u64);
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_split_the_same(
        data in prop::collection::vec(any::<u8>(), 0..300),
    ) {
        for p in [Protocol::Http, Protocol::Redis, Protocol::Tcp] {
            for d in [Direction::Request, Direction::Response] {
                tcpclone::fuzz::decode(p, d, &data);
            }
        }
    }
}
