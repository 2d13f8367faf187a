/*
 * engine.c — the PostgreSQL engine (postgres://) as an hf__engine_ops table: URL parsing,
 * worker threads that run calls on their own connections, and one waiter thread that owns
 * the parked acquires and event reads of this instance: LISTEN/NOTIFY wake-ups, a slow
 * safety re-check, wait deadlines, cancels, heartbeats of its waiter rows, lease expiry.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "engine/postgres/pg.h"

/* Connections running calls (URL parameter workers=N): changes on different resources run
 * side by side, and their COMMITs share WAL flushes (group commit): with 2, at most 2 commits
 * shared a flush and uncontended locks waited on the WAL; 8 measured 2.3x the throughput of
 * 2 (docs/operations.md, "Schema version 7"). More is not always faster: changes of the same
 * resources queue on their rows, and with 16 a lease's end under 3 x 16 connections
 * (pg_scaleout) convoyed the sweeps on the hot rows. 8 became the default once one sweep per
 * instance runs at a time (ops.c, tx_begin): before, a churn of lapsing leases
 * (apps_rides_concurrent_postgres) had a change wait past lock_timeout behind the sweeps
 * ("Schema version 8"). */
#define DEFAULT_WORKERS 8
/* Lanes of batchable calls (URL parameter lanes=N; take_calls): a call's lane follows its
 * resource, and each lane runs one batch at a time while the calls that queue meanwhile wait
 * for its next one. So one resource's changes never race each other for its row from two
 * workers of the instance, and different resources still run side by side. In-process, 32
 * clients: any worker batching measured 1,334 uncontended grants/s and 603 on one hot
 * resource; 2 batches at a time (no lanes) 1,558 and 855; 1 at a time 1,093 and 926
 * (docs/operations.md, "Batches"). */
#define DEFAULT_LANES 2
#define MAX_LANES 64
/* Which lane each recent hold of this instance went to (its acquire's resource), so that its
 * release or confirm follows it there; a slot overwritten or a hold of another instance
 * falls back to a hash of its id: a lane is a hint for speed, never a rule. */
#define HOLD_LANES 4096
#define MAX_WORKERS 64
#define RECHECK_MS 1000 /* the safety re-check when no notification came */
#define CANCEL_KEEP_MS 10000

struct pwait {
	struct hf__call *call;
	int64_t ticket;   /* 0: an event read */
	int64_t deadline; /* monotonic ms */
	bool cancelled;
	char unsure[HF_ID_LEN + 1]; /* a hold its grant may have committed unheard (try_waiter) */
	struct pwait *next;
};

/* A waiter row nobody waits on any more, to be removed (and a grant in doubt, `unsure`, to
 * be released) once the database can be reached: see hf__pg_forget. Until then nobody
 * renews its lease, so it lapses within HF__PG_WAITER_LEASE_MS anyway. */
struct forget {
	int64_t ticket;
	char unsure[HF_ID_LEN + 1];
};

struct forgets {
	struct forget *v;
	size_t n, cap;
};

struct cancel {
	uint64_t id;
	int64_t at; /* monotonic ms of the hf_cancel() */
};

struct pg {
	hf_store *store;
	struct hf__pg_conf conf;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct hf__call *q_head, *q_tail; /* calls of their own (not hf__pg_batchable) */
	bool closing;
	pthread_t workers[MAX_WORKERS];
	pthread_t waiter;
	int wake[2];            /* pipe: wakes the waiter thread */
	struct pwait *incoming; /* handed over by workers, taken by the waiter thread */
	size_t n_parked;        /* acquires parked or being parked: max_waiters */
	bool cancel_pending;
	struct cancel *cancels; /* ids to cancel, taken by the waiter thread */
	size_t n_cancels, cap_cancels;
	struct forgets forgets; /* from workers (parks in doubt), taken by the waiter thread */
	atomic_int lose_commit; /* the test hook's armed HF__PG_LOSE_* bits (conf.lose_commit) */
	atomic_int notify_pending; /* changes committed that a NOTIFY must announce (conf) */
	_Atomic int64_t connected_ms; /* the last successful connect of any connection (conf) */
	struct hf__pg_sweeper sweeper; /* one sweep at a time (conf) */
	struct lane {
		struct hf__call *head, *tail; /* batchable calls queued for this lane */
		bool busy;                    /* a worker runs the lane's batch (take_calls) */
	} lanes[MAX_LANES];
	int next_lane; /* where take_calls starts looking: the lanes take turns */
	bool own_turn; /* take_calls looks at the calls of their own first */
	struct hold_lane {
		uint64_t id_hash; /* hf__hash_str of the hold id; an empty slot is 0 */
		int lane;
	} hold_lanes[HOLD_LANES];   /* with mu */
};

static int64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void wake_waiter(struct pg *e)
{
	char b = 1;
	ssize_t n = write(e->wake[1], &b, 1);
	(void)n; /* a full pipe already wakes it */
}

