//! Scripted engine tests: what the engine hands the report (only with
//! `request_timing_events`): each answered request's first bytes and its answer's prefix.

use super::*;

/// The timing events drained from the engine: (request bytes, answer prefix). Production's
/// answers are not captured here: the timings waiting for them are flushed first.
fn timings(h: &mut H) -> Vec<(Vec<u8>, Vec<u8>)> {
    h.e.flush_report();
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

#[test]
fn production_is_timed_on_the_capture_stamps_and_outgoing_frames_are_never_cloned() {
    let mut h = session_established_with(EngineConfig {
        request_timing_events: true,
        ..config()
    });
    h.events();
    let req = b"GET /a HTTP/1.1\r\n\r\n";
    // The request and production's answer reach the engine at the same instant (one batch
    // of a file fed fast), stamped 40 ms apart by the capture.
    let stamp = h.now - ms(50);
    let pkt = build(
        &Seg {
            payload: req,
            ..TEMPLATE
        },
        true,
    );
    h.e.handle_captured_at(h.now, stamp, &pkt);
    assert_eq!(h.sent().len(), 1, "the request is cloned");
    let answer = build(
        &Seg {
            src: SERVICE,
            dst: CLIENT,
            seq: PROD_ISN + 1,
            ack: CLIENT_ISN + 1 + req.len() as u32,
            flags: ACK | PSH,
            payload: b"HTTP/1.1 200 OK\r\n\r\n",
            ..TEMPLATE
        },
        true,
    );
    h.e.handle_production_captured(stamp + ms(40), &answer);
    // This host's outgoing frames only ever answer: one that looks like client data is
    // neither cloned nor taken as a request.
    let ignored = h.e.stats().packets_ignored;
    let stray = build(
        &Seg {
            seq: CLIENT_ISN + 1 + req.len() as u32,
            payload: b"GET /b HTTP/1.1\r\n\r\n",
            ..TEMPLATE
        },
        true,
    );
    h.e.handle_production_captured(h.now, &stray);
    assert_eq!(h.e.stats().packets_ignored, ignored + 1);
    assert!(h.sent().is_empty(), "nothing cloned from outgoing frames");
    respond_with_prefix(&mut h, RESP.seq, req.len(), 10, b"HTTP/1.1 5");
    let p = h
        .events()
        .into_iter()
        .find_map(|e| match e {
            EngineEvent::RequestTiming { production, .. } => production,
            _ => None,
        })
        .expect("production's answer paired");
    assert_eq!(p.request_at, stamp);
    assert_eq!(p.answered_at - p.request_at, ms(40));
}

#[test]
fn a_production_slower_than_the_target_still_has_its_answer_paired() {
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
    let request_at = h.now;
    // The target answers in 2 ms; production takes 40.
    h.advance(ms(2));
    respond_with_prefix(&mut h, RESP.seq, req.len(), 10, b"HTTP/1.1 2");
    let timing = |h: &mut H| {
        h.events().into_iter().find_map(|e| match e {
            EngineEvent::RequestTiming {
                production,
                answered,
                ..
            } => Some((answered, production)),
            _ => None,
        })
    };
    assert!(timing(&mut h).is_none(), "waits for production's answer");
    let answered = h.now;
    h.advance(ms(38));
    h.capture(Seg {
        src: SERVICE,
        dst: CLIENT,
        seq: PROD_ISN + 1,
        ack: CLIENT_ISN + 1 + req.len() as u32,
        flags: ACK | PSH,
        payload: b"HTTP/1.1 200 OK\r\n\r\n",
        ..TEMPLATE
    });
    let (at, p) = timing(&mut h).expect("the timing goes with production's answer");
    assert_eq!(at, answered, "the target's own time is kept");
    let p = p.expect("production paired");
    assert_eq!(p.answered_at - p.request_at, ms(40));
    assert_eq!(p.request_at, request_at);
    // Nothing left to flush.
    h.e.flush_report();
    assert!(timing(&mut h).is_none());
}
