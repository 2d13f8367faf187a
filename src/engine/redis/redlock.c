/*
 * redlock.c — the redlock:// engine: plain locks (one resource, capacity 1, or an exclusive
 * hold of any capacity — holdfastd's lock route) by the Redlock algorithm over N independent
 * Redis masters, on the wire format of the other Redlock
 * clients (key = the name, value = the 32-hex token, SET NX PX, owner-checked Lua for release
 * and extend). One worker thread with one blocking hiredis connection per master, running the
 * calls it is given in waves: each round of a wave is written to every master for all its
 * calls before any reply is read (pipelined, the masters in parallel); waits are retries with
 * delay + jitter scheduled by that thread, never sleeps of the caller.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
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
/* The acquire on one master: SET NX PX, as every Redlock client does, and where it was set the
 * fence counter raised by one inside the same lock, its new value the answer — one round trip.
 * -1: not set. Where a majority answers the same highest value no further round is needed. */
static const char ACQUIRE_LUA[] =
    "if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then "
    "return redis.call('INCR', KEYS[2]) end return -1";
/* Fences: raise the counter to max(counter, v) — only where we still hold the key, so it
 * happens inside our lock on that master. */
static const char FENCE_RAISE_LUA[] =
    "if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end "
    "local c = tonumber(redis.call('GET', KEYS[2]) or '0') "
    "if c < tonumber(ARGV[2]) then redis.call('SET', KEYS[2], ARGV[2]) end return 1";

/* Sent by EVALSHA once a master has them (SCRIPT LOAD on connect); as EVAL with the text when
 * one answers NOSCRIPT (its scripts were flushed), which caches them there again. */
enum rl_script { RL_S_RELEASE, RL_S_EXTEND, RL_S_PERSIST, RL_S_ACQUIRE, RL_S_FENCE, RL_N_SCRIPTS };
static const char *const SCRIPTS[RL_N_SCRIPTS] = {RELEASE_LUA, EXTEND_LUA, PERSIST_LUA,
                                                  ACQUIRE_LUA, FENCE_RAISE_LUA};

struct rl_hold {
	char id[HF_ID_LEN + 1];
	char token[HF_TOKEN_LEN + 1];
	char *name;
	char *owner;
	hf_mode mode;
	int64_t units; /* what the hold shows it took: the whole capacity when exclusive */
	hf_hold_state state;
	int64_t created, expires, ended, fence;
	struct rl_hold *hnext;      /* the next in its bucket of the index by id */
	struct rl_hold *prev, *next; /* in the live list or, once ended, the retention queue */
};

/* This process's holds: found by id through a chained hash index (ids are random hex), and
 * kept on two lists so that no pass walks the ended ones — kept 24 h by default, they are
 * most of them under load: the live (tentative, confirmed) and the ended in the order they
 * ended, dropped from the front once their retention is over. */
struct rl_list {
	struct rl_hold *head, *tail;
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
	char sha[RL_N_SCRIPTS][41]; /* the scripts' SHA-1s, "" until a master has told them */

	pthread_t thread;
	bool started;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct hf__mailbox mailbox; /* guarded by lock */
	bool closing;

	/* worker only */
	struct rl_hold **index; /* n_buckets chains */
	size_t n_buckets, n_holds;
	struct rl_list live, ended;
	struct rl_item *wave;  /* WAVE_MAX: the calls of the wave being gathered */
	size_t n_wave;
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

/* SCRIPT LOAD of every script on a new connection, so that calls can go as EVALSHA. A
 * failure here costs nothing but the text: the calls then go as EVAL (NOSCRIPT fallback). */
static void load_scripts(struct rl_engine *e, redisContext *c)
{
	for (int s = 0; s < RL_N_SCRIPTS; s++)
		redisAppendCommand(c, "SCRIPT LOAD %s", SCRIPTS[s]);
	for (int s = 0; s < RL_N_SCRIPTS; s++) {
		void *rv = NULL;
		if (redisGetReply(c, &rv) != REDIS_OK)
			return; /* the next command on it fails and drops it */
		redisReply *r = rv;
		if (r->type == REDIS_REPLY_STRING && r->len == 40)
			memcpy(e->sha[s], r->str, 41);
		freeReplyObject(r);
	}
}

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
	} else
		load_scripts(e, e->c[i]);
	return e->c[i];
}

