/*
 * harness.c — fresh stores per test, the injected clock and short forms of calls for the
 * engine conformance, model and crash tests. See harness.h.
 */
#include "harness.h"

#include <dirent.h>
#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

static int64_t ht_clock_fn(void *ctx)
{
	ht_env *env = ctx;
	return atomic_load(&env->now);
}

/* Removes every file in dir, then dir. */
static void remove_dir(const char *dir)
{
	DIR *d = opendir(dir);
	if (d) {
		struct dirent *de;
		char p[1024];
		while ((de = readdir(d)) != NULL) {
			if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
				continue;
			snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
			unlink(p);
		}
		closedir(d);
	}
	rmdir(dir);
}

ht_env *ht_env_new(bool fake_clock)
{
	ht_env *env = calloc(1, sizeof *env);
	if (!env)
		return NULL;
	const char *u = getenv("HF_TEST_ENGINE_URL");
	if (!u || !*u)
		u = "file:";
	snprintf(env->engine_url, sizeof env->engine_url, "%s", u);
	const char *colon = strchr(u, ':');
	size_t sl = colon ? (size_t)(colon - u) : strlen(u);
	if (sl >= sizeof env->scheme)
		sl = sizeof env->scheme - 1;
	memcpy(env->scheme, u, sl);
	env->scheme[sl] = '\0';
	env->is_file = strcmp(env->scheme, "file") == 0;
	hf_options_init(&env->opt);
	env->fake_clock = fake_clock;
	atomic_store(&env->now, HT_T0);
	if (fake_clock) {
		env->opt.clock = ht_clock_fn;
		env->opt.clock_ctx = env;
	}
	if (env->is_file) {
		const char *base = colon && colon[1] ? colon + 1 : getenv("TMPDIR");
		if (!base || !*base)
			base = "/tmp";
		snprintf(env->dir, sizeof env->dir, "%s/hftest-XXXXXX", base);
		if (!mkdtemp(env->dir)) {
			fprintf(stderr, "harness: mkdtemp %s: %s\n", env->dir, strerror(errno));
			free(env);
			return NULL;
		}
		snprintf(env->path, sizeof env->path, "%s/store.db", env->dir);
		snprintf(env->url, sizeof env->url, "file:%s", env->path);
	} else {
		snprintf(env->url, sizeof env->url, "%s", u);
		const char *reset = getenv("HF_TEST_ENGINE_RESET");
		if (reset && *reset && system(reset) != 0) {
			fprintf(stderr, "harness: reset hook failed: %s\n", reset);
			free(env);
			return NULL;
		}
	}
	return env;
}

int ht_env_open(ht_env *env, hf_error *err)
{
	hf_error e;
	if (!err)
		err = &e;
	env->st = NULL;
	int rc = hf_open(env->url, &env->opt, &env->st, err);
	if (rc != HF_OK)
		env->st = NULL;
	return rc;
}

void ht_env_close(ht_env *env)
{
	if (env && env->st) {
		hf_close(env->st);
		env->st = NULL;
	}
}

int ht_env_reopen(ht_env *env, hf_error *err)
{
	ht_env_close(env);
	return ht_env_open(env, err);
}

void ht_env_free(ht_env *env)
{
	if (!env)
		return;
	ht_env_close(env);
	if (env->is_file && env->dir[0] && !getenv("HF_TEST_KEEP"))
		remove_dir(env->dir);
	free(env);
}

bool ht_can_inject_clock(const ht_env *env)
{
	/* The engines that keep time elsewhere (postgres: the database's now()) cannot. */
	return env->is_file;
}

bool ht_can_reopen(const ht_env *env)
{
	return env->is_file;
}

int64_t ht_now(ht_env *env)
{
	return env->fake_clock ? atomic_load(&env->now) : hf_now_ms();
}

void ht_advance(ht_env *env, int64_t ms)
{
	atomic_fetch_add(&env->now, ms);
}

void ht_tick(ht_env *env)
{
	hf_store_tick(env->st);
}

/* ---- claims and acquires ---- */

void ht_claims_parse(ht_claims *cl, const char *spec)
{
	memset(cl, 0, sizeof *cl);
	const char *p = spec;
	while (p && *p && cl->n < HF_CLAIMS_MAX + 2) {
		const char *end = strchr(p, ',');
		size_t len = end ? (size_t)(end - p) : strlen(p);
		char item[HF_NAME_MAX + 64];
		if (len >= sizeof item)
			len = sizeof item - 1;
		memcpy(item, p, len);
		item[len] = '\0';
		int64_t units = 1, cap = 0;
		char *at = strrchr(item, '@');
		if (at) {
			cap = strtoll(at + 1, NULL, 10);
			*at = '\0';
		}
		char *colon = strrchr(item, ':');
		if (colon) {
			units = strtoll(colon + 1, NULL, 10);
			*colon = '\0';
		}
		size_t il = strlen(item);
		if (il >= sizeof cl->names[0])
			il = sizeof cl->names[0] - 1;
		memcpy(cl->names[cl->n], item, il);
		cl->names[cl->n][il] = '\0';
		cl->c[cl->n].name = cl->names[cl->n];
		cl->c[cl->n].units = units;
		cl->c[cl->n].capacity = cap;
		cl->n++;
		p = end ? end + 1 : NULL;
	}
}

