/*
 * rules.h — the hold rules that no engine changes: who may change a hold, what an idempotency
 * key's record means for a new acquire, which claims of an acquire are granted now, and when a
 * parked wait can no longer be granted. Every C engine calls these; the Redis engine, whose rules
 * must run inside one Lua script, mirrors them there, and the conformance suite holds both to it.
 * Internal to libholdfast.
 */
#ifndef HF_RULES_H
#define HF_RULES_H

#include <stdbool.h>
#include <stddef.h>

#include "holdfast.h"

/* Compares a hold's stored token with the one a caller gave, in time independent of where they
 * differ (a token is a capability: a timing side channel must not reveal its prefix). */
bool hf__token_equal(const char *stored, const char *given);

/* The one answer for a hold id nobody knows: HF_ENOHOLD, with `detail` (may be NULL) appended. */
int hf__err_no_hold(hf_error *err, const char *hold_id, const char *detail);

/* May the caller holding `given_token` extend, confirm or release this hold? HF_OK, or
 * HF_ETOKEN (the token is wrong: checked first, so an ended hold reveals nothing to a stranger)
 * or HF_EENDED (released or expired), with the message set in err. */
int hf__check_owner(const char *hold_id, const char *stored_token, hf_hold_state state,
                    const char *given_token, hf_error *err);
/* The same, with the operator's path: an operator release (hf_request.operator_release, which
 * holdfastd grants only with its API key) skips the token, never the ended check. */
int hf__check_owner_or_operator(const char *hold_id, const char *stored_token,
                                hf_hold_state state, const char *given_token, bool by_operator,
                                hf_error *err);

/* An acquire with an idempotency key that already has a record: `stored_fp` is the fingerprint
 * (hf__acquire_fingerprint) of the request that made it, `pending` whether that request is still
 * parked. HF_OK means "replay the first grant"; else HF_EIDEMMISMATCH or HF_EIDEMBUSY with the
 * message set in err. */
int hf__idem_verdict(const char *key, const char *stored_fp, const char *fp, bool pending,
                     hf_error *err);

/* Answers whether claim i (of an acquire's claims, in name order) could be taken. */
typedef bool (*hf__claim_pred)(void *ctx, size_t i);

/* Which claims an acquire takes now: all of them (all-or-nothing) or, for any-of, the first in
 * name order that fits. Returns true and sets [*from, *to) when something is granted. */
bool hf__claims_grantable(size_t n, bool any, hf__claim_pred fits, void *ctx, size_t *from,
                          size_t *to);

/* When a capacity is lowered, can a parked wait still ever be granted? An all-of wait cannot
 * once one of its claims exceeds its resource's capacity; an any-of wait only once every claim
 * does. `exceeds(ctx, i)` answers for claim i. */
bool hf__wait_impossible(size_t n, bool any, hf__claim_pred exceeds, void *ctx);

/* The HF_EUNAVAILABLE answer of an acquire that would have to wait but may not (NOWAIT). */
int hf__err_unavailable(hf_error *err, size_t n_claims);

#endif /* HF_RULES_H */
