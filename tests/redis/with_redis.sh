#!/bin/sh
# with_redis.sh — runs a command against private, throw-away redis-server instances on
# loopback ports: N (default 1) servers, no persistence, in a temp dir, killed after.
# Exports HF_REDIS_PORTS (space-separated), HF_REDIS_DIR, HF_TEST_ENGINE_URL=redis://... of
# the first server with a per-run prefix, and HF_TEST_ENGINE_RESET (FLUSHALL, so every test
# starts empty). Usage: with_redis.sh [-n N] [-q '&k=v'] COMMAND [ARGS...] (-q appends to the
# URL's query, e.g. '&locks=plain'); exits with the command's status.
# Tests restart a server with: redis-server "$HF_REDIS_DIR/<port>.conf".
set -eu
n=1
query=""
while :; do
	case "${1:-}" in
	-n) n=$2; shift 2 ;;
	-q) query=$2; shift 2 ;;
	*) break ;;
	esac
done
REDIS_SERVER=${REDIS_SERVER:-/usr/bin/redis-server}
[ -x "$REDIS_SERVER" ] || { echo "with_redis.sh: no redis-server (apt-get install redis-server)" >&2; exit 1; }
dir=$(mktemp -d "${TMPDIR:-/tmp}/hfredis.XXXXXX")
pids=""
cleanup() {
	for f in "$dir"/*.pid; do
		[ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null || true
	done
	sleep 0.1
	for f in "$dir"/*.pid; do
		[ -f "$f" ] && kill -9 "$(cat "$f")" 2>/dev/null || true
	done
	rm -rf "$dir"
}
trap cleanup EXIT INT TERM
# Free ports: ask the kernel for them (bind to port 0), then start on them. Another process
# may take a port in between (other tests start servers too), so each server must prove it
# is ours — the process_id it reports is the one in our pidfile — or all start again on new
# ports, up to three times: a test must never talk to someone else's Redis.
start_all() {
	ports=$(python3 -c "
import socket
socks=[]
for _ in range($n):
    s=socket.socket(); s.bind(('127.0.0.1',0)); socks.append(s)
print(' '.join(str(s.getsockname()[1]) for s in socks))
")
	for p in $ports; do
		cat >"$dir/$p.conf" <<CONF
port $p
bind 127.0.0.1
save ""
appendonly no
daemonize yes
pidfile $dir/$p.pid
logfile $dir/$p.log
dir $dir
dbfilename $p.rdb
CONF
		"$REDIS_SERVER" "$dir/$p.conf"
	done
	for p in $ports; do
		i=0
		while :; do
			pid=$(cat "$dir/$p.pid" 2>/dev/null || true)
			said=$(redis-cli -p "$p" info server 2>/dev/null | tr -d '\r' | sed -n 's/^process_id://p')
			[ -n "$pid" ] && [ "$pid" = "$said" ] && break
			i=$((i + 1))
			[ $i -lt 100 ] || return 1
			sleep 0.05
		done
	done
}
attempt=0
until start_all; do
	attempt=$((attempt + 1))
	for f in "$dir"/*.pid; do [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null; rm -f "$f"; done
	if [ $attempt -ge 3 ]; then
		echo "with_redis.sh: redis-server did not start on ports $ports" >&2
		cat "$dir"/*.log >&2 2>/dev/null
		exit 1
	fi
done
first=${ports%% *}
export HF_REDIS_PORTS="$ports" HF_REDIS_DIR="$dir"
export HF_TEST_ENGINE_URL="redis://127.0.0.1:$first?prefix=hft:$query"
export HF_TEST_ENGINE_RESET="redis-cli -p $first FLUSHALL >/dev/null"
set +e
"$@"
rc=$?
exit $rc
