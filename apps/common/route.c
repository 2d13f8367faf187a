/*
 * route.c — the apps' request handling: the JSON error shape {"error":{"code","message"}}
 * every failure answers with, the matching of a request against a route table, and the
 * reading of request body fields.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app.h"

bool app_error(struct app_reply *r, int status, const char *code, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	json_decref(r->body);
	r->status = status;
	r->etag[0] = '\0';
	r->body = json_pack("{s:{s:s,s:s}}", "error", "code", code, "message", msg);
	return false;
}

void app_ok(struct app_reply *r, int status, json_t *body)
{
	json_decref(r->body);
	r->status = status;
	r->body = body;
}

/* Matches path against pattern; on a match *id_seg points into path at the :id segment. */
static bool match(const char *pattern, const char *path, const char **id_seg, size_t *id_len)
{
	*id_seg = NULL;
	while (*pattern && *path) {
		if (pattern[0] == ':') {
			const char *end = strchr(path, '/');
			size_t n = end ? (size_t)(end - path) : strlen(path);
			if (n == 0)
				return false;
			*id_seg = path;
			*id_len = n;
			path += n;
			pattern += strcspn(pattern, "/");
			continue;
		}
		if (*pattern != *path)
			return false;
		pattern++;
		path++;
	}
	return *pattern == '\0' && *path == '\0';
}

/* A path segment as a positive id. */
static bool parse_id(const char *s, size_t n, int64_t *out)
{
	if (n == 0 || n > 18)
		return false;
	int64_t v = 0;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (s[i] - '0');
	}
	*out = v;
	return v > 0;
}

void app_route(const struct app_route *routes, size_t n, void *ctx, const struct app_request *req,
               struct app_reply *r)
{
	char trimmed[512];
	size_t plen = strlen(req->path);
	if (plen >= sizeof(trimmed)) {
		app_error(r, 404, "route_not_found", "no route for this path");
		return;
	}
	memcpy(trimmed, req->path, plen + 1);
	if (plen > 1 && trimmed[plen - 1] == '/')
		trimmed[plen - 1] = '\0';
	const struct app_route *hit = NULL;
	bool path_known = false;
	const char *seg = NULL;
	size_t seg_len = 0;
	for (size_t i = 0; i < n; i++) {
		const char *s;
		size_t len;
		if (!match(routes[i].pattern, trimmed, &s, &len))
			continue;
		path_known = true;
		if (strcmp(routes[i].method, req->method) == 0) {
			hit = &routes[i];
			seg = s;
			seg_len = len;
			break;
		}
	}
	if (!hit) {
		if (path_known)
			app_error(r, 405, "method_not_allowed", "%s is not allowed on %s",
			          req->method, trimmed);
		else
			app_error(r, 404, "route_not_found", "no route %s %s", req->method,
			          trimmed);
		return;
	}
	struct app_call k = {.ctx = ctx, .req = req, .r = r};
	if (seg && !parse_id(seg, seg_len, &k.id)) {
		app_error(r, 400, "invalid_id", "'%.*s' is not an id (a positive integer)",
		          (int)(seg_len > 40 ? 40 : seg_len), seg);
		return;
	}
	if (req->body_len > 0) {
		json_error_t je;
		k.in = json_loadb(req->body, req->body_len, JSON_REJECT_DUPLICATES, &je);
		if (!k.in) {
			app_error(r, 400, "invalid_json", "request body is not valid JSON: %s",
			          je.text);
			return;
		}
		if (!json_is_object(k.in)) {
			json_decref(k.in);
			app_error(r, 400, "invalid_json", "request body must be a JSON object");
			return;
		}
	}
	hit->fn(&k);
	json_decref(k.in);
	if (!r->body)
		app_error(r, 500, "internal_error", "no answer was produced");
}

/* ---- Request body fields. ---------------------------------------------------------------- */

bool app_need_body(json_t *in, struct app_reply *r)
{
	if (!in)
		return app_error(r, 400, "invalid_json", "this request needs a JSON object body");
	return true;
}

/* An integer field (a JSON integer, or a whole number written as a real) within [lo, hi]. */
static bool field_whole(json_t *in, const char *key, int64_t lo, int64_t hi, const char *what,
                        int64_t *out, struct app_reply *r)
{
	json_t *v = json_object_get(in, key);
	if (!v)
		return app_error(r, 422, "missing_field", "'%s' is required", key);
	if (json_is_integer(v)) {
		*out = json_integer_value(v);
	} else if (json_is_real(v) && json_real_value(v) == floor(json_real_value(v)) &&
	           fabs(json_real_value(v)) < 9e15) {
		*out = (int64_t)json_real_value(v);
	} else {
		return app_error(r, 422, "invalid_field", "'%s' must be %s", key, what);
	}
	if (*out < lo || *out > hi)
		return app_error(r, 422, "invalid_field", "'%s' must be %s", key, what);
	return true;
}

bool app_field_id(json_t *in, const char *key, int64_t *out, struct app_reply *r)
{
	return field_whole(in, key, 1, INT64_MAX, "a positive integer", out, r);
}

bool app_field_int(json_t *in, const char *key, int64_t lo, int64_t hi, int64_t *out,
                   struct app_reply *r)
{
	char what[80];
	snprintf(what, sizeof(what), "an integer from %lld to %lld", (long long)lo, (long long)hi);
	return field_whole(in, key, lo, hi, what, out, r);
}

bool app_field_num(json_t *in, const char *key, double lo, double hi, bool required, double *out,
                   bool *present, struct app_reply *r)
{
	json_t *v = json_object_get(in, key);
	if (present)
		*present = false;
	if (!v || json_is_null(v)) {
		if (required)
			return app_error(r, 422, "missing_field", "'%s' is required", key);
		return true;
	}
	if (!json_is_number(v))
		return app_error(r, 422, "invalid_field", "'%s' must be a number", key);
	double d = json_number_value(v);
	if (!isfinite(d) || d < lo || d > hi)
		return app_error(r, 422, "invalid_field", "'%s' must be between %g and %g", key, lo,
		                 hi);
	*out = d;
	if (present)
		*present = true;
	return true;
}

bool app_field_str(json_t *in, const char *key, size_t max, bool required, const char **out,
                   struct app_reply *r)
{
	json_t *v = json_object_get(in, key);
	*out = NULL;
	if (!v || json_is_null(v)) {
		if (required)
			return app_error(r, 422, "missing_field", "'%s' is required", key);
		return true;
	}
	if (!json_is_string(v) || json_string_length(v) == 0 || json_string_length(v) > max ||
	    strlen(json_string_value(v)) != json_string_length(v))
		return app_error(r, 422, "invalid_field", "'%s' must be a string of 1 to %zu bytes",
		                 key, max);
	*out = json_string_value(v);
	return true;
}
