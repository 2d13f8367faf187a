/*
 * amqp_conn.c — opening a RabbitMQ connection and channel 1 from an amqp:// URL, and turning
 * librabbitmq's replies into messages (amqp_conn.h). Part of libholdfast, where saga steps
 * call services on queues (request.c); the relay's sink and consumer use it from there.
 */
#include <stdlib.h>
#include <string.h>

#include <amqp_tcp_socket.h>

#include "core/core.h"
#include "relay/amqp_conn.h"

int relay_amqp_check(amqp_rpc_reply_t r, const char *what, hf_error *err)
{
	switch (r.reply_type) {
	case AMQP_RESPONSE_NORMAL:
		return HF_OK;
	case AMQP_RESPONSE_NONE:
		hf__err(err, HF_EENGINE, "amqp %s: connection closed", what);
		break;
	case AMQP_RESPONSE_LIBRARY_EXCEPTION:
		hf__err(err, HF_EENGINE, "amqp %s: %s", what, amqp_error_string2(r.library_error));
		break;
	case AMQP_RESPONSE_SERVER_EXCEPTION:
		if (r.reply.id == AMQP_CONNECTION_CLOSE_METHOD ||
		    r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
			/* Both close methods start with reply_code, reply_text. */
			amqp_channel_close_t *m = r.reply.decoded;
			hf__err(err, HF_EENGINE, "amqp %s: %u %.*s", what, m->reply_code,
			        (int)m->reply_text.len, (const char *)m->reply_text.bytes);
		} else {
			hf__err(err, HF_EENGINE, "amqp %s: unexpected method 0x%08x", what,
			        r.reply.id);
		}
		break;
	}
	return HF_EENGINE;
}

int relay_amqp_open(const char *url, amqp_connection_state_t *out, hf_error *err)
{
	*out = NULL;
	struct amqp_connection_info ci;
	char *copy = strdup(url);
	if (!copy) {
		hf__err(err, HF_ENOMEM, "out of memory");
		return HF_ENOMEM;
	}
	amqp_default_connection_info(&ci);
	if (amqp_parse_url(copy, &ci) != AMQP_STATUS_OK || ci.ssl) {
		hf__err(err, HF_EINVAL,
		        "amqp url must be amqp://user:pass@host:port/vhost, not '%s'", url);
		free(copy);
		return HF_EINVAL;
	}
	amqp_connection_state_t c = amqp_new_connection();
	amqp_socket_t *sock = c ? amqp_tcp_socket_new(c) : NULL;
	struct timeval tv = {.tv_sec = 5};
	int rc = HF_EENGINE;
	if (!sock) {
		hf__err(err, HF_ENOMEM, "out of memory");
		rc = HF_ENOMEM;
		goto out_fail;
	}
	int st = amqp_socket_open_noblock(sock, ci.host, ci.port, &tv);
	if (st != AMQP_STATUS_OK) {
		hf__err(err, HF_EENGINE, "amqp %s:%d: %s", ci.host, ci.port,
		        amqp_error_string2(st));
		goto out_fail;
	}
	amqp_rpc_reply_t login =
	    amqp_login(c, ci.vhost, 0, 131072, 0, AMQP_SASL_METHOD_PLAIN, ci.user, ci.password);
	if (relay_amqp_check(login, "login", err) != HF_OK) {
		/* The broker said no (credentials, vhost): retrying will not change its mind. */
		if (login.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION)
			rc = err ? (err->code = HF_EAUTH) : HF_EAUTH;
		goto out_fail;
	}
	amqp_channel_open(c, 1);
	if (relay_amqp_check(amqp_get_rpc_reply(c), "channel.open", err) != HF_OK)
		goto out_fail;
	free(copy);
	*out = c;
	return HF_OK;
out_fail:
	if (c)
		amqp_destroy_connection(c);
	free(copy);
	return rc;
}

void relay_amqp_close(amqp_connection_state_t c)
{
	if (!c)
		return;
	/* Polite closes; a dead broker makes them fail, which changes nothing. */
	amqp_channel_close(c, 1, AMQP_REPLY_SUCCESS);
	amqp_connection_close(c, AMQP_REPLY_SUCCESS);
	amqp_destroy_connection(c);
}
