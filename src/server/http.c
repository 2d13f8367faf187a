/*
 * http.c — holdfastd's HTTP plumbing: the listener (plain or TLS), limits and timeouts,
 * connection tracking (so a client that leaves cancels its waits), API keys, request bodies,
 * the life of a request from arrival to answer, store calls, and the SIGTERM drain.
 */
#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "core/codec.h"
#include "server/server.h"

/*
 * An open connection, from accept (conn_bevcb) to close (on_conn_close). Until it has
 * presented a valid API key (or, without keys, sent a request) it is "pending": pending
 * connections may hold at most half of --max-connections, the oldest idle one makes room
 * for a newcomer, and with keys configured at most PREAUTH_BODY_MAX bytes of a body are
 * read from them.
 */
struct hf__conn {
	struct evhttp_connection *evcon; /* NULL until attached (just after accept) */
	struct bufferevent *bev;
	struct hf__rq *rqs;    /* its requests in flight */
	int unflushed;         /* replies handed to libevent, not yet written out */
	struct event *watch;   /* while a request waits: notices the client leaving */
	struct event *timer;   /* attach (at once), then the deadline of the request being read */
	bool close_after_reply; /* close once the reply is written (libevent would not) */
	bool authed;           /* no longer pending */
	int64_t accepted_ms;   /* monotonic */
	bool over_limit;       /* came with every slot taken: its request gets 429 */
	bool preauth_closing;  /* sent too much before authenticating: closed on the timer */
	struct hf__conn *next; /* hash chain */
	struct hf__conn *pend_prev, *pend_next; /* the pending list, oldest first */
	/* What the first request's header block says, scanned as it arrives (keys only). */
	bool scan_headers_done, scan_key_ok;
	unsigned scan_lines;
	size_t scan_len, preauth_body;
	char scan_line[1024];
};

/* With API keys: body bytes read from a connection that has not shown a valid key. */
#define PREAUTH_BODY_MAX 8192

int64_t hf__mono_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* ---- Connections by evhttp_connection pointer. ----------------------------------- */

static size_t conn_hash(const struct hf__server *srv, const struct evhttp_connection *evcon)
{
	uint64_t h = (uint64_t)(uintptr_t)evcon * 0x9E3779B97F4A7C15ull;
	return (size_t)(h >> 32) % srv->conn_buckets;
}

static struct hf__conn *conn_find(struct hf__server *srv, struct evhttp_connection *evcon)
{
	for (struct hf__conn *c = srv->conn_tab[conn_hash(srv, evcon)]; c; c = c->next)
		if (c->evcon == evcon)
			return c;
	return NULL;
}

/* Doubles the table when chains grow long; on allocation failure keeps the old one. */
static void conn_grow(struct hf__server *srv)
{
	size_t old_n = srv->conn_buckets;
	struct hf__conn **old = srv->conn_tab;
	struct hf__conn **tab = calloc(old_n * 2, sizeof(*tab));
	if (!tab)
		return;
	srv->conn_tab = tab;
	srv->conn_buckets = old_n * 2;
	for (size_t i = 0; i < old_n; i++) {
		struct hf__conn *c = old[i], *next;
		for (; c; c = next) {
			next = c->next;
			size_t b = conn_hash(srv, c->evcon);
			c->next = tab[b];
			tab[b] = c;
		}
	}
	free(old);
}

static void pending_remove(struct hf__server *srv, struct hf__conn *conn)
{
	if (conn->authed)
		return;
	conn->authed = true;
	if (conn->pend_prev)
		conn->pend_prev->pend_next = conn->pend_next;
	else
		srv->pend_head = conn->pend_next;
	if (conn->pend_next)
		conn->pend_next->pend_prev = conn->pend_prev;
	else
		srv->pend_tail = conn->pend_prev;
	conn->pend_prev = conn->pend_next = NULL;
	srv->n_pending--;
}

static void conn_unlink(struct hf__server *srv, struct hf__conn *conn)
{
	pending_remove(srv, conn);
	struct hf__conn **p = &srv->conn_tab[conn_hash(srv, conn->evcon)];
	for (; *p; p = &(*p)->next)
		if (*p == conn) {
			*p = conn->next;
			srv->n_conns--;
			return;
		}
}

static void rq_unlink_conn(struct hf__rq *rq)
{
	if (!rq->conn)
		return;
	if (rq->conn_prev)
		rq->conn_prev->conn_next = rq->conn_next;
	else
		rq->conn->rqs = rq->conn_next;
	if (rq->conn_next)
		rq->conn_next->conn_prev = rq->conn_prev;
	rq->conn = NULL;
	rq->conn_prev = rq->conn_next = NULL;
}

static void rq_free(struct hf__rq *rq);

/*
 * libevent calls this as it frees a connection: the client closed it, it timed out, or we
 * closed it. A request still waiting for its answer is then either detached from the
 * connection (client EOF or timeout: libevent leaves the evhttp_request to us, to free) or
 * about to be freed with it (anything else). Either way nobody will read the answer: cancel
 * the store call, and free the request's context when its completion arrives.
 */
static struct hf__server *the_server; /* one server per process, for libevent callbacks */

static void on_conn_close(struct evhttp_connection *evcon, void *arg)
{
	struct hf__conn *conn = arg;
	struct hf__server *srv = the_server;
	(void)evcon;
	conn_unlink(srv, conn);
	while (conn->rqs) {
		struct hf__rq *rq = conn->rqs;
		rq_unlink_conn(rq);
		rq->gone = true;
		if (rq->req && evhttp_request_get_connection(rq->req) != NULL)
			rq->req = NULL; /* freed by libevent with the connection */
		if (rq->yield_fn) {
			/* on_yield frees it */
		} else if (rq->call_pending) {
			hf__log(HF__LOG_DEBUG, "client_gone", " route=%s", hf__route_pattern(rq->route));
			hf_cancel(srv->store, rq->call_id);
		} else {
			rq_free(rq);
		}
	}
	if (conn->watch)
		event_free(conn->watch);
	if (conn->timer)
		event_free(conn->timer);
	free(conn);
}

/*
 * libevent 2.1 does not read from a connection while its request is being answered, so it
 * would not see the client leave during a long wait. The watch looks instead: readable with
 * EOF or an error means the client is gone, and freeing the connection cancels its wait
 * (through on_conn_close). Readable with data means a pipelined request: the client is
 * still there, and we stop watching rather than spin on a readable socket.
 */
