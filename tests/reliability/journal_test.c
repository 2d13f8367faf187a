/*
 * journal_test.c — the embedded engine's journal under power loss and I/O errors, through the
 * crash VFS (crashvfs.h). Three modes, chosen by the first argument:
 *
 *   powerloss  A child process runs a fixed workload (one client, blocking calls, injected
 *              clock: the same writes in the same order every run) on a new file: store with
 *              the crash VFS as SQLite's default, and sends every acknowledged change over a
 *              pipe. At the power cut (the N-th write, sync or rename of its run, N drawn from
 *              the seed) the VFS writes what the disk could hold to a copy directory and the
 *              child _exits. The parent opens the copy with the plain engine and checks:
 *              it opens; every acknowledged grant is there with its fences, every
 *              acknowledged confirm, release, extend and resource update is there; new
 *              grants get fences above every answered fence; events are gap-free and hold
 *              every acknowledged grant.
 *   powerloss_concurrent  The same with 8 clients (threads; HF_RELIABILITY_THREADS) of 40
 *              calls each (HF_RELIABILITY_CALLS) on the one store: their own holds and
 *              idempotency keys, shared resources (fences interleave). Calls of several
 *              clients then share commits (the engine's group commit, and answers released
 *              for a whole batch), which one blocking client never reaches; two cuts in three
 *              make every sync slow (0.5 or 1 ms, cv_set_sync_delay_us) so that calls gather
 *              behind it. Each ack is written to the pipe the moment its call
 *              is answered. Runs differ (the interleaving): the calibration run only sizes the
 *              range of N, and a cut beyond a run's end cuts at that end. Checked as powerloss,
 *              plus: no fence is answered twice on a resource.
 *   ioerr      In one process, the VFS fails the N-th write or sync (then `burst` in a row)
 *              for N = 1, 2, ... until the workload runs without reaching N. Each call must
 *              succeed or answer storage_error; the store must take changes again by itself;
 *              the memory must equal the journal (the state read before close equals the
 *              state after a reopen) and hold every acknowledged change.
 *
 * Seeds: HF_TEST_SEED (printed; default time-based) is the first seed, the cuts use
 * seed, seed+1, ...; HF_RELIABILITY_CUTS (default 60) cuts; HF_RELIABILITY_LONG=1: 1000 cuts
 * and, for ioerr, every N with bursts of 1 and 4 (CI form: every third N from 1 + seed % 3,
 * bursts of 1; HF_RELIABILITY_STEP changes the step; HF_RELIABILITY_N=N runs one N). A failure prints the variables that replay it
 * alone (a failing cut: "HF_TEST_SEED=S HF_RELIABILITY_CUTS=1"; with threads the same N and
 * tears, not the same interleaving: run it a few times). HF_RELIABILITY_LS=1 lists
 * the files of each copy (what survived the cut).
 */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "crashvfs.h"
#include "harness.h"

enum { A_GRANT = 1, A_CONFIRM, A_RELEASE, A_EXTEND, A_PUT, A_OPS };
enum { NRES = 6, MAXACK = 4096, MAXHOLD = 64, META_MAX = 64 * 1024 };
static const char *const names[NRES] = {"r0", "r1", "r2", "r3", "k0", "k1"};
#define T_END (HT_T0 + 30LL * 60 * 1000) /* the parent's clock: before any lease ends */

typedef struct ack {
	int32_t kind;
	int32_t n;
	char id[HF_ID_LEN + 1];
	int8_t res[2];
	int64_t fence[2];
	int64_t value; /* PUT: version; EXTEND: expires_at; A_OPS: operations counted */
} ack;
/* The child's threads write acks to one pipe: a write of at most PIPE_BUF bytes is atomic,
 * so records never interleave, and a power cut loses whole records only. */
_Static_assert(sizeof(ack) <= PIPE_BUF, "an ack must be written to the pipe atomically");

static uint64_t g_seed;
static char g_replay[96]; /* how to replay the failing case, for fail() */
static _Atomic int64_t g_now = HT_T0;

static int64_t fake_clock(void *ctx)
{
	(void)ctx;
	return g_now;
}

