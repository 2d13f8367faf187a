/*
 * state.c — the hold semantics of the embedded engine, in memory: resources, holds, FIFO
 * wait queues, leases, fences, idempotency records and the recent events. Pure logic: no
 * threads, no I/O. Each step reports the journal records it needs written and the calls it
 * completed (struct hf__effects); engine.c makes them durable and delivers them.
 */
#include <assert.h>
#include <errno.h>
#include <jansson.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/codec.h"
#include "core/rules.h"
#include "engine/embedded/embedded.h"

#define EVENT_CACHE 65536 /* recent events kept in memory for readers */

struct waiter;

struct res {
	char *name;
	int64_t capacity;
	char *meta;
	int64_t version;
	bool declared;
	bool journaled; /* a row exists in the journal */
	int64_t held;   /* units taken by live holds */
	int64_t n_holds;
	int64_t n_exclusive; /* live exclusive holds: while > 0 nothing else is granted */
	struct wlink *queue_head, *queue_tail;
	int64_t n_waiters;
	struct res *work_next; /* the pump's worklist */
	bool in_work;
};

/* A link of an intrusive doubly linked list whose head is a struct chain. */
struct ilink {
	struct ilink *prev, *next;
};

/* The head of an intrusive list and its length. */
struct chain {
	struct ilink *head;
	size_t n;
};

/* The holds of one owner (st->by_owner), keyed by its own copy of the owner; freed when its
 * list empties. */
struct owner {
	struct chain holds;
	char key[];
};

struct part {
	char *name;
	struct res *res; /* while the hold is live */
	int64_t units;
	int64_t fence;
	struct hold *hold;    /* the hold whose part this is */
	struct ilink by_name; /* in the parts chain of `name`'s struct rev */
};

struct hold {
	char id[HF_ID_LEN + 1];
	char token[HF_TOKEN_LEN + 1];
	char *owner;
	hf_hold_state state;
	hf_mode mode;
	int64_t created_at, expires_at, ended_at;
	size_t n_parts;
	struct part *parts;
	size_t expiry_slot;      /* in st->expiries while tentative */
	struct hold *ended_next; /* retention FIFO of ended holds */
	struct ilink by_owner;   /* in st->by_owner's chain of `owner` */
	int64_t row;             /* its row in the journal (holds.rid), given at its grant */
};

/* A parked acquire is linked into the queue of every resource it names. */
struct wlink {
	struct waiter *waiter;
	struct res *res;
	int64_t units; /* 0: exclusive, the whole capacity at grant time */
	struct wlink *prev, *next;
};

struct idem {
	char *key;
	char *fingerprint;
	int64_t created_at;
	bool pending;   /* its acquire is parked */
	hf_hold first;  /* the first outcome, token included */
	struct idem *next; /* retention FIFO */
};

/* A resource's event revision counter. It outlives the resource: an implicit resource vanishes
 * when idle, and when it comes back its revisions continue (consumers deduplicate by resource
 * and revision). One per resource name ever seen, loaded whole from the journal. It also heads
 * the index of the parts (of live and ended holds) naming it: a grant finds both in one
 * lookup, and a name's index costs no allocation of its own. */
struct rev {
	int64_t revision;   /* of the resource's last event */
	struct chain parts; /* struct part by_name links */
	char name[];
};

struct waiter {
	struct hf__call *call;
	char call_key[24]; /* the call id as text, the key in st->waiters */
	int64_t deadline;
	size_t deadline_slot;
	bool events; /* an event read waiting for a first event */
	struct waiter *ev_prev, *ev_next; /* st->event_waiters, for event reads */
	size_t n_links;
	struct wlink *links;
	struct idem *idem;
};

struct hf__state {
	hf_options opt;
	struct hf__map resources;
	struct hf__map holds;
	/* Secondary indexes of st->holds, live and ended, for lists filtered by owner or resource:
	 * each costs the matching holds, not the store. Per hold 16 bytes (by_owner) and per part
	 * 24 (by_name, hold), plus a struct owner and a map entry per distinct owner and 16 bytes
	 * in each name's struct rev. */
	struct hf__map by_owner; /* struct owner by owner */
	struct hf__map idems;
	struct hf__map waiters; /* by call id */
	struct hf__map revs;    /* struct rev by resource name: revisions, parts by name */
	struct hf__heap expiries;  /* tentative holds by expires_at */
	struct hf__heap deadlines; /* waiters by deadline */
	struct hold *ended_head, *ended_tail;
	struct idem *idem_head, *idem_tail;
	int64_t live_holds;
	int64_t n_waiters;
	int64_t last_fence;
	int64_t last_hold_row; /* the greatest hold row number given or loaded */
	uint64_t last_seq;
	uint64_t durable_seq;
	struct hf__sev **events; /* ring of the newest EVENT_CACHE events (a reference each) */
	uint64_t oldest_cached;  /* seq of the oldest cached event (0: none) */
	struct res *work_head;
	struct waiter *event_waiters; /* parked event reads */
	struct hf__sagas *sagas;      /* sagas.c */
};

/* ---- effects ---- */

static void fx_done(struct hf__effects *fx, struct hf__call *call)
{
	call->next = NULL;
	if (fx->done_tail)
		fx->done_tail->next = call;
	else
		fx->done_head = call;
	fx->done_tail = call;
}

static void fx_fail(struct hf__effects *fx, struct hf__call *call, int code, const char *fmt, ...)
    HF__PRINTF(4, 5);
static void fx_fail(struct hf__effects *fx, struct hf__call *call, int code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	call->reply->error.code = code;
	vsnprintf(call->reply->error.message, sizeof(call->reply->error.message), fmt, ap);
	va_end(ap);
	fx_done(fx, call);
}

static struct hf__jrec *fx_record(struct hf__effects *fx, enum hf__jtable table, const char *key,
                                  char *body, bool remove)
{
	/* A put without a body is a body that could not be made (out of memory); an event's
	 * record carries its event instead (emit_text). */
	struct hf__jrec *rec = !remove && !body && table != HF__J_EVENT ? NULL
	                                                                 : calloc(1, sizeof(*rec));
	if (!rec || (key && !(rec->key = hf__strdup(key)))) {
		free(rec);
		free(body);
		fx->failed = HF_ENOMEM;
		return NULL;
	}
	rec->table = table;
	rec->remove = remove;
	rec->body = body;
	if (fx->rec_tail)
		fx->rec_tail->next = rec;
	else
		fx->rec_head = rec;
	fx->rec_tail = rec;
	return rec;
}

void hf__jrec_free_list(struct hf__jrec *list)
{
	while (list) {
		struct hf__jrec *next = list->next;
		free(list->key);
		free(list->body);
		hf__sev_unref(list->event);
		free(list);
		list = next;
	}
}

/* Dumps and consumes a JSON value; NULL on allocation failure. */
static char *dump(json_t *j)
{
	char *s = hf__json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
	json_decref(j);
	return s;
}

/* ---- journal rows (row.c) ---- */

/* A binary row as a journal record; `row` NULL (out of memory) fails the step. */
static struct hf__jrec *fx_record_row(struct hf__effects *fx, enum hf__jtable table,
                                      const char *key, unsigned char *row, size_t len)
{
	struct hf__jrec *rec = fx_record(fx, table, key, (char *)row, false);
	if (rec)
		rec->body_len = len;
	return rec;
}

#ifndef NDEBUG
/* Debug builds (the sanitizer runs) decode every row written and compare it with what it
 * was made from: a row that would not read back as written fails here, not at the next open. */
static bool holds_equal(const hf_hold *a, const hf_hold *b)
{
	if (strcmp(a->id, b->id) || strcmp(a->token, b->token) || strcmp(a->owner, b->owner) ||
	    a->state != b->state || a->mode != b->mode || a->created_at_ms != b->created_at_ms ||
	    a->expires_at_ms != b->expires_at_ms || a->ended_at_ms != b->ended_at_ms ||
	    a->n_parts != b->n_parts)
		return false;
	for (size_t i = 0; i < a->n_parts; i++)
		if (strcmp(a->parts[i].resource, b->parts[i].resource) ||
		    a->parts[i].units != b->parts[i].units || a->parts[i].fence != b->parts[i].fence)
			return false;
	return true;
}

static bool hold_row_ok(const unsigned char *row, size_t len, const hf_hold *want,
                        const int64_t *capacities)
{
	hf_hold got;
	int64_t caps[HF_CLAIMS_MAX];
	if (!row || hf__row_hold_decode(row, len, &got, caps, NULL) == HF_ENOMEM)
		return true; /* out of memory is no verdict on the row */
	bool ok = holds_equal(&got, want) &&
	          memcmp(caps, capacities, want->n_parts * sizeof(*caps)) == 0;
	hf__hold_clear(&got);
	return ok;
}

static bool resource_row_ok(const unsigned char *row, size_t len, const hf_resource *want)
{
	hf_resource got;
	if (!row || hf__row_resource_decode(row, len, &got, NULL) == HF_ENOMEM)
		return true;
	bool ok = got.name && strcmp(got.name, want->name) == 0 &&
	          got.capacity == want->capacity && got.version == want->version &&
	          got.declared == want->declared && !got.meta == !want->meta &&
	          (!got.meta || strcmp(got.meta, want->meta) == 0);
	hf__resource_clear(&got);
	return ok;
}

static bool idem_row_ok(const unsigned char *row, size_t len, const struct hf__row_idem *want)
{
	struct hf__row_idem got;
	if (!row || hf__row_idem_decode(row, len, &got, NULL) == HF_ENOMEM)
		return true;
	bool ok = got.key && strcmp(got.key, want->key) == 0 &&
	          strcmp(got.fingerprint, want->fingerprint) == 0 &&
	          got.created_at == want->created_at && holds_equal(&got.hold, &want->hold);
	hf__row_idem_clear(&got);
	return ok;
}
#endif

static void resource_view(const struct res *r, hf_resource *out);

static void journal_resource(struct hf__effects *fx, struct res *r)
{
	hf_resource view;
	resource_view(r, &view);
	size_t len = 0;
	unsigned char *row = hf__row_resource(&view, &len);
	assert(resource_row_ok(row, len, &view));
	if (!row)
		fx->failed = HF_ENOMEM;
	else if (fx_record_row(fx, HF__J_RESOURCE, r->name, row, len))
		r->journaled = true;
}

static void journal_resource_removed(struct hf__effects *fx, struct res *r)
{
	if (r->journaled)
		fx_record(fx, HF__J_RESOURCE, r->name, NULL, true);
	r->journaled = false;
}

