/*
 * request.c — request/reply over RabbitMQ (seed 004): publish a request with a private,
 * exclusive reply queue and a correlation id, wait for the matching reply up to a timeout;
 * a client keeps its connection and reply queue between requests. Part of libholdfast: saga steps
 * call services that listen on queues with it (src/saga/run.c, docs/sagas.md), and so does
 * `holdfast request`.
 */
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "core/core.h"
#include "relay/amqp_conn.h"
#include "saga/saga.h"

#define SLICE_MS 100 /* how often a wait looks at the stop flag */

/* 128 random bits as hex: a correlation id no other request shares. */
static void correlation_id(char out[33])
{
	unsigned char b[16];
	FILE *f = fopen("/dev/urandom", "rb");
	size_t got = f ? fread(b, 1, sizeof(b), f) : 0;
	if (f)
		fclose(f);
	for (size_t i = got; i < sizeof(b); i++) /* no /dev/urandom: time and address bits */
		b[i] = (unsigned char)((uintptr_t)out >> (i % 8) ^ (unsigned)hf__mono_ms() >> i);
	for (size_t i = 0; i < sizeof(b); i++)
		snprintf(out + 2 * i, 3, "%02x", b[i]);
}

/* An exclusive, auto-deleted, server-named queue, consumed without acks: the replies. */
static int open_reply_queue(amqp_connection_state_t c, char *name, size_t size, hf_error *err)
{
	amqp_queue_declare_ok_t *q =
	    amqp_queue_declare(c, 1, amqp_empty_bytes, 0, 0, 1, 1, amqp_empty_table);
	int rc = relay_amqp_check(amqp_get_rpc_reply(c), "declare the reply queue", err);
	if (rc != HF_OK)
		return rc;
	snprintf(name, size, "%.*s", (int)q->queue.len, (const char *)q->queue.bytes);
	amqp_basic_consume(c, 1, q->queue, amqp_empty_bytes, 0, 1, 1, amqp_empty_table);
	return relay_amqp_check(amqp_get_rpc_reply(c), "consume the reply queue", err);
}

/* After amqp_consume_message saw a frame other than a delivery: a basic.return means no
 * queue took the request (nobody listens on its key). */
static int other_frame(amqp_connection_state_t c, const struct relay_request *rq, hf_error *err)
{
	amqp_frame_t f;
	if (amqp_simple_wait_frame(c, &f) != AMQP_STATUS_OK) {
		hf__err(err, HF_EENGINE, "amqp: connection lost while waiting for the reply");
		return HF_EENGINE;
	}
	if (f.frame_type == AMQP_FRAME_METHOD && f.payload.method.id == AMQP_BASIC_RETURN_METHOD) {
		amqp_message_t m;
		if (amqp_read_message(c, f.channel, &m, 0).reply_type == AMQP_RESPONSE_NORMAL)
			amqp_destroy_message(&m);
		hf__err(err, HF_EUNAVAILABLE,
		        "no queue is bound to routing key '%s' on exchange '%s': nobody listens",
		        rq->routing_key, rq->exchange);
		return HF_EUNAVAILABLE;
	}
	return HF_OK; /* something harmless (a basic.ack): go on waiting */
}

/* Waits for the delivery whose correlation id is `id`; others (a broker may redeliver) are
 * dropped. */
static int await_reply(amqp_connection_state_t c, const struct relay_request *rq, const char *id,
                       int64_t deadline, char **reply, hf_error *err)
{
	for (;;) {
		if (rq->stop && *rq->stop)
			return hf__err(err, HF_ECANCELED, "the store is closing");
		int64_t left = deadline - hf__mono_ms();
		if (left <= 0) {
			hf__err(err, HF_ETIMEDOUT, "no reply to '%s' within %lld ms",
			        rq->routing_key, (long long)rq->timeout_ms);
			return HF_ETIMEDOUT;
		}
		if (rq->stop && left > SLICE_MS)
			left = SLICE_MS;
		struct timeval tv = {.tv_sec = left / 1000, .tv_usec = (left % 1000) * 1000};
		amqp_envelope_t env;
		amqp_maybe_release_buffers(c);
		amqp_rpc_reply_t r = amqp_consume_message(c, &env, &tv, 0);
		if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION &&
		    r.library_error == AMQP_STATUS_TIMEOUT)
			continue;
		if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION &&
		    r.library_error == AMQP_STATUS_UNEXPECTED_STATE) {
			int rc = other_frame(c, rq, err);
			if (rc != HF_OK)
				return rc;
			continue;
		}
		int rc = relay_amqp_check(r, "wait for the reply", err);
		if (rc != HF_OK)
			return rc;
		const amqp_basic_properties_t *p = &env.message.properties;
		bool match = (p->_flags & AMQP_BASIC_CORRELATION_ID_FLAG) &&
		             p->correlation_id.len == strlen(id) &&
		             memcmp(p->correlation_id.bytes, id, p->correlation_id.len) == 0;
		if (match) {
			*reply = malloc(env.message.body.len + 1);
			if (*reply) {
				memcpy(*reply, env.message.body.bytes, env.message.body.len);
				(*reply)[env.message.body.len] = '\0';
			}
		}
		amqp_destroy_envelope(&env);
		if (match && !*reply) {
			hf__err(err, HF_ENOMEM, "out of memory");
			return HF_ENOMEM;
		}
		if (match)
			return HF_OK;
	}
}

