/*
 * fallback.c — the fallback wrapper engine behind hf_options.fallback_url (holdfastd
 * --fallback-engine): calls go to the primary engine; only while the primary answers
 * engine_unavailable are acquires, and the calls on holds made there, sent to the fallback.
 * It remembers the holds the fallback granted: until each ends, its names are not granted on
 * the primary (such acquires answer unavailable or wait here, on a timer thread of its own).
 * Generic: both sides are any engines found by URL. Its risks are in docs/api.md.
 */
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/core.h"
#include "engine/engine.h"

/* While the primary is down, at most one call per PROBE_MS is tried on it first: the calls
 * are the probe (a wrapper has no engine-neutral ping). */
#define PROBE_MS 1000

/* Fences from the fallback are reported as FENCE_BASE + the fallback's own fence: above
 * every fence a primary hands out (below 2^48 per resource), so a protected resource that
 * checks fences refuses a primary holder that lost its lock to a fallback holder. 2^48 keeps
 * them exact in JSON numbers (doubles, 2^53). See docs/api.md for what this costs. */
#define FENCE_BASE (INT64_C(1) << 48)

/* The timer thread looks at least this often (an injected clock moves without telling). */
#define RECHECK_MS 1000

enum side { PRIMARY = 0, FALLBACK = 1 };

struct fb_engine;

/* One call while the wrapper has it: where it is, what it was told there. */
struct route {
	struct fb_engine *eng;
	struct hf__call *call;
	enum side where;
	bool tried[2];
	bool cancelled;
	hf_error primary_error; /* the primary's answer, when the fallback was asked after it */
	int64_t started;        /* monotonic ms: an acquire's wait continues on the fallback */
	bool parked;            /* waiting here for fallback holds on its names to end */
	int verdict;            /* when it leaves the parked list: HF_OK (go on) or how it ends */
	struct route *prev, *next;
	struct route *pnext;    /* the parked list, in arrival order */
};

/* A hold the fallback granted, until it ends: its names must not be granted on the primary. */
struct fb_hold {
	char id[HF_ID_LEN + 1];
	int64_t expires; /* the store's clock, ms; 0 = confirmed (no lease) */
	size_t n;
	char **names;
	struct fb_hold *next;
};

struct fb_engine {
	hf_store *store;
	const struct hf__engine_ops *ops[2];
	void *inner[2];
	char url[2][256]; /* for logs, credentials removed */

	pthread_mutex_t lock;
	pthread_cond_t idle; /* signalled when `sending` drops to 0 */
	/* guarded by lock */
	int sending;        /* route_send()s inside an inner submit: close waits for them */
	bool down;          /* the primary's last answer was engine_unavailable */
	int64_t next_probe; /* monotonic ms: when a call may try the down primary again */
	bool closing;
	struct route *routes;
	uint64_t on_fallback; /* calls the fallback answered during the current outage */
	uint64_t outages;
	struct fb_hold *fholds;            /* live holds on the fallback */
	struct route *parked, *parked_tail; /* acquires waiting for some of them to end */
	pthread_cond_t wake;               /* the timer thread: a hold ended, a cancel, close */
	pthread_t timer;
	bool timer_started;
};

static int64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The URL without "user:password@", for logs. */
static void redact(char *out, size_t n, const char *url)
{
	const char *sep = strstr(url, "://");
	const char *host = sep ? sep + 3 : url;
	const char *at = sep ? strchr(host, '@') : NULL;
	const char *slash = strchr(host, '/');
	if (at && (!slash || at < slash))
		snprintf(out, n, "%.*s***%s", (int)(host - url), url, at);
	else
		snprintf(out, n, "%s", url);
}

/* One logfmt line on stderr, the format holdfastd logs in: switches are rare and must be
 * seen by whoever runs the process, and the library has no logger of its own. */
