/*
 * consume_redis.c — the consumer on Redis Streams: one consumer group over every partition's
 * stream; its own pending entries first (after a restart), then entries idle with a dead
 * consumer (XAUTOCLAIM), then new ones; XACK after apply; an entry delivered more than
 * max_attempts times, or failing every attempt, goes to the dead-letter stream <prefix>dead.
 * A partition with entries pending at another consumer gives no new ones: order per resource.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>

#include "relay.h"

#define BLOCK_MS "200" /* XREADGROUP BLOCK, and the wait when every partition waits */

struct rc_ctx {
	const struct relay_consume_opts *o;
	struct relay_ledger *l;
	struct relay_consume_stats *st;
	redisContext *c;
	char (*keys)[300];
	/* Per partition: entries are pending at another consumer, so new ones must wait. */
	bool *held_elsewhere;
	redisReply **replies; /* autoclaim's pipeline: two replies per partition */
	char dead[300];
};

static int redis_fail(struct rc_ctx *x, const char *what, redisReply *r, hf_error *err)
{
	relay_err(err, HF_EENGINE, "redis %s: %s", what,
	          r && r->type == REDIS_REPLY_ERROR ? r->str
	          : x->c->errstr[0]                 ? x->c->errstr
	                                            : "unexpected reply");
	freeReplyObject(r);
	return HF_EENGINE;
}

static int create_groups(struct rc_ctx *x, hf_error *err)
{
	for (unsigned p = 0; p < x->o->partitions; p++) {
		redisReply *r =
		    redisCommand(x->c, "XGROUP CREATE %s %s 0 MKSTREAM", x->keys[p], x->o->queue);
		if (!r || (r->type == REDIS_REPLY_ERROR && strncmp(r->str, "BUSYGROUP", 9) != 0))
			return redis_fail(x, "XGROUP CREATE", r, err);
		freeReplyObject(r);
	}
	return HF_OK;
}

static const char *field(const redisReply *fields, const char *name)
{
	for (size_t i = 0; i + 1 < fields->elements; i += 2)
		if (fields->element[i]->type == REDIS_REPLY_STRING &&
		    strcmp(fields->element[i]->str, name) == 0 &&
		    fields->element[i + 1]->type == REDIS_REPLY_STRING)
			return fields->element[i + 1]->str;
	return NULL;
}

/* How many times the group has delivered the entry (XPENDING); 0 if not pending. */
static unsigned deliveries(struct rc_ctx *x, const char *key, const char *id)
{
	redisReply *r = redisCommand(x->c, "XPENDING %s %s %s %s 1", key, x->o->queue, id, id);
	unsigned n = 0;
	if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 1 &&
	    r->element[0]->type == REDIS_REPLY_ARRAY && r->element[0]->elements == 4)
		n = (unsigned)r->element[0]->element[3]->integer;
	freeReplyObject(r);
	return n;
}

static int dead_letter(struct rc_ctx *x, const char *key, const char *id, const redisReply *fields,
                       const char *why, hf_error *err)
{
	const char *argv[32];
	size_t n = 0;
	argv[n++] = "XADD";
	argv[n++] = x->dead;
	argv[n++] = "*";
	argv[n++] = "stream";
	argv[n++] = key;
	argv[n++] = "id";
	argv[n++] = id;
	argv[n++] = "reason";
	argv[n++] = why;
	for (size_t i = 0; i + 1 < fields->elements && n + 2 <= 32; i += 2) {
		argv[n++] = fields->element[i]->str ? fields->element[i]->str : "";
		argv[n++] = fields->element[i + 1]->str ? fields->element[i + 1]->str : "";
	}
	redisReply *r = redisCommandArgv(x->c, (int)n, argv, NULL);
	if (!r || r->type != REDIS_REPLY_STRING)
		return redis_fail(x, "XADD (dead letter)", r, err);
	freeReplyObject(r);
	return HF_OK;
}

