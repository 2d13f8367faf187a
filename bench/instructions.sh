#!/usr/bin/env bash
# bench/instructions.sh — instructions per lock pair, server side, counted by callgrind: holdfastd
# (store on tmpfs, durable journal: WAL, synchronous=FULL, every answer after its commit) and
# redis-server (SET NX PX + Lua release, no persistence), driven by the same client
# (holdfast-bench scenario 1), the same clients and the same number of pairs. Start-up is
# subtracted: each server is warmed up with a short run, its counters are zeroed
# (callgrind_control -z), the measured run goes, the server is given time to settle (the stats
# follower reads what the run wrote), then the counters are dumped (callgrind_control -d).
# Instruction counts do not depend on the machine's load; the throughput figures at the end do.
#
#   bench/instructions.sh [LABEL]      measure the working tree; LABEL (default "current")
#                                      names the result, bench/instructions/LABEL.json
# Environment: HF_INSTR_PAIRS (default 2000), HF_INSTR_CLIENTS (default 8), HF_INSTR_WARMUP
# (pairs, default 200), HF_INSTR_THROUGHPUT=0 (skip the wall-clock scenario-1 runs),
# HF_INSTR_KEEP=1 (keep the temporary directory with the dumps, for callgrind_annotate),
# HF_INSTR_DURATION (s per throughput run, default 5), HF_BENCH_BUILD (build dir).
# Writes bench/instructions/LABEL.json and regenerates bench/instructions.md from every result
# there, then splices that into docs/benchmarks.md (between its "instructions" markers).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
LABEL=${1:-current}
BUILD=${HF_BENCH_BUILD:-$ROOT/build-bench}
PAIRS=${HF_INSTR_PAIRS:-2000}
CLIENTS=${HF_INSTR_CLIENTS:-8}
WARMUP=${HF_INSTR_WARMUP:-200}
DUR=${HF_INSTR_DURATION:-5}
OUT=$ROOT/bench/instructions
TMP=$(mktemp -d /tmp/hf-instr.XXXXXX)
SHM=$(mktemp -d /dev/shm/hf-instr.XXXXXX) # tmpfs: fsync costs nothing there, and no disk waits
PIDS=()

