/*
 * scen.c — the five scenarios of holdfast-bench as per-client state machines over hold calls:
 * 1 uncontended lock, 2 hot lock hand-off, 3 hot stock, 4 seat race, 5 saga booking with
 * abandoned leases. Each cycle is acquire → (confirm | release | abandon); the rounds of the
 * seat race are counted here and checked after the run (exactly as many winners as seats).
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"

#define LOCK_CAPACITY 65536 /* what POST /v1/locks gives lock:KEY */
#define LONG_TTL_MS 30000   /* leases that are meant to be released, not to expire */

/* Scenario 4: per round, how many clients tried and how many were granted a seat. */
struct round {
	int attempts, grants, confirms;
};
static pthread_mutex_t rounds_lock = PTHREAD_MUTEX_INITIALIZER;
static struct round *rounds;
static int n_rounds;

static char hot_key[HF_NAME_MAX + 1], stock_name[HF_NAME_MAX + 1], bag_name[HF_NAME_MAX + 1];

static int reg(const char *name, int64_t capacity)
{
	if (hfb_history_resource(&hfb_run.hist, name, capacity) < 0) {
		fprintf(stderr, "holdfast-bench: out of memory\n");
		exit(3);
	}
	return 0;
}

int hfb_scenario_setup(void)
{
	char name[HF_NAME_MAX + 1];
	snprintf(hot_key, sizeof(hot_key), "%s-hot", hfb_cfg.tag);
	snprintf(stock_name, sizeof(stock_name), "%s-stock", hfb_cfg.tag);
	snprintf(bag_name, sizeof(bag_name), "%s-bag", hfb_cfg.tag);
	switch (hfb_cfg.scenario) {
	case 1:
		for (int k = 0; k < hfb_cfg.clients; k++) {
			snprintf(name, sizeof(name), "lock:%s-u%d", hfb_cfg.tag, k);
			reg(name, LOCK_CAPACITY);
		}
		break;
	case 2:
		snprintf(name, sizeof(name), "lock:%.200s", hot_key);
		reg(name, LOCK_CAPACITY);
		break;
	case 3:
		reg(stock_name, hfb_cfg.stock);
		break;
	case 5:
		reg(bag_name, hfb_cfg.bag_capacity);
		for (int i = 0; i < hfb_cfg.seats; i++) {
			snprintf(name, sizeof(name), "%s-seat-%d", hfb_cfg.tag, i);
			reg(name, 1);
		}
		break;
	}
	return 0;
}

void hfb_scenario_free(void)
{
	free(rounds);
	rounds = NULL;
	n_rounds = 0;
}

/* Ends the client; a confirmed hold it still keeps is read back after the run. */
static void stop(struct hfb_client *c)
{
	if (c->kept)
		hfb_verify_later(c, c->kept_hold, false);
	c->kept = false;
	hfb_client_stop(c);
}

static void remember(struct hfb_client *c, const struct hfb_answer *a)
{
	snprintf(c->hold, sizeof(c->hold), "%s", a->hold);
	snprintf(c->token, sizeof(c->token), "%s", a->token);
	c->units = a->units;
}

static void release_held(struct hfb_client *c, hfb_answer_fn then)
{
	struct hfb_call call = {.kind = HFB_CALL_RELEASE, .hold = c->hold, .token = c->token};
	hfb_call(c, &call, then);
}

static void confirm_held(struct hfb_client *c, hfb_answer_fn then)
{
	struct hfb_call call = {.kind = HFB_CALL_CONFIRM, .hold = c->hold, .token = c->token};
	hfb_call(c, &call, then);
}

/* The confirmed hold in hand becomes the kept one (released at the start of the next cycle). */
static void keep_held(struct hfb_client *c)
{
	c->kept = true;
	memcpy(c->kept_hold, c->hold, sizeof(c->kept_hold));
	memcpy(c->kept_token, c->token, sizeof(c->kept_token));
	c->kept_units = c->units;
}

/* ---- 1: uncontended lock, 2: hot lock ---- */

static void lock_next(struct hfb_client *c);

static void lock_released(struct hfb_client *c, const struct hfb_answer *a)
{
	(void)a;
	c->w->stats.cycles++;
	lock_next(c);
}

static void lock_release(struct hfb_client *c)
{
	if (hfb_cfg.scenario == 2)
		atomic_store(&hfb_run.last_release_us, hfb_now_us());
	release_held(c, lock_released);
}

static void lock_granted(struct hfb_client *c, const struct hfb_answer *a)
{
	if (a->code != HF_OK) {
		c->w->stats.cycles++;
		lock_next(c);
		return;
	}
	remember(c, a);
	c->grants++;
	if (hfb_cfg.scenario == 2) {
		/* a hand-off: the release that let us in was sent while we were waiting */
		int64_t now = hfb_now_us(), rel = atomic_load(&hfb_run.last_release_us);
		if (rel > c->t_cycle)
			hfb_hist_add(&c->w->stats.handoff, now - rel);
		if (hfb_cfg.cs_us > 0) {
			hfb_after(c, hfb_cfg.cs_us, lock_release);
			return;
		}
	}
	lock_release(c);
}

