/*
 * http_client.h — holdfast-bench's own HTTP/1.1 client: one keep-alive connection to one
 * server, one POST at a time, on a worker's libevent loop. Internal to src/bench.
 */
#ifndef HFB_HTTP_CLIENT_H
#define HFB_HTTP_CLIENT_H

#include <stddef.h>

#include <event2/event.h>

struct hfb_http;

/* The answer to a POST. status 0: there was none (connect refused, the connection broke or
 * timed out, or what came was not HTTP/1.x). body (NUL-terminated, len bytes, chunked
 * framing removed) lives in the connection's buffer and is valid during the call only; the
 * call may post the next request. */
typedef void (*hfb_http_fn)(void *arg, int status, char *body, size_t len);

/* A connection to host:port (resolved now; connected at the first POST and again after the
 * server closed it). No answer within timeout_s of sending, or of the last bytes read, gives
 * the call up. NULL if the host does not resolve or memory is short. */
struct hfb_http *hfb_http_new(struct event_base *base, const char *host, int port,
                              int timeout_s);
void hfb_http_free(struct hfb_http *h);

/* Sends POST path with a JSON body; fn is called once, from the loop, with the answer.
 * -1 (fn never called) if the request could not be sent: a call already in flight, no
 * memory, or a connection that failed at once. */
int hfb_http_post(struct hfb_http *h, const char *path, size_t path_len, const char *body,
                  size_t body_len, hfb_http_fn fn, void *arg);

#endif
