/*
 * codec.c — the JSON wire form of resources, holds, events, errors and acquire requests,
 * shared by holdfastd (replies out, requests in) and the http:// engine (the reverse).
 * Readers are strict: a wrong type or an out-of-range number is an error naming the field.
 */
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/codec.h"
#include "core/core.h"

/* Defaults of the acquire body, documented in docs/api.md. */
#define ACQ_DEFAULT_TTL_MS 30000
#define ACQ_DEFAULT_WAIT_MS 0
#define ACQ_DEFAULT_UNITS 1

/* ---- Writing. ------------------------------------------------------------------- */

/* Adds key = value to obj, taking the reference of value; false if value was NULL or the
 * set failed (allocation), so callers can chain with && and fail once. */
static bool put(json_t *obj, const char *key, json_t *value)
{
	return value && json_object_set_new(obj, key, value) == 0;
}

/* A string or JSON null for a NULL pointer. */
static json_t *str_or_null(const char *s)
{
	return s ? json_string(s) : json_null();
}

/* A millisecond time, or null for 0 ("not set"). */
static json_t *ms_or_null(int64_t ms)
{
	return ms ? json_integer(ms) : json_null();
}

/* Parses JSON object text kept by the library (meta, event data); null when absent.
 * Text that is not an object (it never should be) is passed on as a string rather than
 * dropped, so nothing is silently lost. Text that does not parse at all is JSON the library
 * wrote itself whose parse ran out of memory: NULL, a failure, never the text as a string. */
static json_t *object_text(const char *text)
{
	if (!text)
		return json_null();
	json_t *j = json_loads(text, JSON_DECODE_ANY, NULL);
	if (!j)
		return NULL;
	if (json_is_object(j))
		return j;
	json_decref(j);
	return json_string(text);
}

json_t *hf__resource_to_json(const hf_resource *res)
{
	json_t *j = json_object();
	if (!j)
		return NULL;
	if (!put(j, "name", json_string(res->name ? res->name : "")) ||
	    !put(j, "capacity", json_integer(res->capacity)) ||
	    !put(j, "meta", object_text(res->meta)) ||
	    !put(j, "version", json_integer(res->version)) ||
	    !put(j, "declared", json_boolean(res->declared)) ||
	    !put(j, "held", json_integer(res->held)) ||
	    !put(j, "holds", json_integer(res->holds)) ||
	    !put(j, "waiters", json_integer(res->waiters)))
		goto out_free;
	return j;
out_free:
	json_decref(j);
	return NULL;
}

json_t *hf__hold_to_json(const hf_hold *hold)
{
	json_t *j = json_object();
	json_t *parts = json_array();
	json_t *fences = json_object();
	if (!j || !parts || !fences)
		goto out_free;
	for (size_t i = 0; i < hold->n_parts; i++) {
		const hf_hold_part *p = &hold->parts[i];
		json_t *pj = json_object();
		if (!pj)
			goto out_free;
		if (json_array_append_new(parts, pj) != 0 ||
		    !put(pj, "name", json_string(p->resource ? p->resource : "")) ||
		    !put(pj, "units", json_integer(p->units)) ||
		    !put(pj, "fence", json_integer(p->fence)) ||
		    !put(fences, p->resource ? p->resource : "", json_integer(p->fence)))
			goto out_free;
	}
	if (!put(j, "id", json_string(hold->id)) ||
	    !put(j, "owner", json_string(hold->owner ? hold->owner : "")) ||
	    !put(j, "state", json_string(hf_hold_state_name(hold->state))) ||
	    !put(j, "mode", json_string(hf_mode_name(hold->mode))) ||
	    !put(j, "created_at_ms", json_integer(hold->created_at_ms)) ||
	    !put(j, "expires_at_ms", ms_or_null(hold->expires_at_ms)) ||
	    !put(j, "ended_at_ms", ms_or_null(hold->ended_at_ms)))
		goto out_free;
	if (hold->replayed && !put(j, "replayed", json_true()))
		goto out_free;
	/* put() takes the references even on success paths below, so clear the locals. */
	json_t *p = parts, *f = fences;
	parts = fences = NULL;
	if (!put(j, "resources", p)) {
		json_decref(f);
		goto out_free;
	}
	if (!put(j, "fence", f))
		goto out_free;
	if (hold->token[0] && !put(j, "token", json_string(hold->token)))
		goto out_free;
	return j;
out_free:
	json_decref(parts);
	json_decref(fences);
	json_decref(j);
	return NULL;
}

/* An event's revisions as {"name": revision, ...}, in the event's order. */
static json_t *revisions_to_json(const hf_event *ev)
{
	json_t *j = json_object();
	for (size_t i = 0; j && i < ev->n_revisions; i++)
		if (!put(j, ev->revisions[i].resource, json_integer(ev->revisions[i].revision))) {
			json_decref(j);
			return NULL;
		}
	return j;
}

json_t *hf__waiter_to_json(const hf_waiter *w)
{
	json_t *claims = json_array();
	for (size_t i = 0; claims && i < w->n_claims; i++)
		if (json_array_append_new(claims, json_pack("{s:s, s:I}", "name", w->claims[i].resource,
		                                            "units", (json_int_t)w->claims[i].units))) {
			json_decref(claims);
			return NULL;
		}
	if (!claims)
		return NULL;
	return json_pack("{s:I, s:s, s:s, s:b, s:I, s:I, s:I, s:o}", "position",
	                 (json_int_t)w->position, "owner", w->owner ? w->owner : "", "mode",
	                 hf_mode_name(w->mode), "any", (int)w->any, "units", (json_int_t)w->units,
	                 "waiting_since_ms", (json_int_t)w->waiting_since_ms, "wait_deadline_ms",
	                 (json_int_t)w->wait_deadline_ms, "claims", claims);
}

