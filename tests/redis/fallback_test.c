/*
 * fallback_test.c — hf_options.fallback_url with a redis:// primary and a file: fallback:
 * the primary killed → acquires go to the fallback (fences from 2^48, a log line), calls on
 * the primary's holds say the primary is unreachable; the primary back → new calls go to it,
 * and the holds taken on the fallback are still reached there; and, inside one store, a name
 * held on the fallback is not granted again on the primary that came back until that hold
 * ends (released, or expired). Runs under with_redis.sh.
 */
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include "holdfast.h"
#include "check.h"

#define BASE (INT64_C(1) << 48)

static int port;
static const char *dir;

static bool answers(void)
{
	struct timeval tv = {1, 0};
	redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
	bool ok = c && !c->err;
	if (c)
		redisFree(c);
	return ok;
}

static void kill_server(void)
{
	char path[600];
	snprintf(path, sizeof(path), "%s/%d.pid", dir, port);
	FILE *f = fopen(path, "r");
	int pid = 0;
	if (f) {
		if (fscanf(f, "%d", &pid) != 1)
			pid = 0;
		fclose(f);
	}
	if (pid > 0)
		kill(pid, SIGKILL);
	for (int i = 0; i < 100 && answers(); i++)
		sleep_ms(20);
	unlink(path);
}

static void start_server(void)
{
	char cmd[700];
	snprintf(cmd, sizeof(cmd), "redis-server %s/%d.conf", dir, port);
	if (system(cmd) != 0)
		fprintf(stderr, "could not run: %s\n", cmd);
	for (int i = 0; i < 200 && !answers(); i++)
		sleep_ms(20);
}

static int take_ttl(hf_store *st, const char *name, int64_t ttl_ms, hf_hold **out,
                    hf_error *err)
{
	hf_claim c = {.name = name, .units = 1, .capacity = 1};
	hf_acquire_req req = {.owner = "fallback-test", .claims = &c, .n_claims = 1,
	                      .ttl_ms = ttl_ms, .mode = HF_MODE_EXCLUSIVE};
	return hf_acquire(st, &req, out, err);
}

static int take(hf_store *st, const char *name, hf_hold **out, hf_error *err)
{
	return take_ttl(st, name, 60000, out, err);
}

/* The library's log lines go to stderr: catch them in a file to check them. */
static char logpath[600];
static int saved_stderr = -1;

