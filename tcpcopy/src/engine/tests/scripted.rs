use super::*;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

// ---------------------------------------------------------------- handshake

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
    h.advance(ms(30));
    respond!(h, SYN_ACK);
    h.sent();
    // A second connection from another client port, to the same target: its SYN is retried
    // after SRTT + 4·RTTVAR = 30 + 4·15 = 90 ms, not after the initial 1 s.
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
    h.advance(ms(89));
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

// ---------------------------------------------------------------- mid-flight start

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

// ---------------------------------------------------------------- acks and timestamps

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

// ---------------------------------------------------------------- request pacing

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
    let mut h = session_established();
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

// ---------------------------------------------------------------- window and segmentation

#[test]
fn never_exceeds_the_target_window() {
    static DATA: [u8; 3000] = [7; 3000];
    let mut h = session_syn_sent(config());
    respond!(
        h,
        Seg {
            win: 1000,
            opts: TcpOpts {
                wscale: None,
                ..SYN_ACK.opts
            },
            ..SYN_ACK
        }
    );
    h.sent();
    send!(
        h,
        Seg {
            payload: &DATA,
            ..TEMPLATE
        }
    );
    let out = h.sent();
    assert_eq!(out.iter().map(|o| o.payload.len()).sum::<usize>(), 1000);
    respond!(
        h,
        Seg {
            ack: CLIENT_ISN + 1001,
            win: 1000,
            ..RESP
        }
    );
    let out = h.sent();
    assert_eq!(out.iter().map(|o| o.payload.len()).sum::<usize>(), 1000);
    assert_eq!(out[0].seq, CLIENT_ISN + 1001);
}

#[test]
fn window_scale_applies_to_the_target_window() {
    static DATA: [u8; 3000] = [7; 3000];
    let mut h = session_established(); // target wscale 7
    respond!(h, Seg { win: 10, ..RESP }); // 10 << 7 = 1280 bytes
    send!(
        h,
        Seg {
            payload: &DATA,
            ..TEMPLATE
        }
    );
    let out = h.sent();
    assert_eq!(out.iter().map(|o| o.payload.len()).sum::<usize>(), 1280);
}

#[test]
fn super_segments_are_split_to_the_mss_with_full_checksums() {
    static BIG: [u8; 60_000] = [0x5a; 60_000];
    let mut h = session_syn_sent(config());
    respond!(
        h,
        Seg {
            opts: TcpOpts {
                mss: Some(1000),
                ..SYN_ACK.opts
            },
            ..SYN_ACK
        }
    );
    h.sent();
    // Captured with a bogus (offloaded) checksum: the engine must not care.
    let mut pkt = build(
        &Seg {
            payload: &BIG,
            ..TEMPLATE
        },
        true,
    );
    pkt[36] ^= 0xff;
    h.e.handle_captured(h.now, &pkt);
    let out = h.sent(); // `sent` verifies every checksum
    assert_eq!(out.len(), 60);
    assert!(out.iter().all(|o| o.payload.len() == 1000));
    assert_eq!(out[59].seq, CLIENT_ISN + 1 + 59_000);
}

#[test]
fn mtu_and_mss_flags_limit_segments() {
    static BIG: [u8; 5000] = [1; 5000];
    let mut h = session_established_with(EngineConfig {
        mtu: 1000,
        mss: Some(700),
        ..config()
    });
    send!(
        h,
        Seg {
            payload: &BIG,
            ..TEMPLATE
        }
    );
    let out = h.sent();
    assert!(out.iter().all(|o| o.payload.len() <= 700));
    assert_eq!(out.iter().map(|o| o.payload.len()).sum::<usize>(), 5000);
}

// ---------------------------------------------------------------- retransmission

#[test]
fn rto_retransmits_from_the_first_unacked_byte() {
    let mut h = session_established();
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
            payload: b"abc",
            ..WANT
        }]
    );
    // The handshake measured an RTT of ~0 on the virtual clock: the RTO is min_rto (20 ms).
    h.advance(ms(19));
    expect!(h, []);
    h.advance(ms(1));
    expect!(
        h,
        [Want {
            payload: b"abc",
            ..WANT
        }]
    );
    // Backed off: 40 ms next.
    h.advance(ms(39));
    expect!(h, []);
    h.advance(ms(1));
    expect!(
        h,
        [Want {
            payload: b"abc",
            ..WANT
        }]
    );
    let st = h.e.stats();
    assert_eq!((st.rto_expirations, st.segments_retransmitted), (2, 2));
    respond!(
        h,
        Seg {
            ack: CLIENT_ISN + 4,
            ..RESP
        }
    );
    h.advance(Duration::from_secs(5));
    expect!(h, []);
}

