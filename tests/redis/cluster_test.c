/*
 * cluster_test.c — redis:// on a real Redis Cluster (with_cluster.sh: three masters, the URL
 * names one that does not own the slot of the prefix's tag {hf}). Checks: a prefix without a
 * hash tag and locks=plain are refused with HF_EINVAL; the slot of the store moved to another
 * master while the store is open — with a hold held and a waiter parked behind it, calls made
 * while the slot is half-moved (ASK), and after (MOVED); the parked waiter is granted after
 * the move (pub/sub wake-up); calls from threads running all through a second move all
 * succeed; the event sequence stays gap-free. Exits non-zero on the first failed check.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "holdfast.h"
#include "check.h"


static const char *url, *migrate;

static int run_migrate(const char *step)
{
	char cmd[1200];
	snprintf(cmd, sizeof(cmd), "%s %s", migrate, step);
	return system(cmd);
}

static int owner_port(void)
{
	char cmd[1200];
	snprintf(cmd, sizeof(cmd), "%s owner", migrate);
	FILE *f = popen(cmd, "r");
	int port = 0;
	if (f) {
		if (fscanf(f, "%d", &port) != 1)
			port = 0;
		pclose(f);
	}
	return port;
}

static int acquire(hf_store *s, const char *name, int64_t wait_ms, hf_hold **out, hf_error *err)
{
	hf_claim c = {.name = name, .capacity = 1};
	hf_acquire_req req = {.owner = "cluster-test", .claims = &c, .n_claims = 1, .ttl_ms = 30000,
	                      .wait_ms = wait_ms, .mode = HF_MODE_EXCLUSIVE};
	return hf_acquire(s, &req, out, err);
}

static void test_refusals(void)
{
	char bad[600];
	hf_store *s = NULL;
	hf_error err;
	/* The URL's prefix without a hash tag: the store would span slots. */
	const char *q = strchr(url, '?');
	snprintf(bad, sizeof(bad), "%.*s?prefix=hf:", (int)(q - url), url);
	int rc = hf_open(bad, NULL, &s, &err);
	CHECK(rc == HF_EINVAL && strstr(err.message, "hash tag"), "open %s: %d %s", bad, rc,
	      err.message);
	snprintf(bad, sizeof(bad), "%.*s?prefix=hf{}:", (int)(q - url), url);
	rc = hf_open(bad, NULL, &s, &err);
	CHECK(rc == HF_EINVAL, "open %s: %d %s", bad, rc, err.message);
	snprintf(bad, sizeof(bad), "%s&locks=plain", url);
	rc = hf_open(bad, NULL, &s, &err);
	CHECK(rc == HF_EINVAL && strstr(err.message, "plain"), "open %s: %d %s", bad, rc, err.message);
}

struct waiter_arg {
	hf_store *s;
	hf_hold *hold;
	int rc;
	char msg[300];
	atomic_bool done;
};

static void *waiter_main(void *p)
{
	struct waiter_arg *w = p;
	hf_error err = {0};
	w->rc = acquire(w->s, "moved", 20000, &w->hold, &err);
	snprintf(w->msg, sizeof(w->msg), "%s", err.message);
	atomic_store(&w->done, true);
	return NULL;
}

/* The event sequence from 1 is gap-free (and non-empty). */
static void check_events(hf_store *s)
{
	uint64_t after = 0, n = 0;
	for (;;) {
		hf_request q;
		hf_request_init(&q, HF_OP_READ_EVENTS);
		q.after = after;
		q.limit = 1000;
		hf_reply *r = NULL;
		int rc = hf_call(s, &q, &r);
		if (rc != HF_OK) {
			fprintf(stderr, "FAIL read_events: %d %s\n", rc, r->error.message);
			failures++;
			hf_reply_free(r);
			return;
		}
		for (size_t i = 0; i < r->n_events; i++) {
			if (r->events[i].seq != after + 1) {
				fprintf(stderr, "FAIL events: seq %llu after %llu\n",
				        (unsigned long long)r->events[i].seq, (unsigned long long)after);
				failures++;
				hf_reply_free(r);
				return;
			}
			after = r->events[i].seq;
			n++;
		}
		size_t got = r->n_events;
		hf_reply_free(r);
		if (got == 0)
			break;
	}
	CHECK(n > 0, "no events");
	fprintf(stderr, "cluster_test: %llu events, gap-free\n", (unsigned long long)n);
}

