/*
 * relay.c — `holdfast relay`'s engine: takes the destination's lease (an exclusive hold kept
 * by a watchdog; standbys wait for it in FIFO order), reads the event log from the
 * checkpoint, delivers each batch and moves the checkpoint (a declared resource's meta,
 * written with if_version) only once the destination has confirmed it.
 */
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "relay.h"

#define LEASE_WAIT_MS 2000 /* one parked acquire of a standby; it queues again after */
#define READ_WAIT_MS 1000
#define BACKOFF_MIN_MS 100

struct relay {
	const struct relay_opts *o;
	hf_store *store;
	struct relay_sink *sink;
	char lease_name[HF_NAME_MAX + 1];
	char ckpt_name[HF_NAME_MAX + 1];
	hf_hold *lease;
	hf_watchdog *wd;
	atomic_bool lost; /* set by the watchdog's thread */
	int64_t fence;    /* the lease's fence: a newer relay's is higher */
	uint64_t seq;     /* the checkpoint: every event up to it is delivered */
	int64_t version;  /* the checkpoint resource's version, for if_version */
	int64_t backoff_ms;
	uint64_t delivered; /* messages confirmed by the destination */
	hf_error fatal;     /* a destination that refuses us (credentials, url): we stop */
};

void relay_opts_init(struct relay_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->name = "default";
	o->owner = "holdfast-relay";
	o->dest.exchange = RELAY_DEFAULT_EXCHANGE;
	o->dest.partitions = RELAY_DEFAULT_PARTITIONS;
	o->dest.stream_prefix = RELAY_DEFAULT_STREAM_PREFIX;
	o->batch = 100;
	o->lease_ms = 10000;
	o->backoff_max_ms = 5000;
}

int relay_sink_new(const struct relay_dest_opts *opts, struct relay_sink **out, hf_error *err)
{
	*out = NULL;
	if (strncmp(opts->url, "amqp://", 7) == 0)
		*out = relay_amqp_sink_new(opts);
	else if (strncmp(opts->url, "redis://", 8) == 0)
		*out = relay_redis_sink_new(opts);
	else {
		relay_err(err, HF_EINVAL, "destination must be amqp://... or redis://..., not '%s'",
		          opts->url);
		return HF_EINVAL;
	}
	if (!*out) {
		relay_err(err, HF_ENOMEM, "out of memory");
		return HF_ENOMEM;
	}
	return HF_OK;
}

static bool stopping(const struct relay *r)
{
	return r->o->stop && *r->o->stop;
}

static void back_off(struct relay *r)
{
	relay_back_off(&r->backoff_ms, r->o->backoff_max_ms, r->o->stop);
}

/* ---- The lease. ------------------------------------------------------------------------ */

static void on_lost(void *arg, const hf_error *why)
{
	struct relay *r = arg;
	atomic_store(&r->lost, true);
	relay_log("warn", "msg=lease_lost name=%s why=\"%s\"", r->o->name, why->message);
}

/* Waits (FIFO, behind the active relay) until the lease is ours; HF_ECANCELED if stopped. */
static int take_lease(struct relay *r)
{
	hf_claim claim = {.name = r->lease_name, .units = 1, .capacity = 1};
	hf_acquire_req req = {.owner = r->o->owner,
	                      .claims = &claim,
	                      .n_claims = 1,
	                      .ttl_ms = r->o->lease_ms,
	                      .wait_ms = LEASE_WAIT_MS,
	                      .mode = HF_MODE_EXCLUSIVE};
	bool said_standby = false;
	while (!stopping(r)) {
		hf_error err;
		int rc = hf_acquire(r->store, &req, &r->lease, &err);
		if (rc == HF_OK)
			break;
		if (rc == HF_ETIMEDOUT || rc == HF_EUNAVAILABLE) {
			if (!said_standby)
				relay_log("info", "msg=standby name=%s", r->o->name);
			said_standby = true;
			continue;
		}
		relay_log("warn", "msg=lease_error name=%s error=%s why=\"%s\"", r->o->name,
		          hf_err_name(rc), err.message);
		back_off(r);
	}
	if (!r->lease)
		return HF_ECANCELED;
	r->backoff_ms = BACKOFF_MIN_MS;
	r->fence = r->lease->parts[0].fence;
	atomic_store(&r->lost, false);
	hf_error err;
	int rc = hf_watchdog_start(r->store, r->lease->id, r->lease->token, r->o->lease_ms, on_lost,
	                           r, &r->wd, &err);
	if (rc != HF_OK) {
		relay_log("warn", "msg=watchdog_error why=\"%s\"", err.message);
		atomic_store(&r->lost, true);
	}
	relay_log("info", "msg=lease_taken name=%s fence=%" PRId64, r->o->name, r->fence);
	return HF_OK;
}

