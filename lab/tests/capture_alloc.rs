//! Heap accounting for the capture layer, with a counting global allocator (per thread, so the
//! test harness's other threads do not disturb the counts):
//! - reading pcap and pcapng files allocates nothing per packet;
//! - writing pcap allocates nothing per packet;
//! - a preloaded capture really holds at most 32 bytes per packet beyond the packet data.

use std::io::Write;

use tcpclone::capture::{
    CaptureReader, LinkType, PacketSink, PacketSource, PcapWriter, PreloadedCapture, Timestamp,
    TsPrecision,
};

#[global_allocator]
static GLOBAL: tcpclone_lab::sys::Counting = tcpclone_lab::sys::Counting;
use tcpclone_lab::sys::{allocs, live_bytes};

/// A pcap with `n` packets of imix-like sizes.
fn pcap(n: usize, prec: TsPrecision) -> Vec<u8> {
    let mut w = PcapWriter::new(Vec::new(), "a.pcap", LinkType::ETHERNET, prec, 262_144).unwrap();
    let sizes = [60usize, 60, 60, 60, 60, 60, 60, 576, 576, 576, 576, 1514];
    let data = vec![0x5au8; 1514];
    for i in 0..n {
        let len = sizes[i % sizes.len()];
        w.write_packet(Timestamp(i as u64 * 1_000), len as u32, &data[..len])
            .unwrap();
    }
    w.finish().unwrap()
}

/// A little-endian pcapng with one Ethernet interface (ns resolution) holding `n` packets.
fn pcapng(n: usize) -> Vec<u8> {
    let mut f = Vec::new();
    let block = |f: &mut Vec<u8>, btype: u32, body: &[u8]| {
        let len = (12 + body.len().div_ceil(4) * 4) as u32;
        f.extend_from_slice(&btype.to_le_bytes());
        f.extend_from_slice(&len.to_le_bytes());
        f.extend_from_slice(body);
        f.resize(f.len() + (4 - body.len() % 4) % 4, 0);
        f.extend_from_slice(&len.to_le_bytes());
    };
    let mut shb = vec![0x4d, 0x3c, 0x2b, 0x1a, 1, 0, 0, 0];
    shb.extend_from_slice(&[0xff; 8]);
    block(&mut f, 0x0a0d0d0a, &shb);
    let mut idb = vec![1, 0, 0, 0, 0, 0, 4, 0];
    idb.extend_from_slice(&[9, 0, 1, 0, 9, 0, 0, 0, 0, 0, 0, 0]);
    block(&mut f, 1, &idb);
    for i in 0..n {
        let len = if i % 7 == 0 { 1514u32 } else { 60 };
        let mut epb = Vec::new();
        epb.extend_from_slice(&0u32.to_le_bytes());
        let ts = i as u64 * 1000;
        epb.extend_from_slice(&((ts >> 32) as u32).to_le_bytes());
        epb.extend_from_slice(&(ts as u32).to_le_bytes());
        epb.extend_from_slice(&len.to_le_bytes());
        epb.extend_from_slice(&len.to_le_bytes());
        epb.resize(epb.len() + len as usize, 0xa5);
        block(&mut f, 6, &epb);
    }
    f
}

fn count_packets(src: &mut impl PacketSource) -> usize {
    let mut n = 0;
    while let Some(p) = src.next_packet().unwrap() {
        std::hint::black_box(p.data);
        n += 1;
    }
    n
}

#[test]
fn reading_pcap_allocates_nothing_per_packet() {
    for prec in [TsPrecision::Micro, TsPrecision::Nano] {
        let file = pcap(20_000, prec);
        let mut r = CaptureReader::from_reader(&file[..], "a.pcap").unwrap();
        let before = allocs();
        assert_eq!(count_packets(&mut r), 20_000);
        assert_eq!(
            allocs() - before,
            0,
            "allocations while reading 20,000 packets"
        );
    }
}

#[test]
fn reading_pcapng_allocates_nothing_per_packet() {
    let file = pcapng(20_000);
    let mut r = CaptureReader::from_reader(&file[..], "a.pcapng").unwrap();
    let before = allocs();
    assert_eq!(count_packets(&mut r), 20_000);
    assert_eq!(
        allocs() - before,
        0,
        "allocations while reading 20,000 packets"
    );
}

#[test]
fn reading_a_file_by_path_allocates_nothing_per_packet() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.pcap");
    std::fs::File::create(&path)
        .unwrap()
        .write_all(&pcap(20_000, TsPrecision::Micro))
        .unwrap();
    let mut r = CaptureReader::open(&path).unwrap();
    let before = allocs();
    assert_eq!(count_packets(&mut r), 20_000);
    assert_eq!(allocs() - before, 0);
}

#[test]
fn writing_pcap_allocates_nothing_per_packet() {
    let file = pcap(5_000, TsPrecision::Nano);
    let mut r = CaptureReader::from_reader(&file[..], "a.pcap").unwrap();
    let mut w = PcapWriter::new(
        std::io::sink(),
        "out.pcap",
        LinkType::ETHERNET,
        TsPrecision::Micro,
        262_144,
    )
    .unwrap();
    let before = allocs();
    while let Some(p) = r.next_packet().unwrap() {
        w.send(&p).unwrap();
    }
    PacketSink::flush(&mut w).unwrap();
    assert_eq!(allocs() - before, 0);
}

#[test]
fn preload_holds_at_most_32_bytes_per_packet_beyond_the_data() {
    let n = 50_000;
    for file in [pcap(n, TsPrecision::Nano), pcapng(n)] {
        let mut r = CaptureReader::from_reader(&file[..], "a").unwrap();
        let before = live_bytes();
        let cap = PreloadedCapture::load(&mut r).unwrap();
        let held = live_bytes() - before;
        assert_eq!(cap.len(), n);
        let overhead = (held - cap.data_len() as i64) as f64 / n as f64;
        eprintln!(
            "preload: {n} packets, {} data bytes, heap held {held} B: {overhead:.2} B/packet overhead (capacity-based: {:.2})",
            cap.data_len(),
            cap.overhead_per_packet()
        );
        assert!(overhead <= 32.0, "{overhead} bytes per packet");
        assert!(cap.overhead_per_packet() <= 32.0);
        // The capacity-based figure accounts for everything the heap really holds.
        assert!((cap.overhead_per_packet() - overhead).abs() < 1.0);
    }
}
