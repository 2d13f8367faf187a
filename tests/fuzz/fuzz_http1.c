/*
 * fuzz_http1.c — fuzz target: holdfastd's HTTP/1.1 wire format (src/server/http1.c) fed bytes
 * directly, in-process, no sockets. The first two input bytes choose the limits (--max-headers
 * from 16 to 16 KiB, --max-body up to 64 KiB) and how the body is cut into pieces; the rest is
 * what a client sent. Properties: no crash, UB or leak; a parse either asks for more bytes
 * (only when no head end is within the limit), refuses with a known code and a message, or
 * yields a head whose every slice lies inside it, with the framing rules held (one decimal
 * Content-Length or none, not both it and chunked); parsing is deterministic and a prefix of
 * a head asks for more. A chunked body is decoded whole and in pieces, and both agree with
 * a plain reference decoder written here (result, bytes used, data). The answer writer's
 * head fits hf__h1_head_size and is a well-formed status line and header block.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "holdfast.h"
#include "server/http1.h"

/* ---- The reference chunked decoder: the grammar as written in RFC 9112 7.1, with
 * http1.c's bounds (15 hex digits, 4096 bytes of size line, 8192 of trailers), over the
 * whole input at once. ---- */

struct ref {
	int rc;      /* HF__H1_* */
	int code;    /* on error */
	size_t used; /* on done */
	uint8_t *out;
	size_t out_len;
};

