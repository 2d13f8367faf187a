/*
 * http.c — the http:// engine: a client of a holdfastd server. One background thread runs a
 * libevent loop with a small pool of keep-alive connections; each call becomes one HTTP/1.1
 * request under /v1 whose JSON reply (codec.h) fills the call's reply.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <jansson.h>

#include "core/codec.h"
#include "core/core.h"
#include "engine/engine.h"

/* Why these numbers: a short call answers in milliseconds, so 30 s only catches a hung
 * server; a parked call may legitimately take wait_ms, and the server answers wait_timeout
 * itself at wait_ms, so the margin only covers transport and journal delays. */
#define HTTP_DEFAULT_PORT 80
#define HTTP_CONNECT_TIMEOUT_MS 5000
#define HTTP_REQUEST_TIMEOUT_MS 30000
#define HTTP_WAIT_MARGIN_MS 10000
#define HTTP_CLOSE_GRACE_MS 5000   /* close(): how long in-flight short calls may finish */
#define HTTP_POOL_IDLE_MAX 8       /* idle keep-alive connections kept for reuse */
#define HTTP_POOL_IDLE_MS 20000    /* an idle connection older than this is dropped, so that
                                      we never race the server's own idle timeout */
#define HTTP_MAX_REPLY (16u << 20) /* a list of 1000 holds of 64 parts fits easily */
#define HTTP_ENV_API_KEY "HOLDFAST_API_KEY"

struct http_engine;

/* One keep-alive connection. It carries one request at a time (HTTP/1.1 without
 * pipelining), so a parked wait never delays another call. */
struct http_conn {
	struct evhttp_connection *evcon;
	bool replied;            /* a reply came back on it: a failure means the peer dropped it */
	int64_t idle_since_ms;
	struct http_conn *next;  /* the idle list or the reap list */
};

/* The engine's state for one call while it has it (call->engine_data). */
struct http_call {
	struct hf__call *call;
	struct http_engine *eng;
	struct http_conn *conn;          /* while in flight */
	struct evhttp_request *req;      /* while in flight; libevent owns it */
	struct event *connect_timer;     /* while in flight and possibly still connecting */
	enum evhttp_cmd_type method;
	bool parked;                     /* a wait the server parks: cancel() may end it */
	bool sending;                    /* inside evhttp_make_request(), which may call back */
	bool finished;                   /* completed while `sending`: send_call() frees it */
	bool got_error_kind;             /* libevent told us why the request failed */
	enum evhttp_request_error error_kind;
	int attempts;
	struct http_call *prev, *next;   /* the in-flight list, or the inbox */
};

struct http_engine {
	hf_store *store;
	char *host;               /* as evhttp wants it: no brackets around IPv6 literals */
	uint16_t port;
	char *where;              /* "host:port" for messages */
	char *authorization;      /* "Bearer KEY", or NULL */

	struct event_base *base;
	struct event *wake_ev;    /* the read end of wake_fd */
	struct event *reap_ev;    /* frees connections outside libevent's callbacks */
	struct event *grace_ev;   /* close(): ends calls still in flight after the grace time */
	int wake_fd[2];
	pthread_t thread;
	bool thread_started;

	pthread_mutex_t lock;     /* guards the three fields below: shared with submitters */
	struct http_call *inbox_head, *inbox_tail;
	uint64_t *cancels;
	size_t n_cancels, cap_cancels;
	bool closing;

	/* Loop thread only. */
	struct http_call *inflight;
	struct http_conn *idle;
	size_t n_idle;
	struct http_conn *reap;
	bool draining;            /* close() asked: finish what is in flight, then stop */
};

static int64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static struct timeval ms_to_tv(int64_t ms)
{
	struct timeval tv = {.tv_sec = (time_t)(ms / 1000), .tv_usec = (suseconds_t)(ms % 1000) * 1000};
	return tv;
}

/* ---- Connections. ------------------------------------------------------------------- */

static void conn_reap_later(struct http_engine *eng, struct http_conn *conn)
{
	/* Never free an evhttp_connection inside one of its own callbacks: libevent touches it
	 * after the callback returns. The reap event runs once the callback stack unwinds. */
	conn->next = eng->reap;
	eng->reap = conn;
	event_active(eng->reap_ev, 0, 0);
}

static void reap_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct http_engine *eng = arg;
	while (eng->reap) {
		struct http_conn *conn = eng->reap;
		eng->reap = conn->next;
		evhttp_connection_free(conn->evcon);
		free(conn);
	}
}

static struct http_conn *conn_get(struct http_engine *eng)
{
	int64_t now = mono_ms();
	while (eng->idle) {
		struct http_conn *conn = eng->idle;
		eng->idle = conn->next;
		eng->n_idle--;
		conn->next = NULL;
		if (now - conn->idle_since_ms < HTTP_POOL_IDLE_MS)
			return conn;
		conn_reap_later(eng, conn);
	}
	struct http_conn *conn = calloc(1, sizeof(*conn));
	if (!conn)
		return NULL;
	conn->evcon = evhttp_connection_base_new(eng->base, NULL, eng->host, eng->port);
	if (!conn->evcon) {
		free(conn);
		return NULL;
	}
	evhttp_connection_set_retries(conn->evcon, 0);
	evhttp_connection_set_max_body_size(conn->evcon, HTTP_MAX_REPLY);
	return conn;
}

