/*
 * lapse_test.c — redis://: the waits of a process that died (SIGKILL, so nothing is
 * unparked) block no queue past their lease (?wait_lease_ms), whether or not anything is
 * ever released on the resources they name: after the lease a NOWAIT acquire succeeds on a
 * resource with other holds and on one without, and a waiter parked behind the dead one is
 * granted with no further call. Runs under with_redis.sh.
 */
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "holdfast.h"
#include "check.h"

#define LEASE_MS 2000

static char url[256];

static hf_claim claim(const char *name, int64_t units, int64_t capacity)
{
	return (hf_claim){.name = name, .units = units, .capacity = capacity};
}

static int take(hf_store *st, hf_claim *c, size_t n, int64_t wait_ms, hf_hold **out,
                hf_error *err)
{
	hf_acquire_req req = {.owner = "lapse-test", .claims = c, .n_claims = n, .ttl_ms = 60000,
	                      .wait_ms = wait_ms, .mode = HF_MODE_UNITS};
	return hf_acquire(st, &req, out, err);
}

static int64_t waiters(hf_store *st, const char *name)
{
	hf_request q;
	hf_request_init(&q, HF_OP_GET_RESOURCE);
	q.name = name;
	hf_reply *r = NULL;
	int64_t n = hf_call(st, &q, &r) == HF_OK ? r->resource->waiters : -1;
	hf_reply_free(r);
	return n;
}

static void on_done(void *arg, hf_reply *reply)
{
	*(int *)arg = reply->error.code;
	hf_reply_free(reply);
}

/* The process that dies: parks three waits, each behind A (held by the parent) and on one
 * of B, C, D, says so on `ready`, and waits to be killed. */
static void child(int go, int ready)
{
	char c;
	if (read(go, &c, 1) != 1)
		_exit(2);
	hf_store *st = NULL;
	hf_error err;
	if (hf_open(url, NULL, &st, &err) != HF_OK) {
		fprintf(stderr, "child open: %s\n", err.message);
		_exit(2);
	}
	const char *second[] = {"B", "C", "D"};
	static hf_claim cl[3][2];
	static hf_request q[3];
	static int got[3];
	for (int i = 0; i < 3; i++) {
		cl[i][0] = claim("A", 1, 1);
		cl[i][1] = claim(second[i], 1, i == 0 ? 2 : 1);
		hf_request_init(&q[i], HF_OP_ACQUIRE);
		q[i].acquire = (hf_acquire_req){.owner = "doomed", .claims = cl[i], .n_claims = 2,
		                                .ttl_ms = 60000, .wait_ms = 600000, .mode = HF_MODE_UNITS};
		if (hf_submit(st, &q[i], on_done, &got[i], NULL, &err) != HF_OK) {
			fprintf(stderr, "child submit: %s\n", err.message);
			_exit(2);
		}
	}
	for (int i = 0; i < 500; i++) {
		if (waiters(st, "B") == 1 && waiters(st, "C") == 1 && waiters(st, "D") == 1)
			break;
		sleep_ms(10);
	}
	if (write(ready, "r", 1) != 1)
		_exit(2);
	for (;;)
		pause();
}