static void give_lease(struct relay *r)
{
	if (r->wd)
		hf_watchdog_stop(r->wd);
	r->wd = NULL;
	if (r->lease) {
		hf_hold *h = NULL;
		hf_error err;
		/* Best effort: an unreleased lease simply expires. */
		if (hf_release(r->store, r->lease->id, r->lease->token, &h, &err) == HF_OK)
			hf_hold_free(h);
		hf_hold_free(r->lease);
	}
	r->lease = NULL;
}

/* ---- The checkpoint. ----------------------------------------------------------------- */

static int put_checkpoint(struct relay *r, uint64_t seq, int64_t if_version, hf_error *err)
{
	char meta[96];
	snprintf(meta, sizeof(meta), "{\"seq\":%" PRIu64 ",\"fence\":%" PRId64 "}", seq, r->fence);
	hf_request req;
	hf_request_init(&req, HF_OP_PUT_RESOURCE);
	req.name = r->ckpt_name;
	req.capacity = 1;
	req.meta = meta;
	req.if_version = if_version;
	hf_reply *rep = NULL;
	int rc = hf_call(r->store, &req, &rep);
	if (rc == HF_OK) {
		r->version = rep->resource->version;
		r->seq = seq;
	} else if (err) {
		*err = rep ? rep->error : (hf_error){.code = rc, .message = "out of memory"};
	}
	hf_reply_free(rep);
	return rc;
}

/* Reads the checkpoint: *seq, *fence and r->version (0 when there is none yet). */
static int get_checkpoint(struct relay *r, uint64_t *seq, int64_t *fence, hf_error *err)
{
	hf_request req;
	hf_request_init(&req, HF_OP_GET_RESOURCE);
	req.name = r->ckpt_name;
	hf_reply *rep = NULL;
	int rc = hf_call(r->store, &req, &rep);
	*seq = 0;
	*fence = 0;
	if (rc == HF_ENORESOURCE) {
		r->version = 0;
		rc = HF_OK;
	} else if (rc == HF_OK) {
		r->version = rep->resource->version;
		json_t *m = rep->resource->meta ? json_loads(rep->resource->meta, 0, NULL) : NULL;
		json_int_t s = 0, f = 0;
		if (!m || json_unpack(m, "{s:I, s:I}", "seq", &s, "fence", &f) != 0 || s < 0) {
			relay_err(err, HF_ECORRUPT,
			          "checkpoint '%s' has no seq and fence in its meta", r->ckpt_name);
			rc = HF_ECORRUPT;
		}
		json_decref(m);
		*seq = (uint64_t)s;
		*fence = f;
	} else if (err) {
		*err = rep ? rep->error : (hf_error){.code = rc, .message = "out of memory"};
	}
	hf_reply_free(rep);
	return rc;
}

/* Loads the checkpoint and stamps it with our fence, so a relay that lost the lease can no
 * longer move it. HF_EHELD when a newer relay's fence is already there. */
static int claim_checkpoint(struct relay *r, hf_error *err)
{
	for (;;) {
		uint64_t seq;
		int64_t fence;
		int rc = get_checkpoint(r, &seq, &fence, err);
		if (rc != HF_OK)
			return rc;
		if (fence > r->fence) {
			relay_err(err, HF_EHELD,
			          "checkpoint fenced by a newer relay (fence %" PRId64 ")", fence);
			return HF_EHELD;
		}
		rc = put_checkpoint(r, seq, r->version, err);
		if (rc != HF_EVERSION)
			return rc;
	}
}

