/*
 * stats.c — what holdfastd measures and shows: acquisitions by outcome and their latency
 * (log-bucket histograms, per resource and overall), hold endings and hand-offs from the event log,
 * HTTP answers by class; served as GET /v1/stats (JSON), GET /metrics (Prometheus text),
 * GET /healthz and GET /readyz. Live counts (held, holds, waiters) come from the store.
 */
#include <inttypes.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "core/codec.h"
#include "core/core.h"
#include "server/server.h"

#define N_BUCKETS 160          /* bucket b: latency < 2^((b+1)/4) us; the last is open */
#define MAX_TRACKED 10000      /* resources with their own counters; more count overall only */
/* Resources per store read: a page is one turn of the loop. Not smaller: the embedded
 * engine sorts every resource after the cursor for each page. */
#define PAGE_SIZE HF_LIST_MAX
#define LIST_PAGES_MAX 10      /* /v1/stats and /metrics read at most 10 pages (10,000) */
#define FOLLOW_WAIT_MS 30000
/* After a read that found events, the follower waits this long before the next one, unless
 * it read a full page: under a steady stream each read then takes ~100 ms of events instead
 * of the few that one notification brought. On a shared engine every read of every instance
 * is statements in the database (postgres://: numbering and reading the new events), and
 * reading per notification cost 10 % of PostgreSQL's CPU per lock pair (docs/benchmarks.md,
 * "`postgres://` beside PostgreSQL's own lock"). The counts lag by at most this; event times
 * are the events'. */
#define FOLLOW_PACE_MS 100

struct counters {
	uint64_t attempts, granted, unavailable, timeouts, cancelled, errors;
	uint64_t expired, released, confirmed, extended; /* from the event log */
	uint64_t lat_n, lat_sum_us, lat_max_us;
	uint64_t hist[N_BUCKETS];
};

struct entry {
	char *name;
	struct counters c;
	int64_t freed_at_ms; /* the last release or expiry seen on it, not yet handed off; 0 none */
	struct entry *next;
};

struct hf__stats {
	struct counters all;
	struct entry **tab;
	size_t buckets, n;
	uint64_t http[6]; /* by status class: [2] = 2xx ... [5] = 5xx */
	/* The event follower: counts hold endings as the log grows. */
	uint64_t after;
	uint64_t call_id;
	bool following, pending, stopped;
	struct event *retry; /* the next read: after a failure, or paced (FOLLOW_PACE_MS) */
	struct hf__server *srv;
};

/* ---- Counting. -------------------------------------------------------------------- */

/* The entry of a resource, created on first sight; NULL past MAX_TRACKED. */
static struct entry *find_entry(struct hf__stats *st, const char *name, bool create)
{
	size_t b = (size_t)(hf__hash_str(name) % st->buckets);
	for (struct entry *e = st->tab[b]; e; e = e->next)
		if (strcmp(e->name, name) == 0)
			return e;
	if (!create || st->n >= MAX_TRACKED)
		return NULL;
	struct entry *e = calloc(1, sizeof(*e));
	if (!e)
		return NULL;
	e->name = strdup(name);
	if (!e->name) {
		free(e);
		return NULL;
	}
	e->next = st->tab[b];
	st->tab[b] = e;
	st->n++;
	return e;
}

/* The counters of a resource, created on first sight; NULL past MAX_TRACKED. */
static struct counters *find(struct hf__stats *st, const char *name, bool create)
{
	struct entry *e = find_entry(st, name, create);
	return e ? &e->c : NULL;
}

static int bucket_of(uint64_t us)
{
	int b = (int)floor(4.0 * log2((double)us + 1.0));
	return b < 0 ? 0 : b >= N_BUCKETS ? N_BUCKETS - 1 : b;
}

static void count_acquire(struct counters *c, int code, int64_t latency_us)
{
	c->attempts++;
	switch (code) {
	case HF_OK:
		c->granted++;
		c->lat_n++;
		c->lat_sum_us += (uint64_t)latency_us;
		if ((uint64_t)latency_us > c->lat_max_us)
			c->lat_max_us = (uint64_t)latency_us;
		c->hist[bucket_of((uint64_t)latency_us)]++;
		break;
	case HF_EUNAVAILABLE: c->unavailable++; break;
	case HF_ETIMEDOUT: c->timeouts++; break;
	case HF_ECANCELED: c->cancelled++; break;
	default: c->errors++; break;
	}
}

