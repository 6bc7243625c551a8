//! Scripted engine tests: copies, sampling, rewrite.

use super::*;

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

#[test]
fn a_reused_port_gets_every_copy_although_one_copy_of_the_old_connection_ended_early() {
    let mut h = H::new(EngineConfig {
        copies: 2,
        ..config()
    });
    send!(h, CLIENT_SYN);
    let out = h.sent();
    assert_eq!(out.len(), 2);
    // Copy 0 is answered; copy 1 is refused.
    respond!(
        h,
        Seg {
            dst: out[0].src,
            ack: CLIENT_ISN + 1,
            ..SYN_ACK
        }
    );
    respond!(
        h,
        Seg {
            dst: out[1].src,
            seq: 0,
            ack: CLIENT_ISN + 1,
            flags: RST | ACK,
            ..RESP
        }
    );
    h.sent();
    // The client ends the connection: the refused copy goes, the other closes with the target.
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
            dst: out[0].src,
            ack: CLIENT_ISN + 2,
            flags: FIN | ACK,
            ..RESP
        }
    );
    h.sent();
    assert_eq!(h.e.session_count(), 1, "copy 0 lingers, copy 1 is gone");
    // A new connection on the same client port (a new ISN): both copies again.
    send!(
        h,
        Seg {
            seq: CLIENT_ISN + 100_000,
            ..CLIENT_SYN
        }
    );
    let syns: Vec<_> = h
        .sent()
        .into_iter()
        .filter(|o| o.flags & SYN != 0)
        .collect();
    assert_eq!(syns.len(), 2, "{syns:?}");
    assert_ne!(syns[0].src, syns[1].src);
    assert_eq!(h.e.session_count(), 2);
    assert_eq!(h.e.stats().sessions_cloned, 4);
}

#[test]
fn a_clone_lingering_in_time_wait_gives_its_address_when_no_other_is_free() {
    let ip: IpAddr = "198.18.100.1".parse().unwrap();
    let mut h = H::new(EngineConfig {
        client_ips: vec![ip],
        ..config()
    });
    // 256 connections, each cloned on the next free port of the one client address, each
    // closed both ways: their clones linger in TIME_WAIT on every candidate port.
    for i in 0..256u16 {
        let c = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 18, 5, i as u8)), 40000);
        send!(
            h,
            Seg {
                src: c,
                ..CLIENT_SYN
            }
        );
        let syn = h.sent();
        assert_eq!(syn.len(), 1, "connection {i}: {syn:?}");
        respond!(
            h,
            Seg {
                dst: syn[0].src,
                ack: CLIENT_ISN + 1,
                ..SYN_ACK
            }
        );
        send!(
            h,
            Seg {
                src: c,
                flags: FIN | ACK,
                ..TEMPLATE
            }
        );
        h.sent();
        respond!(
            h,
            Seg {
                dst: syn[0].src,
                ack: CLIENT_ISN + 2,
                flags: FIN | ACK,
                ..RESP
            }
        );
        h.sent();
    }
    assert_eq!(h.e.session_count(), 256);
    // One more connection: no candidate is free, so it takes over a lingering clone's.
    let c = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 18, 6, 1)), 40000);
    send!(
        h,
        Seg {
            src: c,
            ..CLIENT_SYN
        }
    );
    let syn = h.sent();
    let st = h.e.stats();
    assert_eq!(
        (syn.len(), st.refused_ports, st.linger_taken_over),
        (1, 0, 1),
        "{syn:?}"
    );
    assert_eq!(syn[0].src.ip(), ip);
    assert_eq!((h.e.session_count(), st.sessions_completed), (256, 1));
}
