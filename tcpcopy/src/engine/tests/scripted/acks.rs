//! Scripted engine tests: acks and timestamps.

use super::*;

#[test]
fn acks_follow_what_the_target_really_sent() {
    let mut h = session_established();
    send!(
        h,
        Seg {
            payload: b"GET / HTTP/1.1\r\n\r\n",
            ..TEMPLATE
        }
    );
    expect!(
        h,
        [Want {
            payload: b"GET / HTTP/1.1\r\n\r\n",
            ..WANT
        }]
    );
    // The target answers 300 bytes (production answered 1000: the client acks PROD_ISN+1001).
    respond!(
        h,
        Seg {
            ack: CLIENT_ISN + 19,
            len: 300,
            flags: ACK | PSH,
            ..RESP
        }
    );
    expect!(
        h,
        [Want {
            seq: CLIENT_ISN + 19,
            ack: TARGET_ISN + 301,
            flags: ACK,
            payload: b""
        }]
    );
    h.advance(ms(5));
    send!(
        h,
        Seg {
            seq: CLIENT_ISN + 19,
            ack: PROD_ISN + 1001,
            payload: b"next",
            ..TEMPLATE
        }
    );
    expect!(
        h,
        [Want {
            seq: CLIENT_ISN + 19,
            ack: TARGET_ISN + 301,
            payload: b"next",
            ..WANT
        }]
    );
}

#[test]
fn duplicate_target_data_is_acknowledged_again() {
    let mut h = session_established();
    respond!(h, Seg { len: 10, ..RESP });
    expect!(
        h,
        [Want {
            seq: CLIENT_ISN + 1,
            ack: TARGET_ISN + 11,
            flags: ACK,
            payload: b""
        }]
    );
    respond!(h, Seg { len: 10, ..RESP });
    expect!(
        h,
        [Want {
            seq: CLIENT_ISN + 1,
            ack: TARGET_ISN + 11,
            flags: ACK,
            payload: b""
        }]
    );
}

#[test]
fn timestamps_echo_the_target_and_never_go_back() {
    let ts = |v| TcpOpts {
        ts: Some((v, 0)),
        ..SYN_OPTS
    };
    let mut h = H::new(config());
    send!(
        h,
        Seg {
            opts: ts(1000),
            ..CLIENT_SYN
        }
    );
    h.sent();
    respond!(
        h,
        Seg {
            opts: TcpOpts {
                ts: Some((7777, 1000)),
                ..SYN_ACK.opts
            },
            ..SYN_ACK
        }
    );
    let out = h.sent();
    assert_eq!(out[0].opts.ts, Some((1000, 7777)));
    // A client segment whose TSval went backwards (reordered capture) must not lower ours.
    send!(
        h,
        Seg {
            payload: b"a",
            opts: TcpOpts {
                ts: Some((1005, 1)),
                ..NO_OPTS
            },
            ..TEMPLATE
        }
    );
    send!(
        h,
        Seg {
            seq: CLIENT_ISN + 2,
            payload: b"b",
            opts: TcpOpts {
                ts: Some((990, 1)),
                ..NO_OPTS
            },
            ..TEMPLATE
        }
    );
    respond!(
        h,
        Seg {
            ack: CLIENT_ISN + 1,
            opts: TcpOpts {
                ts: Some((7800, 1000)),
                ..NO_OPTS
            },
            ..RESP
        }
    );
    let out = h.sent();
    assert!(!out.is_empty());
    let mut last = 0;
    for o in &out {
        let (v, e) = o.opts.ts.expect("timestamps negotiated");
        assert!(v >= last && v >= 1005, "{out:?}");
        assert!(e == 7777 || e == 7800);
        last = v;
    }
}

/// A late report of an earlier connection on the 4-tuple must not set the TSval we echo: it
/// comes from another connection's clock, and Linux drops an ACK completing the handshake whose
/// TSecr none of its SYN-ACKs carried (a lab run with intercept starved of CPU lost the request
/// that way, every retransmission echoing the earlier connection's TSval).
#[test]
fn timestamps_echo_this_connection_not_an_earlier_one_on_the_4_tuple() {
    const SYN_ACK_TS: u32 = 4_048_685_536;
    // After SYN_ACK_TS in sequence-number order, so that the largest TSval seen is the wrong one.
    const EARLIER_TS: u32 = 3_000_000;
    let ts = |v, e| TcpOpts {
        ts: Some((v, e)),
        ..NO_OPTS
    };
    let mut h = H::new(config());
    send!(
        h,
        Seg {
            opts: TcpOpts {
                ts: Some((1000, 0)),
                ..SYN_OPTS
            },
            ..CLIENT_SYN
        }
    );
    h.sent();
    // The earlier connection's last ACK, reported after our new SYN went out.
    respond!(
        h,
        Seg {
            seq: 77_000,
            ack: 55_000,
            opts: ts(EARLIER_TS, 900),
            ..RESP
        }
    );
    let out = h.sent();
    assert!(out.iter().all(|o| o.flags & RST != 0), "{out:?}");
    respond!(
        h,
        Seg {
            opts: TcpOpts {
                ts: Some((SYN_ACK_TS, 1000)),
                ..SYN_ACK.opts
            },
            ..SYN_ACK
        }
    );
    let out = h.sent();
    assert!(!out.is_empty());
    assert!(
        out.iter().all(|o| o.opts.ts == Some((1000, SYN_ACK_TS))),
        "{out:?}"
    );
    // Established: a stale segment (far from what we expect next) leaves the echo alone too.
    respond!(
        h,
        Seg {
            seq: TARGET_ISN + 1 + (1 << 27),
            opts: ts(EARLIER_TS + 1, 900),
            ..RESP
        }
    );
    send!(
        h,
        Seg {
            payload: REQUEST,
            opts: ts(1001, 0),
            ..TEMPLATE
        }
    );
    let out = h.sent();
    assert!(out.iter().any(|o| o.payload == REQUEST), "{out:?}");
    assert!(
        out.iter().all(|o| o.opts.ts == Some((1001, SYN_ACK_TS))),
        "{out:?}"
    );
}

#[test]
fn no_timestamps_when_the_target_did_not_agree() {
    let mut h = H::new(config());
    send!(
        h,
        Seg {
            opts: TcpOpts {
                ts: Some((5, 0)),
                ..SYN_OPTS
            },
            ..CLIENT_SYN
        }
    );
    h.sent();
    respond!(h, SYN_ACK);
    send!(
        h,
        Seg {
            payload: b"x",
            opts: TcpOpts {
                ts: Some((6, 1)),
                ..NO_OPTS
            },
            ..TEMPLATE
        }
    );
    for o in h.sent() {
        assert_eq!(o.opts.ts, None);
    }
}
