//! Scripted engine tests: IPv6.

use super::*;

#[test]
fn ipv6_session_end_to_end() {
    let mut h = H::new(config());
    let syn = Seg {
        src: CLIENT6,
        dst: SERVICE6,
        ..CLIENT_SYN
    };
    send!(h, syn);
    let out = h.sent();
    assert_eq!(
        (out[0].src, out[0].dst, out[0].flags),
        (CLIENT6, TARGET6, SYN)
    );
    respond!(
        h,
        Seg {
            src: TARGET6,
            dst: CLIENT6,
            ..SYN_ACK
        }
    );
    h.sent();
    send!(
        h,
        Seg {
            src: CLIENT6,
            dst: SERVICE6,
            payload: b"*1\r\n$4\r\nPING\r\n",
            ..TEMPLATE
        }
    );
    let out = h.sent();
    assert_eq!(out[0].payload, b"*1\r\n$4\r\nPING\r\n");
    assert_eq!(out[0].dst, TARGET6);
}

#[test]
fn ipv6_client_to_ipv4_target_is_refused() {
    let mut h = H::new(EngineConfig {
        mappings: vec![TargetMapping {
            online_ip: None,
            online_port: 80,
            target: TARGET,
        }],
        ..config()
    });
    send!(
        h,
        Seg {
            src: CLIENT6,
            dst: SocketAddr::new(SERVICE6.ip(), 80),
            ..CLIENT_SYN
        }
    );
    expect!(h, []);
    assert_eq!(h.e.stats().refused_family, 1);
}

#[test]
fn target_closed_and_client_silent_gets_our_fin_after_linger() {
    let mut h = session_established();
    respond!(
        h,
        Seg {
            len: 10,
            flags: FIN | ACK,
            ..RESP
        }
    );
    expect!(
        h,
        [Want {
            ack: TARGET_ISN + 12,
            flags: ACK,
            ..WANT
        }]
    );
    h.advance(Duration::from_millis(1999));
    expect!(h, []);
    h.advance(Duration::from_millis(1));
    expect!(
        h,
        [Want {
            ack: TARGET_ISN + 12,
            flags: FIN | ACK,
            ..WANT
        }]
    );
    respond!(
        h,
        Seg {
            seq: TARGET_ISN + 12,
            ack: CLIENT_ISN + 2,
            ..RESP
        }
    );
    h.advance(Duration::from_secs(3));
    let st = h.e.stats();
    assert_eq!((st.half_closed_timeouts, st.sessions_completed), (1, 1));
    assert_eq!(h.e.session_count(), 0);
}

#[test]
fn a_syn_ack_with_a_new_isn_before_any_ack_of_data_is_adopted() {
    let mut h = session_established();
    send!(
        h,
        Seg {
            payload: b"GET / HTTP/1.1\r\n\r\n",
            ..TEMPLATE
        }
    );
    assert_eq!(h.sent()[0].ack, TARGET_ISN + 1);
    // The target answers our retransmitted SYN from a new request socket.
    respond!(
        h,
        Seg {
            seq: TARGET_ISN + 100_000,
            ..SYN_ACK
        }
    );
    let out = h.sent();
    assert!(
        out.iter()
            .any(|o| o.ack == TARGET_ISN + 100_001 && o.payload.starts_with(b"GET")),
        "request resent with the new ack: {out:?}"
    );
    assert_eq!(h.e.stats().syn_ack_adopted, 1);
    // The target's RST for our ACK of the old ISN is stale now: the clone lives on.
    respond!(
        h,
        Seg {
            seq: TARGET_ISN + 1,
            flags: RST,
            ..RESP
        }
    );
    let st = h.e.stats();
    assert_eq!((st.aborted(), st.target_resets), (0, 0));
    assert_eq!(h.e.session_count(), 1);
}

