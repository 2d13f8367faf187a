/*
 * fault_test.c — the embedded engine (file:) under storage faults: answers are never ahead of
 * the disk, and a failed commit leaves memory equal to the journal and recovers by itself.
 *
 * Faults are injected through HF_TEST_JOURNAL_FAULTS (src/engine/embedded/journal.c):
 * "delay_ms=N" (a slow fsync), "fail_while=PATH" (commits fail while PATH exists, as on a
 * full disk). One test fills a real, tiny tmpfs; it is skipped where mounting is not
 * permitted.
 *
 *   early_*      a child process answers a call whose answer depends on a change whose
 *                commit is slow; the parent SIGKILLs it the moment the answer arrives,
 *                reopens the store and checks the facts the client was told.
 *   batch_*      changes submitted in a batch (hf_store_batch_begin/end) share a commit:
 *                nothing is answered while the batch is open, every answer after it ends
 *                survives a SIGKILL.
 *   commit_*     a failed commit: the calls that depended on it fail, memory equals the
 *                journal, the failure is logged and shown by hf_store_health(), changes are
 *                refused, and writes work again once the disk does, without a restart.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "checks.h"
#include "harness.h"

#define PROMPT_MS 20000
#define SLOW_COMMIT "delay_ms=400"

/* ---- early answers: a child answers, the parent kills it at once ---- */

typedef struct early_ack {
	int rc;
	bool replayed;
	hf_hold_state state;
	char id[HF_ID_LEN + 1];
	int64_t fence;
} early_ack;

typedef void (*early_fn)(hf_store *st, early_ack *ack);

/* Makes a store with resource "r" (capacity 10), then runs `fn` in a child whose journal
 * commits are slow; SIGKILLs the child as soon as its answer arrives. The answer is in *ack;
 * the store is left closed. */
static void run_early(ht_env *env, early_fn fn, early_ack *ack)
{
	hf_error err;
	RC(ht_env_open(env, &err), HF_OK);
	hf_reply *r = ht_put(env->st, "r", 10, NULL, -1);
	REPLY_RC(r, HF_OK);
	hf_reply_free(r);
	ht_env_close(env);
	int pfd[2];
	assert_int_equal(pipe(pfd), 0);
	fflush(NULL);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		close(pfd[0]);
		setenv("HF_TEST_JOURNAL_FAULTS", SLOW_COMMIT, 1);
		hf_store *st = NULL;
		if (hf_open(env->url, NULL, &st, &err) != HF_OK)
			_exit(2);
		early_ack a;
		memset(&a, 0, sizeof a);
		fn(st, &a);
		if (write(pfd[1], &a, sizeof a) != (ssize_t)sizeof a)
			_exit(3);
		for (;;)
			pause(); /* until SIGKILL */
	}
	close(pfd[1]);
	struct pollfd p = {.fd = pfd[0], .events = POLLIN};
	bool got = poll(&p, 1, PROMPT_MS) > 0 && read(pfd[0], ack, sizeof *ack) == sizeof *ack;
	kill(pid, SIGKILL);
	int status = 0;
	waitpid(pid, &status, 0);
	close(pfd[0]);
	if (!got)
		fail_msg("the child gave no answer (status %d)", status);
	RC(ack->rc, HF_OK);
}

/* Reopens after the kill and checks that the hold the client was told of exists, and that
 * a new grant on "r" gets a fence above the one the client holds. */
static hf_hold_state reopen_and_check(ht_env *env, const early_ack *ack)
{
	hf_error err;
	RC(ht_env_open(env, &err), HF_OK);
	ht_hold_view v = ht_hold_get(env->st, ack->id);
	if (v.rc != HF_OK)
		fail_msg("hold %s, answered before the kill, is gone after restart: %s", ack->id,
		         hf_err_name(v.rc));
	hf_hold *h = NULL;
	ht_acq o = {.owner = "after"};
	RC(ht_acquire(env->st, "r", &o, &h), HF_OK);
	if (h->parts[0].fence <= ack->fence)
		fail_msg("after restart 'r' granted fence %lld; the client already had %lld",
		         (long long)h->parts[0].fence, (long long)ack->fence);
	hf_hold_free(h);
	return v.state;
}

static void noop_done(void *arg, hf_reply *reply)
{
	(void)arg;
	hf_reply_free(reply);
}

