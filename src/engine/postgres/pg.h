/*
 * pg.h — the parts of the PostgreSQL engine (postgres://) and how they meet:
 *   schema.c  connections (session settings) and the versioned schema migrations
 *   ops.c     every operation as SQL transactions: the hold semantics of state.c, in tables
 *   engine.c  worker threads, the waiter thread (LISTEN/NOTIFY, deadlines, heartbeats)
 */
#ifndef HF_PG_H
#define HF_PG_H

#include <libpq-fe.h>
#include <pthread.h>
#include <stdint.h>

#include "core/core.h"
#include "engine/engine.h"

#define HF__PG_SCHEMA_VERSION 1       /* the newest schema this build knows */
#define HF__PG_WAITER_LEASE_MS 15000  /* a waiter row whose instance stops heartbeating
                                         is removed this long after its last heartbeat */
#define HF__PG_HEARTBEAT_MS 3000
#define HF__PG_UPKEEP_MS 1000        /* purges of lapsed waiters and of old holds and
                                         idempotency records, per connection, at most */
#define HF__PG_RECONNECT_MS 250       /* after a failed connect, calls on that connection fail
                                         fast for this long instead of queueing behind new
                                         connect attempts (each up to connect_timeout) */

/* The engine's shared configuration (read-only after open). */
struct hf__pg_conf {
	char *conninfo;     /* the URL as libpq takes it: schema= removed */
	char schema[64];    /* [a-z_][a-z0-9_]*, default "holdfast" */
	char channel[80];   /* NOTIFY channel: "hf_" + schema */
	char instance[33];  /* random id of this engine instance: owner of its waiter rows */
	hf_options opt;
};

/* One connection owned by one thread. */
struct hf__pgc {
	PGconn *conn;
	const struct hf__pg_conf *conf;
	bool listening;
	int64_t retry_at;   /* monotonic ms: no connect attempt before (after a failed one) */
	int64_t upkeep_at;  /* monotonic ms: the next purge of old rows by this connection */
	char last_err[256]; /* why the last connect failed */
};

/* schema.c */
/* Connects (or reconnects) and applies the session settings; HF_OK or HF_EENGINE. Within
 * HF__PG_RECONNECT_MS of a failed attempt it fails at once with that attempt's message. */
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
/* Runs a call on c; fills call->reply. */
enum hf__pg_outcome hf__pg_run(struct hf__pgc *c, struct hf__call *call, int64_t *ticket);
/* Tries to grant a parked acquire: HF__PG_DONE (granted or failed: reply filled) or
 * HF__PG_PARKED (still waiting, or a database error: try again later). */
enum hf__pg_outcome hf__pg_try_waiter(struct hf__pgc *c, struct hf__call *call, int64_t ticket);
/* Of this instance's waiter rows, the tickets that cannot be granted now, sorted: one
 * lock-free read, so that a wake-up re-checks (in a locked transaction each) only the waiters
 * that may go, not every parked one. A waiter not listed may still fail the locked re-check;
 * one listed cannot become grantable without a later change, whose NOTIFY re-checks again. */
int hf__pg_blocked(struct hf__pgc *c, int64_t **tickets, size_t *n);
/* Ends a parked acquire (timeout, cancel, close): removes its row; sets the reply's error. */
void hf__pg_end_waiter(struct hf__pgc *c, struct hf__call *call, int64_t ticket, int code,
                       const char *message);
/* Re-reads events for a parked event read; true when the reply is filled (events found or
 * `final`). */
bool hf__pg_poll_events(struct hf__pgc *c, struct hf__call *call, bool final);
/* Keeps this instance's waiter rows alive. */
int hf__pg_heartbeat(struct hf__pgc *c);
/* Applies due expiries if any; returns ms until the next lease ends (capped), or -1 on error. */
int64_t hf__pg_sweep(struct hf__pgc *c);

#endif /* HF_PG_H */
