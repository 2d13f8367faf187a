/*
 * type.c — a saga type from its JSON: the structure, the limits, and every template's
 * references checked against the steps before it, with errors that name the path
 * ("steps[2].action.http.url: template refers to unknown step \"x\"").
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "saga/saga.h"

#define PATH_MAX_LEN 160

/* What a template in the call being checked may refer to. */
struct scope {
	const struct hf__saga_type *t;
	size_t step;       /* the step being checked */
	bool compensation; /* a compensation may also name its own step */
};

/* out = path + "." + key, cut to size: paths are for messages. */
static void subpath(char *out, size_t size, const char *path, const char *key)
{
	size_t n = strnlen(path, size - 1);
	memcpy(out, path, n);
	out[n] = 0;
	strncat(out, ".", size - n - 1);
	strncat(out, key, size - strlen(out) - 1);
}

static int bad(hf_error *err, const char *path, const char *fmt, const char *arg)
{
	char msg[HF_MESSAGE_MAX];
	snprintf(msg, sizeof(msg), fmt, arg);
	return hf__err(err, HF_EINVAL, "%s: %s", path, msg);
}

/* Refuses keys other than the listed ones: a typo must not be silently ignored. */
static int only_keys(const json_t *obj, const char *path, const char *const *keys, hf_error *err)
{
	const char *k;
	json_t *v;
	json_object_foreach((json_t *)obj, k, v)
	{
		bool known = false;
		for (const char *const *p = keys; *p && !known; p++)
			known = strcmp(*p, k) == 0;
		if (!known)
			return bad(err, path, "unknown field \"%s\"", k);
	}
	return HF_OK;
}

static int get_int(const json_t *obj, const char *key, const char *path, int64_t lo, int64_t hi,
                   int64_t *out, hf_error *err)
{
	json_t *v = json_object_get(obj, key);
	if (!v)
		return HF_OK; /* keeps the default in *out */
	if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi) {
		char range[96];
		snprintf(range, sizeof(range), "an integer %lld..%lld", (long long)lo, (long long)hi);
		return hf__err(err, HF_EINVAL, "%s.%s: must be %s", path, key, range);
	}
	*out = json_integer_value(v);
	return HF_OK;
}

static int parse_retry(const json_t *obj, const char *path, struct hf__saga_retry *r,
                       hf_error *err)
{
	static const char *const keys[] = {"attempts", "backoff_ms", "max_backoff_ms", NULL};
	if (!json_is_object(obj))
		return bad(err, path, "must be an object%s", "");
	int64_t attempts = r->attempts;
	int rc;
	if ((rc = only_keys(obj, path, keys, err)) ||
	    (rc = get_int(obj, "attempts", path, 1, HF__SAGA_ATTEMPTS_MAX, &attempts, err)) ||
	    (rc = get_int(obj, "backoff_ms", path, 0, HF__SAGA_BACKOFF_MAX_MS, &r->backoff_ms, err)) ||
	    (rc = get_int(obj, "max_backoff_ms", path, 0, HF__SAGA_BACKOFF_MAX_MS, &r->max_backoff_ms,
	                  err)))
		return rc;
	r->attempts = (int)attempts;
	if (r->max_backoff_ms < r->backoff_ms)
		r->max_backoff_ms = r->backoff_ms;
	return HF_OK;
}

/* ---- template references ---- */

struct ref_check {
	const struct scope *scope;
	const char *path;
};

