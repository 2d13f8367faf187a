/*
 * run.c — running one saga from its last checkpoint to a resting state (completed, failed,
 * compensation_failed): each step's action with its retry policy, then on a final failure
 * every completed step's compensation in reverse order. Each transition is one checkpoint
 * (HF_OP_SAGA_SAVE, version compare-and-set) with its event. Steps interrupted by a stop or
 * a crash run again with the same idempotency key (docs/sagas.md, "Durability").
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/codec.h"
#include "core/core.h"
#include "relay/amqp_conn.h"
#include "saga/record.h"
#include "saga/run.h"

#define SLEEP_SLICE_MS 50

struct run {
	hf_store *store;
	const _Atomic bool *stop;
	const char *id;
	int64_t version;
	json_t *rec; /* the record being changed (owned) */
	struct hf__saga_type *t;
};

/* The outcome of one attempt. */
struct outcome {
	bool ok;
	bool final;       /* no retry can help (4xx, unavailable, template error, lease lost) */
	bool stopped;     /* the orchestrator stops: leave the saga as it is */
	bool uncertain;   /* sent but not answered: the service may have acted */
	bool not_tried;   /* failed before its first attempt (a lease had run out) */
	const char *code; /* the saga's error code when it fails here */
	char message[HF_MESSAGE_MAX];
	json_t *result;   /* HTTP and AMQP: {"status","body"}; owned */
	json_t *hold;     /* acquire, extend, confirm, release: the step's hold afterwards; owned */
};

static int64_t now_ms(struct run *r)
{
	return hf__store_now(r->store);
}

static json_t *step_json(struct run *r, size_t k)
{
	return json_array_get(json_object_get(r->rec, "steps"), k);
}

static const char *rec_state(struct run *r)
{
	return json_string_value(json_object_get(r->rec, "state"));
}

static void set(json_t *obj, const char *key, json_t *v)
{
	json_object_set_new(obj, key, v ? v : json_null());
}

/* Sleeps ms unless stopped; false when stopped. */
static bool nap(struct run *r, int64_t ms)
{
	int64_t end = hf__mono_ms() + ms;
	for (int64_t left; (left = end - hf__mono_ms()) > 0;) {
		if (*r->stop)
			return false;
		int64_t s = left < SLEEP_SLICE_MS ? left : SLEEP_SLICE_MS;
		struct timespec ts = {s / 1000, (long)(s % 1000) * 1000000L};
		nanosleep(&ts, NULL);
	}
	return !*r->stop;
}

/* ---- loading and checkpoints ---- */

static int claim(struct run *r, hf_error *err);

static int load(struct run *r, hf_error *err)
{
	hf_request req;
	hf_reply *reply;
	hf_request_init(&req, HF_OP_SAGA_GET);
	req.name = r->id;
	int rc = hf_call(r->store, &req, &reply);
	json_t *row = rc == HF_OK ? json_loads(reply->json, 0, NULL) : NULL;
	if (rc != HF_OK)
		hf__err(err, rc, "%s", reply ? reply->error.message : "out of memory");
	hf_reply_free(reply);
	if (rc != HF_OK)
		return rc;
	json_decref(r->rec);
	hf__saga_type_free(r->t);
	r->t = NULL;
	r->rec = json_incref(json_object_get(row, "record"));
	r->version = json_integer_value(json_object_get(row, "version"));
	bool shared = json_object_get(row, "owner") != NULL;
	json_decref(row);
	if (!r->rec)
		return hf__err(err, HF_ECORRUPT, "saga %s has no record", r->id);
	if ((rc = hf__saga_type_parse(json_object_get(r->rec, "def"), &r->t, err)) != HF_OK)
		return rc;
	const char *st = json_string_value(json_object_get(r->rec, "state"));
	if (shared && st && (strcmp(st, "running") == 0 || strcmp(st, "compensating") == 0))
		rc = claim(r, err);
	return rc;
}

