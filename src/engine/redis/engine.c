/*
 * engine.c — the redis:// engine: every rule runs inside Redis as holds.lua (FCALL of its
 * function library on Redis 7; EVALSHA of its script form before that; EVAL of the script text
 * when the server has lost either); this file owns the worker thread that pipelines those calls over one blocking
 * hiredis connection, the parked waits (woken by pub/sub on a second connection, with a slow
 * safety re-check that also renews their leases), the expiry timer, event retention passes
 * (retention.c), reconnects and close.
 */
#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "core/codec.h"
#include "core/core.h"
#include "core/retention.h"
#include "engine/engine.h"
#include "engine/redis/redis.h"

#define RECHECK_MS 1000        /* the safety re-check of parked waits and event reads */
#define WAITER_LEASE_MS 30000  /* default ?wait_lease_ms: a parked wait whose engine stops
                                * renewing it is dropped when its lease runs out */
#define WAITER_LEASE_MIN_MS (2 * RECHECK_MS) /* renewed every RECHECK_MS: leave a margin */
#define CONNECT_TIMEOUT_MS 2000
#define IO_TIMEOUT_MS 15000
#define RECONNECT_MAX_MS 500
#define BATCH_MAX 512 /* calls pipelined in one round trip */
#define REDIRECT_PASSES 10 /* MOVED/ASK/TRYAGAIN/CLUSTERDOWN: sends of one batch at most */

/* A parked acquire. Lives in the worker thread only. */
struct waiter {
	struct hf__call *call;
	char wid[64];
	int64_t deadline;  /* monotonic ms */
	bool parked;       /* Redis has its record */
	bool woken;        /* pub/sub said its outcome is ready */
	bool busy;         /* a collect or unpark for it is in the current round */
	int end_code;      /* 0, or why it must end: HF_ETIMEDOUT, HF_ECANCELED, HF_ECLOSED */
	struct waiter *next;
};

/* A parked event read. */
struct evwaiter {
	struct hf__call *call;
	int64_t deadline;
	bool busy;
	bool final; /* the read in flight completes it whatever it finds */
	struct evwaiter *next;
};

enum job_kind {
	JOB_CALL,
	JOB_COLLECT,
	JOB_UNPARK,
	JOB_EVREAD,
	JOB_SWEEP,
	JOB_TRIM_INFO, /* retention: what the plan needs (holds.lua trim_info) */
	JOB_TRIM,      /* retention: XTRIM up to the plan's seq */
};

struct job {
	enum job_kind kind;
	struct hf__call *call;     /* JOB_CALL */
	struct waiter *waiter;     /* JOB_CALL for a waiting acquire, JOB_UNPARK */
	struct evwaiter *ev;       /* JOB_EVREAD */
	struct waiter **collected; /* JOB_COLLECT: the waiters asked about */
	size_t n_collected;
	int argc;
	char **argv;
	size_t *argl;
	bool retry;    /* NOSCRIPT: send again as EVAL */
	int again;     /* a cluster redirect (enum redir): send again, see run_jobs */
	bool inflight; /* sent, answer not read yet */
	struct hf__redis_node ask; /* REDIR_MOVED, REDIR_ASK: the node named */
	int ask_slot;              /* REDIR_ASK: the slot */
	bool ask_now;              /* REDIR_ASK: to ask in this pass, after its replies */
	char again_why[160];       /* the last redirect error, for the message if we give up */
};

struct redis_engine {
	hf_store *store;
	hf_options opt;
	struct hf__redis_url url;
	char where[300];
	char prefix[200];
	char seq_key[220];
	char ch_wake[220], ch_events[220];
	char instance[17];
	uint64_t next_wid;
	bool plain; /* ?locks=plain: resources also keep a Redlock-format key (holds.lua) */
	int64_t wait_lease_ms; /* ?wait_lease_ms: the lease of a parked wait, renewed by collect */
	bool cluster; /* the server said cluster_enabled:1 (INFO cluster) at open */
	/* The node the command and pub/sub connections talk to: the URL's, until a MOVED names
	 * another. Written by the worker under `lock` (the subscriber reads it). */
	struct hf__redis_node cur;

	pthread_t worker, subber;
	bool worker_started, sub_started;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	/* guarded by lock */
	struct hf__mailbox mailbox;
	char **wakes;
	size_t n_wakes, cap_wakes;
	bool events_pending, recheck_all, closing;
	int sub_fd;

	/* worker thread only */
	redisContext *c;
	bool fcall;     /* c has the library (FUNCTION LOAD worked): calls are FCALL */
	bool need_load; /* c answered "Function not found": load it again before the next send */
	char sha[41];   /* the script form's, when !fcall */
	int64_t next_connect, backoff;
	char last_error[200];
	struct waiter *waiters;
	size_t n_waiters;
	struct evwaiter *evwaiters;
	int64_t due_at, next_recheck;
	/* Event retention: a pass is trim_info, then (if the plan says so) trim. */
	struct hf__trim_policy trim;
	int64_t trim_at;      /* monotonic ms: the next pass */
	bool trim_busy;       /* a retention job is in flight */
	bool trim_go;         /* the plan says trim: send it now */
	struct hf__trim_plan trim_plan;
	uint64_t trim_logged; /* the checkpoint last reported as holding the floor */
};

/* call->engine_data of a call cancelled before the worker took it: if it would park, it ends
 * at once with HF_ECANCELED (as if it had parked and been cancelled). */
static char cancel_marker;

static int64_t mono(void)
{
	return hf__redis_mono_ms();
}

/* ---- completing calls ---- */

static void call_fail(struct hf__call *call, int code, const char *fmt, ...) HF__PRINTF(3, 4);
static void call_fail(struct hf__call *call, int code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	call->reply->error.code = code;
	vsnprintf(call->reply->error.message, sizeof(call->reply->error.message), fmt, ap);
	va_end(ap);
	hf__call_done(call);
}

/* ---- replies: the script's JSON into hf_* items ---- */

static int64_t jint(const json_t *o, const char *k)
{
	json_t *v = json_object_get(o, k);
	if (json_is_integer(v))
		return (int64_t)json_integer_value(v);
	if (json_is_real(v))
		return (int64_t)json_real_value(v);
	return 0;
}

static const char *jstr(const json_t *o, const char *k)
{
	json_t *v = json_object_get(o, k);
	return json_is_string(v) ? json_string_value(v) : NULL;
}

/* cjson writes an empty Lua table as {}: accept it as an empty array. */
static size_t jarr_size(const json_t *a)
{
	return json_is_array(a) ? json_array_size(a) : 0;
}

/* The script writes holds, resources and events in the codec's form (src/core/codec.c), but
 * a resource's meta and an event's data as their JSON text: Lua's cjson would reformat them.
 * Turns obj[key] from that text into the object the codec reads (left alone if absent). */
static int text_to_object(json_t *obj, const char *key)
{
	json_t *v = json_object_get(obj, key);
	if (!json_is_string(v))
		return HF_OK;
	json_t *parsed = json_loads(json_string_value(v), 0, NULL);
	if (!json_is_object(parsed)) {
		json_decref(parsed);
		return HF_EPROTO;
	}
	return json_object_set_new(obj, key, parsed) == 0 ? HF_OK : HF_ENOMEM;
}

static int resource_from(json_t *j, hf_resource *out, hf_error *err)
{
	memset(out, 0, sizeof(*out));
	int rc = text_to_object(j, "meta");
	if (rc != HF_OK)
		return hf__err(err, rc, "the redis script answered a resource whose meta is not an object");
	return hf__resource_from_json(j, out, err);
}

static int event_from(json_t *j, hf_event *out, hf_error *err)
{
	memset(out, 0, sizeof(*out));
	int rc = text_to_object(j, "data");
	if (rc != HF_OK)
		return hf__err(err, rc, "the redis script answered an event whose data is not an object");
	return hf__event_from_json(j, out, err);
}

