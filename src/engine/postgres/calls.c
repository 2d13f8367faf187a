/*
 * calls.c — the PostgreSQL engine's changes that take one round trip: an acquire that grants
 * or refuses at once, and release / extend / confirm, each one call of a server-side function
 * (schema.c, migration 6) prepared once per connection. What a function cannot finish (a
 * sweep, a park, a lease ended under another change) it answers 'slow', having written
 * nothing, and ops.c's transactions run the call.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/rules.h"
#include "engine/postgres/pg.h"

/* Statement names, per connection (c->prepared). The functions' rows are read as text with
 * PQgetvalue: cheaper than decoding a composite, an array or JSON, and a refusal is one row. */
static const char acquire_sql[] =
    "SELECT * FROM hf_acquire($1::text[], $2::bigint[], $3::bigint[], $4, $5, $6, $7, $8, $9,"
    " $10, $11, $12, $13, $14)";
static const char change_sql[] = "SELECT * FROM hf_hold_change($1, $2, $3, $4, $5, $6)";

bool hf__pg_lost_race(const PGresult *r)
{
	const char *st = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
	return st && (!strcmp(st, "40P01") || !strcmp(st, "40001") || !strcmp(st, "23505"));
}

char *hf__pg_text_array(const char *const *names, size_t n)
{
	size_t len = 3;
	for (size_t i = 0; i < n; i++)
		len += 2 * strlen(names[i]) + 3;
	char *arr = malloc(len), *o = arr;
	if (!arr)
		return NULL;
	*o++ = '{';
	for (size_t j = 0; j < n; j++) {
		if (j)
			*o++ = ',';
		*o++ = '"';
		for (const char *ch = names[j]; *ch; ch++) {
			if (*ch == '"' || *ch == '\\')
				*o++ = '\\';
			*o++ = *ch;
		}
		*o++ = '"';
	}
	*o++ = '}';
	*o = '\0';
	return arr;
}

/* v[0..n) as a bigint[] literal into buf (room for 21 bytes a value, plus 3). */
static void i64_list(char *buf, const int64_t *v, size_t n)
{
	char *o = buf;
	*o++ = '{';
	for (size_t i = 0; i < n; i++)
		o += sprintf(o, "%s%lld", i ? "," : "", (long long)v[i]);
	*o++ = '}';
	*o = '\0';
}

static int64_t geti(const PGresult *r, int row, int col)
{
	return strtoll(PQgetvalue(r, row, col), NULL, 10);
}

/* Prepares the statements on a connection that has not had them yet: false on failure. */
static bool prepare(struct hf__pgc *c)
{
	if (c->prepared)
		return true;
	PGresult *a = PQprepare(c->conn, "hf_acquire", acquire_sql, 0, NULL);
	PGresult *b = PQresultStatus(a) == PGRES_COMMAND_OK
	                  ? PQprepare(c->conn, "hf_hold_change", change_sql, 0, NULL)
	                  : NULL;
	c->prepared = b && PQresultStatus(b) == PGRES_COMMAND_OK;
	PQclear(a);
	PQclear(b);
	return c->prepared;
}

/* Runs a prepared statement: its rows, or NULL with the reply's error filled (and a lost race
 * marked on c: the call rolled back whole and may run again). A connection lost during the
 * call leaves its outcome unknown: an engine error, as a failed COMMIT of ops.c, never a
 * second run that could grant twice. */
static PGresult *run(struct hf__pgc *c, struct hf__call *call, const char *stmt, int n,
                     const char *const *p)
{
	PGresult *r = PQexecPrepared(c->conn, stmt, n, p, NULL, NULL, 0);
	if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) > 0)
		return r;
	c->lost_race = hf__pg_lost_race(r);
	if (PQresultStatus(r) == PGRES_TUPLES_OK)
		hf__err(&call->reply->error, HF_EENGINE, "database: %s answered no row", stmt);
	else
		hf__pg_fail(&call->reply->error, c->conn, "database");
	PQclear(r);
	return NULL;
}

/* The hold of a function's rows: columns id.. of the first row, one part per row (from
 * column `part`: name, units, fence), into the reply. */
