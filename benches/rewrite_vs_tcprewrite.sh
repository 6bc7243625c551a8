#!/usr/bin/env bash
# replay -w vs tcprewrite -i/-o with the same edits on the same capture, in the same run
# (not a timed test): packets/s (medians of alternating runs), the ratio, and peak RSS
# (/usr/bin/time -v). Also checks the two outputs are identical record for record.
# Usage: benches/rewrite_vs_tcprewrite.sh [PACKETS (default 1000000)] [RUNS (default 3)]
set -euo pipefail
N=${1:-1000000}
RUNS=${2:-3}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
REPLAY=${REPLAY:-$ROOT/target/release/replay}
for p in tcprewrite python3 /usr/bin/time cmp; do command -v "$p" >/dev/null || { echo "missing $p"; exit 1; }; done
[ -x "$REPLAY" ] || (cd "$ROOT" && cargo build --release -p replay)
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT

# imix 7:4:1 of 60/566/1514-byte IPv4/UDP frames, microsecond pcap (what tcprewrite writes).
python3 - "$W/in.pcap" "$N" <<'PY'
import struct, sys
path, n = sys.argv[1], int(sys.argv[2])
sizes = [60]*7 + [566]*4 + [1514]
with open(path, 'wb') as f:
    f.write(struct.pack('<IHHiIII', 0xa1b2c3d4, 2, 4, 0, 0, 65535, 1))
    for i in range(n):
        length = sizes[i % len(sizes)]; ip_len = length - 14
        ip = bytearray(struct.pack('!BBHHHBBH4s4s', 0x45, 0, ip_len, i & 0xffff, 0, 64, 17, 0,
                                   bytes([198,18,(i>>8)&0xff,i&0xff]), bytes([198,18,0,2])))
        s = sum(struct.unpack('!10H', ip)); s = (s & 0xffff) + (s >> 16); s = (s & 0xffff) + (s >> 16)
        ip[10:12] = struct.pack('!H', ~s & 0xffff)
        fr = bytes([2,0,0,0,0,2, 2,0,0,0,0,1, 8,0]) + bytes(ip) + struct.pack('!HHHH', 40000 + i % 100, 80, ip_len - 20, 0) + bytes(length - 42)
        f.write(struct.pack('<IIII', 1_700_000_000 + i // 1_000_000, i % 1_000_000, length, length)); f.write(fr)
PY
SIZE=$(stat -c %s "$W/in.pcap")
EDITS=(-S 198.18.0.0/16:198.19.0.0/16 -D 198.18.0.0/16:198.19.0.0/16 -r 80:8080 --enet-dmac 02:00:00:00:00:aa --ttl 32)
echo "== $N packets ($((SIZE / 1000000)) MB imix), edits: ${EDITS[*]}"
: > "$W/t"; : > "$W/r"
for i in $(seq "$RUNS"); do
    /usr/bin/time -f "%e %M" -o "$W/tt" tcprewrite "${EDITS[@]}" -i "$W/in.pcap" -o "$W/ref.pcap"
    cat "$W/tt" >> "$W/t"
    /usr/bin/time -f "%e %M" -o "$W/rt" "$REPLAY" "${EDITS[@]}" -w "$W/out.pcap" "$W/in.pcap" >/dev/null
    cat "$W/rt" >> "$W/r"
done
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
tw=$(cut -d' ' -f1 "$W/t" | median); rw=$(cut -d' ' -f1 "$W/r" | median)
tm=$(cut -d' ' -f2 "$W/t" | sort -g | tail -1); rm_=$(cut -d' ' -f2 "$W/r" | sort -g | tail -1)
printf '%-11s %8s %14s %12s\n' tool "wall s" "packets/s" "peak RSS"
printf '%-11s %8.2f %14.0f %9d KB\n' tcprewrite "$tw" "$(echo "$N/$tw" | bc -l)" "$tm"
printf '%-11s %8.2f %14.0f %9d KB\n' "replay -w" "$rw" "$(echo "$N/$rw" | bc -l)" "$rm_"
printf 'ratio: %.2fx packets/s   (runs: tcprewrite %s| replay %s)\n' "$(echo "$tw/$rw" | bc -l)" \
    "$(cut -d' ' -f1 "$W/t" | tr '\n' ' ')" "$(cut -d' ' -f1 "$W/r" | tr '\n' ' ')"
source "$(dirname "$0")/md_table.sh"
md_begin "replay: rewriting to a file against tcprewrite" "benches/rewrite_vs_tcprewrite.sh $N $RUNS"
md_cols tool "packets/s" "peak memory"
md_row "tcprewrite $(tcprewrite -V 2>&1 | awk '/version/ {print $3; exit}')" "1×" "$((tm / 1000)) MB"
md_row "replay \`-w\`" "$(printf '%.1f×' "$(echo "$tw/$rw" | bc -l)")" "$((rm_ / 1000)) MB"
if cmp -s <(tail -c +25 "$W/ref.pcap") <(tail -c +25 "$W/out.pcap"); then
    echo "outputs: identical records"
else
    echo "outputs: DIFFER (compare with tshark/tcpdump -r)"
fi
md_end
