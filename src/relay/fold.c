/*
 * fold.c — event sourcing: the state (resources, live holds) rebuilt from the event log
 * alone, written once, and its comparison with the live state read through the public API
 * (`holdfast replay`, the replay tests, and the read models of project.c).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "relay.h"

int relay_fold_init(struct relay_fold *f)
{
	memset(f, 0, sizeof(*f));
	f->resources = json_object();
	f->holds = json_object();
	f->revisions = json_object();
	if (!f->resources || !f->holds || !f->revisions) {
		relay_fold_free(f);
		return HF_ENOMEM;
	}
	return HF_OK;
}

void relay_fold_free(struct relay_fold *f)
{
	json_decref(f->resources);
	json_decref(f->holds);
	json_decref(f->revisions);
	memset(f, 0, sizeof(*f));
}

static int oom(hf_error *err)
{
	relay_err(err, HF_ENOMEM, "out of memory while folding events");
	return HF_ENOMEM;
}

/* The resource `name`, created implicit (capacity unknown: null) if the fold has none. */
static json_t *fold_resource(struct relay_fold *f, const char *name)
{
	json_t *r = json_object_get(f->resources, name);
	if (r)
		return r;
	r = json_pack("{s:n, s:n, s:I, s:b, s:I, s:I}", "capacity", "meta", "version", (json_int_t)0,
	              "declared", 0, "held", (json_int_t)0, "holds", (json_int_t)0);
	if (!r || json_object_set_new(f->resources, name, r) != 0)
		return NULL;
	return r;
}

static int64_t int_of(const json_t *o, const char *key)
{
	return (int64_t)json_integer_value(json_object_get(o, key));
}

static int set_int(json_t *o, const char *key, int64_t v)
{
	return json_object_set_new(o, key, json_integer((json_int_t)v));
}

static int fold_resource_put(struct relay_fold *f, const char *name, json_t *data, hf_error *err)
{
	json_t *r = fold_resource(f, name);
	json_t *meta = json_object_get(data, "meta");
	if (!r || json_object_set(r, "capacity", json_object_get(data, "capacity")) != 0 ||
	    json_object_set(r, "version", json_object_get(data, "version")) != 0 ||
	    json_object_set(r, "declared", json_object_get(data, "declared")) != 0 ||
	    json_object_set(r, "meta", meta ? meta : json_null()) != 0)
		return oom(err);
	return HF_OK;
}

static int fold_resource_deleted(struct relay_fold *f, const char *name)
{
	json_t *r = json_object_get(f->resources, name);
	if (!r)
		return HF_OK;
	if (int_of(r, "holds") == 0)
		return json_object_del(f->resources, name) == 0 ? HF_OK : HF_ENOMEM;
	/* Still held: what is left is the implicit resource its holds keep alive. */
	return json_object_set_new(r, "declared", json_false()) || set_int(r, "version", 0) ||
	               json_object_set_new(r, "meta", json_null())
	           ? HF_ENOMEM
	           : HF_OK;
}

/* Adds (sign 1) or removes (sign -1) a hold's parts from its resources' counts. */
static int fold_count_parts(struct relay_fold *f, json_t *parts, int sign)
{
	size_t i;
	json_t *p;
	json_array_foreach(parts, i, p) {
		const char *name = json_string_value(json_object_get(p, "resource"));
		json_t *r = name ? fold_resource(f, name) : NULL;
		if (!r)
			return HF_ENOMEM;
		int64_t held = int_of(r, "held") + sign * int_of(p, "units");
		int64_t holds = int_of(r, "holds") + sign;
		if (set_int(r, "held", held) || set_int(r, "holds", holds))
			return HF_ENOMEM;
		if (holds == 0 && !json_is_true(json_object_get(r, "declared")) &&
		    json_object_del(f->resources, name) != 0)
			return HF_ENOMEM;
	}
	return HF_OK;
}

