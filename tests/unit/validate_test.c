/*
 * validate_test.c — request validation through the public entry point: hf_submit refuses
 * each bad field with HF_EINVAL, synchronously, with a message, and never calls `done`.
 * The boundary values just inside each limit are accepted (controls), so a validator that
 * refuses everything fails here too.
 */
#include <errno.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "holdfast.h"

struct fx {
	char dir[256];
	char url[300];
	hf_store *st;
};

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof *f);
	const char *tmp = getenv("TMPDIR");
	snprintf(f->dir, sizeof f->dir, "%s/hfunit-XXXXXX", tmp && *tmp ? tmp : "/tmp");
	if (!mkdtemp(f->dir))
		return -1;
	snprintf(f->url, sizeof f->url, "file:%s/store.db", f->dir);
	hf_error err;
	if (hf_open(f->url, NULL, &f->st, &err) != HF_OK) {
		fprintf(stderr, "open %s: %s\n", f->url, err.message);
		return -1;
	}
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;
	if (!f)
		return 0;
	hf_close(f->st);
	char p[400];
	const char *sfx[] = {"", "-wal", "-shm", "-journal"};
	for (size_t i = 0; i < 4; i++) {
		snprintf(p, sizeof p, "%s/store.db%s", f->dir, sfx[i]);
		unlink(p);
	}
	rmdir(f->dir);
	free(f);
	return 0;
}

#define ST (((struct fx *)*state)->st)

struct done_rec {
	int calls;
	hf_reply *reply;
};

static void on_done(void *arg, hf_reply *reply)
{
	struct done_rec *d = arg;
	d->calls++;
	hf_reply_free(d->reply);
	d->reply = reply;
}

/* The request is refused with `want` at submit time and `done` never runs. */
static void expect_refused_at(hf_store *st, const hf_request *q, int want, const char *what,
                              int line)
{
	struct done_rec d = {0};
	hf_error err;
	memset(&err, 0, sizeof err);
	uint64_t id = 0;
	int rc = hf_submit(st, q, on_done, &d, &id, &err);
	if (rc != want) {
		/* drain the call we started so nothing leaks into the next check */
		for (int i = 0; rc == HF_OK && d.calls == 0 && i < 2000; i++) {
			struct pollfd p = {.fd = hf_store_fd(st), .events = POLLIN};
			poll(&p, 1, 10);
			hf_store_dispatch(st);
		}
		int got = rc == HF_OK && d.reply ? d.reply->error.code : rc;
		hf_reply_free(d.reply);
		fail_msg("line %d: %s: hf_submit gave %s (reply %s), expected %s", line, what,
		         hf_err_name(rc), hf_err_name(got), hf_err_name(want));
	}
	assert_int_equal(err.code, want);
	if (err.message[0] == '\0')
		fail_msg("line %d: %s: no message", line, what);
	hf_store_dispatch(st);
	assert_int_equal(d.calls, 0);
}
#define INVAL(q, what) expect_refused_at(ST, (q), HF_EINVAL, (what), __LINE__)
/* A hold id that cannot exist is refused up front as hold_not_found (validate.c's choice). */
#define NOHOLD(q, what) expect_refused_at(ST, (q), HF_ENOHOLD, (what), __LINE__)

/* The request passes validation and completes with `want` (a control). */
static void expect_rc_at(hf_store *st, const hf_request *q, int want, const char *what, int line)
{
	hf_reply *r = NULL;
	int rc = hf_call(st, q, &r);
	if (rc != want)
		fail_msg("line %d: %s: got %s \"%s\", expected %s", line, what, hf_err_name(rc),
		         r ? r->error.message : "", hf_err_name(want));
	hf_reply_free(r);
}
#define EXPECT(q, want, what) expect_rc_at(ST, (q), (want), (what), __LINE__)

static char *repeat(char c, size_t n)
{
	char *s = malloc(n + 1);
	memset(s, c, n);
	s[n] = '\0';
	return s;
}