/* Moves the checkpoint to seq. HF_EHELD when another relay has stamped it since. */
static int move_checkpoint(struct relay *r, uint64_t seq, hf_error *err)
{
	int rc = put_checkpoint(r, seq, r->version, err);
	if (rc != HF_EVERSION)
		return rc;
	uint64_t cur;
	int64_t fence;
	if (get_checkpoint(r, &cur, &fence, err) == HF_OK && fence == r->fence)
		return put_checkpoint(r, seq, r->version, err);
	relay_err(err, HF_EHELD, "checkpoint moved by another relay (fence %" PRId64 ")", fence);
	return HF_EHELD;
}

/* ---- Serving while the lease is ours. ------------------------------------------------ */

enum step { STEP_AGAIN, STEP_IDLE, STEP_LOST, STEP_DONE };

/* The events after the checkpoint were trimmed (retention: HF_ETRIMMED, `why`): never a
 * silent jump. Without from_floor the relay stops, naming the checkpoint and the floor; with
 * it the checkpoint moves to the floor and the gap is logged (its consumers see it too, as
 * missing revisions). */
static enum step relay_trimmed(struct relay *r, uint64_t *after, const hf_reply *why)
{
	uint64_t upto = why->trimmed_upto;
	if (upto <= *after) {
		relay_err(&r->fatal, HF_ETRIMMED, "relay '%s': %s", r->o->name, why->error.message);
		return STEP_DONE;
	}
	if (!r->o->from_floor) {
		relay_log("error",
		          "msg=checkpoint_trimmed name=%s checkpoint=%" PRIu64 " floor=%" PRIu64,
		          r->o->name, *after, upto);
		relay_err(&r->fatal, HF_ETRIMMED,
		          "relay '%s': its checkpoint is at seq %" PRIu64
		          " but events up to seq %" PRIu64
		          " were trimmed by retention; --from-floor skips the %" PRIu64
		          " events %" PRIu64 "..%" PRIu64 " and goes on from there",
		          r->o->name, *after, upto, upto - *after, *after + 1, upto);
		return STEP_DONE;
	}
	hf_error err = {0};
	int rc = move_checkpoint(r, upto, &err);
	if (rc != HF_OK) {
		relay_log("warn", "msg=checkpoint_failed seq=%" PRIu64 " error=%s why=\"%s\"", upto,
		          hf_err_name(rc), err.message);
		if (rc == HF_EHELD)
			return STEP_LOST;
		back_off(r);
		return STEP_AGAIN;
	}
	relay_log("warn",
	          "msg=skipped_trimmed name=%s from=%" PRIu64 " to=%" PRIu64 " count=%" PRIu64,
	          r->o->name, *after + 1, upto, upto - *after);
	*after = upto;
	return STEP_AGAIN;
}

/* Reads the batch after *after, delivers it and moves the checkpoint (and *after) past it. */
static enum step relay_batch(struct relay *r, uint64_t *after)
{
	hf_request req;
	hf_request_init(&req, HF_OP_READ_EVENTS);
	req.after = *after;
	req.limit = r->o->batch;
	req.wait_ms = READ_WAIT_MS;
	hf_reply *rep = NULL;
	int rc = hf_call(r->store, &req, &rep);
	if (rc == HF_ETRIMMED) {
		enum step s = relay_trimmed(r, after, rep);
		hf_reply_free(rep);
		return s;
	}
	if (rc != HF_OK) {
		relay_log("warn", "msg=read_error error=%s why=\"%s\"", hf_err_name(rc),
		          rep ? rep->error.message : "out of memory");
		hf_reply_free(rep);
		back_off(r);
		return STEP_AGAIN;
	}
	/* Idle unless something is published: the relay's own events (lease extensions,
	 * checkpoints) come every few seconds and must not keep --idle-exit from ending it. */
	enum step step = STEP_IDLE;
	struct relay_msg *msgs = NULL;
	char **jsons = NULL;
	size_t n = 0;
	hf_error err = {0};
	if (rep->n_events &&
	    relay_msgs_build(rep->events, rep->n_events, &msgs, &n, &jsons) != HF_OK) {
		relay_log("warn", "msg=out_of_memory");
		back_off(r);
		goto out;
	}
	if (n)
		step = STEP_AGAIN;
	if (n && atomic_load(&r->lost))
		goto out;
	if (n && (rc = r->sink->deliver(r->sink, msgs, n, &err)) != HF_OK) {
		relay_log("warn", "msg=deliver_failed after=%" PRIu64 " error=%s why=\"%s\"",
		          *after, hf_err_name(rc), err.message);
		if (rc == HF_EAUTH || rc == HF_EINVAL) {
			r->fatal = err;
			step = STEP_DONE;
		} else {
			back_off(r);
		}
		goto out;
	}
	r->backoff_ms = BACKOFF_MIN_MS;
	if (rep->n_events) {
		uint64_t last = rep->events[rep->n_events - 1].seq;
		/* A batch of only the relay's own events is not checkpointed: the checkpoint's own
		 * event would come back as the next batch, for ever. */
		if (n && (rc = move_checkpoint(r, last, &err)) != HF_OK) {
			relay_log("warn",
			          "msg=checkpoint_failed seq=%" PRIu64 " error=%s why=\"%s\"", last,
			          hf_err_name(rc), err.message);
			step = rc == HF_EHELD ? STEP_LOST : STEP_AGAIN;
			if (rc != HF_EHELD)
				back_off(r);
			goto out;
		}
		r->delivered += n;
		*after = last;
		if (r->o->stop_after_seq && last >= r->o->stop_after_seq)
			step = STEP_DONE;
	}
out:
	relay_msgs_free(msgs, jsons, rep->n_events);
	hf_reply_free(rep);
	return step;
}

