#!/usr/bin/env bash
# replay vs tcpreplay on the same lab veth, in the same run (not a timed test; run as root):
#   1. --topspeed --preload-pcap on 64-byte and imix captures: packets/s, alternating runs, medians
#      and the ratio (also replay --threads 2);
#   2. pacing accuracy at --pps 1,000 / 10,000 / 100,000: p99 |actual gap - intended gap| from
#      far-end tcpdump timestamps, alternating runs (tcpreplay, replay, replay -T gtod, replay
#      --rt-priority), medians and the ratio to tcpreplay, with each sender's CPU use (user+sys
#      over wall); first, how late this machine wakes a thread that sleeps 1 ms (what sets the
#      p99 of a sender that sleeps between packets).
# Usage: benches/replay_vs_tcpreplay.sh [PACKETS (default 1000000)] [RUNS (default 5)]
#   PACING_ONLY=1 skips part 1 (PACKETS must stay >= 300000: 3 s at 100,000 pps); RT=N sets the
#   --rt-priority of its pacing row (RT=off drops that row); GTOD=off drops the -T gtod row; PACE_ARGS="..." adds replay flags
#   to the pacing rows; RATES="10000" picks the pacing rates; MBPS=1 paces every row with
#   --mbps at the same packet rate instead (60-byte frames: 10,000 pps = --mbps 4.8); REPLAY_B=PATH and/or B_ARGS="..."
#   add a row "replay (B)" running that binary (default: the same one) with those flags instead
#   of PACE_ARGS, alternating with the others (an A/B in the same run, e.g. B_ARGS="--catch-up 1");
#   KEEP=DIR keeps every pacing capture there as RATE-ROW-RUN.pcap.
set -euo pipefail
N=${1:-1000000}
RUNS=${2:-5}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
REPLAY=${REPLAY:-$ROOT/target/release/replay}
[ "$(id -u)" = 0 ] || { echo "needs root (network namespaces)"; exit 1; }
for p in tcpreplay tcpdump python3 /usr/bin/time; do command -v "$p" >/dev/null || { echo "missing $p"; exit 1; }; done
[ -x "$REPLAY" ] || (cd "$ROOT" && cargo build --release -p replay)

TAG=rb$$
TX=${TAG}tx RX=${TAG}rx
W=$(mktemp -d)
cleanup() {
    [ -n "${DUMP:-}" ] && kill "$DUMP" 2>/dev/null || true
    ip netns del "$TX" 2>/dev/null || true
    ip netns del "$RX" 2>/dev/null || true
    rm -rf "$W"
}
trap cleanup EXIT
ip netns add "$TX"; ip netns add "$RX"
ip link add ${TAG}a type veth peer name ${TAG}b
ip link set ${TAG}a netns "$TX"; ip link set ${TAG}b netns "$RX"
for ns in "$TX" "$RX"; do
    ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
    ip -n "$ns" link set lo up
done
ip -n "$TX" link set ${TAG}a up; ip -n "$RX" link set ${TAG}b up
IF=${TAG}a

# Captures: IPv4/UDP frames 198.18.0.1 -> 198.18.0.2; 64-byte (60 + FCS) and imix 7:4:1 of 64/570/1518.
python3 - "$W" "$N" <<'PY'
import struct, sys
d, n = sys.argv[1], int(sys.argv[2])
def frame(length, i):
    ip_len = length - 14
    ip = bytearray(struct.pack('!BBHHHBBH4s4s', 0x45, 0, ip_len, i & 0xffff, 0, 64, 17, 0, bytes([198,18,0,1]), bytes([198,18,0,2])))
    s = sum(struct.unpack('!10H', ip)); s = (s & 0xffff) + (s >> 16); s = (s & 0xffff) + (s >> 16)
    ip[10:12] = struct.pack('!H', ~s & 0xffff)
    udp = struct.pack('!HHHH', 40000, 9, ip_len - 20, 0)
    eth = bytes([2,0,0,0,0,2, 2,0,0,0,0,1, 8,0])
    return eth + bytes(ip) + udp + struct.pack('!I', i) + bytes(length - 46)
