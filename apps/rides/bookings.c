/*
 * bookings.c — the booking state machine (requested -> assigned -> accepted -> completed, or
 * cancelled), riders and drivers. Every change of a booking runs under its lock: an
 * exclusive holdfast hold on "booking:ID" with a short lease and a bounded wait, whose fence
 * the UPDATE carries (a row refuses a fence lower than the last one that wrote it). A driver
 * on a booking is held on holdfast ("driver:ID", capacity 1) until the booking ends.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "rides.h"

/* ---- Bookings as rows and as JSON. ------------------------------------------------------- */

/* clang-format off */
#define TS(col) "to_char(" col " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"
#define BOOKING_COLS                                                                            \
	"id, rider_id, driver_id, status, pickup_lat, pickup_lng, dropoff_lat, dropoff_lng, "      \
	"estimated_fare, actual_fare, cancel_reason, cancelled_by_id, cancelled_by_type, "         \
	"driver_hold_id, driver_hold_token, lock_fence, " TS("created_at") ", " TS("updated_at")   \
	", " TS("assigned_at") ", " TS("accepted_at") ", " TS("completed_at") ", "                  \
	TS("cancelled_at")
/* clang-format on */

enum {
	B_ID,
	B_RIDER,
	B_DRIVER,
	B_STATUS,
	B_PLAT,
	B_PLNG,
	B_DLAT,
	B_DLNG,
	B_EFARE,
	B_AFARE,
	B_REASON,
	B_CBY_ID,
	B_CBY_TYPE,
	B_HOLD_ID,
	B_HOLD_TOKEN,
	B_FENCE,
	B_CREATED,
	B_UPDATED,
	B_ASSIGNED,
	B_ACCEPTED,
	B_COMPLETED,
	B_CANCELLED
};

/* What the state machine needs of a booking row. */
struct booking {
	int64_t id, rider_id, driver_id; /* driver_id 0: none */
	char status[16];
	char hold_id[HF_ID_LEN + 1], hold_token[HF_TOKEN_LEN + 1]; /* "" when none */
};

static void booking_read(PGresult *res, int row, struct booking *b)
{
	b->id = strtoll(PQgetvalue(res, row, B_ID), NULL, 10);
	b->rider_id = strtoll(PQgetvalue(res, row, B_RIDER), NULL, 10);
	b->driver_id =
	    PQgetisnull(res, row, B_DRIVER) ? 0 : strtoll(PQgetvalue(res, row, B_DRIVER), NULL, 10);
	snprintf(b->status, sizeof(b->status), "%s", PQgetvalue(res, row, B_STATUS));
	snprintf(b->hold_id, sizeof(b->hold_id), "%s", PQgetvalue(res, row, B_HOLD_ID));
	snprintf(b->hold_token, sizeof(b->hold_token), "%s", PQgetvalue(res, row, B_HOLD_TOKEN));
}

static json_t *col_int(PGresult *res, int row, int col)
{
	return PQgetisnull(res, row, col)
	           ? json_null()
	           : json_integer(strtoll(PQgetvalue(res, row, col), NULL, 10));
}

static json_t *col_num(PGresult *res, int row, int col)
{
	return PQgetisnull(res, row, col) ? json_null()
	                                  : json_real(strtod(PQgetvalue(res, row, col), NULL));
}

static json_t *col_str(PGresult *res, int row, int col)
{
	return PQgetisnull(res, row, col) ? json_null() : json_string(PQgetvalue(res, row, col));
}

