/*
 * engine.c — the embedded engine (file:PATH) as an hf__engine_ops table: one lock around
 * the in-memory state, a writer thread that commits batches of journal records (group
 * commit: every change made while one commit runs shares the next, and an event loop's
 * open batch is committed whole), and a timer thread that applies lease expiries and wait
 * deadlines when they fall due.
 *
 * No answer reveals anything that is not durable: every answer, whether its step wrote
 * records or not, is released only once everything applied before it is on disk (it takes
 * the ticket of the newest batch handed to the writer). A failed commit rolls the memory
 * back to the journal, fails the calls that depended on it, and leaves the store refusing
 * changes until a probe commit (retried with backoff) succeeds.
 */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/embedded/embedded.h"

#define RETRY_FIRST_MS 100   /* the first probe after a failed commit */
#define RETRY_MAX_MS 10000   /* the backoff doubles up to this */

struct engine {
	hf_store *store;
	hf_options opt; /* to rebuild the state from the journal */
	char *path;
	struct hf__state *st;
	struct hf__journal *journal;
	bool own_timer;

	pthread_mutex_t lock; /* guards everything below and the state */
	/* Group commit: records waiting for the writer, and calls waiting for their records. */
	struct hf__jrec *pending_head, *pending_tail;
	uint64_t appended;   /* batches handed to the writer: a change's ticket */
	uint64_t durable;    /* tickets on disk */
	int open_batches;    /* hf_store_batch_begin without its end yet */
	/* What was pending when the open batch began: the writer may take that much (the
	 * prefix up to ready_tail, with its ticket and last event seq) but not the open batch. */
	struct hf__jrec *ready_tail;
	uint64_t ready_ticket, ready_seq;
	struct hf__call *awaiting_head, *awaiting_tail; /* ticket order; ticket in engine_data */
	int failed;          /* the state could not be kept (out of memory): no more changes */
	char failed_message[HF_MESSAGE_MAX];
	/* After a failed commit: memory equals the journal again, changes are refused, and the
	 * writer probes with backoff until a commit succeeds. */
	bool degraded;
	char degraded_message[HF_MESSAGE_MAX];
	int64_t retry_at;    /* monotonic ms of the next probe */
	int64_t backoff_ms;
	bool stopping;
	/* Set under the lock when the writer has work; the signal goes after the unlock
	 * (unlock_and_wake), so that the writer wakes to a free lock instead of going back to
	 * sleep on it (a second wake-up, each one a trip through a loaded machine's scheduler). */
	bool writer_due;
	pthread_cond_t writer_wake;
	pthread_t writer;
	/* Timer (system clock only). */
	pthread_cond_t timer_wake;
	int64_t timer_due; /* what the timer thread sleeps until */
	pthread_t timer;
	/* Event retention (written by the writer thread, read under the lock). */
	struct hf__trim_policy trim;
	uint64_t trimmed_upto;      /* reads after a seq below this fail: HF_ETRIMMED */
	int64_t trim_checked_ms;    /* monotonic ms of the last trim attempt */
	uint64_t trim_logged_floor; /* the checkpoint last reported as holding trimming back */
};

#define TRIM_EVERY_MS 200 /* at most this often: each trim is a commit of its own */
/* The event revisions are folded into their counters (hf__journal_fold) once this many events
 * were written since the last fold: a fold is a commit of its own, off the answer path, and
 * bounds the events a load folds in memory. */
#define FOLD_EVERY 4096

static int64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The store's lines on stderr (hf__log_line, core.h): a store that cannot write
 * must say so. */
static void log_line(const char *level, const char *msg, const char *path, const char *error)
{
	hf__log_line(level, "file", msg, path, error);
}

/* Replaces a call's reply with an error; without allocating (the store may be out of memory:
 * a call must never complete without a reply). */
static void fail_call(struct hf__call *c, int code, const char *message)
{
	if (!c->reply && !(c->reply = calloc(1, sizeof(*c->reply))))
		return; /* never: every call is made with its reply */
	hf__reply_clear(c->reply);
	c->reply->op = c->req.op;
	c->reply->error.code = code;
	snprintf(c->reply->error.message, sizeof(c->reply->error.message), "%s", message);
}

