#!/usr/bin/env bash
# Benchmark (not a timed test): stream mode's memory on a large capture with many concurrent
# sessions. Generates a synthetic client→server capture (SESSIONS concurrent redis connections,
# each sending ~1 KB SET commands until the file reaches SIZE_MB), replays it at --topspeed to a
# redis in a namespace, and prints the maximum RSS (goal: ≤ 100 MB at 10,000 sessions, 1 GB).
# Usage: sudo benches/stream_memory.sh [SIZE_MB (default 1024)] [SESSIONS (default 10000)]
set -euo pipefail
SIZE_MB=${1:-1024}
SESSIONS=${2:-10000}
if ! [[ $SIZE_MB =~ ^[0-9]+$ && $SESSIONS =~ ^[0-9]+$ ]] || ((SIZE_MB < 1 || SIZE_MB > 4096 || SESSIONS < 1 || SESSIONS > 20000)); then
    echo "usage: $0 [SIZE_MB 1..4096] [SESSIONS 1..20000]" >&2
    exit 2
fi
command -v python3 >/dev/null || { echo "stream_memory.sh: needs python3 to generate the capture" >&2; exit 2; }
source "$(dirname "$0")/stream_common.sh"

echo "generating a ${SIZE_MB} MB capture with $SESSIONS concurrent sessions..."
python3 - "$WORK/big.pcap" "$SIZE_MB" "$SESSIONS" <<'PY'
import struct, sys
path, size_mb, sessions = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
value = b"x" * 1000
out = open(path, "wb", buffering=1 << 20)
out.write(struct.pack("<IHHiIII", 0xa1b2c3d4, 2, 4, 0, 0, 262144, 1))
eth = bytes.fromhex("020000000002020000000001") + b"\x08\x00"
srv = bytes([198, 18, 80, 2])
t = [1_700_000_000, 0]
def pkt(i, seq, ack, flags, payload):
    cli = bytes([198, 19, (i >> 8) & 0xff, i & 0xff])
    tcp = struct.pack("!HHIIBBHHH", 10000 + (i % 50000), 6379, seq & 0xffffffff, ack & 0xffffffff, 0x50, flags, 65535, 0, 0)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40 + len(payload), 0, 0x4000, 64, 6, 0, cli, srv)
    frame = eth + ip + tcp + payload
    t[1] += 1
    if t[1] >= 1_000_000:
        t[0] += 1; t[1] = 0
    out.write(struct.pack("<IIII", t[0], t[1], len(frame), len(frame)))
    out.write(frame)
    return 16 + len(frame)
written = 24
seqs = [1000] * sessions
acks = [5000] * sessions
for i in range(sessions):
    written += pkt(i, 999, 0, 0x02, b"")
r = 0
while written < size_mb * 1024 * 1024:
    for i in range(sessions):
        cmd = b"SET k%d %s\r\n" % (i, value)
        written += pkt(i, seqs[i], acks[i], 0x18, cmd)
        seqs[i] += len(cmd)
        acks[i] += 5  # "+OK\r\n" seen by the client: the next command is a new request
    r += 1
for i in range(sessions):
    written += pkt(i, seqs[i], acks[i], 0x11, b"")
out.close()
print(f"{written / 1e6:.0f} MB, {sessions} sessions x {r} requests")
PY
mkns "${TAG}t"
inns "${TAG}t" sysctl -qw net.core.somaxconn=65535
inns "${TAG}t" sysctl -qw net.ipv4.tcp_max_syn_backlog=65535
ulimit -n "$(ulimit -Hn)"
if (( $(ulimit -n) < SESSIONS + 100 )); then
    echo "stream_memory.sh: the open-files limit ($(ulimit -n)) is too low for $SESSIONS sessions" >&2; exit 2
fi
redis "${TAG}t" 127.0.0.1 6390 --maxclients 30000 --tcp-backlog 65535
/usr/bin/time -f "%e s wall, %U s user, %S s sys, %M KB max RSS" -o "$WORK/time" \
    ip netns exec "${TAG}t" "${STREAM[@]}" -x 6379-127.0.0.1:6390 --offline "$WORK/big.pcap" --topspeed --report "$WORK/m.json" ${STREAM_ARGS:-} >"$WORK/table"
cat "$WORK/table"
echo "stream mode: $(cat "$WORK/time")"
echo "target redis: $(inns "${TAG}t" redis-cli -p 6390 info commandstats | grep cmdstat_set | sed 's/,usec=.*//')"
RSS_KB=$(sed -E 's/.* ([0-9]+) KB max RSS/\1/' "$WORK/time")
echo "max RSS: $((RSS_KB / 1024)) MB (goal <= 100 MB)"
source "$(dirname "$0")/md_table.sh"
md_begin "Stream mode: memory on a large capture" "sudo benches/stream_memory.sh $SIZE_MB $SESSIONS"
md_cols capture "concurrent sessions" "max RSS" goal
md_row "$(md_num "$(( $(stat -c %s "$WORK/big.pcap") / 1000000 ))") MB" "$(md_num "$SESSIONS")" \
    "$(awk -v k="$RSS_KB" 'BEGIN {printf "%.1f MB", k / 1024}')" "≤ 100 MB"
md_end