/* Writes `arg` (consumed) as the next version of the saga; on a version conflict the caller
 * reloads. */
static int put(struct run *r, json_t *arg, hf_error *err)
{
	char *text = arg ? hf__json_dumps(arg, JSON_COMPACT) : NULL;
	json_decref(arg);
	if (!text)
		return hf__err_code(err, HF_ENOMEM);
	hf_request req;
	hf_reply *reply;
	hf_request_init(&req, HF_OP_SAGA_SAVE);
	req.name = r->id;
	req.json = text;
	req.if_version = r->version;
	int rc = hf_call(r->store, &req, &reply);
	free(text);
	if (rc == HF_OK) {
		json_t *ans = json_loads(reply->json, 0, NULL);
		r->version = json_integer_value(json_object_get(ans, "version"));
		json_decref(ans);
	} else {
		hf__err(err, rc, "checkpoint: %s", reply ? reply->error.message : "out of memory");
	}
	hf_reply_free(reply);
	return rc;
}

/* On an engine whose instances share sagas (its rows name their "owner": PostgreSQL), takes
 * the saga for this instance before running it: the record saved as it is, which the engine
 * refuses with HF_ESAGASTATE while another instance's lease on the saga runs. */
static int claim(struct run *r, hf_error *err)
{
	return put(r,
	           json_pack("{s:s, s:O, s:O, s:O}", "id", r->id, "type",
	                     json_object_get(r->rec, "type"), "state",
	                     json_object_get(r->rec, "state"), "record", r->rec),
	           err);
}

/* Saves the record with an event; on a version conflict the caller reloads. */
static int save(struct run *r, const char *event, const char *step, const char *phase,
                hf_error *err)
{
	json_object_set_new(r->rec, "updated_at_ms", json_integer(now_ms(r)));
	json_t *data = json_pack("{s:s, s:O, s:O, s:s?, s:s?}", "id", r->id, "type",
	                         json_object_get(r->rec, "type"), "state",
	                         json_object_get(r->rec, "state"), "step", step, "phase", phase);
	return put(r,
	           json_pack("{s:s, s:O, s:O, s:O, s:s, s:o}", "id", r->id, "type",
	                     json_object_get(r->rec, "type"), "state",
	                     json_object_get(r->rec, "state"), "record", r->rec, "event", event,
	                     "event_data", data),
	           err);
}

/* ---- templates ---- */

static json_t *template_ctx(struct run *r, const char *key)
{
	json_t *steps = json_object();
	json_t *arr = json_object_get(r->rec, "steps");
	for (size_t i = 0; steps && i < json_array_size(arr); i++) {
		json_t *s = json_array_get(arr, i), *res = json_object_get(s, "result");
		if (json_is_object(res))
			json_object_set(steps, json_string_value(json_object_get(s, "name")), res);
	}
	return json_pack("{s:O, s:o, s:{s:s}, s:{s:s}}", "input", json_object_get(r->rec, "input"),
	                 "steps", steps, "saga", "id", r->id, "step", "idempotency_key", key);
}

/* ---- one attempt of a hold step ---- */

static int64_t int_field(const json_t *spec, const char *key, int64_t dflt)
{
	json_t *v = json_object_get(spec, key);
	if (json_is_string(v)) /* a template that expanded to text: "2" */
		return strtoll(json_string_value(v), NULL, 10);
	return v ? json_integer_value(v) : dflt;
}

static json_t *hold_json(const hf_hold *h, const char *token)
{
	return json_pack("{s:s, s:s, s:s, s:I}", "id", h->id, "token", token, "state",
	                 hf_hold_state_name(h->state), "expires_at_ms", (json_int_t)h->expires_at_ms);
}