#[test]
fn three_duplicate_acks_trigger_fast_retransmit() {
    static DATA: [u8; 4000] = [3; 4000];
    let mut h = session_established();
    send!(
        h,
        Seg {
            payload: &DATA,
            ..TEMPLATE
        }
    );
    let out = h.sent();
    assert!(out.len() >= 3);
    let first = out[0].payload.len() as u32;
    respond!(
        h,
        Seg {
            ack: CLIENT_ISN + 1 + first,
            ..RESP
        }
    );
    h.sent();
    for _ in 0..2 {
        respond!(
            h,
            Seg {
                ack: CLIENT_ISN + 1 + first,
                ..RESP
            }
        );
        expect!(h, []);
    }
    respond!(
        h,
        Seg {
            ack: CLIENT_ISN + 1 + first,
            ..RESP
        }
    );
    let out = h.sent();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].seq, CLIENT_ISN + 1 + first);
    assert_eq!(h.e.stats().fast_retransmits, 1);
}

#[test]
fn rtt_sample_shortens_the_rto() {
    let mut h = session_established();
    for i in 0..5u32 {
        send!(
            h,
            Seg {
                seq: CLIENT_ISN + 1 + i,
                ack: PROD_ISN + 1 + i,
                payload: b"x",
                ..TEMPLATE
            }
        );
        h.sent();
        h.now += ms(2);
        respond!(
            h,
            Seg {
                ack: CLIENT_ISN + 2 + i,
                len: 1,
                seq: TARGET_ISN + 1 + i,
                ..RESP
            }
        );
        h.sent();
    }
    send!(
        h,
        Seg {
            seq: CLIENT_ISN + 6,
            ack: PROD_ISN + 6,
            payload: b"y",
            ..TEMPLATE
        }
    );
    h.sent();
    h.advance(ms(25));
    let out = h.sent();
    assert_eq!(out.len(), 1, "RTO ≈ min_rto after 2 ms samples: {out:?}");
}

#[test]
fn zero_window_is_probed() {
    let mut h = session_established();
    respond!(h, Seg { win: 0, ..RESP });
    send!(
        h,
        Seg {
            payload: b"data",
            ..TEMPLATE
        }
    );
    expect!(h, []);
    // The window update is lost: the persist timer probes with one byte.
    respond!(h, Seg { win: 0, ..RESP });
    h.advance(ms(20));
    expect!(
        h,
        [Want {
            payload: b"d",
            ..WANT
        }]
    );
    respond!(
        h,
        Seg {
            ack: CLIENT_ISN + 2,
            win: 100,
            ..RESP
        }
    );
    expect!(
        h,
        [Want {
            seq: CLIENT_ISN + 2,
            payload: b"ata",
            ..WANT
        }]
    );
}

// ---------------------------------------------------------------- gaps

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

