/*
 * check.c — judges a holdfast-bench history. Two independent views are checked: the clients'
 * (what was definitely live, from send/reply times on one clock) and the server's event log
 * (the authoritative order of grants and ends), and the two are cross-checked.
 *
 * Soundness of the client view: a grant happened before its reply was read (t_ack), and a
 * request that succeeded on a hold found it live when processed, after it was sent (t_send).
 * Holds never come back to life, so a hold is certainly live over [grant t_ack, t_send of its
 * last successful confirm/release/live read]. Only such intervals are compared: a hold whose
 * lease ran out has no known end on the client side and is judged by the log instead.
 */
#include "check.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

static const char *const check_names[] = {
#define HFB__CHECK_NAME(id, name) name,
    HFB_CHECKS(HFB__CHECK_NAME)
#undef HFB__CHECK_NAME
};

const char *hfb_check_name(enum hfb_check_id id)
{
	return (unsigned)id < HFB_CHECK_COUNT ? check_names[id] : "unknown";
}

/* ---- the history ---- */

void hfb_history_init(struct hfb_history *h)
{
	memset(h, 0, sizeof(*h));
	pthread_mutex_init(&h->lock, NULL);
}

void hfb_history_release(struct hfb_history *h)
{
	for (size_t i = 0; i < h->n_res; i++)
		free(h->res[i].name);
	free(h->res);
	free(h->slots);
	free(h->obs);
	free(h->ev);
	pthread_mutex_destroy(&h->lock);
	memset(h, 0, sizeof(*h));
}

static uint64_t name_hash(const char *s)
{
	uint64_t x = 1469598103934665603ull; /* FNV-1a */
	for (; *s; s++)
		x = (x ^ (unsigned char)*s) * 1099511628211ull;
	return x;
}

/* Slot of `name`, or of the empty slot where it would go. Caller holds the lock. */
static size_t slot_of(const struct hfb_history *h, const char *name)
{
	size_t i = (size_t)name_hash(name) & (h->n_slots - 1);
	while (h->slots[i] >= 0 && strcmp(h->res[h->slots[i]].name, name) != 0)
		i = (i + 1) & (h->n_slots - 1);
	return i;
}

static int grow_slots(struct hfb_history *h)
{
	size_t n = h->n_slots ? h->n_slots * 2 : 64;
	int *s = malloc(n * sizeof(*s));
	if (!s)
		return -1;
	for (size_t i = 0; i < n; i++)
		s[i] = -1;
	free(h->slots);
	h->slots = s;
	h->n_slots = n;
	for (size_t r = 0; r < h->n_res; r++)
		h->slots[slot_of(h, h->res[r].name)] = (int)r;
	return 0;
}

int hfb_history_find(struct hfb_history *h, const char *name)
{
	pthread_mutex_lock(&h->lock);
	int r = h->n_slots ? h->slots[slot_of(h, name)] : -1;
	pthread_mutex_unlock(&h->lock);
	return r;
}

int hfb_history_resource(struct hfb_history *h, const char *name, int64_t capacity)
{
	int r = -1;
	pthread_mutex_lock(&h->lock);
	if ((h->n_res + 1) * 2 > h->n_slots && grow_slots(h) != 0)
		goto out;
	size_t s = slot_of(h, name);
	if (h->slots[s] >= 0) {
		r = h->slots[s];
		goto out;
	}
	if (h->n_res == h->cap_res) {
		size_t n = h->cap_res ? h->cap_res * 2 : 64;
		struct hfb_resource *p = realloc(h->res, n * sizeof(*p));
		if (!p)
			goto out;
		h->res = p;
		h->cap_res = n;
	}
	char *copy = strdup(name);
	if (!copy)
		goto out;
	h->res[h->n_res] = (struct hfb_resource){.name = copy, .capacity = capacity};
	r = (int)h->n_res++;
	h->slots[s] = r;
out:
	pthread_mutex_unlock(&h->lock);
	return r;
}