/* Fills call->reply from the script's answer `j`; returns the reply's error code. */
static int fill_reply(struct hf__call *call, json_t *j)
{
	hf_reply *r = call->reply;
	hf_error err = {0};
	json_t *e = json_object_get(j, "e");
	if (e) {
		r->error.code = (int)json_integer_value(e);
		if (r->error.code == HF_ETRIMMED) /* worded in one place for every engine */
			return hf__reply_trimmed(r, (uint64_t)jint(j, "upto"));
		snprintf(r->error.message, sizeof(r->error.message), "%s",
		         jstr(j, "m") ? jstr(j, "m") : hf_strerror(r->error.code));
		return r->error.code;
	}
	int rc = HF_OK;
	json_t *v;
	if ((v = json_object_get(j, "hold"))) {
		if (!(r->hold = calloc(1, sizeof(*r->hold))))
			rc = HF_ENOMEM;
		else if ((rc = hf__hold_from_json(v, r->hold, &err)) != HF_OK) {
			free(r->hold);
			r->hold = NULL;
		}
	} else if ((v = json_object_get(j, "resource"))) {
		if (!(r->resource = calloc(1, sizeof(*r->resource))))
			rc = HF_ENOMEM;
		else if ((rc = resource_from(v, r->resource, &err)) != HF_OK) {
			free(r->resource);
			r->resource = NULL;
		}
	} else if ((v = json_object_get(j, "resources"))) {
		size_t n = jarr_size(v);
		r->more = json_is_true(json_object_get(j, "more"));
		if (!(r->resources = calloc(n + 1, sizeof(*r->resources))))
			rc = HF_ENOMEM;
		for (size_t i = 0; rc == HF_OK && i < n; i++)
			if ((rc = resource_from(json_array_get(v, i), &r->resources[i], &err)) == HF_OK)
				r->n_resources = i + 1;
	} else if ((v = json_object_get(j, "holds"))) {
		size_t n = jarr_size(v);
		r->more = json_is_true(json_object_get(j, "more"));
		if (!(r->holds = calloc(n + 1, sizeof(*r->holds))))
			rc = HF_ENOMEM;
		for (size_t i = 0; rc == HF_OK && i < n; i++)
			if ((rc = hf__hold_from_json(json_array_get(v, i), &r->holds[i], &err)) == HF_OK)
				r->n_holds = i + 1;
	} else if ((v = json_object_get(j, "waiters"))) {
		size_t n = jarr_size(v); /* cjson writes an empty list as {}: size 0 */
		r->more = json_is_true(json_object_get(j, "more"));
		if (!(r->waiters = calloc(n + 1, sizeof(*r->waiters))))
			rc = HF_ENOMEM;
		for (size_t i = 0; rc == HF_OK && i < n; i++)
			if ((rc = hf__waiter_from_json(json_array_get(v, i), &r->waiters[i], &err)) == HF_OK)
				r->n_waiters = i + 1;
	} else if ((v = json_object_get(j, "events"))) {
		size_t n = jarr_size(v);
		r->last_seq = (uint64_t)jint(j, "last");
		if (!(r->events = calloc(n + 1, sizeof(*r->events))))
			rc = HF_ENOMEM;
		for (size_t i = 0; rc == HF_OK && i < n; i++)
			if ((rc = event_from(json_array_get(v, i), &r->events[i], &err)) == HF_OK)
				r->n_events = i + 1;
	}
	if (rc != HF_OK) {
		r->error.code = rc;
		if (rc == HF_ENOMEM)
			snprintf(r->error.message, sizeof(r->error.message), "out of memory");
		else
			snprintf(r->error.message, sizeof(r->error.message),
			         "unexpected reply from the redis script: %.200s",
			         err.message[0] ? err.message : "no details");
	}
	return rc;
}

/* ---- building script calls ---- */

/* A growing argv; every string is copied. */
struct args {
	int n, cap;
	char **v;
	size_t *l;
	bool failed;
};

static void arg_addn(struct args *a, const char *s, size_t len)
{
	if (a->failed)
		return;
	if (a->n == a->cap) {
		int cap = a->cap ? a->cap * 2 : 32;
		char **v = realloc(a->v, (size_t)cap * sizeof(*v));
		if (v)
			a->v = v;
		size_t *l = realloc(a->l, (size_t)cap * sizeof(*l));
		if (l)
			a->l = l;
		if (!v || !l) {
			a->failed = true;
			return;
		}
		a->cap = cap;
	}
	char *copy = malloc(len + 1);
	if (!copy) {
		a->failed = true;
		return;
	}
	memcpy(copy, s, len);
	copy[len] = '\0';
	a->v[a->n] = copy;
	a->l[a->n] = len;
	a->n++;
}

static void arg_add(struct args *a, const char *s)
{
	arg_addn(a, s ? s : "", s ? strlen(s) : 0);
}

/* v in decimal into buf (24 bytes at least), NUL-terminated; its length. Every call sends a
 * dozen integers: snprintf's were a tenth of the engine's CPU (perf). */
static size_t fmt_ll(char *buf, long long v)
{
	char tmp[24];
	unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
	size_t n = 0, o = 0;
	do {
		tmp[n++] = (char)('0' + u % 10);
		u /= 10;
	} while (u);
	if (v < 0)
		buf[o++] = '-';
	while (n)
		buf[o++] = tmp[--n];
	buf[o] = '\0';
	return o;
}

static void arg_int(struct args *a, long long v)
{
	char buf[24];
	size_t n = fmt_ll(buf, v);
	arg_addn(a, buf, n);
}

static void args_free(int n, char **v, size_t *l)
{
	for (int i = 0; i < n; i++)
		free(v[i]);
	free(v);
	free(l);
}

/* EVALSHA sha 1 <seq key> prefix op retention... kind — the common head of every call. */
static void args_head(struct redis_engine *eng, struct args *a, const char *op)
{
	arg_add(a, eng->fcall ? "FCALL" : "EVALSHA");
	arg_add(a, eng->fcall ? hf__redis_function : eng->sha);
	arg_add(a, "1");
	arg_add(a, eng->seq_key);
	arg_add(a, eng->prefix);
	arg_add(a, op);
	arg_int(a, eng->opt.hold_retention_ms);
	arg_int(a, eng->opt.idempotency_retention_ms);
	arg_int(a, (long long)eng->opt.max_holds);
	arg_int(a, (long long)eng->opt.max_resources);
	/* the store's kind ('1' locks=plain, 'c' a Cluster node, '0' plain Redis) and its db: the
	 * script keeps per-store state in the library between calls (holds.lua, retain) */
	char kind[32];
	kind[0] = eng->plain ? '1' : eng->cluster ? 'c' : '0';
	arg_addn(a, kind, 1 + fmt_ll(kind + 1, eng->url.db));
}

static struct job *job_new(enum job_kind kind, struct args *a)
{
	struct job *j = calloc(1, sizeof(*j));
	if (!j || a->failed) {
		free(j);
		args_free(a->n, a->v, a->l);
		return NULL;
	}
	j->kind = kind;
	j->argc = a->n;
	j->argv = a->v;
	j->argl = a->l;
	return j;
}

static void job_free(struct job *j)
{
	args_free(j->argc, j->argv, j->argl);
	free(j->collected);
	free(j);
}

static int cmp_claim(const void *x, const void *y)
{
	const hf_claim *const *a = x, *const *b = y;
	return strcmp((*a)->name, (*b)->name);
}

/* The job for a new call; NULL with the call completed if it cannot be built. */
static struct job *call_job(struct redis_engine *eng, struct hf__call *call)
{
	const hf_request *q = &call->req;
	struct args a = {0};
	struct waiter *w = NULL;
	switch (q->op) {
	case HF_OP_ACQUIRE: {
		const hf_acquire_req *r = &q->acquire;
		char id[HF_ID_LEN + 1], token[HF_TOKEN_LEN + 1];
		if (hf__random_id_token(id, token) != HF_OK) {
			call_fail(call, HF_EINTERNAL, "the OS has no randomness to give");
			return NULL;
		}
		char *fp = r->idempotency_key ? hf__acquire_fingerprint(r) : NULL;
		if (r->idempotency_key && !fp) {
			call_fail(call, HF_ENOMEM, "out of memory");
			return NULL;
		}
		if (r->wait_ms > 0) {
			w = calloc(1, sizeof(*w));
			if (!w) {
				free(fp);
				call_fail(call, HF_ENOMEM, "out of memory");
				return NULL;
			}
			w->call = call;
			w->deadline = mono() + r->wait_ms;
			if (call->engine_data == &cancel_marker)
				w->end_code = HF_ECANCELED;
			snprintf(w->wid, sizeof(w->wid), "%s:%llu", eng->instance,
			         (unsigned long long)++eng->next_wid);
		}
		const hf_claim *order[HF_CLAIMS_MAX];
		for (size_t i = 0; i < r->n_claims; i++)
			order[i] = &r->claims[i];
		if (!r->any)
			qsort(order, r->n_claims, sizeof(order[0]), cmp_claim);
		args_head(eng, &a, "acquire");
		arg_add(&a, r->owner);
		arg_int(&a, r->ttl_ms);
		arg_int(&a, r->wait_ms); /* > 0: may park; the queue shows its deadline */
		arg_add(&a, eng->n_waiters < eng->opt.max_waiters ? "1" : "0");
		arg_int(&a, (int)r->mode);
		arg_add(&a, r->any ? "1" : "0");
		arg_add(&a, r->idempotency_key);
		arg_add(&a, fp);
		arg_add(&a, id);
		arg_add(&a, token);
		arg_add(&a, w ? w->wid : "");
		arg_int(&a, eng->wait_lease_ms);
		arg_int(&a, (long long)r->n_claims);
		for (size_t i = 0; i < r->n_claims; i++) {
			arg_add(&a, order[i]->name);
			arg_int(&a, order[i]->units);
			arg_int(&a, order[i]->capacity);
		}
		free(fp);
		break;
	}
	case HF_OP_EXTEND:
	case HF_OP_CONFIRM:
	case HF_OP_RELEASE:
		args_head(eng, &a, q->op == HF_OP_EXTEND ? "extend" : q->op == HF_OP_CONFIRM ? "confirm"
		                                                                              : "release");
		arg_add(&a, q->hold_id);
		arg_add(&a, q->token);
		arg_int(&a, q->ttl_ms);
		arg_add(&a, q->op == HF_OP_RELEASE && q->operator_release ? "1" : "0");
		break;
	case HF_OP_LIST_WAITERS:
		args_head(eng, &a, "list_waiters");
		arg_add(&a, q->name);
		arg_int(&a, hf__waiter_cursor(q->cursor));
		arg_int(&a, (long long)q->limit);
		break;
	case HF_OP_GET_HOLD:
		args_head(eng, &a, "get_hold");
		arg_add(&a, q->hold_id);
		break;
	case HF_OP_LIST_HOLDS:
		args_head(eng, &a, "list_holds");
		arg_add(&a, q->cursor);
		arg_int(&a, (long long)q->limit);
		arg_add(&a, q->owner);
		arg_add(&a, q->resource);
		arg_int(&a, q->state);
		break;
	case HF_OP_PUT_RESOURCE:
		args_head(eng, &a, "put_resource");
		arg_add(&a, q->name);
		arg_int(&a, q->capacity);
		arg_add(&a, q->meta ? "1" : "0");
		arg_add(&a, q->meta);
		arg_int(&a, q->if_version);
		break;
	case HF_OP_GET_RESOURCE:
		args_head(eng, &a, "get_resource");
		arg_add(&a, q->name);
		break;
	case HF_OP_DELETE_RESOURCE:
		args_head(eng, &a, "delete_resource");
		arg_add(&a, q->name);
		arg_int(&a, q->if_version);
		break;
	case HF_OP_LIST_RESOURCES:
		args_head(eng, &a, "list_resources");
		arg_add(&a, q->cursor);
		arg_int(&a, (long long)q->limit);
		break;
	case HF_OP_READ_EVENTS:
		args_head(eng, &a, "read_events");
		arg_int(&a, (long long)q->after);
		arg_int(&a, (long long)q->limit);
		break;
	default:
		call_fail(call, HF_EINVAL, "unknown operation %d", (int)q->op);
		return NULL;
	}
	struct job *j = job_new(JOB_CALL, &a);
	if (!j) {
		free(w);
		call_fail(call, HF_ENOMEM, "out of memory");
		return NULL;
	}
	j->call = call;
	if (w) {
		j->waiter = w;
		w->busy = true;
		w->next = eng->waiters;
		eng->waiters = w;
		eng->n_waiters++;
	}
	return j;
}

