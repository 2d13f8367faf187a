/*
 * main.c — holdfast-shop: the inventory and order demo of seed 001 ("Redis write strategy")
 * with holdfast in Redis's place: reads the command line, opens the stores, prepares the
 * database, loads the stock into holdfast, starts the dispatcher and serves.
 */
#include <stddef.h>

#include "shop.h"

struct shop_config shop_cfg;
hf_store *shop_store;

static const char usage[] =
    "usage: holdfast-shop --holdfast ENGINE_URL --db POSTGRES_URL [options]\n"
    "\n"
    "Products and orders (seed 001): stock on holdfast, orders through a transactional outbox.\n"
    "\n"
    "  --listen HOST:PORT   where to serve HTTP (default 127.0.0.1:3001; port 0: any free)\n"
    "  --holdfast URL       holdfast engine: file:PATH, http://holdfastd, postgres://, redis://\n"
    "  --db URL             PostgreSQL for products, orders and the outbox\n"
    "  --workers N          HTTP worker threads, each with its own connection (default 8)\n"
    "  --hold-ttl-ms N      lease of an order's hold until it is confirmed (default 60000)\n"
    "  --help               this text\n";

static bool conn_open(void *ctx, char *err, size_t errlen)
{
	struct shop_conn *c = ctx;
	c->pg = (struct app_pg){.url = shop_cfg.db_url, .name = "holdfast-shop"};
	return app_pg_open(&c->pg, err, errlen);
}

static void conn_close(void *ctx)
{
	app_pg_close(&((struct shop_conn *)ctx)->pg);
}

/* The stock loaded into holdfast, the dispatcher. */
static bool start(void *ctx0, char *err, size_t errlen)
{
	PGconn *pg = ((struct shop_conn *)ctx0)->pg.conn;
	return shop_stock_load(pg, err, errlen) && shop_dispatcher_start(err, errlen);
}

int main(int argc, char **argv)
{
	int64_t workers = 8;
	shop_cfg = (struct shop_config){
	    .listen_host = "127.0.0.1", .listen_port = 3001, .hold_ttl_ms = 60000};
	const struct app_opt opts[] = {
	    {.name = "listen",
	     .kind = APP_OPT_HOSTPORT,
	     .text = &shop_cfg.listen_host,
	     .port = &shop_cfg.listen_port},
	    {.name = "holdfast",
	     .kind = APP_OPT_TEXT,
	     .text = &shop_cfg.holdfast_url,
	     .required = true},
	    {.name = "db", .kind = APP_OPT_TEXT, .text = &shop_cfg.db_url, .required = true},
	    {.name = "workers", .kind = APP_OPT_INT, .num = &workers, .lo = 1, .hi = 256},
	    {.name = "hold-ttl-ms",
	     .kind = APP_OPT_INT,
	     .num = &shop_cfg.hold_ttl_ms,
	     .lo = 1000,
	     .hi = 3600000},
	    {.name = NULL},
	};
	int rc = app_args("holdfast-shop", usage, opts, argc, argv);
	if (rc >= 0)
		return rc;
	shop_cfg.workers = (int)workers;
	const struct app_def def = {.prog = "holdfast-shop",
	                            .name = "shop",
	                            .listen_host = shop_cfg.listen_host,
	                            .listen_port = shop_cfg.listen_port,
	                            .holdfast_url = shop_cfg.holdfast_url,
	                            .store = &shop_store,
	                            .workers = shop_cfg.workers,
	                            .ctx_size = sizeof(struct shop_conn),
	                            .schema = shop_schema_sql,
	                            .schema_lock = SHOP_SCHEMA_LOCK,
	                            .pg_offset = offsetof(struct shop_conn, pg),
	                            .open = conn_open,
	                            .close = conn_close,
	                            .start = start,
	                            .stop = shop_dispatcher_stop,
	                            .routes = shop_routes,
	                            .n_routes = shop_n_routes};
	return app_run(&def);
}
