/*
 * store.c — the public calling API over any engine: opening by URL, validation, the call
 * objects that carry a request to an engine and its reply back, the completion queue behind
 * hf_store_fd()/hf_store_dispatch(), and the blocking forms built on it.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "core/core.h"
#include "engine/engine.h"
#include "saga/saga.h"

struct hf_store {
	const struct hf__engine_ops *ops;
	void *engine;
	hf_options opt;
	atomic_uint_fast64_t next_call_id;
	atomic_bool closing;
	int wake_fd; /* eventfd: readable while `done_head` is not empty */
	pthread_mutex_t lock; /* guards the completion queue */
	struct hf__call *done_head, *done_tail;
	struct hf__orch *orch; /* the saga runner, on engines that keep sagas */
	char *url;             /* as opened: the http engine's saga calls go to its routes */
};

struct hf__waitpoint {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool done;
};

int64_t hf__store_now(const hf_store *store)
{
	return store->opt.clock ? store->opt.clock(store->opt.clock_ctx) : hf_now_ms();
}

int hf_open(const char *url, const hf_options *opt, hf_store **out, hf_error *err)
{
	*out = NULL;
	hf__err_clear(err);
	if (!url || !*url)
		return hf__err(err, HF_EINVAL, "engine url is empty");
	const struct hf__engine_ops *ops = hf__engine_find(url);
	if (!ops)
		return hf__err(err, HF_ENOTSUP, "no engine for url '%s' (known: file:, http://, postgres://, redis://, redlock://)", url);
	hf_store *store = calloc(1, sizeof(*store));
	if (!store)
		return hf__err_code(err, HF_ENOMEM);
	if (opt)
		store->opt = *opt;
	else
		hf_options_init(&store->opt);
	/* A fallback engine wraps the primary (and opens both) when one is configured. */
	if (store->opt.fallback_url && *store->opt.fallback_url)
		ops = &hf__engine_fallback;
	store->ops = ops;
	if (!(store->url = hf__strdup(url))) {
		free(store);
		return hf__err_code(err, HF_ENOMEM);
	}
	atomic_init(&store->next_call_id, 0);
	atomic_init(&store->closing, false);
	pthread_mutex_init(&store->lock, NULL);
	store->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (store->wake_fd < 0) {
		int rc = hf__err(err, HF_EINTERNAL, "eventfd: %s", strerror(errno));
		pthread_mutex_destroy(&store->lock);
		free(store->url);
		free(store);
		return rc;
	}
	int rc = ops->open(store, url, &store->opt, &store->engine, err);
	if (rc == HF_OK && ops->sagas && (rc = hf__orch_start(store, ops->shared_sagas, &store->orch, err)) != HF_OK)
		ops->close(store->engine);
	if (rc != HF_OK) {
		close(store->wake_fd);
		pthread_mutex_destroy(&store->lock);
		free(store->url);
		free(store);
		return rc;
	}
	*out = store;
	return HF_OK;
}

const char *hf__store_url(const hf_store *store)
{
	return store->url;
}

struct hf__orch *hf__store_orch(const hf_store *store)
{
	return store->orch;
}

const char *hf_store_scheme(const hf_store *store)
{
	return store->ops->scheme;
}

/*
 * A call, its reply and its request's strings are one allocation, the reply first: the reply
 * outlives the call (the caller frees it with hf_reply_free, which frees the block), and
 * nothing of the call is used once its reply is handed over. A caller that keeps a reply
 * keeps its call's few hundred bytes with it.
 */
struct call_block {
	hf_reply reply;
	struct hf__call call;
};
/* The request's claims follow the block (hf__request_pack). */
_Static_assert(sizeof(struct call_block) % _Alignof(hf_claim) == 0, "claims after a call");

