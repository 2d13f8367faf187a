/*
 * journal.c — the embedded engine's SQLite file: its schema and format check, loading it
 * into the state, writing one batch of records per durable transaction (WAL,
 * synchronous=FULL), and reading old events on a separate connection.
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/codec.h"
#include "engine/embedded/embedded.h"

/* Schema 2 added event revisions: events.revision (of events.resource), events.revisions (every
 * resource the event touches, as {"name":revision,...}, when more than one) and the table
 * revisions (each resource's last revision: the counter that outlives implicit resources).
 * Schema 3 writes the rows of resources, holds and idempotency records in row.c's binary form;
 * their JSON rows of schema 2 still read (row.c tells them apart by their first byte), so a
 * schema 2 store becomes a schema 3 one by its meta row alone, and each JSON row is rewritten
 * in the binary form the next time it changes.
 * Schema 4 stops writing the table revisions with every event: it holds each resource's last
 * revision among the events up to seq = meta row "revisions_upto", and the events after that
 * carry the rest (the load folds them in, in memory: FOLD_SELECT_SQL). A fold brings the
 * table up to the newest event: from the writer's own note of the revisions it wrote since the
 * last fold (struct hf__journal's `unfolded`: a lookup per revision instead of a statement),
 * or by FOLD_SQL from the events when that note is not whole (after a failed commit, at the
 * first fold after a crash). Folds run off the answer path (the writer after its answers are
 * out, every trim before its delete, a clean close), so that a trim never takes a revision
 * with it. A schema 3 store's table is whole up to its newest event: the migration sets
 * "revisions_upto" to that event, and nothing else.
 * Schema 5 keys the table holds by a number the state gives each hold when it is granted
 * (holds.rid, INTEGER PRIMARY KEY: the row's place in the table's only B-tree) instead of by
 * its random id: a grant appends its row at the table's right edge, beside the rows of the
 * holds granted just before it, where the release finds it again; keyed by id, every row and
 * the id's index entry went to a page of their own, and each commit wrote as many pages (the
 * WAL checksums, copies and checkpoints each written byte). holds.id stays, unindexed, for
 * whoever reads the file with sqlite3. The migration copies each row with its old rowid as
 * its rid. */
#define SCHEMA_VERSION "5"
#define SCHEMA_NUMBER 5

/* Each resource's greatest revision among the events after seq ?1, as (name, revision) rows:
 * the resource's own (events.revision) and, for an event of several, each of events.revisions
 * (a damaged list is left to the check of the events load). */
#define FOLD_SELECT_SQL                                                                          \
	"SELECT name, max(rev) FROM ("                                                           \
	" SELECT resource AS name, revision AS rev FROM events"                                  \
	"  WHERE seq > ?1 AND resource IS NOT NULL AND revision IS NOT NULL"                     \
	" UNION ALL SELECT t.key, t.value FROM events e, json_each(e.revisions) t"               \
	"  WHERE e.seq > ?1 AND e.revisions IS NOT NULL AND json_valid(e.revisions)"             \
	"  AND t.type = 'integer')"                                                              \
	" WHERE true GROUP BY name" /* "WHERE true": SQLite's rule for an upsert of a select */
/* Folds the events after ?1 into the table: a counter only ever goes up. */
#define FOLD_SQL                                                                                 \
	"INSERT INTO revisions(resource, revision) " FOLD_SELECT_SQL                             \
	" ON CONFLICT(resource) DO UPDATE SET revision = max(revision, excluded.revision)"

#define REVISIONS_TABLE_SQL                                                                      \
	"CREATE TABLE revisions(resource TEXT PRIMARY KEY, revision INTEGER NOT NULL);"

static const char schema_sql[] =
    "CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);"
    "CREATE TABLE resources(name TEXT PRIMARY KEY, body BLOB NOT NULL);"
    "CREATE TABLE holds(rid INTEGER PRIMARY KEY, id TEXT NOT NULL, body BLOB NOT NULL);"
    "CREATE TABLE idempotency(key TEXT PRIMARY KEY, body BLOB NOT NULL);"
    "CREATE TABLE events(seq INTEGER PRIMARY KEY, at INTEGER NOT NULL, type TEXT NOT NULL,"
    "                    resource TEXT, hold_id TEXT, data TEXT NOT NULL,"
    "                    revision INTEGER, revisions TEXT);" REVISIONS_TABLE_SQL
    "INSERT INTO meta(key, value) VALUES('format', 'holdfast'), ('schema', '" SCHEMA_VERSION "');";

/* Schema 1 to 2, in the caller's transaction: every old event gets the revisions it would
 * have had, numbered in seq order. A hold event touches the parts its data lists; hold.extended
 * and hold.confirmed do not list them: they touch their hold's granted parts. */
static const char migrate_1_sql[] =
    "ALTER TABLE events ADD COLUMN revision INTEGER;"
    "ALTER TABLE events ADD COLUMN revisions TEXT;" REVISIONS_TABLE_SQL
    "CREATE TEMP TABLE touch(seq INTEGER NOT NULL, i INTEGER NOT NULL, name TEXT NOT NULL,"
    "                        revision INTEGER);"
    "INSERT INTO temp.touch(seq, i, name)"
    " SELECT e.seq, p.key, json_extract(p.value, '$.name')"
    " FROM events e, json_each(e.data, '$.resources') p"
    " WHERE e.hold_id IS NOT NULL AND json_type(e.data, '$.resources') = 'array';"
    "CREATE INDEX temp.touch_seq ON touch(seq);"
    "CREATE TEMP TABLE granted(hold_id TEXT PRIMARY KEY, seq INTEGER NOT NULL);"
    "INSERT OR IGNORE INTO temp.granted SELECT hold_id, seq FROM events"
    " WHERE type = 'hold.granted' AND hold_id IS NOT NULL;"
    "INSERT INTO temp.touch(seq, i, name)"
    " SELECT e.seq, t.i, t.name FROM events e JOIN temp.granted g ON g.hold_id = e.hold_id"
    " JOIN temp.touch t ON t.seq = g.seq"
    " WHERE json_type(e.data, '$.resources') IS NOT 'array';"
    "INSERT INTO temp.touch(seq, i, name) SELECT seq, 0, resource FROM events e"
    " WHERE resource IS NOT NULL AND NOT EXISTS (SELECT 1 FROM temp.touch t WHERE t.seq = e.seq);"
    "UPDATE temp.touch SET revision = r.n FROM (SELECT rowid AS id,"
    " row_number() OVER (PARTITION BY name ORDER BY seq) AS n FROM temp.touch) r"
    " WHERE r.id = touch.rowid;"
    "UPDATE events SET revision = t.revision FROM temp.touch t"
    " WHERE t.seq = events.seq AND t.name = events.resource;"
    "UPDATE events SET revisions = j.text FROM (SELECT seq,"
    " json_group_object(name, revision) AS text, count(*) AS n"
    " FROM (SELECT * FROM temp.touch ORDER BY seq, i) GROUP BY seq) j"
    " WHERE j.seq = events.seq AND j.n > 1;"
    "INSERT INTO revisions(resource, revision) SELECT name, max(revision) FROM temp.touch"
    " GROUP BY name;"
    "DROP TABLE temp.touch; DROP TABLE temp.granted;"
    "UPDATE meta SET value = '2' WHERE key = 'schema';";

