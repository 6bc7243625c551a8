#!/usr/bin/env bash
# tcpcopy --workers N against --workers 1, with tcpcopy alone the bottleneck (issue 10): the
# segments cloned per second while the workers drain a capture ring that a burst of many short
# sessions filled while tcpcopy was stopped. Not a timed test; run as root.
#
#   1. The lab of benches/tcpcopy_cost.sh (client -> production -> target, intercept on the
#      assistant). The target is a listener that never accepts (the kernel answers the
#      handshakes and acknowledges the data into its accept queue, no process works), so
#      between tcpcopy and the target only the kernel and intercept run.
#   2. A capture of SESSIONS sessions of REQUESTS small requests each (SYN, ACK, requests,
#      FIN) is written once.
#   3. Per run: tcpcopy (-W: requests are not held for answers that never come) is stopped
#      with SIGSTOP, the capture is replayed at top speed into production's interface (the
#      kernel fills tcpcopy's rings; production has no listener, its resets are not captured),
#      tcpcopy is continued with SIGCONT, and the drain lasts until its CPU time stops growing
#      (sampled every 10 ms). Segments cloned per second = the client segments tcpcopy took from its rings
#      (its summary's `segments in`) over that time, provided their payload was all cloned
#      (`cloned %`: payload bytes sent over captured). `tcpcopy s`: its CPU time in the drain,
#      all threads (a worker that keeps a CPU busy uses as many seconds as the drain lasts);
#      `per worker s`: each worker thread's over the whole run (its summary). It sends fewer packets (`sent pkts`):
#      a session's requests, all there at once, leave in a few segments.
#   4. One drain with WORKERS first, not counted (warm-up: the first drain after the lab is
#      built is the slowest, whatever its workers: the kernel grows its caches for the target's
#      tens of thousands of sockets, `allocate_slab` inside tcpcopy's sends). Then the runs
#      alternate, 1 worker and WORKERS in odd rounds, WORKERS and 1 in even ones, so that
#      neither mode always follows the other; printed: each run, the medians and their ratio.
#
# On a veth a send runs the receiving namespace's stack on the sender's CPU: the target's
# kernel work (handshakes, acknowledgements) is counted in tcpcopy's workers, in both modes.
# Intercept shares the host's CPUs and reports every handshake and acknowledgement; on a
# machine with as many CPUs as workers it can be the limit (its CPU time is printed). With 2
# workers on 2 CPUs the scheduler tends to leave intercept on one worker's CPU for the whole
# drain: that worker gets less of it and ends later, the other's CPU idles meanwhile (`per
# worker s` shows the split; `perf sched timehist` the tail).
#
# Usage: benches/tcpcopy_workers.sh [ROUNDS (default 3)]
#   env SESSIONS (default 20000), REQUESTS (per session, default 20), WORKERS (default 2),
#   RX_THREADS=1 (the target's receive path in a NAPI kernel thread instead of inside the
#   workers' sends, as with the target on another host; needs ethtool: `tcpcopy s` then leaves
#   that path out, but the link has one queue, so its one thread, not tcpcopy, sets the
#   drain's pace and the ratio says nothing about the workers),
#   NO_BUILD=1 (take target/release as it is), OURS=DIR (tcpcopy and intercept from DIR),
#   KEEP=DIR (keep each run's tcpcopy log there), RING_MB (tcpcopy's -B, the same in every run,
#   default 1024: split among the workers, each worker's share must hold its share of the
#   burst while tcpcopy is stopped; a run whose ring overflowed, dropping more than 0.1 % of
#   the segments, is marked and left out of the medians), BLOCK_MS (tcpcopy's --capture-block,
#   default 50: the kernel retires a ring block at least this often however little it holds,
#   so while tcpcopy is stopped the ring holds at most its ~4,096 blocks times BLOCK_MS of the
#   burst; at the default 1 ms a burst injected for longer than about 4 s overflowed a ring that
#   was mostly empty. The drain reads full blocks whatever the timeout).
set -euo pipefail
ROUNDS=${1:-3}
SESSIONS=${SESSIONS:-20000}
REQUESTS=${REQUESTS:-20}
WORKERS=${WORKERS:-2}
RING_MB=${RING_MB:-1024}
BLOCK_MS=${BLOCK_MS:-50}
[[ $ROUNDS =~ ^[0-9]+$ ]] && ((ROUNDS >= 1 && ROUNDS <= 20)) || { echo "usage: $0 [ROUNDS 1..20]" >&2; exit 2; }
[[ $SESSIONS =~ ^[0-9]+$ ]] && ((SESSIONS >= 5000 && SESSIONS <= 60000)) || { echo "$0: SESSIONS must be 5000..60000 (a shorter drain is too short to time in clock ticks)" >&2; exit 2; }
[[ $REQUESTS =~ ^[0-9]+$ ]] && ((REQUESTS >= 1 && REQUESTS <= 200)) || { echo "$0: REQUESTS must be 1..200" >&2; exit 2; }
[[ $WORKERS =~ ^[0-9]+$ ]] && ((WORKERS >= 2 && WORKERS <= 64)) || { echo "$0: WORKERS must be 2..64" >&2; exit 2; }
[[ $RING_MB =~ ^[0-9]+$ ]] && ((RING_MB >= 64 && RING_MB <= 4096)) || { echo "$0: RING_MB must be 64..4096" >&2; exit 2; }
[[ $BLOCK_MS =~ ^[0-9]+$ ]] && ((BLOCK_MS >= 1 && BLOCK_MS <= 1000)) || { echo "$0: BLOCK_MS must be 1..1000" >&2; exit 2; }

