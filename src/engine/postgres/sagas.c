/*
 * sagas.c — the PostgreSQL engine's saga storage (tables saga_types, sagas): the HF_OP_SAGA_*
 * ops, each one transaction; a save commits the saga row and its `saga.*` event (with the
 * saga's revision) together, under the version compare-and-set and the owner lease that lets
 * one instance at a time run a saga (docs/sagas.md, "Sagas on PostgreSQL").
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/codec.h"
#include "engine/postgres/pg.h"

/* A parameterised statement on c; NULL (and err set) when it failed. */
static PGresult *sq(struct hf__pgc *c, hf_error *err, const char *sql, int n,
                    const char *const *p)
{
	PGresult *r = PQexecParams(c->conn, sql, n, NULL, p, NULL, NULL, 0);
	ExecStatusType st = PQresultStatus(r);
	if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK)
		return r;
	hf__pg_fail(err, c->conn, "database");
	PQclear(r);
	return NULL;
}

static int sqx(struct hf__pgc *c, hf_error *err, const char *sql, int n, const char *const *p)
{
	PGresult *r = sq(c, err, sql, n, p);
	PQclear(r);
	return r ? HF_OK : HF_EENGINE;
}

static int64_t col_i64(PGresult *r, int row, int col)
{
	return strtoll(PQgetvalue(r, row, col), NULL, 10);
}

static int reply_text(struct hf__call *call, const char *text)
{
	if (!(call->reply->json = hf__strdup(text)))
		return hf__err(&call->reply->error, HF_ENOMEM, "out of memory");
	return HF_OK;
}

/* Ends a transaction begun by the caller: COMMIT after rc == HF_OK, else ROLLBACK. */
static int finish(struct hf__pgc *c, int rc, hf_error *err)
{
	if (rc != HF_OK) {
		PQclear(PQexec(c->conn, "ROLLBACK"));
		return rc;
	}
	return sqx(c, err, "COMMIT", 0, NULL);
}

/* ---- types ---- */

/* The version goes up under the row's lock (the upsert), then the row's text is written.
 * Runs in the caller's transaction. */
