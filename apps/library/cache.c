/*
 * cache.c — books served cache-aside (the seed's read side): Redis first, on a miss the
 * database and holdfast, then the cache is filled — unless the book was invalidated since
 * the miss (a generation counter per book, compared in the same Lua step as the SET).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "library.h"

#define KEY "library:book:%" PRId64            /* the cached book, JSON */
#define GEN_KEY "library:book:%" PRId64 ":gen" /* bumped by every invalidation */

/* SET KEYS[1] = ARGV[1] for ARGV[3] s, only if KEYS[2] still is ARGV[2] (the generation the
 * filler read before it read the database). */
static const char fill_lua[] =
    "if (redis.call('GET', KEYS[2]) or '0') == ARGV[2] then "
    "redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[3]) return 1 end return 0";

void library_cache_invalidate(struct app_redis *rd, int64_t book_id)
{
	if (!app_redis_ok(rd))
		return; /* the entry lives out its TTL */
	char key[64], gen[64];
	snprintf(key, sizeof(key), KEY, book_id);
	snprintf(gen, sizeof(gen), GEN_KEY, book_id);
	redisReply *a = redisCommand(rd->ctx, "INCR %s", gen);
	redisReply *b = a ? redisCommand(rd->ctx, "DEL %s", key) : NULL;
	if (!a || !b)
		fprintf(stderr, "library: cache: cannot invalidate book %" PRId64 ": %s\n", book_id,
		        rd->ctx->errstr);
	freeReplyObject(a);
	freeReplyObject(b);
}

/* The book from the database and holdfast, as cached and shown; NULL with *r on failure. */
static json_t *book_load(struct library_conn *c, int64_t id, struct app_reply *r)
{
	PGresult *res =
	    app_pg_by_id(&c->pg, r,
	                 "SELECT row_to_json(b) FROM (SELECT id, title, copies, version,"
	                 " to_char(created_at AT TIME ZONE 'UTC', "
	                 "'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') created_at,"
	                 " to_char(updated_at AT TIME ZONE 'UTC', "
	                 "'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') updated_at"
	                 " FROM books WHERE id = $1) b",
	                 id, "book_not_found", "book");
	if (!res)
		return NULL;
	json_t *o = json_loads(PQgetvalue(res, 0, 0), 0, NULL);
	PQclear(res);
	char name[40];
	app_hf_name(name, sizeof(name), "book", id);
	json_t *hf = app_hf_resource_json(library_store, name);
	json_object_set_new(o, "available", json_incref(json_object_get(hf, "available")));
	json_object_set_new(o, "holdfast", hf);
	return o;
}

/* The book's version as its ETag. */
static void etag(struct app_reply *r, json_t *book)
{
	snprintf(r->etag, sizeof(r->etag), "%" JSON_INTEGER_FORMAT,
	         json_integer_value(json_object_get(book, "version")));
}

void library_book_get(struct library_conn *c, int64_t id, struct app_reply *r)
{
	char key[64], gen_key[64];
	snprintf(key, sizeof(key), KEY, id);
	snprintf(gen_key, sizeof(gen_key), GEN_KEY, id);
	bool redis = app_redis_ok(&c->redis);
	char gen[32] = "0";
	if (redis) {
		redisReply *rep = redisCommand(c->redis.ctx, "MGET %s %s", key, gen_key);
		if (rep && rep->type == REDIS_REPLY_ARRAY && rep->elements == 2) {
			json_t *hit = rep->element[0]->type == REDIS_REPLY_STRING
			                  ? json_loads(rep->element[0]->str, 0, NULL)
			                  : NULL;
			if (rep->element[1]->type == REDIS_REPLY_STRING)
				snprintf(gen, sizeof(gen), "%s", rep->element[1]->str);
			freeReplyObject(rep);
			if (hit) {
				json_object_set_new(hit, "cache", json_string("hit"));
				app_ok(r, 200, hit);
				etag(r, hit);
				return;
			}
		} else {
			freeReplyObject(rep);
			redis = false;
		}
	}
	json_t *book = book_load(c, id, r);
	if (!book)
		return;
	if (redis && !json_object_get(json_object_get(book, "holdfast"), "error")) {
		char *text = json_dumps(book, JSON_COMPACT);
		char ttl[24];
		snprintf(ttl, sizeof(ttl), "%" PRId64, library_cfg.cache_ttl_s);
		redisReply *rep = text ? redisCommand(c->redis.ctx, "EVAL %s 2 %s %s %s %s %s",
		                                      fill_lua, key, gen_key, text, gen, ttl)
		                       : NULL;
		freeReplyObject(rep);
		free(text);
	}
	json_object_set_new(book, "cache", json_string(redis ? "miss" : "bypass"));
	app_ok(r, 200, book);
	etag(r, book);
}