/* Bad names: every place a resource or owner name goes. */
static const char *const bad_names[] = {
	"",                 /* empty */
	"a\x01",            /* C0 control */
	"a\nb",             /* newline */
	"tab\there",        /* tab */
	"\x1b[31m",         /* escape */
	"del\x7f",          /* DEL */
	"c1\xc2\x85",       /* U+0085, a C1 control */
	"\xff",             /* not UTF-8 */
	"a\x80z",           /* stray continuation byte */
	"\xc0\xaf",         /* overlong '/' */
	"\xe0\x80\xaf",     /* overlong, 3 bytes */
	"\xed\xa0\x80",     /* UTF-16 surrogate */
	"\xe2\x82",         /* truncated sequence */
	"\xf4\x90\x80\x80", /* beyond U+10FFFF */
	"\xf8\x88\x80\x80\x80", /* 5-byte form */
};
#define N_BAD_NAMES (sizeof bad_names / sizeof bad_names[0])

static void put_resource_fields(void **state)
{
	hf_request q;
	hf_request_init(&q, HF_OP_PUT_RESOURCE);
	q.capacity = 1;
	q.name = NULL;
	INVAL(&q, "NULL name");
	for (size_t i = 0; i < N_BAD_NAMES; i++) {
		q.name = bad_names[i];
		char what[64];
		snprintf(what, sizeof what, "bad name #%zu", i);
		INVAL(&q, what);
	}
	char *n256 = repeat('n', 256), *n255 = repeat('n', 255);
	q.name = n256;
	INVAL(&q, "256-byte name");
	q.name = n255;
	EXPECT(&q, HF_OK, "255-byte name");
	/* 255 bytes of multi-byte UTF-8 is fine; 256 bytes is not, whatever the characters */
	char u[300] = "";
	for (int i = 0; i < 85; i++)
		strcat(u, "\xe2\x82\xac"); /* 85 x 3 = 255 bytes */
	q.name = u;
	EXPECT(&q, HF_OK, "255 bytes of euro signs");
	strcat(u, "x");
	INVAL(&q, "256 bytes with multi-byte characters");
	q.name = "caf\xc3\xa9 \xf0\x9f\x8e\xab seat/1:A";
	EXPECT(&q, HF_OK, "UTF-8 name with spaces and punctuation");

	q.name = "cap";
	int64_t bad_caps[] = {0, -1, HF_CAPACITY_MAX + 1LL, INT64_MIN, INT64_MAX};
	for (size_t i = 0; i < sizeof bad_caps / sizeof bad_caps[0]; i++) {
		q.capacity = bad_caps[i];
		INVAL(&q, "capacity out of range");
	}
	q.capacity = HF_CAPACITY_MAX;
	EXPECT(&q, HF_OK, "capacity max");
	q.capacity = 1;
	EXPECT(&q, HF_OK, "capacity 1");

	q.if_version = -2;
	INVAL(&q, "if_version -2");
	q.if_version = -1;

	const char *bad_meta[] = {"[]",    "1",          "\"s\"", "null", "true", "{",
	                          "{\"a\":}", "{\"a\":1}}", "",     "{} {}", "{'a':1}"};
	for (size_t i = 0; i < sizeof bad_meta / sizeof bad_meta[0]; i++) {
		q.meta = bad_meta[i];
		char what[64];
		snprintf(what, sizeof what, "meta \"%s\"", bad_meta[i]);
		INVAL(&q, what);
	}
	/* {"k":"xxx...x"} of exactly HF_META_MAX bytes, then one more */
	size_t fill = HF_META_MAX - strlen("{\"k\":\"\"}");
	char *big = malloc(HF_META_MAX + 2);
	memcpy(big, "{\"k\":\"", 6);
	memset(big + 6, 'x', fill);
	memcpy(big + 6 + fill, "\"}", 3);
	assert_int_equal(strlen(big), HF_META_MAX);
	q.meta = big;
	EXPECT(&q, HF_OK, "meta of exactly 64 KiB");
	memset(big + 6, 'x', fill + 1);
	memcpy(big + 6 + fill + 1, "\"}", 3);
	assert_int_equal(strlen(big), HF_META_MAX + 1);
	INVAL(&q, "meta of 64 KiB + 1");
	q.meta = "{\"nested\":{\"a\":[1,2,{\"b\":null}]}}";
	EXPECT(&q, HF_OK, "nested meta object");
	free(big);
	free(n255);
	free(n256);
}

