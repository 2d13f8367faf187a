/*
 * checks.c — the models a history is judged by. Per hold: what is known of its life (grant,
 * proofs of life, acknowledged confirm and release, evidence that it ended). From that, per
 * resource: certainly-live intervals (capacity, mutual exclusion), fences in real-time
 * order, FIFO among waiters (on request), and a linearizability search over grants and ends
 * (search.c) for what the direct checks cannot see.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

static const char *const check_names[] = {
#define HFC__CHECK_NAME(id, name) name,
    HFC_CHECKS(HFC__CHECK_NAME)
#undef HFC__CHECK_NAME
};

static const char *const f_names[] = {"acquire", "release", "extend", "confirm", "read"};
static const char *const type_names[] = {"pending", "ok", "fail", "info"};
static const char *const state_names[] = {"tentative", "confirmed", "released", "expired",
                                          "not_found"};

const char *hfc_check_name(enum hfc_check_id id)
{
	return (unsigned)id < HFC_CHECK_COUNT ? check_names[id] : "unknown";
}

void hfc_options_init(struct hfc_options *o)
{
	*o = (struct hfc_options){.fifo = false,
	                          .fifo_slack_us = 1000,
	                          .lease_slack_us = 2000,
	                          .search_bound = 1000000,
	                          .max_print = 10};
}

#define POS(line) (2 * (size_t)(line) + 1) /* a line's position; 2*line is just before it */
#define NEVER SIZE_MAX

/* What is known of one hold. */
struct hinfo {
	size_t grant;        /* its acquire (ok, not a replay) */
	size_t first_op, n;  /* its operations in `by_hold` */
	bool confirmed;      /* a confirm was acknowledged */
	size_t release;      /* the first acknowledged release, or NEVER */
	size_t release_info; /* the first release or extend of unknown outcome, or NEVER: it
	                      * may have ended the hold (an extend too: redlock:// gives up a
	                      * hold whose extension missed a majority, docs/redis.md) */
	size_t live_after;   /* it was live at this position (the latest proof) */
	size_t proof;        /* the op proving it, or NEVER */
	size_t ended_by;     /* it had ended by this position (the earliest evidence), or NEVER */
	size_t ended_op;
	size_t end_lo; /* the earliest position it could have ended, or NEVER */
};

struct ctx {
	struct hfc_history *h;
	const struct hfc_options *opt;
	FILE *out;
	struct hfc_report *rep;
	size_t *by_hold; /* ops naming a hold, sorted by hold then invocation */
	size_t n_by_hold;
	struct hinfo *holds;
	size_t n_holds;
	bool *res_bad; /* per resource: a direct check failed (the search is then moot) */
};

static bool violation(struct ctx *c, enum hfc_check_id id)
{
	c->rep->violations++;
	c->rep->by_check[id]++;
	if (!c->out || c->rep->violations > c->opt->max_print)
		return false;
	fprintf(c->out, "VIOLATION %s: ", hfc_check_name(id));
	return true;
}

static void print_op(const struct ctx *c, size_t i)
{
	const struct hfc_op *o = &c->h->ops[i];
	fprintf(c->out, "    line %zu", o->inv_line);
	if (o->ret_line)
		fprintf(c->out, "-%zu", o->ret_line);
	fprintf(c->out, " process %ld %s %s", o->process, f_names[o->f], type_names[o->type]);
	if (o->hold)
		fprintf(c->out, " hold %s", o->hold);
	if (o->f == HFC_READ && o->state != HFC_ST_NONE)
		fprintf(c->out, " state %s", state_names[o->state]);
	if (o->error)
		fprintf(c->out, " error %s", o->error);
	for (size_t p = 0; p < o->n_parts; p++) {
		fprintf(c->out, "%s'%s' %" PRId64 " units", p ? ", " : ": ",
		        c->h->res[o->parts[p].res].name, o->parts[p].units);
		if (o->parts[p].fence)
			fprintf(c->out, " fence %" PRId64, o->parts[p].fence);
	}
	fputc('\n', c->out);
}

