/*
 * fuzz_engine.c — fuzz target: the embedded engine (file:) against the reference model of
 * model.c. The input is decoded into up to 48 operations — acquires (1-3 claims on r0..r3,
 * units/shared/exclusive, all-of or any-of, NOWAIT), extends, confirms and releases (right or
 * wrong token, or an unknown hold), clock moves on the injected clock (with or without
 * hf_store_tick), reads of holds and resources, and close + reopen of the store — run on a
 * fresh store in /dev/shm (or $TMPDIR) and on the model. Every answer must equal the model's:
 * codes, hold states, parts, units, fences, times; after a reopen the whole state must too.
 * HF_FUZZ_TRACE=1 prints each step's outcome (for writing seeds).
 */
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "fuzz.h"
#include "model.h"

#define T0 1700000000000LL
#define MAX_OPS 48

static const char *const names[FM_NRES] = {"r0", "r1", "r2", "r3"};
static const char *const keys[FM_NKEYS] = {"key-0", "key-1"};
static const int64_t default_cap[FM_NRES] = {1, 2, 3, 4};

/* An acquire answered through hf_submit: its reply once the callback ran. */
struct slot {
	uint64_t call_id;
	hf_reply *reply;
	bool arrived, checked;
};

struct run {
	struct slot ws[FM_MAXW]; /* the waiting acquires, as model.w */
	int64_t fence_floor;     /* every fence up to here has been seen and checked */
	const uint8_t *in;
	size_t size, pos;
	struct fm_model m;
	hf_store *store;
	char path[256], url[300];
	char ids[FM_MAXH][HF_ID_LEN + 1];
	char tokens[FM_MAXH][HF_TOKEN_LEN + 1];
	int step;
};

static int64_t clock_fn(void *ctx)
{
	return ((struct run *)ctx)->m.now;
}

static bool more(const struct run *r)
{
	return r->pos < r->size;
}

static uint8_t next(struct run *r)
{
	return r->pos < r->size ? r->in[r->pos++] : 0;
}

static void remove_files(const struct run *r)
{
	static const char *const suffixes[] = {"", "-wal", "-shm", "-journal", ".lock"};
	char p[320];
	for (size_t i = 0; i < 5; i++) {
		snprintf(p, sizeof(p), "%s%s", r->path, suffixes[i]);
		unlink(p);
	}
}

static void open_store(struct run *r)
{
	hf_options opt;
	hf_options_init(&opt);
	opt.clock = clock_fn;
	opt.clock_ctx = r;
	hf_error err;
	int rc = hf_open(r->url, &opt, &r->store, &err);
	FUZZ_CHECK(rc == HF_OK, "cannot open '%s': %s", r->url, err.message);
}

/* A hold the engine answered, compared with model hold k. */
static void same_hold(const struct run *r, const hf_hold *h, int k)
{
	const struct fm_hold *mh = &r->m.h[k];
	FUZZ_CHECK(h->state == mh->state, "step %d: hold %d state %s, model %s", r->step, k,
	           hf_hold_state_name(h->state), hf_hold_state_name(mh->state));
	FUZZ_CHECK(h->mode == mh->mode, "step %d: hold %d mode", r->step, k);
	FUZZ_CHECK(h->created_at_ms == mh->created, "step %d: hold %d created %lld, model %lld",
	           r->step, k, (long long)h->created_at_ms, (long long)mh->created);
	if (mh->state == HF_HOLD_TENTATIVE || mh->state == HF_HOLD_CONFIRMED)
		FUZZ_CHECK(h->expires_at_ms == mh->expires,
		           "step %d: hold %d expires %lld, model %lld", r->step, k,
		           (long long)h->expires_at_ms, (long long)mh->expires);
	else
		FUZZ_CHECK(h->ended_at_ms == mh->ended, "step %d: hold %d ended %lld, model %lld",
		           r->step, k, (long long)h->ended_at_ms, (long long)mh->ended);
	FUZZ_CHECK(h->n_parts == (size_t)mh->n, "step %d: hold %d has %zu parts, model %d", r->step,
	           k, h->n_parts, mh->n);
	for (int i = 0; i < mh->n; i++) {
		const hf_hold_part *p = &h->parts[i];
		FUZZ_CHECK(
		    strcmp(p->resource, names[mh->p[i].res]) == 0 && p->units == mh->p[i].units &&
		        p->fence == mh->p[i].fence,
		    "step %d: hold %d part %d is '%s' %lld units fence %lld, model '%s' %lld "
		    "fence %lld",
		    r->step, k, i, p->resource, (long long)p->units, (long long)p->fence,
		    names[mh->p[i].res], (long long)mh->p[i].units, (long long)mh->p[i].fence);
	}
}

