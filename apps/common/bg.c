/*
 * bg.c — the apps' background threads (the shop's dispatcher, the library's projector): one
 * thread that naps between passes, can be woken early, and stops when asked; and the
 * idempotent "this resource has this capacity" step their start-up loads use.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "app.h"

static void *bg_main(void *arg)
{
	struct app_bg *bg = arg;
	bg->fn(bg, bg->arg);
	return NULL;
}

bool app_bg_start(struct app_bg *bg, void (*fn)(struct app_bg *, void *), void *arg, char *err,
                  size_t errlen)
{
	pthread_mutex_init(&bg->mu, NULL);
	pthread_cond_init(&bg->cv, NULL);
	bg->kicked = bg->stopping = false;
	bg->fn = fn;
	bg->arg = arg;
	bg->started = pthread_create(&bg->thread, NULL, bg_main, bg) == 0;
	if (!bg->started) {
		snprintf(err, errlen, "cannot start a background thread");
		pthread_cond_destroy(&bg->cv);
		pthread_mutex_destroy(&bg->mu);
	}
	return bg->started;
}

bool app_bg_nap(struct app_bg *bg, int64_t ms)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += (time_t)(ms / 1000);
	ts.tv_nsec += (long)(ms % 1000) * 1000000L;
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&bg->mu);
	while (!bg->kicked && !bg->stopping)
		if (pthread_cond_timedwait(&bg->cv, &bg->mu, &ts) != 0)
			break;
	bg->kicked = false;
	bool go_on = !bg->stopping;
	pthread_mutex_unlock(&bg->mu);
	return go_on;
}

void app_bg_kick(struct app_bg *bg)
{
	if (!bg->started)
		return;
	pthread_mutex_lock(&bg->mu);
	bg->kicked = true;
	pthread_cond_signal(&bg->cv);
	pthread_mutex_unlock(&bg->mu);
}

bool app_bg_stopping(struct app_bg *bg)
{
	pthread_mutex_lock(&bg->mu);
	bool s = bg->stopping;
	pthread_mutex_unlock(&bg->mu);
	return s;
}

void app_bg_stop(struct app_bg *bg)
{
	if (!bg->started)
		return;
	pthread_mutex_lock(&bg->mu);
	bg->stopping = true;
	pthread_cond_broadcast(&bg->cv);
	pthread_mutex_unlock(&bg->mu);
	pthread_join(bg->thread, NULL);
	pthread_cond_destroy(&bg->cv);
	pthread_mutex_destroy(&bg->mu);
	bg->started = false;
}

int app_hf_capacity(hf_store *store, const char *name, int64_t capacity, hf_error *e)
{
	hf_request req;
	hf_reply *rep = NULL;
	hf_request_init(&req, HF_OP_GET_RESOURCE);
	req.name = name;
	int rc = hf_call(store, &req, &rep);
	bool same = rc == HF_OK && rep->resource->declared && rep->resource->capacity == capacity;
	*e = rep->error;
	hf_reply_free(rep);
	if (same)
		return HF_OK;
	if (rc != HF_OK && rc != HF_ENORESOURCE)
		return rc;
	hf_request_init(&req, HF_OP_PUT_RESOURCE);
	req.name = name;
	req.capacity = capacity;
	rc = hf_call(store, &req, &rep);
	*e = rep->error;
	hf_reply_free(rep);
	return rc;
}

void app_hf_name(char *buf, size_t len, const char *prefix, int64_t id)
{
	snprintf(buf, len, "%s:%" PRId64, prefix, id);
}

int app_hf_take(hf_store *store, const char *owner, const char *name, int64_t units, int64_t ttl_ms,
                const char *key, hf_hold **hold, hf_error *e)
{
	hf_claim claim = {.name = name, .units = units, .capacity = 0};
	hf_acquire_req req = {.owner = owner,
	                      .claims = &claim,
	                      .n_claims = 1,
	                      .ttl_ms = ttl_ms,
	                      .wait_ms = 0,
	                      .mode = HF_MODE_UNITS,
	                      .idempotency_key = key};
	return hf_acquire(store, &req, hold, e);
}

json_t *app_hf_resource_json(hf_store *store, const char *name)
{
	hf_request req;
	hf_reply *rep = NULL;
	hf_request_init(&req, HF_OP_GET_RESOURCE);
	req.name = name;
	json_t *o;
	if (hf_call(store, &req, &rep) == HF_OK)
		o = json_pack("{s:s,s:I,s:I,s:I}", "resource", name, "capacity",
		              (json_int_t)rep->resource->capacity, "held",
		              (json_int_t)rep->resource->held, "available",
		              (json_int_t)(rep->resource->capacity - rep->resource->held));
	else
		o = json_pack("{s:s,s:{s:s,s:s}}", "resource", name, "error", "code",
		              hf_err_name(rep->error.code), "message", rep->error.message);
	hf_reply_free(rep);
	return o;
}