static void conn_put(struct http_engine *eng, struct http_conn *conn, bool reusable)
{
	if (!reusable || eng->draining || eng->n_idle >= HTTP_POOL_IDLE_MAX) {
		conn_reap_later(eng, conn);
		return;
	}
	conn->idle_since_ms = mono_ms();
	conn->next = eng->idle;
	eng->idle = conn;
	eng->n_idle++;
}

/* ---- Completing calls. -------------------------------------------------------------- */

static void inflight_add(struct http_engine *eng, struct http_call *hc)
{
	hc->prev = NULL;
	hc->next = eng->inflight;
	if (eng->inflight)
		eng->inflight->prev = hc;
	eng->inflight = hc;
}

static void inflight_remove(struct http_engine *eng, struct http_call *hc)
{
	if (hc->prev)
		hc->prev->next = hc->next;
	else if (eng->inflight == hc)
		eng->inflight = hc->next;
	if (hc->next)
		hc->next->prev = hc->prev;
	hc->prev = hc->next = NULL;
}

static void maybe_stop(struct http_engine *eng)
{
	if (eng->draining && !eng->inflight)
		event_base_loopexit(eng->base, NULL);
}

/* Hands the call back to the store with whatever reply it has (error set by the caller or
 * a filled reply) and frees the engine's part. The connection must already be detached. */
static void call_finish(struct http_call *hc)
{
	struct http_engine *eng = hc->eng;
	if (hc->sending) {
		/* libevent failed the connect synchronously inside evhttp_make_request(); the
		 * sender is still on the stack and completes the call when it returns. */
		hc->finished = true;
		return;
	}
	inflight_remove(eng, hc);
	if (hc->connect_timer)
		event_free(hc->connect_timer);
	hc->call->engine_data = NULL;
	hf__call_done(hc->call);
	free(hc);
	maybe_stop(eng);
}

static void call_fail(struct http_call *hc, int code, const char *fmt, ...) HF__PRINTF(3, 4);

static void call_fail(struct http_call *hc, int code, const char *fmt, ...)
{
	hf_reply *reply = hc->call->reply;
	reply->error.code = code;
	if (fmt) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(reply->error.message, sizeof(reply->error.message), fmt, ap);
		va_end(ap);
	} else {
		snprintf(reply->error.message, sizeof(reply->error.message), "%s", hf_strerror(code));
	}
	call_finish(hc);
}

/* Aborts the request on the wire (the server sees the connection close and stops waiting)
 * and completes the call with `code`. */
static void call_abort(struct http_call *hc, int code, const char *why)
{
	struct http_engine *eng = hc->eng;
	if (hc->req) {
		/* The request's callback will not run; libevent frees the request and resets the
		 * connection, which we then drop. */
		evhttp_cancel_request(hc->req);
		hc->req = NULL;
	}
	if (hc->conn) {
		conn_put(eng, hc->conn, false);
		hc->conn = NULL;
	}
	call_fail(hc, code, "%s", why);
}

/* ---- Requests to HTTP. ------------------------------------------------------------------ */

/* Appends `s` percent-encoded (RFC 3986 unreserved characters stay) to buf. */
static int add_encoded(struct evbuffer *buf, const char *s)
{
	char *enc = evhttp_uriencode(s, -1, 0);
	if (!enc)
		return HF_ENOMEM;
	int rc = evbuffer_add(buf, enc, strlen(enc)) == 0 ? HF_OK : HF_ENOMEM;
	free(enc);
	return rc;
}

/* Appends "&key=value" (or "?key=value" for the first) to a query. */
static int add_param(struct evbuffer *buf, bool *first, const char *key, const char *value)
{
	if (evbuffer_add_printf(buf, "%s%s=", *first ? "?" : "&", key) < 0)
		return HF_ENOMEM;
	*first = false;
	return add_encoded(buf, value);
}

static int add_param_u64(struct evbuffer *buf, bool *first, const char *key, uint64_t v)
{
	char num[24];
	snprintf(num, sizeof(num), "%" PRIu64, v);
	return add_param(buf, first, key, num);
}

