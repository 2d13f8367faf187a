/*
 * main.c — holdfast-shop: the inventory and order demo of seed 001 ("Redis write strategy")
 * with holdfast in Redis's place: reads the command line, opens the stores, prepares the
 * database, loads the stock into holdfast, starts the dispatcher and serves.
 */
#include <stdio.h>
#include <stdlib.h>

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

int main(int argc, char **argv)
{
	int64_t workers = 8;
	shop_cfg = (struct shop_config){.listen_host = "127.0.0.1", .listen_port = 3001,
	                                .hold_ttl_ms = 60000};
	const struct app_opt opts[] = {
	    {.name = "listen", .kind = APP_OPT_HOSTPORT, .text = &shop_cfg.listen_host,
	     .port = &shop_cfg.listen_port},
	    {.name = "holdfast", .kind = APP_OPT_TEXT, .text = &shop_cfg.holdfast_url,
	     .required = true},
	    {.name = "db", .kind = APP_OPT_TEXT, .text = &shop_cfg.db_url, .required = true},
	    {.name = "workers", .kind = APP_OPT_INT, .num = &workers, .lo = 1, .hi = 256},
	    {.name = "hold-ttl-ms", .kind = APP_OPT_INT, .num = &shop_cfg.hold_ttl_ms,
	     .lo = 1000, .hi = 3600000},
	    {.name = NULL},
	};
	int rc = app_args("holdfast-shop", usage, opts, argc, argv);
	if (rc >= 0)
		return rc;
	shop_cfg.workers = (int)workers;
	rc = 1;
	char err[512];
	int n = shop_cfg.workers, opened = 0;
	struct shop_conn *conns = calloc((size_t)n, sizeof(*conns));
	if (!conns || !app_store_open("holdfast-shop", shop_cfg.holdfast_url, &shop_store))
		goto out;
	for (; opened < n; opened++) {
		conns[opened].pg = (struct app_pg){.url = shop_cfg.db_url, .name = "holdfast-shop"};
		if (!app_pg_open(&conns[opened].pg, err, sizeof(err))) {
			fprintf(stderr, "holdfast-shop: %s\n", err);
			goto out;
		}
	}
	if (!shop_schema(conns[0].pg.conn, err, sizeof(err)) ||
	    !shop_stock_load(conns[0].pg.conn, err, sizeof(err)) ||
	    !shop_dispatcher_start(err, sizeof(err))) {
		fprintf(stderr, "holdfast-shop: %s\n", err);
		goto out;
	}
	struct app_server srv = {.name = "shop",
	                         .host = shop_cfg.listen_host,
	                         .port = shop_cfg.listen_port,
	                         .engine_url = shop_cfg.holdfast_url,
	                         .ctxs = conns,
	                         .ctx_size = sizeof(*conns),
	                         .n = n,
	                         .route = shop_route};
	rc = app_serve(&srv);
	shop_dispatcher_stop();
out:
	for (int i = 0; i < opened; i++)
		app_pg_close(&conns[i].pg);
	free(conns);
	if (shop_store)
		hf_close(shop_store);
	return rc;
}
