/*
 * retention.c — event retention on redis:// (docs/events.md, "Retention"): the plan of a
 * trim pass from what holds.lua's trim_info read (the newest seq, the oldest kept, the
 * newest aged, the checkpoints), by the core rule (core/retention.h). engine.c runs the
 * pass: trim_info, this plan, then trim (XTRIM MINID) when events are to go.
 */
#include <jansson.h>
#include <string.h>

#include "core/retention.h"
#include "engine/redis/redis.h"

/* Events trimmed per pass at most (the rest at the next pass, a second later). */
#define TRIM_BATCH 50000

int64_t hf__redis_trim_batch(void)
{
	return TRIM_BATCH;
}

static uint64_t u64(const json_t *o, const char *k)
{
	json_t *v = json_object_get(o, k);
	return json_is_integer(v) && json_integer_value(v) > 0 ? (uint64_t)json_integer_value(v)
	                                                       : 0;
}

bool hf__redis_trim_plan(const struct hf__trim_policy *pol, const json_t *info,
                         struct hf__trim_plan *plan)
{
	memset(plan, 0, sizeof(*plan));
	uint64_t last = u64(info, "last"), oldest = u64(info, "oldest");
	uint64_t floor = oldest ? oldest - 1 : last;
	if (!oldest || !hf__trim_due(pol, last, floor))
		return false;
	struct hf__checkpoints cp = {0};
	json_t *list = json_object_get(info, "checkpoints");
	/* cjson writes an empty list as {}: nothing to note then. */
	for (size_t i = 0; json_is_array(list) && i < json_array_size(list); i++) {
		json_t *pair = json_array_get(list, i);
		hf__checkpoint_note(&cp, json_string_value(json_array_get(pair, 0)),
		                    json_string_value(json_array_get(pair, 1)));
	}
	hf__trim_plan(pol, last, u64(info, "aged"), &cp, plan);
	if (plan->upto > floor + TRIM_BATCH)
		plan->upto = floor + TRIM_BATCH;
	return plan->upto >= oldest;
}
