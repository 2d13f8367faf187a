/*
 * events.c — GET /v1/events: the event log after a sequence number, as one JSON answer
 * (long-poll with wait_ms) or as a Server-Sent Events stream (Accept: text/event-stream)
 * that re-issues parked reads for as long as the client stays.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "core/codec.h"
#include "server/server.h"

/* An SSE stream parks a read this long, then writes a comment line: a client that is gone
 * is noticed by the failed write at the latest then. */
#define SSE_WAIT_MS 15000

/* What one stream may have queued for a client that does not read: past this the stream
 * stops reading the log (it resumes where it stopped once the client has taken half of it)
 * and after --timeout seconds paused the client is dropped. Bounds memory per stream to about
 * this plus one event, whatever the log holds. */
#define SSE_QUEUE_MAX (256 * 1024)
#define SSE_CHECK_MS 50

static void on_poll(struct hf__rq *rq, hf_reply *reply)
{
	if (hf__rq_reply_failed(rq, reply))
		return;
	json_t *arr = json_array();
	uint64_t next = rq->ev_after;
	for (size_t i = 0; i < reply->n_events; i++) {
		arr = hf__json_push(arr, hf__event_to_json(&reply->events[i]));
		next = reply->events[i].seq;
	}
	json_t *body = arr ? json_pack("{s:o,s:I,s:I}", "events", arr, "last_seq",
	                               (json_int_t)reply->last_seq, "next_after", (json_int_t)next)
	                   : NULL;
	if (body)
		hf__rq_send_json(rq, 200, body);
	else
		hf__rq_fail(rq, HF_ENOMEM, "out of memory");
	hf_reply_free(reply);
}

static void sse_next(struct hf__rq *rq);
static void sse_pause(struct hf__rq *rq);

static void on_sse(struct hf__rq *rq, hf_reply *reply)
{
	if (reply->error.code) {
		/* The drain (or a closing store) ends the stream quietly; anything else is told. */
		if (reply->error.code != HF_ECANCELED && reply->error.code != HF_ECLOSED) {
			json_t *e = hf__reply_error_json(reply);
			char *text = e ? hf__json_dumps(e, JSON_COMPACT) : NULL;
			char head[] = "event: error\ndata: ";
			hf__rq_stream_chunk(rq, head, sizeof(head) - 1);
			if (text)
				hf__rq_stream_chunk(rq, text, strlen(text));
			hf__rq_stream_chunk(rq, "\n\n", 2);
			free(text);
			json_decref(e);
		}
		hf_reply_free(reply);
		hf__rq_stream_end(rq);
		return;
	}
	struct evbuffer *out = evbuffer_new();
	size_t queued = hf__rq_queued(rq);
	bool full = false;
	for (size_t i = 0; out && i < reply->n_events; i++) {
		const hf_event *ev = &reply->events[i];
		if (queued + evbuffer_get_length(out) >= SSE_QUEUE_MAX) {
			full = true; /* the rest is read again from the log after the pause */
			break;
		}
		json_t *j = hf__event_to_json(ev);
		char *text = j ? hf__json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
		json_decref(j);
		if (!text)
			break;
		evbuffer_add_printf(out, "id: %" PRIu64 "\nevent: %s\ndata: %s\n\n", ev->seq,
		                    ev->type ? ev->type : "event", text);
		free(text);
		rq->ev_after = ev->seq;
	}
	if (out && reply->n_events == 0)
		evbuffer_add_printf(out, ": keepalive\n\n");
	/* Size the next read so that one reply is about the queue bound: events may be 64 KiB
	 * each (a resource's meta), and a reply of `limit` of them is held in memory at once. */
	if (out && reply->n_events) {
		size_t per = evbuffer_get_length(out) / reply->n_events + 1;
		size_t fit = SSE_QUEUE_MAX / per;
		rq->ev_read = fit < 1 ? 1 : fit > rq->ev_limit ? rq->ev_limit : fit;
	}
	if (out) {
		size_t len = evbuffer_get_length(out);
		hf__rq_stream_chunk(rq, (const char *)evbuffer_pullup(out, -1), len);
		evbuffer_free(out);
	}
	hf_reply_free(reply);
	if (rq->srv->draining) {
		hf__rq_stream_end(rq);
		return;
	}
	if (full || hf__rq_queued(rq) >= SSE_QUEUE_MAX)
		sse_pause(rq);
	else
		sse_next(rq);
}