static void lock_next(struct hfb_client *c)
{
	if (!hfb_may_start(c)) {
		stop(c);
		return;
	}
	struct hfb_call call = {.kind = HFB_CALL_ACQUIRE,
	                        .lock_key = c->key,
	                        .ttl_ms = LONG_TTL_MS,
	                        .wait_ms = hfb_cfg.scenario == 2 ? hfb_cfg.wait_ms : 0};
	c->t_cycle = hfb_now_us();
	hfb_call(c, &call, lock_granted);
}

/* ---- 3: hot stock ---- */

static void stock_next(struct hfb_client *c);

static void stock_done(struct hfb_client *c, const struct hfb_answer *a)
{
	if (a->code == HF_OK && c->call_kind == HFB_CALL_CONFIRM)
		keep_held(c);
	c->w->stats.cycles++;
	stock_next(c);
}

static void stock_granted(struct hfb_client *c, const struct hfb_answer *a)
{
	if (a->code != HF_OK) {
		c->w->stats.cycles++;
		stock_next(c);
		return;
	}
	remember(c, a);
	if (hfb_rand_range(&c->rng, 0, 99) < hfb_cfg.confirm_pct)
		confirm_held(c, stock_done);
	else
		release_held(c, stock_done);
}

static void stock_reserve(struct hfb_client *c)
{
	if (!hfb_may_start(c)) {
		stop(c);
		return;
	}
	struct hfb_call call = {
	    .kind = HFB_CALL_ACQUIRE, .n = 1, .ttl_ms = LONG_TTL_MS, .wait_ms = 0};
	call.names[0] = stock_name;
	call.units[0] = hfb_rand_range(&c->rng, 1, hfb_cfg.max_units);
	call.caps[0] = hfb_cfg.stock;
	c->t_cycle = hfb_now_us();
	hfb_call(c, &call, stock_granted);
}

static void restocked(struct hfb_client *c, const struct hfb_answer *a)
{
	(void)a;
	stock_reserve(c);
}

/* A confirmed sale from the last cycle goes back on the shelf first: the stock circulates, so
 * the run measures contention rather than an empty shelf. */
static void stock_next(struct hfb_client *c)
{
	if (!c->kept) {
		stock_reserve(c);
		return;
	}
	c->kept = false;
	struct hfb_call call = {
	    .kind = HFB_CALL_RELEASE, .hold = c->kept_hold, .token = c->kept_token};
	hfb_call(c, &call, restocked);
}

/* ---- 4: seat race ---- */

static struct round *round_get(int r)
{
	if (r >= n_rounds) {
		int n = n_rounds ? n_rounds * 2 : 256;
		while (n <= r)
			n *= 2;
		struct round *p = realloc(rounds, (size_t)n * sizeof(*p));
		if (!p) {
			fprintf(stderr, "holdfast-bench: out of memory\n");
			exit(3);
		}
		memset(p + n_rounds, 0, (size_t)(n - n_rounds) * sizeof(*p));
		rounds = p;
		n_rounds = n;
	}
	return &rounds[r];
}

static void seat_next(struct hfb_client *c);

static void seat_confirmed(struct hfb_client *c, const struct hfb_answer *a)
{
	if (a->code == HF_OK) {
		pthread_mutex_lock(&rounds_lock);
		round_get(c->round)->confirms++;
		pthread_mutex_unlock(&rounds_lock);
		hfb_verify_later(c, c->hold,
		                 false); /* a sold seat: it must still be confirmed at the end */
	}
	c->w->stats.cycles++;
	c->round++;
	seat_next(c);
}

static void seat_granted(struct hfb_client *c, const struct hfb_answer *a)
{
	pthread_mutex_lock(&rounds_lock);
	struct round *r = round_get(c->round);
	r->attempts++;
	r->grants += a->code == HF_OK;
	pthread_mutex_unlock(&rounds_lock);
	if (a->code != HF_OK) {
		c->w->stats.cycles++;
		c->round++;
		seat_next(c);
		return;
	}
	remember(c, a);
	confirm_held(c, seat_confirmed);
}

static void seat_next(struct hfb_client *c)
{
	if (!hfb_may_start(c)) {
		stop(c);
		return;
	}
	char names[HF_CLAIMS_MAX][HF_NAME_MAX + 1];
	struct hfb_call call = {.kind = HFB_CALL_ACQUIRE, .any = true, .ttl_ms = LONG_TTL_MS};
	int seats = hfb_cfg.seats;
	int first = (int)hfb_rand_range(&c->rng, 0, seats - 1); /* spread the first choices */
	for (int i = 0; i < seats; i++) {
		snprintf(names[i], sizeof(names[i]), "%s-r%d-s%d", hfb_cfg.tag, c->round,
		         (first + i) % seats);
		reg(names[i], 1);
		call.names[i] = names[i];
		call.units[i] = 1;
		call.caps[i] = 1;
	}
	call.n = (size_t)seats;
	c->t_cycle = hfb_now_us();
	hfb_call(c, &call, seat_granted);
}

