/*
 * commands.c — the `holdfast` commands that are one library call each (or a loop of them):
 * acquire, extend, confirm, release, get, list, resources and events.
 */
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>

#include "cli.h"

/* ---- Shared steps. -------------------------------------------------------------------- */

/* Runs one blocking request on a fresh store and hands back the reply (NULL when the store
 * could not be opened; *exit_code says why). */
static hf_reply *call_once(const char *cmd, const hf_request *req, int *exit_code)
{
	hf_store *store;
	hf_reply *reply = NULL;
	*exit_code = cli_open(&store);
	if (*exit_code)
		return NULL;
	int rc = hf_call(store, req, &reply);
	hf_close(store);
	if (rc != HF_OK) {
		*exit_code = cli_fail(cmd, &reply->error);
		hf_reply_free(reply);
		return NULL;
	}
	*exit_code = CLI_EXIT_OK;
	return reply;
}

static int print_hold_reply(hf_reply *reply, bool quiet)
{
	if (cli_g.json)
		cli_print_json(cli_hold_json(reply->hold));
	else if (quiet)
		printf("%s %s\n", reply->hold->id, reply->hold->token);
	else
		cli_print_hold(reply->hold);
	hf_reply_free(reply);
	return CLI_EXIT_OK;
}

/* ---- acquire. ------------------------------------------------------------------------- */

static const char acquire_usage[] =
	"usage: holdfast acquire [options] RESOURCE...\n"
	"\n"
	"Takes a hold on every RESOURCE at once (all or nothing), or with --any on the first one\n"
	"that is free, and prints its id, token and fences. Names are taken literally; put `--`\n"
	"before a name that starts with '-'.\n"
	"\n"
	"  --owner NAME         who holds it (default $HOLDFAST_OWNER, else user@host)\n"
	"  --ttl MS             lease in milliseconds (default 30000)\n"
	"  --wait MS            wait up to MS for the units, in FIFO order (default 0: fail at once)\n"
	"  --units N            units of each resource (default 1; mode units)\n"
	"  --mode MODE          units, shared (1 unit, a reader) or exclusive (all units, a writer)\n"
	"  --any                take the first RESOURCE that can be granted, only that one\n"
	"  --capacity N         implicit resources of capacity N, created on first use\n"
	"                       (without it every RESOURCE must be declared)\n"
	"  --idempotency-key K  a retry with the same key returns the first outcome\n"
	"  --quiet              print only \"ID TOKEN\"\n"
	"  --json               the hold as JSON (with its token)\n"
	"\n"
	"exit codes: 0 granted, 2 unavailable or wait timed out, 3 unknown resource, 1 bad request\n";

