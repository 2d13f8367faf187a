/*
 * model.h — a small reference model of the hold semantics (docs/semantics.md) for the engine
 * fuzz target: resources named r0..r3, implicit or declared (put with if_version, capacity
 * changes, delete), NOWAIT acquires (units, shared, exclusive; all-of and any-of; several
 * claims; idempotency keys), waiting all-of acquires (FIFO per resource, no barging,
 * deadlines), extend, confirm, release and lease expiry on an injected clock. Written from the
 * rules, after tests/engine/model_test.c's phase 1. Outcomes are exact except the fences of
 * waiters granted in one step: the order in which one step grants several waiters is the
 * engine's to choose (the set is not), so their fences are taken from the engine once checked.
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
#define FM_MAXW 64
#define FM_PARKED 1 /* fm_acquire: the request waits */

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
	int key;      /* an idempotency key (index), or -1 (never with a wait) */
	int64_t wait; /* 0: NOWAIT; else wait this long (all-of only) */
};

struct fm_part {
	int res;
	int64_t units, fence;
};

struct fm_hold {
	bool fences_open; /* granted to a waiter in a step that may grant several: the engine's
	                     fences are taken once checked to increase */
	hf_hold_state state;
	hf_mode mode;
	int64_t created, expires, ended;
	int n;
	struct fm_part p[FM_MAXC];
};

struct fm_res {
	bool exists;   /* implicit: from its first grant or wait until nothing holds or awaits it */
	bool declared; /* put: until deleted */
	int64_t cap, held, holds, exclusive, waiters;
	int64_t version; /* declared: 1 on creation, +1 per put; implicit: 0 */
};

/* A parked acquire. `done` is set when the model ends its wait: then `code` is its answer
 * and, when granted, `hold` its hold. */
struct fm_waiter {
	bool active, done;
	struct fm_acquire a;
	int64_t deadline;
	int code, hold;
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
	struct fm_waiter w[FM_MAXW];
	int nw;
};

void fm_init(struct fm_model *m, int64_t now);
/* Applies what is due at m->now, in time order (an expiry before a deadline at the same
 * instant), granting waiters after each: every engine step does this first. */
void fm_expire(struct fm_model *m);
/* True if a deadline falls at the same instant as another wait's deadline: the generator
 * avoids those (the rules leave the order of equal deadlines open; an expiry at the same
 * instant as a deadline is applied first, and the model does so). */
bool fm_deadline_clashes(const struct fm_model *m, int64_t deadline);
/* The restart ends every wait with `code` (HF_ECLOSED); implicit resources that only
 * waiters named are gone (they were never journaled). */
void fm_end_waits(struct fm_model *m, int code);
/* hf_cancel of waiter wi: it ends with HF_ECANCELED and the lines move on (no sweep first). */
void fm_cancel(struct fm_model *m, int wi);
/* Each returns the answer's code. On HF_OK an acquire's hold is m->h[*hold] and *replayed
 * says whether it is the first outcome of its idempotency key again; FM_PARKED: it waits as
 * m->w[*hold]. A full hold or waiter table answers HF_ELIMIT (the caller stops generating
 * acquires before that). */
int fm_acquire(struct fm_model *m, const struct fm_acquire *a, int *hold, bool *replayed);
/* The check hf__check_request makes of a's numbers before any engine sees it (units beyond a
 * claim's own capacity): HF_OK or the code of the refusal. A request refused there makes no
 * engine step, so nothing due is applied (the caller's fm_expire must not run). */
int fm_acquire_check(const struct fm_acquire *a);
int fm_extend(struct fm_model *m, int k, int64_t ttl);
int fm_confirm(struct fm_model *m, int k);
int fm_release(struct fm_model *m, int k);
/* if_version: -1 any, 0 must not be declared yet, > 0 must equal the version. */
int fm_put(struct fm_model *m, int res, int64_t capacity, int64_t if_version);
int fm_delete(struct fm_model *m, int res, int64_t if_version);

#endif
