#!/usr/bin/env bash
# Benchmark (not a timed test): the redis cloning scenario of issue 3.
#
# Prints tcpcopy's and intercept's CPU seconds per 10,000 cloned requests, and the client's
# throughput (redis-benchmark requests/s) without and with tcpcopy running on production.
# Same lab as scripts/demo.sh; bounded (REQUESTS per run, default 100,000; at most 2,000,000).
# Usage: sudo benches/tcpcopy_redis.sh [REQUESTS] [CONNECTIONS]
set -euo pipefail

REQUESTS=${1:-100000}
CONNS=${2:-50}
if ! [[ $REQUESTS =~ ^[0-9]+$ && $CONNS =~ ^[0-9]+$ ]] || ((REQUESTS < 1000 || REQUESTS > 2000000 || CONNS < 1 || CONNS > 1000)); then
    echo "usage: $0 [REQUESTS 1000..2000000] [CONNECTIONS 1..1000]" >&2
    exit 2
fi
[[ $(id -u) == 0 ]] || { echo "tcpcopy_redis.sh: needs root" >&2; exit 2; }
for p in ip redis-server redis-benchmark redis-cli cargo; do
    command -v "$p" >/dev/null || { echo "tcpcopy_redis.sh: \`$p\` is not installed" >&2; exit 2; }
