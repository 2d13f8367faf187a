/*
 * stores.c — the apps' connections to PostgreSQL (libpq) and Redis (hiredis), each one
 * reopened when it breaks, with the database error replies; and the small command-line and
 * clock helpers every app's main() uses.
 */
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "app.h"

/* ---- PostgreSQL. ----------------------------------------------------------------------- */

bool app_pg_open(struct app_pg *pg, char *err, size_t errlen)
{
	if (pg->conn)
		PQfinish(pg->conn);
	pg->conn = PQconnectdb(pg->url);
	if (PQstatus(pg->conn) != CONNECTION_OK) {
		snprintf(err, errlen, "postgres: %s", PQerrorMessage(pg->conn));
		PQfinish(pg->conn);
		pg->conn = NULL;
		return false;
	}
	const char *p[1] = {pg->name};
	PQclear(PQexecParams(pg->conn, "SELECT set_config('application_name', $1, false)", 1, NULL,
	                     p, NULL, NULL, 0));
	return true;
}

bool app_pg_ok(struct app_pg *pg)
{
	char err[256];
	if (pg->conn && PQstatus(pg->conn) == CONNECTION_OK)
		return true;
	return app_pg_open(pg, err, sizeof(err));
}

void app_pg_close(struct app_pg *pg)
{
	if (pg->conn)
		PQfinish(pg->conn);
	pg->conn = NULL;
}

PGresult *app_pg_exec(struct app_pg *pg, struct app_reply *r, const char *sql, int n,
                      const char *const *params, char state[6])
{
	if (state)
		state[0] = '\0';
	if (!app_pg_ok(pg)) {
		app_error(r, 503, "database_unavailable", "cannot reach postgres");
		return NULL;
	}
	PGresult *res = PQexecParams(pg->conn, sql, n, NULL, params, NULL, NULL, 0);
	ExecStatusType st = PQresultStatus(res);
	if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK)
		return res;
	if (PQstatus(pg->conn) != CONNECTION_OK) {
		app_error(r, 503, "database_unavailable", "postgres connection lost");
	} else {
		const char *code = PQresultErrorField(res, PG_DIAG_SQLSTATE);
		const char *msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
		if (state && code)
			snprintf(state, 6, "%.5s", code);
		app_error(r, 500, "database_error", "postgres said %s: %s", code ? code : "?",
		          msg ? msg : "error");
	}
	PQclear(res);
	return NULL;
}

PGresult *app_pg_by_id(struct app_pg *pg, struct app_reply *r, const char *sql, int64_t id,
                       const char *missing_code, const char *what)
{
	char ids[24];
	snprintf(ids, sizeof(ids), "%" PRId64, id);
	const char *p[1] = {ids};
	PGresult *res = app_pg_exec(pg, r, sql, 1, p, NULL);
	if (res && PQntuples(res) == 0) {
		PQclear(res);
		res = NULL;
		app_error(r, 404, missing_code, "no %s %" PRId64, what, id);
	}
	return res;
}

bool app_pg_script(PGconn *pg, const char *sql, char *err, size_t errlen)
{
	PGresult *res = PQexec(pg, sql);
	bool ok = PQresultStatus(res) == PGRES_COMMAND_OK || PQresultStatus(res) == PGRES_TUPLES_OK;
	if (!ok)
		snprintf(err, errlen, "%s", PQresultErrorMessage(res));
	PQclear(res);
	if (!ok)
		PQclear(PQexec(pg, "ROLLBACK"));
	return ok;
}

bool app_pg_schema(PGconn *pg, long key, const char *ddl, char *err, size_t errlen)
{
	/* CREATE ... IF NOT EXISTS races with itself across processes: serialize on an advisory
	 * lock held for the transaction. */
	size_t len = strlen(ddl) + 128;
	char *sql = malloc(len);
	if (!sql) {
		snprintf(err, errlen, "out of memory");
		return false;
	}
	snprintf(sql, len, "BEGIN; SELECT pg_advisory_xact_lock(%ld); %s COMMIT;", key, ddl);
	bool ok = app_pg_script(pg, sql, err, errlen);
	free(sql);
	return ok;
}

