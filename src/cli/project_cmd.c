/*
 * project_cmd.c — `holdfast replay`: the state rebuilt from the event log alone (src/relay's
 * fold), compared with the live state read through the API; and the read-model commands.
 */
#include <inttypes.h>
#include <stdio.h>
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