int cli_cmd_acquire(int argc, char **argv)
{
	static const struct option opts[] = {
		{"owner", required_argument, NULL, 'o'},
		{"ttl", required_argument, NULL, 't'},
		{"wait", required_argument, NULL, 'w'},
		{"units", required_argument, NULL, 'u'},
		{"mode", required_argument, NULL, 'm'},
		{"any", no_argument, NULL, 'a'},
		{"capacity", required_argument, NULL, 'c'},
		{"idempotency-key", required_argument, NULL, 'k'},
		{"quiet", no_argument, NULL, 'q'},
		CLI_COMMON_OPTS,
	};
	hf_acquire_req a = {.owner = cli_default_owner(), .ttl_ms = CLI_DEFAULT_TTL_MS};
	int64_t units = 1, capacity = 0;
	bool quiet = false;
	int c;
	while ((c = getopt_long(argc, argv, "q", opts, NULL)) != -1) {
		switch (c) {
		case 'o': a.owner = optarg; break;
		case 't':
			if (!cli_parse_i64("acquire", "--ttl", optarg, 1, HF_TTL_MAX_MS, &a.ttl_ms))
				return CLI_EXIT_USAGE;
			break;
		case 'w':
			if (!cli_parse_i64("acquire", "--wait", optarg, 0, HF_WAIT_MAX_MS, &a.wait_ms))
				return CLI_EXIT_USAGE;
			break;
		case 'u':
			if (!cli_parse_i64("acquire", "--units", optarg, 1, HF_CAPACITY_MAX, &units))
				return CLI_EXIT_USAGE;
			break;
		case 'c':
			if (!cli_parse_i64("acquire", "--capacity", optarg, 1, HF_CAPACITY_MAX, &capacity))
				return CLI_EXIT_USAGE;
			break;
		case 'm':
			if (hf_mode_parse(optarg, &a.mode) != HF_OK)
				return cli_usage_error("acquire", "--mode must be units, shared or exclusive");
			break;
		case 'a': a.any = true; break;
		case 'k': a.idempotency_key = optarg; break;
		case 'q': quiet = true; break;
		default:
			if (!cli_common_opt(c, optarg, acquire_usage))
				return cli_usage_error("acquire", "unknown option '%s'", argv[optind - 1]);
		}
	}
	size_t n = (size_t)(argc - optind);
	if (n == 0)
		return cli_usage_error("acquire", "name at least one resource");
	if (n > HF_CLAIMS_MAX)
		return cli_usage_error("acquire", "at most %d resources in one hold", HF_CLAIMS_MAX);
	hf_claim claims[HF_CLAIMS_MAX];
	for (size_t i = 0; i < n; i++)
		claims[i] = (hf_claim){.name = argv[optind + (int)i], .units = units, .capacity = capacity};
	a.claims = claims;
	a.n_claims = n;

	hf_request req;
	hf_request_init(&req, HF_OP_ACQUIRE);
	req.acquire = a;
	int code;
	hf_reply *reply = call_once("acquire", &req, &code);
	return reply ? print_hold_reply(reply, quiet) : code;
}

/* ---- extend, confirm, release, get. ------------------------------------------------------ */

static const char extend_usage[] =
	"usage: holdfast extend [--ttl MS] ID TOKEN\n"
	"\n"
	"Sets a new lease of MS milliseconds from now (default 30000) on a tentative hold.\n"
	"exit codes: 0 extended, 4 bad token or hold ended, 3 no such hold\n";
static const char confirm_usage[] =
	"usage: holdfast confirm ID TOKEN\n"
	"\n"
	"Makes a tentative hold confirmed: no lease, kept until released.\n"
	"exit codes: 0 confirmed, 4 bad token or hold ended, 3 no such hold\n";
static const char release_usage[] =
	"usage: holdfast release ID TOKEN\n"
	"\n"
	"Ends a hold; its units go to the next waiter.\n"
	"exit codes: 0 released, 4 bad token or hold ended, 3 no such hold\n";
static const char get_usage[] =
	"usage: holdfast get ID\n"
	"\n"
	"Shows a hold (never its token).\n"
	"exit codes: 0 found, 3 no such hold\n";

/* extend/confirm/release/get share one shape: ID [TOKEN] and few options. */
static int hold_command(int argc, char **argv, hf_op op, const char *usage)
{
	static const struct option opts[] = {
		{"ttl", required_argument, NULL, 't'},
		{"quiet", no_argument, NULL, 'q'},
		CLI_COMMON_OPTS,
	};
	const char *cmd = argv[0];
	int64_t ttl = CLI_DEFAULT_TTL_MS;
	bool quiet = false;
	int c;
	while ((c = getopt_long(argc, argv, "q", opts, NULL)) != -1) {
		if (c == 't' && op == HF_OP_EXTEND) {
			if (!cli_parse_i64(cmd, "--ttl", optarg, 1, HF_TTL_MAX_MS, &ttl))
				return CLI_EXIT_USAGE;
		} else if (c == 'q') {
			quiet = true;
		} else if (!cli_common_opt(c, optarg, usage)) {
			return cli_usage_error(cmd, "unknown option '%s'", argv[optind - 1]);
		}
	}
	int want = op == HF_OP_GET_HOLD ? 1 : 2;
	if (argc - optind != want)
		return cli_usage_error(cmd, want == 1 ? "expected a hold ID" : "expected ID and TOKEN");
	hf_request req;
	hf_request_init(&req, op);
	req.hold_id = argv[optind];
	req.token = want == 2 ? argv[optind + 1] : NULL;
	req.ttl_ms = ttl;
	int code;
	hf_reply *reply = call_once(cmd, &req, &code);
	if (!reply)
		return code;
	if (quiet && !cli_g.json) {
		hf_reply_free(reply);
		return CLI_EXIT_OK;
	}
	return print_hold_reply(reply, false);
}

