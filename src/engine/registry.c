/*
 * registry.c — the engines linked into libholdfast, found by the scheme of a URL.
 */
#include <string.h>

#include "engine/engine.h"

static const struct hf__engine_ops *const engines[] = {
	&hf__engine_embedded,
	&hf__engine_http,
#ifdef HF_WITH_POSTGRES
	&hf__engine_postgres,
	&hf__engine_postgresql,
#endif
#ifdef HF_WITH_REDIS
	&hf__engine_redis,
	&hf__engine_redlock,
#endif
};

const struct hf__engine_ops *hf__engine_find(const char *url)
{
	const char *colon = strchr(url, ':');
	if (!colon)
		return NULL;
	size_t len = (size_t)(colon - url);
	for (size_t i = 0; i < sizeof(engines) / sizeof(engines[0]); i++)
		if (strlen(engines[i]->scheme) == len && memcmp(engines[i]->scheme, url, len) == 0)
			return engines[i];
	return NULL;
}
