/*
 * items.c — ownership of the items the library hands out: holds, resources, events, waiters and the
 * replies that carry them. Items live in arrays, so "clear" frees what an item points to
 * and "free" also frees a heap item.
 */
#include <stdlib.h>
#include <string.h>

#include "core/core.h"

void hf__hold_clear(hf_hold *hold)
{
	if (!hold)
		return;
	free(hold->owner);
	for (size_t i = 0; i < hold->n_parts; i++)
		free(hold->parts[i].resource);
	free(hold->parts);
	memset(hold, 0, sizeof(*hold));
}

void hf__waiter_clear(hf_waiter *w)
{
	if (!w)
		return;
	free(w->owner);
	for (size_t i = 0; i < w->n_claims; i++)
		free(w->claims[i].resource);
	free(w->claims);
	memset(w, 0, sizeof(*w));
}

void hf__resource_clear(hf_resource *res)
{
	if (!res)
		return;
	free(res->name);
	free(res->meta);
	memset(res, 0, sizeof(*res));
}

void hf__event_clear(hf_event *ev)
{
	if (!ev)
		return;
	free(ev->type);
	free(ev->resource);
	free(ev->hold_id);
	free(ev->data);
	for (size_t i = 0; i < ev->n_revisions; i++)
		free(ev->revisions[i].resource);
	free(ev->revisions);
	memset(ev, 0, sizeof(*ev));
}

/* Copies an optional string: false only when allocation failed. */
static bool dup_opt(char **dst, const char *src)
{
	*dst = hf__strdup(src);
	return !src || *dst;
}

int hf__hold_copy(hf_hold *dst, const hf_hold *src)
{
	*dst = *src;
	dst->owner = NULL;
	dst->parts = NULL;
	dst->n_parts = 0;
	if (!dup_opt(&dst->owner, src->owner))
		goto nomem;
	if (src->n_parts) {
		dst->parts = calloc(src->n_parts, sizeof(*dst->parts));
		if (!dst->parts)
			goto nomem;
		for (size_t i = 0; i < src->n_parts; i++) {
			dst->parts[i] = src->parts[i];
			dst->n_parts = i + 1;
			if (!(dst->parts[i].resource = hf__strdup(src->parts[i].resource)))
				goto nomem;
		}
	}
	return HF_OK;
nomem:
	hf__hold_clear(dst);
	return HF_ENOMEM;
}

int hf__resource_copy(hf_resource *dst, const hf_resource *src)
{
	*dst = *src;
	dst->meta = NULL;
	if (!(dst->name = hf__strdup(src->name)) || !dup_opt(&dst->meta, src->meta)) {
		hf__resource_clear(dst);
		return HF_ENOMEM;
	}
	return HF_OK;
}

int hf__event_copy(hf_event *dst, const hf_event *src)
{
	*dst = *src;
	dst->type = dst->resource = dst->hold_id = dst->data = NULL;
	dst->n_revisions = 0;
	dst->revisions = NULL;
	if (!dup_opt(&dst->type, src->type) || !dup_opt(&dst->resource, src->resource) ||
	    !dup_opt(&dst->hold_id, src->hold_id) || !dup_opt(&dst->data, src->data))
		goto nomem;
	if (src->n_revisions) {
		if (!(dst->revisions = calloc(src->n_revisions, sizeof(*dst->revisions))))
			goto nomem;
		for (size_t i = 0; i < src->n_revisions; i++) {
			dst->n_revisions = i + 1;
			dst->revisions[i].revision = src->revisions[i].revision;
			if (!(dst->revisions[i].resource = hf__strdup(src->revisions[i].resource)))
				goto nomem;
		}
	}
	return HF_OK;
nomem:
	hf__event_clear(dst);
	return HF_ENOMEM;
}

hf_hold *hf_hold_dup(const hf_hold *hold)
{
	hf_hold *copy = malloc(sizeof(*copy));
	if (copy && hf__hold_copy(copy, hold) != HF_OK) {
		free(copy);
		copy = NULL;
	}
	return copy;
}

void hf_hold_free(hf_hold *hold)
{
	hf__hold_clear(hold);
	free(hold);
}

void hf__reply_clear(hf_reply *reply)
{
	hf_op op = reply->op;
	if (reply->resource) {
		hf__resource_clear(reply->resource);
		free(reply->resource);
	}
	hf_hold_free(reply->hold);
	for (size_t i = 0; i < reply->n_resources; i++)
		hf__resource_clear(&reply->resources[i]);
	free(reply->resources);
	for (size_t i = 0; i < reply->n_holds; i++)
		hf__hold_clear(&reply->holds[i]);
	free(reply->holds);
	for (size_t i = 0; i < reply->n_events; i++)
		hf__event_clear(&reply->events[i]);
	free(reply->events);
	for (size_t i = 0; i < reply->n_waiters; i++)
		hf__waiter_clear(&reply->waiters[i]);
	free(reply->waiters);
	free(reply->json);
	memset(reply, 0, sizeof(*reply));
	reply->op = op;
}

/* What hf_call() hands back when it cannot allocate a reply, so that *reply is always set:
 * read-only, never freed. */
const hf_reply hf__reply_out_of_memory = {
    .error = {.code = HF_ENOMEM, .message = "out of memory"},
};

void hf_reply_free(hf_reply *reply)
{
	if (!reply || reply == &hf__reply_out_of_memory)
		return;
	hf__reply_clear(reply);
	free(reply);
}
