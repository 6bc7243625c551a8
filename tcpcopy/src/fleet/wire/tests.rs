use super::*;
use proptest::prelude::*;

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn open() -> FleetRecord {
    FleetRecord::Open {
        client: addr("198.18.0.1:40000"),
        server: addr("198.18.1.1:6379"),
        ts: 1_700_000_000_000_000_000,
        syn_seen: true,
        host: "prod-1".into(),
    }
}

fn data(dir: Dir, new_message: bool, bytes: &'static [u8]) -> FleetRecord {
    FleetRecord::Data {
        dir,
        ts: 1_700_000_000_000_001_000,
        new_message,
        server_seen: dir == Dir::Server,
        bytes: Bytes::from_static(bytes),
    }
}

fn close() -> FleetRecord {
    FleetRecord::Close {
        ts: 1_700_000_000_000_002_000,
        reason: CloseReason::Fin,
        partial: false,
    }
}

fn decode_all(msgs: Vec<Vec<u8>>) -> Vec<Part> {
    msgs.into_iter()
        .map(|m| decode(&Bytes::from(m)).expect("decodes"))
        .collect()
}

#[test]
fn a_small_session_is_one_last_part() {
    let mut w = SessionWriter::new(7, 1 << 20);
    let recs = vec![
        open(),
        data(Dir::Client, true, b"*1\r\n$4\r\nPING\r\n"),
        data(Dir::Server, false, b"+PONG\r\n"),
        FleetRecord::Fin {
            dir: Dir::Client,
            ts: 5,
        },
        close(),
    ];
    for r in &recs {
        w.push(r);
    }
    let parts = decode_all(w.finish());
    assert_eq!(parts.len(), 1);
    assert_eq!(parts[0].session, 7);
    assert_eq!(parts[0].part, 0);
    assert!(parts[0].last);
    assert_eq!(parts[0].records, recs);
}

#[test]
fn header_bytes_are_as_documented() {
    let mut w = SessionWriter::new(0x0102_0304_0506_0708, 1 << 20);
    w.push(&FleetRecord::Fin {
        dir: Dir::Server,
        ts: 9,
    });
    let m = w.finish().remove(0);
    assert_eq!(
        &m[..HEADER_LEN],
        &[b'T', b'C', b'P', b'F', 1, 1, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 0]
    );
    assert_eq!(
        &m[HEADER_LEN..],
        &[3, 0, 0, 0, 9, 1, 0, 0, 0, 0, 0, 0, 0, 9]
    );
}

#[test]
fn large_data_is_cut_into_parts_within_the_payload_limit() {
    let big: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
    let mut w = SessionWriter::new(1, 1024);
    w.push(&open());
    w.push(&FleetRecord::Data {
        dir: Dir::Client,
        ts: 3,
        new_message: true,
        server_seen: false,
        bytes: Bytes::from(big.clone()),
    });
    w.push(&close());
    let msgs = w.finish();
    assert!(msgs.len() >= 10, "{} parts", msgs.len());
    assert!(msgs.iter().all(|m| m.len() <= 1024));
    let parts = decode_all(msgs);
    for (i, p) in parts.iter().enumerate() {
        assert_eq!(p.part as usize, i);
        assert_eq!(p.last, i == parts.len() - 1);
    }
    let recs = merge_data(parts.into_iter().flat_map(|p| p.records).collect());
    assert_eq!(recs.len(), 3);
    let FleetRecord::Data {
        bytes, new_message, ..
    } = &recs[1]
    else {
        panic!("not data: {:?}", recs[1]);
    };
    assert!(new_message);
    assert_eq!(bytes[..], big[..]);
}

#[test]
fn foreign_and_other_versions_are_refused() {
    assert_eq!(
        decode(&Bytes::from_static(b"hello")),
        Err(FormatError::Foreign)
    );
    assert_eq!(decode(&Bytes::new()), Err(FormatError::Foreign));
    let mut m = SessionWriter::new(1, 4096).finish().remove(0);
    m[4] = 2;
    assert_eq!(decode(&Bytes::from(m)), Err(FormatError::Version(2)));
}

#[test]
fn damage_is_an_error_naming_the_offset() {
    let mut w = SessionWriter::new(1, 4096);
    w.push(&open());
    let m = w.finish().remove(0);
    // Cut anywhere but right after the header (a message of no records is valid).
    for cut in (5..m.len()).filter(|c| *c != HEADER_LEN) {
        let e = decode(&Bytes::copy_from_slice(&m[..cut])).unwrap_err();
        assert!(matches!(e, FormatError::Truncated { .. }), "cut {cut}: {e}");
    }
    let mut bad = m.clone();
    bad[HEADER_LEN + RECORD_HEADER_LEN] = 5; // address family
    assert_eq!(
        decode(&Bytes::from(bad)),
        Err(FormatError::Bad {
            offset: HEADER_LEN + RECORD_HEADER_LEN + 1,
            what: "address family"
        })
    );
}

