#!/usr/bin/env bash
# Runs every test of the suite: formatting, lints, unit/property/scripted tests, the differential
# tests against tcprewrite, the fuzz corpora as regressions, and the lab end-to-end tests (these
# need root; without it they print a loud SKIPPED line each). Also builds the fuzz targets.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export CARGO_TERM_COLOR=never
echo "== fmt";    cargo fmt --all -- --check
echo "== build";  cargo build --release --workspace --all-targets
echo "== clippy"; cargo clippy --release --workspace --all-targets -- -D warnings
echo "== tests";  cargo test --release --workspace -- --test-threads 2
echo "== fuzz targets build"
cargo build --release --manifest-path fuzz/Cargo.toml --bins
echo "== all tests passed"
