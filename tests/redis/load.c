/*
 * load.c — a small throughput probe for docs/redis.md: T threads, each acquiring and
 * releasing a lock of its own (capacity-1 implicit resource) as fast as the engine answers,
 * for D seconds. Prints operations per second (an acquire and a release are two operations)
 * so the figure compares with redis-benchmark's requests per second on the same server.
 *   redis_load URL [THREADS=8] [SECONDS=5]
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "holdfast.h"

static hf_store *st;
static atomic_llong ops, errors;
static atomic_bool stop;

static void *run(void *arg)
{
	char name[32];
	snprintf(name, sizeof(name), "load-%ld", (long)(intptr_t)arg);
	hf_claim c = {.name = name, .units = 1, .capacity = 1};
	hf_acquire_req req = {.owner = "load", .claims = &c, .n_claims = 1, .ttl_ms = 30000,
	                      .mode = HF_MODE_EXCLUSIVE};
	while (!atomic_load(&stop)) {
		hf_hold *h = NULL, *r = NULL;
		hf_error err;
		if (hf_acquire(st, &req, &h, &err) != HF_OK) {
			atomic_fetch_add(&errors, 1);
			continue;
		}
		if (hf_release(st, h->id, h->token, &r, &err) != HF_OK)
			atomic_fetch_add(&errors, 1);
		hf_hold_free(h);
		hf_hold_free(r);
		atomic_fetch_add(&ops, 2);
	}
	return NULL;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: %s URL [THREADS] [SECONDS]\n", argv[0]);
		return 2;
	}
	int threads = argc > 2 ? atoi(argv[2]) : 8, secs = argc > 3 ? atoi(argv[3]) : 5;
	hf_error err;
	if (hf_open(argv[1], NULL, &st, &err) != HF_OK) {
		fprintf(stderr, "open: %s\n", err.message);
		return 1;
	}
	pthread_t *t = calloc((size_t)threads, sizeof(*t));
	int64_t t0 = hf_now_ms();
	for (int i = 0; i < threads; i++)
		pthread_create(&t[i], NULL, run, (void *)(intptr_t)i);
	struct timespec ts = {secs, 0};
	nanosleep(&ts, NULL);
	atomic_store(&stop, true);
	for (int i = 0; i < threads; i++)
		pthread_join(t[i], NULL);
	double s = (double)(hf_now_ms() - t0) / 1000.0;
	printf("%s threads=%d ops=%lld errors=%lld ops_per_sec=%.0f\n", hf_store_scheme(st), threads,
	       (long long)atomic_load(&ops), (long long)atomic_load(&errors), (double)atomic_load(&ops) / s);
	hf_close(st);
	free(t);
	return atomic_load(&errors) ? 1 : 0;
}