static void capture_stderr(void)
{
	snprintf(logpath, sizeof(logpath), "%s/fallback.log", dir);
	int fd = open(logpath, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	fflush(stderr);
	saved_stderr = dup(2);
	dup2(fd, 2);
	close(fd);
}

static bool log_has(const char *what)
{
	fflush(stderr);
	FILE *f = fopen(logpath, "r");
	char line[2048];
	bool found = false;
	while (f && !found && fgets(line, sizeof(line), f))
		found = strstr(line, what) != NULL;
	if (f)
		fclose(f);
	return found;
}

/* Threads that take and release locks of their own through the switch. */
static atomic_bool stop;
static atomic_int acquire_failures, releases_lost, cycles;

static void *churn(void *arg)
{
	hf_store *st = arg;
	char name[32];
	snprintf(name, sizeof(name), "churn-%p", (void *)&name);
	while (!atomic_load(&stop)) {
		hf_hold *h = NULL, *r = NULL;
		hf_error err;
		if (take(st, name, &h, &err) != HF_OK) {
			atomic_fetch_add(&acquire_failures, 1);
			fprintf(stderr, "churn acquire: %s\n", err.message);
			continue;
		}
		int rc = hf_release(st, h->id, h->token, &r, &err);
		if (rc == HF_EENGINE) /* taken on the primary just before it died: lost with it */
			atomic_fetch_add(&releases_lost, 1);
		else if (rc != HF_OK)
			fprintf(stderr, "churn release: %s %s\n", hf_err_name(rc), err.message);
		hf_hold_free(h);
		hf_hold_free(r);
		atomic_fetch_add(&cycles, 1);
	}
	return NULL;
}

static void on_done(void *arg, hf_reply *reply)
{
	*(int *)arg = reply->error.code;
	hf_reply_free(reply);
}

static void run(void)
{
	char url[128], furl[700];
	snprintf(url, sizeof(url), "redis://127.0.0.1:%d?prefix=fbt:", port);
	snprintf(furl, sizeof(furl), "file:%s/fallback.db", dir);
	hf_options opt;
	hf_options_init(&opt);
	opt.fallback_url = furl;
	hf_store *st = NULL;
	hf_error err;
	capture_stderr();
	CHECK(hf_open(url, &opt, &st, &err) == HF_OK, "%s", err.message);
	CHECK(strcmp(hf_store_scheme(st), "fallback") == 0, "scheme %s", hf_store_scheme(st));
	CHECK(log_has("msg=engine_fallback_ready"), "no ready line");

	hf_hold *a = NULL, *b = NULL, *c = NULL, *d = NULL, *x = NULL;
	CHECK(take(st, "A", &a, &err) == HF_OK, "%s", err.message);
	CHECK(a->parts[0].fence < BASE, "primary fence %lld", (long long)a->parts[0].fence);
	printf("primary up: A granted by redis, fence %lld\n", (long long)a->parts[0].fence);

	kill_server();
	CHECK(take(st, "B", &b, &err) == HF_OK, "with the primary down: %s", err.message);
	CHECK(b->parts[0].fence > BASE, "fallback fence %lld", (long long)b->parts[0].fence);
	CHECK(log_has("msg=engine_fallback_on"), "no log line for the switch");
	printf("primary killed: B granted by the fallback, fence %lld (2^48 + %lld)\n",
	       (long long)b->parts[0].fence, (long long)(b->parts[0].fence - BASE));
	int rc = take(st, "B", NULL, &err);
	CHECK(rc == HF_EUNAVAILABLE, "the fallback's own exclusion: %s", hf_err_name(rc));
	CHECK(hf_extend(st, b->id, b->token, 60000, &x, &err) == HF_OK, "extend B: %s", err.message);
	CHECK(x->parts[0].fence == b->parts[0].fence, "extend shows fence %lld", (long long)x->parts[0].fence);
	hf_hold_free(x);
	x = NULL;
	rc = hf_release(st, a->id, a->token, NULL, &err);
	CHECK(rc == HF_EENGINE, "release of the primary's hold while it is down: %s %s",
	      hf_err_name(rc), err.message);
	printf("the primary's hold A while it is down: %s (%s)\n", hf_err_name(rc), err.message);
	hf_request q;
	hf_request_init(&q, HF_OP_GET_RESOURCE);
	q.name = "A";
	hf_reply *rep = NULL;
	rc = hf_call(st, &q, &rep);
	hf_reply_free(rep);
	CHECK(rc == HF_EENGINE, "resource reads stay on the primary: %s", hf_err_name(rc));
	CHECK(take(st, "C", &c, &err) == HF_OK, "%s", err.message);
	CHECK(c->parts[0].fence > BASE, "fallback fence %lld", (long long)c->parts[0].fence);
	/* A wait parked on the fallback is cancelled there. */
	hf_claim cl = {.name = "C", .units = 1, .capacity = 1};
	hf_request aq;
	hf_request_init(&aq, HF_OP_ACQUIRE);
	aq.acquire = (hf_acquire_req){.owner = "w", .claims = &cl, .n_claims = 1, .ttl_ms = 1000,
	                              .wait_ms = 20000, .mode = HF_MODE_EXCLUSIVE};
	int got = 1;
	uint64_t id = 0;
	CHECK(hf_submit(st, &aq, on_done, &got, &id, &err) == HF_OK, "%s", err.message);
	sleep_ms(200);
	int64_t tc = hf_now_ms();
	hf_cancel(st, id);
	while (got == 1 && hf_now_ms() - tc < 5000) {
		struct pollfd pfd = {.fd = hf_store_fd(st), .events = POLLIN};
		poll(&pfd, 1, 100);
		hf_store_dispatch(st);
	}
	CHECK(got == HF_ECANCELED, "cancelled wait on the fallback: %s", hf_err_name(got));
	printf("a wait parked on the fallback was cancelled in %lld ms\n", (long long)(hf_now_ms() - tc));

	/* A batch reaches the fallback: what is submitted while it is open is committed, and
	 * answered, only after its end (the embedded engine's batch rule). */
	hf_claim ce = {.name = "E", .units = 1, .capacity = 1};
	hf_request eq;
	hf_request_init(&eq, HF_OP_ACQUIRE);
	eq.acquire = (hf_acquire_req){.owner = "e", .claims = &ce, .n_claims = 1, .ttl_ms = 1000,
	                              .mode = HF_MODE_EXCLUSIVE};
	int egot = 1;
	hf_store_batch_begin(st);
	CHECK(hf_submit(st, &eq, on_done, &egot, NULL, &err) == HF_OK, "%s", err.message);
	for (int i = 0; i < 3; i++) {
		struct pollfd pfd = {.fd = hf_store_fd(st), .events = POLLIN};
		poll(&pfd, 1, 100);
		hf_store_dispatch(st);
	}
	CHECK(egot == 1, "answered while its batch was open: %s", hf_err_name(egot));
	hf_store_batch_end(st);
	int64_t te = hf_now_ms();
	while (egot == 1 && hf_now_ms() - te < 5000) {
		struct pollfd pfd = {.fd = hf_store_fd(st), .events = POLLIN};
		poll(&pfd, 1, 100);
		hf_store_dispatch(st);
	}
	CHECK(egot == HF_OK, "acquire in a batch on the fallback: %s", hf_err_name(egot));
	printf("a batch on the fallback: answered only after its end\n");

	start_server(); /* empty: no persistence in these tests, so A is gone with it */
	int64_t t0 = hf_now_ms();
	int tries = 0;
	do {
		hf_hold_free(d);
		d = NULL;
		rc = take(st, "D", &d, &err);
		tries++;
		if (rc == HF_OK && d->parts[0].fence > BASE) {
			hf_hold *r = NULL;
			hf_release(st, d->id, d->token, &r, &err);
			hf_hold_free(r);
			sleep_ms(100);
		}
	} while ((rc != HF_OK || d->parts[0].fence > BASE) && hf_now_ms() - t0 < 10000);
	CHECK(rc == HF_OK && d->parts[0].fence < BASE, "never back on the primary: %s",
	      rc == HF_OK ? "fallback fences" : err.message);
	CHECK(log_has("msg=engine_fallback_off"), "no log line for the switch back");
	printf("primary restarted: D granted by redis again after %lld ms (%d tries), fence %lld\n",
	       (long long)(hf_now_ms() - t0), tries, (long long)d->parts[0].fence);
	/* The holds the fallback gave out are still reached there. */
	CHECK(hf_release(st, c->id, c->token, &x, &err) == HF_OK, "release C: %s", err.message);
	CHECK(x->parts[0].fence == c->parts[0].fence, "C's fence %lld", (long long)x->parts[0].fence);
	hf_hold_free(x);
	x = NULL;
	CHECK(hf_release(st, b->id, b->token, &x, &err) == HF_OK, "release B: %s", err.message);
	hf_hold_free(x);
	x = NULL;
	CHECK(hf_release(st, d->id, d->token, &x, &err) == HF_OK, "release D: %s", err.message);
	hf_hold_free(x);
	printf("after the switch back, the fallback's holds B and C were released there\n");
	hf_hold_free(a);
	hf_hold_free(b);
	hf_hold_free(c);
	hf_hold_free(d);

	/* Four threads keep taking and releasing locks while the primary dies and comes back:
	 * every acquire is answered by one engine or the other. */
	pthread_t t[4];
	for (int i = 0; i < 4; i++)
		pthread_create(&t[i], NULL, churn, st);
	sleep_ms(300);
	kill_server();
	sleep_ms(700);
	int on_fallback = atomic_load(&cycles);
	start_server();
	sleep_ms(1500);
	atomic_store(&stop, true);
	for (int i = 0; i < 4; i++)
		pthread_join(t[i], NULL);
	CHECK(atomic_load(&acquire_failures) == 0, "%d acquires failed", atomic_load(&acquire_failures));
	printf("4 threads through a kill and a restart: %d cycles (%d by the kill + 700 ms), no "
	       "acquire failed, %d releases lost with the primary\n",
	       atomic_load(&cycles), on_fallback, atomic_load(&releases_lost));
	hf_close(st);
	/* Off by default: the same primary without a fallback just fails. */
	kill_server();
	CHECK(hf_open(url, NULL, &st, &err) == HF_EENGINE, "open without a fallback: %s", err.message);
	start_server();
}

/* Takes locks named `probe` until the primary grants one (fence below 2^48): it is back. */
static bool primary_back(hf_store *st)
{
	int64_t t0 = hf_now_ms();
	while (hf_now_ms() - t0 < 10000) {
		hf_hold *h = NULL, *r = NULL;
		hf_error err;
		int rc = take(st, "probe", &h, &err);
		bool back = rc == HF_OK && h->parts[0].fence < BASE;
		if (rc == HF_OK)
			hf_release(st, h->id, h->token, &r, &err);
		hf_hold_free(h);
		hf_hold_free(r);
		if (back)
			return true;
		sleep_ms(100);
	}
	return false;
}

/* An acquire of `name` submitted with a wait; *rc stays 1 until it completes. */
struct pending {
	hf_claim c;
	hf_request q;
	int rc;
	int64_t fence, done_at;
	hf_hold *hold;
};

static void on_pending(void *arg, hf_reply *reply)
{
	struct pending *p = arg;
	p->done_at = hf_now_ms();
	if (reply->error.code == HF_OK && reply->hold) {
		p->fence = reply->hold->parts[0].fence;
		p->hold = reply->hold;
		reply->hold = NULL;
	}
	p->rc = reply->error.code;
	hf_reply_free(reply);
}

static int submit_wait_id(hf_store *st, struct pending *p, const char *name, int64_t wait_ms,
                          uint64_t *id)
{
	memset(p, 0, sizeof(*p));
	p->rc = 1;
	p->c = (hf_claim){.name = name, .units = 1, .capacity = 1};
	hf_request_init(&p->q, HF_OP_ACQUIRE);
	p->q.acquire = (hf_acquire_req){.owner = "second", .claims = &p->c, .n_claims = 1,
	                                .ttl_ms = 60000, .wait_ms = wait_ms, .mode = HF_MODE_EXCLUSIVE};
	hf_error err;
	return hf_submit(st, &p->q, on_pending, p, id, &err);
}

static int submit_wait(hf_store *st, struct pending *p, const char *name, int64_t wait_ms)
{
	return submit_wait_id(st, p, name, wait_ms, NULL);
}

static void pump_for(hf_store *st, struct pending *p, int ms)
{
	int64_t t0 = hf_now_ms();
	while (p->rc == 1 && hf_now_ms() - t0 < ms) {
		struct pollfd pfd = {.fd = hf_store_fd(st), .events = POLLIN};
		poll(&pfd, 1, 20);
		hf_store_dispatch(st);
	}
}

/* One server must not grant a name twice: A holds lock:split on the fallback (taken while
 * the primary was down); with the primary back, B is refused (NOWAIT) or waits, and is
 * granted by the primary once A is released — or once A's lease has run out. */
static void no_second_owner(void)
{
	char url[128], furl[700];
	snprintf(url, sizeof(url), "redis://127.0.0.1:%d?prefix=fbs:", port);
	snprintf(furl, sizeof(furl), "file:%s/fallback-split.db", dir);
	hf_options opt;
	hf_options_init(&opt);
	opt.fallback_url = furl;
	hf_store *st = NULL;
	hf_error err;
	CHECK(hf_open(url, &opt, &st, &err) == HF_OK, "%s", err.message);
	hf_hold *a = NULL, *e = NULL, *b = NULL;
	kill_server();
	CHECK(take(st, "lock:split", &a, &err) == HF_OK, "A on the fallback: %s", err.message);
	CHECK(a->parts[0].fence > BASE, "A's fence %lld", (long long)a->parts[0].fence);
	CHECK(take_ttl(st, "lock:lapse", 1500, &e, &err) == HF_OK, "E on the fallback: %s",
	      err.message);
	start_server();
	CHECK(primary_back(st), "the primary never came back");

	int rc = take(st, "lock:split", &b, &err);
	CHECK(rc == HF_EUNAVAILABLE, "B got lock:split while A holds it on the fallback: %s%s%s",
	      hf_err_name(rc), rc == HF_OK ? ", fence " : "",
	      rc == HF_OK ? (b->parts[0].fence < BASE ? "from the primary" : "from the fallback") : "");
	printf("primary back, A still holds lock:split on the fallback: B NOWAIT -> %s (%s)\n",
	       hf_err_name(rc), err.message);
	/* a wait parked behind the fallback hold can be cancelled */
	struct pending w;
	uint64_t id = 0;
	CHECK(submit_wait_id(st, &w, "lock:split", 20000, &id) == HF_OK, "submit");
	pump_for(st, &w, 200);
	CHECK(w.rc == 1, "the wait ended at once: %s", hf_err_name(w.rc));
	hf_cancel(st, id);
	pump_for(st, &w, 5000);
	CHECK(w.rc == HF_ECANCELED, "cancelled wait: %s", hf_err_name(w.rc));
	/* and one that runs out of time ends with wait_timeout */
	CHECK(submit_wait(st, &w, "lock:split", 300) == HF_OK, "submit");
	pump_for(st, &w, 5000);
	CHECK(w.rc == HF_ETIMEDOUT, "short wait: %s", hf_err_name(w.rc));
	CHECK(submit_wait(st, &w, "lock:split", 20000) == HF_OK, "submit");
	pump_for(st, &w, 500);
	CHECK(w.rc == 1, "B's wait ended while A holds the lock: %s", hf_err_name(w.rc));
	int64_t t_rel = hf_now_ms();
	CHECK(hf_release(st, a->id, a->token, NULL, &err) == HF_OK, "release A: %s", err.message);
	pump_for(st, &w, 10000);
	CHECK(w.rc == HF_OK, "B after A's release: %s", hf_err_name(w.rc));
	CHECK(w.fence < BASE, "B's fence %lld: not the primary's", (long long)w.fence);
	printf("B waited and was granted by the primary %lld ms after A's release on the fallback\n",
	       (long long)(w.done_at - t_rel));
	CHECK(hf_release(st, w.hold->id, w.hold->token, NULL, &err) == HF_OK, "%s", err.message);
	hf_hold_free(w.hold);

	/* E was taken on the fallback with a 1.5 s lease and is never released. */
	CHECK(submit_wait(st, &w, "lock:lapse", 20000) == HF_OK, "submit");
	pump_for(st, &w, 10000);
	CHECK(w.rc == HF_OK, "the waiter behind E: %s", hf_err_name(w.rc));
	CHECK(w.done_at >= e->expires_at_ms, "granted at %lld, before E's lease ended at %lld",
	      (long long)w.done_at, (long long)e->expires_at_ms);
	CHECK(w.fence < BASE, "fence %lld: not the primary's", (long long)w.fence);
	printf("the waiter behind E was granted by the primary %lld ms after E's lease ended\n",
	       (long long)(w.done_at - e->expires_at_ms));
	hf_hold_free(w.hold);
	hf_hold_free(a);
	hf_hold_free(e);
	hf_hold_free(b);
	hf_close(st);
}

int main(void)
{
	const char *p = getenv("HF_REDIS_PORTS");
	dir = getenv("HF_REDIS_DIR");
	if (!p || !dir || sscanf(p, "%d", &port) != 1) {
		fprintf(stderr, "run me under with_redis.sh\n");
		return 2;
	}
	run();
	if (!failures)
		no_second_owner();
	if (saved_stderr >= 0) {
		fflush(stderr);
		dup2(saved_stderr, 2);
		close(saved_stderr);
		FILE *f = fopen(logpath, "r");
		char line[2048];
		printf("--- what the library and the test wrote to stderr ---\n");
		while (f && fgets(line, sizeof(line), f))
			fputs(line, stdout);
		if (f)
			fclose(f);
	}
	printf(failures ? "FAILED\n" : "all fallback checks passed\n");
	return failures ? 1 : 0;
}
