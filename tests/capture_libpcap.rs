//! Differential tests: `CaptureReader` against libpcap (through the `pcap` crate) and tshark, on
//! files written here, converted to pcapng by editcap/mergecap, and on the real captures in pcaps/.
//! Every packet must agree: timestamp, caplen, original length and bytes.

use std::path::{Path, PathBuf};
use std::process::Command;

use tcpclone::capture::{
    CaptureFormat, CaptureReader, LinkType, PacketSource, PcapWriter, Timestamp, TsPrecision,
};

type Rec = (Timestamp, u32, Vec<u8>);

/// Our reader: every packet, then the error if one stopped it.
fn ours(path: &Path) -> (Vec<Rec>, Option<String>) {
    let mut r = CaptureReader::open(path).unwrap();
    let mut v = Vec::new();
    loop {
        match r.next_packet() {
            Ok(Some(p)) => v.push((p.ts, p.orig_len, p.data.to_vec())),
            Ok(None) => return (v, None),
            Err(e) => return (v, Some(e.to_string())),
        }
    }
}

/// libpcap, nanosecond timestamps: every packet, then the error if one stopped it.
fn libpcap(path: &Path) -> (Vec<Rec>, Option<String>) {
    let mut cap = pcap::Capture::from_file_with_precision(path, pcap::Precision::Nano).unwrap();
    let mut v = Vec::new();
    loop {
        match cap.next_packet() {
            Ok(p) => {
                let ts =
                    Timestamp::from_parts(p.header.ts.tv_sec as u64, p.header.ts.tv_usec as u32);
                assert_eq!(p.header.caplen as usize, p.data.len());
                v.push((ts, p.header.len, p.data.to_vec()));
            }
            Err(pcap::Error::NoMorePackets) => return (v, None),
            Err(e) => return (v, Some(e.to_string())),
        }
    }
}

fn have(program: &str) -> bool {
    Command::new(program).arg("--version").output().is_ok()
}

/// Deterministic pseudo-random packets with sub-microsecond timestamps.
fn write_sample(path: &Path, linktype: LinkType, prec: TsPrecision, n: usize, seed: u64) {
    let mut w = PcapWriter::create(path, linktype, prec, 262_144).unwrap();
    let mut x = seed;
    let mut t = 1_700_000_000_000_000_000u64;
    for _ in 0..n {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        t += (x >> 40) % 3_000_000_000;
        let len = 14 + ((x >> 20) % 1500) as usize;
        let mut data: Vec<u8> = (0..len).map(|i| (x >> (i % 56)) as u8).collect();
        // EtherType 0x88b5 (local experimental), so no tool takes the bytes for IP and edits them.
        data[12..14].copy_from_slice(&[0x88, 0xb5]);
        let orig = len as u32 + ((x >> 8) % 3) as u32 * 100;
        w.write_packet(Timestamp(t), orig, &data).unwrap();
    }
    w.finish().unwrap();
}

fn assert_same(path: &Path) {
    let (a, ea) = ours(path);
    let (b, eb) = libpcap(path);
    assert_eq!(
        a.len(),
        b.len(),
        "{}: packet counts ({ea:?} / {eb:?})",
        path.display()
    );
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        assert_eq!(x, y, "{}: packet {i}", path.display());
    }
    assert_eq!(
        ea.is_some(),
        eb.is_some(),
        "{}: {ea:?} vs libpcap {eb:?}",
        path.display()
    );
}

#[test]
fn pcap_files_match_libpcap() {
    let dir = tempfile::tempdir().unwrap();
    for (i, prec) in [TsPrecision::Micro, TsPrecision::Nano]
        .into_iter()
        .enumerate()
    {
        let p = dir.path().join(format!("s{i}.pcap"));
        write_sample(&p, LinkType::ETHERNET, prec, 500, i as u64 + 1);
        assert_same(&p);
        // The same file cut in the middle of a record: libpcap also stops after the whole ones.
        let bytes = std::fs::read(&p).unwrap();
        let cut = dir.path().join(format!("s{i}-cut.pcap"));
        std::fs::write(&cut, &bytes[..bytes.len() * 2 / 3]).unwrap();
        assert_same(&cut);
        let (_, e) = ours(&cut);
        assert!(e.unwrap().contains("cut short at byte"));
    }
}

