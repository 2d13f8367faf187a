/*
 * row_test.c — the embedded store's journal rows (src/engine/embedded/row.c): resources, holds
 * and idempotency records go to their binary rows and back with every field; the JSON rows of
 * schema 2 still decode; a row cut short, damaged byte by byte or padded is an error, never a
 * crash (run it under ASan).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "core/core.h"
#include "engine/embedded/embedded.h"

static const char *const names[] = {
    "lock:a", "sem:b \"q\" \\ /", "r\xc3\xa9s \xe2\x98\x83 \xf0\x9f\x94\x92", "x",
};

/* A hold with n parts (up to HF_CLAIMS_MAX); the parts' names live in `bufs`. */
static void fill_hold(hf_hold *h, hf_hold_part *parts, char (*bufs)[32], size_t n,
                      const char *owner)
{
	memset(h, 0, sizeof(*h));
	memcpy(h->id, "0123456789abcdef0123456789abcdef", HF_ID_LEN);
	memcpy(h->token, "fedcba9876543210ffffffff00000000", HF_TOKEN_LEN);
	h->owner = (char *)owner;
	h->state = HF_HOLD_EXPIRED;
	h->mode = HF_MODE_EXCLUSIVE;
	h->created_at_ms = 1795997189532;
	h->expires_at_ms = HF__JOURNAL_TIME_MAX;
	h->ended_at_ms = 0;
	h->n_parts = n;
	h->parts = parts;
	for (size_t i = 0; i < n; i++) {
		snprintf(bufs[i], 32, "%s/%zu", names[i % 4], i);
		parts[i] = (hf_hold_part){.resource = bufs[i],
		                          .units = i == 0 ? HF_CAPACITY_MAX : (int64_t)i,
		                          .fence = i == 1 ? HF__JOURNAL_FENCE_MAX : (int64_t)(i + 1)};
	}
}

static void assert_holds_equal(const hf_hold *a, const hf_hold *b)
{
	assert_string_equal(a->id, b->id);
	assert_string_equal(a->token, b->token);
	assert_string_equal(a->owner, b->owner);
	assert_int_equal(a->state, b->state);
	assert_int_equal(a->mode, b->mode);
	assert_int_equal(a->created_at_ms, b->created_at_ms);
	assert_int_equal(a->expires_at_ms, b->expires_at_ms);
	assert_int_equal(a->ended_at_ms, b->ended_at_ms);
	assert_int_equal(a->n_parts, b->n_parts);
	for (size_t i = 0; i < a->n_parts; i++) {
		assert_string_equal(a->parts[i].resource, b->parts[i].resource);
		assert_int_equal(a->parts[i].units, b->parts[i].units);
		assert_int_equal(a->parts[i].fence, b->parts[i].fence);
	}
}

static void test_hold_round_trip(void **state)
{
	(void)state;
	static const size_t counts[] = {1, 2, 4, HF_CLAIMS_MAX};
	char owner[HF_OWNER_MAX + 1];
	memset(owner, 'o', HF_OWNER_MAX);
	owner[HF_OWNER_MAX] = '\0';
	const char *const owners[] = {"alice", "\xc3\xa9t\xc3\xa9 \xe2\x98\x83", owner};
	for (size_t c = 0; c < 4; c++)
		for (size_t o = 0; o < 3; o++)
			for (int st = HF_HOLD_TENTATIVE; st <= HF_HOLD_EXPIRED; st++) {
				hf_hold_part parts[HF_CLAIMS_MAX];
				char bufs[HF_CLAIMS_MAX][32];
				hf_hold h, got;
				fill_hold(&h, parts, bufs, counts[c], owners[o]);
				h.state = (hf_hold_state)st;
				h.mode = (hf_mode)(st % 3);
				h.ended_at_ms = st * 1000;
				/* each part's capacity: 0 (its resource has a row) or an implicit one's */
				int64_t caps[HF_CLAIMS_MAX], got_caps[HF_CLAIMS_MAX];
				for (size_t i = 0; i < counts[c]; i++)
					caps[i] = (int64_t)(i % 3 == 0 ? 0 : i % 3 == 1 ? HF_CAPACITY_MAX : i);
				size_t len = 0;
				unsigned char *row = hf__row_hold(&h, caps, &len);
				assert_non_null(row);
				hf_error err;
				assert_int_equal(hf__row_hold_decode(row, len, &got, got_caps, &err), HF_OK);
				assert_holds_equal(&got, &h);
				assert_memory_equal(got_caps, caps, counts[c] * sizeof(*caps));
				hf__hold_clear(&got);
				free(row);
			}
}

