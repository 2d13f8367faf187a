/*
 * api_test.c — the saga API in process (hf_saga_* on a file: store): validation errors, a
 * saga of hold steps to completion (the orchestrator's threads start with it, not before), and hf_close in the middle of an HTTP step that hangs
 * (a socket that never answers): the close returns promptly, the next hf_open resumes the
 * saga, and once the service is gone for good the saga compensates and leaves no hold.
 */
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "holdfast.h"

static char dir[64], url[128];

static int setup(void **state)
{
	(void)state;
	snprintf(dir, sizeof(dir), "/tmp/hf-saga-api-XXXXXX");
	assert_non_null(mkdtemp(dir));
	snprintf(url, sizeof(url), "file:%s/holdfast.db", dir);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	return system(cmd) == 0 ? 0 : -1;
}

static hf_store *open_store(void)
{
	hf_store *s;
	hf_error err;
	if (hf_open(url, NULL, &s, &err) != HF_OK)
		fail_msg("open: %s", err.message);
	return s;
}

static json_t *get(hf_store *s, const char *id)
{
	char *text;
	hf_error err;
	if (hf_saga_get(s, id, &text, &err) != HF_OK)
		fail_msg("get: %s", err.message);
	json_t *j = json_loads(text, 0, NULL);
	free(text);
	return j;
}

/* Polls until the saga is in `state` (the test's timeout bounds it). */
static json_t *wait_state(hf_store *s, const char *id, const char *state)
{
	for (;;) {
		json_t *j = get(s, id);
		if (strcmp(json_string_value(json_object_get(j, "state")), state) == 0)
			return j;
		json_decref(j);
		nanosleep(&(struct timespec){0, 5000000}, NULL);
	}
}

static char *start(hf_store *s, const char *type, const char *input)
{
	char *text;
	hf_error err;
	if (hf_saga_start(s, type, input, NULL, &text, NULL, &err) != HF_OK)
		fail_msg("start: %s", err.message);
	json_t *j = json_loads(text, 0, NULL);
	char *id = strdup(json_string_value(json_object_get(j, "id")));
	json_decref(j);
	free(text);
	return id;
}

static size_t live_holds(hf_store *s, const char *id)
{
	char owner[64];
	snprintf(owner, sizeof(owner), "saga/%s", id);
	hf_request req;
	hf_reply *reply;
	hf_request_init(&req, HF_OP_LIST_HOLDS);
	req.owner = owner;
	assert_int_equal(hf_call(s, &req, &reply), HF_OK);
	size_t n = 0;
	for (size_t i = 0; i < reply->n_holds; i++)
		n += reply->holds[i].state == HF_HOLD_TENTATIVE || reply->holds[i].state == HF_HOLD_CONFIRMED;
	hf_reply_free(reply);
	return n;
}

/* The threads of this process (/proc/self/task). */
static size_t threads(void)
{
	FILE *f = fopen("/proc/self/status", "r");
	char line[128];
	size_t n = 0;
	while (f && fgets(line, sizeof(line), f))
		if (sscanf(line, "Threads: %zu", &n) == 1)
			break;
	if (f)
		fclose(f);
	return n;
}

