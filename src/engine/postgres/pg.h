/*
 * pg.h — the parts of the PostgreSQL engine (postgres://) and how they meet:
 *   schema.c  connections (session settings) and the versioned schema migrations
 *   ops.c     every operation as SQL transactions: the hold semantics of state.c, in tables
 *   calls.c   the common changes as one prepared call of a server-side function each
 *   engine.c  worker threads, the waiter thread (LISTEN/NOTIFY, deadlines, heartbeats)
 *   sagas.c   saga storage (HF_OP_SAGA_*) and the owner leases of sagas being run
 *   retention.c  event retention (the core rule over the events table)
 */
#ifndef HF_PG_H
#define HF_PG_H

#include <libpq-fe.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "core/core.h"
#include "engine/engine.h"

/* A waiter row nobody renews (its instance crashed, or no longer waits on it) lapses this long
 * after its last renewal; the first change after that (or any instance's waiter thread, within
 * a second) removes it: the bound of docs/operations.md, "Waiter leases". */
#define HF__PG_WAITER_LEASE_MS 15000
/* A saga being run is owned by one instance at a time: its lease ends this long after the
 * owner's last renewal (every HF__PG_SAGA_RENEW_MS, by its waiter thread); then another
 * instance's orchestrator takes it over (docs/sagas.md, "Sagas on PostgreSQL"). */
#define HF__PG_SAGA_LEASE_MS 5000
#define HF__PG_SAGA_RENEW_MS 1000
#define HF__PG_HEARTBEAT_MS 3000      /* renewal of the leases of the waits still tracked */
#define HF__PG_UPKEEP_MS 1000        /* purges of old holds and idempotency records, per
                                         connection, at most */
#define HF__PG_RECONNECT_MS 250       /* after a failed connect, calls on that connection fail
                                         fast for this long instead of queueing behind new
                                         connect attempts (each up to connect_timeout) */

/* One sweep of due leases and lapsed waiter rows at a time per instance (ops.c, tx_begin):
 * the engine's workers and waiter thread take turns. */
struct hf__pg_sweeper {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool running; /* a sweep holds the gate */
};

/* The engine's shared configuration (read-only after open). */
struct hf__pg_conf {
	char *conninfo;     /* the URL as libpq takes it: schema= removed */
	char schema[64];    /* [a-z_][a-z0-9_]*, default "holdfast" */
	char channel[80];   /* NOTIFY channel: "hf_" + schema */
	char instance[33];  /* random id of this engine instance: owner of its waiter rows */
	int workers;        /* connections running calls: URL parameter workers= */
	int lanes;          /* lanes of batched calls, one batch each at a time: URL parameter
	                       lanes= (engine.c, take_calls) */
	hf_options opt;
	/* Test hook, armed at open by HF_PG_TEST_LOSE_COMMIT (engine.c): HF__PG_LOSE_* bits, each
	 * fired once: that transaction commits, then its connection is dropped and it fails as if
	 * COMMIT's reply had been lost. 0 in production. */
	atomic_int *lose_commit;
	/* A change that committed events or freed units sets *notify_pending and writes a byte to
	 * notify_fd (if it was 0): the waiter thread then sends one NOTIFY for all of them
	 * (engine.c): a NOTIFY inside a change would hold PostgreSQL's notify queue lock through
	 * its COMMIT, one commit at a time. */
	atomic_int *notify_pending;
	int notify_fd;
	/* Monotonic ms of the instance's last successful connect (any of its connections): the
	 * database is back, so the others' fail-fast windows end with it. */
	_Atomic int64_t *connected_ms;
	struct hf__pg_sweeper *sweeper; /* the instance's sweep gate; NULL: none */
};

#define HF__PG_LOSE_PARK 1  /* the commit of a park (an acquire's waiter row) */
#define HF__PG_LOSE_GRANT 2 /* the commit of a parked acquire's grant */
#define HF__PG_LOSE_OUTAGE_MS 4000 /* after a lost grant reply: no reconnect for this long */

/* One connection owned by one thread. */
struct hf__pgc {
	PGconn *conn;
	const struct hf__pg_conf *conf;
	bool listening;
	int64_t retry_at;   /* monotonic ms: no connect attempt before (after a failed one) */
	int64_t failed_at;  /* monotonic ms of that failed attempt */
	int64_t upkeep_at;  /* monotonic ms: the next purge of old rows by this connection */
	char last_err[256]; /* why the last connect failed */
	bool lost_race;     /* the last failed statement lost to a concurrent change (deadlock,
	                       a unique key taken first): the change may run again */
	bool last_try;      /* the change's last attempt: no more running again */
	bool prepared;      /* calls.c's statements are prepared on conn */
	bool skip_call;     /* the call's function answered 'slow' in a batch: hf__pg_call
	                       leaves it to ops.c at once */
};

