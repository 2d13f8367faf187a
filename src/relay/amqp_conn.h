/*
 * amqp_conn.h — what the AMQP relay sink and the AMQP consumer share: opening a connection
 * and channel 1 from an amqp:// URL, and turning librabbitmq's replies into messages.
 */
#ifndef HF_RELAY_AMQP_CONN_H
#define HF_RELAY_AMQP_CONN_H

#include <amqp.h>

#include "relay.h"

/* Opens amqp://user:pass@host:port/vhost (the defaults of amqp_parse_url) with channel 1.
 * On HF_OK *out is yours to relay_amqp_close(); else err says why. */
int relay_amqp_open(const char *url, amqp_connection_state_t *out, hf_error *err);
void relay_amqp_close(amqp_connection_state_t c);
/* HF_OK for a normal reply; else HF_EENGINE with `what` and the broker's or library's reason. */
int relay_amqp_check(amqp_rpc_reply_t r, const char *what, hf_error *err);
/* Declares the durable topic exchange. */
int relay_amqp_declare_exchange(amqp_connection_state_t c, const char *exchange, hf_error *err);

#endif /* HF_RELAY_AMQP_CONN_H */
