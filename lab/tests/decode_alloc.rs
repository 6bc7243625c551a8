//! Heap accounting for the protocol decoders, with a counting global allocator (per thread, so
//! the test harness's other threads do not disturb the counts): once a decoder's buffers have
//! grown, decoding more messages of the same sizes allocates nothing — HTTP keep-alive requests
//! and chunked responses, Redis commands and replies — whatever the segment sizes.

use tcpclone::decode::{Decoder, Direction, Limits, Protocol};

#[global_allocator]
static GLOBAL: tcpclone_lab::sys::Counting = tcpclone_lab::sys::Counting;
use tcpclone_lab::sys::allocs;

/// Feeds `stream` in `seg`-byte segments, `rounds` times over; messages decoded and, for
/// requests, passed to `peer` (the response decoder) as the report would.
fn run(
    dec: &mut dyn Decoder,
    mut peer: Option<&mut dyn Decoder>,
    stream: &[u8],
    seg: usize,
    rounds: usize,
) -> usize {
    let mut n = 0;
    for _ in 0..rounds {
        for piece in stream.chunks(seg) {
            dec.feed(piece);
            while let Some(m) = dec.poll_message().expect("decodes") {
                if let Some(p) = peer.as_deref_mut() {
                    p.note_request(&m);
                }
                n += 1;
            }
        }
    }
    n
}

/// Allocations made by decoding `stream` 200 more times after 20 rounds of warm-up.
fn steady_allocs(
    protocol: Protocol,
    dir: Direction,
    stream: &[u8],
    seg: usize,
    methods: bool,
) -> u64 {
    let mut dec = protocol.decoder(dir, Limits::default());
    let mut req = Protocol::Http.decoder(Direction::Request, Limits::default());
    // A response decoder learns a method per response: requests go in ahead of each round.
    let get = b"GET /users/1 HTTP/1.1\r\n\r\n".repeat(3);
    let warm_reqs = |req: &mut dyn Decoder, dec: &mut dyn Decoder, rounds| {
        if methods {
            run(req, Some(dec), &get, get.len(), rounds);
        }
    };
    warm_reqs(req.as_mut(), dec.as_mut(), 20);
    let per_round = run(dec.as_mut(), None, stream, seg, 20) / 20;
    assert!(per_round >= 3, "fixture decodes to {per_round} messages");
    let before = allocs();
    let mut n = 0;
    for _ in 0..200 {
        warm_reqs(req.as_mut(), dec.as_mut(), 1);
        n += run(dec.as_mut(), None, stream, seg, 1);
    }
    let spent = allocs() - before;
    assert_eq!(n, per_round * 200);
    spent
}

const HTTP_REQS: &[u8] = b"GET /users/42?x=1 HTTP/1.1\r\nHost: a\r\nAccept: */*\r\n\r\n\
POST /orders/7/items HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\nhello world\
PUT /o/123e4567-e89b-12d3-a456-426614174000 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n0\r\n\r\n";

const HTTP_RESPS: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello\
HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\nX-T: 1\r\n\r\n\
HTTP/1.1 304 Not Modified\r\n\r\n";

const REDIS_CMDS: &[u8] =
    b"*3\r\n$3\r\nset\r\n$3\r\nkey\r\n$5\r\nvalue\r\n*2\r\n$3\r\nGET\r\n$3\r\nkey\r\nPING\r\n";

const REDIS_REPLIES: &[u8] =
    b"+OK\r\n$5\r\nvalue\r\n-WRONGTYPE Operation\r\n%1\r\n+k\r\n*2\r\n:1\r\n,2.5\r\n";

#[test]
fn steady_state_decoding_allocates_nothing() {
    for seg in [1, 7, 64, 4096] {
        assert_eq!(
            steady_allocs(Protocol::Http, Direction::Request, HTTP_REQS, seg, false),
            0,
            "HTTP requests, {seg}-byte segments"
        );
        assert_eq!(
            steady_allocs(Protocol::Http, Direction::Response, HTTP_RESPS, seg, true),
            0,
            "HTTP responses, {seg}-byte segments"
        );
        assert_eq!(
            steady_allocs(Protocol::Redis, Direction::Request, REDIS_CMDS, seg, false),
            0,
            "Redis commands, {seg}-byte segments"
        );
        assert_eq!(
            steady_allocs(
                Protocol::Redis,
                Direction::Response,
                REDIS_REPLIES,
                seg,
                false
            ),
            0,
            "Redis replies, {seg}-byte segments"
        );
    }
}

#[test]
fn the_counter_sees_allocations() {
    // The accounting itself works: a fresh decoder's first message grows its buffers.
    let before = allocs();
    let mut d = Protocol::Http.decoder(Direction::Request, Limits::default());
    d.feed(HTTP_REQS);
    assert!(d.poll_message().unwrap().is_some());
    assert!(allocs() > before);
}
