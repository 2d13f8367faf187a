/*
 * http.c — holdfastd's HTTP serving on libevent bufferevents: the listener (plain or TLS),
 * connections (reading requests with http1.c's parser, limits, timeouts, the close that
 * cancels waits), API keys, request bodies, the life of a request from arrival to answer,
 * store calls, and the SIGTERM drain.
 */
#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <netdb.h>
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
#include <event2/listener.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "core/codec.h"
#include "server/server.h"

/*
 * An open connection, from accept (on_accept) to close (conn_close). It serves one request
 * at a time: a pipelined request waits in the input until the answer before it is written
 * out, which keeps answers in order without a queue. Until it has presented a valid API key
 * (or, without keys, sent a request) it is "pending": pending connections may hold at most
 * half of --max-connections, the oldest idle one makes room for a newcomer, and with keys
 * configured a body over PREAUTH_BODY_MAX is refused before it is read.
 */
struct hf__conn {
	struct bufferevent *bev;
	struct hf__rq *rq;     /* the request being read (chunked body) or served; NULL: idle */
	struct event *timer;   /* the deadline of the request being read (or of an idle one) */
	struct event *resume;  /* reads the next pipelined request, or closes, on a later turn */
	struct hf__conn *prev, *next;           /* srv->conns */
	struct hf__conn *pend_prev, *pend_next; /* the pending list, oldest first */
	int64_t accepted_ms;   /* monotonic */
	int64_t deadline_us;   /* monotonic end of the request being read; 0: one is served */
	size_t head_len;       /* the head in the input is complete, this long (0: not yet) */
	size_t scanned;        /* input bytes already searched for the head's end */
	struct hf__h1_chunked chunk; /* a chunked body being decoded into chunks */
	struct evbuffer *chunks;
	bool authed;           /* no longer pending */
	bool over_limit;       /* came with every slot taken: its request gets 429 */
	bool closing;          /* close once the output is written; read nothing more */
	bool eof;              /* the client shut its side: answer what came, then close */
	bool continued;        /* "100 Continue" sent for the request being read */
	bool in_read;          /* conn_read is on the stack: conn_close leaves the free to it */
	bool doomed;           /* closed while in_read */
};

/* The kernel's send buffer of an event stream's socket (it doubles it): see
 * hf__rq_stream_start. */
#define STREAM_SNDBUF (128 * 1024)

/* With API keys: body bytes a connection that has not shown a valid key may send. */
#define PREAUTH_BODY_MAX 8192

int64_t hf__mono_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Bodies up to --max-body are served; up to this cap they are read and refused with a JSON
 * 413 (a client writing its whole body before reading would otherwise see a reset instead
 * of the answer); above it they are refused from the head, and the connection closed. */
static uint64_t body_cap(const struct hf__config *cfg)
{
	return (uint64_t)cfg->max_body * 4 + 65536;
}

/* ---- Connections. ------------------------------------------------------------------- */

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

static void rq_free(struct hf__rq *rq);
static void rq_discard(struct hf__rq *rq);

/*
 * Closes a connection: the client closed it, it timed out, or we close it. A request still
 * waiting for its answer is detached: nobody will read the answer, so its store call is
 * cancelled and the request freed when the completion arrives (the `gone` flag).
 */
static void conn_close(struct hf__server *srv, struct hf__conn *conn)
{
	if (!conn->bev)
		return; /* closed already, freed by conn_read */
	pending_remove(srv, conn);
	if (conn->prev)
		conn->prev->next = conn->next;
	else
		srv->conns = conn->next;
	if (conn->next)
		conn->next->prev = conn->prev;
	srv->n_conns--;
	struct hf__rq *rq = conn->rq;
	conn->rq = NULL;
	if (rq && !rq->dispatched) {
		rq_discard(rq);
	} else if (rq) {
		rq->conn = NULL;
		rq->gone = true;
		if (rq->yield_fn) {
			/* on_yield frees it */
		} else if (rq->call_pending) {
			hf__log(HF__LOG_DEBUG, "client_gone", " route=%s", hf__route_pattern(rq->route));
			hf_cancel(srv->store, rq->call_id);
		} else {
			rq_free(rq);
		}
	}
	bufferevent_free(conn->bev); /* closes the socket (and frees the SSL) */
	conn->bev = NULL;
	event_free(conn->timer);
	event_free(conn->resume);
	if (conn->chunks)
		evbuffer_free(conn->chunks);
	if (conn->in_read)
		conn->doomed = true;
	else
		free(conn);
}

/* Whether a request of the connection is being served (not merely read). */
static bool conn_busy(const struct hf__conn *conn)
{
	return conn->rq && conn->rq->dispatched;
}

/* Starts the deadline of the next request. The timer is not moved per request (an
 * event_add and an event_del each): it stays pending, and on_conn_timer checks
 * deadline_us when it fires, re-arming itself for what is left. */
static void deadline_arm(struct hf__server *srv, struct hf__conn *conn)
{
	conn->deadline_us = hf__mono_us() + srv->cfg->timeout_s * 1000000;
	if (!event_pending(conn->timer, EV_TIMEOUT, NULL))
		event_add(conn->timer, &(struct timeval){.tv_sec = srv->cfg->timeout_s});
}

/* A connection whose request is done: close it once written, or wait for the next request
 * (already in the input: read on a later turn, not from inside the answer's call chain). */
