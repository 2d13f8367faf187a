/*
 * db.c — the app's stores other than holdfast: PostgreSQL (riders, drivers, bookings; the
 * schema, created idempotently at start; the demo data) and Redis (the GEO set of driver
 * positions), one connection of each per worker; and the hold cleanup on start-up.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rides.h"

/* The seed's pickup point (40.7128, -74.0060): lower Manhattan. */
#define DEMO_LAT 40.7128
#define DEMO_LNG -74.0060
#define DEMO_RIDERS 100
#define DEMO_DRIVERS 50

/* clang-format off */
const char rides_schema_sql[] =
	"CREATE TABLE IF NOT EXISTS riders ("
	"  id bigserial PRIMARY KEY,"
	"  name text NOT NULL,"
	"  created_at timestamptz NOT NULL DEFAULT now());"
	"CREATE TABLE IF NOT EXISTS drivers ("
	"  id bigserial PRIMARY KEY,"
	"  name text NOT NULL,"
	"  lat double precision NOT NULL,"
	"  lng double precision NOT NULL,"
	"  created_at timestamptz NOT NULL DEFAULT now(),"
	"  located_at timestamptz NOT NULL DEFAULT now());"
	"CREATE TABLE IF NOT EXISTS bookings ("
	"  id bigserial PRIMARY KEY,"
	"  rider_id bigint NOT NULL REFERENCES riders(id),"
	"  driver_id bigint REFERENCES drivers(id),"
	"  status text NOT NULL DEFAULT 'requested' CHECK (status IN"
	"    ('requested','assigned','accepted','completed','cancelled')),"
	"  pickup_lat double precision NOT NULL,"
	"  pickup_lng double precision NOT NULL,"
	"  dropoff_lat double precision NOT NULL,"
	"  dropoff_lng double precision NOT NULL,"
	"  estimated_fare numeric(12,2),"
	"  actual_fare numeric(12,2),"
	"  cancel_reason text,"
	"  cancelled_by_id bigint,"
	"  cancelled_by_type text,"
	/* the driver's holdfast hold: id and token, so that any app process can release it;
	 * the token is cleared once the hold is released */
	"  driver_hold_id text,"
	"  driver_hold_token text,"
	/* the highest booking-lock fence that has written this row: a write carrying a lower
	 * fence comes from a holder whose lock has lapsed, and is refused */
	"  lock_fence bigint NOT NULL DEFAULT 0,"
	"  created_at timestamptz NOT NULL DEFAULT now(),"
	"  updated_at timestamptz NOT NULL DEFAULT now(),"
	"  assigned_at timestamptz,"
	"  accepted_at timestamptz,"
	"  completed_at timestamptz,"
	"  cancelled_at timestamptz);"
	/* the second line behind the driver hold: one active booking per driver */
	"CREATE UNIQUE INDEX IF NOT EXISTS bookings_one_active_per_driver ON bookings (driver_id)"
	"  WHERE status IN ('assigned','accepted');"
	"CREATE INDEX IF NOT EXISTS bookings_by_rider ON bookings (rider_id, id);"
	"CREATE INDEX IF NOT EXISTS bookings_by_driver ON bookings (driver_id, id);";
/* clang-format on */

bool rides_db_demo(PGconn *pg, char *err, size_t errlen)
{
	char sql[16384];
	size_t off = 0;
	off += (size_t)snprintf(sql + off, sizeof(sql) - off,
	                        "BEGIN; SELECT pg_advisory_xact_lock(727173);"
	                        "INSERT INTO riders (id, name) SELECT g, 'Rider ' || g FROM "
	                        "generate_series(1, %d) g ON CONFLICT (id) DO NOTHING;"
	                        "INSERT INTO drivers (id, name, lat, lng) VALUES ",
	                        DEMO_RIDERS);
	/* Drivers on a sunflower spiral 0.2-5 km around the pickup point: deterministic, spread
	 * out, each at a different distance. */
	for (int i = 1; i <= DEMO_DRIVERS; i++) {
		double km = 0.2 + 4.8 * sqrt((double)i / DEMO_DRIVERS);
		double a = (double)i * 2.39996323; /* the golden angle */
		double lat = DEMO_LAT + km / 111.32 * cos(a);
		double lng = DEMO_LNG + km / (111.32 * cos(DEMO_LAT * M_PI / 180)) * sin(a);
		off += (size_t)snprintf(sql + off, sizeof(sql) - off,
		                        "%s(%d, 'Driver %d', %.6f, %.6f)", i > 1 ? "," : "", i, i,
		                        lat, lng);
	}
	snprintf(sql + off, sizeof(sql) - off,
	         " ON CONFLICT (id) DO NOTHING;"
	         "SELECT setval(pg_get_serial_sequence('riders', 'id'),"
	         "  GREATEST((SELECT max(id) FROM riders), 1));"
	         "SELECT setval(pg_get_serial_sequence('drivers', 'id'),"
	         "  GREATEST((SELECT max(id) FROM drivers), 1));"
	         "COMMIT;");
	return app_pg_script(pg, sql, err, errlen);
}

