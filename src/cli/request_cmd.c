/*
 * request_cmd.c — `holdfast request`: one request/reply over RabbitMQ (src/relay/request.c),
 * the reply's body on stdout; how a script (and later a saga step) calls a queue service.
 */
#include <stdio.h>
#include <stdlib.h>

#include "cli.h"
#include "relay.h"

static const char request_usage[] =
    "usage: holdfast request --to amqp://... --routing-key KEY [--exchange NAME]\n"
    "                        [--timeout MS] BODY\n"
    "\n"
    "Publishes BODY with a private reply queue (reply_to) and a random correlation id, waits\n"
    "for the reply with that id and prints its body. The service replies to reply_to on the\n"
    "default exchange with the same correlation_id. See docs/events.md.\n"
    "\n"
    "  --to URL            amqp://user:pass@host:port/vhost\n"
    "  --routing-key KEY   where the service listens (a queue name on the default exchange)\n"
    "  --exchange NAME     exchange to publish to (default \"\": the default exchange)\n"
    "  --timeout MS        wait this long for the reply (default 30000); also the request's TTL\n"
    "\n"
    "exit codes: 0 replied, 2 no reply in time or nobody listens on KEY, 1 bad options,\n"
    "  5 broker unreachable, 6 login refused\n";

int cli_cmd_request(int argc, char **argv)
{
	enum { Q_TO = 1, Q_KEY, Q_EXCHANGE, Q_TIMEOUT };
	static const struct option opts[] = {
	    {"to", required_argument, NULL, Q_TO},
	    {"routing-key", required_argument, NULL, Q_KEY},
	    {"exchange", required_argument, NULL, Q_EXCHANGE},
	    {"timeout", required_argument, NULL, Q_TIMEOUT},
	    CLI_COMMON_OPTS,
	};
	struct relay_request rq = {.exchange = "", .timeout_ms = 30000};
	int c;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (cli_common_opt(c, optarg, request_usage))
			continue;
		switch (c) {
		case Q_TO: rq.url = optarg; break;
		case Q_KEY: rq.routing_key = optarg; break;
		case Q_EXCHANGE: rq.exchange = optarg; break;
		case Q_TIMEOUT:
			if (!cli_parse_i64("request", "--timeout", optarg, 1, HF_WAIT_MAX_MS, &rq.timeout_ms))
				return CLI_EXIT_USAGE;
			break;
		default: return cli_usage_error("request", "unknown option '%s'", argv[optind - 1]);
		}
	}
	if (!rq.url || !rq.routing_key)
		return cli_usage_error("request", "--to URL and --routing-key KEY are required");
	if (optind + 1 != argc)
		return cli_usage_error("request", "takes one BODY argument");
	rq.body = argv[optind];
	char *reply = NULL;
	hf_error err = {0};
	int rc = relay_amqp_request(&rq, &reply, &err);
	if (rc != HF_OK)
		return cli_fail("request", &err);
	puts(reply);
	free(reply);
	return CLI_EXIT_OK;
}