/* Sends the NOTIFY that changes committed since the last one asked for (tx_commit in ops.c),
 * in a transaction of its own: one NOTIFY for many changes, and no change's COMMIT waits for
 * PostgreSQL's notify queue lock. Asked again if the database cannot be reached now. */
static void notify_pending(struct pg *e, struct hf__pgc *c)
{
	if (!atomic_exchange(&e->notify_pending, 0))
		return;
	char sql[128];
	/* The channel is "hf_" + a schema name of [a-z0-9_]: safe as a literal. */
	snprintf(sql, sizeof(sql), "SELECT pg_notify('%s', '')", e->conf.channel);
	PGresult *r = PQexec(c->conn, sql);
	if (PQresultStatus(r) != PGRES_TUPLES_OK)
		atomic_store(&e->notify_pending, 1);
	PQclear(r);
}

/* Appends (ticket, unsure) to l; false if out of memory (the row then just lapses). */
static bool forgets_add(struct forgets *l, int64_t ticket, const char *unsure)
{
	if (l->n == l->cap) {
		size_t cap = l->cap ? 2 * l->cap : 16;
		struct forget *v = realloc(l->v, cap * sizeof(*v));
		if (!v)
			return false;
		l->v = v;
		l->cap = cap;
	}
	l->v[l->n].ticket = ticket;
	snprintf(l->v[l->n].unsure, sizeof(l->v[l->n].unsure), "%s", unsure ? unsure : "");
	l->n++;
	return true;
}

/* Tries each entry once; keeps those the database could not be reached for. */
static void forgets_run(struct hf__pgc *c, struct forgets *l)
{
	size_t keep = 0;
	for (size_t i = 0; i < l->n; i++)
		if (hf__pg_forget(c, l->v[i].ticket, l->v[i].unsure, NULL) == HF_EENGINE)
			l->v[keep++] = l->v[i];
	l->n = keep;
}

/* Hands a worker's row in doubt to the waiter thread. */
static void forget_later(struct pg *e, int64_t ticket)
{
	pthread_mutex_lock(&e->mu);
	forgets_add(&e->forgets, ticket, NULL);
	pthread_mutex_unlock(&e->mu);
	wake_waiter(e);
}

/* ---- workers ---- */

/* The lane of a batchable call, with e->mu held: an acquire's by its first name in name
 * order; a hold change's by where its acquire went, if this instance remembers it. */
static int lane_of(const struct pg *e, const struct hf__call *call)
{
	int lanes = e->conf.lanes;
	if (call->req.op == HF_OP_ACQUIRE) {
		const hf_acquire_req *a = &call->req.acquire;
		const char *first = a->claims[0].name;
		for (size_t i = 1; i < a->n_claims; i++)
			if (strcmp(a->claims[i].name, first) < 0)
				first = a->claims[i].name;
		return (int)(hf__hash_str(first) % (uint64_t)lanes);
	}
	uint64_t h = hf__hash_str(call->req.hold_id ? call->req.hold_id : "");
	const struct hold_lane *hl = &e->hold_lanes[h % HOLD_LANES];
	return hl->id_hash == h && hl->lane < lanes ? hl->lane : (int)(h % (uint64_t)lanes);
}

/* With e->mu held: the first call of the instance's own queue into batch[0]; 0: none. */
static size_t take_own(struct pg *e, struct hf__call **batch)
{
	if (!e->q_head)
		return 0;
	batch[0] = e->q_head;
	if (!(e->q_head = e->q_head->next))
		e->q_tail = NULL;
	return 1;
}

/* With e->mu held: the calls queued for the first lane from e->next_lane that runs no batch,
 * up to HF__PG_BATCH_MAX in their order, into batch[]; the lane is then busy and *lane says
 * which (closing: the calls are taken whatever runs, the lane is not marked, *lane stays).
 * 0: none. */
static size_t take_lane(struct pg *e, struct hf__call **batch, int *lane)
{
	for (int k = 0; k < e->conf.lanes; k++) {
		int l = (e->next_lane + k) % e->conf.lanes;
		struct lane *q = &e->lanes[l];
		if (!q->head || (q->busy && !e->closing))
			continue;
		size_t n = 0;
		while (q->head && n < HF__PG_BATCH_MAX) {
			batch[n++] = q->head;
			q->head = q->head->next;
		}
		if (!q->head)
			q->tail = NULL;
		if (!e->closing) {
			q->busy = true;
			*lane = l;
		}
		e->next_lane = (l + 1) % e->conf.lanes;
		return n;
	}
	return 0;
}

/* With e->mu held: takes what a worker may run now into batch[]: a call of its own
 * (take_own), or a lane's calls, which run as one transaction (take_lane). The two kinds take
 * turns when both wait, and so do the lanes: none starves another. Returns the number taken
 * (0: nothing may run now) and in *lane the lane taken, -1 for none (a call of its own, or
 * closing: the lanes' calls are then answered at once). */
