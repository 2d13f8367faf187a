/*
 * stats.c — `holdfast stats`: the server's lock statistics (GET /v1/stats).
 * The one command that is not a library call: statistics are the server's own (latency
 * percentiles, rates over its lifetime), so no engine operation exists for them. It makes
 * one plain HTTP GET with libevent (already a dependency of libholdfast) and so works only
 * against an http:// server.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "cli.h"

static const char stats_usage[] =
	"usage: holdfast stats [--json]\n"
	"\n"
	"Prints the server's statistics: per resource and overall acquisitions, acquisition\n"
	"latency percentiles, success, contention, timeout and expiry rates, holds by state and\n"
	"waiters. Needs a holdfastd server (an http:// URL).\n"
	"exit codes: 0 ok, 5 server unreachable, 6 unauthorized\n";

#define STATS_TIMEOUT_S 10

struct stats_get {
	int status;          /* 0: no answer */
	bool error_seen;
	struct evbuffer *body;
	struct event_base *base;
};

static void stats_done(struct evhttp_request *req, void *arg)
{
	struct stats_get *g = arg;
	if (req && evhttp_request_get_response_code(req) > 0) {
		g->status = evhttp_request_get_response_code(req);
		evbuffer_add_buffer(g->body, evhttp_request_get_input_buffer(req));
	}
	event_base_loopexit(g->base, NULL);
}

static void stats_error(enum evhttp_request_error kind, void *arg)
{
	(void)kind;
	struct stats_get *g = arg;
	g->error_seen = true;
}

/* Prints a JSON value as indented "key: value" lines: the human form of any stats shape. */
static void print_tree(const json_t *j, int depth, const char *key)
{
	if (json_is_object(j)) {
		if (key)
			printf("%*s%s:\n", depth * 2, "", key);
		const char *k;
		json_t *v;
		json_object_foreach ((json_t *)j, k, v)
			print_tree(v, key ? depth + 1 : depth, k);
		return;
	}
	if (json_is_array(j)) {
		printf("%*s%s:\n", depth * 2, "", key ? key : "");
		size_t i;
		json_t *v;
		json_array_foreach (j, i, v) {
			char idx[24];
			snprintf(idx, sizeof(idx), "[%zu]", i);
			print_tree(v, depth + 1, idx);
		}
		return;
	}
	if (json_is_real(j)) {
		printf("%*s%s: %.4g\n", depth * 2, "", key ? key : "", json_real_value(j));
		return;
	}
	char *text = json_dumps(j, JSON_ENCODE_ANY);
	printf("%*s%s: %s\n", depth * 2, "", key ? key : "", text ? text : "?");
	free(text);
}

int cli_cmd_stats(int argc, char **argv)
{
	static const struct option opts[] = {CLI_COMMON_OPTS};
	int c;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1)
		if (!cli_common_opt(c, optarg, stats_usage))
			return cli_usage_error("stats", "unknown option '%s'", argv[optind - 1]);
	if (optind != argc)
		return cli_usage_error("stats", "unexpected argument '%s'", argv[optind]);

	int code = CLI_EXIT_OK;
	hf_error err = {.code = HF_OK};
	struct evhttp_uri *uri = evhttp_uri_parse(cli_g.url);
	const char *scheme = uri ? evhttp_uri_get_scheme(uri) : NULL;
	if (!scheme || strcmp(scheme, "http") != 0 || !evhttp_uri_get_host(uri)) {
		evhttp_uri_free(uri);
		err.code = HF_ENOTSUP;
		snprintf(err.message, sizeof(err.message),
		         "stats needs a holdfastd server (an http:// url), not '%s'", cli_g.url);
		return cli_fail("stats", &err);
	}
	char host[256];
	snprintf(host, sizeof(host), "%s", evhttp_uri_get_host(uri));
	size_t hl = strlen(host);
	if (hl >= 2 && host[0] == '[' && host[hl - 1] == ']') {
		memmove(host, host + 1, hl - 2);
		host[hl - 2] = '\0';
	}
	int port = evhttp_uri_get_port(uri) > 0 ? evhttp_uri_get_port(uri) : 80;
	evhttp_uri_free(uri);

	struct stats_get g = {.body = evbuffer_new()};
	struct event_base *base = event_base_new();
	g.base = base;
	struct evhttp_connection *evcon =
		base ? evhttp_connection_base_new(base, NULL, host, (unsigned short)port) : NULL;
	struct evhttp_request *req = evcon ? evhttp_request_new(stats_done, &g) : NULL;
	json_t *body = NULL;
	if (!g.body || !req) {
		err.code = HF_ENOMEM;
		snprintf(err.message, sizeof(err.message), "out of memory");
		code = cli_fail("stats", &err);
		goto out;
	}
	evhttp_connection_set_timeout(evcon, STATS_TIMEOUT_S);
	evhttp_request_set_error_cb(req, stats_error);
	struct evkeyvalq *h = evhttp_request_get_output_headers(req);
	char hostport[300];
	snprintf(hostport, sizeof(hostport), "%s:%d", host, port);
	evhttp_add_header(h, "Host", hostport);
	evhttp_add_header(h, "Accept", "application/json");
	const char *key = getenv("HOLDFAST_API_KEY");
	if (key && *key) {
		char auth[512];
		snprintf(auth, sizeof(auth), "Bearer %s", key);
		evhttp_add_header(h, "Authorization", auth);
	}
	if (evhttp_make_request(evcon, req, EVHTTP_REQ_GET, "/v1/stats") != 0) {
		err.code = HF_EENGINE;
		snprintf(err.message, sizeof(err.message), "cannot send a request to %.200s", hostport);
		code = cli_fail("stats", &err);
		goto out;
	}
	event_base_dispatch(base);
	if (g.status == 0) {
		err.code = HF_EENGINE;
		snprintf(err.message, sizeof(err.message), "cannot reach holdfastd at %.200s", hostport);
		code = cli_fail("stats", &err);
		goto out;
	}
	size_t len = evbuffer_get_length(g.body);
	json_error_t jerr;
	body = json_loadb((const char *)evbuffer_pullup(g.body, -1), len, 0, &jerr);
	if (g.status != 200) {
		const json_t *e = json_object_get(body, "error");
		const json_t *ecode = json_object_get(e, "code"), *emsg = json_object_get(e, "message");
		err.code = json_is_string(ecode) ? hf_err_from_name(json_string_value(ecode)) : HF_EPROTO;
		snprintf(err.message, sizeof(err.message), "%s",
		         json_is_string(emsg) ? json_string_value(emsg) : "server answered an error");
		code = cli_fail("stats", &err);
		goto out;
	}
	if (!json_is_object(body)) {
		err.code = HF_EPROTO;
		snprintf(err.message, sizeof(err.message), "stats reply is not a json object");
		code = cli_fail("stats", &err);
		goto out;
	}
	if (cli_g.json) {
		cli_print_json(body);
		body = NULL;
	} else {
		print_tree(body, 0, NULL);
	}
out:
	json_decref(body);
	if (evcon)
		evhttp_connection_free(evcon);
	if (base)
		event_base_free(base);
	if (g.body)
		evbuffer_free(g.body);
	return code;
}
