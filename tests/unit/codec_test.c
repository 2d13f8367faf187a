/*
 * codec_test.c — the direct JSON writers of src/core/codec.c (hf__jw_*, hf__hold_text,
 * hf__event_hold_data_text) hold to the bytes jansson writes for the same values, whether
 * they write into the caller's buffer or their own; the request body reader reads what
 * jansson reads; an event's revisions go to JSON and back.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/codec.h"
#include "core/core.h"

static char *jansson(json_t *j, size_t flags)
{
	assert_non_null(j);
	char *s = json_dumps(j, flags);
	json_decref(j);
	assert_non_null(s);
	return s;
}

static const char *const owners[] = {
    "alice", "", "quote \" back \\ slash", "tab\tnl\ncr\rbs\bff\f", "ctl \x01\x1f end",
    "unicode é ☃ \xf0\x9f\x94\x92", "slash / and \x7f",
};

static void fill(hf_hold *h, hf_hold_part *parts, size_t n, const char *owner)
{
	static const char *const names[] = {"lock:a", "sem:b \"q\"", "r\xc3\xa9s", "x"};
	memset(h, 0, sizeof(*h));
	memcpy(h->id, "0123456789abcdef0123456789abcdef", HF_ID_LEN);
	memcpy(h->token, "fedcba9876543210fedcba9876543210", HF_TOKEN_LEN);
	h->owner = (char *)owner;
	h->state = HF_HOLD_TENTATIVE;
	h->mode = HF_MODE_EXCLUSIVE;
	h->created_at_ms = 1764430000123;
	h->expires_at_ms = 1764430030123;
	h->n_parts = n;
	h->parts = parts;
	for (size_t i = 0; i < n; i++)
		parts[i] = (hf_hold_part){.resource = (char *)names[i], .units = (int64_t)i + 1,
		                          .fence = INT64_C(1) << (10 * i)};
}

static void check_hold(const hf_hold *h)
{
	char *want = jansson(hf__hold_to_json(h), JSON_COMPACT | JSON_PRESERVE_ORDER);
	size_t len = 0;
	char *got = hf__hold_text(h, &len);
	assert_non_null(got);
	assert_string_equal(got, want);
	assert_int_equal(len, strlen(want));
	free(got);
	free(want);
	static const char *const types[] = {"hold.granted", "hold.extended", "hold.confirmed",
	                                    "hold.released", "hold.expired"};
	for (size_t t = 0; t < 5; t++) {
		want = jansson(hf__event_hold_data(types[t], h), JSON_COMPACT | JSON_SORT_KEYS);
		got = hf__event_hold_data_text(types[t], h);
		assert_non_null(got);
		assert_string_equal(got, want);
		free(got);
		free(want);
	}
}

static void test_hold_text(void **state)
{
	(void)state;
	hf_hold h;
	hf_hold_part parts[4];
	for (size_t o = 0; o < sizeof(owners) / sizeof(owners[0]); o++) {
		for (size_t n = 1; n <= 4; n++) {
			fill(&h, parts, n, owners[o]);
			check_hold(&h);
			/* No token (every answer but the acquire's), no times, replayed, ended. */
			h.token[0] = '\0';
			h.expires_at_ms = 0;
			check_hold(&h);
			h.replayed = true;
			h.state = HF_HOLD_RELEASED;
			h.mode = HF_MODE_UNITS;
			h.ended_at_ms = 1764430001000;
			check_hold(&h);
		}
	}
	/* One resource named twice: a JSON object keeps one key (left to jansson). */
	fill(&h, parts, 2, "bob");
	parts[1].resource = parts[0].resource;
	check_hold(&h);
}

static void test_ints(void **state)
{
	(void)state;
	static const int64_t v[] = {0, 1, -1, 9, 10, 99, 100, INT64_MAX, INT64_MIN, 1764430000123};
	for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		struct hf__jw w;
		hf__jw_init(&w);
		hf__jw_int(&w, v[i]);
		char *got = hf__jw_finish(&w, NULL);
		char *want = jansson(json_integer(v[i]), JSON_ENCODE_ANY);
		assert_string_equal(got, want);
		free(got);
		free(want);
	}
	struct hf__jw w;
	hf__jw_init(&w);
	size_t len = 1;
	char *empty = hf__jw_finish(&w, &len);
	assert_string_equal(empty, "");
	assert_int_equal(len, 0);
	free(empty);
}

/* hf__jw_str scans eight bytes at a time: each byte that needs an escape, at every place in
 * and around a word, among plain ASCII and multibyte UTF-8. */
