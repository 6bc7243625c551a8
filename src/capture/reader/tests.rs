//! Tests of the capture reader: byte fixtures of pcap and pcapng files, every cut point, both
//! the in-place and the copying path.

use super::*;
use hex_literal::hex;

/// pcap, little-endian, microseconds, Ethernet, snaplen 65535: two records.
const PCAP_LE_US: [u8; 62] = hex!(
    "d4c3b2a1 0200 0400 00000000 00000000 ffff0000 01000000" // file header
    "00105e5f 40e20100 04000000 3c000000 deadbeef" // 1600000000.123456, caplen 4, len 60
    "01105e5f 3f420f00 02000000 02000000 0102" // 1600000001.999999, caplen 2
);
/// The same two records, big-endian, microseconds.
const PCAP_BE_US: [u8; 62] = hex!(
    "a1b2c3d4 0002 0004 00000000 00000000 0000ffff 00000001"
    "5f5e1000 0001e240 00000004 0000003c deadbeef"
    "5f5e1001 000f423f 00000002 00000002 0102"
);
/// pcap, little-endian, nanoseconds, raw IP, snaplen 262144: one record.
const PCAP_LE_NS: [u8; 43] = hex!(
    "4d3cb2a1 0200 0400 00000000 00000000 00000400 65000000"
    "00105e5f 15cd5b07 03000000 03000000 aabbcc" // 1600000000.123456789
);
/// The same, big-endian.
const PCAP_BE_NS: [u8; 43] = hex!(
    "a1b23c4d 0002 0004 00000000 00000000 00040000 00000065"
    "5f5e1000 075bcd15 00000003 00000003 aabbcc"
);

/// pcapng, two sections. Section 1 (little-endian): interface 0 Ethernet with the default
/// µs resolution, interface 1 raw IP with if_tsresol 9 (ns), interface 2 SLL2 with
/// if_tsresol 2^-20; a name resolution block; one EPB per interface; an interface statistics
/// block; a simple packet block; a decryption secrets block. Section 2 (big-endian): one
/// Ethernet interface and one EPB.
const PCAPNG: [u8; 400] = hex!(
    // SHB, LE, length 28
    "0a0d0d0a 1c000000 4d3c2b1a 0100 0000 ffffffffffffffff 1c000000"
    // IDB 0: Ethernet, snaplen 262144, no options (length 20)
    "01000000 14000000 0100 0000 00000400 14000000"
    // IDB 1: raw IP, snaplen 65535, if_tsresol 9 (length 32)
    "01000000 20000000 6500 0000 ffff0000 0900 0100 09000000 0000 0000 20000000"
    // IDB 2: SLL2, snaplen 0, if_tsresol 0x94 = 2^-20 s (length 32)
    "01000000 20000000 1401 0000 00000000 0900 0100 94000000 0000 0000 20000000"
    // NRB (skipped): length 16, only nrb_record_end
    "04000000 10000000 00000000 10000000"
    // EPB on interface 0: units of µs 1600000000123456, caplen 5, len 5
    "06000000 28000000 00000000 31af0500 40e2a507 05000000 05000000 0102030405 000000 28000000"
    // EPB on interface 1: units of ns 1600000000123456789, caplen 3, len 64
    "06000000 24000000 01000000 85573416 15cdfbdf 03000000 40000000 aabbcc 00 24000000"
    // EPB on interface 2: 1600000000.5 s in units of 2^-20 s, caplen 1, len 1, with an
    // opt_comment "hi" that is skipped (length 48)
    "06000000 30000000 02000000 e1f50500 00000800 01000000 01000000 ee 000000"
    "0100 0200 68690000 0000 0000 30000000"
    // ISB (skipped): length 24
    "05000000 18000000 00000000 31af0500 40e2a507 18000000"
    // SPB: original length 3 on interface 0 (length 20)
    "03000000 14000000 03000000 aabbcc00 14000000"
    // DSB (skipped): length 20
    "0a000000 14000000 544c534b 00000000 14000000"
    // SHB, BE, length 28
    "0a0d0d0a 0000001c 1a2b3c4d 0001 0000 ffffffffffffffff 0000001c"
    // IDB 0 of section 2: Ethernet, snaplen 65536
    "00000001 00000014 0001 0000 00010000 00000014"
    // EPB: µs 1600000000123457, caplen 4, len 4
    "00000006 00000024 00000000 0005af31 07a5e241 00000004 00000004 cafef00d 00000024"
);

