/*
 * engine.c — the embedded engine (file:PATH) as an hf__engine_ops table: one lock around
 * the in-memory state, a writer thread that commits batches of journal records (group
 * commit: every change made while one commit runs shares the next), and a timer thread
 * that applies lease expiries and wait deadlines when they fall due.
 */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/embedded/embedded.h"

struct engine {
	hf_store *store;
	struct hf__state *st;
	struct hf__journal *journal;
	bool own_timer;

	pthread_mutex_t lock; /* guards everything below and the state */
	/* Group commit: records waiting for the writer, and calls waiting for their records. */
	struct hf__jrec *pending_head, *pending_tail;
	uint64_t appended;   /* batches handed to the writer: a change's ticket */
	uint64_t durable;    /* tickets on disk */
	struct hf__call *awaiting_head, *awaiting_tail; /* ticket order; ticket in engine_data */
	int failed;          /* after a failed commit: HF_ESTORAGE, and no more changes */
	char failed_message[HF_MESSAGE_MAX];
	bool stopping;
	pthread_cond_t writer_wake;
	pthread_t writer;
	/* Timer (system clock only). */
	pthread_cond_t timer_wake;
	int64_t timer_due; /* what the timer thread sleeps until */
	pthread_t timer;
};

static void deliver(struct hf__call *list)
{
	while (list) {
		struct hf__call *next = list->next;
		hf__call_done(list);
		list = next;
	}
}

/* Hands a step's effects on, with the lock held; returns the calls to deliver now. */
static struct hf__call *finish_locked(struct engine *e, struct hf__effects *fx)
{
	if (fx->failed && !e->failed) {
		e->failed = HF_ESTORAGE;
		snprintf(e->failed_message, sizeof(e->failed_message),
		         "out of memory while recording a change; restart to recover from the journal");
	}
	if (!fx->rec_head)
		return fx->done_head;
	if (e->failed) {
		/* Nothing more reaches the disk: refuse what depended on it. */
		hf__jrec_free_list(fx->rec_head);
		for (struct hf__call *c = fx->done_head; c; c = c->next) {
			hf_reply *r = c->reply;
			hf_reply_free(r);
			c->reply = calloc(1, sizeof(*c->reply));
			if (c->reply) {
				c->reply->op = c->req.op;
				c->reply->error.code = e->failed;
				snprintf(c->reply->error.message, sizeof(c->reply->error.message), "%s",
				         e->failed_message);
			}
		}
		return fx->done_head;
	}
	if (e->pending_tail)
		e->pending_tail->next = fx->rec_head;
	else
		e->pending_head = fx->rec_head;
	e->pending_tail = fx->rec_tail;
	uint64_t ticket = ++e->appended;
	for (struct hf__call *c = fx->done_head; c;) {
		struct hf__call *next = c->next;
		c->engine_data = (void *)(uintptr_t)ticket;
		c->next = NULL;
		if (e->awaiting_tail)
			e->awaiting_tail->next = c;
		else
			e->awaiting_head = c;
		e->awaiting_tail = c;
		c = next;
	}
	pthread_cond_signal(&e->writer_wake);
	return NULL;
}

/* Wakes the timer if something now falls due before what it sleeps until. */
static void poke_timer_locked(struct engine *e)
{
	if (e->own_timer && hf__state_next_due(e->st) < e->timer_due)
		pthread_cond_signal(&e->timer_wake);
}

static bool is_change(hf_op op)
{
	return op == HF_OP_PUT_RESOURCE || op == HF_OP_DELETE_RESOURCE || op == HF_OP_ACQUIRE ||
	       op == HF_OP_EXTEND || op == HF_OP_CONFIRM || op == HF_OP_RELEASE;
}

/* Events older than the memory cache are read from disk, outside the lock: they are
 * durable and never change. Returns the last seq to read there, or 0 to read from memory;
 * decided under the lock so that the cache cannot move between deciding and reading. */
static uint64_t old_events_upto(struct engine *e, const struct hf__call *call)
{
	uint64_t oldest = hf__state_oldest_cached_seq(e->st);
	uint64_t durable = hf__state_durable_seq(e->st);
	if (oldest == 0 || call->req.after + 1 >= oldest)
		return 0;
	uint64_t upto = oldest - 1 < durable ? oldest - 1 : durable;
	return upto > call->req.after ? upto : 0;
}

