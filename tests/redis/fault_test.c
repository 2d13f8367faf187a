/*
 * fault_test.c — redlock:// over five redis-server masters started by with_redis.sh -n 5:
 * the wire format on every master, majority and validity, fences, mutual exclusion under
 * threads, fence counters apart and scripts flushed, and faults (two masters killed: locks
 * work; three: acquire fails closed); then
 * redis:// surviving a restart of its server and the loss of its code (FUNCTION FLUSH,
 * SCRIPT FLUSH), running as a script where FUNCTION is refused, and many callers' calls run
 * together (each its own answer, a failing one alone). Exits non-zero on the first failed check.
 */
#include <hiredis/hiredis.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "holdfast.h"
#include "check.h"

static int ports[5];
static const char *dir;

static void flush_code(int port);
static void set_plain(int port, const char *key, const char *value);

static redisContext *conn(int port)
{
	struct timeval tv = {1, 0};
	redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
	if (c && c->err) {
		redisFree(c);
		return NULL;
	}
	return c;
}

/* GET key on one master: the value, or "" (absent) / "down". */
static void get_on(int port, const char *key, char *out, size_t n)
{
	redisContext *c = conn(port);
	if (!c) {
		snprintf(out, n, "down");
		return;
	}
	redisReply *r = redisCommand(c, "GET %b", key, strlen(key));
	snprintf(out, n, "%s", r && r->type == REDIS_REPLY_STRING ? r->str : "");
	if (r)
		freeReplyObject(r);
	redisFree(c);
}

static void set_on(int port, const char *key, const char *value)
{
	redisContext *c = conn(port);
	if (!c)
		return;
	redisReply *r = redisCommand(c, "SET %b %b PX 30000", key, strlen(key), value, strlen(value));
	if (r)
		freeReplyObject(r);
	redisFree(c);
}

static void kill_server(int port)
{
	char path[600];
	snprintf(path, sizeof(path), "%s/%d.pid", dir, port);
	FILE *f = fopen(path, "r");
	int pid = 0;
	if (f) {
		if (fscanf(f, "%d", &pid) != 1)
			pid = 0;
		fclose(f);
	}
	if (pid > 0)
		kill(pid, SIGKILL);
	for (int i = 0; i < 100; i++) { /* until it stops answering */
		redisContext *c = conn(port);
		if (!c)
			break;
		redisFree(c);
		sleep_ms(20);
	}
	unlink(path);
}

static void start_server(int port)
{
	char cmd[700];
	snprintf(cmd, sizeof(cmd), "redis-server %s/%d.conf", dir, port);
	if (system(cmd) != 0)
		fprintf(stderr, "could not run: %s\n", cmd);
	for (int i = 0; i < 200; i++) {
		redisContext *c = conn(port);
		if (c) {
			redisFree(c);
			return;
		}
		sleep_ms(20);
	}
}

static int lock(hf_store *st, const char *name, int64_t ttl, int64_t wait, hf_hold **out,
                hf_error *err)
{
	hf_claim c = {.name = name, .units = 1, .capacity = 1};
	hf_acquire_req req = {.owner = "fault-test", .claims = &c, .n_claims = 1, .ttl_ms = ttl,
	                      .wait_ms = wait, .mode = HF_MODE_EXCLUSIVE};
	return hf_acquire(st, &req, out, err);
}

static hf_store *open_redlock(size_t n)
{
	char url[512] = "redlock://";
	for (size_t i = 0; i < n; i++) {
		size_t l = strlen(url);
		snprintf(url + l, sizeof(url) - l, "%s127.0.0.1:%d", i ? "," : "", ports[i]);
	}
	hf_store *st = NULL;
	hf_error err;
	if (hf_open(url, NULL, &st, &err) != HF_OK)
		fprintf(stderr, "open %s: %s\n", url, err.message);
	return st;
}

/* ---- redlock: basics ---- */

