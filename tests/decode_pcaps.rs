//! The protocol decoders against real traffic: the committed captures under `pcaps/` (curl
//! against nginx, redis-cli and redis-benchmark against redis-server; see `pcaps/README.md`).
//!
//! Each capture is read with the library's capture reader, every TCP connection's two byte
//! streams are reassembled by sequence number (`tcpclone::wire` views), and each stream is
//! decoded whole and in the captured segments: every byte must belong to a decoded message and
//! nothing may be opaque.

use std::collections::BTreeMap;
use std::path::PathBuf;

use tcpclone::capture::{CaptureReader, PacketSource};
use tcpclone::decode::{decode_pieces, Direction, Limits, OwnedMessage, Protocol};
use tcpclone::flow::FlowKey;
use tcpclone::wire::{parse_layout, TcpFlags};

/// One direction of one connection: payload placed by sequence number, and the segments as
/// they were captured (offsets into the stream).
#[derive(Default)]
struct Stream {
    isn: Option<u32>,
    data: Vec<u8>,
    segments: Vec<(usize, usize)>,
    fin: bool,
}

/// Client-to-server and server-to-client streams of every connection, by client-side flow key.
fn reassemble(name: &str, server_port: u16) -> BTreeMap<FlowKey, (Stream, Stream)> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("pcaps")
        .join(name);
    let mut rd = CaptureReader::open(&path).expect("open capture");
    let mut conns: BTreeMap<FlowKey, (Stream, Stream)> = BTreeMap::new();
    while let Some(p) = rd.next_packet().expect("read capture") {
        let Ok(layout) = parse_layout(p.linktype, p.data) else {
            continue;
        };
        let (Some(tcp), Some(key)) = (layout.tcp(p.data), layout.flow_key(p.data)) else {
            continue;
        };
        let to_server = key.dst.port() == server_port;
        let ckey = if to_server { key } else { key.reversed() };
        let (c, s) = conns.entry(ckey).or_default();
        let st = if to_server { c } else { s };
        let flags = tcp.flags();
        let seq = tcp.seq().value();
        if flags.contains(TcpFlags::SYN) {
            st.isn = Some(seq);
            continue;
        }
        // Connections already open when the capture started are not in these files.
        let isn = st.isn.expect("capture starts each connection with its SYN");
        let payload = tcp.payload();
        if flags.contains(TcpFlags::FIN) {
            st.fin = true;
        }
        if payload.is_empty() {
            continue;
        }
        let off = seq.wrapping_sub(isn).wrapping_sub(1) as usize;
        let end = off + payload.len();
        if st.data.len() < end {
            st.data.resize(end, 0);
        }
        st.data[off..end].copy_from_slice(payload);
        st.segments.push((off, end));
    }
    conns
}

/// Decodes one stream whole and in its captured segments (in capture order, retransmissions
/// and overlaps cut away); both must give the same messages, covering every byte.
fn decode_stream(
    protocol: Protocol,
    dir: Direction,
    st: &Stream,
    requests: &[OwnedMessage],
    note: &dyn Fn(&mut dyn tcpclone::decode::Decoder, &[OwnedMessage]),
) -> Vec<OwnedMessage> {
    let run = |pieces: Vec<&[u8]>| {
        let mut d = protocol.decoder(dir, Limits::default());
        note(d.as_mut(), requests);
        let (msgs, err) = decode_pieces(d.as_mut(), pieces);
        assert_eq!(err, None, "{protocol} {dir:?} stream became opaque");
        assert!(!d.is_opaque());
        msgs
    };
    let whole = run(vec![&st.data]);
    let mut at = 0;
    let mut pieces = Vec::new();
    for &(a, b) in &st.segments {
        if b > at {
            pieces.push(&st.data[a.max(at)..b]);
            at = b;
        }
    }
    assert_eq!(at, st.data.len(), "a hole in the captured stream");
    let split = run(pieces);
    assert_eq!(split, whole, "segment-wise and whole decoding differ");
    assert_eq!(
        whole.iter().map(|m| m.wire_len).sum::<u64>(),
        st.data.len() as u64,
        "bytes outside any message"
    );
    whole
}

