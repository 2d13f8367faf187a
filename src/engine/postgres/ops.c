/*
 * ops.c — the operations of the PostgreSQL engine as SQL transactions, with exactly the
 * semantics of the embedded engine (src/engine/embedded/state.c): lazy expiry before every
 * operation, FIFO waiting without barging, exclusive = nothing else held, idempotency
 * records, events in the same transaction (numbered gap-free by their readers: see
 * sequence_events in schema.c), a fence per grant. No lock is shared by every change: a
 * change locks the rows it touches (a hold's row before its resources' rows, resources in
 * name order; an acquire of several names takes all their advisory locks before any row), so
 * changes on different resources run side by side (docs/operations.md). A
 * change that loses a deadlock or a creation race to another is run again from its start.
 */
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/codec.h"
#include "core/retention.h"
#include "core/rules.h"
#include "engine/postgres/pg.h"

/* One transaction's context. */
struct tx {
	struct hf__pgc *c;
	PGconn *conn;
	hf_error *err;       /* the call's reply error */
	int64_t now;         /* the database's clock, ms */
	int events;          /* events appended */
	struct hf__jw evs;   /* their INSERTs, sent with the COMMIT */
	struct hf__jw locks; /* the resources they touch, as a list of literals (duplicates too) */
	int64_t live0;       /* the live hold count at the start (committed changes) */
	char *due;           /* ids of tentative holds whose lease has ended, comma-separated */
	int64_t live_delta;  /* change of the live hold count */
	bool notify;         /* units freed or queues changed: wake waiters */
	bool drop_idle;      /* holds ended or waiters left: drop idle implicit resources */
	int lose;            /* HF__PG_LOSE_* kind of this transaction, for the test hook */
	bool lapsed;         /* waiter rows whose lease has ended exist */
	const char *end_by;  /* who ends holds when not their holder ("operator"), or NULL */
};

#define I64(buf, v) (snprintf((buf), sizeof(buf), "%lld", (long long)(v)), (buf))

static int db_fail(struct tx *t)
{
	return hf__pg_fail(t->err, t->conn, "database");
}

/* Notes whether a failed statement lost to a concurrent change: the whole call may run
 * again. */
static void note_state(struct tx *t, const PGresult *r)
{
	if (hf__pg_lost_race(r))
		t->c->lost_race = true;
}

/* Runs a parameterised statement; NULL (and the call's error set) on failure. */
static PGresult *q(struct tx *t, const char *sql, int n, const char *const *p)
{
	PGresult *r = PQexecParams(t->conn, sql, n, NULL, p, NULL, NULL, 0);
	ExecStatusType s = PQresultStatus(r);
	if (s != PGRES_COMMAND_OK && s != PGRES_TUPLES_OK) {
		note_state(t, r);
		db_fail(t);
		PQclear(r);
		return NULL;
	}
	return r;
}

/* A statement whose rows are not needed. */
static int qx(struct tx *t, const char *sql, int n, const char *const *p)
{
	PGresult *r = q(t, sql, n, p);
	if (!r)
		return HF_EENGINE;
	PQclear(r);
	return HF_OK;
}

static int64_t geti(PGresult *r, int row, int col)
{
	return strtoll(PQgetvalue(r, row, col), NULL, 10);
}

static bool getb(PGresult *r, int row, int col)
{
	return PQgetvalue(r, row, col)[0] == 't';
}

static char *dump(json_t *j)
{
	char *s = j ? hf__json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
	json_decref(j);
	return s;
}

/* ---- transactions ---- */

static int sweep(struct tx *t);

/* Runs several statements in one round trip (the simple query protocol: no parameters, so
 * only for SQL made of integers and validated names). Every statement must succeed; the
 * results of the first n_keep statements are handed back in keep[] (the caller clears them).
 * Round trips are the cost of a change while it holds row locks: see docs/operations.md. */
static int multi(struct tx *t, const char *sql, PGresult **keep, int n_keep)
{
	for (int i = 0; i < n_keep; i++)
		keep[i] = NULL;
	if (!PQsendQuery(t->conn, sql))
		return db_fail(t);
	int rc = HF_OK, i = 0;
	PGresult *r;
	while ((r = PQgetResult(t->conn))) { /* drained to the end whatever happens */
		ExecStatusType st = PQresultStatus(r);
		if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK && rc == HF_OK) {
			note_state(t, r);
			rc = db_fail(t);
		}
		if (rc == HF_OK && i < n_keep)
			keep[i] = r;
		else
			PQclear(r);
		i++;
	}
	if (rc == HF_OK && PQstatus(t->conn) != CONNECTION_OK)
		rc = db_fail(t);
	if (rc != HF_OK)
		for (int k = 0; k < n_keep; k++) {
			PQclear(keep[k]);
			keep[k] = NULL;
		}
	return rc;
}

static int upkeep(struct tx *t);
static int tx_commit(struct tx *t);
static void tx_rollback(struct tx *t);

/* Opens a transaction and reads the live hold count, the clock and what is due. One round
 * trip: BEGIN, the count, then the clock and the leases ended by it. */
static int tx_open(struct tx *t, struct hf__pgc *c, hf_error *err)
{
	memset(t, 0, sizeof(*t));
	t->c = c;
	t->err = err;
	PGresult *r[3];
	for (int attempt = 0;; attempt++) {
		int rc = hf__pgc_ensure(c, err);
		if (rc != HF_OK)
			return rc;
		t->conn = c->conn;
		rc = multi(
		    t,
		    "BEGIN; SELECT coalesce(sum(n), 0), 0 FROM live_holds;"
		    " SELECT n, (SELECT string_agg(id, ',' ORDER BY expires_at, id) FROM holds"
		    "  WHERE state = 0 AND expires_at <= n),"
		    " EXISTS (SELECT 1 FROM waiters WHERE lease_until < n)"
		    " FROM (SELECT now_ms() AS n) x",
		    r, 3);
		if (rc == HF_OK)
			break;
		PQclear(PQexec(t->conn, "ROLLBACK"));
		/* A connection found dead (the server restarted since its last use) is replaced
		 * once, at once: nothing had run on it. */
		if (attempt > 0 || PQstatus(c->conn) == CONNECTION_OK)
			return HF_EENGINE;
		hf__pgc_close(c);
		hf__err_clear(err);
	}
	t->live0 = geti(r[1], 0, 0);
	t->now = geti(r[2], 0, 0);
	t->lapsed = getb(r[2], 0, 2);
	int rc = HF_OK;
	if (!PQgetisnull(r[2], 0, 1) && !(t->due = hf__strdup(PQgetvalue(r[2], 0, 1))))
		rc = hf__err(err, HF_ENOMEM, "out of memory");
	for (int i = 0; i < 3; i++)
		PQclear(r[i]);
	if (rc != HF_OK)
		PQclear(PQexec(t->conn, "ROLLBACK"));
	return rc;
}

/* Waits, locking nothing past its statements, for the changes that have a due lease's hold
 * row or one of its resources' rows locked: the sweep skips those (SKIP LOCKED), so without
 * this a read or change could run before such a change (often another instance's or the
 * waiter thread's sweep ending that very lease) commits, and see the hold live after its
 * lease.
 * Share locks are taken in the order every change takes its locks (hold rows, then resource
 * rows in name order), so no cycle of waits.
 * The wait is bounded (DUE_WAIT_MS; *gave_up then): a transaction that stays open on such a
 * row — an instance stopped or cut off in the middle of a change, a session left open — must
 * not stall every change of every instance until PostgreSQL ends it (the fault harness's
 * stall-pg: each answered 503 after lock_timeout, parked waits lost with the heartbeats).
 * The change then goes on; only those that touch that hold or its resources wait for it,
 * on their rows, as any change waits for another. */
#define DUE_WAIT_MS "250"
static int wait_for_due(struct hf__pgc *c, bool *gave_up, hf_error *err)
{
	PGresult *r = PQexec(
	    c->conn,
	    "BEGIN; SET LOCAL lock_timeout = '" DUE_WAIT_MS "ms';"
	    " SELECT count(*) FROM (SELECT 1 FROM holds WHERE state = 0"
	    "  AND expires_at <= now_ms() FOR SHARE) x;"
	    " SELECT count(*) FROM (SELECT 1 FROM resources WHERE name IN (SELECT p.resource"
	    "  FROM hold_parts p JOIN holds h ON h.id = p.hold_id WHERE h.state = 0 AND"
	    "  h.expires_at <= now_ms()) ORDER BY name FOR SHARE) x;"
	    " COMMIT");
	ExecStatusType s = PQresultStatus(r);
	const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
	bool ok = s == PGRES_COMMAND_OK || s == PGRES_TUPLES_OK;
	*gave_up = !ok && state && strcmp(state, "55P03") == 0; /* lock_not_available */
	int rc = ok || *gave_up ? HF_OK : hf__pg_fail(err, c->conn, "database");
	PQclear(r);
	if (!ok)
		PQclear(PQexec(c->conn, "ROLLBACK"));
	return rc;
}

/* The sweep gate of an instance (c->conf->sweeper; NULL: none): one sweep at a time. */
static bool gate_try(struct hf__pg_sweeper *g)
{
	if (!g)
		return true;
	pthread_mutex_lock(&g->mu);
	bool got = !g->running;
	g->running = true;
	pthread_mutex_unlock(&g->mu);
	return got;
}

static void gate_wait(struct hf__pg_sweeper *g)
{
	if (!g)
		return;
	pthread_mutex_lock(&g->mu);
	while (g->running)
		pthread_cond_wait(&g->cv, &g->mu);
	g->running = true;
	pthread_mutex_unlock(&g->mu);
}

static void gate_leave(struct hf__pg_sweeper *g)
{
	if (!g)
		return;
	pthread_mutex_lock(&g->mu);
	g->running = false;
	pthread_cond_signal(&g->cv);
	pthread_mutex_unlock(&g->mu);
}

/* The sweeps of tx_begin, the gate held: t is open and has found something due. Leases the
 * sweep left (locked by another change: often another instance's sweep ending them) are
 * waited for, holding no lock, and swept again, at most 3 rounds. HF_OK with t open. */
static int sweep_rounds(struct tx *t, struct hf__pgc *c, hf_error *err)
{
	int rc = HF_OK;
	bool gave_up = false;
	for (int round = 0; rc == HF_OK && (t->due || t->lapsed); round++) {
		if (round > 0 && (!t->due || round == 3 || gave_up)) {
			free(t->due); /* left to the changes that hold them now */
			t->due = NULL;
			t->lapsed = false;
			break;
		}
		if (round > 0) {
			PQclear(PQexec(t->conn, "ROLLBACK"));
			free(t->due);
			t->due = NULL;
			if (wait_for_due(c, &gave_up, err) != HF_OK)
				return HF_EENGINE;
			if ((rc = tx_open(t, c, err)) != HF_OK)
				return rc;
			if (!t->due && !t->lapsed)
				break;
		}
		rc = sweep(t);
		free(t->due);
		t->due = NULL;
		if (rc != HF_OK) {
			tx_rollback(t);
			return rc == HF_ENOMEM ? rc : HF_EENGINE;
		}
		if (tx_commit(t) != HF_OK)
			return HF_EENGINE;
		rc = tx_open(t, c, err);
	}
	return rc;
}

/* Begins a change. Leases that have ended and lapsed waiter rows are applied first, in a
 * transaction of their own that never waits for a lock (what another change has locked is
 * left to it): that one commits, then the change's own transaction begins. A change thus
 * takes its locks in the one order every change uses (a hold's row, then its resources' rows
 * in name order), and two changes never wait for each other in a cycle. The change (or read)
 * then never sees a hold live after its lease, nor the units and the implicit resource it
 * held (docs/semantics.md, "Holds").
 * One sweep per instance at a time: the others wait for it here, in the process, holding
 * nothing in the database, and then look again (it has applied what they found due, or what
 * is left is theirs). Sweeps side by side had every change of a churn of lapsing leases
 * sweep the same hot rows, and queue on them past lock_timeout (docs/operations.md, "Schema
 * version 8"). A lease ends once whoever sweeps it: its hold row is locked and re-checked. */