/* Appends one element of `size` bytes to a growable array. Caller holds the lock. */
static int push(void **arr, size_t *n, size_t *cap, size_t size, const void *item)
{
	if (*n == *cap) {
		size_t c = *cap ? *cap * 2 : 1024;
		void *p = realloc(*arr, c * size);
		if (!p)
			return HF_ENOMEM;
		*arr = p;
		*cap = c;
	}
	memcpy((char *)*arr + *n * size, item, size);
	(*n)++;
	return HF_OK;
}

int hfb_history_add(struct hfb_history *h, const struct hfb_obs *o)
{
	pthread_mutex_lock(&h->lock);
	int rc = push((void **)&h->obs, &h->n_obs, &h->cap_obs, sizeof(*o), o);
	pthread_mutex_unlock(&h->lock);
	return rc;
}

int hfb_history_add_event(struct hfb_history *h, const struct hfb_event *e)
{
	pthread_mutex_lock(&h->lock);
	int rc = push((void **)&h->ev, &h->n_ev, &h->cap_ev, sizeof(*e), e);
	pthread_mutex_unlock(&h->lock);
	return rc;
}

/* ---- the checks ---- */

struct ctx {
	struct hfb_history *h;
	FILE *out;
	size_t max_print;
	struct hfb_report *rep;
	int64_t t0;    /* earliest send: times are printed relative to it */
	size_t *by_id; /* indices of GRANT observations, sorted by hold id */
	size_t n_by_id;
	size_t *other; /* indices of every other observation, sorted by hold id */
	size_t n_other;
	int64_t
	    *live_end; /* per observation (GRANT only): certainly live until; INT64_MIN: unknown */
	size_t *ev_by_id; /* indices of GRANTED events, sorted by hold id */
	size_t n_ev_by_id;
};

/* Counts a violation; true if it should be printed too. */
static bool violation(struct ctx *c, enum hfb_check_id id)
{
	c->rep->violations++;
	c->rep->by_check[id]++;
	if (!c->out || c->rep->violations > c->max_print)
		return false;
	fprintf(c->out, "VIOLATION %s: ", hfb_check_name(id));
	return true;
}

static double rel_ms(const struct ctx *c, int64_t t)
{
	return (double)(t - c->t0) / 1000.0;
}

static const char *res_name(const struct ctx *c, int r)
{
	return r >= 0 && (size_t)r < c->h->n_res ? c->h->res[r].name : "?";
}

/* Prints one grant observation: who, when, what. */
static void print_grant(const struct ctx *c, size_t gi)
{
	const struct hfb_obs *g = &c->h->obs[gi];
	fprintf(c->out, "    hold %s client %d%s: acquire sent %+.3f ms, granted by %+.3f ms",
	        g->hold, g->client, g->exclusive ? " exclusive" : "", rel_ms(c, g->t_send),
	        rel_ms(c, g->t_ack));
	if (c->live_end && c->live_end[gi] != INT64_MIN)
		fprintf(c->out, ", still live at %+.3f ms", rel_ms(c, c->live_end[gi]));
	for (size_t p = 0; p < g->n_parts; p++)
		fprintf(c->out, "; '%s' %" PRId64 " units fence %" PRId64,
		        res_name(c, g->parts[p].res), g->parts[p].units, g->parts[p].fence);
	fputc('\n', c->out);
}

static const char *obs_kind_name(enum hfb_kind k)
{
	switch (k) {
	case HFB_GRANT:
		return "grant";
	case HFB_CONFIRM:
		return "confirm";
	case HFB_RELEASE:
		return "release";
	case HFB_FINAL:
		return "final read";
	}
	return "?";
}

static void print_obs(const struct ctx *c, const struct hfb_obs *o)
{
	fprintf(c->out, "    %s of hold %s by client %d: sent %+.3f ms, answered %+.3f ms: %s",
	        obs_kind_name(o->kind), o->hold, o->client, rel_ms(c, o->t_send),
	        rel_ms(c, o->t_ack), o->code == HF_OK ? "ok" : hf_err_name(o->code));
	if (o->kind == HFB_FINAL)
		fprintf(c->out, ", state %s",
		        o->state < 0 ? "not found" : hf_hold_state_name((hf_hold_state)o->state));
	fputc('\n', c->out);
}

