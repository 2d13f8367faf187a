/*
 * tcc.c — TCC / two-phase reservations (POST /v1/transactions, hf_tx_*): a transaction is a
 * saga whose type is generated from its participants (try = acquire / HTTP try, confirm =
 * confirm / HTTP confirm, cancel = release / HTTP cancel), plus the transaction's view of that
 * saga. The rules (order, retries, deadline, checkpoints) are the saga's (docs/sagas.md, TCC).
 */
#include <stdio.h>
#include <string.h>

#include "core/core.h"
#include "saga/record.h"

/* One step name per phase and participant: "try_1", "confirm_1" (branch ids count from 1). */
#define STEP(buf, phase, i) (snprintf(buf, sizeof(buf), "%s_%zu", phase, (i) + 1), buf)

static bool http_url(const json_t *v)
{
	const char *s = json_string_value(v);
	return s && strncmp(s, "http://", 7) == 0 && strlen(s) < 2048 && !strpbrk(s, " \r\n#");
}

/* Checks one participant and writes it, with its defaults, into *out (new, yours). */
static int participant(const json_t *p, size_t i, json_t **out, hf_error *err)
{
	json_t *hold = json_object_get(p, "hold"), *http = json_object_get(p, "http");
	*out = NULL;
	if (!json_is_object(p) || json_object_size(p) != 1 || (!json_is_object(hold) && !json_is_object(http)))
		return hf__err(err, HF_EINVAL, "participants[%zu]: must be {\"hold\": {...}} or {\"http\": {...}}", i);
	const char *k;
	json_t *v;
	if (hold) {
		json_object_foreach (hold, k, v)
			if (strcmp(k, "resource") && strcmp(k, "units") && strcmp(k, "capacity") && strcmp(k, "mode"))
				return hf__err(err, HF_EINVAL, "participants[%zu].hold: unknown field '%.64s'", i, k);
		const char *res = json_string_value(json_object_get(hold, "resource"));
		json_t *units = json_object_get(hold, "units"), *cap = json_object_get(hold, "capacity");
		const char *mode = json_string_value(json_object_get(hold, "mode"));
		hf_mode m;
		hf_error why;
		if (hf__check_name("resource", res, HF_NAME_MAX, &why) != HF_OK)
			return hf__err(err, HF_EINVAL, "participants[%zu].hold.resource: %s", i, why.message);
		if ((units && (!json_is_integer(units) || json_integer_value(units) < 1 ||
		               json_integer_value(units) > HF_CAPACITY_MAX)) ||
		    (cap && (!json_is_integer(cap) || json_integer_value(cap) < 0 ||
		             json_integer_value(cap) > HF_CAPACITY_MAX)))
			return hf__err(err, HF_EINVAL, "participants[%zu].hold: units must be 1..%d, capacity 0..%d",
			               i, HF_CAPACITY_MAX, HF_CAPACITY_MAX);
		if (json_object_get(hold, "mode") && (!mode || hf_mode_parse(mode, &m) != HF_OK))
			return hf__err(err, HF_EINVAL, "participants[%zu].hold.mode: units, shared or exclusive", i);
		*out = json_pack("{s:{s:s, s:I, s:I, s:s}}", "hold", "resource", res, "units",
		                 units ? json_integer_value(units) : 1, "capacity",
		                 cap ? json_integer_value(cap) : 1, "mode", mode ? mode : "units");
	} else {
		json_object_foreach (http, k, v)
			if (strcmp(k, "try") && strcmp(k, "confirm") && strcmp(k, "cancel") && strcmp(k, "body"))
				return hf__err(err, HF_EINVAL, "participants[%zu].http: unknown field '%.64s'", i, k);
		static const char *const urls[] = {"try", "confirm", "cancel"};
		for (size_t u = 0; u < 3; u++)
			if (!http_url(json_object_get(http, urls[u])))
				return hf__err(err, HF_EINVAL,
				               "participants[%zu].http.%s: must be an http:// URL (no fragment)", i, urls[u]);
		json_t *body = json_object_get(http, "body");
		*out = json_pack("{s:{s:O, s:O, s:O, s:o}}", "http", "try", json_object_get(http, "try"),
		                 "confirm", json_object_get(http, "confirm"), "cancel",
		                 json_object_get(http, "cancel"), "body",
		                 body ? json_incref(body) : json_object());
	}
	return *out ? HF_OK : hf__err_code(err, HF_ENOMEM);
}

/* An HTTP call of participant i in phase op ("try", "confirm", "cancel"): POST to the
 * participant's URL for op, with dtm's barrier parameters in the query string. The URL and body
 * are referred to in the input (never copied into the type), so their text is never read as a
 * template. */
static json_t *http_call(const json_t *p, size_t i, const char *op)
{
	char url[256], body[128];
	const char *given = json_string_value(json_object_get(json_object_get(p, "http"), op));
	snprintf(url, sizeof(url),
	         "{{input.participants.%zu.http.%s}}%cgid={{saga.id}}&trans_type=tcc&branch_id=%02zu&op=%s",
	         i, op, strchr(given, '?') ? '&' : '?', i + 1, op);
	snprintf(body, sizeof(body), "{{input.participants.%zu.http.body}}", i);
	return json_pack("{s:{s:s, s:s, s:s}}", "http", "method", "POST", "url", url, "body", body);
}

