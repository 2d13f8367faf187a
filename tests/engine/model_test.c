/*
 * model_test.c — randomized, model-based test of the hold engine. Seeded (HF_TEST_SEED;
 * the seed is printed, and printed again on failure) and reproducible.
 *
 * Phase 1, one thread, exact: random acquires (units/shared/exclusive, multi-resource, any,
 * NOWAIT and waits, idempotency keys), extends, confirms, releases with the right and the
 * wrong token, cancels, resource updates, capacity-mismatch probes and clock moves (the
 * injected clock; sometimes hf_store_tick, sometimes not) run against the engine and against
 * a small reference model written from docs/semantics.md. After every step the engine's
 * resources, holds, parked waiters and event count must equal the model's, and the
 * invariants must hold. The generator avoids the few orders the rules leave open (a wait's
 * deadline at the same instant as an expiry or another deadline), so the comparison is exact.
 *
 * Phase 2, several threads: workers acquire/extend/confirm/release (and try wrong tokens on
 * each other's holds) while a clock thread moves the injected clock and ticks. Invariants
 * are checked from atomic observations (LIST_HOLDS of one resource) during the run, and at
 * the end by replaying the event log: units never exceed capacity, an exclusive holder is
 * alone, fences strictly increase per resource in grant order, wrong tokens change nothing,
 * and the live holds equal the log's fold.
 *
 * HF_TEST_MODEL_STEPS (default 4000) and HF_TEST_MODEL_OPS (per thread, default 600) size it;
 * HF_TEST_MODEL_HOT=1 makes phase 1 contend more (capacities 1-2, more waits).
 *
 * HF_TEST_MODEL_CLOCK=real runs both phases on the engine's own clock, so that any engine URL
 * can run it (postgres://, redis://: register it with HF_TEST_ENGINE_URL and
 * HF_TEST_ENGINE_RESET, see tests/engine/CMakeLists.txt). Phase 1 then uses leases of an hour
 * and waits of ~50 minutes, so nothing falls due during the run: waits end by grants and
 * cancels, holds by releases, and the times the engine reports (created, expires, ended) are
 * learnt from its answers and checked against the wall clock and the lease. Phase 2 runs
 * its short leases and waits in real time, with no clock thread.
 */
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checks.h"
#include "harness.h"

#define PROMPT_MS 20000

static uint64_t g_seed;
static bool g_hot; /* HF_TEST_MODEL_HOT=1: capacities 1-2 and more waits: more contention */
static bool g_real; /* HF_TEST_MODEL_CLOCK=real: the engine's own clock (any engine URL) */
#define REAL_TTL 3600000  /* phase 1 on a real clock: no lease ends during the run */
#define REAL_WAIT 3000000 /* and no wait reaches its deadline */
#define REAL_SLACK 5000   /* engine clock vs. this process's, in the real-clock checks */

/* ======================= phase 1: the exact model ======================= */

enum { NRES = 7, NDECL = 4, MAXH = 4096, MAXW = 1024, NKEYS = 4 };

static const char *const res_names[NRES] = {"d0", "d1", "d2", "d3", "i0", "i1", "i2"};

typedef struct mres {
	bool declared;
	int64_t cap;      /* declared: the capacity; implicit: the one claims use */
	int64_t version;  /* declared only */
	int64_t held, holds;
	int64_t last_fence;
} mres;

typedef struct mreq {
	int n;
	int res[4];
	int64_t units[4];
	int64_t capclaim[4];
	hf_mode mode;
	int64_t ttl, wait;
	bool any;
	int key; /* -1 or an index into keys */
	char owner[16];
} mreq;

typedef struct mhold {
	char id[HF_ID_LEN + 1], token[HF_TOKEN_LEN + 1];
	hf_hold_state state;
	hf_mode mode;
	int64_t created, expires, ended;
	int64_t ttl; /* of the grant: the lease the engine must report */
	int n;
	int res[4];
	int64_t units[4];
	int64_t fence[4];
} mhold;

typedef struct mwait {
	bool active;       /* parked in the model */
	bool must_finish;  /* the model ended it in this step: expect a completion */
	int expect_rc;
	ht_pending p;
	mreq rq;
	int64_t need[4];
	int64_t deadline;
	int granted_hold;  /* index into holds once granted */
} mwait;

typedef struct midem {
	bool used;
	mreq rq;
	int state;  /* 1 in flight (waiter ref), 2 granted (hold ref) */
	int ref;
} midem;

typedef struct model {
	ht_env *env;
	uint64_t rng;
	int64_t now;
	mres r[NRES];
	mhold h[MAXH];
	int nh;
	mwait w[MAXW];
	int nw;
	midem keys[NKEYS];
	uint64_t seq;           /* events the model expects so far */
	int ev_expect[8];       /* per step: granted, extended, confirmed, released, expired, res */
	int step;
	int64_t t_start; /* wall clock at the start (real-clock checks) */
	char trace[32][160];
} model;

enum { EV_GRANTED, EV_EXTENDED, EV_CONFIRMED, EV_RELEASED, EV_EXPIRED, EV_RESOURCE, EV_N };
static const char *const ev_names[EV_N] = {"hold.granted",  "hold.extended", "hold.confirmed",
                                           "hold.released", "hold.expired",  "resource.*"};

static model *M;

#define FAIL(...)                                                                          \
	do {                                                                                   \
		model_dump();                                                                      \
		fail_msg(__VA_ARGS__);                                                             \
	} while (0)

static void describe(const mreq *q, char *buf, size_t len);
static int64_t m_waiters(int r);

static void model_dump(void)
{
	fprintf(stderr, "model test failed: HF_TEST_SEED=%llu step %d; last steps:\n",
	        (unsigned long long)g_seed, M->step);
	for (int i = 0; i < 32; i++) {
		int k = (M->step + 1 + i) % 32;
		if (M->trace[k][0])
			fprintf(stderr, "  %s\n", M->trace[k]);
	}
	fprintf(stderr, "model resources:\n");
	for (int r = 0; r < NRES; r++) {
		ht_res v = ht_res_get(M->env->st, res_names[r]);
		fprintf(stderr, "  %s cap %lld held %lld holds %lld waiters %lld | engine %s cap %lld "
		        "held %lld holds %lld waiters %lld\n", res_names[r], (long long)M->r[r].cap,
		        (long long)M->r[r].held, (long long)M->r[r].holds, (long long)m_waiters(r),
		        hf_err_name(v.rc), (long long)v.capacity, (long long)v.held,
		        (long long)v.holds, (long long)v.waiters);
	}
	fprintf(stderr, "model waiters (arrival order):\n");
	for (int i = 0; i < M->nw; i++) {
		char d[128];
		describe(&M->w[i].rq, d, sizeof d);
		fprintf(stderr, "  w%d %s deadline t+%lld %s\n", i, d,
		        (long long)(M->w[i].deadline - HT_T0),
		        M->w[i].active ? "parked" : M->w[i].must_finish ? "ending now" : "done");
	}
	fprintf(stderr, "model live holds:\n");
	for (int i = 0; i < M->nh; i++) {
		mhold *h = &M->h[i];
		if (h->state > HF_HOLD_CONFIRMED)
			continue;
		fprintf(stderr, "  h%d %s %s expires t+%lld:", i, hf_hold_state_name(h->state),
		        hf_mode_name(h->mode), (long long)(h->expires - HT_T0));
		for (int k = 0; k < h->n; k++)
			fprintf(stderr, " %s:%lld", res_names[h->res[k]], (long long)h->units[k]);
		fprintf(stderr, "\n");
	}
}

