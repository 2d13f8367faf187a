#!/usr/bin/env bash
# schema_test.sh HOLDFAST_CLI — run under with_pg.sh: the schema is created by the first
# opener, several instances opening at once all agree, and a schema newer than this build
# is refused with a clear error instead of being used.
set -euo pipefail
cli=$1
latest=11 # the schema version this build migrates to
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
# (The open itself then fails: a schema before version 5 has no saga tables for the saga
# orchestrator's first look. The migration it stopped is what this step is for.)
HF_PG_TEST_SCHEMA_UPTO=1 "$cli" --engine "$HF_TEST_ENGINE_URL" resources >/dev/null 2>&1 || true
psql -c "INSERT INTO hf_test.events (seq, at_ms, type, resource, data) VALUES
  (1, 1, 'resource.created', 'old', '{}'), (2, 2, 'resource.updated', 'old', '{}');
  INSERT INTO hf_test.resources (name, capacity, version, declared) VALUES ('old', 5, 2, true);
  UPDATE hf_test.counter SET last_seq = 2, live_holds = 0"
[ "$(psql -t -A -c 'SELECT max(version) FROM hf_test.holdfast_schema')" = 1 ] ||
	{ echo "schema_test: the hook did not stop at version 1" >&2; exit 1; }
"$cli" --engine "$HF_TEST_ENGINE_URL" resources put old --capacity 6 >/dev/null
v=$(psql -t -A -c "SELECT max(version) FROM hf_test.holdfast_schema")
[ "$v" = $latest ] || { echo "schema_test: migrated to version '$v', want $latest" >&2; exit 1; }
# seq, type, then each resource's revision: "1resource.created/old:1,..."
show_events() {
	"$cli" --engine "$HF_TEST_ENGINE_URL" --json events --after 0 | python3 -c '
import json, sys
def revs(e):
    r = e.get("revisions") or {e["resource"]: e["revision"]}
    return "+".join("%s:%d" % kv for kv in sorted(r.items()))
print(",".join("%d%s/%s" % (e["seq"], e["type"], revs(e)) for e in json.load(sys.stdin)["events"]))'
}
seqs=$(show_events)
case $seqs in
"1resource.created/old:1,2resource.updated/old:2,3resource.updated/old:3") ;;
*) echo "schema_test: events after the migration: '$seqs'" >&2; exit 1 ;;
esac
echo "schema_test: a version-1 store migrates; its event sequence goes on without a gap"

# A store of version 2 (before revisions) migrates: its old events (numbered or not yet) get
# the revisions they would have had, a multi-resource hold's extend and confirm (whose data
# does not list the parts) included, and revisions go on from there.
eval "$HF_TEST_ENGINE_RESET"
HF_PG_TEST_SCHEMA_UPTO=2 "$cli" --engine "$HF_TEST_ENGINE_URL" resources >/dev/null 2>&1 || true
psql -c "INSERT INTO hf_test.events (at_ms, type, resource, hold_id, data) VALUES
  (1, 'hold.granted', 'ma', 'h1', '{\"id\":\"h1\",\"resources\":[{\"name\":\"ma\"},{\"name\":\"mb\"}]}'),
  (2, 'hold.extended', 'ma', 'h1', '{\"id\":\"h1\"}'),
  (3, 'hold.confirmed', 'ma', 'h1', '{\"id\":\"h1\"}');
  SELECT hf_test.sequence_events();
  INSERT INTO hf_test.events (at_ms, type, resource, hold_id, data) VALUES
  (4, 'hold.released', 'ma', 'h1', '{\"id\":\"h1\",\"resources\":[{\"name\":\"ma\"},{\"name\":\"mb\"}]}'),
  (5, 'resource.created', 'mb', NULL, '{}')" >/dev/null
"$cli" --engine "$HF_TEST_ENGINE_URL" resources put ma --capacity 3 >/dev/null
seqs=$(show_events)
want="1hold.granted/ma:1+mb:1,2hold.extended/ma:2+mb:2,3hold.confirmed/ma:3+mb:3"
want="$want,4hold.released/ma:4+mb:4,5resource.created/mb:5,6resource.created/ma:5"
[ "$seqs" = "$want" ] || { echo "schema_test: revisions after the migration: '$seqs'" >&2; exit 1; }
echo "schema_test: a version-2 store migrates; old events carry their revisions"

