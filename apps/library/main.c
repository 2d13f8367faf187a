/*
 * main.c — holdfast-library: the book-borrowing system of seed 000 ("Synchronization") on
 * holdfast holds: reads the command line, opens the stores, prepares the database, loads
 * the books' copies into holdfast, starts the projector and serves.
 */
#include <stddef.h>

#include "library.h"

struct library_config library_cfg;
hf_store *library_store;

static const char usage[] =
    "usage: holdfast-library --holdfast ENGINE_URL --db POSTGRES_URL --redis HOST:PORT [options]\n"
    "\n"
    "Books and borrowings (seed 000): copies on holdfast, books cache-aside in Redis, each\n"
    "user's borrowings as a read model built from holdfast's event log.\n"
    "\n"
    "  --listen HOST:PORT   where to serve HTTP (default 127.0.0.1:3002; port 0: any free)\n"
    "  --holdfast URL       holdfast engine: file:PATH, http://holdfastd, postgres://, redis://\n"
    "  --db URL             PostgreSQL for books, borrowings, events and the read model\n"
    "  --redis HOST:PORT    Redis for the book cache (default 127.0.0.1:6379)\n"
    "  --workers N          HTTP worker threads, each with its own connections (default 8)\n"
    "  --cache-ttl-s N      lifetime of a cached book between invalidations (default 300)\n"
    "  --help               this text\n";

static bool conn_open(void *ctx, char *err, size_t errlen)
{
	return library_conn_open(ctx, "holdfast-library", err, errlen);
}

static void conn_close(void *ctx)
{
	library_conn_close(ctx);
}

/* The copies loaded into holdfast, the start-up cleanup, the projector. */
static bool start(void *ctx0, char *err, size_t errlen)
{
	PGconn *pg = ((struct library_conn *)ctx0)->pg.conn;
	if (!library_load(pg, err, errlen))
		return false;
	library_cleanup(pg);
	return library_projector_start(err, errlen);
}

int main(int argc, char **argv)
{
	int64_t workers = 8;
	library_cfg = (struct library_config){.listen_host = "127.0.0.1",
	                                      .listen_port = 3002,
	                                      .redis_host = "127.0.0.1",
	                                      .redis_port = 6379,
	                                      .cache_ttl_s = 300};
	const struct app_opt opts[] = {
	    {.name = "listen",
	     .kind = APP_OPT_HOSTPORT,
	     .text = &library_cfg.listen_host,
	     .port = &library_cfg.listen_port},
	    {.name = "holdfast",
	     .kind = APP_OPT_TEXT,
	     .text = &library_cfg.holdfast_url,
	     .required = true},
	    {.name = "db", .kind = APP_OPT_TEXT, .text = &library_cfg.db_url, .required = true},
	    {.name = "redis",
	     .kind = APP_OPT_HOSTPORT,
	     .text = &library_cfg.redis_host,
	     .port = &library_cfg.redis_port,
	     .lo = 1},
	    {.name = "workers", .kind = APP_OPT_INT, .num = &workers, .lo = 1, .hi = 256},
	    {.name = "cache-ttl-s",
	     .kind = APP_OPT_INT,
	     .num = &library_cfg.cache_ttl_s,
	     .lo = 1,
	     .hi = 86400},
	    {.name = NULL},
	};
	int rc = app_args("holdfast-library", usage, opts, argc, argv);
	if (rc >= 0)
		return rc;
	const struct app_def def = {.prog = "holdfast-library",
	                            .name = "library",
	                            .listen_host = library_cfg.listen_host,
	                            .listen_port = library_cfg.listen_port,
	                            .holdfast_url = library_cfg.holdfast_url,
	                            .store = &library_store,
	                            .workers = (int)workers,
	                            .ctx_size = sizeof(struct library_conn),
	                            .schema = library_schema_sql,
	                            .schema_lock = LIBRARY_SCHEMA_LOCK,
	                            .pg_offset = offsetof(struct library_conn, pg),
	                            .open = conn_open,
	                            .close = conn_close,
	                            .start = start,
	                            .stop = library_projector_stop,
	                            .routes = library_routes,
	                            .n_routes = library_n_routes};
	return app_run(&def);
}
