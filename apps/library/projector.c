/*
 * projector.c — the read side (CQRS): one thread follows holdfast's event log (long-poll
 * after the stored position) and turns the hold events on book:ID into BOOK_BORROWED and
 * BOOK_RETURNED — appended to the book event store with a version per book, applied to the
 * per-user read model, and the position stored, all in one transaction — then invalidates
 * the cached books those events touched.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "library.h"

#define BATCH 500
#define POLL_MS 500    /* the long-poll; also the longest a stop waits */
#define BACKOFF_MS 500 /* after a failure of holdfast or the database */
#define TOUCHED_MAX BATCH

static struct app_bg bg;
static struct library_conn pc; /* the projector's connections */

/* The tail both statements share: the event appended to the book's stream at the next
 * version, for the row the CTE u changed ($1 hold, $2 user, $3 book, $4 at_ms, $5 seq, $6 type). */
#define APPEND_EVENT                                                                               \
	" INSERT INTO book_events (book_id, version, type, data, at, hf_seq)"                      \
	" SELECT $3, (SELECT coalesce(max(version), 0) + 1 FROM book_events WHERE book_id = $3),"  \
	"  $6, json_build_object('book_id', $3::bigint, 'user_id', $2::bigint, 'hold_id', "        \
	"$1::text,"                                                                                \
	"  'hf_seq', $5::bigint), to_timestamp($4::bigint / 1000.0), $5 FROM u"

/* clang-format off */
static const char borrowed_sql[] =
	"WITH u AS (INSERT INTO user_borrowings (hold_id, user_id, book_id, status, borrowed_at,"
	"  borrowed_seq) VALUES ($1, $2, $3, 'BORROWED', to_timestamp($4::bigint / 1000.0), $5)"
	"  ON CONFLICT (hold_id) DO NOTHING RETURNING hold_id)" APPEND_EVENT;
static const char returned_sql[] =
	"WITH u AS (UPDATE user_borrowings SET status = 'RETURNED',"
	"  returned_at = to_timestamp($4::bigint / 1000.0), returned_seq = $5"
	"  WHERE hold_id = $1 AND status = 'BORROWED' AND $2::bigint = user_id"
	"  AND $3::bigint = book_id RETURNING hold_id)" APPEND_EVENT;
/* clang-format on */

/* The book and user of a hold event on book:ID whose owner is library:user:N; false for any
 * other event. */
static bool borrowing_of(const hf_event *ev, int64_t *book, int64_t *user, const char **sql,
                         const char **type)
{
	if (!ev->resource || !ev->hold_id || strncmp(ev->resource, "book:", 5) != 0)
		return false;
	if (strcmp(ev->type, "hold.confirmed") == 0) {
		*sql = borrowed_sql;
		*type = "BOOK_BORROWED";
	} else if (strcmp(ev->type, "hold.released") == 0 ||
	           strcmp(ev->type, "hold.expired") == 0) {
		*sql = returned_sql; /* matches only a borrowing that was confirmed */
		*type = "BOOK_RETURNED";
	} else {
		return false;
	}
	json_t *data = json_loads(ev->data ? ev->data : "{}", 0, NULL);
	const char *owner = json_string_value(json_object_get(data, "owner"));
	bool ok = owner && strncmp(owner, LIBRARY_OWNER_PREFIX, strlen(LIBRARY_OWNER_PREFIX)) == 0;
	char *end;
	if (ok) {
		*user = strtoll(owner + strlen(LIBRARY_OWNER_PREFIX), &end, 10);
		ok = *end == '\0' && *user > 0;
	}
	if (ok) {
		*book = strtoll(ev->resource + 5, &end, 10);
		ok = *end == '\0' && *book > 0;
	}
	json_decref(data);
	return ok;
}

/* Applies events[] in one transaction (those at or below the stored position are skipped: a
 * second projector got there first). Returns false on a database failure (nothing applied);
 * the books it changed go to touched[]. */
