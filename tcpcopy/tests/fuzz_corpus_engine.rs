//! Replays the committed engine fuzz corpus (fuzz/corpus/engine) through `fuzz_engine`, so every
//! regression input found by the fuzzer stays a test in CI.

use std::path::Path;

#[test]
fn engine_corpus_replays_without_panic() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/engine");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("fuzz/corpus/engine exists") {
        let path = entry.expect("readable corpus entry").path();
        if path.is_file() {
            let data = std::fs::read(&path).expect("readable corpus file");
            tcpcopy::engine::fuzz_engine(&data);
            n += 1;
        }
    }
    assert!(n >= 5, "expected a seeded corpus, found {n} files");
}
