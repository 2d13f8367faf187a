/*
 * fuzz_http.c — fuzz target: holdfastd's request path, in-process. The server's own files
 * (every file of src/server but main.c) are linked in and started the way main.c starts
 * them: a store (file: in /dev/shm or $TMPDIR), an event base, the store's fd, statistics, then
 * hf__http_start on 127.0.0.1 port 0. Each input is written raw to a fresh TCP connection
 * (so it is parsed by http1.c as holdfastd reads it, routed by routes.c and handled by the real
 * handlers, body decoding included), the write side is shut, and the loop runs until the
 * server closes the connection or 300 ms pass. Properties: no crash, leak or UB; every
 * connection is answered or closed. HF_FUZZ_HTTP_ECHO=1 prints the replies (for seeds).
 *
 * The server and its store live across inputs (as a real server does): state left by one
 * input (holds, resources) is seen by the next, so runs are not strictly reproducible from a
 * single input when it depends on earlier ones. Replays start from an empty store.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/http.h>
#include <event2/listener.h>

#include "fuzz.h"
#include "server/server.h"

static struct hf__config cfg;
static struct hf__server srv;
static struct sockaddr_in addr;
static char path[256];

static void on_store(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	hf_store_dispatch(((struct hf__server *)arg)->store);
}

static void remove_files(void)
{
	static const char *const suffixes[] = {"", "-wal", "-shm", "-journal", ".lock"};
	char p[320];
	for (size_t i = 0; i < 5; i++) {
		snprintf(p, sizeof(p), "%s%s", path, suffixes[i]);
		unlink(p);
	}
}

static void stop(void)
{
	hf_close(srv.store);
	srv.store = NULL;
	hf__http_stop(&srv);
	hf__stats_free(&srv);
	event_free(srv.store_ev);
	event_base_free(srv.base);
	remove_files();
}

static void start(void)
{
	signal(SIGPIPE, SIG_IGN);
	hf__log_set_level(HF__LOG_ERROR);
	const char *dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : getenv("TMPDIR");
	snprintf(path, sizeof(path), "%s/hf-fuzz-http-%ld.db", dir ? dir : "/tmp", (long)getpid());
	remove_files();
	static char url[300], listen[] = "127.0.0.1:0";
	snprintf(url, sizeof(url), "file:%s", path);
	cfg = (struct hf__config){.listen = listen,
	                          .engine = url,
	                          .max_body = 1 << 20,
	                          .max_headers = 16384,
	                          .timeout_s = 5,
	                          .max_conns = 1024,
	                          .max_waiters = 1000,
	                          .drain_s = 1,
	                          .log_level = HF__LOG_ERROR};
	srv.cfg = &cfg;
	srv.started_ms = hf_now_ms();
	hf_options opt;
	hf_options_init(&opt);
	opt.max_waiters = (size_t)cfg.max_waiters;
	hf_error err;
	FUZZ_CHECK(hf_open(cfg.engine, &opt, &srv.store, &err) == HF_OK, "open: %s", err.message);
	srv.base = event_base_new();
	FUZZ_CHECK(srv.base, "event_base_new failed");
	srv.store_ev =
	    event_new(srv.base, hf_store_fd(srv.store), EV_READ | EV_PERSIST, on_store, &srv);
	FUZZ_CHECK(srv.store_ev && event_add(srv.store_ev, NULL) == 0, "store event failed");
	FUZZ_CHECK(hf__stats_start(&srv) == HF_OK, "stats failed");
	FUZZ_CHECK(hf__http_start(&srv, &err) == HF_OK, "listen: %s", err.message);
	socklen_t sl = sizeof(addr);
	FUZZ_CHECK(
	    getsockname(evconnlistener_get_fd(srv.listener), (struct sockaddr *)&addr, &sl) == 0,
	    "getsockname: %s", strerror(errno));
	atexit(stop);
}

struct client {
	int fd;
	const uint8_t *data;
	size_t size, sent;
	bool closed;
	struct event *ev, *timer;
};

static void on_client(evutil_socket_t fd, short what, void *arg)
{
	struct client *c = arg;
	if (what & EV_TIMEOUT) {
		event_base_loopbreak(srv.base);
		return;
	}
	if ((what & EV_WRITE) && c->sent < c->size) {
		ssize_t n = send(fd, c->data + c->sent, c->size - c->sent, MSG_NOSIGNAL);
		if (n > 0)
			c->sent += (size_t)n;
		else if (n < 0 && errno != EAGAIN && errno != EINTR)
			c->sent = c->size; /* the server hung up: stop sending */
		if (c->sent == c->size) {
			shutdown(fd, SHUT_WR);
			event_del(c->ev);
			event_assign(c->ev, srv.base, fd, EV_READ | EV_PERSIST, on_client, c);
			event_add(c->ev, NULL);
		}
	}
	if (what & EV_READ) {
		char buf[8192];
		ssize_t n = recv(fd, buf, sizeof(buf), 0);
		if (n > 0 && getenv("HF_FUZZ_HTTP_ECHO")) /* debugging a seed: show the replies */
			fwrite(buf, 1, (size_t)n, stderr);
		if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
			c->closed = true;
			event_base_loopbreak(srv.base);
		}
	}
}

/* A connect interrupted by a signal (libFuzzer's SIGALRM timer) goes on in the kernel: wait
 * for it and take its outcome, instead of taking EINTR for a failure. */
static int connect_server(int fd)
{
	if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) == 0)
		return 0;
	if (errno != EINTR)
		return -1;
	struct pollfd p = {.fd = fd, .events = POLLOUT};
	int rc;
	while ((rc = poll(&p, 1, 5000)) < 0 && errno == EINTR)
		;
	if (rc <= 0) {
		if (rc == 0)
			errno = ETIMEDOUT;
		return -1;
	}
	int soerr = 0;
	socklen_t len = sizeof(soerr);
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) != 0)
		return -1;
	errno = soerr;
	return soerr ? -1 : 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!srv.base)
		start();
	if (size > 65536)
		return 0;
	struct client c = {.data = data, .size = size};
	c.fd = socket(AF_INET, SOCK_STREAM, 0);
	FUZZ_CHECK(c.fd >= 0, "socket: %s", strerror(errno));
	FUZZ_CHECK(connect_server(c.fd) == 0, "connect: %s", strerror(errno));
	evutil_make_socket_nonblocking(c.fd);
	c.ev = event_new(srv.base, c.fd, EV_READ | EV_WRITE | EV_PERSIST, on_client, &c);
	c.timer = evtimer_new(srv.base, on_client, &c);
	FUZZ_CHECK(c.ev && c.timer, "out of memory");
	if (size == 0) {
		shutdown(c.fd, SHUT_WR);
		event_assign(c.ev, srv.base, c.fd, EV_READ | EV_PERSIST, on_client, &c);
	}
	event_add(c.ev, NULL);
	evtimer_add(c.timer, &(struct timeval){.tv_usec = 300000});
	event_base_dispatch(srv.base);
	event_free(c.ev);
	event_free(c.timer);
	close(c.fd);
	/* Let the server see the close and free the connection's requests. */
	event_base_loop(srv.base, EVLOOP_NONBLOCK);
	return 0;
}
