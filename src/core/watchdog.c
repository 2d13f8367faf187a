/*
 * watchdog.c — the client-side helper that keeps a hold's lease alive while work runs
 * (extend every ttl/3) and reports the loss of the hold as soon as it is known.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/core.h"

struct hf_watchdog {
	hf_store *store;
	char id[HF_ID_LEN + 1];
	char token[HF_TOKEN_LEN * 8 + 1];
	int64_t ttl_ms;
	hf_lost_fn lost;
	void *arg;
	atomic_bool is_lost;
	pthread_mutex_t lock;
	pthread_cond_t wake;
	bool stop;
	pthread_t thread;
};

/* Errors after which the hold is certainly gone: retrying cannot bring it back. */
static bool definite_loss(int code)
{
	return code == HF_ETOKEN || code == HF_EENDED || code == HF_ENOHOLD || code == HF_EINVAL;
}

static int64_t monotonic_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Sleeps until `until_ms` (monotonic) or stop; returns true if asked to stop. */
static bool sleep_until(struct hf_watchdog *wd, int64_t until_ms)
{
	pthread_mutex_lock(&wd->lock);
	while (!wd->stop) {
		int64_t left = until_ms - monotonic_ms();
		if (left <= 0)
			break;
		struct timespec ts;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		ts.tv_sec += left / 1000;
		ts.tv_nsec += (left % 1000) * 1000000;
		if (ts.tv_nsec >= 1000000000) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000;
		}
		pthread_cond_timedwait(&wd->wake, &wd->lock, &ts);
	}
	bool stop = wd->stop;
	pthread_mutex_unlock(&wd->lock);
	return stop;
}

static void report_loss(struct hf_watchdog *wd, const hf_error *why)
{
	atomic_store(&wd->is_lost, true);
	if (wd->lost)
		wd->lost(wd->arg, why);
}

static void *watchdog_main(void *arg)
{
	struct hf_watchdog *wd = arg;
	/* The lease is known good until this moment (the caller just got or extended it). */
	int64_t valid_until = monotonic_ms() + wd->ttl_ms;
	int64_t interval = wd->ttl_ms / 3 > 0 ? wd->ttl_ms / 3 : 1;
	int64_t next = monotonic_ms() + interval;
	for (;;) {
		if (sleep_until(wd, next))
			return NULL;
		int64_t sent = monotonic_ms();
		hf_error err;
		int rc = hf_extend(wd->store, wd->id, wd->token, wd->ttl_ms, NULL, &err);
		if (rc == HF_OK) {
			valid_until = sent + wd->ttl_ms;
			next = sent + interval;
			continue;
		}
		if (definite_loss(rc) || monotonic_ms() >= valid_until) {
			if (!definite_loss(rc))
				hf__err(&err, err.code, "lease ran out while extensions failed: %s",
				        hf_strerror(rc));
			report_loss(wd, &err);
			return NULL;
		}
		/* A transient failure: try again soon, before the lease runs out. */
		int64_t retry = monotonic_ms() + (interval / 4 > 0 ? interval / 4 : 1);
		next = retry < valid_until ? retry : valid_until;
	}
}

int hf_watchdog_start(hf_store *store, const char *hold_id, const char *token, int64_t ttl_ms,
                      hf_lost_fn lost, void *arg, hf_watchdog **out, hf_error *err)
{
	*out = NULL;
	hf__err_clear(err);
	if (!hold_id || strlen(hold_id) != HF_ID_LEN)
		return hf__err(err, HF_EINVAL, "hold id must be %d hex characters", HF_ID_LEN);
	if (!token || strlen(token) >= sizeof(((struct hf_watchdog *)0)->token))
		return hf__err(err, HF_EINVAL, "token is missing or too long");
	if (ttl_ms < 3 || ttl_ms > HF_TTL_MAX_MS)
		return hf__err(err, HF_EINVAL, "ttl_ms must be between 3 and %lld",
		               (long long)HF_TTL_MAX_MS);
	struct hf_watchdog *wd = calloc(1, sizeof(*wd));
	if (!wd)
		return hf__err_code(err, HF_ENOMEM);
	wd->store = store;
	memcpy(wd->id, hold_id, HF_ID_LEN + 1);
	strcpy(wd->token, token);
	wd->ttl_ms = ttl_ms;
	wd->lost = lost;
	wd->arg = arg;
	atomic_init(&wd->is_lost, false);
	pthread_mutex_init(&wd->lock, NULL);
	pthread_condattr_t attr;
	pthread_condattr_init(&attr);
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	pthread_cond_init(&wd->wake, &attr);
	pthread_condattr_destroy(&attr);
	if ((errno = pthread_create(&wd->thread, NULL, watchdog_main, wd)) != 0) {
		int rc = hf__err(err, HF_EINTERNAL, "cannot start the watchdog: %s", strerror(errno));
		pthread_cond_destroy(&wd->wake);
		pthread_mutex_destroy(&wd->lock);
		free(wd);
		return rc;
	}
	*out = wd;
	return HF_OK;
}

bool hf_watchdog_lost(hf_watchdog *wd)
{
	return atomic_load(&wd->is_lost);
}

void hf_watchdog_stop(hf_watchdog *wd)
{
	if (!wd)
		return;
	pthread_mutex_lock(&wd->lock);
	wd->stop = true;
	pthread_cond_signal(&wd->wake);
	pthread_mutex_unlock(&wd->lock);
	pthread_join(wd->thread, NULL);
	pthread_cond_destroy(&wd->wake);
	pthread_mutex_destroy(&wd->lock);
	free(wd);
}