static void waiter_remove(struct redis_engine *eng, struct waiter *w)
{
	for (struct waiter **p = &eng->waiters; *p; p = &(*p)->next)
		if (*p == w) {
			*p = w->next;
			eng->n_waiters--;
			break;
		}
	free(w);
}

static void evwaiter_remove(struct redis_engine *eng, struct evwaiter *e)
{
	for (struct evwaiter **p = &eng->evwaiters; *p; p = &(*p)->next)
		if (*p == e) {
			*p = e->next;
			break;
		}
	free(e);
}

static struct job *unpark_job(struct redis_engine *eng, struct waiter *w)
{
	struct args a = {0};
	args_head(eng, &a, "unpark");
	arg_add(&a, w->wid);
	arg_int(&a, w->end_code);
	arg_add(&a, w->end_code == HF_ETIMEDOUT   ? "the wait ended before the units were free"
	            : w->end_code == HF_ECANCELED ? "the wait was cancelled"
	                                          : "store is closing");
	struct job *j = job_new(JOB_UNPARK, &a);
	if (j) {
		j->waiter = w;
		w->busy = true;
	}
	return j;
}

static struct job *evread_job(struct redis_engine *eng, struct evwaiter *e)
{
	struct args a = {0};
	args_head(eng, &a, "read_events");
	arg_int(&a, (long long)e->call->req.after);
	arg_int(&a, (long long)e->call->req.limit);
	struct job *j = job_new(JOB_EVREAD, &a);
	if (j) {
		j->ev = e;
		e->busy = true;
	}
	return j;
}

/* A retention job: trim_info (what the plan needs), or trim up to the plan's seq. */
static struct job *trim_job(struct redis_engine *eng, bool info)
{
	struct args a = {0};
	args_head(eng, &a, info ? "trim_info" : "trim");
	if (info) {
		arg_int(&a, eng->trim.keep_ms);
		arg_int(&a, hf__redis_trim_batch());
	} else {
		arg_int(&a, (long long)eng->trim_plan.upto);
	}
	return job_new(info ? JOB_TRIM_INFO : JOB_TRIM, &a);
}

/* The answer of a retention job: the plan (then trim at once), or what was trimmed. */
static void trim_answered(struct redis_engine *eng, enum job_kind kind, const json_t *j)
{
	char store[400];
	snprintf(store, sizeof(store), "%.250s/%d prefix %.100s", eng->where, eng->url.db,
	         eng->prefix);
	eng->trim_busy = false;
	if (kind == JOB_TRIM_INFO && hf__redis_trim_plan(&eng->trim, j, &eng->trim_plan)) {
		eng->trim_go = true;
		return;
	}
	hf__trim_log("redis", store, &eng->trim, &eng->trim_plan,
	             kind == JOB_TRIM ? (uint64_t)jint(j, "deleted") : 0, &eng->trim_logged);
}

/* ---- the connection ---- */

static void disconnect(struct redis_engine *eng, const char *why)
{
	/* `why` may point into the context: copy it before freeing that. */
	snprintf(eng->last_error, sizeof(eng->last_error), "%.190s", why);
	if (eng->c)
		redisFree(eng->c);
	eng->c = NULL;
	eng->next_connect = mono();
	eng->backoff = 0;
}

/* Points both connections at `node` (a MOVED's, or back to the URL's): the worker's is
 * dropped by the caller, the subscriber's is shut down so that it reconnects there. */
static void set_node(struct redis_engine *eng, const struct hf__redis_node *node)
{
	pthread_mutex_lock(&eng->lock);
	eng->cur = *node;
	if (eng->sub_fd >= 0)
		shutdown(eng->sub_fd, SHUT_RDWR);
	pthread_mutex_unlock(&eng->lock);
	snprintf(eng->where, sizeof(eng->where), "%.250s:%d", node->host, node->port);
}

/* Loads holds.lua on `c`: as a function library where the server has FUNCTION (Redis 7), so
 * that its closures are built once per load instead of once per call (most of a call's cost
 * in Redis, docs/redis.md); else as a script (SCRIPT LOAD, for EVALSHA). Sets eng->fcall and
 * eng->sha; false with the reason in `why` when neither loads. */
static bool load_code(struct redis_engine *eng, redisContext *c, char *why, size_t n)
{
	const char *largv[] = {"FUNCTION", "LOAD", "REPLACE", hf__redis_library};
	size_t largl[] = {8, 4, 7, hf__redis_library_len};
	redisReply *r = redisCommandArgv(c, 4, largv, largl);
	eng->need_load = false;
	if (r && r->type == REDIS_REPLY_STRING) {
		freeReplyObject(r);
		eng->fcall = true;
		return true;
	}
	if (r)
		freeReplyObject(r);
	else {
		snprintf(why, n, "FUNCTION LOAD failed: %s", c->errstr);
		return false;
	}
	/* No FUNCTION (Redis 6), or not allowed: the script form. */
	eng->fcall = false;
	const char *argv[] = {"SCRIPT", "LOAD", hf__redis_script};
	size_t argl[] = {6, 4, hf__redis_script_len};
	r = redisCommandArgv(c, 3, argv, argl);
	if (r && r->type == REDIS_REPLY_STRING && r->len == 40) {
		memcpy(eng->sha, r->str, 41);
		freeReplyObject(r);
		return true;
	}
	snprintf(why, n, "SCRIPT LOAD failed: %s", r && r->type == REDIS_REPLY_ERROR ? r->str : c->errstr);
	if (r)
		freeReplyObject(r);
	return false;
}

/* Connects (and loads the script) unless connected or backing off. */
static bool ensure_connected(struct redis_engine *eng)
{
	if (eng->c)
		return true;
	int64_t now = mono();
	if (now < eng->next_connect)
		return false;
	char why[200];
	redisContext *c = hf__redis_connect(&eng->cur, eng->url.password, eng->url.db,
	                                    CONNECT_TIMEOUT_MS, IO_TIMEOUT_MS, why, sizeof(why));
	if (!c && (eng->cur.port != eng->url.nodes[0].port ||
	           strcmp(eng->cur.host, eng->url.nodes[0].host) != 0))
		set_node(eng, &eng->url.nodes[0]); /* a node a MOVED named is gone: ask the URL's */
	if (c) {
		if (load_code(eng, c, why, sizeof(why))) {
			eng->c = c;
			eng->backoff = 0;
			return true;
		}
		redisFree(c);
	}
	snprintf(eng->last_error, sizeof(eng->last_error), "%.190s", why);
	eng->backoff = eng->backoff ? eng->backoff * 2 : 50;
	if (eng->backoff > RECONNECT_MAX_MS)
		eng->backoff = RECONNECT_MAX_MS;
	eng->next_connect = now + eng->backoff;
	return false;
}

/* ---- handling answers ---- */

/* The script's clock and next due moment (0: none) as of its answer; now 0: not said. */
static void set_due_at(struct redis_engine *eng, int64_t now, int64_t due)
{
	if (now <= 0)
		return;
	eng->due_at = due > 0 ? mono() + (due > now ? due - now : 0) + 1 : INT64_MAX;
}

static void set_due(struct redis_engine *eng, const json_t *j)
{
	set_due_at(eng, jint(j, "now"), jint(j, "due"));
}

/* A waiting acquire's outcome `j` (a hold or an error) completes it. */
static void waiter_complete(struct redis_engine *eng, struct waiter *w, json_t *j)
{
	fill_reply(w->call, j);
	hf__call_done(w->call);
	waiter_remove(eng, w);
}

