/*
 * worker.c — the machinery under the scenarios: worker threads each running one libevent
 * loop for their share of the clients, the clients' timers and stop rules, and the hold
 * calls over HTTP/1.1 keep-alive (http_client.c, one connection per client) or through the
 * library (--engine), recording every observation for the checker.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench.h"
#include "http_client.h"

/* Every client call answers within wait_ms plus this, or the connection is given up. */
#define HFB_HTTP_TIMEOUT_S 120

int64_t hfb_now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

uint64_t hfb_rand(uint64_t *s)
{
	uint64_t x = *s ? *s : 0x9E3779B97F4A7C15ull;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*s = x;
	return x * 2685821657736338717ull;
}

int64_t hfb_rand_range(uint64_t *s, int64_t lo, int64_t hi)
{
	return lo + (int64_t)(hfb_rand(s) % (uint64_t)(hi - lo + 1));
}

void hfb_stats_init(struct hfb_stats *s)
{
	memset(s, 0, sizeof(*s));
	hfb_hist_init(&s->acquire);
	hfb_hist_init(&s->request);
	hfb_hist_init(&s->handoff);
}

void hfb_stats_merge(struct hfb_stats *into, const struct hfb_stats *from)
{
	into->cycles += from->cycles;
	into->requests += from->requests;
	into->attempts += from->attempts;
	into->granted += from->granted;
	into->conflicts += from->conflicts;
	into->timeouts += from->timeouts;
	into->errors += from->errors;
	into->confirmed += from->confirmed;
	into->released += from->released;
	into->abandoned += from->abandoned;
	into->expired += from->expired;
	hfb_hist_merge(&into->acquire, &from->acquire);
	hfb_hist_merge(&into->request, &from->request);
	hfb_hist_merge(&into->handoff, &from->handoff);
}

bool hfb_may_start(struct hfb_client *c)
{
	if (c->stopped)
		return false;
	if (hfb_now_us() >= hfb_run.t_deadline)
		return false;
	if (hfb_cfg.ops > 0 && atomic_fetch_add(&hfb_run.cycles_started, 1) >= hfb_cfg.ops)
		return false;
	return true;
}

void hfb_client_stop(struct hfb_client *c)
{
	if (c->stopped)
		return;
	c->stopped = true;
	if (--c->w->running == 0)
		event_base_loopbreak(c->w->base);
}

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct hfb_client *c = arg;
	c->timer_fn(c);
}

void hfb_after(struct hfb_client *c, int64_t us, void (*fn)(struct hfb_client *c))
{
	if (!c->timer)
		c->timer = evtimer_new(c->w->base, timer_cb, c);
	c->timer_fn = fn;
	struct timeval tv = {.tv_sec = us / 1000000, .tv_usec = us % 1000000};
	evtimer_add(c->timer, &tv);
}

void hfb_verify_later(struct hfb_client *c, const char *hold, bool abandoned)
{
	struct hfb_worker *w = c->w;
	if (w->n_verify == w->cap_verify) {
		size_t n = w->cap_verify ? w->cap_verify * 2 : 256;
		void *p = realloc(w->verify, n * sizeof(*w->verify));
		bool *q = realloc(w->verify_abandoned, n * sizeof(*q));
		if (p)
			w->verify = p;
		if (q)
			w->verify_abandoned = q;
		if (!p || !q) {
			fprintf(stderr, "holdfast-bench: out of memory\n");
			exit(3);
		}
		w->cap_verify = n;
	}
	snprintf(w->verify[w->n_verify], sizeof(w->verify[0]), "%s", hold);
	w->verify_abandoned[w->n_verify++] = abandoned;
}

/* ---- completing a call: counters, observations, then the scenario ---- */

static void record(struct hfb_client *c, int64_t t_ack, const struct hfb_full_answer *fa)
{
	struct hfb_stats *st = &c->w->stats;
	const struct hfb_answer *a = &fa->a;
	hfb_hist_add(&st->request, t_ack - c->t_send);
	struct hfb_obs o = {.client = c->id, .t_send = c->t_send, .t_ack = t_ack, .code = a->code};
	switch (c->call_kind) {
	case HFB_CALL_ACQUIRE:
		st->attempts++;
		if (a->code == HF_OK) {
			st->granted++;
			hfb_hist_add(&st->acquire, t_ack - c->t_send);
		} else if (a->code == HF_EUNAVAILABLE) {
			st->conflicts++;
		} else if (a->code == HF_ETIMEDOUT) {
			st->timeouts++;
		} else {
			st->errors++;
		}
		if (a->code != HF_OK)
			return;
		o.kind = HFB_GRANT;
		snprintf(o.hold, sizeof(o.hold), "%s", a->hold);
		o.exclusive = fa->exclusive;
		o.n_parts = fa->n_parts;
		for (size_t i = 0; i < fa->n_parts; i++)
			o.parts[i] =
			    (struct hfb_part){hfb_history_find(c->w->hist, fa->parts[i].name),
			                      fa->parts[i].units, fa->parts[i].fence};
		break;
	case HFB_CALL_CONFIRM:
	case HFB_CALL_RELEASE:
		o.kind = c->call_kind == HFB_CALL_CONFIRM ? HFB_CONFIRM : HFB_RELEASE;
		snprintf(o.hold, sizeof(o.hold), "%s", c->call_hold);
		if (a->code == HF_OK)
			(*(c->call_kind == HFB_CALL_CONFIRM ? &st->confirmed : &st->released))++;
		else if (a->code == HF_EENDED)
			st->expired++; /* the lease ran out before we got to it */
		else
			st->errors++;
		break;
	}
	if (hfb_cfg.check && hfb_history_add(c->w->hist, &o) != HF_OK) {
		fprintf(stderr, "holdfast-bench: out of memory recording the history\n");
		exit(3);
	}
}

