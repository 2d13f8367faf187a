/*
 * api.c — the public saga functions (hf_saga_* in holdfast.h): validating types and inputs,
 * starting a saga (its first checkpoint, idempotent by key), reading and listing them, and
 * resuming a parked one; each answer is the JSON the HTTP API shows. On the http:// engine
 * they are forwarded to holdfastd's routes instead.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/codec.h"
#include "core/core.h"
#include "engine/engine.h"
#include "saga/record.h"

/* One storage call; on HF_OK *out is the reply's JSON parsed (yours). */
static int storage(hf_store *store, hf_request *req, json_t **out, hf_error *err)
{
	hf_reply *reply;
	int rc = hf_call(store, req, &reply);
	*out = NULL;
	if (rc == HF_OK && !(*out = json_loads(reply->json, 0, NULL)))
		rc = hf__err(err, HF_ENOMEM, "out of memory");
	else if (rc != HF_OK)
		hf__err(err, rc, "%s", reply ? reply->error.message : "out of memory");
	hf_reply_free(reply);
	return rc;
}

/* Hands `j` (consumed) to the caller as text. */
static int answer(json_t *j, char **json, hf_error *err)
{
	*json = j ? hf__json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
	json_decref(j);
	return *json ? HF_OK : hf__err(err, HF_ENOMEM, "out of memory");
}

/* ---- the http:// engine: forwarded to holdfastd ---- */

#define FORWARD_TIMEOUT_MS 30000

static bool remote(hf_store *store)
{
	return strcmp(hf_store_scheme(store), "http") == 0;
}

/* One route call; 2xx: *json is the answer's text, *status its status. Else the server's error
 * (code and message) or why there was no answer. Path parts are checked by the callers (they
 * hold no characters that need escaping). */
static int forward(hf_store *store, const char *method, const char *path, const char *body,
                   const char *key, int *status, char **json, hf_error *err)
{
	char url[1024], auth[600] = "";
	const char *base = hf__store_url(store), *api_key = getenv("HOLDFAST_API_KEY");
	size_t bl = strlen(base);
	while (bl && base[bl - 1] == '/')
		bl--;
	if (snprintf(url, sizeof(url), "%.*s%s", (int)bl, base, path) >= (int)sizeof(url))
		return hf__err(err, HF_EINVAL, "server url is too long");
	if (api_key && *api_key && strlen(api_key) < 512 && !strpbrk(api_key, "\r\n"))
		snprintf(auth, sizeof(auth), "Authorization: Bearer %s\r\n", api_key);
	struct hf__http_result res;
	int rc = hf__http_call(method, url, body, key, auth, hf__mono_ms() + FORWARD_TIMEOUT_MS,
	                       NULL, &res, err);
	if (rc != HF_OK && rc != HF_EINVAL) {
		/* The client's message already names the URL; only the code changes. */
		rc = HF_EENGINE;
		if (err)
			err->code = rc;
	}
	if (rc != HF_OK)
		return rc;
	json_t *j = json_loads(res.body, 0, NULL);
	if (res.status >= 200 && res.status < 300 && j) {
		*status = res.status;
		*json = res.body;
		res.body = NULL;
		rc = HF_OK;
	} else if (hf__error_from_json(j, err ? err : &(hf_error){0}) == HF_OK) {
		rc = err ? err->code : HF_EPROTO;
	} else {
		rc = hf__err(err, HF_EPROTO, "%s answered %d without a JSON error", url, res.status);
	}
	json_decref(j);
	hf__http_result_clear(&res);
	return rc;
}

static int forward_get(hf_store *store, const char *path, char **json, hf_error *err)
{
	int status;
	return forward(store, "GET", path, NULL, NULL, &status, json, err);
}

