#!/usr/bin/env bash
# Shared helpers of the stream-mode benches (sourced, not run): namespaces with cleanup, the
# stream-mode binary (`tcpcopy --stream` once wired, else the stream example).
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
[[ $(id -u) == 0 ]] || { echo "$(basename "$0"): needs root (network namespaces)" >&2; exit 2; }
for p in ip redis-server redis-benchmark redis-cli tcpdump cargo; do
    command -v "$p" >/dev/null || { echo "$(basename "$0"): \`$p\` is not installed" >&2; exit 2; }
done
cargo build --release --manifest-path "$ROOT/Cargo.toml" -p tcpcopy --example stream -q
if "$ROOT/target/release/tcpcopy" --help 2>/dev/null | grep -q -- --topspeed; then
    STREAM=("$ROOT/target/release/tcpcopy" --stream)
else
    STREAM=("$ROOT/target/release/examples/stream" --stream)
fi
TAG=s$$
WORK=$(mktemp -d /tmp/tcpclone-stream-bench.XXXXXX)
NSS=()
cleanup() {
    set +e
    for ns in "${NSS[@]}"; do
        if ip netns list | grep -qw "$ns"; then
            for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null; done
            ip netns del "$ns"
        fi
    done
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM
inns() { local ns=$1; shift; ip netns exec "$ns" "$@"; }
mkns() { ip netns add "$1"; NSS+=("$1"); inns "$1" ip link set lo up; }
# veth NS_A ADDR_A NS_B ADDR_B NAME
veth() {
    ip link add "$5a" type veth peer name "$5b"
    ip link set "$5a" netns "$1"; ip link set "$5b" netns "$3"
    inns "$1" ip addr add "$2" dev "$5a"; inns "$3" ip addr add "$4" dev "$5b"
    inns "$1" ip link set "$5a" up; inns "$3" ip link set "$5b" up
}
# redis NS BIND PORT [extra args]
redis() {
    local ns=$1 bind=$2 port=$3; shift 3
    mkdir -p "$WORK/r$port$ns"
    inns "$ns" redis-server --bind "$bind" --port "$port" --dir "$WORK/r$port$ns" --save '' --appendonly no \
        --protected-mode no --daemonize yes --logfile "$WORK/r$port$ns/log" "$@" >/dev/null
    for _ in $(seq 100); do inns "$ns" redis-cli -h "$bind" -p "$port" ping >/dev/null 2>&1 && return; sleep 0.05; done
    echo "redis did not start in $ns" >&2; exit 1
}
# json_get FILE a.b.c
json_get() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1]))
for k in sys.argv[2].split("."): d=d[k]
print(d)' "$1" "$2"; }
