#!/usr/bin/env bash
# bench_history.sh BENCH CHECK [HOLDFASTD] — short holdfast-bench runs that write their
# histories; holdfast-check must find each valid, and must reject one with two fences
# swapped. Without HOLDFASTD the bench runs in-process (file: engine); with it, against a
# real holdfastd on a free loopback port (over HTTP). Correctness only: small and short.
# With HOLDFAST_CLI (the holdfast command) set, the event log each run left is read back
# through it and checked too (holdfast-check --events), and must fail with an event dropped.
set -euo pipefail
bench=$1 check=$2 server=${3:-}
dir=$(mktemp -d /tmp/hf-check-bench.XXXXXX)
pid=
cleanup() {
	if [ -n "$pid" ]; then kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
	rm -rf "$dir"
}
trap cleanup EXIT
if [ -n "$server" ]; then
	"$server" --listen 127.0.0.1:0 --engine "file:$dir/server.db" >"$dir/server.log" 2>&1 &
	pid=$!
	port=
	for _ in $(seq 1 300); do
		port=$(sed -n 's/.*msg=listening addr=[^ ]* port=\([0-9]*\).*/\1/p' "$dir/server.log")
		[ -n "$port" ] && break
		kill -0 "$pid" 2>/dev/null || { cat "$dir/server.log"; exit 1; }
		sleep 0.05
	done
	[ -n "$port" ] || { echo "holdfastd did not start"; cat "$dir/server.log"; exit 1; }
fi
cli=${HOLDFAST_CLI:-}
# Every event of the store at TARGET..., as JSON lines, read page by page like a consumer.
dump_events() {
	python3 - "$cli" "$@" <<'PY'
import json, subprocess, sys
cli, target, after = sys.argv[1], sys.argv[2:], 0
while True:
    page = json.loads(subprocess.check_output(
        [cli, *target, "--json", "events", "--after", str(after), "--limit", "1000"]))
    for e in page["events"]:
        print(json.dumps(e))
    if not page["events"]:
        break
    after = page["events"][-1]["seq"]
PY
}
for s in 2 3 5; do
	extra=()
	[ "$s" = 5 ] && extra=(--lease-ms 100 --abandon-pct 20)
	target=(--engine "file:$dir/s$s.db")
	[ -n "$server" ] && target=(--server "http://127.0.0.1:$port")
	"$bench" "${target[@]}" --scenario "$s" --clients 4 --duration 1 --seed 3 \
		--history "$dir/h$s.jsonl" "${extra[@]}" >/dev/null
	"$check" "$dir/h$s.jsonl"
	if [ -n "$cli" ]; then
		dump_events "${target[@]}" >"$dir/ev$s.jsonl"
		"$check" --events "$dir/ev$s.jsonl"
	fi
done
if [ -n "$cli" ]; then
	# One event lost from the middle of the log must not pass.
	n=$(wc -l <"$dir/ev2.jsonl")
	[ "$n" -gt 20 ] || { echo "too few events ($n)"; exit 1; }
	sed "$((n / 2))d" "$dir/ev2.jsonl" >"$dir/ev-lost.jsonl"
	set +e
	"$check" --events --max-print 1 "$dir/ev-lost.jsonl"
	rc=$?
	set -e
	[ "$rc" = 1 ] || { echo "a lost event not caught (status $rc)"; exit 1; }
fi
# The same history with the fences of two grants swapped must not pass.
python3 - "$dir/h2.jsonl" "$dir/bad.jsonl" <<'PY'
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
oks = [i for i, x in enumerate(lines) if x.get("type") == "ok" and x.get("f") == "acquire"]
assert len(oks) > 20, "too few grants"
a, b = lines[oks[10]]["resources"][0], lines[oks[11]]["resources"][0]
a["fence"], b["fence"] = b["fence"], a["fence"]
open(sys.argv[2], "w").write("".join(json.dumps(x) + "\n" for x in lines))
PY
set +e
"$check" --max-print 1 "$dir/bad.jsonl"
rc=$?
set -e
[ "$rc" = 1 ] || { echo "swapped fences not caught (status $rc)"; exit 1; }
echo "bench histories: valid; swapped fences caught"