static void fb_log(const char *level, const char *msg, const char *fmt, ...) HF__PRINTF(3, 4);
static void fb_log(const char *level, const char *msg, const char *fmt, ...)
{
	char line[1024];
	struct timespec ts;
	struct tm tm;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	int n = snprintf(line, sizeof(line), "ts=%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ level=%s msg=%s",
	                 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
	                 ts.tv_nsec / 1000000, level, msg);
	va_list ap;
	va_start(ap, fmt);
	if (n > 0 && (size_t)n < sizeof(line))
		n += vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n >= sizeof(line) - 1)
		n = (int)sizeof(line) - 2;
	line[n++] = '\n';
	fwrite(line, 1, (size_t)n, stderr);
	fflush(stderr);
}

/* A message for a logfmt value: quotes and backslashes would break the line. */
static void quote_safe(char *out, size_t n, const char *s)
{
	size_t k = 0;
	for (; *s && k + 1 < n; s++)
		out[k++] = (*s == '"' || *s == '\\' || *s == '\n') ? '\'' : *s;
	out[k] = '\0';
}

static bool is_hold_op(hf_op op)
{
	return op == HF_OP_EXTEND || op == HF_OP_CONFIRM || op == HF_OP_RELEASE ||
	       op == HF_OP_GET_HOLD;
}

/* The primary answered: record whether it is reachable, logging each change. Only
 * engine_unavailable says "down"; only answers that its backend must have given (a result or
 * a rule's refusal) say "up" — a cancel, a close or a wait's timeout can come from the
 * engine alone while its backend is gone. */
static void primary_answered(struct fb_engine *eng, int code, const char *message)
{
	bool unreachable = code == HF_EENGINE;
	if (!unreachable && (code == HF_ECANCELED || code == HF_ECLOSED || code == HF_ETIMEDOUT ||
	                     code == HF_ENOMEM || code == HF_EINTERNAL || code == HF_EPROTO))
		return;
	pthread_mutex_lock(&eng->lock);
	bool was = eng->down;
	uint64_t served = eng->on_fallback;
	if (unreachable && !was) {
		eng->down = true;
		eng->outages++;
		eng->on_fallback = 0;
		eng->next_probe = mono_ms() + PROBE_MS;
	} else if (!unreachable && was) {
		eng->down = false;
	}
	pthread_mutex_unlock(&eng->lock);
	if (unreachable && !was) {
		char m[300];
		quote_safe(m, sizeof(m), message);
		fb_log("warn", "engine_fallback_on",
		       " primary=\"%s\" fallback=\"%s\" reason=\"%s\" note=\"acquires go to the "
		       "fallback until the primary answers again; fallback fences start at 2^48\"",
		       eng->url[PRIMARY], eng->url[FALLBACK], m);
	} else if (!unreachable && was) {
		fb_log("warn", "engine_fallback_off",
		       " primary=\"%s\" fallback=\"%s\" answer=%s calls_on_fallback=%llu "
		       "note=\"new calls go to the primary; holds taken on the fallback stay there until "
		       "they end\"",
		       eng->url[PRIMARY], eng->url[FALLBACK], hf_err_name(code),
		       (unsigned long long)served);
	}
}

/* Where a new call goes first. */
static enum side first_side(struct fb_engine *eng, hf_op op)
{
	if (op != HF_OP_ACQUIRE && !is_hold_op(op))
		return PRIMARY; /* resources, lists, events: the primary's alone (see docs) */
	enum side s = PRIMARY;
	pthread_mutex_lock(&eng->lock);
	if (eng->down) {
		int64_t now = mono_ms();
		if (now >= eng->next_probe)
			eng->next_probe = now + PROBE_MS; /* this call probes the primary */
		else
			s = FALLBACK;
	}
	pthread_mutex_unlock(&eng->lock);
	return s;
}

static void on_inner_done(struct hf__call *call);