static void run(pid_t pid, int go, int ready)
{
	hf_store *st = NULL;
	hf_error err;
	CHECK(hf_open(url, NULL, &st, &err) == HF_OK, "%s", err.message);
	hf_hold *ha = NULL, *hb = NULL, *hb2 = NULL, *hc = NULL, *hd = NULL;
	hf_claim a = claim("A", 1, 1), b = claim("B", 1, 2), c = claim("C", 1, 1), d = claim("D", 1, 1);
	CHECK(take(st, &a, 1, 0, &ha, &err) == HF_OK, "A: %s", err.message);
	CHECK(take(st, &b, 1, 0, &hb, &err) == HF_OK, "B: %s", err.message);
	CHECK(write(go, "g", 1) == 1, "pipe");
	char r;
	CHECK(read(ready, &r, 1) == 1, "the child did not park its waits");
	CHECK(waiters(st, "B") == 1 && waiters(st, "C") == 1 && waiters(st, "D") == 1,
	      "waiters B %lld C %lld D %lld", (long long)waiters(st, "B"), (long long)waiters(st, "C"),
	      (long long)waiters(st, "D"));
	/* While its process lives, its waits keep their place: no barging on B (1 of 2 free). */
	int rc = take(st, &b, 1, 0, NULL, &err);
	CHECK(rc == HF_EUNAVAILABLE, "B behind a live waiter: %s", hf_err_name(rc));

	kill(pid, SIGKILL);
	int64_t t_kill = hf_now_ms();
	waitpid(pid, NULL, 0);
	/* A new waiter on D, free but queued behind the dead wait: nothing is ever released on
	 * D or A from here on, so only the lapse of the dead wait can let it in. */
	hf_request q;
	hf_request_init(&q, HF_OP_ACQUIRE);
	q.acquire = (hf_acquire_req){.owner = "next", .claims = &d, .n_claims = 1, .ttl_ms = 60000,
	                             .wait_ms = 30000, .mode = HF_MODE_UNITS};
	int got = 1;
	CHECK(hf_submit(st, &q, on_done, &got, NULL, &err) == HF_OK, "%s", err.message);
	/* Past the lease of the dead waits (renewed at the latest just before the kill). A and D
	 * see no release, no call on them: only the lapse rule can free their queues. */
	sleep_ms(LEASE_MS + 500);
	/* NOWAIT: B has another hold (1 of 2 units taken), C none. */
	CHECK(take(st, &b, 1, 0, &hb2, &err) == HF_OK, "NOWAIT on B after the lease: %s %s",
	      hf_err_name(err.code), err.message);
	CHECK(take(st, &c, 1, 0, &hc, &err) == HF_OK, "NOWAIT on C after the lease: %s %s",
	      hf_err_name(err.code), err.message);
	while (got == 1 && hf_now_ms() - t_kill < 30000) {
		struct pollfd pfd = {.fd = hf_store_fd(st), .events = POLLIN};
		poll(&pfd, 1, 50);
		hf_store_dispatch(st);
	}
	int64_t t_granted = hf_now_ms();
	CHECK(got == HF_OK, "the waiter on D behind the dead wait: %s", hf_err_name(got));
	printf("the waiter on D was granted (delivered %lld ms after the kill; lease %d ms)\n",
	       (long long)(t_granted - t_kill), LEASE_MS);
	CHECK(waiters(st, "A") == 0, "A still has %lld waiters", (long long)waiters(st, "A"));
	/* And the queue works as before: a waiter behind a live hold is granted at its release. */
	hf_request_init(&q, HF_OP_ACQUIRE);
	q.acquire = (hf_acquire_req){.owner = "next", .claims = &c, .n_claims = 1, .ttl_ms = 60000,
	                             .wait_ms = 30000, .mode = HF_MODE_UNITS};
	got = 1;
	CHECK(hf_submit(st, &q, on_done, &got, NULL, &err) == HF_OK, "%s", err.message);
	for (int i = 0; i < 200 && waiters(st, "C") != 1; i++)
		sleep_ms(10);
	CHECK(hf_release(st, hc->id, hc->token, NULL, &err) == HF_OK, "%s", err.message);
	int64_t t0 = hf_now_ms();
	while (got == 1 && hf_now_ms() - t0 < 20000) {
		struct pollfd pfd = {.fd = hf_store_fd(st), .events = POLLIN};
		poll(&pfd, 1, 50);
		hf_store_dispatch(st);
	}
	CHECK(got == HF_OK, "waiter on C after a release: %s", hf_err_name(got));
	hf_hold_free(ha);
	hf_hold_free(hb);
	hf_hold_free(hb2);
	hf_hold_free(hc);
	hf_hold_free(hd);
	hf_close(st);
}

int main(void)
{
	const char *p = getenv("HF_REDIS_PORTS");
	int port;
	if (!p || sscanf(p, "%d", &port) != 1) {
		fprintf(stderr, "run me under with_redis.sh\n");
		return 2;
	}
	snprintf(url, sizeof(url), "redis://127.0.0.1:%d?prefix=lapse:&wait_lease_ms=%d", port,
	         LEASE_MS);
	int go[2], ready[2];
	if (pipe(go) != 0 || pipe(ready) != 0)
		return 2;
	/* Fork before any store is open here: the child starts with no engine threads. */
	pid_t pid = fork();
	if (pid < 0)
		return 2;
	if (pid == 0) {
		close(go[1]);
		close(ready[0]);
		child(go[0], ready[1]);
		_exit(0);
	}
	close(go[0]);
	close(ready[1]);
	run(pid, go[1], ready[0]);
	if (failures) {
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
	}
	printf(failures ? "FAILED\n" : "all lapse checks passed\n");
	return failures ? 1 : 0;
}