static void fail(const char *fmt, ...) HF_TEST_PRINTF(1, 2);
static void fail(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "reliability test FAILED (replay with %s): ", g_replay);
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

static void rm_tree(const char *dir)
{
	DIR *d = opendir(dir);
	if (!d)
		return;
	struct dirent *e;
	char p[1200];
	while ((e = readdir(d)))
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
			snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
			unlink(p);
		}
	closedir(d);
	rmdir(dir);
}

/* A private directory on tmpfs where there is one (the VFS keeps the model; the disk is
 * not what is tested). */
static void make_dir(char *out, size_t n, const char *what)
{
	const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
	snprintf(out, n, "%s/hf-reliab-%s-XXXXXX", base, what);
	if (!mkdtemp(out))
		fail("mkdtemp: %s", strerror(errno));
}

static hf_store *open_store(const char *path, int *rc_out, hf_error *err)
{
	hf_options opt;
	hf_options_init(&opt);
	opt.clock = fake_clock;
	char url[1100];
	snprintf(url, sizeof url, "file:%s", path);
	hf_store *st = NULL;
	*rc_out = hf_open(url, &opt, &st, err);
	return st;
}

/* ---- the workload ---- */

/* Where the workload reports each acknowledged change and each failed call. */
typedef struct sink {
	void (*acked)(struct sink *, const ack *);
	/* A call failed: returns once the workload may go on, or exits. */
	void (*failed)(struct sink *, int rc, const char *what);
} sink;

typedef struct mine {
	char id[HF_ID_LEN + 1], token[HF_TOKEN_LEN + 1];
} mine;

/* True when the call succeeded; else the sink hears of the failure. */
static bool outcome(sink *s, hf_reply *r, const char *what)
{
	int rc = r->error.code;
	if (rc == HF_OK)
		return true;
	s->failed(s, rc, what);
	return false;
}

/* The fixed workload: `steps` calls after declaring r0..r3; `big`: updates carry up to
 * 60 KiB of metadata (so that the WAL fills and checkpoints). Every call blocks. Several may
 * run at once on one store (one per thread, distinct `wseed`s): each keeps its own holds and
 * idempotency keys, the resources are shared. */