/* Hands the call back to the store layer; the route is freed. */
static void route_finish(struct route *rt)
{
	struct fb_engine *eng = rt->eng;
	struct hf__call *call = rt->call;
	pthread_mutex_lock(&eng->lock);
	if (rt->prev)
		rt->prev->next = rt->next;
	else
		eng->routes = rt->next;
	if (rt->next)
		rt->next->prev = rt->prev;
	pthread_mutex_unlock(&eng->lock);
	free(rt);
	call->intercept = NULL;
	call->intercept_data = NULL;
	call->engine_data = NULL;
	hf__call_done(call);
}

/* Sends the call to one side; its answer comes to on_inner_done(). */
static void route_send(struct route *rt, enum side s)
{
	struct fb_engine *eng = rt->eng;
	struct hf__call *call = rt->call;
	pthread_mutex_lock(&eng->lock);
	bool cancelled = rt->cancelled, closing = eng->closing;
	rt->where = s;
	if (!cancelled && !closing)
		eng->sending++; /* the inner engine stays open until this submit has returned */
	pthread_mutex_unlock(&eng->lock);
	if (cancelled || closing) {
		call->reply->error.code = cancelled ? HF_ECANCELED : HF_ECLOSED;
		snprintf(call->reply->error.message, sizeof(call->reply->error.message), "%s",
		         cancelled ? "the wait was cancelled" : "store is closing");
		route_finish(rt);
		return;
	}
	rt->tried[s] = true;
	memset(&call->reply->error, 0, sizeof(call->reply->error));
	call->engine_data = NULL; /* the engine's own field: fresh for each engine */
	call->intercept = on_inner_done;
	call->intercept_data = rt;
	eng->ops[s]->submit(eng->inner[s], call);
	pthread_mutex_lock(&eng->lock);
	if (--eng->sending == 0)
		pthread_cond_broadcast(&eng->idle);
	pthread_mutex_unlock(&eng->lock);
}

static void fences_up(hf_hold *h)
{
	for (size_t i = 0; h && i < h->n_parts; i++)
		h->parts[i].fence += FENCE_BASE;
}

/* ---- the fallback's holds: names the primary must not grant until they end ---- */

static void fhold_free(struct fb_hold *fh)
{
	for (size_t i = 0; i < fh->n; i++)
		free(fh->names[i]);
	free(fh->names);
	free(fh);
}

static struct fb_hold **fhold_find(struct fb_engine *eng, const char *id)
{
	struct fb_hold **p = &eng->fholds;
	while (*p && strcmp((*p)->id, id) != 0)
		p = &(*p)->next;
	return p;
}

/* Drops the holds whose lease has ended by the store's clock. Under eng->lock. */
static void fholds_prune(struct fb_engine *eng)
{
	int64_t now = hf__store_now(eng->store);
	for (struct fb_hold **p = &eng->fholds; *p;) {
		if ((*p)->expires > 0 && (*p)->expires <= now) {
			struct fb_hold *gone = *p;
			*p = gone->next;
			fhold_free(gone);
		} else {
			p = &(*p)->next;
		}
	}
}

/* The first name of the acquire that a live fallback hold has, or NULL. Under eng->lock. */
static const char *held_on_fallback(struct fb_engine *eng, const hf_acquire_req *a)
{
	fholds_prune(eng);
	for (struct fb_hold *fh = eng->fholds; fh; fh = fh->next)
		for (size_t k = 0; k < fh->n; k++)
			for (size_t i = 0; i < a->n_claims; i++)
				if (strcmp(fh->names[k], a->claims[i].name) == 0)
					return a->claims[i].name;
	return NULL;
}

/* The fallback answered a call on a hold (or granted one): keep the record in step. Out of
 * memory while recording a grant leaves it unrecorded: the split-brain risk of docs/api.md,
 * which this record exists to close within one server, and logged. */
