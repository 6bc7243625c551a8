//! Replays the committed fuzz corpora of tcpcopy's own targets
//! (`fuzz/corpus/{engine,fleet_decoder,exchange}`, plus crash reproducers in `fuzz/artifacts/` if any) through their entry points, with the
//! library's `replay_corpus`, so every input the fuzzer found stays a test in CI.

use std::path::PathBuf;

fn fuzz_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

#[test]
fn engine_corpus_replays_without_panic() {
    let n = tcpclone::fuzz::replay_corpus(&fuzz_root(), "engine", tcpcopy::engine::fuzz_engine);
    assert!(n >= 5, "expected a seeded corpus, found {n} files");
}

#[test]
fn fleet_decoder_corpus_replays() {
    let mut decoded = 0;
    let n = tcpclone::fuzz::replay_corpus(&fuzz_root(), "fleet_decoder", |data| {
        tcpcopy::fleet::wire::fuzz_decode(data);
        if tcpcopy::fleet::wire::decode(&bytes::Bytes::copy_from_slice(data)).is_ok() {
            decoded += 1;
        }
    });
    assert!(
        n >= 10,
        "expected the committed seed corpus, found {n} files"
    );
    // The seeds include valid messages (so the fuzzer starts past the header checks).
    assert!(decoded >= 4, "only {decoded} seeds decode");
}

#[test]
fn exchange_corpus_replays() {
    let n = tcpclone::fuzz::replay_corpus(
        &fuzz_root(),
        "exchange",
        tcpcopy::report::exchange::fuzz_exchange,
    );
    assert!(
        n >= 10,
        "expected the committed seed corpus, found {n} files"
    );
}