/* A booking row as the API shows it. The hold's token is a secret: never shown. */
static json_t *booking_json(PGresult *res, int row)
{
	json_t *o = json_object();
	json_object_set_new(o, "id", col_int(res, row, B_ID));
	json_object_set_new(o, "rider_id", col_int(res, row, B_RIDER));
	json_object_set_new(o, "driver_id", col_int(res, row, B_DRIVER));
	json_object_set_new(o, "status", col_str(res, row, B_STATUS));
	json_object_set_new(o, "pickup_lat", col_num(res, row, B_PLAT));
	json_object_set_new(o, "pickup_lng", col_num(res, row, B_PLNG));
	json_object_set_new(o, "dropoff_lat", col_num(res, row, B_DLAT));
	json_object_set_new(o, "dropoff_lng", col_num(res, row, B_DLNG));
	json_object_set_new(o, "estimated_fare", col_num(res, row, B_EFARE));
	json_object_set_new(o, "actual_fare", col_num(res, row, B_AFARE));
	json_object_set_new(o, "cancel_reason", col_str(res, row, B_REASON));
	if (PQgetisnull(res, row, B_CBY_ID))
		json_object_set_new(o, "cancelled_by", json_null());
	else
		json_object_set_new(o, "cancelled_by",
		                    json_pack("{s:o,s:o}", "user_id", col_int(res, row, B_CBY_ID),
		                              "user_type", col_str(res, row, B_CBY_TYPE)));
	json_object_set_new(o, "driver_hold_id", col_str(res, row, B_HOLD_ID));
	json_object_set_new(o, "driver_hold_active",
	                    json_boolean(!PQgetisnull(res, row, B_HOLD_TOKEN)));
	json_object_set_new(o, "lock_fence", col_int(res, row, B_FENCE));
	json_object_set_new(o, "created_at", col_str(res, row, B_CREATED));
	json_object_set_new(o, "updated_at", col_str(res, row, B_UPDATED));
	json_object_set_new(o, "assigned_at", col_str(res, row, B_ASSIGNED));
	json_object_set_new(o, "accepted_at", col_str(res, row, B_ACCEPTED));
	json_object_set_new(o, "completed_at", col_str(res, row, B_COMPLETED));
	json_object_set_new(o, "cancelled_at", col_str(res, row, B_CANCELLED));
	return o;
}

/* Reads booking `id`: true with *res (one row) or false with *r (404 or a database error). */
static bool booking_select(struct rides_conn *c, int64_t id, PGresult **res, struct app_reply *r)
{
	char ids[24];
	snprintf(ids, sizeof(ids), "%" PRId64, id);
	const char *p[1] = {ids};
	*res = rides_pg(c, r, "SELECT " BOOKING_COLS " FROM bookings WHERE id = $1", 1, p, NULL);
	if (!*res)
		return false;
	if (PQntuples(*res) == 0) {
		PQclear(*res);
		*res = NULL;
		return app_error(r, 404, "booking_not_found", "no booking %" PRId64, id);
	}
	return true;
}

/* ---- The booking lock. -------------------------------------------------------------------- */

struct booking_lock {
	hf_hold *hold;
	int64_t fence;
	char fence_s[24];
};

static bool engine_transient(int rc)
{
	return rc == HF_EENGINE || rc == HF_ESTORAGE || rc == HF_EPROTO || rc == HF_ENOMEM;
}

/*
 * Takes booking:ID exclusively: NOWAIT first (the common, uncontested case: one round trip),
 * then, if someone holds it, a FIFO wait of at most lock_wait_ms. An engine that fails is
 * retried with exponential backoff (25, 50, 100 ms) before the request gives up with 503.
 */
static bool lock_booking(struct rides_conn *c, int64_t id, struct booking_lock *l,
                         struct app_reply *r)
{
	char name[40];
	snprintf(name, sizeof(name), "booking:%" PRId64, id);
	hf_claim claim = {.name = name, .units = 1, .capacity = 1};
	hf_acquire_req req = {.owner = c->owner,
	                      .claims = &claim,
	                      .n_claims = 1,
	                      .ttl_ms = rides_cfg.lock_ttl_ms,
	                      .wait_ms = 0,
	                      .mode = HF_MODE_EXCLUSIVE};
	int64_t t0 = app_mono_us();
	int64_t backoff_ms = 25;
	hf_error e;
	int rc, retries = 0;
	bool contested = false;
	for (;;) {
		rc = hf_acquire(rides_store, &req, &l->hold, &e);
		if (rc == HF_EUNAVAILABLE && !contested) {
			contested = true;
			rides_stat_add(RIDES_LOCK_CONTESTED);
			req.wait_ms = rides_cfg.lock_wait_ms;
			if (req.wait_ms > 0)
				continue;
		}
		if (engine_transient(rc) && retries < 3) {
			retries++;
			usleep((useconds_t)backoff_ms * 1000);
			backoff_ms *= 2;
			continue;
		}
		break;
	}
	if (rc == HF_OK) {
		rides_stat_latency(app_mono_us() - t0);
		rides_stat_add(RIDES_LOCK_ACQUIRED);
		l->fence = l->hold->parts[0].fence;
		snprintf(l->fence_s, sizeof(l->fence_s), "%" PRId64, l->fence);
		return true;
	}
	l->hold = NULL;
	if (rc == HF_ETIMEDOUT || rc == HF_EUNAVAILABLE) {
		rides_stat_add(RIDES_LOCK_TIMEOUT);
		return app_error(r, 409, "lock_timeout",
		                   "booking %" PRId64
		                   " is busy: its lock was not free within %" PRId64 " ms; retry",
		                   id, rides_cfg.lock_wait_ms);
	}
	rides_stat_add(RIDES_LOCK_ERROR);
	return app_error(r, 503, "lock_unavailable", "cannot lock booking %" PRId64 ": %s", id,
	                   e.message);
}

