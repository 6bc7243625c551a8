#!/usr/bin/env bash
# Benchmark (not a timed test): fleet mode, same run.
#
# 1. Captures redis-benchmark's SET test (REQUESTS requests, CONNS connections) with tcpdump.
# 2. In one target netns, on loopback: a one-node JetStream (nats-server -js) and fresh redis
#    servers. Records the capture into it (`--offline --record`): sessions/s, MB/s and tcpcopy's
#    CPU, beside stream mode replaying the same capture (`--offline --topspeed`).
# 3. Replays the recording at --topspeed with 1 worker, then with 2 workers at once (a fresh
#    redis per run, shared by both workers of the 2-worker run): requests/s over whole runs
#    (start-up included), beside the offline --topspeed replay of the capture.
# Usage: sudo benches/fleet.sh [REQUESTS (default 100000)] [CONNS (default 50)]
#   env KEEPALIVE=0: redis-benchmark opens a connection per request (-k 0), so the recording
#   holds REQUESTS sessions of one SET each: what a worker pays per session shows.
set -euo pipefail
REQUESTS=${1:-100000}
CONNS=${2:-50}
if ! [[ $REQUESTS =~ ^[0-9]+$ && $CONNS =~ ^[0-9]+$ ]] || ((REQUESTS < 1000 || REQUESTS > 1000000 || CONNS < 1 || CONNS > 1000)); then
    echo "usage: $0 [REQUESTS 1000..1000000] [CONNS 1..1000]" >&2
    exit 2
fi
source "$(dirname "$0")/stream_common.sh"
command -v nats-server >/dev/null || { echo "fleet.sh: nats-server is not installed (scripts/setup.sh)" >&2; exit 2; }

mkns "${TAG}c"; mkns "${TAG}p"; mkns "${TAG}t"
veth "${TAG}c" 198.18.71.1/24 "${TAG}p" 198.18.71.2/24 "${TAG}v"
redis "${TAG}p" 198.18.71.2 6379
ip netns exec "${TAG}p" tcpdump -i "${TAG}vb" -s 4096 -B 65536 --immediate-mode -U -n -w "$WORK/set.pcap" tcp port 6379 2>"$WORK/tcpdump.log" &
TD=$!
for _ in $(seq 100); do grep -q "listening on" "$WORK/tcpdump.log" 2>/dev/null && break; sleep 0.05; done
[[ ${KEEPALIVE:-1} =~ ^[01]$ ]] || { echo "fleet.sh: KEEPALIVE must be 0 or 1" >&2; exit 2; }
inns "${TAG}c" redis-benchmark -h 198.18.71.2 -n "$REQUESTS" -c "$CONNS" -k "${KEEPALIVE:-1}" -t set -q >/dev/null
sleep 1; kill -INT $TD; wait $TD || true
grep -E "captured|dropped" "$WORK/tcpdump.log" | sed "s/^/capture: /"

lab_bg ip netns exec "${TAG}t" nats-server -js -sd "$WORK/js" -a 127.0.0.1 -p 4222 >"$WORK/nats.log" 2>&1
for _ in $(seq 100); do inns "${TAG}t" bash -c 'exec 3<>/dev/tcp/127.0.0.1/4222' 2>/dev/null && break; sleep 0.05; done
for port in 6391 6392 6393 6394; do redis "${TAG}t" 127.0.0.1 "$port"; done
URL=nats://127.0.0.1:4222/bench
TIMEF="%e %U %S"

# timed OUT CMD...: runs CMD in the target netns, its stdout to OUT.out, "wall user sys" to OUT.time.
timed() {
    local out=$1; shift
    if ! /usr/bin/time -f "$TIMEF" -o "$WORK/$out.time" ip netns exec "${TAG}t" "$@" >"$WORK/$out.out" 2>"$WORK/$out.err"; then
        echo "fleet.sh: the $out run failed:" >&2
        tail -5 "$WORK/$out.err" >&2
        return 1
    fi
}

timed record "${STREAM[@]}" -x 6379-127.0.0.1:6391 --offline "$WORK/set.pcap" --record "$URL"
timed offline "${STREAM[@]}" -x 6379-127.0.0.1:6394 --offline "$WORK/set.pcap" --topspeed --report "$WORK/offline.json"
timed one "${STREAM[@]}" -x 6379-127.0.0.1:6392 --from "$URL" --replay-name one --topspeed --report "$WORK/one.json"
START=$(date +%s.%N)
for k in 0 1; do
    ip netns exec "${TAG}t" "${STREAM[@]}" -x 6379-127.0.0.1:6393 --from "$URL" --replay-name two \
        --worker "$k/2" --topspeed --report "$WORK/two$k.json" >"$WORK/two$k.out" 2>"$WORK/two$k.err" &
    W[$k]=$!
done
wait "${W[0]}" "${W[1]}"
TWO_WALL=$(python3 -c 'import sys,time; print(time.time() - float(sys.argv[1]))' "$START")

grep -h "^recorded" "$WORK/record.out"
grep -h "^worker" "$WORK/one.out" "$WORK/two0.out" "$WORK/two1.out"
echo "target redis SETs: offline $(redis_calls "${TAG}t" 6394 set), 1 worker $(redis_calls "${TAG}t" 6392 set), 2 workers $(redis_calls "${TAG}t" 6393 set)"
python3 - "$WORK" "$TWO_WALL" <<'PY'
import json, re, sys
w, two_wall = sys.argv[1], float(sys.argv[2])
def t(name):
    wall, user, sys_ = open(f"{w}/{name}.time").read().split()[-3:]
    return float(wall), float(user) + float(sys_)
rec = open(f"{w}/record.out").read()
stored = int(re.search(r"(\d+) stored", rec).group(1))
nbytes = int(re.search(r"(\d+) bytes,", rec).group(1))
rw, rc = t("record")
ow, oc = t("offline")
print(f"recording: {stored / rw:,.0f} sessions/s, {nbytes / rw / 1e6:.1f} MB/s, CPU {rc:.2f} s "
      f"(offline --topspeed replay of the same capture: CPU {oc:.2f} s)")
req = lambda f: json.load(open(f"{w}/{f}"))["test"]["requests"]
ow_req = req("offline.json")
one_w, _ = t("one")
two_req = req("two0.json") + req("two1.json")
print(f"offline --topspeed: {ow_req / ow:,.0f} req/s ({ow:.2f} s wall)")
print(f"1 worker --topspeed: {req('one.json') / one_w:,.0f} req/s ({one_w:.2f} s wall)")
print(f"2 workers --topspeed: {two_req / two_wall:,.0f} req/s ({two_wall:.2f} s wall)")
PY