static void fail_with(struct outcome *o, bool final, const char *code, const char *fmt,
                      const char *a, const char *b)
{
	char msg[2 * HF_MESSAGE_MAX + 128]; /* cut to the message's size below */
	o->final = final;
	o->code = code;
	snprintf(msg, sizeof(msg), fmt, a, b);
	size_t n = strnlen(msg, sizeof(o->message) - 1);
	memcpy(o->message, msg, n);
	o->message[n] = 0;
}

/* Storage and engine trouble is worth retrying; everything else an acquire answers is not. */
static bool retryable(int code)
{
	return code == HF_ESTORAGE || code == HF_EENGINE || code == HF_ENOMEM || code == HF_ECLOSED ||
	       code == HF_EIDEMBUSY;
}

static void do_acquire(struct run *r, const json_t *spec, const char *key,
                       const struct hf__saga_call *c, struct outcome *o)
{
	char owner[HF_OWNER_MAX + 1];
	snprintf(owner, sizeof(owner), "saga/%s", r->id);
	hf_claim claim = {.name = json_string_value(json_object_get(spec, "resource")),
	                  .units = int_field(spec, "units", 1),
	                  .capacity = int_field(spec, "capacity", 1)};
	hf_request req;
	hf_request_init(&req, HF_OP_ACQUIRE);
	req.acquire = (hf_acquire_req){.owner = owner, .claims = &claim, .n_claims = 1,
	                               .ttl_ms = int_field(spec, "ttl_ms", 0),
	                               .wait_ms = int_field(spec, "wait_ms", 0),
	                               .idempotency_key = key};
	/* A wait is bounded by the step's timeout: the orchestrator must be able to stop. */
	if (req.acquire.wait_ms > c->timeout_ms)
		req.acquire.wait_ms = c->timeout_ms;
	const char *mode = json_string_value(json_object_get(spec, "mode"));
	if (mode)
		hf_mode_parse(mode, &req.acquire.mode);
	if (!claim.name) {
		fail_with(o, true, "template_error", "hold.resource is not a string%s%s", "", "");
		return;
	}
	hf_reply *reply;
	int rc = hf_call(r->store, &req, &reply);
	if (rc == HF_OK) {
		o->ok = true;
		o->hold = hold_json(reply->hold, reply->hold->token);
	} else {
		fail_with(o, !retryable(rc), rc == HF_EUNAVAILABLE ? "unavailable" : "hold_failed",
		          "acquire %s: %s", claim.name, reply ? reply->error.message : "out of memory");
	}
	hf_reply_free(reply);
}

static void attempt(struct run *r, size_t k, const struct hf__saga_call *c, const char *phase,
                    struct outcome *o);

/* The release of an acquire that may have happened without its checkpoint (a crash, then a
 * lease that ran out before the re-run): the acquire is replayed by its idempotency key, which
 * answers the hold it took, or takes it now — either way the key's record is then the
 * released hold, so a try after its cancel can never hold anything (the barrier). False when
 * the store could not say (retry); true with the step's hold set, or none if nothing is held. */
static bool find_by_key(struct run *r, const struct hf__saga_call *c, struct outcome *o)
{
	struct outcome a;
	memset(&a, 0, sizeof(a));
	attempt(r, (size_t)c->of, &r->t->steps[c->of].action, "action", &a);
	json_decref(a.result);
	if (a.ok)
		json_object_set_new(step_json(r, (size_t)c->of), "hold", a.hold);
	else
		json_decref(a.hold);
	if (!a.ok && !a.final)
		fail_with(o, false, "hold_failed", "%s%s", a.message, "");
	return a.ok || a.final;
}

/* extend, confirm, release of the hold that step `of` acquired. A re-run that finds the hold
 * already where the op would put it (confirmed; ended, for a release) succeeds. */