static void test_validation_and_holds(void **state)
{
	(void)state;
	hf_store *s = open_store();
	size_t opened = threads(); /* no saga thread: the store has no saga yet */
	char *json = NULL;
	hf_error err;
	assert_int_equal(hf_saga_type_put(s, "t", "{\"steps\":[{\"name\":\"a\",\"action\":{\"hold\":"
	                                          "{\"op\":\"confirm\",\"of\":\"b\"}}}]}",
	                                  &json, &err),
	                 HF_ESAGATYPE);
	assert_string_equal(err.message, "steps[0].action.hold.of: names \"b\", which is not an earlier step");
	assert_int_equal(hf_saga_start(s, "nope", "{}", NULL, &json, NULL, &err), HF_ENOSAGATYPE);
	assert_int_equal(hf_saga_start(s, "t", "[1]", NULL, &json, NULL, &err), HF_EINVAL);
	assert_int_equal(hf_saga_type_put(s, "holds",
	                                  "{\"steps\":[{\"name\":\"seat\",\"action\":{\"hold\":{\"op\":"
	                                  "\"acquire\",\"resource\":\"r/{{input.n}}\",\"ttl_ms\":60000}},"
	                                  "\"compensation\":{\"hold\":{\"op\":\"release\",\"of\":\"seat\"}}},"
	                                  "{\"name\":\"ok\",\"action\":{\"hold\":{\"op\":\"confirm\",\"of\":\"seat\"}}}]}",
	                                  &json, &err),
	                 HF_OK);
	free(json);
	assert_int_equal(threads(), opened); /* types alone start nothing */
	char *id = start(s, "holds", "{\"n\":1}");
	json_decref(wait_state(s, id, "completed"));
	assert_true(threads() >= opened + 4); /* the first saga started the workers */
	assert_int_equal(live_holds(s, id), 1);
	assert_int_equal(hf_saga_resume(s, id, &json, &err), HF_ESAGASTATE);
	assert_int_equal(hf_saga_list(s, "completed", "holds", NULL, 10, &json, &err), HF_OK);
	assert_non_null(strstr(json, id));
	free(json);
	free(id);
	hf_close(s);
}

static void test_close_mid_step_then_resume(void **state)
{
	(void)state;
	/* A service that takes connections (the backlog) and never answers. */
	int lfd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(a);
	assert_int_equal(bind(lfd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(listen(lfd, 16), 0);
	assert_int_equal(getsockname(lfd, (struct sockaddr *)&a, &len), 0);
	char type[1024], input[64];
	snprintf(type, sizeof(type),
	         "{\"defaults\":{\"retry\":{\"attempts\":3,\"backoff_ms\":10},\"timeout_ms\":600000},"
	         "\"steps\":[{\"name\":\"seat\",\"action\":{\"hold\":{\"op\":\"acquire\",\"resource\":"
	         "\"hang/seat\",\"ttl_ms\":3600000}},\"compensation\":{\"hold\":{\"op\":\"release\","
	         "\"of\":\"seat\"}}},{\"name\":\"call\",\"action\":{\"http\":{\"method\":\"POST\","
	         "\"url\":\"http://127.0.0.1:{{input.port}}/x\"}}}]}");
	snprintf(input, sizeof(input), "{\"port\":%d}", ntohs(a.sin_port));
	hf_store *s = open_store();
	char *json;
	hf_error err;
	assert_int_equal(hf_saga_type_put(s, "hang", type, &json, &err), HF_OK);
	free(json);
	char *id = start(s, "hang", input);
	/* Wait until the call is in flight: the seat is checkpointed. */
	for (;;) {
		json_t *j = get(s, id);
		const char *st = json_string_value(json_object_get(
		    json_array_get(json_object_get(j, "steps"), 0), "state"));
		bool taken = strcmp(st, "succeeded") == 0;
		json_decref(j);
		if (taken)
			break;
		nanosleep(&(struct timespec){0, 5000000}, NULL);
	}
	hf_close(s); /* must not wait for the 10-minute timeout */
	s = open_store();
	json_t *j = get(s, id);
	assert_string_equal(json_string_value(json_object_get(j, "state")), "running");
	json_decref(j);
	close(lfd); /* the service is gone: refused, retried, then compensated */
	j = wait_state(s, id, "failed");
	assert_string_equal(json_string_value(json_object_get(
	                        json_array_get(json_object_get(j, "steps"), 0), "state")),
	                    "compensated");
	json_decref(j);
	assert_int_equal(live_holds(s, id), 0);
	free(id);
	hf_close(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_validation_and_holds, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_close_mid_step_then_resume, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