static void unlock_booking(struct booking_lock *l)
{
	if (!l->hold)
		return;
	hf_error e;
	int rc = hf_release(rides_store, l->hold->id, l->hold->token, NULL, &e);
	if (rc == HF_OK)
		rides_stat_add(RIDES_LOCK_RELEASED);
	else if (rc == HF_EENDED)
		rides_stat_add(RIDES_LOCK_EXPIRED); /* the lease ran out first */
	else
		fprintf(stderr, "rides: release of lock %s failed: %s\n", l->hold->id, e.message);
	hf_hold_free(l->hold);
	l->hold = NULL;
}

/*
 * Runs a fenced UPDATE ... WHERE id = $1 AND lock_fence <= $2 AND status = <the status we
 * read> ... RETURNING BOOKING_COLS. The fence stops a holder whose lease lapsed from writing
 * after a newer holder wrote; the status stops a newer holder from acting on what it read
 * before such an old holder's late write landed (the read is not fenced, the write is).
 * 1: the row was written (*res holds it); 0: refused, our lock lapsed and someone else has
 * changed the row (*r is 409 lock_lost); -1: a database error (*r, and `state`).
 */
static int fenced_update(struct rides_conn *c, const char *sql, int n, const char *const *p,
                         PGresult **res, struct app_reply *r, char state[6])
{
	*res = rides_pg(c, r, sql, n, p, state);
	if (!*res)
		return -1;
	if (PQntuples(*res) == 1)
		return 1;
	PQclear(*res);
	*res = NULL;
	rides_stat_add(RIDES_LOCK_FENCED);
	app_error(r, 409, "lock_lost",
	            "booking %s changed under another lock while ours (fence %s) lapsed: not "
	            "changed; retry",
	            p[0], p[1]);
	return 0;
}

/* ---- Driver holds. ------------------------------------------------------------------------ */

/* Releases a driver hold; true if it is gone (released now, or had already ended). */
static bool driver_release(const char *hold_id, const char *token)
{
	hf_error e;
	int rc = hf_release(rides_store, hold_id, token, NULL, &e);
	if (rc == HF_OK)
		rides_stat_add(RIDES_HOLD_RELEASED);
	if (rc == HF_OK || rc == HF_EENDED || rc == HF_ENOHOLD)
		return true;
	fprintf(stderr, "rides: release of driver hold %s failed: %s (start-up cleanup retries)\n",
	        hold_id, e.message);
	return false;
}

/* After a booking ended: releases its driver hold and forgets the token (fenced). */
static void booking_free_driver(struct rides_conn *c, const struct booking *b,
                                const struct booking_lock *l, PGresult **res)
{
	if (!b->hold_token[0] || !driver_release(b->hold_id, b->hold_token))
		return;
	struct app_reply ignore = {0};
	char ids[24];
	snprintf(ids, sizeof(ids), "%" PRId64, b->id);
	const char *p[2] = {ids, l->fence_s};
	PGresult *again;
	if (fenced_update(c,
	                  "UPDATE bookings SET driver_hold_token = NULL WHERE id = $1 AND "
	                  "lock_fence <= $2 RETURNING " BOOKING_COLS,
	                  2, p, &again, &ignore, NULL) == 1) {
		PQclear(*res);
		*res = again;
	}
	json_decref(ignore.body);
}

/* ---- Handlers. ------------------------------------------------------------------------------ */