static void complete(struct hfb_client *c, const struct hfb_full_answer *fa)
{
	record(c, hfb_now_us(), fa);
	hfb_answer_fn fn = c->on_answer;
	c->on_answer = NULL;
	if (fa->a.code == HF_EENGINE || fa->a.code == HF_EPROTO || fa->a.code == HF_ECLOSED) {
		/* the server is gone or talking nonsense: retrying in a loop would only spin */
		fprintf(stderr, "holdfast-bench: client %d stops: %s\n", c->id,
		        hf_strerror(fa->a.code));
		atomic_store(&hfb_run.failed, true);
		hfb_client_stop(c);
		return;
	}
	fn(c, &fa->a);
}

/* ---- over HTTP ---- */

int hfb_http_open(struct hfb_client *c)
{
	const struct hfb_server *s = &hfb_cfg.servers[c->id % hfb_cfg.n_servers];
	c->http = hfb_http_new(c->w->base, s->host, s->port, HFB_HTTP_TIMEOUT_S);
	return c->http ? 0 : -1;
}

void hfb_http_close(struct hfb_client *c)
{
	hfb_http_free(c->http);
	c->http = NULL;
}

static void http_done(void *arg, int status, char *body, size_t len)
{
	struct hfb_client *c = arg;
	struct hfb_full_answer fa;
	memset(&fa, 0, sizeof(fa));
	if (status == 0) {
		fa.a.code = HF_EENGINE;
		complete(c, &fa);
		return;
	}
	hfb_answer_read(status, body, len, &fa);
	complete(c, &fa);
}

/* A JSON body written in place: literal parts copied, strings escaped, numbers converted;
 * `p` goes NULL when it would not fit. */
struct body {
	char *p, *end;
};

static void put(struct body *b, const char *s, size_t n)
{
	if (b->p && (size_t)(b->end - b->p) >= n) {
		memcpy(b->p, s, n);
		b->p += n;
	} else {
		b->p = NULL;
	}
}

#define PUT_LIT(b, lit) put((b), (lit), sizeof(lit) - 1)

static void put_str(struct body *b, const char *s)
{
	static const char hex[] = "0123456789abcdef";
	PUT_LIT(b, "\"");
	for (const char *run = s;; s++) {
		unsigned char ch = (unsigned char)*s;
		if (ch >= 0x20 && ch != '"' && ch != '\\')
			continue;
		put(b, run, (size_t)(s - run));
		if (!ch)
			break;
		char esc[6] = {'\\', 'u', '0', '0', hex[ch >> 4], hex[ch & 15]};
		if (ch == '"' || ch == '\\')
			put(b, (char[]){'\\', (char)ch}, 2);
		else
			put(b, esc, 6);
		run = s + 1;
	}
	PUT_LIT(b, "\"");
}

static void put_int(struct body *b, int64_t v)
{
	char tmp[24];
	size_t k = sizeof(tmp);
	uint64_t u = v < 0 ? 0 - (uint64_t)v : (uint64_t)v;
	do
		tmp[--k] = (char)('0' + u % 10);
	while ((u /= 10));
	if (v < 0)
		tmp[--k] = '-';
	put(b, tmp + k, sizeof(tmp) - k);
}

