//! Replays the committed fuzz corpora of the packet views and the rewriter as regression tests
//! (`fuzz/corpus/{packet_views,rewriter}`, plus crash reproducers in `fuzz/artifacts/…` if any),
//! and every prefix of each seed, so cut-short headers are covered without running libFuzzer.

use std::path::PathBuf;

fn replay(target: &str, run: fn(&[u8])) -> usize {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut n = 0;
    for dir in [format!("corpus/{target}"), format!("artifacts/{target}")] {
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
            continue;
        };
        for e in entries {
            let p = e.expect("read corpus dir").path();
            if p.is_file() {
                let data = std::fs::read(&p).expect("read corpus file");
                // The whole seed, then every prefix up to 128 bytes (headers cut anywhere).
                run(&data);
                for cut in 0..data.len().min(128) {
                    run(&data[..cut]);
                }
                n += 1;
            }
        }
    }
    n
}

#[test]
fn packet_views_corpus_replays() {
    let n = replay("packet_views", tcpclone::wire::fuzz_views);
    assert!(
        n >= 10,
        "expected the committed seed corpus, found {n} files"
    );
}

#[test]
fn rewriter_corpus_replays() {
    let n = replay("rewriter", tcpclone::rewrite::fuzz_rewrite);
    assert!(
        n >= 10,
        "expected the committed seed corpus, found {n} files"
    );
}
