/*
 * main.c — holdfast-bench: options, the run (setup, clients, the read-back of kept and
 * abandoned holds, the event log), the checks and the report in text or JSON. Exit 0 when
 * every check passed, 1 on a violation, 2 on bad options, 3 when the run itself failed.
 */
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "bench.h"

struct hfb_config hfb_cfg;
struct hfb_run hfb_run;

static const char usage[] =
    "usage: holdfast-bench (--server URL | --engine URL | --peer NAME) [options]\n"
    "\n"
    "Drives holdfast (a holdfastd server over HTTP/1.1 keep-alive, or an engine URL through\n"
    "the library) or a peer pattern on Redis/PostgreSQL with many concurrent clients, reports\n"
    "throughput and latency, and checks the guarantees from what the clients observed.\n"
    "\n"
    "  --server URL[,URL]  http://HOST:PORT of a holdfastd; several (up to 8) over one shared\n"
    "                      store split the clients between them\n"
    "  --engine URL        an hf_open URL driven in-process (file:PATH); one thread\n"
    "  --peer NAME         redis-setnx, redis-lock-rw, redis-decrby, pg-for-update,\n"
    "                      pg-conditional-update, pg-lock-table\n"
    "  --redis HOST:PORT   for the redis peers (default 127.0.0.1:6379)\n"
    "  --pg CONNINFO       for the pg peers (default \"host=127.0.0.1 dbname=postgres\")\n"
    "  --scenario N        1 uncontended lock, 2 hot lock, 3 hot stock, 4 seat race,\n"
    "                      5 saga booking with abandoned leases, 6 flight bookings through\n"
    "                      real sagas (default 1)\n"
    "  --clients N         concurrent clients, each on its own connection (default 16)\n"
    "  --threads N         event-loop threads the clients share (default 2)\n"
    "  --duration S        stop starting new cycles after S seconds (default 10)\n"
    "  --ops N             ... or after N cycles\n"
    "  --seed N            the random choices of every client (default 1)\n"
    "  --json              the report as one JSON object on stdout\n"
    "  --no-check          skip the invariant checks (and the read-back they need)\n"
    "  --cs-us US          scenario 2: critical section length (default 100)\n"
    "  --wait-ms MS        scenario 2: how long a contender waits (default 10000)\n"
    "  --retry-us US       peers: delay between attempts on a taken lock; scenarios 5, 6:\n"
    "                      before booking again after a refusal (default 1000)\n"
    "  --lock-ttl-ms MS    redis peers and pg-lock-table: the lock's lease (default 30000)\n"
    "  --stock N           scenario 3: units of the product (default 100)\n"
    "  --max-units N       scenario 3: a reservation takes 1..N units (default 5)\n"
    "  --confirm-pct P     scenarios 3, 5: share of grants confirmed (default 50)\n"
    "  --abandon-pct P     scenario 5: share of grants left to expire (default 10)\n"
    "  --seats N           scenario 4: seats per round (default clients/2, at most 64);\n"
    "                      scenario 5: seats (default 4 x clients)\n"
    "  --bags N            scenario 5: baggage units (default 4 x clients)\n"
    "  --lease-ms MS       scenario 5: the booking's lease (default 300)\n"
    "  --flights N         scenario 6: flights (default 3); --seats: seats per flight\n"
    "                      (default 200), --bags: baggage units per flight (default 2 x seats)\n"
    "  --decline-pct P     scenario 6: share of cards the payment service declines (default 20)\n"
    "  --plain             scenario 6: the same bookings as acquire/pay/confirm calls, no saga\n"
    "  --saga-wait-ms MS   scenario 5: how long a booking waits in line (default 0: it\n"
    "                      fails at once and retries after --retry-us)\n"
    "  --tag NAME          prefix of the names this run uses (default: unique per run)\n"
    "  --max-print N       violations printed in full (default 20)\n"
    "  --history FILE      write what the clients observed as a holdfast-check history\n"
    "  --fill N            instead of a scenario: put N live holds (one per resource, a\n"
    "                      lease of a day) into the --engine store, --clients threads at\n"
    "                      once, and exit; for measuring a large store (bench/scale.sh)\n";

static const char *const scenario_names[] = {"",          "uncontended lock", "hot lock",
                                             "hot stock", "seat race",        "saga booking",
                                             "flight bookings"};

