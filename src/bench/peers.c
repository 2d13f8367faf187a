/*
 * peers.c — the seeds' own patterns, driven by the same clients and loops as holdfast:
 * Redis SET NX PX + Lua compare-and-delete (with and without a read-modify-write inside),
 * Redis DECRBY with INCRBY rollback, PostgreSQL SELECT ... FOR UPDATE then UPDATE, a
 * conditional UPDATE, and seed 004's lock table (INSERT ... ON CONFLICT DO NOTHING, DELETE). Redis through hiredis's async API on libevent, PostgreSQL through
 * libpq's asynchronous calls on the same loop. Each checks its own end state.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <libpq-fe.h>

#include "bench.h"

/* The owner-checked release every seed uses. */
static const char release_lua[] =
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) "
    "else return 0 end";
static char release_sha[64];
static char redis_host[256];
static int redis_port;
static char stock_key[HF_NAME_MAX + 1], hot_key[HF_NAME_MAX + 1];
static atomic_llong kept_total; /* units taken by confirmed reservations the clients keep */
static atomic_llong sections;   /* critical sections completed (redis-lock-rw) */

bool hfb_peer_supports(enum hfb_peer p, int scenario)
{
	switch (p) {
	case HFB_PEER_REDIS_SETNX:
	case HFB_PEER_REDIS_LOCK_RW:
		return scenario == 1 || scenario == 2;
	case HFB_PEER_REDIS_DECRBY:
	case HFB_PEER_PG_FOR_UPDATE:
	case HFB_PEER_PG_CONDITIONAL:
		return scenario == 3;
	case HFB_PEER_PG_LOCK_TABLE:
		return scenario == 1;
	default:
		return false;
	}
}

static bool is_redis(void)
{
	return hfb_cfg.peer <= HFB_PEER_REDIS_DECRBY;
}

/* ---- set-up and the end state, over blocking connections ---- */

static redisContext *redis_sync(void)
{
	redisContext *r = redisConnect(redis_host, redis_port);
	if (!r || r->err) {
		fprintf(stderr, "holdfast-bench: redis %s:%d: %s\n", redis_host, redis_port,
		        r ? r->errstr : "out of memory");
		if (r)
			redisFree(r);
		return NULL;
	}
	return r;
}

static void pg_quiet(void *arg, const char *message)
{
	(void)arg;
	(void)message; /* NOTICEs such as "relation already exists, skipping" */
}

static PGconn *pg_sync(void)
{
	PGconn *pg = PQconnectdb(hfb_cfg.pg);
	PQsetNoticeProcessor(pg, pg_quiet, NULL);
	if (PQstatus(pg) != CONNECTION_OK) {
		fprintf(stderr, "holdfast-bench: postgres '%s': %s", hfb_cfg.pg,
		        PQerrorMessage(pg));
		PQfinish(pg);
		return NULL;
	}
	return pg;
}

static bool pg_exec(PGconn *pg, const char *sql)
{
	PGresult *r = PQexec(pg, sql);
	bool ok = PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK;
	if (!ok)
		fprintf(stderr, "holdfast-bench: postgres: %s: %s", sql, PQerrorMessage(pg));
	PQclear(r);
	return ok;
}

