/*
 * api.c — the HTTP API of holdfast-shop as one table: products (the database stock beside
 * holdfast's availability) and orders (saved PENDING with their order.saved outbox event in
 * one transaction; the dispatcher decides them).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shop.h"

#define CONN(k) ((struct shop_conn *)(k)->ctx)

/* clang-format off */
#define TS(col) "to_char(" col " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"
#define PRODUCT_COLS "id, name, total_stock, stock, " TS("created_at") ", " TS("updated_at")
#define ORDER_COLS "id, product_id, quantity, customer, status, hold_id, cancel_reason, " \
	TS("created_at") ", " TS("updated_at")
/* clang-format on */

static json_t *col(PGresult *res, int c, bool integer)
{
	if (PQgetisnull(res, 0, c))
		return json_null();
	return integer ? json_integer(strtoll(PQgetvalue(res, 0, c), NULL, 10))
	               : json_string(PQgetvalue(res, 0, c));
}

/* A one-row result as an object: keys[i] names column i; integer columns are flagged. */
static json_t *row_json(PGresult *res, const char *const *keys, const bool *integer, int n)
{
	json_t *o = json_object();
	for (int i = 0; i < n; i++)
		json_object_set_new(o, keys[i], col(res, i, integer[i]));
	return o;
}

static json_t *product_json(PGresult *res)
{
	static const char *const keys[] = {"id",    "name",       "total_stock",
	                                   "stock", "created_at", "updated_at"};
	static const bool integer[] = {true, false, true, true, false, false};
	json_t *o = row_json(res, keys, integer, 6);
	json_object_set_new(o, "sold",
	                    json_integer(strtoll(PQgetvalue(res, 0, 2), NULL, 10) -
	                                 strtoll(PQgetvalue(res, 0, 3), NULL, 10)));
	return o;
}

static json_t *order_json(PGresult *res)
{
	static const char *const keys[] = {"id",        "product_id", "quantity",      "customer",
	                                   "status",    "hold_id",    "cancel_reason", "created_at",
	                                   "updated_at"};
	static const bool integer[] = {true, true, true, false, false, false, false, false, false};
	return row_json(res, keys, integer, 9);
}

/* holdfast's view of product:ID. */
static json_t *holdfast_json(int64_t product_id)
{
	char name[40];
	app_hf_name(name, sizeof(name), "product", product_id);
	return app_hf_resource_json(shop_store, name);
}

static void h_product_create(struct app_call *k)
{
	const char *name;
	int64_t stock;
	if (!app_need_body(k->in, k->r) || !app_field_str(k->in, "name", 200, true, &name, k->r) ||
	    !app_field_int(k->in, "stock", 1, HF_CAPACITY_MAX, &stock, k->r))
		return;
	struct app_pg *pg = &CONN(k)->pg;
	char s[24];
	snprintf(s, sizeof(s), "%" PRId64, stock);
	const char *p[2] = {name, s};
	/* The row and its resource together: the row is committed only once holdfast has it. */
	if (!app_pg_begin(pg, k->r))
		return;
	PGresult *res = app_pg_exec(pg, k->r,
	                            "INSERT INTO products (name, total_stock, stock) VALUES ($1, "
	                            "$2, $2) RETURNING " PRODUCT_COLS,
	                            2, p, NULL);
	if (!res) {
		app_pg_rollback(pg);
		return;
	}
	int64_t id = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
	hf_error e;
	int rc = shop_stock_put(id, stock, &e);
	if (rc != HF_OK) {
		PQclear(res);
		app_pg_rollback(pg);
		app_error(k->r, 503, "holdfast_unavailable",
		          "cannot load the stock into holdfast: %s", e.message);
		return;
	}
	if (!app_pg_commit(pg, k->r)) {
		PQclear(res);
		return;
	}
	json_t *o = product_json(res);
	json_object_set_new(o, "holdfast", holdfast_json(id));
	app_ok(k->r, 201, o);
	PQclear(res);
}

static void h_product_get(struct app_call *k)
{
	PGresult *res =
	    app_pg_by_id(&CONN(k)->pg, k->r, "SELECT " PRODUCT_COLS " FROM products WHERE id = $1",
	                 k->id, "product_not_found", "product");
	if (!res)
		return;
	json_t *o = product_json(res);
	json_object_set_new(o, "holdfast", holdfast_json(k->id));
	app_ok(k->r, 200, o);
	PQclear(res);
}

static void h_order_create(struct app_call *k)
{
	int64_t product, quantity;
	const char *customer;
	if (!app_need_body(k->in, k->r) || !app_field_id(k->in, "product_id", &product, k->r) ||
	    !app_field_int(k->in, "quantity", 1, HF_CAPACITY_MAX, &quantity, k->r) ||
	    !app_field_str(k->in, "customer", 200, true, &customer, k->r))
		return;
	char s[2][24];
	snprintf(s[0], sizeof(s[0]), "%" PRId64, product);
	snprintf(s[1], sizeof(s[1]), "%" PRId64, quantity);
	const char *p[3] = {s[0], s[1], customer};
	char state[6];
	/* One statement, so one transaction: the order and its order.saved event. */
	PGresult *res = app_pg_exec(
	    &CONN(k)->pg, k->r,
	    "WITH o AS (INSERT INTO orders (product_id, quantity, customer) VALUES ($1, $2, $3)"
	    "   RETURNING *),"
	    " e AS (INSERT INTO outbox (order_id, type, payload) SELECT id, 'order.saved',"
	    "   json_build_object('order_id', id, 'product_id', product_id, 'quantity', quantity,"
	    "     'customer', customer) FROM o)"
	    " SELECT " ORDER_COLS " FROM o",
	    3, p, state);
	if (!res) {
		if (strcmp(state, "23503") == 0)
			app_error(k->r, 404, "product_not_found", "no product %" PRId64, product);
		return;
	}
	shop_dispatcher_kick();
	app_ok(k->r, 202, order_json(res));
	PQclear(res);
}

static void h_order_get(struct app_call *k)
{
	PGresult *res =
	    app_pg_by_id(&CONN(k)->pg, k->r, "SELECT " ORDER_COLS " FROM orders WHERE id = $1",
	                 k->id, "order_not_found", "order");
	if (!res)
		return;
	app_ok(k->r, 200, order_json(res));
	PQclear(res);
}

const struct app_route shop_routes[] = {
    {"POST", "/api/products", h_product_create},
    {"GET", "/api/products/:id", h_product_get},
    {"POST", "/api/orders", h_order_create},
    {"GET", "/api/orders/:id", h_order_get},
};
const size_t shop_n_routes = sizeof(shop_routes) / sizeof(shop_routes[0]);
