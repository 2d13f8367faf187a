/*
 * multi_test.c — two stores (two "instances") over one PostgreSQL schema: a release on one
 * wakes a waiter parked on the other promptly (LISTEN/NOTIFY, not the 1 s re-check), waiters
 * are FIFO across instances, and fences increase across them. Uses HF_TEST_ENGINE_URL.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "holdfast.h"

static int failures;
#define CHECK(cond)                                                                        \
	do {                                                                                   \
		if (!(cond)) {                                                                     \
			fprintf(stderr, "multi_test:%d: check failed: %s\n", __LINE__, #cond);         \
			failures++;                                                                    \
		}                                                                                  \
	} while (0)

struct pending {
	hf_reply *reply;
	int64_t at;
};

static int64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void done(void *arg, hf_reply *reply)
{
	struct pending *p = arg;
	p->reply = reply;
	p->at = mono_ms();
}

static void submit_wait(hf_store *st, struct pending *p)
{
	hf_claim c = {.name = "seat", .units = 1, .capacity = 1};
	hf_request q;
	hf_request_init(&q, HF_OP_ACQUIRE);
	q.acquire = (hf_acquire_req){.owner = "w", .claims = &c, .n_claims = 1, .ttl_ms = 60000,
	                             .wait_ms = 30000};
	hf_error err;
	memset(p, 0, sizeof(*p));
	CHECK(hf_submit(st, &q, done, p, NULL, &err) == HF_OK);
}

static int64_t waiters(hf_store *st)
{
	hf_request q;
	hf_request_init(&q, HF_OP_GET_RESOURCE);
	q.name = "seat";
	hf_reply *r = NULL;
	int64_t n = hf_call(st, &q, &r) == HF_OK ? r->resource->waiters : -1;
	hf_reply_free(r);
	return n;
}

static void pump_until(hf_store *a, hf_store *b, struct pending *p, int64_t ms)
{
	int64_t end = mono_ms() + ms;
	while (!p->reply && mono_ms() < end) {
		hf_store_dispatch(a);
		hf_store_dispatch(b);
		struct timespec ts = {0, 1000000};
		nanosleep(&ts, NULL);
	}
}

int main(void)
{
	const char *url = getenv("HF_TEST_ENGINE_URL");
	if (!url || strncmp(url, "postgres", 8) != 0) {
		fprintf(stderr, "multi_test: needs HF_TEST_ENGINE_URL=postgres://...\n");
		return 77;
	}
	hf_store *a = NULL, *b = NULL;
	hf_error err;
	if (hf_open(url, NULL, &a, &err) != HF_OK || hf_open(url, NULL, &b, &err) != HF_OK) {
		fprintf(stderr, "multi_test: open: %s\n", err.message);
		return 1;
	}
	hf_claim c = {.name = "seat", .units = 1, .capacity = 1};
	hf_acquire_req req = {.owner = "a", .claims = &c, .n_claims = 1, .ttl_ms = 60000};
	hf_hold *h = NULL;
	CHECK(hf_acquire(a, &req, &h, &err) == HF_OK);
	struct pending pb, pa;
	submit_wait(b, &pb); /* first in line, on instance B */
	for (int i = 0; i < 2000 && waiters(a) < 1; i++)
		;
	submit_wait(a, &pa); /* second, on instance A */
	for (int i = 0; i < 2000 && waiters(a) < 2; i++)
		;
	CHECK(waiters(a) == 2);
	int64_t t0 = mono_ms();
	CHECK(hf_release(a, h->id, h->token, NULL, &err) == HF_OK);
	pump_until(a, b, &pb, 10000);
	CHECK(pb.reply && pb.reply->error.code == HF_OK);
	CHECK(!pa.reply); /* FIFO: B's waiter was first */
	if (pb.reply)
		fprintf(stderr, "multi_test: cross-instance wake-up after %lld ms\n",
		        (long long)(pb.at - t0));
	CHECK(pb.reply && pb.at - t0 < 900); /* woken by NOTIFY, not the 1 s re-check */
	if (pb.reply && pb.reply->hold) {
		CHECK(pb.reply->hold->parts[0].fence > h->parts[0].fence);
		CHECK(hf_release(b, pb.reply->hold->id, pb.reply->hold->token, NULL, &err) == HF_OK);
	}
	pump_until(a, b, &pa, 10000);
	CHECK(pa.reply && pa.reply->error.code == HF_OK);
	if (pa.reply && pa.reply->hold && pb.reply && pb.reply->hold)
		CHECK(pa.reply->hold->parts[0].fence > pb.reply->hold->parts[0].fence);
	hf_hold_free(h);
	hf_reply_free(pa.reply);
	hf_reply_free(pb.reply);
	hf_close(a);
	hf_close(b);
	fprintf(stderr, "multi_test: %s\n", failures ? "FAILED" : "ok");
	return failures ? 1 : 0;
}
