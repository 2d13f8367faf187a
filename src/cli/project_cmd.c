/*
 * project_cmd.c — `holdfast replay`: the state rebuilt from the event log alone (src/relay's
 * fold), compared with the live state read through the API; and the read-model commands.
 */
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <stdlib.h>

#include "cli.h"
#include "relay.h"

#define CLI_EXIT_DIFFERENT 8

static const char replay_usage[] =
    "usage: holdfast replay [--print]\n"
    "\n"
    "Rebuilds the state (resources with capacity, meta and version; live holds with owner,\n"
    "state, units and fences) from the event log alone, then reads the live state through the\n"
    "API (list resources, list holds) and compares the two at a moment the log did not move.\n"
    "Prints each difference on stdout; exit 8 if there is any. See docs/events.md.\n"
    "\n"
    "  --print    print the rebuilt state as JSON too\n"
    "\n"
    "exit codes: 0 equal, 8 different, else those of every command (docs/cli.md)\n";

int cli_cmd_replay(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"print", no_argument, NULL, 'p'},
	    CLI_COMMON_OPTS,
	};
	bool print = false;
	int c;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (cli_common_opt(c, optarg, replay_usage))
			continue;
		if (c == 'p')
			print = true;
		else
			return cli_usage_error("replay", "unknown option '%s'", argv[optind - 1]);
	}
	if (optind < argc)
		return cli_usage_error("replay", "unexpected argument '%s'", argv[optind]);
	hf_store *st = NULL;
	int rc = cli_open(&st);
	if (rc != CLI_EXIT_OK)
		return rc;
	struct relay_fold f;
	hf_error err = {0};
	size_t diffs = 0;
	rc = relay_fold_init(&f);
	if (rc == HF_OK)
		rc = relay_replay_check(st, &f, &diffs, cli_g.json ? NULL : stdout, &err);
	else
		err.code = rc;
	hf_close(st);
	if (rc != HF_OK) {
		relay_fold_free(&f);
		return cli_fail("replay", &err);
	}
	size_t n_res = json_object_size(f.resources), n_holds = json_object_size(f.holds);
	if (cli_g.json || print) {
		json_t *j = json_pack("{s:I, s:I, s:I, s:I, s:I}", "seq", (json_int_t)f.seq, "events",
		                      (json_int_t)f.events, "resources", (json_int_t)n_res, "holds",
		                      (json_int_t)n_holds, "differences", (json_int_t)diffs);
		if (j && print)
			json_object_set_new(j, "state", json_pack("{s:O, s:O, s:O}", "resources", f.resources,
			                                          "holds", f.holds, "revisions", f.revisions));
		if (j)
			cli_print_json(j);
	}
	if (!cli_g.json)
		printf("replay: %" PRIu64 " events to seq %" PRIu64 ": %zu resources, %zu live holds, "
		       "%zu difference%s with the live state\n",
		       f.events, f.seq, n_res, n_holds, diffs, diffs == 1 ? "" : "s");
	relay_fold_free(&f);
	return diffs ? CLI_EXIT_DIFFERENT : CLI_EXIT_OK;
}

/* ---- project: the read models. ---------------------------------------------------- */

static const char project_usage[] =
    "usage: holdfast project --db FILE [options] [owner OWNER | availability RESOURCE]\n"
    "\n"
    "Keeps the CQRS read models in FILE (SQLite): the state folded from the event log, with\n"
    "its position (the last seq). Catches up with the log, then prints the view asked for as\n"
    "JSON with its \"position\": an owner's live holds (bookings), or a resource's capacity,\n"
    "held and free units. Without a view it only catches up (--follow: keeps following).\n"
    "See docs/events.md.\n"
    "\n"
    "  --db FILE         the projection's SQLite file (created)\n"
    "  --rebuild         empty it first and fold the whole log again (from zero)\n"
    "  --no-sync         read the view as the projection has it, without catching up\n"
    "  --follow          keep folding new events until SIGINT/SIGTERM (no view)\n"
    "  --cache URL       redis://host:port: read views cache-aside (GET; on a miss read the\n"
    "                    projection and SET with --cache-ttl); catching up deletes the keys\n"
    "                    of the views the new events change\n"
    "  --cache-ttl MS    lifetime of a cached view (default 60000)\n"
    "  --name NAME       publish the position in the store (holdfast.relay/projection.NAME/\n"
    "                    checkpoint): event retention will not trim past it\n"
    "  --from-floor      if retention trimmed events past the position, go on from the\n"
    "                    oldest kept (the range skipped is logged; the views miss what\n"
    "                    those events changed) instead of stopping with exit code 10\n";

static volatile sig_atomic_t project_stop;

static void on_project_signal(int sig)
{
	(void)sig;
	project_stop = 1;
}

struct project_args {
	const char *db, *cache, *view, *name, *publish;
	bool rebuild, no_sync, follow, from_floor;
	int64_t cache_ttl_ms;
};

