#!/usr/bin/env bash
# Benchmark (not a timed test): stream mode at --topspeed against redis-benchmark, same run.
#
# 1. Captures redis-benchmark traffic with CONNS connections (tcpdump, production netns): one
#    capture of the SET test and one of the GET test. (One capture of `-t set,get` would hold
#    both tests' connections, and --topspeed starts every session at once: 2 x CONNS concurrent
#    sessions, not CONNS.)
# 2. In a target netns: redis-benchmark's own rate against a fresh redis (CONNS connections,
#    loopback), then each capture replayed at --topspeed (CONNS concurrent sessions) against
#    another fresh redis (loopback).
# Prints both rates and their ratio (goal: replay >= 0.8 x redis-benchmark); both combined rates
# are all requests over the sum of the two tests' times.
# Usage: sudo benches/stream_redis.sh [REQUESTS (per test, default 100000)] [CONNS (default 50)]
set -euo pipefail
REQUESTS=${1:-100000}
CONNS=${2:-50}
if ! [[ $REQUESTS =~ ^[0-9]+$ && $CONNS =~ ^[0-9]+$ ]] || ((REQUESTS < 1000 || REQUESTS > 1000000 || CONNS < 1 || CONNS > 1000)); then
    echo "usage: $0 [REQUESTS 1000..1000000] [CONNS 1..1000]" >&2
    exit 2
fi
source "$(dirname "$0")/stream_common.sh"

mkns "${TAG}c"; mkns "${TAG}p"; mkns "${TAG}t"
veth "${TAG}c" 198.18.70.1/24 "${TAG}p" 198.18.70.2/24 "${TAG}v"
redis "${TAG}p" 198.18.70.2 6379
for T in set get; do
    ip netns exec "${TAG}p" tcpdump -i "${TAG}vb" -s 4096 -B 65536 --immediate-mode -U -n -w "$WORK/$T.pcap" tcp port 6379 2>"$WORK/tcpdump.log" &
    TD=$!
    for _ in $(seq 100); do grep -q "listening on" "$WORK/tcpdump.log" 2>/dev/null && break; sleep 0.05; done
    inns "${TAG}c" redis-benchmark -h 198.18.70.2 -n "$REQUESTS" -c "$CONNS" -t "$T" -q >/dev/null
    sleep 1; kill -INT $TD; wait $TD || true
    grep -E "captured|dropped" "$WORK/tcpdump.log" | sed "s/^/capture $T: /"
done

redis "${TAG}t" 127.0.0.1 6390
redis "${TAG}t" 127.0.0.1 6391
BENCH=$(inns "${TAG}t" redis-benchmark -h 127.0.0.1 -p 6390 -n "$REQUESTS" -c "$CONNS" -t set,get -q | tr '\r' '\n' | grep "requests per second")
echo "$BENCH" | sed 's/^/redis-benchmark: /'
BENCH_RPS=$(echo "$BENCH" | awk -v n="$REQUESTS" '{for(i=1;i<=NF;i++) if($(i+1)=="requests") r[NR]=$i} END{t=0; for(k in r) t+=n/r[k]; print 2*n/t}')
REPLAY_S=0
for T in set get; do
    /usr/bin/time -f "%e s wall, %U s user, %S s sys, %M KB max RSS" -o "$WORK/time" \
        ip netns exec "${TAG}t" "${STREAM[@]}" -x 6379-127.0.0.1:6391 --offline "$WORK/$T.pcap" --topspeed --report "$WORK/$T.json" >"$WORK/table"
    echo "--- replay of the $T capture"
    cat "$WORK/table"
    echo "stream mode ($T): $(cat "$WORK/time")"
    # The span of the replayed requests: requests / (requests per second over that span).
    REPLAY_N=$((${REPLAY_N:-0} + $(json_get "$WORK/$T.json" test.requests)))
    REPLAY_S=$(python3 -c 'import sys; print(float(sys.argv[1]) + float(sys.argv[2]) / float(sys.argv[3]))' \
        "$REPLAY_S" "$(json_get "$WORK/$T.json" test.requests)" "$(json_get "$WORK/$T.json" test.rps)")
done
REPLAY_RPS=$(python3 -c 'import sys; print(float(sys.argv[1]) / float(sys.argv[2]))' "$REPLAY_N" "$REPLAY_S")
CMDS=$(inns "${TAG}t" redis-cli -p 6391 info commandstats | grep -E "cmdstat_(set|get):" | sed 's/,usec=.*//' | tr '\n' ' ')
echo "target redis: $CMDS"
python3 - "$BENCH_RPS" "$REPLAY_RPS" <<'PY'
import sys
b, r = float(sys.argv[1]), float(sys.argv[2])
print(f"redis-benchmark: {b:,.0f} req/s   stream --topspeed: {r:,.0f} req/s   ratio {r / b:.2f} (goal >= 0.80)")
PY
source "$(dirname "$0")/md_table.sh"
md_begin "Stream mode: --topspeed against redis-benchmark" "sudo benches/stream_redis.sh $REQUESTS $CONNS"
md_cols "requests per test" connections "redis-benchmark req/s" "stream --topspeed req/s" ratio
md_row "$(md_num "$REQUESTS")" "$CONNS" "$(md_num "$(printf '%.0f' "$BENCH_RPS")")" "$(md_num "$(printf '%.0f' "$REPLAY_RPS")")" \
    "$(awk -v b="$BENCH_RPS" -v r="$REPLAY_RPS" 'BEGIN {printf "%.2f×", r / b}')"
md_end
