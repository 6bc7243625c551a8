#!/usr/bin/env bash
# Benchmark (not a timed test): what TLS costs stream mode (issue 11: decrypting the capture and
# re-encrypting towards the target at most 2x the CPU of replaying the same requests in
# plaintext), same run.
#
# 1. Production nginx (namespace p) serves one 612-byte page over http :80 and https :443 (a
#    self-signed certificate made here with openssl). CONNS curl processes in namespace c fetch it
#    REQUESTS times in all over keep-alive connections, once over https with SSLKEYLOGFILE (TLS
#    1.3, the key log written by curl) and once over http; tcpdump captures each run.
# 2. A target nginx (namespace t, loopback) serves both ports the same way. ROUNDS times,
#    alternating: `tcpcopy --stream --offline tls.pcap --tls-keylog keys.log --target-tls
#    --target-insecure --topspeed` and the plaintext capture at --topspeed; tcpcopy's CPU
#    (user + system from wait4's rusage, to the microsecond: /usr/bin/time prints 10 ms,
#    too coarse for 10,000 requests) and the requests the target logged.
# Prints each run, the medians and their ratio.
# Usage: sudo benches/stream_tls.sh [REQUESTS (default 20000)] [CONNS (default 10)] [ROUNDS (default 5)]
set -euo pipefail
REQUESTS=${1:-20000}
CONNS=${2:-10}
ROUNDS=${3:-5}
if ! [[ $REQUESTS =~ ^[0-9]+$ && $CONNS =~ ^[0-9]+$ && $ROUNDS =~ ^[0-9]+$ ]] ||
    ((REQUESTS < 100 || REQUESTS > 200000 || CONNS < 1 || CONNS > 100 || ROUNDS < 1 || ROUNDS > 10)); then
    echo "usage: $0 [REQUESTS 100..200000] [CONNS 1..100] [ROUNDS 1..10]" >&2
    exit 2
fi
source "$(dirname "$0")/stream_common.sh"
for p in nginx curl openssl python3; do
    command -v "$p" >/dev/null || { echo "$0: $p not found (bash scripts/setup.sh)" >&2; exit 2; }
done

mkns "${TAG}c"; mkns "${TAG}p"; mkns "${TAG}t"
veth "${TAG}c" 198.18.71.1/24 "${TAG}p" 198.18.71.2/24 "${TAG}v"
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=bench \
    -addext subjectAltName=IP:198.18.71.2,IP:127.0.0.1 \
    -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null

# tls_nginx NS ADDR HTTP_PORT HTTPS_PORT NAME: nginx serving index.html on both ports.
tls_nginx() {
    local ns=$1 addr=$2 http=$3 https=$4 dir=$WORK/nginx-$5
    mkdir -p "$dir/html" "$dir/tmp"
    head -c 612 /dev/zero | tr '\0' x >"$dir/html/index.html"
    cat >"$dir/nginx.conf" <<CONF
daemon off;
user root;
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 4096; }
http {
    log_format lab '\$server_port \$status';
    access_log $dir/access.log lab;
    client_body_temp_path $dir/tmp/body;
    proxy_temp_path $dir/tmp/proxy;
    fastcgi_temp_path $dir/tmp/fastcgi;
    uwsgi_temp_path $dir/tmp/uwsgi;
    scgi_temp_path $dir/tmp/scgi;
    keepalive_requests 1000000;
    server {
        listen $addr:$http backlog=4096;
        listen $addr:$https ssl backlog=4096;
        ssl_certificate $WORK/cert.pem;
        ssl_certificate_key $WORK/key.pem;
        ssl_protocols TLSv1.3;
        root $dir/html;
    }
}
CONF
    lab_bg ip netns exec "$ns" nginx -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log" >"$dir/stdout" 2>&1
    for _ in $(seq 100); do
        inns "$ns" ss -Hltn "sport = :$https" | grep -q LISTEN && return
        sleep 0.05
    done
    cat "$dir/error.log" >&2
    echo "$0: nginx in $ns did not start" >&2
    exit 1
}
tls_nginx "${TAG}p" 198.18.71.2 80 443 prod
tls_nginx "${TAG}t" 127.0.0.1 8080 8443 target