static void same_code(const struct run *r, const char *what, int got, int want, const hf_reply *rep)
{
	if (getenv("HF_FUZZ_TRACE")) /* for writing seeds: what each step did */
		fprintf(stderr, "step %d: %s -> %s\n", r->step, what, hf_err_name(got));
	FUZZ_CHECK(got == want, "step %d: %s answered %s (%s), model %s", r->step, what,
	           hf_err_name(got), rep ? rep->error.message : "(no message)", hf_err_name(want));
}

static void on_done(void *arg, hf_reply *reply)
{
	struct slot *s = arg;
	s->reply = reply;
	s->arrived = true;
}

/* Runs the store's completions until slot s has its answer (5 s at most). */
static void wait_for(struct run *r, struct slot *s)
{
	for (int i = 0; i < 500 && !s->arrived; i++) {
		hf_store_dispatch(r->store);
		if (!s->arrived)
			poll(&(struct pollfd){.fd = hf_store_fd(r->store), .events = POLLIN}, 1,
			     10);
	}
	FUZZ_CHECK(s->arrived, "step %d: an answer the model expects never came", r->step);
}

/* A hold granted to a waiter in a step that granted several: its fences are the engine's
 * to order, but each must be new in this step (above the floor, within the counter). */
static void take_fences(struct run *r, const hf_hold *h, int k)
{
	struct fm_hold *mh = &r->m.h[k];
	if (!mh->fences_open || h->n_parts != (size_t)mh->n)
		return;
	for (int i = 0; i < mh->n; i++) {
		FUZZ_CHECK(h->parts[i].fence > r->fence_floor &&
		               h->parts[i].fence <= r->m.last_fence,
		           "step %d: hold %d fence %lld outside this step's (%lld, %lld]", r->step,
		           k, (long long)h->parts[i].fence, (long long)r->fence_floor,
		           (long long)r->m.last_fence);
		mh->p[i].fence = h->parts[i].fence;
	}
	mh->fences_open = false;
}

/* Compares the answers of the waits the model ended, and checks that no other wait ended.
 * With `closed` the store is gone: its callbacks have all run. */
static void settle(struct run *r, bool closed)
{
	if (!closed)
		hf_store_dispatch(r->store);
	for (int i = 0; i < r->m.nw; i++) {
		const struct fm_waiter *w = &r->m.w[i];
		struct slot *s = &r->ws[i];
		if (!w->done || s->checked) {
			FUZZ_CHECK(!s->arrived || s->checked,
			           "step %d: wait %d answered %s while the model still waits",
			           r->step, i, s->reply ? hf_err_name(s->reply->error.code) : "?");
			continue;
		}
		if (!closed)
			wait_for(r, s);
		FUZZ_CHECK(s->arrived, "step %d: wait %d got no answer", r->step, i);
		same_code(r, "wait", s->reply->error.code, w->code, s->reply);
		if (w->code == HF_OK) {
			take_fences(r, s->reply->hold, w->hold);
			same_hold(r, s->reply->hold, w->hold);
			memcpy(r->ids[w->hold], s->reply->hold->id, sizeof(r->ids[0]));
			memcpy(r->tokens[w->hold], s->reply->hold->token, sizeof(r->tokens[0]));
		}
		s->checked = true;
		hf_reply_free(s->reply);
		s->reply = NULL;
	}
	r->fence_floor = r->m.last_fence;
}

