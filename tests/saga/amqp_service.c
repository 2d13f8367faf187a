/*
 * amqp_service.c — a payment service on RabbitMQ queues for test_saga_amqp.py: it answers
 * requests on the queues "payments" and "refunds" (default exchange) with the reply form of
 * saga AMQP steps, {"status","body"}, to their reply_to with their correlation_id, and prints
 * one line per request: "<queue> <message_id> <body>". A payment's "card" decides: "ok" →
 * 201 {"payment": "pay-N"}, "declined" → 402, "silent" → no reply at all. A refund → 200.
 * Built on librabbitmq and holdfast's connection helper. Usage: saga_amqp_service URL
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "relay/amqp_conn.h"

static const char *const queues[] = {"payments", "refunds"};

static int listen_on(amqp_connection_state_t c, hf_error *err)
{
	for (size_t i = 0; i < sizeof(queues) / sizeof(queues[0]); i++) {
		amqp_bytes_t q = amqp_cstring_bytes(queues[i]);
		amqp_queue_declare(c, 1, q, 0, 0, 0, 1, amqp_empty_table);
		if (relay_amqp_check(amqp_get_rpc_reply(c), "declare", err) != HF_OK)
			return -1;
		amqp_basic_consume(c, 1, q, amqp_empty_bytes, 0, 1, 0, amqp_empty_table);
		if (relay_amqp_check(amqp_get_rpc_reply(c), "consume", err) != HF_OK)
			return -1;
	}
	return 0;
}

/* The reply to one request, or NULL for none (yours to free). */
static char *answer(const char *queue, const char *body, long n)
{
	json_t *req = json_loads(body, 0, NULL), *reply;
	const char *card = json_string_value(json_object_get(req, "card"));
	char payment[32];
	snprintf(payment, sizeof(payment), "pay-%ld", n);
	if (strcmp(queue, "refunds") == 0)
		reply = json_pack("{s:i, s:{s:O?}}", "status", 200, "body", "refunded",
		                  json_object_get(req, "payment"));
	else if (card && strcmp(card, "ok") == 0)
		reply = json_pack("{s:i, s:{s:s}}", "status", 201, "body", "payment", payment);
	else if (card && strcmp(card, "silent") == 0)
		reply = NULL;
	else
		reply =
		    json_pack("{s:i, s:{s:s}}", "status", 402, "body", "error", "card declined");
	char *text = reply ? json_dumps(reply, JSON_COMPACT) : NULL;
	json_decref(reply);
	json_decref(req);
	return text;
}

int main(int argc, char **argv)
{
	if (argc != 2)
		return 2;
	amqp_connection_state_t c;
	hf_error err = {0};
	if (relay_amqp_open(argv[1], &c, &err) != HF_OK || listen_on(c, &err) != 0) {
		fprintf(stderr, "service: %s\n", err.message);
		return 1;
	}
	printf("ready\n");
	fflush(stdout);
	for (long n = 1;; n++) {
		amqp_envelope_t env;
		amqp_maybe_release_buffers(c);
		if (amqp_consume_message(c, &env, NULL, 0).reply_type != AMQP_RESPONSE_NORMAL)
			return 1;
		const amqp_basic_properties_t *p = &env.message.properties;
		char queue[64], *body = strndup(env.message.body.bytes, env.message.body.len);
		snprintf(queue, sizeof(queue), "%.*s", (int)env.routing_key.len,
		         (const char *)env.routing_key.bytes);
		char *reply = body ? answer(queue, body, n) : NULL;
		printf("%s %.*s %s\n", queue,
		       (p->_flags & AMQP_BASIC_MESSAGE_ID_FLAG) ? (int)p->message_id.len : 1,
		       (p->_flags & AMQP_BASIC_MESSAGE_ID_FLAG) ? (const char *)p->message_id.bytes
		                                                : "-",
		       body ? body : "");
		fflush(stdout);
		if (reply && (p->_flags & AMQP_BASIC_REPLY_TO_FLAG)) {
			amqp_basic_properties_t r = {
			    ._flags = AMQP_BASIC_CORRELATION_ID_FLAG | AMQP_BASIC_CONTENT_TYPE_FLAG,
			    .correlation_id = p->correlation_id,
			    .content_type = amqp_cstring_bytes("application/json")};
			amqp_basic_publish(c, 1, amqp_empty_bytes, p->reply_to, 0, 0, &r,
			                   amqp_cstring_bytes(reply));
		}
		free(reply);
		free(body);
		amqp_destroy_envelope(&env);
	}
}
