/*
 * retention.c — the event retention rule of retention.h, written once for every engine: the
 * trim plan (count, age, newest kept, checkpoints, force), what a checkpoint is, the
 * events_trimmed answer and the log lines a trim pass writes.
 */
#include "core/retention.h"

#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "core/core.h"

void hf__trim_policy_from(struct hf__trim_policy *p, const hf_options *opt)
{
	p->keep_count = opt->events_keep_count > 0 ? opt->events_keep_count : 0;
	p->keep_ms = opt->events_keep_ms > 0 ? opt->events_keep_ms : 0;
	p->force = opt->events_trim_force;
}

bool hf__trim_enabled(const struct hf__trim_policy *p)
{
	return p->keep_count > 0 || p->keep_ms > 0;
}

bool hf__trim_due(const struct hf__trim_policy *p, uint64_t last_seq, uint64_t trimmed_upto)
{
	if (p->keep_ms > 0)
		return true;
	if (p->keep_count <= 0 || last_seq <= trimmed_upto)
		return false;
	return last_seq - trimmed_upto > (uint64_t)(p->keep_count + p->keep_count / 4);
}

void hf__checkpoint_note(struct hf__checkpoints *cp, const char *name, const char *meta)
{
	size_t lp = strlen(HF__CHECKPOINT_PREFIX), ls = strlen(HF__CHECKPOINT_SUFFIX);
	size_t ln = name ? strlen(name) : 0;
	if (!meta || ln <= lp + ls || strncmp(name, HF__CHECKPOINT_PREFIX, lp) != 0 ||
	    strcmp(name + ln - ls, HF__CHECKPOINT_SUFFIX) != 0)
		return;
	json_t *m = json_loads(meta, 0, NULL);
	json_t *seq = json_object_get(m, "seq");
	if (json_is_integer(seq) && json_integer_value(seq) >= 0) {
		uint64_t s = (uint64_t)json_integer_value(seq);
		if (!cp->any || s < cp->lowest)
			cp->lowest = s;
		cp->any = true;
	}
	json_decref(m);
}

void hf__trim_plan(const struct hf__trim_policy *p, uint64_t last_seq, uint64_t aged_upto,
                   const struct hf__checkpoints *cp, struct hf__trim_plan *out)
{
	memset(out, 0, sizeof(*out));
	uint64_t cut = 0;
	if (p->keep_count > 0 && last_seq > (uint64_t)p->keep_count)
		cut = last_seq - (uint64_t)p->keep_count;
	if (p->keep_ms > 0 && aged_upto > cut)
		cut = aged_upto;
	/* The newest event is always kept: the sequence goes on from it after a restart. */
	if (last_seq == 0)
		cut = 0;
	else if (cut >= last_seq)
		cut = last_seq - 1;
	if (cp && cp->any && cut > cp->lowest) {
		out->past_checkpoint = true;
		out->checkpoint_seq = cp->lowest;
		if (!p->force)
			cut = cp->lowest;
	}
	out->upto = cut;
}

int hf__err_trimmed(hf_error *err, uint64_t upto)
{
	return hf__err(
	    err, HF_ETRIMMED,
	    "events up to seq %llu were trimmed: the oldest kept is %llu (read after=%llu "
	    "or later)",
	    (unsigned long long)upto, (unsigned long long)upto + 1, (unsigned long long)upto);
}

int hf__reply_trimmed(hf_reply *reply, uint64_t upto)
{
	reply->trimmed_upto = upto;
	return hf__err_trimmed(&reply->error, upto);
}

void hf__trim_log(const char *engine, const char *store, const struct hf__trim_policy *p,
                  const struct hf__trim_plan *plan, uint64_t trimmed, uint64_t *logged_checkpoint)
{
	char msg[256];
	if (plan->past_checkpoint && plan->checkpoint_seq != *logged_checkpoint) {
		*logged_checkpoint = plan->checkpoint_seq;
		snprintf(msg, sizeof(msg),
		         p->force ? "events trimmed past the lowest checkpoint (seq %llu): forced"
		                  : "event retention held back at the lowest checkpoint (seq %llu)",
		         (unsigned long long)plan->checkpoint_seq);
		hf__log_line("warn", engine, msg, store, NULL);
	}
	if (trimmed) {
		snprintf(msg, sizeof(msg), "events trimmed: %llu, up to seq %llu",
		         (unsigned long long)trimmed, (unsigned long long)plan->upto);
		hf__log_line("info", engine, msg, store, NULL);
	}
}
