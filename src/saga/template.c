/*
 * template.c — {{path}} templates in a saga type's strings: finding the references (for
 * validation) and expanding them against a saga's context (input, earlier steps' results,
 * the saga's id, the step's idempotency key).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/codec.h"
#include "core/core.h"
#include "saga/saga.h"

#define REF_MAX 256

/* Finds the next "{{...}}" in s: *start at "{{", *len the length of the inside. Returns false
 * when there is none; *bad is set for an unclosed or oversized one. */
static bool next_ref(const char *s, const char **start, size_t *len, bool *bad)
{
	*bad = false;
	const char *open = strstr(s, "{{");
	if (!open)
		return false;
	const char *close = strstr(open + 2, "}}");
	if (!close || (size_t)(close - open - 2) >= REF_MAX || close == open + 2) {
		*bad = true;
		return false;
	}
	*start = open;
	*len = (size_t)(close - open - 2);
	return true;
}

/* Copies the inside of a reference without surrounding blanks ("{{ input.x }}" works too). */
static void ref_text(const char *start, size_t len, char *out)
{
	const char *a = start + 2, *b = start + 2 + len;
	while (a < b && *a == ' ')
		a++;
	while (b > a && b[-1] == ' ')
		b--;
	memcpy(out, a, (size_t)(b - a));
	out[b - a] = 0;
}

int hf__template_refs(const json_t *tree, const char *where, hf__template_ref_fn ref, void *arg,
                      hf_error *err)
{
	if (json_is_string(tree)) {
		const char *s = json_string_value(tree), *start;
		size_t len;
		bool bad;
		char text[REF_MAX];
		while (next_ref(s, &start, &len, &bad)) {
			ref_text(start, len, text);
			int rc = ref(arg, text, err);
			if (rc)
				return rc;
			s = start + len + 4;
		}
		if (bad)
			return hf__err(err, HF_EINVAL, "%s: a template \"{{\" is not closed by \"}}\" (or is empty or too long)", where);
		return HF_OK;
	}
	if (json_is_array(tree)) {
		for (size_t i = 0; i < json_array_size(tree); i++) {
			int rc = hf__template_refs(json_array_get(tree, i), where, ref, arg, err);
			if (rc)
				return rc;
		}
	} else if (json_is_object(tree)) {
		const char *k;
		json_t *v;
		json_object_foreach((json_t *)tree, k, v)
		{
			int rc = hf__template_refs(v, where, ref, arg, err);
			if (rc)
				return rc;
		}
	}
	return HF_OK;
}

/* The value at a dotted path in ctx; numeric segments index arrays. NULL if missing. */
static json_t *lookup(const json_t *ctx, const char *path)
{
	json_t *v = (json_t *)ctx;
	char seg[REF_MAX];
	while (v && *path) {
		size_t n = strcspn(path, ".");
		memcpy(seg, path, n), seg[n] = 0;
		path += n + (path[n] == '.');
		if (json_is_object(v)) {
			v = json_object_get(v, seg);
		} else if (json_is_array(v) && n > 0 && strspn(seg, "0123456789") == n) {
			v = json_array_get(v, strtoul(seg, NULL, 10));
		} else {
			v = NULL;
		}
	}
	return v == json_null() ? NULL : v;
}

/* Appends v as text: strings raw, everything else as compact JSON. */
static bool append_value(char **buf, size_t *len, size_t *cap, const json_t *v)
{
	char *owned = NULL;
	const char *text = json_is_string(v) ? json_string_value(v)
	                                     : (owned = hf__json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY));
	if (!text)
		return false;
	size_t n = json_is_string(v) ? json_string_length(v) : strlen(text);
	if (*len + n + 1 > *cap) {
		size_t ncap = (*len + n + 1) * 2;
		char *nb = realloc(*buf, ncap);
		if (!nb) {
			free(owned);
			return false;
		}
		*buf = nb, *cap = ncap;
	}
	memcpy(*buf + *len, text, n);
	*len += n;
	(*buf)[*len] = 0;
	free(owned);
	return true;
}

static json_t *expand_string(const json_t *str, const json_t *ctx, hf_error *err)
{
	const char *s = json_string_value(str), *start;
	size_t rlen;
	bool bad;
	char ref[REF_MAX];
	if (!next_ref(s, &start, &rlen, &bad)) {
		if (bad)
			hf__err(err, HF_EINVAL, "template in \"%.60s\" is not closed", s);
		return bad ? NULL : json_incref((json_t *)str);
	}
	/* Exactly one template: the value keeps its JSON type. */
	if (start == s && start[rlen + 4] == 0) {
		ref_text(start, rlen, ref);
		json_t *v = lookup(ctx, ref);
		if (!v)
			hf__err(err, HF_EINVAL, "template refers to a missing value \"%s\"", ref);
		return v ? json_deep_copy(v) : NULL;
	}
	char *buf = NULL;
	size_t len = 0, cap = 0;
	json_t *lit = NULL;
	while (next_ref(s, &start, &rlen, &bad)) {
		ref_text(start, rlen, ref);
		json_t *v = lookup(ctx, ref);
		if (!v) {
			hf__err(err, HF_EINVAL, "template refers to a missing value \"%s\"", ref);
			goto fail;
		}
		lit = json_stringn(s, (size_t)(start - s));
		if (!lit || !append_value(&buf, &len, &cap, lit) || !append_value(&buf, &len, &cap, v))
			goto nomem;
		json_decref(lit), lit = NULL;
		s = start + rlen + 4;
	}
	if (bad) {
		hf__err(err, HF_EINVAL, "template in \"%.60s\" is not closed", json_string_value(str));
		goto fail;
	}
	if (!(lit = json_string(s)) || !append_value(&buf, &len, &cap, lit))
		goto nomem;
	json_decref(lit);
	json_t *out = json_stringn(buf ? buf : "", len);
	free(buf);
	if (!out)
		hf__err_code(err, HF_ENOMEM);
	return out;
nomem:
	hf__err_code(err, HF_ENOMEM);
fail:
	json_decref(lit);
	free(buf);
	return NULL;
}

json_t *hf__template_expand(const json_t *tree, const json_t *ctx, hf_error *err)
{
	if (!tree)
		return NULL;
	if (json_is_string(tree))
		return expand_string(tree, ctx, err);
	json_t *out = NULL;
	if (json_is_array(tree)) {
		out = json_array();
		for (size_t i = 0; out && i < json_array_size(tree); i++) {
			json_t *v = hf__template_expand(json_array_get(tree, i), ctx, err);
			if (!v || json_array_append_new(out, v)) {
				json_decref(out);
				return NULL;
			}
		}
	} else if (json_is_object(tree)) {
		out = json_object();
		const char *k;
		json_t *v;
		json_object_foreach((json_t *)tree, k, v)
		{
			json_t *e = out ? hf__template_expand(v, ctx, err) : NULL;
			if (!e || json_object_set_new(out, k, e)) {
				json_decref(out);
				return NULL;
			}
		}
	} else {
		return json_incref((json_t *)tree);
	}
	if (!out)
		hf__err_code(err, HF_ENOMEM);
	return out;
}
