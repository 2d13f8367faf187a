/*
 * fill.c — holdfast-bench --fill N: makes a store large before it is measured. N live holds,
 * each alone on a resource of its own ("<tag>-fill-<i>", an implicit lock) with a lease of a
 * day, taken through the public API by --clients threads at once.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <time.h>

#include "bench.h"

#define FILL_LEASE_MS (24LL * 3600 * 1000)

static struct {
	hf_store *store;
	atomic_long next; /* the next hold to take */
	atomic_long made;
	atomic_int failed; /* the first error's code, 0 while none */
	hf_error first_error;
	pthread_mutex_t lock;
} F = {.lock = PTHREAD_MUTEX_INITIALIZER};

static void *filler(void *arg)
{
	(void)arg;
	char name[HF_NAME_MAX + 1];
	for (long i; !atomic_load(&F.failed) && (i = atomic_fetch_add(&F.next, 1)) < hfb_cfg.fill;) {
		snprintf(name, sizeof(name), "%s-fill-%ld", hfb_cfg.tag, i);
		hf_claim claim = {.name = name, .units = 1, .capacity = 1};
		hf_acquire_req req = {.owner = "holdfast-bench-fill", .claims = &claim, .n_claims = 1,
		                      .ttl_ms = FILL_LEASE_MS, .mode = HF_MODE_EXCLUSIVE};
		hf_hold *h = NULL;
		hf_error err;
		int rc = hf_acquire(F.store, &req, &h, &err);
		hf_hold_free(h);
		if (rc != HF_OK) {
			pthread_mutex_lock(&F.lock);
			if (!atomic_load(&F.failed)) {
				F.first_error = err;
				atomic_store(&F.failed, rc);
			}
			pthread_mutex_unlock(&F.lock);
			break;
		}
		atomic_fetch_add(&F.made, 1);
	}
	return NULL;
}

int hfb_fill_main(void)
{
	if (!hfb_cfg.engine) {
		fprintf(stderr, "holdfast-bench: --fill needs --engine (the store is filled in-process)\n");
		return 2;
	}
	hf_options opt;
	hf_options_init(&opt);
	/* room for the fill and for what is measured on the store afterwards */
	opt.max_holds = (size_t)hfb_cfg.fill + opt.max_holds;
	opt.max_resources = (size_t)hfb_cfg.fill + opt.max_resources;
	hf_error err;
	if (hf_open(hfb_cfg.engine, &opt, &F.store, &err) != HF_OK) {
		fprintf(stderr, "holdfast-bench: cannot open '%s': %s\n", hfb_cfg.engine, err.message);
		return 3;
	}
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	int n = hfb_cfg.clients;
	pthread_t th[256];
	if (n > 256)
		n = 256;
	int started = 0;
	while (started < n && pthread_create(&th[started], NULL, filler, NULL) == 0)
		started++;
	for (int i = 0; i < started; i++)
		pthread_join(th[i], NULL);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	hf_close(F.store);
	double s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	long made = atomic_load(&F.made);
	if (hfb_cfg.json)
		printf("{\"fill\":{\"holds\":%ld,\"seconds\":%.3f,\"per_s\":%.1f,\"threads\":%d,"
		       "\"tag\":\"%s\",\"pass\":%s}}\n",
		       made, s, s > 0 ? (double)made / s : 0.0, started, hfb_cfg.tag,
		       made == hfb_cfg.fill ? "true" : "false");
	else
		printf("holdfast-bench: filled %s with %ld live holds (%s-fill-0..) in %.1f s "
		       "(%.0f/s, %d threads)\n",
		       hfb_cfg.engine, made, hfb_cfg.tag, s, s > 0 ? (double)made / s : 0.0, started);
	if (atomic_load(&F.failed)) {
		fprintf(stderr, "holdfast-bench: --fill stopped at %ld: %s: %s\n", made,
		        hf_err_name(atomic_load(&F.failed)), F.first_error.message);
		return 1;
	}
	return started == n ? 0 : 3;
}
