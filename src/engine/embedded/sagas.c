/*
 * sagas.c — the embedded engine's saga storage: saga types and saga records in memory,
 * journaled to the tables `saga_types` and `sagas` in the same batch as the saga's event, with
 * a version compare-and-set per saga and start-idempotency by key. The HF_OP_SAGA_* ops.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/codec.h"
#include "engine/embedded/embedded.h"

/* One saga: its journal row text is also the GET answer. */
struct srow {
	char *id;
	char *type;
	char *state;
	char *idem_key; /* NULL if started without one */
	int64_t version;
	char *body; /* {"id","type","state","version","created_at","updated_at",...,"record":{}} */
};

struct trow {
	char *name;
	int64_t version;
	char *body; /* {"name","version","updated_at","type":{}} */
};

struct hf__sagas {
	struct hf__map sagas; /* by id */
	struct hf__map types; /* by name */
	struct hf__map idem;  /* by start idempotency key */
};

struct hf__sagas *hf__sagas_new(void)
{
	struct hf__sagas *s = calloc(1, sizeof(*s));
	if (s) {
		hf__map_init(&s->sagas);
		hf__map_init(&s->types);
		hf__map_init(&s->idem);
	}
	return s;
}

static void srow_free(struct srow *r)
{
	if (!r)
		return;
	free(r->id), free(r->type), free(r->state), free(r->idem_key), free(r->body);
	free(r);
}

static void trow_free(struct trow *r)
{
	if (r)
		free(r->name), free(r->body), free(r);
}

void hf__sagas_free(struct hf__sagas *s)
{
	if (!s)
		return;
	size_t pos = 0;
	void *cur = NULL, *v;
	while ((v = hf__map_next(&s->sagas, &pos, &cur)))
		srow_free(v);
	pos = 0, cur = NULL;
	while ((v = hf__map_next(&s->types, &pos, &cur)))
		trow_free(v);
	hf__map_release(&s->sagas);
	hf__map_release(&s->types);
	hf__map_release(&s->idem);
	free(s);
}

static const char *str(const json_t *obj, const char *key)
{
	const char *v = json_string_value(json_object_get(obj, key));
	return v ? v : "";
}

/* A row from its parsed body; NULL when out of memory. `body` is consumed. */
static struct srow *srow_of(const json_t *row, char *body)
{
	struct srow *r = calloc(1, sizeof(*r));
	const char *key = json_string_value(json_object_get(row, "idempotency_key"));
	if (!r || !(r->id = hf__strdup(str(row, "id"))) || !(r->type = hf__strdup(str(row, "type"))) ||
	    !(r->state = hf__strdup(str(row, "state"))) || (key && !(r->idem_key = hf__strdup(key)))) {
		srow_free(r);
		free(body);
		return NULL;
	}
	r->version = json_integer_value(json_object_get(row, "version"));
	r->body = body;
	return r;
}

/* Puts r in the maps, replacing (and freeing) the row of the same id. */
static int srow_install(struct hf__sagas *s, struct srow *r)
{
	struct srow *old = hf__map_remove(&s->sagas, r->id);
	if (old && old->idem_key)
		hf__map_remove(&s->idem, old->idem_key);
	srow_free(old);
	if (hf__map_put(&s->sagas, r->id, r) != HF_OK) {
		srow_free(r);
		return HF_ENOMEM;
	}
	if (r->idem_key && hf__map_put(&s->idem, r->idem_key, r) != HF_OK)
		return HF_ENOMEM;
	return HF_OK;
}

static int trow_install(struct hf__sagas *s, const char *name, int64_t version, char *body)
{
	struct trow *r = calloc(1, sizeof(*r));
	if (!r || !(r->name = hf__strdup(name))) {
		free(r), free(body);
		return HF_ENOMEM;
	}
	r->version = version;
	r->body = body;
	trow_free(hf__map_remove(&s->types, name));
	if (hf__map_put(&s->types, r->name, r) != HF_OK) {
		trow_free(r);
		return HF_ENOMEM;
	}
	return HF_OK;
}

/* ---- loading ---- */

