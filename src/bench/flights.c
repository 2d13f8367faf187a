/*
 * flights.c — holdfast-bench scenario 6: flight bookings end to end through a saga (reserve
 * the seat, reserve the baggage, pay over HTTP, confirm both), or with --plain the same
 * bookings as plain acquire/confirm calls by the client. The payment service is served by the
 * bench itself on loopback (it declines the cards it is told to), so the scenario needs no
 * other service. Clients are threads making blocking library calls (hf_saga_*, hf_acquire),
 * on an engine in process or forwarded to a holdfastd. After the run: no seat sold twice, the
 * bookings' states agree with the holds, and every failed booking holds nothing.
 */
#include <arpa/inet.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <jansson.h>

#include "bench.h"

#define LEASE_MS 60000 /* a booking's tentative holds: far longer than any booking takes */
#define POLL_MIN_US 200
#define POLL_MAX_US 5000

/* What one booking ended as; the checks read these after the run. */
struct booking {
	char owner[96]; /* saga/<id>, or the plain booking's owner */
	int flight, seat;
	char state[24]; /* completed, failed, or what else the saga said */
	char code[24];  /* the error code of a failed one */
};

static struct {
	pthread_mutex_t lock;
	struct booking *b;
	size_t n, cap;
	atomic_long started;
	struct hfb_hist lat;
	uint64_t completed, declined, taken, other;
	int pay_port;
	_Atomic bool pay_stop;
	hf_store *store;
	char type[96];
} F = {.lock = PTHREAD_MUTEX_INITIALIZER};

/* ---- the payment service: 201 for a card, 402 for a "declined-" one; refunds 200 ---- */

static void pay_answer(struct evhttp_request *req, void *arg)
{
	(void)arg;
	static atomic_long n;
	struct evbuffer *in = evhttp_request_get_input_buffer(req), *out = evbuffer_new();
	size_t len = evbuffer_get_length(in);
	char body[512] = "";
	evbuffer_copyout(in, body, len < sizeof(body) - 1 ? len : sizeof(body) - 1);
	const char *uri = evhttp_request_get_uri(req);
	int status = 200;
	if (out && strncmp(uri, "/payments", 9) == 0) {
		status = strstr(body, "declined-") ? 402 : 201;
		evbuffer_add_printf(out, status == 201 ? "{\"id\":\"pay-%ld\"}" : "{\"error\":\"declined\"}",
		                    atomic_fetch_add(&n, 1));
	} else if (out) {
		evbuffer_add_printf(out, "{}");
	}
	evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "application/json");
	evhttp_send_reply(req, status, status == 402 ? "Payment Required" : "OK", out);
	if (out)
		evbuffer_free(out);
}

static void pay_tick(evutil_socket_t fd, short what, void *arg)
{
	(void)fd, (void)what;
	if (F.pay_stop)
		event_base_loopexit(arg, NULL);
}

struct pay_server {
	bool running;
	struct event_base *base;
	struct evhttp *http;
	struct event *tick;
	pthread_t thread;
};

static void *pay_main(void *arg)
{
	event_base_dispatch(((struct pay_server *)arg)->base);
	return NULL;
}

static int pay_start(struct pay_server *ps)
{
	struct sockaddr_in sa;
	socklen_t sl = sizeof(sa);
	struct evhttp_bound_socket *bs;
	ps->base = event_base_new();
	ps->http = ps->base ? evhttp_new(ps->base) : NULL;
	bs = ps->http ? evhttp_bind_socket_with_handle(ps->http, "127.0.0.1", 0) : NULL;
	if (!bs || getsockname(evhttp_bound_socket_get_fd(bs), (struct sockaddr *)&sa, &sl) != 0)
		return -1;
	F.pay_port = ntohs(sa.sin_port);
	evhttp_set_gencb(ps->http, pay_answer, NULL);
	ps->tick = event_new(ps->base, -1, EV_PERSIST, pay_tick, ps->base);
	struct timeval tv = {0, 50000};
	if (!ps->tick || event_add(ps->tick, &tv) != 0 || pthread_create(&ps->thread, NULL, pay_main, ps))
		return -1;
	ps->running = true;
	return 0;
}

