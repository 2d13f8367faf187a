/*
 * history.c — reads a history of JSON lines into operations: each invocation is matched
 * with the next completion of the same process; resources are interned with the capacity
 * first given for them. Anything malformed is refused with the line that was wrong.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "check.h"

static const char *const f_names[] = {"acquire", "release", "extend", "confirm", "read"};
static const char *const state_names[] = {"tentative", "confirmed", "released", "expired",
                                          "not_found"};

struct reader {
	struct hfc_history *h;
	char *err;
	size_t errlen;
	size_t line;
	long *pending; /* per process slot: index of its open invocation + 1, 0 none */
	long *procs;   /* process ids of the slots */
	size_t n_procs, cap_procs, cap_pending;
};

static int bad(struct reader *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int bad(struct reader *r, const char *fmt, ...)
{
	int n = snprintf(r->err, r->errlen, "line %zu: ", r->line);
	va_list ap;
	va_start(ap, fmt);
	if (n >= 0 && (size_t)n < r->errlen)
		vsnprintf(r->err + n, r->errlen - (size_t)n, fmt, ap);
	va_end(ap);
	return -1;
}

static int grow(void **arr, size_t *cap, size_t need, size_t size)
{
	if (need <= *cap)
		return 0;
	size_t c = *cap ? *cap * 2 : 64;
	while (c < need)
		c *= 2;
	void *p = realloc(*arr, c * size);
	if (!p)
		return -1;
	memset((char *)p + *cap * size, 0, (c - *cap) * size);
	*arr = p;
	*cap = c;
	return 0;
}

/* The index of resource `name`, interned on first sight; capacity 0 leaves it unknown. */
static int resource(struct reader *r, const char *name, int64_t capacity)
{
	struct hfc_history *h = r->h;
	for (size_t i = 0; i < h->n_res; i++) {
		if (strcmp(h->res[i].name, name) != 0)
			continue;
		if (capacity > 0 && h->res[i].capacity == 0)
			h->res[i].capacity = capacity;
		else if (capacity > 0 && h->res[i].capacity != capacity)
			return bad(r, "resource '%s' given capacity %lld, earlier %lld", name,
			           (long long)capacity, (long long)h->res[i].capacity);
		return (int)i;
	}
	if (grow((void **)&h->res, &h->cap_res, h->n_res + 1, sizeof(*h->res)) != 0)
		return bad(r, "out of memory");
	if (!(h->res[h->n_res].name = strdup(name)))
		return bad(r, "out of memory");
	h->res[h->n_res].capacity = capacity;
	return (int)h->n_res++;
}

static int get_int(struct reader *r, json_t *j, const char *key, int64_t *out, int64_t min)
{
	json_t *v = json_object_get(j, key);
	if (!v)
		return 0;
	if (!json_is_integer(v) || json_integer_value(v) < min)
		return bad(r, "\"%s\" must be an integer >= %lld", key, (long long)min);
	*out = json_integer_value(v);
	return 0;
}

static int get_bool(struct reader *r, json_t *j, const char *key, bool *out)
{
	json_t *v = json_object_get(j, key);
	if (!v)
		return 0;
	if (!json_is_boolean(v))
		return bad(r, "\"%s\" must be true or false", key);
	*out = json_is_true(v);
	return 0;
}

/* One claim or part: {"name","units","capacity","fence"}. */
static int read_part(struct reader *r, json_t *p, bool exclusive, struct hfc_part *out)
{
	const char *name = json_string_value(json_object_get(p, "name"));
	if (!json_is_object(p) || !name || !*name)
		return bad(r, "a resource entry needs a non-empty \"name\"");
	int64_t cap = 0, units = 0, fence = 0;
	(void)exclusive;
	if (get_int(r, p, "capacity", &cap, 1) || get_int(r, p, "units", &units, 1) ||
	    get_int(r, p, "fence", &fence, 1))
		return -1;
	int ri = resource(r, name, cap);
	if (ri < 0)
		return -1;
	*out =
	    (struct hfc_part){.res = ri, .units = units, .fence = fence}; /* units 0: not given */
	return 0;
}

/* The resources a line names: "resources":[...] or the shorthand "resource","units",... */
static int read_parts(struct reader *r, json_t *j, bool exclusive, struct hfc_part **parts,
                      size_t *n)
{
	json_t *arr = json_object_get(j, "resources");
	json_t *one = json_object_get(j, "resource");
	if (!arr && !one)
		return 0;
	if (arr && one)
		return bad(r, "give \"resources\" or \"resource\", not both");
	size_t count = arr ? json_array_size(arr) : 1;
	if ((arr && !json_is_array(arr)) || (one && !json_is_string(one)))
		return bad(r, "\"resources\" must be an array, \"resource\" a string");
	if (count == 0 || count > HFC_PARTS_MAX)
		return bad(r, "\"resources\" must name 1..%d resources", HFC_PARTS_MAX);
	struct hfc_part *p = calloc(count, sizeof(*p));
	if (!p)
		return bad(r, "out of memory");
	int rc = 0;
	if (arr) {
		for (size_t i = 0; i < count && rc == 0; i++)
			rc = read_part(r, json_array_get(arr, i), exclusive, &p[i]);
	} else {
		json_t *tmp = json_pack("{s:O}", "name", one);
		const char *keys[] = {"units", "capacity", "fence"};
		for (size_t k = 0; tmp && k < 3; k++)
			if (json_object_get(j, keys[k]))
				json_object_set(tmp, keys[k], json_object_get(j, keys[k]));
		rc = tmp ? read_part(r, tmp, exclusive, &p[0]) : bad(r, "out of memory");
		json_decref(tmp);
	}
	for (size_t a = 0; rc == 0 && a < count; a++)
		for (size_t b = a + 1; b < count; b++)
			if (p[a].res == p[b].res) {
				rc = bad(r, "resource '%s' named twice", r->h->res[p[a].res].name);
				break;
			}
	if (rc != 0) {
		free(p);
		return -1;
	}
	/* Units not given: as the earlier line said for that resource, else 1 (exclusive: all). */
	for (size_t a = 0; a < count; a++) {
		for (size_t b = 0; p[a].units == 0 && b < *n; b++)
			if ((*parts)[b].res == p[a].res) {
				p[a].units = (*parts)[b].units;
				if (!p[a].fence)
					p[a].fence = (*parts)[b].fence;
			}
		if (p[a].units == 0)
			p[a].units = exclusive ? -1 : 1;
	}
	free(*parts);
	*parts = p;
	*n = count;
	return 0;
}

static long *pending_slot(struct reader *r, long process)
{
	for (size_t i = 0; i < r->n_procs; i++)
		if (r->procs[i] == process)
			return &r->pending[i];
	if (grow((void **)&r->procs, &r->cap_procs, r->n_procs + 1, sizeof(*r->procs)) != 0 ||
	    grow((void **)&r->pending, &r->cap_pending, r->n_procs + 1, sizeof(*r->pending)) != 0)
		return NULL;
	r->procs[r->n_procs] = process;
	r->pending[r->n_procs] = 0;
	return &r->pending[r->n_procs++];
}

static int parse_f(const char *s)
{
	for (size_t i = 0; s && i < sizeof(f_names) / sizeof(f_names[0]); i++)
		if (strcmp(s, f_names[i]) == 0)
			return (int)i;
	return -1;
}

/* The fields an invocation or completion may carry, merged into `op`. */
static int read_fields(struct reader *r, json_t *j, struct hfc_op *op, bool completion)
{
	json_t *hold = json_object_get(j, "hold");
	if (hold) {
		if (!json_is_string(hold) || !*json_string_value(hold))
			return bad(r, "\"hold\" must be a non-empty string");
		if (op->hold && strcmp(op->hold, json_string_value(hold)) != 0)
			return bad(r, "the completion names hold '%s', its invocation '%s'",
			           json_string_value(hold), op->hold);
		if (!op->hold && !(op->hold = strdup(json_string_value(hold))))
			return bad(r, "out of memory");
	}
	const char *mode = json_string_value(json_object_get(j, "mode"));
	if (mode) {
		if (strcmp(mode, "exclusive") != 0 && strcmp(mode, "units") != 0 &&
		    strcmp(mode, "shared") != 0)
			return bad(r, "\"mode\" must be units, shared or exclusive");
		op->exclusive = strcmp(mode, "exclusive") == 0;
	}
	if (get_int(r, j, "ttl_ms", &op->ttl_ms, 1) || get_int(r, j, "wait_ms", &op->wait_ms, 0) ||
	    get_bool(r, j, "any", &op->any) || get_bool(r, j, "replayed", &op->replayed))
		return -1;
	if (read_parts(r, j, op->exclusive, &op->parts, &op->n_parts) != 0)
		return -1;
	json_t *state = json_object_get(j, "state");
	if (state) {
		op->state = HFC_ST_NONE;
		for (int i = 0; i < 5; i++)
			if (json_is_string(state) &&
			    strcmp(json_string_value(state), state_names[i]) == 0)
				op->state = (enum hfc_state)i;
		if (op->state == HFC_ST_NONE || !completion)
			return bad(r,
			           "\"state\" must be tentative, confirmed, released, expired or "
			           "not_found, on a completion");
	}
	const char *error = json_string_value(json_object_get(j, "error"));
	if (error && !op->error && !(op->error = strdup(error)))
		return bad(r, "out of memory");
	return 0;
}

static int read_line(struct reader *r, const char *text)
{
	struct hfc_history *h = r->h;
	json_error_t je;
	json_t *j = json_loads(text, 0, &je);
	int rc = -1;
	if (!j)
		return bad(r, "not JSON: %s", je.text);
	if (!json_is_object(j)) {
		bad(r, "not a JSON object");
		goto out;
	}
	int64_t t = 0;
	if (get_int(r, j, "time_us", &t, INT64_MIN) != 0)
		goto out;
	if (grow((void **)&h->line_us, &h->n_lines, r->line + 1, sizeof(*h->line_us)) != 0) {
		bad(r, "out of memory");
		goto out;
	}
	h->line_us[r->line] = t;
	const char *type = json_string_value(json_object_get(j, "type"));
	if (type && strcmp(type, "resource") == 0) { /* a declaration: {"name","capacity"} */
		const char *name = json_string_value(json_object_get(j, "name"));
		int64_t cap = 0;
		if (!name || !*name || get_int(r, j, "capacity", &cap, 1) || cap == 0) {
			if (!name || !*name || cap == 0)
				bad(r, "a resource line needs \"name\" and \"capacity\" >= 1");
			goto out;
		}
		rc = resource(r, name, cap) < 0 ? -1 : 0;
		goto out;
	}
	json_t *proc = json_object_get(j, "process");
	int f = parse_f(json_string_value(json_object_get(j, "f")));
	if (!json_is_integer(proc)) {
		bad(r, "\"process\" must be an integer");
		goto out;
	}
	if (f < 0) {
		bad(r, "\"f\" must be acquire, release, extend, confirm or read");
		goto out;
	}
	long process = (long)json_integer_value(proc);
	long *slot = pending_slot(r, process);
	if (!slot) {
		bad(r, "out of memory");
		goto out;
	}
	if (type && strcmp(type, "invoke") == 0) {
		if (*slot) {
			bad(r, "process %ld invokes while its operation of line %zu is open",
			    process, h->ops[*slot - 1].inv_line);
			goto out;
		}
		if (grow((void **)&h->ops, &h->cap_ops, h->n_ops + 1, sizeof(*h->ops)) != 0) {
			bad(r, "out of memory");
			goto out;
		}
		struct hfc_op *op = &h->ops[h->n_ops++];
		memset(op, 0, sizeof(*op));
		*op = (struct hfc_op){.f = (enum hfc_f)f,
		                      .type = HFC_PENDING,
		                      .process = process,
		                      .inv_line = r->line,
		                      .inv_us = t,
		                      .state = HFC_ST_NONE};
		*slot = (long)h->n_ops;
		rc = read_fields(r, j, op, false);
		if (rc == 0 && f != HFC_ACQUIRE && !op->hold)
			rc = bad(r, "a %s names its \"hold\"", f_names[f]);
		if (rc == 0 && f == HFC_ACQUIRE && op->n_parts == 0)
			rc = bad(r, "an acquire names its \"resources\"");
		goto out;
	}
	enum hfc_type ty = !type                       ? HFC_PENDING
	                   : strcmp(type, "ok") == 0   ? HFC_OK
	                   : strcmp(type, "fail") == 0 ? HFC_FAIL
	                   : strcmp(type, "info") == 0 ? HFC_INFO
	                                               : HFC_PENDING;
	if (ty == HFC_PENDING) {
		bad(r, "\"type\" must be invoke, ok, fail, info or resource");
		goto out;
	}
	if (!*slot) {
		bad(r, "process %ld completes an operation it never invoked", process);
		goto out;
	}
	struct hfc_op *op = &h->ops[*slot - 1];
	*slot = 0;
	if (op->f != (enum hfc_f)f) {
		bad(r, "the completion is a %s, its invocation (line %zu) a %s", f_names[f],
		    op->inv_line, f_names[op->f]);
		goto out;
	}
	op->type = ty;
	op->ret_line = r->line;
	op->ret_us = t;
	rc = read_fields(r, j, op, true);
	if (rc == 0 && ty == HFC_OK && f == HFC_ACQUIRE && !op->replayed && !op->hold)
		rc = bad(r, "an acquire's ok names the \"hold\" it granted");
	/* An any-of grant took one claim: which one only its answer can say. */
	if (rc == 0 && ty == HFC_OK && f == HFC_ACQUIRE && op->any &&
	    !json_object_get(j, "resources") && !json_object_get(j, "resource"))
		rc = bad(r, "an any-of acquire's ok names the resource it took");
	if (rc == 0 && ty == HFC_OK && f == HFC_READ && op->state == HFC_ST_NONE)
		rc = bad(r, "a read's ok gives the \"state\"");
out:
	json_decref(j);
	return rc;
}

int hfc_history_read(FILE *in, struct hfc_history *h, char *err, size_t errlen)
{
	memset(h, 0, sizeof(*h));
	struct reader r = {.h = h, .err = err, .errlen = errlen};
	char *buf = NULL;
	size_t cap = 0;
	ssize_t n;
	int rc = 0;
	while (rc == 0 && (n = getline(&buf, &cap, in)) >= 0) {
		r.line++;
		while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' '))
			buf[--n] = '\0';
		if (n == 0 || buf[0] == '#')
			continue;
		if (strlen(buf) != (size_t)n) {
			rc = bad(&r, "contains a NUL byte");
			break;
		}
		rc = read_line(&r, buf);
	}
	if (rc == 0 && ferror(in))
		rc = bad(&r, "read error: %s", strerror(errno));
	/* Lines past the last time_us: keep the array covering every line. */
	if (rc == 0 && grow((void **)&h->line_us, &h->n_lines, r.line + 2, sizeof(*h->line_us)))
		rc = bad(&r, "out of memory");
	/* A process's time runs forward: time_us never decreases in file order. */
	int64_t last = INT64_MIN;
	for (size_t i = 1; rc == 0 && i <= r.line; i++) {
		if (h->line_us[i] == 0)
			h->line_us[i] = last == INT64_MIN ? 0 : last;
		if (h->line_us[i] < last) {
			r.line = i;
			rc = bad(&r, "time_us goes backwards: the file must be in real-time order");
		}
		last = h->line_us[i];
	}
	h->n_lines = r.line;
	for (size_t i = 0; rc == 0 && i < h->n_ops; i++) {
		struct hfc_op *op = &h->ops[i];
		if (op->type == HFC_PENDING)
			op->type = HFC_INFO; /* never answered: unknown outcome */
		for (size_t p = 0; p < op->n_parts; p++) {
			struct hfc_part *pt = &op->parts[p];
			if (pt->units < 0 || (op->exclusive && op->f == HFC_ACQUIRE))
				pt->units =
				    h->res[pt->res].capacity ? h->res[pt->res].capacity : -1;
		}
	}
	free(buf);
	free(r.pending);
	free(r.procs);
	if (rc != 0)
		hfc_history_release(h);
	return rc;
}

void hfc_history_release(struct hfc_history *h)
{
	for (size_t i = 0; i < h->n_ops; i++) {
		free(h->ops[i].hold);
		free(h->ops[i].parts);
		free(h->ops[i].error);
	}
	for (size_t i = 0; i < h->n_res; i++)
		free(h->res[i].name);
	free(h->ops);
	free(h->res);
	free(h->line_us);
	memset(h, 0, sizeof(*h));
}