/* Applies one entry [id, [field, value, ...]] of `key`, then XACKs it. */
static int handle_entry(struct rc_ctx *x, const char *key, const redisReply *entry,
                        unsigned delivered, hf_error *err)
{
	if (entry->type != REDIS_REPLY_ARRAY || entry->elements != 2 ||
	    entry->element[0]->type != REDIS_REPLY_STRING)
		return HF_OK; /* an entry trimmed away while pending: nothing left to apply */
	const char *id = entry->element[0]->str;
	const redisReply *fields = entry->element[1];
	if (fields->type != REDIS_REPLY_ARRAY)
		return HF_OK;
	const char *res = field(fields, "resource"), *json = field(fields, "event");
	const char *seq = field(fields, "seq"), *rev = field(fields, "revision");
	enum relay_verdict v;
	int rc;
	if (!res || !json || !seq || !rev) {
		relay_log("error", "msg=malformed stream=%s id=%s", key, id);
		x->st->dead++;
		rc = dead_letter(x, key, id, fields, "malformed", err);
	} else if (delivered > x->o->max_attempts) {
		relay_log("error", "msg=dead_lettered stream=%s id=%s deliveries=%u", key, id,
		          delivered);
		x->st->dead++;
		rc = dead_letter(x, key, id, fields, "too many deliveries", err);
	} else {
		v = relay_consume_one(x->o, x->l, x->st, res, strtoll(rev, NULL, 10),
		                      strtoull(seq, NULL, 10), json, delivered ? delivered - 1 : 0,
		                      err);
		if (v == RELAY_ERROR)
			return err->code;
		rc = v == RELAY_FAILED ? dead_letter(x, key, id, fields, "apply failed", err)
		                       : HF_OK;
	}
	if (rc != HF_OK)
		return rc;
	redisReply *r = redisCommand(x->c, "XACK %s %s %s", key, x->o->queue, id);
	if (!r || r->type != REDIS_REPLY_INTEGER)
		return redis_fail(x, "XACK", r, err);
	freeReplyObject(r);
	return HF_OK;
}

/* Handles an XREADGROUP reply ([[key, [entries]], ...]); *got counts the entries. */
static int handle_read(struct rc_ctx *x, redisReply *r, bool pending, size_t *got, hf_error *err)
{
	for (size_t s = 0; r->type == REDIS_REPLY_ARRAY && s < r->elements; s++) {
		redisReply *stream = r->element[s];
		if (stream->type != REDIS_REPLY_ARRAY || stream->elements != 2)
			continue;
		const char *key = stream->element[0]->str;
		redisReply *entries = stream->element[1];
		for (size_t i = 0; i < entries->elements; i++) {
			redisReply *e = entries->element[i];
			unsigned d = pending && e->elements == 2
			                 ? deliveries(x, key, e->element[0]->str)
			                 : 1;
			int rc = handle_entry(x, key, e, d, err);
			if (rc != HF_OK)
				return rc;
			(*got)++;
		}
	}
	return HF_OK;
}

/* One XREADGROUP over every partition: from "0" (our pending entries) or ">" (new ones). */
static int read_group(struct rc_ctx *x, bool pending, size_t *got, hf_error *err)
{
	unsigned P = x->o->partitions;
	size_t argc = 0, cap = 10 + 2 * (size_t)P;
	const char **argv = calloc(cap, sizeof(*argv));
	char count[24];
	if (!argv) {
		relay_err(err, HF_ENOMEM, "out of memory");
		return HF_ENOMEM;
	}
	snprintf(count, sizeof(count), "%u", x->o->prefetch);
	argv[argc++] = "XREADGROUP";
	argv[argc++] = "GROUP";
	argv[argc++] = x->o->queue;
	argv[argc++] = x->o->consumer;
	argv[argc++] = "COUNT";
	argv[argc++] = count;
	if (!pending) {
		argv[argc++] = "BLOCK";
		argv[argc++] = BLOCK_MS;
	}
	argv[argc++] = "STREAMS";
	size_t first_key = argc;
	for (unsigned p = 0; p < P; p++)
		if (pending || !x->held_elsewhere[p])
			argv[argc++] = x->keys[p];
	size_t n_keys = argc - first_key;
	for (size_t k = 0; k < n_keys; k++)
		argv[argc++] = pending ? "0" : ">";
	*got = 0;
	if (n_keys == 0) { /* every partition waits for another consumer: let it go on */
		free(argv);
		relay_sleep_ms(atoi(BLOCK_MS), x->o->stop);
		return HF_OK;
	}
	redisReply *r = redisCommandArgv(x->c, (int)argc, argv, NULL);
	free(argv);
	if (!r || r->type == REDIS_REPLY_ERROR)
		return redis_fail(x, "XREADGROUP", r, err);
	int rc = handle_read(x, r, pending, got, err);
	freeReplyObject(r);
	return rc;
}

