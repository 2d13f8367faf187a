/*
 * redis.h — what the redis:// and redlock:// engines share: the embedded Lua text of the
 * hold rules (holds.lua, generated into a .c at build time), URL parsing of host lists and
 * query options, and a blocking hiredis connect with timeouts. Internal to libholdfast.
 */
#ifndef HF_ENGINE_REDIS_H
#define HF_ENGINE_REDIS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <hiredis/hiredis.h>
#include <jansson.h>

#include "holdfast.h"

/* holds.lua in two forms, NUL-terminated: a script (EVAL/EVALSHA: its text ends by calling
 * run(ARGV)) and a Redis 7 function library (FUNCTION LOAD) registering hf__redis_function,
 * "holdfast_" + 16 hex of the text's SHA-1, called as FCALL hf__redis_function 1 <P>seq ARGV... */
extern const char hf__redis_script[];
extern const size_t hf__redis_script_len;
extern const char hf__redis_library[];
extern const size_t hf__redis_library_len;
extern const char hf__redis_function[];

#define HF__REDIS_MAX_NODES 16

struct hf__redis_node {
	char host[256];
	int port;
};

/* A parsed redis:// or redlock:// URL:
 *   redis://[:password@]host[:port][/db][?prefix=P]
 *   redlock://[:password@]host:port,host:port,...[?timeout_ms=&retry_delay_ms=&retry_jitter_ms=&prefix=]
 * Query values are kept raw: each engine looks up the ones it knows and refuses others. */
struct hf__redis_url {
	size_t n_nodes;
	struct hf__redis_node nodes[HF__REDIS_MAX_NODES];
	char password[256]; /* "" for none */
	int db;
	size_t n_params;
	char keys[8][32];
	char values[8][256];
};

/* Parses `url` (scheme already matched by the caller, `scheme` names it for messages).
 * HF_OK or HF_EINVAL with a message naming what was wrong. */
int hf__redis_url_parse(const char *url, const char *scheme, struct hf__redis_url *out,
                        hf_error *err);
/* The value of query parameter `key`, or NULL. */
const char *hf__redis_url_param(const struct hf__redis_url *u, const char *key);

/* Connects with a connect timeout and sets the read/write timeout, then AUTH and SELECT as
 * the URL says. NULL on failure with the reason in `why` (size `n`). */
redisContext *hf__redis_connect(const struct hf__redis_node *node, const char *password, int db,
                                int connect_timeout_ms, int io_timeout_ms, char *why, size_t n);

int64_t hf__redis_mono_ms(void);

/* Redis Cluster. An error reply classified: MOVED and ASK name the node to go to (in *to; an
 * empty or '?' host is `from`'s), TRYAGAIN and CLUSTERDOWN say "later" (HF__REDIR_RETRY).
 * Every redirect is an error the server sends before running the command: resending it is
 * safe. The redis:// engine follows them in one place (engine.c, run_jobs). */
enum { HF__REDIR_NONE = 0, HF__REDIR_MOVED, HF__REDIR_ASK, HF__REDIR_RETRY };
int hf__redis_redirect(const char *err, const struct hf__redis_node *from,
                       struct hf__redis_node *to);
/* A Cluster hash tag: a '{' and, after it, a '}' with at least one byte between. */
bool hf__redis_has_hash_tag(const char *s);
/* INFO cluster: 1 when cluster_enabled:1, 0 when not, -1 on error (reason in `why`). */
int hf__redis_cluster_enabled(redisContext *c, char *why, size_t n);

/* retention.c: the plan of a trim pass (core/retention.h) from holds.lua's trim_info answer
 * `info`, always filled (a checkpoint in the way is for the log). True when events are to
 * go: those up to plan->upto, at most hf__redis_trim_batch() of them. */
struct hf__trim_policy;
struct hf__trim_plan;
bool hf__redis_trim_plan(const struct hf__trim_policy *pol, const json_t *info,
                         struct hf__trim_plan *plan);
int64_t hf__redis_trim_batch(void); /* trim_info's search window, and the most per pass */

#endif /* HF_ENGINE_REDIS_H */
