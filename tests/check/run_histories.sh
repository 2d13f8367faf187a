#!/usr/bin/env bash
# run_histories.sh CHECK DIR — runs holdfast-check on every DIR/*.jsonl. Each file's first
# line says what it must give: "# expect: STATUS [CHECK] [OPTIONS...]" — the exit status, the
# check that must be named in the output (for violations), and options for holdfast-check.
set -uo pipefail
check=$1 dir=$2
fail=0 n=0
for f in "$dir"/*.jsonl; do
	read -r _ _ want name args < <(head -1 "$f") || true
	case "$name" in --*) args="$name $args" name= ;; esac
	# shellcheck disable=SC2086
	out=$("$check" $args "$f" 2>&1)
	rc=$?
	n=$((n + 1))
	if [ "$rc" != "$want" ] || { [ -n "$name" ] && ! grep -q "VIOLATION $name:" <<<"$out"; }; then
		echo "FAIL $f: want status $want ${name:+($name)}, got $rc"
		echo "$out" | sed 's/^/    /'
		fail=1
	else
		echo "ok   $f (status $rc${name:+, $name})"
	fi
done
[ "$n" -gt 0 ] || { echo "no histories in $dir"; exit 1; }
exit $fail