static void do_hold_op(struct run *r, const json_t *spec, const struct hf__saga_call *c,
                       struct outcome *o)
{
	json_t *of_step = step_json(r, (size_t)c->of);
	if (c->hold_op == HF__HOLD_RELEASE && !json_object_get(of_step, "hold") &&
	    json_is_true(json_object_get(of_step, "uncertain")) && !find_by_key(r, c, o))
		return;
	json_t *held = json_object_get(of_step, "hold");
	const char *id = json_string_value(json_object_get(held, "id"));
	const char *token = json_string_value(json_object_get(held, "token"));
	if (!id || !token) {
		if (c->hold_op == HF__HOLD_RELEASE) { /* nothing was taken: nothing to give back */
			o->ok = true;
			return;
		}
		fail_with(o, true, "hold_failed", "step %s holds nothing%s",
		          r->t->steps[c->of].name, "");
		return;
	}
	hf_hold *h = NULL;
	hf_error err;
	int rc = c->hold_op == HF__HOLD_EXTEND    ? hf_extend(r->store, id, token, int_field(spec, "ttl_ms", 0), &h, &err)
	         : c->hold_op == HF__HOLD_CONFIRM ? hf_confirm(r->store, id, token, &h, &err)
	                                          : hf_release(r->store, id, token, &h, &err);
	if (rc != HF_OK && !retryable(rc)) {
		/* Where is the hold now? */
		hf_request req;
		hf_reply *reply;
		hf_request_init(&req, HF_OP_GET_HOLD);
		req.hold_id = id;
		int grc = hf_call(r->store, &req, &reply);
		hf_hold_state st = grc == HF_OK ? reply->hold->state : HF_HOLD_EXPIRED;
		bool ended = grc == HF_ENOHOLD || st == HF_HOLD_RELEASED || st == HF_HOLD_EXPIRED;
		if ((c->hold_op == HF__HOLD_RELEASE && ended) ||
		    (c->hold_op == HF__HOLD_CONFIRM && st == HF_HOLD_CONFIRMED && grc == HF_OK)) {
			rc = HF_OK;
			h = grc == HF_OK ? hf_hold_dup(reply->hold) : NULL;
		}
		hf_reply_free(reply);
		if (rc != HF_OK && ended) {
			fail_with(o, true, "lease_expired", "the hold of step %s ended before %s",
			          r->t->steps[c->of].name, c->hold_op == HF__HOLD_CONFIRM ? "its confirm" : "its extend");
			return;
		}
	}
	if (rc == HF_OK) {
		o->ok = true;
		o->hold = h ? hold_json(h, token)
		            : json_pack("{s:s, s:s, s:s, s:i}", "id", id, "token", token, "state", "released",
		                        "expires_at_ms", 0);
		hf_hold_free(h);
		return;
	}
	fail_with(o, !retryable(rc), "hold_failed", "hold %s: %s", id, err.message);
}

/* ---- one attempt of an HTTP step ---- */

static bool status_ok(const json_t *spec, int status)
{
	json_t *ok = json_object_get(spec, "ok");
	if (!ok)
		return status >= 200 && status < 300;
	for (size_t i = 0; i < json_array_size(ok); i++)
		if (json_integer_value(json_array_get(ok, i)) == status)
			return true;
	return false;
}

/* Success, a retry (5xx, 408, 429) or a final failure, by the step's "ok" statuses. */
static void step_status(const json_t *spec, const char *what, int status, const char *body,
                        struct outcome *o)
{
	if (status_ok(spec, status)) {
		o->ok = true;
		return;
	}
	bool transient = status >= 500 || status == 408 || status == 429;
	char head[32];
	snprintf(head, sizeof(head), "%s %d", what, status);
	fail_with(o, !transient, "step_failed", "%s: %.160s", head, body ? body : "");
}

