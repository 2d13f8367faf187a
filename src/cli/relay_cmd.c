/*
 * relay_cmd.c — the `holdfast relay` and `holdfast consume` commands: their options, turned
 * into src/relay's options; the consumer's "apply" (print a JSON line, or run a command).
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli.h"
#include "relay.h"

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig)
{
	(void)sig;
	stop_requested = 1;
}

static void catch_stop_signals(void)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
}

/* ---- relay. ------------------------------------------------------------------------- */

static const char relay_usage[] =
    "usage: holdfast relay --to URL [options]\n"
    "\n"
    "Delivers every event of the store (--server/--engine) to RabbitMQ or Redis Streams, at\n"
    "least once and in order per resource. One relay per --name is active (a lease in the\n"
    "store); others wait as standbys. The checkpoint lives in the store. See docs/events.md.\n"
    "\n"
    "  --to URL            amqp://user:pass@host:port/vhost or redis://host:port\n"
    "  --name NAME         destination name: lease and checkpoint (default \"default\")\n"
    "  --exchange NAME     AMQP topic exchange (default " RELAY_DEFAULT_EXCHANGE ")\n"
    "  --partitions P      Redis streams, one per partition (default 8)\n"
    "  --stream-prefix S   Redis stream key prefix (default " RELAY_DEFAULT_STREAM_PREFIX ")\n"
    "  --maxlen N          Redis: trim each stream to about N entries (XADD MAXLEN ~)\n"
    "  --batch N           events per delivery and checkpoint, 1..1000 (default 100)\n"
    "  --lease-ms MS       lease TTL, extended every MS/3 (default 10000)\n"
    "  --backoff-max MS    cap of the retry backoff (default 5000)\n"
    "  --owner NAME        who this relay is, in the lease (default $HOLDFAST_OWNER or user@host)\n"
    "  --until-seq SEQ     exit once every event up to SEQ is delivered\n"
    "  --idle-exit MS      exit after MS with nothing to deliver\n"
    "  --from-floor        if retention trimmed events past the checkpoint, go on from the\n"
    "                      oldest kept (the range skipped is logged) instead of stopping\n"
    "\n"
    "exit codes: 0 stopped (SIGTERM/SIGINT, --until-seq, --idle-exit), 1 bad options,\n"
    "  5 the store cannot be opened, 6 the broker refused the login, 10 the checkpoint is\n"
    "  below the oldest event kept (events_trimmed) and --from-floor was not given\n";

enum {
	R_TO = 1,
	R_NAME,
	R_EXCHANGE,
	R_PARTS,
	R_PREFIX,
	R_MAXLEN,
	R_BATCH,
	R_LEASE,
	R_BACKOFF,
	R_OWNER,
	R_UNTIL,
	R_IDLE,
	R_FROM_FLOOR
};

static bool relay_opt(int c, const char *arg, struct relay_opts *o)
{
	int64_t v;
	switch (c) {
	case R_TO:
		o->dest.url = arg;
		return true;
	case R_NAME:
		o->name = arg;
		return true;
	case R_EXCHANGE:
		o->dest.exchange = arg;
		return true;
	case R_PREFIX:
		o->dest.stream_prefix = arg;
		return true;
	case R_OWNER:
		o->owner = arg;
		return true;
	case R_PARTS:
		if (!cli_parse_i64("relay", "--partitions", arg, 1, 65536, &v))
			return false;
		o->dest.partitions = (unsigned)v;
		return true;
	case R_MAXLEN:
		return cli_parse_i64("relay", "--maxlen", arg, 0, INT64_MAX, &o->dest.maxlen);
	case R_BATCH:
		if (!cli_parse_i64("relay", "--batch", arg, 1, HF_LIST_MAX, &v))
			return false;
		o->batch = (size_t)v;
		return true;
	case R_LEASE:
		return cli_parse_i64("relay", "--lease-ms", arg, 30, HF_TTL_MAX_MS, &o->lease_ms);
	case R_BACKOFF:
		return cli_parse_i64("relay", "--backoff-max", arg, 1, 3600000, &o->backoff_max_ms);
	case R_UNTIL:
		if (!cli_parse_i64("relay", "--until-seq", arg, 1, INT64_MAX, &v))
			return false;
		o->stop_after_seq = (uint64_t)v;
		return true;
	case R_IDLE:
		return cli_parse_i64("relay", "--idle-exit", arg, 1, INT64_MAX, &o->idle_exit_ms);
	case R_FROM_FLOOR:
		o->from_floor = true;
		return true;
	}
	return false;
}