static const struct {
	const char *name;
	enum hfb_peer peer;
} peers[] = {
    {"redis-setnx", HFB_PEER_REDIS_SETNX},
    {"redis-lock-rw", HFB_PEER_REDIS_LOCK_RW},
    {"redis-decrby", HFB_PEER_REDIS_DECRBY},
    {"pg-for-update", HFB_PEER_PG_FOR_UPDATE},
    {"pg-conditional-update", HFB_PEER_PG_CONDITIONAL},
    {"pg-lock-table", HFB_PEER_PG_LOCK_TABLE},
};

static int bad_option(const char *what, const char *value)
{
	fprintf(stderr, "holdfast-bench: bad %s '%s'\n%s", what, value ? value : "", usage);
	return 2;
}

/* --server: one http://HOST:PORT, or several separated by commas (holdfastd instances over
 * one shared store). */
static int parse_servers(struct hfb_config *c)
{
	c->n_servers = 0;
	for (const char *p = c->server; *p;) {
		if (c->n_servers == HFB_MAX_SERVERS)
			return -1;
		struct hfb_server *s = &c->servers[c->n_servers];
		unsigned port;
		int used = 0;
		if (sscanf(p, "http://%255[^:/,]:%u%n", s->host, &port, &used) != 2 || port == 0 ||
		    port > 65535 || (p[used] != ',' && p[used] != '\0') ||
		    (p[used] == ',' && p[used + 1] == '\0'))
			return -1;
		s->port = (int)port;
		c->n_servers++;
		p += used + (p[used] == ',');
	}
	if (c->n_servers == 0)
		return -1;
	snprintf(c->reader_url, sizeof(c->reader_url), "http://%s:%d", c->servers[0].host,
	         c->servers[0].port);
	return 0;
}

static bool parse_i64(const char *s, int64_t lo, int64_t hi, int64_t *out)
{
	char *end;
	long long v = strtoll(s, &end, 10);
	if (*s == '\0' || *end != '\0' || v < lo || v > hi)
		return false;
	*out = v;
	return true;
}

