/*
 * http.c — the HTTP front of the apps: evhttp on the main thread takes requests and queues
 * them to a pool of worker threads (each with its own connections), which make the blocking
 * holdfast, database and Redis calls; answers come back through a queue and an eventfd, and
 * the main thread writes them. Only the main thread touches libevent objects.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "app.h"

/* One request on its way through a worker and back. */
struct job {
	struct evhttp_request *req; /* touched on the main thread only */
	const char *method;
	char *path;  /* decoded */
	char *query; /* NULL if none */
	char *body;
	size_t body_len;
	char *if_match; /* NULL if none */
	char *idem_key; /* NULL if none */
	struct app_reply reply;
	struct job *next;
};

struct queue {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct job *head, *tail;
	bool stop;
};

static struct queue inq = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, NULL, NULL, false};
static struct queue outq = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, NULL, NULL, false};
static int done_fd = -1; /* eventfd: answers are waiting in outq */
static struct event_base *base;
static struct evhttp *http;
static struct evhttp_bound_socket *listener;
static const struct app_server *srv;
static size_t inflight; /* main thread only */
static bool stopping;   /* main thread only */

static void push(struct queue *q, struct job *j)
{
	j->next = NULL;
	pthread_mutex_lock(&q->mu);
	if (q->tail)
		q->tail->next = j;
	else
		q->head = j;
	q->tail = j;
	pthread_cond_signal(&q->cv);
	pthread_mutex_unlock(&q->mu);
}

static void job_free(struct job *j)
{
	free(j->path);
	free(j->query);
	free(j->body);
	free(j->if_match);
	free(j->idem_key);
	json_decref(j->reply.body);
	free(j);
}

static const char *reason(int status)
{
	switch (status) {
	case 200:
		return "OK";
	case 201:
		return "Created";
	case 400:
		return "Bad Request";
	case 402:
		return "Payment Required";
	case 403:
		return "Forbidden";
	case 404:
		return "Not Found";
	case 405:
		return "Method Not Allowed";
	case 409:
		return "Conflict";
	case 413:
		return "Payload Too Large";
	case 422:
		return "Unprocessable Entity";
	case 428:
		return "Precondition Required";
	case 500:
		return "Internal Server Error";
	case 503:
		return "Service Unavailable";
	default:
		return "Status";
	}
}

/* Main thread: writes a job's answer and frees the job. */
static void answer(struct job *j)
{
	char *text = j->reply.body
	                 ? json_dumps(j->reply.body, JSON_COMPACT | JSON_REAL_PRECISION(15))
	                 : NULL;
	struct evbuffer *buf = evbuffer_new();
	int status = j->reply.status;
	if (!text) {
		status = 500;
		text = strdup(
		    "{\"error\":{\"code\":\"internal_error\",\"message\":\"out of memory\"}}");
	}
	if (buf && text) {
		evbuffer_add(buf, text, strlen(text));
		evbuffer_add(buf, "\n", 1);
	}
	struct evkeyvalq *hdrs = evhttp_request_get_output_headers(j->req);
	evhttp_add_header(hdrs, "Content-Type", "application/json");
	if (j->reply.etag[0]) {
		char etag[sizeof(j->reply.etag) + 2];
		snprintf(etag, sizeof(etag), "\"%s\"", j->reply.etag);
		evhttp_add_header(hdrs, "ETag", etag);
	}
	evhttp_send_reply(j->req, status, reason(status), buf);
	if (buf)
		evbuffer_free(buf);
	free(text);
	job_free(j);
}

static void on_done(evutil_socket_t fd, short what, void *arg)
{
	(void)what;
	(void)arg;
	uint64_t n;
	if (read(fd, &n, sizeof(n)) < 0 && errno != EAGAIN)
		perror("app: eventfd read");
	pthread_mutex_lock(&outq.mu);
	struct job *j = outq.head;
	outq.head = outq.tail = NULL;
	pthread_mutex_unlock(&outq.mu);
	while (j) {
		struct job *next = j->next;
		answer(j);
		inflight--;
		j = next;
	}
	if (stopping && inflight == 0)
		event_base_loopbreak(base);
}

static void *worker_main(void *arg)
{
	char *ctx = arg;
	for (;;) {
		pthread_mutex_lock(&inq.mu);
		while (!inq.head && !inq.stop)
			pthread_cond_wait(&inq.cv, &inq.mu);
		struct job *j = inq.head;
		if (!j) { /* stop, and nothing left */
			pthread_mutex_unlock(&inq.mu);
			return NULL;
		}
		inq.head = j->next;
		if (!inq.head)
			inq.tail = NULL;
		pthread_mutex_unlock(&inq.mu);
		struct app_request rq = {.method = j->method,
		                         .path = j->path,
		                         .query = j->query,
		                         .body = j->body,
		                         .body_len = j->body_len,
		                         .if_match = j->if_match,
		                         .idempotency_key = j->idem_key};
		srv->route(ctx, &rq, &j->reply);
		push(&outq, j);
		uint64_t one = 1;
		if (write(done_fd, &one, sizeof(one)) < 0)
			perror("app: eventfd write");
	}
}

static const char *method_name(enum evhttp_cmd_type cmd)
{
	switch (cmd) {
	case EVHTTP_REQ_GET:
		return "GET";
	case EVHTTP_REQ_POST:
		return "POST";
	case EVHTTP_REQ_PUT:
		return "PUT";
	case EVHTTP_REQ_DELETE:
		return "DELETE";
	case EVHTTP_REQ_PATCH:
		return "PATCH";
	case EVHTTP_REQ_HEAD:
		return "HEAD";
	case EVHTTP_REQ_OPTIONS:
		return "OPTIONS";
	default:
		return "OTHER";
	}
}

