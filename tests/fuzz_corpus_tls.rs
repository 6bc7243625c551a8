//! Replays the committed fuzz corpus of the TLS decryptor as a regression test
//! (`fuzz/corpus/tls_session`, plus crash reproducers in `fuzz/artifacts/tls_session` if any).

use std::path::PathBuf;

#[test]
fn tls_session_corpus_replays() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut n = 0;
    for dir in ["corpus/tls_session", "artifacts/tls_session"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
            continue;
        };
        for e in entries {
            let p = e.expect("read corpus dir").path();
            if p.is_file() {
                let data = std::fs::read(&p).expect("read corpus file");
                tcpclone::tls::fuzz_session(&data);
                n += 1;
            }
        }
    }
    assert!(
        n >= 10,
        "expected the committed seed corpus, found {n} files"
    );
}
