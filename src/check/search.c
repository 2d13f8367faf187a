/*
 * search.c — a bounded linearizability search over the grants and ends of one resource, in
 * the spirit of Wing & Gong and Lowe (as in Knossos and Porcupine): walk the events in window
 * order, linearize the first one the model accepts, backtrack when a required event's window
 * closes; memoise the sets of linearized events so that no state is explored twice.
 *
 * The model's state (units held, last fence) is a function of the set of events linearized,
 * so the memo key is that set alone, stored as a 128-bit Zobrist hash (a false "seen" needs
 * two sets colliding in 128 bits).
 */
#include <stdlib.h>
#include <string.h>

#include "check.h"

struct entry {
	size_t pos;
	bool ret;          /* the end of the event's window */
	size_t ev;         /* the event */
	size_t match;      /* call: its return entry (or SIZE_MAX); return: its call entry */
	size_t prev, next; /* list links; SIZE_MAX ends */
};

struct memo {
	uint64_t *keys; /* pairs; a zero pair is empty */
	size_t n_slots, count;
};

static uint64_t mix(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ull;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

static int memo_grow(struct memo *m)
{
	size_t n = m->n_slots ? m->n_slots * 2 : 1024;
	uint64_t *k = calloc(2 * n, sizeof(*k));
	if (!k)
		return -1;
	for (size_t i = 0; i < m->n_slots; i++) {
		uint64_t a = m->keys[2 * i], b = m->keys[2 * i + 1];
		if (!a && !b)
			continue;
		size_t s = (size_t)a & (n - 1);
		while (k[2 * s] || k[2 * s + 1])
			s = (s + 1) & (n - 1);
		k[2 * s] = a;
		k[2 * s + 1] = b;
	}
	free(m->keys);
	m->keys = k;
	m->n_slots = n;
	return 0;
}

/* Adds the set (a, b): 1 if new, 0 if already seen, -1 out of memory. */
static int memo_add(struct memo *m, uint64_t a, uint64_t b)
{
	b |= 1; /* never the empty pair */
	if ((m->count + 1) * 2 > m->n_slots && memo_grow(m) != 0)
		return -1;
	size_t s = (size_t)a & (m->n_slots - 1);
	while (m->keys[2 * s] || m->keys[2 * s + 1]) {
		if (m->keys[2 * s] == a && m->keys[2 * s + 1] == b)
			return 0;
		s = (s + 1) & (m->n_slots - 1);
	}
	m->keys[2 * s] = a;
	m->keys[2 * s + 1] = b;
	m->count++;
	return 1;
}

static struct entry *sort_base;

static int cmp_entry(const void *x, const void *y)
{
	const struct entry *a = &sort_base[*(const size_t *)x], *b = &sort_base[*(const size_t *)y];
	if (a->pos != b->pos)
		return a->pos < b->pos ? -1 : 1;
	if (a->ret != b->ret)
		return a->ret ? 1 : -1; /* calls first: the more permissive reading of a tie */
	return a->ev < b->ev ? -1 : a->ev > b->ev;
}

struct frame {
	size_t call; /* the entry linearized */
	int64_t held, fence;
};

/* Removes a call entry and its return from the list; restores them in reverse. */
static void lift(struct entry *e, size_t head, size_t c)
{
	(void)head;
	e[e[c].prev].next = e[c].next;
	if (e[c].next != SIZE_MAX)
		e[e[c].next].prev = e[c].prev;
	size_t r = e[c].match;
	if (r != SIZE_MAX) {
		e[e[r].prev].next = e[r].next;
		if (e[r].next != SIZE_MAX)
			e[e[r].next].prev = e[r].prev;
	}
}

static void unlift(struct entry *e, size_t c)
{
	size_t r = e[c].match;
	if (r != SIZE_MAX) {
		e[e[r].prev].next = r;
		if (e[r].next != SIZE_MAX)
			e[e[r].next].prev = r;
	}
	e[e[c].prev].next = c;
	if (e[c].next != SIZE_MAX)
		e[e[c].next].prev = c;
}

enum hfc_verdict hfc_search(const struct hfc_sop *ev, size_t n, int64_t capacity, uint64_t bound,
                            size_t *stuck, uint64_t *states)
{
	enum hfc_verdict v = HFC_NOMEM;
	size_t n_ent = 0;
	struct entry *e = calloc(2 * n + 1, sizeof(*e));
	size_t *order = calloc(2 * n + 1, sizeof(*order));
	size_t *call_of = calloc(n + 1, sizeof(*call_of));
	bool *done = calloc(n + 1, sizeof(*done));
	uint64_t *z = calloc(2 * (n + 1), sizeof(*z));
	struct frame *stack = calloc(n + 1, sizeof(*stack));
	struct memo memo = {0};
	*states = 0;
	*stuck = SIZE_MAX;
	if (!e || !order || !call_of || !done || !z || !stack)
		goto out;

	/* Entry 0 is the head sentinel. */
	e[0] = (struct entry){.prev = SIZE_MAX, .next = SIZE_MAX, .match = SIZE_MAX};
	n_ent = 1;
	for (size_t i = 0; i < n; i++) {
		z[2 * i] = mix(2 * i + 1);
		z[2 * i + 1] = mix(mix(2 * i + 2));
		size_t c = n_ent++;
		e[c] = (struct entry){.pos = ev[i].lo, .ret = false, .ev = i, .match = SIZE_MAX};
		call_of[i] = c;
		if (ev[i].hi != SIZE_MAX) {
			size_t r = n_ent++;
			e[r] = (struct entry){.pos = ev[i].hi, .ret = true, .ev = i, .match = c};
			e[c].match = r;
		}
	}
	for (size_t i = 1; i < n_ent; i++)
		order[i - 1] = i;
	sort_base = e;
	qsort(order, n_ent - 1, sizeof(*order), cmp_entry);
	sort_base = NULL;
	size_t prev = 0;
	for (size_t k = 0; k + 1 < n_ent; k++) {
		e[prev].next = order[k];
		e[order[k]].prev = prev;
		prev = order[k];
	}
	e[prev].next = SIZE_MAX;

	int64_t held = 0, fence = 0;
	uint64_t ha = 0, hb = 0;
	size_t depth = 0, best = 0;
	size_t cur = e[0].next;
	for (;;) {
		if (cur == SIZE_MAX) {
			v = HFC_LINEARIZABLE;
			break;
		}
		const struct entry *en = &e[cur];
		const struct hfc_sop *s = &ev[en->ev];
		if (!en->ret) {
			/* Try to linearize this event now. */
			bool ok;
			int64_t nh = held, nf = fence;
			if (s->end) {
				ok = done[s->partner];
				nh -= s->units;
			} else {
				nh += s->units;
				ok = (capacity <= 0 || nh <= capacity) &&
				     (s->fence == 0 || s->fence > fence);
				if (s->fence)
					nf = s->fence;
			}
			int added = 0;
			if (ok) {
				added = memo_add(&memo, ha ^ z[2 * en->ev], hb ^ z[2 * en->ev + 1]);
				if (added < 0)
					goto out;
			}
			if (added) {
				if (*states >= bound) {
					v = HFC_UNKNOWN;
					break;
				}
				++*states;
				stack[depth++] =
				    (struct frame){.call = cur, .held = held, .fence = fence};
				held = nh;
				fence = nf;
				ha ^= z[2 * en->ev];
				hb ^= z[2 * en->ev + 1];
				done[en->ev] = true;
				lift(e, 0, cur);
				cur = e[0].next;
			} else {
				cur = en->next;
			}
			continue;
		}
		/* A window closes: every event still listed before it has its window open, and
		 * this one was not linearized. Optional events may simply not have happened. */
		if (!s->required) {
			cur = en->next;
			continue;
		}
		if (depth >= best) {
			best = depth;
			*stuck = en->ev;
		}
		if (depth == 0) {
			v = HFC_NOT_LINEARIZABLE;
			break;
		}
		struct frame f = stack[--depth];
		size_t evi = e[f.call].ev;
		done[evi] = false;
		ha ^= z[2 * evi];
		hb ^= z[2 * evi + 1];
		held = f.held;
		fence = f.fence;
		unlift(e, f.call);
		cur = e[f.call].next;
	}
out:
	free(e);
	free(order);
	free(call_of);
	free(done);
	free(z);
	free(stack);
	free(memo.keys);
	return v;
}
