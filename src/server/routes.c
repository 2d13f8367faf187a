/*
 * routes.c — the one route table of holdfastd (method, path pattern, handler, flags) and
 * the dispatcher: path matching with percent-decoded {parameters}, 404 and 405, API keys,
 * bodies; plus the strict query-string helpers the handlers share.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "server/server.h"

enum {
	RF_PUBLIC = 1 << 0, /* served without an API key: probes, the dashboard's files */
	RF_BODY = 1 << 1,   /* takes a JSON body */
	/* The handler only borrows the body's JSON tree, never keeps a reference past the
	 * request: the tree is built in the request's arena (http.c). */
	RF_ARENA = 1 << 2,
};

struct hf__route {
	enum hf__method method;
	const char *pattern; /* "/v1/holds/{id}/extend": one {param} segment at most */
	void (*handler)(struct hf__rq *rq);
	unsigned flags;
};

static const struct hf__route routes[] = {
	{HF__M_GET, "/healthz", hf__h_healthz, RF_PUBLIC},
	{HF__M_GET, "/readyz", hf__h_readyz, RF_PUBLIC},
	/* The dashboard's files are public; the data it shows comes from the routes below. */
	{HF__M_GET, "/ui", hf__h_ui, RF_PUBLIC},
	{HF__M_GET, "/ui/{asset}", hf__h_ui_asset, RF_PUBLIC},
	{HF__M_GET, "/metrics", hf__h_metrics, 0},
	{HF__M_GET, "/v1/stats", hf__h_stats, 0},
	{HF__M_GET, "/v1/stats/series", hf__h_stats_series, 0},
	{HF__M_GET, "/v1/resources", hf__h_list_resources, 0},
	{HF__M_PUT, "/v1/resources/{name}", hf__h_put_resource, RF_BODY},
	{HF__M_GET, "/v1/resources/{name}", hf__h_get_resource, 0},
	{HF__M_DELETE, "/v1/resources/{name}", hf__h_delete_resource, 0},
	{HF__M_GET, "/v1/resources/{name}/waiters", hf__h_list_waiters, 0},
	{HF__M_POST, "/v1/holds", hf__h_acquire, RF_BODY | RF_ARENA},
	{HF__M_GET, "/v1/holds", hf__h_list_holds, 0},
	{HF__M_GET, "/v1/holds/{id}", hf__h_get_hold, 0},
	{HF__M_POST, "/v1/holds/{id}/extend", hf__h_extend, RF_BODY | RF_ARENA},
	{HF__M_POST, "/v1/holds/{id}/confirm", hf__h_confirm, RF_BODY | RF_ARENA},
	{HF__M_POST, "/v1/holds/{id}/release", hf__h_release, RF_BODY | RF_ARENA},
	{HF__M_POST, "/v1/locks/{key}", hf__h_lock, RF_BODY | RF_ARENA},
	{HF__M_POST, "/v1/semaphores/{key}", hf__h_semaphore, RF_BODY | RF_ARENA},
	{HF__M_GET, "/v1/events", hf__h_events, 0},
	{HF__M_GET, "/v1/saga-types", hf__h_list_saga_types, 0},
	{HF__M_PUT, "/v1/saga-types/{name}", hf__h_put_saga_type, RF_BODY},
	{HF__M_GET, "/v1/saga-types/{name}", hf__h_get_saga_type, 0},
	{HF__M_POST, "/v1/sagas", hf__h_start_saga, RF_BODY},
	{HF__M_GET, "/v1/sagas", hf__h_list_sagas, 0},
	{HF__M_GET, "/v1/sagas/{id}", hf__h_get_saga, 0},
	{HF__M_POST, "/v1/sagas/{id}/resume", hf__h_resume_saga, RF_BODY},
	{HF__M_POST, "/v1/transactions", hf__h_start_tx, RF_BODY},
	{HF__M_GET, "/v1/transactions/{id}", hf__h_get_tx, 0},
};

#define N_ROUTES (sizeof(routes) / sizeof(routes[0]))