static struct hfb_history *sort_h; /* qsort has no context argument; hfb_check is not reentrant */

static int cmp_obs_by_id(const void *a, const void *b)
{
	const struct hfb_obs *x = &sort_h->obs[*(const size_t *)a],
	                     *y = &sort_h->obs[*(const size_t *)b];
	return strcmp(x->hold, y->hold);
}

static int cmp_ev_by_id(const void *a, const void *b)
{
	const struct hfb_event *x = &sort_h->ev[*(const size_t *)a],
	                       *y = &sort_h->ev[*(const size_t *)b];
	return strcmp(x->hold, y->hold);
}

static int cmp_ev_seq(const void *a, const void *b)
{
	const struct hfb_event *x = a, *y = b;
	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* The GRANT observation of hold `id`, or -1. */
static long find_grant(const struct ctx *c, const char *id)
{
	size_t lo = 0, hi = c->n_by_id;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		int d = strcmp(c->h->obs[c->by_id[mid]].hold, id);
		if (d == 0)
			return (long)c->by_id[mid];
		if (d < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return -1;
}

static long find_granted_event(const struct ctx *c, const char *id)
{
	size_t lo = 0, hi = c->n_ev_by_id;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		int d = strcmp(c->h->ev[c->ev_by_id[mid]].hold, id);
		if (d == 0)
			return (long)c->ev_by_id[mid];
		if (d < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return -1;
}

/* One certainly-live stretch of one part of one grant. */
struct ival {
	int res;
	int64_t start, end, units;
	size_t grant;
	bool exclusive;
};

struct endpoint {
	int64_t t;
	int start; /* 0: an end, 1: a start — ends sort first, so touching intervals never overlap
	            */
	size_t ival;
};

static int cmp_ival_res(const void *a, const void *b)
{
	const struct ival *x = a, *y = b;
	if (x->res != y->res)
		return x->res < y->res ? -1 : 1;
	return x->start < y->start ? -1 : x->start > y->start;
}

static int cmp_endpoint(const void *a, const void *b)
{
	const struct endpoint *x = a, *y = b;
	if (x->t != y->t)
		return x->t < y->t ? -1 : 1;
	return x->start - y->start;
}

/* Over-capacity and double grants among certainly-live intervals of one resource. */
static int sweep_resource(struct ctx *c, const struct ival *iv, size_t n)
{
	struct endpoint *ep = malloc(2 * n * sizeof(*ep));
	size_t *live = malloc(n * sizeof(*live));
	if (!ep || !live) {
		free(ep);
		free(live);
		return -1;
	}
	for (size_t i = 0; i < n; i++) {
		ep[2 * i] = (struct endpoint){iv[i].start, 1, i};
		ep[2 * i + 1] = (struct endpoint){iv[i].end, 0, i};
	}
	qsort(ep, 2 * n, sizeof(*ep), cmp_endpoint);
	int64_t cap = c->h->res[iv[0].res].capacity, sum = 0;
	size_t n_live = 0;
	for (size_t e = 0; e < 2 * n; e++) {
		const struct ival *x = &iv[ep[e].ival];
		if (!ep[e].start) {
			for (size_t k = 0; k < n_live; k++)
				if (live[k] == ep[e].ival) {
					live[k] = live[--n_live];
					break;
				}
			sum -= x->units;
			continue;
		}
		live[n_live++] = ep[e].ival;
		sum += x->units;
		if (sum <= cap)
			continue;
		bool excl = cap == 1;
		for (size_t k = 0; k < n_live; k++)
			excl = excl || iv[live[k]].exclusive;
		if (!violation(c, excl ? HFB_CHECK_DOUBLE_GRANT : HFB_CHECK_OVER_CAPACITY))
			continue;
		fprintf(c->out,
		        "resource '%s' capacity %" PRId64 ": %" PRId64
		        " units held at %+.3f ms by %zu live holds:\n",
		        res_name(c, x->res), cap, sum, rel_ms(c, x->start), n_live);
		for (size_t k = 0; k < n_live && k < 8; k++)
			print_grant(c, iv[live[k]].grant);
	}
	free(ep);
	free(live);
	return 0;
}

static int cmp_i64_ival_ack(const void *a, const void *b, bool by_send)
{
	const struct ival *x = a, *y = b;
	const struct hfb_obs *gx = &sort_h->obs[x->grant], *gy = &sort_h->obs[y->grant];
	int64_t tx = by_send ? gx->t_send : gx->t_ack, ty = by_send ? gy->t_send : gy->t_ack;
	return tx < ty ? -1 : tx > ty;
}

static int cmp_by_ack(const void *a, const void *b)
{
	return cmp_i64_ival_ack(a, b, false);
}

static int cmp_by_send(const void *a, const void *b)
{
	return cmp_i64_ival_ack(a, b, true);
}

/* Fences in real-time order on one resource: a grant answered before another was even asked
 * for must carry the lower fence. Here `start` holds the fence, `end` is unused. */
static int fence_resource(struct ctx *c, struct ival *by_ack, size_t n)
{
	struct ival *by_send = malloc(n * sizeof(*by_send));
	if (!by_send)
		return -1;
	memcpy(by_send, by_ack, n * sizeof(*by_send));
	qsort(by_ack, n, sizeof(*by_ack), cmp_by_ack);
	qsort(by_send, n, sizeof(*by_send), cmp_by_send);
	size_t a = 0, best = 0;
	int64_t max_fence = INT64_MIN;
	for (size_t b = 0; b < n; b++) {
		const struct hfb_obs *gb = &c->h->obs[by_send[b].grant];
		while (a < n && c->h->obs[by_ack[a].grant].t_ack < gb->t_send) {
			if (by_ack[a].start > max_fence) {
				max_fence = by_ack[a].start;
				best = a;
			}
			a++;
		}
		if (max_fence == INT64_MIN || max_fence < by_send[b].start)
			continue;
		if (violation(c, HFB_CHECK_FENCE_ORDER)) {
			fprintf(c->out,
			        "resource '%s': a grant answered before a later one was asked for "
			        "has fence %" PRId64 " >= %" PRId64 ":\n",
			        res_name(c, by_send[b].res), max_fence, by_send[b].start);
			print_grant(c, by_ack[best].grant);
			print_grant(c, by_send[b].grant);
		}
	}
	free(by_send);
	return 0;
}

/* The client view: intervals, fences, confirms. */
static int check_clients(struct ctx *c)
{
	struct hfb_history *h = c->h;
	int rc = -1;
	struct ival *iv = NULL, *fv = NULL;
	size_t n_iv = 0, n_fv = 0, n_parts = 0;

	for (size_t i = 0; i < h->n_obs; i++) {
		c->live_end[i] = INT64_MIN;
		if (h->obs[i].kind == HFB_GRANT) {
			c->rep->grants++;
			n_parts += h->obs[i].n_parts;
		}
	}
	/* How long each grant was certainly live: its last successful call or live read. */
	for (size_t i = 0; i < h->n_obs; i++) {
		const struct hfb_obs *o = &h->obs[i];
		bool alive = (o->kind == HFB_CONFIRM || o->kind == HFB_RELEASE) ? o->code == HF_OK
		             : o->kind == HFB_FINAL
		                 ? (o->state == HF_HOLD_TENTATIVE || o->state == HF_HOLD_CONFIRMED)
		                 : false;
		if (!alive)
			continue;
		long g = find_grant(c, o->hold);
		if (g >= 0 && o->t_send > c->live_end[g])
			c->live_end[g] = o->t_send;
	}
	iv = malloc((n_parts + 1) * sizeof(*iv));
	fv = malloc((n_parts + 1) * sizeof(*fv));
	if (!iv || !fv)
		goto out;
	for (size_t i = 0; i < h->n_obs; i++) {
		const struct hfb_obs *g = &h->obs[i];
		if (g->kind != HFB_GRANT)
			continue;
		bool definite = c->live_end[i] != INT64_MIN && c->live_end[i] >= g->t_ack;
		c->rep->intervals += definite;
		for (size_t p = 0; p < g->n_parts; p++) {
			if (g->parts[p].res < 0)
				continue;
			if (definite)
				iv[n_iv++] =
				    (struct ival){g->parts[p].res,   g->t_ack, c->live_end[i],
				                  g->parts[p].units, i,        g->exclusive};
			if (g->parts[p].fence > 0)
				fv[n_fv++] = (struct ival){
				    g->parts[p].res, g->parts[p].fence, 0, 0, i, false};
		}
	}
	qsort(iv, n_iv, sizeof(*iv), cmp_ival_res);
	for (size_t s = 0, e; s < n_iv; s = e) {
		for (e = s; e < n_iv && iv[e].res == iv[s].res; e++)
			;
		if (sweep_resource(c, iv + s, e - s) != 0)
			goto out;
	}
	qsort(fv, n_fv, sizeof(*fv), cmp_ival_res);
	for (size_t s = 0, e; s < n_fv; s = e) {
		for (e = s; e < n_fv && fv[e].res == fv[s].res; e++)
			;
		if (fence_resource(c, fv + s, e - s) != 0)
			goto out;
	}

	/* Every acknowledged confirm is kept until its holder releases it. */
	for (size_t i = 0; i < h->n_obs; i++) {
		const struct hfb_obs *o = &h->obs[i];
		if (o->kind != HFB_CONFIRM || o->code != HF_OK)
			continue;
		c->rep->confirms++;
		const struct hfb_obs *fin = NULL, *rel = NULL, *refused = NULL;
		size_t lo = 0, hi = c->n_other;
		while (lo < hi) { /* the first of this hold's calls in by-id order */
			size_t mid = (lo + hi) / 2;
			if (strcmp(h->obs[c->other[mid]].hold, o->hold) < 0)
				lo = mid + 1;
			else
				hi = mid;
		}
		for (size_t j = lo;
		     j < c->n_other && strcmp(h->obs[c->other[j]].hold, o->hold) == 0; j++) {
			const struct hfb_obs *x = &h->obs[c->other[j]];
			if (x->kind == HFB_FINAL && (!fin || x->t_send > fin->t_send))
				fin = x;
			if (x->kind == HFB_RELEASE && x->code == HF_OK)
				rel = x;
			if (x->kind == HFB_RELEASE && x->code == HF_EENDED)
				refused = x;
		}
		/* Kept: released later by its holder (the release found it live, so the confirm
		 * held until then), or read back confirmed at the end. */
		bool kept = !refused && (rel || (fin && fin->state == HF_HOLD_CONFIRMED));
		if (kept || !violation(c, HFB_CHECK_LOST_CONFIRM))
			continue;
		fprintf(c->out, "hold %s: confirm acknowledged, %s\n", o->hold,
		        refused ? "then its holder's release was answered hold_ended"
		        : !fin  ? "never released by its holder nor read back at the end"
		                : "but the hold did not stay confirmed");
		print_obs(c, o);
		if (refused)
			print_obs(c, refused);
		if (fin)
			print_obs(c, fin);
	}
	rc = 0;
out:
	free(iv);
	free(fv);
	return rc;
}

/* Holds of the log live on resource `r` before event `upto`: for a violation's report. */
static void print_log_holders(const struct ctx *c, int r, size_t upto, const bool *ended)
{
	size_t shown = 0;
	for (size_t i = 0; i < upto && shown < 8; i++) {
		const struct hfb_event *e = &c->h->ev[i];
		if (e->type != HFB_EV_GRANTED || ended[i])
			continue;
		for (size_t p = 0; p < e->n_parts; p++) {
			if (e->parts[p].res != r)
				continue;
			fprintf(c->out,
			        "    seq %" PRIu64 " granted hold %s %" PRId64
			        " units fence %" PRId64 ", not ended\n",
			        e->seq, e->hold, e->parts[p].units, e->parts[p].fence);
			shown++;
		}
	}
}

/* The server view: replay the log in seq order; then cross-check the clients against it. */
static int check_log(struct ctx *c)
{
	struct hfb_history *h = c->h;
	int64_t *held = calloc(h->n_res + 1, sizeof(*held));
	int64_t *last_fence = calloc(h->n_res + 1, sizeof(*last_fence));
	bool *ended = calloc(h->n_ev + 1, sizeof(*ended));
	int *end_type = calloc(h->n_ev + 1, sizeof(*end_type));
	bool *confirmed = calloc(h->n_ev + 1, sizeof(*confirmed));
	int rc = -1;
	if (!held || !last_fence || !ended || !end_type || !confirmed)
		goto out;

	for (size_t i = 0; i < h->n_ev; i++) {
		const struct hfb_event *e = &h->ev[i];
		c->rep->events++;
		if (e->type == HFB_EV_GRANTED) {
			for (size_t p = 0; p < e->n_parts; p++) {
				int r = e->parts[p].res;
				if (r < 0)
					continue;
				int64_t cap = h->res[r].capacity;
				if (held[r] + e->parts[p].units > cap &&
				    violation(c, cap == 1 || e->parts[p].units == cap
				                     ? HFB_CHECK_LOG_DOUBLE_GRANT
				                     : HFB_CHECK_LOG_OVER_CAPACITY)) {
					fprintf(c->out,
					        "log seq %" PRIu64 " grants hold %s %" PRId64
					        " units of '%s' (capacity %" PRId64
					        ") while %" PRId64 " are held:\n",
					        e->seq, e->hold, e->parts[p].units, res_name(c, r),
					        cap, held[r]);
					print_log_holders(c, r, i, ended);
				}
				held[r] += e->parts[p].units;
				if (e->parts[p].fence <= last_fence[r] &&
				    violation(c, HFB_CHECK_LOG_FENCE_ORDER))
					fprintf(c->out,
					        "log seq %" PRIu64
					        " grants hold %s on '%s' fence %" PRId64
					        ", not above the previous grant's fence %" PRId64
					        "\n",
					        e->seq, e->hold, res_name(c, r), e->parts[p].fence,
					        last_fence[r]);
				if (e->parts[p].fence > last_fence[r])
					last_fence[r] = e->parts[p].fence;
			}
			continue;
		}
		long g = find_granted_event(c, e->hold);
		if (g < 0)
			continue; /* granted before the log we read: not ours to judge */
		if (e->type == HFB_EV_CONFIRMED) {
			confirmed[g] = true;
			continue;
		}
		if (ended[g]) {
			if (violation(c, HFB_CHECK_LOG_MISMATCH))
				fprintf(c->out, "log seq %" PRIu64 " ends hold %s a second time\n",
				        e->seq, e->hold);
			continue;
		}
		if (e->type == HFB_EV_EXPIRED && confirmed[g] &&
		    violation(c, HFB_CHECK_LOG_MISMATCH))
			fprintf(c->out, "log seq %" PRIu64 ": confirmed hold %s expired\n", e->seq,
			        e->hold);
		ended[g] = true;
		end_type[g] = (int)e->type;
		const struct hfb_event *ge = &h->ev[g];
		for (size_t p = 0; p < ge->n_parts; p++)
			if (ge->parts[p].res >= 0)
				held[ge->parts[p].res] -= ge->parts[p].units;
	}

	/* What the clients were told must be what the log says happened. */
	for (size_t i = 0; i < h->n_obs; i++) {
		const struct hfb_obs *o = &h->obs[i];
		if (o->code != HF_OK || o->kind == HFB_FINAL)
			continue;
		long g = find_granted_event(c, o->hold);
		if (g < 0) {
			if (violation(c, HFB_CHECK_LOG_MISMATCH)) {
				fprintf(
				    c->out,
				    "hold %s: acknowledged to a client, never granted in the log\n",
				    o->hold);
				print_obs(c, o);
			}
			continue;
		}
		const struct hfb_event *ge = &h->ev[g];
		if (o->kind == HFB_GRANT) {
			bool same = ge->n_parts == o->n_parts;
			for (size_t p = 0; same && p < o->n_parts; p++)
				same = ge->parts[p].res == o->parts[p].res &&
				       ge->parts[p].fence == o->parts[p].fence &&
				       ge->parts[p].units == o->parts[p].units;
			if (!same && violation(c, HFB_CHECK_LOG_MISMATCH)) {
				fprintf(c->out,
				        "hold %s: the grant the client saw differs from the log's "
				        "(seq %" PRIu64 ")\n",
				        o->hold, ge->seq);
				print_grant(c, i);
			}
		} else if (o->kind == HFB_CONFIRM && !confirmed[g]) {
			if (violation(c, HFB_CHECK_LOG_MISMATCH)) {
				fprintf(
				    c->out,
				    "hold %s: confirm acknowledged, no hold.confirmed in the log\n",
				    o->hold);
				print_obs(c, o);
			}
		} else if (o->kind == HFB_RELEASE && end_type[g] != HFB_EV_RELEASED) {
			if (violation(c, HFB_CHECK_LOG_MISMATCH)) {
				fprintf(c->out, "hold %s: release acknowledged, the log %s\n",
				        o->hold, ended[g] ? "says it expired" : "never ends it");
				print_obs(c, o);
			}
		}
	}
	rc = 0;
out:
	free(held);
	free(last_fence);
	free(ended);
	free(end_type);
	free(confirmed);
	return rc;
}

long hfb_check(struct hfb_history *h, FILE *out, size_t max_print, struct hfb_report *rep)
{
	struct ctx c = {.h = h, .out = out, .max_print = max_print, .rep = rep};
	long result = -1;
	memset(rep, 0, sizeof(*rep));
	sort_h = h;
	c.t0 = INT64_MAX;
	for (size_t i = 0; i < h->n_obs; i++)
		if (h->obs[i].t_send < c.t0)
			c.t0 = h->obs[i].t_send;
	if (c.t0 == INT64_MAX)
		c.t0 = 0;
	c.by_id = malloc((h->n_obs + 1) * sizeof(*c.by_id));
	c.other = malloc((h->n_obs + 1) * sizeof(*c.other));
	c.live_end = malloc((h->n_obs + 1) * sizeof(*c.live_end));
	c.ev_by_id = malloc((h->n_ev + 1) * sizeof(*c.ev_by_id));
	if (!c.by_id || !c.other || !c.live_end || !c.ev_by_id)
		goto out;
	for (size_t i = 0; i < h->n_obs; i++) {
		if (h->obs[i].kind == HFB_GRANT)
			c.by_id[c.n_by_id++] = i;
		else
			c.other[c.n_other++] = i;
	}
	qsort(c.by_id, c.n_by_id, sizeof(*c.by_id), cmp_obs_by_id);
	qsort(c.other, c.n_other, sizeof(*c.other), cmp_obs_by_id);
	for (size_t i = 1; i < c.n_by_id; i++) {
		const struct hfb_obs *a = &h->obs[c.by_id[i - 1]], *b = &h->obs[c.by_id[i]];
		/* Two answers with one id: the engine handed the same hold out twice. */
		if (strcmp(a->hold, b->hold) == 0 && violation(&c, HFB_CHECK_LOG_MISMATCH)) {
			fprintf(out, "hold %s was granted to two acquires\n", a->hold);
			print_grant(&c, c.by_id[i - 1]);
			print_grant(&c, c.by_id[i]);
		}
	}
	if (check_clients(&c) != 0)
		goto out;
	if (h->have_events) {
		qsort(h->ev, h->n_ev, sizeof(*h->ev), cmp_ev_seq);
		for (size_t i = 0; i < h->n_ev; i++)
			if (h->ev[i].type == HFB_EV_GRANTED)
				c.ev_by_id[c.n_ev_by_id++] = i;
		qsort(c.ev_by_id, c.n_ev_by_id, sizeof(*c.ev_by_id), cmp_ev_by_id);
		if (check_log(&c) != 0)
			goto out;
	}
	result = (long)rep->violations;
out:
	free(c.by_id);
	free(c.other);
	free(c.live_end);
	free(c.ev_by_id);
	sort_h = NULL;
	return result;
}