int hfb_peer_setup(void)
{
	snprintf(stock_key, sizeof(stock_key), "%s-stock", hfb_cfg.tag);
	snprintf(hot_key, sizeof(hot_key), "%s-hot", hfb_cfg.tag);
	if (is_redis()) {
		unsigned port;
		if (sscanf(hfb_cfg.redis, "%255[^:]:%u", redis_host, &port) != 2) {
			fprintf(stderr, "holdfast-bench: bad --redis '%s' (want HOST:PORT)\n",
			        hfb_cfg.redis);
			return -1;
		}
		redis_port = (int)port;
		redisContext *r = redis_sync();
		if (!r)
			return -1;
		redisReply *rep = redisCommand(r, "SCRIPT LOAD %s", release_lua);
		if (rep && rep->type == REDIS_REPLY_STRING)
			snprintf(release_sha, sizeof(release_sha), "%s", rep->str);
		freeReplyObject(rep);
		rep = redisCommand(r, "SET %s %lld", stock_key, (long long)hfb_cfg.stock);
		freeReplyObject(rep);
		redisFree(r);
		if (!release_sha[0]) {
			fprintf(stderr, "holdfast-bench: redis refused SCRIPT LOAD\n");
			return -1;
		}
		/* the lock resources, for the checker's double-grant test of the clients' view */
		char name[HF_NAME_MAX + 1];
		for (int k = 0; k < (hfb_cfg.scenario == 1 ? hfb_cfg.clients : 1); k++) {
			if (hfb_cfg.scenario == 1)
				snprintf(name, sizeof(name), "%s-u%d", hfb_cfg.tag, k);
			else
				snprintf(name, sizeof(name), "%s", hot_key);
			hfb_history_resource(&hfb_run.hist, name, 1);
		}
		return 0;
	}
	PGconn *pg = pg_sync();
	if (!pg)
		return -1;
	if (hfb_cfg.peer == HFB_PEER_PG_LOCK_TABLE) {
		/* seed 004's table; each client's lock is a capacity-1 resource for the checker */
		bool ok = pg_exec(pg, "CREATE TABLE IF NOT EXISTS hb_locks (lock_key text PRIMARY KEY,"
		                      " lock_id text NOT NULL, expires_at timestamptz NOT NULL)");
		PQfinish(pg);
		char name[HF_NAME_MAX + 1];
		for (int k = 0; k < hfb_cfg.clients; k++) {
			snprintf(name, sizeof(name), "%s-u%d", hfb_cfg.tag, k);
			hfb_history_resource(&hfb_run.hist, name, 1);
		}
		return ok ? 0 : -1;
	}
	char sql[512];
	snprintf(sql, sizeof(sql),
	         "INSERT INTO hb_stock (id, available) VALUES ('%s', %lld) "
	         "ON CONFLICT (id) DO UPDATE SET available = EXCLUDED.available",
	         hfb_cfg.tag, (long long)hfb_cfg.stock);
	bool ok = pg_exec(pg, "CREATE TABLE IF NOT EXISTS hb_stock (id text PRIMARY KEY, "
	                      "available bigint NOT NULL CHECK (available >= 0))") &&
	          pg_exec(pg, sql);
	PQfinish(pg);
	return ok ? 0 : -1;
}

long hfb_peer_check(FILE *out, struct hfb_report *rep)
{
	int64_t kept = atomic_load(&kept_total), left = -1;
	long bad = 0;
	if (hfb_cfg.scenario != 3 &&
	    (hfb_cfg.peer == HFB_PEER_REDIS_SETNX || hfb_cfg.peer == HFB_PEER_PG_LOCK_TABLE))
		goto clients;
	if (is_redis()) {
		redisContext *r = redis_sync();
		if (!r)
			return -1;
		if (hfb_cfg.peer == HFB_PEER_REDIS_LOCK_RW) {
			/* every critical section added one: a lost update means two holders at once
			 */
			int64_t sum = 0;
			for (int k = 0; k < (hfb_cfg.scenario == 1 ? hfb_cfg.clients : 1); k++) {
				redisReply *rr =
				    hfb_cfg.scenario == 1
				        ? redisCommand(r, "GET %s-u%d-data", hfb_cfg.tag, k)
				        : redisCommand(r, "GET %s-data", hot_key);
				if (rr && rr->type == REDIS_REPLY_STRING)
					sum += atoll(rr->str);
				freeReplyObject(rr);
			}
			int64_t want = atomic_load(&sections);
			if (sum != want) {
				bad++;
				fprintf(out,
				        "VIOLATION lost_update: the counters add up to %" PRId64
				        " after %" PRId64 " critical sections\n",
				        sum, want);
			}
			redisFree(r);
			goto clients;
		}
		redisReply *rr = redisCommand(r, "GET %s", stock_key);
		if (rr && rr->type == REDIS_REPLY_STRING)
			left = atoll(rr->str);
		freeReplyObject(rr);
		redisFree(r);
	} else {
		PGconn *pg = pg_sync();
		if (!pg)
			return -1;
		char sql[256];
		snprintf(sql, sizeof(sql), "SELECT available FROM hb_stock WHERE id = '%s'",
		         hfb_cfg.tag);
		PGresult *res = PQexec(pg, sql);
		if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1)
			left = atoll(PQgetvalue(res, 0, 0));
		PQclear(res);
		PQfinish(pg);
	}
	if (left != hfb_cfg.stock - kept) {
		bad++;
		fprintf(out,
		        "VIOLATION stock_balance: %" PRId64 " units left of %" PRId64
		        " with %" PRId64 " kept by confirmed reservations (want %" PRId64 ")\n",
		        left, hfb_cfg.stock, kept, hfb_cfg.stock - kept);
	}