static void pay_stop(struct pay_server *ps)
{
	F.pay_stop = true;
	pthread_join(ps->thread, NULL);
	event_free(ps->tick);
	evhttp_free(ps->http);
	event_base_free(ps->base);
}

/* One POST to the payment service, for --plain: the status, or 0 when there was none. */
static int pay_call(const char *card)
{
	char req[256], resp[64] = "";
	int fd = socket(AF_INET, SOCK_STREAM, 0), status = 0;
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)F.pay_port)};
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	int n = snprintf(req, sizeof(req),
	                 "POST /payments HTTP/1.0\r\nContent-Type: application/json\r\n"
	                 "Content-Length: %zu\r\n\r\n{\"card\":\"%s\"}",
	                 strlen(card) + 11, card);
	if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
	    write(fd, req, (size_t)n) == n && read(fd, resp, sizeof(resp) - 1) > 12)
		sscanf(resp, "HTTP/1.%*d %d", &status);
	if (fd >= 0)
		close(fd);
	return status;
}

/* ---- the saga type ---- */

static int put_type(void)
{
	char text[2048];
	snprintf(F.type, sizeof(F.type), "%.80s-booking", hfb_cfg.tag);
	snprintf(text, sizeof(text),
	         "{\"description\":\"holdfast-bench: a flight booking\","
	         "\"defaults\":{\"retry\":{\"attempts\":3,\"backoff_ms\":10,\"max_backoff_ms\":100},"
	         "\"timeout_ms\":10000},\"steps\":["
	         "{\"name\":\"reserve_seat\",\"action\":{\"hold\":{\"op\":\"acquire\","
	         "\"resource\":\"{{input.seat}}\",\"capacity\":1,\"ttl_ms\":%d,\"wait_ms\":0}},"
	         "\"compensation\":{\"hold\":{\"op\":\"release\",\"of\":\"reserve_seat\"}}},"
	         "{\"name\":\"reserve_baggage\",\"action\":{\"hold\":{\"op\":\"acquire\","
	         "\"resource\":\"{{input.bags_resource}}\",\"capacity\":%" PRId64 ","
	         "\"units\":\"{{input.bags}}\",\"ttl_ms\":%d,\"wait_ms\":0}},"
	         "\"compensation\":{\"hold\":{\"op\":\"release\",\"of\":\"reserve_baggage\"}}},"
	         "{\"name\":\"pay\",\"action\":{\"http\":{\"method\":\"POST\","
	         "\"url\":\"{{input.pay_url}}/payments\",\"body\":{\"card\":\"{{input.card}}\","
	         "\"booking\":\"{{saga.id}}\"},\"ok\":[201]},\"retry\":{\"attempts\":1}},"
	         "\"compensation\":{\"http\":{\"method\":\"POST\",\"url\":\"{{input.pay_url}}/refunds\","
	         "\"body\":{\"payment\":\"{{saga.id}}/pay/action\"}}}},"
	         "{\"name\":\"confirm_seat\",\"action\":{\"hold\":{\"op\":\"confirm\",\"of\":\"reserve_seat\"}}},"
	         "{\"name\":\"confirm_baggage\",\"action\":{\"hold\":{\"op\":\"confirm\",\"of\":\"reserve_baggage\"}}}]}",
	         LEASE_MS, hfb_cfg.bag_capacity, LEASE_MS);
	hf_error err;
	char *json = NULL;
	int rc = hf_saga_type_put(F.store, F.type, text, &json, &err);
	free(json);
	if (rc != HF_OK)
		fprintf(stderr, "holdfast-bench: cannot register the booking saga: %s\n", err.message);
	return rc == HF_OK ? 0 : -1;
}

/* ---- one booking ---- */

static void seat_name(char *buf, size_t n, int flight, int seat)
{
	snprintf(buf, n, "%.80s-f%d-seat-%d", hfb_cfg.tag, flight, seat);
}

static void bags_name(char *buf, size_t n, int flight)
{
	snprintf(buf, n, "%.80s-f%d-bags", hfb_cfg.tag, flight);
}

