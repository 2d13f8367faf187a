/*
 * replay_test.c — event sourcing on every engine (HF_TEST_ENGINE_URL, as the conformance
 * suite): a random workload, then the state folded from the events alone must equal the live
 * state read through the API (src/relay/fold.c, what `holdfast replay` runs).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "harness.h"
#include "relay.h"

#define LIVE_MAX 64

struct live {
	hf_hold *h[LIVE_MAX];
	size_t n;
};

static void drop(struct live *l, size_t i)
{
	hf_hold_free(l->h[i]);
	l->h[i] = l->h[--l->n];
}

/* Claims like "d1:2,i0:1@4": declared d0..d5, implicit i0..i3 of capacity 4. */
static void random_claims(uint64_t *s, char *spec, size_t size)
{
	size_t n = 1 + ht_rand(s) % 3, used = 0;
	bool taken[10] = {false};
	spec[0] = '\0';
	for (size_t k = 0; k < n; k++) {
		unsigned r = (unsigned)(ht_rand(s) % 10);
		if (taken[r])
			continue;
		taken[r] = true;
		used += (size_t)snprintf(spec + used, size - used, "%s%c%u:%u%s", used ? "," : "",
		                         r < 6 ? 'd' : 'i', r < 6 ? r : r - 6,
		                         (unsigned)(1 + ht_rand(s) % 2), r < 6 ? "" : "@4");
	}
}

static void step_acquire(hf_store *st, uint64_t *s, struct live *l)
{
	static const char *const owners[] = {"alice", "bob", "carol", "dave"};
	static const hf_mode modes[] = {HF_MODE_UNITS, HF_MODE_UNITS, HF_MODE_SHARED,
	                                HF_MODE_EXCLUSIVE};
	char spec[128];
	random_claims(s, spec, sizeof(spec));
	/* A few short leases, left to expire, so hold.expired is folded too. */
	ht_acq o = {.owner = owners[ht_rand(s) % 4], .mode = modes[ht_rand(s) % 4],
	            .ttl_ms = ht_rand(s) % 8 == 0 ? 50 : 600000, .any = ht_rand(s) % 5 == 0};
	hf_hold *h = NULL;
	if (ht_acquire(st, spec, &o, &h) == HF_OK && l->n < LIVE_MAX)
		l->h[l->n++] = h;
	else
		hf_hold_free(h);
}

static void step_resource(hf_store *st, uint64_t *s)
{
	char name[8], meta[32];
	snprintf(name, sizeof(name), "d%u", (unsigned)(ht_rand(s) % 6));
	if (ht_rand(s) % 4 == 0) {
		hf_reply_free(ht_delete(st, name, -1));
		return;
	}
	snprintf(meta, sizeof(meta), "{\"n\":%u}", (unsigned)(ht_rand(s) % 100));
	ht_put_rc(st, name, (int64_t)(1 + ht_rand(s) % 5), ht_rand(s) % 2 ? meta : NULL, -1);
}

static void step_hold(hf_store *st, uint64_t *s, struct live *l)
{
	if (l->n == 0)
		return;
	size_t i = ht_rand(s) % l->n;
	hf_hold *h = l->h[i];
	switch (ht_rand(s) % 3) {
	case 0:
		hf_reply_free(ht_hold_op(st, HF_OP_EXTEND, h->id, h->token, 600000));
		break;
	case 1:
		ht_confirm_rc(st, h);
		break;
	default:
		ht_release_rc(st, h);
		drop(l, i);
	}
}

static void random_workload(hf_store *st, uint64_t seed, int steps)
{
	uint64_t s = seed;
	struct live l = {.n = 0};
	for (int i = 0; i < 6; i++) {
		char name[8];
		snprintf(name, sizeof(name), "d%d", i);
		int rc = ht_put_rc(st, name, 3, NULL, 0); /* a second workload finds them */
		assert_true(rc == HF_OK || rc == HF_EVERSION);
	}
	for (int i = 0; i < steps; i++) {
		unsigned op = (unsigned)(ht_rand(&s) % 10);
		if (op < 5)
			step_acquire(st, &s, &l);
		else if (op < 7)
			step_resource(st, &s);
		else
			step_hold(st, &s, &l);
	}
	while (l.n)
		drop(&l, 0);
}