static size_t take_calls(struct pg *e, struct hf__call **batch, int *lane)
{
	*lane = -1;
	bool own = e->own_turn;
	size_t n = own ? take_own(e, batch) : take_lane(e, batch, lane);
	if (!n) {
		own = !own;
		n = own ? take_own(e, batch) : take_lane(e, batch, lane);
	}
	if (n)
		e->own_turn = !own;
	return n;
}

/* Runs a batch of batchable calls (take_calls) on `lane` (-1: closing), e->mu held on entry
 * and on return. */
static void run_batch(struct pg *e, struct hf__pgc *c, struct hf__call **batch, size_t n,
                      int lane)
{
	pthread_mutex_unlock(&e->mu);
	enum hf__pg_batched out[HF__PG_BATCH_MAX];
	if (lane < 0) {
		for (size_t i = 0; i < n; i++) {
			hf__err(&batch[i]->reply->error, HF_ECLOSED, "the store is closing");
			out[i] = HF__PG_BATCH_DONE;
		}
	} else if (n > 1) {
		hf__pg_call_batch(c, batch, n, out);
	} else {
		out[0] = HF__PG_BATCH_AGAIN; /* alone: a call of its own */
	}
	uint64_t granted[HF__PG_BATCH_MAX];
	for (size_t i = 0; i < n; i++) {
		if (out[i] != HF__PG_BATCH_DONE) {
			/* Never parks (hf__pg_batchable): DONE, with no row in doubt. */
			int64_t ticket = 0, unsure = 0;
			c->skip_call = out[i] == HF__PG_BATCH_SLOW;
			hf__pg_run(c, batch[i], &ticket, &unsure);
			c->skip_call = false;
		}
		const hf_reply *r = batch[i]->reply;
		granted[i] = batch[i]->req.op == HF_OP_ACQUIRE && r->error.code == HF_OK && r->hold
		                 ? hf__hash_str(r->hold->id)
		                 : 0;
	}
	pthread_mutex_lock(&e->mu);
	for (size_t i = 0; i < n && lane >= 0; i++)
		if (granted[i])
			e->hold_lanes[granted[i] % HOLD_LANES] = (struct hold_lane){granted[i], lane};
	pthread_mutex_unlock(&e->mu);
	/* The answers go out before the lane is free: the callers' next calls then have a head
	 * start to queue for its next batch. */
	for (size_t i = 0; i < n; i++)
		hf__call_done(batch[i]);
	pthread_mutex_lock(&e->mu);
	if (lane >= 0)
		e->lanes[lane].busy = false;
	pthread_cond_broadcast(&e->cv); /* the lane is free: its queued calls may go */
}

static void *worker_main(void *arg)
{
	struct pg *e = arg;
	hf__thread_name("hf-pg-worker");
	struct hf__pgc c = {.conf = &e->conf};
	struct hf__call *batch[HF__PG_BATCH_MAX];
	/* Connected now, not at its first call: a first connect attempted later, in a network
	 * partition, fails (SYN dropped, then "no route to host") where an open connection would
	 * only wait for the partition to heal; a call sent into a short partition then answered
	 * 503 instead of its outcome (reliab_faults_netns, partition-pg: 1 run in ~37). A failure
	 * here is not an error: the first call connects again. */
	hf_error ignored;
	hf__pgc_ensure(&c, &ignored);
	pthread_mutex_lock(&e->mu);
	for (;;) {
		size_t n;
		int lane;
		while (!(n = take_calls(e, batch, &lane)) && !e->closing)
			pthread_cond_wait(&e->cv, &e->mu);
		if (!n)
			break; /* closing and drained */
		if (hf__pg_batchable(batch[0])) {
			run_batch(e, &c, batch, n, lane);
			continue;
		}
		struct hf__call *call = batch[0];
		bool closing = e->closing;
		bool over = false;
		if (call->req.op == HF_OP_ACQUIRE && call->req.acquire.wait_ms > 0) {
			/* Reserve a waiter slot before parking, so two workers cannot overshoot. */
			if (e->n_parked >= e->conf.opt.max_waiters)
				over = true;
			else
				e->n_parked++;
		}
		size_t parked_now = e->n_parked;
		pthread_mutex_unlock(&e->mu);
		int64_t ticket = 0, unsure = 0;
		enum hf__pg_outcome out;
		if (closing) {
			hf__err(&call->reply->error, HF_ECLOSED, "the store is closing");
			out = HF__PG_DONE;
		} else if (over) {
			/* Only refused if it would really have to wait: try it as NOWAIT first. */
			int64_t wait = call->req.acquire.wait_ms;
			call->req.acquire.wait_ms = 0;
			out = hf__pg_run(&c, call, &ticket, &unsure);
			call->req.acquire.wait_ms = wait;
			if (call->reply->error.code == HF_EUNAVAILABLE)
				hf__err(&call->reply->error, HF_ELIMIT,
				        "%zu requests are waiting, the limit is %zu", parked_now,
				        e->conf.opt.max_waiters);
		} else {
			out = hf__pg_run(&c, call, &ticket, &unsure);
		}
		if (unsure)
			forget_later(e, unsure);
		bool reserved = call->req.op == HF_OP_ACQUIRE && call->req.acquire.wait_ms > 0 && !over;
		if (out == HF__PG_DONE) {
			if (reserved) {
				pthread_mutex_lock(&e->mu);
				e->n_parked--;
				pthread_mutex_unlock(&e->mu);
			}
			hf__call_done(call);
			pthread_mutex_lock(&e->mu);
			continue;
		}
		struct pwait *w = calloc(1, sizeof(*w));
		int64_t wait_ms = out == HF__PG_PARKED ? call->req.acquire.wait_ms : call->req.wait_ms;
		if (!w) {
			/* Cannot track it: end the wait now (its row is removed). */
			if (out == HF__PG_PARKED &&
			    !hf__pg_end_waiter(&c, call, ticket, NULL, HF_ENOMEM, "out of memory"))
				forget_later(e, ticket);
			if (reserved) {
				pthread_mutex_lock(&e->mu);
				e->n_parked--;
				pthread_mutex_unlock(&e->mu);
			}
			hf__call_done(call);
			pthread_mutex_lock(&e->mu);
			continue;
		}
		w->call = call;
		w->ticket = ticket;
		w->deadline = (int64_t)(intptr_t)call->engine_data + wait_ms;
		pthread_mutex_lock(&e->mu);
		w->next = e->incoming;
		e->incoming = w;
		pthread_mutex_unlock(&e->mu);
		wake_waiter(e);
		pthread_mutex_lock(&e->mu);
	}
	pthread_mutex_unlock(&e->mu);
	hf__pgc_close(&c);
	return NULL;
}

