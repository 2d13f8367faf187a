/*
 * common.c — URL parsing and connecting for the redis:// and redlock:// engines. Kept apart
 * so that both engines refuse the same malformed URLs with the same messages.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/core.h"
#include "engine/redis/redis.h"

int64_t hf__redis_mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Decodes %XX escapes in place (prefixes may need them); false on a bad escape. */
static bool pct_decode(char *s)
{
	char *w = s;
	for (char *r = s; *r; r++) {
		if (*r == '%') {
			if (!isxdigit((unsigned char)r[1]) || !isxdigit((unsigned char)r[2]))
				return false;
			char hex[3] = {r[1], r[2], 0};
			*w++ = (char)strtol(hex, NULL, 16);
			r += 2;
		} else {
			*w++ = *r;
		}
	}
	*w = '\0';
	return true;
}

static int parse_node(const char *s, size_t len, const char *scheme, const char *url,
                      struct hf__redis_node *node, hf_error *err)
{
	char buf[300];
	if (len == 0 || len >= sizeof(buf))
		return hf__err(err, HF_EINVAL, "invalid url '%s': empty or overlong host in the %s list",
		               url, scheme);
	memcpy(buf, s, len);
	buf[len] = '\0';
	char *host = buf, *port = NULL;
	if (buf[0] == '[') { /* [v6]:port */
		char *close = strchr(buf, ']');
		if (!close)
			return hf__err(err, HF_EINVAL, "invalid url '%s': unterminated '[' in host", url);
		*close = '\0';
		host = buf + 1;
		if (close[1] == ':')
			port = close + 2;
		else if (close[1])
			return hf__err(err, HF_EINVAL, "invalid url '%s': junk after ']'", url);
	} else {
		char *colon = strrchr(buf, ':');
		if (colon) {
			*colon = '\0';
			port = colon + 1;
		}
	}
	if (!*host)
		return hf__err(err, HF_EINVAL, "invalid url '%s': no host", url);
	node->port = 6379;
	if (port) {
		char *end;
		long p = strtol(port, &end, 10);
		if (!*port || *end || p < 1 || p > 65535)
			return hf__err(err, HF_EINVAL, "invalid url '%s': bad port '%s'", url, port);
		node->port = (int)p;
	}
	if (strlen(host) >= sizeof(node->host))
		return hf__err(err, HF_EINVAL, "invalid url '%s': host name too long", url);
	memcpy(node->host, host, strlen(host) + 1);
	return HF_OK;
}

int hf__redis_url_parse(const char *url, const char *scheme, struct hf__redis_url *out,
                        hf_error *err)
{
	memset(out, 0, sizeof(*out));
	size_t sl = strlen(scheme);
	if (strncmp(url, scheme, sl) != 0 || strncmp(url + sl, "://", 3) != 0)
		return hf__err(err, HF_EINVAL, "invalid url '%s': expected %s://host:port", url, scheme);
	const char *p = url + sl + 3;
	const char *end = p + strcspn(p, "/?");
	const char *at = memchr(p, '@', (size_t)(end - p));
	if (at) {
		/* user info: [user]:password — Redis 6 ACL users are not supported here */
		const char *colon = memchr(p, ':', (size_t)(at - p));
		if (!colon || colon != p)
			return hf__err(err, HF_EINVAL, "invalid url '%s': only ':password@' user info is supported",
			               url);
		size_t pl = (size_t)(at - colon - 1);
		if (pl >= sizeof(out->password))
			return hf__err(err, HF_EINVAL, "invalid url '%s': password too long", url);
		memcpy(out->password, colon + 1, pl);
		out->password[pl] = '\0';
		if (!pct_decode(out->password))
			return hf__err(err, HF_EINVAL, "invalid url '%s': bad %% escape in password", url);
		p = at + 1;
	}
	while (p < end) {
		const char *comma = memchr(p, ',', (size_t)(end - p));
		const char *stop = comma ? comma : end;
		if (out->n_nodes == HF__REDIS_MAX_NODES)
			return hf__err(err, HF_EINVAL, "invalid url '%s': more than %d hosts", url,
			               HF__REDIS_MAX_NODES);
		int rc = parse_node(p, (size_t)(stop - p), scheme, url, &out->nodes[out->n_nodes], err);
		if (rc != HF_OK)
			return rc;
		out->n_nodes++;
		p = comma ? comma + 1 : end;
	}
	if (out->n_nodes == 0)
		return hf__err(err, HF_EINVAL, "invalid url '%s': no host", url);
	if (*p == '/') {
		p++;
		if (*p && *p != '?') {
			char *e;
			long db = strtol(p, &e, 10);
			if (e == p || (*e && *e != '?') || db < 0 || db > 1000000)
				return hf__err(err, HF_EINVAL, "invalid url '%s': the path must be a database number",
				               url);
			out->db = (int)db;
			p = e;
		}
	}
	if (*p == '?') {
		p++;
		while (*p) {
			size_t len = strcspn(p, "&");
			const char *eq = memchr(p, '=', len);
			if (!eq)
				return hf__err(err, HF_EINVAL, "invalid url '%s': query parameter without '='", url);
			size_t kl = (size_t)(eq - p), vl = len - kl - 1;
			if (out->n_params == 8 || kl >= sizeof(out->keys[0]) || vl >= sizeof(out->values[0]))
				return hf__err(err, HF_EINVAL, "invalid url '%s': too many or too long parameters",
				               url);
			memcpy(out->keys[out->n_params], p, kl);
			memcpy(out->values[out->n_params], eq + 1, vl);
			if (!pct_decode(out->values[out->n_params]))
				return hf__err(err, HF_EINVAL, "invalid url '%s': bad %% escape", url);
			out->n_params++;
			p += len;
			if (*p == '&')
				p++;
		}
	}
	return HF_OK;
}