/// (timestamp, original length, link type, bytes) of each packet read.
type Packets = Vec<(Timestamp, u32, LinkType, Vec<u8>)>;

fn read_all(bytes: &[u8]) -> (Packets, Option<CaptureError>) {
    let mut r = CaptureReader::from_reader(bytes, "t.pcap").expect("header reads");
    let mut out = Vec::new();
    loop {
        match r.next_packet() {
            Ok(Some(p)) => out.push((p.ts, p.orig_len, p.linktype, p.data.to_vec())),
            Ok(None) => return (out, None),
            Err(e) => {
                assert!(
                    r.next_packet().unwrap().is_none(),
                    "reader is fused after an error"
                );
                return (out, Some(e));
            }
        }
    }
}

fn open_err(bytes: &[u8]) -> String {
    CaptureReader::from_reader(bytes, "t.pcap")
        .unwrap_err()
        .to_string()
}

fn read_err(bytes: &[u8]) -> (usize, CaptureError) {
    let (pkts, err) = read_all(bytes);
    (pkts.len(), err.expect("an error"))
}

fn ts(secs: u64, nanos: u32) -> Timestamp {
    Timestamp::from_parts(secs, nanos)
}

#[test]
fn pcap_micro_both_byte_orders() {
    for bytes in [&PCAP_LE_US[..], &PCAP_BE_US[..]] {
        let r = CaptureReader::from_reader(bytes, "t.pcap").unwrap();
        assert_eq!(r.format(), CaptureFormat::Pcap);
        assert_eq!(r.linktype(), LinkType::ETHERNET);
        assert_eq!(r.precision(), TsPrecision::Micro);
        assert_eq!(r.snaplen(), 65535);
        let (pkts, err) = read_all(bytes);
        assert!(err.is_none());
        assert_eq!(
            pkts,
            vec![
                (
                    ts(1_600_000_000, 123_456_000),
                    60,
                    LinkType::ETHERNET,
                    hex!("deadbeef").to_vec()
                ),
                (
                    ts(1_600_000_001, 999_999_000),
                    2,
                    LinkType::ETHERNET,
                    vec![1, 2]
                ),
            ]
        );
    }
}

#[test]
fn pcap_nano_both_byte_orders() {
    for bytes in [&PCAP_LE_NS[..], &PCAP_BE_NS[..]] {
        let r = CaptureReader::from_reader(bytes, "t.pcap").unwrap();
        assert_eq!(r.precision(), TsPrecision::Nano);
        assert_eq!(r.linktype(), LinkType::RAW);
        assert_eq!(r.snaplen(), 262_144);
        let (pkts, err) = read_all(bytes);
        assert!(err.is_none());
        assert_eq!(
            pkts,
            vec![(
                ts(1_600_000_000, 123_456_789),
                3,
                LinkType::RAW,
                hex!("aabbcc").to_vec()
            )]
        );
    }
}

#[test]
fn pcapng_sections_interfaces_tsresol_and_skipped_blocks() {
    let r = CaptureReader::from_reader(&PCAPNG[..], "t.pcapng").unwrap();
    assert_eq!(r.format(), CaptureFormat::Pcapng);
    assert_eq!(r.linktype(), LinkType::ETHERNET);
    assert_eq!(r.precision(), TsPrecision::Micro);
    assert_eq!(r.snaplen(), 262_144);
    let (pkts, err) = read_all(&PCAPNG);
    assert!(err.is_none(), "{err:?}");
    assert_eq!(
        pkts,
        vec![
            (
                ts(1_600_000_000, 123_456_000),
                5,
                LinkType::ETHERNET,
                vec![1, 2, 3, 4, 5]
            ),
            (
                ts(1_600_000_000, 123_456_789),
                64,
                LinkType::RAW,
                hex!("aabbcc").to_vec()
            ),
            (
                ts(1_600_000_000, 500_000_000),
                1,
                LinkType::LINUX_SLL2,
                vec![0xee]
            ),
            // A simple packet block carries no timestamp.
            (Timestamp(0), 3, LinkType::ETHERNET, hex!("aabbcc").to_vec()),
            (
                ts(1_600_000_000, 123_457_000),
                4,
                LinkType::ETHERNET,
                hex!("cafef00d").to_vec()
            ),
        ]
    );
}