static bool apply(struct app_pg *pg, const hf_event *events, size_t n, int64_t *touched,
                  size_t *n_touched, uint64_t *pos)
{
	struct app_reply r = {0};
	bool ok = app_pg_begin(pg, &r);
	PGresult *res = ok ? app_pg_exec(pg, &r,
	                                 "SELECT seq FROM projector_position"
	                                 " WHERE name = 'borrowings' FOR UPDATE",
	                                 0, NULL, NULL)
	                   : NULL;
	uint64_t stored = res ? strtoull(PQgetvalue(res, 0, 0), NULL, 10) : 0;
	ok = res != NULL;
	PQclear(res);
	*n_touched = 0;
	for (size_t i = 0; ok && i < n; i++) {
		int64_t book, user;
		const char *sql, *type;
		if (events[i].seq <= stored || !borrowing_of(&events[i], &book, &user, &sql, &type))
			continue;
		char s[4][24];
		snprintf(s[0], sizeof(s[0]), "%" PRId64, user);
		snprintf(s[1], sizeof(s[1]), "%" PRId64, book);
		snprintf(s[2], sizeof(s[2]), "%" PRId64, events[i].at_ms);
		snprintf(s[3], sizeof(s[3]), "%" PRIu64, events[i].seq);
		const char *p[6] = {events[i].hold_id, s[0], s[1], s[2], s[3], type};
		res = app_pg_exec(pg, &r, sql, 6, p, NULL);
		ok = res != NULL;
		if (ok && strcmp(PQcmdTuples(res), "1") == 0 && *n_touched < TOUCHED_MAX)
			touched[(*n_touched)++] = book;
		PQclear(res);
	}
	uint64_t last = n ? events[n - 1].seq : stored;
	if (ok && last > stored) {
		char s[24];
		snprintf(s, sizeof(s), "%" PRIu64, last);
		const char *p[1] = {s};
		res = app_pg_exec(
		    pg, &r, "UPDATE projector_position SET seq = $1 WHERE name = 'borrowings'", 1,
		    p, NULL);
		ok = res != NULL;
		PQclear(res);
	}
	if (ok)
		ok = app_pg_commit(pg, &r);
	if (!ok) {
		json_t *m = json_object_get(json_object_get(r.body, "error"), "message");
		fprintf(stderr, "library: projector: %s (retrying)\n",
		        json_string_value(m) ? json_string_value(m) : "?");
		app_pg_rollback(pg);
	}
	json_decref(r.body);
	if (ok)
		*pos = last > stored ? last : stored;
	return ok;
}

/* The stored position; false when the database cannot say. */
static bool position(struct app_pg *pg, uint64_t *pos)
{
	struct app_reply r = {0};
	PGresult *res = app_pg_exec(
	    pg, &r, "SELECT seq FROM projector_position WHERE name = 'borrowings'", 0, NULL, NULL);
	json_decref(r.body);
	if (!res || PQntuples(res) != 1) {
		PQclear(res);
		return false;
	}
	*pos = strtoull(PQgetvalue(res, 0, 0), NULL, 10);
	PQclear(res);
	return true;
}

static void projector_main(struct app_bg *self, void *arg)
{
	struct library_conn *c = arg;
	uint64_t pos = 0;
	bool known = false, warned = false;
	int64_t touched[TOUCHED_MAX];
	while (!app_bg_stopping(self)) {
		if (!known && !(known = position(&c->pg, &pos))) {
			app_bg_nap(self, BACKOFF_MS);
			continue;
		}
		hf_request req;
		hf_reply *rep = NULL;
		hf_request_init(&req, HF_OP_READ_EVENTS);
		req.after = pos;
		req.limit = BATCH;
		req.wait_ms = POLL_MS;
		if (hf_call(library_store, &req, &rep) != HF_OK) {
			fprintf(stderr, "library: projector: reading events: %s (retrying)\n",
			        rep->error.message);
			hf_reply_free(rep);
			app_bg_nap(self, BACKOFF_MS);
			continue;
		}
		if (rep->last_seq < pos && !warned) {
			warned = true;
			fprintf(stderr,
			        "library: projector: position %" PRIu64
			        " is past holdfast's last event "
			        "%" PRIu64
			        ": the store is not the one the read model was built from\n",
			        pos, rep->last_seq);
		}
		size_t n_touched = 0;
		if (rep->n_events &&
		    !apply(&c->pg, rep->events, rep->n_events, touched, &n_touched, &pos)) {
			known =
			    false; /* re-read the position: another projector may have moved it */
			app_bg_nap(self, BACKOFF_MS);
		}
		hf_reply_free(rep);
		for (size_t i = 0; i < n_touched; i++)
			library_cache_invalidate(&c->redis, touched[i]);
	}
	library_conn_close(c);
}

bool library_projector_start(char *err, size_t errlen)
{
	if (library_conn_open(&pc, "holdfast-library-projector", err, errlen) &&
	    app_bg_start(&bg, projector_main, &pc, err, errlen))
		return true;
	library_conn_close(&pc);
	return false;
}

void library_projector_stop(void)
{
	app_bg_stop(&bg);
}
