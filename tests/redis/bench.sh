#!/bin/sh
# bench.sh — the throughput table of docs/redis.md: redis-benchmark against holdfast's
# redis:// (own keys and locks=plain) and redlock:// on one private redis-server, without
# persistence and with `appendonly yes` + `appendfsync always`. Not run by ctest.
# Usage: bench.sh REDIS_LOAD_BINARY [SECONDS=5]   (prints uptime before each series)
set -eu
load=$1
secs=${2:-5}
dir=$(mktemp -d "${TMPDIR:-/tmp}/hfbench.XXXXXX")
pid=""
cleanup() {
	[ -n "$pid" ] && kill "$pid" 2>/dev/null || true
	sleep 0.2
	rm -rf "$dir"
}
trap cleanup EXIT INT TERM
port=$(python3 -c "import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])")

start() { # $1: none | always
	[ -n "$pid" ] && { kill "$pid"; while redis-cli -p "$port" ping >/dev/null 2>&1; do sleep 0.05; done; }
	rm -rf "$dir/data" && mkdir -p "$dir/data"
	if [ "$1" = always ]; then
		persist="appendonly yes
appendfsync always"
	else
		persist="appendonly no"
	fi
	cat >"$dir/redis.conf" <<CONF
port $port
bind 127.0.0.1
save ""
$persist
dir $dir/data
daemonize yes
pidfile $dir/redis.pid
logfile $dir/redis.log
CONF
	redis-server "$dir/redis.conf"
	until redis-cli -p "$port" ping >/dev/null 2>&1; do sleep 0.05; done
	pid=$(cat "$dir/redis.pid")
}

series() { # $1: none | always
	start "$1"
	echo "== persistence: $1 ($(redis-server --version | cut -d' ' -f3)); $(uptime)"
	printf 'redis-benchmark INCR, 8 clients: '
	redis-benchmark -p "$port" -c 8 -n 100000 -q -t incr | tr '\r' '\n' | grep 'requests per second' |
		sed 's/.*: \([0-9.]* requests per second\).*/\1/'
	sha=$(redis-cli -p "$port" SCRIPT LOAD "return redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', 10000)")
	printf 'redis-benchmark EVALSHA of SET NX PX, 8 clients: '
	redis-benchmark -p "$port" -c 8 -n 100000 -q -r 100000 EVALSHA "$sha" 1 'bench:__rand_int__' v |
		tr '\r' '\n' | grep 'requests per second' | sed 's/.*: \([0-9.]* requests per second\).*/\1/'
	redis-cli -p "$port" FLUSHALL >/dev/null
	for t in 1 8 32; do
		printf 'redis:// (own keys): '
		"$load" "redis://127.0.0.1:$port?prefix=bench:" "$t" "$secs"
		redis-cli -p "$port" FLUSHALL >/dev/null
	done
	printf 'redis://?locks=plain: '
	"$load" "redis://127.0.0.1:$port?prefix=bench:&locks=plain" 8 "$secs"
	redis-cli -p "$port" FLUSHALL >/dev/null
	printf 'redlock:// (this one master): '
	"$load" "redlock://127.0.0.1:$port" 8 "$secs"
	echo "== end $1; $(uptime)"
}

series none
series always