void rides_booking_create(struct rides_conn *c, json_t *in, struct app_reply *r)
{
	int64_t rider;
	double plat, plng, dlat, dlng, fare = 0;
	bool has_fare;
	if (!app_need_body(in, r) || !app_field_id(in, "rider_id", &rider, r) ||
	    !app_field_num(in, "pickup_lat", -90, 90, true, &plat, NULL, r) ||
	    !app_field_num(in, "pickup_lng", -180, 180, true, &plng, NULL, r) ||
	    !app_field_num(in, "dropoff_lat", -90, 90, true, &dlat, NULL, r) ||
	    !app_field_num(in, "dropoff_lng", -180, 180, true, &dlng, NULL, r) ||
	    !app_field_num(in, "estimated_fare", 0, 1e9, false, &fare, &has_fare, r))
		return;
	char s[6][32];
	snprintf(s[0], 32, "%" PRId64, rider);
	snprintf(s[1], 32, "%.7f", plat);
	snprintf(s[2], 32, "%.7f", plng);
	snprintf(s[3], 32, "%.7f", dlat);
	snprintf(s[4], 32, "%.7f", dlng);
	snprintf(s[5], 32, "%.2f", fare);
	const char *p[6] = {s[0], s[1], s[2], s[3], s[4], has_fare ? s[5] : NULL};
	char state[6];
	PGresult *res =
	    rides_pg(c, r,
	             "INSERT INTO bookings (rider_id, pickup_lat, pickup_lng, dropoff_lat, "
	             "dropoff_lng, estimated_fare) VALUES ($1, $2, $3, $4, $5, $6) "
	             "RETURNING " BOOKING_COLS,
	             6, p, state);
	if (!res) {
		if (strcmp(state, "23503") == 0) /* foreign key: no such rider */
			app_error(r, 404, "rider_not_found", "no rider %" PRId64, rider);
		return;
	}
	app_ok(r, 201, booking_json(res, 0));
	PQclear(res);
}

void rides_booking_get(struct rides_conn *c, int64_t id, struct app_reply *r)
{
	PGresult *res;
	if (!booking_select(c, id, &res, r))
		return;
	app_ok(r, 200, booking_json(res, 0));
	PQclear(res);
}

static bool bad_transition(struct app_reply *r, const struct booking *b, const char *what)
{
	return app_error(r, 409, "invalid_transition", "booking %" PRId64 " is %s: cannot %s",
	                   b->id, b->status, what);
}

/* The nearest drivers to the pickup within --radius-km, nearest first: how many went to ids. */
static int nearest_drivers(struct rides_conn *c, double lat, double lng, int64_t *ids,
                           struct app_reply *r)
{
	if (!app_redis_ok(&c->redis))
		return app_error(r, 503, "geo_unavailable", "cannot reach redis"), -1;
	char slat[32], slng[32], srad[32];
	snprintf(slat, sizeof(slat), "%.7f", lat);
	snprintf(slng, sizeof(slng), "%.7f", lng);
	snprintf(srad, sizeof(srad), "%g", rides_cfg.radius_km);
	redisReply *rep =
	    redisCommand(c->redis.ctx, "GEOSEARCH %s FROMLONLAT %s %s BYRADIUS %s km ASC COUNT %d",
	                 RIDES_GEO_KEY, slng, slat, srad, RIDES_CANDIDATES_MAX);
	if (!rep)
		return app_error(r, 503, "geo_unavailable", "redis: %s", c->redis.ctx->errstr), -1;
	int n = 0;
	if (rep->type == REDIS_REPLY_ARRAY) {
		for (size_t i = 0; i < rep->elements && n < RIDES_CANDIDATES_MAX; i++) {
			redisReply *e = rep->element[i];
			if (e->type != REDIS_REPLY_STRING)
				continue;
			char *end;
			long long v = strtoll(e->str, &end, 10);
			if (*end == '\0' && v > 0)
				ids[n++] = v;
		}
	} else if (rep->type == REDIS_REPLY_ERROR) {
		app_error(r, 503, "geo_unavailable", "redis GEOSEARCH: %s", rep->str);
		n = -1;
	}
	freeReplyObject(rep);
	return n;
}

/*
 * Holds the nearest free driver for booking b: any-of acquires, NOWAIT, over the candidates
 * nearest first (at most HF_CLAIMS_MAX per request: the engine takes the first free one in
 * our order, atomically), then records the hold in the row (fenced) and confirms it.
 */