static void redlock_basics(hf_store *st)
{
	hf_hold *h = NULL, *h2 = NULL;
	hf_error err;
	int64_t asked = hf_now_ms();
	CHECK(lock(st, "L", 10000, 0, &h, &err) == HF_OK, "%s", err.message);
	CHECK(h->parts[0].fence > 0, "fence %lld", (long long)h->parts[0].fence);
	/* Valid until no earlier than the request plus the lease less the drift (1 % + 2 ms):
	 * the rounds' time is not taken off twice (docs/reliability.md, section 9). */
	CHECK(h->expires_at_ms >= asked + 10000 - 102, "validity ends %lld ms after the request",
	      (long long)(h->expires_at_ms - asked));
	/* the wire format: key = the name, value = the token, on every master */
	for (int i = 0; i < 5; i++) {
		char v[64];
		get_on(ports[i], "L", v, sizeof(v));
		CHECK(strcmp(v, h->token) == 0, "master %d has '%s', token %s", i, v, h->token);
	}
	CHECK(lock(st, "L", 10000, 0, NULL, &err) == HF_EUNAVAILABLE, "%s", err.message);
	printf("held lock refused: %s\n", err.message);
	int64_t t0 = hf_now_ms();
	CHECK(lock(st, "L", 10000, 400, NULL, &err) == HF_ETIMEDOUT, "%s", err.message);
	CHECK(hf_now_ms() - t0 >= 300, "waited only %lld ms", (long long)(hf_now_ms() - t0));
	hf_hold *r = NULL;
	CHECK(hf_release(st, h->id, h->token, &r, &err) == HF_OK, "%s", err.message);
	hf_hold_free(r);
	for (int i = 0; i < 5; i++) {
		char v[64];
		get_on(ports[i], "L", v, sizeof(v));
		CHECK(v[0] == '\0', "master %d still has '%s' after release", i, v);
	}
	CHECK(lock(st, "L", 10000, 0, &h2, &err) == HF_OK, "%s", err.message);
	CHECK(h2->parts[0].fence > h->parts[0].fence, "fence %lld after %lld",
	      (long long)h2->parts[0].fence, (long long)h->parts[0].fence);
	/* extend: on every master, by value */
	hf_hold *x = NULL;
	asked = hf_now_ms();
	CHECK(hf_extend(st, h2->id, h2->token, 20000, &x, &err) == HF_OK, "%s", err.message);
	CHECK(x->expires_at_ms >= asked + 20000 - 202, "extend: valid until %lld ms after it",
	      (long long)(x->expires_at_ms - asked));
	hf_hold_free(x);
	CHECK(hf_extend(st, h2->id, "00000000000000000000000000000000", 20000, &x, &err) == HF_ETOKEN,
	      "%s", err.message);
	CHECK(hf_release(st, h2->id, h2->token, &r, &err) == HF_OK, "%s", err.message);
	hf_hold_free(r);
	/* a foreign holder on a majority blocks us; on a minority it does not */
	for (int i = 0; i < 3; i++)
		set_on(ports[i], "F3", "ffffffffffffffffffffffffffffffff");
	CHECK(lock(st, "F3", 5000, 0, NULL, &err) == HF_EUNAVAILABLE, "%s", err.message);
	char v[64];
	get_on(ports[4], "F3", v, sizeof(v));
	CHECK(v[0] == '\0', "a failed acquire left its key on master 4: '%s'", v);
	for (int i = 0; i < 2; i++)
		set_on(ports[i], "F2", "ffffffffffffffffffffffffffffffff");
	hf_hold *f2 = NULL;
	CHECK(lock(st, "F2", 5000, 0, &f2, &err) == HF_OK, "%s", err.message);
	get_on(ports[0], "F2", v, sizeof(v));
	CHECK(strcmp(v, "ffffffffffffffffffffffffffffffff") == 0, "we overwrote a foreign value");
	CHECK(hf_release(st, f2->id, f2->token, &r, &err) == HF_OK, "%s", err.message);
	hf_hold_free(r);
	get_on(ports[0], "F2", v, sizeof(v));
	CHECK(strcmp(v, "ffffffffffffffffffffffffffffffff") == 0, "release deleted a foreign value");
	/* only plain locks */
	hf_claim c2 = {.name = "S", .units = 1, .capacity = 2};
	hf_acquire_req sem = {.owner = "t", .claims = &c2, .n_claims = 1, .ttl_ms = 1000};
	CHECK(hf_acquire(st, &sem, NULL, &err) == HF_ENOTSUP, "%s", err.message);
	printf("semaphore refused: %s\n", err.message);
	hf_hold_free(h);
	hf_hold_free(h2);
	hf_hold_free(f2);
}

