/*
 * fuzz_journal.c — fuzz target: the embedded engine's journal decoding (hf__state_load_* in
 * src/engine/embedded/state.c), which turns the rows of a store file back into state. A
 * damaged file must be refused with store_corrupt, never crash or corrupt memory.
 *
 * Input: lines "T BODY", T one of m (meta "key value"), r (resource row), h (hold row),
 * i (idempotency row), e (event: {"seq","at","type","resource","hold_id","data"}); R, H and I
 * are rows of those tables in hex (the binary rows of schema 3; r, h, i carry JSON rows of
 * schema 2 or anything else: both go through src/engine/embedded/row.c). They are
 * loaded in the journal's order (meta, resources, holds, idempotency, events; stable within
 * a table) until the first refusal, exactly as hf__journal_load does. A state that loaded is
 * then used as a store would use it: read (list resources, list holds, read events); an
 * acquire of one unit of each loaded resource, and of a new implicit one; an extend, confirm
 * and release of each loaded hold with the token of its row, and a replay of each loaded
 * idempotency key; then swept far into the future (every lease runs out, ended holds are
 * purged) and read again.
 */
#include <string.h>

#include <jansson.h>

#include "core/core.h"
#include "engine/embedded/embedded.h"
#include "fuzz.h"

static const char tables[] = "mrhie";

/* One input line: its table (lowercase) and its row. */
struct line {
	char table;
	char *row;
	size_t len;
};