static void read_old_events(struct engine *e, struct hf__call *call, uint64_t upto,
                            uint64_t durable)
{
	hf_reply *r = call->reply;
	hf__journal_read_events(e->journal, call->req.after, upto, call->req.limit, &r->events,
	                        &r->n_events, &r->error);
	r->last_seq = durable;
	hf__call_done(call);
}

/* One step under the lock: what is due, then the call (if any). */
static void step(struct engine *e, struct hf__call *call)
{
	struct hf__effects fx = {0};
	pthread_mutex_lock(&e->lock);
	int64_t now = hf__store_now(e->store);
	if (!e->failed)
		hf__state_sweep(e->st, now, &fx);
	uint64_t disk_upto = 0, durable = 0;
	if (call && call->req.op == HF_OP_READ_EVENTS && (disk_upto = old_events_upto(e, call))) {
		durable = hf__state_durable_seq(e->st);
	} else if (call) {
		if (e->failed && is_change(call->req.op)) {
			call->reply->error.code = e->failed;
			snprintf(call->reply->error.message, sizeof(call->reply->error.message), "%s",
			         e->failed_message);
			call->next = fx.done_head;
			fx.done_head = call;
			if (!fx.done_tail)
				fx.done_tail = call;
		} else {
			hf__state_apply(e->st, call, now, &fx);
		}
	}
	struct hf__call *now_done = finish_locked(e, &fx);
	poke_timer_locked(e);
	pthread_mutex_unlock(&e->lock);
	deliver(now_done);
	if (disk_upto)
		read_old_events(e, call, disk_upto, durable);
}

static void engine_submit(void *engine, struct hf__call *call)
{
	step(engine, call);
}

static void engine_cancel(void *engine, uint64_t call_id)
{
	struct engine *e = engine;
	struct hf__effects fx = {0};
	pthread_mutex_lock(&e->lock);
	hf__state_cancel(e->st, call_id, hf__store_now(e->store), &fx);
	struct hf__call *now_done = finish_locked(e, &fx);
	pthread_mutex_unlock(&e->lock);
	deliver(now_done);
}

static void engine_tick(void *engine)
{
	step(engine, NULL);
}

static void *writer_main(void *arg)
{
	struct engine *e = arg;
	pthread_mutex_lock(&e->lock);
	for (;;) {
		while (!e->pending_head && !e->stopping)
			pthread_cond_wait(&e->writer_wake, &e->lock);
		if (!e->pending_head)
			break;
		struct hf__jrec *batch = e->pending_head;
		e->pending_head = e->pending_tail = NULL;
		uint64_t ticket = e->appended;
		uint64_t seq = hf__state_last_seq(e->st);
		pthread_mutex_unlock(&e->lock);

		hf_error err = {0};
		int rc = hf__journal_write(e->journal, batch, &err);
		hf__jrec_free_list(batch);

		struct hf__effects fx = {0};
		pthread_mutex_lock(&e->lock);
		struct hf__call *done = NULL, **tail = &done;
		if (rc != HF_OK && !e->failed) {
			e->failed = HF_ESTORAGE;
			/* Keep the cause; the code says the rest (see docs/semantics.md). */
			memcpy(e->failed_message, err.message, sizeof(e->failed_message));
		}
		if (rc == HF_OK) {
			e->durable = ticket;
			hf__state_durable(e->st, seq, &fx);
		}
		/* On failure every waiting change fails: none of them may be acknowledged. */
		while (e->awaiting_head &&
		       (rc != HF_OK || (uint64_t)(uintptr_t)e->awaiting_head->engine_data <= ticket)) {
			struct hf__call *c = e->awaiting_head;
			e->awaiting_head = c->next;
			if (rc != HF_OK) {
				hf_reply_free(c->reply);
				c->reply = calloc(1, sizeof(*c->reply));
				if (c->reply) {
					c->reply->op = c->req.op;
					c->reply->error.code = HF_ESTORAGE;
					snprintf(c->reply->error.message, sizeof(c->reply->error.message), "%s",
					         e->failed_message);
				}
			}
			c->next = NULL;
			*tail = c;
			tail = &c->next;
		}
		if (!e->awaiting_head)
			e->awaiting_tail = NULL;
		if (rc != HF_OK) {
			hf__jrec_free_list(e->pending_head);
			e->pending_head = e->pending_tail = NULL;
		}
		*tail = fx.done_head;
		pthread_mutex_unlock(&e->lock);
		deliver(done);
		pthread_mutex_lock(&e->lock);
	}
	pthread_mutex_unlock(&e->lock);
	return NULL;
}

