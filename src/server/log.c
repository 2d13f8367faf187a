/*
 * log.c — holdfastd's structured logs: one logfmt line per event on stderr,
 * "ts=... level=... msg=... key=value ...", filtered by level.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "server/server.h"

static int min_level = HF__LOG_INFO;
static const char *const level_names[] = {"debug", "info", "warn", "error"};

void hf__log_set_level(int level)
{
	min_level = level;
}

int hf__log_level_parse(const char *s)
{
	for (int i = 0; i < 4; i++)
		if (strcasecmp(s, level_names[i]) == 0)
			return i;
	return -1;
}

bool hf__log_enabled(int level)
{
	return level >= min_level;
}

const char *hf__log_quote(char *buf, size_t size, const char *s)
{
	size_t o = 0;
	if (size < 3) {
		if (size)
			buf[0] = '\0';
		return buf;
	}
	buf[o++] = '"';
	/* Leave room for an escape pair, the closing quote and the NUL. */
	for (; s && *s && o + 4 < size; s++) {
		unsigned char c = (unsigned char)*s;
		if (c == '"' || c == '\\') {
			buf[o++] = '\\';
			buf[o++] = (char)c;
		} else if (c < 0x20 || c == 0x7f) {
			buf[o++] = '?'; /* a log line is one line */
		} else {
			buf[o++] = (char)c;
		}
	}
	buf[o++] = '"';
	buf[o] = '\0';
	return buf;
}

/* Writes "ts=... level=LEVEL msg=MSG" into line (room for 64 + strlen(msg) bytes); returns
 * its length. The date and time to the second are formatted once a second, per thread. */
static size_t log_prefix(char *line, int level, const char *msg)
{
	static _Thread_local time_t cached_sec = -1;
	static _Thread_local char cached[32]; /* "ts=YYYY-MM-DDTHH:MM:SS" */
	static _Thread_local size_t cached_len;
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	if (ts.tv_sec != cached_sec) {
		struct tm tm;
		gmtime_r(&ts.tv_sec, &tm);
		int n = snprintf(cached, sizeof(cached), "ts=%04d-%02d-%02dT%02d:%02d:%02d",
		                 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
		                 tm.tm_sec);
		cached_len = n > 0 && (size_t)n < sizeof(cached) ? (size_t)n : 0;
		cached_sec = ts.tv_sec;
	}
	size_t o = cached_len;
	memcpy(line, cached, o);
	long ms = ts.tv_nsec / 1000000;
	line[o++] = '.';
	line[o++] = (char)('0' + ms / 100);
	line[o++] = (char)('0' + ms / 10 % 10);
	line[o++] = (char)('0' + ms % 10);
	memcpy(line + o, "Z level=", 8);
	o += 8;
	size_t l = strlen(level_names[level]);
	memcpy(line + o, level_names[level], l);
	o += l;
	memcpy(line + o, " msg=", 5);
	o += 5;
	l = strlen(msg);
	memcpy(line + o, msg, l);
	return o + l;
}

/* Appends the decimal digits of v at line + o; returns the new length. */
static size_t put_u64(char *line, size_t o, uint64_t v)
{
	char tmp[24], *e = tmp + sizeof(tmp), *p = e;
	do {
		*--p = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	memcpy(line + o, p, (size_t)(e - p));
	return o + (size_t)(e - p);
}

void hf__log_request(const char *route, int status, int64_t dur_us, bool gone)
{
	if (HF__LOG_INFO < min_level)
		return;
	/* The prefix (<= 64 + 7), the route quoted (<= 300), the figures (< 80). */
	char line[512];
	size_t o = log_prefix(line, HF__LOG_INFO, "request");
	memcpy(line + o, " route=", 7);
	o += 7;
	hf__log_quote(line + o, 300, route);
	o += strlen(line + o);
	memcpy(line + o, " status=", 8);
	o = put_u64(line, o + 8, (uint64_t)(status < 0 ? 0 : status));
	memcpy(line + o, " dur_ms=", 8);
	uint64_t us = dur_us < 0 ? 0 : (uint64_t)dur_us;
	o = put_u64(line, o + 8, us / 1000);
	line[o++] = '.';
	line[o++] = (char)('0' + us % 1000 / 100);
	line[o++] = (char)('0' + us % 100 / 10);
	line[o++] = (char)('0' + us % 10);
	if (gone) {
		memcpy(line + o, " client_gone=true", 17);
		o += 17;
	}
	line[o++] = '\n';
	fwrite(line, 1, o, stderr);
	fflush(stderr);
}

void hf__log(int level, const char *msg, const char *fmt, ...)
{
	if (level < min_level)
		return;
	if (level == HF__LOG_LIFE)
		level = HF__LOG_INFO;
	char line[2048];
	struct timespec ts;
	struct tm tm;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	int n = snprintf(line, sizeof(line), "ts=%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ level=%s msg=%s",
	                 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
	                 tm.tm_sec, ts.tv_nsec / 1000000, level_names[level], msg);
	if (n < 0)
		return;
	if ((size_t)n < sizeof(line) && fmt && *fmt) {
		va_list ap;
		va_start(ap, fmt);
		int m = vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
		va_end(ap);
		if (m > 0)
			n += m;
	}
	if ((size_t)n >= sizeof(line) - 1)
		n = (int)sizeof(line) - 2;
	line[n++] = '\n';
	/* One write per line keeps lines whole even when stderr is shared. */
	fwrite(line, 1, (size_t)n, stderr);
	fflush(stderr);
}