/* ---- the waiter thread ---- */

static bool pg_cancel_add(struct pg *e, struct cancel c);

/* Inserts w into the list in ticket order (event reads, ticket 0, go first). */
static void list_insert(struct pwait **list, struct pwait *w)
{
	while (*list && (*list)->ticket <= w->ticket)
		list = &(*list)->next;
	w->next = *list;
	*list = w;
}

static void finish(struct pg *e, struct pwait *w)
{
	if (w->ticket) {
		pthread_mutex_lock(&e->mu);
		e->n_parked--;
		pthread_mutex_unlock(&e->mu);
	}
	hf__call_done(w->call);
	free(w);
}

static bool listen_on(struct hf__pgc *c)
{
	hf_error err;
	if (c->listening && c->conn && PQstatus(c->conn) == CONNECTION_OK)
		return true;
	if (hf__pgc_ensure(c, &err) != HF_OK)
		return false;
	char *ident = PQescapeIdentifier(c->conn, c->conf->channel, strlen(c->conf->channel));
	if (!ident)
		return false;
	char sql[160];
	snprintf(sql, sizeof(sql), "LISTEN %s", ident);
	PQfreemem(ident);
	PGresult *r = PQexec(c->conn, sql);
	c->listening = PQresultStatus(r) == PGRES_COMMAND_OK;
	PQclear(r);
	return c->listening;
}

static int cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
	return (x > y) - (x < y);
}

/* Reads what the listening connection received and drains its notifications: whether any
 * came. */
static bool take_notifies(PGconn *conn)
{
	bool any = false;
	PGnotify *nf;
	PQconsumeInput(conn);
	while ((nf = PQnotifies(conn))) {
		any = true;
		PQfreemem(nf);
	}
	return any;
}