static void submit_async(hf_store *st, const char *spec, const ht_acq *o)
{
	ht_claims cl;
	hf_request q;
	hf_request_init(&q, HF_OP_ACQUIRE);
	ht_acq_req(&q.acquire, &cl, spec, o);
	if (hf_submit(st, &q, noop_done, NULL, NULL, NULL) != HF_OK)
		_exit(4);
}

/* An idempotent replay is answered from memory: it must wait for the first grant's commit. */
static void child_replay(hf_store *st, early_ack *a)
{
	ht_acq o = {.key = "k-early", .ttl_ms = 3600000};
	submit_async(st, "r", &o); /* applied at once, its commit slow */
	hf_hold *h = NULL;
	a->rc = ht_acquire(st, "r", &o, &h);
	if (h) {
		a->replayed = h->replayed;
		memcpy(a->id, h->id, sizeof a->id);
		a->fence = h->parts[0].fence;
		hf_hold_free(h);
	}
}

static void early_replay_waits_for_commit(void **state)
{
	ht_env *env = *state;
	early_ack a;
	run_early(env, child_replay, &a);
	assert_true(a.replayed);
	reopen_and_check(env, &a);
}

/* A second confirm writes nothing (the hold is confirmed in memory): its answer must still
 * wait for the first confirm's commit. */
static void child_confirm(hf_store *st, early_ack *a)
{
	hf_hold *h = NULL;
	ht_acq o = {.ttl_ms = 1500};
	a->rc = ht_acquire(st, "r", &o, &h); /* durable when answered */
	if (a->rc != HF_OK)
		return;
	memcpy(a->id, h->id, sizeof a->id);
	a->fence = h->parts[0].fence;
	hf_request q;
	hf_request_init(&q, HF_OP_CONFIRM);
	q.hold_id = h->id;
	q.token = h->token;
	if (hf_submit(st, &q, noop_done, NULL, NULL, NULL) != HF_OK)
		_exit(4);
	hf_reply *r = ht_hold_op(st, HF_OP_CONFIRM, h->id, h->token, 0);
	a->rc = r->error.code;
	a->state = r->hold ? r->hold->state : HF_HOLD_TENTATIVE;
	hf_reply_free(r);
	hf_hold_free(h);
}

static void early_confirm_waits_for_commit(void **state)
{
	ht_env *env = *state;
	early_ack a;
	run_early(env, child_confirm, &a);
	EQ(a.state, HF_HOLD_CONFIRMED);
	hf_hold_state s = reopen_and_check(env, &a);
	if (s != HF_HOLD_CONFIRMED)
		fail_msg("hold %s was answered confirmed; after restart it is %s", a.id,
		         hf_hold_state_name(s));
}

/* A read shows a grant whose commit is slow: the read waits for it. */
static void child_read(hf_store *st, early_ack *a)
{
	ht_acq o = {.ttl_ms = 3600000};
	submit_async(st, "r", &o);
	hf_request q;
	hf_request_init(&q, HF_OP_LIST_HOLDS);
	q.resource = "r";
	q.limit = 10;
	hf_reply *r = NULL;
	a->rc = hf_call(st, &q, &r);
	if (a->rc == HF_OK && r->n_holds == 1) {
		memcpy(a->id, r->holds[0].id, sizeof a->id);
		a->fence = r->holds[0].parts[0].fence;
	} else if (a->rc == HF_OK) {
		a->rc = HF_EINTERNAL; /* the read did not show the grant */
	}
	hf_reply_free(r);
}

static void early_read_waits_for_commit(void **state)
{
	ht_env *env = *state;
	early_ack a;
	run_early(env, child_read, &a);
	reopen_and_check(env, &a);
}

/* Three acquires in one batch: while it is open the writer waits, so none is answered (a
 * negative check: an answer cannot come however long we look); after its end each is, and
 * the last one answered survives the parent's SIGKILL. */