def write(name, sizes, gap_ns):
    with open(f'{d}/{name}', 'wb') as f:
        f.write(struct.pack('<IHHiIII', 0xa1b23c4d, 2, 4, 0, 0, 65535, 1))
        for i in range(n):
            fr = frame(sizes[i % len(sizes)], i)
            t = 1_700_000_000_000_000_000 + i * gap_ns
            f.write(struct.pack('<IIII', t // 10**9, t % 10**9, len(fr), len(fr))); f.write(fr)
write('64.pcap', [60], 1000)
write('imix.pcap', [60]*7 + [566]*4 + [1514], 1000)
PY

median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
source "$(dirname "$0")/md_table.sh"
pps_of() { grep -o 'Rated: .*' | sed -E 's/.* ([0-9.]+) pps.*/\1/'; }

if [ "${PACING_ONLY:-0}" != 1 ]; then
    echo "== top speed, preloaded, $N packets, $RUNS alternating runs each (veth, $(nproc) cores, load $(cut -d' ' -f1 /proc/loadavg))"
    echo "   pps = the tool's own Rated pps (wall clock); pps/CPU = packets per CPU-second (user+sys),"
    echo "   which stays meaningful when other work shares the cores"
    # run NAME CMD...: appends "pps pps_per_cpu_second" to $W/NAME
    run() {
        local name=$1; shift
        local pps
        pps=$(ip netns exec "$TX" /usr/bin/time -f "%U %S" -o "$W/time" "$@" 2>&1 | pps_of)
        echo "$pps $(awk -v n="$N" '{print n / ($1 + $2)}' "$W/time")" >> "$W/$name"
    }
    printf '%-6s %-12s %12s %12s %9s %9s\n' capture tool pps pps/CPU ratio ratio/CPU
    md_begin "replay: top speed against tcpreplay" "sudo benches/replay_vs_tcpreplay.sh $N $RUNS"
    md_cols frames tcpreplay replay "replay \`--threads 2\`"
    for cap in 64 imix; do
        : > "$W/t" ; : > "$W/r" ; : > "$W/r2"
        for i in $(seq "$RUNS"); do
            run t tcpreplay -q -i $IF --topspeed -K "$W/$cap.pcap"
            run r "$REPLAY" -i $IF --topspeed -K "$W/$cap.pcap"
            run r2 "$REPLAY" -i $IF --topspeed -K --threads 2 "$W/$cap.pcap"
        done
        t=$(cut -d' ' -f1 "$W/t" | median); tc=$(cut -d' ' -f2 "$W/t" | median)
        cells=()
        for name in t r r2; do
            label=$( [ $name = t ] && echo tcpreplay || { [ $name = r ] && echo replay || echo "replay -T2"; } )
            p=$(cut -d' ' -f1 "$W/$name" | median); c=$(cut -d' ' -f2 "$W/$name" | median)
            printf '%-6s %-12s %12.0f %12.0f %8.2fx %8.2fx   runs: %s\n' "$cap" "$label" "$p" "$c" \
                "$(echo "$p/$t" | bc -l)" "$(echo "$c/$tc" | bc -l)" "$(cut -d' ' -f1 "$W/$name" | tr '\n' ' ')"
            if [ $name = t ]; then
                cells+=("$(awk -v p="$p" 'BEGIN {printf "%.2f Mpps", p / 1e6}')")
            else
                cells+=("$(awk -v p="$p" -v t="$t" 'BEGIN {printf "%.2f Mpps (%.2f×)", p / 1e6, p / t}')")
            fi
        done
        md_row "$( [ $cap = 64 ] && echo "64 bytes" || echo imix )" "${cells[@]}"
    done
fi

# Pacing accuracy: the far end's tcpdump timestamps, gap error against 1/pps.
gap_p99() {
    python3 - "$1" "$2" <<'PY'
import struct, sys
path, pps = sys.argv[1], float(sys.argv[2])
data = open(path, 'rb').read()
nano = struct.unpack('<I', data[:4])[0] == 0xa1b23c4d
ts, off = [], 24
while off + 16 <= len(data):
    s, frac, incl, orig = struct.unpack('<IIII', data[off:off+16])
    ts.append(s * 10**9 + (frac if nano else frac * 1000)); off += 16 + incl
if len(ts) < 2 or ts[-1] == ts[0]:
    print(f"{len(ts):7d} pkts  (too few to measure gaps)  p99 nan us  late nan %"); sys.exit()
want = 1e9 / pps
errs = sorted(abs((b - a) - want) for a, b in zip(ts, ts[1:]))
p = lambda q: errs[min(len(errs) - 1, int(q * len(errs)))] / 1000
rate = (len(ts) - 1) / ((ts[-1] - ts[0]) / 1e9)
# Gaps off by half an interval or more: a packet that left that late (the machine took the CPU
# away) also leaves the next one almost back to back, so once over 1 % of the gaps are such, the
# p99 sits at one interval minus the back-to-back send time whatever the tool does.
late = sum(e >= want / 2 for e in errs) / len(errs) * 100
print(f"{len(ts):7d} pkts  rate {rate:10.2f} pps  |gap err| p50 {p(.5):6.2f} us  p99 {p(.99):7.2f} us  max {errs[-1]/1000:8.1f} us  late {late:.3f} %")
PY
}
# The far end's tcpdump runs without --immediate-mode. The kernel stamps each frame when the veth
# hands it over, in the sender's own system call, whatever the reader does; immediate mode only
# wakes tcpdump for every frame. On this 2-vCPU guest each such wake-up of the other vCPU stalls
# the sending vCPU (the hypervisor runs the two on fewer cores than that): at 10,000 pps 10-28 %
# of the gaps were late for every tool and the observer set the p99 (280-520 us), against
# 1-5 % and 28-97 us with tcpdump reading whole blocks. Every frame is still checked to be there.
capture_run() { # tool-cmd... ; captures on the far end into $W/cap.pcap, CPU % of the sender into $W/cpu
    rm -f "$W/cap.pcap"
    ip netns exec "$RX" tcpdump -i ${TAG}b -n -s 128 -B 65536 --time-stamp-precision nano -Z root -w "$W/cap.pcap" 'ether src 02:00:00:00:00:01' 2>"$W/dump.log" &
    DUMP=$!
    for _ in $(seq 100); do grep -q listening "$W/dump.log" 2>/dev/null && break; sleep 0.05; done
    ip netns exec "$TX" /usr/bin/time -f "%U %S %e" -o "$W/time" "$@" >/dev/null 2>&1
    awk '{printf "%.1f\n", ($1 + $2) / $3 * 100}' "$W/time" > "$W/cpu"
    # A block is handed to tcpdump when full or after its 1 s timeout: wait for the last one.
    sleep 1.2; kill -INT $DUMP; wait $DUMP 2>/dev/null || true; DUMP=
    if ! grep -q '^0 packets dropped by kernel' "$W/dump.log"; then
        echo "warning: the far end's tcpdump dropped frames: $(grep 'dropped by kernel' "$W/dump.log")" >&2
    fi
}
# replay paces by sleeping, then spinning the last stretch; by default it stays an ordinary task,
# so on a busy machine a wake-up can wait for a core. `--rt-priority N` (SCHED_FIFO, opt-in) is
# measured beside it. PACE_ARGS="..." adds replay flags to both rows.
PACE_ARGS=${PACE_ARGS:-}
RT=${RT:-10}
RATES=${RATES:-1000 10000 100000}
REPLAY_B=${REPLAY_B:-}
B_ARGS=${B_ARGS:-}
KEEP=${KEEP:-}
[ -z "$KEEP" ] || mkdir -p "$KEEP"
ROWS="pt pr"
[ "${GTOD:-on}" = off ] || ROWS="$ROWS pg"
[ "$RT" = off ] || ROWS="$ROWS prt"
[ -z "$REPLAY_B$B_ARGS" ] || { ROWS="$ROWS pb"; REPLAY_B=${REPLAY_B:-$REPLAY}; }
# pace_run ROW PPS RUN: one capture_run of that row's tool, its figures appended to $W/ROW
pace_run() {
    local row=$1 pps=$2 run=$3 L=$(($2 * 3))
    local rate=(--pps "$pps")
    [ "${MBPS:-0}" != 1 ] || rate=(--mbps "$(echo "$pps * 60 * 8 / 1000000" | bc -l | sed 's/0*$//; s/\.$//; s/^\./0./')")
    case $row in
        pt) capture_run tcpreplay -q -i $IF "${rate[@]}" -L $L "$W/64.pcap" ;;
        # shellcheck disable=SC2086
        pr) capture_run "$REPLAY" -i $IF "${rate[@]}" -L $L $PACE_ARGS "$W/64.pcap" ;;
        # shellcheck disable=SC2086
        pg) capture_run "$REPLAY" -i $IF "${rate[@]}" -L $L -T gtod $PACE_ARGS "$W/64.pcap" ;;
        # shellcheck disable=SC2086
        prt) capture_run "$REPLAY" -i $IF "${rate[@]}" -L $L --rt-priority "$RT" $PACE_ARGS "$W/64.pcap" ;;
        # shellcheck disable=SC2086
        pb) capture_run "$REPLAY_B" -i $IF "${rate[@]}" -L $L $B_ARGS "$W/64.pcap" ;;
    esac
    local line; line=$(gap_p99 "$W/cap.pcap" "$pps") || line="0 pkts (capture unreadable) p99 nan us late nan %"
    [ "$(echo "$line" | awk '{print $1}')" = "$L" ] || echo "warning: $row at $pps pps: the far end saw $line, not $L frames" >&2
    echo "$(echo "$line" | sed -E 's/.*p99 +([0-9.]+|nan) us.* late ([0-9.]+|nan) %.*/\1 \2/') $(cat "$W/cpu")" >> "$W/$row"
    [ -z "$KEEP" ] || cp "$W/cap.pcap" "$KEEP/$pps-$row-$run.pcap"
}
echo
# A thread that sleeps 2,000 times to an absolute time 1 ms after it asks (each from its own
# wake-up, so one long stall is one sample, not several): how late it wakes. On a
# guest whose host is slow to run an idle vCPU again this is hundreds of microseconds to
# milliseconds at the 99th percentile, and no sender that sleeps can beat one that spins.
echo "== wake-up lateness of a 1 ms absolute sleep on this machine (clock_nanosleep, 2,000 sleeps):"
python3 - <<'PY'
import ctypes, time
libc = ctypes.CDLL(None, use_errno=True)
class TS(ctypes.Structure):
    _fields_ = [('s', ctypes.c_long), ('ns', ctypes.c_long)]