static int tx_begin(struct tx *t, struct hf__pgc *c, hf_error *err)
{
	int rc = tx_open(t, c, err);
	if (rc == HF_OK && (t->due || t->lapsed)) {
		struct hf__pg_sweeper *gate = c->conf->sweeper;
		if (!gate_try(gate)) {
			PQclear(PQexec(t->conn, "ROLLBACK"));
			free(t->due);
			t->due = NULL;
			gate_wait(gate);
			rc = tx_open(t, c, err);
		}
		if (rc == HF_OK)
			rc = sweep_rounds(t, c, err);
		gate_leave(gate);
	}
	if (rc != HF_OK)
		return rc;
	if ((rc = upkeep(t)) != HF_OK) {
		PQclear(PQexec(t->conn, "ROLLBACK"));
		return HF_EENGINE;
	}
	return HF_OK;
}

static void tx_rollback(struct tx *t)
{
	if (t->conn)
		PQclear(PQexec(t->conn, "ROLLBACK"));
	free(t->evs.buf);
	free(t->locks.buf);
	hf__jw_init(&t->evs);
	hf__jw_init(&t->locks);
}

void hf__pg_notify_later(const struct hf__pg_conf *cf)
{
	if (cf->notify_pending && !atomic_exchange(cf->notify_pending, 1)) {
		char b = 1;
		ssize_t w = write(cf->notify_fd, &b, 1);
		(void)w; /* a full pipe wakes the waiter thread anyway */
	}
}

/* Drops idle implicit resources, counts the live holds, notifies and commits: one round trip.
 * NOTIFY is delivered at commit: waiters everywhere re-check; event readers re-read. Idle
 * resources locked by other changes are theirs to drop (SKIP LOCKED: no waiting here). */
static int tx_commit(struct tx *t)
{
	char sql[768];
	size_t o = 0;
	/* The events first: a change is committed with its events or not at all. */
	if (t->drop_idle)
		o += (size_t)snprintf(sql + o, sizeof(sql) - o, "%s",
		                      "DELETE FROM resources WHERE name IN (SELECT name FROM resources r"
		                      " WHERE NOT declared AND holds = 0 AND NOT EXISTS (SELECT 1 FROM"
		                      " waiter_claims w WHERE w.resource = r.name) FOR UPDATE SKIP"
		                      " LOCKED);");
	if (t->live_delta != 0)
		o += (size_t)snprintf(sql + o, sizeof(sql) - o,
		                      "UPDATE live_holds SET n = n + %lld WHERE slot = pg_backend_pid() %% 64;",
		                      (long long)t->live_delta);
	snprintf(sql + o, sizeof(sql) - o, "COMMIT");
	int rc = HF_OK;
	if (t->events > 0) {
		/* The revision counters of every resource the events touch are locked first, in
		 * name order: the events' upserts then never wait on each other in two orders
		 * (a deadlock, resolved only by PostgreSQL's deadlock_timeout and a rerun). */
		struct hf__jw w;
		hf__jw_init(&w);
		hf__jw_lit(&w, "SELECT 1 FROM event_revisions WHERE resource IN (");
		hf__jw_raw(&w, t->locks.buf ? t->locks.buf : "NULL", t->locks.buf ? t->locks.len : 4);
		hf__jw_lit(&w, ") ORDER BY resource FOR UPDATE;");
		hf__jw_raw(&w, t->evs.buf ? t->evs.buf : "", t->evs.len);
		hf__jw_raw(&w, sql, strlen(sql));
		char *all = hf__jw_finish(&w, NULL);
		if (!all || t->evs.oom || t->locks.oom) {
			free(all);
			tx_rollback(t);
			return hf__err(t->err, HF_ENOMEM, "out of memory");
		}
		rc = multi(t, all, NULL, 0);
		free(all);
		free(t->evs.buf);
		free(t->locks.buf);
		hf__jw_init(&t->evs);
		hf__jw_init(&t->locks);
	} else {
		rc = multi(t, sql, NULL, 0);
	}
	/* Committed, or perhaps (a failed COMMIT): waiters everywhere re-check and event reads
	 * re-read after the NOTIFY the waiter thread sends for this and other changes. */
	if (t->notify || t->events > 0)
		hf__pg_notify_later(t->c->conf);
	if (rc != HF_OK) {
		/* Rolled back; or, if COMMIT itself failed, the outcome is unknown to us: report the
		 * engine error, never a success. */
		tx_rollback(t);
		return HF_EENGINE;
	}
	/* The test hook: this commit happened, but the instance is made to believe its reply
	 * was lost with the connection (tests/pg/orphan_test.py). After a grant's, the database
	 * stays unreachable for this connection (the waiter thread's) for HF__PG_LOSE_OUTAGE_MS,
	 * as in a restart: long enough for a short wait's deadline to pass meanwhile. */
	atomic_int *lose = t->c->conf->lose_commit;
	if (t->lose && lose && (atomic_fetch_and(lose, ~t->lose) & t->lose)) {
		hf__pgc_close(t->c);
		t->conn = NULL;
		if (t->lose == HF__PG_LOSE_GRANT) {
			t->c->retry_at = hf__pg_mono_ms() + HF__PG_LOSE_OUTAGE_MS;
			t->c->failed_at = t->c->retry_at; /* other connections' connects don't end it */
			snprintf(t->c->last_err, sizeof(t->c->last_err),
			         "cannot reach the database: a lost COMMIT reply (test hook)");
		}
		hf__err(t->err, HF_EENGINE, "database: the reply of COMMIT was lost (test hook)");
		return HF_EENGINE;
	}
	return HF_OK;
}

/* ---- events ---- */

/* A value as an SQL literal (NULL for NULL), for the simple query protocol; NULL and the
 * call's error set when out of memory or not valid text. Free with PQfreemem. */
static char *literal(struct tx *t, const char *v, bool *fail)
{
	if (!v)
		return NULL;
	char *l = PQescapeLiteral(t->conn, v, strlen(v));
	if (!l) {
		*fail = true;
		hf__pg_fail(t->err, t->conn, "database: cannot quote an event");
	}
	return l;
}

