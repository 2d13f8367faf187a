/*
 * check_test.c — the invariant checker of holdfast-bench, fed hand-written histories: a clean
 * one (with a lease that ran out before the next grant) must pass; a double grant, units over
 * capacity, a fence regression, a lost confirm and their event-log forms must each fail; and
 * the history file keeps a client's order when its calls fall in one microsecond.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench.h" /* hfb_history_write */
#include "check.h"
#include "expect.h"

/* Hold ids are 32 hex characters; tests name them by a small number. */
static void id_of(char *out, int n)
{
	snprintf(out, HF_ID_LEN + 1, "%032x", n);
}

static void grant(struct hfb_history *h, int hold, int res, int64_t units, int64_t fence,
                  int64_t t_send, int64_t t_ack)
{
	struct hfb_obs o = {.kind = HFB_GRANT,
	                    .client = hold,
	                    .t_send = t_send,
	                    .t_ack = t_ack,
	                    .code = HF_OK,
	                    .n_parts = 1};
	id_of(o.hold, hold);
	o.parts[0] = (struct hfb_part){res, units, fence};
	EXPECT(hfb_history_add(h, &o) == HF_OK);
}

static void call(struct hfb_history *h, enum hfb_kind kind, int hold, int64_t t_send, int64_t t_ack,
                 int code)
{
	struct hfb_obs o = {
	    .kind = kind, .client = hold, .t_send = t_send, .t_ack = t_ack, .code = code};
	id_of(o.hold, hold);
	EXPECT(hfb_history_add(h, &o) == HF_OK);
}

static void final(struct hfb_history *h, int hold, int64_t t, int state)
{
	struct hfb_obs o = {.kind = HFB_FINAL,
	                    .client = -1,
	                    .t_send = t,
	                    .t_ack = t + 1,
	                    .code = state < 0 ? HF_ENOHOLD : HF_OK,
	                    .state = state};
	id_of(o.hold, hold);
	EXPECT(hfb_history_add(h, &o) == HF_OK);
}

static void event(struct hfb_history *h, uint64_t seq, enum hfb_ev_type type, int hold, int res,
                  int64_t units, int64_t fence)
{
	struct hfb_event e = {.seq = seq, .type = type, .n_parts = 1};
	id_of(e.hold, hold);
	e.parts[0] = (struct hfb_part){res, units, type == HFB_EV_GRANTED ? fence : 0};
	EXPECT(hfb_history_add_event(h, &e) == HF_OK);
	h->have_events = true;
}

/* Runs the checker; returns its report. */
static struct hfb_report run(struct hfb_history *h, const char *name)
{
	struct hfb_report rep;
	printf("--- %s\n", name);
	long v = hfb_check(h, stdout, 50, &rep);
	EXPECT(v >= 0);
	EXPECT((size_t)v == rep.violations);
	printf("    %ld violations\n", v);
	return rep;
}

