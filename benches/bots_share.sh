#!/bin/bash
# Where a bots binary's CPU goes, robust to this VM's host noise: the swarm's CPU a bot, and
# the shares of its perf samples in malloc and free, bitcode and `apply_into`, and in the
# "fixed" part (the kernel, quinn-proto, rustls, ring) that a change to the game's client
# code does not touch. Between two binaries run in turn against one server, the ratio of
# their fixed shares is the ratio of their total CPU (BENCHMARKS.md, "a bot's allocations a
# tick").
#
#   target/release/arena-server --wt-bind 127.0.0.1:14433 --http-bind 127.0.0.1:18080 \
#       --npcs 5000 --max-clients 1200 --log warn &
#   benches/bots_share.sh BOTS_BIN TAG [BOTS]      # e.g. /tmp/bots-a a1 400
#
# Needs `perf` (cpu-clock sampling works in this VM; there are no hardware counters).
set -euo pipefail
BIN=$1
TAG=$2
N=${3:-400}
SERVER=${SERVER:-http://127.0.0.1:18080}
OUT=${OUT:-/tmp}
"$BIN" --server "$SERVER" --bots "$N" --ramp 200 --duration 40s --no-progress --log error \
    > /dev/null 2>&1 &
BP=$!
sleep 12
T0=$(awk '{print $14+$15}' "/proc/$BP/stat")
perf record -F 999 -o "$OUT/share-$TAG.perf" -p "$BP" -- sleep 12 > /dev/null 2>&1
T1=$(awk '{print $14+$15}' "/proc/$BP/stat")
wait "$BP" || true
perf report -i "$OUT/share-$TAG.perf" --no-children --sort dso,symbol 2> /dev/null \
    | grep -v '^#' | grep '%' > "$OUT/share-$TAG.txt"
python3 - "$OUT/share-$TAG.txt" "$TAG" "$T0" "$T1" "$N" "$(getconf CLK_TCK)" <<'PY'
import re
import sys

path, tag, t0, t1, n, hz = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:])
fixed = alloc = codec = apply = 0.0
for line in open(path):
    m = re.match(r"\s*([\d.]+)%\s+\S+\s+\[(.)\]\s+(.*)", line)
    if not m:
        continue
    pct, kernel, sym = float(m.group(1)), m.group(2) == "k", m.group(3)
    if kernel or any(s in sym for s in ("quinn_proto", "ring", "rustls")):
        fixed += pct
    if re.search(r"malloc|_int_free|cfree|unlink_chunk|realloc|tcache", sym):
        alloc += pct
    if "bitcode" in sym:
        codec += pct
    if "apply_into" in sym:
        apply += pct
cpu = (t1 - t0) / hz / 12 * 100 / n
print(f"{tag}: CPU a bot {cpu:.4f}%  fixed {fixed:.1f}%  malloc/free {alloc:.1f}%  "
      f"bitcode {codec:.1f}%  apply_into {apply:.1f}%")
PY
