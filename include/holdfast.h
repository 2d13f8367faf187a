/*
 * holdfast.h — the whole public API of libholdfast: stores, resources, holds, events.
 * One primitive, the hold: n units of one or more resources for an owner, with a lease,
 * a secret token and a fence per resource. Everything public is prefixed hf_.
 */
#ifndef HOLDFAST_H
#define HOLDFAST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define HF_VERSION "0.1.0"

/* ---- Limits: every size, count and wait the library accepts. ---------------------- */

#define HF_NAME_MAX 255            /* resource name: 1..255 bytes of UTF-8, no controls */
#define HF_OWNER_MAX 255           /* owner: 1..255 bytes of UTF-8, no controls */
#define HF_IDEMPOTENCY_KEY_MAX 255 /* idempotency key: 1..255 printable ASCII bytes */
#define HF_CLAIMS_MAX 64           /* resources named in one hold request */
#define HF_CAPACITY_MAX 1000000000 /* units of one resource */
#define HF_TTL_MAX_MS (7LL * 24 * 3600 * 1000) /* a lease: 1 ms .. 7 days */
#define HF_WAIT_MAX_MS (3600LL * 1000)          /* a wait: 0 (NOWAIT) .. 1 hour */
#define HF_META_MAX 65536          /* resource metadata: a JSON object of at most 64 KiB */
#define HF_LIST_MAX 1000           /* items in one list or event read */
#define HF_ID_LEN 32               /* hold id: 32 lowercase hex characters */
#define HF_TOKEN_LEN 32            /* token: 32 lowercase hex characters = 128 random bits */
#define HF_MESSAGE_MAX 256         /* error message, NUL included */

/* ---- Errors: negative codes, one table. ------------------------------------------- */

/* X(name, value, http status, stable code string, default message) */
#define HF_ERROR_MAP(X)                                                                          \
	X(EINVAL, -1, 400, "invalid_argument", "invalid argument")                                   \
	X(ENORESOURCE, -2, 404, "resource_not_found", "no such resource")                            \
	X(ENOHOLD, -3, 404, "hold_not_found", "no such hold")                                        \
	X(EVERSION, -4, 409, "version_conflict", "resource version does not match")                  \
	X(EHELD, -5, 409, "resource_held", "resource is held")                                       \
	X(EUNAVAILABLE, -6, 409, "unavailable", "not available now")                                \
	X(ETIMEDOUT, -7, 409, "wait_timeout", "wait ended before the units were free")              \
	X(ECAPACITY, -8, 422, "exceeds_capacity", "more units than the resource's capacity")         \
	X(ECAPMISMATCH, -9, 409, "capacity_mismatch", "resource exists with another capacity")       \
	X(ECAPINUSE, -10, 409, "capacity_in_use", "capacity below the units held")                   \
	X(ETOKEN, -11, 403, "bad_token", "token does not match the hold")                            \
	X(EENDED, -12, 410, "hold_ended", "hold has already ended")                                  \
	X(ELIMIT, -13, 429, "limit_exceeded", "a configured limit was reached")                      \
	X(EIDEMMISMATCH, -14, 422, "idempotency_mismatch", "idempotency key reused for another request") \
	X(EIDEMBUSY, -15, 409, "idempotency_in_flight", "a request with this idempotency key is in flight") \
	X(ECANCELED, -16, 409, "cancelled", "request was cancelled")                                 \
	X(ESTORAGE, -17, 500, "storage_error", "storage failed")                                     \
	X(ECORRUPT, -18, 500, "store_corrupt", "store file is damaged or not a holdfast store")     \
	X(EENGINE, -19, 503, "engine_unavailable", "engine cannot be reached")                       \
	X(ENOMEM, -20, 503, "out_of_memory", "out of memory")                                        \
	X(ECLOSED, -21, 503, "shutting_down", "store is closing")                                    \
	X(ENOTSUP, -22, 501, "not_supported", "not supported by this engine")                        \
	X(EPROTO, -23, 502, "protocol_error", "unexpected reply from the server")                    \
	X(EJSON, -24, 400, "invalid_json", "request body is not valid JSON")                         \
	X(EBODY, -25, 413, "body_too_large", "request body is too large")                            \
	X(EROUTE, -26, 404, "route_not_found", "no such route")                                      \
	X(EMETHOD, -27, 405, "method_not_allowed", "method not allowed on this route")               \
	X(EAUTH, -28, 401, "unauthorized", "missing or wrong API key")                               \
	X(EINTERNAL, -29, 500, "internal_error", "internal error")                                   \
	X(ESAGATYPE, -30, 422, "invalid_saga_type", "saga type is not valid")                        \
	X(ENOSAGATYPE, -31, 404, "unknown_saga_type", "no such saga type")                           \
	X(ENOSAGA, -32, 404, "saga_not_found", "no such saga")                                       \
	X(ESAGASTATE, -33, 409, "saga_state", "the saga's state does not allow this")                 \
	X(EOPERATOR, -34, 403, "operator_needs_api_key", "operator actions need holdfastd's --api-key") \
	X(ETRIMMED, -35, 410, "events_trimmed", "the events asked for were trimmed")

