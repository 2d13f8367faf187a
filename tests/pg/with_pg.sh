#!/bin/sh
# with_pg.sh — runs a command against a private, throw-away PostgreSQL: initdb in a temporary
# directory, a Unix socket in that directory (no TCP port), torn down after. Exports
# HF_TEST_ENGINE_URL=postgres://...?schema=hf_test and HF_TEST_ENGINE_RESET (drops that schema,
# so every test's store starts empty). PostgreSQL refuses to run as root: as root the server
# runs as `nobody`. Usage: [HF_PG_FSYNC=on] with_pg.sh COMMAND [ARGS...]; exits with the
# command's status.
set -eu
PGBIN=${PGBIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}
[ -x "$PGBIN/initdb" ] || { echo "with_pg.sh: no PostgreSQL server binaries (apt-get install postgresql)" >&2; exit 1; }
dir=$(mktemp -d "${TMPDIR:-/tmp}/hfpg.XXXXXX")
chmod 755 "$dir"
as_pg=""
if [ "$(id -u)" = 0 ]; then
	chown nobody "$dir"
	as_pg="runuser -u nobody --"
fi
pguser=$($as_pg id -un)
cleanup() {
	$as_pg "$PGBIN/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
	rm -rf "$dir"
}
trap cleanup EXIT INT TERM
$as_pg "$PGBIN/initdb" -D "$dir/data" -A trust -U "$pguser" --no-sync -E UTF8 >"$dir/initdb.log" 2>&1 ||
	{ cat "$dir/initdb.log" >&2; exit 1; }
# fsync off: a test server's durability does not matter, its speed does. HF_PG_FSYNC=on for
# measurements that should count durable commits (tests/pg/load.py, docs/operations.md).
fsync=${HF_PG_FSYNC:-off}
case $fsync in on | off) ;; *) echo "with_pg.sh: HF_PG_FSYNC must be on or off" >&2; exit 2 ;; esac
$as_pg "$PGBIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w \
	-o "-c listen_addresses='' -k $dir -c fsync=$fsync -c max_connections=200" start >/dev/null ||
	{ cat "$dir/server.log" >&2; exit 1; }
export HF_TEST_ENGINE_URL="postgres:///postgres?host=$dir&user=$pguser&schema=hf_test"
export HF_TEST_ENGINE_RESET="$PGBIN/psql -q -X -h $dir -U $pguser -d postgres -c 'DROP SCHEMA IF EXISTS hf_test CASCADE' >/dev/null 2>&1"
export HF_PG_DIR="$dir" HF_PG_USER="$pguser" HF_PG_FSYNC="$fsync" PGBIN
set +e
"$@"
rc=$?
exit $rc
