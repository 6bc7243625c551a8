#!/usr/bin/env bash
# tcpclone demo: clone live redis traffic from a production server to a test server.
#
# Builds tcpcopy and intercept, creates a lab of network namespaces (client -> production ->
# bridge joining production, target and an assistant with forwarding off), starts a production
# and a target redis, runs intercept on the assistant and tcpcopy on production, drives bounded
# redis-benchmark traffic at production, and prints what production and the target each got.
# Needs root (namespaces, raw sockets), redis-server/redis-benchmark/redis-cli, iproute2.
# Everything it creates is removed on exit (trap), also on failure or Ctrl-C.
# Usage: sudo scripts/demo.sh [REQUESTS] [CONNECTIONS]    (defaults 20000 10; at most 1,000,000)
set -euo pipefail

REQUESTS=${1:-20000}
CONNS=${2:-10}
if ! [[ $REQUESTS =~ ^[0-9]+$ && $CONNS =~ ^[0-9]+$ ]] || ((REQUESTS < 1 || REQUESTS > 1000000 || CONNS < 1 || CONNS > 1000)); then
    echo "usage: $0 [REQUESTS 1..1000000] [CONNECTIONS 1..1000]" >&2
    exit 2
fi
if [[ $(id -u) != 0 ]]; then
    echo "demo.sh: needs root (network namespaces and raw sockets); try: sudo $0" >&2
    exit 2
fi
for p in ip redis-server redis-benchmark redis-cli cargo; do
    command -v "$p" >/dev/null || { echo "demo.sh: \`$p\` is not installed" >&2; exit 2; }
done

ROOT=$(cd "$(dirname "$0")/.." && pwd)
echo "== building tcpcopy and intercept (release)"
cargo build --release --manifest-path "$ROOT/Cargo.toml" -p tcpcopy -p intercept -q
BIN=$ROOT/target/release

TAG=d$$
NS_CLIENT=${TAG}cl NS_PROD=${TAG}pr NS_BR=${TAG}br NS_TARGET=${TAG}tg NS_ASSIST=${TAG}as
WORK=$(mktemp -d /tmp/tcpclone-demo.XXXXXX)
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
veth() { # ns_a addr_a ns_b addr_b name
    ip link add "$5a" type veth peer name "$5b"
    ip link set "$5a" netns "$1"; ip link set "$5b" netns "$3"
    [[ -n $2 ]] && inns "$1" ip addr add "$2" dev "$5a"
    [[ -n $4 ]] && inns "$3" ip addr add "$4" dev "$5b"
    inns "$1" ip link set "$5a" up; inns "$3" ip link set "$5b" up
}

echo "== lab: client 198.18.10.2 -> production 198.18.10.1 | bridge: production 198.18.1.1, target 198.18.1.2, assistant 198.18.1.3"
for ns in $NS_CLIENT $NS_PROD $NS_BR $NS_TARGET $NS_ASSIST; do
    ip netns add "$ns"; inns "$ns" ip link set lo up
done
veth "$NS_CLIENT" 198.18.10.2/24 "$NS_PROD" 198.18.10.1/24 "${TAG}c"
inns "$NS_BR" ip link add br0 type bridge; inns "$NS_BR" ip link set br0 up
veth "$NS_PROD" 198.18.1.1/24 "$NS_BR" "" "${TAG}p"
veth "$NS_TARGET" 198.18.1.2/24 "$NS_BR" "" "${TAG}t"
veth "$NS_ASSIST" 198.18.1.3/24 "$NS_BR" "" "${TAG}s"
for v in "${TAG}pb" "${TAG}tb" "${TAG}sb"; do inns "$NS_BR" ip link set "$v" master br0; done
# The target routes the client network to the assistant, where forwarding is off: responses die there.
inns "$NS_TARGET" ip route add 198.18.10.0/24 via 198.18.1.3
inns "$NS_ASSIST" sysctl -qw net.ipv4.ip_forward=0

