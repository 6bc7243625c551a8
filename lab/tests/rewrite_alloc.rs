//! The rewriter allocates nothing per packet once its output buffer has grown: a counting global
//! allocator watches a second pass over every record of the lab captures, for several edit sets
//! (incl. VLAN push, `--dlt enet` on cooked captures, truncation) and `tso_split`.

use tcpclone::capture::{CaptureReader, LinkType, PacketSource};
use tcpclone::rewrite::{tso_split, RewriteOptions, Rewriter};

#[global_allocator]
static GLOBAL: tcpclone_lab::sys::Counting = tcpclone_lab::sys::Counting;
use tcpclone_lab::sys::total_allocs;

fn load(f: &str) -> Vec<(LinkType, Vec<u8>, u32)> {
    let p = tcpclone_lab::workspace_root().join("pcaps").join(f);
    let mut r = CaptureReader::open(p).unwrap();
    let lt = r.linktype();
    let mut v = Vec::new();
    while let Some(p) = r.next_packet().unwrap() {
        v.push((lt, p.data.to_vec(), p.orig_len));
    }
    v
}

#[test]
fn no_allocation_per_packet() {
    let mut pkts = Vec::new();
    for f in [
        "http_keepalive.pcap",
        "redis.pcap",
        "http_ipv6.pcap",
        "http_vlan.pcap",
        "http_sll.pcap",
        "http_sll2.pcap",
    ] {
        pkts.extend(load(f));
    }
    let edit_sets = [
        RewriteOptions {
            pnat: vec![
                "198.18.200.0/24:198.19.7.0/24,[2001:db8:200::/64]:[2001:db8:300::/64]".into(),
            ],
            portmap: vec!["80:8080,6379:16379".into()],
            ttl: Some("-1".into()),
            tos: Some(8),
            ..Default::default()
        },
        RewriteOptions {
            dlt: Some("enet".into()),
            enet_dmac: Some("02:00:5e:00:00:09".into()),
            enet_vlan: Some("add".into()),
            enet_vlan_tag: Some(5),
            mtu: Some(1000),
            mtu_trunc: true,
            ..Default::default()
        },
    ];
    let mut out = Vec::with_capacity(16);
    let mut scratch = Vec::new();
    for o in &edit_sets {
        let rw = Rewriter::compile(o).unwrap();
        for pass in 0..2 {
            let before = total_allocs();
            let mut segs = 0usize;
            for (lt, data, len) in &pkts {
                let r = rw.apply(*lt, data, *len, &mut out);
                std::hint::black_box(r);
                let _ = tso_split(*lt, data, 1500, &mut scratch, |_| segs += 1);
            }
            let n = total_allocs() - before;
            if pass == 0 && std::ptr::eq(o, &edit_sets[0]) {
                // The first pass grows the buffers: proves the counter sees allocations.
                assert!(n > 0, "counting allocator saw nothing");
            }
            if pass == 1 {
                assert_eq!(
                    n,
                    0,
                    "{n} allocations in the second pass over {} packets ({segs} segments)",
                    pkts.len()
                );
            }
        }
    }
}