static void workload(hf_store *st, uint64_t wseed, int steps, bool big, sink *s)
{
	uint64_t rng = wseed;
	mine held[MAXHOLD];
	int nheld = 0, keys = 0;
	char *meta = malloc(META_MAX);
	if (!meta)
		fail("out of memory");
	for (int i = 0; i < 4; i++) {
		/* Declared until it works (a client retries after storage_error): later calls need
		 * them. */
		for (bool done = false; !done;) {
			hf_reply *r = ht_put(st, names[i], 1000, "{\"k\":1}", -1);
			if ((done = outcome(s, r, "put"))) {
				ack a = {.kind = A_PUT, .res = {(int8_t)i}, .value = r->resource->version};
				s->acked(s, &a);
			}
			hf_reply_free(r);
		}
	}
	for (int step = 0; step < steps; step++) {
		g_now += 1 + (int64_t)(ht_rand(&rng) % 500);
		uint64_t k = ht_rand(&rng) % 100;
		if (k < 40 || nheld == 0) {
			int n = 1 + (int)(ht_rand(&rng) % 2);
			int first = (int)(ht_rand(&rng) % NRES);
			char spec[96] = "";
			for (int c = 0; c < n; c++) {
				int ri = (first + c * 3) % NRES;
				char part[40];
				snprintf(part, sizeof part, "%s%s:%d%s", c ? "," : "", names[ri],
				         1 + (int)(ht_rand(&rng) % 3), ri >= 4 ? "@1000" : "");
				strcat(spec, part);
			}
			char key[48];
			ht_acq o = {.ttl_ms = 3600000, .owner = "reliab"};
			bool keyed = ht_rand(&rng) % 3 == 0;
			if (keyed) {
				snprintf(key, sizeof key, "key-%llx-%d", (unsigned long long)wseed, keys++);
				o.key = key;
			}
			hf_hold *h = NULL;
			int rc = ht_acquire(st, spec, &o, &h);
			if (rc == HF_OK && keyed) { /* the replay writes nothing: its answer is a barrier */
				hf_hold *again = NULL;
				rc = ht_acquire(st, spec, &o, &again);
				if (rc == HF_OK && (strcmp(again->id, h->id) || !again->replayed))
					fail("replay answered another hold");
				hf_hold_free(again);
			}
			if (rc != HF_OK) {
				hf_hold_free(h);
				s->failed(s, rc, "acquire");
				continue;
			}
			ack a = {.kind = A_GRANT, .n = (int32_t)h->n_parts};
			memcpy(a.id, h->id, sizeof a.id);
			for (size_t p = 0; p < h->n_parts && p < 2; p++) {
				a.res[p] = (int8_t)res_index(h->parts[p].resource);
				a.fence[p] = h->parts[p].fence;
			}
			s->acked(s, &a);
			if (nheld < MAXHOLD) {
				memcpy(held[nheld].id, h->id, sizeof held[nheld].id);
				memcpy(held[nheld].token, h->token, sizeof held[nheld].token);
				nheld++;
			}
			hf_hold_free(h);
		} else if (k < 80) {
			int i = (int)(ht_rand(&rng) % (uint64_t)nheld);
			hf_op op = k < 55 ? HF_OP_CONFIRM : k < 70 ? HF_OP_RELEASE : HF_OP_EXTEND;
			hf_reply *r = ht_hold_op(st, op, held[i].id, held[i].token, 3600000);
			if (r->error.code == HF_EENDED) {
				hf_reply_free(r);
				continue; /* released earlier by a call whose answer was lost */
			}
			if (outcome(s, r, "hold op")) {
				ack a = {.kind = op == HF_OP_CONFIRM ? A_CONFIRM
				                 : op == HF_OP_RELEASE ? A_RELEASE
				                                       : A_EXTEND};
				memcpy(a.id, held[i].id, sizeof a.id);
				a.value = r->hold->expires_at_ms;
				s->acked(s, &a);
			}
			hf_reply_free(r);
			if (op == HF_OP_RELEASE)
				held[i] = held[--nheld];
		} else if (k < 90) {
			int ri = (int)(ht_rand(&rng) % 4);
			size_t len = big ? 1024 + (size_t)(ht_rand(&rng) % (60 * 1024)) : 64;
			int o = snprintf(meta, META_MAX, "{\"pad\":\"");
			memset(meta + o, 'a' + (int)(ht_rand(&rng) % 26), len);
			snprintf(meta + o + len, META_MAX - (size_t)o - len, "\"}");
			hf_reply *r = ht_put(st, names[ri], 1000, meta, -1);
			if (outcome(s, r, "put")) {
				ack a = {.kind = A_PUT, .res = {(int8_t)ri}, .value = r->resource->version};
				s->acked(s, &a);
			}
			hf_reply_free(r);
		} else {
			hf_reply *r = ht_events(st, ht_rand(&rng) % 50, 20);
			outcome(s, r, "events");
			hf_reply_free(r);
		}
	}
	free(meta);
}

/* ---- checking a store against what was acknowledged ---- */

typedef struct expect {
	char id[HF_ID_LEN + 1];
	int n;
	int8_t res[2];
	int64_t fence[2];
	bool confirmed, released;
	int64_t expires;
} expect;

/* Checks the open store `st` against the acknowledgements. Their order is the order of the
 * answers of one client; across concurrent clients only a hold's own changes (one client's)
 * keep their order, hence the maxima. */