/* Main thread: a request arrived; read what the worker needs and queue it. */
static void on_request(struct evhttp_request *req, void *arg)
{
	(void)arg;
	struct job *j = calloc(1, sizeof(*j));
	if (!j) {
		evhttp_send_error(req, 503, "out of memory");
		return;
	}
	j->req = req;
	j->method = method_name(evhttp_request_get_command(req));
	const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
	const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
	const char *query = uri ? evhttp_uri_get_query(uri) : NULL;
	j->path = evhttp_uridecode(path && *path ? path : "/", 0, NULL);
	j->query = query ? strdup(query) : NULL;
	struct evkeyvalq *hdrs = evhttp_request_get_input_headers(req);
	const char *im = evhttp_find_header(hdrs, "If-Match");
	const char *ik = evhttp_find_header(hdrs, "Idempotency-Key");
	j->if_match = im ? strdup(im) : NULL;
	j->idem_key = ik ? strdup(ik) : NULL;
	struct evbuffer *in = evhttp_request_get_input_buffer(req);
	size_t len = evbuffer_get_length(in);
	inflight++;
	if (stopping) { /* a kept-alive connection after SIGTERM */
		app_error(&j->reply, 503, "shutting_down", "the server is stopping");
		answer(j);
		inflight--;
		return;
	}
	if (!j->path || (query && !j->query) || (im && !j->if_match) || (ik && !j->idem_key)) {
		app_error(&j->reply, 503, "out_of_memory", "out of memory");
		answer(j);
		inflight--;
		return;
	}
	if (len > APP_BODY_MAX) {
		app_error(&j->reply, 413, "body_too_large", "request body is over %d bytes",
		          APP_BODY_MAX);
		answer(j);
		inflight--;
		return;
	}
	if (len) {
		j->body = malloc(len);
		if (!j->body) {
			app_error(&j->reply, 503, "out_of_memory", "out of memory");
			answer(j);
			inflight--;
			return;
		}
		evbuffer_remove(in, j->body, len);
		j->body_len = len;
	}
	push(&inq, j);
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
	(void)what;
	(void)arg;
	fprintf(stderr, "%s: signal %d: finishing %zu requests in flight, then exiting\n",
	        srv->name, (int)sig, inflight);
	stopping = true;
	if (listener) {
		evhttp_del_accept_socket(http, listener);
		listener = NULL;
	}
	if (inflight == 0)
		event_base_loopbreak(base);
}

int app_serve(const struct app_server *s)
{
	int rc = 1, n = s->n;
	srv = s;
	pthread_t *threads = calloc((size_t)n, sizeof(*threads));
	int started = 0;
	struct event *ev_done = NULL, *ev_term = NULL, *ev_int = NULL;
	base = event_base_new();
	http = base ? evhttp_new(base) : NULL;
	done_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (!threads || !http || done_fd < 0) {
		fprintf(stderr, "%s: cannot set up the server\n", s->name);
		goto out;
	}
	evhttp_set_gencb(http, on_request, NULL);
	evhttp_set_max_body_size(http, 1 << 20);
	evhttp_set_allowed_methods(http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_PUT |
	                                     EVHTTP_REQ_DELETE | EVHTTP_REQ_PATCH |
	                                     EVHTTP_REQ_HEAD | EVHTTP_REQ_OPTIONS);
	listener = evhttp_bind_socket_with_handle(http, s->host, (ev_uint16_t)s->port);
	if (!listener) {
		fprintf(stderr, "%s: cannot listen on %s:%d: %s\n", s->name, s->host, s->port,
		        strerror(errno));
		goto out;
	}
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	int port = s->port;
	if (getsockname(evhttp_bound_socket_get_fd(listener), (struct sockaddr *)&ss, &sl) == 0)
		port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
		                                      : ((struct sockaddr_in *)&ss)->sin_port);
	ev_done = event_new(base, done_fd, EV_READ | EV_PERSIST, on_done, NULL);
	ev_term = evsignal_new(base, SIGTERM, on_signal, NULL);
	ev_int = evsignal_new(base, SIGINT, on_signal, NULL);
	if (!ev_done || !ev_term || !ev_int || event_add(ev_done, NULL) ||
	    event_add(ev_term, NULL) || event_add(ev_int, NULL))
		goto out;
	for (; started < n; started++)
		if (pthread_create(&threads[started], NULL, worker_main,
		                   (char *)s->ctxs + (size_t)started * s->ctx_size) != 0) {
			fprintf(stderr, "%s: cannot start worker %d\n", s->name, started);
			goto out;
		}
	fprintf(stderr, "%s: listening on http://%s:%d (holdfast %s, %d workers)\n", s->name,
	        s->host, port, s->engine_url, n);
	event_base_dispatch(base);
	rc = 0;
out:
	pthread_mutex_lock(&inq.mu);
	inq.stop = true;
	pthread_cond_broadcast(&inq.cv);
	pthread_mutex_unlock(&inq.mu);
	for (int i = 0; i < started; i++)
		pthread_join(threads[i], NULL);
	/* Answers produced after the loop stopped (only on a failed start) are dropped. */
	while (outq.head) {
		struct job *j = outq.head;
		outq.head = j->next;
		job_free(j);
	}
	if (ev_done)
		event_free(ev_done);
	if (ev_term)
		event_free(ev_term);
	if (ev_int)
		event_free(ev_int);
	if (http)
		evhttp_free(http);
	if (base)
		event_base_free(base);
	if (done_fd >= 0)
		close(done_fd);
	free(threads);
	return rc;
}