static int check_name(const char *what, const char *name, hf_error *err)
{
	size_t n = name ? strlen(name) : 0;
	if (n == 0 || n > 128 ||
	    strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-") != n)
		return hf__err(err, HF_EINVAL, "%s must be 1..128 characters of [A-Za-z0-9_.-]", what);
	return HF_OK;
}

int hf_saga_type_put(hf_store *store, const char *name, const char *type_json, char **json,
                     hf_error *err)
{
	*json = NULL;
	hf__err_clear(err);
	int rc = check_name("saga type name", name, err);
	if (rc != HF_OK)
		return rc;
	if (!type_json || strlen(type_json) > HF__SAGA_TYPE_MAX)
		return hf__err(err, HF_ESAGATYPE, "a saga type is JSON text of at most %d bytes",
		               HF__SAGA_TYPE_MAX);
	json_error_t je;
	json_t *j = json_loads(type_json, 0, &je);
	if (!j)
		return hf__err(err, HF_ESAGATYPE, "not JSON: %s (line %d)", je.text, je.line);
	struct hf__saga_type *t;
	if ((rc = hf__saga_type_parse(j, &t, err)) != HF_OK) {
		json_decref(j);
		return rc == HF_EINVAL ? (err ? (err->code = HF_ESAGATYPE) : HF_ESAGATYPE) : rc;
	}
	hf__saga_type_free(t);
	char *text = hf__json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER);
	json_decref(j);
	if (!text)
		return hf__err_code(err, HF_ENOMEM);
	if (remote(store)) {
		char path[200];
		int status;
		snprintf(path, sizeof(path), "/v1/saga-types/%s", name);
		rc = forward(store, "PUT", path, text, NULL, &status, json, err);
		free(text);
		return rc;
	}
	hf_request req;
	hf_request_init(&req, HF_OP_SAGA_TYPE_PUT);
	req.name = name;
	req.json = text;
	json_t *row;
	rc = storage(store, &req, &row, err);
	free(text);
	return rc == HF_OK ? answer(row, json, err) : rc;
}

int hf_saga_type_get(hf_store *store, const char *name, char **json, hf_error *err)
{
	*json = NULL;
	hf__err_clear(err);
	int rc = check_name("saga type name", name, err);
	if (rc != HF_OK)
		return rc;
	if (remote(store)) {
		char path[200];
		snprintf(path, sizeof(path), "/v1/saga-types/%s", name);
		return forward_get(store, path, json, err);
	}
	hf_request req;
	hf_request_init(&req, HF_OP_SAGA_TYPE_GET);
	req.name = name;
	json_t *row;
	rc = storage(store, &req, &row, err);
	return rc == HF_OK ? answer(row, json, err) : rc;
}

int hf_saga_type_list(hf_store *store, const char *cursor, size_t limit, char **json,
                      hf_error *err)
{
	*json = NULL;
	hf__err_clear(err);
	if (cursor && check_name("cursor", cursor, err))
		return HF_EINVAL;
	if (remote(store)) {
		char path[300];
		snprintf(path, sizeof(path), "/v1/saga-types?limit=%zu%s%s", limit ? limit : 100,
		         cursor ? "&cursor=" : "", cursor ? cursor : "");
		return forward_get(store, path, json, err);
	}
	hf_request req;
	hf_request_init(&req, HF_OP_SAGA_TYPE_LIST);
	req.cursor = cursor;
	req.limit = limit;
	json_t *rows;
	int rc = storage(store, &req, &rows, err);
	return rc == HF_OK ? answer(rows, json, err) : rc;
}

/* The saga's row (GET), or an error. */
static int get_row(hf_store *store, const char *id, json_t **row, hf_error *err)
{
	hf_request req;
	hf_request_init(&req, HF_OP_SAGA_GET);
	req.name = id;
	return storage(store, &req, row, err);
}

int hf_saga_get(hf_store *store, const char *id, char **json, hf_error *err)
{
	*json = NULL;
	hf__err_clear(err);
	if (!hf__record_id_ok(id))
		return hf__err(err, HF_ENOSAGA, "no saga '%.40s'", id ? id : "");
	if (remote(store)) {
		char path[80];
		snprintf(path, sizeof(path), "/v1/sagas/%s", id);
		return forward_get(store, path, json, err);
	}
	json_t *row;
	int rc = get_row(store, id, &row, err);
	if (rc != HF_OK)
		return rc;
	json_t *view = hf__record_view(row);
	json_decref(row);
	return answer(view, json, err);
}