bool hf__route_is_public(const struct hf__route *route)
{
	return route && (route->flags & RF_PUBLIC);
}

bool hf__route_takes_body(const struct hf__route *route)
{
	return route && (route->flags & RF_BODY);
}

const char *hf__route_pattern(const struct hf__route *route)
{
	return route ? route->pattern : "(none)";
}

/*
 * Matches a raw (still percent-encoded) path against a pattern. On a match with a
 * parameter, *param_at and *param_len locate its raw segment in path.
 */
static bool match(const char *pattern, const char *path, const char **param_at,
                  size_t *param_len)
{
	*param_at = NULL;
	*param_len = 0;
	while (*pattern && *path) {
		if (*pattern == '{') {
			const char *close = strchr(pattern, '}');
			size_t n = strcspn(path, "/");
			if (n == 0)
				return false; /* an empty parameter is no parameter */
			*param_at = path;
			*param_len = n;
			pattern = close + 1;
			path += n;
			continue;
		}
		if (*pattern != *path)
			return false;
		pattern++;
		path++;
	}
	return *pattern == '\0' && *path == '\0';
}

static void allow_header(struct hf__rq *rq, const char *path)
{
	char allow[64] = "";
	const char *pa;
	size_t pl;
	for (size_t i = 0; i < N_ROUTES; i++) {
		if (!match(routes[i].pattern, path, &pa, &pl))
			continue;
		const char *m = routes[i].method == HF__M_GET    ? "GET"
		                : routes[i].method == HF__M_PUT  ? "PUT"
		                : routes[i].method == HF__M_POST ? "POST"
		                                                 : "DELETE";
		if (allow[0])
			strncat(allow, ", ", sizeof(allow) - strlen(allow) - 1);
		strncat(allow, m, sizeof(allow) - strlen(allow) - 1);
	}
	hf__rq_add_header(rq, "Allow", allow);
}

static int hex_value(char c)
{
	return c >= '0' && c <= '9' ? c - '0'
	       : c >= 'a' && c <= 'f' ? c - 'a' + 10
	       : c >= 'A' && c <= 'F' ? c - 'A' + 10
	                              : -1;
}

/* Percent-decodes n bytes of a path segment into out (n + 1 bytes, NUL-ended) as
 * evhttp_uridecode does without '+' decoding: "%XX" with two hex digits is that byte, any
 * other '%' itself. Returns the decoded length (a decoded NUL included). */
static size_t uri_decode(const char *in, size_t n, char *out)
{
	size_t o = 0;
	for (size_t i = 0; i < n; i++) {
		int hi, lo;
		if (in[i] == '%' && i + 2 < n && (hi = hex_value(in[i + 1])) >= 0 &&
		    (lo = hex_value(in[i + 2])) >= 0) {
			out[o++] = (char)(hi << 4 | lo);
			i += 2;
		} else {
			out[o++] = in[i];
		}
	}
	out[o] = '\0';
	return o;
}

