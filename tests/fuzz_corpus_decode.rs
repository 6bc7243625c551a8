//! Replays the committed fuzz corpora of the protocol decoders as regression tests
//! (`fuzz/corpus/decode_{http,redis}`, plus crash reproducers in `fuzz/artifacts/` if any), the
//! way the fuzz targets read them: first byte picks the direction.

use std::path::PathBuf;

use tcpclone::decode::{fuzz_decode, Direction, Protocol};

fn replay(target: &str, protocol: Protocol) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut n = 0;
    for dir in [format!("corpus/{target}"), format!("artifacts/{target}")] {
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
            continue;
        };
        for e in entries {
            let p = e.expect("read corpus dir").path();
            if !p.is_file() {
                continue;
            }
            let data = std::fs::read(&p).expect("read corpus file");
            let Some((&d, rest)) = data.split_first() else {
                continue;
            };
            let dir = if d & 1 == 0 {
                Direction::Request
            } else {
                Direction::Response
            };
            fuzz_decode(protocol, dir, rest);
            n += 1;
        }
    }
    assert!(
        n >= 10,
        "expected the committed seed corpus of {target}, found {n} files"
    );
}

#[test]
fn decode_http_corpus_replays() {
    replay("decode_http", Protocol::Http);
}

#[test]
fn decode_redis_corpus_replays() {
    replay("decode_redis", Protocol::Redis);
}
