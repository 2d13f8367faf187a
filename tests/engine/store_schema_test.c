/*
 * store_schema_test.c — the embedded store's file across schemas: a store of schema 2 (the
 * rows of resources, holds and idempotency records in JSON) opens in this build and reads
 * back as it was written; its rows turn binary as they change, and it reopens the same again.
 * A store of a newer schema than this build's is refused, untouched. Fences go on across a
 * purge of the hold rows that held the greatest and a reopen. Event revisions and seqs go on
 * without a gap or a repeat across a schema 3 store's upgrade (its counter table whole, its
 * events trimmed) and across a trim followed by a crash (schema 4 folds the revisions of the
 * events it trims into their counters). A schema 4 store's holds (keyed by id) keep their rows
 * under their rowids as schema 5's row numbers, and go on. The schema 2 store is
 * made here: a store of this build, its rows rewritten by SQL as schema 2's writers wrote
 * them (row.c's decoders read the binary rows, jansson writes the old JSON).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>
#include <sqlite3.h>

#include "core/core.h"
#include "engine/embedded/embedded.h"
#include "holdfast.h"

static char dir[] = "/tmp/hf-schema.XXXXXX";
static char path[256], url[320];

static hf_reply *call(hf_store *st, const hf_request *req, int want)
{
	hf_reply *r = NULL;
	int rc = hf_call(st, req, &r);
	if (rc != want)
		fail_msg("op %d: %s (%s), wanted %s", req->op, hf_err_name(rc), r->error.message,
		         hf_err_name(want));
	return r;
}

static hf_hold *acquire(hf_store *st, const char *owner, const hf_claim *claims, size_t n,
                        hf_mode mode, const char *key)
{
	hf_request req;
	hf_request_init(&req, HF_OP_ACQUIRE);
	req.acquire = (hf_acquire_req){.owner = owner, .claims = claims, .n_claims = n,
	                               .ttl_ms = 3600000, .mode = mode, .idempotency_key = key};
	hf_reply *r = call(st, &req, HF_OK);
	hf_hold *h = hf_hold_dup(r->hold);
	hf_reply_free(r);
	return h;
}

/* Everything a client can read of the store, as text: resources, holds, each hold alone. */
static char *snapshot(hf_store *st)
{
	json_t *all = json_array();
	hf_request req;
	hf_request_init(&req, HF_OP_LIST_RESOURCES);
	req.limit = HF_LIST_MAX;
	hf_reply *r = call(st, &req, HF_OK);
	for (size_t i = 0; i < r->n_resources; i++) {
		char *s = hf_resource_json(&r->resources[i]);
		json_array_append_new(all, json_string(s));
		free(s);
	}
	hf_reply_free(r);
	hf_request_init(&req, HF_OP_LIST_HOLDS);
	req.limit = HF_LIST_MAX;
	r = call(st, &req, HF_OK);
	for (size_t i = 0; i < r->n_holds; i++) {
		char *s = hf_hold_json(&r->holds[i]);
		json_array_append_new(all, json_string(s));
		free(s);
		hf_request get;
		hf_request_init(&get, HF_OP_GET_HOLD);
		get.hold_id = r->holds[i].id;
		hf_reply *g = call(st, &get, HF_OK);
		s = hf_hold_json(g->hold);
		json_array_append_new(all, json_string(s));
		free(s);
		hf_reply_free(g);
	}
	hf_reply_free(r);
	char *text = json_dumps(all, JSON_INDENT(1));
	json_decref(all);
	return text;
}

/* ---- schema 2's rows, as its writers made them (sorted keys, compact) ---- */