static void verify(hf_store *st, const ack *acks, int nacks, const char *where)
{
	static expect ex[MAXACK];
	int nex = 0;
	int64_t version[NRES] = {0}, max_fence[NRES] = {0};
	for (int i = 0; i < nacks; i++) {
		const ack *a = &acks[i];
		if (a->kind == A_PUT) {
			if (a->value > version[a->res[0]])
				version[a->res[0]] = a->value;
			continue;
		}
		if (a->kind == A_GRANT) {
			expect *e = &ex[nex++];
			memset(e, 0, sizeof *e);
			memcpy(e->id, a->id, sizeof e->id);
			e->n = a->n;
			for (int p = 0; p < a->n && p < 2; p++) {
				e->res[p] = a->res[p];
				e->fence[p] = a->fence[p];
				if (a->fence[p] > max_fence[a->res[p]])
					max_fence[a->res[p]] = a->fence[p];
				/* A fence is answered once per resource (concurrent grants too). */
				for (int j = 0; j < nex - 1; j++)
					for (int q = 0; q < ex[j].n && q < 2; q++)
						if (ex[j].res[q] == a->res[p] && ex[j].fence[q] == a->fence[p])
							fail("%s: holds %s and %s both answered fence %lld on %s", where,
							     ex[j].id, a->id, (long long)a->fence[p], names[a->res[p]]);
			}
			continue;
		}
		for (int j = 0; j < nex; j++)
			if (strcmp(ex[j].id, a->id) == 0) {
				if (a->kind == A_CONFIRM)
					ex[j].confirmed = true;
				else if (a->kind == A_RELEASE)
					ex[j].released = true;
				else if (a->kind == A_EXTEND && a->value > ex[j].expires)
					ex[j].expires = a->value;
			}
	}
	for (int j = 0; j < nex; j++) {
		expect *e = &ex[j];
		hf_reply *r = ht_get_hold(st, e->id);
		if (r->error.code != HF_OK)
			fail("%s: acknowledged hold %s: %s (%s)", where, e->id, hf_err_name(r->error.code),
			     r->error.message);
		hf_hold *h = r->hold;
		if ((int)h->n_parts != e->n)
			fail("%s: hold %s has %zu parts, acknowledged %d", where, e->id, h->n_parts, e->n);
		for (int p = 0; p < e->n && p < 2; p++)
			if (res_index(h->parts[p].resource) != e->res[p] || h->parts[p].fence != e->fence[p])
				fail("%s: hold %s part %d: %s fence %lld, acknowledged %s fence %lld", where,
				     e->id, p, h->parts[p].resource, (long long)h->parts[p].fence,
				     names[e->res[p]], (long long)e->fence[p]);
		bool ok = e->released  ? h->state == HF_HOLD_RELEASED
		          : e->confirmed ? h->state == HF_HOLD_CONFIRMED || h->state == HF_HOLD_RELEASED
		                         : h->state != HF_HOLD_EXPIRED;
		if (!ok)
			fail("%s: hold %s is %s; acknowledged: %s", where, e->id,
			     hf_hold_state_name(h->state),
			     e->released ? "released" : e->confirmed ? "confirmed" : "granted");
		if (h->state == HF_HOLD_TENTATIVE && h->expires_at_ms < e->expires)
			fail("%s: hold %s expires at %lld, acknowledged an extension to %lld", where, e->id,
			     (long long)h->expires_at_ms, (long long)e->expires);
		hf_reply_free(r);
	}
	for (int i = 0; i < 4; i++) {
		ht_res res = ht_res_get(st, names[i]);
		if (version[i] && (res.rc != HF_OK || res.version < version[i]))
			fail("%s: resource %s: %s version %lld, acknowledged version %lld", where, names[i],
			     hf_err_name(res.rc), (long long)res.version, (long long)version[i]);
	}
	/* Events: gap-free from 1, a hold.granted for every acknowledged grant. */
	uint64_t after = 0, last = 0;
	static bool seen[MAXACK];
	memset(seen, 0, sizeof seen);
	for (;;) {
		hf_reply *r = ht_events(st, after, 1000);
		if (r->error.code != HF_OK)
			fail("%s: events: %s", where, r->error.message);
		last = r->last_seq;
		for (size_t i = 0; i < r->n_events; i++) {
			const hf_event *ev = &r->events[i];
			if (ev->seq != after + 1)
				fail("%s: event %llu follows %llu", where, (unsigned long long)ev->seq,
				     (unsigned long long)after);
			after = ev->seq;
			if (strcmp(ev->type, "hold.granted") == 0 && ev->hold_id)
				for (int j = 0; j < nex; j++)
					if (strcmp(ex[j].id, ev->hold_id) == 0)
						seen[j] = true;
		}
		bool done = r->n_events == 0;
		hf_reply_free(r);
		if (done)
			break;
	}
	if (after != last)
		fail("%s: events end at %llu, last durable %llu", where, (unsigned long long)after,
		     (unsigned long long)last);
	for (int j = 0; j < nex; j++)
		if (!seen[j])
			fail("%s: no hold.granted event for acknowledged hold %s", where, ex[j].id);
	/* New grants: fences above every fence answered. */
	for (int i = 0; i < NRES; i++) {
		char spec[32];
		snprintf(spec, sizeof spec, "%s:1%s", names[i], i >= 4 ? "@1000" : "");
		hf_hold *h = NULL;
		ht_acq o = {.ttl_ms = 1000, .owner = "verify"};
		int rc = ht_acquire(st, spec, &o, &h);
		if (i < 4 && !version[i] && rc == HF_ENORESOURCE)
			continue; /* never declared before the cut */
		if (rc != HF_OK)
			fail("%s: a new grant on %s: %s", where, names[i], hf_err_name(rc));
		if (h->parts[0].fence <= max_fence[i])
			fail("%s: new grant on %s got fence %lld, at or below answered fence %lld", where,
			     names[i], (long long)h->parts[0].fence, (long long)max_fence[i]);
		hf_hold_free(h);
	}
}

