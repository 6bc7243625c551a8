//! Scripted engine tests: request pacing.

use super::*;

fn two_requests(h: &mut H) {
    send!(
        h,
        Seg {
            payload: b"req1",
            ..TEMPLATE
        }
    );
    expect!(
        h,
        [Want {
            payload: b"req1",
            ..WANT
        }]
    );
    // Production answered 10 bytes: the next request acks 10 more.
    send!(
        h,
        Seg {
            seq: CLIENT_ISN + 5,
            ack: PROD_ISN + 11,
            payload: b"req2",
            ..TEMPLATE
        }
    );
}

#[test]
fn request_waits_until_the_target_sent_as_many_bytes_as_production() {
    let mut h = session_established();
    two_requests(&mut h);
    expect!(h, []);
    respond!(
        h,
        Seg {
            ack: CLIENT_ISN + 5,
            len: 6,
            ..RESP
        }
    );
    expect!(
        h,
        [Want {
            seq: CLIENT_ISN + 1 + 4,
            ack: TARGET_ISN + 7,
            flags: ACK,
            payload: b""
        }]
    );
    respond!(
        h,
        Seg {
            seq: TARGET_ISN + 7,
            ack: CLIENT_ISN + 5,
            len: 4,
            ..RESP
        }
    );
    expect!(
        h,
        [Want {
            seq: CLIENT_ISN + 5,
            ack: TARGET_ISN + 11,
            payload: b"req2",
            ..WANT
        }]
    );
    assert_eq!(h.e.stats().requests_sent, 2);
    assert_eq!(h.e.stats().requests_answered, 1);
}

#[test]
fn request_released_when_the_target_goes_idle() {
    let mut h = session_established();
    two_requests(&mut h);
    respond!(
        h,
        Seg {
            ack: CLIENT_ISN + 5,
            len: 3,
            ..RESP
        }
    );
    expect!(
        h,
        [Want {
            seq: CLIENT_ISN + 5,
            ack: TARGET_ISN + 4,
            flags: ACK,
            payload: b""
        }]
    );
    h.advance(ms(2));
    expect!(h, []);
    h.advance(ms(1));
    expect!(
        h,
        [Want {
            seq: CLIENT_ISN + 5,
            ack: TARGET_ISN + 4,
            payload: b"req2",
            ..WANT
        }]
    );
    assert_eq!(h.e.stats().pacing_timeouts, 0);
}

#[test]
fn request_released_by_the_response_timeout() {
    // Short requests: the lag rule leaves them waiting.
    let mut h = session_established();
    two_requests(&mut h);
    respond!(
        h,
        Seg {
            ack: CLIENT_ISN + 5,
            ..RESP
        }
    );
    req2_goes_after(&mut h, ms(500));
    assert_eq!(h.e.stats().pacing_timeouts, 1);
}

/// Nothing goes for `wait` less a millisecond; then req2 of [`two_requests`] does.
fn req2_goes_after(h: &mut H, wait: Duration) {
    h.advance(wait - ms(1));
    expect!(h, []);
    h.advance(ms(1));
    expect!(
        h,
        [Want {
            seq: CLIENT_ISN + 5,
            payload: b"req2",
            ..WANT
        }]
    );
}

/// The lag rule for the short requests of these scripts (by default a session must hold
/// 1 MiB unsent: `request_released_by_the_response_timeout` shows short ones wait).
fn pipelining() -> EngineConfig {
    EngineConfig {
        lag_min_bytes: 1,
        ..config()
    }
}

#[test]
fn a_request_max_lag_behind_goes_before_the_answer() {
    let mut h = session_established_with(pipelining());
    two_requests(&mut h);
    req2_goes_after(&mut h, config().max_lag.expect("on by default"));
    let st = h.e.stats();
    assert_eq!((st.requests_pipelined, st.pacing_timeouts), (1, 0));
    // req1's answer (10 bytes, as production's) was owed; req2's own comes after it.
    respond!(
        h,
        Seg {
            ack: CLIENT_ISN + 9,
            len: 10,
            ..RESP
        }
    );
    assert_eq!(h.e.stats().requests_answered, 1);
}

#[test]
fn no_wait_sends_requests_at_once() {
    let mut h = session_established_with(EngineConfig {
        no_wait: true,
        ..config()
    });
    two_requests(&mut h);
    expect!(
        h,
        [Want {
            seq: CLIENT_ISN + 5,
            payload: b"req2",
            ..WANT
        }]
    );
}

#[test]
fn server_greeting_is_awaited_before_the_first_request() {
    let mut h = session_syn_sent(config());
    send!(
        h,
        Seg {
            flags: ACK,
            ..TEMPLATE
        }
    );
    respond!(h, SYN_ACK);
    h.sent();
    // Production greeted with 20 bytes before the client spoke.
    send!(
        h,
        Seg {
            ack: PROD_ISN + 21,
            payload: b"HELO",
            ..TEMPLATE
        }
    );
    expect!(h, []);
    respond!(h, Seg { len: 20, ..RESP });
    expect!(
        h,
        [Want {
            ack: TARGET_ISN + 21,
            payload: b"HELO",
            ..WANT
        }]
    );
}

/// req2 sent pipelined (req1 unanswered), both acknowledged by the target's kernel, then the
/// client's reset.
fn pipelined_then_reset(h: &mut H) {
    two_requests(h);
    req2_goes_after(h, config().max_lag.expect("on by default"));
    respond!(
        h,
        Seg {
            ack: CLIENT_ISN + 9,
            ..RESP
        }
    );
    send!(
        h,
        Seg {
            flags: RST,
            ..TEMPLATE
        }
    );
}

#[test]
fn a_client_reset_waits_for_the_answer_owed_to_a_pipelined_request() {
    let mut h = session_established_with(pipelining());
    pipelined_then_reset(&mut h);
    // A reset now would destroy req2 in the target's socket, unread.
    expect!(h, []);
    respond!(
        h,
        Seg {
            ack: CLIENT_ISN + 9,
            len: 10,
            ..RESP
        }
    );
    let out = h.sent();
    assert!(out.iter().any(|o| o.flags & RST != 0), "{out:?}");
    assert_eq!(h.e.stats().sessions_client_reset, 1);
    assert_eq!(h.e.session_count(), 0);
}

#[test]
fn a_client_reset_waits_for_an_owed_answer_no_longer_than_the_response_timeout() {
    let mut h = session_established_with(pipelining());
    pipelined_then_reset(&mut h);
    // Counted from req2's sending, the last new byte.
    h.advance(config().response_timeout - ms(1));
    expect!(h, []);
    h.advance(ms(1));
    let out = h.sent();
    assert!(out.iter().any(|o| o.flags & RST != 0), "{out:?}");
    assert_eq!(h.e.session_count(), 0);
}