int cli_cmd_extend(int argc, char **argv)
{
	return hold_command(argc, argv, HF_OP_EXTEND, extend_usage);
}

int cli_cmd_confirm(int argc, char **argv)
{
	return hold_command(argc, argv, HF_OP_CONFIRM, confirm_usage);
}

int cli_cmd_release(int argc, char **argv)
{
	return hold_command(argc, argv, HF_OP_RELEASE, release_usage);
}

int cli_cmd_get(int argc, char **argv)
{
	return hold_command(argc, argv, HF_OP_GET_HOLD, get_usage);
}

/* ---- list. ------------------------------------------------------------------------------ */

static const char list_usage[] =
	"usage: holdfast list [--owner O] [--resource R] [--state S] [--limit N] [--after ID] [--all]\n"
	"\n"
	"Lists holds, filtered by owner, resource and state (tentative, confirmed, released,\n"
	"expired). One page of --limit (default 100) after the hold id --after, or every page\n"
	"with --all. Tokens are never shown.\n";

static void print_hold_line(const hf_hold *h)
{
	char t[40];
	printf("%s  %-9s  %-9s  %s", h->id, hf_hold_state_name(h->state), hf_mode_name(h->mode),
	       h->owner);
	for (size_t i = 0; i < h->n_parts; i++)
		printf("  %s(units %" PRId64 ", fence %" PRId64 ")", h->parts[i].resource,
		       h->parts[i].units, h->parts[i].fence);
	if (h->state == HF_HOLD_TENTATIVE && h->expires_at_ms)
		printf("  expires %s", cli_time(h->expires_at_ms, t, sizeof(t)));
	putchar('\n');
}

int cli_cmd_list(int argc, char **argv)
{
	static const struct option opts[] = {
		{"owner", required_argument, NULL, 'o'},
		{"resource", required_argument, NULL, 'r'},
		{"state", required_argument, NULL, 's'},
		{"limit", required_argument, NULL, 'l'},
		{"after", required_argument, NULL, 'A'},
		{"all", no_argument, NULL, 'a'},
		CLI_COMMON_OPTS,
	};
	hf_request req;
	hf_request_init(&req, HF_OP_LIST_HOLDS);
	int64_t limit = 100;
	bool all = false;
	int c;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'o': req.owner = optarg; break;
		case 'r': req.resource = optarg; break;
		case 's': {
			hf_hold_state st;
			if (hf_hold_state_parse(optarg, &st) != HF_OK)
				return cli_usage_error("list", "--state must be tentative, confirmed, released or expired");
			req.state = (int)st;
			break;
		}
		case 'l':
			if (!cli_parse_i64("list", "--limit", optarg, 1, HF_LIST_MAX, &limit))
				return CLI_EXIT_USAGE;
			break;
		case 'A': req.cursor = optarg; break;
		case 'a': all = true; break;
		default:
			if (!cli_common_opt(c, optarg, list_usage))
				return cli_usage_error("list", "unknown option '%s'", argv[optind - 1]);
		}
	}
	if (optind != argc)
		return cli_usage_error("list", "unexpected argument '%s'", argv[optind]);
	req.limit = (size_t)limit;

	hf_store *store;
	int code = cli_open(&store);
	if (code)
		return code;
	json_t *arr = cli_g.json ? json_array() : NULL;
	char cursor[HF_ID_LEN + 1];
	bool more = false;
	do {
		hf_reply *reply;
		int rc = hf_call(store, &req, &reply);
		if (rc != HF_OK) {
			code = reply ? cli_fail("list", &reply->error) : CLI_EXIT_SERVER;
			hf_reply_free(reply);
			break;
		}
		for (size_t i = 0; i < reply->n_holds; i++) {
			if (arr)
				json_array_append_new(arr, cli_hold_json(&reply->holds[i]));
			else
				print_hold_line(&reply->holds[i]);
		}
		more = reply->more;
		if (reply->n_holds) {
			snprintf(cursor, sizeof(cursor), "%s", reply->holds[reply->n_holds - 1].id);
			req.cursor = cursor;
		} else {
			more = false;
		}
		hf_reply_free(reply);
	} while (all && more);
	hf_close(store);
	if (arr) {
		if (code == CLI_EXIT_OK)
			cli_print_json(json_pack("{s:o,s:b}", "holds", arr, "more", (int)more));
		else
			json_decref(arr);
	}
	return code;
}