json_t *hf__event_to_json(const hf_event *ev)
{
	json_t *j = json_object();
	if (!j)
		return NULL;
	if (!put(j, "seq", json_integer((json_int_t)ev->seq)) ||
	    !put(j, "at_ms", json_integer(ev->at_ms)) ||
	    !put(j, "type", json_string(ev->type ? ev->type : "")) ||
	    !put(j, "resource", str_or_null(ev->resource)) ||
	    (ev->resource && ev->revision > 0 && !put(j, "revision", json_integer(ev->revision))) ||
	    (ev->n_revisions > 1 && !put(j, "revisions", revisions_to_json(ev))) ||
	    !put(j, "hold_id", str_or_null(ev->hold_id)) ||
	    !put(j, "data", ev->data ? object_text(ev->data) : json_object()))
		goto out_free;
	return j;
out_free:
	json_decref(j);
	return NULL;
}

json_t *hf__error_to_json(const hf_error *err)
{
	const char *msg = err->message[0] ? err->message : hf_strerror(err->code);
	return json_pack("{s:{s:s,s:s}}", "error", "code", hf_err_name(err->code), "message", msg);
}

json_t *hf__acquire_to_json(const hf_acquire_req *req)
{
	json_t *claims = json_array();
	if (!claims)
		return NULL;
	for (size_t i = 0; i < req->n_claims; i++) {
		const hf_claim *c = &req->claims[i];
		json_t *cj = json_pack("{s:s}", "name", c->name ? c->name : "");
		if (!cj || json_array_append_new(claims, cj) != 0)
			goto out_free;
		/* Shared and exclusive holds take units the engine decides from the capacity. */
		if (req->mode == HF_MODE_UNITS && !put(cj, "units", json_integer(c->units)))
			goto out_free;
		if (c->capacity > 0 && !put(cj, "capacity", json_integer(c->capacity)))
			goto out_free;
	}
	/* "o" steals the claims reference, also when json_pack fails. */
	return json_pack("{s:s,s:o,s:I,s:I,s:s,s:b}", "owner", req->owner ? req->owner : "",
	                 "resources", claims, "ttl_ms", (json_int_t)req->ttl_ms, "wait_ms",
	                 (json_int_t)req->wait_ms, "mode", hf_mode_name(req->mode), "any",
	                 (int)req->any);
out_free:
	json_decref(claims);
	return NULL;
}

/* ---- Reading. ------------------------------------------------------------------- */

/* Reads obj[key] as an integer in [lo, hi]. Absent (or null when null_ok) leaves *out at
 * `dflt` unless required. `code` is the error code for a violation (HF_EINVAL for user
 * input, HF_EPROTO for a server's reply). */
static int get_int(const json_t *obj, const char *key, bool required, int64_t dflt, int64_t lo,
                   int64_t hi, int64_t *out, int code, hf_error *err)
{
	json_t *v = json_object_get(obj, key);
	*out = dflt;
	if (!v || json_is_null(v)) {
		if (required)
			return hf__err(err, code, "%s is missing", key);
		return HF_OK;
	}
	if (!json_is_integer(v))
		return hf__err(err, code, "%s must be an integer", key);
	json_int_t n = json_integer_value(v);
	if (n < lo || n > hi)
		return hf__err(err, code, "%s is %lld, it must be between %lld and %lld", key,
		               (long long)n, (long long)lo, (long long)hi);
	*out = n;
	return HF_OK;
}

/* Reads obj[key] as a string; NULL when absent or null and not required. The pointer is
 * into obj: it lives as long as obj. */
static int get_str(const json_t *obj, const char *key, bool required, const char **out,
                   int code, hf_error *err)
{
	json_t *v = json_object_get(obj, key);
	*out = NULL;
	if (!v || json_is_null(v)) {
		if (required)
			return hf__err(err, code, "%s is missing", key);
		return HF_OK;
	}
	if (!json_is_string(v))
		return hf__err(err, code, "%s must be a string", key);
	*out = json_string_value(v);
	return HF_OK;
}

static int get_bool(const json_t *obj, const char *key, bool dflt, bool *out, int code,
                    hf_error *err)
{
	json_t *v = json_object_get(obj, key);
	*out = dflt;
	if (!v || json_is_null(v))
		return HF_OK;
	if (!json_is_boolean(v))
		return hf__err(err, code, "%s must be true or false", key);
	*out = json_is_true(v);
	return HF_OK;
}

/* Copies a string field into *dst (freshly allocated); NULL stays NULL. */
static int dup_str(const json_t *obj, const char *key, bool required, char **dst, hf_error *err)
{
	const char *s;
	int rc = get_str(obj, key, required, &s, HF_EPROTO, err);
	if (rc)
		return rc;
	*dst = hf__strdup(s);
	if (s && !*dst)
		return hf__err_code(err, HF_ENOMEM);
	return HF_OK;
}

/* The text as it is dumped; `failed` sticks, because jansson ignores the outcome of writing
 * an object key (jansson 2.14, dump.c): without it a key lost to a failed allocation would
 * leave a text like {"a":1,:true} that is then journaled. */
struct dumpbuf {
	char *s;
	size_t len, cap;
	bool failed;
};

static int dump_append(const char *buf, size_t n, void *arg)
{
	struct dumpbuf *d = arg;
	if (d->failed)
		return -1;
	if (d->len + n + 1 > d->cap) {
		size_t cap = d->cap ? d->cap : 256;
		while (cap < d->len + n + 1)
			cap *= 2;
		char *s = realloc(d->s, cap);
		if (!s) {
			d->failed = true;
			return -1;
		}
		d->s = s;
		d->cap = cap;
	}
	memcpy(d->s + d->len, buf, n);
	d->len += n;
	d->s[d->len] = '\0';
	return 0;
}

char *hf__json_dumps(const json_t *j, size_t flags)
{
	struct dumpbuf d = {0};
	if (!j || json_dump_callback(j, dump_append, &d, flags) != 0 || d.failed || !d.s) {
		free(d.s);
		return NULL;
	}
	return d.s;
}

/* ---- Reading request bodies: a fast path in front of jansson's parser. ------------ */

/*
 * jansson reads a body byte by byte through its stream functions, saving every token byte
 * into a growing buffer: some 7,000 instructions for a 50-byte lock request, more than the
 * rest of the request's reading. What requests send is mostly a small object of plain
 * strings and integers: this scanner reads that subset and builds the same tree with
 * jansson's own constructors; whatever it does not take (escapes, bytes outside printable
 * ASCII in strings, reals, integers of 19 digits, nesting deeper than SCAN_DEPTH, duplicate
 * keys, anything malformed) goes to json_loadb as before, so the tree or the error is
 * jansson's in every case. fuzz_codec holds the two to the same result.
 */