static int project_parse(int argc, char **argv, struct project_args *a)
{
	enum { P_DB = 1, P_REBUILD, P_NOSYNC, P_FOLLOW, P_CACHE, P_TTL, P_NAME, P_FROM_FLOOR };
	static const struct option opts[] = {
	    {"db", required_argument, NULL, P_DB},
	    {"rebuild", no_argument, NULL, P_REBUILD},
	    {"no-sync", no_argument, NULL, P_NOSYNC},
	    {"follow", no_argument, NULL, P_FOLLOW},
	    {"cache", required_argument, NULL, P_CACHE},
	    {"cache-ttl", required_argument, NULL, P_TTL},
	    {"name", required_argument, NULL, P_NAME},
	    {"from-floor", no_argument, NULL, P_FROM_FLOOR},
	    CLI_COMMON_OPTS,
	};
	memset(a, 0, sizeof(*a));
	a->cache_ttl_ms = 60000;
	int c;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (cli_common_opt(c, optarg, project_usage))
			continue;
		switch (c) {
		case P_DB: a->db = optarg; break;
		case P_REBUILD: a->rebuild = true; break;
		case P_NOSYNC: a->no_sync = true; break;
		case P_FOLLOW: a->follow = true; break;
		case P_CACHE: a->cache = optarg; break;
		case P_NAME: a->publish = optarg; break;
		case P_FROM_FLOOR: a->from_floor = true; break;
		case P_TTL:
			if (!cli_parse_i64("project", "--cache-ttl", optarg, 1, INT32_MAX, &a->cache_ttl_ms))
				return CLI_EXIT_USAGE;
			break;
		default: return cli_usage_error("project", "unknown option '%s'", argv[optind - 1]);
		}
	}
	if (!a->db)
		return cli_usage_error("project", "--db FILE is required");
	if (optind < argc) {
		a->view = argv[optind];
		if (strcmp(a->view, "owner") != 0 && strcmp(a->view, "availability") != 0)
			return cli_usage_error("project", "unknown view '%s' (owner, availability)", a->view);
		if (optind + 2 != argc)
			return cli_usage_error("project", "%s takes one name", a->view);
		a->name = argv[optind + 1];
	}
	if (a->follow && a->view)
		return cli_usage_error("project", "--follow does not take a view");
	return CLI_EXIT_OK;
}

/* Catches up (or follows) the log into p; logs the position reached on stderr. */
static int project_sync(struct relay_project *p, const struct project_args *a, hf_error *err)
{
	hf_store *st = NULL;
	int rc = hf_open(cli_g.url, NULL, &st, err);
	if (rc != HF_OK)
		return rc;
	if (a->follow) {
		struct sigaction sa;
		memset(&sa, 0, sizeof(sa));
		sa.sa_handler = on_project_signal;
		sigaction(SIGINT, &sa, NULL);
		sigaction(SIGTERM, &sa, NULL);
	}
	rc = relay_project_sync(p, st, a->follow ? 1000 : 0, &project_stop, err);
	/* Its next events were trimmed by retention: never a silent jump. */
	uint64_t upto;
	while (rc == HF_ETRIMMED && relay_trimmed_upto(err, &upto) && upto > relay_project_seq(p)) {
		if (!a->from_floor) {
			relay_err(err, HF_ETRIMMED,
			          "the projection is at seq %" PRIu64
			          " but events up to seq %" PRIu64
			          " were trimmed by retention; --from-floor skips them and goes on",
			          relay_project_seq(p), upto);
			break;
		}
		if ((rc = relay_project_skip_to(p, upto, err)) == HF_OK)
			rc = relay_project_sync(p, st, a->follow ? 1000 : 0, &project_stop, err);
	}
	hf_close(st);
	if (rc == HF_OK)
		relay_log("info", "msg=projected seq=%" PRIu64, relay_project_seq(p));
	return rc;
}

int cli_cmd_project(int argc, char **argv)
{
	struct project_args a;
	int rc = project_parse(argc, argv, &a);
	if (rc != CLI_EXIT_OK)
		return rc;
	struct relay_project *p = NULL;
	hf_error err = {0};
	rc = relay_project_open(a.db, a.rebuild, &p, &err);
	if (rc == HF_OK && a.cache)
		rc = relay_project_cache(p, a.cache, a.cache_ttl_ms, &err);
	if (rc == HF_OK && a.publish)
		rc = relay_project_publish(p, a.publish, &err);
	if (rc == HF_OK && !a.no_sync)
		rc = project_sync(p, &a, &err);
	char *json = NULL;
	bool hit = false;
	if (rc == HF_OK && a.view) {
		rc = relay_project_cached(p, a.view, a.name, &json, &hit, &err);
		if (rc == HF_OK && a.cache)
			relay_log("info", "msg=view cache=%s", hit ? "hit" : "miss");
	}
	relay_project_close(p);
	if (rc != HF_OK)
		return cli_fail("project", &err);
	if (json) {
		json_t *j = json_loads(json, 0, NULL);
		free(json);
		if (j)
			cli_print_json(j);
	}
	return CLI_EXIT_OK;
}