/* ---- redlock: the lock route's acquire (holdfastd's POST /v1/locks/{key}) ---- */

/* The lock route asks for `lock:KEY` with capacity 65,536: exclusive is one Redlock key named
 * `lock:KEY` (taking the whole capacity); shared is refused with the reason. */
static void redlock_lock_route(hf_store *st)
{
	hf_claim c = {.name = "lock:report", .units = 1, .capacity = 65536};
	hf_acquire_req req = {.owner = "route", .claims = &c, .n_claims = 1, .ttl_ms = 10000,
	                      .mode = HF_MODE_EXCLUSIVE};
	hf_hold *h = NULL, *r = NULL;
	hf_error err;
	int rc = hf_acquire(st, &req, &h, &err);
	CHECK(rc == HF_OK, "exclusive lock:report of capacity 65536: %s %s", hf_err_name(rc),
	      err.message);
	CHECK(h->n_parts == 1 && strcmp(h->parts[0].resource, "lock:report") == 0 &&
	          h->parts[0].units == 65536,
	      "part %s units %lld", h->parts[0].resource, (long long)h->parts[0].units);
	char v[64];
	size_t on = 0;
	for (int i = 0; i < 5; i++) {
		get_on(ports[i], "lock:report", v, sizeof(v));
		on += strcmp(v, h->token) == 0;
	}
	CHECK(on >= 3, "the token is the value of key lock:report on %zu of 5 masters", on);
	/* a second exclusive acquire, whatever capacity it names, is the same key: refused */
	hf_claim c1 = {.name = "lock:report", .units = 1, .capacity = 1};
	req.claims = &c1;
	rc = hf_acquire(st, &req, NULL, &err);
	CHECK(rc == HF_EUNAVAILABLE, "a second exclusive acquire: %s", hf_err_name(rc));
	req.claims = &c;
	req.mode = HF_MODE_SHARED;
	rc = hf_acquire(st, &req, NULL, &err);
	CHECK(rc == HF_ENOTSUP, "a shared lock: %s", hf_err_name(rc));
	CHECK(strstr(err.message, "shared") && strstr(err.message, "lock:report"),
	      "the message says why: %s", err.message);
	printf("shared lock refused: %s\n", err.message);
	CHECK(hf_release(st, h->id, h->token, &r, &err) == HF_OK, "%s", err.message);
	for (int i = 0; i < 5; i++) {
		get_on(ports[i], "lock:report", v, sizeof(v));
		CHECK(v[0] == '\0', "lock:report still set on master %d after release: %s", i, v);
	}
	hf_hold_free(h);
	hf_hold_free(r);
}

/* ---- redlock: mutual exclusion and fences under threads ---- */

struct mx {
	atomic_int inside, violations, errors, fence_regressions;
	atomic_llong last_fence;
};

struct mx_arg {
	struct mx *m;
	hf_store *st;
};

static void *mx_thread(void *arg)
{
	struct mx_arg *a = arg;
	struct mx *m = a->m;
	for (int i = 0; i < 15; i++) {
		hf_hold *h = NULL;
		hf_error err;
		if (lock(a->st, "MX", 5000, 20000, &h, &err) != HF_OK) {
			fprintf(stderr, "mx acquire: %s\n", err.message);
			atomic_fetch_add(&m->errors, 1);
			continue;
		}
		if (atomic_fetch_add(&m->inside, 1) != 0)
			atomic_fetch_add(&m->violations, 1);
		long long prev = atomic_exchange(&m->last_fence, (long long)h->parts[0].fence);
		if (h->parts[0].fence <= prev)
			atomic_fetch_add(&m->fence_regressions, 1);
		sleep_ms(2);
		atomic_fetch_sub(&m->inside, 1);
		hf_hold *r = NULL;
		if (hf_release(a->st, h->id, h->token, &r, &err) != HF_OK)
			atomic_fetch_add(&m->errors, 1);
		hf_hold_free(r);
		hf_hold_free(h);
	}
	return NULL;
}