static void on_sse_check(evutil_socket_t fd, short what, void *arg)
{
	struct hf__rq *rq = arg;
	(void)fd;
	(void)what;
	if (rq->srv->draining) {
		hf__rq_drop(rq, "shutting_down");
		return;
	}
	if (hf__rq_queued(rq) < SSE_QUEUE_MAX / 2) {
		rq->ev_paused_ms = 0;
		sse_next(rq);
		return;
	}
	if (hf__mono_us() / 1000 - rq->ev_paused_ms > rq->srv->cfg->timeout_s * 1000) {
		hf__rq_drop(rq, "slow_consumer");
		return;
	}
	event_add(rq->ev_timer, &(struct timeval){.tv_usec = SSE_CHECK_MS * 1000});
}

/* The client is not reading: stop reading the log for it until it has caught up. */
static void sse_pause(struct hf__rq *rq)
{
	if (!rq->ev_timer)
		rq->ev_timer = evtimer_new(rq->srv->base, on_sse_check, rq);
	if (!rq->ev_timer) {
		hf__rq_drop(rq, "out_of_memory");
		return;
	}
	if (!rq->ev_paused_ms)
		rq->ev_paused_ms = hf__mono_us() / 1000;
	event_add(rq->ev_timer, &(struct timeval){.tv_usec = SSE_CHECK_MS * 1000});
}

static void sse_next(struct hf__rq *rq)
{
	hf_request req;
	hf_request_init(&req, HF_OP_READ_EVENTS);
	req.after = rq->ev_after;
	req.limit = rq->ev_read ? rq->ev_read : (rq->ev_limit < 16 ? rq->ev_limit : 16);
	req.wait_ms = SSE_WAIT_MS;
	hf__rq_submit(rq, &req, on_sse); /* on failure: answered (as an SSE error) and freed */
}

void hf__h_events(struct hf__rq *rq)
{
	static const char *const allowed[] = {"after", "limit", "wait_ms", NULL};
	struct evkeyvalq q;
	int64_t after, limit, wait_ms;
	if (!hf__query_parse(rq, &q, allowed))
		return;
	if (!hf__query_int(rq, &q, "after", 0, INT64_MAX, 0, &after) ||
	    !hf__query_int(rq, &q, "limit", 1, HF_LIST_MAX, 100, &limit) ||
	    !hf__query_int(rq, &q, "wait_ms", 0, HF_WAIT_MAX_MS, 0, &wait_ms))
		goto out;
	const char *accept = hf__rq_header(rq, "Accept");
	bool sse = accept && strstr(accept, "text/event-stream");
	if (sse) {
		/* A reconnecting EventSource says where it stopped. */
		const char *last = hf__rq_header(rq, "Last-Event-ID");
		if (last) {
			char *end;
			unsigned long long v = strtoull(last, &end, 10);
			if (!*last || *end || *last < '0' || *last > '9') {
				hf__rq_fail(rq, HF_EINVAL, "Last-Event-ID must be an event sequence number");
				goto out;
			}
			after = (int64_t)v;
		}
	}
	/* Long-polls and streams park a read each: --max-waiters bounds them as it bounds
	 * parked acquires (counted apart from those, which the store counts). */
	if (sse || wait_ms > 0) {
		if (rq->srv->n_ev_waiters >= (size_t)rq->srv->cfg->max_waiters) {
			hf__rq_fail(rq, HF_ELIMIT, "too many event waiters: the limit is %lld",
			            (long long)rq->srv->cfg->max_waiters);
			goto out;
		}
		rq->ev_waiter = true;
		rq->srv->n_ev_waiters++;
	}
	rq->ev_after = (uint64_t)after;
	rq->ev_limit = (size_t)limit;
	if (sse && strcmp(hf__rq_method(rq), "HEAD") == 0) {
		hf__rq_stream_start(rq, "text/event-stream"); /* the headers of a stream, no stream */
		hf__rq_stream_end(rq);
	} else if (sse) {
		hf__rq_stream_start(rq, "text/event-stream");
		hf__rq_stream_chunk(rq, "retry: 2000\n\n", 13);
		sse_next(rq);
	} else {
		hf_request req;
		hf_request_init(&req, HF_OP_READ_EVENTS);
		req.after = rq->ev_after;
		req.limit = rq->ev_limit;
		req.wait_ms = wait_ms;
		hf__rq_submit(rq, &req, on_poll);
	}
out:
	evhttp_clear_headers(&q);
}
