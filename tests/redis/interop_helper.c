/*
 * interop_helper.c — holdfast's side of the npm interop test: a tiny command line over the
 * public API, driven by interop.cjs. Prints one line of result; exit 0 on success, 3 when
 * the lock is held by someone else (or the wait ran out), 4 on any other error.
 *   interop_helper URL try  NAME TTL_MS           acquire, print "ok TOKEN FENCE", release
 *   interop_helper URL hold NAME TTL_MS HOLD_MS   acquire, print "ok TOKEN FENCE", keep it
 *                                                 HOLD_MS, release, print "released"
 *   interop_helper URL wait NAME TTL_MS WAIT_MS   acquire waiting up to WAIT_MS, print
 *                                                 "ok TOKEN FENCE WAITED_MS", release
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "holdfast.h"

int main(int argc, char **argv)
{
	bool waits = strcmp(argv[2], "wait") == 0;
	if (argc < 5 || ((strcmp(argv[2], "hold") == 0 || waits) && argc < 6)) {
		fprintf(stderr, "usage: %s URL try|hold|wait NAME TTL_MS [HOLD_MS|WAIT_MS]\n", argv[0]);
		return 4;
	}
	hf_store *st = NULL;
	hf_error err;
	if (hf_open(argv[1], NULL, &st, &err) != HF_OK) {
		printf("error %s %s\n", hf_err_name(err.code), err.message);
		return 4;
	}
	hf_claim c = {.name = argv[3], .units = 1, .capacity = 1};
	hf_acquire_req req = {.owner = "interop", .claims = &c, .n_claims = 1,
	                      .ttl_ms = atoll(argv[4]), .mode = HF_MODE_EXCLUSIVE,
	                      .wait_ms = waits ? atoll(argv[5]) : 0};
	hf_hold *h = NULL;
	int64_t t0 = hf_now_ms();
	int rc = hf_acquire(st, &req, &h, &err);
	if (rc != HF_OK) {
		printf("error %s %s\n", hf_err_name(rc), err.message);
		fflush(stdout);
		hf_close(st);
		return rc == HF_EUNAVAILABLE || rc == HF_ETIMEDOUT ? 3 : 4;
	}
	if (waits)
		printf("ok %s %lld %lld\n", h->token, (long long)h->parts[0].fence,
		       (long long)(hf_now_ms() - t0));
	else
		printf("ok %s %lld\n", h->token, (long long)h->parts[0].fence);
	fflush(stdout);
	if (strcmp(argv[2], "hold") == 0) {
		long ms = atol(argv[5]);
		struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
		nanosleep(&ts, NULL);
	}
	hf_hold *r = NULL;
	rc = hf_release(st, h->id, h->token, &r, &err);
	hf_hold_free(r);
	hf_hold_free(h);
	hf_close(st);
	if (rc != HF_OK) {
		printf("error %s %s\n", hf_err_name(rc), err.message);
		return 4;
	}
	printf("released\n");
	return 0;
}
