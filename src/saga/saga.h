/*
 * saga.h — the saga subsystem of libholdfast (src/saga/): saga types parsed from JSON
 * (type.c), templates (template.c), the saga record (record.c), HTTP step calls
 * (http_call.c; AMQP ones are src/relay/request.c) and the orchestrator threads that run
 * sagas on a store (orchestrator.c).
 * Internal: the public face is hf_saga_* in holdfast.h. Format: docs/sagas.md.
 */
#ifndef HF_SAGA_H
#define HF_SAGA_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "holdfast.h"

/* ---- Limits and defaults (docs/sagas.md lists them). ---- */
#define HF__SAGA_TYPE_MAX (256 * 1024)   /* a type's JSON text */
#define HF__SAGA_INPUT_MAX (64 * 1024)   /* a saga's input JSON text */
#define HF__SAGA_STEPS_MAX 64
#define HF__SAGA_STEP_NAME_MAX 64
#define HF__SAGA_TIMELINE_MAX 1000       /* entries kept; older ones are dropped, counted */
#define HF__SAGA_RESULT_MAX (64 * 1024)  /* an HTTP step's reply body kept in the record */
#define HF__SAGA_REPLY_MAX (1024 * 1024) /* an AMQP reply longer than this fails the attempt */
#define HF__SAGA_ATTEMPTS_MAX 100
#define HF__SAGA_BACKOFF_MAX_MS (10LL * 60 * 1000)
#define HF__SAGA_TIMEOUT_MAX_MS (10LL * 60 * 1000)

#define HF__SAGA_DEFAULT_ATTEMPTS 3
#define HF__SAGA_DEFAULT_BACKOFF_MS 200
#define HF__SAGA_DEFAULT_MAX_BACKOFF_MS 5000
#define HF__SAGA_DEFAULT_TIMEOUT_MS 10000
#define HF__SAGA_DEFAULT_COMP_ATTEMPTS 10 /* a compensation's budget before the saga parks */

struct hf__saga_retry {
	int attempts;           /* 1..HF__SAGA_ATTEMPTS_MAX; 1 = no retry */
	int64_t backoff_ms;     /* before the 2nd attempt; doubles each time */
	int64_t max_backoff_ms; /* the cap of the doubling */
};

enum hf__saga_kind { HF__SAGA_HTTP, HF__SAGA_HOLD, HF__SAGA_AMQP };
enum hf__saga_hold_op { HF__HOLD_ACQUIRE, HF__HOLD_EXTEND, HF__HOLD_CONFIRM, HF__HOLD_RELEASE };

/* An action or compensation. `spec` is the inner object ({"method",...}, {"routing_key",...}
 * or {"op",...}),
 * still holding its templates; it is borrowed from the type's JSON. */
struct hf__saga_call {
	enum hf__saga_kind kind;
	enum hf__saga_hold_op hold_op; /* HF__SAGA_HOLD */
	int of;                        /* hold ops other than acquire: the acquiring step's index */
	json_t *spec;
	struct hf__saga_retry retry;
	int64_t timeout_ms; /* one attempt, HTTP and AMQP */
};

struct hf__saga_step {
	const char *name; /* borrowed from the type's JSON */
	struct hf__saga_call action;
	bool has_compensation;
	struct hf__saga_call compensation;
	/* The compensation is harmless when the action never reached the service (a TCC
	 * participant's barrier): a step that may have started is compensated even when it failed
	 * before its re-run could be sent. */
	bool barrier;
};

struct hf__saga_type {
	json_t *json; /* the type as given (owned); steps borrow from it */
	size_t n_steps;
	struct hf__saga_step steps[HF__SAGA_STEPS_MAX];
};

/* Parses and validates a type. On error returns HF_EINVAL (or HF_ENOMEM) with a message that
 * names the path ("steps[2].action.http.url: ..."). On success *out is yours to
 * hf__saga_type_free(); `json` is not consumed (the type takes its own reference). */
int hf__saga_type_parse(json_t *json, struct hf__saga_type **out, hf_error *err);
void hf__saga_type_free(struct hf__saga_type *t);
int hf__saga_step_index(const struct hf__saga_type *t, const char *name); /* -1 if none */

/* ---- Templates (template.c). ---- */

/* Calls `ref` for every {{path}} in the strings of `tree` (keys untouched); stops at the first
 * non-zero answer and returns it. A malformed template (an unclosed "{{") answers HF_EINVAL
 * with `err` set, naming `where`. */
typedef int (*hf__template_ref_fn)(void *arg, const char *path, hf_error *err);
int hf__template_refs(const json_t *tree, const char *where, hf__template_ref_fn ref, void *arg,
                      hf_error *err);

/* Expands `tree` against `ctx` ({"input","steps","saga","step"}): a string that is exactly one
 * template becomes the referenced value (any JSON type); other strings interpolate the values
 * as text. A reference to a missing value fails with HF_EINVAL naming it. Returns a new tree
 * (yours) or NULL with `err` set. */
json_t *hf__template_expand(const json_t *tree, const json_t *ctx, hf_error *err);

/* ---- HTTP step calls (http_call.c). ---- */

struct hf__http_result {
	int status;     /* 0 when no answer came (connection error, timeout) */
	bool sent;      /* the whole request went out: without an answer, it may have acted */
	char *body;     /* the reply body, NUL-terminated; NULL when none (yours to free) */
	size_t body_len;
};

/* Sends one request over plain HTTP/1.1 (http://host[:port]/path only) and waits at most
 * until `deadline_mono_ms` (CLOCK_MONOTONIC) or until *stop (may be NULL) becomes true.
 * `idempotency_key` may be NULL; `extra_headers` is NULL or whole lines ("Name: v\r\n").
 * Returns HF_OK with the status and body, HF_ETIMEDOUT, HF_ECANCELED (stopped), HF_EINVAL (a
 * bad URL) or HF_EENGINE (connection failed, a malformed reply), with `err` set. */
int hf__http_call(const char *method, const char *url, const char *body,
                  const char *idempotency_key, const char *extra_headers, int64_t deadline_mono_ms,
                  const _Atomic bool *stop, struct hf__http_result *res, hf_error *err);
void hf__http_result_clear(struct hf__http_result *res);
int64_t hf__mono_ms(void);

/* ---- The orchestrator (orchestrator.c), one per store whose engine keeps sagas. ---- */

struct hf__orch;
/* Queues the store's unfinished sagas; the workers start with the first queued saga (now, or
 * at a later wake). `shared`: instances share the sagas (PostgreSQL), so a rescan thread
 * watches for a dead owner's sagas from now on (docs/sagas.md, "The orchestrator"). */
int hf__orch_start(hf_store *store, bool shared, struct hf__orch **out, hf_error *err);
void hf__orch_stop(struct hf__orch *o); /* stops between steps; unfinished sagas stay as they are */
void hf__orch_wake(struct hf__orch *o, const char *saga_id); /* run (or re-run) this saga */

#endif /* HF_SAGA_H */