static void sleep_us(int64_t us)
{
	struct timespec ts = {us / 1000000, (long)(us % 1000000) * 1000};
	nanosleep(&ts, NULL);
}

/* Starts the saga and polls it until it rests; fills b (state, code). */
static void book_saga(struct booking *b, int64_t bags, bool declined)
{
	char seat[HF_NAME_MAX + 1], res[HF_NAME_MAX + 1], input[1024];
	seat_name(seat, sizeof(seat), b->flight, b->seat);
	bags_name(res, sizeof(res), b->flight);
	snprintf(input, sizeof(input),
	         "{\"seat\":\"%s\",\"bags_resource\":\"%s\",\"bags\":%" PRId64 ","
	         "\"pay_url\":\"http://127.0.0.1:%d\",\"card\":\"%s\"}",
	         seat, res, bags, F.pay_port, declined ? "declined-4000" : "ok-4242");
	hf_error err;
	char *json = NULL;
	snprintf(b->state, sizeof(b->state), "error");
	if (hf_saga_start(F.store, F.type, input, NULL, &json, NULL, &err) != HF_OK) {
		snprintf(b->code, sizeof(b->code), "%s", hf_err_name(err.code));
		return;
	}
	for (int64_t wait = POLL_MIN_US;; wait = wait * 2 < POLL_MAX_US ? wait * 2 : POLL_MAX_US) {
		json_t *j = json_loads(json, 0, NULL);
		free(json);
		json = NULL;
		const char *st = json_string_value(json_object_get(j, "state"));
		const char *id = json_string_value(json_object_get(j, "id"));
		const char *code = json_string_value(json_object_get(json_object_get(j, "error"), "code"));
		if (id)
			snprintf(b->owner, sizeof(b->owner), "saga/%s", id);
		bool rest = st && strcmp(st, "running") != 0 && strcmp(st, "compensating") != 0;
		if (rest) {
			snprintf(b->state, sizeof(b->state), "%s", st);
			snprintf(b->code, sizeof(b->code), "%s", code ? code : "");
		}
		json_decref(j);
		if (rest || !id)
			return;
		sleep_us(wait);
		if (hf_saga_get(F.store, b->owner + 5, &json, &err) != HF_OK) {
			snprintf(b->code, sizeof(b->code), "%s", hf_err_name(err.code));
			return;
		}
	}
}

static int plain_acquire(const char *owner, const char *name, int64_t units, int64_t cap,
                         hf_hold **h, hf_error *err)
{
	hf_claim claim = {.name = name, .units = units, .capacity = cap};
	hf_acquire_req req = {.owner = owner, .claims = &claim, .n_claims = 1, .ttl_ms = LEASE_MS};
	return hf_acquire(F.store, &req, h, err);
}

/* The same booking without a saga: seat, bags, payment, confirms — or releases. */
static void book_plain(struct booking *b, int64_t bags, bool declined, long n)
{
	char seat[HF_NAME_MAX + 1], res[HF_NAME_MAX + 1];
	seat_name(seat, sizeof(seat), b->flight, b->seat);
	bags_name(res, sizeof(res), b->flight);
	snprintf(b->owner, sizeof(b->owner), "%.40s-plain-%ld", hfb_cfg.tag, n);
	hf_hold *s = NULL, *g = NULL;
	hf_error err;
	int rc = plain_acquire(b->owner, seat, 1, 1, &s, &err);
	if (rc == HF_OK)
		rc = plain_acquire(b->owner, res, bags, hfb_cfg.bag_capacity, &g, &err);
	int pay = rc == HF_OK ? pay_call(declined ? "declined-4000" : "ok-4242") : 0;
	if (rc == HF_OK && pay == 201) {
		rc = hf_confirm(F.store, s->id, s->token, NULL, &err);
		if (rc == HF_OK)
			rc = hf_confirm(F.store, g->id, g->token, NULL, &err);
	}
	bool ok = rc == HF_OK && pay == 201;
	snprintf(b->state, sizeof(b->state), ok ? "completed" : rc == HF_OK ? "failed" : "error");
	snprintf(b->code, sizeof(b->code), "%s",
	         ok ? "" : rc != HF_OK ? hf_err_name(rc) : pay == 402 ? "step_failed" : "payment");
	if (!ok && rc == HF_EUNAVAILABLE)
		snprintf(b->state, sizeof(b->state), "failed");
	if (!ok) { /* give back what was taken */
		if (g)
			hf_release(F.store, g->id, g->token, NULL, &err);
		if (s)
			hf_release(F.store, s->id, s->token, NULL, &err);
	}
	hf_hold_free(s);
	hf_hold_free(g);
}