MONO, ABS = 1, 1
libc.prctl(29, ctypes.c_ulong(1), 0, 0, 0)  # PR_SET_TIMERSLACK: 1 ns, as replay sets it
late = []
for i in range(2000):
    due = time.monotonic_ns() + 1_000_000
    libc.clock_nanosleep(MONO, ABS, ctypes.byref(TS(due // 10**9, due % 10**9)), None)
    late.append(time.monotonic_ns() - due)
late.sort()
q = lambda x: late[min(len(late) - 1, int(x * len(late)))] / 1000
print(f"   p50 {q(.5):.0f} us, p90 {q(.9):.0f} us, p99 {q(.99):.0f} us, max {late[-1] / 1000:.0f} us")
PY
echo
echo "== pacing accuracy: p99 |gap error| at the far end, 3 s at each rate, 64-byte frames,"
echo "   $RUNS alternating runs per tool, medians (load $(cut -d' ' -f1 /proc/loadavg)); CPU = user+sys over wall;"
echo "   late % = gaps off by half an interval or more (over 1 % of them pin the p99 near one interval)"
printf '%-7s %-24s %10s %8s %7s %8s   %s\n' pps tool 'p99 us' ratio 'CPU %' 'late %' 'runs: p99 us (CPU %) late %'
md_begin "replay: pacing accuracy (p99 of |gap − 1/pps|, CPU in brackets)" "PACING_ONLY=${PACING_ONLY:-0} sudo benches/replay_vs_tcpreplay.sh $N $RUNS"
md_labels=()
for name in $ROWS; do
    case $name in pt) md_labels+=(tcpreplay) ;; pr) md_labels+=("replay (hybrid)") ;; pg) md_labels+=("replay \`-T gtod\`") ;; pb) md_labels+=("replay (B) $B_ARGS") ;; *) md_labels+=("replay \`--rt-priority $RT\`") ;; esac
