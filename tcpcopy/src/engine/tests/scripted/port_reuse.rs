//! Scripted engine tests: port reuse.

use super::*;

#[test]
fn new_syn_on_a_busy_port_replaces_the_session() {
    let ts = |v| TcpOpts {
        ts: Some((v, 0)),
        ..SYN_OPTS
    };
    let mut h = H::new(config());
    send!(
        h,
        Seg {
            opts: ts(5000),
            ..CLIENT_SYN
        }
    );
    h.sent();
    respond!(
        h,
        Seg {
            opts: TcpOpts {
                ts: Some((1, 5000)),
                ..SYN_ACK.opts
            },
            ..SYN_ACK
        }
    );
    h.sent();
    // The client reuses the port with a new ISN and (oddly) a lower TSval.
    send!(
        h,
        Seg {
            seq: 2_000_000,
            opts: ts(100),
            ..CLIENT_SYN
        }
    );
    let out = h.sent();
    assert_eq!(out.len(), 2, "{out:?}");
    assert!(out[0].flags & RST != 0 && out[0].seq == CLIENT_ISN + 1);
    assert_eq!((out[1].flags, out[1].seq), (SYN, 2_000_000));
    let (tsval, _) = out[1].opts.ts.expect("ts");
    assert!(tsval > 5000, "TSval must keep rising per 4-tuple: {tsval}");
    assert_eq!(h.e.session_count(), 1);
    assert_eq!(h.e.stats().aborted_replaced, 1);
    respond!(
        h,
        Seg {
            seq: 1,
            ack: 2_000_001,
            flags: SYN | ACK,
            opts: SYN_ACK.opts,
            ..RESP
        }
    );
    assert_eq!(h.sent()[0].ack, 2);
}

#[test]
fn port_reuse_while_the_clone_still_delivers_moves_the_new_one() {
    let mut h = session_established();
    send!(
        h,
        Seg {
            payload: b"GET / HTTP/1.1\r\n\r\n",
            ..TEMPLATE
        }
    );
    let out = h.sent();
    assert_eq!(out.len(), 1, "{out:?}");
    // The target has not acknowledged the request yet when the client reuses its port.
    send!(
        h,
        Seg {
            seq: 2_000_000,
            ..CLIENT_SYN
        }
    );
    let out = h.sent();
    assert!(out.iter().all(|o| o.flags & RST == 0), "no reset: {out:?}");
    let syn = out.iter().find(|o| o.flags == SYN).expect("new SYN");
    assert_eq!(syn.seq, 2_000_000);
    assert_ne!(syn.src, CLIENT, "the new clone takes another client port");
    assert_eq!(h.e.session_count(), 2);
    let st = h.e.stats();
    assert_eq!((st.reuse_detached, st.aborted_replaced), (1, 0));
    // The old clone still retransmits its request on its own 4-tuple.
    h.now += Duration::from_secs(5);
    h.e.handle_timeout(h.now);
    let out = h.sent();
    assert!(
        out.iter()
            .any(|o| o.src == CLIENT && o.payload.starts_with(b"GET")),
        "{out:?}"
    );
}

#[test]
fn port_reuse_finds_a_free_port_when_every_neighbour_is_taken() {
    // A slow target keeps the clones of a client's last few hundred ports alive (the client
    // takes its ports in sequence): the moved clone has to look past the neighbours.
    let mut h = request_sent();
    for port in CLIENT.port() + 1..CLIENT.port() + 301 {
        send!(
            h,
            Seg {
                src: SocketAddr::new(CLIENT.ip(), port),
                ..CLIENT_SYN
            }
        );
    }
    h.sent();
    assert_eq!(h.e.session_count(), 301);
    send!(
        h,
        Seg {
            seq: 2_000_000,
            ..CLIENT_SYN
        }
    );
    let out = h.sent();
    let syn = out
        .iter()
        .find(|o| o.flags == SYN)
        .unwrap_or_else(|| panic!("no new SYN: {out:?}"));
    let far = syn.src.port();
    assert!(
        !(CLIENT.port()..=CLIENT.port() + 300).contains(&far),
        "a port outside the busy block: {far}"
    );
    let st = h.e.stats();
    assert_eq!((st.reuse_detached, st.refused_ports), (1, 0));
    assert_eq!(h.e.session_count(), 302);
}

#[test]
fn port_reuse_after_a_clean_close_counts_as_completed() {
    let mut h = session_established();
    send!(
        h,
        Seg {
            flags: FIN | ACK,
            ..TEMPLATE
        }
    );
    h.sent();
    respond!(
        h,
        Seg {
            ack: CLIENT_ISN + 2,
            flags: FIN | ACK,
            ..RESP
        }
    );
    h.sent();
    send!(
        h,
        Seg {
            seq: 3_000_000,
            ..CLIENT_SYN
        }
    );
    let out = h.sent();
    assert_eq!((out.len(), out[0].flags), (1, SYN));
    assert_eq!(h.e.stats().sessions_completed, 1);
}
