//! The `replay` binary on bad flags and bad input files (no root needed: `-w` output):
//! one clear line naming the flag or the file (with the byte offset), a non-zero exit, no panic;
//! a file cut mid-record still gives every whole record before the cut. Also: `-w` keeps the
//! input's timestamp precision, and pcapng input becomes a pcap.

use std::path::Path;
use std::process::Command;
use tcpclone::capture::{
    CaptureReader, LinkType, PacketSource, PcapWriter, Timestamp, TsPrecision,
};

fn replay(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_replay"))
        .args(args)
        .output()
        .expect("run replay");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn frame(i: u32) -> Vec<u8> {
    let mut f = vec![0u8; 60];
    f[0..6].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
    f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    f[14] = 0x45;
    f[16..18].copy_from_slice(&46u16.to_be_bytes());
    f[22] = 64;
    f[23] = 17;
    f[42..46].copy_from_slice(&i.to_be_bytes());
    f
}

fn write_pcap(path: &Path, n: u32, precision: TsPrecision) {
    let mut w = PcapWriter::create(path, LinkType::ETHERNET, precision, 65535).unwrap();
    for i in 0..n {
        w.write_packet(
            Timestamp(1_700_000_000_000_000_000 + i as u64 * 1_234_567),
            60,
            &frame(i),
        )
        .unwrap();
    }
    w.flush().unwrap();
}

fn records(path: &Path) -> Vec<(u64, Vec<u8>)> {
    let mut r = CaptureReader::open(path).unwrap();
    let mut v = Vec::new();
    while let Some(p) = r.next_packet().unwrap() {
        v.push((p.ts.0, p.data.to_vec()));
    }
    v
}

/// One line on stderr, starting with `replay: `.
fn one_line(stderr: &str) -> &str {
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "expected one line, got: {stderr}");
    assert!(lines[0].starts_with("replay: "), "{stderr}");
    lines[0]
}

#[test]
fn bad_flags_are_refused_before_any_file_is_read_naming_the_flag() {
    // The input does not exist: a flag error must come first (exit 2), never the file error.
    let cases: &[(&[&str], &str)] = &[
        (&["-S", "198.18.0.0/40:198.19.0.0/16"], "srcipmap"),
        (&["-N", "nonsense"], "pnat"),
        (&["-r", "80:99999"], "portmap"),
        (&["--enet-dmac", "02:00:00:zz:00:01"], "enet-dmac"),
        (&["--ttl", "+300"], "ttl"),
        (&["--tos", "256"], "tos"),
        (&["--dlt", "fddi"], "dlt"),
        (&["--pps", "-5"], "pps"),
        (
            &[
                "-N",
                "198.18.0.0/16:198.19.0.0/16",
                "-S",
                "198.18.0.0/16:198.19.0.0/16",
            ],
            "pnat",
        ),
    ];
    for (flags, name) in cases {
        let mut args = vec!["-w", "/dev/null"];
        args.extend_from_slice(flags);
        args.push("/nonexistent/in.pcap");
        let (code, _, stderr) = replay(&args);
        assert_eq!(code, 2, "{flags:?}: exit {code}, {stderr}");
        let line = one_line(&stderr);
        assert!(
            line.contains(name),
            "{flags:?}: does not name {name}: {line}"
        );
        assert!(
            !line.contains("nonexistent"),
            "{flags:?}: read the file first: {line}"
        );
    }
}

#[test]
fn bad_input_files_give_one_line_with_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.pcap");
    write_pcap(&good, 10, TsPrecision::Micro);
    let bytes = std::fs::read(&good).unwrap();
    let make = |name: &str, data: &[u8]| {
        let p = dir.path().join(name);
        std::fs::write(&p, data).unwrap();
        p
    };
    let mut absurd = bytes.clone();
    absurd[24 + 8..24 + 12].copy_from_slice(&0x7fff_ffffu32.to_le_bytes());
    let mut linktype = bytes.clone();
    linktype[20..24].copy_from_slice(&4242u32.to_le_bytes());
    let cases = [
        (make("empty.pcap", &[]), None),
        (
            make("magic.pcap", b"this is not a capture file at all"),
            Some("byte 0"),
        ),
        (make("header.pcap", &bytes[..10]), Some("byte")),
        (make("caplen.pcap", &absurd), Some("byte 24")),
        (make("linktype.pcap", &linktype), Some("byte 20")),
        (dir.path().join("missing.pcap"), None),
        (dir.path().to_path_buf(), None),
    ];
    for (path, offset) in &cases {
        let out = dir.path().join("out.pcap");
        let (code, _, stderr) = replay(&["-w", out.to_str().unwrap(), path.to_str().unwrap()]);
        assert_ne!(code, 0, "{}: exit 0", path.display());
        assert!(!stderr.contains("panicked"), "{stderr}");
        let line = stderr.lines().last().unwrap_or("");
        assert!(
            line.contains(path.to_str().unwrap()),
            "{}: file not named: {stderr}",
            path.display()
        );
        if let Some(o) = offset {
            assert!(
                line.contains(o),
                "{}: no offset `{o}`: {stderr}",
                path.display()
            );
        }
    }
}

