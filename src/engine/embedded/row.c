/*
 * row.c — the journal rows of the embedded store's resources, holds and idempotency records:
 * the compact binary form written since schema 3, and the decoding of both it and the JSON
 * rows of schema 2 (docs/operations.md, "The store file"). Pure functions: no state, no I/O.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/codec.h"
#include "engine/embedded/embedded.h"

/* The leading byte of each binary row: its table and its format. A JSON row starts with '{'. */
enum { ROW_RESOURCE = 0x01, ROW_HOLD = 0x02, ROW_IDEM = 0x03 };
#define ROW_JSON '{'

/* Resource flags. */
enum { RES_DECLARED = 1, RES_META = 2 };

/* ---- writing ---- */

/* A growing buffer; `oom` makes every later write a no-op (one check at the end). */
struct wbuf {
	unsigned char *p;
	size_t len, cap;
	bool oom;
};

static void w_reserve(struct wbuf *w, size_t n)
{
	if (w->oom || w->len + n <= w->cap)
		return;
	size_t cap = w->cap ? w->cap : 128;
	while (cap < w->len + n)
		cap *= 2;
	unsigned char *p = realloc(w->p, cap);
	if (!p) {
		w->oom = true;
		return;
	}
	w->p = p;
	w->cap = cap;
}

static void w_byte(struct wbuf *w, unsigned char b)
{
	w_reserve(w, 1);
	if (!w->oom)
		w->p[w->len++] = b;
}

/* An unsigned LEB128 varint: 7 bits a byte, low first. */
static void w_uvar(struct wbuf *w, uint64_t v)
{
	w_reserve(w, 10);
	if (w->oom)
		return;
	while (v >= 0x80) {
		w->p[w->len++] = (unsigned char)(v | 0x80);
		v >>= 7;
	}
	w->p[w->len++] = (unsigned char)v;
}

/* A signed integer, zigzag-mapped so that small magnitudes of either sign stay short. */
static void w_var(struct wbuf *w, int64_t v)
{
	w_uvar(w, ((uint64_t)v << 1) ^ (uint64_t)(v >> 63));
}

static void w_bytes(struct wbuf *w, const void *s, size_t n)
{
	w_reserve(w, n);
	if (!w->oom && n) {
		memcpy(w->p + w->len, s, n);
		w->len += n;
	}
}

/* A string: its length as a varint, then its bytes (no NUL). */
static void w_str(struct wbuf *w, const char *s)
{
	size_t n = strlen(s);
	w_uvar(w, n);
	w_bytes(w, s, n);
}

