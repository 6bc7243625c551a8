use super::*;
use bytes::BytesMut;
use proptest::prelude::*;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};

/// `SessionAdd { 198.18.0.1:40000 → 198.18.0.2:6379 }` on the wire.
const SESSION_ADD_V4: [u8; 19] = [
    0, 0, 0, 15, // len
    2,  // type
    4, 198, 18, 0, 1, 0x9c, 0x40, // client
    4, 198, 18, 0, 2, 0x18, 0xeb, // target
];

/// A SYN-ACK from 198.18.0.2:6379 to 198.18.0.1:40000 with MSS and SACK-permitted options.
const SYN_ACK_V4: [u8; 48] = [
    0x45, 0, 0, 48, 0, 0, 0x40, 0, 64, 6, 0, 0, 198, 18, 0, 2, 198, 18, 0, 1, // IPv4
    0x18, 0xeb, 0x9c, 0x40, 0, 0, 0, 1, 0, 0, 0, 2, 0x70, 0x12, 0xff, 0xff, 0, 0, 0, 0, // TCP
    2, 4, 0x05, 0xb4, 4, 2, 1, 1, // options
];

fn decode_all(bytes: &[u8]) -> Result<Vec<Message>, ProtoError> {
    let mut d = FrameDecoder::new();
    let mut b = BytesMut::from(bytes);
    let mut v = Vec::new();
    while let Some(m) = d.decode(&mut b)? {
        v.push(m);
    }
    assert!(b.is_empty(), "left over: {b:?}");
    Ok(v)
}

fn frame(m: &Message) -> BytesMut {
    let mut b = BytesMut::new();
    encode(m, &mut b).unwrap();
    b
}

#[test]
fn session_add_fixture() {
    let m = Message::SessionAdd {
        client: "198.18.0.1:40000".parse().unwrap(),
        target: "198.18.0.2:6379".parse().unwrap(),
    };
    assert_eq!(&frame(&m)[..], &SESSION_ADD_V4[..]);
    assert_eq!(decode_all(&SESSION_ADD_V4).unwrap(), vec![m]);
}

#[test]
fn responses_are_slices_of_the_frame() {
    let m = Message::Responses {
        headers: vec![Bytes::from_static(&SYN_ACK_V4); 3],
    };
    let f = frame(&m);
    assert_eq!(f.len(), 4 + 1 + 2 + 3 * (2 + 48));
    let mut b = f.clone();
    let frame_ptr = b.as_ptr() as usize;
    let Some(Message::Responses { headers }) = FrameDecoder::new().decode(&mut b).unwrap() else {
        panic!()
    };
    assert_eq!(headers.len(), 3);
    // Zero copy: each header points into the received buffer.
    let p = headers[1].as_ptr() as usize;
    assert!(p > frame_ptr && p < frame_ptr + f.len());
}

#[test]
fn builder_splits_when_full() {
    let mut b = ResponsesBuilder::with_max_frame_len(1000);
    let mut frames = Vec::new();
    for _ in 0..50 {
        if !b.push(&SYN_ACK_V4).unwrap() {
            frames.push(b.finish().unwrap());
            assert!(b.push(&SYN_ACK_V4).unwrap());
        }
    }
    frames.extend(b.finish());
    assert!(b.finish().is_none());
    let mut all = BytesMut::new();
    for f in &frames {
        assert!(f.len() <= 1000);
        all.extend_from_slice(f);
    }
    let msgs = decode_all(&all).unwrap();
    let n: usize = msgs
        .iter()
        .map(|m| match m {
            Message::Responses { headers } => headers.len(),
            _ => 0,
        })
        .sum();
    assert_eq!(n, 50);
    assert_eq!(frames.len(), 3);
}