#define SCAN_DEPTH 8

struct scan {
	const char *p, *end;
	int depth;
};

static json_t *scan_value(struct scan *s);

static void scan_ws(struct scan *s)
{
	while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r'))
		s->p++;
}

/* At the next byte after the whitespace: whether it is c (then consumed). */
static bool scan_byte(struct scan *s, char c)
{
	scan_ws(s);
	if (s->p < s->end && *s->p == c) {
		s->p++;
		return true;
	}
	return false;
}

/* A string of printable ASCII without escapes, s->p at its opening quote. */
static bool scan_string(struct scan *s, const char **str, size_t *len)
{
	const char *q = s->p + 1;
	for (; q < s->end && *q != '"'; q++)
		if ((unsigned char)*q < 0x20 || (unsigned char)*q >= 0x7f || *q == '\\')
			return false;
	if (q == s->end)
		return false;
	*str = s->p + 1;
	*len = (size_t)(q - *str);
	s->p = q + 1;
	return true;
}

/* An integer of at most 18 digits (no overflow), without a leading zero. */
static json_t *scan_integer(struct scan *s)
{
	const char *q = s->p;
	bool neg = q < s->end && *q == '-';
	q += neg;
	const char *digits = q;
	json_int_t v = 0;
	while (q < s->end && *q >= '0' && *q <= '9' && q - digits < 18)
		v = v * 10 + (*q++ - '0');
	if (q == digits || (*digits == '0' && q - digits > 1) ||
	    (q < s->end && ((*q >= '0' && *q <= '9') || *q == '.' || *q == 'e' || *q == 'E')))
		return NULL;
	s->p = q;
	return json_integer(neg ? -v : v);
}

static json_t *scan_literal(struct scan *s, const char *lit, size_t n, json_t *value)
{
	if ((size_t)(s->end - s->p) < n || memcmp(s->p, lit, n) != 0)
		return NULL;
	s->p += n;
	return value;
}

static json_t *scan_object(struct scan *s)
{
	json_t *obj = json_object();
	s->p++; /* '{' */
	if (!obj || scan_byte(s, '}'))
		return obj;
	do {
		const char *key;
		size_t klen;
		scan_ws(s);
		if (s->p == s->end || *s->p != '"' || !scan_string(s, &key, &klen) ||
		    !scan_byte(s, ':') || json_object_getn(obj, key, klen))
			goto fail;
		scan_ws(s);
		json_t *v = scan_value(s);
		if (!v || json_object_setn_new_nocheck(obj, key, klen, v) != 0)
			goto fail;
	} while (scan_byte(s, ','));
	if (scan_byte(s, '}'))
		return obj;
fail:
	json_decref(obj);
	return NULL;
}

static json_t *scan_array(struct scan *s)
{
	json_t *arr = json_array();
	s->p++; /* '[' */
	if (!arr || scan_byte(s, ']'))
		return arr;
	do {
		scan_ws(s);
		json_t *v = scan_value(s);
		if (!v || json_array_append_new(arr, v) != 0)
			goto fail;
	} while (scan_byte(s, ','));
	if (scan_byte(s, ']'))
		return arr;
fail:
	json_decref(arr);
	return NULL;
}

/* A value at s->p (no whitespace before it); NULL: not one the scanner takes. */
static json_t *scan_value(struct scan *s)
{
	const char *str;
	size_t len;
	json_t *v = NULL;
	if (s->p == s->end)
		return NULL;
	switch (*s->p) {
	case '{':
	case '[':
		if (s->depth == SCAN_DEPTH)
			return NULL;
		s->depth++;
		v = *s->p == '{' ? scan_object(s) : scan_array(s);
		s->depth--;
		return v;
	case '"': return scan_string(s, &str, &len) ? json_stringn_nocheck(str, len) : NULL;
	case 't': return scan_literal(s, "true", 4, json_true());
	case 'f': return scan_literal(s, "false", 5, json_false());
	case 'n': return scan_literal(s, "null", 4, json_null());
	default: return scan_integer(s);
	}
}

json_t *hf__json_loadb(const char *buf, size_t len, json_error_t *err)
{
	struct scan s = {buf, buf + len, 0};
	scan_ws(&s);
	if (s.p < s.end && *s.p == '{') {
		json_t *j = scan_value(&s);
		scan_ws(&s);
		if (j && s.p == s.end)
			return j;
		json_decref(j);
	}
	return json_loadb(buf, len, JSON_REJECT_DUPLICATES, err);
}

/* An object field (meta, data) back to compact text; NULL for absent/null. */
static int dup_object_text(const json_t *obj, const char *key, char **dst, hf_error *err)
{
	json_t *v = json_object_get(obj, key);
	*dst = NULL;
	if (!v || json_is_null(v))
		return HF_OK;
	if (!json_is_object(v))
		return hf__err(err, HF_EPROTO, "%s must be an object", key);
	*dst = hf__json_dumps(v, JSON_COMPACT | JSON_PRESERVE_ORDER);
	return *dst ? HF_OK : hf__err_code(err, HF_ENOMEM);
}

int hf__resource_from_json(const json_t *j, hf_resource *out, hf_error *err)
{
	memset(out, 0, sizeof(*out));
	if (!json_is_object(j))
		return hf__err(err, HF_EPROTO, "resource must be a JSON object");
	int rc;
	if ((rc = dup_str(j, "name", true, &out->name, err)) ||
	    (rc = get_int(j, "capacity", true, 0, 0, HF_CAPACITY_MAX, &out->capacity, HF_EPROTO, err)) ||
	    (rc = dup_object_text(j, "meta", &out->meta, err)) ||
	    (rc = get_int(j, "version", false, 0, 0, INT64_MAX, &out->version, HF_EPROTO, err)) ||
	    (rc = get_bool(j, "declared", false, &out->declared, HF_EPROTO, err)) ||
	    (rc = get_int(j, "held", false, 0, 0, INT64_MAX, &out->held, HF_EPROTO, err)) ||
	    (rc = get_int(j, "holds", false, 0, 0, INT64_MAX, &out->holds, HF_EPROTO, err)) ||
	    (rc = get_int(j, "waiters", false, 0, 0, INT64_MAX, &out->waiters, HF_EPROTO, err)))
		goto out_clear;
	return HF_OK;
out_clear:
	hf__resource_clear(out);
	return rc;
}