void hf__stats_acquire(struct hf__server *srv, const char *resource, int code,
                       int64_t latency_us)
{
	struct hf__stats *st = srv->stats;
	if (latency_us < 0)
		latency_us = 0;
	struct counters *c = resource ? find(st, resource, true) : &st->all;
	if (!resource)
		hf__series_acquire(code, latency_us); /* the dashboard's per-second series */
	if (c)
		count_acquire(c, code, latency_us);
}

void hf__stats_request(struct hf__server *srv, int status)
{
	if (!srv->stats)
		return;
	int cls = status / 100;
	srv->stats->http[cls >= 2 && cls <= 5 ? cls : 0]++;
}

/* Upper bound, in ms, of the latency under which a fraction p of grants fell. */
static double percentile_ms(const struct counters *c, double p)
{
	if (!c->lat_n)
		return 0;
	uint64_t want = (uint64_t)ceil(p * (double)c->lat_n), seen = 0;
	for (int b = 0; b < N_BUCKETS; b++) {
		seen += c->hist[b];
		if (seen >= want && seen) {
			double hi = pow(2.0, (double)(b + 1) / 4.0) - 1.0;
			double max_ms = (double)c->lat_max_us / 1000.0;
			return fmin(hi / 1000.0, max_ms);
		}
	}
	return (double)c->lat_max_us / 1000.0;
}

static double rate(uint64_t n, uint64_t d)
{
	return d ? (double)n / (double)d : 0.0;
}

/* ---- The event follower. ---------------------------------------------------------- */

static void follow(struct hf__server *srv);

/*
 * Hand-off latency from the log alone: a release or expiry frees a resource at its event's
 * time; the next grant on that resource is its hand-off, charted as the difference. Every
 * resource a hold names counts (the event's revisions list them). A resource idle past
 * HANDOFF_MAX_MS after its end was not handed off, and its next grant is not counted: a
 * waiter woken later than that would have been charted as a wait, not a hand-off. Event times
 * are in ms: the embedded engine grants a waiter in the step that released (0 ms); shared
 * engines show the time their waiter took to take the units.
 */
#define HANDOFF_MAX_MS 60000

static void note_handoff(struct hf__stats *st, const hf_event *ev, const char *resource,
                         bool ended)
{
	struct entry *e = find_entry(st, resource, ended);
	if (!e)
		return;
	if (ended) {
		e->freed_at_ms = ev->at_ms;
		return;
	}
	if (e->freed_at_ms && ev->at_ms - e->freed_at_ms <= HANDOFF_MAX_MS)
		hf__series_handoff(ev->at_ms, ev->at_ms >= e->freed_at_ms ? ev->at_ms - e->freed_at_ms : 0);
	e->freed_at_ms = 0;
}

static void count_handoffs(struct hf__stats *st, const hf_event *ev)
{
	bool ended = strcmp(ev->type, "hold.released") == 0 || strcmp(ev->type, "hold.expired") == 0;
	if (!ended && strcmp(ev->type, "hold.granted") != 0)
		return;
	if (ev->n_revisions) {
		for (size_t i = 0; i < ev->n_revisions; i++)
			note_handoff(st, ev, ev->revisions[i].resource, ended);
	} else if (ev->resource) {
		note_handoff(st, ev, ev->resource, ended);
	}
}

static void count_event(struct hf__stats *st, const hf_event *ev)
{
	uint64_t *all = NULL;
	size_t off;
	if (!ev->type)
		return;
	count_handoffs(st, ev);
	if (strcmp(ev->type, "hold.expired") == 0)
		off = offsetof(struct counters, expired);
	else if (strcmp(ev->type, "hold.released") == 0)
		off = offsetof(struct counters, released);
	else if (strcmp(ev->type, "hold.confirmed") == 0)
		off = offsetof(struct counters, confirmed);
	else if (strcmp(ev->type, "hold.extended") == 0)
		off = offsetof(struct counters, extended);
	else
		return;
	hf__series_event(ev->type, ev->at_ms);
	all = (uint64_t *)((char *)&st->all + off);
	(*all)++;
	struct counters *c = ev->resource ? find(st, ev->resource, true) : NULL;
	if (c)
		(*(uint64_t *)((char *)c + off))++;
}

