/*
 * sagas.c — the handlers of /v1/saga-types and /v1/sagas (docs/api.md, "Sagas"): register and
 * read saga types, start, read, list and resume sagas; and /v1/transactions (TCC), which are
 * sagas of a generated type.
 *
 * Each route is a chain of store calls answered asynchronously, like the hold routes, built
 * from the same steps as hf_saga_* (saga/record.h); registering a type (rare, and validated
 * here) calls the blocking hf_saga_type_put. The sagas themselves run on the store's own
 * threads, never on the loop. On the http:// engine every route calls hf_saga_* (which
 * forwards to the next holdfastd).
 */
#include <stdlib.h>
#include <string.h>

#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "core/codec.h"
#include "core/core.h"
#include "engine/engine.h"
#include "saga/record.h"
#include "server/server.h"

/* Answers JSON text from an hf_saga_* function (consumed), or its error. */
static void answer(struct hf__rq *rq, int rc, int status, char *json, const hf_error *err)
{
	json_t *j = rc == HF_OK ? json_loads(json, 0, NULL) : NULL;
	free(json);
	if (rc != HF_OK)
		hf__rq_send_error(rq, err);
	else if (!j)
		hf__rq_fail(rq, HF_ENOMEM, "out of memory");
	else
		hf__rq_send_json(rq, status, j);
}

/* Whether the store answers the saga storage ops itself (else hf_saga_* forwards them). */
static bool forwarded(struct hf__rq *rq)
{
	return strcmp(hf_store_scheme(rq->srv->store), "http") == 0;
}

/* Answers a storage reply's JSON through `view` (NULL: as it is). */
static void answer_reply(struct hf__rq *rq, hf_reply *reply, json_t *(*view)(const json_t *))
{
	if (hf__rq_reply_failed(rq, reply))
		return;
	json_t *row = json_loads(reply->json, 0, NULL);
	hf_reply_free(reply);
	json_t *out = row && view ? view(row) : json_incref(row);
	json_decref(row);
	if (!out)
		hf__rq_fail(rq, HF_ENOMEM, "out of memory");
	else
		hf__rq_send_json(rq, 200, out);
}

static void on_saga(struct hf__rq *rq, hf_reply *reply)
{
	answer_reply(rq, reply, hf__record_view);
}

static void on_saga_list(struct hf__rq *rq, hf_reply *reply)
{
	answer_reply(rq, reply, hf__record_list_view);
}

static void on_type(struct hf__rq *rq, hf_reply *reply)
{
	answer_reply(rq, reply, NULL);
}

void hf__h_put_saga_type(struct hf__rq *rq)
{
	hf_error err;
	char *json = NULL, *text = hf__json_dumps(rq->body, JSON_COMPACT | JSON_PRESERVE_ORDER);
	if (!text) {
		hf__rq_fail(rq, HF_ENOMEM, "out of memory");
		return;
	}
	int rc = hf_saga_type_put(rq->srv->store, rq->param, text, &json, &err);
	free(text);
	int status = 200;
	if (rc == HF_OK) {
		json_t *j = json_loads(json, 0, NULL);
		status = json_integer_value(json_object_get(j, "version")) == 1 ? 201 : 200;
		json_decref(j);
	}
	answer(rq, rc, status, json, &err);
}

void hf__h_list_saga_types(struct hf__rq *rq)
{
	static const char *const allowed[] = {"cursor", "limit", NULL};
	struct evkeyvalq q;
	int64_t limit;
	if (!hf__query_parse(rq, &q, allowed))
		return;
	const char *cursor = evhttp_find_header(&q, "cursor");
	if (!hf__query_int(rq, &q, "limit", 1, HF_LIST_MAX, 100, &limit)) {
		/* answered */
	} else if (forwarded(rq)) {
		hf_error err;
		char *json = NULL;
		int rc = hf_saga_type_list(rq->srv->store, cursor, (size_t)limit, &json, &err);
		answer(rq, rc, 200, json, &err);
	} else {
		hf_request req;
		hf_request_init(&req, HF_OP_SAGA_TYPE_LIST);
		req.cursor = cursor;
		req.limit = (size_t)limit;
		hf__rq_submit(rq, &req, on_type);
	}
	evhttp_clear_headers(&q);
}

