#!/usr/bin/env bash
# Benchmark (not a timed test): what cloning with tcpcopy costs production.
#
# One lab (scripts/lab.sh's clone topology: client -> production | bridge: production, target,
# assistant). Per scenario and round, alternating (the order rotates from round to round):
#   none      the load against production, nothing cloning;
#   tcpclone  the same with our tcpcopy cloning to the target (intercept on the assistant);
#   TCPCopy   the same with TCPCopy 1.x's tcpcopy and intercept 1.0, when TCPCOPY and INTERCEPT
#             name their binaries (built outside this repository).
# Per run: the client's rate (req/s; with cloning also against the round's `none` run), the
# production server's CPU seconds during the load (redis-server, or nginx master + workers),
# tcpcopy's CPU seconds (whole process, all threads, from its start of the load until the target
# has received the copies) and its ratio to the server's in the same run (tc/server) and in the
# round's `none` run (tc/alone: the server's own cost for these requests, with nothing else
# running; beside a cloner the server is charged less CPU for the same requests, so tc/server
# reads high), % of production's requests the target answered, tcpcopy's kernel_drops and
# intercept's CPU seconds. Then medians over the rounds.
# Each run's line also gives the part of tcpcopy's CPU spent while the load ran (a cloner that
# falls behind does the rest after the client stopped, when it no longer slows production) and
# the target server's CPU (it shares the same vCPUs: it explains a rate, it is no cost on
# production); neither goes into the table.
#
# Scenarios (SCENARIOS, default all, space- or comma-separated):
#   redis        redis-benchmark -t set,get -n REQUESTS (each; default 40,000) -c 10, full speed,
#                against redis 198.18.10.1:6379, cloned to 198.18.1.2:6380
#   nginx-ka     wrk -t2 -c20 -d DURATION (3 s), keep-alive, a 612-byte file from nginx
#                198.18.10.1:80, cloned to 198.18.1.2:8080
#   nginx-close  the same with "Connection: close" (one connection per request)
#   nginx-post   wrk -t2 -c8: 256 KB POST bodies that nginx reads in full before answering
#   idle         (not in the default set) one redis-cli sending 300 SETs 10 ms apart: an idle
#                service, where what counts is how late each segment reaches the target; prints
#                tcpcopy's capture->engine latency (the send follows in the same wake-up)
#
# Usage: sudo benches/tcpcopy_cost.sh [ROUNDS]        (1..20, default 3)
#   env: SCENARIOS, REQUESTS (1000..2000000), DURATION (1..60 s), TCPCOPY_ARGS (extra flags for
#   our tcpcopy, e.g. "-C 1"), TCPCOPY=/path/tcpcopy INTERCEPT=/path/intercept (TCPCopy 1.x, both
#   or neither), WAIT (1..60 s, default 10: how long the target may take after the load to get
#   the last copies), RESULTS=FILE (keep the per-run table, tab-separated), LOGS=DIR (keep each
#   run's client output and tcpcopy log), NO_BUILD=1 (use target/release/ as it is),
#   OURS=DIR (take our tcpcopy and intercept from DIR instead, e.g. an older build for an A/B),
#   RX_THREADS=1 (the bridge's end of production's link and the client's end receive in their
#   own NAPI kernel threads, so that a send no longer runs the receiving namespace's stack on the
#   sender's CPU: tcpcopy's CPU then leaves out the target's receive path and the server's
#   leaves out the client's, as between separate hosts; needs ethtool),
#   CLIENT_RATE=RATE (in bits, e.g. 10gbit: the client's link to production is shaped to it
#   with a token bucket; over a bare veth an upload runs at memory speed, several GB/s, which
#   no NIC carries), POST_CONNS (2..64, default 8: wrk's connections for nginx-post; it runs 2 threads),
#   LAB_INTERCEPT_ARGS (extra flags for our intercept, e.g. "--capture blocks"),
#   PIN=1 (production as a host of its own: CPU 0 runs the production server, the cloner and
#   production's receive path; CPU 1 runs the client, and the target server and intercept in
#   the idle class, on what the client leaves; nothing else of the machine is moved. The ends
#   production receives on get NAPI threads on CPU 0; the client's end, the bridge's end of
#   production's link and the target's end get them on CPU 1, the target's in the idle class.
#   Production's rate then falls by what the cloner takes from production's own CPU, not by
#   the target's work, which in the default lab shares production's vCPUs as it would not
#   between hosts; needs ethtool, taskset and chrt).
# Bounded: each load has a timeout; the target gets at most WAIT s after each load.
set -euo pipefail

