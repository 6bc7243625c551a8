//! Property tests: build a packet with etherparse → parse with our views → rewrite → checksums
//! verify; incremental checksum updates equal a full recompute; views agree with etherparse.

use etherparse::{PacketBuilder, SlicedPacket, TcpOptionElement, TransportSlice};
use proptest::prelude::*;
use tcpclone::capture::LinkType;
use tcpclone::rewrite::{ChecksumMode, RewriteOptions, RewriteOutcome, Rewriter};
use tcpclone::wire::checksum;
use tcpclone::wire::{parse_layout, IpProtocol, IpVersion, TcpPacket, UdpPacket};

#[derive(Debug, Clone)]
struct Spec {
    v6: bool,
    vlan: Option<u16>,
    l4: u8, // 0 TCP, 1 UDP, 2 ICMP/ICMPv6
    src: u128,
    dst: u128,
    sport: u16,
    dport: u16,
    ttl: u8,
    ts: Option<(u32, u32)>,
    payload: Vec<u8>,
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        any::<bool>(),
        prop::option::of(0u16..4095),
        0u8..3,
        any::<u32>(),
        any::<u32>(),
        any::<u16>(),
        any::<u16>(),
        1u8..=255,
        prop::option::of((any::<u32>(), any::<u32>())),
        prop::collection::vec(any::<u8>(), 0..300),
    )
        .prop_map(|(v6, vlan, l4, s, d, sport, dport, ttl, ts, payload)| {
            // Keep addresses close together so that CIDR maps match often.
            let base6: u128 = 0x2001_0db8 << 96;
            let (src, dst) = if v6 {
                (
                    base6 | u128::from(s & 0x00ff_ffff),
                    base6 | u128::from(d & 0x00ff_ffff),
                )
            } else {
                (
                    u128::from(0xc612_0000 | (s & 0x0001_ffff)),
                    u128::from(0xc612_0000 | (d & 0x0001_ffff)),
                )
            };
            Spec {
                v6,
                vlan,
                l4,
                src,
                dst,
                sport,
                dport,
                ttl,
                ts,
                payload,
            }
        })
}

fn build(s: &Spec) -> Vec<u8> {
    let eth = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
    let mut out = Vec::new();
    let v4a = |x: u128| (x as u32).to_be_bytes();
    let v6a = |x: u128| x.to_be_bytes();
    let opts: Vec<TcpOptionElement> =
        s.ts.map(|(a, b)| vec![TcpOptionElement::Timestamp(a, b)])
            .unwrap_or_default();
    macro_rules! finish {
        ($ip:expr, $v6:expr) => {{
            let ip = $ip;
            match s.l4 {
                0 => ip
                    .tcp(s.sport, s.dport, 12345, 4000)
                    .ack(999)
                    .options(&opts)
                    .unwrap()
                    .write(&mut out, &s.payload)
                    .unwrap(),
                1 => ip
                    .udp(s.sport, s.dport)
                    .write(&mut out, &s.payload)
                    .unwrap(),
                _ if $v6 => ip
                    .icmpv6_echo_request(s.sport, s.dport)
                    .write(&mut out, &s.payload)
                    .unwrap(),
                _ => ip
                    .icmpv4_echo_request(s.sport, s.dport)
                    .write(&mut out, &s.payload)
                    .unwrap(),
            }
        }};
    }
    match (s.vlan, s.v6) {
        (None, false) => finish!(eth.ipv4(v4a(s.src), v4a(s.dst), s.ttl), false),
        (None, true) => finish!(eth.ipv6(v6a(s.src), v6a(s.dst), s.ttl), true),
        (Some(v), false) => finish!(
            eth.single_vlan(v.try_into().unwrap())
                .ipv4(v4a(s.src), v4a(s.dst), s.ttl),
            false
        ),
        (Some(v), true) => finish!(
            eth.single_vlan(v.try_into().unwrap())
                .ipv6(v6a(s.src), v6a(s.dst), s.ttl),
            true
        ),
    }
    out
}