int hf__sagas_load_type(struct hf__sagas *s, const char *body, hf_error *err)
{
	json_t *row = json_loads(body, 0, NULL);
	const char *name = json_string_value(json_object_get(row, "name"));
	int64_t version = json_integer_value(json_object_get(row, "version"));
	int rc = name ? trow_install(s, name, version, hf__strdup(body)) : HF_ECORRUPT;
	json_decref(row);
	return rc == HF_OK ? HF_OK : hf__err(err, rc, "saga type row is not valid: %.80s", body);
}

int hf__sagas_load_saga(struct hf__sagas *s, const char *body, hf_error *err)
{
	json_t *row = json_loads(body, 0, NULL);
	char *copy = hf__strdup(body);
	struct srow *r = row && copy && json_is_string(json_object_get(row, "id"))
	                     ? srow_of(row, copy)
	                     : (free(copy), NULL);
	json_decref(row);
	if (!r || srow_install(s, r) != HF_OK)
		return hf__err(err, HF_ECORRUPT, "saga row is not valid: %.80s", body);
	return HF_OK;
}

/* ---- ops ---- */

static void fail(struct hf__effects *fx, struct hf__call *call, int code, const char *msg,
                 const char *arg)
{
	call->reply->error.code = code;
	snprintf(call->reply->error.message, sizeof(call->reply->error.message), msg, arg);
	hf__fx_done(fx, call);
}

static void reply_text(struct hf__effects *fx, struct hf__call *call, const char *text)
{
	if (!(call->reply->json = hf__strdup(text))) {
		fail(fx, call, HF_ENOMEM, "out of memory%s", "");
		return;
	}
	hf__fx_done(fx, call);
}

static void op_type_put(struct hf__sagas *s, struct hf__call *call, int64_t now,
                        struct hf__effects *fx)
{
	json_t *type = json_loads(call->req.json, 0, NULL);
	if (!type) {
		fail(fx, call, HF_EINVAL, "saga type is not JSON%s", "");
		return;
	}
	struct trow *old = hf__map_get(&s->types, call->req.name);
	int64_t version = old ? old->version + 1 : 1;
	json_t *row = json_pack("{s:s, s:I, s:I, s:o}", "name", call->req.name, "version",
	                        (json_int_t)version, "updated_at", (json_int_t)now, "type", type);
	char *body = hf__json_dumps(row, JSON_COMPACT | JSON_PRESERVE_ORDER);
	json_decref(row);
	char *journal_body = hf__strdup(body);
	if (!body || !journal_body) {
		free(body), free(journal_body);
		fail(fx, call, HF_ENOMEM, "out of memory%s", "");
		return;
	}
	if (trow_install(s, call->req.name, version, body) != HF_OK) { /* body is freed */
		free(journal_body);
		fail(fx, call, HF_ENOMEM, "out of memory%s", "");
		return;
	}
	hf__fx_record(fx, HF__J_SAGA_TYPE, call->req.name, journal_body, false);
	reply_text(fx, call, ((struct trow *)hf__map_get(&s->types, call->req.name))->body);
}

/* Both row structs start with their key. */
static int cmp_key(const void *a, const void *b)
{
	return strcmp(**(char *const *const *)a, **(char *const *const *)b);
}

static bool type_keep(const void *row, const json_t *filter)
{
	(void)row, (void)filter;
	return true;
}

static const char *type_body(const void *row)
{
	return ((const struct trow *)row)->body;
}

static bool saga_keep(const void *row, const json_t *filter)
{
	const struct srow *r = row;
	const char *state = json_string_value(json_object_get(filter, "state"));
	const char *type = json_string_value(json_object_get(filter, "type"));
	if (json_is_true(json_object_get(filter, "unowned")))
		return false; /* one instance runs every saga: none is left without its owner */
	return (!state || strcmp(state, r->state) == 0) && (!type || strcmp(type, r->type) == 0);
}

static const char *saga_body(const void *row)
{
	return ((const struct srow *)row)->body;
}

/* The rows of `map` after the cursor that `keep` accepts, by key, as
 * {"items":[row, ...],"more":bool,"total":N} (rows as their journal text; total: all the
 * matches after the cursor). */
