#!/bin/bash
# Capacity on a machine with 16 or more cores: the server on cores 0-7, the bots on 8-15, with
# the steps the issue names (1,000, 4,000 and 10,000 bots). Prepared for a lent machine that
# cannot build: release binaries are built here, stripped (debug info would not travel within
# a 64 MiB tree) and copied beside the script's tree, e.g.
#
#   cargo build --profile production -p arena-server -p arena-client-sim
#   mkdir -p .dev && strip -o .dev/arena-server target/production/arena-server \
#     && strip -o .dev/arena-bots target/production/arena-bots
#   BIN=.dev OUT=/some/dir bash benches/capacity_big.sh
#
# Environment: BIN (folder of the two binaries, default target/production), OUT (where the
# table, the JSON rows, the bots' reports and the server log's tail go, default
# ./capacity-out), STEPS, RAMP (connections a second), SCPU and BCPU (taskset lists),
# CAP_TIMEOUT (seconds for the whole run). About 5-7 minutes with the defaults.
set -u
BIN=${BIN:-target/production}
OUT=${OUT:-capacity-out}
mkdir -p "$OUT"
exec > >(tee "$OUT/device.log") 2>&1
echo "== machine"; date -u; uname -a; nproc; grep -m1 "model name" /proc/cpuinfo; free -g | head -2
command -v taskset || echo "no taskset: the CPU lists are ignored"
# 10,000 bots hold 625 UDP sockets and the server a few descriptors a session.
ulimit -n 1048576 2>/dev/null || ulimit -n 65536 2>/dev/null; ulimit -n
# The bots' flocks ask for 64 KiB of receive buffer a bot (client-sim/src/endpoints.rs);
# the kernel caps the request at rmem_max.
sysctl -w net.core.rmem_max=4194304 net.core.wmem_max=4194304 2>&1 | head -2
echo "== capacity"
PYTHONUNBUFFERED=1 timeout "${CAP_TIMEOUT:-480}" python3 benches/capacity.py --no-build \
  --server-bin "$BIN/arena-server" --bots-bin "$BIN/arena-bots" \
  --server-cpus "${SCPU:-0-7}" --bot-cpus "${BCPU:-8-15}" --steps "${STEPS:-1000,4000,10000}" \
  --ramp "${RAMP:-250}" --hold 15 --idle-secs 10 --stop-after-fail 0 --json "$OUT/capacity.json"
echo "rc=$?"
d=$(ls -dt /tmp/arena-capacity-* 2>/dev/null | head -1)
if [ -n "$d" ]; then
  tail -c 200000 "$d/server.log" > "$OUT/server-tail.log"
  for f in "$d"/bots-*.json; do [ -e "$f" ] && cp "$f" "$OUT/"; done
  for f in "$d"/bots-*.out; do [ -e "$f" ] && tail -c 20000 "$f" > "$OUT/$(basename "$f")"; done
fi