#[test]
fn hostile_length_is_rejected_from_the_prefix_alone() {
    let mut d = FrameDecoder::new();
    let mut b = BytesMut::from(&[0xff, 0xff, 0xff, 0xff][..]);
    assert_eq!(
        d.decode(&mut b),
        Err(ProtoError::FrameTooLong {
            len: 0xffff_ffff + 4,
            max: MAX_FRAME_LEN,
            offset: 0
        })
    );
    assert!(b.capacity() < 1024, "nothing reserved for a hostile frame");
    // Stays failed.
    assert!(d.decode(&mut BytesMut::from(&SESSION_ADD_V4[..])).is_err());
    // A small decoder (intercept's) rejects even a plausible-looking big Responses.
    let mut d = FrameDecoder::with_max_frame_len(4096);
    let mut b = BytesMut::from(&[0, 1, 0, 0][..]);
    assert!(matches!(
        d.decode(&mut b),
        Err(ProtoError::FrameTooLong { .. })
    ));
    // A Ping claiming a body is rejected at its fifth byte, before the body arrives.
    let mut b = BytesMut::from(&[0, 0, 0x10, 0, 5][..]);
    assert_eq!(
        FrameDecoder::new().decode(&mut b),
        Err(ProtoError::BadLength {
            what: "Ping",
            len: 0xfff,
            offset: 0
        })
    );
}

#[test]
fn errors_say_what_and_where() {
    let ping = frame(&Message::Ping);
    let mut s = ping.to_vec();
    // Second frame: SessionAdd with family 5 in the client address.
    let mut bad = SESSION_ADD_V4;
    bad[5] = 5;
    s.extend_from_slice(&bad);
    assert_eq!(
        decode_all(&s),
        Err(ProtoError::Invalid {
            what: "session client address",
            value: 5,
            offset: 5 + 5
        })
    );
    let mut bad = SESSION_ADD_V4;
    bad[17] = 0;
    bad[18] = 0; // target port 0
    assert_eq!(
        decode_all(&bad),
        Err(ProtoError::Invalid {
            what: "session target address",
            value: 0,
            offset: 17
        })
    );
    assert_eq!(
        decode_all(&[0, 0, 0, 0]),
        Err(ProtoError::EmptyFrame { offset: 0 })
    );
    assert_eq!(
        decode_all(&[0, 0, 0, 1, 99]),
        Err(ProtoError::UnknownType { ty: 99, offset: 4 })
    );
    // Mixed families.
    let mut v6 = frame(&Message::SessionAdd {
        client: "[2001:db8::1]:1000".parse().unwrap(),
        target: "[2001:db8::2]:80".parse().unwrap(),
    })
    .to_vec();
    v6[24] = 4; // target family byte → 4, body then too long for v4
    assert!(decode_all(&v6).is_err());
    // Trailing bytes after a SessionAdd (length grown by one).
    let mut t = SESSION_ADD_V4.to_vec();
    t[3] += 1;
    t.push(0);
    assert_eq!(
        decode_all(&t),
        Err(ProtoError::Trailing {
            what: "SessionAdd",
            extra: 1,
            offset: 19
        })
    );
    // Hello with a bad role.
    let mut h = frame(&Message::Hello {
        version: 1,
        role: Role::Tcpcopy,
        instance: 3,
    })
    .to_vec();
    h[7] = 9;
    assert_eq!(
        decode_all(&h),
        Err(ProtoError::Invalid {
            what: "Hello role",
            value: 9,
            offset: 7
        })
    );
}

#[test]
fn bad_response_headers_are_rejected() {
    let good = frame(&Message::Responses {
        headers: vec![Bytes::from_static(&SYN_ACK_V4)],
    })
    .to_vec();
    let hdr_at = 4 + 1 + 2 + 2;
    let cases: [(usize, u8, &str); 5] = [
        (0, 0x55, "IP version is neither 4 nor 6"),
        (9, 17, "IPv4 protocol is not TCP"),
        (20 + 12, 0x50, "length differs from IP + TCP header lengths"),
        (6, 0x20, "IPv4 fragment"),
        (3, 20, "IPv4 total length shorter than the headers"),
    ];
    for (i, v, reason) in cases {
        let mut f = good.clone();
        f[hdr_at + i] = v;
        match decode_all(&f) {
            Err(ProtoError::BadHeader {
                index: 0,
                reason: r,
                ..
            }) => assert_eq!(r, reason),
            other => panic!("byte {i}: {other:?}"),
        }
    }
    let mut zero = good.clone();
    zero[6] = 0;
    assert!(matches!(
        decode_all(&zero),
        Err(ProtoError::Invalid {
            what: "Responses count",
            value: 0,
            offset: 5
        })
    ));
    let mut many = good;
    many[5] = 0xff;
    assert!(matches!(
        decode_all(&many),
        Err(ProtoError::Invalid {
            what: "Responses count",
            ..
        })
    ));
    assert!(encode(
        &Message::Responses { headers: vec![] },
        &mut BytesMut::new()
    )
    .is_err());
    assert!(encode(
        &Message::Responses {
            headers: vec![Bytes::from_static(&[0x45; 30])]
        },
        &mut BytesMut::new()
    )
    .is_err());
}

