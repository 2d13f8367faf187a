/*
 * payments.c — the payment service (the saga's T6, and its refund): takes a payment,
 * declines the cards it is told to (--decline, or a rule), keeps a payment waiting for a
 * rule's hold_ms first (a customer who does not pay), is idempotent by Idempotency-Key (a
 * repeat answers the first outcome) and refunds only a payment that succeeded. A refund by
 * the payment's key also voids one still processing and bars one not yet arrived.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "flights.h"

#define CARD_MAX 32
#define HOLD_MAX_MS 600000 /* a held payment keeps an HTTP worker: 10 minutes at most */

enum payment_state { PROCESSING, SUCCEEDED, DECLINED, REFUNDED, VOIDED };
static const char *const state_names[] = {"processing", "succeeded", "declined", "refunded",
                                          "voided"};

struct payment {
	int64_t id, amount, booking, created_ms, ended_ms;
	char card[CARD_MAX + 1];
	char *key; /* NULL when taken without an Idempotency-Key */
	enum payment_state state;
};

/* What the service is told to do with a card. */
struct rule {
	char card[CARD_MAX + 1];
	bool decline;
	int64_t hold_ms;
};

/* All under fl_mu. Payment i has id i + 1. */
static struct payment *payments;
static size_t n_payments, cap_payments;
static struct fl_keys keys;
static struct rule *rules;
static size_t n_rules, cap_rules;

/* The end of a card number, the only part ever shown. */
static const char *last4(const char *card)
{
	size_t len = strlen(card);
	return card + (len > 4 ? len - 4 : 0);
}

static json_t *payment_json(const struct payment *p)
{
	return json_pack("{s:I,s:s,s:I,s:I,s:s,s:s?,s:I,s:I}", "id", (json_int_t)p->id,
	                 "card_last4", last4(p->card), "amount", (json_int_t)p->amount, "booking",
	                 (json_int_t)p->booking, "state", state_names[p->state], "idempotency_key",
	                 p->key, "created_at_ms", (json_int_t)p->created_ms, "ended_at_ms",
	                 (json_int_t)p->ended_ms);
}

static json_t *rule_json(const struct rule *r)
{
	return json_pack("{s:s,s:b,s:I}", "card", r->card, "decline", r->decline, "hold_ms",
	                 (json_int_t)r->hold_ms);
}

/* Under fl_mu: the rule of card, or NULL. */
static struct rule *rule_of(const char *card)
{
	for (size_t i = 0; i < n_rules; i++)
		if (strcmp(rules[i].card, card) == 0)
			return &rules[i];
	return NULL;
}

/* Under fl_mu: sets card's rule; false when out of memory. */
static bool rule_put(const struct rule *want)
{
	struct rule *r = rule_of(want->card);
	if (!r) {
		if (!fl_grow((void **)&rules, sizeof(*rules), n_rules, &cap_rules))
			return false;
		r = &rules[n_rules++];
	}
	*r = *want;
	return true;
}

/* Under fl_mu: the answer to a payment as it stands: 201 with the payment once it went
 * through (refunded later or not), 402 card_declined or payment_voided, 409
 * payment_in_progress. */
static void answer(const struct payment *p, bool replayed, struct app_reply *r)
{
	if (p->state == VOIDED) {
		app_error(
		    r, 402, "payment_voided",
		    "payment %lld was refunded by its key before it was taken: it never will be",
		    (long long)p->id);
	} else if (p->state == PROCESSING) {
		app_error(r, 409, "payment_in_progress",
		          "payment %lld under this Idempotency-Key is still being processed",
		          (long long)p->id);
	} else if (p->state == DECLINED) {
		app_error(r, 402, "card_declined", "payment %lld: the card ending %s was declined",
		          (long long)p->id, last4(p->card));
		json_object_set_new(r->body, "payment", payment_json(p));
	} else {
		app_ok(r, 201, payment_json(p));
	}
	if (replayed)
		json_object_set_new(r->body, "replayed", json_true());
}

static void sleep_ms(int64_t ms)
{
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
	while (nanosleep(&ts, &ts) != 0)
		;
}

/* Under fl_mu: a repeat of key (0 when new), answered into *r. A repeat with another card,
 * amount or booking is a client bug: 422. */
static int64_t replay(const char *key, const struct payment *want, struct app_reply *r)
{
	int64_t id = key ? fl_keys_find(&keys, key) : 0;
	if (!id)
		return 0;
	const struct payment *p = &payments[id - 1];
	if (p->state == VOIDED)
		answer(p, true, r);
	else if (strcmp(p->card, want->card) != 0 || p->amount != want->amount ||
	         p->booking != want->booking)
		app_error(r, 422, "idempotency_key_reused",
		          "Idempotency-Key was used for payment %lld with another card, amount or "
		          "booking",
		          (long long)id);
	else
		answer(p, true, r);
	return id;
}