/* ---- views: the public items built from the state ---- */

/* A public view of a hold that borrows its strings; `parts` is the caller's room for its
 * parts (HF_CLAIMS_MAX). Copy it with hf__hold_copy to keep it. */
static void hold_view(const struct hold *h, bool with_token, hf_hold *out, hf_hold_part *parts)
{
	memset(out, 0, sizeof(*out));
	memcpy(out->id, h->id, sizeof(out->id));
	if (with_token)
		memcpy(out->token, h->token, sizeof(out->token));
	out->owner = h->owner;
	out->state = h->state;
	out->mode = h->mode;
	out->created_at_ms = h->created_at;
	out->expires_at_ms = h->expires_at;
	out->ended_at_ms = h->ended_at;
	out->n_parts = h->n_parts;
	out->parts = parts;
	for (size_t i = 0; i < h->n_parts; i++)
		parts[i] = (hf_hold_part){.resource = h->parts[i].name,
		                          .units = h->parts[i].units,
		                          .fence = h->parts[i].fence};
}

/* Deep copy of a hold into a public item. */
static int hold_export(const struct hold *h, bool with_token, hf_hold *out)
{
	hf_hold_part parts[HF_CLAIMS_MAX];
	hf_hold view;
	hold_view(h, with_token, &view, parts);
	return hf__hold_copy(out, &view);
}

static int reply_hold(struct hf__call *call, const struct hold *h, bool with_token)
{
	hf_hold *copy = malloc(sizeof(*copy));
	if (!copy || hold_export(h, with_token, copy) != HF_OK) {
		free(copy);
		return HF_ENOMEM;
	}
	call->reply->hold = copy;
	return HF_OK;
}

static void resource_view(const struct res *r, hf_resource *out)
{
	*out = (hf_resource){.name = r->name,
	                     .capacity = r->capacity,
	                     .meta = r->meta,
	                     .version = r->version,
	                     .declared = r->declared,
	                     .held = r->held,
	                     .holds = r->n_holds,
	                     .waiters = r->n_waiters};
}

static int reply_resource(struct hf__call *call, const struct res *r)
{
	hf_resource view, *copy = malloc(sizeof(*copy));
	resource_view(r, &view);
	if (!copy || hf__resource_copy(copy, &view) != HF_OK) {
		free(copy);
		return HF_ENOMEM;
	}
	call->reply->resource = copy;
	return HF_OK;
}

/* ---- events ---- */

/* The counter of `name`'s revisions, made at 0 when new; NULL when out of memory. */
static struct rev *rev_get(struct hf__state *st, const char *name)
{
	return hf__map_intern(&st->revs, name, offsetof(struct rev, name));
}

/* Gives the event the next revision of each resource it touches (names[0] is its resource),
 * in ev->revisions (room for n; the names are borrowed). */
static int event_revise(struct hf__state *st, hf_event *ev, const char *const *names, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		struct rev *r = rev_get(st, names[i]);
		if (!r)
			return HF_ENOMEM;
		ev->revisions[i] = (hf_event_revision){(char *)names[i], ++r->revision};
		ev->n_revisions = i + 1;
	}
	if (n)
		ev->revision = ev->revisions[0].revision;
	return HF_OK;
}

struct hf__sev *hf__sev_new(const hf_event *src)
{
	const char *strs[4] = {src->type, src->resource, src->hold_id, src->data};
	size_t len[4], text = 0;
	for (int k = 0; k < 4; k++)
		text += len[k] = strs[k] ? strlen(strs[k]) + 1 : 0;
	for (size_t i = 0; i < src->n_revisions; i++)
		text += strlen(src->revisions[i].resource) + 1;
	size_t revs = src->n_revisions * sizeof(hf_event_revision);
	struct hf__sev *sev = malloc(sizeof(*sev) + revs + text);
	if (!sev)
		return NULL;
	atomic_init(&sev->refs, 1);
	sev->ev = *src;
	sev->ev.revisions = src->n_revisions ? (hf_event_revision *)(sev + 1) : NULL;
	char *p = (char *)(sev + 1) + revs;
	char **dst[4] = {&sev->ev.type, &sev->ev.resource, &sev->ev.hold_id, &sev->ev.data};
	for (int k = 0; k < 4; k++) {
		*dst[k] = strs[k] ? memcpy(p, strs[k], len[k]) : NULL;
		p += len[k];
	}
	for (size_t i = 0; i < src->n_revisions; i++) {
		size_t n = strlen(src->revisions[i].resource) + 1;
		sev->ev.revisions[i].resource = memcpy(p, src->revisions[i].resource, n);
		sev->ev.revisions[i].revision = src->revisions[i].revision;
		p += n;
	}
	return sev;
}

void hf__sev_unref(struct hf__sev *sev)
{
	if (sev && atomic_fetch_sub_explicit(&sev->refs, 1, memory_order_acq_rel) == 1)
		free(sev);
}

/* Puts the event in the memory cache, taking a reference. */
static void cache_event(struct hf__state *st, struct hf__sev *sev)
{
	struct hf__sev **slot = &st->events[sev->ev.seq % EVENT_CACHE];
	hf__sev_unref(*slot);
	atomic_fetch_add_explicit(&sev->refs, 1, memory_order_relaxed);
	*slot = sev;
	if (st->oldest_cached == 0)
		st->oldest_cached = sev->ev.seq;
	else if (sev->ev.seq - st->oldest_cached >= EVENT_CACHE)
		st->oldest_cached = sev->ev.seq - EVENT_CACHE + 1;
}

/* Appends an event (and its journal record) touching the resources `names` (the first is its
 * resource; none for an event without one); `body`, its data as JSON text, is consumed (NULL:
 * out of memory). */
static void emit_text(struct hf__state *st, struct hf__effects *fx, int64_t now,
                      const char *type, const char *const *names, size_t n_names,
                      const char *hold_id, char *body)
{
	const char *resource = n_names ? names[0] : NULL;
	if (!body) {
		fx->failed = HF_ENOMEM;
		return;
	}
	hf_event_revision revs[HF_CLAIMS_MAX];
	hf_event ev = {.seq = ++st->last_seq, .at_ms = now, .type = (char *)type,
	               .resource = (char *)resource, .hold_id = (char *)hold_id, .data = body,
	               .revisions = revs};
	struct hf__jrec *rec = NULL;
	if (n_names > HF_CLAIMS_MAX || event_revise(st, &ev, names, n_names) != HF_OK ||
	    !(rec = fx_record(fx, HF__J_EVENT, NULL, NULL, false)) ||
	    !(rec->event = hf__sev_new(&ev))) {
		free(body);
		fx->failed = HF_ENOMEM;
		return;
	}
	free(body);
	/* The cache shares it with the record; it is served once durable. */
	cache_event(st, rec->event);
}

static void emit(struct hf__state *st, struct hf__effects *fx, int64_t now, const char *type,
                 const char *resource, const char *hold_id, json_t *data)
{
	emit_text(st, fx, now, type, &resource, resource ? 1 : 0, hold_id, dump(data));
}

/* `by`: who ended the hold when not its holder ("operator"), else NULL. */
static void emit_hold_by(struct hf__state *st, struct hf__effects *fx, int64_t now,
                         const char *type, const struct hold *h, const char *by)
{
	hf_hold_part parts[HF_CLAIMS_MAX];
	hf_hold view;
	const char *names[HF_CLAIMS_MAX];
	hold_view(h, false, &view, parts);
	for (size_t i = 0; i < h->n_parts; i++)
		names[i] = h->parts[i].name;
	emit_text(st, fx, now, type, names, h->n_parts, h->id,
	          hf__event_hold_data_text_by(type, &view, by));
}

static void emit_hold(struct hf__state *st, struct hf__effects *fx, int64_t now, const char *type,
                      const struct hold *h)
{
	emit_hold_by(st, fx, now, type, h, NULL);
}

/* ---- resources ---- */

/* A new resource in st->resources, where `name` is not (*present: the one there, else NULL;
 * NULL is returned then, and when out of memory). */
static struct res *res_add(struct hf__state *st, const char *name, int64_t capacity,
                           void **present)
{
	*present = NULL;
	struct res *r = calloc(1, sizeof(*r));
	if (!r || !(r->name = hf__strdup(name)))
		goto fail;
	r->capacity = capacity;
	if (hf__map_add(&st->resources, r->name, r, present) != HF_OK || *present)
		goto fail;
	return r;
fail:
	if (r)
		free(r->name);
	free(r);
	return NULL;
}

/* A new resource where its caller knows there is none; NULL when out of memory. */
static struct res *res_new(struct hf__state *st, const char *name, int64_t capacity)
{
	void *present;
	return res_add(st, name, capacity, &present);
}

static void res_free(struct res *r)
{
	free(r->name);
	free(r->meta);
	free(r);
}

static bool res_idle(const struct res *r)
{
	return r->n_holds == 0 && r->n_waiters == 0;
}

/* Drops an implicit resource that nothing names any more. */
static void res_drop_if_idle(struct hf__state *st, struct hf__effects *fx, struct res *r)
{
	if (r->declared || !res_idle(r) || r->in_work)
		return;
	journal_resource_removed(fx, r);
	hf__map_remove(&st->resources, r->name);
	res_free(r);
}

static void work_push(struct hf__state *st, struct res *r)
{
	if (r->in_work)
		return;
	r->in_work = true;
	r->work_next = st->work_head;
	st->work_head = r;
}

/* ---- holds ---- */

static void chain_link(struct chain *c, struct ilink *l)
{
	l->prev = NULL;
	l->next = c->head;
	if (c->head)
		c->head->prev = l;
	c->head = l;
	c->n++;
}

static void chain_unlink(struct chain *c, struct ilink *l)
{
	if (l->next)
		l->next->prev = l->prev;
	if (l->prev)
		l->prev->next = l->next;
	else
		c->head = l->next;
	c->n--;
}

/* The holds of `owner`, made empty on its first hold; NULL when out of memory. */
static struct owner *owner_get(struct hf__state *st, const char *owner)
{
	return hf__map_intern(&st->by_owner, owner, offsetof(struct owner, key));
}

/* Takes a hold out of its owner's list; the last one out frees the list. */
static void owner_unlink(struct hf__state *st, struct hold *h)
{
	struct owner *o = hf__map_get(&st->by_owner, h->owner);
	chain_unlink(&o->holds, &h->by_owner);
	if (o->holds.n == 0) {
		hf__map_remove(&st->by_owner, o->key);
		free(o);
	}
}

