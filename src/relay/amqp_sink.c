/*
 * amqp_sink.c — the RabbitMQ destination: a durable topic exchange, persistent mandatory
 * messages with ids and headers, publisher confirms; a batch is delivered once the broker
 * has acked every message and returned none. The connection helpers (amqp_conn.h) are in
 * amqp_conn.c, part of libholdfast.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "amqp_conn.h"

#define CONFIRM_TIMEOUT_S 30

int relay_amqp_declare_exchange(amqp_connection_state_t c, const char *exchange, hf_error *err)
{
	amqp_exchange_declare(c, 1, amqp_cstring_bytes(exchange), amqp_cstring_bytes("topic"), 0, 1,
	                      0, 0, amqp_empty_table);
	return relay_amqp_check(amqp_get_rpc_reply(c), "exchange.declare", err);
}

/* ---- The sink. ------------------------------------------------------------------------- */

struct amqp_sink {
	struct relay_sink base;
	struct relay_dest_opts opts;
	amqp_connection_state_t c;
	uint64_t tag; /* delivery tag of the last publish on this connection */
};

static void drop(struct amqp_sink *s)
{
	relay_amqp_close(s->c);
	s->c = NULL;
	s->tag = 0;
}

static int sink_connect(struct amqp_sink *s, hf_error *err)
{
	int rc = relay_amqp_open(s->opts.url, &s->c, err);
	if (rc != HF_OK)
		return rc;
	rc = relay_amqp_declare_exchange(s->c, s->opts.exchange, err);
	if (rc == HF_OK) {
		amqp_confirm_select(s->c, 1);
		rc = relay_amqp_check(amqp_get_rpc_reply(s->c), "confirm.select", err);
	}
	if (rc != HF_OK)
		drop(s);
	return rc;
}

static int publish(struct amqp_sink *s, const struct relay_msg *m, hf_error *err)
{
	char id[HF_NAME_MAX + 32], key[RELAY_ROUTING_KEY_MAX + 1];
	relay_message_id(m, id, sizeof(id));
	relay_routing_key(m, key, sizeof(key));
	amqp_table_entry_t h[3];
	h[0].key = amqp_cstring_bytes("seq");
	h[0].value.kind = AMQP_FIELD_KIND_I64;
	h[0].value.value.i64 = (int64_t)m->ev->seq;
	h[1].key = amqp_cstring_bytes("revision");
	h[1].value.kind = AMQP_FIELD_KIND_I64;
	h[1].value.value.i64 = m->revision;
	h[2].key = amqp_cstring_bytes("resource");
	h[2].value.kind = AMQP_FIELD_KIND_UTF8;
	h[2].value.value.bytes = amqp_cstring_bytes(m->resource ? m->resource : "");
	amqp_basic_properties_t p = {
	    ._flags = AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG |
	              AMQP_BASIC_MESSAGE_ID_FLAG | AMQP_BASIC_HEADERS_FLAG | AMQP_BASIC_TYPE_FLAG |
	              AMQP_BASIC_TIMESTAMP_FLAG,
	    .content_type = amqp_cstring_bytes("application/json"),
	    .delivery_mode = 2,
	    .message_id = amqp_cstring_bytes(id),
	    .headers = {.num_entries = 3, .entries = h},
	    .type = amqp_cstring_bytes(m->ev->type),
	    .timestamp = (uint64_t)(m->ev->at_ms / 1000),
	};
	int st = amqp_basic_publish(s->c, 1, amqp_cstring_bytes(s->opts.exchange),
	                            amqp_cstring_bytes(key), 1, 0, &p, amqp_cstring_bytes(m->json));
	if (st != AMQP_STATUS_OK) {
		relay_err(err, HF_EENGINE, "amqp publish: %s", amqp_error_string2(st));
		return HF_EENGINE;
	}
	s->tag++;
	return HF_OK;
}

/* Reads confirms until every tag in (first-1, last] is acked. A basic.return (unroutable)
 * is read in full and fails the batch; its ack still follows and is counted. */