static json_t *old_hold(const hf_hold *h)
{
	json_t *parts = json_array();
	for (size_t i = 0; i < h->n_parts; i++)
		json_array_append_new(parts, json_pack("{s:s, s:I, s:I}", "name", h->parts[i].resource,
		                                       "units", (json_int_t)h->parts[i].units, "fence",
		                                       (json_int_t)h->parts[i].fence));
	return json_pack("{s:s, s:s, s:s, s:i, s:i, s:I, s:I, s:I, s:o}", "id", h->id, "token",
	                 h->token, "owner", h->owner, "state", (int)h->state, "mode", (int)h->mode,
	                 "created_at", (json_int_t)h->created_at_ms, "expires_at",
	                 (json_int_t)h->expires_at_ms, "ended_at", (json_int_t)h->ended_at_ms,
	                 "parts", parts);
}

/* Schema 2's row of a table from this build's; `implicit` collects {name: capacity} of the
 * implicit resources the holds carry (schema 2 gave them rows of their own). */
static json_t *old_row(const char *table, const void *row, size_t len, json_t *implicit)
{
	if (strcmp(table, "holds") == 0) {
		hf_hold h;
		int64_t caps[HF_CLAIMS_MAX];
		assert_int_equal(hf__row_hold_decode(row, len, &h, caps, NULL), HF_OK);
		for (size_t i = 0; i < h.n_parts; i++)
			if (caps[i])
				json_object_set_new(implicit, h.parts[i].resource, json_integer(caps[i]));
		json_t *j = old_hold(&h);
		hf__hold_clear(&h);
		return j;
	}
	if (strcmp(table, "resources") == 0) {
		hf_resource r;
		assert_int_equal(hf__row_resource_decode(row, len, &r, NULL), HF_OK);
		json_t *j = json_pack("{s:s, s:I, s:o, s:I, s:b}", "name", r.name, "capacity",
		                      (json_int_t)r.capacity, "meta",
		                      r.meta ? json_loads(r.meta, 0, NULL) : json_null(), "version",
		                      (json_int_t)r.version, "declared", r.declared);
		hf__resource_clear(&r);
		return j;
	}
	struct hf__row_idem d;
	assert_int_equal(hf__row_idem_decode(row, len, &d, NULL), HF_OK);
	json_t *j = json_pack("{s:s, s:s, s:I, s:o}", "key", d.key, "fingerprint", d.fingerprint,
	                      "created_at", (json_int_t)d.created_at, "hold", old_hold(&d.hold));
	hf__row_idem_clear(&d);
	return j;
}

static void exec(sqlite3 *db, const char *sql)
{
	char *msg = NULL;
	if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK)
		fail_msg("%s: %s", sql, msg);
}

/* Inserts schema 2's rows of implicit resources (name: capacity) into `ins`. */
static int old_implicit_rows(sqlite3_stmt *ins, json_t *implicit)
{
	const char *name;
	json_t *capacity;
	int rows = 0;
	json_object_foreach(implicit, name, capacity) {
		json_t *j = json_pack("{s:s, s:O, s:n, s:i, s:b}", "name", name, "capacity", capacity,
		                      "meta", "version", 0, "declared", 0);
		sqlite3_bind_text(ins, 1, name, -1, SQLITE_TRANSIENT);
		sqlite3_bind_text(ins, 2, json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS), -1, free);
		json_decref(j);
		assert_int_equal(sqlite3_step(ins), SQLITE_DONE);
		sqlite3_reset(ins);
		rows++;
	}
	return rows;
}

/* Turns the closed store at `path` into a store of schema 2: its tables as schema 2 declared
 * them, every row in JSON, the implicit resources of live holds with rows of their own.
 * Returns how many rows it wrote. */
