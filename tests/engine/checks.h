/*
 * checks.h — cmocka with assertions that print holdfast codes and signed numbers readably.
 * Only for the thread that runs the test: cmocka's failures longjmp.
 */
#ifndef HF_TEST_CHECKS_H
#define HF_TEST_CHECKS_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "holdfast.h"

/* An expression's holdfast code must be `want`. */
#define RC(expr, want)                                                                     \
	do {                                                                                   \
		int rc_got_ = (expr);                                                              \
		int rc_want_ = (want);                                                             \
		if (rc_got_ != rc_want_)                                                           \
			fail_msg("%s: got %s (%d), expected %s (%d)", #expr, hf_err_name(rc_got_),     \
			         rc_got_, hf_err_name(rc_want_), rc_want_);                            \
	} while (0)

/* A reply's code must be `want`; prints its message otherwise. */
#define REPLY_RC(reply, want)                                                              \
	do {                                                                                   \
		const hf_reply *rr_ = (reply);                                                     \
		int rc_want_ = (want);                                                             \
		if (rr_->error.code != rc_want_)                                                   \
			fail_msg("%s: got %s (%d) \"%s\", expected %s", #reply,                        \
			         hf_err_name(rr_->error.code), rr_->error.code, rr_->error.message,    \
			         hf_err_name(rc_want_));                                               \
	} while (0)

/* Signed integer equality with values in the message. */
#define EQ(a, b)                                                                           \
	do {                                                                                   \
		long long eq_a_ = (long long)(a), eq_b_ = (long long)(b);                          \
		if (eq_a_ != eq_b_)                                                                \
			fail_msg("%s is %lld, expected %s = %lld", #a, eq_a_, #b, eq_b_);              \
	} while (0)

#define GT(a, b)                                                                           \
	do {                                                                                   \
		long long gt_a_ = (long long)(a), gt_b_ = (long long)(b);                          \
		if (!(gt_a_ > gt_b_))                                                              \
			fail_msg("%s is %lld, expected > %s = %lld", #a, gt_a_, #b, gt_b_);            \
	} while (0)

#endif /* HF_TEST_CHECKS_H */
