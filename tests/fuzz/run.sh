#!/usr/bin/env bash
# run.sh TARGET SECONDS [BINARY] [WORKDIR] — fuzzes one target with libFuzzer for SECONDS.
#   TARGET   codec, journal, engine, http, http1 or history (tests/fuzz/fuzz_TARGET.c)
#   BINARY   the libFuzzer build of it (default: build-fuzz/tests/fuzz/fuzz_TARGET)
#   WORKDIR  scratch space (default: build-fuzz/tests/fuzz/work); new corpus entries land in
#            WORKDIR/corpus-TARGET, crashes in WORKDIR/crashes-TARGET — never in the source
#            tree. Copy a minimised crash into tests/fuzz/regressions/TARGET/ by hand.
# Starts from the seed corpus (tests/fuzz/corpus/TARGET) and the regressions. Exit status:
# libFuzzer's (0: no crash). The last lines of its output (cov:, exec/s) are printed.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
t=${1:?usage: run.sh TARGET SECONDS [BINARY] [WORKDIR]}
secs=${2:?usage: run.sh TARGET SECONDS [BINARY] [WORKDIR]}
bin=${3:-$here/../../build-fuzz/tests/fuzz/fuzz_$t}
work=${4:-$here/../../build-fuzz/tests/fuzz/work}
[ -x "$bin" ] || { echo "run.sh: no fuzzer at $bin (configure with -DHF_FUZZ=ON under clang)"; exit 2; }
mkdir -p "$work/corpus-$t" "$work/crashes-$t"
seeds=("$here/corpus/$t")
[ -d "$here/regressions/$t" ] && seeds+=("$here/regressions/$t")
extra=()
[ -f "$here/$t.dict" ] && extra+=(-dict="$here/$t.dict")
# An engine input is a list of operations (two to four bytes each): let it be long.
[ "$t" = engine ] && extra+=(-max_len=192 -len_control=0)
log="$work/fuzz-$t.log"
# Every journal and engine input builds and frees a whole engine state, whose 65536-slot
# event ring costs ~260k free() calls; ASan records a stack for each. Without those stacks
# these targets run faster. Replay a crash with fuzz_TARGET_replay for full allocation stacks.
if { [ "$t" = journal ] || [ "$t" = engine ]; } && [ -z "${ASAN_OPTIONS:-}" ]; then
	export ASAN_OPTIONS=malloc_context_size=0
fi
set +e
"$bin" -max_total_time="$secs" -timeout=25 -rss_limit_mb=2048 -print_final_stats=1 \
	-artifact_prefix="$work/crashes-$t/" "${extra[@]}" "$work/corpus-$t" "${seeds[@]}" >"$log" 2>&1
rc=$?
set -e
grep -E '^INFO: Seed:|^#[0-9]+[[:space:]]+(INITED|DONE)|stat::number_of_executed_units|stat::peak_rss|ERROR|SUMMARY' "$log" | tail -9
if [ "$rc" != 0 ]; then
	echo "run.sh: fuzz_$t found a problem (status $rc); see $log and $work/crashes-$t/"
	tail -60 "$log"
	# The input that broke it (libFuzzer writes crash-*, leak-*, timeout-*, oom-*): replay
	# it with fuzz_${t}_replay, minimise it, and keep it in tests/fuzz/regressions/$t/.
	for f in "$work/crashes-$t"/*; do
		[ -f "$f" ] && echo "run.sh: crashing input: $f"
	done
fi
exit "$rc"