static void on_retry(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	follow(arg);
}

static void on_follow(void *arg, hf_reply *reply)
{
	struct hf__server *srv = arg;
	struct hf__stats *st = srv->stats;
	st->pending = false;
	if (reply->error.code) {
		int code = reply->error.code;
		if (code != HF_ECANCELED && code != HF_ECLOSED) {
			hf__log(HF__LOG_WARN, "stats_follow_failed", " code=%s", hf_err_name(code));
			if (!st->stopped && st->retry)
				event_add(st->retry, &(struct timeval){.tv_sec = 1});
		}
		hf_reply_free(reply);
		return;
	}
	bool pace = false;
	if (!st->following) {
		st->after = reply->last_seq; /* count from now on, not the history */
		st->following = true;
	} else {
		for (size_t i = 0; i < reply->n_events; i++) {
			count_event(st, &reply->events[i]);
			st->after = reply->events[i].seq;
		}
		pace = reply->n_events > 0 && reply->n_events < HF_LIST_MAX;
	}
	hf_reply_free(reply);
	if (pace && st->retry)
		event_add(st->retry, &(struct timeval){.tv_usec = FOLLOW_PACE_MS * 1000});
	else
		follow(srv);
}

static void follow(struct hf__server *srv)
{
	struct hf__stats *st = srv->stats;
	hf_request req;
	hf_error err;
	if (st->stopped || srv->draining)
		return;
	hf_request_init(&req, HF_OP_READ_EVENTS);
	req.after = st->after;
	req.limit = st->following ? HF_LIST_MAX : 1;
	req.wait_ms = st->following ? FOLLOW_WAIT_MS : 0;
	if (hf_submit(srv->store, &req, on_follow, srv, &st->call_id, &err) == HF_OK) {
		st->pending = true;
	} else {
		hf__log(HF__LOG_WARN, "stats_follow_failed", " code=%s", hf_err_name(err.code));
		if (st->retry)
			event_add(st->retry, &(struct timeval){.tv_sec = 1});
	}
}

int hf__stats_start(struct hf__server *srv)
{
	struct hf__stats *st = calloc(1, sizeof(*st));
	if (!st)
		return HF_ENOMEM;
	st->buckets = 1024;
	st->tab = calloc(st->buckets, sizeof(*st->tab));
	st->retry = event_new(srv->base, -1, 0, on_retry, srv);
	st->srv = srv;
	srv->stats = st;
	if (!st->tab || !st->retry)
		return HF_ENOMEM;
	follow(srv);
	return HF_OK;
}

void hf__stats_drain(struct hf__server *srv)
{
	struct hf__stats *st = srv->stats;
	if (!st)
		return;
	st->stopped = true;
	if (st->retry)
		event_del(st->retry);
	if (st->pending)
		hf_cancel(srv->store, st->call_id);
}

void hf__stats_free(struct hf__server *srv)
{
	struct hf__stats *st = srv->stats;
	if (!st)
		return;
	for (size_t b = 0; st->tab && b < st->buckets; b++) {
		struct entry *e = st->tab[b], *next;
		for (; e; e = next) {
			next = e->next;
			free(e->name);
			free(e);
		}
	}
	if (st->retry)
		event_free(st->retry);
	free(st->tab);
	free(st);
	srv->stats = NULL;
}

/* ---- Collecting the store's live counts: every resource, page by page. ---------------- */

static void collect_page(struct hf__rq *rq, const char *cursor);

