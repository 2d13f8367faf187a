/*
 * validate.c — every check on user input that no engine changes: names, keys, metadata,
 * numbers and their limits. Engines receive only requests that passed hf__check_request.
 * Also the deep copy of a request that a call owns, and the canonical text of an acquire.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"

/* True if s[0..len) is well-formed UTF-8 (no overlongs, no surrogates, <= U+10FFFF) and holds
 * no control characters (C0, DEL, C1). */
static bool utf8_clean(const unsigned char *s, size_t len)
{
	size_t i = 0;
	while (i < len) {
		unsigned c = s[i];
		if (c < 0x80) {
			if (c < 0x20 || c == 0x7f)
				return false;
			i++;
			continue;
		}
		size_t n;
		unsigned cp;
		if (c >= 0xc2 && c <= 0xdf) {
			n = 1;
			cp = c & 0x1f;
		} else if (c >= 0xe0 && c <= 0xef) {
			n = 2;
			cp = c & 0x0f;
		} else if (c >= 0xf0 && c <= 0xf4) {
			n = 3;
			cp = c & 0x07;
		} else {
			return false;
		}
		if (i + n >= len)
			return false;
		for (size_t k = 1; k <= n; k++) {
			if ((s[i + k] & 0xc0) != 0x80)
				return false;
			cp = (cp << 6) | (s[i + k] & 0x3f);
		}
		if ((n == 2 && cp < 0x800) || (n == 3 && (cp < 0x10000 || cp > 0x10ffff)) ||
		    (cp >= 0xd800 && cp <= 0xdfff) || (cp >= 0x80 && cp <= 0x9f))
			return false;
		i += n + 1;
	}
	return true;
}

int hf__check_name(const char *field, const char *s, size_t max, hf_error *err)
{
	if (!s || !*s)
		return hf__err(err, HF_EINVAL, "%s is missing or empty", field);
	size_t len = strlen(s);
	if (len > max)
		return hf__err(err, HF_EINVAL, "%s is %zu bytes long, the limit is %zu", field, len, max);
	if (!utf8_clean((const unsigned char *)s, len))
		return hf__err(err, HF_EINVAL, "%s must be UTF-8 without control characters", field);
	return HF_OK;
}

int hf__check_idempotency_key(const char *key, hf_error *err)
{
	size_t len = strlen(key);
	if (len == 0 || len > HF_IDEMPOTENCY_KEY_MAX)
		return hf__err(err, HF_EINVAL, "idempotency key must be 1 to %d characters",
		               HF_IDEMPOTENCY_KEY_MAX);
	for (size_t i = 0; i < len; i++)
		if (key[i] < 0x21 || key[i] > 0x7e)
			return hf__err(err, HF_EINVAL, "idempotency key must be printable ASCII");
	return HF_OK;
}

int hf__check_meta(const char *meta, hf_error *err)
{
	if (!meta)
		return HF_OK;
	size_t len = strlen(meta);
	if (len > HF_META_MAX)
		return hf__err(err, HF_EINVAL, "meta is %zu bytes, the limit is %d", len, HF_META_MAX);
	json_error_t jerr;
	memset(&jerr, 0, sizeof(jerr));
	json_t *j = json_loadb(meta, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!j) {
		/* Out of memory is no verdict on the text. jansson says so only sometimes (an empty
		 * error when it cannot start; a syntax error when the copy of a string fails): text
		 * that parses on a second try was never invalid. */
		bool oom = json_error_code(&jerr) == json_error_out_of_memory || !jerr.text[0];
		if (!oom && !(j = json_loadb(meta, len, JSON_REJECT_DUPLICATES, NULL)))
			return hf__err(err, HF_EINVAL, "meta is not valid JSON: %s", jerr.text);
		if (!j)
			return hf__err_code(err, HF_ENOMEM);
	}
	bool object = json_is_object(j);
	json_decref(j);
	if (!object)
		return hf__err(err, HF_EINVAL, "meta must be a JSON object");
	return HF_OK;
}

static int check_range(const char *field, int64_t v, int64_t lo, int64_t hi, hf_error *err)
{
	if (v < lo || v > hi)
		return hf__err(err, HF_EINVAL, "%s must be between %lld and %lld, not %lld", field,
		               (long long)lo, (long long)hi, (long long)v);
	return HF_OK;
}