static void test_resource_round_trip(void **state)
{
	(void)state;
	const char *const metas[] = {NULL, "{}", "{\"a\":[1,2,{\"b\":\"\xe2\x98\x83\"}]}"};
	for (size_t m = 0; m < 3; m++)
		for (size_t n = 0; n < 4; n++) {
			hf_resource r = {.name = (char *)names[n],
			                 .capacity = n == 0 ? HF_CAPACITY_MAX : (int64_t)n + 1,
			                 .meta = (char *)metas[m],
			                 .version = n == 1 ? INT64_MAX : (int64_t)n,
			                 .declared = n % 2 == 0},
			            got;
			size_t len = 0;
			unsigned char *row = hf__row_resource(&r, &len);
			assert_non_null(row);
			assert_int_equal(hf__row_resource_decode(row, len, &got, NULL), HF_OK);
			assert_string_equal(got.name, r.name);
			assert_int_equal(got.capacity, r.capacity);
			assert_int_equal(got.version, r.version);
			assert_int_equal(got.declared, r.declared);
			if (metas[m])
				assert_string_equal(got.meta, metas[m]);
			else
				assert_null(got.meta);
			hf__resource_clear(&got);
			free(row);
		}
}

static unsigned char *idem_row(size_t n_parts, size_t *len)
{
	hf_hold_part parts[HF_CLAIMS_MAX];
	char bufs[HF_CLAIMS_MAX][32];
	struct hf__row_idem d = {.key = "order-42:retry~!", .fingerprint = "{\"owner\":\"a\"}",
	                         .created_at = 1795997189532};
	fill_hold(&d.hold, parts, bufs, n_parts, "bob");
	unsigned char *row = hf__row_idem(&d, len);
	assert_non_null(row);
	struct hf__row_idem got;
	assert_int_equal(hf__row_idem_decode(row, *len, &got, NULL), HF_OK);
	assert_string_equal(got.key, d.key);
	assert_string_equal(got.fingerprint, d.fingerprint);
	assert_int_equal(got.created_at, d.created_at);
	assert_holds_equal(&got.hold, &d.hold);
	hf__row_idem_clear(&got);
	return row;
}

static void test_idem_round_trip(void **state)
{
	(void)state;
	size_t len;
	free(idem_row(1, &len));
	free(idem_row(HF_CLAIMS_MAX, &len));
}

/* Decodes a row of the given table: HF_OK or HF_ECORRUPT (with a message), nothing else. */
static int decode(char table, const unsigned char *row, size_t len)
{
	hf_error err = {0};
	hf_resource r;
	hf_hold h;
	struct hf__row_idem d;
	int rc = table == 'r'   ? hf__row_resource_decode(row, len, &r, &err)
	         : table == 'h' ? hf__row_hold_decode(row, len, &h, NULL, &err)
	                        : hf__row_idem_decode(row, len, &d, &err);
	if (rc == HF_OK && table == 'r')
		hf__resource_clear(&r);
	if (rc == HF_OK && table == 'h')
		hf__hold_clear(&h);
	if (rc == HF_OK && table == 'i')
		hf__row_idem_clear(&d);
	if (rc != HF_OK) {
		assert_int_equal(rc, HF_ECORRUPT);
		assert_non_null(strstr(err.message, "damaged"));
	}
	return rc;
}

/* Every prefix of a row, and the row with a byte more, is refused; every byte changed to a
 * few other values decodes or is refused (ASan watches the reads). Each piece is copied
 * into a buffer of its own size, so a read past the end is a sanitizer error. */
static void damage(char table, const unsigned char *row, size_t len)
{
	for (size_t n = 0; n < len; n++) {
		unsigned char *cut = malloc(n ? n : 1);
		memcpy(cut, row, n);
		assert_int_equal(decode(table, cut, n), HF_ECORRUPT);
		free(cut);
	}
	unsigned char *more = malloc(len + 1);
	memcpy(more, row, len);
	more[len] = 0;
	assert_int_equal(decode(table, more, len + 1), HF_ECORRUPT);
	static const unsigned char values[] = {0x00, 0x01, 0x02, 0x03, 0x7f, 0x80, 0xff, '{'};
	for (size_t i = 0; i < len; i++)
		for (size_t v = 0; v < sizeof(values); v++) {
			memcpy(more, row, len);
			more[i] = values[v];
			(void)decode(table, more, len);
			more[i] ^= 0x40;
			(void)decode(table, more, len);
		}
	free(more);
}

static void test_damaged_rows(void **state)
{
	(void)state;
	hf_hold_part parts[HF_CLAIMS_MAX];
	char bufs[HF_CLAIMS_MAX][32];
	hf_hold h;
	fill_hold(&h, parts, bufs, 3, "carol");
	const int64_t caps[3] = {0, 1, 70000};
	size_t len;
	unsigned char *row = hf__row_hold(&h, caps, &len);
	damage('h', row, len);
	/* a hold row is no resource or idempotency row */
	assert_int_equal(decode('r', row, len), HF_ECORRUPT);
	assert_int_equal(decode('i', row, len), HF_ECORRUPT);
	free(row);
	hf_resource r = {.name = "db:primary", .capacity = 3, .meta = "{\"k\":1}", .version = 9};
	row = hf__row_resource(&r, &len);
	damage('r', row, len);
	free(row);
	row = idem_row(2, &len);
	damage('i', row, len);
	free(row);
}

