/*
 * codec.h — the JSON wire form of holdfast's nouns, shared by holdfastd (which writes replies
 * and reads requests) and the http:// engine (which writes requests and reads replies), so
 * that both sides agree by construction. Internal to libholdfast.
 */
#ifndef HF_CODEC_H
#define HF_CODEC_H

#include <jansson.h>
#include <stdbool.h>
#include <string.h>

#include "holdfast.h"

/* Items to JSON. Each returns a new reference, or NULL on allocation failure. */
json_t *hf__resource_to_json(const hf_resource *res);
/* json_dumps that fails whole: NULL when any allocation fails (or j is NULL); else text to
 * free(). jansson's own json_dumps can lose an object key on a failed allocation and still
 * return the text. */
char *hf__json_dumps(const json_t *j, size_t flags);

/* json_loadb(buf, len, JSON_REJECT_DUPLICATES, err): the same tree, or the same error, with
 * what requests mostly send (small objects of plain ASCII strings and integers) read without
 * jansson's byte-at-a-time lexer (codec.c says how). */
json_t *hf__json_loadb(const char *buf, size_t len, json_error_t *err);

json_t *hf__hold_to_json(const hf_hold *hold); /* includes "token" only when hold->token[0] */
json_t *hf__event_to_json(const hf_event *ev);
json_t *hf__waiter_to_json(const hf_waiter *w); /* never a token: a waiter record has none */
json_t *hf__error_to_json(const hf_error *err); /* {"error":{"code","message"}} */

/* JSON to items: fill *out (cleared first) or return HF_EPROTO/HF_EINVAL with a message. */
int hf__resource_from_json(const json_t *j, hf_resource *out, hf_error *err);
int hf__hold_from_json(const json_t *j, hf_hold *out, hf_error *err);
int hf__event_from_json(const json_t *j, hf_event *out, hf_error *err);
int hf__waiter_from_json(const json_t *j, hf_waiter *out, hf_error *err);
int hf__error_from_json(const json_t *j, hf_error *out); /* HF_OK if j held an error */
/* Fills an event's revisions (out->resource and out->revision set, out->revisions NULL) from
 * its "revisions" object ({"name": revision}, listing out->resource; NULL when the event
 * touches its resource alone): out->resource first, then the others in the object's order.
 * HF_EPROTO with a message for a list that does not fit; the stores keep the same object. */
int hf__event_revisions_from_json(json_t *revisions, hf_event *out, hf_error *err);
/* The same from a store's row: `revision` (of ev->resource) and `list`, the object's text or
 * NULL. Nothing to do for an event without a resource. */
int hf__event_revisions_from_text(hf_event *ev, int64_t revision, const char *list, hf_error *err);

/*
 * The body of POST /v1/holds to an acquire request and back. Parsing points the request's
 * strings into `body` (keep it alive while you use `out`) and its claims into `claims`
 * (room for HF_CLAIMS_MAX). Wrong types, missing fields and out-of-range numbers get
 * HF_EINVAL with a message naming the field.
 */
int hf__acquire_from_json(const json_t *body, hf_acquire_req *out, hf_claim *claims,
                          hf_error *err);
json_t *hf__acquire_to_json(const hf_acquire_req *req); /* without the idempotency key */

/*
 * The `data` of each event type, the same for every engine (docs/api.md lists them).
 * `type` is a hold event ("hold.granted", "hold.extended", "hold.confirmed",
 * "hold.released", "hold.expired"); the hold's fields are read as they are after the
 * change. Each returns a new reference, or NULL on allocation failure.
 */
json_t *hf__event_hold_data(const char *type, const hf_hold *hold);
/* The same with "by": who ended the hold when not its holder ("operator"); NULL: no key. */
json_t *hf__event_hold_data_by(const char *type, const hf_hold *hold, const char *by);
json_t *hf__event_resource_data(const hf_resource *res); /* created and updated */
json_t *hf__event_resource_deleted_data(const char *name, int64_t version);
/* A hold's parts as [{"name","units"(,"fence")}]. */
json_t *hf__hold_parts_json(const hf_hold *hold, bool fences);

/*
 * Direct writers: the same bytes as jansson's json_dumps of the json_t forms above, written
 * straight into a buffer (no json_t tree, no printf). The request path uses them: a lock pair
 * wrote each of these through jansson at several times the cost of the rest of the pair.
 * tests/unit/codec_test.c holds each to the bytes of its jansson twin.
 */
struct hf__jw {
	char *buf;  /* NUL-terminated while !oom; malloc'd unless still the caller's (borrowed) */
	size_t len, cap;
	bool oom;   /* an allocation failed: every later write is a no-op */
	bool borrowed; /* buf is the caller's (hf__jw_init_buf): never freed here */
};
void hf__jw_init(struct hf__jw *w);
/* Writes into the caller's buf (cap bytes) until more is needed, then into malloc'd memory:
 * read w->buf and w->len (w->oom false), then hf__jw_release. */
void hf__jw_init_buf(struct hf__jw *w, char *buf, size_t cap);
void hf__jw_release(struct hf__jw *w); /* frees what the writer allocated */
/* Room for n more bytes and the NUL; false (oom set, all freed) if it cannot be had. */
bool hf__jw_grow(struct hf__jw *w, size_t n);
/* Inline: a request's answer is written in some sixty pieces, most of them literals whose
 * copy the compiler turns into a few moves. */
static inline void hf__jw_raw(struct hf__jw *w, const char *s, size_t n)
{
	if (w->len + n + 1 > w->cap && !hf__jw_grow(w, n))
		return;
	memcpy(w->buf + w->len, s, n);
	w->len += n;
	w->buf[w->len] = '\0';
}
/* A string literal only (its length is sizeof - 1). */
#define hf__jw_lit(w, lit) hf__jw_raw((w), "" lit "", sizeof(lit) - 1)
/* s as a JSON string (quoted; escapes as jansson's without flags: '"', '\\', controls). */
void hf__jw_str(struct hf__jw *w, const char *s);
void hf__jw_int(struct hf__jw *w, int64_t v);
/* The text (the caller frees it) and its length; NULL (all freed) if an allocation failed. */
char *hf__jw_finish(struct hf__jw *w, size_t *len);

/* Appends json_dumps(hf__hold_to_json(hold), JSON_COMPACT | JSON_PRESERVE_ORDER). */
void hf__jw_hold(struct hf__jw *w, const hf_hold *hold);
/* json_dumps(hf__hold_to_json(hold), JSON_COMPACT | JSON_PRESERVE_ORDER). */
char *hf__hold_text(const hf_hold *hold, size_t *len);
/* json_dumps(hf__event_hold_data(type, hold), JSON_COMPACT | JSON_SORT_KEYS). */
char *hf__event_hold_data_text(const char *type, const hf_hold *hold);
char *hf__event_hold_data_text_by(const char *type, const hf_hold *hold, const char *by);
/* Appends hf__hold_parts_json(hold, fences) with sorted keys: [{"fence","name","units"}]. */
void hf__jw_parts_sorted(struct hf__jw *w, const hf_hold *hold, bool fences);

#endif /* HF_CODEC_H */