/* POST /payments {"card","amount","booking"} (Idempotency-Key) → 201 succeeded, 402
 * card_declined; a card with a hold_ms rule is answered only after that wait. */
static void pay(struct app_call *k)
{
	struct payment p = {0};
	const char *card, *key;
	if (!app_need_body(k->in, k->r) ||
	    !app_field_str(k->in, "card", CARD_MAX, true, &card, k->r) ||
	    !app_field_int(k->in, "amount", 1, 1000000000, &p.amount, k->r) ||
	    !app_field_id(k->in, "booking", &p.booking, k->r) || !fl_idem_key(k, &key))
		return;
	snprintf(p.card, sizeof(p.card), "%s", card);
	p.key = key ? strdup(key) : NULL;
	pthread_mutex_lock(&fl_mu);
	if (replay(key, &p, k->r)) {
		pthread_mutex_unlock(&fl_mu);
		free(p.key);
		return;
	}
	if ((key && !p.key) || !fl_grow((void **)&payments, sizeof(p), n_payments, &cap_payments) ||
	    (key && !fl_keys_add(&keys, key, (int64_t)n_payments + 1))) {
		pthread_mutex_unlock(&fl_mu);
		free(p.key);
		return (void)app_error(k->r, 503, "out_of_memory", "out of memory");
	}
	p.id = (int64_t)n_payments + 1;
	p.created_ms = hf_now_ms();
	p.state = PROCESSING;
	payments[n_payments++] = p;
	const struct rule *rule = rule_of(p.card);
	bool decline = rule && rule->decline;
	int64_t hold_ms = rule ? rule->hold_ms : 0;
	pthread_mutex_unlock(&fl_mu);
	if (hold_ms > 0)
		sleep_ms(hold_ms);
	pthread_mutex_lock(&fl_mu);
	struct payment *done = &payments[p.id - 1]; /* the vector may have moved meanwhile */
	if (done->state == PROCESSING) { /* else voided during the hold: nothing is taken */
		done->state = decline ? DECLINED : SUCCEEDED;
		done->ended_ms = hf_now_ms();
	}
	answer(done, false, k->r);
	pthread_mutex_unlock(&fl_mu);
}

/* Under fl_mu: the payment of id, or NULL with *r set (404). */
static struct payment *find(int64_t id, struct app_reply *r)
{
	if ((size_t)id > n_payments) {
		app_error(r, 404, "payment_not_found", "no payment %lld", (long long)id);
		return NULL;
	}
	return &payments[id - 1];
}

static void get(struct app_call *k)
{
	pthread_mutex_lock(&fl_mu);
	struct payment *p = find(k->id, k->r);
	if (p)
		app_ok(k->r, 200, payment_json(p));
	pthread_mutex_unlock(&fl_mu);
}

/* GET /payments[?booking=ID]: every payment (of that booking), by id. */
static void list(struct app_call *k)
{
	long long booking = 0;
	if (k->req->query && (sscanf(k->req->query, "booking=%lld", &booking) != 1 || booking < 1))
		return (void)app_error(k->r, 400, "invalid_query",
		                       "the only parameter is booking=ID");
	json_t *list = json_array();
	pthread_mutex_lock(&fl_mu);
	for (size_t i = 0; list && i < n_payments; i++)
		if (!booking || payments[i].booking == booking)
			json_array_append_new(list, payment_json(&payments[i]));
	pthread_mutex_unlock(&fl_mu);
	app_ok(k->r, 200, json_pack("{s:o}", "payments", list));
}

/* POST /payments/:id/refund — the saga's compensation of T6: only a payment that succeeded
 * is refunded (200, and 200 again on a repeat); 409 payment_not_succeeded otherwise. */
static void refund(struct app_call *k)
{
	pthread_mutex_lock(&fl_mu);
	struct payment *p = find(k->id, k->r);
	if (p && p->state == SUCCEEDED) {
		p->state = REFUNDED;
		p->ended_ms = hf_now_ms();
	}
	if (p && p->state == REFUNDED)
		app_ok(k->r, 200, payment_json(p));
	else if (p)
		app_error(k->r, 409,
		          p->state == PROCESSING ? "payment_in_progress" : "payment_not_succeeded",
		          "payment %lld is %s: only a payment that succeeded is refunded",
		          (long long)p->id, state_names[p->state]);
	pthread_mutex_unlock(&fl_mu);
}

/* Under fl_mu: a voided payment under key, so that no payment is ever taken under it; its
 * id, or 0 when out of memory. */