/* The parts' lists stay with their names' counters, empty or not. */
static void index_remove_parts(struct hf__state *st, struct hold *h, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		struct rev *r = hf__map_get(&st->revs, h->parts[i].name);
		chain_unlink(&r->parts, &h->parts[i].by_name);
	}
}

/* Enters a hold in the secondary indexes: all or nothing. Every hold in st->holds is in them,
 * from its insertion until it leaves the map. */
static int index_add(struct hf__state *st, struct hold *h)
{
	struct owner *o = owner_get(st, h->owner);
	if (!o)
		return HF_ENOMEM;
	chain_link(&o->holds, &h->by_owner);
	for (size_t i = 0; i < h->n_parts; i++) {
		h->parts[i].hold = h;
		struct rev *r = rev_get(st, h->parts[i].name);
		if (!r) {
			index_remove_parts(st, h, i);
			owner_unlink(st, h);
			return HF_ENOMEM;
		}
		chain_link(&r->parts, &h->parts[i].by_name);
	}
	return HF_OK;
}

static void index_remove(struct hf__state *st, struct hold *h)
{
	index_remove_parts(st, h, h->n_parts);
	owner_unlink(st, h);
}

static void hold_free(struct hold *h)
{
	free(h->owner);
	for (size_t i = 0; i < h->n_parts; i++)
		free(h->parts[i].name);
	free(h->parts);
	free(h);
}

static void journal_hold(struct hf__effects *fx, const struct hold *h)
{
	hf_hold_part parts[HF_CLAIMS_MAX];
	hf_hold view;
	hold_view(h, true, &view, parts);
	/* An implicit resource has no row while it lives: its live holds carry its capacity. */
	int64_t capacities[HF_CLAIMS_MAX];
	for (size_t i = 0; i < h->n_parts; i++) {
		const struct res *r = h->parts[i].res;
		capacities[i] = r && !r->journaled ? r->capacity : 0;
	}
	size_t len = 0;
	unsigned char *row = hf__row_hold(&view, capacities, &len);
	assert(hold_row_ok(row, len, &view, capacities));
	struct hf__jrec *rec = row ? fx_record_row(fx, HF__J_HOLD, h->id, row, len) : NULL;
	if (rec)
		rec->row = h->row;
	else
		fx->failed = HF_ENOMEM;
}

/* Fences never go back, across restarts: the journal's last fence is the greatest of the
 * meta row "last_fence" and every fence in its hold rows (the load takes both). A grant's
 * fences are in its hold's row; the meta row is written only when hold rows go (purge), so
 * that a grant does not write it each time. */
static void journal_fence(struct hf__state *st, struct hf__effects *fx)
{
	char buf[32];
	snprintf(buf, sizeof(buf), "%lld", (long long)st->last_fence);
	char *body = hf__strdup(buf);
	if (!body) {
		fx->failed = HF_ENOMEM;
		return;
	}
	fx_record(fx, HF__J_META, "last_fence", body, false);
}

/* Ends a live hold: frees its units, queues its resources for waiters, keeps it readable.
 * `by`: who ended it when not its holder or its lease ("operator"), else NULL. */
static void hold_end_by(struct hf__state *st, struct hf__effects *fx, struct hold *h,
                        hf_hold_state state, int64_t ended_at, int64_t now, const char *by)
{
	hf__heap_remove(&st->expiries, &h->expiry_slot);
	h->state = state;
	h->ended_at = ended_at;
	for (size_t i = 0; i < h->n_parts; i++) {
		struct res *r = h->parts[i].res;
		r->held -= h->parts[i].units;
		r->n_holds--;
		if (h->mode == HF_MODE_EXCLUSIVE)
			r->n_exclusive--;
		h->parts[i].res = NULL;
		work_push(st, r);
	}
	st->live_holds--;
	h->ended_next = NULL;
	if (st->ended_tail)
		st->ended_tail->ended_next = h;
	else
		st->ended_head = h;
	st->ended_tail = h;
	journal_hold(fx, h);
	emit_hold_by(st, fx, now, state == HF_HOLD_EXPIRED ? "hold.expired" : "hold.released", h,
	             by);
}

static void hold_end(struct hf__state *st, struct hf__effects *fx, struct hold *h,
                     hf_hold_state state, int64_t ended_at, int64_t now)
{
	hold_end_by(st, fx, h, state, ended_at, now, NULL);
}

/* ---- waiting ---- */

/* Could this link ever be granted at its resource's capacity? Only an any-of waiter keeps a
 * link that cannot (its other claims still can): such a link stays queued, in its place, in
 * case the capacity rises again, but it neither blocks the queue nor is granted. */
static bool link_live(const struct wlink *link)
{
	return link->units <= link->res->capacity; /* exclusive (0) always fits */
}

/* The head of a resource's queue: its first live link, or NULL. */
static struct wlink *queue_first(const struct res *r)
{
	struct wlink *l = r->queue_head;
	while (l && !link_live(l))
		l = l->next;
	return l;
}

/* Can `link`'s waiter take its units of link->res now? FIFO: only the head may. */
static bool link_fits(const struct wlink *link)
{
	const struct res *r = link->res;
	if (queue_first(r) != link)
		return false;
	if (link->units == 0)
		return r->held == 0;
	return r->n_exclusive == 0 && r->capacity - r->held >= link->units;
}

static void waiter_unlink(struct hf__state *st, struct waiter *w)
{
	for (size_t i = 0; i < w->n_links; i++) {
		struct wlink *l = &w->links[i];
		struct res *r = l->res;
		if (l->prev)
			l->prev->next = l->next;
		else
			r->queue_head = l->next;
		if (l->next)
			l->next->prev = l->prev;
		else
			r->queue_tail = l->prev;
		r->n_waiters--;
		work_push(st, r);
	}
	hf__heap_remove(&st->deadlines, &w->deadline_slot);
	hf__map_remove(&st->waiters, w->call_key);
	if (w->events) {
		if (w->ev_prev)
			w->ev_prev->ev_next = w->ev_next;
		else
			st->event_waiters = w->ev_next;
		if (w->ev_next)
			w->ev_next->ev_prev = w->ev_prev;
	} else {
		st->n_waiters--;
	}
}

static void waiter_free(struct waiter *w)
{
	free(w->links);
	free(w);
}

static void idem_forget(struct hf__state *st, struct idem *d);

/* Ends a wait without a grant. */
static void waiter_fail(struct hf__state *st, struct hf__effects *fx, struct waiter *w, int code,
                        const char *message)
{
	waiter_unlink(st, w);
	if (w->idem)
		idem_forget(st, w->idem);
	fx_fail(fx, w->call, code, "%s", message);
	waiter_free(w);
}

static bool call_is_any(const struct waiter *w)
{
	return w->call->req.acquire.any;
}

static int grant(struct hf__state *st, struct hf__effects *fx, struct hf__call *call,
                 struct res **res, const int64_t *units, size_t n, struct idem *idem, int64_t now);

static void pump(struct hf__state *st, struct hf__effects *fx, int64_t now)
{
	while (st->work_head) {
		struct res *r = st->work_head;
		st->work_head = r->work_next;
		r->in_work = false;
		struct wlink *head;
		while ((head = queue_first(r))) {
			struct waiter *w = head->waiter;
			size_t chosen = SIZE_MAX;
			if (w->events)
				break; /* never queued on resources */
			if (call_is_any(w)) {
				if (link_fits(head))
					chosen = (size_t)(head - w->links);
			} else {
				bool all = true;
				for (size_t i = 0; all && i < w->n_links; i++)
					all = link_fits(&w->links[i]);
				if (all)
					chosen = 0;
			}
			if (chosen == SIZE_MAX)
				break;
			struct res *take[HF_CLAIMS_MAX];
			int64_t units[HF_CLAIMS_MAX];
			size_t n = 0;
			if (call_is_any(w)) {
				take[0] = w->links[chosen].res;
				units[0] = w->links[chosen].units;
				n = 1;
			} else {
				for (size_t i = 0; i < w->n_links; i++, n++) {
					take[n] = w->links[i].res;
					units[n] = w->links[i].units;
				}
			}
			waiter_unlink(st, w);
			struct idem *idem = w->idem;
			w->idem = NULL;
			int rc = grant(st, fx, w->call, take, units, n, idem, now);
			if (rc != HF_OK) {
				if (idem)
					idem_forget(st, idem);
				fx_fail(fx, w->call, rc, "%s", hf_strerror(rc));
			}
			waiter_free(w);
		}
		res_drop_if_idle(st, fx, r);
	}
}

/* ---- idempotency ---- */

static void idem_free(struct idem *d)
{
	free(d->key);
	free(d->fingerprint);
	hf__hold_clear(&d->first);
	free(d);
}

/* Forgets a pending record (its acquire failed): a retry may try again. */
static void idem_forget(struct hf__state *st, struct idem *d)
{
	hf__map_remove(&st->idems, d->key);
	idem_free(d);
}

static void journal_idem(struct hf__effects *fx, const struct idem *d)
{
	struct hf__row_idem row = {.key = d->key,
	                           .fingerprint = d->fingerprint,
	                           .created_at = d->created_at,
	                           .hold = d->first};
	size_t len = 0;
	unsigned char *bytes = hf__row_idem(&row, &len);
	assert(idem_row_ok(bytes, len, &row));
	if (!bytes)
		fx->failed = HF_ENOMEM;
	else
		fx_record_row(fx, HF__J_IDEM, d->key, bytes, len);
}

static void idem_append(struct hf__state *st, struct idem *d)
{
	d->next = NULL;
	if (st->idem_tail)
		st->idem_tail->next = d;
	else
		st->idem_head = d;
	st->idem_tail = d;
}

/* ---- granting ---- */

