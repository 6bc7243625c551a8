use super::*;
use crate::decode::{decode_pieces, OwnedMessage};

fn limits() -> Limits {
    Limits::default()
}

/// Decodes `data` fed whole and at every split point into two pieces; all must agree.
fn decode_all_splits(dir: Direction, data: &[u8], methods: &[&str]) -> Vec<OwnedMessage> {
    let run = |pieces: Vec<&[u8]>| {
        let mut d = HttpDecoder::new(dir, limits());
        for m in methods {
            let head = format!("{m} / HTTP/1.1\r\n\r\n");
            let mut r = HttpDecoder::new(Direction::Request, limits());
            r.feed(head.as_bytes());
            let msg = r.poll_message().unwrap().unwrap();
            d.note_request(&msg);
        }
        let (msgs, err) = decode_pieces(&mut d, pieces);
        assert_eq!(err, None, "{}", String::from_utf8_lossy(data));
        msgs
    };
    let whole = run(vec![data]);
    for cut in 0..=data.len() {
        let (a, b) = data.split_at(cut);
        assert_eq!(run(vec![a, b]), whole, "split at {cut}");
    }
    let bytes: Vec<&[u8]> = data.chunks(1).collect();
    assert_eq!(run(bytes), whole, "byte by byte");
    whole
}

fn tpl(target: &str) -> String {
    let mut s = String::from("junk");
    path_template(target, &mut s);
    s
}

#[test]
fn templates_fold_ids_and_drop_queries() {
    assert_eq!(tpl("/users/42"), "/users/{id}");
    assert_eq!(tpl("/users/42/orders/7?x=1"), "/users/{id}/orders/{id}");
    assert_eq!(
        tpl("/o/123e4567-e89b-12d3-a456-426614174000/x"),
        "/o/{id}/x"
    );
    assert_eq!(
        tpl("/commit/9fceb02d0ae598e95dc970b74767f19372d61af8"),
        "/commit/{id}"
    );
    assert_eq!(tpl("/obj/5f8d0d55b54764421b7156c3"), "/obj/{id}");
    assert_eq!(tpl("/t/dGhpcyBpcyBhIHRva2VuMTIz"), "/t/{id}");
    // Words stay words, short hex-looking names too.
    assert_eq!(tpl("/api/v1/feedbacked/cafe"), "/api/v1/feedbacked/cafe");
    assert_eq!(tpl("/deadbeefdeadbeefdead"), "/deadbeefdeadbeefdead");
    assert_eq!(tpl("/static/app.js#top"), "/static/app.js");
    assert_eq!(tpl("http://example.test:8080/users/9?a"), "/users/{id}");
    assert_eq!(tpl("http://example.test"), "/");
    assert_eq!(tpl("*"), "*");
    assert_eq!(tpl("?q=1"), "/");
    assert_eq!(tpl("/"), "/");
}

#[test]
fn pipelined_requests_with_bodies() {
    let data = b"GET /users/12?full=1 HTTP/1.1\r\nHost: a\r\n\r\n\
POST /users HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello\
PUT /users/7 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nX-Sum: 1\r\n\r\n\
DELETE /users/7 HTTP/1.0\r\n\r\n";
    let m = decode_all_splits(Direction::Request, data, &[]);
    let got: Vec<_> = m
        .iter()
        .map(|m| (m.summary.as_str(), &m.body[..]))
        .collect();
    assert_eq!(
        got,
        [
            ("req GET /users/{id}", &b""[..]),
            ("req POST /users", b"hello"),
            ("req PUT /users/{id}", b"abcde"),
            ("req DELETE /users/{id}", b""),
        ]
    );
    assert_eq!(m[0].offset, 0);
    assert_eq!(m.iter().map(|m| m.wire_len).sum::<u64>(), data.len() as u64);
    assert_eq!(m[1].offset, m[0].wire_len);
}