static int reply_hold(struct hf__call *call, const hf_hold *h, const PGresult *r, int part)
{
	hf_hold_part parts[HF_CLAIMS_MAX];
	hf_hold v = *h;
	v.n_parts = (size_t)PQntuples(r) < HF_CLAIMS_MAX ? (size_t)PQntuples(r) : HF_CLAIMS_MAX;
	v.parts = parts;
	for (size_t i = 0; i < v.n_parts; i++)
		parts[i] = (hf_hold_part){.resource = PQgetvalue(r, (int)i, part),
		                          .units = geti(r, (int)i, part + 1),
		                          .fence = geti(r, (int)i, part + 2)};
	hf_hold *copy = malloc(sizeof(*copy));
	if (!copy || hf__hold_copy(copy, &v) != HF_OK) {
		free(copy);
		return hf__err(&call->reply->error, HF_ENOMEM, "out of memory");
	}
	call->reply->hold = copy;
	return HF_OK;
}

static int cmp_claim(const void *a, const void *b)
{
	return strcmp((*(const hf_claim *const *)a)->name, (*(const hf_claim *const *)b)->name);
}

/* An acquire without an idempotency key; false: ops.c runs it. */
static bool acquire(struct hf__pgc *c, struct hf__call *call)
{
	const hf_acquire_req *a = &call->req.acquire;
	hf_error *err = &call->reply->error;
	const hf_options *opt = &c->conf->opt;
	const hf_claim *claim[HF_CLAIMS_MAX];
	const char *names[HF_CLAIMS_MAX];
	int64_t units[HF_CLAIMS_MAX], caps[HF_CLAIMS_MAX];
	size_t n = a->n_claims < HF_CLAIMS_MAX ? a->n_claims : HF_CLAIMS_MAX;
	for (size_t i = 0; i < n; i++)
		claim[i] = &a->claims[i];
	if (!a->any) /* weighed in name order, as ops.c's resolve() weighs them */
		qsort(claim, n, sizeof(claim[0]), cmp_claim);
	for (size_t i = 0; i < n; i++) {
		names[i] = claim[i]->name;
		units[i] = claim[i]->units;
		caps[i] = claim[i]->capacity;
	}
	hf_hold h = {.owner = (char *)a->owner, .mode = a->mode, .state = HF_HOLD_TENTATIVE};
	if (hf__random_hex(h.id, HF_ID_LEN / 2) != HF_OK ||
	    hf__random_hex(h.token, HF_TOKEN_LEN / 2) != HF_OK) {
		hf__err(err, HF_EINTERNAL, "no randomness for the hold's token");
		return true;
	}
	char *arr = hf__pg_text_array(names, n);
	char lu[HF_CLAIMS_MAX * 21 + 3], lc[HF_CLAIMS_MAX * 21 + 3], mode[4], ttl[24], mh[24],
	    mr[24];
	if (!arr) {
		hf__err(err, HF_ENOMEM, "out of memory");
		return true;
	}
	i64_list(lu, units, n);
	i64_list(lc, caps, n);
	snprintf(mode, sizeof(mode), "%d", (int)a->mode);
	snprintf(ttl, sizeof(ttl), "%lld", (long long)a->ttl_ms);
	snprintf(mh, sizeof(mh), "%zu", opt->max_holds);
	snprintf(mr, sizeof(mr), "%zu", opt->max_resources);
	const char *p[14] = {arr, lu, lc, a->any ? "t" : "f",
	                     a->any && a->wait_ms == 0 ? "t" : "f", a->wait_ms > 0 ? "t" : "f",
	                     mode, hf_mode_name(a->mode), a->owner, ttl, h.id, h.token, mh, mr};
	PGresult *r = run(c, call, "hf_acquire", 14, p);
	free(arr);
	if (!r)
		return true;
	const char *v = PQgetvalue(r, 0, 0), *name = PQgetvalue(r, 0, 2);
	int64_t at = geti(r, 0, 1), u = geti(r, 0, 3), x = geti(r, 0, 5);
	if (!strcmp(v, "granted")) {
		h.created_at_ms = at;
		h.expires_at_ms = at + a->ttl_ms;
		if (reply_hold(call, &h, r, 2) == HF_OK)
			hf__pg_notify_later(c->conf); /* an event was written */
	} else if (!strcmp(v, "no_resource")) {
		hf__err(err, HF_ENORESOURCE, "resource '%s' does not exist", name);
	} else if (!strcmp(v, "cap_mismatch")) {
		hf__err(err, HF_ECAPMISMATCH, "resource '%s' has capacity %lld, not %lld", name,
		        (long long)x, (long long)u);
	} else if (!strcmp(v, "capacity")) {
		hf__err(err, HF_ECAPACITY, "%lld units of '%s' exceed its capacity %lld", (long long)u,
		        name, (long long)x);
	} else if (!strcmp(v, "limit_resources")) {
		hf__err(err, HF_ELIMIT, "the store holds %zu resources, the limit is %zu", (size_t)x,
		        opt->max_resources);
	} else if (!strcmp(v, "limit_holds")) {
		hf__err(err, HF_ELIMIT, "the store's limit of live holds is reached");
	} else if (!strcmp(v, "unavailable")) {
		hf__err_unavailable(err, n);
	} else { /* "slow" */
		PQclear(r);
		return false;
	}
	PQclear(r);
	return true;
}

