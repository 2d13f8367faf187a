/*
 * http1.h — holdfastd's HTTP/1.1 wire format, as pure functions over bytes (no sockets, no
 * libevent): the request head parser, the chunked body decoder and the answer head writer.
 * http.c runs them over each connection's input; tests/fuzz/fuzz_http1.c feeds them directly.
 */
#ifndef HF_SERVER_HTTP1_H
#define HF_SERVER_HTTP1_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The methods routes know; anything else that is a token is HF__M_OTHER (405 or 404). */
enum hf__method {
	HF__M_OTHER = 0,
	HF__M_GET,
	HF__M_HEAD,
	HF__M_POST,
	HF__M_PUT,
	HF__M_DELETE,
	HF__M_OPTIONS,
	HF__M_TRACE,
	HF__M_CONNECT,
	HF__M_PATCH,
};

/* The headers holdfastd looks at, recognised while parsing: no lookup scans a list. */
enum hf__hdr {
	HF__H_AUTHORIZATION = 0,
	HF__H_IDEMPOTENCY_KEY,
	HF__H_CONTENT_TYPE,
	HF__H_X_REQUEST_ID,
	HF__H_HOST,
	HF__H_ACCEPT,
	HF__H_LAST_EVENT_ID,
	HF__H_IF_MATCH,
	HF__H_IF_NONE_MATCH,
	HF__H_KNOWN, /* how many */
};

/* A field's name and value as offsets into the head's bytes. 32 bits: a head is at most
 * --max-headers long, far below 4 GiB. */
struct hf__h1_field {
	uint32_t name, name_len, value, value_len;
};

/* A request head has at most this many header lines; more is refused (400). 64 is four
 * times what any client of ours sends, and the array stays a stack object. */
#define HF__H1_FIELDS_MAX 64

struct hf__h1_head {
	size_t len;                 /* bytes of the head, its final empty line included */
	enum hf__method method;
	uint32_t method_off, method_len;
	uint32_t path_off, path_len;   /* raw (percent-encoded) path; absolute-form cut to it */
	uint32_t query_off, query_len; /* after '?'; query_len 0 and query_off 0 when none */
	bool has_query;
	int minor;                  /* HTTP/1.<minor>: 0 or 1 */
	int64_t content_length;     /* -1: none */
	bool chunked;               /* Transfer-Encoding: chunked */
	bool conn_close;            /* Connection: close */
	bool conn_keep_alive;       /* Connection: keep-alive (matters for HTTP/1.0) */
	bool expect_continue;       /* Expect: 100-continue */
	int8_t known[HF__H_KNOWN];  /* index in fields of the first such header, -1 if none */
	unsigned n_fields;
	struct hf__h1_field fields[HF__H1_FIELDS_MAX];
	/* On a refusal: what to answer. */
	int err_code;               /* HF_E* */
	char err_msg[128];
};

/* Parse results. */
enum { HF__H1_ERROR = -1, HF__H1_MORE = 0, HF__H1_DONE = 1 };

/*
 * Parses a request head from p[0..n): the request line and the header lines up to the empty
 * line. HF__H1_DONE: h describes it (h->len bytes). HF__H1_MORE: no empty line yet and fewer
 * than max_head bytes seen. HF__H1_ERROR: refused, h->err_code and h->err_msg say why (the
 * connection is to be closed after the answer: its framing cannot be trusted). The framing
 * rules live here, once: one decimal Content-Length or none, Transfer-Encoding only
 * "chunked", only on HTTP/1.1 and never with Content-Length, CONNECT refused.
 * Leading empty lines are the caller's to skip (RFC 9112 2.2).
 */
int hf__h1_parse_head(const char *p, size_t n, size_t max_head, struct hf__h1_head *h);

/* Where a head ends in p[0..n): the index just past the LF of its empty line, 0 if it is not
 * there. For searching input as it arrives, before parsing it once whole. */
size_t hf__h1_head_end(const char *p, size_t n);

/* The id of a header name (any case), or -1 if it is none of enum hf__hdr. */
int hf__h1_known(const char *name, size_t len);

/* A chunked body being decoded (RFC 9112 7.1), fed in pieces as they arrive. Chunk
 * extensions and trailer fields are read and dropped; lines must end in CRLF. */
struct hf__h1_chunked {
	int state;
	uint64_t left;   /* data bytes left of the chunk, or digits/extension bytes seen */
	uint64_t total;  /* data bytes so far */
	uint32_t line;   /* bytes of the current size or trailer line */
	uint32_t trailer; /* bytes of trailers so far */
};

/*
 * Feeds p[0..n). Data bytes go to data(arg, ...) as they are found. Returns HF__H1_MORE
 * (all n bytes used), HF__H1_DONE (the body ended after *used bytes; the rest is the next
 * request's), or HF__H1_ERROR with *err_code (HF_EINVAL malformed, HF_EBODY more than
 * max_body data bytes) and *err_msg (a constant string).
 */
int hf__h1_chunked_feed(struct hf__h1_chunked *c, const char *p, size_t n, size_t *used,
                        uint64_t max_body, void (*data)(void *arg, const char *p, size_t n),
                        void *arg, int *err_code, const char **err_msg);

/* An answer's head, as http.c hands it to the writer. */
struct hf__h1_answer {
	int status;
	const char *ctype;       /* NULL: no Content-Type */
	const char *date;        /* the Date value (29 bytes) */
	int64_t content_length;  /* -1: none (a stream) */
	bool chunked;            /* Transfer-Encoding: chunked */
	bool close;              /* Connection: close */
	bool keep_alive;         /* Connection: keep-alive (an HTTP/1.0 client that asked) */
	const char *extra;       /* more header lines, each "Name: value\r\n"; may be NULL */
	size_t extra_len;
};

/* Bytes hf__h1_write_head needs at most for a. */
size_t hf__h1_head_size(const struct hf__h1_answer *a);
/* Writes the status line and header block (through the empty line) into out, which has at
 * least hf__h1_head_size(a) bytes; returns the length. memcpy and our own digits: no printf. */
size_t hf__h1_write_head(char *out, const struct hf__h1_answer *a);
/* Writes v in decimal into out (at least 20 bytes); returns the length. */
size_t hf__h1_u64(char *out, uint64_t v);
/* Writes v in lowercase hex into out (at least 16 bytes); returns the length. */
size_t hf__h1_hex(char *out, uint64_t v);

#endif /* HF_SERVER_HTTP1_H */
