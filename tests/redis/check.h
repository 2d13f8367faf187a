/*
 * check.h — what the C tests under tests/redis share: a CHECK that counts a failure, says
 * where and why, and returns from the test function; and a plain sleep. One test program
 * per translation unit, so `failures` is that program's count.
 */
#ifndef HF_TESTS_REDIS_CHECK_H
#define HF_TESTS_REDIS_CHECK_H

#include <stdio.h>
#include <time.h>

static int failures;

#define CHECK(cond, ...)                                                                     \
	do {                                                                                     \
		if (!(cond)) {                                                                       \
			fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);                  \
			fprintf(stderr, __VA_ARGS__);                                                    \
			fprintf(stderr, "\n");                                                           \
			failures++;                                                                      \
			return;                                                                          \
		}                                                                                    \
	} while (0)

static inline void sleep_ms(int ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

#endif