static void call_finished(struct redis_engine *eng, struct job *jb, int rc);

static void handle_call(struct redis_engine *eng, struct job *jb, json_t *j)
{
	struct hf__call *call = jb->call;
	struct waiter *w = jb->waiter;
	const char *parked = jstr(j, "parked");
	if (w && parked) {
		w->parked = true;
		w->busy = false;
		return; /* completed later: collect or unpark */
	}
	if (call->req.op == HF_OP_READ_EVENTS && call->req.wait_ms > 0 && !json_object_get(j, "e") &&
	    jarr_size(json_object_get(j, "events")) == 0) {
		/* Nothing yet: park it until an event is published, a re-check or its deadline. */
		struct evwaiter *e = calloc(1, sizeof(*e));
		if (e && call->engine_data == &cancel_marker) {
			free(e);
			call_fail(call, HF_ECANCELED, "the wait was cancelled");
			return;
		}
		if (e) {
			e->call = call;
			e->deadline = mono() + call->req.wait_ms;
			e->next = eng->evwaiters;
			eng->evwaiters = e;
			return;
		}
	}
	int rc = fill_reply(call, j);
	if (rc == HF_ELIMIT && strcmp(call->reply->error.message, "max_waiters") == 0)
		snprintf(call->reply->error.message, sizeof(call->reply->error.message),
		         "%zu requests are waiting, the limit is %zu", eng->n_waiters - 1,
		         eng->opt.max_waiters);
	call_finished(eng, jb, rc);
}

/* A call whose reply is filled in (rc: its outcome) is complete. */
static void call_finished(struct redis_engine *eng, struct job *jb, int rc)
{
	struct hf__call *call = jb->call;
	if (jb->waiter)
		waiter_remove(eng, jb->waiter);
	hf_op op = call->req.op;
	hf__call_done(call); /* the call is gone after this */
	/* A change: parked event reads may have something now. */
	if (rc == HF_OK && op != HF_OP_GET_HOLD && op != HF_OP_GET_RESOURCE &&
	    op != HF_OP_LIST_HOLDS && op != HF_OP_LIST_RESOURCES && op != HF_OP_READ_EVENTS &&
	    eng->evwaiters) {
		pthread_mutex_lock(&eng->lock);
		eng->events_pending = true;
		pthread_mutex_unlock(&eng->lock);
	}
}

static void handle_evread(struct redis_engine *eng, struct evwaiter *e, json_t *j)
{
	e->busy = false;
	json_t *events = json_object_get(j, "events");
	if (jarr_size(events) == 0 && !e->final && !json_object_get(j, "e"))
		return; /* still nothing: keep waiting */
	fill_reply(e->call, j);
	hf__call_done(e->call);
	evwaiter_remove(eng, e);
}

static void handle_collect(struct redis_engine *eng, struct job *jb, json_t *j)
{
	json_t *list = json_object_get(j, "list");
	for (size_t i = 0; i < jb->n_collected; i++)
		jb->collected[i]->busy = false;
	for (size_t i = 0; i < jarr_size(list); i++) {
		json_t *o = json_array_get(list, i);
		const char *wid = jstr(o, "w");
		for (size_t k = 0; wid && k < jb->n_collected; k++) {
			struct waiter *w = jb->collected[k];
			if (w && strcmp(w->wid, wid) == 0) {
				jb->collected[k] = NULL;
				waiter_complete(eng, w, o);
				break;
			}
		}
	}
}

/* The job could not get an answer: its connection is gone (or the reply was garbage). */
static void job_failed(struct redis_engine *eng, struct job *jb, int code, const char *why)
{
	switch (jb->kind) {
	case JOB_CALL:
		if (jb->waiter)
			waiter_remove(eng, jb->waiter);
		call_fail(jb->call, code, "%s", why);
		break;
	case JOB_UNPARK:
		/* Its record lapses with its lease; the caller learns the reason it asked for. */
		call_fail(jb->waiter->call, jb->waiter->end_code, "%s",
		          jb->waiter->end_code == HF_ETIMEDOUT   ? "the wait ended before the units were free"
		          : jb->waiter->end_code == HF_ECANCELED ? "the wait was cancelled"
		                                                 : "store is closing");
		waiter_remove(eng, jb->waiter);
		break;
	case JOB_COLLECT:
		for (size_t i = 0; i < jb->n_collected; i++)
			if (jb->collected[i])
				jb->collected[i]->busy = false;
		break;
	case JOB_EVREAD:
		jb->ev->busy = false;
		if (jb->ev->final) {
			call_fail(jb->ev->call, code, "%s", why);
			evwaiter_remove(eng, jb->ev);
		}
		break;
	case JOB_SWEEP:
		break;
	case JOB_TRIM_INFO:
	case JOB_TRIM:
		eng->trim_busy = false; /* the next pass, a second later, tries again */
		break;
	}
}

/* An element of a flat answer: its integer, or -1 if it is not one. */
static long long flat_int(const redisReply *r, size_t i)
{
	return i < r->elements && r->element[i]->type == REDIS_REPLY_INTEGER ? r->element[i]->integer
	                                                                     : -1;
}

static const char *flat_str(const redisReply *r, size_t i)
{
	return i < r->elements && r->element[i]->type == REDIS_REPLY_STRING ? r->element[i]->str : NULL;
}

/* The hold answer of the hot calls as holds.lua's hold_flat writes it (no JSON): the hold into
 * the call's reply. HF_OK, or HF_EPROTO / HF_ENOMEM with the reply's error set. */
static int flat_hold(struct hf__call *call, const redisReply *r)
{
	long long state = flat_int(r, 5), mode = flat_int(r, 6), n = flat_int(r, 11);
	const char *id = flat_str(r, 3), *owner = flat_str(r, 4), *token = flat_str(r, 10);
	hf_hold_part parts[8], *pv = parts;
	bool ok = id && strlen(id) == HF_ID_LEN && owner && token &&
	          (!token[0] || strlen(token) == HF_TOKEN_LEN) && state >= HF_HOLD_TENTATIVE &&
	          state <= HF_HOLD_EXPIRED && mode >= HF_MODE_UNITS && mode <= HF_MODE_EXCLUSIVE &&
	          flat_int(r, 7) >= 0 && flat_int(r, 8) >= 0 && flat_int(r, 9) >= 0 && n >= 1 &&
	          r->elements == 12 + 3 * (size_t)n;
	if (ok && n > 8 && !(pv = calloc((size_t)n, sizeof(*pv))))
		return hf__err_code(&call->reply->error, HF_ENOMEM);
	for (long long i = 0; ok && i < n; i++) {
		size_t b = 12 + 3 * (size_t)i;
		pv[i] = (hf_hold_part){.resource = (char *)flat_str(r, b), .units = flat_int(r, b + 1),
		                       .fence = flat_int(r, b + 2)};
		ok = pv[i].resource && pv[i].units >= 0 && pv[i].fence >= 0;
	}
	hf_hold view = {.owner = (char *)owner,
	                .state = (hf_hold_state)state,
	                .mode = (hf_mode)mode,
	                .created_at_ms = flat_int(r, 7),
	                .expires_at_ms = flat_int(r, 8),
	                .ended_at_ms = flat_int(r, 9),
	                .n_parts = (size_t)n,
	                .parts = pv};
	int rc = ok ? HF_OK : HF_EPROTO;
	if (ok) {
		memcpy(view.id, id, HF_ID_LEN + 1);
		memcpy(view.token, token, strlen(token) + 1);
		call->reply->hold = malloc(sizeof(*call->reply->hold));
		if (!call->reply->hold || hf__hold_copy(call->reply->hold, &view) != HF_OK) {
			free(call->reply->hold);
			call->reply->hold = NULL;
			rc = HF_ENOMEM;
		}
	}
	if (pv != parts)
		free(pv);
	if (rc == HF_EPROTO)
		return hf__err(&call->reply->error, HF_EPROTO,
		               "unexpected reply from the redis script: a hold that is not one");
	if (rc == HF_ENOMEM)
		return hf__err_code(&call->reply->error, HF_ENOMEM);
	return HF_OK;
}

/* A flat hold answer (an array whose first element is "hold"), for a call. */
static void handle_flat(struct redis_engine *eng, struct job *jb, const redisReply *r)
{
	set_due_at(eng, flat_int(r, 1), flat_int(r, 2));
	call_finished(eng, jb, flat_hold(jb->call, r));
}