#[test]
fn later_hello_version_may_carry_more() {
    let mut h = frame(&Message::Hello {
        version: 9,
        role: Role::Intercept,
        instance: 3,
    })
    .to_vec();
    h[3] += 4;
    h.extend_from_slice(&[1, 2, 3, 4]);
    assert_eq!(
        decode_all(&h).unwrap(),
        vec![Message::Hello {
            version: 9,
            role: Role::Intercept,
            instance: 3
        }]
    );
    let mut h = frame(&Message::Hello {
        version: VERSION,
        role: Role::Intercept,
        instance: 3,
    })
    .to_vec();
    h[3] += 1;
    h.push(0);
    assert!(matches!(decode_all(&h), Err(ProtoError::Trailing { .. })));
}

#[test]
fn fuzz_decode_smoke() {
    crate::fuzz::proto_decoder(&SESSION_ADD_V4);
    crate::fuzz::proto_decoder(&[0xff; 64]);
    crate::fuzz::proto_decoder(&[]);
    let mut all = frame(&Message::Responses {
        headers: vec![Bytes::from_static(&SYN_ACK_V4)],
    })
    .to_vec();
    all.extend_from_slice(&frame(&Message::Pong));
    crate::fuzz::proto_decoder(&all);
}

fn ip_strategy(v6: bool) -> BoxedStrategy<IpAddr> {
    if v6 {
        any::<u128>()
            .prop_map(|x| IpAddr::V6(Ipv6Addr::from(x)))
            .prop_filter("unicast", |ip| !ip.is_unspecified() && !ip.is_multicast())
            .boxed()
    } else {
        any::<u32>()
            .prop_map(|x| IpAddr::V4(Ipv4Addr::from(x)))
            .prop_filter("unicast", |ip| !ip.is_unspecified() && !ip.is_multicast())
            .boxed()
    }
}

fn addr(ip: IpAddr, port: u16) -> SocketAddr {
    match ip {
        IpAddr::V4(i) => SocketAddr::V4(SocketAddrV4::new(i, port)),
        IpAddr::V6(i) => SocketAddr::V6(SocketAddrV6::new(i, port, 0, 0)),
    }
}

fn session_strategy() -> impl Strategy<Value = (SocketAddr, SocketAddr)> {
    any::<bool>().prop_flat_map(|v6| {
        (ip_strategy(v6), 1..=u16::MAX, ip_strategy(v6), 1..=u16::MAX)
            .prop_map(|(a, p, b, q)| (addr(a, p), addr(b, q)))
    })
}

/// A valid IPv4 or IPv6 (with 0–2 extension headers) + TCP header with options.
fn header_strategy() -> impl Strategy<Value = Bytes> {
    (
        any::<bool>(),
        5u8..=15,
        5u8..=15,
        0usize..=2,
        proptest::collection::vec(any::<u8>(), 256),
        any::<u16>(),
    )
        .prop_map(|(v6, ihl, doff, ext, noise, extra)| {
            let mut h = Vec::new();
            let tcp_len = usize::from(doff) * 4;
            if v6 {
                h.extend_from_slice(&noise[..40]);
                h[0] = 0x60 | (h[0] & 0x0f);
                let mut next_at = 6;
                for i in 0..ext {
                    h[next_at] = if i == 0 { 0 } else { 60 };
                    let at = h.len();
                    h.extend_from_slice(&noise[40 + i * 16..56 + i * 16]);
                    h[at + 1] = 1; // (1 + 1) * 8 = 16 bytes
                    next_at = at;
                }
                h[next_at] = 6;
                let payload = (h.len() - 40 + tcp_len + usize::from(extra % 1000)) as u16;
                h[4..6].copy_from_slice(&payload.to_be_bytes());
            } else {
                let ihl_len = usize::from(ihl) * 4;
                h.extend_from_slice(&noise[..ihl_len]);
                h[0] = 0x40 | ihl;
                h[9] = 6;
                h[6] &= 0x40; // DF may be set, no MF, offset 0
                h[7] = 0;
                let total = (ihl_len + tcp_len + usize::from(extra % 1000)) as u16;
                h[2..4].copy_from_slice(&total.to_be_bytes());
            }
            let at = h.len();
            h.extend_from_slice(&noise[100..100 + tcp_len]);
            h[at + 12] = doff << 4 | (h[at + 12] & 0x0f);
            Bytes::from(h)
        })
}

