/*
 * retention_test.c — unit tests of the event retention rule every engine follows
 * (src/core/retention.c): the trim plan, what counts as a checkpoint, when a pass is due,
 * and the events_trimmed wording.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "core/retention.h"

static void test_plan_count_age_newest(void **state)
{
	(void)state;
	struct hf__trim_policy p = {.keep_count = 10};
	struct hf__trim_plan plan;
	hf__trim_plan(&p, 100, 0, NULL, &plan);
	assert_int_equal(plan.upto, 90);
	assert_false(plan.past_checkpoint);
	hf__trim_plan(&p, 5, 0, NULL, &plan); /* under the count: nothing */
	assert_int_equal(plan.upto, 0);
	hf__trim_plan(&p, 0, 0, NULL, &plan); /* an empty log */
	assert_int_equal(plan.upto, 0);
	/* By age (aged_upto counts only with an age policy); whichever reaches further wins. */
	hf__trim_plan(&p, 100, 95, NULL, &plan);
	assert_int_equal(plan.upto, 90);
	p.keep_ms = 1000;
	hf__trim_plan(&p, 100, 95, NULL, &plan);
	assert_int_equal(plan.upto, 95);
	/* Everything aged: the newest is still kept. */
	hf__trim_plan(&p, 100, 100, NULL, &plan);
	assert_int_equal(plan.upto, 99);
}

static void test_plan_checkpoint_force(void **state)
{
	(void)state;
	struct hf__trim_policy p = {.keep_count = 10};
	struct hf__checkpoints cp = {0};
	hf__checkpoint_note(&cp, "holdfast.relay/a/checkpoint", "{\"seq\":50,\"fence\":3}");
	hf__checkpoint_note(&cp, "holdfast.relay/projection.v/checkpoint", "{\"seq\":40}");
	assert_true(cp.any);
	assert_int_equal(cp.lowest, 40);
	struct hf__trim_plan plan;
	hf__trim_plan(&p, 100, 0, &cp, &plan);
	assert_int_equal(plan.upto, 40);
	assert_true(plan.past_checkpoint);
	assert_int_equal(plan.checkpoint_seq, 40);
	p.force = true;
	hf__trim_plan(&p, 100, 0, &cp, &plan);
	assert_int_equal(plan.upto, 90);
	assert_true(plan.past_checkpoint);
	/* A checkpoint above the cut holds nothing back. */
	p.force = false;
	cp.lowest = 95;
	hf__trim_plan(&p, 100, 0, &cp, &plan);
	assert_int_equal(plan.upto, 90);
	assert_false(plan.past_checkpoint);
}

static void test_checkpoint_note(void **state)
{
	(void)state;
	struct hf__checkpoints cp = {0};
	hf__checkpoint_note(&cp, "holdfast.relay/a", "{\"seq\":1}");             /* the lease */
	hf__checkpoint_note(&cp, "other/x/checkpoint", "{\"seq\":1}");           /* not a relay's */
	hf__checkpoint_note(&cp, "holdfast.relay//checkpoint", "{\"seq\":1}");   /* no name */
	hf__checkpoint_note(&cp, "holdfast.relay/a/checkpoint", NULL);           /* no meta */
	hf__checkpoint_note(&cp, "holdfast.relay/a/checkpoint", "{\"seq\":-1}"); /* negative */
	hf__checkpoint_note(&cp, "holdfast.relay/a/checkpoint", "{\"seq\":1.5}");
	hf__checkpoint_note(&cp, "holdfast.relay/a/checkpoint", "{\"seq\":\"7\"}");
	hf__checkpoint_note(&cp, "holdfast.relay/a/checkpoint", "not json");
	assert_false(cp.any);
	hf__checkpoint_note(&cp, "holdfast.relay/a/checkpoint", "{\"seq\":0}");
	assert_true(cp.any);
	assert_int_equal(cp.lowest, 0);
}

static void test_due(void **state)
{
	(void)state;
	struct hf__trim_policy p = {0};
	assert_false(hf__trim_enabled(&p));
	p.keep_count = 100;
	assert_true(hf__trim_enabled(&p));
	assert_false(hf__trim_due(&p, 125, 0)); /* a quarter over: not yet */
	assert_true(hf__trim_due(&p, 126, 0));
	assert_false(hf__trim_due(&p, 226, 101));
	assert_false(hf__trim_due(&p, 10, 20)); /* a floor above the newest (a reset store) */
	p.keep_ms = 1;
	assert_true(hf__trim_due(&p, 1, 0)); /* an age: every pass may find some */
	hf_options opt;
	hf_options_init(&opt);
	hf__trim_policy_from(&p, &opt);
	assert_false(hf__trim_enabled(&p));
}

static void test_err_trimmed(void **state)
{
	(void)state;
	hf_error err = {0};
	assert_int_equal(hf__err_trimmed(&err, 13), HF_ETRIMMED);
	assert_int_equal(err.code, HF_ETRIMMED);
	assert_string_equal(err.message, "events up to seq 13 were trimmed: the oldest kept is 14 "
	                                 "(read after=13 or later)");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_plan_count_age_newest),
	    cmocka_unit_test(test_plan_checkpoint_force),
	    cmocka_unit_test(test_checkpoint_note),
	    cmocka_unit_test(test_due),
	    cmocka_unit_test(test_err_trimmed),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