static void tracef(const char *fmt, ...) HF_TEST_PRINTF(1, 2);
static void tracef(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	char *t = M->trace[M->step % 32];
	int off = snprintf(t, 160, "#%d t+%lld ", M->step, (long long)(M->now - HT_T0));
	vsnprintf(t + off, (size_t)(160 - off), fmt, ap);
	va_end(ap);
	if (getenv("HF_TEST_VERBOSE"))
		fprintf(stderr, "%s\n", t);
}

static uint64_t rnd(uint64_t n)
{
	return n ? ht_rand(&M->rng) % n : 0;
}

static int64_t m_waiters(int r)
{
	int64_t c = 0;
	for (int i = 0; i < M->nw; i++)
		if (M->w[i].active)
			for (int k = 0; k < M->w[i].rq.n; k++)
				c += M->w[i].rq.res[k] == r;
	return c;
}

static bool m_exists(int r)
{
	return M->r[r].declared || M->r[r].holds > 0 || m_waiters(r) > 0;
}

static int64_t m_need(const mreq *q, int k)
{
	if (q->mode == HF_MODE_SHARED)
		return 1;
	if (q->mode == HF_MODE_EXCLUSIVE)
		return M->r[q->res[k]].cap;
	return q->units[k];
}

static bool m_fits(int r, int64_t need)
{
	return M->r[r].cap - M->r[r].held >= need;
}

/* Is waiter wi the first active waiter (arrival order) naming r? */
static bool m_is_head(int wi, int r)
{
	for (int i = 0; i < wi; i++)
		if (M->w[i].active)
			for (int k = 0; k < M->w[i].rq.n; k++)
				if (M->w[i].rq.res[k] == r)
					return false;
	return true;
}

/* Takes the claims [from,to) of q as a new model hold at M->now; returns its index. The id,
 * token and fences are filled in from the engine's reply by the caller. */
static int m_grant(const mreq *q, int from, int to)
{
	if (M->nh >= MAXH)
		fail_msg("model: too many holds");
	mhold *h = &M->h[M->nh];
	memset(h, 0, sizeof *h);
	h->state = HF_HOLD_TENTATIVE;
	h->mode = q->mode;
	h->created = M->now;
	h->expires = M->now + q->ttl;
	h->ttl = q->ttl;
	for (int k = from; k < to; k++) {
		int r = q->res[k];
		h->res[h->n] = r;
		h->units[h->n] = m_need(q, k);
		M->r[r].held += h->units[h->n];
		M->r[r].holds++;
		h->n++;
	}
	M->seq++;
	M->ev_expect[EV_GRANTED]++;
	return M->nh++;
}

static void m_end(mhold *h, hf_hold_state st, int64_t at)
{
	h->state = st;
	h->ended = at;
	for (int k = 0; k < h->n; k++) {
		M->r[h->res[k]].held -= h->units[k];
		M->r[h->res[k]].holds--;
	}
	M->seq++;
	M->ev_expect[st == HF_HOLD_EXPIRED ? EV_EXPIRED : EV_RELEASED]++;
}

/* Grants every parked waiter now entitled, in arrival order, until nothing changes. */
static void m_pump(void)
{
	bool changed = true;
	while (changed) {
		changed = false;
		for (int i = 0; i < M->nw; i++) {
			mwait *w = &M->w[i];
			if (!w->active)
				continue;
			bool ok = true;
			for (int k = 0; ok && k < w->rq.n; k++)
				ok = m_is_head(i, w->rq.res[k]) && m_fits(w->rq.res[k], w->need[k]);
			if (!ok)
				continue;
			w->active = false;
			w->must_finish = true;
			w->expect_rc = HF_OK;
			w->granted_hold = m_grant(&w->rq, 0, w->rq.n);
			if (w->rq.key >= 0) {
				M->keys[w->rq.key].state = 2;
				M->keys[w->rq.key].ref = w->granted_hold;
			}
			changed = true;
		}
	}
}

static void m_fail_waiter(mwait *w, int rc)
{
	w->active = false;
	w->must_finish = true;
	w->expect_rc = rc;
	if (w->rq.key >= 0)
		M->keys[w->rq.key].used = false; /* only grants are remembered */
}

/* What every operation does first: the expiries due now (in time order), then deadlines. */
static void m_sweep(void)
{
	for (;;) {
		int best = -1;
		for (int i = 0; i < M->nh; i++)
			if (M->h[i].state == HF_HOLD_TENTATIVE && M->h[i].expires <= M->now &&
			    (best < 0 || M->h[i].expires < M->h[best].expires))
				best = i;
		if (best < 0)
			break;
		m_end(&M->h[best], HF_HOLD_EXPIRED, M->h[best].expires);
		m_pump();
	}
	for (int i = 0; i < M->nw; i++)
		if (M->w[i].active && M->w[i].deadline <= M->now) {
			m_fail_waiter(&M->w[i], HF_ETIMEDOUT);
			m_pump();
		}
}

static bool m_deadline_taken(int64_t t)
{
	for (int i = 0; i < M->nw; i++)
		if (M->w[i].active && M->w[i].deadline == t)
			return true;
	return false;
}

static bool m_expiry_taken(int64_t t)
{
	for (int i = 0; i < M->nh; i++)
		if (M->h[i].state == HF_HOLD_TENTATIVE && M->h[i].expires == t)
			return true;
	return false;
}

/* A ttl whose expiry does not coincide with any parked wait's deadline. */
static int64_t pick_ttl(void)
{
	if (g_real)
		return REAL_TTL + (int64_t)rnd(600);
	for (;;) {
		int64_t ttl = 1 + (int64_t)rnd(600);
		if (!m_deadline_taken(M->now + ttl))
			return ttl;
	}
}

static void req_to_acquire(const mreq *q, hf_acquire_req *a, hf_claim *c, char names[][8])
{
	memset(a, 0, sizeof *a);
	for (int k = 0; k < q->n; k++) {
		snprintf(names[k], 8, "%s", res_names[q->res[k]]);
		c[k].name = names[k];
		c[k].units = q->units[k];
		c[k].capacity = q->capclaim[k];
	}
	static const char *const keys[NKEYS] = {"key-a", "key-b", "key-c", "key-d"};
	a->owner = q->owner;
	a->claims = c;
	a->n_claims = (size_t)q->n;
	a->ttl_ms = q->ttl;
	a->wait_ms = q->wait;
	a->mode = q->mode;
	a->any = q->any;
	a->idempotency_key = q->key >= 0 ? keys[q->key] : NULL;
}

static bool req_same(const mreq *a, const mreq *b)
{
	if (a->n != b->n || a->mode != b->mode || a->ttl != b->ttl || a->any != b->any ||
	    strcmp(a->owner, b->owner) != 0)
		return false;
	for (int k = 0; k < a->n; k++)
		if (a->res[k] != b->res[k] || a->units[k] != b->units[k] ||
		    a->capclaim[k] != b->capclaim[k])
			return false;
	return true;
}

static void describe(const mreq *q, char *buf, size_t len)
{
	static const char *const modes[] = {"units", "shared", "excl"};
	int off = snprintf(buf, len, "%s%s ttl=%lld wait=%lld key=%d [", modes[q->mode],
	                   q->any ? " any" : "", (long long)q->ttl, (long long)q->wait, q->key);
	for (int k = 0; k < q->n && off < (int)len; k++)
		off += snprintf(buf + off, len - (size_t)off, "%s%s:%lld@%lld", k ? "," : "",
		                res_names[q->res[k]], (long long)q->units[k], (long long)q->capclaim[k]);
	if (off < (int)len)
		snprintf(buf + off, len - (size_t)off, "]");
}

