/*
 * api.c — the HTTP API of holdfast-library as one table: books (create; read cache-aside;
 * update under If-Match, optimistic), borrowing (a confirmed hold of one copy) and return
 * (its release), and each user's borrowings from the read model with its position.
 */
#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "library.h"

#define CONN(k) ((struct library_conn *)(k)->ctx)
#define BORROW_TTL_MS 30000 /* lease of a borrowing's hold until it is confirmed */

/* clang-format off */
#define TS(col) "to_char(" col " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"
#define BORROWING_JSON "json_build_object('id', id, 'book_id', book_id, 'user_id', user_id," \
	" 'hold_id', hold_id, 'status', status, 'borrowed_at', " TS("borrowed_at") ","          \
	" 'returned_at', " TS("returned_at") ")"
/* clang-format on */

/* A one-row, one-column JSON result as the answer. */
static void answer_json(PGresult *res, int status, struct app_reply *r)
{
	json_t *o = json_loads(PQgetvalue(res, 0, 0), 0, NULL);
	if (o)
		app_ok(r, status, o);
	else
		app_error(r, 500, "internal_error", "the database's JSON did not parse");
}

static void h_book_create(struct app_call *k)
{
	const char *title;
	int64_t copies;
	if (!app_need_body(k->in, k->r) ||
	    !app_field_str(k->in, "title", 500, true, &title, k->r) ||
	    !app_field_int(k->in, "copies", 1, HF_CAPACITY_MAX, &copies, k->r))
		return;
	struct app_pg *pg = &CONN(k)->pg;
	char s[24];
	snprintf(s, sizeof(s), "%" PRId64, copies);
	const char *p[2] = {title, s};
	/* The row is committed only once holdfast has its copies. */
	if (!app_pg_begin(pg, k->r))
		return;
	PGresult *res = app_pg_exec(
	    pg, k->r, "INSERT INTO books (title, copies) VALUES ($1, $2) RETURNING id", 2, p, NULL);
	if (!res) {
		app_pg_rollback(pg);
		return;
	}
	int64_t id = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
	PQclear(res);
	char name[40];
	hf_error e;
	app_hf_name(name, sizeof(name), "book", id);
	if (app_hf_capacity(library_store, name, copies, &e) != HF_OK) {
		app_pg_rollback(pg);
		app_error(k->r, 503, "holdfast_unavailable",
		          "cannot put the copies on holdfast: %s", e.message);
		return;
	}
	if (!app_pg_commit(pg, k->r))
		return;
	library_book_get(CONN(k), id, k->r);
	if (k->r->status == 200)
		k->r->status = 201;
}

static void h_book_get(struct app_call *k)
{
	library_book_get(CONN(k), k->id, k->r);
}

/* If-Match: "N", W/"N" or N, a positive version. */
static bool if_match_version(const char *h, int64_t *out)
{
	if (strncmp(h, "W/", 2) == 0)
		h += 2;
	char buf[32];
	size_t n = strlen(h);
	if (n >= 2 && h[0] == '"' && h[n - 1] == '"') {
		h++;
		n -= 2;
	}
	if (n == 0 || n >= sizeof(buf))
		return false;
	memcpy(buf, h, n);
	buf[n] = '\0';
	for (size_t i = 0; i < n; i++)
		if (!isdigit((unsigned char)buf[i]))
			return false;
	*out = strtoll(buf, NULL, 10);
	return *out > 0;
}

/* PUT /api/books/:id {"title"?, "copies"?} with If-Match: UPDATE ... WHERE version = the
 * expected one; new copies go to holdfast inside the same transaction (refused below the
 * copies out on loan). */
