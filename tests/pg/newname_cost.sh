#!/usr/bin/env bash
# newname_cost.sh HOLDFAST_CLI [SECONDS] — run under with_pg.sh: what an acquire of a new
# implicit name and the release that drops it cost inside PostgreSQL (ms per call, pgbench,
# one session), on a schema made by this build and on one stopped at an older version
# (OLD_VERSION, default 9: max_resources by count(*); made with HF_PG_TEST_SCHEMA_UPTO), side
# by side, with 0, 1,000, 10,000 and 100,000 idle declared resources. Not a test: a measurement for
# docs/operations.md ("Schema version 10").
set -euo pipefail
cli=$1
secs=${2:-5}
old=${OLD_VERSION:-9}
base="postgres:///postgres?host=$HF_PG_DIR&user=$HF_PG_USER"
psql() { PGOPTIONS="-c client_min_messages=warning" "$PGBIN/psql" -q -X -v ON_ERROR_STOP=1 -h "$HF_PG_DIR" -U "$HF_PG_USER" -d postgres "$@"; }
psql -c "DROP SCHEMA IF EXISTS cost_old CASCADE" -c "DROP SCHEMA IF EXISTS cost_new CASCADE" >/dev/null
HF_PG_TEST_SCHEMA_UPTO=$old "$cli" --engine "$base&schema=cost_old" resources >/dev/null
"$cli" --engine "$base&schema=cost_new" resources >/dev/null
script=$(mktemp)
trap 'rm -f "$script"' EXIT
cat >"$script" <<'SQL'
\set id random(1, 2000000000)
SELECT o_verdict FROM hf_acquire(ARRAY['m' || :id], '{1}', '{1}', false, false, false, 2, 'exclusive', 'o', 60000, md5(:id::text), md5(:id::text), 1000000, 2000000);
SELECT o_verdict FROM hf_hold_change('release', md5(:id::text), md5(:id::text), NULL, 0, 0);
SQL
run() {
	PGOPTIONS="-c search_path=$1" "$PGBIN/pgbench" -n -M prepared -r -c 1 -T "$secs" -f "$script" \
		-h "$HF_PG_DIR" -U "$HF_PG_USER" postgres 2>&1 |
		awk -v s="$1" -v r="$2" '/hf_acquire/ {a = $1} /hf_hold_change/ {d = $1}
		END {printf "%-8s resources %6d: acquire %s ms, release %s ms\n", s, r, a, d}'
}
have=0
echo "load average $(cut -d' ' -f1-3 /proc/loadavg); cost_old: schema $old, cost_new: this build's"
for want in 0 1000 10000 100000; do
	for s in cost_old cost_new; do
		[ "$want" = "$have" ] || psql -c "INSERT INTO $s.resources (name, capacity, version, declared)
  SELECT 'idle-' || i, 1, 1, true FROM generate_series($have + 1, $want) i"
		psql -c "VACUUM ANALYZE $s.resources"
	done
	have=$want
	for round in 1 2; do run cost_old "$want"; run cost_new "$want"; done
done
echo "load average $(cut -d' ' -f1-3 /proc/loadavg)"