/* Schema 2 or 3 to 4, in the caller's transaction: their table revisions is whole up to the
 * newest event (every event advanced it in its own commit). */
static const char migrate_3_sql[] =
    "INSERT OR REPLACE INTO meta(key, value)"
    " SELECT 'revisions_upto', coalesce(max(seq), 0) FROM events;";

/* Schema 4 to 5, in the caller's transaction: the holds keep their rows, numbered as the
 * rowids SQLite gave them (the state numbers new holds after the greatest). */
static const char migrate_4_sql[] =
    "CREATE TABLE holds_5(rid INTEGER PRIMARY KEY, id TEXT NOT NULL, body BLOB NOT NULL);"
    "INSERT INTO holds_5(rid, id, body) SELECT rowid, id, body FROM holds ORDER BY rowid;"
    "DROP TABLE holds;"
    "ALTER TABLE holds_5 RENAME TO holds;";

/* Statements for writing, indexed by table then by put (0) / remove (1). ?1 is the key, ?2
 * the body; a hold's row number is ?3. */
static const char *const write_sql[][2] = {
    [HF__J_RESOURCE] = {"INSERT OR REPLACE INTO resources(name, body) VALUES(?1, ?2)",
                        "DELETE FROM resources WHERE name = ?1"},
    [HF__J_HOLD] = {"INSERT OR REPLACE INTO holds(rid, id, body) VALUES(?3, ?1, ?2)",
                    "DELETE FROM holds WHERE rid = ?3"},
    [HF__J_IDEM] = {"INSERT OR REPLACE INTO idempotency(key, body) VALUES(?1, ?2)",
                    "DELETE FROM idempotency WHERE key = ?1"},
    [HF__J_EVENT] = {"INSERT INTO events(seq, at, type, resource, hold_id, data, revision,"
                     " revisions) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                     NULL},
    [HF__J_META] = {"INSERT OR REPLACE INTO meta(key, value) VALUES(?1, ?2)", NULL},
    [HF__J_SAGA] = {"INSERT OR REPLACE INTO sagas(id, body) VALUES(?1, ?2)", NULL},
    [HF__J_SAGA_TYPE] = {"INSERT OR REPLACE INTO saga_types(name, body) VALUES(?1, ?2)", NULL},
};
#define N_TABLES (HF__J_SAGA_TYPE + 1)

/* Fault injection for tests (SQLite's test VFS habit), from HF_TEST_JOURNAL_FAULTS at open:
 * "delay_ms=N" sleeps N ms before every commit (a slow fsync); "fail=N" makes N commits fail
 * as if the disk were full, after "fail_after=K" commits that succeed (commits and probes
 * count alike); "fail_while=PATH" fails every commit while PATH exists (a disk-full switch).
 * Unset (always, outside tests): no effect. */
struct faults {
	long delay_ms, fail_after, fail;
	long commits;
	char fail_while[512];
};

struct hf__journal {
	struct faults faults;
	char *path;
	int lock_fd; /* PATH.lock, flock()ed for as long as the store is open */
	sqlite3 *db;     /* the writer's connection; used by one thread at a time */
	sqlite3_stmt *put[N_TABLES][2];
	sqlite3_stmt *begin, *commit, *rollback;
	uint64_t folded; /* meta "revisions_upto": the table revisions accounts for events up to it */
	/* Each resource's last revision among the committed events after `folded` (struct
	 * unfolded by name), when unfolded_whole: the writer's note of what it wrote. */
	struct hf__map unfolded;
	bool unfolded_whole;
	sqlite3_stmt *put_fold; /* raises a resource's counter to ?2 */
	/* The WAL's frames after the last commit (wal_hook) and the count from which a
	 * checkpoint is due (hf__journal_checkpoint). Writer thread only. */
	int wal_frames, checkpoint_mark;
	pthread_mutex_t read_lock; /* guards `reader` */
	sqlite3 *reader;
};

static const char *text(sqlite3_stmt *stmt, int col)
{
	const char *s = (const char *)sqlite3_column_text(stmt, col);
	return s ? s : "";
}

static int db_err(hf_error *err, sqlite3 *db, int code, const char *what)
{
	return hf__err(err, code, "%s: %s", what, db ? sqlite3_errmsg(db) : "cannot open");
}

/* Maps a SQLite failure while opening to our codes: a file that is not a database, or a
 * damaged one, is store_corrupt; anything else is a storage error. */
static int open_code(int sqlite_rc)
{
	int primary = sqlite_rc & 0xff;
	if (primary == SQLITE_NOMEM)
		return HF_ENOMEM; /* never store_corrupt: the file may be fine */
	return primary == SQLITE_NOTADB || primary == SQLITE_CORRUPT ? HF_ECORRUPT : HF_ESTORAGE;
}

/* A statement on our tables that does not prepare: a schema that does not match
 * (SQLITE_ERROR: no such table or column) is store_corrupt; out of memory is not. */
static int schema_code(int sqlite_rc)
{
	return (sqlite_rc & 0xff) == SQLITE_ERROR ? HF_ECORRUPT : open_code(sqlite_rc);
}

static int exec(sqlite3 *db, const char *sql, hf_error *err)
{
	char *msg = NULL;
	int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);
	if (rc != SQLITE_OK) {
		int code = hf__err(err, open_code(rc), "store '%s': %s", sql, msg ? msg : "error");
		sqlite3_free(msg);
		return code;
	}
	return HF_OK;
}

/* Checks that an existing file is ours. New stores are made by create_store only: a file
 * without our tables (an empty one, say, left by a truncation) is refused, never reset. */