ROUNDS=${1:-3}
REQUESTS=${REQUESTS:-40000}
DURATION=${DURATION:-3}
WAIT=${WAIT:-10}
SCENARIOS=${SCENARIOS:-redis nginx-ka nginx-close nginx-post}
read -ra SCENS <<<"${SCENARIOS//,/ }"
read -ra EXTRA <<<"${TCPCOPY_ARGS:-}"
usage() { echo "usage: $0 [ROUNDS 1..20]; env SCENARIOS (redis nginx-ka nginx-close nginx-post), REQUESTS 1000..2000000, DURATION 1..60, WAIT 1..60, TCPCOPY_ARGS, TCPCOPY+INTERCEPT, RESULTS, LOGS, NO_BUILD, OURS, RX_THREADS, CLIENT_RATE (e.g. 10gbit), POST_CONNS 2..64, LAB_INTERCEPT_ARGS, PIN" >&2; exit 2; }
[[ $ROUNDS =~ ^[0-9]+$ && $REQUESTS =~ ^[0-9]+$ && $DURATION =~ ^[0-9]+$ && $WAIT =~ ^[0-9]+$ ]] || usage
((ROUNDS >= 1 && ROUNDS <= 20 && REQUESTS >= 1000 && REQUESTS <= 2000000 && DURATION >= 1 && DURATION <= 60)) || usage
((WAIT >= 1 && WAIT <= 60)) || usage
[[ ${POST_CONNS:-8} =~ ^[0-9]+$ ]] && ((${POST_CONNS:-8} >= 2 && ${POST_CONNS:-8} <= 64)) || usage
# Bits only: tc reads "bps" as bytes per second.
[[ ${CLIENT_RATE:-1gbit} =~ ^[0-9]+(\.[0-9]+)?[kKmMgGtT]?bit$ ]] || usage
[[ -z ${LOGS:-} ]] || mkdir -p "$LOGS"
((${#SCENS[@]} > 0)) || usage
for s in "${SCENS[@]}"; do [[ $s =~ ^(redis|nginx-ka|nginx-close|nginx-post|idle)$ ]] || usage; done

# TCPCOPY and INTERCEPT name TCPCopy 1.x's binaries; scripts/lab.sh uses these names for pids.
EXT_TCPCOPY=${TCPCOPY:-} EXT_INTERCEPT=${INTERCEPT:-}
unset TCPCOPY INTERCEPT
MODES=(none tcpclone)
if [[ -n $EXT_TCPCOPY || -n $EXT_INTERCEPT ]]; then
    [[ -x $EXT_TCPCOPY && -x $EXT_INTERCEPT ]] || { echo "$0: TCPCOPY and INTERCEPT must both name executables" >&2; exit 2; }
    EXT_TCPCOPY=$(realpath "$EXT_TCPCOPY") EXT_INTERCEPT=$(realpath "$EXT_INTERCEPT")
    MODES+=(TCPCopy)
fi

# shellcheck source=scripts/lab.sh
source "$(dirname "$0")/../scripts/lab.sh"
[[ -z ${PIN:-} ]] || (($(nproc) >= 2)) || { echo "$0: PIN=1 needs 2 CPUs" >&2; exit 2; }
lab_init k redis-server redis-benchmark redis-cli nginx wrk ss pgrep cargo ${RX_THREADS:+ethtool} ${CLIENT_RATE:+tc} ${PIN:+ethtool taskset chrt}
lab_our_bins -p tcpcopy -p intercept
lab_clone_topology
# tcpcopy's sends (production -> bridge) and the server's answers (production -> client).
RX_ENDS=("$NS_BR:${TAG}pb:$NS_PROD:${TAG}pa" "$NS_CLIENT:${TAG}ca:$NS_PROD:${TAG}cb")
if [[ -n ${RX_THREADS:-} ]]; then
    lab_rx_threads "${RX_ENDS[@]}"
    echo "== RX_THREADS: each veth end receives in its own kernel thread (no receiver's stack on the sender's CPU)"
fi
# PIN=1: which CPU runs what (see the header). The client's commands start with CLIENT_PIN
# (empty without PIN).
CLIENT_PIN=()
if [[ -n ${PIN:-} ]]; then
    # RX_THREADS' two ends, and also the ends production receives on (from the client, and
    # intercept's reports from the bridge), so that production's receive path and the
    # capture's copy into the ring run on production's CPU, not inside the client's or
    # intercept's send; and the target's end, whose receive path runs in the idle class with
    # the target.
    lab_rx_threads "${RX_ENDS[@]}" "$NS_PROD:${TAG}cb:$NS_CLIENT:${TAG}ca" \
        "$NS_PROD:${TAG}pa:$NS_BR:${TAG}pb" "$NS_TARGET:${TAG}ta:$NS_BR:${TAG}tb"
    CLIENT_PIN=(taskset -c 1)
    pin_napi() { # DEV CPU [idle]: the NAPI threads of DEV ("napi/DEV-ID", cut to 15 characters)
        local t c n=0
        for t in /proc/[0-9]*; do
            read -r c <"$t/comm" 2>/dev/null || continue
            [[ $c == "napi/$1"* ]] || continue
            taskset -p -c "$2" "${t#/proc/}" >/dev/null && n=$((n + 1))
            [[ -z ${3:-} ]] || chrt -i -p 0 "${t#/proc/}"
        done
        ((n > 0)) || { echo "$LAB_NAME: no NAPI thread of $1 to pin" >&2; exit 1; }
    }
    pin_napi "${TAG}cb" 0
    pin_napi "${TAG}pa" 0
    pin_napi "${TAG}ca" 1
    pin_napi "${TAG}pb" 1
    pin_napi "${TAG}ta" 1 idle
    echo "== PIN: CPU 0 runs production (server, cloner, its receive path); CPU 1 the client, and the target and intercept in the idle class"
fi
pin_prod() { # PID...: production's CPU (all their threads); nothing without PIN
    local p
    [[ -n ${PIN:-} ]] || return 0
    for p in "$@"; do taskset -a -p -c 0 "$p" >/dev/null; done
}
pin_other() { # PID...: the target's side, CPU 1 in the idle class; nothing without PIN
    local p
    [[ -n ${PIN:-} ]] || return 0
    for p in "$@"; do taskset -a -p -c 1 "$p" >/dev/null; chrt -a -i -p 0 "$p"; done
}
# One client address opening ~30,000 connections a second (nginx-close) holds every even
# ephemeral port in TIME_WAIT within a second or two; connect() then scans them all on every
# call (ms each) and the client, not the server, sets the rate. Let the load generator reuse
# them, as busy clients do; production, target and cloners are left as they are.
inns "$NS_CLIENT" sysctl -qw net.ipv4.ip_local_port_range="1024 65535" net.ipv4.tcp_tw_reuse=1
if [[ -n ${CLIENT_RATE:-} ]]; then
    # The burst holds a few 64 KB GSO frames; the queue 50 ms.
    inns "$NS_CLIENT" tc qdisc add dev "${TAG}ca" root tbf rate "$CLIENT_RATE" burst 1mb latency 50ms
    echo "== CLIENT_RATE: the client's link to production carries at most $CLIENT_RATE"
fi
RESULTS_TSV=$WORK/results.tsv
: >"$RESULTS_TSV"

need_redis=0 need_nginx=0
for s in "${SCENS[@]}"; do if [[ $s == redis || $s == idle ]]; then need_redis=1; else need_nginx=1; fi; done
if ((need_redis)); then
    redis "$NS_PROD" 0.0.0.0 6379
    REDIS_PROD=$LAB_PID
    redis "$NS_TARGET" 0.0.0.0 6380
    REDIS_TARGET=$LAB_PID
    pin_prod "$REDIS_PROD"
    pin_other "$REDIS_TARGET"
fi
if ((need_nginx)); then
    lab_nginx "$NS_PROD" 198.18.10.1 80 prod
    lab_nginx "$NS_TARGET" 198.18.1.2 8080 target
    mapfile -t NGINX_PROD < <(lab_nginx_pids prod)
    mapfile -t NGINX_TARGET < <(lab_nginx_pids target)
    pin_prod "${NGINX_PROD[@]}"
    pin_other "${NGINX_TARGET[@]}"
    head -c 262144 /dev/zero | tr '\0' x >"$WORK/body"
    cat >"$WORK/post.lua" <<EOF
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/octet-stream"
local f = io.open("$WORK/body", "rb")
wrk.body = f:read("*a")
f:close()
EOF
fi

# Per scenario: ports, the production server's pids, request counters and the load.
scenario() {
    SCEN=$1
    case $SCEN in
        redis | idle) PORT=6379 TPORT=6380 SERVER=("$REDIS_PROD") TSERVER=("$REDIS_TARGET") ;;
        *) PORT=80 TPORT=8080 SERVER=("${NGINX_PROD[@]}") TSERVER=("${NGINX_TARGET[@]}") MINLEN=0 ;;
    esac
    [[ $SCEN != nginx-post ]] || MINLEN=262144
}
prod_count() { if [[ $SCEN == redis || $SCEN == idle ]]; then redis_setget "$NS_PROD" 6379; else lab_nginx_ok prod "$MINLEN"; fi; }
target_count() { if [[ $SCEN == redis || $SCEN == idle ]]; then redis_setget "$NS_TARGET" 6380; else lab_nginx_ok target "$MINLEN"; fi; }
load() { # -> requests per second; the client's output in $1
    case $SCEN in
        redis)
            inns "$NS_CLIENT" "${CLIENT_PIN[@]}" timeout 300 redis-benchmark -h 198.18.10.1 -p 6379 -n "$REQUESTS" -c 10 -t set,get -q >"$1" 2>&1
            # The overall rate of SET + GET: the harmonic mean of the two.
            tr '\r' '\n' <"$1" | awk '/requests per second/ { for (i = 1; i <= NF; i++) if ($i ~ /^[0-9.]+$/) { s += 1 / $i; n++; break } }
                END { printf "%.0f", s ? n / s : 0 }' ;;
        idle)
            local t0 t1
            t0=$(date +%s%N)
            inns "$NS_CLIENT" "${CLIENT_PIN[@]}" timeout 60 redis-cli -h 198.18.10.1 -p 6379 -r 300 -i 0.01 SET idle v >"$1" 2>&1
            t1=$(date +%s%N)
            awk -v t="$((t1 - t0))" 'BEGIN { printf "%.0f", t ? 300 / (t / 1e9) : 0 }' ;;
        nginx-ka) wrk_run "$1" -t2 -c20 http://198.18.10.1/ ;;
        nginx-close) wrk_run "$1" -t2 -c20 -H "Connection: close" http://198.18.10.1/ ;;
        nginx-post) wrk_run "$1" -t2 -c${POST_CONNS:-8} -s "$WORK/post.lua" http://198.18.10.1/upload ;;
    esac
}
wrk_run() {
    local out=$1
    shift
    inns "$NS_CLIENT" "${CLIENT_PIN[@]}" timeout $((DURATION + 30)) wrk -d "${DURATION}s" "$@" >"$out" 2>&1
    awk '/^Requests\/sec:/ { printf "%.0f", $2 }' "$out"
}

