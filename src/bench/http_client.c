/*
 * http_client.c — holdfast-bench's HTTP/1.1 client, lean enough that the bench measures the
 * server and not itself: a non-blocking socket on the worker's loop, each request written with
 * one send from a reusable buffer (the constant head built once), each answer parsed in place
 * in a reusable buffer (status line, Content-Length, chunked, Connection), keep-alive.
 */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "http_client.h"

#define IN_START (16 * 1024)
#define IN_MAX (64 * 1024 * 1024) /* an answer longer than this is nonsense here */
#define HEAD_MAX (64 * 1024)

struct hfb_http {
	struct event_base *base;
	struct sockaddr_storage addr;
	socklen_t addr_len;
	struct timeval timeout;
	int fd; /* -1: not connected */
	bool connecting;
	struct event *ev_read, *ev_write;
	/* the call in flight */
	bool busy;
	hfb_http_fn fn;
	void *arg;
	/* the request: " HTTP/1.1\r\nHost: ...\r\n...Content-Length: " after the path, built once */
	char tail[400]; /* a host of up to 255 characters fits */
	size_t tail_len;
	char *out;
	size_t out_len, out_off, out_cap;
	/* the answer as read so far, and what its head said */
	char *in;
	size_t in_len, in_cap;
	size_t scan;     /* where the search for the head's end resumes */
	size_t head_len; /* 0 until the head is complete */
	int status;
	long long clen; /* -1: no Content-Length */
	bool chunked, close;
};

struct hfb_http *hfb_http_new(struct event_base *base, const char *host, int port,
                              int timeout_s)
{
	struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai = NULL;
	char service[16];
	snprintf(service, sizeof(service), "%d", port);
	if (getaddrinfo(host, service, &hints, &ai) != 0 || !ai)
		return NULL;
	struct hfb_http *h = calloc(1, sizeof(*h));
	if (h) {
		memcpy(&h->addr, ai->ai_addr, ai->ai_addrlen);
		h->addr_len = ai->ai_addrlen;
		h->base = base;
		h->timeout.tv_sec = timeout_s;
		h->fd = -1;
		int n = snprintf(h->tail, sizeof(h->tail),
		                 " HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n"
		                 "Content-Length: ",
		                 host, port);
		h->tail_len = n > 0 && (size_t)n < sizeof(h->tail) ? (size_t)n : 0;
		h->in_cap = IN_START;
		h->in = malloc(h->in_cap);
	}
	freeaddrinfo(ai);
	if (h && (!h->in || !h->tail_len)) {
		hfb_http_free(h);
		return NULL;
	}
	return h;
}

static void disconnect(struct hfb_http *h)
{
	if (h->ev_read)
		event_free(h->ev_read);
	if (h->ev_write)
		event_free(h->ev_write);
	if (h->fd >= 0)
		close(h->fd);
	h->ev_read = h->ev_write = NULL;
	h->fd = -1;
	h->connecting = false;
}

void hfb_http_free(struct hfb_http *h)
{
	if (!h)
		return;
	disconnect(h);
	free(h->in);
	free(h->out);
	free(h);
}

static void reset_answer(struct hfb_http *h)
{
	h->in_len = h->scan = h->head_len = 0;
	h->status = 0;
	h->clen = -1;
	h->chunked = h->close = false;
}

/* The call ends without an answer (status 0); the connection is dropped. */
static void give_up(struct hfb_http *h)
{
	disconnect(h);
	reset_answer(h);
	if (!h->busy)
		return;
	h->busy = false;
	hfb_http_fn fn = h->fn;
	h->fn = NULL;
	fn(h->arg, 0, NULL, 0);
}

/* The call ends with its answer; the connection stays only if both sides may go on. */
static void finish(struct hfb_http *h, char *body, size_t len, size_t used)
{
	int status = h->status;
	if (h->close || used != h->in_len || h->out_off != h->out_len)
		disconnect(h);
	body[len] = '\0'; /* room: a read always leaves a byte free */
	reset_answer(h);
	h->busy = false;
	hfb_http_fn fn = h->fn;
	h->fn = NULL;
	fn(h->arg, status, body, len);
}