void hf_close(hf_store *store)
{
	if (!store)
		return;
	/* Sagas stop between steps (or abandon a call in flight): they resume at the next open. */
	hf__orch_stop(store->orch);
	store->orch = NULL;
	atomic_store(&store->closing, true);
	store->ops->close(store->engine);
	/* The engine completed everything it had; deliver those completions here so that every
	 * callback still runs exactly once (their owners free their contexts in them). */
	hf_store_dispatch(store);
	close(store->wake_fd);
	pthread_mutex_destroy(&store->lock);
	free(store->url);
	free(store);
}

void hf__call_done(struct hf__call *call)
{
	if (call->intercept) {
		call->intercept(call);
		return;
	}
	if (call->waitpoint) {
		struct hf__waitpoint *wp = call->waitpoint;
		pthread_mutex_lock(&wp->lock);
		wp->done = true;
		pthread_cond_signal(&wp->cond);
		pthread_mutex_unlock(&wp->lock);
		return;
	}
	hf_store *store = call->store;
	call->next = NULL;
	pthread_mutex_lock(&store->lock);
	bool was_empty = store->done_head == NULL;
	if (was_empty)
		store->done_head = call;
	else
		store->done_tail->next = call;
	store->done_tail = call;
	if (was_empty) {
		uint64_t one = 1;
		/* Cannot fail short of a counter overflow; the queue is the truth anyway. */
		ssize_t w = write(store->wake_fd, &one, sizeof(one));
		(void)w;
	}
	pthread_mutex_unlock(&store->lock);
}

int hf_store_fd(hf_store *store)
{
	return store->wake_fd;
}

int hf_store_dispatch(hf_store *store)
{
	pthread_mutex_lock(&store->lock);
	struct hf__call *list = store->done_head;
	store->done_head = store->done_tail = NULL;
	uint64_t count;
	ssize_t r = read(store->wake_fd, &count, sizeof(count)); /* EAGAIN when already drained */
	(void)r;
	pthread_mutex_unlock(&store->lock);
	int ran = 0;
	while (list) {
		struct hf__call *call = list;
		list = call->next;
		call->done(call->arg, call->reply); /* which may free the call with its reply */
		ran++;
	}
	return ran;
}

void hf_store_tick(hf_store *store)
{
	if (store->ops->tick)
		store->ops->tick(store->engine);
}

/* Not once closing: the completions hf_close delivers may submit again (holdfastd releases a
 * grant nobody reads), and such a submit is refused, but its batch would reach an engine that
 * is already freed (fuzz_http found it). */
void hf_store_batch_begin(hf_store *store)
{
	if (store->ops->batch && !atomic_load(&store->closing))
		store->ops->batch(store->engine, true);
}

void hf_store_batch_end(hf_store *store)
{
	if (store->ops->batch && !atomic_load(&store->closing))
		store->ops->batch(store->engine, false);
}

int hf_store_health(hf_store *store, hf_error *err)
{
	hf__err_clear(err);
	if (!store->ops->health)
		return HF_OK;
	return store->ops->health(store->engine, err);
}

/* Validates and packages a request; on failure nothing is allocated. */
static int call_new(hf_store *store, const hf_request *req, struct hf__call **out, hf_error *err)
{
	*out = NULL;
	if (atomic_load(&store->closing))
		return hf__err_code(err, HF_ECLOSED);
	int rc = hf__check_request(req, err);
	if (rc != HF_OK)
		return rc;
	if (req->op >= HF_OP_SAGA_TYPE_PUT && req->op <= HF_OP_SAGA_LIST && !store->ops->sagas)
		return hf__err(err, HF_ENOTSUP,
		               "the %s engine keeps no sagas yet: sagas run on the embedded engine (file:)",
		               store->ops->scheme);
	struct call_block *b = malloc(sizeof(*b) + hf__request_extra(req));
	if (!b)
		return hf__err_code(err, HF_ENOMEM);
	memset(b, 0, sizeof(*b));
	struct hf__call *call = &b->call;
	hf__request_pack(&call->req, req, b + 1);
	b->reply.op = req->op;
	call->reply = &b->reply;
	call->store = store;
	call->id = atomic_fetch_add(&store->next_call_id, 1) + 1;
	call->submitted_at_ms = hf__store_now(store);
	*out = call;
	return HF_OK;
}