static int make_schema_2(void)
{
	static const char *const tables[][2] = {
	    {"holds", "id"}, {"idempotency", "key"}, {"resources", "name"}};
	sqlite3 *db;
	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	exec(db, "BEGIN");
	int rows = 0;
	json_t *implicit = json_object();
	for (size_t t = 0; t < 3; t++) {
		char sql[256];
		snprintf(sql, sizeof(sql), "CREATE TABLE old(%s TEXT PRIMARY KEY, body TEXT NOT NULL)",
		         tables[t][1]);
		exec(db, sql);
		snprintf(sql, sizeof(sql), "SELECT %s, body FROM %s", tables[t][1], tables[t][0]);
		sqlite3_stmt *sel, *ins;
		assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &sel, NULL), SQLITE_OK);
		assert_int_equal(sqlite3_prepare_v2(db, "INSERT INTO old VALUES(?1, ?2)", -1, &ins, NULL),
		                 SQLITE_OK);
		while (sqlite3_step(sel) == SQLITE_ROW) {
			assert_int_equal(sqlite3_column_type(sel, 1), SQLITE_BLOB);
			json_t *j = old_row(tables[t][0], sqlite3_column_blob(sel, 1),
			                    (size_t)sqlite3_column_bytes(sel, 1), implicit);
			char *text = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
			json_decref(j);
			sqlite3_bind_text(ins, 1, (const char *)sqlite3_column_text(sel, 0), -1,
			                  SQLITE_TRANSIENT);
			sqlite3_bind_text(ins, 2, text, -1, free);
			assert_int_equal(sqlite3_step(ins), SQLITE_DONE);
			sqlite3_reset(ins);
			rows++;
		}
		if (strcmp(tables[t][0], "resources") == 0)
			rows += old_implicit_rows(ins, implicit);
		sqlite3_finalize(sel);
		sqlite3_finalize(ins);
		snprintf(sql, sizeof(sql), "DROP TABLE %s; ALTER TABLE old RENAME TO %s", tables[t][0],
		         tables[t][0]);
		exec(db, sql);
	}
	exec(db, "UPDATE meta SET value = '2' WHERE key = 'schema'; COMMIT");
	sqlite3_close(db);
	assert_int_equal(json_object_size(implicit), 3); /* implicit-é, lock and sem */
	json_decref(implicit);
	return rows;
}

/* One value from the closed store at `path`, as text ("" for none). */
static void query(const char *sql, char *out, size_t size)
{
	sqlite3 *db;
	sqlite3_stmt *s;
	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &s, NULL), SQLITE_OK);
	const char *v = sqlite3_step(s) == SQLITE_ROW ? (const char *)sqlite3_column_text(s, 0) : NULL;
	snprintf(out, size, "%s", v ? v : "");
	sqlite3_finalize(s);
	sqlite3_close(db);
}

/* The same text, or the first line where they differ (cmocka cuts long strings short). */
static void assert_same(const char *got, const char *want)
{
	size_t line = 1, i = 0;
	for (; got[i] && got[i] == want[i]; i++)
		line += got[i] == '\n';
	if (got[i] != want[i])
		fail_msg("line %zu differs: got \"%.200s\", wanted \"%.200s\"", line,
		         strrchr(got, '\n') && i ? got + i : got, want + i);
}

static hf_store *open_store(void)
{
	hf_store *st = NULL;
	hf_error err;
	if (hf_open(url, NULL, &st, &err) != HF_OK)
		fail_msg("open: %s", err.message);
	return st;
}