static int64_t bar(const char *key)
{
	struct payment p = {.id = (int64_t)n_payments + 1, .state = VOIDED, .key = strdup(key)};
	if (!p.key || !fl_grow((void **)&payments, sizeof(p), n_payments, &cap_payments) ||
	    !fl_keys_add(&keys, key, p.id)) {
		free(p.key);
		return 0;
	}
	p.created_ms = p.ended_ms = hf_now_ms();
	payments[n_payments++] = p;
	return p.id;
}

/* POST /refunds {"payment_key"} — the saga's compensation of T6 by the key its payment was
 * (or would have been) sent with, so it needs no reply of T6: a payment that succeeded is
 * refunded; one still processing is voided (its customer is never charged); one declined
 * stays so; and a key with no payment yet is barred, so that a payment arriving after its
 * compensation (a retry, a slow network) is voided too. 200 {"outcome","payment"}. */
static void refund_by_key(struct app_call *k)
{
	const char *key;
	if (!app_need_body(k->in, k->r) ||
	    !app_field_str(k->in, "payment_key", FL_KEY_MAX, true, &key, k->r))
		return;
	pthread_mutex_lock(&fl_mu);
	int64_t id = fl_keys_find(&keys, key);
	if (!id && !(id = bar(key))) {
		pthread_mutex_unlock(&fl_mu);
		return (void)app_error(k->r, 503, "out_of_memory", "out of memory");
	}
	struct payment *p = &payments[id - 1];
	if (p->state == SUCCEEDED || p->state == PROCESSING) {
		p->state = p->state == SUCCEEDED ? REFUNDED : VOIDED;
		p->ended_ms = hf_now_ms();
	}
	app_ok(k->r, 200,
	       json_pack("{s:s,s:o}", "outcome",
	                 p->state == REFUNDED ? "refunded"
	                 : p->state == VOIDED ? "voided"
	                                      : "not_taken",
	                 "payment", payment_json(p)));
	pthread_mutex_unlock(&fl_mu);
}

/* POST /payment-rules {"card","decline"?,"hold_ms"?} — what to do with that card from now. */
static void put_rule(struct app_call *k)
{
	struct rule want = {0};
	const char *card;
	json_t *decline = json_object_get(k->in, "decline");
	if (!app_need_body(k->in, k->r) ||
	    !app_field_str(k->in, "card", CARD_MAX, true, &card, k->r) ||
	    (json_object_get(k->in, "hold_ms") &&
	     !app_field_int(k->in, "hold_ms", 0, HOLD_MAX_MS, &want.hold_ms, k->r)))
		return;
	if (decline && !json_is_boolean(decline))
		return (void)app_error(k->r, 422, "invalid_field",
		                       "'decline' must be true or false");
	snprintf(want.card, sizeof(want.card), "%s", card);
	want.decline = json_is_true(decline);
	pthread_mutex_lock(&fl_mu);
	if (rule_put(&want))
		app_ok(k->r, 200, rule_json(&want));
	else
		app_error(k->r, 503, "out_of_memory", "out of memory");
	pthread_mutex_unlock(&fl_mu);
}

static void list_rules(struct app_call *k)
{
	json_t *list = json_array();
	pthread_mutex_lock(&fl_mu);
	for (size_t i = 0; list && i < n_rules; i++)
		json_array_append_new(list, rule_json(&rules[i]));
	pthread_mutex_unlock(&fl_mu);
	app_ok(k->r, 200, json_pack("{s:o}", "rules", list));
}

const struct app_route fl_payment_routes[] = {
    {"POST", "/payments", pay},
    {"GET", "/payments", list},
    {"GET", "/payments/:id", get},
    {"POST", "/payments/:id/refund", refund},
    {"POST", "/refunds", refund_by_key},
    {"POST", "/payment-rules", put_rule},
    {"GET", "/payment-rules", list_rules},
};
const size_t fl_payment_n_routes = sizeof(fl_payment_routes) / sizeof(fl_payment_routes[0]);

bool fl_payment_start(const char *decline_list, char *err, size_t errlen)
{
	for (const char *s = decline_list; s && *s;) {
		size_t n = strcspn(s, ",");
		struct rule r = {.decline = true};
		if (n == 0 || n > CARD_MAX) {
			snprintf(err, errlen, "--decline: card numbers are 1 to %d characters",
			         CARD_MAX);
			return false;
		}
		memcpy(r.card, s, n);
		if (!rule_put(&r)) {
			snprintf(err, errlen, "out of memory");
			return false;
		}
		s += n + (s[n] == ',');
	}
	return true;
}

void fl_payment_stop(void)
{
	for (size_t i = 0; i < n_payments; i++)
		free(payments[i].key);
	free(payments);
	free(rules);
	fl_keys_free(&keys);
}