static int check_format(sqlite3 *db, const char *path, int *schema_number, hf_error *err)
{
	sqlite3_stmt *st = NULL;
	int rc = sqlite3_prepare_v2(db, "SELECT count(*) FROM sqlite_master", -1, &st, NULL);
	if (rc != SQLITE_OK)
		return hf__err(err, open_code(rc), "'%s' is not a holdfast store: %s", path,
		               sqlite3_errmsg(db));
	rc = sqlite3_step(st);
	int tables = rc == SQLITE_ROW ? sqlite3_column_int(st, 0) : -1;
	sqlite3_finalize(st);
	if (tables < 0)
		return hf__err(err, open_code(rc), "'%s' is not a holdfast store: %s", path,
		               sqlite3_errmsg(db));
	if (tables == 0)
		return hf__err(err, HF_ECORRUPT,
		               "'%s' is an SQLite file without holdfast's tables: not a holdfast store",
		               path);
	const char *format = NULL, *schema = NULL;
	char fbuf[32] = "", sbuf[32] = "";
	/* A table "meta" that is missing is a foreign file; a query that fails (out of memory,
	 * an I/O error) says nothing about the file: that is not store_corrupt. */
	rc = sqlite3_prepare_v2(db, "SELECT key, value FROM meta WHERE key IN ('format','schema')",
	                        -1, &st, NULL);
	if (rc == SQLITE_OK) {
		while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
			const char *k = (const char *)sqlite3_column_text(st, 0);
			const char *v = (const char *)sqlite3_column_text(st, 1);
			if ((!k || !v) && sqlite3_errcode(db) == SQLITE_NOMEM) {
				rc = SQLITE_NOMEM;
				break;
			}
			if (k && v && strcmp(k, "format") == 0)
				snprintf(fbuf, sizeof(fbuf), "%s", v), format = fbuf;
			if (k && v && strcmp(k, "schema") == 0)
				snprintf(sbuf, sizeof(sbuf), "%s", v), schema = sbuf;
		}
		sqlite3_finalize(st);
		if (rc != SQLITE_DONE)
			return hf__err(err, open_code(rc), "cannot read store '%s': %s", path,
			               sqlite3_errstr(rc));
	} else if ((rc & 0xff) != SQLITE_ERROR) { /* SQLITE_ERROR: no such table */
		return hf__err(err, open_code(rc), "cannot read store '%s': %s", path,
		               sqlite3_errmsg(db));
	}
	if (!format || strcmp(format, "holdfast") != 0)
		return hf__err(err, HF_ECORRUPT, "'%s' is an SQLite file but not a holdfast store", path);
	/* Older schemas are brought up to this one; a newer one was written by a newer build,
	 * whose rows this one could misread: refused, with the way out. */
	char *end = NULL;
	long number = schema ? strtol(schema, &end, 10) : 0;
	if (!schema || !*schema || *end || number < 1)
		return hf__err(err, HF_ECORRUPT, "'%s' has holdfast schema %s; this build reads %s",
		               path, schema ? schema : "(none)", SCHEMA_VERSION);
	if (number > SCHEMA_NUMBER)
		return hf__err(err, HF_ECORRUPT,
		               "'%s' has holdfast schema %s, newer than this build's %s: open it with "
		               "the newer holdfast that wrote it",
		               path, schema, SCHEMA_VERSION);
	*schema_number = (int)number;
	/* A damaged page shows up here rather than in the middle of serving.
	 * A check that cannot run (out of memory, an I/O error) is not a verdict on the file. */
	if ((rc = sqlite3_prepare_v2(db, "PRAGMA quick_check(1)", -1, &st, NULL)) != SQLITE_OK)
		return db_err(err, db, open_code(rc), "store check failed");
	rc = sqlite3_step(st);
	const char *verdict = rc == SQLITE_ROW ? (const char *)sqlite3_column_text(st, 0) : NULL;
	if (!verdict) {
		int code = rc == SQLITE_ROW ? HF_ENOMEM : open_code(rc);
		code = db_err(err, db, code, "store check failed");
		sqlite3_finalize(st);
		return code;
	}
	bool ok = strcmp(verdict, "ok") == 0;
	char detail[128];
	snprintf(detail, sizeof(detail), "%s", verdict);
	sqlite3_finalize(st);
	if (!ok)
		return hf__err(err, HF_ECORRUPT, "store file '%s' is damaged: %s", path, detail);
	return HF_OK;
}

#define BUSY_TIMEOUT_MS 5000 /* how long a connection waits for another's lock */

static int open_db(const char *path, int flags, sqlite3 **db, hf_error *err)
{
	int rc = sqlite3_open_v2(path, db, flags | SQLITE_OPEN_NOMUTEX, NULL);
	if (rc != SQLITE_OK) {
		int code = hf__err(err, open_code(rc), "cannot open store '%s': %s", path,
		                   *db ? sqlite3_errmsg(*db) : sqlite3_errstr(rc));
		sqlite3_close(*db);
		*db = NULL;
		return code;
	}
	sqlite3_busy_timeout(*db, BUSY_TIMEOUT_MS);
	return HF_OK;
}

/* fsyncs the directory that holds `path`, so that a rename into it is durable. */
static int sync_dir_of(const char *path)
{
	char dir[4096];
	snprintf(dir, sizeof(dir), "%s", path);
	char *slash = strrchr(dir, '/');
	if (!slash)
		snprintf(dir, sizeof(dir), ".");
	else if (slash == dir)
		dir[1] = '\0';
	else
		*slash = '\0';
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	int rc = fsync(fd);
	close(fd);
	return rc;
}

/* Makes a new store at `path`, where no file exists: the schema is written to PATH.new, made
 * durable, and renamed into place, so that a file at PATH is always a complete store — a
 * crash while creating leaves no file or a whole one, never an empty one that a later open
 * could mistake for new. Called with the store's lock held. */
static int create_store(const char *path, hf_error *err)
{
	char tmp[4096], tmp_journal[4200];
	if ((size_t)snprintf(tmp, sizeof(tmp), "%s.new", path) >= sizeof(tmp))
		return hf__err(err, HF_EINVAL, "store path is too long");
	snprintf(tmp_journal, sizeof(tmp_journal), "%s-journal", tmp);
	unlink(tmp); /* left by a creation that crashed: never a store */
	unlink(tmp_journal);
	sqlite3 *db = NULL;
	mode_t old = umask(077);
	int rc = open_db(tmp, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, &db, err);
	umask(old);
	if (rc != HF_OK)
		return rc;
	/* Rollback-journal mode with synchronous=FULL: COMMIT returns once the file is on disk. */
	if ((rc = exec(db, "PRAGMA synchronous=FULL", err)) == HF_OK &&
	    (rc = exec(db, "BEGIN IMMEDIATE", err)) == HF_OK &&
	    (rc = exec(db, schema_sql, err)) == HF_OK)
		rc = exec(db, "COMMIT", err);
	if (sqlite3_close(db) != SQLITE_OK && rc == HF_OK)
		rc = hf__err(err, HF_ESTORAGE, "cannot close new store '%s'", tmp);
	if (rc == HF_OK && rename(tmp, path) != 0)
		rc = hf__err(err, HF_ESTORAGE, "cannot create store '%s': rename: %s", path,
		             strerror(errno));
	if (rc == HF_OK && sync_dir_of(path) != 0)
		rc = hf__err(err, HF_ESTORAGE, "cannot create store '%s': fsync of its directory: %s",
		             path, strerror(errno));
	if (rc != HF_OK) {
		unlink(tmp);
		unlink(tmp_journal);
	}
	return rc;
}

static void faults_parse(struct faults *f, const char *spec)
{
	memset(f, 0, sizeof(*f));
	for (const char *p = spec; p && *p;) {
		long v = 0;
		const char *eq = strchr(p, '=');
		if (eq)
			v = strtol(eq + 1, NULL, 10);
		if (strncmp(p, "delay_ms=", 9) == 0)
			f->delay_ms = v;
		else if (strncmp(p, "fail_after=", 11) == 0)
			f->fail_after = v;
		else if (strncmp(p, "fail=", 5) == 0)
			f->fail = v;
		else if (strncmp(p, "fail_while=", 11) == 0)
			snprintf(f->fail_while, sizeof(f->fail_while), "%.*s",
			         (int)strcspn(p + 11, ","), p + 11);
		p = strchr(p, ',');
		p = p ? p + 1 : NULL;
	}
}

