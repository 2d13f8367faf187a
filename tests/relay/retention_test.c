/*
 * retention_test.c — event retention on every engine with an event log (HF_TEST_ENGINE_URL:
 * file:, postgres:// under with_pg.sh, redis:// under with_redis.sh): trims by count and by
 * age, a checkpoint holding the floor and force passing it, events_trimmed below the floor,
 * revisions gap-free across a trim and what remains valid for holdfast-check --events
 * --partial; then the relay and `holdfast relay`/`project` on a trimmed checkpoint (stop, exit
 * 10) and with --from-floor (when a Redis, HF_REDIS_PORTS, is there to relay to).
 */
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "check.h"
#include "harness.h"
#include "relay.h"

#define WAIT_MS 20000 /* a bound, not a timing target: retention passes run every second */

/* One acquire + release on `name` (capacity 1, implicit unless declared): two events. */
static void cycle(hf_store *st, const char *name)
{
	char spec[64];
	snprintf(spec, sizeof(spec), "%s@1", name);
	hf_hold *h = NULL;
	assert_int_equal(ht_acquire(st, spec, NULL, &h), HF_OK);
	assert_int_equal(ht_release_rc(st, h), HF_OK);
	hf_hold_free(h);
}

static void cycles(hf_store *st, const char *name, int n)
{
	for (int i = 0; i < n; i++)
		cycle(st, name);
}

/* Reads after `after`: its code, and with HF_ETRIMMED the floor named (*upto, if not NULL;
 * left alone otherwise). */
static int read_rc(hf_store *st, uint64_t after, uint64_t *upto, char *msg, size_t size)
{
	hf_reply *rp = ht_events(st, after, 10);
	int rc = rp->error.code;
	uint64_t floor = 0;
	if (rc == HF_ETRIMMED) {
		assert_true(relay_trimmed_upto(&rp->error, &floor));
		if (upto)
			*upto = floor;
	}
	if (msg)
		snprintf(msg, size, "%s", rp->error.message);
	hf_reply_free(rp);
	return rc;
}

/* Waits until reading after `after` answers events_trimmed, i.e. the floor is above it;
 * *upto is the floor then. Each poll writes a cycle on "tick": the embedded engine trims
 * after commits. */
static void wait_trimmed(hf_store *st, uint64_t after, uint64_t *upto)
{
	for (int waited = 0; waited < WAIT_MS; waited += 20) {
		if (read_rc(st, after, upto, NULL, 0) == HF_ETRIMMED)
			return;
		cycle(st, "tick");
		ht_sleep_ms(20);
	}
	fail_msg("no trim past seq %" PRIu64 " within %d ms", after, WAIT_MS);
}

/* The newest seq (reading after 0 may be refused). */
static uint64_t newest_seq(hf_store *st)
{
	hf_reply *rp = ht_events(st, UINT64_MAX / 2, 1);
	assert_int_equal(rp->error.code, HF_OK);
	uint64_t s = rp->last_seq;
	hf_reply_free(rp);
	return s;
}

/* The revision of `name` in the newest event (one of ours: nothing else writes). */
static int64_t last_revision(hf_store *st)
{
	hf_reply *rp = ht_events(st, newest_seq(st) - 1, 1);
	assert_int_equal(rp->n_events, 1);
	int64_t r = rp->events[0].revision;
	hf_reply_free(rp);
	return r;
}

/* What remains after `floor` passes holdfast-check --events --partial: seq increasing, each
 * resource's revisions consecutive from its first one seen. */
static void check_rest(hf_store *st, uint64_t floor)
{
	FILE *f = tmpfile();
	assert_non_null(f);
	size_t n = 0;
	for (uint64_t after = floor;;) {
		hf_reply *rp = ht_events(st, after, 500);
		assert_int_equal(rp->error.code, HF_OK);
		for (size_t i = 0; i < rp->n_events; i++) {
			char *j = hf_event_json(&rp->events[i]);
			fprintf(f, "%s\n", j);
			free(j);
			after = rp->events[i].seq;
		}
		n += rp->n_events;
		bool done = rp->n_events == 0;
		hf_reply_free(rp);
		if (done)
			break;
	}
	rewind(f);
	struct hfc_events_report rep;
	char err[256] = "";
	assert_int_equal(hfc_events_check(f, true, 10, stderr, &rep, err, sizeof(err)), 0);
	assert_int_equal(rep.events, n);
	assert_int_equal(rep.violations, 0);
	fclose(f);
}

