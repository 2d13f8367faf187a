/*
 * sagas.c — `holdfast saga start|get|list|resume`, `holdfast saga-type put|get` and
 * `holdfast tx start|get` (TCC): the saga calls of the public API (hf_saga_*, hf_tx_*), their
 * JSON printed as the HTTP API shows it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static const char saga_usage[] =
	"usage: holdfast saga start TYPE [INPUT_JSON] [--idempotency-key K]\n"
	"       holdfast saga get ID\n"
	"       holdfast saga list [--state S] [--type T] [--limit N] [--after ID]\n"
	"       holdfast saga resume ID\n"
	"\n"
	"Starts a saga of a registered type with an input object (default {}), shows one (state,\n"
	"steps, timeline), lists them (states: " HF_SAGA_STATES "), or resumes\n"
	"one parked as compensation_failed. See docs/sagas.md.\n";

static const char tx_usage[] =
	"usage: holdfast tx start REQUEST_JSON [--idempotency-key K]   (- for stdin)\n"
	"       holdfast tx get ID\n"
	"\n"
	"Starts a TCC transaction ({\"timeout_ms\", \"participants\": [{\"hold\": {...}} |\n"
	"{\"http\": {\"try\",\"confirm\",\"cancel\",\"body\"}}]}) or shows one. See docs/sagas.md, TCC.\n";

static const char type_usage[] =
	"usage: holdfast saga-type put NAME FILE   (FILE: the type's JSON, - for stdin)\n"
	"       holdfast saga-type get NAME\n"
	"\n"
	"Registers (or replaces) a saga type, or shows one. See docs/sagas.md for the format.\n";

/* Prints the JSON text (consumed) pretty, or the error; returns the exit code. */
static int finish(const char *cmd, int rc, char *json, const hf_error *err)
{
	if (rc != HF_OK)
		return cli_fail(cmd, err);
	json_t *j = json_loads(json, 0, NULL);
	free(json);
	if (!j) {
		hf_error e = {.code = HF_EPROTO};
		snprintf(e.message, sizeof(e.message), "the answer is not JSON");
		return cli_fail(cmd, &e);
	}
	cli_print_json(j);
	return CLI_EXIT_OK;
}

/* One line per saga: id, state, type, error code. */
static int print_list(const char *cmd, int rc, char *json, const hf_error *err)
{
	if (rc != HF_OK || cli_g.json)
		return finish(cmd, rc, json, err);
	json_t *j = json_loads(json, 0, NULL), *items = json_object_get(j, "items");
	free(json);
	for (size_t i = 0; i < json_array_size(items); i++) {
		json_t *s = json_array_get(items, i);
		const char *code = json_string_value(json_object_get(json_object_get(s, "error"), "code"));
		printf("%s  %-19s  %s%s%s\n", json_string_value(json_object_get(s, "id")),
		       json_string_value(json_object_get(s, "state")),
		       json_string_value(json_object_get(s, "type")), code ? "  " : "", code ? code : "");
	}
	if (json_is_true(json_object_get(j, "more")))
		fprintf(stderr, "(more: --after the last id)\n");
	json_decref(j);
	return CLI_EXIT_OK;
}

/* Parses the options of `saga` wherever they are (getopt permutes): the positional arguments
 * end up in argv[optind..]. */
struct saga_opts {
	const char *key, *state, *type, *after;
	int64_t limit;
};

static int parse_opts(int argc, char **argv, const char *usage, struct saga_opts *o)
{
	static const struct option opts[] = {
		{"idempotency-key", required_argument, NULL, 'k'},
		{"state", required_argument, NULL, 's'},
		{"type", required_argument, NULL, 't'},
		{"after", required_argument, NULL, 'A'},
		{"limit", required_argument, NULL, 'l'},
		CLI_COMMON_OPTS,
	};
	int c;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (c == 'k')
			o->key = optarg;
		else if (c == 's')
			o->state = optarg;
		else if (c == 't')
			o->type = optarg;
		else if (c == 'A')
			o->after = optarg;
		else if (c == 'l') {
			if (!cli_parse_i64(argv[0], "--limit", optarg, 1, HF_LIST_MAX, &o->limit))
				return CLI_EXIT_USAGE;
		} else if (!cli_common_opt(c, optarg, usage))
			return cli_usage_error(argv[0], "unknown option '%s'", argv[optind - 1]);
	}
	return CLI_EXIT_OK;
}