static int check_ref(void *arg, const char *ref, hf_error *err)
{
	const struct ref_check *rc = arg;
	char head[16], name[HF__SAGA_STEP_NAME_MAX + 1], field[16];
	size_t hl = strcspn(ref, ".");
	if (hl == 0 || hl >= sizeof(head))
		return bad(err, rc->path, "template refers to \"%s\", which is not input, steps, saga or step", ref);
	memcpy(head, ref, hl), head[hl] = 0;
	const char *rest = ref[hl] ? ref + hl + 1 : "";
	if (strcmp(head, "input") == 0)
		return HF_OK;
	if (strcmp(head, "saga") == 0 && strcmp(rest, "id") == 0)
		return HF_OK;
	if (strcmp(head, "step") == 0 && strcmp(rest, "idempotency_key") == 0)
		return HF_OK;
	if (strcmp(head, "steps") != 0)
		return bad(err, rc->path, "template refers to \"%s\", which is not input.*, steps.*, saga.id or step.idempotency_key", ref);
	size_t nl = strcspn(rest, ".");
	if (nl == 0 || nl > HF__SAGA_STEP_NAME_MAX)
		return bad(err, rc->path, "template \"%s\" must name a step", ref);
	memcpy(name, rest, nl), name[nl] = 0;
	int i = hf__saga_step_index(rc->scope->t, name);
	size_t limit = rc->scope->step + (rc->scope->compensation ? 1 : 0);
	if (i < 0 || (size_t)i >= limit)
		return bad(err, rc->path, i < 0 ? "template refers to unknown step \"%s\""
		                                : "template refers to step \"%s\", which has not run yet",
		           name);
	const char *f = rest[nl] ? rest + nl + 1 : "";
	size_t fl = strcspn(f, ".");
	if (fl >= sizeof(field))
		fl = sizeof(field) - 1;
	memcpy(field, f, fl), field[fl] = 0;
	if (strcmp(field, "body") != 0 && !(strcmp(field, "status") == 0 && !f[fl]))
		return bad(err, rc->path, "template \"%s\" must end in .body[.field...] or .status", ref);
	if (rc->scope->t->steps[i].action.kind == HF__SAGA_HOLD)
		return bad(err, rc->path, "template refers to step \"%s\", which is not an HTTP or AMQP step", name);
	return HF_OK;
}

static int check_templates(const json_t *tree, const struct scope *scope, const char *path,
                           hf_error *err)
{
	struct ref_check rc = {scope, path};
	return hf__template_refs(tree, path, check_ref, &rc, err);
}

/* An integer field that may also be one template ("{{input.bags}}"). */
static int int_or_template(const json_t *spec, const char *key, const char *path, bool required,
                           int64_t lo, int64_t hi, const struct scope *scope, hf_error *err)
{
	char p[PATH_MAX_LEN];
	subpath(p, sizeof(p), path, key);
	json_t *v = json_object_get(spec, key);
	if (!v)
		return required ? bad(err, p, "is required%s", "") : HF_OK;
	if (json_is_string(v))
		return check_templates(v, scope, p, err);
	int64_t dummy = 0;
	return get_int(spec, key, path, lo, hi, &dummy, err);
}

/* ---- calls ---- */

/* "ok": the statuses that count as success (HTTP, and an AMQP reply's "status"). */
static int check_ok(const json_t *spec, const char *path, hf_error *err)
{
	char p[PATH_MAX_LEN];
	json_t *ok = json_object_get(spec, "ok");
	subpath(p, sizeof(p), path, "ok");
	if (ok && (!json_is_array(ok) || json_array_size(ok) == 0 || json_array_size(ok) > 16))
		return bad(err, p, "must be an array of 1..16 HTTP status codes%s", "");
	for (size_t i = 0; ok && i < json_array_size(ok); i++) {
		json_t *s = json_array_get(ok, i);
		if (!json_is_integer(s) || json_integer_value(s) < 100 || json_integer_value(s) > 599)
			return bad(err, p, "must be an array of 1..16 HTTP status codes%s", "");
	}
	return HF_OK;
}