#[test]
fn pcapng_first_interface_decides_precision() {
    // Section header, then only IDB 1 of the fixture (ns resolution): Nano.
    let mut f = PCAPNG[..28].to_vec();
    f.extend_from_slice(&PCAPNG[48..80]);
    let r = CaptureReader::from_reader(&f[..], "t.pcapng").unwrap();
    assert_eq!(r.precision(), TsPrecision::Nano);
    assert_eq!(r.linktype(), LinkType::RAW);
    assert_eq!(r.snaplen(), 65535);
}

#[test]
fn tsresol_conversions() {
    assert_eq!(TsScale::from_tsresol(6).to_ns(1_500_000), 1_500_000_000);
    assert_eq!(TsScale::from_tsresol(9).to_ns(7), 7);
    assert_eq!(TsScale::from_tsresol(0).to_ns(3), 3_000_000_000);
    assert_eq!(TsScale::from_tsresol(12).to_ns(5_000), 5);
    assert_eq!(TsScale::from_tsresol(0x80 | 10).to_ns(1024), 1_000_000_000);
    assert_eq!(
        TsScale::from_tsresol(0x80 | 30).to_ns(1 << 30),
        1_000_000_000
    );
    assert_eq!(TsScale::from_tsresol(0x7f).to_ns(u64::MAX), 0);
    assert_eq!(TsScale::from_tsresol(0xff).to_ns(u64::MAX), 0);
    assert_eq!(TsScale::from_tsresol(6).precision(), TsPrecision::Micro);
    assert_eq!(TsScale::from_tsresol(7).precision(), TsPrecision::Nano);
    assert_eq!(
        TsScale::from_tsresol(0x80 | 19).precision(),
        TsPrecision::Micro
    );
    assert_eq!(
        TsScale::from_tsresol(0x80 | 20).precision(),
        TsPrecision::Nano
    );
}

#[test]
fn if_tsoffset_is_added() {
    // SHB + IDB with if_tsoffset = 100 s + EPB at 1 s.
    let f = hex!(
        "0a0d0d0a 1c000000 4d3c2b1a 0100 0000 ffffffffffffffff 1c000000"
        "01000000 24000000 0100 0000 00000000 0e00 0800 6400000000000000 0000 0000 24000000"
        "06000000 20000000 00000000 00000000 40420f00 00000000 00000000 20000000"
    );
    let (pkts, err) = read_all(&f);
    assert!(err.is_none());
    assert_eq!(pkts[0].0, ts(101, 0));
}

#[test]
fn unknown_linktype_still_reads() {
    let mut f = PCAP_LE_US;
    f[20..24].copy_from_slice(&147u32.to_le_bytes());
    let r = CaptureReader::from_reader(&f[..], "t.pcap").unwrap();
    assert_eq!(r.linktype(), LinkType(147));
    assert_eq!(r.linktype().to_string(), "linktype 147");
    let (pkts, err) = read_all(&f);
    assert!(err.is_none());
    assert_eq!(pkts.len(), 2);
    assert_eq!(pkts[0].2, LinkType(147));
}

#[test]
fn fcs_bits_above_the_linktype_are_ignored() {
    let mut f = PCAP_LE_US;
    f[20..24].copy_from_slice(&(0x1400_0000u32 | 1).to_le_bytes());
    assert_eq!(
        CaptureReader::from_reader(&f[..], "t").unwrap().linktype(),
        LinkType::ETHERNET
    );
}

// ---- bad input: each with its exact one-line message and offset ----

#[test]
fn empty_file() {
    assert_eq!(open_err(&[]), "t.pcap: empty file (0 bytes)");
}

#[test]
fn wrong_magic() {
    assert_eq!(
        open_err(b"\x7fELF\x02\x01\x01\x00"),
        "t.pcap: not a pcap or pcapng file: unknown magic 0x7f454c46 at byte 0"
    );
    assert_eq!(
        open_err(b"GET / HTTP/1.1\r\n"),
        "t.pcap: not a pcap or pcapng file: unknown magic 0x47455420 at byte 0"
    );
}

