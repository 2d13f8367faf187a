/*
 * torture.c — the counting allocators of the allocation-failure test (torture.h). One
 * counter for the whole process, atomically updated: the writer thread's allocations count
 * alongside the caller's, so which call a given N hits may vary a little between runs when
 * the two threads allocate at the same time.
 */
#include <jansson.h>
#include <limits.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "torture.h"

static atomic_long g_count, g_fail_at, g_failed, g_burst = 1;

/* True when this allocation is to fail. */
static bool fail_now(void)
{
	long at = atomic_load(&g_fail_at);
	if (at <= 0)
		return false;
	long k = atomic_fetch_add(&g_count, 1) + 1;
	if (k < at || k >= at + atomic_load(&g_burst))
		return false;
	atomic_fetch_add(&g_failed, 1);
	return true;
}

void torture_set_burst(long len)
{
	atomic_store(&g_burst, len > 0 ? len : 1);
}

void torture_arm(long n)
{
	atomic_store(&g_fail_at, 0);
	atomic_store(&g_count, 0);
	atomic_store(&g_failed, 0);
	atomic_store(&g_fail_at, n > 0 ? n : LONG_MAX);
}

long torture_disarm(void)
{
	atomic_store(&g_fail_at, 0);
	return atomic_load(&g_count);
}

long torture_failed(void)
{
	return atomic_load(&g_failed);
}

/* ---- libholdfast's own allocations: -Wl,--wrap=malloc,... ---- */

void *__real_malloc(size_t n);
void *__real_calloc(size_t k, size_t n);
void *__real_realloc(void *p, size_t n);
char *__real_strdup(const char *s);
char *__real_strndup(const char *s, size_t n);
void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t k, size_t n);
void *__wrap_realloc(void *p, size_t n);
char *__wrap_strdup(const char *s);
char *__wrap_strndup(const char *s, size_t n);

void *__wrap_malloc(size_t n)
{
	return fail_now() ? NULL : __real_malloc(n);
}

void *__wrap_calloc(size_t k, size_t n)
{
	return fail_now() ? NULL : __real_calloc(k, n);
}

void *__wrap_realloc(void *p, size_t n)
{
	return fail_now() ? NULL : __real_realloc(p, n);
}

char *__wrap_strdup(const char *s)
{
	return fail_now() ? NULL : __real_strdup(s);
}

char *__wrap_strndup(const char *s, size_t n)
{
	return fail_now() ? NULL : __real_strndup(s, n);
}

/* ---- jansson ---- */

static void *j_malloc(size_t n)
{
	return fail_now() ? NULL : __real_malloc(n);
}

static void j_free(void *p)
{
	free(p);
}

/* ---- SQLite: a header before each block keeps its size (xSize) ---- */

#define HDR 16

static void *s_malloc(int n)
{
	if (n <= 0 || fail_now())
		return NULL;
	unsigned char *p = __real_malloc((size_t)n + HDR);
	if (!p)
		return NULL;
	memcpy(p, &n, sizeof n);
	return p + HDR;
}

static void s_free(void *p)
{
	if (p)
		free((unsigned char *)p - HDR);
}

static int s_size(void *p)
{
	int n = 0;
	if (p)
		memcpy(&n, (unsigned char *)p - HDR, sizeof n);
	return n;
}

static void *s_realloc(void *p, int n)
{
	if (!p)
		return s_malloc(n);
	if (n <= 0 || fail_now())
		return NULL;
	unsigned char *q = __real_realloc((unsigned char *)p - HDR, (size_t)n + HDR);
	if (!q)
		return NULL;
	memcpy(q, &n, sizeof n);
	return q + HDR;
}

static int s_roundup(int n)
{
	return (n + 7) & ~7;
}

static int s_init(void *ctx)
{
	(void)ctx;
	return SQLITE_OK;
}

static void s_shutdown(void *ctx)
{
	(void)ctx;
}

int torture_init(void)
{
	static const sqlite3_mem_methods mem = {s_malloc, s_free,  s_realloc,  s_size,
	                                        s_roundup, s_init, s_shutdown, NULL};
	json_set_alloc_funcs(j_malloc, j_free);
	return sqlite3_config(SQLITE_CONFIG_MALLOC, &mem);
}
