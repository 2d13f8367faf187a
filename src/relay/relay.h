/*
 * relay.h — what the files of src/relay share: the relay (event log → RabbitMQ or Redis
 * Streams, with a lease and a checkpoint in the store), the message form both destinations
 * carry, and the consumer that applies each relayed event once. Built only on the public API
 * of libholdfast, librabbitmq and hiredis; names here are relay_, file-local ones static.
 */
#ifndef HF_RELAY_H
#define HF_RELAY_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <jansson.h>

#include "holdfast.h"

/* Resources whose names start with this are the relay's own (lease, checkpoint): their
 * events are never published. */
#define RELAY_OWN_PREFIX "holdfast.relay/"
#define RELAY_DEFAULT_EXCHANGE "holdfast.events"
#define RELAY_DEFAULT_STREAM_PREFIX "holdfast:events:"
#define RELAY_DEFAULT_PARTITIONS 8
#define RELAY_ROUTING_KEY_MAX 255   /* AMQP's shortstr */
#define RELAY_RECONNECT_MAX_MS 5000 /* consumers' reconnect backoff cap */

/* ---- Messages: one per (event, resource it touches). ------------------------------- */

/* One message: an event as seen by one of its resources. A hold on two resources is two
 * messages, one per resource, each with that resource's revision, so every resource's
 * messages form a gap-free sequence on its own route or partition. */
struct relay_msg {
	const hf_event *ev;
	const char *json;     /* hf_event_json(ev), shared by the event's messages */
	const char *resource; /* the resource of this copy; NULL for an event without one */
	int64_t revision;     /* that resource's revision after the event; 0 if not known */
};

/* Expands events into messages, skipping the relay's own resources. On success *msgs (an
 * array of *n) and *jsons (one text per event, NULL for skipped ones) are yours to free with
 * relay_msgs_free; HF_ENOMEM otherwise (nothing to free). */
int relay_msgs_build(const hf_event *evs, size_t n_evs, struct relay_msg **msgs, size_t *n,
                     char ***jsons);
void relay_msgs_free(struct relay_msg *msgs, char **jsons, size_t n_evs);

/* "<resource>/<revision>", or "<seq>" when there is no resource or no revision. */
void relay_message_id(const struct relay_msg *m, char *buf, size_t size);
/* "<type>.<resource>" with '.', '%', '*', '#' and bytes outside printable ASCII in the name
 * percent-encoded (so one resource is one topic word); see docs/events.md. */
void relay_routing_key(const struct relay_msg *m, char *buf, size_t size);
/* The partition of a resource: FNV-1a 64 of its bytes mod partitions; 0 for NULL. */
unsigned relay_partition(const char *resource, unsigned partitions);
bool relay_is_own(const char *resource);

/* ---- Destinations. ---------------------------------------------------------------- */

struct relay_dest_opts {
	const char *url;           /* amqp://user:pass@host:port/vhost or redis://host:port */
	const char *exchange;      /* AMQP: the topic exchange */
	unsigned partitions;       /* Redis: streams */
	const char *stream_prefix; /* Redis: stream key prefix, then the partition number */
	int64_t maxlen;            /* Redis: XADD MAXLEN ~ this; 0 keeps every entry */
};

/* A destination. deliver() sends the messages in order and returns HF_OK only once the
 * broker has taken every one of them (AMQP: confirmed and none returned; Redis: every XADD
 * answered); on failure it says why in err, drops its connection and connects again on the
 * next call. */
struct relay_sink {
	int (*deliver)(struct relay_sink *s, const struct relay_msg *msgs, size_t n, hf_error *err);
	void (*free)(struct relay_sink *s);
};

/* Creates the sink for opts->url's scheme (amqp:// or redis://; not amqps://). Does not
 * connect yet. On HF_OK *out is yours to (*out)->free(); HF_EINVAL for another scheme. */
int relay_sink_new(const struct relay_dest_opts *opts, struct relay_sink **out, hf_error *err);
struct relay_sink *relay_amqp_sink_new(const struct relay_dest_opts *opts);
struct relay_sink *relay_redis_sink_new(const struct relay_dest_opts *opts);

/* ---- The relay. ------------------------------------------------------------------- */

