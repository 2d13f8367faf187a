/*
 * orchestrator.c — the saga runner of one store: a queue of saga ids and a few threads that
 * each take one and run it to rest (run.c). Created by hf_open on engines that keep sagas;
 * it queues every unfinished saga (running, compensating), so a restart resumes them from
 * their last checkpoint. Its worker threads start with the first queued saga (at open, or at
 * the first start, resume or transaction), so a store without sagas runs none. One saga is
 * never run by two threads at once. Where several instances share sagas (PostgreSQL), a
 * rescan thread, from open, queues every second the sagas whose owner's lease ran out (a
 * dead instance's): this one takes them over (run.c, claim).
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/core.h"
#include "saga/run.h"

#define THREADS 4          /* blocking steps run here: at most 4 in flight; docs/sagas.md */
#define RETRY_AFTER_MS 1000 /* a saga whose checkpoint failed (storage) is tried again */
#define RESCAN_MS 1000      /* sagas left by a dead instance are looked for; docs/sagas.md */

struct entry {
	char id[HF_ID_LEN + 1];
	bool running; /* a thread has it */
	bool again;   /* woken while running: run once more after */
	int64_t not_before; /* monotonic ms */
	struct entry *next;
};

struct hf__orch {
	hf_store *store;
	pthread_mutex_t lock;
	pthread_cond_t wake;
	struct entry *head; /* queued and running sagas */
	_Atomic bool stop;
	pthread_t threads[THREADS];
	size_t n_threads;    /* started workers: 0 until a saga is queued */
	bool start_failed;   /* pthread_create failed: tried again at the next queued saga */
	pthread_t rescanner; /* only where instances share sagas (takeover) */
	bool rescanning;
};

static void *worker(void *arg);

static struct entry *find(struct hf__orch *o, const char *id)
{
	for (struct entry *e = o->head; e; e = e->next)
		if (strcmp(e->id, id) == 0)
			return e;
	return NULL;
}

/* Starts the workers once there is a saga to run. Under o->lock, so that hf__orch_stop
 * (which sets stop under it) joins every thread started. */
static void start_workers_locked(struct hf__orch *o)
{
	if (o->n_threads == THREADS || o->stop)
		return;
	for (; o->n_threads < THREADS; o->n_threads++)
		if (pthread_create(&o->threads[o->n_threads], NULL, worker, o) != 0)
			break;
	o->start_failed = o->n_threads < THREADS;
}

static void wake_locked(struct hf__orch *o, const char *id, int64_t not_before)
{
	start_workers_locked(o);
	struct entry *e = find(o, id);
	if (e) {
		if (e->running)
			e->again = true;
		return;
	}
	if (!(e = calloc(1, sizeof(*e))))
		return; /* out of memory: the saga runs at the next start */
	snprintf(e->id, sizeof(e->id), "%s", id);
	e->not_before = not_before;
	/* At the tail: take() runs the oldest first. At the head, a steady stream of new sagas
	 * kept the first ones waiting for seconds (holdfast-bench scenario 6, p99). */
	struct entry **tail = &o->head;
	while (*tail)
		tail = &(*tail)->next;
	*tail = e;
	pthread_cond_broadcast(&o->wake);
}

void hf__orch_wake(struct hf__orch *o, const char *saga_id)
{
	if (!o)
		return;
	pthread_mutex_lock(&o->lock);
	wake_locked(o, saga_id, 0);
	pthread_mutex_unlock(&o->lock);
}

static void unlink_entry(struct hf__orch *o, struct entry *x)
{
	for (struct entry **p = &o->head; *p; p = &(*p)->next)
		if (*p == x) {
			*p = x->next;
			return;
		}
}

/* The next saga ready to run, marked running; NULL when stopping. */
static struct entry *take(struct hf__orch *o)
{
	pthread_mutex_lock(&o->lock);
	for (;;) {
		if (o->stop) {
			pthread_mutex_unlock(&o->lock);
			return NULL;
		}
		int64_t now = hf__mono_ms(), soonest = INT64_MAX;
		for (struct entry *e = o->head; e; e = e->next) {
			if (e->running)
				continue;
			if (e->not_before <= now) {
				e->running = true;
				e->again = false;
				pthread_mutex_unlock(&o->lock);
				return e;
			}
			if (e->not_before < soonest)
				soonest = e->not_before;
		}
		if (soonest == INT64_MAX) {
			pthread_cond_wait(&o->wake, &o->lock);
		} else {
			struct timespec ts;
			hf__timespec_in_ms(&ts, CLOCK_REALTIME, soonest - now);
			pthread_cond_timedwait(&o->wake, &o->lock, &ts);
		}
	}
}

/* One logfmt line on stderr, as holdfastd writes them: the library has no logger. */
static void log_paused(const char *id, const char *error)
{
	char q[HF_MESSAGE_MAX];
	size_t o = 0;
	for (const char *c = error; *c && o + 1 < sizeof(q); c++)
		q[o++] = *c == '"' ? '\'' : (unsigned char)*c < 0x20 ? '?' : *c;
	q[o] = 0;
	struct timespec ts;
	struct tm tm;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	fprintf(stderr,
	        "ts=%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ level=warn msg=\"saga paused, retried in "
	        "%d ms\" saga=%s error=\"%s\"\n",
	        tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
	        ts.tv_nsec / 1000000, RETRY_AFTER_MS, id, q);
}

