/*
 * fuzz_codec.c — fuzz target: the JSON wire form (src/core/codec.c). The input is parsed as
 * JSON and handed to every decoder: the body of POST /v1/holds (hf__acquire_from_json), and
 * the resource, hold, event and error replies. Properties: no crash, leak or UB; whatever an
 * acquire decoder accepts passes request validation (or fails only on units > capacity) and
 * survives encode + decode unchanged (same fingerprint); decoded resources, holds and events
 * survive encode + decode unchanged. The raw input also goes through the name and metadata
 * validators, and holdfastd's body reader (hf__json_loadb) must agree with json_loadb.
 */
#include <string.h>

#include <jansson.h>

#include "core/codec.h"
#include "core/core.h"
#include "fuzz.h"

static void fuzz_acquire(const json_t *j)
{
	hf_acquire_req a;
	hf_claim claims[HF_CLAIMS_MAX];
	hf_error err;
	if (hf__acquire_from_json(j, &a, claims, &err) != HF_OK) {
		FUZZ_CHECK(err.code < 0 && err.message[0],
		           "acquire decode failed without a message");
		return;
	}
	hf_request req;
	hf_request_init(&req, HF_OP_ACQUIRE);
	req.acquire = a;
	int rc = hf__check_request(&req, &err);
	FUZZ_CHECK(rc == HF_OK || rc == HF_ECAPACITY, "a decoded acquire fails validation: %s (%s)",
	           hf_err_name(rc), err.message);
	char *fp = hf__acquire_fingerprint(&a);
	json_t *back = hf__acquire_to_json(&a);
	FUZZ_CHECK(fp && back, "out of memory");
	hf_acquire_req b;
	hf_claim claims2[HF_CLAIMS_MAX];
	rc = hf__acquire_from_json(back, &b, claims2, &err);
	FUZZ_CHECK(rc == HF_OK, "an encoded acquire does not decode: %s", err.message);
	char *fp2 = hf__acquire_fingerprint(&b);
	FUZZ_CHECK(fp2 && strcmp(fp, fp2) == 0, "acquire round trip changed it: %s vs %s", fp,
	           fp2 ? fp2 : "(null)");
	/* A copy for the engine: what hf_submit does with a caller's request. */
	hf_request copy;
	void *space = malloc(hf__request_extra(&req) + 1);
	FUZZ_CHECK(space, "out of memory");
	hf__request_pack(&copy, &req, space);
	char *fp3 = hf__acquire_fingerprint(&copy.acquire);
	FUZZ_CHECK(fp3 && strcmp(fp, fp3) == 0, "request copy changed it: %s vs %s", fp,
	           fp3 ? fp3 : "(null)");
	free(fp3);
	free(space);
	free(fp);
	free(fp2);
	json_decref(back);
}