static void assign(struct rides_conn *c, const struct booking *b, double lat, double lng,
                   const struct booking_lock *l, struct app_reply *r)
{
	int64_t ids[RIDES_CANDIDATES_MAX];
	int n = nearest_drivers(c, lat, lng, ids, r);
	if (n < 0)
		return;
	char owner[40];
	snprintf(owner, sizeof(owner), "booking:%" PRId64, b->id);
	int start = 0;
	while (start < n) {
		int batch = n - start < HF_CLAIMS_MAX ? n - start : HF_CLAIMS_MAX;
		char names[HF_CLAIMS_MAX][32];
		hf_claim claims[HF_CLAIMS_MAX];
		for (int i = 0; i < batch; i++) {
			snprintf(names[i], sizeof(names[i]), "driver:%" PRId64, ids[start + i]);
			claims[i] = (hf_claim){.name = names[i], .units = 1, .capacity = 1};
		}
		hf_acquire_req req = {.owner = owner,
		                      .claims = claims,
		                      .n_claims = (size_t)batch,
		                      .ttl_ms = rides_cfg.hold_ttl_ms,
		                      .wait_ms = 0,
		                      .mode = HF_MODE_UNITS,
		                      .any = true};
		hf_hold *h = NULL;
		hf_error e;
		int rc = hf_acquire(rides_store, &req, &h, &e);
		if (rc == HF_EUNAVAILABLE) {
			start += batch; /* every driver of this batch is held */
			continue;
		}
		if (rc != HF_OK) {
			app_error(r, 503, "hold_unavailable", "cannot hold a driver: %s",
			            e.message);
			return;
		}
		rides_stat_add(RIDES_HOLD_TAKEN);
		const char *got = h->parts[0].resource;
		int64_t driver = strtoll(got + strlen("driver:"), NULL, 10);
		char sid[24], sdriver[24];
		snprintf(sid, sizeof(sid), "%" PRId64, b->id);
		snprintf(sdriver, sizeof(sdriver), "%" PRId64, driver);
		const char *p[6] = {sid, l->fence_s, sdriver, h->id, h->token, "requested"};
		PGresult *res;
		char state[6];
		int w =
		    fenced_update(c,
		                  "UPDATE bookings SET status = 'assigned', driver_id = $3, "
		                  "driver_hold_id = $4, driver_hold_token = $5, lock_fence = $2, "
		                  "assigned_at = now(), updated_at = now() WHERE id = $1 AND "
		                  "lock_fence <= $2 AND status = $6 RETURNING " BOOKING_COLS,
		                  6, p, &res, r, state);
		if (w == -1 && strcmp(state, "23505") == 0) {
			/* The unique index: PostgreSQL has this driver on another active booking
			 * although holdfast granted the hold (that booking's hold was lost). Skip
			 * it. */
			rides_stat_add(RIDES_HOLD_INDEX);
			fprintf(stderr,
			        "rides: booking %s: driver %s is active elsewhere (unique index)\n",
			        sid, sdriver);
			json_decref(r->body);
			r->body = NULL;
			driver_release(h->id, h->token);
			hf_hold_free(h);
			for (int i = start; i < n; i++)
				if (ids[i] == driver) {
					memmove(&ids[i], &ids[i + 1],
					        sizeof(ids[0]) * (size_t)(n - i - 1));
					n--;
					break;
				}
			continue;
		}
		if (w != 1) {
			driver_release(h->id, h->token);
			hf_hold_free(h);
			return;
		}
		/* Recorded: now confirm, so the hold lasts until the booking ends (see README). */
		rc = hf_confirm(rides_store, h->id, h->token, NULL, &e);
		if (rc != HF_OK) {
			PQclear(res);
			const char *q[3] = {sid, l->fence_s, "assigned"};
			struct app_reply ignore = {0};
			if (fenced_update(
			        c,
			        "UPDATE bookings SET status = 'requested', driver_id = NULL, "
			        "driver_hold_id = NULL, driver_hold_token = NULL, assigned_at = "
			        "NULL "
			        "WHERE id = $1 AND lock_fence <= $2 AND status = $3 "
			        "RETURNING " BOOKING_COLS,
			        3, q, &res, &ignore, NULL) == 1)
				PQclear(res);
			json_decref(ignore.body);
			driver_release(h->id, h->token);
			hf_hold_free(h);
			app_error(r, 503, "hold_unavailable",
			            "cannot confirm the hold on driver %s: %s", sdriver, e.message);
			return;
		}
		rides_stat_add(RIDES_HOLD_CONFIRMED);
		hf_hold_free(h);
		app_ok(r, 200, booking_json(res, 0));
		PQclear(res);
		return;
	}
	rides_stat_add(RIDES_HOLD_NONE);
	app_error(r, 409, "no_driver_available",
	            "no free driver within %g km of the pickup of booking %" PRId64,
	            rides_cfg.radius_km, b->id);
}