/* The method, path and body of a call. *body may stay NULL (no body). */
static int build_request(const hf_request *r, enum evhttp_cmd_type *method, struct evbuffer *path,
                         json_t **body, hf_error *err)
{
	int rc = HF_OK;
	bool first = true;
	*body = NULL;
	*method = EVHTTP_REQ_GET;
	switch (r->op) {
	case HF_OP_PUT_RESOURCE:
	case HF_OP_GET_RESOURCE:
	case HF_OP_DELETE_RESOURCE:
		*method = r->op == HF_OP_PUT_RESOURCE   ? EVHTTP_REQ_PUT
		          : r->op == HF_OP_GET_RESOURCE ? EVHTTP_REQ_GET
		                                        : EVHTTP_REQ_DELETE;
		evbuffer_add_printf(path, "/v1/resources/");
		rc = add_encoded(path, r->name);
		if (rc == HF_OK && r->op == HF_OP_PUT_RESOURCE) {
			*body = json_object();
			if (!*body || json_object_set_new(*body, "capacity", json_integer(r->capacity)))
				return hf__err_code(err, HF_ENOMEM);
			if (r->meta) {
				json_error_t jerr;
				json_t *meta = json_loads(r->meta, 0, &jerr);
				if (!meta)
					return hf__err(err, HF_EINVAL, "meta is not valid json: %s", jerr.text);
				if (json_object_set_new(*body, "meta", meta))
					return hf__err_code(err, HF_ENOMEM);
			}
		}
		break;
	case HF_OP_LIST_RESOURCES:
		evbuffer_add_printf(path, "/v1/resources");
		if (r->cursor)
			rc = add_param(path, &first, "cursor", r->cursor);
		if (rc == HF_OK)
			rc = add_param_u64(path, &first, "limit", r->limit ? r->limit : 100);
		break;
	case HF_OP_ACQUIRE:
		*method = EVHTTP_REQ_POST;
		evbuffer_add_printf(path, "/v1/holds");
		*body = hf__acquire_to_json(&r->acquire);
		if (!*body)
			return hf__err_code(err, HF_ENOMEM);
		break;
	case HF_OP_EXTEND:
	case HF_OP_CONFIRM:
	case HF_OP_RELEASE:
		*method = EVHTTP_REQ_POST;
		evbuffer_add_printf(path, "/v1/holds/");
		rc = add_encoded(path, r->hold_id);
		if (rc == HF_OK)
			evbuffer_add_printf(path, "/%s", r->op == HF_OP_EXTEND    ? "extend"
			                                 : r->op == HF_OP_CONFIRM ? "confirm"
			                                                          : "release");
		*body = json_object();
		if (r->op == HF_OP_RELEASE && r->operator_release) {
			/* The server decides: it needs its API key, which this engine sends. */
			if (!*body || json_object_set_new(*body, "operator", json_true()))
				return hf__err_code(err, HF_ENOMEM);
			break;
		}
		if (!*body || json_object_set_new(*body, "token", json_string(r->token ? r->token : "")))
			return hf__err_code(err, HF_ENOMEM);
		if (r->op == HF_OP_EXTEND && json_object_set_new(*body, "ttl_ms", json_integer(r->ttl_ms)))
			return hf__err_code(err, HF_ENOMEM);
		break;
	case HF_OP_GET_HOLD:
		evbuffer_add_printf(path, "/v1/holds/");
		rc = add_encoded(path, r->hold_id);
		break;
	case HF_OP_LIST_HOLDS:
		evbuffer_add_printf(path, "/v1/holds");
		if (r->owner)
			rc = add_param(path, &first, "owner", r->owner);
		if (rc == HF_OK && r->resource)
			rc = add_param(path, &first, "resource", r->resource);
		if (rc == HF_OK && r->state >= 0)
			rc = add_param(path, &first, "state", hf_hold_state_name((hf_hold_state)r->state));
		if (rc == HF_OK && r->cursor)
			rc = add_param(path, &first, "cursor", r->cursor);
		if (rc == HF_OK)
			rc = add_param_u64(path, &first, "limit", r->limit ? r->limit : 100);
		break;
	case HF_OP_LIST_WAITERS:
		evbuffer_add_printf(path, "/v1/resources/");
		rc = add_encoded(path, r->name);
		if (rc == HF_OK)
			evbuffer_add_printf(path, "/waiters");
		if (rc == HF_OK && r->cursor)
			rc = add_param(path, &first, "cursor", r->cursor);
		if (rc == HF_OK)
			rc = add_param_u64(path, &first, "limit", r->limit ? r->limit : 100);
		break;
	case HF_OP_READ_EVENTS:
		evbuffer_add_printf(path, "/v1/events");
		rc = add_param_u64(path, &first, "after", r->after);
		if (rc == HF_OK)
			rc = add_param_u64(path, &first, "limit", r->limit ? r->limit : 100);
		if (rc == HF_OK)
			rc = add_param_u64(path, &first, "wait_ms", (uint64_t)r->wait_ms);
		break;
	default:
		return hf__err(err, HF_ENOTSUP, "operation %d is not supported by the http engine", (int)r->op);
	}
	if (rc != HF_OK)
		return hf__err_code(err, rc);
	return HF_OK;
}

/* ---- Replies from HTTP. ------------------------------------------------------------------ */

/* The error of a non-2xx reply whose body is not a holdfast error object. */
static int status_to_code(int status)
{
	switch (status) {
	case 400: return HF_EINVAL;
	case 401: return HF_EAUTH;
	case 403: return HF_ETOKEN;
	case 404: return HF_EROUTE;
	case 405: return HF_EMETHOD;
	case 410: return HF_EENDED;
	case 413: return HF_EBODY;
	case 429: return HF_ELIMIT;
	case 501: return HF_ENOTSUP;
	case 502:
	case 503:
	case 504: return HF_EENGINE;
	default: return status >= 500 ? HF_EINTERNAL : HF_EPROTO;
	}
}

static int parse_resource(const json_t *j, hf_resource **out, hf_error *err)
{
	hf_resource *res = calloc(1, sizeof(*res));
	if (!res)
		return hf__err_code(err, HF_ENOMEM);
	int rc = hf__resource_from_json(j, res, err);
	if (rc != HF_OK) {
		hf__resource_clear(res);
		free(res);
		return rc;
	}
	*out = res;
	return HF_OK;
}

