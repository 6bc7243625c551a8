//! Replays the committed fuzz corpus of the fleet recording decoder as a regression test
//! (`fuzz/corpus/fleet_decoder`, plus crash reproducers in `fuzz/artifacts/fleet_decoder` if any).

use std::path::PathBuf;

#[test]
fn fleet_decoder_corpus_replays() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut n = 0;
    let mut decoded = 0;
    for dir in ["corpus/fleet_decoder", "artifacts/fleet_decoder"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
            continue;
        };
        for e in entries {
            let p = e.expect("read corpus dir").path();
            if p.is_file() {
                let data = std::fs::read(&p).expect("read corpus file");
                tcpcopy::fleet::wire::fuzz_decode(&data);
                if tcpcopy::fleet::wire::decode(&bytes::Bytes::from(data)).is_ok() {
                    decoded += 1;
                }
                n += 1;
            }
        }
    }
    assert!(
        n >= 10,
        "expected the committed seed corpus, found {n} files"
    );
    // The seeds include valid messages (so the fuzzer starts past the header checks).
    assert!(decoded >= 4, "only {decoded} seeds decode");
}