static int by_name(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Appends to `w` the INSERT of an event touching the resources `sorted` (bytewise order;
 * `own`, its resource, among them), literals all: each resource's revision counter is advanced
 * in the same statement, so the event's id (its place in seq) is taken under the counter rows'
 * locks, which the change keeps to its commit: one resource's revisions follow seq. */
static void insert_event(struct hf__jw *w, const char *at, const char *type, const char *own,
                         const char *hold_id, const char *data, char *const *sorted, size_t n)
{
	if (n == 0) {
		hf__jw_lit(w, "INSERT INTO events (at_ms, type, resource, hold_id, data) VALUES (");
	} else {
		hf__jw_lit(w, "WITH r AS (INSERT INTO event_revisions AS v VALUES ");
		for (size_t i = 0; i < n; i++) {
			if (i)
				hf__jw_lit(w, ", ");
			hf__jw_lit(w, "(");
			hf__jw_raw(w, sorted[i], strlen(sorted[i]));
			hf__jw_lit(w, ", 1)");
		}
		hf__jw_lit(w, " ON CONFLICT (resource) DO UPDATE SET revision = v.revision + 1"
		              " RETURNING resource, revision)"
		              " INSERT INTO events (at_ms, type, resource, hold_id, data, revision,"
		              " revisions) SELECT ");
	}
	const char *values[] = {at, type, own ? own : "NULL", hold_id ? hold_id : "NULL", data};
	for (size_t i = 0; i < 5; i++) {
		if (i)
			hf__jw_lit(w, ", ");
		hf__jw_raw(w, values[i], strlen(values[i]));
	}
	if (n == 0) {
		hf__jw_lit(w, ");");
		return;
	}
	hf__jw_lit(w, ", max(revision) FILTER (WHERE resource = ");
	hf__jw_raw(w, own, strlen(own));
	hf__jw_lit(w, "), CASE WHEN count(*) > 1 THEN json_object_agg(resource, revision)::text END"
	              " FROM r;");
}

/* Appends an event of hold `h` (its parts are the resources it touches, the first its own) or,
 * with h NULL, of `resource`; `data` is consumed. Its INSERT goes with the COMMIT (tx_commit):
 * one round trip less per change. */
static int emit(struct tx *t, const char *type, const hf_hold *h, const char *resource,
                json_t *data)
{
	char *body = dump(data);
	if (!body)
		return hf__err(t->err, HF_ENOMEM, "out of memory");
	size_t n = h ? h->n_parts : resource ? 1 : 0;
	if (h)
		resource = h->parts[0].resource;
	bool fail = false;
	char *lt = literal(t, type, &fail), *lr = literal(t, resource, &fail),
	     *lh = literal(t, h ? h->id : NULL, &fail), *lb = literal(t, body, &fail);
	char *names[HF_CLAIMS_MAX] = {0};
	for (size_t i = 0; i < n; i++)
		names[i] = literal(t, h ? h->parts[i].resource : resource, &fail);
	free(body);
	int rc = fail ? HF_EENGINE : HF_OK;
	char at[24];
	snprintf(at, sizeof(at), "%lld", (long long)t->now);
	if (rc == HF_OK) {
		qsort(names, n, sizeof(names[0]), by_name);
		insert_event(&t->evs, at, lt, lr, lh, lb, names, n);
		for (size_t i = 0; i < n; i++) {
			if (t->locks.len)
				hf__jw_lit(&t->locks, ", ");
			hf__jw_raw(&t->locks, names[i], strlen(names[i]));
		}
		if (t->evs.oom || t->locks.oom)
			rc = hf__err(t->err, HF_ENOMEM, "out of memory");
		t->events++;
	}
	PQfreemem(lt);
	PQfreemem(lr);
	PQfreemem(lh);
	PQfreemem(lb);
	for (size_t i = 0; i < n; i++)
		PQfreemem(names[i]);
	return rc;
}

/* ---- holds ---- */

/* Loads a hold (token included) into *h; HF_ENOHOLD when there is none. */
static int load_hold(struct tx *t, const char *id, bool lock, hf_hold *h)
{
	memset(h, 0, sizeof(*h));
	char b1[24];
	/* An ended hold past its retention is forgotten now, whether or not upkeep has
	 * deleted its row yet. */
	const char *p[2] = {id, I64(b1, t->c->conf->opt.hold_retention_ms)};
	PGresult *r = q(t,
	                lock ? "SELECT id, token, owner, state, mode, created_at, expires_at, ended_at"
	                       " FROM holds WHERE id = $1"
	                       " AND (state < 2 OR ended_at > now_ms() - $2) FOR UPDATE"
	                     : "SELECT id, token, owner, state, mode, created_at, expires_at, ended_at"
	                       " FROM holds WHERE id = $1 AND (state < 2 OR ended_at > now_ms() - $2)",
	                2, p);
	if (!r)
		return HF_EENGINE;
	if (PQntuples(r) == 0) {
		PQclear(r);
		return HF_ENOHOLD;
	}
	snprintf(h->id, sizeof(h->id), "%s", PQgetvalue(r, 0, 0));
	snprintf(h->token, sizeof(h->token), "%s", PQgetvalue(r, 0, 1));
	h->owner = hf__strdup(PQgetvalue(r, 0, 2));
	h->state = (hf_hold_state)geti(r, 0, 3);
	h->mode = (hf_mode)geti(r, 0, 4);
	h->created_at_ms = geti(r, 0, 5);
	h->expires_at_ms = geti(r, 0, 6);
	h->ended_at_ms = geti(r, 0, 7);
	PQclear(r);
	if (!h->owner)
		return hf__err(t->err, HF_ENOMEM, "out of memory");
	if (!(r = q(t, "SELECT resource, units, fence FROM hold_parts WHERE hold_id = $1 ORDER BY idx",
	            1, p))) {
		hf__hold_clear(h);
		return HF_EENGINE;
	}
	size_t n = (size_t)PQntuples(r);
	h->parts = calloc(n + 1, sizeof(*h->parts));
	if (!h->parts) {
		PQclear(r);
		hf__hold_clear(h);
		return hf__err(t->err, HF_ENOMEM, "out of memory");
	}
	for (size_t i = 0; i < n; i++) {
		h->parts[i].units = geti(r, (int)i, 1);
		h->parts[i].fence = geti(r, (int)i, 2);
		h->n_parts = i + 1;
		if (!(h->parts[i].resource = hf__strdup(PQgetvalue(r, (int)i, 0)))) {
			PQclear(r);
			hf__hold_clear(h);
			return hf__err(t->err, HF_ENOMEM, "out of memory");
		}
	}
	PQclear(r);
	return HF_OK;
}

/* Ends a live hold: frees its units, records the event. */
static int hold_end(struct tx *t, hf_hold *h, hf_hold_state state, int64_t ended_at)
{
	char b1[24], b2[24], b3[24];
	for (size_t i = 0; i < h->n_parts; i++) {
		const char *p[3] = {h->parts[i].resource, I64(b1, h->parts[i].units),
		                    I64(b2, h->mode == HF_MODE_EXCLUSIVE)};
		PGresult *r = q(t,
		                "UPDATE resources SET held = held - $2, holds = holds - 1,"
		                " n_exclusive = n_exclusive - $3 WHERE name = $1 RETURNING"
		                " NOT declared AND holds = 0, EXISTS (SELECT 1 FROM waiter_claims w"
		                " WHERE w.resource = $1)",
		                3, p);
		if (!r)
			return HF_EENGINE;
		bool idle = PQntuples(r) > 0 && getb(r, 0, 0), waited = PQntuples(r) > 0 && getb(r, 0, 1);
		PQclear(r);
		/* An implicit resource vanishes when idle: at once, so that the rest of this change
		 * (an acquire after its sweep) counts it gone. */
		if (idle && !waited && qx(t, "DELETE FROM resources WHERE name = $1", 1, p) != HF_OK)
			return HF_EENGINE;
		if (waited)
			t->notify = true;
	}
	const char *p[3] = {h->id, I64(b1, state), I64(b3, ended_at)};
	if (qx(t, "UPDATE holds SET state = $2, ended_at = $3 WHERE id = $1", 3, p) != HF_OK)
		return HF_EENGINE;
	h->state = state;
	h->ended_at_ms = ended_at;
	t->live_delta--;
	const char *type = state == HF_HOLD_EXPIRED ? "hold.expired" : "hold.released";
	return emit(t, type, h, NULL, hf__event_hold_data_by(type, h, t->end_by));
}

/* Lazy expiry, in its own transaction before a change (tx_begin): due leases end (at their
 * expires_at, in time order), lapsed waiter rows go; what another change has locked is left
 * to it. */
static int sweep(struct tx *t)
{
	char b1[24];
	int rc = HF_OK;
	/* The ended leases tx_begin found, in time order. */
	for (char *id = t->due; rc == HF_OK && id && *id;) {
		char *comma = strchr(id, ',');
		if (comma)
			*comma = '\0';
		/* Another change may be ending it now (its row locked) or have ended it since the
		 * list was read: skipped then. */
		const char *pd[2] = {id, I64(b1, t->now)};
		PGresult *r = q(t,
		                "SELECT 1 FROM holds WHERE id = $1 AND state = 0 AND expires_at <= $2"
		                " FOR UPDATE SKIP LOCKED",
		                2, pd);
		bool mine = r && PQntuples(r) > 0;
		PQclear(r);
		if (!r)
			return HF_EENGINE;
		if (mine) {
			/* ...and its resources' rows, unless another change has one of them. */
			r = q(t,
			      "SELECT (SELECT count(*) FROM hold_parts WHERE hold_id = $1) = count(*) FROM"
			      " (SELECT name FROM resources WHERE name IN (SELECT resource FROM"
			      " hold_parts WHERE hold_id = $1) ORDER BY name FOR UPDATE SKIP LOCKED) x",
			      1, pd);
			if (!r)
				return HF_EENGINE;
			mine = getb(r, 0, 0);
			PQclear(r);
		}
		hf_hold h;
		rc = mine ? load_hold(t, id, true, &h) : HF_ENOHOLD;
		if (rc == HF_OK) {
			rc = hold_end(t, &h, HF_HOLD_EXPIRED, h.expires_at_ms);
			hf__hold_clear(&h);
		}
		if (rc == HF_ENOHOLD)
			rc = HF_OK;
		id = comma ? comma + 1 : NULL;
	}
	if (rc != HF_OK)
		return rc;
	/* A waiter row whose lease has ended has nobody waiting on it: its instance stopped
	 * heartbeating it (crashed, partitioned) or no longer tracks it (the wait ended while the
	 * database was away, or its park's COMMIT reply was lost). It goes in the first change
	 * that sees it, before that change looks at any queue, so that it never blocks one past
	 * its lease; its pending idempotency record goes with it (cascade). */
	const char *p[1] = {I64(b1, t->now)};
	if (t->lapsed) {
		PGresult *r = q(t,
		                "DELETE FROM waiters WHERE ticket IN (SELECT ticket FROM waiters"
		                " WHERE lease_until < $1 FOR UPDATE SKIP LOCKED) RETURNING ticket",
		                1, p);
		if (!r)
			return HF_EENGINE;
		if (PQntuples(r) > 0)
			t->notify = t->drop_idle = true;
		PQclear(r);
	}
	return HF_OK;
}

/* Upkeep of a change: at most once a second per connection, ended holds and idempotency
 * records past their retention are forgotten (rows another change has locked stay: the next
 * upkeep takes them). */
static int upkeep(struct tx *t)
{
	char b2[24];
	/* Upkeep, at most once a second per connection (not on every change: each statement is a
	 * round trip while this change holds its locks): ended holds and idempotency records past their
	 * retention are forgotten. */
	int64_t mono = hf__pg_mono_ms();
	if (mono < t->c->upkeep_at)
		return HF_OK;
	t->c->upkeep_at = mono + HF__PG_UPKEEP_MS;
	const char *pr[1] = {I64(b2, t->c->conf->opt.hold_retention_ms)};
	if (qx(t,
	       "WITH h AS (DELETE FROM holds WHERE id IN (SELECT id FROM holds WHERE state >= 2 AND"
	       " ended_at <= now_ms() - $1 FOR UPDATE SKIP LOCKED) RETURNING id)"
	       " DELETE FROM hold_parts WHERE hold_id IN (SELECT id FROM h)",
	       1, pr) != HF_OK)
		return HF_EENGINE;
	pr[0] = I64(b2, t->c->conf->opt.idempotency_retention_ms);
	return qx(t,
	          "DELETE FROM idems WHERE key IN (SELECT key FROM idems WHERE ticket IS NULL AND"
	          " created_at <= now_ms() - $1 FOR UPDATE SKIP LOCKED)",
	          1, pr);
}

int hf__pg_upkeep(struct hf__pgc *c, hf_error *err)
{
	struct tx t = {.c = c, .conn = c->conn, .err = err};
	return upkeep(&t);
}

static int reply_hold(struct tx *t, struct hf__call *call, hf_hold *h, bool with_token)
{
	hf_hold *copy = malloc(sizeof(*copy));
	if (!with_token)
		h->token[0] = '\0';
	if (!copy || hf__hold_copy(copy, h) != HF_OK) {
		free(copy);
		return hf__err(t->err, HF_ENOMEM, "out of memory");
	}
	call->reply->hold = copy;
	return HF_OK;
}

/* ---- waiters ---- */

/* An int64 list as a PostgreSQL array literal ("{1,2,3}") for `= ANY($1::bigint[])`; NULL when
 * out of memory (free it). */
static char *i64_array(const int64_t *v, size_t n)
{
	char *s = malloc(n * 21 + 3), *o = s;
	if (!s)
		return NULL;
	*o++ = '{';
	for (size_t i = 0; i < n; i++)
		o += sprintf(o, "%s%lld", i ? "," : "", (long long)v[i]);
	*o++ = '}';
	*o = '\0';
	return s;
}

static bool claim_exceeds(void *ctx, size_t i)
{
	return ((const bool *)ctx)[i];
}

/* After the capacity of `name` was lowered (its row already updated): the waits with a claim
 * on it that can never be granted now, by the rule of hf__wait_impossible (src/core/rules.h:
 * all-of once one claim exceeds its capacity, any-of once every claim does), are marked failed
 * with exceeds_capacity (their instance answers them) and leave every queue at once, so that
 * the requests behind them, on any resource, move on. */
static int fail_impossible_waits(struct tx *t, const char *name)
{
	const char *p[1] = {name};
	/* Every claim of those waits, in order, with whether it exceeds its resource's capacity
	 * (an exclusive claim, units 0, takes whatever the capacity is: never). */
	PGresult *r = q(t,
	                "SELECT w.ticket, w.any_of, c.units > r.capacity FROM waiters w"
	                " JOIN waiter_claims c ON c.ticket = w.ticket JOIN resources r"
	                " ON r.name = c.resource WHERE w.failed = 0 AND w.ticket IN"
	                " (SELECT ticket FROM waiter_claims WHERE resource = $1)"
	                " ORDER BY w.ticket, c.idx",
	                1, p);
	if (!r)
		return HF_EENGINE;
	int rows = PQntuples(r);
	int64_t *failed = rows ? malloc((size_t)rows * sizeof(*failed)) : NULL;
	size_t n_failed = 0;
	if (rows && !failed) {
		PQclear(r);
		return hf__err(t->err, HF_ENOMEM, "out of memory");
	}
	for (int i = 0; i < rows;) {
		int64_t ticket = geti(r, i, 0);
		bool any = getb(r, i, 1), exceeds[HF_CLAIMS_MAX];
		size_t n = 0;
		for (; i < rows && geti(r, i, 0) == ticket; i++)
			if (n < HF_CLAIMS_MAX)
				exceeds[n++] = getb(r, i, 2);
		if (hf__wait_impossible(n, any, claim_exceeds, exceeds))
			failed[n_failed++] = ticket;
	}
	PQclear(r);
	int rc = HF_OK;
	if (n_failed > 0) {
		char code[24], *list = i64_array(failed, n_failed);
		if (!list) {
			free(failed);
			return hf__err(t->err, HF_ENOMEM, "out of memory");
		}
		const char *pf[2] = {list, I64(code, HF_ECAPACITY)};
		rc =
		    qx(t, "UPDATE waiters SET failed = $2 WHERE ticket = ANY($1::bigint[])", 2, pf);
		if (rc == HF_OK)
			rc = qx(t, "DELETE FROM waiter_claims WHERE ticket = ANY($1::bigint[])", 1,
			        pf);
		free(list);
	}
	free(failed);
	return rc;
}

/* ---- resources ---- */

#define RES_COLS                                                                            \
	"name, capacity, meta, version, declared, held, holds,"                                \
	" (SELECT count(*) FROM waiter_claims w WHERE w.resource = r.name)"

static int resource_from_row(PGresult *r, int row, hf_resource *out)
{
	hf_resource v = {.name = PQgetvalue(r, row, 0),
	                 .capacity = geti(r, row, 1),
	                 .meta = PQgetisnull(r, row, 2) ? NULL : PQgetvalue(r, row, 2),
	                 .version = geti(r, row, 3),
	                 .declared = getb(r, row, 4),
	                 .held = geti(r, row, 5),
	                 .holds = geti(r, row, 6),
	                 .waiters = geti(r, row, 7)};
	return hf__resource_copy(out, &v);
}

/* Reads a resource for a reply; *found false if missing. */
static int reply_resource(struct tx *t, struct hf__call *call, const char *name, bool *found)
{
	const char *p[1] = {name};
	PGresult *r = q(t, "SELECT " RES_COLS " FROM resources r WHERE name = $1", 1, p);
	if (!r)
		return HF_EENGINE;
	*found = PQntuples(r) > 0;
	if (!*found) {
		PQclear(r);
		return HF_OK;
	}
	hf_resource *copy = calloc(1, sizeof(*copy));
	int rc = copy ? resource_from_row(r, 0, copy) : HF_ENOMEM;
	PQclear(r);
	if (rc != HF_OK) {
		free(copy);
		return hf__err(t->err, HF_ENOMEM, "out of memory");
	}
	call->reply->resource = copy;
	return HF_OK;
}

/* The committed resource count, for max_resources: the sum of live_resources' slots (schema
 * 10), kept at commit by a trigger on resources, so this change's own creations are not in
 * it; every check runs before its change creates anything. */
static int count_resources(struct tx *t, size_t *count)
{
	PGresult *r = q(t, "SELECT coalesce(sum(n), 0) FROM live_resources", 0, NULL);
	if (!r)
		return HF_EENGINE;
	*count = (size_t)geti(r, 0, 0);
	PQclear(r);
	return HF_OK;
}

static int op_put_resource(struct tx *t, struct hf__call *call)
{
	const hf_request *rq = &call->req;
	char b1[24], b2[24];
	const char *p1[1] = {rq->name};
	static const char sel[] = "SELECT capacity, version, declared, held FROM resources"
	                          " WHERE name = $1 FOR UPDATE";
	PGresult *r = q(t, sel, 1, p1);
	if (r && PQntuples(r) == 0) {
		/* Not there: the name's advisory lock (see lock_resource), then look again. */
		PQclear(r);
		r = qx(t, "SELECT pg_advisory_xact_lock(729, hashtext($1))", 1, p1) == HF_OK
		        ? q(t, sel, 1, p1)
		        : NULL;
	}
	if (!r)
		return HF_EENGINE;
	bool exists = PQntuples(r) > 0;
	int64_t capacity = exists ? geti(r, 0, 0) : 0, version = exists ? geti(r, 0, 1) : 0;
	bool declared = exists && getb(r, 0, 2);
	int64_t held = exists ? geti(r, 0, 3) : 0;
	PQclear(r);
	int64_t current = declared ? version : 0;
	if (rq->if_version >= 0 && rq->if_version != current)
		return hf__err(t->err, HF_EVERSION, "resource '%s' is at version %lld, not %lld", rq->name,
		               (long long)current, (long long)rq->if_version);
	if (exists && rq->capacity < held)
		return hf__err(t->err, HF_ECAPINUSE, "resource '%s' has %lld units held, more than %lld",
		               rq->name, (long long)held, (long long)rq->capacity);
	if (!exists) {
		size_t count;
		if (count_resources(t, &count) != HF_OK)
			return HF_EENGINE;
		if (count >= t->c->conf->opt.max_resources)
			return hf__err(t->err, HF_ELIMIT, "the store holds %zu resources, the limit is %zu",
			               count, t->c->conf->opt.max_resources);
	}
	bool created = !exists || !declared;
	int64_t nversion = created ? 1 : version + 1;
	const char *p[4] = {rq->name, I64(b1, rq->capacity), rq->meta, I64(b2, nversion)};
	if (qx(t,
	       "INSERT INTO resources (name, capacity, meta, version, declared)"
	       " VALUES ($1, $2, $3, $4, true) ON CONFLICT (name) DO UPDATE SET"
	       " capacity = $2, meta = $3, version = $4, declared = true",
	       4, p) != HF_OK)
		return HF_EENGINE;
	if (exists && rq->capacity > capacity)
		t->notify = true; /* raising the capacity wakes waiters */
	if (exists && rq->capacity < capacity) {
		if (fail_impossible_waits(t, rq->name) != HF_OK)
			return HF_EENGINE;
		t->notify = true;
	}
	hf_resource now_res = {.name = (char *)rq->name,
	                       .capacity = rq->capacity,
	                       .meta = (char *)rq->meta,
	                       .version = nversion,
	                       .declared = true};
	int rc = emit(t, created ? "resource.created" : "resource.updated", NULL, rq->name,
	              hf__event_resource_data(&now_res));
	bool found;
	return rc != HF_OK ? rc : reply_resource(t, call, rq->name, &found);
}

static int op_delete_resource(struct tx *t, struct hf__call *call)
{
	const hf_request *rq = &call->req;
	char b1[24];
	const char *p1[1] = {rq->name};
	PGresult *r = q(t, "SELECT version, declared, holds FROM resources WHERE name = $1 FOR UPDATE",
	                1, p1);
	if (!r)
		return HF_EENGINE;
	if (PQntuples(r) == 0) {
		PQclear(r);
		return hf__err(t->err, HF_ENORESOURCE, "resource '%s' does not exist", rq->name);
	}
	int64_t version = geti(r, 0, 0), holds = geti(r, 0, 2);
	bool declared = getb(r, 0, 1);
	PQclear(r);
	int64_t current = declared ? version : 0;
	if (rq->if_version >= 0 && rq->if_version != current)
		return hf__err(t->err, HF_EVERSION, "resource '%s' is at version %lld, not %lld", rq->name,
		               (long long)current, (long long)rq->if_version);
	if (holds > 0)
		return hf__err(t->err, HF_EHELD, "resource '%s' is held by %lld holds", rq->name,
		               (long long)holds);
	bool found;
	int rc = reply_resource(t, call, rq->name, &found);
	if (rc != HF_OK)
		return rc;
	/* Its waiters can never be granted now: their rows are marked failed (their instance
	 * answers them) and leave every queue at once. */
	if (qx(t,
	       "UPDATE waiters SET failed = $2 WHERE ticket IN"
	       " (SELECT ticket FROM waiter_claims WHERE resource = $1)",
	       2, (const char *const[]){rq->name, I64(b1, HF_ENORESOURCE)}) != HF_OK ||
	    qx(t, "DELETE FROM waiter_claims WHERE ticket IN (SELECT ticket FROM waiters WHERE failed <> 0)",
	       0, NULL) != HF_OK ||
	    qx(t, "DELETE FROM resources WHERE name = $1", 1, p1) != HF_OK)
		return HF_EENGINE;
	t->notify = t->drop_idle = true;
	if (declared)
		return emit(t, "resource.deleted", NULL, rq->name,
		            hf__event_resource_deleted_data(rq->name, version));
	return HF_OK;
}

/* ---- acquiring ---- */

struct claimrow {
	const char *name;
	bool exists;
	int64_t capacity, held, n_exclusive;
	bool queued;   /* someone (earlier) waits on it */
	bool busy;     /* a NOWAIT any-of's name whose advisory lock another change holds: taken,
	                  for now, nothing known of it */
	int64_t units; /* 0: exclusive */
};

/* Grants rows[0..n) to the call: a new hold, fences, the event, the idempotency record. */
static int grant(struct tx *t, struct hf__call *call, struct claimrow *rows, size_t n,
                 const char *idem_fp, int64_t ticket)
{
	const hf_acquire_req *a = &call->req.acquire;
	char b1[24], b2[24], b3[24], b4[24], b5[24];
	PGresult *r;
	int64_t live = t->live0 + t->live_delta;
	if (live >= (int64_t)t->c->conf->opt.max_holds)
		return hf__err(t->err, HF_ELIMIT, "the store's limit of live holds is reached");
	hf_hold h;
	memset(&h, 0, sizeof(h));
	hf_hold_part parts[HF_CLAIMS_MAX];
	if (hf__random_hex(h.id, HF_ID_LEN / 2) != HF_OK ||
	    hf__random_hex(h.token, HF_TOKEN_LEN / 2) != HF_OK)
		return hf__err(t->err, HF_EINTERNAL, "no randomness for the hold's token");
	h.owner = (char *)a->owner;
	h.state = HF_HOLD_TENTATIVE;
	h.mode = a->mode;
	h.created_at_ms = t->now;
	h.expires_at_ms = t->now + a->ttl_ms;
	h.n_parts = n;
	h.parts = parts;
	char b6[24], b7[24];
	/* One statement a part: the resource's counts (its row is locked by this change, or its
	 * name's advisory lock is held and the row is new: see lock_resource), the part with its
	 * fence, and with the first part the hold itself (the parts' foreign key is checked at
	 * the end of the statement). Fences come from one global sequence: strictly increasing
	 * per resource, and across instances. */
	for (size_t i = 0; i < n; i++) {
		struct claimrow *c = &rows[i];
		int64_t units = c->units ? c->units : c->capacity;
		const char *pp[12] = {h.id, I64(b1, i), c->name, I64(b2, units),
		                      I64(b3, a->mode == HF_MODE_EXCLUSIVE), I64(b4, c->capacity),
		                      h.token, h.owner, I64(b5, h.mode), I64(b6, t->now),
		                      I64(b7, h.expires_at_ms), NULL};
		r = q(t,
		      i == 0 ? "WITH h AS (INSERT INTO holds (id, token, owner, state, mode, created_at,"
		               " expires_at, ended_at) VALUES ($1, $7, $8, 0, $9, $10, $11, 0)),"
		               " r AS (INSERT INTO resources (name, capacity, version, declared, held,"
		               " holds, n_exclusive) VALUES ($3, $6, 0, false, $4, 1, $5) ON CONFLICT"
		               " (name) DO UPDATE SET held = resources.held + EXCLUDED.held,"
		               " holds = resources.holds + 1,"
		               " n_exclusive = resources.n_exclusive + EXCLUDED.n_exclusive)"
		               " INSERT INTO hold_parts (hold_id, idx, resource, units, fence)"
		               " VALUES ($1, $2, $3, $4, nextval('fences')) RETURNING fence"
		             : "WITH r AS (INSERT INTO resources (name, capacity, version, declared,"
		               " held, holds, n_exclusive) VALUES ($3, $6, 0, false, $4, 1, $5) ON"
		               " CONFLICT (name) DO UPDATE SET held = resources.held + EXCLUDED.held,"
		               " holds = resources.holds + 1,"
		               " n_exclusive = resources.n_exclusive + EXCLUDED.n_exclusive)"
		               " INSERT INTO hold_parts (hold_id, idx, resource, units, fence)"
		               " VALUES ($1, $2, $3, $4, nextval('fences')) RETURNING fence",
		      i == 0 ? 11 : 6, pp);
		if (!r)
			return HF_EENGINE;
		c->exists = true;
		parts[i] = (hf_hold_part){.resource = (char *)c->name, .units = units,
		                          .fence = geti(r, 0, 0)};
		PQclear(r);
	}
	t->live_delta++;
	int rc = emit(t, "hold.granted", &h, NULL, hf__event_hold_data("hold.granted", &h));
	if (rc != HF_OK)
		return rc;
	if (a->idempotency_key) {
		const char *pi[4] = {a->idempotency_key, idem_fp, I64(b1, t->now), h.id};
		if (ticket > 0) {
			const char *pt[3] = {a->idempotency_key, I64(b1, t->now), h.id};
			rc = qx(t, "UPDATE idems SET ticket = NULL, created_at = $2, hold_id = $3 WHERE key = $1",
			        3, pt);
		} else {
			rc = qx(t,
			        "INSERT INTO idems (key, fingerprint, created_at, hold_id) VALUES ($1, $2, $3, $4)",
			        4, pi);
		}
		if (rc != HF_OK)
			return rc;
	}
	return reply_hold(t, call, &h, true);
}

static int cmp_claim_name(const void *a, const void *b)
{
	const hf_claim *const *x = a, *const *y = b;
	return strcmp((*x)->name, (*y)->name);
}

/* Row-locks a resource that a change found missing: takes the transaction's advisory lock on
 * its name first (so that two changes never both create it) and looks again. NULL on a
 * database error. */
static PGresult *lock_resource(struct tx *t, const char *name)
{
	static const char sql[] =
	    "SELECT capacity, held, n_exclusive, EXISTS (SELECT 1 FROM waiter_claims w"
	    " WHERE w.resource = r.name) FROM resources r WHERE name = $1 FOR UPDATE";
	const char *p[1] = {name};
	if (qx(t, "SELECT pg_advisory_xact_lock(729, hashtext($1))", 1, p) != HF_OK)
		return NULL;
	return q(t, sql, 1, p);
}

/* Takes the advisory locks of all the names (sorted[0..n)) before any of their rows: one
 * order over every name, whether its row exists or not (schema.c, migration 7 -> 8), so that
 * no change waits for an advisory lock while it holds a resource row. In key order (names
 * may share a key). `skip` (a NOWAIT any-of, which never blocks): each lock is only tried, and
 * busy[j] is set for the names whose lock another change holds. */
static int lock_names(struct tx *t, const char *const *sorted, size_t n, bool skip, bool *busy)
{
	char *arr = hf__pg_text_array(sorted, n);
	if (!arr)
		return hf__err(t->err, HF_ENOMEM, "out of memory");
	const char *pa[1] = {arr};
	PGresult *r = q(t,
	                skip ? "SELECT n FROM unnest($1::text[]) n WHERE hashtext(n) IN (SELECT h"
	                       " FROM (SELECT DISTINCT hashtext(m) AS h FROM unnest($1::text[]) m) s"
	                       " WHERE NOT pg_try_advisory_xact_lock(729, h))"
	                     : "SELECT pg_advisory_xact_lock(729, h) FROM (SELECT DISTINCT"
	                       " hashtext(m) AS h FROM unnest($1::text[]) m ORDER BY 1) s",
	                1, pa);
	free(arr);
	if (!r)
		return HF_EENGINE;
	for (int k = 0; skip && k < PQntuples(r); k++)
		for (size_t j = 0; j < n; j++)
			if (strcmp(PQgetvalue(r, k, 0), sorted[j]) == 0)
				busy[j] = true;
	PQclear(r);
	return HF_OK;
}

/* Reads (and row-locks, in name order) the resources of the claims: rows[] in the order
 * claims are weighed (names for all-of, the caller's for any-of). */
static int resolve(struct tx *t, const hf_acquire_req *a, struct claimrow *rows, size_t *n_out)
{
	const hf_claim *claim[HF_CLAIMS_MAX];
	size_t n = a->n_claims, creating = 0, order[HF_CLAIMS_MAX];
	for (size_t i = 0; i < n; i++)
		claim[i] = &a->claims[i];
	if (!a->any)
		qsort(claim, n, sizeof(claim[0]), cmp_claim_name);
	/* The locking order: by name, whatever the weighing order (any-of), so that two changes
	 * never wait for each other's rows in a cycle. */
	for (size_t i = 0; i < n; i++) {
		size_t k = i;
		for (; k > 0 && strcmp(claim[order[k - 1]]->name, claim[i]->name) > 0; k--)
			order[k] = order[k - 1];
		order[k] = i;
	}
	const char *sorted[HF_CLAIMS_MAX];
	bool busy[HF_CLAIMS_MAX] = {false};
	for (size_t j = 0; j < n; j++)
		sorted[j] = claim[order[j]]->name;
	/* An any-of that may not wait never blocks: advisory locks tried, rows FOR UPDATE SKIP
	 * LOCKED; a name another change is creating or weighing, or a row it has locked, counts
	 * as taken for now, and many such requests racing over the same list do not queue on each
	 * other. One name that is not skipped: its row locked, and its advisory lock only when
	 * the row is missing (lock_resource); more names: every advisory lock first. */
	bool skip = a->any && a->wait_ms == 0, one = n == 1 && !skip;
	if (!one && lock_names(t, sorted, n, skip, busy) != HF_OK)
		return HF_EENGINE;
	const char *free_names[HF_CLAIMS_MAX];
	size_t n_free = 0;
	for (size_t j = 0; j < n; j++)
		if (!busy[j])
			free_names[n_free++] = sorted[j];
	char *arr = hf__pg_text_array(free_names, n_free);
	if (!arr)
		return hf__err(t->err, HF_ENOMEM, "out of memory");
	const char *pa[1] = {arr};
	PGresult *all = q(t,
	                  skip ? "SELECT r.name, coalesce(l.capacity, r.capacity), l.held,"
	                         " l.n_exclusive, EXISTS (SELECT 1 FROM waiter_claims w WHERE"
	                         " w.resource = r.name), l.name IS NOT NULL FROM resources r"
	                         " LEFT JOIN LATERAL (SELECT name, capacity, held, n_exclusive FROM"
	                         " resources x WHERE x.name = r.name FOR UPDATE SKIP LOCKED) l"
	                         " ON true WHERE r.name = ANY($1::text[]) ORDER BY r.name"
	                       : "SELECT name, capacity, held, n_exclusive, EXISTS (SELECT 1 FROM"
	                         " waiter_claims w WHERE w.resource = r.name), true FROM"
	                         " resources r WHERE name = ANY($1::text[]) ORDER BY name FOR UPDATE",
	                  1, pa);
	free(arr);
	if (!all)
		return HF_EENGINE;
	for (size_t j = 0; j < n; j++) {
		size_t i = order[j];
		const hf_claim *c = claim[i];
		struct claimrow *row = &rows[i];
		memset(row, 0, sizeof(*row));
		row->name = c->name;
		if ((row->busy = busy[j]))
			continue;
		PGresult *r = all;
		int k = 0;
		for (; k < PQntuples(all) && strcmp(PQgetvalue(all, k, 0), c->name) != 0; k++) {
		}
		if (k == PQntuples(all) && one) {
			r = lock_resource(t, c->name);
			if (!r) {
				PQclear(all);
				return HF_EENGINE;
			}
			k = 0;
		}
		row->exists = PQntuples(r) > k;
		if (row->exists) {
			int f = r == all ? 1 : 0;
			row->capacity = geti(r, k, f);
			if (r == all && !getb(r, k, 5)) {
				row->queued = true; /* locked by another change: taken, for now */
			} else {
				row->held = geti(r, k, f + 1);
				row->n_exclusive = geti(r, k, f + 2);
				row->queued = getb(r, k, f + 3);
			}
		}
		if (r != all)
			PQclear(r);
	}
	PQclear(all);
	for (size_t i = 0; i < n; i++) {
		const hf_claim *c = claim[i];
		struct claimrow *row = &rows[i];
		if (row->busy)
			continue;
		if (!row->exists && c->capacity == 0)
			return hf__err(t->err, HF_ENORESOURCE, "resource '%s' does not exist", c->name);
		if (row->exists && c->capacity > 0 && c->capacity != row->capacity)
			return hf__err(t->err, HF_ECAPMISMATCH, "resource '%s' has capacity %lld, not %lld",
			               c->name, (long long)row->capacity, (long long)c->capacity);
		if (!row->exists)
			row->capacity = c->capacity;
		int64_t units = a->mode == HF_MODE_UNITS ? c->units : a->mode == HF_MODE_SHARED ? 1 : 0;
		if (units > row->capacity)
			return hf__err(t->err, HF_ECAPACITY, "%lld units of '%s' exceed its capacity %lld",
			               (long long)units, c->name, (long long)row->capacity);
		row->units = units;
		creating += !row->exists;
	}
	if (creating) {
		size_t count;
		if (count_resources(t, &count) != HF_OK)
			return HF_EENGINE;
		if (count + creating > t->c->conf->opt.max_resources)
			return hf__err(t->err, HF_ELIMIT, "the store holds %zu resources, the limit is %zu",
			               count, t->c->conf->opt.max_resources);
	}
	*n_out = n;
	return HF_OK;
}

/* Could this claim be granted now (no earlier waiter on it, units free)? */
static bool fits(void *ctx, size_t i)
{
	const struct claimrow *c = (const struct claimrow *)ctx + i;
	if (c->busy)
		return false;
	if (!c->exists)
		return true;
	if (c->queued)
		return false;
	if (c->units == 0)
		return c->held == 0;
	return c->n_exclusive == 0 && c->capacity - c->held >= c->units;
}

/* Is a lease on a resource of rows[] that this change could not have ended? The sweep before
 * a change leaves the holds another change has locked (tx_begin); if one of those stands in
 * the way of this acquire, the acquire runs again once that change is done (the next sweep
 * ends it). 1 yes, 0 no, HF_EENGINE. */
static int due_in_the_way(struct tx *t, const struct claimrow *rows, size_t n)
{
	char b1[24];
	for (size_t i = 0; i < n; i++) {
		if (!rows[i].exists || rows[i].busy || fits((void *)rows, i))
			continue;
		const char *p[2] = {rows[i].name, I64(b1, t->now)};
		PGresult *r = q(t,
		                "SELECT EXISTS (SELECT 1 FROM hold_parts p JOIN holds h ON h.id ="
		                " p.hold_id WHERE p.resource = $1 AND h.state = 0 AND h.expires_at <= $2)",
		                2, p);
		if (!r)
			return HF_EENGINE;
		bool due = getb(r, 0, 0);
		PQclear(r);
		if (due)
			return 1;
	}
	return 0;
}

static int replay(struct tx *t, struct hf__call *call, const char *fp)
{
	const hf_acquire_req *a = &call->req.acquire;
	const char *p[1] = {a->idempotency_key};
	PGresult *r = q(t, "SELECT fingerprint, ticket IS NOT NULL, hold_id FROM idems WHERE key = $1",
	                1, p);
	if (!r)
		return HF_EENGINE;
	if (PQntuples(r) == 0) {
		PQclear(r);
		return 1; /* no record: go on */
	}
	int verdict = hf__idem_verdict(a->idempotency_key, PQgetvalue(r, 0, 0), fp, getb(r, 0, 1),
	                               t->err);
	char id[HF_ID_LEN + 1];
	snprintf(id, sizeof(id), "%s", PQgetvalue(r, 0, 2));
	PQclear(r);
	if (verdict != HF_OK)
		return verdict;
	hf_hold h;
	int rc = load_hold(t, id, false, &h);
	if (rc == HF_ENOHOLD)
		return hf__err(t->err, HF_ENOHOLD, "hold '%s' of idempotency key '%s' is forgotten", id,
		               a->idempotency_key);
	if (rc != HF_OK)
		return rc;
	h.replayed = true;
	rc = reply_hold(t, call, &h, true);
	hf__hold_clear(&h);
	return rc;
}

static int op_acquire(struct tx *t, struct hf__call *call, int64_t *ticket)
{
	const hf_acquire_req *a = &call->req.acquire;
	char *fp = NULL;
	int rc;
	char b1[24], b2[24], b3[24];
	if (a->idempotency_key) {
		if (!(fp = hf__acquire_fingerprint(a)))
			return hf__err(t->err, HF_ENOMEM, "out of memory");
		rc = replay(t, call, fp);
		if (rc != 1)
			goto out;
	}
	struct claimrow rows[HF_CLAIMS_MAX];
	size_t n = 0;
	if ((rc = resolve(t, a, rows, &n)) != HF_OK)
		goto out;
	size_t from, to;
	if (hf__claims_grantable(n, a->any, fits, rows, &from, &to)) {
		rc = grant(t, call, rows + from, to - from, fp, 0);
		goto out;
	}
	if (!t->c->last_try && (rc = due_in_the_way(t, rows, n)) != 0) {
		if (rc == 1) {
			t->c->lost_race = true;
			rc = hf__err(t->err, HF_EENGINE, "database: a lease ended under another change");
		}
		goto out;
	}
	if (a->wait_ms == 0) {
		rc = hf__err_unavailable(t->err, n);
		goto out;
	}
	/* Park: a waiter row with a ticket (FIFO across instances) and one claim row each. */
	PGresult *r = q(t, "SELECT nextval('tickets')", 0, NULL);
	if (!r) {
		rc = HF_EENGINE;
		goto out;
	}
	*ticket = geti(r, 0, 0);
	PQclear(r);
	char b4[24], b5[24], b6[24];
	const char *pw[8] = {I64(b1, *ticket), t->c->conf->instance, a->any ? "t" : "f",
	                     I64(b2, t->now + HF__PG_WAITER_LEASE_MS), a->owner, I64(b4, a->mode),
	                     I64(b5, call->submitted_at_ms),
	                     I64(b6, call->submitted_at_ms + a->wait_ms)};
	if ((rc = qx(t, "INSERT INTO waiters (ticket, instance, any_of, lease_until, owner, mode,"
	                " since_ms, deadline_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
	             8, pw)) != HF_OK)
		goto out;
	for (size_t i = 0; i < n; i++) {
		if (!rows[i].exists) {
			const char *pc[2] = {rows[i].name, I64(b2, rows[i].capacity)};
			if ((rc = qx(t,
			             "INSERT INTO resources (name, capacity, version, declared) VALUES ($1, $2,"
			             " 0, false) ON CONFLICT (name) DO NOTHING",
			             2, pc)) != HF_OK)
				goto out;
		}
		const char *pc[4] = {b1, I64(b2, i), rows[i].name, I64(b3, rows[i].units)};
		if ((rc = qx(t,
		             "INSERT INTO waiter_claims (ticket, idx, resource, units) VALUES ($1, $2, $3, $4)",
		             4, pc)) != HF_OK)
			goto out;
	}
	if (a->idempotency_key) {
		const char *pi[4] = {a->idempotency_key, fp, I64(b2, t->now), b1};
		if ((rc = qx(t, "INSERT INTO idems (key, fingerprint, created_at, ticket) VALUES ($1, $2, $3, $4)",
		             4, pi)) != HF_OK)
			goto out;
	}
	t->lose = HF__PG_LOSE_PARK;
	rc = HF_OK;
out:
	free(fp);
	return rc;
}

/* ---- hold operations ---- */

/* Loads and locks the hold of an extend/confirm/release and checks its token. */
static int owned_hold(struct tx *t, struct hf__call *call, hf_hold *h)
{
	int rc = load_hold(t, call->req.hold_id, true, h);
	if (rc == HF_ENOHOLD)
		return hf__err_no_hold(t->err, call->req.hold_id, NULL);
	if (rc != HF_OK)
		return rc;
	rc = hf__check_owner_or_operator(h->id, h->token, h->state, call->req.token,
	                                 call->req.op == HF_OP_RELEASE && call->req.operator_release,
	                                 t->err);
	if (rc != HF_OK)
		hf__hold_clear(h);
	return rc;
}

static int op_hold_change(struct tx *t, struct hf__call *call)
{
	hf_hold h;
	char b1[24];
	int rc = owned_hold(t, call, &h);
	if (rc != HF_OK)
		return rc;
	if (h.state == HF_HOLD_TENTATIVE && h.expires_at_ms <= t->now) {
		/* Its lease ended, but the sweep left it (another change had it locked then): it
		 * ends here, as the sweep would have ended it, before anything else. */
		rc = hold_end(t, &h, HF_HOLD_EXPIRED, h.expires_at_ms);
		if (rc == HF_OK)
			rc = hf__check_owner(h.id, h.token, h.state, call->req.token, t->err);
		if (rc == HF_OK) /* (an ended hold is always refused) */
			rc = hf__err(t->err, HF_EINTERNAL, "hold '%s' ended but was not refused", h.id);
		hf__hold_clear(&h);
		return rc;
	}
	const char *p[2] = {h.id, NULL};
	switch (call->req.op) {
	case HF_OP_EXTEND:
		if (h.state != HF_HOLD_TENTATIVE)
			break;
		h.expires_at_ms = t->now + call->req.ttl_ms;
		p[1] = I64(b1, h.expires_at_ms);
		if ((rc = qx(t, "UPDATE holds SET expires_at = $2 WHERE id = $1", 2, p)) == HF_OK)
			rc = emit(t, "hold.extended", &h, NULL, hf__event_hold_data("hold.extended", &h));
		break;
	case HF_OP_CONFIRM:
		if (h.state != HF_HOLD_TENTATIVE)
			break;
		h.state = HF_HOLD_CONFIRMED;
		h.expires_at_ms = 0;
		if ((rc = qx(t, "UPDATE holds SET state = 1, expires_at = 0 WHERE id = $1", 1, p)) == HF_OK)
			rc = emit(t, "hold.confirmed", &h, NULL, hf__event_hold_data("hold.confirmed", &h));
		break;
	default: /* HF_OP_RELEASE */
		t->end_by = call->req.operator_release ? "operator" : NULL;
		rc = hold_end(t, &h, HF_HOLD_RELEASED, t->now);
		t->end_by = NULL;
		break;
	}
	if (rc == HF_OK)
		rc = reply_hold(t, call, &h, false);
	hf__hold_clear(&h);
	return rc;
}

/* ---- reads (no change: run outside a change, after a sweep if anything is due) ---- */

static int op_get_hold(struct tx *t, struct hf__call *call)
{
	hf_hold h;
	int rc = load_hold(t, call->req.hold_id, false, &h);
	if (rc == HF_ENOHOLD)
		return hf__err(t->err, HF_ENOHOLD, "hold '%s' does not exist", call->req.hold_id);
	if (rc != HF_OK)
		return rc;
	rc = reply_hold(t, call, &h, false);
	hf__hold_clear(&h);
	return rc;
}

static int op_list_holds(struct tx *t, struct hf__call *call)
{
	const hf_request *rq = &call->req;
	char b1[24], b2[24], b3[24];
	const char *p[6] = {rq->cursor, rq->owner, rq->state >= 0 ? I64(b1, rq->state) : NULL,
	                    rq->resource, I64(b2, (int64_t)rq->limit + 1),
	                    I64(b3, t->c->conf->opt.hold_retention_ms)};
	PGresult *r = q(t,
	                "SELECT id FROM holds h WHERE ($1::text IS NULL OR id > $1)"
	                " AND ($2::text IS NULL OR owner = $2) AND ($3::int IS NULL OR state = $3)"
	                " AND ($4::text IS NULL OR EXISTS (SELECT 1 FROM hold_parts p"
	                "   WHERE p.hold_id = h.id AND p.resource = $4))"
	                " AND (state < 2 OR ended_at > now_ms() - $6)"
	                " ORDER BY id COLLATE \"C\" LIMIT $5",
	                6, p);
	if (!r)
		return HF_EENGINE;
	size_t n = (size_t)PQntuples(r), take = n < rq->limit ? n : rq->limit;
	hf_reply *reply = call->reply;
	reply->holds = calloc(take + 1, sizeof(*reply->holds));
	int rc = reply->holds ? HF_OK : hf__err(t->err, HF_ENOMEM, "out of memory");
	for (size_t i = 0; rc == HF_OK && i < take; i++) {
		hf_hold h;
		rc = load_hold(t, PQgetvalue(r, (int)i, 0), false, &h);
		if (rc == HF_ENOHOLD) { /* purged meanwhile */
			rc = HF_OK;
			continue;
		}
		if (rc != HF_OK)
			break;
		h.token[0] = '\0';
		reply->holds[reply->n_holds++] = h;
	}
	reply->more = n > take;
	PQclear(r);
	return rc;
}

/* The claims of the waiter with this ticket, by resource name. */
static int waiter_claims(struct tx *t, const char *ticket, hf_waiter *w)
{
	const char *p[1] = {ticket};
	PGresult *r = q(t, "SELECT resource, units FROM waiter_claims WHERE ticket = $1"
	                   " ORDER BY resource", 1, p);
	if (!r)
		return HF_EENGINE;
	int rc = HF_OK;
	size_t n = (size_t)PQntuples(r);
	if (n && !(w->claims = calloc(n, sizeof(*w->claims))))
		rc = hf__err(t->err, HF_ENOMEM, "out of memory");
	for (size_t i = 0; rc == HF_OK && i < n; i++) {
		hf_waiter_claim *c = &w->claims[w->n_claims++];
		c->units = geti(r, (int)i, 1);
		if (!(c->resource = hf__strdup(PQgetvalue(r, (int)i, 0))))
			rc = hf__err(t->err, HF_ENOMEM, "out of memory");
	}
	PQclear(r);
	return rc;
}

/* A resource's queue in ticket order (FIFO across instances); the cursor is a position. */
static int op_list_waiters(struct tx *t, struct hf__call *call)
{
	const hf_request *rq = &call->req;
	char b1[24], b2[24];
	int64_t after = hf__waiter_cursor(rq->cursor);
	const char *p[3] = {rq->name, I64(b1, after), I64(b2, (int64_t)rq->limit + 1)};
	PGresult *r = q(t,
	                "SELECT w.ticket, w.owner, w.mode, w.any_of, c.units, w.since_ms,"
	                " w.deadline_ms, EXISTS (SELECT 1 FROM resources WHERE name = $1)"
	                " FROM (SELECT 1) one LEFT JOIN (waiter_claims c JOIN waiters w USING (ticket))"
	                " ON c.resource = $1 ORDER BY w.ticket OFFSET $2 LIMIT $3",
	                3, p);
	if (!r)
		return HF_EENGINE;
	int rc = HF_OK;
	size_t n = (size_t)PQntuples(r);
	if (n == 0 || !getb(r, 0, 7)) {
		PQclear(r);
		return hf__err(t->err, HF_ENORESOURCE, "resource '%s' does not exist", rq->name);
	}
	if (PQgetisnull(r, 0, 0))
		n = 0; /* the LEFT JOIN's one row: nobody waits */
	size_t take = n < rq->limit ? n : rq->limit;
	hf_reply *reply = call->reply;
	if (!(reply->waiters = calloc(take + 1, sizeof(*reply->waiters))))
		rc = hf__err(t->err, HF_ENOMEM, "out of memory");
	for (size_t i = 0; rc == HF_OK && i < take; i++) {
		hf_waiter *w = &reply->waiters[reply->n_waiters++];
		int row = (int)i;
		w->position = after + (int64_t)i + 1;
		w->mode = (hf_mode)geti(r, row, 2);
		w->any = getb(r, row, 3);
		w->units = geti(r, row, 4);
		w->waiting_since_ms = geti(r, row, 5);
		w->wait_deadline_ms = geti(r, row, 6);
		if (!(w->owner = hf__strdup(PQgetvalue(r, row, 1))))
			rc = hf__err(t->err, HF_ENOMEM, "out of memory");
		else
			rc = waiter_claims(t, PQgetvalue(r, row, 0), w);
	}
	reply->more = n > take;
	PQclear(r);
	return rc;
}

static int op_get_resource(struct tx *t, struct hf__call *call)
{
	bool found;
	int rc = reply_resource(t, call, call->req.name, &found);
	if (rc == HF_OK && !found)
		rc = hf__err(t->err, HF_ENORESOURCE, "resource '%s' does not exist", call->req.name);
	return rc;
}

static int op_list_resources(struct tx *t, struct hf__call *call)
{
	const hf_request *rq = &call->req;
	char b1[24];
	const char *p[2] = {rq->cursor, I64(b1, (int64_t)rq->limit + 1)};
	PGresult *r = q(t,
	                "SELECT " RES_COLS " FROM resources r WHERE ($1::text IS NULL OR name > $1)"
	                " ORDER BY name LIMIT $2",
	                2, p);
	if (!r)
		return HF_EENGINE;
	size_t n = (size_t)PQntuples(r), take = n < rq->limit ? n : rq->limit;
	hf_reply *reply = call->reply;
	reply->resources = calloc(take + 1, sizeof(*reply->resources));
	int rc = reply->resources ? HF_OK : hf__err(t->err, HF_ENOMEM, "out of memory");
	for (size_t i = 0; rc == HF_OK && i < take; i++) {
		if (resource_from_row(r, (int)i, &reply->resources[i]) != HF_OK)
			rc = hf__err(t->err, HF_ENOMEM, "out of memory");
		else
			reply->n_resources = i + 1;
	}
	reply->more = n > take;
	PQclear(r);
	return rc;
}

/* Fills the reply with events after req.after; returns 1 if there were any. Not inside a
 * transaction: the committed events without a seq are numbered first (their own short
 * transaction, sequence_events), then those up to the last seq given are read: every one of
 * them is committed, and no event can later get a seq at or below it. */
static int read_events(struct tx *t, struct hf__call *call)
{
	const hf_request *rq = &call->req;
	char b1[24], b2[24], b3[24];
	hf_reply *reply = call->reply;
	PGresult *r = q(t, "SELECT sequence_events()", 0, NULL);
	if (!r)
		return HF_EENGINE;
	reply->last_seq = (uint64_t)geti(r, 0, 0);
	PQclear(r);
	if (rq->after >= reply->last_seq)
		return 0;
	const char *p[3] = {I64(b1, (int64_t)rq->after), I64(b2, (int64_t)rq->limit),
	                    I64(b3, (int64_t)reply->last_seq)};
	if (!(r = q(t,
	            "SELECT seq, at_ms, type, resource, hold_id, data, revision, revisions FROM events"
	            " WHERE seq > $1 AND seq <= $3 ORDER BY seq LIMIT $2",
	            3, p)))
		return HF_EENGINE;
	uint64_t upto;
	if (hf__pg_events_trimmed(r, rq->after, reply->last_seq, &upto)) {
		PQclear(r);
		reply->trimmed_upto = upto;
		return hf__err_trimmed(t->err, upto);
	}
	size_t n = (size_t)PQntuples(r);
	reply->events = calloc(n + 1, sizeof(*reply->events));
	int rc = reply->events ? 1 : hf__err(t->err, HF_ENOMEM, "out of memory");
	for (size_t i = 0; rc == 1 && i < n; i++) {
		int k = (int)i;
		hf_event ev = {.seq = (uint64_t)geti(r, k, 0),
		               .at_ms = geti(r, k, 1),
		               .type = PQgetvalue(r, k, 2),
		               .resource = PQgetisnull(r, k, 3) ? NULL : PQgetvalue(r, k, 3),
		               .hold_id = PQgetisnull(r, k, 4) ? NULL : PQgetvalue(r, k, 4),
		               .data = PQgetvalue(r, k, 5)};
		if (hf__event_copy(&reply->events[i], &ev) != HF_OK) {
			rc = hf__err(t->err, HF_ENOMEM, "out of memory");
			break;
		}
		reply->n_events = i + 1;
		/* No revision: written by an instance of an older build (a rolling upgrade). */
		if (!PQgetisnull(r, k, 6) &&
		    hf__event_revisions_from_text(&reply->events[i], geti(r, k, 6),
		                                  PQgetisnull(r, k, 7) ? NULL : PQgetvalue(r, k, 7),
		                                  t->err) != HF_OK) {
			char why[sizeof(t->err->message)];
			snprintf(why, sizeof(why), "%s", t->err->message);
			rc = t->err->code == HF_ENOMEM ? HF_ENOMEM
			                               : hf__err(t->err, HF_EENGINE, "database: %s", why);
		}
	}
	PQclear(r);
	return rc;
}

/* ---- entry points ---- */

/* Clears what a reply carries when its transaction did not commit. */
static void reply_reset(hf_reply *reply)
{
	if (reply->hold)
		hf_hold_free(reply->hold);
	reply->hold = NULL;
	if (reply->resource) {
		hf__resource_clear(reply->resource);
		free(reply->resource);
		reply->resource = NULL;
	}
	for (size_t i = 0; i < reply->n_resources; i++)
		hf__resource_clear(&reply->resources[i]);
	free(reply->resources);
	reply->resources = NULL;
	reply->n_resources = 0;
	for (size_t i = 0; i < reply->n_holds; i++)
		hf__hold_clear(&reply->holds[i]);
	free(reply->holds);
	reply->holds = NULL;
	reply->n_holds = 0;
	for (size_t i = 0; i < reply->n_events; i++)
		hf__event_clear(&reply->events[i]);
	free(reply->events);
	reply->events = NULL;
	reply->n_events = 0;
	reply->more = false;
}

/* Sets an engine error unless a specific one was set. */
static void fail_engine(hf_reply *reply, int rc)
{
	reply_reset(reply);
	if (reply->error.code == HF_OK || reply->error.code != rc)
		hf__err(&reply->error, rc, "%s", hf_strerror(rc));
}

/* Applies due expiries, and removes lapsed waiter rows, in a change of their own when a read
 * would otherwise see them (and for the waiter thread's periodic sweep: a lapsed row is
 * removed, and the waiters behind it woken, even when nothing else changes). */
static int sweep_if_due(struct hf__pgc *c, hf_error *err)
{
	struct tx t;
	memset(&t, 0, sizeof(t));
	t.c = c;
	t.err = err;
	PGresult *r = NULL;
	for (int attempt = 0; !r; attempt++) {
		int rc = hf__pgc_ensure(c, err);
		if (rc != HF_OK)
			return rc;
		t.conn = c->conn;
		r = q(
		    &t,
		    "SELECT EXISTS (SELECT 1 FROM holds WHERE state = 0 AND expires_at <= now_ms())"
		    " OR EXISTS (SELECT 1 FROM waiters WHERE lease_until < now_ms())",
		    0, NULL);
		if (!r && (attempt > 0 || PQstatus(c->conn) == CONNECTION_OK))
			return HF_EENGINE;
		if (!r) {
			hf__pgc_close(c);
			hf__err_clear(err);
		}
	}
	bool due = getb(r, 0, 0);
	PQclear(r);
	if (!due)
		return HF_OK;
	int rc = tx_begin(&t, c, err);
	if (rc != HF_OK)
		return rc;
	return tx_commit(&t);
}

static enum hf__pg_outcome run_change(struct hf__pgc *c, struct hf__call *call, int64_t *ticket,
                                      int64_t *unsure);

enum hf__pg_outcome hf__pg_run(struct hf__pgc *c, struct hf__call *call, int64_t *ticket,
                               int64_t *unsure)
{
	hf_reply *reply = call->reply;
	hf_error *err = &reply->error;
	struct tx t;
	int rc;
	*ticket = *unsure = 0;
	switch (call->req.op) {
	case HF_OP_SAGA_TYPE_PUT:
	case HF_OP_SAGA_TYPE_GET:
	case HF_OP_SAGA_TYPE_LIST:
	case HF_OP_SAGA_SAVE:
	case HF_OP_SAGA_GET:
	case HF_OP_SAGA_LIST:
		hf__pg_saga_op(c, call);
		return HF__PG_DONE;
	case HF_OP_LIST_WAITERS:
	case HF_OP_GET_RESOURCE:
	case HF_OP_LIST_RESOURCES:
	case HF_OP_GET_HOLD:
	case HF_OP_LIST_HOLDS:
	case HF_OP_READ_EVENTS:
		if ((rc = sweep_if_due(c, err)) != HF_OK) {
			fail_engine(reply, rc);
			return HF__PG_DONE;
		}
		memset(&t, 0, sizeof(t));
		t.c = c;
		t.conn = c->conn;
		t.err = err;
		if (call->req.op == HF_OP_READ_EVENTS) {
			/* Its own statements, no snapshot across them: see read_events. */
			rc = read_events(&t, call);
			if (rc == HF_EENGINE || rc == HF_ENOMEM) {
				fail_engine(reply, rc);
				return HF__PG_DONE;
			}
			if (rc == 0 && call->req.wait_ms > 0)
				return HF__PG_EVWAIT;
			return HF__PG_DONE;
		}
		/* A list reads several statements: one snapshot keeps it consistent. */
		if (qx(&t, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", 0, NULL) != HF_OK) {
			fail_engine(reply, HF_EENGINE);
			return HF__PG_DONE;
		}
		switch (call->req.op) {
		case HF_OP_GET_RESOURCE:
			rc = op_get_resource(&t, call);
			break;
		case HF_OP_LIST_RESOURCES:
			rc = op_list_resources(&t, call);
			break;
		case HF_OP_GET_HOLD:
			rc = op_get_hold(&t, call);
			break;
		case HF_OP_LIST_WAITERS:
			rc = op_list_waiters(&t, call);
			break;
		default: /* HF_OP_LIST_HOLDS */
			rc = op_list_holds(&t, call);
			break;
		}
		if (rc == HF_EENGINE || rc == HF_ENOMEM) {
			tx_rollback(&t);
			fail_engine(reply, rc);
			return HF__PG_DONE;
		}
		if (qx(&t, "COMMIT", 0, NULL) != HF_OK) {
			fail_engine(reply, HF_EENGINE);
			return HF__PG_DONE;
		}
		return HF__PG_DONE;
	default:
		break;
	}
	/* A change that lost a deadlock or a creation race to a concurrent one rolled back
	 * whole: it runs again, from its start (a few times at most). */
	for (int attempt = 0;; attempt++) {
		c->last_try = attempt >= 4;
		enum hf__pg_outcome out = run_change(c, call, ticket, unsure);
		if (!c->lost_race || attempt >= 4 || *unsure)
			return out;
		/* The other change is likely still committing: a moment for it, growing. */
		struct timespec ts = {0, 500000L << attempt};
		nanosleep(&ts, NULL);
		reply_reset(reply);
		reply->error = (hf_error){0};
		*ticket = 0;
	}
}

/* One attempt at a change (hf__pg_run); c->lost_race tells whether it lost to another. */
static enum hf__pg_outcome run_change(struct hf__pgc *c, struct hf__call *call, int64_t *ticket,
                                      int64_t *unsure)
{
	hf_reply *reply = call->reply;
	hf_error *err = &reply->error;
	struct tx t;
	int rc;
	c->lost_race = false;
	if (hf__pg_call(c, call))
		return HF__PG_DONE; /* one round trip (calls.c) */
	if ((rc = tx_begin(&t, c, err)) != HF_OK) {
		fail_engine(reply, rc);
		return HF__PG_DONE;
	}
	switch (call->req.op) {
	case HF_OP_PUT_RESOURCE:
		rc = op_put_resource(&t, call);
		break;
	case HF_OP_DELETE_RESOURCE:
		rc = op_delete_resource(&t, call);
		break;
	case HF_OP_ACQUIRE:
		rc = op_acquire(&t, call, ticket);
		break;
	default:
		rc = op_hold_change(&t, call);
		break;
	}
	if (rc == HF_EENGINE || rc == HF_ENOMEM || rc == HF_EINTERNAL) {
		tx_rollback(&t);
		*ticket = 0;
		fail_engine(reply, rc);
		return HF__PG_DONE;
	}
	/* A refused request changed nothing itself (checks come before writes), but the sweep
	 * it ran is kept. */
	if (tx_commit(&t) != HF_OK) {
		/* A park whose COMMIT failed may have committed: its row may exist, waiting for
		 * nobody. The caller has it deleted (else it lapses: nobody renews its lease). */
		*unsure = *ticket;
		*ticket = 0;
		fail_engine(reply, HF_EENGINE);
		return HF__PG_DONE;
	}
	return *ticket ? HF__PG_PARKED : HF__PG_DONE;
}

/* The waiter row of `ticket` is gone and a grant of it, hold `unsure`, may have committed
 * without this instance hearing so: the grant deletes the row in its transaction, so the hold
 * exists if and only if it did. `deliver`: a live hold goes into the reply (the wait was
 * granted); else it is released (nobody will hear of it). Returns HF_OK with the reply filled
 * when the hold was delivered, HF_ENOHOLD when there is nothing to deliver (no such hold: the
 * grant did not commit; or it was released here), HF_EENDED when the hold's lease ended before
 * anyone heard of it, or an error of the database. */
static int settle_grant(struct tx *t, struct hf__call *call, const char *unsure, bool deliver)
{
	hf_hold h;
	int rc = load_hold(t, unsure, true, &h);
	if (rc != HF_OK)
		return rc;
	if (h.state <= HF_HOLD_CONFIRMED && deliver)
		rc = reply_hold(t, call, &h, true);
	else if (h.state <= HF_HOLD_CONFIRMED)
		rc = hold_end(t, &h, HF_HOLD_RELEASED, t->now) == HF_OK ? HF_ENOHOLD : HF_EENGINE;
	else
		rc = HF_EENDED;
	hf__hold_clear(&h);
	return rc;
}

static enum hf__pg_outcome try_waiter_once(struct hf__pgc *c, struct hf__call *call,
                                           int64_t ticket, char *unsure);

enum hf__pg_outcome hf__pg_try_waiter(struct hf__pgc *c, struct hf__call *call, int64_t ticket,
                                      char *unsure)
{
	/* A try that lost a deadlock to another change rolled back whole: again, at once. */
	for (int attempt = 0;; attempt++) {
		c->lost_race = false;
		enum hf__pg_outcome out = try_waiter_once(c, call, ticket, unsure);
		if (out == HF__PG_DONE || !c->lost_race || attempt >= 4 || unsure[0])
			return out;
	}
}

static enum hf__pg_outcome try_waiter_once(struct hf__pgc *c, struct hf__call *call,
                                           int64_t ticket, char *unsure)
{
	hf_reply *reply = call->reply;
	hf_error scratch, *err = &reply->error;
	struct tx t;
	char b1[24], b2[24];
	if (tx_begin(&t, c, &scratch) != HF_OK)
		return HF__PG_PARKED; /* the database is away: the wait goes on, retried later */
	t.err = err;
	const char *p[1] = {I64(b1, ticket)};
	PGresult *r = q(&t, "SELECT failed FROM waiters WHERE ticket = $1 FOR UPDATE", 1, p);
	if (!r)
		goto db_error;
	if (PQntuples(r) == 0) {
		PQclear(r);
		if (unsure[0]) {
			/* The row went with our grant, whose COMMIT reply was lost: deliver it. */
			int rc = settle_grant(&t, call, unsure, true);
			if (rc == HF_OK && tx_commit(&t) == HF_OK) {
				unsure[0] = '\0';
				return HF__PG_DONE;
			}
			if (rc != HF_ENOHOLD && rc != HF_EENDED)
				goto db_error;
			unsure[0] = '\0';
			if (rc == HF_EENDED) {
				tx_rollback(&t);
				reply_reset(reply);
				hf__err(err, HF_EENGINE,
				        "the wait was granted, but the hold's lease ended"
				        " before the database could be reached again");
				return HF__PG_DONE;
			}
		}
		tx_rollback(&t);
		reply_reset(reply);
		hf__err(err, HF_EENGINE, "the wait was lost: this instance missed its heartbeats");
		return HF__PG_DONE;
	}
	/* The row is there: a grant in doubt did not commit. */
	unsure[0] = '\0';
	int failed = (int)geti(r, 0, 0);
	PQclear(r);
	if (failed) {
		if (qx(&t, "DELETE FROM waiters WHERE ticket = $1", 1, p) != HF_OK)
			goto db_error;
		t.notify = t.drop_idle = true;
		if (tx_commit(&t) != HF_OK)
			goto parked;
		hf__err(err, failed, "%s",
		        failed == HF_ECAPACITY
		            ? "the resource's capacity was lowered below what this wait needs"
		            : "the resource was deleted while waiting");
		return HF__PG_DONE;
	}
	/* Its claims, resource rows locked in name order (as every change locks them), weighed in
	 * stored order (names for all-of, the caller's for any-of); "queued": an earlier waiter
	 * on that resource still waits. */
	if (!(r = q(&t,
	            "SELECT c.resource, c.units, r.capacity, r.held, r.n_exclusive, EXISTS (SELECT 1"
	            " FROM waiter_claims e WHERE e.resource = c.resource AND e.ticket < c.ticket),"
	            " c.idx FROM waiter_claims c JOIN resources r ON r.name = c.resource"
	            " WHERE c.ticket = $1 ORDER BY c.resource FOR UPDATE OF r",
	            1, p)))
		goto db_error;
	size_t n = (size_t)PQntuples(r);
	struct claimrow rows[HF_CLAIMS_MAX];
	if (n > HF_CLAIMS_MAX)
		n = HF_CLAIMS_MAX;
	for (size_t j = 0; j < n; j++) {
		int k = (int)j;
		size_t i = (size_t)geti(r, k, 6);
		if (i >= n) { /* idx are 0..n-1 as parked: anything else is not ours */
			PQclear(r);
			hf__err(err, HF_EENGINE, "database: waiter %lld has a claim at index %zu of %zu",
			        (long long)ticket, i, n);
			goto db_error;
		}
		rows[i] = (struct claimrow){.name = PQgetvalue(r, k, 0),
		                            .exists = true,
		                            .units = geti(r, k, 1),
		                            .capacity = geti(r, k, 2),
		                            .held = geti(r, k, 3),
		                            .n_exclusive = geti(r, k, 4),
		                            .queued = getb(r, k, 5)};
	}
	size_t from, to;
	if (!hf__claims_grantable(n, call->req.acquire.any, fits, rows, &from, &to)) {
		PQclear(r);
		tx_commit(&t); /* keeps what the sweep did */
		goto parked;
	}
	/* The idempotency record stays; grant() turns it from pending into the outcome. */
	const char *pi[2] = {b1, I64(b2, 0)};
	int rc = qx(&t, "UPDATE idems SET ticket = NULL WHERE ticket = $1", 1, pi);
	if (rc == HF_OK)
		rc = qx(&t, "DELETE FROM waiters WHERE ticket = $1", 1, p);
	if (rc == HF_OK) {
		t.notify = true; /* the next in line may go now */
		rc = grant(&t, call, rows + from, to - from, NULL, ticket);
	}
	PQclear(r);
	if (rc == HF_ELIMIT) {
		/* Refused for good: the waiter leaves the queue with the error. */
		hf_error keep = *err;
		tx_rollback(&t);
		if (tx_begin(&t, c, &scratch) != HF_OK ||
		    qx(&t, "DELETE FROM waiters WHERE ticket = $1", 1, p) != HF_OK)
			goto db_error;
		t.notify = t.drop_idle = true;
		if (tx_commit(&t) != HF_OK)
			goto parked;
		*err = keep;
		return HF__PG_DONE;
	}
	if (rc != HF_OK)
		goto db_error;
	t.lose = HF__PG_LOSE_GRANT;
	if (tx_commit(&t) != HF_OK) {
		/* Perhaps committed: the next try (or the end of the wait) looks the hold up by its
		 * id, made here before the insert. */
		snprintf(unsure, HF_ID_LEN + 1, "%s", reply->hold ? reply->hold->id : "");
		goto parked;
	}
	return HF__PG_DONE;
db_error:
	tx_rollback(&t);
parked:
	/* Still waiting: whatever a failed statement or commit wrote into the reply (an engine
	 * error, a refused grant's hold) must not come out with the eventual grant. */
	reply_reset(reply);
	reply->error = (hf_error){0};
	return HF__PG_PARKED;
}

int hf__pg_blocked(struct hf__pgc *c, int64_t **tickets, size_t *n)
{
	*tickets = NULL;
	*n = 0;
	hf_error scratch;
	if (hf__pgc_ensure(c, &scratch) != HF_OK)
		return HF_EENGINE;
	struct tx t = {.c = c, .conn = c->conn, .err = &scratch};
	/* fits() of try_waiter, in SQL: no earlier waiter on the resource, and the units free. */
#define FIT                                                                                 \
	"(NOT EXISTS (SELECT 1 FROM waiter_claims e WHERE e.resource = c.resource"            \
	"  AND e.ticket < c.ticket) AND CASE WHEN c.units = 0 THEN r.held = 0"                \
	"  ELSE r.n_exclusive = 0 AND r.capacity - r.held >= c.units END)"
	const char *p[1] = {c->conf->instance};
	PGresult *r = q(&t,
	                "SELECT w.ticket FROM waiters w WHERE w.instance = $1 AND w.failed = 0 AND"
	                " CASE WHEN w.any_of THEN NOT EXISTS (SELECT 1 FROM waiter_claims c JOIN"
	                "  resources r ON r.name = c.resource WHERE c.ticket = w.ticket AND " FIT ")"
	                " ELSE EXISTS (SELECT 1 FROM waiter_claims c JOIN resources r"
	                "  ON r.name = c.resource WHERE c.ticket = w.ticket AND NOT " FIT ") END"
	                " ORDER BY w.ticket",
	                1, p);
#undef FIT
	if (!r)
		return HF_EENGINE;
	size_t rows = (size_t)PQntuples(r);
	if (rows > 0 && !(*tickets = malloc(rows * sizeof(**tickets)))) {
		PQclear(r);
		return HF_ENOMEM;
	}
	for (size_t i = 0; i < rows; i++)
		(*tickets)[i] = geti(r, (int)i, 0);
	*n = rows;
	PQclear(r);
	return HF_OK;
}

int hf__pg_forget(struct hf__pgc *c, int64_t ticket, const char *unsure, struct hf__call *deliver)
{
	hf_error scratch;
	struct tx t;
	char b1[24];
	if (deliver) {
		reply_reset(deliver->reply);
		deliver->reply->error = (hf_error){0};
	}
	if (tx_begin(&t, c, &scratch) != HF_OK)
		return HF_EENGINE;
	const char *p[1] = {I64(b1, ticket)};
	PGresult *r = q(&t, "DELETE FROM waiters WHERE ticket = $1 RETURNING ticket", 1, p);
	if (!r) {
		tx_rollback(&t);
		return HF_EENGINE;
	}
	bool had_row = PQntuples(r) > 0;
	PQclear(r);
	t.notify = t.drop_idle = had_row;
	int rc = HF_ENOHOLD;
	/* With the row gone already, a grant in doubt did commit (it deletes the row): its hold
	 * is delivered or released. With the row there, it did not. */
	if (unsure && unsure[0] && !had_row) {
		if (deliver)
			t.err = &deliver->reply->error;
		rc = settle_grant(&t, deliver, unsure, deliver != NULL);
		t.err = &scratch;
		if (rc != HF_OK && rc != HF_ENOHOLD && rc != HF_EENDED) {
			tx_rollback(&t);
			rc = HF_EENGINE;
			goto out;
		}
	}
	rc = tx_commit(&t) != HF_OK ? HF_EENGINE : rc == HF_OK ? 1 : HF_OK;
out:
	if (deliver && rc != 1) {
		reply_reset(deliver->reply);
		deliver->reply->error = (hf_error){0};
	}
	return rc;
}

bool hf__pg_end_waiter(struct hf__pgc *c, struct hf__call *call, int64_t ticket, const char *unsure,
                       int code, const char *message)
{
	/* A wait that timed out may have been granted before its deadline by a grant whose COMMIT
	 * reply was lost: then that grant is its answer. Cancelled or closing: released. */
	int rc = hf__pg_forget(c, ticket, unsure, code == HF_ETIMEDOUT ? call : NULL);
	if (rc == 1)
		return true;
	reply_reset(call->reply);
	hf__err(&call->reply->error, code, "%s", message);
	return rc == HF_OK;
}

bool hf__pg_poll_events(struct hf__pgc *c, struct hf__call *call, bool final)
{
	hf_reply *reply = call->reply;
	struct tx t;
	memset(&t, 0, sizeof(t));
	t.c = c;
	t.err = &reply->error;
	if (hf__pgc_ensure(c, t.err) != HF_OK) {
		if (final)
			fail_engine(reply, HF_EENGINE);
		else
			reply->error = (hf_error){0};
		return final;
	}
	t.conn = c->conn;
	reply_reset(reply);
	int rc = read_events(&t, call);
	if (rc == 1 || rc == HF_ETRIMMED || (rc == 0 && final))
		return true;
	if (rc != 0) {
		if (final) {
			fail_engine(reply, rc);
			return true;
		}
		reply_reset(reply);
		reply->error = (hf_error){0};
	}
	return false;
}

int hf__pg_heartbeat(struct hf__pgc *c, const int64_t *tickets, size_t n)
{
	hf_error scratch;
	if (n == 0)
		return HF_OK;
	if (hf__pgc_ensure(c, &scratch) != HF_OK)
		return HF_EENGINE;
	struct tx t = {.c = c, .conn = c->conn, .err = &scratch};
	char b1[24], *list = i64_array(tickets, n);
	if (!list)
		return HF_ENOMEM;
	/* Only the waits this instance still tracks: a row of a wait that ended without its row
	 * being deleted (the database was away) lapses at the end of its lease. */
	const char *p[3] = {list, I64(b1, HF__PG_WAITER_LEASE_MS), c->conf->instance};
	int rc = qx(&t,
	            "UPDATE waiters SET lease_until = now_ms() + $2"
	            " WHERE ticket = ANY($1::bigint[]) AND instance = $3",
	            3, p);
	free(list);
	return rc;
}

int64_t hf__pg_sweep(struct hf__pgc *c)
{
	hf_error scratch;
	if (sweep_if_due(c, &scratch) != HF_OK)
		return -1;
	struct tx t = {.c = c, .conn = c->conn, .err = &scratch};
	PGresult *r = q(&t, "SELECT coalesce(min(expires_at) - now_ms(), 1000) FROM holds WHERE state = 0",
	                0, NULL);
	if (!r)
		return -1;
	int64_t due = geti(r, 0, 0);
	PQclear(r);
	return due < 0 ? 0 : due;
}
