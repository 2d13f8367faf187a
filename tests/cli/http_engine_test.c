/*
 * http_engine_test.c — the http:// engine through the public API against a real holdfastd:
 * resources, holds, tokens, waits and their cancellation, events, concurrency, close with
 * parked calls, and an unreachable server. Usage: http_engine_test PATH/TO/holdfastd
 */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "holdfast.h"

static int failures;
static char url[64];
static pid_t server_pid = -1;
static char tmpdir[] = "/tmp/hf-http-test-XXXXXX";

#define CHECK(cond)                                                                        \
	do {                                                                                   \
		if (!(cond)) {                                                                     \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);       \
			failures++;                                                                    \
		}                                                                                  \
	} while (0)

#define CHECK_RC(rc, want, err)                                                            \
	do {                                                                                   \
		int rc_ = (rc);                                                                    \
		if (rc_ != (want)) {                                                               \
			fprintf(stderr, "%s:%d: got %s (%s), want %s\n", __FILE__, __LINE__,           \
			        hf_err_name(rc_), msg_of(err), hf_err_name(want));     \
			failures++;                                                                    \
		}                                                                                  \
	} while (0)

static const char *msg_of(const hf_error *err)
{
	return err ? err->message : "";
}

static void sleep_ms(int ms)
{
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

static int64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A loopback port nobody listens on right now. */
static int free_port(void)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t sl = sizeof(sa);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 ||
	    getsockname(fd, (struct sockaddr *)&sa, &sl) != 0) {
		perror("free_port");
		exit(2);
	}
	close(fd);
	return ntohs(sa.sin_port);
}

static bool can_connect(int port)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
	                         .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	bool ok = fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
	if (fd >= 0)
		close(fd);
	return ok;
}

static void stop_server(void)
{
	if (server_pid > 0) {
		kill(server_pid, SIGTERM);
		waitpid(server_pid, NULL, 0);
		server_pid = -1;
	}
}

static void start_server(const char *holdfastd)
{
	if (!mkdtemp(tmpdir)) {
		perror("mkdtemp");
		exit(2);
	}
	for (int attempt = 0; attempt < 5; attempt++) {
		int port = free_port();
		char listen[32], engine[128];
		snprintf(listen, sizeof(listen), "127.0.0.1:%d", port);
		snprintf(engine, sizeof(engine), "file:%s/holdfast.db", tmpdir);
		server_pid = fork();
		if (server_pid == 0) {
			execl(holdfastd, holdfastd, "--listen", listen, "--engine", engine, "--log-level",
			      "warn", (char *)NULL);
			perror("exec holdfastd");
			_exit(127);
		}
		for (int i = 0; i < 200; i++) {
			if (can_connect(port)) {
				snprintf(url, sizeof(url), "http://127.0.0.1:%d", port);
				return;
			}
			if (waitpid(server_pid, NULL, WNOHANG) == server_pid)
				break;
			sleep_ms(50);
		}
		stop_server();
	}
	fprintf(stderr, "holdfastd did not start\n");
	exit(2);
}

static hf_store *open_store(void)
{
	hf_store *s = NULL;
	hf_error err;
	int rc = hf_open(url, NULL, &s, &err);
	CHECK_RC(rc, HF_OK, &err);
	if (!s)
		exit(1);
	CHECK(strcmp(hf_store_scheme(s), "http") == 0);
	return s;
}

static hf_acquire_req lock_req(const char *owner, const hf_claim *claim, int64_t wait_ms)
{
	return (hf_acquire_req){.owner = owner, .claims = claim, .n_claims = 1, .ttl_ms = 30000,
	                        .wait_ms = wait_ms, .mode = HF_MODE_UNITS};
}

/* ---- Resources. -------------------------------------------------------------------- */

