/*
 * main.c — the holdfast-check command: reads a history (a file or stdin), runs the checks of
 * checks.c and answers with its exit status: 0 valid, 1 a violation, 2 bad input or options,
 * 3 unknown (a linearizability search ran past its bound and nothing else was wrong). With
 * --events it reads an event log instead and runs the ordering checks of events.c.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

static const char usage[] =
    "usage: holdfast-check [options] [HISTORY]   (HISTORY: a JSON-lines file; - or none: stdin)\n"
    "       holdfast-check --events [--partial] [LOG]   (LOG: JSON lines of events)\n"
    "  --events             the input is an event log: check seq order and revisions\n"
    "  --partial            (--events) the log starts mid-stream: revisions need not start at 1\n"
    "  --fifo               also check FIFO among waiting acquires\n"
    "  --fifo-slack-us N    a waiter is queued within N us of its invocation (default 1000)\n"
    "  --lease-slack-us N   a lease may end N us before invoke + ttl (default 2000)\n"
    "  --search-bound N     states the search may visit per resource (default 1000000)\n"
    "  --no-search          direct checks only, no linearizability search\n"
    "  --max-print N        violations printed in full (default 10)\n"
    "  --quiet              print nothing; the exit status says it all\n"
    "exit status: 0 valid, 1 violation, 2 bad input, 3 unknown (search bound exceeded)\n";

static int num(const char *s, int64_t min, int64_t *out)
{
	char *end;
	errno = 0;
	long long v = strtoll(s, &end, 10);
	if (errno || end == s || *end || v < min)
		return -1;
	*out = v;
	return 0;
}

/* holdfast-check --events: closes `in`. */
static int check_events(FILE *in, const char *path, bool partial, size_t max_print, bool quiet)
{
	struct hfc_events_report rep;
	char err[512];
	int rc = hfc_events_check(in, partial, max_print, quiet ? NULL : stdout, &rep, err,
	                          sizeof(err));
	if (in != stdin)
		fclose(in);
	if (rc < 0) {
		fprintf(stderr, "holdfast-check: %s: %s\n", path, err);
		return 2;
	}
	if (!quiet)
		printf("%s: %zu events, %zu resources, %zu violations\n", rc ? "INVALID" : "valid",
		       rep.events, rep.resources, rep.violations);
	return rc;
}

int main(int argc, char **argv)
{
	struct hfc_options opt;
	hfc_options_init(&opt);
	bool quiet = false, events = false, partial = false;
	enum {
		O_FIFO = 1,
		O_FIFO_SLACK,
		O_LEASE_SLACK,
		O_BOUND,
		O_NO_SEARCH,
		O_MAX_PRINT,
		O_QUIET,
		O_EVENTS,
		O_PARTIAL
	};
	static const struct option longs[] = {{"fifo", 0, 0, O_FIFO},
	                                      {"fifo-slack-us", 1, 0, O_FIFO_SLACK},
	                                      {"lease-slack-us", 1, 0, O_LEASE_SLACK},
	                                      {"search-bound", 1, 0, O_BOUND},
	                                      {"no-search", 0, 0, O_NO_SEARCH},
	                                      {"max-print", 1, 0, O_MAX_PRINT},
	                                      {"quiet", 0, 0, O_QUIET},
	                                      {"events", 0, 0, O_EVENTS},
	                                      {"partial", 0, 0, O_PARTIAL},
	                                      {"help", 0, 0, 'h'},
	                                      {0, 0, 0, 0}};
	int ch;
	int64_t v;
	while ((ch = getopt_long(argc, argv, "h", longs, NULL)) != -1) {
		switch (ch) {
		case O_FIFO:
			opt.fifo = true;
			break;
		case O_FIFO_SLACK:
		case O_LEASE_SLACK:
		case O_BOUND:
		case O_MAX_PRINT:
			if (num(optarg, ch == O_BOUND ? 1 : 0, &v) != 0) {
				fprintf(stderr, "holdfast-check: bad number '%s'\n%s", optarg,
				        usage);
				return 2;
			}
			if (ch == O_FIFO_SLACK)
				opt.fifo_slack_us = v;
			else if (ch == O_LEASE_SLACK)
				opt.lease_slack_us = v;
			else if (ch == O_BOUND)
				opt.search_bound = (uint64_t)v;
			else
				opt.max_print = (size_t)v;
			break;
		case O_NO_SEARCH:
			opt.no_search = true;
			break;
		case O_QUIET:
			quiet = true;
			break;
		case O_EVENTS:
			events = true;
			break;
		case O_PARTIAL:
			partial = true;
			break;
		case 'h':
			fputs(usage, stdout);
			return 0;
		default:
			fputs(usage, stderr);
			return 2;
		}
	}
	if (argc - optind > 1) {
		fputs(usage, stderr);
		return 2;
	}
	const char *path = optind < argc ? argv[optind] : "-";
	FILE *in = strcmp(path, "-") == 0 ? stdin : fopen(path, "r");
	if (!in) {
		fprintf(stderr, "holdfast-check: cannot open '%s': %s\n", path, strerror(errno));
		return 2;
	}
	char err[512];
	if (events)
		return check_events(in, path, partial, quiet ? 0 : opt.max_print, quiet);
	struct hfc_history h;
	int rc = hfc_history_read(in, &h, err, sizeof(err));
	if (in != stdin)
		fclose(in);
	if (rc != 0) {
		fprintf(stderr, "holdfast-check: %s: %s\n", path, err);
		return 2;
	}
	struct hfc_report rep;
	rc = hfc_check(&h, &opt, quiet ? NULL : stdout, &rep);
	hfc_history_release(&h);
	if (rc < 0) {
		fprintf(stderr, "holdfast-check: out of memory\n");
		return 2;
	}
	if (!quiet) {
		printf("%s: %zu ops, %zu grants, %zu resources; search: %zu linearizable, %zu "
		       "unknown, "
		       "%" PRIu64 " states",
		       rc == 0   ? "valid"
		       : rc == 1 ? "INVALID"
		                 : "UNKNOWN",
		       rep.ops, rep.grants, rep.resources, rep.searched, rep.unknown, rep.states);
		for (int i = 0; i < HFC_CHECK_COUNT; i++)
			if (rep.by_check[i])
				printf("; %s %zu", hfc_check_name((enum hfc_check_id)i),
				       rep.by_check[i]);
		putchar('\n');
	}
	return rc;
}
