/*
 * events.c — holdfast-check --events: judges an event log as a reader saw it (JSON lines, one
 * event each as the API shows it: `holdfast --json events --follow`) against the ordering
 * promises of docs/semantics.md: seq strictly increasing, each resource's revisions 1, 2, 3...
 * with none missing, and every event carrying the revision of each resource it touches.
 */
#include <inttypes.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

/* Each resource's last revision seen: an open-addressing table keyed by name. */
struct rev_table {
	char **names;
	int64_t *last;
	size_t cap, count;
};

static size_t hash(const char *s)
{
	size_t h = 1469598103934665603u;
	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211u;
	return h;
}

/* The slot of `name`: its entry, or the empty one where it would go. */
static size_t slot(const struct rev_table *t, const char *name)
{
	size_t i = hash(name) & (t->cap - 1);
	while (t->names[i] && strcmp(t->names[i], name) != 0)
		i = (i + 1) & (t->cap - 1);
	return i;
}

static int grow(struct rev_table *t)
{
	struct rev_table n = {.cap = t->cap ? t->cap * 2 : 64};
	n.names = calloc(n.cap, sizeof(*n.names));
	n.last = calloc(n.cap, sizeof(*n.last));
	if (!n.names || !n.last) {
		free(n.names);
		free(n.last);
		return -1;
	}
	for (size_t i = 0; i < t->cap; i++)
		if (t->names[i]) {
			size_t k = slot(&n, t->names[i]);
			n.names[k] = t->names[i];
			n.last[k] = t->last[i];
		}
	n.count = t->count;
	free(t->names);
	free(t->last);
	*t = n;
	return 0;
}

/* The last revision of `name` (0: none yet), to update; NULL when out of memory. */
static int64_t *rev_last(struct rev_table *t, const char *name)
{
	if ((t->count + 1) * 2 > t->cap && grow(t) != 0)
		return NULL;
	size_t i = slot(t, name);
	if (!t->names[i]) {
		if (!(t->names[i] = strdup(name)))
			return NULL;
		t->last[i] = 0;
		t->count++;
	}
	return &t->last[i];
}

static void rev_release(struct rev_table *t)
{
	for (size_t i = 0; i < t->cap; i++)
		free(t->names[i]);
	free(t->names);
	free(t->last);
}

struct ev_ctx {
	FILE *out;
	size_t max_print;
	struct hfc_events_report *rep;
	size_t line;
};

static void ev_violation(struct ev_ctx *c, const char *check, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void ev_violation(struct ev_ctx *c, const char *check, const char *fmt, ...)
{
	c->rep->violations++;
	if (!c->out || c->rep->violations > c->max_print)
		return;
	fprintf(c->out, "VIOLATION %s: line %zu: ", check, c->line);
	va_list ap;
	va_start(ap, fmt);
	vfprintf(c->out, fmt, ap);
	va_end(ap);
	fputc('\n', c->out);
}

/* One resource's revision in one event: the next after the last one seen. */
static int check_one(struct ev_ctx *c, struct rev_table *t, bool partial, int64_t seq,
                     const char *name, json_t *v)
{
	int64_t *last = rev_last(t, name);
	if (!last)
		return -1;
	int64_t rev = json_is_integer(v) ? json_integer_value(v) : 0;
	if (rev < 1) {
		ev_violation(c, "revision_missing", "event %" PRId64 " has no revision of '%s'", seq,
		             name);
		return 0;
	}
	bool first = *last == 0;
	if ((first && !partial && rev != 1) || (!first && rev != *last + 1))
		ev_violation(c, rev <= *last ? "revision_order" : "revision_gap",
		             "event %" PRId64 ": '%s' at revision %" PRId64 " after %" PRId64, seq, name,
		             rev, *last);
	*last = rev;
	return 0;
}

/* One event: 0, -1 out of memory, -2 not an event (message in err). */
static int check_event(struct ev_ctx *c, struct rev_table *t, bool partial, int64_t *last_seq,
                       json_t *ev, char *err, size_t errlen)
{
	json_t *seq = json_object_get(ev, "seq"), *res = json_object_get(ev, "resource");
	json_t *list = json_object_get(ev, "revisions");
	if (!json_is_object(ev) || !json_is_integer(seq) || (res && !json_is_null(res) &&
	                                                      !json_is_string(res)) ||
	    (list && !json_is_object(list))) {
		snprintf(err, errlen, "line %zu: not an event (seq, resource, revisions)", c->line);
		return -2;
	}
	int64_t s = json_integer_value(seq);
	if (s <= *last_seq)
		ev_violation(c, "seq_order", "event %" PRId64 " after %" PRId64 ": behind the cursor",
		             s, *last_seq);
	*last_seq = s;
	c->rep->events++;
	if (!json_is_string(res))
		return 0;
	const char *own = json_string_value(res);
	json_t *rev = json_object_get(ev, "revision");
	if (list) {
		json_t *mine = json_object_get(list, own);
		if (!mine || !json_equal(mine, rev))
			ev_violation(c, "revision_missing",
			             "event %" PRId64 ": \"revisions\" does not list '%s' at its revision",
			             s, own);
		const char *name;
		json_t *v;
		json_object_foreach(list, name, v) {
			if (check_one(c, t, partial, s, name, v) != 0)
				return -1;
		}
		return 0;
	}
	return check_one(c, t, partial, s, own, rev);
}

int hfc_events_check(FILE *in, bool partial, size_t max_print, FILE *out,
                     struct hfc_events_report *rep, char *err, size_t errlen)
{
	memset(rep, 0, sizeof(*rep));
	struct ev_ctx c = {.out = out, .max_print = max_print, .rep = rep};
	struct rev_table t = {0};
	int64_t last_seq = 0;
	char *line = NULL;
	size_t cap = 0;
	int rc = 0;
	while (rc == 0 && getline(&line, &cap, in) > 0) {
		c.line++;
		size_t skip = strspn(line, " \t\r\n");
		if (line[skip] == '\0' || line[skip] == '#')
			continue;
		json_error_t je;
		json_t *ev = json_loads(line, 0, &je);
		if (!ev) {
			snprintf(err, errlen, "line %zu: %s", c.line, je.text);
			rc = -2;
			break;
		}
		rc = check_event(&c, &t, partial, &last_seq, ev, err, errlen);
		json_decref(ev);
	}
	if (rc == -1)
		snprintf(err, errlen, "out of memory");
	rep->resources = t.count;
	free(line);
	rev_release(&t);
	return rc < 0 ? -1 : rep->violations ? 1 : 0;
}
