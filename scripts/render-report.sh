#!/usr/bin/env bash
# Renders a stream-mode HTML report (tcpcopy --stream --report FILE.html) to a PNG with headless
# Chromium (Debian: `apt-get install -y chromium`). Not part of the default test suite.
# Usage: scripts/render-report.sh REPORT.html [OUT.png]
set -euo pipefail
IN=${1:?usage: $0 REPORT.html [OUT.png]}
OUT=${2:-${IN%.html}.png}
[[ -f $IN ]] || { echo "render-report.sh: $IN: no such file" >&2; exit 2; }
CHROME=$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)
[[ -n $CHROME ]] || { echo "render-report.sh: chromium is not installed (apt-get install -y chromium)" >&2; exit 2; }
ABS=$(cd "$(dirname "$IN")" && pwd)/$(basename "$IN")
# The page fetches nothing; keep the network off anyway.
"$CHROME" --headless --no-sandbox --disable-gpu --hide-scrollbars --proxy-server=127.0.0.1:9 \
    --window-size=1000,1900 --screenshot="$OUT" "file://$ABS" 2>/dev/null
[[ -s $OUT ]] || { echo "render-report.sh: chromium wrote no image" >&2; exit 1; }
echo "$OUT"
