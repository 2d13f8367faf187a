/*
 * store.c — the library's database (books, borrowings, the book event store, the per-user
 * read model and the projector's position), its books on holdfast (book:ID, capacity = the
 * copies; a borrowing is a confirmed hold of one unit), and the start-up steps.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "library.h"

/* clang-format off */
const char library_schema_sql[] =
	"CREATE TABLE IF NOT EXISTS books ("
	"  id bigserial PRIMARY KEY,"
	"  title text NOT NULL,"
	"  copies bigint NOT NULL CHECK (copies >= 1),"
	"  version bigint NOT NULL DEFAULT 1," /* optimistic locking: If-Match */
	"  created_at timestamptz NOT NULL DEFAULT now(),"
	"  updated_at timestamptz NOT NULL DEFAULT now());"
	/* the write side: a borrowing and its hold (the token lets any process return it) */
	"CREATE TABLE IF NOT EXISTS borrowings ("
	"  id bigserial PRIMARY KEY,"
	"  book_id bigint NOT NULL REFERENCES books(id),"
	"  user_id bigint NOT NULL,"
	"  hold_id text NOT NULL UNIQUE,"
	"  hold_token text,"
	"  status text NOT NULL DEFAULT 'BORROWED' CHECK (status IN"
	"    ('BORROWED','RETURNED','VOID')),"
	"  borrowed_at timestamptz NOT NULL DEFAULT now(),"
	"  returned_at timestamptz);"
	/* the event store: BOOK_BORROWED / BOOK_RETURNED, versioned per book, from holdfast's
	 * event log (hf_seq: the event they come from) */
	"CREATE TABLE IF NOT EXISTS book_events ("
	"  id bigserial PRIMARY KEY,"
	"  book_id bigint NOT NULL,"
	"  version bigint NOT NULL,"
	"  type text NOT NULL,"
	"  data jsonb NOT NULL,"
	"  at timestamptz NOT NULL,"
	"  hf_seq bigint NOT NULL UNIQUE,"
	"  UNIQUE (book_id, version));"
	/* the read side: each user's borrowings, kept by the projector */
	"CREATE TABLE IF NOT EXISTS user_borrowings ("
	"  hold_id text PRIMARY KEY,"
	"  user_id bigint NOT NULL,"
	"  book_id bigint NOT NULL,"
	"  status text NOT NULL,"
	"  borrowed_at timestamptz NOT NULL,"
	"  returned_at timestamptz,"
	"  borrowed_seq bigint NOT NULL,"
	"  returned_seq bigint);"
	"CREATE INDEX IF NOT EXISTS user_borrowings_by_user ON user_borrowings (user_id, borrowed_seq);"
	"CREATE TABLE IF NOT EXISTS projector_position ("
	"  name text PRIMARY KEY,"
	"  seq bigint NOT NULL);"
	"INSERT INTO projector_position VALUES ('borrowings', 0) ON CONFLICT DO NOTHING;";
/* clang-format on */

bool library_conn_open(struct library_conn *c, const char *name, char *err, size_t errlen)
{
	c->pg = (struct app_pg){.url = library_cfg.db_url, .name = name};
	c->redis =
	    (struct app_redis){.host = library_cfg.redis_host, .port = library_cfg.redis_port};
	return app_pg_open(&c->pg, err, errlen) && app_redis_open(&c->redis, err, errlen);
}

void library_conn_close(struct library_conn *c)
{
	app_pg_close(&c->pg);
	app_redis_close(&c->redis);
}

bool library_load(PGconn *pg, char *err, size_t errlen)
{
	PGresult *res = PQexec(pg, "SELECT id, copies FROM books ORDER BY id");
	if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		snprintf(err, errlen, "postgres: %s", PQresultErrorMessage(res));
		PQclear(res);
		return false;
	}
	bool ok = true;
	for (int i = 0; i < PQntuples(res) && ok; i++) {
		char name[40];
		hf_error e;
		app_hf_name(name, sizeof(name), "book", strtoll(PQgetvalue(res, i, 0), NULL, 10));
		if (app_hf_capacity(library_store, name, strtoll(PQgetvalue(res, i, 1), NULL, 10),
		                    &e) != HF_OK) {
			snprintf(err, errlen, "cannot load %s into holdfast: %s", name, e.message);
			ok = false;
		}
	}
	if (ok)
		fprintf(stderr, "library: loaded the copies of %d books into holdfast\n",
		        PQntuples(res));
	PQclear(res);
	return ok;
}

void library_cleanup(PGconn *pg)
{
	PGresult *res = PQexec(pg, "SELECT id, hold_id, hold_token FROM borrowings "
	                           "WHERE status = 'BORROWED' AND hold_token IS NOT NULL");
	for (int i = 0; PQresultStatus(res) == PGRES_TUPLES_OK && i < PQntuples(res); i++) {
		hf_error e;
		int rc = hf_confirm(library_store, PQgetvalue(res, i, 1), PQgetvalue(res, i, 2),
		                    NULL, &e);
		if (rc != HF_EENDED && rc != HF_ENOHOLD)
			continue;
		const char *p[1] = {PQgetvalue(res, i, 0)};
		PQclear(PQexecParams(pg,
		                     "UPDATE borrowings SET status = 'VOID', hold_token = NULL "
		                     "WHERE id = $1 AND status = 'BORROWED'",
		                     1, NULL, p, NULL, NULL, 0));
		fprintf(stderr,
		        "library: cleanup: borrowing %s lost its hold before it was confirmed\n",
		        p[0]);
	}
	PQclear(res);
}