/// Decodes every HTTP connection of a capture; (endpoint, status, body length) per exchange.
fn http_exchanges(name: &str) -> Vec<(String, String, u64)> {
    let conns = reassemble(name, 80);
    assert!(!conns.is_empty());
    let mut out = Vec::new();
    for (key, (c, s)) in &conns {
        assert!(c.fin || s.fin, "{key:?}: capture holds whole connections");
        let reqs = decode_stream(Protocol::Http, Direction::Request, c, &[], &|_, _| {});
        // The response decoder learns each request's method from the request stream.
        let note = |d: &mut dyn tcpclone::decode::Decoder, _: &[OwnedMessage]| {
            let mut r = Protocol::Http.decoder(Direction::Request, Limits::default());
            r.feed(&c.data);
            while let Ok(Some(m)) = r.poll_message() {
                d.note_request(&m);
            }
        };
        let resps = decode_stream(Protocol::Http, Direction::Response, s, &reqs, &note);
        assert_eq!(reqs.len(), resps.len(), "{key:?}: one response per request");
        for (q, r) in reqs.iter().zip(&resps) {
            out.push((q.summary.clone(), r.summary.clone(), r.body_len));
        }
    }
    out
}

fn count(ex: &[(String, String, u64)], pred: impl Fn(&(String, String, u64)) -> bool) -> usize {
    ex.iter().filter(|e| pred(e)).count()
}

#[test]
fn http_keepalive_capture_decodes() {
    let ex = http_exchanges("http_keepalive.pcap");
    assert_eq!(ex.len(), 6, "{ex:?}");
    assert!(
        ex.iter().all(|(q, _, _)| q.starts_with("req GET /")),
        "{ex:?}"
    );
    // The 48 KB file, sent in TSO super-frames, arrives whole.
    assert!(
        ex.iter()
            .any(|(q, _, n)| q == "req GET /big.bin" && *n == 49152),
        "{ex:?}"
    );
    assert!(
        ex.iter()
            .any(|(q, _, n)| q == "req GET /mid.txt" && *n == 1500),
        "{ex:?}"
    );
    assert_eq!(count(&ex, |(_, r, _)| r.ends_with(" 4xx")), 1, "{ex:?}");
    assert_eq!(count(&ex, |(_, r, _)| r.ends_with(" 2xx")), 5, "{ex:?}");
}

#[test]
fn http_close_capture_decodes() {
    let ex = http_exchanges("http_close.pcap");
    assert_eq!(ex.len(), 10, "{ex:?}");
    assert!(ex.iter().all(|(_, r, _)| r.ends_with(" 2xx")), "{ex:?}");
}

#[test]
fn http_ipv6_and_cooked_and_vlan_captures_decode() {
    let v6 = http_exchanges("http_ipv6.pcap");
    assert_eq!(v6.len(), 3, "{v6:?}");
    assert!(v6.iter().any(|(_, _, n)| *n == 49152), "{v6:?}");
    assert_eq!(http_exchanges("http_sll2.pcap").len(), 3);
    assert_eq!(http_exchanges("http_sll.pcap").len(), 3);
    assert_eq!(
        http_exchanges("http_vlan.pcap"),
        http_exchanges("http_keepalive.pcap")
    );
}

#[test]
fn redis_capture_decodes() {
    let conns = reassemble("redis.pcap", 6379);
    let mut commands: BTreeMap<String, usize> = BTreeMap::new();
    let mut classes: BTreeMap<String, usize> = BTreeMap::new();
    for (key, (c, s)) in &conns {
        let cmds = decode_stream(Protocol::Redis, Direction::Request, c, &[], &|_, _| {});
        let replies = decode_stream(Protocol::Redis, Direction::Response, s, &[], &|_, _| {});
        assert_eq!(cmds.len(), replies.len(), "{key:?}: one reply per command");
        for m in &cmds {
            *commands.entry(m.summary.clone()).or_default() += 1;
        }
        for m in &replies {
            let class = m.summary.rsplit(' ').next().unwrap().to_string();
            *classes.entry(class).or_default() += 1;
        }
    }
    // redis-cli PING and SET, redis-benchmark -n 200 -t set,get.
    assert!(commands["req PING"] >= 1, "{commands:?}");
    assert_eq!(commands["req SET"], 201, "{commands:?}");
    assert_eq!(commands["req GET"], 200, "{commands:?}");
    assert!(classes["simple"] >= 202, "{classes:?}");
    assert_eq!(classes["bulk"], 200, "{classes:?}");
}