static json_t *hold_call(const char *op, const char *of)
{
	return json_pack("{s:{s:s, s:s}}", "hold", "op", op, "of", of);
}

/* The try step of participant i. */
static json_t *try_step(const json_t *p, size_t i)
{
	char name[32], tmpl[3][96];
	STEP(name, "try", i);
	if (json_object_get(p, "http"))
		return json_pack("{s:s, s:o, s:o, s:b}", "name", name, "action", http_call(p, i, "try"),
		                 "compensation", http_call(p, i, "cancel"), "barrier", 1);
	static const char *const f[] = {"resource", "units", "capacity"};
	for (size_t k = 0; k < 3; k++)
		snprintf(tmpl[k], sizeof(tmpl[k]), "{{input.participants.%zu.hold.%s}}", i, f[k]);
	/* A saga type wants a literal mode (no template): one of three words, checked above. */
	const char *mode = json_string_value(json_object_get(json_object_get(p, "hold"), "mode"));
	return json_pack("{s:s, s:{s:{s:s, s:s, s:s, s:s, s:s, s:s, s:i}}, s:o}", "name", name,
	                 "action", "hold", "op", "acquire", "resource", tmpl[0], "units", tmpl[1],
	                 "capacity", tmpl[2], "mode", mode, "ttl_ms", "{{input.timeout_ms}}",
	                 "wait_ms", 0, "compensation", hold_call("release", name));
}

/* The confirm step of participant i: holdfast's holds are confirmed before the deadline is let
 * go, HTTP participants after (they are no longer bounded by it; confirm must succeed). */
static json_t *confirm_step(const json_t *p, size_t i)
{
	char name[32], of[32];
	STEP(name, "confirm", i);
	STEP(of, "try", i);
	if (json_object_get(p, "http")) {
		json_t *call = http_call(p, i, "confirm");
		json_object_set_new(call, "retry", json_pack("{s:i, s:i, s:i}", "attempts", HF__SAGA_ATTEMPTS_MAX,
		                                             "backoff_ms", HF__SAGA_DEFAULT_BACKOFF_MS,
		                                             "max_backoff_ms", HF__SAGA_DEFAULT_MAX_BACKOFF_MS));
		return json_pack("{s:s, s:o}", "name", name, "action", call);
	}
	return json_pack("{s:s, s:o}", "name", name, "action", hold_call("confirm", of));
}

/* The generated type: deadline, tries, confirms of holds, end of the deadline, HTTP confirms. */
static json_t *generate(const json_t *parts)
{
	json_t *steps = json_array();
	json_array_append_new(steps, json_pack(
		"{s:s, s:{s:{s:s, s:s, s:i, s:s, s:i}}, s:o}", "name", "deadline", "action", "hold", "op",
		"acquire", "resource", "transaction/{{saga.id}}", "capacity", 1, "ttl_ms",
		"{{input.timeout_ms}}", "wait_ms", 0, "compensation", hold_call("release", "deadline")));
	size_t n = json_array_size(parts);
	for (size_t i = 0; i < n; i++)
		json_array_append_new(steps, try_step(json_array_get(parts, i), i));
	for (size_t i = 0; i < n; i++)
		if (json_object_get(json_array_get(parts, i), "hold"))
			json_array_append_new(steps, confirm_step(json_array_get(parts, i), i));
	json_array_append_new(steps, json_pack("{s:s, s:o}", "name", "end_deadline", "action",
	                                       hold_call("release", "deadline")));
	for (size_t i = 0; i < n; i++)
		if (json_object_get(json_array_get(parts, i), "http"))
			json_array_append_new(steps, confirm_step(json_array_get(parts, i), i));
	if (json_array_size(steps) != 2 * n + 2) { /* an append failed: out of memory */
		json_decref(steps);
		return NULL;
	}
	return json_pack("{s:s, s:{s:{s:i, s:i, s:i}}, s:o}", "description",
	                 "a TCC transaction (generated)", "defaults", "compensation_retry", "attempts",
	                 HF__SAGA_ATTEMPTS_MAX, "backoff_ms", HF__SAGA_DEFAULT_BACKOFF_MS,
	                 "max_backoff_ms", HF__SAGA_DEFAULT_MAX_BACKOFF_MS, "steps", steps);
}