void hf__route_request(struct hf__rq *rq)
{
	const char *path = *rq->path ? rq->path : "/";
	enum hf__method method = rq->method;
	const struct hf__route *found = NULL;
	const char *pa = NULL;
	size_t pl = 0;
	/* HEAD is GET without a body: http.c sends a HEAD answer's head only. */
	enum hf__method want = method == HF__M_HEAD ? HF__M_GET : method;
	for (size_t i = 0; i < N_ROUTES && !found; i++)
		if (routes[i].method == want && match(routes[i].pattern, path, &pa, &pl))
			found = &routes[i];
	if (!found) {
		/* The path under another method is a 405, naming the methods it has. */
		bool path_known = false;
		for (size_t i = 0; i < N_ROUTES && !path_known; i++)
			path_known = match(routes[i].pattern, path, &pa, &pl);
		if (path_known) {
			allow_header(rq, path);
			hf__rq_fail(rq, HF_EMETHOD, "%s is not allowed on this route",
			            hf__rq_method(rq));
		} else {
			hf__rq_fail(rq, HF_EROUTE, "no route for path '%.200s'", path);
		}
		return;
	}
	rq->route = found;
	if (!(found->flags & RF_PUBLIC) && !hf__rq_authorized(rq)) {
		hf__rq_add_header(rq, "WWW-Authenticate", "Bearer");
		hf__rq_fail(rq, HF_EAUTH, "missing or wrong API key (Authorization: Bearer KEY)");
		return;
	}
	if (pa) {
		if (pl >= 3 * HF_NAME_MAX + 64) {
			hf__rq_fail(rq, HF_EINVAL, "path parameter is longer than %d bytes", HF_NAME_MAX);
			return;
		}
		/* The raw segment is part of the path: it fits the room made for it. */
		rq->param = rq->param_space + HF__PARAM_HEADROOM;
		size_t dlen = uri_decode(pa, pl, rq->param);
		if (strlen(rq->param) != dlen) {
			hf__rq_fail(rq, HF_EINVAL, "path parameter contains a NUL byte");
			return;
		}
		if (dlen == 0 || dlen > HF_NAME_MAX) {
			hf__rq_fail(rq, HF_EINVAL, "path parameter is %zu bytes long, it must be 1 to %d",
			            dlen, HF_NAME_MAX);
			return;
		}
	}
	if ((found->flags & RF_BODY) && !hf__rq_read_body(rq, found->flags & RF_ARENA))
		return;
	found->handler(rq);
}

/* ---- Query strings. --------------------------------------------------------------- */

bool hf__query_parse(struct hf__rq *rq, struct evkeyvalq *q, const char *const *allowed)
{
	const char *query = rq->query;
	q->tqh_first = NULL; /* TAILQ_INIT, which event2 does not export */
	q->tqh_last = &q->tqh_first;
	if (!query || !*query)
		return true;
	/* A decoded NUL would silently cut the value short: refuse it (%00 in any case). */
	if (strstr(query, "%00")) {
		hf__rq_fail(rq, HF_EINVAL, "query string contains a NUL byte (%%00)");
		return false;
	}
	if (evhttp_parse_query_str(query, q) != 0) {
		hf__rq_fail(rq, HF_EINVAL, "query string is malformed");
		return false;
	}
	for (struct evkeyval *kv = q->tqh_first; kv; kv = kv->next.tqe_next) {
		bool ok = false;
		for (size_t i = 0; allowed[i] && !ok; i++)
			ok = strcmp(allowed[i], kv->key) == 0;
		if (!ok) {
			hf__rq_fail(rq, HF_EINVAL, "unknown query parameter '%.64s'", kv->key);
			evhttp_clear_headers(q);
			return false;
		}
	}
	return true;
}

bool hf__query_int(struct hf__rq *rq, struct evkeyvalq *q, const char *key, int64_t lo,
                   int64_t hi, int64_t dflt, int64_t *out)
{
	const char *v = evhttp_find_header(q, key);
	*out = dflt;
	if (!v)
		return true;
	char *end;
	errno = 0;
	long long n = strtoll(v, &end, 10);
	if (!*v || *end || errno || (*v != '-' && (*v < '0' || *v > '9'))) {
		hf__rq_fail(rq, HF_EINVAL, "query parameter %s must be an integer", key);
		return false;
	}
	if (n < lo || n > hi) {
		hf__rq_fail(rq, HF_EINVAL, "query parameter %s is %lld, it must be between %lld and %lld",
		            key, n, (long long)lo, (long long)hi);
		return false;
	}
	*out = n;
	return true;
}

bool hf__query_page(struct hf__rq *rq, struct evkeyvalq *q, hf_request *req)
{
	int64_t limit;
	if (!hf__query_int(rq, q, "limit", 1, HF_LIST_MAX, 100, &limit))
		return false;
	req->limit = (size_t)limit;
	req->cursor = evhttp_find_header(q, "cursor");
	if (req->cursor && !*req->cursor)
		req->cursor = NULL;
	return true;
}
