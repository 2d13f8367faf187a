/*
 * plain_test.c — redis://...?locks=plain against a foreign Redlock-style client (raw hiredis
 * SET NX PX / owner-checked DEL, what every Redlock client sends): the key and value holdfast
 * writes, mutual exclusion both ways, FIFO among holdfast waiters blocked by a foreign key,
 * their wake-up by the safety re-check, readers, and a hold whose key was taken. Runs under
 * with_redis.sh (first port); exits non-zero on the first failed check.
 */
#include <hiredis/hiredis.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "holdfast.h"
#include "check.h"
#include "direct.h"

static int port;
static redisContext *rc_; /* the "foreign client" */

/* GET key: its value or "" when absent. */
static void get(const char *key, char *out, size_t n)
{
	redisReply *r = redisCommand(rc_, "GET %s", key);
	snprintf(out, n, "%s", r && r->type == REDIS_REPLY_STRING ? r->str : "");
	if (r)
		freeReplyObject(r);
}

static long long pttl(const char *key)
{
	redisReply *r = redisCommand(rc_, "PTTL %s", key);
	long long v = r && r->type == REDIS_REPLY_INTEGER ? r->integer : -99;
	if (r)
		freeReplyObject(r);
	return v;
}

/* The Redlock acquire: SET key value NX PX ttl. True if it got the lock. */
static bool foreign_lock(const char *key, const char *value, int ttl)
{
	redisReply *r = redisCommand(rc_, "SET %s %s NX PX %d", key, value, ttl);
	bool ok = r && r->type == REDIS_REPLY_STATUS;
	if (r)
		freeReplyObject(r);
	return ok;
}

/* The Redlock release: DEL only when the value is ours. */
static long long foreign_unlock(const char *key, const char *value)
{
	redisReply *r = redisCommand(rc_,
	                             "EVAL %s 1 %s %s",
	                             "if redis.call('get', KEYS[1]) == ARGV[1] then return "
	                             "redis.call('del', KEYS[1]) else return 0 end",
	                             key, value);
	long long v = r && r->type == REDIS_REPLY_INTEGER ? r->integer : -1;
	if (r)
		freeReplyObject(r);
	return v;
}

static int take(hf_store *st, const char *name, int64_t cap, hf_mode mode, int64_t ttl,
                int64_t wait, hf_hold **out, hf_error *err)
{
	hf_claim c = {.name = name, .units = 1, .capacity = cap};
	hf_acquire_req req = {.owner = "plain-test", .claims = &c, .n_claims = 1, .ttl_ms = ttl,
	                      .wait_ms = wait, .mode = mode};
	return hf_acquire(st, &req, out, err);
}

static void drop(hf_store *st, hf_hold *h)
{
	hf_error err;
	hf_hold *r = NULL;
	if (h && hf_release(st, h->id, h->token, &r, &err) != HF_OK)
		fprintf(stderr, "release %s: %s\n", h->id, err.message);
	hf_hold_free(r);
	hf_hold_free(h);
}

struct waiter {
	hf_store *st;
	const char *name;
	int rc;
	hf_hold *h;
	hf_error err;
	int64_t done_at;
};

static void *wait_thread(void *arg)
{
	struct waiter *w = arg;
	w->rc = take(w->st, w->name, 1, HF_MODE_EXCLUSIVE, 30000, 10000, &w->h, &w->err);
	w->done_at = hf_now_ms();
	return NULL;
}

static void wire_format(hf_store *st)
{
	hf_hold *h = NULL;
	hf_error err;
	char v[64];
	CHECK(take(st, "L", 1, HF_MODE_EXCLUSIVE, 5000, 0, &h, &err) == HF_OK, "%s", err.message);
	get("L", v, sizeof(v));
	CHECK(strcmp(v, h->token) == 0, "key L holds '%s', not the token %s", v, h->token);
	long long t = pttl("L");
	CHECK(t > 0 && t <= 5000, "PTTL %lld", t);
	CHECK(!foreign_lock("L", "0123456789abcdef0123456789abcdef", 5000), "foreign SET NX won");
	CHECK(foreign_unlock("L", "0123456789abcdef0123456789abcdef") == 0, "foreign DEL freed it");
	hf_hold *x = NULL;
	CHECK(hf_extend(st, h->id, h->token, 20000, &x, &err) == HF_OK, "%s", err.message);
	hf_hold_free(x);
	t = pttl("L");
	CHECK(t > 5000 && t <= 20000, "after extend PTTL %lld", t);
	CHECK(hf_confirm(st, h->id, h->token, &x, &err) == HF_OK, "%s", err.message);
	hf_hold_free(x);
	CHECK(pttl("L") == -1, "confirmed: PTTL %lld, want none", pttl("L"));
	drop(st, h);
	get("L", v, sizeof(v));
	CHECK(v[0] == '\0', "released: key L still '%s'", v);
	printf("ok: key = name, value = token, PX ttl, extend/confirm/release keep it in step\n");
}

