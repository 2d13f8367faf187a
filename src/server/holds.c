/*
 * holds.c — the handlers of /v1/holds (acquire, extend, confirm, release, read, list) and
 * of its sugar /v1/locks/{key} and /v1/semaphores/{key}, which are acquires of implicit
 * resources named "lock:KEY" and "sem:KEY". Acquires may park: they never block the loop.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "core/codec.h"
#include "server/server.h"

/* A lock is a read/write lock: an implicit resource of this many units, of which a shared
 * (reader) hold takes 1 and an exclusive (writer) hold takes all. Fixed, so that every
 * caller names the same capacity; large enough that readers are practically unlimited. */
#define LOCK_CAPACITY 65536
#define DEFAULT_TTL_MS 30000
#define LOCK_PREFIX "lock:"
#define SEM_PREFIX "sem:"

/* ---- Body helpers: each answers the request and returns false on a bad field. -------- */

static bool body_keys(struct hf__rq *rq, const char *const *known)
{
	const char *key;
	json_t *v;
	json_object_foreach (rq->body, key, v) {
		bool ok = false;
		for (size_t i = 0; known[i] && !ok; i++)
			ok = strcmp(known[i], key) == 0;
		if (!ok) {
			hf__rq_fail(rq, HF_EINVAL, "unknown field '%.64s'", key);
			return false;
		}
	}
	return true;
}

static bool body_int(struct hf__rq *rq, const char *key, bool required, int64_t dflt,
                     int64_t lo, int64_t hi, int64_t *out)
{
	json_t *v = json_object_get(rq->body, key);
	*out = dflt;
	if (!v || json_is_null(v)) {
		if (required)
			hf__rq_fail(rq, HF_EINVAL, "%s is missing", key);
		return !required;
	}
	if (!json_is_integer(v)) {
		hf__rq_fail(rq, HF_EINVAL, "%s must be an integer", key);
		return false;
	}
	json_int_t n = json_integer_value(v);
	if (n < lo || n > hi) {
		hf__rq_fail(rq, HF_EINVAL, "%s is %lld, it must be between %lld and %lld", key,
		            (long long)n, (long long)lo, (long long)hi);
		return false;
	}
	*out = n;
	return true;
}

static bool body_str(struct hf__rq *rq, const char *key, bool required, const char **out)
{
	json_t *v = json_object_get(rq->body, key);
	*out = NULL;
	if (!v || json_is_null(v)) {
		if (required)
			hf__rq_fail(rq, HF_EINVAL, "%s is missing", key);
		return !required;
	}
	if (!json_is_string(v)) {
		hf__rq_fail(rq, HF_EINVAL, "%s must be a string", key);
		return false;
	}
	*out = json_string_value(v);
	return true;
}

/* ---- Acquire and its sugar. ------------------------------------------------------- */

/* Remembers the names an acquire claims, '\0'-separated, for its statistics. One name is
 * borrowed: the handlers' names live as long as rq (in its body or its own memory). */
static bool remember_claims(struct hf__rq *rq, const hf_acquire_req *a)
{
	rq->stat_claims = (int64_t)a->n_claims;
	if (a->n_claims == 1) {
		rq->stat_name = (char *)a->claims[0].name;
		return true;
	}
	size_t len = 0;
	for (size_t i = 0; i < a->n_claims; i++)
		len += strlen(a->claims[i].name) + 1;
	rq->stat_name = malloc(len ? len : 1);
	if (!rq->stat_name)
		return false;
	rq->stat_owned = true;
	char *p = rq->stat_name;
	for (size_t i = 0; i < a->n_claims; i++) {
		size_t n = strlen(a->claims[i].name) + 1;
		memcpy(p, a->claims[i].name, n);
		p += n;
	}
	return true;
}

static void on_acquired(struct hf__rq *rq, hf_reply *reply)
{
	int64_t latency = hf__mono_us() - rq->t0_us;
	int code = reply->error.code;
	hf__stats_acquire(rq->srv, NULL, code, latency);
	if (code == HF_OK && reply->hold) {
		/* With "any" only the granted claim counts as acquired. */
		for (size_t i = 0; i < reply->hold->n_parts; i++)
			hf__stats_acquire(rq->srv, reply->hold->parts[i].resource, HF_OK, latency);
	} else {
		const char *p = rq->stat_name;
		for (int64_t i = 0; p && i < rq->stat_claims; i++, p += strlen(p) + 1)
			hf__stats_acquire(rq->srv, p, code, latency);
	}
	if (code) {
		hf__rq_send_error(rq, &reply->error);
	} else if (!reply->hold) {
		hf__rq_fail(rq, HF_EINTERNAL, "store returned no hold");
	} else {
		hf__rq_send_hold(rq, 201, reply->hold);
	}
	hf_reply_free(reply);
}