static void *waiter_main(void *arg)
{
	struct pg *e = arg;
	hf__thread_name("hf-pg-waiter");
	struct hf__pgc c = {.conf = &e->conf};
	struct pwait *list = NULL;
	struct forgets forgets = {0}; /* rows to remove once the database is back */
	int64_t last_beat = mono_ms(), next_check = 0, saga_beat = 0;
	struct hf__pg_retention retention = {0};
	bool closing = false, notified = false;
	while (!closing) {
		bool recheck = false;
		/* Take what the workers parked and what was cancelled. */
		pthread_mutex_lock(&e->mu);
		closing = e->closing;
		struct pwait *in = e->incoming;
		e->incoming = NULL;
		/* Cancels: a call may be cancelled before its worker has handed it over; an
		 * unmatched cancel is kept a while (CANCEL_KEEP_MS) for it. */
		size_t n_cancels = e->n_cancels;
		struct cancel *cancels = e->cancels;
		e->cancels = NULL;
		e->n_cancels = e->cap_cancels = 0;
		for (size_t i = 0; i < e->forgets.n; i++)
			forgets_add(&forgets, e->forgets.v[i].ticket, NULL);
		e->forgets.n = 0;
		pthread_mutex_unlock(&e->mu);
		while (in) {
			struct pwait *next = in->next;
			list_insert(&list, in);
			in = next;
			recheck = true; /* a newcomer may already be grantable */
		}
		if (n_cancels) {
			int64_t t = mono_ms();
			size_t keep = 0;
			for (size_t i = 0; i < n_cancels; i++) {
				bool matched = false;
				for (struct pwait *w = list; w; w = w->next)
					if (w->call->id == cancels[i].id)
						matched = w->cancelled = true;
				if (!matched && t - cancels[i].at < CANCEL_KEEP_MS)
					cancels[keep++] = cancels[i];
			}
			for (size_t i = 0; i < keep; i++)
				pg_cancel_add(e, cancels[i]);
			free(cancels);
		}
		if (closing)
			break;
		bool was_listening = c.listening && c.conn && PQstatus(c.conn) == CONNECTION_OK;
		bool up = listen_on(&c);
		if (up && !was_listening)
			recheck = true; /* notifications may have been missed while away */
		if (up)
			notify_pending(e, &c);
		if (up && take_notifies(c.conn))
			recheck = true;
		if (notified)
			recheck = true;
		notified = false;
		/* Rows of waits that ended while the database was away go first: they may stand in
		 * front of the waiters re-checked below. */
		if (up && forgets.n) {
			forgets_run(&c, &forgets);
			recheck = true;
		}
		int64_t now = mono_ms();
		bool timed = now >= next_check;
		if (timed)
			recheck = true;
		/* Ends: cancels and deadlines, in list order. */
		for (struct pwait **pw = &list; *pw;) {
			struct pwait *w = *pw;
			if (w->cancelled || now >= w->deadline) {
				*pw = w->next;
				if (w->ticket) {
					if (!hf__pg_end_waiter(
					        &c, w->call, w->ticket, w->unsure,
					        w->cancelled ? HF_ECANCELED : HF_ETIMEDOUT,
					        w->cancelled
					            ? "the wait was cancelled"
					            : "the wait ended before the units were free"))
						forgets_add(&forgets, w->ticket, w->unsure);
				} else if (w->cancelled)
					hf__err(&w->call->reply->error, HF_ECANCELED, "the wait was cancelled");
				else
					hf__pg_poll_events(&c, w->call, true);
				finish(e, w);
				recheck = true;
				continue;
			}
			pw = &w->next;
		}
		int64_t expiry_in = RECHECK_MS;
		/* With nothing parked here, a notification (one per batch of changes anywhere) needs
		 * no sweep: every call applies what is due before it runs, and the timer still sweeps
		 * at the earliest lease's end. Measured: a sweep's two statements per grant, on the
		 * cores the database runs on (docs/operations.md, "Schema version 9"). */
		if (recheck && (list || timed)) {
			/* Leases that ended are applied (and notified) by whichever instance sees them
			 * first; then every parked call here is re-checked in ticket order. */
			int64_t due = hf__pg_sweep(&c);
			if (due >= 0 && due < expiry_in)
				expiry_in = due;
			/* Waiters that cannot go now are skipped without a locked transaction each:
			 * every such transaction would lock rows other changes need, and a wake-up comes
			 * with every change anywhere. */
			int64_t *blocked = NULL;
			size_t n_blocked = 0;
			bool filter = false;
			for (struct pwait *w = list; w && !filter; w = w->next)
				filter = w->ticket != 0;
			if (filter)
				filter = hf__pg_blocked(&c, &blocked, &n_blocked) == HF_OK;
			for (struct pwait **pw = &list; *pw;) {
				struct pwait *w = *pw;
				if (w->ticket && filter && n_blocked > 0 &&
				    bsearch(&w->ticket, blocked, n_blocked, sizeof(*blocked), cmp_i64)) {
					pw = &w->next;
					continue;
				}
				bool done = w->ticket ? hf__pg_try_waiter(&c, w->call, w->ticket,
				                                          w->unsure) == HF__PG_DONE
				                      : hf__pg_poll_events(&c, w->call, false);
				if (done) {
					*pw = w->next;
					finish(e, w);
					continue;
				}
				pw = &w->next;
			}
			free(blocked);
			next_check = mono_ms() + expiry_in;
		}
		if (list && mono_ms() - last_beat >= HF__PG_HEARTBEAT_MS) {
			/* The leases of the waits still tracked here, by ticket: not every row of
			 * this instance, so that a row nobody waits on lapses (event reads have
			 * none). */
			size_t n = 0;
			for (struct pwait *w = list; w; w = w->next)
				n += w->ticket != 0;
			int64_t *tickets = n ? malloc(n * sizeof(*tickets)) : NULL;
			if (tickets) {
				n = 0;
				for (struct pwait *w = list; w; w = w->next)
					if (w->ticket)
						tickets[n++] = w->ticket;
				hf__pg_heartbeat(&c, tickets, n);
				free(tickets);
			}
			last_beat = mono_ms();
		}
		/* The owner leases of the sagas this instance runs (sagas.c). */
		if (mono_ms() >= saga_beat) {
			if (up) /* else they lapse: another instance, if one can reach it, runs them */
				hf__pg_saga_renew(&c, false);
			saga_beat = mono_ms() + HF__PG_SAGA_RENEW_MS;
		}
		if (up) /* event retention: at most once a second, one instance at a time */
			hf__pg_retention_run(&c, &retention);
		/* Sleep until a notification, a wake-up, the next deadline or the re-check. */
		now = mono_ms();
		int64_t until = next_check < saga_beat ? next_check : saga_beat;
		for (struct pwait *w = list; w; w = w->next)
			if (w->deadline < until)
				until = w->deadline;
		int timeout = until <= now ? 0 : (int)(until - now);
		if (!up && timeout > HF__PG_RECONNECT_MS)
			timeout = HF__PG_RECONNECT_MS; /* reconnect attempts: waits resume soon after */
		/* The statements since the drain above read the socket: a notification that came
		 * meanwhile waits in libpq's queue, and poll would not see it. */
		if (up && take_notifies(c.conn)) {
			notified = true;
			timeout = 0;
		}
		struct pollfd pfd[2] = {{.fd = e->wake[0], .events = POLLIN},
		                        {.fd = up ? PQsocket(c.conn) : -1, .events = POLLIN}};
		if (poll(pfd, 2, timeout) > 0 && (pfd[0].revents & POLLIN)) {
			char buf[64];
			while (read(e->wake[0], buf, sizeof(buf)) > 0) {
			}
		}
	}
	/* Closing: every parked call ends with HF_ECLOSED and its row goes. Rows the database
	 * cannot be reached for now lapse at their lease end; a hold of a grant in doubt that
	 * cannot be released now ends with its own lease. */
	while (list) {
		struct pwait *w = list;
		list = w->next;
		if (w->ticket) {
			if (!hf__pg_end_waiter(&c, w->call, w->ticket, w->unsure, HF_ECLOSED,
			                       "the store is closing"))
				forgets_add(&forgets, w->ticket, w->unsure);
		} else {
			hf__err(&w->call->reply->error, HF_ECLOSED, "the store is closing");
		}
		finish(e, w);
	}
	forgets_run(&c, &forgets);
	free(forgets.v);
	/* The orchestrator stopped before the engine closes (hf_close): the sagas it ran go to
	 * another instance at its next rescan, not at the end of their leases. */
	hf__pg_saga_renew(&c, true);
	hf__pgc_close(&c);
	return NULL;
}