int cli_cmd_relay(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"to", required_argument, NULL, R_TO},
	    {"name", required_argument, NULL, R_NAME},
	    {"exchange", required_argument, NULL, R_EXCHANGE},
	    {"partitions", required_argument, NULL, R_PARTS},
	    {"stream-prefix", required_argument, NULL, R_PREFIX},
	    {"maxlen", required_argument, NULL, R_MAXLEN},
	    {"batch", required_argument, NULL, R_BATCH},
	    {"lease-ms", required_argument, NULL, R_LEASE},
	    {"backoff-max", required_argument, NULL, R_BACKOFF},
	    {"owner", required_argument, NULL, R_OWNER},
	    {"until-seq", required_argument, NULL, R_UNTIL},
	    {"idle-exit", required_argument, NULL, R_IDLE},
	    {"from-floor", no_argument, NULL, R_FROM_FLOOR},
	    CLI_COMMON_OPTS,
	};
	struct relay_opts o;
	relay_opts_init(&o);
	o.owner = cli_default_owner();
	int c;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (cli_common_opt(c, optarg, relay_usage))
			continue;
		if (c == '?')
			return cli_usage_error("relay", "unknown option '%s'", argv[optind - 1]);
		if (!relay_opt(c, optarg, &o))
			return CLI_EXIT_USAGE;
	}
	if (optind < argc)
		return cli_usage_error("relay", "unexpected argument '%s'", argv[optind]);
	if (!o.dest.url)
		return cli_usage_error("relay", "--to URL is required");
	o.store_url = cli_g.url;
	o.stop = &stop_requested;
	catch_stop_signals();
	hf_error err = {0};
	int rc = relay_run(&o, &err);
	return rc == HF_OK ? CLI_EXIT_OK : cli_fail("relay", &err);
}

/* ---- consume. ----------------------------------------------------------------------- */

static const char consume_usage[] =
    "usage: holdfast consume --from URL --state FILE [options]\n"
    "\n"
    "Applies relayed events once each: by default prints each as a JSON line\n"
    "{\"resource\",\"revision\",\"seq\",\"event\"} on stdout; with --exec runs a command per\n"
    "event (the event JSON on its stdin; HF_RESOURCE, HF_REVISION, HF_SEQ in its environment;\n"
    "exit 0 = applied). A redelivered revision is skipped; a missing one is reported on stderr\n"
    "(msg=gap) and makes the exit code 8. See docs/events.md.\n"
    "\n"
    "  --from URL          amqp://user:pass@host:port/vhost or redis://host:port\n"
    "  --state FILE        SQLite file: the last revision applied per resource\n"
    "  --queue NAME        AMQP queue, or the Redis consumer group (default holdfast)\n"
    "  --bind KEY          AMQP binding key on the exchange, repeatable (default #)\n"
    "  --exchange NAME     AMQP topic exchange (default " RELAY_DEFAULT_EXCHANGE ")\n"
    "  --message-ttl MS    AMQP queue x-message-ttl (expired messages are dead-lettered)\n"
    "  --max-priority N    AMQP queue x-max-priority\n"
    "  --consumer NAME     Redis consumer name in the group (default consumer-1)\n"
    "  --partitions P      Redis streams to read (default 8)\n"
    "  --stream-prefix S   Redis stream key prefix (default " RELAY_DEFAULT_STREAM_PREFIX ")\n"
    "  --claim-idle MS     Redis: take over entries idle this long (default 30000)\n"
    "  --prefetch N        unacknowledged messages at once (default 10)\n"
    "  --max-attempts N    attempts before dead-lettering (default 5)\n"
    "  --backoff MS        first retry delay, doubled each attempt (default 100)\n"
    "  --exec CMD          run `sh -c CMD` per event instead of printing it\n"
    "  --declare-only      declare the queue and bindings (or the group) and exit\n"
    "  --idle-exit MS      exit after MS without a message\n"
    "\n"
    "exit codes: 0 stopped, 1 bad options, 5 broker unreachable (--declare-only, --idle-exit),\n"
    "  6 login refused, 7 state file failed, 8 gaps were seen, 9 messages were dead-lettered\n"
    "  (8 wins)\n";