static struct hfc_history *sort_h;

static int cmp_by_hold(const void *a, const void *b)
{
	const struct hfc_op *x = &sort_h->ops[*(const size_t *)a],
	                    *y = &sort_h->ops[*(const size_t *)b];
	int d = strcmp(x->hold, y->hold);
	if (d)
		return d;
	return x->inv_line < y->inv_line ? -1 : x->inv_line > y->inv_line;
}

static bool is_ended_error(const struct hfc_op *o)
{
	return o->type == HFC_FAIL && o->error && strcmp(o->error, "hold_ended") == 0;
}

/* The earliest position at which the lease may have run out: just before the first line
 * whose time is at or past the lease end. NEVER when the history ends first; 0 when the
 * history carries no lease. */
static size_t lease_pos(const struct ctx *c, int64_t lease_us)
{
	if (lease_us == INT64_MIN)
		return 0;
	size_t lo = 1, hi = c->h->n_lines + 1;
	while (lo < hi) { /* first line with time >= lease_us */
		size_t mid = (lo + hi) / 2;
		if (c->h->line_us[mid] >= lease_us)
			hi = mid;
		else
			lo = mid + 1;
	}
	return lo > c->h->n_lines ? NEVER : 2 * lo;
}

static size_t max_sz(size_t a, size_t b)
{
	return a > b ? a : b;
}

static int64_t min_i64(int64_t a, int64_t b)
{
	return a < b ? a : b;
}

/* Seen ended before its lease (less the slack) could have run out, and neither confirmed nor
 * released (nor extended with an unknown outcome) by its holder before: the engine ended
 * the lease early — or its clock ran ahead of the clients' by more than the slack (a forward
 * clock step). */
static void check_lease_cut_short(struct ctx *c, const struct hinfo *hi, int64_t lease)
{
	const struct hfc_history *h = c->h;
	if (hi->ended_by == NEVER || hi->confirmed || lease == INT64_MIN ||
	    lease_pos(c, lease - c->opt->lease_slack_us) <= hi->ended_by ||
	    (hi->release != NEVER && POS(h->ops[hi->release].inv_line) < hi->ended_by) ||
	    (hi->release_info != NEVER && POS(h->ops[hi->release_info].inv_line) < hi->ended_by))
		return;
	if (violation(c, HFC_CHECK_LEASE_CUT_SHORT)) {
		fprintf(c->out,
		        "hold %s: seen ended before its lease could have run out (lease end "
		        "%" PRId64 " us less the slack %" PRId64 " us), not released\n",
		        h->ops[hi->grant].hold, lease, c->opt->lease_slack_us);
		print_op(c, hi->grant);
		print_op(c, hi->ended_op);
	}
}

/* Builds what is known of each hold and checks the per-hold promises: one grant per id, a
 * confirmed hold ends only by its holder, a released hold stays released. */