/* An acquire that may wait: through hf_submit, answered by callback now or later. */
static void submit_waiting(struct run *r, const hf_acquire_req *req, struct fm_acquire *a)
{
	int k = -1;
	bool replayed = false;
	int want = fm_acquire(&r->m, a, &k, &replayed);
	struct slot now = {0};
	struct slot *s = want == FM_PARKED ? &r->ws[k] : &now;
	hf_request q;
	hf_request_init(&q, HF_OP_ACQUIRE);
	q.acquire = *req;
	hf_error err;
	int rc = hf_submit(r->store, &q, on_done, s, &s->call_id, &err);
	if (rc != HF_OK) { /* refused before the engine: validation */
		same_code(r, "acquire (wait)", rc, want, NULL);
		return;
	}
	if (want == FM_PARKED)
		return;
	wait_for(r, &now);
	same_code(r, "acquire (wait)", now.reply->error.code, want, now.reply);
	if (want == HF_OK) {
		same_hold(r, now.reply->hold, k);
		memcpy(r->ids[k], now.reply->hold->id, sizeof(r->ids[0]));
		memcpy(r->tokens[k], now.reply->hold->token, sizeof(r->tokens[0]));
	}
	hf_reply_free(now.reply);
}

static void op_acquire(struct run *r)
{
	uint8_t x = next(r), y = next(r);
	struct fm_acquire a = {.n = 1 + x % 3,
	                       .mode = (hf_mode)((x / 3) % 3),
	                       .any = (x / 9) % 4 == 0,
	                       .ttl = 1 + y,
	                       .key = (x / 36) % 7 < FM_NKEYS ? (x / 36) % 7 : -1};
	hf_claim claims[FM_MAXC];
	bool used[FM_NRES] = {false};
	for (int i = 0; i < a.n; i++) {
		uint8_t z = next(r);
		int res = z % FM_NRES;
		while (used[res])
			res = (res + 1) % FM_NRES;
		used[res] = true;
		int64_t cap = (z >> 6) == 3   ? 1 + (z >> 4) % 4
		              : (z >> 6) == 2 ? 0
		                              : default_cap[res];
		a.c[i] = (struct fm_claim){.res = res, .units = 1 + (z / 4) % 4, .capacity = cap};
		claims[i] = (hf_claim){.name = names[res], .units = a.c[i].units, .capacity = cap};
	}
	int choice = (x / 36) % 7;
	if (choice == 2 || choice == 3) { /* an all-of acquire that waits in line */
		if (r->m.nw == FM_MAXW)
			return;
		a.key = -1;
		a.any = false;
		a.wait = 1 + next(r);
		while (fm_deadline_clashes(&r->m, r->m.now + a.wait))
			a.wait++;
	}
	hf_acquire_req req = {.owner = "fuzz",
	                      .claims = claims,
	                      .n_claims = (size_t)a.n,
	                      .ttl_ms = a.ttl,
	                      .wait_ms = 0,
	                      .mode = a.mode,
	                      .any = a.any,
	                      .idempotency_key = a.key >= 0 ? keys[a.key] : NULL};
	/* The engine's step applies what is due first; a request that validation refuses
	 * (hf__check_request) makes no step, so with the injected clock nothing due is applied
	 * until the next call that reaches the engine or hf_store_tick. */
	if (fm_acquire_check(&a) == HF_OK)
		fm_expire(&r->m);
	if (a.wait) {
		req.wait_ms = a.wait;
		submit_waiting(r, &req, &a);
		return;
	}
	hf_hold *h = NULL;
	hf_error err;
	int got = hf_acquire(r->store, &req, &h, &err);
	int k = -1;
	bool replayed = false;
	int want = fm_acquire(&r->m, &a, &k, &replayed);
	if (getenv("HF_FUZZ_TRACE") && got == HF_OK)
		fprintf(stderr, "  engine: hold %s replayed %d fence %lld\n", h->id,
		        (int)h->replayed, (long long)h->parts[0].fence);
	same_code(r, replayed ? "acquire (replay)" : "acquire", got, want, NULL);
	if (got != HF_OK)
		return;
	same_hold(r, h, k);
	FUZZ_CHECK(h->replayed == replayed, "step %d: acquire replayed %d, model %d", r->step,
	           (int)h->replayed, (int)replayed);
	if (replayed)
		FUZZ_CHECK(strcmp(r->ids[k], h->id) == 0 && strcmp(r->tokens[k], h->token) == 0,
		           "step %d: a replay of hold %d gave another id or token", r->step, k);
	memcpy(r->ids[k], h->id, sizeof(r->ids[k]));
	memcpy(r->tokens[k], h->token, sizeof(r->tokens[k]));
	hf_hold_free(h);
}