const char *hf__redis_url_param(const struct hf__redis_url *u, const char *key)
{
	for (size_t i = 0; i < u->n_params; i++)
		if (strcmp(u->keys[i], key) == 0)
			return u->values[i];
	return NULL;
}

static struct timeval tv_ms(int ms)
{
	return (struct timeval){.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
}

redisContext *hf__redis_connect(const struct hf__redis_node *node, const char *password, int db,
                                int connect_timeout_ms, int io_timeout_ms, char *why, size_t n)
{
	redisContext *c = redisConnectWithTimeout(node->host, node->port, tv_ms(connect_timeout_ms));
	if (!c) {
		snprintf(why, n, "out of memory");
		return NULL;
	}
	if (c->err) {
		snprintf(why, n, "%s", c->errstr);
		redisFree(c);
		return NULL;
	}
	redisSetTimeout(c, tv_ms(io_timeout_ms));
	redisEnableKeepAlive(c);
	char dbs[16];
	snprintf(dbs, sizeof(dbs), "%d", db);
	const char *argv[2];
	size_t argl[2];
	for (int step = 0; step < 2; step++) {
		if (step == 0 && !*password)
			continue;
		if (step == 1 && db == 0)
			continue;
		argv[0] = step == 0 ? "AUTH" : "SELECT";
		argv[1] = step == 0 ? password : dbs;
		argl[0] = strlen(argv[0]);
		argl[1] = strlen(argv[1]);
		redisReply *r = redisCommandArgv(c, 2, argv, argl);
		if (!r || r->type == REDIS_REPLY_ERROR) {
			snprintf(why, n, "%s failed: %s", argv[0], r ? r->str : c->errstr);
			if (r)
				freeReplyObject(r);
			redisFree(c);
			return NULL;
		}
		freeReplyObject(r);
	}
	return c;
}

/* ---- Redis Cluster ---- */

int hf__redis_redirect(const char *err, const struct hf__redis_node *from,
                       struct hf__redis_node *to)
{
	if (!err)
		return HF__REDIR_NONE;
	if (strncmp(err, "TRYAGAIN", 8) == 0 || strncmp(err, "CLUSTERDOWN", 11) == 0)
		return HF__REDIR_RETRY;
	int kind = strncmp(err, "MOVED ", 6) == 0 ? HF__REDIR_MOVED
	           : strncmp(err, "ASK ", 4) == 0 ? HF__REDIR_ASK
	                                          : HF__REDIR_NONE;
	if (kind == HF__REDIR_NONE)
		return kind;
	/* "MOVED <slot> <host>:<port>" — the host may be empty or '?' (an endpoint the node does
	 * not know): then it is the host we asked. */
	const char *addr = strchr(err + (kind == HF__REDIR_MOVED ? 6 : 4), ' ');
	if (!addr)
		return HF__REDIR_NONE;
	addr++;
	const char *colon = strrchr(addr, ':');
	if (!colon)
		return HF__REDIR_NONE;
	char *end;
	long port = strtol(colon + 1, &end, 10);
	if (end == colon + 1 || (*end && *end != ' ' && *end != '\r' && *end != '\n') || port < 1 ||
	    port > 65535)
		return HF__REDIR_NONE;
	size_t hl = (size_t)(colon - addr);
	if (hl >= sizeof(to->host))
		return HF__REDIR_NONE;
	struct hf__redis_node n = {.port = (int)port};
	if (hl == 0 || (hl == 1 && addr[0] == '?')) {
		memcpy(n.host, from->host, sizeof(n.host));
	} else if (addr[0] == '[' && hl >= 2 && addr[hl - 1] == ']') { /* [v6]:port */
		memcpy(n.host, addr + 1, hl - 2);
	} else {
		memcpy(n.host, addr, hl);
	}
	*to = n;
	return kind;
}

bool hf__redis_has_hash_tag(const char *s)
{
	const char *open = strchr(s, '{');
	if (!open)
		return false;
	const char *close = strchr(open + 1, '}');
	return close && close > open + 1;
}

int hf__redis_cluster_enabled(redisContext *c, char *why, size_t n)
{
	redisReply *r = redisCommand(c, "INFO cluster");
	if (!r || r->type != REDIS_REPLY_STRING) {
		snprintf(why, n, "INFO cluster failed: %s",
		         r && r->type == REDIS_REPLY_ERROR ? r->str : c->errstr);
		if (r)
			freeReplyObject(r);
		return -1;
	}
	int on = strstr(r->str, "cluster_enabled:1") != NULL;
	freeReplyObject(r);
	return on;
}