static void name_only_ops(void **state)
{
	hf_op ops[] = {HF_OP_GET_RESOURCE, HF_OP_DELETE_RESOURCE};
	for (size_t k = 0; k < 2; k++) {
		hf_request q;
		hf_request_init(&q, ops[k]);
		q.name = NULL;
		INVAL(&q, "NULL name");
		for (size_t i = 0; i < N_BAD_NAMES; i++) {
			q.name = bad_names[i];
			INVAL(&q, "bad name");
		}
		q.name = "fine";
		EXPECT(&q, HF_ENORESOURCE, "valid name of a missing resource");
	}
	hf_request q;
	hf_request_init(&q, HF_OP_DELETE_RESOURCE);
	q.name = "fine";
	q.if_version = -5;
	INVAL(&q, "delete if_version -5");
}

static void bad_ops(void **state)
{
	hf_request q;
	hf_request_init(&q, (hf_op)0);
	INVAL(&q, "op 0");
	hf_request_init(&q, (hf_op)99);
	INVAL(&q, "op 99");
}

/* An acquire request filled with valid values, to break one field at a time. */
struct acq {
	hf_request q;
	hf_claim c[HF_CLAIMS_MAX + 1];
	char names[HF_CLAIMS_MAX + 1][16];
};

static void acq_init(struct acq *a, size_t n)
{
	hf_request_init(&a->q, HF_OP_ACQUIRE);
	for (size_t i = 0; i < HF_CLAIMS_MAX + 1; i++) {
		snprintf(a->names[i], sizeof a->names[i], "res-%02zu", i);
		a->c[i].name = a->names[i];
		a->c[i].units = 1;
		a->c[i].capacity = 5;
	}
	a->q.acquire.owner = "owner";
	a->q.acquire.claims = a->c;
	a->q.acquire.n_claims = n;
	a->q.acquire.ttl_ms = 1000;
	a->q.acquire.wait_ms = 0;
	a->q.acquire.mode = HF_MODE_UNITS;
}

static void acquire_claims(void **state)
{
	struct acq a;
	acq_init(&a, 1);
	EXPECT(&a.q, HF_OK, "control");
	a.q.acquire.n_claims = 0;
	INVAL(&a.q, "no claims");
	a.q.acquire.n_claims = HF_CLAIMS_MAX + 1;
	INVAL(&a.q, "65 claims");
	a.q.acquire.n_claims = 1;
	a.q.acquire.claims = NULL;
	INVAL(&a.q, "NULL claims");
	a.q.acquire.claims = a.c;

	acq_init(&a, 3);
	a.c[2].name = a.names[0];
	INVAL(&a.q, "duplicate claim names");
	acq_init(&a, 2);
	a.c[1].name = "res-00"; /* same bytes, other pointer */
	INVAL(&a.q, "duplicate claim names (same text)");

	for (size_t i = 0; i < N_BAD_NAMES; i++) {
		acq_init(&a, 2);
		a.c[1].name = bad_names[i];
		INVAL(&a.q, "bad claim name");
	}
	acq_init(&a, 1);
	char *n256 = repeat('c', 256);
	a.c[0].name = n256;
	INVAL(&a.q, "256-byte claim name");
	free(n256);
	acq_init(&a, 1);
	a.c[0].name = NULL;
	INVAL(&a.q, "NULL claim name");

	int64_t bad_units[] = {0, -1, INT64_MIN};
	for (size_t i = 0; i < 3; i++) {
		acq_init(&a, 2);
		a.c[1].units = bad_units[i];
		INVAL(&a.q, "units <= 0");
	}
	/* units are ignored in shared and exclusive mode */
	acq_init(&a, 1);
	a.c[0].name = "ignored-units";
	a.c[0].units = 0;
	a.q.acquire.mode = HF_MODE_SHARED;
	EXPECT(&a.q, HF_OK, "shared with units 0");

	int64_t bad_caps[] = {-1, HF_CAPACITY_MAX + 1LL, INT64_MIN};
	for (size_t i = 0; i < 3; i++) {
		acq_init(&a, 1);
		a.c[0].capacity = bad_caps[i];
		INVAL(&a.q, "claim capacity out of range");
	}

	acq_init(&a, HF_CLAIMS_MAX);
	EXPECT(&a.q, HF_OK, "64 claims");
}