/* ---- the answer's head ---- */

/* The first CRLF (with `twice`: CRLFCRLF) in p[0..n), or NULL. */
static char *find_crlf(char *p, size_t n, bool twice)
{
	size_t need = twice ? 4 : 2;
	for (char *end = p + n; p && (size_t)(end - p) >= need; p++) {
		p = memchr(p, '\r', (size_t)(end - p));
		if (!p || (size_t)(end - p) < need)
			return NULL;
		if (p[1] == '\n' && (!twice || (p[2] == '\r' && p[3] == '\n')))
			return p;
	}
	return NULL;
}

/* Is `token` one of the comma-separated tokens of v[0..n)? (case-insensitive) */
static bool has_token(const char *v, size_t n, const char *token)
{
	size_t tl = strlen(token);
	for (size_t i = 0; i < n;) {
		while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
			i++;
		size_t j = i;
		while (j < n && v[j] != ',')
			j++;
		size_t e = j;
		while (e > i && (v[e - 1] == ' ' || v[e - 1] == '\t'))
			e--;
		if (e - i == tl && strncasecmp(v + i, token, tl) == 0)
			return true;
		i = j;
	}
	return false;
}

/* One header line (name: value); -1 if it breaks the framing. */
static int header(struct hfb_http *h, const char *line, size_t n, bool *keep_alive)
{
	const char *colon = memchr(line, ':', n);
	if (!colon)
		return 0;
	size_t nl = (size_t)(colon - line);
	const char *v = colon + 1, *end = line + n;
	while (v < end && (*v == ' ' || *v == '\t'))
		v++;
	size_t vl = (size_t)(end - v);
	if (nl == 14 && strncasecmp(line, "Content-Length", 14) == 0) {
		long long x = 0;
		size_t i = 0;
		for (; i < vl && v[i] >= '0' && v[i] <= '9' && x < IN_MAX; i++)
			x = x * 10 + (v[i] - '0');
		while (i < vl && (v[i] == ' ' || v[i] == '\t'))
			i++;
		if (i == 0 || i != vl || x >= IN_MAX || (h->clen >= 0 && h->clen != x))
			return -1;
		h->clen = x;
	} else if (nl == 17 && strncasecmp(line, "Transfer-Encoding", 17) == 0) {
		h->chunked = has_token(v, vl, "chunked");
	} else if (nl == 10 && strncasecmp(line, "Connection", 10) == 0) {
		h->close |= has_token(v, vl, "close");
		*keep_alive |= has_token(v, vl, "keep-alive");
	}
	return 0;
}

/* 1: the head is complete and read; 0: more to read; -1: not HTTP/1.x. */
static int parse_head(struct hfb_http *h)
{
	char *end = find_crlf(h->in + h->scan, h->in_len - h->scan, true);
	if (!end) {
		h->scan = h->in_len > 3 ? h->in_len - 3 : 0;
		return h->in_len > HEAD_MAX ? -1 : 0;
	}
	h->head_len = (size_t)(end - h->in) + 4;
	const char *p = h->in;
	if (strncmp(p, "HTTP/1.", 7) != 0 || (p[7] != '0' && p[7] != '1') || p[8] != ' ')
		return -1;
	for (int i = 9; i < 12; i++) {
		if (p[i] < '0' || p[i] > '9')
			return -1;
		h->status = h->status * 10 + (p[i] - '0');
	}
	if (p[12] != ' ' && p[12] != '\r')
		return -1;
	bool keep_alive = false;
	/* the status line's CRLF is found at the latest in the head's end */
	const char *line = (const char *)memchr(p, '\n', (size_t)(end + 2 - p)) + 1;
	while (line < end + 2) {
		const char *eol = memchr(line, '\r', (size_t)(end + 2 - line));
		if (header(h, line, (size_t)(eol - line), &keep_alive) != 0)
			return -1;
		line = eol + 2;
	}
	if (p[7] == '0' && !keep_alive)
		h->close = true; /* HTTP/1.0 closes unless it says otherwise */
	return 1;
}

