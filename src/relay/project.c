/*
 * project.c — CQRS read models: the fold of fold.c kept in a SQLite file with its position
 * in the log, per-owner bookings and per-resource availability read from it, and a
 * cache-aside read path on Redis whose keys the events invalidate.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include <hiredis/hiredis.h>
#include <sqlite3.h>

#include "relay.h"

struct relay_project {
	sqlite3 *db;
	struct relay_fold fold;
	redisContext *cache; /* NULL: no cache to invalidate */
	int64_t cache_ttl_ms;
	char *checkpoint; /* NULL, or the store resource its position is published to */
	bool broken;      /* a page folded in memory was not committed: reopen to go on */
};

static int db_fail(struct relay_project *p, const char *what, hf_error *err)
{
	relay_err(err, HF_ESTORAGE, "projection %s: %s", what, sqlite3_errmsg(p->db));
	return HF_ESTORAGE;
}

static const char schema[] =
    "PRAGMA journal_mode=WAL;"
    "CREATE TABLE IF NOT EXISTS position (k INTEGER PRIMARY KEY CHECK (k = 0), seq INTEGER);"
    "CREATE TABLE IF NOT EXISTS resources (name TEXT PRIMARY KEY, body TEXT NOT NULL);"
    "CREATE TABLE IF NOT EXISTS holds (id TEXT PRIMARY KEY, owner TEXT NOT NULL, body TEXT NOT NULL);"
    "CREATE INDEX IF NOT EXISTS holds_owner ON holds (owner, id);"
    "CREATE TABLE IF NOT EXISTS revisions (name TEXT PRIMARY KEY, revision INTEGER NOT NULL);";

static const char wipe[] = "DELETE FROM position; DELETE FROM resources; DELETE FROM holds;"
                           "DELETE FROM revisions;";

/* Loads one table (key, body JSON, or key, integer) into `into`. */
static int load_table(struct relay_project *p, const char *sql, json_t *into, bool integer,
                      hf_error *err)
{
	sqlite3_stmt *s = NULL;
	if (sqlite3_prepare_v2(p->db, sql, -1, &s, NULL) != SQLITE_OK)
		return db_fail(p, "load", err);
	int rc = HF_OK, step;
	while (rc == HF_OK && (step = sqlite3_step(s)) == SQLITE_ROW) {
		const char *key = (const char *)sqlite3_column_text(s, 0);
		json_t *v = integer ? json_integer(sqlite3_column_int64(s, 1))
		                    : json_loads((const char *)sqlite3_column_text(s, 1), 0, NULL);
		if (!v || json_object_set_new(into, key, v) != 0) {
			relay_err(err, HF_ECORRUPT, "projection row '%s' is not JSON", key);
			rc = HF_ECORRUPT;
		}
	}
	if (rc == HF_OK && step != SQLITE_DONE)
		rc = db_fail(p, "load", err);
	sqlite3_finalize(s);
	return rc;
}

static int load(struct relay_project *p, hf_error *err)
{
	sqlite3_stmt *s = NULL;
	if (sqlite3_prepare_v2(p->db, "SELECT seq FROM position", -1, &s, NULL) != SQLITE_OK)
		return db_fail(p, "load", err);
	if (sqlite3_step(s) == SQLITE_ROW)
		p->fold.seq = (uint64_t)sqlite3_column_int64(s, 0);
	sqlite3_finalize(s);
	int rc = load_table(p, "SELECT name, body FROM resources", p->fold.resources, false, err);
	if (rc == HF_OK)
		rc = load_table(p, "SELECT id, body FROM holds", p->fold.holds, false, err);
	if (rc == HF_OK)
		rc = load_table(p, "SELECT name, revision FROM revisions", p->fold.revisions, true, err);
	return rc;
}

