/*
 * cli.h — what the files of the `holdfast` command line share: global options, exit codes,
 * output helpers and the commands. The CLI uses only the public API (holdfast.h) of
 * libholdfast; names here are cli_, everything file-local is static.
 */
#ifndef HF_CLI_H
#define HF_CLI_H

#include <getopt.h>
#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "holdfast.h"

/* Exit codes, documented in docs/cli.md. `run` passes its command's code through and uses
 * CLI_EXIT_LOCK_LOST when the lock is lost while the command runs. */
enum {
	CLI_EXIT_OK = 0,
	CLI_EXIT_USAGE = 1,       /* bad arguments, an invalid request, an unsupported engine */
	CLI_EXIT_BUSY = 2,        /* unavailable, wait timeout, version/capacity conflicts */
	CLI_EXIT_NOT_FOUND = 3,   /* no such resource or hold */
	CLI_EXIT_HOLD_GONE = 4,   /* bad token, or the hold has ended */
	CLI_EXIT_UNREACHABLE = 5, /* server or engine unreachable, closing, or garbled reply */
	CLI_EXIT_AUTH = 6,        /* missing or wrong API key */
	CLI_EXIT_SERVER = 7,      /* the server or engine failed (storage, internal, ...) */
	CLI_EXIT_TRIMMED = 10,    /* events_trimmed: relay, project, replay, events below the floor */
	CLI_EXIT_LOCK_LOST = 75,  /* run: the lock was lost; the command was stopped */
	CLI_EXIT_CANNOT_EXEC = 126,
	CLI_EXIT_NOT_FOUND_EXEC = 127,
};

#define CLI_DEFAULT_SERVER "http://127.0.0.1:7070"
#define CLI_DEFAULT_TTL_MS 30000

/* Options every command accepts, before or after the command name. */
struct cli_global {
	const char *url; /* engine URL: --server/--engine, $HOLDFAST_SERVER, or the default */
	bool json;
	bool quiet;
};

extern struct cli_global cli_g;

/* Long options shared by every command; command tables end with CLI_COMMON_OPTS. */
enum { CLI_OPT_SERVER = 1000, CLI_OPT_ENGINE, CLI_OPT_JSON, CLI_OPT_HELP };
#define CLI_COMMON_OPTS                                       \
	{"server", required_argument, NULL, CLI_OPT_SERVER},      \
	{"engine", required_argument, NULL, CLI_OPT_ENGINE},      \
	{"json", no_argument, NULL, CLI_OPT_JSON},                \
	{"help", no_argument, NULL, CLI_OPT_HELP},                \
	{NULL, 0, NULL, 0}

/* Handles a common option (returns true), printing `usage` for --help and exiting. */
bool cli_common_opt(int c, const char *optarg_, const char *usage);
/* Reports a usage error ("holdfast CMD: message", then "try --help") and returns 1. */
int cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Parses a non-negative integer option, or reports a usage error and returns false. */
bool cli_parse_i64(const char *cmd, const char *what, const char *s, int64_t lo, int64_t hi,
                   int64_t *out);

/* Opens cli_g.url; on failure reports and returns the exit code (else 0). */
int cli_open(hf_store **store);
/* The exit code of a library error code. */
int cli_exit_code(int code);
/* Reports an error (stderr, or {"error":...} on stdout with --json); returns its exit code. */
int cli_fail(const char *cmd, const hf_error *err);

/* JSON forms (the same field names as the HTTP API) and human printing. */
json_t *cli_hold_json(const hf_hold *hold);
json_t *cli_resource_json(const hf_resource *res);
json_t *cli_event_json(const hf_event *ev);
void cli_print_json(json_t *j); /* prints, then releases j */
void cli_print_hold(const hf_hold *hold);
void cli_print_resource(const hf_resource *res);
void cli_print_event(const hf_event *ev);
/* "2024-05-01T12:00:00.123Z" for a time in ms; buf of at least 32 bytes. */
const char *cli_time(int64_t ms, char *buf, size_t size);

/* The default owner: $HOLDFAST_OWNER, else "user@host". */
const char *cli_default_owner(void);

/* Commands: argv[0] is the command name; return the exit code. */
int cli_cmd_acquire(int argc, char **argv);
int cli_cmd_extend(int argc, char **argv);
int cli_cmd_confirm(int argc, char **argv);
int cli_cmd_release(int argc, char **argv);
int cli_cmd_get(int argc, char **argv);
int cli_cmd_list(int argc, char **argv);
int cli_cmd_resources(int argc, char **argv);
int cli_cmd_events(int argc, char **argv);
int cli_cmd_stats(int argc, char **argv);
int cli_cmd_run(int argc, char **argv);
int cli_cmd_saga(int argc, char **argv);      /* sagas.c */
int cli_cmd_saga_type(int argc, char **argv); /* sagas.c */
/* relay_cmd.c, built with src/relay (HF_CLI_RELAY). */
int cli_cmd_relay(int argc, char **argv);
int cli_cmd_consume(int argc, char **argv);
int cli_cmd_tx(int argc, char **argv);        /* sagas.c: TCC transactions */
int cli_cmd_replay(int argc, char **argv);  /* project_cmd.c */
int cli_cmd_project(int argc, char **argv); /* project_cmd.c */
int cli_cmd_request(int argc, char **argv); /* request_cmd.c */

#endif /* HF_CLI_H */