/* ---- power loss ---- */

struct child_sink {
	sink base;
	int fd;
};

/* Sent the moment the call is answered (from any of the child's threads: one atomic write). */
static void child_acked(sink *s, const ack *a)
{
	struct child_sink *c = (struct child_sink *)s;
	if (write(c->fd, a, sizeof *a) != (ssize_t)sizeof *a)
		_exit(3);
}

static void child_failed(sink *s, int rc, const char *what)
{
	(void)s;
	fprintf(stderr, "powerloss child: %s: %s\n", what, hf_err_name(rc));
	_exit(20);
}

/* What one client of the child runs. Clients are detached threads counted down in
 * g_clients_running: a cut by one client must not find another finished and not joined
 * (ThreadSanitizer's _exit would report it as leaked). */
static pthread_mutex_t g_clients_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_clients_done = PTHREAD_COND_INITIALIZER;
static int g_clients_running;

struct client {
	hf_store *st;
	uint64_t wseed;
	int steps;
	sink *s;
};

static void *client_main(void *arg)
{
	struct client *c = arg;
	workload(c->st, c->wseed, c->steps, true, c->s);
	pthread_mutex_lock(&g_clients_lock);
	if (--g_clients_running == 0)
		pthread_cond_signal(&g_clients_done);
	pthread_mutex_unlock(&g_clients_lock);
	return NULL;
}

/* The child: `threads` clients (1: the fixed, deterministic run) of `steps` calls each on one
 * store, with the power cut at operation `cut`, every sync taking `sync_delay_us` more
 * (cv_set_sync_delay_us). A run that ends before its cut (0: never) sends A_OPS with the
 * operations it made, then cuts the power. */
static void child_main(const char *store, const char *copy, long cut, uint64_t seed, int fd,
                       int steps, int threads, long sync_delay_us)
{
	if (cv_register() != 0)
		_exit(2);
	cv_set_cut(cut, seed, copy);
	cv_set_sync_delay_us(sync_delay_us);
	g_now = HT_T0;
	int rc;
	hf_error err;
	hf_store *st = open_store(store, &rc, &err);
	if (rc != HF_OK) {
		fprintf(stderr, "powerloss child: open: %s\n", err.message);
		_exit(21);
	}
	struct child_sink cs = {{child_acked, child_failed}, fd};
	struct client clients[64];
	if (threads > (int)(sizeof clients / sizeof clients[0]))
		threads = (int)(sizeof clients / sizeof clients[0]);
	pthread_attr_t attr;
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	g_clients_running = threads;
	for (int t = 0; t < threads; t++) {
		clients[t] = (struct client){.st = st, .wseed = 20261129 + (uint64_t)t,
		                             .steps = steps, .s = &cs.base};
		pthread_t thread;
		if (threads == 1)
			client_main(&clients[t]);
		else if ((errno = pthread_create(&thread, &attr, client_main, &clients[t])))
			fail("pthread_create: %s", strerror(errno));
	}
	pthread_attr_destroy(&attr);
	pthread_mutex_lock(&g_clients_lock);
	while (g_clients_running > 0)
		pthread_cond_wait(&g_clients_done, &g_clients_lock);
	pthread_mutex_unlock(&g_clients_lock);
	ack a = {.kind = A_OPS, .value = cv_ops()};
	child_acked(&cs.base, &a);
	cv_cut_now();
}

