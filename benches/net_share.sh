#!/bin/bash
# The network side's cost against the simulation's, robust to this VM's host noise: a ratio
# inside one run. At 400 bots, the share of a server binary's perf samples in tokio's workers
# (QUIC, the sessions, the sockets) over the share in the simulation and replication threads,
# whose work is the same game whatever the network side does; and the workers' voluntary
# context switches a second (each a park and a wake). Alternate two server binaries, same bots
# (BENCHMARKS.md, "an id found in its bucket"):
#
#   benches/net_share.sh SERVER_BIN BOTS_BIN TAG     # e.g. /tmp/server-a target/release/arena-bots a1
#
# Needs `perf` (cpu-clock sampling works in this VM). Uses ports 14433 and 18080 on loopback.
set -u
BIN=$1
BOTS=$2
TAG=$3
OUT=${OUT:-/tmp}
SP= BP=
trap 'kill $SP $BP 2> /dev/null; wait $SP 2> /dev/null' EXIT
. "$(dirname "$0")/share_start.sh"
start_server_and_bots net-share
# Per thread: name, voluntary context switches, CPU ticks (threads that come and go skipped).
threads() {
    for t in /proc/$SP/task/*; do
        local line
        line="$(tr ' ' _ < "$t/comm" 2> /dev/null) $(awk '/^voluntary_ctxt/ {print $2}' \
            "$t/status" 2> /dev/null) $(awk '{print $14+$15}' "$t/stat" 2> /dev/null)"
        [ "$(echo "$line" | wc -w)" = 3 ] && echo "$line"
    done
    true
}
threads > "$OUT/net-share-$TAG.0"
perf record -F 999 -o "$OUT/net-share-$TAG.perf" -p "$SP" -- sleep 10 > /dev/null 2>&1
threads > "$OUT/net-share-$TAG.1"
wait "$BP" || true
perf report -i "$OUT/net-share-$TAG.perf" --no-children --sort comm 2> /dev/null \
    | grep -v '^#' | grep '%' > "$OUT/net-share-$TAG.txt"
python3 - "$OUT" "$TAG" <<'PY'
import collections
import sys

out, tag = sys.argv[1], sys.argv[2]


def load(path):
    d = collections.defaultdict(lambda: [0, 0])
    for line in open(path):
        name, switches, ticks = line.split()
        d[name][0] += int(switches)
        d[name][1] += int(ticks)
    return d


a, b = load(f"{out}/net-share-{tag}.0"), load(f"{out}/net-share-{tag}.1")
switches = (b["tokio-rt-worker"][0] - a["tokio-rt-worker"][0]) / 10
share = {}
for line in open(f"{out}/net-share-{tag}.txt"):
    pct, name = line.split()[:2]
    share[name] = float(pct.rstrip("%"))
workers = share.get("tokio-rt-worker", 0.0)
sim = sum(v for k, v in share.items() if k == "arena-sim" or k.startswith("arena-rep"))
print(f"{tag}: workers {workers:.1f}% of samples, simulation and replication {sim:.1f}%, "
      f"workers / simulation {workers / max(sim, 0.1):.3f}; workers' voluntary context "
      f"switches {switches:.0f}/s")
PY