/* ---- the table ---- */

/* connect_timeout: a connect attempt to an unreachable host ends (libpq's default: never).
 * keepalives_* and tcp_user_timeout: a connection whose peer vanished (a partition, a host
 * gone without closing) fails within ~20 s instead of the kernel's minutes, even while a
 * statement is waiting for its answer. Ignored on Unix sockets. */
#define DEFAULT_PARAMS                                                                      \
	"connect_timeout=5&keepalives=1&keepalives_idle=10&keepalives_interval=3"             \
	"&keepalives_count=3&tcp_user_timeout=20000"

/* Does the query of the conninfo URI `uri` set the parameter "key=" (kl bytes)? */
static bool has_param(const char *uri, const char *key, size_t kl)
{
	const char *qm = strchr(uri, '?');
	for (const char *p = qm; p; p = strchr(p + 1, '&'))
		if (strncmp(p + 1, key, kl) == 0)
			return true;
	return false;
}

/* Splits "postgres://...?...schema=NAME..." into the conninfo without schema= and NAME, and
 * adds DEFAULT_PARAMS the URL does not set. */
static int parse_url(const char *url, struct hf__pg_conf *conf, hf_error *err)
{
	snprintf(conf->schema, sizeof(conf->schema), "holdfast");
	conf->workers = DEFAULT_WORKERS;
	conf->lanes = DEFAULT_LANES;
	size_t len = strlen(url);
	char *out = malloc(len + sizeof(DEFAULT_PARAMS) + 1);
	if (!out)
		return hf__err(err, HF_ENOMEM, "out of memory");
	const char *qm = strchr(url, '?');
	size_t base = qm ? (size_t)(qm - url) : len;
	memcpy(out, url, base);
	size_t o = base;
	bool first = true;
	const char *p = qm ? qm + 1 : "";
	while (*p) {
		const char *amp = strchr(p, '&');
		size_t plen = amp ? (size_t)(amp - p) : strlen(p);
		if ((plen >= 8 && strncmp(p, "workers=", 8) == 0) ||
		    (plen >= 6 && strncmp(p, "lanes=", 6) == 0)) {
			size_t key = p[0] == 'w' ? 8 : 6;
			int max = p[0] == 'w' ? MAX_WORKERS : MAX_LANES;
			char num[8] = "";
			if (plen - key < sizeof(num))
				memcpy(num, p + key, plen - key);
			char *end;
			long n = strtol(num, &end, 10);
			if (!num[0] || *end || n < 1 || n > max) {
				free(out);
				return hf__err(err, HF_EINVAL, "%.*s in '%.100s' must be 1..%d", (int)key - 1,
				               p, url, max);
			}
			*(p[0] == 'w' ? &conf->workers : &conf->lanes) = (int)n;
		} else if (plen > 7 && strncmp(p, "schema=", 7) == 0) {
			size_t sl = plen - 7;
			if (sl == 0 || sl >= sizeof(conf->schema)) {
				free(out);
				return hf__err(err, HF_EINVAL, "schema name in '%.100s' must be 1..63 bytes", url);
			}
			for (size_t i = 0; i < sl; i++) {
				char ch = p[7 + i];
				bool ok = (ch >= 'a' && ch <= 'z') || ch == '_' || (i > 0 && ch >= '0' && ch <= '9');
				if (!ok) {
					free(out);
					return hf__err(err, HF_EINVAL,
					               "schema name must be lowercase letters, digits and '_'");
				}
			}
			memcpy(conf->schema, p + 7, sl);
			conf->schema[sl] = '\0';
		} else if (plen > 0) {
			out[o++] = first ? '?' : '&';
			memcpy(out + o, p, plen);
			o += plen;
			first = false;
		}
		p = amp ? amp + 1 : p + plen;
	}
	out[o] = '\0';
	/* Defaults for what the URL does not set: each bounds how long a call can hang on a
	 * database that is unreachable rather than down (down refuses at once). */
	const char *d = DEFAULT_PARAMS;
	while (*d) {
		const char *amp = strchr(d, '&');
		size_t dl = amp ? (size_t)(amp - d) : strlen(d);
		size_t kl = (size_t)((const char *)memchr(d, '=', dl) - d) + 1; /* "key=" */
		if (!has_param(out, d, kl)) {
			out[o++] = first ? '?' : '&';
			memcpy(out + o, d, dl);
			o += dl;
			out[o] = '\0';
			first = false;
		}
		d = amp ? amp + 1 : d + dl;
	}
	out[o] = '\0';
	conf->conninfo = out;
	return HF_OK;
}