/* Copies a fixed-length hex id field into buf (len + 1 bytes); empty when absent and
 * optional. */
static int get_hex(const json_t *obj, const char *key, bool required, char *buf, size_t len,
                   hf_error *err)
{
	const char *s;
	int rc = get_str(obj, key, required, &s, HF_EPROTO, err);
	buf[0] = '\0';
	if (rc || !s)
		return rc;
	if (strlen(s) != len)
		return hf__err(err, HF_EPROTO, "%s must be %zu characters long", key, len);
	memcpy(buf, s, len + 1);
	return HF_OK;
}

int hf__hold_from_json(const json_t *j, hf_hold *out, hf_error *err)
{
	memset(out, 0, sizeof(*out));
	if (!json_is_object(j))
		return hf__err(err, HF_EPROTO, "hold must be a JSON object");
	int rc;
	const char *state, *mode;
	if ((rc = get_hex(j, "id", true, out->id, HF_ID_LEN, err)) ||
	    (rc = get_hex(j, "token", false, out->token, HF_TOKEN_LEN, err)) ||
	    (rc = dup_str(j, "owner", true, &out->owner, err)) ||
	    (rc = get_str(j, "state", true, &state, HF_EPROTO, err)) ||
	    (rc = get_str(j, "mode", true, &mode, HF_EPROTO, err)) ||
	    (rc = get_int(j, "created_at_ms", true, 0, 0, INT64_MAX, &out->created_at_ms, HF_EPROTO, err)) ||
	    (rc = get_int(j, "expires_at_ms", false, 0, 0, INT64_MAX, &out->expires_at_ms, HF_EPROTO, err)) ||
	    (rc = get_int(j, "ended_at_ms", false, 0, 0, INT64_MAX, &out->ended_at_ms, HF_EPROTO, err)) ||
	    (rc = get_bool(j, "replayed", false, &out->replayed, HF_EPROTO, err)))
		goto out_clear;
	if (hf_hold_state_parse(state, &out->state) != HF_OK) {
		rc = hf__err(err, HF_EPROTO, "state '%s' is not a hold state", state);
		goto out_clear;
	}
	if (hf_mode_parse(mode, &out->mode) != HF_OK) {
		rc = hf__err(err, HF_EPROTO, "mode '%s' is not a mode", mode);
		goto out_clear;
	}
	json_t *parts = json_object_get(j, "resources");
	if (!json_is_array(parts)) {
		rc = hf__err(err, HF_EPROTO, "resources must be an array");
		goto out_clear;
	}
	size_t n = json_array_size(parts);
	if (n) {
		out->parts = calloc(n, sizeof(*out->parts));
		if (!out->parts) {
			rc = hf__err_code(err, HF_ENOMEM);
			goto out_clear;
		}
		out->n_parts = n; /* zeroed parts: hf__hold_clear frees what is filled */
	}
	for (size_t i = 0; i < n; i++) {
		json_t *pj = json_array_get(parts, i);
		hf_hold_part *p = &out->parts[i];
		if (!json_is_object(pj)) {
			rc = hf__err(err, HF_EPROTO, "resources[%zu] must be an object", i);
			goto out_clear;
		}
		if ((rc = dup_str(pj, "name", true, &p->resource, err)) ||
		    (rc = get_int(pj, "units", true, 0, 0, HF_CAPACITY_MAX, &p->units, HF_EPROTO, err)) ||
		    (rc = get_int(pj, "fence", true, 0, 0, INT64_MAX, &p->fence, HF_EPROTO, err)))
			goto out_clear;
	}
	return HF_OK;
out_clear:
	hf__hold_clear(out);
	return rc;
}

int hf__event_revisions_from_json(json_t *list, hf_event *out, hf_error *err)
{
	assert(out->resource && out->revision > 0 && !out->revisions);
	size_t n = list ? json_object_size(list) : 1;
	if (list && (!json_is_object(list) || n < 2 || n > HF_CLAIMS_MAX))
		return hf__err(err, HF_EPROTO, "event \"revisions\" must be an object of 2 to %d "
		               "resources", HF_CLAIMS_MAX);
	if (!(out->revisions = calloc(n, sizeof(*out->revisions))))
		return hf__err(err, HF_ENOMEM, "out of memory");
	out->n_revisions = 1;
	out->revisions[0].revision = out->revision;
	if (!(out->revisions[0].resource = hf__strdup(out->resource)))
		return hf__err(err, HF_ENOMEM, "out of memory");
	if (list && !json_object_get(list, out->resource))
		return hf__err(err, HF_EPROTO, "event \"revisions\" does not list its resource");
	const char *name;
	json_t *v;
	json_object_foreach(list, name, v) {
		bool own = strcmp(name, out->resource) == 0;
		if (!json_is_integer(v) || json_integer_value(v) < 1 ||
		    (own && json_integer_value(v) != out->revision))
			return hf__err(err, HF_EPROTO, "event \"revisions\": bad revision of '%.60s'",
			               name);
		if (own)
			continue;
		hf_event_revision *r = &out->revisions[out->n_revisions++];
		r->revision = json_integer_value(v);
		if (!(r->resource = hf__strdup(name)))
			return hf__err(err, HF_ENOMEM, "out of memory");
	}
	return HF_OK;
}

int hf__event_revisions_from_text(hf_event *ev, int64_t revision, const char *list, hf_error *err)
{
	if (!ev->resource)
		return HF_OK;
	json_t *j = list ? json_loads(list, 0, NULL) : NULL;
	int rc;
	if ((ev->revision = revision) < 1 || (list && !j))
		rc = hf__err(err, HF_EPROTO, "event %llu has revision %lld and revisions '%.60s'",
		             (unsigned long long)ev->seq, (long long)revision, list ? list : "(none)");
	else
		rc = hf__event_revisions_from_json(j, ev, err);
	json_decref(j);
	return rc;
}