/* schema.c */
/* Connects (or reconnects) and applies the session settings; HF_OK or HF_EENGINE. Called
 * before a unit of work, never inside a transaction: a connection the server closed while it
 * sat idle (a restart) is replaced first, so that the first statement goes on a new one
 * instead of failing on the dead one, where libpq may only learn of the close when the
 * statement is sent (and not always mark it bad then). Within HF__PG_RECONNECT_MS of a
 * failed attempt it fails at once with that attempt's message, unless another connection of
 * the instance has connected since. */
int hf__pgc_ensure(struct hf__pgc *c, hf_error *err);
int64_t hf__pg_mono_ms(void);
/* Runs BEGIN (`sql`); if that finds the connection dead (the server restarted since its last
 * use), reconnects and tries once more: nothing of the transaction had run. */
int hf__pgc_begin(struct hf__pgc *c, const char *sql, hf_error *err);
void hf__pgc_close(struct hf__pgc *c);
/* Sets err to HF_EENGINE with "PREFIX: " and libpq's last message, made one line (libpq's
 * messages end with a newline and may hold several lines: not for a JSON error). */
int hf__pg_fail(hf_error *err, PGconn *conn, const char *prefix);
/* Creates or migrates the schema; refuses a schema newer than this build. */
int hf__pg_migrate(struct hf__pgc *c, hf_error *err);

/* ops.c — outcomes of running a call */
enum hf__pg_outcome {
	HF__PG_DONE,   /* the reply is filled: complete the call */
	HF__PG_PARKED, /* an acquire is waiting: its waiter row has *ticket */
	HF__PG_EVWAIT, /* an event read found nothing and may wait */
};
/* Runs a call on c; fills call->reply. *unsure: 0, or the ticket of a park whose COMMIT
 * failed (the call is DONE with an engine error) and may have committed: its row may exist,
 * waiting for nobody; the caller has it removed with hf__pg_forget (it lapses anyway). */
enum hf__pg_outcome hf__pg_run(struct hf__pgc *c, struct hf__call *call, int64_t *ticket,
                               int64_t *unsure);
/* Tries to grant a parked acquire: HF__PG_DONE (granted or failed: reply filled) or
 * HF__PG_PARKED (still waiting, or a database error: try again later). `unsure` (HF_ID_LEN + 1
 * bytes, the caller's, "" at first) is the id of a hold this wait's grant may have committed
 * without hearing so: set when a grant's COMMIT fails, resolved by the next try (the hold is
 * delivered if it exists) or by hf__pg_end_waiter / hf__pg_forget. */
enum hf__pg_outcome hf__pg_try_waiter(struct hf__pgc *c, struct hf__call *call, int64_t ticket,
                                      char *unsure);
/* Of this instance's waiter rows, the tickets that cannot be granted now, sorted: one
 * lock-free read, so that a wake-up re-checks (in a locked transaction each) only the waiters
 * that may go, not every parked one. A waiter not listed may still fail the locked re-check;
 * one listed cannot become grantable without a later change, whose NOTIFY re-checks again. */
int hf__pg_blocked(struct hf__pgc *c, int64_t **tickets, size_t *n);
/* Ends a parked acquire (timeout, cancel, close): removes its row, settles a grant in doubt
 * (`unsure`: a timed-out wait gets that hold if it exists, else it is released), and sets the
 * reply's error (code, message) unless it delivered the hold. False when the database could
 * not be reached: the caller keeps (ticket, unsure) for hf__pg_forget. */
bool hf__pg_end_waiter(struct hf__pgc *c, struct hf__call *call, int64_t ticket, const char *unsure,
                       int code, const char *message);
/* Removes the row of a wait nobody waits on any more, and settles a grant in doubt (`unsure`:
 * a hold id, "" or NULL): with `deliver` (a call, or NULL) its live hold goes into that call's
 * reply, else it is released. Returns 1 when the hold was delivered, HF_OK when done
 * otherwise, HF_EENGINE when the database could not be reached (nothing changed). */
int hf__pg_forget(struct hf__pgc *c, int64_t ticket, const char *unsure, struct hf__call *deliver);
/* Re-reads events for a parked event read; true when the reply is filled (events found or
 * `final`). */