clients:;
	long v = hfb_check(&hfb_run.hist, out, hfb_cfg.max_print, rep);
	return v < 0 ? -1 : v + bad;
}

/* ---- asynchronous commands ---- */

static void redis_cb(redisAsyncContext *ac, void *reply, void *priv)
{
	(void)ac;
	struct hfb_client *c = priv;
	hfb_hist_add(&c->w->stats.request, hfb_now_us() - c->t_send);
	void (*fn)(struct hfb_client *, void *) = c->peer_cb;
	c->peer_cb = NULL;
	if (!reply) {
		fprintf(stderr, "holdfast-bench: client %d lost its redis connection\n", c->id);
		c->w->stats.errors++;
		atomic_store(&hfb_run.failed, true);
		hfb_client_stop(c);
		return;
	}
	fn(c, reply);
}

static void redis_cmd(struct hfb_client *c, void (*fn)(struct hfb_client *, void *),
                      const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	c->peer_cb = fn;
	c->w->stats.requests++;
	c->t_send = hfb_now_us();
	int rc = redisvAsyncCommand(c->redis, redis_cb, c, fmt, ap);
	va_end(ap);
	if (rc != REDIS_OK) {
		c->w->stats.errors++;
		hfb_client_stop(c);
	}
}

static void pg_read(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct hfb_client *c = arg;
	PGconn *pg = c->pg;
	if (!PQconsumeInput(pg)) {
		fprintf(stderr, "holdfast-bench: client %d: postgres: %s", c->id,
		        PQerrorMessage(pg));
		c->w->stats.errors++;
		atomic_store(&hfb_run.failed, true);
		event_del(c->pg_ev);
		hfb_client_stop(c);
		return;
	}
	while (c->pg_done && !PQisBusy(pg)) {
		PGresult *r = PQgetResult(pg);
		if (!r) {
			hfb_hist_add(&c->w->stats.request, hfb_now_us() - c->t_send);
			void (*fn)(struct hfb_client *, int, long, long) = c->pg_done;
			c->pg_done = NULL;
			fn(c, c->pg_ok, c->pg_rows, c->pg_value);
			return;
		}
		switch (PQresultStatus(r)) {
		case PGRES_TUPLES_OK:
			if (PQntuples(r) > 0)
				c->pg_value = atol(PQgetvalue(r, 0, 0));
			break;
		case PGRES_COMMAND_OK:
			c->pg_rows = atol(PQcmdTuples(r));
			break;
		default:
			c->pg_ok = 0;
			break;
		}
		PQclear(r);
	}
}

/* Sends one or more statements in one round trip; `fn` gets whether all succeeded, the
 * rows the last command touched and the first column of the last row read. */