/* ---- rounds: one command per item, to every master at once ----
 * A round sends each item's command to every master — all of them, to all masters, before any
 * reply is read — so that a round costs the slowest master's round trip, not the sum of the
 * masters', and a batch of calls shares it (pipelined on each master's one connection). */

enum rl_kind { RL_ACQUIRE, RL_RELEASE, RL_EXTEND, RL_CONFIRM, RL_EXISTS };

struct rl_item {
	struct hf__call *call;
	enum rl_kind kind;
	int64_t deadline;         /* RL_ACQUIRE: the end of its wait (monotonic ms) */
	struct rl_hold *h;        /* RL_RELEASE, RL_EXTEND, RL_CONFIRM */
	const char *key;          /* the Redlock key */
	char token[HF_TOKEN_LEN + 1]; /* RL_ACQUIRE: this attempt's value; else the hold's */
	char arg[24];             /* ttl (SET PX, PEXPIRE) or the fence raised to */
	char fkey[HF_NAME_MAX + 160];
	int argc; /* this round's command: 0 = none */
	int script;    /* which of SCRIPTS it runs, or -1 */
	bool noscript; /* the master being read answered NOSCRIPT: send it again as EVAL */
	const char *argv[7];
	size_t argl[7];
	/* what the masters answered */
	size_t got, reached, raised;
	int64_t max;                            /* RL_ACQUIRE: the fence, once a majority has it */
	int64_t counter[HF__REDIS_MAX_NODES];  /* RL_ACQUIRE: the fence counter where we set the key */
	bool answered[HF__REDIS_MAX_NODES];
	bool fence_next;    /* RL_ACQUIRE: a majority granted in time and has its counter at max */
	bool release_after; /* undo on every master in the last round, then complete */
	int64_t validity;
};

typedef void rl_reply_fn(struct rl_engine *e, struct rl_item *it, size_t master, redisReply *r);

static void drop_node(struct rl_engine *e, size_t i, const char *why)
{
	snprintf(e->node_error[i], sizeof(e->node_error[i]), "%.110s", why);
	redisFree(e->c[i]);
	e->c[i] = NULL;
	e->next_connect[i] = mono();
}

/* The items that master `m` answered NOSCRIPT, sent again as EVAL with the text, one at a time
 * (rare: after a SCRIPT FLUSH; a wave's calls are on distinct keys, so their order is free). */
static void round_again(struct rl_engine *e, size_t m, struct rl_item *items, size_t n,
                        rl_reply_fn *on)
{
	for (size_t k = 0; k < n; k++) {
		struct rl_item *it = &items[k];
		if (!it->noscript)
			continue;
		it->noscript = false;
		const char *argv[8] = {"EVAL", SCRIPTS[it->script]};
		size_t argl[8] = {4, strlen(SCRIPTS[it->script])};
		for (int a = 2; a < it->argc; a++) {
			argv[a] = it->argv[a];
			argl[a] = it->argl[a];
		}
		redisReply *r = e->c[m] ? redisCommandArgv(e->c[m], it->argc, argv, argl) : NULL;
		if (!r && e->c[m])
			drop_node(e, m, e->c[m]->errstr[0] ? e->c[m]->errstr : "no reply");
		on(e, it, m, r);
		if (r)
			freeReplyObject(r);
	}
}

/* Sends every item's command (argc > 0) to every master and hands each answer to `on` (NULL
 * when that master did not answer within the per-node timeout: its connection is dropped). */
static void round_run(struct rl_engine *e, struct rl_item *items, size_t n, rl_reply_fn *on)
{
	bool sent[HF__REDIS_MAX_NODES] = {0};
	for (size_t m = 0; m < e->n; m++) {
		redisContext *c = node(e, m);
		if (!c)
			continue;
		for (size_t k = 0; k < n; k++)
			if (items[k].argc)
				redisAppendCommandArgv(c, items[k].argc, items[k].argv, items[k].argl);
		int done = 0;
		while (!done)
			if (redisBufferWrite(c, &done) != REDIS_OK) {
				drop_node(e, m, c->errstr[0] ? c->errstr : "write failed");
				break;
			}
		sent[m] = done;
	}
	for (size_t m = 0; m < e->n; m++) {
		bool again = false;
		for (size_t k = 0; k < n; k++) {
			if (!items[k].argc)
				continue;
			void *rv = NULL;
			if (sent[m] && e->c[m] && redisGetReply(e->c[m], &rv) != REDIS_OK) {
				drop_node(e, m, e->c[m]->errstr[0] ? e->c[m]->errstr : "no reply");
				rv = NULL;
			}
			redisReply *r = rv;
			items[k].noscript = r && r->type == REDIS_REPLY_ERROR && items[k].script >= 0 &&
			                    strncmp(r->str, "NOSCRIPT", 8) == 0;
			again |= items[k].noscript;
			if (!items[k].noscript)
				on(e, &items[k], m, rv);
			if (rv)
				freeReplyObject(rv);
		}
		if (again)
			round_again(e, m, items, n, on);
	}
}