static int parse_http(json_t *spec, const char *path, const struct scope *scope,
                      struct hf__saga_call *c, hf_error *err)
{
	static const char *const keys[] = {"method", "url", "body", "ok", "timeout_ms", NULL};
	static const char *const methods[] = {"GET", "POST", "PUT", "PATCH", "DELETE", NULL};
	char p[PATH_MAX_LEN];
	int rc;
	if ((rc = only_keys(spec, path, keys, err)))
		return rc;
	json_t *m = json_object_get(spec, "method");
	bool known = false;
	for (const char *const *k = methods; json_is_string(m) && *k && !known; k++)
		known = strcmp(*k, json_string_value(m)) == 0;
	subpath(p, sizeof(p), path, "method");
	if (!known)
		return bad(err, p, "must be one of GET, POST, PUT, PATCH, DELETE%s", "");
	json_t *url = json_object_get(spec, "url");
	subpath(p, sizeof(p), path, "url");
	if (!json_is_string(url))
		return bad(err, p, "must be a string%s", "");
	const char *u = json_string_value(url);
	if (strncmp(u, "{{", 2) != 0 && strncmp(u, "http://", 7) != 0)
		return bad(err, p, "must start with http:// (or a template), not \"%.40s\"", u);
	if ((rc = check_templates(url, scope, p, err)))
		return rc;
	subpath(p, sizeof(p), path, "body");
	if ((rc = check_templates(json_object_get(spec, "body"), scope, p, err)))
		return rc;
	if ((rc = check_ok(spec, path, err)))
		return rc;
	return get_int(spec, "timeout_ms", path, 1, HF__SAGA_TIMEOUT_MAX_MS, &c->timeout_ms, err);
}

/* {"url","exchange","routing_key","body","ok","timeout_ms"}: a request to a service that
 * listens on a RabbitMQ queue; its reply is {"status","body"} (docs/sagas.md, "AMQP"). */
static int parse_amqp(json_t *spec, const char *path, const struct scope *scope,
                      struct hf__saga_call *c, hf_error *err)
{
	static const char *const keys[] = {"url", "exchange", "routing_key", "body", "ok",
	                                   "timeout_ms", NULL};
	char p[PATH_MAX_LEN];
	int rc;
	if ((rc = only_keys(spec, path, keys, err)))
		return rc;
	json_t *url = json_object_get(spec, "url");
	subpath(p, sizeof(p), path, "url");
	if (!json_is_string(url))
		return bad(err, p, "must be a string%s", "");
	const char *u = json_string_value(url);
	if (strncmp(u, "{{", 2) != 0 && strncmp(u, "amqp://", 7) != 0)
		return bad(err, p, "must start with amqp:// (or a template), not \"%.40s\"", u);
	if ((rc = check_templates(url, scope, p, err)))
		return rc;
	json_t *key = json_object_get(spec, "routing_key"), *ex = json_object_get(spec, "exchange");
	subpath(p, sizeof(p), path, "routing_key");
	if (!json_is_string(key) || json_string_length(key) == 0 || json_string_length(key) > 255)
		return bad(err, p, "must be a string of 1..255 bytes (templates allowed)%s", "");
	if ((rc = check_templates(key, scope, p, err)))
		return rc;
	subpath(p, sizeof(p), path, "exchange");
	if (ex && (!json_is_string(ex) || json_string_length(ex) > 255))
		return bad(err, p, "must be a string of 0..255 bytes (\"\" = the default exchange)%s", "");
	if ((rc = check_templates(ex, scope, p, err)))
		return rc;
	subpath(p, sizeof(p), path, "body");
	if ((rc = check_templates(json_object_get(spec, "body"), scope, p, err)) ||
	    (rc = check_ok(spec, path, err)))
		return rc;
	return get_int(spec, "timeout_ms", path, 1, HF__SAGA_TIMEOUT_MAX_MS, &c->timeout_ms, err);
}