static int parse_hold(const json_t *j, hf_hold **out, hf_error *err)
{
	hf_hold *hold = calloc(1, sizeof(*hold));
	if (!hold)
		return hf__err_code(err, HF_ENOMEM);
	int rc = hf__hold_from_json(j, hold, err);
	if (rc != HF_OK) {
		hf_hold_free(hold);
		return rc;
	}
	*out = hold;
	return HF_OK;
}

/* A JSON array of items into a new C array; `from` parses one, `clear` undoes one. */
typedef int (*item_from_fn)(const json_t *j, void *out, hf_error *err);
typedef void (*item_clear_fn)(void *item);

static int parse_array(const json_t *obj, const char *key, size_t size, item_from_fn from,
                       item_clear_fn clear, void **items, size_t *n, hf_error *err)
{
	const json_t *arr = json_object_get(obj, key);
	if (!json_is_array(arr))
		return hf__err(err, HF_EPROTO, "reply has no '%s' array", key);
	size_t count = json_array_size(arr);
	char *buf = calloc(count ? count : 1, size);
	if (!buf)
		return hf__err_code(err, HF_ENOMEM);
	for (size_t i = 0; i < count; i++) {
		int rc = from(json_array_get(arr, i), buf + i * size, err);
		if (rc != HF_OK) {
			for (size_t k = 0; k < i; k++)
				clear(buf + k * size);
			free(buf);
			return rc;
		}
	}
	*items = buf;
	*n = count;
	return HF_OK;
}

static int resource_from(const json_t *j, void *out, hf_error *err)
{
	return hf__resource_from_json(j, out, err);
}

static int hold_from(const json_t *j, void *out, hf_error *err)
{
	return hf__hold_from_json(j, out, err);
}

static int event_from(const json_t *j, void *out, hf_error *err)
{
	return hf__event_from_json(j, out, err);
}

static int waiter_from(const json_t *j, void *out, hf_error *err)
{
	return hf__waiter_from_json(j, out, err);
}

static void resource_clear(void *item)
{
	hf__resource_clear(item);
}

static void hold_clear(void *item)
{
	hf__hold_clear(item);
}

static void event_clear(void *item)
{
	hf__event_clear(item);
}

static void waiter_clear(void *item)
{
	hf__waiter_clear(item);
}

/* Fills the reply of a 2xx answer from its JSON body. */
static int parse_success(hf_op op, const json_t *body, hf_reply *reply, hf_error *err)
{
	void *items = NULL;
	size_t n = 0;
	int rc;
	switch (op) {
	case HF_OP_PUT_RESOURCE:
	case HF_OP_GET_RESOURCE:
	case HF_OP_DELETE_RESOURCE:
		return parse_resource(body, &reply->resource, err);
	case HF_OP_ACQUIRE:
	case HF_OP_EXTEND:
	case HF_OP_CONFIRM:
	case HF_OP_RELEASE:
	case HF_OP_GET_HOLD:
		return parse_hold(body, &reply->hold, err);
	case HF_OP_LIST_RESOURCES:
		rc = parse_array(body, "resources", sizeof(hf_resource), resource_from, resource_clear,
		                 &items, &n, err);
		if (rc != HF_OK)
			return rc;
		reply->resources = items;
		reply->n_resources = n;
		reply->more = json_is_true(json_object_get(body, "more"));
		return HF_OK;
	case HF_OP_LIST_HOLDS:
		rc = parse_array(body, "holds", sizeof(hf_hold), hold_from, hold_clear, &items, &n, err);
		if (rc != HF_OK)
			return rc;
		reply->holds = items;
		reply->n_holds = n;
		reply->more = json_is_true(json_object_get(body, "more"));
		return HF_OK;
	case HF_OP_LIST_WAITERS:
		rc = parse_array(body, "waiters", sizeof(hf_waiter), waiter_from, waiter_clear, &items,
		                 &n, err);
		if (rc != HF_OK)
			return rc;
		reply->waiters = items;
		reply->n_waiters = n;
		reply->more = json_is_true(json_object_get(body, "more"));
		return HF_OK;
	case HF_OP_READ_EVENTS: {
		const json_t *last = json_object_get(body, "last_seq");
		if (!json_is_integer(last) || json_integer_value(last) < 0)
			return hf__err(err, HF_EPROTO, "reply has no 'last_seq' number");
		rc = parse_array(body, "events", sizeof(hf_event), event_from, event_clear, &items, &n, err);
		if (rc != HF_OK)
			return rc;
		reply->events = items;
		reply->n_events = n;
		reply->last_seq = (uint64_t)json_integer_value(last);
		return HF_OK;
	}
	default:
		return hf__err(err, HF_EPROTO, "no reply form for operation %d", (int)op);
	}
}