static void child_batch(hf_store *st, early_ack *a)
{
	ht_pending g[3];
	ht_acq o = {.ttl_ms = 3600000};
	hf_store_batch_begin(st);
	for (int i = 0; i < 3; i++)
		if (ht_submit_acquire(st, "r", &o, &g[i]) != HF_OK)
			_exit(4);
	ht_sleep_ms(600); /* longer than SLOW_COMMIT: without the batch they would be answered */
	ht_pump(st);
	int early = atomic_load(&g[0].calls) + atomic_load(&g[1].calls) + atomic_load(&g[2].calls);
	hf_store_batch_end(st);
	a->rc = early ? HF_EINTERNAL : HF_OK;
	for (int i = 0; i < 3; i++) {
		if (!ht_pump_until(st, &g[i], PROMPT_MS) || ht_pending_rc(&g[i]) != HF_OK)
			a->rc = HF_EINTERNAL;
		else if (i == 2) {
			memcpy(a->id, g[i].reply->hold->id, sizeof a->id);
			a->fence = g[i].reply->hold->parts[0].fence;
		}
	}
}

static void batch_answers_after_its_commit(void **state)
{
	ht_env *env = *state;
	early_ack a;
	run_early(env, child_batch, &a);
	reopen_and_check(env, &a);
}

/* A NOWAIT refusal reveals that the units are taken: it waits for the grant's commit too.
 * Checked here by order only: the refusal arrives after the grant is durable (its answer). */
static void early_refusal_after_grant(void **state)
{
	ht_env *env = *state;
	hf_error err;
	setenv("HF_TEST_JOURNAL_FAULTS", SLOW_COMMIT, 1);
	int rc = ht_env_open(env, &err);
	unsetenv("HF_TEST_JOURNAL_FAULTS");
	RC(rc, HF_OK);
	ht_pending g;
	ht_acq o = {.ttl_ms = 3600000};
	RC(ht_submit_acquire(env->st, "x@1", &o, &g), HF_OK);
	RC(ht_acquire(env->st, "x@1", NULL, NULL), HF_EUNAVAILABLE);
	/* the grant's answer was released by the same commit, before or with the refusal */
	ht_pump(env->st);
	EQ(atomic_load(&g.calls), 1);
	RC(ht_pending_rc(&g), HF_OK);
	ht_pending_clear(&g);
}

/* ---- failed commits ---- */

static char g_switch[800]; /* commits fail while this file exists */

static void disk_full(bool on)
{
	if (on) {
		int fd = open(g_switch, O_WRONLY | O_CREAT, 0600);
		assert_true(fd >= 0);
		close(fd);
	} else {
		unlink(g_switch);
	}
}

/* Captures what the library writes on stderr between start and stop. */
typedef struct capture {
	int saved;
	char path[800];
} capture;

static void capture_start(capture *c, const ht_env *env)
{
	snprintf(c->path, sizeof c->path, "%s/stderr.txt", env->dir);
	fflush(stderr);
	c->saved = dup(2);
	int fd = open(c->path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0 && c->saved >= 0);
	dup2(fd, 2);
	close(fd);
}

static char *capture_stop(capture *c)
{
	fflush(stderr);
	dup2(c->saved, 2);
	close(c->saved);
	FILE *f = fopen(c->path, "r");
	assert_non_null(f);
	static char buf[8192];
	size_t n = fread(buf, 1, sizeof buf - 1, f);
	buf[n] = '\0';
	fclose(f);
	fputs(buf, stderr); /* keep it visible in the test log */
	return buf;
}

static bool wait_healthy(hf_store *st)
{
	int64_t deadline = ht_mono_ms() + PROMPT_MS;
	while (hf_store_health(st, NULL) != HF_OK) {
		if (ht_mono_ms() > deadline)
			return false;
		ht_sleep_ms(10);
	}
	return true;
}

