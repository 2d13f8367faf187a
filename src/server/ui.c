/*
 * ui.c — the dashboard at /ui: serves its page, script and style from the byte arrays that
 * embed_ui.cmake generated at build time (nothing is read from disk or the network), and
 * GET /v1/stats/series, the per-second series of the last minutes that the page charts.
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

struct slot {
	int64_t sec; /* Unix second this slot counts; a slot of another second is stale */
	uint32_t granted, unavailable, timeouts, expired;
	uint32_t lat_n;
	uint64_t lat_max_us;
	uint32_t hist[LAT_BUCKETS];
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

void hf__series_acquire(int code, int64_t latency_us)
{
	struct slot *s = slot_at(hf_now_ms() / 1000);
	switch (code) {
	case HF_OK: {
		uint64_t us = latency_us > 0 ? (uint64_t)latency_us : 0;
		int b = (int)floor(4.0 * log2((double)us + 1.0));
		s->granted++;
		s->lat_n++;
		s->hist[b < 0 ? 0 : b >= LAT_BUCKETS ? LAT_BUCKETS - 1 : b]++;
		if (us > s->lat_max_us)
			s->lat_max_us = us;
		break;
	}
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

void hf__series_event(const char *type, int64_t at_ms)
{
	int64_t now_s = hf_now_ms() / 1000;
	int64_t sec = at_ms / 1000;
	if (!type || strcmp(type, "hold.expired") != 0)
		return;
	if (sec > now_s)
		sec = now_s; /* another server's clock ahead of ours */
	if (sec <= now_s - SERIES_S)
		return; /* older than the window */
	slot_at(sec)->expired++;
}

/* Upper bound, in ms, of the latency under which a fraction p of the slot's grants fell. */
static double slot_percentile_ms(const struct slot *s, double p)
{
	if (!s->lat_n)
		return 0;
	uint64_t want = (uint64_t)ceil(p * (double)s->lat_n), seen = 0;
	for (int b = 0; b < LAT_BUCKETS; b++) {
		seen += s->hist[b];
		if (seen >= want && seen) {
			double hi = (pow(2.0, (double)(b + 1) / 4.0) - 1.0) / 1000.0;
			return fmin(hi, (double)s->lat_max_us / 1000.0);
		}
	}
	return (double)s->lat_max_us / 1000.0;
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
		json_t *p = json_pack("{s:I,s:I,s:I,s:I,s:I,s:{s:f,s:f}}", "at_ms",
		                      (json_int_t)(sec * 1000), "granted", (json_int_t)s->granted,
		                      "conflicts", (json_int_t)s->unavailable, "timeouts",
		                      (json_int_t)s->timeouts, "expired", (json_int_t)s->expired,
		                      "latency_ms", "p50", slot_percentile_ms(s, 0.50), "p99",
		                      slot_percentile_ms(s, 0.99));
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