done

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cargo build --release --manifest-path "$ROOT/Cargo.toml" -p tcpcopy -p intercept -q
BIN=$ROOT/target/release
TAG=b$$
NS_CLIENT=${TAG}cl NS_PROD=${TAG}pr NS_BR=${TAG}br NS_TARGET=${TAG}tg NS_ASSIST=${TAG}as
WORK=$(mktemp -d /tmp/tcpclone-bench.XXXXXX)
PIDS=()
cleanup() {
    set +e
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; done
    sleep 0.3
    for ns in $NS_CLIENT $NS_PROD $NS_BR $NS_TARGET $NS_ASSIST; do
        if ip netns list | grep -qw "$ns"; then
            for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null; done
            ip netns del "$ns"
        fi
    done
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM
inns() { local ns=$1; shift; ip netns exec "$ns" "$@"; }
veth() {
    ip link add "$5a" type veth peer name "$5b"
    ip link set "$5a" netns "$1"; ip link set "$5b" netns "$3"
    [[ -n $2 ]] && inns "$1" ip addr add "$2" dev "$5a"
    [[ -n $4 ]] && inns "$3" ip addr add "$4" dev "$5b"
    inns "$1" ip link set "$5a" up; inns "$3" ip link set "$5b" up
}
for ns in $NS_CLIENT $NS_PROD $NS_BR $NS_TARGET $NS_ASSIST; do ip netns add "$ns"; inns "$ns" ip link set lo up; done
veth "$NS_CLIENT" 198.18.10.2/24 "$NS_PROD" 198.18.10.1/24 "${TAG}c"
inns "$NS_BR" ip link add br0 type bridge; inns "$NS_BR" ip link set br0 up
veth "$NS_PROD" 198.18.1.1/24 "$NS_BR" "" "${TAG}p"
veth "$NS_TARGET" 198.18.1.2/24 "$NS_BR" "" "${TAG}t"
veth "$NS_ASSIST" 198.18.1.3/24 "$NS_BR" "" "${TAG}s"
for v in "${TAG}pb" "${TAG}tb" "${TAG}sb"; do inns "$NS_BR" ip link set "$v" master br0; done
inns "$NS_TARGET" ip route add 198.18.10.0/24 via 198.18.1.3
inns "$NS_ASSIST" sysctl -qw net.ipv4.ip_forward=0
redis() {
    mkdir -p "$WORK/$3"
    inns "$1" redis-server --port "$2" --bind 0.0.0.0 --dir "$WORK/$3" --save '' --appendonly no \
        --protected-mode no --daemonize no --logfile "$WORK/$3/redis.log" &
    PIDS+=($!)
    for _ in $(seq 50); do inns "$1" redis-cli -p "$2" ping >/dev/null 2>&1 && return; sleep 0.1; done
    echo "redis $3 did not start" >&2; exit 1
}
redis "$NS_PROD" 6379 prod
redis "$NS_TARGET" 6380 target
ip netns exec "$NS_ASSIST" "$BIN/intercept" -i "${TAG}sa" -F 'tcp and src port 6380' -b 198.18.1.3 >"$WORK/intercept.log" 2>&1 &
INTERCEPT=$!
PIDS+=($INTERCEPT)
for _ in $(seq 50); do inns "$NS_ASSIST" ss -Hltn 'sport = :36524' | grep -q LISTEN && break; sleep 0.1; done

calls() {
    local n
    n=$(inns "$1" redis-cli -p "$2" info commandstats | sed -n "s/^cmdstat_$3:calls=\([0-9]*\).*/\1/p" | tr -d '\r')
    echo "${n:-0}"
}
total() { echo $(( $(calls "$1" "$2" set) + $(calls "$1" "$2" get) )); }
cpu() { awk '{ print $14 + $15 }' "/proc/$1/stat"; } # utime + stime, clock ticks
TCK=$(getconf CLK_TCK)
bench() { # -> requests per second (mean of SET and GET)
    inns "$NS_CLIENT" timeout 600 redis-benchmark -h 198.18.10.1 -p 6379 -n "$REQUESTS" -c "$CONNS" -t set,get -q \
        | tr '\r' '\n' | awk '/requests per second/ { for (i = 1; i <= NF; i++) if ($i ~ /^[0-9.]+$/) { s += $i; n++; break } } END { printf "%.0f", n ? s / n : 0 }'
}

echo "== without tcpcopy: redis-benchmark -n $REQUESTS -c $CONNS -t set,get"
RPS0=$(bench)

ip netns exec "$NS_PROD" "$BIN/tcpcopy" -x 6379-198.18.1.2:6380 -s 198.18.1.3 >"$WORK/tcpcopy.log" 2>&1 &
TCPCOPY=$!
PIDS+=($TCPCOPY)
for _ in $(seq 100); do grep -q "connected to intercept" "$WORK/tcpcopy.log" && break; sleep 0.1; done
sleep 0.3
T0=$(cpu "$TCPCOPY") I0=$(cpu "$INTERCEPT") P0=$(total "$NS_PROD" 6379) G0=$(total "$NS_TARGET" 6380)
echo "== with tcpcopy: same load"
RPS1=$(bench)
want=$(( $(total "$NS_PROD" 6379) - P0 ))
for _ in $(seq 100); do (( $(total "$NS_TARGET" 6380) - G0 >= want )) && break; sleep 0.1; done
T1=$(cpu "$TCPCOPY") I1=$(cpu "$INTERCEPT")
cloned=$(( $(total "$NS_TARGET" 6380) - G0 ))
kill -INT "$TCPCOPY"; for _ in $(seq 30); do kill -0 "$TCPCOPY" 2>/dev/null || break; sleep 0.1; done

awk -v rps0="$RPS0" -v rps1="$RPS1" -v t="$((T1 - T0))" -v i="$((I1 - I0))" -v tck="$TCK" -v c="$cloned" -v w="$want" 'BEGIN {
    printf "client throughput without tcpcopy: %d req/s\n", rps0
    printf "client throughput with tcpcopy:    %d req/s (%.1f %%)\n", rps1, rps0 ? 100 * rps1 / rps0 : 0
    printf "cloned: %d of %d requests (%.3f %%)\n", c, w, w ? 100 * c / w : 0
    if (c > 0) {
        printf "tcpcopy CPU:   %.3f s per 10,000 cloned requests (%.2f s total)\n", t / tck * 10000 / c, t / tck
        printf "intercept CPU: %.3f s per 10,000 cloned requests (%.2f s total)\n", i / tck * 10000 / c, i / tck
    }
}'
sed -n '/^tcpcopy summary/,$p' "$WORK/tcpcopy.log"