static int grant(struct hf__state *st, struct hf__effects *fx, struct hf__call *call,
                 struct res **res, const int64_t *units, size_t n, struct idem *idem, int64_t now)
{
	const hf_acquire_req *a = &call->req.acquire;
	if ((size_t)st->live_holds >= st->opt.max_holds)
		return HF_ELIMIT;
	struct hold *h = calloc(1, sizeof(*h));
	if (!h)
		return HF_ENOMEM;
	h->expiry_slot = HF__HEAP_NONE;
	h->parts = calloc(n, sizeof(*h->parts));
	h->owner = hf__strdup(a->owner);
	if (!h->parts || !h->owner || hf__random_id_token(h->id, h->token) != HF_OK)
		goto fail;
	for (size_t i = 0; i < n; i++) {
		h->n_parts = i + 1;
		if (!(h->parts[i].name = hf__strdup(res[i]->name)))
			goto fail;
	}
	h->state = HF_HOLD_TENTATIVE;
	h->mode = a->mode;
	h->created_at = now;
	h->expires_at = now + a->ttl_ms;
	h->row = ++st->last_hold_row; /* appended where the last grants' rows are */
	if (index_add(st, h) != HF_OK)
		goto fail;
	if (hf__map_put(&st->holds, h->id, h) != HF_OK)
		goto unindex;
	if (hf__heap_push(&st->expiries, h->expires_at, h, &h->expiry_slot) != HF_OK) {
		hf__map_remove(&st->holds, h->id);
		goto unindex;
	}
	for (size_t i = 0; i < n; i++) {
		struct res *r = res[i];
		struct part *p = &h->parts[i];
		p->res = r;
		p->units = units[i] ? units[i] : r->capacity;
		p->fence = ++st->last_fence;
		r->held += p->units;
		r->n_holds++;
		if (h->mode == HF_MODE_EXCLUSIVE)
			r->n_exclusive++;
	}
	st->live_holds++;
	journal_hold(fx, h);
	emit_hold(st, fx, now, "hold.granted", h);
	if (idem) {
		idem->pending = false;
		idem->created_at = now;
		if (hold_export(h, true, &idem->first) != HF_OK) {
			fx->failed = HF_ENOMEM;
		} else {
			journal_idem(fx, idem);
			idem_append(st, idem);
		}
	}
	if (reply_hold(call, h, true) != HF_OK)
		fx->failed = HF_ENOMEM;
	fx_done(fx, call);
	return HF_OK;
unindex:
	index_remove(st, h);
fail:
	hold_free(h);
	return HF_ENOMEM;
}

/* The claims of an acquire, resolved against the resources: in the fixed internal order
 * (by name) for all-of requests, in the caller's order for any-of requests. */
struct resolved {
	size_t n;
	const hf_claim *claim[HF_CLAIMS_MAX];
	struct res *res[HF_CLAIMS_MAX]; /* NULL: an implicit resource to create */
	int64_t units[HF_CLAIMS_MAX];   /* 0: exclusive */
};

static int cmp_claim_name(const void *a, const void *b)
{
	const hf_claim *const *x = a, *const *y = b;
	return strcmp((*x)->name, (*y)->name);
}

static int resolve(struct hf__state *st, const hf_acquire_req *a, struct resolved *rv,
                   hf_error *err)
{
	rv->n = a->n_claims;
	for (size_t i = 0; i < a->n_claims; i++)
		rv->claim[i] = &a->claims[i];
	if (!a->any)
		qsort(rv->claim, rv->n, sizeof(rv->claim[0]), cmp_claim_name);
	size_t creating = 0;
	for (size_t i = 0; i < rv->n; i++) {
		const hf_claim *c = rv->claim[i];
		struct res *r = hf__map_get(&st->resources, c->name);
		if (!r && c->capacity == 0)
			return hf__err(err, HF_ENORESOURCE, "resource '%s' does not exist", c->name);
		if (r && c->capacity > 0 && c->capacity != r->capacity)
			return hf__err(err, HF_ECAPMISMATCH, "resource '%s' has capacity %lld, not %lld",
			               c->name, (long long)r->capacity, (long long)c->capacity);
		int64_t capacity = r ? r->capacity : c->capacity;
		int64_t units = a->mode == HF_MODE_UNITS ? c->units : a->mode == HF_MODE_SHARED ? 1 : 0;
		if (units > capacity)
			return hf__err(err, HF_ECAPACITY, "%lld units of '%s' exceed its capacity %lld",
			               (long long)units, c->name, (long long)capacity);
		rv->res[i] = r;
		rv->units[i] = units;
		creating += r == NULL;
	}
	if (st->resources.count + creating > st->opt.max_resources)
		return hf__err(err, HF_ELIMIT, "the store holds %zu resources, the limit is %zu",
		               st->resources.count, st->opt.max_resources);
	return HF_OK;
}

/* Could claim i be granted now, by a request that is not queued? No barging: a resource
 * with waiters grants nothing to newcomers. */
static bool fits_now(void *ctx, size_t i)
{
	const struct resolved *rv = ctx;
	const struct res *r = rv->res[i];
	if (!r)
		return true;
	if (queue_first(r))
		return false;
	if (rv->units[i] == 0)
		return r->held == 0;
	return r->n_exclusive == 0 && r->capacity - r->held >= rv->units[i];
}

/* Creates the implicit resources a request names and returns false on allocation failure. */
static bool create_missing(struct hf__state *st, struct resolved *rv, size_t from, size_t to)
{
	for (size_t i = from; i < to; i++)
		if (!rv->res[i] && !(rv->res[i] = hf__map_get(&st->resources, rv->claim[i]->name)) &&
		    !(rv->res[i] = res_new(st, rv->claim[i]->name, rv->claim[i]->capacity)))
			return false;
	return true;
}

static void op_acquire(struct hf__state *st, struct hf__call *call, int64_t now,
                       struct hf__effects *fx)
{
	const hf_acquire_req *a = &call->req.acquire;
	hf_error *err = &call->reply->error;
	struct idem *idem = NULL;
	if (a->idempotency_key) {
		char *fp = hf__acquire_fingerprint(a);
		if (!fp) {
			fx_fail(fx, call, HF_ENOMEM, "out of memory");
			return;
		}
		struct idem *d = hf__map_get(&st->idems, a->idempotency_key);
		if (d) {
			int verdict = hf__idem_verdict(d->key, d->fingerprint, fp, d->pending, err);
			free(fp);
			if (verdict != HF_OK) {
				fx_done(fx, call);
			} else {
				hf_hold *copy = malloc(sizeof(*copy));
				if (!copy || hf__hold_copy(copy, &d->first) != HF_OK) {
					free(copy);
					fx_fail(fx, call, HF_ENOMEM, "out of memory");
					return;
				}
				struct hold *live = hf__map_get(&st->holds, d->first.id);
				if (live) {
					copy->state = live->state;
					copy->expires_at_ms = live->expires_at;
					copy->ended_at_ms = live->ended_at;
				}
				copy->replayed = true;
				call->reply->hold = copy;
				fx_done(fx, call);
			}
			return;
		}
		idem = calloc(1, sizeof(*idem));
		if (!idem || !(idem->key = hf__strdup(a->idempotency_key)) ||
		    hf__map_put(&st->idems, idem->key, idem) != HF_OK) {
			if (idem)
				free(idem->key);
			free(idem);
			free(fp);
			fx_fail(fx, call, HF_ENOMEM, "out of memory");
			return;
		}
		idem->fingerprint = fp;
		idem->pending = true;
	}

	struct resolved rv;
	int rc = resolve(st, a, &rv, err);
	if (rc != HF_OK)
		goto fail;
	/* Granted now? */
	size_t from, to;
	if (hf__claims_grantable(rv.n, a->any, fits_now, &rv, &from, &to)) {
		if (!create_missing(st, &rv, from, to)) {
			rc = hf__err(err, HF_ENOMEM, "out of memory");
			goto fail_drop;
		}
		rc = grant(st, fx, call, rv.res + from, rv.units + from, to - from, idem, now);
		if (rc != HF_OK) {
			hf__err(err, rc, "%s", rc == HF_ELIMIT ? "the store's limit of live holds is reached"
			                                          : hf_strerror(rc));
			goto fail_drop;
		}
		return;
	}
	if (a->wait_ms == 0) {
		rc = hf__err_unavailable(err, rv.n);
		goto fail;
	}
	if ((size_t)st->n_waiters >= st->opt.max_waiters) {
		rc = hf__err(err, HF_ELIMIT, "%lld requests are waiting, the limit is %zu",
		             (long long)st->n_waiters, st->opt.max_waiters);
		goto fail;
	}
	/* Park: one link per claim, at the tail of each queue. */
	struct waiter *w = calloc(1, sizeof(*w));
	if (w)
		w->links = calloc(rv.n, sizeof(*w->links));
	if (!w || !w->links || !create_missing(st, &rv, 0, rv.n)) {
		if (w)
			free(w->links);
		free(w);
		rc = hf__err(err, HF_ENOMEM, "out of memory");
		goto fail_drop;
	}
	w->call = call;
	w->deadline_slot = HF__HEAP_NONE;
	w->deadline = call->submitted_at_ms + a->wait_ms;
	w->idem = idem;
	snprintf(w->call_key, sizeof(w->call_key), "%llu", (unsigned long long)call->id);
	if (hf__map_put(&st->waiters, w->call_key, w) != HF_OK ||
	    hf__heap_push(&st->deadlines, w->deadline, w, &w->deadline_slot) != HF_OK) {
		hf__map_remove(&st->waiters, w->call_key);
		waiter_free(w);
		rc = hf__err(err, HF_ENOMEM, "out of memory");
		goto fail_drop;
	}
	w->n_links = rv.n;
	for (size_t i = 0; i < rv.n; i++) {
		struct wlink *l = &w->links[i];
		struct res *r = rv.res[i];
		*l = (struct wlink){.waiter = w, .res = r, .units = rv.units[i], .prev = r->queue_tail};
		if (r->queue_tail)
			r->queue_tail->next = l;
		else
			r->queue_head = l;
		r->queue_tail = l;
		r->n_waiters++;
	}
	st->n_waiters++;
	return;
fail_drop:
	for (size_t i = 0; i < rv.n; i++) {
		struct res *r = hf__map_get(&st->resources, rv.claim[i]->name);
		if (r)
			res_drop_if_idle(st, fx, r);
	}
fail:
	if (idem)
		idem_forget(st, idem);
	call->reply->error.code = rc;
	fx_done(fx, call);
}

/* ---- hold operations ---- */

/* Finds the hold of an extend/confirm/release and checks its token; fails the call if not. */
static struct hold *owned_hold(struct hf__state *st, struct hf__call *call, struct hf__effects *fx)
{
	struct hold *h = hf__map_get(&st->holds, call->req.hold_id);
	bool by_operator = call->req.op == HF_OP_RELEASE && call->req.operator_release;
	int rc = h ? hf__check_owner_or_operator(h->id, h->token, h->state, call->req.token,
	                                         by_operator, &call->reply->error)
	           : hf__err_no_hold(&call->reply->error, call->req.hold_id, NULL);
	if (rc != HF_OK) {
		fx_done(fx, call);
		return NULL;
	}
	return h;
}

