/*
 * run.c — `holdfast run --lock KEY -- COMMAND...`: a distributed flock(1). Takes a lock (an
 * implicit resource), keeps it extended with the library's watchdog while the command runs,
 * releases it after, passes the command's exit code through, and stops the command if the
 * lock is lost.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

#define RUN_DEFAULT_GRACE_MS 5000

static const char run_usage[] =
	"usage: holdfast run --lock KEY [options] [--] COMMAND [ARGS...]\n"
	"\n"
	"Runs COMMAND while holding the lock KEY on the server: takes it (waiting by default),\n"
	"extends it every TTL/3 while COMMAND runs, releases it when COMMAND exits, and exits\n"
	"with COMMAND's exit code (128+N if a signal N ended it). If the lock is lost (an\n"
	"extension is refused, or the lease runs out while the server is unreachable), COMMAND\n"
	"gets SIGTERM, then SIGKILL after the grace time, and holdfast exits with 75.\n"
	"\n"
	"  --lock KEY              the lock's name (an implicit resource, gone when idle)\n"
	"  --ttl MS                lease, renewed every MS/3 (default 30000)\n"
	"  --wait MS               give up after waiting MS for the lock; 0 fails at once\n"
	"                          (default: wait as long as it takes)\n"
	"  --permits N             a semaphore: up to N runs at once on KEY (default 1)\n"
	"  --owner NAME            the holder's name (default $HOLDFAST_OWNER, else user@host)\n"
	"  --grace MS              SIGTERM to SIGKILL delay when the lock is lost (default 5000)\n"
	"  --conflict-exit-code N  exit code when the lock cannot be taken (default 2)\n"
	"\n"
	"COMMAND sees HOLDFAST_LOCK, HOLDFAST_HOLD_ID and HOLDFAST_FENCE in its environment: pass\n"
	"the fence to what the lock protects so that it can refuse a late, former holder.\n"
	"SIGINT, SIGTERM, SIGHUP and SIGQUIT sent to holdfast are forwarded to COMMAND.\n"
	"\n"
	"exit codes: COMMAND's code; 75 lock lost; 126 COMMAND not executable; 127 COMMAND not\n"
	"found; otherwise the codes of every holdfast command (2 lock not available, 5 server\n"
	"unreachable, ...)\n";

/* Self-pipes: signal handlers and the watchdog's thread only write a byte. */
static int sig_pipe[2] = {-1, -1};
static int lost_pipe[2] = {-1, -1};

static void on_signal(int sig)
{
	int saved = errno;
	unsigned char b = (unsigned char)sig;
	ssize_t w = write(sig_pipe[1], &b, 1);
	(void)w;
	errno = saved;
}

/* Called once from the watchdog's thread. The reason is copied for the main thread; the
 * pipe write orders it before the main thread's read. */
static char lost_why[HF_MESSAGE_MAX + 64];

static void on_lost(void *arg, const hf_error *why)
{
	(void)arg;
	snprintf(lost_why, sizeof(lost_why), "%s (%s)", why->message, hf_err_name(why->code));
	unsigned char b = 1;
	ssize_t w = write(lost_pipe[1], &b, 1);
	(void)w;
}

static int make_pipe(int fds[2])
{
	if (pipe(fds) != 0)
		return -1;
	for (int i = 0; i < 2; i++) {
		fcntl(fds[i], F_SETFD, FD_CLOEXEC);
		fcntl(fds[i], F_SETFL, fcntl(fds[i], F_GETFL) | O_NONBLOCK);
	}
	return 0;
}

static void close_pipe(int fds[2])
{
	for (int i = 0; i < 2; i++) {
		if (fds[i] >= 0)
			close(fds[i]);
		fds[i] = -1;
	}
}

static int64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Takes the lock: once with --wait, else in rounds of the longest wait until granted. */
static int take_lock(hf_store *store, const hf_acquire_req *a, bool forever, hf_hold **hold,
                     hf_error *err)
{
	for (;;) {
		int rc = hf_acquire(store, a, hold, err);
		if (rc != HF_ETIMEDOUT || !forever)
			return rc;
	}
}

static const int forwarded[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT};

