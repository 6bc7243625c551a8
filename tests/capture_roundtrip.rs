//! Property tests: packets written with `PcapWriter` read back equal through `CaptureReader`
//! (both precisions; microseconds truncated as libpcap writes them), and through a preload.

use proptest::prelude::*;
use tcpclone::capture::{
    CaptureFormat, CaptureReader, LinkType, PacketSource, PcapWriter, PreloadedCapture, Timestamp,
    TsPrecision,
};

#[derive(Debug, Clone)]
struct Rec {
    ts: Timestamp,
    orig_len: u32,
    data: Vec<u8>,
}

fn rec() -> impl Strategy<Value = Rec> {
    (
        0u64..=u64::from(u32::MAX),
        0u32..1_000_000_000,
        any::<u32>(),
        prop::collection::vec(any::<u8>(), 0..1600),
    )
        .prop_map(|(secs, nanos, orig_len, data)| Rec {
            ts: Timestamp::from_parts(secs, nanos),
            orig_len,
            data,
        })
}

fn precision() -> impl Strategy<Value = TsPrecision> {
    prop_oneof![Just(TsPrecision::Micro), Just(TsPrecision::Nano)]
}

fn expected_ts(ts: Timestamp, p: TsPrecision) -> Timestamp {
    match p {
        TsPrecision::Nano => ts,
        TsPrecision::Micro => Timestamp::from_parts(ts.secs(), ts.subsec_nanos() / 1000 * 1000),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn write_then_read_gives_the_same_packets(
        recs in prop::collection::vec(rec(), 0..40),
        prec in precision(),
        linktype in prop_oneof![Just(LinkType::ETHERNET), Just(LinkType::RAW), Just(LinkType::LINUX_SLL2), (0u32..0x10000).prop_map(LinkType)],
        snaplen in prop_oneof![Just(0u32), Just(65535), Just(262_144)],
    ) {
        let mut w = PcapWriter::new(Vec::new(), "prop.pcap", linktype, prec, snaplen).unwrap();
        for r in &recs {
            w.write_packet(r.ts, r.orig_len, &r.data).unwrap();
        }
        let bytes = w.finish().unwrap();
        prop_assert_eq!(bytes.len(), 24 + recs.iter().map(|r| 16 + r.data.len()).sum::<usize>());

        let mut rd = CaptureReader::from_reader(&bytes[..], "prop.pcap").unwrap();
        prop_assert_eq!(rd.format(), CaptureFormat::Pcap);
        prop_assert_eq!(rd.precision(), prec);
        prop_assert_eq!(rd.linktype(), linktype);
        prop_assert_eq!(rd.snaplen(), snaplen);
        for r in &recs {
            let p = rd.next_packet().unwrap().expect("a packet per record");
            prop_assert_eq!(p.ts, expected_ts(r.ts, prec));
            prop_assert_eq!(p.orig_len, r.orig_len);
            prop_assert_eq!(p.linktype, linktype);
            prop_assert_eq!(p.data, &r.data[..]);
        }
        prop_assert!(rd.next_packet().unwrap().is_none());
        prop_assert_eq!(rd.position(), bytes.len() as u64);

        let mut pre = PreloadedCapture::load(
            &mut CaptureReader::from_reader(&bytes[..], "prop.pcap").unwrap(),
        ).unwrap();
        for _ in 0..2 {
            for r in &recs {
                let p = pre.next_packet().unwrap().expect("a packet per record");
                prop_assert_eq!(p.ts, expected_ts(r.ts, prec));
                prop_assert_eq!(p.orig_len, r.orig_len);
                prop_assert_eq!(p.data, &r.data[..]);
            }
            prop_assert!(pre.next_packet().unwrap().is_none());
            pre.rewind();
        }
    }

    /// Cutting a written file anywhere yields exactly the records wholly before the cut, then
    /// (unless the cut falls on a record boundary) a truncation error at the cut record's start.
    #[test]
    fn any_cut_yields_the_whole_records_first(
        recs in prop::collection::vec(rec(), 1..10),
        cut_frac in 0.0f64..1.0,
    ) {
        let mut w = PcapWriter::new(Vec::new(), "cut.pcap", LinkType::ETHERNET, TsPrecision::Nano, 0).unwrap();
        let mut ends = vec![24usize];
        for r in &recs {
            w.write_packet(r.ts, r.orig_len, &r.data).unwrap();
            ends.push(ends.last().unwrap() + 16 + r.data.len());
        }
        let bytes = w.finish().unwrap();
        let cut = 24 + ((bytes.len() - 24) as f64 * cut_frac) as usize;
        let mut rd = CaptureReader::from_reader(&bytes[..cut], "cut.pcap").unwrap();
        let whole = ends.iter().filter(|&&e| e <= cut).count() - 1;
        for r in &recs[..whole] {
            let p = rd.next_packet().unwrap().expect("whole record");
            prop_assert_eq!(p.data, &r.data[..]);
        }
        match rd.next_packet() {
            Ok(None) => prop_assert_eq!(ends[whole], cut),
            Ok(Some(_)) => prop_assert!(false, "a packet past the cut"),
            Err(e) => {
                prop_assert!(e.is_truncation());
                prop_assert_eq!(e.offset(), Some(ends[whole] as u64));
                prop_assert!(e.to_string().starts_with("cut.pcap: record"));
            }
        }
    }
}