/* Fills a new store with one of each kind of row; returns the hold to release later. */
static hf_hold *fill(hf_store *st, hf_hold **keyed)
{
	hf_request req;
	hf_request_init(&req, HF_OP_PUT_RESOURCE);
	req.name = "db:primary \xe2\x98\x83";
	req.capacity = 5;
	/* Keys in order: schema 2 wrote meta with sorted keys (and read back that order); the
	 * binary rows keep meta's text as given. */
	req.meta = "{\"n\":[1,2],\"region\":\"eu\"}";
	hf_reply_free(call(st, &req, HF_OK));
	const hf_claim two[] = {{.name = "db:primary \xe2\x98\x83", .units = 2},
	                        {.name = "implicit-\xc3\xa9", .units = 1, .capacity = 3}};
	hf_hold *multi = acquire(st, "\xc3\xa9quipe \"a\"", two, 2, HF_MODE_UNITS, NULL);
	const hf_claim lock = {.name = "lock", .capacity = 1};
	hf_hold *ex = acquire(st, "owner-x", &lock, 1, HF_MODE_EXCLUSIVE, NULL);
	hf_hold *h = NULL;
	assert_int_equal(hf_confirm(st, ex->id, ex->token, &h, NULL), HF_OK);
	hf_hold_free(h);
	hf_hold_free(ex);
	const hf_claim sem = {.name = "sem", .units = 1, .capacity = 4};
	hf_hold *gone = acquire(st, "owner-y", &sem, 1, HF_MODE_SHARED, NULL);
	assert_int_equal(hf_release(st, gone->id, gone->token, &h, NULL), HF_OK);
	hf_hold_free(h);
	hf_hold_free(gone);
	*keyed = acquire(st, "owner-k", &sem, 1, HF_MODE_UNITS, "retry-key-1");
	return multi;
}

static void test_schema_2_store(void **state)
{
	(void)state;
	hf_store *st = open_store();
	hf_hold *keyed, *multi = fill(st, &keyed);
	char *before = snapshot(st);
	hf_close(st);
	char v[64];
	/* implicit resources have no rows: their live holds carry their capacities */
	query("SELECT group_concat(name) FROM resources", v, sizeof(v));
	assert_string_equal(v, "db:primary \xe2\x98\x83");
	assert_int_equal(make_schema_2(), 4 + 4 + 1); /* resources, holds, idempotency */
	query("SELECT count(*) FROM holds WHERE typeof(body) = 'text'", v, sizeof(v));
	assert_string_equal(v, "4");

	st = open_store(); /* schema 2: reads, and becomes schema 5 (its rows as they are) */
	char *after = snapshot(st);
	assert_same(after, before);
	free(after);
	/* the idempotency record of schema 2 answers a retry with its first outcome */
	const hf_claim sem = {.name = "sem", .units = 1, .capacity = 4};
	hf_hold *again = acquire(st, "owner-k", &sem, 1, HF_MODE_UNITS, "retry-key-1");
	assert_string_equal(again->id, keyed->id);
	assert_string_equal(again->token, keyed->token);
	assert_true(again->replayed);
	hf_hold_free(again);
	hf_close(st);
	query("SELECT value FROM meta WHERE key = 'schema'", v, sizeof(v));
	assert_string_equal(v, "5");
	query("SELECT count(*) FROM holds WHERE typeof(body) = 'text'", v, sizeof(v));
	assert_string_equal(v, "4");

	/* a change writes its rows in the binary form; the rest stay JSON and read as before */
	st = open_store();
	hf_hold *h = NULL;
	assert_int_equal(hf_release(st, multi->id, multi->token, &h, NULL), HF_OK);
	hf_hold_free(h);
	before = (free(before), snapshot(st));
	hf_close(st);
	query("SELECT typeof(body) FROM holds WHERE id = (SELECT id FROM holds"
	      " WHERE body LIKE '%owner-x%')",
	      v, sizeof(v));
	assert_string_equal(v, "text");
	char sql[160];
	snprintf(sql, sizeof(sql), "SELECT typeof(body) FROM holds WHERE id = '%s'", multi->id);
	query(sql, v, sizeof(v));
	assert_string_equal(v, "blob");
	st = open_store();
	after = snapshot(st);
	assert_same(after, before);
	hf_close(st);
	free(after);
	free(before);
	hf_hold_free(multi);
	hf_hold_free(keyed);
}