static int parse_of(json_t *spec, const char *path, const struct scope *scope,
                    struct hf__saga_call *c, hf_error *err)
{
	char p[PATH_MAX_LEN];
	subpath(p, sizeof(p), path, "of");
	json_t *of = json_object_get(spec, "of");
	if (!json_is_string(of))
		return bad(err, p, "must name the step that acquired the hold%s", "");
	int i = hf__saga_step_index(scope->t, json_string_value(of));
	size_t limit = scope->step + (scope->compensation ? 1 : 0);
	if (i < 0 || (size_t)i >= limit)
		return bad(err, p, "names \"%s\", which is not an earlier step", json_string_value(of));
	const struct hf__saga_call *a = &scope->t->steps[i].action;
	if (a->kind != HF__SAGA_HOLD || a->hold_op != HF__HOLD_ACQUIRE)
		return bad(err, p, "names \"%s\", which is not a hold acquire", json_string_value(of));
	c->of = i;
	return HF_OK;
}

static int parse_hold(json_t *spec, const char *path, const struct scope *scope,
                      struct hf__saga_call *c, hf_error *err)
{
	static const char *const acquire_keys[] = {"op", "resource", "capacity", "ttl_ms", "wait_ms",
	                                           "mode", "units", NULL};
	static const char *const extend_keys[] = {"op", "of", "ttl_ms", NULL};
	static const char *const end_keys[] = {"op", "of", NULL};
	char p[PATH_MAX_LEN];
	int rc;
	json_t *op = json_object_get(spec, "op");
	const char *o = json_is_string(op) ? json_string_value(op) : "";
	subpath(p, sizeof(p), path, "op");
	if (strcmp(o, "acquire") == 0) {
		c->hold_op = HF__HOLD_ACQUIRE;
		json_t *res = json_object_get(spec, "resource"), *mode = json_object_get(spec, "mode");
		hf_mode m;
		subpath(p, sizeof(p), path, "resource");
		if (!json_is_string(res) || !*json_string_value(res))
			return bad(err, p, "must be a resource name (a string, templates allowed)%s", "");
		if ((rc = only_keys(spec, path, acquire_keys, err)) ||
		    (rc = check_templates(res, scope, p, err)) ||
		    (rc = int_or_template(spec, "capacity", path, false, 0, HF_CAPACITY_MAX, scope, err)) ||
		    (rc = int_or_template(spec, "ttl_ms", path, true, 1, HF_TTL_MAX_MS, scope, err)) ||
		    (rc = int_or_template(spec, "wait_ms", path, false, 0, HF_WAIT_MAX_MS, scope, err)) ||
		    (rc = int_or_template(spec, "units", path, false, 1, HF_CAPACITY_MAX, scope, err)))
			return rc;
		subpath(p, sizeof(p), path, "mode");
		if (mode && (!json_is_string(mode) || hf_mode_parse(json_string_value(mode), &m)))
			return bad(err, p, "must be units, shared or exclusive%s", "");
		return HF_OK;
	}
	if (strcmp(o, "extend") == 0) {
		c->hold_op = HF__HOLD_EXTEND;
		if ((rc = only_keys(spec, path, extend_keys, err)) ||
		    (rc = int_or_template(spec, "ttl_ms", path, true, 1, HF_TTL_MAX_MS, scope, err)))
			return rc;
		return parse_of(spec, path, scope, c, err);
	}
	if (strcmp(o, "confirm") == 0 || strcmp(o, "release") == 0) {
		c->hold_op = o[0] == 'c' ? HF__HOLD_CONFIRM : HF__HOLD_RELEASE;
		if ((rc = only_keys(spec, path, end_keys, err)))
			return rc;
		return parse_of(spec, path, scope, c, err);
	}
	return bad(err, p, "must be acquire, extend, confirm or release%s", "");
}

/* An action or compensation: {"http": {...}}, {"amqp": {...}} or {"hold": {...}}, with an
 * optional "retry". */