/* Four stores (as four processes would have), one lock, 60 holds. */
static void redlock_exclusion(void)
{
	static struct mx m;
	struct mx_arg args[4];
	pthread_t t[4];
	for (int i = 0; i < 4; i++) {
		args[i] = (struct mx_arg){.m = &m, .st = open_redlock(5)};
		CHECK(args[i].st, "open");
	}
	for (int i = 0; i < 4; i++)
		pthread_create(&t[i], NULL, mx_thread, &args[i]);
	for (int i = 0; i < 4; i++)
		pthread_join(t[i], NULL);
	for (int i = 0; i < 4; i++)
		hf_close(args[i].st);
	CHECK(atomic_load(&m.errors) == 0, "%d errors", atomic_load(&m.errors));
	CHECK(atomic_load(&m.violations) == 0, "%d overlapping holders", atomic_load(&m.violations));
	CHECK(atomic_load(&m.fence_regressions) == 0, "%d fences not above the previous",
	      atomic_load(&m.fence_regressions));
	printf("60 exclusive holds over 5 masters from 4 stores: no overlap, fences increasing\n");
}

/* ---- redlock: counters apart, scripts flushed ---- */

static void set_plain(int port, const char *key, const char *value)
{
	redisContext *c = conn(port);
	if (!c)
		return;
	redisReply *r = redisCommand(c, "SET %s %s", key, value);
	if (r)
		freeReplyObject(r);
	redisFree(c);
}

/* The fence counters of one lock disagree (two masters far ahead): the acquire takes the
 * highest and writes it to the others (the second round); with them equal again the next
 * acquire needs only one. Then every master's scripts are flushed: the calls answered
 * NOSCRIPT go again as EVAL. */
static void redlock_counters(hf_store *st)
{
	hf_error err;
	hf_hold *h = NULL, *h2 = NULL, *r = NULL;
	set_plain(ports[0], "hf:fence:D", "100");
	set_plain(ports[1], "hf:fence:D", "100");
	CHECK(lock(st, "D", 10000, 0, &h, &err) == HF_OK, "%s", err.message);
	CHECK(h->parts[0].fence > 100, "fence %lld below a master's counter 100",
	      (long long)h->parts[0].fence);
	for (int i = 0; i < 5; i++) {
		char v[64];
		get_on(ports[i], "hf:fence:D", v, sizeof(v));
		CHECK(atoll(v) == h->parts[0].fence, "master %d's counter %s, fence %lld", i, v,
		      (long long)h->parts[0].fence);
	}
	CHECK(hf_release(st, h->id, h->token, &r, &err) == HF_OK, "%s", err.message);
	hf_hold_free(r);
	for (int i = 0; i < 5; i++)
		flush_code(ports[i]);
	CHECK(lock(st, "D", 10000, 0, &h2, &err) == HF_OK, "after SCRIPT FLUSH: %s", err.message);
	CHECK(h2->parts[0].fence > h->parts[0].fence, "fence %lld after %lld",
	      (long long)h2->parts[0].fence, (long long)h->parts[0].fence);
	CHECK(hf_release(st, h2->id, h2->token, &r, &err) == HF_OK, "%s", err.message);
	hf_hold_free(r);
	for (int i = 0; i < 5; i++) {
		char v[64];
		get_on(ports[i], "D", v, sizeof(v));
		CHECK(v[0] == '\0', "master %d still has '%s' after release", i, v);
	}
	printf("counters apart: the highest was written back; scripts flushed: EVAL again\n");
	hf_hold_free(h);
	hf_hold_free(h2);
}

/* ---- redlock: faults ---- */

