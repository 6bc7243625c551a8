#!/usr/bin/env bash
# Writes the man pages and the bash/zsh/fish completions of tcpcopy, intercept and replay,
# generated from their clap definitions (tcpclone::docgen), to DIR (default target/docs):
#   DIR/man/{tcpcopy,intercept,replay}.1   DIR/completions/{TOOL.bash,_TOOL,TOOL.fish}
# The tools must be built first (cargo build --release -p tcpcopy -p intercept -p replay).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-target/docs}"
mkdir -p "$out"
for tool in tcpcopy intercept replay; do
  TCPCLONE_GENERATE_DOCS="$out" "target/release/$tool"
done
echo "gen-docs: man pages and completions in $out"
