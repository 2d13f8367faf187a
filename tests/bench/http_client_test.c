/*
 * http_client_test.c — holdfast-bench's HTTP/1.1 client (src/bench/http_client.c) against a
 * scripted server on a loopback socket: answers split across reads, chunked, 100 Continue,
 * Connection: close then a new connection, a body that runs to the close, a broken answer, an
 * answer cut short, a refused connect, a timeout; and the reading of holdfastd's JSON answers
 * (src/bench/answer.c), in one pass and through jansson, to the same fields.
 */
#include <arpa/inet.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include "http_client.h"
#include "expect.h"

/* ---- the scripted server: one step per request ---- */

struct step {
	bool new_conn;          /* the request must come on a new connection */
	const char *pieces[4];  /* the answer, written piece by piece (NULL: none) */
	bool close_after;       /* close the connection after the answer */
	bool wait_for_close;    /* answer nothing; wait until the client gives up */
};

static int listen_fd, port;
static const struct step *steps;
static size_t n_steps;

static void pause_ms(int ms)
{
	struct timespec ts = {0, ms * 1000000L};
	nanosleep(&ts, NULL);
}

/* Reads one request and checks its form: a POST with a Content-Length its body has. */
static void read_request(int fd)
{
	char buf[4096];
	size_t n = 0;
	for (;;) {
		ssize_t r = read(fd, buf + n, sizeof(buf) - 1 - n);
		if (r <= 0) {
			fprintf(stderr, "server: the connection ended before a whole request\n");
			exit(1);
		}
		n += (size_t)r;
		buf[n] = '\0';
		char *end = strstr(buf, "\r\n\r\n"), *cl = strstr(buf, "\r\nContent-Length: ");
		if (end && cl && n >= (size_t)(end + 4 - buf) + strtoul(cl + 18, NULL, 10))
			break;
	}
	char want[128];
	snprintf(want, sizeof(want), "POST /v1/x HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n", port);
	if (strncmp(buf, want, strlen(want)) != 0 || !strstr(buf, "\r\n\r\n{\"a\":1}")) {
		fprintf(stderr, "server: unexpected request:\n%s\n", buf);
		exit(1);
	}
}

static void *server(void *arg)
{
	(void)arg;
	int fd = -1;
	for (size_t i = 0; i < n_steps; i++) {
		const struct step *s = &steps[i];
		if (s->new_conn) {
			if (fd >= 0)
				close(fd);
			fd = accept(listen_fd, NULL, NULL);
		}
		read_request(fd);
		for (int k = 0; k < 4 && s->pieces[k]; k++) {
			if (k)
				pause_ms(20); /* so that the client reads the answer in parts */
			if (write(fd, s->pieces[k], strlen(s->pieces[k])) < 0)
				break;
		}
		if (s->wait_for_close) {
			char c;
			while (read(fd, &c, 1) > 0)
				;
		}
		if (s->close_after || s->wait_for_close) {
			close(fd);
			fd = -1;
		}
	}
	if (fd >= 0)
		close(fd);
	return NULL;
}

/* ---- the client side ---- */

struct result {
	bool called;
	int status;
	char body[256];
	struct event_base *base;
};

static void on_answer(void *arg, int status, char *body, size_t len)
{
	struct result *r = arg;
	r->called = true;
	r->status = status;
	snprintf(r->body, sizeof(r->body), "%.*s", (int)len, body ? body : "");
	event_base_loopbreak(r->base);
}

static struct result post(struct event_base *base, struct hfb_http *h)
{
	struct result r = {.base = base};
	const char body[] = "{\"a\":1}";
	if (hfb_http_post(h, "/v1/x", 5, body, sizeof(body) - 1, on_answer, &r) != 0)
		return r; /* not called: refused at once */
	event_base_dispatch(base);
	return r;
}

#define HEAD "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"

static const struct step script[] = {
    /* 1. split in the status line, in a header, in the body */
    {.new_conn = true,
     .pieces = {"HTTP/1.1 20", "1 Created\r\nContent-Le", "ngth: 11\r\n\r\nhello", " world"}},
    /* 2. the same connection: chunked, split in a chunk's size, an extension, a trailer */
    {.pieces = {HEAD "Transfer-Encoding: chunked\r\n\r\n5;x=1\r\nhello\r\n", "6\r\n wo",
                "rld\r\n0\r\nX-Trailer: 1\r\n\r\n"}},
    /* 3. 100 Continue first; then Connection: close */
    {.pieces = {"HTTP/1.1 100 Continue\r\n\r\n",
                HEAD "Connection: close\r\nContent-Length: 2\r\n\r\nok"},
     .close_after = true},
    /* 4. hence a new connection; HTTP/1.0 without a length: the body runs to the close */
    {.new_conn = true,
     .pieces = {"HTTP/1.0 404 Not Found\r\n\r\n{\"error\":", "{}}"},
     .close_after = true},
    /* 5. a new connection again; 204 has no body, keep-alive */
    {.new_conn = true, .pieces = {"HTTP/1.1 204 No Content\r\n\r\n"}},
    /* 6. an answer cut short by the close */
    {.pieces = {HEAD "Content-Length: 10\r\n\r\nshort"}, .close_after = true},
    /* 7. not HTTP */
    {.new_conn = true, .pieces = {"SSH-2.0-OpenSSH\r\n\r\n"}},
    /* 8. no answer at all: the client's timeout */
    {.new_conn = true, .wait_for_close = true},
};