static void redlock_faults(hf_store *st)
{
	hf_error err;
	hf_hold *h = NULL, *r = NULL;
	kill_server(ports[0]);
	kill_server(ports[1]);
	int64_t last = 0;
	for (int i = 0; i < 5; i++) {
		CHECK(lock(st, "K", 5000, 0, &h, &err) == HF_OK, "two masters down, try %d: %s", i,
		      err.message);
		CHECK(h->parts[0].fence > last, "fence %lld after %lld", (long long)h->parts[0].fence,
		      (long long)last);
		last = h->parts[0].fence;
		CHECK(lock(st, "K", 5000, 0, NULL, &err) == HF_EUNAVAILABLE, "%s", err.message);
		CHECK(hf_release(st, h->id, h->token, &r, &err) == HF_OK, "%s", err.message);
		hf_hold_free(r);
		hf_hold_free(h);
	}
	printf("two of five masters down: locks still work\n");
	kill_server(ports[2]);
	for (int i = 0; i < 5; i++) {
		int rc = lock(st, "K2", 5000, 0, &h, &err);
		CHECK(rc != HF_OK, "three masters down, but the acquire succeeded");
		CHECK(rc == HF_EENGINE, "three down: %s %s", hf_err_name(rc), err.message);
	}
	printf("three of five masters down, fails closed: %s\n", err.message);
	int64_t t0 = hf_now_ms();
	int rc = lock(st, "K2", 5000, 600, &h, &err);
	CHECK(rc == HF_EENGINE, "three down with a wait: %s %s", hf_err_name(rc), err.message);
	CHECK(hf_now_ms() - t0 >= 350, "gave up after %lld ms of a 600 ms wait",
	      (long long)(hf_now_ms() - t0));
	for (int i = 0; i < 3; i++)
		start_server(ports[i]);
	sleep_ms(300); /* past the engine's reconnect back-off */
	CHECK(lock(st, "K", 5000, 2000, &h, &err) == HF_OK, "after restarts: %s", err.message);
	/* Masters 3 and 4 kept their counters; the restarted ones forgot theirs (no persistence):
	 * the fence still rises because every answering master is read. */
	CHECK(h->parts[0].fence > last, "fence %lld after %lld across restarts",
	      (long long)h->parts[0].fence, (long long)last);
	CHECK(hf_release(st, h->id, h->token, &r, &err) == HF_OK, "%s", err.message);
	hf_hold_free(r);
	hf_hold_free(h);
	printf("masters restarted: locks work again\n");
}

/* ---- redis:// across a restart ---- */

struct waitarg {
	hf_store *st;
	int rc;
	hf_error err;
};

static void *wait_thread(void *arg)
{
	struct waitarg *w = arg;
	w->rc = lock(w->st, "W", 60000, 60000, NULL, &w->err);
	return NULL;
}

static void redis_reconnect(void)
{
	char url[128];
	snprintf(url, sizeof(url), "redis://127.0.0.1:%d?prefix=fault:", ports[4]);
	hf_store *st = NULL;
	hf_error err;
	CHECK(hf_open(url, NULL, &st, &err) == HF_OK, "%s", err.message);
	hf_hold *h = NULL;
	CHECK(lock(st, "R", 60000, 0, &h, &err) == HF_OK, "%s", err.message);
	hf_hold_free(h);
	kill_server(ports[4]);
	int rc = lock(st, "R2", 60000, 0, NULL, &err);
	CHECK(rc == HF_EENGINE, "with redis down: %s %s", hf_err_name(rc), err.message);
	printf("redis down: %s\n", err.message);
	start_server(ports[4]);
	int64_t until = hf_now_ms() + 10000;
	do {
		rc = lock(st, "R3", 60000, 0, &h, &err);
		if (rc != HF_OK)
			sleep_ms(50);
	} while (rc != HF_OK && hf_now_ms() < until);
	CHECK(rc == HF_OK, "no reconnect after a restart: %s", err.message);
	hf_hold_free(h);
	printf("redis restarted: the engine reconnected\n");
	/* a wait parked across a restart ends (its record is gone), it does not hang */
	CHECK(lock(st, "W", 60000, 0, &h, &err) == HF_OK, "%s", err.message);
	hf_hold_free(h);
	struct waitarg wa = {.st = st, .rc = 1};
	pthread_t t;
	pthread_create(&t, NULL, wait_thread, &wa);
	sleep_ms(300);
	kill_server(ports[4]);
	start_server(ports[4]);
	pthread_join(t, NULL);
	CHECK(wa.rc == HF_EENGINE, "a wait across a restart: %s %s", hf_err_name(wa.rc),
	      wa.err.message);
	printf("a wait across a restart ends: %s\n", wa.err.message);
	hf_close(st);
}

