/*
 * redlock.c — the redlock:// engine: plain locks (one resource, capacity 1, or an exclusive
 * hold of any capacity — holdfastd's lock route) by the Redlock algorithm over N independent
 * Redis masters, on the wire format of the other Redlock
 * clients (key = the name, value = the 32-hex token, SET NX PX, owner-checked Lua for release
 * and extend). One worker thread with one blocking hiredis connection per master; waits are
 * retries with delay + jitter scheduled by that thread, never sleeps of the caller.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/core.h"
#include "core/rules.h"
#include "engine/engine.h"
#include "engine/redis/redis.h"

/* The other clients' scripts, byte for byte in effect: only the holder's value acts. */
static const char RELEASE_LUA[] =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0";
static const char EXTEND_LUA[] =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end "
    "return 0";
static const char PERSIST_LUA[] =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('PERSIST', KEYS[1]) return 1 end "
    "return 0";
/* Fences: read the counter, then raise it to max(counter, v) — each only where we still hold
 * the key, so both rounds happen inside our lock on that master. */
static const char FENCE_READ_LUA[] =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return tonumber(redis.call('GET', KEYS[2]) or "
    "'0') end return -1";
static const char FENCE_RAISE_LUA[] =
    "if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end "
    "local c = tonumber(redis.call('GET', KEYS[2]) or '0') "
    "if c < tonumber(ARGV[2]) then redis.call('SET', KEYS[2], ARGV[2]) end return 1";

struct rl_hold {
	char id[HF_ID_LEN + 1];
	char token[HF_TOKEN_LEN + 1];
	char *name;
	char *owner;
	hf_mode mode;
	int64_t units; /* what the hold shows it took: the whole capacity when exclusive */
	hf_hold_state state;
	int64_t created, expires, ended, fence;
	struct rl_hold *next;
};

struct rl_pending { /* an acquire waiting for its next try */
	struct hf__call *call;
	int64_t next_try, deadline; /* monotonic ms */
	bool cancelled;
	struct rl_pending *next;
};

struct rl_engine {
	hf_store *store;
	hf_options opt;
	struct hf__redis_url url;
	size_t n, quorum;
	int node_timeout_ms, retry_delay_ms, retry_jitter_ms;
	char fence_prefix[128];
	redisContext *c[HF__REDIS_MAX_NODES];
	int64_t next_connect[HF__REDIS_MAX_NODES];
	char node_error[HF__REDIS_MAX_NODES][120];

	pthread_t thread;
	bool started;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct hf__mailbox mailbox; /* guarded by lock */
	bool closing;

	struct rl_hold *holds; /* worker only */
	struct rl_pending *pending;
	uint64_t rand_state;
};

static int64_t mono(void)
{
	return hf__redis_mono_ms();
}

static void fail(struct hf__call *call, int code, const char *fmt, ...) HF__PRINTF(3, 4);
static void fail(struct hf__call *call, int code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	call->reply->error.code = code;
	vsnprintf(call->reply->error.message, sizeof(call->reply->error.message), fmt, ap);
	va_end(ap);
	hf__call_done(call);
}

/* ---- talking to one master ---- */

static redisContext *node(struct rl_engine *e, size_t i)
{
	if (e->c[i])
		return e->c[i];
	int64_t now = mono();
	if (now < e->next_connect[i])
		return NULL;
	char why[200];
	e->c[i] = hf__redis_connect(&e->url.nodes[i], e->url.password, e->url.db, e->node_timeout_ms,
	                            e->node_timeout_ms, why, sizeof(why));
	if (!e->c[i]) {
		snprintf(e->node_error[i], sizeof(e->node_error[i]), "%.110s", why);
		e->next_connect[i] = now + 200; /* a dead master costs one try per 200 ms */
	}
	return e->c[i];
}

/* Runs one command on master i within the per-node timeout. Returns the reply (free it) or
 * NULL when the master did not answer (its connection is dropped then). */
static redisReply *node_cmd(struct rl_engine *e, size_t i, int argc, const char **argv,
                            const size_t *argl)
{
	redisContext *c = node(e, i);
	if (!c)
		return NULL;
	redisReply *r = redisCommandArgv(c, argc, argv, argl);
	if (!r) {
		snprintf(e->node_error[i], sizeof(e->node_error[i]), "%.110s",
		         c->errstr[0] ? c->errstr : "no reply");
		redisFree(c);
		e->c[i] = NULL;
		e->next_connect[i] = mono();
	}
	return r;
}

/* EVAL of a small script with one or two keys. */
static redisReply *node_eval(struct rl_engine *e, size_t i, const char *lua, const char *k1,
                             const char *k2, const char *a1, const char *a2)
{
	const char *argv[7] = {"EVAL", lua, k2 ? "2" : "1", k1};
	size_t argl[7] = {4, strlen(lua), 1, strlen(k1)};
	int argc = 4;
	if (k2) {
		argv[argc] = k2;
		argl[argc++] = strlen(k2);
	}
	argv[argc] = a1;
	argl[argc++] = strlen(a1);
	if (a2) {
		argv[argc] = a2;
		argl[argc++] = strlen(a2);
	}
	return node_cmd(e, i, argc, argv, argl);
}

/* Runs a script on every master; returns how many answered an integer > 0, and counts the
 * masters that answered at all in *reached. */
static size_t on_all(struct rl_engine *e, const char *lua, const char *key, const char *token,
                     const char *arg, size_t *reached)
{
	size_t ok = 0;
	*reached = 0;
	for (size_t i = 0; i < e->n; i++) {
		redisReply *r = node_eval(e, i, lua, key, NULL, token, arg);
		if (!r)
			continue;
		if (r->type != REDIS_REPLY_ERROR)
			(*reached)++;
		if (r->type == REDIS_REPLY_INTEGER && r->integer > 0)
			ok++;
		freeReplyObject(r);
	}
	return ok;
}

static void release_everywhere(struct rl_engine *e, const char *key, const char *token)
{
	size_t reached;
	on_all(e, RELEASE_LUA, key, token, NULL, &reached);
}

/* The first master errors, for messages: "127.0.0.1:7001: Connection refused; ...". */
static void describe_errors(struct rl_engine *e, const bool *answered, char *buf, size_t n)
{
	size_t off = 0;
	buf[0] = '\0';
	for (size_t i = 0; i < e->n && off + 1 < n; i++) {
		if (answered[i])
			continue;
		int w = snprintf(buf + off, n - off, "%s%.40s:%d: %.60s", off ? "; " : "",
		                 e->url.nodes[i].host, e->url.nodes[i].port, e->node_error[i]);
		if (w < 0)
			break;
		off += (size_t)w;
	}
}

/* ---- holds (this process's view) ---- */

static void hold_free(struct rl_hold *h)
{
	free(h->name);
	free(h->owner);
	free(h);
}

/* Lazy expiry and retention of the local records. */
static void holds_sweep(struct rl_engine *e)
{
	int64_t now = hf_now_ms();
	for (struct rl_hold **p = &e->holds; *p;) {
		struct rl_hold *h = *p;
		if (h->state == HF_HOLD_TENTATIVE && h->expires <= now) {
			h->state = HF_HOLD_EXPIRED;
			h->ended = h->expires;
		}
		if ((h->state == HF_HOLD_RELEASED || h->state == HF_HOLD_EXPIRED) &&
		    h->ended + e->opt.hold_retention_ms <= now) {
			*p = h->next;
			hold_free(h);
			continue;
		}
		p = &h->next;
	}
}

static int hold_reply(struct hf__call *call, const struct rl_hold *h, bool with_token)
{
	hf_hold_part part = {.resource = h->name, .units = h->units, .fence = h->fence};
	hf_hold view = {.owner = h->owner,
	                .state = h->state,
	                .mode = h->mode,
	                .created_at_ms = h->created,
	                .expires_at_ms = h->expires,
	                .ended_at_ms = h->ended,
	                .n_parts = 1,
	                .parts = &part};
	memcpy(view.id, h->id, sizeof(view.id));
	if (with_token)
		memcpy(view.token, h->token, sizeof(view.token));
	hf_hold *copy = malloc(sizeof(*copy));
	if (!copy || hf__hold_copy(copy, &view) != HF_OK) {
		free(copy);
		fail(call, HF_ENOMEM, "out of memory");
		return HF_ENOMEM;
	}
	call->reply->hold = copy;
	hf__call_done(call);
	return HF_OK;
}

static struct rl_hold *find_hold(struct rl_engine *e, const char *id)
{
	for (struct rl_hold *h = e->holds; h; h = h->next)
		if (strcmp(h->id, id) == 0)
			return h;
	return NULL;
}

/* ---- acquire: one Redlock attempt ---- */

enum attempt { GOT, BUSY, UNREACHABLE };

static enum attempt attempt(struct rl_engine *e, struct hf__call *call, char *why, size_t wn)
{
	const hf_acquire_req *a = &call->req.acquire;
	const char *key = a->claims[0].name;
	char token[HF_TOKEN_LEN + 1], ttl[24];
	if (hf__random_hex(token, HF_TOKEN_LEN / 2) != HF_OK) {
		snprintf(why, wn, "the OS has no randomness to give");
		return UNREACHABLE;
	}
	snprintf(ttl, sizeof(ttl), "%lld", (long long)a->ttl_ms);
	int64_t start = mono(), wall = hf_now_ms();
	bool answered[HF__REDIS_MAX_NODES] = {0};
	size_t got = 0, reached = 0;
	for (size_t i = 0; i < e->n; i++) {
		const char *argv[] = {"SET", key, token, "NX", "PX", ttl};
		size_t argl[] = {3, strlen(key), HF_TOKEN_LEN, 2, 2, strlen(ttl)};
		redisReply *r = node_cmd(e, i, 6, argv, argl);
		if (!r)
			continue;
		if (r->type == REDIS_REPLY_ERROR) {
			snprintf(e->node_error[i], sizeof(e->node_error[i]), "%.110s", r->str);
		} else {
			answered[i] = true;
			reached++;
			if (r->type == REDIS_REPLY_STATUS && strcmp(r->str, "OK") == 0)
				got++;
		}
		freeReplyObject(r);
	}
	int64_t drift = a->ttl_ms / 100 + 2;
	int64_t validity = a->ttl_ms - (mono() - start) - drift;
	int64_t fence = 0;
	if (got >= e->quorum && validity > 0) {
		/* The fence: the highest counter a majority shows, plus one, written back to a
		 * majority — all while we hold the key there (see docs/redis.md for what it
		 * guarantees and what it cannot). */
		char fkey[HF_NAME_MAX + 160];
		snprintf(fkey, sizeof(fkey), "%s%s", e->fence_prefix, key);
		size_t seen = 0;
		int64_t max = 0;
		for (size_t i = 0; i < e->n; i++) {
			redisReply *r = node_eval(e, i, FENCE_READ_LUA, key, fkey, token, NULL);
			if (r && r->type == REDIS_REPLY_INTEGER && r->integer >= 0) {
				seen++;
				if (r->integer > max)
					max = r->integer;
			}
			if (r)
				freeReplyObject(r);
		}
		size_t raised = 0;
		if (seen >= e->quorum) {
			char v[24];
			snprintf(v, sizeof(v), "%lld", (long long)(max + 1));
			for (size_t i = 0; i < e->n; i++) {
				redisReply *r = node_eval(e, i, FENCE_RAISE_LUA, key, fkey, token, v);
				if (r && r->type == REDIS_REPLY_INTEGER && r->integer == 1)
					raised++;
				if (r)
					freeReplyObject(r);
			}
		}
		validity = a->ttl_ms - (mono() - start) - drift;
		if (raised >= e->quorum && validity > 0)
			fence = max + 1;
	}
	if (fence > 0) {
		struct rl_hold *h = calloc(1, sizeof(*h));
		if (!h || !(h->name = hf__strdup(key)) || !(h->owner = hf__strdup(a->owner)) ||
		    hf__random_hex(h->id, HF_ID_LEN / 2) != HF_OK) {
			if (h)
				hold_free(h);
			release_everywhere(e, key, token);
			snprintf(why, wn, "out of memory");
			return UNREACHABLE;
		}
		memcpy(h->token, token, sizeof(h->token));
		h->mode = a->mode;
		h->units = a->mode == HF_MODE_EXCLUSIVE ? a->claims[0].capacity : 1;
		h->state = HF_HOLD_TENTATIVE;
		h->created = wall;
		h->expires = wall + validity; /* what Redlock promises, not the full ttl */
		h->fence = fence;
		h->next = e->holds;
		e->holds = h;
		hold_reply(call, h, true);
		return GOT;
	}
	release_everywhere(e, key, token);
	if (reached < e->quorum) {
		char errs[400];
		describe_errors(e, answered, errs, sizeof(errs));
		snprintf(why, wn, "redlock: only %zu of %zu masters answered, a majority of %zu is needed (%.300s)",
		         reached, e->n, e->quorum, errs);
		return UNREACHABLE;
	}
	if (got >= e->quorum)
		snprintf(why, wn, "redlock: a majority took too long; the lock's validity ran out");
	else
		snprintf(why, wn, "the lock '%.100s' is held (%zu of %zu masters granted, %zu needed)", key,
		         got, e->n, e->quorum);
	return BUSY;
}

static int64_t jitter(struct rl_engine *e)
{
	if (e->retry_jitter_ms <= 0)
		return 0;
	e->rand_state = e->rand_state * 6364136223846793005ULL + 1442695040888963407ULL;
	return (int64_t)((e->rand_state >> 33) % (uint64_t)(e->retry_jitter_ms + 1));
}

/* One try of an acquire; completes it or schedules the next try before `deadline`. */
static void try_acquire(struct rl_engine *e, struct hf__call *call, int64_t deadline)
{
	char why[600];
	enum attempt r = attempt(e, call, why, sizeof(why));
	if (r == GOT)
		return;
	int64_t now = mono(), next = now + e->retry_delay_ms + jitter(e);
	if (next > deadline)
		next = deadline; /* a last try when the wait ends */
	if (call->req.acquire.wait_ms > 0 && now < deadline) {
		struct rl_pending *p = calloc(1, sizeof(*p));
		if (!p) {
			fail(call, HF_ENOMEM, "out of memory");
			return;
		}
		p->call = call;
		p->deadline = deadline;
		p->next_try = next;
		p->next = e->pending;
		e->pending = p;
		return;
	}
	if (r == UNREACHABLE)
		fail(call, HF_EENGINE, "%s", why);
	else if (call->req.acquire.wait_ms > 0)
		fail(call, HF_ETIMEDOUT, "the wait ended before the lock was free: %s", why);
	else
		fail(call, HF_EUNAVAILABLE, "%s", why);
}

static void op_acquire(struct rl_engine *e, struct hf__call *call)
{
	const hf_acquire_req *a = &call->req.acquire;
	if (a->n_claims != 1)
		return fail(call, HF_ENOTSUP, "redlock:// takes plain locks: one resource per hold, not %zu",
		            a->n_claims);
	const hf_claim *c = &a->claims[0];
	/* One Redlock key is one holder at a time. That is a capacity-1 resource in any mode, and
	 * an exclusive hold of any capacity (it takes the whole capacity, so it has the resource
	 * to itself): holdfastd's lock route, which asks for `lock:KEY` of capacity 65,536, gets
	 * the Redlock key `lock:KEY` (docs/redis.md). Sharing a resource cannot be expressed. */
	if (c->capacity == 0)
		return fail(call, HF_ENOTSUP,
		            "redlock:// has no declared resources: name '%s' needs a capacity (1 for a plain "
		            "lock)",
		            c->name);
	if (c->capacity != 1 && a->mode == HF_MODE_SHARED)
		return fail(call, HF_ENOTSUP,
		            "redlock:// takes exclusive locks only: a Redlock key has one holder at a time, so "
		            "a shared hold of '%.80s' (capacity %lld) cannot be expressed; use redis://",
		            c->name, (long long)c->capacity);
	if (c->capacity != 1 && a->mode != HF_MODE_EXCLUSIVE)
		return fail(call, HF_ENOTSUP,
		            "redlock:// takes plain locks: name '%.100s' with capacity 1, or an exclusive hold "
		            "(semaphores need redis:// or another engine)",
		            c->name);
	if (a->mode == HF_MODE_UNITS && c->units > 1)
		return fail(call, HF_ECAPACITY, "%lld units of '%s' exceed its capacity 1",
		            (long long)c->units, c->name);
	if (a->idempotency_key)
		return fail(call, HF_ENOTSUP, "redlock:// keeps no records beyond the lock keys: idempotency "
		                              "keys are not supported");
	try_acquire(e, call, mono() + a->wait_ms);
}

/* ---- extend, confirm, release ---- */

static struct rl_hold *owned(struct rl_engine *e, struct hf__call *call)
{
	struct rl_hold *h = find_hold(e, call->req.hold_id);
	int rc = h ? hf__check_owner(h->id, h->token, h->state, call->req.token, &call->reply->error)
	           : hf__err_no_hold(&call->reply->error, call->req.hold_id,
	                             "redlock:// knows the holds of this process only");
	if (rc != HF_OK) {
		hf__call_done(call);
		return NULL;
	}
	return h;
}

static void op_extend(struct rl_engine *e, struct hf__call *call)
{
	struct rl_hold *h = owned(e, call);
	if (!h)
		return;
	if (h->state == HF_HOLD_CONFIRMED) {
		hold_reply(call, h, false);
		return;
	}
	char ttl[24];
	snprintf(ttl, sizeof(ttl), "%lld", (long long)call->req.ttl_ms);
	int64_t start = mono(), wall = hf_now_ms();
	size_t reached, ok = on_all(e, EXTEND_LUA, h->name, h->token, ttl, &reached);
	int64_t validity = call->req.ttl_ms - (mono() - start) - (call->req.ttl_ms / 100 + 2);
	if (ok >= e->quorum && validity > 0) {
		h->expires = wall + validity;
		hold_reply(call, h, false);
		return;
	}
	/* Lost: a majority no longer has our value (or is unreachable). Say so at once. */
	release_everywhere(e, h->name, h->token);
	h->state = HF_HOLD_EXPIRED;
	h->ended = wall;
	if (reached < e->quorum)
		fail(call, HF_EENGINE, "redlock: only %zu of %zu masters answered the extension; hold '%s' is lost",
		     reached, e->n, h->id);
	else
		fail(call, HF_EENDED, "hold '%s' has expired: only %zu of %zu masters still had it", h->id, ok,
		     e->n);
}

static void op_confirm(struct rl_engine *e, struct hf__call *call)
{
	struct rl_hold *h = owned(e, call);
	if (!h)
		return;
	if (h->state == HF_HOLD_TENTATIVE) {
		size_t reached, ok = on_all(e, PERSIST_LUA, h->name, h->token, NULL, &reached);
		if (ok < e->quorum)
			return fail(call, reached < e->quorum ? HF_EENGINE : HF_EENDED,
			            "redlock: only %zu of %zu masters confirmed hold '%s'", ok, e->n, h->id);
		h->state = HF_HOLD_CONFIRMED;
		h->expires = 0;
	}
	hold_reply(call, h, false);
}

static void op_release(struct rl_engine *e, struct hf__call *call)
{
	struct rl_hold *h = owned(e, call);
	if (!h)
		return;
	/* Deleted where the value is still ours; a master that is down lets it lapse by PX. */
	release_everywhere(e, h->name, h->token);
	h->state = HF_HOLD_RELEASED;
	h->ended = hf_now_ms();
	hold_reply(call, h, false);
}

/* A lock "resource": held when a majority of masters has the key. */
static void op_get_resource(struct rl_engine *e, struct hf__call *call)
{
	size_t have = 0, reached = 0;
	for (size_t i = 0; i < e->n; i++) {
		const char *argv[] = {"EXISTS", call->req.name};
		size_t argl[] = {6, strlen(call->req.name)};
		redisReply *r = node_cmd(e, i, 2, argv, argl);
		if (r && r->type == REDIS_REPLY_INTEGER) {
			reached++;
			have += r->integer > 0;
		}
		if (r)
			freeReplyObject(r);
	}
	if (reached < e->quorum)
		return fail(call, HF_EENGINE, "redlock: only %zu of %zu masters answered", reached, e->n);
	if (have < e->quorum)
		return fail(call, HF_ENORESOURCE, "lock '%s' is not held on a majority of masters",
		            call->req.name);
	hf_resource view = {.name = (char *)call->req.name, .capacity = 1, .held = 1, .holds = 1};
	hf_resource *copy = malloc(sizeof(*copy));
	if (!copy || hf__resource_copy(copy, &view) != HF_OK) {
		free(copy);
		return fail(call, HF_ENOMEM, "out of memory");
	}
	call->reply->resource = copy;
	hf__call_done(call);
}

static void op_list_holds(struct rl_engine *e, struct hf__call *call)
{
	const hf_request *q = &call->req;
	size_t n = 0;
	for (struct rl_hold *h = e->holds; h; h = h->next)
		n++;
	hf_reply *r = call->reply;
	r->holds = calloc(n + 1, sizeof(*r->holds));
	if (!r->holds)
		return fail(call, HF_ENOMEM, "out of memory");
	/* Ids ascending after the cursor: a selection sort is fine for a process's own holds. */
	const char *after = q->cursor;
	while (r->n_holds <= q->limit) {
		struct rl_hold *best = NULL;
		for (struct rl_hold *h = e->holds; h; h = h->next) {
			if (after && strcmp(h->id, after) <= 0)
				continue;
			if ((q->owner && strcmp(h->owner, q->owner) != 0) ||
			    (q->resource && strcmp(h->name, q->resource) != 0) ||
			    (q->state >= 0 && (int)h->state != q->state))
				continue;
			if (!best || strcmp(h->id, best->id) < 0)
				best = h;
		}
		if (!best)
			break;
		if (r->n_holds == q->limit) {
			r->more = true;
			break;
		}
		hf_hold_part part = {.resource = best->name, .units = best->units, .fence = best->fence};
		hf_hold view = {.owner = best->owner, .state = best->state, .mode = best->mode,
		                .created_at_ms = best->created, .expires_at_ms = best->expires,
		                .ended_at_ms = best->ended, .n_parts = 1, .parts = &part};
		memcpy(view.id, best->id, sizeof(view.id));
		if (hf__hold_copy(&r->holds[r->n_holds], &view) != HF_OK)
			return fail(call, HF_ENOMEM, "out of memory");
		r->n_holds++;
		after = best->id;
	}
	hf__call_done(call);
}

static void handle(struct rl_engine *e, struct hf__call *call)
{
	holds_sweep(e);
	switch (call->req.op) {
	case HF_OP_ACQUIRE:
		return op_acquire(e, call);
	case HF_OP_EXTEND:
		return op_extend(e, call);
	case HF_OP_CONFIRM:
		return op_confirm(e, call);
	case HF_OP_RELEASE:
		return op_release(e, call);
	case HF_OP_GET_HOLD: {
		struct rl_hold *h = find_hold(e, call->req.hold_id);
		if (!h)
			return fail(call, HF_ENOHOLD, "hold '%s' does not exist", call->req.hold_id);
		hold_reply(call, h, false);
		return;
	}
	case HF_OP_LIST_HOLDS:
		return op_list_holds(e, call);
	case HF_OP_GET_RESOURCE:
		return op_get_resource(e, call);
	case HF_OP_PUT_RESOURCE:
	case HF_OP_DELETE_RESOURCE:
	case HF_OP_LIST_RESOURCES:
		return fail(call, HF_ENOTSUP, "redlock:// has plain locks only: no declared resources");
	case HF_OP_READ_EVENTS:
		return fail(call, HF_ENOTSUP, "redlock:// keeps no event log");
	}
	fail(call, HF_EINVAL, "unknown operation %d", (int)call->req.op);
}

/* ---- the worker ---- */

static void *worker_main(void *arg)
{
	struct rl_engine *e = arg;
	for (;;) {
		pthread_mutex_lock(&e->lock);
		while (!e->closing && hf__mailbox_empty(&e->mailbox)) {
			int64_t next = INT64_MAX;
			for (struct rl_pending *p = e->pending; p; p = p->next)
				if (p->next_try < next)
					next = p->next_try;
			int64_t now = mono();
			if (next <= now)
				break;
			if (next == INT64_MAX) {
				pthread_cond_wait(&e->cond, &e->lock);
				continue;
			}
			struct timespec ts;
			hf__timespec_in_ms(&ts, CLOCK_MONOTONIC, next - now);
			pthread_cond_timedwait(&e->cond, &e->lock, &ts);
		}
		struct hf__mailbox box = hf__mailbox_take(&e->mailbox);
		struct hf__call *inbox = box.head;
		bool closing = e->closing;
		pthread_mutex_unlock(&e->lock);

		for (size_t i = 0; i < box.n_cancels; i++)
			for (struct rl_pending *p = e->pending; p; p = p->next)
				if (p->call->id == box.cancels[i])
					p->cancelled = true;
		hf__mailbox_release(&box);
		while (inbox) {
			struct hf__call *call = inbox;
			inbox = call->next;
			handle(e, call);
		}
		int64_t now = mono();
		for (struct rl_pending **pp = &e->pending; *pp;) {
			struct rl_pending *p = *pp;
			if (closing || p->cancelled) {
				*pp = p->next;
				fail(p->call, closing ? HF_ECLOSED : HF_ECANCELED,
				     closing ? "store is closing" : "the wait was cancelled");
				free(p);
				continue;
			}
			if (p->next_try <= now) {
				*pp = p->next;
				struct hf__call *call = p->call;
				int64_t deadline = p->deadline;
				free(p);
				try_acquire(e, call, deadline); /* may push a new entry at the head */
				pp = &e->pending;
				continue;
			}
			pp = &p->next;
		}
		if (closing)
			break;
	}
	return NULL;
}

/* ---- the engine table ---- */

static void engine_free(struct rl_engine *e)
{
	for (size_t i = 0; i < HF__REDIS_MAX_NODES; i++)
		if (e->c[i])
			redisFree(e->c[i]);
	while (e->holds) {
		struct rl_hold *h = e->holds;
		e->holds = h->next;
		hold_free(h);
	}
	hf__mailbox_release(&e->mailbox);
	pthread_mutex_destroy(&e->lock);
	pthread_cond_destroy(&e->cond);
	free(e);
}

static int param_int(const struct hf__redis_url *u, const char *key, int def, int lo, int hi,
                     const char *url, int *out, hf_error *err)
{
	const char *v = hf__redis_url_param(u, key);
	*out = def;
	if (!v)
		return HF_OK;
	char *end;
	long x = strtol(v, &end, 10);
	if (!*v || *end || x < lo || x > hi)
		return hf__err(err, HF_EINVAL, "invalid url '%s': %s must be %d..%d", url, key, lo, hi);
	*out = (int)x;
	return HF_OK;
}

static int rl_open(hf_store *store, const char *url, const hf_options *opt, void **out,
                   hf_error *err)
{
	*out = NULL;
	struct rl_engine *e = calloc(1, sizeof(*e));
	if (!e)
		return hf__err_code(err, HF_ENOMEM);
	e->store = store;
	e->opt = *opt; /* no clock: leases are measured here on the monotonic clock */
	pthread_mutex_init(&e->lock, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&e->cond, &ca);
	pthread_condattr_destroy(&ca);
	int rc = hf__redis_url_parse(url, "redlock", &e->url, err);
	if (rc != HF_OK)
		goto fail;
	static const char *known[] = {"timeout_ms", "retry_delay_ms", "retry_jitter_ms", "fence_prefix"};
	for (size_t i = 0; i < e->url.n_params; i++) {
		bool ok = false;
		for (size_t k = 0; k < 4; k++)
			ok |= strcmp(e->url.keys[i], known[k]) == 0;
		if (!ok) {
			rc = hf__err(err, HF_EINVAL,
			             "invalid url '%s': unknown parameter '%s' (known: timeout_ms, "
			             "retry_delay_ms, retry_jitter_ms, fence_prefix)",
			             url, e->url.keys[i]);
			goto fail;
		}
	}
	if ((rc = param_int(&e->url, "timeout_ms", 50, 1, 60000, url, &e->node_timeout_ms, err)) ||
	    (rc = param_int(&e->url, "retry_delay_ms", 200, 0, 60000, url, &e->retry_delay_ms, err)) ||
	    (rc = param_int(&e->url, "retry_jitter_ms", 100, 0, 60000, url, &e->retry_jitter_ms, err)))
		goto fail;
	const char *fp = hf__redis_url_param(&e->url, "fence_prefix");
	snprintf(e->fence_prefix, sizeof(e->fence_prefix), "%.120s", fp ? fp : "hf:fence:");
	e->n = e->url.n_nodes;
	e->quorum = e->n / 2 + 1;
	char seed[17];
	if (hf__random_hex(seed, 8) != HF_OK) {
		rc = hf__err(err, HF_EINTERNAL, "the OS has no randomness to give");
		goto fail;
	}
	e->rand_state = strtoull(seed, NULL, 16);
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	int prc = pthread_create(&e->thread, NULL, worker_main, e);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (prc != 0) {
		rc = hf__err(err, HF_EINTERNAL, "cannot start the redlock thread: %s", strerror(prc));
		goto fail;
	}
	e->started = true;
	*out = e;
	return HF_OK;
fail:
	engine_free(e);
	return rc;
}

static void rl_close(void *engine)
{
	struct rl_engine *e = engine;
	pthread_mutex_lock(&e->lock);
	e->closing = true;
	pthread_cond_signal(&e->cond);
	pthread_mutex_unlock(&e->lock);
	if (e->started)
		pthread_join(e->thread, NULL);
	engine_free(e);
}

static void rl_submit(void *engine, struct hf__call *call)
{
	struct rl_engine *e = engine;
	hf__mailbox_post_call(&e->mailbox, &e->lock, &e->cond, call);
}

static void rl_cancel(void *engine, uint64_t call_id)
{
	struct rl_engine *e = engine;
	hf__mailbox_post_cancel(&e->mailbox, &e->lock, &e->cond, call_id);
}

const struct hf__engine_ops hf__engine_redlock = {
	.scheme = "redlock",
	.open = rl_open,
	.close = rl_close,
	.submit = rl_submit,
	.cancel = rl_cancel,
	.tick = NULL, /* leases are Redis's PX and this process's monotonic clock */
};
