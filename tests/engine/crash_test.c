/*
 * crash_test.c — acknowledged changes survive SIGKILL, and fences are never reused.
 *
 * Each round a child process opens the same file: store and applies changes under load from
 * several threads (acquires of declared and implicit resources, confirms, releases, resource
 * updates). After a call has returned OK the child writes an acknowledgement record to a pipe
 * (one write(2) of less than PIPE_BUF: never torn). The parent SIGKILLs the child at a
 * random moment (sometimes while it is still opening and recovering), reopens the store and
 * checks that every acknowledged change is there:
 *   - a granted hold exists with the acknowledged fences, in the acknowledged state or a
 *     later one (confirmed: confirmed or released; released: released);
 *   - a resource update is at the acknowledged version or later;
 *   - every grant's fences are above every fence acknowledged in earlier rounds, and a new
 *     grant after the reopen is above every fence ever acknowledged;
 *   - at the end: the event log is gap-free and has a hold.granted event for every
 *     acknowledged grant.
 * Some grants are acknowledged from an idempotent replay: the child submits the acquire
 * without waiting for it and acknowledges what the replay (same key) answers — the replay
 * writes nothing itself, so it is the durability barrier on answers that makes it safe.
 * A store that cannot be reopened (store_corrupt, storage_error) fails the test.
 *
 * HF_TEST_SEED (printed) seeds the kill times and the child's choices; HF_TEST_CRASH_ROUNDS
 * (default 40) sets the rounds; the whole test stops starting rounds after ~90 s.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

enum { A_READY = 1, A_GRANT, A_CONFIRM, A_RELEASE, A_PUT };
enum { NDECL = 4, NIMPL = 4, NRES = NDECL + NIMPL, CHILD_THREADS = 4 };

static const char *const names[NRES] = {"c0", "c1", "c2", "c3", "k0", "k1", "k2", "k3"};

typedef struct ack {
	int32_t kind;
	int32_t n;
	char id[HF_ID_LEN + 1];
	int8_t res[3];
	int64_t units[3];
	int64_t fence[3];
	int64_t version;
} ack;

static uint64_t g_seed;
static int g_fd = -1; /* the child's end of the pipe */
static const char *g_url;

static void die(const char *fmt, ...) HF_TEST_PRINTF(1, 2);
static void die(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "crash test FAILED (HF_TEST_SEED=%llu): ", (unsigned long long)g_seed);
	vfprintf(stderr, fmt, ap);
	fprintf(stderr, "\n");
	va_end(ap);
	exit(1);
}

static int res_index(const char *n)
{
	for (int i = 0; i < NRES; i++)
		if (strcmp(n, names[i]) == 0)
			return i;
	return -1;
}

/* ---- the child ---- */

static void send_ack(const ack *a)
{
	ssize_t w = write(g_fd, a, sizeof *a);
	if (w != (ssize_t)sizeof *a)
		_exit(3);
}

struct child_thread {
	hf_store *st;
	uint64_t rng;
	uint64_t seed; /* unique per round and thread: names idempotency keys */
	int idx;
	int keys;
};

static void drop_reply(void *arg, hf_reply *reply)
{
	(void)arg;
	hf_reply_free(reply);
}

/* Submits the acquire without waiting, then repeats it with the same key: the answer is the
 * replay (or, if the first could not be granted, a grant of its own). */
static int acquire_by_replay(struct child_thread *t, const char *spec, const ht_acq *o,
                             hf_hold **h)
{
	char key[64];
	snprintf(key, sizeof key, "crash-%llx-%d", (unsigned long long)t->seed, t->keys++);
	ht_acq ok = *o;
	ok.key = key;
	ht_claims cl;
	hf_request q;
	hf_request_init(&q, HF_OP_ACQUIRE);
	ht_acq_req(&q.acquire, &cl, spec, &ok);
	if (hf_submit(t->st, &q, drop_reply, NULL, NULL, NULL) != HF_OK)
		_exit(5);
	return ht_acquire(t->st, spec, &ok, h);
}

