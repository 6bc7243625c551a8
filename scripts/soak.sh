#!/usr/bin/env bash
# Bounded soak of tcpcopy + intercept (issue 5, "Load held"): scripts/soak.sh MINUTES
#
# Builds the tcpcopy lab of tests/tcpcopy_lab.rs (client -> production with redis :6379 and
# nginx :80 plus tcpcopy -n 2 -> bridge -> target with redis :6380 and nginx :8080, routing
# the client network via an assistant with ip_forward=0 running intercept), then drives mixed
# traffic until MINUTES have passed: redis-benchmark keep-alive and one-connection-per-request,
# wrk keep-alive and `Connection: close`, each run bounded. It samples RSS and open fds of
# tcpcopy and intercept and the target's TCP socket count at minute 2 (or half-way for short
# runs) and at the end, and prints delivery (target count / (2 x production count)) and
# whether RSS and fds stayed within 5 %. Needs root, redis, nginx, wrk. Exit status 0 when
# delivery >= 99.9 % and RSS/fds/sockets held; 1 otherwise. SOAK_NO_BUILD=1 skips the build.
set -euo pipefail

MINUTES=${1:?usage: scripts/soak.sh MINUTES}
[[ $MINUTES =~ ^[0-9]+$ && $MINUTES -ge 1 ]] || { echo "soak: MINUTES must be a whole number >= 1" >&2; exit 2; }
[[ $(id -u) -eq 0 ]] || { echo "soak: needs root (network namespaces)" >&2; exit 2; }
for p in ip redis-server redis-benchmark redis-cli nginx wrk ss; do
    command -v "$p" >/dev/null || { echo "soak: $p not found" >&2; exit 2; }
done
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
[[ -n ${SOAK_NO_BUILD:-} ]] || cargo build --release -p tcpcopy -p intercept >&2
TCPCOPY=$ROOT/target/release/tcpcopy
INTERCEPT=$ROOT/target/release/intercept

ID=sk$$
CLI=${ID}c PROD=${ID}p BR=${ID}b TGT=${ID}t AST=${ID}a
WORK=$(mktemp -d /tmp/soak.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    sleep 0.5
    for ns in $CLI $PROD $BR $TGT $AST; do
        for p in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$p" 2>/dev/null || true; done
        ip netns del "$ns" 2>/dev/null || true
    done
}
trap cleanup EXIT
nsx() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

for ns in $CLI $PROD $BR $TGT $AST; do ip netns add "$ns"; nsx "$ns" ip link set lo up; done
veth() { # veth NS_A ADDR_A NS_B ADDR_B NAME
    ip link add "$5a" type veth peer name "$5b"
    ip link set "$5a" netns "$1"; ip link set "$5b" netns "$3"
    [[ -n $2 ]] && nsx "$1" ip addr add "$2" dev "$5a"
    [[ -n $4 ]] && nsx "$3" ip addr add "$4" dev "$5b"
    nsx "$1" ip link set "$5a" up; nsx "$3" ip link set "$5b" up
}
nsx $BR ip link add br0 type bridge; nsx $BR ip link set br0 up
veth $CLI 198.18.10.2/24 $PROD 198.18.10.1/24 ${ID}x
nsx $CLI ip route add 198.18.1.0/24 via 198.18.10.1
nsx $PROD sysctl -qw net.ipv4.ip_forward=0
for h in "$PROD 198.18.1.1 p" "$TGT 198.18.1.2 t" "$AST 198.18.1.3 a"; do
    set -- $h
    veth "$1" "$2/24" $BR "" ${ID}$3
    nsx $BR ip link set ${ID}$3b master br0
done
nsx $AST sysctl -qw net.ipv4.ip_forward=0
nsx $TGT ip route add 198.18.10.0/24 via 198.18.1.3

redis() { # NS PORT
    mkdir -p "$WORK/redis$2"
    nsx "$1" redis-server --port "$2" --bind 0.0.0.0 --dir "$WORK/redis$2" --save "" --appendonly no \
        --protected-mode no --maxclients 10000 >"$WORK/redis$2/log" 2>&1 &
    PIDS+=($!)
}
nginx_at() { # NS PORT
    local d=$WORK/nginx$2; mkdir -p "$d"
    cat >"$d/nginx.conf" <<EOF
daemon off; master_process on; worker_processes 1; user root; pid $d/nginx.pid;
error_log $d/error.log warn;
events { worker_connections 4096; }
http { access_log $d/access.log; client_body_temp_path $d/body; proxy_temp_path $d/proxy;
  fastcgi_temp_path $d/fcgi; uwsgi_temp_path $d/uwsgi; scgi_temp_path $d/scgi;
  server { listen $2 reuseport; location / { return 200 "ok\n"; } } }
EOF
    nsx "$1" nginx -c "$d/nginx.conf" -p "$d" >"$d/stderr" 2>&1 &
    PIDS+=($!)
}
redis $PROD 6379; redis $TGT 6380
nginx_at $PROD 80; nginx_at $TGT 8080
sleep 1
nsx $CLI redis-cli -h 198.18.10.1 ping >/dev/null
: >"$WORK/nginx80/access.log"; : >"$WORK/nginx8080/access.log"

ip netns exec $AST "$INTERCEPT" -i ${ID}aa -F 'tcp and (src port 6380 or src port 8080)' -b 198.18.1.3 \
    --stats 30 >"$WORK/intercept.log" 2>&1 &
