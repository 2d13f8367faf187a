/*
 * store_checkpoint_test.c — the embedded store's truncating WAL checkpoint: while a reader
 * holds the WAL (here a second SQLite connection in a read transaction, as a slow reader of
 * old events would), no checkpoint can empty it and it grows; once past CHECKPOINT_TRUNCATE
 * frames, commits go on without waiting for the reader each time; once it is gone, the writer's
 * next checkpoint copies the WAL back and truncates the file, and the store reads back whole. Through the public API, with SQLite only as that
 * reader and to read the page size.
 */
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "holdfast.h"

/* src/engine/embedded/journal.c CHECKPOINT_TRUNCATE: from this many WAL frames the writer's
 * checkpoint waits for readers and truncates. Follow it if it changes. */
#define TRUNCATE_FRAMES 16384
#define META_BYTES 60000 /* under HF_META_MAX: a put writes some 30 pages */
#define BATCH 32         /* puts submitted together: a few commits (group commit) */
#define STALLED_PUTS 100 /* puts while the reader holds the WAL past the bound */

static char dir[] = "/tmp/hf-checkpoint.XXXXXX";
static char path[256], wal[272], url[272];
static char *meta;
static int outstanding;

static hf_store *open_store(void)
{
	hf_store *st = NULL;
	hf_error err;
	if (hf_open(url, NULL, &st, &err) != HF_OK)
		fail_msg("open: %s", err.message);
	return st;
}

static void on_put(void *arg, hf_reply *reply)
{
	(void)arg;
	if (reply->error.code)
		fail_msg("put: %s", reply->error.message);
	hf_reply_free(reply);
	outstanding--;
}

/* Puts resources first..first+n-1 (big metadata) together and waits for their answers. */
static void put_many(hf_store *st, int first, int n)
{
	for (int i = first; i < first + n; i++) {
		char name[32];
		snprintf(name, sizeof(name), "r%06d", i);
		hf_request req;
		hf_request_init(&req, HF_OP_PUT_RESOURCE);
		req.name = name;
		req.capacity = 1;
		req.meta = meta;
		hf_error err;
		if (hf_submit(st, &req, on_put, NULL, NULL, &err) != HF_OK)
			fail_msg("submit: %s", err.message);
		outstanding++;
	}
	while (outstanding) {
		struct pollfd p = {.fd = hf_store_fd(st), .events = POLLIN};
		poll(&p, 1, -1);
		hf_store_dispatch(st);
	}
}

static long long wal_bytes(void)
{
	struct stat sb;
	return stat(wal, &sb) == 0 ? (long long)sb.st_size : 0;
}

static void test_wal_truncated_after_readers(void **state)
{
	(void)state;
	hf_store *st = open_store();
	put_many(st, 0, 1);
	sqlite3 *reader = NULL;
	assert_int_equal(sqlite3_open_v2(path, &reader, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
	sqlite3_stmt *s = NULL;
	assert_int_equal(sqlite3_prepare_v2(reader, "PRAGMA page_size", -1, &s, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_step(s), SQLITE_ROW);
	long long frame = sqlite3_column_int64(s, 0) + 24; /* a WAL frame: its header and page */
	sqlite3_finalize(s);
	/* The reader's snapshot: every checkpoint stops at its end, and the WAL cannot start over. */
	assert_int_equal(sqlite3_exec(reader, "BEGIN; SELECT count(*) FROM meta;", NULL, NULL, NULL),
	                 SQLITE_OK);

	/* Up to the bound in batches, and across it one put at a time: the commit that crosses is
	 * then the last one asked for, and its checkpoint waits for the reader, which ends as soon
	 * as its answer is in. */
	int next = 1;
	long long grew = 0;
	while ((wal_bytes() - 32) / frame + 2 * grew < TRUNCATE_FRAMES) {
		long long before = wal_bytes();
		put_many(st, next, BATCH);
		next += BATCH;
		grew = (wal_bytes() - before) / frame;
	}
	while ((wal_bytes() - 32) / frame < TRUNCATE_FRAMES)
		put_many(st, next++, 1);
	/* Past the bound with the reader still there, commits go on without each one waiting for
	 * it: the truncating checkpoint is tried every CHECKPOINT_PAGES frames and waits 200 ms.
	 * It used to be tried after every commit and to wait SQLite's 5 s busy timeout each time;
	 * these puts then took over 8 minutes, which the test's CTest TIMEOUT catches (no clock
	 * is read here). */
	for (int i = 0; i < STALLED_PUTS; i++)
		put_many(st, next++, 1);
	long long big = wal_bytes();
	assert_int_equal(sqlite3_exec(reader, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(reader);

	/* The writer checkpoints after the answers of a commit, before its next commit: once a put
	 * is answered, the checkpoint after the previous one is done. Should the reader have ended
	 * only after the writer gave up waiting for it (the busy timeout), a later checkpoint
	 * truncates, within 1,000 pages (CHECKPOINT_PAGES): puts go on until then, no longer. */
	long long limit = big + 1100 * frame;
	while (wal_bytes() >= big && wal_bytes() < limit)
		put_many(st, next++, 1);
	long long after = wal_bytes();
	if (after >= big / 8)
		fail_msg("the WAL stayed at %lld bytes (%lld at the bound)", after, big);
	hf_close(st);

	st = open_store(); /* everything is still there */
	hf_request req;
	hf_request_init(&req, HF_OP_LIST_RESOURCES);
	req.limit = HF_LIST_MAX;
	char cursor[32] = "";
	int listed = 0;
	for (bool more = true; more;) {
		hf_reply *r = NULL;
		assert_int_equal(hf_call(st, &req, &r), HF_OK);
		for (size_t i = 0; i < r->n_resources; i++)
			assert_string_equal(r->resources[i].meta, meta);
		listed += (int)r->n_resources;
		more = r->more && r->n_resources;
		if (more)
			snprintf(cursor, sizeof(cursor), "%s", r->resources[r->n_resources - 1].name);
		hf_reply_free(r);
		req.cursor = cursor;
	}
	assert_int_equal(listed, next);
	hf_close(st);
	printf("WAL: %lld bytes at the bound, %lld after; %d puts\n", big, after, next);
}

int main(void)
{
	if (!mkdtemp(dir))
		return 1;
	snprintf(path, sizeof(path), "%s/s.db", dir);
	snprintf(wal, sizeof(wal), "%s-wal", path);
	snprintf(url, sizeof(url), "file:%s", path);
	meta = malloc(META_BYTES + 16);
	if (!meta)
		return 1;
	/* {"p":"..."}: text SQLite cannot shrink (a varying pattern) */
	size_t n = (size_t)snprintf(meta, 7, "{\"p\":\"");
	for (size_t i = 0; i < META_BYTES; i++)
		meta[n++] = (char)('a' + (i * 7 + i / 26) % 26);
	memcpy(meta + n, "\"}", 3);
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_wal_truncated_after_readers),
	};
	int rc = cmocka_run_group_tests(tests, NULL, NULL);
	static const char *const suffixes[] = {"", "-wal", "-shm", ".lock"};
	for (size_t i = 0; i < 4; i++) {
		char p[300];
		snprintf(p, sizeof(p), "%s%s", path, suffixes[i]);
		unlink(p);
	}
	rmdir(dir);
	free(meta);
	return rc;
}