/* A release, extend or confirm; false: ops.c runs it. */
static bool hold_change(struct hf__pgc *c, struct hf__call *call)
{
	const hf_request *rq = &call->req;
	hf_error *err = &call->reply->error;
	bool by_operator = rq->op == HF_OP_RELEASE && rq->operator_release;
	char ttl[24], keep[24];
	snprintf(ttl, sizeof(ttl), "%lld", (long long)rq->ttl_ms);
	snprintf(keep, sizeof(keep), "%lld", (long long)c->conf->opt.hold_retention_ms);
	const char *p[6] = {rq->op == HF_OP_RELEASE  ? "release"
	                    : rq->op == HF_OP_EXTEND ? "extend"
	                                             : "confirm",
	                    rq->hold_id, rq->token, by_operator ? "operator" : NULL, ttl, keep};
	PGresult *r = run(c, call, "hf_hold_change", 6, p);
	if (!r)
		return true;
	const char *v = PQgetvalue(r, 0, 0);
	if (!strcmp(v, "slow")) {
		PQclear(r);
		return false;
	}
	if (!strcmp(v, "no_hold")) {
		hf__err_no_hold(err, rq->hold_id, NULL);
		PQclear(r);
		return true;
	}
	hf_hold h = {.owner = PQgetvalue(r, 0, 3),
	             .state = (hf_hold_state)geti(r, 0, 4),
	             .mode = (hf_mode)geti(r, 0, 5),
	             .created_at_ms = geti(r, 0, 6),
	             .expires_at_ms = geti(r, 0, 7),
	             .ended_at_ms = geti(r, 0, 8)};
	snprintf(h.id, sizeof(h.id), "%s", rq->hold_id);
	if (!strcmp(v, "refused")) {
		/* The function acted only on a matching token (or an operator's release) of a hold
		 * not ended: the rule of every engine names what was wrong. */
		if (hf__check_owner_or_operator(h.id, PQgetvalue(r, 0, 2), h.state, rq->token,
		                                by_operator, err) == HF_OK)
			hf__err(err, HF_EINTERNAL, "hold '%s' was refused without a reason", h.id);
	} else if (reply_hold(call, &h, r, 9) == HF_OK) {
		hf__pg_notify_later(c->conf); /* units freed or an event written */
	}
	PQclear(r);
	return true;
}

bool hf__pg_call(struct hf__pgc *c, struct hf__call *call)
{
	hf_op op = call->req.op;
	bool change = op == HF_OP_RELEASE || op == HF_OP_EXTEND || op == HF_OP_CONFIRM;
	if (!change && (op != HF_OP_ACQUIRE || call->req.acquire.idempotency_key))
		return false;
	/* A connection the server closed while it sat idle (a restart) is replaced before anything
	 * is sent on it, as ops.c's first statement does: once sent, a call's fate is unknown. */
	if (c->conn && (!PQconsumeInput(c->conn) || PQstatus(c->conn) != CONNECTION_OK))
		hf__pgc_close(c);
	hf_error scratch;
	if (hf__pgc_ensure(c, &scratch) != HF_OK || !prepare(c) ||
	    hf__pg_upkeep(c, &scratch) != HF_OK) {
		/* ops.c reports it, or reconnects. A purge that lost a race says nothing of the call:
		 * only the call's own failure may make it run again. */
		c->lost_race = false;
		return false;
	}
	return change ? hold_change(c, call) : acquire(c, call);
}
