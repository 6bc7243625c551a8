//! Packets per second of the rewriter on a realistic mix: every record of the lab captures in
//! `pcaps/` (HTTP keep-alive/close with TSO frames, redis, IPv6, VLAN), with the typical edit set
//! `-N` + `-r` + `--enet-dmac` + `--ttl`, in Full (tcprewrite-equal) and Incremental checksum
//! modes, plus `tso_split` of the capture's TSO super-frames. Run: `cargo bench --bench rewrite`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;
use std::path::Path;
use tcpclone::capture::{CaptureReader, LinkType, PacketSource};
use tcpclone::rewrite::{tso_split, ChecksumMode, RewriteOptions, Rewriter};

fn load() -> Vec<(LinkType, Vec<u8>, u32)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("pcaps");
    let mut v = Vec::new();
    for f in [
        "http_keepalive.pcap",
        "http_close.pcap",
        "redis.pcap",
        "http_ipv6.pcap",
        "http_vlan.pcap",
    ] {
        let mut r = CaptureReader::open(dir.join(f)).expect("pcaps/ capture");
        let lt = r.linktype();
        while let Some(p) = r.next_packet().expect("read") {
            v.push((lt, p.data.to_vec(), p.orig_len));
        }
    }
    v
}

fn opts(mode: ChecksumMode) -> RewriteOptions {
    RewriteOptions {
        pnat: vec!["198.18.200.0/24:198.19.7.0/24,[2001:db8:200::/64]:[2001:db8:300::/64]".into()],
        portmap: vec!["80:8080,6379:16379".into()],
        enet_dmac: Some("02:00:5e:00:00:09".into()),
        ttl: Some("32".into()),
        checksums: mode,
        ..Default::default()
    }
}

fn bench(c: &mut Criterion) {
    let pkts = load();
    let bytes: usize = pkts.iter().map(|p| p.1.len()).sum();
    let mut g = c.benchmark_group("rewrite");
    g.throughput(Throughput::Elements(pkts.len() as u64));
    for (name, mode) in [
        ("full", ChecksumMode::Full),
        ("incremental", ChecksumMode::Incremental),
    ] {
        let rw = Rewriter::compile(&opts(mode)).unwrap();
        let mut out = Vec::with_capacity(70_000);
        g.bench_function(
            format!("N+r+dmac+ttl/{name}/{}pkts/{}KB", pkts.len(), bytes / 1000),
            |b| {
                b.iter(|| {
                    for (lt, data, len) in &pkts {
                        black_box(rw.apply(*lt, data, *len, &mut out));
                    }
                })
            },
        );
    }
    // In place on small frames only (what an engine does per segment).
    let rw = Rewriter::compile(&opts(ChecksumMode::Incremental)).unwrap();
    let mut small: Vec<(LinkType, Vec<u8>)> = pkts
        .iter()
        .filter(|p| p.1.len() <= 200)
        .map(|p| (p.0, p.1.clone()))
        .collect();
    g.throughput(Throughput::Elements(small.len() as u64));
    g.bench_function(format!("in_place/incremental/{}small", small.len()), |b| {
        b.iter(|| {
            for (lt, data) in small.iter_mut() {
                black_box(rw.apply_in_place(*lt, data));
            }
        })
    });
    let big: Vec<&(LinkType, Vec<u8>, u32)> = pkts.iter().filter(|p| p.1.len() > 1514).collect();
    let mut scratch = Vec::with_capacity(2000);
    g.throughput(Throughput::Elements(big.len() as u64));
    g.bench_function(format!("tso_split/1500/{}frames", big.len()), |b| {
        b.iter(|| {
            for (lt, data, _) in &big {
                let _ = black_box(tso_split(*lt, data, 1500, &mut scratch, |s| {
                    black_box(s);
                }));
            }
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