enum hf_error_code {
	HF_OK = 0,
#define HF__ERROR_ENUM(name, value, status, code, message) HF_##name = (value),
	HF_ERROR_MAP(HF__ERROR_ENUM)
#undef HF__ERROR_ENUM
};

/* An error as a value: the code and a message naming what was wrong. */
typedef struct hf_error {
	int code;                      /* HF_OK or a negative HF_E* code */
	char message[HF_MESSAGE_MAX];  /* lowercase, specific, no final full stop */
} hf_error;

const char *hf_err_name(int code);      /* stable code string, "invalid_argument"; never NULL */
const char *hf_strerror(int code);      /* default message of the code; never NULL */
int hf_err_http_status(int code);       /* HTTP status of the code; 500 for unknown codes */
int hf_err_from_name(const char *name); /* inverse of hf_err_name; HF_EINTERNAL if unknown */

/* ---- Time. ---------------------------------------------------------------------- */

/* A clock: milliseconds since the Unix epoch. */
typedef int64_t (*hf_clock_fn)(void *ctx);
int64_t hf_now_ms(void); /* the system clock (CLOCK_REALTIME) in ms */

/* ---- Opening a store. ------------------------------------------------------------ */

typedef struct hf_store hf_store;

typedef struct hf_options {
	/* The clock the engine judges leases and waits by. NULL: the system clock, and the store
	 * runs its own timer for expiries and wait timeouts. With a custom clock the store runs no
	 * timer: call hf_store_tick() after moving the clock (tests do this). */
	hf_clock_fn clock;
	void *clock_ctx;
	int64_t hold_retention_ms;        /* ended holds stay readable this long; default 24 h */
	int64_t idempotency_retention_ms; /* idempotency records kept this long; default 24 h */
	size_t max_waiters;               /* parked acquires at once; default 100000 */
	size_t max_holds;                 /* live holds at once; default 1000000 */
	size_t max_resources;             /* resources at once; default 1000000 */
	/* NULL (default): none. Else an engine URL used only while the primary answers
	 * HF_EENGINE: acquires (and calls on the holds made there) go to it, with fences from
	 * 2^48 up. Split-brain risk: a primary that is only unreachable may still grant the same
	 * lock. See docs/api.md (--fallback-engine). */
	const char *fallback_url;
	/* Event retention (file:, postgres://, redis://; docs/events.md "Retention"): keep the
	 * newest events_keep_count events and those younger than events_keep_ms; 0 (default)
	 * keeps them all. Never trims past the lowest checkpoint (resources holdfast.relay/NAME/
	 * checkpoint, meta {"seq":N}) unless events_trim_force. Reading after a trimmed seq
	 * answers HF_ETRIMMED. Per-resource revisions keep counting. */
	int64_t events_keep_count;
	int64_t events_keep_ms;
	bool events_trim_force;
} hf_options;