static void start_acquire(struct hf__rq *rq, hf_acquire_req *a)
{
	hf_request req;
	a->idempotency_key = hf__rq_header(rq, "Idempotency-Key");
	if (!remember_claims(rq, a)) {
		hf__rq_fail(rq, HF_ENOMEM, "out of memory");
		return;
	}
	hf_request_init(&req, HF_OP_ACQUIRE);
	req.acquire = *a;
	rq->release_if_gone = a->idempotency_key == NULL;
	hf__rq_submit(rq, &req, on_acquired);
}

void hf__h_acquire(struct hf__rq *rq)
{
	hf_acquire_req a;
	hf_claim claims[HF_CLAIMS_MAX];
	hf_error err = {0};
	if (hf__acquire_from_json(rq->body, &a, claims, &err) != HF_OK) {
		hf__rq_send_error(rq, &err);
		return;
	}
	start_acquire(rq, &a); /* a's strings point into rq->body, alive until rq is freed */
}

/* Builds "PREFIXkey" for the sugar routes in the room before rq->param (so it lives as long
 * as rq); answers 400 when it would be too long. */
static const char *prefixed(struct hf__rq *rq, const char *prefix, const char *what)
{
	size_t pl = strlen(prefix), kl = strlen(rq->param);
	_Static_assert(sizeof(LOCK_PREFIX) - 1 <= HF__PARAM_HEADROOM &&
	                   sizeof(SEM_PREFIX) - 1 <= HF__PARAM_HEADROOM,
	               "a prefix fits the room before the parameter");
	if (pl + kl > HF_NAME_MAX) {
		hf__rq_fail(rq, HF_EINVAL, "%s is %zu bytes long, the limit is %zu", what, kl,
		            (size_t)HF_NAME_MAX - pl);
		return NULL;
	}
	char *name = rq->param - pl;
	memcpy(name, prefix, pl);
	return name;
}

/* Common fields of locks and semaphores: owner, ttl_ms, wait_ms. */
static bool sugar_common(struct hf__rq *rq, hf_acquire_req *a)
{
	return body_str(rq, "owner", true, &a->owner) &&
	       body_int(rq, "ttl_ms", false, DEFAULT_TTL_MS, 1, HF_TTL_MAX_MS, &a->ttl_ms) &&
	       body_int(rq, "wait_ms", false, 0, 0, HF_WAIT_MAX_MS, &a->wait_ms);
}

void hf__h_lock(struct hf__rq *rq)
{
	static const char *const known[] = {"owner", "ttl_ms", "wait_ms", "mode", NULL};
	hf_acquire_req a = {0};
	hf_claim claim = {0};
	const char *mode;
	if (!body_keys(rq, known) || !sugar_common(rq, &a) || !body_str(rq, "mode", false, &mode))
		return;
	a.mode = HF_MODE_EXCLUSIVE;
	if (mode && (hf_mode_parse(mode, &a.mode) != HF_OK || a.mode == HF_MODE_UNITS)) {
		hf__rq_fail(rq, HF_EINVAL, "mode '%.64s' is not exclusive or shared", mode);
		return;
	}
	const char *name = prefixed(rq, LOCK_PREFIX, "lock key");
	if (!name)
		return;
	claim.name = name;
	claim.units = 1;
	claim.capacity = LOCK_CAPACITY;
	a.claims = &claim;
	a.n_claims = 1;
	start_acquire(rq, &a);
}

void hf__h_semaphore(struct hf__rq *rq)
{
	static const char *const known[] = {"permits", "units", "owner", "ttl_ms", "wait_ms", NULL};
	hf_acquire_req a = {0};
	hf_claim claim = {0};
	if (!body_keys(rq, known) || !sugar_common(rq, &a) ||
	    !body_int(rq, "permits", true, 0, 1, HF_CAPACITY_MAX, &claim.capacity) ||
	    !body_int(rq, "units", false, 1, 1, HF_CAPACITY_MAX, &claim.units))
		return;
	const char *name = prefixed(rq, SEM_PREFIX, "semaphore key");
	if (!name)
		return;
	claim.name = name;
	a.mode = HF_MODE_UNITS;
	a.claims = &claim;
	a.n_claims = 1;
	start_acquire(rq, &a);
}