/* Starts COMMAND. Returns its pid, or -1 with *exit_code set if it could not be run. */
static pid_t start_command(char **cmd, const sigset_t *child_mask, int *exit_code)
{
	int exec_pipe[2];
	if (pipe(exec_pipe) != 0) {
		fprintf(stderr, "holdfast run: pipe: %s\n", strerror(errno));
		*exit_code = CLI_EXIT_SERVER;
		return -1;
	}
	fcntl(exec_pipe[0], F_SETFD, FD_CLOEXEC);
	fcntl(exec_pipe[1], F_SETFD, FD_CLOEXEC);
	pid_t pid = fork();
	if (pid < 0) {
		fprintf(stderr, "holdfast run: fork: %s\n", strerror(errno));
		close(exec_pipe[0]);
		close(exec_pipe[1]);
		*exit_code = CLI_EXIT_SERVER;
		return -1;
	}
	if (pid == 0) {
		/* The child: only async-signal-safe calls until exec. */
		for (size_t i = 0; i < sizeof(forwarded) / sizeof(forwarded[0]); i++)
			signal(forwarded[i], SIG_DFL);
		signal(SIGCHLD, SIG_DFL);
		signal(SIGPIPE, SIG_DFL);
		sigprocmask(SIG_SETMASK, child_mask, NULL);
		execvp(cmd[0], cmd);
		int e = errno;
		ssize_t w = write(exec_pipe[1], &e, sizeof(e));
		(void)w;
		_exit(e == ENOENT ? CLI_EXIT_NOT_FOUND_EXEC : CLI_EXIT_CANNOT_EXEC);
	}
	close(exec_pipe[1]);
	int e;
	ssize_t r;
	do
		r = read(exec_pipe[0], &e, sizeof(e));
	while (r < 0 && errno == EINTR);
	close(exec_pipe[0]);
	if (r == (ssize_t)sizeof(e)) {
		/* exec failed: the child has exited (or is exiting); reap it. */
		while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
			;
		fprintf(stderr, "holdfast run: cannot run '%s': %s\n", cmd[0], strerror(e));
		*exit_code = e == ENOENT ? CLI_EXIT_NOT_FOUND_EXEC : CLI_EXIT_CANNOT_EXEC;
		return -1;
	}
	return pid;
}

/* Waits for COMMAND, forwarding signals and stopping it if the lock is lost. Returns its
 * wait status; *lost tells whether the loss was seen. */
static int supervise(pid_t pid, const char *key, int64_t grace_ms, bool *lost)
{
	int64_t kill_at = -1; /* monotonic ms of the SIGKILL, once SIGTERM was sent */
	int status = 0;
	for (;;) {
		int timeout = -1;
		if (kill_at >= 0) {
			int64_t left = kill_at - mono_ms();
			timeout = left > 0 ? (int)left : 0;
		}
		struct pollfd p[2] = {{.fd = sig_pipe[0], .events = POLLIN},
		                      {.fd = lost_pipe[0], .events = POLLIN}};
		int n = poll(p, 2, timeout);
		if (n < 0 && errno != EINTR) {
			fprintf(stderr, "holdfast run: poll: %s\n", strerror(errno));
			n = 0;
		}
		if (p[1].revents & POLLIN) {
			unsigned char b;
			while (read(lost_pipe[0], &b, 1) > 0)
				;
			if (!*lost) {
				*lost = true;
				fprintf(stderr, "holdfast run: lost the lock '%s': %s; stopping the command\n",
				        key, lost_why);
				kill(pid, SIGTERM);
				kill_at = mono_ms() + grace_ms;
			}
		}
		if (p[0].revents & POLLIN) {
			unsigned char b;
			while (read(sig_pipe[0], &b, 1) > 0) {
				if (b != SIGCHLD)
					kill(pid, b);
			}
		}
		pid_t w = waitpid(pid, &status, WNOHANG);
		if (w == pid)
			return status;
		if (kill_at >= 0 && mono_ms() >= kill_at) {
			fprintf(stderr, "holdfast run: the command ignored SIGTERM for %" PRId64
			                " ms; sending SIGKILL\n", grace_ms);
			kill(pid, SIGKILL);
			kill_at = INT64_MAX; /* only once; the SIGCHLD ends the wait */
		}
	}
}