void hf_options_init(hf_options *opt); /* fills the defaults above */

/*
 * Opens the engine named by the URL's scheme:
 *   file:PATH          the embedded engine: state in memory, journal in SQLite at PATH
 *   http://host:port   a holdfastd server
 * Other schemes answer HF_ENOTSUP. `opt` may be NULL for the defaults. On success *out is a
 * store you must hf_close(); on failure *out is NULL and `err` (may be NULL) says why.
 */
int hf_open(const char *url, const hf_options *opt, hf_store **out, hf_error *err);

/* Fails every parked wait with HF_ECLOSED, makes every completed change durable, runs the
 * callbacks of every completion not yet dispatched (in this thread), and frees the store. */
void hf_close(hf_store *store);

const char *hf_store_scheme(const hf_store *store); /* "file", "http", ... */

/* ---- Resources, holds and events as the library returns them. ------------------------ */

typedef enum hf_mode {
	HF_MODE_UNITS = 0, /* take the units each claim names */
	HF_MODE_SHARED,    /* take 1 unit of each resource: a reader */
	HF_MODE_EXCLUSIVE, /* take the whole capacity of each resource: a writer */
} hf_mode;

typedef enum hf_hold_state {
	HF_HOLD_TENTATIVE = 0, /* a lease that ends at expires_at unless extended or confirmed */
	HF_HOLD_CONFIRMED,     /* kept until released */
	HF_HOLD_RELEASED,      /* ended by its holder */
	HF_HOLD_EXPIRED,       /* ended by its lease */
} hf_hold_state;

const char *hf_mode_name(hf_mode mode);                /* "units", "shared", "exclusive" */
const char *hf_hold_state_name(hf_hold_state state);   /* "tentative", ... */
int hf_mode_parse(const char *s, hf_mode *out);        /* HF_OK or HF_EINVAL */
int hf_hold_state_parse(const char *s, hf_hold_state *out);

typedef struct hf_resource {
	char *name;
	int64_t capacity;
	char *meta;        /* JSON object text, or NULL */
	int64_t version;   /* declared resources: 1 on creation, +1 on each update; implicit: 0 */
	bool declared;     /* false: implicit, created by a hold and gone when idle */
	int64_t held;      /* units held by live holds */
	int64_t holds;     /* live holds (tentative + confirmed) */
	int64_t waiters;   /* parked acquires that name it */
} hf_resource;

typedef struct hf_hold_part {
	char *resource;
	int64_t units;
	int64_t fence; /* strictly increasing per resource, across restarts */
} hf_hold_part;

/* A parked acquire as a resource's queue shows it; never its token or idempotency key. */
typedef struct hf_waiter_claim {
	char *resource;
	int64_t units; /* 0 for shared and exclusive waits: decided by the capacity at grant */
} hf_waiter_claim;

typedef struct hf_waiter {
	int64_t position;         /* 1: first in the listed resource's queue */
	char *owner;
	hf_mode mode;
	bool any;                 /* any-of: one of its claims will do */
	int64_t units;            /* on the listed resource (0 as in hf_waiter_claim) */
	int64_t waiting_since_ms; /* when the acquire arrived */
	int64_t wait_deadline_ms; /* when the wait ends unless granted */
	size_t n_claims;          /* every resource it waits for, by name */
	hf_waiter_claim *claims;
} hf_waiter;