#[test]
fn responses_framed_by_method_and_status() {
    // To GET: 100 Continue (interim), then 200 with a length; HEAD: a length but no body; GET: 204
    // and 304 without bodies; GET: chunked; GET: ends at close.
    let data = b"HTTP/1.1 100 Continue\r\n\r\n\
HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc\
HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n\
HTTP/1.1 204 No Content\r\n\r\n\
HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n\
HTTP/1.1 500 Oops\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n\
HTTP/1.0 404 Not Found\r\nContent-Type: text/plain\r\n\r\nno such thing";
    let m = decode_all_splits(
        Direction::Response,
        data,
        &["GET", "HEAD", "GET", "GET", "GET", "GET"],
    );
    let got: Vec<_> = m
        .iter()
        .map(|m| (m.summary.as_str(), &m.body[..]))
        .collect();
    assert_eq!(
        got,
        [
            ("resp Http { status: 100 } 1xx", &b""[..]),
            ("resp Http { status: 200 } 2xx", b"abc"),
            ("resp Http { status: 200 } 2xx", b""),
            ("resp Http { status: 204 } 2xx", b""),
            ("resp Http { status: 304 } 3xx", b""),
            ("resp Http { status: 500 } 5xx", b"hello"),
            ("resp Http { status: 404 } 4xx", b"no such thing"),
        ]
    );
    assert_eq!(m.iter().map(|m| m.wire_len).sum::<u64>(), data.len() as u64);
}

#[test]
fn head_and_headers_are_exposed() {
    let mut d = HttpDecoder::new(Direction::Response, limits());
    d.feed(b"HTTP/1.1 201 Created\r\nX-Id: 7\r\nContent-Length: 2\r\n\r\n{}");
    let m = d.poll_message().unwrap().unwrap();
    let Detail::Http(h) = m.detail else {
        panic!("not http: {m:?}")
    };
    assert_eq!(h.status, Some(201));
    assert_eq!(h.reason, Some("Created"));
    assert_eq!(h.version, 1);
    assert_eq!(h.header("x-id"), Some(&b"7"[..]));
    assert_eq!(h.headers().count(), 2);
    assert!(h.raw().ends_with(b"\r\n\r\n"));
    assert!(matches!(
        m.summary,
        Summary::Response(c) if !c.is_error() && c.class() == "2xx"
    ));
}

#[test]
fn body_beyond_the_limit_is_counted_not_kept() {
    let mut d = HttpDecoder::new(
        Direction::Response,
        Limits {
            max_body: 4,
            ..limits()
        },
    );
    d.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789");
    let m = d.poll_message().unwrap().unwrap();
    assert_eq!(m.body, b"0123");
    assert_eq!(m.body_len, 10);
    assert!(m.body_truncated());
}