/* A newer build's store: refused with the way out, and left as it was. */
static void test_newer_schema_refused(void **state)
{
	(void)state;
	hf_close(open_store());
	sqlite3 *db;
	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	exec(db, "UPDATE meta SET value = '6' WHERE key = 'schema'");
	sqlite3_close(db);
	hf_store *st = NULL;
	hf_error err;
	assert_int_equal(hf_open(url, NULL, &st, &err), HF_ECORRUPT);
	assert_null(st);
	assert_non_null(strstr(err.message, "schema 6, newer than this build's 5"));
	char v[64];
	query("SELECT value FROM meta WHERE key = 'schema'", v, sizeof(v));
	assert_string_equal(v, "6");
}

static int64_t fake_now = 1700000000000LL;

static int64_t fake_clock(void *ctx)
{
	(void)ctx;
	return fake_now;
}

/* A grant's fence lives in its hold's row, not in a meta row of its own: when that row is
 * purged the meta row "last_fence" takes over, in the same commit. */
static void test_fence_after_purge(void **state)
{
	(void)state;
	hf_options opt;
	hf_options_init(&opt);
	opt.clock = fake_clock;
	opt.hold_retention_ms = 1000;
	hf_store *st = NULL;
	assert_int_equal(hf_open(url, &opt, &st, NULL), HF_OK);
	const hf_claim lock = {.name = "f", .units = 1, .capacity = 1};
	hf_hold *h = acquire(st, "a", &lock, 1, HF_MODE_UNITS, NULL), *gone = NULL;
	int64_t fence = h->parts[0].fence;
	assert_int_equal(hf_release(st, h->id, h->token, &gone, NULL), HF_OK);
	hf_hold_free(gone);
	hf_hold_free(h);
	char v[64];
	hf_close(st);
	query("SELECT count(*) FROM meta WHERE key = 'last_fence'", v, sizeof(v));
	assert_string_equal(v, "0"); /* the hold row has it */
	assert_int_equal(hf_open(url, &opt, &st, NULL), HF_OK);
	fake_now += 5000;
	hf_store_tick(st); /* the ended hold is purged */
	hf_close(st);
	query("SELECT count(*) FROM holds", v, sizeof(v));
	assert_string_equal(v, "0");
	query("SELECT value FROM meta WHERE key = 'last_fence'", v, sizeof(v));
	assert_int_equal(strtoll(v, NULL, 10), fence);
	assert_int_equal(hf_open(url, &opt, &st, NULL), HF_OK);
	h = acquire(st, "a", &lock, 1, HF_MODE_UNITS, NULL);
	assert_true(h->parts[0].fence > fence);
	hf_hold_free(h);
	hf_close(st);
}

/* ---- event revisions across an upgrade, a trim and a crash ---- */

static hf_reply *events_after(hf_store *st, uint64_t after)
{
	hf_request req;
	hf_request_init(&req, HF_OP_READ_EVENTS);
	req.after = after;
	req.limit = HF_LIST_MAX;
	return call(st, &req, HF_OK);
}

static int64_t revision_in(const hf_event *ev, const char *name)
{
	for (size_t i = 0; i < ev->n_revisions; i++)
		if (strcmp(ev->revisions[i].resource, name) == 0)
			return ev->revisions[i].revision;
	return 0;
}

/* An acquire and a release of `name` and, unless NULL, `also` (implicit, capacity 1): two
 * events. */
static void lock_unlock_both(hf_store *st, const char *name, const char *also)
{
	const hf_claim c[] = {{.name = name, .units = 1, .capacity = 1},
	                      {.name = also, .units = 1, .capacity = 1}};
	hf_hold *h = acquire(st, "rev", c, also ? 2 : 1, HF_MODE_UNITS, NULL), *gone = NULL;
	assert_int_equal(hf_release(st, h->id, h->token, &gone, NULL), HF_OK);
	hf_hold_free(gone);
	hf_hold_free(h);
}

static void lock_unlock(hf_store *st, const char *name)
{
	lock_unlock_both(st, name, NULL);
}

/* The next two events (an acquire and a release of `name`) are seq after+1 and after+2 and
 * revisions rev+1 and rev+2 of `name`. */
