# shellcheck shell=bash
# The network-namespace lab shared by scripts/demo.sh and the benches: sourced, not run.
#
#   source "$(dirname "$0")/../scripts/lab.sh"
#   lab_init PREFIX PROGRAM...   root and the programs checked; $TAG (PREFIX + pid, the prefix of
#                                every namespace and link name), $WORK (a temporary directory)
#                                and a trap that cleans up on exit, error, Ctrl-C and SIGTERM.
#   lab_build CARGO_ARGS...      cargo build --release in the workspace; binaries in $BIN.
#   lab_our_bins CARGO_ARGS...   our tcpcopy and intercept ($OURS, $NO_BUILD or built), copied
#                                to $WORK/bin, which $BIN names.
#   mkns NS / inns NS CMD...     create a namespace (loopback up) / run CMD in it.
#   veth NS_A ADDR_A NS_B ADDR_B NAME    veth NAMEa in NS_A, NAMEb in NS_B; addresses optional.
#   lab_bg CMD...                run CMD in the background; its pid in $LAB_PID.
#   redis NS BIND PORT [ARGS...] a redis-server in NS, once it answers.
#   redis_calls NS PORT CMD      how often CMD ran (INFO commandstats); redis_setget: SET + GET.
#   lab_clone_topology           the tcpcopy lab: client $NS_CLIENT 198.18.10.2 -> production
#                                $NS_PROD 198.18.10.1 | bridge $NS_BR joining production
#                                198.18.1.1, target $NS_TARGET 198.18.1.2 and assistant
#                                $NS_ASSIST 198.18.1.3 (forwarding off; the target routes the
#                                client network to it, so responses die there).
#   lab_intercept FILTER         intercept on the assistant, once it listens; pid in $INTERCEPT
#                                (LAB_INTERCEPT_ARGS: extra flags, e.g. "--capture blocks").
#   lab_tcpcopy ARGS...          tcpcopy on production, once connected to intercept; pid in
#                                $TCPCOPY. lab_stop_tcpcopy: SIGINT, then waits up to 3 s for
#                                it to print its summary and exit.
#
# The cleanup kills the processes started here, then whatever is left in the namespaces made
# here, deletes those namespaces and any veth still in this namespace, and removes $WORK. It
# touches nothing it did not create. Addresses are from 198.18.0.0/15 only.

LAB_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LAB_NAME=$(basename "$0")
LAB_PIDS=()
LAB_NSS=()
LAB_LINKS=()

lab_init() {
    local prefix=$1 p
    shift
    if [[ $(id -u) != 0 ]]; then
        echo "$LAB_NAME: needs root (network namespaces, raw sockets); try: sudo $0" >&2
        exit 2
    fi
    for p in ip "$@"; do
        command -v "$p" >/dev/null || { echo "$LAB_NAME: \`$p\` is not installed" >&2; exit 2; }
    done
    TAG=$prefix$$
    WORK=$(mktemp -d "/tmp/tcpclone-${LAB_NAME%.sh}.XXXXXX")
    trap lab_cleanup EXIT
    trap 'lab_cleanup; exit 130' INT
    trap 'lab_cleanup; exit 143' TERM
}

