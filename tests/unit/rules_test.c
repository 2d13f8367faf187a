/*
 * rules_test.c — unit tests of the engine-neutral hold rules (src/core/rules.c): token
 * comparison, owner checks, idempotency verdicts, any/all selection, impossible waits.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "core/rules.h"

static void test_token_equal(void **state)
{
	(void)state;
	assert_true(hf__token_equal("abcd", "abcd"));
	assert_false(hf__token_equal("abcd", "abce"));
	assert_false(hf__token_equal("abcd", "abc"));
	assert_false(hf__token_equal("abc", "abcd"));
	assert_false(hf__token_equal("abcd", ""));
	assert_true(hf__token_equal("", ""));
}

static void test_owner(void **state)
{
	(void)state;
	hf_error err = {0};
	assert_int_equal(hf__check_owner("h1", "tok", HF_HOLD_TENTATIVE, "tok", &err), HF_OK);
	assert_int_equal(hf__check_owner("h1", "tok", HF_HOLD_CONFIRMED, "tok", &err), HF_OK);
	assert_int_equal(hf__check_owner("h1", "tok", HF_HOLD_TENTATIVE, "bad", &err), HF_ETOKEN);
	assert_string_equal(err.message, "token does not match hold 'h1'");
	/* A stranger learns nothing about an ended hold: the token is checked first. */
	assert_int_equal(hf__check_owner("h1", "tok", HF_HOLD_RELEASED, "bad", &err), HF_ETOKEN);
	assert_int_equal(hf__check_owner("h1", "tok", HF_HOLD_RELEASED, "tok", &err), HF_EENDED);
	assert_string_equal(err.message, "hold 'h1' has been released");
	assert_int_equal(hf__check_owner("h1", "tok", HF_HOLD_EXPIRED, "tok", &err), HF_EENDED);
	assert_string_equal(err.message, "hold 'h1' has expired");
	assert_int_equal(hf__err_no_hold(&err, "h2", NULL), HF_ENOHOLD);
	assert_string_equal(err.message, "hold 'h2' does not exist");
}

static void test_idem(void **state)
{
	(void)state;
	hf_error err = {0};
	assert_int_equal(hf__idem_verdict("k", "fp", "fp", false, &err), HF_OK);
	assert_int_equal(hf__idem_verdict("k", "fp", "other", false, &err), HF_EIDEMMISMATCH);
	/* A different request is refused even while the first still waits. */
	assert_int_equal(hf__idem_verdict("k", "fp", "other", true, &err), HF_EIDEMMISMATCH);
	assert_int_equal(hf__idem_verdict("k", "fp", "fp", true, &err), HF_EIDEMBUSY);
}

static bool pred(void *ctx, size_t i)
{
	return ((const bool *)ctx)[i];
}

static void test_grantable(void **state)
{
	(void)state;
	size_t from = 99, to = 99;
	bool all[3] = {true, true, true}, mid[3] = {false, true, true}, none[3] = {0};
	assert_true(hf__claims_grantable(3, false, pred, all, &from, &to));
	assert_int_equal(from, 0);
	assert_int_equal(to, 3);
	assert_false(hf__claims_grantable(3, false, pred, mid, &from, &to));
	assert_true(hf__claims_grantable(3, true, pred, mid, &from, &to));
	assert_int_equal(from, 1);
	assert_int_equal(to, 2);
	assert_false(hf__claims_grantable(3, true, pred, none, &from, &to));
	assert_false(hf__claims_grantable(0, false, pred, all, &from, &to));
}

static void test_wait_impossible(void **state)
{
	(void)state;
	bool one[2] = {true, false}, both[2] = {true, true}, neither[2] = {false, false};
	assert_true(hf__wait_impossible(2, false, pred, one));
	assert_false(hf__wait_impossible(2, true, pred, one)); /* any-of: the other may still fit */
	assert_true(hf__wait_impossible(2, true, pred, both));
	assert_false(hf__wait_impossible(2, false, pred, neither));
	assert_false(hf__wait_impossible(2, true, pred, neither));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_token_equal), cmocka_unit_test(test_owner),
		cmocka_unit_test(test_idem),        cmocka_unit_test(test_grantable),
		cmocka_unit_test(test_wait_impossible),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