/* Runs the child (see child_main). Returns the acknowledgements; *ops is the operations the
 * run made when it ended before its cut, else -1. */
static int run_child(const char *store, const char *copy, long cut, uint64_t seed, ack *acks,
                     int steps, int threads, long sync_delay_us, long *ops)
{
	int pfd[2];
	if (pipe(pfd) != 0)
		fail("pipe: %s", strerror(errno));
	fflush(NULL);
	pid_t pid = fork();
	if (pid < 0)
		fail("fork: %s", strerror(errno));
	if (pid == 0) {
		close(pfd[0]);
		child_main(store, copy, cut, seed, pfd[1], steps, threads, sync_delay_us);
	}
	close(pfd[1]);
	int n = 0;
	ack a;
	ssize_t r;
	*ops = -1;
	while ((r = read(pfd[0], &a, sizeof a)) == (ssize_t)sizeof a) {
		if (a.kind == A_OPS)
			*ops = a.value;
		else if (n < MAXACK)
			acks[n++] = a;
		else
			fail("more than %d acknowledged changes", MAXACK);
	}
	close(pfd[0]);
	int status;
	waitpid(pid, &status, 0);
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		fail("child for cut %ld ended with status %d", cut, status);
	return n;
}

static void list_copy(const char *copy)
{
	if (!getenv("HF_RELIABILITY_LS"))
		return;
	char cmd[700];
	snprintf(cmd, sizeof cmd, "ls -l %s", copy);
	if (system(cmd) != 0)
		fail("ls");
}

/* With threads > 1 the runs differ (the threads' interleaving): the calibration run only
 * tells roughly how many operations a run makes, and a cut beyond a run's end is that run's
 * end. */
static int powerloss(uint64_t seed0, int cuts, int steps, int threads)
{
	static ack acks[MAXACK];
	char dir[512], copy[512], store[600], copied[600];
	make_dir(dir, sizeof dir, "live");
	make_dir(copy, sizeof copy, "copy");
	snprintf(store, sizeof store, "%s/store.db", dir);
	snprintf(copied, sizeof copied, "%s/store.db", copy);
	/* Calibration: how many operations the whole workload makes. */
	g_seed = seed0;
	snprintf(g_replay, sizeof g_replay, "HF_TEST_SEED=%llu", (unsigned long long)seed0);
	long total;
	run_child(store, copy, 0, seed0, acks, steps, threads, 0, &total);
	if (total <= 0)
		fail("calibration run sent no count");
	list_copy(copy);
	printf("powerloss: workload of %d clients x %d calls makes %ld writes/syncs/renames\n",
	       threads, steps, total);
	int opened_new = 0, ended = 0;
	long acked = 0;
	for (int i = 0; i < cuts; i++) {
		uint64_t seed = seed0 + (uint64_t)i;
		g_seed = seed;
		snprintf(g_replay, sizeof g_replay, "HF_TEST_SEED=%llu HF_RELIABILITY_CUTS=1%s",
		         (unsigned long long)seed, threads > 1 ? " (not exactly: threads)" : "");
		uint64_t r = seed;
		r = ht_rand(&r);
		/* One cut in five falls among the first 60 operations: creating the store. */
		long cut = 1 + (long)((r >> 40) % 5 == 0 ? r % 60 : r % (uint64_t)total);
		rm_tree(dir);
		rm_tree(copy);
		mkdir(dir, 0700);
		mkdir(copy, 0700);
		/* Several clients: two cuts in three with syncs that take 0.5 or 1 ms, during which
		 * the other clients' calls gather for the next commit (on tmpfs each call would
		 * mostly find the writer idle); the third with instant ones. */
		long delay = threads > 1 ? (long)(seed % 3) * 500 : 0, ops;
		int n = run_child(store, copy, cut, seed, acks, steps, threads, delay, &ops);
		bool had_store = access(copied, F_OK) == 0;
		list_copy(copy);
		int rc;
		hf_error err;
		g_now = T_END;
		hf_store *st = open_store(copied, &rc, &err);
		if (rc != HF_OK)
			fail("cut at operation %ld of %ld: the store does not open: %s (%s)", cut, total,
			     hf_err_name(rc), err.message);
		char where[64];
		snprintf(where, sizeof where, "cut at operation %ld", cut);
		verify(st, acks, n, where);
		hf_close(st);
		opened_new += !had_store;
		ended += ops >= 0;
		acked += n;
		printf("powerloss: seed %llu: cut at operation %ld of %ld%s: %d acknowledged changes "
		       "kept%s%s\n",
		       (unsigned long long)seed, cut, total, delay ? ", slow fsyncs" : "", n,
		       had_store ? "" : " (no store yet)",
		       ops >= 0 ? " (the run ended first: cut at its end)" : "");
	}
	printf("powerloss: %d cuts checked (%d before the store existed, %d at a run's end), %ld "
	       "acknowledged changes verified\n",
	       cuts, opened_new, ended, acked);
	rm_tree(dir);
	rm_tree(copy);
	return 0;
}