static void foreign_blocks(hf_store *st)
{
	const char *fv = "f00df00df00df00df00df00df00df00d";
	hf_error err;
	CHECK(foreign_lock("F", fv, 30000), "foreign lock F");
	int rc = take(st, "F", 1, HF_MODE_EXCLUSIVE, 30000, 0, NULL, &err);
	CHECK(rc == HF_EUNAVAILABLE && strstr(err.message, "another client"), "%s %s",
	      hf_err_name(rc), err.message);
	printf("ok: a foreign lock is refused to holdfast: %s\n", err.message);
	/* Two holdfast waiters queue behind it, FIFO. */
	struct waiter w1 = {.st = st, .name = "F"}, w2 = {.st = st, .name = "F"};
	pthread_t t1, t2;
	pthread_create(&t1, NULL, wait_thread, &w1);
	sleep_ms(200);
	pthread_create(&t2, NULL, wait_thread, &w2);
	sleep_ms(200);
	rc = take(st, "F", 1, HF_MODE_EXCLUSIVE, 30000, 0, NULL, &err);
	CHECK(rc == HF_EUNAVAILABLE, "newcomer barged: %s", hf_err_name(rc));
	int64_t freed = hf_now_ms();
	CHECK(foreign_unlock("F", fv) == 1, "foreign release");
	pthread_join(t1, NULL);
	CHECK(w1.rc == HF_OK, "first waiter: %s %s", hf_err_name(w1.rc), w1.err.message);
	int64_t lag = w1.done_at - freed;
	CHECK(lag < 2500, "first waiter granted %lld ms after the foreign release", (long long)lag);
	char v[64];
	get("F", v, sizeof(v));
	CHECK(strcmp(v, w1.h->token) == 0, "F holds '%s', not waiter 1's token", v);
	CHECK(!foreign_lock("F", fv, 30000), "foreign got F while waiter 1 holds it");
	printf("ok: after the foreign release, the first holdfast waiter got it in %lld ms "
	       "(the safety re-check: foreign clients wake no one)\n", (long long)lag);
	int64_t fence1 = w1.h->parts[0].fence;
	int64_t rel = hf_now_ms();
	drop(st, w1.h);
	pthread_join(t2, NULL);
	CHECK(w2.rc == HF_OK, "second waiter: %s %s", hf_err_name(w2.rc), w2.err.message);
	CHECK(w2.done_at - rel < 1000, "second waiter took %lld ms after a holdfast release",
	      (long long)(w2.done_at - rel));
	CHECK(w2.h->parts[0].fence > fence1, "fences %lld then %lld", (long long)fence1,
	      (long long)w2.h->parts[0].fence);
	get("F", v, sizeof(v));
	CHECK(strcmp(v, w2.h->token) == 0, "F holds '%s', not waiter 2's token", v);
	printf("ok: FIFO among holdfast waiters, pub/sub wake-up in %lld ms, fences %lld < %lld\n",
	       (long long)(w2.done_at - rel), (long long)fence1, (long long)w2.h->parts[0].fence);
	drop(st, w2.h);
	get("F", v, sizeof(v));
	CHECK(v[0] == '\0', "F still set: '%s'", v);
	/* A foreign lock that just expires (PX) also lets the waiter in. */
	CHECK(foreign_lock("E", fv, 300), "foreign lock E");
	struct waiter w3 = {.st = st, .name = "E"};
	int64_t t0 = hf_now_ms();
	pthread_create(&t1, NULL, wait_thread, &w3);
	pthread_join(t1, NULL);
	CHECK(w3.rc == HF_OK, "waiter on an expiring foreign lock: %s", w3.err.message);
	printf("ok: a waiter behind a foreign lock with 300 ms left got it after %lld ms\n",
	       (long long)(w3.done_at - t0));
	drop(st, w3.h);
}