static void reply_list(struct hf__effects *fx, struct hf__call *call, const struct hf__map *map,
                       bool (*keep)(const void *, const json_t *),
                       const char *(*body_of)(const void *))
{
	json_t *filter = call->req.json ? json_loads(call->req.json, 0, NULL) : NULL;
	const void **match = malloc((map->count + 1) * sizeof(*match));
	struct hf__jw w;
	hf__jw_init(&w);
	if (!match) {
		json_decref(filter);
		fail(fx, call, HF_ENOMEM, "out of memory%s", "");
		return;
	}
	size_t n = 0, pos = 0;
	void *cur = NULL, *v;
	while ((v = hf__map_next(map, &pos, &cur)))
		if ((!call->req.cursor || strcmp(*(char **)v, call->req.cursor) > 0) && keep(v, filter))
			match[n++] = v;
	qsort(match, n, sizeof(*match), cmp_key);
	size_t take = n < call->req.limit ? n : call->req.limit;
	hf__jw_lit(&w, "{\"items\":[");
	for (size_t i = 0; i < take; i++) {
		if (i)
			hf__jw_lit(&w, ",");
		hf__jw_raw(&w, body_of(match[i]), strlen(body_of(match[i])));
	}
	if (n > take)
		hf__jw_lit(&w, "],\"more\":true,\"total\":");
	else
		hf__jw_lit(&w, "],\"more\":false,\"total\":");
	hf__jw_int(&w, (int64_t)n);
	hf__jw_lit(&w, "}");
	free(match);
	json_decref(filter);
	size_t len;
	char *text = hf__jw_finish(&w, &len);
	if (!text) {
		fail(fx, call, HF_ENOMEM, "out of memory%s", "");
		return;
	}
	call->reply->json = text;
	call->reply->more = n > take;
	hf__fx_done(fx, call);
}

/* The row a save writes: the caller's fields plus version and times. NULL: out of memory. */
static char *saga_row_text(const json_t *arg, const struct srow *old, int64_t version,
                           int64_t now)
{
	json_t *row = json_object();
	json_t *created = old ? NULL : json_integer(now);
	if (old) {
		json_t *o = json_loads(old->body, 0, NULL);
		created = json_incref(json_object_get(o, "created_at"));
		json_decref(o);
	}
	const char *key = old ? old->idem_key : json_string_value(json_object_get(arg, "idempotency_key"));
	int rc = !row || !created;
	rc = rc || json_object_set_new(row, "id", json_string(str(arg, "id")));
	rc = rc || json_object_set_new(row, "type", json_string(str(arg, "type")));
	rc = rc || json_object_set_new(row, "state", json_string(str(arg, "state")));
	rc = rc || json_object_set_new(row, "version", json_integer(version));
	rc = rc || json_object_set(row, "created_at", created);
	rc = rc || json_object_set_new(row, "updated_at", json_integer(now));
	rc = rc || (key && json_object_set_new(row, "idempotency_key", json_string(key)));
	rc = rc || json_object_set(row, "record", json_object_get(arg, "record"));
	json_decref(created);
	char *text = rc ? NULL : hf__json_dumps(row, JSON_COMPACT | JSON_PRESERVE_ORDER);
	json_decref(row);
	return text;
}

/* Emits the save's event: `event` names it, `event_data` (optional) is its data. */
static void emit_saga_event(struct hf__state *st, struct hf__effects *fx, int64_t now,
                            const json_t *arg)
{
	const char *type = json_string_value(json_object_get(arg, "event"));
	if (!type)
		return;
	char resource[HF_NAME_MAX + 1];
	snprintf(resource, sizeof(resource), "saga/%s", str(arg, "id"));
	json_t *data = json_object_get(arg, "event_data");
	data = data ? json_incref(data)
	            : json_pack("{s:s, s:s, s:s}", "id", str(arg, "id"), "type", str(arg, "type"),
	                        "state", str(arg, "state"));
	char *text = hf__json_dumps(data, JSON_COMPACT | JSON_SORT_KEYS);
	json_decref(data);
	hf__state_emit(st, fx, now, type, resource, text);
}

