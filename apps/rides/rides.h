/*
 * rides.h — what the files of holdfast-rides share: the configuration, the per-worker
 * connections (PostgreSQL, Redis), a request and its answer, the lock statistics, and the
 * booking operations. The app uses only the public API of libholdfast (holdfast.h).
 */
#ifndef RIDES_H
#define RIDES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "app.h"
#include "holdfast.h"

#define RIDES_GEO_KEY "rides:drivers:geo" /* Redis GEO set of driver positions, member = id */
#define RIDES_CANDIDATES_MAX 256          /* drivers looked at per assignment, nearest first */

/* The command line, read once at start and constant after. */
struct rides_config {
	const char *listen_host;
	int listen_port;
	const char *holdfast_url;
	const char *db_url; /* a libpq connection string or URI */
	const char *redis_host;
	int redis_port;
	bool demo_data;
	double radius_km;
	int workers;
	int64_t lock_ttl_ms;  /* lease of a booking lock */
	int64_t lock_wait_ms; /* bounded wait for a busy booking lock */
	int64_t hold_ttl_ms;  /* lease of a driver hold until it is confirmed */
};

extern struct rides_config rides_cfg;
extern hf_store *rides_store; /* one store for all workers: hf_call is thread-safe */

/* One worker thread's connections; each worker owns its own, never shared. */
struct rides_conn {
	int id;
	struct app_pg pg;
	struct app_redis redis;
	char owner[96]; /* holdfast owner of the locks it takes: "rides:HOST:PID:wN" */
};

/* Opens (or re-opens after a failure) the connections. false: err says why. */
bool rides_conn_open(struct rides_conn *c, int id, char *err, size_t errlen);
void rides_conn_close(struct rides_conn *c);

/* The HTTP API (routes.c); a handler's ctx is its worker's rides_conn. */
extern const struct app_route rides_routes[];
extern const size_t rides_n_routes;

/* ---- db.c: PostgreSQL. ----------------------------------------------------------------- */

/* The tables, created at start by app_run (IF NOT EXISTS) under advisory lock 727172. */
extern const char rides_schema_sql[];
#define RIDES_SCHEMA_LOCK 727172
/* Riders 1-100 and drivers 1-50 around the seed's pickup point; idempotent. */
bool rides_db_demo(PGconn *pg, char *err, size_t errlen);
/* Puts every driver's last known position (PostgreSQL) into the Redis GEO set. */
bool rides_geo_sync(struct rides_conn *c, char *err, size_t errlen);
/* Releases the driver holds that finished bookings still record (a release that failed
 * earlier, or a process that died between the two steps): the lock cleanup on start-up. */
void rides_cleanup_holds(struct rides_conn *c);

/* Runs a statement with text parameters; NULL and *r filled on a database error, with its
 * SQLSTATE in `state` (may be NULL; "" when the connection failed). */
PGresult *rides_pg(struct rides_conn *c, struct app_reply *r, const char *sql, int n,
                   const char *const *params, char state[6]);

/* ---- bookings.c: the booking state machine. ---------------------------------------------- */

void rides_booking_create(struct rides_conn *c, json_t *in, struct app_reply *r);
void rides_booking_get(struct rides_conn *c, int64_t id, struct app_reply *r);
void rides_booking_assign(struct rides_conn *c, int64_t id, struct app_reply *r);
void rides_booking_accept(struct rides_conn *c, int64_t id, json_t *in, struct app_reply *r);
void rides_booking_cancel(struct rides_conn *c, int64_t id, json_t *in, struct app_reply *r);
void rides_booking_complete(struct rides_conn *c, int64_t id, json_t *in, struct app_reply *r);
void rides_user_bookings(struct rides_conn *c, int64_t user_id, const char *user_type,
                         struct app_reply *r);
void rides_rider_create(struct rides_conn *c, json_t *in, struct app_reply *r);
void rides_driver_create(struct rides_conn *c, json_t *in, struct app_reply *r);
void rides_driver_move(struct rides_conn *c, int64_t id, json_t *in, struct app_reply *r);

/* ---- stats.c: lock statistics for GET /api/locks/stats. --------------------------------- */

enum rides_stat {
	RIDES_LOCK_ACQUIRED,  /* booking locks granted */
	RIDES_LOCK_RELEASED,  /* released by us while still ours */
	RIDES_LOCK_EXPIRED,   /* the lease ran out before our release (or our write was fenced) */
	RIDES_LOCK_CONTESTED, /* found held on the first try: we had to wait */
	RIDES_LOCK_TIMEOUT,   /* the bounded wait ended without the lock */
	RIDES_LOCK_ERROR,     /* the engine failed (after retries) */
	RIDES_LOCK_FENCED,    /* a write refused because a newer fence had written the row */
	RIDES_HOLD_TAKEN,     /* driver holds granted */
	RIDES_HOLD_CONFIRMED,
	RIDES_HOLD_RELEASED,
	RIDES_HOLD_NONE,  /* assignments that found no free driver */
	RIDES_HOLD_INDEX, /* the unique index refused a driver the hold had granted */
	RIDES_STAT_N
};

void rides_stat_add(enum rides_stat s);
void rides_stat_latency(int64_t us); /* one booking-lock acquisition, in microseconds */
json_t *rides_stats_json(void);

#endif /* RIDES_H */