static int fold_hold_granted(struct relay_fold *f, const hf_event *ev, json_t *data, hf_error *err)
{
	json_t *parts = json_array();
	size_t i;
	json_t *p;
	json_array_foreach(json_object_get(data, "resources"), i, p) {
		json_t *part = json_pack("{s:O, s:O, s:O}", "resource", json_object_get(p, "name"),
		                         "units", json_object_get(p, "units"), "fence",
		                         json_object_get(p, "fence"));
		if (!part || json_array_append_new(parts, part) != 0) {
			json_decref(parts);
			return oom(err);
		}
	}
	json_t *h = json_pack("{s:O, s:s, s:O, s:O, s:o}", "owner", json_object_get(data, "owner"),
	                      "state", "tentative", "mode", json_object_get(data, "mode"),
	                      "expires_at_ms", json_object_get(data, "expires_at_ms"), "parts", parts);
	if (!h || json_object_set_new(f->holds, ev->hold_id, h) != 0 ||
	    fold_count_parts(f, parts, 1) != HF_OK)
		return oom(err);
	return HF_OK;
}

static int fold_hold_change(struct relay_fold *f, const hf_event *ev, json_t *data, hf_error *err)
{
	json_t *h = json_object_get(f->holds, ev->hold_id);
	if (!h) {
		/* A hold granted before the oldest event read (a trimmed log): nothing to change. */
		f->orphans++;
		return HF_OK;
	}
	int rc = 0;
	if (strcmp(ev->type, "hold.extended") == 0) {
		rc = json_object_set(h, "expires_at_ms", json_object_get(data, "expires_at_ms"));
	} else if (strcmp(ev->type, "hold.confirmed") == 0) {
		rc = json_object_set_new(h, "state", json_string("confirmed")) ||
		     set_int(h, "expires_at_ms", 0);
	} else { /* released, expired: the hold is no longer live */
		json_incref(h);
		rc = json_object_del(f->holds, ev->hold_id) ||
		     fold_count_parts(f, json_object_get(h, "parts"), -1);
		json_decref(h);
	}
	return rc ? oom(err) : HF_OK;
}

int relay_fold_event(struct relay_fold *f, const hf_event *ev, hf_error *err)
{
	f->seq = ev->seq;
	f->events++;
	for (size_t i = 0; i < ev->n_revisions; i++)
		if (set_int(f->revisions, ev->revisions[i].resource, ev->revisions[i].revision) != 0)
			return oom(err);
	if (ev->n_revisions == 0 && ev->resource && ev->revision > 0 &&
	    set_int(f->revisions, ev->resource, ev->revision) != 0)
		return oom(err);
	json_error_t jerr;
	json_t *data = ev->data ? json_loads(ev->data, 0, &jerr) : json_object();
	if (!json_is_object(data)) {
		json_decref(data);
		relay_err(err, HF_EPROTO, "event %" PRIu64 ": data is not a JSON object", ev->seq);
		return HF_EPROTO;
	}
	int rc = HF_OK;
	const char *t = ev->type ? ev->type : "";
	if ((strcmp(t, "resource.created") == 0 || strcmp(t, "resource.updated") == 0) &&
	    ev->resource)
		rc = fold_resource_put(f, ev->resource, data, err);
	else if (strcmp(t, "resource.deleted") == 0 && ev->resource)
		rc = fold_resource_deleted(f, ev->resource) == HF_OK ? HF_OK : oom(err);
	else if (strcmp(t, "hold.granted") == 0 && ev->hold_id)
		rc = fold_hold_granted(f, ev, data, err);
	else if (strncmp(t, "hold.", 5) == 0 && ev->hold_id)
		rc = fold_hold_change(f, ev, data, err);
	else
		f->unknown++;
	json_decref(data);
	return rc;
}