static int parse_call(json_t *obj, const char *path, const struct scope *scope,
                      const struct hf__saga_retry *retry, int64_t timeout_ms,
                      struct hf__saga_call *c, hf_error *err)
{
	static const char *const keys[] = {"http", "amqp", "hold", "retry", NULL};
	char p[PATH_MAX_LEN];
	int rc;
	if (!json_is_object(obj))
		return bad(err, path, "must be an object with \"http\", \"amqp\" or \"hold\"%s", "");
	if ((rc = only_keys(obj, path, keys, err)))
		return rc;
	c->retry = *retry;
	c->timeout_ms = timeout_ms;
	json_t *r = json_object_get(obj, "retry");
	subpath(p, sizeof(p), path, "retry");
	if (r && (rc = parse_retry(r, p, &c->retry, err)))
		return rc;
	static const char *const kinds[] = {[HF__SAGA_HTTP] = "http", [HF__SAGA_HOLD] = "hold",
	                                    [HF__SAGA_AMQP] = "amqp"};
	int found = 0;
	for (size_t k = 0; k < sizeof(kinds) / sizeof(kinds[0]); k++)
		if ((c->spec = json_object_get(obj, kinds[k])) != NULL)
			found++, c->kind = (enum hf__saga_kind)k;
	if (found != 1)
		return bad(err, path, "must have exactly one of \"http\", \"amqp\" and \"hold\"%s", "");
	c->spec = json_object_get(obj, kinds[c->kind]);
	subpath(p, sizeof(p), path, kinds[c->kind]);
	if (!json_is_object(c->spec))
		return bad(err, p, "must be an object%s", "");
	return c->kind == HF__SAGA_HTTP ? parse_http(c->spec, p, scope, c, err)
	       : c->kind == HF__SAGA_AMQP ? parse_amqp(c->spec, p, scope, c, err)
	                                  : parse_hold(c->spec, p, scope, c, err);
}

/* ---- the type ---- */

struct defaults {
	struct hf__saga_retry retry, comp_retry;
	int64_t timeout_ms;
};

static int parse_defaults(const json_t *d, struct defaults *out, hf_error *err)
{
	static const char *const keys[] = {"retry", "compensation_retry", "timeout_ms", NULL};
	out->retry = (struct hf__saga_retry){HF__SAGA_DEFAULT_ATTEMPTS, HF__SAGA_DEFAULT_BACKOFF_MS,
	                                     HF__SAGA_DEFAULT_MAX_BACKOFF_MS};
	out->comp_retry = out->retry;
	out->comp_retry.attempts = HF__SAGA_DEFAULT_COMP_ATTEMPTS;
	out->timeout_ms = HF__SAGA_DEFAULT_TIMEOUT_MS;
	if (!d)
		return HF_OK;
	int rc;
	if (!json_is_object(d))
		return bad(err, "defaults", "must be an object%s", "");
	if ((rc = only_keys(d, "defaults", keys, err)))
		return rc;
	json_t *r = json_object_get(d, "retry"), *c = json_object_get(d, "compensation_retry");
	if ((r && (rc = parse_retry(r, "defaults.retry", &out->retry, err))) ||
	    (c && (rc = parse_retry(c, "defaults.compensation_retry", &out->comp_retry, err))))
		return rc;
	return get_int(d, "timeout_ms", "defaults", 1, HF__SAGA_TIMEOUT_MAX_MS, &out->timeout_ms, err);
}

static int parse_name(struct hf__saga_type *t, size_t i, json_t *step, hf_error *err)
{
	char p[PATH_MAX_LEN];
	snprintf(p, sizeof(p), "steps[%zu].name", i);
	json_t *n = json_object_get(step, "name");
	const char *s = json_is_string(n) ? json_string_value(n) : "";
	size_t len = strlen(s);
	if (len == 0 || len > HF__SAGA_STEP_NAME_MAX || strspn(s, "abcdefghijklmnopqrstuvwxyz"
	                                                         "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
	                                                         "0123456789_-") != len)
		return bad(err, p, "must be 1..64 characters of [A-Za-z0-9_-]%s", "");
	if (hf__saga_step_index(t, s) >= 0)
		return bad(err, p, "\"%s\" names an earlier step too", s);
	t->steps[i].name = s;
	return HF_OK;
}

