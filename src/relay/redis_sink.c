/*
 * redis_sink.c — the Redis Streams destination: one stream per partition
 * (<prefix><hash(resource) mod P>), one XADD per message, pipelined per batch; a batch is
 * delivered once every XADD has answered with an entry id.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>

#include "relay.h"

struct redis_sink {
	struct relay_sink base;
	struct relay_dest_opts opts;
	redisContext *c;
};

static int redis_connect(struct redis_sink *s, hf_error *err)
{
	char host[256];
	int port;
	if (relay_parse_redis_url(s->opts.url, host, sizeof(host), &port, err) != HF_OK)
		return HF_EINVAL;
	struct timeval tv = {.tv_sec = 5};
	s->c = redisConnectWithTimeout(host, port, tv);
	if (!s->c || s->c->err) {
		relay_err(err, HF_EENGINE, "redis %s:%d: %s", host, port,
		          s->c ? s->c->errstr : "out of memory");
		redisFree(s->c);
		s->c = NULL;
		return HF_EENGINE;
	}
	redisSetTimeout(s->c, tv);
	return HF_OK;
}

static void append_xadd(struct redis_sink *s, const struct relay_msg *m)
{
	char key[300], seq[24], rev[24], maxlen[24];
	snprintf(key, sizeof(key), "%s%u", s->opts.stream_prefix,
	         relay_partition(m->resource, s->opts.partitions));
	snprintf(seq, sizeof(seq), "%" PRIu64, m->ev->seq);
	snprintf(rev, sizeof(rev), "%" PRId64, m->revision);
	snprintf(maxlen, sizeof(maxlen), "%" PRId64, s->opts.maxlen);
	const char *argv[16];
	size_t n = 0;
	argv[n++] = "XADD";
	argv[n++] = key;
	if (s->opts.maxlen > 0) {
		argv[n++] = "MAXLEN";
		argv[n++] = "~";
		argv[n++] = maxlen;
	}
	argv[n++] = "*";
	argv[n++] = "seq";
	argv[n++] = seq;
	argv[n++] = "revision";
	argv[n++] = rev;
	argv[n++] = "resource";
	argv[n++] = m->resource ? m->resource : "";
	argv[n++] = "type";
	argv[n++] = m->ev->type;
	argv[n++] = "event";
	argv[n++] = m->json;
	redisAppendCommandArgv(s->c, (int)n, argv, NULL);
}

static int redis_deliver(struct relay_sink *base, const struct relay_msg *msgs, size_t n,
                         hf_error *err)
{
	struct redis_sink *s = (struct redis_sink *)base;
	if (!s->c && redis_connect(s, err) != HF_OK)
		return err ? err->code : HF_EENGINE;
	for (size_t i = 0; i < n; i++)
		append_xadd(s, &msgs[i]);
	int rc = HF_OK;
	/* Read every reply, even after a failure, so none is left for the next batch. */
	for (size_t i = 0; i < n; i++) {
		redisReply *r = NULL;
		if (redisGetReply(s->c, (void **)&r) != REDIS_OK) {
			relay_err(err, HF_EENGINE, "redis: %s", s->c->errstr);
			rc = HF_EENGINE;
			break;
		}
		if (r->type != REDIS_REPLY_STRING && rc == HF_OK) {
			relay_err(err, HF_EENGINE, "redis XADD: %s",
			          r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
			rc = HF_EENGINE;
		}
		freeReplyObject(r);
	}
	if (rc != HF_OK) {
		redisFree(s->c);
		s->c = NULL;
	}
	return rc;
}

static void redis_free(struct relay_sink *base)
{
	struct redis_sink *s = (struct redis_sink *)base;
	if (s->c)
		redisFree(s->c);
	free(s);
}

struct relay_sink *relay_redis_sink_new(const struct relay_dest_opts *opts)
{
	struct redis_sink *s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	s->base.deliver = redis_deliver;
	s->base.free = redis_free;
	s->opts = *opts;
	return &s->base;
}