int relay_fold_read(hf_store *st, struct relay_fold *f, size_t max_events, hf_error *err)
{
	size_t done = 0;
	for (;;) {
		hf_request rq;
		hf_request_init(&rq, HF_OP_READ_EVENTS);
		rq.after = f->seq;
		rq.limit = max_events && max_events - done < HF_LIST_MAX ? max_events - done : HF_LIST_MAX;
		hf_reply *rp = NULL;
		int rc = hf_call(st, &rq, &rp);
		if (rc != HF_OK) {
			if (err)
				*err = rp->error;
			hf_reply_free(rp);
			return rc;
		}
		size_t n = rp->n_events;
		for (size_t i = 0; rc == HF_OK && i < n; i++)
			rc = relay_fold_event(f, &rp->events[i], err);
		hf_reply_free(rp);
		done += n;
		if (rc != HF_OK || n == 0 || (max_events && done >= max_events))
			return rc;
	}
}

/* ---- The live state, in the fold's form. -------------------------------------------- */

static json_t *live_resource(const hf_resource *r)
{
	json_t *meta = r->meta ? json_loads(r->meta, 0, NULL) : json_null();
	return json_pack("{s:I, s:o, s:I, s:b, s:I, s:I}", "capacity", (json_int_t)r->capacity,
	                 "meta", meta, "version", (json_int_t)r->version, "declared", r->declared,
	                 "held", (json_int_t)r->held, "holds", (json_int_t)r->holds);
}

static json_t *live_hold(const hf_hold *h)
{
	json_t *parts = json_array();
	for (size_t i = 0; parts && i < h->n_parts; i++) {
		json_t *p = json_pack("{s:s, s:I, s:I}", "resource", h->parts[i].resource, "units",
		                      (json_int_t)h->parts[i].units, "fence",
		                      (json_int_t)h->parts[i].fence);
		if (json_array_append_new(parts, p) != 0) {
			json_decref(parts);
			return NULL;
		}
	}
	return json_pack("{s:s, s:s, s:s, s:I, s:o}", "owner", h->owner, "state",
	                 hf_hold_state_name(h->state), "mode", hf_mode_name(h->mode),
	                 "expires_at_ms", (json_int_t)h->expires_at_ms, "parts", parts);
}

/* Pages through one list op (resources, or holds in one state) into `into`. */
static int live_list(hf_store *st, hf_op op, int state, json_t *into, hf_error *err)
{
	char cursor[HF_NAME_MAX + 1] = "";
	for (;;) {
		hf_request rq;
		hf_request_init(&rq, op);
		rq.state = state;
		rq.limit = HF_LIST_MAX;
		rq.cursor = cursor[0] ? cursor : NULL;
		hf_reply *rp = NULL;
		int rc = hf_call(st, &rq, &rp);
		if (rc != HF_OK) {
			if (err)
				*err = rp->error;
			hf_reply_free(rp);
			return rc;
		}
		size_t n = op == HF_OP_LIST_RESOURCES ? rp->n_resources : rp->n_holds;
		for (size_t i = 0; rc == HF_OK && i < n; i++) {
			const char *key = op == HF_OP_LIST_RESOURCES ? rp->resources[i].name : rp->holds[i].id;
			json_t *v = op == HF_OP_LIST_RESOURCES ? live_resource(&rp->resources[i])
			                                       : live_hold(&rp->holds[i]);
			if (!v || json_object_set_new(into, key, v) != 0)
				rc = oom(err);
			snprintf(cursor, sizeof(cursor), "%s", key);
		}
		bool more = rp->more && n > 0;
		hf_reply_free(rp);
		if (rc != HF_OK || !more)
			return rc;
	}
}

int relay_live_state(hf_store *st, json_t **resources, json_t **holds, hf_error *err)
{
	*resources = json_object();
	*holds = json_object();
	int rc = *resources && *holds ? HF_OK : oom(err);
	if (rc == HF_OK)
		rc = live_list(st, HF_OP_LIST_RESOURCES, -1, *resources, err);
	if (rc == HF_OK)
		rc = live_list(st, HF_OP_LIST_HOLDS, HF_HOLD_TENTATIVE, *holds, err);
	if (rc == HF_OK)
		rc = live_list(st, HF_OP_LIST_HOLDS, HF_HOLD_CONFIRMED, *holds, err);
	if (rc != HF_OK) {
		json_decref(*resources);
		json_decref(*holds);
		*resources = *holds = NULL;
	}
	return rc;
}