redis() { # ns port name
    mkdir -p "$WORK/$3"
    inns "$1" redis-server --port "$2" --bind 0.0.0.0 --dir "$WORK/$3" --save '' --appendonly no \
        --protected-mode no --daemonize no --logfile "$WORK/$3/redis.log" &
    PIDS+=($!)
    for _ in $(seq 50); do inns "$1" redis-cli -p "$2" ping >/dev/null 2>&1 && return; sleep 0.1; done
    echo "demo.sh: redis $3 did not start" >&2; exit 1
}
echo "== production redis on 198.18.10.1:6379, target redis on 198.18.1.2:6380"
redis "$NS_PROD" 6379 prod
redis "$NS_TARGET" 6380 target

echo "== intercept on the assistant (captures the target's responses)"
ip netns exec "$NS_ASSIST" "$BIN/intercept" -i "${TAG}sa" -F 'tcp and src port 6380' -b 198.18.1.3 >"$WORK/intercept.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 50); do inns "$NS_ASSIST" ss -Hltn 'sport = :36524' | grep -q LISTEN && break; sleep 0.1; done

echo "== tcpcopy on production: -x 6379-198.18.1.2:6380 -s 198.18.1.3"
ip netns exec "$NS_PROD" "$BIN/tcpcopy" -x 6379-198.18.1.2:6380 -s 198.18.1.3 >"$WORK/tcpcopy.log" 2>&1 &
TCPCOPY=$!
PIDS+=($TCPCOPY)
for _ in $(seq 100); do grep -q "connected to intercept" "$WORK/tcpcopy.log" && break; sleep 0.1; done
grep -q "connected to intercept" "$WORK/tcpcopy.log" || { cat "$WORK/tcpcopy.log"; echo "demo.sh: tcpcopy did not connect" >&2; exit 1; }
sleep 0.3

echo "== client: redis-benchmark -n $REQUESTS -c $CONNS -t set,get against production"
inns "$NS_CLIENT" timeout 300 redis-benchmark -h 198.18.10.1 -p 6379 -n "$REQUESTS" -c "$CONNS" -t set,get -q

calls() { # ns port command -> calls so far (0 when never called)
    local n
    n=$(inns "$1" redis-cli -p "$2" info commandstats | sed -n "s/^cmdstat_$3:calls=\([0-9]*\).*/\1/p" | tr -d '\r')
    echo "${n:-0}"
}
want=$(( $(calls "$NS_PROD" 6379 set) + $(calls "$NS_PROD" 6379 get) ))
for _ in $(seq 100); do # at most 10 s for the last copies to land
    got=$(( $(calls "$NS_TARGET" 6380 set) + $(calls "$NS_TARGET" 6380 get) ))
    ((got >= want)) && break
    sleep 0.1
done

kill -INT "$TCPCOPY"
for _ in $(seq 30); do kill -0 "$TCPCOPY" 2>/dev/null || break; sleep 0.1; done

echo
echo "== what each server received (redis INFO commandstats)"
printf '%-12s %10s %10s\n' "" SET GET
printf '%-12s %10s %10s\n' production "$(calls "$NS_PROD" 6379 set)" "$(calls "$NS_PROD" 6379 get)"
printf '%-12s %10s %10s\n' target "$(calls "$NS_TARGET" 6380 set)" "$(calls "$NS_TARGET" 6380 get)"
ptot=$(( $(calls "$NS_PROD" 6379 set) + $(calls "$NS_PROD" 6379 get) ))
ttot=$(( $(calls "$NS_TARGET" 6380 set) + $(calls "$NS_TARGET" 6380 get) ))
awk -v t="$ttot" -v p="$ptot" 'BEGIN { printf "delivered: %d of %d commands (%.2f %%)\n", t, p, p ? 100 * t / p : 0 }'
echo
echo "== tcpcopy's summary"
sed -n '/^tcpcopy summary/,$p' "$WORK/tcpcopy.log"