static void handle_reply(struct redis_engine *eng, struct job *jb, redisReply *r)
{
	if (r->type == REDIS_REPLY_ERROR && strncmp(r->str, "NOSCRIPT", 8) == 0) {
		jb->retry = true;
		return;
	}
	if (r->type == REDIS_REPLY_ERROR && strcmp(r->str, "ERR Function not found") == 0) {
		/* FUNCTION FLUSH, or a restarted server without persistence: this call goes again
		 * as EVAL, and the library is loaded again before the next send. */
		jb->retry = true;
		eng->need_load = true;
		return;
	}
	if (r->type == REDIS_REPLY_ERROR && eng->cluster &&
	    (jb->again = hf__redis_redirect(r->str, &eng->cur, &jb->ask)) != HF__REDIR_NONE) {
		snprintf(jb->again_why, sizeof(jb->again_why), "%.150s", r->str);
		if (jb->again == HF__REDIR_ASK)
			jb->ask_slot = atoi(r->str + 4);
		return; /* not run: run_jobs sends it again */
	}
	if (r->type == REDIS_REPLY_ARRAY && jb->kind == JOB_CALL && r->elements > 0 &&
	    r->element[0]->type == REDIS_REPLY_STRING && strcmp(r->element[0]->str, "hold") == 0) {
		handle_flat(eng, jb, r);
		return;
	}
	if (r->type != REDIS_REPLY_STRING) {
		char why[300];
		snprintf(why, sizeof(why), "redis at %.80s answered: %.150s", eng->where,
		         r->type == REDIS_REPLY_ERROR ? r->str : "an unexpected reply type");
		job_failed(eng, jb, r->type == REDIS_REPLY_ERROR ? HF_EENGINE : HF_EPROTO, why);
		return;
	}
	json_error_t je;
	json_t *j = json_loadb(r->str, r->len, 0, &je);
	if (!json_is_object(j)) {
		json_decref(j);
		job_failed(eng, jb, HF_EPROTO, "the redis script answered something that is not JSON");
		return;
	}
	set_due(eng, j);
	switch (jb->kind) {
	case JOB_CALL:
		handle_call(eng, jb, j);
		break;
	case JOB_UNPARK:
		waiter_complete(eng, jb->waiter, j);
		break;
	case JOB_COLLECT:
		handle_collect(eng, jb, j);
		break;
	case JOB_EVREAD:
		handle_evread(eng, jb->ev, j);
		break;
	case JOB_SWEEP:
		break;
	case JOB_TRIM_INFO:
	case JOB_TRIM:
		trim_answered(eng, jb->kind, j);
		break;
	}
	json_decref(j);
}

/* Makes argv[0] and argv[1] of a job cmd and arg (the job fails when out of memory). */
static bool job_set_call(struct redis_engine *eng, struct job *jb, const char *cmd,
                         const char *arg, size_t arg_len)
{
	free(jb->argv[0]);
	free(jb->argv[1]);
	jb->argv[0] = hf__strdup(cmd);
	jb->argv[1] = hf__strdup(arg);
	jb->argl[0] = strlen(cmd);
	jb->argl[1] = arg_len;
	if (jb->argv[0] && jb->argv[1])
		return true;
	jb->retry = false;
	jb->again = HF__REDIR_NONE;
	job_failed(eng, jb, HF_ENOMEM, "out of memory");
	return false;
}

/* Points a job at the code the connection has: FCALL of the library or EVALSHA of the script
 * (one built before a reconnect may name the other); an EVAL stays one. */
static bool job_target(struct redis_engine *eng, struct job *jb)
{
	const char *cmd = eng->fcall ? "FCALL" : "EVALSHA";
	const char *name = eng->fcall ? hf__redis_function : eng->sha;
	if (strcmp(jb->argv[0], "EVAL") == 0 ||
	    (strcmp(jb->argv[0], cmd) == 0 && strcmp(jb->argv[1], name) == 0))
		return true;
	return job_set_call(eng, jb, cmd, name, strlen(name));
}

/* Makes a job an EVAL with the script's text (after NOSCRIPT, or for an ASK). */
static bool job_to_eval(struct redis_engine *eng, struct job *jb)
{
	if (strcmp(jb->argv[0], "EVAL") == 0)
		return true;
	return job_set_call(eng, jb, "EVAL", hf__redis_script, hf__redis_script_len);
}

/* ASK: ASKING and then the call, once, on the node named, over a connection of its own —
 * but only once every key of the slot has left this node (CLUSTER COUNTKEYSINSLOT is 0): a
 * script run there while some of the store's keys are still here would find them missing.
 * Until then it is TRYAGAIN. (Keys only leave a migrating slot: 0 stays 0.) */
static void run_ask(struct redis_engine *eng, struct job *jb)
{
	char why[300];
	jb->ask_now = false;
	redisReply *n = redisCommand(eng->c, "CLUSTER COUNTKEYSINSLOT %d", jb->ask_slot);
	bool moved_all = n && n->type == REDIS_REPLY_INTEGER && n->integer == 0;
	if (n && !moved_all)
		snprintf(jb->again_why, sizeof(jb->again_why),
		         "TRYAGAIN slot %d is being migrated: %lld keys are still on %.80s", jb->ask_slot,
		         n->type == REDIS_REPLY_INTEGER ? n->integer : -1LL, eng->where);
	if (n)
		freeReplyObject(n);
	if (!n) {
		snprintf(why, sizeof(why), "connection to redis at %.80s lost: %.150s; the outcome is unknown",
		         eng->where, eng->c->errstr[0] ? eng->c->errstr : "no reply");
		disconnect(eng, eng->c->errstr[0] ? eng->c->errstr : "connection lost");
		jb->again = HF__REDIR_NONE;
		job_failed(eng, jb, HF_EENGINE, why);
		return;
	}
	if (!moved_all) {
		jb->again = HF__REDIR_RETRY;
		return;
	}
	jb->again = HF__REDIR_NONE;
	if (!job_to_eval(eng, jb))
		return;
	redisContext *c = hf__redis_connect(&jb->ask, eng->url.password, eng->url.db,
	                                    CONNECT_TIMEOUT_MS, IO_TIMEOUT_MS, why, sizeof(why));
	if (!c) {
		char msg[400];
		snprintf(msg, sizeof(msg), "redis at %.80s asked us to ask %.80s:%d, which is unreachable: %.150s",
		         eng->where, jb->ask.host, jb->ask.port, why);
		job_failed(eng, jb, HF_EENGINE, msg);
		return;
	}
	const char *asking = "ASKING";
	size_t asking_len = 6;
	redisAppendCommandArgv(c, 1, &asking, &asking_len);
	redisAppendCommandArgv(c, jb->argc, (const char **)jb->argv, jb->argl);
	void *r1 = NULL, *r2 = NULL;
	if (redisGetReply(c, &r1) != REDIS_OK || !r1 || redisGetReply(c, &r2) != REDIS_OK || !r2) {
		snprintf(why, sizeof(why), "connection to redis at %.80s:%d lost after ASK: %.150s; the outcome is unknown",
		         jb->ask.host, jb->ask.port, c->errstr[0] ? c->errstr : "no reply");
		job_failed(eng, jb, HF_EENGINE, why);
	} else {
		handle_reply(eng, jb, r2);
		if (jb->again || jb->retry) { /* once only */
			snprintf(why, sizeof(why), "redis at %.80s:%d answered an ASK with: %.150s", jb->ask.host,
			         jb->ask.port, jb->again ? jb->again_why : "NOSCRIPT");
			jb->again = HF__REDIR_NONE;
			jb->retry = false;
			job_failed(eng, jb, HF_EENGINE, why);
		}
	}
	if (r1)
		freeReplyObject(r1);
	if (r2)
		freeReplyObject(r2);
	redisFree(c);
}

/* ---- batches: several calls in one script ----
 * Consecutive calls of one send that go by FCALL (or EVALSHA) are sent as one call of the
 * script's op "batch" (holds.lua, run): one clock reading, one sweep, one PUBLISH and one
 * FCALL for all of them. Not on a Cluster node (a redirect is then one call's, as before) and
 * not for a call sent as EVAL (after NOSCRIPT). GROUP_MAX bounds the time one script keeps
 * Redis from its other clients. */
#define GROUP_MAX 64
#define HEAD_ARGS 11 /* FCALL name 1 seq_key prefix op ... kind (args_head) */

struct send {
	size_t first, n; /* a range of the pass's job order */
	bool grouped;    /* sent as one "batch" call */
};

static bool groupable(const struct redis_engine *eng, const struct job *jb)
{
	return !eng->cluster && jb->argc >= HEAD_ARGS && strcmp(jb->argv[0], "EVAL") != 0;
}

/* Appends the calls jobs[order[first..first+n)] as one "batch" call. False on no memory. */
static bool append_group(struct redis_engine *eng, struct job **jobs, const size_t *order,
                         const struct send *sd)
{
	size_t total = HEAD_ARGS + 1;
	for (size_t k = 0; k < sd->n; k++)
		total += 2 + (size_t)(jobs[order[sd->first + k]]->argc - HEAD_ARGS);
	const char **argv = malloc(total * sizeof(*argv));
	size_t *argl = malloc(total * sizeof(*argl));
	char(*num)[24] = malloc((sd->n + 1) * sizeof(*num));
	if (!argv || !argl || !num) {
		free(argv);
		free(argl);
		free(num);
		return false;
	}
	const struct job *j0 = jobs[order[sd->first]];
	size_t a = 0;
	for (int i = 0; i < HEAD_ARGS; i++, a++) {
		argv[a] = i == 5 ? "batch" : j0->argv[i];
		argl[a] = i == 5 ? 5 : j0->argl[i];
	}
	argl[a] = fmt_ll(num[0], (long long)sd->n);
	argv[a++] = num[0];
	for (size_t k = 0; k < sd->n; k++) {
		const struct job *jb = jobs[order[sd->first + k]];
		argv[a] = jb->argv[5];
		argl[a++] = jb->argl[5];
		argl[a] = fmt_ll(num[k + 1], jb->argc - HEAD_ARGS);
		argv[a++] = num[k + 1];
		for (int i = HEAD_ARGS; i < jb->argc; i++, a++) {
			argv[a] = jb->argv[i];
			argl[a] = jb->argl[i];
		}
	}
	redisAppendCommandArgv(eng->c, (int)total, argv, argl);
	free(argv);
	free(argl);
	free(num);
	return true;
}

