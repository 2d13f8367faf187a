/*
 * check.h — holdfast-check: reads a Jepsen-style operation history (JSON lines, the format in
 * docs/reliability.md) and judges it against holdfast's promises: capacity and mutual
 * exclusion per resource, fences in real-time and grant order, FIFO (on request), nothing
 * acknowledged lost; with a bounded linearizability search (WGL) per resource.
 */
#ifndef HFC_CHECK_H
#define HFC_CHECK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define HFC_PARTS_MAX 64

enum hfc_f { HFC_ACQUIRE = 0, HFC_RELEASE, HFC_EXTEND, HFC_CONFIRM, HFC_READ };
enum hfc_type { HFC_PENDING = 0, HFC_OK, HFC_FAIL, HFC_INFO };

/* A read's answer: the hold's state, or gone. */
enum hfc_state {
	HFC_ST_NONE = -1, /* no read answer */
	HFC_ST_TENTATIVE = 0,
	HFC_ST_CONFIRMED,
	HFC_ST_RELEASED,
	HFC_ST_EXPIRED,
	HFC_ST_NOT_FOUND,
};

struct hfc_part {
	int res;       /* index into the history's resources */
	int64_t units; /* -1: the whole capacity (exclusive), resolved once capacities are known */
	int64_t fence; /* 0: unknown */
};

/* One operation: its invocation and its completion, matched by process. Positions are line
 * numbers (1-based): the file's order is the real-time order. */
struct hfc_op {
	enum hfc_f f;
	enum hfc_type type; /* PENDING at the end of the file counts as INFO */
	long process;
	size_t inv_line, ret_line; /* ret_line 0: no completion */
	int64_t inv_us, ret_us;    /* time_us of the two lines (0 if absent) */
	char *hold;                /* NULL if not known */
	size_t n_parts;
	struct hfc_part *parts;
	int64_t ttl_ms;  /* acquire and extend: the lease asked for; 0 unknown */
	int64_t wait_ms; /* acquire */
	bool any, exclusive, replayed;
	enum hfc_state state; /* read: the answer */
	char *error;          /* fail: the error code string, if given */
};

struct hfc_resource {
	char *name;
	int64_t capacity; /* 0: unknown (then no capacity check) */
};

struct hfc_history {
	struct hfc_op *ops;
	size_t n_ops, cap_ops;
	struct hfc_resource *res;
	size_t n_res, cap_res;
	size_t n_lines;
	int64_t *line_us; /* time_us of each line (index = line), for leases; 0 where absent */
};

/*
 * Reads a history from `in`. On failure returns -1 and writes a message naming the line to
 * `err` (size `errlen`); the history is then released. On success the history is yours to
 * hfc_history_release().
 */
int hfc_history_read(FILE *in, struct hfc_history *h, char *err, size_t errlen);
void hfc_history_release(struct hfc_history *h);

struct hfc_options {
	bool fifo;              /* check FIFO among waiting acquires */
	int64_t fifo_slack_us;  /* a waiter is queued within this long of its invoke */
	int64_t lease_slack_us; /* a lease may end this much before invoke + ttl */
	uint64_t search_bound;  /* states the linearizability search may visit per resource */
	size_t max_print;       /* violations printed in full */
	bool no_search;         /* skip the search (direct checks only) */
};

void hfc_options_init(struct hfc_options *o);

/* The checks, each counted apart. */
#define HFC_CHECKS(X)                                                                              \
	X(DOUBLE_GRANT, "double_grant")     /* capacity 1 or exclusive: two live holders */        \
	X(OVER_CAPACITY, "over_capacity")   /* more units certainly live than capacity */          \
	X(DUPLICATE_HOLD, "duplicate_hold") /* one hold id granted to two acquires */              \
	X(FENCE_ORDER, "fence_order")       /* a later grant with a fence not above */             \
	X(FIFO, "fifo")                     /* a later waiter granted before an earlier one */     \
	X(LOST_CONFIRM, "lost_confirm")     /* an acknowledged confirm did not keep the hold */    \
	X(LOST_RELEASE, "lost_release")     /* an acknowledged release undone or contradicted */   \
	X(REAPPEARED, "reappeared")         /* a hold live again after it was seen ended */        \
	X(NOT_LINEARIZABLE, "not_linearizable") /* no order of grants and ends fits the model */   \
	X(LEASE_CUT_SHORT, "lease_cut_short")   /* seen ended before its lease could run out */

enum hfc_check_id {
#define HFC__CHECK_ENUM(id, name) HFC_CHECK_##id,
	HFC_CHECKS(HFC__CHECK_ENUM)
#undef HFC__CHECK_ENUM
	    HFC_CHECK_COUNT
};

const char *hfc_check_name(enum hfc_check_id id);

struct hfc_report {
	size_t violations;
	size_t by_check[HFC_CHECK_COUNT];
	size_t ops, grants, resources;
	size_t searched; /* resources the search proved linearizable */
	size_t unknown;  /* resources whose search exceeded the bound */
	uint64_t states; /* states the search visited, all resources */
};

/* Runs every check, printing the first `max_print` violations to `out`. Returns 0 valid,
 * 1 violation, 3 unknown (a search bound exceeded and nothing else wrong), -1 out of memory. */
int hfc_check(struct hfc_history *h, const struct hfc_options *opt, FILE *out,
              struct hfc_report *rep);

/* ---- events.c: holdfast-check --events ---- */

struct hfc_events_report {
	size_t events, resources, violations;
};

/*
 * Reads an event log (JSON lines of events as the API shows them; blank and '#' lines skipped)
 * and checks seq strictly increasing (seq_order), each resource's revisions consecutive from 1
 * (revision_gap, revision_order; with `partial`, a log read from the middle, from each
 * resource's first one seen) and each event carrying its resources' revisions
 * (revision_missing). Prints the first `max_print` violations to `out` (NULL: none). Returns 0
 * valid, 1 a violation, -1 bad input or out of memory (message in err).
 */
int hfc_events_check(FILE *in, bool partial, size_t max_print, FILE *out,
                     struct hfc_events_report *rep, char *err, size_t errlen);

/* ---- search.c: the per-resource linearizability search ---- */

/* One event of a hold on one resource: its grant or its end, with the window of positions in
 * which it took effect. Positions: 2*line+1 is a line; 2*line is just before it. */
struct hfc_sop {
	bool end;      /* false: the grant; true: the end (release or expiry) */
	bool required; /* false: may never have happened (unknown outcome, expiry) */
	size_t lo, hi; /* hi SIZE_MAX: no upper bound */
	int64_t units;
	int64_t fence;  /* grants; 0 unknown */
	size_t partner; /* an end's grant (index into the same array) */
	size_t op;      /* the hfc_op it comes from, for reports */
};

enum hfc_verdict { HFC_LINEARIZABLE = 0, HFC_NOT_LINEARIZABLE, HFC_UNKNOWN, HFC_NOMEM };

/*
 * Searches for an order of the events, each within its window, every required one present,
 * in which units never exceed `capacity` (0: unbounded) and grant fences strictly increase.
 * Visits at most `bound` states. On HFC_NOT_LINEARIZABLE, *stuck is the event whose window
 * closed at the deepest point reached. *states: states visited.
 */
enum hfc_verdict hfc_search(const struct hfc_sop *ev, size_t n, int64_t capacity, uint64_t bound,
                            size_t *stuck, uint64_t *states);

#endif
