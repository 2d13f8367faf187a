/*
 * main.c — holdfast-flights: the services the seed 002 flight booking saga calls, on one
 * port: reads the command line, opens the holdfast store, routes each path to its service,
 * keeps the call log (GET /calls) and the idempotency-key tables the services share.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "flights.h"

hf_store *fl_store;
pthread_mutex_t fl_mu = PTHREAD_MUTEX_INITIALIZER;

static const char usage[] =
    "usage: holdfast-flights --holdfast ENGINE_URL [options]\n"
    "\n"
    "The services of the seed 002 flight booking saga, on one port: bookings (/bookings),\n"
    "flights and baggage quotas (/flights, /baggage), pricing (/quotes), payments (/payments,\n"
    "/payment-rules, /refunds), and the log of every call they answered (/calls).\n"
    "\n"
    "  --listen HOST:PORT   where to serve HTTP (default 127.0.0.1:3003; port 0: any free)\n"
    "  --holdfast URL       holdfast engine the baggage quotas are declared on (http://holdfastd)\n"
    "  --workers N          HTTP worker threads (default 16; a held payment keeps one busy)\n"
    "  --decline CARDS      card numbers the payment service declines, comma-separated\n"
    "  --help               this text\n";

/* ---- The call log: what the services answered, in order, for the tests and the demo. -- */

#define LOG_MAX 100000 /* entries kept; the oldest go first */

struct call {
	int64_t seq, started_ms, ended_ms;
	int status;
	char method[8];
	char *path;
	char *key; /* Idempotency-Key, or NULL */
};

static struct call *calls;
static size_t n_calls, cap_calls;
static int64_t last_seq;

static void log_call(const struct app_request *req, int status, int64_t started_ms)
{
	struct call c = {.started_ms = started_ms, .ended_ms = hf_now_ms(), .status = status};
	snprintf(c.method, sizeof(c.method), "%s", req->method);
	size_t len = strlen(req->path) + (req->query ? strlen(req->query) + 1 : 0) + 1;
	c.path = malloc(len);
	if (c.path && req->query)
		snprintf(c.path, len, "%s?%s", req->path, req->query);
	else if (c.path)
		snprintf(c.path, len, "%s", req->path);
	c.key = req->idempotency_key ? strdup(req->idempotency_key) : NULL;
	pthread_mutex_lock(&fl_mu);
	if (n_calls == LOG_MAX) {
		free(calls[0].path);
		free(calls[0].key);
		memmove(calls, calls + 1, (n_calls - 1) * sizeof(*calls));
		n_calls--;
	}
	if (c.path && fl_grow((void **)&calls, sizeof(*calls), n_calls, &cap_calls)) {
		c.seq = ++last_seq;
		calls[n_calls++] = c;
		c.path = c.key = NULL;
	}
	pthread_mutex_unlock(&fl_mu);
	free(c.path);
	free(c.key);
}

/* GET /calls?after=SEQ: the calls answered after SEQ, oldest first. */
static void get_calls(const struct app_request *req, struct app_reply *r)
{
	long long after = 0;
	if (req->query && sscanf(req->query, "after=%lld", &after) != 1)
		return (void)app_error(r, 400, "invalid_query", "the only parameter is after=SEQ");
	json_t *list = json_array();
	pthread_mutex_lock(&fl_mu);
	for (size_t i = 0; list && i < n_calls; i++) {
		const struct call *c = &calls[i];
		if (c->seq <= after)
			continue;
		json_array_append_new(list,
		                      json_pack("{s:I,s:s,s:s,s:i,s:s?,s:I,s:I}", "seq",
		                                (json_int_t)c->seq, "method", c->method, "path",
		                                c->path, "status", c->status, "idempotency_key",
		                                c->key, "started_at_ms", (json_int_t)c->started_ms,
		                                "ended_at_ms", (json_int_t)c->ended_ms));
	}
	pthread_mutex_unlock(&fl_mu);
	app_ok(r, 200, json_pack("{s:o}", "calls", list));
}

/* ---- What the services share. -------------------------------------------------------- */

bool fl_grow(void **items, size_t size, size_t n, size_t *cap)
{
	if (n < *cap)
		return true;
	size_t want = *cap ? *cap * 2 : 16;
	void *p = realloc(*items, want * size);
	if (!p)
		return false;
	*items = p;
	*cap = want;
	return true;
}

int64_t fl_keys_find(const struct fl_keys *k, const char *key)
{
	for (size_t i = 0; i < k->n; i++)
		if (strcmp(k->keys[i], key) == 0)
			return k->ids[i];
	return 0;
}