static void readers(hf_store *st)
{
	/* holdfastd's /v1/locks/KEY: resource lock:KEY, capacity 65536, readers take 1. */
	hf_hold *r1 = NULL, *r2 = NULL, *wr = NULL;
	hf_error err;
	char v[64];
	CHECK(take(st, "lock:rw", 65536, HF_MODE_SHARED, 5000, 0, &r1, &err) == HF_OK, "%s", err.message);
	CHECK(take(st, "lock:rw", 65536, HF_MODE_SHARED, 20000, 0, &r2, &err) == HF_OK, "%s", err.message);
	get("lock:rw", v, sizeof(v));
	CHECK(strcmp(v, r1->token) == 0, "lock:rw holds '%s', not the first reader's token", v);
	CHECK(pttl("lock:rw") > 5000, "the key covers the later lease: %lld", pttl("lock:rw"));
	CHECK(!foreign_lock("lock:rw", "x", 1000), "foreign got a lock with readers in");
	drop(st, r1);
	get("lock:rw", v, sizeof(v));
	CHECK(v[0] != '\0', "the key went with the first reader while another reads");
	CHECK(take(st, "lock:rw", 65536, HF_MODE_EXCLUSIVE, 5000, 0, &wr, &err) == HF_EUNAVAILABLE,
	      "writer with a reader in");
	drop(st, r2);
	get("lock:rw", v, sizeof(v));
	CHECK(v[0] == '\0', "last reader out: key still '%s'", v);
	CHECK(take(st, "lock:rw", 65536, HF_MODE_EXCLUSIVE, 5000, 0, &wr, &err) == HF_OK, "%s", err.message);
	get("lock:rw", v, sizeof(v));
	CHECK(strcmp(v, wr->token) == 0, "writer's token");
	drop(st, wr);
	printf("ok: readers share one key (the first reader's token) until the last one leaves\n");
}

static void key_taken(hf_store *st)
{
	hf_hold *h = NULL, *x = NULL;
	hf_error err;
	CHECK(take(st, "K", 1, HF_MODE_EXCLUSIVE, 30000, 0, &h, &err) == HF_OK, "%s", err.message);
	/* Someone deletes our key regardless of its value (or Redis evicts it) and locks. */
	DIRECT(rc_, "DEL K");
	CHECK(foreign_lock("K", "beefbeefbeefbeefbeefbeefbeefbeef", 30000), "foreign lock K");
	int rc = hf_extend(st, h->id, h->token, 30000, &x, &err);
	CHECK(rc == HF_EENDED, "extend of a hold whose key was taken: %s %s", hf_err_name(rc),
	      err.message);
	printf("ok: a hold whose key another client took is lost on its next extend: %s\n", err.message);
	char v[64];
	get("K", v, sizeof(v));
	CHECK(strcmp(v, "beefbeefbeefbeefbeefbeefbeefbeef") == 0, "the foreign value was touched");
	hf_hold_free(h);
	/* A key of another type under the name is someone else's, not a script error. */
	DIRECT(rc_, "HSET H f v");
	rc = take(st, "H", 1, HF_MODE_EXCLUSIVE, 30000, 0, NULL, &err);
	CHECK(rc == HF_EUNAVAILABLE, "a hash named H: %s %s", hf_err_name(rc), err.message);
	printf("ok: a key of another type under the name counts as another client's lock\n");
}

int main(void)
{
	hf_store *st = NULL;
	int rc = open_direct("prefix=pt:&locks=plain", &port, &rc_, &st);
	if (rc)
		return rc;
	wire_format(st);
	if (!failures)
		foreign_blocks(st);
	if (!failures)
		readers(st);
	if (!failures)
		key_taken(st);
	hf_close(st);
	redisFree(rc_);
	printf(failures ? "FAILED\n" : "all plain-lock checks passed\n");
	return failures ? 1 : 0;
}