/* The answer of one send: a batch's array, one answer per call, or one answer for all of
 * them (an error before any ran: NOSCRIPT, a missing function, a refusal). */
static void send_answered(struct redis_engine *eng, struct job **jobs, const size_t *order,
                           const struct send *sd, redisReply *r)
{
	bool each = sd->grouped && r->type == REDIS_REPLY_ARRAY && r->elements == sd->n;
	for (size_t k = 0; k < sd->n; k++) {
		struct job *jb = jobs[order[sd->first + k]];
		jb->inflight = false;
		handle_reply(eng, jb, each ? r->element[k] : r);
	}
}

/* Whether run_jobs sends jobs[i] in this pass: all in the first, then those to send again;
 * one to ASK goes after this pass's replies (run_ask uses the connection). */
static bool to_send(const struct job *jb, int pass)
{
	return (pass == 0 || jb->retry || jb->again) && !jb->ask_now;
}

/* One pass of run_jobs: sends the jobs that are to go, pipelined and grouped, and handles the
 * answers. False, with `why`, when the connection was lost or memory ran out (the caller then
 * fails the jobs still in flight). */
static bool send_pass(struct redis_engine *eng, struct job **jobs, size_t n, int pass, char *why,
                      size_t why_n)
{
	size_t *order = malloc((n ? n : 1) * sizeof(*order));
	struct send *sends = malloc((n ? n : 1) * sizeof(*sends));
	if (!order || !sends) {
		free(order);
		free(sends);
		for (size_t i = 0; i < n; i++)
			jobs[i]->inflight |= to_send(jobs[i], pass);
		snprintf(why, why_n, "out of memory");
		return false;
	}
	size_t n_order = 0, n_sends = 0;
	for (size_t i = 0; i < n; i++) {
		struct job *jb = jobs[i];
		if (!to_send(jb, pass))
			continue;
		if (jb->retry && !job_to_eval(eng, jb))
			continue; /* NOSCRIPT: the same call as EVAL with the text, which caches it */
		if (!jb->retry && !job_target(eng, jb))
			continue;
		jb->retry = false;
		jb->again = HF__REDIR_NONE;
		jb->inflight = true;
		struct send *last = n_sends ? &sends[n_sends - 1] : NULL;
		if (last && last->n < GROUP_MAX && groupable(eng, jb) &&
		    groupable(eng, jobs[order[last->first]]))
			last->n++;
		else
			sends[n_sends++] = (struct send){n_order, 1, false};
		order[n_order++] = i;
	}
	for (size_t s = 0; s < n_sends; s++) {
		struct send *sd = &sends[s];
		sd->grouped = sd->n > 1 && append_group(eng, jobs, order, sd);
		for (size_t k = 0; !sd->grouped && k < sd->n; k++) {
			struct job *jb = jobs[order[sd->first + k]];
			redisAppendCommandArgv(eng->c, jb->argc, (const char **)jb->argv, jb->argl);
		}
	}
	bool ok = true;
	for (size_t s = 0; ok && s < n_sends; s++) {
		struct send *sd = &sends[s];
		for (size_t k = 0; ok && k < (sd->grouped ? 1 : sd->n); k++) {
			void *rv = NULL;
			if (redisGetReply(eng->c, &rv) != REDIS_OK || !rv) {
				snprintf(why, why_n, "connection to redis at %.80s lost: %.150s; the outcome is unknown",
				         eng->where, eng->c->errstr[0] ? eng->c->errstr : "no reply");
				disconnect(eng, eng->c->errstr[0] ? eng->c->errstr : "connection lost");
				ok = false;
				break;
			}
			struct send one = {sd->first + k, 1, false};
			send_answered(eng, jobs, order, sd->grouped ? sd : &one, rv);
			freeReplyObject(rv);
		}
	}
	free(order);
	free(sends);
	return ok;
}

/* Sends the jobs pipelined and handles every answer; jobs are freed. A job answered NOSCRIPT
 * is sent again as EVAL; on a Cluster, the redirects are followed here and only here: MOVED
 * moves both connections to the node named (the script is loaded there on connect) and sends
 * again; ASK is run_ask; TRYAGAIN and CLUSTERDOWN send again after a pause. At most
 * REDIRECT_PASSES sends, then the job fails with the last redirect. Every redirect is an
 * answer given before the command ran, so sending again never runs a call twice. */
static void run_jobs(struct redis_engine *eng, struct job **jobs, size_t n)
{
	char why[300];
	bool fail_all = false;
	for (int pass = 0; pass < REDIRECT_PASSES; pass++) {
		bool moved = false, later = false, any = pass == 0;
		struct hf__redis_node to = {{0}, 0};
		for (size_t i = 0; i < n; i++) {
			if (jobs[i]->again == HF__REDIR_MOVED && !moved) {
				moved = true;
				to = jobs[i]->ask;
			}
			later |= jobs[i]->again == HF__REDIR_RETRY;
			any |= jobs[i]->retry || jobs[i]->again;
			jobs[i]->ask_now = jobs[i]->again == HF__REDIR_ASK;
		}
		if (!any)
			break;
		if (moved) {
			disconnect(eng, "moved");
			set_node(eng, &to);
		} else if (later) {
			struct timespec ts = {0, (long)(pass < 4 ? 50 << pass : 500) * 1000000L};
			nanosleep(&ts, NULL);
		}
		if (!ensure_connected(eng)) {
			snprintf(why, sizeof(why), "redis at %.80s is unreachable: %.180s", eng->where,
			         eng->last_error);
			fail_all = pass == 0;
			goto fail_rest;
		}
		if (eng->need_load && !load_code(eng, eng->c, why, sizeof(why))) {
			/* the connection is unusable for calls: as if lost */
			disconnect(eng, why);
			snprintf(why, sizeof(why), "redis at %.80s is unreachable: %.180s", eng->where,
			         eng->last_error);
			fail_all = pass == 0;
			goto fail_rest;
		}
		if (!send_pass(eng, jobs, n, pass, why, sizeof(why)))
			goto fail_rest;
		for (size_t i = 0; i < n && eng->c; i++)
			if (jobs[i]->ask_now)
				run_ask(eng, jobs[i]);
		if (!eng->c) {
			snprintf(why, sizeof(why), "redis at %.80s is unreachable: %.180s", eng->where,
			         eng->last_error);
			goto fail_rest;
		}
	}
	for (size_t i = 0; i < n; i++) {
		if (jobs[i]->again) {
			snprintf(why, sizeof(why), "redis at %.80s: gave up after %d redirects: %.150s",
			         eng->where, REDIRECT_PASSES, jobs[i]->again_why);
			job_failed(eng, jobs[i], HF_EENGINE, why);
		} else if (jobs[i]->retry) {
			job_failed(eng, jobs[i], HF_EENGINE, "redis answered NOSCRIPT to EVAL");
		}
		job_free(jobs[i]);
	}
	return;
fail_rest:
	for (size_t i = 0; i < n; i++) {
		if (fail_all || jobs[i]->inflight || jobs[i]->retry || jobs[i]->again)
			job_failed(eng, jobs[i], HF_EENGINE, why);
		job_free(jobs[i]);
	}
}

/* ---- the worker ---- */

static struct waiter *waiter_by_wid(struct redis_engine *eng, const char *wid)
{
	for (struct waiter *w = eng->waiters; w; w = w->next)
		if (strcmp(w->wid, wid) == 0)
			return w;
	return NULL;
}

struct jobs {
	struct job **v;
	size_t n, cap;
};

static void jobs_add(struct redis_engine *eng, struct jobs *js, struct job *j)
{
	if (!j)
		return;
	if (js->n == js->cap) {
		size_t cap = js->cap ? js->cap * 2 : 64;
		struct job **v = realloc(js->v, cap * sizeof(*v));
		if (!v) {
			job_failed(eng, j, HF_ENOMEM, "out of memory");
			job_free(j);
			return;
		}
		js->v = v;
		js->cap = cap;
	}
	js->v[js->n++] = j;
}

/* One collect job for the waiters marked (woken, or all at a re-check). */
static void add_collects(struct redis_engine *eng, struct jobs *js, bool all)
{
	struct args a = {0};
	size_t n = 0;
	for (struct waiter *w = eng->waiters; w; w = w->next)
		if (w->parked && !w->busy && !w->end_code && (all || w->woken))
			n++;
	if (n == 0)
		return;
	struct waiter **list = calloc(n, sizeof(*list));
	if (!list)
		return;
	args_head(eng, &a, "collect");
	arg_int(&a, eng->wait_lease_ms);
	size_t k = 0;
	for (struct waiter *w = eng->waiters; w && k < n; w = w->next)
		if (w->parked && !w->busy && !w->end_code && (all || w->woken)) {
			arg_add(&a, w->wid);
			list[k++] = w;
		}
	struct job *j = job_new(JOB_COLLECT, &a);
	if (!j) {
		free(list);
		return;
	}
	for (size_t i = 0; i < k; i++) {
		list[i]->busy = true;
		list[i]->woken = false;
	}
	j->collected = list;
	j->n_collected = k;
	jobs_add(eng, js, j);
}