fn net(v6: bool, addr: u128, len: u8) -> String {
    if v6 {
        format!("[{}/{}]", std::net::Ipv6Addr::from(addr), len.min(128))
    } else {
        format!("{}/{}", std::net::Ipv4Addr::from(addr as u32), len.min(32))
    }
}

/// Random edit options that fit the packet's family.
fn edits(s: &Spec) -> impl Strategy<Value = RewriteOptions> {
    let (v6, src, dst, sport) = (s.v6, s.src, s.dst, s.sport);
    let bits = if v6 { 128u8 } else { 32 };
    (
        0u8..3,
        (0..=bits, 0..=bits, any::<u128>()),
        prop::option::of(prop_oneof![
            Just(format!("{sport}:80")),
            Just(format!("0-{sport}:4444")),
            Just("80:8080".to_string())
        ]),
        prop::option::of(prop_oneof![
            (0u8..=255).prop_map(|v| v.to_string()),
            (0u8..=255).prop_map(|v| format!("+{v}")),
            (0u8..=255).prop_map(|v| format!("-{v}"))
        ]),
        prop::option::of(any::<u8>()),
        prop::option::of(any::<u8>()),
        any::<bool>(),
    )
        .prop_map(
            move |(map, (l1, l2, to), portmap, ttl, tos, tclass, dmac)| {
                let to = if v6 {
                    (0x2001_0db8u128 << 96) | (to & ((1u128 << 96) - 1))
                } else {
                    0xc612_0000 | (to & 0x1_ffff)
                };
                let m1 = format!("{}:{}", net(v6, src, l1), net(v6, to, l2));
                let m2 = format!("{}:{}", net(v6, dst, l2), net(v6, to, l1));
                let mut o = RewriteOptions {
                    portmap: portmap.into_iter().collect(),
                    ttl,
                    tos,
                    tclass,
                    enet_dmac: dmac.then(|| "02:00:5e:00:00:09".to_string()),
                    ..Default::default()
                };
                match map {
                    1 => o.pnat = vec![format!("{m1},{m2}")],
                    2 => {
                        o.srcipmap = vec![m1];
                        o.dstipmap = vec![m2];
                    }
                    _ => {}
                }
                o
            },
        )
}

fn packet_and_edits() -> impl Strategy<Value = (Spec, RewriteOptions)> {
    spec().prop_flat_map(|s| {
        let e = edits(&s);
        (Just(s), e)
    })
}

