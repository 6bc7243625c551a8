//! Scripted engine tests: FIN and RST.

use super::*;

#[test]
fn fins_both_ways_complete_the_session() {
    let mut h = session_established();
    send!(
        h,
        Seg {
            payload: b"bye",
            flags: ACK | PSH | FIN,
            ..TEMPLATE
        }
    );
    // The FIN waits until the target acknowledges data: see `held_fin_…` below.
    expect!(
        h,
        [Want {
            payload: b"bye",
            ..WANT
        }]
    );
    respond!(
        h,
        Seg {
            ack: CLIENT_ISN + 4,
            ..RESP
        }
    );
    expect!(
        h,
        [Want {
            seq: CLIENT_ISN + 4,
            flags: FIN | ACK,
            ..WANT
        }]
    );
    respond!(
        h,
        Seg {
            ack: CLIENT_ISN + 5,
            flags: FIN | ACK,
            ..RESP
        }
    );
    expect!(
        h,
        [Want {
            seq: CLIENT_ISN + 5,
            ack: TARGET_ISN + 2,
            flags: ACK,
            payload: b""
        }]
    );
    // The target's FIN retransmitted (our ACK lost): acknowledged again while lingering.
    respond!(
        h,
        Seg {
            ack: CLIENT_ISN + 5,
            flags: FIN | ACK,
            ..RESP
        }
    );
    expect!(
        h,
        [Want {
            seq: CLIENT_ISN + 5,
            ack: TARGET_ISN + 2,
            flags: ACK,
            payload: b""
        }]
    );
    h.events();
    // A lost ACK makes the clone linger longer: the target's next retransmission, should this
    // ACK be lost too, comes twice as late.
    h.advance(Duration::from_secs(3));
    assert_eq!(h.e.session_count(), 1);
    h.advance(Duration::from_secs(8));
    assert_eq!(h.e.session_count(), 0);
    assert_eq!(
        h.events(),
        vec![EngineEvent::SessionRemoved {
            client: CLIENT,
            target: TARGET
        }]
    );
    assert_eq!(h.e.stats().sessions_completed, 1);
    assert_eq!(h.e.memory_in_sessions(), 0);
}

/// A listener in SYN-cookie mode with a full accept queue drops the segment that completes the
/// handshake and resets a FIN behind it (the FIN no longer checks as a cookie); a retransmission
/// of the first segment completes the handshake once the queue has room. So until the target
/// acknowledges some data our FIN waits, and a retransmission resends the data alone (a lab
/// run lost requests whose redone handshakes were each reset at the FIN).
#[test]
fn held_fin_until_the_target_acknowledges_data() {
    let mut h = session_established();
    send!(
        h,
        Seg {
            payload: REQUEST,
            flags: ACK | PSH | FIN,
            ..TEMPLATE
        }
    );
    expect!(
        h,
        [Want {
            payload: REQUEST,
            ..WANT
        }]
    );
    // No ack: the retransmission is the request alone, still without the FIN.
    h.advance(Duration::from_secs(2));
    expect!(
        h,
        [Want {
            payload: REQUEST,
            ..WANT
        }]
    );
    // The retransmission completed the handshake: the FIN follows.
    respond!(
        h,
        Seg {
            ack: REQUEST_END,
            ..RESP
        }
    );
    expect!(
        h,
        [Want {
            seq: REQUEST_END,
            flags: FIN | ACK,
            ..WANT
        }]
    );
}

/// A FIN with no data before it needs no ack first.
#[test]
fn a_fin_without_data_goes_at_once() {
    let mut h = session_established();
    send!(
        h,
        Seg {
            flags: ACK | FIN,
            ..TEMPLATE
        }
    );
    expect!(
        h,
        [Want {
            flags: FIN | ACK,
            ..WANT
        }]
    );
}

#[test]
fn target_closing_first_is_acknowledged_then_the_client_fin_follows() {
    let mut h = session_established();
    respond!(
        h,
        Seg {
            len: 100,
            flags: FIN | ACK | PSH,
            ..RESP
        }
    );
    expect!(
        h,
        [Want {
            ack: TARGET_ISN + 102,
            flags: ACK,
            ..WANT
        }]
    );
    send!(
        h,
        Seg {
            ack: PROD_ISN + 102,
            flags: FIN | ACK,
            ..TEMPLATE
        }
    );
    expect!(
        h,
        [Want {
            ack: TARGET_ISN + 102,
            flags: FIN | ACK,
            ..WANT
        }]
    );
    respond!(
        h,
        Seg {
            seq: TARGET_ISN + 102,
            ack: CLIENT_ISN + 2,
            ..RESP
        }
    );
    expect!(h, []);
    assert_eq!(h.e.stats().sessions_completed, 0);
    h.advance(Duration::from_secs(3));
    assert_eq!(h.e.stats().sessions_completed, 1);
    assert_eq!(h.e.session_count(), 0);
}

#[test]
fn late_segments_of_an_earlier_connection_are_ignored() {
    let mut h = session_established();
    respond!(
        h,
        Seg {
            seq: TARGET_ISN.wrapping_add(1 << 30),
            len: 100,
            ..RESP
        }
    );
    respond!(
        h,
        Seg {
            seq: TARGET_ISN.wrapping_add(1 << 30),
            flags: RST,
            ..RESP
        }
    );
    expect!(h, []);
    respond!(h, Seg { len: 5, ..RESP });
    expect!(
        h,
        [Want {
            ack: TARGET_ISN + 6,
            flags: ACK,
            ..WANT
        }]
    );
    assert_eq!(h.e.stats().responses_stale, 2);
}