int cli_cmd_run(int argc, char **argv)
{
	static const struct option opts[] = {
		{"lock", required_argument, NULL, 'l'},
		{"ttl", required_argument, NULL, 't'},
		{"wait", required_argument, NULL, 'w'},
		{"permits", required_argument, NULL, 'p'},
		{"owner", required_argument, NULL, 'o'},
		{"grace", required_argument, NULL, 'g'},
		{"conflict-exit-code", required_argument, NULL, 'E'},
		CLI_COMMON_OPTS,
	};
	const char *key = NULL;
	int64_t ttl = CLI_DEFAULT_TTL_MS, wait = -1, permits = 1, grace = RUN_DEFAULT_GRACE_MS;
	int64_t conflict_code = CLI_EXIT_BUSY;
	const char *owner = cli_default_owner();
	int c;
	/* "+": options end at COMMAND, whose own options are its business. */
	while ((c = getopt_long(argc, argv, "+", opts, NULL)) != -1) {
		switch (c) {
		case 'l': key = optarg; break;
		case 'o': owner = optarg; break;
		case 't':
			if (!cli_parse_i64("run", "--ttl", optarg, 3, HF_TTL_MAX_MS, &ttl))
				return CLI_EXIT_USAGE;
			break;
		case 'w':
			if (!cli_parse_i64("run", "--wait", optarg, 0, HF_WAIT_MAX_MS, &wait))
				return CLI_EXIT_USAGE;
			break;
		case 'p':
			if (!cli_parse_i64("run", "--permits", optarg, 1, HF_CAPACITY_MAX, &permits))
				return CLI_EXIT_USAGE;
			break;
		case 'g':
			if (!cli_parse_i64("run", "--grace", optarg, 0, 3600000, &grace))
				return CLI_EXIT_USAGE;
			break;
		case 'E':
			if (!cli_parse_i64("run", "--conflict-exit-code", optarg, 0, 255, &conflict_code))
				return CLI_EXIT_USAGE;
			break;
		default:
			if (!cli_common_opt(c, optarg, run_usage))
				return cli_usage_error("run", "unknown option '%s'", argv[optind - 1]);
		}
	}
	if (!key)
		return cli_usage_error("run", "--lock KEY is required");
	if (optind >= argc)
		return cli_usage_error("run", "name the COMMAND to run");
	char **cmd = argv + optind;

	hf_store *store;
	int code = cli_open(&store);
	if (code)
		return code;
	hf_claim claim = {.name = key, .units = 1, .capacity = permits};
	hf_acquire_req a = {
		.owner = owner,
		.claims = &claim,
		.n_claims = 1,
		.ttl_ms = ttl,
		.wait_ms = wait < 0 ? HF_WAIT_MAX_MS : wait,
		.mode = HF_MODE_UNITS,
	};
	hf_hold *hold = NULL;
	hf_watchdog *wd = NULL;
	hf_error err;
	bool lost = false;
	sigset_t old_mask;
	sigprocmask(SIG_SETMASK, NULL, &old_mask);
	struct sigaction old_sa[sizeof(forwarded) / sizeof(forwarded[0]) + 1];
	bool handlers = false;

	int rc = take_lock(store, &a, wait < 0, &hold, &err);
	if (rc != HF_OK) {
		code = cli_fail("run", &err);
		if (code == CLI_EXIT_BUSY)
			code = (int)conflict_code;
		goto out_close;
	}
	if (cli_g.json) {
		/* The hold as taken (with its token, so a script can release it if we die). */
		cli_print_json(cli_hold_json(hold));
		fflush(stdout);
	}
	char fence[24];
	snprintf(fence, sizeof(fence), "%" PRId64, hold->n_parts ? hold->parts[0].fence : 0);
	/* Before any thread of ours could read the environment. */
	setenv("HOLDFAST_LOCK", key, 1);
	setenv("HOLDFAST_HOLD_ID", hold->id, 1);
	setenv("HOLDFAST_FENCE", fence, 1);

	if (make_pipe(sig_pipe) != 0 || make_pipe(lost_pipe) != 0) {
		fprintf(stderr, "holdfast run: pipe: %s\n", strerror(errno));
		code = CLI_EXIT_SERVER;
		goto out_release;
	}
	struct sigaction sa = {.sa_handler = on_signal};
	sigemptyset(&sa.sa_mask);
	sa.sa_flags = SA_RESTART | SA_NOCLDSTOP;
	for (size_t i = 0; i < sizeof(forwarded) / sizeof(forwarded[0]); i++)
		sigaction(forwarded[i], &sa, &old_sa[i]);
	sigaction(SIGCHLD, &sa, &old_sa[sizeof(forwarded) / sizeof(forwarded[0])]);
	handlers = true;

	rc = hf_watchdog_start(store, hold->id, hold->token, ttl, on_lost, NULL, &wd, &err);
	if (rc != HF_OK) {
		code = cli_fail("run", &err);
		goto out_release;
	}
	pid_t pid = start_command(cmd, &old_mask, &code);
	if (pid < 0)
		goto out_release;
	int status = supervise(pid, key, grace, &lost);
	/* A loss seen by the watchdog but not yet by us still counts: the command may have run
	 * part of its time without the lock. */
	if (hf_watchdog_lost(wd) && !lost) {
		lost = true;
		fprintf(stderr, "holdfast run: lost the lock '%s' while the command ran\n", key);
	}
	if (lost)
		code = CLI_EXIT_LOCK_LOST;
	else if (WIFEXITED(status))
		code = WEXITSTATUS(status);
	else if (WIFSIGNALED(status))
		code = 128 + WTERMSIG(status);
	else
		code = CLI_EXIT_SERVER;

out_release:
	if (wd)
		hf_watchdog_stop(wd);
	if (!lost) {
		hf_error rerr;
		if (hf_release(store, hold->id, hold->token, NULL, &rerr) != HF_OK) {
			fprintf(stderr, "holdfast run: releasing the lock '%s' failed: %s (%s)\n", key,
			        rerr.message, hf_err_name(rerr.code));
			if (code == CLI_EXIT_OK)
				code = cli_exit_code(rerr.code);
		}
	}
	hf_hold_free(hold);
out_close:
	if (handlers) {
		for (size_t i = 0; i < sizeof(forwarded) / sizeof(forwarded[0]); i++)
			sigaction(forwarded[i], &old_sa[i], NULL);
		sigaction(SIGCHLD, &old_sa[sizeof(forwarded) / sizeof(forwarded[0])], NULL);
	}
	close_pipe(sig_pipe);
	close_pipe(lost_pipe);
	hf_close(store);
	return code;
}
