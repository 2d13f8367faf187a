/*
 * dispatch.c — the order dispatcher: one thread (one per database, by an advisory lock) that
 * takes the outbox's order.saved events in order and drives each order's reservation: a hold
 * of its units on product:ID with the order as idempotency key, confirmed, then the order,
 * the stock and the outcome event written in one statement.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shop.h"

#define DISPATCH_LOCK "727302" /* advisory lock: one dispatcher per database */
#define BATCH "100"
#define IDLE_MS 200    /* longest sleep without a kick */
#define BACKOFF_MS 500 /* after a failure of holdfast or the database */
#define ATTEMPTS_MAX 8 /* holds of one order whose lease ended before their confirmation */

static struct app_bg bg;
static struct app_pg dpg; /* the dispatcher's connection */

void shop_dispatcher_kick(void)
{
	app_bg_kick(&bg);
}

/* One order.saved event. */
struct event {
	char id[24], order_id[24];
	int64_t order, product, quantity;
};

enum outcome { DONE, RETRY };

/*
 * Writes an order's outcome in one statement (one transaction): the order (only if still
 * PENDING), the database stock (confirmed: minus its units), the outcome event, and the
 * order.saved event marked processed. An order no longer PENDING only has its event marked.
 */
static enum outcome finish(struct app_pg *pg, const struct event *ev, bool confirmed,
                           const char *hold_id, const char *reason)
{
	/* clang-format off */
	static const char sql[] =
		"WITH o AS (UPDATE orders SET status = $3::text, hold_id = $4, cancel_reason = $5,"
		"    updated_at = now() WHERE id = $2 AND status = 'PENDING'"
		"    RETURNING id, product_id, quantity, customer),"
		" p AS (UPDATE products SET stock = stock - o.quantity, updated_at = now() FROM o"
		"    WHERE products.id = o.product_id AND $3::text = 'CONFIRMED' RETURNING products.id),"
		" e AS (INSERT INTO outbox (order_id, type, payload, processed_at)"
		"    SELECT o.id, CASE WHEN $3::text = 'CONFIRMED' THEN 'order.confirmed'"
		"      ELSE 'order.cancelled' END,"
		"      json_build_object('order_id', o.id, 'product_id', o.product_id,"
		"        'quantity', o.quantity, 'customer', o.customer, 'hold_id', $4::text,"
		"        'reason', $5::text), now() FROM o),"
		" d AS (UPDATE outbox SET processed_at = now() WHERE id = $1)"
		" SELECT (SELECT count(*) FROM o), (SELECT count(*) FROM p)";
	/* clang-format on */
	const char *p[5] = {ev->id, ev->order_id, confirmed ? "CONFIRMED" : "CANCELLED", hold_id,
	                    reason};
	struct app_reply r = {0};
	PGresult *res = app_pg_exec(pg, &r, sql, 5, p, NULL);
	if (!res) {
		json_t *m = json_object_get(json_object_get(r.body, "error"), "message");
		fprintf(stderr, "shop: dispatcher: order %s: %s (retrying)\n", ev->order_id,
		        json_string_value(m) ? json_string_value(m) : "?");
		json_decref(r.body);
		return RETRY;
	}
	PQclear(res);
	return DONE;
}

/* Loads product_id's stock into holdfast from the database (a product whose resource is
 * missing: created by a process that died before loading it). false: no such product. */
static bool reload_product(struct app_pg *pg, int64_t product_id)
{
	struct app_reply r = {0};
	PGresult *res = app_pg_by_id(pg, &r, "SELECT total_stock FROM products WHERE id = $1",
	                             product_id, "product_not_found", "product");
	json_decref(r.body);
	bool ok = res != NULL;
	hf_error e;
	if (ok && shop_stock_put(product_id, strtoll(PQgetvalue(res, 0, 0), NULL, 10), &e) != HF_OK)
		ok = false;
	PQclear(res);
	return ok;
}

/*
 * Reserves an order's units: acquire (NOWAIT) with the order as idempotency key, so that
 * a repeat after a crash gets the same hold back instead of a second one; confirm it; write
 * the outcome. A hold whose lease ended before its confirmation (a crash longer than the
 * lease) holds nothing: the next attempt uses the next key.
 */
