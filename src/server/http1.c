/*
 * http1.c — holdfastd's HTTP/1.1 wire format (http1.h): the request head parser with the
 * framing rules, the chunked body decoder, and the answer head writer. Pure functions over
 * bytes: the connection side is http.c's, the fuzz target tests/fuzz/fuzz_http1.c.
 */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "holdfast.h"
#include "server/http1.h"

/* RFC 9110 5.6.2: the bytes of a token (method, header name): ALPHA, DIGIT and
 * !#$%&'*+-.^_`|~, one bit per byte value (every header name byte is tested). */
static bool is_tchar(unsigned char c)
{
	static const uint32_t bits[8] = {0x00000000, 0x03ff6cfa, 0xc7fffffe, 0x57ffffff,
	                                 0x00000000, 0x00000000, 0x00000000, 0x00000000};
	return (bits[c >> 5] >> (c & 31)) & 1;
}

/* Header ids past the public ones: the framing headers, which the parser consumes. */
enum { H_CONTENT_LENGTH = 100, H_TRANSFER_ENCODING, H_CONNECTION, H_EXPECT };

/* The header names we act on, by length: a name is compared with at most three. */
static int known_id(const char *name, size_t len)
{
	static const struct {
		const char *name;
		int id;
	} by_len[18][3] = {
		[4] = {{"host", HF__H_HOST}},
		[6] = {{"accept", HF__H_ACCEPT}, {"expect", H_EXPECT}},
		[8] = {{"if-match", HF__H_IF_MATCH}},
		[10] = {{"connection", H_CONNECTION}},
		[12] = {{"content-type", HF__H_CONTENT_TYPE}, {"x-request-id", HF__H_X_REQUEST_ID}},
		[13] = {{"authorization", HF__H_AUTHORIZATION},
		        {"last-event-id", HF__H_LAST_EVENT_ID},
		        {"if-none-match", HF__H_IF_NONE_MATCH}},
		[14] = {{"content-length", H_CONTENT_LENGTH}},
		[15] = {{"idempotency-key", HF__H_IDEMPOTENCY_KEY}},
		[17] = {{"transfer-encoding", H_TRANSFER_ENCODING}},
	};
	if (len >= 18)
		return -1;
	for (int i = 0; i < 3 && by_len[len][i].name; i++)
		if (strncasecmp(by_len[len][i].name, name, len) == 0)
			return by_len[len][i].id;
	return -1;
}

int hf__h1_known(const char *name, size_t len)
{
	int id = known_id(name, len);
	return id >= 0 && id < HF__H_KNOWN ? id : -1;
}

static enum hf__method method_id(const char *m, size_t len)
{
	static const struct {
		const char *name;
		enum hf__method id;
	} methods[] = {
		{"GET", HF__M_GET},         {"POST", HF__M_POST},   {"HEAD", HF__M_HEAD},
		{"PUT", HF__M_PUT},         {"DELETE", HF__M_DELETE}, {"OPTIONS", HF__M_OPTIONS},
		{"TRACE", HF__M_TRACE},     {"CONNECT", HF__M_CONNECT}, {"PATCH", HF__M_PATCH},
	};
	/* Methods are case-sensitive (RFC 9110 9.1): "get" is another, unknown method. */
	for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++)
		if (strncmp(methods[i].name, m, len) == 0 && methods[i].name[len] == '\0')
			return methods[i].id;
	return HF__M_OTHER;
}

/* Lines end in CRLF or a bare LF (as libevent accepted); a bare CR is caught by the parse. */
size_t hf__h1_head_end(const char *p, size_t n)
{
	/* From line end to line end with memchr (vectorised): a head is a few hundred bytes
	 * and a dozen lines, read once per request. */
	const char *end = p + n, *lf = p;
	while ((lf = memchr(lf, '\n', (size_t)(end - lf))) != NULL) {
		lf++;
		if (lf < end && *lf == '\n')
			return (size_t)(lf + 1 - p);
		if (lf + 1 < end && lf[0] == '\r' && lf[1] == '\n')
			return (size_t)(lf + 2 - p);
	}
	return 0;
}

static int refuse(struct hf__h1_head *h, int code, const char *fmt, const char *s, size_t len)
{
	h->err_code = code;
	snprintf(h->err_msg, sizeof(h->err_msg), fmt, (int)(len > 32 ? 32 : len), s);
	return HF__H1_ERROR;
}

/* Bytes of p[0..n) before its first CR or LF. */
static size_t line_len(const char *p, size_t n)
{
	size_t i = 0;
	while (i < n && p[i] != '\r' && p[i] != '\n')
		i++;
	return i;
}

