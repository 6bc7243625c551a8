#!/usr/bin/env bash
# Benchmark (not a timed test): the redis cloning scenario of issue 3.
#
# Prints tcpcopy's and intercept's CPU seconds per 10,000 cloned requests, and the client's
# throughput (redis-benchmark requests/s) without and with tcpcopy running on production.
# Same lab as scripts/demo.sh (built by scripts/lab.sh); bounded (REQUESTS per run, default
# 100,000; at most 2,000,000).
# Usage: sudo benches/tcpcopy_redis.sh [REQUESTS] [CONNECTIONS]
set -euo pipefail

REQUESTS=${1:-100000}
CONNS=${2:-50}
if ! [[ $REQUESTS =~ ^[0-9]+$ && $CONNS =~ ^[0-9]+$ ]] || ((REQUESTS < 1000 || REQUESTS > 2000000 || CONNS < 1 || CONNS > 1000)); then
    echo "usage: $0 [REQUESTS 1000..2000000] [CONNECTIONS 1..1000]" >&2
    exit 2
fi
source "$(dirname "$0")/../scripts/lab.sh"
lab_init b redis-server redis-benchmark redis-cli ss cargo
lab_build -p tcpcopy -p intercept
lab_clone_topology
redis "$NS_PROD" 0.0.0.0 6379
redis "$NS_TARGET" 0.0.0.0 6380
lab_intercept 'tcp and src port 6380'

cpu() { awk '{ print $14 + $15 }' "/proc/$1/stat"; } # utime + stime, clock ticks
TCK=$(getconf CLK_TCK)
bench() { # -> requests per second (mean of SET and GET)
    inns "$NS_CLIENT" timeout 600 redis-benchmark -h 198.18.10.1 -p 6379 -n "$REQUESTS" -c "$CONNS" -t set,get -q \
        | tr '\r' '\n' | awk '/requests per second/ { for (i = 1; i <= NF; i++) if ($i ~ /^[0-9.]+$/) { s += $i; n++; break } } END { printf "%.0f", n ? s / n : 0 }'
}

echo "== without tcpcopy: redis-benchmark -n $REQUESTS -c $CONNS -t set,get"
RPS0=$(bench)

lab_tcpcopy -x 6379-198.18.1.2:6380 -s 198.18.1.3
T0=$(cpu "$TCPCOPY") I0=$(cpu "$INTERCEPT") P0=$(redis_setget "$NS_PROD" 6379) G0=$(redis_setget "$NS_TARGET" 6380)
echo "== with tcpcopy: same load"
RPS1=$(bench)
want=$(( $(redis_setget "$NS_PROD" 6379) - P0 ))
for _ in $(seq 100); do (( $(redis_setget "$NS_TARGET" 6380) - G0 >= want )) && break; sleep 0.1; done
T1=$(cpu "$TCPCOPY") I1=$(cpu "$INTERCEPT")
cloned=$(( $(redis_setget "$NS_TARGET" 6380) - G0 ))
lab_stop_tcpcopy

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
source "$(dirname "$0")/md_table.sh"
md_begin "tcpcopy: cloning a redis-benchmark load" "bash benches/tcpcopy_redis.sh $*"
md_cols "client req/s without" "with tcpcopy" cloned "tcpcopy CPU per 10,000 cloned" "intercept CPU per 10,000 cloned"
md_row "$RPS0" "$(awk -v a="$RPS1" -v b="$RPS0" 'BEGIN {printf "%d (%.1f %%)", a, b ? 100 * a / b : 0}')" \
    "$(awk -v c="$cloned" -v w="$want" 'BEGIN {printf "%d of %d (%.3f %%)", c, w, w ? 100 * c / w : 0}')" \
    "$(awk -v t="$((T1 - T0))" -v k="$TCK" -v c="$cloned" 'BEGIN {printf "%.3f s", c ? t / k * 10000 / c : 0}')" \
    "$(awk -v t="$((I1 - I0))" -v k="$TCK" -v c="$cloned" 'BEGIN {printf "%.3f s", c ? t / k * 10000 / c : 0}')"
md_end