static int hex_val(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* A hold id or token (32 lowercase hex characters) as its 16 bytes. */
static void w_hex(struct wbuf *w, const char *hex)
{
	unsigned char b[HF_ID_LEN / 2];
	for (size_t i = 0; i < sizeof(b); i++) {
		int hi = hex_val(hex[2 * i]), lo = hi < 0 ? -1 : hex_val(hex[2 * i + 1]);
		if (lo < 0) { /* ids and tokens are made by hf__random_hex and checked at load */
			w->oom = true;
			return;
		}
		b[i] = (unsigned char)(hi << 4 | lo);
	}
	w_bytes(w, b, sizeof(b));
}

static unsigned char *w_finish(struct wbuf *w, size_t *len)
{
	if (w->oom) {
		free(w->p);
		return NULL;
	}
	*len = w->len;
	return w->p;
}

/* A hold's fields, after the leading byte of a hold or idempotency row; `capacities` (NULL:
 * all 0) each part's resource capacity, written where its resource has no row of its own. */
static void w_hold(struct wbuf *w, const hf_hold *h, const int64_t *capacities)
{
	w_byte(w, (unsigned char)((unsigned)h->state | (unsigned)h->mode << 4));
	w_var(w, h->created_at_ms);
	w_var(w, h->expires_at_ms);
	w_var(w, h->ended_at_ms);
	w_hex(w, h->id);
	w_hex(w, h->token);
	w_str(w, h->owner);
	w_var(w, (int64_t)h->n_parts);
	for (size_t i = 0; i < h->n_parts; i++) {
		w_str(w, h->parts[i].resource);
		w_var(w, h->parts[i].units);
		w_var(w, h->parts[i].fence);
		w_var(w, capacities ? capacities[i] : 0);
	}
}

unsigned char *hf__row_resource(const hf_resource *r, size_t *len)
{
	struct wbuf w = {0};
	w_byte(&w, ROW_RESOURCE);
	w_byte(&w, (unsigned char)((r->declared ? RES_DECLARED : 0) | (r->meta ? RES_META : 0)));
	w_var(&w, r->capacity);
	w_var(&w, r->version);
	w_str(&w, r->name);
	if (r->meta)
		w_str(&w, r->meta);
	return w_finish(&w, len);
}

unsigned char *hf__row_hold(const hf_hold *h, const int64_t *capacities, size_t *len)
{
	struct wbuf w = {0};
	w_byte(&w, ROW_HOLD);
	w_hold(&w, h, capacities);
	return w_finish(&w, len);
}

unsigned char *hf__row_idem(const struct hf__row_idem *d, size_t *len)
{
	struct wbuf w = {0};
	w_byte(&w, ROW_IDEM);
	w_var(&w, d->created_at);
	w_str(&w, d->key);
	w_str(&w, d->fingerprint);
	w_hold(&w, &d->hold, NULL);
	return w_finish(&w, len);
}

/* ---- reading the binary form ---- */

/* A cursor over one row. The first failure is kept (`why`, `at`): every later read is a
 * no-op returning zeroes, so a decoder reads on and checks once. */
struct rbuf {
	const unsigned char *p;
	size_t len, pos;
	const char *why; /* NULL while the row reads well */
	size_t at;       /* the offset where it went wrong */
	bool oom;
};

static void r_fail(struct rbuf *r, const char *why)
{
	if (!r->why) {
		r->why = why;
		r->at = r->pos;
	}
}

static unsigned char r_byte(struct rbuf *r, const char *what)
{
	if (r->why || r->pos >= r->len) {
		r_fail(r, what);
		return 0;
	}
	return r->p[r->pos++];
}

static uint64_t r_uvar(struct rbuf *r, const char *what)
{
	uint64_t v = 0;
	for (unsigned shift = 0; !r->why; shift += 7) {
		if (r->pos >= r->len || shift > 63) {
			r_fail(r, what);
			break;
		}
		unsigned char b = r->p[r->pos++];
		if (shift == 63 && b > 1) { /* bits beyond 64 */
			r_fail(r, what);
			break;
		}
		v |= (uint64_t)(b & 0x7f) << shift;
		if (!(b & 0x80))
			return v;
	}
	return 0;
}

static int64_t r_var(struct rbuf *r, const char *what)
{
	uint64_t u = r_uvar(r, what);
	return (int64_t)(u >> 1) ^ -(int64_t)(u & 1);
}

/* An integer that must lie in [lo, hi]. */
static int64_t r_range(struct rbuf *r, const char *what, int64_t lo, int64_t hi)
{
	size_t at = r->pos;
	int64_t v = r_var(r, what);
	if (!r->why && (v < lo || v > hi)) {
		r->pos = at;
		r_fail(r, what);
	}
	return r->why ? 0 : v;
}

/* A string of 1..max bytes into a new NUL-terminated copy (NULL after a failure). */
static char *r_str(struct rbuf *r, const char *what, size_t max)
{
	size_t at = r->pos;
	uint64_t n = r_uvar(r, what);
	if (!r->why && (n == 0 || n > max || n > r->len - r->pos ||
	                memchr(r->p + r->pos, '\0', (size_t)n))) {
		r->pos = at;
		r_fail(r, what);
	}
	if (r->why)
		return NULL;
	char *s = malloc((size_t)n + 1);
	if (!s) {
		r->oom = true;
		r_fail(r, "out of memory");
		return NULL;
	}
	memcpy(s, r->p + r->pos, (size_t)n);
	s[n] = '\0';
	r->pos += (size_t)n;
	return s;
}

/* A name or an owner: what hf__check_name lets in at the door. */
static char *r_name(struct rbuf *r, const char *what)
{
	size_t at = r->pos;
	char *s = r_str(r, what, HF_NAME_MAX);
	if (s && hf__check_name(what, s, HF_NAME_MAX, NULL) != HF_OK) {
		free(s);
		s = NULL;
		r->pos = at;
		r_fail(r, what);
	}
	return s;
}

static void r_hex(struct rbuf *r, const char *what, char *out)
{
	static const char digits[] = "0123456789abcdef";
	if (!r->why && r->len - r->pos < HF_ID_LEN / 2)
		r_fail(r, what);
	if (r->why) {
		out[0] = '\0';
		return;
	}
	for (size_t i = 0; i < HF_ID_LEN / 2; i++) {
		unsigned char b = r->p[r->pos++];
		out[2 * i] = digits[b >> 4];
		out[2 * i + 1] = digits[b & 15];
	}
	out[HF_ID_LEN] = '\0';
}

/* A hold's fields; each part's capacity into capacities[i] (NULL: read and dropped). */
static void r_hold(struct rbuf *r, hf_hold *h, int64_t *capacities)
{
	unsigned char sm = r_byte(r, "state");
	if (!r->why && ((sm & 15) > HF_HOLD_EXPIRED || (sm >> 4) > HF_MODE_EXCLUSIVE)) {
		r->pos--;
		r_fail(r, "state");
	}
	h->state = (hf_hold_state)(sm & 15);
	h->mode = (hf_mode)(sm >> 4);
	h->created_at_ms = r_range(r, "created_at", 0, HF__JOURNAL_TIME_MAX);
	h->expires_at_ms = r_range(r, "expires_at", 0, HF__JOURNAL_TIME_MAX);
	h->ended_at_ms = r_range(r, "ended_at", 0, HF__JOURNAL_TIME_MAX);
	r_hex(r, "id", h->id);
	r_hex(r, "token", h->token);
	h->owner = r_name(r, "owner");
	size_t n = (size_t)r_range(r, "parts", 1, HF_CLAIMS_MAX);
	if (r->why)
		return;
	if (!(h->parts = calloc(n, sizeof(*h->parts)))) {
		r->oom = true;
		r_fail(r, "out of memory");
		return;
	}
	for (size_t i = 0; i < n && !r->why; i++) {
		h->n_parts = i + 1;
		h->parts[i].resource = r_name(r, "part name");
		h->parts[i].units = r_range(r, "part units", 1, HF_CAPACITY_MAX);
		h->parts[i].fence = r_range(r, "part fence", 1, HF__JOURNAL_FENCE_MAX);
		int64_t capacity = r_range(r, "part capacity", 0, HF_CAPACITY_MAX);
		if (capacities)
			capacities[i] = capacity;
	}
}

/* The verdict on a decoded row: HF_OK, HF_ENOMEM, or HF_ECORRUPT saying what and where. */
static int r_end(struct rbuf *r, const char *table, hf_error *err)
{
	if (!r->why && r->pos != r->len)
		r_fail(r, "bytes after the row");
	if (!r->why)
		return HF_OK;
	if (r->oom)
		return hf__err_code(err, HF_ENOMEM);
	return hf__err(err, HF_ECORRUPT, "store file is damaged: bad %s row: %s at byte %zu of %zu",
	               table, r->why, r->at, r->len);
}

/* ---- meta: its JSON text checked without allocating ---- */

/* A cursor over JSON text. Checked without a parser's allocations so that running out of
 * memory while loading can never pass for a damaged row; what it admits is what jansson
 * parses (RFC 8259, well-formed UTF-8, no \u0000, surrogates in pairs, nesting to 2048). */
struct jv {
	const unsigned char *p, *end;
	int depth;
};

static void jv_ws(struct jv *v)
{
	while (v->p < v->end && (*v->p == ' ' || *v->p == '\t' || *v->p == '\n' || *v->p == '\r'))
		v->p++;
}

static bool jv_lit(struct jv *v, const char *lit)
{
	size_t n = strlen(lit);
	if ((size_t)(v->end - v->p) < n || memcmp(v->p, lit, n) != 0)
		return false;
	v->p += n;
	return true;
}

/* One UTF-8 sequence of 2 to 4 bytes: no overlongs, no surrogates, at most U+10FFFF. */
static bool jv_utf8(struct jv *v)
{
	unsigned c = *v->p, cp;
	size_t n;
	if (c >= 0xc2 && c <= 0xdf)
		n = 1, cp = c & 0x1f;
	else if (c >= 0xe0 && c <= 0xef)
		n = 2, cp = c & 0x0f;
	else if (c >= 0xf0 && c <= 0xf4)
		n = 3, cp = c & 0x07;
	else
		return false;
	if ((size_t)(v->end - v->p) <= n)
		return false;
	for (size_t k = 1; k <= n; k++) {
		if ((v->p[k] & 0xc0) != 0x80)
			return false;
		cp = cp << 6 | (v->p[k] & 0x3f);
	}
	if ((n == 2 && cp < 0x800) || (n == 3 && (cp < 0x10000 || cp > 0x10ffff)) ||
	    (cp >= 0xd800 && cp <= 0xdfff))
		return false;
	v->p += n + 1;
	return true;
}

/* \uXXXX at v->p (the backslash): its code unit, or -1. */
static long jv_u(struct jv *v)
{
	if (v->end - v->p < 6 || v->p[0] != '\\' || v->p[1] != 'u')
		return -1;
	long u = 0;
	for (int i = 2; i < 6; i++) {
		unsigned char c = v->p[i];
		int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
		                                    : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
		if (d < 0)
			return -1;
		u = u << 4 | d;
	}
	v->p += 6;
	return u;
}

static bool jv_string(struct jv *v)
{
	v->p++; /* the opening quote */
	while (v->p < v->end) {
		unsigned c = *v->p;
		if (c == '"') {
			v->p++;
			return true;
		}
		if (c < 0x20)
			return false;
		if (c >= 0x80) {
			if (!jv_utf8(v))
				return false;
		} else if (c != '\\') {
			v->p++;
		} else if (v->end - v->p >= 2 && v->p[1] == 'u') {
			long u = jv_u(v);
			if (u <= 0 || (u >= 0xdc00 && u <= 0xdfff))
				return false;
			if (u >= 0xd800 && u <= 0xdbff) {
				long low = jv_u(v);
				if (low < 0xdc00 || low > 0xdfff)
					return false;
			}
		} else if (v->end - v->p >= 2 && v->p[1] && strchr("\"\\/bfnrt", v->p[1])) {
			v->p += 2;
		} else {
			return false;
		}
	}
	return false;
}

static bool jv_digits(struct jv *v)
{
	const unsigned char *start = v->p;
	while (v->p < v->end && *v->p >= '0' && *v->p <= '9')
		v->p++;
	return v->p > start;
}

static bool jv_number(struct jv *v)
{
	if (v->p < v->end && *v->p == '-')
		v->p++;
	if (v->p < v->end && *v->p == '0')
		v->p++;
	else if (v->p >= v->end || *v->p < '1' || *v->p > '9' || !jv_digits(v))
		return false;
	if (v->p < v->end && *v->p == '.' && (v->p++, !jv_digits(v)))
		return false;
	if (v->p < v->end && (*v->p == 'e' || *v->p == 'E')) {
		v->p++;
		if (v->p < v->end && (*v->p == '+' || *v->p == '-'))
			v->p++;
		if (!jv_digits(v))
			return false;
	}
	return true;
}

static bool jv_value(struct jv *v);

/* An object or an array, at its opening bracket. */
static bool jv_container(struct jv *v)
{
	unsigned char close = *v->p == '{' ? '}' : ']';
	if (++v->depth > 2048)
		return false;
	v->p++;
	jv_ws(v);
	if (v->p < v->end && *v->p == close) {
		v->p++;
		v->depth--;
		return true;
	}
	for (;;) {
		if (close == '}') {
			jv_ws(v);
			if (v->p >= v->end || *v->p != '"' || !jv_string(v))
				return false;
			jv_ws(v);
			if (v->p >= v->end || *v->p++ != ':')
				return false;
		}
		if (!jv_value(v))
			return false;
		jv_ws(v);
		if (v->p >= v->end)
			return false;
		if (*v->p == close) {
			v->p++;
			v->depth--;
			return true;
		}
		if (*v->p++ != ',')
			return false;
	}
}

static bool jv_value(struct jv *v)
{
	jv_ws(v);
	if (v->p >= v->end)
		return false;
	switch (*v->p) {
	case '{':
	case '[':
		return jv_container(v);
	case '"':
		return jv_string(v);
	case 't':
		return jv_lit(v, "true");
	case 'f':
		return jv_lit(v, "false");
	case 'n':
		return jv_lit(v, "null");
	default:
		return jv_number(v);
	}
}

/* Is s[0..n) a JSON object, alone? */
static bool meta_ok(const char *s, size_t n)
{
	struct jv v = {(const unsigned char *)s, (const unsigned char *)s + n, 0};
	jv_ws(&v);
	if (v.p >= v.end || *v.p != '{' || !jv_container(&v))
		return false;
	jv_ws(&v);
	return v.p == v.end;
}

/* ---- reading the JSON form of schema 2 ---- */

static bool time_ok(json_int_t t)
{
	return t >= 0 && t <= HF__JOURNAL_TIME_MAX;
}

static bool hex_ok(const char *s, size_t n)
{
	if (strlen(s) != n)
		return false;
	for (size_t i = 0; i < n; i++)
		if (hex_val(s[i]) < 0)
			return false;
	return true;
}

static int json_corrupt(hf_error *err, const char *table, const void *row, size_t len)
{
	return hf__err(err, HF_ECORRUPT, "store file is damaged: bad %s row '%.*s'", table,
	               (int)(len < 60 ? len : 60), (const char *)row);
}

/* A hold from its JSON object; HF_ECORRUPT (no message) or HF_ENOMEM. */
static int hold_from_json(json_t *j, hf_hold *out)
{
	const char *id, *token, *owner;
	int state, mode;
	json_int_t created, expires, ended;
	json_t *parts;
	if (json_unpack(j, "{s:s, s:s, s:s, s:i, s:i, s:I, s:I, s:I, s:o}", "id", &id, "token",
	                &token, "owner", &owner, "state", &state, "mode", &mode, "created_at",
	                &created, "expires_at", &expires, "ended_at", &ended, "parts", &parts) != 0)
		return HF_ECORRUPT;
	/* Ids and tokens are lowercase hex (hf__random_hex): the binary row keeps their bytes. */
	if (!hex_ok(id, HF_ID_LEN) || !hex_ok(token, HF_TOKEN_LEN) || state < 0 ||
	    state > HF_HOLD_EXPIRED || mode < 0 || mode > HF_MODE_EXCLUSIVE || !time_ok(created) ||
	    !time_ok(expires) || !time_ok(ended) || !json_is_array(parts) ||
	    json_array_size(parts) == 0 || json_array_size(parts) > HF_CLAIMS_MAX)
		return HF_ECORRUPT;
	memcpy(out->id, id, HF_ID_LEN + 1);
	memcpy(out->token, token, HF_TOKEN_LEN + 1);
	out->state = (hf_hold_state)state;
	out->mode = (hf_mode)mode;
	out->created_at_ms = created;
	out->expires_at_ms = expires;
	out->ended_at_ms = ended;
	if (!(out->owner = hf__strdup(owner)))
		return HF_ENOMEM;
	size_t n = json_array_size(parts);
	if (!(out->parts = calloc(n, sizeof(*out->parts))))
		return HF_ENOMEM;
	for (size_t i = 0; i < n; i++) {
		const char *name;
		json_int_t units, fence;
		if (json_unpack(json_array_get(parts, i), "{s:s, s:I, s:I}", "name", &name, "units",
		                &units, "fence", &fence) != 0 ||
		    units < 1 || units > HF_CAPACITY_MAX || fence < 1 || fence > HF__JOURNAL_FENCE_MAX)
			return HF_ECORRUPT;
		out->parts[i].units = units;
		out->parts[i].fence = fence;
		out->n_parts = i + 1;
		if (!(out->parts[i].resource = hf__strdup(name)))
			return HF_ENOMEM;
	}
	return HF_OK;
}

static int resource_from_json(const void *row, size_t len, hf_resource *out, hf_error *err)
{
	json_t *j = json_loadb(row, len, 0, NULL), *meta = NULL;
	const char *name;
	json_int_t capacity, version;
	int declared, rc = HF_OK;
	if (!j || json_unpack(j, "{s:s, s:I, s:o, s:I, s:b}", "name", &name, "capacity", &capacity,
	                      "meta", &meta, "version", &version, "declared", &declared) != 0 ||
	    capacity < 1 || capacity > HF_CAPACITY_MAX) {
		json_decref(j);
		return json_corrupt(err, "resource", row, len);
	}
	out->capacity = capacity;
	out->version = version;
	out->declared = declared;
	if (!(out->name = hf__strdup(name)) ||
	    (json_is_object(meta) && !(out->meta = hf__json_dumps(meta, JSON_COMPACT))))
		rc = hf__err_code(err, HF_ENOMEM);
	json_decref(j);
	return rc;
}

static int hold_from_json_row(const void *row, size_t len, hf_hold *out, hf_error *err)
{
	json_t *j = json_loadb(row, len, 0, NULL);
	int rc = j ? hold_from_json(j, out) : HF_ECORRUPT;
	json_decref(j);
	if (rc == HF_ENOMEM)
		return hf__err_code(err, rc);
	return rc == HF_OK ? HF_OK : json_corrupt(err, "hold", row, len);
}

static int idem_from_json(const void *row, size_t len, struct hf__row_idem *out, hf_error *err)
{
	json_t *j = json_loadb(row, len, 0, NULL), *hold = NULL;
	const char *key, *fp;
	json_int_t created;
	int rc = HF_ECORRUPT;
	if (j && json_unpack(j, "{s:s, s:s, s:I, s:o}", "key", &key, "fingerprint", &fp,
	                     "created_at", &created, "hold", &hold) == 0 &&
	    time_ok(created) && (rc = hold_from_json(hold, &out->hold)) == HF_OK) {
		out->created_at = created;
		if (!(out->key = hf__strdup(key)) || !(out->fingerprint = hf__strdup(fp)))
			rc = HF_ENOMEM;
	}
	json_decref(j);
	if (rc == HF_ENOMEM)
		return hf__err_code(err, rc);
	return rc == HF_OK ? HF_OK : json_corrupt(err, "idempotency", row, len);
}

/* ---- decoding either form ---- */

/* The row's form: its leading byte, or 0 for an empty row. */
static int row_kind(const void *row, size_t len)
{
	return len ? *(const unsigned char *)row : 0;
}

static int wrong_kind(hf_error *err, const char *table, int kind)
{
	return hf__err(err, HF_ECORRUPT,
	               "store file is damaged: bad %s row: leading byte 0x%02x is no row format "
	               "of this table",
	               table, kind);
}

int hf__row_resource_decode(const void *row, size_t len, hf_resource *out, hf_error *err)
{
	memset(out, 0, sizeof(*out));
	int kind = row_kind(row, len), rc;
	if (kind == ROW_JSON)
		rc = resource_from_json(row, len, out, err);
	else if (kind != ROW_RESOURCE)
		rc = wrong_kind(err, "resource", kind);
	else {
		struct rbuf r = {.p = row, .len = len, .pos = 1};
		unsigned char flags = r_byte(&r, "flags");
		if (!r.why && flags > (RES_DECLARED | RES_META)) {
			r.pos--;
			r_fail(&r, "flags");
		}
		out->declared = flags & RES_DECLARED;
		out->capacity = r_range(&r, "capacity", 1, HF_CAPACITY_MAX);
		out->version = r_range(&r, "version", 0, INT64_MAX);
		out->name = r_name(&r, "name");
		if (flags & RES_META) {
			size_t at = r.pos;
			out->meta = r_str(&r, "meta", HF_META_MAX);
			if (out->meta && !meta_ok(out->meta, strlen(out->meta))) {
				r.pos = at;
				r_fail(&r, "meta");
			}
		}
		rc = r_end(&r, "resource", err);
	}
	if (rc != HF_OK)
		hf__resource_clear(out);
	return rc;
}

int hf__row_hold_decode(const void *row, size_t len, hf_hold *out, int64_t *capacities,
                        hf_error *err)
{
	memset(out, 0, sizeof(*out));
	if (capacities)
		memset(capacities, 0, HF_CLAIMS_MAX * sizeof(*capacities));
	int kind = row_kind(row, len), rc;
	if (kind == ROW_JSON)
		rc = hold_from_json_row(row, len, out, err);
	else if (kind != ROW_HOLD)
		rc = wrong_kind(err, "hold", kind);
	else {
		struct rbuf r = {.p = row, .len = len, .pos = 1};
		r_hold(&r, out, capacities);
		rc = r_end(&r, "hold", err);
	}
	if (rc != HF_OK)
		hf__hold_clear(out);
	return rc;
}

void hf__row_idem_clear(struct hf__row_idem *d)
{
	free(d->key);
	free(d->fingerprint);
	hf__hold_clear(&d->hold);
	memset(d, 0, sizeof(*d));
}

int hf__row_idem_decode(const void *row, size_t len, struct hf__row_idem *out, hf_error *err)
{
	memset(out, 0, sizeof(*out));
	int kind = row_kind(row, len), rc;
	if (kind == ROW_JSON)
		rc = idem_from_json(row, len, out, err);
	else if (kind != ROW_IDEM)
		rc = wrong_kind(err, "idempotency", kind);
	else {
		struct rbuf r = {.p = row, .len = len, .pos = 1};
		out->created_at = r_range(&r, "created_at", 0, HF__JOURNAL_TIME_MAX);
		size_t at = r.pos;
		out->key = r_str(&r, "key", HF_IDEMPOTENCY_KEY_MAX);
		if (out->key && hf__check_idempotency_key(out->key, NULL) != HF_OK) {
			r.pos = at;
			r_fail(&r, "key");
		}
		out->fingerprint = r_str(&r, "fingerprint", SIZE_MAX);
		r_hold(&r, &out->hold, NULL);
		rc = r_end(&r, "idempotency", err);
	}
	if (rc != HF_OK)
		hf__row_idem_clear(out);
	return rc;
}