static int parse_args(int argc, char **argv)
{
	enum {
		O_SERVER = 256,
		O_ENGINE,
		O_PEER,
		O_REDIS,
		O_PG,
		O_SCEN,
		O_CLIENTS,
		O_THREADS,
		O_DUR,
		O_OPS,
		O_SEED,
		O_JSON,
		O_NOCHECK,
		O_CS,
		O_WAIT,
		O_RETRY,
		O_STOCK,
		O_MAXU,
		O_CONF,
		O_ABAN,
		O_SEATS,
		O_BAGS,
		O_LEASE,
		O_SWAIT,
		O_TAG,
		O_MAXP,
		O_LTTL,
		O_HIST,
		O_FLIGHTS,
		O_DECLINE,
		O_PLAIN,
		O_FILL,
		O_HELP
	};
	static const struct option opts[] = {
	    {"server", 1, 0, O_SERVER},
	    {"engine", 1, 0, O_ENGINE},
	    {"peer", 1, 0, O_PEER},
	    {"redis", 1, 0, O_REDIS},
	    {"pg", 1, 0, O_PG},
	    {"scenario", 1, 0, O_SCEN},
	    {"clients", 1, 0, O_CLIENTS},
	    {"threads", 1, 0, O_THREADS},
	    {"duration", 1, 0, O_DUR},
	    {"ops", 1, 0, O_OPS},
	    {"seed", 1, 0, O_SEED},
	    {"json", 0, 0, O_JSON},
	    {"no-check", 0, 0, O_NOCHECK},
	    {"cs-us", 1, 0, O_CS},
	    {"wait-ms", 1, 0, O_WAIT},
	    {"retry-us", 1, 0, O_RETRY},
	    {"stock", 1, 0, O_STOCK},
	    {"max-units", 1, 0, O_MAXU},
	    {"confirm-pct", 1, 0, O_CONF},
	    {"abandon-pct", 1, 0, O_ABAN},
	    {"seats", 1, 0, O_SEATS},
	    {"bags", 1, 0, O_BAGS},
	    {"lease-ms", 1, 0, O_LEASE},
	    {"tag", 1, 0, O_TAG},
	    {"saga-wait-ms", 1, 0, O_SWAIT},
	    {"lock-ttl-ms", 1, 0, O_LTTL},
	    {"max-print", 1, 0, O_MAXP},
	    {"history", 1, 0, O_HIST},
	    {"flights", 1, 0, O_FLIGHTS},
	    {"decline-pct", 1, 0, O_DECLINE},
	    {"plain", 0, 0, O_PLAIN},
	    {"fill", 1, 0, O_FILL},
	    {"help", 0, 0, O_HELP},
	    {0, 0, 0, 0},
	};
	struct hfb_config *c = &hfb_cfg;
	int64_t v, seats = 0, bags = 0;
	c->scenario = 1;
	c->clients = 16;
	c->threads = 2;
	c->duration_s = 10;
	c->seed = 1;
	c->check = true;
	c->cs_us = 100;
	c->wait_ms = 10000;
	c->retry_us = 1000;
	c->lock_ttl_ms = 30000;
	c->stock = 100;
	c->max_units = 5;
	c->confirm_pct = 50;
	c->abandon_pct = 10;
	c->lease_ms = 300;
	c->saga_wait_ms = 0;
	c->max_print = 20;
	c->flights = 3;
	c->decline_pct = 20;
	c->redis = "127.0.0.1:6379";
	c->pg = "host=127.0.0.1 dbname=postgres";
	int o;
	while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (o) {
		case O_SERVER:
			c->server = optarg;
			break;
		case O_ENGINE:
			c->engine = optarg;
			break;
		case O_PEER:
			c->peer_name = optarg;
			for (size_t i = 0; i < sizeof(peers) / sizeof(peers[0]); i++)
				if (strcmp(optarg, peers[i].name) == 0)
					c->peer = peers[i].peer;
			if (!c->peer)
				return bad_option("--peer", optarg);
			break;
		case O_REDIS:
			c->redis = optarg;
			break;
		case O_PG:
			c->pg = optarg;
			break;
		case O_SCEN:
			if (!parse_i64(optarg, 1, 6, &v))
				return bad_option("--scenario", optarg);
			c->scenario = (int)v;
			break;
		case O_CLIENTS:
			if (!parse_i64(optarg, 1, 10000, &v))
				return bad_option("--clients", optarg);
			c->clients = (int)v;
			break;
		case O_THREADS:
			if (!parse_i64(optarg, 1, 64, &v))
				return bad_option("--threads", optarg);
			c->threads = (int)v;
			break;
		case O_DUR: {
			char *end;
			c->duration_s = strtod(optarg, &end);
			if (*end || !(c->duration_s > 0) || c->duration_s > 86400)
				return bad_option("--duration", optarg);
			break;
		}
		case O_OPS:
			if (!parse_i64(optarg, 1, INT64_MAX / 2, &v))
				return bad_option("--ops", optarg);
			c->ops = (long)v;
			c->duration_s = 86400; /* the count bounds the run */
			break;
		case O_SEED:
			if (!parse_i64(optarg, 0, INT64_MAX, &v))
				return bad_option("--seed", optarg);
			c->seed = (uint64_t)v;
			break;
		case O_JSON:
			c->json = true;
			break;
		case O_NOCHECK:
			c->check = false;
			break;
		case O_CS:
			if (!parse_i64(optarg, 0, 10000000, &c->cs_us))
				return bad_option("--cs-us", optarg);
			break;
		case O_WAIT:
			if (!parse_i64(optarg, 1, HF_WAIT_MAX_MS, &c->wait_ms))
				return bad_option("--wait-ms", optarg);
			break;
		case O_RETRY:
			if (!parse_i64(optarg, 0, 10000000, &c->retry_us))
				return bad_option("--retry-us", optarg);
			break;
		case O_STOCK:
			if (!parse_i64(optarg, 1, HF_CAPACITY_MAX, &c->stock))
				return bad_option("--stock", optarg);
			break;
		case O_MAXU:
			if (!parse_i64(optarg, 1, HF_CAPACITY_MAX, &c->max_units))
				return bad_option("--max-units", optarg);
			break;
		case O_CONF:
			if (!parse_i64(optarg, 0, 100, &v))
				return bad_option("--confirm-pct", optarg);
			c->confirm_pct = (int)v;
			break;
		case O_ABAN:
			if (!parse_i64(optarg, 0, 100, &v))
				return bad_option("--abandon-pct", optarg);
			c->abandon_pct = (int)v;
			break;
		case O_SEATS:
			if (!parse_i64(optarg, 1, 100000, &seats))
				return bad_option("--seats", optarg);
			break;
		case O_BAGS:
			if (!parse_i64(optarg, 3, HF_CAPACITY_MAX, &bags))
				return bad_option("--bags", optarg);
			break;
		case O_LEASE:
			if (!parse_i64(optarg, 1, HF_TTL_MAX_MS, &c->lease_ms))
				return bad_option("--lease-ms", optarg);
			break;
		case O_LTTL:
			if (!parse_i64(optarg, 1, HF_TTL_MAX_MS, &c->lock_ttl_ms))
				return bad_option("--lock-ttl-ms", optarg);
			break;
		case O_SWAIT:
			if (!parse_i64(optarg, 0, HF_WAIT_MAX_MS, &c->saga_wait_ms))
				return bad_option("--saga-wait-ms", optarg);
			break;
		case O_TAG:
			if (strlen(optarg) == 0 || strlen(optarg) > 40 ||
			    strspn(optarg, "abcdefghijklmnopqrstuvwxyz0123456789-") !=
			        strlen(optarg))
				return bad_option("--tag (1-40 of a-z 0-9 -)", optarg);
			snprintf(c->tag, sizeof(c->tag), "%s", optarg);
			break;
		case O_HIST:
			c->history = optarg;
			break;
		case O_MAXP:
			if (!parse_i64(optarg, 0, 1000000, &v))
				return bad_option("--max-print", optarg);
			c->max_print = (size_t)v;
			break;
		case O_FLIGHTS:
			if (!parse_i64(optarg, 1, 1000, &v))
				return bad_option("--flights", optarg);
			c->flights = (int)v;
			break;
		case O_DECLINE:
			if (!parse_i64(optarg, 0, 100, &v))
				return bad_option("--decline-pct", optarg);
			c->decline_pct = (int)v;
			break;
		case O_PLAIN:
			c->plain = true;
			break;
		case O_FILL:
			if (!parse_i64(optarg, 1, 100000000, &v))
				return bad_option("--fill", optarg);
			c->fill = (long)v;
			break;
		case 'h':
		case O_HELP:
			fputs(usage, stdout);
			exit(0);
		default:
			return bad_option("option", argv[optind - 1]);
		}
	}
	if (optind < argc)
		return bad_option("argument", argv[optind]);
	if (!!c->server + !!c->engine + !!c->peer != 1) {
		fprintf(stderr, "holdfast-bench: name one of --server, --engine, --peer\n%s",
		        usage);
		return 2;
	}
	if (c->server && parse_servers(c) != 0)
		return bad_option("--server (want http://HOST:PORT, or up to 8 of them separated by commas)",
		                  c->server);
	if (c->engine)
		c->threads = 1; /* completions are dispatched on one loop */
	if (c->threads > c->clients)
		c->threads = c->clients;
	if (c->scenario == 6)
		c->seats = (int)(seats ? seats : 200);
	else if (c->scenario == 4)
		c->seats = (int)(seats ? seats : c->clients / 2 ? c->clients / 2 : 1);
	else /* enough seats that abandoned bookings (held for a lease) do not fill the plane */
		c->seats = (int)(seats ? seats : 4 * c->clients);
	if (c->scenario == 4 && c->seats > HF_CLAIMS_MAX)
		return bad_option("--seats (at most 64 in the seat race)", "");
	c->bag_capacity = bags ? bags : c->scenario == 6 ? 2 * (int64_t)c->seats : 4 * (int64_t)c->clients;
	if (c->bag_capacity < 3)
		c->bag_capacity = 3;
	if (c->max_units > c->stock)
		c->max_units = c->stock;
	if (c->abandon_pct + c->confirm_pct > 100)
		return bad_option("--abandon-pct + --confirm-pct (over 100)", "");
	if (c->history && (!c->check || c->peer))
		return bad_option("--history (needs the checks, and holdfast rather than a peer)", "");
	if (c->history && c->scenario == 6)
		return bad_option("--history (scenario 6 checks bookings, not a history)", "");
	if (c->peer && !hfb_peer_supports(c->peer, c->scenario)) {
		fprintf(stderr, "holdfast-bench: peer '%s' has no scenario %d\n", c->peer_name,
		        c->scenario);
		return 2;
	}
	if (!c->tag[0])
		snprintf(c->tag, sizeof(c->tag), "hb%x-%lx-%" PRIu64, (unsigned)getpid(),
		         (unsigned long)time(NULL), c->seed);
	return 0;
}

