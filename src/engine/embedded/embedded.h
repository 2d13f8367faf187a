/*
 * embedded.h — the parts of the embedded engine (file:PATH) and how they meet:
 *   map.c      string-keyed hash map and a binary min-heap with back-pointers
 *   state.c    the hold semantics in memory; produces journal records and completions
 *   journal.c  the SQLite journal: schema, loading, writing one batch per transaction
 *   row.c      the journal rows of resources, holds and idempotency records (binary; JSON read)
 *   engine.c   threads, locking, group commit, timers: the hf__engine_ops table
 */
#ifndef HF_EMBEDDED_H
#define HF_EMBEDDED_H

#include <stdatomic.h>
#include <stdint.h>

#include "core/core.h"
#include "core/retention.h"
#include "engine/engine.h"

/* ---- map.c ---- */

/* A hash map from NUL-terminated keys to values. Keys are not copied: each key must live in
 * its value and stay unchanged while the entry exists. */
struct hf__map {
	struct hf__map_entry **buckets;
	size_t n_buckets;
	size_t count;
};
void hf__map_init(struct hf__map *map);
void hf__map_release(struct hf__map *map); /* frees the table, not the values */
void *hf__map_get(const struct hf__map *map, const char *key);
int hf__map_put(struct hf__map *map, const char *key, void *value); /* HF_OK or HF_ENOMEM */
/* Adds an entry unless the key is there: then nothing changes and *present is the value
 * there (else NULL). One lookup where a get and a put take two. HF_OK or HF_ENOMEM. */
int hf__map_add(struct hf__map *map, const char *key, void *value, void **present);
/* The value of `key`, or, on the key's first use, a new one entered (one lookup either way,
 * no allocation made in vain): zeroed up to `key_off`, where a copy of the key follows (a
 * struct ending in a flexible char array, key_off its offsetof). Free it with free(). NULL
 * when out of memory. */
void *hf__map_intern(struct hf__map *map, const char *key, size_t key_off);
/* Room for `count` entries without growing (a load that knows its size skips the rehashes
 * of growing by doubling). HF_OK or HF_ENOMEM. */
int hf__map_reserve(struct hf__map *map, size_t count);
void *hf__map_remove(struct hf__map *map, const char *key);         /* the value or NULL */
/* Iteration: start with *pos = 0; returns the next value or NULL at the end. The map must
 * not change during an iteration. */
void *hf__map_next(const struct hf__map *map, size_t *pos, void **cursor);

/* A min-heap of items keyed by int64; each item stores its own position in *slot so that it
 * can be removed or re-keyed in O(log n). */
struct hf__heap_node {
	int64_t key;
	void *item;
	size_t *slot;
};
struct hf__heap {
	struct hf__heap_node *nodes;
	size_t count, cap;
};
#define HF__HEAP_NONE ((size_t)-1)
int hf__heap_push(struct hf__heap *heap, int64_t key, void *item, size_t *slot);
void hf__heap_remove(struct hf__heap *heap, size_t *slot);
void *hf__heap_top(const struct hf__heap *heap, int64_t *key); /* NULL if empty */
void hf__heap_release(struct hf__heap *heap);

/* ---- shared events (state.c) ---- */

/* An event in one allocation, immutable once made, shared by its journal record and the
 * memory cache instead of a copy for each. The writer thread drops the record's reference
 * after the commit while the cache may still hold the event: hence the atomic count. */
struct hf__sev {
	atomic_int refs;
	hf_event ev; /* its strings and revisions point into this block: never hf__event_clear */
};
struct hf__sev *hf__sev_new(const hf_event *src); /* refs 1; NULL when out of memory */
void hf__sev_unref(struct hf__sev *sev);          /* NULL is fine */

/* ---- journal records: what a change must write, produced by state.c ---- */

enum hf__jtable { HF__J_RESOURCE, HF__J_HOLD, HF__J_IDEM, HF__J_EVENT, HF__J_META,
                  HF__J_SAGA, HF__J_SAGA_TYPE };

struct hf__jrec {
	struct hf__jrec *next;
	enum hf__jtable table;
	bool remove;   /* delete the row with this key instead of writing it */
	char *key;     /* resource name, hold id, idempotency key or meta key; NULL for events */
	char *body;    /* the row: JSON text, or a binary row (row.c) when body_len > 0; NULL for
	                * events */
	size_t body_len; /* 0: body is NUL-terminated text; else the bytes of a binary row */
	struct hf__sev *event; /* HF__J_EVENT only: a reference of its own; writing it also
	                        * advances the counters of its revisions */
	int64_t row; /* HF__J_HOLD only: the hold's row number (holds.rid, journal schema 5) */
};
void hf__jrec_free_list(struct hf__jrec *list);

/* ---- row.c: the journal rows of resources, holds and idempotency records ---- */