static int check_acquire(const hf_acquire_req *a, hf_error *err)
{
	int rc;
	if ((rc = hf__check_name("owner", a->owner, HF_OWNER_MAX, err)))
		return rc;
	if (a->n_claims == 0 || !a->claims)
		return hf__err(err, HF_EINVAL, "a hold must name at least one resource");
	if (a->n_claims > HF_CLAIMS_MAX)
		return hf__err(err, HF_EINVAL, "a hold names %zu resources, the limit is %d",
		               a->n_claims, HF_CLAIMS_MAX);
	if ((unsigned)a->mode > HF_MODE_EXCLUSIVE)
		return hf__err(err, HF_EINVAL, "mode must be units, shared or exclusive");
	if ((rc = check_range("ttl_ms", a->ttl_ms, 1, HF_TTL_MAX_MS, err)) ||
	    (rc = check_range("wait_ms", a->wait_ms, 0, HF_WAIT_MAX_MS, err)))
		return rc;
	if (a->idempotency_key && (rc = hf__check_idempotency_key(a->idempotency_key, err)))
		return rc;
	for (size_t i = 0; i < a->n_claims; i++) {
		const hf_claim *c = &a->claims[i];
		if ((rc = hf__check_name("resource name", c->name, HF_NAME_MAX, err)))
			return rc;
		if (a->mode == HF_MODE_UNITS &&
		    (rc = check_range("units", c->units, 1, HF_CAPACITY_MAX, err)))
			return rc;
		if ((rc = check_range("capacity", c->capacity, 0, HF_CAPACITY_MAX, err)))
			return rc;
		if (c->capacity > 0 && a->mode == HF_MODE_UNITS && c->units > c->capacity)
			return hf__err(err, HF_ECAPACITY, "%lld units of '%s' exceed its capacity %lld",
			               (long long)c->units, c->name, (long long)c->capacity);
		for (size_t k = 0; k < i; k++)
			if (strcmp(a->claims[k].name, c->name) == 0)
				return hf__err(err, HF_EINVAL, "resource '%s' is named twice", c->name);
	}
	return HF_OK;
}

static int check_hold_ref(const hf_request *req, bool need_token, hf_error *err)
{
	if (!req->hold_id || strlen(req->hold_id) != HF_ID_LEN ||
	    strspn(req->hold_id, "0123456789abcdef") != HF_ID_LEN)
		return hf__err(err, HF_ENOHOLD, "hold id must be %d lowercase hex characters",
		               HF_ID_LEN);
	if (need_token && (!req->token || !*req->token))
		return hf__err(err, HF_EINVAL, "token is missing");
	if (need_token && strlen(req->token) > 256)
		return hf__err(err, HF_ETOKEN, "token does not match the hold");
	return HF_OK;
}

static int check_limit(size_t limit, hf_error *err)
{
	if (limit > HF_LIST_MAX)
		return hf__err(err, HF_EINVAL, "limit must be at most %d, not %zu", HF_LIST_MAX, limit);
	return HF_OK;
}

int hf__check_request(const hf_request *req, hf_error *err)
{
	int rc;
	switch (req->op) {
	case HF_OP_PUT_RESOURCE:
		if ((rc = hf__check_name("resource name", req->name, HF_NAME_MAX, err)) ||
		    (rc = check_range("capacity", req->capacity, 1, HF_CAPACITY_MAX, err)) ||
		    (rc = hf__check_meta(req->meta, err)))
			return rc;
		return check_range("if_version", req->if_version, -1, INT64_MAX, err);
	case HF_OP_DELETE_RESOURCE:
		if ((rc = check_range("if_version", req->if_version, -1, INT64_MAX, err)))
			return rc;
		/* fall through */
	case HF_OP_GET_RESOURCE:
		return hf__check_name("resource name", req->name, HF_NAME_MAX, err);
	case HF_OP_LIST_RESOURCES:
		return check_limit(req->limit, err);
	case HF_OP_ACQUIRE:
		return check_acquire(&req->acquire, err);
	case HF_OP_EXTEND:
		if ((rc = check_hold_ref(req, true, err)))
			return rc;
		return check_range("ttl_ms", req->ttl_ms, 1, HF_TTL_MAX_MS, err);
	case HF_OP_CONFIRM:
		return check_hold_ref(req, true, err);
	case HF_OP_RELEASE:
		return check_hold_ref(req, !req->operator_release, err);
	case HF_OP_GET_HOLD:
		return check_hold_ref(req, false, err);
	case HF_OP_LIST_HOLDS:
		if (req->owner && (rc = hf__check_name("owner", req->owner, HF_OWNER_MAX, err)))
			return rc;
		if (req->resource &&
		    (rc = hf__check_name("resource name", req->resource, HF_NAME_MAX, err)))
			return rc;
		if (req->state < -1 || req->state > HF_HOLD_EXPIRED)
			return hf__err(err, HF_EINVAL, "state filter is not a hold state");
		return check_limit(req->limit, err);
	case HF_OP_READ_EVENTS:
		if ((rc = check_limit(req->limit, err)))
			return rc;
		return check_range("wait_ms", req->wait_ms, 0, HF_WAIT_MAX_MS, err);
	case HF_OP_LIST_WAITERS:
		if ((rc = hf__check_name("resource name", req->name, HF_NAME_MAX, err)))
			return rc;
		if (req->cursor && hf__waiter_cursor(req->cursor) < 0)
			return hf__err(err, HF_EINVAL, "cursor of a waiter list must be a position "
			                               "(a non-negative integer)");
		return check_limit(req->limit, err);
	case HF_OP_SAGA_TYPE_PUT:
	case HF_OP_SAGA_SAVE:
		if (!req->json)
			return hf__err(err, HF_EINVAL, "saga storage call without its JSON argument");
		if (req->op == HF_OP_SAGA_SAVE)
			return check_range("if_version", req->if_version, 0, INT64_MAX, err);
		/* fall through */
	case HF_OP_SAGA_TYPE_GET:
	case HF_OP_SAGA_GET:
		return hf__check_name("name", req->name, HF_NAME_MAX, err);
	case HF_OP_SAGA_TYPE_LIST:
	case HF_OP_SAGA_LIST:
		return check_limit(req->limit, err);
	}
	return hf__err(err, HF_EINVAL, "unknown operation %d", (int)req->op);
}