static void acquire_fields(void **state)
{
	struct acq a;
	for (size_t i = 0; i < N_BAD_NAMES; i++) {
		acq_init(&a, 1);
		a.q.acquire.owner = bad_names[i];
		INVAL(&a.q, "bad owner");
	}
	acq_init(&a, 1);
	char *o256 = repeat('o', 256), *o255 = repeat('o', 255);
	a.q.acquire.owner = o256;
	INVAL(&a.q, "256-byte owner");
	a.q.acquire.owner = o255;
	EXPECT(&a.q, HF_OK, "255-byte owner");
	free(o256);
	free(o255);

	int64_t bad_ttl[] = {0, -1, HF_TTL_MAX_MS + 1, INT64_MIN};
	for (size_t i = 0; i < 4; i++) {
		acq_init(&a, 1);
		a.q.acquire.ttl_ms = bad_ttl[i];
		INVAL(&a.q, "ttl out of range");
	}
	acq_init(&a, 1);
	a.q.acquire.ttl_ms = HF_TTL_MAX_MS;
	EXPECT(&a.q, HF_OK, "ttl max");
	acq_init(&a, 1);
	a.q.acquire.ttl_ms = 1;
	a.c[0].units = 5;
	a.c[0].name = "ttl-one";
	EXPECT(&a.q, HF_OK, "ttl 1 ms");

	int64_t bad_wait[] = {-1, HF_WAIT_MAX_MS + 1, INT64_MIN};
	for (size_t i = 0; i < 3; i++) {
		acq_init(&a, 1);
		a.q.acquire.wait_ms = bad_wait[i];
		INVAL(&a.q, "wait out of range");
	}

	int bad_modes[] = {3, -1, 100};
	for (size_t i = 0; i < 3; i++) {
		acq_init(&a, 1);
		a.q.acquire.mode = (hf_mode)bad_modes[i];
		INVAL(&a.q, "bad mode");
	}

	char *k256 = repeat('k', 256), *k255 = repeat('k', 255);
	const char *bad_keys[] = {"", k256, "key\x01", "key\n", "caf\xc3\xa9", "del\x7f", "\xff"};
	for (size_t i = 0; i < sizeof bad_keys / sizeof bad_keys[0]; i++) {
		acq_init(&a, 1);
		a.q.acquire.idempotency_key = bad_keys[i];
		INVAL(&a.q, "bad idempotency key");
	}
	acq_init(&a, 1);
	a.c[0].name = "keyed";
	a.q.acquire.idempotency_key = k255;
	EXPECT(&a.q, HF_OK, "255-byte key");
	acq_init(&a, 1);
	a.c[0].name = "keyed2";
	a.q.acquire.idempotency_key = "order:42/retry-1~!";
	EXPECT(&a.q, HF_OK, "printable punctuation in key");
	free(k256);
	free(k255);
}

