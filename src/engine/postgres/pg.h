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
};

/* schema.c */
/* Connects (or reconnects) and applies the session settings; HF_OK or HF_EENGINE. */
int hf__pgc_ensure(struct hf__pgc *c, hf_error *err);
void hf__pgc_close(struct hf__pgc *c);
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
