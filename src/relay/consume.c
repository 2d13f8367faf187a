/*
 * consume.c — the consumer's rules, whatever the broker: a ledger (SQLite) of the last
 * revision applied per resource, so a redelivered event is applied once and a missing
 * revision is reported; apply with retries and backoff; the choice of transport.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "relay.h"

#define BACKOFF_CAP_MS 10000

struct relay_ledger {
	sqlite3 *db;
	sqlite3_stmt *get;
	sqlite3_stmt *put;
};

void relay_consume_opts_init(struct relay_consume_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->exchange = RELAY_DEFAULT_EXCHANGE;
	o->queue = "holdfast";
	o->consumer = "consumer-1";
	o->partitions = RELAY_DEFAULT_PARTITIONS;
	o->stream_prefix = RELAY_DEFAULT_STREAM_PREFIX;
	o->prefetch = 10;
	o->max_attempts = 5;
	o->backoff_ms = 100;
	o->claim_idle_ms = 30000;
}

/* ---- The ledger. --------------------------------------------------------------------- */

static int ledger_fail(struct relay_ledger *l, const char *what, hf_error *err)
{
	relay_err(err, HF_ESTORAGE, "consumer state %s: %s", what, sqlite3_errmsg(l->db));
	return HF_ESTORAGE;
}

int relay_ledger_open(const char *path, struct relay_ledger **out, hf_error *err)
{
	struct relay_ledger *l = calloc(1, sizeof(*l));
	*out = NULL;
	if (!l) {
		relay_err(err, HF_ENOMEM, "out of memory");
		return HF_ENOMEM;
	}
	int rc = HF_OK;
	if (sqlite3_open(path, &l->db) != SQLITE_OK) {
		rc = ledger_fail(l, "open", err);
		goto out_fail;
	}
	sqlite3_busy_timeout(l->db, 5000);
	/* WAL + NORMAL: a process crash loses nothing committed; power loss may lose the last
	 * records, which then apply twice (docs/events.md). */
	if (sqlite3_exec(l->db,
	                 "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
	                 "CREATE TABLE IF NOT EXISTS applied (resource TEXT PRIMARY KEY,"
	                 " revision INTEGER NOT NULL, seq INTEGER NOT NULL)",
	                 NULL, NULL, NULL) != SQLITE_OK ||
	    sqlite3_prepare_v2(l->db, "SELECT revision, seq FROM applied WHERE resource = ?", -1,
	                       &l->get, NULL) != SQLITE_OK ||
	    sqlite3_prepare_v2(l->db,
	                       "INSERT INTO applied (resource, revision, seq) VALUES (?, ?, ?)"
	                       " ON CONFLICT(resource) DO UPDATE SET revision = excluded.revision,"
	                       " seq = excluded.seq",
	                       -1, &l->put, NULL) != SQLITE_OK) {
		rc = ledger_fail(l, "setup", err);
		goto out_fail;
	}
	*out = l;
	return HF_OK;
out_fail:
	relay_ledger_close(l);
	return rc;
}

void relay_ledger_close(struct relay_ledger *l)
{
	if (!l)
		return;
	sqlite3_finalize(l->get);
	sqlite3_finalize(l->put);
	sqlite3_close(l->db);
	free(l);
}

static int ledger_get(struct relay_ledger *l, const char *resource, int64_t *rev, uint64_t *seq,
                      hf_error *err)
{
	*rev = 0;
	*seq = 0;
	sqlite3_reset(l->get);
	sqlite3_bind_text(l->get, 1, resource, -1, SQLITE_STATIC);
	int st = sqlite3_step(l->get);
	if (st == SQLITE_ROW) {
		*rev = sqlite3_column_int64(l->get, 0);
		*seq = (uint64_t)sqlite3_column_int64(l->get, 1);
	}
	sqlite3_reset(l->get);
	return st == SQLITE_ROW || st == SQLITE_DONE ? HF_OK : ledger_fail(l, "read", err);
}

static int ledger_put(struct relay_ledger *l, const char *resource, int64_t rev, uint64_t seq,
                      hf_error *err)
{
	sqlite3_reset(l->put);
	sqlite3_bind_text(l->put, 1, resource, -1, SQLITE_STATIC);
	sqlite3_bind_int64(l->put, 2, rev);
	sqlite3_bind_int64(l->put, 3, (sqlite3_int64)seq);
	int st = sqlite3_step(l->put);
	sqlite3_reset(l->put);
	return st == SQLITE_DONE ? HF_OK : ledger_fail(l, "write", err);
}