log() { printf '%s  %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

cleanup() {
	set +e
	for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
	for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
	[ "${HF_INSTR_KEEP:-0}" = 1 ] && log "kept $TMP (the callgrind dumps: *.cg.1)"
	[ "${HF_INSTR_KEEP:-0}" = 1 ] || rm -rf "$TMP"
	rm -rf "$SHM"
}
trap cleanup EXIT

free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

log "building the working tree in $BUILD (-j2)"
cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$BUILD" -j2 --target holdfast-bench holdfastd >/dev/null
BENCH=$BUILD/src/bench/holdfast-bench
HOLDFASTD=$BUILD/src/server/holdfastd
mkdir -p "$OUT"

wait_up() { # what to poll
	for _ in $(seq 1 600); do
		if eval "$1" >/dev/null 2>&1; then return 0; fi
		sleep 0.1
	done
	log "server did not come up: $1"
	exit 1
}

# One server under callgrind: warm up, zero, measure PAIRS pairs, settle, dump, stop.
# measure NAME "server command..." -- bench args...
measure() {
	local name=$1 ready=$2
	shift 2
	local cmd=()
	while [ "$1" != -- ]; do
		cmd+=("$1")
		shift
	done
	shift
	valgrind --tool=callgrind --callgrind-out-file="$TMP/$name.cg" "${cmd[@]}" \
		>"$TMP/$name.log" 2>&1 &
	local pid=$!
	PIDS+=("$pid")
	wait_up "$ready"
	"$BENCH" --clients "$CLIENTS" --ops "$WARMUP" --seed 42 --no-check "$@" >/dev/null
	callgrind_control -z "$pid" >/dev/null 2>&1
	"$BENCH" --clients "$CLIENTS" --ops "$PAIRS" --seed 42 --no-check --json "$@" \
		>"$TMP/$name.bench.json"
	sleep 3 # the server finishes what the run left it (commits, the stats follower)
	callgrind_control -d "$pid" >/dev/null 2>&1
	kill -TERM "$pid"
	wait "$pid" || true
	python3 "$ROOT/bench/callgrind_split.py" "$TMP/$name.cg.1" "$PAIRS" "$LABEL" "$name" \
		>"$TMP/$name.json"
}

HF_PORT=$(free_port)
HF_CMD="$HOLDFASTD --listen 127.0.0.1:$HF_PORT --engine file:$SHM/holdfast.db"
log "callgrind: holdfastd, $PAIRS pairs, $CLIENTS clients"
# shellcheck disable=SC2086
measure holdfastd "curl -sf http://127.0.0.1:$HF_PORT/readyz" $HF_CMD -- \
	--server "http://127.0.0.1:$HF_PORT" --scenario 1
R_PORT=$(free_port)
R_CMD="redis-server --port $R_PORT --bind 127.0.0.1 --save '' --appendonly no --dir $TMP"
log "callgrind: redis-server, $PAIRS pairs, $CLIENTS clients"
measure redis "redis-cli -p $R_PORT ping" redis-server --port "$R_PORT" --bind 127.0.0.1 \
	--save '' --appendonly no --dir "$TMP" -- \
	--peer redis-setnx --redis "127.0.0.1:$R_PORT" --scenario 1

# Scenario 1 throughput, wall clock (load-dependent), the same run for both.
TP="{}"
if [ "${HF_INSTR_THROUGHPUT:-1}" = 1 ]; then
	HT_PORT=$(free_port)
	"$HOLDFASTD" --listen "127.0.0.1:$HT_PORT" --engine "file:$SHM/tp.db" --log-level warn \
		>"$TMP/tp-holdfastd.log" 2>&1 &
	PIDS+=("$!")
	RT_PORT=$(free_port)
	redis-server --port "$RT_PORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$TMP" \
		--logfile "$TMP/tp-redis.log" &
	PIDS+=("$!")
	wait_up "curl -sf http://127.0.0.1:$HT_PORT/readyz"
	wait_up "redis-cli -p $RT_PORT ping"
	log "throughput: scenario 1, 32 clients, $DUR s each"
	"$BENCH" --clients 32 --duration "$DUR" --seed 42 --json --server "http://127.0.0.1:$HT_PORT" \
		--scenario 1 >"$TMP/tp-holdfastd.json"
	"$BENCH" --clients 32 --duration "$DUR" --seed 42 --json --peer redis-setnx \
		--redis "127.0.0.1:$RT_PORT" --scenario 1 >"$TMP/tp-redis.json"
	TP=$(python3 - "$TMP/tp-holdfastd.json" "$TMP/tp-redis.json" <<'EOF'
import json, sys
def g(p):
    d = json.load(open(p))
    for k in ("grants_per_s", "grants_s"):
        if k in d:
            return d[k]
    t = d.get("throughput") or {}
    return t.get("grants_per_s") or t.get("grants_s")
print(json.dumps({"holdfastd_grants_s": g(sys.argv[1]), "redis_grants_s": g(sys.argv[2]),
                  "load": open("/proc/loadavg").read().split()[0]}))
EOF
)
fi

python3 - "$TMP/holdfastd.json" "$TMP/redis.json" "$OUT/$LABEL.json" <<EOF
import json, sys
hf, rd = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
json.dump({
    "label": "$LABEL",
    "date": "$(date -u +%Y-%m-%dT%H:%MZ)",
    "source": "$(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo '?')",
    "pairs": $PAIRS, "clients": $CLIENTS, "warmup": $WARMUP,
    "holdfastd": hf, "redis": rd, "throughput_s1": $TP,
    "commands": {
        "holdfastd": "valgrind --tool=callgrind $HF_CMD",
        "redis": "valgrind --tool=callgrind $R_CMD",
        "client": "holdfast-bench --clients $CLIENTS --ops $PAIRS --seed 42 --no-check --scenario 1 (--server URL | --peer redis-setnx --redis HOST:PORT)",
    },
}, open(sys.argv[3], "w"), indent=1)
EOF
log "holdfastd $(python3 -c "import json;print(json.load(open('$OUT/$LABEL.json'))['holdfastd']['per_pair'])") instructions per pair; redis $(python3 -c "import json;print(json.load(open('$OUT/$LABEL.json'))['redis']['per_pair'])")"
python3 "$ROOT/bench/instructions_report.py" "$OUT" "$ROOT/bench/instructions.md" "$ROOT/docs/benchmarks.md"
log "wrote $OUT/$LABEL.json, bench/instructions.md, docs/benchmarks.md"