static void close_all(struct redis_engine *eng)
{
	/* Parked waits end with HF_ECLOSED (their records leave Redis); event reads too. */
	struct jobs js = {0};
	for (struct waiter *w = eng->waiters; w; w = w->next)
		if (!w->busy) {
			w->end_code = HF_ECLOSED;
			jobs_add(eng, &js, unpark_job(eng, w));
		}
	if (js.n)
		run_jobs(eng, js.v, js.n);
	free(js.v);
	while (eng->waiters) {
		struct waiter *w = eng->waiters;
		call_fail(w->call, HF_ECLOSED, "store is closing");
		waiter_remove(eng, w);
	}
	while (eng->evwaiters) {
		struct evwaiter *e = eng->evwaiters;
		call_fail(e->call, HF_ECLOSED, "store is closing");
		evwaiter_remove(eng, e);
	}
}

static void *worker_main(void *arg)
{
	struct redis_engine *eng = arg;
	hf__thread_name("hf-redis");
	for (;;) {
		pthread_mutex_lock(&eng->lock);
		for (;;) {
			if (eng->closing || !hf__mailbox_empty(&eng->mailbox) || eng->n_wakes ||
			    eng->events_pending || eng->recheck_all ||
			    (eng->trim_go && !eng->trim_busy))
				break;
			int64_t next = eng->due_at;
			if (hf__trim_enabled(&eng->trim) && !eng->trim_busy && eng->trim_at < next)
				next = eng->trim_at;
			if ((eng->waiters || eng->evwaiters) && eng->next_recheck < next)
				next = eng->next_recheck;
			for (struct waiter *w = eng->waiters; w; w = w->next) {
				if (!w->end_code && w->deadline < next)
					next = w->deadline;
				if (w->parked && !w->busy && (w->end_code || w->woken))
					next = 0;
			}
			for (struct evwaiter *e = eng->evwaiters; e; e = e->next)
				if (e->deadline < next)
					next = e->deadline;
			int64_t now = mono();
			if (next <= now)
				break;
			int64_t wait = next - now;
			if (wait > 60000)
				wait = 60000;
			struct timespec ts;
			hf__timespec_in_ms(&ts, CLOCK_MONOTONIC, wait);
			pthread_cond_timedwait(&eng->cond, &eng->lock, &ts);
		}
		struct hf__mailbox box = hf__mailbox_take(&eng->mailbox);
		struct hf__call *inbox = box.head;
		char **wakes = eng->wakes;
		size_t n_wakes = eng->n_wakes;
		eng->wakes = NULL;
		eng->n_wakes = eng->cap_wakes = 0;
		bool events = eng->events_pending, recheck = eng->recheck_all, closing = eng->closing;
		eng->events_pending = eng->recheck_all = false;
		pthread_mutex_unlock(&eng->lock);

		int64_t now = mono();
		struct jobs js = {0};
		for (size_t i = 0; i < box.n_cancels; i++) {
			uint64_t id = box.cancels[i];
			for (struct hf__call *c = inbox; c; c = c->next)
				if (c->id == id)
					c->engine_data = &cancel_marker;
			for (struct waiter *w = eng->waiters; w; w = w->next)
				if (w->call->id == id && !w->end_code)
					w->end_code = HF_ECANCELED;
			for (struct evwaiter *e = eng->evwaiters; e; e = e->next)
				if (e->call->id == id && !e->busy) {
					call_fail(e->call, HF_ECANCELED, "the wait was cancelled");
					evwaiter_remove(eng, e);
					break;
				}
		}
		hf__mailbox_release(&box);
		for (size_t i = 0; i < n_wakes; i++) {
			struct waiter *w = waiter_by_wid(eng, wakes[i]);
			if (w)
				w->woken = true;
			free(wakes[i]);
		}
		free(wakes);
		if (now >= eng->next_recheck) {
			recheck = true;
			eng->next_recheck = now + RECHECK_MS;
		}
		for (struct waiter *w = eng->waiters; w; w = w->next) {
			if (!w->end_code && w->deadline <= now)
				w->end_code = HF_ETIMEDOUT;
			if (w->parked && !w->busy && w->end_code)
				jobs_add(eng, &js, unpark_job(eng, w));
		}
		add_collects(eng, &js, recheck);
		for (struct evwaiter *e = eng->evwaiters; e; e = e->next) {
			if (e->busy)
				continue;
			if (e->deadline <= now)
				e->final = true;
			if (e->final || events || recheck)
				jobs_add(eng, &js, evread_job(eng, e));
		}
		if (eng->due_at <= now) {
			struct args a = {0};
			args_head(eng, &a, "sweep");
			eng->due_at = INT64_MAX;
			jobs_add(eng, &js, job_new(JOB_SWEEP, &a));
		}
		/* Event retention: a pass at most every RECHECK_MS (the trim itself follows its
		 * plan at once). */
		if (!eng->trim_busy &&
		    (eng->trim_go || (hf__trim_enabled(&eng->trim) && now >= eng->trim_at))) {
			bool info = !eng->trim_go;
			if (info)
				eng->trim_at = now + RECHECK_MS;
			eng->trim_go = false;
			struct job *tj = trim_job(eng, info);
			eng->trim_busy = tj != NULL;
			jobs_add(eng, &js, tj);
		}
		size_t taken = 0;
		while (inbox && taken < BATCH_MAX) {
			struct hf__call *call = inbox;
			inbox = call->next;
			call->next = NULL;
			taken++;
			jobs_add(eng, &js, call_job(eng, call));
		}
		if (inbox) { /* the rest next round, in order */
			pthread_mutex_lock(&eng->lock);
			hf__mailbox_put_back(&eng->mailbox, inbox);
			pthread_mutex_unlock(&eng->lock);
		}
		if (js.n)
			run_jobs(eng, js.v, js.n);
		free(js.v);
		/* Event reads parked by calls of this round. */
		if (closing) {
			pthread_mutex_lock(&eng->lock);
			bool more = eng->mailbox.head != NULL;
			pthread_mutex_unlock(&eng->lock);
			if (!more) {
				close_all(eng);
				break;
			}
		}
	}
	if (eng->c)
		redisFree(eng->c);
	eng->c = NULL;
	return NULL;
}

/* ---- the subscriber ---- */

static void push_wakes(struct redis_engine *eng, const char *payload, size_t len)
{
	const char *p = payload, *end = payload + len;
	pthread_mutex_lock(&eng->lock);
	while (p < end) {
		const char *sp = memchr(p, ' ', (size_t)(end - p));
		const char *stop = sp ? sp : end;
		size_t l = (size_t)(stop - p);
		/* Only our own waiters' ids start with our instance id. */
		if (l > 17 && memcmp(p, eng->instance, 16) == 0 && p[16] == ':') {
			if (eng->n_wakes == eng->cap_wakes) {
				size_t cap = eng->cap_wakes ? eng->cap_wakes * 2 : 16;
				char **v = realloc(eng->wakes, cap * sizeof(*v));
				if (!v) {
					eng->recheck_all = true; /* the re-check finds it */
					break;
				}
				eng->wakes = v;
				eng->cap_wakes = cap;
			}
			char *s = strndup(p, l);
			if (s)
				eng->wakes[eng->n_wakes++] = s;
			else
				eng->recheck_all = true;
		}
		p = stop + 1;
	}
	pthread_cond_signal(&eng->cond);
	pthread_mutex_unlock(&eng->lock);
}

static bool sub_closing(struct redis_engine *eng)
{
	pthread_mutex_lock(&eng->lock);
	bool c = eng->closing;
	pthread_mutex_unlock(&eng->lock);
	return c;
}

static void *sub_main(void *arg)
{
	struct redis_engine *eng = arg;
	hf__thread_name("hf-redis-sub");
	struct hf__redis_node moved = {{0}, 0}; /* a MOVED answered to SUBSCRIBE: go there next */
	while (!sub_closing(eng)) {
		char why[200];
		/* The node the worker talks to (a MOVED moves both). Plain pub/sub is cluster-wide:
		 * any node would do, but this one is known to be up. */
		pthread_mutex_lock(&eng->lock);
		struct hf__redis_node node = moved.port ? moved : eng->cur;
		pthread_mutex_unlock(&eng->lock);
		moved.port = 0;
		/* No read timeout: close() shuts the socket down to end a blocked read. */
		redisContext *c = hf__redis_connect(&node, eng->url.password, 0,
		                                    CONNECT_TIMEOUT_MS, 0, why, sizeof(why));
		if (!c) {
			struct timespec ts = {0, 200 * 1000000L};
			nanosleep(&ts, NULL);
			continue;
		}
		struct timeval none = {0, 0};
		redisSetTimeout(c, none);
		pthread_mutex_lock(&eng->lock);
		bool closing = eng->closing;
		if (!closing)
			eng->sub_fd = c->fd;
		pthread_mutex_unlock(&eng->lock);
		if (closing) {
			redisFree(c);
			break;
		}
		const char *argv[] = {"SUBSCRIBE", eng->ch_wake, eng->ch_events};
		size_t argl[] = {9, strlen(eng->ch_wake), strlen(eng->ch_events)};
		redisAppendCommandArgv(c, 3, argv, argl);
		/* Messages sent while we were not subscribed are found by a re-check now. */
		pthread_mutex_lock(&eng->lock);
		eng->recheck_all = true;
		pthread_cond_signal(&eng->cond);
		pthread_mutex_unlock(&eng->lock);
		void *rv;
		while (redisGetReply(c, &rv) == REDIS_OK && rv) {
			redisReply *r = rv;
			struct hf__redis_node to;
			if (r->type == REDIS_REPLY_ERROR && eng->cluster &&
			    hf__redis_redirect(r->str, &node, &to) == HF__REDIR_MOVED) {
				/* Not for plain SUBSCRIBE today; sharded channels would answer it. */
				moved = to;
				freeReplyObject(rv);
				break;
			}
			if (r->type == REDIS_REPLY_ARRAY && r->elements == 3 &&
			    r->element[0]->type == REDIS_REPLY_STRING &&
			    strcmp(r->element[0]->str, "message") == 0 &&
			    r->element[2]->type == REDIS_REPLY_STRING) {
				if (strcmp(r->element[1]->str, eng->ch_wake) == 0) {
					push_wakes(eng, r->element[2]->str, r->element[2]->len);
				} else {
					pthread_mutex_lock(&eng->lock);
					if (!eng->events_pending) {
						eng->events_pending = true;
						pthread_cond_signal(&eng->cond);
					}
					pthread_mutex_unlock(&eng->lock);
				}
			}
			freeReplyObject(rv);
		}
		pthread_mutex_lock(&eng->lock);
		eng->sub_fd = -1;
		pthread_mutex_unlock(&eng->lock);
		redisFree(c);
		if (!sub_closing(eng)) {
			struct timespec ts = {0, 100 * 1000000L};
			nanosleep(&ts, NULL);
		}
	}
	return NULL;
}