static int await_confirms(struct amqp_sink *s, uint64_t first, uint64_t last, hf_error *err)
{
	size_t n = (size_t)(last - first + 1), pending = n;
	bool *acked = calloc(n, sizeof(*acked));
	int rc = HF_OK;
	if (!acked) {
		relay_err(err, HF_ENOMEM, "out of memory");
		return HF_ENOMEM;
	}
	while (pending) {
		amqp_frame_t f;
		struct timeval tv = {.tv_sec = CONFIRM_TIMEOUT_S};
		int st = amqp_simple_wait_frame_noblock(s->c, &f, &tv);
		if (st != AMQP_STATUS_OK) {
			relay_err(err, HF_EENGINE, "amqp waiting for confirms: %s",
			          amqp_error_string2(st));
			rc = HF_EENGINE;
			break;
		}
		if (f.frame_type != AMQP_FRAME_METHOD)
			continue;
		amqp_method_number_t id = f.payload.method.id;
		if (id == AMQP_BASIC_ACK_METHOD || id == AMQP_BASIC_NACK_METHOD) {
			uint64_t tag;
			bool multiple;
			if (id == AMQP_BASIC_ACK_METHOD) {
				amqp_basic_ack_t *a = f.payload.method.decoded;
				tag = a->delivery_tag, multiple = a->multiple;
			} else {
				amqp_basic_nack_t *a = f.payload.method.decoded;
				tag = a->delivery_tag, multiple = a->multiple;
				relay_err(err, HF_EENGINE,
				          "amqp: the broker nacked delivery %" PRIu64, tag);
				rc = HF_EENGINE;
			}
			for (uint64_t t = multiple ? first : tag; t <= tag && t <= last; t++)
				if (t >= first && !acked[t - first]) {
					acked[t - first] = true;
					pending--;
				}
		} else if (id == AMQP_BASIC_RETURN_METHOD) {
			amqp_basic_return_t *r = f.payload.method.decoded;
			relay_err(err, HF_EENGINE,
			          "amqp: message returned unroutable (%u %.*s, key '%.*s')",
			          r->reply_code, (int)r->reply_text.len,
			          (const char *)r->reply_text.bytes, (int)r->routing_key.len,
			          (const char *)r->routing_key.bytes);
			rc = HF_EENGINE;
			amqp_message_t msg;
			if (amqp_read_message(s->c, 1, &msg, 0).reply_type != AMQP_RESPONSE_NORMAL)
				break;
			amqp_destroy_message(&msg);
		} else if (id == AMQP_CHANNEL_CLOSE_METHOD || id == AMQP_CONNECTION_CLOSE_METHOD) {
			amqp_rpc_reply_t r = {.reply_type = AMQP_RESPONSE_SERVER_EXCEPTION,
			                      .reply = f.payload.method};
			relay_amqp_check(r, "publish", err);
			rc = HF_EENGINE;
			break;
		}
	}
	free(acked);
	return rc;
}

static int amqp_deliver(struct relay_sink *base, const struct relay_msg *msgs, size_t n,
                        hf_error *err)
{
	struct amqp_sink *s = (struct amqp_sink *)base;
	if (!s->c && sink_connect(s, err) != HF_OK)
		return err ? err->code : HF_EENGINE;
	if (!n)
		return HF_OK;
	uint64_t first = s->tag + 1;
	int rc = HF_OK;
	for (size_t i = 0; i < n && rc == HF_OK; i++)
		rc = publish(s, &msgs[i], err);
	if (rc == HF_OK)
		rc = await_confirms(s, first, s->tag, err);
	amqp_maybe_release_buffers(s->c);
	if (rc != HF_OK)
		drop(s); /* a fresh connection starts a fresh count of delivery tags */
	return rc;
}

static void amqp_free(struct relay_sink *base)
{
	struct amqp_sink *s = (struct amqp_sink *)base;
	drop(s);
	free(s);
}

struct relay_sink *relay_amqp_sink_new(const struct relay_dest_opts *opts)
{
	struct amqp_sink *s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	s->base.deliver = amqp_deliver;
	s->base.free = amqp_free;
	s->opts = *opts;
	return &s->base;
}