# The cloners: start_cloner sets CLONER and ICPT (pids) and LOG; stop_cloner stops both.
start_cloner() {
    local port=$1 tport=$2
    case $MODE in
        tcpclone)
            lab_intercept "tcp and src port $tport"
            ICPT=$INTERCEPT
            lab_tcpcopy -x "$port-198.18.1.2:$tport" -s 198.18.1.3 "${EXTRA[@]}"
            CLONER=$TCPCOPY LOG=$WORK/tcpcopy.log ;;
        TCPCopy)
            lab_bg ip netns exec "$NS_ASSIST" "$EXT_INTERCEPT" -i "${TAG}sa" -F "tcp and src port $tport" -b 198.18.1.3 \
                -l "$WORK/intercept1.log" >"$WORK/intercept1.out" 2>&1
            ICPT=$LAB_PID
            wait_for "intercept 1.0 listening" inns "$NS_ASSIST" ss -Hltn 'sport = :36524'
            LOG=$WORK/tcpcopy1.log
            : >"$LOG"
            lab_bg ip netns exec "$NS_PROD" "$EXT_TCPCOPY" -x "$port-198.18.1.2:$tport" -s 198.18.1.3 -l "$LOG" \
                >"$WORK/tcpcopy1.out" 2>&1
            CLONER=$LAB_PID
            wait_for "TCPCopy's tcpcopy connected" inns "$NS_PROD" ss -Htn state established 'dport = :36524'
            sleep 0.3 ;;
    esac
    pin_prod "$CLONER"
    pin_other "$ICPT"
}
wait_for() { # WHAT CMD...: up to 10 s for CMD to print something
    local what=$1
    shift
    for _ in $(seq 100); do [[ -n $("$@") ]] && return; sleep 0.1; done
    echo "$LAB_NAME: timed out waiting for $what" >&2
    exit 1
}
stop_cloner() {
    kill -INT "$CLONER" 2>/dev/null || true
    for _ in $(seq 30); do kill -0 "$CLONER" 2>/dev/null || break; sleep 0.1; done
    lab_stop "$CLONER"
    lab_stop "$ICPT"
}
alive() {
    kill -0 "$1" 2>/dev/null && return
    tail -20 "$LOG" >&2
    echo "$LAB_NAME: $2 exited during the $SCEN run" >&2
    exit 1
}
secs() { awk -v t="$1" -v k="$LAB_TCK" 'BEGIN { printf "%.2f", t / k }'; }