static bool same_str(const char *a, const char *b)
{
	return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

/* Two object texts (or NULLs) that denote the same JSON value. */
static bool same_json_text(const char *a, const char *b)
{
	if (!a || !b)
		return !a && !b;
	json_t *x = json_loads(a, JSON_DECODE_ANY, NULL), *y = json_loads(b, JSON_DECODE_ANY, NULL);
	bool same = x && y && json_equal(x, y);
	json_decref(x);
	json_decref(y);
	return same;
}

static void fuzz_resource(const json_t *j)
{
	hf_resource r, r2;
	hf_error err;
	if (hf__resource_from_json(j, &r, &err) != HF_OK)
		return;
	json_t *back = hf__resource_to_json(&r);
	FUZZ_CHECK(back, "out of memory");
	int rc = hf__resource_from_json(back, &r2, &err);
	FUZZ_CHECK(rc == HF_OK, "an encoded resource does not decode: %s", err.message);
	FUZZ_CHECK(same_str(r.name, r2.name) && r.capacity == r2.capacity &&
	               r.version == r2.version && r.declared == r2.declared && r.held == r2.held &&
	               r.holds == r2.holds && r.waiters == r2.waiters &&
	               same_json_text(r.meta, r2.meta),
	           "resource round trip changed it");
	char *text = hf_resource_json(&r);
	FUZZ_CHECK(text, "out of memory");
	free(text);
	hf__resource_clear(&r);
	hf__resource_clear(&r2);
	json_decref(back);
}

static void fuzz_hold(const json_t *j)
{
	hf_hold h, h2;
	hf_error err;
	if (hf__hold_from_json(j, &h, &err) != HF_OK)
		return;
	json_t *back = hf__hold_to_json(&h);
	FUZZ_CHECK(back, "out of memory");
	int rc = hf__hold_from_json(back, &h2, &err);
	FUZZ_CHECK(rc == HF_OK, "an encoded hold does not decode: %s", err.message);
	bool same = strcmp(h.id, h2.id) == 0 && strcmp(h.token, h2.token) == 0 &&
	            same_str(h.owner, h2.owner) && h.state == h2.state && h.mode == h2.mode &&
	            h.created_at_ms == h2.created_at_ms && h.expires_at_ms == h2.expires_at_ms &&
	            h.ended_at_ms == h2.ended_at_ms && h.replayed == h2.replayed &&
	            h.n_parts == h2.n_parts;
	for (size_t i = 0; same && i < h.n_parts; i++)
		same = same_str(h.parts[i].resource, h2.parts[i].resource) &&
		       h.parts[i].units == h2.parts[i].units &&
		       h.parts[i].fence == h2.parts[i].fence;
	FUZZ_CHECK(same, "hold round trip changed hold '%s'", h.id);
	hf_hold *dup = hf_hold_dup(&h);
	FUZZ_CHECK(dup, "out of memory");
	hf_hold_free(dup);
	char *text = hf_hold_json(&h);
	FUZZ_CHECK(text, "out of memory");
	free(text);
	/* The data of each hold event is built from a hold like this one. */
	static const char *const types[] = {"hold.granted", "hold.extended", "hold.confirmed",
	                                    "hold.released", "hold.expired"};
	for (size_t t = 0; t < 5; t++)
		json_decref(hf__event_hold_data(types[t], &h));
	hf__hold_clear(&h);
	hf__hold_clear(&h2);
	json_decref(back);
}

static void fuzz_event(const json_t *j)
{
	hf_event e, e2;
	hf_error err;
	if (hf__event_from_json(j, &e, &err) != HF_OK)
		return;
	json_t *back = hf__event_to_json(&e);
	FUZZ_CHECK(back, "out of memory");
	int rc = hf__event_from_json(back, &e2, &err);
	FUZZ_CHECK(rc == HF_OK, "an encoded event does not decode: %s", err.message);
	FUZZ_CHECK(e.seq == e2.seq && e.at_ms == e2.at_ms && same_str(e.type, e2.type) &&
	               same_str(e.resource, e2.resource) && same_str(e.hold_id, e2.hold_id) &&
	               same_json_text(e.data ? e.data : "{}", e2.data), /* no data: written {} */
	           "event round trip changed event %llu", (unsigned long long)e.seq);
	FUZZ_CHECK(e.revision == e2.revision && e.n_revisions == e2.n_revisions,
	           "event round trip changed the revisions of event %llu", (unsigned long long)e.seq);
	for (size_t i = 0; i < e.n_revisions; i++)
		FUZZ_CHECK(same_str(e.revisions[i].resource, e2.revisions[i].resource) &&
		               e.revisions[i].revision == e2.revisions[i].revision,
		           "event round trip changed revision %zu of event %llu", i,
		           (unsigned long long)e.seq);
	hf_event copy;
	FUZZ_CHECK(hf__event_copy(&copy, &e) == HF_OK, "out of memory");
	hf__event_clear(&copy);
	hf__event_clear(&e);
	hf__event_clear(&e2);
	json_decref(back);
}

/* holdfastd's body reader (hf__json_loadb) and jansson's json_loadb agree: the same tree,
 * keys in the same order, or the same error. */
static void fuzz_body_parser(const char *data, size_t size)
{
	json_error_t e1, e2;
	json_t *a = hf__json_loadb(data, size, &e1);
	json_t *b = json_loadb(data, size, JSON_REJECT_DUPLICATES, &e2);
	FUZZ_CHECK(!a == !b, "body reader %s where jansson %s", a ? "accepts" : "refuses",
	           b ? "accepts" : "refuses");
	if (a) {
		char *ta = json_dumps(a, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENCODE_ANY);
		char *tb = json_dumps(b, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENCODE_ANY);
		FUZZ_CHECK(ta && tb && strcmp(ta, tb) == 0 && json_equal(a, b),
		           "body reader read %s, jansson %s", ta ? ta : "?", tb ? tb : "?");
		free(ta);
		free(tb);
	} else {
		FUZZ_CHECK(strcmp(e1.text, e2.text) == 0, "body reader error '%s', jansson '%s'", e1.text,
		           e2.text);
	}
	json_decref(a);
	json_decref(b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *text = malloc(size + 1);
	if (!text)
		return 0;
	memcpy(text, data, size);
	text[size] = '\0';
	hf_error err;
	if (strlen(text) == size) { /* C strings: what names and metadata arrive as */
		(void)hf__check_name("name", text, HF_NAME_MAX, &err);
		(void)hf__check_meta(text, &err);
		(void)hf__check_idempotency_key(text, &err);
	}
	fuzz_body_parser((const char *)data, size);
	json_t *j = json_loadb((const char *)data, size, JSON_DECODE_ANY, NULL);
	if (j) {
		fuzz_acquire(j);
		fuzz_resource(j);
		fuzz_hold(j);
		fuzz_event(j);
		hf_error e;
		(void)hf__error_from_json(j, &e);
		/* Replies arrive wrapped: {"hold":{...}}, {"resources":[...]}, {"events":[...]}. */
		const char *key;
		json_t *v;
		json_object_foreach(j, key, v)
		{
			fuzz_resource(v);
			fuzz_hold(v);
			fuzz_event(v);
			size_t i;
			json_t *x;
			json_array_foreach(v, i, x)
			{
				fuzz_resource(x);
				fuzz_hold(x);
				fuzz_event(x);
			}
		}
		json_decref(j);
	}
	free(text);
	return 0;
}