static void *child_main(void *arg)
{
	struct child_thread *t = arg;
	enum { MINE = 64 };
	char mine[MINE][2][HF_ID_LEN + 1]; /* id, token */
	int nmine = 0;
	for (;;) {
		uint64_t k = ht_rand(&t->rng) % 100;
		if (k < 50 || nmine == 0) {
			int n = 1 + (int)(ht_rand(&t->rng) % 2);
			int first = (int)(ht_rand(&t->rng) % NRES);
			char spec[96] = "";
			for (int c = 0; c < n; c++) {
				int r = (first + c * 3) % NRES;
				char part[32];
				long long units = 1 + (long long)(ht_rand(&t->rng) % 3);
				if (r >= NDECL)
					snprintf(part, sizeof part, "%s%s:%lld@1000000", c ? "," : "", names[r], units);
				else
					snprintf(part, sizeof part, "%s%s:%lld", c ? "," : "", names[r], units);
				strcat(spec, part);
			}
			ht_acq o = {.ttl_ms = 3600000, .owner = "crash"};
			hf_hold *h = NULL;
			int rc = ht_rand(&t->rng) % 5 == 0 ? acquire_by_replay(t, spec, &o, &h)
			                                   : ht_acquire(t->st, spec, &o, &h);
			if (rc != HF_OK)
				_exit(10 - rc); /* the parent reports the child's exit status */
			ack a;
			memset(&a, 0, sizeof a);
			a.kind = A_GRANT;
			memcpy(a.id, h->id, sizeof a.id);
			a.n = (int32_t)h->n_parts;
			for (size_t p = 0; p < h->n_parts && p < 3; p++) {
				a.res[p] = (int8_t)res_index(h->parts[p].resource);
				a.units[p] = h->parts[p].units;
				a.fence[p] = h->parts[p].fence;
			}
			send_ack(&a);
			if (nmine < MINE) {
				memcpy(mine[nmine][0], h->id, HF_ID_LEN + 1);
				memcpy(mine[nmine][1], h->token, HF_TOKEN_LEN + 1);
				nmine++;
			}
			hf_hold_free(h);
		} else if (k < 90) {
			int i = (int)(ht_rand(&t->rng) % (uint64_t)nmine);
			bool release = k >= 68;
			hf_reply *r = ht_hold_op(t->st, release ? HF_OP_RELEASE : HF_OP_CONFIRM,
			                         mine[i][0], mine[i][1], 0);
			int rc = r->error.code;
			hf_reply_free(r);
			if (rc != HF_OK && rc != HF_EENDED)
				_exit(40 - rc);
			if (rc == HF_OK) {
				ack a;
				memset(&a, 0, sizeof a);
				a.kind = release ? A_RELEASE : A_CONFIRM;
				memcpy(a.id, mine[i][0], sizeof a.id);
				send_ack(&a);
			}
			if (release) {
				memcpy(mine[i], mine[nmine - 1], sizeof mine[i]);
				nmine--;
			}
		} else {
			int r = (int)(ht_rand(&t->rng) % NDECL);
			char meta[64];
			snprintf(meta, sizeof meta, "{\"by\":%d,\"n\":%llu}", t->idx,
			         (unsigned long long)(ht_rand(&t->rng) % 1000));
			hf_reply *rep = ht_put(t->st, names[r], 1000000000, meta, -1);
			if (rep->error.code != HF_OK)
				_exit(70 - rep->error.code);
			ack a;
			memset(&a, 0, sizeof a);
			a.kind = A_PUT;
			a.res[0] = (int8_t)r;
			a.version = rep->resource->version;
			hf_reply_free(rep);
			send_ack(&a);
		}
	}
	return NULL;
}