typedef struct hf_hold {
	char id[HF_ID_LEN + 1];
	char token[HF_TOKEN_LEN + 1]; /* only in the reply to the acquire (and its replays); else "" */
	char *owner;
	hf_hold_state state;
	hf_mode mode;
	int64_t created_at_ms;
	int64_t expires_at_ms; /* tentative: end of the lease; confirmed: 0; ended: when the lease was due */
	int64_t ended_at_ms;   /* released or expired: when; else 0 */
	bool replayed;         /* this reply repeats an earlier outcome for the same idempotency key */
	size_t n_parts;        /* in the fixed internal order: by resource name, bytewise */
	hf_hold_part *parts;
} hf_hold;

/* One resource an event touches, with that resource's event revision after it. */
typedef struct hf_event_revision {
	char *resource;
	int64_t revision; /* gap-free per resource, from 1, across restarts and idle periods */
} hf_event_revision;

typedef struct hf_event {
	uint64_t seq;     /* commit order; gap-free on the embedded engine, may skip on shared ones */
	int64_t at_ms;
	char *type;       /* "resource.created", "hold.granted", ... */
	char *resource;   /* the resource it concerns (a hold's first part); NULL if none */
	char *hold_id;    /* NULL unless a hold event */
	char *data;       /* JSON object text describing the change */
	int64_t revision; /* `resource`'s revision after this event; 0 when resource is NULL
	                     or the event was written before revisions existed (docs/api.md) */
	size_t n_revisions;            /* every resource the event touches (a multi-resource */
	hf_event_revision *revisions;  /* hold's parts), by name; includes `resource` */
} hf_event;

/* ---- Requests and replies. -------------------------------------------------------- */

typedef enum hf_op {
	HF_OP_PUT_RESOURCE = 1, /* name, capacity, meta, if_version */
	HF_OP_GET_RESOURCE,     /* name */
	HF_OP_DELETE_RESOURCE,  /* name, if_version */
	HF_OP_LIST_RESOURCES,   /* cursor (names after it), limit */
	HF_OP_ACQUIRE,          /* acquire */
	HF_OP_EXTEND,           /* hold_id, token, ttl_ms */
	HF_OP_CONFIRM,          /* hold_id, token */
	HF_OP_RELEASE,          /* hold_id, token */
	HF_OP_GET_HOLD,         /* hold_id */
	HF_OP_LIST_HOLDS,       /* owner, resource, state (filters), cursor (ids after it), limit */
	HF_OP_READ_EVENTS,      /* after, limit, wait_ms */
	/* Saga storage, for the hf_saga_* functions below (use those): arguments and answers are
	 * JSON text in `json`. Engines without sagas answer HF_ENOTSUP. */
	HF_OP_SAGA_TYPE_PUT,    /* name, json (the validated type) */
	HF_OP_SAGA_TYPE_GET,    /* name */
	HF_OP_SAGA_TYPE_LIST,   /* cursor, limit */
	HF_OP_SAGA_SAVE,        /* json {"id","type","state","record",...}, if_version (0: new) */
	HF_OP_SAGA_GET,         /* name = the saga id */
	HF_OP_SAGA_LIST,        /* json {"state","type"} filters, cursor (ids after it), limit;
	                           the last saga op (store.c checks the range) */
	HF_OP_LIST_WAITERS,     /* name, cursor (a position: the waiters after it), limit */
} hf_op;

/* One resource named by an acquire. */
typedef struct hf_claim {
	const char *name;
	int64_t units;    /* units to take (HF_MODE_UNITS); ignored for shared and exclusive */
	int64_t capacity; /* > 0: an implicit resource of this capacity (created on first use);
	                     0: the resource must exist */
} hf_claim;

typedef struct hf_acquire_req {
	const char *owner;
	const hf_claim *claims;
	size_t n_claims;           /* 1..HF_CLAIMS_MAX, names distinct */
	int64_t ttl_ms;            /* the lease, 1..HF_TTL_MAX_MS */
	int64_t wait_ms;           /* 0: fail at once (NOWAIT); else wait in FIFO order */
	hf_mode mode;
	bool any;                  /* take the first claim that can be granted, not all of them */
	const char *idempotency_key; /* NULL or a key: a repeat returns the first outcome */
} hf_acquire_req;

