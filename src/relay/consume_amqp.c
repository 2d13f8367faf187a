/*
 * consume_amqp.c — the consumer on RabbitMQ: a durable queue bound to the relay's exchange,
 * with a dead-letter exchange and queue (<queue>.dlx, <queue>.dead), optional message TTL and
 * priorities; prefetch, manual acks; a failed message is rejected into the dead letters.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "amqp_conn.h"

#define POLL_MS 200

static int declare_dead_letters(amqp_connection_state_t c, const char *queue, hf_error *err)
{
	char dlx[512], dead[512];
	snprintf(dlx, sizeof(dlx), "%s.dlx", queue);
	snprintf(dead, sizeof(dead), "%s.dead", queue);
	amqp_exchange_declare(c, 1, amqp_cstring_bytes(dlx), amqp_cstring_bytes("fanout"), 0, 1, 0,
	                      0, amqp_empty_table);
	if (relay_amqp_check(amqp_get_rpc_reply(c), "exchange.declare (dead letters)", err) !=
	    HF_OK)
		return HF_EENGINE;
	amqp_queue_declare(c, 1, amqp_cstring_bytes(dead), 0, 1, 0, 0, amqp_empty_table);
	if (relay_amqp_check(amqp_get_rpc_reply(c), "queue.declare (dead letters)", err) != HF_OK)
		return HF_EENGINE;
	amqp_queue_bind(c, 1, amqp_cstring_bytes(dead), amqp_cstring_bytes(dlx),
	                amqp_cstring_bytes(""), amqp_empty_table);
	return relay_amqp_check(amqp_get_rpc_reply(c), "queue.bind (dead letters)", err);
}

static int declare_queue(amqp_connection_state_t c, const struct relay_consume_opts *o,
                         hf_error *err)
{
	if (relay_amqp_declare_exchange(c, o->exchange, err) != HF_OK ||
	    declare_dead_letters(c, o->queue, err) != HF_OK)
		return HF_EENGINE;
	char dlx[512];
	snprintf(dlx, sizeof(dlx), "%s.dlx", o->queue);
	amqp_table_entry_t args[3];
	int n = 0;
	args[n].key = amqp_cstring_bytes("x-dead-letter-exchange");
	args[n].value.kind = AMQP_FIELD_KIND_UTF8;
	args[n++].value.value.bytes = amqp_cstring_bytes(dlx);
	if (o->message_ttl_ms > 0) {
		args[n].key = amqp_cstring_bytes("x-message-ttl");
		args[n].value.kind = AMQP_FIELD_KIND_I64;
		args[n++].value.value.i64 = o->message_ttl_ms;
	}
	if (o->max_priority > 0) {
		args[n].key = amqp_cstring_bytes("x-max-priority");
		args[n].value.kind = AMQP_FIELD_KIND_I32;
		args[n++].value.value.i32 = o->max_priority;
	}
	amqp_table_t table = {.num_entries = n, .entries = args};
	amqp_queue_declare(c, 1, amqp_cstring_bytes(o->queue), 0, 1, 0, 0, table);
	if (relay_amqp_check(amqp_get_rpc_reply(c), "queue.declare", err) != HF_OK)
		return HF_EENGINE;
	static const char *const all[] = {"#"};
	const char *const *binds = o->n_binds ? o->binds : all;
	size_t n_binds = o->n_binds ? o->n_binds : 1;
	for (size_t i = 0; i < n_binds; i++) {
		amqp_queue_bind(c, 1, amqp_cstring_bytes(o->queue), amqp_cstring_bytes(o->exchange),
		                amqp_cstring_bytes(binds[i]), amqp_empty_table);
		if (relay_amqp_check(amqp_get_rpc_reply(c), "queue.bind", err) != HF_OK)
			return HF_EENGINE;
	}
	return HF_OK;
}

static const amqp_field_value_t *header(const amqp_basic_properties_t *p, const char *name)
{
	if (!(p->_flags & AMQP_BASIC_HEADERS_FLAG))
		return NULL;
	for (int i = 0; i < p->headers.num_entries; i++) {
		const amqp_table_entry_t *e = &p->headers.entries[i];
		if (e->key.len == strlen(name) && memcmp(e->key.bytes, name, e->key.len) == 0)
			return &e->value;
	}
	return NULL;
}

static bool header_i64(const amqp_basic_properties_t *p, const char *name, int64_t *out)
{
	const amqp_field_value_t *v = header(p, name);
	if (!v)
		return false;
	switch (v->kind) {
	case AMQP_FIELD_KIND_I64:
		*out = v->value.i64;
		return true;
	case AMQP_FIELD_KIND_U64:
		*out = (int64_t)v->value.u64;
		return true;
	case AMQP_FIELD_KIND_I32:
		*out = v->value.i32;
		return true;
	case AMQP_FIELD_KIND_U32:
		*out = v->value.u32;
		return true;
	case AMQP_FIELD_KIND_I16:
		*out = v->value.i16;
		return true;
	case AMQP_FIELD_KIND_I8:
		*out = v->value.i8;
		return true;
	default:
		return false;
	}
}

/* Handles one delivery; HF_OK to go on, else the error that stops the consumer. */
static int handle(amqp_connection_state_t c, const struct relay_consume_opts *o,
                  struct relay_ledger *l, struct relay_consume_stats *st, amqp_envelope_t *env,
                  hf_error *err)
{
	const amqp_basic_properties_t *p = &env->message.properties;
	const amqp_field_value_t *res = header(p, "resource");
	int64_t seq = 0, rev = 0;
	char *resource = NULL, *json = NULL;
	enum relay_verdict v;
	if (!res || res->kind != AMQP_FIELD_KIND_UTF8 || !header_i64(p, "seq", &seq) ||
	    !header_i64(p, "revision", &rev)) {
		/* Not a relayed event: nothing to apply it to; straight to the dead letters. */
		relay_log("error",
		          "msg=malformed delivery_tag=%" PRIu64 " why=\"no seq, revision or "
		          "resource header\"",
		          env->delivery_tag);
		st->dead++;
		v = RELAY_FAILED;
	} else {
		resource = strndup(res->value.bytes.bytes, res->value.bytes.len);
		json = strndup(env->message.body.bytes, env->message.body.len);
		if (!resource || !json) {
			free(resource);
			free(json);
			relay_err(err, HF_ENOMEM, "out of memory");
			return HF_ENOMEM;
		}
		v = relay_consume_one(o, l, st, resource, rev, (uint64_t)seq, json, 0, err);
	}
	free(resource);
	free(json);
	int st_;
	if (v == RELAY_ERROR)
		return err->code; /* unacked: the broker redelivers it to the next consumer */
	if (v == RELAY_FAILED)
		st_ = amqp_basic_reject(c, 1, env->delivery_tag, 0);
	else
		st_ = amqp_basic_ack(c, 1, env->delivery_tag, 0);
	if (st_ != AMQP_STATUS_OK) {
		relay_err(err, HF_EENGINE, "amqp ack: %s", amqp_error_string2(st_));
		return HF_EENGINE;
	}
	return HF_OK;
}