/* Checks an engine hold against the model's and learns its id, token and fences. */
/* On the real clock: a time the engine reported must be near this process's clock. */
static void check_time(const char *what, const char *id, int64_t t)
{
	int64_t now = hf_now_ms();
	if (t < M->t_start - REAL_SLACK || t > now + REAL_SLACK)
		FAIL("hold %s: %s %lld, outside the run [%lld, %lld]", id, what, (long long)t,
		     (long long)M->t_start, (long long)now);
}

static void learn_hold(mhold *mh, const hf_hold *h, bool from_acquire)
{
	if (mh->id[0] == '\0') {
		memcpy(mh->id, h->id, sizeof mh->id);
		memcpy(mh->token, h->token, sizeof mh->token);
		if (g_real) {
			/* times are the engine's: learnt here, checked for sense */
			check_time("created", h->id, h->created_at_ms);
			if (h->state == HF_HOLD_TENTATIVE && h->expires_at_ms - h->created_at_ms != mh->ttl)
				FAIL("hold %s: lease %lld ms, requested %lld", h->id,
				     (long long)(h->expires_at_ms - h->created_at_ms), (long long)mh->ttl);
			mh->created = h->created_at_ms;
			mh->expires = h->created_at_ms + mh->ttl;
		}
	} else if (strcmp(mh->id, h->id) != 0) {
		FAIL("hold id %s, model says %s", h->id, mh->id);
	}
	if ((int)h->n_parts != mh->n)
		FAIL("hold %s has %zu parts, model %d", h->id, h->n_parts, mh->n);
	for (size_t i = 0; i + 1 < h->n_parts; i++)
		if (strcmp(h->parts[i].resource, h->parts[i + 1].resource) >= 0)
			FAIL("hold %s parts not in bytewise order", h->id);
	for (int k = 0; k < mh->n; k++) {
		int64_t f = -1, u = -1;
		for (size_t i = 0; i < h->n_parts; i++)
			if (strcmp(h->parts[i].resource, res_names[mh->res[k]]) == 0) {
				f = h->parts[i].fence;
				u = h->parts[i].units;
			}
		if (u != mh->units[k])
			FAIL("hold %s: %lld units of %s, model %lld", h->id, (long long)u,
			     res_names[mh->res[k]], (long long)mh->units[k]);
		if (from_acquire && mh->fence[k] == 0) {
			mres *r = &M->r[mh->res[k]];
			if (f <= r->last_fence)
				FAIL("fence %lld on %s not above the last one %lld", (long long)f,
				     res_names[mh->res[k]], (long long)r->last_fence);
			r->last_fence = f;
			mh->fence[k] = f;
		} else if (f != mh->fence[k]) {
			FAIL("hold %s: fence %lld on %s, first seen %lld", h->id, (long long)f,
			     res_names[mh->res[k]], (long long)mh->fence[k]);
		}
	}
	if (h->created_at_ms != mh->created)
		FAIL("hold %s created %lld, model %lld", h->id, (long long)h->created_at_ms,
		     (long long)mh->created);
}

/* Waits for every waiter the model ended in this step and checks its outcome. Fences of
 * grants made in one step are learnt in fence order (= grant order). */
static void collect_waiters(void)
{
	int idx[MAXW], n = 0;
	for (int i = 0; i < M->nw; i++) {
		mwait *w = &M->w[i];
		if (!w->must_finish)
			continue;
		w->must_finish = false;
		if (!ht_pump_until(M->env->st, &w->p, PROMPT_MS))
			FAIL("waiter %d: model expects %s, engine did not complete it", i,
			     hf_err_name(w->expect_rc));
		int rc = ht_pending_rc(&w->p);
		if (rc != w->expect_rc)
			FAIL("waiter %d: got %s \"%s\", model expects %s", i, hf_err_name(rc),
			     w->p.reply->error.message, hf_err_name(w->expect_rc));
		if (rc == HF_OK)
			idx[n++] = i;
		else
			ht_pending_clear(&w->p);
	}
	/* grant order within the step: by the fence of the first part */
	for (int a = 0; a < n; a++)
		for (int b = a + 1; b < n; b++)
			if (M->w[idx[b]].p.reply->hold->parts[0].fence <
			    M->w[idx[a]].p.reply->hold->parts[0].fence) {
				int t = idx[a];
				idx[a] = idx[b];
				idx[b] = t;
			}
	for (int a = 0; a < n; a++) {
		mwait *w = &M->w[idx[a]];
		learn_hold(&M->h[w->granted_hold], w->p.reply->hold, true);
		ht_pending_clear(&w->p);
	}
	/* nothing else may have completed */
	ht_pump(M->env->st);
	for (int i = 0; i < M->nw; i++)
		if (M->w[i].active && atomic_load(&M->w[i].p.calls) != 0)
			FAIL("waiter %d completed with %s, model says it is still parked", i,
			     hf_err_name(ht_pending_rc(&M->w[i].p)));
}

static void compare_hold(int i)
{
	mhold *mh = &M->h[i];
	if (!mh->id[0])
		return;
	ht_hold_view v = ht_hold_get(M->env->st, mh->id);
	if (v.rc != HF_OK)
		FAIL("hold %d %s: get %s", i, mh->id, hf_err_name(v.rc));
	if (v.state != mh->state)
		FAIL("hold %d %s: state %s, model %s", i, mh->id, hf_hold_state_name(v.state),
		     hf_hold_state_name(mh->state));
	int64_t exp = mh->state == HF_HOLD_CONFIRMED ? 0 : mh->expires;
	if (mh->state == HF_HOLD_RELEASED)
		exp = v.expires_at_ms; /* released: not specified */
	if (v.expires_at_ms != exp)
		FAIL("hold %d %s: expires %lld, model %lld", i, mh->id, (long long)v.expires_at_ms,
		     (long long)exp);
	int64_t ended = mh->state == HF_HOLD_RELEASED || mh->state == HF_HOLD_EXPIRED ? mh->ended : 0;
	if (v.ended_at_ms != ended)
		FAIL("hold %d %s: ended %lld, model %lld", i, mh->id, (long long)v.ended_at_ms,
		     (long long)ended);
}