static void reply_hold_done(struct hf__effects *fx, struct hf__call *call, const struct hold *h)
{
	if (reply_hold(call, h, false) != HF_OK)
		call->reply->error = (hf_error){.code = HF_ENOMEM, .message = "out of memory"};
	fx_done(fx, call);
}

static void op_extend(struct hf__state *st, struct hf__call *call, int64_t now,
                      struct hf__effects *fx)
{
	struct hold *h = owned_hold(st, call, fx);
	if (!h)
		return;
	if (h->state == HF_HOLD_TENTATIVE) {
		h->expires_at = now + call->req.ttl_ms;
		hf__heap_remove(&st->expiries, &h->expiry_slot);
		if (hf__heap_push(&st->expiries, h->expires_at, h, &h->expiry_slot) != HF_OK)
			fx->failed = HF_ENOMEM;
		journal_hold(fx, h);
		emit_hold(st, fx, now, "hold.extended", h);
	}
	reply_hold_done(fx, call, h);
}

static void op_confirm(struct hf__state *st, struct hf__call *call, int64_t now,
                       struct hf__effects *fx)
{
	struct hold *h = owned_hold(st, call, fx);
	if (!h)
		return;
	if (h->state == HF_HOLD_TENTATIVE) {
		h->state = HF_HOLD_CONFIRMED;
		h->expires_at = 0;
		hf__heap_remove(&st->expiries, &h->expiry_slot);
		journal_hold(fx, h);
		emit_hold(st, fx, now, "hold.confirmed", h);
	}
	reply_hold_done(fx, call, h);
}

static void op_release(struct hf__state *st, struct hf__call *call, int64_t now,
                       struct hf__effects *fx)
{
	struct hold *h = owned_hold(st, call, fx);
	if (!h)
		return;
	hold_end_by(st, fx, h, HF_HOLD_RELEASED, now, now,
	            call->req.operator_release ? "operator" : NULL);
	pump(st, fx, now);
	reply_hold_done(fx, call, h);
}

static void op_get_hold(struct hf__state *st, struct hf__call *call, struct hf__effects *fx)
{
	struct hold *h = hf__map_get(&st->holds, call->req.hold_id);
	if (!h)
		fx_fail(fx, call, HF_ENOHOLD, "hold '%s' does not exist", call->req.hold_id);
	else
		reply_hold_done(fx, call, h);
}

/* qsort comparisons of arrays of void * that point to holds, resources. */
static int cmp_hold_id(const void *a, const void *b)
{
	const struct hold *x = *(void *const *)a, *y = *(void *const *)b;
	return strcmp(x->id, y->id);
}

static int cmp_res_name(const void *a, const void *b)
{
	const struct res *x = *(void *const *)a, *y = *(void *const *)b;
	return strcmp(x->name, y->name);
}

/* Puts the k smallest of items[0..n) by `cmp` (qsort's) first, in order: a bounded max-heap
 * in items[0..k) over the rest, then a sort of those k. O(n log k): a page of a list, or the
 * readiness probe's list of one, costs a scan of the map rather than a sort of all of it. */
static void first_sorted(void **items, size_t n, size_t k, int (*cmp)(const void *, const void *))
{
	if (k >= n) {
		qsort(items, n, sizeof(*items), cmp);
		return;
	}
	for (size_t i = 1; i < k; i++) /* heapify by sifting each item up */
		for (size_t c = i; c > 0 && cmp(&items[(c - 1) / 2], &items[c]) < 0; c = (c - 1) / 2) {
			void *t = items[c];
			items[c] = items[(c - 1) / 2];
			items[(c - 1) / 2] = t;
		}
	for (size_t i = k; i < n; i++) {
		if (k == 0 || cmp(&items[i], &items[0]) >= 0)
			continue;
		items[0] = items[i];
		for (size_t p = 0;;) { /* sift the new top down */
			size_t c = 2 * p + 1;
			if (c >= k)
				break;
			if (c + 1 < k && cmp(&items[c + 1], &items[c]) > 0)
				c++;
			if (cmp(&items[c], &items[p]) <= 0)
				break;
			void *t = items[c];
			items[c] = items[p];
			items[p] = t;
			p = c;
		}
	}
	qsort(items, k, sizeof(*items), cmp);
}

static bool hold_matches(const struct hold *h, const hf_request *q)
{
	if (q->cursor && strcmp(h->id, q->cursor) <= 0)
		return false;
	if (q->owner && strcmp(h->owner, q->owner) != 0)
		return false;
	if (q->state >= 0 && (int)h->state != q->state)
		return false;
	if (q->resource) {
		for (size_t i = 0; i < h->n_parts; i++)
			if (strcmp(h->parts[i].name, q->resource) == 0)
				return true;
		return false;
	}
	return true;
}

/* Is `p` its hold's first part of its name? A hold naming a resource twice is in that name's
 * chain twice, and listed once. */
static bool first_of_name(const struct part *p)
{
	for (const struct part *q = p->hold->parts; q < p; q++)
		if (strcmp(q->name, p->name) == 0)
			return false;
	return true;
}

/* The holds a list must look at: the shorter chain of its owner's and its resource's when it
 * names them (*parts: a chain of parts by name), else NULL: every hold. *none: a named owner
 * or resource has no hold at all. */
static const struct chain *list_chain(const struct hf__state *st, const hf_request *q, bool *parts,
                                      bool *none)
{
	const struct owner *o = q->owner ? hf__map_get(&st->by_owner, q->owner) : NULL;
	const struct rev *r = q->resource ? hf__map_get(&st->revs, q->resource) : NULL;
	const struct chain *owner = o ? &o->holds : NULL, *name = r ? &r->parts : NULL;
	*none = (q->owner && !owner) || (q->resource && !name);
	*parts = name && (!owner || name->n < owner->n);
	return *parts ? name : owner;
}

/* The holds that match a list, in no order: *match (the caller frees it), *n of them. The
 * owner's or resource's chain costs its own holds; a list naming neither scans the map. */
static int list_matches(struct hf__state *st, const hf_request *q, void ***match, size_t *n)
{
	bool parts, none;
	const struct chain *c = list_chain(st, q, &parts, &none);
	size_t cap = none ? 0 : c ? c->n : st->holds.count;
	void **m = malloc((cap + 1) * sizeof(*m)); /* struct hold * */
	if (!m)
		return HF_ENOMEM;
	size_t k = 0;
	struct hold *h;
	if (c) {
		for (struct ilink *l = c->head; l; l = l->next) {
			struct part *p =
			    parts ? (void *)((char *)l - offsetof(struct part, by_name)) : NULL;
			h = p ? p->hold : (void *)((char *)l - offsetof(struct hold, by_owner));
			if ((!p || first_of_name(p)) && hold_matches(h, q))
				m[k++] = h;
		}
	} else if (!none) {
		size_t pos = 0;
		void *cur = NULL;
		while ((h = hf__map_next(&st->holds, &pos, &cur)))
			if (hold_matches(h, q))
				m[k++] = h;
	}
	*match = m;
	*n = k;
	return HF_OK;
}

/* A page is the first `limit` matches by id (first_sorted): O(m log limit) for the m holds of
 * the owner or resource named, O(all holds) for a list that names neither. */
static void op_list_holds(struct hf__state *st, struct hf__call *call, struct hf__effects *fx)
{
	const hf_request *q = &call->req;
	void **match = NULL;
	size_t n = 0;
	if (list_matches(st, q, &match, &n) != HF_OK) {
		fx_fail(fx, call, HF_ENOMEM, "out of memory");
		return;
	}
	size_t take = n < q->limit ? n : q->limit;
	first_sorted(match, n, take, cmp_hold_id);
	hf_reply *reply = call->reply;
	reply->holds = calloc(take + 1, sizeof(*reply->holds));
	if (!reply->holds)
		goto nomem;
	for (size_t i = 0; i < take; i++) {
		if (hold_export(match[i], false, &reply->holds[i]) != HF_OK)
			goto nomem;
		reply->n_holds = i + 1;
	}
	reply->more = n > take;
	free(match);
	fx_done(fx, call);
	return;
nomem:
	free(match);
	fx_fail(fx, call, HF_ENOMEM, "out of memory");
}

/* A parked acquire as a queue shows it: its request's owner and mode, no token, no key. */
static int waiter_export(const struct waiter *w, const struct wlink *at, int64_t position,
                         hf_waiter *out)
{
	const hf_acquire_req *a = &w->call->req.acquire;
	*out = (hf_waiter){.position = position, .mode = a->mode, .any = a->any, .units = at->units,
	                   .waiting_since_ms = w->call->submitted_at_ms,
	                   .wait_deadline_ms = w->deadline};
	if (!(out->owner = hf__strdup(a->owner)) ||
	    !(out->claims = calloc(w->n_links, sizeof(*out->claims))))
		return HF_ENOMEM;
	for (size_t i = 0; i < w->n_links; i++) {
		hf_waiter_claim *c = &out->claims[out->n_claims++];
		c->units = w->links[i].units;
		if (!(c->resource = hf__strdup(w->links[i].res->name)))
			return HF_ENOMEM;
	}
	return HF_OK;
}

/* One page of a resource's queue, in its order; the cursor is the last position seen. */
static void op_list_waiters(struct hf__state *st, struct hf__call *call, struct hf__effects *fx)
{
	const hf_request *q = &call->req;
	struct res *r = hf__map_get(&st->resources, q->name);
	if (!r) {
		fx_fail(fx, call, HF_ENORESOURCE, "resource '%s' does not exist", q->name);
		return;
	}
	int64_t after = hf__waiter_cursor(q->cursor), pos = 0;
	hf_reply *reply = call->reply;
	if (!(reply->waiters = calloc(q->limit + 1, sizeof(*reply->waiters))))
		goto nomem;
	for (const struct wlink *l = r->queue_head; l; l = l->next) {
		if (++pos <= after)
			continue;
		if (reply->n_waiters == q->limit) {
			reply->more = true;
			break;
		}
		if (waiter_export(l->waiter, l, pos, &reply->waiters[reply->n_waiters++]) != HF_OK)
			goto nomem;
	}
	fx_done(fx, call);
	return;
nomem:
	fx_fail(fx, call, HF_ENOMEM, "out of memory");
}

