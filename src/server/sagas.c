/*
 * sagas.c — the handlers of /v1/saga-types and /v1/sagas (docs/api.md, "Sagas"): register and
 * read saga types, start, read, list and resume sagas.
 *
 * Reads (the routes clients poll) are one store call each, answered asynchronously like the
 * hold routes. Writes call the blocking hf_saga_* functions on the loop thread: a few
 * in-memory store calls and one durable commit; the sagas themselves run on the store's own
 * threads, never here. On the http:// engine every route uses hf_saga_* (which forwards).
 */
#include <stdlib.h>
#include <string.h>

#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "core/codec.h"
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
	char *json = NULL;
	bool replayed = false;
	int rc = hf_saga_start(rq->srv->store, type, text, hf__rq_header(rq, "Idempotency-Key"),
	                       &json, &replayed, &err);
	free(text);
	answer(rq, rc, replayed ? 200 : 201, json, &err);
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

void hf__h_resume_saga(struct hf__rq *rq)
{
	hf_error err;
	char *json = NULL;
	int rc = hf_saga_resume(rq->srv->store, rq->param, &json, &err);
	answer(rq, rc, 200, json, &err);
}