static void *timer_main(void *arg)
{
	struct engine *e = arg;
	pthread_mutex_lock(&e->lock);
	while (!e->stopping) {
		if (e->failed) {
			/* The state no longer changes: nothing will fall due. */
			pthread_cond_wait(&e->timer_wake, &e->lock);
			continue;
		}
		int64_t due = hf__state_next_due(e->st);
		int64_t now = hf_now_ms();
		if (due <= now) {
			e->timer_due = INT64_MIN;
			pthread_mutex_unlock(&e->lock);
			step(e, NULL);
			pthread_mutex_lock(&e->lock);
			continue;
		}
		/* Sleep until it falls due (at most a minute: the clock may jump). */
		int64_t until = due - now > 60000 ? now + 60000 : due;
		e->timer_due = until;
		struct timespec ts = {.tv_sec = until / 1000, .tv_nsec = (until % 1000) * 1000000};
		pthread_cond_timedwait(&e->timer_wake, &e->lock, &ts);
	}
	pthread_mutex_unlock(&e->lock);
	return NULL;
}

static void engine_free(struct engine *e)
{
	hf__state_free(e->st);
	hf__journal_close(e->journal);
	pthread_cond_destroy(&e->timer_wake);
	pthread_cond_destroy(&e->writer_wake);
	pthread_mutex_destroy(&e->lock);
	free(e);
}

static int engine_open(hf_store *store, const char *url, const hf_options *opt, void **out,
                       hf_error *err)
{
	const char *path = url + strlen("file:");
	if (strncmp(path, "//", 2) == 0)
		path += 2; /* file://PATH is accepted too */
	if (!*path)
		return hf__err(err, HF_EINVAL, "file: url needs a path, as in file:./var/holdfast.db");
	struct engine *e = calloc(1, sizeof(*e));
	if (!e)
		return hf__err_code(err, HF_ENOMEM);
	e->store = store;
	e->own_timer = opt->clock == NULL;
	e->timer_due = INT64_MAX;
	pthread_mutex_init(&e->lock, NULL);
	pthread_cond_init(&e->writer_wake, NULL);
	pthread_cond_init(&e->timer_wake, NULL);
	int rc;
	if (!(e->st = hf__state_new(opt))) {
		rc = hf__err_code(err, HF_ENOMEM);
		goto fail;
	}
	if ((rc = hf__journal_open(path, &e->journal, err)) != HF_OK ||
	    (rc = hf__journal_load(e->journal, e->st, err)) != HF_OK)
		goto fail;
	if ((errno = pthread_create(&e->writer, NULL, writer_main, e)) != 0) {
		rc = hf__err(err, HF_EINTERNAL, "cannot start the journal writer: %s", strerror(errno));
		goto fail;
	}
	if (e->own_timer && (errno = pthread_create(&e->timer, NULL, timer_main, e)) != 0) {
		rc = hf__err(err, HF_EINTERNAL, "cannot start the timer: %s", strerror(errno));
		pthread_mutex_lock(&e->lock);
		e->stopping = true;
		pthread_cond_signal(&e->writer_wake);
		pthread_mutex_unlock(&e->lock);
		pthread_join(e->writer, NULL);
		goto fail;
	}
	*out = e;
	return HF_OK;
fail:
	engine_free(e);
	return rc;
}

static void engine_close(void *engine)
{
	struct engine *e = engine;
	struct hf__effects fx = {0};
	pthread_mutex_lock(&e->lock);
	hf__state_fail_waits(e->st, HF_ECLOSED, hf__store_now(e->store), &fx);
	struct hf__call *now_done = finish_locked(e, &fx);
	e->stopping = true;
	pthread_cond_signal(&e->writer_wake);
	pthread_cond_signal(&e->timer_wake);
	pthread_mutex_unlock(&e->lock);
	deliver(now_done);
	if (e->own_timer)
		pthread_join(e->timer, NULL);
	/* The writer drains what is pending before it stops: every change is durable. */
	pthread_join(e->writer, NULL);
	engine_free(e);
}

const struct hf__engine_ops hf__engine_embedded = {
    .scheme = "file",
    .open = engine_open,
    .close = engine_close,
    .submit = engine_submit,
    .cancel = engine_cancel,
    .tick = engine_tick,
};