static void h_book_put(struct app_call *k)
{
	int64_t expected, copies = 0;
	const char *title = NULL;
	if (!k->req->if_match) {
		app_error(k->r, 428, "precondition_required",
		          "updating a book needs If-Match: \"VERSION\" (its ETag)");
		return;
	}
	if (!if_match_version(k->req->if_match, &expected)) {
		app_error(k->r, 400, "invalid_if_match",
		          "If-Match must be a book version such as \"3\"");
		return;
	}
	if (!app_need_body(k->in, k->r) || !app_field_str(k->in, "title", 500, false, &title, k->r))
		return;
	bool has_copies = json_object_get(k->in, "copies") != NULL;
	if (has_copies && !app_field_int(k->in, "copies", 1, HF_CAPACITY_MAX, &copies, k->r))
		return;
	if (!title && !has_copies) {
		app_error(k->r, 422, "missing_field", "give 'title' or 'copies'");
		return;
	}
	struct app_pg *pg = &CONN(k)->pg;
	char s[3][24];
	snprintf(s[0], sizeof(s[0]), "%" PRId64, k->id);
	snprintf(s[1], sizeof(s[1]), "%" PRId64, expected);
	snprintf(s[2], sizeof(s[2]), "%" PRId64, copies);
	const char *p[4] = {s[0], s[1], title, has_copies ? s[2] : NULL};
	if (!app_pg_begin(pg, k->r))
		return;
	PGresult *res = app_pg_exec(pg, k->r,
	                            "UPDATE books SET title = coalesce($3, title),"
	                            " copies = coalesce($4::bigint, copies), version = version + 1,"
	                            " updated_at = now() WHERE id = $1 AND version = $2"
	                            " RETURNING version",
	                            4, p, NULL);
	if (!res) {
		app_pg_rollback(pg);
		return;
	}
	bool updated = PQntuples(res) == 1;
	PQclear(res);
	if (!updated) {
		app_pg_rollback(pg);
		res = app_pg_exec(pg, k->r, "SELECT version FROM books WHERE id = $1", 1, p, NULL);
		if (!res)
			return;
		if (PQntuples(res) == 0)
			app_error(k->r, 404, "book_not_found", "no book %" PRId64, k->id);
		else
			app_error(k->r, 409, "version_conflict",
			          "book %" PRId64 " is at version %s, not %" PRId64
			          ": read it again",
			          k->id, PQgetvalue(res, 0, 0), expected);
		PQclear(res);
		return;
	}
	if (has_copies) {
		char name[40];
		hf_error e;
		app_hf_name(name, sizeof(name), "book", k->id);
		int rc = app_hf_capacity(library_store, name, copies, &e);
		if (rc != HF_OK) {
			app_pg_rollback(pg);
			if (rc == HF_ECAPINUSE)
				app_error(k->r, 409, "copies_on_loan",
				          "book %" PRId64 " has more copies on loan than %" PRId64,
				          k->id, copies);
			else
				app_error(k->r, 503, "holdfast_unavailable",
				          "cannot change the copies: %s", e.message);
			return;
		}
	}
	if (!app_pg_commit(pg, k->r))
		return;
	library_cache_invalidate(&CONN(k)->redis, k->id);
	library_book_get(CONN(k), k->id, k->r);
}

/* POST /api/books/:id/borrow {"user_id"}: a hold of one copy of book:ID for the user (NOWAIT),
 * recorded, then confirmed: kept until the return. */
static void h_borrow(struct app_call *k)
{
	int64_t user;
	if (!app_need_body(k->in, k->r) || !app_field_id(k->in, "user_id", &user, k->r))
		return;
	char name[40], owner[64];
	app_hf_name(name, sizeof(name), "book", k->id);
	snprintf(owner, sizeof(owner), LIBRARY_OWNER_PREFIX "%" PRId64, user);
	hf_hold *h = NULL;
	hf_error e;
	int rc = app_hf_take(library_store, owner, name, 1, BORROW_TTL_MS, NULL, &h, &e);
	if (rc == HF_ENORESOURCE) {
		/* no such book, or one whose copies never reached holdfast: load it, once */
		PGresult *res =
		    app_pg_by_id(&CONN(k)->pg, k->r, "SELECT copies FROM books WHERE id = $1",
		                 k->id, "book_not_found", "book");
		if (!res)
			return;
		int64_t copies = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
		PQclear(res);
		if (app_hf_capacity(library_store, name, copies, &e) == HF_OK)
			rc =
			    app_hf_take(library_store, owner, name, 1, BORROW_TTL_MS, NULL, &h, &e);
	}
	if (rc == HF_EUNAVAILABLE) {
		app_error(k->r, 409, "no_copy_available", "every copy of book %" PRId64 " is out",
		          k->id);
		return;
	}
	if (rc != HF_OK) {
		app_error(k->r, 503, "holdfast_unavailable", "cannot hold a copy: %s", e.message);
		return;
	}
	char s[2][24];
	snprintf(s[0], sizeof(s[0]), "%" PRId64, k->id);
	snprintf(s[1], sizeof(s[1]), "%" PRId64, user);
	const char *p[4] = {s[0], s[1], h->id, h->token};
	PGresult *res = app_pg_exec(&CONN(k)->pg, k->r,
	                            "INSERT INTO borrowings (book_id, user_id, hold_id, hold_token)"
	                            " VALUES ($1, $2, $3, $4) RETURNING " BORROWING_JSON,
	                            4, p, NULL);
	if (res)
		rc = hf_confirm(library_store, h->id, h->token, NULL, &e);
	if (!res || rc != HF_OK) {
		hf_release(library_store, h->id, h->token, NULL, NULL);
		if (res) {
			PQclear(res);
			PQclear(
			    app_pg_exec(&CONN(k)->pg, k->r,
			                "UPDATE borrowings SET status = 'VOID', hold_token = NULL"
			                " WHERE hold_id = $1",
			                1, p + 2, NULL));
			app_error(k->r, 503, "holdfast_unavailable", "cannot confirm the hold: %s",
			          e.message);
		}
		hf_hold_free(h);
		return;
	}
	hf_hold_free(h);
	answer_json(res, 201, k->r);
	PQclear(res);
}