static void test_resources(hf_store *s)
{
	hf_request req;
	hf_reply *reply;
	const char *name = "seat 12A/ü?&#%"; /* every character that needs encoding in a path */

	hf_request_init(&req, HF_OP_PUT_RESOURCE);
	req.name = name;
	req.capacity = 1;
	req.meta = "{\"row\":12}";
	CHECK_RC(hf_call(s, &req, &reply), HF_OK, &reply->error);
	CHECK(reply->resource && strcmp(reply->resource->name, name) == 0);
	CHECK(reply->resource && reply->resource->version == 1 && reply->resource->declared);
	CHECK(reply->resource && reply->resource->meta && strstr(reply->resource->meta, "\"row\""));
	hf_reply_free(reply);

	/* Create-only on an existing one, and a stale If-Match: version conflicts. */
	req.if_version = 0;
	CHECK_RC(hf_call(s, &req, &reply), HF_EVERSION, &reply->error);
	hf_reply_free(reply);
	req.if_version = 7;
	CHECK_RC(hf_call(s, &req, &reply), HF_EVERSION, &reply->error);
	hf_reply_free(reply);
	req.if_version = 1;
	req.capacity = 2;
	CHECK_RC(hf_call(s, &req, &reply), HF_OK, &reply->error);
	CHECK(reply->resource && reply->resource->version == 2 && reply->resource->capacity == 2);
	hf_reply_free(reply);

	hf_request_init(&req, HF_OP_GET_RESOURCE);
	req.name = name;
	CHECK_RC(hf_call(s, &req, &reply), HF_OK, &reply->error);
	CHECK(reply->resource && reply->resource->capacity == 2);
	hf_reply_free(reply);

	req.name = "no-such-resource";
	CHECK_RC(hf_call(s, &req, &reply), HF_ENORESOURCE, &reply->error);
	CHECK(!reply->resource);
	hf_reply_free(reply);

	/* A list, paged by cursor. */
	for (int i = 0; i < 3; i++) {
		char n[16];
		snprintf(n, sizeof(n), "page-%d", i);
		hf_request_init(&req, HF_OP_PUT_RESOURCE);
		req.name = n;
		req.capacity = 1;
		CHECK_RC(hf_call(s, &req, &reply), HF_OK, &reply->error);
		hf_reply_free(reply);
	}
	hf_request_init(&req, HF_OP_LIST_RESOURCES);
	req.limit = 2;
	CHECK_RC(hf_call(s, &req, &reply), HF_OK, &reply->error);
	CHECK(reply->n_resources == 2 && reply->more);
	char cursor[64] = "";
	if (reply->n_resources == 2)
		snprintf(cursor, sizeof(cursor), "%s", reply->resources[1].name);
	hf_reply_free(reply);
	req.cursor = cursor;
	req.limit = 100;
	CHECK_RC(hf_call(s, &req, &reply), HF_OK, &reply->error);
	CHECK(reply->n_resources == 2 && !reply->more); /* 4 in all */
	hf_reply_free(reply);

	/* Delete: with a stale version, then for real; it answers the resource as it was. */
	hf_request_init(&req, HF_OP_DELETE_RESOURCE);
	req.name = "page-0";
	req.if_version = 5;
	CHECK_RC(hf_call(s, &req, &reply), HF_EVERSION, &reply->error);
	hf_reply_free(reply);
	req.if_version = -1;
	CHECK_RC(hf_call(s, &req, &reply), HF_OK, &reply->error);
	hf_reply_free(reply);
	CHECK_RC(hf_call(s, &req, &reply), HF_ENORESOURCE, &reply->error);
	hf_reply_free(reply);
}

/* ---- Holds. ------------------------------------------------------------------------ */

