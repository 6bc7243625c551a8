#!/usr/bin/env bash
# replay demo: send a bundled capture into a lab veth at a set rate, rewritten on the way, and show
# what arrived at the far end (captured there with tcpdump).
# Usage: sudo scripts/demo-replay.sh [PCAP] [PPS]   (defaults: pcaps/http_keepalive.pcap 1000)
# Everything it creates (two namespaces, a veth pair) is removed on exit, also on failure.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PCAP=${1:-$ROOT/pcaps/http_keepalive.pcap}
PPS=${2:-1000}
[[ $(id -u) == 0 ]] || { echo "demo-replay.sh: needs root (network namespaces); try: sudo $0" >&2; exit 2; }
[[ $PPS =~ ^[0-9]+$ ]] && ((PPS >= 1 && PPS <= 1000000)) || { echo "usage: $0 [PCAP] [PPS 1..1000000]" >&2; exit 2; }
echo "== building replay (release)"
cargo build --release --manifest-path "$ROOT/Cargo.toml" -p replay -q
TAG=r$$ NS_TX=r$$tx NS_RX=r$$rx
WORK=$(mktemp -d /tmp/tcpclone-replay-demo.XXXXXX)
TDPID=
cleanup() {
    set +e
    [[ -n $TDPID ]] && kill "$TDPID" 2>/dev/null
    for ns in $NS_TX $NS_RX; do ip netns del "$ns" 2>/dev/null; done
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM
ip netns add "$NS_TX"; ip netns add "$NS_RX"
ip link add "${TAG}a" type veth peer name "${TAG}b"
ip link set "${TAG}a" netns "$NS_TX"; ip link set "${TAG}b" netns "$NS_RX"
ip -n "$NS_TX" link set "${TAG}a" up; ip -n "$NS_RX" link set "${TAG}b" up
ip netns exec "$NS_RX" timeout 60 tcpdump -i "${TAG}b" -s 0 -U -w "$WORK/arrived.pcap" -c 100000 2>"$WORK/tcpdump.log" &
TDPID=$!
sleep 1
echo "== replay $PCAP at $PPS pps, destination MAC and ports rewritten (80 -> 8080)"
ip netns exec "$NS_TX" "$ROOT/target/release/replay" -i "${TAG}a" --pps "$PPS" \
    --enet-dmac 02:00:00:00:00:02 --portmap 80:8080 --tso-split "$PCAP"
sleep 1
kill -INT "$TDPID" 2>/dev/null; wait "$TDPID" 2>/dev/null || true; TDPID=
echo "== what arrived at the far end"
tcpdump -r "$WORK/arrived.pcap" -nn -q 2>/dev/null | head -8
echo "   ..."
echo "frames arrived: $(tcpdump -r "$WORK/arrived.pcap" -nn 2>/dev/null | wc -l)  (sent: $(tcpdump -r "$PCAP" -nn 2>/dev/null | wc -l))"
