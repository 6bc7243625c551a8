#!/usr/bin/env bash
# Builds the Debian package target/debian/tcpclone_<version>-1_<arch>.deb: the three tools,
# their man pages and completions (scripts/gen-docs.sh), the systemd units and the example
# settings (packaging/). Needs cargo-deb (scripts/setup.sh installs it). Prints the path.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p tcpcopy -p intercept -p replay >&2
bash scripts/gen-docs.sh target/docs >&2
cargo deb -p tcpclone --no-build --fast >&2
ls -t target/debian/tcpclone_*.deb | head -1
