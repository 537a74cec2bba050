#!/usr/bin/env bash
# Load scenario: one release server and an arena-bots swarm on this machine, loopback only.
# Usage: benches/load.sh MODE BOTS NPCS DURATION [extra server flags...]
#   MODE: delta | full     e.g. benches/load.sh delta 200 5000 20s
# Prints the swarm's table and the server's last stats line; writes target/load-MODE-BOTS.json.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=$1 bots=$2 npcs=$3 duration=$4
shift 4
cargo build --release -q -p arena-server -p arena-client-sim
port=$((20000 + RANDOM % 20000))
log=$(mktemp)
target/release/arena-server --wt-bind 127.0.0.1:0 --http-bind "127.0.0.1:$port" \
  --npcs "$npcs" --replication "$mode" --stats-interval 5s --log info "$@" >"$log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true; rm -f "$log"' EXIT
for _ in $(seq 50); do
  grep -q "Arena serving" "$log" && break
  sleep 0.1
done
report="target/load-$mode-$bots.json"
target/release/arena-bots --server "http://127.0.0.1:$port" --bots "$bots" --ramp 100 \
  --duration "$duration" --report "$report" || true
grep '"stats"\|stats ' "$log" | tail -1 | sed 's/\x1b\[[0-9;]*m//g'
kill -INT $server
wait $server || true
echo "report: $report"
