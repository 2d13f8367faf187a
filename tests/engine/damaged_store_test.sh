#!/usr/bin/env bash
# damaged_store_test.sh HOLDFAST_CLI — a store file whose rows hold times or fences beyond
# what a store can reach (a damaged or hand-edited file) is refused with store_corrupt (exit
# 7), never opened: the engine's sums on those values (a time plus a retention, the last
# fence plus one) would overflow and fences would stop increasing. Found by the journal fuzz
# target (tests/fuzz/regressions/journal/). The damaged hold rows are JSON rows of schema 2
# (still read by schema 3, whose own rows are binary), and binary rows cut short or of another
# table. Needs python3 (sqlite3 module).
set -euo pipefail
cli=$1
dir=$(mktemp -d /tmp/hf-damaged.XXXXXX)
trap 'rm -rf "$dir"' EXIT

fresh_store() { # prints "id token" of one released hold on resource r
	rm -f "$dir"/s.db*
	local out id token
	out=$("$cli" --engine "file:$dir/s.db" --json acquire --capacity 1 --ttl 60000 r)
	echo "$out" >"$dir/hold.json"
	id=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])' <<<"$out")
	token=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])' <<<"$out")
	"$cli" --engine "file:$dir/s.db" release "$id" "$token" >/dev/null
	echo "$id"
}

# Writes hold $2 as the JSON row of schema 2 that holdfast wrote before schema 3, released,
# with the Python expression $3 applied to it (a dict `body`).
put_json_hold() { # store id change
	python3 - "$1" "$2" "$3" "$dir/hold.json" <<'PY'
import json, sqlite3, sys
h = json.load(open(sys.argv[4]))
body = {"created_at": h["created_at_ms"], "ended_at": h["created_at_ms"] + 1,
        "expires_at": h["expires_at_ms"], "id": h["id"], "mode": 0, "owner": h["owner"],
        "parts": [{"fence": p["fence"], "name": p["name"], "units": p["units"]}
                  for p in h["resources"]],
        "state": 2, "token": h["token"]}
exec(sys.argv[3])
db = sqlite3.connect(sys.argv[1])
db.execute("UPDATE holds SET body = ? WHERE id = ?", (json.dumps(body), sys.argv[2]))
db.commit()
PY
}

expect_refused() { # what
	local rc=0 err
	err=$("$cli" --engine "file:$dir/s.db" resources get r 2>&1 >/dev/null) || rc=$?
	if [ "$rc" -ne 7 ] || ! grep -q "store_corrupt\|damaged" <<<"$err"; then
		echo "FAIL: a store with $1 was not refused (exit $rc): $err" >&2
		exit 1
	fi
	echo "ok: a store with $1 is refused"
}

id=$(fresh_store)
put_json_hold "$dir/s.db" "$id" 'pass'
got=$("$cli" --engine "file:$dir/s.db" --json get "$id") || {
	echo "FAIL: a store with a JSON hold row of schema 2 does not read" >&2
	exit 1
}
python3 - "$dir/hold.json" "$got" <<'PY'
import json, sys
want, got = json.load(open(sys.argv[1])), json.loads(sys.argv[2])
for k in ("id", "owner", "mode", "created_at_ms", "expires_at_ms", "resources"):
    assert got[k] == want[k], (k, got[k], want[k])
assert got["state"] == "released" and got["ended_at_ms"] == want["created_at_ms"] + 1, got
PY
echo "ok: a JSON hold row of schema 2 reads"

id=$(fresh_store)
put_json_hold "$dir/s.db" "$id" 'body["ended_at"] = 9223372036854775000'
expect_refused "an ended_at near INT64_MAX"

id=$(fresh_store)
put_json_hold "$dir/s.db" "$id" 'body["parts"][0]["fence"] = 9223372036854775807'
expect_refused "a fence of INT64_MAX"

id=$(fresh_store)
python3 - "$dir/s.db" "$id" <<'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
row = db.execute("SELECT body FROM holds WHERE id = ?", (sys.argv[2],)).fetchone()[0]
assert isinstance(row, bytes) and row[0] == 2, row  # schema 3: a binary hold row
db.execute("UPDATE holds SET body = ? WHERE id = ?", (row[:-3], sys.argv[2]))
db.commit()
PY
expect_refused "a binary hold row cut short"

id=$(fresh_store)
python3 - "$dir/s.db" "$id" <<'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
row = db.execute("SELECT body FROM holds WHERE id = ?", (sys.argv[2],)).fetchone()[0]
db.execute("UPDATE holds SET body = ? WHERE id = ?", (b"\x01" + row[1:], sys.argv[2]))
db.commit()
PY
expect_refused "a hold row that is a resource row"

fresh_store >/dev/null
python3 - "$dir/s.db" <<'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
# written when hold rows are purged: a fresh store may have none yet
db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES('last_fence', '9223372036854775807')")
db.commit()
PY
expect_refused "a last_fence of INT64_MAX"