void ht_acq_req(hf_acquire_req *req, ht_claims *cl, const char *spec, const ht_acq *o)
{
	static const ht_acq defaults = {0};
	if (!o)
		o = &defaults;
	ht_claims_parse(cl, spec);
	memset(req, 0, sizeof *req);
	req->owner = o->owner ? o->owner : "tester";
	req->claims = cl->c;
	req->n_claims = cl->n;
	req->ttl_ms = o->ttl_ms ? o->ttl_ms : 60000;
	req->wait_ms = o->wait_ms;
	req->mode = o->mode;
	req->any = o->any;
	req->idempotency_key = o->key;
}

int ht_acquire(hf_store *st, const char *spec, const ht_acq *o, hf_hold **out)
{
	ht_claims cl;
	hf_acquire_req req;
	ht_acq_req(&req, &cl, spec, o);
	hf_hold *h = NULL;
	hf_error err;
	int rc = hf_acquire(st, &req, &h, &err);
	if (rc != HF_OK && h) {
		hf_hold_free(h);
		h = NULL;
	}
	if (rc == HF_OK && !h)
		fprintf(stderr, "harness: hf_acquire returned HF_OK without a hold\n");
	if (out)
		*out = h;
	else
		hf_hold_free(h);
	return rc;
}

static hf_reply *call(hf_store *st, const hf_request *req)
{
	hf_reply *r = NULL;
	hf_call(st, req, &r);
	if (!r) {
		/* hf_call promises a reply; a missing one fails the test that looks at it. */
		fprintf(stderr, "harness: hf_call gave no reply (op %d)\n", (int)req->op);
		r = calloc(1, sizeof *r);
		r->error.code = HF_EINTERNAL;
	}
	return r;
}

hf_reply *ht_put(hf_store *st, const char *name, int64_t capacity, const char *meta,
                 int64_t if_version)
{
	hf_request q;
	hf_request_init(&q, HF_OP_PUT_RESOURCE);
	q.name = name;
	q.capacity = capacity;
	q.meta = meta;
	q.if_version = if_version;
	return call(st, &q);
}

hf_reply *ht_get(hf_store *st, const char *name)
{
	hf_request q;
	hf_request_init(&q, HF_OP_GET_RESOURCE);
	q.name = name;
	return call(st, &q);
}

hf_reply *ht_delete(hf_store *st, const char *name, int64_t if_version)
{
	hf_request q;
	hf_request_init(&q, HF_OP_DELETE_RESOURCE);
	q.name = name;
	q.if_version = if_version;
	return call(st, &q);
}

hf_reply *ht_get_hold(hf_store *st, const char *id)
{
	hf_request q;
	hf_request_init(&q, HF_OP_GET_HOLD);
	q.hold_id = id;
	return call(st, &q);
}

hf_reply *ht_events(hf_store *st, uint64_t after, size_t limit)
{
	hf_request q;
	hf_request_init(&q, HF_OP_READ_EVENTS);
	q.after = after;
	q.limit = limit;
	return call(st, &q);
}

hf_reply *ht_hold_op(hf_store *st, hf_op op, const char *id, const char *token, int64_t ttl)
{
	hf_request q;
	hf_request_init(&q, op);
	q.hold_id = id;
	q.token = token;
	q.ttl_ms = ttl;
	return call(st, &q);
}

int ht_put_rc(hf_store *st, const char *name, int64_t capacity, const char *meta,
              int64_t if_version)
{
	hf_reply *r = ht_put(st, name, capacity, meta, if_version);
	int rc = r->error.code;
	hf_reply_free(r);
	return rc;
}

int ht_release_rc(hf_store *st, const hf_hold *h)
{
	hf_reply *r = ht_hold_op(st, HF_OP_RELEASE, h->id, h->token, 0);
	int rc = r->error.code;
	hf_reply_free(r);
	return rc;
}

int ht_confirm_rc(hf_store *st, const hf_hold *h)
{
	hf_reply *r = ht_hold_op(st, HF_OP_CONFIRM, h->id, h->token, 0);
	int rc = r->error.code;
	hf_reply_free(r);
	return rc;
}

ht_res ht_res_get(hf_store *st, const char *name)
{
	ht_res v;
	memset(&v, 0, sizeof v);
	hf_reply *r = ht_get(st, name);
	v.rc = r->error.code;
	if (v.rc == HF_OK && r->resource) {
		v.capacity = r->resource->capacity;
		v.version = r->resource->version;
		v.held = r->resource->held;
		v.holds = r->resource->holds;
		v.waiters = r->resource->waiters;
		v.declared = r->resource->declared;
	} else if (v.rc == HF_OK) {
		v.rc = HF_EINTERNAL;
	}
	hf_reply_free(r);
	return v;
}