int relay_project_open(const char *path, bool rebuild, struct relay_project **out, hf_error *err)
{
	*out = NULL;
	struct relay_project *p = calloc(1, sizeof(*p));
	if (!p || relay_fold_init(&p->fold) != HF_OK) {
		free(p);
		relay_err(err, HF_ENOMEM, "out of memory");
		return HF_ENOMEM;
	}
	int rc = HF_OK;
	if (sqlite3_open(path, &p->db) != SQLITE_OK)
		rc = db_fail(p, "open", err);
	else if (sqlite3_busy_timeout(p->db, 5000) != SQLITE_OK ||
	         sqlite3_exec(p->db, schema, NULL, NULL, NULL) != SQLITE_OK)
		rc = db_fail(p, "schema", err);
	else if (rebuild && sqlite3_exec(p->db, wipe, NULL, NULL, NULL) != SQLITE_OK)
		rc = db_fail(p, "rebuild", err);
	if (rc == HF_OK)
		rc = load(p, err);
	if (rc != HF_OK) {
		relay_project_close(p);
		return rc;
	}
	*out = p;
	return HF_OK;
}

void relay_project_close(struct relay_project *p)
{
	if (!p)
		return;
	sqlite3_close(p->db);
	relay_fold_free(&p->fold);
	if (p->cache)
		redisFree(p->cache);
	free(p->checkpoint);
	free(p);
}

int relay_project_publish(struct relay_project *p, const char *name, hf_error *err)
{
	char buf[HF_NAME_MAX + 2];
	int n = snprintf(buf, sizeof(buf), RELAY_OWN_PREFIX "projection.%s/checkpoint", name);
	if (n < 0 || n > HF_NAME_MAX) {
		relay_err(err, HF_EINVAL, "projection name '%s' is too long", name);
		return HF_EINVAL;
	}
	free(p->checkpoint);
	if (!(p->checkpoint = strdup(buf))) {
		relay_err(err, HF_ENOMEM, "out of memory");
		return HF_ENOMEM;
	}
	return HF_OK;
}

/* Writes the position where retention reads it (as a relay's checkpoint), so the log is not
 * trimmed past what this projection has folded. */
static int publish_position(struct relay_project *p, hf_store *st, hf_error *err)
{
	char meta[64];
	snprintf(meta, sizeof(meta), "{\"seq\":%" PRIu64 "}", p->fold.seq);
	hf_request rq;
	hf_request_init(&rq, HF_OP_PUT_RESOURCE);
	rq.name = p->checkpoint;
	rq.capacity = 1;
	rq.meta = meta;
	hf_reply *rp = NULL;
	int rc = hf_call(st, &rq, &rp);
	if (rc != HF_OK && err)
		*err = rp->error;
	hf_reply_free(rp);
	return rc;
}

uint64_t relay_project_seq(const struct relay_project *p)
{
	return p->fold.seq;
}

/* ---- Catching up: fold a page of events, then write what it touched in one transaction. */

/* Names of what one batch touched: resources, hold ids, owners (as object keys). */
struct touched {
	json_t *resources, *holds, *owners;
};

static void touch_hold_owner(struct relay_project *p, struct touched *t, const char *id)
{
	json_t *h = id ? json_object_get(p->fold.holds, id) : NULL;
	const char *owner = json_string_value(json_object_get(h, "owner"));
	if (owner)
		json_object_set_new(t->owners, owner, json_true());
}

static void touch(struct relay_project *p, struct touched *t, const hf_event *ev, bool after)
{
	touch_hold_owner(p, t, ev->hold_id);
	if (!after)
		return;
	if (ev->hold_id)
		json_object_set_new(t->holds, ev->hold_id, json_true());
	if (ev->resource)
		json_object_set_new(t->resources, ev->resource, json_true());
	for (size_t i = 0; i < ev->n_revisions; i++)
		json_object_set_new(t->resources, ev->revisions[i].resource, json_true());
}

