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

# A store made by the previous version (schema 1: the counter row) migrates, keeping its
# events' seq and its live hold count, and the event sequence goes on from there without a gap.
eval "$HF_TEST_ENGINE_RESET"
HF_PG_TEST_SCHEMA_UPTO=1 "$cli" --engine "$HF_TEST_ENGINE_URL" resources >/dev/null
psql -c "INSERT INTO hf_test.events (seq, at_ms, type, resource, data) VALUES
  (1, 1, 'resource.created', 'old', '{}'), (2, 2, 'resource.updated', 'old', '{}');
  INSERT INTO hf_test.resources (name, capacity, version, declared) VALUES ('old', 5, 2, true);
  UPDATE hf_test.counter SET last_seq = 2, live_holds = 0"
[ "$(psql -t -A -c 'SELECT max(version) FROM hf_test.holdfast_schema')" = 1 ] ||
	{ echo "schema_test: the hook did not stop at version 1" >&2; exit 1; }
"$cli" --engine "$HF_TEST_ENGINE_URL" resources put old --capacity 6 >/dev/null
v=$(psql -t -A -c "SELECT max(version) FROM hf_test.holdfast_schema")
[ "$v" = 3 ] || { echo "schema_test: migrated to version '$v', want 3" >&2; exit 1; }
seqs=$("$cli" --engine "$HF_TEST_ENGINE_URL" --json events --after 0 |
	python3 -c 'import json,sys; print(",".join(str(e["seq"]) + e["type"] for e in json.load(sys.stdin)["events"]))')
case $seqs in
"1resource.created,2resource.updated,3resource.updated") ;;
*) echo "schema_test: events after the migration: '$seqs'" >&2; exit 1 ;;
esac
echo "schema_test: a version-1 store migrates; its event sequence goes on without a gap"
