/*
 * resources.c — the handlers of /v1/resources: declare or update (PUT, optimistic with
 * If-Match), read, delete, list, and a resource's waiters in queue order. Each turns the HTTP request into one store call and the
 * reply into JSON.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "core/codec.h"
#include "server/server.h"

/* Reads a version from If-Match ("3", 3 or W/"3"); -1 when absent. false: answered 400. */
static bool if_match(struct hf__rq *rq, int64_t *out)
{
	const char *h = hf__rq_header(rq, "If-Match");
	*out = -1;
	if (!h)
		return true;
	const char *p = h;
	if (strncmp(p, "W/", 2) == 0)
		p += 2;
	bool quoted = *p == '"';
	if (quoted)
		p++;
	char *end;
	errno = 0;
	long long v = strtoll(p, &end, 10);
	if (end == p || errno || v < 1 || *p < '0' || *p > '9' || (quoted && *end++ != '"') || *end) {
		hf__rq_fail(rq, HF_EINVAL, "If-Match must be a resource version (a positive integer)");
		return false;
	}
	*out = v;
	return true;
}

static void set_etag(struct hf__rq *rq, const hf_resource *res)
{
	char etag[32];
	if (res->version <= 0)
		return;
	snprintf(etag, sizeof(etag), "\"%lld\"", (long long)res->version);
	hf__rq_add_header(rq, "ETag", etag);
}

/* Answers one resource (status 200, or 201 for a creation) or the reply's error. */
static void answer_resource(struct hf__rq *rq, hf_reply *reply, bool created_is_201)
{
	if (reply->error.code) {
		hf__rq_send_error(rq, &reply->error);
	} else if (!reply->resource) {
		hf__rq_fail(rq, HF_EINTERNAL, "store returned no resource");
	} else {
		int status = created_is_201 && reply->resource->version == 1 ? 201 : 200;
		set_etag(rq, reply->resource);
		hf__rq_send_json(rq, status, hf__resource_to_json(reply->resource));
	}
	hf_reply_free(reply);
}

static void on_put(struct hf__rq *rq, hf_reply *reply)
{
	answer_resource(rq, reply, true);
}

static void on_plain(struct hf__rq *rq, hf_reply *reply)
{
	answer_resource(rq, reply, false);
}

void hf__h_put_resource(struct hf__rq *rq)
{
	hf_request req;
	char *meta = NULL;
	hf_request_init(&req, HF_OP_PUT_RESOURCE);
	req.name = rq->param;
	const char *key;
	json_t *v;
	json_object_foreach (rq->body, key, v) {
		if (strcmp(key, "capacity") != 0 && strcmp(key, "meta") != 0) {
			hf__rq_fail(rq, HF_EINVAL, "unknown field '%.64s'", key);
			return;
		}
	}
	json_t *cap = json_object_get(rq->body, "capacity");
	if (!cap) {
		hf__rq_fail(rq, HF_EINVAL, "capacity is missing");
		return;
	}
	if (!json_is_integer(cap)) {
		hf__rq_fail(rq, HF_EINVAL, "capacity must be an integer");
		return;
	}
	req.capacity = json_integer_value(cap);
	if (req.capacity < 1 || req.capacity > HF_CAPACITY_MAX) {
		hf__rq_fail(rq, HF_EINVAL, "capacity is %lld, it must be between 1 and %d",
		            (long long)req.capacity, HF_CAPACITY_MAX);
		return;
	}
	json_t *m = json_object_get(rq->body, "meta");
	if (m && !json_is_null(m)) {
		if (!json_is_object(m)) {
			hf__rq_fail(rq, HF_EINVAL, "meta must be a JSON object or null");
			return;
		}
		meta = hf__json_dumps(m, JSON_COMPACT | JSON_PRESERVE_ORDER);
		if (!meta) {
			hf__rq_fail(rq, HF_ENOMEM, "out of memory");
			return;
		}
		req.meta = meta;
	}
	if (!if_match(rq, &req.if_version))
		goto out;
	const char *inm = hf__rq_header(rq, "If-None-Match");
	if (inm) {
		if (strcmp(inm, "*") != 0 || req.if_version != -1) {
			hf__rq_fail(rq, HF_EINVAL, "If-None-Match takes only '*' (create only), "
			                           "and not with If-Match");
			goto out;
		}
		req.if_version = 0;
	}
	/* The library copies the request: meta may go right after. */
	hf__rq_submit(rq, &req, on_put);
out:
	free(meta);
}

void hf__h_get_resource(struct hf__rq *rq)
{
	hf_request req;
	hf_request_init(&req, HF_OP_GET_RESOURCE);
	req.name = rq->param;
	hf__rq_submit(rq, &req, on_plain);
}

void hf__h_delete_resource(struct hf__rq *rq)
{
	hf_request req;
	hf_request_init(&req, HF_OP_DELETE_RESOURCE);
	req.name = rq->param;
	if (!if_match(rq, &req.if_version))
		return;
	hf__rq_submit(rq, &req, on_plain);
}

static void on_list(struct hf__rq *rq, hf_reply *reply)
{
	if (hf__rq_reply_failed(rq, reply))
		return;
	json_t *arr = json_array();
	for (size_t i = 0; i < reply->n_resources; i++)
		arr = hf__json_push(arr, hf__resource_to_json(&reply->resources[i]));
	const char *next = reply->more && reply->n_resources
	                           ? reply->resources[reply->n_resources - 1].name
	                           : NULL;
	hf__rq_send_page(rq, reply, "resources", arr, next);
}

void hf__h_list_resources(struct hf__rq *rq)
{
	static const char *const allowed[] = {"cursor", "limit", NULL};
	struct evkeyvalq q;
	hf_request req;
	if (!hf__query_parse(rq, &q, allowed))
		return;
	hf_request_init(&req, HF_OP_LIST_RESOURCES);
	if (hf__query_page(rq, &q, &req))
		hf__rq_submit(rq, &req, on_list);
	evhttp_clear_headers(&q);
}

static void on_waiters(struct hf__rq *rq, hf_reply *reply)
{
	if (hf__rq_reply_failed(rq, reply))
		return;
	json_t *arr = json_array();
	for (size_t i = 0; i < reply->n_waiters; i++)
		arr = hf__json_push(arr, hf__waiter_to_json(&reply->waiters[i]));
	char next[24] = "";
	if (reply->more && reply->n_waiters)
		snprintf(next, sizeof(next), "%lld",
		         (long long)reply->waiters[reply->n_waiters - 1].position);
	hf__rq_send_page(rq, reply, "waiters", arr, next[0] ? next : NULL);
}

void hf__h_list_waiters(struct hf__rq *rq)
{
	static const char *const allowed[] = {"cursor", "limit", NULL};
	struct evkeyvalq q;
	hf_request req;
	if (!hf__query_parse(rq, &q, allowed))
		return;
	hf_request_init(&req, HF_OP_LIST_WAITERS);
	req.name = rq->param;
	if (hf__query_page(rq, &q, &req))
		hf__rq_submit(rq, &req, on_waiters);
	evhttp_clear_headers(&q);
}
