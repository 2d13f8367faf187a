/*
 * engine.h — the contract between the store layer (src/core/store.c) and each engine.
 * An engine is one const table of operations, registered by URL scheme in registry.c.
 * Internal to libholdfast: nothing here is public.
 */
#ifndef HF_ENGINE_H
#define HF_ENGINE_H

#include <pthread.h>
#include <time.h>

#include "holdfast.h"

struct hf__waitpoint; /* a blocking caller's mutex + condvar, private to store.c */

/*
 * One submitted request. The store layer creates it with a deep copy of the request (every
 * string and claim owned by the call) and an empty reply; the engine fills call->reply and
 * hands the call back, exactly once, with hf__call_done(). After that the engine must not
 * touch the call. The store layer frees it once the reply has been delivered.
 */
struct hf__call {
	hf_request req;    /* deep copy: owned by the call */
	hf_reply *reply;   /* allocated with the call; the engine fills it */
	uint64_t id;       /* unique per store, for hf_cancel() */
	int64_t submitted_at_ms;
	hf_store *store;
	hf_done_fn done;   /* NULL for blocking calls */
	void *arg;
	struct hf__waitpoint *waitpoint; /* set for blocking calls */
	struct hf__call *next;           /* the store's completion queue */
	void *engine_data;               /* the engine's own, while it has the call */
	/* Set by a wrapper engine (fallback.c) that hands the call to an inner engine: then
	 * hf__call_done() gives the call to the hook instead of the store, and the wrapper calls
	 * hf__call_done() again (hook cleared) once it is finished with it. */
	void (*intercept)(struct hf__call *call);
	void *intercept_data;
};

struct hf__engine_ops {
	const char *scheme; /* "file", "http", "postgres", ... */

	/* Opens the engine for `url`. `store` is passed back in hf__call_done(); the engine
	 * keeps its state in *engine. On failure sets `err` and returns its code. */
	int (*open)(hf_store *store, const char *url, const hf_options *opt, void **engine,
	            hf_error *err);

	/* Completes every pending call (parked waits with HF_ECLOSED), makes every completed
	 * mutation durable, stops the engine's threads and frees its state. */
	void (*close)(void *engine);

	/* Takes a validated call. Must not block on I/O or waits; completes it later (or at once)
	 * with hf__call_done(), from any thread. */
	void (*submit)(void *engine, struct hf__call *call);

	/* Ends the parked call with this id with HF_ECANCELED, if it is still parked. */
	void (*cancel)(void *engine, uint64_t call_id);

	/* Applies expiries and timeouts due now (custom clocks); may be NULL. */
	void (*tick)(void *engine);

	/* Opens (true) or ends (false) a batch: while one is open, changes wait to be committed
	 * together at its end (hf_store_batch_begin). May be NULL. */
	void (*batch)(void *engine, bool open);

	/* HF_OK if the engine can take changes now, else the code with `err` set (see
	 * hf_store_health); must not block. May be NULL: always HF_OK. */
	int (*health)(void *engine, hf_error *err);

	/* Keeps sagas (answers the HF_OP_SAGA_* ops): hf_open then runs the saga orchestrator
	 * on the store (src/saga/). Engines without it never see those ops. */
	bool sagas;
	/* Several instances share its sagas, one owner each by lease (PostgreSQL): the
	 * orchestrator watches for the sagas of a dead owner. */
	bool shared_sagas;
};

/* The engines linked into this build, and lookup by URL scheme. */
const struct hf__engine_ops *hf__engine_find(const char *url);

extern const struct hf__engine_ops hf__engine_embedded;
extern const struct hf__engine_ops hf__engine_http;
extern const struct hf__engine_ops hf__engine_postgres;
extern const struct hf__engine_ops hf__engine_postgresql;
extern const struct hf__engine_ops hf__engine_redis;
extern const struct hf__engine_ops hf__engine_redlock;
/* Not found by scheme: hf_open() uses it when hf_options.fallback_url is set. */
extern const struct hf__engine_ops hf__engine_fallback;

/* mailbox.c: the calls and cancels a worker-thread engine receives, guarded by the engine's
 * own lock. The worker takes all at once (and may put calls it did not start back first). */
struct hf__mailbox {
	struct hf__call *head, *tail; /* linked through call->next, in submission order */
	uint64_t *cancels;            /* ids passed to cancel() */
	size_t n_cancels, cap_cancels;
};
void hf__mailbox_put_call(struct hf__mailbox *mb, struct hf__call *call);
/* false when out of memory: the wait then ends on its own at its deadline */
bool hf__mailbox_put_cancel(struct hf__mailbox *mb, uint64_t call_id);
/* The same under the engine's lock, waking its worker: what submit() and cancel() do. */
void hf__mailbox_post_call(struct hf__mailbox *mb, pthread_mutex_t *lock, pthread_cond_t *wake,
                           struct hf__call *call);
void hf__mailbox_post_cancel(struct hf__mailbox *mb, pthread_mutex_t *lock, pthread_cond_t *wake,
                             uint64_t call_id);
bool hf__mailbox_empty(const struct hf__mailbox *mb);
struct hf__mailbox hf__mailbox_take(struct hf__mailbox *mb); /* leaves *mb empty */
void hf__mailbox_put_back(struct hf__mailbox *mb, struct hf__call *calls);
void hf__mailbox_release(struct hf__mailbox *mb); /* frees the cancel list of a taken box */
/* *ts = now on `clock` + ms, for pthread_cond_timedwait. */
void hf__timespec_in_ms(struct timespec *ts, clockid_t clock, int64_t ms);

/* Hands a finished call back to the store layer. Thread-safe; never blocks for long. */
void hf__call_done(struct hf__call *call);

/* The URL the store was opened with. */
const char *hf__store_url(const hf_store *store);
/* The store's saga runner; NULL on engines without sagas. */
struct hf__orch *hf__store_orch(const hf_store *store);

/* The store's clock (the option's or the system's). */
int64_t hf__store_now(const hf_store *store);

#endif /* HF_ENGINE_H */
