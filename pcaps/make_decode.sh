#!/usr/bin/env bash
# Remakes the captures the protocol decoders are tested against (tests/decode_pcaps.rs):
#   decode_http.pcap   — curl against nginx on one keep-alive connection: HEAD, a 304, gzip
#                        responses in chunked coding, a chunked request body, a POST with a
#                        Content-Length body to a path with ids, a 500 and a 404.
#   decode_redis3.pcap — redis-cli -3 (RESP3: HELLO 3, maps, sets, doubles, nulls, errors),
#                        one connection per command.
#
# Needs root (network namespaces), tcpdump, nginx, redis-server, redis-cli, curl.
# Two namespaces joined by one veth pair, 198.18.201.0/24 only. Every client run is bounded
# (timeout); the trap deletes the namespaces (and with them the veth) and stops only the
# processes started here, by PID.
set -euo pipefail

OUT="$(cd "$(dirname "$0")" && pwd)"
TAG="pd$$"
CLI="${TAG}c"
SRV="${TAG}s"
WORK="$(mktemp -d /tmp/tcpclone-pcaps.XXXXXX)"
chmod 755 "$WORK"  # nginx workers run unprivileged and must read the pages
PIDS=()

cleanup() {
    set +e
    # `ip netns exec` may fork: the servers' own pid files name the processes to stop.
    for f in "$WORK/nginx.pid" "$WORK/redis.pid"; do [ -s "$f" ] && PIDS+=("$(cat "$f")"); done
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
    sleep 0.3
    for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done
    ip netns del "$CLI" 2>/dev/null
    ip netns del "$SRV" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

[ "$(id -u)" = 0 ] || { echo "make_decode.sh: needs root (ip netns)" >&2; exit 1; }
for p in ip tcpdump nginx redis-server redis-cli curl; do
    command -v "$p" >/dev/null || { echo "make_decode.sh: $p is not installed" >&2; exit 1; }
done

inc() { ip netns exec "$CLI" "$@"; }
ins() { ip netns exec "$SRV" "$@"; }

ip netns add "$CLI"
ip netns add "$SRV"
ip link add "${TAG}a" netns "$CLI" type veth peer name "${TAG}b" netns "$SRV"
for ns in "$CLI" "$SRV"; do ip -n "$ns" link set lo up; done
ip -n "$CLI" link set "${TAG}a" address 02:00:c6:12:c9:01
ip -n "$SRV" link set "${TAG}b" address 02:00:c6:12:c9:02
ip -n "$CLI" addr add 198.18.201.1/24 dev "${TAG}a"
ip -n "$SRV" addr add 198.18.201.2/24 dev "${TAG}b"
ip -n "$CLI" link set "${TAG}a" up
ip -n "$SRV" link set "${TAG}b" up
ip -n "$CLI" neigh add 198.18.201.2 lladdr 02:00:c6:12:c9:02 dev "${TAG}a"
ip -n "$SRV" neigh add 198.18.201.1 lladdr 02:00:c6:12:c9:01 dev "${TAG}b"

mkdir -p "$WORK/www" "$WORK/tmp"
printf '<html><body>tcpclone test page</body></html>\n' >"$WORK/www/index.html"
head -c 3000 /dev/zero | tr '\0' 'y' >"$WORK/www/mid.txt"
head -c 2000 /dev/zero | tr '\0' 'z' >"$WORK/upload.txt"
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
    # Compressed on the fly: the length is unknown up front, so HTTP/1.1 responses are chunked.
    gzip on;
    gzip_types text/plain;
    gzip_min_length 1;
    # 304 for any If-Modified-Since after the file's time.
    if_modified_since before;
    server {
        listen 198.18.201.2:80;
        root $WORK/www;
        location /users/ { return 200 "user\n"; }
        location = /fail { return 500; }
    }
}
CONF
ins nginx -c "$WORK/nginx.conf" -g 'daemon off;' &
PIDS+=($!)
ins redis-server --bind 198.18.201.2 --port 6379 --save '' --appendonly no --protected-mode no \
    --daemonize no --pidfile "$WORK/redis.pid" --logfile "$WORK/redis.log" &
PIDS+=($!)

wait_port() { # ns host port
    for _ in $(seq 50); do
        if ip netns exec "$1" bash -c "exec 3<>/dev/tcp/$2/$3" 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "make_decode.sh: $2:$3 did not come up" >&2; exit 1
}
wait_port "$CLI" 198.18.201.2 80
wait_port "$CLI" 198.18.201.2 6379

# capture FILE -- COMMAND...: tcpdump in the client namespace around COMMAND.
capture() {
    local file="$1" filter="$2"; shift 3
    inc timeout 30 tcpdump -Z root -U -s 0 -i "${TAG}a" -w "$OUT/$file" $filter 2>"$WORK/tcpdump.err" &
    local tp=$!
    PIDS+=("$tp")
    for _ in $(seq 50); do grep -q listening "$WORK/tcpdump.err" 2>/dev/null && break; sleep 0.1; done
    inc timeout 20 "$@" >/dev/null
    sleep 0.5
    kill -INT "$tp"; wait "$tp" || true
    echo "$file: $(grep -o '[0-9]* packets captured' "$WORK/tcpdump.err")"
}

U=http://198.18.201.2
# One curl, one connection (--next keeps it): each URL with its own method and headers.
capture decode_http.pcap "tcp port 80" -- \
    curl -s -I "$U/" \
    --next -s -z "Fri, 01 Jan 2100 00:00:00 GMT" "$U/index.html" \
    --next -s --compressed "$U/mid.txt" \
    --next -s -H "Transfer-Encoding: chunked" --data-binary "@$WORK/upload.txt" "$U/users/42/orders/7?full=1" \
    --next -s -d "name=ann" "$U/users/123e4567-e89b-12d3-a456-426614174000" \
    --next -s "$U/fail" \
    --next -s --compressed "$U/nothere" \
    --next -s --compressed "$U/"
# One connection per command: commands read from stdin would make redis-cli fetch COMMAND DOCS
# first, a 170 KB reply.
capture decode_redis3.pcap "tcp port 6379" -- \
    bash -c "for c in 'HSET h a 1 b 2' 'HGETALL h' 'SADD s x y' 'SMEMBERS s' 'GET nokey' \
        'HGET h' 'LPUSH h x' 'ZADD z 1.5 m' 'ZSCORE z m' 'SET k v' 'GET k' 'EXISTS k'; do \
        redis-cli -3 -h 198.18.201.2 \$c; done"
ls -l "$OUT"/decode_*.pcap