struct relay_amqp_client {
	amqp_connection_state_t c; /* NULL until the first request, and after a failure */
	char *url;                 /* what c is connected to */
	char queue[256];           /* c's exclusive reply queue */
};

struct relay_amqp_client *relay_amqp_client_new(void)
{
	return calloc(1, sizeof(struct relay_amqp_client));
}

static void client_drop(struct relay_amqp_client *cl)
{
	relay_amqp_close(cl->c);
	cl->c = NULL;
	free(cl->url);
	cl->url = NULL;
	cl->queue[0] = '\0'; /* it went with the connection */
}

void relay_amqp_client_free(struct relay_amqp_client *cl)
{
	if (!cl)
		return;
	client_drop(cl);
	free(cl);
}

/* A kept connection is idle between requests: nothing may be waiting on it. Anything there
 * (the broker's or a proxy's close, an EOF) means it cannot be trusted with a request. */
static bool client_idle(struct relay_amqp_client *cl)
{
	struct pollfd p = {.fd = amqp_get_sockfd(cl->c), .events = POLLIN};
	return !amqp_frames_enqueued(cl->c) && !amqp_data_in_buffer(cl->c) && p.fd >= 0 &&
	       poll(&p, 1, 0) == 0;
}

/* Connects (again) unless a kept connection to the same URL is idle. */
static int client_ready(struct relay_amqp_client *cl, const struct relay_request *rq, hf_error *err)
{
	if (cl->c && (strcmp(cl->url, rq->url) != 0 || !client_idle(cl)))
		client_drop(cl);
	if (!cl->c) {
		int rc = relay_amqp_open(rq->url, &cl->c, err);
		if (rc != HF_OK)
			return rc;
		if (!(cl->url = strdup(rq->url))) {
			client_drop(cl);
			return hf__err(err, HF_ENOMEM, "out of memory");
		}
	}
	/* The reply queue's declare and consume wait no longer than the call may last
	 * (connecting and logging in have librabbitmq's own bounds: 5 s and 12 s). */
	struct timeval rpc = {.tv_sec = rq->timeout_ms / 1000,
	                      .tv_usec = (rq->timeout_ms % 1000) * 1000};
	amqp_set_rpc_timeout(cl->c, &rpc);
	if (cl->queue[0])
		return HF_OK;
	int rc = open_reply_queue(cl->c, cl->queue, sizeof(cl->queue), err);
	if (rc != HF_OK)
		client_drop(cl);
	return rc;
}

static int publish(struct relay_amqp_client *cl, const struct relay_request *rq, const char *id,
                   hf_error *err)
{
	amqp_basic_properties_t p = {
	    ._flags = AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_REPLY_TO_FLAG |
	              AMQP_BASIC_CORRELATION_ID_FLAG | AMQP_BASIC_EXPIRATION_FLAG,
	    .content_type = amqp_cstring_bytes("application/json"),
	    .reply_to = amqp_cstring_bytes(cl->queue),
	    .correlation_id = amqp_cstring_bytes(id),
	};
	if (rq->message_id) {
		p._flags |= AMQP_BASIC_MESSAGE_ID_FLAG;
		p.message_id = amqp_cstring_bytes(rq->message_id);
	}
	/* A request nobody took in time is worthless: let the broker drop it then. */
	char expiration[32];
	snprintf(expiration, sizeof(expiration), "%lld", (long long)rq->timeout_ms);
	p.expiration = amqp_cstring_bytes(expiration);
	int st = amqp_basic_publish(cl->c, 1, amqp_cstring_bytes(rq->exchange),
	                            amqp_cstring_bytes(rq->routing_key), 1, 0, &p,
	                            amqp_cstring_bytes(rq->body));
	if (st != AMQP_STATUS_OK)
		return hf__err(err, HF_EENGINE, "amqp publish: %s", amqp_error_string2(st));
	if (rq->sent)
		*rq->sent = true;
	return HF_OK;
}

int relay_amqp_request_on(struct relay_amqp_client *cl, const struct relay_request *rq,
                          char **reply, hf_error *err)
{
	*reply = NULL;
	if (rq->sent)
		*rq->sent = false;
	if (!rq->url || !rq->routing_key || !rq->body || rq->timeout_ms <= 0)
		return hf__err(err, HF_EINVAL,
		               "a request needs a url, a routing key, a body and a timeout > 0");
	/* The timeout counts from here: a new connection's set-up is part of the call. */
	int64_t deadline = hf__mono_ms() + rq->timeout_ms;
	char id[33];
	correlation_id(id);
	int rc = client_ready(cl, rq, err);
	if (rc == HF_OK && (rc = publish(cl, rq, id, err)) == HF_OK)
		rc = await_reply(cl->c, rq, id, deadline, reply, err);
	/* Kept only when nothing can arrive later: answered, or returned unroutable. A timeout
	 * may leave a late reply (or half a frame) behind; a failure leaves the state unknown. */
	if (rc != HF_OK && rc != HF_EUNAVAILABLE)
		client_drop(cl);
	return rc;
}

int relay_amqp_request(const struct relay_request *rq, char **reply, hf_error *err)
{
	struct relay_amqp_client cl = {0};
	int rc = relay_amqp_request_on(&cl, rq, reply, err);
	client_drop(&cl);
	return rc;
}