static void test_holds(hf_store *s)
{
	hf_error err;
	hf_hold *h1 = NULL, *h2 = NULL, *h = NULL;
	hf_claim seat = {.name = "seat-1", .units = 1, .capacity = 0};
	hf_request req;
	hf_reply *reply;

	hf_request_init(&req, HF_OP_PUT_RESOURCE);
	req.name = "seat-1";
	req.capacity = 1;
	CHECK_RC(hf_call(s, &req, &reply), HF_OK, &reply->error);
	hf_reply_free(reply);

	hf_acquire_req a = lock_req("alice", &seat, 0);
	a.idempotency_key = "order-1";
	CHECK_RC(hf_acquire(s, &a, &h1, &err), HF_OK, &err);
	if (!h1)
		return;
	CHECK(strlen(h1->id) == HF_ID_LEN && strlen(h1->token) == HF_TOKEN_LEN);
	CHECK(h1->state == HF_HOLD_TENTATIVE && h1->n_parts == 1 && h1->parts[0].fence > 0);
	CHECK(h1->expires_at_ms > 0 && !h1->replayed);

	/* The same idempotency key replays the first outcome. */
	CHECK_RC(hf_acquire(s, &a, &h, &err), HF_OK, &err);
	CHECK(h && h->replayed && strcmp(h->id, h1->id) == 0 && strcmp(h->token, h1->token) == 0);
	hf_hold_free(h);
	h = NULL;

	/* NOWAIT on a held seat; a short wait times out; too many units never fit. */
	hf_acquire_req b = lock_req("bob", &seat, 0);
	CHECK_RC(hf_acquire(s, &b, &h2, &err), HF_EUNAVAILABLE, &err);
	b.wait_ms = 200;
	int64_t t0 = mono_ms();
	CHECK_RC(hf_acquire(s, &b, &h2, &err), HF_ETIMEDOUT, &err);
	CHECK(mono_ms() - t0 >= 150);
	hf_claim two = {.name = "seat-1", .units = 2};
	hf_acquire_req c = lock_req("carol", &two, 0);
	CHECK_RC(hf_acquire(s, &c, &h2, &err), HF_ECAPACITY, &err);
	hf_claim ghost = {.name = "ghost", .units = 1};
	hf_acquire_req d = lock_req("dave", &ghost, 0);
	CHECK_RC(hf_acquire(s, &d, &h2, &err), HF_ENORESOURCE, &err);

	/* Extend with a wrong token, then the right one; confirm; read it back without token. */
	const char *wrong = "00000000000000000000000000000000";
	CHECK_RC(hf_extend(s, h1->id, wrong, 60000, &h, &err), HF_ETOKEN, &err);
	CHECK_RC(hf_extend(s, h1->id, h1->token, 60000, &h, &err), HF_OK, &err);
	CHECK(h && h->expires_at_ms >= h1->expires_at_ms && h->token[0] == '\0');
	hf_hold_free(h);
	h = NULL;
	CHECK_RC(hf_confirm(s, h1->id, h1->token, &h, &err), HF_OK, &err);
	CHECK(h && h->state == HF_HOLD_CONFIRMED);
	hf_hold_free(h);
	h = NULL;

	hf_request_init(&req, HF_OP_GET_HOLD);
	req.hold_id = h1->id;
	CHECK_RC(hf_call(s, &req, &reply), HF_OK, &reply->error);
	CHECK(reply->hold && reply->hold->state == HF_HOLD_CONFIRMED && reply->hold->token[0] == '\0');
	CHECK(reply->hold && strcmp(reply->hold->owner, "alice") == 0);
	hf_reply_free(reply);
	req.hold_id = "0123456789abcdef0123456789abcdef";
	CHECK_RC(hf_call(s, &req, &reply), HF_ENOHOLD, &reply->error);
	hf_reply_free(reply);

	hf_request_init(&req, HF_OP_LIST_HOLDS);
	req.owner = "alice";
	req.state = HF_HOLD_CONFIRMED;
	CHECK_RC(hf_call(s, &req, &reply), HF_OK, &reply->error);
	CHECK(reply->n_holds == 1 && reply->n_holds == 1 && strcmp(reply->holds[0].id, h1->id) == 0);
	hf_reply_free(reply);

	/* Release; a second release finds it ended. The seat is free again, with a higher fence. */
	CHECK_RC(hf_release(s, h1->id, h1->token, &h, &err), HF_OK, &err);
	CHECK(h && h->state == HF_HOLD_RELEASED);
	hf_hold_free(h);
	h = NULL;
	CHECK_RC(hf_release(s, h1->id, h1->token, NULL, &err), HF_EENDED, &err);
	b.wait_ms = 0;
	CHECK_RC(hf_acquire(s, &b, &h2, &err), HF_OK, &err);
	CHECK(h2 && h2->parts[0].fence > h1->parts[0].fence);

	/* Shared and exclusive modes on an implicit resource. */
	hf_claim rw = {.name = "rw-lock", .capacity = 4};
	hf_acquire_req r = lock_req("reader", &rw, 0);
	r.mode = HF_MODE_SHARED;
	hf_hold *rh = NULL, *wh = NULL;
	CHECK_RC(hf_acquire(s, &r, &rh, &err), HF_OK, &err);
	CHECK(rh && rh->parts[0].units == 1 && rh->mode == HF_MODE_SHARED);
	hf_acquire_req w = lock_req("writer", &rw, 0);
	w.mode = HF_MODE_EXCLUSIVE;
	CHECK_RC(hf_acquire(s, &w, &wh, &err), HF_EUNAVAILABLE, &err);
	if (rh)
		CHECK_RC(hf_release(s, rh->id, rh->token, NULL, &err), HF_OK, &err);
	CHECK_RC(hf_acquire(s, &w, &wh, &err), HF_OK, &err);
	CHECK(wh && wh->parts[0].units == 4);
	if (wh)
		CHECK_RC(hf_release(s, wh->id, wh->token, NULL, &err), HF_OK, &err);
	hf_hold_free(rh);
	hf_hold_free(wh);

	if (h2)
		CHECK_RC(hf_release(s, h2->id, h2->token, NULL, &err), HF_OK, &err);
	hf_hold_free(h1);
	hf_hold_free(h2);
}