#[test]
fn header_cut_short() {
    assert_eq!(
        open_err(&PCAP_LE_US[..10]),
        "t.pcap: pcap file header cut short at byte 0 (24 bytes needed, 10 present)"
    );
    assert_eq!(
        open_err(&PCAP_LE_US[..3]),
        "t.pcap: file header cut short at byte 0 (4 bytes needed, 3 present)"
    );
    assert_eq!(
        open_err(&PCAPNG[..6]),
        "t.pcap: pcapng section header cut short at byte 0 (28 bytes needed, 6 present)"
    );
    assert_eq!(
        open_err(&PCAPNG[..20]),
        "t.pcap: pcapng section header cut short at byte 0 (28 bytes needed, 20 present)"
    );
    let e = CaptureReader::from_reader(&PCAP_LE_US[..23], "t.pcap").unwrap_err();
    assert!(e.is_truncation());
    assert_eq!(e.offset(), Some(0));
}

#[test]
fn unsupported_pcap_version() {
    let mut f = PCAP_LE_US;
    f[4] = 1;
    assert_eq!(
        open_err(&f),
        "t.pcap: unsupported pcap version 1.4 at byte 4"
    );
}

#[test]
fn record_cut_short_gives_whole_records_first() {
    // Cut in the middle of the second record's data: 24 + 20 + 16 + 1.
    let f = &PCAP_LE_US[..61];
    let (pkts, err) = read_all(f);
    assert_eq!(pkts.len(), 1, "the whole first record comes out");
    assert_eq!(pkts[0].3, hex!("deadbeef"));
    let err = err.unwrap();
    assert_eq!(
        err.to_string(),
        "t.pcap: record cut short at byte 44 (caplen 2, 1 bytes left)"
    );
    assert!(err.is_truncation());
    assert_eq!(err.offset(), Some(44));
}

#[test]
fn record_header_cut_short() {
    let (n, err) = read_err(&PCAP_LE_US[..51]);
    assert_eq!(n, 1);
    assert_eq!(
        err.to_string(),
        "t.pcap: record header cut short at byte 44 (16 bytes needed, 7 present)"
    );
    assert!(err.is_truncation());
}

#[test]
fn every_cut_point_yields_the_records_before_it() {
    let ends = [24usize, 44, 62];
    for cut in 24..PCAP_LE_US.len() {
        let (pkts, err) = read_all(&PCAP_LE_US[..cut]);
        let whole = ends.iter().filter(|&&e| e <= cut).count() - 1;
        assert_eq!(pkts.len(), whole, "cut at {cut}");
        match err {
            None => assert!(ends.contains(&cut)),
            Some(e) => {
                assert!(e.is_truncation());
                assert_eq!(e.offset(), Some(ends[whole] as u64), "cut at {cut}");
            }
        }
    }
}

#[test]
fn absurd_caplen() {
    let mut f = PCAP_LE_US.to_vec();
    f[32..36].copy_from_slice(&300_000u32.to_le_bytes());
    let (n, err) = read_err(&f);
    assert_eq!(n, 0);
    assert_eq!(
        err.to_string(),
        "t.pcap: absurd caplen 300000 at byte 24 (snaplen 65535, limit 131070)"
    );
    assert!(!err.is_truncation());
    // Far above a small snaplen.
    let mut f = PCAP_LE_US.to_vec();
    f[16..20].copy_from_slice(&96u32.to_le_bytes());
    f[52..56].copy_from_slice(&70_000u32.to_le_bytes());
    let (n, err) = read_err(&f);
    assert_eq!(n, 1);
    assert_eq!(
        err.to_string(),
        "t.pcap: absurd caplen 70000 at byte 44 (snaplen 96, limit 65791)"
    );
}

#[test]
fn caplen_above_snaplen_but_plausible_is_read() {
    // tcpdump -s 96 files never exceed 96, but a TSO frame in a 65535-snaplen file can.
    assert_eq!(caplen_limit(65535), 131_070);
    assert_eq!(caplen_limit(96), 65_791);
    assert_eq!(caplen_limit(0), MAX_CAPLEN);
    assert_eq!(caplen_limit(u32::MAX), MAX_CAPLEN);
    let mut f = PCAP_LE_US[..24].to_vec();
    f[16..20].copy_from_slice(&1500u32.to_le_bytes());
    f.extend_from_slice(&hex!("00000000 00000000 a00f0000 a00f0000"));
    f.extend(std::iter::repeat_n(7u8, 4000));
    let (pkts, err) = read_all(&f);
    assert!(err.is_none());
    assert_eq!(pkts[0].3.len(), 4000);
}

