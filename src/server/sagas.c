/*
 * sagas.c — the handlers of /v1/saga-types and /v1/sagas (docs/api.md, "Sagas"): register and
 * read saga types, start, read, list and resume sagas.
 *
 * They call the blocking hf_saga_* functions on the loop thread: each is a few in-memory
 * store calls and at most one durable commit (the same wait as any change's answer); the
 * sagas themselves run on the store's own threads, never here.
 */
#include <stdlib.h>
#include <string.h>

#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "core/codec.h"
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

void hf__h_get_saga_type(struct hf__rq *rq)
{
	hf_error err;
	char *json = NULL;
	int rc = hf_saga_type_get(rq->srv->store, rq->param, &json, &err);
	answer(rq, rc, 200, json, &err);
}

void hf__h_list_saga_types(struct hf__rq *rq)
{
	static const char *const allowed[] = {"cursor", "limit", NULL};
	struct evkeyvalq q;
	int64_t limit;
	if (!hf__query_parse(rq, &q, allowed))
		return;
	if (hf__query_int(rq, &q, "limit", 1, HF_LIST_MAX, 100, &limit)) {
		hf_error err;
		char *json = NULL;
		int rc = hf_saga_type_list(rq->srv->store, evhttp_find_header(&q, "cursor"),
		                           (size_t)limit, &json, &err);
		answer(rq, rc, 200, json, &err);
	}
	evhttp_clear_headers(&q);
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
	hf_error err;
	char *json = NULL;
	int rc = hf_saga_get(rq->srv->store, rq->param, &json, &err);
	answer(rq, rc, 200, json, &err);
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
	else if (hf__query_int(rq, &q, "limit", 1, HF_LIST_MAX, 100, &limit)) {
		hf_error err;
		char *json = NULL;
		int rc = hf_saga_list(rq->srv->store, state, evhttp_find_header(&q, "type"),
		                      evhttp_find_header(&q, "cursor"), (size_t)limit, &json, &err);
		answer(rq, rc, 200, json, &err);
	}
	evhttp_clear_headers(&q);
}

void hf__h_resume_saga(struct hf__rq *rq)
{
	hf_error err;
	char *json = NULL;
	int rc = hf_saga_resume(rq->srv->store, rq->param, &json, &err);
	answer(rq, rc, 200, json, &err);
}
