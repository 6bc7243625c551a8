#!/usr/bin/env bash
# Remakes the small real captures in this directory (see README.md for what each one holds).
#
# Needs root (network namespaces), tcpdump, nginx, redis-server, redis-cli, redis-benchmark, curl.
# Two namespaces joined by one veth pair; addresses 198.18.200.0/24 and 2001:db8:200::/64 only. Every client run is bounded (timeout, request counts); the trap
# deletes the namespaces (and with them the veths) and stops only the processes started here.
set -euo pipefail

OUT="$(cd "$(dirname "$0")" && pwd)"
TAG="pm$$"
CLI="${TAG}c"
SRV="${TAG}s"
WORK="$(mktemp -d /tmp/tcpclone-pcaps.XXXXXX)"
chmod 755 "$WORK"  # nginx workers run unprivileged and must read the pages
PIDS=()

cleanup() {
    set +e
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
    sleep 0.3
    for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done
    ip netns del "$CLI" 2>/dev/null
    ip netns del "$SRV" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

[ "$(id -u)" = 0 ] || { echo "make.sh: needs root (ip netns)" >&2; exit 1; }
for p in ip tcpdump nginx redis-server redis-cli redis-benchmark curl; do
    command -v "$p" >/dev/null || { echo "make.sh: $p is not installed" >&2; exit 1; }
done

inc() { ip netns exec "$CLI" "$@"; }
ins() { ip netns exec "$SRV" "$@"; }

ip netns add "$CLI"
ip netns add "$SRV"
ip link add "${TAG}a" netns "$CLI" type veth peer name "${TAG}b" netns "$SRV"
for ns in "$CLI" "$SRV"; do ip -n "$ns" link set lo up; done
# Fixed MACs so the captures are reproducible in their link-layer bytes.
ip -n "$CLI" link set "${TAG}a" address 02:00:c6:12:c8:01
ip -n "$SRV" link set "${TAG}b" address 02:00:c6:12:c8:02
ip -n "$CLI" addr add 198.18.200.1/24 dev "${TAG}a"
ip -n "$SRV" addr add 198.18.200.2/24 dev "${TAG}b"
ip -n "$CLI" addr add 2001:db8:200::1/64 dev "${TAG}a" nodad
ip -n "$SRV" addr add 2001:db8:200::2/64 dev "${TAG}b" nodad
ip -n "$CLI" link set "${TAG}a" up
ip -n "$SRV" link set "${TAG}b" up
# Static neighbours: no ARP/ND noise at the start of every capture.
ip -n "$CLI" neigh add 198.18.200.2 lladdr 02:00:c6:12:c8:02 dev "${TAG}a"
ip -n "$SRV" neigh add 198.18.200.1 lladdr 02:00:c6:12:c8:01 dev "${TAG}b"
ip -n "$CLI" neigh add 2001:db8:200::2 lladdr 02:00:c6:12:c8:02 dev "${TAG}a"
ip -n "$SRV" neigh add 2001:db8:200::1 lladdr 02:00:c6:12:c8:01 dev "${TAG}b"

# nginx serving a small page and a 48 KB file (big enough for TSO super-frames on the veth).
mkdir -p "$WORK/www" "$WORK/tmp"
printf '<html><body>tcpclone test page</body></html>\n' >"$WORK/www/index.html"
head -c 49152 /dev/zero | tr '\0' 'x' >"$WORK/www/big.bin"
head -c 1500 /dev/zero | tr '\0' 'y' >"$WORK/www/mid.txt"
cat >"$WORK/nginx.conf" <<CONF
worker_processes 1;
pid $WORK/nginx.pid;
error_log $WORK/error.log;
events { worker_connections 64; }
http {
    access_log off;
    client_body_temp_path $WORK/tmp;
    proxy_temp_path $WORK/tmp;
    fastcgi_temp_path $WORK/tmp;
    uwsgi_temp_path $WORK/tmp;
    scgi_temp_path $WORK/tmp;
    keepalive_requests 1000;
    server {
        listen 198.18.200.2:80;
        listen [2001:db8:200::2]:80;
        root $WORK/www;
    }
}
CONF
ins nginx -c "$WORK/nginx.conf" -g 'daemon off;' &
PIDS+=($!)
ins redis-server --bind 198.18.200.2 --port 6379 --save '' --appendonly no --protected-mode no \
    --daemonize no --logfile "$WORK/redis.log" &
PIDS+=($!)

wait_port() { # ns host port
    for _ in $(seq 50); do
        if ip netns exec "$1" bash -c "exec 3<>/dev/tcp/$2/$3" 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "make.sh: $2:$3 did not come up" >&2; exit 1
}
wait_port "$CLI" 198.18.200.2 80
wait_port "$CLI" 198.18.200.2 6379

# capture FILE IFACE [tcpdump args...] -- COMMAND...: tcpdump in the client namespace around COMMAND.
capture() {
    local file="$1" iface="$2"; shift 2
    local args=()
    while [ "$1" != "--" ]; do args+=("$1"); shift; done
    shift
    inc timeout 30 tcpdump -Z root -U -s 0 -i "$iface" "${args[@]}" -w "$OUT/$file" 2>"$WORK/tcpdump.err" &
    local tp=$!
    for _ in $(seq 50); do grep -q listening "$WORK/tcpdump.err" 2>/dev/null && break; sleep 0.1; done
    inc timeout 20 "$@" >/dev/null
    sleep 0.5
    kill -INT "$tp"; wait "$tp" || true
    echo "$file: $(grep -o '[0-9]* packets captured' "$WORK/tcpdump.err")"
}

U=http://198.18.200.2
capture http_keepalive.pcap "${TAG}a" tcp port 80 -- \
    curl -s "$U/" "$U/mid.txt" "$U/" "$U/big.bin" "$U/mid.txt" "$U/nothere"
capture http_close.pcap "${TAG}a" tcp port 80 -- \
    bash -c "for i in 1 2 3 4 5; do curl -s -H 'Connection: close' $U/ $U/mid.txt; done"
capture redis.pcap "${TAG}a" tcp port 6379 -- \
    bash -c "redis-cli -h 198.18.200.2 ping && redis-cli -h 198.18.200.2 set k v && \
             redis-benchmark -h 198.18.200.2 -n 200 -c 2 -t set,get -q"
capture http_ipv6.pcap "${TAG}a" tcp port 80 -- \
    bash -c "curl -s -g 'http://[2001:db8:200::2]/' 'http://[2001:db8:200::2]/mid.txt' && \
             curl -s -H 'Connection: close' -g 'http://[2001:db8:200::2]/big.bin'"
capture http_sll2.pcap any tcp port 80 -- \
    bash -c "curl -s $U/ $U/mid.txt; curl -s -g 'http://[2001:db8:200::2]/'"
capture http_sll.pcap any -y LINUX_SLL tcp port 80 -- \
    bash -c "curl -s $U/ $U/mid.txt; curl -s -g 'http://[2001:db8:200::2]/'"
# This kernel has no 802.1Q module (no `ip link add ... type vlan`), so the VLAN capture is
# derived: the keep-alive capture tagged with VLAN 100 by tcprewrite (used for --enet-vlan del).
if command -v tcprewrite >/dev/null; then
    # (tcprewrite 4.4.3 drops the last 4 bytes of each frame unless --enet-vlan-pri/-cfi are given.)
    tcprewrite --enet-vlan=add --enet-vlan-tag=100 --enet-vlan-pri=0 --enet-vlan-cfi=0 -i "$OUT/http_keepalive.pcap" -o "$OUT/http_vlan.pcap"
    echo "http_vlan.pcap: derived from http_keepalive.pcap"
fi
ls -l "$OUT"/*.pcap