static void expect_next(hf_store *st, const char *name, uint64_t after, int64_t rev)
{
	lock_unlock(st, name);
	hf_reply *r = events_after(st, after);
	assert_int_equal(r->n_events, 2);
	for (size_t i = 0; i < 2; i++) {
		assert_int_equal(r->events[i].seq, after + 1 + i);
		assert_int_equal(revision_in(&r->events[i], name), rev + 1 + (int64_t)i);
	}
	hf_reply_free(r);
}

/* The table holds as schemas 2 to 4 declared it, its rows under their rowids. */
#define OLD_HOLDS_SQL                                                                        \
	"CREATE TABLE old(id TEXT PRIMARY KEY, body BLOB NOT NULL);"                             \
	"INSERT INTO old(rowid, id, body) SELECT rid, id, body FROM holds;"                      \
	"DROP TABLE holds; ALTER TABLE old RENAME TO holds;"

/* A store of schema 3 wrote each resource's counter with every event, and its trims deleted
 * events without a thought for them: the upgrade takes its table as whole, and the revisions
 * of resources whose events are all gone go on from it. */
static void test_schema_3_store(void **state)
{
	(void)state;
	hf_store *st = open_store();
	const hf_claim two[] = {{.name = "a", .units = 1, .capacity = 2},
	                        {.name = "b", .units = 1, .capacity = 2}};
	hf_hold *h = acquire(st, "o", two, 2, HF_MODE_UNITS, NULL), *gone = NULL;
	assert_int_equal(hf_release(st, h->id, h->token, &gone, NULL), HF_OK); /* a 2, b 2 */
	hf_hold_free(gone);
	hf_hold_free(h);
	lock_unlock(st, "a"); /* a 4 */
	lock_unlock(st, "c"); /* c 2: seqs 5, 6 */
	hf_close(st);
	/* schema 3's file: no fold mark, the older events trimmed, the counters whole */
	sqlite3 *db;
	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	exec(db, OLD_HOLDS_SQL "UPDATE meta SET value = '3' WHERE key = 'schema';"
	                       "DELETE FROM meta WHERE key = 'revisions_upto';"
	                       "DELETE FROM events WHERE seq < 6");
	sqlite3_close(db);
	char v[64];
	query("SELECT group_concat(resource || revision, ',') FROM"
	      " (SELECT * FROM revisions ORDER BY resource)",
	      v, sizeof(v));
	assert_string_equal(v, "a4,b2,c2");

	st = open_store();
	expect_next(st, "a", 6, 4);
	expect_next(st, "b", 8, 2);
	expect_next(st, "c", 10, 2);
	hf_close(st);
	query("SELECT value FROM meta WHERE key = 'schema'", v, sizeof(v));
	assert_string_equal(v, "5");
	st = open_store();
	expect_next(st, "a", 12, 6);
	hf_close(st);
}

/* A store of schema 4 keyed its holds by id (rowids as SQLite gave them, a new one with every
 * change): schema 5 keeps each row under its rowid as its row number. Its holds read as
 * before, a live one is released in its row, its events and revisions go on, and new holds
 * take rows after the greatest. */