/* Extend, confirm or release of a known hold (or an unknown one), right or wrong token. */
static void op_hold(struct run *r, hf_op op)
{
	uint8_t x = next(r);
	int64_t ttl = op == HF_OP_EXTEND ? 1 + next(r) : 0;
	int k = r->m.nh ? x % (r->m.nh + 1) : 0;
	bool unknown = k == r->m.nh, wrong = (x & 0x80) && !unknown;
	hf_request req;
	hf_request_init(&req, op);
	req.hold_id = unknown ? "0123456789abcdef0123456789abcdef" : r->ids[k];
	req.token = wrong ? "ffffffffffffffffffffffffffffffff" : unknown ? "00" : r->tokens[k];
	req.ttl_ms = ttl;
	fm_expire(&r->m);
	hf_reply *rep = NULL;
	int got = hf_call(r->store, &req, &rep);
	int want = unknown               ? HF_ENOHOLD
	           : wrong               ? HF_ETOKEN
	           : op == HF_OP_EXTEND  ? fm_extend(&r->m, k, ttl)
	           : op == HF_OP_CONFIRM ? fm_confirm(&r->m, k)
	                                 : fm_release(&r->m, k);
	same_code(r,
	          op == HF_OP_EXTEND    ? "extend"
	          : op == HF_OP_CONFIRM ? "confirm"
	                                : "release",
	          got, want, rep);
	if (got == HF_OK)
		same_hold(r, rep->hold, k);
	hf_reply_free(rep);
}

static void check_hold(struct run *r, int k)
{
	hf_request req;
	hf_request_init(&req, HF_OP_GET_HOLD);
	req.hold_id = r->ids[k];
	fm_expire(&r->m);
	hf_reply *rep = NULL;
	int got = hf_call(r->store, &req, &rep);
	same_code(r, "get hold", got, HF_OK, rep);
	same_hold(r, rep->hold, k);
	hf_reply_free(rep);
}

static void check_resource(struct run *r, int i)
{
	hf_request req;
	hf_request_init(&req, HF_OP_GET_RESOURCE);
	req.name = names[i];
	fm_expire(&r->m);
	hf_reply *rep = NULL;
	int got = hf_call(r->store, &req, &rep);
	const struct fm_res *mr = &r->m.r[i];
	same_code(r, "get resource", got, mr->exists ? HF_OK : HF_ENORESOURCE, rep);
	if (got == HF_OK)
		FUZZ_CHECK(
		    rep->resource->capacity == mr->cap && rep->resource->held == mr->held &&
		        rep->resource->holds == mr->holds,
		    "step %d: resource %s capacity %lld held %lld holds %lld, model %lld %lld "
		    "%lld",
		    r->step, names[i], (long long)rep->resource->capacity,
		    (long long)rep->resource->held, (long long)rep->resource->holds,
		    (long long)mr->cap, (long long)mr->held, (long long)mr->holds);
	hf_reply_free(rep);
}

/* A version to expect: any (-1), none (0), the current one, or a wrong one. */
static int64_t if_version(const struct run *r, int res, int choice)
{
	const struct fm_res *mr = &r->m.r[res];
	int64_t current = mr->exists && mr->declared ? mr->version : 0;
	return choice == 0 ? -1 : choice == 1 ? 0 : choice == 2 ? current : current + 1;
}