/* ---- One message. -------------------------------------------------------------------- */

/* Was it applied before? Engines that give no revision (0) are deduped by seq, which only
 * grows per resource; they cannot tell a gap. Reports a gap on stderr. */
static bool seen_before(struct relay_consume_stats *st, const char *resource, int64_t revision,
                        uint64_t seq, int64_t last_rev, uint64_t last_seq)
{
	if (revision <= 0)
		return seq <= last_seq;
	if (revision <= last_rev)
		return true;
	if (revision > last_rev + 1) {
		st->gaps += (uint64_t)(revision - last_rev - 1);
		relay_log("error",
		          "msg=gap resource=\"%s\" missing=%" PRId64 "..%" PRId64 " seq=%" PRIu64,
		          resource, last_rev + 1, revision - 1, seq);
	}
	return false;
}

enum relay_verdict relay_consume_one(const struct relay_consume_opts *o, struct relay_ledger *l,
                                     struct relay_consume_stats *st, const char *resource,
                                     int64_t revision, uint64_t seq, const char *json,
                                     unsigned attempts_before, hf_error *err)
{
	int64_t last_rev = 0;
	uint64_t last_seq = 0;
	bool keyed = resource && resource[0];
	if (keyed && ledger_get(l, resource, &last_rev, &last_seq, err) != HF_OK)
		return RELAY_ERROR;
	if (keyed && seen_before(st, resource, revision, seq, last_rev, last_seq)) {
		st->duplicates++;
		return RELAY_DUPLICATE;
	}
	unsigned attempts = attempts_before;
	int64_t delay = o->backoff_ms;
	enum relay_verdict v = RELAY_APPLIED;
	for (;;) {
		hf_error why = {0};
		if (attempts >= o->max_attempts) {
			v = RELAY_FAILED;
			break;
		}
		attempts++;
		if (o->apply(o->apply_arg, resource, revision, seq, json, &why) == HF_OK)
			break;
		relay_log("warn",
		          "msg=apply_failed resource=\"%s\" revision=%" PRId64
		          " attempt=%u why=\"%s\"",
		          resource ? resource : "", revision, attempts, why.message);
		if (attempts >= o->max_attempts) {
			v = RELAY_FAILED;
			break;
		}
		st->retries++;
		relay_back_off(&delay, BACKOFF_CAP_MS, o->stop);
	}
	if (v == RELAY_FAILED) {
		st->dead++;
		relay_log("error",
		          "msg=dead_lettered resource=\"%s\" revision=%" PRId64 " seq=%" PRIu64
		          " attempts=%u",
		          resource ? resource : "", revision, seq, attempts);
	} else {
		st->applied++;
	}
	/* A dead-lettered revision is recorded too: it was reported once, loudly; the next one
	 * must not report it again as a gap. */
	if (keyed && ledger_put(l, resource, revision > 0 ? revision : last_rev, seq, err) != HF_OK)
		return RELAY_ERROR;
	return v;
}

int relay_consume(const struct relay_consume_opts *o, struct relay_consume_stats *st, hf_error *err)
{
	memset(st, 0, sizeof(*st));
	bool amqp = strncmp(o->url, "amqp://", 7) == 0;
	if (!amqp && strncmp(o->url, "redis://", 8) != 0) {
		relay_err(err, HF_EINVAL, "source must be amqp://... or redis://..., not '%s'",
		          o->url);
		return HF_EINVAL;
	}
	if (o->max_attempts < 1 || o->prefetch < 1 || !o->apply) {
		relay_err(err, HF_EINVAL, "max attempts and prefetch must be at least 1");
		return HF_EINVAL;
	}
	struct relay_ledger *l = NULL;
	int rc = o->declare_only ? HF_OK : relay_ledger_open(o->state_path, &l, err);
	if (rc != HF_OK)
		return rc;
	rc = amqp ? relay_consume_amqp(o, l, st, err) : relay_consume_redis(o, l, st, err);
	relay_ledger_close(l);
	return rc;
}