#[test]
fn an_ack_of_data_on_the_abandoned_syn_ack_takes_that_connection_back() {
    // Our ACK of the first SYN-ACK established the target's connection before the newer
    // SYN-ACK reached us: the target answers on the first one, which holds the 4-tuple.
    let mut h = request_sent();
    respond!(
        h,
        Seg {
            seq: TARGET_ISN + 100_000,
            ..SYN_ACK
        }
    );
    h.sent();
    assert_eq!(h.e.stats().syn_ack_adopted, 1);
    respond!(
        h,
        Seg {
            ack: REQUEST_END,
            flags: ACK | PSH,
            len: 100,
            ..RESP
        }
    );
    let out = h.sent();
    assert!(
        out.iter()
            .all(|o| o.flags & (RST | SYN) == 0 && o.payload.is_empty()),
        "neither a reset nor the request again: {out:?}"
    );
    assert!(
        out.iter()
            .any(|o| o.flags & ACK != 0 && o.ack == TARGET_ISN + 101),
        "the answer is acknowledged on the first connection: {out:?}"
    );
    // Its FIN is taken too, and the target's RST for our segments on the newer SYN-ACK is
    // not for us.
    respond!(
        h,
        Seg {
            seq: TARGET_ISN + 101,
            ack: REQUEST_END,
            flags: FIN | ACK,
            ..RESP
        }
    );
    respond!(
        h,
        Seg {
            seq: TARGET_ISN + 100_001,
            flags: RST,
            ..RESP
        }
    );
    let out = h.sent();
    assert!(
        out.iter().any(|o| o.ack == TARGET_ISN + 102),
        "the FIN is acknowledged: {out:?}"
    );
    let st = h.e.stats();
    assert_eq!(
        (
            st.redo_abandoned,
            st.responses_stale,
            st.target_resets,
            st.aborted()
        ),
        (1, 1, 0, 0)
    );
}

#[test]
fn a_reset_before_any_data_is_acked_redoes_the_handshake() {
    let mut h = request_sent();
    respond!(
        h,
        Seg {
            seq: TARGET_ISN + 1,
            flags: RST,
            ..RESP
        }
    );
    let out = h.sent();
    assert_eq!(
        (out.len(), out[0].flags, out[0].seq),
        (1, SYN, CLIENT_ISN),
        "{out:?}"
    );
    respond!(
        h,
        Seg {
            seq: 60_000,
            ..SYN_ACK
        }
    );
    let out = h.sent();
    assert!(
        out.iter()
            .any(|o| o.ack == 60_001 && o.payload.starts_with(b"GET")),
        "{out:?}"
    );
    let st = h.e.stats();
    assert_eq!((st.handshakes_redone, st.target_resets), (1, 0));
}

/// A session whose request went out and was retransmitted after `wait`; then the target's
/// reset with `flags` arrives. Returns what we sent in answer and the stats.
fn reset_after_retransmission(wait: Duration, flags: u8) -> (Vec<Out>, crate::engine::EngineStats) {
    let (h, out) = reset_after_retransmission_in(wait, flags);
    (out, h.e.stats())
}

/// [`reset_after_retransmission`], the harness kept.
fn reset_after_retransmission_in(wait: Duration, flags: u8) -> (H, Vec<Out>) {
    let mut h = request_sent();
    h.advance(Duration::from_secs(3));
    let again = h.sent();
    assert!(
        again.iter().any(|o| o.payload.starts_with(b"GET")),
        "no retransmission: {again:?}"
    );
    h.advance(wait);
    respond!(
        h,
        Seg {
            seq: TARGET_ISN + 1,
            flags,
            ..RESP
        }
    );
    let out = h.sent();
    (h, out)
}

#[test]
fn an_abort_after_the_request_was_retransmitted_does_not_send_it_again() {
    // A reset with ACK comes from a live socket: the target may well have answered (its
    // reports were lost) and aborted since; the request must not be delivered a second time.
    let (out, st) = reset_after_retransmission(Duration::ZERO, RST | ACK);
    assert!(out.iter().all(|o| o.flags & SYN == 0), "{out:?}");
    assert_eq!((st.handshakes_redone, st.target_resets), (0, 1));
}

#[test]
fn a_no_socket_reset_of_a_retransmission_redoes_the_handshake() {
    // An overloaded listener dropped the ACK that completed our handshake (accept queue full)
    // and then pruned the request socket: our retransmission gets a reset without ACK. The
    // target never had the request: do the handshake again.
    let (out, st) = reset_after_retransmission(Duration::ZERO, RST);
    assert!(
        out.iter().any(|o| o.flags == SYN && o.seq == CLIENT_ISN),
        "{out:?}"
    );
    assert_eq!((st.handshakes_redone, st.target_resets), (1, 0));
}

