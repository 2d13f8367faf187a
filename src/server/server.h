/*
 * server.h — the parts of holdfastd that its files share: the configuration, the server, one
 * HTTP request in flight (struct hf__rq) and what each file offers the others.
 * Internal to holdfastd: names are hf__, everything file-local stays static.
 */
#ifndef HF_SERVER_H
#define HF_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <event2/event.h>
#include <event2/http.h>
#include <jansson.h>

#include "holdfast.h"
#include "server/http1.h"

/* ---- Configuration (main.c fills it from defaults, config file, env, arguments). ---- */

struct hf__config {
	char *listen;         /* "host:port"; port 0 picks a free one */
	char *engine;         /* engine URL */
	char *fallback_engine; /* --fallback-engine URL or NULL (off): used while `engine` is down */
	char **api_keys;      /* accepted bearer keys; none: no authentication */
	size_t n_api_keys;
	char *tls_cert;       /* PEM files; both set: serve HTTPS only */
	char *tls_key;
	int64_t max_body;     /* bytes of a request body */
	int64_t max_headers;  /* bytes of a request's headers */
	int64_t timeout_s;    /* a whole request, idle keep-alive, read/write, stalled streams */
	int64_t max_conns;    /* open connections (from accept); half for unauthenticated ones */
	int64_t max_waiters;  /* the store's parked acquires; apart, event long-polls/streams */
	int64_t max_holds;     /* the store's live holds (hf_options) */
	int64_t max_resources; /* the store's resources (hf_options) */
	int64_t drain_s;      /* SIGTERM: how long to answer what is in flight */
	int log_level;        /* HF__LOG_* */
	int64_t events_keep_count; /* event retention (hf_options), 0: keep all */
	int64_t events_keep_ms;
	int64_t events_trim_force; /* 1: trim past relay/projection checkpoints */
};

/* ---- Logs (log.c): one logfmt line per event on stderr. ---------------------------- */

/* HF__LOG_LIFE: lifecycle lines (listening, draining, stopped) shown at every level, as
 * "info": tools wait for them. */
enum { HF__LOG_DEBUG = 0, HF__LOG_INFO, HF__LOG_WARN, HF__LOG_ERROR, HF__LOG_LIFE };

void hf__log_set_level(int level);
int hf__log_level_parse(const char *s); /* -1 if unknown */
bool hf__log_enabled(int level);
/* msg is a short constant; fmt adds " key=value" pairs (values quoted by the caller via
 * hf__log_quote when they may hold spaces). */