/* The call's path and JSON body, as holdfastd's /v1 API takes them. */
static void http_request(struct hfb_client *c, const struct hfb_call *call, struct body *path,
                         struct body *b)
{
	switch (call->kind) {
	case HFB_CALL_ACQUIRE:
		PUT_LIT(b, "{\"owner\":");
		put_str(b, c->owner);
		PUT_LIT(b, ",\"ttl_ms\":");
		put_int(b, call->ttl_ms);
		PUT_LIT(b, ",\"wait_ms\":");
		put_int(b, call->wait_ms);
		if (call->lock_key) {
			PUT_LIT(path, "/v1/locks/");
			put(path, call->lock_key, strlen(call->lock_key)); /* names are [a-z0-9-] */
			break;
		}
		PUT_LIT(path, "/v1/holds");
		PUT_LIT(b, ",\"resources\":[");
		for (size_t i = 0; i < call->n; i++) {
			if (i)
				PUT_LIT(b, ",");
			PUT_LIT(b, "{\"name\":");
			put_str(b, call->names[i]);
			PUT_LIT(b, ",\"units\":");
			put_int(b, call->units[i]);
			PUT_LIT(b, ",\"capacity\":");
			put_int(b, call->caps[i]);
			PUT_LIT(b, "}");
		}
		PUT_LIT(b, "]");
		if (call->any)
			PUT_LIT(b, ",\"any\":true");
		break;
	case HFB_CALL_CONFIRM:
	case HFB_CALL_RELEASE:
		PUT_LIT(path, "/v1/holds/");
		put(path, call->hold, strlen(call->hold));
		if (call->kind == HFB_CALL_CONFIRM)
			PUT_LIT(path, "/confirm");
		else
			PUT_LIT(path, "/release");
		PUT_LIT(b, "{\"token\":");
		put_str(b, call->token);
		break;
	}
	PUT_LIT(b, "}");
}

static void http_submit(struct hfb_client *c, const struct hfb_call *call)
{
	/* room for every claim's name escaped (a name has no control characters) */
	char pbuf[HF_NAME_MAX + 64], bbuf[HF_CLAIMS_MAX * (2 * HF_NAME_MAX + 80) + 256];
	struct body path = {pbuf, pbuf + sizeof(pbuf)}, b = {bbuf, bbuf + sizeof(bbuf)};
	http_request(c, call, &path, &b);
	if (!path.p || !b.p ||
	    hfb_http_post(c->http, pbuf, (size_t)(path.p - pbuf), bbuf, (size_t)(b.p - bbuf),
	                  http_done, c) != 0) {
		struct hfb_full_answer fa;
		memset(&fa, 0, sizeof(fa));
		fa.a.code = HF_EENGINE;
		complete(c, &fa);
	}
}

/* ---- through the library (--engine) ---- */

static void engine_done(void *arg, hf_reply *reply)
{
	struct hfb_client *c = arg;
	struct hfb_full_answer fa;
	memset(&fa, 0, sizeof(fa));
	fa.a.code = reply->error.code;
	if (reply->error.code == HF_OK && reply->hold) {
		const hf_hold *h = reply->hold;
		snprintf(fa.a.hold, sizeof(fa.a.hold), "%s", h->id);
		snprintf(fa.a.token, sizeof(fa.a.token), "%s", h->token);
		fa.exclusive = h->mode == HF_MODE_EXCLUSIVE;
		for (size_t i = 0; i < h->n_parts && i < HFB_PARTS_MAX; i++) {
			snprintf(fa.parts[i].name, sizeof(fa.parts[i].name), "%s",
			         h->parts[i].resource);
			fa.parts[i].units = h->parts[i].units;
			fa.parts[i].fence = h->parts[i].fence;
			fa.n_parts = i + 1;
		}
		hfb_answer_first(&fa);
	}
	hf_reply_free(reply);
	complete(c, &fa);
}

static void engine_submit(struct hfb_client *c, const struct hfb_call *call)
{
	hf_request req;
	hf_claim claims[HF_CLAIMS_MAX];
	char lock_name[HF_NAME_MAX + 1];
	switch (call->kind) {
	case HFB_CALL_ACQUIRE:
		hf_request_init(&req, HF_OP_ACQUIRE);
		req.acquire.owner = c->owner;
		req.acquire.ttl_ms = call->ttl_ms;
		req.acquire.wait_ms = call->wait_ms;
		req.acquire.claims = claims;
		req.acquire.any = call->any;
		if (call->lock_key) {
			/* what POST /v1/locks/KEY does: an exclusive hold of lock:KEY, capacity
			 * 65536 */
			snprintf(lock_name, sizeof(lock_name), "lock:%.200s", call->lock_key);
			claims[0] = (hf_claim){.name = lock_name, .units = 0, .capacity = 65536};
			req.acquire.n_claims = 1;
			req.acquire.mode = HF_MODE_EXCLUSIVE;
			break;
		}
		for (size_t i = 0; i < call->n; i++)
			claims[i] = (hf_claim){.name = call->names[i],
			                       .units = call->units[i],
			                       .capacity = call->caps[i]};
		req.acquire.n_claims = call->n;
		req.acquire.mode = HF_MODE_UNITS;
		break;
	case HFB_CALL_CONFIRM:
	case HFB_CALL_RELEASE:
		hf_request_init(&req,
		                call->kind == HFB_CALL_CONFIRM ? HF_OP_CONFIRM : HF_OP_RELEASE);
		req.hold_id = call->hold;
		req.token = call->token;
		break;
	}
	hf_error err;
	if (hf_submit(c->w->store, &req, engine_done, c, NULL, &err) != HF_OK) {
		struct hfb_full_answer fa;
		memset(&fa, 0, sizeof(fa));
		fa.a.code = err.code;
		complete(c, &fa);
	}
}

