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

/* Routes a request of the HTTP front (app_serve) to the API table; ctx is a shop_conn. */
void shop_route(void *ctx, const struct app_request *req, struct app_reply *r);

/* ---- stock.c: the database and the stock on holdfast. -------------------------------- */

/* Creates the tables if missing (safe with several app processes at once). */
bool shop_schema(PGconn *pg, char *err, size_t errlen);
/* "product:ID" into buf. */
void shop_resource_name(int64_t product_id, char *buf, size_t len);
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