static int build_holds(struct ctx *c)
{
	struct hfc_history *h = c->h;
	c->by_hold = malloc((h->n_ops + 1) * sizeof(*c->by_hold));
	c->holds = calloc(h->n_ops + 1, sizeof(*c->holds));
	if (!c->by_hold || !c->holds)
		return -1;
	for (size_t i = 0; i < h->n_ops; i++)
		if (h->ops[i].hold)
			c->by_hold[c->n_by_hold++] = i;
	sort_h = h;
	qsort(c->by_hold, c->n_by_hold, sizeof(*c->by_hold), cmp_by_hold);
	sort_h = NULL;
	for (size_t s = 0, e; s < c->n_by_hold; s = e) {
		const char *id = h->ops[c->by_hold[s]].hold;
		size_t grant = NEVER;
		for (e = s; e < c->n_by_hold && strcmp(h->ops[c->by_hold[e]].hold, id) == 0; e++) {
			size_t i = c->by_hold[e];
			const struct hfc_op *o = &h->ops[i];
			if (o->f != HFC_ACQUIRE || o->type != HFC_OK || o->replayed)
				continue;
			if (grant == NEVER) {
				grant = i;
				continue;
			}
			if (violation(c, HFC_CHECK_DUPLICATE_HOLD)) {
				fprintf(c->out, "hold %s was granted to two acquires\n", id);
				print_op(c, grant);
				print_op(c, i);
			}
		}
		if (grant == NEVER)
			continue; /* not granted within this history: not ours to judge */
		struct hinfo *hi = &c->holds[c->n_holds++];
		*hi = (struct hinfo){.grant = grant,
		                     .first_op = s,
		                     .n = e - s,
		                     .release = NEVER,
		                     .release_info = NEVER,
		                     .live_after = POS(h->ops[grant].ret_line),
		                     .proof = grant,
		                     .ended_by = NEVER,
		                     .ended_op = NEVER};
		const struct hfc_op *g = &h->ops[grant];
		int64_t lease = g->ttl_ms && g->inv_us ? g->inv_us + g->ttl_ms * 1000 : INT64_MIN;
		int64_t info_lease = INT64_MAX; /* INT64_MIN: an unknown extend without a ttl */
		/* The grant's answer shows the hold live when it arrived, unless the lease may have
		 * run out before that (an answer held up past the lease: a stopped server, a slow
		 * link); then it was live only at some moment of the acquire's window. */
		if (lease != INT64_MIN &&
		    lease_pos(c, lease - c->opt->lease_slack_us) < POS(g->ret_line))
			hi->live_after = POS(g->inv_line);
		for (size_t k = s; k < e; k++) {
			size_t i = c->by_hold[k];
			const struct hfc_op *o = &h->ops[i];
			if (i == grant || o->f == HFC_ACQUIRE)
				continue;
			bool live = o->type == HFC_OK &&
			            (o->f != HFC_READ || o->state == HFC_ST_TENTATIVE ||
			             o->state == HFC_ST_CONFIRMED);
			bool ended =
			    is_ended_error(o) || (o->f == HFC_READ && o->type == HFC_OK && !live);
			if (live && o->f == HFC_RELEASE && hi->release != NEVER) {
				if (violation(c, HFC_CHECK_LOST_RELEASE)) {
					fprintf(c->out,
					        "hold %s: released twice, both acknowledged\n", id);
					print_op(c, hi->release);
					print_op(c, i);
				}
				continue;
			}
			if (live && POS(o->inv_line) > hi->live_after) {
				hi->live_after = POS(o->inv_line);
				hi->proof = i;
			}
			if (o->type == HFC_OK && o->f == HFC_CONFIRM)
				hi->confirmed = true;
			/* An extend sets a new lease from when it is applied (semantics.md), which
			 * may be shorter than the one before: the last acknowledged one counts, and
			 * one of unknown outcome may have been applied at any time after it was
			 * sent (even after a later acknowledged one: held up in a stopped server).
			 */
			if (o->type == HFC_OK && o->f == HFC_EXTEND && o->ttl_ms && o->inv_us)
				lease = o->inv_us + o->ttl_ms * 1000;
			if (o->type == HFC_INFO && o->f == HFC_EXTEND)
				info_lease = o->ttl_ms && o->inv_us && info_lease != INT64_MIN
				                 ? min_i64(info_lease, o->inv_us + o->ttl_ms * 1000)
				                 : INT64_MIN;
			if (o->f == HFC_RELEASE && o->type == HFC_OK)
				hi->release = i;
			if ((o->f == HFC_RELEASE || o->f == HFC_EXTEND) && o->type == HFC_INFO &&
			    hi->release_info == NEVER)
				hi->release_info = i;
			if (ended && POS(o->ret_line) < hi->ended_by) {
				hi->ended_by = POS(o->ret_line);
				hi->ended_op = i;
			}
		}
		/* Live after it was seen ended, or after its release was acknowledged. */
		if (hi->ended_by != NEVER && hi->live_after > hi->ended_by &&
		    violation(c, HFC_CHECK_REAPPEARED)) {
			fprintf(c->out, "hold %s: seen ended, then live again\n", id);
			print_op(c, hi->ended_op);
			print_op(c, hi->proof);
		}
		if (hi->release != NEVER && hi->live_after > POS(h->ops[hi->release].ret_line) &&
		    hi->proof != hi->release && violation(c, HFC_CHECK_LOST_RELEASE)) {
			fprintf(c->out, "hold %s: release acknowledged, then the hold was live\n",
			        id);
			print_op(c, hi->release);
			print_op(c, hi->proof);
		}
		/* A released hold reads back as released (or forgotten), never as expired. */
		for (size_t k = s; hi->release != NEVER && k < e; k++) {
			const struct hfc_op *o = &h->ops[c->by_hold[k]];
			if (o->f == HFC_READ && o->type == HFC_OK && o->state == HFC_ST_EXPIRED &&
			    o->inv_line > h->ops[hi->release].ret_line &&
			    violation(c, HFC_CHECK_LOST_RELEASE)) {
				fprintf(c->out,
				        "hold %s: release acknowledged, read back expired\n", id);
				print_op(c, hi->release);
				print_op(c, c->by_hold[k]);
			}
		}
		/* A confirmed hold ends only by its holder's release. */
		if (hi->confirmed && hi->ended_by != NEVER) {
			bool explained = false;
			for (size_t k = s; k < e && !explained; k++) {
				const struct hfc_op *o = &h->ops[c->by_hold[k]];
				explained = o->f == HFC_RELEASE &&
				            POS(o->inv_line) < hi->ended_by &&
				            (o->type == HFC_OK || o->type == HFC_INFO);
			}
			if (!explained && violation(c, HFC_CHECK_LOST_CONFIRM)) {
				fprintf(c->out,
				        "hold %s: confirm acknowledged, then it was gone without "
				        "a release by its holder\n",
				        id);
				for (size_t k = s; k < e; k++) {
					const struct hfc_op *o = &h->ops[c->by_hold[k]];
					if (o->f == HFC_CONFIRM && o->type == HFC_OK) {
						print_op(c, c->by_hold[k]);
						break;
					}
				}
				print_op(c, hi->ended_op);
			}
		}
		if (lease != INT64_MIN)
			lease = min_i64(lease, info_lease);
		check_lease_cut_short(c, hi, lease);
		/* The earliest it could have ended: after its last proof of life, and by its
		 * lease (not once confirmed) or a release of unknown outcome. */
		size_t by_lease = hi->confirmed ? NEVER
		                  : lease == INT64_MIN
		                      ? 0
		                      : lease_pos(c, lease - c->opt->lease_slack_us);
		size_t by_rel =
		    hi->release_info != NEVER ? POS(h->ops[hi->release_info].inv_line) : NEVER;
		size_t lo = by_lease < by_rel ? by_lease : by_rel;
		if (hi->release != NEVER)
			lo = POS(h->ops[hi->release].inv_line);
		if (lo != NEVER)
			lo = max_sz(lo, hi->live_after + 1);
		/* Seen ended: the lease bound gives way to what was seen (clocks may differ). */
		if (hi->ended_by != NEVER && hi->release == NEVER) {
			lo = max_sz(hi->live_after + 1, lo == NEVER || lo > hi->ended_by ? 0 : lo);
		}
		hi->end_lo = lo;
	}
	return 0;
}

