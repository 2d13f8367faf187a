/*
 * ui.c — the dashboard at /ui: serves its page, script and style from the byte arrays that
 * embed_ui.cmake generated at build time (nothing is read from disk or the network), and
 * GET /v1/stats/series, the per-second series of the last minutes that the page charts
 * (outcomes, grant latency, hand-off latency).
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "server/server.h"

/* ---- The assets. ------------------------------------------------------------------ */

/* The page may load only what this server serves: no inline script, nothing from elsewhere. */
#define UI_CSP                                                                                     \
	"default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "            \
	"img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

static void send_asset(struct hf__rq *rq, const char *name)
{
	for (const struct hf__ui_asset *a = hf__ui_assets; a->name; a++) {
		if (strcmp(a->name, name) != 0)
			continue;
		hf__rq_add_header(rq, "Content-Security-Policy", UI_CSP);
		hf__rq_add_header(rq, "X-Content-Type-Options", "nosniff");
		hf__rq_add_header(rq, "Referrer-Policy", "no-referrer");
		/* Small, and they change with the binary: revalidate every load. */
		hf__rq_add_header(rq, "Cache-Control", "no-cache");
		hf__rq_send_text(rq, 200, a->ctype, (const char *)a->data, a->len);
		return;
	}
	hf__rq_fail(rq, HF_EROUTE, "no dashboard file '%.64s'", name);
}

void hf__h_ui(struct hf__rq *rq)
{
	send_asset(rq, "index.html");
}

void hf__h_ui_asset(struct hf__rq *rq)
{
	send_asset(rq, rq->param);
}

/* ---- The series: one slot per second of the last SERIES_S seconds. ----------------- */

#define SERIES_S 300
#define LAT_BUCKETS 100 /* bucket b: latency < 2^((b+1)/4) us, as stats.c; the last is open */

/* Latencies of one second, log-bucketed. */
struct lat {
	uint32_t n;
	uint64_t max_us;
	uint32_t hist[LAT_BUCKETS];
};

struct slot {
	int64_t sec; /* Unix second this slot counts; a slot of another second is stale */
	uint32_t granted, unavailable, timeouts, expired;
	struct lat grant;   /* an acquire's arrival to its grant, waiting included */
	struct lat handoff; /* the end that freed a resource to the next grant on it */
};

/* One holdfastd per process: the series is the process's, like its clock. Static storage,
 * so that counting never allocates nor fails. */
static struct slot ring[SERIES_S];

static struct slot *slot_at(int64_t sec)
{
	struct slot *s = &ring[(uint64_t)sec % SERIES_S];
	if (s->sec != sec) {
		memset(s, 0, sizeof(*s));
		s->sec = sec;
	}
	return s;
}

static void lat_add(struct lat *l, int64_t latency_us)
{
	uint64_t us = latency_us > 0 ? (uint64_t)latency_us : 0;
	int b = (int)floor(4.0 * log2((double)us + 1.0));
	l->n++;
	l->hist[b < 0 ? 0 : b >= LAT_BUCKETS ? LAT_BUCKETS - 1 : b]++;
	if (us > l->max_us)
		l->max_us = us;
}

void hf__series_acquire(int code, int64_t latency_us)
{
	struct slot *s = slot_at(hf_now_ms() / 1000);
	switch (code) {
	case HF_OK:
		s->granted++;
		lat_add(&s->grant, latency_us);
		break;
	case HF_EUNAVAILABLE:
		s->unavailable++;
		break;
	case HF_ETIMEDOUT:
		s->timeouts++;
		break;
	default:
		break;
	}
}

/* The slot of an event's time, or NULL when it is older than the window. */
static struct slot *event_slot(int64_t at_ms)
{
	int64_t now_s = hf_now_ms() / 1000;
	int64_t sec = at_ms / 1000;
	if (sec > now_s)
		sec = now_s; /* another server's clock ahead of ours */
	if (sec <= now_s - SERIES_S)
		return NULL;
	return slot_at(sec);
}

void hf__series_event(const char *type, int64_t at_ms)
{
	struct slot *s = type && strcmp(type, "hold.expired") == 0 ? event_slot(at_ms) : NULL;
	if (s)
		s->expired++;
}

void hf__series_handoff(int64_t at_ms, int64_t ms)
{
	struct slot *s = event_slot(at_ms);
	if (s)
		lat_add(&s->handoff, ms * 1000);
}

/* Upper bound, in ms, of the latency under which a fraction p of the slot's grants fell. */
static double percentile_ms(const struct lat *l, double p)
{
	if (!l->n)
		return 0;
	uint64_t want = (uint64_t)ceil(p * (double)l->n), seen = 0;
	for (int b = 0; b < LAT_BUCKETS; b++) {
		seen += l->hist[b];
		if (seen >= want && seen) {
			double hi = (pow(2.0, (double)(b + 1) / 4.0) - 1.0) / 1000.0;
			return fmin(hi, (double)l->max_us / 1000.0);
		}
	}
	return (double)l->max_us / 1000.0;
}

void hf__h_stats_series(struct hf__rq *rq)
{
	static const char *const allowed[] = {"seconds", NULL};
	struct evkeyvalq q;
	int64_t seconds;
	if (!hf__query_parse(rq, &q, allowed))
		return;
	bool ok = hf__query_int(rq, &q, "seconds", 1, SERIES_S, SERIES_S, &seconds);
	evhttp_clear_headers(&q);
	if (!ok)
		return;
	int64_t now_ms = hf_now_ms(), now_s = now_ms / 1000;
	int64_t since_s = rq->srv->started_ms / 1000; /* no slot before the start */
	json_t *points = json_array();
	for (int64_t sec = now_s - seconds + 1; points && sec <= now_s; sec++) {
		if (sec < since_s)
			continue;
		const struct slot *s = &ring[(uint64_t)sec % SERIES_S];
		static const struct slot empty;
		if (s->sec != sec)
			s = &empty;
		json_t *p = json_pack(
		    "{s:I,s:I,s:I,s:I,s:I,s:{s:f,s:f},s:{s:I,s:f,s:f}}", "at_ms",
		    (json_int_t)(sec * 1000), "granted", (json_int_t)s->granted, "conflicts",
		    (json_int_t)s->unavailable, "timeouts", (json_int_t)s->timeouts, "expired",
		    (json_int_t)s->expired, "latency_ms", "p50", percentile_ms(&s->grant, 0.50), "p99",
		    percentile_ms(&s->grant, 0.99), "handoff_ms", "n", (json_int_t)s->handoff.n, "p50",
		    percentile_ms(&s->handoff, 0.50), "p99", percentile_ms(&s->handoff, 0.99));
		if (!p || json_array_append_new(points, p) != 0) {
			json_decref(points);
			points = NULL;
		}
	}
	json_t *body = points ? json_pack("{s:I,s:I,s:o}", "interval_ms", (json_int_t)1000,
	                                  "now_ms", (json_int_t)now_ms, "points", points)
	                      : NULL;
	if (body)
		hf__rq_send_json(rq, 200, body);
	else
		hf__rq_fail(rq, HF_ENOMEM, "out of memory");
}
