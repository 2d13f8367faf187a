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

/* One call of a function: its parameters, made before it is sent and kept until its answer
 * is read (a batch sends several before reading any). */
struct fcall {
	const char *stmt; /* the prepared statement: "hf_acquire" or "hf_hold_change" */
	int n;            /* parameters in p */
	const char *p[14];
	char *names;      /* owned: the acquire's text[] literal */
	size_t n_claims;
	hf_hold h;        /* an acquire's hold: id, token, owner, mode */
	char units[HF_CLAIMS_MAX * 21 + 3], caps[HF_CLAIMS_MAX * 21 + 3];
	char mode[4], ttl[24], max_holds[24], max_res[24], keep[24];
};

/* The parameters of an acquire without an idempotency key into f; false when the reply is
 * filled with an error instead (nothing to send). */
static bool acquire_args(const struct hf__pgc *c, struct hf__call *call, struct fcall *f)
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
	f->h = (hf_hold){.owner = (char *)a->owner, .mode = a->mode, .state = HF_HOLD_TENTATIVE};
	if (hf__random_hex(f->h.id, HF_ID_LEN / 2) != HF_OK ||
	    hf__random_hex(f->h.token, HF_TOKEN_LEN / 2) != HF_OK) {
		hf__err(err, HF_EINTERNAL, "no randomness for the hold's token");
		return false;
	}
	if (!(f->names = hf__pg_text_array(names, n))) {
		hf__err(err, HF_ENOMEM, "out of memory");
		return false;
	}
	f->n_claims = n;
	i64_list(f->units, units, n);
	i64_list(f->caps, caps, n);
	snprintf(f->mode, sizeof(f->mode), "%d", (int)a->mode);
	snprintf(f->ttl, sizeof(f->ttl), "%lld", (long long)a->ttl_ms);
	snprintf(f->max_holds, sizeof(f->max_holds), "%zu", opt->max_holds);
	snprintf(f->max_res, sizeof(f->max_res), "%zu", opt->max_resources);
	const char *p[14] = {f->names, f->units, f->caps, a->any ? "t" : "f",
	                     a->any && a->wait_ms == 0 ? "t" : "f", a->wait_ms > 0 ? "t" : "f",
	                     f->mode, hf_mode_name(a->mode), a->owner, f->ttl, f->h.id,
	                     f->h.token, f->max_holds, f->max_res};
	memcpy(f->p, p, sizeof(p));
	f->n = 14;
	f->stmt = "hf_acquire";
	return true;
}

/* An acquire's answer r (committed) into the reply; false: it was 'slow', ops.c runs it. */
static bool acquire_answer(const struct hf__pgc *c, struct hf__call *call, struct fcall *f,
                           const PGresult *r)
{
	const hf_acquire_req *a = &call->req.acquire;
	hf_error *err = &call->reply->error;
	const char *v = PQgetvalue(r, 0, 0), *name = PQgetvalue(r, 0, 2);
	int64_t at = geti(r, 0, 1), u = geti(r, 0, 3), x = geti(r, 0, 5);
	if (!strcmp(v, "granted")) {
		f->h.created_at_ms = at;
		f->h.expires_at_ms = at + a->ttl_ms;
		if (reply_hold(call, &f->h, r, 2) == HF_OK)
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
		        c->conf->opt.max_resources);
	} else if (!strcmp(v, "limit_holds")) {
		hf__err(err, HF_ELIMIT, "the store's limit of live holds is reached");
	} else if (!strcmp(v, "unavailable")) {
		hf__err_unavailable(err, f->n_claims);
	} else { /* "slow" */
		return false;
	}
	return true;
}

/* The parameters of a release, extend or confirm into f. */
static bool hold_change_args(const struct hf__pgc *c, struct hf__call *call, struct fcall *f)
{
	const hf_request *rq = &call->req;
	bool by_operator = rq->op == HF_OP_RELEASE && rq->operator_release;
	snprintf(f->ttl, sizeof(f->ttl), "%lld", (long long)rq->ttl_ms);
	snprintf(f->keep, sizeof(f->keep), "%lld", (long long)c->conf->opt.hold_retention_ms);
	const char *p[6] = {rq->op == HF_OP_RELEASE  ? "release"
	                    : rq->op == HF_OP_EXTEND ? "extend"
	                                             : "confirm",
	                    rq->hold_id, rq->token, by_operator ? "operator" : NULL, f->ttl, f->keep};
	memcpy(f->p, p, sizeof(p));
	f->n = 6;
	f->stmt = "hf_hold_change";
	return true;
}