static void on_page(struct hf__rq *rq, hf_reply *reply)
{
	if (reply->error.code) {
		hf_error e = reply->error;
		hf_reply_free(reply);
		rq->acc_done(rq, &e);
		return;
	}
	json_t *arr = json_object_get(rq->acc, "resources");
	json_t *seen = json_object_get(rq->acc, "seen");
	for (size_t i = 0; i < reply->n_resources; i++) {
		const hf_resource *r = &reply->resources[i];
		json_object_set_new(seen, r->name, json_true());
		json_array_append_new(arr, json_pack("{s:s,s:I,s:b,s:I,s:I,s:I}", "name", r->name,
		                                     "capacity", (json_int_t)r->capacity, "declared",
		                                     (int)r->declared, "held", (json_int_t)r->held,
		                                     "holds", (json_int_t)r->holds, "waiters",
		                                     (json_int_t)r->waiters));
		if (rq->acc_each)
			rq->acc_each(rq, json_array_get(arr, json_array_size(arr) - 1));
	}
	rq->acc_pages++;
	if (reply->more && reply->n_resources && rq->acc_pages < LIST_PAGES_MAX) {
		char *cursor = strdup(reply->resources[reply->n_resources - 1].name);
		hf_reply_free(reply);
		if (!cursor) {
			hf_error e = {.code = HF_ENOMEM, .message = "out of memory"};
			rq->acc_done(rq, &e);
			return;
		}
		collect_page(rq, cursor);
		free(cursor);
		return;
	}
	json_object_set_new(rq->acc, "truncated", json_boolean(reply->more));
	hf_reply_free(reply);
	rq->acc_done(rq, NULL);
}

static void collect_page(struct hf__rq *rq, const char *cursor)
{
	hf_request req;
	hf_request_init(&req, HF_OP_LIST_RESOURCES);
	req.limit = PAGE_SIZE;
	req.cursor = cursor;
	hf__rq_submit(rq, &req, on_page);
}

/* Collects the live resources into rq->acc = {"resources":[...],"truncated":bool}, then
 * calls done (err NULL on success). */
static void collect(struct hf__rq *rq, void (*done)(struct hf__rq *, const hf_error *))
{
	rq->acc = json_pack("{s:[],s:{}}", "resources", "seen"); /* seen: names listed, a set */
	if (!rq->acc) {
		hf__rq_fail(rq, HF_ENOMEM, "out of memory");
		return;
	}
	rq->acc_done = done;
	collect_page(rq, NULL);
}

/* ---- /v1/stats. ------------------------------------------------------------------- */

static json_t *counters_json(const struct counters *c)
{
	return json_pack(
		"{s:{s:I,s:I,s:I,s:I,s:I,s:I},s:{s:f,s:f,s:f,s:f},s:{s:f,s:f,s:f,s:f,s:f,s:f},"
		"s:{s:I,s:I,s:I,s:I}}",
		"acquisitions", "attempts", (json_int_t)c->attempts, "granted", (json_int_t)c->granted,
		"unavailable", (json_int_t)c->unavailable, "timeouts", (json_int_t)c->timeouts,
		"cancelled", (json_int_t)c->cancelled, "errors", (json_int_t)c->errors,
		"rates", "success", rate(c->granted, c->attempts), "contention",
		rate(c->unavailable, c->attempts), "timeout", rate(c->timeouts, c->attempts), "expiry",
		rate(c->expired, c->granted),
		"latency_ms", "p50", percentile_ms(c, 0.50), "p90", percentile_ms(c, 0.90), "p99",
		percentile_ms(c, 0.99), "p999", percentile_ms(c, 0.999), "max",
		(double)c->lat_max_us / 1000.0, "mean",
		c->lat_n ? (double)c->lat_sum_us / (double)c->lat_n / 1000.0 : 0.0,
		"holds_ended", "released", (json_int_t)c->released, "expired", (json_int_t)c->expired,
		"confirmed", (json_int_t)c->confirmed, "extended", (json_int_t)c->extended);
}

/* Per listed resource, as its page arrives: its counters, if measured here. */
static void stats_each(struct hf__rq *rq, json_t *r)
{
	struct counters *c = r ? find(rq->srv->stats, json_string_value(json_object_get(r, "name")),
	                              false)
	                       : NULL;
	json_t *cj = c ? counters_json(c) : NULL;
	if (cj)
		json_object_update(r, cj);
	json_decref(cj);
	if (r)
		json_object_set_new(r, "exists", json_true());
}

/* Writes the resources of the answer JSON_SLICE at a time, yielding in between: one 5 MB
 * json_dumps would hold the loop for a third of a second. */
#define JSON_SLICE 250