static void pg_close(void *engine);

static int pg_open(hf_store *store, const char *url, const hf_options *opt, void **engine,
                   hf_error *err)
{
	struct pg *e = calloc(1, sizeof(*e));
	if (!e)
		return hf__err(err, HF_ENOMEM, "out of memory");
	e->store = store;
	e->conf.opt = *opt; /* opt->clock is not used: time is the database's clock */
	e->wake[0] = e->wake[1] = -1;
	int rc = parse_url(url, &e->conf, err);
	if (rc != HF_OK) {
		free(e);
		return rc;
	}
	/* Test hook (tests/pg/orphan_test.py; never set in production): HF_PG_TEST_LOSE_COMMIT
	 * names the transactions, "park" and/or "grant" (comma-separated), whose first commit
	 * this instance pretends to have lost the reply of: it commits, drops the connection and
	 * fails, as when the database or the network goes away right after COMMIT was sent (after
	 * a grant, that connection then finds the database unreachable for HF__PG_LOSE_OUTAGE_MS:
	 * see tx_commit in ops.c). */
	const char *lose = getenv("HF_PG_TEST_LOSE_COMMIT");
	if (lose && *lose) {
		int bits = (strstr(lose, "park") ? HF__PG_LOSE_PARK : 0) |
		           (strstr(lose, "grant") ? HF__PG_LOSE_GRANT : 0);
		atomic_init(&e->lose_commit, bits);
		e->conf.lose_commit = &e->lose_commit;
	}
	/* libpq knows "postgresql://" and "postgres://" alike. */
	snprintf(e->conf.channel, sizeof(e->conf.channel), "hf_%s", e->conf.schema);
	if (hf__random_hex(e->conf.instance, 16) != HF_OK) {
		free(e->conf.conninfo);
		free(e);
		return hf__err(err, HF_EINTERNAL, "no randomness for the instance id");
	}
	struct hf__pgc c = {.conf = &e->conf};
	rc = hf__pg_migrate(&c, err);
	hf__pgc_close(&c);
	if (rc != HF_OK) {
		free(e->conf.conninfo);
		free(e);
		return rc;
	}
	if (pipe(e->wake) != 0 || fcntl(e->wake[0], F_SETFL, O_NONBLOCK) != 0 ||
	    fcntl(e->wake[1], F_SETFL, O_NONBLOCK) != 0 || fcntl(e->wake[0], F_SETFD, FD_CLOEXEC) != 0 ||
	    fcntl(e->wake[1], F_SETFD, FD_CLOEXEC) != 0) {
		free(e->conf.conninfo);
		free(e);
		return hf__err(err, HF_EINTERNAL, "pipe: %s", strerror(errno));
	}
	atomic_init(&e->notify_pending, 0);
	e->conf.notify_pending = &e->notify_pending;
	atomic_init(&e->connected_ms, 0);
	e->conf.connected_ms = &e->connected_ms;
	e->conf.notify_fd = e->wake[1];
	pthread_mutex_init(&e->mu, NULL);
	pthread_cond_init(&e->cv, NULL);
	pthread_mutex_init(&e->sweeper.mu, NULL);
	pthread_cond_init(&e->sweeper.cv, NULL);
	e->conf.sweeper = &e->sweeper;
	int started = 0;
	for (; started < e->conf.workers; started++)
		if (pthread_create(&e->workers[started], NULL, worker_main, e) != 0)
			break;
	if (started < e->conf.workers || pthread_create(&e->waiter, NULL, waiter_main, e) != 0) {
		pthread_mutex_lock(&e->mu);
		e->closing = true;
		pthread_cond_broadcast(&e->cv);
		pthread_mutex_unlock(&e->mu);
		for (int i = 0; i < started; i++)
			pthread_join(e->workers[i], NULL);
		close(e->wake[0]);
		close(e->wake[1]);
		pthread_mutex_destroy(&e->mu);
		pthread_cond_destroy(&e->cv);
		pthread_mutex_destroy(&e->sweeper.mu);
		pthread_cond_destroy(&e->sweeper.cv);
		free(e->conf.conninfo);
		free(e);
		return hf__err(err, HF_EINTERNAL, "cannot start the engine's threads");
	}
	*engine = e;
	return HF_OK;
}