/* The common frame of a transition: lock, read, act, unlock. Each transition's own part
 * checks the booking against the request and writes its change. */
struct transition_args {
	int64_t driver_id;  /* accept, complete */
	double actual_fare; /* complete */
	int64_t user_id;    /* cancel */
	const char *user_type;
	const char *reason;
};

struct transition {
	struct rides_conn *c;
	const struct transition_args *a;
	struct booking b;         /* as read under the booking's lock */
	struct booking_lock l;
	PGresult *res;            /* the booking's row; replaced by the written row */
	char sid[24];
	struct app_reply *r;
};

/* Writes the transition's UPDATE (fenced, and only from the status read) and answers the row
 * written; frees the driver when the booking ends. */
static void transition_write(struct transition *t, const char *sql, int n, const char *const *p,
                             bool frees_driver)
{
	PQclear(t->res);
	t->res = NULL;
	if (fenced_update(t->c, sql, n, p, &t->res, t->r, NULL) != 1)
		return;
	if (frees_driver)
		booking_free_driver(t->c, &t->b, &t->l, &t->res);
	app_ok(t->r, 200, booking_json(t->res, 0));
}

/* false, with 403 wrong_driver answered, unless the request's driver is the booking's. */
static bool transition_driver_is(struct transition *t, const char *role)
{
	if (t->a->driver_id == t->b.driver_id)
		return true;
	app_error(t->r, 403, "wrong_driver",
	          "booking %s is %s driver %" PRId64 ", not %" PRId64, t->sid, role,
	          t->b.driver_id, t->a->driver_id);
	return false;
}

static void do_assign(struct transition *t)
{
	if (strcmp(t->b.status, "requested") != 0) {
		bad_transition(t->r, &t->b, "assign a driver");
		return;
	}
	double lat = strtod(PQgetvalue(t->res, 0, B_PLAT), NULL);
	double lng = strtod(PQgetvalue(t->res, 0, B_PLNG), NULL);
	assign(t->c, &t->b, lat, lng, &t->l, t->r);
}

static void do_accept(struct transition *t)
{
	if (strcmp(t->b.status, "assigned") != 0) {
		bad_transition(t->r, &t->b, "accept");
		return;
	}
	if (!transition_driver_is(t, "assigned to"))
		return;
	const char *p[3] = {t->sid, t->l.fence_s, "assigned"};
	transition_write(t,
	                 "UPDATE bookings SET status = 'accepted', accepted_at = now(), "
	                 "updated_at = now(), lock_fence = $2 WHERE id = $1 AND lock_fence <= $2 "
	                 "AND status = $3 RETURNING " BOOKING_COLS,
	                 3, p, false);
}

static void do_cancel(struct transition *t)
{
	const struct transition_args *a = t->a;
	if (strcmp(t->b.status, "completed") == 0 || strcmp(t->b.status, "cancelled") == 0) {
		bad_transition(t->r, &t->b, "cancel");
		return;
	}
	bool rider = strcmp(a->user_type, "rider") == 0;
	if (rider ? a->user_id != t->b.rider_id : a->user_id != t->b.driver_id) {
		app_error(t->r, 403, "not_participant", "%s %" PRId64 " is not the %s of booking %s",
		          a->user_type, a->user_id, a->user_type, t->sid);
		return;
	}
	char user[24];
	snprintf(user, sizeof(user), "%" PRId64, a->user_id);
	const char *p[6] = {t->sid, t->l.fence_s, a->reason, user, a->user_type, t->b.status};
	transition_write(t,
	                 "UPDATE bookings SET status = 'cancelled', cancel_reason = $3, "
	                 "cancelled_by_id = $4, cancelled_by_type = $5, cancelled_at = now(), "
	                 "updated_at = now(), lock_fence = $2 WHERE id = $1 AND lock_fence <= $2 "
	                 "AND status = $6 RETURNING " BOOKING_COLS,
	                 6, p, true);
}