ht_hold_view ht_hold_get(hf_store *st, const char *id)
{
	ht_hold_view v;
	memset(&v, 0, sizeof v);
	hf_reply *r = ht_get_hold(st, id);
	v.rc = r->error.code;
	if (v.rc == HF_OK && r->hold) {
		v.state = r->hold->state;
		v.expires_at_ms = r->hold->expires_at_ms;
		v.ended_at_ms = r->hold->ended_at_ms;
		v.n_parts = r->hold->n_parts;
	} else if (v.rc == HF_OK) {
		v.rc = HF_EINTERNAL;
	}
	hf_reply_free(r);
	return v;
}

uint64_t ht_last_seq(hf_store *st)
{
	hf_reply *r = ht_events(st, 0, 1);
	uint64_t s = r->error.code == HF_OK ? r->last_seq : UINT64_MAX;
	hf_reply_free(r);
	return s;
}

int64_t ht_fence(const hf_hold *h, const char *name)
{
	for (size_t i = 0; h && i < h->n_parts; i++)
		if (strcmp(h->parts[i].resource, name) == 0)
			return h->parts[i].fence;
	return -1;
}

/* ---- async ---- */

static void pending_done(void *arg, hf_reply *reply)
{
	ht_pending *p = arg;
	if (atomic_fetch_add(&p->calls, 1) == 0)
		p->reply = reply;
	else
		hf_reply_free(reply);
}

void ht_pending_init(ht_pending *p)
{
	memset(p, 0, sizeof *p);
	atomic_init(&p->calls, 0);
}

void ht_pending_clear(ht_pending *p)
{
	hf_reply_free(p->reply);
	p->reply = NULL;
}

int ht_submit(hf_store *st, const hf_request *req, ht_pending *p)
{
	ht_pending_init(p);
	hf_error err;
	p->submit_rc = hf_submit(st, req, pending_done, p, &p->call_id, &err);
	return p->submit_rc;
}

int ht_submit_acquire(hf_store *st, const char *spec, const ht_acq *o, ht_pending *p)
{
	ht_claims cl;
	hf_request q;
	hf_request_init(&q, HF_OP_ACQUIRE);
	ht_acq_req(&q.acquire, &cl, spec, o);
	return ht_submit(st, &q, p);
}

void ht_pump(hf_store *st)
{
	struct pollfd pfd = {.fd = hf_store_fd(st), .events = POLLIN};
	while (poll(&pfd, 1, 0) > 0 && (pfd.revents & POLLIN)) {
		if (hf_store_dispatch(st) <= 0)
			break;
	}
	hf_store_dispatch(st);
}

bool ht_pump_until(hf_store *st, ht_pending *p, int timeout_ms)
{
	int64_t deadline = ht_mono_ms() + timeout_ms;
	for (;;) {
		hf_store_dispatch(st);
		if (atomic_load(&p->calls) > 0)
			return true;
		int64_t left = deadline - ht_mono_ms();
		if (left <= 0)
			return false;
		struct pollfd pfd = {.fd = hf_store_fd(st), .events = POLLIN};
		poll(&pfd, 1, left > 50 ? 50 : (int)left);
	}
}

bool ht_wait_waiters(hf_store *st, const char *name, int64_t waiters, int timeout_ms)
{
	int64_t deadline = ht_mono_ms() + timeout_ms;
	for (;;) {
		ht_res r = ht_res_get(st, name);
		if (r.rc == HF_OK && r.waiters == waiters)
			return true;
		if (ht_mono_ms() > deadline) {
			fprintf(stderr, "harness: %s: waiters %lld (rc %d), expected %lld\n", name,
			        (long long)r.waiters, r.rc, (long long)waiters);
			return false;
		}
		ht_sleep_ms(1);
	}
}

int ht_pending_rc(const ht_pending *p)
{
	if (atomic_load(&p->calls) == 0 || !p->reply)
		return 1; /* not completed */
	return p->reply->error.code;
}

/* ---- misc ---- */

uint64_t ht_seed(void)
{
	const char *s = getenv("HF_TEST_SEED");
	if (s && *s)
		return strtoull(s, NULL, 0);
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000003u ^ (uint64_t)ts.tv_nsec ^ ((uint64_t)getpid() << 32);
}

uint64_t ht_rand(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

int64_t ht_mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void ht_sleep_ms(int ms)
{
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
	while (nanosleep(&ts, &ts) == -1 && errno == EINTR) {
	}
}

void ht_apply_filter(void)
{
	const char *f = getenv("HF_TEST_FILTER");
	if (f && *f)
		cmocka_set_test_filter(f);
	const char *s = getenv("HF_TEST_SKIP");
	if (s && *s)
		cmocka_set_skip_filter(s);
}
