/*
 * check.h — the invariant checker of holdfast-bench. It owns the history of a run: what each
 * client observed (grants, confirms, releases, final reads, with their send and reply times
 * on one monotonic clock) and, where available, the server's event log; and it judges that
 * history against the guarantees of docs/semantics.md. Data in, violations out.
 */
#ifndef HFB_CHECK_H
#define HFB_CHECK_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "holdfast.h"

#define HFB_PARTS_MAX 4

/* One resource of a hold, as observed: `res` indexes the history's resource table. */
struct hfb_part {
	int res;
	int64_t units;
	int64_t fence; /* 0 where not known (release and expiry events carry none) */
};

enum hfb_kind {
	HFB_GRANT = 0, /* an acquire answered with a hold */
	HFB_CONFIRM,   /* a confirm answered (code says how) */
	HFB_RELEASE,   /* a release answered */
	HFB_FINAL,     /* a read of the hold after the run: `state`, or -1 if not found */
};

/* What one client saw of one request. The times are microseconds on CLOCK_MONOTONIC, shared
 * by every client thread: the request was sent at t_send and its answer read at t_ack, so the
 * server acted somewhere in between. */
struct hfb_obs {
	enum hfb_kind kind;
	int client;
	char hold[HF_ID_LEN + 1];
	int64_t t_send, t_ack;
	int code;       /* HF_OK or the HF_E* answer */
	int state;      /* HFB_FINAL: an hf_hold_state, or -1 for hold_not_found */
	bool exclusive; /* HFB_GRANT: mode exclusive (a writer) */
	size_t n_parts; /* HFB_GRANT: what was taken */
	struct hfb_part parts[HFB_PARTS_MAX];
};

enum hfb_ev_type { HFB_EV_GRANTED = 0, HFB_EV_CONFIRMED, HFB_EV_RELEASED, HFB_EV_EXPIRED };

/* One hold event of the server's log, in the server's own order (seq). */
struct hfb_event {
	uint64_t seq;
	enum hfb_ev_type type;
	char hold[HF_ID_LEN + 1];
	size_t n_parts; /* GRANTED: the parts with their fences */
	struct hfb_part parts[HFB_PARTS_MAX];
};

struct hfb_resource {
	char *name;
	int64_t capacity;
};

/*
 * A run's history. Resources are interned once (with the capacity the scenario gave them);
 * observations are appended by any thread; the event log is appended after the run. Only
 * resources in the table are judged: the checker knows their capacity.
 */
struct hfb_history {
	pthread_mutex_t lock;
	struct hfb_resource *res;
	size_t n_res, cap_res;
	int *slots; /* open addressing over `res`, -1 empty */
	size_t n_slots;
	struct hfb_obs *obs;
	size_t n_obs, cap_obs;
	struct hfb_event *ev;
	size_t n_ev, cap_ev;
	bool have_events; /* the event log covers the whole run: cross-check against it */
};

void hfb_history_init(struct hfb_history *h);
void hfb_history_release(struct hfb_history *h); /* frees everything it holds */

/* The index of resource `name`, adding it with `capacity` if new; -1 when out of memory.
 * Thread-safe. A second capacity for the same name is ignored: the first one is the truth. */
int hfb_history_resource(struct hfb_history *h, const char *name, int64_t capacity);
int hfb_history_find(struct hfb_history *h, const char *name); /* -1 if unknown; thread-safe */

/* Appends a copy; HF_OK or HF_ENOMEM. Thread-safe. */
int hfb_history_add(struct hfb_history *h, const struct hfb_obs *o);
int hfb_history_add_event(struct hfb_history *h, const struct hfb_event *e);

/* The checks, each counted apart. */
#define HFB_CHECKS(X)                                                                              \
	X(DOUBLE_GRANT, "double_grant")         /* capacity-1 or exclusive: two live holders */    \
	X(OVER_CAPACITY, "over_capacity")       /* more units live than the capacity */            \
	X(FENCE_ORDER, "fence_order")           /* a later grant with a fence not above */         \
	X(LOST_CONFIRM, "lost_confirm")         /* an acknowledged confirm not kept at the end */  \
	X(LOG_DOUBLE_GRANT, "log_double_grant") /* the same, replaying the server's event log */   \
	X(LOG_OVER_CAPACITY, "log_over_capacity")                                                  \
	X(LOG_FENCE_ORDER, "log_fence_order")                                                      \
	X(LOG_MISMATCH, "log_mismatch") /* an acknowledged change the log lacks or contradicts */

enum hfb_check_id {
#define HFB__CHECK_ENUM(id, name) HFB_CHECK_##id,
	HFB_CHECKS(HFB__CHECK_ENUM)
#undef HFB__CHECK_ENUM
	    HFB_CHECK_COUNT
};

const char *hfb_check_name(enum hfb_check_id id);

struct hfb_report {
	size_t violations;
	size_t by_check[HFB_CHECK_COUNT];
	size_t grants;    /* grants observed */
	size_t intervals; /* of them, with a definite live interval */
	size_t confirms;  /* acknowledged confirms verified */
	size_t events;    /* log events replayed */
};

/*
 * Runs every check. Each violation is counted; the first `max_print` are written to `out`
 * (may be NULL) with the operations involved. Sorts h->ev by seq in place. Returns the
 * number of violations; -1 when out of memory (then `rep` is incomplete).
 */
long hfb_check(struct hfb_history *h, FILE *out, size_t max_print, struct hfb_report *rep);

#endif