static bool pg_command(struct app_pg *pg, struct app_reply *r, const char *sql)
{
	PGresult *res = app_pg_exec(pg, r, sql, 0, NULL, NULL);
	PQclear(res);
	return res != NULL;
}

bool app_pg_begin(struct app_pg *pg, struct app_reply *r)
{
	return pg_command(pg, r, "BEGIN");
}

bool app_pg_commit(struct app_pg *pg, struct app_reply *r)
{
	return pg_command(pg, r, "COMMIT");
}

void app_pg_rollback(struct app_pg *pg)
{
	if (pg->conn && PQstatus(pg->conn) == CONNECTION_OK)
		PQclear(PQexec(pg->conn, "ROLLBACK"));
}

/* ---- Redis. --------------------------------------------------------------------------- */

bool app_redis_open(struct app_redis *rd, char *err, size_t errlen)
{
	if (rd->ctx)
		redisFree(rd->ctx);
	struct timeval tv = {.tv_sec = 5};
	rd->ctx = redisConnectWithTimeout(rd->host, rd->port, tv);
	if (!rd->ctx || rd->ctx->err) {
		snprintf(err, errlen, "redis %s:%d: %s", rd->host, rd->port,
		         rd->ctx ? rd->ctx->errstr : "out of memory");
		if (rd->ctx)
			redisFree(rd->ctx);
		rd->ctx = NULL;
		return false;
	}
	redisSetTimeout(rd->ctx, tv);
	return true;
}

bool app_redis_ok(struct app_redis *rd)
{
	char err[256];
	if (rd->ctx && !rd->ctx->err)
		return true;
	return app_redis_open(rd, err, sizeof(err));
}

void app_redis_close(struct app_redis *rd)
{
	if (rd->ctx)
		redisFree(rd->ctx);
	rd->ctx = NULL;
}

/* ---- Command line and time. -------------------------------------------------------------- */

bool app_parse_hostport(const char *s, const char **host, int *port)
{
	static char bufs[2][256];
	static int next;
	char *b = bufs[next++ % 2];
	snprintf(b, sizeof(bufs[0]), "%s", s);
	char *colon = strrchr(b, ':');
	if (!colon || colon == b)
		return false;
	*colon = '\0';
	char *end;
	long p = strtol(colon + 1, &end, 10);
	if (*end || colon[1] == '\0' || p < 0 || p > 65535)
		return false;
	if (b[0] == '[' && colon[-1] == ']') {
		colon[-1] = '\0';
		b++;
	}
	*host = b;
	*port = (int)p;
	return true;
}

bool app_parse_num(const char *prog, const char *opt, const char *s, double lo, double hi,
                   double *out)
{
	char *end;
	double d = strtod(s, &end);
	if (*s == '\0' || *end || !(d >= lo && d <= hi)) {
		fprintf(stderr, "%s: %s wants a number from %g to %g, not '%s'\n", prog, opt, lo,
		        hi, s);
		return false;
	}
	*out = d;
	return true;
}

void app_process_owner(const char *prog, char *buf, size_t len)
{
	char host[64] = "host";
	gethostname(host, sizeof(host) - 1);
	host[sizeof(host) - 1] = '\0';
	snprintf(buf, len, "%s:%s:%ld", prog, host, (long)getpid());
}

int64_t app_mono_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

bool app_store_open(const char *prog, const char *url, hf_store **out)
{
	signal(SIGPIPE, SIG_IGN);
	hf_error e;
	if (hf_open(url, NULL, out, &e) == HF_OK)
		return true;
	fprintf(stderr, "%s: cannot open holdfast %s: %s\n", prog, url, e.message);
	return false;
}