/* Waits for the short leases to end (the engine's own expiry writes hold.expired). */
static void let_short_leases_expire(void)
{
	ht_sleep_ms(400);
}

static void test_replay_equals_live(void **state)
{
	(void)state;
	ht_env *env = ht_env_new(false);
	assert_non_null(env);
	hf_error err = {0};
	assert_int_equal(ht_env_open(env, &err), HF_OK);
	uint64_t seed = ht_seed();
	random_workload(env->st, seed, 400);
	let_short_leases_expire();

	struct relay_fold f;
	assert_int_equal(relay_fold_init(&f), HF_OK);
	size_t diffs = 99;
	int rc = relay_replay_check(env->st, &f, &diffs, stderr, &err);
	if (rc != HF_OK)
		fail_msg("replay: %s", err.message);
	if (diffs)
		fail_msg("seed %llu: %zu differences between the events and the live state",
		         (unsigned long long)seed, diffs);
	fprintf(stderr, "%llu events, %zu resources, %zu live holds\n", (unsigned long long)f.events,
	        json_object_size(f.resources), json_object_size(f.holds));
	assert_true(f.events > 100);
	assert_true(json_object_size(f.resources) >= 1);
	assert_int_equal(f.unknown, 0);
	assert_int_equal(f.orphans, 0);

	/* The comparison is not vacuous: a changed fold differs. */
	json_t *res, *holds;
	assert_int_equal(relay_live_state(env->st, &res, &holds, &err), HF_OK);
	json_t *d0 = json_object_get(f.resources, "d0");
	if (d0) {
		json_object_set_new(d0, "version", json_integer(12345));
		assert_int_equal(relay_fold_diff(&f, res, holds, NULL), 1);
	}
	json_object_set_new(f.resources, "ghost", json_object());
	assert_int_equal(relay_fold_diff(&f, res, holds, NULL), d0 ? 2 : 1);
	json_decref(res);
	json_decref(holds);
	relay_fold_free(&f);
	ht_env_free(env);
}

/* Events folded in two pieces give the same state as in one (a projection that resumes). */
static void test_fold_resumes(void **state)
{
	(void)state;
	ht_env *env = ht_env_new(false);
	assert_non_null(env);
	hf_error err = {0};
	assert_int_equal(ht_env_open(env, &err), HF_OK);
	random_workload(env->st, ht_seed() + 1, 150);
	struct relay_fold whole, parts;
	assert_int_equal(relay_fold_init(&whole), HF_OK);
	assert_int_equal(relay_fold_init(&parts), HF_OK);
	assert_int_equal(relay_fold_read(env->st, &whole, 0, &err), HF_OK);
	assert_int_equal(relay_fold_read(env->st, &parts, 7, &err), HF_OK);
	assert_true(parts.seq < whole.seq);
	/* A short lease may expire meanwhile: read both to the end until they meet. */
	for (int i = 0; i < 20 && (i == 0 || parts.seq != whole.seq); i++) {
		assert_int_equal(relay_fold_read(env->st, &parts, 0, &err), HF_OK);
		assert_int_equal(relay_fold_read(env->st, &whole, 0, &err), HF_OK);
	}
	assert_int_equal(parts.seq, whole.seq);
	assert_true(json_equal(parts.resources, whole.resources));
	assert_true(json_equal(parts.holds, whole.holds));
	assert_true(json_equal(parts.revisions, whole.revisions));
	relay_fold_free(&whole);
	relay_fold_free(&parts);
	ht_env_free(env);
}

/* A projection file: fresh under the test's own directory. */
static void projection_path(char *buf, size_t size, const char *tag)
{
	snprintf(buf, size, "%s/hf-projection-%s-%d.db", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp",
	         tag, (int)getpid());
	unlink(buf);
}