/* Turns a complete HTTP answer into the call's reply. */
static void handle_answer(struct http_call *hc, struct evhttp_request *req)
{
	hf_reply *reply = hc->call->reply;
	int status = evhttp_request_get_response_code(req);
	struct evbuffer *in = evhttp_request_get_input_buffer(req);
	size_t len = evbuffer_get_length(in);
	const char *data = len ? (const char *)evbuffer_pullup(in, -1) : "";
	json_error_t jerr;
	json_t *body = len ? json_loadb(data, len, 0, &jerr) : NULL;
	hf_error err = {.code = HF_OK};

	if (status >= 200 && status < 300) {
		if (!body && hc->call->req.op == HF_OP_DELETE_RESOURCE) {
			/* 204 No Content: deleted; the server chose not to show the old resource. */
		} else if (!body) {
			hf__err(&err, HF_EPROTO, "reply from %s (status %d) is not json: %s", hc->eng->where,
			        status, len ? jerr.text : "empty body");
		} else if (!json_is_object(body)) {
			hf__err(&err, HF_EPROTO, "reply from %s (status %d) is not a json object",
			        hc->eng->where, status);
		} else {
			parse_success(hc->call->req.op, body, reply, &err);
		}
	} else if (body && hf__error_from_json(body, &err) == HF_OK && err.code < 0) {
		/* The server's own code and message; unknown codes (a newer server) fall back to the
		 * status so that callers still see the right class of failure. */
		const json_t *jcode = json_object_get(json_object_get(body, "error"), "code");
		bool known = json_is_string(jcode) &&
		             strcmp(json_string_value(jcode), hf_err_name(HF_EINTERNAL)) == 0;
		if (err.code == HF_EINTERNAL && !known)
			err.code = status_to_code(status);
		const json_t *jupto = json_object_get(json_object_get(body, "error"), "trimmed_upto");
		if (err.code == HF_ETRIMMED && json_is_integer(jupto) && json_integer_value(jupto) > 0)
			reply->trimmed_upto = (uint64_t)json_integer_value(jupto);
	} else {
		hf__err(&err, status_to_code(status), "%s answered http status %d without an error body",
		        hc->eng->where, status);
	}
	json_decref(body);
	/* The parsers attach items only on success, so on error only `error` is set. */
	if (err.code != HF_OK)
		reply->error = err;
}

/* ---- The request cycle. ------------------------------------------------------------------ */

static void send_call(struct http_call *hc);

static void error_cb(enum evhttp_request_error kind, void *arg)
{
	struct http_call *hc = arg;
	hc->got_error_kind = true;
	hc->error_kind = kind;
}

/* Why a connection-level failure happened, for the message. libevent does not keep the
 * errno of a failed connect, so ask the OS with a short probe (the engine is failing
 * anyway; the probe is bounded). */
static void describe_connect_failure(struct http_engine *eng, char *buf, size_t size)
{
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai = NULL;
	char port[8];
	snprintf(port, sizeof(port), "%u", (unsigned)eng->port);
	int gai = getaddrinfo(eng->host, port, &hints, &ai);
	if (gai != 0) {
		snprintf(buf, size, "cannot resolve '%s': %s", eng->host, gai_strerror(gai));
		return;
	}
	int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	int e = 0;
	if (fd < 0) {
		e = errno;
	} else if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
		e = errno;
		if (e == EINPROGRESS) {
			struct pollfd p = {.fd = fd, .events = POLLOUT};
			int n = poll(&p, 1, 250);
			socklen_t sl = sizeof(e);
			if (n == 0)
				e = ETIMEDOUT;
			else if (n < 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &sl) != 0)
				e = errno;
		}
	}
	if (fd >= 0)
		close(fd);
	freeaddrinfo(ai);
	if (e)
		snprintf(buf, size, "cannot connect to %s: %s", eng->where, strerror(e));
	else
		snprintf(buf, size, "connection to %s failed before a reply", eng->where);
}

static void request_done_cb(struct evhttp_request *req, void *arg)
{
	struct http_call *hc = arg;
	struct http_engine *eng = hc->eng;
	struct http_conn *conn = hc->conn;
	hc->req = NULL; /* libevent frees it after this callback */
	hc->conn = NULL;

	if (req && evhttp_request_get_response_code(req) > 0) {
		conn->replied = true;
		handle_answer(hc, req);
		conn_put(eng, conn, true);
		call_finish(hc);
		return;
	}

	/* No answer: the connection failed. A GET on a connection that had answered before most
	 * likely met the server closing it while idle; it is safe to send again once. Other
	 * methods are not retried: the server may have applied them. */
	bool reused = conn->replied;
	conn_put(eng, conn, false);
	if (hc->got_error_kind && hc->error_kind == EVREQ_HTTP_TIMEOUT) {
		call_fail(hc, HF_EENGINE, "%s did not answer within the request timeout", eng->where);
		return;
	}
	if (reused && hc->method == EVHTTP_REQ_GET && hc->attempts < 2 && !eng->draining &&
	    !hc->sending) {
		hc->got_error_kind = false;
		send_call(hc);
		return;
	}
	if (reused || hc->got_error_kind) {
		call_fail(hc, HF_EENGINE, "connection to %s closed before a reply", eng->where);
		return;
	}
	char why[HF_MESSAGE_MAX];
	describe_connect_failure(eng, why, sizeof(why));
	call_fail(hc, HF_EENGINE, "%s", why);
}

/* A fresh connection that has not connected within HTTP_CONNECT_TIMEOUT_MS is given up,
 * whatever the request's own (possibly long) timeout. */
static void connect_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct http_call *hc = arg;
	if (!hc->conn || !hc->req)
		return;
	struct bufferevent *bev = evhttp_connection_get_bufferevent(hc->conn->evcon);
	int sock = bev ? bufferevent_getfd(bev) : -1;
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	if (sock >= 0 && getpeername(sock, (struct sockaddr *)&ss, &sl) == 0)
		return; /* connected: the request timeout governs from here */
	char why[HF_MESSAGE_MAX];
	snprintf(why, sizeof(why), "cannot connect to %s: no answer within %d ms", hc->eng->where,
	         HTTP_CONNECT_TIMEOUT_MS);
	call_abort(hc, HF_EENGINE, why);
}

