/*
 * errors_test.c — unit tests of the public pure helpers: the error table (names, messages,
 * HTTP statuses, the name round trip), mode and hold-state names and parsing,
 * hf_request_init and hf_options_init, and hf_open's refusal of unknown schemes.
 */
#include <ctype.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "holdfast.h"

struct row {
	int code;
	int status;
	const char *name;
	const char *message;
};

static const struct row table[] = {
#define ROW(n, value, status, code, message) {HF_##n, status, code, message},
	HF_ERROR_MAP(ROW)
#undef ROW
};
#define NROWS (sizeof table / sizeof table[0])

static void errors_table_matches_header(void **state)
{
	(void)state;
	for (size_t i = 0; i < NROWS; i++) {
		assert_string_equal(hf_err_name(table[i].code), table[i].name);
		assert_string_equal(hf_strerror(table[i].code), table[i].message);
		assert_int_equal(hf_err_http_status(table[i].code), table[i].status);
		assert_int_equal(hf_err_from_name(table[i].name), table[i].code);
	}
}

static void errors_unique_and_negative(void **state)
{
	(void)state;
	for (size_t i = 0; i < NROWS; i++) {
		assert_true(table[i].code < 0);
		for (size_t j = i + 1; j < NROWS; j++) {
			assert_int_not_equal(table[i].code, table[j].code);
			assert_string_not_equal(table[i].name, table[j].name);
			assert_string_not_equal(hf_err_name(table[i].code), hf_err_name(table[j].code));
		}
	}
}

/* Codes are -1 .. -N without holes: a server can map any of them. */
static void errors_dense(void **state)
{
	(void)state;
	for (size_t i = 0; i < NROWS; i++) {
		bool found = false;
		for (size_t j = 0; j < NROWS; j++)
			found |= table[j].code == -(int)(i + 1);
		assert_true(found);
	}
}

/* Stable code strings are snake_case; messages are lowercase with no final full stop. */
static void errors_text_style(void **state)
{
	(void)state;
	for (size_t i = 0; i < NROWS; i++) {
		for (const char *p = table[i].name; *p; p++)
			assert_true(islower((unsigned char)*p) || *p == '_');
		const char *m = hf_strerror(table[i].code);
		size_t n = strlen(m);
		assert_true(n > 0);
		assert_false(isupper((unsigned char)m[0]));
		assert_int_not_equal(m[n - 1], '.');
	}
}

static void errors_unknown(void **state)
{
	(void)state;
	int unknown[] = {1, 42, -1000, -(int)NROWS - 1, INT32_MIN};
	for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
		assert_non_null(hf_err_name(unknown[i]));
		assert_non_null(hf_strerror(unknown[i]));
		assert_int_equal(hf_err_http_status(unknown[i]), 500);
	}
	assert_non_null(hf_err_name(HF_OK));
	assert_non_null(hf_strerror(HF_OK));
	assert_int_equal(hf_err_from_name("no_such_code"), HF_EINTERNAL);
	assert_int_equal(hf_err_from_name(""), HF_EINTERNAL);
	assert_int_equal(hf_err_from_name("INVALID_ARGUMENT"), HF_EINTERNAL);
	assert_int_equal(hf_err_from_name("invalid_argument "), HF_EINTERNAL);
}

static void modes_names_and_parse(void **state)
{
	(void)state;
	const char *names[] = {"units", "shared", "exclusive"};
	hf_mode modes[] = {HF_MODE_UNITS, HF_MODE_SHARED, HF_MODE_EXCLUSIVE};
	for (size_t i = 0; i < 3; i++) {
		assert_string_equal(hf_mode_name(modes[i]), names[i]);
		hf_mode m = (hf_mode)99;
		assert_int_equal(hf_mode_parse(names[i], &m), HF_OK);
		assert_int_equal(m, modes[i]);
	}
	const char *bad[] = {"", "Shared", "EXCLUSIVE", "unit", "shared ", " units", "read"};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		hf_mode m = HF_MODE_SHARED;
		assert_int_equal(hf_mode_parse(bad[i], &m), HF_EINVAL);
	}
	assert_non_null(hf_mode_name((hf_mode)77));
}