#[test]
fn gap_found_by_timeout_resets_and_waits_for_the_next_request() {
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

// ---------------------------------------------------------------- FIN and RST

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
    expect!(
        h,
        [
            Want {
                payload: b"bye",
                ..WANT
            },
            Want {
                seq: CLIENT_ISN + 4,
                flags: FIN | ACK,
                ..WANT
            }
        ]
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
    h.advance(Duration::from_secs(3));
    assert_eq!(h.e.session_count(), 0);
    assert_eq!(
        h.events(),
        vec![EngineEvent::SessionRemoved {
            client: CLIENT,
            target: TARGET
        }]
    );
    assert_eq!(h.e.stats().sessions_completed, 1);
    assert_eq!(h.e.memory_used(), 0);
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

// ---------------------------------------------------------------- port reuse

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

// ---------------------------------------------------------------- copies, sampling, rewrite

#[test]
fn copies_get_distinct_client_ports_and_never_collide() {
    let mut h = H::new(EngineConfig {
        copies: 3,
        ..config()
    });
    send!(h, CLIENT_SYN);
    let out = h.sent();
    let mut ports: Vec<u16> = out.iter().map(|o| o.src.port()).collect();
    assert_eq!(ports.len(), 3);
    // A second client on the port copy 1 took: its copies must avoid every live one.
    let other = SocketAddr::new(CLIENT.ip(), ports[1]);
    send!(
        h,
        Seg {
            src: other,
            ..CLIENT_SYN
        }
    );
    let out2 = h.sent();
    assert_eq!(out2.len(), 3);
    ports.extend(out2.iter().map(|o| o.src.port()));
    let mut dedup = ports.clone();
    dedup.sort_unstable();
    dedup.dedup();
    assert_eq!(dedup.len(), 6, "{ports:?}");
    assert_eq!(h.e.session_count(), 6);
    // Responses reach the right copy.
    respond!(
        h,
        Seg {
            dst: out[2].src,
            ack: CLIENT_ISN + 1,
            ..SYN_ACK
        }
    );
    let acks = h.sent();
    assert_eq!((acks.len(), acks[0].src), (1, out[2].src));
}

#[test]
fn copies_with_no_free_address_are_refused() {
    let ip: IpAddr = "198.18.100.1".parse().unwrap();
    let mut h = H::new(EngineConfig {
        copies: 2,
        client_ips: vec![ip],
        port_shift: 0,
        ..config()
    });
    // Fill all shifted ports by many clients... simpler: one address and a huge copy count.
    h.e = Engine::new(EngineConfig {
        copies: 300,
        client_ips: vec![ip],
        ..config()
    });
    send!(h, CLIENT_SYN);
    let st = h.e.stats();
    assert_eq!(st.sessions_cloned + st.refused_ports, 300);
    assert!(st.sessions_cloned >= 256);
}

#[test]
fn client_ip_rewrite_uses_the_list() {
    let list: Vec<IpAddr> = (1..=4)
        .map(|i| IpAddr::V4(Ipv4Addr::new(198, 18, 100, i)))
        .collect();
    let mut h = H::new(EngineConfig {
        client_ips: list.clone(),
        copies: 2,
        ..config()
    });
    send!(h, CLIENT_SYN);
    let out = h.sent();
    assert_eq!(out.len(), 2);
    assert!(out.iter().all(|o| list.contains(&o.src.ip())));
    assert_ne!(out[0].src.ip(), out[1].src.ip());
    assert!(out.iter().all(|o| o.src.port() == CLIENT.port()));
    let ev = h.events();
    assert!(ev.contains(&EngineEvent::SessionAdded {
        client: out[0].src,
        target: TARGET
    }));
}

#[test]
fn percentage_samples_sessions_by_client_hash() {
    let mut h = H::new(EngineConfig {
        percentage: 50,
        ..config()
    });
    let n = 4000u16;
    for p in 0..n {
        let c = SocketAddr::new(
            IpAddr::V4(Ipv4Addr::new(198, 18, (p / 250) as u8, (p % 250) as u8 + 1)),
            30000 + p,
        );
        send!(
            h,
            Seg {
                src: c,
                ..CLIENT_SYN
            }
        );
    }
    let st = h.e.stats();
    let share = st.sessions_cloned as f64 / f64::from(n);
    assert!((0.47..=0.53).contains(&share), "{share}");
    assert_eq!(st.sessions_cloned + st.sampled_out, u64::from(n));
    // Deterministic: the same client is always in or out.
    let before = h.e.stats().sessions_cloned;
    let c = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1)), 30000);
    send!(
        h,
        Seg {
            src: c,
            seq: 5,
            ..CLIENT_SYN
        }
    );
    let replaced = h.e.stats().sessions_cloned - before;
    let sampled = h.e.stats().sampled_out - st.sampled_out;
    assert_eq!(replaced + sampled, 1);
}

// ---------------------------------------------------------------- memory

#[test]
fn memory_budget_refuses_new_sessions() {
    let budget = super::super::SESSION_OVERHEAD * 3 + 100;
    let mut h = H::new(EngineConfig {
        max_memory: budget,
        ..config()
    });
    for p in 0..5u16 {
        send!(
            h,
            Seg {
                src: SocketAddr::new(CLIENT.ip(), 1000 + p),
                ..CLIENT_SYN
            }
        );
    }
    let st = h.e.stats();
    assert_eq!((st.sessions_cloned, st.refused_memory), (3, 2));
    assert!(h.e.memory_used() <= budget);
}

#[test]
fn per_session_buffer_is_capped() {
    static DATA: [u8; 1000] = [9; 1000];
    let mut h = session_syn_sent(EngineConfig {
        max_session_buffer: 2500,
        ..config()
    });
    for i in 0..5u32 {
        send!(
            h,
            Seg {
                seq: CLIENT_ISN + 1 + i * 1000,
                payload: &DATA,
                ..TEMPLATE
            }
        );
    }
    let st = h.e.stats();
    assert_eq!(st.buffer_overflows, 1);
    assert!(h.e.memory_used() <= super::super::SESSION_OVERHEAD + 2500);
}

