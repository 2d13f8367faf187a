/*
 * expect.h — the one assertion of the bench tests (check_test.c, http_client_test.c): EXPECT
 * reports a failed condition with its line and counts it in failures; the test goes on, and
 * main returns non-zero when failures is not 0. One test program per includer (a static).
 */
#ifndef HF_TESTS_BENCH_EXPECT_H
#define HF_TESTS_BENCH_EXPECT_H

#include <stdio.h>

static int failures;

#define EXPECT(cond)                                                                               \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			fprintf(stderr, "%s:%d: expected %s\n", __FILE__, __LINE__, #cond);        \
			failures++;                                                                \
		}                                                                                  \
	} while (0)

#endif