/* ---- resources. -------------------------------------------------------------------------- */

static const char resources_usage[] =
	"usage: holdfast resources [list] [--limit N] [--after NAME] [--all]\n"
	"       holdfast resources get NAME\n"
	"       holdfast resources put NAME --capacity N [--meta JSON] [--if-version V]\n"
	"       holdfast resources delete NAME [--if-version V]\n"
	"\n"
	"Lists, shows, declares (creates or updates) and deletes resources. --if-version makes\n"
	"put and delete apply only to that version (optimistic locking; 0 with put: create only).\n"
	"exit codes: 0 ok, 2 version conflict or resource held, 3 no such resource\n";

int cli_cmd_resources(int argc, char **argv)
{
	static const struct option opts[] = {
		{"limit", required_argument, NULL, 'l'},
		{"after", required_argument, NULL, 'A'},
		{"all", no_argument, NULL, 'a'},
		{"capacity", required_argument, NULL, 'c'},
		{"meta", required_argument, NULL, 'M'},
		{"if-version", required_argument, NULL, 'v'},
		CLI_COMMON_OPTS,
	};
	const char *sub = "list";
	if (argc > 1 && argv[1][0] != '-') {
		sub = argv[1];
		argc--;
		argv++;
	}
	hf_op op;
	if (strcmp(sub, "list") == 0)
		op = HF_OP_LIST_RESOURCES;
	else if (strcmp(sub, "get") == 0)
		op = HF_OP_GET_RESOURCE;
	else if (strcmp(sub, "put") == 0)
		op = HF_OP_PUT_RESOURCE;
	else if (strcmp(sub, "delete") == 0)
		op = HF_OP_DELETE_RESOURCE;
	else
		return cli_usage_error("resources", "unknown subcommand '%s'", sub);

	hf_request req;
	hf_request_init(&req, op);
	int64_t limit = 100, capacity = -1;
	bool all = false;
	int c;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'l':
			if (!cli_parse_i64("resources", "--limit", optarg, 1, HF_LIST_MAX, &limit))
				return CLI_EXIT_USAGE;
			break;
		case 'A': req.cursor = optarg; break;
		case 'a': all = true; break;
		case 'c':
			if (!cli_parse_i64("resources", "--capacity", optarg, 1, HF_CAPACITY_MAX, &capacity))
				return CLI_EXIT_USAGE;
			break;
		case 'M': req.meta = optarg; break;
		case 'v':
			if (!cli_parse_i64("resources", "--if-version", optarg, 0, INT64_MAX, &req.if_version))
				return CLI_EXIT_USAGE;
			break;
		default:
			if (!cli_common_opt(c, optarg, resources_usage))
				return cli_usage_error("resources", "unknown option '%s'", argv[optind - 1]);
		}
	}
	int code;
	if (op != HF_OP_LIST_RESOURCES) {
		if (argc - optind != 1)
			return cli_usage_error("resources", "%s needs one resource NAME", sub);
		req.name = argv[optind];
		if (op == HF_OP_PUT_RESOURCE) {
			if (capacity < 0)
				return cli_usage_error("resources", "put needs --capacity N");
			req.capacity = capacity;
		}
		hf_reply *reply = call_once("resources", &req, &code);
		if (!reply)
			return code;
		if (reply->resource) {
			if (cli_g.json) {
				cli_print_json(cli_resource_json(reply->resource));
			} else {
				if (op == HF_OP_DELETE_RESOURCE)
					printf("deleted ");
				cli_print_resource(reply->resource);
			}
		} else if (cli_g.json) {
			cli_print_json(json_pack("{s:s}", "deleted", req.name));
		} else {
			printf("deleted %s\n", req.name);
		}
		hf_reply_free(reply);
		return CLI_EXIT_OK;
	}

	if (optind != argc)
		return cli_usage_error("resources", "unexpected argument '%s'", argv[optind]);
	req.limit = (size_t)limit;
	hf_store *store;
	code = cli_open(&store);
	if (code)
		return code;
	json_t *arr = cli_g.json ? json_array() : NULL;
	char *cursor = NULL;
	bool more = false;
	do {
		hf_reply *reply;
		int rc = hf_call(store, &req, &reply);
		if (rc != HF_OK) {
			code = reply ? cli_fail("resources", &reply->error) : CLI_EXIT_SERVER;
			hf_reply_free(reply);
			break;
		}
		for (size_t i = 0; i < reply->n_resources; i++) {
			if (arr)
				json_array_append_new(arr, cli_resource_json(&reply->resources[i]));
			else
				cli_print_resource(&reply->resources[i]);
		}
		more = reply->more && reply->n_resources > 0;
		if (reply->n_resources) {
			free(cursor);
			cursor = strdup(reply->resources[reply->n_resources - 1].name);
			req.cursor = cursor;
		}
		hf_reply_free(reply);
	} while (all && more && cursor);
	free(cursor);
	hf_close(store);
	if (arr) {
		if (code == CLI_EXIT_OK)
			cli_print_json(json_pack("{s:o,s:b}", "resources", arr, "more", (int)more));
		else
			json_decref(arr);
	}
	return code;
}