static void test_strings(void **state)
{
	(void)state;
	static const char *const special[] = {"\"", "\\", "\n", "\x01", "\x1f", "\x7f", "\xc3\xa9"};
	for (size_t k = 0; k < sizeof(special) / sizeof(special[0]); k++) {
		for (size_t len = 0; len <= 40; len++) {
			for (size_t at = 0; at <= len; at++) {
				char s[64];
				memset(s, 'a' + (int)(len % 26), len);
				s[len] = '\0';
				size_t sl = strlen(special[k]);
				memmove(s + at + sl, s + at, len - at + 1);
				memcpy(s + at, special[k], sl);
				struct hf__jw w;
				char small[8]; /* grows out of the caller's buffer on the way */
				hf__jw_init_buf(&w, small, sizeof(small));
				hf__jw_lit(&w, "[");
				hf__jw_str(&w, s);
				hf__jw_lit(&w, "]");
				char *got = hf__jw_finish(&w, NULL);
				assert_non_null(got);
				json_t *arr = json_array();
				json_array_append_new(arr, json_string(s));
				char *want = jansson(arr, JSON_COMPACT);
				assert_string_equal(got, want);
				free(got);
				free(want);
			}
		}
	}
}

/* A writer on the caller's buffer stays there while the text fits, moves to the heap when
 * it does not, and hf__jw_release frees only what it allocated. */
static void test_borrowed_buffer(void **state)
{
	(void)state;
	char buf[16];
	struct hf__jw w;
	hf__jw_init_buf(&w, buf, sizeof(buf));
	hf__jw_lit(&w, "0123456789abcd"); /* 14 bytes and the NUL: still the caller's */
	assert_ptr_equal(w.buf, buf);
	assert_string_equal(w.buf, "0123456789abcd");
	hf__jw_lit(&w, "ef");
	assert_ptr_not_equal(w.buf, buf);
	assert_string_equal(w.buf, "0123456789abcdef");
	assert_int_equal(w.len, 16);
	hf__jw_release(&w);
	hf__jw_init_buf(&w, buf, sizeof(buf));
	hf__jw_int(&w, -42);
	assert_ptr_equal(w.buf, buf);
	size_t len = 0;
	char *text = hf__jw_finish(&w, &len); /* the caller's to free: copied out */
	assert_ptr_not_equal(text, buf);
	assert_string_equal(text, "-42");
	assert_int_equal(len, 3);
	free(text);
}

/* The body reader reads what jansson reads, to the same tree (keys in order) or error: the
 * subset it takes itself, and the edges where it hands over. */
static void test_body_reader(void **state)
{
	(void)state;
	static const char *const bodies[] = {
	    "{\"owner\":\"a\",\"ttl_ms\":30000,\"wait_ms\":0}",
	    " {\n\t\"a\" : [1, -2, {\"b\": null}], \"c\": true, \"d\": false ,\"e\":[]}\r\n",
	    "{}", " { } ", "{\"\":0}", "{\"a\":-0}", "{\"a\":{\"b\":{\"c\":{}}}}",
	    "{\"a\":123456789012345678}", "{\"a\":-123456789012345678}",
	    "{\"a\":1234567890123456789}", "{\"a\":99999999999999999999}",
	    "{\"a\":1,\"a\":2}", "{\"a\":01}", "{\"a\":-}", "{\"a\":-a}", "{\"a\":1.5}",
	    "{\"a\":1e3}", "{\"a\":1E3}", "{\"a\":\"\\u00e9\"}", "{\"a\":\"\xc3\xa9\"}",
	    "{\"a\":\"\xc3\"}", "{\"a\":\"x\ty\"}", "{\"a\":\"b\\\"c\"}", "{\"a\":\"\x7f\"}",
	    "{\"a\":1,}", "{,}", "{} x", "{}}", "[1,2]", "[]", "1", "\"a\"", "", " ",
	    "{\"a\":tru}", "{\"a\":truex}", "{\"a\":nul}", "{\"a\":falsey}", "{\"a\" 1}",
	    "{\"a\":\"b\"", "{\"a\":[1,]}", "{\"a\":[1 2]}", "{\"a\"}", "{a:1}", "{\"a\":+1}",
	    "{\"a\":[[[[[[[[[[1]]]]]]]]]]}", "\xef\xbb\xbf{}", "{\"a\":1}\n\n",
	};
	for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]) + 1; i++) {
		/* the last: a NUL byte inside a string */
		const char *b = i < sizeof(bodies) / sizeof(bodies[0]) ? bodies[i] : "{\"a\":\"x\0y\"}";
		size_t n = i < sizeof(bodies) / sizeof(bodies[0]) ? strlen(b) : 11;
		json_error_t e1, e2;
		json_t *got = hf__json_loadb(b, n, &e1);
		json_t *want = json_loadb(b, n, JSON_REJECT_DUPLICATES, &e2);
		if (!want) {
			assert_null(got);
			assert_string_equal(e1.text, e2.text);
			continue;
		}
		assert_non_null(got);
		char *tg = json_dumps(got, JSON_COMPACT | JSON_PRESERVE_ORDER);
		char *tw = json_dumps(want, JSON_COMPACT | JSON_PRESERVE_ORDER);
		assert_string_equal(tg, tw);
		assert_true(json_equal(got, want));
		free(tg);
		free(tw);
		json_decref(got);
		json_decref(want);
	}
}