/* ---- the answer's body ---- */

/* Chunked framing over b[0..avail): 1 and the data moved to b[0..*len) once the last chunk
 * (and trailers) are in, *used = framed bytes; 0: more to read; -1: broken. A first pass only
 * checks, so that an answer still incomplete is left as it was. */
static int dechunk(char *b, size_t avail, size_t *len, size_t *used)
{
	size_t pos = 0, out = 0;
	for (int pass = 0; pass < 2; pass++) {
		pos = out = 0;
		for (;;) {
			char *eol = find_crlf(b + pos, avail - pos, false);
			if (!eol)
				return 0;
			size_t size = 0, i = pos;
			int digits = 0;
			for (;; i++, digits++) {
				char ch = b[i];
				int d = ch >= '0' && ch <= '9'   ? ch - '0'
				        : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10
				        : ch >= 'A' && ch <= 'F' ? ch - 'A' + 10
				                                 : -1;
				if (d < 0)
					break;
				if (size >= IN_MAX)
					return -1;
				size = size * 16 + (size_t)d;
			}
			if (!digits || (b + i != eol && b[i] != ';' && b[i] != ' '))
				return -1;
			pos = (size_t)(eol - b) + 2;
			if (size == 0) { /* the last chunk: trailers up to an empty line */
				for (;;) {
					eol = find_crlf(b + pos, avail - pos, false);
					if (!eol)
						return 0;
					size_t l = (size_t)(eol - (b + pos));
					pos += l + 2;
					if (l == 0)
						break;
				}
				break;
			}
			if (avail - pos < size + 2)
				return 0;
			if (b[pos + size] != '\r' || b[pos + size + 1] != '\n')
				return -1;
			if (pass) /* out <= pos: what is still to be read lies above */
				memmove(b + out, b + pos, size);
			out += size;
			pos += size + 2;
		}
	}
	*len = out;
	*used = pos;
	return 1;
}

/* After each read: finishes the call if its answer is whole. */
static void parse(struct hfb_http *h)
{
	for (;;) {
		if (!h->head_len) {
			int rc = parse_head(h);
			if (rc <= 0) {
				if (rc < 0)
					give_up(h);
				return;
			}
		}
		if (h->status >= 200)
			break;
		/* an interim answer (100 Continue): the real one follows */
		size_t rest = h->in_len - h->head_len;
		memmove(h->in, h->in + h->head_len, rest);
		reset_answer(h);
		h->in_len = rest;
	}
	char *b = h->in + h->head_len;
	size_t avail = h->in_len - h->head_len, len, used;
	if (h->status == 204 || h->status == 304) {
		finish(h, b, 0, h->head_len);
	} else if (h->chunked) {
		int rc = dechunk(b, avail, &len, &used);
		if (rc < 0)
			give_up(h);
		else if (rc > 0)
			finish(h, b, len, h->head_len + used);
	} else if (h->clen >= 0 && avail >= (size_t)h->clen) {
		finish(h, b, (size_t)h->clen, h->head_len + (size_t)h->clen);
	} /* else: more to read, or a body that runs to the close */
}

/* The server closed: the end of a body without length, else the call's end. */
static void closed(struct hfb_http *h)
{
	if (h->busy && h->head_len && h->status >= 200 && !h->chunked && h->clen < 0) {
		h->close = true;
		finish(h, h->in + h->head_len, h->in_len - h->head_len, h->in_len);
		return;
	}
	give_up(h);
}