static int start_consuming(amqp_connection_state_t c, const struct relay_consume_opts *o,
                           hf_error *err)
{
	amqp_basic_qos(c, 1, 0, (uint16_t)(o->prefetch > 65535 ? 65535 : o->prefetch), 0);
	if (relay_amqp_check(amqp_get_rpc_reply(c), "basic.qos", err) != HF_OK)
		return HF_EENGINE;
	amqp_basic_consume(c, 1, amqp_cstring_bytes(o->queue), amqp_empty_bytes, 0, 0, 0,
	                   amqp_empty_table);
	return relay_amqp_check(amqp_get_rpc_reply(c), "basic.consume", err);
}

/* Consumes on one connection until stop, idle or an error (HF_EENGINE: reconnect). */
static int consume_connection(amqp_connection_state_t c, const struct relay_consume_opts *o,
                              struct relay_ledger *l, struct relay_consume_stats *st,
                              int64_t *idle_since, hf_error *err)
{
	if (start_consuming(c, o, err) != HF_OK)
		return HF_EENGINE;
	while (!(o->stop && *o->stop)) {
		if (o->idle_exit_ms > 0 && relay_mono_ms() - *idle_since >= o->idle_exit_ms)
			return HF_OK;
		amqp_envelope_t env;
		struct timeval tv = {.tv_usec = POLL_MS * 1000};
		amqp_maybe_release_buffers(c);
		amqp_rpc_reply_t r = amqp_consume_message(c, &env, &tv, 0);
		if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION &&
		    r.library_error == AMQP_STATUS_TIMEOUT)
			continue;
		if (relay_amqp_check(r, "consume", err) != HF_OK)
			return HF_EENGINE;
		int rc = handle(c, o, l, st, &env, err);
		amqp_destroy_envelope(&env);
		if (rc != HF_OK)
			return rc;
		*idle_since = relay_mono_ms();
	}
	return HF_OK;
}

int relay_consume_amqp(const struct relay_consume_opts *o, struct relay_ledger *l,
                       struct relay_consume_stats *st, hf_error *err)
{
	int64_t backoff = 100, idle_since = relay_mono_ms();
	while (!(o->stop && *o->stop)) {
		amqp_connection_state_t c;
		int rc = relay_amqp_open(o->url, &c, err);
		if (rc == HF_OK)
			rc = declare_queue(c, o, err);
		if (rc == HF_OK && o->declare_only) {
			relay_amqp_close(c);
			return HF_OK;
		}
		if (rc == HF_OK) {
			backoff = 100;
			rc = consume_connection(c, o, l, st, &idle_since, err);
		}
		relay_amqp_close(c);
		if (rc == HF_OK)
			return HF_OK;
		if (rc != HF_EENGINE || o->declare_only)
			return rc;
		relay_log("warn", "msg=reconnect why=\"%s\"", err->message);
		if (o->idle_exit_ms > 0 && relay_mono_ms() - idle_since >= o->idle_exit_ms)
			return rc;
		relay_back_off(&backoff, RELAY_RECONNECT_MAX_MS, o->stop);
	}
	return HF_OK;
}