static void on_watch(evutil_socket_t fd, short what, void *arg)
{
	struct hf__conn *conn = arg;
	char c;
	(void)what;
	ssize_t n = recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
	if (n > 0)
		return;
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
		event_add(conn->watch, NULL);
		return;
	}
	evhttp_connection_free(conn->evcon); /* runs on_conn_close, which frees conn */
}

static void watch_start(struct hf__rq *rq)
{
	struct hf__conn *conn = rq->conn;
	if (!conn || rq->gone)
		return;
	if (!conn->watch) {
		struct bufferevent *bev = evhttp_connection_get_bufferevent(conn->evcon);
		evutil_socket_t fd = bev ? bufferevent_getfd(bev) : -1;
		if (fd < 0)
			return;
		conn->watch = event_new(rq->srv->base, fd, EV_READ, on_watch, conn);
		if (!conn->watch)
			return;
	}
	event_add(conn->watch, NULL);
}

static void watch_stop(struct hf__rq *rq)
{
	if (rq->conn && rq->conn->watch)
		event_del(rq->conn->watch);
}

/* ---- Requests. -------------------------------------------------------------------- */

static void srv_unlink_rq(struct hf__server *srv, struct hf__rq *rq)
{
	if (rq->srv_prev)
		rq->srv_prev->srv_next = rq->srv_next;
	else
		srv->rqs = rq->srv_next;
	if (rq->srv_next)
		rq->srv_next->srv_prev = rq->srv_prev;
	rq->srv_prev = rq->srv_next = NULL;
	srv->n_rqs--;
}

static const char *method_name(enum evhttp_cmd_type m)
{
	switch (m) {
	case EVHTTP_REQ_GET: return "GET";
	case EVHTTP_REQ_POST: return "POST";
	case EVHTTP_REQ_HEAD: return "HEAD";
	case EVHTTP_REQ_PUT: return "PUT";
	case EVHTTP_REQ_DELETE: return "DELETE";
	case EVHTTP_REQ_OPTIONS: return "OPTIONS";
	case EVHTTP_REQ_TRACE: return "TRACE";
	case EVHTTP_REQ_CONNECT: return "CONNECT";
	case EVHTTP_REQ_PATCH: return "PATCH";
	}
	return "?";
}

/* Frees a request's context; answers nothing. The access log line is written here. */
static void rq_free(struct hf__rq *rq)
{
	struct hf__server *srv = rq->srv;
	if (hf__log_enabled(HF__LOG_INFO))
		hf__log_request(hf__route_pattern(rq->route), rq->status, hf__mono_us() - rq->t0_us,
		                rq->gone);
	hf__stats_request(srv, rq->status);
	if (rq->ev_waiter)
		srv->n_ev_waiters--;
	watch_stop(rq);
	rq_unlink_conn(rq);
	srv_unlink_rq(srv, rq);
	/* A request detached from its closed connection is ours to free. */
	if (rq->gone && rq->req)
		evhttp_request_free(rq->req);
	json_decref(rq->body);
	json_decref(rq->acc);
	if (rq->ev_timer)
		event_free(rq->ev_timer);
	if (rq->acc_out)
		evbuffer_free(rq->acc_out);
	free(rq->param);
	free(rq->stat_name);
	free(rq);
}

/* After a reply libevent would not close on (CONNECT): closes the connection, if it is
 * still the one that asked (looked up again: it may be gone by now). */
static void on_close_later(evutil_socket_t fd, short what, void *arg)
{
	struct evhttp_connection *evcon = arg;
	struct hf__conn *conn = conn_find(the_server, evcon);
	(void)fd;
	(void)what;
	if (conn && conn->close_after_reply && !conn->rqs)
		evhttp_connection_free(evcon); /* runs on_conn_close, which frees conn */
}

static void deadline_arm(struct hf__conn *conn);

static void on_reply_written(struct evhttp_request *req, void *arg)
{
	struct hf__conn *conn = arg;
	(void)req;
	conn->unflushed--;
	if (!conn->rqs && conn->unflushed <= 0)
		deadline_arm(conn); /* the next request must come whole within the timeout */
	if (conn->close_after_reply)
		event_base_once(the_server->base, -1, EV_TIMEOUT, on_close_later, conn->evcon,
		                &(struct timeval){0});
}

const char *hf__rq_header(struct hf__rq *rq, const char *name)
{
	if (!rq->req)
		return NULL;
	return evhttp_find_header(evhttp_request_get_input_headers(rq->req), name);
}

void hf__rq_add_header(struct hf__rq *rq, const char *name, const char *value)
{
	if (rq->req && !rq->gone)
		evhttp_add_header(evhttp_request_get_output_headers(rq->req), name, value);
}

static void rq_send_buf(struct hf__rq *rq, int status, const char *ctype, struct evbuffer *body);

/* The Date header's value, formatted once a second: left to libevent, every answer pays a
 * gmtime and a printf for it. The loop thread only. */