/* A request. Fill the fields its op names; the rest are ignored. The library copies what it
 * needs before hf_submit returns: your strings may go away then. */
typedef struct hf_request {
	hf_op op;
	const char *name;     /* resource name */
	int64_t capacity;     /* PUT_RESOURCE: 1..HF_CAPACITY_MAX */
	const char *meta;     /* PUT_RESOURCE: JSON object text or NULL (keeps none) */
	int64_t if_version;   /* PUT/DELETE: -1 any; 0 must not exist (PUT); > 0 must equal */
	hf_acquire_req acquire;
	const char *hold_id;  /* 32 lowercase hex; anything else names no hold: HF_ENOHOLD */
	const char *token;
	/* RELEASE: true ends the hold without its token, an operator's act (recorded in the
	 * hold.released event as "by":"operator"). The library trusts its caller with it;
	 * holdfastd allows it only to a request carrying its API key. */
	bool operator_release;
	int64_t ttl_ms;       /* EXTEND: the new lease from now */
	const char *owner;    /* LIST_HOLDS filter, NULL for any */
	const char *resource; /* LIST_HOLDS filter, NULL for any */
	int state;            /* LIST_HOLDS filter: an hf_hold_state, or -1 for any */
	const char *cursor;   /* LIST_*: start after this name or id (LIST_WAITERS: position, as
	                         decimal text); NULL from the start */
	size_t limit;         /* LIST_* and READ_EVENTS: 1..HF_LIST_MAX; 0 means 100 */
	uint64_t after;       /* READ_EVENTS: events with seq > after */
	int64_t wait_ms;      /* READ_EVENTS: wait this long for a first event; 0 answers at once */
	const char *json;     /* HF_OP_SAGA_*: the argument, JSON text */
} hf_request;

void hf_request_init(hf_request *req, hf_op op); /* zeroes and sets if_version = -1, state = -1 */

/* A reply. Which fields are set depends on the op; on error only `error` is (and, for
 * HF_ETRIMMED, `trimmed_upto`). */
typedef struct hf_reply {
	hf_op op;
	hf_error error;
	hf_resource *resource;   /* PUT/GET/DELETE_RESOURCE (DELETE: as it was) */
	hf_hold *hold;           /* ACQUIRE, EXTEND, CONFIRM, RELEASE, GET_HOLD */
	hf_resource *resources;  /* LIST_RESOURCES */
	size_t n_resources;
	hf_hold *holds;          /* LIST_HOLDS */
	size_t n_holds;
	hf_event *events;        /* READ_EVENTS */
	size_t n_events;
	hf_waiter *waiters;      /* LIST_WAITERS, in queue order */
	size_t n_waiters;
	uint64_t last_seq;       /* READ_EVENTS: the newest durable sequence number */
	uint64_t trimmed_upto;   /* READ_EVENTS failed with HF_ETRIMMED: the events up to this
	                          * seq are gone (retention); a read after it goes on */
	bool more;               /* LIST_*: more items after the last one returned */
	char *json;              /* HF_OP_SAGA_*: the answer, JSON text */
} hf_reply;

void hf_reply_free(hf_reply *reply); /* frees the reply and all it points to; NULL is fine */
/* A reply shares one allocation with its call and a copy of its request: a kept reply keeps
 * that whole block alive, about 650 bytes (64-bit) plus the request's strings (names, meta,
 * JSON argument) and claims. To keep one item for long, copy it (hf_hold_dup) and free the
 * reply. */

/* An item as JSON text, exactly as the HTTP API shows it (docs/api.md): for logs, scripts
 * and programs that pass items on. The string is yours to free(); NULL when out of memory. */
char *hf_hold_json(const hf_hold *hold); /* includes "token" only if hold->token is set */
char *hf_resource_json(const hf_resource *res);
char *hf_event_json(const hf_event *ev);