static void deliver(struct hf__call *list)
{
	while (list) {
		struct hf__call *next = list->next;
		hf__call_done(list);
		list = next;
	}
}

/* Queues calls to be delivered once batch `ticket` is durable. */
static void await_locked(struct engine *e, struct hf__call *list, uint64_t ticket)
{
	for (struct hf__call *c = list; c;) {
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
}

/* Releases the lock, then wakes the writer if something under it gave it work. */
static void unlock_and_wake(struct engine *e)
{
	bool wake = e->writer_due;
	e->writer_due = false;
	pthread_mutex_unlock(&e->lock);
	if (wake)
		pthread_cond_signal(&e->writer_wake);
}

/* Hands a step's effects on, with the lock held (release it with unlock_and_wake); returns
 * the calls to deliver now. */
static struct hf__call *finish_locked(struct engine *e, struct hf__effects *fx)
{
	if (fx->failed && !e->failed) {
		e->failed = HF_ESTORAGE;
		snprintf(e->failed_message, sizeof(e->failed_message),
		         "out of memory while recording a change; restart to recover from the journal");
		log_line("error", "store stopped taking changes", e->path, e->failed_message);
	}
	if (fx->failed) {
		/* A change of this step is in memory but could not be recorded: nothing of it may
		 * be answered as done (it would not be there after a restart). */
		hf__jrec_free_list(fx->rec_head);
		for (struct hf__call *c = fx->done_head; c; c = c->next)
			fail_call(c, HF_ESTORAGE, e->failed_message);
		return fx->done_head;
	}
	if (!fx->rec_head) {
		/* No change of its own, but its answer may show (or depend on) changes still on
		 * their way to disk: it waits for everything handed to the writer so far. */
		if (e->appended == e->durable)
			return fx->done_head;
		await_locked(e, fx->done_head, e->appended);
		return NULL;
	}
	if (e->failed || e->degraded) {
		/* Nothing more reaches the disk: refuse what depended on it. (Not reached while
		 * degraded: changes are refused before they are applied.) */
		hf__jrec_free_list(fx->rec_head);
		for (struct hf__call *c = fx->done_head; c; c = c->next)
			fail_call(c, HF_ESTORAGE, e->failed ? e->failed_message : e->degraded_message);
		return fx->done_head;
	}
	if (e->pending_tail)
		e->pending_tail->next = fx->rec_head;
	else
		e->pending_head = fx->rec_head;
	e->pending_tail = fx->rec_tail;
	await_locked(e, fx->done_head, ++e->appended);
	if (!e->open_batches)
		e->writer_due = true;
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
	       op == HF_OP_EXTEND || op == HF_OP_CONFIRM || op == HF_OP_RELEASE ||
	       op == HF_OP_SAGA_TYPE_PUT || op == HF_OP_SAGA_SAVE;
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

static void refuse_trimmed(struct hf__call *call, uint64_t upto, struct hf__effects *fx);

static void read_old_events(struct engine *e, struct hf__call *call, uint64_t upto,
                            uint64_t durable)
{
	hf_reply *r = call->reply;
	hf__journal_read_events(e->journal, call->req.after, upto, call->req.limit, &r->events,
	                        &r->n_events, &r->error);
	r->last_seq = durable;
	/* Retention may have trimmed past `after` since the check under the lock: the log is
	 * gap-free here, so a first event other than after + 1 means just that. */
	if (r->error.code == HF_OK && (r->n_events == 0 || r->events[0].seq != call->req.after + 1)) {
		uint64_t gone = r->n_events ? r->events[0].seq - 1 : upto;
		for (size_t i = 0; i < r->n_events; i++)
			hf__event_clear(&r->events[i]);
		free(r->events);
		r->events = NULL;
		r->n_events = 0;
		refuse_trimmed(call, gone, NULL);
	}
	hf__call_done(call);
}

/* A read of events that retention has removed: an error naming the oldest one kept,
 * never a silent jump over the missing ones. With fx, the call is queued there to complete. */
static void refuse_trimmed(struct hf__call *call, uint64_t upto, struct hf__effects *fx)
{
	hf__reply_trimmed(call->reply, upto);
	if (!fx)
		return; /* the caller completes it */
	call->next = fx->done_head;
	fx->done_head = call;
	if (!fx->done_tail)
		fx->done_tail = call;
}

/* One step under the lock: what is due, then the call (if any). */
static void step(struct engine *e, struct hf__call *call)
{
	struct hf__effects fx = {0};
	pthread_mutex_lock(&e->lock);
	int64_t now = hf__store_now(e->store);
	/* While changes cannot be made, nothing falls due either (an expiry is a change): reads
	 * show the last durable state. */
	if (!e->failed && !e->degraded)
		hf__state_sweep(e->st, now, &fx);
	uint64_t disk_upto = 0, durable = 0;
	if (call && call->req.op == HF_OP_READ_EVENTS && call->req.after < e->trimmed_upto) {
		refuse_trimmed(call, e->trimmed_upto, &fx);
	} else if (call && call->req.op == HF_OP_READ_EVENTS &&
	           (disk_upto = old_events_upto(e, call))) {
		durable = hf__state_durable_seq(e->st);
	} else if (call) {
		/* Failed: the memory may hold a change the journal lacks, so reads are refused
		 * too. Degraded: the memory was rebuilt from the journal; reads are served. */
		if (e->failed || (e->degraded && is_change(call->req.op))) {
			call->reply->error.code = HF_ESTORAGE;
			snprintf(call->reply->error.message, sizeof(call->reply->error.message), "%s",
			         e->failed ? e->failed_message : e->degraded_message);
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
	unlock_and_wake(e);
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
	unlock_and_wake(e);
	deliver(now_done);
}

static void engine_tick(void *engine)
{
	step(engine, NULL);
}

/* An event loop's turn: its changes go to the writer together when the turn ends, so that
 * they share one commit instead of each taking the writer's next; what was pending before
 * the turn is not held up by it. Nothing is answered earlier for it: the calls still wait
 * for their tickets. */
static void engine_batch(void *engine, bool open)
{
	struct engine *e = engine;
	pthread_mutex_lock(&e->lock);
	if (open && e->open_batches++ == 0) {
		e->ready_tail = e->pending_tail;
		e->ready_ticket = e->appended;
		e->ready_seq = hf__state_last_seq(e->st);
	} else if (!open && --e->open_batches == 0 && e->pending_head) {
		e->writer_due = true;
	}
	unlock_and_wake(e);
}

/* After a failed commit, with the lock held: every call that waited for the disk fails, the
 * memory is rebuilt from the journal (which the failed transaction left as it was), parked
 * waits end (their queues were built on the lost changes), and changes are refused until a
 * probe commit succeeds. Returns the calls to deliver. */
static struct hf__call *rollback_locked(struct engine *e, const hf_error *cause)
{
	snprintf(e->degraded_message, sizeof(e->degraded_message),
	         "the store cannot write its journal (%.150s); changes are refused until a retry "
	         "succeeds",
	         cause->message);
	struct hf__call *done = e->awaiting_head;
	for (struct hf__call *c = done; c; c = c->next)
		fail_call(c, HF_ESTORAGE, e->degraded_message);
	e->awaiting_head = e->awaiting_tail = NULL;
	hf__jrec_free_list(e->pending_head);
	e->pending_head = e->pending_tail = e->ready_tail = NULL;
	e->durable = e->appended; /* nothing is on its way to disk any more */

	struct hf__effects fx = {0};
	hf__state_drop_waits(e->st, HF_ESTORAGE, e->degraded_message, &fx);
	if (fx.done_tail) {
		fx.done_tail->next = done;
		done = fx.done_head;
	}
	hf_error err = {0};
	struct hf__state *fresh = NULL;
	int rc = fx.failed ? hf__err_code(&err, HF_ENOMEM)
	         : !(fresh = hf__state_new(&e->opt)) ? hf__err_code(&err, HF_ENOMEM)
	                                             : hf__journal_load(e->journal, fresh, &err);
	if (rc != HF_OK) {
		/* Memory cannot be made equal to the journal: stop taking changes for good. */
		hf__state_free(fresh);
		e->failed = HF_ESTORAGE;
		snprintf(e->failed_message, sizeof(e->failed_message),
		         "a journal commit failed and the store could not be reloaded (%.120s); restart "
		         "to recover from the journal",
		         err.message);
		log_line("error", "store stopped taking changes", e->path, e->failed_message);
		return done;
	}
	hf__state_free(e->st);
	e->st = fresh;
	e->degraded = true;
	e->backoff_ms = RETRY_FIRST_MS;
	e->retry_at = mono_ms() + e->backoff_ms;
	log_line("error", "journal commit failed: changes are refused until a retry succeeds",
	         e->path, cause->message);
	return done;
}

/* A probe while degraded, called with the lock held (and released around the write). */
static void probe_locked(struct engine *e)
{
	int64_t now = hf__store_now(e->store);
	pthread_mutex_unlock(&e->lock);
	hf_error err = {0};
	int rc = hf__journal_probe(e->journal, now, &err);
	pthread_mutex_lock(&e->lock);
	if (rc == HF_OK) {
		e->degraded = false;
		log_line("info", "journal writes again: changes are taken", e->path, NULL);
		pthread_cond_signal(&e->timer_wake); /* what fell due meanwhile is applied now */
		return;
	}
	e->backoff_ms = e->backoff_ms * 2 > RETRY_MAX_MS ? RETRY_MAX_MS : e->backoff_ms * 2;
	e->retry_at = mono_ms() + e->backoff_ms;
}

/* Retention is tried after a commit, at most every TRIM_EVERY_MS, when the core's rule says
 * a pass is worth it (hf__trim_due: a quarter over keep_count, or an age set). */
static bool trim_due_locked(struct engine *e, uint64_t last_seq)
{
	if (!hf__trim_enabled(&e->trim))
		return false;
	int64_t now = mono_ms();
	if (now - e->trim_checked_ms < TRIM_EVERY_MS ||
	    !hf__trim_due(&e->trim, last_seq, e->trimmed_upto))
		return false;
	e->trim_checked_ms = now;
	return true;
}

/* In the writer thread (it owns the journal's connection), outside the lock. */
static void trim_events(struct engine *e, uint64_t last_seq)
{
	struct hf__trim_plan plan;
	uint64_t trimmed = 0;
	hf_error err = {0};
	if (hf__journal_trim_events(e->journal, &e->trim, hf__store_now(e->store), last_seq, &plan,
	                            &trimmed, &err) != HF_OK) {
		log_line("warn", "event retention failed", e->path, err.message);
		return;
	}
	hf__trim_log("file", e->path, &e->trim, &plan, trimmed, &e->trim_logged_floor);
	pthread_mutex_lock(&e->lock);
	if (plan.upto > e->trimmed_upto)
		e->trimmed_upto = plan.upto;
	pthread_mutex_unlock(&e->lock);
}

/* In the writer thread, outside the lock, after a commit's answers are out. */
static void fold_revisions(struct engine *e, uint64_t last_seq)
{
	if (last_seq - hf__journal_folded(e->journal) < FOLD_EVERY)
		return;
	hf_error err = {0};
	if (hf__journal_fold(e->journal, &err) != HF_OK)
		log_line("warn", "folding event revisions failed (the next load folds them)", e->path,
		         err.message);
}

static void *writer_main(void *arg)
{
	struct engine *e = arg;
	hf__thread_name("hf-writer");
	pthread_mutex_lock(&e->lock);
	for (;;) {
		/* An open batch is still growing: only what came before it is taken. At close
		 * nothing waits for it. */
		bool held = e->open_batches && !e->stopping;
		if (!e->pending_head || (held && !e->ready_tail)) {
			if (e->stopping)
				break;
			if (e->degraded && !e->failed) {
				int64_t wait = e->retry_at - mono_ms();
				if (wait <= 0) {
					probe_locked(e);
				} else {
					struct timespec ts;
					hf__timespec_in_ms(&ts, CLOCK_REALTIME, wait);
					pthread_cond_timedwait(&e->writer_wake, &e->lock, &ts);
				}
			} else {
				pthread_cond_wait(&e->writer_wake, &e->lock);
			}
			continue;
		}
		struct hf__jrec *batch = e->pending_head, *last = e->pending_tail;
		uint64_t ticket = e->appended;
		uint64_t seq = hf__state_last_seq(e->st);
		if (held) {
			last = e->ready_tail;
			ticket = e->ready_ticket;
			seq = e->ready_seq;
		}
		e->pending_head = last->next;
		last->next = NULL;
		if (!e->pending_head)
			e->pending_tail = NULL;
		e->ready_tail = NULL;
		pthread_mutex_unlock(&e->lock);

		hf_error err = {0};
		int rc = hf__journal_write(e->journal, batch, &err);
		hf__jrec_free_list(batch);

		struct hf__effects fx = {0};
		pthread_mutex_lock(&e->lock);
		struct hf__call *done = NULL, **tail = &done;
		if (rc != HF_OK) {
			done = rollback_locked(e, &err);
		} else {
			e->durable = ticket;
			hf__state_durable(e->st, seq, &fx);
			while (e->awaiting_head &&
			       (uint64_t)(uintptr_t)e->awaiting_head->engine_data <= ticket) {
				struct hf__call *c = e->awaiting_head;
				e->awaiting_head = c->next;
				c->next = NULL;
				*tail = c;
				tail = &c->next;
			}
			if (!e->awaiting_head)
				e->awaiting_tail = NULL;
			*tail = fx.done_head;
		}
		bool trim = rc == HF_OK && trim_due_locked(e, seq);
		pthread_mutex_unlock(&e->lock);
		deliver(done);
		if (trim)
			trim_events(e, seq); /* folds too */
		else if (rc == HF_OK)
			fold_revisions(e, seq);
		/* The WAL's checkpoint, which SQLite would have run inside the commit, before its
		 * answers: now that they are out. */
		hf_error cerr = {0};
		if (rc == HF_OK && hf__journal_checkpoint(e->journal, &cerr) != HF_OK)
			log_line("warn", "WAL checkpoint failed", e->path, cerr.message);
		pthread_mutex_lock(&e->lock);
	}
	pthread_mutex_unlock(&e->lock);
	return NULL;
}

static void *timer_main(void *arg)
{
	struct engine *e = arg;
	hf__thread_name("hf-timer");
	pthread_mutex_lock(&e->lock);
	while (!e->stopping) {
		if (e->failed || e->degraded) {
			/* The state does not change now: nothing will fall due (the writer wakes us
			 * when changes are taken again). */
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
	free(e->path);
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
	e->opt = *opt;
	e->opt.fallback_url = NULL; /* not ours to keep */
	e->own_timer = opt->clock == NULL;
	e->timer_due = INT64_MAX;
	pthread_mutex_init(&e->lock, NULL);
	pthread_cond_init(&e->writer_wake, NULL);
	pthread_cond_init(&e->timer_wake, NULL);
	int rc;
	if (!(e->path = hf__strdup(path)) || !(e->st = hf__state_new(opt))) {
		rc = hf__err_code(err, HF_ENOMEM);
		goto fail;
	}
	if ((rc = hf__journal_open(path, &e->journal, err)) != HF_OK ||
	    (rc = hf__journal_load(e->journal, e->st, err)) != HF_OK)
		goto fail;
	hf__trim_policy_from(&e->trim, opt);
	e->trimmed_upto = hf__journal_trimmed_upto(e->journal);
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
	/* A clean close leaves nothing for the next load to fold (the writer is gone: the
	 * journal is ours). */
	hf_error err = {0};
	if (!e->failed && !e->degraded && hf__journal_fold(e->journal, &err) != HF_OK)
		log_line("warn", "folding event revisions at close failed (the next load folds them)",
		         e->path, err.message);
	engine_free(e);
}

static int engine_health(void *engine, hf_error *err)
{
	struct engine *e = engine;
	int rc = HF_OK;
	pthread_mutex_lock(&e->lock);
	if (e->failed)
		rc = hf__err(err, HF_ESTORAGE, "%s", e->failed_message);
	else if (e->degraded)
		rc = hf__err(err, HF_ESTORAGE, "%s", e->degraded_message);
	pthread_mutex_unlock(&e->lock);
	return rc;
}

const struct hf__engine_ops hf__engine_embedded = {
    .scheme = "file",
    .open = engine_open,
    .close = engine_close,
    .submit = engine_submit,
    .cancel = engine_cancel,
    .tick = engine_tick,
    .batch = engine_batch,
    .health = engine_health,
    .sagas = true,
};