struct relay_opts {
	const char *store_url; /* holdfast store to read */
	const char *name;      /* destination name: the lease and checkpoint resources */
	const char *owner;     /* lease owner (who this relay is), for logs and the dashboard */
	struct relay_dest_opts dest;
	size_t batch;                /* events read and delivered per checkpoint, 1..HF_LIST_MAX */
	int64_t lease_ms;            /* lease TTL; the watchdog extends it every lease_ms/3 */
	int64_t backoff_max_ms;      /* cap of the reconnect backoff */
	uint64_t stop_after_seq;     /* > 0: return once the checkpoint has reached it (tests) */
	int64_t idle_exit_ms;        /* > 0: return after this long with nothing to deliver */
	/* The checkpoint is below the oldest event retention kept (events_trimmed): false stops
	 * the relay with HF_ETRIMMED naming both; true moves the checkpoint to the oldest kept
	 * and goes on, logging the seq range skipped (msg=skipped_trimmed). */
	bool from_floor;
	volatile sig_atomic_t *stop; /* set (by a signal handler) to stop at the next step */
};

void relay_opts_init(struct relay_opts *o);

/* Runs the relay until *stop, stop_after_seq or idle_exit_ms. Logs each step on stderr
 * (logfmt). HF_OK, or the error that ended it (bad options, a store that cannot be opened,
 * a destination that refuses the login, HF_ETRIMMED: its checkpoint was trimmed past and
 * from_floor is not set). */
int relay_run(const struct relay_opts *o, hf_error *err);

/* ---- The consumer. ---------------------------------------------------------------- */

/* What the consumer does with an event: HF_OK applied; else the message is retried (with
 * backoff) and dead-lettered after max_attempts. `json` is the message body (the event). */
typedef int (*relay_apply_fn)(void *arg, const char *resource, int64_t revision, uint64_t seq,
                              const char *json, hf_error *err);

struct relay_consume_opts {
	const char *url;          /* amqp://... or redis://... */
	const char *exchange;     /* AMQP */
	const char *queue;        /* AMQP queue, or the Redis consumer group */
	const char *consumer;     /* Redis consumer name */
	const char *const *binds; /* AMQP binding keys (default "#") */
	size_t n_binds;
	unsigned partitions;       /* Redis */
	const char *stream_prefix; /* Redis */
	const char *state_path;    /* SQLite file of the last applied revision per resource */
	unsigned prefetch;         /* AMQP basic.qos / Redis XREADGROUP COUNT */
	unsigned max_attempts;     /* deliveries before dead-lettering */
	int64_t backoff_ms;        /* first retry delay, doubled each attempt */
	int64_t message_ttl_ms;    /* AMQP x-message-ttl; 0 none */
	int max_priority;          /* AMQP x-max-priority; 0 none */
	int64_t claim_idle_ms;     /* Redis: XAUTOCLAIM entries idle this long */
	int64_t idle_exit_ms;      /* > 0: return after this long without a message */
	bool declare_only;         /* declare the queue (or group) and return */
	volatile sig_atomic_t *stop;
	relay_apply_fn apply;
	void *apply_arg;
};

struct relay_consume_stats {
	uint64_t applied;    /* events applied */
	uint64_t duplicates; /* redeliveries skipped: revision already applied */
	uint64_t gaps;       /* revisions found missing */
	uint64_t retries;    /* failed applies retried */
	uint64_t dead;       /* messages dead-lettered */
};

void relay_consume_opts_init(struct relay_consume_opts *o);
int relay_consume(const struct relay_consume_opts *o, struct relay_consume_stats *st,
                  hf_error *err);

/* ---- Shared by the consumer's two transports (consume.c). --------------------------- */

struct relay_ledger;
/* Opens (creating) the SQLite ledger of applied revisions. */
int relay_ledger_open(const char *path, struct relay_ledger **out, hf_error *err);
void relay_ledger_close(struct relay_ledger *l);

enum relay_verdict {
	RELAY_APPLIED,   /* applied now */
	RELAY_DUPLICATE, /* applied before: acknowledge and skip */
	RELAY_FAILED,    /* apply failed every attempt: dead-letter */
	RELAY_ERROR,     /* the ledger failed: stop, do not acknowledge */
};

