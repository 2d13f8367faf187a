/*
 * retention.c — event retention on PostgreSQL (docs/events.md, "Retention"): a trim pass of
 * the core rule (core/retention.h) over the events table, run by each instance's waiter
 * thread at most once a second, one instance at a time; and the events_trimmed answer of a
 * read below the oldest kept event.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/retention.h"
#include "engine/postgres/pg.h"

/* Events deleted per pass at most: one short DELETE of a range of seq, so that a log far
 * over its policy (retention just switched on) is brought down over a few passes. */
#define TRIM_BATCH 10000
#define TRIM_EVERY_MS 1000
#define TRIM_LOCK_KEY "728" /* pg_try_advisory_xact_lock(728, hashtext(schema)): one trimmer */

static int64_t col_i64(PGresult *r, int row, int col)
{
	return PQgetisnull(r, row, col) ? 0 : atoll(PQgetvalue(r, row, col));
}

/* A statement of the pass; NULL (the transaction to roll back) on failure. */
static PGresult *run(struct hf__pgc *c, const char *sql, int n, const char *const *p)
{
	PGresult *r = PQexecParams(c->conn, sql, n, NULL, p, NULL, NULL, 0);
	ExecStatusType s = PQresultStatus(r);
	if (s == PGRES_TUPLES_OK || s == PGRES_COMMAND_OK)
		return r;
	hf_error err;
	hf__pg_fail(&err, c->conn, "database");
	hf__log_line("warn", "postgres", "event retention failed", c->conf->schema, err.message);
	PQclear(r);
	return NULL;
}

/* The lowest checkpoint (core's rule of what one is) among the resources in their range. */
static bool read_checkpoints(struct hf__pgc *c, struct hf__checkpoints *cp)
{
	const char *p[2] = {HF__CHECKPOINT_FROM, HF__CHECKPOINT_TO};
	PGresult *r =
	    run(c, "SELECT name, meta FROM resources WHERE name >= $1 AND name < $2", 2, p);
	if (!r)
		return false;
	for (int i = 0; i < PQntuples(r); i++)
		hf__checkpoint_note(cp, PQgetvalue(r, i, 0),
		                    PQgetisnull(r, i, 1) ? NULL : PQgetvalue(r, i, 1));
	PQclear(r);
	return true;
}

/* One pass inside the open transaction: false when a statement failed. Only numbered events
 * (seq not null) are candidates; the ones still without a seq are newer than every seq. One
 * DELETE of the range [oldest, upto], so a reader sees all of it or none of it: the log it
 * reads stays gap-free from its oldest event. Writers only INSERT new rows and the numbering
 * only updates rows without a seq: nobody waits for these row locks. */
static bool pass(struct hf__pgc *c, const struct hf__trim_policy *pol, struct hf__pg_retention *st)
{
	PGresult *r = run(c,
	                  "SELECT pg_try_advisory_xact_lock($1, hashtext($2)),"
	                  " (SELECT last_seq FROM event_head WHERE id = 1),"
	                  " (SELECT min(seq) FROM events)",
	                  2, (const char *[]){TRIM_LOCK_KEY, c->conf->schema});
	if (!r)
		return false;
	bool ours = PQgetvalue(r, 0, 0)[0] == 't';
	uint64_t last = (uint64_t)col_i64(r, 0, 1), oldest = (uint64_t)col_i64(r, 0, 2);
	PQclear(r);
	uint64_t floor = oldest ? oldest - 1 : last;
	if (!ours || !hf__trim_due(pol, last, floor))
		return true; /* another instance trims now, or nothing worth a pass */
	uint64_t aged = 0;
	char b1[24], b2[24];
	if (pol->keep_ms > 0) {
		snprintf(b1, sizeof(b1), "%lld", (long long)pol->keep_ms);
		snprintf(b2, sizeof(b2), "%d", TRIM_BATCH);
		/* Among the oldest batch only (the seq index): the pass deletes no more anyway. */
		if (!(r = run(c,
		              "SELECT max(seq) FROM (SELECT seq, at_ms FROM events"
		              " WHERE seq IS NOT NULL ORDER BY seq LIMIT $2) x"
		              " WHERE at_ms < now_ms() - $1",
		              2, (const char *[]){b1, b2})))
			return false;
		aged = (uint64_t)col_i64(r, 0, 0);
		PQclear(r);
	}
	struct hf__checkpoints cp = {0};
	if (!read_checkpoints(c, &cp))
		return false;
	struct hf__trim_plan plan;
	hf__trim_plan(pol, last, aged, &cp, &plan);
	if (plan.upto > floor + TRIM_BATCH)
		plan.upto = floor + TRIM_BATCH; /* the rest at the next pass */
	uint64_t trimmed = 0;
	if (oldest && plan.upto >= oldest) {
		snprintf(b1, sizeof(b1), "%llu", (unsigned long long)oldest);
		snprintf(b2, sizeof(b2), "%llu", (unsigned long long)plan.upto);
		if (!(r = run(c, "DELETE FROM events WHERE seq >= $1 AND seq <= $2", 2,
		              (const char *[]){b1, b2})))
			return false;
		trimmed = strtoull(PQcmdTuples(r), NULL, 10);
		PQclear(r);
	}
	hf__trim_log("postgres", c->conf->schema, pol, &plan, trimmed, &st->logged_checkpoint);
	return true;
}

void hf__pg_retention_run(struct hf__pgc *c, struct hf__pg_retention *st)
{
	struct hf__trim_policy pol;
	hf__trim_policy_from(&pol, &c->conf->opt);
	int64_t now = hf__pg_mono_ms();
	if (!hf__trim_enabled(&pol) || now < st->next_at)
		return;
	st->next_at = now + TRIM_EVERY_MS;
	hf_error err;
	if (hf__pgc_begin(c, "BEGIN", &err) != HF_OK)
		return; /* the database is away: the next pass tries again */
	bool ok = pass(c, &pol, st);
	PQclear(PQexec(c->conn, ok ? "COMMIT" : "ROLLBACK"));
}

bool hf__pg_events_trimmed(PGresult *r, uint64_t after, uint64_t last_seq, uint64_t *upto)
{
	/* Every seq up to last_seq was given (sequence_events numbers without gaps) and only
	 * retention deletes events: a first row other than after + 1 means it trimmed them. */
	if (after >= last_seq)
		return false;
	if (PQntuples(r) == 0) {
		*upto = last_seq;
		return true;
	}
	uint64_t first = (uint64_t)col_i64(r, 0, 0);
	*upto = first - 1;
	return first != after + 1;
}