/* What a journal row may hold. Anything beyond is damage (or a hostile file), refused as
 * store_corrupt rather than loaded: the sums the engine makes with these values (a time plus a
 * retention, the last fence plus one) must never overflow. Times are milliseconds since the
 * epoch (2^53 ms is 285,000 years); fences start at 1 and a fallback engine adds 2^48, so
 * 2^62 leaves room for every grant a store can ever make. */
#define HF__JOURNAL_TIME_MAX (INT64_C(1) << 53)
#define HF__JOURNAL_FENCE_MAX (INT64_C(1) << 62)

/* An idempotency record: its key, the fingerprint of its request and its first outcome. */
struct hf__row_idem {
	char *key;
	char *fingerprint;
	int64_t created_at;
	hf_hold hold; /* token included */
};
void hf__row_idem_clear(struct hf__row_idem *d); /* frees what it points to */

/* Encoders of the binary rows (schema 3): a new buffer (free it) of *len bytes, or NULL when
 * out of memory. A hold's id and token must be lowercase hex, as hf__random_hex makes them.
 * A hold row carries, for each part whose resource has no row (an implicit resource is not
 * journaled: the live holds that keep it in existence carry it), that resource's capacity in
 * `capacities` (NULL, or 0 for a part: the resource has a row). */
unsigned char *hf__row_resource(const hf_resource *r, size_t *len); /* name, capacity, meta,
                                                                     * version, declared */
unsigned char *hf__row_hold(const hf_hold *h, const int64_t *capacities, size_t *len);
unsigned char *hf__row_idem(const struct hf__row_idem *d, size_t *len);
/* Decoders of a row in either form: binary, or the JSON text of schema 2 (it starts with '{').
 * Fill *out (owned: hf__resource_clear, hf__hold_clear, hf__row_idem_clear) or return
 * HF_ECORRUPT with a message saying what is wrong and where, or HF_ENOMEM; every length is
 * checked against `len`, and *out holds nothing after a failure. */
int hf__row_resource_decode(const void *row, size_t len, hf_resource *out, hf_error *err);
/* `capacities` (NULL, or room for HF_CLAIMS_MAX): each part's capacity, 0 when none. */
int hf__row_hold_decode(const void *row, size_t len, hf_hold *out, int64_t *capacities,
                        hf_error *err);
int hf__row_idem_decode(const void *row, size_t len, struct hf__row_idem *out, hf_error *err);

/* ---- state.c ---- */

struct hf__state;

/* What one step of the state produced. The caller appends the records to the journal and
 * completes the calls once they are durable (or at once when there are no records). */
struct hf__effects {
	struct hf__jrec *rec_head, *rec_tail;
	struct hf__call *done_head, *done_tail; /* linked through call->next */
	int failed; /* HF_OK, or HF_ENOMEM when the state could not record a change */
};

struct hf__state *hf__state_new(const hf_options *opt);
void hf__state_free(struct hf__state *st);

/* Applies a validated call at time `now`. The call is either completed into fx->done or
 * parked as a waiter (acquire or event read with a wait). */
void hf__state_apply(struct hf__state *st, struct hf__call *call, int64_t now,
                     struct hf__effects *fx);
/* Applies everything due at `now`, in time order: lease expiries, wait deadlines, purges. */
void hf__state_sweep(struct hf__state *st, int64_t now, struct hf__effects *fx);
void hf__state_cancel(struct hf__state *st, uint64_t call_id, int64_t now, struct hf__effects *fx);
/* Ends every wait with `code` (closing). */
void hf__state_fail_waits(struct hf__state *st, int code, int64_t now, struct hf__effects *fx);
/* Ends every wait with `code` and `message` and grants nothing: for a state about to be
 * thrown away (a failed commit), whose queues must not move. */
void hf__state_drop_waits(struct hf__state *st, int code, const char *message,
                          struct hf__effects *fx);
/* The earliest time something falls due, or INT64_MAX. */
int64_t hf__state_next_due(const struct hf__state *st);
/* Events up to `seq` are durable: they may be served; completes event waiters. */
void hf__state_durable(struct hf__state *st, uint64_t seq, struct hf__effects *fx);
uint64_t hf__state_last_seq(const struct hf__state *st);
uint64_t hf__state_durable_seq(const struct hf__state *st);
/* The oldest event seq still held in memory; events before it must be read from disk. */
uint64_t hf__state_oldest_cached_seq(const struct hf__state *st);

/* Loading from the journal, in this order: reserve, meta, resources, holds (which make the
 * implicit resources their rows carry), idempotency, revisions (each resource's last event
 * revision, in any number of rows a name: the greatest counts), events, then done. */
int hf__state_load_meta(struct hf__state *st, const char *key, const char *value, hf_error *err);
/* Rows (hf__row_*_decode) of `len` bytes; a hold's with its row number `rid` (1 up to
 * HF__JOURNAL_FENCE_MAX: new holds are numbered after the greatest loaded). */
