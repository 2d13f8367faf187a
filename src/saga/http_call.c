/*
 * http_call.c — the HTTP calls of saga steps: one blocking HTTP/1.1 request per attempt on
 * the orchestrator's thread, with a deadline and a stop flag checked while it waits.
 *
 * Why not the http:// engine's libevent client (src/engine/http.c): that client is bound to
 * one holdfastd and its own event-loop thread; a saga step is one call to any URL from a
 * thread that may block, so a small poll()-based client with a hard deadline is simpler and
 * cannot hang (every wait is bounded by the deadline).
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/core.h"
#include "saga/saga.h"

#define REPLY_MAX (1024 * 1024) /* a longer reply fails the attempt */
#define SLICE_MS 100            /* how often a wait looks at the stop flag */

int64_t hf__mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void hf__http_result_clear(struct hf__http_result *res)
{
	free(res->body);
	memset(res, 0, sizeof(*res));
}

struct url {
	char host[256];
	char port[8];
	const char *path;
};

static int parse_url(const char *u, struct url *out, hf_error *err)
{
	if (strncmp(u, "http://", 7) != 0)
		return hf__err(err, HF_EINVAL, "url \"%.80s\" is not http://", u);
	for (const unsigned char *c = (const unsigned char *)u; *c; c++)
		if (*c <= 0x20 || *c == 0x7f)
			return hf__err(err, HF_EINVAL, "url \"%.80s\" has a space or control character", u);
	const char *h = u + 7, *end = h + strcspn(h, "/?"), *colon = memchr(h, ':', (size_t)(end - h));
	const char *hend = colon ? colon : end;
	if (hend == h || (size_t)(hend - h) >= sizeof(out->host))
		return hf__err(err, HF_EINVAL, "url \"%.80s\" has no host", u);
	memcpy(out->host, h, (size_t)(hend - h));
	out->host[hend - h] = 0;
	size_t plen = colon ? (size_t)(end - colon - 1) : 0;
	if (colon && (plen == 0 || plen >= sizeof(out->port)))
		return hf__err(err, HF_EINVAL, "url \"%.80s\" has a bad port", u);
	snprintf(out->port, sizeof(out->port), "%.*s", colon ? (int)plen : 2, colon ? colon + 1 : "80");
	out->path = *end ? end : "/";
	return HF_OK;
}

/* Waits until fd is ready for `events`, the deadline passes (HF_ETIMEDOUT) or stop is set. */
static int wait_fd(int fd, short events, int64_t deadline, const _Atomic bool *stop,
                   hf_error *err)
{
	for (;;) {
		if (stop && *stop)
			return hf__err(err, HF_ECANCELED, "the store is closing");
		int64_t left = deadline - hf__mono_ms();
		if (left <= 0)
			return hf__err(err, HF_ETIMEDOUT, "no answer before the step's deadline");
		struct pollfd p = {.fd = fd, .events = events};
		int n = poll(&p, 1, (int)(left < SLICE_MS ? left : SLICE_MS));
		if (n > 0)
			return HF_OK;
		if (n < 0 && errno != EINTR)
			return hf__err(err, HF_EENGINE, "poll: %s", strerror(errno));
	}
}

static int connect_to(const struct url *u, int64_t deadline, const _Atomic bool *stop, int *out,
                      hf_error *err)
{
	struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai;
	int g = getaddrinfo(u->host, u->port, &hints, &ai);
	if (g != 0)
		return hf__err(err, HF_EENGINE, "cannot resolve \"%s\": %s", u->host, gai_strerror(g));
	int rc = hf__err(err, HF_EENGINE, "cannot connect to %s:%s", u->host, u->port);
	for (struct addrinfo *a = ai; a; a = a->ai_next) {
		int fd = socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (fd < 0)
			continue;
		if (connect(fd, a->ai_addr, a->ai_addrlen) == 0 || errno == EINPROGRESS) {
			int soerr = 0;
			socklen_t len = sizeof(soerr);
			rc = wait_fd(fd, POLLOUT, deadline, stop, err);
			if (rc == HF_OK && getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) == 0 && !soerr) {
				*out = fd;
				freeaddrinfo(ai);
				return HF_OK;
			}
			if (rc == HF_OK)
				rc = hf__err(err, HF_EENGINE, "cannot connect to %s:%s: %s", u->host, u->port,
				             strerror(soerr));
		}
		close(fd);
		if (rc == HF_ETIMEDOUT || rc == HF_ECANCELED)
			break;
	}
	freeaddrinfo(ai);
	return rc;
}

static int send_all(int fd, const char *buf, size_t len, int64_t deadline,
                    const _Atomic bool *stop, hf_error *err)
{
	while (len > 0) {
		ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);
		if (n > 0) {
			buf += n, len -= (size_t)n;
			continue;
		}
		if (n < 0 && errno != EAGAIN && errno != EINTR)
			return hf__err(err, HF_EENGINE, "send: %s", strerror(errno));
		int rc = wait_fd(fd, POLLOUT, deadline, stop, err);
		if (rc)
			return rc;
	}
	return HF_OK;
}