/* ---- I/O errors ---- */

struct io_sink {
	sink base;
	hf_store *st;
	ack *acks;
	int n;
	int storage_errors;
};

static void io_acked(sink *s, const ack *a)
{
	struct io_sink *c = (struct io_sink *)s;
	if (c->n < MAXACK)
		c->acks[c->n++] = *a;
}

/* A failed call: storage_error only; then the store must take changes again by itself. */
static void io_failed(sink *s, int rc, const char *what)
{
	struct io_sink *c = (struct io_sink *)s;
	if (rc != HF_ESTORAGE)
		fail("%s answered %s under an I/O error (storage_error expected)", what,
		     hf_err_name(rc));
	c->storage_errors++;
	int64_t until = ht_mono_ms() + 15000;
	while (hf_store_health(c->st, NULL) != HF_OK) {
		if (ht_mono_ms() > until)
			fail("the store did not take changes again within 15 s of the fault");
		ht_sleep_ms(10);
	}
}

/* A store's visible state as text, to compare memory with the journal. */
static char *snapshot(hf_store *st)
{
	size_t cap = 1 << 20, len = 0;
	char *out = malloc(cap);
	if (!out)
		fail("out of memory");
	out[0] = '\0';
	hf_request q;
	hf_request_init(&q, HF_OP_LIST_HOLDS);
	q.limit = HF_LIST_MAX;
	hf_reply *r = NULL;
	if (hf_call(st, &q, &r) != HF_OK)
		fail("list holds: %s", r->error.message);
	for (size_t i = 0; i < r->n_holds; i++) {
		char *j = hf_hold_json(&r->holds[i]);
		len += (size_t)snprintf(out + len, cap - len, "%s\n", j ? j : "?");
		free(j);
	}
	hf_reply_free(r);
	hf_request_init(&q, HF_OP_LIST_RESOURCES);
	q.limit = HF_LIST_MAX;
	if (hf_call(st, &q, &r) != HF_OK)
		fail("list resources: %s", r->error.message);
	for (size_t i = 0; i < r->n_resources; i++) {
		char *j = hf_resource_json(&r->resources[i]);
		len += (size_t)snprintf(out + len, cap - len, "%s\n", j ? j : "?");
		free(j);
	}
	hf_reply_free(r);
	snprintf(out + len, cap - len, "last_seq %llu\n", (unsigned long long)ht_last_seq(st));
	return out;
}

