#!/usr/bin/env bash
# tcpclone demo: clone live redis traffic from a production server to a test server.
#
# Builds tcpcopy and intercept, creates a lab of network namespaces (client -> production ->
# bridge joining production, target and an assistant with forwarding off), starts a production
# and a target redis, runs intercept on the assistant and tcpcopy on production, drives bounded
# redis-benchmark traffic at production, and prints what production and the target each got, and
# the CPU seconds tcpcopy spent on that load beside those of the production redis-server: while
# cloned, and for the same load before tcpcopy started (what redis costs on its own; beside a
# cloner redis is charged less CPU for the same requests).
# Needs root (namespaces, raw sockets), redis-server/redis-benchmark/redis-cli, iproute2.
# Everything it creates is removed on exit (scripts/lab.sh's trap), also on failure or Ctrl-C.
# Usage: sudo scripts/demo.sh [REQUESTS] [CONNECTIONS]    (defaults 20000 10; at most 1,000,000)
set -euo pipefail

REQUESTS=${1:-20000}
CONNS=${2:-10}
if ! [[ $REQUESTS =~ ^[0-9]+$ && $CONNS =~ ^[0-9]+$ ]] || ((REQUESTS < 1 || REQUESTS > 1000000 || CONNS < 1 || CONNS > 1000)); then
    echo "usage: $0 [REQUESTS 1..1000000] [CONNECTIONS 1..1000]" >&2
    exit 2
fi
# shellcheck source=scripts/lab.sh
source "$(dirname "$0")/lab.sh"
lab_init d redis-server redis-benchmark redis-cli ss cargo
echo "== building tcpcopy and intercept (release)"
lab_build -p tcpcopy -p intercept

echo "== lab: client 198.18.10.2 -> production 198.18.10.1 | bridge: production 198.18.1.1, target 198.18.1.2, assistant 198.18.1.3"
lab_clone_topology

echo "== production redis on 198.18.10.1:6379, target redis on 198.18.1.2:6380"
redis "$NS_PROD" 0.0.0.0 6379
PROD_REDIS=$LAB_PID # redis-server's own pid (ip netns exec execs it)
redis "$NS_TARGET" 0.0.0.0 6380

echo "== intercept on the assistant (captures the target's responses)"
lab_intercept 'tcp and src port 6380'

# The client's load against production: run once alone, then cloned.
load() { inns "$NS_CLIENT" timeout 300 redis-benchmark -h 198.18.10.1 -p 6379 -n "$REQUESTS" -c "$CONNS" -t set,get -q; }

echo "== client alone first: redis-benchmark -n $REQUESTS -c $CONNS -t set,get, nothing cloning"
A0=$(lab_cpu "$PROD_REDIS")
load
A1=$(lab_cpu "$PROD_REDIS")
inns "$NS_PROD" redis-cli -p 6379 config resetstat >/dev/null # the counts below are the cloned run's

echo "== tcpcopy on production: -x 6379-198.18.1.2:6380 -s 198.18.1.3 --secret-file (the secret intercept has)"
lab_tcpcopy -x 6379-198.18.1.2:6380 -s 198.18.1.3

echo "== client: redis-benchmark -n $REQUESTS -c $CONNS -t set,get against production"
T0=$(lab_cpu "$TCPCOPY") R0=$(lab_cpu "$PROD_REDIS")
load
R1=$(lab_cpu "$PROD_REDIS")

want=$(redis_setget "$NS_PROD" 6379)
for _ in $(seq 100); do # at most 10 s for the last copies to land
    (( $(redis_setget "$NS_TARGET" 6380) >= want )) && break
    sleep 0.1
done
T1=$(lab_cpu "$TCPCOPY") # after the last copies landed: the tail of the load is tcpcopy's work too

lab_stop_tcpcopy

echo
echo "== what each server received (redis INFO commandstats)"
printf '%-12s %10s %10s\n' "" SET GET
printf '%-12s %10s %10s\n' production "$(redis_calls "$NS_PROD" 6379 set)" "$(redis_calls "$NS_PROD" 6379 get)"
printf '%-12s %10s %10s\n' target "$(redis_calls "$NS_TARGET" 6380 set)" "$(redis_calls "$NS_TARGET" 6380 get)"
ptot=$(redis_setget "$NS_PROD" 6379)
ttot=$(redis_setget "$NS_TARGET" 6380)
awk -v t="$ttot" -v p="$ptot" 'BEGIN { printf "delivered: %d of %d commands (%.2f %%)\n", t, p, p ? 100 * t / p : 0 }'
echo
echo "== tcpcopy's summary"
sed -n '/^tcpcopy summary/,$p' "$WORK/tcpcopy.log"
echo
# CPU time (utime + stime, all threads, /proc/PID/stat) over the redis-benchmark runs.
awk -v t=$((T1 - T0)) -v r=$((R1 - R0)) -v a=$((A1 - A0)) -v k="$LAB_TCK" 'BEGIN {
    printf "cost: tcpcopy %.2f s CPU, production redis %.2f s CPU beside it (%s), %.2f s alone (%s)\n",
        t / k, r / k, r ? sprintf("%.2fx", t / r) : "-", a / k, a ? sprintf("%.2fx", t / a) : "-" }'