/* Hand-made rows: lengths beyond the row, a NUL inside a name, a varint of 11 bytes. */
static void test_hostile_rows(void **state)
{
	(void)state;
	/* resource: flags 0, capacity 1 (zigzag 2), version 0, name of length 100 in 3 bytes */
	const unsigned char too_long[] = {0x01, 0x00, 0x02, 0x00, 100, 'a', 'b', 'c'};
	assert_int_equal(decode('r', too_long, sizeof(too_long)), HF_ECORRUPT);
	const unsigned char nul[] = {0x01, 0x00, 0x02, 0x00, 3, 'a', 0, 'c'};
	assert_int_equal(decode('r', nul, sizeof(nul)), HF_ECORRUPT);
	const unsigned char ctl[] = {0x01, 0x00, 0x02, 0x00, 3, 'a', '\n', 'c'};
	assert_int_equal(decode('r', ctl, sizeof(ctl)), HF_ECORRUPT);
	const unsigned char ok[] = {0x01, 0x00, 0x02, 0x00, 3, 'a', 'b', 'c'};
	assert_int_equal(decode('r', ok, sizeof(ok)), HF_OK);
	unsigned char huge[16] = {0x01, 0x00};
	memset(huge + 2, 0xff, 11);
	assert_int_equal(decode('r', huge, 2 + 11), HF_ECORRUPT);
	const unsigned char capacity0[] = {0x01, 0x00, 0x00, 0x00, 1, 'a'};
	assert_int_equal(decode('r', capacity0, sizeof(capacity0)), HF_ECORRUPT);
	const unsigned char bad_meta[] = {0x01, 0x02, 0x02, 0x00, 1, 'a', 2, '[', ']'};
	assert_int_equal(decode('r', bad_meta, sizeof(bad_meta)), HF_ECORRUPT);
	const unsigned char flags[] = {0x01, 0x04, 0x02, 0x00, 1, 'a'};
	assert_int_equal(decode('r', flags, sizeof(flags)), HF_ECORRUPT);
	/* the message names what is wrong and where */
	hf_error err;
	hf_resource r;
	assert_int_equal(hf__row_resource_decode(too_long, sizeof(too_long), &r, &err),
	                 HF_ECORRUPT);
	assert_non_null(strstr(err.message, "name at byte 4 of 8"));
	assert_int_equal(hf__row_resource_decode(NULL, 0, &r, &err), HF_ECORRUPT);
}

/* A resource row's meta is checked as JSON without a parser (no allocation to fail): it
 * admits what jansson parses as an object, and nothing else. */
static void test_meta_check(void **state)
{
	(void)state;
	static const char *const texts[] = {
	    "{}", " { } ", "{\"a\":1}", "{\"a\":[1,-2.5e+3,0,true,false,null,\"x\"]}",
	    "{\"\xc3\xa9\":\"\xf0\x9f\x94\x92 \\u00e9 \\ud83d\\udd12 \\n\\\" \\/\"}",
	    "{\"a\":{\"b\":{\"c\":[[[]]]}}}", "[]", "1", "\"s\"", "null", "", "{", "}",
	    "{\"a\"}", "{\"a\":}", "{\"a\":1,}", "{,}", "{\"a\":01}", "{\"a\":1.}",
	    "{\"a\":.5}", "{\"a\":-}", "{\"a\":1e}", "{\"a\":tru}", "{\"a\":\"\\u0000\"}",
	    "{\"a\":\"\\ud800\"}", "{\"a\":\"\\udc00\"}", "{\"a\":\"\\x\"}",
	    "{\"a\":\"\x01\"}", "{\"a\":\"\xc3\"}", "{\"a\":\"\xed\xa0\x80\"}",
	    "{\"a\":\"\xc0\xaf\"}", "{\"a\":1} {}", "{\"a\":1}x", "{'a':1}", "{\"a\":[1 2]}",
	    "{\"a\":\"unterminated}",
	};
	for (size_t i = 0; i < sizeof(texts) / sizeof(*texts); i++) {
		json_t *j = json_loads(texts[i], 0, NULL);
		bool want = json_is_object(j);
		json_decref(j);
		hf_resource r = {.name = "m", .capacity = 1, .meta = (char *)texts[i]}, got;
		size_t len;
		unsigned char *row = hf__row_resource(&r, &len);
		int rc = hf__row_resource_decode(row, len, &got, NULL);
		if ((rc == HF_OK) != want)
			fail_msg("meta '%s': decoded %s, jansson says %s", texts[i], hf_err_name(rc),
			         want ? "an object" : "not one");
		if (rc == HF_OK)
			hf__resource_clear(&got);
		free(row);
	}
	/* nesting: jansson's limit, 2048 */
	char deep[2 * 2100 + 8];
	for (size_t depth = 2047; depth <= 2049; depth++) {
		size_t n = 0;
		deep[n++] = '{';
		deep[n++] = '"', deep[n++] = 'a', deep[n++] = '"', deep[n++] = ':';
		for (size_t k = 1; k < depth; k++)
			deep[n++] = '[';
		for (size_t k = 1; k < depth; k++)
			deep[n++] = ']';
		deep[n++] = '}';
		deep[n] = '\0';
		json_t *j = json_loads(deep, 0, NULL);
		hf_resource r = {.name = "m", .capacity = 1, .meta = deep}, got;
		size_t len;
		unsigned char *row = hf__row_resource(&r, &len);
		int rc = hf__row_resource_decode(row, len, &got, NULL);
		assert_int_equal(rc == HF_OK, j != NULL);
		if (rc == HF_OK)
			hf__resource_clear(&got);
		json_decref(j);
		free(row);
	}
}