/* ---- Connections. ------------------------------------------------------------------- */

bool rides_conn_open(struct rides_conn *c, int id, char *err, size_t errlen)
{
	char proc[80];
	app_process_owner("rides", proc, sizeof(proc));
	c->id = id;
	snprintf(c->owner, sizeof(c->owner), "%s:w%d", proc, id);
	c->pg = (struct app_pg){.url = rides_cfg.db_url, .name = "holdfast-rides"};
	c->redis = (struct app_redis){.host = rides_cfg.redis_host, .port = rides_cfg.redis_port};
	return app_pg_open(&c->pg, err, errlen) && app_redis_open(&c->redis, err, errlen);
}

void rides_conn_close(struct rides_conn *c)
{
	app_pg_close(&c->pg);
	app_redis_close(&c->redis);
}

PGresult *rides_pg(struct rides_conn *c, struct app_reply *r, const char *sql, int n,
                   const char *const *params, char state[6])
{
	return app_pg_exec(&c->pg, r, sql, n, params, state);
}

/* ---- Redis GEO. ---------------------------------------------------------------------- */

bool rides_geo_sync(struct rides_conn *c, char *err, size_t errlen)
{
	PGresult *res = PQexec(c->pg.conn, "SELECT id, lng, lat FROM drivers ORDER BY id");
	if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		snprintf(err, errlen, "postgres: %s", PQresultErrorMessage(res));
		PQclear(res);
		return false;
	}
	int n = PQntuples(res);
	for (int i = 0; i < n; i++)
		redisAppendCommand(c->redis.ctx, "GEOADD %s %s %s %s", RIDES_GEO_KEY,
		                   PQgetvalue(res, i, 1), PQgetvalue(res, i, 2),
		                   PQgetvalue(res, i, 0));
	bool ok = true;
	for (int i = 0; i < n; i++) {
		redisReply *rep = NULL;
		if (redisGetReply(c->redis.ctx, (void **)&rep) != REDIS_OK) {
			snprintf(err, errlen, "redis: %s", c->redis.ctx->errstr);
			ok = false;
			break;
		}
		if (rep->type == REDIS_REPLY_ERROR) {
			snprintf(err, errlen, "redis GEOADD: %s", rep->str);
			ok = false;
		}
		freeReplyObject(rep);
	}
	PQclear(res);
	return ok;
}

/* ---- Start-up cleanup. ------------------------------------------------------------------ */

void rides_cleanup_holds(struct rides_conn *c)
{
	/* Finished bookings whose driver hold was not released: release it now (we kept the
	 * token for this), then forget the token. */
	PGresult *res = PQexec(c->pg.conn, "SELECT id, driver_hold_id, driver_hold_token FROM bookings "
	                              "WHERE status IN ('completed','cancelled') "
	                              "AND driver_hold_token IS NOT NULL");
	if (PQresultStatus(res) == PGRES_TUPLES_OK) {
		for (int i = 0; i < PQntuples(res); i++) {
			hf_error e;
			int rc = hf_release(rides_store, PQgetvalue(res, i, 1),
			                    PQgetvalue(res, i, 2), NULL, &e);
			if (rc == HF_OK || rc == HF_EENDED || rc == HF_ENOHOLD) {
				const char *p[1] = {PQgetvalue(res, i, 0)};
				PQclear(PQexecParams(
				    c->pg.conn,
				    "UPDATE bookings SET driver_hold_token = NULL WHERE id = $1", 1,
				    NULL, p, NULL, NULL, 0));
				fprintf(stderr,
				        "rides: cleanup: released the driver hold of finished "
				        "booking %s\n",
				        p[0]);
			} else {
				fprintf(stderr, "rides: cleanup: booking %s: %s\n",
				        PQgetvalue(res, i, 0), e.message);
			}
		}
	}
	PQclear(res);
	/* Active bookings whose hold is still tentative: a process died between recording the
	 * hold and confirming it. Confirm it now, before its lease ends. */
	res = PQexec(c->pg.conn,
	             "SELECT id, driver_hold_id, driver_hold_token FROM bookings "
	             "WHERE status IN ('assigned','accepted') AND driver_hold_token IS NOT NULL");
	if (PQresultStatus(res) == PGRES_TUPLES_OK) {
		for (int i = 0; i < PQntuples(res); i++) {
			hf_error e;
			int rc = hf_confirm(rides_store, PQgetvalue(res, i, 1),
			                    PQgetvalue(res, i, 2), NULL, &e);
			if (rc != HF_OK)
				fprintf(stderr,
				        "rides: cleanup: active booking %s has lost its driver "
				        "hold (%s); the "
				        "unique index still keeps its driver off other bookings\n",
				        PQgetvalue(res, i, 0), e.message);
		}
	}
	PQclear(res);
}