/* Whether entries of the partition are still pending at a consumer other than this one (alive
 * and applying them, or dead and not idle long enough to be claimed): new entries of that
 * partition must wait for them, or one resource's events would be applied out of order (a
 * consumer taking over from a dead one read revision 4 before it could claim 1..3). From an
 * XPENDING summary reply: [count, first, last, [[consumer, count], ...] or nil]. */
static bool pending_elsewhere(const struct rc_ctx *x, const redisReply *r)
{
	const redisReply *owners = r->element[3];
	for (size_t i = 0; owners->type == REDIS_REPLY_ARRAY && i < owners->elements; i++) {
		const redisReply *o = owners->element[i];
		if (o->type == REDIS_REPLY_ARRAY && o->elements == 2 &&
		    o->element[0]->type == REDIS_REPLY_STRING &&
		    strcmp(o->element[0]->str, x->o->consumer) != 0)
			return true;
	}
	return false;
}

/* Applies the entries of one XAUTOCLAIM reply (taken over from a dead consumer). */
static int handle_claimed(struct rc_ctx *x, unsigned p, const redisReply *r, size_t *got,
                          hf_error *err)
{
	const redisReply *entries = r->element[1];
	for (size_t i = 0; i < entries->elements; i++) {
		const redisReply *e = entries->element[i];
		unsigned d = e->elements == 2 ? deliveries(x, x->keys[p], e->element[0]->str) : 1;
		int rc = handle_entry(x, x->keys[p], e, d, err);
		if (rc != HF_OK)
			return rc;
		(*got)++;
	}
	return HF_OK;
}

/* Every round, before new entries are read: takes over entries idle longer than
 * claim_idle_ms (their consumer died) and applies them, and notes which partitions still have
 * entries pending elsewhere. XAUTOCLAIM and XPENDING of every partition go in one pipeline:
 * one round trip a round, not two per partition. (A claimed entry is this consumer's in the
 * XPENDING that follows its claim, so it holds nothing back.) */
static int autoclaim(struct rc_ctx *x, size_t *got, hf_error *err)
{
	unsigned P = x->o->partitions;
	redisReply **rs = x->replies;
	*got = 0;
	for (unsigned p = 0; p < P; p++) {
		redisAppendCommand(x->c, "XAUTOCLAIM %s %s %s %lld 0-0 COUNT %u", x->keys[p],
		                   x->o->queue, x->o->consumer, (long long)x->o->claim_idle_ms,
		                   x->o->prefetch);
		redisAppendCommand(x->c, "XPENDING %s %s", x->keys[p], x->o->queue);
	}
	int rc = HF_OK;
	for (size_t i = 0; rc == HF_OK && i < 2 * (size_t)P; i++)
		if (redisGetReply(x->c, (void **)&rs[i]) != REDIS_OK) {
			rs[i] = NULL; /* the connection is broken: the rest will not come */
			rc = redis_fail(x, "XAUTOCLAIM", NULL, err);
		}
	for (unsigned p = 0; rc == HF_OK && p < P; p++) {
		redisReply *claim = rs[2 * p], *pend = rs[2 * p + 1];
		if (!claim || claim->type != REDIS_REPLY_ARRAY || claim->elements < 2) {
			rs[2 * p] = NULL; /* redis_fail frees it */
			rc = redis_fail(x, "XAUTOCLAIM", claim, err);
		} else if (!pend || pend->type != REDIS_REPLY_ARRAY || pend->elements < 4) {
			rs[2 * p + 1] = NULL;
			rc = redis_fail(x, "XPENDING", pend, err);
		} else if ((rc = handle_claimed(x, p, claim, got, err)) == HF_OK) {
			x->held_elsewhere[p] = pending_elsewhere(x, pend);
		}
	}
	for (size_t i = 0; i < 2 * (size_t)P; i++) {
		freeReplyObject(rs[i]);
		rs[i] = NULL;
	}
	return rc;
}