/* ---- per resource ---- */

struct grant_ref {
	size_t hold; /* index into c->holds */
	size_t part; /* which part of its acquire */
	int64_t units, fence;
	size_t start, end; /* certainly live over [start, end) */
	size_t inv, ret;   /* the acquire's window */
	int64_t inv_us;
	bool waited;
};

struct endpoint {
	size_t pos;
	int start;
	size_t g;
};

static int cmp_endpoint(const void *a, const void *b)
{
	const struct endpoint *x = a, *y = b;
	if (x->pos != y->pos)
		return x->pos < y->pos ? -1 : 1;
	return x->start - y->start; /* ends first: touching intervals do not overlap */
}

static void print_grant(const struct ctx *c, const struct grant_ref *g)
{
	print_op(c, c->holds[g->hold].grant);
}

static int check_capacity(struct ctx *c, int r, struct grant_ref *gs, size_t n)
{
	int64_t cap = c->h->res[r].capacity;
	if (cap <= 0)
		return 0;
	struct endpoint *ep = malloc((2 * n + 1) * sizeof(*ep));
	size_t *live = malloc((n + 1) * sizeof(*live));
	if (!ep || !live) {
		free(ep);
		free(live);
		return -1;
	}
	size_t m = 0;
	for (size_t i = 0; i < n; i++) {
		if (gs[i].end <= gs[i].start || gs[i].units <= 0)
			continue;
		ep[m++] = (struct endpoint){gs[i].start, 1, i};
		ep[m++] = (struct endpoint){gs[i].end, 0, i};
	}
	qsort(ep, m, sizeof(*ep), cmp_endpoint);
	int64_t sum = 0;
	size_t n_live = 0;
	bool reported = false;
	for (size_t k = 0; k < m; k++) {
		const struct grant_ref *g = &gs[ep[k].g];
		if (!ep[k].start) {
			for (size_t j = 0; j < n_live; j++)
				if (live[j] == ep[k].g) {
					live[j] = live[--n_live];
					break;
				}
			sum -= g->units;
			continue;
		}
		live[n_live++] = ep[k].g;
		sum += g->units;
		if (sum <= cap || reported)
			continue;
		reported = true; /* one report per resource: the first moment */
		c->res_bad[r] = true;
		bool excl = cap == 1;
		for (size_t j = 0; j < n_live; j++)
			excl = excl || gs[live[j]].units == cap;
		if (!violation(c, excl ? HFC_CHECK_DOUBLE_GRANT : HFC_CHECK_OVER_CAPACITY))
			continue;
		fprintf(c->out,
		        "resource '%s' capacity %" PRId64 ": %" PRId64
		        " units certainly held at once by %zu holds:\n",
		        c->h->res[r].name, cap, sum, n_live);
		for (size_t j = 0; j < n_live && j < 8; j++)
			print_grant(c, &gs[live[j]]);
	}
	free(ep);
	free(live);
	return 0;
}

