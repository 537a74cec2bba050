#!/bin/bash
# The session task's share of a server binary's CPU at 400 bots, robust to this VM's host
# noise: a ratio inside one run, where the server's CPU itself drifts with the host by more
# than a change of a few percent (BENCHMARKS.md, "a session's rare branches polled when
# woken"). Prints the server's and the bots' CPU over the window (perf attached), the share of
# the server's samples whose stack holds `net::session::run`, and the share whose leaf is in
# tokio's `Notify` or the cancellation token. Alternate two server binaries, same bots:
#
#   benches/session_share.sh SERVER_BIN BOTS_BIN TAG     # e.g. /tmp/server-a target/release/arena-bots a1
#
# Needs `perf` with DWARF unwinding (cpu-clock sampling works in this VM). Uses ports 14433
# and 18080 on loopback.
set -euo pipefail
BIN=$1
BOTS=$2
TAG=$3
OUT=${OUT:-/tmp}
. "$(dirname "$0")/share_start.sh"
start_server_and_bots session-share
T0=$(awk '{print $14+$15}' "/proc/$SP/stat")
B0=$(awk '{print $14+$15}' "/proc/$BP/stat")
perf record -F 300 --call-graph dwarf,16384 -o "$OUT/session-share-$TAG.perf" -p "$SP" \
    -- sleep 10 > /dev/null 2>&1
T1=$(awk '{print $14+$15}' "/proc/$SP/stat")
B1=$(awk '{print $14+$15}' "/proc/$BP/stat")
wait "$BP" || true
kill "$SP"
wait "$SP" 2> /dev/null || true
perf script -i "$OUT/session-share-$TAG.perf" -F comm,ip,sym 2> /dev/null \
    > "$OUT/session-share-$TAG.txt"
python3 - "$OUT/session-share-$TAG.txt" "$TAG" "$T0" "$T1" "$B0" "$B1" "$(getconf CLK_TCK)" <<'PY'
import sys

path, tag = sys.argv[1], sys.argv[2]
t0, t1, b0, b1, hz = map(int, sys.argv[3:])
stacks, cur = [], None
for line in open(path):
    if line.strip() and not line.startswith((" ", "\t")):
        if cur is not None:
            stacks.append(cur)
        cur = []
    elif line.strip() and cur is not None:
        cur.append(line)
if cur is not None:
    stacks.append(cur)
n = max(len(stacks), 1)
session = sum(1 for s in stacks if any("net::session::run" in f for f in s))
locks = sum(1 for s in stacks if s and ("notify::Notified" in s[0] or "cancellation_token" in s[0]))
print(f"{tag}: server CPU {(t1 - t0) / hz / 10 * 100:.1f}%  bots {(b1 - b0) / hz / 10 * 100:.1f}%  "
      f"session task {session / n * 100:.2f}% of {n} samples  Notify/cancel leaves {locks / n * 100:.2f}%")
PY