static enum outcome reserve(struct app_pg *pg, const struct event *ev)
{
	char name[40], owner[64], key[64];
	app_hf_name(name, sizeof(name), "product", ev->product);
	snprintf(owner, sizeof(owner), "shop:order:%" PRId64, ev->order);
	bool reloaded = false;
	for (int attempt = 0; attempt < ATTEMPTS_MAX; attempt++) {
		if (attempt == 0)
			snprintf(key, sizeof(key), "shop-order:%" PRId64, ev->order);
		else
			snprintf(key, sizeof(key), "shop-order:%" PRId64 ":%d", ev->order, attempt);
		hf_hold *h = NULL;
		hf_error e;
		int rc = app_hf_take(shop_store, owner, name, ev->quantity, shop_cfg.hold_ttl_ms,
		                     key, &h, &e);
		if (rc == HF_EUNAVAILABLE)
			return finish(pg, ev, false, NULL, "out_of_stock");
		if (rc == HF_ECAPACITY)
			return finish(pg, ev, false, NULL, "exceeds_total_stock");
		if (rc == HF_ENORESOURCE && !reloaded) {
			reloaded = true;
			if (!reload_product(pg, ev->product))
				return finish(pg, ev, false, NULL, "product_not_found");
			attempt--;
			continue;
		}
		if (rc != HF_OK) {
			fprintf(stderr,
			        "shop: dispatcher: order %" PRId64 ": hold: %s (retrying)\n",
			        ev->order, e.message);
			return RETRY;
		}
		rc = hf_confirm(shop_store, h->id, h->token, NULL, &e);
		char hold_id[HF_ID_LEN + 1];
		snprintf(hold_id, sizeof(hold_id), "%s", h->id);
		hf_hold_free(h);
		if (rc == HF_EENDED)
			continue;
		if (rc != HF_OK) {
			fprintf(stderr,
			        "shop: dispatcher: order %" PRId64 ": confirm: %s (retrying)\n",
			        ev->order, e.message);
			return RETRY;
		}
		return finish(pg, ev, true, hold_id, NULL);
	}
	return finish(pg, ev, false, NULL, "hold_lapsed");
}

/* One pass over the unprocessed order.saved events, in order; RETRY stops at the first that
 * could not be finished (so that no later event overtakes it). */
static enum outcome pass(struct app_pg *pg, int *done)
{
	struct app_reply r = {0};
	PGresult *res = app_pg_exec(
	    pg, &r,
	    "SELECT e.id, e.order_id, o.product_id, o.quantity FROM outbox e"
	    " JOIN orders o ON o.id = e.order_id"
	    " WHERE e.processed_at IS NULL AND e.type = 'order.saved' ORDER BY e.id LIMIT " BATCH,
	    0, NULL, NULL);
	json_decref(r.body);
	*done = 0;
	if (!res)
		return RETRY;
	enum outcome o = DONE;
	for (int i = 0; i < PQntuples(res) && o == DONE && !app_bg_stopping(&bg); i++) {
		struct event ev;
		snprintf(ev.id, sizeof(ev.id), "%s", PQgetvalue(res, i, 0));
		snprintf(ev.order_id, sizeof(ev.order_id), "%s", PQgetvalue(res, i, 1));
		ev.order = strtoll(ev.order_id, NULL, 10);
		ev.product = strtoll(PQgetvalue(res, i, 2), NULL, 10);
		ev.quantity = strtoll(PQgetvalue(res, i, 3), NULL, 10);
		o = reserve(pg, &ev);
		if (o == DONE)
			(*done)++;
	}
	PQclear(res);
	return o;
}

/* Takes the advisory lock that makes this process the dispatcher; false if another has it. */
static bool lead(struct app_pg *pg)
{
	struct app_reply r = {0};
	PGresult *res =
	    app_pg_exec(pg, &r, "SELECT pg_try_advisory_lock(" DISPATCH_LOCK ")", 0, NULL, NULL);
	json_decref(r.body);
	bool ok = res && strcmp(PQgetvalue(res, 0, 0), "t") == 0;
	PQclear(res);
	return ok;
}

static void dispatcher_main(struct app_bg *self, void *arg)
{
	(void)self;
	struct app_pg *pg = arg;
	bool leading = false;
	for (;;) {
		if (!app_pg_ok(pg)) {
			leading = false; /* a new session: the lock went with the old one */
			if (!app_bg_nap(&bg, BACKOFF_MS))
				break;
			continue;
		}
		if (!leading && !(leading = lead(pg))) {
			if (!app_bg_nap(&bg, BACKOFF_MS))
				break;
			continue;
		}
		int done;
		enum outcome o = pass(pg, &done);
		if (app_bg_stopping(&bg))
			break;
		if (o == RETRY) {
			if (!app_bg_nap(&bg, BACKOFF_MS))
				break;
		} else if (done == 0 && !app_bg_nap(&bg, IDLE_MS)) {
			break;
		}
	}
	app_pg_close(pg);
}

bool shop_dispatcher_start(char *err, size_t errlen)
{
	dpg = (struct app_pg){.url = shop_cfg.db_url, .name = "holdfast-shop-dispatcher"};
	if (app_pg_open(&dpg, err, errlen) && app_bg_start(&bg, dispatcher_main, &dpg, err, errlen))
		return true;
	app_pg_close(&dpg);
	return false;
}

void shop_dispatcher_stop(void)
{
	app_bg_stop(&bg);
}
