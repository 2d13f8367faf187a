/*
 * main.c — the `holdfast` command line: global options, the command table, exit codes, and
 * the JSON and human forms of holds, resources and events that every command prints.
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

struct cli_global cli_g;

static const char main_usage[] =
	"usage: holdfast [--server URL | --engine URL] [--json] COMMAND [ARGS...]\n"
	"\n"
	"Takes and manages holds, locks and semaphores on a holdfastd server.\n"
	"\n"
	"commands:\n"
	"  acquire RESOURCE[:UNITS]...   take a hold (all of them, or --any one)\n"
	"  extend ID TOKEN [--ttl MS]    renew a hold's lease\n"
	"  confirm ID TOKEN              keep a hold until released\n"
	"  release ID TOKEN              end a hold\n"
	"  get ID                        show a hold\n"
	"  list [--owner O] [...]        list holds\n"
	"  resources [get|put|delete]    list, show, declare or delete resources\n"
	"  events [--after SEQ] [-f]     read (or follow) the event log\n"
	"  stats                         the server's lock statistics\n"
	"  run --lock KEY -- COMMAND...  run a command under a distributed lock\n"
	"  saga start|get|list|resume    start and follow sagas (docs/sagas.md)\n"
	"  saga-type put|get NAME        register or show a saga type\n"
	"  tx start|get                  TCC transactions: try, then confirm or cancel all\n"
	"  relay --to URL                deliver the event log to RabbitMQ or Redis Streams\n"
	"  consume --from URL            apply relayed events once each (print or run a command)\n"
	"  replay                        rebuild the state from the events; compare with the live one\n"
	"  project --db FILE [VIEW NAME] read models: bookings per owner, availability per resource\n"
	"  request --to amqp://... BODY  request/reply over RabbitMQ (reply queue, correlation id)\n"
	"\n"
	"global options (also accepted after the command):\n"
	"  --server URL   holdfastd to talk to (default $HOLDFAST_SERVER, else " CLI_DEFAULT_SERVER ")\n"
	"  --engine URL   any engine URL instead, e.g. file:./var/holdfast.db (no server)\n"
	"  --json         machine-readable output on stdout\n"
	"  --help         this text; `holdfast COMMAND --help` for a command\n"
	"  --version      the version\n"
	"\n"
	"environment: HOLDFAST_SERVER, HOLDFAST_API_KEY (sent as a bearer token), HOLDFAST_OWNER\n"
	"exit codes: 0 ok, 1 usage or invalid request, 2 unavailable/timeout/conflict, 3 not found,\n"
	"  4 bad token or hold ended, 5 server unreachable, 6 unauthorized, 7 server failure,\n"
	"  75 run: lock lost; run otherwise exits with its command's code (see docs/cli.md)\n";

bool cli_common_opt(int c, const char *optarg_, const char *usage)
{
	switch (c) {
	case CLI_OPT_SERVER:
	case CLI_OPT_ENGINE:
		cli_g.url = optarg_;
		return true;
	case CLI_OPT_JSON:
		cli_g.json = true;
		return true;
	case CLI_OPT_HELP:
		fputs(usage, stdout);
		exit(CLI_EXIT_OK);
	default:
		return false;
	}
}

int cli_usage_error(const char *cmd, const char *fmt, ...)
{
	va_list ap;
	fprintf(stderr, "holdfast %s: ", cmd);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\ntry 'holdfast %s --help'\n", cmd);
	return CLI_EXIT_USAGE;
}

bool cli_parse_i64(const char *cmd, const char *what, const char *s, int64_t lo, int64_t hi,
                   int64_t *out)
{
	char *end;
	errno = 0;
	long long v = strtoll(s, &end, 10);
	if (errno || end == s || *end || v < lo || v > hi) {
		cli_usage_error(cmd, "%s must be an integer from %" PRId64 " to %" PRId64 ", not '%s'",
		                what, lo, hi, s);
		return false;
	}
	*out = v;
	return true;
}

int cli_exit_code(int code)
{
	switch (code) {
	case HF_OK:
		return CLI_EXIT_OK;
	case HF_EINVAL:
	case HF_ESAGATYPE:
	case HF_EJSON:
	case HF_EBODY:
	case HF_ENOTSUP:
		return CLI_EXIT_USAGE;
	case HF_EUNAVAILABLE:
	case HF_ETIMEDOUT:
	case HF_EVERSION:
	case HF_EHELD:
	case HF_ECAPACITY:
	case HF_ECAPMISMATCH:
	case HF_ECAPINUSE:
	case HF_ELIMIT:
	case HF_EIDEMMISMATCH:
	case HF_EIDEMBUSY:
	case HF_ECANCELED:
	case HF_ESAGASTATE:
		return CLI_EXIT_BUSY;
	case HF_ENORESOURCE:
	case HF_ENOHOLD:
	case HF_EROUTE:
	case HF_ENOSAGA:
	case HF_ENOSAGATYPE:
		return CLI_EXIT_NOT_FOUND;
	case HF_ETOKEN:
	case HF_EENDED:
		return CLI_EXIT_HOLD_GONE;
	case HF_EENGINE:
	case HF_ECLOSED:
	case HF_EPROTO:
		return CLI_EXIT_UNREACHABLE;
	case HF_EAUTH:
		return CLI_EXIT_AUTH;
	case HF_ETRIMMED:
		return CLI_EXIT_TRIMMED;
	default:
		return CLI_EXIT_SERVER;
	}
}

int cli_fail(const char *cmd, const hf_error *err)
{
	const char *msg = err->message[0] ? err->message : hf_strerror(err->code);
	if (cli_g.json) {
		json_t *j = json_pack("{s:{s:s,s:s}}", "error", "code", hf_err_name(err->code), "message",
		                      msg);
		if (j)
			cli_print_json(j);
	}
	fprintf(stderr, "holdfast %s: %s (%s)\n", cmd, msg, hf_err_name(err->code));
	return cli_exit_code(err->code);
}

int cli_open(hf_store **store)
{
	hf_error err;
	int rc = hf_open(cli_g.url, NULL, store, &err);
	if (rc != HF_OK)
		return cli_fail("open", &err);
	return CLI_EXIT_OK;
}

const char *cli_default_owner(void)
{
	static char owner[HF_OWNER_MAX + 1];
	const char *env = getenv("HOLDFAST_OWNER");
	if (env && *env)
		return env;
	if (owner[0])
		return owner;
	const char *user = getenv("USER");
	char host[256] = "localhost";
	if (gethostname(host, sizeof(host)) != 0)
		snprintf(host, sizeof(host), "localhost");
	host[sizeof(host) - 1] = '\0';
	snprintf(owner, sizeof(owner), "%.100s@%.100s", user && *user ? user : "holdfast", host);
	return owner;
}

/* ---- Output. ------------------------------------------------------------------------- */