char *hf__saga_start_arg(const char *type, const json_t *type_row, const json_t *input,
                         const char *key, int64_t now, char id[HF_ID_LEN + 1], hf_error *err)
{
	struct hf__saga_type *t;
	const json_t *def = json_object_get(type_row, "type");
	if (hf__random_hex(id, HF_ID_LEN / 2) != HF_OK) {
		hf__err(err, HF_EINTERNAL, "no randomness for a saga id");
		return NULL;
	}
	if (hf__saga_type_parse((json_t *)def, &t, err) != HF_OK)
		return NULL;
	json_t *rec = hf__record_new(id, type, def, t, input, now);
	hf__saga_type_free(t);
	json_t *arg = rec ? json_pack("{s:s, s:s, s:s, s:o, s:s, s:s?}", "id", id, "type", type,
	                              "state", "running", "record", rec, "event", "saga.started",
	                              "idempotency_key", key)
	                  : NULL;
	char *text = arg ? hf__json_dumps(arg, JSON_COMPACT) : NULL;
	json_decref(arg);
	if (!text)
		hf__err_code(err, HF_ENOMEM);
	return text;
}

int hf__saga_replay_check(const json_t *row, const char *type, const json_t *input,
                          hf_error *err)
{
	const json_t *rec = json_object_get(row, "record");
	const char *was = json_string_value(json_object_get(rec, "type"));
	if (was && strcmp(was, type) == 0 && json_equal(json_object_get(rec, "input"), (json_t *)input))
		return HF_OK;
	return hf__err(err, HF_EIDEMMISMATCH,
	               "idempotency key was used to start saga %s with another type or input",
	               json_string_value(json_object_get(rec, "id")));
}

int hf__saga_input_parse(const char *type, const char *input_json, const char *key,
                         json_t **input, hf_error *err)
{
	*input = NULL;
	int rc = check_name("saga type name", type, err);
	if (rc != HF_OK || (key && (rc = hf__check_idempotency_key(key, err))))
		return rc;
	if (!input_json || strlen(input_json) > HF__SAGA_INPUT_MAX)
		return hf__err(err, HF_EINVAL, "input must be a JSON object of at most %d bytes",
		               HF__SAGA_INPUT_MAX);
	json_t *j = json_loads(input_json, 0, NULL);
	if (!json_is_object(j)) {
		json_decref(j);
		return hf__err(err, HF_EINVAL, "input must be a JSON object");
	}
	*input = j;
	return HF_OK;
}

/* The first checkpoint of a new saga: {"id","version","replayed"} parsed into *ans. */
static int save_new(hf_store *store, const char *type, const json_t *type_row, const json_t *input,
                    const char *key, json_t **ans, hf_error *err)
{
	char id[HF_ID_LEN + 1];
	char *text = hf__saga_start_arg(type, type_row, input, key, hf__store_now(store), id, err);
	if (!text)
		return err ? err->code : HF_ENOMEM;
	hf_request req;
	hf_request_init(&req, HF_OP_SAGA_SAVE);
	req.name = id;
	req.json = text;
	req.if_version = 0;
	int rc = storage(store, &req, ans, err);
	free(text);
	return rc;
}

/* A start on this store: the first checkpoint of a saga of the type of `trow` ({"type": def}),
 * a replay check, a wake; answers through `get` (hf_saga_get or hf_tx_get). */
static int start_local(hf_store *store, const char *type, const json_t *trow, const json_t *input,
                       const char *key, char **json, bool *replayed,
                       int (*get)(hf_store *, const char *, char **, hf_error *), hf_error *err)
{
	json_t *ans = NULL, *row = NULL;
	int rc = save_new(store, type, trow, (json_t *)input, key, &ans, err);
	const char *saga_id = json_string_value(json_object_get(ans, "id"));
	bool again = json_is_true(json_object_get(ans, "replayed"));
	if (rc == HF_OK && again && (rc = get_row(store, saga_id, &row, err)) == HF_OK)
		rc = hf__saga_replay_check(row, type, input, err);
	json_decref(row);
	if (rc == HF_OK) {
		if (replayed)
			*replayed = again;
		hf__orch_wake(hf__store_orch(store), saga_id);
		rc = get(store, saga_id, json, err);
	}
	json_decref(ans);
	return rc;
}