#[test]
fn a_file_cut_mid_record_still_gives_every_whole_record() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.pcap");
    write_pcap(&good, 10, TsPrecision::Nano);
    let bytes = std::fs::read(&good).unwrap();
    // 24-byte header + 7 whole records of 16 + 60 bytes + half of the 8th.
    let cut = 24 + 7 * 76 + 40;
    let input = dir.path().join("cut.pcap");
    std::fs::write(&input, &bytes[..cut]).unwrap();
    let out = dir.path().join("out.pcap");
    let (code, stdout, stderr) = replay(&["-w", out.to_str().unwrap(), input.to_str().unwrap()]);
    assert_eq!(code, 1, "{stderr}");
    let line = one_line(&stderr);
    assert!(
        line.contains("cut.pcap") && line.contains(&format!("byte {}", 24 + 7 * 76)),
        "{line}"
    );
    assert!(stdout.contains("Actual: 7 packets"), "{stdout}");
    assert_eq!(records(&out), records(&good)[..7].to_vec());
}

#[test]
fn write_keeps_precision_and_records() {
    let dir = tempfile::tempdir().unwrap();
    for precision in [TsPrecision::Micro, TsPrecision::Nano] {
        let input = dir.path().join("in.pcap");
        write_pcap(&input, 50, precision);
        let out = dir.path().join("out.pcap");
        let (code, stdout, stderr) =
            replay(&["-w", out.to_str().unwrap(), input.to_str().unwrap()]);
        assert_eq!(code, 0, "{stderr}");
        assert!(stdout.contains("Actual: 50 packets"), "{stdout}");
        assert_eq!(
            std::fs::read(&out).unwrap(),
            std::fs::read(&input).unwrap(),
            "{precision:?}"
        );
        assert_eq!(CaptureReader::open(&out).unwrap().precision(), precision);
    }
}

