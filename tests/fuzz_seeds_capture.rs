//! The seeds of the pcap_reader and tpacket_block fuzz corpora still mean what they say (their
//! replay through the fuzz entry points is in `tests/fuzz_corpora.rs`).

use std::path::PathBuf;

use tcpclone::capture::{CaptureReader, PacketSource};

fn corpus() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/pcap_reader")
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

/// The tpacket_block seeds are what the kernel writes (their frames parse whole).
#[test]
fn tpacket_block_seed_is_a_kernel_block() {
    use tcpclone::capture::tpacket::BlockView;
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/tpacket_block");
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