/* The event's "revision" and "revisions" (present when it touches more than one resource).
 * Without "revision" (an event a redis:// store kept from before revisions) it has none. */
static int revisions_from_json(const json_t *j, hf_event *out, hf_error *err)
{
	int rc = get_int(j, "revision", false, 0, 1, INT64_MAX, &out->revision, HF_EPROTO, err);
	json_t *list = json_object_get(j, "revisions");
	if (rc == HF_OK && !out->resource && (out->revision || list))
		return hf__err(err, HF_EPROTO, "event %llu has revisions but no resource",
		               (unsigned long long)out->seq);
	if (rc != HF_OK || !out->resource || (out->revision == 0 && !list))
		return rc;
	if (out->revision == 0)
		return hf__err(err, HF_EPROTO, "event %llu has \"revisions\" but no \"revision\"",
		               (unsigned long long)out->seq);
	return hf__event_revisions_from_json(list, out, err);
}

int hf__waiter_from_json(const json_t *j, hf_waiter *out, hf_error *err)
{
	memset(out, 0, sizeof(*out));
	if (!json_is_object(j))
		return hf__err(err, HF_EPROTO, "waiter must be a JSON object");
	const char *mode;
	const json_t *claims = json_object_get(j, "claims");
	int rc;
	if ((rc = get_int(j, "position", true, 0, 1, INT64_MAX, &out->position, HF_EPROTO, err)) ||
	    (rc = dup_str(j, "owner", true, &out->owner, err)) ||
	    (rc = get_str(j, "mode", true, &mode, HF_EPROTO, err)) ||
	    (rc = get_bool(j, "any", false, &out->any, HF_EPROTO, err)) ||
	    (rc = get_int(j, "units", true, 0, 0, HF_CAPACITY_MAX, &out->units, HF_EPROTO, err)) ||
	    (rc = get_int(j, "waiting_since_ms", true, 0, 0, INT64_MAX, &out->waiting_since_ms,
	                  HF_EPROTO, err)) ||
	    (rc = get_int(j, "wait_deadline_ms", true, 0, 0, INT64_MAX, &out->wait_deadline_ms,
	                  HF_EPROTO, err)))
		goto out_clear;
	if (hf_mode_parse(mode, &out->mode) != HF_OK || !json_is_array(claims) ||
	    json_array_size(claims) > HF_CLAIMS_MAX) {
		rc = hf__err(err, HF_EPROTO, "waiter has a bad mode or claims");
		goto out_clear;
	}
	if (json_array_size(claims) &&
	    !(out->claims = calloc(json_array_size(claims), sizeof(*out->claims)))) {
		rc = hf__err_code(err, HF_ENOMEM);
		goto out_clear;
	}
	for (size_t i = 0; i < json_array_size(claims); i++) {
		const json_t *cj = json_array_get(claims, i);
		hf_waiter_claim *c = &out->claims[out->n_claims++];
		if ((rc = dup_str(cj, "name", true, &c->resource, err)) ||
		    (rc = get_int(cj, "units", true, 0, 0, HF_CAPACITY_MAX, &c->units, HF_EPROTO, err)))
			goto out_clear;
	}
	return HF_OK;
out_clear:
	hf__waiter_clear(out);
	return rc;
}

int hf__event_from_json(const json_t *j, hf_event *out, hf_error *err)
{
	memset(out, 0, sizeof(*out));
	if (!json_is_object(j))
		return hf__err(err, HF_EPROTO, "event must be a JSON object");
	int rc;
	int64_t seq;
	if ((rc = get_int(j, "seq", true, 0, 1, INT64_MAX, &seq, HF_EPROTO, err)) ||
	    (rc = get_int(j, "at_ms", true, 0, 0, INT64_MAX, &out->at_ms, HF_EPROTO, err)) ||
	    (rc = dup_str(j, "type", true, &out->type, err)) ||
	    (rc = dup_str(j, "resource", false, &out->resource, err)) ||
	    (rc = dup_str(j, "hold_id", false, &out->hold_id, err)) ||
	    (rc = dup_object_text(j, "data", &out->data, err)))
		goto out_clear;
	out->seq = (uint64_t)seq;
	if ((rc = revisions_from_json(j, out, err)) != HF_OK)
		goto out_clear;
	return HF_OK;
out_clear:
	hf__event_clear(out);
	return rc;
}

int hf__error_from_json(const json_t *j, hf_error *out)
{
	memset(out, 0, sizeof(*out));
	json_t *e = json_object_get(j, "error");
	json_t *code = json_object_get(e, "code");
	json_t *msg = json_object_get(e, "message");
	if (!json_is_object(e) || !json_is_string(code)) {
		out->code = HF_EPROTO;
		snprintf(out->message, sizeof(out->message), "reply is not a holdfast error");
		return HF_EPROTO;
	}
	out->code = hf_err_from_name(json_string_value(code));
	snprintf(out->message, sizeof(out->message), "%s",
	         json_is_string(msg) ? json_string_value(msg) : hf_strerror(out->code));
	return HF_OK;
}

/* Fails on any key of obj not in the NULL-terminated list `known`: a misspelt field
 * ("ttl" for "ttl_ms") would otherwise be silently ignored and take its default. */
static int check_keys(const json_t *obj, const char *where, const char *const *known,
                      hf_error *err)
{
	const char *key;
	json_t *v;
	json_object_foreach ((json_t *)obj, key, v) {
		(void)v;
		bool ok = false;
		for (size_t i = 0; known[i] && !ok; i++)
			ok = strcmp(known[i], key) == 0;
		if (!ok)
			return hf__err(err, HF_EINVAL, "unknown field '%.64s'%s%s", key,
			               where ? " in " : "", where ? where : "");
	}
	return HF_OK;
}