static void fholds_note(struct fb_engine *eng, hf_op op, int rc, const char *id, const hf_hold *h)
{
	bool ended = false, lost = false;
	pthread_mutex_lock(&eng->lock);
	struct fb_hold **p = id ? fhold_find(eng, id) : NULL;
	if (op == HF_OP_ACQUIRE && rc == HF_OK && h && !*fhold_find(eng, h->id)) {
		struct fb_hold *fh = calloc(1, sizeof(*fh));
		if (fh && (fh->names = calloc(h->n_parts, sizeof(*fh->names)))) {
			memcpy(fh->id, h->id, sizeof(fh->id));
			fh->expires = h->state == HF_HOLD_CONFIRMED ? 0 : h->expires_at_ms;
			for (; fh->n < h->n_parts; fh->n++)
				if (!(fh->names[fh->n] = hf__strdup(h->parts[fh->n].resource)))
					break;
		}
		if (fh && fh->names && fh->n == h->n_parts) {
			fh->next = eng->fholds;
			eng->fholds = fh;
		} else {
			if (fh)
				fhold_free(fh);
			lost = true;
		}
	} else if (p && *p) {
		if (rc == HF_OK && h && (h->state == HF_HOLD_TENTATIVE || h->state == HF_HOLD_CONFIRMED)) {
			(*p)->expires = h->state == HF_HOLD_CONFIRMED ? 0 : h->expires_at_ms;
		} else if (rc == HF_OK || rc == HF_EENDED || rc == HF_ENOHOLD) {
			struct fb_hold *gone = *p; /* released, expired, or forgotten there */
			*p = gone->next;
			fhold_free(gone);
			ended = true;
		}
	}
	if (ended)
		pthread_cond_signal(&eng->wake);
	pthread_mutex_unlock(&eng->lock);
	if (lost)
		fb_log("error", "engine_fallback_untracked",
		       " hold=%s note=\"out of memory: this hold's names may be granted on the primary "
		       "before it ends\"",
		       h->id);
}

/* An inner engine finished the call: record, maybe send it on, else hand it back. */
static void on_inner_done(struct hf__call *call)
{
	struct route *rt = call->intercept_data;
	struct fb_engine *eng = rt->eng;
	hf_reply *r = call->reply;
	int rc = r->error.code;
	hf_op op = call->req.op;
	call->intercept = NULL;
	pthread_mutex_lock(&eng->lock);
	bool stop = eng->closing || rt->cancelled;
	if (rt->where == FALLBACK && rc == HF_OK)
		eng->on_fallback++;
	pthread_mutex_unlock(&eng->lock);

	if (rt->where == PRIMARY) {
		primary_answered(eng, rc, r->error.message);
		/* An acquire the primary could not serve goes to the fallback with what is left of
		 * its wait. "Could not serve" includes "the outcome is unknown" (a connection lost
		 * mid-call): the primary may have granted it too — the split-brain risk. */
		bool to_fallback = !stop && !rt->tried[FALLBACK] &&
		                   ((op == HF_OP_ACQUIRE && rc == HF_EENGINE) ||
		                    (is_hold_op(op) && (rc == HF_EENGINE || rc == HF_ENOHOLD)));
		if (to_fallback) {
			rt->primary_error = r->error;
			if (op == HF_OP_ACQUIRE && call->req.acquire.wait_ms > 0) {
				int64_t left = call->req.acquire.wait_ms - (mono_ms() - rt->started);
				call->req.acquire.wait_ms = left > 0 ? left : 0;
				call->submitted_at_ms = hf__store_now(eng->store); /* engines time waits from it */
			}
			route_send(rt, FALLBACK);
			return;
		}
	} else {
		if (op == HF_OP_ACQUIRE || is_hold_op(op))
			fholds_note(eng, op, rc, op == HF_OP_ACQUIRE ? NULL : call->req.hold_id, r->hold);
		if (rc == HF_OK) {
			fences_up(r->hold);
		} else if (is_hold_op(op) && rc == HF_ENOHOLD) {
			if (!stop && !rt->tried[PRIMARY]) {
				route_send(rt, PRIMARY); /* not a fallback hold: the primary's, then */
				return;
			}
			if (rt->tried[PRIMARY] && rt->primary_error.code == HF_EENGINE) {
				/* The hold lives on the primary, which cannot be reached: say that, not
				 * "no such hold". */
				r->error = rt->primary_error;
			}
		} else if (op == HF_OP_ACQUIRE && rc == HF_EENGINE && rt->tried[PRIMARY]) {
			/* Both messages, each cut to fit beside the other. */
			char both[2 * HF_MESSAGE_MAX + 64];
			snprintf(both, sizeof(both), "primary and fallback engines are both unreachable: %.100s; %.100s",
			         rt->primary_error.message, r->error.message);
			memcpy(r->error.message, both, sizeof(r->error.message) - 1);
			r->error.message[sizeof(r->error.message) - 1] = '\0';
		}
	}
	route_finish(rt);
}

