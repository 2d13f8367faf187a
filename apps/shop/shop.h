/*
 * shop.h — what the files of holdfast-shop share: the configuration, a worker's database
 * connection, the stock on holdfast (product:ID resources) and the order dispatcher. The
 * app uses only the public API of libholdfast (holdfast.h) and apps/common.
 */
#ifndef SHOP_H
#define SHOP_H

#include <stdbool.h>
#include <stdint.h>

#include "app.h"
#include "holdfast.h"

/* The command line, read once at start and constant after. */
struct shop_config {
	const char *listen_host;
	int listen_port;
	const char *holdfast_url;
	const char *db_url;
	int workers;
	int64_t hold_ttl_ms; /* lease of an order's hold between its grant and its confirmation */
};

extern struct shop_config shop_cfg;
extern hf_store *shop_store; /* one store for all threads: hf_call is thread-safe */

/* One worker thread's connection, never shared. */
struct shop_conn {
	struct app_pg pg;
};

/* The HTTP API (api.c); a handler's ctx is its worker's shop_conn. */
extern const struct app_route shop_routes[];
extern const size_t shop_n_routes;

/* ---- stock.c: the database and the stock on holdfast. -------------------------------- */

/* The tables, created at start by app_run (IF NOT EXISTS) under advisory lock 727301. */
extern const char shop_schema_sql[];
#define SHOP_SCHEMA_LOCK 727301
/* Makes product:ID's capacity the product's total stock (no change when it is already). */
int shop_stock_put(int64_t product_id, int64_t total_stock, hf_error *e);
/* Loads every product's stock into holdfast at start-up, and says where the database and
 * holdfast disagree. false: err says why (a product could not be loaded). */
bool shop_stock_load(PGconn *pg, char *err, size_t errlen);

/* ---- dispatch.c: the order dispatcher. ----------------------------------------------- */

/* Starts the dispatcher thread (its own connection). */
bool shop_dispatcher_start(char *err, size_t errlen);
/* Wakes it: an order.saved event is waiting. */
void shop_dispatcher_kick(void);
/* Stops it (the event it works on is finished first) and joins it. */
void shop_dispatcher_stop(void);

#endif /* SHOP_H */