static void states_names_and_parse(void **state)
{
	(void)state;
	const char *names[] = {"tentative", "confirmed", "released", "expired"};
	hf_hold_state states[] = {HF_HOLD_TENTATIVE, HF_HOLD_CONFIRMED, HF_HOLD_RELEASED,
	                          HF_HOLD_EXPIRED};
	for (size_t i = 0; i < 4; i++) {
		assert_string_equal(hf_hold_state_name(states[i]), names[i]);
		hf_hold_state s = (hf_hold_state)99;
		assert_int_equal(hf_hold_state_parse(names[i], &s), HF_OK);
		assert_int_equal(s, states[i]);
	}
	const char *bad[] = {"", "Tentative", "live", "expire", "released\n"};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		hf_hold_state s = HF_HOLD_CONFIRMED;
		assert_int_equal(hf_hold_state_parse(bad[i], &s), HF_EINVAL);
	}
	assert_non_null(hf_hold_state_name((hf_hold_state)77));
}

static void request_and_options_init(void **state)
{
	(void)state;
	hf_request q;
	memset(&q, 0x5a, sizeof q);
	hf_request_init(&q, HF_OP_LIST_HOLDS);
	assert_int_equal(q.op, HF_OP_LIST_HOLDS);
	assert_int_equal(q.if_version, -1);
	assert_int_equal(q.state, -1);
	assert_null(q.name);
	assert_null(q.meta);
	assert_null(q.cursor);
	assert_null(q.acquire.claims);
	assert_null(q.acquire.idempotency_key);
	assert_int_equal(q.limit, 0);
	assert_int_equal(q.after, 0);
	assert_int_equal(q.wait_ms, 0);

	hf_options o;
	memset(&o, 0x5a, sizeof o);
	hf_options_init(&o);
	assert_null(o.clock);
	assert_null(o.fallback_url);
	assert_int_equal(o.hold_retention_ms, 24LL * 3600 * 1000);
	assert_int_equal(o.idempotency_retention_ms, 24LL * 3600 * 1000);
	assert_int_equal(o.max_waiters, 100000);
	assert_int_equal(o.max_holds, 1000000);
	assert_int_equal(o.max_resources, 1000000);
}

static void open_unknown_scheme(void **state)
{
	(void)state;
	const char *urls[] = {"nosuch:thing", "ftp://x", "no-scheme-at-all"};
	for (size_t i = 0; i < 3; i++) {
		hf_store *st = (hf_store *)0x1;
		hf_error err;
		int rc = hf_open(urls[i], NULL, &st, &err);
		if (rc == HF_OK)
			hf_close(st);
		assert_true(rc == HF_ENOTSUP || rc == HF_EINVAL);
		assert_int_equal(err.code, rc);
		assert_null(st);
		assert_true(err.message[0] != '\0');
	}
}

static void now_is_realtime(void **state)
{
	(void)state;
	int64_t a = hf_now_ms();
	assert_true(a > 1600000000000LL); /* after 2020 */
	assert_true(hf_now_ms() >= a);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(errors_table_matches_header),
		cmocka_unit_test(errors_unique_and_negative),
		cmocka_unit_test(errors_dense),
		cmocka_unit_test(errors_text_style),
		cmocka_unit_test(errors_unknown),
		cmocka_unit_test(modes_names_and_parse),
		cmocka_unit_test(states_names_and_parse),
		cmocka_unit_test(request_and_options_init),
		cmocka_unit_test(open_unknown_scheme),
		cmocka_unit_test(now_is_realtime),
	};
	return cmocka_run_group_tests_name("errors", tests, NULL, NULL);
}