/* ---- after the run: read back what must be checked ---- */

/* The newest event's sequence number now, in *seq (0 for an engine without a log). Also
 * proves the target answers before any client starts. */
static int last_seq(hf_store *s, uint64_t *seq)
{
	hf_request req;
	hf_request_init(&req, HF_OP_READ_EVENTS);
	req.after = UINT64_MAX / 4;
	req.limit = 1;
	hf_reply *rep = NULL;
	int rc = hf_call(s, &req, &rep);
	*seq = rc == HF_OK ? rep->last_seq : 0;
	if (rc != HF_OK && rc != HF_ENOTSUP)
		fprintf(stderr, "holdfast-bench: %s\n", rep->error.message);
	hf_reply_free(rep);
	return rc == HF_ENOTSUP ? HF_OK : rc;
}

static void parse_event_parts(const char *data, struct hfb_event *e)
{
	json_t *j = json_loads(data ? data : "{}", 0, NULL);
	json_t *parts = json_object_get(j, "resources"), *p;
	size_t i;
	json_array_foreach(parts, i, p)
	{
		if (i >= HFB_PARTS_MAX)
			break;
		const char *name = json_string_value(json_object_get(p, "name"));
		e->parts[i].res = name ? hfb_history_find(&hfb_run.hist, name) : -1;
		e->parts[i].units = json_integer_value(json_object_get(p, "units"));
		e->parts[i].fence = json_integer_value(json_object_get(p, "fence"));
		e->n_parts = i + 1;
	}
	json_decref(j);
}