/* ---- the clients ---- */

static bool may_start(void)
{
	if (hfb_cfg.ops && atomic_fetch_add(&F.started, 1) >= hfb_cfg.ops)
		return false;
	return hfb_now_us() < hfb_run.t_deadline;
}

struct client {
	int id;
	pthread_t thread;
	uint64_t rng;
	struct hfb_hist lat;
};

static void *client_main(void *arg)
{
	struct client *c = arg;
	for (long n = 0; may_start(); n++) {
		struct booking b = {.flight = (int)hfb_rand_range(&c->rng, 0, hfb_cfg.flights - 1),
		                    .seat = (int)hfb_rand_range(&c->rng, 0, hfb_cfg.seats - 1)};
		int64_t bags = hfb_rand_range(&c->rng, 1, 2);
		bool declined = hfb_rand_range(&c->rng, 0, 99) < hfb_cfg.decline_pct;
		int64_t t0 = hfb_now_us();
		if (hfb_cfg.plain)
			book_plain(&b, bags, declined, (long)c->id * 1000000 + n);
		else
			book_saga(&b, bags, declined);
		hfb_hist_add(&c->lat, hfb_now_us() - t0);
		pthread_mutex_lock(&F.lock);
		if (F.n == F.cap) {
			size_t cap = F.cap ? 2 * F.cap : 1024;
			struct booking *nb = realloc(F.b, cap * sizeof(*nb));
			if (!nb) {
				pthread_mutex_unlock(&F.lock);
				fprintf(stderr, "holdfast-bench: out of memory\n");
				exit(3);
			}
			F.b = nb, F.cap = cap;
		}
		F.b[F.n++] = b;
		pthread_mutex_unlock(&F.lock);
		/* a customer refused a seat tries another one, not a million a second */
		if (strcmp(b.code, "unavailable") == 0)
			sleep_us(hfb_cfg.retry_us);
	}
	return NULL;
}

/* ---- the checks ---- */

/* The live holds (tentative, confirmed) of an owner or on a resource: their count, and the
 * owner of the confirmed one in `confirmed_owner` (when asked). -1 when the store failed. */
static long live_holds(const char *owner, const char *resource, long *confirmed,
                       char *confirmed_owner, size_t n)
{
	hf_request req;
	hf_reply *reply;
	hf_request_init(&req, HF_OP_LIST_HOLDS);
	req.owner = owner;
	req.resource = resource;
	if (resource) /* a seat's ended holds can be many; only the confirmed ones matter */
		req.state = HF_HOLD_CONFIRMED;
	req.limit = HF_LIST_MAX;
	if (hf_call(F.store, &req, &reply) != HF_OK) {
		fprintf(stderr, "holdfast-bench: cannot list holds: %s\n",
		        reply ? reply->error.message : "out of memory");
		hf_reply_free(reply);
		return -1;
	}
	long live = 0;
	*confirmed = 0;
	for (size_t i = 0; i < reply->n_holds; i++) {
		hf_hold_state st = reply->holds[i].state;
		live += st == HF_HOLD_TENTATIVE || st == HF_HOLD_CONFIRMED;
		if (st == HF_HOLD_CONFIRMED && (*confirmed)++ == 0 && confirmed_owner)
			snprintf(confirmed_owner, n, "%s", reply->holds[i].owner);
	}
	hf_reply_free(reply);
	return live;
}