static void compare_all(bool all_holds)
{
	hf_store *st = M->env->st;
	/* Any operation applies what is due (a read will do, when the step did no tick and no
	 * call): the model does the same, then the waiters it ended must complete. */
	m_sweep();
	(void)ht_res_get(st, res_names[0]);
	collect_waiters();
	for (int r = 0; r < NRES; r++) {
		ht_res v = ht_res_get(st, res_names[r]);
		mres *m = &M->r[r];
		bool ex = m_exists(r);
		if (!ex) {
			if (v.rc != HF_ENORESOURCE)
				FAIL("%s: get %s, model says it does not exist", res_names[r],
				     hf_err_name(v.rc));
			continue;
		}
		if (v.rc != HF_OK)
			FAIL("%s: get %s, model says it exists", res_names[r], hf_err_name(v.rc));
		if (v.capacity != m->cap || v.held != m->held || v.holds != m->holds ||
		    v.waiters != m_waiters(r) || v.declared != m->declared ||
		    v.version != (m->declared ? m->version : 0))
			FAIL("%s: engine cap %lld held %lld holds %lld waiters %lld declared %d v%lld; "
			     "model cap %lld held %lld holds %lld waiters %lld declared %d v%lld",
			     res_names[r], (long long)v.capacity, (long long)v.held, (long long)v.holds,
			     (long long)v.waiters, v.declared, (long long)v.version, (long long)m->cap,
			     (long long)m->held, (long long)m->holds, (long long)m_waiters(r),
			     m->declared, (long long)(m->declared ? m->version : 0));
		if (v.held > v.capacity || v.held < 0)
			FAIL("%s: invariant: held %lld of capacity %lld", res_names[r],
			     (long long)v.held, (long long)v.capacity);
	}
	for (int i = 0; i < M->nh; i++)
		if (all_holds || M->h[i].state <= HF_HOLD_CONFIRMED || i >= M->nh - 3)
			compare_hold(i);
	/* the invariants, from the engine's own listing of each resource's holds */
	for (int r = 0; r < NRES; r++) {
		hf_request q;
		hf_request_init(&q, HF_OP_LIST_HOLDS);
		q.resource = res_names[r];
		q.limit = HF_LIST_MAX;
		hf_reply *rep = NULL;
		hf_call(st, &q, &rep);
		if (rep->error.code != HF_OK || rep->more)
			FAIL("list holds of %s: %s", res_names[r], hf_err_name(rep->error.code));
		int64_t units = 0;
		int live = 0, excl = 0;
		for (size_t i = 0; i < rep->n_holds; i++) {
			const hf_hold *h = &rep->holds[i];
			if (h->state > HF_HOLD_CONFIRMED)
				continue;
			live++;
			excl += h->mode == HF_MODE_EXCLUSIVE;
			for (size_t k = 0; k < h->n_parts; k++)
				if (strcmp(h->parts[k].resource, res_names[r]) == 0)
					units += h->parts[k].units;
		}
		hf_reply_free(rep);
		if (units > M->r[r].cap)
			FAIL("invariant: %s has %lld units in live holds, capacity %lld", res_names[r],
			     (long long)units, (long long)M->r[r].cap);
		if (excl && live > 1)
			FAIL("invariant: an exclusive hold on %s is not alone", res_names[r]);
	}
	/* events: the model's count, once durable, and the types of this step's events */
	static uint64_t checked = 0;
	int64_t deadline = ht_mono_ms() + PROMPT_MS;
	uint64_t last;
	while ((last = ht_last_seq(st)) < M->seq && ht_mono_ms() < deadline)
		ht_sleep_ms(1);
	if (last != M->seq)
		FAIL("event seq %llu, model expects %llu", (unsigned long long)last,
		     (unsigned long long)M->seq);
	int got[EV_N] = {0};
	uint64_t after = checked;
	while (after < last) {
		hf_reply *r = ht_events(st, after, HF_LIST_MAX);
		if (r->error.code != HF_OK || r->n_events == 0)
			FAIL("read events after %llu: %s", (unsigned long long)after,
			     hf_err_name(r->error.code));
		for (size_t i = 0; i < r->n_events; i++) {
			if (r->events[i].seq != after + 1)
				FAIL("event seq %llu after %llu: a gap", (unsigned long long)r->events[i].seq,
				     (unsigned long long)after);
			after = r->events[i].seq;
			int t = EV_RESOURCE;
			for (int k = 0; k < EV_RESOURCE; k++)
				if (strcmp(r->events[i].type, ev_names[k]) == 0)
					t = k;
			if (t == EV_RESOURCE && strncmp(r->events[i].type, "resource.", 9) != 0)
				FAIL("unknown event type %s", r->events[i].type);
			got[t]++;
		}
		hf_reply_free(r);
	}
	for (int k = 0; k < EV_N; k++)
		if (got[k] != M->ev_expect[k])
			FAIL("step's %s events: %d, model expects %d", ev_names[k], got[k],
			     M->ev_expect[k]);
	checked = last;
	memset(M->ev_expect, 0, sizeof M->ev_expect);
}

/* ---- the steps ---- */

static void gen_request(mreq *q)
{
	memset(q, 0, sizeof *q);
	q->key = -1;
	snprintf(q->owner, sizeof q->owner, "o%d", (int)rnd(3));
	uint64_t m = rnd(10);
	q->mode = m < 6 ? HF_MODE_UNITS : m < 8 ? HF_MODE_SHARED : HF_MODE_EXCLUSIVE;
	q->n = 1 + (int)rnd(rnd(3) == 0 ? 3 : 1);
	bool used[NRES] = {0};
	for (int k = 0; k < q->n; k++) {
		int r;
		do
			r = (int)rnd(NRES);
		while (used[r]);
		used[r] = true;
		q->res[k] = r;
		q->units[k] = 1 + (int64_t)rnd((uint64_t)M->r[r].cap);
		q->capclaim[k] = M->r[r].declared ? (rnd(4) == 0 ? M->r[r].cap : 0) : M->r[r].cap;
	}
	q->ttl = pick_ttl();
}

static void step_acquire(void)
{
	mreq q;
	gen_request(&q);
	uint64_t kind = rnd(20);
	if (kind < (g_hot ? 12u : 7u)) {
		/* a wait whose deadline is unique and not an expiry instant */
		if (g_real)
			q.wait = REAL_WAIT + (int64_t)rnd(800);
		else
			do
				q.wait = 1 + (int64_t)rnd(800);
			while (m_deadline_taken(M->now + q.wait) || m_expiry_taken(M->now + q.wait));
	} else if (kind < 10 && q.n > 1) {
		q.any = true;
	}
	if (rnd(8) == 0) {
		int key = (int)rnd(NKEYS);
		midem *d = &M->keys[key];
		if (d->used && rnd(3) != 0)
			q = d->rq; /* the same request again */
		q.key = key;
	}
	char desc[128];
	describe(&q, desc, sizeof desc);
	tracef("acquire %s", desc);

	/* the model's answer */
	int expect = HF_OK, from = 0, to = q.n;
	bool park = false, replay = false;
	midem *d = q.key >= 0 ? &M->keys[q.key] : NULL;
	if (d && d->used) {
		mreq cmp = q;
		cmp.wait = d->rq.wait;
		if (!req_same(&cmp, &d->rq))
			expect = HF_EIDEMMISMATCH;
		else if (d->state == 1)
			expect = HF_EIDEMBUSY;
		else
			replay = true;
	}
	if (expect == HF_OK && !replay) {
		if (q.any) {
			to = 0;
			for (int k = 0; k < q.n && to == 0; k++)
				if (m_waiters(q.res[k]) == 0 && m_fits(q.res[k], m_need(&q, k))) {
					from = k;
					to = k + 1;
				}
			if (to == 0)
				expect = HF_EUNAVAILABLE;
		} else {
			bool all = true;
			for (int k = 0; all && k < q.n; k++)
				all = m_waiters(q.res[k]) == 0 && m_fits(q.res[k], m_need(&q, k));
			if (!all) {
				if (q.wait > 0)
					park = true;
				else
					expect = HF_EUNAVAILABLE;
			}
		}
	}

	hf_claim c[4];
	char names[4][8];
	hf_request rq;
	hf_request_init(&rq, HF_OP_ACQUIRE);
	req_to_acquire(&q, &rq.acquire, c, names);
	if (park) {
		if (M->nw >= MAXW)
			fail_msg("model: too many waiters");
		mwait *w = &M->w[M->nw];
		memset(w, 0, sizeof *w);
		w->rq = q;
		w->active = true;
		w->deadline = M->now + q.wait;
		for (int k = 0; k < q.n; k++)
			w->need[k] = m_need(&q, k);
		if (ht_submit(M->env->st, &rq, &w->p) != HF_OK)
			FAIL("submit of a parking acquire: %s", hf_err_name(w->p.submit_rc));
		M->nw++;
		if (d) {
			d->used = true;
			d->rq = q;
			d->state = 1;
			d->ref = M->nw - 1;
		}
		/* parked once the engine shows it */
		int r0 = q.res[0];
		if (!ht_wait_waiters(M->env->st, res_names[r0], m_waiters(r0), PROMPT_MS))
			FAIL("acquire did not park");
		return;
	}
	hf_reply *rep = NULL;
	int rc = hf_call(M->env->st, &rq, &rep);
	if (rc != expect) {
		hf_reply_free(rep);
		FAIL("acquire %s: got %s, model expects %s", desc, hf_err_name(rc),
		     hf_err_name(expect));
	}
	if (rc == HF_OK && replay) {
		mhold *mh = &M->h[d->ref];
		if (!rep->hold->replayed || strcmp(rep->hold->id, mh->id) != 0 ||
		    strcmp(rep->hold->token, mh->token) != 0)
			FAIL("replay of key %d: id %s replayed %d, model %s", q.key, rep->hold->id,
			     rep->hold->replayed, mh->id);
		learn_hold(mh, rep->hold, false);
	} else if (rc == HF_OK) {
		int hi = m_grant(&q, from, to);
		if (rep->hold->replayed)
			FAIL("a first grant marked replayed");
		if (!g_real && rep->hold->expires_at_ms != M->h[hi].expires)
			FAIL("expires %lld, model %lld", (long long)rep->hold->expires_at_ms,
			     (long long)M->h[hi].expires);
		learn_hold(&M->h[hi], rep->hold, true);
		if (d) {
			d->used = true;
			d->rq = q;
			d->state = 2;
			d->ref = hi;
		}
	}
	hf_reply_free(rep);
}