/* ---- resource operations ---- */

/* hf__claim_pred over a waiter's links: claim i needs more than its resource's capacity. */
static bool link_exceeds(void *ctx, size_t i)
{
	const struct waiter *w = ctx;
	return !link_live(&w->links[i]);
}

static void op_put_resource(struct hf__state *st, struct hf__call *call, int64_t now,
                            struct hf__effects *fx)
{
	const hf_request *q = &call->req;
	struct res *r = hf__map_get(&st->resources, q->name);
	int64_t current = r && r->declared ? r->version : 0;
	if (q->if_version >= 0 && q->if_version != current) {
		fx_fail(fx, call, HF_EVERSION, "resource '%s' is at version %lld, not %lld", q->name,
		        (long long)current, (long long)q->if_version);
		return;
	}
	if (r && q->capacity < r->held) {
		fx_fail(fx, call, HF_ECAPINUSE, "resource '%s' has %lld units held, more than %lld",
		        q->name, (long long)r->held, (long long)q->capacity);
		return;
	}
	if (!r && st->resources.count >= st->opt.max_resources) {
		fx_fail(fx, call, HF_ELIMIT, "the store holds %zu resources, the limit is %zu",
		        st->resources.count, st->opt.max_resources);
		return;
	}
	char *meta = NULL;
	if (q->meta && !(meta = hf__strdup(q->meta))) {
		fx_fail(fx, call, HF_ENOMEM, "out of memory");
		return;
	}
	bool created = !r || !r->declared;
	if (!r && !(r = res_new(st, q->name, q->capacity))) {
		free(meta);
		fx_fail(fx, call, HF_ENOMEM, "out of memory");
		return;
	}
	r->capacity = q->capacity;
	free(r->meta);
	r->meta = meta;
	r->version = created ? 1 : r->version + 1;
	r->declared = true;
	journal_resource(fx, r);
	hf_resource view;
	resource_view(r, &view);
	emit(st, fx, now, created ? "resource.created" : "resource.updated", r->name, NULL,
	     hf__event_resource_data(&view));
	if (reply_resource(call, r) != HF_OK)
		fx->failed = HF_ENOMEM;
	fx_done(fx, call);
	/* A smaller capacity can leave waiters that can never be granted (core/rules.h): end
	 * them now rather than let them block the queues until their deadlines. An any-of
	 * waiter that can still be granted another claim stays; its claim here stops blocking
	 * (link_live). Ending a waiter queues every resource it named for the pump. */
	for (struct wlink *l = r->queue_head, *next; l; l = next) {
		next = l->next; /* another waiter's link: failing this one leaves it in place */
		struct waiter *w = l->waiter;
		if (hf__wait_impossible(w->n_links, call_is_any(w), link_exceeds, w))
			waiter_fail(st, fx, w, HF_ECAPACITY,
			            "the resource's capacity was lowered below what this wait needs");
	}
	work_push(st, r);
	pump(st, fx, now);
}

static void op_get_resource(struct hf__state *st, struct hf__call *call, struct hf__effects *fx)
{
	struct res *r = hf__map_get(&st->resources, call->req.name);
	if (!r) {
		fx_fail(fx, call, HF_ENORESOURCE, "resource '%s' does not exist", call->req.name);
		return;
	}
	if (reply_resource(call, r) != HF_OK)
		call->reply->error = (hf_error){.code = HF_ENOMEM, .message = "out of memory"};
	fx_done(fx, call);
}

static void op_delete_resource(struct hf__state *st, struct hf__call *call, int64_t now,
                               struct hf__effects *fx)
{
	const hf_request *q = &call->req;
	struct res *r = hf__map_get(&st->resources, q->name);
	if (!r) {
		fx_fail(fx, call, HF_ENORESOURCE, "resource '%s' does not exist", q->name);
		return;
	}
	int64_t current = r->declared ? r->version : 0;
	if (q->if_version >= 0 && q->if_version != current) {
		fx_fail(fx, call, HF_EVERSION, "resource '%s' is at version %lld, not %lld", q->name,
		        (long long)current, (long long)q->if_version);
		return;
	}
	if (r->n_holds > 0) {
		fx_fail(fx, call, HF_EHELD, "resource '%s' is held by %lld holds", q->name,
		        (long long)r->n_holds);
		return;
	}
	if (reply_resource(call, r) != HF_OK) {
		fx_fail(fx, call, HF_ENOMEM, "out of memory");
		return;
	}
	/* Its waiters can never be granted now. */
	while (r->queue_head) {
		struct waiter *w = r->queue_head->waiter;
		waiter_fail(st, fx, w, HF_ENORESOURCE, "the resource was deleted while waiting");
	}
	r->in_work = false;
	bool declared = r->declared;
	journal_resource_removed(fx, r);
	if (declared)
		emit(st, fx, now, "resource.deleted", r->name, NULL,
		     hf__event_resource_deleted_data(r->name, r->version));
	/* Unlinking its waiters queued r for the pump: take it off before freeing it. */
	for (struct res **p = &st->work_head; *p; p = &(*p)->work_next)
		if (*p == r) {
			*p = r->work_next;
			break;
		}
	hf__map_remove(&st->resources, r->name);
	res_free(r);
	fx_done(fx, call);
	pump(st, fx, now);
}

static void op_list_resources(struct hf__state *st, struct hf__call *call, struct hf__effects *fx)
{
	const hf_request *q = &call->req;
	void **match = malloc((st->resources.count + 1) * sizeof(*match)); /* struct res * */
	if (!match) {
		fx_fail(fx, call, HF_ENOMEM, "out of memory");
		return;
	}
	size_t n = 0, pos = 0;
	void *cur = NULL;
	struct res *r;
	while ((r = hf__map_next(&st->resources, &pos, &cur)))
		if (!q->cursor || strcmp(r->name, q->cursor) > 0)
			match[n++] = r;
	size_t take = n < q->limit ? n : q->limit;
	first_sorted(match, n, take, cmp_res_name);
	hf_reply *reply = call->reply;
	reply->resources = calloc(take + 1, sizeof(*reply->resources));
	if (!reply->resources)
		goto nomem;
	for (size_t i = 0; i < take; i++) {
		hf_resource view;
		resource_view(match[i], &view);
		if (hf__resource_copy(&reply->resources[i], &view) != HF_OK)
			goto nomem;
		reply->n_resources = i + 1;
	}
	reply->more = n > take;
	free(match);
	fx_done(fx, call);
	return;
nomem:
	free(match);
	fx_fail(fx, call, HF_ENOMEM, "out of memory");
}

/* ---- events ---- */

/* Fills the reply with cached durable events after `after`; false if there were none. */
static bool reply_events(struct hf__state *st, struct hf__call *call)
{
	hf_reply *reply = call->reply;
	uint64_t after = call->req.after;
	reply->last_seq = st->durable_seq;
	if (after >= st->durable_seq)
		return false;
	uint64_t first = after + 1 > st->oldest_cached ? after + 1 : st->oldest_cached;
	uint64_t n = st->durable_seq - first + 1;
	if (n > call->req.limit)
		n = call->req.limit;
	reply->events = calloc(n, sizeof(*reply->events));
	if (!reply->events) {
		reply->error = (hf_error){.code = HF_ENOMEM, .message = "out of memory"};
		return true;
	}
	for (uint64_t i = 0; i < n; i++) {
		if (hf__event_copy(&reply->events[i], &st->events[(first + i) % EVENT_CACHE]->ev) !=
		    HF_OK) {
			reply->error = (hf_error){.code = HF_ENOMEM, .message = "out of memory"};
			return true;
		}
		reply->n_events = i + 1;
	}
	return true;
}

static void op_read_events(struct hf__state *st, struct hf__call *call, struct hf__effects *fx)
{
	if (reply_events(st, call) || call->req.wait_ms == 0) {
		fx_done(fx, call);
		return;
	}
	struct waiter *w = calloc(1, sizeof(*w));
	if (!w) {
		fx_fail(fx, call, HF_ENOMEM, "out of memory");
		return;
	}
	w->call = call;
	w->events = true;
	w->deadline_slot = HF__HEAP_NONE;
	w->deadline = call->submitted_at_ms + call->req.wait_ms;
	snprintf(w->call_key, sizeof(w->call_key), "%llu", (unsigned long long)call->id);
	if (hf__map_put(&st->waiters, w->call_key, w) != HF_OK ||
	    hf__heap_push(&st->deadlines, w->deadline, w, &w->deadline_slot) != HF_OK) {
		hf__map_remove(&st->waiters, w->call_key);
		free(w);
		fx_fail(fx, call, HF_ENOMEM, "out of memory");
		return;
	}
	w->ev_next = st->event_waiters;
	if (st->event_waiters)
		st->event_waiters->ev_prev = w;
	st->event_waiters = w;
}

/* Completes a parked event read with whatever is there (maybe nothing). */
static void event_waiter_finish(struct hf__state *st, struct hf__effects *fx, struct waiter *w)
{
	waiter_unlink(st, w);
	reply_events(st, w->call);
	fx_done(fx, w->call);
	waiter_free(w);
}

void hf__state_durable(struct hf__state *st, uint64_t seq, struct hf__effects *fx)
{
	if (seq <= st->durable_seq)
		return;
	st->durable_seq = seq;
	/* Only readers with an event to read now: one that waits after a later seq keeps
	 * waiting (until its first event or its deadline). */
	for (struct waiter *w = st->event_waiters, *next; w; w = next) {
		next = w->ev_next;
		if (w->call->req.after < seq)
			event_waiter_finish(st, fx, w);
	}
}

uint64_t hf__state_last_seq(const struct hf__state *st)
{
	return st->last_seq;
}

uint64_t hf__state_durable_seq(const struct hf__state *st)
{
	return st->durable_seq;
}

uint64_t hf__state_oldest_cached_seq(const struct hf__state *st)
{
	return st->oldest_cached;
}

/* ---- the step functions ---- */