static ht_env *open_env(int64_t keep_count, int64_t keep_ms)
{
	ht_env *env = ht_env_new(false);
	assert_non_null(env);
	env->opt.events_keep_count = keep_count;
	env->opt.events_keep_ms = keep_ms;
	hf_error err = {0};
	if (ht_env_open(env, &err) != HF_OK)
		fail_msg("open: %s", err.message);
	return env;
}

static void test_trim_by_count(void **state)
{
	(void)state;
	ht_env *env = open_env(20, 0);
	assert_int_equal(ht_put_rc(env->st, "r", 1, NULL, -1), HF_OK);
	cycles(env->st, "r", 40);
	uint64_t upto = 0;
	wait_trimmed(env->st, 0, &upto);
	char msg[HF_MESSAGE_MAX];
	assert_int_equal(read_rc(env->st, 0, &upto, msg, sizeof(msg)), HF_ETRIMMED);
	assert_non_null(strstr(msg, "the oldest kept is"));
	assert_int_equal(hf_err_http_status(HF_ETRIMMED), 410);
	/* The newest keep_count are kept; reading from the floor works. */
	uint64_t last = newest_seq(env->st);
	assert_true(upto > 0 && upto <= last - 20);
	assert_int_equal(read_rc(env->st, upto, NULL, NULL, 0), HF_OK);
	assert_int_equal(read_rc(env->st, last - 20, NULL, NULL, 0), HF_OK);
	/* Revisions keep counting across the trim (their counters are not events). */
	cycle(env->st, "r");
	int64_t rev = last_revision(env->st);
	assert_true(rev > 40);
	cycle(env->st, "r");
	assert_int_equal(last_revision(env->st), rev + 2);
	/* Reading from the floor while trims go on may meet a new floor; then from that one. */
	uint64_t floor = upto;
	while (read_rc(env->st, floor, &floor, NULL, 0) == HF_ETRIMMED)
		;
	check_rest(env->st, floor);
	ht_env_free(env);
}

static void test_trim_by_age(void **state)
{
	(void)state;
	ht_env *env = open_env(0, 500);
	cycles(env->st, "old", 10);
	uint64_t old = newest_seq(env->st);
	ht_sleep_ms(700); /* every one of them older than keep_ms */
	uint64_t upto = 0;
	wait_trimmed(env->st, old - 1, &upto);
	assert_true(upto >= old);
	/* The newest event is always kept, however old. */
	uint64_t last = newest_seq(env->st);
	assert_int_equal(read_rc(env->st, last - 1, NULL, NULL, 0), HF_OK);
	ht_env_free(env);
}

static void put_checkpoint(hf_store *st, const char *name, uint64_t seq)
{
	char res[96], meta[64];
	snprintf(res, sizeof(res), "holdfast.relay/%s/checkpoint", name);
	snprintf(meta, sizeof(meta), "{\"seq\":%" PRIu64 ",\"fence\":1}", seq);
	assert_int_equal(ht_put_rc(st, res, 1, meta, -1), HF_OK);
}

static void test_checkpoint_holds_then_force(void **state)
{
	(void)state;
	ht_env *env = open_env(10, 0);
	cycles(env->st, "r", 10);
	uint64_t c = newest_seq(env->st);
	put_checkpoint(env->st, "t", c);
	put_checkpoint(env->st, "u", c + 30); /* the lowest one counts */
	cycles(env->st, "r", 40);
	/* The floor reaches the checkpoint and stops there exactly, although keep_count alone
	 * would take it 60 events further. */
	uint64_t upto = 0;
	wait_trimmed(env->st, c - 1, &upto);
	assert_int_equal(upto, c);
	cycles(env->st, "r", 20);
	assert_int_equal(read_rc(env->st, c, NULL, NULL, 0), HF_OK);

	/* Forced (after a reopen), retention passes it. */
	env->opt.events_trim_force = true;
	hf_error err = {0};
	assert_int_equal(ht_env_reopen(env, &err), HF_OK);
	assert_int_equal(read_rc(env->st, c - 1, NULL, NULL, 0), HF_ETRIMMED); /* remembered */
	wait_trimmed(env->st, c, &upto);
	assert_true(upto > c);
	ht_env_free(env);
}