/* Before a commit: the injected delay; true when this commit is to fail. */
static bool faults_before_commit(struct faults *f)
{
	if (f->delay_ms > 0) {
		struct timespec ts = {.tv_sec = f->delay_ms / 1000,
		                      .tv_nsec = (f->delay_ms % 1000) * 1000000L};
		while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
			;
	}
	long n = f->commits++;
	if (f->fail_while[0] && access(f->fail_while, F_OK) == 0)
		return true;
	return n >= f->fail_after && n < f->fail_after + f->fail;
}

/* Brings a store of schema `from` to this schema, in one durable transaction. From schema 2
 * to 4 that is meta rows alone: its JSON rows read as they are (see SCHEMA_VERSION); 5 copies
 * the table holds. */
static int migrate(sqlite3 *db, const char *path, int from, hf_error *err)
{
	int rc = exec(db, "BEGIN IMMEDIATE", err);
	if (rc != HF_OK)
		return rc;
	char *msg = NULL;
	int src = from < 2 ? sqlite3_exec(db, migrate_1_sql, NULL, NULL, &msg) : SQLITE_OK;
	if (src == SQLITE_OK && from < 4)
		src = sqlite3_exec(db, migrate_3_sql, NULL, NULL, &msg);
	if (src == SQLITE_OK && from < 5)
		src = sqlite3_exec(db, migrate_4_sql, NULL, NULL, &msg);
	if (src == SQLITE_OK)
		src = sqlite3_exec(db, "UPDATE meta SET value = '" SCHEMA_VERSION "' WHERE key = 'schema'",
		                   NULL, NULL, &msg);
	if (src == SQLITE_OK)
		src = sqlite3_exec(db, "COMMIT", NULL, NULL, &msg);
	if (src != SQLITE_OK) {
		rc = hf__err(err, open_code(src), "cannot migrate store '%s' to schema %s: %s", path,
		             SCHEMA_VERSION, msg ? msg : sqlite3_errstr(src));
		sqlite3_free(msg);
		sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
	}
	return rc;
}

/* One integer from a query with up to two integer parameters; 0 for NULL or no row. */
static int64_t query_int(sqlite3 *db, const char *sql, int64_t a, int64_t b, int *rc)
{
	sqlite3_stmt *s = NULL;
	int64_t v = 0;
	if (*rc != SQLITE_OK || (*rc = sqlite3_prepare_v2(db, sql, -1, &s, NULL)) != SQLITE_OK)
		return 0;
	if (sqlite3_bind_parameter_count(s) >= 1)
		sqlite3_bind_int64(s, 1, a);
	if (sqlite3_bind_parameter_count(s) >= 2)
		sqlite3_bind_int64(s, 2, b);
	int step = sqlite3_step(s);
	if (step == SQLITE_ROW)
		v = sqlite3_column_int64(s, 0);
	else if (step != SQLITE_DONE)
		*rc = step;
	sqlite3_finalize(s);
	return v;
}

/* Forgets the note of unfolded revisions (it is no longer whole). */
static void drop_unfolded(struct hf__journal *j)
{
	size_t pos = 0;
	void *cur = NULL, *v;
	while ((v = hf__map_next(&j->unfolded, &pos, &cur)))
		free(v);
	hf__map_release(&j->unfolded);
	j->unfolded_whole = false;
}

struct unfolded {
	int64_t revision;
	char name[];
};

/* Notes an event's revisions for the next fold. Out of memory, the note is dropped: the fold
 * then reads the events. */
static void note_revisions(struct hf__journal *j, const hf_event *ev)
{
	for (size_t i = 0; j->unfolded_whole && i < ev->n_revisions; i++) {
		struct unfolded *u = hf__map_intern(&j->unfolded, ev->revisions[i].resource,
		                                    offsetof(struct unfolded, name));
		if (!u) {
			drop_unfolded(j);
			return;
		}
		if (ev->revisions[i].revision > u->revision)
			u->revision = ev->revisions[i].revision;
	}
}

/* Checkpoints of the WAL, out of the commits. SQLite's auto-checkpoint runs inside the COMMIT
 * that takes the WAL past 1,000 pages, before that commit's answers go out: every ~110th lock
 * pair waited for it (copying the pages back into the database, and two fsyncs). This WAL hook
 * takes the place of the auto-checkpoint (sqlite3_wal_hook replaces it) and only counts; the
 * writer runs the checkpoint after the commit, once its answers are out
 * (hf__journal_checkpoint): PASSIVE from CHECKPOINT_PAGES (it waits for no reader), and from
 * CHECKPOINT_TRUNCATE (the readers held back every passive one) in full, waiting for readers
 * up to TRUNCATE_WAIT_MS, and truncating the WAL: it stays under about 64 MiB (4 KiB pages)
 * unless a reader holds it longer.
 * A checkpoint on a connection of its own, beside the commits, was measured and dropped: its
 * fsyncs slowed the commits' down, and the WAL, never caught up with, grew to the bound
 * (docs/operations.md, "Checkpoints"). */
#define CHECKPOINT_PAGES 1000
#define CHECKPOINT_TRUNCATE 16384
#define TRUNCATE_WAIT_MS 200

static int wal_hook(void *arg, sqlite3 *db, const char *name, int frames)
{
	(void)db;
	(void)name;
	struct hf__journal *j = arg;
	if (frames < j->wal_frames) /* a checkpoint caught up and the WAL started over */
		j->checkpoint_mark = CHECKPOINT_PAGES;
	j->wal_frames = frames;
	return SQLITE_OK;
}

int hf__journal_checkpoint(struct hf__journal *j, hf_error *err)
{
	/* Past the bound too, only every CHECKPOINT_PAGES: a reader holding the log would
	 * otherwise make every commit's truncating checkpoint wait for it. */
	if (j->wal_frames < j->checkpoint_mark)
		return HF_OK;
	bool full = j->wal_frames >= CHECKPOINT_TRUNCATE;
	/* The truncating one waits for readers (the busy handler), but not for long: the
	 * commits behind it wait too. Held back, it is tried again CHECKPOINT_PAGES later. */
	if (full)
		sqlite3_busy_timeout(j->db, TRUNCATE_WAIT_MS);
	int rc = sqlite3_wal_checkpoint_v2(
	    j->db, NULL, full ? SQLITE_CHECKPOINT_TRUNCATE : SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
	if (full)
		sqlite3_busy_timeout(j->db, BUSY_TIMEOUT_MS);
	if (rc == SQLITE_OK && full)
		j->wal_frames = 0;
	/* The next one after as many pages more, unless the WAL starts over first (wal_hook):
	 * one that readers held back is not tried again with every commit. */
	j->checkpoint_mark = j->wal_frames + CHECKPOINT_PAGES;
	if (rc != SQLITE_OK && rc != SQLITE_BUSY) /* busy: readers held it back */
		return db_err(err, j->db, HF_ESTORAGE, "checkpoint failed");
	return HF_OK;
}

/* Reads meta "revisions_upto" into j->folded: none is 0 (everything is folded at load). */
static int read_folded(struct hf__journal *j, hf_error *err)
{
	sqlite3_stmt *s = NULL;
	int rc = sqlite3_prepare_v2(j->db, "SELECT value FROM meta WHERE key = 'revisions_upto'",
	                            -1, &s, NULL);
	if (rc != SQLITE_OK)
		return db_err(err, j->db, schema_code(rc), "store schema does not match");
	int code = HF_OK;
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		const char *v = text(s, 0);
		char *end;
		errno = 0;
		long long n = strtoll(v, &end, 10);
		if (!*v || *end || errno || n < 0)
			code = hf__err(err, HF_ECORRUPT,
			               "store file is damaged: bad meta row revisions_upto '%.40s'", v);
		else
			j->folded = (uint64_t)n;
	} else if (rc != SQLITE_DONE) {
		code = db_err(err, j->db, open_code(rc), "cannot read store");
	}
	sqlite3_finalize(s);
	if (code != HF_OK)
		return code;
	/* The note starts whole when there is nothing after the fold (a clean close, a store
	 * migrated now); else the first fold reads the events. */
	rc = SQLITE_OK;
	int64_t newest = query_int(j->db, "SELECT coalesce(max(seq), 0) FROM events", 0, 0, &rc);
	if (rc != SQLITE_OK)
		return db_err(err, j->db, open_code(rc), "cannot read store");
	j->unfolded_whole = (uint64_t)newest <= j->folded;
	return HF_OK;
}