static int ioerr(int steps, bool longer)
{
	static ack acks[MAXACK];
	if (cv_register() != 0)
		fail("cannot register the VFS");
	char dir[512], store[600];
	make_dir(dir, sizeof dir, "ioerr");
	snprintf(store, sizeof store, "%s/store.db", dir);
	long bursts[] = {1, 4};
	int points = 0, reported = 0, open_failed = 0;
	long only = getenv("HF_RELIABILITY_N") ? atol(getenv("HF_RELIABILITY_N")) : 0;
	/* CI form: every third N (from 1 + seed % 3); long form: every N. */
	long stride = longer ? 1 : 3;
	if (!longer && getenv("HF_RELIABILITY_STEP"))
		stride = atol(getenv("HF_RELIABILITY_STEP")) > 0 ? atol(getenv("HF_RELIABILITY_STEP")) : 1;
	for (int b = 0; b < (longer ? 2 : 1); b++) {
		for (long n = only ? only : 1 + (long)(g_seed % stride); !only || n == only;
		     n += stride) {
			snprintf(g_replay, sizeof g_replay, "HF_RELIABILITY_N=%ld%s", n,
			         b ? " HF_RELIABILITY_LONG=1" : "");
			rm_tree(dir);
			mkdir(dir, 0700);
			g_now = HT_T0;
			cv_set_fail(n, bursts[b]);
			int rc;
			hf_error err;
			hf_store *st = open_store(store, &rc, &err);
			struct io_sink s = {{io_acked, io_failed}, st, acks, 0, 0};
			long failed = 0;
			if (rc != HF_OK) {
				if (rc != HF_ESTORAGE)
					fail("N=%ld burst %ld: open answered %s: %s", n, bursts[b],
					     hf_err_name(rc), err.message);
				open_failed++;
				failed = cv_failed();
				cv_set_fail(0, 0);
				st = open_store(store, &rc, &err);
				if (rc != HF_OK)
					fail("N=%ld burst %ld: the store does not open after a failed open: %s",
					     n, bursts[b], err.message);
				s.st = st;
			}
			workload(st, 20261129, steps, false, &s.base);
			failed += cv_failed();
			cv_set_fail(0, 0);
			g_now = T_END;
			char *before = snapshot(st);
			hf_close(st);
			st = open_store(store, &rc, &err);
			if (rc != HF_OK)
				fail("N=%ld burst %ld: the store does not reopen: %s", n, bursts[b],
				     err.message);
			char *after = snapshot(st);
			if (strcmp(before, after) != 0)
				fail("N=%ld burst %ld: memory differed from the journal:\n-- memory\n%s-- "
				     "journal\n%s",
				     n, bursts[b], before, after);
			free(before);
			free(after);
			char where[64];
			snprintf(where, sizeof where, "N=%ld burst %ld", n, bursts[b]);
			verify(st, acks, s.n, where);
			hf_close(st);
			if (failed == 0)
				break; /* the workload ran without reaching the N-th operation */
			points++;
			reported += s.storage_errors > 0;
		}
	}
	printf("ioerr: %d fault points (every %ld-th N, %s): %d runs answered storage_error, %d "
	       "failed the open\n",
	       points, stride, longer ? "bursts of 1 and 4" : "burst 1", reported, open_failed);
	rm_tree(dir);
	return 0;
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	const char *mode = argc > 1 ? argv[1] : "powerloss";
	bool longer = getenv("HF_RELIABILITY_LONG") && atoi(getenv("HF_RELIABILITY_LONG")) > 0;
	g_seed = ht_seed();
	printf("%s: HF_TEST_SEED=%llu%s\n", mode, (unsigned long long)g_seed,
	       longer ? " (long form)" : "");
	bool concurrent = strcmp(mode, "powerloss_concurrent") == 0;
	if (concurrent || strcmp(mode, "powerloss") == 0) {
		int cuts = longer ? 1000 : 60;
		if (getenv("HF_RELIABILITY_CUTS"))
			cuts = atoi(getenv("HF_RELIABILITY_CUTS"));
		int threads = concurrent ? 8 : 1;
		if (concurrent && getenv("HF_RELIABILITY_THREADS"))
			threads = atoi(getenv("HF_RELIABILITY_THREADS"));
		int calls = concurrent ? 40 : 250;
		if (concurrent && getenv("HF_RELIABILITY_CALLS"))
			calls = atoi(getenv("HF_RELIABILITY_CALLS"));
		return powerloss(g_seed, cuts, calls, threads < 1 ? 1 : threads);
	}
	if (strcmp(mode, "ioerr") == 0)
		return ioerr(40, longer);
	fprintf(stderr, "usage: %s powerloss|powerloss_concurrent|ioerr\n", argv[0]);
	return 2;
}