enum {
	C_FROM = 1,
	C_STATE,
	C_QUEUE,
	C_BIND,
	C_EXCHANGE,
	C_TTL,
	C_PRIO,
	C_CONSUMER,
	C_PARTS,
	C_PREFIX,
	C_CLAIM,
	C_PREFETCH,
	C_ATTEMPTS,
	C_BACKOFF,
	C_EXEC,
	C_DECLARE,
	C_IDLE
};

#define CLI_EXIT_GAPS 8
#define CLI_EXIT_DEAD 9
#define MAX_BINDS 32

struct consume_cli {
	struct relay_consume_opts o;
	const char *binds[MAX_BINDS];
	const char *exec;
};

static int apply_print(void *arg, const char *resource, int64_t revision, uint64_t seq,
                       const char *json, hf_error *err)
{
	(void)arg;
	json_t *ev = json_loads(json, 0, NULL);
	json_t *line = json_pack("{s:s?, s:I, s:I, s:o?}", "resource", resource, "revision",
	                         (json_int_t)revision, "seq", (json_int_t)seq, "event", ev);
	char *text = line ? json_dumps(line, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
	json_decref(line);
	if (!text) {
		relay_err(err, HF_EINVAL, "event is not JSON");
		return HF_EINVAL;
	}
	int rc = puts(text) < 0 || fflush(stdout) != 0 ? HF_ESTORAGE : HF_OK;
	free(text);
	if (rc != HF_OK)
		relay_err(err, rc, "cannot write to stdout");
	return rc;
}

static int apply_exec(void *arg, const char *resource, int64_t revision, uint64_t seq,
                      const char *json, hf_error *err)
{
	const char *cmd = arg;
	int in[2];
	if (pipe(in) != 0) {
		relay_err(err, HF_EINTERNAL, "pipe: %s", strerror(errno));
		return HF_EINTERNAL;
	}
	fflush(stdout);
	pid_t pid = fork();
	if (pid == 0) {
		char buf[32];
		dup2(in[0], 0);
		close(in[0]);
		close(in[1]);
		setenv("HF_RESOURCE", resource ? resource : "", 1);
		snprintf(buf, sizeof(buf), "%" PRId64, revision);
		setenv("HF_REVISION", buf, 1);
		snprintf(buf, sizeof(buf), "%" PRIu64, seq);
		setenv("HF_SEQ", buf, 1);
		execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
		_exit(CLI_EXIT_CANNOT_EXEC);
	}
	close(in[0]);
	if (pid < 0) {
		close(in[1]);
		relay_err(err, HF_EINTERNAL, "fork: %s", strerror(errno));
		return HF_EINTERNAL;
	}
	/* SIGPIPE is ignored (main): a command that does not read its stdin just ends the write. */
	size_t len = strlen(json);
	(void)!write(in[1], json, len);
	(void)!write(in[1], "\n", 1);
	close(in[1]);
	int status;
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		return HF_OK;
	relay_err(err, HF_EINTERNAL, "command exited with %d",
	          WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
	return HF_EINTERNAL;
}

static bool consume_opt(int c, const char *arg, struct consume_cli *cc)
{
	struct relay_consume_opts *o = &cc->o;
	int64_t v;
	switch (c) {
	case C_FROM:
		o->url = arg;
		return true;
	case C_STATE:
		o->state_path = arg;
		return true;
	case C_QUEUE:
		o->queue = arg;
		return true;
	case C_EXCHANGE:
		o->exchange = arg;
		return true;
	case C_CONSUMER:
		o->consumer = arg;
		return true;
	case C_PREFIX:
		o->stream_prefix = arg;
		return true;
	case C_EXEC:
		cc->exec = arg;
		return true;
	case C_DECLARE:
		o->declare_only = true;
		return true;
	case C_BIND:
		if (o->n_binds == MAX_BINDS) {
			cli_usage_error("consume", "at most %d --bind options", MAX_BINDS);
			return false;
		}
		cc->binds[o->n_binds++] = arg;
		return true;
	case C_TTL:
		return cli_parse_i64("consume", "--message-ttl", arg, 1, INT32_MAX,
		                     &o->message_ttl_ms);
	case C_CLAIM:
		return cli_parse_i64("consume", "--claim-idle", arg, 1, INT64_MAX,
		                     &o->claim_idle_ms);
	case C_BACKOFF:
		return cli_parse_i64("consume", "--backoff", arg, 0, 3600000, &o->backoff_ms);
	case C_IDLE:
		return cli_parse_i64("consume", "--idle-exit", arg, 1, INT64_MAX, &o->idle_exit_ms);
	case C_PRIO:
		if (!cli_parse_i64("consume", "--max-priority", arg, 1, 255, &v))
			return false;
		o->max_priority = (int)v;
		return true;
	case C_PARTS:
		if (!cli_parse_i64("consume", "--partitions", arg, 1, 65536, &v))
			return false;
		o->partitions = (unsigned)v;
		return true;
	case C_PREFETCH:
		if (!cli_parse_i64("consume", "--prefetch", arg, 1, 65535, &v))
			return false;
		o->prefetch = (unsigned)v;
		return true;
	case C_ATTEMPTS:
		if (!cli_parse_i64("consume", "--max-attempts", arg, 1, 1000, &v))
			return false;
		o->max_attempts = (unsigned)v;
		return true;
	}
	return false;
}

int cli_cmd_consume(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"from", required_argument, NULL, C_FROM},
	    {"state", required_argument, NULL, C_STATE},
	    {"queue", required_argument, NULL, C_QUEUE},
	    {"bind", required_argument, NULL, C_BIND},
	    {"exchange", required_argument, NULL, C_EXCHANGE},
	    {"message-ttl", required_argument, NULL, C_TTL},
	    {"max-priority", required_argument, NULL, C_PRIO},
	    {"consumer", required_argument, NULL, C_CONSUMER},
	    {"partitions", required_argument, NULL, C_PARTS},
	    {"stream-prefix", required_argument, NULL, C_PREFIX},
	    {"claim-idle", required_argument, NULL, C_CLAIM},
	    {"prefetch", required_argument, NULL, C_PREFETCH},
	    {"max-attempts", required_argument, NULL, C_ATTEMPTS},
	    {"backoff", required_argument, NULL, C_BACKOFF},
	    {"exec", required_argument, NULL, C_EXEC},
	    {"declare-only", no_argument, NULL, C_DECLARE},
	    {"idle-exit", required_argument, NULL, C_IDLE},
	    CLI_COMMON_OPTS,
	};
	struct consume_cli cc = {.exec = NULL};
	relay_consume_opts_init(&cc.o);
	int c;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (cli_common_opt(c, optarg, consume_usage))
			continue;
		if (c == '?')
			return cli_usage_error("consume", "unknown option '%s'", argv[optind - 1]);
		if (!consume_opt(c, optarg, &cc))
			return CLI_EXIT_USAGE;
	}
	if (optind < argc)
		return cli_usage_error("consume", "unexpected argument '%s'", argv[optind]);
	if (!cc.o.url)
		return cli_usage_error("consume", "--from URL is required");
	if (!cc.o.state_path && !cc.o.declare_only)
		return cli_usage_error("consume", "--state FILE is required");
	cc.o.binds = cc.binds;
	cc.o.apply = cc.exec ? apply_exec : apply_print;
	cc.o.apply_arg = (void *)cc.exec;
	cc.o.stop = &stop_requested;
	catch_stop_signals();
	struct relay_consume_stats st;
	hf_error err = {0};
	int rc = relay_consume(&cc.o, &st, &err);
	if (!cc.o.declare_only)
		relay_log("info",
		          "msg=consumed applied=%" PRIu64 " duplicates=%" PRIu64 " gaps=%" PRIu64
		          " retries=%" PRIu64 " dead=%" PRIu64,
		          st.applied, st.duplicates, st.gaps, st.retries, st.dead);
	if (rc != HF_OK)
		return cli_fail("consume", &err);
	return st.gaps ? CLI_EXIT_GAPS : st.dead ? CLI_EXIT_DEAD : CLI_EXIT_OK;
}
