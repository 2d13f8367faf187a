/*
 * type_test.c — cmocka tests of saga types (src/saga/type.c): the flight booking type of
 * SAGA_FORMAT.md parses (and with its payment as an AMQP step); each kind of mistake is refused with a message naming its path;
 * and templates (src/saga/template.c) expand with their types kept.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "saga/saga.h"

static const char flight[] =
    "{\"description\":\"seed 002\",\"defaults\":{\"retry\":{\"attempts\":3,\"backoff_ms\":200,"
    "\"max_backoff_ms\":5000},\"timeout_ms\":10000},\"steps\":["
    "{\"name\":\"create_booking\",\"action\":{\"http\":{\"method\":\"POST\","
    "\"url\":\"{{input.booking_url}}/bookings\",\"body\":{\"customer\":\"{{input.customer}}\"},"
    "\"ok\":[200,201]}},\"compensation\":{\"http\":{\"method\":\"POST\","
    "\"url\":\"{{input.booking_url}}/bookings/{{steps.create_booking.body.id}}/cancel\"}}},"
    "{\"name\":\"reserve_seat\",\"action\":{\"hold\":{\"op\":\"acquire\","
    "\"resource\":\"flight/{{input.flight}}/seat/{{input.seat}}\",\"capacity\":1,"
    "\"ttl_ms\":\"{{input.seat_ttl_ms}}\",\"wait_ms\":0}},"
    "\"compensation\":{\"hold\":{\"op\":\"release\",\"of\":\"reserve_seat\"}}},"
    "{\"name\":\"pay\",\"action\":{\"http\":{\"method\":\"POST\",\"url\":\"{{input.payment_url}}/p\","
    "\"ok\":[201],\"timeout_ms\":60000},\"retry\":{\"attempts\":1}},"
    "\"compensation\":{\"http\":{\"method\":\"POST\","
    "\"url\":\"{{input.payment_url}}/payments/{{steps.pay.body.id}}/refund\"}}},"
    "{\"name\":\"confirm_seat\",\"action\":{\"hold\":{\"op\":\"confirm\",\"of\":\"reserve_seat\"}}}]}";

static int parse_text(const char *text, struct hf__saga_type **t, hf_error *err)
{
	json_error_t je;
	json_t *j = json_loads(text, 0, &je);
	assert_non_null(j);
	int rc = hf__saga_type_parse(j, t, err);
	json_decref(j);
	return rc;
}

static void test_flight_type_parses(void **state)
{
	(void)state;
	struct hf__saga_type *t;
	hf_error err = {0};
	assert_int_equal(parse_text(flight, &t, &err), HF_OK);
	assert_int_equal(t->n_steps, 4);
	assert_int_equal(t->steps[0].action.retry.attempts, 3);
	assert_int_equal(t->steps[0].compensation.retry.attempts, HF__SAGA_DEFAULT_COMP_ATTEMPTS);
	assert_int_equal(t->steps[2].action.retry.attempts, 1);
	assert_int_equal(t->steps[2].action.timeout_ms, 60000);
	assert_int_equal(t->steps[1].action.kind, HF__SAGA_HOLD);
	assert_int_equal(t->steps[3].action.hold_op, HF__HOLD_CONFIRM);
	assert_int_equal(t->steps[3].action.of, 1);
	assert_true(t->steps[1].has_compensation);
	assert_false(t->steps[3].has_compensation);
	hf__saga_type_free(t);
}

/* Replaces the first occurrence of `from` in the flight type and expects `message`. */
static void expect_error(const char *from, const char *to, const char *message)
{
	char text[sizeof(flight) + 256];
	const char *at = strstr(flight, from);
	assert_non_null(at);
	snprintf(text, sizeof(text), "%.*s%s%s", (int)(at - flight), flight, to, at + strlen(from));
	struct hf__saga_type *t = NULL;
	hf_error err = {0};
	assert_int_equal(parse_text(text, &t, &err), HF_EINVAL);
	assert_null(t);
	if (strcmp(err.message, message) != 0)
		fail_msg("got \"%s\", expected \"%s\"", err.message, message);
}

#define PAY_HTTP "{\"http\":{\"method\":\"POST\",\"url\":\"{{input.payment_url}}/p\","

/* The payment as a request to a queue: its reply's body feeds the compensation's template. */
static void test_amqp_step_parses(void **state)
{
	(void)state;
	char text[sizeof(flight) + 256];
	const char *at = strstr(flight, PAY_HTTP);
	assert_non_null(at);
	snprintf(text, sizeof(text), "%.*s%s%s", (int)(at - flight), flight,
	         "{\"amqp\":{\"url\":\"{{input.amqp}}\",\"routing_key\":\"payments\","
	         "\"body\":{\"card\":\"{{input.card}}\"},",
	         at + strlen(PAY_HTTP));
	struct hf__saga_type *t;
	hf_error err = {0};
	if (parse_text(text, &t, &err) != HF_OK)
		fail_msg("%s", err.message);
	assert_int_equal(t->steps[2].action.kind, HF__SAGA_AMQP);
	assert_int_equal(t->steps[2].action.timeout_ms, 60000);
	assert_int_equal(t->steps[2].compensation.kind, HF__SAGA_HTTP);
	hf__saga_type_free(t);
}

