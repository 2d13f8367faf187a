/*
 * catalogue.c — the flight service (flights exist, are open for sale, have these seats: the
 * saga's read-only T2), the baggage quota of each flight declared on holdfast as a units
 * resource (the saga's T4 takes from it), and the pricing service (T5: fare + bags).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "flights.h"

struct flight {
	int64_t id, rows, seats_per_row, fare, bag_fee, baggage_units;
	char from[4], to[4];
	bool open;
};

/* All under fl_mu. */
static struct flight *flights;
static size_t n_flights, cap_flights;
static int64_t last_id;

static json_t *flight_json(const struct flight *f)
{
	return json_pack("{s:I,s:s,s:s,s:I,s:I,s:I,s:I,s:I,s:b}", "id", (json_int_t)f->id, "from",
	                 f->from, "to", f->to, "rows", (json_int_t)f->rows, "seats_per_row",
	                 (json_int_t)f->seats_per_row, "fare", (json_int_t)f->fare, "bag_fee",
	                 (json_int_t)f->bag_fee, "baggage_units", (json_int_t)f->baggage_units,
	                 "open", f->open);
}

/* Under fl_mu: the flight of id, or NULL with *r set (404). */
static struct flight *find(int64_t id, struct app_reply *r)
{
	for (size_t i = 0; i < n_flights; i++)
		if (flights[i].id == id)
			return &flights[i];
	app_error(r, 404, "flight_not_found", "no flight %lld", (long long)id);
	return NULL;
}

/* Under fl_mu: the flight of id if it is open for sale, else NULL with *r set (404, 409). */
static struct flight *find_open(int64_t id, struct app_reply *r)
{
	struct flight *f = find(id, r);
	if (f && !f->open) {
		app_error(r, 409, "flight_closed", "flight %lld is not open for sale",
		          (long long)id);
		return NULL;
	}
	return f;
}

static void baggage_name(char *buf, size_t len, int64_t id)
{
	snprintf(buf, len, "flight/%lld/baggage", (long long)id);
}

/* An airport code: three capital letters. */
static bool field_airport(json_t *in, const char *key, char out[4], struct app_reply *r)
{
	const char *s;
	if (!app_field_str(in, key, 3, true, &s, r))
		return false;
	for (int i = 0; i < 3; i++)
		if (s[i] < 'A' || s[i] > 'Z')
			return app_error(r, 422, "invalid_field", "'%s' must be 3 capital letters",
			                 key);
	memcpy(out, s, 4);
	return true;
}

/* POST /flights {"from","to","rows","seats_per_row"?,"fare","bag_fee"?,"baggage_units",
 * "open"?} → 201; the baggage quota becomes holdfast's flight/ID/baggage. */
static void create(struct app_call *k)
{
	struct flight f = {.seats_per_row = 6, .open = true};
	json_t *in = k->in, *open = json_object_get(in, "open");
	if (!app_need_body(in, k->r) || !field_airport(in, "from", f.from, k->r) ||
	    !field_airport(in, "to", f.to, k->r) ||
	    !app_field_int(in, "rows", 1, 99, &f.rows, k->r) ||
	    (json_object_get(in, "seats_per_row") &&
	     !app_field_int(in, "seats_per_row", 1, 10, &f.seats_per_row, k->r)) ||
	    !app_field_int(in, "fare", 0, 100000000, &f.fare, k->r) ||
	    (json_object_get(in, "bag_fee") &&
	     !app_field_int(in, "bag_fee", 0, 100000000, &f.bag_fee, k->r)) ||
	    !app_field_int(in, "baggage_units", 1, 100000, &f.baggage_units, k->r))
		return;
	if (open && !json_is_boolean(open))
		return (void)app_error(k->r, 422, "invalid_field", "'open' must be true or false");
	f.open = !open || json_is_true(open);
	pthread_mutex_lock(&fl_mu);
	f.id = ++last_id; /* a failed declaration below leaves a gap, never a reused id */
	pthread_mutex_unlock(&fl_mu);
	char name[64];
	hf_error e;
	baggage_name(name, sizeof(name), f.id);
	int rc = app_hf_capacity(fl_store, name, f.baggage_units, &e);
	if (rc != HF_OK)
		return (void)app_error(k->r, 503, "holdfast_unavailable",
		                       "cannot declare %s on holdfast: %s", name, e.message);
	pthread_mutex_lock(&fl_mu);
	if (fl_grow((void **)&flights, sizeof(f), n_flights, &cap_flights)) {
		flights[n_flights++] = f;
		app_ok(k->r, 201, flight_json(&f));
	} else {
		app_error(k->r, 503, "out_of_memory", "out of memory");
	}
	pthread_mutex_unlock(&fl_mu);
}