/* ---- Extend, confirm, release, read. ---------------------------------------------- */

static void on_hold(struct hf__rq *rq, hf_reply *reply)
{
	if (reply->error.code) {
		hf__rq_send_error(rq, &reply->error);
	} else if (!reply->hold) {
		hf__rq_fail(rq, HF_EINTERNAL, "store returned no hold");
	} else {
		reply->hold->token[0] = '\0'; /* only the acquire ever shows the token */
		hf__rq_send_hold(rq, 200, reply->hold);
	}
	hf_reply_free(reply);
}

static void hold_call(struct hf__rq *rq, hf_op op)
{
	static const char *const with_ttl[] = {"token", "ttl_ms", NULL};
	static const char *const token_only[] = {"token", NULL};
	hf_request req;
	hf_request_init(&req, op);
	req.hold_id = rq->param;
	if (!body_keys(rq, op == HF_OP_EXTEND ? with_ttl : token_only) ||
	    !body_str(rq, "token", true, &req.token))
		return;
	if (op == HF_OP_EXTEND &&
	    !body_int(rq, "ttl_ms", false, DEFAULT_TTL_MS, 1, HF_TTL_MAX_MS, &req.ttl_ms))
		return;
	hf__rq_submit(rq, &req, on_hold);
}

void hf__h_extend(struct hf__rq *rq)
{
	hold_call(rq, HF_OP_EXTEND);
}

void hf__h_confirm(struct hf__rq *rq)
{
	hold_call(rq, HF_OP_CONFIRM);
}

/* {"operator":true}: an operator ends the hold without its token. Only a holdfastd with an
 * API key grants it (the route already checked the key): without one every client would be
 * an operator, and a token would protect nothing. */
static void operator_release(struct hf__rq *rq)
{
	static const char *const known[] = {"operator", NULL};
	if (!body_keys(rq, known))
		return;
	if (!json_is_true(json_object_get(rq->body, "operator"))) {
		hf__rq_fail(rq, HF_EINVAL, "operator must be true (or leave it out and give the token)");
		return;
	}
	if (!rq->srv->cfg->n_api_keys) {
		hf__rq_fail(rq, HF_EOPERATOR, "operator release needs holdfastd started with --api-key");
		return;
	}
	hf_request req;
	hf_request_init(&req, HF_OP_RELEASE);
	req.hold_id = rq->param;
	req.operator_release = true;
	hf__rq_submit(rq, &req, on_hold);
}

void hf__h_release(struct hf__rq *rq)
{
	if (json_object_get(rq->body, "operator"))
		operator_release(rq);
	else
		hold_call(rq, HF_OP_RELEASE);
}

void hf__h_get_hold(struct hf__rq *rq)
{
	hf_request req;
	hf_request_init(&req, HF_OP_GET_HOLD);
	req.hold_id = rq->param;
	hf__rq_submit(rq, &req, on_hold);
}

static void on_list(struct hf__rq *rq, hf_reply *reply)
{
	if (hf__rq_reply_failed(rq, reply))
		return;
	json_t *arr = json_array();
	for (size_t i = 0; i < reply->n_holds; i++) {
		reply->holds[i].token[0] = '\0';
		arr = hf__json_push(arr, hf__hold_to_json(&reply->holds[i]));
	}
	const char *next = reply->more && reply->n_holds ? reply->holds[reply->n_holds - 1].id : NULL;
	hf__rq_send_page(rq, reply, "holds", arr, next);
}

void hf__h_list_holds(struct hf__rq *rq)
{
	static const char *const allowed[] = {"owner", "resource", "state", "cursor", "limit", NULL};
	struct evkeyvalq q;
	hf_request req;
	if (!hf__query_parse(rq, &q, allowed))
		return;
	hf_request_init(&req, HF_OP_LIST_HOLDS);
	if (!hf__query_page(rq, &q, &req))
		goto out;
	req.owner = evhttp_find_header(&q, "owner");
	req.resource = evhttp_find_header(&q, "resource");
	const char *state = evhttp_find_header(&q, "state");
	if (state) {
		hf_hold_state st;
		if (hf_hold_state_parse(state, &st) != HF_OK) {
			hf__rq_fail(rq, HF_EINVAL,
			            "state '%.64s' is not tentative, confirmed, released or expired", state);
			goto out;
		}
		req.state = (int)st;
	}
	hf__rq_submit(rq, &req, on_list);
out:
	evhttp_clear_headers(&q);
}