static int type_put(struct hf__pgc *c, struct hf__call *call, hf_error *err)
{
	json_t *type = json_loads(call->req.json, 0, NULL);
	if (!type)
		return hf__err(err, HF_EINVAL, "saga type is not JSON");
	const char *p[2] = {call->req.name, NULL};
	PGresult *r = sq(c, err,
	                 "INSERT INTO saga_types AS t VALUES ($1, 1, '') ON CONFLICT (name)"
	                 " DO UPDATE SET version = t.version + 1 RETURNING version, now_ms()",
	                 1, p);
	if (!r) {
		json_decref(type);
		return HF_EENGINE;
	}
	json_t *row = json_pack("{s:s, s:I, s:I, s:o}", "name", call->req.name, "version",
	                        (json_int_t)col_i64(r, 0, 0), "updated_at",
	                        (json_int_t)col_i64(r, 0, 1), "type", type);
	PQclear(r);
	char *body = row ? hf__json_dumps(row, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
	json_decref(row);
	p[1] = body;
	int rc = !body ? hf__err(err, HF_ENOMEM, "out of memory")
	               : sqx(c, err, "UPDATE saga_types SET body = $2 WHERE name = $1", 2, p);
	if (rc == HF_OK)
		rc = reply_text(call, body);
	free(body);
	return rc;
}

/* ---- sagas ---- */

/* The lease a save takes, and what refuses it: another instance's live lease on a saga that
 * is being run (running, compensating). Sagas at rest may be saved by anyone (a resume). */
#define RUN_STATES "('running', 'compensating')"

/* The row's text, the GET answer: the caller's fields, version, times, and the owner. NULL:
 * out of memory. */
static char *row_text(const json_t *arg, int64_t version, int64_t created, int64_t now,
                      const char *key, const char *owner)
{
	json_t *row = json_pack(
	    "{s:s?, s:s?, s:s?, s:I, s:I, s:I, s:s?, s:s, s:O}", "id",
	    json_string_value(json_object_get(arg, "id")), "type",
	    json_string_value(json_object_get(arg, "type")), "state",
	    json_string_value(json_object_get(arg, "state")), "version", (json_int_t)version,
	    "created_at", (json_int_t)created, "updated_at", (json_int_t)now, "idempotency_key", key,
	    "owner", owner, "record", json_object_get(arg, "record"));
	char *text = row ? hf__json_dumps(row, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
	json_decref(row);
	return text;
}

/* The save's event, if it names one: resource "saga/ID", its revision advanced in the same
 * statement (as ops.c's events), in the save's transaction. */
static int save_event(struct hf__pgc *c, const json_t *arg, const char *now, hf_error *err)
{
	const char *type = json_string_value(json_object_get(arg, "event"));
	if (!type)
		return HF_OK;
	const char *id = json_string_value(json_object_get(arg, "id"));
	char resource[HF_NAME_MAX + 1];
	snprintf(resource, sizeof(resource), "saga/%s", id);
	json_t *data = json_object_get(arg, "event_data");
	data = data ? json_incref(data)
	            : json_pack("{s:s?, s:s?, s:s?}", "id", id, "type",
	                        json_string_value(json_object_get(arg, "type")), "state",
	                        json_string_value(json_object_get(arg, "state")));
	char *text = data ? hf__json_dumps(data, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
	json_decref(data);
	if (!text)
		return hf__err(err, HF_ENOMEM, "out of memory");
	const char *p[4] = {resource, now, type, text};
	int rc = sqx(c, err,
	             "WITH r AS (INSERT INTO event_revisions AS v VALUES ($1, 1) ON CONFLICT"
	             " (resource) DO UPDATE SET revision = v.revision + 1 RETURNING revision)"
	             " INSERT INTO events (at_ms, type, resource, data, revision)"
	             " SELECT $2::bigint, $3, $1, $4, revision FROM r",
	             4, p);
	free(text);
	return rc;
}

static int answer_save(struct hf__call *call, const char *id, int64_t version, bool replayed)
{
	char text[160];
	snprintf(text, sizeof(text), "{\"id\":\"%s\",\"version\":%lld,\"replayed\":%s}", id,
	         (long long)version, replayed ? "true" : "false");
	return reply_text(call, text);
}

/* The answer to a repeat of a start idempotency key: the first saga's. 1 when answered, 0 when
 * there is none, or an error. */
static int replay(struct hf__pgc *c, struct hf__call *call, const char *key, hf_error *err)
{
	if (!key)
		return 0;
	const char *p[1] = {key};
	PGresult *r = sq(c, err, "SELECT id, version FROM sagas WHERE idem_key = $1", 1, p);
	if (!r)
		return HF_EENGINE;
	bool found = PQntuples(r) > 0;
	int rc = found ? answer_save(call, PQgetvalue(r, 0, 0), col_i64(r, 0, 1), true) : HF_OK;
	PQclear(r);
	return rc == HF_OK ? found : rc;
}

/* A new saga (if_version 0). A repeat of its start idempotency key answers the first saga. */
static int save_new(struct hf__pgc *c, struct hf__call *call, const json_t *arg, hf_error *err)
{
	const char *id = json_string_value(json_object_get(arg, "id"));
	const char *key = json_string_value(json_object_get(arg, "idempotency_key"));
	const char *owner = c->conf->instance;
	int rc = replay(c, call, key, err);
	if (rc != 0)
		return rc == 1 ? HF_OK : rc;
	PGresult *r;
	if (!(r = sq(c, err, "SELECT now_ms()", 0, NULL)))
		return HF_EENGINE;
	int64_t now = col_i64(r, 0, 0);
	PQclear(r);
	char *body = row_text(arg, 1, now, now, key, owner);
	if (!body)
		return hf__err(err, HF_ENOMEM, "out of memory");
	char b_now[24], b_lease[24];
	snprintf(b_now, sizeof(b_now), "%lld", (long long)now);
	snprintf(b_lease, sizeof(b_lease), "%lld", (long long)(now + HF__PG_SAGA_LEASE_MS));
	const char *p[8] = {id, json_string_value(json_object_get(arg, "type")),
	                    json_string_value(json_object_get(arg, "state")), key, body, b_now,
	                    owner, b_lease};
	/* A concurrent start with the same id or key: nothing inserted. */
	r = sq(c, err,
	       "INSERT INTO sagas (id, type, state, version, idem_key, body, created_at, owner,"
	       " lease_until) VALUES ($1, $2, $3, 1, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING"
	       " RETURNING 1",
	       8, p);
	free(body);
	if (!r)
		return HF_EENGINE;
	bool inserted = PQntuples(r) > 0;
	PQclear(r);
	/* A concurrent start with the same key committed first: this statement waited for it, and
	 * the next one sees it (READ COMMITTED). */
	if (!inserted && (rc = replay(c, call, key, err)) != 0)
		return rc == 1 ? HF_OK : rc;
	if (!inserted)
		return hf__err(err, HF_EVERSION, "saga %s exists", id);
	rc = save_event(c, arg, b_now, err);
	return rc == HF_OK ? answer_save(call, id, 1, false) : rc;
}

/* A new version of a saga: the version compare-and-set, then the owner lease. */
static int save_next(struct hf__pgc *c, struct hf__call *call, const json_t *arg, hf_error *err)
{
	const char *id = json_string_value(json_object_get(arg, "id"));
	const char *owner = c->conf->instance;
	const char *p1[2] = {id, owner};
	PGresult *r = sq(c, err,
	                 "SELECT version, created_at, idem_key, now_ms(),"
	                 " state IN " RUN_STATES " AND owner <> $2 AND lease_until > now_ms(),"
	                 " owner, lease_until - now_ms() FROM sagas WHERE id = $1 FOR UPDATE",
	                 2, p1);
	if (!r)
		return HF_EENGINE;
	if (PQntuples(r) == 0) {
		PQclear(r);
		return hf__err(err, HF_ENOSAGA, "no saga %s", id);
	}
	int64_t version = col_i64(r, 0, 0), created = col_i64(r, 0, 1), now = col_i64(r, 0, 3);
	bool taken = strcmp(PQgetvalue(r, 0, 4), "t") == 0;
	if (version != call->req.if_version || taken) {
		int rc = taken ? hf__err(err, HF_ESAGASTATE,
		                         "saga %s is run by instance %s (its lease ends in %s ms)", id,
		                         PQgetvalue(r, 0, 5), PQgetvalue(r, 0, 6))
		               : hf__err(err, HF_EVERSION, "saga %s has another version", id);
		PQclear(r);
		return rc;
	}
	char *body = row_text(arg, version + 1, created, now,
	                      PQgetisnull(r, 0, 2) ? NULL : PQgetvalue(r, 0, 2), owner);
	PQclear(r);
	if (!body)
		return hf__err(err, HF_ENOMEM, "out of memory");
	char b_ver[24], b_now[24], b_lease[24];
	snprintf(b_ver, sizeof(b_ver), "%lld", (long long)(version + 1));
	snprintf(b_now, sizeof(b_now), "%lld", (long long)now);
	snprintf(b_lease, sizeof(b_lease), "%lld", (long long)(now + HF__PG_SAGA_LEASE_MS));
	const char *p[6] = {id, json_string_value(json_object_get(arg, "state")), b_ver, body, owner,
	                    b_lease};
	int rc = sqx(c, err,
	             "UPDATE sagas SET state = $2, version = $3, body = $4, owner = $5,"
	             " lease_until = $6 WHERE id = $1",
	             6, p);
	free(body);
	if (rc == HF_OK)
		rc = save_event(c, arg, b_now, err);
	return rc == HF_OK ? answer_save(call, id, version + 1, false) : rc;
}

static int save(struct hf__pgc *c, struct hf__call *call, hf_error *err)
{
	json_t *arg = json_loads(call->req.json, 0, NULL);
	const char *id = json_string_value(json_object_get(arg, "id"));
	if (!id || strlen(id) != HF_ID_LEN || strspn(id, "0123456789abcdef") != HF_ID_LEN ||
	    !json_is_object(json_object_get(arg, "record")) ||
	    !json_is_string(json_object_get(arg, "type")) ||
	    !json_is_string(json_object_get(arg, "state"))) {
		json_decref(arg);
		return hf__err(err, HF_EINVAL,
		               "saga save needs an id (32 lowercase hex), a type, a state and a record");
	}
	int rc = call->req.if_version == 0 ? save_new(c, call, arg, err)
	                                   : save_next(c, call, arg, err);
	json_decref(arg);
	return rc;
}

/* ---- reads ---- */

static int get_one(struct hf__pgc *c, struct hf__call *call, const char *sql, int missing,
                   const char *what, hf_error *err)
{
	const char *p[1] = {call->req.name};
	PGresult *r = sq(c, err, sql, 1, p);
	if (!r)
		return HF_EENGINE;
	int rc = PQntuples(r) == 0 ? hf__err(err, missing, "no %s '%s'", what, call->req.name)
	                           : reply_text(call, PQgetvalue(r, 0, 0));
	PQclear(r);
	return rc;
}

/* {"items":[row, ...],"more":bool,"total":N} from rows (body, total) of a query that asked
 * for limit + 1 rows. */
static int reply_list(struct hf__call *call, PGresult *r)
{
	size_t n = (size_t)PQntuples(r), take = n < call->req.limit ? n : call->req.limit;
	struct hf__jw w;
	hf__jw_init(&w);
	hf__jw_lit(&w, "{\"items\":[");
	for (size_t i = 0; i < take; i++) {
		if (i)
			hf__jw_lit(&w, ",");
		hf__jw_raw(&w, PQgetvalue(r, (int)i, 0), (size_t)PQgetlength(r, (int)i, 0));
	}
	if (n > take)
		hf__jw_lit(&w, "],\"more\":true,\"total\":");
	else
		hf__jw_lit(&w, "],\"more\":false,\"total\":");
	hf__jw_int(&w, n ? col_i64(r, 0, 1) : 0);
	hf__jw_lit(&w, "}");
	if (!(call->reply->json = hf__jw_finish(&w, NULL)))
		return hf__err(&call->reply->error, HF_ENOMEM, "out of memory");
	call->reply->more = n > take;
	return HF_OK;
}

static int list(struct hf__pgc *c, struct hf__call *call, hf_error *err)
{
	char b_lim[24];
	snprintf(b_lim, sizeof(b_lim), "%zu", call->req.limit + 1);
	PGresult *r;
	if (call->req.op == HF_OP_SAGA_TYPE_LIST) {
		const char *p[2] = {call->req.cursor, b_lim};
		r = sq(c, err,
		       "SELECT body, count(*) OVER () FROM saga_types WHERE ($1::text IS NULL OR"
		       " name > $1) ORDER BY name LIMIT $2",
		       2, p);
	} else {
		json_t *f = call->req.json ? json_loads(call->req.json, 0, NULL) : NULL;
		/* "unowned": the orchestrator's rescan — sagas being run whose owner's lease ran
		 * out (a dead or stalled instance): to take over. */
		const char *p[5] = {call->req.cursor, json_string_value(json_object_get(f, "state")),
		                    json_string_value(json_object_get(f, "type")), b_lim,
		                    json_is_true(json_object_get(f, "unowned")) ? "t" : "f"};
		r = sq(c, err,
		       "SELECT body, count(*) OVER () FROM sagas WHERE ($1::text IS NULL OR id > $1)"
		       " AND ($2::text IS NULL OR state = $2) AND ($3::text IS NULL OR type = $3)"
		       " AND (NOT $5::boolean OR (state IN " RUN_STATES " AND lease_until <= now_ms()))"
		       " ORDER BY id LIMIT $4",
		       5, p);
		json_decref(f);
	}
	if (!r)
		return HF_EENGINE;
	int rc = reply_list(call, r);
	PQclear(r);
	return rc;
}

void hf__pg_saga_op(struct hf__pgc *c, struct hf__call *call)
{
	hf_error *err = &call->reply->error;
	/* Every op is one transaction (BEGIN also replaces a connection found dead). */
	int rc = hf__pgc_begin(c, "BEGIN", err);
	if (rc != HF_OK)
		return;
	switch (call->req.op) {
	case HF_OP_SAGA_TYPE_PUT:
		rc = type_put(c, call, err);
		break;
	case HF_OP_SAGA_TYPE_GET:
		rc = get_one(c, call, "SELECT body FROM saga_types WHERE name = $1", HF_ENOSAGATYPE,
		             "saga type", err);
		break;
	case HF_OP_SAGA_SAVE:
		rc = save(c, call, err);
		break;
	case HF_OP_SAGA_GET:
		rc = get_one(c, call, "SELECT body FROM sagas WHERE id = $1", HF_ENOSAGA, "saga", err);
		break;
	case HF_OP_SAGA_TYPE_LIST:
	case HF_OP_SAGA_LIST:
		rc = list(c, call, err);
		break;
	default:
		rc = hf__err(err, HF_EINVAL, "not a saga operation");
	}
	if ((rc = finish(c, rc, err)) != HF_OK) {
		free(call->reply->json); /* an answer of a change that did not commit */
		call->reply->json = NULL;
		return;
	}
	if (call->req.op == HF_OP_SAGA_SAVE)
		hf__pg_notify_later(c->conf); /* its event: waiting readers re-read */
}

int hf__pg_saga_renew(struct hf__pgc *c, bool release)
{
	hf_error scratch;
	if (hf__pgc_ensure(c, &scratch) != HF_OK)
		return HF_EENGINE;
	char b_lease[24];
	snprintf(b_lease, sizeof(b_lease), "%lld", (long long)(release ? 0 : HF__PG_SAGA_LEASE_MS));
	const char *p[2] = {c->conf->instance, b_lease};
	/* Released: lease_until = now (another instance's rescan takes the sagas at once). */
	return sqx(c, &scratch,
	           "UPDATE sagas SET lease_until = now_ms() + $2 WHERE owner = $1 AND state IN "
	           RUN_STATES,
	           2, p);
}