# capture NAME URL [env...]: CONNS curls fetching URL REQUESTS/CONNS times each, captured.
capture() {
    local name=$1 url=$2 per=$((REQUESTS / CONNS)) td
    shift 2
    ip netns exec "${TAG}p" tcpdump -i "${TAG}vb" -s 0 -B 65536 -U -n -w "$WORK/$name.pcap" tcp 2>"$WORK/tcpdump-$name.log" &
    td=$!
    for _ in $(seq 100); do grep -q "listening on" "$WORK/tcpdump-$name.log" 2>/dev/null && break; sleep 0.05; done
    local curls=()
    for _ in $(seq "$CONNS"); do
        env "$@" timeout 120 ip netns exec "${TAG}c" curl -sk "$url?[1-$per]" >/dev/null &
        curls+=($!)
    done
    wait "${curls[@]}" || true
    sleep 1
    kill -INT "$td"; wait "$td" || true
    grep -E "dropped by kernel" "$WORK/tcpdump-$name.log" | sed "s/^/capture $name: /"
}
: >"$WORK/keys.log"; chmod 600 "$WORK/keys.log"
capture tls https://198.18.71.2:443/index.html SSLKEYLOGFILE="$WORK/keys.log"
capture plain http://198.18.71.2:80/index.html
PROD_TLS=$(grep -c '^443 200' "$WORK/nginx-prod/access.log" || true)
PROD_PLAIN=$(grep -c '^80 200' "$WORK/nginx-prod/access.log" || true)
echo "production: $PROD_TLS https and $PROD_PLAIN http requests captured; key log $(wc -l <"$WORK/keys.log") lines"

# cpu_of OUT CMD...: runs CMD; writes its user + system CPU seconds (wait4's rusage) to OUT.
cpu_of() {
    python3 -c 'import os, sys
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[2], sys.argv[2:])
_, status, ru = os.wait4(pid, 0)
with open(sys.argv[1], "w") as f:
    f.write("%.6f\n" % (ru.ru_utime + ru.ru_stime))
sys.exit(os.waitstatus_to_exitcode(status))' "$@"
}

# replay KIND: one replay, prints "CPU_SECONDS REQUESTS_AT_TARGET".
replay() {
    local kind=$1 log=$WORK/nginx-target/access.log before after port args
    if [[ $kind == tls ]]; then
        port=8443
        args=(--offline "$WORK/tls.pcap" --tls-keylog "$WORK/keys.log" --target-tls --target-insecure -x 443-127.0.0.1:8443)
    else
        port=8080
        args=(--offline "$WORK/plain.pcap" -x 80-127.0.0.1:8080)
    fi
    before=$(grep -c "^$port 200" "$log" || true)
    cpu_of "$WORK/time" ip netns exec "${TAG}t" "${STREAM[@]}" "${args[@]}" --topspeed >"$WORK/replay-$kind.log" 2>&1 ||
        { tail -5 "$WORK/replay-$kind.log" >&2; exit 1; }
    sleep 0.5
    after=$(grep -c "^$port 200" "$log" || true)
    echo "$(cat "$WORK/time") $((after - before))"
}
declare -a CPU_TLS CPU_PLAIN
for r in $(seq "$ROUNDS"); do
    order=(tls plain)
    ((r % 2 == 0)) && order=(plain tls)
    for k in "${order[@]}"; do
        read -r cpu got < <(replay "$k")
        want=$PROD_PLAIN; [[ $k == tls ]] && want=$PROD_TLS
        echo "round $r $k: tcpcopy CPU ${cpu}s, target got $got of $want requests"
        if [[ $k == tls ]]; then CPU_TLS+=("$cpu"); else CPU_PLAIN+=("$cpu"); fi
    done
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END{print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
MT=$(median "${CPU_TLS[@]}"); MP=$(median "${CPU_PLAIN[@]}")
echo "medians over $ROUNDS round(s): TLS ${MT}s, plaintext ${MP}s, ratio $(awk -v a="$MT" -v b="$MP" 'BEGIN{printf "%.2f", a/b}')x (goal <= 2x)"
source "$(dirname "$0")/md_table.sh"
md_begin "Stream mode over TLS: what decrypting and re-encrypting costs" "bash benches/stream_tls.sh $*"
md_cols requests "TLS (decrypt + rustls to the target)" plaintext ratio
md_row "$(md_num "$REQUESTS")" "$MT s" "$MP s" "$(awk -v a="$MT" -v b="$MP" 'BEGIN{printf "%.2f×", a/b}')"
md_end