run() { # SCENARIO MODE ROUND -> one row of results.tsv
    local round=$3 out p0 g0 s0 s1 t0 t1 tm i0 i1 im g1 gm ts0 rate want got last stable drops c0 c1 x0 x1
    MODE=$2
    out=$WORK/$SCEN-$MODE-$round.out
    [[ $MODE == none ]] || start_cloner "$PORT" "$TPORT"
    p0=$(prod_count) g0=$(target_count)
    s0=$(lab_cpu "${SERVER[@]}") x0=$(lab_ctx "${SERVER[@]}")
    if [[ $MODE != none ]]; then t0=$(lab_cpu "$CLONER") i0=$(lab_cpu "$ICPT") ts0=$(lab_cpu "${TSERVER[@]}") c0=$(lab_ctx "$CLONER"); fi
    rate=$(load "$out")
    [[ -z ${LOGS:-} ]] || cp "$out" "$LOGS/$SCEN-$MODE-$round.client"
    s1=$(lab_cpu "${SERVER[@]}") x1=$(lab_ctx "${SERVER[@]}")
    # The server's context switches while the load ran: "sleeps/preemptions".
    x1="$((${x1% *} - ${x0% *}))/$((${x1#* } - ${x0#* }))"
    [[ $MODE == none ]] || tm=$(lab_cpu "$CLONER") c1=$(lab_ctx "$CLONER") im=$(lab_cpu "$ICPT") gm=$(lab_cpu "${TSERVER[@]}")
    want=$(($(prod_count) - p0))
    if [[ $MODE == none ]]; then
        printf '%s\t%s\t%s\t%s\t%s\t-\t-\t-\t-\n' "$SCEN" "$MODE" "$round" "$rate" "$(secs $((s1 - s0)))" >>"$RESULTS_TSV"
        printf '%-11s r%-2s %-8s %7s req/s           server %5ss  (%d requests)  server switches %s\n' "$SCEN" "$round" "$MODE" "$rate" "$(secs $((s1 - s0)))" "$want" "$x1"
        return
    fi
    # At most WAIT s for the last copies to land; done early once the target's count stops moving
    # for 3 s (requests cut off when the client stopped may never complete on either side).
    last=-1 stable=0
    for _ in $(seq $((WAIT * 10))); do
        got=$(($(target_count) - g0))
        ((got < want)) || break
        if ((got == last)); then ((++stable < 30)) || break; else stable=0 last=$got; fi
        sleep 0.1
    done
    alive "$CLONER" tcpcopy
    t1=$(lab_cpu "$CLONER") i1=$(lab_cpu "$ICPT") g1=$(($(lab_cpu "${TSERVER[@]}") - ts0))
    got=$(($(target_count) - g0))
    stop_cloner
    [[ -z ${LOGS:-} ]] || cp "$LOG" "$LOGS/$SCEN-$MODE-$round.log"
    drops=$(grep -o 'kernel_drops=[0-9]*' "$LOG" | tail -1 | cut -d= -f2 || true)
    [[ $MODE == tcpclone ]] || drops=- # TCPCopy 1.x captures with a raw socket: no such counter
    if [[ $SCEN == idle && $MODE == tcpclone ]]; then
        echo "idle        r$round  $(grep -o 'capture->engine latency_us: .*' "$LOG" | tail -1)"
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$SCEN" "$MODE" "$round" "$rate" "$(secs $((s1 - s0)))" \
        "$(secs $((t1 - t0)))" "$(awk -v g="$got" -v w="$want" 'BEGIN { printf "%.2f", w ? 100 * g / w : 0 }')" \
        "${drops:-?}" "$(secs $((i1 - i0)))" >>"$RESULTS_TSV"
    # The target server's CPU (its share of the two vCPUs, which the client and production
    # lose) is printed per run only: it explains a rate, it is no cost on production.
    # Context switches while the load ran, "sleeps/preemptions": tcpcopy's wake-ups, and how often
    # production's server slept or was preempted.
    c1="$((${c1% *} - ${c0% *}))/$((${c1#* } - ${c0#* }))"
    # The target's and intercept's CPU while the load ran: how much of the clones' work competed
    # with production for the vCPUs, and how much a cloner that lags put off until after.
    awk -F'\t' -v n="$want" -v tg="$(secs "$g1")" -v tm="$(secs $((tm - t0)))" -v cs="$c1" -v xs="$x1" \
        -v gm="$(secs $((gm - ts0)))" -v im="$(secs $((im - i0)))" 'END { r = $5 > 0 ? $6 / $5 : 0
        printf "%-11s r%-2s %-8s %7s req/s           server %5ss  tcpcopy %5ss (%.2fx server; %ss while the load ran)  delivered %s %% of %d  kernel_drops %s  intercept %ss (%ss while the load ran)  target server %ss (%ss while the load ran)  switches tcpcopy %s server %s\n",
            $1, $3, $2, $4, $5, $6, r, tm, $7, n, $8, $9, im, tg, gm, cs, xs }' "$RESULTS_TSV"
}