int64_t hf__waiter_cursor(const char *cursor)
{
	if (!cursor)
		return 0;
	size_t n = strspn(cursor, "0123456789");
	if (n == 0 || n > 9 || cursor[n])
		return -1;
	return strtoll(cursor, NULL, 10);
}

/* ---- Deep copy of a request. ---- */

/* The strings of a request a copy keeps (the acquire's only for an acquire), in the order
 * they are packed: each one's address in a request. */
static size_t request_strings(hf_request *r, const char ***out)
{
	size_t n = 0;
	out[n++] = &r->name;
	out[n++] = &r->meta;
	out[n++] = &r->hold_id;
	out[n++] = &r->token;
	out[n++] = &r->owner;
	out[n++] = &r->resource;
	out[n++] = &r->cursor;
	out[n++] = &r->json;
	if (r->op == HF_OP_ACQUIRE) {
		out[n++] = &r->acquire.owner;
		out[n++] = &r->acquire.idempotency_key;
	}
	return n;
}

#define REQUEST_STRINGS 10

size_t hf__request_extra(const hf_request *req)
{
	const char **strs[REQUEST_STRINGS];
	size_t n = request_strings((hf_request *)req, strs), size = 0;
	for (size_t i = 0; i < n; i++)
		size += *strs[i] ? strlen(*strs[i]) + 1 : 0;
	if (req->op == HF_OP_ACQUIRE) {
		size += req->acquire.n_claims * sizeof(hf_claim);
		for (size_t i = 0; i < req->acquire.n_claims; i++)
			size += strlen(req->acquire.claims[i].name) + 1;
	}
	return size;
}

/* Copies s to *p and moves *p past it. */
static const char *pack_str(char **p, const char *s)
{
	if (!s)
		return NULL;
	size_t n = strlen(s) + 1;
	char *d = memcpy(*p, s, n);
	*p += n;
	return d;
}

void hf__request_pack(hf_request *dst, const hf_request *src, void *space)
{
	*dst = *src;
	if (src->limit == 0)
		dst->limit = 100;
	/* The claims first: the space is aligned for them, the strings need no alignment. */
	hf_claim *claims = space;
	char *p = space;
	if (src->op == HF_OP_ACQUIRE) {
		size_t n = src->acquire.n_claims;
		dst->acquire.claims = n ? claims : NULL;
		p += n * sizeof(*claims);
		for (size_t i = 0; i < n; i++) {
			claims[i] = src->acquire.claims[i];
			claims[i].name = pack_str(&p, src->acquire.claims[i].name);
			if (src->acquire.mode != HF_MODE_UNITS)
				claims[i].units = 0; /* decided by the engine from the capacity */
		}
	} else {
		dst->acquire.owner = dst->acquire.idempotency_key = NULL;
		dst->acquire.claims = NULL;
		dst->acquire.n_claims = 0;
	}
	const char **to[REQUEST_STRINGS];
	size_t n = request_strings(dst, to);
	for (size_t i = 0; i < n; i++)
		*to[i] = pack_str(&p, *to[i]); /* still src's string: *dst = *src */
}

char *hf__acquire_fingerprint(const hf_acquire_req *a)
{
	size_t cap = 128 + strlen(a->owner);
	for (size_t i = 0; i < a->n_claims; i++)
		cap += strlen(a->claims[i].name) + 64;
	char *buf = malloc(cap);
	if (!buf)
		return NULL;
	/* Names cannot hold control characters, so \x1f cannot appear inside a field. */
	int off = snprintf(buf, cap, "%s\x1f%d\x1f%d\x1f%lld", a->owner, (int)a->mode, a->any ? 1 : 0,
	                   (long long)a->ttl_ms);
	/* Units count only in units mode: shared and exclusive holds take what the capacity says,
	 * whatever a request wrote there (its JSON form leaves them out). */
	for (size_t i = 0; i < a->n_claims; i++)
		off += snprintf(buf + off, cap - (size_t)off, "\x1f%s\x1f%lld\x1f%lld", a->claims[i].name,
		                (long long)(a->mode == HF_MODE_UNITS ? a->claims[i].units : 0),
		                (long long)a->claims[i].capacity);
	return buf;
}