#[test]
fn http_framing_capture_decodes() {
    // pcaps/make_decode.sh: curl --next on nginx: HEAD, 304, gzip in chunked coding, chunked and
    // Content-Length request bodies, 500, 404.
    let conns = reassemble("decode_http.pcap", 80);
    let (mut reqs, mut resps) = (Vec::new(), Vec::new());
    for (c, s) in conns.values() {
        let q = decode_stream(Protocol::Http, Direction::Request, c, &[], &|_, _| {});
        let note = |d: &mut dyn tcpclone::decode::Decoder, _: &[OwnedMessage]| {
            let mut r = Protocol::Http.decoder(Direction::Request, Limits::default());
            r.feed(&c.data);
            while let Ok(Some(m)) = r.poll_message() {
                d.note_request(&m);
            }
        };
        let r = decode_stream(Protocol::Http, Direction::Response, s, &q, &note);
        assert_eq!(q.len(), r.len());
        reqs.extend(q);
        resps.extend(r);
    }
    let got: Vec<(&str, u64, &str)> = reqs
        .iter()
        .zip(&resps)
        .map(|(q, r)| {
            (
                &q.summary[..],
                q.body_len,
                r.summary.rsplit(' ').next().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("req HEAD /", 0, "2xx"),
            ("req GET /index.html", 0, "3xx"),
            ("req GET /mid.txt", 0, "2xx"),
            ("req POST /users/{id}/orders/{id}", 2000, "2xx"),
            ("req POST /users/{id}", 8, "2xx"),
            ("req GET /fail", 0, "5xx"),
            ("req GET /nothere", 0, "4xx"),
            ("req GET /", 0, "2xx"),
        ]
    );
    // The chunked upload de-chunked: curl's 2000 'z'.
    assert_eq!(reqs[3].body, vec![b'z'; 2000]);
    assert_eq!(reqs[4].body, b"name=ann");
    // HEAD and 304: no body although HEAD's Content-Length says otherwise.
    assert_eq!((resps[0].body_len, resps[1].body_len), (0, 0));
    // gzip bodies in chunked coding come out whole: the gzip magic, then more than the chunk
    // framing would leave.
    for i in [2, 6, 7] {
        assert!(resps[i].body.starts_with(&[0x1f, 0x8b]), "{:?}", resps[i]);
        assert!(resps[i].wire_len > resps[i].body_len + 10);
    }
    assert!(resps[5].body.starts_with(b"<html>"));
}

#[test]
fn redis_resp3_capture_decodes() {
    // pcaps/make_decode.sh: redis-cli -3, HELLO 3 then one command per connection.
    let conns = reassemble("decode_redis3.pcap", 6379);
    let mut got = Vec::new();
    for (c, s) in conns.values() {
        let cmds = decode_stream(Protocol::Redis, Direction::Request, c, &[], &|_, _| {});
        let replies = decode_stream(Protocol::Redis, Direction::Response, s, &[], &|_, _| {});
        assert_eq!(cmds.len(), 2);
        assert_eq!(replies.len(), 2);
        assert_eq!(cmds[0].summary, "req HELLO");
        assert!(replies[0].summary.ends_with(" map"), "{:?}", replies[0]);
        let class = replies[1].summary.rsplit(' ').next().unwrap().to_string();
        got.push((cmds[1].summary.clone(), class));
    }
    // Sorted: which connection came first says nothing about the decoder.
    got.sort();
    let want = [
        ("req EXISTS", "integer"),
        ("req GET", "bulk"),
        ("req GET", "null"),
        ("req HGET", "ERR"),
        ("req HGETALL", "map"),
        ("req HSET", "integer"),
        ("req LPUSH", "WRONGTYPE"),
        ("req SADD", "integer"),
        ("req SET", "simple"),
        ("req SMEMBERS", "set"),
        ("req ZADD", "integer"),
        ("req ZSCORE", "double"),
    ];
    let got: Vec<(&str, &str)> = got.iter().map(|(a, b)| (&a[..], &b[..])).collect();
    assert_eq!(got, want);
}
