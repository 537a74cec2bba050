#!/usr/bin/env bash
# One live handoff between two release server processes on loopback, with a bot swarm playing:
# server A (NPCS NPCs) takes BOTS arena-bots; 18 s later server B starts with
# --take-over-from A. Prints both servers' handoff log lines (the tick, the state's SHA-256 on
# each side, the bundle's bytes, A's request-to-capture, B's fetch and ask-to-confirm times),
# when the bots came back on B after A's confirmation, and the bots' report (moves, resumes,
# disconnects, snapshot rates). Each server records its replay into a directory of its own; the
# run goes on in B's files, and `replay verify` runs over A's and B's files at the end. Uses
# ports 14433/18080 (A) and 24433/28080 (B); no viewer.
# Usage: benches/handoff.sh [NPCS] [BOTS]   e.g. benches/handoff.sh 1000 50; benches/handoff.sh 5000 500
set -euo pipefail
cd "$(dirname "$0")/.."
NPCS=${1:-1000}
BOTS=${2:-50}
cargo build --release -q -p arena-server -p arena-client-sim
W=$(mktemp -d -t arena-handoff-XXXXXX)
head -c 32 /dev/urandom | base64 > "$W/secret"
common=(--npcs "$NPCS" --token-secret-file "$W/secret" --log info --max-clients 2000
        --stats-interval 0s --viewer-bind off)
./target/release/arena-server --wt-bind 127.0.0.1:14433 --http-bind 127.0.0.1:18080 "${common[@]}" \
  --replay-dir "$W/a-replays" > "$W/a.log" 2>&1 &
A=$!
sleep 2
./target/release/arena-bots --server http://127.0.0.1:18080 --bots "$BOTS" --duration 40s --no-progress \
  --report "$W/bots.json" > "$W/bots.log" 2>&1 &
BP=$!
sleep 18
./target/release/arena-server --wt-bind 127.0.0.1:24433 --http-bind 127.0.0.1:28080 "${common[@]}" \
  --replay-dir "$W/b-replays" --take-over-from http://127.0.0.1:18080 > "$W/b.log" 2>&1 &
B=$!
a_rc=0; wait "$A" || a_rc=$?
echo "A exited $a_rc"
wait "$BP" || true
kill -INT "$B"; wait "$B" || true
strip() { sed 's/\x1b\[[0-9;]*m//g' "$1"; }
strip "$W/a.log" | grep -i "handoff" | cut -c1-400
strip "$W/b.log" | grep -i "handoff" | cut -c1-400
python3 - "$W" <<'PY'
import datetime, json, re, sys
w = sys.argv[1]
strip = lambda s: re.sub(r"\x1b\[[0-9;]*m", "", s)
def ts(line):
    m = re.match(r"(\S+Z)", line)
    return datetime.datetime.fromisoformat(m.group(1).replace("Z", "+00:00")) if m else None
confirmed = [ts(strip(l)) for l in open(w + "/a.log") if "handoff confirmed" in strip(l)]
back = [ts(strip(l)) for l in open(w + "/b.log") if "session started" in strip(l) and "resumed=true" in strip(l)]
if confirmed and back:
    t0 = confirmed[0]
    print(f"resumed on B: {len(back)}; first back {(min(back) - t0).total_seconds():.3f} s, "
          f"last {(max(back) - t0).total_seconds():.3f} s after A confirmed")
r = json.load(open(w + "/bots.json"))
keys = ("bots_connected", "bots_disconnected", "moves", "resumes", "reconnects", "snapshots_per_bot_hz",
        "snapshots_per_bot_hz_min", "snapshot_gap_ms_p50", "snapshot_gap_ms_p99", "snapshot_gap_ms_max",
        "connect_ms_p99", "prediction_max_error", "errors")
print({k: r[k] for k in keys if k in r})
PY
echo "replay files: $(cd "$W" && ls a-replays/*.replay b-replays/*.replay | xargs -n1 basename | tr '\n' ' ')"
# One run: A's files, then B's, in order.
/usr/bin/time -f "replay verify over both servers' files: %e s, %M KiB" \
  ./target/release/arena-server replay verify "$W"/a-replays/*.replay "$W"/b-replays/*.replay
echo "logs in $W"