done
md_cols rate "${md_labels[@]}"
for pps in $RATES; do
    for row in $ROWS; do : > "$W/$row"; done
    for run in $(seq "$RUNS"); do
        for row in $ROWS; do pace_run "$row" "$pps" "$run"; done
    done
    t=$(cut -d' ' -f1 "$W/pt" | median)
    cells=()
    for name in $ROWS; do
        case $name in pt) label=tcpreplay ;; pr) label=replay ;; pg) label="replay -T gtod" ;; pb) label="replay (B) $B_ARGS" ;; *) label="replay --rt-prio $RT" ;; esac
        p=$(cut -d' ' -f1 "$W/$name" | median); l=$(cut -d' ' -f2 "$W/$name" | median)
        c=$(cut -d' ' -f3 "$W/$name" | median)
        printf '%-7s %-24s %10.1f %7.2fx %7.1f %8.3f   %s\n' "$pps" "$label" "$p" "$(echo "$p/$t" | bc -l)" "$c" "$l" \
            "$(awk '{printf "%s (%s) %s, ", $1, $3, $2}' "$W/$name")"
        if [ $name = pt ]; then
            cells+=("$(awk -v p="$p" -v c="$c" 'BEGIN {printf "%.1f µs (%.1f %% CPU)", p, c}')")
        else
            cells+=("$(awk -v p="$p" -v c="$c" -v t="$t" 'BEGIN {printf "%.1f µs, %.2f× (%.1f %%)", p, p / t, c}')")
        fi
    done
    md_row "$(md_num "$pps") pps" "${cells[@]}"
done
echo "(load at the end $(cut -d' ' -f1 /proc/loadavg))"
md_end