#[test]
fn target_reset_ends_the_session() {
    let mut h = session_established();
    respond!(h, Seg { flags: RST, ..RESP });
    send!(
        h,
        Seg {
            payload: b"ignored",
            ..TEMPLATE
        }
    );
    expect!(h, []);
    send!(
        h,
        Seg {
            seq: CLIENT_ISN + 8,
            flags: FIN | ACK,
            ..TEMPLATE
        }
    );
    expect!(h, []);
    assert_eq!(h.e.stats().aborted_target_reset, 1);
    assert_eq!(h.e.session_count(), 0);
}

#[test]
fn client_reset_is_carried_through() {
    let mut h = session_established();
    send!(
        h,
        Seg {
            flags: RST,
            ..TEMPLATE
        }
    );
    expect!(
        h,
        [Want {
            flags: RST | ACK,
            payload: b"",
            ..WANT
        }]
    );
    assert_eq!(h.e.stats().sessions_client_reset, 1);
    assert_eq!(h.e.session_count(), 0);
}

#[test]
fn a_clone_that_lost_a_segment_lingers_longer() {
    // Our request was lost once: the target's retransmission timeout may have grown past the
    // default linger, and its FIN retransmitted after a lost last ACK must still find us.
    let mut h = request_sent();
    h.advance(Duration::from_secs(3));
    let again = h.sent();
    assert!(again.iter().any(|o| o.payload == REQUEST), "{again:?}");
    respond!(
        h,
        Seg {
            ack: REQUEST_END,
            flags: ACK | PSH | FIN,
            len: 100,
            ..RESP
        }
    );
    send!(
        h,
        Seg {
            seq: REQUEST_END,
            flags: FIN | ACK,
            ..TEMPLATE
        }
    );
    let out = h.sent();
    assert!(out.iter().any(|o| o.flags & FIN != 0), "{out:?}");
    respond!(
        h,
        Seg {
            seq: TARGET_ISN + 102,
            ack: REQUEST_END + 1,
            ..RESP
        }
    );
    h.sent();
    h.advance(Duration::from_secs(3));
    respond!(
        h,
        Seg {
            seq: TARGET_ISN + 101,
            ack: REQUEST_END + 1,
            flags: FIN | ACK,
            ..RESP
        }
    );
    let out = h.sent();
    assert_eq!(
        out.iter().map(|o| (o.flags, o.ack)).collect::<Vec<_>>(),
        vec![(ACK, TARGET_ISN + 102)],
        "the retransmitted FIN is acknowledged, not reset: {out:?}"
    );
    h.advance(Duration::from_secs(11));
    assert_eq!(h.e.session_count(), 0);
    assert_eq!(h.e.stats().sessions_completed, 1);
}

#[test]
fn client_reset_after_the_targets_fin_sends_no_ack_behind_the_reset() {
    let mut h = request_sent();
    respond!(
        h,
        Seg {
            ack: REQUEST_END,
            flags: ACK | PSH | FIN,
            len: 100,
            ..RESP
        }
    );
    send!(
        h,
        Seg {
            seq: REQUEST_END,
            flags: RST,
            ..TEMPLATE
        }
    );
    let out = h.sent();
    assert_eq!(
        out.iter().map(|o| o.flags).collect::<Vec<_>>(),
        vec![RST | ACK],
        "the reset alone: {out:?}"
    );
    assert_eq!(h.e.session_count(), 0);
    // The target never got it and retransmits its FIN: no session, another reset.
    respond!(
        h,
        Seg {
            ack: REQUEST_END,
            flags: ACK | FIN,
            seq: TARGET_ISN + 101,
            ..RESP
        }
    );
    let out = h.sent();
    assert_eq!(
        out.iter().map(|o| (o.flags, o.seq)).collect::<Vec<_>>(),
        vec![(RST, REQUEST_END)],
        "{out:?}"
    );
}

#[test]
fn client_reset_waits_for_buffered_data() {
    let mut h = session_established();
    send!(
        h,
        Seg {
            payload: b"last",
            ..TEMPLATE
        },
        Seg {
            seq: CLIENT_ISN + 5,
            flags: RST,
            ..TEMPLATE
        }
    );
    expect!(
        h,
        [Want {
            payload: b"last",
            ..WANT
        }]
    );
    respond!(
        h,
        Seg {
            ack: CLIENT_ISN + 5,
            ..RESP
        }
    );
    expect!(
        h,
        [Want {
            seq: CLIENT_ISN + 5,
            flags: RST | ACK,
            ..WANT
        }]
    );
}

#[test]
fn response_for_no_session_is_answered_with_rst() {
    let mut h = H::new(config());
    respond!(
        h,
        Seg {
            ack: 31337,
            flags: FIN | ACK,
            ..RESP
        }
    );
    expect!(
        h,
        [Want {
            seq: 31337,
            ack: 0,
            flags: RST,
            payload: b""
        }]
    );
    respond!(h, Seg { flags: RST, ..RESP });
    expect!(h, []);
}

#[test]
fn idle_session_times_out_and_resets_the_target() {
    let mut h = session_established_with(EngineConfig {
        session_timeout: Duration::from_secs(10),
        ..config()
    });
    h.advance(Duration::from_secs(10));
    expect!(
        h,
        [Want {
            flags: RST | ACK,
            ..WANT
        }]
    );
    assert_eq!(h.e.stats().aborted_timeout, 1);
    assert_eq!(h.e.session_count(), 0);
}