static int saga_run(hf_store *store, const char *verb, int n, char **args, struct saga_opts *o)
{
	hf_error err;
	char *json = NULL;
	int rc;
	if (strcmp(verb, "start") == 0 && (n == 1 || n == 2)) {
		rc = hf_saga_start(store, args[0], n == 2 ? args[1] : "{}", o->key, &json, NULL, &err);
		return finish("saga start", rc, json, &err);
	}
	if (strcmp(verb, "get") == 0 && n == 1) {
		rc = hf_saga_get(store, args[0], &json, &err);
		return finish("saga get", rc, json, &err);
	}
	if (strcmp(verb, "resume") == 0 && n == 1) {
		rc = hf_saga_resume(store, args[0], &json, &err);
		return finish("saga resume", rc, json, &err);
	}
	if (strcmp(verb, "list") == 0 && n == 0) {
		rc = hf_saga_list(store, o->state, o->type, o->after, (size_t)o->limit, &json, &err);
		return print_list("saga list", rc, json, &err);
	}
	return cli_usage_error("saga", "unknown form 'saga %s' with %d argument(s)", verb, n);
}

int cli_cmd_saga(int argc, char **argv)
{
	struct saga_opts o = {.limit = 100};
	int rc = parse_opts(argc, argv, saga_usage, &o);
	if (rc != CLI_EXIT_OK)
		return rc;
	if (optind >= argc)
		return cli_usage_error("saga", "start, get, list or resume?");
	hf_store *store;
	if ((rc = cli_open(&store)) != CLI_EXIT_OK)
		return rc;
	rc = saga_run(store, argv[optind], argc - optind - 1, argv + optind + 1, &o);
	hf_close(store);
	return rc;
}

/* The whole of a file (or stdin for "-"), NUL-terminated; NULL on failure (reported). */
static char *read_all(const char *path)
{
	FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
	if (!f) {
		fprintf(stderr, "holdfast saga-type: cannot open '%s'\n", path);
		return NULL;
	}
	size_t len = 0, cap = 65536;
	char *buf = malloc(cap);
	size_t got;
	while (buf && (got = fread(buf + len, 1, cap - len - 1, f)) > 0) {
		len += got;
		if (len + 1 == cap) {
			char *nb = cap < (1u << 22) ? realloc(buf, cap * 2) : NULL;
			if (!nb) {
				free(buf);
				buf = NULL;
				fprintf(stderr, "holdfast saga-type: '%s' is too large\n", path);
			}
			buf = nb, cap *= 2;
		}
	}
	if (buf)
		buf[len] = 0;
	if (f != stdin)
		fclose(f);
	return buf;
}

int cli_cmd_saga_type(int argc, char **argv)
{
	struct saga_opts o = {.limit = 100};
	int rc = parse_opts(argc, argv, type_usage, &o);
	if (rc != CLI_EXIT_OK)
		return rc;
	int n = argc - optind;
	char **args = argv + optind;
	bool put = n == 3 && strcmp(args[0], "put") == 0, get = n == 2 && strcmp(args[0], "get") == 0;
	if (!put && !get)
		return cli_usage_error("saga-type", "expected 'put NAME FILE' or 'get NAME'");
	char *text = put ? read_all(args[2]) : NULL;
	if (put && !text)
		return CLI_EXIT_USAGE;
	hf_store *store;
	if ((rc = cli_open(&store)) != CLI_EXIT_OK) {
		free(text);
		return rc;
	}
	hf_error err;
	char *json = NULL;
	rc = put ? hf_saga_type_put(store, args[1], text, &json, &err)
	         : hf_saga_type_get(store, args[1], &json, &err);
	free(text);
	rc = finish(put ? "saga-type put" : "saga-type get", rc, json, &err);
	hf_close(store);
	return rc;
}

int cli_cmd_tx(int argc, char **argv)
{
	struct saga_opts o = {.limit = 100};
	int rc = parse_opts(argc, argv, tx_usage, &o);
	if (rc != CLI_EXIT_OK)
		return rc;
	int n = argc - optind - 1;
	const char *verb = optind < argc ? argv[optind] : "";
	bool start = strcmp(verb, "start") == 0 && n == 1, get = strcmp(verb, "get") == 0 && n == 1;
	if (!start && !get)
		return cli_usage_error("tx", "start REQUEST_JSON or get ID?");
	char *req = NULL;
	const char *arg = argv[optind + 1];
	if (start && strcmp(arg, "-") == 0 && !(req = read_all(arg)))
		return CLI_EXIT_USAGE;
	hf_store *store;
	if ((rc = cli_open(&store)) != CLI_EXIT_OK) {
		free(req);
		return rc;
	}
	hf_error err;
	char *json = NULL;
	rc = start ? hf_tx_start(store, req ? req : arg, o.key, &json, NULL, &err)
	           : hf_tx_get(store, arg, &json, &err);
	free(req);
	rc = finish(start ? "tx start" : "tx get", rc, json, &err);
	hf_close(store);
	return rc;
}