static void commit_failure_rolls_back_and_recovers(void **state)
{
	ht_env *env = *state;
	snprintf(g_switch, sizeof g_switch, "%s/disk-full", env->dir);
	char spec[900];
	snprintf(spec, sizeof spec, "fail_while=%s", g_switch);
	setenv("HF_TEST_JOURNAL_FAULTS", spec, 1);
	hf_error err;
	int rc = ht_env_open(env, &err);
	unsetenv("HF_TEST_JOURNAL_FAULTS");
	RC(rc, HF_OK);
	hf_store *st = env->st;
	RC(ht_put_rc(st, "r", 2, NULL, -1), HF_OK);
	hf_hold *h1 = NULL;
	RC(ht_acquire(st, "r", NULL, &h1), HF_OK);
	hf_hold *h0 = NULL;
	RC(ht_acquire(st, "q@1", NULL, &h0), HF_OK);
	ht_pending w;
	ht_acq o = {.wait_ms = 600000};
	RC(ht_submit_acquire(st, "q@1", &o, &w), HF_OK);
	RC(hf_store_health(st, NULL), HF_OK);

	disk_full(true);
	capture cap;
	capture_start(&cap, env);
	hf_hold *h2 = NULL;
	rc = ht_acquire(st, "r", NULL, &h2);
	char *log = capture_stop(&cap);
	RC(rc, HF_ESTORAGE);
	assert_null(h2);
	/* the parked wait could not be kept: it ended with the error */
	assert_true(ht_pump_until(st, &w, PROMPT_MS));
	RC(ht_pending_rc(&w), HF_ESTORAGE);
	ht_pending_clear(&w);
	EQ(ht_res_get(st, "q").waiters, 0);
	EQ(ht_res_get(st, "q").held, 1);
	/* memory equals the journal: the failed grant is not there */
	ht_res v = ht_res_get(st, "r");
	RC(v.rc, HF_OK);
	EQ(v.held, 1);
	EQ(v.holds, 1);
	EQ(v.waiters, 0);
	ht_hold_view hv = ht_hold_get(st, h1->id);
	RC(hv.rc, HF_OK);
	EQ(hv.state, HF_HOLD_TENTATIVE);
	/* reported: a logfmt line, and the store's health */
	assert_non_null(strstr(log, "level=error"));
	assert_non_null(strstr(log, "journal commit failed"));
	RC(hf_store_health(st, &err), HF_ESTORAGE);
	assert_non_null(strstr(err.message, "journal"));
	/* changes are refused while the journal cannot write; reads are served */
	RC(ht_put_rc(st, "r", 3, NULL, -1), HF_ESTORAGE);
	RC(ht_confirm_rc(st, h1), HF_ESTORAGE);
	RC(ht_acquire(st, "s@1", NULL, NULL), HF_ESTORAGE);
	EQ(ht_res_get(st, "s").rc, HF_ENORESOURCE);

	/* space returns: the store finds out by itself, without a restart */
	capture_start(&cap, env);
	disk_full(false);
	bool healthy = wait_healthy(st);
	log = capture_stop(&cap);
	assert_true(healthy);
	assert_non_null(strstr(log, "level=info"));
	RC(ht_acquire(st, "r", NULL, &h2), HF_OK);
	GT(h2->parts[0].fence, h1->parts[0].fence);
	RC(ht_confirm_rc(st, h1), HF_OK);
	/* and all of it is durable */
	RC(ht_env_reopen(env, &err), HF_OK);
	v = ht_res_get(env->st, "r");
	EQ(v.held, 2);
	EQ(ht_hold_get(env->st, h1->id).state, HF_HOLD_CONFIRMED);
	EQ(ht_hold_get(env->st, h2->id).state, HF_HOLD_TENTATIVE);
	hf_hold_free(h0);
	hf_hold_free(h1);
	hf_hold_free(h2);
}

/* A change that fails leaves no event behind either, and the sequence goes on gap-free. */
static void commit_failure_keeps_events_gap_free(void **state)
{
	ht_env *env = *state;
	snprintf(g_switch, sizeof g_switch, "%s/disk-full", env->dir);
	char spec[900];
	snprintf(spec, sizeof spec, "fail_while=%s", g_switch);
	setenv("HF_TEST_JOURNAL_FAULTS", spec, 1);
	hf_error err;
	int rc = ht_env_open(env, &err);
	unsetenv("HF_TEST_JOURNAL_FAULTS");
	RC(rc, HF_OK);
	RC(ht_put_rc(env->st, "e", 1, NULL, -1), HF_OK);
	EQ(ht_last_seq(env->st), 1);
	disk_full(true);
	RC(ht_put_rc(env->st, "e", 2, NULL, -1), HF_ESTORAGE);
	EQ(ht_last_seq(env->st), 1);
	disk_full(false);
	assert_true(wait_healthy(env->st));
	RC(ht_put_rc(env->st, "e", 2, NULL, -1), HF_OK);
	hf_reply *r = ht_events(env->st, 0, 10);
	REPLY_RC(r, HF_OK);
	EQ(r->n_events, 2);
	EQ(r->events[1].seq, 2);
	assert_string_equal(r->events[1].type, "resource.updated");
	hf_reply_free(r);
	EQ(ht_res_get(env->st, "e").version, 2);
}

