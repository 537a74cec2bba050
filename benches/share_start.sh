# Sourced by the `*_share.sh` scripts: starts the server binary $BIN (5,000 NPCs, ports 14433
# and 18080 on loopback, its log in $OUT/$1-$TAG.log) and 400 bots of $BOTS against it for 32
# s, and returns 12 s later, the swarm connected and playing; $SP and $BP are their pids.
start_server_and_bots() {
    "$BIN" --wt-bind 127.0.0.1:14433 --http-bind 127.0.0.1:18080 --npcs 5000 \
        --max-clients 1200 --log warn > "$OUT/$1-$TAG.log" 2>&1 &
    SP=$!
    sleep 3
    "$BOTS" --server http://127.0.0.1:18080 --bots 400 --ramp 200 --duration 32s \
        --no-progress --log error > /dev/null 2>&1 &
    BP=$!
    sleep 12
}
