/*
 * rules.c — the engine-neutral hold rules of rules.h: owner checks, token comparison,
 * idempotency verdicts, any/all claim selection and the "can this wait ever fit" rule.
 * Messages are written here once so that every engine answers alike.
 */
#include "rules.h"

#include <string.h>

#include "core.h"

bool hf__token_equal(const char *stored, const char *given)
{
	size_t ls = strlen(stored), lg = strlen(given);
	unsigned diff = (unsigned)(ls ^ lg);
	/* Runs over the stored token's length whatever the given one is: the time depends only
	 * on a length every client knows (HF_TOKEN_LEN). */
	for (size_t i = 0; i < ls; i++)
		diff |= (unsigned)(stored[i] ^ (i < lg ? given[i] : 0));
	return diff == 0;
}

int hf__err_no_hold(hf_error *err, const char *hold_id, const char *detail)
{
	if (detail)
		return hf__err(err, HF_ENOHOLD, "hold '%s' does not exist (%s)", hold_id, detail);
	return hf__err(err, HF_ENOHOLD, "hold '%s' does not exist", hold_id);
}

int hf__check_owner(const char *hold_id, const char *stored_token, hf_hold_state state,
                    const char *given_token, hf_error *err)
{
	return hf__check_owner_or_operator(hold_id, stored_token, state, given_token, false, err);
}

int hf__check_owner_or_operator(const char *hold_id, const char *stored_token,
                                hf_hold_state state, const char *given_token, bool by_operator,
                                hf_error *err)
{
	if (!by_operator && (!given_token || !hf__token_equal(stored_token, given_token)))
		return hf__err(err, HF_ETOKEN, "token does not match hold '%s'", hold_id);
	if (state == HF_HOLD_RELEASED || state == HF_HOLD_EXPIRED)
		return hf__err(err, HF_EENDED, "hold '%s' has %s", hold_id,
		               state == HF_HOLD_RELEASED ? "been released" : "expired");
	return HF_OK;
}

int hf__idem_verdict(const char *key, const char *stored_fp, const char *fp, bool pending,
                     hf_error *err)
{
	if (strcmp(stored_fp, fp) != 0)
		return hf__err(err, HF_EIDEMMISMATCH,
		               "idempotency key '%s' was used for another request", key);
	if (pending)
		return hf__err(err, HF_EIDEMBUSY,
		               "a request with idempotency key '%s' is still waiting", key);
	return HF_OK;
}

bool hf__claims_grantable(size_t n, bool any, hf__claim_pred fits, void *ctx, size_t *from,
                          size_t *to)
{
	if (any) {
		for (size_t i = 0; i < n; i++)
			if (fits(ctx, i)) {
				*from = i;
				*to = i + 1;
				return true;
			}
		return false;
	}
	for (size_t i = 0; i < n; i++)
		if (!fits(ctx, i))
			return false;
	*from = 0;
	*to = n;
	return n > 0;
}

bool hf__wait_impossible(size_t n, bool any, hf__claim_pred exceeds, void *ctx)
{
	for (size_t i = 0; i < n; i++) {
		bool over = exceeds(ctx, i);
		if (over && !any)
			return true;
		if (!over && any)
			return false;
	}
	return any && n > 0;
}

int hf__err_unavailable(hf_error *err, size_t n_claims)
{
	return hf__err(err, HF_EUNAVAILABLE, "%s",
	               n_claims == 1 ? "the units are not free now" : "not all units are free now");
}
