#!/usr/bin/env bash
# damaged_store_test.sh HOLDFAST_CLI — a store file whose rows hold times or fences beyond
# what a store can reach (a damaged or hand-edited file) is refused with store_corrupt (exit
# 7), never opened: the engine's sums on those values (a time plus a retention, the last
# fence plus one) would overflow and fences would stop increasing. Found by the journal fuzz
# target (tests/fuzz/regressions/journal/). Needs python3 (sqlite3 module).
set -euo pipefail
cli=$1
dir=$(mktemp -d /tmp/hf-damaged.XXXXXX)
trap 'rm -rf "$dir"' EXIT

fresh_store() { # prints "id token" of one released hold on resource r
	rm -f "$dir"/s.db*
	local out id token
	out=$("$cli" --engine "file:$dir/s.db" --json acquire --capacity 1 --ttl 60000 r)
	id=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])' <<<"$out")
	token=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])' <<<"$out")
	"$cli" --engine "file:$dir/s.db" release "$id" "$token" >/dev/null
	echo "$id"
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
python3 - "$dir/s.db" "$id" <<'PY'
import json, sqlite3, sys
db = sqlite3.connect(sys.argv[1])
body = json.loads(db.execute("SELECT body FROM holds WHERE id = ?", (sys.argv[2],)).fetchone()[0])
body["ended_at"] = 9223372036854775000
db.execute("UPDATE holds SET body = ? WHERE id = ?", (json.dumps(body), sys.argv[2]))
db.commit()
PY
expect_refused "an ended_at near INT64_MAX"

id=$(fresh_store)
python3 - "$dir/s.db" "$id" <<'PY'
import json, sqlite3, sys
db = sqlite3.connect(sys.argv[1])
body = json.loads(db.execute("SELECT body FROM holds WHERE id = ?", (sys.argv[2],)).fetchone()[0])
body["parts"][0]["fence"] = 9223372036854775807
db.execute("UPDATE holds SET body = ? WHERE id = ?", (json.dumps(body), sys.argv[2]))
db.commit()
PY
expect_refused "a fence of INT64_MAX"

fresh_store >/dev/null
python3 - "$dir/s.db" <<'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
n = db.execute("UPDATE meta SET value = '9223372036854775807' WHERE key = 'last_fence'").rowcount
if n != 1:
    sys.exit("no last_fence row to damage")
db.commit()
PY
expect_refused "a last_fence of INT64_MAX"
