/*
 * answer.c — holdfast-bench reads holdfastd's answers to the hold calls: the status, the
 * error's code, and of a hold what the checker records (id, token, mode, resources' names,
 * units and fences). A single pass over the text reads the answers holdfastd gives; anything
 * it does not expect (escapes, non-ASCII, fractions, duplicate keys) is read by jansson.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <jansson.h>

#include "bench.h"

/* ---- jansson: every JSON ---- */

/* Reads a hold's JSON (the answer to acquire, confirm, release) into `fa`. */
static void parse_hold(json_t *j, struct hfb_full_answer *fa)
{
	const char *s;
	if ((s = json_string_value(json_object_get(j, "id"))))
		snprintf(fa->a.hold, sizeof(fa->a.hold), "%s", s);
	if ((s = json_string_value(json_object_get(j, "token"))))
		snprintf(fa->a.token, sizeof(fa->a.token), "%s", s);
	s = json_string_value(json_object_get(j, "mode"));
	fa->exclusive = s && strcmp(s, "exclusive") == 0;
	json_t *parts = json_object_get(j, "resources");
	size_t i;
	json_t *p;
	json_array_foreach(parts, i, p)
	{
		if (i >= HFB_PARTS_MAX)
			break;
		s = json_string_value(json_object_get(p, "name"));
		snprintf(fa->parts[i].name, sizeof(fa->parts[i].name), "%s", s ? s : "");
		fa->parts[i].units = json_integer_value(json_object_get(p, "units"));
		fa->parts[i].fence = json_integer_value(json_object_get(p, "fence"));
		fa->n_parts = i + 1;
	}
}

static void read_jansson(int status, const char *body, size_t len, struct hfb_full_answer *fa)
{
	json_t *j = json_loadb(body, len, 0, NULL);
	if (status >= 200 && status < 300) {
		fa->a.code = j ? HF_OK : HF_EPROTO;
		if (j)
			parse_hold(j, fa);
	} else {
		const char *code =
		    json_string_value(json_object_get(json_object_get(j, "error"), "code"));
		fa->a.code = code ? hf_err_from_name(code) : HF_EPROTO;
	}
	json_decref(j);
}

/* ---- one pass: the JSON holdfastd writes ---- */

#define MAX_DEPTH 32

struct scan {
	const char *p, *end;
	int depth;
	struct hfb_full_answer h; /* what a 2xx answer says */
	char code[64];            /* error.code of another */
	bool has_code;
	unsigned seen;            /* the keys read in the object at hand: a second one gives up */
};

static void ws(struct scan *s)
{
	while (s->p < s->end && (*s->p == ' ' || *s->p == '\n' || *s->p == '\r' || *s->p == '\t'))
		s->p++;
}

/* A string of printable ASCII without escapes; false for anything else. */
static bool string(struct scan *s, const char **text, size_t *n)
{
	if (s->p == s->end || *s->p != '"')
		return false;
	const char *q = ++s->p;
	for (; s->p < s->end && *s->p != '"'; s->p++)
		if (*s->p < 0x20 || *s->p > 0x7e || *s->p == '\\')
			return false;
	if (s->p == s->end)
		return false;
	*text = q;
	*n = (size_t)(s->p++ - q);
	return true;
}

/* An integer of at most 18 digits (it fits); false for anything else. */
static bool integer(struct scan *s, int64_t *v)
{
	const char *q = s->p;
	bool neg = q < s->end && *q == '-';
	q += neg;
	const char *digits = q;
	int64_t x = 0;
	for (; q < s->end && *q >= '0' && *q <= '9'; q++)
		x = x * 10 + (*q - '0');
	size_t n = (size_t)(q - digits);
	if (n == 0 || n > 18 || (n > 1 && *digits == '0'))
		return false;
	if (q < s->end && (*q == '.' || *q == 'e' || *q == 'E'))
		return false;
	*v = neg ? -x : x;
	s->p = q;
	return true;
}

static bool literal(struct scan *s, const char *word, size_t n)
{
	if ((size_t)(s->end - s->p) < n || memcmp(s->p, word, n) != 0)
		return false;
	s->p += n;
	return true;
}

typedef bool (*member_fn)(struct scan *s, const char *key, size_t n);
typedef bool (*element_fn)(struct scan *s, size_t i);

static bool object(struct scan *s, member_fn fn);
static bool array(struct scan *s, element_fn fn);

static bool skip(struct scan *s)
{
	const char *t;
	size_t n;
	int64_t v;
	if (s->p == s->end)
		return false;
	switch (*s->p) {
	case '"':
		return string(s, &t, &n);
	case '{':
		return object(s, NULL);
	case '[':
		return array(s, NULL);
	case 't':
		return literal(s, "true", 4);
	case 'f':
		return literal(s, "false", 5);
	case 'n':
		return literal(s, "null", 4);
	default:
		return integer(s, &v);
	}
}

/* { "key": value, ... }: fn reads each member's value (or skips it) */
static bool object(struct scan *s, member_fn fn)
{
	unsigned seen = s->seen;
	s->seen = 0;
	if (++s->depth > MAX_DEPTH)
		return false;
	s->p++;
	ws(s);
	if (s->p < s->end && *s->p == '}')
		goto done;
	for (;;) {
		const char *k;
		size_t kn;
		ws(s);
		if (!string(s, &k, &kn))
			return false;
		ws(s);
		if (s->p == s->end || *s->p++ != ':')
			return false;
		ws(s);
		if (!(fn ? fn(s, k, kn) : skip(s)))
			return false;
		ws(s);
		if (s->p == s->end)
			return false;
		if (*s->p == '}')
			break;
		if (*s->p++ != ',')
			return false;
	}
done:
	s->p++;
	s->depth--;
	s->seen = seen;
	return true;
}