static void *worker(void *arg)
{
	struct hf__orch *o = arg;
	hf__thread_name("hf-saga");
	struct entry *e;
	while ((e = take(o))) {
		hf_error err = {0};
		int rc = hf__saga_run(o->store, e->id, &o->stop, &err);
		if (rc != HF_OK && rc != HF_ECANCELED && rc != HF_ENOSAGA)
			log_paused(e->id, err.message);
		pthread_mutex_lock(&o->lock);
		e->running = false;
		if (rc != HF_OK && rc != HF_ECANCELED && rc != HF_ENOSAGA) {
			e->not_before = hf__mono_ms() + RETRY_AFTER_MS;
		} else if (e->again) {
			e->not_before = 0;
		} else {
			unlink_entry(o, e);
			free(e);
		}
		pthread_cond_broadcast(&o->wake);
		pthread_mutex_unlock(&o->lock);
	}
	hf__saga_run_thread_end();
	return NULL;
}

/* Queues every saga in `state` (`unowned`: only those whose owner's lease ran out), page by
 * page. */
static int queue_state(struct hf__orch *o, const char *state, bool unowned, hf_error *err)
{
	char filter[64], cursor[HF_ID_LEN + 1] = "";
	snprintf(filter, sizeof(filter), "{\"state\":\"%s\"%s}", state,
	         unowned ? ",\"unowned\":true" : "");
	for (;;) {
		hf_request req;
		hf_reply *reply;
		hf_request_init(&req, HF_OP_SAGA_LIST);
		req.json = filter;
		req.cursor = cursor[0] ? cursor : NULL;
		req.limit = HF_LIST_MAX;
		int rc = hf_call(o->store, &req, &reply);
		if (rc != HF_OK) {
			hf__err(err, rc, "resuming sagas: %s", reply ? reply->error.message : "out of memory");
			hf_reply_free(reply);
			return rc;
		}
		json_t *ans = json_loads(reply->json, 0, NULL), *items = json_object_get(ans, "items");
		bool more = reply->more;
		hf_reply_free(reply);
		pthread_mutex_lock(&o->lock);
		for (size_t i = 0; i < json_array_size(items); i++) {
			const char *id = json_string_value(json_object_get(json_array_get(items, i), "id"));
			if (id) {
				wake_locked(o, id, 0);
				snprintf(cursor, sizeof(cursor), "%s", id);
			}
		}
		pthread_mutex_unlock(&o->lock);
		json_decref(ans);
		if (!more)
			return HF_OK;
	}
}

/* Only on engines whose instances share sagas: the takeover watch of docs/sagas.md. */
static void *rescanner(void *arg)
{
	struct hf__orch *o = arg;
	hf__thread_name("hf-saga-scan");
	pthread_mutex_lock(&o->lock);
	while (!o->stop) {
		/* o->wake is broadcast for every saga's change: wait out the whole period. */
		int64_t at = hf__mono_ms() + RESCAN_MS;
		for (int64_t left; !o->stop && (left = at - hf__mono_ms()) > 0;) {
			struct timespec ts;
			hf__timespec_in_ms(&ts, CLOCK_REALTIME, left);
			pthread_cond_timedwait(&o->wake, &o->lock, &ts);
		}
		if (o->stop)
			break;
		pthread_mutex_unlock(&o->lock);
		hf_error err; /* a failed rescan is tried again at the next */
		if (queue_state(o, "running", true, &err) == HF_OK)
			queue_state(o, "compensating", true, &err);
		pthread_mutex_lock(&o->lock);
	}
	pthread_mutex_unlock(&o->lock);
	return NULL;
}

int hf__orch_start(hf_store *store, bool shared, struct hf__orch **out, hf_error *err)
{
	*out = NULL;
	struct hf__orch *o = calloc(1, sizeof(*o));
	if (!o)
		return hf__err_code(err, HF_ENOMEM);
	o->store = store;
	pthread_mutex_init(&o->lock, NULL);
	pthread_cond_init(&o->wake, NULL);
	int rc;
	/* The check at open: an unfinished saga (a restart's, or another instance's) starts the
	 * workers; none leaves the store without saga threads until one is started. */
	if ((rc = queue_state(o, "running", false, err)) ||
	    (rc = queue_state(o, "compensating", false, err))) {
		hf__orch_stop(o);
		return rc;
	}
	pthread_mutex_lock(&o->lock);
	bool failed = o->start_failed;
	pthread_mutex_unlock(&o->lock);
	if (!failed && shared) {
		o->rescanning = pthread_create(&o->rescanner, NULL, rescanner, o) == 0;
		failed = !o->rescanning;
	}
	if (failed) {
		hf__orch_stop(o);
		return hf__err(err, HF_EINTERNAL, "cannot start the saga threads");
	}
	*out = o;
	return HF_OK;
}

void hf__orch_stop(struct hf__orch *o)
{
	if (!o)
		return;
	pthread_mutex_lock(&o->lock);
	o->stop = true; /* no worker starts after this */
	size_t n = o->n_threads;
	pthread_cond_broadcast(&o->wake);
	pthread_mutex_unlock(&o->lock);
	for (size_t i = 0; i < n; i++)
		pthread_join(o->threads[i], NULL);
	if (o->rescanning)
		pthread_join(o->rescanner, NULL);
	while (o->head) {
		struct entry *e = o->head;
		o->head = e->next;
		free(e);
	}
	pthread_cond_destroy(&o->wake);
	pthread_mutex_destroy(&o->lock);
	free(o);
}
