#!/usr/bin/env bash
# A newcomer's first seconds in the default world (1,000 NPCs that fight), measured with real
# bots on loopback: how many of 10 that only wander, and of 10 that stand still (idle: no
# input, like a player who has not touched the keys), die in their first 10 s; and how many
# kills and deaths 20 chasers see in 15 s. Each round on the same server, one after the other.
# Usage: benches/first_minute.sh [ROUNDS] [extra server flags...]
#   e.g. benches/first_minute.sh 3                       (the defaults)
#        benches/first_minute.sh 3 --spawn-protection 0s --npc-max-engaged 1000 --npc-reaction 0s
#   (the second approximates the rules before spawn protection, the engagement cap and the
#   reaction delay; joins still spawn away from everyone)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
shift || true
cargo build --release -q -p arena-server -p arena-client-sim
log=$(mktemp) report=$(mktemp)
"${SERVER:-target/release/arena-server}" --wt-bind 127.0.0.1:0 --http-bind 127.0.0.1:0 --no-replays "$@" \
  >"$log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true; rm -f "$log" "$report"' EXIT
http=
for _ in $(seq 100); do
  http=$(grep -o 'HTTP on http://127\.0\.0\.1:[0-9]*' "$log" | head -n 1 | cut -d/ -f3 || true)
  [ -n "$http" ] && break
  sleep 0.1
done
[ -n "$http" ] || { cat "$log" >&2; exit 1; }
bots() { # BOTS BEHAVIOUR DURATION SEED -> "kills deaths"
  target/release/arena-bots --server "http://$http" --bots "$1" --behaviour "$2" \
    --duration "$3" --seed "$4" --report "$report" --no-progress >/dev/null 2>&1 || true
  python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print(r['kills'], r['deaths'])" "$report"
}
echo "server flags: ${*:-(defaults)}"
for round in $(seq "$rounds"); do
  read -r _ wd < <(bots 10 wander=1 10s "$round")
  read -r _ id < <(bots 10 idle=1 10s "$round")
  read -r ck cd < <(bots 20 chase=1 15s "$round")
  echo "round $round: 10 wanderers, 10 s: $wd deaths; 10 standing, 10 s: $id deaths; 20 chasers, 15 s: $ck kills, $cd deaths"
done
