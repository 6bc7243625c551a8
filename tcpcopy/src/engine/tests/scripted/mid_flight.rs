//! Scripted engine tests: mid-flight start.

use super::*;

#[test]
fn unknown_session_gets_a_fake_handshake() {
    let mut h = H::new(config());
    send!(
        h,
        Seg {
            seq: 70_000,
            payload: b"PING\r\n",
            opts: TcpOpts {
                ts: Some((50, 9)),
                ..NO_OPTS
            },
            ..TEMPLATE
        }
    );
    let out = h.sent();
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].seq, out[0].flags), (69_999, SYN));
    assert!(out[0].opts.mss.is_some() && out[0].opts.wscale.is_some());
    assert_eq!(out[0].opts.ts, Some((50, 0)));
    respond!(
        h,
        Seg {
            ack: 70_000,
            opts: TcpOpts {
                ts: Some((4000, 50)),
                ..SYN_ACK.opts
            },
            ..SYN_ACK
        }
    );
    let out = expect!(
        h,
        [Want {
            seq: 70_000,
            payload: b"PING\r\n",
            ..WANT
        }]
    );
    assert_eq!(out[0].opts.ts, Some((50, 4000)));
}

#[test]
fn pure_ack_or_fin_of_an_unknown_session_is_ignored() {
    let mut h = H::new(config());
    send!(
        h,
        Seg {
            flags: ACK,
            ..TEMPLATE
        },
        Seg {
            flags: FIN | ACK,
            ..TEMPLATE
        },
        Seg {
            flags: RST,
            ..TEMPLATE
        }
    );
    expect!(h, []);
    assert_eq!(h.e.session_count(), 0);
}

#[test]
fn our_own_output_is_never_cloned() {
    let same_port = SocketAddr::new(TARGET.ip(), 80);
    let mut h = H::new(EngineConfig {
        mappings: vec![TargetMapping {
            online_ip: None,
            online_port: 80,
            target: same_port,
        }],
        ..config()
    });
    send!(
        h,
        Seg {
            dst: same_port,
            ..CLIENT_SYN
        }
    );
    expect!(h, []);
    send!(h, CLIENT_SYN);
    assert_eq!(h.sent()[0].dst, same_port);
}

#[test]
fn unmapped_or_malformed_packets_are_ignored() {
    let mut h = H::new(config());
    send!(
        h,
        Seg {
            dst: "198.18.0.1:81".parse().unwrap(),
            ..CLIENT_SYN
        }
    );
    h.e.handle_captured(h.now, &[0x45, 0, 0]);
    h.e.handle_captured(h.now, &[]);
    expect!(h, []);
    assert_eq!(h.e.stats().packets_ignored, 3);
}