/* ---- events. ---------------------------------------------------------------------------- */

static const char events_usage[] =
	"usage: holdfast events [--after SEQ] [--limit N] [--wait MS] [--follow]\n"
	"\n"
	"Prints events with a sequence number above SEQ (default 0: from the start), at most N\n"
	"(default 100). --wait long-polls up to MS for a first event. --follow keeps reading\n"
	"until interrupted, one event per line (JSON lines with --json).\n";

static volatile sig_atomic_t events_stop;

static void events_on_signal(int sig)
{
	(void)sig;
	events_stop = 1;
}

/* The parked long-poll of --follow, cancelled from the main thread on a signal. */
struct follow_call {
	hf_reply *reply;
	bool done;
};

static void follow_done(void *arg, hf_reply *reply)
{
	struct follow_call *fc = arg;
	fc->reply = reply;
	fc->done = true;
}

/* One long-poll that a signal can cancel: submit, then dispatch until done. */
static int follow_once(hf_store *store, const hf_request *req, hf_reply **out)
{
	struct follow_call fc = {0};
	uint64_t id;
	hf_error err;
	int rc = hf_submit(store, req, follow_done, &fc, &id, &err);
	if (rc != HF_OK) {
		*out = NULL;
		return cli_fail("events", &err);
	}
	bool cancelled = false;
	while (!fc.done) {
		sigset_t none;
		sigemptyset(&none);
		/* Wait for the store's fd or a signal, whichever comes first. */
		fd_set rd;
		FD_ZERO(&rd);
		FD_SET(hf_store_fd(store), &rd);
		struct timespec ts = {.tv_sec = 1};
		pselect(hf_store_fd(store) + 1, &rd, NULL, NULL, &ts, &none);
		if (events_stop && !cancelled) {
			hf_cancel(store, id);
			cancelled = true;
		}
		hf_store_dispatch(store);
	}
	*out = fc.reply;
	return CLI_EXIT_OK;
}