/* Appends the hold events after `from` to the history: 0, 1 when the engine keeps no event
 * log, -1 on failure. */
static int read_events(hf_store *s, uint64_t from)
{
	uint64_t after = from;
	for (;;) {
		hf_request req;
		hf_request_init(&req, HF_OP_READ_EVENTS);
		req.after = after;
		req.limit = HF_LIST_MAX;
		hf_reply *rep = NULL;
		int rc = hf_call(s, &req, &rep);
		if (rc != HF_OK) {
			fprintf(stderr, "holdfast-bench: reading the event log: %s\n",
			        rep->error.message);
			hf_reply_free(rep);
			return rc == HF_ENOTSUP ? 1
			                        : -1; /* an engine without a log: checked without */
		}
		size_t n = rep->n_events;
		for (size_t i = 0; i < n; i++) {
			const hf_event *ev = &rep->events[i];
			after = ev->seq;
			struct hfb_event e = {.seq = ev->seq};
			if (!ev->hold_id)
				continue;
			if (strcmp(ev->type, "hold.granted") == 0)
				e.type = HFB_EV_GRANTED;
			else if (strcmp(ev->type, "hold.confirmed") == 0)
				e.type = HFB_EV_CONFIRMED;
			else if (strcmp(ev->type, "hold.released") == 0)
				e.type = HFB_EV_RELEASED;
			else if (strcmp(ev->type, "hold.expired") == 0)
				e.type = HFB_EV_EXPIRED;
			else
				continue;
			snprintf(e.hold, sizeof(e.hold), "%s", ev->hold_id);
			parse_event_parts(ev->data, &e);
			if (hfb_history_add_event(&hfb_run.hist, &e) != HF_OK) {
				hf_reply_free(rep);
				return -1;
			}
		}
		hf_reply_free(rep);
		if (n == 0)
			return 0;
	}
}

/* Reads back every kept and abandoned hold; abandoned ones must have expired. */
static long read_back(hf_store *s, struct hfb_worker *ws, int nw, struct hfb_stats *total,
                      FILE *out)
{
	long bad = 0;
	for (int i = 0; i < nw; i++) {
		for (size_t k = 0; k < ws[i].n_verify; k++) {
			hf_request req;
			hf_request_init(&req, HF_OP_GET_HOLD);
			req.hold_id = ws[i].verify[k];
			hf_reply *rep = NULL;
			int64_t t0 = hfb_now_us();
			int rc = hf_call(s, &req, &rep);
			struct hfb_obs o = {.kind = HFB_FINAL,
			                    .client = -1,
			                    .t_send = t0,
			                    .t_ack = hfb_now_us(),
			                    .code = rc};
			snprintf(o.hold, sizeof(o.hold), "%s", ws[i].verify[k]);
			o.state = rc == HF_OK ? (int)rep->hold->state : -1;
			if (rc != HF_OK && rc != HF_ENOHOLD) {
				fprintf(stderr, "holdfast-bench: reading hold %s back: %s\n",
				        o.hold, rep->error.message);
				hf_reply_free(rep);
				return -1;
			}
			hf_reply_free(rep);
			hfb_history_add(&hfb_run.hist, &o);
			if (!ws[i].verify_abandoned[k])
				continue;
			if (o.state == HF_HOLD_EXPIRED) {
				total->expired++;
			} else if (++bad <= (long)hfb_cfg.max_print) {
				fprintf(
				    out,
				    "VIOLATION lease_not_expired: hold %s was abandoned %" PRId64
				    " ms before the end of its lease and is %s\n",
				    o.hold, hfb_cfg.lease_ms,
				    o.state < 0 ? "gone"
				                : hf_hold_state_name((hf_hold_state)o.state));
			}
		}
	}
	return bad;
}