static int cmp_ret(const void *a, const void *b)
{
	const struct grant_ref *x = *(struct grant_ref *const *)a,
	                       *y = *(struct grant_ref *const *)b;
	return x->ret < y->ret ? -1 : x->ret > y->ret;
}

static int cmp_inv(const void *a, const void *b)
{
	const struct grant_ref *x = *(struct grant_ref *const *)a,
	                       *y = *(struct grant_ref *const *)b;
	return x->inv < y->inv ? -1 : x->inv > y->inv;
}

static int cmp_inv_us(const void *a, const void *b)
{
	const struct grant_ref *x = *(struct grant_ref *const *)a,
	                       *y = *(struct grant_ref *const *)b;
	return x->inv_us < y->inv_us ? -1 : x->inv_us > y->inv_us;
}

/* A grant answered before another was asked for has the lower fence. With `fifo`: a waiter
 * queued (by assumption, within fifo_slack_us of its invocation) before another acquire was
 * invoked is granted first. Both: one pass over two orders with a running maximum. */
static int check_order(struct ctx *c, int r, struct grant_ref *gs, size_t n, bool fifo)
{
	struct grant_ref **a = malloc((n + 1) * sizeof(*a)), **b = malloc((n + 1) * sizeof(*b));
	if (!a || !b) {
		free(a);
		free(b);
		return -1;
	}
	size_t m = 0;
	for (size_t i = 0; i < n; i++)
		if (gs[i].fence > 0)
			a[m] = b[m] = &gs[i], m++;
	qsort(a, m, sizeof(*a), fifo ? cmp_inv_us : cmp_ret);
	qsort(b, m, sizeof(*b), fifo ? cmp_inv_us : cmp_inv);
	const struct grant_ref *best = NULL;
	bool reported = false;
	for (size_t k = 0, j = 0; k < m && !reported; k++) {
		const struct grant_ref *later = b[k];
		while (j < m && (fifo ? a[j]->inv_us + c->opt->fifo_slack_us < later->inv_us
		                      : a[j]->ret < later->inv)) {
			if ((!fifo || a[j]->waited) && (!best || a[j]->fence > best->fence))
				best = a[j];
			j++;
		}
		if (!best || best->fence < later->fence)
			continue;
		reported = true;
		c->res_bad[r] = true;
		if (!violation(c, fifo ? HFC_CHECK_FIFO : HFC_CHECK_FENCE_ORDER))
			continue;
		if (fifo)
			fprintf(c->out,
			        "resource '%s': a waiter invoked %.3f ms before another acquire "
			        "was granted after it (fence %" PRId64 " > %" PRId64 "):\n",
			        c->h->res[r].name, (double)(later->inv_us - best->inv_us) / 1000.0,
			        best->fence, later->fence);
		else
			fprintf(c->out,
			        "resource '%s': a grant answered before a later acquire was "
			        "invoked has fence %" PRId64 " >= %" PRId64 ":\n",
			        c->h->res[r].name, best->fence, later->fence);
		print_grant(c, best);
		print_grant(c, later);
	}
	free(a);
	free(b);
	return 0;
}