/* One entry of "resources": an object {"name","units","capacity"} or a bare name. */
static int claim_from_json(const json_t *cj, size_t i, hf_claim *c, hf_error *err)
{
	static const char *const known[] = {"name", "units", "capacity", NULL};
	char where[32];
	int rc;
	snprintf(where, sizeof(where), "resources[%zu]", i);
	memset(c, 0, sizeof(*c));
	c->units = ACQ_DEFAULT_UNITS;
	if (json_is_string(cj)) {
		c->name = json_string_value(cj);
		return hf__check_name(where, c->name, HF_NAME_MAX, err);
	}
	if (!json_is_object(cj))
		return hf__err(err, HF_EINVAL, "%s must be an object or a resource name", where);
	if ((rc = check_keys(cj, where, known, err)))
		return rc;
	/* get_int names the bare key; re-word its message so the entry is named too. */
	if ((rc = get_str(cj, "name", true, &c->name, HF_EINVAL, err)) ||
	    (rc = get_int(cj, "units", false, ACQ_DEFAULT_UNITS, 1, HF_CAPACITY_MAX, &c->units,
	                  HF_EINVAL, err)) ||
	    (rc = get_int(cj, "capacity", false, 0, 1, HF_CAPACITY_MAX, &c->capacity, HF_EINVAL,
	                  err))) {
		if (err) {
			char msg[HF_MESSAGE_MAX];
			snprintf(msg, sizeof(msg), "%s", err->message);
			hf__err(err, rc, "%s.%s", where, msg);
		}
		return rc;
	}
	char field[48];
	snprintf(field, sizeof(field), "%s.name", where);
	return hf__check_name(field, c->name, HF_NAME_MAX, err);
}

int hf__acquire_from_json(const json_t *body, hf_acquire_req *out, hf_claim *claims,
                          hf_error *err)
{
	static const char *const known[] = {"owner", "resources", "ttl_ms", "wait_ms",
	                                    "mode",  "any",       NULL};
	int rc;
	memset(out, 0, sizeof(*out));
	if (!json_is_object(body))
		return hf__err(err, HF_EINVAL, "the body must be a JSON object");
	if ((rc = check_keys(body, NULL, known, err)))
		return rc;
	const char *mode = NULL;
	if ((rc = get_str(body, "owner", true, &out->owner, HF_EINVAL, err)) ||
	    (rc = hf__check_name("owner", out->owner, HF_OWNER_MAX, err)) ||
	    (rc = get_int(body, "ttl_ms", false, ACQ_DEFAULT_TTL_MS, 1, HF_TTL_MAX_MS, &out->ttl_ms,
	                  HF_EINVAL, err)) ||
	    (rc = get_int(body, "wait_ms", false, ACQ_DEFAULT_WAIT_MS, 0, HF_WAIT_MAX_MS,
	                  &out->wait_ms, HF_EINVAL, err)) ||
	    (rc = get_str(body, "mode", false, &mode, HF_EINVAL, err)) ||
	    (rc = get_bool(body, "any", false, &out->any, HF_EINVAL, err)))
		return rc;
	out->mode = HF_MODE_UNITS;
	if (mode && hf_mode_parse(mode, &out->mode) != HF_OK)
		return hf__err(err, HF_EINVAL, "mode '%.64s' is not units, shared or exclusive", mode);
	json_t *res = json_object_get(body, "resources");
	if (!res || json_is_null(res))
		return hf__err(err, HF_EINVAL, "resources is missing");
	if (!json_is_array(res))
		return hf__err(err, HF_EINVAL, "resources must be an array");
	size_t n = json_array_size(res);
	if (n == 0)
		return hf__err(err, HF_EINVAL, "resources is empty: a hold names at least one");
	if (n > HF_CLAIMS_MAX)
		return hf__err(err, HF_EINVAL, "resources names %zu resources, the limit is %d", n,
		               HF_CLAIMS_MAX);
	for (size_t i = 0; i < n; i++) {
		if ((rc = claim_from_json(json_array_get(res, i), i, &claims[i], err)))
			return rc;
		for (size_t k = 0; k < i; k++)
			if (strcmp(claims[k].name, claims[i].name) == 0)
				return hf__err(err, HF_EINVAL, "resources[%zu]: '%.64s' is named twice", i,
				               claims[i].name);
	}
	out->claims = claims;
	out->n_claims = n;
	return HF_OK;
}

/* ---- Event data. ----------------------------------------------------------------- */

json_t *hf__hold_parts_json(const hf_hold *h, bool fences)
{
	json_t *arr = json_array();
	for (size_t i = 0; arr && i < h->n_parts; i++) {
		json_t *p = json_pack("{s:s, s:I}", "name", h->parts[i].resource, "units",
		                      (json_int_t)h->parts[i].units);
		if (p && fences && !put(p, "fence", json_integer(h->parts[i].fence))) {
			json_decref(p);
			p = NULL;
		}
		if (json_array_append_new(arr, p) != 0) {
			json_decref(arr);
			return NULL;
		}
	}
	return arr;
}

json_t *hf__event_hold_data_by(const char *type, const hf_hold *h, const char *by)
{
	json_t *j = hf__event_hold_data(type, h);
	if (j && by && json_object_set_new(j, "by", json_string(by)) != 0) {
		json_decref(j);
		return NULL;
	}
	return j;
}

json_t *hf__event_hold_data(const char *type, const hf_hold *h)
{
	if (strcmp(type, "hold.granted") == 0)
		return json_pack("{s:s, s:s, s:s, s:I, s:o}", "id", h->id, "owner", h->owner, "mode",
		                 hf_mode_name(h->mode), "expires_at_ms", (json_int_t)h->expires_at_ms,
		                 "resources", hf__hold_parts_json(h, true));
	if (strcmp(type, "hold.extended") == 0)
		return json_pack("{s:s, s:I}", "id", h->id, "expires_at_ms",
		                 (json_int_t)h->expires_at_ms);
	if (strcmp(type, "hold.confirmed") == 0)
		return json_pack("{s:s, s:s}", "id", h->id, "owner", h->owner);
	/* hold.released and hold.expired */
	return json_pack("{s:s, s:s, s:o}", "id", h->id, "owner", h->owner, "resources",
	                 hf__hold_parts_json(h, false));
}

