/*
 * main.c — holdfast-rides: the ride-hailing API of the seed's "Week 3" (bookings in
 * PostgreSQL, driver positions in Redis GEO, booking locks and driver holds on holdfast).
 * Reads the command line, opens the stores, prepares the database, and serves.
 */
#include <stddef.h>
#include <stdio.h>

#include "rides.h"

struct rides_config rides_cfg = {
    .listen_host = "127.0.0.1",
    .listen_port = 3000,
    .redis_host = "127.0.0.1",
    .redis_port = 6379,
    .radius_km = 10,
    .workers = 16,
    .lock_ttl_ms = 5000,
    .lock_wait_ms = 3000,
    .hold_ttl_ms = 30000,
};
hf_store *rides_store;

static const char usage[] =
    "usage: holdfast-rides --holdfast ENGINE_URL --db POSTGRES_URL [options]\n"
    "\n"
    "The ride-hailing booking API (seed 003, \"Week 3\") on holdfast locks and holds.\n"
    "\n"
    "  --listen HOST:PORT   where to serve HTTP (default 127.0.0.1:3000; port 0: any free)\n"
    "  --holdfast URL       holdfast engine: file:PATH, http://holdfastd, postgres://, redis://\n"
    "  --db URL             PostgreSQL for riders, drivers and bookings (libpq URI or conninfo)\n"
    "  --redis HOST:PORT    Redis for driver positions (GEO; default 127.0.0.1:6379)\n"
    "  --demo-data          load riders 1-100 and drivers 1-50 around the seed's pickup point\n"
    "  --radius-km N        how far to look for a driver (default 10)\n"
    "  --workers N          worker threads, each with its own connections (default 16)\n"
    "  --lock-ttl-ms N      lease of a booking lock (default 5000)\n"
    "  --lock-wait-ms N     longest wait for a busy booking lock (default 3000)\n"
    "  --hold-ttl-ms N      lease of a driver hold before it is confirmed (default 30000)\n"
    "  --help               this text\n";

/* Worker i's connections (app_run opens them in order, on the main thread). */
static bool conn_open(void *ctx, char *err, size_t errlen)
{
	static int next_id;
	return rides_conn_open(ctx, next_id++, err, errlen);
}

static void conn_close(void *ctx)
{
	rides_conn_close(ctx);
}

/* The demo data, the driver positions in Redis, the hold cleanup. */
static bool start(void *ctx0, char *err, size_t errlen)
{
	struct rides_conn *c = ctx0;
	char why[400];
	const char *step = "start";
	bool ok = true;
	if (rides_cfg.demo_data) {
		step = "demo data";
		ok = rides_db_demo(c->pg.conn, why, sizeof(why));
	}
	if (ok) {
		step = "driver positions";
		ok = rides_geo_sync(c, why, sizeof(why));
	}
	if (!ok) {
		snprintf(err, errlen, "%s: %s", step, why);
		return false;
	}
	rides_cleanup_holds(c);
	return true;
}

int main(int argc, char **argv)
{
	int64_t workers = rides_cfg.workers;
	const struct app_opt opts[] = {
	    {.name = "listen", .kind = APP_OPT_HOSTPORT, .text = &rides_cfg.listen_host,
	     .port = &rides_cfg.listen_port},
	    {.name = "holdfast", .kind = APP_OPT_TEXT, .text = &rides_cfg.holdfast_url,
	     .required = true},
	    {.name = "db", .kind = APP_OPT_TEXT, .text = &rides_cfg.db_url, .required = true},
	    {.name = "redis", .kind = APP_OPT_HOSTPORT, .text = &rides_cfg.redis_host,
	     .port = &rides_cfg.redis_port, .lo = 1},
	    {.name = "demo-data", .kind = APP_OPT_FLAG, .flag = &rides_cfg.demo_data},
	    {.name = "radius-km", .kind = APP_OPT_REAL, .real = &rides_cfg.radius_km, .lo = 0.001,
	     .hi = 20000},
	    {.name = "workers", .kind = APP_OPT_INT, .num = &workers, .lo = 1, .hi = 256},
	    {.name = "lock-ttl-ms", .kind = APP_OPT_INT, .num = &rides_cfg.lock_ttl_ms, .lo = 1,
	     .hi = 3600000},
	    {.name = "lock-wait-ms", .kind = APP_OPT_INT, .num = &rides_cfg.lock_wait_ms, .lo = 0,
	     .hi = 3600000},
	    {.name = "hold-ttl-ms", .kind = APP_OPT_INT, .num = &rides_cfg.hold_ttl_ms, .lo = 1000,
	     .hi = 3600000},
	    {.name = NULL},
	};
	int rc = app_args("holdfast-rides", usage, opts, argc, argv);
	if (rc >= 0)
		return rc;
	rides_cfg.workers = (int)workers;
	const struct app_def def = {.prog = "holdfast-rides",
	                            .name = "rides",
	                            .listen_host = rides_cfg.listen_host,
	                            .listen_port = rides_cfg.listen_port,
	                            .holdfast_url = rides_cfg.holdfast_url,
	                            .store = &rides_store,
	                            .workers = rides_cfg.workers,
	                            .ctx_size = sizeof(struct rides_conn),
	                            .schema = rides_schema_sql,
	                            .schema_lock = RIDES_SCHEMA_LOCK,
	                            .pg_offset = offsetof(struct rides_conn, pg),
	                            .open = conn_open,
	                            .close = conn_close,
	                            .start = start,
	                            .routes = rides_routes,
	                            .n_routes = rides_n_routes};
	return app_run(&def);
}