static void list(struct app_call *k)
{
	json_t *list = json_array();
	pthread_mutex_lock(&fl_mu);
	for (size_t i = 0; list && i < n_flights; i++)
		json_array_append_new(list, flight_json(&flights[i]));
	pthread_mutex_unlock(&fl_mu);
	app_ok(k->r, 200, json_pack("{s:o}", "flights", list));
}

/* Whether seat ("12A": a row from 1, a letter from A) is on flight f. */
static bool seat_valid(const struct flight *f, const char *seat)
{
	char *end;
	long row = strtol(seat, &end, 10);
	return seat[0] >= '1' && seat[0] <= '9' && row >= 1 && row <= f->rows && end[0] >= 'A' &&
	       end[0] < 'A' + f->seats_per_row && end[1] == '\0';
}

/* GET /flights/:id[?seat=S] — the saga's T2: 200 when the flight exists, is open for sale
 * and (if asked) has that seat; 404 flight_not_found, 409 flight_closed, 422 invalid_seat. */
static void get(struct app_call *k)
{
	const char *q = k->req->query, *seat = q && strncmp(q, "seat=", 5) == 0 ? q + 5 : NULL;
	if (q && (!seat || !*seat || strlen(seat) > 8))
		return (void)app_error(k->r, 400, "invalid_query",
		                       "the only parameter is seat=ROWLETTER");
	pthread_mutex_lock(&fl_mu);
	struct flight *f = find_open(k->id, k->r);
	if (f && seat && !seat_valid(f, seat))
		app_error(k->r, 422, "invalid_seat",
		          "flight %lld has no seat %s (rows 1-%lld, %c-%c)", (long long)f->id, seat,
		          (long long)f->rows, 'A', (char)('A' + f->seats_per_row - 1));
	else if (f)
		app_ok(k->r, 200, flight_json(f));
	pthread_mutex_unlock(&fl_mu);
	if (k->r->status == 200 && seat)
		json_object_set_new(k->r->body, "seat", json_string(seat));
}

static void set_open(struct app_call *k, bool open)
{
	pthread_mutex_lock(&fl_mu);
	struct flight *f = find(k->id, k->r);
	if (f) {
		f->open = open;
		app_ok(k->r, 200, flight_json(f));
	}
	pthread_mutex_unlock(&fl_mu);
}

static void close_sale(struct app_call *k)
{
	set_open(k, false);
}

static void open_sale(struct app_call *k)
{
	set_open(k, true);
}

/* GET /baggage/:id — the flight's baggage quota as holdfast counts it. */
static void baggage(struct app_call *k)
{
	pthread_mutex_lock(&fl_mu);
	bool known = find(k->id, k->r) != NULL;
	pthread_mutex_unlock(&fl_mu);
	if (!known)
		return;
	char name[64];
	baggage_name(name, sizeof(name), k->id);
	json_t *view = app_hf_resource_json(fl_store, name);
	if (json_object_get(view, "error")) {
		json_decref(view);
		return (void)app_error(k->r, 503, "holdfast_unavailable", "cannot read %s", name);
	}
	app_ok(k->r, 200, view);
}

/* POST /quotes {"flight","bags"} — the saga's T5: fare + bags × bag fee, in cents. */
static void quote(struct app_call *k)
{
	int64_t id, bags;
	if (!app_need_body(k->in, k->r) || !app_field_id(k->in, "flight", &id, k->r) ||
	    !app_field_int(k->in, "bags", 0, 9, &bags, k->r))
		return;
	pthread_mutex_lock(&fl_mu);
	struct flight *f = find_open(id, k->r);
	if (f)
		app_ok(k->r, 200,
		       json_pack("{s:I,s:I,s:I,s:I,s:I,s:s}", "flight", (json_int_t)id, "bags",
		                 (json_int_t)bags, "fare", (json_int_t)f->fare, "bag_fee",
		                 (json_int_t)f->bag_fee, "amount",
		                 (json_int_t)(f->fare + bags * f->bag_fee), "currency", "EUR"));
	pthread_mutex_unlock(&fl_mu);
}

const struct app_route fl_flight_routes[] = {
    {"POST", "/flights", create},
    {"GET", "/flights", list},
    {"GET", "/flights/:id", get},
    {"POST", "/flights/:id/close", close_sale},
    {"POST", "/flights/:id/open", open_sale},
    {"GET", "/baggage/:id", baggage},
    {"POST", "/quotes", quote},
};
const size_t fl_flight_n_routes = sizeof(fl_flight_routes) / sizeof(fl_flight_routes[0]);

void fl_flight_stop(void)
{
	free(flights);
}
