/*
 * bookings.c — the booking service: a booking is created PENDING (T1), then CONFIRMED at
 * the saga's end or CANCELLED by its compensation (C1); creation is idempotent by the
 * Idempotency-Key header, and cancel and confirm are safe to repeat.
 */
#include <stdlib.h>
#include <string.h>

#include "flights.h"

enum booking_state { PENDING, CONFIRMED, CANCELLED };
static const char *const state_names[] = {"PENDING", "CONFIRMED", "CANCELLED"};

struct booking {
	int64_t id, flight, bags;
	char *customer;
	char *seat; /* NULL when not given */
	enum booking_state state;
	int64_t created_ms, updated_ms;
};

/* All under fl_mu. Booking i has id i + 1. */
static struct booking *bookings;
static size_t n_bookings, cap_bookings;
static struct fl_keys keys;

static json_t *booking_json(const struct booking *b)
{
	return json_pack("{s:I,s:s,s:I,s:s?,s:I,s:s,s:I,s:I}", "id", (json_int_t)b->id, "customer",
	                 b->customer, "flight", (json_int_t)b->flight, "seat", b->seat, "bags",
	                 (json_int_t)b->bags, "state", state_names[b->state], "created_at_ms",
	                 (json_int_t)b->created_ms, "updated_at_ms", (json_int_t)b->updated_ms);
}

/* Under fl_mu: the booking of id, or NULL with *r set (404). */
static struct booking *find(int64_t id, struct app_reply *r)
{
	if (id < 1 || (size_t)id > n_bookings) {
		app_error(r, 404, "booking_not_found", "no booking %lld", (long long)id);
		return NULL;
	}
	return &bookings[id - 1];
}

/* The body of POST /bookings read into b (its strings still the body's). */
static bool read_new(json_t *in, struct booking *b, struct app_reply *r)
{
	const char *customer, *seat;
	if (!app_need_body(in, r) || !app_field_str(in, "customer", 200, true, &customer, r) ||
	    !app_field_id(in, "flight", &b->flight, r) ||
	    !app_field_str(in, "seat", 8, false, &seat, r))
		return false;
	b->bags = 0;
	if (json_object_get(in, "bags") && !app_field_int(in, "bags", 0, 9, &b->bags, r))
		return false;
	b->customer = (char *)customer;
	b->seat = (char *)seat;
	return true;
}

/* POST /bookings {"customer","flight","seat"?,"bags"?} → 201 PENDING; a repeat of its
 * Idempotency-Key answers 200 with that booking as it is now. */
static void create(struct app_call *k)
{
	struct booking b = {0};
	const char *key;
	if (!read_new(k->in, &b, k->r) || !fl_idem_key(k, &key))
		return;
	b.customer = strdup(b.customer);
	b.seat = b.seat ? strdup(b.seat) : NULL;
	if (!b.customer || (json_object_get(k->in, "seat") && !b.seat))
		goto oom;
	b.created_ms = b.updated_ms = hf_now_ms();
	pthread_mutex_lock(&fl_mu);
	int64_t seen = key ? fl_keys_find(&keys, key) : 0;
	if (seen) {
		app_ok(k->r, 200, booking_json(&bookings[seen - 1]));
		pthread_mutex_unlock(&fl_mu);
		free(b.customer);
		free(b.seat);
		return;
	}
	b.id = (int64_t)n_bookings + 1;
	if (!fl_grow((void **)&bookings, sizeof(b), n_bookings, &cap_bookings) ||
	    (key && !fl_keys_add(&keys, key, b.id))) {
		pthread_mutex_unlock(&fl_mu);
		goto oom;
	}
	bookings[n_bookings++] = b;
	app_ok(k->r, 201, booking_json(&b));
	pthread_mutex_unlock(&fl_mu);
	return;
oom:
	free(b.customer);
	free(b.seat);
	app_error(k->r, 503, "out_of_memory", "out of memory");
}

static void get(struct app_call *k)
{
	pthread_mutex_lock(&fl_mu);
	struct booking *b = find(k->id, k->r);
	if (b)
		app_ok(k->r, 200, booking_json(b));
	pthread_mutex_unlock(&fl_mu);
}

/* GET /bookings?state=S: every booking (in that state), by id. */
static void list(struct app_call *k)
{
	const char *q = k->req->query;
	int want = -1;
	for (int s = PENDING; q && s <= CANCELLED; s++)
		if (strncmp(q, "state=", 6) == 0 && strcmp(q + 6, state_names[s]) == 0)
			want = s;
	if (q && want < 0)
		return (void)app_error(k->r, 400, "invalid_query",
		                       "the only parameter is state=PENDING|CONFIRMED|CANCELLED");
	json_t *list = json_array();
	pthread_mutex_lock(&fl_mu);
	for (size_t i = 0; list && i < n_bookings; i++)
		if (want < 0 || (int)bookings[i].state == want)
			json_array_append_new(list, booking_json(&bookings[i]));
	pthread_mutex_unlock(&fl_mu);
	app_ok(k->r, 200, json_pack("{s:o}", "bookings", list));
}

/* Moves a booking from PENDING to `to`; repeating a move that is done answers 200 again, the
 * other move after it 409 (a confirmed booking is not cancelled, nor the reverse). */
static void move(struct app_call *k, enum booking_state to)
{
	pthread_mutex_lock(&fl_mu);
	struct booking *b = find(k->id, k->r);
	if (b && b->state == PENDING) {
		b->state = to;
		b->updated_ms = hf_now_ms();
	}
	if (b && b->state == to)
		app_ok(k->r, 200, booking_json(b));
	else if (b)
		app_error(k->r, 409,
		          b->state == CONFIRMED ? "booking_confirmed" : "booking_cancelled",
		          "booking %lld is %s", (long long)b->id, state_names[b->state]);
	pthread_mutex_unlock(&fl_mu);
}

static void cancel(struct app_call *k)
{
	move(k, CANCELLED);
}

static void confirm(struct app_call *k)
{
	move(k, CONFIRMED);
}

const struct app_route fl_booking_routes[] = {
    {"POST", "/bookings", create},
    {"GET", "/bookings", list},
    {"GET", "/bookings/:id", get},
    {"POST", "/bookings/:id/cancel", cancel},
    {"POST", "/bookings/:id/confirm", confirm},
};
const size_t fl_booking_n_routes = sizeof(fl_booking_routes) / sizeof(fl_booking_routes[0]);

void fl_booking_stop(void)
{
	for (size_t i = 0; i < n_bookings; i++) {
		free(bookings[i].customer);
		free(bookings[i].seat);
	}
	free(bookings);
	fl_keys_free(&keys);
}