void hfb_call(struct hfb_client *c, const struct hfb_call *call, hfb_answer_fn fn)
{
	c->on_answer = fn;
	c->call_kind = call->kind;
	if (call->hold)
		snprintf(c->call_hold, sizeof(c->call_hold), "%s", call->hold);
	c->w->stats.requests++;
	c->t_send = hfb_now_us();
	if (c->w->store)
		engine_submit(c, call);
	else
		http_submit(c, call);
}

/* ---- the threads ---- */

static void store_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	hf_store_dispatch(arg);
}

static void *worker_main(void *arg)
{
	struct hfb_worker *w = arg;
	for (int i = 0; i < w->n_clients; i++) {
		if (hfb_cfg.peer)
			hfb_peer_start(&w->clients[i]);
		else
			hfb_scenario_start(&w->clients[i]);
	}
	if (w->running > 0)
		event_base_dispatch(w->base);
	return NULL;
}

int hfb_workers_run(hf_store *store, struct hfb_stats *total, struct hfb_worker **out_workers,
                    int *out_n)
{
	int nw = hfb_cfg.threads;
	struct hfb_worker *ws = calloc((size_t)nw, sizeof(*ws));
	pthread_t *th = calloc((size_t)nw, sizeof(*th));
	if (!ws || !th) {
		free(ws);
		free(th);
		return -1;
	}
	/* from here on the caller frees the workers, whatever happens */
	*out_workers = ws;
	*out_n = nw;
	for (int i = 0; i < nw; i++) {
		struct hfb_worker *w = &ws[i];
		w->id = i;
		w->hist = &hfb_run.hist;
		w->store = store;
		hfb_stats_init(&w->stats);
		struct event_config *ec = event_config_new();
		event_config_set_flag(ec, EVENT_BASE_FLAG_PRECISE_TIMER);
		w->base = event_base_new_with_config(ec);
		event_config_free(ec);
		w->n_clients = hfb_cfg.clients / nw + (i < hfb_cfg.clients % nw);
		w->clients = calloc((size_t)w->n_clients + 1, sizeof(*w->clients));
		if (!w->base || !w->clients) {
			free(th);
			return -1;
		}
		if (store) {
			w->store_ev = event_new(w->base, hf_store_fd(store), EV_READ | EV_PERSIST,
			                        store_cb, store);
			event_add(w->store_ev, NULL);
		}
	}
	/* clients numbered across workers: client k on worker k % nw */
	for (int k = 0; k < hfb_cfg.clients; k++) {
		struct hfb_worker *w = &ws[k % nw];
		struct hfb_client *c = &w->clients[k / nw];
		c->id = k;
		c->w = w;
		c->rng =
		    hfb_cfg.seed * 0x9E3779B97F4A7C15ull + (uint64_t)k * 0xBF58476D1CE4E5B9ull + 1;
		snprintf(c->owner, sizeof(c->owner), "bench-%d", k);
		int rc = hfb_cfg.peer ? hfb_peer_open(c) : store ? 0 : hfb_http_open(c);
		if (rc != 0) {
			fprintf(stderr, "holdfast-bench: client %d cannot connect\n", k);
			free(th);
			return -1;
		}
		w->running++;
	}
	hfb_run.t_start = hfb_now_us();
	hfb_run.t_deadline = hfb_run.t_start + (int64_t)(hfb_cfg.duration_s * 1e6);
	for (int i = 0; i < nw; i++)
		pthread_create(&th[i], NULL, worker_main, &ws[i]);
	for (int i = 0; i < nw; i++)
		pthread_join(th[i], NULL);
	hfb_stats_init(total);
	for (int i = 0; i < nw; i++)
		hfb_stats_merge(total, &ws[i].stats);
	free(th);
	return 0;
}

void hfb_workers_free(struct hfb_worker *ws, int n)
{
	for (int i = 0; i < n; i++) {
		struct hfb_worker *w = &ws[i];
		for (int k = 0; w->clients && k < w->n_clients; k++) {
			struct hfb_client *c = &w->clients[k];
			if (hfb_cfg.peer)
				hfb_peer_close(c);
			else
				hfb_http_close(c);
			if (c->timer)
				event_free(c->timer);
		}
		if (w->store_ev)
			event_free(w->store_ev);
		free(w->clients);
		free(w->verify);
		free(w->verify_abandoned);
		if (w->base)
			event_base_free(w->base);
	}
	free(ws);
}