/* Reads `text` as an event: its code, and the event in *out (cleared by the caller). */
static int event_of(const char *text, hf_event *out, hf_error *err)
{
	json_t *j = json_loads(text, 0, NULL);
	assert_non_null(j);
	int rc = hf__event_from_json(j, out, err);
	json_decref(j);
	return rc;
}

static void test_event_revisions(void **state)
{
	(void)state;
	hf_event_revision revs[] = {{"b", 3}, {"a", 7}, {"c \"q\"", 1}};
	hf_event ev = {.seq = 12, .at_ms = 5, .type = "hold.granted", .resource = "b",
	               .hold_id = "h", .data = "{}", .revision = 3, .n_revisions = 3,
	               .revisions = revs};
	char *text = jansson(hf__event_to_json(&ev), JSON_COMPACT | JSON_PRESERVE_ORDER);
	assert_string_equal(text, "{\"seq\":12,\"at_ms\":5,\"type\":\"hold.granted\",\"resource\":"
	                          "\"b\",\"revision\":3,\"revisions\":{\"b\":3,\"a\":7,"
	                          "\"c \\\"q\\\"\":1},\"hold_id\":\"h\",\"data\":{}}");
	hf_event back;
	hf_error err;
	assert_int_equal(event_of(text, &back, &err), HF_OK);
	assert_int_equal(back.revision, 3);
	assert_int_equal(back.n_revisions, 3);
	for (size_t i = 0; i < 3; i++) {
		assert_string_equal(back.revisions[i].resource, revs[i].resource);
		assert_int_equal(back.revisions[i].revision, revs[i].revision);
	}
	hf__event_clear(&back);
	free(text);

	/* one resource: "revision" alone, and revisions[] of one */
	ev.n_revisions = 1;
	text = jansson(hf__event_to_json(&ev), JSON_COMPACT | JSON_PRESERVE_ORDER);
	assert_null(strstr(text, "revisions"));
	assert_int_equal(event_of(text, &back, &err), HF_OK);
	assert_int_equal(back.n_revisions, 1);
	assert_string_equal(back.revisions[0].resource, "b");
	assert_int_equal(back.revisions[0].revision, 3);
	hf__event_clear(&back);
	free(text);

	/* an event kept from before revisions (a redis:// store's) has none */
	assert_int_equal(
	    event_of("{\"seq\":1,\"at_ms\":0,\"type\":\"t\",\"resource\":\"a\",\"data\":{}}", &back, &err),
	    HF_OK);
	assert_int_equal(back.revision, 0);
	assert_int_equal(back.n_revisions, 0);
	hf__event_clear(&back);

	/* what a server must not send */
	static const char *const bad[] = {
	    "{\"seq\":1,\"at_ms\":0,\"type\":\"t\",\"resource\":\"a\",\"revisions\":{\"a\":1,"
	    "\"b\":1},\"data\":{}}",
	    "{\"seq\":1,\"at_ms\":0,\"type\":\"t\",\"resource\":null,\"revision\":1,\"data\":{}}",
	    "{\"seq\":1,\"at_ms\":0,\"type\":\"t\",\"resource\":\"a\",\"revision\":0,\"data\":{}}",
	    "{\"seq\":1,\"at_ms\":0,\"type\":\"t\",\"resource\":\"a\",\"revision\":2,"
	    "\"revisions\":{\"a\":3,\"b\":1},\"data\":{}}",
	    "{\"seq\":1,\"at_ms\":0,\"type\":\"t\",\"resource\":\"a\",\"revision\":2,"
	    "\"revisions\":{\"c\":3,\"b\":1},\"data\":{}}",
	    "{\"seq\":1,\"at_ms\":0,\"type\":\"t\",\"resource\":\"a\",\"revision\":2,"
	    "\"revisions\":{\"a\":2},\"data\":{}}",
	    "{\"seq\":1,\"at_ms\":0,\"type\":\"t\",\"resource\":\"a\",\"revision\":2,"
	    "\"revisions\":[[\"a\",2],[\"b\",1]],\"data\":{}}",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(event_of(bad[i], &back, &err), HF_EPROTO);
		assert_null(back.revisions);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_hold_text),
	    cmocka_unit_test(test_ints),
	    cmocka_unit_test(test_strings),
	    cmocka_unit_test(test_borrowed_buffer),
	    cmocka_unit_test(test_body_reader),
	    cmocka_unit_test(test_event_revisions),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