static void stats_write(struct hf__rq *rq)
{
	json_t *list = json_object_get(rq->acc, "resources");
	size_t n = json_array_size(list), stop = rq->acc_i + JSON_SLICE;
	for (; rq->acc_i < n && rq->acc_i < stop; rq->acc_i++) {
		char *text = hf__json_dumps(json_array_get(list, rq->acc_i),
		                        JSON_COMPACT | JSON_PRESERVE_ORDER);
		if (!text || evbuffer_add_printf(rq->acc_out, "%s%s", rq->acc_i ? "," : "", text) < 0) {
			free(text);
			hf__rq_fail(rq, HF_ENOMEM, "out of memory");
			return;
		}
		free(text);
		json_array_set_new(list, rq->acc_i, json_null()); /* freed a slice at a time too */
	}
	if (rq->acc_i < n) {
		hf__rq_yield(rq, stats_write);
		return;
	}
	struct hf__stats *st = rq->srv->stats;
	evbuffer_add_printf(rq->acc_out,
	                    "],\"truncated\":%s,\"http\":{\"2xx\":%" PRIu64 ",\"3xx\":%" PRIu64
	                    ",\"4xx\":%" PRIu64 ",\"5xx\":%" PRIu64 "}}\n",
	                    json_is_true(json_object_get(rq->acc, "truncated")) ? "true" : "false",
	                    st->http[2], st->http[3], st->http[4], st->http[5]);
	hf__rq_send_buffer(rq, 200, "application/json", rq->acc_out);
}