static void test_clean(void)
{
	struct hfb_history h;
	hfb_history_init(&h);
	int seat = hfb_history_resource(&h, "seat", 1);
	int stock = hfb_history_resource(&h, "stock", 5);
	EXPECT(hfb_history_resource(&h, "seat", 1) == seat); /* interned once */
	EXPECT(hfb_history_find(&h, "stock") == stock && hfb_history_find(&h, "nope") == -1);
	/* hold 1, released; hold 2 waited and got it after the release */
	grant(&h, 1, seat, 1, 1, 0, 10);
	call(&h, HFB_RELEASE, 1, 20, 25, HF_OK);
	grant(&h, 2, seat, 1, 2, 15, 30);
	call(&h, HFB_RELEASE, 2, 40, 45, HF_OK);
	/* hold 3's lease runs out; hold 4 then takes the seat: legitimate */
	grant(&h, 3, seat, 1, 3, 50, 60);
	grant(&h, 4, seat, 1, 4, 70, 80);
	call(&h, HFB_CONFIRM, 4, 85, 88, HF_OK);
	call(&h, HFB_RELEASE, 3, 90, 95, HF_EENDED);
	final(&h, 4, 500, HF_HOLD_CONFIRMED);
	/* stock: 2 + 3 units at once is exactly the capacity */
	grant(&h, 5, stock, 2, 5, 0, 5);
	grant(&h, 6, stock, 3, 6, 0, 6);
	call(&h, HFB_CONFIRM, 5, 10, 12, HF_OK);
	call(&h, HFB_RELEASE, 5, 30, 31, HF_OK); /* confirmed, then released by its holder */
	call(&h, HFB_RELEASE, 6, 30, 31, HF_OK);
	grant(&h, 7, stock, 5, 7, 32, 40);
	call(&h, HFB_RELEASE, 7, 50, 51, HF_OK);
	/* the server's log says the same */
	event(&h, 10, HFB_EV_GRANTED, 1, seat, 1, 1);
	event(&h, 11, HFB_EV_GRANTED, 5, stock, 2, 5);
	event(&h, 12, HFB_EV_GRANTED, 6, stock, 3, 6);
	event(&h, 13, HFB_EV_CONFIRMED, 5, stock, 2, 0);
	event(&h, 14, HFB_EV_RELEASED, 1, seat, 1, 0);
	event(&h, 15, HFB_EV_GRANTED, 2, seat, 1, 2);
	event(&h, 16, HFB_EV_RELEASED, 5, stock, 2, 0);
	event(&h, 17, HFB_EV_RELEASED, 6, stock, 3, 0);
	event(&h, 18, HFB_EV_GRANTED, 7, stock, 5, 7);
	event(&h, 19, HFB_EV_RELEASED, 2, seat, 1, 0);
	event(&h, 20, HFB_EV_GRANTED, 3, seat, 1, 3);
	event(&h, 21, HFB_EV_RELEASED, 7, stock, 5, 0);
	event(&h, 22, HFB_EV_EXPIRED, 3, seat, 1, 0);
	event(&h, 23, HFB_EV_GRANTED, 4, seat, 1, 4);
	event(&h, 24, HFB_EV_CONFIRMED, 4, seat, 1, 0);
	event(&h, 9, HFB_EV_RELEASED, 99, seat, 1, 0); /* a hold from before the run: ignored */
	struct hfb_report rep = run(&h, "clean history");
	EXPECT(rep.violations == 0);
	EXPECT(rep.grants == 7);
	EXPECT(rep.intervals == 6); /* all but the hold whose lease ran out */
	EXPECT(rep.confirms == 2);
	EXPECT(rep.events == 16);
	hfb_history_release(&h);
}

static void test_double_grant(void)
{
	struct hfb_history h;
	hfb_history_init(&h);
	int seat = hfb_history_resource(&h, "seat", 1);
	grant(&h, 1, seat, 1, 1, 0, 10);
	grant(&h, 2, seat, 1, 2, 5, 20);
	call(&h, HFB_RELEASE, 1, 30, 31, HF_OK); /* 1 was live until 30, 2 from 20 */
	call(&h, HFB_RELEASE, 2, 40, 41, HF_OK);
	struct hfb_report rep = run(&h, "double grant");
	EXPECT(rep.by_check[HFB_CHECK_DOUBLE_GRANT] == 1);
	EXPECT(rep.violations == 1);
	hfb_history_release(&h);
}

static void test_touching_is_not_overlap(void)
{
	struct hfb_history h;
	hfb_history_init(&h);
	int seat = hfb_history_resource(&h, "seat", 1);
	/* 1's release was sent at 20 and 2's grant read at 20: the order within that µs is
	 * unknown, so this must not count as a double grant */
	grant(&h, 1, seat, 1, 1, 0, 10);
	call(&h, HFB_RELEASE, 1, 20, 21, HF_OK);
	grant(&h, 2, seat, 1, 2, 5, 20);
	call(&h, HFB_RELEASE, 2, 40, 41, HF_OK);
	EXPECT(run(&h, "touching intervals").violations == 0);
	hfb_history_release(&h);
}

