//! Replays every committed fuzz corpus (`fuzz/corpus/<target>`, plus crash reproducers in
//! `fuzz/artifacts/<target>` if any) through its target's entry point in `tcpclone::fuzz`, as
//! regression tests run by `cargo test` without libFuzzer. The packet views and the rewriter
//! also get every prefix of each seed, so headers cut anywhere are covered.

use std::path::PathBuf;
use tcpclone::fuzz;

/// Replays `target`'s corpus through `run`; it must hold at least `min` files (the seeds).
fn replay(target: &str, min: usize, run: impl FnMut(&[u8])) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let n = fuzz::replay_corpus(&root, target, run);
    assert!(
        n >= min,
        "expected the committed seed corpus of {target}, found {n} files"
    );
}

/// `run` on the whole input, then on every prefix up to 128 bytes.
fn with_prefixes(run: fn(&[u8])) -> impl FnMut(&[u8]) {
    move |data| {
        run(data);
        for cut in 0..data.len().min(128) {
            run(&data[..cut]);
        }
    }
}

#[test]
fn pcap_reader_corpus_replays() {
    replay("pcap_reader", 10, fuzz::pcap_reader);
}

#[test]
fn tpacket_block_corpus_replays() {
    replay("tpacket_block", 1, fuzz::tpacket_block);
}

#[test]
fn packet_views_corpus_replays() {
    replay("packet_views", 10, with_prefixes(fuzz::packet_views));
}

#[test]
fn rewriter_corpus_replays() {
    replay("rewriter", 10, with_prefixes(fuzz::rewriter));
}

#[test]
fn proto_decoder_corpus_replays() {
    replay("proto_decoder", 10, fuzz::proto_decoder);
}

#[test]
fn secure_channel_corpus_replays() {
    // 11 hand-made seeds plus the entries a 5-minute run found (minimised with cmin).
    replay("secure_channel", 100, fuzz::secure_channel);
}

#[test]
fn tls_session_corpus_replays() {
    replay("tls_session", 10, fuzz::tls_session);
}

#[test]
fn decode_http_corpus_replays() {
    replay("decode_http", 10, fuzz::decode_http);
}

#[test]
fn decode_redis_corpus_replays() {
    replay("decode_redis", 10, fuzz::decode_redis);
}
