#!/usr/bin/env bash
# schema_test.sh HOLDFAST_CLI — run under with_pg.sh: the schema is created by the first
# opener, several instances opening at once all agree, and a schema newer than this build
# is refused with a clear error instead of being used.
set -euo pipefail
cli=$1
psql() { "$PGBIN/psql" -q -X -v ON_ERROR_STOP=1 -h "$HF_PG_DIR" -U "$HF_PG_USER" -d postgres "$@"; }
eval "$HF_TEST_ENGINE_RESET"

# Five openers race on an empty database: one migrates, the others wait for it.
pids=()
for i in 1 2 3 4 5; do
	"$cli" --engine "$HF_TEST_ENGINE_URL" resources >/dev/null &
	pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done
rows=$(psql -t -A -c "SELECT count(*) || ' ' || max(version) FROM hf_test.holdfast_schema")
case $rows in
"1 "[0-9]*) ;;
*) echo "schema_test: expected one schema version row, got '$rows'" >&2; exit 1 ;;
esac

# A newer schema (a later holdfast migrated it) must not be used by this build.
psql -c 'UPDATE hf_test.holdfast_schema SET version = 9999'
if out=$("$cli" --engine "$HF_TEST_ENGINE_URL" resources 2>&1); then
	echo "schema_test: a newer schema was accepted: $out" >&2
	exit 1
fi
case $out in
*"newer than this build"*) ;;
*) echo "schema_test: unclear refusal: $out" >&2; exit 1 ;;
esac
echo "schema_test: concurrent migration and newer-schema refusal work"