void hf__h_get_saga_type(struct hf__rq *rq)
{
	hf_error err;
	char *json = NULL;
	if (forwarded(rq)) {
		int rc = hf_saga_type_get(rq->srv->store, rq->param, &json, &err);
		answer(rq, rc, 200, json, &err);
		return;
	}
	hf_request req;
	hf_request_init(&req, HF_OP_SAGA_TYPE_GET);
	req.name = rq->param;
	hf__rq_submit(rq, &req, on_type);
}

/* ---- start: type → first checkpoint → the saga; rq->acc keeps {"type","input","key",
 * "id","replayed"} between the calls ---- */

static const char *acc_str(struct hf__rq *rq, const char *key)
{
	return json_string_value(json_object_get(rq->acc, key));
}

/* The saga as it is now, woken on the store's runner; 201 for a new one. */
static void on_start_row(struct hf__rq *rq, hf_reply *reply)
{
	if (hf__rq_reply_failed(rq, reply))
		return;
	json_t *row = json_loads(reply->json, 0, NULL);
	hf_reply_free(reply);
	bool replayed = json_is_true(json_object_get(rq->acc, "replayed"));
	hf_error err = {0};
	if (replayed && hf__saga_replay_check(row, acc_str(rq, "type"),
	                                      json_object_get(rq->acc, "input"), &err) != HF_OK) {
		json_decref(row);
		hf__rq_send_error(rq, &err);
		return;
	}
	hf__orch_wake(hf__store_orch(rq->srv->store), acc_str(rq, "id"));
	json_t *view = !row ? NULL : hf__tx_row_is(row) ? hf__tx_view(row) : hf__record_view(row);
	json_decref(row);
	if (!view)
		hf__rq_fail(rq, HF_ENOMEM, "out of memory");
	else
		hf__rq_send_json(rq, replayed ? 200 : 201, view);
}

static void get_row_then(struct hf__rq *rq, const char *id, hf__reply_fn then)
{
	hf_request req;
	hf_request_init(&req, HF_OP_SAGA_GET);
	req.name = id;
	hf__rq_submit(rq, &req, then);
}

static void on_start_saved(struct hf__rq *rq, hf_reply *reply)
{
	if (hf__rq_reply_failed(rq, reply))
		return;
	json_t *ans = json_loads(reply->json, 0, NULL);
	hf_reply_free(reply);
	const char *id = json_string_value(json_object_get(ans, "id"));
	if (!id || json_object_set_new(rq->acc, "id", json_string(id)) ||
	    json_object_set(rq->acc, "replayed", json_object_get(ans, "replayed"))) {
		json_decref(ans);
		hf__rq_fail(rq, HF_ENOMEM, "out of memory");
		return;
	}
	json_decref(ans);
	get_row_then(rq, acc_str(rq, "id"), on_start_row);
}

/* The first checkpoint of a saga of the type of `type_row` ({"type": def}; NULL when out of
 * memory). */
static void start_with_type(struct hf__rq *rq, const json_t *type_row)
{
	hf_error err = {.code = HF_ENOMEM, .message = "out of memory"};
	char id[HF_ID_LEN + 1];
	char *arg = type_row ? hf__saga_start_arg(acc_str(rq, "type"), type_row,
	                                          json_object_get(rq->acc, "input"), acc_str(rq, "key"),
	                                          hf__store_now(rq->srv->store), id, &err)
	                     : NULL;
	if (!arg) {
		hf__rq_send_error(rq, &err);
		return;
	}
	hf_request req;
	hf_request_init(&req, HF_OP_SAGA_SAVE);
	req.name = id;
	req.json = arg;
	req.if_version = 0;
	hf__rq_submit(rq, &req, on_start_saved);
	free(arg);
}

static void on_start_type(struct hf__rq *rq, hf_reply *reply)
{
	if (hf__rq_reply_failed(rq, reply))
		return;
	json_t *type_row = json_loads(reply->json, 0, NULL);
	hf_reply_free(reply);
	start_with_type(rq, type_row);
	json_decref(type_row);
}

