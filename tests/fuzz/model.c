/*
 * model.c — the reference model of model.h: the rules of docs/semantics.md for holds on
 * implicit and declared resources, in the order the engine applies them (validation, the
 * idempotency key, then resolution in name order — caller order for any-of — then the grant
 * or the wait), and waiters granted FIFO per resource whenever anything changes.
 */
#include "model.h"

#include <string.h>

void fm_init(struct fm_model *m, int64_t now)
{
	memset(m, 0, sizeof(*m));
	m->now = now;
}

static void end_hold(struct fm_model *m, struct fm_hold *h, hf_hold_state state, int64_t at)
{
	h->state = state;
	h->ended = at;
	for (int i = 0; i < h->n; i++) {
		struct fm_res *r = &m->r[h->p[i].res];
		r->held -= h->p[i].units;
		r->holds--;
		if (h->mode == HF_MODE_EXCLUSIVE)
			r->exclusive--;
		if (r->holds == 0 && r->waiters == 0 && !r->declared)
			r->exists = false;
	}
}

static int64_t units_of(const struct fm_acquire *a, int i);
static void pump(struct fm_model *m);

/* Ends waiter wi's wait with `code` (HF_OK: granted as hold `hold`). */
static void unpark(struct fm_model *m, int wi, int code, int hold)
{
	struct fm_waiter *w = &m->w[wi];
	w->active = false;
	w->done = true;
	w->code = code;
	w->hold = hold;
	for (int i = 0; i < w->a.n; i++) {
		struct fm_res *r = &m->r[w->a.c[i].res];
		r->waiters--;
		if (r->holds == 0 && r->waiters == 0 && !r->declared)
			r->exists = false;
	}
}

void fm_expire(struct fm_model *m)
{
	for (;;) { /* the earliest due first; an expiry before a deadline at the same instant */
		struct fm_hold *due = NULL;
		for (int k = 0; k < m->nh; k++) {
			struct fm_hold *h = &m->h[k];
			if (h->state == HF_HOLD_TENTATIVE && h->expires <= m->now &&
			    (!due || h->expires < due->expires))
				due = h;
		}
		int wd = -1;
		for (int i = 0; i < m->nw; i++)
			if (m->w[i].active && m->w[i].deadline <= m->now &&
			    (wd < 0 || m->w[i].deadline < m->w[wd].deadline))
				wd = i;
		if (due && (wd < 0 || due->expires <= m->w[wd].deadline))
			end_hold(m, due, HF_HOLD_EXPIRED, due->expires);
		else if (wd >= 0)
			unpark(m, wd, HF_ETIMEDOUT, -1);
		else
			return;
		pump(m);
	}
}

void fm_cancel(struct fm_model *m, int wi)
{
	if (!m->w[wi].active)
		return;
	unpark(m, wi, HF_ECANCELED, -1);
	pump(m);
}

bool fm_deadline_clashes(const struct fm_model *m, int64_t deadline)
{
	for (int i = 0; i < m->nw; i++)
		if (m->w[i].active && m->w[i].deadline == deadline)
			return true;
	return false;
}

void fm_end_waits(struct fm_model *m, int code)
{
	for (int i = 0; i < m->nw; i++)
		if (m->w[i].active)
			unpark(m, i, code, -1);
}

static int64_t units_of(const struct fm_acquire *a, int i)
{
	return a->mode == HF_MODE_UNITS ? a->c[i].units : a->mode == HF_MODE_SHARED ? 1 : 0;
}

static bool fits(const struct fm_model *m, const struct fm_acquire *a, int i)
{
	const struct fm_res *r = &m->r[a->c[i].res];
	int64_t u = units_of(a, i);
	if (!r->exists)
		return true;
	if (r->waiters > 0) /* no barging past a queue */
		return false;
	if (u == 0)
		return r->held == 0;
	return r->exclusive == 0 && r->cap - r->held >= u;
}

/* The first waiter in line for resource res, or -1. */
static int head_of(const struct fm_model *m, int res)
{
	for (int i = 0; i < m->nw; i++)
		if (m->w[i].active)
			for (int k = 0; k < m->w[i].a.n; k++)
				if (m->w[i].a.c[k].res == res)
					return i;
	return -1;
}

/* Waiter wi is first in line on every resource it names, and its units are free there. */
static bool waiter_fits(const struct fm_model *m, int wi)
{
	const struct fm_acquire *a = &m->w[wi].a;
	for (int i = 0; i < a->n; i++) {
		const struct fm_res *r = &m->r[a->c[i].res];
		int64_t u = units_of(a, i);
		if (head_of(m, a->c[i].res) != wi)
			return false;
		if (u == 0 ? r->held != 0 : r->exclusive != 0 || r->cap - r->held < u)
			return false;
	}
	return true;
}