static void child(uint64_t seed)
{
	hf_store *st = NULL;
	hf_error err;
	int rc = hf_open(g_url, NULL, &st, &err);
	if (rc != HF_OK) {
		fprintf(stderr, "child: open: %s %s\n", hf_err_name(rc), err.message);
		_exit(100 - rc);
	}
	ack a;
	memset(&a, 0, sizeof a);
	a.kind = A_READY;
	send_ack(&a);
	pthread_t th[CHILD_THREADS];
	struct child_thread ct[CHILD_THREADS];
	for (int i = 0; i < CHILD_THREADS; i++) {
		ct[i] = (struct child_thread){
		    .st = st, .rng = seed * 31 + (uint64_t)i, .seed = seed * 31 + (uint64_t)i, .idx = i};
		pthread_create(&th[i], NULL, child_main, &ct[i]);
	}
	for (;;)
		pause(); /* until SIGKILL */
}

/* ---- the parent ---- */

typedef struct hrec {
	char id[HF_ID_LEN + 1];
	int n;
	int res[3];
	int64_t units[3];
	int64_t fence[3];
	int state; /* 0 tentative, 1 confirmed, 2 released (acknowledged) */
	int round;
} hrec;

static hrec *recs;
static size_t nrecs, caprecs;
static int64_t put_version[NDECL];
static int64_t max_fence_before[NRES]; /* over rounds before the current one */
static int64_t max_fence_all[NRES];

static hrec *find_rec(const char *id)
{
	/* newest first: confirms and releases follow their grant closely */
	for (size_t i = nrecs; i-- > 0;)
		if (strcmp(recs[i].id, id) == 0)
			return &recs[i];
	return NULL;
}

static void take_ack(const ack *a, int round)
{
	switch (a->kind) {
	case A_READY:
		return;
	case A_GRANT: {
		if (nrecs == caprecs) {
			caprecs = caprecs ? caprecs * 2 : 1024;
			recs = realloc(recs, caprecs * sizeof *recs);
		}
		hrec *h = &recs[nrecs++];
		memset(h, 0, sizeof *h);
		memcpy(h->id, a->id, sizeof h->id);
		h->n = a->n;
		h->round = round;
		for (int p = 0; p < a->n && p < 3; p++) {
			h->res[p] = a->res[p];
			h->units[p] = a->units[p];
			h->fence[p] = a->fence[p];
			int r = a->res[p];
			if (r < 0)
				die("grant %s names an unknown resource", a->id);
			if (a->fence[p] <= max_fence_before[r])
				die("round %d: fence %lld on %s reused: an earlier round acknowledged %lld",
				    round, (long long)a->fence[p], names[r], (long long)max_fence_before[r]);
			if (a->fence[p] > max_fence_all[r])
				max_fence_all[r] = a->fence[p];
		}
		return;
	}
	case A_CONFIRM:
	case A_RELEASE: {
		hrec *h = find_rec(a->id);
		if (!h)
			die("acknowledged %s of unknown hold %s", a->kind == A_CONFIRM ? "confirm" : "release",
			    a->id);
		int s = a->kind == A_CONFIRM ? 1 : 2;
		if (s > h->state)
			h->state = s;
		return;
	}
	case A_PUT:
		if (a->res[0] >= 0 && a->res[0] < NDECL && a->version > put_version[a->res[0]])
			put_version[a->res[0]] = a->version;
		return;
	default:
		die("garbled acknowledgement kind %d", a->kind);
	}
}

static void check_hold(hf_store *st, const hrec *h)
{
	hf_reply *r = ht_get_hold(st, h->id);
	if (r->error.code != HF_OK)
		die("acknowledged hold %s (round %d) is gone after reopen: %s", h->id, h->round,
		    hf_err_name(r->error.code));
	const hf_hold *g = r->hold;
	bool ok_state = h->state == 2   ? g->state == HF_HOLD_RELEASED
	                : h->state == 1 ? (g->state == HF_HOLD_CONFIRMED || g->state == HF_HOLD_RELEASED)
	                                : g->state != HF_HOLD_EXPIRED;
	if (!ok_state)
		die("hold %s acknowledged %s, after reopen it is %s", h->id,
		    h->state == 2 ? "released" : h->state == 1 ? "confirmed" : "tentative",
		    hf_hold_state_name(g->state));
	if ((int)g->n_parts != h->n)
		die("hold %s has %zu parts after reopen, %d acknowledged", h->id, g->n_parts, h->n);
	for (int p = 0; p < h->n; p++) {
		const hf_hold_part *gp = &g->parts[p];
		if (strcmp(gp->resource, names[h->res[p]]) != 0 || gp->fence != h->fence[p] ||
		    gp->units != h->units[p])
			die("hold %s part %d after reopen: %s %lld units fence %lld; acknowledged %s %lld "
			    "fence %lld",
			    h->id, p, gp->resource, (long long)gp->units, (long long)gp->fence,
			    names[h->res[p]], (long long)h->units[p], (long long)h->fence[p]);
	}
	hf_reply_free(r);
}