static void do_complete(struct transition *t)
{
	if (strcmp(t->b.status, "accepted") != 0) {
		bad_transition(t->r, &t->b, "complete");
		return;
	}
	if (!transition_driver_is(t, "driven by"))
		return;
	char fare[32];
	snprintf(fare, sizeof(fare), "%.2f", t->a->actual_fare);
	const char *p[4] = {t->sid, t->l.fence_s, fare, "accepted"};
	transition_write(t,
	                 "UPDATE bookings SET status = 'completed', actual_fare = $3, "
	                 "completed_at = now(), updated_at = now(), lock_fence = $2 "
	                 "WHERE id = $1 AND lock_fence <= $2 AND status = $4 "
	                 "RETURNING " BOOKING_COLS,
	                 4, p, true);
}

static void transition(struct rides_conn *c, int64_t id, void (*act)(struct transition *),
                       const struct transition_args *a, struct app_reply *r)
{
	struct transition t = {.c = c, .a = a, .r = r};
	snprintf(t.sid, sizeof(t.sid), "%" PRId64, id);
	if (!lock_booking(c, id, &t.l, r))
		return;
	if (booking_select(c, id, &t.res, r)) {
		booking_read(t.res, 0, &t.b);
		act(&t);
	}
	PQclear(t.res);
	unlock_booking(&t.l);
}

void rides_booking_assign(struct rides_conn *c, int64_t id, struct app_reply *r)
{
	transition(c, id, do_assign, NULL, r);
}

void rides_booking_accept(struct rides_conn *c, int64_t id, json_t *in, struct app_reply *r)
{
	struct transition_args a = {0};
	if (!app_need_body(in, r) || !app_field_id(in, "driver_id", &a.driver_id, r))
		return;
	transition(c, id, do_accept, &a, r);
}

void rides_booking_cancel(struct rides_conn *c, int64_t id, json_t *in, struct app_reply *r)
{
	struct transition_args a = {0};
	if (!app_need_body(in, r) || !app_field_str(in, "reason", 500, false, &a.reason, r) ||
	    !app_field_id(in, "user_id", &a.user_id, r) ||
	    !app_field_str(in, "user_type", 16, true, &a.user_type, r))
		return;
	if (strcmp(a.user_type, "rider") != 0 && strcmp(a.user_type, "driver") != 0) {
		app_error(r, 422, "invalid_field", "'user_type' must be \"rider\" or \"driver\"");
		return;
	}
	transition(c, id, do_cancel, &a, r);
}

void rides_booking_complete(struct rides_conn *c, int64_t id, json_t *in, struct app_reply *r)
{
	struct transition_args a = {0};
	if (!app_need_body(in, r) || !app_field_id(in, "driver_id", &a.driver_id, r) ||
	    !app_field_num(in, "actual_fare", 0, 1e9, true, &a.actual_fare, NULL, r))
		return;
	transition(c, id, do_complete, &a, r);
}

void rides_user_bookings(struct rides_conn *c, int64_t user_id, const char *user_type,
                         struct app_reply *r)
{
	bool rider = !user_type || strcmp(user_type, "rider") == 0;
	if (!rider && strcmp(user_type, "driver") != 0) {
		app_error(r, 400, "invalid_user_type",
		            "user_type must be rider or driver, not '%s'", user_type);
		return;
	}
	char sid[24];
	snprintf(sid, sizeof(sid), "%" PRId64, user_id);
	const char *p[1] = {sid};
	PGresult *res = rides_pg(c, r,
	                         rider ? "SELECT 1 FROM riders WHERE id = $1"
	                               : "SELECT 1 FROM drivers WHERE id = $1",
	                         1, p, NULL);
	if (!res)
		return;
	bool exists = PQntuples(res) == 1;
	PQclear(res);
	if (!exists) {
		app_error(r, 404, rider ? "rider_not_found" : "driver_not_found",
		            "no %s %" PRId64, rider ? "rider" : "driver", user_id);
		return;
	}
	res = rides_pg(c, r,
	               rider ? "SELECT " BOOKING_COLS " FROM bookings WHERE rider_id = $1 "
	                       "ORDER BY id DESC LIMIT 100"
	                     : "SELECT " BOOKING_COLS " FROM bookings WHERE driver_id = $1 "
	                       "ORDER BY id DESC LIMIT 100",
	               1, p, NULL);
	if (!res)
		return;
	json_t *list = json_array();
	for (int i = 0; i < PQntuples(res); i++)
		json_array_append_new(list, booking_json(res, i));
	PQclear(res);
	app_ok(r, 200,
	         json_pack("{s:I,s:s,s:I,s:o}", "user_id", (json_int_t)user_id, "user_type",
	                   rider ? "rider" : "driver", "count", (json_int_t)json_array_size(list),
	                   "bookings", list));
}