/* ---- acquires that wait here for the fallback's holds to end ---- */

/* An acquire about to go to the primary names something a fallback hold still has: the
 * primary must not grant it (it does not know that hold). NOWAIT answers unavailable; a wait
 * parks here until those holds end, then goes on. True if the route was taken care of. */
static bool park_or_refuse(struct route *rt)
{
	struct fb_engine *eng = rt->eng;
	struct hf__call *call = rt->call;
	pthread_mutex_lock(&eng->lock);
	const char *name = held_on_fallback(eng, &call->req.acquire);
	bool park = name && call->req.acquire.wait_ms > 0;
	if (park) {
		/* the timer thread owns it from here: rt may be gone once the lock is released */
		rt->parked = true;
		if (eng->parked_tail)
			eng->parked_tail->pnext = rt;
		else
			eng->parked = rt;
		eng->parked_tail = rt;
		pthread_cond_signal(&eng->wake);
	}
	pthread_mutex_unlock(&eng->lock);
	if (!name)
		return false;
	if (!park) {
		call->reply->error.code = HF_EUNAVAILABLE;
		snprintf(call->reply->error.message, sizeof(call->reply->error.message),
		         "resource '%.100s' is held on the fallback engine (granted while the primary was "
		         "unreachable) until that hold ends",
		         name);
		route_finish(rt);
	}
	return true;
}

/* A parked acquire's turn: it ends (close, cancel, deadline) or goes on to the engines. */
static void unpark(struct route *rt, int64_t now)
{
	struct hf__call *call = rt->call;
	int64_t left = call->req.acquire.wait_ms - (now - rt->started);
	int code = rt->verdict;
	if (code != HF_OK) {
		call->reply->error.code = code;
		snprintf(call->reply->error.message, sizeof(call->reply->error.message), "%s",
		         code == HF_ECLOSED     ? "store is closing"
		         : code == HF_ECANCELED ? "the wait was cancelled"
		                                : "the wait ended before the units were free: a hold on the "
		                                  "fallback engine still has them");
		route_finish(rt);
		return;
	}
	call->req.acquire.wait_ms = left > 0 ? left : 0;
	call->submitted_at_ms = hf__store_now(rt->eng->store); /* engines time waits from it */
	route_send(rt, first_side(rt->eng, HF_OP_ACQUIRE));
}

/* Ends the parked waits whose fallback holds ended (release, expiry) or whose time is up, in
 * arrival order, and sleeps until the next lease end or deadline. */