json_t *hf__event_resource_data(const hf_resource *r)
{
	json_t *meta = r->meta ? json_loads(r->meta, 0, NULL) : json_null();
	return json_pack("{s:s, s:I, s:I, s:o, s:b}", "name", r->name, "capacity",
	                 (json_int_t)r->capacity, "version", (json_int_t)r->version, "meta", meta,
	                 "declared", r->declared);
}

json_t *hf__event_resource_deleted_data(const char *name, int64_t version)
{
	return json_pack("{s:s, s:I}", "name", name, "version", (json_int_t)version);
}

/* ---- The public text forms (holdfast.h). ------------------------------------------ */

static char *dump_compact(json_t *j)
{
	char *text = hf__json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER);
	json_decref(j);
	return text;
}

char *hf_hold_json(const hf_hold *hold)
{
	return dump_compact(hf__hold_to_json(hold));
}

char *hf_resource_json(const hf_resource *res)
{
	return dump_compact(hf__resource_to_json(res));
}

char *hf_event_json(const hf_event *ev)
{
	return dump_compact(hf__event_to_json(ev));
}

/* ---- Direct writers (codec.h): jansson's bytes without its tree. ------------------- */

void hf__jw_init(struct hf__jw *w)
{
	w->buf = NULL;
	w->len = w->cap = 0;
	w->oom = false;
	w->borrowed = false;
}

void hf__jw_init_buf(struct hf__jw *w, char *buf, size_t cap)
{
	assert(cap > 0);
	hf__jw_init(w);
	w->buf = buf;
	w->cap = cap;
	w->borrowed = true;
	buf[0] = '\0';
}

void hf__jw_release(struct hf__jw *w)
{
	if (!w->borrowed)
		free(w->buf);
	hf__jw_init(w);
}

/* An allocation failed: the writer drops its text and writes nothing more. */
static void jw_fail(struct hf__jw *w)
{
	hf__jw_release(w);
	w->oom = true;
}

bool hf__jw_grow(struct hf__jw *w, size_t n)
{
	if (w->oom)
		return false;
	if (w->len + n + 1 <= w->cap)
		return true;
	size_t cap = w->cap ? w->cap : 256;
	while (cap < w->len + n + 1)
		cap *= 2;
	/* The caller's buffer is left as it is: its text moves to the heap. */
	char *b = w->borrowed ? malloc(cap) : realloc(w->buf, cap);
	if (!b) {
		jw_fail(w);
		return false;
	}
	if (w->borrowed && w->buf)
		memcpy(b, w->buf, w->len + 1);
	w->borrowed = false;
	w->buf = b;
	w->cap = cap;
	return true;
}

/* The bytes of s (n of them) that need no escape before the first one that does, eight at
 * a time: a byte under 0x20, '"' or '\\' anywhere in a word sends it to the byte loop. */
static size_t jw_plain_prefix(const char *s, size_t n)
{
	const uint64_t ones = 0x0101010101010101ull, high = 0x8080808080808080ull;
	size_t i = 0;
	for (; i + 8 <= n; i += 8) {
		uint64_t v;
		memcpy(&v, s + i, 8);
		uint64_t q = v ^ (ones * '"'), b = v ^ (ones * '\\');
		/* (x - ones) & ~x & high: some byte of x is 0; with 0x20 for 1: some byte < 0x20. */
		if (((v - ones * 0x20) & ~v & high) | ((q - ones) & ~q & high) |
		    ((b - ones) & ~b & high))
			break;
	}
	while (i < n && (unsigned char)s[i] >= 0x20 && s[i] != '"' && s[i] != '\\')
		i++;
	return i;
}

void hf__jw_str(struct hf__jw *w, const char *s)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t n = strlen(s);
	size_t plain = jw_plain_prefix(s, n);
	/* Worst case: every byte after the plain ones a \u00XX escape. */
	if (!hf__jw_grow(w, plain + 6 * (n - plain) + 2))
		return;
	char *o = w->buf + w->len;
	*o++ = '"';
	memcpy(o, s, plain);
	o += plain;
	for (size_t i = plain; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c >= 0x20 && c != '"' && c != '\\') {
			*o++ = (char)c;
			continue;
		}
		*o++ = '\\';
		switch (c) {
		case '"': *o++ = '"'; break;
		case '\\': *o++ = '\\'; break;
		case '\b': *o++ = 'b'; break;
		case '\f': *o++ = 'f'; break;
		case '\n': *o++ = 'n'; break;
		case '\r': *o++ = 'r'; break;
		case '\t': *o++ = 't'; break;
		default:
			*o++ = 'u';
			*o++ = '0';
			*o++ = '0';
			*o++ = hex[c >> 4];
			*o++ = hex[c & 15];
			break;
		}
	}
	*o++ = '"';
	*o = '\0';
	w->len = (size_t)(o - w->buf);
}

void hf__jw_int(struct hf__jw *w, int64_t v)
{
	static const char pairs[] = "00010203040506070809101112131415161718192021222324252627282930"
	                            "31323334353637383940414243444546474849505152535455565758596061"
	                            "62636465666768697071727374757677787980818283848586878889909192"
	                            "93949596979899";
	char tmp[24], *e = tmp + sizeof(tmp), *p = e;
	/* In unsigned arithmetic, so that INT64_MIN has a magnitude too. Two digits a division:
	 * a timestamp has thirteen. */
	uint64_t u = v < 0 ? 0 - (uint64_t)v : (uint64_t)v;
	while (u >= 100) {
		p -= 2;
		memcpy(p, pairs + 2 * (u % 100), 2);
		u /= 100;
	}
	if (u >= 10) {
		p -= 2;
		memcpy(p, pairs + 2 * u, 2);
	} else {
		*--p = (char)('0' + u);
	}
	if (v < 0)
		*--p = '-';
	hf__jw_raw(w, p, (size_t)(e - p));
}