int hf__state_load_resource(struct hf__state *st, const void *row, size_t len, hf_error *err);
int hf__state_load_hold(struct hf__state *st, int64_t rid, const void *row, size_t len,
                        hf_error *err);
int hf__state_load_idem(struct hf__state *st, const void *row, size_t len, hf_error *err);
int hf__state_load_revision(struct hf__state *st, const char *resource, int64_t revision,
                            hf_error *err);
int hf__state_load_event(struct hf__state *st, const hf_event *ev, hf_error *err);
/* Before the rows, when the journal knows them: room for that many of each. */
int hf__state_load_reserve(struct hf__state *st, size_t resources, size_t holds, size_t idems,
                           size_t revisions, hf_error *err);
/* After the last row: puts the ended holds and the idempotency records (loaded in any order)
 * in time order, as their retention expects. */
void hf__state_load_done(struct hf__state *st);

/* For sagas.c: an effect's completed call, journal record (body consumed) and event (body,
 * the data's JSON text, consumed; NULL counts as out of memory). */
void hf__fx_done(struct hf__effects *fx, struct hf__call *call);
struct hf__jrec *hf__fx_record(struct hf__effects *fx, enum hf__jtable table, const char *key,
                               char *body, bool remove);
void hf__state_emit(struct hf__state *st, struct hf__effects *fx, int64_t now, const char *type,
                    const char *resource, char *body);
int hf__state_load_saga_type(struct hf__state *st, const char *body, hf_error *err);
int hf__state_load_saga(struct hf__state *st, const char *body, hf_error *err);

/* ---- sagas.c: saga types and sagas (the HF_OP_SAGA_* ops), owned by the state ---- */

struct hf__sagas;
struct hf__sagas *hf__sagas_new(void);
void hf__sagas_free(struct hf__sagas *s);
void hf__sagas_apply(struct hf__state *st, struct hf__sagas *s, struct hf__call *call,
                     int64_t now, struct hf__effects *fx);
int hf__sagas_load_type(struct hf__sagas *s, const char *body, hf_error *err);
int hf__sagas_load_saga(struct hf__sagas *s, const char *body, hf_error *err);
/* Tables added to stores made before sagas existed, at open. */
#define HF__SAGAS_SCHEMA_SQL                                                               \
	"CREATE TABLE IF NOT EXISTS saga_types(name TEXT PRIMARY KEY, body TEXT NOT NULL);" \
	"CREATE TABLE IF NOT EXISTS sagas(id TEXT PRIMARY KEY, body TEXT NOT NULL);"

/* ---- journal.c ---- */

struct hf__journal;

int hf__journal_open(const char *path, struct hf__journal **out, hf_error *err);
void hf__journal_close(struct hf__journal *j);
/* Loads everything into the state (see hf__state_load_*). */
int hf__journal_load(struct hf__journal *j, struct hf__state *st, hf_error *err);
/* Writes the records in one transaction and returns once it is durable. On failure the
 * transaction is rolled back: the file holds what was durable before. */
int hf__journal_write(struct hf__journal *j, const struct hf__jrec *list, hf_error *err);
/* A small durable write (meta row "probe" = now) that tells whether commits work again. */
int hf__journal_probe(struct hf__journal *j, int64_t now, hf_error *err);
/* Event retention: one pass of the plan of core/retention.h (the newest kept, checkpoints,
 * force) over the journal, on the writer's connection, in autocommit (call it from the writer
 * thread only). *plan is what the rule allowed, *trimmed what was deleted now. */
int hf__journal_trim_events(struct hf__journal *j, const struct hf__trim_policy *pol,
                            int64_t now, uint64_t last_seq, struct hf__trim_plan *plan,
                            uint64_t *trimmed, hf_error *err);
/* Folds the revisions of the events written since the last fold into the table of each
 * resource's last revision (schema 4, journal.c), in a transaction of its own; the writer's
 * connection, like a trim. Not needed for correctness (the load folds the rest in memory):
 * it keeps the load's work and the events it scans small. */
int hf__journal_fold(struct hf__journal *j, hf_error *err);
uint64_t hf__journal_folded(const struct hf__journal *j); /* the newest event folded */
/* The WAL's checkpoint, which SQLite would run inside a commit (journal.c): the writer calls
 * this after each commit, once the commit's answers are out; it checkpoints when the WAL has
 * grown past its mark. A checkpoint held back by readers is no error. */
int hf__journal_checkpoint(struct hf__journal *j, hf_error *err);
/* The seq below the oldest kept event: reads after it fail with HF_ETRIMMED (0: none). */
uint64_t hf__journal_trimmed_upto(struct hf__journal *j);
/* Reads up to `limit` events with seq > after and seq <= upto, into a new array. */
int hf__journal_read_events(struct hf__journal *j, uint64_t after, uint64_t upto, size_t limit,
                            hf_event **events, size_t *n, hf_error *err);

#endif /* HF_EMBEDDED_H */