static void test_schema_4_store(void **state)
{
	(void)state;
	hf_store *st = open_store();
	hf_hold *keyed, *multi = fill(st, &keyed);
	lock_unlock(st, "z"); /* an ended hold; z's revisions 1 and 2 */
	char *before = snapshot(st);
	hf_close(st);
	sqlite3 *db;
	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	/* schema 4's table, its rows in another order than granted (their rowids then too) */
	exec(db, "BEGIN;"
	         "CREATE TABLE old(id TEXT PRIMARY KEY, body BLOB NOT NULL);"
	         "INSERT INTO old(rowid, id, body) SELECT 100 - rid, id, body FROM holds;"
	         "DROP TABLE holds; ALTER TABLE old RENAME TO holds;"
	         "UPDATE meta SET value = '4' WHERE key = 'schema'; COMMIT");
	sqlite3_close(db);
	char v[128];
	query("SELECT group_concat(r, ',') FROM (SELECT rowid AS r FROM holds ORDER BY r)", v,
	      sizeof(v));
	assert_string_equal(v, "95,96,97,98,99");
	query("SELECT max(seq) FROM events", v, sizeof(v));
	uint64_t seq = strtoull(v, NULL, 10);

	st = open_store();
	char *after = snapshot(st);
	assert_same(after, before);
	free(after);
	hf_hold *h = NULL;
	assert_int_equal(hf_release(st, multi->id, multi->token, &h, NULL), HF_OK);
	hf_hold_free(h);
	hf_reply *r = events_after(st, seq); /* the release's */
	seq = r->events[r->n_events - 1].seq;
	hf_reply_free(r);
	expect_next(st, "z", seq, 2);
	before = (free(before), snapshot(st));
	hf_close(st);
	query("SELECT value FROM meta WHERE key = 'schema'", v, sizeof(v));
	assert_string_equal(v, "5");
	/* the released hold kept its row; the new one came after the greatest */
	char sql[200];
	snprintf(sql, sizeof(sql),
	         "SELECT (SELECT rid FROM holds WHERE id = '%s') || ' ' || max(rid) || ' ' ||"
	         " count(*) FROM holds",
	         multi->id);
	query(sql, v, sizeof(v));
	assert_string_equal(v, "99 100 6"); /* multi was granted first: rid 1, then 99 */
	st = open_store();
	after = snapshot(st);
	assert_same(after, before);
	hf_close(st);
	free(after);
	free(before);
	hf_hold_free(multi);
	hf_hold_free(keyed);
}

/* The store at `path` as a crash would leave it now: its committed state (WAL included) in
 * a file of its own at `to`, with nothing a clean close adds. */
