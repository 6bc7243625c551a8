//! Scripted engine tests: shedding connections while the capture falls behind.

use super::*;

const CLIENT2: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 9), 40_002));

/// Two established clones: CLIENT's (from `session_established`) and CLIENT2's.
fn two_sessions() -> H {
    let mut h = session_established();
    send!(
        h,
        Seg {
            src: CLIENT2,
            ..CLIENT_SYN
        },
        Seg {
            src: CLIENT2,
            flags: ACK,
            ..TEMPLATE
        }
    );
    respond!(
        h,
        Seg {
            dst: CLIENT2,
            ..SYN_ACK
        }
    );
    let out = h.sent();
    assert_eq!(out.len(), 2, "SYN and handshake ACK: {out:?}");
    h.events();
    assert_eq!(h.e.session_count(), 2);
    h
}

fn data(src: SocketAddr, at: u32, payload: &'static [u8]) -> Seg {
    Seg {
        src,
        seq: CLIENT_ISN + 1 + at,
        payload,
        ..TEMPLATE
    }
}

#[test]
fn new_connections_are_shed_while_behind_and_stay_shed_until_they_end() {
    let mut h = H::new(config());
    h.e.set_shedding(true);
    send!(h, CLIENT_SYN);
    expect!(h, []);
    assert!(h.events().is_empty(), "nothing registered with intercept");
    h.e.set_shedding(false);
    // The overload is over, but this connection was not cloned from its start: none of it
    // is, not even as a clone started mid-stream.
    send!(h, data(CLIENT, 0, b"GET / HTTP/1.1\r\n\r\n"));
    expect!(h, []);
    assert_eq!(h.e.session_count(), 0);
    let st = h.e.stats();
    assert_eq!(
        (st.shed_new, st.shed_segments, st.sessions_cloned),
        (1, 2, 0)
    );
    // Its FIN ends it; a later connection from another port is cloned as usual.
    send!(
        h,
        Seg {
            flags: FIN | ACK,
            ..data(CLIENT, 18, b"")
        }
    );
    assert_eq!(h.e.shed_flows(), 0);
    send!(
        h,
        Seg {
            src: CLIENT2,
            ..CLIENT_SYN
        }
    );
    let out = h.sent();
    assert_eq!((out.len(), out[0].flags, out[0].src), (1, SYN, CLIENT2));
}

#[test]
fn a_shed_connection_is_cloned_again_from_its_next_request_once_caught_up() {
    let mut h = H::new(config());
    h.e.set_shedding(true);
    send!(h, CLIENT_SYN, data(CLIENT, 0, b"POST /up HTTP/1.1\r\n"));
    h.e.set_shedding(false);
    h.e.allow_resume();
    // The rest of the request the overload cut is not cloned (same acknowledgment: the
    // server has not answered yet).
    send!(h, data(CLIENT, 19, b"body"));
    expect!(h, []);
    // The server answered 100 bytes; the client's next request acknowledges them.
    send!(
        h,
        Seg {
            ack: PROD_ISN + 1 + 100,
            ..data(CLIENT, 23, b"GET / HTTP/1.1\r\n\r\n")
        }
    );
    let out = h.sent();
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(
        (out[0].flags, out[0].seq),
        (SYN, CLIENT_ISN + 23),
        "a clone from this request on, as for a connection open before tcpcopy started"
    );
    let st = h.e.stats();
    assert_eq!((st.shed_new, st.shed_segments, st.shed_resumed), (1, 3, 1));
    assert_eq!(h.e.shed_flows(), 0);
}

#[test]
fn a_connection_already_open_is_shed_when_its_first_segment_comes_while_behind() {
    let mut h = H::new(config());
    h.e.set_shedding(true);
    // Data of a connection with no clone yet would start one mid-stream.
    send!(h, data(CLIENT, 0, b"PING\r\n"));
    h.e.set_shedding(false);
    send!(h, data(CLIENT, 6, b"PING\r\n"));
    expect!(h, []);
    let st = h.e.stats();
    assert_eq!(
        (st.shed_new, st.shed_segments, st.sessions_cloned),
        (1, 2, 0)
    );
    // A pure ACK is never a new connection: not shed, not remembered.
    h.e.set_shedding(true);
    send!(
        h,
        Seg {
            src: CLIENT2,
            flags: ACK,
            ..TEMPLATE
        }
    );
    assert_eq!((h.e.stats().shed_new, h.e.shed_flows()), (1, 1));
}