static int hexv(uint8_t c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

#define REF_MORE() return (r->rc = HF__H1_MORE, (void)0)
#define REF_ERR(c) return (r->rc = HF__H1_ERROR, r->code = (c), (void)0)

/* Expects CRLF at p[*i]. Returns 1 when there, 0 when the input ends first, -1 if not. */
static int crlf(const uint8_t *p, size_t n, size_t *i)
{
	if (*i >= n)
		return 0;
	if (p[*i] != '\r')
		return -1;
	if (*i + 1 >= n)
		return 0;
	if (p[*i + 1] != '\n')
		return -1;
	*i += 2;
	return 1;
}

static void ref_trailers(const uint8_t *p, size_t n, size_t i, struct ref *r)
{
	size_t tr = 0;
	for (;;) {
		if (i >= n)
			REF_MORE();
		if (p[i] == '\r') {
			int c = crlf(p, n, &i);
			if (c == 0)
				REF_MORE();
			if (c < 0)
				REF_ERR(HF_EINVAL);
			r->rc = HF__H1_DONE;
			r->used = i;
			return;
		}
		while (i < n && p[i] != '\r') {
			if (p[i] == '\n' || ++tr > 8192)
				REF_ERR(HF_EINVAL);
			i++;
		}
		int c = crlf(p, n, &i);
		if (c == 0)
			REF_MORE();
		if (c < 0)
			REF_ERR(HF_EINVAL);
	}
}

static void ref_chunked(const uint8_t *p, size_t n, uint64_t max_body, struct ref *r)
{
	size_t i = 0;
	uint64_t total = 0;
	for (;;) {
		uint64_t size = 0;
		size_t digits = 0;
		while (i < n && hexv(p[i]) >= 0) {
			if (++digits > 15)
				REF_ERR(HF_EINVAL);
			size = size * 16 + (uint64_t)hexv(p[i++]);
		}
		if (i >= n)
			REF_MORE();
		if (digits == 0)
			REF_ERR(HF_EINVAL);
		if (p[i] == ';') {
			size_t line = digits;
			i++;
			while (i < n && p[i] != '\r') {
				if (p[i] == '\n' || ++line > 4096)
					REF_ERR(HF_EINVAL);
				i++;
			}
		}
		int c = crlf(p, n, &i);
		if (c == 0)
			REF_MORE();
		if (c < 0)
			REF_ERR(HF_EINVAL);
		if (size > max_body || total + size > max_body)
			REF_ERR(HF_EBODY);
		if (size == 0) {
			ref_trailers(p, n, i, r);
			return;
		}
		size_t take = n - i < size ? n - i : (size_t)size;
		memcpy(r->out + r->out_len, p + i, take);
		r->out_len += take;
		i += take;
		total += take;
		if (take < size)
			REF_MORE();
		c = crlf(p, n, &i);
		if (c == 0)
			REF_MORE();
		if (c < 0)
			REF_ERR(HF_EINVAL);
	}
}

/* ---- Feeding http1.c. ---- */

struct sink {
	uint8_t *out;
	size_t len;
};

static void sink_data(void *arg, const char *p, size_t n)
{
	struct sink *s = arg;
	memcpy(s->out + s->len, p, n);
	s->len += n;
}

/* Feeds p[0..n) in pieces whose sizes come from seed (0: all at once). */
static void feed(const uint8_t *p, size_t n, uint64_t max_body, unsigned seed, struct ref *r)
{
	struct hf__h1_chunked c;
	memset(&c, 0, sizeof(c));
	struct sink s = {r->out, 0};
	size_t off = 0;
	r->rc = HF__H1_MORE;
	while (off < n) {
		size_t piece = n - off;
		if (seed) {
			seed = seed * 1103515245u + 12345u;
			size_t k = 1 + (seed >> 16) % 7;
			piece = piece < k ? piece : k;
		}
		size_t used = 0;
		int code = 0;
		const char *msg = NULL;
		int rc = hf__h1_chunked_feed(&c, (const char *)p + off, piece, &used, max_body,
		                             sink_data, &s, &code, &msg);
		if (rc == HF__H1_ERROR) {
			FUZZ_CHECK(msg && *msg, "chunked error without a message");
			r->rc = rc;
			r->code = code;
			r->out_len = s.len;
			return;
		}
		FUZZ_CHECK(used <= piece, "chunked used %zu of %zu", used, piece);
		if (rc == HF__H1_MORE)
			FUZZ_CHECK(used == piece, "more, yet %zu of %zu used", used, piece);
		off += used;
		if (rc == HF__H1_DONE) {
			r->rc = rc;
			r->used = off;
			break;
		}
	}
	r->out_len = s.len;
}

static void check_chunked(const uint8_t *p, size_t n, uint64_t max_body, unsigned seed)
{
	uint8_t *a = malloc(n + 1), *b = malloc(n + 1), *c = malloc(n + 1);
	FUZZ_CHECK(a && b && c, "out of memory");
	struct ref want = {.out = a}, whole = {.out = b}, pieces = {.out = c};
	ref_chunked(p, n, max_body, &want);
	feed(p, n, max_body, 0, &whole);
	feed(p, n, max_body, seed | 1, &pieces);
	const struct ref *got[2] = {&whole, &pieces};
	for (int k = 0; k < 2; k++) {
		FUZZ_CHECK(got[k]->rc == want.rc, "chunked (%s): result %d, reference %d",
		           k ? "pieces" : "whole", got[k]->rc, want.rc);
		if (want.rc == HF__H1_ERROR) {
			FUZZ_CHECK(got[k]->code == want.code, "chunked error %d, reference %d",
			           got[k]->code, want.code);
			continue;
		}
		if (want.rc == HF__H1_DONE)
			FUZZ_CHECK(got[k]->used == want.used, "chunked used %zu, reference %zu",
			           got[k]->used, want.used);
		FUZZ_CHECK(got[k]->out_len == want.out_len &&
		               memcmp(got[k]->out, want.out, want.out_len) == 0,
		           "chunked data differs (%zu bytes, reference %zu)", got[k]->out_len,
		           want.out_len);
	}
	free(a);
	free(b);
	free(c);
}

/* ---- The head. ---- */

static bool inside(uint32_t off, uint32_t len, size_t end)
{
	return (size_t)off + len <= end;
}

static void check_head(const char *p, size_t n, const struct hf__h1_head *h, size_t max)
{
	FUZZ_CHECK(h->len > 0 && h->len <= n && h->len <= max, "head length %zu of %zu", h->len, n);
	FUZZ_CHECK(hf__h1_head_end(p, h->len) == h->len, "head does not end at its length");
	FUZZ_CHECK(h->method_len > 0 && inside(h->method_off, h->method_len, h->len), "method");
	FUZZ_CHECK(inside(h->path_off, h->path_len, h->len), "path outside the head");
	FUZZ_CHECK(!h->has_query || inside(h->query_off, h->query_len, h->len), "query");
	FUZZ_CHECK(h->minor == 0 || h->minor == 1, "minor %d", h->minor);
	FUZZ_CHECK(h->n_fields <= HF__H1_FIELDS_MAX, "%u fields", h->n_fields);
	FUZZ_CHECK(h->content_length >= -1, "content length %lld", (long long)h->content_length);
	FUZZ_CHECK(!(h->chunked && h->content_length >= 0), "chunked with a Content-Length");
	FUZZ_CHECK(!(h->chunked && h->minor == 0), "chunked on HTTP/1.0");
	FUZZ_CHECK(h->method != HF__M_CONNECT, "CONNECT let through");
	for (unsigned i = 0; i < h->n_fields; i++) {
		const struct hf__h1_field *f = &h->fields[i];
		FUZZ_CHECK(f->name_len > 0 && inside(f->name, f->name_len, h->len) &&
		               inside(f->value, f->value_len, h->len),
		           "field %u outside the head", i);
		/* The delimiter after each string is where http.c writes its NUL: inside too. */
		FUZZ_CHECK(f->name + f->name_len < h->len && f->value + f->value_len < h->len,
		           "field %u has no delimiter after it", i);
		FUZZ_CHECK(p[f->name + f->name_len] == ':', "field %u's name does not end at ':'", i);
		for (uint32_t k = 0; k < f->name_len; k++) {
			char c = p[f->name + k];
			FUZZ_CHECK(c && strchr("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz"
			                       "ABCDEFGHIJKLMNOPQRSTUVWXYZ", c),
			           "field %u's name has a byte %#x that is no token's", i,
			           (unsigned)(unsigned char)c);
		}
		for (uint32_t k = 0; k < f->value_len; k++) {
			unsigned char c = (unsigned char)p[f->value + k];
			FUZZ_CHECK((c >= 0x20 || c == '\t') && c != 0x7f,
			           "field %u's value has a control byte %#x", i, (unsigned)c);
		}
	}
	for (int id = 0; id < HF__H_KNOWN; id++) {
		if (h->known[id] < 0)
			continue;
		FUZZ_CHECK((unsigned)h->known[id] < h->n_fields, "known %d out of range", id);
		const struct hf__h1_field *f = &h->fields[h->known[id]];
		FUZZ_CHECK(hf__h1_known(p + f->name, f->name_len) == id, "known %d misnamed", id);
	}
}

static void check_writer(const uint8_t *d, size_t n)
{
	char ctype[64], extra[128];
	size_t cl = n < sizeof(ctype) - 1 ? n : sizeof(ctype) - 1;
	for (size_t i = 0; i < cl; i++)
		ctype[i] = (char)(0x20 + d[i] % 0x5f); /* printable, as a handler's would be */
	ctype[cl] = '\0';
	size_t el = n > 20 ? 20 : n;
	memcpy(extra, "X-A: ", 5);
	memcpy(extra + 5, ctype, el);
	memcpy(extra + 5 + el, "\r\n", 2);
	uint64_t v = 0;
	for (size_t i = 0; i < n && i < 8; i++)
		v = v << 8 | d[i];
	struct hf__h1_answer a = {.status = n ? 100 + d[0] * 2 : 200,
	                          .ctype = n & 1 ? ctype : NULL,
	                          .date = "Mon, 30 Nov 2026 03:00:00 GMT",
	                          .content_length = n & 2 ? (int64_t)(v >> 1) : -1,
	                          .chunked = n & 4,
	                          .close = n & 8,
	                          .keep_alive = n & 16,
	                          .extra = n & 32 ? extra : NULL,
	                          .extra_len = n & 32 ? el + 7 : 0};
	size_t size = hf__h1_head_size(&a);
	char *out = malloc(size);
	FUZZ_CHECK(out, "out of memory");
	size_t len = hf__h1_write_head(out, &a);
	FUZZ_CHECK(len <= size, "answer head %zu bytes, room for %zu", len, size);
	FUZZ_CHECK(len >= 17 && memcmp(out, "HTTP/1.1 ", 9) == 0, "status line");
	FUZZ_CHECK(memcmp(out + len - 4, "\r\n\r\n", 4) == 0, "header block not ended");
	FUZZ_CHECK(hf__h1_head_end(out, len) == len, "answer head ends early");
	free(out);
	char num[24];
	size_t nl = hf__h1_u64(num, v);
	num[nl] = '\0';
	FUZZ_CHECK(strtoull(num, NULL, 10) == v, "decimal %s", num);
	nl = hf__h1_hex(num, v);
	num[nl] = '\0';
	FUZZ_CHECK(strtoull(num, NULL, 16) == v, "hex %s", num);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 2)
		return 0;
	size_t max_head = 16 + (size_t)data[0] * 64; /* 16 .. 16336 */
	uint64_t max_body = (uint64_t)data[1] * 256;
	unsigned seed = data[1];
	const char *p = (const char *)data + 2;
	size_t n = size - 2;
	static struct hf__h1_head h, h2;
	int rc = hf__h1_parse_head(p, n, max_head, &h);
	if (rc == HF__H1_MORE) {
		FUZZ_CHECK(n < max_head && hf__h1_head_end(p, n) == 0, "more, with a head there");
	} else if (rc == HF__H1_ERROR) {
		FUZZ_CHECK(h.err_code == HF_EINVAL || h.err_code == HF_ENOTSUP ||
		               h.err_code == HF_EMETHOD,
		           "refused with code %d", h.err_code);
		FUZZ_CHECK(h.err_msg[0], "refused without a message");
	} else {
		FUZZ_CHECK(rc == HF__H1_DONE, "parse returned %d", rc);
		check_head(p, n, &h, max_head);
		/* Deterministic, and no earlier end: the head alone parses the same, a prefix of
		 * it asks for more. */
		FUZZ_CHECK(hf__h1_parse_head(p, h.len, max_head, &h2) == HF__H1_DONE &&
		               h2.len == h.len && h2.n_fields == h.n_fields &&
		               h2.content_length == h.content_length,
		           "the head alone parses otherwise");
		FUZZ_CHECK(hf__h1_parse_head(p, h.len - 1, max_head, &h2) == HF__H1_MORE,
		           "a prefix of the head does not ask for more");
	}
	/* The body: decoded as chunked whatever the head said, so that every input exercises
	 * the decoder (after the head when there is one). */
	size_t body = rc == HF__H1_DONE ? h.len : 0;
	check_chunked(data + 2 + body, n - body, max_body, seed);
	check_writer(data, size > 64 ? 64 : size);
	return 0;
}