#[test]
fn editcap_pcapng_matches_libpcap_and_the_pcap() {
    if !have("editcap") {
        eprintln!("*** SKIPPED: editcap not installed (apt-get install tshark) ***");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for (i, prec) in [TsPrecision::Micro, TsPrecision::Nano]
        .into_iter()
        .enumerate()
    {
        let p = dir.path().join(format!("s{i}.pcap"));
        let ng = dir.path().join(format!("s{i}.pcapng"));
        write_sample(&p, LinkType::ETHERNET, prec, 300, 10 + i as u64);
        let st = Command::new("editcap")
            .args(["-F", "pcapng"])
            .arg(&p)
            .arg(&ng)
            .status()
            .unwrap();
        assert!(st.success());
        let r = CaptureReader::open(&ng).unwrap();
        assert_eq!(r.format(), CaptureFormat::Pcapng);
        assert_eq!(
            r.precision(),
            prec,
            "editcap keeps the resolution in if_tsresol"
        );
        assert_same(&ng);
        assert_eq!(ours(&ng), ours(&p));
    }
}

/// mergecap of an Ethernet and a raw-IP capture gives a pcapng with two interfaces of different
/// link types, which libpcap refuses; compare with tshark instead.
#[test]
fn mergecap_two_linktypes_match_tshark() {
    if !have("mergecap") || !have("tshark") {
        eprintln!("*** SKIPPED: mergecap/tshark not installed (apt-get install tshark) ***");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("eth.pcap");
    let b = dir.path().join("raw.pcap");
    let m = dir.path().join("merged.pcapng");
    write_sample(&a, LinkType::ETHERNET, TsPrecision::Nano, 100, 3);
    write_sample(&b, LinkType::RAW, TsPrecision::Micro, 100, 4);
    let st = Command::new("mergecap")
        .args(["-F", "pcapng", "-w"])
        .arg(&m)
        .arg(&a)
        .arg(&b)
        .status()
        .unwrap();
    assert!(st.success());
    let out = Command::new("tshark")
        .arg("-r")
        .arg(&m)
        .args([
            "-T",
            "fields",
            "-e",
            "frame.time_epoch",
            "-e",
            "frame.len",
            "-e",
            "frame.cap_len",
            "-e",
            "frame.interface_id",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let tshark: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let mut r = CaptureReader::open(&m).unwrap();
    let mut mine = Vec::new();
    let mut linktypes = std::collections::BTreeSet::new();
    while let Some(p) = r.next_packet().unwrap() {
        linktypes.insert(p.linktype.0);
        let iface = if p.linktype == LinkType::ETHERNET {
            0
        } else {
            1
        };
        mine.push(format!(
            "{}.{:09}\t{}\t{}\t{}",
            p.ts.secs(),
            p.ts.subsec_nanos(),
            p.orig_len,
            p.data.len(),
            iface
        ));
    }
    assert_eq!(linktypes, [1, 101].into_iter().collect());
    assert_eq!(mine, tshark);
}

/// The real captures committed in pcaps/ (made in the lab by another part of the project).
#[test]
fn real_captures_match_libpcap() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("pcaps");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        eprintln!("*** no pcaps/ directory: nothing to compare ***");
        return;
    };
    let mut n = 0;
    for e in entries {
        let path = e.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !(name.ends_with(".pcap") || name.ends_with(".pcapng")) {
            continue;
        }
        let (pkts, err) = ours(&path);
        assert!(err.is_none(), "{err:?}");
        // libpcap refuses pcapng files whose interfaces have different link types.
        let mut lts = std::collections::BTreeSet::new();
        let mut r = CaptureReader::open(&path).unwrap();
        while let Some(p) = r.next_packet().unwrap() {
            lts.insert(p.linktype.0);
        }
        if lts.len() <= 1 {
            assert_same(&path);
        }
        // The same capture as pcapng (editcap) reads the same.
        if name.ends_with(".pcap") && have("editcap") {
            let tmp = tempfile::tempdir().unwrap();
            let ng = tmp.path().join("x.pcapng");
            let st = Command::new("editcap")
                .args(["-F", "pcapng"])
                .arg(&path)
                .arg(&ng)
                .status()
                .unwrap();
            assert!(st.success());
            assert_eq!(ours(&ng), (pkts.clone(), None), "{name} as pcapng");
            if lts.len() <= 1 {
                assert_same(&ng);
            }
        }
        eprintln!("{name}: {} packets, link types {lts:?}", pkts.len());
        n += 1;
    }
    eprintln!("compared {n} real captures");
}

/// tcprewrite (libpcap underneath) turns a nanosecond capture into a microsecond one by
/// truncating; our writer at microsecond precision must give the same records, byte for byte.
#[test]
fn micro_writer_matches_tcprewrite_on_a_nanosecond_capture() {
    if !have("tcprewrite") {
        eprintln!("*** SKIPPED: tcprewrite not installed (apt-get install tcpreplay) ***");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ns = dir.path().join("ns.pcap");
    let reference = dir.path().join("ref.pcap");
    let mine = dir.path().join("mine.pcap");
    write_sample(&ns, LinkType::ETHERNET, TsPrecision::Nano, 400, 42);
    let st = Command::new("tcprewrite")
        .arg("-i")
        .arg(&ns)
        .arg("-o")
        .arg(&reference)
        .status()
        .unwrap();
    assert!(st.success());
    let mut r = CaptureReader::open(&ns).unwrap();
    let mut w = PcapWriter::create(&mine, r.linktype(), TsPrecision::Micro, 65535).unwrap();
    while let Some(p) = r.next_packet().unwrap() {
        w.write_packet(p.ts, p.orig_len, p.data).unwrap();
    }
    w.finish().unwrap();
    let a = std::fs::read(&mine).unwrap();
    let b = std::fs::read(&reference).unwrap();
    // Same magic/version/linktype; records identical byte for byte.
    assert_eq!(&a[..8], &b[..8]);
    assert_eq!(&a[20..24], &b[20..24]);
    let (ra, rb) = (ours(&mine).0, ours(&reference).0);
    assert_eq!(ra.len(), rb.len());
    for (i, (x, y)) in ra.iter().zip(&rb).enumerate() {
        assert_eq!((x.0, x.1, x.2.len()), (y.0, y.1, y.2.len()), "record {i}");
        assert!(x.2 == y.2, "record {i}: bytes differ");
    }
    assert_eq!(a.len(), b.len());
    assert!(a[24..] == b[24..], "records differ from tcprewrite's");
    // And some sub-microsecond parts really were dropped.
    assert_ne!(ours(&ns).0, ours(&mine).0);
}
