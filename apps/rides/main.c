/*
 * main.c — holdfast-rides: the ride-hailing API of the seed's "Week 3" (bookings in
 * PostgreSQL, driver positions in Redis GEO, booking locks and driver holds on holdfast).
 * Reads the command line, opens the stores, prepares the database, and serves.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <stddef.h>

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
	enum {
		O_LISTEN = 256,
		O_HOLDFAST,
		O_DB,
		O_REDIS,
		O_DEMO,
		O_RADIUS,
		O_WORKERS,
		O_LTTL,
		O_LWAIT,
		O_HTTL,
		O_HELP
	};
	static const struct option opts[] = {
	    {"listen", required_argument, NULL, O_LISTEN},
	    {"holdfast", required_argument, NULL, O_HOLDFAST},
	    {"db", required_argument, NULL, O_DB},
	    {"redis", required_argument, NULL, O_REDIS},
	    {"demo-data", no_argument, NULL, O_DEMO},
	    {"radius-km", required_argument, NULL, O_RADIUS},
	    {"workers", required_argument, NULL, O_WORKERS},
	    {"lock-ttl-ms", required_argument, NULL, O_LTTL},
	    {"lock-wait-ms", required_argument, NULL, O_LWAIT},
	    {"hold-ttl-ms", required_argument, NULL, O_HTTL},
	    {"help", no_argument, NULL, O_HELP},
	    {NULL, 0, NULL, 0},
	};
	int c;
	double d;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case O_LISTEN:
			if (!app_parse_hostport(optarg, &rides_cfg.listen_host,
			                    &rides_cfg.listen_port)) {
				fprintf(stderr,
				        "holdfast-rides: --listen wants HOST:PORT, not '%s'\n",
				        optarg);
				return 2;
			}
			break;
		case O_HOLDFAST:
			rides_cfg.holdfast_url = optarg;
			break;
		case O_DB:
			rides_cfg.db_url = optarg;
			break;
		case O_REDIS:
			if (!app_parse_hostport(optarg, &rides_cfg.redis_host, &rides_cfg.redis_port) ||
			    rides_cfg.redis_port == 0) {
				fprintf(stderr,
				        "holdfast-rides: --redis wants HOST:PORT, not '%s'\n",
				        optarg);
				return 2;
			}
			break;
		case O_DEMO:
			rides_cfg.demo_data = true;
			break;
		case O_RADIUS:
			if (!app_parse_num("holdfast-rides", "--radius-km", optarg, 0.001, 20000, &rides_cfg.radius_km))
				return 2;
			break;
		case O_WORKERS:
			if (!app_parse_num("holdfast-rides", "--workers", optarg, 1, 256, &d))
				return 2;
			rides_cfg.workers = (int)d;
			break;
		case O_LTTL:
			if (!app_parse_num("holdfast-rides", "--lock-ttl-ms", optarg, 1, 3600000, &d))
				return 2;
			rides_cfg.lock_ttl_ms = (int64_t)d;
			break;
		case O_LWAIT:
			if (!app_parse_num("holdfast-rides", "--lock-wait-ms", optarg, 0, 3600000, &d))
				return 2;
			rides_cfg.lock_wait_ms = (int64_t)d;
			break;
		case O_HTTL:
			if (!app_parse_num("holdfast-rides", "--hold-ttl-ms", optarg, 1000, 3600000, &d))
				return 2;
			rides_cfg.hold_ttl_ms = (int64_t)d;
			break;
		case O_HELP:
			fputs(usage, stdout);
			return 0;
		default:
			fputs(usage, stderr);
			return 2;
		}
	}
	if (optind < argc || !rides_cfg.holdfast_url || !rides_cfg.db_url) {
		fputs(optind < argc ? "holdfast-rides: unexpected arguments\n"
		                    : "holdfast-rides: --holdfast and --db are required\n",
		      stderr);
		fputs(usage, stderr);
		return 2;
	}

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
