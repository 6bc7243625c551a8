//! A seeded mutation loop over the committed fuzz corpus, so CI exercises `fuzz_engine` on
//! thousands of malformed scripts without cargo-fuzz.

use super::super::fuzz_engine;

#[test]
fn mutated_corpus_never_panics() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/engine");
    let mut seeds: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .expect("corpus dir")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_file())
        .filter_map(|e| std::fs::read(e.path()).ok())
        .filter(|d| !d.is_empty())
        .collect();
    seeds.sort();
    assert!(!seeds.is_empty());
    let mut x: u64 = 0x1234_5678_9abc_def1;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let rounds = std::env::var("ENGINE_FUZZ_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3000);
    for _ in 0..rounds {
        let mut d = seeds[(next() as usize) % seeds.len()].clone();
        for _ in 0..1 + next() % 8 {
            let i = (next() as usize) % d.len();
            match next() % 3 {
                0 => d[i] = next() as u8,
                1 => d[i] ^= 1 << (next() % 8),
                _ => {
                    let j = (next() as usize) % d.len();
                    d.swap(i, j);
                }
            }
        }
        fuzz_engine(&d);
    }
}
