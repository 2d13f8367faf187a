/*
 * direct.h — for the tests under tests/redis that look at the keys themselves: the first
 * with_redis.sh server, a direct hiredis connection to it beside a holdfast store opened on
 * it, and a command whose reply is not needed.
 */
#ifndef HF_TESTS_REDIS_DIRECT_H
#define HF_TESTS_REDIS_DIRECT_H

#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>

#include "holdfast.h"

/* Opens "redis://127.0.0.1:PORT?QUERY" and a direct connection to the same server. Returns 0,
 * or the exit status the test should end with (2: not under with_redis.sh). */
static int open_direct(const char *query, int *port, redisContext **direct, hf_store **st)
{
	const char *p = getenv("HF_REDIS_PORTS");
	if (!p || sscanf(p, "%d", port) != 1) {
		fprintf(stderr, "run me under with_redis.sh\n");
		return 2;
	}
	struct timeval tv = {2, 0};
	*direct = redisConnectWithTimeout("127.0.0.1", *port, tv);
	if (!*direct || (*direct)->err) {
		fprintf(stderr, "connect to redis on port %d failed\n", *port);
		return 2;
	}
	char url[160];
	snprintf(url, sizeof(url), "redis://127.0.0.1:%d?%s", *port, query);
	hf_error err;
	if (hf_open(url, NULL, st, &err) != HF_OK) {
		fprintf(stderr, "open %s: %s\n", url, err.message);
		redisFree(*direct);
		return 1;
	}
	return 0;
}

/* Runs a command for its effect (the tests check effects through the store). */
#define DIRECT(rc, ...)                                                                       \
	do {                                                                                      \
		redisReply *direct_reply_ = redisCommand((rc), __VA_ARGS__);                          \
		if (direct_reply_)                                                                    \
			freeReplyObject(direct_reply_);                                                   \
	} while (0)

#endif