fn message_strategy() -> impl Strategy<Value = Message> {
    prop_oneof![
        (
            any::<u16>().prop_map(|v| v % (VERSION + 3)),
            any::<bool>(),
            any::<u64>()
        )
            .prop_map(|(version, t, instance)| Message::Hello {
                version,
                role: if t { Role::Tcpcopy } else { Role::Intercept },
                instance
            }),
        session_strategy().prop_map(|(client, target)| Message::SessionAdd { client, target }),
        session_strategy().prop_map(|(client, target)| Message::SessionRemove { client, target }),
        proptest::collection::vec(header_strategy(), 1..40)
            .prop_map(|headers| Message::Responses { headers }),
        Just(Message::Ping),
        Just(Message::Pong),
    ]
}

proptest! {
    #[test]
    fn roundtrip(m in message_strategy()) {
        let f = frame(&m);
        prop_assert_eq!(decode_all(&f).unwrap(), vec![m]);
    }

    #[test]
    fn split_stream_decodes_the_same(msgs in proptest::collection::vec(message_strategy(), 1..12),
                                     cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..20)) {
        let mut stream = BytesMut::new();
        for m in &msgs {
            encode(m, &mut stream).unwrap();
        }
        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
        points.push(stream.len());
        points.sort_unstable();
        let mut d = FrameDecoder::new();
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        let mut prev = 0;
        for p in points {
            buf.extend_from_slice(&stream[prev..p]);
            prev = p;
            while let Some(m) = d.decode(&mut buf).unwrap() {
                got.push(m);
            }
        }
        prop_assert!(buf.is_empty());
        prop_assert_eq!(d.consumed(), stream.len() as u64);
        prop_assert_eq!(got, msgs);
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        crate::fuzz::proto_decoder(&data);
    }

    #[test]
    fn corrupted_frames_never_panic(m in message_strategy(), at in any::<prop::sample::Index>(), v in any::<u8>()) {
        let mut f = frame(&m).to_vec();
        let i = at.index(f.len());
        f[i] = v;
        crate::fuzz::proto_decoder(&f);
    }
}

/// Rough codec throughput (run: `cargo test --release -p tcpclone --lib
/// proto::tests::throughput -- --ignored --nocapture`); not a timed test.
#[test]
#[ignore = "measurement"]
fn throughput() {
    let n = 2_000_000usize;
    let t0 = std::time::Instant::now();
    let mut stream = BytesMut::new();
    let mut b = ResponsesBuilder::with_max_frame_len(256 * 1024);
    for _ in 0..n {
        if !b.push(&SYN_ACK_V4).unwrap() {
            b.finish_into(&mut stream);
            assert!(b.push(&SYN_ACK_V4).unwrap());
        }
    }
    b.finish_into(&mut stream);
    let enc = t0.elapsed();
    let t1 = std::time::Instant::now();
    let mut d = FrameDecoder::new();
    let mut got = 0;
    while let Some(Message::Responses { headers }) = d.decode(&mut stream).unwrap() {
        got += headers.len();
    }
    let dec = t1.elapsed();
    assert_eq!(got, n);
    eprintln!(
        "{n} headers of 48 B: build {:.1} M/s, decode+validate {:.1} M/s",
        n as f64 / enc.as_secs_f64() / 1e6,
        n as f64 / dec.as_secs_f64() / 1e6
    );
}