static void op_put(struct run *r)
{
	uint8_t x = next(r);
	int res = x % FM_NRES;
	int64_t capacity = 1 + (x / 4) % 6;
	hf_request req;
	hf_request_init(&req, HF_OP_PUT_RESOURCE);
	req.name = names[res];
	req.capacity = capacity;
	req.if_version = if_version(r, res, (x / 24) % 4);
	fm_expire(&r->m);
	hf_reply *rep = NULL;
	int got = hf_call(r->store, &req, &rep);
	same_code(r, "put", got, fm_put(&r->m, res, capacity, req.if_version), rep);
	hf_reply_free(rep);
}

static void op_delete(struct run *r)
{
	uint8_t x = next(r);
	int res = x % FM_NRES;
	hf_request req;
	hf_request_init(&req, HF_OP_DELETE_RESOURCE);
	req.name = names[res];
	int choice = (x / 4) % 3;
	req.if_version = if_version(r, res, choice ? choice + 1 : 0);
	fm_expire(&r->m);
	hf_reply *rep = NULL;
	int got = hf_call(r->store, &req, &rep);
	same_code(r, "delete", got, fm_delete(&r->m, res, req.if_version), rep);
	hf_reply_free(rep);
}

static void check_all(struct run *r)
{
	/* Only the holds known now: the first read applies what is due, which can grant a waiter
	 * a new hold whose id only its answer brings (settle compares that hold). */
	int nh = r->m.nh;
	for (int k = 0; k < nh; k++)
		check_hold(r, k);
	for (int i = 0; i < FM_NRES; i++)
		check_resource(r, i);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct run r; /* large: the model's hold table */
	memset(&r, 0, sizeof(r));
	r.in = data;
	r.size = size;
	const char *dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : getenv("TMPDIR");
	snprintf(r.path, sizeof(r.path), "%s/hf-fuzz-engine-%ld.db", dir ? dir : "/tmp",
	         (long)getpid());
	snprintf(r.url, sizeof(r.url), "file:%s", r.path);
	remove_files(&r);
	fm_init(&r.m, T0);
	open_store(&r);
	for (r.step = 0; r.step < MAX_OPS && more(&r); r.step++) {
		uint8_t op = next(&r);
		switch (op % 13) {
		case 0:
		case 1:
		case 2:
			if (r.m.nh < FM_MAXH)
				op_acquire(&r);
			break;
		case 3:
			op_hold(&r, HF_OP_CONFIRM);
			break;
		case 4:
			op_hold(&r, HF_OP_EXTEND);
			break;
		case 5:
			op_hold(&r, HF_OP_RELEASE);
			break;
		case 6: {
			uint8_t x = next(&r);
			r.m.now += x >> 1;
			if (x & 1) { /* what is due now happens now; else at the next call */
				fm_expire(&r.m);
				hf_store_tick(r.store);
			}
			break;
		}
		case 7:
			if (r.m.nh)
				check_hold(&r, next(&r) % r.m.nh);
			break;
		case 8:
			check_resource(&r, next(&r) % FM_NRES);
			break;
		case 10:
			op_put(&r);
			break;
		case 11:
			op_delete(&r);
			break;
		case 12: { /* cancel a wait (if any is still waiting) */
			uint8_t x = next(&r);
			for (int i = 0; r.m.nw && i < r.m.nw; i++) {
				int wi = (x + i) % r.m.nw;
				if (r.m.w[wi].active) {
					hf_cancel(r.store, r.ws[wi].call_id);
					fm_cancel(&r.m, wi);
					break;
				}
			}
			break;
		}
		default: /* 9: a restart ends every wait; the journal brings the rest back */
			hf_close(r.store);
			fm_end_waits(&r.m, HF_ECLOSED);
			settle(&r, true);
			open_store(&r);
			check_all(&r);
			break;
		}
		settle(&r, false);
	}
	check_all(&r);
	settle(&r, false);
	hf_close(r.store);
	fm_end_waits(&r.m, HF_ECLOSED);
	settle(&r, true);
	remove_files(&r);
	return 0;
}