static int pick_hold(void)
{
	if (M->nh == 0)
		return -1;
	for (int tries = 0; tries < 8; tries++) {
		int i = (int)rnd((uint64_t)M->nh);
		if (M->h[i].state <= HF_HOLD_CONFIRMED || tries >= 6)
			return M->h[i].id[0] ? i : -1;
	}
	return -1;
}

static void step_hold_op(hf_op op)
{
	int i = pick_hold();
	if (i < 0)
		return;
	mhold *h = &M->h[i];
	int64_t ttl = op == HF_OP_EXTEND ? pick_ttl() : 0;
	tracef("%s hold %d (%s) ttl=%lld", op == HF_OP_EXTEND ? "extend" : op == HF_OP_CONFIRM ? "confirm" : "release",
	       i, hf_hold_state_name(h->state), (long long)ttl);
	int expect = HF_OK;
	if (h->state >= HF_HOLD_RELEASED) {
		expect = HF_EENDED;
	} else if (op == HF_OP_EXTEND) {
		if (h->state == HF_HOLD_TENTATIVE) {
			h->expires = M->now + ttl;
			M->seq++;
			M->ev_expect[EV_EXTENDED]++;
		}
	} else if (op == HF_OP_CONFIRM) {
		if (h->state == HF_HOLD_TENTATIVE) {
			h->state = HF_HOLD_CONFIRMED;
			M->seq++;
			M->ev_expect[EV_CONFIRMED]++;
		}
	} else {
		m_end(h, HF_HOLD_RELEASED, M->now);
		m_pump();
	}
	hf_reply *r = ht_hold_op(M->env->st, op, h->id, h->token, ttl);
	if (r->error.code != expect)
		FAIL("hold op on %d: got %s \"%s\", model expects %s", i, hf_err_name(r->error.code),
		     r->error.message, hf_err_name(expect));
	if (expect == HF_OK && r->hold->state != h->state)
		FAIL("hold op reply state %s, model %s", hf_hold_state_name(r->hold->state),
		     hf_hold_state_name(h->state));
	if (g_real && expect == HF_OK && op == HF_OP_EXTEND && h->state == HF_HOLD_TENTATIVE) {
		check_time("extended at", h->id, r->hold->expires_at_ms - ttl);
		h->expires = r->hold->expires_at_ms;
	}
	if (g_real && expect == HF_OK && op == HF_OP_RELEASE) {
		check_time("ended", h->id, r->hold->ended_at_ms);
		h->ended = r->hold->ended_at_ms;
	}
	hf_reply_free(r);
}

static void step_wrong_token(void)
{
	int i = pick_hold();
	if (i < 0)
		return;
	mhold *h = &M->h[i];
	char tok[HF_TOKEN_LEN + 1];
	int j = (int)rnd((uint64_t)M->nh);
	if (j != i && M->h[j].id[0] && rnd(2)) {
		memcpy(tok, M->h[j].token, sizeof tok);
	} else {
		for (int k = 0; k < HF_TOKEN_LEN; k++)
			tok[k] = "0123456789abcdef"[rnd(16)];
		tok[HF_TOKEN_LEN] = '\0';
	}
	if (strcmp(tok, h->token) == 0)
		return;
	hf_op ops[] = {HF_OP_EXTEND, HF_OP_CONFIRM, HF_OP_RELEASE};
	hf_op op = ops[rnd(3)];
	tracef("wrong token op %d on hold %d (%s)", (int)op, i, hf_hold_state_name(h->state));
	hf_reply *r = ht_hold_op(M->env->st, op, h->id, tok, 5000);
	int rc = r->error.code;
	hf_reply_free(r);
	bool ended = h->state >= HF_HOLD_RELEASED;
	if (rc != HF_ETOKEN && !(ended && rc == HF_EENDED))
		FAIL("wrong token on hold %d (%s): got %s", i, hf_hold_state_name(h->state),
		     hf_err_name(rc));
}

static void step_cancel(void)
{
	int act[MAXW], n = 0;
	for (int i = 0; i < M->nw; i++)
		if (M->w[i].active)
			act[n++] = i;
	if (!n)
		return;
	int i = act[rnd((uint64_t)n)];
	tracef("cancel waiter %d", i);
	m_fail_waiter(&M->w[i], HF_ECANCELED);
	m_pump();
	hf_cancel(M->env->st, M->w[i].p.call_id);
}

static void step_put(void)
{
	int r = (int)rnd(NDECL);
	mres *m = &M->r[r];
	int64_t ifv = rnd(3) == 0 ? -1 : rnd(5) == 0 ? m->version + 1 : m->version;
	int64_t cap = 1 + (int64_t)rnd(6);
	/* capacity changes that the rules leave open are not generated: any change while an
	 * exclusive hold or waiter is on it (an exclusive wait's need follows the capacity).
	 * Shrinking under a waiter's need ends that wait (exceeds_capacity) and moves every
	 * queue it stood in. */
	bool excl = false;
	for (int i = 0; i < M->nw; i++)
		if (M->w[i].active)
			for (int k = 0; k < M->w[i].rq.n; k++)
				if (M->w[i].rq.res[k] == r)
					excl |= M->w[i].rq.mode == HF_MODE_EXCLUSIVE;
	for (int i = 0; i < M->nh; i++)
		if (M->h[i].state <= HF_HOLD_CONFIRMED && M->h[i].mode == HF_MODE_EXCLUSIVE)
			for (int k = 0; k < M->h[i].n; k++)
				excl |= M->h[i].res[k] == r;
	int expect = HF_OK;
	if (ifv >= 0 && ifv != m->version)
		expect = HF_EVERSION;
	else if (cap < m->held)
		expect = HF_ECAPINUSE;
	else if (excl && cap != m->cap)
		return;
	char meta[64];
	snprintf(meta, sizeof meta, "{\"step\":%d}", M->step);
	tracef("put %s cap %lld if_version %lld", res_names[r], (long long)cap, (long long)ifv);
	if (expect == HF_OK) {
		m->cap = cap;
		m->version++;
		M->seq++;
		M->ev_expect[EV_RESOURCE]++;
		/* waits are all-of here (the generator parks no any-of request) */
		for (int i = 0; i < M->nw; i++)
			if (M->w[i].active)
				for (int k = 0; k < M->w[i].rq.n; k++)
					if (M->w[i].rq.res[k] == r && M->w[i].need[k] > cap) {
						m_fail_waiter(&M->w[i], HF_ECAPACITY);
						break;
					}
		m_pump();
	}
	int rc = ht_put_rc(M->env->st, res_names[r], cap, meta, ifv);
	if (rc != expect)
		FAIL("put %s: got %s, model expects %s", res_names[r], hf_err_name(rc),
		     hf_err_name(expect));
}