static void apply_op(struct hf__state *st, struct hf__call *call, int64_t now,
                     struct hf__effects *fx)
{
	switch (call->req.op) {
	case HF_OP_PUT_RESOURCE:
		op_put_resource(st, call, now, fx);
		return;
	case HF_OP_GET_RESOURCE:
		op_get_resource(st, call, fx);
		return;
	case HF_OP_DELETE_RESOURCE:
		op_delete_resource(st, call, now, fx);
		return;
	case HF_OP_LIST_RESOURCES:
		op_list_resources(st, call, fx);
		return;
	case HF_OP_ACQUIRE:
		op_acquire(st, call, now, fx);
		return;
	case HF_OP_EXTEND:
		op_extend(st, call, now, fx);
		return;
	case HF_OP_CONFIRM:
		op_confirm(st, call, now, fx);
		return;
	case HF_OP_RELEASE:
		op_release(st, call, now, fx);
		return;
	case HF_OP_GET_HOLD:
		op_get_hold(st, call, fx);
		return;
	case HF_OP_LIST_HOLDS:
		op_list_holds(st, call, fx);
		return;
	case HF_OP_READ_EVENTS:
		op_read_events(st, call, fx);
		return;
	case HF_OP_LIST_WAITERS:
		op_list_waiters(st, call, fx);
		return;
	case HF_OP_SAGA_TYPE_PUT:
	case HF_OP_SAGA_TYPE_GET:
	case HF_OP_SAGA_TYPE_LIST:
	case HF_OP_SAGA_SAVE:
	case HF_OP_SAGA_GET:
	case HF_OP_SAGA_LIST:
		hf__sagas_apply(st, st->sagas, call, now, fx);
		return;
	}
	fx_fail(fx, call, HF_EINVAL, "unknown operation %d", (int)call->req.op);
}

/* Every step ends with an empty worklist: whatever freed units or ended a wait (a release,
 * an expiry, a capacity change, a timeout, a cancel) queued the resources it touched, and
 * their queues move on before the step's effects are handed out. */
static void settle(struct hf__state *st, struct hf__effects *fx, int64_t now)
{
	if (st->work_head)
		pump(st, fx, now);
}

void hf__state_apply(struct hf__state *st, struct hf__call *call, int64_t now,
                     struct hf__effects *fx)
{
	apply_op(st, call, now, fx);
	settle(st, fx, now);
}

static void purge(struct hf__state *st, int64_t now, struct hf__effects *fx)
{
	if (st->ended_head && st->ended_head->ended_at + st->opt.hold_retention_ms <= now)
		journal_fence(st, fx); /* the purged rows' fences live on in it */
	while (st->ended_head && st->ended_head->ended_at + st->opt.hold_retention_ms <= now) {
		struct hold *h = st->ended_head;
		st->ended_head = h->ended_next;
		if (!st->ended_head)
			st->ended_tail = NULL;
		hf__map_remove(&st->holds, h->id);
		index_remove(st, h);
		struct hf__jrec *rec = fx_record(fx, HF__J_HOLD, h->id, NULL, true);
		if (rec)
			rec->row = h->row;
		hold_free(h);
	}
	while (st->idem_head && st->idem_head->created_at + st->opt.idempotency_retention_ms <= now) {
		struct idem *d = st->idem_head;
		st->idem_head = d->next;
		if (!st->idem_head)
			st->idem_tail = NULL;
		hf__map_remove(&st->idems, d->key);
		fx_record(fx, HF__J_IDEM, d->key, NULL, true);
		idem_free(d);
	}
}

void hf__state_sweep(struct hf__state *st, int64_t now, struct hf__effects *fx)
{
	for (;;) {
		int64_t expiry = INT64_MAX, deadline = INT64_MAX;
		struct hold *h = hf__heap_top(&st->expiries, &expiry);
		struct waiter *w = hf__heap_top(&st->deadlines, &deadline);
		if (h && expiry <= now && expiry <= deadline) {
			/* The lease ended at expires_at, whenever we notice it. */
			hold_end(st, fx, h, HF_HOLD_EXPIRED, expiry, now);
			pump(st, fx, now);
		} else if (w && deadline <= now) {
			if (w->events)
				event_waiter_finish(st, fx, w);
			else
				waiter_fail(st, fx, w, HF_ETIMEDOUT, "the wait ended before the units were free");
			pump(st, fx, now);
		} else {
			break;
		}
	}
	purge(st, now, fx);
	settle(st, fx, now);
}

int64_t hf__state_next_due(const struct hf__state *st)
{
	int64_t due = INT64_MAX, key;
	if (hf__heap_top(&st->expiries, &key) && key < due)
		due = key;
	if (hf__heap_top(&st->deadlines, &key) && key < due)
		due = key;
	if (st->ended_head && st->ended_head->ended_at + st->opt.hold_retention_ms < due)
		due = st->ended_head->ended_at + st->opt.hold_retention_ms;
	if (st->idem_head && st->idem_head->created_at + st->opt.idempotency_retention_ms < due)
		due = st->idem_head->created_at + st->opt.idempotency_retention_ms;
	return due;
}

void hf__state_cancel(struct hf__state *st, uint64_t call_id, int64_t now, struct hf__effects *fx)
{
	char key[24];
	snprintf(key, sizeof(key), "%llu", (unsigned long long)call_id);
	struct waiter *w = hf__map_get(&st->waiters, key);
	if (!w)
		return;
	bool events = w->events;
	waiter_fail(st, fx, w, HF_ECANCELED, "the wait was cancelled");
	if (!events) /* an event read holds no units: nothing to hand on */
		pump(st, fx, now);
}

/* Ends every parked call (acquires and event reads alike) with code and message. Returns
 * false, with fx->failed set, when there was no memory to list them. */
static bool fail_every_waiter(struct hf__state *st, int code, const char *message,
                              struct hf__effects *fx)
{
	size_t n = st->waiters.count, pos = 0, k = 0;
	struct waiter **all = malloc((n + 1) * sizeof(*all));
	if (!all) {
		fx->failed = HF_ENOMEM;
		return false;
	}
	void *cur = NULL;
	struct waiter *w;
	while ((w = hf__map_next(&st->waiters, &pos, &cur)))
		all[k++] = w;
	for (size_t i = 0; i < k; i++)
		waiter_fail(st, fx, all[i], code, message);
	free(all);
	return true;
}

void hf__state_fail_waits(struct hf__state *st, int code, int64_t now, struct hf__effects *fx)
{
	if (fail_every_waiter(st, code, hf_strerror(code), fx))
		pump(st, fx, now);
}

void hf__state_drop_waits(struct hf__state *st, int code, const char *message,
                          struct hf__effects *fx)
{
	if (!fail_every_waiter(st, code, message, fx))
		return;
	/* The queues stay as they are: nothing is granted. */
	while (st->work_head) {
		struct res *r = st->work_head;
		st->work_head = r->work_next;
		r->in_work = false;
	}
}

/* ---- life cycle and loading ---- */

struct hf__state *hf__state_new(const hf_options *opt)
{
	struct hf__state *st = calloc(1, sizeof(*st));
	if (!st)
		return NULL;
	st->opt = *opt;
	st->events = calloc(EVENT_CACHE, sizeof(*st->events));
	if (!st->events || !(st->sagas = hf__sagas_new())) {
		free(st->events);
		free(st);
		return NULL;
	}
	hf__map_init(&st->resources);
	hf__map_init(&st->holds);
	hf__map_init(&st->by_owner);
	hf__map_init(&st->idems);
	hf__map_init(&st->waiters);
	hf__map_init(&st->revs);
	return st;
}

void hf__state_free(struct hf__state *st)
{
	if (!st)
		return;
	size_t pos = 0;
	void *cur = NULL, *v;
	/* Waiters were ended by hf__state_fail_waits before; holds, resources, idems remain. */
	while ((v = hf__map_next(&st->holds, &pos, &cur)))
		hold_free(v);
	pos = 0, cur = NULL;
	while ((v = hf__map_next(&st->resources, &pos, &cur)))
		res_free(v);
	pos = 0, cur = NULL;
	while ((v = hf__map_next(&st->idems, &pos, &cur)))
		idem_free(v);
	pos = 0, cur = NULL;
	while ((v = hf__map_next(&st->revs, &pos, &cur)))
		free(v);
	pos = 0, cur = NULL;
	while ((v = hf__map_next(&st->by_owner, &pos, &cur)))
		free(v);
	hf__map_release(&st->revs);
	hf__map_release(&st->holds);
	hf__map_release(&st->by_owner);
	hf__map_release(&st->resources);
	hf__map_release(&st->idems);
	hf__map_release(&st->waiters);
	hf__heap_release(&st->expiries);
	hf__heap_release(&st->deadlines);
	for (size_t i = 0; i < EVENT_CACHE; i++)
		hf__sev_unref(st->events[i]);
	free(st->events);
	hf__sagas_free(st->sagas);
	free(st);
}

/* ---- hooks for sagas.c ---- */

void hf__fx_done(struct hf__effects *fx, struct hf__call *call)
{
	fx_done(fx, call);
}

struct hf__jrec *hf__fx_record(struct hf__effects *fx, enum hf__jtable table, const char *key,
                               char *body, bool remove)
{
	return fx_record(fx, table, key, body, remove);
}

void hf__state_emit(struct hf__state *st, struct hf__effects *fx, int64_t now, const char *type,
                    const char *resource, char *body)
{
	emit_text(st, fx, now, type, &resource, resource ? 1 : 0, NULL, body);
}

int hf__state_load_saga_type(struct hf__state *st, const char *body, hf_error *err)
{
	return hf__sagas_load_type(st->sagas, body, err);
}

int hf__state_load_saga(struct hf__state *st, const char *body, hf_error *err)
{
	return hf__sagas_load_saga(st->sagas, body, err);
}

static int corrupt(hf_error *err, const char *what, const char *body)
{
	return hf__err(err, HF_ECORRUPT, "store file is damaged: bad %s row '%.60s'", what,
	               body ? body : "");
}

int hf__state_load_meta(struct hf__state *st, const char *key, const char *value, hf_error *err)
{
	if (strcmp(key, "last_fence") == 0) {
		char *end;
		errno = 0;
		long long v = strtoll(value, &end, 10);
		if (*end || errno || v < 0 || v > HF__JOURNAL_FENCE_MAX)
			return corrupt(err, "meta", value);
		if (v > st->last_fence)
			st->last_fence = v;
	}
	return HF_OK;
}

int hf__state_load_resource(struct hf__state *st, const void *row, size_t len, hf_error *err)
{
	hf_resource d;
	int rc = hf__row_resource_decode(row, len, &d, err);
	if (rc != HF_OK)
		return rc;
	void *present;
	struct res *r = res_add(st, d.name, d.capacity, &present);
	if (present)
		rc = hf__err(err, HF_ECORRUPT, "store file is damaged: resource '%.60s' twice", d.name);
	else if (!r)
		rc = hf__err_code(err, HF_ENOMEM);
	if (r) {
		r->version = d.version;
		r->declared = d.declared;
		r->journaled = true;
		r->meta = d.meta;
		d.meta = NULL;
	}
	hf__resource_clear(&d);
	return rc;
}