/* Reopens, checks this round's acknowledgements (all of them when `all`), and probes the
 * fence counters with a fresh grant on every resource. */
static void verify(const char *url, int round, bool all)
{
	hf_store *st = NULL;
	hf_error err;
	int rc = hf_open(url, NULL, &st, &err);
	if (rc != HF_OK)
		die("round %d: reopen after SIGKILL: %s \"%s\"", round, hf_err_name(rc), err.message);
	for (size_t i = 0; i < nrecs; i++)
		if (all || recs[i].round == round)
			check_hold(st, &recs[i]);
	for (int r = 0; r < NDECL; r++) {
		ht_res v = ht_res_get(st, names[r]);
		if (v.rc != HF_OK || v.version < put_version[r])
			die("round %d: %s at version %lld (%s), acknowledged %lld", round, names[r],
			    (long long)v.version, hf_err_name(v.rc), (long long)put_version[r]);
	}
	for (int r = 0; r < NRES; r++) {
		char spec[32];
		snprintf(spec, sizeof spec, r >= NDECL ? "%s@1000000" : "%s", names[r]);
		hf_hold *h = NULL;
		ht_acq o = {.owner = "probe"};
		rc = ht_acquire(st, spec, &o, &h);
		if (rc != HF_OK)
			die("round %d: probe grant on %s: %s", round, names[r], hf_err_name(rc));
		if (h->parts[0].fence <= max_fence_all[r])
			die("round %d: after reopen %s granted fence %lld, but %lld was acknowledged", round,
			    names[r], (long long)h->parts[0].fence, (long long)max_fence_all[r]);
		max_fence_all[r] = h->parts[0].fence;
		if (ht_release_rc(st, h) != HF_OK)
			die("round %d: probe release failed", round);
		hf_hold_free(h);
	}
	if (all) {
		/* the log: gap-free, and a hold.granted for every acknowledged grant */
		size_t nid = 0;
		char (*ids)[HF_ID_LEN + 1] = malloc((nrecs + 1) * sizeof *ids);
		uint64_t after = 0;
		for (;;) {
			hf_reply *r = ht_events(st, after, HF_LIST_MAX);
			if (r->error.code != HF_OK)
				die("read events: %s", hf_err_name(r->error.code));
			if (r->n_events == 0) {
				hf_reply_free(r);
				break;
			}
			for (size_t i = 0; i < r->n_events; i++) {
				if (r->events[i].seq != after + 1)
					die("event log gap: %llu after %llu", (unsigned long long)r->events[i].seq,
					    (unsigned long long)after);
				after = r->events[i].seq;
				if (strcmp(r->events[i].type, "hold.granted") == 0 && r->events[i].hold_id &&
				    nid < nrecs + 1 && find_rec(r->events[i].hold_id))
					memcpy(ids[nid++], r->events[i].hold_id, HF_ID_LEN + 1);
			}
			hf_reply_free(r);
		}
		if (nid != nrecs)
			die("%zu acknowledged grants, %zu of them have a hold.granted event", nrecs, nid);
		free(ids);
		fprintf(stderr, "crash test: %zu acknowledged grants checked, %llu events\n", nrecs,
		        (unsigned long long)after);
	}
	hf_close(st);
	memcpy(max_fence_before, max_fence_all, sizeof max_fence_before);
}