/* The read models equal the live state and a fresh fold; caught up in pieces they equal a
 * rebuild from zero. */
static void test_projection(void **state)
{
	(void)state;
	ht_env *env = ht_env_new(false);
	assert_non_null(env);
	hf_error err = {0};
	assert_int_equal(ht_env_open(env, &err), HF_OK);
	random_workload(env->st, ht_seed() + 2, 120);
	char path[512];
	projection_path(path, sizeof(path), "a");
	struct relay_project *p = NULL;
	assert_int_equal(relay_project_open(path, false, &p, &err), HF_OK);
	assert_int_equal(relay_project_sync(p, env->st, 0, NULL, &err), HF_OK);
	random_workload(env->st, ht_seed() + 3, 120);
	let_short_leases_expire();
	assert_int_equal(relay_project_publish(p, "t", &err), HF_OK);
	assert_int_equal(relay_project_sync(p, env->st, 0, NULL, &err), HF_OK);
	/* Its position is published where retention reads checkpoints. */
	hf_reply *cp = ht_get(env->st, "holdfast.relay/projection.t/checkpoint");
	assert_int_equal(cp->error.code, HF_OK);
	json_t *cpm = json_loads(cp->resource->meta, 0, NULL);
	assert_true(json_integer_value(json_object_get(cpm, "seq")) > 0);
	assert_true((uint64_t)json_integer_value(json_object_get(cpm, "seq")) <= relay_project_seq(p));
	json_decref(cpm);
	hf_reply_free(cp);
	relay_project_close(p);

	/* Reopened from its file, then compared with the live state at a quiet moment. */
	struct relay_fold f;
	assert_int_equal(relay_fold_init(&f), HF_OK);
	size_t diffs = 99;
	assert_int_equal(relay_replay_check(env->st, &f, &diffs, stderr, &err), HF_OK);
	assert_int_equal(diffs, 0);
	assert_int_equal(relay_project_open(path, false, &p, &err), HF_OK);
	assert_int_equal(relay_project_sync(p, env->st, 0, NULL, &err), HF_OK);
	assert_int_equal(relay_project_seq(p), f.seq);
	hf_reply *rp = ht_get(env->st, "d1");
	json_t *v = NULL;
	if (rp->error.code == HF_OK) {
		assert_int_equal(relay_project_availability(p, "d1", &v, &err), HF_OK);
		assert_int_equal(json_integer_value(json_object_get(v, "held")), rp->resource->held);
		assert_int_equal(json_integer_value(json_object_get(v, "free")),
		                 rp->resource->capacity - rp->resource->held);
		assert_int_equal(json_integer_value(json_object_get(json_object_get(v, "position"), "seq")),
		                 f.seq);
		json_decref(v);
	}
	hf_reply_free(rp);
	hf_request rq;
	hf_request_init(&rq, HF_OP_LIST_HOLDS);
	rq.owner = "alice";
	rq.state = HF_HOLD_TENTATIVE;
	assert_int_equal(hf_call(env->st, &rq, &rp), HF_OK);
	size_t tentative = rp->n_holds;
	hf_reply_free(rp);
	rq.state = HF_HOLD_CONFIRMED;
	assert_int_equal(hf_call(env->st, &rq, &rp), HF_OK);
	assert_int_equal(relay_project_owner(p, "alice", &v, &err), HF_OK);
	assert_int_equal(json_array_size(json_object_get(v, "holds")), tentative + rp->n_holds);
	hf_reply_free(rp);
	json_decref(v);
	relay_project_close(p);

	/* Rebuilt from zero: the same rows. */
	char path2[512];
	projection_path(path2, sizeof(path2), "b");
	assert_int_equal(relay_project_open(path2, true, &p, &err), HF_OK);
	assert_int_equal(relay_project_sync(p, env->st, 0, NULL, &err), HF_OK);
	assert_int_equal(relay_project_seq(p), f.seq);
	relay_project_close(p);
	struct relay_project *a = NULL, *b = NULL;
	assert_int_equal(relay_project_open(path, false, &a, &err), HF_OK);
	assert_int_equal(relay_project_open(path2, false, &b, &err), HF_OK);
	for (int i = 0; i < 6; i++) {
		char name[8];
		snprintf(name, sizeof(name), "d%d", i);
		json_t *va = NULL, *vb = NULL;
		int ra = relay_project_availability(a, name, &va, &err);
		assert_int_equal(ra, relay_project_availability(b, name, &vb, &err));
		assert_true(ra != HF_OK || json_equal(va, vb));
		json_decref(va);
		json_decref(vb);
	}
	relay_project_close(a);
	relay_project_close(b);
	relay_fold_free(&f);
	unlink(path);
	unlink(path2);
	ht_env_free(env);
}