static void crash_image(const char *to)
{
	sqlite3 *src, *dst;
	assert_int_equal(sqlite3_open_v2(path, &src, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_open(to, &dst), SQLITE_OK);
	sqlite3_backup *b = sqlite3_backup_init(dst, "main", src, "main");
	assert_non_null(b);
	assert_int_equal(sqlite3_backup_step(b, -1), SQLITE_DONE);
	assert_int_equal(sqlite3_backup_finish(b), SQLITE_OK);
	sqlite3_close(dst);
	sqlite3_close(src);
}

/* Retention trims every event of a resource; after a crash (no close to fold the rest) its
 * revisions and the seqs go on from where they were: the trim folded them in first, and the
 * load folds the events after the last fold (a second resource's revisions in those events
 * are in their lists of revisions only). */
static void test_revisions_after_trim_and_crash(void **state)
{
	(void)state;
	hf_options opt;
	hf_options_init(&opt);
	opt.events_keep_count = 1;
	hf_store *st = NULL;
	assert_int_equal(hf_open(url, &opt, &st, NULL), HF_OK);
	lock_unlock(st, "gone"); /* gone 2 */
	lock_unlock(st, "gone"); /* gone 4 */
	/* Trims run after commits, at most every 200 ms: commit until gone's events are. */
	char v[64];
	uint64_t seq = 4; /* two events a lock_unlock */
	for (int i = 0;; i++) {
		lock_unlock(st, "kept");
		seq += 2;
		query("SELECT count(*) FROM events WHERE resource = 'gone'", v, sizeof(v));
		if (strcmp(v, "0") == 0)
			break;
		if (i == 200)
			fail_msg("retention never trimmed the events of 'gone'");
		usleep(20000);
	}
	hf_reply *r = events_after(st, seq - 1);
	int64_t kept = revision_in(&r->events[0], "kept");
	hf_reply_free(r);
	lock_unlock_both(st, "m1", "m2"); /* m1 2, m2 2 */
	seq += 2;
	char image[240];
	snprintf(image, sizeof(image), "%s/crash.db", dir);
	crash_image(image);
	hf_close(st);
	char saved[sizeof(url)];
	snprintf(saved, sizeof(saved), "%s", url);
	snprintf(url, sizeof(url), "file:%s", image);
	st = open_store();
	expect_next(st, "gone", seq, 4);
	expect_next(st, "kept", seq + 2, kept);
	expect_next(st, "m2", seq + 4, 2);
	hf_close(st); /* folds from the events: the crash left the writer's note behind */
	char sql[200];
	snprintf(sql, sizeof(sql),
	         "SELECT group_concat(resource || revision, ',') || ' ' || (SELECT value FROM meta"
	         " WHERE key = 'revisions_upto') FROM (SELECT * FROM revisions ORDER BY resource)");
	char want[64];
	snprintf(want, sizeof(want), "gone6,kept%lld,m12,m24 %llu", (long long)kept + 2,
	         (unsigned long long)seq + 6);
	snprintf(path, sizeof(path), "%s", image);
	query(sql, v, sizeof(v));
	assert_string_equal(v, want);
	st = open_store();
	expect_next(st, "gone", seq + 6, 6);
	hf_close(st);
	snprintf(path, sizeof(path), "%s/s.db", dir);
	snprintf(url, sizeof(url), "%s", saved);
	static const char *const suffixes[] = {"", "-wal", "-shm", ".lock"};
	for (size_t i = 0; i < 4; i++) {
		char p[320];
		snprintf(p, sizeof(p), "%s%s", image, suffixes[i]);
		unlink(p);
	}
}

/* SQLite's auto-checkpoint is off (the writer checkpoints after its answers instead): the WAL
 * must still be checkpointed and start over, not grow with every commit. */
static void test_wal_checkpointed(void **state)
{
	(void)state;
	hf_store *st = open_store();
	char wal[300];
	snprintf(wal, sizeof(wal), "%s-wal", path);
	struct stat sb;
	/* A pair (two commits here) writes about 5 pages: 500 pairs are past the 1,000 pages
	 * between checkpoints twice over (a WAL never checkpointed grows to about 9 MB; one
	 * checkpointed stays near 4 MB: 1,000 pages and a commit). */
	for (int i = 0; i < 500; i++)
		lock_unlock(st, i % 2 ? "w1" : "w2");
	assert_int_equal(stat(wal, &sb), 0);
	if (sb.st_size > 6 * 1024 * 1024)
		fail_msg("the WAL grew to %lld bytes: never checkpointed", (long long)sb.st_size);
	hf_close(st);
}

static void remove_store(void)
{
	char p[300];
	static const char *const suffixes[] = {"", "-wal", "-shm", ".lock", "-journal"};
	for (size_t i = 0; i < 5; i++) {
		snprintf(p, sizeof(p), "%s%s", path, suffixes[i]);
		unlink(p);
	}
}

static int setup(void **state)
{
	(void)state;
	remove_store();
	return 0;
}

int main(void)
{
	if (!mkdtemp(dir))
		return 1;
	snprintf(path, sizeof(path), "%s/s.db", dir);
	snprintf(url, sizeof(url), "file:%s", path);
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup(test_schema_2_store, setup),
	    cmocka_unit_test_setup(test_newer_schema_refused, setup),
	    cmocka_unit_test_setup(test_fence_after_purge, setup),
	    cmocka_unit_test_setup(test_schema_3_store, setup),
	    cmocka_unit_test_setup(test_schema_4_store, setup),
	    cmocka_unit_test_setup(test_revisions_after_trim_and_crash, setup),
	    cmocka_unit_test_setup(test_wal_checkpointed, setup),
	};
	int rc = cmocka_run_group_tests(tests, NULL, NULL);
	remove_store();
	rmdir(dir);
	return rc;
}