int main(void)
{
	g_seed = ht_seed();
	fprintf(stderr, "crash test: HF_TEST_SEED=%llu\n", (unsigned long long)g_seed);
	uint64_t rng = g_seed;
	int rounds = 40;
	if (getenv("HF_TEST_CRASH_ROUNDS"))
		rounds = atoi(getenv("HF_TEST_CRASH_ROUNDS"));
	ht_env *env = ht_env_new(false);
	if (!env)
		die("no temporary store");
	if (!env->is_file) {
		fprintf(stderr, "crash test: only for file: engines, skipped\n");
		ht_env_free(env);
		return 0;
	}
	g_url = env->url;
	{
		hf_store *st = NULL;
		hf_error err;
		if (hf_open(g_url, NULL, &st, &err) != HF_OK)
			die("first open: %s", err.message);
		for (int r = 0; r < NDECL; r++)
			if (ht_put_rc(st, names[r], 1000000000, NULL, -1) != HF_OK)
				die("put %s", names[r]);
		hf_close(st);
		for (int r = 0; r < NDECL; r++)
			put_version[r] = 1;
	}
	int64_t start = ht_mono_ms();
	size_t acks_total = 0;
	int done_rounds = 0;
	for (int round = 1; round <= rounds; round++) {
		if (ht_mono_ms() - start > 90000) {
			fprintf(stderr, "crash test: time bound reached after %d rounds\n", round - 1);
			break;
		}
		int pfd[2];
		if (pipe(pfd) != 0)
			die("pipe: %s", strerror(errno));
		uint64_t child_seed = ht_rand(&rng);
		/* a third of the kills land early, maybe during open and recovery */
		bool early = ht_rand(&rng) % 3 == 0;
		int delay = early ? (int)(ht_rand(&rng) % 30) : 5 + (int)(ht_rand(&rng) % 150);
		fflush(NULL);
		pid_t pid = fork();
		if (pid < 0)
			die("fork: %s", strerror(errno));
		if (pid == 0) {
			close(pfd[0]);
			g_fd = pfd[1];
			child(child_seed);
			_exit(0);
		}
		close(pfd[1]);
		int64_t t0 = ht_mono_ms();
		bool ready = false;
		ack a;
		size_t have = 0;
		char *buf = (char *)&a;
		int status = 0;
		bool exited = false;
		/* read while the child works; kill it `delay` ms after it is ready (or after fork) */
		for (;;) {
			int64_t since = ht_mono_ms() - t0;
			if ((early || ready) && since >= delay)
				break;
			if (since > 30000)
				die("round %d: the child did not get ready in 30 s", round);
			struct pollfd p = {.fd = pfd[0], .events = POLLIN};
			if (poll(&p, 1, 2) > 0) {
				ssize_t n = read(pfd[0], buf + have, sizeof a - have);
				if (n <= 0) {
					exited = true;
					break;
				}
				have += (size_t)n;
				if (have == sizeof a) {
					if (a.kind == A_READY && !ready) {
						ready = true;
						t0 = ht_mono_ms();
					}
					take_ack(&a, round);
					acks_total++;
					have = 0;
				}
			}
		}
		kill(pid, SIGKILL);
		waitpid(pid, &status, 0);
		if (exited || !(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL))
			die("round %d: the child stopped by itself (status %d, exit %d): an operation "
			    "failed under load",
			    round, status, WIFEXITED(status) ? WEXITSTATUS(status) : -1);
		/* what was acknowledged before the kill is still in the pipe */
		for (;;) {
			ssize_t n = read(pfd[0], buf + have, sizeof a - have);
			if (n <= 0)
				break;
			have += (size_t)n;
			if (have == sizeof a) {
				take_ack(&a, round);
				acks_total++;
				have = 0;
			}
		}
		close(pfd[0]);
		verify(g_url, round, round == rounds);
		done_rounds = round;
	}
	if (done_rounds < rounds)
		verify(g_url, done_rounds + 1, true);
	fprintf(stderr, "crash test: %d rounds, %zu acknowledgements, all present\n", done_rounds,
	        acks_total);
	free(recs);
	ht_env_free(env);
	return 0;
}