/* POST /api/borrowings/:id/return: the row locked, the hold released, the row returned, in
 * one transaction (a release that fails leaves the borrowing as it was). */
static void h_return(struct app_call *k)
{
	struct app_pg *pg = &CONN(k)->pg;
	char ids[24];
	snprintf(ids, sizeof(ids), "%" PRId64, k->id);
	const char *p[1] = {ids};
	if (!app_pg_begin(pg, k->r))
		return;
	PGresult *res = app_pg_exec(
	    pg, k->r, "SELECT status, hold_id, hold_token FROM borrowings WHERE id = $1 FOR UPDATE",
	    1, p, NULL);
	if (!res) {
		app_pg_rollback(pg);
		return;
	}
	if (PQntuples(res) == 0 || strcmp(PQgetvalue(res, 0, 0), "BORROWED") != 0) {
		if (PQntuples(res) == 0)
			app_error(k->r, 404, "borrowing_not_found", "no borrowing %" PRId64, k->id);
		else
			app_error(k->r, 409, "not_borrowed", "borrowing %" PRId64 " is %s", k->id,
			          PQgetvalue(res, 0, 0));
		PQclear(res);
		{
			app_pg_rollback(pg);
			return;
		}
	}
	hf_error e;
	int rc = hf_release(library_store, PQgetvalue(res, 0, 1), PQgetvalue(res, 0, 2), NULL, &e);
	PQclear(res);
	if (rc != HF_OK && rc != HF_EENDED) {
		app_pg_rollback(pg);
		{
			app_error(k->r, 503, "holdfast_unavailable", "cannot release: %s",
			          e.message);
			return;
		}
	}
	res = app_pg_exec(pg, k->r,
	                  "UPDATE borrowings SET status = 'RETURNED', returned_at = now(),"
	                  " hold_token = NULL WHERE id = $1 RETURNING " BORROWING_JSON,
	                  1, p, NULL);
	if (!res) {
		app_pg_rollback(pg);
		return;
	}
	if (app_pg_commit(pg, k->r))
		answer_json(res, 200, k->r);
	PQclear(res);
}

/* GET /api/users/:id/borrowings: the read model, and the position (holdfast event seq) it
 * reflects, read in one statement. */
static void h_user_borrowings(struct app_call *k)
{
	char ids[24];
	snprintf(ids, sizeof(ids), "%" PRId64, k->id);
	const char *p[1] = {ids};
	PGresult *res = app_pg_exec(
	    &CONN(k)->pg, k->r,
	    "SELECT json_build_object('user_id', $1::bigint, 'position',"
	    " (SELECT seq FROM projector_position WHERE name = 'borrowings'),"
	    " 'borrowings', coalesce((SELECT json_agg(json_build_object('hold_id', hold_id,"
	    "   'book_id', book_id, 'status', status, 'borrowed_at', " TS(
	        "borrowed_at") ","
	                       "   'returned_at', " TS(
	                           "returned_at") ", 'borrowed_seq', borrowed_seq,"
	                                          "   'returned_seq', returned_seq) ORDER BY "
	                                          "borrowed_seq)"
	                                          "  FROM user_borrowings WHERE user_id = $1), "
	                                          "'[]'))",
	    1, p, NULL);
	if (!res)
		return;
	answer_json(res, 200, k->r);
	PQclear(res);
}

const struct app_route library_routes[] = {
    {"POST", "/api/books", h_book_create},
    {"GET", "/api/books/:id", h_book_get},
    {"PUT", "/api/books/:id", h_book_put},
    {"POST", "/api/books/:id/borrow", h_borrow},
    {"POST", "/api/borrowings/:id/return", h_return},
    {"GET", "/api/users/:id/borrowings", h_user_borrowings},
};
const size_t library_n_routes = sizeof(library_routes) / sizeof(library_routes[0]);