void hf__h_start_saga(struct hf__rq *rq)
{
	const char *k;
	json_t *v;
	json_object_foreach (rq->body, k, v) {
		if (strcmp(k, "type") != 0 && strcmp(k, "input") != 0) {
			hf__rq_fail(rq, HF_EINVAL, "unknown field '%.64s'", k);
			return;
		}
	}
	const char *type = json_string_value(json_object_get(rq->body, "type"));
	json_t *input = json_object_get(rq->body, "input");
	if (!type) {
		hf__rq_fail(rq, HF_EINVAL, "type must be the name of a saga type");
		return;
	}
	if (input && !json_is_object(input)) {
		hf__rq_fail(rq, HF_EINVAL, "input must be a JSON object");
		return;
	}
	char *text = input ? hf__json_dumps(input, JSON_COMPACT | JSON_PRESERVE_ORDER) : strdup("{}");
	if (!text) {
		hf__rq_fail(rq, HF_ENOMEM, "out of memory");
		return;
	}
	hf_error err;
	const char *key = hf__rq_header(rq, "Idempotency-Key");
	if (forwarded(rq)) {
		char *json = NULL;
		bool replayed = false;
		int rc = hf_saga_start(rq->srv->store, type, text, key, &json, &replayed, &err);
		free(text);
		answer(rq, rc, replayed ? 200 : 201, json, &err);
		return;
	}
	json_t *parsed;
	int rc = hf__saga_input_parse(type, text, key, &parsed, &err);
	free(text);
	if (rc != HF_OK) {
		hf__rq_send_error(rq, &err);
		return;
	}
	json_decref(rq->acc);
	rq->acc = json_pack("{s:s, s:o, s:s?}", "type", type, "input", parsed, "key", key);
	if (!rq->acc) {
		hf__rq_fail(rq, HF_ENOMEM, "out of memory");
		return;
	}
	hf_request req;
	hf_request_init(&req, HF_OP_SAGA_TYPE_GET);
	req.name = type;
	hf__rq_submit(rq, &req, on_start_type);
}

void hf__h_get_saga(struct hf__rq *rq)
{
	if (forwarded(rq)) {
		hf_error err;
		char *json = NULL;
		int rc = hf_saga_get(rq->srv->store, rq->param, &json, &err);
		answer(rq, rc, 200, json, &err);
		return;
	}
	if (!hf__record_id_ok(rq->param)) {
		hf__rq_fail(rq, HF_ENOSAGA, "no saga '%.40s'", rq->param);
		return;
	}
	hf_request req;
	hf_request_init(&req, HF_OP_SAGA_GET);
	req.name = rq->param;
	hf__rq_submit(rq, &req, on_saga);
}

/* The list for the filters, from the store (or forwarded). */
static void list_sagas(struct hf__rq *rq, const char *state, const char *type, const char *cursor,
                       size_t limit)
{
	if (forwarded(rq)) {
		hf_error err;
		char *json = NULL;
		int rc = hf_saga_list(rq->srv->store, state, type, cursor, limit, &json, &err);
		answer(rq, rc, 200, json, &err);
		return;
	}
	char *filter = hf__record_list_filter(state, type);
	if (!filter) {
		hf__rq_fail(rq, HF_ENOMEM, "out of memory");
		return;
	}
	hf_request req;
	hf_request_init(&req, HF_OP_SAGA_LIST);
	req.json = filter;
	req.cursor = cursor;
	req.limit = limit;
	hf__rq_submit(rq, &req, on_saga_list);
	free(filter);
}

void hf__h_list_sagas(struct hf__rq *rq)
{
	static const char *const allowed[] = {"state", "type", "cursor", "limit", NULL};
	static const char *const states[] = {"running", "compensating", "completed", "failed",
	                                     "compensation_failed", NULL};
	struct evkeyvalq q;
	int64_t limit;
	if (!hf__query_parse(rq, &q, allowed))
		return;
	const char *state = evhttp_find_header(&q, "state");
	bool known = !state;
	for (const char *const *s = states; state && *s && !known; s++)
		known = strcmp(*s, state) == 0;
	if (!known)
		hf__rq_fail(rq, HF_EINVAL, "state must be one of " HF_SAGA_STATES);
	else if (hf__query_int(rq, &q, "limit", 1, HF_LIST_MAX, 100, &limit))
		list_sagas(rq, state, evhttp_find_header(&q, "type"), evhttp_find_header(&q, "cursor"),
		           (size_t)limit);
	evhttp_clear_headers(&q);
}

/* ---- resume: the row → (a save) → the saga ---- */

static void on_resumed(struct hf__rq *rq, hf_reply *reply)
{
	if (hf__rq_reply_failed(rq, reply))
		return;
	hf_reply_free(reply);
	hf__orch_wake(hf__store_orch(rq->srv->store), rq->param);
	get_row_then(rq, rq->param, on_saga);
}