# Everything here shares the machine's CPUs: anything else running skews every figure.
busy() { # % of the CPUs busy over 1 s, by /proc/stat
    local a b
    a=$(head -1 /proc/stat) && sleep 1 && b=$(head -1 /proc/stat)
    awk -v a="$a" -v b="$b" 'BEGIN { n = split(a, x, " "); split(b, y, " ")
        for (i = 2; i <= n; i++) { d = y[i] - x[i]; t += d; if (i == 5 || i == 6) idle += d }
        printf "%.0f", t ? 100 * (t - idle) / t : 0 }'
}
cpu_busy=$(busy)
((cpu_busy < 10)) || echo "$LAB_NAME: warning: the CPUs were ${cpu_busy}% busy before the first run: other work on this machine skews these figures" >&2
echo "== $ROUNDS round(s) of: ${SCENS[*]}; modes: ${MODES[*]}${EXTRA[*]:+ (our tcpcopy with ${EXTRA[*]})}"
for scen in "${SCENS[@]}"; do
    scenario "$scen"
    for ((r = 1; r <= ROUNDS; r++)); do
        n=${#MODES[@]}
        for ((k = 0; k < n; k++)); do run "$scen" "${MODES[$(((k + r - 1) % n))]}" "$r"; done
    done
done

# Medians over the rounds. Columns of results.tsv: scenario mode round rate server_cpu
# tcpcopy_cpu delivered_pct kernel_drops intercept_cpu; the client's rate and tcpcopy/server are
# taken per round (against that round's `none` run) before the median.
[[ -z ${RESULTS:-} ]] || cp "$RESULTS_TSV" "$RESULTS"
echo
echo "== medians over $ROUNDS round(s) (rate vs none: the client's req/s with cloning / without, same round)"
awk -F'\t' '
    function med(key,   n, i, j, t, a) {
        n = split(vals[key], a, " ")
        if (n == 0) return "-"
        for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j - 1] + 0 > a[j] + 0; j--) { t = a[j]; a[j] = a[j - 1]; a[j - 1] = t }
        return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    function add(key, v) { if (v != "-" && v != "?" && v != "") vals[key] = vals[key] (vals[key] == "" ? "" : " ") v }
    { rows[NR] = $0; if ($2 == "none") { base[$1, $3] = $4; alone[$1, $3] = $5 }
      if (!($1 in seen)) { seen[$1] = 1; order[++ns] = $1 }
      if (!(($1, $2) in mseen)) { mseen[$1, $2] = 1; modes[$1] = modes[$1] " " $2 } }
    END {
        for (i = 1; i <= NR; i++) {
            split(rows[i], f, "\t"); k = f[1] SUBSEP f[2]
            add(k SUBSEP "rate", f[4]); add(k SUBSEP "srv", f[5]); add(k SUBSEP "tc", f[6])
            add(k SUBSEP "del", f[7]); add(k SUBSEP "drops", f[8]); add(k SUBSEP "ic", f[9])
            if (f[2] != "none" && base[f[1], f[3]] > 0) add(k SUBSEP "rel", f[4] / base[f[1], f[3]])
            if (f[2] != "none" && f[5] > 0) add(k SUBSEP "ratio", f[6] / f[5])
            if (f[2] != "none" && alone[f[1], f[3]] > 0) add(k SUBSEP "alone", f[6] / alone[f[1], f[3]])
        }
        printf "%-11s %-8s %8s %8s %9s %10s %9s %8s %10s %7s %11s\n", "scenario", "mode", "req/s", "vs none", "server s", "tcpcopy s", "tc/server", "tc/alone", "delivered", "drops", "intercept s"
        for (s = 1; s <= ns; s++) {
            sc = order[s]; nm = split(modes[sc], ms, " ")
            for (m = 1; m <= nm; m++) {
                k = sc SUBSEP ms[m]
                rel = med(k SUBSEP "rel"); ratio = med(k SUBSEP "ratio"); tc = med(k SUBSEP "tc")
                del = med(k SUBSEP "del"); ic = med(k SUBSEP "ic")
                rel = rel == "-" ? "-" : sprintf("%.3fx", rel); ratio = ratio == "-" ? "-" : sprintf("%.2fx", ratio)
                al = med(k SUBSEP "alone"); al = al == "-" ? "-" : sprintf("%.2fx", al)
                tc = tc == "-" ? "-" : sprintf("%.2f", tc); del = del == "-" ? "-" : sprintf("%.2f%%", del)
                ic = ic == "-" ? "-" : sprintf("%.2f", ic)
                printf "%-11s %-8s %8.0f %8s %9.2f %10s %9s %8s %10s %7s %11s\n", sc, ms[m], med(k SUBSEP "rate"),
                    rel, med(k SUBSEP "srv"), tc, ratio, al, del, med(k SUBSEP "drops"), ic
                md = md sprintf("| %s | %s | %.0f | %s | %.2f | %s | %s | %s | %s | %s | %s |\n", sc, ms[m],
                    med(k SUBSEP "rate"), rel, med(k SUBSEP "srv"), tc, ratio, al, del, med(k SUBSEP "drops"), ic)
            }
            o = sc SUBSEP "tcpclone"; t = sc SUBSEP "TCPCopy"
            if (vals[t SUBSEP "tc"] != "" && vals[o SUBSEP "tc"] != "") {
                a = med(o SUBSEP "ratio"); b = med(t SUBSEP "ratio"); c = med(o SUBSEP "rel"); d = med(t SUBSEP "rel")
                x = med(t SUBSEP "tc"); x = x > 0 ? sprintf("%.2fx", med(o SUBSEP "tc") / x) : "-"
                a = (a != "-" && b > 0) ? sprintf("%.2fx", a / b) : "-"
                c = (c != "-" && d > 0) ? sprintf("%.3fx", c / d) : "-"
                printf "%-11s tcpclone vs TCPCopy: tcpcopy CPU %s (per server CPU %s), client rate %s, delivered %s%% vs %s%%\n",
                    sc, x, a, c, med(o SUBSEP "del"), med(t SUBSEP "del")
            }
        }
        # The same medians as docs/benchmarks.md takes them.
        printf "\n== markdown for docs/benchmarks.md:\n\n## tcpcopy: what cloning costs production, %s (`%s`)\n\n`%s`\n\n", date, commit, cmd
        print "| scenario | mode | req/s | vs none | server s | tcpcopy s | tc/server | tc/alone | delivered | drops | intercept s |"
        print "|---|---|---|---|---|---|---|---|---|---|---|"
        printf "%s", md
    }' date="$(date -u +%Y-%m-%d)" commit="$(git -C "$(dirname "$0")/.." rev-parse --short HEAD 2>/dev/null || echo unknown)" \
    cmd="${PIN:+PIN=1 }${RX_THREADS:+RX_THREADS=1 }${CLIENT_RATE:+CLIENT_RATE=$CLIENT_RATE }${POST_CONNS:+POST_CONNS=$POST_CONNS }${LAB_INTERCEPT_ARGS:+LAB_INTERCEPT_ARGS=\"$LAB_INTERCEPT_ARGS\" }${TCPCOPY_ARGS:+TCPCOPY_ARGS=\"$TCPCOPY_ARGS\" }bash benches/tcpcopy_cost.sh $ROUNDS" "$RESULTS_TSV"