long hfb_scenario_check(FILE *out)
{
	if (hfb_cfg.scenario != 4)
		return 0;
	long bad = 0;
	for (int r = 0; r < n_rounds && rounds[r].attempts > 0; r++) {
		const struct round *x = &rounds[r];
		int want = x->attempts < hfb_cfg.seats ? x->attempts : hfb_cfg.seats;
		if (x->grants == want && x->confirms == x->grants)
			continue;
		if (++bad <= (long)hfb_cfg.max_print)
			fprintf(
			    out,
			    "VIOLATION seat_race: round %d: %d clients tried for %d seats, %d were "
			    "granted one and %d confirmed (want %d)\n",
			    r, x->attempts, hfb_cfg.seats, x->grants, x->confirms, want);
	}
	return bad;
}

/* Rounds completed and winners, for the report. */
void hfb_scenario_rounds(int *n, long *winners)
{
	*n = 0;
	*winners = 0;
	for (int r = 0; r < n_rounds && rounds[r].attempts > 0; r++) {
		(*n)++;
		*winners += rounds[r].confirms;
	}
}

/* ---- 5: saga booking ---- */

static void saga_next(struct hfb_client *c);

static void saga_done(struct hfb_client *c, const struct hfb_answer *a)
{
	if (a->code == HF_OK && c->call_kind == HFB_CALL_CONFIRM)
		keep_held(c);
	c->w->stats.cycles++;
	saga_next(c);
}

static void saga_granted(struct hfb_client *c, const struct hfb_answer *a)
{
	if (a->code != HF_OK) {
		/* sold out for now: the customer tries again a moment later */
		c->w->stats.cycles++;
		if (hfb_cfg.retry_us > 0)
			hfb_after(c, hfb_cfg.retry_us, saga_next);
		else
			saga_next(c);
		return;
	}
	remember(c, a);
	int64_t roll = hfb_rand_range(&c->rng, 0, 99);
	if (roll < hfb_cfg.abandon_pct) {
		/* the customer walks away: nobody releases, the lease must free seat and bags */
		c->w->stats.abandoned++;
		hfb_verify_later(c, c->hold, true);
		c->w->stats.cycles++;
		saga_next(c);
	} else if (roll < hfb_cfg.abandon_pct + hfb_cfg.confirm_pct) {
		confirm_held(c, saga_done); /* paid */
	} else {
		release_held(c,
		             saga_done); /* card declined: compensate, C3 then C2 in one release */
	}
}

static void saga_book(struct hfb_client *c)
{
	if (!hfb_may_start(c)) {
		stop(c);
		return;
	}
	char seat[HF_NAME_MAX + 1];
	snprintf(seat, sizeof(seat), "%s-seat-%d", hfb_cfg.tag,
	         (int)hfb_rand_range(&c->rng, 0, hfb_cfg.seats - 1));
	struct hfb_call call = {.kind = HFB_CALL_ACQUIRE,
	                        .n = 2,
	                        .ttl_ms = hfb_cfg.lease_ms,
	                        .wait_ms = hfb_cfg.saga_wait_ms};
	call.names[0] = seat;
	call.units[0] = 1;
	call.caps[0] = 1;
	call.names[1] = bag_name;
	call.units[1] = hfb_rand_range(&c->rng, 1, 3);
	call.caps[1] = hfb_cfg.bag_capacity;
	c->t_cycle = hfb_now_us();
	hfb_call(c, &call, saga_granted);
}

static void trip_over(struct hfb_client *c, const struct hfb_answer *a)
{
	(void)a;
	saga_book(c);
}

static void saga_next(struct hfb_client *c)
{
	if (!c->kept) {
		saga_book(c);
		return;
	}
	c->kept = false; /* last booking's trip is over: its seat and bags go back */
	struct hfb_call call = {
	    .kind = HFB_CALL_RELEASE, .hold = c->kept_hold, .token = c->kept_token};
	hfb_call(c, &call, trip_over);
}

void hfb_scenario_start(struct hfb_client *c)
{
	switch (hfb_cfg.scenario) {
	case 1:
		snprintf(c->key, sizeof(c->key), "%s-u%d", hfb_cfg.tag, c->id);
		lock_next(c);
		break;
	case 2:
		snprintf(c->key, sizeof(c->key), "%s", hot_key);
		lock_next(c);
		break;
	case 3:
		stock_next(c);
		break;
	case 4:
		seat_next(c);
		break;
	default:
		saga_next(c);
		break;
	}
}