char *hf__jw_finish(struct hf__jw *w, size_t *len)
{
	/* The text is the caller's to free: a writer on its caller's buffer, or on none yet,
	 * moves to the heap. */
	if (!w->oom && (!w->buf || w->borrowed)) {
		char *b = malloc(w->len + 1);
		if (!b) {
			jw_fail(w);
			return NULL;
		}
		if (w->buf)
			memcpy(b, w->buf, w->len);
		b[w->len] = '\0';
		w->buf = b;
	}
	if (w->oom)
		return NULL;
	if (len)
		*len = w->len;
	char *out = w->buf;
	hf__jw_init(w);
	return out;
}

/* ms_or_null's text. */
static void jw_ms(struct hf__jw *w, int64_t ms)
{
	if (ms)
		hf__jw_int(w, ms);
	else
		hf__jw_lit(w, "null");
}

/* A JSON object keeps one value per key: a hold naming one resource twice (it never should)
 * is left to jansson, so that the bytes stay the same. */
static bool parts_distinct(const hf_hold *h)
{
	for (size_t i = 0; i < h->n_parts; i++)
		for (size_t k = 0; k < i; k++)
			if (strcmp(h->parts[i].resource ? h->parts[i].resource : "",
			           h->parts[k].resource ? h->parts[k].resource : "") == 0)
				return false;
	return true;
}

void hf__jw_hold(struct hf__jw *w, const hf_hold *h)
{
	if (!parts_distinct(h)) {
		char *text = dump_compact(hf__hold_to_json(h));
		if (text) {
			hf__jw_raw(w, text, strlen(text));
			free(text);
		} else {
			jw_fail(w);
		}
		return;
	}
	hf__jw_lit(w, "{\"id\":");
	hf__jw_str(w, h->id);
	hf__jw_lit(w, ",\"owner\":");
	hf__jw_str(w, h->owner ? h->owner : "");
	hf__jw_lit(w, ",\"state\":");
	hf__jw_str(w, hf_hold_state_name(h->state));
	hf__jw_lit(w, ",\"mode\":");
	hf__jw_str(w, hf_mode_name(h->mode));
	hf__jw_lit(w, ",\"created_at_ms\":");
	hf__jw_int(w, h->created_at_ms);
	hf__jw_lit(w, ",\"expires_at_ms\":");
	jw_ms(w, h->expires_at_ms);
	hf__jw_lit(w, ",\"ended_at_ms\":");
	jw_ms(w, h->ended_at_ms);
	if (h->replayed)
		hf__jw_lit(w, ",\"replayed\":true");
	hf__jw_lit(w, ",\"resources\":[");
	for (size_t i = 0; i < h->n_parts; i++) {
		const hf_hold_part *p = &h->parts[i];
		if (i)
			hf__jw_lit(w, ",");
		hf__jw_lit(w, "{\"name\":");
		hf__jw_str(w, p->resource ? p->resource : "");
		hf__jw_lit(w, ",\"units\":");
		hf__jw_int(w, p->units);
		hf__jw_lit(w, ",\"fence\":");
		hf__jw_int(w, p->fence);
		hf__jw_lit(w, "}");
	}
	hf__jw_lit(w, "],\"fence\":{");
	for (size_t i = 0; i < h->n_parts; i++) {
		const hf_hold_part *p = &h->parts[i];
		if (i)
			hf__jw_lit(w, ",");
		hf__jw_str(w, p->resource ? p->resource : "");
		hf__jw_lit(w, ":");
		hf__jw_int(w, p->fence);
	}
	hf__jw_lit(w, "}");
	if (h->token[0]) {
		hf__jw_lit(w, ",\"token\":");
		hf__jw_str(w, h->token);
	}
	hf__jw_lit(w, "}");
}

char *hf__hold_text(const hf_hold *h, size_t *len)
{
	struct hf__jw w;
	hf__jw_init(&w);
	hf__jw_hold(&w, h);
	return hf__jw_finish(&w, len);
}

void hf__jw_parts_sorted(struct hf__jw *w, const hf_hold *h, bool fences)
{
	hf__jw_lit(w, "[");
	for (size_t i = 0; i < h->n_parts; i++) {
		const hf_hold_part *p = &h->parts[i];
		if (i)
			hf__jw_lit(w, ",");
		hf__jw_lit(w, "{");
		if (fences) {
			hf__jw_lit(w, "\"fence\":");
			hf__jw_int(w, p->fence);
			hf__jw_lit(w, ",");
		}
		hf__jw_lit(w, "\"name\":");
		hf__jw_str(w, p->resource);
		hf__jw_lit(w, ",\"units\":");
		hf__jw_int(w, p->units);
		hf__jw_lit(w, "}");
	}
	hf__jw_lit(w, "]");
}

char *hf__event_hold_data_text(const char *type, const hf_hold *h)
{
	return hf__event_hold_data_text_by(type, h, NULL);
}

char *hf__event_hold_data_text_by(const char *type, const hf_hold *h, const char *by)
{
	struct hf__jw w;
	hf__jw_init(&w);
	if (by) { /* "by" sorts before every other key of the data */
		hf__jw_lit(&w, "{\"by\":");
		hf__jw_str(&w, by);
		hf__jw_lit(&w, ",");
	} else {
		hf__jw_lit(&w, "{");
	}
	bool granted = strcmp(type, "hold.granted") == 0;
	if (granted || strcmp(type, "hold.extended") == 0) {
		hf__jw_lit(&w, "\"expires_at_ms\":");
		hf__jw_int(&w, h->expires_at_ms);
		hf__jw_lit(&w, ",\"id\":");
		hf__jw_str(&w, h->id);
		if (!granted) {
			hf__jw_lit(&w, "}");
			return hf__jw_finish(&w, NULL);
		}
		hf__jw_lit(&w, ",\"mode\":");
		hf__jw_str(&w, hf_mode_name(h->mode));
		hf__jw_lit(&w, ",\"owner\":");
	} else {
		hf__jw_lit(&w, "\"id\":");
		hf__jw_str(&w, h->id);
		hf__jw_lit(&w, ",\"owner\":");
	}
	hf__jw_str(&w, h->owner ? h->owner : "");
	if (strcmp(type, "hold.confirmed") != 0) {
		hf__jw_lit(&w, ",\"resources\":");
		hf__jw_parts_sorted(&w, h, granted);
	}
	hf__jw_lit(&w, "}");
	return hf__jw_finish(&w, NULL);
}
