/*
 * retention.h — the event retention rule every engine follows (docs/events.md, "Retention"):
 * how far a trim may go given the policy, the newest event, the events' ages and the relays'
 * and projections' checkpoints; the answer to a read below the trimmed floor; the log lines.
 * Engines only read their own store for the inputs and delete what the plan says. Internal.
 */
#ifndef HF_RETENTION_H
#define HF_RETENTION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "holdfast.h"

/* Checkpoints are the declared resources holdfast.relay/<name>/checkpoint with meta
 * {"seq": N, ...}: relays' (src/relay/relay.c) and named projections' (project.c). */
#define HF__CHECKPOINT_PREFIX "holdfast.relay/"
#define HF__CHECKPOINT_SUFFIX "/checkpoint"
/* Names in [HF__CHECKPOINT_FROM, HF__CHECKPOINT_TO) hold every checkpoint: a range scan. */
#define HF__CHECKPOINT_FROM "holdfast.relay/"
#define HF__CHECKPOINT_TO "holdfast.relay0"

/* Keep the newest keep_count events and those younger than keep_ms (0: no limit of that
 * kind), never past the lowest checkpoint unless force. */
struct hf__trim_policy {
	int64_t keep_count, keep_ms;
	bool force;
};

/* The lowest checkpoint seen so far (hf__checkpoint_note). */
struct hf__checkpoints {
	bool any;
	uint64_t lowest;
};

/* What a trim pass may do. */
struct hf__trim_plan {
	uint64_t upto;           /* events with seq <= upto may go (0: none) */
	bool past_checkpoint;    /* the policy reached past a checkpoint (held back unless force) */
	uint64_t checkpoint_seq; /* that checkpoint */
};

void hf__trim_policy_from(struct hf__trim_policy *p, const hf_options *opt);
bool hf__trim_enabled(const struct hf__trim_policy *p);
/* Is a pass worth its cost: the count policy a quarter over its limit since the floor
 * `trimmed_upto` (so one pass per keep_count/4 events), or an age set. */
bool hf__trim_due(const struct hf__trim_policy *p, uint64_t last_seq, uint64_t trimmed_upto);

/* Counts resource `name` with `meta` (NULL: none) into cp if it is a checkpoint with a
 * non-negative integer seq; anything else is ignored. */
void hf__checkpoint_note(struct hf__checkpoints *cp, const char *name, const char *meta);

/* The plan for a log whose newest event is last_seq, where aged_upto is the newest seq
 * older than keep_ms (0: none, or no age policy): the newest event is always kept (a
 * sequence goes on from it), and the lowest checkpoint holds the floor unless force. */
void hf__trim_plan(const struct hf__trim_policy *p, uint64_t last_seq, uint64_t aged_upto,
                   const struct hf__checkpoints *cp, struct hf__trim_plan *out);

/* The answer to a read after a seq below the floor: HF_ETRIMMED naming the oldest kept
 * (upto + 1). Returns HF_ETRIMMED. hf__reply_trimmed also sets reply->trimmed_upto, the
 * floor as a number, so that nobody has to read it back from the message. */
int hf__err_trimmed(hf_error *err, uint64_t upto);
int hf__reply_trimmed(hf_reply *reply, uint64_t upto);

/* Logs a pass (hf__log_line, core.h): a warning when a checkpoint held it back or was passed by
 * force, once per checkpoint value (*logged_checkpoint remembers it), and the count
 * trimmed. `engine` and `store` name the store in the lines. */
void hf__trim_log(const char *engine, const char *store, const struct hf__trim_policy *p,
                  const struct hf__trim_plan *plan, uint64_t trimmed, uint64_t *logged_checkpoint);

#endif /* HF_RETENTION_H */