#[test]
fn upgrade_passes_the_rest_through() {
    let mut d = HttpDecoder::new(Direction::Response, limits());
    d.feed(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x05hello");
    let m = d.poll_message().unwrap().unwrap();
    assert!(matches!(
        m.summary,
        Summary::Response(ResponseClass::Http { status: 101 })
    ));
    let m = d.poll_message().unwrap().unwrap();
    assert_eq!(m.summary, Summary::Data);
    assert_eq!(m.body, b"\x81\x05hello");
    assert!(d.poll_message().unwrap().is_none());
}

#[test]
fn garbage_makes_the_stream_opaque() {
    for bad in [
        &b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"[..],
        b"GET /x HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        b"POST /x HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nabc",
    ] {
        let dir = if bad.starts_with(b"HTTP") {
            Direction::Response
        } else {
            Direction::Request
        };
        let mut d = HttpDecoder::new(dir, limits());
        let (_, err) = decode_pieces(&mut d, [bad]);
        assert!(
            matches!(err, Some(DecodeError::Malformed { .. })),
            "{err:?} for {}",
            String::from_utf8_lossy(bad)
        );
        assert!(d.is_opaque());
        d.feed(b"GET / HTTP/1.1\r\n\r\n");
        assert_eq!(d.poll_message(), Ok(None));
    }
}

#[test]
fn limits_and_truncation() {
    let small = Limits {
        max_buffered: 64,
        ..limits()
    };
    let mut d = HttpDecoder::new(Direction::Request, small);
    let long = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(100));
    let (_, err) = decode_pieces(&mut d, [long.as_bytes()]);
    assert!(
        matches!(err, Some(DecodeError::TooLarge { limit: 64, .. })),
        "{err:?}"
    );

    let mut d = HttpDecoder::new(Direction::Response, limits());
    let (m, err) = decode_pieces(
        &mut d,
        [&b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nxHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab"[..]],
    );
    assert_eq!(m.len(), 1);
    assert_eq!(
        err,
        Some(DecodeError::Truncated {
            protocol: Protocol::Http,
            offset: 39
        })
    );
}

#[test]
fn status_classes() {
    assert_eq!(status_class(101), "1xx");
    assert_eq!(status_class(302), "3xx");
    assert_eq!(status_class(503), "5xx");
    assert_eq!(status_class(99), "other");
    assert!(ResponseClass::Http { status: 404 }.is_error());
    assert!(!ResponseClass::Http { status: 399 }.is_error());
}

#[test]
fn status_line_without_reason() {
    // httparse returns a static "" as the reason here, not a slice of the input.
    let m = decode_all_splits(
        Direction::Response,
        b"HTTP/1.1 200\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 204 \r\n\r\n",
        &["GET", "GET"],
    );
    assert_eq!(m.len(), 2);
    let mut d = HttpDecoder::new(Direction::Response, limits());
    d.feed(b"HTTP/1.1 200\r\n\r\n");
    d.finish();
    let m = d.poll_message().unwrap().unwrap();
    let Detail::Http(h) = m.detail else {
        panic!("{m:?}")
    };
    assert_eq!(h.reason, Some(""));
    assert_eq!(h.status, Some(200));
}

// --- Long bodies: streamed through, not buffered ---

fn response_head(framing: &str) -> Vec<u8> {
    format!("HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n{framing}\r\n\r\n")
        .into_bytes()
}

#[test]
fn one_mib_bodies_stream_in_bounded_memory() {
    let body: Vec<u8> = (0..1usize << 20).map(|i| (i % 251) as u8).collect();
    let mut by_length = response_head(&format!("Content-Length: {}", body.len()));
    by_length.extend_from_slice(&body);
    let mut chunked = response_head("Transfer-Encoding: chunked");
    for c in body.chunks(3000) {
        chunked.extend(format!("{:x}\r\n", c.len()).bytes());
        chunked.extend_from_slice(c);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let lim = Limits {
        max_body: 4096,
        ..limits()
    };
    for data in [by_length, chunked] {
        let mut stream = data.clone();
        stream.extend_from_slice(b"HTTP/1.1 204 No Content\r\n\r\n");
        let mut d = HttpDecoder::new(Direction::Response, lim);
        let (mut msgs, mut most_held) = (Vec::new(), 0);
        for piece in stream.chunks(16 << 10) {
            d.feed(piece);
            most_held = most_held.max(d.buf.capacity());
            while let Some(m) = d.poll_message().unwrap() {
                msgs.push(OwnedMessage::from(&m));
            }
        }
        assert_eq!(msgs.len(), 2);
        assert_eq!(msgs[0].wire_len, data.len() as u64);
        assert_eq!(msgs[0].body_len, 1 << 20);
        assert_eq!(msgs[0].body, body[..4096]);
        assert!(
            msgs[1].summary.contains("status: 204"),
            "{}",
            msgs[1].summary
        );
        assert!(most_held <= 64 << 10, "buffer grew to {most_held}");
        let (whole, err) = decode_pieces(
            &mut HttpDecoder::new(Direction::Response, lim),
            [&stream[..]],
        );
        assert_eq!((whole, err), (msgs, None));
    }
}

#[test]
fn the_head_of_a_long_response_is_known_before_its_body_ends() {
    let mut data = response_head("Content-Length: 1048576");
    let head = data.len();
    data.resize(head + (1 << 20), b'x');
    let mut d = HttpDecoder::new(Direction::Response, limits());
    d.feed(&data[..64 << 10]);
    assert_eq!(d.poll_message().unwrap(), None);
    let m = d.poll_partial().expect("head decoded");
    assert_eq!(
        m.summary,
        Summary::Response(ResponseClass::Http { status: 200 })
    );
    assert_eq!(m.body_len, (64 << 10) - head as u64);
    assert_eq!(m.wire_len, 64 << 10);
    let Detail::Http(h) = m.detail else {
        panic!("not an HTTP head")
    };
    assert_eq!(
        h.header("content-type"),
        Some(&b"application/octet-stream"[..])
    );
    // Between messages or inside a head: nothing.
    let mut d = HttpDecoder::new(Direction::Response, limits());
    d.feed(b"HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 200 OK\r\nContent-Le");
    assert!(d.poll_message().unwrap().is_some());
    assert_eq!(d.poll_message().unwrap(), None);
    assert!(d.poll_partial().is_none());
}