static bool array(struct scan *s, element_fn fn)
{
	if (++s->depth > MAX_DEPTH)
		return false;
	s->p++;
	ws(s);
	if (s->p < s->end && *s->p == ']')
		goto done;
	for (size_t i = 0;; i++) {
		ws(s);
		if (!(fn ? fn(s, i) : skip(s)))
			return false;
		ws(s);
		if (s->p == s->end)
			return false;
		if (*s->p == ']')
			break;
		if (*s->p++ != ',')
			return false;
	}
done:
	s->p++;
	s->depth--;
	return true;
}

/* Is this the member `name`, read for the first time in its object? (a second: give up) */
static bool is(struct scan *s, const char *key, size_t n, const char *name, unsigned bit,
               bool *dup)
{
	if (n != strlen(name) || memcmp(key, name, n) != 0)
		return false;
	*dup = s->seen & bit;
	s->seen |= bit;
	return true;
}

/* A string member into buf (truncated as snprintf would); any other value leaves buf. */
static bool opt_string(struct scan *s, char *buf, size_t size)
{
	const char *t;
	size_t n;
	if (s->p == s->end || *s->p != '"')
		return skip(s);
	if (!string(s, &t, &n))
		return false;
	n = n < size - 1 ? n : size - 1;
	memcpy(buf, t, n);
	buf[n] = '\0';
	return true;
}

/* An integer member; any other value reads as 0 (json_integer_value). */
static bool opt_integer(struct scan *s, int64_t *v)
{
	*v = 0;
	if (s->p < s->end && (*s->p == '-' || (*s->p >= '0' && *s->p <= '9')))
		return integer(s, v);
	return skip(s);
}

static bool part_member(struct scan *s, const char *k, size_t n)
{
	struct hfb_full_answer *h = &s->h;
	size_t i = h->n_parts - 1;
	bool dup = false;
	if (is(s, k, n, "name", 1, &dup))
		return !dup && opt_string(s, h->parts[i].name, sizeof(h->parts[i].name));
	if (is(s, k, n, "units", 2, &dup))
		return !dup && opt_integer(s, &h->parts[i].units);
	if (is(s, k, n, "fence", 4, &dup))
		return !dup && opt_integer(s, &h->parts[i].fence);
	return skip(s);
}

static bool part(struct scan *s, size_t i)
{
	if (i >= HFB_PARTS_MAX)
		return skip(s);
	s->h.n_parts = i + 1;
	return s->p < s->end && *s->p == '{' ? object(s, part_member) : skip(s);
}

static bool error_member(struct scan *s, const char *k, size_t n)
{
	bool dup = false;
	const char *t;
	if (!is(s, k, n, "code", 1, &dup))
		return skip(s);
	if (dup)
		return false;
	if (s->p == s->end || *s->p != '"')
		return skip(s);
	if (!string(s, &t, &n) || n >= sizeof(s->code))
		return false;
	memcpy(s->code, t, n);
	s->code[n] = '\0';
	s->has_code = true;
	return true;
}

static bool top_member(struct scan *s, const char *k, size_t n)
{
	struct hfb_full_answer *h = &s->h;
	bool dup = false;
	char mode[16] = "";
	if (is(s, k, n, "id", 1, &dup))
		return !dup && opt_string(s, h->a.hold, sizeof(h->a.hold));
	if (is(s, k, n, "token", 2, &dup))
		return !dup && opt_string(s, h->a.token, sizeof(h->a.token));
	if (is(s, k, n, "mode", 4, &dup)) {
		if (dup || !opt_string(s, mode, sizeof(mode)))
			return false;
		h->exclusive = strcmp(mode, "exclusive") == 0;
		return true;
	}
	if (is(s, k, n, "resources", 8, &dup))
		return !dup && (s->p < s->end && *s->p == '[' ? array(s, part) : skip(s));
	if (is(s, k, n, "error", 16, &dup))
		return !dup && (s->p < s->end && *s->p == '{' ? object(s, error_member) : skip(s));
	return skip(s);
}

/* ---- the answer ---- */

void hfb_answer_read(int status, const char *body, size_t len, struct hfb_full_answer *fa)
{
	struct scan s = {.p = body, .end = body + len};
	memset(&s.h, 0, sizeof(s.h));
	ws(&s);
	bool read = s.p < s.end && *s.p == '{' && object(&s, top_member);
	ws(&s);
	if (!read || s.p != s.end) {
		read_jansson(status, body, len, fa);
	} else if (status >= 200 && status < 300) {
		*fa = s.h;
		fa->a.code = HF_OK;
	} else {
		fa->a.code = s.has_code ? hf_err_from_name(s.code) : HF_EPROTO;
	}
	if (fa->a.code == HF_OK)
		hfb_answer_first(fa);
}

void hfb_answer_first(struct hfb_full_answer *fa)
{
	if (fa->n_parts) {
		fa->a.units = fa->parts[0].units;
		fa->a.fence = fa->parts[0].fence;
		snprintf(fa->a.first, sizeof(fa->a.first), "%s", fa->parts[0].name);
	}
}