int hf__journal_open(const char *path, struct hf__journal **out, hf_error *err)
{
	*out = NULL;
	struct hf__journal *j = calloc(1, sizeof(*j));
	if (!j || !(j->path = hf__strdup(path))) {
		free(j);
		return hf__err_code(err, HF_ENOMEM);
	}
	faults_parse(&j->faults, getenv("HF_TEST_JOURNAL_FAULTS"));
	pthread_mutex_init(&j->read_lock, NULL);
	j->lock_fd = -1;
	int rc;
	/* Two stores over one file would each trust their own memory: refuse the second.
	 * flock, not fcntl: fcntl locks do not conflict within a process, and SQLite uses them
	 * on the database file itself. */
	char lock_path[4096];
	if ((size_t)snprintf(lock_path, sizeof(lock_path), "%s.lock", path) >= sizeof(lock_path)) {
		rc = hf__err(err, HF_EINVAL, "store path is too long");
		goto fail;
	}
	j->lock_fd = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (j->lock_fd < 0) {
		rc = hf__err(err, HF_ESTORAGE, "cannot open '%s': %s", lock_path, strerror(errno));
		goto fail;
	}
	if (flock(j->lock_fd, LOCK_EX | LOCK_NB) != 0) {
		rc = hf__err(err, HF_ESTORAGE, "store '%s' is in use by another store or process", path);
		goto fail;
	}
	/* A store is created only where no file exists; an existing file must be a whole store
	 * (an empty one is what a truncation leaves: refused, so that fences never restart). */
	struct stat sb;
	if (stat(path, &sb) != 0) {
		if (errno != ENOENT) {
			rc = hf__err(err, HF_ESTORAGE, "cannot open store '%s': %s", path, strerror(errno));
			goto fail;
		}
		/* A log without its store must not be replayed into a new one. */
		char wal[4200];
		snprintf(wal, sizeof(wal), "%s-wal", path);
		if (stat(wal, &sb) == 0 && sb.st_size > 0) {
			rc = hf__err(err, HF_ECORRUPT,
			             "store '%s' does not exist but its log '%s' does: not making a new "
			             "store beside it",
			             path, wal);
			goto fail;
		}
		if ((rc = create_store(path, err)) != HF_OK)
			goto fail;
	} else if (S_ISREG(sb.st_mode) && sb.st_size == 0) {
		rc = hf__err(err, HF_ECORRUPT,
		             "store file '%s' is empty: not a holdfast store (a truncated store is never "
		             "reset; remove the file to start a new store)",
		             path);
		goto fail;
	}
	/* The journal holds tokens: only its owner may read it. */
	mode_t old = umask(077);
	rc = open_db(path, SQLITE_OPEN_READWRITE, &j->db, err);
	umask(old);
	if (rc != HF_OK)
		goto fail;
	int schema = 0;
	if ((rc = check_format(j->db, path, &schema, err)) != HF_OK ||
	    (rc = exec(j->db, "PRAGMA journal_mode=WAL", err)) != HF_OK ||
	    (rc = exec(j->db, "PRAGMA synchronous=FULL", err)) != HF_OK ||
	    (schema < SCHEMA_NUMBER && (rc = migrate(j->db, path, schema, err)) != HF_OK) ||
	    (rc = exec(j->db, HF__SAGAS_SCHEMA_SQL, err)) != HF_OK)
		goto fail;
	/* Checkpoints off the commit path: this hook replaces SQLite's auto-checkpoint. */
	sqlite3_wal_hook(j->db, wal_hook, j);
	j->checkpoint_mark = CHECKPOINT_PAGES;
	for (int t = 0; t < N_TABLES; t++)
		for (int k = 0; k < 2; k++) {
			int prc = write_sql[t][k] ? sqlite3_prepare_v2(j->db, write_sql[t][k], -1,
			                                               &j->put[t][k], NULL)
			                          : SQLITE_OK;
			if (prc != SQLITE_OK) {
				rc = db_err(err, j->db, schema_code(prc), "store schema does not match");
				goto fail;
			}
		}
	if ((rc = read_folded(j, err)) != HF_OK)
		goto fail;
	int prc = sqlite3_prepare_v2(j->db,
	                             "INSERT INTO revisions(resource, revision) VALUES(?1, ?2)"
	                             " ON CONFLICT(resource) DO UPDATE"
	                             " SET revision = max(revision, excluded.revision)",
	                             -1, &j->put_fold, NULL);
	if (prc != SQLITE_OK) {
		rc = db_err(err, j->db, schema_code(prc), "store schema does not match");
		goto fail;
	}
	if (sqlite3_prepare_v2(j->db, "BEGIN IMMEDIATE", -1, &j->begin, NULL) != SQLITE_OK ||
	    sqlite3_prepare_v2(j->db, "COMMIT", -1, &j->commit, NULL) != SQLITE_OK ||
	    sqlite3_prepare_v2(j->db, "ROLLBACK", -1, &j->rollback, NULL) != SQLITE_OK) {
		rc = db_err(err, j->db, HF_ESTORAGE, "cannot prepare");
		goto fail;
	}
	if ((rc = open_db(path, SQLITE_OPEN_READONLY, &j->reader, err)) != HF_OK)
		goto fail;
	*out = j;
	return HF_OK;
fail:
	hf__journal_close(j);
	return rc;
}

void hf__journal_close(struct hf__journal *j)
{
	if (!j)
		return;
	for (int t = 0; t < N_TABLES; t++)
		for (int k = 0; k < 2; k++)
			sqlite3_finalize(j->put[t][k]);
	drop_unfolded(j);
	sqlite3_finalize(j->put_fold);
	sqlite3_finalize(j->begin);
	sqlite3_finalize(j->commit);
	sqlite3_finalize(j->rollback);
	sqlite3_close(j->reader);
	sqlite3_close(j->db);
	pthread_mutex_destroy(&j->read_lock);
	if (j->lock_fd >= 0)
		close(j->lock_fd); /* releases the flock */
	free(j->path);
	free(j);
}