static void hold_op_fields(void **state)
{
	hf_request q;
	hf_request_init(&q, HF_OP_EXTEND);
	q.hold_id = "0123456789abcdef0123456789abcdef";
	q.token = "0123456789abcdef0123456789abcdef";
	int64_t bad_ttl[] = {0, -1, HF_TTL_MAX_MS + 1};
	for (size_t i = 0; i < 3; i++) {
		q.ttl_ms = bad_ttl[i];
		INVAL(&q, "extend ttl out of range");
	}
	q.ttl_ms = 1000;
	EXPECT(&q, HF_ENOHOLD, "valid extend of a missing hold");
	hf_op ops[] = {HF_OP_EXTEND, HF_OP_CONFIRM, HF_OP_RELEASE, HF_OP_GET_HOLD};
	for (size_t i = 0; i < 4; i++) {
		hf_request_init(&q, ops[i]);
		q.ttl_ms = 1000;
		q.token = "0123456789abcdef0123456789abcdef";
		q.hold_id = NULL;
		NOHOLD(&q, "NULL hold id");
		q.hold_id = "0123456789ABCDEF0123456789ABCDEF";
		NOHOLD(&q, "upper-case hold id");
		q.hold_id = "0123456789abcdef";
		NOHOLD(&q, "short hold id");
	}
}

static void list_and_event_fields(void **state)
{
	hf_op ops[] = {HF_OP_LIST_RESOURCES, HF_OP_LIST_HOLDS, HF_OP_READ_EVENTS};
	for (size_t i = 0; i < 3; i++) {
		hf_request q;
		hf_request_init(&q, ops[i]);
		q.limit = HF_LIST_MAX + 1;
		INVAL(&q, "limit over HF_LIST_MAX");
		q.limit = (size_t)-1;
		INVAL(&q, "limit SIZE_MAX");
		q.limit = HF_LIST_MAX;
		EXPECT(&q, HF_OK, "limit HF_LIST_MAX");
	}
	hf_request q;
	hf_request_init(&q, HF_OP_LIST_HOLDS);
	q.state = 4;
	INVAL(&q, "state 4");
	q.state = -2;
	INVAL(&q, "state -2");
	q.state = HF_HOLD_EXPIRED;
	EXPECT(&q, HF_OK, "state filter expired");
	hf_request_init(&q, HF_OP_LIST_HOLDS);
	q.owner = "\x01";
	INVAL(&q, "bad owner filter");
	hf_request_init(&q, HF_OP_LIST_HOLDS);
	q.resource = "\xff";
	INVAL(&q, "bad resource filter");

	hf_request_init(&q, HF_OP_READ_EVENTS);
	q.wait_ms = -1;
	INVAL(&q, "event wait -1");
	q.wait_ms = HF_WAIT_MAX_MS + 1;
	INVAL(&q, "event wait over max");
}

/* Every field the request points to is copied: the caller's buffers may change at once. */
static void submit_copies_request(void **state)
{
	char name[32] = "copied", owner[32] = "owner-a", key[32] = "key-a";
	hf_claim c = {.name = name, .units = 1, .capacity = 3};
	hf_request q;
	hf_request_init(&q, HF_OP_ACQUIRE);
	q.acquire.owner = owner;
	q.acquire.claims = &c;
	q.acquire.n_claims = 1;
	q.acquire.ttl_ms = 60000;
	q.acquire.idempotency_key = key;
	struct done_rec d = {0};
	hf_error err;
	assert_int_equal(hf_submit(ST, &q, on_done, &d, NULL, &err), HF_OK);
	memset(name, 'Z', sizeof name - 1);
	memset(owner, 'Z', sizeof owner - 1);
	memset(key, 'Z', sizeof key - 1);
	c.units = 99;
	for (int i = 0; i < 2000 && d.calls == 0; i++) {
		struct pollfd p = {.fd = hf_store_fd(ST), .events = POLLIN};
		poll(&p, 1, 10);
		hf_store_dispatch(ST);
	}
	assert_int_equal(d.calls, 1);
	assert_int_equal(d.reply->error.code, HF_OK);
	assert_string_equal(d.reply->hold->owner, "owner-a");
	assert_string_equal(d.reply->hold->parts[0].resource, "copied");
	assert_int_equal(d.reply->hold->parts[0].units, 1);
	hf_reply_free(d.reply);
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
	const struct CMUnitTest tests[] = {
		T(put_resource_fields), T(name_only_ops),  T(bad_ops),
		T(acquire_claims),      T(acquire_fields), T(hold_op_fields),
		T(list_and_event_fields), T(submit_copies_request),
	};
	return cmocka_run_group_tests_name("validate", tests, NULL, NULL);
}