#[test]
fn the_heaviest_clone_is_reset_and_shed_and_the_others_carry_on() {
    let mut h = two_sessions();
    send!(
        h,
        data(CLIENT, 0, b"small\r\n"),
        data(CLIENT2, 0, b"a larger request\r\n")
    );
    assert_eq!(h.sent().len(), 2);
    assert_eq!(h.e.shed_heaviest(h.now, 0.0), 1);
    let out = h.sent();
    // RSTs at the acknowledged and the last sequence number, as every reset of a clone.
    assert!(
        !out.is_empty() && out.iter().all(|o| o.src == CLIENT2 && o.flags & RST != 0),
        "the target's end is reset, nothing else is sent: {out:?}"
    );
    let removed: Vec<_> = h
        .events()
        .into_iter()
        .filter_map(|e| match e {
            EngineEvent::SessionRemoved { client, .. } => Some(client),
            _ => None,
        })
        .collect();
    assert_eq!(removed, vec![CLIENT2], "intercept forgets the shed clone");
    assert_eq!(h.e.session_count(), 1);
    let st = h.e.stats();
    assert_eq!(
        (st.shed_sessions, st.aborted()),
        (1, 0),
        "shed is not an abort"
    );
    // The shed connection's next request goes nowhere, the other's goes out as usual.
    respond!(
        h,
        Seg {
            ack: CLIENT_ISN + 1 + 7,
            len: 5,
            ..RESP
        }
    );
    send!(
        h,
        data(CLIENT2, 18, b"more\r\n"),
        Seg {
            ack: PROD_ISN + 1 + 5,
            ..data(CLIENT, 7, b"next\r\n")
        }
    );
    h.advance(ms(10));
    let out = h.sent();
    assert!(
        out.iter().all(|o| o.src == CLIENT) && out.iter().any(|o| o.payload == b"next\r\n"),
        "{out:?}"
    );
    assert_eq!(h.e.stats().shed_segments, 1);
}

#[test]
fn nothing_is_shed_when_no_clone_sent_a_byte_since_the_last_look() {
    let mut h = two_sessions();
    assert_eq!(h.e.shed_heaviest(h.now, 0.5), 0);
    send!(h, data(CLIENT, 0, b"x"));
    assert_eq!(h.e.shed_heaviest(h.now, 0.5), 1);
    assert_eq!(
        h.e.shed_heaviest(h.now, 0.5),
        0,
        "its bytes were counted once"
    );
    assert_eq!(h.e.stats().shed_sessions, 1);
}

#[test]
fn a_port_used_again_after_the_overload_is_cloned() {
    let mut h = H::new(config());
    h.e.set_shedding(true);
    send!(h, CLIENT_SYN);
    h.e.set_shedding(false);
    // The client vanished without a FIN the capture saw, and its port comes back.
    send!(
        h,
        Seg {
            seq: CLIENT_ISN + 100_000,
            ..CLIENT_SYN
        }
    );
    let out = h.sent();
    assert_eq!((out.len(), out[0].flags), (1, SYN));
    assert_eq!(h.e.shed_flows(), 0);
}

#[test]
fn shed_connections_are_forgotten_after_the_session_timeout() {
    let mut h = H::new(EngineConfig {
        session_timeout: Duration::from_secs(30),
        ..config()
    });
    h.e.set_shedding(true);
    send!(h, CLIENT_SYN);
    h.e.expire_shed(h.now + Duration::from_secs(29));
    assert_eq!(h.e.shed_flows(), 1);
    h.e.expire_shed(h.now + Duration::from_secs(30));
    assert_eq!(h.e.shed_flows(), 0);
}

