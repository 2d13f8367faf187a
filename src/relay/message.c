/*
 * message.c — the relayed message form both destinations share: one message per (event,
 * resource), its id, its AMQP routing key and its Redis partition; and the small helpers
 * (time, sleep, logging, errors, URLs) of src/relay.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "relay.h"

bool relay_is_own(const char *resource)
{
	return resource && strncmp(resource, RELAY_OWN_PREFIX, strlen(RELAY_OWN_PREFIX)) == 0;
}

/* How many messages an event becomes: one per revision, or one when the engine gives none. */
static size_t copies(const hf_event *ev)
{
	if (relay_is_own(ev->resource))
		return 0;
	return ev->n_revisions ? ev->n_revisions : 1;
}

int relay_msgs_build(const hf_event *evs, size_t n_evs, struct relay_msg **msgs, size_t *n,
                     char ***jsons)
{
	size_t total = 0;
	for (size_t i = 0; i < n_evs; i++)
		total += copies(&evs[i]);
	struct relay_msg *m = calloc(total ? total : 1, sizeof(*m));
	char **js = calloc(n_evs ? n_evs : 1, sizeof(*js));
	if (!m || !js)
		goto out_oom;
	size_t k = 0;
	for (size_t i = 0; i < n_evs; i++) {
		const hf_event *ev = &evs[i];
		size_t c = copies(ev);
		if (!c)
			continue;
		js[i] = hf_event_json(ev);
		if (!js[i])
			goto out_oom;
		if (!ev->n_revisions) {
			m[k++] = (struct relay_msg){ev, js[i], ev->resource, ev->revision};
			continue;
		}
		for (size_t r = 0; r < ev->n_revisions; r++)
			m[k++] = (struct relay_msg){ev, js[i], ev->revisions[r].resource,
			                            ev->revisions[r].revision};
	}
	*msgs = m;
	*n = total;
	*jsons = js;
	return HF_OK;
out_oom:
	relay_msgs_free(m, js, n_evs);
	return HF_ENOMEM;
}

void relay_msgs_free(struct relay_msg *msgs, char **jsons, size_t n_evs)
{
	if (jsons)
		for (size_t i = 0; i < n_evs; i++)
			free(jsons[i]);
	free(jsons);
	free(msgs);
}

void relay_message_id(const struct relay_msg *m, char *buf, size_t size)
{
	if (m->resource && m->revision > 0)
		snprintf(buf, size, "%s/%" PRId64, m->resource, m->revision);
	else
		snprintf(buf, size, "%" PRIu64, m->ev->seq);
}

static uint64_t fnv1a(const char *s)
{
	uint64_t h = 14695981039346656037ULL;
	for (; *s; s++) {
		h ^= (unsigned char)*s;
		h *= 1099511628211ULL;
	}
	return h;
}

unsigned relay_partition(const char *resource, unsigned partitions)
{
	if (!resource || partitions <= 1)
		return 0;
	return (unsigned)(fnv1a(resource) % partitions);
}

void relay_routing_key(const struct relay_msg *m, char *buf, size_t size)
{
	size_t len = (size_t)snprintf(buf, size, "%s", m->ev->type);
	if (!m->resource || len + 1 >= size)
		return;
	buf[len++] = '.';
	for (const unsigned char *p = (const unsigned char *)m->resource; *p; p++) {
		bool plain = *p > 0x20 && *p < 0x7f && !strchr(".%*#", *p);
		size_t need = plain ? 1 : 3;
		if (len + need + 1 > size || len + need > RELAY_ROUTING_KEY_MAX) {
			/* Too long for a shortstr: the name's hash instead, still one word per
			 * name. */
			len = (size_t)snprintf(buf, size, "%s.%%%016" PRIx64, m->ev->type,
			                       fnv1a(m->resource));
			return;
		}
		if (plain)
			buf[len++] = (char)*p;
		else
			len += (size_t)snprintf(buf + len, size - len, "%%%02X", *p);
	}
	buf[len] = '\0';
}

/* ---- Helpers. ------------------------------------------------------------------------ */

int64_t relay_mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void relay_sleep_ms(int64_t ms, volatile sig_atomic_t *stop)
{
	/* In slices, so a stop request is seen within 50 ms. */
	while (ms > 0 && !(stop && *stop)) {
		int64_t step = ms < 50 ? ms : 50;
		struct timespec ts = {.tv_sec = 0, .tv_nsec = step * 1000000};
		nanosleep(&ts, NULL);
		ms -= step;
	}
}

void relay_back_off(int64_t *ms, int64_t cap, volatile sig_atomic_t *stop)
{
	relay_sleep_ms(*ms, stop);
	*ms = *ms > cap / 2 ? cap : *ms * 2;
}

bool relay_trimmed_upto(const hf_error *err, uint64_t *upto)
{
	unsigned long long n;
	if (err->code != HF_ETRIMMED || sscanf(err->message, "events up to seq %llu ", &n) != 1)
		return false;
	*upto = (uint64_t)n;
	return true;
}

void relay_err(hf_error *err, int code, const char *fmt, ...)
{
	if (!err)
		return;
	err->code = code;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err->message, sizeof(err->message), fmt, ap);
	va_end(ap);
}

void relay_log(const char *level, const char *fmt, ...)
{
	char t[32];
	struct timespec ts;
	struct tm tm;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	strftime(t, sizeof(t), "%Y-%m-%dT%H:%M:%S", &tm);
	fprintf(stderr, "ts=%s.%03ldZ level=%s ", t, ts.tv_nsec / 1000000, level);
	va_list ap;
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	fflush(stderr);
}

int relay_parse_redis_url(const char *url, char *host, size_t size, int *port, hf_error *err)
{
	const char *p = url + strlen("redis://");
	const char *end = p + strcspn(p, ":/?");
	size_t n = (size_t)(end - p);
	if (strncmp(url, "redis://", 8) != 0 || n == 0 || n >= size) {
		relay_err(err, HF_EINVAL, "redis url must be redis://host[:port], not '%s'", url);
		return HF_EINVAL;
	}
	memcpy(host, p, n);
	host[n] = '\0';
	*port = 6379;
	if (*end == ':') {
		char *stop;
		long v = strtol(end + 1, &stop, 10);
		if (v < 1 || v > 65535 || (*stop && *stop != '/' && *stop != '?')) {
			relay_err(err, HF_EINVAL, "bad port in redis url '%s'", url);
			return HF_EINVAL;
		}
		*port = (int)v;
	}
	return HF_OK;
}