static int add_header(struct evkeyvalq *h, const char *key, const char *value)
{
	return evhttp_add_header(h, key, value) == 0 ? HF_OK : HF_ENOMEM;
}

/* Builds and sends the call's request on a pooled connection; completes it on failure. */
static void send_call(struct http_call *hc)
{
	struct http_engine *eng = hc->eng;
	const hf_request *r = &hc->call->req;
	hf_error err = {.code = HF_OK};
	struct evbuffer *path = evbuffer_new();
	json_t *body = NULL;
	char *text = NULL;
	struct evhttp_request *req = NULL;
	char num[24];
	int rc;

	hc->attempts++;
	if (!path) {
		hf__err_code(&err, HF_ENOMEM);
		goto out_fail;
	}
	rc = build_request(r, &hc->method, path, &body, &err);
	if (rc != HF_OK)
		goto out_fail;
	if (body) {
		text = hf__json_dumps(body, JSON_COMPACT);
		if (!text) {
			hf__err_code(&err, HF_ENOMEM);
			goto out_fail;
		}
	}
	req = evhttp_request_new(request_done_cb, hc);
	if (!req) {
		hf__err_code(&err, HF_ENOMEM);
		goto out_fail;
	}
	evhttp_request_set_error_cb(req, error_cb);
	struct evkeyvalq *h = evhttp_request_get_output_headers(req);
	rc = add_header(h, "Host", eng->where);
	if (rc == HF_OK)
		rc = add_header(h, "Accept", "application/json");
	if (rc == HF_OK && eng->authorization)
		rc = add_header(h, "Authorization", eng->authorization);
	if (rc == HF_OK && text) {
		rc = add_header(h, "Content-Type", "application/json");
		if (rc == HF_OK && evbuffer_add(evhttp_request_get_output_buffer(req), text, strlen(text)))
			rc = HF_ENOMEM;
	}
	if (rc == HF_OK && r->op == HF_OP_ACQUIRE && r->acquire.idempotency_key)
		rc = add_header(h, "Idempotency-Key", r->acquire.idempotency_key);
	if (rc == HF_OK && (r->op == HF_OP_PUT_RESOURCE || r->op == HF_OP_DELETE_RESOURCE)) {
		if (r->if_version > 0) {
			snprintf(num, sizeof(num), "%" PRId64, r->if_version);
			rc = add_header(h, "If-Match", num);
		} else if (r->if_version == 0 && r->op == HF_OP_PUT_RESOURCE) {
			rc = add_header(h, "If-None-Match", "*"); /* create only */
		}
	}
	if (rc != HF_OK) {
		hf__err_code(&err, rc);
		goto out_fail;
	}

	int64_t wait_ms = r->op == HF_OP_ACQUIRE ? r->acquire.wait_ms
	                  : r->op == HF_OP_READ_EVENTS ? r->wait_ms
	                                               : 0;
	hc->parked = wait_ms > 0;
	hc->conn = conn_get(eng);
	if (!hc->conn) {
		hf__err(&err, HF_ENOMEM, "cannot create a connection to %s", eng->where);
		goto out_fail;
	}
	struct timeval tv =
		ms_to_tv(wait_ms > 0 ? wait_ms + HTTP_WAIT_MARGIN_MS : HTTP_REQUEST_TIMEOUT_MS);
	evhttp_connection_set_timeout_tv(hc->conn->evcon, &tv);

	/* The path as a C string: evbuffer_pullup() gives no NUL, so add one first. */
	if (evbuffer_add(path, "", 1) != 0) {
		hf__err_code(&err, HF_ENOMEM);
		goto out_fail_conn;
	}
	const char *uri = (const char *)evbuffer_pullup(path, -1);
	if (!hc->connect_timer) {
		hc->connect_timer = evtimer_new(eng->base, connect_timer_cb, hc);
		if (!hc->connect_timer) {
			hf__err_code(&err, HF_ENOMEM);
			goto out_fail_conn;
		}
	}
	hc->req = req;
	hc->sending = true;
	int mrc = evhttp_make_request(hc->conn->evcon, req, hc->method, uri);
	hc->sending = false;
	free(text);
	json_decref(body);
	evbuffer_free(path);
	if (hc->finished) {
		/* Completed from inside evhttp_make_request (a connect that failed at once). */
		call_finish(hc);
		return;
	}
	if (mrc != 0) {
		/* Whether libevent freed the request differs by failure (it does on its own
		 * out-of-memory path); leaking one request on that path beats a double free. */
		hc->req = NULL;
		conn_put(eng, hc->conn, false);
		hc->conn = NULL;
		call_fail(hc, HF_EENGINE, "cannot send a request to %s", eng->where);
		return;
	}
	struct timeval ctv = ms_to_tv(HTTP_CONNECT_TIMEOUT_MS);
	evtimer_add(hc->connect_timer, &ctv);
	return;

out_fail_conn:
	conn_put(eng, hc->conn, false);
	hc->conn = NULL;
out_fail:
	if (req)
		evhttp_request_free(req);
	free(text);
	json_decref(body);
	if (path)
		evbuffer_free(path);
	call_fail(hc, err.code, "%s", err.message);
}