/* Runs `sql` (its parameter ?1, if any, is j->folded) and hands each row to `row`. */
static int each_row(struct hf__journal *j, const char *sql,
                    int (*row)(struct hf__state *, sqlite3_stmt *, hf_error *),
                    struct hf__state *st, hf_error *err)
{
	sqlite3_stmt *stmt;
	int rc = sqlite3_prepare_v2(j->db, sql, -1, &stmt, NULL);
	if (rc != SQLITE_OK)
		return db_err(err, j->db, schema_code(rc), "store schema does not match");
	if (sqlite3_bind_parameter_count(stmt) > 0)
		sqlite3_bind_int64(stmt, 1, (sqlite3_int64)j->folded);
	int code = HF_OK;
	while ((rc = sqlite3_step(stmt)) == SQLITE_ROW)
		if ((code = row(st, stmt, err)) != HF_OK)
			break;
	if (code == HF_OK && rc != SQLITE_DONE)
		code = db_err(err, j->db, open_code(rc), "cannot read store");
	sqlite3_finalize(stmt);
	return code;
}

static int load_meta(struct hf__state *st, sqlite3_stmt *s, hf_error *err)
{
	return hf__state_load_meta(st, text(s, 0), text(s, 1), err);
}

/* The body (column 1) of a row of resources, holds or idempotency: a schema 2 row's text as
 * it is. HF_OK, or HF_ENOMEM. */
static int row_body(sqlite3_stmt *s, const void **row, size_t *len, hf_error *err)
{
	*row = sqlite3_column_blob(s, 1);
	*len = (size_t)sqlite3_column_bytes(s, 1);
	if (!*row && *len == 0 && sqlite3_errcode(sqlite3_db_handle(s)) == SQLITE_NOMEM)
		return hf__err_code(err, HF_ENOMEM);
	if (!*row)
		*row = "";
	return HF_OK;
}

/* `rc`, the load of the row at the statement; a damaged row is named by its key (column 0)
 * and table. */
static int named(int rc, sqlite3_stmt *s, const char *table, hf_error *err)
{
	if (rc == HF_ECORRUPT && err) {
		char why[sizeof(err->message)];
		snprintf(why, sizeof(why), "%s", err->message);
		hf__err(err, rc, "%s (row '%.60s' of table %s)", why, text(s, 0), table);
	}
	return rc;
}

static int load_resource(struct hf__state *st, sqlite3_stmt *s, hf_error *err)
{
	const void *row;
	size_t len;
	int rc = row_body(s, &row, &len, err);
	return rc ? rc : named(hf__state_load_resource(st, row, len, err), s, "resources", err);
}

/* SELECT id, body, rid: the hold's row number goes with it. */
static int load_hold(struct hf__state *st, sqlite3_stmt *s, hf_error *err)
{
	const void *row;
	size_t len;
	int rc = row_body(s, &row, &len, err);
	return rc ? rc
	          : named(hf__state_load_hold(st, sqlite3_column_int64(s, 2), row, len, err), s,
	                  "holds", err);
}

static int load_idem(struct hf__state *st, sqlite3_stmt *s, hf_error *err)
{
	const void *row;
	size_t len;
	int rc = row_body(s, &row, &len, err);
	return rc ? rc : named(hf__state_load_idem(st, row, len, err), s, "idempotency", err);
}

static int load_saga_type(struct hf__state *st, sqlite3_stmt *s, hf_error *err)
{
	return hf__state_load_saga_type(st, text(s, 0), err);
}

static int load_saga(struct hf__state *st, sqlite3_stmt *s, hf_error *err)
{
	return hf__state_load_saga(st, text(s, 0), err);
}

#define EVENT_COLUMNS "seq, at, type, resource, hold_id, data, revision, revisions"

/* Reads the event at the statement's row into *out (owned: hf__event_clear it). */
static int event_of_row(sqlite3_stmt *s, hf_event *out, hf_error *err)
{
	hf_event ev = {.seq = (uint64_t)sqlite3_column_int64(s, 0),
	               .at_ms = sqlite3_column_int64(s, 1),
	               .type = (char *)text(s, 2),
	               .resource = (char *)sqlite3_column_text(s, 3),
	               .hold_id = (char *)sqlite3_column_text(s, 4),
	               .data = (char *)text(s, 5)};
	if (hf__event_copy(out, &ev) != HF_OK)
		return hf__err_code(err, HF_ENOMEM);
	int rc = hf__event_revisions_from_text(out, sqlite3_column_int64(s, 6),
	                                       (const char *)sqlite3_column_text(s, 7), err);
	if (rc == HF_EPROTO) {
		char why[sizeof(err->message)];
		snprintf(why, sizeof(why), "%s", err->message);
		rc = hf__err(err, HF_ECORRUPT, "store file is damaged: %s", why);
	}
	if (rc != HF_OK)
		hf__event_clear(out);
	return rc;
}

static int load_event(struct hf__state *st, sqlite3_stmt *s, hf_error *err)
{
	hf_event ev;
	int rc = event_of_row(s, &ev, err);
	if (rc == HF_OK)
		rc = hf__state_load_event(st, &ev, err);
	hf__event_clear(&ev);
	return rc;
}

static int load_revision(struct hf__state *st, sqlite3_stmt *s, hf_error *err)
{
	return hf__state_load_revision(st, text(s, 0), sqlite3_column_int64(s, 1), err);
}

/* Sizes the state's maps for the rows to come: counting is a walk of each table's smallest
 * B-tree, cheaper than the rehashes of maps that grow by doubling to a million entries. */
static int load_sizes(struct hf__state *st, sqlite3_stmt *s, hf_error *err)
{
	return hf__state_load_reserve(st, (size_t)sqlite3_column_int64(s, 0),
	                              (size_t)sqlite3_column_int64(s, 1),
	                              (size_t)sqlite3_column_int64(s, 2),
	                              (size_t)sqlite3_column_int64(s, 3), err);
}

int hf__journal_load(struct hf__journal *j, struct hf__state *st, hf_error *err)
{
	int rc;
	if ((rc = each_row(j,
	                   "SELECT (SELECT count(*) FROM resources), (SELECT count(*) FROM holds),"
	                   " (SELECT count(*) FROM idempotency), (SELECT count(*) FROM revisions)",
	                   load_sizes, st, err)) ||
	    (rc = each_row(j, "SELECT key, value FROM meta", load_meta, st, err)) ||
	    (rc = each_row(j, "SELECT name, body FROM resources", load_resource, st, err)) ||
	    /* In the file's order: the state sorts its retention lists at the end. */
	    (rc = each_row(j, "SELECT id, body, rid FROM holds", load_hold, st, err)) ||
	    (rc = each_row(j, "SELECT key, body FROM idempotency", load_idem, st, err)) ||
	    (rc = each_row(j, "SELECT resource, revision FROM revisions", load_revision, st, err)) ||
	    /* the events after the last fold carry the rest (the greater of both is taken) */
	    (rc = each_row(j, FOLD_SELECT_SQL, load_revision, st, err)) ||
	    (rc = each_row(j,
	                   "SELECT " EVENT_COLUMNS " FROM events"
	                   " WHERE seq > (SELECT coalesce(max(seq), 0) FROM events) - 65536"
	                   " ORDER BY seq",
	                   load_event, st, err)) ||
	    (rc = each_row(j, "SELECT body FROM saga_types", load_saga_type, st, err)) ||
	    (rc = each_row(j, "SELECT body FROM sagas", load_saga, st, err)))
		return rc;
	hf__state_load_done(st);
	return HF_OK;
}

