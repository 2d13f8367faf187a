/*
 * torture.h — allocation failure on demand (curl's "torture" mode): every allocation of the
 * process — libholdfast's malloc/calloc/realloc/strdup/strndup (by the linker's --wrap),
 * SQLite's (SQLITE_CONFIG_MALLOC) and jansson's (json_set_alloc_funcs), from every thread —
 * is counted once armed, and the N-th returns NULL.
 */
#ifndef HF_TORTURE_H
#define HF_TORTURE_H

#include <stdbool.h>

/* Installs the counting allocators into SQLite and jansson: call first thing in main. */
int torture_init(void);
/* Counts allocations from now on; the n-th fails (n = 0: none fails). */
void torture_arm(long n);
/* From now on the n-th allocation and the len-1 after it fail (default 1). */
void torture_set_burst(long len);
/* Stops failing; returns the allocations counted since torture_arm. */
long torture_disarm(void);
/* Allocations failed since torture_arm. */
long torture_failed(void);

#endif /* HF_TORTURE_H */