static void on_resume_row(struct hf__rq *rq, hf_reply *reply)
{
	if (hf__rq_reply_failed(rq, reply))
		return;
	json_t *row = json_loads(reply->json, 0, NULL);
	hf_reply_free(reply);
	hf_error err = {.code = HF_ENOMEM, .message = "out of memory"};
	char *arg = NULL;
	int rc = row ? hf__saga_resume_arg(row, hf__store_now(rq->srv->store), &arg, &err)
	             : HF_ENOMEM;
	int64_t version = json_integer_value(json_object_get(row, "version"));
	json_decref(row);
	if (rc != HF_OK) {
		hf__rq_send_error(rq, &err);
		return;
	}
	if (!arg) { /* running or compensating: a wake is all it takes */
		hf__orch_wake(hf__store_orch(rq->srv->store), rq->param);
		get_row_then(rq, rq->param, on_saga);
		return;
	}
	hf_request req;
	hf_request_init(&req, HF_OP_SAGA_SAVE);
	req.name = rq->param;
	req.json = arg;
	req.if_version = version;
	hf__rq_submit(rq, &req, on_resumed);
	free(arg);
}

void hf__h_resume_saga(struct hf__rq *rq)
{
	if (forwarded(rq)) {
		hf_error err;
		char *json = NULL;
		int rc = hf_saga_resume(rq->srv->store, rq->param, &json, &err);
		answer(rq, rc, 200, json, &err);
		return;
	}
	if (!hf__record_id_ok(rq->param)) {
		hf__rq_fail(rq, HF_ENOSAGA, "no saga '%.40s'", rq->param);
		return;
	}
	get_row_then(rq, rq->param, on_resume_row);
}

/* ---- TCC transactions: a saga of a generated type (saga/tcc.c), started like any saga ---- */

void hf__h_start_tx(struct hf__rq *rq)
{
	hf_error err;
	const char *key = hf__rq_header(rq, "Idempotency-Key");
	if (forwarded(rq)) {
		char *json = NULL, *text = hf__json_dumps(rq->body, JSON_COMPACT | JSON_PRESERVE_ORDER);
		bool replayed = false;
		int rc = text ? hf_tx_start(rq->srv->store, text, key, &json, &replayed, &err)
		              : (hf__err(&err, HF_ENOMEM, "out of memory"), HF_ENOMEM);
		free(text);
		answer(rq, rc, replayed ? 200 : 201, json, &err);
		return;
	}
	json_t *input, *type_row;
	int rc = key ? hf__check_idempotency_key(key, &err) : HF_OK;
	if (rc == HF_OK)
		rc = hf__tx_parse(rq->body, &input, &type_row, &err);
	if (rc != HF_OK) {
		hf__rq_send_error(rq, &err);
		return;
	}
	json_decref(rq->acc);
	rq->acc = json_pack("{s:s, s:o, s:s?}", "type", HF__TX_TYPE, "input", input, "key", key);
	if (!rq->acc)
		hf__rq_fail(rq, HF_ENOMEM, "out of memory");
	else
		start_with_type(rq, type_row);
	json_decref(type_row);
}

static void on_tx(struct hf__rq *rq, hf_reply *reply)
{
	if (hf__rq_reply_failed(rq, reply))
		return;
	json_t *row = json_loads(reply->json, 0, NULL);
	hf_reply_free(reply);
	json_t *view = row && hf__tx_row_is(row) ? hf__tx_view(row) : NULL;
	if (row && !hf__tx_row_is(row))
		hf__rq_fail(rq, HF_ENOSAGA, "no transaction '%s' (it is a saga)", rq->param);
	else if (!view)
		hf__rq_fail(rq, HF_ENOMEM, "out of memory");
	else
		hf__rq_send_json(rq, 200, view);
	json_decref(row);
}

void hf__h_get_tx(struct hf__rq *rq)
{
	if (forwarded(rq)) {
		hf_error err;
		char *json = NULL;
		int rc = hf_tx_get(rq->srv->store, rq->param, &json, &err);
		answer(rq, rc, 200, json, &err);
		return;
	}
	if (!hf__record_id_ok(rq->param)) {
		hf__rq_fail(rq, HF_ENOSAGA, "no transaction '%.40s'", rq->param);
		return;
	}
	get_row_then(rq, rq->param, on_tx);
}
