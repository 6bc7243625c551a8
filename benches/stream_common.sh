#!/usr/bin/env bash
# Shared helpers of the stream-mode benches (sourced, not run): the namespace lab of
# scripts/lab.sh (mkns, veth, inns, redis, cleanup trap), the stream-mode command
# (`tcpcopy --stream --force`), and json_get.
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lab.sh"
lab_init s redis-server redis-benchmark redis-cli tcpdump cargo
lab_build -p tcpcopy
# --force: every stream bench replays to a server on the loopback of the namespace it runs in
# (a local target, which tcpcopy refuses without it; production targets are other hosts).
STREAM=("$BIN/tcpcopy" --stream --force)
# json_get FILE a.b.c
json_get() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1]))
for k in sys.argv[2].split("."): d=d[k]
print(d)' "$1" "$2"; }