/// PCAPNG cut to its first section header, IDB 0 and `tail`.
fn ng_with(tail: &[u8]) -> Vec<u8> {
    let mut f = PCAPNG[..48].to_vec();
    f.extend_from_slice(tail);
    f
}

#[test]
fn pcapng_block_length_not_multiple_of_4() {
    let (n, err) = read_err(&ng_with(&hex!("06000000 1e000000 00000000")));
    assert_eq!(n, 0);
    assert_eq!(
        err.to_string(),
        "t.pcap: corrupt pcapng block length 30 at byte 48 (not a multiple of 4)"
    );
}

#[test]
fn pcapng_block_length_too_small() {
    let (_, err) = read_err(&ng_with(&hex!("07000000 08000000 08000000")));
    assert_eq!(
        err.to_string(),
        "t.pcap: corrupt pcapng block length 8 at byte 48 (shorter than 12)"
    );
    let (_, err) = read_err(&ng_with(&hex!("06000000 10000000 00000000 10000000")));
    assert_eq!(
        err.to_string(),
        "t.pcap: corrupt pcapng block length 16 at byte 48 (shorter than a packet block (32))"
    );
    let mut shb = PCAPNG[..28].to_vec();
    shb[4] = 0x18;
    assert_eq!(
        open_err(&shb),
        "t.pcap: corrupt pcapng block length 24 at byte 0 (shorter than a section header block (28))"
    );
}

#[test]
fn pcapng_trailing_length_mismatch() {
    let (_, err) = read_err(&ng_with(&hex!("04000000 10000000 00000000 14000000")));
    assert_eq!(
        err.to_string(),
        "t.pcap: corrupt pcapng block length at byte 48 (leading length 16, trailing length 20)"
    );
    // Also in a packet block and an interface block.
    let mut f = PCAPNG[..48].to_vec();
    f.extend_from_slice(&PCAPNG[128..168]);
    let last = f.len() - 4;
    f[last] = 0x2c;
    let (n, err) = read_err(&f);
    assert_eq!(n, 0);
    assert_eq!(
        err.to_string(),
        "t.pcap: corrupt pcapng block length at byte 48 (leading length 40, trailing length 44)"
    );
    let mut f = PCAPNG[..48].to_vec();
    f[47] = 1;
    assert_eq!(
        open_err(&f),
        "t.pcap: corrupt pcapng block length at byte 28 (leading length 20, trailing length 16777236)"
    );
}

#[test]
fn pcapng_cut_short_gives_whole_packets_first() {
    // Everything up to the SPB (at byte 276), then 10 bytes of it.
    let (pkts, err) = read_all(&PCAPNG[..286]);
    assert_eq!(pkts.len(), 3);
    let err = err.unwrap();
    assert_eq!(
        err.to_string(),
        "t.pcap: pcapng block cut short at byte 276 (block length 20, 10 bytes left)"
    );
    assert!(err.is_truncation());
    // Cut inside a block header.
    let (pkts, err) = read_all(&PCAPNG[..279]);
    assert_eq!(pkts.len(), 3);
    assert_eq!(
        err.unwrap().to_string(),
        "t.pcap: pcapng block header cut short at byte 276 (8 bytes needed, 3 present)"
    );
}

#[test]
fn pcapng_every_cut_point_is_a_clean_end_or_a_truncation() {
    for cut in 28..PCAPNG.len() {
        let Ok(mut r) = CaptureReader::from_reader(&PCAPNG[..cut], "t") else {
            continue;
        };
        loop {
            match r.next_packet() {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => {
                    assert!(e.is_truncation(), "cut at {cut}: {e}");
                    break;
                }
            }
        }
    }
}

#[test]
fn pcapng_unknown_interface() {
    let (_, err) = read_err(&ng_with(
        &PCAPNG[128..168]
            .iter()
            .enumerate()
            .map(|(i, &b)| if i == 8 { 3 } else { b })
            .collect::<Vec<_>>(),
    ));
    assert_eq!(
        err.to_string(),
        "t.pcap: pcapng enhanced packet block at byte 48 names interface 3, but the section describes 1"
    );
}

#[test]
fn pcapng_caplen_past_block_end() {
    let mut epb = PCAPNG[128..168].to_vec();
    epb[20] = 9;
    let (_, err) = read_err(&ng_with(&epb));
    assert_eq!(
        err.to_string(),
        "t.pcap: corrupt pcapng enhanced packet block at byte 48 (caplen runs past the end of the block)"
    );
}