int hf_saga_start(hf_store *store, const char *type, const char *input_json,
                  const char *idempotency_key, char **json, bool *replayed, hf_error *err)
{
	*json = NULL;
	hf__err_clear(err);
	if (replayed)
		*replayed = false;
	json_t *input;
	int rc = hf__saga_input_parse(type, input_json, idempotency_key, &input, err);
	if (rc != HF_OK)
		return rc;
	if (remote(store)) {
		json_t *body = json_pack("{s:s, s:o}", "type", type, "input", input);
		char *text = body ? hf__json_dumps(body, JSON_COMPACT) : NULL;
		json_decref(body);
		int status = 0;
		rc = text ? forward(store, "POST", "/v1/sagas", text, idempotency_key, &status, json, err)
		          : hf__err_code(err, HF_ENOMEM);
		free(text);
		if (replayed)
			*replayed = status == 200;
		return rc;
	}
	hf_request req;
	hf_request_init(&req, HF_OP_SAGA_TYPE_GET);
	req.name = type;
	json_t *trow = NULL;
	if ((rc = storage(store, &req, &trow, err)) == HF_OK)
		rc = start_local(store, type, trow, input, idempotency_key, json, replayed, hf_saga_get, err);
	json_decref(trow);
	json_decref(input);
	return rc;
}

int hf_saga_list(hf_store *store, const char *state, const char *type, const char *cursor,
                 size_t limit, char **json, hf_error *err)
{
	*json = NULL;
	hf__err_clear(err);
	if ((state && check_name("state", state, err)) || (type && check_name("type", type, err)) ||
	    (cursor && check_name("cursor", cursor, err)))
		return HF_EINVAL;
	if (remote(store)) {
		char path[600];
		snprintf(path, sizeof(path), "/v1/sagas?limit=%zu%s%s%s%s%s%s", limit ? limit : 100,
		         state ? "&state=" : "", state ? state : "", type ? "&type=" : "",
		         type ? type : "", cursor ? "&cursor=" : "", cursor ? cursor : "");
		return forward_get(store, path, json, err);
	}
	char *text = hf__record_list_filter(state, type);
	if (!text)
		return hf__err_code(err, HF_ENOMEM);
	hf_request req;
	hf_request_init(&req, HF_OP_SAGA_LIST);
	req.json = text;
	req.cursor = cursor;
	req.limit = limit;
	json_t *rows;
	int rc = storage(store, &req, &rows, err);
	free(text);
	if (rc != HF_OK)
		return rc;
	json_t *out = hf__record_list_view(rows);
	json_decref(rows);
	return answer(out, json, err);
}

int hf__saga_resume_arg(json_t *row, int64_t now, char **arg, hf_error *err)
{
	*arg = NULL;
	json_t *rec = json_object_get(row, "record"), *steps = json_object_get(rec, "steps");
	const char *id = json_string_value(json_object_get(rec, "id"));
	const char *state = json_string_value(json_object_get(rec, "state"));
	if (!state || (strcmp(state, "compensation_failed") != 0 && strcmp(state, "running") != 0 &&
	               strcmp(state, "compensating") != 0))
		return hf__err(err, HF_ESAGASTATE, "saga %s is %s: there is nothing to resume", id,
		               state ? state : "unknown");
	if (strcmp(state, "compensation_failed") != 0)
		return HF_OK; /* it runs (or will, once woken): nothing to change */
	/* Parks no more: the compensations start again with a fresh budget. */
	for (size_t i = 0; i < json_array_size(steps); i++)
		json_object_set_new(json_array_get(steps, i), "comp_attempts", json_integer(0));
	json_object_set_new(rec, "state", json_string("compensating"));
	json_object_set_new(rec, "updated_at_ms", json_integer(now));
	json_t *a = json_pack("{s:s, s:O, s:s, s:O, s:s}", "id", id, "type",
	                      json_object_get(rec, "type"), "state", "compensating", "record", rec,
	                      "event", "saga.compensating");
	*arg = a ? hf__json_dumps(a, JSON_COMPACT) : NULL;
	json_decref(a);
	return *arg ? HF_OK : hf__err_code(err, HF_ENOMEM);
}