static void conn_idle(struct hf__server *srv, struct hf__conn *conn)
{
	if (conn->closing) {
		bufferevent_disable(conn->bev, EV_READ);
		if (evbuffer_get_length(bufferevent_get_output(conn->bev)) == 0)
			event_active(conn->resume, EV_TIMEOUT, 0);
		return;
	}
	deadline_arm(srv, conn); /* the next request must come whole within the timeout */
	if (!conn->in_read && evbuffer_get_length(bufferevent_get_input(conn->bev)))
		event_active(conn->resume, EV_TIMEOUT, 0);
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

/* ---- Request blocks and the body arena. ------------------------------------------ */

/*
 * A request (with its head, body and path parameter) that fits RQ_BLOCK with ARENA_MIN to
 * spare is one block of the server's pool: freed requests leave their block for the next
 * (at most RQ_POOL_MAX kept; a sanitizer build keeps none, so that a use after free is
 * caught). The rest of the block is the arena the body's JSON tree is built in for routes
 * that only borrow it: jansson's allocation functions (set once, process-wide) take from
 * the arena of arena_rq, the request whose body this thread is reading or releasing, and are
 * malloc and free otherwise. A lock pair's two requests and their trees were 16 of its 78
 * allocations (bench/instructions.sh, w2cpu-body and w2cpu-arena).
 */
#define RQ_BLOCK 2048
#define ARENA_MIN 512
#if defined(__SANITIZE_ADDRESS__) /* gcc */
#define RQ_POOL_MAX 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) /* clang */
#define RQ_POOL_MAX 0
#endif
#endif
#ifndef RQ_POOL_MAX
#define RQ_POOL_MAX 64
#endif
static const size_t rq_pool_max = RQ_POOL_MAX; /* a variable: "n < 0" is no warning then */

static _Thread_local struct hf__rq *arena_rq;

static bool arena_owns(const struct hf__rq *rq, const void *p)
{
	uintptr_t a = (uintptr_t)rq->arena, x = (uintptr_t)p;
	return x >= a && x < a + rq->arena_cap;
}

static void *arena_malloc(size_t n)
{
	struct hf__rq *rq = arena_rq;
	size_t need = (n + 15) & ~(size_t)15;
	if (rq && n && need >= n && need <= rq->arena_cap - rq->arena_used) {
		void *p = rq->arena + rq->arena_used;
		rq->arena_used += need;
		return p;
	}
	return malloc(n);
}

static void arena_free(void *p)
{
	struct hf__rq *rq = arena_rq;
	if (rq && arena_owns(rq, p))
		return; /* goes with the block */
	free(p);
}

/* A block for a request of `need` bytes: from the pool, or malloc'd (RQ_BLOCK bytes, or need
 * when it does not fit one). */
static struct hf__rq *rq_block(struct hf__server *srv, size_t need, bool *pooled)
{
	*pooled = need + ARENA_MIN <= RQ_BLOCK;
	if (*pooled && srv->rq_pool) {
		struct hf__rq *rq = srv->rq_pool;
		srv->rq_pool = *(void **)rq;
		srv->rq_pool_n--;
		return rq;
	}
	return malloc(*pooled ? RQ_BLOCK : need);
}

/* Frees a request that was never routed (its body was still being read). */
static void rq_discard(struct hf__rq *rq)
{
	struct hf__server *srv = rq->srv;
	free(rq->body_owned);
	free(rq->extra);
	if (rq->pooled && srv->rq_pool_n < rq_pool_max) {
		*(void **)rq = srv->rq_pool;
		srv->rq_pool = rq;
		srv->rq_pool_n++;
		return;
	}
	free(rq);
}

/*
 * Sends a whole answer (srv->answer, see answer_head) on the socket now, in the turn that
 * made it: through the bufferevent it would go on the socket's next writable event, which
 * costs an epoll_ctl to watch for it, a poll, and an epoll_ctl to stop (docs/benchmarks.md,
 * "Latency").
 * What the socket does not take (a full buffer, an error) is left to the bufferevent,
 * behind nothing: answer_head stages only when its output is empty.
 */
static void answer_write(struct hf__server *srv, struct hf__conn *conn)
{
	if (!conn) {
		evbuffer_drain(srv->answer, evbuffer_get_length(srv->answer));
		return;
	}
	struct evbuffer *out = bufferevent_get_output(conn->bev);
	if (evbuffer_get_length(out) == 0)
		(void)evbuffer_write(srv->answer, bufferevent_getfd(conn->bev));
	if (evbuffer_get_length(srv->answer))
		evbuffer_add_buffer(out, srv->answer);
}

/* Frees a request's context, sending its answer if one is written. The access log line is
 * written here. */
static void rq_free(struct hf__rq *rq)
{
	struct hf__server *srv = rq->srv;
	if (hf__log_enabled(HF__LOG_INFO))
		hf__log_request(hf__route_pattern(rq->route), rq->status, hf__mono_us() - rq->t0_us,
		                rq->gone);
	hf__stats_request(srv, rq->status);
	if (rq->ev_waiter)
		srv->n_ev_waiters--;
	srv_unlink_rq(srv, rq);
	struct hf__conn *conn = rq->conn;
	if (srv->answer && evbuffer_get_length(srv->answer))
		answer_write(srv, conn);
	if (conn) {
		conn->rq = NULL;
		conn_idle(srv, conn);
	}
	arena_rq = rq; /* the body's tree may be in rq's arena */
	json_decref(rq->body);
	arena_rq = NULL;
	json_decref(rq->acc);
	if (rq->ev_timer)
		event_free(rq->ev_timer);
	if (rq->yield_ev)
		event_free(rq->yield_ev);
	if (rq->acc_out)
		evbuffer_free(rq->acc_out);
	if (rq->stat_owned)
		free(rq->stat_name);
	rq_discard(rq);
}

const char *hf__rq_header(struct hf__rq *rq, const char *name)
{
	if (!rq->head)
		return NULL;
	int id = hf__h1_known(name, strlen(name));
	if (id >= 0)
		return rq->known[id] < 0 ? NULL : rq->head + rq->fields[rq->known[id]].value;
	for (unsigned i = 0; i < rq->n_fields; i++)
		if (strcasecmp(rq->head + rq->fields[i].name, name) == 0)
			return rq->head + rq->fields[i].value;
	return NULL;
}

void hf__rq_add_header(struct hf__rq *rq, const char *name, const char *value)
{
	size_t nl = strlen(name), vl = strlen(value);
	char *e = realloc(rq->extra, rq->extra_len + nl + vl + 4);
	if (!e)
		return; /* out of memory: the answer goes without it */
	rq->extra = e;
	e += rq->extra_len;
	memcpy(e, name, nl);
	memcpy(e + nl, ": ", 2);
	memcpy(e + nl + 2, value, vl);
	memcpy(e + nl + 2 + vl, "\r\n", 2);
	rq->extra_len += nl + vl + 4;
}

/* The Date header's value, formatted once a second rather than per answer. The loop
 * thread only. */
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

/*
 * Writes the head of rq's answer (status line and headers, in one evbuffer_add) and
 * returns the output buffer to add the body to; NULL when nobody reads it (the client is
 * gone) or when the body must not be sent (HEAD). len < 0: a stream (chunked, or up to
 * the close for an HTTP/1.0 client).
 */
static struct evbuffer *answer_head(struct hf__rq *rq, int status, const char *ctype,
                                    int64_t len)
{
	struct hf__conn *conn = rq->conn;
	rq->status = status;
	if (!conn || rq->gone)
		return NULL;
	const struct hf__server *srv = rq->srv;
	/* With keys, a connection that showed none serves one request: its next request
	 * would be read (body and all) before we could tell. */
	bool close = rq->close || !rq->keep_alive || srv->draining || conn->eof ||
	             conn->over_limit || (!conn->authed && srv->cfg->n_api_keys) ||
	             (len < 0 && rq->http10);
	struct hf__h1_answer a = {
		.status = status,
		.ctype = ctype,
		.date = http_date(),
		.content_length = len,
		.chunked = len < 0 && !rq->http10 && !rq->head_only,
		.close = close,
		.keep_alive = !close && rq->http10,
		.extra = rq->extra,
		.extra_len = rq->extra_len,
	};
	char stack[512];
	size_t need = hf__h1_head_size(&a);
	char *head = need <= sizeof(stack) ? stack : malloc(need);
	struct evbuffer *out = bufferevent_get_output(conn->bev);
	if (len >= 0 && !srv->tls && evbuffer_get_length(out) == 0)
		out = srv->answer; /* answer_write sends it, with rq_free */
	if (head)
		evbuffer_add(out, head, hf__h1_write_head(head, &a));
	if (head != stack)
		free(head);
	if (close)
		conn->closing = true;
	return head && !rq->head_only ? out : NULL;
}

/* Sends the answer, if anyone is there to read it, and frees rq. */
static void rq_send(struct hf__rq *rq, int status, const char *ctype, const char *data,
                    size_t len)
{
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
	struct evbuffer *out = answer_head(rq, status, ctype, (int64_t)len);
	if (out)
		evbuffer_add(out, data, len);
	rq_free(rq);
}

void hf__rq_send_buffer(struct hf__rq *rq, int status, const char *ctype, struct evbuffer *body)
{
	size_t len = body ? evbuffer_get_length(body) : 0;
	struct evbuffer *out = answer_head(rq, status, ctype, (int64_t)len);
	if (out && body)
		evbuffer_add_buffer(out, body); /* moves the chains: no copy */
	else if (body)
		evbuffer_drain(body, len);
	rq_free(rq);
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

/* Answers with JSON text (not taken) and a final newline, friendlier in a terminal; frees
 * rq. */
static void send_json_text(struct hf__rq *rq, int status, const char *text, size_t len)
{
	if (rq->streaming) {
		rq_send(rq, status, "application/json", text, len);
		return;
	}
	struct evbuffer *out = answer_head(rq, status, "application/json", (int64_t)len + 1);
	if (out) {
		evbuffer_add(out, text, len);
		evbuffer_add(out, "\n", 1);
	}
	rq_free(rq);
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
	send_json_text(rq, status, text, strlen(text));
	free(text);
}

void hf__rq_send_hold(struct hf__rq *rq, int status, const hf_hold *hold)
{
	char stack[1024]; /* a hold of a few resources: no allocation */
	struct hf__jw w;
	hf__jw_init_buf(&w, stack, sizeof(stack));
	hf__jw_hold(&w, hold);
	hf__jw_lit(&w, "\n");
	if (w.oom) {
		hf__rq_send_json(rq, status, NULL); /* answers out of memory */
		return;
	}
	rq_send(rq, status, "application/json", w.buf, w.len);
	hf__jw_release(&w);
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


/* A stream's answer (SSE): the head now, then chunks, then the end. HTTP/1.1 clients get
 * chunked framing; HTTP/1.0 ones the bytes as they are, ended by the close. */
void hf__rq_stream_start(struct hf__rq *rq, const char *ctype)
{
	rq->streaming = true;
	/* A fixed socket send buffer for a stream: left to autotuning, the kernel holds up to
	 * 4 MiB for a client that does not read, and takes it in bursts whenever memory frees up
	 * elsewhere, which restarts the stall clocks (events.c's pause, the write timeout). */
	if (rq->conn && !rq->gone) {
		int size = STREAM_SNDBUF;
		evutil_socket_t fd = bufferevent_getfd(rq->conn->bev);
		if (fd >= 0)
			(void)setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof(size));
	}
	hf__rq_add_header(rq, "Cache-Control", "no-cache");
	answer_head(rq, 200, ctype, -1);
}

void hf__rq_stream_chunk(struct hf__rq *rq, const char *data, size_t len)
{
	if (!rq->conn || rq->gone || rq->head_only || !len)
		return;
	struct bufferevent *bev = rq->conn->bev;
	struct evbuffer *out = bufferevent_get_output(bev);
	/* Each piece restarts the write timeout (as evhttp's did): a stream's stall is judged
	 * by events.c, paused streams against --timeout, all on one clock. */
	bufferevent_enable(bev, EV_WRITE);
	if (rq->http10) {
		evbuffer_add(out, data, len);
		return;
	}
	char size[24];
	size_t n = hf__h1_hex(size, len);
	memcpy(size + n, "\r\n", 2);
	evbuffer_add(out, size, n + 2);
	evbuffer_add(out, data, len);
	evbuffer_add(out, "\r\n", 2);
}

void hf__rq_stream_end(struct hf__rq *rq)
{
	if (rq->conn && !rq->gone && !rq->head_only && !rq->http10)
		evbuffer_add(bufferevent_get_output(rq->conn->bev), "0\r\n\r\n", 5);
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
	if (!rq->conn || rq->gone)
		return 0;
	return evbuffer_get_length(bufferevent_get_output(rq->conn->bev));
}

void hf__rq_drop(struct hf__rq *rq, const char *why)
{
	hf__log(HF__LOG_WARN, "client_dropped", " route=%s reason=%s",
	        hf__route_pattern(rq->route), why);
	if (rq->conn && !rq->gone) {
		conn_close(rq->srv, rq->conn); /* frees rq: nothing is pending */
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

/* A timer due now, not event_base_once: libevent (2.1) makes a once-event with no timeout
 * active at once, and runs the active queue to empty, newcomers included, before it polls
 * again, so a chain of such "yields" let no other connection in. A due timer is activated
 * only after the next poll, behind the I/O that poll found. */
void hf__rq_yield(struct hf__rq *rq, void (*fn)(struct hf__rq *rq))
{
	assert(!rq->yield_fn && !rq->call_pending);
	if (!rq->yield_ev)
		rq->yield_ev = evtimer_new(rq->srv->base, on_yield, rq);
	if (!rq->yield_ev || evtimer_add(rq->yield_ev, &(struct timeval){0}) != 0) {
		hf__rq_fail(rq, HF_ENOMEM, "out of memory");
		return;
	}
	rq->yield_fn = fn;
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


bool hf__rq_read_body(struct hf__rq *rq, bool in_arena)
{
	size_t len = rq->body_len;
	if ((int64_t)len > rq->srv->cfg->max_body) {
		hf__rq_fail(rq, HF_EBODY, "request body is %zu bytes, the limit is %lld", len,
		            (long long)rq->srv->cfg->max_body);
		return false;
	}
	if (in_arena)
		arena_rq = rq;
	if (len == 0) { /* no body: as {}, so that the missing fields are named */
		rq->body = json_object();
		arena_rq = NULL;
		if (!rq->body) {
			hf__rq_fail(rq, HF_ENOMEM, "out of memory");
			return false;
		}
		return true;
	}
	json_error_t jerr;
	rq->body = hf__json_loadb(rq->body_data, len, &jerr);
	arena_rq = NULL;
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
	return rq->method_name ? rq->method_name : "?";
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
		if (c != except && !c->rq && !c->in_read &&
		    evbuffer_get_length(bufferevent_get_output(c->bev)) == 0) {
			srv->conns_evicted++;
			hf__log(HF__LOG_DEBUG, "conn_evicted", " pending=%zu", srv->n_pending);
			conn_close(srv, c);
			return true;
		}
	}
	return false;
}

/*
 * Makes the request of a parsed head: one block (rq_block) for the request, its fields, the
 * head's bytes (copied from p, its strings NUL-terminated in place), body_len bytes of
 * body space and the space of a decoded path parameter after them. h NULL: a request
 * refused before its head could be read.
 */
static struct hf__rq *rq_make(struct hf__server *srv, struct hf__conn *conn, const char *p,
                              const struct hf__h1_head *h, size_t body_len)
{
	size_t nf = h ? h->n_fields : 0, hl = h ? h->len : 0;
	size_t fsize = nf * sizeof(struct hf__h1_field);
	size_t psize = HF__PARAM_HEADROOM + (h ? h->path_len : 0) + 1;
	size_t need = sizeof(struct hf__rq) + fsize + hl + 1 + body_len + 1 + psize;
	size_t at = (need + 15) & ~(size_t)15; /* the arena, aligned as malloc's memory */
	bool pooled;
	struct hf__rq *rq = rq_block(srv, at, &pooled);
	if (!rq)
		return NULL;
	memset(rq, 0, sizeof(*rq));
	rq->pooled = pooled;
	if (pooled) {
		rq->arena = (char *)rq + at;
		rq->arena_cap = RQ_BLOCK - at;
	}
	rq->srv = srv;
	rq->conn = conn;
	rq->t0_us = hf__mono_us();
	rq->path = "/";
	memset(rq->known, -1, sizeof(rq->known));
	struct hf__h1_field *fields = (struct hf__h1_field *)(rq + 1);
	char *head = (char *)(rq + 1) + fsize;
	char *body = head + hl + 1;
	body[0] = body[body_len] = '\0';
	rq->body_data = body;
	rq->body_len = body_len;
	rq->param_space = body + body_len + 1;
	if (!h)
		return rq;
	memcpy(fields, h->fields, fsize);
	memcpy(head, p, hl);
	head[hl] = '\0';
	/* Each string ends at a delimiter of the head (SP, ':', '?', CR, LF): a NUL there. */
	for (size_t i = 0; i < nf; i++) {
		head[fields[i].name + fields[i].name_len] = '\0';
		head[fields[i].value + fields[i].value_len] = '\0';
	}
	head[h->method_len] = '\0';
	head[h->path_off + h->path_len] = '\0';
	if (h->has_query) {
		head[h->query_off + h->query_len] = '\0';
		rq->query = head + h->query_off;
	}
	rq->head = head;
	rq->fields = fields;
	rq->n_fields = h->n_fields;
	memcpy(rq->known, h->known, sizeof(rq->known));
	rq->method = h->method;
	rq->method_name = head + h->method_off;
	if (h->path_len)
		rq->path = head + h->path_off;
	rq->head_only = h->method == HF__M_HEAD;
	rq->http10 = h->minor == 0;
	rq->keep_alive = rq->http10 ? h->conn_keep_alive : !h->conn_close;
	return rq;
}

/* A request read whole: counted, checked against the limits, routed. */
static void dispatch(struct hf__server *srv, struct hf__conn *conn, struct hf__rq *rq)
{
	rq->dispatched = true;
	rq->srv_next = srv->rqs;
	if (srv->rqs)
		srv->rqs->srv_prev = rq;
	srv->rqs = rq;
	srv->n_rqs++;
	conn->rq = rq;
	conn->deadline_us = 0; /* read whole: no deadline while it is served */
	if (rq->refused) {
		hf__rq_fail(rq, rq->refused, "%s", rq->body_data);
		return;
	}
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
	if (srv->draining) {
		hf__rq_fail(rq, HF_ECLOSED, "server is shutting down");
		return;
	}
	hf__route_request(rq);
}

/* Answers a request the connection layer refuses (its framing, its size, no key for a
 * body) with the JSON error and closes the connection after it: what follows in the input
 * cannot be told apart from the body. code: HF_E*. */
static void refuse(struct hf__server *srv, struct hf__conn *conn, const char *p,
                   const struct hf__h1_head *h, int code, const char *msg)
{
	size_t ml = strlen(msg);
	struct hf__rq *rq = rq_make(srv, conn, p, h, ml);
	conn->closing = true;
	bufferevent_disable(conn->bev, EV_READ);
	if (!rq) {
		event_active(conn->resume, EV_TIMEOUT, 0); /* closes it */
		return;
	}
	memcpy((char *)rq->body_data, msg, ml); /* the message rides in the body space */
	rq->body_len = 0;
	rq->close = true;
	rq->refused = code;
	dispatch(srv, conn, rq);
}

/* chunked decoding's data callback: into the connection's chunks buffer. */
static void chunk_data(void *arg, const char *p, size_t n)
{
	evbuffer_add(arg, p, n);
}

/* Decodes what has come of a chunked body; dispatches the request once it is whole.
 * Returns true when the connection may read on (a request was dispatched or refused). */
static bool read_chunked(struct hf__server *srv, struct hf__conn *conn, struct evbuffer *in)
{
	struct hf__rq *rq = conn->rq;
	uint64_t cap = body_cap(srv->cfg);
	for (;;) {
		struct evbuffer_iovec v;
		if (evbuffer_peek(in, -1, NULL, &v, 1) < 1 || v.iov_len == 0)
			return false;
		size_t used = 0;
		int code = 0;
		const char *msg = NULL;
		int rc = hf__h1_chunked_feed(&conn->chunk, v.iov_base, v.iov_len, &used, cap,
		                             chunk_data, conn->chunks, &code, &msg);
		evbuffer_drain(in, used);
		if (rc == HF__H1_ERROR) {
			conn->rq = NULL;
			rq_discard(rq);
			refuse(srv, conn, NULL, NULL, code, msg);
			return true;
		}
		if (rc == HF__H1_DONE)
			break;
	}
	/* The decoded body: its own allocation (the request's was made before its size was
	 * known). */
	size_t len = evbuffer_get_length(conn->chunks);
	rq->body_owned = malloc(len + 1);
	conn->rq = NULL;
	if (!rq->body_owned) {
		rq_discard(rq);
		refuse(srv, conn, NULL, NULL, HF_ENOMEM, "out of memory");
		return true;
	}
	evbuffer_remove(conn->chunks, rq->body_owned, len);
	rq->body_owned[len] = '\0';
	rq->body_data = rq->body_owned;
	rq->body_len = len;
	dispatch(srv, conn, rq);
	return true;
}

/* Whether a connection that has shown no valid key may send this body: with keys, a body
 * larger than PREAUTH_BODY_MAX (or of unknown size) waits for nobody. */
static bool preauth_ok(struct hf__server *srv, struct hf__conn *conn, const char *p,
                       const struct hf__h1_head *h)
{
	if (conn->authed || !srv->cfg->n_api_keys)
		return true;
	if (!h->chunked && h->content_length <= PREAUTH_BODY_MAX)
		return true;
	int a = h->known[HF__H_AUTHORIZATION];
	if (a >= 0) {
		char v[512];
		const struct hf__h1_field *f = &h->fields[a];
		if (f->value_len < sizeof(v)) {
			memcpy(v, p + f->value, f->value_len);
			v[f->value_len] = '\0';
			if (bearer_ok(srv->cfg, v))
				return true;
		}
	}
	srv->conns_preauth_closed++;
	hf__log(HF__LOG_DEBUG, "conn_closed", " reason=body_before_auth");
	return false;
}

/* Finds the end of the head in the input (searching only what is new). Returns its
 * length, 0 if it has not all come; refuses a head over --max-headers. */
static size_t find_head(struct hf__server *srv, struct hf__conn *conn, struct evbuffer *in,
                        const char **p)
{
	size_t max = (size_t)srv->cfg->max_headers;
	size_t len = evbuffer_get_length(in);
	size_t lim = len < max ? len : max;
	*p = (const char *)evbuffer_pullup(in, (ev_ssize_t)lim);
	if (!*p)
		return 0;
	if (!conn->head_len) {
		/* An end straddling what was searched and what is new starts at most 3 back. */
		size_t from = conn->scanned > 3 ? conn->scanned - 3 : 0;
		size_t end = hf__h1_head_end(*p + from, lim - from);
		if (!end) {
			conn->scanned = lim;
			return 0;
		}
		conn->head_len = from + end;
	}
	return conn->head_len;
}

/* Reads one request from the input: its head, then its body. Returns true when the
 * connection may go on reading (a request was dispatched or refused), false when it needs
 * more bytes. */
static bool read_request(struct hf__server *srv, struct hf__conn *conn, struct evbuffer *in)
{
	if (conn->rq) /* a chunked body */
		return read_chunked(srv, conn, in);
	/* Empty lines before a request line are ignored (RFC 9112 2.2). */
	struct evbuffer_iovec v;
	while (!conn->head_len && evbuffer_peek(in, 1, NULL, &v, 1) >= 1 && v.iov_len &&
	       (((char *)v.iov_base)[0] == '\r' || ((char *)v.iov_base)[0] == '\n'))
		evbuffer_drain(in, 1);
	const char *p;
	size_t hl = find_head(srv, conn, in, &p);
	struct hf__h1_head h;
	if (!hl) {
		if (!p || evbuffer_get_length(in) < (size_t)srv->cfg->max_headers)
			return false;
		hf__h1_parse_head(p, (size_t)srv->cfg->max_headers, (size_t)srv->cfg->max_headers, &h);
		refuse(srv, conn, NULL, NULL, h.err_code ? h.err_code : HF_EINVAL,
		       h.err_msg[0] ? h.err_msg : "malformed request");
		return true;
	}
	if (hf__h1_parse_head(p, hl, hl + 1, &h) != HF__H1_DONE) {
		refuse(srv, conn, NULL, NULL, h.err_code, h.err_msg);
		return true;
	}
	if (!preauth_ok(srv, conn, p, &h)) {
		refuse(srv, conn, p, &h, HF_EAUTH,
		       "missing or wrong API key (Authorization: Bearer KEY)");
		return true;
	}
	uint64_t clen = h.content_length > 0 ? (uint64_t)h.content_length : 0;
	if (clen > body_cap(srv->cfg)) {
		char msg[128];
		snprintf(msg, sizeof(msg), "request body is %llu bytes, the limit is %lld",
		         (unsigned long long)clen, (long long)srv->cfg->max_body);
		refuse(srv, conn, p, &h, HF_EBODY, msg);
		return true;
	}
	if (h.chunked || evbuffer_get_length(in) < hl + clen) {
		if (h.expect_continue && !conn->continued && h.minor == 1) {
			conn->continued = true;
			evbuffer_add(bufferevent_get_output(conn->bev), "HTTP/1.1 100 Continue\r\n\r\n", 25);
		}
		if (!h.chunked)
			return false; /* the rest of the body is on its way */
	}
	struct hf__rq *rq = rq_make(srv, conn, p, &h, h.chunked ? 0 : clen);
	conn->head_len = conn->scanned = 0;
	conn->continued = false;
	if (!rq) {
		refuse(srv, conn, NULL, NULL, HF_ENOMEM, "out of memory");
		return true;
	}
	evbuffer_drain(in, hl);
	if (h.chunked) {
		if (!conn->chunks)
			conn->chunks = evbuffer_new();
		if (!conn->chunks) {
			rq_discard(rq);
			refuse(srv, conn, NULL, NULL, HF_ENOMEM, "out of memory");
			return true;
		}
		memset(&conn->chunk, 0, sizeof(conn->chunk));
		conn->rq = rq; /* not dispatched: read_chunked goes on with it */
		return read_chunked(srv, conn, in);
	}
	if (clen)
		evbuffer_remove(in, (char *)rq->body_data, clen);
	dispatch(srv, conn, rq);
	return true;
}

/* Reads and dispatches requests while the connection is free to serve one. */
static void conn_read(struct hf__server *srv, struct hf__conn *conn)
{
	struct evbuffer *in = bufferevent_get_input(conn->bev);
	conn->in_read = true;
	while (!conn->doomed && !conn->closing && (!conn->rq || !conn->rq->dispatched))
		if (!read_request(srv, conn, in))
			break;
	conn->in_read = false;
	if (conn->doomed) {
		free(conn);
		return;
	}
	/* The client has shut its side and no whole request is left: nothing more to answer.
	 * What is written still goes out (an answer that crossed the shutdown). */
	if (conn->eof && (!conn->rq || !conn->rq->dispatched) && !conn->closing) {
		conn->closing = true;
		conn_idle(srv, conn);
	}
}

static struct hf__server *the_server; /* one server per process, for libevent callbacks */

static void on_read(struct bufferevent *bev, void *arg)
{
	(void)bev;
	conn_read(the_server, arg);
}

/* The output is written out: a connection to close goes now. */
static void on_write(struct bufferevent *bev, void *arg)
{
	struct hf__conn *conn = arg;
	(void)bev;
	if (conn->closing && !conn_busy(conn))
		conn_close(the_server, conn);
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
	struct hf__conn *conn = arg;
	(void)bev;
	if (what & BEV_EVENT_CONNECTED)
		return; /* the TLS handshake is done */
	if ((what & BEV_EVENT_EOF) && !(what & BEV_EVENT_ERROR) && !(what & BEV_EVENT_TIMEOUT)) {
		/* A half-close: the client may still read. A request parked or streaming is
		 * what it gave up on (its wait is cancelled); anything else is answered first. */
		conn->eof = true;
		struct hf__rq *rq = conn->rq;
		if (conn_busy(conn) && (rq->parked || rq->streaming)) {
			conn_close(the_server, conn);
			return;
		}
		if (!conn_busy(conn))
			conn_read(the_server, conn); /* closes once nothing is left to answer */
		return;
	}
	conn_close(the_server, conn); /* an error, or no progress writing within the timeout */
}

/* The connection's later turn (conn_idle): close it once written, or read on. */
static void on_resume(evutil_socket_t fd, short what, void *arg)
{
	struct hf__conn *conn = arg;
	(void)fd;
	(void)what;
	if (conn->closing) {
		if (!conn_busy(conn) && evbuffer_get_length(bufferevent_get_output(conn->bev)) == 0)
			conn_close(the_server, conn);
		return;
	}
	if (!conn->rq)
		conn_read(the_server, conn);
}

static void on_conn_timer(evutil_socket_t fd, short what, void *arg)
{
	struct hf__conn *conn = arg;
	struct hf__server *srv = the_server;
	(void)fd;
	(void)what;
	if (conn_busy(conn))
		return; /* being served: the deadline starts again after the answer */
	int64_t left = conn->deadline_us - hf__mono_us();
	if (left > 0 || (!conn->rq && evbuffer_get_length(bufferevent_get_output(conn->bev)))) {
		/* Not yet (or still writing: the write timeout watches that). */
		left = left > 0 ? left : srv->cfg->timeout_s * 1000000;
		event_add(conn->timer, &(struct timeval){.tv_sec = left / 1000000,
		                                         .tv_usec = left % 1000000});
		return;
	}
	srv->conns_timed_out++;
	hf__log(HF__LOG_DEBUG, "conn_closed", " reason=request_timeout");
	conn_close(srv, conn);
}

/* Makes the connection's bufferevent: TLS (the handshake runs as it is read) or plain. */
static struct bufferevent *conn_bev(struct hf__server *srv, evutil_socket_t fd)
{
	if (!srv->tls)
		return bufferevent_socket_new(srv->base, fd, BEV_OPT_CLOSE_ON_FREE);
	/* On NULL the caller closes fd: no failure below closes it. Our own socket BIO (it never
	 * closes fd) so that its allocation failing is seen here: libevent would go on without
	 * one, and its bufferevent_free would then find no fd to close. */
	SSL *ssl = SSL_new(srv->tls);
	if (!ssl || !SSL_set_fd(ssl, (int)fd)) {
		SSL_free(ssl);
		return NULL;
	}
	/* ssl is libevent's from here, failure included: with BEV_OPT_CLOSE_ON_FREE every failure
	 * path of libevent >= 2.1.9 (required in CMakeLists.txt) frees it, none closes fd. */
	struct bufferevent *bev = bufferevent_openssl_socket_new(
		srv->base, fd, ssl, BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE);
	if (!bev)
		return NULL;
	/* A client that closes without close_notify has still ended the connection. */
	bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
	return bev;
}

/* A new connection: tracked, room made under the limits, its deadline started. */
static void on_accept(struct evconnlistener *lev, evutil_socket_t fd, struct sockaddr *sa,
                      int socklen, void *arg)
{
	struct hf__server *srv = arg;
	(void)lev;
	(void)sa;
	(void)socklen;
	struct bufferevent *bev = conn_bev(srv, fd);
	struct hf__conn *conn = bev ? calloc(1, sizeof(*conn)) : NULL;
	if (conn) {
		conn->timer = evtimer_new(srv->base, on_conn_timer, conn);
		conn->resume = event_new(srv->base, -1, 0, on_resume, conn);
	}
	if (!conn || !conn->timer || !conn->resume) {
		if (conn && conn->timer)
			event_free(conn->timer);
		if (conn && conn->resume)
			event_free(conn->resume);
		free(conn);
		if (bev)
			bufferevent_free(bev);
		else
			evutil_closesocket(fd);
		return;
	}
	conn->bev = bev;
	conn->accepted_ms = hf__mono_us() / 1000;
	size_t max = (size_t)srv->cfg->max_conns;
	size_t pending_max = max / 2 ? max / 2 : 1;
	while (srv->n_pending >= pending_max || srv->n_conns >= max)
		if (!evict_pending(srv, NULL, true))
			break;
	if (srv->n_conns >= max)
		conn->over_limit = true; /* unless its request proves better than a pending one */
	conn->next = srv->conns;
	if (srv->conns)
		srv->conns->prev = conn;
	srv->conns = conn;
	srv->n_conns++;
	conn->pend_prev = srv->pend_tail;
	if (srv->pend_tail)
		srv->pend_tail->pend_next = conn;
	else
		srv->pend_head = conn;
	srv->pend_tail = conn;
	srv->n_pending++;
	bufferevent_setcb(bev, on_read, on_write, on_event, conn);
	/* The input holds at most a head and a body up to the cap (and what a pipelining
	 * client sent on meanwhile): past that, reading pauses until it is consumed. */
	bufferevent_setwatermark(bev, EV_READ, 0,
	                         (size_t)srv->cfg->max_headers + body_cap(srv->cfg) + 4096);
	bufferevent_set_timeouts(bev, NULL, &(struct timeval){.tv_sec = srv->cfg->timeout_s});
	bufferevent_enable(bev, EV_READ | EV_WRITE);
	deadline_arm(srv, conn);
}

/* accept() failing (out of descriptors, mostly): libevent would retry at once, forever.
 * Pause the listener, back off, log once per episode. */
static void on_accept_resume(evutil_socket_t fd, short what, void *arg)
{
	struct hf__server *srv = arg;
	(void)fd;
	(void)what;
	if (srv->listener && !srv->draining)
		evconnlistener_enable(srv->listener);
}

static void on_accept_error(struct evconnlistener *lev, void *arg)
{
	struct hf__server *srv = arg;
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


/* Binds and listens on host:port (names resolved; the first address that binds wins). */
static struct evconnlistener *listen_on(struct hf__server *srv, const char *host,
                                        unsigned port)
{
	struct evutil_addrinfo hints = {.ai_family = AF_UNSPEC,
	                                .ai_socktype = SOCK_STREAM,
	                                .ai_protocol = IPPROTO_TCP,
	                                .ai_flags = EVUTIL_AI_PASSIVE | EVUTIL_AI_ADDRCONFIG};
	struct evutil_addrinfo *ai = NULL;
	char ports[8];
	snprintf(ports, sizeof(ports), "%u", port);
	if (evutil_getaddrinfo(host, ports, &hints, &ai) != 0 || !ai)
		return NULL;
	struct evconnlistener *lev = NULL;
	for (struct evutil_addrinfo *a = ai; a && !lev; a = a->ai_next)
		lev = evconnlistener_new_bind(srv->base, on_accept, srv,
		                              LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE |
		                                  LEV_OPT_CLOSE_ON_EXEC,
		                              -1, a->ai_addr, (int)a->ai_addrlen);
	evutil_freeaddrinfo(ai);
	return lev;
}

int hf__http_start(struct hf__server *srv, hf_error *err)
{
	const struct hf__config *cfg = srv->cfg;
	char host[256];
	unsigned port;
	the_server = srv;
	json_set_alloc_funcs(arena_malloc, arena_free);
	if (parse_listen(cfg->listen, host, sizeof(host), &port) != 0) {
		err->code = HF_EINVAL;
		snprintf(err->message, sizeof(err->message),
		         "listen address '%.100s' is not host:port", cfg->listen);
		return HF_EINVAL;
	}
	srv->batch_ev = event_new(srv->base, -1, 0, on_batch_end, srv);
	srv->answer = evbuffer_new();
	if (!srv->batch_ev || !srv->answer) {
		err->code = HF_ENOMEM;
		snprintf(err->message, sizeof(err->message), "out of memory");
		return HF_ENOMEM;
	}
	if (cfg->tls_cert && cfg->tls_key) {
		int rc = tls_setup(srv, err);
		if (rc)
			return rc;
	}
	srv->listener = listen_on(srv, host, port);
	if (!srv->listener) {
		err->code = HF_EINVAL;
		snprintf(err->message, sizeof(err->message), "cannot listen on %.100s: %s",
		         cfg->listen, strerror(errno));
		return HF_EINVAL;
	}
	evconnlistener_set_error_cb(srv->listener, on_accept_error);
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	char addr[INET6_ADDRSTRLEN] = "?";
	unsigned actual = port;
	if (getsockname(evconnlistener_get_fd(srv->listener), (struct sockaddr *)&ss, &sl) == 0) {
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
}

/* ---- Drain and stop. -------------------------------------------------------------- */

/* While draining: closes connections with nothing in flight and nothing left to write,
 * and ends the loop when none are left (or the drain time is up). */
static void on_drain_tick(evutil_socket_t fd, short what, void *arg)
{
	struct hf__server *srv = arg;
	(void)fd;
	(void)what;
	for (struct hf__conn *c = srv->conns, *next; c; c = next) {
		next = c->next;
		if (!conn_busy(c) && evbuffer_get_length(bufferevent_get_output(c->bev)) == 0)
			conn_close(srv, c);
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
	if (srv->listener) {
		evconnlistener_free(srv->listener);
		srv->listener = NULL;
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
		rq->yield_fn = NULL;
		rq->status = rq->status ? rq->status : 503;
		rq_free(rq);
	}
	while (srv->conns)
		conn_close(srv, srv->conns);
	while (srv->rq_pool) {
		void *next = *(void **)srv->rq_pool;
		free(srv->rq_pool);
		srv->rq_pool = next;
	}
	srv->rq_pool_n = 0;
	if (srv->drain_ev)
		event_free(srv->drain_ev);
	if (srv->batch_ev)
		event_free(srv->batch_ev);
	srv->batch_ev = NULL;
	if (srv->answer)
		evbuffer_free(srv->answer);
	srv->answer = NULL;
	if (srv->accept_ev)
		event_free(srv->accept_ev);
	srv->accept_ev = NULL;
	if (srv->listener)
		evconnlistener_free(srv->listener);
	if (srv->tls)
		SSL_CTX_free(srv->tls);
	srv->listener = NULL;
	srv->drain_ev = NULL;
	srv->tls = NULL;
}
