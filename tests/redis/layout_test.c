/*
 * layout_test.c — the redis:// store's hold records across layout versions: a record written
 * by version 1 (JSON text) is read, extended and released by this version and rewritten in
 * layout 2 (struct-packed, first byte 2); a layout-2 record round-trips every field, for
 * several resources and for names JSON would escape; a store of a later layout is refused.
 * Runs under with_redis.sh (first port).
 */
#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "holdfast.h"
#include "check.h"
#include "direct.h"

static redisContext *rc_;

/* The first byte of the stored record of hold `id` (-1 when absent). */
static int record_byte(const char *id)
{
	redisReply *r = redisCommand(rc_, "HGET lt:holds %s", id);
	int b = r && r->type == REDIS_REPLY_STRING && r->len > 0 ? (unsigned char)r->str[0] : -1;
	if (r)
		freeReplyObject(r);
	return b;
}

/* Writes hold h's record as version 1 did: the JSON of holds.lua's hold table. */
static bool write_v1(const hf_hold *h, const char *token, int state)
{
	char parts[1024] = "";
	size_t off = 0;
	for (size_t i = 0; i < h->n_parts; i++)
		off += (size_t)snprintf(parts + off, sizeof(parts) - off,
		                        "%s{\"name\":\"%s\",\"units\":%" PRId64 ",\"fence\":%" PRId64 "}",
		                        i ? "," : "", h->parts[i].resource, h->parts[i].units, h->parts[i].fence);
	char json[2048];
	snprintf(json, sizeof(json),
	         "{\"id\":\"%s\",\"token\":\"%s\",\"owner\":\"%s\",\"state\":%d,\"mode\":%d,"
	         "\"created\":%" PRId64 ",\"expires\":%" PRId64 ",\"ended\":0,\"parts\":[%s]}",
	         h->id, token, h->owner, state, (int)h->mode, h->created_at_ms, h->expires_at_ms,
	         parts);
	redisReply *r = redisCommand(rc_, "HSET lt:holds %s %s", h->id, json);
	bool ok = r && r->type == REDIS_REPLY_INTEGER;
	if (r)
		freeReplyObject(r);
	return ok;
}

static int take(hf_store *st, const char **names, size_t n, hf_hold **out, hf_error *err)
{
	hf_claim c[4];
	for (size_t i = 0; i < n; i++)
		c[i] = (hf_claim){.name = names[i], .units = 1, .capacity = 3};
	hf_acquire_req req = {.owner = "layout-test", .claims = c, .n_claims = n, .ttl_ms = 30000,
	                      .mode = HF_MODE_UNITS};
	return hf_acquire(st, &req, out, err);
}

/* A hold written by version 1 is read, changed (and so rewritten as layout 2) and released. */
static void v1_record_migrates(hf_store *st)
{
	const char *names[] = {"lt-a", "lt-b"};
	hf_hold *h = NULL, *x = NULL, *r = NULL;
	hf_error err;
	CHECK(take(st, names, 2, &h, &err) == HF_OK, "acquire: %s", err.message);
	CHECK(record_byte(h->id) == 2, "a new record is not layout 2 (first byte %d)", record_byte(h->id));
	CHECK(write_v1(h, h->token, 0), "could not write the version-1 record");
	CHECK(record_byte(h->id) == '{', "the version-1 record was not written");
	CHECK(hf_extend(st, h->id, h->token, 60000, &x, &err) == HF_OK, "extend of a v1 record: %s",
	      err.message);
	CHECK(x->n_parts == 2 && !strcmp(x->parts[1].resource, "lt-b") &&
	          x->parts[1].fence == h->parts[1].fence && x->expires_at_ms > h->expires_at_ms,
	      "the v1 record read back wrong");
	CHECK(record_byte(h->id) == 2, "the extended record was not rewritten as layout 2");
	CHECK(write_v1(x, h->token, 0), "could not write the version-1 record again");
	CHECK(hf_release(st, h->id, "0123456789abcdef0123456789abcdef", &r, &err) == HF_ETOKEN,
	      "a wrong token was not refused on a v1 record");
	CHECK(hf_release(st, h->id, h->token, &r, &err) == HF_OK, "release of a v1 record: %s",
	      err.message);
	CHECK(r->state == HF_HOLD_RELEASED && r->ended_at_ms > 0, "the release read back wrong");
	hf_hold_free(r);
	r = NULL;
	CHECK(hf_release(st, h->id, h->token, &r, &err) == HF_EENDED,
	      "a second release of the migrated hold was not hold_ended");
	hf_hold_free(x);
	hf_hold_free(h);
}

/* Every field of a layout-2 record comes back, names JSON would escape included. */
static void v2_round_trip(hf_store *st)
{
	const char *names[] = {"lt \"q\"", "lt-\xc3\xa9t\xc3\xa9", "lt\\z"};
	hf_hold *h = NULL, *x = NULL, *r = NULL;
	hf_error err;
	CHECK(take(st, names, 3, &h, &err) == HF_OK, "acquire: %s", err.message);
	CHECK(hf_confirm(st, h->id, h->token, &x, &err) == HF_OK, "confirm: %s", err.message);
	CHECK(x->state == HF_HOLD_CONFIRMED && x->expires_at_ms == 0 && x->n_parts == 3 &&
	          !strcmp(x->owner, "layout-test") && x->created_at_ms == h->created_at_ms,
	      "the confirmed hold read back wrong");
	for (size_t i = 0; i < 3; i++)
		CHECK(!strcmp(x->parts[i].resource, h->parts[i].resource) && x->parts[i].units == 1 &&
		          x->parts[i].fence == h->parts[i].fence,
		      "part %zu read back wrong: '%s'", i, x->parts[i].resource);
	CHECK(hf_release(st, h->id, h->token, &r, &err) == HF_OK, "release: %s", err.message);
	hf_hold_free(r);
	hf_hold_free(x);
	hf_hold_free(h);
}

/* A store of a later layout is refused by name, not misread. */
static void newer_layout_refused(int port)
{
	DIRECT(rc_, "SET lt9:layout 9");
	char url[128];
	snprintf(url, sizeof(url), "redis://127.0.0.1:%d?prefix=lt9:", port);
	hf_store *st = NULL;
	hf_hold *h = NULL;
	hf_error err;
	CHECK(hf_open(url, NULL, &st, &err) == HF_OK, "open %s: %s", url, err.message);
	const char *names[] = {"lt-new"};
	int rc = take(st, names, 1, &h, &err);
	hf_close(st);
	CHECK(rc == HF_EENGINE && strstr(err.message, "layout version 9"),
	      "a layout-9 store was not refused: %s: %s", hf_err_name(rc), rc ? err.message : "");
	hf_hold_free(h);
}

int main(void)
{
	int port;
	hf_store *st = NULL;
	int rc = open_direct("prefix=lt:", &port, &rc_, &st);
	if (rc)
		return rc;
	v1_record_migrates(st);
	if (!failures)
		v2_round_trip(st);
	hf_close(st);
	if (!failures)
		newer_layout_refused(port);
	redisFree(rc_);
	printf(failures ? "FAILED\n" : "all layout checks passed\n");
	return failures ? 1 : 0;
}