/* ---- The relay and the CLI on a trimmed checkpoint (a Redis to relay to). ---- */

static int redis_port(void)
{
	const char *ports = getenv("HF_REDIS_PORTS");
	return ports && *ports ? atoi(ports) : 0;
}

/* Runs the holdfast CLI (HF_TEST_HOLDFAST) with `args` on env's store; its exit code. */
static int run_cli(const ht_env *env, const char *args)
{
	char cmd[4096];
	snprintf(cmd, sizeof(cmd), "'%s' --engine '%s' %s", getenv("HF_TEST_HOLDFAST"), env->url,
	         args);
	int st = system(cmd);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void test_relay_on_trimmed_checkpoint(void **state)
{
	(void)state;
	int port = redis_port();
	if (!port || !getenv("HF_TEST_HOLDFAST"))
		skip();
	ht_env *env = open_env(10, 0);
	cycles(env->st, "r", 30);
	uint64_t upto = 0;
	wait_trimmed(env->st, 0, &upto);
	uint64_t last = newest_seq(env->st);
	ht_env_close(env); /* the relay opens the store itself (a file: store once at a time) */

	char dest[64], prefix[64];
	snprintf(dest, sizeof(dest), "redis://127.0.0.1:%d", port);
	snprintf(prefix, sizeof(prefix), "hf-ret-%d:", (int)getpid());
	struct relay_opts o;
	relay_opts_init(&o);
	o.store_url = env->url;
	o.name = "ret";
	o.dest.url = dest;
	o.dest.stream_prefix = prefix;
	o.lease_ms = 2000;
	o.idle_exit_ms = 3000;
	hf_error err = {0};
	/* A new relay starts at seq 0, below the floor: it stops and says why. */
	assert_int_equal(relay_run(&o, &err), HF_ETRIMMED);
	assert_non_null(strstr(err.message, "its checkpoint is at seq 0"));
	assert_non_null(strstr(err.message, "--from-floor"));
	/* The CLI: exit code 10, for relay and project alike. */
	char args[1024], db[512];
	snprintf(args, sizeof(args), "relay --to %s --stream-prefix %s --name ret --idle-exit 3000",
	         dest, prefix);
	assert_int_equal(run_cli(env, args), 10);
	snprintf(db, sizeof(db), "%s/hf-ret-%d.db", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp",
	         (int)getpid());
	unlink(db);
	snprintf(args, sizeof(args), "project --db %s", db);
	assert_int_equal(run_cli(env, args), 10);
	snprintf(args, sizeof(args), "project --db %s --from-floor", db);
	assert_int_equal(run_cli(env, args), 0);
	unlink(db);

	/* --from-floor: the checkpoint moves to the floor, then on to the end. */
	o.from_floor = true;
	o.stop_after_seq = last;
	assert_int_equal(relay_run(&o, &err), HF_OK);
	assert_int_equal(ht_env_open(env, &err), HF_OK);
	hf_reply *cp = ht_get(env->st, "holdfast.relay/ret/checkpoint");
	assert_int_equal(cp->error.code, HF_OK);
	json_t *m = json_loads(cp->resource->meta, 0, NULL);
	assert_true((uint64_t)json_integer_value(json_object_get(m, "seq")) >= last);
	json_decref(m);
	hf_reply_free(cp);
	ht_env_free(env);
}

int main(void)
{
	ht_apply_filter();
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_trim_by_count),
	    cmocka_unit_test(test_trim_by_age),
	    cmocka_unit_test(test_checkpoint_holds_then_force),
	    cmocka_unit_test(test_relay_on_trimmed_checkpoint),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