/* Reads until the peer closes (we send Connection: close) or the body is complete. */
static int read_reply(int fd, int64_t deadline, const _Atomic bool *stop, char **buf,
                      size_t *len, hf_error *err)
{
	size_t cap = 4096;
	*len = 0;
	if (!(*buf = malloc(cap)))
		return hf__err_code(err, HF_ENOMEM);
	for (;;) {
		if (*len + 1 >= cap) {
			if (cap >= REPLY_MAX)
				return hf__err(err, HF_EENGINE, "reply longer than %d bytes", REPLY_MAX);
			char *nb = realloc(*buf, cap * 2);
			if (!nb)
				return hf__err_code(err, HF_ENOMEM);
			*buf = nb, cap *= 2;
		}
		ssize_t n = recv(fd, *buf + *len, cap - *len - 1, 0);
		if (n == 0)
			break;
		if (n > 0) {
			*len += (size_t)n;
			(*buf)[*len] = 0;
			continue;
		}
		if (errno != EAGAIN && errno != EINTR)
			return hf__err(err, HF_EENGINE, "recv: %s", strerror(errno));
		int rc = wait_fd(fd, POLLIN, deadline, stop, err);
		if (rc)
			return rc;
	}
	(*buf)[*len] = 0;
	return HF_OK;
}

/* Decodes a chunked body in place; false if malformed. */
static bool dechunk(char *body, size_t *len)
{
	char *in = body, *out = body, *end = body + *len;
	for (;;) {
		char *eol = strstr(in, "\r\n");
		if (!eol)
			return false;
		unsigned long n = strtoul(in, NULL, 16);
		in = eol + 2;
		if (n == 0)
			break;
		if ((size_t)(end - in) < n)
			return false;
		memmove(out, in, n);
		out += n, in += n + 2;
		if (in > end)
			return false;
	}
	*len = (size_t)(out - body);
	*out = 0;
	return true;
}

static int parse_reply(char *raw, size_t len, struct hf__http_result *res, hf_error *err)
{
	int status;
	char *hend = strstr(raw, "\r\n\r\n");
	if (!hend || sscanf(raw, "HTTP/1.%*d %d", &status) != 1 || status < 100 || status > 599)
		return hf__err(err, HF_EENGINE, "the reply is not HTTP");
	*hend = 0;
	char *body = hend + 4;
	size_t blen = len - (size_t)(body - raw);
	bool chunked = false;
	for (char *h = strstr(raw, "\r\n"); h; h = strstr(h + 2, "\r\n")) {
		if (strncasecmp(h + 2, "Transfer-Encoding:", 18) == 0 && strstr(h + 20, "chunked"))
			chunked = true;
		else if (strncasecmp(h + 2, "Content-Length:", 15) == 0) {
			size_t cl = strtoul(h + 17, NULL, 10);
			if (cl < blen)
				blen = cl;
		}
	}
	if (chunked && !dechunk(body, &blen))
		return hf__err(err, HF_EENGINE, "the reply's chunked body is malformed");
	res->status = status;
	if (!(res->body = malloc(blen + 1)))
		return hf__err_code(err, HF_ENOMEM);
	memcpy(res->body, body, blen);
	res->body[blen] = 0;
	res->body_len = blen;
	return HF_OK;
}

int hf__http_call(const char *method, const char *url, const char *body,
                  const char *idempotency_key, const char *extra_headers, int64_t deadline_mono_ms,
                  const _Atomic bool *stop, struct hf__http_result *res, hf_error *err)
{
	memset(res, 0, sizeof(*res));
	struct url u;
	int fd = -1, rc = parse_url(url, &u, err);
	if (rc != HF_OK)
		return rc;
	size_t blen = body ? strlen(body) : 0;
	const char *extra = extra_headers ? extra_headers : "";
	char *req = malloc(strlen(u.path) + strlen(u.host) + (idempotency_key ? strlen(idempotency_key) : 0) +
	                   strlen(extra) + blen + 512);
	char *raw = NULL;
	size_t raw_len = 0;
	if (!req)
		return hf__err_code(err, HF_ENOMEM);
	int hl = sprintf(req,
	                 "%s %s HTTP/1.1\r\nHost: %s:%s\r\nConnection: close\r\n"
	                 "%s%s%s%sAccept: application/json\r\n"
	                 "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n",
	                 method, u.path, u.host, u.port, idempotency_key ? "Idempotency-Key: " : "",
	                 idempotency_key ? idempotency_key : "", idempotency_key ? "\r\n" : "", extra,
	                 blen);
	if (blen)
		memcpy(req + hl, body, blen);
	if ((rc = connect_to(&u, deadline_mono_ms, stop, &fd, err)) == HF_OK &&
	    (rc = send_all(fd, req, (size_t)hl + blen, deadline_mono_ms, stop, err)) == HF_OK) {
		res->sent = true;
		if ((rc = read_reply(fd, deadline_mono_ms, stop, &raw, &raw_len, err)) == HF_OK)
			rc = parse_reply(raw, raw_len, res, err);
	}
	if (fd >= 0)
		close(fd);
	free(req);
	free(raw);
	return rc;
}