/* ---- The loop thread. ------------------------------------------------------------------ */

static void grace_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct http_engine *eng = arg;
	while (eng->inflight)
		call_abort(eng->inflight, HF_ECLOSED, "store closed before the server answered");
}

static void start_draining(struct http_engine *eng)
{
	eng->draining = true;
	/* Parked waits end now with HF_ECLOSED; short calls in flight may finish (their outcome
	 * is real on the server), up to a grace time. */
	struct http_call *hc = eng->inflight;
	while (hc) {
		struct http_call *next = hc->next;
		if (hc->parked)
			call_abort(hc, HF_ECLOSED, "store closed while waiting");
		hc = next;
	}
	struct timeval tv = ms_to_tv(HTTP_CLOSE_GRACE_MS);
	evtimer_add(eng->grace_ev, &tv);
	maybe_stop(eng);
}

static void wake_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)what;
	struct http_engine *eng = arg;
	char drain[64];
	while (read(fd, drain, sizeof(drain)) > 0)
		;

	pthread_mutex_lock(&eng->lock);
	struct http_call *inbox = eng->inbox_head;
	eng->inbox_head = eng->inbox_tail = NULL;
	uint64_t *cancels = eng->cancels;
	size_t n_cancels = eng->n_cancels;
	eng->cancels = NULL;
	eng->n_cancels = eng->cap_cancels = 0;
	bool closing = eng->closing;
	pthread_mutex_unlock(&eng->lock);

	while (inbox) {
		struct http_call *hc = inbox;
		inbox = hc->next;
		hc->next = NULL;
		inflight_add(eng, hc);
		if (closing || eng->draining)
			call_fail(hc, HF_ECLOSED, "store is closing");
		else
			send_call(hc);
	}
	for (size_t i = 0; i < n_cancels; i++) {
		for (struct http_call *hc = eng->inflight; hc; hc = hc->next) {
			if (hc->call->id == cancels[i]) {
				if (hc->parked && hc->req)
					call_abort(hc, HF_ECANCELED, "request was cancelled");
				break;
			}
		}
	}
	free(cancels);
	if (closing && !eng->draining)
		start_draining(eng);
}

static void *loop_main(void *arg)
{
	struct http_engine *eng = arg;
	event_base_dispatch(eng->base);
	return NULL;
}

static void wake(struct http_engine *eng)
{
	char one = 1;
	/* A full pipe already means "wake up"; nothing is lost. */
	ssize_t w = write(eng->wake_fd[1], &one, 1);
	(void)w;
}

/* ---- The engine table. ------------------------------------------------------------------ */

static void engine_free(struct http_engine *eng)
{
	if (!eng)
		return;
	/* The loop has stopped: every call is completed; only pooled connections remain. */
	while (eng->idle) {
		struct http_conn *conn = eng->idle;
		eng->idle = conn->next;
		evhttp_connection_free(conn->evcon);
		free(conn);
	}
	if (eng->reap_ev)
		reap_cb(-1, 0, eng);
	if (eng->wake_ev)
		event_free(eng->wake_ev);
	if (eng->reap_ev)
		event_free(eng->reap_ev);
	if (eng->grace_ev)
		event_free(eng->grace_ev);
	if (eng->base)
		event_base_free(eng->base);
	if (eng->wake_fd[0] >= 0)
		close(eng->wake_fd[0]);
	if (eng->wake_fd[1] >= 0)
		close(eng->wake_fd[1]);
	pthread_mutex_destroy(&eng->lock);
	free(eng->cancels);
	free(eng->host);
	free(eng->where);
	free(eng->authorization);
	free(eng);
}

/* http://host[:port][/] — nothing else: no path prefix, query or user info. */
static int parse_url(struct http_engine *eng, const char *url, hf_error *err)
{
	int rc = HF_OK;
	struct evhttp_uri *uri = evhttp_uri_parse_with_flags(url, 0);
	if (!uri)
		return hf__err(err, HF_EINVAL, "invalid url '%s': expected http://host:port", url);
	const char *scheme = evhttp_uri_get_scheme(uri);
	const char *host = evhttp_uri_get_host(uri);
	const char *path = evhttp_uri_get_path(uri);
	int port = evhttp_uri_get_port(uri);
	if (!scheme || strcmp(scheme, "http") != 0) {
		rc = hf__err(err, HF_EINVAL, "invalid url '%s': the scheme must be http", url);
		goto out;
	}
	if (!host || !*host) {
		rc = hf__err(err, HF_EINVAL, "invalid url '%s': no host", url);
		goto out;
	}
	if ((path && *path && strcmp(path, "/") != 0) || evhttp_uri_get_query(uri) ||
	    evhttp_uri_get_fragment(uri) || evhttp_uri_get_userinfo(uri)) {
		rc = hf__err(err, HF_EINVAL, "invalid url '%s': only http://host:port is supported", url);
		goto out;
	}
	if (port == 0 || port > 65535) {
		rc = hf__err(err, HF_EINVAL, "invalid url '%s': bad port", url);
		goto out;
	}
	eng->port = (uint16_t)(port < 0 ? HTTP_DEFAULT_PORT : port);
	size_t hl = strlen(host);
	if (hl >= 2 && host[0] == '[' && host[hl - 1] == ']')
		eng->host = strndup(host + 1, hl - 2);
	else
		eng->host = strdup(host);
	size_t wl = hl + 8;
	eng->where = malloc(wl);
	if (!eng->host || !eng->where) {
		rc = hf__err_code(err, HF_ENOMEM);
		goto out;
	}
	snprintf(eng->where, wl, "%s:%u", host, (unsigned)eng->port);
out:
	evhttp_uri_free(uri);
	return rc;
}

