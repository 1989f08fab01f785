#!/bin/sh
# Memory of heartbeatd's keepers: N supervised `sleep 600` programs under a release
# heartbeatd, once with the lean keeper (heartbeatd-keep beside heartbeatd) and once in the
# old mode (heartbeatd alone in a directory: each keeper is heartbeatd's own binary,
# `heartbeatd keep <id>`), one after the other in the same run.
#
# For each mode it prints, from /proc/PID/smaps_rollup:
#   - private memory per keeper (Private_Clean + Private_Dirty), median and max, KiB;
#   - PSS of heartbeatd plus all its keepers, MiB (shared pages counted once in total).
#
# Usage: make build && bench/keeper_memory.sh [N]     (N defaults to 500; run as any user)
# Needs target/release/heartbeatd and target/release/heartbeatd-keep (`make build`).
set -eu

N=${1:-500}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN="$ROOT/target/release/heartbeatd"
KEEP="$ROOT/target/release/heartbeatd-keep"
[ -x "$BIN" ] && [ -x "$KEEP" ] || { echo "build first: make build (needs $BIN and $KEEP)" >&2; exit 2; }
WORK=$(mktemp -d)
DAEMON=
cleanup() {
    [ -n "$DAEMON" ] && kill -TERM "$DAEMON" 2>/dev/null && wait "$DAEMON" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

# The keepers of heartbeatd $1: its children.
keepers() { cat "/proc/$1/task/"*/children 2>/dev/null | tr ' ' '\n' | grep -v '^$' || true; }

# Field $2 (kB) of /proc/$1/smaps_rollup; 0 when gone.
field() { awk -v f="$2:" '$1 == f { print $2; found = 1 } END { if (!found) print 0 }' "/proc/$1/smaps_rollup" 2>/dev/null || echo 0; }

# measure MODE BINARY: starts BINARY on N agents, waits for every program to run, prints a row.
measure() {
    mode=$1 bin=$2 dir="$WORK/$1"
    mkdir -p "$dir/data"
    {
        echo "http_port = 0"
        echo "data_dir = \"$dir/data\""
        echo "shutdown_timeout_s = 60"
        n=0
        while [ "$n" -lt "$N" ]; do
            printf '[[agents]]\nid = "p%d"\ncommand = ["/bin/sleep", "600"]\n' "$n"
            n=$((n + 1))
        done
    } > "$dir/heartbeatd.toml"
    "$bin" --config "$dir/heartbeatd.toml" > "$dir/heartbeatd.log" 2>&1 &
    DAEMON=$!
    # Every keeper has started its program (a child of its own).
    tries=0
    while :; do
        running=0
        for k in $(keepers "$DAEMON"); do
            [ -n "$(cat "/proc/$k/task/"*/children 2>/dev/null)" ] && running=$((running + 1))
        done
        [ "$running" -ge "$N" ] && break
        tries=$((tries + 1))
        [ "$tries" -gt 600 ] && { echo "$mode: only $running of $N programs running after 60 s; see $dir/heartbeatd.log" >&2; exit 1; }
        sleep 0.1
    done
    sleep 2 # let start-up settle (heartbeatd gives its parser's memory back)
    comm=$(cat "/proc/$(keepers "$DAEMON" | head -1)/comm")
    pss=$(field "$DAEMON" Pss)
    : > "$dir/private"
    for k in $(keepers "$DAEMON"); do
        p=$(field "$k" Pss)
        pss=$((pss + p))
        echo $(( $(field "$k" Private_Clean) + $(field "$k" Private_Dirty) )) >> "$dir/private"
    done
    count=$(wc -l < "$dir/private")
    median=$(sort -n "$dir/private" | awk -v n="$count" 'NR == int((n + 1) / 2) { print }')
    max=$(sort -n "$dir/private" | tail -1)
    printf '%-6s keepers=%-4s comm=%-16s private per keeper: median %s KiB, max %s KiB; PSS heartbeatd + keepers: %s MiB\n' \
        "$mode" "$count" "$comm" "$median" "$max" "$(awk -v k="$pss" 'BEGIN { printf "%.1f", k / 1024 }')"
    kill -TERM "$DAEMON"
    wait "$DAEMON" 2>/dev/null || true
    DAEMON=
}

measure lean "$BIN"
# The old mode: heartbeatd alone in a directory finds no heartbeatd-keep beside it.
mkdir -p "$WORK/alone"
cp "$BIN" "$WORK/alone/heartbeatd"
measure old "$WORK/alone/heartbeatd"
