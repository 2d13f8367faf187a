#!/bin/sh
# with_cluster.sh — runs a command against a private, throw-away Redis Cluster: three masters
# (no replicas, no persistence) on loopback ports, in a temp dir, killed after. The store's
# prefix is '{hf}:' (the whole store in the slot of the tag "hf"); the URL names a master that
# does NOT own that slot, so every call starts with a MOVED to follow.
# Exports:
#   HF_TEST_ENGINE_URL    redis://127.0.0.1:<a non-owner>?prefix={hf}:
#   HF_TEST_ENGINE_RESET  FLUSHALL on every master (each test starts empty)
#   HF_CLUSTER_PORTS      the three ports; HF_CLUSTER_SLOT the slot of {hf}
#   HF_CLUSTER_MIGRATE    a command that moves that slot to the next master:
#                         "$HF_CLUSTER_MIGRATE" start  — IMPORTING/MIGRATING and MIGRATE of
#                                                        every key (calls now get ASK)
#                         "$HF_CLUSTER_MIGRATE" finish — SETSLOT NODE everywhere (MOVED)
#                         "$HF_CLUSTER_MIGRATE"        — both
#                         "$HF_CLUSTER_MIGRATE" owner  — prints the owner's port
# Usage: with_cluster.sh COMMAND [ARGS...]; exits with the command's status.
set -eu
REDIS_SERVER=${REDIS_SERVER:-/usr/bin/redis-server}
[ -x "$REDIS_SERVER" ] || { echo "with_cluster.sh: no redis-server (apt-get install redis-server)" >&2; exit 1; }
dir=$(mktemp -d "${TMPDIR:-/tmp}/hfcluster.XXXXXX")
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
# Free ports P with P+10000 (the cluster bus) free too.
ports=$(python3 -c "
import socket
socks=[]; out=[]
while len(out) < 3:
    s=socket.socket(); s.bind(('127.0.0.1',0)); p=s.getsockname()[1]; socks.append(s)
    if p + 10000 > 65535: continue
    b=socket.socket()
    try: b.bind(('127.0.0.1',p+10000))
    except OSError: continue
    socks.append(b); out.append(p)
print(' '.join(map(str,out)))
")
for p in $ports; do
	mkdir "$dir/$p"
	cat >"$dir/$p/redis.conf" <<CONF
port $p
bind 127.0.0.1
cluster-enabled yes
cluster-config-file nodes-$p.conf
cluster-node-timeout 5000
save ""
appendonly no
daemonize yes
pidfile $dir/$p.pid
logfile $dir/$p/redis.log
dir $dir/$p
CONF
	"$REDIS_SERVER" "$dir/$p/redis.conf"
done
for p in $ports; do
	i=0
	# The server on the port must be ours (its process_id is our pidfile's): another test's
	# server could have taken a port between choosing and binding it.
	until [ -n "$(cat "$dir/$p.pid" 2>/dev/null)" ] &&
		[ "$(cat "$dir/$p.pid")" = "$(redis-cli -p "$p" info server 2>/dev/null | tr -d '\r' | sed -n 's/^process_id://p')" ]; do
		i=$((i + 1))
		[ $i -lt 100 ] || { echo "with_cluster.sh: our redis-server on port $p did not start" >&2; cat "$dir/$p/redis.log" >&2; exit 1; }
		sleep 0.05
	done
done
addrs=""
for p in $ports; do addrs="$addrs 127.0.0.1:$p"; done
# shellcheck disable=SC2086
redis-cli --cluster create $addrs --cluster-replicas 0 --cluster-yes >"$dir/create.log" 2>&1 ||
	{ echo "with_cluster.sh: redis-cli --cluster create failed" >&2; cat "$dir/create.log" >&2; exit 1; }
for p in $ports; do
	i=0
	until redis-cli -p "$p" cluster info 2>/dev/null | grep -q '^cluster_state:ok'; do
		i=$((i + 1))
		[ $i -lt 200 ] || { echo "with_cluster.sh: the cluster did not reach cluster_state:ok" >&2; exit 1; }
		sleep 0.05
	done
done
slot=$(redis-cli -p "${ports%% *}" cluster keyslot '{hf}')

# The migrate helper: knows the ports and the slot; finds the owner each time.
cat >"$dir/migrate.sh" <<'SH'
#!/bin/sh
set -eu
ports="@PORTS@"; slot=@SLOT@; state="@DIR@/migration"
owner() { # the port whose node owns the slot, per that node
	for p in $ports; do
		redis-cli -p "$p" cluster nodes | awk -v s="$slot" -v p="$p" '
			$3 ~ /myself/ { for (i = 9; i <= NF; i++) { n = split($i, r, "-");
				lo = r[1]; hi = n > 1 ? r[2] : r[1];
				if ($i !~ /^\[/ && s + 0 >= lo + 0 && s + 0 <= hi + 0) print p } }'
	done | head -n 1
}
step=${1:-all}
[ "$step" = owner ] && { owner; exit 0; }
if [ "$step" = start ] || [ "$step" = all ]; then
	src=$(owner)
	dst=""; take=0
	for p in $ports $ports; do # the next one after the owner
		[ "$take" = 1 ] && { dst=$p; break; }
		[ "$p" = "$src" ] && take=1
	done
	echo "$src $dst" >"$state"
	src_id=$(redis-cli -p "$src" cluster myid); dst_id=$(redis-cli -p "$dst" cluster myid)
	redis-cli -p "$dst" cluster setslot "$slot" importing "$src_id" >/dev/null
	redis-cli -p "$src" cluster setslot "$slot" migrating "$dst_id" >/dev/null
	while keys=$(redis-cli -p "$src" cluster getkeysinslot "$slot" 1000) && [ -n "$keys" ]; do
		# shellcheck disable=SC2086
		out=$(redis-cli -p "$src" migrate 127.0.0.1 "$dst" "" 0 5000 keys $keys)
		[ "$out" = OK ] || { echo "migrate.sh: MIGRATE answered $out" >&2; exit 1; }
	done
fi
if [ "$step" = finish ] || [ "$step" = all ]; then
	read -r src dst <"$state"
	dst_id=$(redis-cli -p "$dst" cluster myid)
	redis-cli -p "$dst" cluster setslot "$slot" node "$dst_id" >/dev/null
	redis-cli -p "$src" cluster setslot "$slot" node "$dst_id" >/dev/null
	for p in $ports; do
		[ "$p" = "$src" ] || [ "$p" = "$dst" ] || redis-cli -p "$p" cluster setslot "$slot" node "$dst_id" >/dev/null
	done
	echo "migrate.sh: slot $slot moved from $src to $dst" >&2
fi
SH
sed -i -e "s|@PORTS@|$ports|" -e "s|@SLOT@|$slot|" -e "s|@DIR@|$dir|" "$dir/migrate.sh"
chmod +x "$dir/migrate.sh"
owner=$("$dir/migrate.sh" owner)
# The master after the next one: the migration moves the slot to the next one, so the engine
# follows MOVED away from the URL's node at first and then to a third node.
nonowner=""; k=0
for p in $ports $ports; do
	[ "$k" -gt 0 ] && k=$((k + 1))
	[ "$p" = "$owner" ] && [ "$k" = 0 ] && k=1
	[ "$k" = 3 ] && { nonowner=$p; break; }
done
[ -n "$owner" ] && [ -n "$nonowner" ] || { echo "with_cluster.sh: cannot find the owner of slot $slot" >&2; exit 1; }
echo "with_cluster.sh: masters $ports; slot $slot of {hf} on $owner; the engine is pointed at $nonowner" >&2
reset=""
for p in $ports; do reset="${reset}redis-cli -p $p FLUSHALL >/dev/null; "; done
export HF_CLUSTER_PORTS="$ports" HF_CLUSTER_SLOT="$slot" HF_CLUSTER_MIGRATE="$dir/migrate.sh"
export HF_TEST_ENGINE_URL="redis://127.0.0.1:$nonowner?prefix={hf}:"
export HF_TEST_ENGINE_RESET="$reset"
set +e
"$@"
rc=$?
exit $rc
