#!/bin/sh
# apps/common/demo.sh — builds holdfast-APP and runs it on its default port over throw-away
# PostgreSQL and Redis servers (the test fixtures: temp dirs, loopback, gone on exit) and a
# file: holdfast store. Ctrl-C ends it all. Each app's demo.sh calls this.
# Usage: apps/common/demo.sh APP PORT [extra holdfast-APP options]
set -eu
app=$1 port=$2
shift 2
cd "$(dirname "$0")/../.."
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j2 --target "holdfast-$app" >/dev/null
store=$(mktemp -d "${TMPDIR:-/tmp}/$app-demo.XXXXXX")
trap 'rm -rf "$store"' EXIT
redis=--redis
[ "$app" = shop ] && redis= # the shop keeps its counters on holdfast only
tests/pg/with_pg.sh tests/redis/with_redis.sh sh -c '
	app=$1 port=$2 store=$3 redis=$4
	shift 4
	exec "build/apps/$app/holdfast-$app" --listen "127.0.0.1:$port" \
		--holdfast "file:$store/holdfast.db" \
		--db "postgresql:///postgres?host=$HF_PG_DIR&user=$HF_PG_USER" \
		${redis:+"$redis" "127.0.0.1:${HF_REDIS_PORTS%% *}"} "$@"' \
	sh "$app" "$port" "$store" "$redis" "$@"