static void *timer_main(void *arg)
{
	struct fb_engine *eng = arg;
	pthread_mutex_lock(&eng->lock);
	for (;;) {
		int64_t now = mono_ms(), next = now + RECHECK_MS;
		struct route *go = NULL, **go_tail = &go;
		bool closing = eng->closing;
		eng->parked_tail = NULL;
		for (struct route **pp = &eng->parked; *pp;) {
			struct route *rt = *pp;
			int64_t deadline = rt->started + rt->call->req.acquire.wait_ms;
			bool held = held_on_fallback(eng, &rt->call->req.acquire) != NULL;
			if (closing || rt->cancelled || !held || now >= deadline) {
				*pp = rt->pnext;
				rt->pnext = NULL;
				rt->parked = false; /* a cancel from now on is route_send's to see */
				rt->verdict = closing         ? HF_ECLOSED
				              : rt->cancelled ? HF_ECANCELED
				              : held          ? HF_ETIMEDOUT
				                              : HF_OK;
				*go_tail = rt;
				go_tail = &rt->pnext;
				continue;
			}
			if (deadline < next)
				next = deadline;
			eng->parked_tail = rt;
			pp = &rt->pnext;
		}
		int64_t store_now = hf__store_now(eng->store);
		for (struct fb_hold *fh = eng->fholds; fh; fh = fh->next)
			if (fh->expires > 0 && now + (fh->expires - store_now) + 1 < next)
				next = now + (fh->expires - store_now) + 1;
		if (go) {
			pthread_mutex_unlock(&eng->lock);
			while (go) {
				struct route *rt = go;
				go = rt->pnext;
				rt->pnext = NULL;
				unpark(rt, now);
			}
			pthread_mutex_lock(&eng->lock);
			continue;
		}
		if (closing)
			break;
		struct timespec ts;
		hf__timespec_in_ms(&ts, CLOCK_MONOTONIC, next > now ? next - now : 1);
		pthread_cond_timedwait(&eng->wake, &eng->lock, &ts);
	}
	pthread_mutex_unlock(&eng->lock);
	return NULL;
}

/* ---- the engine table ---- */

static void fb_submit(void *engine, struct hf__call *call)
{
	struct fb_engine *eng = engine;
	struct route *rt = calloc(1, sizeof(*rt));
	if (!rt) {
		call->reply->error.code = HF_ENOMEM;
		snprintf(call->reply->error.message, sizeof(call->reply->error.message), "out of memory");
		hf__call_done(call);
		return;
	}
	rt->eng = eng;
	rt->call = call;
	rt->started = mono_ms();
	pthread_mutex_lock(&eng->lock);
	rt->next = eng->routes;
	if (eng->routes)
		eng->routes->prev = rt;
	eng->routes = rt;
	pthread_mutex_unlock(&eng->lock);
	enum side s = first_side(eng, call->req.op);
	if (call->req.op == HF_OP_ACQUIRE && s == PRIMARY && park_or_refuse(rt))
		return;
	route_send(rt, s);
}

static void fb_cancel(void *engine, uint64_t call_id)
{
	struct fb_engine *eng = engine;
	int where = -1;
	pthread_mutex_lock(&eng->lock);
	for (struct route *rt = eng->routes; rt; rt = rt->next)
		if (rt->call->id == call_id) {
			rt->cancelled = true; /* and never sent on to the other side */
			where = (int)rt->where;
			if (rt->parked) { /* waiting here: the timer thread ends it */
				where = -1;
				pthread_cond_signal(&eng->wake);
			}
			break;
		}
	pthread_mutex_unlock(&eng->lock);
	/* A cancel in the instant between the primary's answer and the fallback's submit can
	 * reach the fallback before the call does; that wait then ends at its wait_ms. */
	if (where >= 0)
		eng->ops[where]->cancel(eng->inner[where], call_id);
}

static void fb_tick(void *engine)
{
	struct fb_engine *eng = engine;
	pthread_mutex_lock(&eng->lock);
	pthread_cond_signal(&eng->wake); /* a moved clock may have ended fallback holds */
	pthread_mutex_unlock(&eng->lock);
	for (int s = PRIMARY; s <= FALLBACK; s++)
		if (eng->ops[s]->tick)
			eng->ops[s]->tick(eng->inner[s]);
}

/* A batch (hf_store_batch_begin/end) spans both sides: changes on either are committed
 * together at its end, as on the engine alone. */
static void fb_batch(void *engine, bool open)
{
	struct fb_engine *eng = engine;
	for (int s = PRIMARY; s <= FALLBACK; s++)
		if (eng->ops[s]->batch)
			eng->ops[s]->batch(eng->inner[s], open);
}