static const char *http_date(void)
{
	static const char days[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
	static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
	                                   "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
	static time_t cached_sec = -1;
	static char cached[40];
	time_t now = time(NULL);
	if (now != cached_sec) {
		struct tm tm;
		gmtime_r(&now, &tm);
		snprintf(cached, sizeof(cached), "%s, %02d %s %04d %02d:%02d:%02d GMT",
		         days[tm.tm_wday % 7], tm.tm_mday, months[tm.tm_mon % 12], tm.tm_year + 1900,
		         tm.tm_hour, tm.tm_min, tm.tm_sec);
		cached_sec = now;
	}
	return cached;
}

/* Sends the answer, if anyone is there to read it, and frees rq. */
static void rq_send(struct hf__rq *rq, int status, const char *ctype, const char *data,
                    size_t len)
{
	if (!rq->streaming) {
		struct evbuffer *buf = evbuffer_new();
		if (buf)
			evbuffer_add(buf, data, len);
		rq_send_buf(rq, status, ctype, buf);
		evbuffer_free(buf);
		return;
	}
	if (rq->streaming) {
		/* The status line is gone already: an error becomes the stream's last event. */
		while (len && data[len - 1] == '\n')
			len--;
		hf__rq_stream_chunk(rq, "event: error\ndata: ", 19);
		hf__rq_stream_chunk(rq, data, len);
		hf__rq_stream_chunk(rq, "\n\n", 2);
		hf__rq_stream_end(rq);
		return;
	}
	rq_free(rq);
}

/* rq_send for a body in an evbuffer (emptied, not freed; NULL: out of memory): no copy. */
static void rq_send_buf(struct hf__rq *rq, int status, const char *ctype, struct evbuffer *body)
{
	size_t len = body ? evbuffer_get_length(body) : 0;
	rq->status = status;
	if (rq->req && !rq->gone) {
		struct evkeyvalq *h = evhttp_request_get_output_headers(rq->req);
		struct evbuffer *buf = body;
		evhttp_add_header(h, "Content-Type", ctype);
		evhttp_add_header(h, "Date", http_date());
		/* With keys, a connection that showed none serves one request: its next request
		 * would be read (body and all) before we could tell. */
		if (rq->srv->draining ||
		    (rq->conn && ((!rq->conn->authed && rq->srv->cfg->n_api_keys) ||
		                  rq->conn->over_limit)))
			evhttp_add_header(h, "Connection", "close");
		if (rq->conn) {
			rq->conn->unflushed++;
			evhttp_request_set_on_complete_cb(rq->req, on_reply_written, rq->conn);
		}
		/* libevent 2.1 writes a HEAD answer's body and leaves a CONNECT answer without a
		 * length (the client would wait for a tunnel): say the length ourselves, and send
		 * HEAD the headers only. */
		enum evhttp_cmd_type m = evhttp_request_get_command(rq->req);
		char clen[32];
		snprintf(clen, sizeof(clen), "%zu", len);
		evhttp_remove_header(h, "Content-Length");
		evhttp_add_header(h, "Content-Length", clen);
		if (buf && m == EVHTTP_REQ_HEAD)
			evbuffer_drain(buf, len);
		evhttp_send_reply(rq->req, status, NULL, buf);
		rq->req = NULL; /* libevent frees it once written */
	}
	rq_free(rq);
}

void hf__rq_send_buffer(struct hf__rq *rq, int status, const char *ctype, struct evbuffer *body)
{
	rq_send_buf(rq, status, ctype, body);
}

void hf__rq_send_text(struct hf__rq *rq, int status, const char *ctype, const char *text,
                      size_t len)
{
	rq_send(rq, status, ctype, text, len);
}

json_t *hf__json_push(json_t *arr, json_t *item)
{
	if (!arr || !item) {
		json_decref(arr);
		json_decref(item);
		return NULL;
	}
	if (json_array_append_new(arr, item) != 0) { /* which has freed item */
		json_decref(arr);
		return NULL;
	}
	return arr;
}

void hf__rq_send_page(struct hf__rq *rq, hf_reply *reply, const char *key, json_t *items,
                      const char *next)
{
	/* "o" takes items even when the pack fails; a NULL body answers out_of_memory. */
	json_t *body = items ? json_pack("{s:o,s:b,s:s?}", key, items, "more", (int)reply->more,
	                                 "next_cursor", next)
	                     : NULL;
	hf__rq_send_json(rq, 200, body);
	hf_reply_free(reply);
}

void hf__rq_send_json(struct hf__rq *rq, int status, json_t *body)
{
	char *text = body ? hf__json_dumps(body, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
	json_decref(body);
	if (!text) {
		static const char oom[] =
			"{\"error\":{\"code\":\"out_of_memory\",\"message\":\"out of memory\"}}\n";
		rq_send(rq, hf_err_http_status(HF_ENOMEM), "application/json", oom, sizeof(oom) - 1);
		return;
	}
	size_t len = strlen(text);
	char *line = realloc(text, len + 2); /* a final newline: friendlier in a terminal */
	if (line) {
		text = line;
		text[len++] = '\n';
		text[len] = '\0';
	}
	rq_send(rq, status, "application/json", text, len);
	free(text);
}

void hf__rq_send_hold(struct hf__rq *rq, int status, const hf_hold *hold)
{
	size_t len;
	char *text = hf__hold_text(hold, &len);
	if (!text) {
		hf__rq_send_json(rq, status, NULL); /* answers out of memory */
		return;
	}
	if (rq->streaming) {
		rq_send(rq, status, "application/json", text, len);
	} else {
		struct evbuffer *buf = evbuffer_new();
		if (buf && (evbuffer_add(buf, text, len) != 0 || evbuffer_add(buf, "\n", 1) != 0)) {
			evbuffer_free(buf);
			buf = NULL;
		}
		rq_send_buf(rq, status, "application/json", buf);
		if (buf)
			evbuffer_free(buf);
	}
	free(text);
}

/* Length of the well-formed UTF-8 sequence at s (at most n bytes), 0 if it is not one:
 * no overlong forms, no surrogates, nothing above U+10FFFF. */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
	unsigned char c = s[0];
	size_t len;
	uint32_t cp, min;
	if (c < 0x80)
		return 1;
	if (c >= 0xC2 && c <= 0xDF) {
		len = 2, cp = c & 0x1F, min = 0x80;
	} else if (c >= 0xE0 && c <= 0xEF) {
		len = 3, cp = c & 0x0F, min = 0x800;
	} else if (c >= 0xF0 && c <= 0xF4) {
		len = 4, cp = c & 0x07, min = 0x10000;
	} else {
		return 0;
	}
	if (len > n)
		return 0;
	for (size_t i = 1; i < len; i++) {
		if ((s[i] & 0xC0) != 0x80)
			return 0;
		cp = (cp << 6) | (s[i] & 0x3F);
	}
	if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
		return 0;
	return len;
}

void hf__utf8_clean(const char *in, char *out, size_t size)
{
	static const char repl[] = "\xEF\xBF\xBD"; /* U+FFFD */
	const unsigned char *s = (const unsigned char *)in;
	size_t n = strlen(in), o = 0;
	assert(size >= 1);
	while (n) {
		size_t k = utf8_seq(s, n);
		const char *piece = (const char *)s;
		size_t plen = k, skip = k;
		if (k == 0) {
			/* A sequence cut by the end of the string (a clipped message): drop it. */
			size_t want = s[0] >= 0xF0 ? 4 : s[0] >= 0xE0 ? 3 : s[0] >= 0xC2 ? 2 : 0;
			if (want > n) {
				bool cont = true;
				for (size_t i = 1; i < n; i++)
					cont &= (s[i] & 0xC0) == 0x80;
				if (cont)
					break;
			}
			piece = repl;
			plen = 3;
			skip = 1;
		}
		if (o + plen >= size)
			break;
		memcpy(out + o, piece, plen);
		o += plen;
		s += skip;
		n -= skip;
	}
	out[o] = '\0';
}

/* trimmed_upto: events_trimmed's floor as a number (0: none), for clients that go on after it. */
static json_t *error_json(const hf_error *err, uint64_t trimmed_upto)
{
	char msg[3 * HF_MESSAGE_MAX];
	hf__utf8_clean(err->message[0] ? err->message : hf_strerror(err->code), msg, sizeof(msg));
	json_t *j =
	    json_pack("{s:{s:s,s:s}}", "error", "code", hf_err_name(err->code), "message", msg);
	if (j && trimmed_upto)
		json_object_set_new(json_object_get(j, "error"), "trimmed_upto",
		                    json_integer((json_int_t)trimmed_upto));
	return j;
}

json_t *hf__error_json(const hf_error *err)
{
	return error_json(err, 0);
}

static uint64_t reply_trimmed_upto(const hf_reply *reply)
{
	return reply->error.code == HF_ETRIMMED ? reply->trimmed_upto : 0;
}

json_t *hf__reply_error_json(const hf_reply *reply)
{
	return error_json(&reply->error, reply_trimmed_upto(reply));
}

static void send_error(struct hf__rq *rq, const hf_error *err, uint64_t trimmed_upto)
{
	hf_error e = *err;
	/* A wait cut short by the drain is the server shutting down, not the client cancelling. */
	if (e.code == HF_ECANCELED && rq->srv->draining) {
		e.code = HF_ECLOSED;
		snprintf(e.message, sizeof(e.message), "server is shutting down");
	}
	if (hf__log_enabled(HF__LOG_DEBUG)) {
		char m[300];
		hf__log(HF__LOG_DEBUG, "error_reply", " code=%s message=%s", hf_err_name(e.code),
		        hf__log_quote(m, sizeof(m), e.message));
	}
	hf__rq_send_json(rq, hf_err_http_status(e.code), error_json(&e, trimmed_upto));
}

void hf__rq_send_error(struct hf__rq *rq, const hf_error *err)
{
	send_error(rq, err, 0);
}

bool hf__rq_reply_failed(struct hf__rq *rq, hf_reply *reply)
{
	if (!reply->error.code)
		return false;
	send_error(rq, &reply->error, reply_trimmed_upto(reply));
	hf_reply_free(reply);
	return true;
}

void hf__rq_fail(struct hf__rq *rq, int code, const char *fmt, ...)
{
	hf_error e = {.code = code};
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(e.message, sizeof(e.message), fmt, ap);
	va_end(ap);
	hf__rq_send_error(rq, &e);
}

void hf__rq_stream_start(struct hf__rq *rq, const char *ctype)
{
	rq->streaming = true;
	rq->status = 200;
	if (!rq->req || rq->gone)
		return;
	struct evkeyvalq *h = evhttp_request_get_output_headers(rq->req);
	evhttp_add_header(h, "Content-Type", ctype);
	evhttp_add_header(h, "Cache-Control", "no-cache");
	evhttp_send_reply_start(rq->req, 200, NULL);
}

void hf__rq_stream_chunk(struct hf__rq *rq, const char *data, size_t len)
{
	if (!rq->req || rq->gone || !len)
		return;
	struct evbuffer *buf = evbuffer_new();
	if (!buf)
		return;
	evbuffer_add(buf, data, len);
	evhttp_send_reply_chunk(rq->req, buf);
	evbuffer_free(buf);
}

void hf__rq_stream_end(struct hf__rq *rq)
{
	if (rq->req && !rq->gone) {
		if (rq->conn) {
			rq->conn->unflushed++;
			evhttp_request_set_on_complete_cb(rq->req, on_reply_written, rq->conn);
		}
		evhttp_send_reply_end(rq->req);
		rq->req = NULL;
	}
	rq_free(rq);
}

static void on_orphan_released(void *arg, hf_reply *reply)
{
	(void)arg;
	if (reply->error.code && reply->error.code != HF_EENDED) {
		char m[300];
		hf__log(HF__LOG_WARN, "orphan_release_failed", " code=%s message=%s",
		        hf_err_name(reply->error.code), hf__log_quote(m, sizeof(m), reply->error.message));
	}
	hf_reply_free(reply);
}

/*
 * A grant that crossed the client's leaving (its cancel came too late): nobody has the
 * token, so release the hold through the store rather than let it block the resource until
 * it expires. Not for acquires with an Idempotency-Key: their client may retry and is then
 * given this very hold.
 */
static void release_orphan(struct hf__server *srv, const hf_hold *hold)
{
	hf_request req;
	hf_error err;
	uint64_t id;
	hf_request_init(&req, HF_OP_RELEASE);
	req.hold_id = hold->id;
	req.token = hold->token;
	hf__log(HF__LOG_INFO, "orphan_released", " hold=%s", hold->id);
	if (hf__srv_submit(srv, &req, on_orphan_released, NULL, &id, &err) != HF_OK)
		hf__log(HF__LOG_WARN, "orphan_release_failed", " code=%s", hf_err_name(err.code));
}

size_t hf__rq_queued(struct hf__rq *rq)
{
	struct bufferevent *bev = rq->conn && !rq->gone
	                                  ? evhttp_connection_get_bufferevent(rq->conn->evcon)
	                                  : NULL;
	return bev ? evbuffer_get_length(bufferevent_get_output(bev)) : 0;
}

void hf__rq_drop(struct hf__rq *rq, const char *why)
{
	hf__log(HF__LOG_WARN, "client_dropped", " route=%s reason=%s",
	        hf__route_pattern(rq->route), why);
	if (rq->conn && !rq->gone) {
		evhttp_connection_free(rq->conn->evcon); /* on_conn_close frees rq (nothing pending) */
		return;
	}
	rq_free(rq);
}

/* The store's completion for rq: hand it to the handler unless the client has left. */
static void on_store_done(void *arg, hf_reply *reply)
{
	struct hf__rq *rq = arg;
	rq->call_pending = false;
	rq->parked = false;
	if (rq->gone) {
		if (rq->release_if_gone && !reply->error.code && reply->hold && !reply->hold->replayed &&
		    rq->srv->store)
			release_orphan(rq->srv, reply->hold);
		hf_reply_free(reply);
		rq_free(rq);
		return;
	}
	rq->on_reply(rq, reply);
}

static void on_yield(evutil_socket_t fd, short what, void *arg)
{
	struct hf__rq *rq = arg;
	void (*fn)(struct hf__rq *) = rq->yield_fn;
	(void)fd;
	(void)what;
	rq->yield_fn = NULL;
	if (rq->gone) {
		rq_free(rq);
		return;
	}
	fn(rq);
}

void hf__srv_batch_end(struct hf__server *srv)
{
	if (!srv->batch_open)
		return;
	srv->batch_open = false;
	hf_store_batch_end(srv->store);
}

static void on_batch_end(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	hf__srv_batch_end(arg);
}

/* The batch opens with the turn's first submit; batch_ev, made active then, runs after the
 * callbacks already active in this turn (the other connections' requests). */
int hf__srv_submit(struct hf__server *srv, const hf_request *req, hf_done_fn done, void *arg,
                   uint64_t *call_id, hf_error *err)
{
	if (!srv->batch_open && srv->batch_ev) {
		hf_store_batch_begin(srv->store);
		srv->batch_open = true;
		event_active(srv->batch_ev, EV_TIMEOUT, 0);
	}
	return hf_submit(srv->store, req, done, arg, call_id, err);
}

void hf__rq_yield(struct hf__rq *rq, void (*fn)(struct hf__rq *rq))
{
	assert(!rq->yield_fn && !rq->call_pending);
	rq->yield_fn = fn;
	if (event_base_once(rq->srv->base, -1, EV_TIMEOUT, on_yield, rq, &(struct timeval){0}) != 0) {
		rq->yield_fn = NULL;
		hf__rq_fail(rq, HF_ENOMEM, "out of memory");
	}
}

int hf__rq_submit(struct hf__rq *rq, const hf_request *req, hf__reply_fn on_reply)
{
	hf_error err = {0};
	rq->on_reply = on_reply;
	/* Waits may last an hour: the drain cancels them rather than waiting them out. */
	rq->parked = (req->op == HF_OP_ACQUIRE && req->acquire.wait_ms > 0) ||
	             (req->op == HF_OP_READ_EVENTS && req->wait_ms > 0);
	int rc = hf__srv_submit(rq->srv, req, on_store_done, rq, &rq->call_id, &err);
	if (rc != HF_OK) {
		rq->parked = false;
		hf__rq_send_error(rq, &err);
		return rc;
	}
	rq->call_pending = true;
	if (rq->parked || rq->streaming)
		watch_start(rq);
	return HF_OK;
}

/* ---- Arrival: connection limit, authentication, body, routing. -------------------- */

static bool key_equal(const char *a, const char *b)
{
	/* Constant time in the contents, so a key cannot be guessed byte by byte. */
	size_t la = strlen(a), lb = strlen(b);
	unsigned char d = (unsigned char)(la != lb);
	for (size_t i = 0; i < la; i++)
		d |= (unsigned char)(a[i] ^ b[i % (lb ? lb : 1)]);
	return d == 0;
}

/* Whether an Authorization header value carries one of the keys (h may be NULL). */
static bool bearer_ok(const struct hf__config *cfg, const char *h)
{
	if (!h || strncasecmp(h, "Bearer ", 7) != 0)
		return false;
	h += 7;
	while (*h == ' ')
		h++;
	bool ok = false;
	for (size_t i = 0; i < cfg->n_api_keys; i++)
		ok |= key_equal(h, cfg->api_keys[i]);
	return ok;
}

bool hf__rq_authorized(struct hf__rq *rq)
{
	const struct hf__config *cfg = rq->srv->cfg;
	return cfg->n_api_keys == 0 || bearer_ok(cfg, hf__rq_header(rq, "Authorization"));
}

bool hf__rq_read_body(struct hf__rq *rq)
{
	struct evbuffer *in = evhttp_request_get_input_buffer(rq->req);
	size_t len = evbuffer_get_length(in);
	if ((int64_t)len > rq->srv->cfg->max_body) {
		hf__rq_fail(rq, HF_EBODY, "request body is %zu bytes, the limit is %lld", len,
		            (long long)rq->srv->cfg->max_body);
		return false;
	}
	if (len == 0) { /* no body: as {}, so that the missing fields are named */
		rq->body = json_object();
		if (!rq->body) {
			hf__rq_fail(rq, HF_ENOMEM, "out of memory");
			return false;
		}
		return true;
	}
	const char *data = (const char *)evbuffer_pullup(in, -1);
	json_error_t jerr;
	rq->body = json_loadb(data, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!rq->body) {
		hf__rq_fail(rq, HF_EJSON, "request body is not valid JSON: %s (line %d, column %d)",
		            jerr.text, jerr.line, jerr.column);
		return false;
	}
	if (!json_is_object(rq->body)) {
		hf__rq_fail(rq, HF_EINVAL, "request body must be a JSON object");
		return false;
	}
	return true;
}

const char *hf__rq_method(struct hf__rq *rq)
{
	return rq->req ? method_name(evhttp_request_get_command(rq->req)) : "?";
}

/*
 * Refuses what libevent 2.1 would accept but a proxy in front of us may read differently
 * (request smuggling): more than one Content-Length, one that is not plain digits ("+2",
 * "0x2"), or Content-Length together with Transfer-Encoding; and CONNECT, which is no route
 * of ours. The connection is closed after the answer, so bytes past the body libevent read
 * are never taken for another request. Returns false when it answered.
 */
static bool framing_ok(struct hf__rq *rq)
{
	struct evkeyvalq *in = evhttp_request_get_input_headers(rq->req);
	int n_len = 0;
	bool te = false;
	const char *bad = NULL;
	for (struct evkeyval *kv = in->tqh_first; kv; kv = kv->next.tqe_next) {
		if (strcasecmp(kv->key, "Transfer-Encoding") == 0)
			te = true;
		if (strcasecmp(kv->key, "Content-Length") != 0)
			continue;
		n_len++;
		const char *v = kv->value;
		if (!*v || strspn(v, "0123456789") != strlen(v) || strlen(v) > 18)
			bad = v;
	}
	if (evhttp_request_get_command(rq->req) == EVHTTP_REQ_CONNECT) {
		/* libevent never closes after a CONNECT answer (it expects a tunnel): we do. */
		if (rq->conn)
			rq->conn->close_after_reply = true;
		hf__rq_add_header(rq, "Connection", "close");
		hf__rq_fail(rq, HF_EMETHOD, "CONNECT is not allowed: this is no proxy");
		return false;
	}
	if (!bad && n_len <= 1 && !(te && n_len))
		return true;
	hf__rq_add_header(rq, "Connection", "close");
	if (bad)
		hf__rq_fail(rq, HF_EINVAL, "Content-Length '%.32s' is not a decimal number", bad);
	else if (n_len > 1)
		hf__rq_fail(rq, HF_EINVAL, "more than one Content-Length header");
	else
		hf__rq_fail(rq, HF_EINVAL, "both Content-Length and Transfer-Encoding");
	return false;
}

static bool evict_pending(struct hf__server *srv, struct hf__conn *except, bool grace);

static void on_request(struct evhttp_request *req, void *arg)
{
	struct hf__server *srv = arg;
	struct hf__rq *rq = calloc(1, sizeof(*rq));
	if (!rq) {
		evhttp_send_error(req, 503, "out of memory");
		return;
	}
	rq->srv = srv;
	rq->req = req;
	rq->t0_us = hf__mono_us();
	rq->srv_next = srv->rqs;
	if (srv->rqs)
		srv->rqs->srv_prev = rq;
	srv->rqs = rq;
	srv->n_rqs++;

	struct evhttp_connection *evcon = evhttp_request_get_connection(req);
	struct hf__conn *conn = evcon ? conn_find(srv, evcon) : NULL;
	if (conn) {
		rq->conn = conn;
		rq->conn_next = conn->rqs;
		if (conn->rqs)
			conn->rqs->conn_prev = rq;
		conn->rqs = rq;
		event_del(conn->timer); /* read whole: no deadline while it is served */
		/* Over the limit: an authenticated request (any request, without keys) takes the
		 * place of a pending idle connection, however young; else 429. */
		if (conn->over_limit && hf__rq_authorized(rq) && evict_pending(srv, conn, false))
			conn->over_limit = false;
		if (conn->over_limit) {
			srv->conns_refused++;
			hf__rq_fail(rq, HF_ELIMIT, "too many connections: the limit is %lld",
			            (long long)srv->cfg->max_conns);
			return;
		}
		if (!conn->authed && hf__rq_authorized(rq))
			pending_remove(srv, conn);
	}
	if (srv->draining) {
		hf__rq_fail(rq, HF_ECLOSED, "server is shutting down");
		return;
	}
	if (!framing_ok(rq))
		return;
	hf__route_request(rq);
}

/* ---- Connections from accept to first request. -------------------------------------- */

static void deadline_arm(struct hf__conn *conn)
{
	if (conn->timer && conn->evcon)
		event_add(conn->timer, &(struct timeval){.tv_sec = the_server->cfg->timeout_s});
}

/* A pending connection this old has had its chance to send a request with a key. */
#define PENDING_GRACE_MS 1000

/* Closes the oldest pending connection that is idle and past its grace; false if there is
 * none (a burst of fresh connections is not mistaken for a flood). */
static bool evict_pending(struct hf__server *srv, struct hf__conn *except, bool grace)
{
	int64_t now = hf__mono_us() / 1000;
	for (struct hf__conn *c = srv->pend_head; c; c = c->pend_next) {
		if (grace && now - c->accepted_ms < PENDING_GRACE_MS)
			return false; /* oldest first: the rest are younger */
		if (c != except && !c->rqs && c->unflushed <= 0 && c->evcon) {
			srv->conns_evicted++;
			hf__log(HF__LOG_DEBUG, "conn_evicted", " pending=%zu", srv->n_pending);
			evhttp_connection_free(c->evcon); /* on_conn_close frees c */
			return true;
		}
	}
	return false;
}

/* Plain sockets only: a last word before closing a connection libevent is still reading. */
static void send_raw_error(struct hf__conn *conn, int code, const char *msg)
{
	if (the_server->tls)
		return;
	evutil_socket_t fd = bufferevent_getfd(conn->bev);
	char body[256], head[512];
	hf_error e = {.code = code};
	snprintf(e.message, sizeof(e.message), "%s", msg);
	json_t *j = hf__error_json(&e);
	char *text = j ? hf__json_dumps(j, JSON_COMPACT) : NULL;
	json_decref(j);
	snprintf(body, sizeof(body), "%s\n", text ? text : "");
	free(text);
	int n = snprintf(head, sizeof(head),
	                 "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
	                 "Connection: close\r\n\r\n%s",
	                 hf_err_http_status(code), code == HF_EAUTH ? "Unauthorized" : "Error",
	                 strlen(body), body);
	if (fd >= 0 && n > 0 && (size_t)n < sizeof(head))
		(void)send(fd, head, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT);
}

/* The scan of a pending connection's first header block, byte by byte as it arrives. */
static void scan_byte(struct hf__conn *conn, char c)
{
	if (conn->scan_headers_done) {
		if (++conn->preauth_body > PREAUTH_BODY_MAX && !conn->preauth_closing) {
			conn->preauth_closing = true;
			event_active(conn->timer, EV_TIMEOUT, 0); /* not from inside libevent's read */
		}
		return;
	}
	if (c != '\n') {
		if (conn->scan_len < sizeof(conn->scan_line) - 1)
			conn->scan_line[conn->scan_len++] = c;
		return;
	}
	size_t len = conn->scan_len;
	if (len && conn->scan_line[len - 1] == '\r')
		len--;
	conn->scan_line[len] = '\0';
	conn->scan_len = 0;
	if (len == 0) {
		if (conn->scan_lines > 0)
			conn->scan_headers_done = true;
		return;
	}
	conn->scan_lines++;
	if (strncasecmp(conn->scan_line, "Authorization:", 14) == 0) {
		const char *v = conn->scan_line + 14;
		while (*v == ' ' || *v == '\t')
			v++;
		conn->scan_key_ok |= bearer_ok(the_server->cfg, v);
	}
}

static void on_input(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
	struct hf__conn *conn = arg;
	if (!info->n_added || conn->authed || conn->scan_key_ok || conn->preauth_closing)
		return;
	size_t len = evbuffer_get_length(buf);
	if (info->n_added > len)
		return;
	struct evbuffer_ptr pos;
	if (evbuffer_ptr_set(buf, &pos, len - info->n_added, EVBUFFER_PTR_SET) != 0)
		return;
	struct evbuffer_iovec v[16];
	int n = evbuffer_peek(buf, (ev_ssize_t)info->n_added, &pos, v, 16);
	for (int i = 0; i < n && i < 16; i++)
		for (size_t k = 0; k < v[i].iov_len; k++) {
			if (conn->scan_key_ok || conn->preauth_closing)
				return;
			scan_byte(conn, ((const char *)v[i].iov_base)[k]);
		}
}

/* Right after accept: tracks the connection, makes room under the limits, starts its
 * deadline. evhttp has made its evhttp_connection by now: it is the bufferevent's cbarg. */
static void conn_attach(struct hf__conn *conn)
{
	struct hf__server *srv = the_server;
	void *arg = NULL;
	bufferevent_getcb(conn->bev, NULL, NULL, NULL, &arg);
	if (!arg) {
		event_free(conn->timer);
		free(conn);
		return;
	}
	conn->evcon = arg;
	size_t max = (size_t)srv->cfg->max_conns;
	size_t pending_max = max / 2 ? max / 2 : 1;
	while (srv->n_pending >= pending_max || srv->n_conns >= max)
		if (!evict_pending(srv, NULL, true))
			break;
	if (srv->n_conns >= max)
		conn->over_limit = true; /* unless its request proves better than a pending one */
	if (srv->n_conns >= srv->conn_buckets * 2)
		conn_grow(srv);
	size_t b = conn_hash(srv, conn->evcon);
	conn->next = srv->conn_tab[b];
	srv->conn_tab[b] = conn;
	srv->n_conns++;
	conn->pend_prev = srv->pend_tail;
	if (srv->pend_tail)
		srv->pend_tail->pend_next = conn;
	else
		srv->pend_head = conn;
	srv->pend_tail = conn;
	srv->n_pending++;
	evhttp_connection_set_closecb(conn->evcon, on_conn_close, conn);
	if (srv->cfg->n_api_keys)
		evbuffer_add_cb(bufferevent_get_input(conn->bev), on_input, conn);
	deadline_arm(conn);
}

static void on_conn_timer(evutil_socket_t fd, short what, void *arg)
{
	struct hf__conn *conn = arg;
	struct hf__server *srv = the_server;
	(void)fd;
	(void)what;
	if (!conn->evcon) {
		conn_attach(conn);
		return;
	}
	if (conn->preauth_closing) {
		if (conn->rqs) /* libevent read it all meanwhile: it is being answered (401) */
			return;
		srv->conns_preauth_closed++;
		hf__log(HF__LOG_DEBUG, "conn_closed", " reason=body_before_auth");
		send_raw_error(conn, HF_EAUTH, "missing or wrong API key (Authorization: Bearer KEY)");
		evhttp_connection_free(conn->evcon);
		return;
	}
	if (conn->rqs || conn->unflushed > 0)
		return; /* being served: the deadline starts again after the answer */
	srv->conns_timed_out++;
	hf__log(HF__LOG_DEBUG, "conn_closed", " reason=request_timeout");
	evhttp_connection_free(conn->evcon); /* on_conn_close frees conn */
}

/* evhttp's bufferevent factory: called for every accepted connection, before evhttp makes
 * its connection object. Ours makes the TLS or plain bufferevent and starts tracking. */
static struct bufferevent *conn_bevcb(struct event_base *base, void *arg)
{
	struct hf__server *srv = arg;
	struct bufferevent *bev;
	if (srv->tls) {
		SSL *ssl = SSL_new(srv->tls);
		if (!ssl)
			return NULL;
		bev = bufferevent_openssl_socket_new(base, -1, ssl, BUFFEREVENT_SSL_ACCEPTING,
		                                     BEV_OPT_CLOSE_ON_FREE);
	} else {
		bev = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
	}
	struct hf__conn *conn = bev ? calloc(1, sizeof(*conn)) : NULL;
	if (conn)
		conn->timer = evtimer_new(base, on_conn_timer, conn);
	if (!conn || !conn->timer) {
		free(conn);
		return bev; /* served untracked: better than not at all */
	}
	conn->bev = bev;
	conn->accepted_ms = hf__mono_us() / 1000;
	/* Attach once evhttp has set the connection up: the active event runs right after
	 * this accept callback, before any read from the new socket. */
	event_active(conn->timer, EV_TIMEOUT, 0);
	return bev;
}

/* accept() failing (out of descriptors, mostly): libevent would retry at once, forever.
 * Pause the listener, back off, log once per episode. */
static void on_accept_resume(evutil_socket_t fd, short what, void *arg)
{
	struct hf__server *srv = arg;
	(void)fd;
	(void)what;
	if (srv->bound && !srv->draining)
		evconnlistener_enable(evhttp_bound_socket_get_listener(srv->bound));
}

static void on_accept_error(struct evconnlistener *lev, void *arg)
{
	struct hf__server *srv = the_server; /* arg is evhttp's (the listener's user data) */
	(void)arg;
	int err = EVUTIL_SOCKET_ERROR();
	int64_t now = hf__mono_us() / 1000;
	srv->accept_errors++;
	evconnlistener_disable(lev);
	/* An episode: errors less than 10 s apart. The pause doubles in one, 10 ms .. 1 s. */
	if (now - srv->accept_last_ms > 10000) {
		srv->accept_pause_ms = 10;
		srv->accept_episodes++;
		hf__log(HF__LOG_WARN, "accept_failed", " error=\"%s\" paused_ms=%lld", strerror(err),
		        (long long)srv->accept_pause_ms);
	} else if (srv->accept_pause_ms < 1000) {
		srv->accept_pause_ms *= 2;
	}
	srv->accept_last_ms = now;
	if (!srv->accept_ev)
		srv->accept_ev = evtimer_new(srv->base, on_accept_resume, srv);
	if (!srv->accept_ev || event_add(srv->accept_ev, &(struct timeval){
	                                     .tv_sec = srv->accept_pause_ms / 1000,
	                                     .tv_usec = (srv->accept_pause_ms % 1000) * 1000}) != 0)
		evconnlistener_enable(lev); /* no timer: better a busy listener than a dead one */
}

/* ---- Listening. ------------------------------------------------------------------- */

static int tls_setup(struct hf__server *srv, hf_error *err)
{
	const struct hf__config *cfg = srv->cfg;
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	if (!ctx)
		goto out_ssl;
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	if (SSL_CTX_use_certificate_chain_file(ctx, cfg->tls_cert) != 1 ||
	    SSL_CTX_use_PrivateKey_file(ctx, cfg->tls_key, SSL_FILETYPE_PEM) != 1 ||
	    SSL_CTX_check_private_key(ctx) != 1)
		goto out_ssl;
	srv->tls = ctx;
	return HF_OK;
out_ssl:;
	char why[200];
	ERR_error_string_n(ERR_get_error(), why, sizeof(why));
	SSL_CTX_free(ctx);
	snprintf(err->message, sizeof(err->message), "tls setup failed (cert '%.50s', key '%.50s'): %.100s",
	         cfg->tls_cert, cfg->tls_key, why);
	err->code = HF_EINVAL;
	return HF_EINVAL;
}

/* Splits "host:port" or "[v6]:port". */
static int parse_listen(const char *s, char *host, size_t hsize, unsigned *port)
{
	const char *colon = strrchr(s, ':');
	if (!colon || colon == s)
		return -1;
	const char *h = s;
	size_t hl = (size_t)(colon - s);
	if (*h == '[' && hl >= 2 && h[hl - 1] == ']') {
		h++;
		hl -= 2;
	}
	if (hl == 0 || hl >= hsize)
		return -1;
	memcpy(host, h, hl);
	host[hl] = '\0';
	char *end;
	errno = 0;
	unsigned long p = strtoul(colon + 1, &end, 10);
	if (errno || *end || end == colon + 1 || p > 65535)
		return -1;
	*port = (unsigned)p;
	return 0;
}

int hf__http_start(struct hf__server *srv, hf_error *err)
{
	const struct hf__config *cfg = srv->cfg;
	char host[256];
	unsigned port;
	the_server = srv;
	if (parse_listen(cfg->listen, host, sizeof(host), &port) != 0) {
		err->code = HF_EINVAL;
		snprintf(err->message, sizeof(err->message),
		         "listen address '%.100s' is not host:port", cfg->listen);
		return HF_EINVAL;
	}
	srv->conn_buckets = 1024;
	srv->conn_tab = calloc(srv->conn_buckets, sizeof(*srv->conn_tab));
	srv->http = evhttp_new(srv->base);
	srv->batch_ev = event_new(srv->base, -1, 0, on_batch_end, srv);
	if (!srv->conn_tab || !srv->http || !srv->batch_ev)
		goto out_nomem;
	/* Bodies between the limit and this hard cap are read and refused with a JSON 413;
	 * above it libevent refuses them itself (413, plain) without reading them. */
	evhttp_set_max_body_size(srv->http, cfg->max_body * 4 + 65536);
	evhttp_set_max_headers_size(srv->http, cfg->max_headers);
	evhttp_set_timeout_tv(srv->http, &(struct timeval){.tv_sec = cfg->timeout_s});
	/* Every method reaches the router, so that a wrong one gets a JSON 405. */
	evhttp_set_allowed_methods(srv->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
	                                          EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
	                                          EVHTTP_REQ_OPTIONS | EVHTTP_REQ_TRACE |
	                                          EVHTTP_REQ_CONNECT | EVHTTP_REQ_PATCH);
	evhttp_set_gencb(srv->http, on_request, srv);
	evhttp_set_bevcb(srv->http, conn_bevcb, srv);
	if (cfg->tls_cert && cfg->tls_key) {
		int rc = tls_setup(srv, err);
		if (rc)
			return rc;
	}
	srv->bound = evhttp_bind_socket_with_handle(srv->http, host, (ev_uint16_t)port);
	if (!srv->bound) {
		err->code = HF_EINVAL;
		snprintf(err->message, sizeof(err->message), "cannot listen on %.100s: %s",
		         cfg->listen, strerror(errno));
		return HF_EINVAL;
	}
	evconnlistener_set_error_cb(evhttp_bound_socket_get_listener(srv->bound), on_accept_error);
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	char addr[INET6_ADDRSTRLEN] = "?";
	unsigned actual = port;
	if (getsockname(evhttp_bound_socket_get_fd(srv->bound), (struct sockaddr *)&ss, &sl) == 0) {
		if (ss.ss_family == AF_INET) {
			struct sockaddr_in *in = (struct sockaddr_in *)&ss;
			inet_ntop(AF_INET, &in->sin_addr, addr, sizeof(addr));
			actual = ntohs(in->sin_port);
		} else if (ss.ss_family == AF_INET6) {
			struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
			inet_ntop(AF_INET6, &in6->sin6_addr, addr, sizeof(addr));
			actual = ntohs(in6->sin6_port);
		}
	}
	hf__log(HF__LOG_LIFE, "listening", " addr=%s port=%u tls=%s auth=%s", addr, actual,
	        srv->tls ? "on" : "off", cfg->n_api_keys ? "on" : "off");
	return HF_OK;
out_nomem:
	err->code = HF_ENOMEM;
	snprintf(err->message, sizeof(err->message), "out of memory");
	return HF_ENOMEM;
}

/* ---- Drain and stop. -------------------------------------------------------------- */

/* While draining: closes connections with nothing in flight and nothing left to write,
 * and ends the loop when none are left (or the drain time is up). */
static void on_drain_tick(evutil_socket_t fd, short what, void *arg)
{
	struct hf__server *srv = arg;
	(void)fd;
	(void)what;
	for (size_t b = 0; b < srv->conn_buckets; b++) {
		struct hf__conn *c = srv->conn_tab[b], *next;
		for (; c; c = next) {
			next = c->next;
			if (!c->rqs && c->unflushed <= 0)
				evhttp_connection_free(c->evcon); /* runs on_conn_close */
		}
	}
	int64_t now = hf__mono_us() / 1000;
	if ((srv->n_rqs == 0 && srv->n_conns == 0) || now >= srv->drain_deadline_ms) {
		if (srv->n_rqs || srv->n_conns)
			hf__log(HF__LOG_WARN, "drain_timeout", " requests=%zu connections=%zu",
			        srv->n_rqs, srv->n_conns);
		event_base_loopexit(srv->base, NULL);
	}
}

void hf__http_drain(struct hf__server *srv)
{
	if (srv->draining)
		return;
	srv->draining = true;
	srv->drain_deadline_ms = hf__mono_us() / 1000 + srv->cfg->drain_s * 1000;
	hf__log(HF__LOG_LIFE, "draining", " requests=%zu connections=%zu", srv->n_rqs, srv->n_conns);
	if (srv->bound) {
		evhttp_del_accept_socket(srv->http, srv->bound);
		srv->bound = NULL;
	}
	for (struct hf__rq *rq = srv->rqs; rq; rq = rq->srv_next)
		if (rq->parked && rq->call_pending)
			hf_cancel(srv->store, rq->call_id);
	hf__stats_drain(srv);
	srv->drain_ev = event_new(srv->base, -1, EV_PERSIST, on_drain_tick, srv);
	if (!srv->drain_ev) {
		event_base_loopexit(srv->base, NULL);
		return;
	}
	event_add(srv->drain_ev, &(struct timeval){.tv_usec = 20000});
	event_active(srv->drain_ev, EV_TIMEOUT, 0);
}

void hf__http_stop(struct hf__server *srv)
{
	/* The store is closed: no completion will come. Free what still waits for one. */
	while (srv->rqs) {
		struct hf__rq *rq = srv->rqs;
		rq->call_pending = false;
		if (!rq->gone)
			rq->req = NULL; /* attached: freed with its connection by evhttp_free */
		rq->status = rq->status ? rq->status : 503;
		rq_free(rq);
	}
	if (srv->drain_ev)
		event_free(srv->drain_ev);
	if (srv->batch_ev)
		event_free(srv->batch_ev);
	srv->batch_ev = NULL;
	if (srv->accept_ev)
		event_free(srv->accept_ev);
	srv->accept_ev = NULL;
	if (srv->http)
		evhttp_free(srv->http); /* closes the connections: on_conn_close frees them */
	free(srv->conn_tab);
	if (srv->tls)
		SSL_CTX_free(srv->tls);
	srv->http = NULL;
	srv->conn_tab = NULL;
	srv->drain_ev = NULL;
	srv->tls = NULL;
}