void hf__log(int level, const char *msg, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* The access log line of one answered request (info), formatted without printf: "request
 * route=... status=... dur_ms=...[ client_gone=true]". route is at most 290 bytes. */
void hf__log_request(const char *route, int status, int64_t dur_us, bool gone);
/* Writes s into buf as a logfmt value: quoted and escaped, cut to fit. Returns buf. */
const char *hf__log_quote(char *buf, size_t size, const char *s);

/* ---- The server and a request. ------------------------------------------------------ */

struct hf__conn;
struct hf__stats;
struct hf__rq;
struct hf__route;

struct hf__server {
	struct hf__config *cfg;
	struct event_base *base;
	struct evconnlistener *listener; /* NULL once draining */
	hf_store *store;
	struct event *store_ev;    /* readable store fd: dispatch completions */
	struct event *drain_ev;    /* periodic while draining */
	struct event *batch_ev;    /* ends the loop turn's store batch (hf__srv_submit) */
	bool batch_open;
	struct evbuffer *answer;   /* an answer being written, before it goes out (http.c) */
	void *tls;                 /* SSL_CTX when serving TLS */
	bool draining;             /* SIGTERM seen: no new work */
	int64_t drain_deadline_ms; /* monotonic */
	struct hf__conn *conns;    /* open connections */
	size_t n_conns;            /* open connections, counted from accept */
	struct hf__conn *pend_head, *pend_tail; /* not yet authenticated, oldest first */
	size_t n_pending;
	/* Connections not served, for /metrics. */
	uint64_t conns_evicted;    /* pending and idle, closed to make room for a newcomer */
	uint64_t conns_refused;    /* over --max-connections: answered 429 */
	uint64_t conns_timed_out;  /* no whole request within --timeout */
	uint64_t conns_preauth_closed; /* too much body before a valid key */
	uint64_t accept_errors;    /* accept() failures (each a connection left waiting) */
	uint64_t accept_episodes;  /* runs of them: logged once each */
	int64_t accept_pause_ms, accept_last_ms;
	struct event *accept_ev;   /* re-enables the listener after a pause */
	struct hf__rq *rqs;        /* every request in flight (for drain) */
	size_t n_rqs;
	void *rq_pool;             /* request blocks kept for the next requests (http.c) */
	size_t rq_pool_n;
	size_t n_ev_waiters;       /* event long-polls and SSE streams: at most max_waiters */
	struct hf__stats *stats;
	int64_t started_ms;
};

/* hf_submit inside the loop turn's store batch: the changes submitted in one turn share a
 * journal commit. */
int hf__srv_submit(struct hf__server *srv, const hf_request *req, hf_done_fn done, void *arg,
                   uint64_t *call_id, hf_error *err);
/* Ends an open batch now (before the store closes). */
void hf__srv_batch_end(struct hf__server *srv);

/* Called with the store's reply to a request's call; the reply is the handler's to free.
 * It must finish the request (send) or submit again. */
typedef void (*hf__reply_fn)(struct hf__rq *rq, hf_reply *reply);

/* Bytes before a request's decoded path parameter that a handler may prefix it with. */
#define HF__PARAM_HEADROOM 8

/* One HTTP request from arrival to answer. Owned by http.c: one allocation holds it, its
 * header fields and its head's bytes (and a Content-Length body, and its path parameter);
 * freed when answered (or, if the client left, when the store's completion for it
 * arrives). */
struct hf__rq {
	struct hf__server *srv;
	struct hf__conn *conn;      /* NULL once the connection is gone */
	struct hf__rq *srv_prev, *srv_next;   /* the server's requests */
	/* The request as parsed (http1.h): strings point into the head's bytes, NUL-ended. */
	enum hf__method method;
	const char *method_name;
	const char *path;           /* raw (percent-encoded) path, never NULL */
	const char *query;          /* raw query string (after '?'), NULL if none */
	const char *head;           /* the head's bytes, fields NUL-terminated in place */
	const struct hf__h1_field *fields;
	unsigned n_fields;
	int8_t known[HF__H_KNOWN];  /* index in fields of the headers http1.h recognises */
	const char *body_data;      /* the body, decoded; body_len bytes (+ a NUL) */
	size_t body_len;
	char *body_owned;           /* a chunked body's bytes: freed with rq */
	char *extra;                /* header lines a handler added, "Name: value\r\n"... */
	size_t extra_len;
	bool dispatched;            /* routed (counted, logged); before: its body is being read */
	bool head_only;             /* HEAD: the answer's head only */
	bool http10;                /* an HTTP/1.0 client */
	bool keep_alive;            /* the client keeps the connection after the answer */
	bool close;                 /* close the connection after the answer (framing refused) */
	int refused;                /* HF_E* the HTTP layer refuses it with (message: body_data) */
	const struct hf__route *route;
	/* The {name}/{id}/{key} of the path, percent-decoded into param_space (in rq's own
	 * allocation, HF__PARAM_HEADROOM bytes before it free for a prefix: holds.c's
	 * "lock:KEY"). */
	char *param;
	char *param_space;          /* HF__PARAM_HEADROOM + the raw path's length + 1 bytes */
	json_t *body;               /* parsed body for routes that take one, else NULL */
	/* A request of usual size is a block of the server's pool; its tail is the arena its
	 * body's JSON tree is built in, when the route only borrows that tree (http.c). */
	bool pooled;
	char *arena;
	size_t arena_used, arena_cap;
	bool gone;                  /* the client disconnected: answer nobody */
	bool call_pending;          /* a store call is out: its completion will arrive */
	bool parked;                /* the call may wait long: cancel it on drain */
	bool streaming;             /* a chunked reply (SSE) has started */
	bool ev_waiter;             /* counted in srv->n_ev_waiters */
	bool release_if_gone;       /* acquire without Idempotency-Key: a grant nobody reads is
	                             * released (http.c) */
	uint64_t call_id;
	hf__reply_fn on_reply;
	int64_t t0_us;              /* monotonic arrival time */
	int status;                 /* sent status, for the access log */
	/* Handler state. */
	char *stat_name;            /* acquire: the names of the resources whose statistics it
	                             * counts, '\0'-separated; borrowed (alive with rq) unless
	                             * stat_owned */
	bool stat_owned;
	int64_t stat_claims;        /* acquire: resources named */
	uint64_t ev_after;          /* events: last seq sent */
	size_t ev_limit;
	size_t ev_read;             /* SSE: events to read next (sized to the queue bound) */
	struct event *ev_timer;     /* SSE: paused over its queue bound, checks for the drain */
	int64_t ev_paused_ms;       /* SSE: monotonic time the pause began, 0 if not paused */
	json_t *acc;                /* stats/metrics: resources collected so far */
	int acc_pages;
	void (*acc_done)(struct hf__rq *rq, const hf_error *err);
	void (*acc_each)(struct hf__rq *rq, json_t *resource); /* per resource, page by page */
	size_t acc_bucket;          /* stats: where the join of tracked resources goes on */
	size_t acc_i;               /* stats/metrics: next resource to write out */
	struct evbuffer *acc_out;   /* stats/metrics: the answer, written a slice at a time */
	void (*yield_fn)(struct hf__rq *rq); /* hf__rq_yield: runs on the next loop turn */
	struct event *yield_ev;     /* hf__rq_yield's timer, made at the first yield */
	int64_t sagas_parked;       /* metrics: sagas in compensation_failed; -1 if not known */
};

/* http.c: serving. */
int hf__http_start(struct hf__server *srv, hf_error *err);
void hf__http_drain(struct hf__server *srv); /* SIGTERM: stop accepting, finish, then exit loop */
void hf__http_stop(struct hf__server *srv);  /* after the loop: frees what is left */
int64_t hf__mono_us(void);

/* Submits a store call for rq; on_reply gets its reply. On a submit error the request is
 * answered with that error and HF_E* is returned: the caller must not touch rq then. */
int hf__rq_submit(struct hf__rq *rq, const hf_request *req, hf__reply_fn on_reply);
/* Lets the loop serve others, then calls fn(rq) on its next turn; if the client leaves
 * meanwhile, rq is freed instead. For work that would block the loop too long in one go:
 * do a slice, yield. No store call may be pending. On failure rq is answered (503). */
void hf__rq_yield(struct hf__rq *rq, void (*fn)(struct hf__rq *rq));
/* Answers with status and a JSON body (the reference is taken) and frees rq. */
void hf__rq_send_json(struct hf__rq *rq, int status, json_t *body);
/* Appends item to arr (both references taken); returns arr, or NULL with both freed when
 * either is NULL or the append fails — so a list is built in a loop without a branch each. */
json_t *hf__json_push(json_t *arr, json_t *item);
/* Answers 200 with one page of a list, {"<key>": items, "more": b, "next_cursor": next?}
 * (items taken; NULL means out of memory), and frees reply and rq. */
void hf__rq_send_page(struct hf__rq *rq, hf_reply *reply, const char *key, json_t *items,
                      const char *next);
/* Answers with the hold as JSON (hf__hold_to_json's bytes, written without a json_t: codec.h)
 * and frees rq. */
void hf__rq_send_hold(struct hf__rq *rq, int status, const hf_hold *hold);
/* Answers with a text body of the given content type and frees rq. */
void hf__rq_send_text(struct hf__rq *rq, int status, const char *ctype, const char *text,
                      size_t len);
/* Copies the string in into out (size bytes, NUL included) as valid UTF-8: each invalid
 * byte becomes U+FFFD, a sequence cut off at the end (a clipped message) is dropped, and the
 * copy is cut on a character boundary. */
void hf__utf8_clean(const char *in, char *out, size_t size);
/* {"error":{"code","message"}} for err, the message cleaned to valid UTF-8; NULL only when
 * out of memory. The caller owns the reference. */
json_t *hf__error_json(const hf_error *err);
/* The same for a reply's error, with what the reply adds to it ("trimmed_upto" of an
 * events_trimmed). */
json_t *hf__reply_error_json(const hf_reply *reply);
/* Answers with the body in an evbuffer, moved out without a copy (the buffer is emptied,
 * not freed) and frees rq. Not for streams. */
struct evbuffer;
void hf__rq_send_buffer(struct hf__rq *rq, int status, const char *ctype, struct evbuffer *body);
/* Answers with the JSON error and frees rq. */
void hf__rq_send_error(struct hf__rq *rq, const hf_error *err);
/* For reply callbacks: if the reply carries an error, answers with it, frees the reply and
 * returns true (rq is gone then); else returns false and changes nothing. */
bool hf__rq_reply_failed(struct hf__rq *rq, hf_reply *reply);
void hf__rq_fail(struct hf__rq *rq, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
const char *hf__rq_header(struct hf__rq *rq, const char *name); /* request header or NULL */
const char *hf__rq_method(struct hf__rq *rq);
bool hf__rq_authorized(struct hf__rq *rq); /* no keys configured, or a right Bearer key */
/* Parses the body into rq->body (empty: {}); on failure answers 400/413 and returns false.
 * in_arena: the handler only borrows the tree, which may then be built in rq's arena. */
bool hf__rq_read_body(struct hf__rq *rq, bool in_arena);
void hf__rq_add_header(struct hf__rq *rq, const char *name, const char *value);
/* Bytes of answer libevent still holds for rq's connection (not yet written). */
size_t hf__rq_queued(struct hf__rq *rq);
/* Closes rq's connection without an answer (a stream whose client does not read) and frees
 * rq; logs why. No store call may be pending. */
void hf__rq_drop(struct hf__rq *rq, const char *why);
/* Chunked replies (SSE): start, send pieces, end (end frees rq). */
void hf__rq_stream_start(struct hf__rq *rq, const char *ctype);
void hf__rq_stream_chunk(struct hf__rq *rq, const char *data, size_t len);
void hf__rq_stream_end(struct hf__rq *rq);

/* routes.c: the route table and the dispatcher. */
void hf__route_request(struct hf__rq *rq);
bool hf__route_is_public(const struct hf__route *route); /* served without an API key */
bool hf__route_takes_body(const struct hf__route *route);
const char *hf__route_pattern(const struct hf__route *route);

/* Query string helpers for handlers: each answers the request with 400 and returns false on
 * a bad value. `allowed` lists the parameters the route knows (NULL-terminated). */
struct evkeyvalq;
bool hf__query_parse(struct hf__rq *rq, struct evkeyvalq *q, const char *const *allowed);
bool hf__query_int(struct hf__rq *rq, struct evkeyvalq *q, const char *key, int64_t lo,
                   int64_t hi, int64_t dflt, int64_t *out);
/* A list's page: "limit" (1..HF_LIST_MAX, 100 when absent) and "cursor" (empty = none) into
 * req->limit and req->cursor (which points into q). */
bool hf__query_page(struct hf__rq *rq, struct evkeyvalq *q, hf_request *req);

/* Handlers, by file. */
void hf__h_put_resource(struct hf__rq *rq);
void hf__h_get_resource(struct hf__rq *rq);
void hf__h_delete_resource(struct hf__rq *rq);
void hf__h_list_resources(struct hf__rq *rq);
void hf__h_list_waiters(struct hf__rq *rq); /* GET /v1/resources/{name}/waiters */
void hf__h_acquire(struct hf__rq *rq);
void hf__h_lock(struct hf__rq *rq);
void hf__h_semaphore(struct hf__rq *rq);
void hf__h_extend(struct hf__rq *rq);
void hf__h_confirm(struct hf__rq *rq);
void hf__h_release(struct hf__rq *rq);
void hf__h_get_hold(struct hf__rq *rq);
void hf__h_list_holds(struct hf__rq *rq);
void hf__h_events(struct hf__rq *rq);
void hf__h_stats(struct hf__rq *rq);
void hf__h_metrics(struct hf__rq *rq);
void hf__h_healthz(struct hf__rq *rq);
void hf__h_readyz(struct hf__rq *rq);
void hf__h_ui(struct hf__rq *rq);           /* GET /ui: the dashboard's page */
void hf__h_ui_asset(struct hf__rq *rq);     /* GET /ui/{asset}: its script and style */
void hf__h_stats_series(struct hf__rq *rq); /* GET /v1/stats/series: the last minutes */
/* sagas.c: /v1/saga-types and /v1/sagas */
void hf__h_put_saga_type(struct hf__rq *rq);
void hf__h_get_saga_type(struct hf__rq *rq);
void hf__h_list_saga_types(struct hf__rq *rq);
void hf__h_start_saga(struct hf__rq *rq);
void hf__h_get_saga(struct hf__rq *rq);
void hf__h_list_sagas(struct hf__rq *rq);
void hf__h_resume_saga(struct hf__rq *rq);
void hf__h_start_tx(struct hf__rq *rq); /* /v1/transactions (TCC) */
void hf__h_get_tx(struct hf__rq *rq);

/* stats.c: what the server measures. */
int hf__stats_start(struct hf__server *srv);
void hf__stats_drain(struct hf__server *srv); /* cancels the event follower */
void hf__stats_free(struct hf__server *srv);
/* One acquire's outcome: `code` is HF_OK or the error, latency from arrival. Called once
 * with resource NULL (overall) and once per resource it concerns. */
void hf__stats_acquire(struct hf__server *srv, const char *resource, int code,
                       int64_t latency_us);
void hf__stats_request(struct hf__server *srv, int status);

/* ui.c: the dashboard. Its files, generated into ui_assets.c at build time by
 * embed_ui.cmake; the table ends with a NULL name. */
struct hf__ui_asset {
	const char *name;  /* "app.js" */
	const char *ctype; /* Content-Type */
	const unsigned char *data;
	size_t len;
};
extern const struct hf__ui_asset hf__ui_assets[];
/* The per-second series the dashboard charts, fed by stats.c: one overall acquire outcome
 * (as hf__stats_acquire with resource NULL), one hold event seen in the log. */
void hf__series_acquire(int code, int64_t latency_us);
void hf__series_event(const char *type, int64_t at_ms);
/* A hand-off seen in the event log: a grant `ms` after the end that freed its resource. */
void hf__series_handoff(int64_t at_ms, int64_t ms);

#endif /* HF_SERVER_H */