/* ---- the report ---- */

static void lat_json(json_t *o, const char *key, const struct hfb_hist *h)
{
	json_object_set_new(o, key,
	                    json_pack("{s:I, s:f, s:f, s:f, s:f, s:f, s:f}", "count",
	                              (json_int_t)h->count, "p50", hfb_hist_quantile(h, 0.5) / 1000,
	                              "p90", hfb_hist_quantile(h, 0.9) / 1000, "p99",
	                              hfb_hist_quantile(h, 0.99) / 1000, "p999",
	                              hfb_hist_quantile(h, 0.999) / 1000, "max",
	                              (double)h->max / 1000, "mean", hfb_hist_mean(h) / 1000));
}

static void lat_text(const char *name, const struct hfb_hist *h)
{
	if (!h->count)
		return;
	printf("  %-22s p50 %8.3f  p90 %8.3f  p99 %8.3f  p99.9 %8.3f  max %8.3f  mean %8.3f ms "
	       "(n=%" PRIu64 ")\n",
	       name, hfb_hist_quantile(h, 0.5) / 1000, hfb_hist_quantile(h, 0.9) / 1000,
	       hfb_hist_quantile(h, 0.99) / 1000, hfb_hist_quantile(h, 0.999) / 1000,
	       (double)h->max / 1000, hfb_hist_mean(h) / 1000, h->count);
}

static double ratio(uint64_t a, uint64_t b)
{
	return b ? (double)a / (double)b : 0;
}

struct outcome {
	double elapsed_s;
	double jain; /* scenario 2: fairness of grants over clients, 1 = equal */
	int rounds;  /* scenario 4 */
	long winners;
	long violations;
	struct hfb_report rep;
	const char *target;
};