const char *cli_time(int64_t ms, char *buf, size_t size)
{
	time_t secs = (time_t)(ms / 1000);
	struct tm tm;
	if (!gmtime_r(&secs, &tm)) {
		snprintf(buf, size, "%" PRId64, ms);
		return buf;
	}
	char base[24];
	strftime(base, sizeof(base), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(buf, size, "%s.%03dZ", base, (int)(ms % 1000));
	return buf;
}

void cli_print_json(json_t *j)
{
	char *text = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
	if (text) {
		puts(text);
		free(text);
	}
	json_decref(j);
}

/* The library's JSON form of an item (the HTTP API's), as a value to print or nest. */
static json_t *parsed(char *text)
{
	json_t *j = text ? json_loads(text, 0, NULL) : NULL;
	free(text);
	return j;
}

json_t *cli_hold_json(const hf_hold *hold)
{
	return parsed(hf_hold_json(hold));
}

json_t *cli_resource_json(const hf_resource *res)
{
	return parsed(hf_resource_json(res));
}

json_t *cli_event_json(const hf_event *ev)
{
	return parsed(hf_event_json(ev));
}

void cli_print_hold(const hf_hold *hold)
{
	char t[40];
	printf("hold     %s%s\n", hold->id, hold->replayed ? " (replayed)" : "");
	if (hold->token[0])
		printf("token    %s\n", hold->token);
	printf("owner    %s\n", hold->owner);
	printf("state    %s\n", hf_hold_state_name(hold->state));
	printf("mode     %s\n", hf_mode_name(hold->mode));
	printf("created  %s\n", cli_time(hold->created_at_ms, t, sizeof(t)));
	if (hold->state == HF_HOLD_TENTATIVE && hold->expires_at_ms) {
		int64_t left = hold->expires_at_ms - hf_now_ms();
		printf("expires  %s (in %.1f s)\n", cli_time(hold->expires_at_ms, t, sizeof(t)),
		       (double)(left > 0 ? left : 0) / 1000.0);
	}
	if (hold->ended_at_ms)
		printf("ended    %s\n", cli_time(hold->ended_at_ms, t, sizeof(t)));
	for (size_t i = 0; i < hold->n_parts; i++)
		printf("resource %s  units %" PRId64 "  fence %" PRId64 "\n", hold->parts[i].resource,
		       hold->parts[i].units, hold->parts[i].fence);
}

void cli_print_resource(const hf_resource *res)
{
	printf("%s  capacity %" PRId64 "  held %" PRId64 "  holds %" PRId64 "  waiters %" PRId64,
	       res->name, res->capacity, res->held, res->holds, res->waiters);
	if (res->declared)
		printf("  version %" PRId64, res->version);
	else
		printf("  implicit");
	if (res->meta)
		printf("  meta %s", res->meta);
	putchar('\n');
}

void cli_print_event(const hf_event *ev)
{
	char t[40];
	printf("%" PRIu64 "  %s  %s", ev->seq, cli_time(ev->at_ms, t, sizeof(t)), ev->type);
	if (ev->resource)
		printf("  resource=%s  revision=%" PRId64, ev->resource, ev->revision);
	for (size_t i = 0; ev->n_revisions > 1 && i < ev->n_revisions; i++)
		printf("%s%s:%" PRId64, i ? "," : "  revisions=", ev->revisions[i].resource,
		       ev->revisions[i].revision);
	if (ev->hold_id)
		printf("  hold=%s", ev->hold_id);
	if (ev->data)
		printf("  %s", ev->data);
	putchar('\n');
}

/* ---- Dispatch. ------------------------------------------------------------------------- */

static const struct {
	const char *name;
	int (*fn)(int argc, char **argv);
} commands[] = {
	{"acquire", cli_cmd_acquire},     {"extend", cli_cmd_extend}, {"confirm", cli_cmd_confirm},
	{"release", cli_cmd_release},     {"get", cli_cmd_get},       {"list", cli_cmd_list},
	{"resources", cli_cmd_resources}, {"events", cli_cmd_events}, {"stats", cli_cmd_stats},
	{"run", cli_cmd_run},             {"saga", cli_cmd_saga},     {"saga-type", cli_cmd_saga_type},
	{"tx", cli_cmd_tx},
#ifdef HF_CLI_RELAY
	{"relay", cli_cmd_relay},         {"consume", cli_cmd_consume}, {"replay", cli_cmd_replay},
	{"project", cli_cmd_project}, {"request", cli_cmd_request},
#endif
};

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{"version", no_argument, NULL, 'V'},
		CLI_COMMON_OPTS,
	};
	/* A closed pipe (`holdfast events -f | head`) should end us quietly with an error on
	 * write, not a signal in the middle of a library call. */
	signal(SIGPIPE, SIG_IGN);
	const char *env = getenv("HOLDFAST_SERVER");
	cli_g.url = env && *env ? env : CLI_DEFAULT_SERVER;

	int c;
	opterr = 0;
	/* "+": stop at the command name; its own options are parsed by the command. */
	while ((c = getopt_long(argc, argv, "+", opts, NULL)) != -1) {
		if (c == 'V') {
			printf("holdfast %s\n", HF_VERSION);
			return CLI_EXIT_OK;
		}
		if (c == '?') {
			fprintf(stderr, "holdfast: unknown option '%s'\n%s", argv[optind - 1], main_usage);
			return CLI_EXIT_USAGE;
		}
		cli_common_opt(c, optarg, main_usage);
	}
	if (optind >= argc) {
		fputs(main_usage, stderr);
		return CLI_EXIT_USAGE;
	}
	const char *name = argv[optind];
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
		if (strcmp(commands[i].name, name) == 0) {
			int sub_argc = argc - optind;
			char **sub_argv = argv + optind;
			optind = 0; /* glibc: 0 fully re-initialises getopt for the command */
			int rc = commands[i].fn(sub_argc, sub_argv);
			if (fflush(stdout) != 0 && rc == CLI_EXIT_OK)
				rc = CLI_EXIT_USAGE;
			return rc;
		}
	}
	if (strcmp(name, "help") == 0) {
		fputs(main_usage, stdout);
		return CLI_EXIT_OK;
	}
	fprintf(stderr, "holdfast: unknown command '%s'\n%s", name, main_usage);
	return CLI_EXIT_USAGE;
}