static void on_read(evutil_socket_t fd, short what, void *arg)
{
	struct hfb_http *h = arg;
	if (what & EV_TIMEOUT) { /* the call's timeout; between calls a connection may idle */
		if (h->busy)
			give_up(h);
		return;
	}
	if (h->in_cap - h->in_len < 4096) {
		char *p = h->in_cap < IN_MAX ? realloc(h->in, h->in_cap * 2) : NULL;
		if (!p) {
			give_up(h);
			return;
		}
		h->in = p;
		h->in_cap *= 2;
	}
	ssize_t n = recv(fd, h->in + h->in_len, h->in_cap - h->in_len - 1, 0);
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
		return;
	if (n == 0) {
		closed(h);
		return;
	}
	if (n < 0 || !h->busy) { /* a broken connection, or bytes nobody asked for */
		give_up(h);
		return;
	}
	h->in_len += (size_t)n;
	parse(h);
}

/* Writes what remains of the request; waits for the socket if it is full. -1: broken. */
static int flush(struct hfb_http *h)
{
	while (h->out_off < h->out_len) {
		ssize_t n = send(h->fd, h->out + h->out_off, h->out_len - h->out_off, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return event_add(h->ev_write, &h->timeout);
		if (n < 0)
			return -1;
		h->out_off += (size_t)n;
	}
	return 0;
}

static void on_write(evutil_socket_t fd, short what, void *arg)
{
	struct hfb_http *h = arg;
	int err = 0;
	socklen_t sl = sizeof(err);
	if (what & EV_TIMEOUT) {
		give_up(h);
		return;
	}
	if (h->connecting) {
		if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &sl) != 0 || err != 0) {
			give_up(h);
			return;
		}
		h->connecting = false;
	}
	if (flush(h) != 0)
		give_up(h);
}

static int connect_start(struct hfb_http *h)
{
	h->fd = socket(h->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (h->fd < 0)
		return -1;
	/* each request is one send: nothing to coalesce, and nothing may wait for an ACK */
	int one = 1;
	setsockopt(h->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	h->ev_read = event_new(h->base, h->fd, EV_READ | EV_PERSIST, on_read, h);
	h->ev_write = event_new(h->base, h->fd, EV_WRITE, on_write, h);
	if (!h->ev_read || !h->ev_write)
		return -1;
	if (connect(h->fd, (struct sockaddr *)&h->addr, h->addr_len) == 0)
		return 0;
	if (errno != EINPROGRESS)
		return -1;
	h->connecting = true;
	return event_add(h->ev_write, &h->timeout);
}

/* Writes n in decimal at p; the number of characters. */
static size_t put_size(char *p, size_t n)
{
	char tmp[24];
	size_t k = 0;
	do
		tmp[k++] = (char)('0' + n % 10);
	while ((n /= 10));
	for (size_t i = 0; i < k; i++)
		p[i] = tmp[k - 1 - i];
	return k;
}

int hfb_http_post(struct hfb_http *h, const char *path, size_t path_len, const char *body,
                  size_t body_len, hfb_http_fn fn, void *arg)
{
	if (h->busy)
		return -1;
	size_t need = 5 + path_len + h->tail_len + 24 + body_len;
	if (need > h->out_cap) {
		char *p = realloc(h->out, need);
		if (!p)
			return -1;
		h->out = p;
		h->out_cap = need;
	}
	char *p = h->out;
	memcpy(p, "POST ", 5);
	p += 5;
	memcpy(p, path, path_len);
	p += path_len;
	memcpy(p, h->tail, h->tail_len);
	p += h->tail_len;
	p += put_size(p, body_len);
	memcpy(p, "\r\n\r\n", 4);
	p += 4;
	memcpy(p, body, body_len);
	h->out_len = (size_t)(p - h->out) + body_len;
	h->out_off = 0;
	reset_answer(h);
	if (h->fd < 0 && connect_start(h) != 0) {
		disconnect(h);
		return -1;
	}
	/* (re)armed per call: the timeout counts from the sending */
	if (event_add(h->ev_read, &h->timeout) != 0 || (!h->connecting && flush(h) != 0)) {
		disconnect(h);
		return -1;
	}
	h->busy = true;
	h->fn = fn;
	h->arg = arg;
	return 0;
}