/* Deep copies and frees of single items, for callers that keep one beyond its reply. */
hf_hold *hf_hold_dup(const hf_hold *hold);
void hf_hold_free(hf_hold *hold);

/* ---- Calling: asynchronous and blocking. ----------------------------------------------- */

/* Called once per submitted request with its reply, which is yours to hf_reply_free(). */
typedef void (*hf_done_fn)(void *arg, hf_reply *reply);

/*
 * Starts a request without blocking. On HF_OK `done` will be called exactly once, from
 * hf_store_dispatch() in the thread that calls it, and *call_id (may be NULL) identifies the
 * request for hf_cancel(). On an error return `done` is never called and `err` says why.
 * Mutations are acknowledged only once durable.
 */
int hf_submit(hf_store *store, const hf_request *req, hf_done_fn done, void *arg,
              uint64_t *call_id, hf_error *err);

/* Stops a parked acquire or event wait: it completes with HF_ECANCELED and takes nothing.
 * A request that has already completed, or is not waiting, is left alone. */
void hf_cancel(hf_store *store, uint64_t call_id);

/* A file descriptor that is readable while completions wait for hf_store_dispatch(). Put it
 * in your event loop; it stays the same for the life of the store. */
int hf_store_fd(hf_store *store);

/* Runs the callbacks of every completion ready now; returns how many ran. */
int hf_store_dispatch(hf_store *store);

/* With a custom clock: applies the expiries and wait timeouts due at the clock's time now. */
void hf_store_tick(hf_store *store);

/* For event loops: the changes submitted between begin and end share journal commits (file:
 * stores; other engines ignore it). Answers still wait for the commit of their change. Open a
 * batch with a loop turn's first submit and end it when the turn ends: the journal's writer
 * waits for the end, so every begin needs its end soon, and a blocking call (hf_call) inside
 * a batch would wait for itself. */
void hf_store_batch_begin(hf_store *store);
void hf_store_batch_end(hf_store *store);

/* Can the store take changes now? HF_OK, or the code and, in `err` (may be NULL), why not:
 * e.g. HF_ESTORAGE while the embedded engine cannot commit to its journal (disk full); it
 * retries by itself and answers HF_OK again once a commit succeeds. Does not block. Engines
 * that cannot tell answer HF_OK (their calls report failures themselves). */
int hf_store_health(hf_store *store, hf_error *err);

/* Blocking form: submits and waits for the reply in this thread. Returns the reply's error
 * code; *reply is always set (free it), carrying the error too. Safe from many threads. */
int hf_call(hf_store *store, const hf_request *req, hf_reply **reply);

/* Blocking conveniences for the common calls. On HF_OK *hold is yours to hf_hold_free(). */
int hf_acquire(hf_store *store, const hf_acquire_req *req, hf_hold **hold, hf_error *err);
int hf_extend(hf_store *store, const char *hold_id, const char *token, int64_t ttl_ms,
              hf_hold **hold, hf_error *err);
int hf_confirm(hf_store *store, const char *hold_id, const char *token, hf_hold **hold,
               hf_error *err);
int hf_release(hf_store *store, const char *hold_id, const char *token, hf_hold **hold,
               hf_error *err);

/* ---- Watchdog: keep a hold's lease alive while work runs. ----------------------------- */

typedef struct hf_watchdog hf_watchdog;

/* Called once, from the watchdog's thread, when the hold is lost: an extension was refused
 * (bad token, ended, gone) or the lease ran out while extensions failed. */
typedef void (*hf_lost_fn)(void *arg, const hf_error *why);

/*
 * Extends the hold by ttl_ms every ttl_ms/3 on a thread of its own until hf_watchdog_stop().
 * The store must outlive the watchdog. `lost` may be NULL (then poll hf_watchdog_lost()).
 */