// ---------------------------------------------------------------- IPv6

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
fn a_reset_before_any_data_is_acked_redoes_the_handshake() {
    let mut h = session_established();
    send!(
        h,
        Seg {
            payload: b"GET / HTTP/1.1\r\n\r\n",
            ..TEMPLATE
        }
    );
    h.sent();
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

#[test]
fn a_reset_after_the_request_was_retransmitted_does_not_send_it_again() {
    // The target may well have answered (its reports were lost) and dropped the connection
    // since: its late reset must not make us deliver the request a second time.
    let mut h = session_established();
    send!(
        h,
        Seg {
            payload: b"GET / HTTP/1.1\r\n\r\n",
            ..TEMPLATE
        }
    );
    h.sent();
    h.advance(Duration::from_secs(3));
    let again = h.sent();
    assert!(
        again.iter().any(|o| o.payload.starts_with(b"GET")),
        "no retransmission: {again:?}"
    );
    respond!(
        h,
        Seg {
            seq: TARGET_ISN + 1,
            flags: RST,
            ..RESP
        }
    );
    let out = h.sent();
    assert!(out.iter().all(|o| o.flags & SYN == 0), "{out:?}");
    let st = h.e.stats();
    assert_eq!((st.handshakes_redone, st.target_resets), (0, 1));
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
    let timing = h.events().into_iter().find_map(|e| match e {
        EngineEvent::RequestTiming { sent, answered, .. } => Some((sent, answered)),
        _ => None,
    });
    assert_eq!(timing, Some((last_byte_sent, h.now)));
    assert_eq!(h.e.stats().requests_answered, 1);
}

// --- memory held after sessions end ---

/// Opens `n` sessions from client ports `first..first + n` (handshake done both ways).
fn open_sessions(h: &mut H, first: u16, n: u16) {
    for port in first..first + n {
        let client = SocketAddr::new(CLIENT.ip(), port);
        send!(
            h,
            Seg {
                src: client,
                ..CLIENT_SYN
            },
            Seg {
                src: client,
                flags: ACK,
                ..TEMPLATE
            }
        );
        respond!(
            h,
            Seg {
                dst: client,
                ..SYN_ACK
            }
        );
        h.sent();
    }
}

/// Resets the sessions of client ports `first..first + n` from the client side.
fn reset_sessions(h: &mut H, first: u16, n: u16) {
    for port in first..first + n {
        send!(
            h,
            Seg {
                src: SocketAddr::new(CLIENT.ip(), port),
                flags: RST,
                ..TEMPLATE
            }
        );
        h.sent();
    }
    h.events();
}

#[test]
fn ended_sessions_do_not_pile_up_in_the_timer_heap() {
    // 20 waves of 1,000 sessions that live past their first retransmission deadline (so each
    // sets its 10-minute idle deadline) and are then reset: every one leaves a stale deadline
    // 10 minutes out. The heap must stay near the live count, not grow with every session.
    let mut h = H::new(config());
    let mut peak = 0;
    for wave in 0..20u16 {
        let first = 2000 + wave * 1000;
        open_sessions(&mut h, first, 1000);
        h.advance(Duration::from_millis(1500));
        assert_eq!(h.e.session_count(), 1000, "wave {wave}");
        reset_sessions(&mut h, first, 1000);
        peak = peak.max(h.e.timers.len());
    }
    assert_eq!(h.e.session_count(), 0);
    assert_eq!(h.e.stats().sessions_client_reset, 20_000);
    assert!(
        peak <= 2 * 2 * 2000 + 1,
        "timer heap reached {peak} entries for at most 1,000 live sessions"
    );
}

#[test]
fn compact_gives_back_what_a_past_peak_left_and_the_engine_goes_on() {
    let mut h = H::new(config());
    open_sessions(&mut h, 2000, 5000);
    h.advance(Duration::from_millis(1500));
    reset_sessions(&mut h, 2000, 5000);
    assert_eq!(h.e.session_count(), 0);
    let before = (h.e.slots.capacity(), h.e.by_target.capacity());
    assert!(before.0 >= 5000 && before.1 >= 5000, "{before:?}");
    h.e.compact();
    assert_eq!(
        (h.e.slots.len(), h.e.free.len(), h.e.timers.len()),
        (0, 0, 0)
    );
    assert!(
        h.e.slots.capacity() < 100 && h.e.by_target.capacity() < 100,
        "slots {} / map {} after compact",
        h.e.slots.capacity(),
        h.e.by_target.capacity()
    );
    // A live session keeps its slot, its timer and its lookups through a compact.
    open_sessions(&mut h, 2000, 3);
    reset_sessions(&mut h, 2000, 2);
    h.e.compact();
    assert_eq!((h.e.session_count(), h.e.slots.len()), (1, 3));
    let client = SocketAddr::new(CLIENT.ip(), 2002);
    send!(
        h,
        Seg {
            src: client,
            payload: b"ping",
            ..TEMPLATE
        }
    );
    let out = h.sent();
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(
        (out[0].src, out[0].payload.as_slice()),
        (client, &b"ping"[..])
    );
    respond!(
        h,
        Seg {
            dst: client,
            ack: CLIENT_ISN + 5,
            ..RESP
        }
    );
    // The session's deadlines still fire: idle past the session timeout, it ends.
    h.advance(Duration::from_secs(601));
    h.sent();
    assert_eq!(h.e.session_count(), 0);
}
