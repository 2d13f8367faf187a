/*
 * routes.c — the HTTP API of holdfast-rides as one table (method, path pattern, handler);
 * matching, bodies and the JSON error shape are apps/common's (app_route).
 */

#include <sys/queue.h>

#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "rides.h"

/* The worker's connections, from a matched route's call. */
#define CONN(k) ((struct rides_conn *)(k)->ctx)

static void h_booking_create(struct app_call *k)
{
	rides_booking_create(CONN(k), k->in, k->r);
}
static void h_booking_get(struct app_call *k)
{
	rides_booking_get(CONN(k), k->id, k->r);
}
static void h_booking_assign(struct app_call *k)
{
	rides_booking_assign(CONN(k), k->id, k->r);
}
static void h_booking_accept(struct app_call *k)
{
	rides_booking_accept(CONN(k), k->id, k->in, k->r);
}
static void h_booking_cancel(struct app_call *k)
{
	rides_booking_cancel(CONN(k), k->id, k->in, k->r);
}
static void h_booking_complete(struct app_call *k)
{
	rides_booking_complete(CONN(k), k->id, k->in, k->r);
}
static void h_rider_create(struct app_call *k)
{
	rides_rider_create(CONN(k), k->in, k->r);
}
static void h_driver_create(struct app_call *k)
{
	rides_driver_create(CONN(k), k->in, k->r);
}
static void h_driver_move(struct app_call *k)
{
	rides_driver_move(CONN(k), k->id, k->in, k->r);
}

static void h_user_bookings(struct app_call *k)
{
	struct evkeyvalq q;
	TAILQ_INIT(&q);
	const char *type = NULL;
	if (k->req->query && evhttp_parse_query_str(k->req->query, &q) == 0)
		type = evhttp_find_header(&q, "user_type");
	rides_user_bookings(CONN(k), k->id, type, k->r);
	evhttp_clear_headers(&q);
}

static void h_lock_stats(struct app_call *k)
{
	app_ok(k->r, 200, rides_stats_json());
}

/* The API. ":id" is a positive integer path segment. */
const struct app_route rides_routes[] = {
    {"POST", "/api/bookings", h_booking_create},
    {"GET", "/api/bookings/:id", h_booking_get},
    {"POST", "/api/bookings/:id/assign", h_booking_assign},
    {"POST", "/api/bookings/:id/accept", h_booking_accept},
    {"POST", "/api/bookings/:id/cancel", h_booking_cancel},
    {"POST", "/api/bookings/:id/complete", h_booking_complete},
    {"GET", "/api/users/:id/bookings", h_user_bookings},
    {"GET", "/api/locks/stats", h_lock_stats},
    {"POST", "/api/riders", h_rider_create},
    {"POST", "/api/drivers", h_driver_create},
    {"PUT", "/api/drivers/:id/location", h_driver_move},
};

const size_t rides_n_routes = sizeof(rides_routes) / sizeof(rides_routes[0]);