static void test_errors_name_the_path(void **state)
{
	(void)state;
	expect_error("{{input.booking_url}}/bookings\"", "{{steps.x.body.id}}\"",
	             "steps[0].action.http.url: template refers to unknown step \"x\"");
	expect_error("{{input.payment_url}}/p", "{{steps.pay.body.id}}",
	             "steps[2].action.http.url: template refers to unknown step \"pay\"");
	expect_error("{{steps.create_booking.body.id}}/cancel", "{{steps.create_booking.hold}}",
	             "steps[0].compensation.http.url: template \"steps.create_booking.hold\" must end in .body[.field...] or .status");
	expect_error("\"op\":\"confirm\",\"of\":\"reserve_seat\"", "\"op\":\"confirm\",\"of\":\"pay\"",
	             "steps[3].action.hold.of: names \"pay\", which is not a hold acquire");
	expect_error("\"method\":\"POST\"", "\"method\":\"BREW\"",
	             "steps[0].action.http.method: must be one of GET, POST, PUT, PATCH, DELETE");
	expect_error("\"ok\":[200,201]", "\"ok\":[200,1000]",
	             "steps[0].action.http.ok: must be an array of 1..16 HTTP status codes");
	expect_error("\"name\":\"pay\"", "\"name\":\"reserve_seat\"",
	             "steps[2].name: \"reserve_seat\" names an earlier step too");
	expect_error("\"wait_ms\":0", "\"wait_ms\":-1",
	             "steps[1].action.hold.wait_ms: must be an integer 0..3600000");
	expect_error("\"attempts\":1}", "\"attempts\":0}",
	             "steps[2].action.retry.attempts: must be an integer 1..100");
	expect_error("\"description\"", "\"descripton\"", "type: unknown field \"descripton\"");
	expect_error("{\"name\":\"reserve_seat\",", "{\"name\":\"reserve_seat\",\"barrier\":1,",
	             "steps[1].barrier: must be true or false");
	expect_error("{\"name\":\"confirm_seat\",", "{\"name\":\"confirm_seat\",\"barrier\":true,",
	             "steps: step \"confirm_seat\" has a barrier but no compensation");
	expect_error("{\"hold\":{\"op\":\"release\"", "{\"http\":{},\"hold\":{\"op\":\"release\"",
	             "steps[1].compensation: must have exactly one of \"http\", \"amqp\" and \"hold\"");
	expect_error(PAY_HTTP, "{\"amqp\":{\"url\":\"amqp://h\",\"routing_key\":\"\",",
	             "steps[2].action.amqp.routing_key: must be a string of 1..255 bytes (templates allowed)");
	expect_error(PAY_HTTP, "{\"amqp\":{\"url\":\"http://h\",\"routing_key\":\"pay\",",
	             "steps[2].action.amqp.url: must start with amqp:// (or a template), not \"http://h\"");
	expect_error(PAY_HTTP, "{\"amqp\":{\"url\":\"amqp://h\",\"routing_key\":\"{{steps.x.body}}\",",
	             "steps[2].action.amqp.routing_key: template refers to unknown step \"x\"");
	expect_error(PAY_HTTP, "{\"amqp\":{\"url\":\"amqp://h\",\"routing_key\":\"p\",\"method\":\"POST\",",
	             "steps[2].action.amqp: unknown field \"method\"");
	expect_error("{{input.customer}}", "{{input.customer",
	             "steps[0].action.http.body: a template \"{{\" is not closed by \"}}\" (or is empty or too long)");
	expect_error("\"op\":\"acquire\"", "\"op\":\"grab\"",
	             "steps[1].action.hold.op: must be acquire, extend, confirm or release");
	expect_error("{{input.seat_ttl_ms}}", "{{seat_ttl}}",
	             "steps[1].action.hold.ttl_ms: template refers to \"seat_ttl\", which is not input.*, steps.*, saga.id or step.idempotency_key");
}

static json_t *expand(const char *tree, const char *ctx, hf_error *err)
{
	json_error_t je;
	json_t *t = json_loads(tree, JSON_DECODE_ANY, &je), *c = json_loads(ctx, 0, &je);
	assert_non_null(t);
	assert_non_null(c);
	json_t *out = hf__template_expand(t, c, err);
	json_decref(t);
	json_decref(c);
	return out;
}

static void test_templates_expand(void **state)
{
	(void)state;
	const char *ctx = "{\"input\":{\"bags\":2,\"url\":\"http://h:1\",\"o\":{\"a\":[1,\"x\"]}},"
	                  "\"steps\":{\"b\":{\"status\":201,\"body\":{\"id\":\"B7\"}}},"
	                  "\"saga\":{\"id\":\"s1\"}}";
	hf_error err = {0};
	json_t *out = expand("{\"n\":\"{{input.bags}}\",\"u\":\"{{input.url}}/b/{{steps.b.body.id}}\","
	                     "\"a\":[\"{{ input.o.a.1 }}\",\"{{input.o}}\"],\"s\":\"{{steps.b.status}}!\","
	                     "\"k\":7}",
	                     ctx, &err);
	assert_non_null(out);
	char *text = json_dumps(out, JSON_COMPACT | JSON_SORT_KEYS);
	assert_string_equal(text, "{\"a\":[\"x\",{\"a\":[1,\"x\"]}],\"k\":7,\"n\":2,"
	                          "\"s\":\"201!\",\"u\":\"http://h:1/b/B7\"}");
	free(text);
	json_decref(out);
	assert_null(expand("\"{{steps.c.body.id}}\"", ctx, &err));
	assert_int_equal(err.code, HF_EINVAL);
	assert_string_equal(err.message, "template refers to a missing value \"steps.c.body.id\"");
	assert_null(expand("\"x{{input.nope}}y\"", ctx, &err));
	assert_string_equal(err.message, "template refers to a missing value \"input.nope\"");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_flight_type_parses),
	    cmocka_unit_test(test_errors_name_the_path),
	    cmocka_unit_test(test_amqp_step_parses),
	    cmocka_unit_test(test_templates_expand),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