static int consume_connection(struct rc_ctx *x, int64_t *idle_since, hf_error *err)
{
	size_t got;
	int rc;
	/* Ours first: what a previous run of this consumer took and did not acknowledge. */
	do {
		if ((rc = read_group(x, true, &got, err)) != HF_OK)
			return rc;
	} while (got);
	while (!(x->o->stop && *x->o->stop)) {
		if ((rc = autoclaim(x, &got, err)) != HF_OK)
			return rc;
		size_t fresh;
		if ((rc = read_group(x, false, &fresh, err)) != HF_OK)
			return rc;
		/* Entries pending elsewhere are work to come (claimed once idle), not idleness. */
		bool waiting = false;
		for (unsigned p = 0; p < x->o->partitions; p++)
			waiting = waiting || x->held_elsewhere[p];
		if (got + fresh || waiting)
			*idle_since = relay_mono_ms();
		else if (x->o->idle_exit_ms > 0 &&
		         relay_mono_ms() - *idle_since >= x->o->idle_exit_ms)
			return HF_OK;
	}
	return HF_OK;
}

static int connect_and_consume(struct rc_ctx *x, int64_t *idle_since, hf_error *err)
{
	char host[256];
	int port;
	if (relay_parse_redis_url(x->o->url, host, sizeof(host), &port, err) != HF_OK)
		return HF_EINVAL;
	struct timeval tv = {.tv_sec = 5};
	x->c = redisConnectWithTimeout(host, port, tv);
	int rc;
	if (!x->c || x->c->err) {
		relay_err(err, HF_EENGINE, "redis %s:%d: %s", host, port,
		          x->c ? x->c->errstr : "out of memory");
		rc = HF_EENGINE;
	} else {
		redisSetTimeout(x->c, tv);
		rc = create_groups(x, err);
		if (rc == HF_OK && !x->o->declare_only)
			rc = consume_connection(x, idle_since, err);
	}
	redisFree(x->c);
	x->c = NULL;
	return rc;
}

int relay_consume_redis(const struct relay_consume_opts *o, struct relay_ledger *l,
                        struct relay_consume_stats *st, hf_error *err)
{
	struct rc_ctx x = {.o = o, .l = l, .st = st};
	if (o->partitions < 1) {
		relay_err(err, HF_EINVAL, "partitions must be at least 1");
		return HF_EINVAL;
	}
	x.keys = calloc(o->partitions, sizeof(*x.keys));
	x.held_elsewhere = calloc(o->partitions, sizeof(*x.held_elsewhere));
	x.replies = calloc(2 * (size_t)o->partitions, sizeof(*x.replies));
	if (!x.keys || !x.held_elsewhere || !x.replies) {
		free(x.keys);
		free(x.held_elsewhere);
		free(x.replies);
		relay_err(err, HF_ENOMEM, "out of memory");
		return HF_ENOMEM;
	}
	for (unsigned p = 0; p < o->partitions; p++)
		snprintf(x.keys[p], sizeof(x.keys[p]), "%s%u", o->stream_prefix, p);
	snprintf(x.dead, sizeof(x.dead), "%sdead", o->stream_prefix);
	int64_t backoff = 100, idle_since = relay_mono_ms();
	int rc = HF_OK;
	while (!(o->stop && *o->stop)) {
		rc = connect_and_consume(&x, &idle_since, err);
		if (rc != HF_EENGINE || o->declare_only)
			break;
		relay_log("warn", "msg=reconnect why=\"%s\"", err->message);
		if (o->idle_exit_ms > 0 && relay_mono_ms() - idle_since >= o->idle_exit_ms)
			break;
		relay_back_off(&backoff, RELAY_RECONNECT_MAX_MS, o->stop);
	}
	free(x.keys);
	free(x.held_elsewhere);
	free(x.replies);
	return rc;
}