static void step_mismatch(void)
{
	int r = NDECL + (int)rnd(NRES - NDECL);
	if (!m_exists(r))
		return;
	char spec[32];
	snprintf(spec, sizeof spec, "%s:1@%lld", res_names[r], (long long)M->r[r].cap + 1);
	tracef("mismatch probe %s", spec);
	int rc = ht_acquire(M->env->st, spec, NULL, NULL);
	if (rc != HF_ECAPMISMATCH)
		FAIL("claim %s on capacity %lld: got %s", spec, (long long)M->r[r].cap,
		     hf_err_name(rc));
}

static void step_advance(void)
{
	if (g_real) {
		/* the engine's clock moves by itself; nothing falls due within the run */
		tracef("real clock: 1 ms passes");
		ht_sleep_ms(1);
		return;
	}
	int64_t next = INT64_MAX;
	bool is_deadline = false;
	for (int i = 0; i < M->nh; i++)
		if (M->h[i].state == HF_HOLD_TENTATIVE && M->h[i].expires < next)
			next = M->h[i].expires;
	for (int i = 0; i < M->nw; i++)
		if (M->w[i].active && M->w[i].deadline <= next) {
			next = M->w[i].deadline;
			is_deadline = true;
		}
	int64_t to = M->now + 1 + (int64_t)rnd(400);
	if (to >= next)
		to = next;
	else
		is_deadline = false;
	bool tick = is_deadline || rnd(2) == 0;
	atomic_store(&M->env->now, to);
	M->now = to;
	tracef("clock to t+%lld%s", (long long)(to - HT_T0), tick ? " + tick" : "");
	if (tick) {
		m_sweep();
		hf_store_tick(M->env->st);
	}
}

/* Parked waits whose deadline coincides with an expiry are ended now (cancelled): which of
 * the two comes first at one instant is not a rule. */
static void resolve_collisions(void)
{
	if (g_real)
		return; /* nothing falls due on the real clock within the run */
	for (int i = 0; i < M->nw; i++)
		if (M->w[i].active && m_expiry_taken(M->w[i].deadline)) {
			tracef("cancel waiter %d (deadline = an expiry)", i);
			m_fail_waiter(&M->w[i], HF_ECANCELED);
			m_pump();
			hf_cancel(M->env->st, M->w[i].p.call_id);
			collect_waiters();
		}
}

static void model_phase(void **state)
{
	(void)state;
	ht_env *env = ht_env_new(!g_real);
	assert_non_null(env);
	hf_error err;
	RC(ht_env_open(env, &err), HF_OK);
	M = calloc(1, sizeof *M);
	M->env = env;
	M->t_start = hf_now_ms();
	M->rng = g_seed;
	M->now = HT_T0;
	int steps = 4000;
	if (getenv("HF_TEST_MODEL_STEPS"))
		steps = atoi(getenv("HF_TEST_MODEL_STEPS"));
	for (int r = 0; r < NRES; r++) {
		M->r[r].declared = r < NDECL;
		M->r[r].cap = 1 + (int64_t)rnd(g_hot ? 2 : 4);
		if (r < NDECL) {
			M->r[r].version = 1;
			RC(ht_put_rc(env->st, res_names[r], M->r[r].cap, NULL, 0), HF_OK);
			M->seq++;
		}
	}
	memset(M->ev_expect, 0, sizeof M->ev_expect);
	M->ev_expect[EV_RESOURCE] = NDECL;
	compare_all(true);
	for (M->step = 1; M->step <= steps; M->step++) {
		uint64_t k = rnd(100);
		/* every operation first applies what is due: so does the model */
		if (k < 85)
			m_sweep();
		if (k < 32)
			step_acquire();
		else if (k < 42)
			step_hold_op(HF_OP_EXTEND);
		else if (k < 52)
			step_hold_op(HF_OP_CONFIRM);
		else if (k < 64)
			step_hold_op(HF_OP_RELEASE);
		else if (k < 72)
			step_wrong_token();
		else if (k < 77)
			step_cancel();
		else if (k < 82)
			step_put();
		else if (k < 85)
			step_mismatch();
		else
			step_advance();
		compare_all(M->step % 100 == 0);
		resolve_collisions();
	}
	/* the end: nothing parked is left behind; everything compares */
	for (int i = 0; i < M->nw; i++)
		if (M->w[i].active) {
			m_fail_waiter(&M->w[i], HF_ECANCELED);
			m_pump();
			hf_cancel(env->st, M->w[i].p.call_id);
			collect_waiters();
		}
	compare_all(true);
	int granted = 0, waited = M->nw;
	for (int i = 0; i < M->nh; i++)
		granted++;
	fprintf(stderr, "model phase: %d steps, %d holds granted, %d waits, %llu events\n", steps,
	        granted, waited, (unsigned long long)M->seq);
	free(M);
	M = NULL;
	ht_env_free(env);
}

/* ======================= phase 2: threads and invariants ======================= */

enum { TN = 4, TRES = 5, TMAXH = 8192 };
static const char *const t_names[TRES] = {"m0", "m1", "m2", "j0", "j1"};
static const int64_t t_caps[TRES] = {1, 2, 3, 2, 3};

typedef struct trec {
	char id[HF_ID_LEN + 1], token[HF_TOKEN_LEN + 1];
	int n;
	int res[3];
	int64_t units[3];
	int64_t fence[3];
	bool exclusive;
	int owner;
	atomic_int confirmed_kept; /* confirmed by its owner and not (yet) released by it */
} trec;

typedef struct tshared {
	ht_env *env;
	pthread_mutex_t mu;
	trec *recs;
	int nrecs;
	atomic_int stop_clock;
	atomic_int violations;
	char why[256];
	int ops;
} tshared;

static tshared *S;

static void violation(const char *fmt, ...) HF_TEST_PRINTF(1, 2);
static void violation(const char *fmt, ...)
{
	pthread_mutex_lock(&S->mu);
	if (atomic_fetch_add(&S->violations, 1) == 0) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(S->why, sizeof S->why, fmt, ap);
		va_end(ap);
	}
	pthread_mutex_unlock(&S->mu);
}

static int t_res_index(const char *name)
{
	for (int r = 0; r < TRES; r++)
		if (strcmp(name, t_names[r]) == 0)
			return r;
	return -1;
}

