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
    let mut h = session_established_with(EngineConfig {
        max_lag: None,
        ..config()
    });
    two_requests(&mut h);
    respond!(
        h,
        Seg {
            ack: CLIENT_ISN + 5,
            ..RESP
        }
    );
    h.advance(ms(499));
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
    assert_eq!(h.e.stats().pacing_timeouts, 1);
}

#[test]
fn a_request_max_lag_behind_goes_before_the_answer() {
    let mut h = session_established();
    two_requests(&mut h);
    let lag = config().max_lag.expect("on by default");
    h.advance(lag - ms(1));
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