/* ---- the engine table ---- */

static void engine_free(struct redis_engine *eng)
{
	pthread_mutex_destroy(&eng->lock);
	pthread_cond_destroy(&eng->cond);
	hf__mailbox_release(&eng->mailbox);
	for (size_t i = 0; i < eng->n_wakes; i++)
		free(eng->wakes[i]);
	free(eng->wakes);
	free(eng);
}

static void redis_close(void *engine)
{
	struct redis_engine *eng = engine;
	pthread_mutex_lock(&eng->lock);
	eng->closing = true;
	if (eng->sub_fd >= 0)
		shutdown(eng->sub_fd, SHUT_RDWR);
	pthread_cond_signal(&eng->cond);
	pthread_mutex_unlock(&eng->lock);
	if (eng->worker_started)
		pthread_join(eng->worker, NULL);
	if (eng->sub_started)
		pthread_join(eng->subber, NULL);
	engine_free(eng);
}

static int redis_open(hf_store *store, const char *url, const hf_options *opt, void **out,
                      hf_error *err)
{
	*out = NULL;
	struct redis_engine *eng = calloc(1, sizeof(*eng));
	if (!eng)
		return hf__err_code(err, HF_ENOMEM);
	eng->store = store;
	eng->opt = *opt; /* opt->clock is not used: time is Redis's TIME */
	hf__trim_policy_from(&eng->trim, opt);
	eng->sub_fd = -1;
	eng->due_at = INT64_MAX;
	pthread_mutex_init(&eng->lock, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&eng->cond, &ca);
	pthread_condattr_destroy(&ca);
	int rc = hf__redis_url_parse(url, "redis", &eng->url, err);
	if (rc != HF_OK)
		goto fail;
	if (eng->url.n_nodes != 1) {
		rc = hf__err(err, HF_EINVAL, "invalid url '%s': redis:// takes one host (redlock:// takes several)",
		             url);
		goto fail;
	}
	const char *prefix = "hf:";
	eng->wait_lease_ms = WAITER_LEASE_MS;
	for (size_t i = 0; i < eng->url.n_params; i++) {
		if (strcmp(eng->url.keys[i], "prefix") == 0) {
			prefix = eng->url.values[i];
		} else if (strcmp(eng->url.keys[i], "wait_lease_ms") == 0) {
			/* How long a wait parked by this process outlives the process (docs/redis.md). */
			char *end;
			long long v = strtoll(eng->url.values[i], &end, 10);
			if (!eng->url.values[i][0] || *end || v < WAITER_LEASE_MIN_MS || v > HF_WAIT_MAX_MS) {
				rc = hf__err(err, HF_EINVAL, "invalid url '%s': wait_lease_ms must be %d..%lld, not '%s'",
				             url, WAITER_LEASE_MIN_MS, (long long)HF_WAIT_MAX_MS,
				             eng->url.values[i]);
				goto fail;
			}
			eng->wait_lease_ms = v;
		} else if (strcmp(eng->url.keys[i], "locks") == 0) {
			/* "plain": every resource also shows as the Redlock key of its name, so that
			 * other Redlock clients and this store exclude each other (docs/redis.md). */
			if (strcmp(eng->url.values[i], "plain") == 0) {
				eng->plain = true;
			} else if (strcmp(eng->url.values[i], "own") != 0) {
				rc = hf__err(err, HF_EINVAL, "invalid url '%s': locks must be 'plain' or 'own', not '%s'",
				             url, eng->url.values[i]);
				goto fail;
			}
		} else {
			rc = hf__err(err, HF_EINVAL,
			             "invalid url '%s': unknown parameter '%s' (known: prefix, locks, wait_lease_ms)", url,
			             eng->url.keys[i]);
			goto fail;
		}
	}
	if (strlen(prefix) >= 100) {
		rc = hf__err(err, HF_EINVAL, "invalid url '%s': prefix longer than 99 bytes", url);
		goto fail;
	}
	snprintf(eng->prefix, sizeof(eng->prefix), "%.99s", prefix);
	snprintf(eng->seq_key, sizeof(eng->seq_key), "%.99sseq", prefix);
	snprintf(eng->ch_wake, sizeof(eng->ch_wake), "%.99swake", prefix);
	snprintf(eng->ch_events, sizeof(eng->ch_events), "%.99sevents", prefix);
	eng->cur = eng->url.nodes[0];
	snprintf(eng->where, sizeof(eng->where), "%.250s:%d", eng->url.nodes[0].host,
	         eng->url.nodes[0].port);
	if (hf__random_hex(eng->instance, 8) != HF_OK) {
		rc = hf__err(err, HF_EINTERNAL, "the OS has no randomness to give");
		goto fail;
	}
	/* Fail fast: an unreachable Redis at open is a clear error, not a store that fails
	 * every call. Later outages are survived by reconnecting. */
	if (!ensure_connected(eng)) {
		rc = hf__err(err, HF_EENGINE, "redis at %.80s is unreachable: %.150s", eng->where,
		             eng->last_error);
		goto fail;
	}
	/* Redis Cluster: every script touches store-wide keys, so the whole store must live in
	 * one slot — the prefix's hash tag decides it (docs/redis.md, "Redis Cluster"). */
	char why[200];
	int on = hf__redis_cluster_enabled(eng->c, why, sizeof(why));
	if (on < 0) {
		rc = hf__err(err, HF_EENGINE, "redis at %.80s: %.150s", eng->where, why);
		goto fail;
	}
	eng->cluster = on == 1;
	if (eng->cluster && !hf__redis_has_hash_tag(eng->prefix)) {
		rc = hf__err(err, HF_EINVAL,
		             "invalid url '%s': redis at %.80s is a Redis Cluster node (cluster_enabled:1) "
		             "and the prefix '%s' has no hash tag; the whole store must live in one slot: "
		             "give the prefix one, e.g. ?prefix={hf}:",
		             url, eng->where, eng->prefix);
		goto fail;
	}
	if (eng->cluster && eng->plain) {
		rc = hf__err(err, HF_EINVAL,
		             "invalid url '%s': locks=plain is not offered on a Redis Cluster: its Redlock "
		             "keys are the bare resource names, which hash to other slots than the store",
		             url);
		goto fail;
	}
	eng->next_recheck = mono() + RECHECK_MS;
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	int prc = pthread_create(&eng->worker, NULL, worker_main, eng);
	if (prc == 0) {
		eng->worker_started = true;
		prc = pthread_create(&eng->subber, NULL, sub_main, eng);
		eng->sub_started = prc == 0;
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (prc != 0) {
		if (eng->worker_started) {
			redis_close(eng);
			return hf__err(err, HF_EINTERNAL, "cannot start the redis engine threads: %s",
			               strerror(prc));
		}
		rc = hf__err(err, HF_EINTERNAL, "cannot start the redis engine thread: %s", strerror(prc));
		goto fail;
	}
	*out = eng;
	return HF_OK;
fail:
	if (eng->c)
		redisFree(eng->c);
	engine_free(eng);
	return rc;
}

static void redis_submit(void *engine, struct hf__call *call)
{
	struct redis_engine *eng = engine;
	hf__mailbox_post_call(&eng->mailbox, &eng->lock, &eng->cond, call);
}

static void redis_cancel(void *engine, uint64_t call_id)
{
	struct redis_engine *eng = engine;
	hf__mailbox_post_cancel(&eng->mailbox, &eng->lock, &eng->cond, call_id);
}

const struct hf__engine_ops hf__engine_redis = {
	.scheme = "redis",
	.open = redis_open,
	.close = redis_close,
	.submit = redis_submit,
	.cancel = redis_cancel,
	.tick = NULL, /* time is Redis's: hf_options.clock does not apply */
};
