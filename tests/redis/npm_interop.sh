#!/bin/sh
# npm_interop.sh — runs interop.cjs: holdfast's redlock:// and redis://?locks=plain against
# the npm `redlock` client (over `ioredis`) on the same keys of the with_redis.sh servers.
# Installs the packages into NPM_DIR once. Exits 77 (skip) only when node or npm is
# missing; a failed install fails.
# Usage (under with_redis.sh -n 3): npm_interop.sh HELPER NPM_DIR [HOLDFASTD]
# With HOLDFASTD, locks are also taken through its lock route (POST /v1/locks/{key}).
set -eu
helper=$1
npmdir=$2
holdfastd=${3:-}
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
	echo "npm_interop.sh: node or npm is not installed: skipping" >&2
	exit 77
fi
# redlock 5 exists only as pre-releases ("redlock@5" resolves to nothing): pin the last one.
if [ ! -f "$npmdir/node_modules/redlock/package.json" ] || [ ! -f "$npmdir/node_modules/ioredis/package.json" ]; then
	mkdir -p "$npmdir"
	npm install --prefix "$npmdir" --no-audit --no-fund --loglevel=error \
		redlock@5.0.0-beta.2 ioredis@5 >&2 || { echo "npm_interop.sh: npm install failed" >&2; exit 1; }
fi
NODE_PATH="$npmdir/node_modules" exec node "$(dirname "$0")/interop.cjs" "$helper" "$holdfastd"