int hf_watchdog_start(hf_store *store, const char *hold_id, const char *token, int64_t ttl_ms,
                      hf_lost_fn lost, void *arg, hf_watchdog **out, hf_error *err);
bool hf_watchdog_lost(hf_watchdog *wd);  /* true once the hold is known lost */
void hf_watchdog_stop(hf_watchdog *wd);  /* stops extending (the hold is kept) and frees */

/* ---- Sagas: workflows of hold and HTTP steps with compensations (docs/sagas.md). ------- */

/*
 * A saga type is data: ordered steps, each an action and, where it changes something, a
 * compensation. The store runs sagas on a few threads of its own, checkpointing each
 * transition; after a restart (hf_open) every unfinished saga resumes from its checkpoint.
 * The embedded (file:) and PostgreSQL engines keep sagas (on PostgreSQL several instances
 * share them, one owner per saga by lease); other engines answer HF_ENOTSUP.
 *
 * Every function answers JSON text in *json (yours to free(); NULL on error, with `err` set).
 * Shapes are those of the HTTP API (docs/api.md, "Sagas"); hold tokens are never shown.
 */
#define HF_SAGA_STATES "running, compensating, completed, failed, compensation_failed"

/* Registers (or replaces: version + 1) the type `name` from its JSON text. Invalid:
 * HF_ESAGATYPE with a message naming the path ("steps[2].action.http.url: ..."). */
int hf_saga_type_put(hf_store *store, const char *name, const char *type_json, char **json,
                     hf_error *err);
int hf_saga_type_get(hf_store *store, const char *name, char **json, hf_error *err);
/* {"items":[types...],"more":bool}, by name after `cursor` (NULL: from the start). */
int hf_saga_type_list(hf_store *store, const char *cursor, size_t limit, char **json,
                      hf_error *err);

/* Starts a saga of `type` with `input_json` (a JSON object). With an idempotency key, a repeat
 * answers the first saga (*replayed = true; may be NULL); the same key with another type or
 * input is HF_EIDEMMISMATCH. Answers the saga as hf_saga_get does. */
int hf_saga_start(hf_store *store, const char *type, const char *input_json,
                  const char *idempotency_key, char **json, bool *replayed, hf_error *err);
/* The saga: state, steps, timeline (docs/sagas.md). HF_ENOSAGA if there is none. */
int hf_saga_get(hf_store *store, const char *id, char **json, hf_error *err);
/* {"items":[summaries...],"more":bool} by id after `cursor`; state and type filter (NULL: any). */
int hf_saga_list(hf_store *store, const char *state, const char *type, const char *cursor,
                 size_t limit, char **json, hf_error *err);
/* Retries the compensations of a saga parked as compensation_failed (a fresh budget);
 * HF_ESAGASTATE in any other state. Answers the saga. */
int hf_saga_resume(hf_store *store, const char *id, char **json, hf_error *err);

/* ---- TCC / two-phase reservations (docs/sagas.md, "TCC"). ------------------------------ */

/* Starts a transaction from `request_json`: {"timeout_ms": N, "participants": [{"hold":
 * {"resource","units","capacity","mode"}} | {"http": {"try","confirm","cancel","body"}}]}.
 * Every try runs within timeout_ms (a tentative hold's lease); when all succeed every
 * participant is confirmed, else every try is cancelled. Idempotent by key as hf_saga_start.
 * Answers the transaction as hf_tx_get does. */
int hf_tx_start(hf_store *store, const char *request_json, const char *idempotency_key,
                char **json, bool *replayed, hf_error *err);
/* The transaction: state (trying, confirming, confirmed, cancelling, cancelled,
 * cancel_failed), its participants' states, steps and timeline. HF_ENOSAGA if there is none. */
int hf_tx_get(hf_store *store, const char *id, char **json, hf_error *err);

#ifdef __cplusplus
}
#endif
#endif /* HOLDFAST_H */