/* A hold loaded from its row, owning the row's strings; NULL when out of memory (the row is
 * cleared either way). */
static struct hold *hold_of_row(struct hf__state *st, hf_hold *row)
{
	struct hold *h = calloc(1, sizeof(*h));
	struct part *parts = calloc(row->n_parts, sizeof(*parts));
	if (!h || !parts) {
		free(h);
		free(parts);
		hf__hold_clear(row);
		return NULL;
	}
	memcpy(h->id, row->id, sizeof(h->id));
	memcpy(h->token, row->token, sizeof(h->token));
	h->owner = row->owner;
	h->state = row->state;
	h->mode = row->mode;
	h->created_at = row->created_at_ms;
	h->expires_at = row->expires_at_ms;
	h->ended_at = row->ended_at_ms;
	h->expiry_slot = HF__HEAP_NONE;
	h->n_parts = row->n_parts;
	h->parts = parts;
	for (size_t i = 0; i < row->n_parts; i++) {
		parts[i] = (struct part){.name = row->parts[i].resource,
		                         .units = row->parts[i].units,
		                         .fence = row->parts[i].fence};
		if (parts[i].fence > st->last_fence)
			st->last_fence = parts[i].fence;
	}
	free(row->parts);
	memset(row, 0, sizeof(*row));
	return h;
}

/* The resource of a live hold's part i: the one loaded from its row, else the implicit
 * resource the part's `capacity` describes (made by the first of its holds; the others must
 * agree with it). */
static int load_part_resource(struct hf__state *st, struct hold *h, size_t i, int64_t capacity,
                              struct res **out, hf_error *err)
{
	const char *name = h->parts[i].name;
	struct res *r = hf__map_get(&st->resources, name);
	if (!r && capacity > 0 && !(r = res_new(st, name, capacity)))
		return hf__err_code(err, HF_ENOMEM);
	if (!r)
		return hf__err(err, HF_ECORRUPT,
		               "store file is damaged: hold '%s' takes '%.60s', a resource with no row",
		               h->id, name);
	if (!r->journaled && capacity != r->capacity)
		return hf__err(err, HF_ECORRUPT,
		               "store file is damaged: hold '%s' says '%.60s' has capacity %lld, another "
		               "hold %lld",
		               h->id, name, (long long)capacity, (long long)r->capacity);
	if (r->held + h->parts[i].units > r->capacity)
		return hf__err(err, HF_ECORRUPT,
		               "store file is damaged: hold '%s' takes %lld of '%.60s', beyond its "
		               "capacity",
		               h->id, (long long)h->parts[i].units, name);
	*out = r;
	return HF_OK;
}

int hf__state_load_hold(struct hf__state *st, int64_t rid, const void *bytes, size_t len,
                        hf_error *err)
{
	if (rid < 1 || rid > HF__JOURNAL_FENCE_MAX)
		return hf__err(err, HF_ECORRUPT, "store file is damaged: hold row number %lld",
		               (long long)rid);
	hf_hold row;
	int64_t capacities[HF_CLAIMS_MAX];
	int rc = hf__row_hold_decode(bytes, len, &row, capacities, err);
	if (rc != HF_OK)
		return rc;
	int64_t last_fence = st->last_fence;
	struct hold *h = hold_of_row(st, &row);
	if (h)
		h->row = rid;
	void *present = NULL;
	if (!h || hf__map_add(&st->holds, h->id, h, &present) != HF_OK || present) {
		rc = present ? hf__err(err, HF_ECORRUPT, "store file is damaged: hold '%s' twice", h->id)
		             : hf__err_code(err, HF_ENOMEM);
		if (h)
			hold_free(h);
		st->last_fence = last_fence;
		return rc;
	}
	if (index_add(st, h) != HF_OK) {
		hf__map_remove(&st->holds, h->id);
		hold_free(h);
		st->last_fence = last_fence;
		return hf__err_code(err, HF_ENOMEM);
	}
	if (rid > st->last_hold_row)
		st->last_hold_row = rid;
	bool live = h->state == HF_HOLD_TENTATIVE || h->state == HF_HOLD_CONFIRMED;
	if (!live) { /* in time order once hf__state_load_done has sorted them */
		h->ended_next = NULL;
		if (st->ended_tail)
			st->ended_tail->ended_next = h;
		else
			st->ended_head = h;
		st->ended_tail = h;
		return HF_OK;
	}
	for (size_t i = 0; i < h->n_parts; i++) {
		struct res *r = NULL;
		if ((rc = load_part_resource(st, h, i, capacities[i], &r, err)) != HF_OK)
			return rc;
		h->parts[i].res = r;
		r->held += h->parts[i].units;
		r->n_holds++;
		if (h->mode == HF_MODE_EXCLUSIVE)
			r->n_exclusive++;
	}
	st->live_holds++;
	if (h->state == HF_HOLD_TENTATIVE &&
	    hf__heap_push(&st->expiries, h->expires_at, h, &h->expiry_slot) != HF_OK)
		return hf__err_code(err, HF_ENOMEM);
	return HF_OK;
}

int hf__state_load_idem(struct hf__state *st, const void *bytes, size_t len, hf_error *err)
{
	struct hf__row_idem row;
	int rc = hf__row_idem_decode(bytes, len, &row, err);
	if (rc != HF_OK)
		return rc;
	struct idem *d = NULL;
	if (hf__map_get(&st->idems, row.key))
		rc = hf__err(err, HF_ECORRUPT, "store file is damaged: idempotency key '%.60s' twice",
		             row.key);
	else if (!(d = calloc(1, sizeof(*d))))
		rc = hf__err_code(err, HF_ENOMEM);
	if (rc != HF_OK) {
		hf__row_idem_clear(&row);
		return rc;
	}
	d->key = row.key;
	d->fingerprint = row.fingerprint;
	d->created_at = row.created_at;
	d->first = row.hold;
	if (hf__map_put(&st->idems, d->key, d) != HF_OK) {
		idem_free(d);
		return hf__err_code(err, HF_ENOMEM);
	}
	idem_append(st, d); /* in time order once hf__state_load_done has sorted them */
	return HF_OK;
}

/* A stable merge sort of a singly linked list by an int64 key: `next_off` is the offset of
 * the link in an item, `key` reads an item's key. Returns the new head; *tail its last item. */
static void *sort_list(void *head, size_t next_off, int64_t (*key)(const void *), void **tail)
{
#define NEXT(item) (*(void **)((char *)(item) + next_off))
	for (size_t width = 1;; width *= 2) {
		void *in = head, *out = NULL, **link = &out, *last = NULL;
		size_t merges = 0;
		while (in) {
			merges++;
			void *a = in, *b = in;
			size_t na = 0, nb = width;
			while (b && na < width) {
				b = NEXT(b);
				na++;
			}
			while (na || (nb && b)) {
				void *take;
				if (!na || (nb && b && key(b) < key(a))) {
					take = b;
					b = NEXT(b);
					nb--;
				} else {
					take = a;
					a = NEXT(a);
					na--;
				}
				*link = last = take;
				link = &NEXT(take);
			}
			in = b;
		}
		*link = NULL;
		head = out;
		*tail = last;
		if (merges <= 1)
			return head;
	}
#undef NEXT
}

static int64_t ended_at_of(const void *h)
{
	return ((const struct hold *)h)->ended_at;
}

static int64_t created_at_of(const void *d)
{
	return ((const struct idem *)d)->created_at;
}

int hf__state_load_reserve(struct hf__state *st, size_t resources, size_t holds, size_t idems,
                           size_t revisions, hf_error *err)
{
	if (hf__map_reserve(&st->resources, resources) != HF_OK ||
	    hf__map_reserve(&st->holds, holds) != HF_OK ||
	    hf__map_reserve(&st->idems, idems) != HF_OK ||
	    hf__map_reserve(&st->revs, revisions) != HF_OK)
		return hf__err_code(err, HF_ENOMEM);
	return HF_OK;
}

void hf__state_load_done(struct hf__state *st)
{
	void *tail = NULL;
	if (st->ended_head) {
		st->ended_head = sort_list(st->ended_head, offsetof(struct hold, ended_next),
		                           ended_at_of, &tail);
		st->ended_tail = tail;
	}
	if (st->idem_head) {
		st->idem_head = sort_list(st->idem_head, offsetof(struct idem, next), created_at_of,
		                          &tail);
		st->idem_tail = tail;
	}
}

int hf__state_load_event(struct hf__state *st, const hf_event *ev, hf_error *err)
{
	if (st->last_seq && ev->seq != st->last_seq + 1)
		return hf__err(err, HF_ECORRUPT, "store file is damaged: event %llu follows %llu",
		               (unsigned long long)ev->seq, (unsigned long long)st->last_seq);
	/* A counter behind its events would hand out a revision twice. */
	for (size_t i = 0; i < ev->n_revisions; i++) {
		const struct rev *r = hf__map_get(&st->revs, ev->revisions[i].resource);
		if (!r || r->revision < ev->revisions[i].revision)
			return hf__err(err, HF_ECORRUPT,
			               "store file is damaged: event %llu has revision %lld of '%.60s', "
			               "its counter %lld",
			               (unsigned long long)ev->seq, (long long)ev->revisions[i].revision,
			               ev->revisions[i].resource, r ? (long long)r->revision : 0LL);
	}
	struct hf__sev *sev = hf__sev_new(ev);
	if (!sev)
		return hf__err_code(err, HF_ENOMEM);
	cache_event(st, sev);
	hf__sev_unref(sev);
	st->last_seq = st->durable_seq = ev->seq;
	return HF_OK;
}

int hf__state_load_revision(struct hf__state *st, const char *resource, int64_t revision,
                            hf_error *err)
{
	if (revision < 1)
		return hf__err(err, HF_ECORRUPT, "store file is damaged: revision %lld of '%.60s'",
		               (long long)revision, resource);
	/* A name comes from the table and again from the events after its last fold (and the
	 * holds loaded before made counters at 0 for their parts' index): the greatest counts. */
	struct rev *r = rev_get(st, resource);
	if (!r)
		return hf__err_code(err, HF_ENOMEM);
	if (revision > r->revision)
		r->revision = revision;
	return HF_OK;
}