static void fb_close(void *engine)
{
	struct fb_engine *eng = engine;
	pthread_mutex_lock(&eng->lock);
	eng->closing = true; /* answers from here on are final: nothing is sent on */
	pthread_cond_signal(&eng->wake);
	while (eng->sending > 0)
		pthread_cond_wait(&eng->idle, &eng->lock);
	pthread_mutex_unlock(&eng->lock);
	if (eng->timer_started)
		pthread_join(eng->timer, NULL); /* it ends the parked waits with HF_ECLOSED */
	eng->ops[PRIMARY]->close(eng->inner[PRIMARY]);
	eng->ops[FALLBACK]->close(eng->inner[FALLBACK]);
	while (eng->fholds) {
		struct fb_hold *fh = eng->fholds;
		eng->fholds = fh->next;
		fhold_free(fh);
	}
	pthread_cond_destroy(&eng->wake);
	pthread_cond_destroy(&eng->idle);
	pthread_mutex_destroy(&eng->lock);
	free(eng);
}

static int fb_open(hf_store *store, const char *url, const hf_options *opt, void **out,
                   hf_error *err)
{
	*out = NULL;
	const char *furl = opt->fallback_url;
	const struct hf__engine_ops *pops = hf__engine_find(url), *fops = hf__engine_find(furl);
	if (!pops)
		return hf__err(err, HF_ENOTSUP, "no engine for url '%s'", url);
	if (!fops)
		return hf__err(err, HF_ENOTSUP, "no engine for fallback url '%s'", furl);
	if (strcmp(url, furl) == 0)
		return hf__err(err, HF_EINVAL, "the fallback url is the primary url '%s'", url);
	struct fb_engine *eng = calloc(1, sizeof(*eng));
	if (!eng)
		return hf__err_code(err, HF_ENOMEM);
	eng->store = store;
	eng->ops[PRIMARY] = pops;
	eng->ops[FALLBACK] = fops;
	redact(eng->url[PRIMARY], sizeof(eng->url[PRIMARY]), url);
	redact(eng->url[FALLBACK], sizeof(eng->url[FALLBACK]), furl);
	pthread_mutex_init(&eng->lock, NULL);
	pthread_cond_init(&eng->idle, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&eng->wake, &ca);
	pthread_condattr_destroy(&ca);
	hf_options inner = *opt;
	inner.fallback_url = NULL; /* no chains */
	/* The primary must answer at open (as without a fallback): a store that starts on its
	 * fallback would hand out fallback fences before the primary was ever asked. */
	int rc = pops->open(store, url, &inner, &eng->inner[PRIMARY], err);
	if (rc != HF_OK)
		goto fail;
	rc = fops->open(store, furl, &inner, &eng->inner[FALLBACK], err);
	if (rc != HF_OK) {
		char m[HF_MESSAGE_MAX];
		snprintf(m, sizeof(m), "%s", err ? err->message : "");
		hf__err(err, rc, "fallback engine: %.200s", m);
		pops->close(eng->inner[PRIMARY]);
		goto fail;
	}
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	int prc = pthread_create(&eng->timer, NULL, timer_main, eng);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (prc != 0) {
		rc = hf__err(err, HF_EINTERNAL, "cannot start the fallback engine's timer thread: %s",
		             strerror(prc));
		fops->close(eng->inner[FALLBACK]);
		pops->close(eng->inner[PRIMARY]);
		goto fail;
	}
	eng->timer_started = true;
	fb_log("info", "engine_fallback_ready",
	       " primary=\"%s\" fallback=\"%s\" note=\"split-brain risk: the fallback grants what "
	       "the primary may also grant while it is only unreachable\"",
	       eng->url[PRIMARY], eng->url[FALLBACK]);
	*out = eng;
	return HF_OK;
fail:
	pthread_cond_destroy(&eng->wake);
	pthread_cond_destroy(&eng->idle);
	pthread_mutex_destroy(&eng->lock);
	free(eng);
	return rc;
}

const struct hf__engine_ops hf__engine_fallback = {
	.scheme = "fallback",
	.open = fb_open,
	.close = fb_close,
	.submit = fb_submit,
	.cancel = fb_cancel,
	.tick = fb_tick,
	.batch = fb_batch,
};