/* Cache-aside on Redis (with_redis.sh's server): a miss reads the projection and sets the
 * key, the next read hits, and an event for the resource deletes the key. */
static void test_cache_aside(void **state)
{
	(void)state;
	const char *ports = getenv("HF_REDIS_PORTS");
	if (!ports || !*ports)
		skip();
	char url[64];
	snprintf(url, sizeof(url), "redis://127.0.0.1:%d", atoi(ports));
	ht_env *env = ht_env_new(false);
	assert_non_null(env);
	hf_error err = {0};
	assert_int_equal(ht_env_open(env, &err), HF_OK);
	assert_int_equal(ht_put_rc(env->st, "room", 5, NULL, -1), HF_OK);
	char path[512];
	projection_path(path, sizeof(path), "c");
	struct relay_project *p = NULL;
	assert_int_equal(relay_project_open(path, false, &p, &err), HF_OK);
	assert_int_equal(relay_project_cache(p, url, 60000, &err), HF_OK);
	assert_int_equal(relay_project_sync(p, env->st, 0, NULL, &err), HF_OK);
	char *json = NULL;
	bool hit = true;
	assert_int_equal(relay_project_cached(p, "availability", "room", &json, &hit, &err), HF_OK);
	assert_false(hit);
	assert_non_null(strstr(json, "\"held\":0"));
	free(json);
	assert_int_equal(relay_project_cached(p, "availability", "room", &json, &hit, &err), HF_OK);
	assert_true(hit);
	free(json);
	ht_acq o = {.owner = "alice", .ttl_ms = 600000};
	hf_hold *h = NULL;
	assert_int_equal(ht_acquire(env->st, "room:2", &o, &h), HF_OK);
	assert_int_equal(relay_project_cached(p, "owner", "alice", &json, &hit, &err), HF_OK);
	assert_false(hit);
	free(json);
	/* Not yet projected: the cache still answers the old view (within its TTL). */
	assert_int_equal(relay_project_cached(p, "availability", "room", &json, &hit, &err), HF_OK);
	assert_true(hit);
	assert_non_null(strstr(json, "\"held\":0"));
	free(json);
	assert_int_equal(relay_project_sync(p, env->st, 0, NULL, &err), HF_OK);
	assert_int_equal(relay_project_cached(p, "availability", "room", &json, &hit, &err), HF_OK);
	assert_false(hit);
	assert_non_null(strstr(json, "\"held\":2"));
	free(json);
	assert_int_equal(relay_project_cached(p, "owner", "alice", &json, &hit, &err), HF_OK);
	assert_false(hit);
	assert_non_null(strstr(json, h->id));
	free(json);
	hf_hold_free(h);
	relay_project_close(p);
	unlink(path);
	ht_env_free(env);
}

/* Retention on every engine: retention_test.c. */

int main(void)
{
	ht_apply_filter();
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_replay_equals_live),
	    cmocka_unit_test(test_fold_resumes),
	    cmocka_unit_test(test_projection),
	    cmocka_unit_test(test_cache_aside),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