/* With its length: given -1, SQLite measures the text a byte at a time (three instructions a
 * byte, an event's data of ~150 bytes among them); libc's strlen takes a word at a time. */
static int bind_text(sqlite3_stmt *s, int i, const char *v)
{
	return v ? sqlite3_bind_text(s, i, v, (int)strlen(v), SQLITE_STATIC)
	         : sqlite3_bind_null(s, i);
}

/* Binds an event's revisions (?7, ?8): the counters are folded from them later. */
static int write_revisions(sqlite3_stmt *s, const hf_event *ev)
{
	int rc = ev->resource ? sqlite3_bind_int64(s, 7, ev->revision) : sqlite3_bind_null(s, 7);
	if (rc == SQLITE_OK && ev->n_revisions > 1) {
		struct hf__jw w;
		hf__jw_init(&w);
		for (size_t i = 0; i < ev->n_revisions; i++) {
			if (i)
				hf__jw_lit(&w, ",");
			else
				hf__jw_lit(&w, "{");
			hf__jw_str(&w, ev->revisions[i].resource);
			hf__jw_lit(&w, ":");
			hf__jw_int(&w, ev->revisions[i].revision);
		}
		hf__jw_lit(&w, "}");
		char *list = hf__jw_finish(&w, NULL);
		rc = list ? sqlite3_bind_text(s, 8, list, -1, free) : SQLITE_NOMEM;
	} else if (rc == SQLITE_OK) {
		rc = sqlite3_bind_null(s, 8);
	}
	return rc;
}

static int write_one(struct hf__journal *j, const struct hf__jrec *rec)
{
	/* Reset after each step, and each of its parameters bound again every time (an event's ?8
	 * too): neither a reset before nor a clearing of the bindings after is needed. */
	sqlite3_stmt *s = j->put[rec->table][rec->remove ? 1 : 0];
	int rc;
	if (rec->table == HF__J_EVENT) {
		const hf_event *ev = &rec->event->ev;
		rc = sqlite3_bind_int64(s, 1, (sqlite3_int64)ev->seq);
		rc = rc ? rc : sqlite3_bind_int64(s, 2, ev->at_ms);
		rc = rc ? rc : bind_text(s, 3, ev->type);
		rc = rc ? rc : bind_text(s, 4, ev->resource);
		rc = rc ? rc : bind_text(s, 5, ev->hold_id);
		rc = rc ? rc : bind_text(s, 6, ev->data);
		rc = rc ? rc : write_revisions(s, ev);
		if (rc == SQLITE_OK)
			note_revisions(j, ev);
	} else {
		rc = bind_text(s, 1, rec->key);
		if (!rec->remove && rc == SQLITE_OK)
			rc = rec->body_len ? sqlite3_bind_blob(s, 2, rec->body, (int)rec->body_len,
			                                       SQLITE_STATIC)
			                   : bind_text(s, 2, rec->body);
		if (rec->table == HF__J_HOLD && rc == SQLITE_OK)
			rc = sqlite3_bind_int64(s, 3, rec->row);
	}
	if (rc == SQLITE_OK)
		rc = sqlite3_step(s) == SQLITE_DONE ? SQLITE_OK : SQLITE_ERROR;
	sqlite3_reset(s);
	return rc;
}

/* Ends a failed transaction: the file keeps what was durable before it (and the note of
 * unfolded revisions, which has this transaction's, is dropped). */
static void rollback(struct hf__journal *j)
{
	drop_unfolded(j);
	sqlite3_reset(j->commit);
	if (!sqlite3_get_autocommit(j->db)) {
		sqlite3_reset(j->rollback);
		sqlite3_step(j->rollback);
		sqlite3_reset(j->rollback);
	}
}

/* Commits the open transaction (with the injected faults); rolls back on failure. */
static int commit(struct hf__journal *j, hf_error *err)
{
	if (faults_before_commit(&j->faults)) {
		rollback(j);
		return hf__err(err, HF_ESTORAGE,
		               "journal commit failed: database or disk is full (injected fault)");
	}
	sqlite3_reset(j->commit);
	if (sqlite3_step(j->commit) != SQLITE_DONE) {
		int code = db_err(err, j->db, HF_ESTORAGE, "journal commit failed");
		rollback(j);
		return code;
	}
	sqlite3_reset(j->commit);
	return HF_OK;
}

int hf__journal_write(struct hf__journal *j, const struct hf__jrec *list, hf_error *err)
{
	sqlite3_reset(j->begin);
	if (sqlite3_step(j->begin) != SQLITE_DONE) {
		int code = db_err(err, j->db, HF_ESTORAGE, "journal begin failed");
		rollback(j);
		return code;
	}
	for (const struct hf__jrec *rec = list; rec; rec = rec->next)
		if (write_one(j, rec) != SQLITE_OK) {
			int code = db_err(err, j->db, HF_ESTORAGE, "journal write failed");
			rollback(j);
			return code;
		}
	return commit(j, err);
}

int hf__journal_probe(struct hf__journal *j, int64_t now, hf_error *err)
{
	struct hf__jrec rec = {.table = HF__J_META, .key = "probe"};
	char body[32];
	snprintf(body, sizeof(body), "%lld", (long long)now);
	rec.body = body;
	return hf__journal_write(j, &rec, err);
}

int hf__journal_read_events(struct hf__journal *j, uint64_t after, uint64_t upto, size_t limit,
                            hf_event **events, size_t *n, hf_error *err)
{
	*events = NULL;
	*n = 0;
	if (upto <= after)
		return HF_OK;
	if (upto - after < limit)
		limit = (size_t)(upto - after);
	hf_event *out = calloc(limit ? limit : 1, sizeof(*out));
	if (!out)
		return hf__err_code(err, HF_ENOMEM);
	pthread_mutex_lock(&j->read_lock);
	sqlite3_stmt *s = NULL;
	int code = HF_OK;
	if (sqlite3_prepare_v2(j->reader,
	                       "SELECT " EVENT_COLUMNS " FROM events"
	                       " WHERE seq > ?1 AND seq <= ?2 ORDER BY seq LIMIT ?3",
	                       -1, &s, NULL) != SQLITE_OK) {
		code = db_err(err, j->reader, HF_ESTORAGE, "cannot read events");
		goto out;
	}
	sqlite3_bind_int64(s, 1, (sqlite3_int64)after);
	sqlite3_bind_int64(s, 2, (sqlite3_int64)upto);
	sqlite3_bind_int64(s, 3, (sqlite3_int64)limit);
	int rc;
	while (*n < limit && (rc = sqlite3_step(s)) == SQLITE_ROW) {
		if ((code = event_of_row(s, &out[*n], err)) != HF_OK)
			goto out;
		(*n)++;
	}
out:
	sqlite3_finalize(s);
	pthread_mutex_unlock(&j->read_lock);
	if (code != HF_OK) {
		for (size_t i = 0; i < *n; i++)
			hf__event_clear(&out[i]);
		free(out);
		*n = 0;
		return code;
	}
	*events = out;
	return HF_OK;
}

