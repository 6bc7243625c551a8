//! Hostile traffic at intercept's capture point (needs root).
//!
//! A pcap of hostile frames — random bytes behind an IPv4 or IPv6 EtherType, bad IP and TCP
//! checksums, impossible flag mixes (SYN+FIN+RST, all flags, none), absurd sequence numbers,
//! window scale 255 and broken option lengths, TCP data offsets below 5 or past the packet,
//! IHL past the packet, IP lengths that lie, fragments, truncated IPv6 headers — is sent with
//! tcpreplay from the far end of a veth to the interface intercept captures on (filter: every
//! IP packet). Twice: intercept must count them (captured, not tcp / malformed / dropped
//! unknown), keep running, stop cleanly on SIGTERM, and its memory must not grow from the first
//! round to the second.

use tcpclone_lab::*;

use std::path::Path;
use std::time::{Duration, Instant};

const CLI_IP: [u8; 4] = [198, 18, 213, 1];
const SRV_IP: [u8; 4] = [198, 18, 213, 2];

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

fn eth(ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An IPv4 + TCP packet from the server's port 6379 with the given TCP header tail (after the
/// ports), options and payload; checksums left as given (zero: wrong).
fn ipv4_tcp(
    seq: u32,
    ack: u32,
    doff_flags: u16,
    window: u16,
    opts: &[u8],
    payload: &[u8],
) -> Vec<u8> {
    let mut tcp = Vec::new();
    tcp.extend_from_slice(&6379u16.to_be_bytes());
    tcp.extend_from_slice(&40300u16.to_be_bytes());
    tcp.extend_from_slice(&seq.to_be_bytes());
    tcp.extend_from_slice(&ack.to_be_bytes());
    tcp.extend_from_slice(&doff_flags.to_be_bytes());
    tcp.extend_from_slice(&window.to_be_bytes());
    tcp.extend_from_slice(&[0xde, 0xad, 0, 0]); // bad checksum, urgent pointer 0
    tcp.extend_from_slice(opts);
    tcp.extend_from_slice(payload);
    let total = (20 + tcp.len()) as u16;
    let mut ip = vec![0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, 6, 0xbe, 0xef];
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip.extend_from_slice(&SRV_IP);
    ip.extend_from_slice(&CLI_IP);
    ip.extend_from_slice(&tcp);
    ip
}

fn hostile_frames() -> Vec<Vec<u8>> {
    let mut r = Rng(0x9e37_79b9_7f4a_7c15);
    let mut v = Vec::new();
    // Random bytes behind IPv4 / IPv6 EtherTypes, and random bytes that start like IPv4+TCP.
    for i in 0..40 {
        let n = (r.next() % 1400) as usize;
        v.push(eth(if i % 2 == 0 { 0x0800 } else { 0x86dd }, &r.bytes(n)));
        let n = 20 + (r.next() % 80) as usize;
        let mut p = r.bytes(n);
        p[0] = 0x45;
        p[9] = 6;
        v.push(eth(0x0800, &p));
    }
    let d5 = 5u16 << 12;
    // Flag mixes: SYN+FIN+RST+PSH+URG, everything, nothing.
    for flags in [0x02 | 0x01 | 0x04 | 0x08 | 0x20, 0x1ff, 0x000, 0x003, 0x006] {
        v.push(eth(0x0800, &ipv4_tcp(1, 2, d5 | flags, 65535, &[], b"x")));
    }
    // Absurd sequence numbers and windows.
    for (seq, ack) in [(u32::MAX, 0), (0, u32::MAX), (0x8000_0000, 0x7fff_ffff)] {
        v.push(eth(
            0x0800,
            &ipv4_tcp(seq, ack, d5 | 0x10, 0, &[], &[0; 100]),
        ));
    }
    // Options: window scale 255, MSS with length 0, a length past the header, only NOPs.
    for opts in [
        &[3u8, 3, 255, 1][..],
        &[2, 0, 0, 0][..],
        &[8, 40, 0, 0][..],
        &[1, 1, 1, 1, 1, 1, 1, 1][..],
    ] {
        let doff = ((20 + opts.len()) / 4) as u16;
        v.push(eth(
            0x0800,
            &ipv4_tcp(7, 7, (doff << 12) | 0x12, 1, opts, &[]),
        ));
    }
    // Data offsets below 5 and past the packet.
    for doff in [0u16, 2, 4, 15] {
        v.push(eth(
            0x0800,
            &ipv4_tcp(1, 1, (doff << 12) | 0x18, 100, &[], b"abc"),
        ));
    }
    // IHL past the packet, IHL below 5, IP total length too big and too small.
    let base = ipv4_tcp(1, 1, d5 | 0x18, 100, &[], b"hello");
    for f in [
        |p: &mut Vec<u8>| p[0] = 0x4f,
        |p: &mut Vec<u8>| p[0] = 0x42,
        |p: &mut Vec<u8>| p[2..4].copy_from_slice(&9000u16.to_be_bytes()),
        |p: &mut Vec<u8>| p[2..4].copy_from_slice(&10u16.to_be_bytes()),
        |p: &mut Vec<u8>| p[6] = 0x20, // MF: a first fragment
        |p: &mut Vec<u8>| p[6..8].copy_from_slice(&[0, 8]), // a later fragment
        |p: &mut Vec<u8>| p.truncate(30), // TCP header cut short
    ] {
        let mut p = base.clone();
        f(&mut p);
        v.push(eth(0x0800, &p));
    }
    // IPv6: truncated header, TCP next header with no TCP, an extension-header loop.
    let mut v6 = vec![0x60, 0, 0, 0, 0, 20, 6, 64];
    v6.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
    v6.extend_from_slice(&[0; 12]);
    v6.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
    v6.extend_from_slice(&[0; 11]);
    v6.push(1);
    v.push(eth(0x86dd, &v6[..30]));
    v.push(eth(0x86dd, &v6));
    let mut hop = v6.clone();
    hop[6] = 0; // hop-by-hop header pointing to itself, forever
    hop.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]);
    v.push(eth(0x86dd, &hop));
    // A runt frame.
    v.push(vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0]);
    v
}