static void pg_close(void *engine)
{
	struct pg *e = engine;
	pthread_mutex_lock(&e->mu);
	e->closing = true;
	pthread_cond_broadcast(&e->cv);
	pthread_mutex_unlock(&e->mu);
	/* Workers finish the queue first (refusing with HF_ECLOSED), so nothing is parked after
	 * the waiter thread has gone. */
	for (int i = 0; i < e->conf.workers; i++)
		pthread_join(e->workers[i], NULL);
	wake_waiter(e);
	pthread_join(e->waiter, NULL);
	/* Parked calls handed over after the waiter thread left. */
	struct hf__pgc c = {.conf = &e->conf};
	while (e->incoming) {
		struct pwait *w = e->incoming;
		e->incoming = w->next;
		if (w->ticket)
			hf__pg_end_waiter(&c, w->call, w->ticket, w->unsure, HF_ECLOSED,
			                  "the store is closing");
		else
			hf__err(&w->call->reply->error, HF_ECLOSED, "the store is closing");
		hf__call_done(w->call);
		free(w);
	}
	/* Rows in doubt handed over after the waiter thread left: one try (else they lapse). */
	forgets_run(&c, &e->forgets);
	free(e->forgets.v);
	hf__pgc_close(&c);
	close(e->wake[0]);
	close(e->wake[1]);
	pthread_mutex_destroy(&e->mu);
	pthread_cond_destroy(&e->cv);
	pthread_mutex_destroy(&e->sweeper.mu);
	pthread_cond_destroy(&e->sweeper.cv);
	free(e->cancels);
	free(e->conf.conninfo);
	free(e);
}

static void pg_submit(void *engine, struct hf__call *call)
{
	struct pg *e = engine;
	/* Wait deadlines are measured on this host's monotonic clock from submission. */
	call->engine_data = (void *)(intptr_t)mono_ms();
	call->next = NULL;
	pthread_mutex_lock(&e->mu);
	struct hf__call **head = &e->q_head, **tail = &e->q_tail;
	if (hf__pg_batchable(call)) {
		struct lane *q = &e->lanes[lane_of(e, call)];
		head = &q->head;
		tail = &q->tail;
	}
	if (*tail)
		(*tail)->next = call;
	else
		*head = call;
	*tail = call;
	pthread_cond_signal(&e->cv);
	pthread_mutex_unlock(&e->mu);
}

/* Queues a cancel for the waiter thread; false if out of memory (the wait then ends at its
 * deadline). */
static bool pg_cancel_add(struct pg *e, struct cancel c)
{
	pthread_mutex_lock(&e->mu);
	if (e->n_cancels == e->cap_cancels) {
		size_t cap = e->cap_cancels ? 2 * e->cap_cancels : 16;
		struct cancel *p = realloc(e->cancels, cap * sizeof(*p));
		if (!p) {
			pthread_mutex_unlock(&e->mu);
			return false;
		}
		e->cancels = p;
		e->cap_cancels = cap;
	}
	e->cancels[e->n_cancels++] = c;
	pthread_mutex_unlock(&e->mu);
	return true;
}

static void pg_cancel(void *engine, uint64_t call_id)
{
	struct pg *e = engine;
	if (pg_cancel_add(e, (struct cancel){.id = call_id, .at = mono_ms()}))
		wake_waiter(e);
}

const struct hf__engine_ops hf__engine_postgres = {
	.scheme = "postgres",
	.open = pg_open,
	.close = pg_close,
	.submit = pg_submit,
	.cancel = pg_cancel,
	.tick = NULL, /* time is the database's: hf_options.clock does not apply */
	.sagas = true,
	.shared_sagas = true,
};

const struct hf__engine_ops hf__engine_postgresql = {
	.scheme = "postgresql",
	.open = pg_open,
	.close = pg_close,
	.submit = pg_submit,
	.cancel = pg_cancel,
	.tick = NULL,
	.sagas = true,
	.shared_sagas = true,
};
