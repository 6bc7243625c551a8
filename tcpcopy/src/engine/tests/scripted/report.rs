//! Scripted engine tests: what the engine hands the report (only with
//! `request_timing_events`): each answered request's first bytes and its answer's prefix.

use super::*;

/// The timing events drained from the engine: (request bytes, answer prefix).
fn timings(h: &mut H) -> Vec<(Vec<u8>, Vec<u8>)> {
    h.events()
        .into_iter()
        .filter_map(|e| match e {
            EngineEvent::RequestTiming {
                request, answer, ..
            } => Some((request, answer)),
            _ => None,
        })
        .collect()
}

/// A target answer of `len` bytes at `seq` acknowledging `acked` request bytes, reported
/// with `prefix`.
fn respond_with_prefix(h: &mut H, seq: u32, acked: usize, len: u32, prefix: &[u8]) {
    let pkt = build(
        &Seg {
            seq,
            ack: CLIENT_ISN + 1 + acked as u32,
            len,
            ..RESP
        },
        false,
    );
    h.e.handle_response_with_prefix(h.now, &pkt, prefix);
}

#[test]
fn each_answer_carries_its_request_and_the_prefix_of_its_first_segment() {
    let mut h = session_established_with(EngineConfig {
        request_timing_events: true,
        ..config()
    });
    h.events();
    let req = b"GET /users/42 HTTP/1.1\r\n\r\n";
    send!(
        h,
        Seg {
            payload: req,
            ..TEMPLATE
        }
    );
    h.sent();
    // Two answer segments: the prefix of the first is the answer's start; the second answers
    // no new request.
    respond_with_prefix(&mut h, RESP.seq, req.len(), 20, b"HTTP/1.1 500 Interna");
    respond_with_prefix(&mut h, RESP.seq + 20, req.len(), 10, b"l Server E");
    assert_eq!(
        timings(&mut h),
        vec![(req.to_vec(), b"HTTP/1.1 500 Interna".to_vec())]
    );
    // A prefix longer than the segment's payload is cut to it.
    let req2 = b"GET /b HTTP/1.1\r\n\r\n";
    send!(
        h,
        Seg {
            seq: CLIENT_ISN + 1 + req.len() as u32,
            ack: PROD_ISN + 1 + 30,
            payload: req2,
            ..TEMPLATE
        }
    );
    h.advance(ms(1));
    h.sent();
    let acked = req.len() + req2.len();
    respond_with_prefix(&mut h, RESP.seq + 30, acked, 4, b"HTTP/1.1 200");
    assert_eq!(timings(&mut h), vec![(req2.to_vec(), b"HTTP".to_vec())]);
}

#[test]
fn without_the_report_nothing_is_kept() {
    let mut h = session_established_with(config());
    h.events();
    send!(
        h,
        Seg {
            payload: b"GET / HTTP/1.1\r\n\r\n",
            ..TEMPLATE
        }
    );
    h.sent();
    respond_with_prefix(&mut h, RESP.seq, 18, 20, b"HTTP/1.1 500 Interna");
    assert!(timings(&mut h).is_empty());
    assert_eq!(h.e.stats().requests_answered, 1);
}

#[test]
fn production_answers_from_the_capture_pair_with_their_request() {
    let mut h = session_established_with(EngineConfig {
        request_timing_events: true,
        ..config()
    });
    h.events();
    let req = b"GET /a HTTP/1.1\r\n\r\n";
    send!(
        h,
        Seg {
            payload: req,
            ..TEMPLATE
        }
    );
    h.sent();
    // Production's answer, captured 3 ms after the request (service → client).
    h.advance(ms(3));
    let request_at = h.now - ms(3);
    h.capture(Seg {
        src: SERVICE,
        dst: CLIENT,
        seq: PROD_ISN + 1,
        ack: CLIENT_ISN + 1 + req.len() as u32,
        flags: ACK | PSH,
        payload: b"HTTP/1.1 200 OK\r\n\r\n",
        ..TEMPLATE
    });
    assert_eq!(
        h.e.stats().packets_ignored,
        0,
        "production's answer is not ignored"
    );
    h.advance(ms(2));
    respond_with_prefix(&mut h, RESP.seq, req.len(), 10, b"HTTP/1.1 5");
    let p = h
        .events()
        .into_iter()
        .find_map(|e| match e {
            EngineEvent::RequestTiming { production, .. } => production,
            _ => None,
        })
        .expect("production's answer paired");
    assert_eq!(p.request_at, request_at);
    assert_eq!(p.answered_at, request_at + ms(3));
    assert_eq!(p.prefix, b"HTTP/1.1 200 OK\r\n\r\n");
}