/* Schema 2's JSON rows, as that schema's writers made them, decode to the same items. */
static void test_json_rows(void **state)
{
	(void)state;
	const char hold[] =
	    "{\"created_at\":5,\"ended_at\":7,\"expires_at\":6,\"id\":"
	    "\"0123456789abcdef0123456789abcdef\",\"mode\":1,\"owner\":\"\\u00e9\",\"parts\":"
	    "[{\"fence\":3,\"name\":\"a\",\"units\":1},{\"fence\":4,\"name\":\"b\",\"units\":2}],"
	    "\"state\":2,\"token\":\"fedcba9876543210fedcba9876543210\"}";
	hf_hold h;
	assert_int_equal(hf__row_hold_decode(hold, strlen(hold), &h, NULL, NULL), HF_OK);
	assert_string_equal(h.owner, "\xc3\xa9");
	assert_int_equal(h.n_parts, 2);
	assert_string_equal(h.parts[1].resource, "b");
	assert_int_equal(h.parts[1].units, 2);
	assert_int_equal(h.parts[1].fence, 4);
	assert_int_equal(h.state, HF_HOLD_RELEASED);
	assert_int_equal(h.mode, HF_MODE_SHARED);
	assert_int_equal(h.ended_at_ms, 7);
	/* and once written in the binary form, it reads back the same */
	size_t len;
	unsigned char *row = hf__row_hold(&h, NULL, &len);
	hf_hold again;
	assert_int_equal(hf__row_hold_decode(row, len, &again, NULL, NULL), HF_OK);
	assert_holds_equal(&again, &h);
	assert_true(len < strlen(hold) / 2);
	hf__hold_clear(&again);
	free(row);
	const char res[] = "{\"capacity\":2,\"declared\":true,\"meta\":{\"a\": 1},\"name\":\"n\","
	                   "\"version\":3}";
	hf_resource r;
	assert_int_equal(hf__row_resource_decode(res, strlen(res), &r, NULL), HF_OK);
	assert_string_equal(r.meta, "{\"a\":1}");
	assert_true(r.declared);
	hf__resource_clear(&r);
	char idem[1024];
	snprintf(idem, sizeof(idem),
	         "{\"created_at\":9,\"fingerprint\":\"f\",\"hold\":%s,\"key\":\"k\"}", hold);
	struct hf__row_idem d;
	assert_int_equal(hf__row_idem_decode(idem, strlen(idem), &d, NULL), HF_OK);
	assert_holds_equal(&d.hold, &h);
	assert_string_equal(d.key, "k");
	hf__row_idem_clear(&d);
	hf__hold_clear(&h);
	/* a JSON hold whose id is not lowercase hex is damage: the binary row keeps its bytes */
	char upper[sizeof(hold)];
	memcpy(upper, hold, sizeof(hold));
	char *id = strstr(upper, "abcdef");
	memcpy(id, "ABCDEF", 6);
	assert_int_equal(decode('h', (const unsigned char *)upper, strlen(upper)), HF_ECORRUPT);
	assert_int_equal(decode('h', (const unsigned char *)"{", 1), HF_ECORRUPT);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_hold_round_trip),  cmocka_unit_test(test_resource_round_trip),
	    cmocka_unit_test(test_idem_round_trip),  cmocka_unit_test(test_damaged_rows),
	    cmocka_unit_test(test_hostile_rows),     cmocka_unit_test(test_meta_check),
	    cmocka_unit_test(test_json_rows),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