PIDS+=($!); IPID=$!
sleep 1
ip netns exec $PROD "$TCPCOPY" -x 6379-198.18.1.2:6380,80-198.18.1.2:8080 -s 198.18.1.3 -n 2 \
    --stats 30 >"$WORK/tcpcopy.log" 2>&1 &
PIDS+=($!); TPID=$!
for _ in $(seq 100); do grep -q "connected to intercept" "$WORK/tcpcopy.log" && break; sleep 0.1; done
grep -q "connected to intercept" "$WORK/tcpcopy.log" || { echo "soak: tcpcopy did not connect:"; cat "$WORK/tcpcopy.log"; exit 1; }

rss() { awk '/VmRSS/ {print $2}' /proc/$1/status; }
fds() { ls /proc/$1/fd | wc -l; }
# TIME-WAIT comes and goes with the short connections; what must not pile up is the rest
# (ESTABLISHED, LAST-ACK, FIN-WAIT, CLOSE-WAIT...).
socks() { nsx $TGT ss -Htan exclude time-wait | wc -l; }
sample() { echo "$(rss $TPID) $(fds $TPID) $(rss $IPID) $(fds $IPID) $(socks)"; }

for p in $TPID $IPID; do
    echo "soak: $(tr '\0' ' ' </proc/$p/cmdline | cut -c1-60)... runs as uid $(awk '/^Uid/ {print $2}' /proc/$p/status), CapEff $(awk '/^CapEff/ {print $2}' /proc/$p/status)"
done
START=$(date +%s)
END=$((START + MINUTES * 60))
SAMPLE_AT=$((START + (MINUTES >= 4 ? 120 : MINUTES * 30)))
FIRST=""
round=0
while (( $(date +%s) < END )); do
    round=$((round + 1))
    # A steady, moderate mix (a soak looks for leaks, not for the saturation point).
    nsx $CLI timeout 60 redis-benchmark -h 198.18.10.1 -p 6379 -n 2000 -c 5 -t set,get -q >/dev/null 2>&1
    nsx $CLI timeout 60 redis-benchmark -h 198.18.10.1 -p 6379 -n 300 -c 3 -k 0 -t set -q >/dev/null 2>&1
    nsx $CLI timeout 30 wrk -t1 -c4 -d1s http://198.18.10.1/ >/dev/null
    nsx $CLI timeout 30 wrk -t1 -c4 -d1s -H 'Connection: close' http://198.18.10.1/ >/dev/null
    sleep 1
    if [[ -z $FIRST ]] && (( $(date +%s) >= SAMPLE_AT )); then
        sleep 2; FIRST=$(sample)
        echo "soak: sample at $(( $(date +%s) - START )) s: $FIRST (tcpcopy rss kB, fds; intercept rss kB, fds; target sockets)"
    fi
done
sleep 5   # let the last clones finish and the target close its side
[[ -n $FIRST ]] || FIRST=$(sample)
LAST=$(sample)
echo "soak: sample at end ($(( $(date +%s) - START )) s, $round rounds): $LAST"

calls() { nsx "$1" redis-cli -p "$2" info commandstats | awk -F'[=,:]' -v c="cmdstat_$3" '$1==c {print $3}'; }
prod_cmds=$(( $(calls $PROD 6379 set) + $(calls $PROD 6379 get) ))
tgt_cmds=$(( $(calls $TGT 6380 set || echo 0) + $(calls $TGT 6380 get || echo 0) ))
prod_http=$(wc -l <"$WORK/nginx80/access.log")
tgt_http=$(wc -l <"$WORK/nginx8080/access.log")
kill -TERM $TPID $IPID 2>/dev/null || true
sleep 2
echo "soak: tcpcopy $(grep -m1 -A3 'tcpcopy summary' "$WORK/tcpcopy.log" | tr '\n' ' ')"
echo "soak: intercept $(grep 'summary:' "$WORK/intercept.log" | tail -1)"

python3 - "$FIRST" "$LAST" "$prod_cmds" "$tgt_cmds" "$prod_http" "$tgt_http" <<'EOF'
import sys
a = [int(x) for x in sys.argv[1].split()]
b = [int(x) for x in sys.argv[2].split()]
pc, tc, ph, th = map(int, sys.argv[3:7])
ok = True
def deliv(name, p, t):
    global ok
    r = t / (2 * p) if p else 0.0
    good = r >= 0.999
    ok &= good
    print(f"soak: {name}: production {p}, target {t} (-n 2): delivery {100*r:.2f} % {'OK' if good else 'LOW'}")
deliv("redis commands", pc, tc)
deliv("nginx requests", ph, th)
for i, name in enumerate(["tcpcopy RSS kB", "tcpcopy fds", "intercept RSS kB", "intercept fds"]):
    d = (b[i] - a[i]) / a[i] if a[i] else 0.0
    good = d <= 0.05
    ok &= good
    print(f"soak: {name}: {a[i]} -> {b[i]} ({100*d:+.1f} %) {'within 5 %' if good else 'GREW'}")
good = b[4] <= a[4] * 1.05 + 5
ok &= good
print(f"soak: target TCP sockets: {a[4]} -> {b[4]} {'flat' if good else 'GREW'}")
print("soak: PASS" if ok else "soak: FAIL")
sys.exit(0 if ok else 1)
EOF