/* ---- Asynchronous calls: parked waits, cancel, close. --------------------------------- */

struct done {
	hf_reply *reply;
	int calls;
};

static void on_done(void *arg, hf_reply *reply)
{
	struct done *d = arg;
	d->reply = reply;
	d->calls++;
}

/* Dispatches completions until `d` has its reply or `ms` pass. */
static bool wait_done(hf_store *s, struct done *d, int ms)
{
	int64_t end = mono_ms() + ms;
	while (!d->calls && mono_ms() < end) {
		fd_set rd;
		FD_ZERO(&rd);
		FD_SET(hf_store_fd(s), &rd);
		struct timeval tv = {.tv_sec = 0, .tv_usec = 50000};
		select(hf_store_fd(s) + 1, &rd, NULL, NULL, &tv);
		hf_store_dispatch(s);
	}
	return d->calls == 1;
}

static int64_t waiters_of(hf_store *s, const char *name)
{
	hf_request req;
	hf_reply *reply;
	hf_request_init(&req, HF_OP_GET_RESOURCE);
	req.name = name;
	int64_t n = -1;
	if (hf_call(s, &req, &reply) == HF_OK)
		n = reply->resource->waiters;
	hf_reply_free(reply);
	return n;
}

static void test_waits(hf_store *s)
{
	hf_error err;
	hf_hold *holder = NULL;
	hf_claim lock = {.name = "wait-lock", .units = 1, .capacity = 1};
	hf_acquire_req a = lock_req("holder", &lock, 0);
	CHECK_RC(hf_acquire(s, &a, &holder, &err), HF_OK, &err);
	if (!holder)
		return;

	/* A parked acquire, cancelled: it ends with HF_ECANCELED at once and the server stops
	 * waiting (the waiter count drops back to 0). */
	hf_request req;
	hf_request_init(&req, HF_OP_ACQUIRE);
	req.acquire = lock_req("waiter", &lock, 20000);
	struct done d = {0};
	uint64_t id;
	CHECK_RC(hf_submit(s, &req, on_done, &d, &id, &err), HF_OK, &err);
	int64_t deadline = mono_ms() + 3000;
	while (waiters_of(s, "wait-lock") != 1 && mono_ms() < deadline)
		sleep_ms(20);
	CHECK(waiters_of(s, "wait-lock") == 1);
	int64_t t0 = mono_ms();
	hf_cancel(s, id);
	CHECK(wait_done(s, &d, 3000));
	CHECK(mono_ms() - t0 < 2000);
	CHECK(d.reply && d.reply->error.code == HF_ECANCELED && !d.reply->hold);
	hf_reply_free(d.reply);
	deadline = mono_ms() + 3000;
	while (waiters_of(s, "wait-lock") != 0 && mono_ms() < deadline)
		sleep_ms(20);
	CHECK(waiters_of(s, "wait-lock") == 0);
	hf_cancel(s, id); /* already completed: left alone */

	/* A parked acquire granted when the holder releases. */
	d = (struct done){0};
	CHECK_RC(hf_submit(s, &req, on_done, &d, &id, &err), HF_OK, &err);
	deadline = mono_ms() + 3000;
	while (waiters_of(s, "wait-lock") != 1 && mono_ms() < deadline)
		sleep_ms(20);
	CHECK_RC(hf_release(s, holder->id, holder->token, NULL, &err), HF_OK, &err);
	CHECK(wait_done(s, &d, 5000));
	CHECK(d.reply && d.reply->error.code == HF_OK && d.reply->hold &&
	      d.reply->hold->parts[0].fence > holder->parts[0].fence);
	if (d.reply && d.reply->hold)
		CHECK_RC(hf_release(s, d.reply->hold->id, d.reply->hold->token, NULL, &err), HF_OK, &err);
	hf_reply_free(d.reply);
	hf_hold_free(holder);
}