bool fl_keys_add(struct fl_keys *k, const char *key, int64_t id)
{
	size_t cap = k->cap;
	char *copy = strdup(key);
	if (!copy || !fl_grow((void **)&k->keys, sizeof(*k->keys), k->n, &cap) ||
	    !fl_grow((void **)&k->ids, sizeof(*k->ids), k->n, &k->cap)) {
		free(copy);
		return false;
	}
	k->keys[k->n] = copy;
	k->ids[k->n++] = id;
	return true;
}

void fl_keys_free(struct fl_keys *k)
{
	for (size_t i = 0; i < k->n; i++)
		free(k->keys[i]);
	free(k->keys);
	free(k->ids);
	*k = (struct fl_keys){0};
}

bool fl_idem_key(const struct app_call *k, const char **key)
{
	*key = k->req->idempotency_key;
	if (*key && (**key == '\0' || strlen(*key) > FL_KEY_MAX))
		return app_error(k->r, 400, "invalid_idempotency_key",
		                 "Idempotency-Key must be 1 to %d bytes", FL_KEY_MAX);
	return true;
}

/* ---- Routing. ----------------------------------------------------------------------- */

static bool prefixed(const char *path, const char *prefix)
{
	size_t n = strlen(prefix);
	return strncmp(path, prefix, n) == 0 && (path[n] == '\0' || path[n] == '/');
}

static void route(void *ctx, const struct app_request *req, struct app_reply *r)
{
	int64_t started = hf_now_ms();
	const char *p = req->path;
	if (strcmp(p, "/health") == 0 && strcmp(req->method, "GET") == 0)
		app_ok(r, 200,
		       json_pack("{s:s,s:s,s:s}", "status", "ok", "app", "flights", "holdfast",
		                 hf_store_scheme(fl_store)));
	else if (strcmp(p, "/calls") == 0 && strcmp(req->method, "GET") == 0)
		get_calls(req, r);
	else if (prefixed(p, "/bookings"))
		app_route(fl_booking_routes, fl_booking_n_routes, ctx, req, r);
	else if (prefixed(p, "/flights") || prefixed(p, "/baggage") || prefixed(p, "/quotes"))
		app_route(fl_flight_routes, fl_flight_n_routes, ctx, req, r);
	else if (prefixed(p, "/payments") || prefixed(p, "/payment-rules") ||
	         prefixed(p, "/refunds"))
		app_route(fl_payment_routes, fl_payment_n_routes, ctx, req, r);
	else
		app_error(r, 404, "route_not_found", "no route %s %s", req->method, p);
	if (strcmp(p, "/calls") != 0 && strcmp(p, "/health") != 0)
		log_call(req, r->status, started);
}

int main(int argc, char **argv)
{
	const char *listen_host = "127.0.0.1", *holdfast_url = NULL, *decline = NULL;
	int listen_port = 3003;
	int64_t workers = 16;
	const struct app_opt opts[] = {
	    {.name = "listen",
	     .kind = APP_OPT_HOSTPORT,
	     .text = &listen_host,
	     .port = &listen_port},
	    {.name = "holdfast", .kind = APP_OPT_TEXT, .text = &holdfast_url, .required = true},
	    {.name = "workers", .kind = APP_OPT_INT, .num = &workers, .lo = 1, .hi = 256},
	    {.name = "decline", .kind = APP_OPT_TEXT, .text = &decline},
	    {.name = NULL},
	};
	int rc = app_args("holdfast-flights", usage, opts, argc, argv);
	if (rc >= 0)
		return rc;
	char err[256];
	if (!fl_payment_start(decline, err, sizeof(err))) {
		fprintf(stderr, "holdfast-flights: %s\n", err);
		return 2;
	}
	rc = 1;
	char *ctxs = calloc((size_t)workers, 1); /* the services keep no per-worker state */
	if (ctxs && app_store_open("holdfast-flights", holdfast_url, &fl_store)) {
		struct app_server srv = {.name = "flights",
		                         .host = listen_host,
		                         .port = listen_port,
		                         .engine_url = holdfast_url,
		                         .ctxs = ctxs,
		                         .ctx_size = 1,
		                         .n = (int)workers,
		                         .route = route};
		rc = app_serve(&srv);
	}
	if (fl_store)
		hf_close(fl_store);
	free(ctxs);
	fl_booking_stop();
	fl_flight_stop();
	fl_payment_stop();
	for (size_t i = 0; i < n_calls; i++) {
		free(calls[i].path);
		free(calls[i].key);
	}
	free(calls);
	return rc;
}