static void test_over_capacity(void)
{
	struct hfb_history h;
	hfb_history_init(&h);
	int stock = hfb_history_resource(&h, "stock", 5);
	grant(&h, 1, stock, 2, 1, 0, 10);
	grant(&h, 2, stock, 2, 2, 0, 11);
	grant(&h, 3, stock, 2, 3, 0, 12);
	call(&h, HFB_CONFIRM, 1, 20, 21, HF_OK);
	call(&h, HFB_CONFIRM, 2, 20, 21, HF_OK);
	call(&h, HFB_RELEASE, 3, 20, 21, HF_OK);
	final(&h, 1, 100, HF_HOLD_CONFIRMED);
	final(&h, 2, 100, HF_HOLD_CONFIRMED);
	struct hfb_report rep = run(&h, "over capacity");
	EXPECT(rep.by_check[HFB_CHECK_OVER_CAPACITY] == 1);
	EXPECT(rep.by_check[HFB_CHECK_DOUBLE_GRANT] == 0);
	EXPECT(rep.violations == 1);
	hfb_history_release(&h);
}

static void test_fence_regression(void)
{
	struct hfb_history h;
	hfb_history_init(&h);
	int seat = hfb_history_resource(&h, "seat", 1);
	grant(&h, 1, seat, 1, 5, 0, 10);
	call(&h, HFB_RELEASE, 1, 12, 14, HF_OK);
	grant(&h, 2, seat, 1, 3, 20, 30); /* asked for after 1 was answered, yet a lower fence */
	call(&h, HFB_RELEASE, 2, 40, 41, HF_OK);
	grant(&h, 3, seat, 1, 6, 50, 60);
	call(&h, HFB_RELEASE, 3, 70, 71, HF_OK);
	struct hfb_report rep = run(&h, "fence regression");
	EXPECT(rep.by_check[HFB_CHECK_FENCE_ORDER] == 1);
	EXPECT(rep.violations == 1);
	hfb_history_release(&h);
}

static void test_concurrent_fences_any_order(void)
{
	struct hfb_history h;
	hfb_history_init(&h);
	int stock = hfb_history_resource(&h, "stock", 10);
	/* overlapping requests: the server may order them either way */
	grant(&h, 1, stock, 1, 9, 0, 20);
	grant(&h, 2, stock, 1, 8, 5, 25);
	EXPECT(run(&h, "concurrent grants, fences in either order").violations == 0);
	hfb_history_release(&h);
}

static void test_lost_confirm(void)
{
	struct hfb_history h;
	hfb_history_init(&h);
	int seat = hfb_history_resource(&h, "seat", 1);
	grant(&h, 1, seat, 1, 1, 0, 10);
	call(&h, HFB_CONFIRM, 1, 20, 25, HF_OK);
	final(&h, 1, 100, HF_HOLD_EXPIRED); /* confirmed, yet ended by a lease */
	grant(&h, 2, seat, 1, 2, 200, 210);
	call(&h, HFB_CONFIRM, 2, 220, 225, HF_OK);
	call(&h, HFB_RELEASE, 2, 300, 301, HF_EENDED); /* its holder finds it gone */
	grant(&h, 3, seat, 1, 3, 400, 410);
	call(&h, HFB_CONFIRM, 3, 420, 425, HF_OK); /* never read back nor released */
	struct hfb_report rep = run(&h, "lost confirm");
	EXPECT(rep.by_check[HFB_CHECK_LOST_CONFIRM] == 3);
	EXPECT(rep.violations == 3);
	hfb_history_release(&h);
}

static void test_log_double_grant(void)
{
	struct hfb_history h;
	hfb_history_init(&h);
	int seat = hfb_history_resource(&h, "seat", 1);
	/* the clients saw nothing overlap for certain (leases), but the log grants twice */
	grant(&h, 1, seat, 1, 1, 0, 10);
	grant(&h, 2, seat, 1, 2, 20, 30);
	event(&h, 1, HFB_EV_GRANTED, 1, seat, 1, 1);
	event(&h, 2, HFB_EV_GRANTED, 2, seat, 1, 2);
	event(&h, 3, HFB_EV_EXPIRED, 1, seat, 1, 0);
	event(&h, 4, HFB_EV_EXPIRED, 2, seat, 1, 0);
	struct hfb_report rep = run(&h, "double grant in the event log");
	EXPECT(rep.by_check[HFB_CHECK_LOG_DOUBLE_GRANT] == 1);
	EXPECT(rep.violations == 1);
	hfb_history_release(&h);
}