#[test]
fn a_redo_gives_way_when_the_first_connection_acks_our_data_after_all() {
    // A SYN-cookie listener whose accept queue dropped our request resets our next segment
    // (its sequence number no longer checks as a cookie) but accepts the request's
    // retransmission: the reset made us redo the handshake, then the first connection acks and
    // answers. Take it up again: resetting it and sending the request on a new connection
    // would deliver it twice.
    let mut h = session_after_redo();
    respond!(
        h,
        Seg {
            ack: REQUEST_END,
            ..RESP
        }
    );
    respond!(
        h,
        Seg {
            ack: REQUEST_END,
            flags: ACK | PSH,
            len: 100,
            ..RESP
        }
    );
    let out = h.sent();
    assert!(
        out.iter().all(|o| o.flags & (RST | SYN) == 0),
        "neither a reset nor a new handshake: {out:?}"
    );
    assert!(
        out.iter().all(|o| o.payload.is_empty()),
        "the request is not sent again: {out:?}"
    );
    assert!(
        out.iter()
            .any(|o| o.flags & ACK != 0 && o.ack == TARGET_ISN + 101),
        "the answer is acknowledged on the first connection: {out:?}"
    );
    let st = h.e.stats();
    assert_eq!(
        (
            st.handshakes_redone,
            st.redo_abandoned,
            st.target_resets,
            st.aborted()
        ),
        (1, 1, 0, 0)
    );
}

#[test]
fn a_redo_is_not_given_up_for_an_earlier_connections_late_ack() {
    // An ack that happens to fall in our range but whose sequence number is far from the
    // target's: another connection's, not the one we gave up.
    let mut h = session_after_redo();
    respond!(
        h,
        Seg {
            seq: TARGET_ISN.wrapping_add(1 << 27),
            ack: REQUEST_END,
            ..RESP
        }
    );
    h.sent();
    assert_eq!(h.e.stats().redo_abandoned, 0);
    // The handshake goes on: its SYN-ACK establishes and the request goes on the new one.
    respond!(
        h,
        Seg {
            seq: 60_000,
            ..SYN_ACK
        }
    );
    let out = h.sent();
    assert!(
        out.iter()
            .any(|o| o.ack == 60_001 && o.payload.starts_with(b"GET")),
        "{out:?}"
    );
}

/// [`reset_after_retransmission`] with a no-socket reset, leaving the harness: the handshake
/// is being redone (our SYN went out again).
fn session_after_redo() -> H {
    let (h, out) = reset_after_retransmission_in(Duration::ZERO, RST);
    assert!(out.iter().any(|o| o.flags == SYN), "{out:?}");
    h
}

#[test]
fn a_no_socket_reset_long_after_our_last_progress_is_final() {
    // Long after our last progress, a connection that answered can have ended its FIN_WAIT2
    // or TIME_WAIT: no second try. (Past the no-socket window, before the session times out.)
    let (out, st) = reset_after_retransmission(Duration::from_secs(31), RST);
    assert!(out.iter().all(|o| o.flags & SYN == 0), "{out:?}");
    assert_eq!(
        (st.handshakes_redone, st.target_resets, st.aborted()),
        (0, 1, 0)
    );
}

#[test]
fn request_timing_counts_from_the_requests_last_byte() {
    let mut h = session_established_with(EngineConfig {
        request_timing_events: true,
        ..config()
    });
    h.events();
    // One request in two segments, the second 10 ms after the first; the answer 5 ms later.
    send!(
        h,
        Seg {
            payload: b"GET /",
            ..TEMPLATE
        }
    );
    expect!(
        h,
        [Want {
            payload: b"GET /",
            ..WANT
        }]
    );
    h.advance(ms(10));
    send!(
        h,
        Seg {
            seq: CLIENT_ISN + 6,
            payload: b" x\r\n",
            ..TEMPLATE
        }
    );
    expect!(
        h,
        [Want {
            seq: CLIENT_ISN + 6,
            payload: b" x\r\n",
            ..WANT
        }]
    );
    let last_byte_sent = h.now;
    h.advance(ms(5));
    respond!(h, Seg { len: 10, ..RESP });
    // Production's answer is not in this capture: the timing waits for it until flushed.
    h.e.flush_report();
    let timing = h.events().into_iter().find_map(|e| match e {
        EngineEvent::RequestTiming { sent, answered, .. } => Some((sent, answered)),
        _ => None,
    });
    assert_eq!(timing, Some((last_byte_sent, h.now)));
    assert_eq!(h.e.stats().requests_answered, 1);
}