/* One atomic observation: the holds of one resource, live ones within capacity. */
static void observe(hf_store *st, int r)
{
	hf_request q;
	hf_request_init(&q, HF_OP_LIST_HOLDS);
	q.resource = t_names[r];
	q.limit = HF_LIST_MAX;
	hf_reply *rep = NULL;
	if (hf_call(st, &q, &rep) != HF_OK) {
		violation("list holds of %s: %s", t_names[r], hf_err_name(rep->error.code));
		hf_reply_free(rep);
		return;
	}
	int64_t units = 0;
	int live = 0, excl = 0;
	for (size_t i = 0; i < rep->n_holds; i++) {
		const hf_hold *h = &rep->holds[i];
		if (h->state > HF_HOLD_CONFIRMED)
			continue;
		live++;
		excl += h->mode == HF_MODE_EXCLUSIVE;
		for (size_t k = 0; k < h->n_parts; k++)
			if (strcmp(h->parts[k].resource, t_names[r]) == 0)
				units += h->parts[k].units;
	}
	if (units > t_caps[r])
		violation("%s: %lld units held, capacity %lld", t_names[r], (long long)units,
		          (long long)t_caps[r]);
	if (excl > 0 && live > 1)
		violation("%s: an exclusive hold is not alone (%d live)", t_names[r], live);
	hf_reply_free(rep);
}

struct worker {
	int idx;
	uint64_t rng;
	int mine[TMAXH];
	int nmine;
};

static void *worker_main(void *arg)
{
	struct worker *wk = arg;
	hf_store *st = S->env->st;
	for (int op = 0; op < S->ops && atomic_load(&S->violations) == 0; op++) {
		uint64_t k = ht_rand(&wk->rng) % 100;
		if (k < 40 || wk->nmine == 0) {
			/* acquire */
			int n = 1 + (int)(ht_rand(&wk->rng) % 2);
			int first = (int)(ht_rand(&wk->rng) % TRES);
			char spec[128] = "";
			hf_mode mode = (hf_mode)(ht_rand(&wk->rng) % 3);
			for (int c = 0; c < n; c++) {
				int r = (first + c * 2) % TRES;
				char part[48];
				int64_t units = 1 + (int64_t)(ht_rand(&wk->rng) % (uint64_t)t_caps[r]);
				if (r >= 3)
					snprintf(part, sizeof part, "%s%s:%lld@%lld", c ? "," : "", t_names[r],
					         (long long)units, (long long)t_caps[r]);
				else
					snprintf(part, sizeof part, "%s%s:%lld", c ? "," : "", t_names[r],
					         (long long)units);
				strcat(spec, part);
			}
			ht_acq o = {.mode = mode,
			            .ttl_ms = 20 + (int64_t)(ht_rand(&wk->rng) % 400),
			            .wait_ms = ht_rand(&wk->rng) % 2 ? 0 : 1 + (int64_t)(ht_rand(&wk->rng) % 300),
			            .any = n > 1 && ht_rand(&wk->rng) % 4 == 0};
			hf_hold *h = NULL;
			int rc = ht_acquire(st, spec, &o, &h);
			if (rc == HF_OK) {
				pthread_mutex_lock(&S->mu);
				int ri = S->nrecs < TN * TMAXH ? S->nrecs++ : -1;
				if (ri >= 0) {
					trec *t = &S->recs[ri];
					memcpy(t->id, h->id, sizeof t->id);
					memcpy(t->token, h->token, sizeof t->token);
					t->n = (int)h->n_parts;
					t->exclusive = h->mode == HF_MODE_EXCLUSIVE;
					t->owner = wk->idx;
					for (size_t p = 0; p < h->n_parts && p < 3; p++) {
						t->res[p] = t_res_index(h->parts[p].resource);
						t->units[p] = h->parts[p].units;
						t->fence[p] = h->parts[p].fence;
					}
				}
				pthread_mutex_unlock(&S->mu);
				if (ri >= 0 && wk->nmine < TMAXH)
					wk->mine[wk->nmine++] = ri;
				for (size_t p = 0; p < h->n_parts; p++) {
					int r = t_res_index(h->parts[p].resource);
					if (r < 0)
						violation("granted unknown resource %s", h->parts[p].resource);
					else if (h->parts[p].units > t_caps[r])
						violation("granted %lld units of %s", (long long)h->parts[p].units,
						          t_names[r]);
				}
				hf_hold_free(h);
			} else if (rc != HF_EUNAVAILABLE && rc != HF_ETIMEDOUT) {
				violation("acquire %s: %s", spec, hf_err_name(rc));
			}
		} else if (k < 85) {
			/* extend / confirm / release one of mine */
			int mi = (int)(ht_rand(&wk->rng) % (uint64_t)wk->nmine);
			trec *t = &S->recs[wk->mine[mi]];
			hf_op ops[] = {HF_OP_EXTEND, HF_OP_CONFIRM, HF_OP_RELEASE};
			hf_op o = ops[ht_rand(&wk->rng) % 3];
			hf_reply *r = ht_hold_op(st, o, t->id, t->token, 20 + (int64_t)(ht_rand(&wk->rng) % 400));
			int rc = r->error.code;
			hf_reply_free(r);
			bool kept = atomic_load(&t->confirmed_kept) != 0;
			if (rc == HF_OK && o == HF_OP_CONFIRM)
				atomic_store(&t->confirmed_kept, 1);
			if (rc == HF_OK && o == HF_OP_RELEASE)
				atomic_store(&t->confirmed_kept, 0);
			if (kept && rc != HF_OK)
				violation("op %d on my confirmed hold %s: %s (a wrong token changed it?)",
				          (int)o, t->id, hf_err_name(rc));
			if (rc != HF_OK && rc != HF_EENDED && rc != HF_ENOHOLD)
				violation("op %d on my hold: %s", (int)o, hf_err_name(rc));
			if (rc == HF_EENDED || rc == HF_ENOHOLD || o == HF_OP_RELEASE)
				wk->mine[mi] = wk->mine[--wk->nmine];
		} else if (k < 93) {
			/* someone else's hold with a wrong token */
			pthread_mutex_lock(&S->mu);
			int n = S->nrecs;
			pthread_mutex_unlock(&S->mu);
			if (n == 0)
				continue;
			trec *t = &S->recs[ht_rand(&wk->rng) % (uint64_t)n];
			char tok[HF_TOKEN_LEN + 1];
			for (int c = 0; c < HF_TOKEN_LEN; c++)
				tok[c] = "0123456789abcdef"[ht_rand(&wk->rng) % 16];
			tok[HF_TOKEN_LEN] = '\0';
			hf_op ops[] = {HF_OP_EXTEND, HF_OP_CONFIRM, HF_OP_RELEASE};
			hf_reply *r = ht_hold_op(st, ops[ht_rand(&wk->rng) % 3], t->id, tok, 100000);
			int rc = r->error.code;
			hf_reply_free(r);
			if (rc != HF_ETOKEN && rc != HF_EENDED && rc != HF_ENOHOLD)
				violation("wrong token on %s: %s", t->id, hf_err_name(rc));
		} else {
			observe(st, (int)(ht_rand(&wk->rng) % TRES));
		}
	}
	return NULL;
}

static void *clock_main(void *arg)
{
	(void)arg;
	while (!atomic_load(&S->stop_clock)) {
		ht_advance(S->env, 7);
		hf_store_tick(S->env->st);
		ht_sleep_ms(1);
	}
	return NULL;
}