static void stats_finish(struct hf__rq *rq)
{
	struct hf__stats *st = rq->srv->stats;
	json_t *list = json_object_get(rq->acc, "resources");
	json_int_t held = 0, holds = 0, waiters = 0;
	size_t i, n_listed = json_array_size(list);
	json_t *r;
	json_array_foreach (list, i, r) {
		held += json_integer_value(json_object_get(r, "held"));
		holds += json_integer_value(json_object_get(r, "holds"));
		waiters += json_integer_value(json_object_get(r, "waiters"));
	}
	json_array_extend(list, json_object_get(rq->acc, "extra"));
	json_t *overall = counters_json(&st->all);
	if (overall) {
		json_object_set_new(overall, "resources", json_integer((json_int_t)n_listed));
		json_object_set_new(overall, "units_held", json_integer(held));
		json_object_set_new(overall, "holds_live", json_integer(holds));
		json_object_set_new(overall, "waiters", json_integer(waiters));
	}
	/* {"uptime_s":..,"overall":{..},"resources":[..],"truncated":..,"http":{..}} */
	json_t *head = overall ? json_pack("{s:I,s:o}", "uptime_s",
	                                   (json_int_t)((hf_now_ms() - rq->srv->started_ms) / 1000),
	                                   "overall", overall)
	                       : NULL;
	char *text = head ? hf__json_dumps(head, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
	json_decref(head);
	rq->acc_out = evbuffer_new();
	if (!text || !rq->acc_out ||
	    evbuffer_add_printf(rq->acc_out, "%.*s,\"resources\":[", (int)strlen(text) - 1, text) < 0) {
		free(text);
		hf__rq_fail(rq, HF_ENOMEM, "out of memory");
		return;
	}
	free(text);
	rq->acc_i = 0;
	stats_write(rq);
}

/* Resources measured here that the store did not list (idle implicit ones): a slice of
 * JOIN_SLICE at a time, yielding to the loop in between. */
#define JOIN_SLICE 250

static void stats_join(struct hf__rq *rq)
{
	struct hf__stats *st = rq->srv->stats;
	json_t *seen = json_object_get(rq->acc, "seen");
	json_t *extra = json_object_get(rq->acc, "extra");
	size_t done = 0;
	for (; rq->acc_bucket < st->buckets && done < JOIN_SLICE; rq->acc_bucket++)
		for (struct entry *e = st->tab[rq->acc_bucket]; e; e = e->next, done++) {
			if (json_object_get(seen, e->name)) /* a hash lookup: O(listed + tracked) */
				continue;
			json_t *cj = counters_json(&e->c);
			if (!cj)
				continue;
			json_object_set_new(cj, "name", json_string(e->name));
			json_object_set_new(cj, "exists", json_false());
			json_object_set_new(cj, "held", json_integer(0));
			json_object_set_new(cj, "holds", json_integer(0));
			json_object_set_new(cj, "waiters", json_integer(0));
			json_array_append_new(extra, cj);
		}
	if (rq->acc_bucket < st->buckets)
		hf__rq_yield(rq, stats_join);
	else
		stats_finish(rq);
}

static void stats_done(struct hf__rq *rq, const hf_error *err)
{
	if (err) {
		hf__rq_send_error(rq, err);
		return;
	}
	if (json_object_set_new(rq->acc, "extra", json_array()) != 0) {
		hf__rq_fail(rq, HF_ENOMEM, "out of memory");
		return;
	}
	rq->acc_bucket = 0;
	stats_join(rq);
}

/* The join is O(listed + tracked), done as the pages arrive and then in slices: the listed
 * names are a hash set ("seen"); both are capped (10,000). */

void hf__h_stats(struct hf__rq *rq)
{
	rq->acc_each = stats_each;
	collect(rq, stats_done);
}

/* ---- /metrics. -------------------------------------------------------------------- */

/* A Prometheus label value: backslash, quote and newline escaped. */
static void label(struct evbuffer *b, const char *s)
{
	for (; *s; s++) {
		if (*s == '\\' || *s == '"')
			evbuffer_add_printf(b, "\\%c", *s);
		else if (*s == '\n')
			evbuffer_add(b, "\\n", 2);
		else
			evbuffer_add(b, s, 1);
	}
}

static void metric_outcomes(struct evbuffer *b, const char *metric, const char *res,
                            const struct counters *c)
{
	static const char *const names[] = {"granted", "unavailable", "timeout", "cancelled", "error"};
	uint64_t v[] = {c->granted, c->unavailable, c->timeouts, c->cancelled, c->errors};
	for (int i = 0; i < 5; i++) {
		evbuffer_add_printf(b, "%s{", metric);
		if (res) {
			evbuffer_add_printf(b, "resource=\"");
			label(b, res);
			evbuffer_add_printf(b, "\",");
		}
		evbuffer_add_printf(b, "outcome=\"%s\"} %" PRIu64 "\n", names[i], v[i]);
	}
}

/* The per-resource lines, a slice at a time between turns of the loop: first the tracked
 * counters (by hash bucket), then the listed resources' waiters; then the answer goes out. */
static void metrics_write(struct hf__rq *rq)
{
	struct hf__stats *st = rq->srv->stats;
	struct evbuffer *b = rq->acc_out;
	json_t *list = json_object_get(rq->acc, "resources");
	size_t done = 0, n = json_array_size(list);
	for (; rq->acc_bucket < st->buckets && done < JOIN_SLICE; rq->acc_bucket++)
		for (struct entry *e = st->tab[rq->acc_bucket]; e; e = e->next, done++)
			metric_outcomes(b, "holdfast_resource_acquisitions_total", e->name, &e->c);
	if (rq->acc_bucket < st->buckets) {
		hf__rq_yield(rq, metrics_write);
		return;
	}
	if (rq->acc_i == 0)
		evbuffer_add_printf(b, "# HELP holdfast_resource_waiters Parked acquires per resource.\n"
		                       "# TYPE holdfast_resource_waiters gauge\n");
	for (; rq->acc_i < n && done < JOIN_SLICE; rq->acc_i++, done++) {
		json_t *r = json_array_get(list, rq->acc_i);
		evbuffer_add_printf(b, "holdfast_resource_waiters{resource=\"");
		label(b, json_string_value(json_object_get(r, "name")));
		evbuffer_add_printf(b, "\"} %lld\n",
		                    (long long)json_integer_value(json_object_get(r, "waiters")));
	}
	if (rq->acc_i < n) {
		hf__rq_yield(rq, metrics_write);
		return;
	}
	hf__rq_send_buffer(rq, 200, "text/plain; version=0.0.4; charset=utf-8", b);
}

static void metrics_done(struct hf__rq *rq, const hf_error *err)
{
	if (err) {
		hf__rq_send_error(rq, err);
		return;
	}
	struct hf__stats *st = rq->srv->stats;
	struct evbuffer *b = evbuffer_new();
	if (!b) {
		hf__rq_fail(rq, HF_ENOMEM, "out of memory");
		return;
	}
	const struct counters *a = &st->all;
	evbuffer_add_printf(b, "# HELP holdfast_up 1 while the server runs.\n# TYPE holdfast_up gauge\n"
	                       "holdfast_up 1\n");
	evbuffer_add_printf(b, "# HELP holdfast_uptime_seconds Seconds since start.\n"
	                       "# TYPE holdfast_uptime_seconds gauge\nholdfast_uptime_seconds %lld\n",
	                    (long long)((hf_now_ms() - rq->srv->started_ms) / 1000));
	evbuffer_add_printf(b, "# HELP holdfast_acquisitions_total Acquire requests by outcome "
	                       "(per resource named).\n# TYPE holdfast_acquisitions_total counter\n");
	metric_outcomes(b, "holdfast_acquisitions_total", NULL, a);
	evbuffer_add_printf(b, "# HELP holdfast_acquire_latency_seconds Arrival to grant.\n"
	                       "# TYPE holdfast_acquire_latency_seconds summary\n");
	static const double qs[] = {0.5, 0.9, 0.99, 0.999};
	for (int i = 0; i < 4; i++)
		evbuffer_add_printf(b, "holdfast_acquire_latency_seconds{quantile=\"%g\"} %.6f\n", qs[i],
		                    percentile_ms(a, qs[i]) / 1000.0);
	evbuffer_add_printf(b, "holdfast_acquire_latency_seconds_sum %.6f\n"
	                       "holdfast_acquire_latency_seconds_count %" PRIu64 "\n",
	                    (double)a->lat_sum_us / 1e6, a->lat_n);
	evbuffer_add_printf(b, "# HELP holdfast_holds_ended_total Hold changes seen in the event log.\n"
	                       "# TYPE holdfast_holds_ended_total counter\n"
	                       "holdfast_holds_ended_total{how=\"released\"} %" PRIu64 "\n"
	                       "holdfast_holds_ended_total{how=\"expired\"} %" PRIu64 "\n"
	                       "# HELP holdfast_holds_confirmed_total Holds confirmed.\n"
	                       "# TYPE holdfast_holds_confirmed_total counter\n"
	                       "holdfast_holds_confirmed_total %" PRIu64 "\n"
	                       "# HELP holdfast_holds_extended_total Hold extensions.\n"
	                       "# TYPE holdfast_holds_extended_total counter\n"
	                       "holdfast_holds_extended_total %" PRIu64 "\n",
	                    a->released, a->expired, a->confirmed, a->extended);
	evbuffer_add_printf(b, "# HELP holdfast_http_responses_total Answers by status class.\n"
	                       "# TYPE holdfast_http_responses_total counter\n");
	for (int k = 2; k <= 5; k++)
		evbuffer_add_printf(b, "holdfast_http_responses_total{class=\"%dxx\"} %" PRIu64 "\n", k,
		                    st->http[k]);
	const struct hf__server *srv = rq->srv;
	evbuffer_add_printf(b, "# HELP holdfast_connections Open connections (pending: no valid key "
	                       "or request yet).\n# TYPE holdfast_connections gauge\n"
	                       "holdfast_connections{state=\"all\"} %zu\n"
	                       "holdfast_connections{state=\"pending\"} %zu\n",
	                    srv->n_conns, srv->n_pending);
	evbuffer_add_printf(b, "# HELP holdfast_connections_unserved_total Connections closed or "
	                       "refused unserved, by reason.\n"
	                       "# TYPE holdfast_connections_unserved_total counter\n"
	                       "holdfast_connections_unserved_total{reason=\"evicted_pending\"} %" PRIu64 "\n"
	                       "holdfast_connections_unserved_total{reason=\"over_limit\"} %" PRIu64 "\n"
	                       "holdfast_connections_unserved_total{reason=\"request_timeout\"} %" PRIu64 "\n"
	                       "holdfast_connections_unserved_total{reason=\"body_before_auth\"} %" PRIu64 "\n",
	                    srv->conns_evicted, srv->conns_refused, srv->conns_timed_out,
	                    srv->conns_preauth_closed);
	evbuffer_add_printf(b, "# HELP holdfast_accept_errors_total Failed accept() calls (out of "
	                       "descriptors): connections left waiting.\n"
	                       "# TYPE holdfast_accept_errors_total counter\n"
	                       "holdfast_accept_errors_total %" PRIu64 "\n"
	                       "# HELP holdfast_accept_pauses_total Episodes of accept failures (the "
	                       "listener backs off).\n# TYPE holdfast_accept_pauses_total counter\n"
	                       "holdfast_accept_pauses_total %" PRIu64 "\n",
	                    srv->accept_errors, srv->accept_episodes);
	json_t *list = json_object_get(rq->acc, "resources");
	json_int_t held = 0, holds = 0, waiters = 0;
	size_t i;
	json_t *r;
	json_array_foreach (list, i, r) {
		held += json_integer_value(json_object_get(r, "held"));
		holds += json_integer_value(json_object_get(r, "holds"));
		waiters += json_integer_value(json_object_get(r, "waiters"));
	}
	evbuffer_add_printf(b, "# HELP holdfast_resources Resources in the store.\n"
	                       "# TYPE holdfast_resources gauge\nholdfast_resources %zu\n"
	                       "# HELP holdfast_holds_live Tentative and confirmed holds.\n"
	                       "# TYPE holdfast_holds_live gauge\nholdfast_holds_live %lld\n"
	                       "# HELP holdfast_units_held Units held by live holds.\n"
	                       "# TYPE holdfast_units_held gauge\nholdfast_units_held %lld\n"
	                       "# HELP holdfast_waiters Parked acquires.\n"
	                       "# TYPE holdfast_waiters gauge\nholdfast_waiters %lld\n",
	                    json_array_size(list), (long long)holds, (long long)held,
	                    (long long)waiters);
	if (rq->sagas_parked >= 0)
		evbuffer_add_printf(b, "# HELP holdfast_sagas_compensation_failed Sagas parked after a "
		                       "compensation ran out of attempts (resume them).\n"
		                       "# TYPE holdfast_sagas_compensation_failed gauge\n"
		                       "holdfast_sagas_compensation_failed %lld\n",
		                    (long long)rq->sagas_parked);
	evbuffer_add_printf(b, "# HELP holdfast_resource_acquisitions_total Acquires per resource.\n"
	                       "# TYPE holdfast_resource_acquisitions_total counter\n");
	rq->acc_out = b;
	rq->acc_bucket = 0;
	rq->acc_i = 0;
	metrics_write(rq);
}

static void on_sagas_parked(struct hf__rq *rq, hf_reply *reply)
{
	json_t *j = reply->error.code ? NULL : json_loads(reply->json, 0, NULL);
	rq->sagas_parked = j ? json_integer_value(json_object_get(j, "total")) : -1;
	json_decref(j);
	hf_reply_free(reply);
	collect(rq, metrics_done);
}

void hf__h_metrics(struct hf__rq *rq)
{
	rq->sagas_parked = -1;
	/* The embedded and PostgreSQL engines keep sagas (docs/sagas.md); elsewhere (not_supported)
	 * the gauge is left out. */
	const char *scheme = hf_store_scheme(rq->srv->store);
	if (strcmp(scheme, "file") != 0 && strncmp(scheme, "postgres", 8) != 0) {
		collect(rq, metrics_done);
		return;
	}
	hf_request req;
	hf_request_init(&req, HF_OP_SAGA_LIST);
	req.json = "{\"state\":\"compensation_failed\"}";
	req.limit = 1;
	hf__rq_submit(rq, &req, on_sagas_parked);
}

/* ---- Probes. ---------------------------------------------------------------------- */

void hf__h_healthz(struct hf__rq *rq)
{
	hf__rq_send_json(rq, 200, json_pack("{s:s}", "status", "ok"));
}

static void on_ready(struct hf__rq *rq, hf_reply *reply)
{
	if (reply->error.code)
		hf__rq_send_error(rq, &reply->error);
	else
		hf__rq_send_json(rq, 200, json_pack("{s:s,s:s}", "status", "ready", "engine",
		                                    hf_store_scheme(rq->srv->store)));
	hf_reply_free(reply);
}

/* Ready: not draining, the engine can take changes (hf_store_health), and answers a read. */
void hf__h_readyz(struct hf__rq *rq)
{
	hf_error err;
	if (hf_store_health(rq->srv->store, &err) != HF_OK) {
		hf__rq_send_error(rq, &err);
		return;
	}
	hf_request req;
	hf_request_init(&req, HF_OP_LIST_RESOURCES);
	req.limit = 1;
	hf__rq_submit(rq, &req, on_ready);
}