/* Creates the hold of a grant of claims take[0..n) of request a, at m->now. */
static int grant(struct fm_model *m, const struct fm_acquire *a, const int *take, int n_take)
{
	struct fm_hold *h = &m->h[m->nh];
	*h = (struct fm_hold){.state = HF_HOLD_TENTATIVE,
	                      .mode = a->mode,
	                      .created = m->now,
	                      .expires = m->now + a->ttl,
	                      .n = n_take};
	for (int k = 0; k < n_take; k++) {
		const struct fm_claim *c = &a->c[take[k]];
		struct fm_res *r = &m->r[c->res];
		if (!r->exists)
			*r = (struct fm_res){.exists = true, .cap = c->capacity};
		int64_t u = units_of(a, take[k]);
		h->p[k] = (struct fm_part){
		    .res = c->res, .units = u ? u : r->cap, .fence = ++m->last_fence};
		r->held += h->p[k].units;
		r->holds++;
		if (a->mode == HF_MODE_EXCLUSIVE)
			r->exclusive++;
	}
	return m->nh++;
}

/* Grants every waiter first in line with its units free, until none is: the set granted
 * does not depend on the order (a waiter only frees lines it was first in). */
static void pump(struct fm_model *m)
{
	for (bool again = true; again;) {
		again = false;
		for (int i = 0; i < m->nw && m->nh < FM_MAXH; i++) {
			if (!m->w[i].active || !waiter_fits(m, i))
				continue;
			int take[FM_MAXC], n = m->w[i].a.n;
			for (int k = 0; k < n; k++)
				take[k] = k;
			/* all-of: parts in name order */
			for (int k = 1; k < n; k++)
				for (int j = k; j > 0 && m->w[i].a.c[take[j]].res <
				                             m->w[i].a.c[take[j - 1]].res;
				     j--) {
					int t = take[j];
					take[j] = take[j - 1];
					take[j - 1] = t;
				}
			int k = grant(m, &m->w[i].a, take, n); /* its lines keep the resources */
			m->h[k].fences_open = true;
			unpark(m, i, HF_OK, k);
			again = true;
		}
	}
}

/* The same request, as idempotency judges it (hf__acquire_fingerprint of the stored copy:
 * claims in the caller's order, capacity as given, units only in units mode — the copy
 * zeroes them otherwise). */
static bool same_request(const struct fm_acquire *a, const struct fm_acquire *b)
{
	if (a->n != b->n || a->mode != b->mode || a->any != b->any || a->ttl != b->ttl)
		return false;
	for (int i = 0; i < a->n; i++)
		if (a->c[i].res != b->c[i].res || a->c[i].capacity != b->c[i].capacity ||
		    (a->mode == HF_MODE_UNITS && a->c[i].units != b->c[i].units))
			return false;
	return true;
}

int fm_acquire_check(const struct fm_acquire *a)
{
	for (int i = 0; i < a->n; i++)
		if (a->mode == HF_MODE_UNITS && a->c[i].capacity > 0 &&
		    a->c[i].units > a->c[i].capacity)
			return HF_ECAPACITY;
	return HF_OK;
}