/* ---- Event retention (docs/events.md, "Retention"). -------------------------------- */

/* Folds the events after j->folded into the table revisions, in the caller's transaction;
 * *upto: the newest event folded (the caller sets j->folded to it once committed). */
static int fold_in(struct hf__journal *j, uint64_t *upto)
{
	int rc = SQLITE_OK;
	int64_t newest = query_int(j->db, "SELECT coalesce(max(seq), 0) FROM events", 0, 0, &rc);
	*upto = j->folded;
	if (rc != SQLITE_OK || newest <= (int64_t)j->folded)
		return rc;
	if (!j->unfolded_whole) {
		query_int(j->db, FOLD_SQL, (int64_t)j->folded, 0, &rc);
	} else {
		size_t pos = 0;
		void *cur = NULL;
		const struct unfolded *u;
		sqlite3_stmt *s = j->put_fold;
		while (rc == SQLITE_OK && (u = hf__map_next(&j->unfolded, &pos, &cur))) {
			sqlite3_reset(s);
			rc = sqlite3_bind_text(s, 1, u->name, -1, SQLITE_STATIC);
			rc = rc ? rc : sqlite3_bind_int64(s, 2, u->revision);
			if (rc == SQLITE_OK && (rc = sqlite3_step(s)) == SQLITE_DONE)
				rc = SQLITE_OK;
			sqlite3_clear_bindings(s);
			sqlite3_reset(s);
		}
	}
	query_int(j->db, "INSERT OR REPLACE INTO meta(key, value) VALUES('revisions_upto', ?1)",
	          newest, 0, &rc);
	if (rc == SQLITE_OK)
		*upto = (uint64_t)newest;
	return rc;
}

/* Ends a transaction of maintenance: commits it after `rc` (SQLite's) went well, else (or when
 * the commit fails) rolls it back. HF_OK, or an error in *err saying `what` failed. */
static int end_maintenance(struct hf__journal *j, int rc, const char *what, hf_error *err)
{
	if (rc == SQLITE_OK)
		rc = sqlite3_exec(j->db, "COMMIT", NULL, NULL, NULL);
	if (rc == SQLITE_OK)
		return HF_OK;
	int code = db_err(err, j->db, HF_ESTORAGE, what);
	if (!sqlite3_get_autocommit(j->db))
		sqlite3_exec(j->db, "ROLLBACK", NULL, NULL, NULL);
	return code;
}

/* After a fold's commit: the table is whole up to `upto`, and the note starts again. */
static void folded_to(struct hf__journal *j, uint64_t upto)
{
	drop_unfolded(j);
	j->unfolded_whole = true;
	j->folded = upto;
}

int hf__journal_fold(struct hf__journal *j, hf_error *err)
{
	uint64_t upto = j->folded;
	int rc = sqlite3_exec(j->db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
	if (rc == SQLITE_OK)
		rc = fold_in(j, &upto);
	if ((rc = end_maintenance(j, rc, "cannot fold event revisions", err)) == HF_OK)
		folded_to(j, upto);
	return rc;
}

uint64_t hf__journal_folded(const struct hf__journal *j)
{
	return j->folded;
}

uint64_t hf__journal_trimmed_upto(struct hf__journal *j)
{
	int rc = SQLITE_OK;
	int64_t oldest = query_int(j->db, "SELECT coalesce(min(seq), 0) FROM events", 0, 0, &rc);
	return rc == SQLITE_OK && oldest > 1 ? (uint64_t)oldest - 1 : 0;
}

/* The relays' and projections' checkpoints (core/retention.h): every resource in their
 * name range, judged by hf__checkpoint_note. HF_OK or an error in *err. */
static int note_checkpoints(sqlite3 *db, struct hf__checkpoints *cp, hf_error *err)
{
	sqlite3_stmt *s = NULL;
	int rc = sqlite3_prepare_v2(db,
	                            "SELECT body FROM resources WHERE name >= '" HF__CHECKPOINT_FROM
	                            "' AND name < '" HF__CHECKPOINT_TO "'",
	                            -1, &s, NULL);
	int code = HF_OK;
	while (rc == SQLITE_OK && (rc = sqlite3_step(s)) == SQLITE_ROW) {
		hf_resource res;
		code = hf__row_resource_decode(sqlite3_column_blob(s, 0),
		                               (size_t)sqlite3_column_bytes(s, 0), &res, err);
		if (code != HF_OK)
			break;
		hf__checkpoint_note(cp, res.name, res.meta);
		hf__resource_clear(&res);
		rc = SQLITE_OK;
	}
	sqlite3_finalize(s);
	if (code == HF_OK && rc != SQLITE_DONE)
		code = db_err(err, db, HF_ESTORAGE, "cannot trim events");
	return code;
}

int hf__journal_trim_events(struct hf__journal *j, const struct hf__trim_policy *pol,
                            int64_t now, uint64_t last_seq, struct hf__trim_plan *plan,
                            uint64_t *trimmed, hf_error *err)
{
	*trimmed = 0;
	int rc = SQLITE_OK;
	int64_t aged = 0;
	if (pol->keep_ms > 0)
		aged = query_int(j->db, "SELECT coalesce(max(seq), 0) FROM events WHERE at < ?1",
		                 now - pol->keep_ms, 0, &rc);
	struct hf__checkpoints cp = {0};
	if (rc != SQLITE_OK)
		return db_err(err, j->db, HF_ESTORAGE, "cannot trim events");
	int code = note_checkpoints(j->db, &cp, err);
	if (code != HF_OK)
		return code;
	hf__trim_plan(pol, last_seq, aged > 0 ? (uint64_t)aged : 0, &cp, plan);
	int64_t oldest = query_int(j->db, "SELECT coalesce(min(seq), 0) FROM events", 0, 0, &rc);
	if (rc != SQLITE_OK)
		return db_err(err, j->db, HF_ESTORAGE, "cannot trim events");
	if (oldest == 0 || plan->upto < (uint64_t)oldest)
		return HF_OK;
	/* The revisions of the events to go are folded into their counters first, in the same
	 * transaction: a resource's revisions go on after its events are trimmed. */
	uint64_t folded = j->folded, deleted = 0;
	rc = sqlite3_exec(j->db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
	if (rc == SQLITE_OK)
		rc = fold_in(j, &folded);
	query_int(j->db, "DELETE FROM events WHERE seq <= ?1", (int64_t)plan->upto, 0, &rc);
	if (rc == SQLITE_OK)
		deleted = (uint64_t)sqlite3_changes(j->db);
	if ((code = end_maintenance(j, rc, "cannot trim events", err)) != HF_OK)
		return code;
	folded_to(j, folded);
	*trimmed = deleted;
	return HF_OK;
}
