//! Regression: every file in the pcap_reader fuzz corpus (seeds and committed crash reproducers)
//! goes through `fuzz_read_all`, which must not panic; and the seeds still mean what they say.

use std::path::PathBuf;

use tcpclone::capture::{fuzz_read_all, CaptureReader, PacketSource};

fn corpus() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/pcap_reader")
}

#[test]
fn every_corpus_file_reads_without_panic() {
    let mut n = 0;
    for entry in std::fs::read_dir(corpus()).expect("corpus directory") {
        let path = entry.unwrap().path();
        if !path.is_file() {
            continue;
        }
        let data = std::fs::read(&path).unwrap();
        let name = path.display().to_string();
        let result = std::panic::catch_unwind(|| fuzz_read_all(&data));
        assert!(result.is_ok(), "fuzz_read_all panicked on {name}");
        n += 1;
    }
    assert!(n >= 10, "corpus has only {n} files");
}

/// Packets read before the first error, and that error's message.
fn outcome(file: &str) -> (usize, Option<String>) {
    let path = corpus().join(file);
    let mut r = match CaptureReader::open(&path) {
        Ok(r) => r,
        Err(e) => return (0, Some(e.to_string())),
    };
    let mut n = 0;
    loop {
        match r.next_packet() {
            Ok(Some(_)) => n += 1,
            Ok(None) => return (n, None),
            Err(e) => return (n, Some(e.to_string())),
        }
    }
}

#[test]
fn seeds_keep_their_meaning() {
    for (file, packets) in [
        ("pcap_le_us.pcap", 2),
        ("pcap_be_us.pcap", 2),
        ("pcap_le_ns.pcap", 1),
        ("pcap_be_ns.pcap", 1),
        ("pcapng_two_sections.pcapng", 5),
    ] {
        assert_eq!(outcome(file), (packets, None), "{file}");
    }
    for (file, packets, msg) in [
        (
            "pcap_cut_mid_record.pcap",
            1,
            "record cut short at byte 44 (caplen 2, 1 bytes left)",
        ),
        (
            "pcap_cut_header.pcap",
            0,
            "pcap file header cut short at byte 0 (24 bytes needed, 10 present)",
        ),
        (
            "pcapng_cut_mid_block.pcapng",
            3,
            "pcapng block cut short at byte 276 (block length 20, 10 bytes left)",
        ),
        (
            "bad_magic.bin",
            0,
            "not a pcap or pcapng file: unknown magic 0x7f454c46 at byte 0",
        ),
        (
            "pcap_absurd_caplen.pcap",
            0,
            "absurd caplen 300000 at byte 24 (snaplen 65535, limit 131070)",
        ),
        (
            "pcapng_len_not_mult4.pcapng",
            0,
            "corrupt pcapng block length 30 at byte 48 (not a multiple of 4)",
        ),
        (
            "pcapng_trailer_mismatch.pcapng",
            0,
            "corrupt pcapng block length at byte 48 (leading length 16, trailing length 20)",
        ),
    ] {
        let (n, err) = outcome(file);
        let err = err.unwrap_or_default();
        assert_eq!(n, packets, "{file}");
        assert!(
            err.ends_with(&format!("{file}: {msg}")),
            "{file}: got {err:?}"
        );
    }
}

/// The tpacket_block corpus: every block walks without panic, and the seeds are what the kernel
/// writes (their frames parse whole).
#[test]
fn every_tpacket_block_corpus_file_walks_without_panic() {
    use tcpclone::capture::tpacket::{fuzz_block, BlockView};
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/tpacket_block");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("corpus directory") {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let name = path.display().to_string();
        assert!(
            std::panic::catch_unwind(|| fuzz_block(&data)).is_ok(),
            "fuzz_block panicked on {name}"
        );
        n += 1;
    }
    assert!(n >= 2, "corpus has only {n} files");
    let seed = std::fs::read(dir.join("two_frames")).unwrap();
    let v = BlockView::new_checked(&seed).unwrap();
    let frames: Vec<_> = v.frames().collect::<Result<_, _>>().unwrap();
    assert_eq!(frames.len(), 2);
    assert_eq!(frames[0].data.len(), 40);
    assert_eq!(
        frames[1].pkt_type,
        tcpclone::capture::tpacket::PACKET_OUTGOING
    );
}
