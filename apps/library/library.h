/*
 * library.h — what the files of holdfast-library share: the configuration, a worker's
 * connections, the Redis cache of books, and the projector that builds the read model and
 * the book event store from holdfast's event log. Only holdfast's public API and apps/common.
 */
#ifndef LIBRARY_H
#define LIBRARY_H

#include <stdbool.h>
#include <stdint.h>

#include "app.h"
#include "holdfast.h"

#define LIBRARY_OWNER_PREFIX "library:user:" /* a borrowing's hold owner: + the user id */

/* The command line, read once at start and constant after. */
struct library_config {
	const char *listen_host;
	int listen_port;
	const char *holdfast_url;
	const char *db_url;
	const char *redis_host;
	int redis_port;
	int64_t cache_ttl_s; /* how long a cached book lives without an invalidation */
};

extern struct library_config library_cfg;
extern hf_store *library_store; /* one store for all threads: hf_call is thread-safe */

/* One thread's connections, never shared. */
struct library_conn {
	struct app_pg pg;
	struct app_redis redis;
};

/* Opens both connections; false: err says why. */
bool library_conn_open(struct library_conn *c, const char *name, char *err, size_t errlen);
void library_conn_close(struct library_conn *c);

/* The HTTP API (api.c); a handler's ctx is its worker's library_conn. */
extern const struct app_route library_routes[];
extern const size_t library_n_routes;

/* ---- store.c: the database, books on holdfast, the start-up steps. -------------------- */

/* The tables, created at start by app_run (IF NOT EXISTS) under advisory lock 727401. */
extern const char library_schema_sql[];
#define LIBRARY_SCHEMA_LOCK 727401
/* Loads every book's copies into holdfast (capacity = copies); false: err says why. */
bool library_load(PGconn *pg, char *err, size_t errlen);
/* Borrowings recorded but whose hold was never confirmed (a process died between the two):
 * confirmed now, or VOID when the hold has gone. */
void library_cleanup(PGconn *pg);

/* ---- cache.c: cache-aside of books in Redis. --------------------------------------- */

/* GET /api/books/:id: Redis, then the database and holdfast, then fill (unless an
 * invalidation came in between). */
void library_book_get(struct library_conn *c, int64_t id, struct app_reply *r);
/* Drops the cached book; a fill that read before this will not be stored. */
void library_cache_invalidate(struct app_redis *rd, int64_t book_id);

/* ---- projector.c: the read model from holdfast's events. ------------------------------ */

bool library_projector_start(char *err, size_t errlen);
void library_projector_stop(void);

#endif /* LIBRARY_H */
