//! Scripted engine tests: gaps.

use super::*;

#[test]
fn gap_proven_by_a_new_request_resets_and_re_establishes() {
    let mut h = session_established();
    send!(
        h,
        Seg {
            payload: b"SET a 1\r\n",
            ..TEMPLATE
        }
    );
    expect!(
        h,
        [Want {
            payload: b"SET a 1\r\n",
            ..WANT
        }]
    );
    respond!(
        h,
        Seg {
            ack: CLIENT_ISN + 10,
            len: 5,
            ..RESP
        }
    );
    h.sent();
    // Request 2 = "SET b 22\r\n" at +10: its first segment (5 bytes) is missed by the capture.
    send!(
        h,
        Seg {
            seq: CLIENT_ISN + 15,
            ack: PROD_ISN + 6,
            payload: b"22\r\n\n",
            ..TEMPLATE
        }
    );
    expect!(h, []);
    // Request 3 has an ack that moved: production answered request 2, so the hole is real.
    send!(
        h,
        Seg {
            seq: CLIENT_ISN + 20,
            ack: PROD_ISN + 11,
            payload: b"GET a\r\n",
            ..TEMPLATE
        }
    );
    expect!(h, []);
    h.advance(ms(10));
    let out = h.sent();
    assert_eq!(out.len(), 2, "{out:?}");
    assert_eq!((out[0].flags & RST, out[0].seq), (RST, CLIENT_ISN + 10));
    assert_eq!((out[1].flags, out[1].seq), (SYN, CLIENT_ISN + 19));
    let st = h.e.stats();
    assert_eq!((st.gaps, st.reestablished), (1, 1));
    respond!(
        h,
        Seg {
            seq: 77_000,
            ack: CLIENT_ISN + 20,
            flags: SYN | ACK,
            opts: SYN_ACK.opts,
            ..RESP
        }
    );
    expect!(
        h,
        [Want {
            seq: CLIENT_ISN + 20,
            ack: 77_001,
            payload: b"GET a\r\n",
            ..WANT
        }]
    );
}

/// An established session whose first request, "abc", the target has acknowledged.
fn abc_delivered() -> H {
    let mut h = session_established();
    send!(
        h,
        Seg {
            payload: b"abc",
            ..TEMPLATE
        }
    );
    h.sent();
    respond!(
        h,
        Seg {
            ack: CLIENT_ISN + 4,
            ..RESP
        }
    );
    h
}

/// After the capture reported lost packets, a hole is declared a gap at once, not after the
/// whole gap timeout (the segment it misses will not come); once the loss is a gap timeout
/// old, holes wait the whole timeout again.
#[test]
fn a_hole_after_a_capture_loss_is_a_gap_at_once() {
    let hole_after = |lost: Option<Duration>| {
        let mut h = abc_delivered();
        if let Some(ago) = lost {
            let now = h.now;
            h.e.capture_lost(now);
            h.advance(ago);
        }
        send!(
            h,
            Seg {
                seq: CLIENT_ISN + 10,
                payload: b"xyz",
                ..TEMPLATE
            }
        );
        let t = h.now;
        while h.sent().is_empty() {
            assert!(h.now - t < ms(1000), "the hole was never declared a gap");
            h.advance(ms(1));
        }
        assert_eq!(h.e.stats().gaps, 1);
        h.now - t
    };
    assert_eq!(hole_after(None), ms(500));
    assert_eq!(hole_after(Some(ms(0))), ms(0));
    assert_eq!(hole_after(Some(ms(499))), ms(0));
    assert_eq!(hole_after(Some(ms(500))), ms(500));
}

#[test]
fn gap_found_by_timeout_resets_and_waits_for_the_next_request() {
    let mut h = abc_delivered();
    send!(
        h,
        Seg {
            seq: CLIENT_ISN + 10,
            payload: b"xyz",
            ..TEMPLATE
        }
    );
    h.advance(ms(499));
    expect!(h, []);
    h.advance(ms(1));
    let out = h.sent();
    assert_eq!(out.len(), 1);
    assert!(out[0].flags & RST != 0);
    // Same request continuing: still waiting.
    send!(
        h,
        Seg {
            seq: CLIENT_ISN + 13,
            payload: b"more",
            ..TEMPLATE
        }
    );
    expect!(h, []);
    // The next request: re-established.
    send!(
        h,
        Seg {
            seq: CLIENT_ISN + 17,
            ack: PROD_ISN + 50,
            payload: b"next",
            ..TEMPLATE
        }
    );
    let out = h.sent();
    assert_eq!(
        (out.len(), out[0].flags, out[0].seq),
        (1, SYN, CLIENT_ISN + 16)
    );
}

#[test]
fn reordered_capture_is_not_a_gap() {
    let mut h = session_established();
    send!(
        h,
        Seg {
            seq: CLIENT_ISN + 4,
            payload: b"def",
            ..TEMPLATE
        }
    );
    send!(
        h,
        Seg {
            payload: b"abc",
            ..TEMPLATE
        }
    );
    expect!(
        h,
        [Want {
            payload: b"abcdef",
            ..WANT
        }]
    );
    assert_eq!(h.e.stats().gaps, 0);
}

#[test]
fn stale_connection_answering_our_syn_is_reset() {
    let mut h = session_syn_sent(config());
    respond!(
        h,
        Seg {
            seq: 123,
            ack: 4242,
            ..RESP
        }
    );
    expect!(
        h,
        [Want {
            seq: 4242,
            ack: 0,
            flags: RST,
            payload: b""
        }]
    );
}