# shellcheck source=../scripts/lab.sh
source "$(dirname "$0")/../scripts/lab.sh"
# shellcheck source=md_table.sh
source "$(dirname "$0")/md_table.sh"
lab_init tw python3 ss ${RX_THREADS:+ethtool}
lab_our_bins -p tcpcopy -p intercept -p replay
REPLAY=$LAB_ROOT/target/release/replay
[[ -x $REPLAY ]] || (cd "$LAB_ROOT" && cargo build --release -q -p replay)
cp "$REPLAY" "$BIN/"

lab_clone_topology
if [[ -n ${RX_THREADS:-} ]]; then
    # The bridge's end of production's link receives in its own NAPI kernel thread: the
    # target's receive path (handshakes, sockets, acknowledgements) leaves the workers' sends,
    # as it would with the target on another host.
    lab_rx_threads "$NS_BR:${TAG}pb:$NS_PROD:${TAG}pa"
    echo "== RX_THREADS: the target's receive path runs in a NAPI thread, not in tcpcopy's sends"
fi
# The target: a listener that never accepts, with room in its queues for every session; a new
# one per run, so that no run meets the connections the last one left in its queue.
inns "$NS_TARGET" sysctl -qw net.core.somaxconn=65535 net.ipv4.tcp_max_syn_backlog=65535
start_target() {
    lab_bg ip netns exec "$NS_TARGET" python3 -c '
import socket, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("198.18.1.2", 6380))
s.listen(65535)
time.sleep(600)
'
    TARGET=$LAB_PID
    for _ in $(seq 50); do inns "$NS_TARGET" ss -Hltn 'sport = :6380' | grep -q LISTEN && return; sleep 0.1; done
    echo "$0: the target did not listen" >&2
    exit 1
}
# Production knows the target's MAC, as a host that talks to it does: without an entry the
# first burst would go out through the kernel's neighbour queue, which keeps ~100 packets
# while it resolves and drops the rest.
TARGET_MAC=$(inns "$NS_TARGET" cat "/sys/class/net/${TAG}ta/address")
inns "$NS_PROD" ip neigh replace 198.18.1.2 lladdr "$TARGET_MAC" dev "${TAG}pa" nud permanent

# The capture: Ethernet to production's client-side MAC, from the client's.
SRC_MAC=$(inns "$NS_CLIENT" cat "/sys/class/net/${TAG}ca/address")
DST_MAC=$(inns "$NS_PROD" cat "/sys/class/net/${TAG}cb/address")
python3 - "$WORK/burst.pcap" "$SESSIONS" "$REQUESTS" "$SRC_MAC" "$DST_MAC" <<'PY'
import struct, sys
out, sessions, requests = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
src_mac, dst_mac = (bytes.fromhex(m.replace(":", "")) for m in sys.argv[4:6])
CLIENT, SERVER = bytes([198, 18, 10, 2]), bytes([198, 18, 10, 1])
def csum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF
def frame(sport, seq, ack, flags, payload=b"", opts=b""):
    off = (20 + len(opts)) // 4
    tcp = struct.pack("!HHIIBBHHH", sport, 6379, seq, ack, off << 4, flags, 65535, 0, 0) + opts + payload
    c = csum(CLIENT + SERVER + struct.pack("!BBH", 0, 6, len(tcp)) + tcp)
    tcp = tcp[:16] + struct.pack("!H", c) + tcp[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0x4000, 64, 6, 0, CLIENT, SERVER)
    ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
    return dst_mac + src_mac + b"\x08\x00" + ip + tcp
