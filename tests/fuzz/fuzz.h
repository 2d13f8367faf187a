/*
 * fuzz.h — what every fuzz target shares: the libFuzzer entry point it defines, and the one
 * way a target reports a broken property (a message, then abort(), which libFuzzer and the
 * replay runner both treat as a crash).
 */
#ifndef HF_FUZZ_H
#define HF_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_FAIL(...)                                                                             \
	do {                                                                                       \
		fprintf(stderr, "fuzz property broken at %s:%d: ", __FILE__, __LINE__);            \
		fprintf(stderr, __VA_ARGS__);                                                      \
		fputc('\n', stderr);                                                               \
		abort();                                                                           \
	} while (0)

#define FUZZ_CHECK(cond, ...)                                                                      \
	do {                                                                                       \
		if (!(cond))                                                                       \
			FUZZ_FAIL(__VA_ARGS__);                                                    \
	} while (0)

#endif