static void cmd_set(struct rl_item *it, int argc, ...)
{
	va_list ap;
	va_start(ap, argc);
	it->argc = argc;
	it->script = -1;
	for (int i = 0; i < argc; i++) {
		it->argv[i] = va_arg(ap, const char *);
		it->argl[i] = strlen(it->argv[i]);
	}
	va_end(ap);
}

/* EVALSHA (EVAL until a master gave the SHA-1) of one of SCRIPTS with one or two keys. */
static void cmd_eval(const struct rl_engine *e, struct rl_item *it, enum rl_script sc,
                     const char *k1, const char *k2, const char *a1, const char *a2)
{
	const char *op = e->sha[sc][0] ? "EVALSHA" : "EVAL";
	const char *body = e->sha[sc][0] ? e->sha[sc] : SCRIPTS[sc];
	if (k2 && a2)
		cmd_set(it, 7, op, body, "2", k1, k2, a1, a2);
	else if (k2)
		cmd_set(it, 6, op, body, "2", k1, k2, a1);
	else if (a2)
		cmd_set(it, 6, op, body, "1", k1, a1, a2);
	else
		cmd_set(it, 5, op, body, "1", k1, a1);
	it->script = (int)sc;
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

static void list_push(struct rl_list *l, struct rl_hold *h)
{
	h->next = NULL;
	h->prev = l->tail;
	if (l->tail)
		l->tail->next = h;
	else
		l->head = h;
	l->tail = h;
}

static void list_unlink(struct rl_list *l, struct rl_hold *h)
{
	if (h->prev)
		h->prev->next = h->next;
	else
		l->head = h->next;
	if (h->next)
		h->next->prev = h->prev;
	else
		l->tail = h->prev;
	h->prev = h->next = NULL;
}

static size_t bucket_of(const struct rl_engine *e, const char *id)
{
	return (size_t)(hf__hash_str(id) & (e->n_buckets - 1));
}

/* Doubles the index when it holds more than two holds a bucket. False on no memory (the
 * index stays as it was: longer chains, still correct). */
static bool index_grow(struct rl_engine *e)
{
	size_t n = e->n_buckets ? e->n_buckets * 2 : 256;
	struct rl_hold **b = calloc(n, sizeof(*b));
	if (!b)
		return false;
	struct rl_hold **old = e->index;
	size_t n_old = e->n_buckets;
	e->index = b;
	e->n_buckets = n;
	for (size_t i = 0; i < n_old; i++)
		for (struct rl_hold *h = old[i], *nx; h; h = nx) {
			nx = h->hnext;
			size_t k = bucket_of(e, h->id);
			h->hnext = b[k];
			b[k] = h;
		}
	free(old);
	return true;
}

static bool hold_add(struct rl_engine *e, struct rl_hold *h)
{
	if (e->n_holds >= 2 * e->n_buckets && !index_grow(e) && !e->n_buckets)
		return false;
	size_t k = bucket_of(e, h->id);
	h->hnext = e->index[k];
	e->index[k] = h;
	e->n_holds++;
	list_push(&e->live, h);
	return true;
}

static void hold_drop(struct rl_engine *e, struct rl_hold *h)
{
	for (struct rl_hold **p = &e->index[bucket_of(e, h->id)]; *p; p = &(*p)->hnext)
		if (*p == h) {
			*p = h->hnext;
			break;
		}
	e->n_holds--;
	list_unlink(&e->ended, h);
	hold_free(h);
}

/* A live hold that was released or lapsed: to the retention queue. */
static void hold_ended(struct rl_engine *e, struct rl_hold *h, hf_hold_state state, int64_t at)
{
	if (h->state == HF_HOLD_RELEASED || h->state == HF_HOLD_EXPIRED)
		return; /* queued already */
	h->state = state;
	h->ended = at;
	list_unlink(&e->live, h);
	list_push(&e->ended, h);
}

/* Lazy expiry of the live records and retention of the ended ones. A hold that lapsed is
 * queued when seen, so the queue is in ended order but for lapses seen late: those stay
 * past their retention until the ones before them go, which only keeps them longer. */
static void holds_sweep(struct rl_engine *e)
{
	int64_t now = hf_now_ms();
	for (struct rl_hold *h = e->live.head, *nx; h; h = nx) {
		nx = h->next;
		if (h->state == HF_HOLD_TENTATIVE && h->expires <= now)
			hold_ended(e, h, HF_HOLD_EXPIRED, h->expires);
	}
	while (e->ended.head && e->ended.head->ended + e->opt.hold_retention_ms <= now)
		hold_drop(e, e->ended.head);
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
	if (!e->n_buckets)
		return NULL;
	for (struct rl_hold *h = e->index[bucket_of(e, id)]; h; h = h->hnext)
		if (strcmp(h->id, id) == 0)
			return h;
	return NULL;
}

/* ---- one round's answers ---- */

static void on_first(struct rl_engine *e, struct rl_item *it, size_t m, redisReply *r)
{
	if (!r)
		return;
	if (r->type == REDIS_REPLY_ERROR) {
		snprintf(e->node_error[m], sizeof(e->node_error[m]), "%.110s", r->str);
		return;
	}
	if (it->kind == RL_EXISTS && r->type != REDIS_REPLY_INTEGER)
		return;
	it->answered[m] = true;
	it->reached++;
	if (it->kind == RL_ACQUIRE) {
		if (r->type == REDIS_REPLY_INTEGER && r->integer >= 0) {
			it->got++;
			it->counter[m] = r->integer;
			if (r->integer > it->max)
				it->max = r->integer;
		}
	} else /* EXISTS: the key is there; the scripts: it was ours and they acted */
		it->got += r->type == REDIS_REPLY_INTEGER && r->integer > 0;
}

static void on_fence_raise(struct rl_engine *e, struct rl_item *it, size_t m, redisReply *r)
{
	(void)e;
	(void)m;
	if (r && r->type == REDIS_REPLY_INTEGER && r->integer == 1)
		it->raised++;
}

static void on_ignore(struct rl_engine *e, struct rl_item *it, size_t m, redisReply *r)
{
	(void)e;
	(void)it;
	(void)m;
	(void)r;
}

/* The owner-checked delete on every master, for one hold (the rare paths). */
static void release_everywhere(struct rl_engine *e, const char *key, const char *token)
{
	struct rl_item it;
	memset(&it, 0, sizeof(it));
	it.kind = RL_RELEASE;
	cmd_eval(e, &it, RL_S_RELEASE, key, NULL, token, NULL);
	round_run(e, &it, 1, on_ignore);
}

static int64_t jitter(struct rl_engine *e)
{
	if (e->retry_jitter_ms <= 0)
		return 0;
	e->rand_state = e->rand_state * 6364136223846793005ULL + 1442695040888963407ULL;
	return (int64_t)((e->rand_state >> 33) % (uint64_t)(e->retry_jitter_ms + 1));
}

enum attempt { GOT, BUSY, UNREACHABLE };

/* The end of one try of an acquire that did not get the lock: completes it, or schedules the
 * next try before `deadline` (a waiting acquire). */
static void acquire_outcome(struct rl_engine *e, struct hf__call *call, enum attempt r,
                            const char *why, int64_t deadline)
{
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

/* ---- waves: the calls of a batch, pipelined ----
 * Calls are taken in the order they came and run together, a wave at a time: every round of a
 * wave (SET NX PX with the fence read, or the call's one script; then the fence raise; the undo
 * of attempts that failed) is one round trip to all masters at once for all its calls. A wave never
 * holds two calls on one key, so running its calls together is running them one after another;
 * a call on a key already in the wave, or one that reads this process's records (get_hold,
 * list_holds), first runs the wave before it. */

#define WAVE_MAX 256

static bool wave_has_key(const struct rl_engine *e, const char *key)
{
	for (size_t i = 0; i < e->n_wave; i++)
		if (strcmp(e->wave[i].key, key) == 0)
			return true;
	return false;
}

static void wave_run(struct rl_engine *e);

/* Makes room for a call on `key`: runs the wave if it has that key or is full. */
static void wave_room(struct rl_engine *e, const char *key)
{
	if (e->n_wave == WAVE_MAX || (key && wave_has_key(e, key)))
		wave_run(e);
}

static struct rl_item *wave_put(struct rl_engine *e, struct hf__call *call, enum rl_kind kind,
                                const char *key, struct rl_hold *h)
{
	struct rl_item *it = &e->wave[e->n_wave++];
	memset(it, 0, sizeof(*it));
	it->call = call;
	it->kind = kind;
	it->key = key;
	it->h = h;
	if (h)
		memcpy(it->token, h->token, sizeof(it->token));
	return it;
}

/* The first round's command of each call. False if an acquire's token cannot be made. */
static bool first_cmd(const struct rl_engine *e, struct rl_item *it)
{
	switch (it->kind) {
	case RL_ACQUIRE:
		if (hf__random_hex(it->token, HF_TOKEN_LEN / 2) != HF_OK) {
			memset(it->token, 0, sizeof(it->token));
			return false;
		}
		snprintf(it->arg, sizeof(it->arg), "%lld", (long long)it->call->req.acquire.ttl_ms);
		snprintf(it->fkey, sizeof(it->fkey), "%s%s", e->fence_prefix, it->key);
		cmd_eval(e, it, RL_S_ACQUIRE, it->key, it->fkey, it->token, it->arg);
		break;
	case RL_RELEASE:
		cmd_eval(e, it, RL_S_RELEASE, it->key, NULL, it->token, NULL);
		break;
	case RL_EXTEND:
		snprintf(it->arg, sizeof(it->arg), "%lld", (long long)it->call->req.ttl_ms);
		cmd_eval(e, it, RL_S_EXTEND, it->key, NULL, it->token, it->arg);
		break;
	case RL_CONFIRM:
		cmd_eval(e, it, RL_S_PERSIST, it->key, NULL, it->token, NULL);
		break;
	case RL_EXISTS:
		cmd_set(it, 2, "EXISTS", it->key);
		break;
	}
	return true;
}

/* Redlock's allowance for the masters' clock drift: 1 % of the lease, plus 2 ms. */
static int64_t drift_of(int64_t ttl_ms)
{
	return ttl_ms / 100 + 2;
}

/* Redlock's validity: the lease less the time the rounds took and the clock drift. */
static int64_t validity_of(int64_t ttl_ms, int64_t start)
{
	return ttl_ms - (mono() - start) - drift_of(ttl_ms);
}

/* When the lock stops being ours: the validity counted from the end of the rounds, that is
 * the wave's start (no key was set before it) plus the lease, less the drift. Not the start
 * plus the validity, which counts the rounds' time twice and ended holds early. */
static int64_t valid_until(int64_t wall_start, int64_t ttl_ms)
{
	return wall_start + ttl_ms - drift_of(ttl_ms);
}

static void acquire_done(struct rl_engine *e, struct rl_item *it, int64_t wall)
{
	struct hf__call *call = it->call;
	const hf_acquire_req *a = &call->req.acquire;
	char why[600];
	if (!it->release_after) {
		struct rl_hold *h = calloc(1, sizeof(*h));
		if (!h || !(h->name = hf__strdup(it->key)) || !(h->owner = hf__strdup(a->owner)) ||
		    hf__random_hex(h->id, HF_ID_LEN / 2) != HF_OK || !hold_add(e, h)) {
			if (h)
				hold_free(h);
			release_everywhere(e, it->key, it->token);
			acquire_outcome(e, call, UNREACHABLE, "out of memory", it->deadline);
			return;
		}
		memcpy(h->token, it->token, sizeof(h->token));
		h->mode = a->mode;
		h->units = a->mode == HF_MODE_EXCLUSIVE ? a->claims[0].capacity : 1;
		h->state = HF_HOLD_TENTATIVE;
		h->created = wall;
		h->expires = valid_until(wall, a->ttl_ms); /* what Redlock promises, not the full ttl */
		h->fence = it->max;
		hold_reply(call, h, true);
		return;
	}
	if (!it->token[0]) {
		acquire_outcome(e, call, UNREACHABLE, "the OS has no randomness to give", it->deadline);
		return;
	}
	if (it->reached < e->quorum) {
		char errs[400];
		describe_errors(e, it->answered, errs, sizeof(errs));
		snprintf(why, sizeof(why),
		         "redlock: only %zu of %zu masters answered, a majority of %zu is needed (%.300s)",
		         it->reached, e->n, e->quorum, errs);
		acquire_outcome(e, call, UNREACHABLE, why, it->deadline);
		return;
	}
	if (it->got >= e->quorum)
		snprintf(why, sizeof(why), "redlock: a majority took too long; the lock's validity ran out");
	else
		snprintf(why, sizeof(why), "the lock '%.100s' is held (%zu of %zu masters granted, %zu needed)",
		         it->key, it->got, e->n, e->quorum);
	acquire_outcome(e, call, BUSY, why, it->deadline);
}

static void item_done(struct rl_engine *e, struct rl_item *it, int64_t wall)
{
	struct hf__call *call = it->call;
	struct rl_hold *h = it->h;
	switch (it->kind) {
	case RL_ACQUIRE:
		acquire_done(e, it, wall);
		return;
	case RL_RELEASE:
		/* Deleted where the value is still ours; a master that is down lets it lapse by PX. */
		hold_ended(e, h, HF_HOLD_RELEASED, hf_now_ms());
		hold_reply(call, h, false);
		return;
	case RL_EXTEND:
		if (!it->release_after) {
			h->expires = valid_until(wall, call->req.ttl_ms);
			hold_reply(call, h, false);
			return;
		}
		/* Lost: a majority no longer has our value (or is unreachable). Say so at once. */
		hold_ended(e, h, HF_HOLD_EXPIRED, wall);
		if (it->reached < e->quorum)
			fail(call, HF_EENGINE,
			     "redlock: only %zu of %zu masters answered the extension; hold '%s' is lost",
			     it->reached, e->n, h->id);
		else
			fail(call, HF_EENDED, "hold '%s' has expired: only %zu of %zu masters still had it",
			     h->id, it->got, e->n);
		return;
	case RL_CONFIRM:
		if (it->got < e->quorum) {
			fail(call, it->reached < e->quorum ? HF_EENGINE : HF_EENDED,
			     "redlock: only %zu of %zu masters confirmed hold '%s'", it->got, e->n, h->id);
			return;
		}
		h->state = HF_HOLD_CONFIRMED;
		h->expires = 0;
		hold_reply(call, h, false);
		return;
	case RL_EXISTS: {
		/* A lock "resource": held when a majority of masters has the key. */
		if (it->reached < e->quorum) {
			fail(call, HF_EENGINE, "redlock: only %zu of %zu masters answered", it->reached, e->n);
			return;
		}
		if (it->got < e->quorum) {
			fail(call, HF_ENORESOURCE, "lock '%s' is not held on a majority of masters",
			     call->req.name);
			return;
		}
		hf_resource view = {.name = (char *)call->req.name, .capacity = 1, .held = 1, .holds = 1};
		hf_resource *copy = malloc(sizeof(*copy));
		if (!copy || hf__resource_copy(copy, &view) != HF_OK) {
			free(copy);
			fail(call, HF_ENOMEM, "out of memory");
			return;
		}
		call->reply->resource = copy;
		hf__call_done(call);
		return;
	}
	}
}

static void wave_run(struct rl_engine *e)
{
	struct rl_item *its = e->wave;
	size_t n = e->n_wave;
	if (n == 0)
		return;
	int64_t start = mono(), wall = hf_now_ms();
	/* 1: SET NX PX and the fence counter raised by one for acquires, the one script of the others */
	for (size_t i = 0; i < n; i++)
		if (!first_cmd(e, &its[i])) {
			its[i].argc = 0;
			its[i].release_after = true; /* reported as no master answering */
		}
	round_run(e, its, n, on_first);
	/* 2: where a majority granted in time but fewer than a majority show the highest counter
	 * (the counters went apart: a master was down or another acquire took a minority), that
	 * highest written to every master where we still hold the key — all while we hold it
	 * (docs/redis.md says what it guarantees and what not). Counters that agree, the usual
	 * case, need no second round. */
	bool any = false;
	for (size_t i = 0; i < n; i++) {
		struct rl_item *it = &its[i];
		it->argc = 0;
		if (it->kind == RL_ACQUIRE && !it->release_after) {
			if (it->got >= e->quorum && validity_of(it->call->req.acquire.ttl_ms, start) > 0) {
				it->fence_next = true;
				for (size_t m = 0; m < e->n; m++)
					it->raised += it->counter[m] == it->max;
				if (it->raised >= e->quorum)
					continue;
				it->raised = 0;
				snprintf(it->arg, sizeof(it->arg), "%lld", (long long)it->max);
				cmd_eval(e, it, RL_S_FENCE, it->key, it->fkey, it->token, it->arg);
				any = true;
			}
		} else if (it->kind == RL_EXTEND) {
			it->validity = validity_of(it->call->req.ttl_ms, start);
			it->release_after = !(it->got >= e->quorum && it->validity > 0);
		}
	}
	if (any)
		round_run(e, its, n, on_fence_raise);
	/* 3: undo the attempts that failed and the extensions that were lost, everywhere */
	any = false;
	for (size_t i = 0; i < n; i++) {
		struct rl_item *it = &its[i];
		it->argc = 0;
		if (it->kind == RL_ACQUIRE && !it->release_after) {
			it->validity = validity_of(it->call->req.acquire.ttl_ms, start);
			it->release_after = !(it->fence_next && it->raised >= e->quorum && it->validity > 0);
		}
		if (it->release_after && it->token[0]) {
			cmd_eval(e, it, RL_S_RELEASE, it->key, NULL, it->token, NULL);
			any = true;
		}
	}
	if (any)
		round_run(e, its, n, on_ignore);
	e->n_wave = 0; /* before completing: an OOM path may run a round of its own */
	for (size_t i = 0; i < n; i++)
		item_done(e, &its[i], wall);
}

/* ---- taking calls ---- */

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
	wave_room(e, c->name);
	wave_put(e, call, RL_ACQUIRE, c->name, NULL)->deadline = mono() + a->wait_ms;
}

/* A try of a waiting acquire whose retry is due. */
static void retry_acquire(struct rl_engine *e, struct hf__call *call, int64_t deadline)
{
	const char *key = call->req.acquire.claims[0].name;
	wave_room(e, key);
	wave_put(e, call, RL_ACQUIRE, key, NULL)->deadline = deadline;
}

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

/* Extend, confirm, release: checked against this process's record once every earlier call on
 * its key has run (the wave is run first if it has that key). */
static void op_hold(struct rl_engine *e, struct hf__call *call)
{
	struct rl_hold *known = find_hold(e, call->req.hold_id);
	wave_room(e, known ? known->name : NULL);
	struct rl_hold *h = owned(e, call);
	if (!h)
		return;
	switch (call->req.op) {
	case HF_OP_EXTEND:
		if (h->state == HF_HOLD_CONFIRMED) {
			hold_reply(call, h, false);
			return;
		}
		wave_put(e, call, RL_EXTEND, h->name, h);
		return;
	case HF_OP_CONFIRM:
		if (h->state != HF_HOLD_TENTATIVE) {
			hold_reply(call, h, false);
			return;
		}
		wave_put(e, call, RL_CONFIRM, h->name, h);
		return;
	default:
		wave_put(e, call, RL_RELEASE, h->name, h);
		return;
	}
}

/* The hold with the least id after `after` that the filters of `q` select, or NULL. */
static struct rl_hold *next_listed(struct rl_engine *e, const hf_request *q, const char *after)
{
	struct rl_hold *best = NULL;
	for (int l = 0; l < 2; l++)
		for (struct rl_hold *h = l ? e->ended.head : e->live.head; h; h = h->next) {
			if (after && strcmp(h->id, after) <= 0)
				continue;
			if ((q->owner && strcmp(h->owner, q->owner) != 0) ||
			    (q->resource && strcmp(h->name, q->resource) != 0) ||
			    (q->state >= 0 && (int)h->state != q->state))
				continue;
			if (!best || strcmp(h->id, best->id) < 0)
				best = h;
		}
	return best;
}

static void op_list_holds(struct rl_engine *e, struct hf__call *call)
{
	const hf_request *q = &call->req;
	hf_reply *r = call->reply;
	r->holds = calloc((q->limit < e->n_holds ? q->limit : e->n_holds) + 1, sizeof(*r->holds));
	if (!r->holds)
		return fail(call, HF_ENOMEM, "out of memory");
	/* Ids ascending after the cursor: a selection sort is fine for a process's own holds. */
	const char *after = q->cursor;
	while (r->n_holds <= q->limit) {
		struct rl_hold *best = next_listed(e, q, after);
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
	switch (call->req.op) {
	case HF_OP_ACQUIRE:
		return op_acquire(e, call);
	case HF_OP_RELEASE:
		/* A lock here is a token-valued key on independent servers: without the token a
		 * delete could not tell this hold from a newer one on the same key. */
		if (call->req.operator_release)
			return fail(call, HF_ENOTSUP, "redlock:// releases with the hold's token only: "
			                              "no operator release");
		return op_hold(e, call);
	case HF_OP_EXTEND:
	case HF_OP_CONFIRM:
		return op_hold(e, call);
	case HF_OP_GET_HOLD: {
		wave_run(e); /* this process's records, as the calls before it left them */
		struct rl_hold *h = find_hold(e, call->req.hold_id);
		if (!h)
			return fail(call, HF_ENOHOLD, "hold '%s' does not exist", call->req.hold_id);
		hold_reply(call, h, false);
		return;
	}
	case HF_OP_LIST_HOLDS:
		wave_run(e);
		return op_list_holds(e, call);
	case HF_OP_GET_RESOURCE:
		wave_room(e, call->req.name);
		wave_put(e, call, RL_EXISTS, call->req.name, NULL);
		return;
	case HF_OP_PUT_RESOURCE:
	case HF_OP_DELETE_RESOURCE:
	case HF_OP_LIST_RESOURCES:
		return fail(call, HF_ENOTSUP, "redlock:// has plain locks only: no declared resources");
	case HF_OP_READ_EVENTS:
		return fail(call, HF_ENOTSUP, "redlock:// keeps no event log");
	case HF_OP_LIST_WAITERS:
		return fail(call, HF_ENOTSUP,
		            "redlock:// has no wait queues: a waiting acquire retries until its wait ends");
	case HF_OP_SAGA_TYPE_PUT:
	case HF_OP_SAGA_TYPE_GET:
	case HF_OP_SAGA_TYPE_LIST:
	case HF_OP_SAGA_SAVE:
	case HF_OP_SAGA_GET:
	case HF_OP_SAGA_LIST:
		return fail(call, HF_ENOTSUP, "redlock:// keeps no sagas (they run on file: stores)");
	}
	fail(call, HF_EINVAL, "unknown operation %d", (int)call->req.op);
}

/* ---- the worker ---- */

static void *worker_main(void *arg)
{
	struct rl_engine *e = arg;
	hf__thread_name("hf-redlock");
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
		holds_sweep(e);
		while (inbox) {
			struct hf__call *call = inbox;
			inbox = call->next;
			handle(e, call);
		}
		wave_run(e); /* before the list below: a wait that must retry is on it then */
		/* The retries that are due run in waves of their own (taken off the list first: a try
		 * that fails again puts a new entry on it, for later). */
		int64_t now = mono();
		struct rl_pending *due = NULL;
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
				p->next = due;
				due = p;
				continue;
			}
			pp = &p->next;
		}
		struct rl_pending *rev = NULL; /* back to the list's order */
		while (due) {
			struct rl_pending *p = due;
			due = p->next;
			p->next = rev;
			rev = p;
		}
		due = rev;
		while (due) {
			struct rl_pending *p = due;
			due = p->next;
			retry_acquire(e, p->call, p->deadline);
			free(p);
		}
		wave_run(e);
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
	for (int l = 0; l < 2; l++)
		for (struct rl_hold *h = l ? e->ended.head : e->live.head, *nx; h; h = nx) {
			nx = h->next;
			hold_free(h);
		}
	free(e->index);
	hf__mailbox_release(&e->mailbox);
	free(e->wave);
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
	if (!(e->wave = calloc(WAVE_MAX, sizeof(*e->wave)))) {
		free(e);
		return hf__err_code(err, HF_ENOMEM);
	}
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