SYN, ACK, PSH, FIN = 0x02, 0x10, 0x08, 0x01
with open(out, "wb") as f:
    f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
    t = 0
    def put(fr):
        global t
        t += 1
        f.write(struct.pack("<IIII", t // 1000000, t % 1000000, len(fr), len(fr)) + fr)
    for i in range(sessions):
        sport = 1024 + i
        isn, peer = 1000 + i * 7919, 5000
        put(frame(sport, isn, 0, SYN, opts=struct.pack("!BBH", 2, 4, 1460)))
        put(frame(sport, isn + 1, peer + 1, ACK))
        seq = isn + 1
        for r in range(requests):
            body = b"*3\r\n$3\r\nSET\r\n$8\r\nk%07d\r\n$16\r\nv%015d\r\n" % (r, i)
            put(frame(sport, seq, peer + 1, PSH | ACK, body))
            seq += len(body)
        put(frame(sport, seq, peer + 1, FIN | ACK))
PY
PACKETS=$((SESSIONS * (REQUESTS + 3)))
echo "== $SESSIONS sessions of $REQUESTS requests ($PACKETS packets), drained by tcpcopy --workers 1 and --workers $WORKERS, $ROUNDS round(s)"

# Both set a variable rather than print: $(...) would fork, and the drain is timed by looking
# every 10 ms.
now_ns() { NOW=${EPOCHREALTIME/./}000; }
cpu_of() { # PID -> TICKS: utime + stime of the whole process, in clock ticks
    # The process's own stat line already sums every thread, live and ended: one read per
    # look. Reading each thread's line instead took a read per thread every 10 ms,
    # from the CPUs the workers it times run on (more with more threads).
    local f
    local -a a
    TICKS=0
    read -r f <"/proc/$1/stat" 2>/dev/null || return 0
    f=${f##*) }
    set -f
    # shellcheck disable=SC2206 # the fields after the command name: numbers and a state letter
    a=($f)
    set +f
    TICKS=$((a[11] + a[12]))
}

run() { # WORKERS -> "rate segments seconds intercept_ticks"
    local w=$1 t0 t_last c c_last now quiet i0 sent
    # All three anew: intercept would keep the last run's sessions, which the same capture
    # opens again, reserved for the tcpcopy that ran them for its grace period.
    start_target
    lab_intercept "tcp and src port 6380"
    ICPT=$INTERCEPT
    lab_tcpcopy -x 6379-198.18.1.2:6380 -s 198.18.1.3 -W --workers "$w" -B "$RING_MB" --capture-block "$BLOCK_MS" -m $((RING_MB + 1024))
    kill -STOP "$TCPCOPY"
    inns "$NS_CLIENT" "$BIN/replay" -i "${TAG}ca" --topspeed "$WORK/burst.pcap" >"$WORK/replay.out" 2>&1
    sleep 0.2
    cpu_of "$ICPT"; i0=$TICKS
    cpu_of "$TCPCOPY"; c_last=$TICKS
    kill -CONT "$TCPCOPY"
    now_ns; t0=$NOW
    t_last=$t0
    # Until it has used less than 3 clock ticks in 300 ms (its timers run once a second, the
    # drain keeps a CPU busy), at most 60 s; the drain ended at the last 30 ms in which it
    # used 2 ticks or more.
    local -a ts cs
    local c_last_busy=$c_last
    ts=("$t0") cs=("$c_last")
    # Without a fork per look (no `sleep`, no `date`): the looking must not take the CPU it
    # measures.
    local tick
    exec {tick}<> <(:)
    while :; do
        read -rt 0.01 -u "$tick" _ || true
        cpu_of "$TCPCOPY"; c=$TICKS
        now_ns; now=$NOW
        ts+=("$now") cs+=("$c")
        local n=${#ts[@]}
        if ((n > 3 && c - cs[n - 4] >= 2)); then t_last=$now c_last_busy=$c; fi
        if ((n > 30 && c - cs[n - 31] < 3)); then break; fi
        ((now - t0 < 60000000000)) || { echo "$0: tcpcopy still busy after 60 s" >&2; break; }
    done
    exec {tick}>&-
    cpu_of "$ICPT"; i1=$TICKS
    local used=$((c_last_busy - cs[0]))
    lab_stop_tcpcopy
    lab_stop "$ICPT"
    lab_stop "$TARGET"
    [[ -z ${KEEP:-} ]] || { mkdir -p "$KEEP"; cp "$WORK/tcpcopy.log" "$KEEP/tcpcopy-w$w-$(date +%s%N).log"; }
    # The summary's engine line (all workers): segments captured, packets sent, payload bytes
    # captured and cloned.
    local eng segs sent cap cloned drops
    eng=$(grep -m1 '^  engine:' "$WORK/tcpcopy.log" || true)
    segs=$(grep -o 'segments in=[0-9]*' <<<"$eng" | cut -d= -f2)
    sent=$(grep -o ' sent=[0-9]*' <<<"$eng" | head -1 | cut -d= -f2)
    cap=$(grep -o 'bytes captured=[0-9]*' <<<"$eng" | cut -d= -f2)
    cloned=$(grep -o 'bytes captured=[0-9]* sent=[0-9]*' <<<"$eng" | sed 's/.*sent=//')
    drops=$(grep -o ' kernel_drops=[0-9]*' "$WORK/tcpcopy.log" | head -1 | cut -d= -f2)
    # Each worker's CPU time over the run (the summary's `cpu per worker:`), e.g. 0.44/0.31: a
    # worker that shared its CPU with intercept for the drain used less, and ended later. One
    # worker: no such line, "-".
    pw=$({ grep -o 'cpu per worker: [0-9. s]*' "$WORK/tcpcopy.log" || true; } | head -1 | sed 's/cpu per worker: //; s/s / /g; s/s$//' |
        awk '{ for (i = 1; i <= NF; i++) printf "%s%.2f", (i > 1 ? "/" : ""), $i }')
    ((t_last > t0)) || echo "$0: the drain was too short to time; give more SESSIONS" >&2
    awk -v g="${segs:-0}" -v s="${sent:-0}" -v c="${cap:-0}" -v b="${cloned:-0}" -v ns="$((t_last - t0))" \
        -v i="$((i1 - i0))" -v d="${drops:-?}" -v tck="$LAB_TCK" -v u="$used" -v pw="${pw:--}" \
        'BEGIN { printf "%.0f %d %d %.3f %.2f %s %.2f %.2f %s\n", ns ? g / (ns / 1e9) : 0, g, s, ns / 1e9, u / tck, pw, c ? 100 * b / c : 0, i / tck, d }'
}

declare -A RATES
printf '%-6s %-7s %12s %10s %10s %8s %10s %12s %9s %11s %12s\n' round workers "segments/s" segments "sent pkts" "drain s" "tcpcopy s" "per worker s" "cloned %" "intercept s" kernel_drops
md_begin "tcpcopy --workers $WORKERS against 1, a drained burst" \
    "${RX_THREADS:+RX_THREADS=1 }SESSIONS=$SESSIONS REQUESTS=$REQUESTS WORKERS=$WORKERS RING_MB=$RING_MB BLOCK_MS=$BLOCK_MS bash benches/tcpcopy_workers.sh $ROUNDS"
md_cols round workers "segments/s" segments "sent pkts" "drain s" "tcpcopy CPU s" "per worker CPU s" "cloned %" "intercept CPU s" "kernel drops"
read -r rate _ _ secs _ < <(run "$WORKERS")
echo "(warm-up, $WORKERS workers, not counted: $rate segments/s, drain $secs s)"
for r in $(seq "$ROUNDS"); do
    order=(1 "$WORKERS")
    ((r % 2)) || order=("$WORKERS" 1)
    for w in "${order[@]}"; do
        read -r rate segs sent secs used pw pct icpt drops < <(run "$w")
        printf '%-6s %-7s %12s %10s %10s %8s %10s %12s %9s %11s %12s\n' "r$r" "$w" "$rate" "$segs" "$sent" "$secs" "$used" "$pw" "$pct" "$icpt" "$drops"
        md_row "r$r" "$w" "$(md_num "$rate")" "$(md_num "$segs")" "$(md_num "$sent")" "$secs" "$used" "$pw" "$pct %" "$icpt" "$drops"
        # A ring that overflowed (the burst did not fit in a worker's share) drained fewer
        # segments: left out. A few drops (a handful in a million, seen with rings that held
        # the burst with room to spare) change no rate: kept, and shown in the table.
        if ! [[ $drops =~ ^[0-9]+$ ]] || ((drops * 1000 > segs)); then
            echo "   (r$r, $w workers: kernel drops $drops, over 0.1 % of the segments: left out of the medians; raise RING_MB or BLOCK_MS)"
            EXCLUDED+="r$r/$w "
            continue
        fi
        RATES[$w]+="$rate "
    done
done
median() { tr ' ' '\n' | awk NF | sort -n | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
m1=$(median <<<"${RATES[1]:-}")
mw=$(median <<<"${RATES[$WORKERS]:-}")
m1=${m1:-0} mw=${mw:-0}
ratio=$(awk -v a="$mw" -v b="$m1" 'BEGIN { printf "%.2f", b ? a / b : 0 }')
echo
echo "== medians: --workers 1 $m1 segments/s, --workers $WORKERS $mw segments/s: ${ratio}x"
[[ -z ${EXCLUDED:-} ]] || MD_OUT+=$'\n'"Left out of the medians (their rings overflowed), round/workers: ${EXCLUDED% }."$'\n'
MD_OUT+=$'\n'"Medians: \`--workers 1\` $(md_num "${m1%.*}") segments/s, \`--workers $WORKERS\` $(md_num "${mw%.*}") segments/s: **${ratio}×**."$'\n'
md_end