static void pg_cmd(struct hfb_client *c, void (*fn)(struct hfb_client *, int, long, long),
                   const char *fmt, ...)
{
	char sql[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(sql, sizeof(sql), fmt, ap);
	va_end(ap);
	c->pg_done = fn;
	c->pg_ok = 1;
	c->pg_rows = 0;
	c->pg_value = 0;
	c->w->stats.requests++;
	c->t_send = hfb_now_us();
	if (!PQsendQuery(c->pg, sql) || PQflush(c->pg) < 0) {
		fprintf(stderr, "holdfast-bench: client %d: postgres: %s", c->id,
		        PQerrorMessage(c->pg));
		c->w->stats.errors++;
		atomic_store(&hfb_run.failed, true);
		c->pg_done = NULL;
		hfb_client_stop(c);
	}
}

int hfb_peer_open(struct hfb_client *c)
{
	if (is_redis()) {
		redisAsyncContext *ac = redisAsyncConnect(redis_host, redis_port);
		if (!ac || ac->err) {
			fprintf(stderr, "holdfast-bench: redis: %s\n",
			        ac ? ac->errstr : "out of memory");
			if (ac)
				redisAsyncFree(ac);
			return -1;
		}
		redisLibeventAttach(ac, c->w->base);
		c->redis = ac;
		return 0;
	}
	PGconn *pg = pg_sync();
	if (!pg)
		return -1;
	PQsetnonblocking(pg, 1);
	c->pg = pg;
	c->pg_ev = event_new(c->w->base, PQsocket(pg), EV_READ | EV_PERSIST, pg_read, c);
	event_add(c->pg_ev, NULL);
	return 0;
}

void hfb_peer_close(struct hfb_client *c)
{
	if (c->redis)
		redisAsyncFree(c->redis); /* the loop has stopped: frees at once */
	c->redis = NULL;
	if (c->pg_ev)
		event_free(c->pg_ev);
	c->pg_ev = NULL;
	if (c->pg)
		PQfinish(c->pg);
	c->pg = NULL;
}

/* Observations for the checker: a Redis lock is a capacity-1 resource without fences. */
static void observe(struct hfb_client *c, enum hfb_kind kind, int code)
{
	if (!hfb_cfg.check)
		return;
	struct hfb_obs o = {.kind = kind,
	                    .client = c->id,
	                    .t_send = c->t_send,
	                    .t_ack = hfb_now_us(),
	                    .code = code,
	                    .exclusive = true};
	snprintf(o.hold, sizeof(o.hold), "%.32s", c->peer_val);
	if (kind == HFB_GRANT) {
		o.n_parts = 1;
		o.parts[0] = (struct hfb_part){hfb_history_find(&hfb_run.hist, c->key), 1, 0};
	}
	hfb_history_add(&hfb_run.hist, &o);
}

/* ---- redis-setnx and redis-lock-rw: scenarios 1 and 2 ---- */

static void lock_next(struct hfb_client *c);
static void lock_try(struct hfb_client *c);

static void lock_released(struct hfb_client *c, void *reply)
{
	redisReply *r = reply;
	bool ok = r->type == REDIS_REPLY_INTEGER && r->integer == 1;
	observe(c, HFB_RELEASE, ok ? HF_OK : HF_EENDED);
	if (ok)
		c->w->stats.released++;
	else
		c->w->stats.expired++; /* the key was gone or another's: our lease ran out */
	c->w->stats.cycles++;
	lock_next(c);
}

static void lock_release(struct hfb_client *c)
{
	if (hfb_cfg.scenario == 2)
		atomic_store(&hfb_run.last_release_us, hfb_now_us());
	redis_cmd(c, lock_released, "EVALSHA %s 1 %s %s", release_sha, c->key, c->peer_val);
}

static void rw_written(struct hfb_client *c, void *reply)
{
	(void)reply;
	atomic_fetch_add(&sections, 1);
	lock_release(c);
}

static void rw_read(struct hfb_client *c, void *reply)
{
	redisReply *r = reply;
	long long v = r->type == REDIS_REPLY_STRING ? atoll(r->str) : 0;
	redis_cmd(c, rw_written, "SET %s-data %lld", c->key, v + 1);
}

static void lock_answer(struct hfb_client *c, void *reply)
{
	redisReply *r = reply;
	int64_t now = hfb_now_us();
	if (r->type != REDIS_REPLY_STATUS) { /* nil: taken */
		if (hfb_cfg.scenario == 2 && now - c->t_cycle < hfb_cfg.wait_ms * 1000) {
			/* no queue in Redis: the seeds' client sleeps and tries again */
			if (hfb_cfg.retry_us > 0)
				hfb_after(c, hfb_cfg.retry_us, lock_try);
			else
				lock_try(c);
			return;
		}
		c->w->stats.attempts++;
		(*(hfb_cfg.scenario == 2 ? &c->w->stats.timeouts : &c->w->stats.conflicts))++;
		c->w->stats.cycles++;
		lock_next(c);
		return;
	}
	c->w->stats.attempts++;
	c->w->stats.granted++;
	c->grants++;
	hfb_hist_add(&c->w->stats.acquire, now - c->t_cycle);
	observe(c, HFB_GRANT, HF_OK);
	if (hfb_cfg.scenario == 2) {
		int64_t rel = atomic_load(&hfb_run.last_release_us);
		if (rel > c->t_cycle)
			hfb_hist_add(&c->w->stats.handoff, now - rel);
	}
	if (hfb_cfg.peer == HFB_PEER_REDIS_LOCK_RW) {
		redis_cmd(c, rw_read, "GET %s-data", c->key);
		return;
	}
	if (hfb_cfg.scenario == 2 && hfb_cfg.cs_us > 0)
		hfb_after(c, hfb_cfg.cs_us, lock_release);
	else
		lock_release(c);
}

static void lock_try(struct hfb_client *c)
{
	redis_cmd(c, lock_answer, "SET %s %s NX PX %lld", c->key, c->peer_val,
	          (long long)hfb_cfg.lock_ttl_ms);
}

static void lock_next(struct hfb_client *c)
{
	if (!hfb_may_start(c)) {
		hfb_client_stop(c);
		return;
	}
	/* a unique value per acquisition: the owner check of the release, and a hold id */
	snprintf(c->peer_val, sizeof(c->peer_val), "%08x%08x%016" PRIx64, (unsigned)c->id,
	         (unsigned)hfb_cfg.seed, ++c->peer_n);
	c->t_cycle = hfb_now_us();
	lock_try(c);
}

/* ---- redis-decrby: scenario 3 ---- */

/* A stock reservation was granted: counts it and decides, as the holdfast scenario does,
 * whether the client keeps it (confirmed: returns true, the cycle is done) or gives the units
 * back (released: returns false, the caller sends the give-back). */
static bool stock_granted_keeps(struct hfb_client *c)
{
	c->w->stats.granted++;
	hfb_hist_add(&c->w->stats.acquire, hfb_now_us() - c->t_cycle);
	if (hfb_rand_range(&c->rng, 0, 99) >= hfb_cfg.confirm_pct) {
		c->w->stats.released++;
		return false;
	}
	c->w->stats.confirmed++;
	c->kept = true;
	c->kept_units = c->units;
	atomic_fetch_add(&kept_total, c->units);
	c->w->stats.cycles++;
	return true;
}

static void decr_next(struct hfb_client *c);

static void decr_done(struct hfb_client *c, void *reply)
{
	(void)reply;
	c->w->stats.cycles++;
	decr_next(c);
}

static void decr_answer(struct hfb_client *c, void *reply)
{
	redisReply *r = reply;
	c->w->stats.attempts++;
	if (r->type != REDIS_REPLY_INTEGER || r->integer < 0) {
		/* oversold for a moment: roll back, the seeds' compensation */
		c->w->stats.conflicts++;
		redis_cmd(c, decr_done, "INCRBY %s %lld", stock_key, (long long)c->units);
		return;
	}
	if (stock_granted_keeps(c)) {
		decr_next(c);
		return;
	}
	redis_cmd(c, decr_done, "INCRBY %s %lld", stock_key, (long long)c->units);
}

static void decr_reserve(struct hfb_client *c)
{
	if (!hfb_may_start(c)) {
		hfb_client_stop(c);
		return;
	}
	c->units = hfb_rand_range(&c->rng, 1, hfb_cfg.max_units);
	c->t_cycle = hfb_now_us();
	redis_cmd(c, decr_answer, "DECRBY %s %lld", stock_key, (long long)c->units);
}

static void decr_restocked(struct hfb_client *c, void *reply)
{
	(void)reply;
	decr_reserve(c);
}

static void decr_next(struct hfb_client *c)
{
	if (!c->kept) {
		decr_reserve(c);
		return;
	}
	c->kept = false;
	atomic_fetch_sub(&kept_total, c->kept_units);
	redis_cmd(c, decr_restocked, "INCRBY %s %lld", stock_key, (long long)c->kept_units);
}

/* ---- pg-for-update and pg-conditional-update: scenario 3 ---- */

static void pg_next(struct hfb_client *c);

static void pg_done(struct hfb_client *c, int ok, long rows, long value)
{
	(void)ok;
	(void)rows;
	(void)value;
	c->w->stats.cycles++;
	pg_next(c);
}

/* The reservation is in: confirm (keep it) or release (give the units back). */
static void pg_granted(struct hfb_client *c)
{
	if (stock_granted_keeps(c)) {
		pg_next(c);
		return;
	}
	pg_cmd(c, pg_done, "UPDATE hb_stock SET available = available + %lld WHERE id = '%s'",
	       (long long)c->units, hfb_cfg.tag);
}

static void pg_committed(struct hfb_client *c, int ok, long rows, long value)
{
	(void)rows;
	(void)value;
	if (!ok) {
		c->w->stats.errors++;
		pg_done(c, ok, 0, 0);
		return;
	}
	pg_granted(c);
}

static void pg_locked(struct hfb_client *c, int ok, long rows, long value)
{
	(void)rows;
	if (!ok) {
		c->w->stats.attempts++;
		c->w->stats.errors++;
		pg_cmd(c, pg_done, "ROLLBACK");
		return;
	}
	c->w->stats.attempts++;
	if (value < c->units) {
		c->w->stats.conflicts++;
		pg_cmd(c, pg_done, "ROLLBACK");
		return;
	}
	pg_cmd(c, pg_committed,
	       "UPDATE hb_stock SET available = available - %lld WHERE id = '%s'; COMMIT",
	       (long long)c->units, hfb_cfg.tag);
}

static void pg_conditional(struct hfb_client *c, int ok, long rows, long value)
{
	(void)value;
	c->w->stats.attempts++;
	if (!ok) {
		c->w->stats.errors++;
	} else if (rows == 1) {
		pg_granted(c);
		return;
	} else {
		c->w->stats.conflicts++;
	}
	c->w->stats.cycles++;
	pg_next(c);
}

static void pg_reserve(struct hfb_client *c)
{
	if (!hfb_may_start(c)) {
		hfb_client_stop(c);
		return;
	}
	c->units = hfb_rand_range(&c->rng, 1, hfb_cfg.max_units);
	c->t_cycle = hfb_now_us();
	if (hfb_cfg.peer == HFB_PEER_PG_FOR_UPDATE)
		/* BEGIN travels with the SELECT: one round trip fewer than the textbook four */
		pg_cmd(c, pg_locked,
		       "BEGIN; SELECT available FROM hb_stock WHERE id = '%s' FOR UPDATE",
		       hfb_cfg.tag);
	else
		pg_cmd(c, pg_conditional,
		       "UPDATE hb_stock SET available = available - %lld "
		       "WHERE id = '%s' AND available >= %lld",
		       (long long)c->units, hfb_cfg.tag, (long long)c->units);
}

static void pg_restocked(struct hfb_client *c, int ok, long rows, long value)
{
	(void)ok;
	(void)rows;
	(void)value;
	pg_reserve(c);
}

static void pg_next(struct hfb_client *c)
{
	if (!c->kept) {
		pg_reserve(c);
		return;
	}
	c->kept = false;
	atomic_fetch_sub(&kept_total, c->kept_units);
	pg_cmd(c, pg_restocked, "UPDATE hb_stock SET available = available + %lld WHERE id = '%s'",
	       (long long)c->kept_units, hfb_cfg.tag);
}

/* ---- pg-lock-table: scenario 1, seed 004's database lock ---- */

static void row_lock_next(struct hfb_client *c);

static void row_lock_released(struct hfb_client *c, int ok, long rows, long value)
{
	(void)value;
	bool gone = ok && rows == 1;
	if (!ok)
		c->w->stats.errors++;
	observe(c, HFB_RELEASE, gone ? HF_OK : HF_EENDED);
	if (gone)
		c->w->stats.released++;
	else
		c->w->stats.expired++; /* not ours any more: the lease ran out (no sweeper here) */
	c->w->stats.cycles++;
	row_lock_next(c);
}

static void row_lock_answer(struct hfb_client *c, int ok, long rows, long value)
{
	(void)value;
	c->w->stats.attempts++;
	if (!ok || rows != 1) { /* taken (or an error): no queue, the seed's caller gives up */
		if (!ok)
			c->w->stats.errors++;
		else
			c->w->stats.conflicts++;
		c->w->stats.cycles++;
		row_lock_next(c);
		return;
	}
	c->w->stats.granted++;
	c->grants++;
	hfb_hist_add(&c->w->stats.acquire, hfb_now_us() - c->t_cycle);
	observe(c, HFB_GRANT, HF_OK);
	pg_cmd(c, row_lock_released, "DELETE FROM hb_locks WHERE lock_key = '%s' AND lock_id = '%s'",
	       c->key, c->peer_val);
}

static void row_lock_next(struct hfb_client *c)
{
	if (!hfb_may_start(c)) {
		hfb_client_stop(c);
		return;
	}
	snprintf(c->peer_val, sizeof(c->peer_val), "%08x%08x%016" PRIx64, (unsigned)c->id,
	         (unsigned)hfb_cfg.seed, ++c->peer_n);
	c->t_cycle = hfb_now_us();
	/* The tag and the lock id are [A-Za-z0-9-]: safe as literals. */
	pg_cmd(c, row_lock_answer,
	       "INSERT INTO hb_locks (lock_key, lock_id, expires_at) VALUES ('%s', '%s',"
	       " now() + %lld * interval '1 millisecond') ON CONFLICT (lock_key) DO NOTHING",
	       c->key, c->peer_val, (long long)hfb_cfg.lock_ttl_ms);
}

void hfb_peer_start(struct hfb_client *c)
{
	switch (hfb_cfg.peer) {
	case HFB_PEER_REDIS_SETNX:
	case HFB_PEER_REDIS_LOCK_RW:
		if (hfb_cfg.scenario == 1)
			snprintf(c->key, sizeof(c->key), "%s-u%d", hfb_cfg.tag, c->id);
		else
			snprintf(c->key, sizeof(c->key), "%s", hot_key);
		lock_next(c);
		break;
	case HFB_PEER_REDIS_DECRBY:
		decr_next(c);
		break;
	case HFB_PEER_PG_LOCK_TABLE:
		snprintf(c->key, sizeof(c->key), "%s-u%d", hfb_cfg.tag, c->id);
		row_lock_next(c);
		break;
	default:
		pg_next(c);
		break;
	}
}