static void test_client(void)
{
	struct sockaddr_in sa = {.sin_family = AF_INET};
	socklen_t sl = sizeof(sa);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	listen_fd = socket(AF_INET, SOCK_STREAM, 0);
	EXPECT(bind(listen_fd, (struct sockaddr *)&sa, sizeof(sa)) == 0);
	EXPECT(listen(listen_fd, 8) == 0);
	EXPECT(getsockname(listen_fd, (struct sockaddr *)&sa, &sl) == 0);
	port = ntohs(sa.sin_port);
	steps = script;
	n_steps = sizeof(script) / sizeof(script[0]);
	pthread_t th;
	pthread_create(&th, NULL, server, NULL);

	struct event_base *base = event_base_new();
	struct hfb_http *h = hfb_http_new(base, "127.0.0.1", port, 1);
	EXPECT(h != NULL);
	struct result r = post(base, h);
	EXPECT(r.called && r.status == 201 && strcmp(r.body, "hello world") == 0);
	r = post(base, h);
	EXPECT(r.called && r.status == 200 && strcmp(r.body, "hello world") == 0);
	r = post(base, h);
	EXPECT(r.called && r.status == 200 && strcmp(r.body, "ok") == 0);
	r = post(base, h);
	EXPECT(r.called && r.status == 404 && strcmp(r.body, "{\"error\":{}}") == 0);
	r = post(base, h);
	EXPECT(r.called && r.status == 204 && r.body[0] == '\0');
	r = post(base, h);
	EXPECT(r.called && r.status == 0);
	r = post(base, h);
	EXPECT(r.called && r.status == 0);
	r = post(base, h);
	EXPECT(r.called && r.status == 0);
	pthread_join(th, NULL);

	/* nothing listens any more: refused, at once or from the loop */
	close(listen_fd);
	r = post(base, h);
	EXPECT(!r.called || r.status == 0);
	hfb_http_free(h);
	event_base_free(base);
}

/* ---- reading the answers ---- */

static struct hfb_full_answer read_answer(int status, const char *body)
{
	struct hfb_full_answer fa;
	memset(&fa, 0, sizeof(fa));
	hfb_answer_read(status, body, strlen(body), &fa);
	return fa;
}

#define ID "b69f06666c39fb070d03242c5fc4c449"
#define TOKEN "ad1633952deee614775b4d427020a8b7"

static void test_answers(void)
{
	/* as holdfastd writes it: the one pass */
	struct hfb_full_answer fa = read_answer(
	    201, "{\"id\":\"" ID "\",\"owner\":\"me\",\"state\":\"tentative\",\"mode\":\"exclusive\","
	         "\"created_at_ms\":1796008336732,\"ended_at_ms\":null,\"resources\":[{\"name\":"
	         "\"lock:xx\",\"units\":65536,\"fence\":23668}],\"fence\":{\"lock:xx\":23668},"
	         "\"token\":\"" TOKEN "\"}");
	EXPECT(fa.a.code == HF_OK && strcmp(fa.a.hold, ID) == 0 && strcmp(fa.a.token, TOKEN) == 0);
	EXPECT(fa.exclusive && fa.n_parts == 1 && strcmp(fa.parts[0].name, "lock:xx") == 0);
	EXPECT(fa.a.units == 65536 && fa.a.fence == 23668 && strcmp(fa.a.first, "lock:xx") == 0);
	/* escapes, a fraction, a duplicate key: jansson reads them, to the same fields */
	fa = read_answer(200, " {\"id\":\"x\",\"id\":\"" ID "\",\"mode\":\"units\",\"resources\":"
	                      "[{\"name\":\"s\\u0065at-1\",\"units\":2,\"fence\":7},{\"units\":1.5}]}\n");
	EXPECT(fa.a.code == HF_OK && strcmp(fa.a.hold, ID) == 0 && !fa.exclusive);
	EXPECT(fa.n_parts == 2 && strcmp(fa.parts[0].name, "seat-1") == 0 && fa.parts[1].units == 0);
	EXPECT(fa.a.units == 2 && fa.a.fence == 7);
	/* at most HFB_PARTS_MAX parts, in either reading */
	fa = read_answer(201, "{\"resources\":[{},{},{},{},{\"name\":\"e\"}]}");
	EXPECT(fa.a.code == HF_OK && fa.n_parts == HFB_PARTS_MAX);
	fa = read_answer(201, "{\"resources\":[{},{},{},{},{\"name\":\"\\u0065\"}]}");
	EXPECT(fa.a.code == HF_OK && fa.n_parts == HFB_PARTS_MAX);
	/* errors */
	char body[256];
	snprintf(body, sizeof(body), "{\"error\":{\"code\":\"%s\",\"message\":\"taken\"}}",
	         hf_err_name(HF_EUNAVAILABLE));
	EXPECT(read_answer(409, body).a.code == HF_EUNAVAILABLE);
	EXPECT(read_answer(404, "not json").a.code == HF_EPROTO);
	EXPECT(read_answer(500, "{\"error\":{}}").a.code == HF_EPROTO);
	EXPECT(read_answer(201, "{\"id\":\"" ID "\"").a.code == HF_EPROTO);
	EXPECT(read_answer(201, "{\"id\":1} x").a.code == HF_EPROTO);
	fa = read_answer(409, "{\"id\":\"" ID "\",\"error\":{\"code\":\"unavailable\"}}");
	EXPECT(fa.a.hold[0] == '\0'); /* what an error says of a hold is not read */
}

int main(void)
{
	test_client();
	test_answers();
	if (failures)
		fprintf(stderr, "%d failures\n", failures);
	else
		printf("http_client_test: all passed\n");
	return failures ? 1 : 0;
}
