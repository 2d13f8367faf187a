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
