/*
 * core.h — internal helpers shared by every part of libholdfast: error values, memory,
 * random tokens, validation of names and requests, and copies of replies' items.
 * Internal names are hf__; nothing here is public.
 */
#ifndef HF_CORE_H
#define HF_CORE_H

#include <stdarg.h>

#include "holdfast.h"

#if defined(__GNUC__)
#define HF__PRINTF(fmt, args) __attribute__((format(printf, fmt, args)))
#else
#define HF__PRINTF(fmt, args)
#endif

/* Sets err (if not NULL) to code and a formatted message; returns code. */
int hf__err(hf_error *err, int code, const char *fmt, ...) HF__PRINTF(3, 4);
/* Sets err to code with the code's default message; returns code. */
int hf__err_code(hf_error *err, int code);
void hf__err_clear(hf_error *err);

/* strdup that accepts NULL (returns NULL); NULL on allocation failure otherwise too, so
 * callers compare against their input. */
char *hf__strdup(const char *s);
/* FNV-1a of a string: the hash of in-memory tables and of routing hints (never stored). */
uint64_t hf__hash_str(const char *s);

/* Fills buf with 2*n lowercase hex characters of n bytes from the OS CSPRNG (getrandom)
 * plus a NUL. Returns HF_OK or HF_EINTERNAL if the OS has no randomness to give. */
int hf__random_hex(char *buf, size_t n);
/* A new hold's id and token, from one getrandom call (one syscall per grant, not two). */
int hf__random_id_token(char id[HF_ID_LEN + 1], char token[HF_TOKEN_LEN + 1]);

/* Names the calling thread (at most 15 bytes are kept), as `top -H`, `ps -L` and perf show
 * it. */
void hf__thread_name(const char *name);

/* Validation of user input: HF_OK, or HF_EINVAL with a message naming the field. */
int hf__check_name(const char *field, const char *s, size_t max, hf_error *err);
int hf__check_idempotency_key(const char *key, hf_error *err);
int hf__check_meta(const char *meta, hf_error *err); /* NULL or a JSON object <= HF_META_MAX */
int hf__check_request(const hf_request *req, hf_error *err);
/* The position a LIST_WAITERS cursor names (NULL: 0, from the start); -1 if it is not one. */
int64_t hf__waiter_cursor(const char *cursor);

/* Deep copy of a request whose strings and claims go into `space`, hf__request_extra(src)
 * bytes aligned for a pointer (store.c puts them in the call's own allocation): the copy
 * lives as long as the space, and there is nothing else to free. */
size_t hf__request_extra(const hf_request *src);
void hf__request_pack(hf_request *dst, const hf_request *src, void *space);

/* Frees what an item points to, not the item itself (items live in arrays). */
void hf__hold_clear(hf_hold *hold);
/* Frees what a reply points to and zeroes it, keeping its op: an error reply made without
 * allocating (when there is no memory for a new one). */
void hf__reply_clear(hf_reply *reply);
extern const hf_reply hf__reply_out_of_memory; /* hf_call()'s reply when none can be allocated */
void hf__resource_clear(hf_resource *res);
void hf__event_clear(hf_event *ev);
void hf__waiter_clear(hf_waiter *w);
/* Deep copies into dst (which is overwritten). Return HF_OK or HF_ENOMEM. */
int hf__hold_copy(hf_hold *dst, const hf_hold *src);
int hf__resource_copy(hf_resource *dst, const hf_resource *src);
int hf__event_copy(hf_event *dst, const hf_event *src);

/* Canonical text of an acquire, for idempotency: two requests are "the same" iff equal. */
char *hf__acquire_fingerprint(const hf_acquire_req *req);

/* One logfmt line on stderr, as holdfastd writes them ("ts=... level=... msg=..."), for an
 * engine that must say something with no caller to tell (the library has no logger).
 * store and error (may be NULL) are quoted. */
void hf__log_line(const char *level, const char *engine, const char *msg, const char *store,
                  const char *error);

#endif /* HF_CORE_H */