/* A hold change's answer r (committed) into the reply; false: it was 'slow', ops.c runs it. */
static bool hold_change_answer(const struct hf__pgc *c, struct hf__call *call, const PGresult *r)
{
	const hf_request *rq = &call->req;
	hf_error *err = &call->reply->error;
	bool by_operator = rq->op == HF_OP_RELEASE && rq->operator_release;
	const char *v = PQgetvalue(r, 0, 0);
	if (!strcmp(v, "slow"))
		return false;
	if (!strcmp(v, "no_hold")) {
		hf__err_no_hold(err, rq->hold_id, NULL);
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
	return true;
}

static bool is_hold_change(hf_op op)
{
	return op == HF_OP_RELEASE || op == HF_OP_EXTEND || op == HF_OP_CONFIRM;
}

/* f's parameters for call; false when the reply is filled instead. */
static bool call_args(const struct hf__pgc *c, struct hf__call *call, struct fcall *f)
{
	memset(f, 0, sizeof(*f));
	return is_hold_change(call->req.op) ? hold_change_args(c, call, f) : acquire_args(c, call, f);
}

/* call's committed answer r into its reply; false: 'slow'. */
static bool call_answer(const struct hf__pgc *c, struct hf__call *call, struct fcall *f,
                        const PGresult *r)
{
	return is_hold_change(call->req.op) ? hold_change_answer(c, call, r)
	                                    : acquire_answer(c, call, f, r);
}

/* Whether calls.c runs call: an acquire without an idempotency key, or a hold change. */
static bool has_function(const struct hf__call *call)
{
	hf_op op = call->req.op;
	return is_hold_change(op) || (op == HF_OP_ACQUIRE && !call->req.acquire.idempotency_key);
}

bool hf__pg_batchable(const struct hf__call *call)
{
	return has_function(call) &&
	       (call->req.op != HF_OP_ACQUIRE || call->req.acquire.wait_ms == 0);
}

/* Gets c connected with the statements prepared and its purge done; false: ops.c reports the
 * failure, or reconnects. */
static bool ready(struct hf__pgc *c)
{
	/* Once sent, a call's fate is unknown: a dead connection is replaced before (ensure). */
	hf_error scratch;
	if (hf__pgc_ensure(c, &scratch) != HF_OK || !prepare(c) ||
	    hf__pg_upkeep(c, &scratch) != HF_OK) {
		/* A purge that lost a race says nothing of the call: only the call's own failure may
		 * make it run again. */
		c->lost_race = false;
		return false;
	}
	return true;
}

bool hf__pg_call(struct hf__pgc *c, struct hf__call *call)
{
	if (!has_function(call) || c->skip_call || !ready(c))
		return false;
	struct fcall f;
	if (!call_args(c, call, &f))
		return true;
	PGresult *r = run(c, call, f.stmt, f.n, f.p);
	bool done = !r || call_answer(c, call, &f, r);
	PQclear(r);
	free(f.names);
	return done;
}

/* Sends a statement without parameters into the pipeline. */
static bool send_plain(PGconn *conn, const char *sql)
{
	return PQsendQueryParams(conn, sql, 0, NULL, NULL, NULL, NULL, 0);
}

/* The next command's result, and the NULL that ends it; NULL when none came. */
static PGresult *next_result(PGconn *conn)
{
	PGresult *r = PQgetResult(conn);
	if (r && PQresultStatus(r) != PGRES_PIPELINE_SYNC) {
		PGresult *end = PQgetResult(conn);
		PQclear(end); /* NULL: the end of this command */
	}
	return r;
}

/* Sends BEGIN, the calls' functions and COMMIT in one pipeline and reads every result into
 * res[0..n) (the functions') and *commit; false when the connection failed while sending or
 * reading. Calls after the first may wait for a lock only BATCH_LOCK_WAIT: a batch holds the
 * rows its earlier calls took while a later one waits, and two batches waiting for each
 * other's rows would otherwise wait for PostgreSQL's deadlock detector (deadlock_timeout). */
static bool pipeline(PGconn *conn, struct fcall *f, size_t n, PGresult **res, bool *commit)
{
	static const char short_wait[] = "SET LOCAL lock_timeout = '" HF__PG_BATCH_LOCK_WAIT "'";
	static const char long_wait[] = "SET LOCAL lock_timeout = '" HF__PG_LOCK_TIMEOUT "'";
	*commit = false;
	if (!PQenterPipelineMode(conn))
		return false;
	bool sent = send_plain(conn, "BEGIN");
	for (size_t i = 0; i < n && sent; i++)
		sent = PQsendQueryPrepared(conn, f[i].stmt, f[i].n, f[i].p, NULL, NULL, 0) &&
		       (i > 0 || send_plain(conn, short_wait));
	sent = sent && send_plain(conn, long_wait) && send_plain(conn, "COMMIT") &&
	       PQpipelineSync(conn);
	if (!sent) {
		PQexitPipelineMode(conn);
		return false;
	}
	bool ok = true;
	PGresult *r = next_result(conn); /* BEGIN */
	ok = ok && PQresultStatus(r) == PGRES_COMMAND_OK;
	PQclear(r);
	for (size_t i = 0; i < n; i++) {
		res[i] = next_result(conn);
		ok = ok && PQresultStatus(res[i]) == PGRES_TUPLES_OK && PQntuples(res[i]) > 0;
		if (i == 0) {
			r = next_result(conn); /* the short wait */
			PQclear(r);
		}
	}
	r = next_result(conn); /* the long wait */
	PQclear(r);
	r = next_result(conn); /* COMMIT: "ROLLBACK" when the transaction had failed */
	*commit = ok && PQresultStatus(r) == PGRES_COMMAND_OK && !strcmp(PQcmdStatus(r), "COMMIT");
	PQclear(r);
	r = next_result(conn); /* the sync */
	bool synced = r && PQresultStatus(r) == PGRES_PIPELINE_SYNC;
	PQclear(r);
	PQexitPipelineMode(conn);
	return synced && PQstatus(conn) == CONNECTION_OK;
}

void hf__pg_call_batch(struct hf__pgc *c, struct hf__call **calls, size_t n,
                       enum hf__pg_batched *out)
{
	size_t idx[HF__PG_BATCH_MAX], n_sent = 0; /* f[j] is calls[idx[j]]'s */
	PGresult *res[HF__PG_BATCH_MAX] = {0};
	for (size_t i = 0; i < n; i++)
		out[i] = HF__PG_BATCH_AGAIN;
	/* On the heap: sixteen calls' parameters are ~45 KB, much of a worker's stack. */
	struct fcall *f = n <= HF__PG_BATCH_MAX ? malloc(n * sizeof(*f)) : NULL;
	if (!f || !ready(c)) {
		free(f);
		return;
	}
	/* Acquires and releases first: they lock their resources' rows before the revision
	 * counters, and a confirm or an extend takes a counter without its resource's row. A
	 * batch that took a counter first would then wait for the resource's row while holding
	 * what that row's holder needs next: lock timeouts that roll the batch back. */
	for (int pass = 0; pass < 2; pass++)
		for (size_t i = 0; i < n; i++) {
			hf_op op = calls[i]->req.op;
			if ((op == HF_OP_ACQUIRE || op == HF_OP_RELEASE) != (pass == 0))
				continue;
			if (call_args(c, calls[i], &f[n_sent]))
				idx[n_sent++] = i;
			else
				out[i] = HF__PG_BATCH_DONE; /* an error without a round trip */
		}
	bool commit = false;
	if (n_sent && !pipeline(c->conn, f, n_sent, res, &commit)) {
		/* Sent, and the connection failed before the COMMIT's answer: whether it committed
		 * is unknown, so each call fails as a lone call does (never run twice). */
		for (size_t j = 0; j < n_sent; j++) {
			hf__pg_fail(&calls[idx[j]]->reply->error, c->conn, "database");
			out[idx[j]] = HF__PG_BATCH_DONE;
		}
		hf__pgc_close(c);
	} else if (n_sent && !commit) {
		/* Rolled back whole (a lock wait past the short bound, a deadlock, a statement's
		 * error): nothing of it happened, and each call runs again alone. */
		if (PQtransactionStatus(c->conn) != PQTRANS_IDLE)
			PQclear(PQexec(c->conn, "ROLLBACK"));
	} else {
		for (size_t j = 0; j < n_sent; j++)
			out[idx[j]] = call_answer(c, calls[idx[j]], &f[j], res[j]) ? HF__PG_BATCH_DONE
			                                                          : HF__PG_BATCH_SLOW;
	}
	for (size_t j = 0; j < n_sent; j++) {
		PQclear(res[j]);
		free(f[j].names);
	}
	free(f);
}
