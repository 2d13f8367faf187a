/*
 * model.h — a small reference model of the hold semantics (docs/semantics.md) for the engine
 * fuzz target: resources named r0..r3, implicit or declared (put with if_version, capacity
 * changes, delete), NOWAIT acquires (units, shared, exclusive; all-of and any-of; several
 * claims; idempotency keys), extend, confirm, release and lease expiry on an injected clock.
 * Written from the rules, after tests/engine/model_test.c's phase 1, without waiters (so every
 * outcome is exact).
 */
#ifndef HF_FUZZ_MODEL_H
#define HF_FUZZ_MODEL_H

#include <stdbool.h>
#include <stdint.h>

#include "holdfast.h"

#define FM_NRES 4
#define FM_MAXH 256
#define FM_MAXC 3
#define FM_NKEYS 2

struct fm_claim {
	int res;
	int64_t units, capacity; /* capacity 0: the resource must exist */
};

struct fm_acquire {
	int n;
	struct fm_claim c[FM_MAXC];
	hf_mode mode;
	bool any;
	int64_t ttl;
	int key; /* an idempotency key (index), or -1 */
};

struct fm_part {
	int res;
	int64_t units, fence;
};

struct fm_hold {
	hf_hold_state state;
	hf_mode mode;
	int64_t created, expires, ended;
	int n;
	struct fm_part p[FM_MAXC];
};

struct fm_res {
	bool exists;   /* implicit: from its first grant until nothing holds it */
	bool declared; /* put: until deleted */
	int64_t cap, held, holds, exclusive;
	int64_t version; /* declared: 1 on creation, +1 per put; implicit: 0 */
};

/* An idempotency key: the request it was first granted for, and that grant. */
struct fm_key {
	bool used;
	struct fm_acquire req;
	int hold;
};

struct fm_model {
	int64_t now;
	int64_t last_fence;
	struct fm_res r[FM_NRES];
	struct fm_hold h[FM_MAXH];
	int nh;
	struct fm_key keys[FM_NKEYS];
};

void fm_init(struct fm_model *m, int64_t now);
/* Applies the expiries due at m->now (every engine step does this first). */
void fm_expire(struct fm_model *m);
/* Each returns the answer's code. On HF_OK an acquire's hold is m->h[*hold] and *replayed
 * says whether it is the first outcome of its idempotency key again. A full hold table
 * answers HF_ELIMIT (the caller stops generating acquires before that). */
int fm_acquire(struct fm_model *m, const struct fm_acquire *a, int *hold, bool *replayed);
int fm_extend(struct fm_model *m, int k, int64_t ttl);
int fm_confirm(struct fm_model *m, int k);
int fm_release(struct fm_model *m, int k);
/* if_version: -1 any, 0 must not be declared yet, > 0 must equal the version. */
int fm_put(struct fm_model *m, int res, int64_t capacity, int64_t if_version);
int fm_delete(struct fm_model *m, int res, int64_t if_version);

#endif