static int search_resource(struct ctx *c, int r, struct grant_ref *gs, size_t n)
{
	struct hfc_sop *ev = calloc(2 * n + 1, sizeof(*ev));
	if (!ev)
		return -1;
	size_t m = 0;
	for (size_t i = 0; i < n; i++) {
		const struct hinfo *hi = &c->holds[gs[i].hold];
		size_t gi = m;
		ev[m++] = (struct hfc_sop){.end = false,
		                           .required = true,
		                           .lo = gs[i].inv,
		                           .hi = gs[i].ret,
		                           .units = gs[i].units > 0 ? gs[i].units : 0,
		                           .fence = gs[i].fence,
		                           .op = hi->grant};
		if (hi->end_lo == NEVER && hi->ended_by == NEVER)
			continue; /* never ends within the history */
		size_t lo = hi->end_lo == NEVER ? hi->ended_by : hi->end_lo, hiw = NEVER,
		       op = hi->grant;
		bool required = false;
		if (hi->release != NEVER) {
			hiw = POS(c->h->ops[hi->release].ret_line);
			required = true;
			op = hi->release;
		} else if (hi->ended_by != NEVER) {
			hiw = hi->ended_by;
			required = true;
			op = hi->ended_op;
		}
		if (lo > hiw)
			lo = hiw;
		ev[m++] = (struct hfc_sop){.end = true,
		                           .required = required,
		                           .lo = lo,
		                           .hi = hiw,
		                           .units = ev[gi].units,
		                           .partner = gi,
		                           .op = op};
	}
	size_t stuck;
	uint64_t states;
	enum hfc_verdict v =
	    hfc_search(ev, m, c->h->res[r].capacity, c->opt->search_bound, &stuck, &states);
	c->rep->states += states;
	int rc = 0;
	switch (v) {
	case HFC_LINEARIZABLE:
		c->rep->searched++;
		break;
	case HFC_UNKNOWN:
		c->rep->unknown++;
		if (c->out)
			fprintf(c->out,
			        "UNKNOWN: resource '%s': search bound exceeded (%" PRIu64
			        " states, %zu events)\n",
			        c->h->res[r].name, c->opt->search_bound, m);
		break;
	case HFC_NOT_LINEARIZABLE:
		if (!violation(c, HFC_CHECK_NOT_LINEARIZABLE))
			break;
		fprintf(c->out,
		        "resource '%s' capacity %" PRId64 ": no order of its grants and "
		        "ends fits the windows, capacity and fences; stuck at:\n",
		        c->h->res[r].name, c->h->res[r].capacity);
		if (stuck != SIZE_MAX) {
			print_op(c, ev[stuck].op);
			fprintf(c->out, "  with these grants open or overlapping it:\n");
			size_t shown = 0;
			for (size_t k = 0; k < m && shown < 8; k++)
				if (!ev[k].end && k != stuck &&
				    (ev[k].hi == NEVER || ev[k].hi >= ev[stuck].lo) &&
				    ev[k].lo <= ev[stuck].hi) {
					print_op(c, ev[k].op);
					shown++;
				}
		}
		break;
	case HFC_NOMEM:
		rc = -1;
		break;
	}
	free(ev);
	return rc;
}

