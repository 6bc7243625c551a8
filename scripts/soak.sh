#!/usr/bin/env bash
# Bounded soak of tcpcopy + intercept (issue 5, "Load held"): scripts/soak.sh MINUTES
#
# Runs the ignored lab test lab/tests/soak.rs for MINUTES: the tcpcopy lab of lab/tests/tcpcopy_lab.rs
# (client -> production with redis :6379 and nginx :80 plus tcpcopy -n 2 -> bridge -> target
# with redis :6380 and nginx :8080, the client network routed via an assistant with
# ip_forward=0 running intercept) driven by mixed traffic in rounds (redis-benchmark keep-alive
# and one connection per request, wrk keep-alive and `Connection: close`). It samples RSS and
# open fds of tcpcopy and intercept and the target's TCP sockets at minute 2 (half-way for runs
# under 4 minutes) and at the end, prints their memory (VmRSS, RssAnon, RssFile, RssShmem) every
# minute, and prints delivery (target count / (2 x production count)).
# Exit status 0 when delivery >= 99.9 % and RSS/fds grew <= 5 % and the target's sockets stayed
# flat; non-zero otherwise. Needs root, redis, nginx, wrk, curl. SOAK_NO_BUILD=1 skips the build.
# On a shared machine take the lab lock around it: flock /tmp/lab.lock scripts/soak.sh 10
set -euo pipefail

MINUTES=${1:?usage: scripts/soak.sh MINUTES}
[[ $MINUTES =~ ^[0-9]+$ && $MINUTES -ge 1 ]] || { echo "soak: MINUTES must be a whole number >= 1" >&2; exit 2; }
[[ $(id -u) -eq 0 ]] || { echo "soak: needs root (network namespaces)" >&2; exit 2; }
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
[[ -n ${SOAK_NO_BUILD:-} ]] || cargo build --release -p tcpcopy -p intercept >&2
TCPCLONE_SOAK_SECS=$((MINUTES * 60)) exec cargo test --release -p tcpclone-lab --test soak -- --ignored --nocapture