static bool lower_equal(const char *s, size_t len, const char *lit)
{
	return strlen(lit) == len && strncasecmp(s, lit, len) == 0;
}

/* Connection: a comma-separated list of tokens. */
static void connection_tokens(struct hf__h1_head *h, const char *v, size_t len)
{
	size_t i = 0;
	while (i < len) {
		while (i < len && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
			i++;
		size_t s = i;
		while (i < len && v[i] != ',' && v[i] != ' ' && v[i] != '\t')
			i++;
		if (lower_equal(v + s, i - s, "close"))
			h->conn_close = true;
		else if (lower_equal(v + s, i - s, "keep-alive"))
			h->conn_keep_alive = true;
	}
}

/* One header field the parser acts on; returns HF__H1_ERROR when it refuses. */
static int field_seen(struct hf__h1_head *h, const char *p, const struct hf__h1_field *f)
{
	const char *v = p + f->value;
	size_t vl = f->value_len;
	int id = known_id(p + f->name, f->name_len);
	if (id < 0)
		return HF__H1_DONE;
	if (id < HF__H_KNOWN) {
		if (h->known[id] < 0)
			h->known[id] = (int8_t)h->n_fields;
		return HF__H1_DONE;
	}
	switch (id) {
	case H_CONTENT_LENGTH: {
		/* Exactly one, plain digits: "+2", "0x2", "2,2" or a second header are how a proxy
		 * and we could disagree on where a body ends (request smuggling). */
		if (h->content_length >= 0)
			return refuse(h, HF_EINVAL, "more than one Content-Length header%.*s", "", 0);
		if (vl == 0 || vl > 18)
			return refuse(h, HF_EINVAL, "Content-Length '%.*s' is not a decimal number", v, vl);
		int64_t n = 0;
		for (size_t i = 0; i < vl; i++) {
			if (v[i] < '0' || v[i] > '9')
				return refuse(h, HF_EINVAL, "Content-Length '%.*s' is not a decimal number", v,
				              vl);
			n = n * 10 + (v[i] - '0');
		}
		h->content_length = n;
		break;
	}
	case H_TRANSFER_ENCODING:
		/* Only "chunked", alone: a coding we do not decode leaves the body's end unknown. */
		if (h->chunked)
			return refuse(h, HF_EINVAL, "more than one Transfer-Encoding header%.*s", "", 0);
		if (!lower_equal(v, vl, "chunked"))
			return refuse(h, HF_ENOTSUP,
			              "Transfer-Encoding '%.*s' is not supported: only chunked", v, vl);
		h->chunked = true;
		break;
	case H_CONNECTION:
		connection_tokens(h, v, vl);
		break;
	case H_EXPECT:
		if (lower_equal(v, vl, "100-continue"))
			h->expect_continue = true;
		break;
	}
	return HF__H1_DONE;
}

/* The request line: method, target (split into path and query), version. Returns the index
 * just past its line end, 0 when refused. */
static size_t request_line(const char *p, size_t end, struct hf__h1_head *h)
{
	size_t i = 0;
	while (i < end && is_tchar((unsigned char)p[i]))
		i++;
	if (i == 0 || i > 32 || i >= end || p[i] != ' ')
		return refuse(h, HF_EINVAL, "malformed request line%.*s", "", 0), 0;
	h->method_off = 0;
	h->method_len = (uint32_t)i;
	h->method = method_id(p, i);
	size_t t = ++i;
	while (i < end && (unsigned char)p[i] > 0x20 && (unsigned char)p[i] < 0x7f)
		i++;
	if (i == t || i >= end || p[i] != ' ')
		return refuse(h, HF_EINVAL, "malformed request line (the target must be printable "
		                            "ASCII)%.*s", "", 0), 0;
	size_t tend = i++;
	if (end - i < 9 || memcmp(p + i, "HTTP/1.", 7) != 0 || (p[i + 7] != '0' && p[i + 7] != '1'))
		return refuse(h, HF_EINVAL, "HTTP version '%.*s' is not supported: HTTP/1.0 or 1.1",
		              p + i, line_len(p + i, end - i)), 0;
	h->minor = p[i + 7] - '0';
	i += 8;
	if (p[i] == '\r')
		i++;
	if (i >= end || p[i] != '\n')
		return refuse(h, HF_EINVAL, "malformed request line%.*s", "", 0), 0;
	/* Absolute form (RFC 9112 3.2.2): what follows the authority is the path. */
	size_t ps = t;
	if (tend - t > 7 && (strncasecmp(p + t, "http://", 7) == 0 ||
	                     (tend - t > 8 && strncasecmp(p + t, "https://", 8) == 0))) {
		ps = t + (p[t + 4] == ':' ? 7 : 8);
		while (ps < tend && p[ps] != '/' && p[ps] != '?')
			ps++;
	}
	size_t q = ps;
	while (q < tend && p[q] != '?')
		q++;
	h->path_off = (uint32_t)ps;
	h->path_len = (uint32_t)(q - ps);
	if (q < tend) {
		h->has_query = true;
		h->query_off = (uint32_t)(q + 1);
		h->query_len = (uint32_t)(tend - q - 1);
	}
	return i + 1;
}

/* What a header value's bytes are: 0 a value byte (HTAB and obs-text included), 1 its
 * end (CR, LF), 2 refused (the other controls, DEL). */
static const uint8_t value_class[256] = {
	[0x00] = 2, [0x01] = 2, [0x02] = 2, [0x03] = 2, [0x04] = 2, [0x05] = 2, [0x06] = 2,
	[0x07] = 2, [0x08] = 2, [0x0a] = 1, [0x0b] = 2, [0x0c] = 2, [0x0d] = 1, [0x0e] = 2,
	[0x0f] = 2, [0x10] = 2, [0x11] = 2, [0x12] = 2, [0x13] = 2, [0x14] = 2, [0x15] = 2,
	[0x16] = 2, [0x17] = 2, [0x18] = 2, [0x19] = 2, [0x1a] = 2, [0x1b] = 2, [0x1c] = 2,
	[0x1d] = 2, [0x1e] = 2, [0x1f] = 2, [0x7f] = 2,
};

/* One header line at p[i..end): appended to h->fields. Returns the index past it, 0 when
 * refused. */
static size_t header_line(const char *p, size_t i, size_t end, struct hf__h1_head *h)
{
	if (p[i] == ' ' || p[i] == '\t')
		return refuse(h, HF_EINVAL, "obsolete line folding in the headers%.*s", "", 0), 0;
	size_t ns = i;
	while (i < end && is_tchar((unsigned char)p[i]))
		i++;
	if (i == ns || i >= end || p[i] != ':')
		return refuse(h, HF_EINVAL, "malformed header line '%.*s'", p + ns,
		              line_len(p + ns, end - ns)), 0;
	size_t nl = i - ns;
	i++;
	while (i < end && (p[i] == ' ' || p[i] == '\t'))
		i++;
	size_t vs = i;
	/* A value runs to CR or LF (class 1); other control bytes (class 2) are refused. One
	 * table load per byte: values are most of a head's bytes. */
	while (i < end && value_class[(unsigned char)p[i]] == 0)
		i++;
	if (i < end && value_class[(unsigned char)p[i]] == 2)
		return refuse(h, HF_EINVAL, "header '%.*s' has a control byte in its value", p + ns,
		              nl), 0;
	size_t ve = i;
	while (ve > vs && (p[ve - 1] == ' ' || p[ve - 1] == '\t'))
		ve--;
	if (i < end && p[i] == '\r')
		i++;
	if (i >= end || p[i] != '\n')
		return refuse(h, HF_EINVAL, "header '%.*s' ends in a bare CR", p + ns, nl), 0;
	if (h->n_fields >= HF__H1_FIELDS_MAX)
		return refuse(h, HF_EINVAL, "more than 64 header lines%.*s", "", 0), 0;
	struct hf__h1_field *f = &h->fields[h->n_fields];
	f->name = (uint32_t)ns;
	f->name_len = (uint32_t)nl;
	f->value = (uint32_t)vs;
	f->value_len = (uint32_t)(ve - vs);
	if (field_seen(h, p, f) == HF__H1_ERROR)
		return 0;
	h->n_fields++;
	return i + 1;
}

int hf__h1_parse_head(const char *p, size_t n, size_t max_head, struct hf__h1_head *h)
{
	h->len = 0;
	h->method = HF__M_OTHER;
	h->method_off = h->method_len = 0;
	h->path_off = h->path_len = h->query_off = h->query_len = 0;
	h->has_query = false;
	h->minor = 1;
	h->content_length = -1;
	h->chunked = h->conn_close = h->conn_keep_alive = h->expect_continue = false;
	memset(h->known, -1, sizeof(h->known));
	h->n_fields = 0;
	h->err_code = 0;
	h->err_msg[0] = '\0';
	if (max_head > UINT32_MAX / 2)
		max_head = UINT32_MAX / 2;
	size_t end = hf__h1_head_end(p, n < max_head ? n : max_head);
	if (!end) {
		if (n < max_head)
			return HF__H1_MORE;
		h->err_code = HF_EINVAL;
		snprintf(h->err_msg, sizeof(h->err_msg),
		         "request headers exceed %zu bytes (--max-headers)", max_head);
		return HF__H1_ERROR;
	}
	size_t i = request_line(p, end, h);
	if (!i)
		return HF__H1_ERROR;
	/* head_end found the first empty line: every line before it is a header line. */
	while (i < end && p[i] != '\n' && !(p[i] == '\r' && i + 1 < end && p[i + 1] == '\n')) {
		i = header_line(p, i, end, h);
		if (!i)
			return HF__H1_ERROR;
	}
	h->len = end;
	if (h->chunked && h->content_length >= 0)
		return refuse(h, HF_EINVAL, "both Content-Length and Transfer-Encoding%.*s", "", 0);
	if (h->chunked && h->minor == 0)
		return refuse(h, HF_EINVAL, "Transfer-Encoding in an HTTP/1.0 request%.*s", "", 0);
	if (h->method == HF__M_CONNECT)
		return refuse(h, HF_EMETHOD, "CONNECT is not allowed: this is no proxy%.*s", "", 0);
	return HF__H1_DONE;
}

/* ---- Chunked bodies. ------------------------------------------------------------------ */

enum {
	C_SIZE = 0, /* first hex digit of a size line */
	C_SIZE_MORE,
	C_EXT,      /* a chunk extension: read to the CR, dropped */
	C_SIZE_LF,
	C_DATA,
	C_DATA_CR,
	C_DATA_LF,
	C_TRAILER_START, /* a trailer line or the final CRLF */
	C_TRAILER,
	C_TRAILER_LF,
	C_END_LF,
	C_DONE,
};

/* Bounds on what is read and dropped: a size line with its extensions, all trailers. */
#define CHUNK_LINE_MAX 4096
#define CHUNK_TRAILERS_MAX 8192

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int hf__h1_chunked_feed(struct hf__h1_chunked *c, const char *p, size_t n, size_t *used,
                        uint64_t max_body, void (*data)(void *arg, const char *p, size_t n),
                        void *arg, int *err_code, const char **err_msg)
{
	size_t i = 0;
	*err_code = HF_EINVAL;
	while (i < n && c->state != C_DONE) {
		char ch = p[i];
		int d;
		switch (c->state) {
		case C_SIZE:
		case C_SIZE_MORE:
			d = hexval(ch);
			if (d >= 0) {
				if (++c->line > 15) {
					*err_msg = "chunk size is too long";
					return HF__H1_ERROR;
				}
				c->left = c->left * 16 + (uint64_t)d;
				c->state = C_SIZE_MORE;
			} else if (c->state == C_SIZE_MORE && ch == ';') {
				c->state = C_EXT;
			} else if (c->state == C_SIZE_MORE && ch == '\r') {
				c->state = C_SIZE_LF;
			} else {
				*err_msg = "chunk size is not hexadecimal";
				return HF__H1_ERROR;
			}
			i++;
			break;
		case C_EXT:
			if (ch == '\r')
				c->state = C_SIZE_LF;
			else if (ch == '\n' || ++c->line > CHUNK_LINE_MAX) {
				*err_msg = "malformed chunk extension";
				return HF__H1_ERROR;
			}
			i++;
			break;
		case C_SIZE_LF:
			if (ch != '\n') {
				*err_msg = "chunk size line does not end in CRLF";
				return HF__H1_ERROR;
			}
			i++;
			c->line = 0;
			if (c->left > max_body || c->total + c->left > max_body) {
				*err_code = HF_EBODY;
				*err_msg = "chunked request body is larger than --max-body";
				return HF__H1_ERROR;
			}
			c->state = c->left ? C_DATA : C_TRAILER_START;
			break;
		case C_DATA: {
			size_t take = n - i < c->left ? n - i : (size_t)c->left;
			if (data)
				data(arg, p + i, take);
			i += take;
			c->left -= take;
			c->total += take;
			if (!c->left)
				c->state = C_DATA_CR;
			break;
		}
		case C_DATA_CR:
		case C_DATA_LF:
			if (ch != (c->state == C_DATA_CR ? '\r' : '\n')) {
				*err_msg = "chunk data does not end in CRLF";
				return HF__H1_ERROR;
			}
			c->state = c->state == C_DATA_CR ? C_DATA_LF : C_SIZE;
			i++;
			break;
		case C_TRAILER_START:
			c->state = ch == '\r' ? C_END_LF : C_TRAILER;
			if (ch == '\n') {
				*err_msg = "chunked trailer does not end in CRLF";
				return HF__H1_ERROR;
			}
			if (ch != '\r' && ++c->trailer > CHUNK_TRAILERS_MAX) {
				*err_msg = "chunked trailers are too long";
				return HF__H1_ERROR;
			}
			i++;
			break;
		case C_TRAILER:
			if (ch == '\r')
				c->state = C_TRAILER_LF;
			else if (ch == '\n' || ++c->trailer > CHUNK_TRAILERS_MAX) {
				*err_msg = "malformed chunked trailer";
				return HF__H1_ERROR;
			}
			i++;
			break;
		case C_TRAILER_LF:
		case C_END_LF:
			if (ch != '\n') {
				*err_msg = "chunked trailer does not end in CRLF";
				return HF__H1_ERROR;
			}
			c->state = c->state == C_END_LF ? C_DONE : C_TRAILER_START;
			i++;
			break;
		}
	}
	*used = i;
	if (c->state == C_DONE)
		return HF__H1_DONE;
	return HF__H1_MORE;
}

/* ---- Answers. ----------------------------------------------------------------------- */

static const char *reason(int status)
{
	switch (status) {
	case 100: return "Continue";
	case 200: return "OK";
	case 201: return "Created";
	case 202: return "Accepted";
	case 204: return "No Content";
	case 304: return "Not Modified";
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 409: return "Conflict";
	case 410: return "Gone";
	case 412: return "Precondition Failed";
	case 413: return "Content Too Large";
	case 422: return "Unprocessable Content";
	case 429: return "Too Many Requests";
	case 500: return "Internal Server Error";
	case 501: return "Not Implemented";
	case 502: return "Bad Gateway";
	case 503: return "Service Unavailable";
	}
	return "Status";
}

size_t hf__h1_u64(char *out, uint64_t v)
{
	char tmp[20];
	size_t n = 0;
	do {
		tmp[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	for (size_t i = 0; i < n; i++)
		out[i] = tmp[n - 1 - i];
	return n;
}

size_t hf__h1_hex(char *out, uint64_t v)
{
	static const char digits[] = "0123456789abcdef";
	char tmp[16];
	size_t n = 0;
	do {
		tmp[n++] = digits[v & 15];
		v >>= 4;
	} while (v);
	for (size_t i = 0; i < n; i++)
		out[i] = tmp[n - 1 - i];
	return n;
}

size_t hf__h1_head_size(const struct hf__h1_answer *a)
{
	/* Status line, Date, Content-Length, Transfer-Encoding, Connection and the final
	 * CRLF fit in 256; the rest is the caller's strings. */
	return 256 + (a->ctype ? strlen(a->ctype) + 16 : 0) + a->extra_len;
}

#define PUT(lit) (memcpy(o, lit, sizeof(lit) - 1), o += sizeof(lit) - 1)

size_t hf__h1_write_head(char *out, const struct hf__h1_answer *a)
{
	char *o = out;
	int st = a->status >= 100 && a->status <= 999 ? a->status : 500;
	PUT("HTTP/1.1 ");
	*o++ = (char)('0' + st / 100);
	*o++ = (char)('0' + st / 10 % 10);
	*o++ = (char)('0' + st % 10);
	*o++ = ' ';
	const char *r = reason(st);
	size_t rl = strlen(r);
	memcpy(o, r, rl);
	o += rl;
	PUT("\r\n");
	if (a->ctype) {
		size_t cl = strlen(a->ctype);
		PUT("Content-Type: ");
		memcpy(o, a->ctype, cl);
		o += cl;
		PUT("\r\n");
	}
	if (a->date) {
		PUT("Date: ");
		size_t dl = strnlen(a->date, 40);
		memcpy(o, a->date, dl);
		o += dl;
		PUT("\r\n");
	}
	if (a->content_length >= 0) {
		PUT("Content-Length: ");
		o += hf__h1_u64(o, (uint64_t)a->content_length);
		PUT("\r\n");
	}
	if (a->chunked)
		PUT("Transfer-Encoding: chunked\r\n");
	if (a->close)
		PUT("Connection: close\r\n");
	else if (a->keep_alive)
		PUT("Connection: keep-alive\r\n");
	if (a->extra_len) {
		memcpy(o, a->extra, a->extra_len);
		o += a->extra_len;
	}
	PUT("\r\n");
	return (size_t)(o - out);
}
