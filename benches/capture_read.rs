//! Reading speed of the capture layer: a synthetic 100,000-packet capture held in memory, read
//! packet by packet as pcap (µs and ns) and pcapng, and iterated from a preload. Reports packets/s
//! (criterion's "thrpt" in elements/s).
//!
//! Run: `cargo bench -p tcpclone --bench capture_read`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tcpclone::capture::{
    CaptureReader, LinkType, PacketSource, PcapWriter, PreloadedCapture, Timestamp, TsPrecision,
};

const PACKETS: usize = 100_000;

/// imix-like sizes: 7 × 60, 4 × 576, 1 × 1514.
fn size(i: usize) -> usize {
    [60, 60, 60, 60, 60, 60, 60, 576, 576, 576, 576, 1514][i % 12]
}

fn pcap(prec: TsPrecision) -> Vec<u8> {
    let mut w = PcapWriter::new(Vec::new(), "bench", LinkType::ETHERNET, prec, 262_144).unwrap();
    let data = vec![0x5au8; 1514];
    for i in 0..PACKETS {
        let len = size(i);
        w.write_packet(Timestamp(i as u64 * 1_000), len as u32, &data[..len])
            .unwrap();
    }
    w.finish().unwrap()
}

fn pcapng() -> Vec<u8> {
    fn block(f: &mut Vec<u8>, btype: u32, body: &[u8]) {
        let len = (12 + body.len().div_ceil(4) * 4) as u32;
        f.extend_from_slice(&btype.to_le_bytes());
        f.extend_from_slice(&len.to_le_bytes());
        f.extend_from_slice(body);
        f.resize(f.len() + (4 - body.len() % 4) % 4, 0);
        f.extend_from_slice(&len.to_le_bytes());
    }
    let mut f = Vec::new();
    let mut shb = vec![0x4d, 0x3c, 0x2b, 0x1a, 1, 0, 0, 0];
    shb.extend_from_slice(&[0xff; 8]);
    block(&mut f, 0x0a0d_0d0a, &shb);
    let mut idb = vec![1, 0, 0, 0, 0, 0, 4, 0];
    idb.extend_from_slice(&[9, 0, 1, 0, 9, 0, 0, 0, 0, 0, 0, 0]);
    block(&mut f, 1, &idb);
    let mut epb = Vec::new();
    for i in 0..PACKETS {
        let len = size(i) as u32;
        let ts = i as u64 * 1000;
        epb.clear();
        epb.extend_from_slice(&0u32.to_le_bytes());
        epb.extend_from_slice(&((ts >> 32) as u32).to_le_bytes());
        epb.extend_from_slice(&(ts as u32).to_le_bytes());
        epb.extend_from_slice(&len.to_le_bytes());
        epb.extend_from_slice(&len.to_le_bytes());
        epb.resize(epb.len() + len as usize, 0xa5);
        block(&mut f, 6, &epb);
    }
    f
}

fn drain(src: &mut impl PacketSource) -> usize {
    let mut n = 0;
    while let Some(p) = src.next_packet().unwrap() {
        black_box(p.data);
        n += 1;
    }
    n
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("capture_read");
    g.throughput(Throughput::Elements(PACKETS as u64));
    g.sample_size(20);
    for (name, file) in [
        ("pcap_us_imix", pcap(TsPrecision::Micro)),
        ("pcap_ns_imix", pcap(TsPrecision::Nano)),
        ("pcapng_imix", pcapng()),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut r = CaptureReader::from_reader(&file[..], "bench").unwrap();
                assert_eq!(drain(&mut r), PACKETS);
            })
        });
    }
    let file = pcap(TsPrecision::Nano);
    let mut pre =
        PreloadedCapture::load(&mut CaptureReader::from_reader(&file[..], "bench").unwrap())
            .unwrap();
    g.bench_function("preloaded_imix", |b| {
        b.iter(|| {
            pre.rewind();
            assert_eq!(drain(&mut pre), PACKETS);
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