static void test_events(hf_store *s)
{
	hf_request req;
	hf_reply *reply;
	hf_error err;
	hf_request_init(&req, HF_OP_READ_EVENTS);
	req.after = 0;
	req.limit = 1000;
	CHECK_RC(hf_call(s, &req, &reply), HF_OK, &reply->error);
	CHECK(reply->n_events > 0 && reply->last_seq >= reply->events[reply->n_events - 1].seq);
	CHECK(reply->n_events > 0 && reply->events[0].seq == 1 && reply->events[0].type);
	for (size_t i = 1; i < reply->n_events; i++)
		CHECK(reply->events[i].seq == reply->events[i - 1].seq + 1);
	uint64_t last = reply->last_seq;
	hf_reply_free(reply);

	/* A long-poll answered by the next change. */
	req.after = last;
	req.wait_ms = 10000;
	struct done d = {0};
	uint64_t id;
	CHECK_RC(hf_submit(s, &req, on_done, &d, &id, &err), HF_OK, &err);
	sleep_ms(200);
	hf_request put;
	hf_request_init(&put, HF_OP_PUT_RESOURCE);
	put.name = "event-maker";
	put.capacity = 3;
	CHECK_RC(hf_call(s, &put, &reply), HF_OK, &reply->error);
	hf_reply_free(reply);
	CHECK(wait_done(s, &d, 5000));
	CHECK(d.reply && d.reply->error.code == HF_OK && d.reply->n_events >= 1);
	CHECK(d.reply && d.reply->n_events >= 1 && d.reply->events[0].seq == last + 1 &&
	      strcmp(d.reply->events[0].type, "resource.created") == 0 &&
	      d.reply->events[0].resource && strcmp(d.reply->events[0].resource, "event-maker") == 0);
	uint64_t newest = d.reply ? d.reply->last_seq : last;
	hf_reply_free(d.reply);

	/* A long-poll cancelled. */
	req.after = newest;
	d = (struct done){0};
	CHECK_RC(hf_submit(s, &req, on_done, &d, &id, &err), HF_OK, &err);
	sleep_ms(100);
	hf_cancel(s, id);
	CHECK(wait_done(s, &d, 3000));
	CHECK(d.reply && d.reply->error.code == HF_ECANCELED);
	hf_reply_free(d.reply);
}