static void threads_phase(void **state)
{
	(void)state;
	ht_env *env = ht_env_new(!g_real);
	assert_non_null(env);
	env->opt.hold_retention_ms = 3600000; /* keep every ended hold readable for the check */
	hf_error err;
	RC(ht_env_open(env, &err), HF_OK);
	S = calloc(1, sizeof *S);
	S->env = env;
	S->recs = calloc(TN * TMAXH, sizeof *S->recs);
	pthread_mutex_init(&S->mu, NULL);
	S->ops = 600;
	if (getenv("HF_TEST_MODEL_OPS"))
		S->ops = atoi(getenv("HF_TEST_MODEL_OPS"));
	for (int r = 0; r < 3; r++)
		RC(ht_put_rc(env->st, t_names[r], t_caps[r], NULL, -1), HF_OK);

	struct worker *wk = calloc(TN, sizeof *wk);
	pthread_t th[TN], clk;
	if (!g_real)
		assert_int_equal(pthread_create(&clk, NULL, clock_main, NULL), 0);
	for (int i = 0; i < TN; i++) {
		wk[i].idx = i;
		wk[i].rng = g_seed ^ (0x1000193ULL * (uint64_t)(i + 1));
		assert_int_equal(pthread_create(&th[i], NULL, worker_main, &wk[i]), 0);
	}
	for (int i = 0; i < TN; i++)
		pthread_join(th[i], NULL);
	atomic_store(&S->stop_clock, 1);
	if (!g_real)
		pthread_join(clk, NULL);
	if (atomic_load(&S->violations))
		fail_msg("HF_TEST_SEED=%llu: %s", (unsigned long long)g_seed, S->why);

	/* the final check: fold the event log */
	hf_store *st = env->st;
	if (g_real) {
		ht_sleep_ms(600); /* past every tentative lease (at most 420 ms) */
	} else {
		ht_advance(env, 1); /* settle what is due, then make it durable */
		hf_store_tick(st);
	}
	RC(ht_put_rc(st, "m0", 1, "{\"end\":true}", -1), HF_OK);
	int64_t held[TRES] = {0}, last_fence[TRES] = {0};
	int live_excl[TRES] = {0}, live_n[TRES] = {0};
	char (*live)[HF_ID_LEN + 1] = calloc((size_t)S->nrecs + 1, sizeof *live);
	int nlive = 0;
	uint64_t after = 0;
	for (;;) {
		hf_reply *r = ht_events(st, after, HF_LIST_MAX);
		REPLY_RC(r, HF_OK);
		if (r->n_events == 0) {
			hf_reply_free(r);
			break;
		}
		for (size_t i = 0; i < r->n_events; i++) {
			const hf_event *e = &r->events[i];
			if (e->seq != after + 1)
				fail_msg("HF_TEST_SEED=%llu: event gap at %llu", (unsigned long long)g_seed,
				         (unsigned long long)e->seq);
			after = e->seq;
			if (!e->hold_id)
				continue;
			trec *t = NULL;
			for (int k = 0; k < S->nrecs && !t; k++)
				if (strcmp(S->recs[k].id, e->hold_id) == 0)
					t = &S->recs[k];
			if (!t)
				fail_msg("HF_TEST_SEED=%llu: event %s for a hold no caller was granted: %s",
				         (unsigned long long)g_seed, e->type, e->hold_id);
			int sign = 0;
			if (strcmp(e->type, "hold.granted") == 0) {
				sign = 1;
				memcpy(live[nlive++], t->id, sizeof live[0]);
			} else if (strcmp(e->type, "hold.released") == 0 ||
			           strcmp(e->type, "hold.expired") == 0) {
				sign = -1;
				for (int k = 0; k < nlive; k++)
					if (strcmp(live[k], t->id) == 0) {
						memcpy(live[k], live[--nlive], sizeof live[0]);
						break;
					}
			}
			for (int p = 0; p < t->n && sign; p++) {
				int rr = t->res[p];
				held[rr] += sign * t->units[p];
				live_n[rr] += sign;
				live_excl[rr] += t->exclusive ? sign : 0;
				if (sign > 0) {
					if (t->fence[p] <= last_fence[rr])
						fail_msg("HF_TEST_SEED=%llu: %s fence %lld granted after %lld",
						         (unsigned long long)g_seed, t_names[rr],
						         (long long)t->fence[p], (long long)last_fence[rr]);
					last_fence[rr] = t->fence[p];
				}
				if (held[rr] > t_caps[rr] || held[rr] < 0)
					fail_msg("HF_TEST_SEED=%llu: at event %llu %s has %lld units held",
					         (unsigned long long)g_seed, (unsigned long long)e->seq,
					         t_names[rr], (long long)held[rr]);
				if (live_excl[rr] > 0 && live_n[rr] > 1)
					fail_msg("HF_TEST_SEED=%llu: at event %llu an exclusive hold on %s "
					         "is not alone",
					         (unsigned long long)g_seed, (unsigned long long)e->seq,
					         t_names[rr]);
			}
		}
		hf_reply_free(r);
	}
	/* the fold equals the engine's live state */
	for (int r = 0; r < TRES; r++) {
		ht_res v = ht_res_get(st, t_names[r]);
		int64_t h = v.rc == HF_OK ? v.held : 0;
		if (h != held[r])
			fail_msg("HF_TEST_SEED=%llu: %s engine holds %lld units, the event log %lld",
			         (unsigned long long)g_seed, t_names[r], (long long)h, (long long)held[r]);
	}
	for (int k = 0; k < nlive; k++) {
		ht_hold_view v = ht_hold_get(st, live[k]);
		if (v.rc != HF_OK || v.state > HF_HOLD_CONFIRMED)
			fail_msg("HF_TEST_SEED=%llu: hold %s live by the log, engine %s/%s",
			         (unsigned long long)g_seed, live[k], hf_err_name(v.rc),
			         hf_hold_state_name(v.state));
	}
	/* confirmed holds their owners kept are still confirmed: no wrong token touched them */
	for (int k = 0; k < S->nrecs; k++)
		if (atomic_load(&S->recs[k].confirmed_kept)) {
			ht_hold_view v = ht_hold_get(st, S->recs[k].id);
			if (v.state != HF_HOLD_CONFIRMED)
				fail_msg("HF_TEST_SEED=%llu: kept hold %s is %s", (unsigned long long)g_seed,
				         S->recs[k].id, hf_hold_state_name(v.state));
		}
	fprintf(stderr, "threads phase: %d grants, %llu events\n", S->nrecs,
	        (unsigned long long)after);
	free(live);
	free(wk);
	pthread_mutex_destroy(&S->mu);
	free(S->recs);
	free(S);
	S = NULL;
	ht_env_free(env);
}

int main(void)
{
	g_seed = ht_seed();
	g_hot = getenv("HF_TEST_MODEL_HOT") && atoi(getenv("HF_TEST_MODEL_HOT")) != 0;
	g_real = getenv("HF_TEST_MODEL_CLOCK") && strcmp(getenv("HF_TEST_MODEL_CLOCK"), "real") == 0;
	fprintf(stderr, "model test: HF_TEST_SEED=%llu%s\n", (unsigned long long)g_seed,
	        g_real ? " (real clock)" : "");
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(model_phase),
		cmocka_unit_test(threads_phase),
	};
	ht_apply_filter();
	int failed = cmocka_run_group_tests_name("model", tests, NULL, NULL);
	if (failed)
		fprintf(stderr, "model test: reproduce with HF_TEST_SEED=%llu\n",
		        (unsigned long long)g_seed);
	return failed;
}