static void do_http(struct run *r, const json_t *spec, const char *key, int64_t deadline,
                    bool lease_bound, struct outcome *o)
{
	json_t *body = json_object_get(spec, "body");
	char *text = body ? hf__json_dumps(body, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
	struct hf__http_result res;
	hf_error err;
	int rc = hf__http_call(json_string_value(json_object_get(spec, "method")),
	                       json_string_value(json_object_get(spec, "url")), text, key, NULL, deadline,
	                       r->stop, &res, &err);
	free(text);
	if (rc == HF_ECANCELED) {
		o->stopped = true;
		return;
	}
	if (rc != HF_OK) {
		o->uncertain = res.sent;
		if (rc == HF_ETIMEDOUT && lease_bound)
			fail_with(o, true, "lease_expired", "a hold's lease ran out during the call%s%s", "", "");
		else
			fail_with(o, rc == HF_EINVAL, "step_failed", "%s%s", err.message, "");
		return;
	}
	json_t *parsed = res.body_len <= HF__SAGA_RESULT_MAX ? json_loads(res.body, JSON_DECODE_ANY, NULL) : NULL;
	if (!parsed && res.body_len <= HF__SAGA_RESULT_MAX)
		parsed = json_stringn(res.body, res.body_len);
	o->result = json_pack("{s:i, s:o}", "status", res.status, "body", parsed ? parsed : json_null());
	step_status(spec, "HTTP", res.status, res.body, o);
	hf__http_result_clear(&res);
}

/* ---- one attempt of an AMQP step ---- */

/* The reply of a service on a queue: {"status": 100..599, "body": any} (docs/sagas.md). */
static void amqp_reply(const json_t *spec, const char *text, struct outcome *o)
{
	size_t len = strlen(text);
	json_t *reply = len <= HF__SAGA_REPLY_MAX ? json_loads(text, 0, NULL) : NULL;
	json_t *status = json_object_get(reply, "status");
	if (!json_is_integer(status) || json_integer_value(status) < 100 ||
	    json_integer_value(status) > 599) {
		/* Answered, so it may have acted: like an unreadable HTTP reply. */
		o->uncertain = true;
		fail_with(o, false, "step_failed", "the reply is not {\"status\",\"body\"}: %.160s%s", text, "");
		json_decref(reply);
		return;
	}
	int st = (int)json_integer_value(status);
	json_t *body = json_object_get(reply, "body");
	o->result = json_pack("{s:i, s:O}", "status", st,
	                      "body", body && len <= HF__SAGA_RESULT_MAX ? body : json_null());
	json_decref(reply);
	step_status(spec, "AMQP reply status", st, text, o);
}

/* Each orchestrator thread keeps its own connection to the broker (request.c), closed by
 * hf__saga_run_thread_end when the thread ends. */
static _Thread_local struct relay_amqp_client *amqp_client;

void hf__saga_run_thread_end(void)
{
	relay_amqp_client_free(amqp_client);
	amqp_client = NULL;
}

static void do_amqp(struct run *r, const json_t *spec, const char *key, int64_t timeout,
                    bool lease_bound, struct outcome *o)
{
	if (!amqp_client && !(amqp_client = relay_amqp_client_new())) {
		fail_with(o, false, "step_failed", "out of memory%s%s", "", "");
		return;
	}
	json_t *body = json_object_get(spec, "body");
	char *text = hf__json_dumps(body ? body : json_null(), JSON_COMPACT | JSON_ENCODE_ANY);
	const char *exchange = json_string_value(json_object_get(spec, "exchange"));
	bool sent = false;
	struct relay_request rq = {.url = json_string_value(json_object_get(spec, "url")),
	                           .exchange = exchange ? exchange : "",
	                           .routing_key = json_string_value(json_object_get(spec, "routing_key")),
	                           .body = text, .timeout_ms = timeout, .message_id = key,
	                           .stop = r->stop, .sent = &sent};
	char *reply = NULL;
	hf_error err;
	int rc = !text ? hf__err_code(&err, HF_ENOMEM)
	         : !rq.url || !rq.routing_key
	             ? hf__err(&err, HF_EINVAL, "amqp url and routing_key must be strings")
	             : relay_amqp_request_on(amqp_client, &rq, &reply, &err);
	free(text);
	if (rc == HF_ECANCELED) {
		o->stopped = true;
	} else if (rc != HF_OK) {
		/* Returned unroutable (HF_EUNAVAILABLE): published, but no queue took it. */
		o->uncertain = sent && rc != HF_EUNAVAILABLE;
		if (rc == HF_ETIMEDOUT && lease_bound)
			fail_with(o, true, "lease_expired", "a hold's lease ran out during the call%s%s", "", "");
		else
			fail_with(o, rc == HF_EINVAL || rc == HF_EAUTH, "step_failed", "%s%s", err.message, "");
	} else {
		amqp_reply(spec, reply, o);
	}
	free(reply);
}

/* ---- leases ---- */

/* The earliest end of a tentative hold the saga keeps (store clock), or INT64_MAX. */
static int64_t lease_deadline(struct run *r)
{
	int64_t d = INT64_MAX;
	json_t *steps = json_object_get(r->rec, "steps");
	/* The acquiring step's copy is the one kept current (extend, confirm and release update
	 * it); the others show the hold as their own op left it. */
	for (size_t i = 0; i < json_array_size(steps) && i < r->t->n_steps; i++) {
		const struct hf__saga_call *a = &r->t->steps[i].action;
		if (a->kind != HF__SAGA_HOLD || a->hold_op != HF__HOLD_ACQUIRE)
			continue;
		json_t *h = json_object_get(json_array_get(steps, i), "hold");
		const char *st = json_string_value(json_object_get(h, "state"));
		int64_t e = json_integer_value(json_object_get(h, "expires_at_ms"));
		if (st && strcmp(st, "tentative") == 0 && e > 0 && e < d)
			d = e;
	}
	return d;
}

/* One attempt of a call: templates, then the call. */
static void attempt(struct run *r, size_t k, const struct hf__saga_call *c, const char *phase,
                    struct outcome *o)
{
	/* HTTP: "<saga id>/<step>/<phase>" (SAGA_FORMAT.md); holds: "saga/" before it, the
	 * owner's prefix, so that a saga's keys never meet a client's. */
	char key[HF_IDEMPOTENCY_KEY_MAX - 4], hold_key[HF_IDEMPOTENCY_KEY_MAX + 1];
	snprintf(key, sizeof(key), "%s/%s/%s", r->id, r->t->steps[k].name, phase);
	snprintf(hold_key, sizeof(hold_key), "saga/%s", key);
	json_t *ctx = template_ctx(r, key);
	hf_error err;
	json_t *spec = ctx ? hf__template_expand(c->spec, ctx, &err) : NULL;
	json_decref(ctx);
	if (!spec) {
		fail_with(o, true, "template_error", "%s%s", ctx ? err.message : "out of memory", "");
		return;
	}
	if (c->kind == HF__SAGA_HTTP || c->kind == HF__SAGA_AMQP) {
		int64_t timeout = c->timeout_ms;
		json_t *t = json_object_get(spec, "timeout_ms");
		if (json_is_integer(t))
			timeout = json_integer_value(t);
		/* An action ends at the earliest lease the saga keeps: the hold is the deadline. */
		int64_t lease = strcmp(phase, "action") == 0 ? lease_deadline(r) : INT64_MAX;
		int64_t until_lease = lease == INT64_MAX ? INT64_MAX : lease - now_ms(r);
		bool lease_bound = until_lease < timeout;
		if (lease_bound)
			timeout = until_lease > 0 ? until_lease : 1;
		if (c->kind == HF__SAGA_HTTP)
			do_http(r, spec, key, hf__mono_ms() + timeout, lease_bound, o);
		else
			do_amqp(r, spec, key, timeout, lease_bound, o);
	} else if (c->hold_op == HF__HOLD_ACQUIRE) {
		do_acquire(r, spec, hold_key, c, o);
	} else {
		do_hold_op(r, spec, c, o);
	}
	json_decref(spec);
}

static int64_t backoff(const struct hf__saga_retry *p, int attempt_no)
{
	int64_t b = p->backoff_ms;
	for (int i = 1; i < attempt_no && b < p->max_backoff_ms; i++)
		b *= 2;
	return b < p->max_backoff_ms ? b : p->max_backoff_ms;
}

/* Runs a call with its retry policy, logging each attempt. `base` is the attempts already
 * spent (compensations keep counting across resumes). Returns the last outcome in *o. */
static void run_call(struct run *r, size_t k, const struct hf__saga_call *c, const char *phase,
                     int base, int budget, struct outcome *o)
{
	const char *name = r->t->steps[k].name;
	for (int a = base + 1;; a++) {
		memset(o, 0, sizeof(*o));
		if (strcmp(phase, "action") == 0 && lease_deadline(r) <= now_ms(r)) {
			fail_with(o, true, "lease_expired", "a hold's lease ran out before step %s%s", name, "");
			o->not_tried = a == base + 1;
			return;
		}
		hf__record_log(r->rec, now_ms(r), name, phase, "started", a, NULL);
		attempt(r, k, c, phase, o);
		if (o->stopped || o->ok)
			return;
		json_object_set_new(step_json(r, k), strcmp(phase, "action") == 0 ? "attempts" : "comp_attempts",
		                    json_integer(a));
		hf__record_log(r->rec, now_ms(r), name, phase, "failed", a, o->message);
		if (o->final || a - base >= budget)
			return;
		int64_t wait = backoff(&c->retry, a - base);
		hf__record_log(r->rec, now_ms(r), name, phase, "retrying", a, NULL);
		json_decref(o->result), o->result = NULL;
		if (!nap(r, wait)) {
			o->stopped = true;
			return;
		}
	}
}

/* ---- transitions ---- */

static int next_action(struct run *r, hf_error *err)
{
	size_t k = (size_t)json_integer_value(json_object_get(r->rec, "cursor"));
	if (k >= r->t->n_steps) {
		set(r->rec, "state", json_string("completed"));
		return save(r, "saga.completed", NULL, NULL, err);
	}
	json_t *s = step_json(r, k);
	if (json_is_null(json_object_get(s, "started_at_ms")))
		set(s, "started_at_ms", json_integer(now_ms(r)));
	set(s, "state", json_string("running"));
	struct outcome o;
	const struct hf__saga_call *act = &r->t->steps[k].action;
	run_call(r, k, act, "action", 0, act->retry.attempts, &o);
	/* A crash may have interrupted the step after it acted and before its checkpoint; a lease
	 * that ran out before the re-run leaves it uncertain. An acquire's release finds its hold
	 * by key (find_by_key); a barrier step's compensation is harmless if it never acted. */
	if (o.not_tried && (r->t->steps[k].barrier ||
	                    (act->kind == HF__SAGA_HOLD && act->hold_op == HF__HOLD_ACQUIRE)))
		o.uncertain = true;
	if (o.stopped) {
		json_decref(o.result), json_decref(o.hold);
		return HF_ECANCELED;
	}
	const char *name = r->t->steps[k].name;
	set(s, "ended_at_ms", json_integer(now_ms(r)));
	if (o.result)
		set(s, "result", o.result);
	if (o.hold)
		set(s, "hold", o.hold);
	if (o.ok) {
		set(s, "state", json_string("succeeded"));
		json_object_set_new(s, "attempts",
		                    json_integer(json_integer_value(json_object_get(s, "attempts")) + 1));
		if (r->t->steps[k].action.kind == HF__SAGA_HOLD && r->t->steps[k].action.hold_op != HF__HOLD_ACQUIRE)
			json_object_set(step_json(r, (size_t)r->t->steps[k].action.of), "hold", o.hold);
		hf__record_log(r->rec, now_ms(r), name, "action", "succeeded",
		               (int)json_integer_value(json_object_get(s, "attempts")), NULL);
		set(r->rec, "cursor", json_integer((json_int_t)k + 1));
		return save(r, "saga.step_completed", name, "action", err);
	}
	set(s, "state", json_string("failed"));
	set(s, "error", hf__record_error(o.code, o.message));
	/* Sent without an answer: it may have acted, so its compensation runs too (first). */
	if (o.uncertain && r->t->steps[k].has_compensation)
		set(s, "uncertain", json_true());
	set(r->rec, "error", hf__record_error(o.code, o.message));
	set(r->rec, "state", json_string("compensating"));
	set(r->rec, "cursor", json_integer((json_int_t)k - (o.uncertain ? 0 : 1)));
	return save(r, "saga.compensating", name, "action", err);
}

static bool needs_compensation(struct run *r, size_t k)
{
	json_t *s = step_json(r, k);
	const char *st = json_string_value(json_object_get(s, "state"));
	bool uncertain = json_is_true(json_object_get(s, "uncertain"));
	return r->t->steps[k].has_compensation && st &&
	       (strcmp(st, "succeeded") == 0 || strcmp(st, "compensation_failed") == 0 ||
	        (strcmp(st, "failed") == 0 && uncertain));
}

static int next_compensation(struct run *r, hf_error *err)
{
	json_int_t k = json_integer_value(json_object_get(r->rec, "cursor"));
	while (k >= 0 && !needs_compensation(r, (size_t)k))
		k--;
	if (k < 0) {
		set(r->rec, "state", json_string("failed"));
		return save(r, "saga.failed", NULL, NULL, err);
	}
	json_t *s = step_json(r, (size_t)k);
	const struct hf__saga_call *c = &r->t->steps[k].compensation;
	int spent = (int)json_integer_value(json_object_get(s, "comp_attempts"));
	struct outcome o;
	run_call(r, (size_t)k, c, "compensation", spent, c->retry.attempts, &o);
	json_decref(o.result);
	if (o.stopped) {
		json_decref(o.hold);
		return HF_ECANCELED;
	}
	const char *name = r->t->steps[k].name;
	if (o.hold && c->kind == HF__SAGA_HOLD)
		json_object_set(step_json(r, (size_t)c->of), "hold", o.hold);
	json_decref(o.hold);
	if (o.ok) {
		set(s, "state", json_string("compensated"));
		hf__record_log(r->rec, now_ms(r), name, "compensation", "succeeded", spent + 1, NULL);
		set(r->rec, "cursor", json_integer(k - 1));
		return save(r, "saga.step_completed", name, "compensation", err);
	}
	set(s, "state", json_string("compensation_failed"));
	set(s, "error", hf__record_error("compensation_failed", o.message));
	char msg[HF_MESSAGE_MAX + 128];
	snprintf(msg, sizeof(msg), "compensation of step %s failed: %s", name, o.message);
	set(r->rec, "error", hf__record_error("compensation_failed", msg));
	set(r->rec, "state", json_string("compensation_failed"));
	return save(r, "saga.compensation_failed", name, "compensation", err);
}

int hf__saga_run(hf_store *store, const char *id, const _Atomic bool *stop, hf_error *err)
{
	struct run r = {.store = store, .stop = stop, .id = id};
	int rc = load(&r, err);
	while (rc == HF_OK || rc == HF_EVERSION) {
		if (rc == HF_EVERSION && (rc = load(&r, err)) != HF_OK)
			break;
		if (*stop) {
			rc = HF_ECANCELED;
			break;
		}
		const char *st = rec_state(&r);
		if (st && strcmp(st, "running") == 0)
			rc = next_action(&r, err);
		else if (st && strcmp(st, "compensating") == 0)
			rc = next_compensation(&r, err);
		else
			break; /* completed, failed or parked: at rest */
	}
	json_decref(r.rec);
	hf__saga_type_free(r.t);
	/* Another instance runs it (it took the saga over, or has it): nothing to do here. */
	return rc == HF_ESAGASTATE ? HF_OK : rc;
}