static void report(const struct hfb_stats *t, const struct outcome *o)
{
	double el = o->elapsed_s;
	if (hfb_cfg.json) {
		json_t *j =
		    json_pack("{s:s, s:i, s:s, s:s, s:i, s:i, s:f, s:I, s:I}", "tool",
		              "holdfast-bench", "scenario", hfb_cfg.scenario, "scenario_name",
		              scenario_names[hfb_cfg.scenario], "target", o->target, "clients",
		              hfb_cfg.clients, "threads", hfb_cfg.threads, "elapsed_s", el, "seed",
		              (json_int_t)hfb_cfg.seed, "ops_bound", (json_int_t)hfb_cfg.ops);
		json_object_set_new(
		    j, "counts",
		    json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "cycles",
		              (json_int_t)t->cycles, "requests", (json_int_t)t->requests,
		              "attempts", (json_int_t)t->attempts, "granted",
		              (json_int_t)t->granted, "conflicts", (json_int_t)t->conflicts,
		              "timeouts", (json_int_t)t->timeouts, "errors", (json_int_t)t->errors,
		              "confirmed", (json_int_t)t->confirmed, "released",
		              (json_int_t)t->released, "abandoned", (json_int_t)t->abandoned,
		              "expired", (json_int_t)t->expired));
		json_object_set_new(j, "throughput",
		                    json_pack("{s:f, s:f, s:f}", "cycles_per_s", t->cycles / el,
		                              "requests_per_s", t->requests / el, "grants_per_s",
		                              t->granted / el));
		json_object_set_new(j, "rates",
		                    json_pack("{s:f, s:f, s:f, s:f, s:f}", "success",
		                              ratio(t->granted, t->attempts), "conflict",
		                              ratio(t->conflicts, t->attempts), "timeout",
		                              ratio(t->timeouts, t->attempts), "error",
		                              ratio(t->errors, t->attempts), "expiry",
		                              ratio(t->expired, t->granted)));
		json_t *lat = json_object();
		lat_json(lat, "acquire", &t->acquire);
		lat_json(lat, "request", &t->request);
		if (t->handoff.count)
			lat_json(lat, "handoff", &t->handoff);
		json_object_set_new(j, "latency_ms", lat);
		if (hfb_cfg.scenario == 2)
			json_object_set_new(j, "fairness",
			                    json_pack("{s:f, s:f, s:f}", "jain", o->jain,
			                              "max_wait_ms", (double)t->acquire.max / 1000,
			                              "mean_wait_ms",
			                              hfb_hist_mean(&t->acquire) / 1000));
		if (hfb_cfg.scenario == 4)
			json_object_set_new(j, "seat_race",
			                    json_pack("{s:i, s:i, s:I}", "rounds", o->rounds,
			                              "seats_per_round", hfb_cfg.seats, "winners",
			                              (json_int_t)o->winners));
		json_t *chk = json_pack(
		    "{s:b, s:I, s:I, s:I, s:I, s:I}", "enabled", hfb_cfg.check, "violations",
		    (json_int_t)o->violations, "grants", (json_int_t)o->rep.grants,
		    "definite_intervals", (json_int_t)o->rep.intervals, "confirms_verified",
		    (json_int_t)o->rep.confirms, "events_replayed", (json_int_t)o->rep.events);
		json_t *by = json_object();
		for (int i = 0; i < HFB_CHECK_COUNT; i++)
			json_object_set_new(by, hfb_check_name((enum hfb_check_id)i),
			                    json_integer((json_int_t)o->rep.by_check[i]));
		json_object_set_new(chk, "by_check", by);
		json_object_set_new(j, "checks", chk);
		json_object_set_new(j, "pass", json_boolean(o->violations == 0));
		char *s = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
		puts(s);
		free(s);
		json_decref(j);
		return;
	}
	printf(
	    "holdfast-bench: scenario %d (%s) on %s: %d clients, %d threads, %.2f s, seed %" PRIu64
	    "\n",
	    hfb_cfg.scenario, scenario_names[hfb_cfg.scenario], o->target, hfb_cfg.clients,
	    hfb_cfg.threads, el, hfb_cfg.seed);
	printf("  cycles %" PRIu64 " (%.1f/s), requests %" PRIu64 " (%.1f/s), grants %.1f/s\n",
	       t->cycles, t->cycles / el, t->requests, t->requests / el, t->granted / el);
	printf("  acquires %" PRIu64
	       ": success %.2f%%, conflict %.2f%%, timeout %.2f%%, error %.2f%%\n",
	       t->attempts, 100 * ratio(t->granted, t->attempts),
	       100 * ratio(t->conflicts, t->attempts), 100 * ratio(t->timeouts, t->attempts),
	       100 * ratio(t->errors, t->attempts));
	printf("  confirmed %" PRIu64 ", released %" PRIu64 ", abandoned %" PRIu64
	       ", expired %" PRIu64 " (expiry rate %.2f%%)\n",
	       t->confirmed, t->released, t->abandoned, t->expired,
	       100 * ratio(t->expired, t->granted));
	lat_text("acquire (granted)", &t->acquire);
	lat_text("every request", &t->request);
	lat_text("hand-off", &t->handoff);
	if (hfb_cfg.scenario == 2)
		printf("  fairness: max wait %.3f ms vs mean %.3f ms; Jain index of grants per "
		       "client %.4f\n",
		       (double)t->acquire.max / 1000, hfb_hist_mean(&t->acquire) / 1000, o->jain);
	if (hfb_cfg.scenario == 4)
		printf("  seat race: %d rounds of %d seats, %ld winners\n", o->rounds,
		       hfb_cfg.seats, o->winners);
	if (!hfb_cfg.check) {
		printf("  checks: skipped (--no-check)\n");
		return;
	}
	if (hfb_cfg.peer)
		printf("  checks: the peer's end state, %zu lock grants (%zu with a certainly-live "
		       "interval): ",
		       o->rep.grants, o->rep.intervals);
	else
		printf(
		    "  checks: %zu grants (%zu with a certainly-live interval), %zu confirms, %zu "
		    "log events: ",
		    o->rep.grants, o->rep.intervals, o->rep.confirms, o->rep.events);
	if (o->violations == 0) {
		printf("PASS\n");
		return;
	}
	printf("FAIL, %ld violations:", o->violations);
	for (int i = 0; i < HFB_CHECK_COUNT; i++)
		if (o->rep.by_check[i])
			printf(" %s %zu", hfb_check_name((enum hfb_check_id)i), o->rep.by_check[i]);
	printf("\n");
}