/* Runs one statement: ?1 = k, ?2 = a (or n when a is NULL), ?3 = b, as far as it has them. */
static int exec_row(struct relay_project *p, const char *sql, const char *k, const char *a,
                    const char *b, int64_t n, hf_error *err)
{
	sqlite3_stmt *s = NULL;
	if (sqlite3_prepare_v2(p->db, sql, -1, &s, NULL) != SQLITE_OK)
		return db_fail(p, "write", err);
	int count = sqlite3_bind_parameter_count(s);
	sqlite3_bind_text(s, 1, k, -1, SQLITE_TRANSIENT);
	if (count >= 2 && a)
		sqlite3_bind_text(s, 2, a, -1, SQLITE_TRANSIENT);
	else if (count >= 2)
		sqlite3_bind_int64(s, 2, n);
	if (count >= 3)
		sqlite3_bind_text(s, 3, b, -1, SQLITE_TRANSIENT);
	int step = sqlite3_step(s);
	sqlite3_finalize(s);
	return step == SQLITE_DONE ? HF_OK : db_fail(p, "write", err);
}

/* Writes (or deletes) the rows of what was touched, and the position. */
static int persist(struct relay_project *p, const struct touched *t, hf_error *err)
{
	int rc = HF_OK;
	const char *key;
	json_t *v;
	json_object_foreach(t->resources, key, v) {
		json_t *r = json_object_get(p->fold.resources, key);
		char *body = r ? json_dumps(r, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
		rc = body ? exec_row(p, "INSERT OR REPLACE INTO resources VALUES (?, ?)", key, body,
		                     NULL, 0, err)
		          : exec_row(p, "DELETE FROM resources WHERE name = ?", key, NULL, NULL, 0, err);
		free(body);
		json_t *rev = json_object_get(p->fold.revisions, key);
		if (rc == HF_OK && rev)
			rc = exec_row(p, "INSERT OR REPLACE INTO revisions VALUES (?, ?)", key, NULL, NULL,
			              json_integer_value(rev), err);
		if (rc != HF_OK)
			return rc;
	}
	json_object_foreach(t->holds, key, v) {
		json_t *h = json_object_get(p->fold.holds, key);
		char *body = h ? json_dumps(h, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
		rc = body ? exec_row(p, "INSERT OR REPLACE INTO holds VALUES (?, ?, ?)", key,
		                     json_string_value(json_object_get(h, "owner")), body, 0, err)
		          : exec_row(p, "DELETE FROM holds WHERE id = ?", key, NULL, NULL, 0, err);
		free(body);
		if (rc != HF_OK)
			return rc;
	}
	return exec_row(p, "INSERT OR REPLACE INTO position (seq, k) VALUES (?2, ?1)", "0", NULL,
	                NULL, (int64_t)p->fold.seq, err);
}

static void cache_key(char *buf, size_t size, const char *view, const char *name)
{
	snprintf(buf, size, "%s%s:%s", RELAY_VIEW_CACHE_PREFIX, view, name);
}

/* Deletes the cached views the batch changed; a cache that fails is dropped (its keys then
 * live at most their TTL) and reconnected by the next relay_project_cache call. */
static void invalidate(struct relay_project *p, const struct touched *t)
{
	const char *key;
	json_t *v;
	char k[HF_NAME_MAX + 64];
	for (int pass = 0; p->cache && pass < 2; pass++) {
		json_object_foreach(pass ? t->owners : t->resources, key, v) {
			cache_key(k, sizeof(k), pass ? "owner" : "availability", key);
			redisReply *r = redisCommand(p->cache, "DEL %s", k);
			if (!r) {
				relay_log("warn", "msg=cache_invalidate_failed why=\"%s\"", p->cache->errstr);
				redisFree(p->cache);
				p->cache = NULL;
				return;
			}
			freeReplyObject(r);
		}
	}
}

int relay_project_skip_to(struct relay_project *p, uint64_t upto, hf_error *err)
{
	if (upto <= p->fold.seq)
		return HF_OK;
	uint64_t from = p->fold.seq + 1;
	p->fold.seq = upto;
	int rc = exec_row(p, "INSERT OR REPLACE INTO position (seq, k) VALUES (?2, ?1)", "0", NULL,
	                  NULL, (int64_t)upto, err);
	if (rc != HF_OK)
		return rc;
	relay_log("warn", "msg=skipped_trimmed from=%" PRIu64 " to=%" PRIu64 " count=%" PRIu64,
	          from, upto, upto - from + 1);
	return HF_OK;
}

static int sync_page(struct relay_project *p, hf_store *st, int64_t wait_ms, size_t *n,
                     hf_error *err)
{
	if (p->broken) {
		relay_err(err, HF_ESTORAGE, "projection is behind its memory after a failed write: "
		                            "reopen it");
		return HF_ESTORAGE;
	}
	hf_request rq;
	hf_request_init(&rq, HF_OP_READ_EVENTS);
	rq.after = p->fold.seq;
	rq.limit = HF_LIST_MAX;
	rq.wait_ms = wait_ms;
	hf_reply *rp = NULL;
	int rc = hf_call(st, &rq, &rp);
	*n = rc == HF_OK ? rp->n_events : 0;
	if (rc != HF_OK) {
		if (err)
			*err = rp->error;
		hf_reply_free(rp);
		return rc;
	}
	struct touched t = {json_object(), json_object(), json_object()};
	bool foreign = false; /* an event that is not on the relays' own resources */
	for (size_t i = 0; rc == HF_OK && i < *n; i++) {
		foreign = foreign || !relay_is_own(rp->events[i].resource);
		touch(p, &t, &rp->events[i], false);
		rc = relay_fold_event(&p->fold, &rp->events[i], err);
		touch(p, &t, &rp->events[i], true);
	}
	hf_reply_free(rp);
	if (rc == HF_OK && *n > 0) {
		if (sqlite3_exec(p->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
			rc = db_fail(p, "begin", err);
		else if ((rc = persist(p, &t, err)) != HF_OK ||
		         sqlite3_exec(p->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
			if (rc == HF_OK)
				rc = db_fail(p, "commit", err);
			sqlite3_exec(p->db, "ROLLBACK", NULL, NULL, NULL);
		}
	}
	p->broken = rc != HF_OK;
	/* After the commit: a reader that misses the cache now reads the new rows. */
	if (rc == HF_OK)
		invalidate(p, &t);
	/* Only after other events: publishing is an event itself, which must not feed itself. */
	if (rc == HF_OK && foreign && p->checkpoint)
		rc = publish_position(p, st, err);
	json_decref(t.resources);
	json_decref(t.holds);
	json_decref(t.owners);
	return rc;
}

int relay_project_sync(struct relay_project *p, hf_store *st, int64_t wait_ms,
                       volatile sig_atomic_t *stop, hf_error *err)
{
	for (;;) {
		size_t n = 0;
		int rc = sync_page(p, st, wait_ms, &n, err);
		if (rc != HF_OK)
			return rc;
		/* Without wait: stop at the end of the log; with it: follow until *stop. */
		if ((n == 0 && wait_ms == 0) || (stop && *stop))
			return HF_OK;
	}
}

/* ---- The views, read from the SQLite rows. ---------------------------------------- */

static json_t *position(const struct relay_project *p, const char *resource)
{
	json_t *pos = json_pack("{s:I}", "seq", (json_int_t)p->fold.seq);
	json_t *rev = resource ? json_object_get(p->fold.revisions, resource) : NULL;
	if (pos && rev)
		json_object_set(pos, "revision", rev);
	return pos;
}

int relay_project_owner(struct relay_project *p, const char *owner, json_t **out, hf_error *err)
{
	sqlite3_stmt *s = NULL;
	if (sqlite3_prepare_v2(p->db, "SELECT id, body FROM holds WHERE owner = ? ORDER BY id", -1,
	                       &s, NULL) != SQLITE_OK)
		return db_fail(p, "read", err);
	sqlite3_bind_text(s, 1, owner, -1, SQLITE_TRANSIENT);
	json_t *holds = json_array();
	int step;
	while ((step = sqlite3_step(s)) == SQLITE_ROW) {
		json_t *h = json_loads((const char *)sqlite3_column_text(s, 1), 0, NULL);
		if (h) {
			json_object_set_new(h, "id", json_string((const char *)sqlite3_column_text(s, 0)));
			json_object_del(h, "owner");
		}
		json_array_append_new(holds, h);
	}
	sqlite3_finalize(s);
	if (step != SQLITE_DONE) {
		json_decref(holds);
		return db_fail(p, "read", err);
	}
	*out = json_pack("{s:s, s:o, s:o}", "owner", owner, "holds", holds, "position",
	                 position(p, NULL));
	return *out ? HF_OK : HF_ENOMEM;
}

int relay_project_availability(struct relay_project *p, const char *resource, json_t **out,
                               hf_error *err)
{
	*out = NULL;
	sqlite3_stmt *s = NULL;
	if (sqlite3_prepare_v2(p->db, "SELECT body FROM resources WHERE name = ?", -1, &s, NULL) !=
	    SQLITE_OK)
		return db_fail(p, "read", err);
	sqlite3_bind_text(s, 1, resource, -1, SQLITE_TRANSIENT);
	json_t *r = sqlite3_step(s) == SQLITE_ROW
	                ? json_loads((const char *)sqlite3_column_text(s, 0), 0, NULL)
	                : NULL;
	sqlite3_finalize(s);
	if (!r) {
		relay_err(err, HF_ENORESOURCE, "no resource '%s' in the projection at seq %" PRIu64,
		          resource, p->fold.seq);
		return HF_ENORESOURCE;
	}
	json_t *cap = json_object_get(r, "capacity");
	json_int_t held = json_integer_value(json_object_get(r, "held"));
	*out = json_pack("{s:s, s:O, s:I, s:O, s:O, s:o}", "resource", resource, "capacity", cap,
	                 "held", held, "holds", json_object_get(r, "holds"), "declared",
	                 json_object_get(r, "declared"), "position", position(p, resource));
	if (*out)
		json_object_set_new(*out, "free", json_is_integer(cap)
		                                      ? json_integer(json_integer_value(cap) - held)
		                                      : json_null());
	json_decref(r);
	return *out ? HF_OK : HF_ENOMEM;
}

/* ---- Cache-aside on Redis. ------------------------------------------------------- */

int relay_project_cache(struct relay_project *p, const char *url, int64_t ttl_ms, hf_error *err)
{
	char host[256];
	int port;
	int rc = relay_parse_redis_url(url, host, sizeof(host), &port, err);
	if (rc != HF_OK)
		return rc;
	struct timeval tv = {2, 0};
	redisContext *c = redisConnectWithTimeout(host, port, tv);
	if (!c || c->err) {
		relay_err(err, HF_EENGINE, "cache %s: %s", url, c ? c->errstr : "out of memory");
		if (c)
			redisFree(c);
		return HF_EENGINE;
	}
	redisSetTimeout(c, tv);
	if (p->cache)
		redisFree(p->cache);
	p->cache = c;
	p->cache_ttl_ms = ttl_ms;
	return HF_OK;
}

int relay_project_cached(struct relay_project *p, const char *view, const char *name,
                         char **json, bool *hit, hf_error *err)
{
	*json = NULL;
	*hit = false;
	char k[HF_NAME_MAX + 64];
	cache_key(k, sizeof(k), view, name);
	redisReply *r = p->cache ? redisCommand(p->cache, "GET %s", k) : NULL;
	if (r && r->type == REDIS_REPLY_STRING) {
		*json = strdup(r->str);
		*hit = *json != NULL;
	}
	freeReplyObject(r);
	if (*hit)
		return HF_OK;
	/* Miss (or no cache): read the projection, then set the key with its TTL. */
	json_t *v = NULL;
	int rc = strcmp(view, "owner") == 0 ? relay_project_owner(p, name, &v, err)
	                                    : relay_project_availability(p, name, &v, err);
	if (rc != HF_OK)
		return rc;
	*json = json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS);
	json_decref(v);
	if (!*json)
		return HF_ENOMEM;
	r = p->cache ? redisCommand(p->cache, "SET %s %s PX %lld", k, *json,
	                            (long long)p->cache_ttl_ms)
	             : NULL;
	freeReplyObject(r);
	return HF_OK;
}
