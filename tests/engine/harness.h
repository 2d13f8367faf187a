/*
 * harness.h — what the engine tests share: a fresh store per test for the engine named by
 * HF_TEST_ENGINE_URL, an injectable clock, short forms of the calls the tests make, and a
 * pump for the asynchronous API. Uses only the public API (include/holdfast.h).
 *
 * Engine URL (HF_TEST_ENGINE_URL):
 *   "file:" or unset   the embedded engine on a new temporary file per store
 *   "file:DIR"         the same, temporary files under DIR
 *   anything else      used as is; HF_TEST_ENGINE_RESET (a shell command), when set, is run
 *                      before each store is opened so that every test starts empty
 */
#ifndef HF_TEST_HARNESS_H
#define HF_TEST_HARNESS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "holdfast.h"

#if defined(__GNUC__)
#define HF_TEST_PRINTF(fmt, args) __attribute__((format(printf, fmt, args)))
#else
#define HF_TEST_PRINTF(fmt, args)
#endif

#define HT_T0 1700000000000LL /* where the injected clock starts, ms since the epoch */

typedef struct ht_env {
	char engine_url[1024]; /* HF_TEST_ENGINE_URL as given */
	char scheme[32];
	bool is_file;          /* the embedded engine: temp files, reopen, damage tests */
	char dir[512];         /* file: a private temp directory, removed by ht_env_free */
	char path[768];        /* file: the store's path in dir */
	char url[1100];        /* what hf_open is given */
	hf_options opt;        /* used by every (re)open; tests may change it before opening */
	bool fake_clock;       /* opt.clock is the injected clock below */
	_Atomic int64_t now;   /* the injected clock, ms */
	hf_store *st;          /* the open store or NULL */
} ht_env;

/* A fresh, empty store location (not opened). fake_clock: inject the test clock. NULL and a
 * message on stderr when no location can be made. */
ht_env *ht_env_new(bool fake_clock);
/* Opens env->st with env->opt; returns hf_open's code. */
int ht_env_open(ht_env *env, hf_error *err);
void ht_env_close(ht_env *env);
int ht_env_reopen(ht_env *env, hf_error *err);
/* Closes and removes everything ht_env_new made. NULL is fine. */
void ht_env_free(ht_env *env);

/* Capabilities of the engine under test that some rules need to be observable. */
bool ht_can_inject_clock(const ht_env *env); /* the engine judges time by opt.clock */
bool ht_can_reopen(const ht_env *env);       /* state survives close + open of the same url */

int64_t ht_now(ht_env *env);
void ht_advance(ht_env *env, int64_t ms); /* moves the injected clock; no tick */
void ht_tick(ht_env *env);                /* hf_store_tick */

/* ---- short forms of calls (blocking) ---- */

/* Options of an acquire for ht_acquire; zero-initialised means: owner "tester", units, ttl
 * 60 s, NOWAIT, all-of, no key. */
typedef struct ht_acq {
	const char *owner;
	hf_mode mode;
	int64_t ttl_ms;
	int64_t wait_ms;
	bool any;
	const char *key;
} ht_acq;

/* A claim list parsed from text: "a:2@5,b,c@3" = a 2 units (implicit, capacity 5), b 1 unit
 * (must exist), c 1 unit (implicit, capacity 3). Owns the names. */
typedef struct ht_claims {
	size_t n;
	hf_claim c[HF_CLAIMS_MAX + 2];
	char names[HF_CLAIMS_MAX + 2][HF_NAME_MAX + 1];
} ht_claims;

void ht_claims_parse(ht_claims *cl, const char *spec);
/* Fills req from spec + o (o may be NULL); req points into cl. */
void ht_acq_req(hf_acquire_req *req, ht_claims *cl, const char *spec, const ht_acq *o);

/* Acquire; on HF_OK *out (if out) is the hold, else NULL. Returns the code. */
int ht_acquire(hf_store *st, const char *spec, const ht_acq *o, hf_hold **out);

/* hf_call forms; each returns the reply (free it) — its error.code is the outcome. */
hf_reply *ht_put(hf_store *st, const char *name, int64_t capacity, const char *meta,
                 int64_t if_version);
hf_reply *ht_get(hf_store *st, const char *name);
hf_reply *ht_delete(hf_store *st, const char *name, int64_t if_version);
hf_reply *ht_get_hold(hf_store *st, const char *id);
hf_reply *ht_events(hf_store *st, uint64_t after, size_t limit);
hf_reply *ht_hold_op(hf_store *st, hf_op op, const char *id, const char *token, int64_t ttl);

/* Just the code of the call. */
int ht_put_rc(hf_store *st, const char *name, int64_t capacity, const char *meta,
              int64_t if_version);
int ht_release_rc(hf_store *st, const hf_hold *h);
int ht_confirm_rc(hf_store *st, const hf_hold *h);

/* A resource's numbers, or rc != HF_OK. */
typedef struct ht_res {
	int rc;
	int64_t capacity, version, held, holds, waiters;
	bool declared;
} ht_res;
ht_res ht_res_get(hf_store *st, const char *name);

/* A hold's state as GET_HOLD shows it, or rc != HF_OK. */
typedef struct ht_hold_view {
	int rc;
	hf_hold_state state;
	int64_t expires_at_ms, ended_at_ms;
	size_t n_parts;
} ht_hold_view;
ht_hold_view ht_hold_get(hf_store *st, const char *id);

uint64_t ht_last_seq(hf_store *st); /* newest durable event seq (0 if none) */
/* The fence of resource `name` in hold h, or -1. */
int64_t ht_fence(const hf_hold *h, const char *name);

/* ---- the asynchronous API ---- */

/* One submitted request: the callback stores the reply and counts calls. */
typedef struct ht_pending {
	atomic_int calls;   /* how often done ran: must end at exactly 1 */
	hf_reply *reply;
	uint64_t call_id;
	int submit_rc;
} ht_pending;

void ht_pending_init(ht_pending *p);
void ht_pending_clear(ht_pending *p); /* frees the reply */
/* hf_submit with the pending's callback; returns hf_submit's code. */
int ht_submit(hf_store *st, const hf_request *req, ht_pending *p);
int ht_submit_acquire(hf_store *st, const char *spec, const ht_acq *o, ht_pending *p);
/* Polls hf_store_fd and dispatches until p completed or timeout_ms passed (real time).
 * Returns true when p completed. */
bool ht_pump_until(hf_store *st, ht_pending *p, int timeout_ms);
/* Dispatches whatever is ready now (without waiting). */
void ht_pump(hf_store *st);
/* Waits (bounded, real time) until the resource shows `waiters` parked acquires. */
bool ht_wait_waiters(hf_store *st, const char *name, int64_t waiters, int timeout_ms);
/* The acquire's code once completed (HF_OK and reply->hold on a grant). */
int ht_pending_rc(const ht_pending *p);

/* ---- misc ---- */
uint64_t ht_seed(void);       /* HF_TEST_SEED or a time-based one */
uint64_t ht_rand(uint64_t *s); /* splitmix64 */
int64_t ht_mono_ms(void);
void ht_sleep_ms(int ms);
/* Sets cmocka's test filter from HF_TEST_FILTER (run only the matching tests) and its skip
 * filter from HF_TEST_SKIP (leave the matching tests out), each if set. */
void ht_apply_filter(void);

#endif /* HF_TEST_HARNESS_H */
