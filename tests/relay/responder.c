/*
 * responder.c — a queue service for the request/reply test: declares QUEUE, and answers each
 * request "echo:BODY" to its reply_to with its correlation_id (or, with "silent", never
 * answers), COUNT times, then exits. Prints "ready" once it consumes.
 * Usage: relay_responder URL QUEUE COUNT [silent]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "amqp_conn.h"

int main(int argc, char **argv)
{
	if (argc < 4)
		return 2;
	bool silent = argc > 4 && strcmp(argv[4], "silent") == 0;
	amqp_connection_state_t c;
	hf_error err = {0};
	if (relay_amqp_open(argv[1], &c, &err) != HF_OK) {
		fprintf(stderr, "responder: %s\n", err.message);
		return 1;
	}
	amqp_queue_declare(c, 1, amqp_cstring_bytes(argv[2]), 0, 0, 0, 1, amqp_empty_table);
	amqp_basic_consume(c, 1, amqp_cstring_bytes(argv[2]), amqp_empty_bytes, 0, 1, 0,
	                   amqp_empty_table);
	if (relay_amqp_check(amqp_get_rpc_reply(c), "consume", &err) != HF_OK) {
		fprintf(stderr, "responder: %s\n", err.message);
		return 1;
	}
	printf("ready\n");
	fflush(stdout);
	for (long n = atol(argv[3]); n > 0; n--) {
		amqp_envelope_t env;
		amqp_maybe_release_buffers(c);
		if (amqp_consume_message(c, &env, NULL, 0).reply_type != AMQP_RESPONSE_NORMAL)
			return 1;
		const amqp_basic_properties_t *p = &env.message.properties;
		if (!silent && (p->_flags & AMQP_BASIC_REPLY_TO_FLAG)) {
			size_t len = env.message.body.len + 6;
			char *body = malloc(len);
			if (!body)
				return 1;
			memcpy(body, "echo:", 5);
			memcpy(body + 5, env.message.body.bytes, env.message.body.len);
			amqp_basic_properties_t r = {._flags = AMQP_BASIC_CORRELATION_ID_FLAG,
			                             .correlation_id = p->correlation_id};
			amqp_bytes_t b = {.len = len - 1, .bytes = body};
			amqp_basic_publish(c, 1, amqp_empty_bytes, p->reply_to, 0, 0, &r, b);
			free(body);
		}
		amqp_destroy_envelope(&env);
	}
	relay_amqp_close(c);
	return 0;
}