/* ---- Comparing. ------------------------------------------------------------------- */

static void print_diff(FILE *out, const char *what, const char *key, const json_t *folded,
                       const json_t *live)
{
	if (!out)
		return;
	char *a = folded ? json_dumps(folded, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
	char *b = live ? json_dumps(live, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
	fprintf(out, "%s \"%s\": events %s, live %s\n", what, key, a ? a : "none", b ? b : "none");
	free(a);
	free(b);
}

/* Implicit resources: their capacity is in no event (hold.granted names units, not the
 * capacity the claim gave), so it is taken as the live one; and a live implicit resource
 * with no hold exists only for its waiters, which no event records. */
static size_t diff_resources(const json_t *folded, json_t *live, FILE *out)
{
	size_t n = 0;
	const char *key;
	json_t *v;
	json_object_foreach(live, key, v) {
		json_t *f = json_object_get(folded, key);
		bool implicit = !json_is_true(json_object_get(v, "declared"));
		if (!f && implicit && int_of(v, "holds") == 0)
			continue;
		json_t *fc = f ? json_deep_copy(f) : NULL;
		if (fc && json_is_null(json_object_get(fc, "capacity")))
			json_object_set(fc, "capacity", json_object_get(v, "capacity"));
		if (!fc || !json_equal(fc, v)) {
			print_diff(out, "resource", key, fc, v);
			n++;
		}
		json_decref(fc);
	}
	json_object_foreach((json_t *)folded, key, v) {
		if (!json_object_get(live, key)) {
			print_diff(out, "resource", key, v, NULL);
			n++;
		}
	}
	return n;
}

static size_t diff_holds(const json_t *folded, const json_t *live, FILE *out)
{
	size_t n = 0;
	const char *key;
	json_t *v;
	json_object_foreach((json_t *)live, key, v) {
		json_t *f = json_object_get(folded, key);
		if (!f || !json_equal(f, v)) {
			print_diff(out, "hold", key, f, v);
			n++;
		}
	}
	json_object_foreach((json_t *)folded, key, v) {
		if (!json_object_get(live, key)) {
			print_diff(out, "hold", key, v, NULL);
			n++;
		}
	}
	return n;
}

size_t relay_fold_diff(const struct relay_fold *f, json_t *live_resources,
                       const json_t *live_holds, FILE *out)
{
	return diff_resources(f->resources, live_resources, out) +
	       diff_holds(f->holds, live_holds, out);
}

/* Reads the events to the end, then the live state, then the events again: the two are
 * compared only when no event came in between (a quiet moment), so a busy store is retried
 * rather than reported different. */
int relay_replay_check(hf_store *st, struct relay_fold *f, size_t *n_diffs, FILE *out,
                       hf_error *err)
{
	enum { ATTEMPTS = 50 };
	for (int attempt = 0; attempt < ATTEMPTS; attempt++) {
		int rc = relay_fold_read(st, f, 0, err);
		if (rc != HF_OK)
			return rc;
		uint64_t before = f->seq;
		json_t *res, *holds;
		if ((rc = relay_live_state(st, &res, &holds, err)) == HF_OK &&
		    (rc = relay_fold_read(st, f, 0, err)) == HF_OK && f->seq == before)
			*n_diffs = relay_fold_diff(f, res, holds, out);
		json_decref(res);
		json_decref(holds);
		if (rc != HF_OK || f->seq == before)
			return rc;
		relay_sleep_ms(20 * (attempt + 1), NULL);
	}
	relay_err(err, HF_EUNAVAILABLE, "the event log kept moving while the live state was read "
	                                "(%d attempts): no quiet moment to compare",
	          ATTEMPTS);
	return HF_EUNAVAILABLE;
}