static long violation(long *bad, const char *fmt, const char *a, const char *b)
{
	if ((size_t)(*bad)++ < hfb_cfg.max_print) {
		fprintf(stderr, "VIOLATION: ");
		fprintf(stderr, fmt, a, b);
		fputc('\n', stderr);
	}
	return 0;
}

/* Each booking against its own holds: a completed one keeps its two confirmed holds, any
 * other holds nothing. */
static long check_bookings(long *bad)
{
	for (size_t i = 0; i < F.n; i++) {
		struct booking *b = &F.b[i];
		long confirmed, live = b->owner[0] ? live_holds(b->owner, NULL, &confirmed, NULL, 0) : 0;
		if (live < 0)
			return -1;
		bool done = strcmp(b->state, "completed") == 0;
		if (strcmp(b->state, "completed") != 0 && strcmp(b->state, "failed") != 0)
			violation(bad, "booking %s ended as %s", b->owner, b->state);
		else if (done && (live != 2 || confirmed != 2))
			violation(bad, "completed booking %s does not keep its two confirmed holds%s", b->owner, "");
		else if (!done && live != 0)
			violation(bad, "failed booking %s (%s) still holds something", b->owner, b->code);
	}
	return 0;
}

/* Each seat: at most one completed booking, at most one confirmed hold, and the same owner. */
static long check_seats(long *bad)
{
	int seats = hfb_cfg.flights * hfb_cfg.seats;
	const struct booking **sold = calloc((size_t)seats, sizeof(*sold));
	if (!sold)
		return -1;
	char name[HF_NAME_MAX + 1], owner[HF_OWNER_MAX + 1];
	for (size_t i = 0; i < F.n; i++) {
		const struct booking *b = &F.b[i];
		if (strcmp(b->state, "completed") != 0)
			continue;
		int k = b->flight * hfb_cfg.seats + b->seat;
		seat_name(name, sizeof(name), b->flight, b->seat);
		if (sold[k])
			violation(bad, "seat %s sold twice (and to %s)", name, b->owner);
		sold[k] = b;
	}
	for (int k = 0; k < seats; k++) {
		long confirmed;
		seat_name(name, sizeof(name), k / hfb_cfg.seats, k % hfb_cfg.seats);
		owner[0] = 0;
		if (live_holds(NULL, name, &confirmed, owner, sizeof(owner)) < 0) {
			free(sold);
			return -1;
		}
		if (confirmed > 1)
			violation(bad, "seat %s has more than one confirmed hold%s", name, "");
		else if (confirmed == 1 && (!sold[k] || strcmp(sold[k]->owner, owner) != 0))
			violation(bad, "seat %s is held by %s, not by the booking that sold it", name, owner);
		else if (confirmed == 0 && sold[k])
			violation(bad, "seat %s was sold without a confirmed hold%s", name, "");
	}
	free(sold);
	return 0;
}

/* ---- the run ---- */