static double jain_index(struct hfb_worker *ws, int nw)
{
	double sum = 0, sq = 0;
	int n = 0;
	for (int i = 0; i < nw; i++)
		for (int k = 0; k < ws[i].n_clients; k++) {
			double x = (double)ws[i].clients[k].grants;
			sum += x;
			sq += x * x;
			n++;
		}
	return sq > 0 ? sum * sum / (n * sq) : 0;
}

int main(int argc, char **argv)
{
	int rc = parse_args(argc, argv);
	if (rc != 0)
		return rc;
	if (hfb_cfg.fill)
		return hfb_fill_main();
	if (hfb_cfg.scenario == 6)
		return hfb_flights_main();
	hfb_history_init(&hfb_run.hist);
	hf_store *store = NULL, *reader = NULL;
	struct hfb_worker *ws = NULL;
	int nw = 0;
	struct hfb_stats total;
	struct outcome o = {.target = hfb_cfg.server   ? hfb_cfg.server
	                              : hfb_cfg.engine ? hfb_cfg.engine
	                                               : hfb_cfg.peer_name};
	uint64_t seq0 = 0;
	rc = 3;
	/* Violations go to stderr with the text report, and to stderr alone under --json. */
	FILE *vout = stderr;

	if (hfb_cfg.peer) {
		if (hfb_peer_setup() != 0)
			goto out;
	} else {
		hf_error err;
		const char *url = hfb_cfg.engine ? hfb_cfg.engine : hfb_cfg.reader_url;
		if (hf_open(url, NULL, &store, &err) != HF_OK) {
			fprintf(stderr, "holdfast-bench: cannot open '%s': %s\n", url, err.message);
			goto out;
		}
		/* the server: the clients speak HTTP themselves; this store only reads back */
		reader = store;
		if (!hfb_cfg.engine)
			store = NULL;
		if (last_seq(reader, &seq0) != HF_OK) /* the run's events come after seq0 */
			goto out;
		hfb_scenario_setup();
	}
	if (hfb_workers_run(store, &total, &ws, &nw) != 0)
		goto out;
	o.elapsed_s = (double)(hfb_now_us() - hfb_run.t_start) / 1e6;
	if (hfb_cfg.scenario == 2)
		o.jain = jain_index(ws, nw);
	if (hfb_cfg.scenario == 4)
		hfb_scenario_rounds(&o.rounds, &o.winners);

	if (hfb_cfg.peer) {
		o.violations = hfb_cfg.check ? hfb_peer_check(vout, &o.rep) : 0;
		if (o.violations < 0)
			goto out;
	} else if (hfb_cfg.check) {
		/* abandoned leases run out before they are read back */
		if (hfb_cfg.scenario == 5)
			usleep((useconds_t)(hfb_cfg.lease_ms + 250) * 1000);
		long bad = read_back(reader, ws, nw, &total, vout);
		if (bad < 0)
			goto out;
		int ev = read_events(reader, seq0);
		if (ev < 0)
			goto out;
		hfb_run.hist.have_events = ev == 0;
		if (hfb_cfg.history && hfb_history_write(&hfb_run.hist, hfb_cfg.history) != 0) {
			fprintf(stderr, "holdfast-bench: cannot write the history to '%s'\n",
			        hfb_cfg.history);
			goto out;
		}
		long v = hfb_check(&hfb_run.hist, vout, hfb_cfg.max_print, &o.rep);
		if (v < 0)
			goto out;
		o.violations = v + bad + hfb_scenario_check(vout);
	}
	report(&total, &o);
	rc = o.violations ? 1 : 0;
	if (atomic_load(&hfb_run.failed)) {
		fprintf(stderr,
		        "holdfast-bench: clients lost their server: the run is not valid\n");
		rc = 3;
	}
out:
	if (ws)
		hfb_workers_free(ws, nw);
	if (reader)
		hf_close(reader);
	hfb_scenario_free();
	hfb_history_release(&hfb_run.hist);
	return rc;
}
