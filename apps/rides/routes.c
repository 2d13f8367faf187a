/*
 * routes.c — the HTTP API of holdfast-rides as one table (method, path pattern, handler),
 * the matching of a request to it, request bodies, and the JSON error shape
 * {"error":{"code","message"}} every failure answers with.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sys/queue.h>

#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "rides.h"

bool rides_error(struct rides_reply *r, int status, const char *code, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	json_decref(r->body);
	r->status = status;
	r->body = json_pack("{s:{s:s,s:s}}", "error", "code", code, "message", msg);
	return false;
}

void rides_ok(struct rides_reply *r, int status, json_t *body)
{
	json_decref(r->body);
	r->status = status;
	r->body = body;
}

/* What a matched route hands its handler. */
struct call {
	struct rides_conn *c;
	int64_t id;        /* the :id of the path, if it has one */
	json_t *in;        /* the body, a JSON object, or NULL */
	const char *query; /* the query string, or NULL */
	struct rides_reply *r;
};

static void h_booking_create(struct call *k)
{
	rides_booking_create(k->c, k->in, k->r);
}
static void h_booking_get(struct call *k)
{
	rides_booking_get(k->c, k->id, k->r);
}
static void h_booking_assign(struct call *k)
{
	rides_booking_assign(k->c, k->id, k->r);
}
static void h_booking_accept(struct call *k)
{
	rides_booking_accept(k->c, k->id, k->in, k->r);
}
static void h_booking_cancel(struct call *k)
{
	rides_booking_cancel(k->c, k->id, k->in, k->r);
}
static void h_booking_complete(struct call *k)
{
	rides_booking_complete(k->c, k->id, k->in, k->r);
}
static void h_rider_create(struct call *k)
{
	rides_rider_create(k->c, k->in, k->r);
}
static void h_driver_create(struct call *k)
{
	rides_driver_create(k->c, k->in, k->r);
}
static void h_driver_move(struct call *k)
{
	rides_driver_move(k->c, k->id, k->in, k->r);
}

static void h_user_bookings(struct call *k)
{
	struct evkeyvalq q;
	TAILQ_INIT(&q);
	const char *type = NULL;
	if (k->query && evhttp_parse_query_str(k->query, &q) == 0)
		type = evhttp_find_header(&q, "user_type");
	rides_user_bookings(k->c, k->id, type, k->r);
	evhttp_clear_headers(&q);
}

static void h_lock_stats(struct call *k)
{
	rides_ok(k->r, 200, rides_stats_json());
}

static void h_health(struct call *k)
{
	rides_ok(k->r, 200,
	         json_pack("{s:s,s:s}", "status", "ok", "holdfast", hf_store_scheme(rides_store)));
}

/* The API. ":id" is a positive integer path segment. */
static const struct route {
	const char *method;
	const char *pattern;
	void (*fn)(struct call *);
} routes[] = {
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
    {"GET", "/health", h_health},
};

/* Matches path against pattern; on a match *id_seg points into path at the :id segment. */
static bool match(const char *pattern, const char *path, const char **id_seg, size_t *id_len)
{
	*id_seg = NULL;
	while (*pattern && *path) {
		if (pattern[0] == ':') {
			const char *end = strchr(path, '/');
			size_t n = end ? (size_t)(end - path) : strlen(path);
			if (n == 0)
				return false;
			*id_seg = path;
			*id_len = n;
			path += n;
			pattern += strcspn(pattern, "/");
			continue;
		}
		if (*pattern != *path)
			return false;
		pattern++;
		path++;
	}
	return *pattern == '\0' && *path == '\0';
}

/* A path segment as a positive id. */
static bool parse_id(const char *s, size_t n, int64_t *out)
{
	if (n == 0 || n > 18)
		return false;
	int64_t v = 0;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (s[i] - '0');
	}
	*out = v;
	return v > 0;
}

void rides_route(struct rides_conn *c, const char *method, const char *path, const char *query,
                 const char *body, size_t body_len, struct rides_reply *r)
{
	char trimmed[512];
	size_t plen = strlen(path);
	if (plen >= sizeof(trimmed)) {
		rides_error(r, 404, "route_not_found", "no route for this path");
		return;
	}
	memcpy(trimmed, path, plen + 1);
	if (plen > 1 && trimmed[plen - 1] == '/')
		trimmed[plen - 1] = '\0';
	const struct route *hit = NULL;
	bool path_known = false;
	const char *seg = NULL;
	size_t seg_len = 0;
	for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
		const char *s;
		size_t n;
		if (!match(routes[i].pattern, trimmed, &s, &n))
			continue;
		path_known = true;
		if (strcmp(routes[i].method, method) == 0) {
			hit = &routes[i];
			seg = s;
			seg_len = n;
			break;
		}
	}
	if (!hit) {
		if (path_known)
			rides_error(r, 405, "method_not_allowed", "%s is not allowed on %s", method,
			            trimmed);
		else
			rides_error(r, 404, "route_not_found", "no route %s %s", method, trimmed);
		return;
	}
	struct call k = {.c = c, .query = query, .r = r};
	if (seg && !parse_id(seg, seg_len, &k.id)) {
		rides_error(r, 400, "invalid_id", "'%.*s' is not an id (a positive integer)",
		            (int)(seg_len > 40 ? 40 : seg_len), seg);
		return;
	}
	if (body_len > 0) {
		json_error_t je;
		k.in = json_loadb(body, body_len, JSON_REJECT_DUPLICATES, &je);
		if (!k.in) {
			rides_error(r, 400, "invalid_json", "request body is not valid JSON: %s",
			            je.text);
			return;
		}
		if (!json_is_object(k.in)) {
			json_decref(k.in);
			rides_error(r, 400, "invalid_json", "request body must be a JSON object");
			return;
		}
	}
	hit->fn(&k);
	json_decref(k.in);
	if (!r->body)
		rides_error(r, 500, "internal_error", "no answer was produced");
}