static void test_log_fence_and_mismatch(void)
{
	struct hfb_history h;
	hfb_history_init(&h);
	int seat = hfb_history_resource(&h, "seat", 1);
	grant(&h, 1, seat, 1, 7, 0, 10);
	grant(&h, 2, seat, 1, 4, 0, 30);         /* concurrent: the clients cannot order them */
	grant(&h, 3, seat, 1, 9, 40, 50);        /* never in the log */
	call(&h, HFB_RELEASE, 2, 35, 36, HF_OK); /* the log says it expired */
	event(&h, 1, HFB_EV_GRANTED, 1, seat, 1, 7);
	event(&h, 2, HFB_EV_EXPIRED, 1, seat, 1, 0);
	event(&h, 3, HFB_EV_GRANTED, 2, seat, 1, 4); /* later in the log, lower fence */
	event(&h, 4, HFB_EV_EXPIRED, 2, seat, 1, 0);
	struct hfb_report rep = run(&h, "fence regression and mismatches in the log");
	EXPECT(rep.by_check[HFB_CHECK_LOG_FENCE_ORDER] == 1);
	EXPECT(rep.by_check[HFB_CHECK_LOG_MISMATCH] == 2);
	EXPECT(rep.violations == 3);
	hfb_history_release(&h);
}

/* The history file keeps each client's program order when calls fall in one microsecond: the
 * read-back (one process) made four calls, the last three made and answered in the microsecond
 * the first was answered in. Each invocation must come before its completion, and the calls in
 * the order they were made. */
static void test_history_same_microsecond(void)
{
	struct hfb_history h;
	memset(&h, 0, sizeof(h));
	for (int k = 0; k < 4; k++) {
		struct hfb_obs o = {.kind = HFB_FINAL,
		                    .client = -1,
		                    .t_send = k ? 50 : 40,
		                    .t_ack = 50,
		                    .code = HF_ENOHOLD,
		                    .state = -1};
		id_of(o.hold, k + 1);
		EXPECT(hfb_history_add(&h, &o) == HF_OK);
	}
	char path[] = "/tmp/hf-check-test.XXXXXX";
	int fd = mkstemp(path);
	EXPECT(fd >= 0);
	if (fd >= 0)
		close(fd);
	EXPECT(hfb_history_write(&h, path) == 0);
	FILE *f = fopen(path, "r");
	EXPECT(f != NULL);
	char line[1024];
	int step = 0; /* 2k: call k+1's invocation is next; 2k+1: its completion */
	while (f && fgets(line, sizeof(line), f)) {
		if (!strstr(line, "\"process\""))
			continue; /* a resource line */
		char id[HF_ID_LEN + 1];
		id_of(id, step / 2 + 1);
		EXPECT(strstr(line, id) != NULL);
		EXPECT((strstr(line, "\"invoke\"") != NULL) == (step % 2 == 0));
		step++;
	}
	EXPECT(step == 8);
	if (f)
		fclose(f);
	if (getenv("HF_KEEP")) printf("kept %s\n", path); else unlink(path);
	hfb_history_release(&h);
}

int main(void)
{
	test_clean();
	test_double_grant();
	test_touching_is_not_overlap();
	test_over_capacity();
	test_fence_regression();
	test_concurrent_fences_any_order();
	test_lost_confirm();
	test_log_double_grant();
	test_log_fence_and_mismatch();
	test_history_same_microsecond();
	if (failures) {
		fprintf(stderr, "check_test: %d expectations failed\n", failures);
		return 1;
	}
	printf("check_test: all passed\n");
	return 0;
}