int fm_acquire(struct fm_model *m, const struct fm_acquire *a, int *hold, bool *replayed)
{
	*replayed = false;
	int rc = fm_acquire_check(a);
	if (rc != HF_OK)
		return rc;
	/* A key seen before: the first outcome again, or a mismatch. */
	if (a->key >= 0 && m->keys[a->key].used) {
		if (!same_request(a, &m->keys[a->key].req))
			return HF_EIDEMMISMATCH;
		*hold = m->keys[a->key].hold;
		*replayed = true;
		return HF_OK;
	}
	/* Resolution, in name order (r0 < r1 < ...) or, for any-of, the caller's. */
	int order[FM_MAXC];
	for (int i = 0; i < a->n; i++)
		order[i] = i;
	if (!a->any)
		for (int i = 1; i < a->n; i++)
			for (int k = i; k > 0 && a->c[order[k]].res < a->c[order[k - 1]].res; k--) {
				int t = order[k];
				order[k] = order[k - 1];
				order[k - 1] = t;
			}
	for (int k = 0; k < a->n; k++) {
		const struct fm_claim *c = &a->c[order[k]];
		const struct fm_res *r = &m->r[c->res];
		if (!r->exists && c->capacity == 0)
			return HF_ENORESOURCE;
		if (r->exists && c->capacity > 0 && r->cap != c->capacity)
			return HF_ECAPMISMATCH;
		if (units_of(a, order[k]) > (r->exists ? r->cap : c->capacity))
			return HF_ECAPACITY;
	}
	int take[FM_MAXC], n_take = 0;
	if (a->any) {
		for (int k = 0; k < a->n && !n_take; k++)
			if (fits(m, a, order[k]))
				take[n_take++] = order[k];
	} else {
		bool all = true;
		for (int k = 0; k < a->n && all; k++)
			all = fits(m, a, order[k]);
		for (int k = 0; all && k < a->n; k++)
			take[n_take++] = order[k];
	}
	if (!n_take && a->wait == 0)
		return HF_EUNAVAILABLE;
	if (!n_take) { /* park: in line on every resource it names, created if need be */
		if (m->nw == FM_MAXW)
			return HF_ELIMIT;
		for (int i = 0; i < a->n; i++) {
			struct fm_res *r = &m->r[a->c[i].res];
			if (!r->exists)
				*r = (struct fm_res){.exists = true, .cap = a->c[i].capacity};
			r->waiters++;
		}
		m->w[m->nw] =
		    (struct fm_waiter){.active = true, .a = *a, .deadline = m->now + a->wait};
		*hold = m->nw++;
		return FM_PARKED;
	}
	if (m->nh == FM_MAXH)
		return HF_ELIMIT;
	*hold = grant(m, a, take, n_take);
	if (a->key >= 0)
		m->keys[a->key] = (struct fm_key){.used = true, .req = *a, .hold = *hold};
	return HF_OK;
}

static int live(const struct fm_model *m, int k)
{
	if (k < 0 || k >= m->nh)
		return HF_ENOHOLD;
	hf_hold_state s = m->h[k].state;
	return s == HF_HOLD_RELEASED || s == HF_HOLD_EXPIRED ? HF_EENDED : HF_OK;
}

int fm_extend(struct fm_model *m, int k, int64_t ttl)
{
	int rc = live(m, k);
	if (rc == HF_OK && m->h[k].state == HF_HOLD_TENTATIVE)
		m->h[k].expires = m->now + ttl;
	return rc;
}

int fm_confirm(struct fm_model *m, int k)
{
	int rc = live(m, k);
	if (rc == HF_OK && m->h[k].state == HF_HOLD_TENTATIVE) {
		m->h[k].state = HF_HOLD_CONFIRMED;
		m->h[k].expires = 0;
	}
	return rc;
}

int fm_release(struct fm_model *m, int k)
{
	int rc = live(m, k);
	if (rc == HF_OK) {
		end_hold(m, &m->h[k], HF_HOLD_RELEASED, m->now);
		pump(m); /* the units go to whoever is first in line */
	}
	return rc;
}

int fm_put(struct fm_model *m, int res, int64_t capacity, int64_t if_version)
{
	struct fm_res *r = &m->r[res];
	int64_t current = r->exists && r->declared ? r->version : 0;
	if (if_version >= 0 && if_version != current)
		return HF_EVERSION;
	if (r->exists && capacity < r->held)
		return HF_ECAPINUSE;
	bool created = !r->exists || !r->declared;
	if (!r->exists)
		*r = (struct fm_res){.exists = true};
	r->cap = capacity;
	r->version = created ? 1 : r->version + 1;
	r->declared = true;
	for (int i = 0; i < m->nw; i++) /* waits that can never fit now end */
		for (int k = 0; m->w[i].active && k < m->w[i].a.n; k++)
			if (m->w[i].a.c[k].res == res && units_of(&m->w[i].a, k) > capacity)
				unpark(m, i, HF_ECAPACITY, -1);
	pump(m); /* ended waits and more room wake the lines */
	return HF_OK;
}

int fm_delete(struct fm_model *m, int res, int64_t if_version)
{
	struct fm_res *r = &m->r[res];
	if (!r->exists)
		return HF_ENORESOURCE;
	int64_t current = r->declared ? r->version : 0;
	if (if_version >= 0 && if_version != current)
		return HF_EVERSION;
	if (r->holds > 0)
		return HF_EHELD;
	for (int i = 0; i < m->nw; i++) /* its waiters can never be granted now */
		for (int k = 0; m->w[i].active && k < m->w[i].a.n; k++)
			if (m->w[i].a.c[k].res == res)
				unpark(m, i, HF_ENORESOURCE, -1);
	*r = (struct fm_res){.exists = false};
	pump(m);
	return HF_OK;
}
