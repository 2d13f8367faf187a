/*
 * baseline.c — holdfast-relay-baseline, the yardstick of bench/relay_bench.py: publishes N
 * messages of SIZE bytes as plainly as each broker allows with the relay's guarantees —
 * RabbitMQ: persistent, mandatory, publisher confirms per BATCH; Redis: XADD pipelined per
 * BATCH — and prints messages per second. No holdfast store is involved.
 * Usage: holdfast-relay-baseline amqp://...|redis://... EXCHANGE|STREAM N BATCH SIZE
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "relay.h"

/* Publishes through the relay's own sinks: the same connection, publish and confirm code,
 * without the store, the lease, the checkpoint or the event JSON. */
int main(int argc, char **argv)
{
	if (argc != 6) {
		fprintf(stderr, "usage: %s URL EXCHANGE|STREAM N BATCH SIZE\n", argv[0]);
		return 1;
	}
	long n = atol(argv[3]), batch = atol(argv[4]), size = atol(argv[5]);
	if (n < 1 || batch < 1 || size < 2) {
		fprintf(stderr, "N, BATCH and SIZE must be positive\n");
		return 1;
	}
	struct relay_dest_opts d = {
	    .url = argv[1], .exchange = argv[2], .partitions = 1, .stream_prefix = argv[2]};
	struct relay_sink *sink;
	hf_error err = {0};
	if (relay_sink_new(&d, &sink, &err) != HF_OK) {
		fprintf(stderr, "%s\n", err.message);
		return 1;
	}
	char *body = malloc((size_t)size + 1);
	struct relay_msg *msgs = calloc((size_t)batch, sizeof(*msgs));
	hf_event ev = {.type = "bench.event"};
	if (!body || !msgs)
		return 1;
	memset(body, 'x', (size_t)size);
	body[0] = '"';
	body[size - 1] = '"';
	body[size] = '\0';
	for (long i = 0; i < batch; i++)
		msgs[i] = (struct relay_msg){&ev, body, "bench", 0};
	int64_t t0 = relay_mono_ms();
	int rc = 0;
	for (long sent = 0; sent < n; sent += batch) {
		size_t k = (size_t)(n - sent < batch ? n - sent : batch);
		ev.seq = (uint64_t)sent + 1;
		if (sink->deliver(sink, msgs, k, &err) != HF_OK) {
			fprintf(stderr, "%s\n", err.message);
			rc = 1;
			break;
		}
	}
	int64_t ms = relay_mono_ms() - t0;
	if (!rc)
		printf("%ld messages in %" PRId64 " ms: %.0f msg/s\n", n, ms,
		       (double)n * 1000.0 / (double)(ms ? ms : 1));
	sink->free(sink);
	free(msgs);
	free(body);
	return rc;
}