/* ---- redis:// when the server loses its code ---- */

/* How many libraries FUNCTION LIST shows whose name matches holdfast_*. */
static long holdfast_libraries(int port)
{
	redisContext *c = conn(port);
	if (!c)
		return -1;
	long n = 0;
	redisReply *r = redisCommand(c, "FUNCTION LIST LIBRARYNAME holdfast_*");
	if (r && r->type == REDIS_REPLY_ARRAY)
		n = (long)r->elements;
	if (r)
		freeReplyObject(r);
	redisFree(c);
	return n;
}

static void flush_code(int port)
{
	redisContext *c = conn(port);
	if (!c)
		return;
	redisReply *r = redisCommand(c, "FUNCTION FLUSH");
	if (r)
		freeReplyObject(r);
	r = redisCommand(c, "SCRIPT FLUSH");
	if (r)
		freeReplyObject(r);
	redisFree(c);
}

static void redis_code_lost(void)
{
	char url[128];
	snprintf(url, sizeof(url), "redis://127.0.0.1:%d?prefix=code:", ports[4]);
	hf_store *st = NULL;
	hf_error err;
	CHECK(hf_open(url, NULL, &st, &err) == HF_OK, "%s", err.message);
	hf_hold *h = NULL;
	CHECK(lock(st, "C1", 60000, 0, &h, &err) == HF_OK, "%s", err.message);
	hf_hold_free(h);
	CHECK(holdfast_libraries(ports[4]) == 1, "the function library is not loaded (%ld)",
	      holdfast_libraries(ports[4]));
	flush_code(ports[4]);
	/* the call after the flush runs as EVAL of the script text; the library is loaded again */
	CHECK(lock(st, "C2", 60000, 0, &h, &err) == HF_OK, "after FUNCTION FLUSH: %s", err.message);
	hf_hold_free(h);
	CHECK(lock(st, "C3", 60000, 0, &h, &err) == HF_OK, "after the reload: %s", err.message);
	hf_hold_free(h);
	CHECK(holdfast_libraries(ports[4]) == 1, "the library was not loaded again (%ld)",
	      holdfast_libraries(ports[4]));
	CHECK(lock(st, "C1", 60000, 0, NULL, &err) == HF_EUNAVAILABLE, "C1 is held: %s",
	      err.message);
	printf("redis lost its code: calls went on, the library was loaded again\n");
	hf_close(st);
}

/* ---- redis://: calls run together in one script ---- */

struct batch_arg {
	hf_store *st;
	int n;
	atomic_int *errors;
};

static void *batch_thread(void *arg)
{
	struct batch_arg *a = arg;
	char name[32];
	snprintf(name, sizeof(name), "B%d", a->n);
	for (int i = 0; i < 40; i++) {
		hf_hold *h = NULL, *r = NULL;
		hf_error err;
		if (lock(a->st, name, 60000, 0, &h, &err) != HF_OK) {
			fprintf(stderr, "%s: %s\n", name, err.message);
			atomic_fetch_add(a->errors, 1);
			continue;
		}
		if (strcmp(h->parts[0].resource, name) != 0 ||
		    hf_release(a->st, h->id, h->token, &r, &err) != HF_OK) {
			fprintf(stderr, "%s: another's answer, or %s\n", name, err.message);
			atomic_fetch_add(a->errors, 1);
		}
		hf_hold_free(r);
		hf_hold_free(h);
	}
	return NULL;
}

/* Sixteen callers on one store: their calls go to Redis together (several in one script call
 * when they meet in one send). Each gets its own answer; a call whose Redis command fails (a
 * resource key of the wrong type) fails alone, with the reason, and the others go on. */
