/*
 * util.c — small shared pieces: the system clock, random hex from the OS CSPRNG, string
 * copies, the names of modes and hold states, and the engines' log lines.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <time.h>

#include "core/core.h"

int64_t hf_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

uint64_t hf__hash_str(const char *s)
{
	uint64_t h = 14695981039346656037ULL;
	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ULL;
	return h;
}

char *hf__strdup(const char *s)
{
	if (!s)
		return NULL;
	size_t n = strlen(s) + 1;
	char *copy = malloc(n);
	if (copy)
		memcpy(copy, s, n);
	return copy;
}

/* n bytes from the kernel's CSPRNG. */
static int random_bytes(unsigned char *bytes, size_t n)
{
	size_t got = 0;
	while (got < n) {
		ssize_t r = getrandom(bytes + got, n - got, 0);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return HF_EINTERNAL;
		}
		got += (size_t)r;
	}
	return HF_OK;
}

static void hex(char *buf, const unsigned char *bytes, size_t n)
{
	static const char digits[] = "0123456789abcdef";
	for (size_t i = 0; i < n; i++) {
		buf[2 * i] = digits[bytes[i] >> 4];
		buf[2 * i + 1] = digits[bytes[i] & 15];
	}
	buf[2 * n] = '\0';
}

int hf__random_hex(char *buf, size_t n)
{
	unsigned char bytes[64];
	if (n > sizeof(bytes) || random_bytes(bytes, n) != HF_OK)
		return HF_EINTERNAL;
	hex(buf, bytes, n);
	return HF_OK;
}

int hf__random_id_token(char id[HF_ID_LEN + 1], char token[HF_TOKEN_LEN + 1])
{
	unsigned char bytes[HF_ID_LEN / 2 + HF_TOKEN_LEN / 2];
	if (random_bytes(bytes, sizeof(bytes)) != HF_OK)
		return HF_EINTERNAL;
	hex(id, bytes, HF_ID_LEN / 2);
	hex(token, bytes + HF_ID_LEN / 2, HF_TOKEN_LEN / 2);
	return HF_OK;
}

static const char *const mode_names[] = {"units", "shared", "exclusive"};
static const char *const state_names[] = {"tentative", "confirmed", "released", "expired"};

const char *hf_mode_name(hf_mode mode)
{
	return (unsigned)mode < 3 ? mode_names[mode] : "unknown";
}

const char *hf_hold_state_name(hf_hold_state state)
{
	return (unsigned)state < 4 ? state_names[state] : "unknown";
}

int hf_mode_parse(const char *s, hf_mode *out)
{
	for (int i = 0; s && i < 3; i++)
		if (strcmp(s, mode_names[i]) == 0) {
			*out = (hf_mode)i;
			return HF_OK;
		}
	return HF_EINVAL;
}

int hf_hold_state_parse(const char *s, hf_hold_state *out)
{
	for (int i = 0; s && i < 4; i++)
		if (strcmp(s, state_names[i]) == 0) {
			*out = (hf_hold_state)i;
			return HF_OK;
		}
	return HF_EINVAL;
}

void hf_request_init(hf_request *req, hf_op op)
{
	memset(req, 0, sizeof(*req));
	req->op = op;
	req->if_version = -1;
	req->state = -1;
}

void hf_options_init(hf_options *opt)
{
	memset(opt, 0, sizeof(*opt));
	opt->hold_retention_ms = 24LL * 3600 * 1000;
	opt->idempotency_retention_ms = 24LL * 3600 * 1000;
	opt->max_waiters = 100000;
	opt->max_holds = 1000000;
	opt->max_resources = 1000000;
}

/* Copies s into dst (size n) between double quotes, with '"' as '\'' and control bytes as
 * '?': a value that cannot break the line's logfmt. */
static void quote(char *dst, size_t n, const char *s)
{
	size_t o = 0;
	dst[o++] = '"';
	for (const char *c = s; *c && o + 3 < n; c++)
		dst[o++] = *c == '"' ? '\'' : (unsigned char)*c < 0x20 ? '?' : *c;
	dst[o++] = '"';
	dst[o] = '\0';
}

void hf__log_line(const char *level, const char *engine, const char *msg, const char *store,
                  const char *error)
{
	char qs[512], qe[512];
	quote(qs, sizeof(qs), store ? store : "");
	quote(qe, sizeof(qe), error ? error : "");
	struct timespec ts;
	struct tm tm;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	char line[1400];
	int n = snprintf(line, sizeof(line),
	                 "ts=%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ level=%s msg=\"%s\" engine=%s "
	                 "store=%s%s%s\n",
	                 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
	                 tm.tm_sec, ts.tv_nsec / 1000000, level, msg, engine, qs,
	                 error ? " error=" : "", error ? qe : "");
	/* One write per line keeps lines whole when stderr is shared. */
	if (n > 0)
		fwrite(line, 1, (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1, stderr);
	fflush(stderr);
}

void hf__thread_name(const char *name)
{
	(void)prctl(PR_SET_NAME, name, 0, 0, 0); /* a label only: a failure changes nothing */
}