/* A real full disk: a tiny tmpfs. Skipped where mounting is not permitted. */
static void commit_real_disk_full(void **state)
{
	ht_env *env = *state;
	char mnt[800];
	snprintf(mnt, sizeof mnt, "%s/mnt", env->dir);
	assert_int_equal(mkdir(mnt, 0700), 0);
	if (mount("tmpfs", mnt, "tmpfs", 0, "size=640k,mode=0700") != 0) {
		fprintf(stderr, "cannot mount a tmpfs (%s): skipped\n", strerror(errno));
		rmdir(mnt);
		skip();
	}
	char url[900];
	snprintf(url, sizeof url, "file:%s/store.db", mnt);
	hf_store *st = NULL;
	hf_error err;
	RC(hf_open(url, NULL, &st, &err), HF_OK);
	/* metadata of 60 KiB per resource fills 640 KiB quickly */
	char *meta = malloc(61 * 1024);
	int64_t created = 0;
	int rc = HF_OK;
	capture cap;
	capture_start(&cap, env);
	for (int i = 0; i < 200 && rc == HF_OK; i++) {
		snprintf(meta, 61 * 1024, "{\"pad\":\"%0*d\"}", 60 * 1024, i);
		char name[32];
		snprintf(name, sizeof name, "fill%03d", i);
		rc = ht_put_rc(st, name, 1, meta, -1);
		if (rc == HF_OK)
			created++;
	}
	char *log = capture_stop(&cap);
	RC(rc, HF_ESTORAGE);
	GT(created, 0);
	assert_non_null(strstr(log, "journal commit failed"));
	RC(hf_store_health(st, NULL), HF_ESTORAGE);
	/* what failed is not in memory; what was acknowledged is */
	char name[32];
	snprintf(name, sizeof name, "fill%03lld", (long long)created);
	EQ(ht_res_get(st, name).rc, HF_ENORESOURCE);
	snprintf(name, sizeof name, "fill%03lld", (long long)created - 1);
	RC(ht_res_get(st, name).rc, HF_OK);
	/* space returns */
	bool remounted = mount("tmpfs", mnt, "tmpfs", MS_REMOUNT, "size=16m,mode=0700") == 0;
	if (remounted) {
		assert_true(wait_healthy(st));
		RC(ht_put_rc(st, name, 1, "{\"after\":true}", -1), HF_OK);
		RC(ht_acquire(st, "after@1", NULL, NULL), HF_OK);
	}
	hf_close(st);
	if (remounted) {
		RC(hf_open(url, NULL, &st, &err), HF_OK);
		EQ(ht_res_get(st, name).version, 2);
		EQ(ht_res_get(st, "after").held, 1);
		hf_close(st);
	}
	free(meta);
	umount2(mnt, MNT_DETACH);
	rmdir(mnt);
	if (!remounted)
		fail_msg("cannot remount the tmpfs larger: %s", strerror(errno));
}

/* ---- runner ---- */

static int setup(void **state)
{
	ht_env *env = ht_env_new(false);
	if (!env)
		return -1;
	if (!env->is_file) {
		ht_env_free(env);
		return -1;
	}
	*state = env;
	return 0;
}

static int teardown(void **state)
{
	ht_env *env = *state;
	char mnt[800];
	snprintf(mnt, sizeof mnt, "%s/mnt", env->dir);
	umount2(mnt, MNT_DETACH); /* if commit_real_disk_full failed half-way */
	rmdir(mnt);
	ht_env_free(env);
	return 0;
}

int main(void)
{
	const char *u = getenv("HF_TEST_ENGINE_URL");
	if (u && *u && strncmp(u, "file:", 5) != 0) {
		fprintf(stderr, "fault test: only for file: engines, skipped\n");
		return 77;
	}
	signal(SIGPIPE, SIG_IGN);
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
	const struct CMUnitTest tests[] = {
		T(early_replay_waits_for_commit),
		T(early_confirm_waits_for_commit),
		T(early_read_waits_for_commit),
		T(early_refusal_after_grant),
		T(batch_answers_after_its_commit),
		T(commit_failure_rolls_back_and_recovers),
		T(commit_failure_keeps_events_gap_free),
		T(commit_real_disk_full),
	};
	ht_apply_filter();
	return cmocka_run_group_tests_name("fault", tests, NULL, NULL);
}