int cli_cmd_events(int argc, char **argv)
{
	static const struct option opts[] = {
		{"after", required_argument, NULL, 'A'},
		{"limit", required_argument, NULL, 'l'},
		{"wait", required_argument, NULL, 'w'},
		{"follow", no_argument, NULL, 'f'},
		CLI_COMMON_OPTS,
	};
	hf_request req;
	hf_request_init(&req, HF_OP_READ_EVENTS);
	int64_t after = 0, limit = 100;
	bool follow = false;
	int c;
	while ((c = getopt_long(argc, argv, "f", opts, NULL)) != -1) {
		switch (c) {
		case 'A':
			if (!cli_parse_i64("events", "--after", optarg, 0, INT64_MAX, &after))
				return CLI_EXIT_USAGE;
			break;
		case 'l':
			if (!cli_parse_i64("events", "--limit", optarg, 1, HF_LIST_MAX, &limit))
				return CLI_EXIT_USAGE;
			break;
		case 'w':
			if (!cli_parse_i64("events", "--wait", optarg, 0, HF_WAIT_MAX_MS, &req.wait_ms))
				return CLI_EXIT_USAGE;
			break;
		case 'f': follow = true; break;
		default:
			if (!cli_common_opt(c, optarg, events_usage))
				return cli_usage_error("events", "unknown option '%s'", argv[optind - 1]);
		}
	}
	if (optind != argc)
		return cli_usage_error("events", "unexpected argument '%s'", argv[optind]);
	req.after = (uint64_t)after;
	req.limit = (size_t)limit;

	hf_store *store;
	int code = cli_open(&store);
	if (code)
		return code;
	if (!follow) {
		hf_reply *reply;
		int rc = hf_call(store, &req, &reply);
		hf_close(store);
		if (rc != HF_OK) {
			code = reply ? cli_fail("events", &reply->error) : CLI_EXIT_SERVER;
			hf_reply_free(reply);
			return code;
		}
		if (cli_g.json) {
			json_t *arr = json_array();
			for (size_t i = 0; i < reply->n_events; i++)
				json_array_append_new(arr, cli_event_json(&reply->events[i]));
			cli_print_json(json_pack("{s:o,s:I}", "events", arr, "last_seq",
			                         (json_int_t)reply->last_seq));
		} else {
			for (size_t i = 0; i < reply->n_events; i++)
				cli_print_event(&reply->events[i]);
		}
		hf_reply_free(reply);
		return CLI_EXIT_OK;
	}

	/* --follow: long-poll in a loop; SIGINT/SIGTERM cancel the wait and end with 0. */
	sigset_t block, old;
	sigemptyset(&block);
	sigaddset(&block, SIGINT);
	sigaddset(&block, SIGTERM);
	sigprocmask(SIG_BLOCK, &block, &old);
	struct sigaction sa = {.sa_handler = events_on_signal};
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	req.wait_ms = req.wait_ms ? req.wait_ms : 30000;
	while (!events_stop) {
		hf_reply *reply;
		code = follow_once(store, &req, &reply);
		if (code)
			break;
		if (reply->error.code == HF_ECANCELED) {
			hf_reply_free(reply);
			break;
		}
		if (reply->error.code != HF_OK) {
			code = cli_fail("events", &reply->error);
			hf_reply_free(reply);
			break;
		}
		for (size_t i = 0; i < reply->n_events; i++) {
			if (cli_g.json) {
				json_t *j = cli_event_json(&reply->events[i]);
				char *text = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER);
				if (text)
					puts(text);
				free(text);
				json_decref(j);
			} else {
				cli_print_event(&reply->events[i]);
			}
			req.after = reply->events[i].seq;
		}
		hf_reply_free(reply);
		if (fflush(stdout) != 0)
			break; /* the reader went away */
	}
	hf_close(store);
	sigprocmask(SIG_SETMASK, &old, NULL);
	return code;
}
