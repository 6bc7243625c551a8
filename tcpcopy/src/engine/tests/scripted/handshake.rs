//! Scripted engine tests: handshake.

use super::*;

#[test]
fn syn_goes_to_target_with_client_isn_and_options() {
    let mut h = H::new(config());
    send!(
        h,
        Seg {
            opts: TcpOpts {
                ts: Some((777, 0)),
                ..SYN_OPTS
            },
            ..CLIENT_SYN
        }
    );
    let out = h.sent();
    assert_eq!(out.len(), 1);
    let syn = &out[0];
    assert_eq!(
        (syn.src, syn.dst, syn.seq, syn.flags),
        (CLIENT, TARGET, CLIENT_ISN, SYN)
    );
    assert_eq!(syn.opts.mss, Some(1460));
    assert_eq!(syn.opts.wscale, Some(7));
    assert!(syn.opts.sack_perm);
    assert_eq!(syn.opts.ts, Some((777, 0)));
    assert_eq!(
        h.events(),
        vec![EngineEvent::SessionAdded {
            client: CLIENT,
            target: TARGET
        }]
    );
    assert_eq!(h.e.stats().sessions_cloned, 1);
}

#[test]
fn syn_ack_gets_the_third_ack() {
    let mut h = session_syn_sent(config());
    respond!(h, SYN_ACK);
    expect!(h, [Want { flags: ACK, ..WANT }]);
    assert_eq!(h.e.stats().handshakes, 1);
}

#[test]
fn retransmitted_client_syn_is_not_forwarded_twice() {
    let mut h = session_syn_sent(config());
    send!(h, CLIENT_SYN);
    expect!(h, []);
}

#[test]
fn data_before_the_handshake_is_held_in_order() {
    let mut h = session_syn_sent(config());
    send!(
        h,
        Seg {
            seq: CLIENT_ISN + 6,
            payload: b"world",
            ..TEMPLATE
        }
    );
    send!(
        h,
        Seg {
            payload: b"hello",
            ..TEMPLATE
        }
    );
    expect!(h, []);
    respond!(h, SYN_ACK);
    expect!(
        h,
        [Want {
            payload: b"helloworld",
            ..WANT
        }]
    );
}

#[test]
fn syn_is_retransmitted_then_given_up() {
    let mut h = session_syn_sent(config());
    // No RTT measured towards this target yet: RFC 6298's initial RTO of 1 s.
    h.advance(ms(999));
    expect!(h, []);
    h.advance(ms(1));
    expect!(
        h,
        [Want {
            seq: CLIENT_ISN,
            ack: 0,
            flags: SYN,
            payload: b""
        }]
    );
    for _ in 0..20 {
        h.advance(Duration::from_secs(2));
        h.sent();
    }
    let st = h.e.stats();
    assert_eq!(st.aborted_handshake, 1);
    assert_eq!(h.e.session_count(), 0);
    assert!(h.events().contains(&EngineEvent::SessionRemoved {
        client: CLIENT,
        target: TARGET
    }));
}

#[test]
fn new_sessions_start_from_the_rtt_earlier_ones_measured() {
    let mut h = session_syn_sent(config());
    h.advance(ms(100));
    respond!(h, SYN_ACK);
    h.sent();
    // A second connection from another client port, to the same target: its SYN is retried
    // after SRTT + 4·RTTVAR = 100 + 4·50 = 300 ms, not after the initial 1 s.
    let other = SocketAddr::new(CLIENT.ip(), CLIENT.port() + 1);
    send!(
        h,
        Seg {
            src: other,
            ..CLIENT_SYN
        }
    );
    let first = h.sent();
    assert_eq!((first.len(), first[0].flags), (1, SYN));
    h.advance(ms(299));
    assert!(h.sent().is_empty());
    h.advance(ms(1));
    let again = h.sent();
    assert_eq!(again.len(), 1, "{again:?}");
    assert_eq!((again[0].src, again[0].flags), (other, SYN));
}

#[test]
fn target_refusing_the_handshake_ends_the_session_when_the_client_does() {
    let mut h = session_syn_sent(config());
    respond!(
        h,
        Seg {
            seq: 0,
            ack: CLIENT_ISN + 1,
            flags: RST | ACK,
            ..RESP
        }
    );
    send!(
        h,
        Seg {
            payload: b"GET /",
            ..TEMPLATE
        }
    );
    expect!(h, []);
    send!(
        h,
        Seg {
            seq: CLIENT_ISN + 6,
            flags: FIN | ACK,
            ..TEMPLATE
        }
    );
    h.sent();
    assert_eq!(h.e.stats().handshakes_refused, 1);
    assert_eq!(h.e.session_count(), 0);
}

#[test]
fn a_connection_the_target_still_holds_answers_our_syn_and_is_reset_at_its_ack() {
    for ack in [CLIENT_ISN + 5000, CLIENT_ISN + 1] {
        let mut h = session_syn_sent(config());
        // An established connection on this 4-tuple answers our SYN with a challenge ACK at
        // its rcv_nxt: an earlier clone's, or one picked up mid-stream whose next byte is our
        // ISN + 1. A RST exactly there ends it, and our SYN's retransmission opens ours.
        respond!(h, Seg { ack, ..RESP });
        let out = h.sent();
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!((out[0].flags & RST, out[0].seq), (RST, ack));
        assert_eq!(h.e.stats().resets_sent, 1);
    }
}