/* Many threads at once through one store: a semaphore of 3 never has 4 holders. */
#define N_THREADS 8
#define N_ROUNDS 25

struct worker {
	hf_store *store;
	int index;
	int granted;
	int errors;
};

static int live_holders;
static int max_live;
static pthread_mutex_t live_lock = PTHREAD_MUTEX_INITIALIZER;

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	char owner[32];
	snprintf(owner, sizeof(owner), "worker-%d", w->index);
	hf_claim sem = {.name = "sem-3", .units = 1, .capacity = 3};
	hf_acquire_req a = lock_req(owner, &sem, 5000);
	for (int i = 0; i < N_ROUNDS; i++) {
		hf_hold *h = NULL;
		hf_error err;
		int rc = hf_acquire(w->store, &a, &h, &err);
		if (rc != HF_OK) {
			fprintf(stderr, "worker %d: acquire: %s: %s\n", w->index, hf_err_name(rc), err.message);
			w->errors++;
			continue;
		}
		pthread_mutex_lock(&live_lock);
		if (++live_holders > max_live)
			max_live = live_holders;
		pthread_mutex_unlock(&live_lock);
		w->granted++;
		pthread_mutex_lock(&live_lock);
		live_holders--;
		pthread_mutex_unlock(&live_lock);
		rc = hf_release(w->store, h->id, h->token, NULL, &err);
		if (rc != HF_OK) {
			fprintf(stderr, "worker %d: release: %s: %s\n", w->index, hf_err_name(rc), err.message);
			w->errors++;
		}
		hf_hold_free(h);
	}
	return NULL;
}

static void test_threads(hf_store *s)
{
	pthread_t t[N_THREADS];
	struct worker w[N_THREADS];
	for (int i = 0; i < N_THREADS; i++) {
		w[i] = (struct worker){.store = s, .index = i};
		pthread_create(&t[i], NULL, worker_main, &w[i]);
	}
	int granted = 0, errors = 0;
	for (int i = 0; i < N_THREADS; i++) {
		pthread_join(t[i], NULL);
		granted += w[i].granted;
		errors += w[i].errors;
	}
	CHECK(errors == 0);
	CHECK(granted == N_THREADS * N_ROUNDS);
	CHECK(max_live <= 3);
}

/* hf_close with a parked wait: its callback runs once, with HF_ECLOSED. */
static void test_close_with_parked_wait(void)
{
	hf_store *s = open_store();
	hf_store *other = open_store();
	hf_error err;
	hf_hold *holder = NULL;
	hf_claim lock = {.name = "close-lock", .units = 1, .capacity = 1};
	hf_acquire_req a = lock_req("holder", &lock, 0);
	CHECK_RC(hf_acquire(other, &a, &holder, &err), HF_OK, &err);
	hf_request req;
	hf_request_init(&req, HF_OP_ACQUIRE);
	req.acquire = lock_req("waiter", &lock, 30000);
	struct done d = {0};
	CHECK_RC(hf_submit(s, &req, on_done, &d, NULL, &err), HF_OK, &err);
	int64_t deadline = mono_ms() + 3000;
	while (waiters_of(other, "close-lock") != 1 && mono_ms() < deadline)
		sleep_ms(20);
	int64_t t0 = mono_ms();
	hf_close(s);
	CHECK(mono_ms() - t0 < 2000);
	CHECK(d.calls == 1 && d.reply && d.reply->error.code == HF_ECLOSED);
	hf_reply_free(d.reply);
	deadline = mono_ms() + 3000;
	while (waiters_of(other, "close-lock") != 0 && mono_ms() < deadline)
		sleep_ms(20);
	CHECK(waiters_of(other, "close-lock") == 0);
	if (holder)
		CHECK_RC(hf_release(other, holder->id, holder->token, NULL, &err), HF_OK, &err);
	hf_hold_free(holder);
	hf_close(other);
}