fn rewrite(o: &RewriteOptions, mode: ChecksumMode, frame: &[u8]) -> (RewriteOutcome, Vec<u8>) {
    let mut o = o.clone();
    o.checksums = mode;
    let rw = Rewriter::compile(&o).expect("generated options compile");
    let mut out = Vec::new();
    let r = rw.apply(LinkType::ETHERNET, frame, frame.len() as u32, &mut out);
    (r.outcome, out)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// build → parse → rewrite (Full) → every checksum verifies; Incremental gives the same bytes.
    #[test]
    fn rewrite_keeps_checksums_right((s, o) in packet_and_edits()) {
        let frame = build(&s);
        let layout = parse_layout(LinkType::ETHERNET, &frame).unwrap();
        prop_assert_ne!(layout.verify_checksums(&frame).1, Some(false), "etherparse built a bad checksum?");
        let (outcome, full) = rewrite(&o, ChecksumMode::Full, &frame);
        prop_assert!(matches!(outcome, RewriteOutcome::Changed | RewriteOutcome::Unchanged), "{:?}", outcome);
        let l = parse_layout(LinkType::ETHERNET, &full).unwrap();
        let (ip, l4) = l.verify_checksums(&full);
        prop_assert_ne!(ip, Some(false));
        prop_assert_eq!(l4, Some(true));
        let (_, inc) = rewrite(&o, ChecksumMode::Incremental, &frame);
        prop_assert_eq!(&inc, &full, "incremental != full");
        // Keep: checksum fields untouched, everything else as Full.
        let (_, keep) = rewrite(&o, ChecksumMode::Keep, &frame);
        let ipi = l.ip.unwrap();
        let c4 = l.l3_offset + 10;
        let cl4 = ipi.l4_offset.unwrap() + checksum::l4_checksum_offset(ipi.protocol).unwrap();
        let mut masked_keep = keep.clone();
        let mut masked_full = full.clone();
        for c in [Some(cl4), (ipi.version == IpVersion::V4).then_some(c4)].into_iter().flatten() {
            prop_assert_eq!(&keep[c..c + 2], &frame[c..c + 2]);
            masked_keep[c..c + 2].fill(0);
            masked_full[c..c + 2].fill(0);
        }
        prop_assert_eq!(masked_keep, masked_full);
        // In place gives the same bytes when nothing changes length.
        let mut o2 = o.clone();
        o2.checksums = ChecksumMode::Full;
        let mut inplace = frame.clone();
        let _ = Rewriter::compile(&o2).unwrap().apply_in_place(LinkType::ETHERNET, &mut inplace);
        prop_assert_eq!(inplace, full);
    }

    /// Our views read the same fields etherparse does.
    #[test]
    fn views_agree_with_etherparse(s in spec()) {
        let frame = build(&s);
        let l = parse_layout(LinkType::ETHERNET, &frame).unwrap();
        let ep = SlicedPacket::from_ethernet(&frame).unwrap();
        let ip = l.ip.unwrap();
        prop_assert_eq!(ip.version == IpVersion::V6, s.v6);
        prop_assert_eq!(l.vlan_tags, u8::from(s.vlan.is_some()));
        let seg = l.l4(&frame).unwrap();
        match ep.transport.unwrap() {
            TransportSlice::Tcp(t) => {
                prop_assert_eq!(ip.protocol, IpProtocol::TCP);
                let v = TcpPacket::new_checked(seg).unwrap();
                prop_assert_eq!((v.src_port(), v.dst_port()), (t.source_port(), t.destination_port()));
                prop_assert_eq!((v.seq().value(), v.ack().value()), (t.sequence_number(), t.acknowledgment_number()));
                prop_assert_eq!(v.timestamps(), s.ts);
                prop_assert_eq!(v.payload(), t.payload());
            }
            TransportSlice::Udp(u) => {
                prop_assert_eq!(ip.protocol, IpProtocol::UDP);
                let v = UdpPacket::new_checked(seg).unwrap();
                prop_assert_eq!((v.src_port(), v.dst_port(), v.len()), (u.source_port(), u.destination_port(), u.length()));
            }
            _ => prop_assert!(ip.protocol == IpProtocol::ICMP || ip.protocol == IpProtocol::ICMPV6),
        }
    }

    /// RFC 1624 incremental updates equal a full recompute (up to ±0, which both verify).
    #[test]
    fn incremental_equals_full(mut data in prop::collection::vec(any::<u8>(), 8..400), at in any::<prop::sample::Index>(), new in any::<[u8; 16]>(), wide in 0usize..3) {
        if data.len() % 2 == 1 { data.pop(); }
        let width = [2usize, 4, 16][wide].min(data.len());
        let off = (at.index(data.len() - width + 1)) & !1;
        let before = checksum::finish(checksum::sum(&data, 0));
        let old = data[off..off + width].to_vec();
        data[off..off + width].copy_from_slice(&new[..width]);
        let full = checksum::finish(checksum::sum(&data, 0));
        let inc = if width == 2 {
            checksum::update_u16(before, u16::from_be_bytes([old[0], old[1]]), u16::from_be_bytes([new[0], new[1]]))
        } else if width == 4 {
            checksum::update_u32(before, u32::from_be_bytes([old[0], old[1], old[2], old[3]]), u32::from_be_bytes([new[0], new[1], new[2], new[3]]))
        } else {
            checksum::update_bytes(before, &old, &new[..width])
        };
        prop_assert!(inc == full || (inc | full == 0xffff && inc & full == 0), "inc {:04x} full {:04x}", inc, full);
        // And the incremental value verifies over the data.
        prop_assert!(checksum::verifies(&data, u32::from(inc)));
    }
}
