/*
 * stock.c — the shop's database (products, orders, the outbox) and its stock on holdfast:
 * product:ID has capacity = the product's total stock, its confirmed holds are the units
 * sold; loading at start-up sets the capacity (never adds), so a restart counts nothing twice.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shop.h"

/* clang-format off */
const char shop_schema_sql[] =
	"CREATE TABLE IF NOT EXISTS products ("
	"  id bigserial PRIMARY KEY,"
	"  name text NOT NULL,"
	/* every unit the shop has had: the capacity of product:ID */
	"  total_stock bigint NOT NULL CHECK (total_stock >= 1),"
	/* units on hand: total_stock minus the units of confirmed orders */
	"  stock bigint NOT NULL CHECK (stock >= 0 AND stock <= total_stock),"
	"  created_at timestamptz NOT NULL DEFAULT now(),"
	"  updated_at timestamptz NOT NULL DEFAULT now());"
	"CREATE TABLE IF NOT EXISTS orders ("
	"  id bigserial PRIMARY KEY,"
	"  product_id bigint NOT NULL REFERENCES products(id),"
	"  quantity bigint NOT NULL CHECK (quantity >= 1),"
	"  customer text NOT NULL,"
	"  status text NOT NULL DEFAULT 'PENDING' CHECK (status IN"
	"    ('PENDING','CONFIRMED','CANCELLED')),"
	"  hold_id text,"
	"  cancel_reason text,"
	"  created_at timestamptz NOT NULL DEFAULT now(),"
	"  updated_at timestamptz NOT NULL DEFAULT now());"
	/* the transactional outbox: order.saved (to dispatch), order.confirmed and
	 * order.cancelled (the outcomes, published as processed) */
	"CREATE TABLE IF NOT EXISTS outbox ("
	"  id bigserial PRIMARY KEY,"
	"  order_id bigint NOT NULL REFERENCES orders(id),"
	"  type text NOT NULL,"
	"  payload jsonb NOT NULL,"
	"  created_at timestamptz NOT NULL DEFAULT now(),"
	"  processed_at timestamptz);"
	"CREATE INDEX IF NOT EXISTS outbox_unprocessed ON outbox (id) WHERE processed_at IS NULL;"
	"CREATE INDEX IF NOT EXISTS orders_by_product ON orders (product_id, status);";
/* clang-format on */

int shop_stock_put(int64_t product_id, int64_t total_stock, hf_error *e)
{
	char name[40];
	app_hf_name(name, sizeof(name), "product", product_id);
	return app_hf_capacity(shop_store, name, total_stock, e);
}

/* Says where the books disagree: the database's stock against its confirmed orders, and
 * holdfast's held units against them (a holdfast store that is not the one the sales were
 * made on has lost their holds: the counter then oversells by that much until fixed). */
static void check(int64_t id, int64_t total, int64_t stock, int64_t sold)
{
	char name[40];
	app_hf_name(name, sizeof(name), "product", id);
	json_t *hf = app_hf_resource_json(shop_store, name);
	json_t *held = json_object_get(hf, "held");
	if (total - stock != sold)
		fprintf(stderr,
		        "shop: product %" PRId64 ": stock %" PRId64 " of %" PRId64 " but %" PRId64
		        " units confirmed\n",
		        id, stock, total, sold);
	if (held && json_integer_value(held) < sold)
		fprintf(stderr,
		        "shop: product %" PRId64 ": holdfast holds %" JSON_INTEGER_FORMAT
		        " units but %" PRId64 " are sold: not the store the sales were made on?\n",
		        id, json_integer_value(held), sold);
	json_decref(hf);
}

bool shop_stock_load(PGconn *pg, char *err, size_t errlen)
{
	PGresult *res = PQexec(pg, "SELECT p.id, p.total_stock, p.stock,"
	                           "  (SELECT coalesce(sum(quantity), 0) FROM orders o"
	                           "   WHERE o.product_id = p.id AND o.status = 'CONFIRMED')"
	                           " FROM products p ORDER BY p.id");
	if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		snprintf(err, errlen, "postgres: %s", PQresultErrorMessage(res));
		PQclear(res);
		return false;
	}
	bool ok = true;
	int n = PQntuples(res);
	for (int i = 0; i < n && ok; i++) {
		int64_t id = strtoll(PQgetvalue(res, i, 0), NULL, 10);
		int64_t total = strtoll(PQgetvalue(res, i, 1), NULL, 10);
		int64_t stock = strtoll(PQgetvalue(res, i, 2), NULL, 10);
		int64_t sold = strtoll(PQgetvalue(res, i, 3), NULL, 10);
		hf_error e;
		if (shop_stock_put(id, total, &e) != HF_OK) {
			snprintf(err, errlen, "cannot load product %" PRId64 " into holdfast: %s",
			         id, e.message);
			ok = false;
		} else {
			check(id, total, stock, sold);
		}
	}
	if (ok)
		fprintf(stderr, "shop: loaded the stock of %d products into holdfast\n", n);
	PQclear(res);
	return ok;
}