#[test]
fn unknown_record_kinds_are_skipped() {
    let mut w = SessionWriter::new(1, 4096);
    w.push(&close());
    let mut m = w.finish().remove(0);
    m.extend_from_slice(&[99, 0, 0, 0, 2, 0xaa, 0xbb]);
    let p = decode(&Bytes::from(m)).unwrap();
    assert_eq!(p.records, vec![close()]);
    assert_eq!(p.unknown_records, 1);
}

#[test]
fn ids_and_partitions_are_stable() {
    let c = addr("198.18.0.1:40000");
    let s = addr("198.18.1.1:6379");
    let id = session_id("h", c, s, 1);
    assert_eq!(id, session_id("h", c, s, 1));
    assert_ne!(id, session_id("h2", c, s, 1));
    assert_ne!(id, session_id("h", c, s, 2));
    assert_eq!(message_id(0xab, 3), "00000000000000ab-3");
    // Sessions spread over the partitions.
    let mut seen = [0u32; 8];
    for port in 0..800u16 {
        let id = session_id("h", addr(&format!("198.18.0.1:{}", 1000 + port)), s, 1);
        seen[partition(id, 8) as usize] += 1;
    }
    assert!(seen.iter().all(|n| *n > 50), "{seen:?}");
}

fn arb_addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, p)| SocketAddr::new(IpAddr::from(ip), p)),
        (any::<[u8; 16]>(), any::<u16>()).prop_map(|(ip, p)| SocketAddr::new(IpAddr::from(ip), p)),
    ]
}

fn arb_dir() -> impl Strategy<Value = Dir> {
    prop_oneof![Just(Dir::Client), Just(Dir::Server)]
}

fn arb_record() -> impl Strategy<Value = FleetRecord> {
    prop_oneof![
        (
            arb_addr(),
            arb_addr(),
            any::<u64>(),
            any::<bool>(),
            "[a-z0-9é.-]{0,40}"
        )
            .prop_map(|(client, server, ts, syn_seen, host)| FleetRecord::Open {
                client,
                server,
                ts,
                syn_seen,
                host
            }),
        (
            arb_dir(),
            any::<u64>(),
            any::<bool>(),
            any::<bool>(),
            proptest::collection::vec(any::<u8>(), 0..3000)
        )
            .prop_map(|(dir, ts, new_message, server_seen, b)| FleetRecord::Data {
                dir,
                ts,
                new_message,
                server_seen,
                bytes: Bytes::from(b)
            }),
        (arb_dir(), any::<u64>()).prop_map(|(dir, ts)| FleetRecord::Fin { dir, ts }),
        (any::<u64>(), any::<u8>(), any::<bool>()).prop_map(|(ts, r, partial)| {
            FleetRecord::Close {
                ts,
                reason: CloseReason::from_u8(r),
                partial,
            }
        }),
    ]
}

proptest! {
    /// Any record sequence, cut at any payload limit, decodes back to itself (DATA records
    /// split by the cut joined again), with every message within the limit.
    #[test]
    fn round_trip(recs in proptest::collection::vec(arb_record(), 0..20),
                  max in MIN_PAYLOAD..8192usize, session in any::<u64>()) {
        let mut w = SessionWriter::new(session, max);
        for r in &recs {
            w.push(r);
        }
        let msgs = w.finish();
        prop_assert!(msgs.iter().all(|m| m.len() <= max));
        let parts = decode_all(msgs);
        prop_assert!(parts.last().is_some_and(|p| p.last));
        for (i, p) in parts.iter().enumerate() {
            prop_assert_eq!(p.part as usize, i);
            prop_assert_eq!(p.session, session);
            prop_assert_eq!(p.last, i + 1 == parts.len());
        }
        let back = merge_data(parts.into_iter().flat_map(|p| p.records).collect());
        prop_assert_eq!(back, merge_data(recs));
    }

    /// Arbitrary bytes never panic the decoder.
    #[test]
    fn decoder_never_panics(mut data in proptest::collection::vec(any::<u8>(), 0..512)) {
        if data.len() >= 5 && data[0] & 1 == 0 {
            data[..5].copy_from_slice(b"TCPF\x01");
        }
        fuzz_decode(&data);
    }
}
