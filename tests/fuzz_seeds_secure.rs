//! `write_secure_channel_seeds` (ignored) made the seeds of the secured channel's fuzz corpus
//! (`fuzz/corpus/secure_channel`; replayed by `tests/fuzz_corpora.rs`).

use bytes::BytesMut;
use std::path::PathBuf;
use tcpclone::proto::secure::{Psk, SecureChannel};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// Writes the seeds: forged and genuine first handshake messages (the fuzz target's key),
/// garbage, bad lengths, and established-pair messages with and without flips.
#[test]
#[ignore = "writes fuzz/corpus/secure_channel; run by hand"]
fn write_secure_channel_seeds() {
    let dir = root().join("corpus/secure_channel");
    std::fs::create_dir_all(&dir).unwrap();
    let psk = Psk::from_bytes(std::array::from_fn(|i| i as u8 + 1));
    let mut hello = BytesMut::new();
    let _ = SecureChannel::initiator(&psk, &mut hello).unwrap();
    let mut reply = BytesMut::new();
    let mut b = SecureChannel::responder(&psk).unwrap();
    let mut h = hello.clone();
    b.read(&mut h, &mut BytesMut::new(), &mut reply).unwrap();
    let mut seeds: Vec<(&str, Vec<u8>)> = vec![
        (
            "responder-garbage",
            [&[0u8][..], b"GET / HTTP/1.1\r\n\r\n"].concat(),
        ),
        ("responder-zero-len", vec![0, 0, 0]),
        ("responder-huge-len", vec![0, 0xff, 0xff, 1, 2, 3]),
        ("responder-genuine-hello", [&[0u8][..], &hello[..]].concat()),
        (
            "responder-hello-then-forged-record",
            [&[0u8][..], &hello[..], &[0, 20], &[0x41; 20]].concat(),
        ),
        (
            "initiator-garbage",
            [&[1u8][..], &[0, 48], &[7; 48]].concat(),
        ),
        ("initiator-genuine-reply", [&[1u8][..], &reply[..]].concat()),
        (
            "pair-untouched",
            [&[2u8][..], &[0, 0, 0], b"hello"].concat(),
        ),
        ("pair-flip-tag", [&[2u8][..], &[0, 20, 0x80, 3]].concat()),
        ("pair-flip-length", [&[2u8][..], &[0, 0, 0x01, 9]].concat()),
        ("pair-large", [&[2u8][..], &[0xff; 2], &[0, 0, 0]].concat()),
    ];
    for (name, data) in seeds.drain(..) {
        std::fs::write(dir.join(name), data).unwrap();
    }
}