static void report(double elapsed, long bad)
{
	double bps = elapsed > 0 ? (double)F.completed / elapsed : 0;
	double sps = elapsed > 0 ? (double)F.n / elapsed : 0;
	if (hfb_cfg.json) {
		json_t *o = json_pack(
			"{s:s, s:i, s:s, s:s, s:s, s:i, s:i, s:i, s:i, s:f, s:I, s:I, s:I, s:I, s:I, s:f, s:f,"
			" s:{s:f, s:f, s:f}, s:b, s:{s:b, s:i}}",
			"tool", "holdfast-bench", "scenario", 6, "scenario_name", "flight bookings",
			"mode", hfb_cfg.plain ? "plain" : "saga", "target",
			hfb_cfg.server ? hfb_cfg.server : hfb_cfg.engine, "clients", hfb_cfg.clients,
			"flights", hfb_cfg.flights, "seats_per_flight", hfb_cfg.seats, "decline_pct",
			hfb_cfg.decline_pct, "elapsed_s", elapsed, "bookings", (json_int_t)F.n, "completed",
			(json_int_t)F.completed, "declined", (json_int_t)F.declined, "seat_taken",
			(json_int_t)F.taken, "other", (json_int_t)F.other, "bookings_per_s", bps,
			"sagas_per_s", sps, "latency_ms", "p50", hfb_hist_quantile(&F.lat, 0.5) / 1000,
			"p99", hfb_hist_quantile(&F.lat, 0.99) / 1000, "max", (double)F.lat.max / 1000,
			"pass", bad == 0, "checks", "enabled", hfb_cfg.check, "violations", (int)bad);
		char *s = o ? json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
		if (s)
			puts(s);
		free(s);
		json_decref(o);
		return;
	}
	printf("holdfast-bench: scenario 6 (flight bookings, %s) on %s: %d clients, %d flights x %d "
	       "seats, %d%% cards declined, %.2f s\n",
	       hfb_cfg.plain ? "plain acquire/confirm" : "sagas",
	       hfb_cfg.server ? hfb_cfg.server : hfb_cfg.engine, hfb_cfg.clients, hfb_cfg.flights,
	       hfb_cfg.seats, hfb_cfg.decline_pct, elapsed);
	printf("  bookings   %zu (%.1f/s): %" PRIu64 " completed (%.1f/s), %" PRIu64
	       " declined, %" PRIu64 " seat or bags taken, %" PRIu64 " other\n",
	       F.n, sps, F.completed, bps, F.declined, F.taken, F.other);
	printf("  latency    p50 %.2f ms  p99 %.2f ms  max %.2f ms (start to rest)\n",
	       hfb_hist_quantile(&F.lat, 0.5) / 1000, hfb_hist_quantile(&F.lat, 0.99) / 1000,
	       (double)F.lat.max / 1000);
	printf("  checks     %s\n", !hfb_cfg.check ? "skipped" : bad ? "FAILED" : "passed "
	       "(no seat sold twice, states agree with holds, failed bookings hold nothing)");
}

static void count(void)
{
	for (size_t i = 0; i < F.n; i++) {
		const struct booking *b = &F.b[i];
		if (strcmp(b->state, "completed") == 0)
			F.completed++;
		else if (strcmp(b->code, "unavailable") == 0)
			F.taken++;
		else if (strcmp(b->code, "step_failed") == 0)
			F.declined++;
		else
			F.other++;
	}
}

int hfb_flights_main(void)
{
	hf_error err;
	struct pay_server ps = {0};
	const char *url = hfb_cfg.engine ? hfb_cfg.engine : hfb_cfg.reader_url;
	if (hf_open(url, NULL, &F.store, &err) != HF_OK) {
		fprintf(stderr, "holdfast-bench: cannot open '%s': %s\n", url, err.message);
		return 3;
	}
	int rc = 3;
	struct client *cs = calloc((size_t)hfb_cfg.clients, sizeof(*cs));
	if (!cs || pay_start(&ps) != 0 || (!hfb_cfg.plain && put_type() != 0))
		goto out;
	hfb_hist_init(&F.lat);
	hfb_run.t_start = hfb_now_us();
	hfb_run.t_deadline = hfb_run.t_start + (int64_t)(hfb_cfg.duration_s * 1e6);
	int started = 0;
	for (; started < hfb_cfg.clients; started++) {
		cs[started].id = started;
		cs[started].rng = hfb_cfg.seed * 0x9e3779b97f4a7c15ULL + (uint64_t)started + 1;
		hfb_hist_init(&cs[started].lat);
		if (pthread_create(&cs[started].thread, NULL, client_main, &cs[started]) != 0)
			break;
	}
	for (int i = 0; i < started; i++) {
		pthread_join(cs[i].thread, NULL);
		hfb_hist_merge(&F.lat, &cs[i].lat);
	}
	double elapsed = (double)(hfb_now_us() - hfb_run.t_start) / 1e6;
	count();
	long bad = 0;
	if (hfb_cfg.check && (check_bookings(&bad) < 0 || check_seats(&bad) < 0))
		goto out;
	report(elapsed, bad);
	rc = started < hfb_cfg.clients ? 3 : bad ? 1 : 0;
out:
	if (ps.running)
		pay_stop(&ps);
	free(cs);
	free(F.b);
	hf_close(F.store);
	return rc;
}