static int http_open(hf_store *store, const char *url, const hf_options *opt, void **out,
                     hf_error *err)
{
	(void)opt; /* clock, retention and limits are the server's */
	int rc;
	*out = NULL;
	struct http_engine *eng = calloc(1, sizeof(*eng));
	if (!eng)
		return hf__err_code(err, HF_ENOMEM);
	eng->store = store;
	eng->wake_fd[0] = eng->wake_fd[1] = -1;
	pthread_mutex_init(&eng->lock, NULL);

	rc = parse_url(eng, url, err);
	if (rc != HF_OK)
		goto out_free;
	const char *key = getenv(HTTP_ENV_API_KEY);
	if (key && *key) {
		size_t n = strlen(key) + sizeof("Bearer ");
		eng->authorization = malloc(n);
		if (!eng->authorization) {
			rc = hf__err_code(err, HF_ENOMEM);
			goto out_free;
		}
		snprintf(eng->authorization, n, "Bearer %s", key);
	}
	if (pipe(eng->wake_fd) != 0) {
		rc = hf__err(err, HF_EINTERNAL, "pipe: %s", strerror(errno));
		goto out_free;
	}
	for (int i = 0; i < 2; i++) {
		fcntl(eng->wake_fd[i], F_SETFL, fcntl(eng->wake_fd[i], F_GETFL) | O_NONBLOCK);
		fcntl(eng->wake_fd[i], F_SETFD, FD_CLOEXEC);
	}
	/* Only the loop thread touches libevent objects after this function, so the base needs
	 * no locking (and no evthread_use_pthreads() side effect on the application). */
	eng->base = event_base_new();
	if (!eng->base) {
		rc = hf__err(err, HF_EINTERNAL, "cannot create an event loop");
		goto out_free;
	}
	eng->wake_ev = event_new(eng->base, eng->wake_fd[0], EV_READ | EV_PERSIST, wake_cb, eng);
	eng->reap_ev = event_new(eng->base, -1, 0, reap_cb, eng);
	eng->grace_ev = evtimer_new(eng->base, grace_cb, eng);
	if (!eng->wake_ev || !eng->reap_ev || !eng->grace_ev || event_add(eng->wake_ev, NULL) != 0) {
		rc = hf__err_code(err, HF_ENOMEM);
		goto out_free;
	}
	/* The loop thread blocks every signal: the application's handlers run in its own
	 * threads, and a SIGPIPE from writing to a closed socket is discarded instead of killing
	 * the process. */
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	int prc = pthread_create(&eng->thread, NULL, loop_main, eng);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (prc != 0) {
		rc = hf__err(err, HF_EINTERNAL, "cannot start the http engine thread: %s", strerror(prc));
		goto out_free;
	}
	eng->thread_started = true;
	*out = eng;
	return HF_OK;

out_free:
	engine_free(eng);
	return rc;
}

static void http_close(void *engine)
{
	struct http_engine *eng = engine;
	pthread_mutex_lock(&eng->lock);
	eng->closing = true;
	pthread_mutex_unlock(&eng->lock);
	wake(eng);
	if (eng->thread_started)
		pthread_join(eng->thread, NULL);
	engine_free(eng);
}

static void http_submit(void *engine, struct hf__call *call)
{
	struct http_engine *eng = engine;
	struct http_call *hc = calloc(1, sizeof(*hc));
	if (!hc) {
		call->reply->error.code = HF_ENOMEM;
		snprintf(call->reply->error.message, sizeof(call->reply->error.message), "%s",
		         hf_strerror(HF_ENOMEM));
		hf__call_done(call);
		return;
	}
	hc->call = call;
	hc->eng = eng;
	call->engine_data = hc;
	pthread_mutex_lock(&eng->lock);
	if (eng->inbox_tail)
		eng->inbox_tail->next = hc;
	else
		eng->inbox_head = hc;
	eng->inbox_tail = hc;
	pthread_mutex_unlock(&eng->lock);
	wake(eng);
}

static void http_cancel(void *engine, uint64_t call_id)
{
	struct http_engine *eng = engine;
	pthread_mutex_lock(&eng->lock);
	if (eng->n_cancels == eng->cap_cancels) {
		size_t cap = eng->cap_cancels ? eng->cap_cancels * 2 : 8;
		uint64_t *grown = realloc(eng->cancels, cap * sizeof(*grown));
		if (!grown) {
			/* Out of memory: the wait ends on its own at wait_ms; nothing else is lost. */
			pthread_mutex_unlock(&eng->lock);
			return;
		}
		eng->cancels = grown;
		eng->cap_cancels = cap;
	}
	eng->cancels[eng->n_cancels++] = call_id;
	pthread_mutex_unlock(&eng->lock);
	wake(eng);
}

const struct hf__engine_ops hf__engine_http = {
	.scheme = "http",
	.open = http_open,
	.close = http_close,
	.submit = http_submit,
	.cancel = http_cancel,
	.tick = NULL,
};