int hf_submit(hf_store *store, const hf_request *req, hf_done_fn done, void *arg,
              uint64_t *call_id, hf_error *err)
{
	hf__err_clear(err);
	if (!done)
		return hf__err(err, HF_EINVAL, "a completion callback is required");
	struct hf__call *call;
	int rc = call_new(store, req, &call, err);
	if (rc != HF_OK)
		return rc;
	call->done = done;
	call->arg = arg;
	if (call_id)
		*call_id = call->id;
	store->ops->submit(store->engine, call);
	return HF_OK;
}

void hf_cancel(hf_store *store, uint64_t call_id)
{
	store->ops->cancel(store->engine, call_id);
}

int hf_call(hf_store *store, const hf_request *req, hf_reply **reply_out)
{
	hf_error err;
	struct hf__call *call;
	int rc = call_new(store, req, &call, &err);
	if (rc != HF_OK) {
		hf_reply *reply = calloc(1, sizeof(*reply));
		if (!reply) {
			/* The return value is always the reply's code: the first error is lost. */
			reply = (hf_reply *)&hf__reply_out_of_memory;
			rc = HF_ENOMEM;
		} else {
			reply->op = req->op;
			reply->error = err;
		}
		*reply_out = reply;
		return rc;
	}
	struct hf__waitpoint wp = {.done = false};
	pthread_mutex_init(&wp.lock, NULL);
	pthread_cond_init(&wp.cond, NULL);
	call->waitpoint = &wp;
	store->ops->submit(store->engine, call);
	pthread_mutex_lock(&wp.lock);
	while (!wp.done)
		pthread_cond_wait(&wp.cond, &wp.lock);
	pthread_mutex_unlock(&wp.lock);
	pthread_cond_destroy(&wp.cond);
	pthread_mutex_destroy(&wp.lock);
	*reply_out = call->reply; /* and the call with it */
	return call->reply->error.code;
}

/* Runs a blocking call and hands over its hold; the rest of the reply is freed. */
static int call_for_hold(hf_store *store, const hf_request *req, hf_hold **hold, hf_error *err)
{
	hf_reply *reply;
	int rc = hf_call(store, req, &reply);
	if (hold)
		*hold = NULL;
	if (err)
		*err = reply->error;
	if (rc == HF_OK && hold) {
		*hold = reply->hold;
		reply->hold = NULL;
	}
	hf_reply_free(reply);
	return rc;
}

int hf_acquire(hf_store *store, const hf_acquire_req *areq, hf_hold **hold, hf_error *err)
{
	hf_request req;
	hf_request_init(&req, HF_OP_ACQUIRE);
	req.acquire = *areq;
	return call_for_hold(store, &req, hold, err);
}

static int hold_call(hf_store *store, hf_op op, const char *id, const char *token,
                     int64_t ttl_ms, hf_hold **hold, hf_error *err)
{
	hf_request req;
	hf_request_init(&req, op);
	req.hold_id = id;
	req.token = token;
	req.ttl_ms = ttl_ms;
	return call_for_hold(store, &req, hold, err);
}

int hf_extend(hf_store *store, const char *id, const char *token, int64_t ttl_ms, hf_hold **hold,
              hf_error *err)
{
	return hold_call(store, HF_OP_EXTEND, id, token, ttl_ms, hold, err);
}

int hf_confirm(hf_store *store, const char *id, const char *token, hf_hold **hold, hf_error *err)
{
	return hold_call(store, HF_OP_CONFIRM, id, token, 0, hold, err);
}

int hf_release(hf_store *store, const char *id, const char *token, hf_hold **hold, hf_error *err)
{
	return hold_call(store, HF_OP_RELEASE, id, token, 0, hold, err);
}
