/*
 * app.h — what the apps built on holdfast (rides, shop, library) share, written once: the
 * HTTP front (evhttp on the main thread, a pool of worker threads, a reply queue), the route
 * table and JSON error replies, request bodies, PostgreSQL and Redis connections, the
 * command-line helpers. Only the public API of libholdfast is used here and by the apps.
 */
#ifndef HF_APP_H
#define HF_APP_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <hiredis/hiredis.h>
#include <jansson.h>
#include <libpq-fe.h>

#include "holdfast.h"

#define APP_BODY_MAX (64 * 1024) /* request bodies above this: 413 */

/* ---- Replies. ------------------------------------------------------------------------- */

/* An answer: an HTTP status, a JSON body (owned: json_decref by the taker) and an optional
 * ETag ("" for none; written quoted). */
struct app_reply {
	int status;
	json_t *body;
	char etag[32];
};

/* Sets *r to {"error":{"code","message"}} with the status; returns false (for `return`). */
bool app_error(struct app_reply *r, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
void app_ok(struct app_reply *r, int status, json_t *body); /* takes body */

/* ---- Requests and the route table. --------------------------------------------------- */

/* A request as the worker sees it; every string is the server's, valid during the call. */
struct app_request {
	const char *method;
	const char *path;  /* decoded */
	const char *query; /* NULL if none */
	const char *body;  /* NULL if none */
	size_t body_len;
	const char *if_match;        /* the If-Match header, or NULL */
	const char *idempotency_key; /* the Idempotency-Key header, or NULL */
};

/* What a matched route hands its handler. */
struct app_call {
	void *ctx;  /* the worker's own context (app_serve's ctxs[i]) */
	int64_t id; /* the :id of the path, if it has one */
	json_t *in; /* the body, a JSON object, or NULL */
	const struct app_request *req;
	struct app_reply *r;
};

/* One route. ":id" in a pattern is a positive integer path segment. */
struct app_route {
	const char *method;
	const char *pattern;
	void (*fn)(struct app_call *);
};

/* Finds the route of req in routes[n] (404 route_not_found, 405 method_not_allowed), reads
 * :id (400 invalid_id) and the JSON object body (400 invalid_json), and calls it. */
void app_route(const struct app_route *routes, size_t n, void *ctx, const struct app_request *req,
               struct app_reply *r);

/* ---- Request body fields: false with *r set (422) when missing or wrong. ----------------- */

bool app_need_body(json_t *in, struct app_reply *r); /* 400 when there is no body */
/* An integer >= 1 (a JSON integer, or a whole number written as a real). */
bool app_field_id(json_t *in, const char *key, int64_t *out, struct app_reply *r);
/* An integer within [lo, hi]. */
bool app_field_int(json_t *in, const char *key, int64_t lo, int64_t hi, int64_t *out,
                   struct app_reply *r);
/* A number within [lo, hi]; optional ones leave *out alone when absent or null. */
bool app_field_num(json_t *in, const char *key, double lo, double hi, bool required, double *out,
                   bool *present, struct app_reply *r);
/* A string of 1..max bytes without NUL; optional ones give NULL when absent or null. */
bool app_field_str(json_t *in, const char *key, size_t max, bool required, const char **out,
                   struct app_reply *r);

/* ---- The HTTP front. ------------------------------------------------------------------ */

/* How to serve. ctxs points at n worker contexts of ctx_size bytes each: worker i hands
 * ctxs + i * ctx_size to every request it routes. */
struct app_server {
	const char *name; /* for log lines: "rides", "shop", ... */
	const char *host;
	int port;               /* 0: any free port (the "listening on" line says which) */
	const char *engine_url; /* for the "listening on" line */
	void *ctxs;
	size_t ctx_size;
	int n;
	void (*route)(void *ctx, const struct app_request *req, struct app_reply *r);
};

/* Serves HTTP with one worker thread per context until SIGTERM or SIGINT (requests in
 * flight are answered first; later ones answer 503 shutting_down). 0 on a clean stop. */
int app_serve(const struct app_server *s);

/* ---- PostgreSQL and Redis. ------------------------------------------------------------- */

/* A connection that reopens itself: `url` is kept (not copied), `name` is application_name. */
struct app_pg {
	PGconn *conn;
	const char *url;
	const char *name;
};

bool app_pg_open(struct app_pg *pg, char *err, size_t errlen);
bool app_pg_ok(struct app_pg *pg); /* reconnects a broken connection */
void app_pg_close(struct app_pg *pg);

/* Runs a statement with text parameters; NULL with *r filled on a database error (503
 * database_unavailable, 500 database_error), and its SQLSTATE in `state` (may be NULL; ""
 * when the connection failed). */
PGresult *app_pg_exec(struct app_pg *pg, struct app_reply *r, const char *sql, int n,
                      const char *const *params, char state[6]);
/* Reads rows by id: "$1" in sql is the id. NULL with *r set when the database fails or no
 * row comes back (404 `missing_code`, "no WHAT ID"). */
PGresult *app_pg_by_id(struct app_pg *pg, struct app_reply *r, const char *sql, int64_t id,
                       const char *missing_code, const char *what);
/* Runs a multi-statement script; false and err on failure (and a ROLLBACK is sent). */
bool app_pg_script(PGconn *pg, const char *sql, char *err, size_t errlen);
/* Runs `ddl` in one transaction under the advisory lock `key`, so that several processes
 * creating the same tables at once do not collide. */
bool app_pg_schema(PGconn *pg, long key, const char *ddl, char *err, size_t errlen);
/* BEGIN / COMMIT / ROLLBACK on a live connection; false (and *r) on failure. */
bool app_pg_begin(struct app_pg *pg, struct app_reply *r);
bool app_pg_commit(struct app_pg *pg, struct app_reply *r);
void app_pg_rollback(struct app_pg *pg);

/* A Redis connection that reopens itself, with 5 s timeouts. */
struct app_redis {
	redisContext *ctx;
	const char *host;
	int port;
};

bool app_redis_open(struct app_redis *rd, char *err, size_t errlen);
bool app_redis_ok(struct app_redis *rd); /* reconnects a broken connection */
void app_redis_close(struct app_redis *rd);

/* ---- Command line and time. --------------------------------------------------------- */

/* One option of a command line. */
struct app_opt {
	const char *name; /* without the "--"; NULL ends a table */
	enum { APP_OPT_TEXT, APP_OPT_HOSTPORT, APP_OPT_INT, APP_OPT_REAL, APP_OPT_FLAG } kind;
	const char **text; /* TEXT: the value; HOSTPORT: the host */
	int *port;         /* HOSTPORT: the port (0 allowed only when lo is 0) */
	int64_t *num;      /* INT */
	double *real;      /* REAL */
	bool *flag;        /* FLAG */
	double lo, hi;     /* INT, REAL: the range */
	bool required;     /* TEXT: must be given */
};

/* Reads argv by the table opts (--name VALUE or --name=VALUE; --help prints usage).
 * -1: go on; else the exit status (0 after --help, 2 on a wrong command line, said why). */
int app_args(const char *prog, const char *usage, const struct app_opt *opts, int argc,
             char **argv);

/* "HOST:PORT" (or "[V6]:PORT"); *host points into one of two static copies. */
bool app_parse_hostport(const char *s, const char **host, int *port);
/* A number within [lo, hi]; complains on stderr as `prog` otherwise. */
bool app_parse_num(const char *prog, const char *opt, const char *s, double lo, double hi,
                   double *out);
/* "prog:HOST:PID" into buf: the start of a holdfast owner naming this process. */
void app_process_owner(const char *prog, char *buf, size_t len);

int64_t app_mono_us(void);

/* Start-up: ignores SIGPIPE and opens the holdfast store at url (the default options);
 * false, said on stderr as `prog`, when it cannot. */
bool app_store_open(const char *prog, const char *url, hf_store **out);

/* ---- An app's life (run.c). ------------------------------------------------------------ */

/* What app_run needs to know of an app. Contexts are ctx_size bytes, zeroed before open. */
struct app_def {
	const char *prog; /* "holdfast-shop": for messages */
	const char *name; /* "shop": for log lines and /health */
	const char *listen_host;
	int listen_port;
	const char *holdfast_url;
	hf_store **store; /* where the app keeps its store (set by app_run) */
	int workers;
	size_t ctx_size;
	const char *schema; /* DDL run at start (CREATE ... IF NOT EXISTS), under advisory lock */
	long schema_lock;   /* the lock's key: one per app */
	bool (*open)(void *ctx, char *err, size_t errlen); /* a worker's connections */
	void (*close)(void *ctx);                          /* also after a failed open */
	/* Start-up steps after the schema, on worker 0's context: loads, background threads. */
	bool (*start)(void *ctx0, char *err, size_t errlen);
	void (*stop)(void); /* after serving, if start succeeded; may be NULL */
	const struct app_route *routes;
	size_t n_routes;
	size_t pg_offset; /* offsetof the struct app_pg in a context: where the schema runs */
};

/* Opens the store and the workers' contexts, starts, serves (app_serve, with GET /health
 * added), stops and closes everything. Returns main()'s exit status. */
int app_run(const struct app_def *d);

/* ---- Background threads and holdfast helpers (bg.c). ------------------------------------ */

/* A background thread: fn(bg, arg) runs until it sees app_bg_nap() or app_bg_stopping()
 * say stop. Fields are the thread's; set none of them. */
struct app_bg {
	pthread_t thread;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool kicked, stopping, started;
	void (*fn)(struct app_bg *, void *);
	void *arg;
};

/* false (err says so) when the thread cannot be started. */
bool app_bg_start(struct app_bg *bg, void (*fn)(struct app_bg *, void *), void *arg, char *err,
                  size_t errlen);
/* Sleeps up to ms or until kicked or stopped; false once stopping. */
bool app_bg_nap(struct app_bg *bg, int64_t ms);
void app_bg_kick(struct app_bg *bg); /* wakes a nap (or the next one) */
bool app_bg_stopping(struct app_bg *bg);
void app_bg_stop(struct app_bg *bg); /* asks it to stop and joins it; fine if never started */

/* Makes `name` a declared resource of `capacity` (no change, and no event, when it already
 * is): the idempotent load of a counter at start-up. An HF_* code, *e says why. */
int app_hf_capacity(hf_store *store, const char *name, int64_t capacity, hf_error *e);
/* "PREFIX:ID" into buf: the holdfast resource of a row ("product:7", "book:3"). */
void app_hf_name(char *buf, size_t len, const char *prefix, int64_t id);
/* Takes `units` of the declared resource `name` for owner, NOWAIT, with a lease of ttl_ms
 * and an idempotency key (or NULL): the single-claim acquire of the shop and the library.
 * On HF_OK *hold is yours to hf_hold_free(). */
int app_hf_take(hf_store *store, const char *owner, const char *name, int64_t units, int64_t ttl_ms,
                const char *key, hf_hold **hold, hf_error *e);
/* holdfast's view of a resource: {"resource","capacity","held","available"}, or
 * {"resource","error":{"code","message"}} when it cannot be read. */
json_t *app_hf_resource_json(hf_store *store, const char *name);

#endif /* HF_APP_H */