/* Saves a saga: a new one (if_version 0; a repeat of its idempotency key answers the first
 * saga, "replayed") or a new version of one (if_version = its version, else
 * version_conflict). Answers {"id","version","replayed"}. */
static void op_save(struct hf__state *st, struct hf__sagas *s, struct hf__call *call,
                    int64_t now, struct hf__effects *fx)
{
	json_t *arg = json_loads(call->req.json, 0, NULL);
	const char *id = json_string_value(json_object_get(arg, "id"));
	const char *key = json_string_value(json_object_get(arg, "idempotency_key"));
	if (!id || strlen(id) != HF_ID_LEN || strspn(id, "0123456789abcdef") != HF_ID_LEN ||
	    !json_is_object(json_object_get(arg, "record"))) {
		json_decref(arg);
		fail(fx, call, HF_EINVAL, "saga save needs an id (32 lowercase hex) and a record%s", "");
		return;
	}
	struct srow *old = hf__map_get(&s->sagas, id);
	struct srow *first = key && call->req.if_version == 0 ? hf__map_get(&s->idem, key) : NULL;
	char answer[160];
	if (first) {
		snprintf(answer, sizeof(answer), "{\"id\":\"%s\",\"version\":%lld,\"replayed\":true}",
		         first->id, (long long)first->version);
		json_decref(arg);
		reply_text(fx, call, answer);
		return;
	}
	if ((call->req.if_version == 0 && old) ||
	    (call->req.if_version > 0 && (!old || old->version != call->req.if_version))) {
		json_decref(arg);
		fail(fx, call, old ? HF_EVERSION : HF_ENOSAGA,
		     old ? "saga %s has another version" : "no saga %s", id);
		return;
	}
	int64_t version = call->req.if_version + 1;
	char *body = saga_row_text(arg, old, version, now);
	json_t *row = body ? json_loads(body, 0, NULL) : NULL;
	char *journal_body = hf__strdup(body);
	struct srow *r = row && journal_body ? srow_of(row, body) : (free(body), NULL);
	json_decref(row);
	if (!r || srow_install(s, r) != HF_OK) {
		free(journal_body);
		json_decref(arg);
		fail(fx, call, HF_ENOMEM, "out of memory%s", "");
		return;
	}
	hf__fx_record(fx, HF__J_SAGA, id, journal_body, false);
	emit_saga_event(st, fx, now, arg);
	snprintf(answer, sizeof(answer), "{\"id\":\"%s\",\"version\":%lld,\"replayed\":false}",
	         r->id, (long long)version);
	json_decref(arg);
	reply_text(fx, call, answer);
}

void hf__sagas_apply(struct hf__state *st, struct hf__sagas *s, struct hf__call *call,
                     int64_t now, struct hf__effects *fx)
{
	const struct trow *t;
	const struct srow *r;
	switch (call->req.op) {
	case HF_OP_SAGA_TYPE_PUT:
		op_type_put(s, call, now, fx);
		return;
	case HF_OP_SAGA_TYPE_GET:
		if (!(t = hf__map_get(&s->types, call->req.name)))
			fail(fx, call, HF_ENOSAGATYPE, "no saga type '%s'", call->req.name);
		else
			reply_text(fx, call, t->body);
		return;
	case HF_OP_SAGA_TYPE_LIST:
		reply_list(fx, call, &s->types, type_keep, type_body);
		return;
	case HF_OP_SAGA_SAVE:
		op_save(st, s, call, now, fx);
		return;
	case HF_OP_SAGA_GET:
		if (!(r = hf__map_get(&s->sagas, call->req.name)))
			fail(fx, call, HF_ENOSAGA, "no saga '%s'", call->req.name);
		else
			reply_text(fx, call, r->body);
		return;
	case HF_OP_SAGA_LIST:
		reply_list(fx, call, &s->sagas, saga_keep, saga_body);
		return;
	default:
		fail(fx, call, HF_EINVAL, "not a saga operation%s", "");
	}
}