int hf_saga_resume(hf_store *store, const char *id, char **json, hf_error *err)
{
	*json = NULL;
	hf__err_clear(err);
	char *cur;
	int rc = hf_saga_get(store, id, &cur, err); /* checks the id */
	if (rc != HF_OK)
		return rc;
	free(cur);
	if (remote(store)) {
		char path[80];
		int status;
		snprintf(path, sizeof(path), "/v1/sagas/%s/resume", id);
		return forward(store, "POST", path, NULL, NULL, &status, json, err);
	}
	json_t *row, *ans = NULL;
	char *arg;
	if ((rc = get_row(store, id, &row, err)) != HF_OK)
		return rc;
	rc = hf__saga_resume_arg(row, hf__store_now(store), &arg, err);
	if (rc == HF_OK && arg) {
		hf_request req;
		hf_request_init(&req, HF_OP_SAGA_SAVE);
		req.name = id;
		req.json = arg;
		req.if_version = json_integer_value(json_object_get(row, "version"));
		rc = storage(store, &req, &ans, err);
		json_decref(ans);
		free(arg);
	}
	json_decref(row);
	if (rc != HF_OK)
		return rc;
	hf__orch_wake(hf__store_orch(store), id);
	return hf_saga_get(store, id, json, err);
}

/* ---- TCC transactions: a saga of the type generated from the request (tcc.c) ---- */

int hf_tx_get(hf_store *store, const char *id, char **json, hf_error *err)
{
	*json = NULL;
	hf__err_clear(err);
	if (!hf__record_id_ok(id))
		return hf__err(err, HF_ENOSAGA, "no transaction '%.40s'", id ? id : "");
	if (remote(store)) {
		char path[80];
		snprintf(path, sizeof(path), "/v1/transactions/%s", id);
		return forward_get(store, path, json, err);
	}
	json_t *row;
	int rc = get_row(store, id, &row, err);
	if (rc == HF_OK && !hf__tx_row_is(row))
		rc = hf__err(err, HF_ENOSAGA, "no transaction '%s' (it is a saga)", id);
	json_t *view = rc == HF_OK ? hf__tx_view(row) : NULL;
	json_decref(row);
	return rc == HF_OK ? answer(view, json, err) : rc;
}

int hf_tx_start(hf_store *store, const char *request_json, const char *idempotency_key,
                char **json, bool *replayed, hf_error *err)
{
	*json = NULL;
	hf__err_clear(err);
	if (replayed)
		*replayed = false;
	if (idempotency_key && hf__check_idempotency_key(idempotency_key, err))
		return HF_EINVAL;
	json_t *body = request_json && strlen(request_json) <= HF__SAGA_INPUT_MAX
		? json_loads(request_json, 0, NULL) : NULL;
	if (!json_is_object(body)) {
		json_decref(body);
		return hf__err(err, HF_EINVAL, "a transaction is a JSON object of at most %d bytes",
		               HF__SAGA_INPUT_MAX);
	}
	json_t *input, *trow;
	int rc = hf__tx_parse(body, &input, &trow, err);
	json_decref(body);
	if (rc != HF_OK)
		return rc;
	if (remote(store)) {
		char *text = hf__json_dumps(input, JSON_COMPACT);
		int status = 0;
		rc = text ? forward(store, "POST", "/v1/transactions", text, idempotency_key, &status, json, err)
		          : hf__err_code(err, HF_ENOMEM);
		free(text);
		if (replayed)
			*replayed = status == 200;
	} else {
		rc = start_local(store, HF__TX_TYPE, trow, input, idempotency_key, json, replayed,
		                 hf_tx_get, err);
	}
	json_decref(input);
	json_decref(trow);
	return rc;
}