/// An HTTP answer from 198.18.0.2:80 to 198.18.0.1:40000: IPv4 + TCP header announcing 17
/// payload bytes, then the payload and 3 bytes of Ethernet padding, as a capture holds it.
fn captured_answer() -> Vec<u8> {
    let mut v = vec![
        0x45, 0, 0, 57, 0, 0, 0x40, 0, 64, 6, 0, 0, 198, 18, 0, 2, 198, 18, 0, 1, //
        0, 80, 0x9c, 0x40, 0, 0, 0, 1, 0, 0, 0, 2, 0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0,
    ];
    v.extend_from_slice(b"HTTP/1.1 500 Boom");
    v.extend_from_slice(&[0, 0, 0]);
    v
}

#[test]
fn options_fixture() {
    let m = Message::Options {
        response_prefix: 64,
    };
    assert_eq!(&frame(&m)[..], &[0, 0, 0, 3, 7, 0, 64][..]);
    assert_eq!(decode_all(&[0, 0, 0, 3, 7, 0, 64]).unwrap(), vec![m]);
    // Above the maximum: refused both ways.
    assert!(encode(
        &Message::Options {
            response_prefix: 257
        },
        &mut BytesMut::new()
    )
    .is_err());
    assert!(matches!(
        decode_all(&[0, 0, 0, 3, 7, 1, 1]),
        Err(ProtoError::Invalid { .. })
    ));
}

#[test]
fn split_response_cuts_padding_and_keeps_the_header_checks() {
    let c = captured_answer();
    let (h, p) = split_response(&c).unwrap();
    assert_eq!(h.len(), 40);
    assert_eq!(p, b"HTTP/1.1 500 Boom");
    // Snapped short: the payload is what was captured.
    let (_, p) = split_response(&c[..45]).unwrap();
    assert_eq!(p, b"HTTP/");
    assert!(split_response(&c[..30]).is_err());
    // check_header stays exact: payload bytes are not a header.
    assert!(check_header(&c, 0, 0).is_err());
    assert!(check_header(&c[..40], 0, 0).is_ok());
}

#[test]
fn prefixed_builder_keeps_the_prefix_and_the_plain_one_drops_it() {
    let c = captured_answer();
    let mut plain = ResponsesBuilder::new();
    assert!(plain.push(&c).unwrap());
    let mut b = BytesMut::from(&plain.finish().unwrap()[..]);
    let Some(Message::Responses { headers }) = FrameDecoder::new().decode(&mut b).unwrap() else {
        panic!()
    };
    assert_eq!(&headers[0][..], &c[..40]);

    let mut pre = ResponsesBuilder::with_prefix(MAX_FRAME_LEN, 12);
    assert!(pre.push(&c).unwrap());
    assert!(pre.push(&SYN_ACK_V4).unwrap());
    let f = pre.finish().unwrap();
    assert_eq!(f[4], 8);
    // The decoder refuses the 12-byte prefix until 12 bytes were agreed.
    let mut b = BytesMut::from(&f[..]);
    assert!(matches!(
        FrameDecoder::new().decode(&mut b),
        Err(ProtoError::PrefixTooLong {
            index: 0,
            len: 12,
            max: 0,
            ..
        })
    ));
    let mut d = FrameDecoder::new();
    d.set_max_prefix(12);
    let mut b = BytesMut::from(&f[..]);
    let Some(Message::PrefixedResponses { entries }) = d.decode(&mut b).unwrap() else {
        panic!()
    };
    assert_eq!(entries.len(), 2);
    assert_eq!(&entries[0].header[..], &c[..40]);
    assert_eq!(&entries[0].prefix[..], b"HTTP/1.1 500");
    assert!(entries[1].prefix.is_empty());
    // Re-encodes to the same frame.
    let m = Message::PrefixedResponses { entries };
    assert_eq!(frame(&m), f);
}

#[test]
fn a_prefix_longer_than_the_payload_is_refused() {
    // A header announcing no payload, carrying 4 prefix bytes.
    let mut f = vec![0, 0, 0, 0, 8, 0, 1, 0, 48, 0, 4];
    f.extend_from_slice(&SYN_ACK_V4);
    f.extend_from_slice(b"+OK\r");
    let len = (f.len() - 4) as u32;
    f[..4].copy_from_slice(&len.to_be_bytes());
    let mut d = FrameDecoder::new();
    d.set_max_prefix(MAX_PREFIX);
    assert!(matches!(
        d.decode(&mut BytesMut::from(&f[..])),
        Err(ProtoError::PrefixTooLong { len: 4, max: 0, .. })
    ));
}
