#!/usr/bin/env bash
# redis_instructions.sh — what one acquire + release through the redis:// engine costs
# redis-server, counted by callgrind (user-space instructions; load does not change them),
# beside Redis's own SET NX PX + Lua release peer on the same server build.
#
#   bench/redis_instructions.sh [HOLDFAST_BENCH]   # default: build-bench's, built here (-j2)
#   HF_INSTR_PAIRS=500 HF_INSTR_CLIENTS=8              # the defaults
#
# Each side: a fresh redis-server under callgrind, a warm-up of 100 pairs, callgrind_control
# -z, PAIRS pairs (holdfast-bench --scenario 1 --clients CLIENTS --no-check; --engine redis://...
# drives the engine in-process, so the count is Redis's alone), a dump, then
# bench/callgrind_split.py per pair. Prints one line per side and the costliest functions.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PAIRS=${HF_INSTR_PAIRS:-500}
CLIENTS=${HF_INSTR_CLIENTS:-8} # more clients, larger batches of calls per script (redis://)
BENCH=${1:-}
if [ -z "$BENCH" ]; then
	cmake -S "$ROOT" -B "$ROOT/build-bench" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	cmake --build "$ROOT/build-bench" -j2 --target holdfast-bench >/dev/null
	BENCH=$ROOT/build-bench/src/bench/holdfast-bench
fi
TMP=$(mktemp -d /tmp/hf-rinstr.XXXXXX)
VPID=
cleanup() {
	[ -n "$VPID" ] && kill "$VPID" 2>/dev/null && wait "$VPID" 2>/dev/null
	rm -rf "$TMP"
}
trap cleanup EXIT

free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

measure() { # name, then holdfast-bench's target arguments (PORT replaced)
	local name=$1
	shift
	local port
	port=$(free_port)
	valgrind --tool=callgrind --callgrind-out-file="$TMP/$name.cg" redis-server --port "$port" \
		--bind 127.0.0.1 --save '' --appendonly no --dir "$TMP" >"$TMP/$name.log" 2>&1 &
	VPID=$!
	for _ in $(seq 1 300); do
		redis-cli -p "$port" ping >/dev/null 2>&1 && break
		sleep 0.1
	done
	local args=("${@//PORT/$port}")
	"$BENCH" --clients "$CLIENTS" --ops 100 --seed 42 --no-check "${args[@]}" --scenario 1 >/dev/null
	callgrind_control -z "$VPID" >/dev/null 2>&1
	"$BENCH" --clients "$CLIENTS" --ops "$PAIRS" --seed 42 --no-check "${args[@]}" --scenario 1 >/dev/null
	sleep 1
	callgrind_control -d "$VPID" >/dev/null 2>&1
	kill "$VPID"
	wait "$VPID" 2>/dev/null || true
	VPID=
	python3 "$ROOT/bench/callgrind_split.py" "$TMP/$name.cg.1" "$PAIRS" "$name" redis-server |
		python3 -c '
import json, sys
d = json.load(sys.stdin)
print("%-12s %9d instructions per pair  %s" % (d["label"], d["per_pair"], d["components"]))
for t in d["top"][:8]:
    print("    %-40s %8d" % (t["fn"], t["per_pair"]))'
}

measure redis-engine --engine "redis://127.0.0.1:PORT/0"
measure "redis-setnx" --peer redis-setnx --redis "127.0.0.1:PORT"