# A store of version 6 (the functions before they were trimmed) migrates with a hold taken by
# version 6's function: that hold is released, and a new one granted, by version 7's.
eval "$HF_TEST_ENGINE_RESET"
HF_PG_TEST_SCHEMA_UPTO=6 "$cli" --engine "$HF_TEST_ENGINE_URL" resources >/dev/null
psql -c "SET search_path = hf_test;
  SELECT o_verdict FROM hf_acquire('{k6}', '{1}', '{1}', false, false, false, 2, 'exclusive',
  'o', 60000, '0123456789abcdef0123456789abcdef', 'fedcba9876543210fedcba9876543210', 100, 100)" >/dev/null
"$cli" --engine "$HF_TEST_ENGINE_URL" --json release 0123456789abcdef0123456789abcdef fedcba9876543210fedcba9876543210 >/dev/null
[ "$(psql -t -A -c 'SELECT max(version) FROM hf_test.holdfast_schema')" = $latest ] ||
	{ echo "schema_test: the version-6 store was not migrated" >&2; exit 1; }
v=$(psql -t -A -c "SET search_path = hf_test;
  SELECT o_verdict FROM hf_acquire('{k6}', '{1}', '{1}', false, false, false, 2, 'exclusive',
  'o', 60000, '00000000000000000000000000000007', '00000000000000000000000000000007', 100, 100)")
[ "$v" = granted ] || { echo "schema_test: version 8's acquire answered '$v'" >&2; exit 1; }
seqs=$(show_events)
want="1hold.granted/k6:1,2hold.released/k6:2,3hold.granted/k6:3"
[ "$seqs" = "$want" ] || { echo "schema_test: events across version 6 -> 7: '$seqs'" >&2; exit 1; }
echo "schema_test: a version-6 store migrates; its holds go on under version 8's functions"

# A store of version 7 (before one lock order over all names) migrates with a live hold of
# two names, one declared and one implicit, taken by version 7's function: version 8's
# releases it (the implicit name goes, idle) and grants the same names again.
eval "$HF_TEST_ENGINE_RESET"
# (d7 declared by hand: this build's resource PUT counts resources by schema 10's slots.)
HF_PG_TEST_SCHEMA_UPTO=7 "$cli" --engine "$HF_TEST_ENGINE_URL" resources >/dev/null
psql -c "INSERT INTO hf_test.resources (name, capacity, version, declared) VALUES ('d7', 2, 1, true)"
acquire7() {
	psql -t -A -c "SET search_path = hf_test;
  SELECT string_agg(o_verdict || ':' || o_name, ',' ORDER BY o_name) FROM hf_acquire('{d7,i7}',
  '{1,1}', '{2,2}', false, false, false, 0, 'units', 'o', 60000, '$1', '$1', 100, 100)"
}
h7=00000000000000000000000000000070
[ "$(acquire7 $h7)" = "granted:d7,granted:i7" ] || { echo "schema_test: version 7's acquire failed" >&2; exit 1; }
"$cli" --engine "$HF_TEST_ENGINE_URL" --json release $h7 $h7 >/dev/null
[ "$(psql -t -A -c 'SELECT max(version) FROM hf_test.holdfast_schema')" = $latest ] ||
	{ echo "schema_test: the version-7 store was not migrated" >&2; exit 1; }
[ "$(psql -t -A -c "SELECT count(*) FROM hf_test.resources WHERE name = 'i7'")" = 0 ] ||
	{ echo "schema_test: the idle implicit resource stayed" >&2; exit 1; }
v=$(acquire7 00000000000000000000000000000080)
[ "$v" = "granted:d7,granted:i7" ] || { echo "schema_test: version 8's acquire answered '$v'" >&2; exit 1; }
echo "schema_test: a version-7 store migrates; its holds go on under version 8's functions"

# A store of version 8 migrates to 9 and 10 (9: less WAL per grant: no events id key, a
# partial seq index, no hold_parts foreign key) with a live hold taken by version 8's
# function and events numbered and not: the new release ends it, its implicit name goes, a
# new grant follows, and the event log goes on without a gap.
eval "$HF_TEST_ENGINE_RESET"
HF_PG_TEST_SCHEMA_UPTO=8 "$cli" --engine "$HF_TEST_ENGINE_URL" resources >/dev/null
acquire8() {
	psql -t -A -c "SET search_path = hf_test;
  SELECT o_verdict FROM hf_acquire('{k8}', '{1}', '{1}', false, false, false, 2, 'exclusive',
  'o', 60000, '$1', '$1', 100, 100)"
}
h8=00000000000000000000000000000088
[ "$(acquire8 00000000000000000000000000000081)" = granted ] ||
	{ echo "schema_test: version 8's acquire failed" >&2; exit 1; }
"$cli" --engine "$HF_TEST_ENGINE_URL" --json release 00000000000000000000000000000081 \
	00000000000000000000000000000081 >/dev/null
[ "$(psql -t -A -c 'SELECT max(version) FROM hf_test.holdfast_schema')" = $latest ] ||
	{ echo "schema_test: the version-8 store was not migrated" >&2; exit 1; }
HF_PG_TEST_SCHEMA_UPTO=8 "$cli" --engine "$HF_TEST_ENGINE_URL" resources >/dev/null 2>&1 &&
	{ echo "schema_test: a version-8 build opened a version-10 store" >&2; exit 1; }
[ "$(acquire8 $h8)" = granted ] || { echo "schema_test: version 9's acquire failed" >&2; exit 1; }
"$cli" --engine "$HF_TEST_ENGINE_URL" --json release $h8 $h8 >/dev/null
[ "$(psql -t -A -c "SELECT count(*) FROM hf_test.resources WHERE name = 'k8'")" = 0 ] ||
	{ echo "schema_test: the idle implicit resource stayed" >&2; exit 1; }
seqs=$(show_events)
want="1hold.granted/k8:1,2hold.released/k8:2,3hold.granted/k8:3,4hold.released/k8:4"
[ "$seqs" = "$want" ] || { echo "schema_test: events across version 8 -> 9: '$seqs'" >&2; exit 1; }
echo "schema_test: a version-8 store migrates to 9 and 10 (one way); its holds go on"

# A store of version 9 (max_resources by a count(*) over resources) migrates to 10 (the count
# in live_resources' 64 slots, kept by triggers on resources): the slots start at the count,
# declared and implicit resources in it, and follow what creates or drops one afterwards (a
# release dropping an implicit name made by version 9, resource PUT and DELETE, version 10's
# acquire, a TRUNCATE); version 10's acquire refuses by them.
eval "$HF_TEST_ENGINE_RESET"
HF_PG_TEST_SCHEMA_UPTO=9 "$cli" --engine "$HF_TEST_ENGINE_URL" resources >/dev/null
psql -c "INSERT INTO hf_test.resources (name, capacity, version, declared)
  SELECT 'd9-' || i, 3, 1, true FROM generate_series(1, 40) i"
acquire9() {
	psql -t -A -c "SET search_path = hf_test;
  SELECT string_agg(o_verdict, ',') FROM hf_acquire('{$2}', '{1}', '{1}', false, false, false, 2,
  'exclusive', 'o', 60000, '$1', '$1', 100, $3)"
}
h9=00000000000000000000000000000099
[ "$(acquire9 $h9 i9 100)" = granted ] || { echo "schema_test: version 9's acquire failed" >&2; exit 1; }
"$cli" --engine "$HF_TEST_ENGINE_URL" resources >/dev/null
[ "$(psql -t -A -c 'SELECT max(version) FROM hf_test.holdfast_schema')" = $latest ] ||
	{ echo "schema_test: the version-9 store was not migrated" >&2; exit 1; }
slots() {
	psql -t -A -c "SELECT (SELECT sum(n) FROM hf_test.live_resources) || ' '
  || (SELECT count(*) FROM hf_test.live_resources) || ' ' || (SELECT count(*) FROM hf_test.resources)"
}
want_slots() {
	[ "$(slots)" = "$1 64 $1" ] || { echo "schema_test: $2: slots, rows, resources '$(slots)', want '$1 64 $1'" >&2; exit 1; }
}
want_slots 41 "after the migration"
"$cli" --engine "$HF_TEST_ENGINE_URL" --json release $h9 $h9 >/dev/null
want_slots 40 "after the release of the implicit name"
"$cli" --engine "$HF_TEST_ENGINE_URL" resources put p10 --capacity 2 >/dev/null
"$cli" --engine "$HF_TEST_ENGINE_URL" resources delete d9-1 >/dev/null
"$cli" --engine "$HF_TEST_ENGINE_URL" resources delete d9-2 >/dev/null
want_slots 39 "after a PUT and two DELETEs"
# Version 10's function refuses by the slots: 39 resources, a limit of 40, two new names.
[ "$(acquire9 00000000000000000000000000000100 i10 40)" = granted ] ||
	{ echo "schema_test: version 10's acquire under the limit failed" >&2; exit 1; }
want_slots 40 "after version 10's acquire"
[ "$(acquire9 00000000000000000000000000000101 i11 40)" = limit_resources ] ||
	{ echo "schema_test: version 10's acquire over the limit was not refused" >&2; exit 1; }
psql -c "TRUNCATE hf_test.resources" >/dev/null
want_slots 0 "after a TRUNCATE"
# The slots take a transaction's net count at its commit: many rows by one statement, rows
# dropped, a savepoint rolled back; a TRUNCATE then inserts.
psql -c "BEGIN; INSERT INTO hf_test.resources (name, capacity, version, declared)
  SELECT 'm' || i, 1, 1, true FROM generate_series(1, 500) i;
  DELETE FROM hf_test.resources WHERE name LIKE 'm1%'; SAVEPOINT s;
  INSERT INTO hf_test.resources (name, capacity, version, declared) VALUES ('x', 1, 1, true);
  ROLLBACK TO s; COMMIT" >/dev/null
want_slots 389 "after a transaction of 500 inserts and 111 deletes"
# (PostgreSQL refuses a TRUNCATE after rows changed in its transaction: pending trigger events.)
psql -c "BEGIN; TRUNCATE hf_test.resources;
  INSERT INTO hf_test.resources (name, capacity, version, declared) VALUES ('z', 1, 1, true); COMMIT" >/dev/null
want_slots 1 "after a TRUNCATE and an insert in one transaction"
echo "schema_test: a version-9 store migrates to 10; live_resources counts the resources"

# A backlog of 10,000 events nobody has numbered yet (every reader away) on a table whose
# statistics say few events wait (ANALYZE after 10,000 were numbered): one read numbers them
# all, in id order, without a gap. Schema 10's numbering was quadratic in the backlog on such
# estimates: this read passed statement_timeout (15 s), as would every retry; 3,000 took
# 6.7 s. (HF_PG_TEST_SCHEMA_UPTO=10 on the first open shows it.)
eval "$HF_TEST_ENGINE_RESET"
"$cli" --engine "$HF_TEST_ENGINE_URL" resources >/dev/null
backlog() {
	psql -c "INSERT INTO hf_test.events (at_ms, type, resource, data)
  SELECT i, 'resource.updated', 'b', '{}' FROM generate_series(1, 10000) i" >/dev/null
}
last_events() {
	"$cli" --engine "$HF_TEST_ENGINE_URL" --json events --after "$1" | python3 -c '
import json, sys
e = json.load(sys.stdin)["events"]
print(len(e), e[-1]["seq"], e[-1]["at_ms"])'
}
backlog
[ "$(last_events 9990)" = "10 10000 10000" ] || { echo "schema_test: the first 10,000 events" >&2; exit 1; }
psql -c "ANALYZE hf_test.events" >/dev/null
backlog
got=$(last_events 19990)
[ "$got" = "10 20000 10000" ] ||
	{ echo "schema_test: a backlog of 10,000 events read as '$got', want '10 20000 10000'" >&2; exit 1; }
echo "schema_test: a backlog of 10,000 unnumbered events is numbered by one read"