#[test]
fn pcapng_bad_byte_order_magic() {
    let mut f = PCAPNG[..28].to_vec();
    f[8..12].copy_from_slice(b"abcd");
    assert_eq!(
        open_err(&f),
        "t.pcap: bad pcapng byte-order magic 0x61626364 at byte 8"
    );
}

#[test]
fn pcapng_option_overrun() {
    let mut idb = PCAPNG[48..80].to_vec();
    idb[18] = 0x20; // if_tsresol length 32
    let mut f = PCAPNG[..28].to_vec();
    f.extend_from_slice(&idb);
    assert_eq!(
        open_err(&f),
        "t.pcap: corrupt pcapng interface description block at byte 28 (option runs past the end of the block)"
    );
}

#[test]
fn missing_file_and_directory() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.pcap");
    let e = CaptureReader::open(&missing).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "{}: cannot open: No such file or directory (os error 2)",
            missing.display()
        )
    );
    let e = CaptureReader::open(dir.path()).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "{}: is a directory, not a capture file",
            dir.path().display()
        )
    );
    let empty = dir.path().join("empty.pcap");
    std::fs::write(&empty, b"").unwrap();
    assert_eq!(
        CaptureReader::open(&empty).unwrap_err().to_string(),
        format!("{}: empty file (0 bytes)", empty.display())
    );
    let good = dir.path().join("good.pcapng");
    std::fs::write(&good, PCAPNG).unwrap();
    let mut r = CaptureReader::open(&good).unwrap();
    let mut n = 0;
    while r.next_packet().unwrap().is_some() {
        n += 1;
    }
    assert_eq!(n, 5);
    assert_eq!(r.position(), PCAPNG.len() as u64);
}

/// Reads everything through a `BufReader` of the given capacity (records straddle its buffer).
fn read_all_buffered(bytes: &[u8], cap: usize) -> (Packets, Option<String>) {
    let mut r = match CaptureReader::from_reader(io::BufReader::with_capacity(cap, bytes), "t") {
        Ok(r) => r,
        Err(e) => return (Vec::new(), Some(e.to_string())),
    };
    let mut out = Vec::new();
    loop {
        match r.next_packet() {
            Ok(Some(p)) => out.push((p.ts, p.orig_len, p.linktype, p.data.to_vec())),
            Ok(None) => return (out, None),
            Err(e) => return (out, Some(e.to_string())),
        }
    }
}

#[test]
fn in_place_and_copying_paths_agree() {
    let files: [&[u8]; 4] = [&PCAP_LE_US, &PCAP_BE_NS, &PCAPNG, &PCAPNG[..286]];
    for f in files {
        let whole = read_all_buffered(f, 1 << 16);
        for cap in [1, 3, 8, 16, 20, 31, 36, 40, 64, 100] {
            assert_eq!(read_all_buffered(f, cap), whole, "capacity {cap}");
        }
        // And at every cut point.
        for cut in 0..f.len() {
            let whole = read_all_buffered(&f[..cut], 1 << 16);
            for cap in [1, 17, 44] {
                assert_eq!(
                    read_all_buffered(&f[..cut], cap),
                    whole,
                    "cut {cut} capacity {cap}"
                );
            }
        }
    }
}

#[test]
fn into_inner_is_positioned_after_the_last_packet() {
    let mut r = CaptureReader::from_reader(&PCAP_LE_US[..], "t").unwrap();
    assert!(r.next_packet().unwrap().is_some());
    assert_eq!(r.position(), 44);
    assert_eq!(r.into_inner(), &PCAP_LE_US[44..]);
}

#[test]
fn read_errors_carry_the_offset() {
    /// Gives `ok` bytes, then fails.
    struct Failing<'a>(&'a [u8]);
    impl Read for Failing<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.0.is_empty() {
                return Err(io::Error::other("disk on fire"));
            }
            let n = buf.len().min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }
    let mut r =
        CaptureReader::from_reader(io::BufReader::new(Failing(&PCAP_LE_US[..50])), "t.pcap")
            .unwrap();
    assert!(r.next_packet().unwrap().is_some());
    let e = r.next_packet().unwrap_err();
    assert_eq!(e.to_string(), "t.pcap: read error at byte 50: disk on fire");
    assert!(!e.is_truncation());
}
