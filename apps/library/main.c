/*
 * main.c — holdfast-library: the book-borrowing system of seed 000 ("Synchronization") on
 * holdfast holds: reads the command line, opens the stores, prepares the database, loads
 * the books' copies into holdfast, starts the projector and serves.
 */
#include <stdio.h>
#include <stdlib.h>

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

int main(int argc, char **argv)
{
	int64_t workers = 8;
	library_cfg = (struct library_config){.listen_host = "127.0.0.1",
	                                      .listen_port = 3002,
	                                      .redis_host = "127.0.0.1",
	                                      .redis_port = 6379,
	                                      .cache_ttl_s = 300};
	const struct app_opt opts[] = {
	    {.name = "listen", .kind = APP_OPT_HOSTPORT, .text = &library_cfg.listen_host,
	     .port = &library_cfg.listen_port},
	    {.name = "holdfast", .kind = APP_OPT_TEXT, .text = &library_cfg.holdfast_url,
	     .required = true},
	    {.name = "db", .kind = APP_OPT_TEXT, .text = &library_cfg.db_url, .required = true},
	    {.name = "redis", .kind = APP_OPT_HOSTPORT, .text = &library_cfg.redis_host,
	     .port = &library_cfg.redis_port, .lo = 1},
	    {.name = "workers", .kind = APP_OPT_INT, .num = &workers, .lo = 1, .hi = 256},
	    {.name = "cache-ttl-s", .kind = APP_OPT_INT, .num = &library_cfg.cache_ttl_s, .lo = 1,
	     .hi = 86400},
	    {.name = NULL},
	};
	int rc = app_args("holdfast-library", usage, opts, argc, argv);
	if (rc >= 0)
		return rc;
	rc = 1;
	char err[512];
	int n = (int)workers, opened = 0;
	struct library_conn *conns = calloc((size_t)n, sizeof(*conns));
	if (!conns || !app_store_open("holdfast-library", library_cfg.holdfast_url, &library_store))
		goto out;
	for (; opened < n; opened++)
		if (!library_conn_open(&conns[opened], "holdfast-library", err, sizeof(err))) {
			opened++;
			fprintf(stderr, "holdfast-library: %s\n", err);
			goto out;
		}
	if (!library_schema(conns[0].pg.conn, err, sizeof(err)) ||
	    !library_load(conns[0].pg.conn, err, sizeof(err))) {
		fprintf(stderr, "holdfast-library: %s\n", err);
		goto out;
	}
	library_cleanup(conns[0].pg.conn);
	if (!library_projector_start(err, sizeof(err))) {
		fprintf(stderr, "holdfast-library: %s\n", err);
		goto out;
	}
	struct app_server srv = {.name = "library",
	                         .host = library_cfg.listen_host,
	                         .port = library_cfg.listen_port,
	                         .engine_url = library_cfg.holdfast_url,
	                         .ctxs = conns,
	                         .ctx_size = sizeof(*conns),
	                         .n = n,
	                         .route = library_route};
	rc = app_serve(&srv);
	library_projector_stop();
out:
	for (int i = 0; i < opened; i++)
		library_conn_close(&conns[i]);
	free(conns);
	if (library_store)
		hf_close(library_store);
	return rc;
}