/* Delivers until the lease is lost (STEP_LOST), or stop, or done (STEP_DONE). */
static enum step serve(struct relay *r)
{
	hf_error err = {0};
	int rc;
	while ((rc = claim_checkpoint(r, &err)) != HF_OK) {
		relay_log("warn", "msg=checkpoint_error error=%s why=\"%s\"", hf_err_name(rc),
		          err.message);
		if (rc == HF_EHELD || stopping(r))
			return STEP_LOST;
		back_off(r);
	}
	relay_log("info", "msg=resume name=%s seq=%" PRIu64, r->o->name, r->seq);
	uint64_t after = r->seq;
	int64_t idle_since = relay_mono_ms();
	if (r->o->stop_after_seq && after >= r->o->stop_after_seq)
		return STEP_DONE;
	while (!stopping(r) && !atomic_load(&r->lost)) {
		enum step s = relay_batch(r, &after);
		if (s == STEP_LOST || s == STEP_DONE)
			return s;
		if (s == STEP_AGAIN)
			idle_since = relay_mono_ms();
		else if (r->o->idle_exit_ms > 0 &&
		         relay_mono_ms() - idle_since >= r->o->idle_exit_ms)
			return STEP_DONE;
	}
	return STEP_LOST;
}

int relay_run(const struct relay_opts *o, hf_error *err)
{
	struct relay r = {.o = o, .backoff_ms = BACKOFF_MIN_MS};
	atomic_init(&r.lost, false);
	if (o->batch < 1 || o->batch > HF_LIST_MAX || o->lease_ms < 30 || !o->name[0] ||
	    strlen(RELAY_OWN_PREFIX) + strlen(o->name) + strlen("/checkpoint") > HF_NAME_MAX) {
		relay_err(err, HF_EINVAL,
		          "bad relay options (batch 1..%d, lease >= 30 ms, a short name)",
		          HF_LIST_MAX);
		return HF_EINVAL;
	}
	snprintf(r.lease_name, sizeof(r.lease_name), RELAY_OWN_PREFIX "%s", o->name);
	snprintf(r.ckpt_name, sizeof(r.ckpt_name), RELAY_OWN_PREFIX "%s/checkpoint", o->name);
	int rc = relay_sink_new(&o->dest, &r.sink, err);
	if (rc != HF_OK)
		return rc;
	rc = hf_open(o->store_url, NULL, &r.store, err);
	if (rc != HF_OK) {
		r.sink->free(r.sink);
		return rc;
	}
	relay_log("info", "msg=start name=%s store=%s dest=%s", o->name, o->store_url, o->dest.url);
	enum step s = STEP_LOST;
	while (s != STEP_DONE && take_lease(&r) == HF_OK) {
		s = serve(&r);
		give_lease(&r);
	}
	relay_log("info", "msg=stop name=%s seq=%" PRIu64 " delivered=%" PRIu64, o->name, r.seq,
	          r.delivered);
	hf_close(r.store);
	r.sink->free(r.sink);
	if (r.fatal.code != HF_OK && err)
		*err = r.fatal;
	return r.fatal.code;
}
