/*
 * stats.c — the lock statistics of GET /api/locks/stats: counters of booking locks and
 * driver holds, and the latency of booking-lock acquisitions (the last 65,536, exact
 * percentiles by sorting a copy when asked).
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "rides.h"

#define RING 65536

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static uint64_t counters[RIDES_STAT_N];
static int64_t ring[RING];
static uint64_t n_samples; /* all ever taken; the ring holds the last min(n, RING) */

void rides_stat_add(enum rides_stat s)
{
	pthread_mutex_lock(&mu);
	counters[s]++;
	pthread_mutex_unlock(&mu);
}

void rides_stat_latency(int64_t us)
{
	pthread_mutex_lock(&mu);
	ring[n_samples % RING] = us;
	n_samples++;
	pthread_mutex_unlock(&mu);
}

static int cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
	return (x > y) - (x < y);
}

/* The q-quantile (nearest rank) of n sorted samples, in milliseconds. */
static double quantile_ms(const int64_t *v, size_t n, double q)
{
	if (n == 0)
		return 0;
	size_t rank = (size_t)(q * (double)n + 0.999999);
	if (rank < 1)
		rank = 1;
	if (rank > n)
		rank = n;
	return (double)v[rank - 1] / 1000.0;
}

json_t *rides_stats_json(void)
{
	uint64_t c[RIDES_STAT_N];
	int64_t *copy = malloc(sizeof(int64_t) * RING);
	size_t n = 0;
	uint64_t total;
	pthread_mutex_lock(&mu);
	memcpy(c, counters, sizeof(c));
	total = n_samples;
	if (copy) {
		n = total < RING ? (size_t)total : RING;
		memcpy(copy, ring, n * sizeof(int64_t));
	}
	pthread_mutex_unlock(&mu);
	if (copy)
		qsort(copy, n, sizeof(int64_t), cmp_i64);
	json_t *lat = json_pack("{s:I,s:f,s:f,s:f}", "samples", (json_int_t)n, "p50_ms",
	                        quantile_ms(copy, n, 0.50), "p99_ms", quantile_ms(copy, n, 0.99),
	                        "max_ms", n ? (double)copy[n - 1] / 1000.0 : 0.0);
	free(copy);
	uint64_t attempts = c[RIDES_LOCK_ACQUIRED] + c[RIDES_LOCK_TIMEOUT] + c[RIDES_LOCK_ERROR];
	return json_pack(
	    "{s:{s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:f,s:o},s:{s:I,s:I,s:I,s:I,s:I},s:s}", "locks",
	    "acquired", (json_int_t)c[RIDES_LOCK_ACQUIRED], "released",
	    (json_int_t)c[RIDES_LOCK_RELEASED], "expired", (json_int_t)c[RIDES_LOCK_EXPIRED],
	    "contested", (json_int_t)c[RIDES_LOCK_CONTESTED], "timeouts",
	    (json_int_t)c[RIDES_LOCK_TIMEOUT], "errors", (json_int_t)c[RIDES_LOCK_ERROR],
	    "fenced_writes", (json_int_t)c[RIDES_LOCK_FENCED], "timeout_rate",
	    attempts ? (double)c[RIDES_LOCK_TIMEOUT] / (double)attempts : 0.0,
	    "acquisition_latency", lat, "driver_holds", "taken", (json_int_t)c[RIDES_HOLD_TAKEN],
	    "confirmed", (json_int_t)c[RIDES_HOLD_CONFIRMED], "released",
	    (json_int_t)c[RIDES_HOLD_RELEASED], "no_driver_available",
	    (json_int_t)c[RIDES_HOLD_NONE], "index_conflicts", (json_int_t)c[RIDES_HOLD_INDEX],
	    "engine", hf_store_scheme(rides_store));
}