int hf__tx_parse(const json_t *body, json_t **input, json_t **type_row, hf_error *err)
{
	*input = *type_row = NULL;
	const char *k;
	json_t *v, *parts = json_object_get(body, "participants"), *to = json_object_get(body, "timeout_ms");
	if (!json_is_object(body))
		return hf__err(err, HF_EINVAL, "a transaction is a JSON object");
	json_object_foreach ((json_t *)body, k, v)
		if (strcmp(k, "participants") && strcmp(k, "timeout_ms"))
			return hf__err(err, HF_EINVAL, "unknown field '%.64s'", k);
	if (!json_is_array(parts) || json_array_size(parts) < 1 || json_array_size(parts) > HF__TX_PARTICIPANTS_MAX)
		return hf__err(err, HF_EINVAL, "participants must be an array of 1..%d participants",
		               HF__TX_PARTICIPANTS_MAX);
	if (!json_is_integer(to) || json_integer_value(to) < 1 || json_integer_value(to) > HF__SAGA_TIMEOUT_MAX_MS)
		return hf__err(err, HF_EINVAL, "timeout_ms must be 1..%lld (the try phase's deadline)",
		               (long long)HF__SAGA_TIMEOUT_MAX_MS);
	json_t *norm = json_array();
	for (size_t i = 0; norm && i < json_array_size(parts); i++) {
		json_t *p;
		int rc = participant(json_array_get(parts, i), i, &p, err);
		if (rc != HF_OK) {
			json_decref(norm);
			return rc;
		}
		json_array_append_new(norm, p);
	}
	json_t *def = norm ? generate(norm) : NULL;
	*input = norm ? json_pack("{s:o, s:O}", "participants", norm, "timeout_ms", to) : NULL;
	*type_row = def ? json_pack("{s:o}", "type", def) : NULL;
	if (*input && *type_row)
		return HF_OK;
	json_decref(*input), json_decref(*type_row);
	*input = *type_row = NULL;
	return hf__err_code(err, HF_ENOMEM);
}

bool hf__tx_row_is(const json_t *row)
{
	const char *t = json_string_value(json_object_get(json_object_get(row, "record"), "type"));
	return t && strcmp(t, HF__TX_TYPE) == 0;
}

/* A participant's state from its try and confirm steps (NULL: no confirm step yet). */
static const char *branch_state(const json_t *try, const json_t *confirm)
{
	const char *t = json_string_value(json_object_get(try, "state"));
	const char *c = json_string_value(json_object_get(confirm, "state"));
	if (c && strcmp(c, "succeeded") == 0)
		return t && strcmp(t, "compensated") == 0 ? "cancelled" : "confirmed";
	if (!t || strcmp(t, "pending") == 0)
		return "pending";
	if (strcmp(t, "running") == 0)
		return "trying";
	if (strcmp(t, "succeeded") == 0)
		return c && strcmp(c, "running") == 0 ? "confirming" : "tried";
	if (strcmp(t, "compensated") == 0)
		return "cancelled";
	return strcmp(t, "failed") == 0 ? "try_failed" : "cancel_failed";
}

static const char *tx_state(const char *saga_state, bool all_tried)
{
	if (strcmp(saga_state, "running") == 0)
		return all_tried ? "confirming" : "trying";
	if (strcmp(saga_state, "completed") == 0)
		return "confirmed";
	if (strcmp(saga_state, "compensating") == 0)
		return "cancelling";
	return strcmp(saga_state, "failed") == 0 ? "cancelled" : "cancel_failed";
}

static const char *str_of(const json_t *obj, const char *key)
{
	const char *s = json_string_value(json_object_get(obj, key));
	return s ? s : "";
}

/* Finds a step of the saga's view by name. */
static json_t *step_named(json_t *steps, const char *name)
{
	for (size_t i = 0; i < json_array_size(steps); i++)
		if (strcmp(str_of(json_array_get(steps, i), "name"), name) == 0)
			return json_array_get(steps, i);
	return NULL;
}

json_t *hf__tx_view(const json_t *row)
{
	json_t *view = hf__record_view(row);
	json_t *steps = json_object_get(view, "steps");
	json_t *parts = json_object_get(json_object_get(view, "input"), "participants");
	json_t *out = json_array();
	bool all_tried = true;
	for (size_t i = 0; view && out && i < json_array_size(parts); i++) {
		char tn[32], cn[32];
		json_t *t = step_named(steps, STEP(tn, "try", i)), *c = step_named(steps, STEP(cn, "confirm", i));
		all_tried &= strcmp(str_of(t, "state"), "succeeded") == 0;
		json_t *p = json_deep_copy(json_array_get(parts, i));
		json_object_set_new(p, "branch_id", json_sprintf("%02zu", i + 1));
		json_object_set_new(p, "state", json_string(branch_state(t, c)));
		json_object_set(p, "error", json_object_get(t, "error"));
		if (json_object_get(t, "hold"))
			json_object_set(p, "held", json_object_get(t, "hold"));
		json_array_append_new(out, p);
	}
	const char *ss = json_string_value(json_object_get(view, "state"));
	json_t *tx = view && out && ss
		? json_pack("{s:O, s:s, s:s, s:O, s:o, s:O, s:O, s:O, s:O, s:O}", "id",
		            json_object_get(view, "id"), "state", tx_state(ss, all_tried), "saga_state", ss,
		            "timeout_ms", json_object_get(json_object_get(view, "input"), "timeout_ms"),
		            "participants", out, "error", json_object_get(view, "error"), "created_at_ms",
		            json_object_get(view, "created_at_ms"), "updated_at_ms",
		            json_object_get(view, "updated_at_ms"), "steps", steps, "timeline",
		            json_object_get(view, "timeline"))
		: NULL;
	if (!tx)
		json_decref(out);
	json_decref(view);
	return tx;
}
