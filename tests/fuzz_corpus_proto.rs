//! Replays the committed fuzz corpus of the protocol decoder as a regression test
//! (`fuzz/corpus/proto_decoder`, plus crash reproducers in `fuzz/artifacts/proto_decoder` if any).

use std::path::PathBuf;

#[test]
fn proto_decoder_corpus_replays() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut n = 0;
    for dir in ["corpus/proto_decoder", "artifacts/proto_decoder"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
            continue;
        };
        for e in entries {
            let p = e.expect("read corpus dir").path();
            if p.is_file() {
                let data = std::fs::read(&p).expect("read corpus file");
                tcpclone::proto::fuzz_decode(&data);
                n += 1;
            }
        }
    }
    assert!(
        n >= 10,
        "expected the committed seed corpus, found {n} files"
    );
}