lab_cleanup() {
    [[ -z ${LAB_CLEANED:-} ]] || return 0
    LAB_CLEANED=1
    set +e
    local pid ns link
    for pid in "${LAB_PIDS[@]}"; do kill "$pid" 2>/dev/null; done
    ((${#LAB_PIDS[@]} == 0)) || sleep 0.3
    for ns in "${LAB_NSS[@]}"; do
        for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null; done
        ip netns del "$ns" 2>/dev/null
    done
    # A veth whose ends never reached a namespace (failure half-way through veth()).
    for link in "${LAB_LINKS[@]}"; do ip link del "$link" 2>/dev/null; done
    [[ -z ${WORK:-} ]] || rm -rf "$WORK"
}

lab_build() {
    cargo build --release --manifest-path "$LAB_ROOT/Cargo.toml" -q "$@"
    BIN=$LAB_ROOT/target/release
}

# Our tcpcopy and intercept: from $OURS (a directory, e.g. an older build for an A/B),
# target/release as it is with $NO_BUILD, else built with CARGO_ARGS. Copied to $WORK/bin, which
# $BIN then names, so that a build in the work tree during the run swaps nothing.
lab_our_bins() {
    if [[ -n ${OURS:-} ]]; then
        [[ -x $OURS/tcpcopy && -x $OURS/intercept ]] || { echo "$LAB_NAME: OURS must hold tcpcopy and intercept" >&2; exit 2; }
        BIN=$(realpath "$OURS")
    elif [[ -n ${NO_BUILD:-} ]]; then
        BIN=$LAB_ROOT/target/release
    else
        echo "== building (release): $*"
        lab_build "$@"
    fi
    mkdir -p "$WORK/bin"
    cp "$BIN/tcpcopy" "$BIN/intercept" "$WORK/bin/"
    BIN=$WORK/bin
}

inns() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

mkns() { ip netns add "$1"; LAB_NSS+=("$1"); inns "$1" ip link set lo up; }

veth() {
    ip link add "$5a" type veth peer name "$5b"
    LAB_LINKS+=("$5a")
    ip link set "$5a" netns "$1"; ip link set "$5b" netns "$3"
    [[ -z $2 ]] || inns "$1" ip addr add "$2" dev "$5a"
    [[ -z $4 ]] || inns "$3" ip addr add "$4" dev "$5b"
    inns "$1" ip link set "$5a" up; inns "$3" ip link set "$5b" up
}

# lab_rx_threads RECV_NS:RECV_DEV:SEND_NS:SEND_DEV... : the receiving end of each veth pair
# takes its packets in its own NAPI kernel thread instead of inside the sender's send call. A
# send then no longer runs the receiving namespace's stack on the sender's CPU, as between
# separate hosts. veth takes the NAPI path only for packets it may coalesce: GRO on the
# receiving end and no TSO on the sending one (software GSO stays on).
lab_rx_threads() {
    local end rns rdev sns sdev
    command -v ethtool >/dev/null || { echo "$LAB_NAME: lab_rx_threads needs ethtool" >&2; exit 2; }
    for end in "$@"; do
        IFS=: read -r rns rdev sns sdev <<<"$end"
        inns "$sns" ethtool -K "$sdev" tso off >/dev/null
        inns "$rns" ethtool -K "$rdev" gro on >/dev/null
        inns "$rns" sh -c "echo 1 >/sys/class/net/$rdev/threaded"
        [[ $(inns "$rns" cat "/sys/class/net/$rdev/threaded") == 1 ]] || {
            echo "$LAB_NAME: $rdev in $rns has no threaded NAPI" >&2
            exit 1
        }
    done
}

lab_bg() { "$@" & LAB_PID=$!; LAB_PIDS+=("$LAB_PID"); }

redis() {
    local ns=$1 bind=$2 port=$3 host dir
    shift 3
    dir=$WORK/redis-$ns-$port
    host=$bind
    [[ $host != 0.0.0.0 ]] || host=127.0.0.1
    mkdir -p "$dir"
    lab_bg ip netns exec "$ns" redis-server --bind "$bind" --port "$port" --dir "$dir" --save '' --appendonly no \
        --protected-mode no --daemonize no --logfile "$dir/redis.log" "$@" >"$dir/stdout" 2>&1
    for _ in $(seq 100); do inns "$ns" redis-cli -h "$host" -p "$port" ping >/dev/null 2>&1 && return; sleep 0.05; done
    echo "$LAB_NAME: redis on $bind:$port in $ns did not start (see $dir/redis.log)" >&2
    exit 1
}

redis_calls() {
    local n
    n=$(inns "$1" redis-cli -p "$2" info commandstats | sed -n "s/^cmdstat_$3:calls=\([0-9]*\).*/\1/p" | tr -d '\r')
    echo "${n:-0}"
}

redis_setget() { echo $(( $(redis_calls "$1" "$2" set) + $(redis_calls "$1" "$2" get) )); }

lab_clone_topology() {
    NS_CLIENT=${TAG}cl NS_PROD=${TAG}pr NS_BR=${TAG}br NS_TARGET=${TAG}tg NS_ASSIST=${TAG}as
    local ns v
    for ns in "$NS_CLIENT" "$NS_PROD" "$NS_BR" "$NS_TARGET" "$NS_ASSIST"; do mkns "$ns"; done
    veth "$NS_CLIENT" 198.18.10.2/24 "$NS_PROD" 198.18.10.1/24 "${TAG}c"
    inns "$NS_BR" ip link add br0 type bridge; inns "$NS_BR" ip link set br0 up
    # The bridge stands for a switch: no iptables on bridged frames. Where br_netfilter is
    # loaded (container hosts), a new namespace has it on, and every frame tcpcopy sends through
    # the bridge would run netfilter's hooks on tcpcopy's CPU (a veth send runs the receiving
    # side inline), which no switch costs a production host.
    inns "$NS_BR" sh -c 'for f in /proc/sys/net/bridge/bridge-nf-call-*; do [ -e "$f" ] && echo 0 >"$f"; done; true'
    veth "$NS_PROD" 198.18.1.1/24 "$NS_BR" "" "${TAG}p"
    veth "$NS_TARGET" 198.18.1.2/24 "$NS_BR" "" "${TAG}t"
    veth "$NS_ASSIST" 198.18.1.3/24 "$NS_BR" "" "${TAG}s"
    for v in "${TAG}pb" "${TAG}tb" "${TAG}sb"; do inns "$NS_BR" ip link set "$v" master br0; done
    inns "$NS_TARGET" ip route add 198.18.10.0/24 via 198.18.1.3
    inns "$NS_ASSIST" sysctl -qw net.ipv4.ip_forward=0
}

# The secret tcpcopy and intercept share (both refuse to start without one unless --insecure):
# made once per run in $WORK, mode 600.
lab_secret() {
    [[ -s $WORK/secret ]] && return
    (umask 077; od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$WORK/secret")
}

lab_intercept() {
    lab_secret
    lab_bg ip netns exec "$NS_ASSIST" "$BIN/intercept" -i "${TAG}sa" -F "$1" -b 198.18.1.3 --secret-file "$WORK/secret" ${LAB_INTERCEPT_ARGS:-} >"$WORK/intercept.log" 2>&1
    INTERCEPT=$LAB_PID
    for _ in $(seq 50); do inns "$NS_ASSIST" ss -Hltn 'sport = :36524' | grep -q LISTEN && return; sleep 0.1; done
    cat "$WORK/intercept.log" >&2
    echo "$LAB_NAME: intercept did not start listening" >&2
    exit 1
}

lab_tcpcopy() {
    lab_secret
    lab_bg ip netns exec "$NS_PROD" "$BIN/tcpcopy" --secret-file "$WORK/secret" "$@" >"$WORK/tcpcopy.log" 2>&1
    TCPCOPY=$LAB_PID
    for _ in $(seq 100); do grep -q "connected to intercept" "$WORK/tcpcopy.log" && break; sleep 0.1; done
    grep -q "connected to intercept" "$WORK/tcpcopy.log" || {
        cat "$WORK/tcpcopy.log" >&2
        echo "$LAB_NAME: tcpcopy did not connect" >&2
        exit 1
    }
    sleep 0.3
}

lab_stop_tcpcopy() {
    kill -INT "$TCPCOPY"
    for _ in $(seq 30); do kill -0 "$TCPCOPY" 2>/dev/null || break; sleep 0.1; done
}

# Helpers added for benches/tcpcopy_cost.sh and scripts/demo.sh (the functions above are unchanged):
#   lab_cpu PID...               CPU time so far of the processes, all threads (utime + stime from
#                                /proc/PID/stat), in clock ticks: $LAB_TCK per second. Right after
#                                redis() or lab_nginx(), $LAB_PID is the server's own pid (ip netns
#                                exec execs it).
#   lab_nginx NS ADDR PORT NAME  an nginx in NS on ADDR:PORT, once it listens; files in
#                                $WORK/nginx-NAME, master's pid in $LAB_PID. It serves a 612-byte
#                                /index.html and POST /upload (bodies up to 1 MB), which it answers
#                                200 only after reading the whole body. $LAB_NGINX_WORKERS workers (1).
#   lab_nginx_pids NAME          the pids of that nginx's master and workers.
#   lab_nginx_ok NAME [MINLEN]   requests it answered 200 so far, of at least MINLEN bytes
#                                (request line, headers and body), from its access log.
#   lab_stop PID                 SIGTERM, up to 3 s to exit, then SIGKILL; reaps it and drops it
#                                from the cleanup's list.

# shellcheck disable=SC2034 # for the scripts that source this file
LAB_TCK=$(getconf CLK_TCK)

lab_cpu() {
    local pid t=0 f
    for pid in "$@"; do
        # The fields after the ")" closing the command name: state is 1, utime 12, stime 13.
        f=$(sed 's/^.*) //' "/proc/$pid/stat") || return 1
        t=$(awk -v t="$t" '{ print t + $12 + $13 }' <<<"$f")
    done
    echo "$t"
}

# Context switches of PIDs, all their threads: "voluntary nonvoluntary" (a voluntary one is a
# sleep, so each is a wake-up; a nonvoluntary one is a preemption by another task).
lab_ctx() {
    local pid v=0 n=0 a b
    for pid in "$@"; do
        read -r a b < <(awk '/^voluntary_ctxt_switches/ { v += $2 } /^nonvoluntary_ctxt_switches/ { n += $2 }
            END { print v + 0, n + 0 }' /proc/"$pid"/task/*/status 2>/dev/null) || return 1
        v=$((v + a)) n=$((n + b))
    done
    echo "$v $n"
}

lab_nginx() {
    local ns=$1 addr=$2 port=$3 name=$4 dir
    dir=$WORK/nginx-$name
    mkdir -p "$dir/html" "$dir/tmp"
    head -c 612 /dev/zero | tr '\0' x >"$dir/html/index.html"
    : >"$dir/html/upload"
    cat >"$dir/nginx.conf" <<CONF
daemon off;
master_process on;
user root;
worker_processes ${LAB_NGINX_WORKERS:-1};
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 4096; }
http {
    log_format lab '\$status \$request_length';
    access_log $dir/access.log lab;
    client_body_temp_path $dir/tmp/body;
    proxy_temp_path $dir/tmp/proxy;
    fastcgi_temp_path $dir/tmp/fastcgi;
    uwsgi_temp_path $dir/tmp/uwsgi;
    scgi_temp_path $dir/tmp/scgi;
    default_type application/octet-stream;
    keepalive_requests 1000000;
    server {
        listen $addr:$port backlog=4096;
        root $dir/html;
        location / { }
        # A POST to a static file is answered 405 (turned into a 200 with /index.html) without
        # waiting for the body; the mirror reads the whole body first (mirror_request_body on),
        # so a 200 here means every byte arrived.
        location = /upload {
            client_max_body_size 1m;
            client_body_buffer_size 1m;
            mirror /_body;
            error_page 405 =200 /index.html;
        }
        location = /_body { internal; return 204; }
    }
}
CONF
    lab_bg ip netns exec "$ns" nginx -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log" >"$dir/stdout" 2>&1
    echo "$LAB_PID" >"$dir/master"
    for _ in $(seq 100); do
        inns "$ns" ss -Hltn "sport = :$port" | grep -q LISTEN && pgrep -P "$LAB_PID" >/dev/null && return
        sleep 0.05
    done
    cat "$dir/error.log" >&2
    echo "$LAB_NAME: nginx on $addr:$port in $ns did not start" >&2
    exit 1
}

lab_nginx_pids() {
    local master
    master=$(cat "$WORK/nginx-$1/master")
    echo "$master"
    pgrep -P "$master"
}

lab_nginx_ok() {
    awk -v m="${2:-0}" '$1 == 200 && $2 >= m { n++ } END { print n + 0 }' "$WORK/nginx-$1/access.log" 2>/dev/null || echo 0
}

lab_stop() {
    kill -TERM "$1" 2>/dev/null || true
    for _ in $(seq 30); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
    local pid keep=()
    for pid in "${LAB_PIDS[@]}"; do [[ $pid == "$1" ]] || keep+=("$pid"); done
    LAB_PIDS=("${keep[@]}") # so that the cleanup never signals a recycled pid
}