static int check_resource(struct ctx *c, int r)
{
	struct hfc_history *h = c->h;
	size_t n = 0;
	for (size_t i = 0; i < c->n_holds; i++) {
		const struct hfc_op *g = &h->ops[c->holds[i].grant];
		for (size_t p = 0; p < g->n_parts; p++)
			n += g->parts[p].res == r;
	}
	if (n == 0)
		return 0;
	struct grant_ref *gs = calloc(n, sizeof(*gs));
	if (!gs)
		return -1;
	size_t k = 0;
	for (size_t i = 0; i < c->n_holds; i++) {
		const struct hinfo *hi = &c->holds[i];
		const struct hfc_op *g = &h->ops[hi->grant];
		for (size_t p = 0; p < g->n_parts; p++) {
			if (g->parts[p].res != r)
				continue;
			size_t end = hi->end_lo;
			if (hi->ended_by != NEVER && (end == NEVER || end > hi->ended_by))
				end = hi->ended_by;
			gs[k++] = (struct grant_ref){.hold = i,
			                             .part = p,
			                             .units = g->parts[p].units,
			                             .fence = g->parts[p].fence,
			                             .start = POS(g->ret_line),
			                             .end = end,
			                             .inv = POS(g->inv_line),
			                             .ret = POS(g->ret_line),
			                             .inv_us = g->inv_us,
			                             .waited = g->wait_ms > 0 && !g->any};
		}
	}
	int rc = check_capacity(c, r, gs, n);
	if (rc == 0)
		rc = check_order(c, r, gs, n, false);
	if (rc == 0 && c->opt->fifo)
		rc = check_order(c, r, gs, n, true);
	if (rc == 0 && !c->res_bad[r] && !c->opt->no_search)
		rc = search_resource(c, r, gs, n);
	free(gs);
	return rc;
}

int hfc_check(struct hfc_history *h, const struct hfc_options *opt, FILE *out,
              struct hfc_report *rep)
{
	struct ctx c = {.h = h, .opt = opt, .out = out, .rep = rep};
	int result = -1;
	memset(rep, 0, sizeof(*rep));
	rep->ops = h->n_ops;
	rep->resources = h->n_res;
	c.res_bad = calloc(h->n_res + 1, sizeof(*c.res_bad));
	if (!c.res_bad || build_holds(&c) != 0)
		goto out;
	rep->grants = c.n_holds;
	for (size_t r = 0; r < h->n_res; r++)
		if (check_resource(&c, (int)r) != 0)
			goto out;
	result = rep->violations ? 1 : rep->unknown ? 3 : 0;
out:
	free(c.res_bad);
	free(c.by_hold);
	free(c.holds);
	return result;
}
