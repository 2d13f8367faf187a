/*
 * message_test.c — unit tests of the relayed message form (src/relay/message.c): one message
 * per resource an event touches, the relay's own resources skipped, message ids, routing-key
 * encoding (one topic word per name, long names hashed), stable partitions, and the consumer
 * ledger's dedupe and gap verdicts (consume.c) on a scratch SQLite file.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "relay.h"

static void one_message_per_resource_touched(void **state)
{
	(void)state;
	hf_event_revision revs[] = {{"a", 4}, {"b.c", 9}};
	hf_event evs[] = {
		{.seq = 1, .type = "resource.created", .resource = "x", .revision = 1},
		{.seq = 2, .type = "hold.granted", .resource = RELAY_OWN_PREFIX "r", .revision = 3},
		{.seq = 3,
		 .type = "hold.granted",
		 .resource = "a",
		 .revision = 4,
		 .n_revisions = 2,
		 .revisions = revs},
	};
	struct relay_msg *m;
	char **jsons;
	size_t n;
	assert_int_equal(relay_msgs_build(evs, 3, &m, &n, &jsons), HF_OK);
	assert_int_equal(n, 3);
	assert_null(jsons[1]); /* the relay's own: not published */
	assert_string_equal(m[0].resource, "x");
	assert_int_equal(m[0].revision, 1);
	assert_string_equal(m[1].resource, "a");
	assert_int_equal(m[1].revision, 4);
	assert_string_equal(m[2].resource, "b.c");
	assert_int_equal(m[2].revision, 9);
	assert_ptr_equal(m[1].json, m[2].json); /* one body for the event's copies */
	char buf[300];
	relay_message_id(&m[2], buf, sizeof(buf));
	assert_string_equal(buf, "b.c/9");
	relay_routing_key(&m[2], buf, sizeof(buf));
	assert_string_equal(buf, "hold.granted.b%2Ec");
	relay_msgs_free(m, jsons, 3);
}

static void message_id_without_revision_is_seq(void **state)
{
	(void)state;
	hf_event ev = {.seq = 42, .type = "hold.granted", .resource = "a"};
	struct relay_msg m = {&ev, "{}", "a", 0};
	char buf[64];
	relay_message_id(&m, buf, sizeof(buf));
	assert_string_equal(buf, "42");
}

static void routing_key_encodes_and_hashes(void **state)
{
	(void)state;
	hf_event ev = {.seq = 1, .type = "hold.released"};
	struct relay_msg m = {&ev, "{}", "a b%*#\xc3\xa9", 1};
	char buf[RELAY_ROUTING_KEY_MAX + 1];
	relay_routing_key(&m, buf, sizeof(buf));
	assert_string_equal(buf, "hold.released.a%20b%25%2A%23%C3%A9");
	char name[HF_NAME_MAX + 1];
	memset(name, '.', HF_NAME_MAX);
	name[HF_NAME_MAX] = '\0';
	m.resource = name; /* 255 dots: 765 bytes encoded, over AMQP's 255 */
	relay_routing_key(&m, buf, sizeof(buf));
	assert_true(strncmp(buf, "hold.released.%", 15) == 0);
	assert_int_equal(strlen(buf), strlen("hold.released.%") + 16);
	m.resource = NULL;
	relay_routing_key(&m, buf, sizeof(buf));
	assert_string_equal(buf, "hold.released");
}

static void partitions_are_stable(void **state)
{
	(void)state;
	/* FNV-1a 64 of "a" is 0xaf63dc4c8601ec8c (docs/events.md names the hash). */
	assert_int_equal(relay_partition("a", 8), 0xaf63dc4c8601ec8cULL % 8);
	assert_int_equal(relay_partition("a", 1), 0);
	assert_int_equal(relay_partition(NULL, 8), 0);
	for (unsigned p = 1; p < 64; p++)
		assert_true(relay_partition("seat-12A", p) < p);
}

static int always_ok(void *arg, const char *resource, int64_t revision, uint64_t seq,
                     const char *json, hf_error *err)
{
	(void)resource, (void)revision, (void)seq, (void)json, (void)err;
	(*(int *)arg)++;
	return HF_OK;
}

static void ledger_dedupes_and_reports_gaps(void **state)
{
	(void)state;
	char path[] = "/tmp/hf-relay-ledger-XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	close(fd);
	struct relay_ledger *l;
	hf_error err;
	assert_int_equal(relay_ledger_open(path, &l, &err), HF_OK);
	int applied = 0;
	struct relay_consume_opts o;
	relay_consume_opts_init(&o);
	o.apply = always_ok;
	o.apply_arg = &applied;
	struct relay_consume_stats st = {0};
	assert_int_equal(relay_consume_one(&o, l, &st, "r", 1, 10, "{}", 0, &err), RELAY_APPLIED);
	assert_int_equal(relay_consume_one(&o, l, &st, "r", 1, 10, "{}", 0, &err), RELAY_DUPLICATE);
	assert_int_equal(relay_consume_one(&o, l, &st, "r", 2, 11, "{}", 0, &err), RELAY_APPLIED);
	assert_int_equal(relay_consume_one(&o, l, &st, "r", 5, 14, "{}", 0, &err), RELAY_APPLIED);
	assert_int_equal(st.gaps, 2); /* 3 and 4 */
	assert_int_equal(relay_consume_one(&o, l, &st, "r", 4, 13, "{}", 0, &err), RELAY_DUPLICATE);
	/* No revision (an engine that gives none): dedupe by seq. */
	assert_int_equal(relay_consume_one(&o, l, &st, "s", 0, 20, "{}", 0, &err), RELAY_APPLIED);
	assert_int_equal(relay_consume_one(&o, l, &st, "s", 0, 20, "{}", 0, &err), RELAY_DUPLICATE);
	assert_int_equal(relay_consume_one(&o, l, &st, "s", 0, 22, "{}", 0, &err), RELAY_APPLIED);
	relay_ledger_close(l);
	/* The ledger outlives the process. */
	assert_int_equal(relay_ledger_open(path, &l, &err), HF_OK);
	assert_int_equal(relay_consume_one(&o, l, &st, "r", 5, 14, "{}", 0, &err), RELAY_DUPLICATE);
	relay_ledger_close(l);
	assert_int_equal(applied, 5);
	assert_int_equal(st.duplicates, 4);
	unlink(path);
	char aux[sizeof(path) + 8];
	snprintf(aux, sizeof(aux), "%s-wal", path);
	unlink(aux);
	snprintf(aux, sizeof(aux), "%s-shm", path);
	unlink(aux);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(one_message_per_resource_touched),
		cmocka_unit_test(message_id_without_revision_is_seq),
		cmocka_unit_test(routing_key_encodes_and_hashes),
		cmocka_unit_test(partitions_are_stable),
		cmocka_unit_test(ledger_dedupes_and_reports_gaps),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