/* Applies one message once: dedupes by (resource, revision), reports a gap (stderr,
 * st->gaps), applies with retries and backoff (attempts already made: `attempts_before`),
 * records the revision. */
enum relay_verdict relay_consume_one(const struct relay_consume_opts *o, struct relay_ledger *l,
                                     struct relay_consume_stats *st, const char *resource,
                                     int64_t revision, uint64_t seq, const char *json,
                                     unsigned attempts_before, hf_error *err);

int relay_consume_amqp(const struct relay_consume_opts *o, struct relay_ledger *l,
                       struct relay_consume_stats *st, hf_error *err);
int relay_consume_redis(const struct relay_consume_opts *o, struct relay_ledger *l,
                        struct relay_consume_stats *st, hf_error *err);

/* ---- Small shared helpers (util in message.c). ------------------------------------ */

void relay_sleep_ms(int64_t ms, volatile sig_atomic_t *stop);
/* Sleeps *ms (until stop), then doubles *ms up to cap: one step of exponential backoff. */
void relay_back_off(int64_t *ms, int64_t cap, volatile sig_atomic_t *stop);
int64_t relay_mono_ms(void);
void relay_err(hf_error *err, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void relay_log(const char *level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The seq up to which events were trimmed, from an HF_ETRIMMED answer ("events up to seq N
 * were trimmed: ...", the one wording of every engine and of holdfastd's 410, which carries
 * only code and message). False for another error. */
bool relay_trimmed_upto(const hf_error *err, uint64_t *upto);
/* Parses redis://host[:port]; host into buf. */
int relay_parse_redis_url(const char *url, char *host, size_t size, int *port, hf_error *err);

/* ---- Event sourcing: the state folded from the events alone (fold.c). ---------------- */

/* The state the events describe, in the JSON form the comparison uses:
 *   resources: name → {"capacity" (null: implicit, not in any event), "meta", "version",
 *              "declared", "held", "holds"}
 *   holds:     live hold id → {"owner", "state", "mode", "expires_at_ms",
 *              "parts": [{"resource","units","fence"}]}
 *   revisions: name → the resource's last event revision seen (kept after a delete) */
struct relay_fold {
	json_t *resources;
	json_t *holds;
	json_t *revisions;
	uint64_t seq;     /* the last event folded: the fold's position in the log */
	uint64_t events;  /* events folded */
	uint64_t unknown; /* events of a type the fold does not know (ignored) */
	uint64_t orphans; /* hold events for a hold never granted in the events read */
};

/* An empty fold (HF_ENOMEM if it cannot be made); relay_fold_free releases it. */
int relay_fold_init(struct relay_fold *f);
void relay_fold_free(struct relay_fold *f);
/* Applies one event (events must come in seq order). HF_EPROTO for data that is not JSON. */
int relay_fold_event(struct relay_fold *f, const hf_event *ev, hf_error *err);
/* Reads and folds the events after f->seq to the end of the log (or max_events, if > 0). */
int relay_fold_read(hf_store *st, struct relay_fold *f, size_t max_events, hf_error *err);
/* The live state through the API (list resources, list live holds), in the fold's form;
 * both objects are yours to json_decref. */
int relay_live_state(hf_store *st, json_t **resources, json_t **holds, hf_error *err);
/* Prints each difference between the fold and the live state as a line on `out` (may be
 * NULL) and returns how many there are. Implicit resources are compared without their
 * capacity (no event carries it) and only while they have holds (waiters are not events). */
size_t relay_fold_diff(const struct relay_fold *f, json_t *live_resources,
                       const json_t *live_holds, FILE *out);
/* Folds the whole log into f (fresh from relay_fold_init) and compares it with the live state
 * at a moment when no event came in while the state was read; *n_diffs differences. */
int relay_replay_check(hf_store *st, struct relay_fold *f, size_t *n_diffs, FILE *out,
                       hf_error *err);

/* ---- CQRS read models (project.c): the fold kept in SQLite with its position. -------- */

/* Cached views are the Redis keys <prefix>availability:<resource> and <prefix>owner:<owner>. */
#define RELAY_VIEW_CACHE_PREFIX "holdfast:view:"

struct relay_project;
/* Opens (creating) the projection file; `rebuild` empties it first (a rebuild from zero). On
 * HF_OK *out is yours to relay_project_close. */
int relay_project_open(const char *path, bool rebuild, struct relay_project **out, hf_error *err);
void relay_project_close(struct relay_project *p);
uint64_t relay_project_seq(const struct relay_project *p); /* the last event it reflects */
/* Publishes the projection's position in the store, as the declared resource
 * holdfast.relay/projection.NAME/checkpoint with meta {"seq": N} (written after each page
 * with events other than the relays' own), so retention keeps what it has not folded. */
int relay_project_publish(struct relay_project *p, const char *name, hf_error *err);
/* Moves the position of a projection whose next events were trimmed (HF_ETRIMMED from
 * relay_project_sync) to `upto`, the last trimmed seq, logging the range skipped
 * (msg=skipped_trimmed): what those events changed is missing from the views. */
int relay_project_skip_to(struct relay_project *p, uint64_t upto, hf_error *err);
/* Folds the events after its position, one page (up to HF_LIST_MAX) per SQLite transaction
 * (rows + position together), deleting the cached views each page changed. wait_ms 0: stops
 * at the end of the log; > 0: follows it (long-polls) until *stop. */
int relay_project_sync(struct relay_project *p, hf_store *st, int64_t wait_ms,
                       volatile sig_atomic_t *stop, hf_error *err);
/* {"owner","holds":[{"id","state","mode","expires_at_ms","parts"}],"position":{"seq"}} */
int relay_project_owner(struct relay_project *p, const char *owner, json_t **out, hf_error *err);
/* {"resource","capacity","held","free","holds","declared","position":{"seq","revision"}};
 * capacity and free are null for an implicit resource (no event carries its capacity).
 * HF_ENORESOURCE if the projection has no such resource. */
int relay_project_availability(struct relay_project *p, const char *resource, json_t **out,
                               hf_error *err);
/* Connects the Redis cache (redis://host:port): relay_project_sync then deletes the keys of
 * the views each batch changed, and relay_project_cached reads through it. */
int relay_project_cache(struct relay_project *p, const char *url, int64_t ttl_ms, hf_error *err);
/* Cache-aside read of a view ("owner" or "availability"): GET; on a miss, read the
 * projection and SET it with the TTL. *json is yours to free; *hit tells which path. */
int relay_project_cached(struct relay_project *p, const char *view, const char *name,
                         char **json, bool *hit, hf_error *err);

/* ---- Request/reply over RabbitMQ (request.c). -------------------------------------- */

struct relay_request {
	const char *url;         /* amqp://user:pass@host:port/vhost */
	const char *exchange;    /* "" = the default exchange (routing key = queue name) */
	const char *routing_key; /* where the service listens */
	const char *body;        /* the request (JSON by convention) */
	int64_t timeout_ms;      /* how long to wait for the reply; also the request's TTL */
	const char *message_id;  /* NULL, or the message_id property (a saga step's key) */
	const _Atomic bool *stop; /* NULL, or looked at every 100 ms: true ends with HF_ECANCELED */
	bool *sent;              /* NULL, or set once the request is published (it may then act) */
};

/* Publishes body with reply_to = an exclusive reply queue and a random correlation id,
 * `mandatory`, then waits for the reply with that correlation id. On HF_OK *reply (the
 * reply's body) is yours to free. HF_ETIMEDOUT: no reply in time; HF_EUNAVAILABLE: no queue
 * is bound to the key (returned unroutable); HF_EENGINE: the broker or connection failed;
 * HF_ECANCELED: *stop became true. A connection of its own, closed after. Part of libholdfast
 * (saga steps call it), with amqp_conn.c. */
int relay_amqp_request(const struct relay_request *rq, char **reply, hf_error *err);

/* The same on a client that keeps its connection and reply queue between requests (connected
 * at the first, again after a failure or a timeout, or when the URL changes). One thread at a
 * time; relay_amqp_client_new answers NULL when out of memory; _free(NULL) does nothing. */
struct relay_amqp_client;
struct relay_amqp_client *relay_amqp_client_new(void);
void relay_amqp_client_free(struct relay_amqp_client *cl);
int relay_amqp_request_on(struct relay_amqp_client *cl, const struct relay_request *rq,
                          char **reply, hf_error *err);

#endif /* HF_RELAY_H */
