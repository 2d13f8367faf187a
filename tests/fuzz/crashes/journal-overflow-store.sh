#!/usr/bin/env bash
# journal-overflow-store.sh HOLDFAST [DIR] — builds a store file whose one ended hold has
# "ended_at" near INT64_MAX (a damaged row the loader accepts), then runs one command on it.
# With a UBSan build of the holdfast CLI (e.g. build-fuzz/src/cli/holdfast) that command
# reports a signed overflow in purge() (src/engine/embedded/state.c): the store is opened
# instead of being refused with store_corrupt. Needs python3 (sqlite3 module).
set -euo pipefail
cli=$1
dir=${2:-$(mktemp -d /tmp/hf-overflow.XXXXXX)}
db="$dir/overflow.db"
rm -f "$db" "$db"-wal "$db"-shm
out=$("$cli" --engine "file:$db" --json acquire --capacity 1 --ttl 60000 r)
id=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])' <<<"$out")
token=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])' <<<"$out")
"$cli" --engine "file:$db" release "$id" "$token" >/dev/null
python3 - "$db" "$id" <<'PY'
import json, sqlite3, sys
db = sqlite3.connect(sys.argv[1])
body = json.loads(db.execute("SELECT body FROM holds WHERE id = ?", (sys.argv[2],)).fetchone()[0])
body["ended_at"] = 9223372036854775000
db.execute("UPDATE holds SET body = ? WHERE id = ?", (json.dumps(body), sys.argv[2]))
db.commit()
PY
echo "store: $db (hold $id, ended_at 9223372036854775000)"
"$cli" --engine "file:$db" resources get r || true