#[test]
fn pcapng_input_becomes_pcap() {
    let dir = tempfile::tempdir().unwrap();
    let mut ng = Vec::new();
    let block = |ng: &mut Vec<u8>, kind: u32, body: &[u8]| {
        let len = (12 + body.len().div_ceil(4) * 4) as u32;
        ng.extend_from_slice(&kind.to_le_bytes());
        ng.extend_from_slice(&len.to_le_bytes());
        ng.extend_from_slice(body);
        ng.resize(ng.len() + (4 - body.len() % 4) % 4, 0);
        ng.extend_from_slice(&len.to_le_bytes());
    };
    let mut shb = Vec::new();
    shb.extend_from_slice(&0x1a2b_3c4du32.to_le_bytes());
    shb.extend_from_slice(&1u16.to_le_bytes());
    shb.extend_from_slice(&0u16.to_le_bytes());
    shb.extend_from_slice(&u64::MAX.to_le_bytes());
    block(&mut ng, 0x0a0d_0d0a, &shb);
    let mut idb = Vec::new();
    idb.extend_from_slice(&1u16.to_le_bytes());
    idb.extend_from_slice(&0u16.to_le_bytes());
    idb.extend_from_slice(&0u32.to_le_bytes());
    block(&mut ng, 1, &idb);
    for i in 0..5u32 {
        let ts: u64 = 1_700_000_000_000_000 + i as u64 * 1000; // microseconds (default if_tsresol)
        let f = frame(i);
        let mut epb = Vec::new();
        epb.extend_from_slice(&0u32.to_le_bytes());
        epb.extend_from_slice(&((ts >> 32) as u32).to_le_bytes());
        epb.extend_from_slice(&(ts as u32).to_le_bytes());
        epb.extend_from_slice(&(f.len() as u32).to_le_bytes());
        epb.extend_from_slice(&(f.len() as u32).to_le_bytes());
        epb.extend_from_slice(&f);
        block(&mut ng, 6, &epb);
    }
    let input = dir.path().join("in.pcapng");
    std::fs::write(&input, &ng).unwrap();
    let out = dir.path().join("out.pcap");
    let (code, _, stderr) = replay(&["-w", out.to_str().unwrap(), input.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    let bytes = std::fs::read(&out).unwrap();
    assert_eq!(
        &bytes[..4],
        &0xa1b2_c3d4u32.to_le_bytes(),
        "not a microsecond pcap"
    );
    assert_eq!(records(&out), records(&input));
    assert_eq!(records(&out).len(), 5);
}

/// Appends one pcapng block (little-endian) to `ng`.
fn ng_block(ng: &mut Vec<u8>, kind: u32, body: &[u8]) {
    let len = (12 + body.len().div_ceil(4) * 4) as u32;
    ng.extend_from_slice(&kind.to_le_bytes());
    ng.extend_from_slice(&len.to_le_bytes());
    ng.extend_from_slice(body);
    ng.resize(ng.len() + (4 - body.len() % 4) % 4, 0);
    ng.extend_from_slice(&len.to_le_bytes());
}

#[test]
fn pcapng_with_a_second_linktype_is_refused_clearly_after_the_first_packets() {
    let mut ng = Vec::new();
    let mut shb = Vec::new();
    shb.extend_from_slice(&0x1a2b_3c4du32.to_le_bytes());
    shb.extend_from_slice(&[1, 0, 0, 0]);
    shb.extend_from_slice(&u64::MAX.to_le_bytes());
    ng_block(&mut ng, 0x0a0d_0d0a, &shb);
    ng_block(&mut ng, 1, &[1, 0, 0, 0, 0, 0, 0, 0]); // interface 0: Ethernet
    ng_block(&mut ng, 1, &[113, 0, 0, 0, 0, 0, 0, 0]); // interface 1: Linux cooked (SLL)
    let mut sll = vec![0, 0, 0, 1, 0, 6, 2, 0, 0, 0, 0, 9, 0, 0, 0x08, 0x00, 0x45];
    sll.resize(36, 0);
    for (i, (iface, f)) in [(0u32, frame(0)), (0, frame(1)), (1, sll), (0, frame(2))]
        .iter()
        .enumerate()
    {
        let ts: u64 = 1_700_000_000_000_000 + i as u64;
        let mut epb = Vec::new();
        epb.extend_from_slice(&iface.to_le_bytes());
        epb.extend_from_slice(&((ts >> 32) as u32).to_le_bytes());
        epb.extend_from_slice(&(ts as u32).to_le_bytes());
        epb.extend_from_slice(&(f.len() as u32).to_le_bytes());
        epb.extend_from_slice(&(f.len() as u32).to_le_bytes());
        epb.extend_from_slice(f);
        ng_block(&mut ng, 6, &epb);
    }
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("multi.pcapng");
    std::fs::write(&input, &ng).unwrap();
    let out = dir.path().join("out.pcap");
    let (code, stdout, stderr) = replay(&["-w", out.to_str().unwrap(), input.to_str().unwrap()]);
    assert_eq!(code, 1, "{stderr}");
    let line = one_line(&stderr);
    assert!(
        line.contains("LINUX_SLL") && line.contains("--dlt enet"),
        "{line}"
    );
    assert!(stdout.contains("Actual: 2 packets"), "{stdout}");
    assert_eq!(records(&out).len(), 2);
}

/// `--log-format json`: the error is one JSON object on stderr (level, message naming the
/// file), the summary stays on stdout; with `RUST_LOG=info` the switch to `--user` (as root) or
/// the capability trim (not root) is logged as JSON too.
#[test]
fn log_format_json_gives_one_json_object_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("o.pcap");
    let missing = dir.path().join("missing.pcap");
    let (code, _, err) = replay(&[
        "--log-format",
        "json",
        "-w",
        out.to_str().unwrap(),
        missing.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "{err}");
    let v: serde_json::Value = serde_json::from_str(lines[0]).expect("a JSON line");
    assert_eq!(v["level"], "ERROR", "{v}");
    let msg = v["fields"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains("missing.pcap"), "{v}");

    let input = dir.path().join("in.pcap");
    write_pcap(&input, 5, TsPrecision::Micro);
    let run = Command::new(env!("CARGO_BIN_EXE_replay"))
        .args(["--log-format", "json", "--json", "-w"])
        .arg(&out)
        .arg(&input)
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{err}");
    let logged: Vec<serde_json::Value> = err
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect();
    assert!(
        logged.iter().any(|v| {
            let m = v["fields"]["message"].as_str().unwrap_or_default();
            m.contains("privileges dropped to nobody") || m.contains("not root")
        }),
        "{err}"
    );
    let summary: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&run.stdout).trim()).unwrap();
    assert!(summary.is_object(), "{summary}");
}
