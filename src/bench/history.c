/*
 * history.c — writes what the clients observed as an operation history for holdfast-check
 * (JSON lines, docs/reliability.md): each observation becomes an invocation at its send time
 * and a completion at its answer time, in real-time order.
 */
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "bench.h"

struct line {
	int64_t t;
	/* At one time: invocations (0), completions (1), then a client's next call (2 and up: a
	 * call made and answered in the same microsecond as the one before it ranks each of its
	 * lines above that one's, so a client's own lines stay in its program order). */
	int cls;
	bool completion;
	size_t obs;
};

static int cmp_line(const void *a, const void *b)
{
	const struct line *x = a, *y = b;
	if (x->t != y->t)
		return x->t < y->t ? -1 : 1;
	if (x->cls != y->cls)
		return x->cls - y->cls;
	return x->obs < y->obs ? -1 : x->obs > y->obs;
}

static const struct hfb_history *sort_hist;

static int cmp_client_send(const void *a, const void *b)
{
	const struct hfb_obs *x = &sort_hist->obs[*(const size_t *)a],
	                     *y = &sort_hist->obs[*(const size_t *)b];
	if (x->client != y->client)
		return x->client < y->client ? -1 : 1;
	if (x->t_send != y->t_send)
		return x->t_send < y->t_send ? -1 : 1;
	/* Calls of one client in one microsecond: in the order they were recorded (qsort is not
	 * stable), which is the client's program order. */
	size_t i = *(const size_t *)a, j = *(const size_t *)b;
	return i < j ? -1 : i > j;
}

static const char *f_name(enum hfb_kind k)
{
	return k == HFB_GRANT     ? "acquire"
	       : k == HFB_CONFIRM ? "confirm"
	       : k == HFB_RELEASE ? "release"
	                          : "read";
}

/* Completions whose outcome the client cannot know: the request may or may not have acted. */
static bool unknown_outcome(int code)
{
	return code == HF_EENGINE || code == HF_EPROTO || code == HF_ECLOSED ||
	       code == HF_ESTORAGE || code == HF_EINTERNAL || code == HF_ENOMEM;
}

static json_t *parts_json(const struct hfb_history *h, const struct hfb_obs *o, bool fences)
{
	json_t *arr = json_array();
	for (size_t p = 0; arr && p < o->n_parts; p++) {
		int r = o->parts[p].res;
		json_t *x = json_pack("{s:s, s:I}", "name", r >= 0 ? h->res[r].name : "?", "units",
		                      (json_int_t)o->parts[p].units);
		if (x && fences && o->parts[p].fence > 0)
			json_object_set_new(x, "fence", json_integer(o->parts[p].fence));
		json_array_append_new(arr, x);
	}
	return arr;
}

static int write_line(FILE *f, const struct hfb_history *h, const struct hfb_obs *o,
                      bool completion)
{
	long process = o->client >= 0 ? o->client : 1000000; /* the read-back runs alone */
	const char *type = !completion                                     ? "invoke"
	                   : o->code == HF_OK                              ? "ok"
	                   : o->kind == HFB_FINAL && o->code == HF_ENOHOLD ? "ok"
	                   : unknown_outcome(o->code)                      ? "info"
	                                                                   : "fail";
	json_t *j =
	    json_pack("{s:I, s:s, s:s, s:I}", "process", (json_int_t)process, "type", type, "f",
	              f_name(o->kind), "time_us", (json_int_t)(completion ? o->t_ack : o->t_send));
	if (!j)
		return -1;
	if (o->kind == HFB_GRANT) {
		json_object_set_new(j, "resources", parts_json(h, o, completion));
		if (o->exclusive)
			json_object_set_new(j, "mode", json_string("exclusive"));
		if (completion)
			json_object_set_new(j, "hold", json_string(o->hold));
	} else {
		json_object_set_new(j, "hold", json_string(o->hold));
	}
	if (completion && o->kind == HFB_FINAL)
		json_object_set_new(j, "state",
		                    json_string(o->state < 0
		                                    ? "not_found"
		                                    : hf_hold_state_name((hf_hold_state)o->state)));
	if (completion && strcmp(type, "ok") != 0)
		json_object_set_new(j, "error", json_string(hf_err_name(o->code)));
	char *s = json_dumps(j, JSON_COMPACT);
	json_decref(j);
	if (!s)
		return -1;
	int rc = fprintf(f, "%s\n", s) < 0 ? -1 : 0;
	free(s);
	return rc;
}

int hfb_history_write(struct hfb_history *h, const char *path)
{
	FILE *f = fopen(path, "w");
	if (!f)
		return -1;
	int rc = -1;
	size_t n = h->n_obs;
	struct line *lines = malloc((2 * n + 1) * sizeof(*lines));
	size_t *by_client = malloc((n + 1) * sizeof(*by_client));
	if (!lines || !by_client)
		goto out;
	/* A client's next call may start in the microsecond its last one was answered: then
	 * it sorts after every completion of that microsecond, its last one's included, and if
	 * it is answered in that microsecond too, its completion after its invocation. */
	for (size_t i = 0; i < n; i++)
		by_client[i] = i;
	sort_hist = h;
	qsort(by_client, n, sizeof(*by_client), cmp_client_send);
	sort_hist = NULL;
	int last_ack_cls = 1;
	for (size_t k = 0; k < n; k++) {
		size_t i = by_client[k];
		const struct hfb_obs *o = &h->obs[i];
		bool follows = k > 0 && h->obs[by_client[k - 1]].client == o->client &&
		               h->obs[by_client[k - 1]].t_ack == o->t_send;
		int send_cls = follows ? (last_ack_cls > 1 ? last_ack_cls + 1 : 2) : 0;
		int ack_cls = o->t_ack == o->t_send && send_cls >= 1 ? send_cls + 1 : 1;
		lines[2 * i] = (struct line){o->t_send, send_cls, false, i};
		lines[2 * i + 1] = (struct line){o->t_ack, ack_cls, true, i};
		last_ack_cls = ack_cls;
	}
	qsort(lines, 2 * n, sizeof(*lines), cmp_line);
	for (size_t r = 0; r < h->n_res; r++) {
		json_t *j = json_pack("{s:s, s:s, s:I}", "type", "resource", "name", h->res[r].name,
		                      "capacity", (json_int_t)h->res[r].capacity);
		char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
		json_decref(j);
		int w = s ? fprintf(f, "%s\n", s) : -1;
		free(s);
		if (w < 0)
			goto out;
	}
	for (size_t k = 0; k < 2 * n; k++) {
		const struct hfb_obs *o = &h->obs[lines[k].obs];
		if (write_line(f, h, o, lines[k].completion) != 0)
			goto out;
	}
	rc = 0;
out:
	free(lines);
	free(by_client);
	if (fclose(f) != 0)
		rc = -1;
	return rc;
}
