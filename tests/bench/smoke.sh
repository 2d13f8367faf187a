#!/usr/bin/env bash
# smoke.sh — a short run of every holdfast-bench scenario, which must pass its checks:
#   smoke.sh engine BENCH            through the library on a temporary file: store
#   smoke.sh server BENCH HOLDFASTD  against a real holdfastd on a free loopback port
# Small and short (a couple of seconds each): this checks correctness, never speed.
set -euo pipefail
mode=$1 bench=$2
dir=$(mktemp -d /tmp/hf-bench-smoke.XXXXXX)
pid=
cleanup() {
	if [ -n "$pid" ]; then kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
	rm -rf "$dir"
}
trap cleanup EXIT
. "$(dirname "$0")/../server/start_holdfastd.sh"

if [ "$mode" = server ]; then
	start_holdfastd "$3" "file:$dir/holdfast.db" "$dir/server.log"
	target=(--server "http://127.0.0.1:$port")
fi

runs=0
run() { # scenario, extra options
	local s=$1
	shift
	echo "== scenario $s $*"
	# In-process, each run opens a store of its own: a store left with a previous run's
	# unfinished sagas would resume them against that run's services, long gone.
	runs=$((runs + 1))
	[ "$mode" = server ] || target=(--engine "file:$dir/bench-$runs.db")
	"$bench" "${target[@]}" --scenario "$s" --clients 6 --duration 1.5 --seed 7 "$@"
}
run 1
run 2 --cs-us 200
run 3 --stock 10 --max-units 3
run 4
run 5 --lease-ms 100 --abandon-pct 20
# flight bookings through real sagas (and the same without): few seats, so that seats are
# contended and sold out, and declined cards compensate
run 6 --flights 2 --seats 10 --decline-pct 30
run 6 --flights 2 --seats 10 --decline-pct 30 --plain
# a count bound and the JSON report
[ "$mode" = server ] || target=(--engine "file:$dir/bench-json.db")
"$bench" "${target[@]}" --scenario 3 --clients 4 --ops 200 --json >"$dir/out.json"
grep -q '"pass": true' "$dir/out.json"
echo "smoke: all scenarios passed their checks"
