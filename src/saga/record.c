/*
 * record.c — a saga's record as JSON: a new record for a start, the timeline and step
 * fields the runner changes, and the public view (no tokens, no internal fields) that the
 * API shows. The record is what each checkpoint stores (src/engine/embedded/sagas.c).
 *
 * Record fields: id, type, state, input, created_at_ms, updated_at_ms, error, cursor (the next
 * step to run, or to compensate, counting down), steps[] {name, state, attempts,
 * comp_attempts, started_at_ms, ended_at_ms, result, error, hold{id, token, state,
 * expires_at_ms}}, timeline[], timeline_dropped, def (the type as it was at the start).
 */
#include <stdlib.h>
#include <string.h>

#include "core/codec.h"
#include "core/core.h"
#include "saga/record.h"

json_t *hf__record_new(const char *id, const char *type_name, const json_t *def,
                       const struct hf__saga_type *t, const json_t *input, int64_t now)
{
	json_t *steps = json_array();
	for (size_t i = 0; steps && i < t->n_steps; i++)
		if (json_array_append_new(steps, json_pack("{s:s, s:s, s:i, s:i, s:n, s:n, s:n, s:n}",
		                                           "name", t->steps[i].name, "state", "pending",
		                                           "attempts", 0, "comp_attempts", 0,
		                                           "started_at_ms", "ended_at_ms", "result",
		                                           "error"))) {
			json_decref(steps);
			return NULL;
		}
	if (!steps)
		return NULL;
	return json_pack("{s:s, s:s, s:s, s:O, s:I, s:I, s:n, s:i, s:o, s:[], s:i, s:O}", "id", id,
	                 "type", type_name, "state", "running", "input", input, "created_at_ms",
	                 (json_int_t)now, "updated_at_ms", (json_int_t)now, "error", "cursor", 0,
	                 "steps", steps, "timeline", "timeline_dropped", 0, "def", def);
}

void hf__record_log(json_t *rec, int64_t now, const char *step, const char *phase,
                    const char *what, int attempt, const char *detail)
{
	json_t *tl = json_object_get(rec, "timeline");
	json_t *e = json_pack("{s:I, s:s, s:s, s:s, s:i, s:s?}", "at_ms", (json_int_t)now, "step", step,
	                      "phase", phase, "what", what, "attempt", attempt, "detail", detail);
	if (!tl || !e || json_array_append_new(tl, e))
		return; /* out of memory: the timeline misses an entry; the state stays right */
	/* Bounded: the oldest entries go first, and are counted. */
	while (json_array_size(tl) > HF__SAGA_TIMELINE_MAX) {
		json_array_remove(tl, 0);
		json_int_t dropped = json_integer_value(json_object_get(rec, "timeline_dropped"));
		json_object_set_new(rec, "timeline_dropped", json_integer(dropped + 1));
	}
}

json_t *hf__record_error(const char *code, const char *message)
{
	return json_pack("{s:s, s:s}", "code", code, "message", message);
}

json_t *hf__record_view(const json_t *row)
{
	json_t *rec = json_deep_copy(json_object_get(row, "record"));
	if (!rec)
		return NULL;
	json_object_del(rec, "def");
	json_object_del(rec, "cursor");
	json_object_set(rec, "version", json_object_get(row, "version"));
	json_t *steps = json_object_get(rec, "steps");
	for (size_t i = 0; i < json_array_size(steps); i++) {
		json_t *s = json_array_get(steps, i);
		json_object_del(s, "comp_attempts");
		json_object_del(json_object_get(s, "hold"), "token");
	}
	return rec;
}

static json_t *summary(const json_t *row)
{
	const json_t *rec = json_object_get(row, "record");
	return json_pack("{s:O, s:O, s:O, s:O, s:O, s:O}", "id", json_object_get(rec, "id"), "type",
	                 json_object_get(rec, "type"), "state", json_object_get(rec, "state"),
	                 "created_at_ms", json_object_get(rec, "created_at_ms"), "updated_at_ms",
	                 json_object_get(rec, "updated_at_ms"), "error", json_object_get(rec, "error"));
}

json_t *hf__record_list_view(const json_t *rows)
{
	json_t *items = json_array(), *in = json_object_get(rows, "items");
	for (size_t i = 0; items && i < json_array_size(in); i++)
		json_array_append_new(items, summary(json_array_get(in, i)));
	return items ? json_pack("{s:o, s:O}", "items", items, "more", json_object_get(rows, "more"))
	             : NULL;
}

char *hf__record_list_filter(const char *state, const char *type)
{
	json_t *filter = json_pack("{s:s?, s:s?}", "state", state, "type", type);
	char *text = filter ? hf__json_dumps(filter, JSON_COMPACT) : NULL;
	json_decref(filter);
	return text;
}

bool hf__record_id_ok(const char *id)
{
	return id && strlen(id) == HF_ID_LEN && strspn(id, "0123456789abcdef") == HF_ID_LEN;
}