static void redis_batches(void)
{
	char url[128];
	snprintf(url, sizeof(url), "redis://127.0.0.1:%d?prefix=batch:", ports[4]);
	hf_store *st = NULL;
	hf_error err;
	CHECK(hf_open(url, NULL, &st, &err) == HF_OK, "%s", err.message);
	set_plain(ports[4], "batch:{bad}:r", "not a hash");
	static atomic_int errors;
	struct batch_arg args[16];
	pthread_t t[16];
	for (int i = 0; i < 16; i++) {
		args[i] = (struct batch_arg){.st = st, .n = i, .errors = &errors};
		pthread_create(&t[i], NULL, batch_thread, &args[i]);
	}
	int bad = 0;
	for (int i = 0; i < 20; i++) {
		int rc = lock(st, "bad", 60000, 0, NULL, &err);
		bad += rc == HF_EENGINE && strstr(err.message, "WRONGTYPE") != NULL;
		if (i == 0)
			printf("a call whose command fails: %s %s\n", hf_err_name(rc), err.message);
	}
	for (int i = 0; i < 16; i++)
		pthread_join(t[i], NULL);
	hf_close(st);
	CHECK(atomic_load(&errors) == 0, "%d calls beside the failing one went wrong",
	      atomic_load(&errors));
	CHECK(bad == 20, "%d of 20 calls on a key of the wrong type failed with its reason", bad);
	printf("16 callers at once: each its own answer; a failing call fails alone\n");
}

static void acl(int port, const char *rule)
{
	redisContext *c = conn(port);
	if (!c)
		return;
	redisReply *r = redisCommand(c, "ACL SETUSER default %s", rule);
	if (r)
		freeReplyObject(r);
	redisFree(c);
}

/* Where FUNCTION is refused (Redis 6 has none; here an ACL takes it away), the script form
 * runs by EVALSHA, and a SCRIPT FLUSH is survived by EVAL (NOSCRIPT). */
static void redis_script_form(void)
{
	char url[128];
	snprintf(url, sizeof(url), "redis://127.0.0.1:%d?prefix=script:", ports[4]);
	flush_code(ports[4]);
	acl(ports[4], "-function");
	hf_store *st = NULL;
	hf_error err;
	int rc = hf_open(url, NULL, &st, &err);
	if (rc != HF_OK)
		acl(ports[4], "+function");
	CHECK(rc == HF_OK, "%s", err.message);
	hf_hold *h = NULL;
	rc = lock(st, "S1", 60000, 0, &h, &err);
	hf_hold_free(h);
	flush_code(ports[4]);
	int rc2 = lock(st, "S2", 60000, 0, &h, &err);
	hf_hold_free(h);
	int rc3 = lock(st, "S1", 60000, 0, NULL, &err);
	hf_close(st);
	acl(ports[4], "+function");
	CHECK(rc == HF_OK, "by EVALSHA: %s", hf_err_name(rc));
	CHECK(rc2 == HF_OK, "after SCRIPT FLUSH: %s", hf_err_name(rc2));
	CHECK(rc3 == HF_EUNAVAILABLE, "S1 is held: %s", hf_err_name(rc3));
	CHECK(holdfast_libraries(ports[4]) == 0, "a library was loaded (%ld)",
	      holdfast_libraries(ports[4]));
	printf("without FUNCTION: the script form by EVALSHA, EVAL after SCRIPT FLUSH\n");
}

int main(void)
{
	const char *p = getenv("HF_REDIS_PORTS");
	dir = getenv("HF_REDIS_DIR");
	if (!p || !dir || sscanf(p, "%d %d %d %d %d", &ports[0], &ports[1], &ports[2], &ports[3],
	                         &ports[4]) != 5) {
		fprintf(stderr, "run me under with_redis.sh -n 5\n");
		return 2;
	}
	hf_store *st = open_redlock(5);
	if (!st)
		return 1;
	redlock_basics(st);
	if (!failures)
		redlock_lock_route(st);
	if (!failures)
		redlock_counters(st);
	if (!failures)
		redlock_exclusion();
	if (!failures)
		redlock_faults(st);
	hf_close(st);
	if (!failures)
		redis_reconnect();
	if (!failures)
		redis_code_lost();
	if (!failures)
		redis_script_form();
	if (!failures)
		redis_batches();
	printf(failures ? "FAILED\n" : "all fault checks passed\n");
	return failures ? 1 : 0;
}
