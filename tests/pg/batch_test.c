/*
 * batch_test.c — calls of the postgres:// engine sent as one transaction (calls.c,
 * hf__pg_call_batch): each keeps its own answer, a batch sees its earlier calls' changes, a
 * call its function cannot finish runs alone after it, and a batch that rolls back (a later
 * call waited past the batch's short lock wait) runs its calls again alone, granting nothing
 * twice. The batches are made on purpose: one worker (workers=1), held up on a row this test
 * locks, while the calls queue behind it. Uses HF_TEST_ENGINE_URL and libpq.
 */
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "holdfast.h"

static int failures;
#define CHECK(cond)                                                                        \
	do {                                                                                   \
		if (!(cond)) {                                                                     \
			fprintf(stderr, "batch_test:%d: check failed: %s\n", __LINE__, #cond);         \
			failures++;                                                                    \
		}                                                                                  \
	} while (0)

#define MAX_PENDING 16

struct pending {
	hf_reply *reply;
};

static void done(void *arg, hf_reply *reply)
{
	((struct pending *)arg)->reply = reply;
}

static void sleep_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

static int64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Dispatches st's completions until every one of p[0..n) has its reply (at most 20 s). */
static void wait_all(hf_store *st, struct pending *p, size_t n)
{
	int64_t end = mono_ms() + 20000;
	for (;;) {
		hf_store_dispatch(st);
		size_t got = 0;
		for (size_t i = 0; i < n; i++)
			got += p[i].reply != NULL;
		if (got == n || mono_ms() > end)
			break;
		sleep_ms(1);
	}
	for (size_t i = 0; i < n; i++)
		CHECK(p[i].reply != NULL);
}

static void submit(hf_store *st, const hf_request *q, struct pending *p)
{
	hf_error err;
	memset(p, 0, sizeof(*p));
	CHECK(hf_submit(st, q, done, p, NULL, &err) == HF_OK);
}

static void submit_acquire(hf_store *st, const char *name, int64_t units, int64_t capacity,
                           int64_t ttl_ms, struct pending *p)
{
	hf_claim c = {.name = name, .units = units, .capacity = capacity};
	hf_request q;
	hf_request_init(&q, HF_OP_ACQUIRE);
	q.acquire = (hf_acquire_req){.owner = "t", .claims = &c, .n_claims = 1, .ttl_ms = ttl_ms};
	submit(st, &q, p);
}

static void submit_change(hf_store *st, hf_op op, const hf_hold *h, const char *token,
                          struct pending *p)
{
	hf_request q;
	hf_request_init(&q, op);
	q.hold_id = h ? h->id : "00000000000000000000000000000000";
	q.token = token;
	q.ttl_ms = 60000;
	submit(st, &q, p);
}

/* A separate session that locks a resource's row, as another change would. */
static PGconn *lock_row(const char *conninfo, const char *name)
{
	PGconn *pg = PQconnectdb(conninfo);
	CHECK(PQstatus(pg) == CONNECTION_OK);
	const char *p[1] = {name};
	PQclear(PQexec(pg, "SET search_path TO hf_test; BEGIN"));
	PGresult *r = PQexecParams(pg, "SELECT 1 FROM resources WHERE name = $1 FOR UPDATE", 1,
	                           NULL, p, NULL, NULL, 0);
	CHECK(PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1);
	PQclear(r);
	return pg;
}

static void unlock_row(PGconn *pg)
{
	PQclear(PQexec(pg, "COMMIT"));
	PQfinish(pg);
}

/* How many transactions wrote the events of these holds: 1 when they were one batch. */
static long writers_of(const char *conninfo, const hf_reply *const *r, size_t n)
{
	char sql[2048] = "SELECT count(DISTINCT xmin::text) FROM hf_test.events WHERE hold_id IN (";
	for (size_t i = 0; i < n; i++)
		snprintf(sql + strlen(sql), sizeof(sql) - strlen(sql), "%s'%s'", i ? "," : "",
		         r[i] && r[i]->hold ? r[i]->hold->id : "");
	strcat(sql, ")");
	PGconn *pg = PQconnectdb(conninfo);
	PGresult *res = PQexec(pg, sql);
	long n_tx = PQresultStatus(res) == PGRES_TUPLES_OK ? atol(PQgetvalue(res, 0, 0)) : -1;
	PQclear(res);
	PQfinish(pg);
	return n_tx;
}

static hf_hold *acquire(hf_store *st, const char *name, int64_t ttl_ms)
{
	hf_claim c = {.name = name, .units = 1, .capacity = 1};
	hf_acquire_req req = {.owner = "t", .claims = &c, .n_claims = 1, .ttl_ms = ttl_ms};
	hf_hold *h = NULL;
	hf_error err;
	CHECK(hf_acquire(st, &req, &h, &err) == HF_OK);
	return h;
}

static void declare(hf_store *st, const char *name, int64_t capacity)
{
	hf_request q;
	hf_request_init(&q, HF_OP_PUT_RESOURCE);
	q.name = name;
	q.capacity = capacity;
	hf_reply *r = NULL;
	CHECK(hf_call(st, &q, &r) == HF_OK);
	hf_reply_free(r);
}

/* Every kind of answer from one batch. */
static void one_batch(hf_store *st, const char *conninfo)
{
	declare(st, "gate", 1);
	declare(st, "stock", 5);
	hf_hold *confirm_me = acquire(st, "c1", 60000), *extend_me = acquire(st, "e1", 60000),
	        *foreign = acquire(st, "f1", 60000);
	PGconn *lock = lock_row(conninfo, "gate");
	struct pending p[10];
	submit_acquire(st, "gate", 1, 0, 60000, &p[0]); /* the worker waits on the row */
	sleep_ms(200);
	submit_acquire(st, "n1", 1, 1, 60000, &p[1]);   /* granted */
	submit_acquire(st, "n1", 1, 1, 60000, &p[2]);   /* unavailable: the batch's own grant */
	submit_acquire(st, "stock", 2, 0, 60000, &p[3]); /* granted */
	submit_acquire(st, "stock", 2, 0, 60000, &p[4]); /* granted */
	submit_acquire(st, "stock", 2, 0, 60000, &p[5]); /* unavailable: 4 of 5 held */
	submit_change(st, HF_OP_CONFIRM, confirm_me, confirm_me->token, &p[6]);
	submit_change(st, HF_OP_EXTEND, extend_me, extend_me->token, &p[7]);
	submit_change(st, HF_OP_RELEASE, foreign, confirm_me->token, &p[8]); /* bad token */
	submit_change(st, HF_OP_RELEASE, NULL, "x", &p[9]);                  /* no such hold */
	sleep_ms(100);
	unlock_row(lock);
	wait_all(st, p, 10);
	int want[10] = {HF_OK, HF_OK, HF_EUNAVAILABLE, HF_OK, HF_OK, HF_EUNAVAILABLE, HF_OK, HF_OK,
	                HF_ETOKEN, HF_ENOHOLD};
	for (int i = 0; i < 10; i++) {
		int got = p[i].reply ? p[i].reply->error.code : 1;
		if (got != want[i])
			fprintf(stderr, "batch_test: call %d answered %s (%s), not %s\n", i, hf_err_name(got),
			        p[i].reply ? p[i].reply->error.message : "-", hf_err_name(want[i]));
		CHECK(got == want[i]);
	}
	if (p[6].reply && p[6].reply->hold)
		CHECK(p[6].reply->hold->state == HF_HOLD_CONFIRMED);
	const hf_reply *grants[3] = {p[1].reply, p[3].reply, p[4].reply};
	long n_tx = writers_of(conninfo, grants, 3);
	fprintf(stderr, "batch_test: three grants queued together were written by %ld "
	                "transaction(s)\n", n_tx);
	CHECK(n_tx == 1);
	for (int i = 0; i < 10; i++)
		hf_reply_free(p[i].reply);
	hf_hold_free(confirm_me);
	hf_hold_free(extend_me);
	hf_hold_free(foreign);
}

/* A batch that meets a lease that ended while it queued: every function answers 'slow' (the
 * lease's end comes first), and ops.c runs each call after the batch. (gate is held since
 * one_batch: its acquire here is refused.) */
static void slow_batch(hf_store *st, const char *conninfo)
{
	hf_hold *lapsing = acquire(st, "l1", 400);
	PGconn *lock = lock_row(conninfo, "gate");
	struct pending p[3];
	submit_acquire(st, "gate", 1, 0, 60000, &p[0]); /* its function is past the due check */
	sleep_ms(700);                                  /* l1's lease ends meanwhile */
	submit_change(st, HF_OP_RELEASE, lapsing, lapsing->token, &p[1]);
	submit_acquire(st, "n2", 1, 1, 60000, &p[2]);
	sleep_ms(100);
	unlock_row(lock);
	wait_all(st, p, 3);
	CHECK(p[0].reply && p[0].reply->error.code == HF_EUNAVAILABLE);
	CHECK(p[1].reply && p[1].reply->error.code == HF_EENDED);
	CHECK(p[2].reply && p[2].reply->error.code == HF_OK);
	for (int i = 0; i < 3; i++)
		hf_reply_free(p[i].reply);
	hf_hold_free(lapsing);
}

/* A batch whose second call waits on a row past the batch's short lock wait: it rolls back,
 * and its calls run again alone; the first is granted once. */
static void rolled_back(hf_store *st, const char *conninfo)
{
	declare(st, "gate2", 1);
	declare(st, "r9", 1);
	PGconn *gate = lock_row(conninfo, "gate2"), *r9 = lock_row(conninfo, "r9");
	struct pending p[3];
	submit_acquire(st, "gate2", 1, 0, 60000, &p[0]);
	sleep_ms(200);
	submit_acquire(st, "r8", 1, 1, 60000, &p[1]);
	submit_acquire(st, "r9", 1, 0, 60000, &p[2]);
	sleep_ms(100);
	unlock_row(gate);
	sleep_ms(600); /* the batch waits on r9, rolls back; r8 runs alone, then r9 waits */
	unlock_row(r9);
	wait_all(st, p, 3);
	for (int i = 0; i < 3; i++)
		CHECK(p[i].reply && p[i].reply->error.code == HF_OK);
	hf_request q;
	hf_request_init(&q, HF_OP_LIST_HOLDS);
	q.resource = "r8";
	hf_reply *r = NULL;
	CHECK(hf_call(st, &q, &r) == HF_OK);
	CHECK(r && r->n_holds == 1); /* the rolled-back grant left nothing */
	hf_reply_free(r);
	const hf_reply *grants[2] = {p[1].reply, p[2].reply};
	CHECK(writers_of(conninfo, grants, 2) == 2);
	for (int i = 0; i < 3; i++)
		hf_reply_free(p[i].reply);
}

int main(void)
{
	const char *url = getenv("HF_TEST_ENGINE_URL");
	const char *dir = getenv("HF_PG_DIR"), *user = getenv("HF_PG_USER");
	if (!url || strncmp(url, "postgres", 8) != 0 || !dir || !user) {
		fprintf(stderr, "batch_test: needs with_pg.sh (HF_TEST_ENGINE_URL=postgres://...)\n");
		return 77;
	}
	char conninfo[512], one_worker[1024];
	snprintf(conninfo, sizeof(conninfo), "host=%s user=%s dbname=postgres", dir, user);
	snprintf(one_worker, sizeof(one_worker), "%s&workers=1&lanes=1", url);
	hf_store *st = NULL;
	hf_error err;
	const char *bad[] = {"&lanes=0", "&lanes=65", "&lanes=x", "&lanes=", "&workers="};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char u[1024];
		snprintf(u, sizeof(u), "%s%s", url, bad[i]);
		CHECK(hf_open(u, NULL, &st, &err) == HF_EINVAL);
		CHECK(strstr(err.message, "must be 1..") != NULL);
	}
	if (hf_open(one_worker, NULL, &st, &err) != HF_OK) {
		fprintf(stderr, "batch_test: open: %s\n", err.message);
		return 1;
	}
	one_batch(st, conninfo);
	slow_batch(st, conninfo);
	rolled_back(st, conninfo);
	hf_close(st);
	fprintf(stderr, "batch_test: %s\n", failures ? "FAILED" : "ok");
	return failures ? 1 : 0;
}