static int parse_steps(struct hf__saga_type *t, const json_t *steps, const struct defaults *d,
                       hf_error *err)
{
	static const char *const keys[] = {"name", "action", "compensation", "barrier", NULL};
	char p[PATH_MAX_LEN];
	if (!json_is_array(steps) || json_array_size(steps) == 0 ||
	    json_array_size(steps) > HF__SAGA_STEPS_MAX)
		return bad(err, "steps", "must be an array of 1..64 steps%s", "");
	for (size_t i = 0; i < json_array_size(steps); i++) {
		json_t *s = json_array_get(steps, i);
		int rc;
		snprintf(p, sizeof(p), "steps[%zu]", i);
		if (!json_is_object(s))
			return bad(err, p, "must be an object%s", "");
		if ((rc = only_keys(s, p, keys, err)) || (rc = parse_name(t, i, s, err)))
			return rc;
		struct hf__saga_step *st = &t->steps[i];
		struct scope scope = {t, i, false};
		snprintf(p, sizeof(p), "steps[%zu].action", i);
		if ((rc = parse_call(json_object_get(s, "action"), p, &scope, &d->retry, d->timeout_ms,
		                     &st->action, err)))
			return rc;
		t->n_steps = i + 1; /* the step counts for the references that follow */
		json_t *barrier = json_object_get(s, "barrier");
		snprintf(p, sizeof(p), "steps[%zu].barrier", i);
		if (barrier && !json_is_boolean(barrier))
			return bad(err, p, "must be true or false%s", "");
		st->barrier = json_is_true(barrier);
		json_t *comp = json_object_get(s, "compensation");
		if (!comp)
			continue;
		scope.compensation = true;
		snprintf(p, sizeof(p), "steps[%zu].compensation", i);
		if ((rc = parse_call(comp, p, &scope, &d->comp_retry, d->timeout_ms, &st->compensation,
		                     err)))
			return rc;
		st->has_compensation = true;
	}
	for (size_t i = 0; i < t->n_steps; i++)
		if (t->steps[i].barrier && !t->steps[i].has_compensation)
			return bad(err, "steps", "step \"%s\" has a barrier but no compensation", t->steps[i].name);
	return HF_OK;
}

int hf__saga_type_parse(json_t *json, struct hf__saga_type **out, hf_error *err)
{
	static const char *const keys[] = {"description", "defaults", "steps", NULL};
	*out = NULL;
	if (!json_is_object(json))
		return hf__err(err, HF_EINVAL, "a saga type must be a JSON object");
	int rc = only_keys(json, "type", keys, err);
	json_t *desc = json_object_get(json, "description");
	if (rc == HF_OK && desc && !json_is_string(desc))
		rc = bad(err, "description", "must be a string%s", "");
	struct defaults d;
	if (rc == HF_OK)
		rc = parse_defaults(json_object_get(json, "defaults"), &d, err);
	if (rc != HF_OK)
		return rc;
	struct hf__saga_type *t = calloc(1, sizeof(*t));
	if (!t)
		return hf__err_code(err, HF_ENOMEM);
	t->json = json_incref(json);
	if ((rc = parse_steps(t, json_object_get(json, "steps"), &d, err)) != HF_OK) {
		hf__saga_type_free(t);
		return rc;
	}
	*out = t;
	return HF_OK;
}

void hf__saga_type_free(struct hf__saga_type *t)
{
	if (!t)
		return;
	json_decref(t->json);
	free(t);
}

int hf__saga_step_index(const struct hf__saga_type *t, const char *name)
{
	for (size_t i = 0; i < t->n_steps; i++)
		if (t->steps[i].name && strcmp(t->steps[i].name, name) == 0)
			return (int)i;
	return -1;
}