bool hf__pg_poll_events(struct hf__pgc *c, struct hf__call *call, bool final);
/* Renews the leases of the waiter rows of `tickets`: the waits this instance still tracks. */
int hf__pg_heartbeat(struct hf__pgc *c, const int64_t *tickets, size_t n);
/* Purges ended holds and idempotency records past their retention, rows other changes have
 * locked excepted: at most once every HF__PG_UPKEEP_MS per connection, else nothing. Outside
 * a transaction (each DELETE its own) or inside one. */
int hf__pg_upkeep(struct hf__pgc *c, hf_error *err);
/* Applies due expiries if any; returns ms until the next lease ends (capped), or -1 on error. */
int64_t hf__pg_sweep(struct hf__pgc *c);

/* Asks the waiter thread for one NOTIFY (waiters re-check, event readers re-read) after a
 * change that committed events or freed units. */
void hf__pg_notify_later(const struct hf__pg_conf *cf);

/* calls.c */
#define HF__PG_LOCK_TIMEOUT "5s"      /* no statement waits longer for a lock (schema.c) */
#define HF__PG_BATCH_MAX 16           /* calls sent as one transaction (hf__pg_call_batch) */
#define HF__PG_BATCH_LOCK_WAIT "100ms" /* a batch's later calls wait no longer for a lock */
/* Runs an acquire (without an idempotency key), release, extend or confirm as one call of its
 * server-side function: true when the reply is filled (c->lost_race set when it lost to a
 * concurrent change and may run again), false when ops.c's transactions must run it: nothing
 * was written. */
bool hf__pg_call(struct hf__pgc *c, struct hf__call *call);
/* Whether hf__pg_call_batch may take call: hf__pg_call runs it, and it never parks (an
 * acquire with wait_ms 0, or a hold change). */
bool hf__pg_batchable(const struct hf__call *call);
/* What became of one call of a batch. */
enum hf__pg_batched {
	HF__PG_BATCH_DONE,  /* the reply is filled */
	HF__PG_BATCH_SLOW,  /* its function answered 'slow', having written nothing: ops.c runs it */
	HF__PG_BATCH_AGAIN, /* the batch rolled back whole: the call runs again alone */
};
/* Runs calls[0..n) (n <= HF__PG_BATCH_MAX, each hf__pg_batchable) as one transaction: BEGIN,
 * one call of each one's function, COMMIT, sent at once (libpq's pipeline mode), so that they
 * share one round trip and one commit, and the changes of one hot resource one wait for its
 * row. Sets out[i] for each call. */
void hf__pg_call_batch(struct hf__pgc *c, struct hf__call **calls, size_t n,
                       enum hf__pg_batched *out);
/* Did a failed statement lose to a concurrent change (deadlock, serialization failure, a
 * unique key another transaction took first)? Then the whole call may run again. */
bool hf__pg_lost_race(const PGresult *r);
/* names[0..n) as a PostgreSQL text[] literal for `$1::text[]`; NULL when out of memory (free
 * it). */
char *hf__pg_text_array(const char *const *names, size_t n);

/* sagas.c */
/* Runs a HF_OP_SAGA_* call on c (one transaction); fills call->reply. */
void hf__pg_saga_op(struct hf__pgc *c, struct hf__call *call);
/* Renews this instance's leases on the sagas it runs for HF__PG_SAGA_LEASE_MS; `release`:
 * ends them now instead (closing: another instance takes them over at once). */
int hf__pg_saga_renew(struct hf__pgc *c, bool release);

/* retention.c */
struct hf__pg_retention {
	int64_t next_at;            /* monotonic ms: no pass before */
	uint64_t logged_checkpoint; /* the checkpoint last reported as holding the floor */
};
/* A trim pass of hf_options' events_keep_* (core/retention.h) if one is due: at most once a
 * second per instance, skipped while another instance's pass runs (an advisory lock). On the
 * waiter thread's connection, in a short transaction of its own; failures are logged and
 * tried again at the next pass. */
void hf__pg_retention_run(struct hf__pgc *c, struct hf__pg_retention *st);
/* Whether a read of events after `after` (rows r: seq first, by seq; last_seq: the newest
 * numbered) found the events it asked for trimmed: then *upto is the last seq trimmed. */
bool hf__pg_events_trimmed(PGresult *r, uint64_t after, uint64_t last_seq, uint64_t *upto);

#endif /* HF_PG_H */
