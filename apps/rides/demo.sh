#!/bin/sh
# apps/rides/demo.sh — builds holdfast-rides and runs it on 127.0.0.1:3000 with the demo data
# over throw-away PostgreSQL and Redis servers (the test fixtures: temp dirs, loopback, gone
# on exit) and a file: holdfast store. Try the seed's curl examples; Ctrl-C ends it all.
# Usage: apps/rides/demo.sh [extra holdfast-rides options]
set -eu
cd "$(dirname "$0")/../.."
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j2 --target holdfast-rides >/dev/null
store=$(mktemp -d "${TMPDIR:-/tmp}/rides-demo.XXXXXX")
trap 'rm -rf "$store"' EXIT
tests/pg/with_pg.sh tests/redis/with_redis.sh sh -c '
	exec build/apps/rides/holdfast-rides --listen 127.0.0.1:3000 --holdfast "file:$0/holdfast.db" \
		--db "postgresql:///postgres?host=$HF_PG_DIR&user=$HF_PG_USER" \
		--redis "127.0.0.1:${HF_REDIS_PORTS%% *}" --demo-data "$@"' "$store" "$@"