/* Established TCP connections from this host to `port` (both ends are local: count the
 * client side, whose remote port is the server's). */
static int connections_to(int port)
{
	FILE *f = fopen("/proc/net/tcp", "r");
	char line[512];
	int n = 0;
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		unsigned lport, rport, st;
		if (sscanf(line, " %*d: %*x:%x %*x:%x %x", &lport, &rport, &st) == 3 &&
		    (int)rport == port && st == 1)
			n++;
	}
	fclose(f);
	return n;
}

/* Sequential calls share one keep-alive connection instead of one each. */
static void test_keepalive(void)
{
	hf_store *s = open_store();
	int port = atoi(strrchr(url, ':') + 1);
	hf_request req;
	hf_reply *reply;
	hf_request_init(&req, HF_OP_LIST_RESOURCES);
	for (int i = 0; i < 50; i++) {
		CHECK_RC(hf_call(s, &req, &reply), HF_OK, &reply->error);
		hf_reply_free(reply);
	}
	int n = connections_to(port);
	if (n >= 0)
		CHECK(n == 1);
	hf_close(s);
}

/* ---- Failures of the engine itself. ------------------------------------------------------ */

static void test_unreachable(void)
{
	hf_store *s = NULL;
	hf_error err;
	int port = free_port(); /* nobody listens there */
	char u[64];
	snprintf(u, sizeof(u), "http://127.0.0.1:%d", port);
	CHECK_RC(hf_open(u, NULL, &s, &err), HF_OK, &err);
	if (!s)
		return;
	hf_claim lock = {.name = "x", .units = 1, .capacity = 1};
	hf_acquire_req a = lock_req("nobody", &lock, 0);
	hf_hold *h = NULL;
	CHECK_RC(hf_acquire(s, &a, &h, &err), HF_EENGINE, &err);
	char where[32];
	snprintf(where, sizeof(where), "127.0.0.1:%d", port);
	CHECK(strstr(err.message, where) != NULL);
	CHECK(strstr(err.message, "refused") != NULL);
	fprintf(stderr, "unreachable: %s\n", err.message);
	hf_close(s);

	const char *bad[] = {"http://", "http://host:99999", "http://host:1/prefix", "http://h/?q=1"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		s = NULL;
		CHECK_RC(hf_open(bad[i], NULL, &s, &err), HF_EINVAL, &err);
		CHECK(s == NULL);
	}
}

/* The server going away under a client that had a keep-alive connection. */
static void test_server_gone(const char *holdfastd)
{
	(void)holdfastd;
	hf_store *s = open_store();
	hf_request req;
	hf_reply *reply;
	hf_request_init(&req, HF_OP_LIST_RESOURCES);
	CHECK_RC(hf_call(s, &req, &reply), HF_OK, &reply->error);
	hf_reply_free(reply);
	stop_server();
	CHECK_RC(hf_call(s, &req, &reply), HF_EENGINE, &reply->error);
	hf_reply_free(reply);
	hf_close(s);
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: %s PATH/TO/holdfastd\n", argv[0]);
		return 2;
	}
	start_server(argv[1]);
	hf_store *s = open_store();
	test_resources(s);
	test_holds(s);
	test_waits(s);
	test_events(s);
	test_threads(s);
	hf_close(s);
	test_close_with_parked_wait();
	test_keepalive();
	test_unreachable();
	test_server_gone(argv[1]);
	stop_server();
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", tmpdir);
	if (failures) {
		fprintf(stderr, "%d check(s) failed\n", failures);
		return 1;
	}
	printf("http engine: all checks passed\n");
	return 0;
}