static void test_move_with_waiter(hf_store *s)
{
	hf_hold *a = NULL, *c = NULL, *d = NULL;
	hf_error err = {0};
	int before = owner_port();
	int rc = acquire(s, "moved", 0, &a, &err);
	CHECK(rc == HF_OK, "acquire A: %d %s", rc, err.message);
	struct waiter_arg w = {.s = s};
	pthread_t t;
	pthread_create(&t, NULL, waiter_main, &w);
	sleep_ms(300); /* parked */
	CHECK(!atomic_load(&w.done), "the waiter did not wait: %d %s", w.rc, w.msg);
	CHECK(run_migrate("start") == 0, "migrate start");
	/* Half moved: every key is on the new master, the old one answers ASK. */
	rc = acquire(s, "during-ask", 0, &c, &err);
	CHECK(rc == HF_OK, "acquire during ASK: %d %s", rc, err.message);
	CHECK(run_migrate("finish") == 0, "migrate finish");
	int after = owner_port();
	CHECK(before && after && before != after, "owner %d -> %d", before, after);
	/* The call made half-way went to the new master with ASKING. */
	char cmd[200];
	snprintf(cmd, sizeof(cmd), "redis-cli -p %d info commandstats | grep -q '^cmdstat_asking:'",
	         after);
	CHECK(system(cmd) == 0, "no ASKING reached %d", after);
	rc = acquire(s, "after-moved", 0, &d, &err);
	CHECK(rc == HF_OK, "acquire after MOVED: %d %s", rc, err.message);
	rc = hf_release(s, a->id, a->token, NULL, &err);
	CHECK(rc == HF_OK, "release A: %d %s", rc, err.message);
	for (int i = 0; i < 100 && !atomic_load(&w.done); i++)
		sleep_ms(50);
	CHECK(atomic_load(&w.done), "the waiter was not granted within 5 s of the release");
	pthread_join(t, NULL);
	CHECK(w.rc == HF_OK, "the waiter: %d %s", w.rc, w.msg);
	CHECK(w.hold->parts[0].fence > a->parts[0].fence, "fence %lld after %lld",
	      (long long)w.hold->parts[0].fence, (long long)a->parts[0].fence);
	hf_release(s, w.hold->id, w.hold->token, NULL, &err);
	hf_release(s, c->id, c->token, NULL, &err);
	hf_release(s, d->id, d->token, NULL, &err);
	hf_hold_free(a);
	hf_hold_free(c);
	hf_hold_free(d);
	hf_hold_free(w.hold);
	fprintf(stderr, "cluster_test: slot moved %d -> %d under a parked waiter: followed\n", before,
	        after);
}

struct loop_arg {
	hf_store *s;
	int id;
	atomic_bool *stop;
	int ok, failed;
	char first[300], last[300];
};

static void *loop_main(void *p)
{
	struct loop_arg *l = p;
	char name[32];
	snprintf(name, sizeof(name), "loop-%d", l->id);
	while (!atomic_load(l->stop)) {
		hf_hold *h = NULL;
		hf_error err = {0};
		int rc = acquire(l->s, name, 5000, &h, &err);
		if (rc == HF_OK)
			rc = hf_release(l->s, h->id, h->token, NULL, &err);
		if (rc == HF_OK) {
			l->ok++;
		} else {
			if (!l->failed++)
				snprintf(l->first, sizeof(l->first), "%d %s", rc, err.message);
			snprintf(l->last, sizeof(l->last), "%d %s", rc, err.message);
		}
		hf_hold_free(h);
	}
	return NULL;
}

static void test_move_under_load(hf_store *s)
{
	enum { N = 4 };
	atomic_bool stop = false;
	struct loop_arg l[N];
	pthread_t t[N];
	for (int i = 0; i < N; i++) {
		l[i] = (struct loop_arg){.s = s, .id = i, .stop = &stop};
		pthread_create(&t[i], NULL, loop_main, &l[i]);
	}
	sleep_ms(300);
	int moves_ok = run_migrate("") == 0;
	sleep_ms(300);
	moves_ok &= run_migrate("") == 0;
	sleep_ms(300);
	atomic_store(&stop, true);
	int ok = 0, failed = 0;
	for (int i = 0; i < N; i++) {
		pthread_join(t[i], NULL);
		ok += l[i].ok;
		failed += l[i].failed;
		if (l[i].failed)
			fprintf(stderr, "cluster_test: loop %d: %d failed, first: %s; last: %s\n", i,
			        l[i].failed, l[i].first, l[i].last);
	}
	fprintf(stderr, "cluster_test: under load, two moves: %d acquire+release ok, %d failed\n", ok,
	        failed);
	CHECK(moves_ok, "a migration failed");
	CHECK(ok > 0 && failed == 0, "%d calls failed during the moves", failed);
}

int main(void)
{
	url = getenv("HF_TEST_ENGINE_URL");
	migrate = getenv("HF_CLUSTER_MIGRATE");
	if (!url || !migrate || !strchr(url, '?')) {
		fprintf(stderr, "cluster_test: run me under tests/redis/with_cluster.sh\n");
		return 2;
	}
	test_refusals();
	hf_store *s = NULL;
	hf_error err = {0};
	int rc = hf_open(url, NULL, &s, &err);
	if (rc != HF_OK) {
		fprintf(stderr, "FAIL open %s: %d %s\n", url, rc, err.message);
		return 1;
	}
	test_move_with_waiter(s);
	if (!failures)
		test_move_under_load(s);
	check_events(s);
	hf_close(s);
	if (failures) {
		fprintf(stderr, "cluster_test: %d failure(s)\n", failures);
		return 1;
	}
	fprintf(stderr, "cluster_test: ok\n");
	return 0;
}