#[test]
fn as_many_heavy_clones_are_shed_as_carried_the_share_asked() {
    const CLIENT3: SocketAddr =
        SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 9), 40_003));
    let shed_with = |share: f64| {
        let mut h = two_sessions();
        send!(
            h,
            Seg {
                src: CLIENT3,
                ..CLIENT_SYN
            }
        );
        h.sent();
        // 60, 30 and 10 bytes since the last look.
        send!(
            h,
            data(CLIENT, 0, &[b'a'; 60]),
            data(CLIENT2, 0, &[b'b'; 30]),
            data(CLIENT3, 0, &[b'c'; 10])
        );
        h.sent();
        let n = h.e.shed_heaviest(h.now, share);
        // The RSTs go out and the shed clones are gone.
        h.sent();
        // Which connections are shed now: their next segment is ignored.
        let shed: Vec<bool> = [CLIENT, CLIENT2, CLIENT3]
            .iter()
            .map(|&c| {
                let before = h.e.stats().shed_segments;
                send!(h, data(c, 100, b"z"));
                h.e.stats().shed_segments > before
            })
            .collect();
        (n, shed)
    };
    // The heaviest alone carried 60 %, the two heaviest 90 %.
    assert_eq!(
        shed_with(0.0),
        (1, vec![true, false, false]),
        "at least one"
    );
    assert_eq!(shed_with(0.6), (1, vec![true, false, false]));
    assert_eq!(shed_with(0.61), (2, vec![true, true, false]));
    assert_eq!(shed_with(0.9), (2, vec![true, true, false]));
    assert_eq!(shed_with(1.0), (3, vec![true, true, true]));
}

#[test]
fn shed_connections_come_back_one_per_allowance() {
    let mut h = H::new(config());
    h.e.set_shedding(true);
    for c in [CLIENT, CLIENT2] {
        send!(
            h,
            Seg {
                src: c,
                ..CLIENT_SYN
            },
            data(c, 0, b"req1\r\n")
        );
    }
    h.e.set_shedding(false);
    let next = |c| Seg {
        ack: PROD_ISN + 1 + 10,
        ..data(c, 6, b"req2\r\n")
    };
    // Not allowed yet: the next requests stay shed.
    send!(h, next(CLIENT), next(CLIENT2));
    expect!(h, []);
    h.e.allow_resume();
    let later = |c| Seg {
        ack: PROD_ISN + 1 + 20,
        ..data(c, 12, b"req3\r\n")
    };
    send!(h, later(CLIENT), later(CLIENT2));
    let out = h.sent();
    assert_eq!(out.len(), 1, "one connection back: {out:?}");
    assert_eq!((out[0].src, out[0].flags), (CLIENT, SYN));
    assert_eq!((h.e.stats().shed_resumed, h.e.shed_flows()), (1, 1));
    // An allowance given while shedding does not count.
    h.e.set_shedding(true);
    h.e.allow_resume();
    h.e.set_shedding(false);
    send!(
        h,
        Seg {
            ack: PROD_ISN + 1 + 30,
            ..data(CLIENT2, 18, b"req4\r\n")
        }
    );
    expect!(h, []);
}

#[test]
fn a_shed_uploads_buffer_serves_the_next_upload_without_new_memory() {
    static PART: [u8; 60_000] = [7; 60_000];
    let mut h = two_sessions();
    let idle = h.e.memory_used();
    for i in 0..8u32 {
        send!(h, data(CLIENT, i * 60_000, &PART));
    }
    let loaded = h.e.memory_used();
    assert!(
        loaded >= idle + 480_000,
        "the upload is buffered: {idle} -> {loaded}"
    );
    h.sent();
    assert_eq!(h.e.shed_heaviest(h.now, 0.0), 1);
    // Its chunks wait for the next burst, still counted; the sessions hold none.
    assert_eq!(h.e.memory_used(), loaded);
    assert!(h.e.memory_in_sessions() < idle + 60_000);
    for i in 0..8u32 {
        send!(h, data(CLIENT2, i * 60_000, &PART));
    }
    assert_eq!(
        h.e.memory_used(),
        loaded,
        "the other session's upload took the same chunks"
    );
}