/* ---- Riders and drivers. -------------------------------------------------------------------- */

void rides_rider_create(struct rides_conn *c, json_t *in, struct app_reply *r)
{
	const char *name;
	if (!app_need_body(in, r) || !app_field_str(in, "name", 200, true, &name, r))
		return;
	const char *p[1] = {name};
	PGresult *res = rides_pg(
	    c, r, "INSERT INTO riders (name) VALUES ($1) RETURNING id, name, " TS("created_at"), 1,
	    p, NULL);
	if (!res)
		return;
	app_ok(r, 201,
	         json_pack("{s:o,s:o,s:o}", "id", col_int(res, 0, 0), "name", col_str(res, 0, 1),
	                   "created_at", col_str(res, 0, 2)));
	PQclear(res);
}

/* Puts a driver's position into the GEO set; false with *r on failure. */
static bool geo_put(struct rides_conn *c, const char *id, const char *lat, const char *lng,
                    struct app_reply *r)
{
	if (!app_redis_ok(&c->redis))
		return app_error(r, 503, "geo_unavailable", "cannot reach redis");
	redisReply *rep = redisCommand(c->redis.ctx, "GEOADD %s %s %s %s", RIDES_GEO_KEY, lng, lat, id);
	if (!rep)
		return app_error(r, 503, "geo_unavailable", "redis: %s", c->redis.ctx->errstr);
	bool ok = rep->type != REDIS_REPLY_ERROR;
	if (!ok)
		app_error(r, 503, "geo_unavailable", "redis GEOADD: %s", rep->str);
	freeReplyObject(rep);
	return ok;
}

static json_t *driver_json(PGresult *res)
{
	return json_pack("{s:o,s:o,s:o,s:o,s:o}", "id", col_int(res, 0, 0), "name",
	                 col_str(res, 0, 1), "lat", col_num(res, 0, 2), "lng", col_num(res, 0, 3),
	                 "located_at", col_str(res, 0, 4));
}

void rides_driver_create(struct rides_conn *c, json_t *in, struct app_reply *r)
{
	const char *name;
	double lat, lng;
	if (!app_need_body(in, r) || !app_field_str(in, "name", 200, true, &name, r) ||
	    !app_field_num(in, "lat", -85.05112878, 85.05112878, true, &lat, NULL, r) ||
	    !app_field_num(in, "lng", -180, 180, true, &lng, NULL, r))
		return;
	char slat[32], slng[32];
	snprintf(slat, sizeof(slat), "%.7f", lat);
	snprintf(slng, sizeof(slng), "%.7f", lng);
	const char *p[3] = {name, slat, slng};
	PGresult *res = rides_pg(c, r,
	                         "INSERT INTO drivers (name, lat, lng) VALUES ($1, $2, $3) "
	                         "RETURNING id, name, lat, lng, " TS("located_at"),
	                         3, p, NULL);
	if (!res)
		return;
	if (geo_put(c, PQgetvalue(res, 0, 0), slat, slng, r))
		app_ok(r, 201, driver_json(res));
	PQclear(res);
}

void rides_driver_move(struct rides_conn *c, int64_t id, json_t *in, struct app_reply *r)
{
	double lat, lng;
	if (!app_need_body(in, r) ||
	    !app_field_num(in, "lat", -85.05112878, 85.05112878, true, &lat, NULL, r) ||
	    !app_field_num(in, "lng", -180, 180, true, &lng, NULL, r))
		return;
	char sid[24], slat[32], slng[32];
	snprintf(sid, sizeof(sid), "%" PRId64, id);
	snprintf(slat, sizeof(slat), "%.7f", lat);
	snprintf(slng, sizeof(slng), "%.7f", lng);
	const char *p[3] = {sid, slat, slng};
	PGresult *res = rides_pg(c, r,
	                         "UPDATE drivers SET lat = $2, lng = $3, located_at = now() "
	                         "WHERE id = $1 RETURNING id, name, lat, lng, " TS("located_at"),
	                         3, p, NULL);
	if (!res)
		return;
	if (PQntuples(res) == 0)
		app_error(r, 404, "driver_not_found", "no driver %" PRId64, id);
	else if (geo_put(c, sid, slat, slng, r))
		app_ok(r, 200, driver_json(res));
	PQclear(res);
}