static int hex_digit(char c)
{
	return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
	                                      : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* Decodes hex in place (stops at the first pair that is not hex); returns the bytes' count. */
static size_t unhex(char *s)
{
	size_t n = 0;
	for (; hex_digit(s[2 * n]) >= 0 && hex_digit(s[2 * n + 1]) >= 0; n++)
		s[n] = (char)(hex_digit(s[2 * n]) << 4 | hex_digit(s[2 * n + 1]));
	return n;
}

static void free_effects(struct hf__effects *fx)
{
	hf__jrec_free_list(fx->rec_head);
	for (struct hf__call *c = fx->done_head, *next; c; c = next) {
		next = c->next;
		hf_reply_free(c->reply);
		free(c);
	}
	memset(fx, 0, sizeof(*fx));
}

static void read_all(struct hf__state *st, int64_t now)
{
	static const hf_op ops[] = {HF_OP_LIST_RESOURCES, HF_OP_LIST_HOLDS, HF_OP_READ_EVENTS};
	for (size_t i = 0; i < 3; i++) {
		struct hf__call *call = calloc(1, sizeof(*call));
		if (!call || !(call->reply = calloc(1, sizeof(*call->reply)))) {
			free(call);
			return;
		}
		hf_request_init(&call->req, ops[i]);
		call->req.limit = HF_LIST_MAX;
		call->reply->op = ops[i];
		struct hf__effects fx = {0};
		hf__state_apply(st, call, now, &fx);
		FUZZ_CHECK(fx.done_head == call, "a read did not complete at once");
		free_effects(&fx);
	}
}

/* Applies one call to the state at `now` and frees what it produced. */
static void apply(struct hf__state *st, const hf_request *req, int64_t now)
{
	struct hf__call *call = calloc(1, sizeof(*call));
	if (!call || !(call->reply = calloc(1, sizeof(*call->reply)))) {
		free(call);
		return;
	}
	call->req = *req; /* borrowed strings: they outlive the call, which ends here */
	call->reply->op = req->op;
	call->submitted_at_ms = now;
	struct hf__effects fx = {0};
	hf__state_apply(st, call, now, &fx);
	FUZZ_CHECK(fx.done_head == call, "a NOWAIT call did not complete at once");
	free_effects(&fx);
}

static void acquire(struct hf__state *st, const char *name, int64_t capacity, const char *key,
                    int64_t now)
{
	hf_claim claim = {.name = name, .units = 1, .capacity = capacity};
	hf_request req;
	hf_request_init(&req, HF_OP_ACQUIRE);
	req.acquire = (hf_acquire_req){.owner = "fuzz",
	                               .claims = &claim,
	                               .n_claims = 1,
	                               .ttl_ms = 1000,
	                               .mode = HF_MODE_UNITS,
	                               .idempotency_key = key};
	if (hf__check_request(&req, NULL) == HF_OK) /* what hf_submit lets through */
		apply(st, &req, now);
}

/* Uses the loaded state: acquires on its resources, calls on its holds, its keys again. */
static void use(struct hf__state *st, const struct line *lines, size_t n, int64_t now)
{
	for (size_t i = 0; i < n; i++) {
		const struct line *l = &lines[i];
		hf_resource res;
		struct hf__row_idem idem;
		hf_hold h;
		if (l->table == 'r' && hf__row_resource_decode(l->row, l->len, &res, NULL) == HF_OK) {
			acquire(st, res.name, 0, NULL, now);
			hf__resource_clear(&res);
		}
		if (l->table == 'i' && hf__row_idem_decode(l->row, l->len, &idem, NULL) == HF_OK) {
			acquire(st, idem.hold.parts[0].resource, 0, idem.key, now);
			hf__row_idem_clear(&idem);
		}
		if (l->table != 'h' || hf__row_hold_decode(l->row, l->len, &h, NULL, NULL) != HF_OK)
			continue;
		static const hf_op ops[] = {HF_OP_EXTEND, HF_OP_CONFIRM, HF_OP_RELEASE,
		                            HF_OP_GET_HOLD};
		for (size_t k = 0; k < 4; k++) {
			hf_request req;
			hf_request_init(&req, ops[k]);
			req.hold_id = h.id;
			req.token = h.token;
			req.ttl_ms = 1000;
			if (hf__check_request(&req, NULL) ==
			    HF_OK) /* what hf_submit lets through */
				apply(st, &req, now);
		}
		hf__hold_clear(&h);
	}
	acquire(st, "fuzz-new", 1, NULL, now);
}

static int load_event(struct hf__state *st, const char *body, hf_error *err)
{
	json_t *j = json_loads(body, 0, NULL);
	if (!json_is_object(j)) {
		json_decref(j);
		return HF_ECORRUPT;
	}
	/* The journal's columns: seq and at are integers, type and data text (never NULL),
	 * resource and hold_id text or NULL. */
	hf_event ev = {.seq = (uint64_t)json_integer_value(json_object_get(j, "seq")),
	               .at_ms = json_integer_value(json_object_get(j, "at")),
	               .type = (char *)json_string_value(json_object_get(j, "type")),
	               .resource = (char *)json_string_value(json_object_get(j, "resource")),
	               .hold_id = (char *)json_string_value(json_object_get(j, "hold_id")),
	               .data = (char *)json_string_value(json_object_get(j, "data"))};
	if (!ev.type)
		ev.type = "";
	if (!ev.data)
		ev.data = "";
	int rc = hf__state_load_event(st, &ev, err);
	json_decref(j);
	return rc;
}

/* Line `no` (from 1) of the input; a hold's row number is its line's. */
static int load_line(struct hf__state *st, const struct line *l, int64_t no, hf_error *err)
{
	char *body = l->row;
	switch (l->table) {
	case 'm': {
		char *sp = strchr(body, ' ');
		if (!sp)
			return hf__state_load_meta(st, body, "", err);
		*sp = '\0';
		return hf__state_load_meta(st, body, sp + 1, err);
	}
	case 'r':
		return hf__state_load_resource(st, l->row, l->len, err);
	case 'h':
		return hf__state_load_hold(st, no, l->row, l->len, err);
	case 'i':
		return hf__state_load_idem(st, l->row, l->len, err);
	default:
		return load_event(st, body, err);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > 1 << 16)
		return 0;
	char *text = malloc(size + 1);
	if (!text)
		return 0;
	memcpy(text, data, size);
	text[size] = '\0';
	/* Split into lines (a NUL ends the input: SQLite text has none). */
	struct line lines[512];
	size_t n = 0;
	for (char *p = text; *p && n < 512;) {
		char *nl = strchr(p, '\n');
		if (nl)
			*nl = '\0';
		char t = p[0] >= 'A' && p[0] <= 'Z' ? (char)(p[0] - 'A' + 'a') : p[0];
		if (t && strchr(tables, t) && (p[1] == ' ' || p[1] == '\0')) {
			char *row = p[1] ? p + 2 : p + 1;
			bool hex = t != p[0] && strchr("rhi", t);
			lines[n++] = (struct line){t, row, hex ? unhex(row) : strlen(row)};
		}
		if (!nl)
			break;
		p = nl + 1;
	}
	hf_options opt;
	hf_options_init(&opt);
	struct hf__state *st = hf__state_new(&opt);
	FUZZ_CHECK(st, "out of memory");
	hf_error err;
	int rc = HF_OK;
	for (const char *t = tables; *t && rc == HF_OK; t++)
		for (size_t i = 0; i < n && rc == HF_OK; i++)
			if (lines[i].table == *t) {
				rc = load_line(st, &lines[i], (int64_t)i + 1, &err);
				FUZZ_CHECK(rc == HF_OK || rc == HF_ECORRUPT || rc == HF_ENOMEM,
				           "a load answered %s", hf_err_name(rc));
			}
	if (rc == HF_OK)
		hf__state_load_done(st);
	if (rc == HF_OK) {
		const int64_t now = 1700000000000LL;
		read_all(st, now);
		use(st, lines, n, now);
		(void)hf__state_next_due(st);
		struct hf__effects fx = {0};
		hf__state_sweep(st, now, &fx);
		free_effects(&fx);
		hf__state_sweep(st, INT64_MAX / 4, &fx);
		free_effects(&fx);
		read_all(st, INT64_MAX / 4);
		hf__state_fail_waits(st, HF_ECLOSED, INT64_MAX / 4, &fx);
		free_effects(&fx);
	}
	hf__state_free(st);
	free(text);
	return 0;
}