fn write_pcap(path: &Path, frames: &[Vec<u8>]) {
    let mut d = Vec::new();
    d.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    d.extend_from_slice(&2u16.to_le_bytes());
    d.extend_from_slice(&4u16.to_le_bytes());
    d.extend_from_slice(&[0; 8]);
    d.extend_from_slice(&65535u32.to_le_bytes());
    d.extend_from_slice(&1u32.to_le_bytes());
    for (i, f) in frames.iter().enumerate() {
        d.extend_from_slice(&1u32.to_le_bytes());
        d.extend_from_slice(&(i as u32).to_le_bytes());
        d.extend_from_slice(&(f.len() as u32).to_le_bytes());
        d.extend_from_slice(&(f.len() as u32).to_le_bytes());
        d.extend_from_slice(f);
    }
    std::fs::write(path, d).unwrap();
}

fn counter(line: &str, name: &str) -> u64 {
    line.split(&format!("{name} "))
        .nth(1)
        .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {line}"))
}

#[test]
fn intercept_hostile_capture_traffic() {
    require_root!("harden_hostile::intercept_hostile_capture_traffic");
    require_programs!("harden_hostile", "ip", "tcpreplay");
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    let frames = hostile_frames();
    let pcap = dir.join("hostile.pcap");
    write_pcap(&pcap, &frames);
    let mut lab = Lab::new();
    let cli = lab.netns("hhc");
    let srv = lab.netns("hhs");
    let (veth_cli, veth_srv) = lab.veth(&cli, "198.18.213.1/24", &srv, "198.18.213.2/24");
    let ilog = dir.join("intercept.log");
    let ibin = bin("intercept");
    let ipid = lab.spawn(
        &cli,
        &[
            ibin.to_str().unwrap(),
            "-i",
            &veth_cli,
            "-F",
            "ip or ip6",
            "-b",
            "127.0.0.1",
            "--insecure",
            "--stats",
            "1",
        ],
        Some(&ilog),
    );
    let t0 = Instant::now();
    while !std::fs::read_to_string(&ilog)
        .unwrap_or_default()
        .contains("stats:")
    {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "intercept did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Each round: the file 100 times at 5,000 packets/s.
    let loops = 100;
    let round = |lab: &Lab| {
        lab.exec_ok(
            &srv,
            &format!(
                "tcpreplay -q -i {veth_srv} --pps=5000 --loop={loops} {} >/dev/null",
                pcap.display()
            ),
        );
        std::thread::sleep(Duration::from_millis(1500));
    };
    round(&lab);
    let rss1 = rss_kb(ipid).unwrap();
    round(&lab);
    let rss2 = rss_kb(ipid).unwrap();
    let st = lab
        .stop(ipid, "TERM", Duration::from_secs(2))
        .expect("intercept stops within 2 s of SIGTERM");
    let log = std::fs::read_to_string(&ilog).unwrap();
    assert!(st.success(), "{log}");
    assert!(!log.contains("panicked"), "{log}");
    let summary = log
        .lines()
        .rev()
        .find(|l| l.contains("summary:"))
        .unwrap_or_else(|| panic!("no summary:\n{log}"));
    let sent = (frames.len() * loops * 2) as u64;
    let captured = counter(summary, "captured");
    let not_tcp = counter(summary, "not tcp");
    let malformed = counter(summary, "malformed");
    let drops = counter(summary, "kernel drops");
    let unknown = counter(summary, "dropped unknown");
    let parked = counter(summary, "parked");
    let routed = counter(summary, "routed");
    eprintln!(
        "{} hostile frames x {} sent; RSS {rss1} kB after round 1, {rss2} kB after round 2\n{summary}",
        frames.len(),
        loops * 2
    );
    // Runt and non-IP frames never pass the "ip or ip6" filter; the rest must be captured.
    assert!(
        captured + drops >= sent * 9 / 10,
        "captured {captured} of {sent}"
    );
    assert!(not_tcp > 0 && routed == 0, "{summary}");
    // Every captured frame is accounted for: not TCP, malformed, or unroutable (no session:
    // parked, then dropped when parking is full or its hold time passed; a parked one that
    // expired is in both counters, hence the upper bound).
    let accounted = not_tcp + malformed + parked + unknown;
    assert!(
        accounted >= captured && accounted <= captured + parked,
        "unaccounted frames: {summary}"
    );
    assert!(
        rss2 <= rss1 + 2048,
        "memory grew from {rss1} kB to {rss2} kB under hostile traffic"
    );
}
