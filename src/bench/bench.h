/*
 * bench.h — what the files of holdfast-bench share: the run's configuration, the worker
 * threads and their event loops, the simulated clients, the hold calls every scenario makes
 * (over HTTP or the library), and the counters a run reports. Internal to src/bench.
 */
#ifndef HFB_BENCH_H
#define HFB_BENCH_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <event2/event.h>

#include "check.h"
#include "hist.h"
#include "holdfast.h"

/* ---- configuration ---- */

enum hfb_peer {
	HFB_PEER_NONE = 0,
	HFB_PEER_REDIS_SETNX,    /* SET NX PX + Lua compare-and-delete release */
	HFB_PEER_REDIS_LOCK_RW,  /* the same lock around GET + SET of a counter */
	HFB_PEER_REDIS_DECRBY,   /* DECRBY, INCRBY to roll back or to release */
	HFB_PEER_PG_FOR_UPDATE,  /* BEGIN; SELECT ... FOR UPDATE; UPDATE; COMMIT */
	HFB_PEER_PG_CONDITIONAL, /* UPDATE ... WHERE available >= n */
	HFB_PEER_PG_LOCK_TABLE,  /* seed 004's lock table: INSERT ... ON CONFLICT DO NOTHING, DELETE */
};

#define HFB_MAX_SERVERS 8

struct hfb_config {
	int scenario;       /* 1..5 */
	const char *server; /* http://host:port[,http://host:port...], or NULL */
	/* The servers of --server, over one shared store: client i talks to servers[i % n];
	 * the first also reads back for the checks. */
	struct hfb_server {
		char host[256];
		int port;
	} servers[HFB_MAX_SERVERS];
	int n_servers;
	char reader_url[300]; /* http://host:port of servers[0] */
	const char *engine; /* an hf_open URL driven in-process, or NULL */
	enum hfb_peer peer;
	const char *peer_name;
	const char *redis; /* host:port */
	const char *pg;    /* libpq conninfo */
	int clients;
	int threads;
	double duration_s; /* stop starting cycles after this long ... */
	long ops;          /* ... or after this many cycles (0: no bound) */
	uint64_t seed;
	bool json;
	bool check;           /* run the invariant checks (default on) */
	int64_t cs_us;        /* scenario 2: the critical section */
	int64_t wait_ms;      /* scenario 2: how long a contender waits */
	int64_t retry_us;     /* peers without waiting: delay between lock attempts */
	int64_t lock_ttl_ms;  /* redis peers: the lock's PX */
	int64_t stock;        /* scenario 3: units of the product */
	int64_t max_units;    /* scenario 3: a reservation takes 1..max_units */
	int confirm_pct;      /* scenarios 3, 5: grants confirmed (the rest released/abandoned) */
	int abandon_pct;      /* scenario 5: grants abandoned to their lease */
	int seats;            /* scenario 4: seats per round; scenario 5: seats in all */
	int64_t bag_capacity; /* scenario 5: baggage units */
	int64_t lease_ms;     /* scenario 5: the booking's lease */
	int64_t saga_wait_ms; /* scenario 5: how long a booking waits for its seat and bags */
	char tag[64];         /* prefix of every name this run uses: runs never share state */
	size_t max_print;     /* violations printed */
	const char *history;  /* --history: write the observed history here (holdfast-check) */
	int flights;          /* scenario 6: flights (seats: per flight; bag_capacity: per flight) */
	int decline_pct;      /* scenario 6: share of bookings whose card is declined */
	bool plain;           /* scenario 6: the same bookings as plain acquire/confirm, no saga */
	long fill;            /* --fill: live holds to put into the store instead of a run */
};

extern struct hfb_config hfb_cfg;

/* ---- counters of a run (one per worker, summed at the end) ---- */

struct hfb_stats {
	uint64_t cycles;   /* scenario cycles completed (acquire ... release/confirm) */
	uint64_t requests; /* requests sent (holds, locks, peers' commands) */
	uint64_t attempts; /* acquires (or reservations) attempted */
	uint64_t granted;
	uint64_t conflicts; /* refused at once: unavailable, a failed NX, not enough stock */
	uint64_t timeouts;  /* waited and gave up */
	uint64_t errors;    /* anything else */
	uint64_t confirmed;
	uint64_t released;
	uint64_t abandoned;      /* left to their lease (scenario 5) */
	uint64_t expired;        /* ended by their lease, as read back at the end */
	struct hfb_hist acquire; /* send to grant, waits and retries included */
	struct hfb_hist request; /* every request, send to answer */
	struct hfb_hist handoff; /* scenario 2: release sent to the next grant answered */
};

void hfb_stats_init(struct hfb_stats *s);
void hfb_stats_merge(struct hfb_stats *into, const struct hfb_stats *from);

/* ---- workers and clients ---- */

struct hfb_worker;

/* A hold call as a scenario makes it. */
struct hfb_call {
	enum { HFB_CALL_ACQUIRE, HFB_CALL_CONFIRM, HFB_CALL_RELEASE } kind;
	const char *lock_key; /* ACQUIRE as a lock: POST /v1/locks/KEY, exclusive */
	size_t n;             /* ACQUIRE of resources: the claims */
	const char *names[HF_CLAIMS_MAX];
	int64_t units[HF_CLAIMS_MAX];
	int64_t caps[HF_CLAIMS_MAX];
	bool any;
	int64_t ttl_ms, wait_ms;
	const char *hold, *token; /* CONFIRM, RELEASE */
};

/* Its answer. */
struct hfb_answer {
	int code;
	char hold[HF_ID_LEN + 1];
	char token[HF_TOKEN_LEN + 1];
	int64_t units;               /* of the first part */
	int64_t fence;               /* of the first part */
	char first[HF_NAME_MAX + 1]; /* the first part's resource (the seat taken by `any`) */
};

/* The answer with what the checker records of the hold. */
struct hfb_full_answer {
	struct hfb_answer a;
	bool exclusive;
	size_t n_parts;
	struct {
		char name[HF_NAME_MAX + 1];
		int64_t units, fence;
	} parts[HFB_PARTS_MAX];
};

/* answer.c: reads holdfastd's answer to a hold call (its HTTP status and JSON body) into *fa,
 * zeroed by the caller. */
void hfb_answer_read(int status, const char *body, size_t len, struct hfb_full_answer *fa);
/* Fills a.units, a.fence and a.first from the first part, if any. */
void hfb_answer_first(struct hfb_full_answer *fa);

struct hfb_client;
typedef void (*hfb_answer_fn)(struct hfb_client *c, const struct hfb_answer *a);

#define HFB_KEEP_MAX 4

struct hfb_client {
	int id;
	char owner[32];
	struct hfb_worker *w;
	uint64_t rng;
	int state;
	bool stopped;
	/* the call in flight */
	hfb_answer_fn on_answer;
	int call_kind;
	int64_t t_send;
	int64_t t_cycle; /* when the current acquire (with its retries) started */
	/* transports: one of these */
	struct hfb_http *http; /* http_client.c */
	void *redis; /* redisAsyncContext */
	void *pg;    /* PGconn */
	struct event *pg_ev;
	void (*peer_cb)(struct hfb_client *c, void *reply); /* the redis command in flight */
	uint64_t peer_n;   /* acquisitions so far: makes each lock value unique */
	char peer_val[48]; /* the value of the lock we hold (the owner check) */
	void (*pg_done)(struct hfb_client *c, int ok, long rows, long value);
	long pg_rows, pg_value;
	int pg_ok;
	struct event *timer;
	void (*timer_fn)(struct hfb_client *c);
	char call_hold[HF_ID_LEN + 1];
	/* the hold in hand */
	char hold[HF_ID_LEN + 1];
	char token[HF_TOKEN_LEN + 1];
	int64_t units;
	/* a confirmed hold kept until the next cycle (stock sold, trip booked) */
	bool kept;
	char kept_hold[HF_ID_LEN + 1];
	char kept_token[HF_TOKEN_LEN + 1];
	int64_t kept_units;
	/* fairness (scenario 2) */
	uint64_t grants;
	int round;                 /* scenario 4 */
	char key[HF_NAME_MAX + 1]; /* the client's own lock or key */
	int64_t counter_seen;      /* redis-lock-rw */
};

struct hfb_worker {
	int id;
	struct event_base *base;
	struct hfb_client *clients;
	int n_clients;
	int running;
	struct hfb_stats stats;
	struct hfb_history *hist;
	/* holds to read back at the end: kept (confirmed) and abandoned ones */
	char (*verify)[HF_ID_LEN + 1];
	bool *verify_abandoned;
	size_t n_verify, cap_verify;
	hf_store *store; /* --engine: the store, dispatched from this loop */
	struct event *store_ev;
};

/* The run, shared by all workers. */
struct hfb_run {
	int64_t t_start, t_deadline;
	atomic_long cycles_started;
	_Atomic int64_t last_release_us; /* scenario 2: latest release sent on the hot lock */
	atomic_bool failed;              /* a client lost its server: the run proves nothing */
	struct hfb_history hist;
	int res_ids[8]; /* scenario resources registered up front */
};

extern struct hfb_run hfb_run;

int64_t hfb_now_us(void);
uint64_t hfb_rand(uint64_t *state);                              /* xorshift64* */
int64_t hfb_rand_range(uint64_t *state, int64_t lo, int64_t hi); /* lo..hi inclusive */

/* May the client start another cycle? Counts it as started if so. */
bool hfb_may_start(struct hfb_client *c);
/* The client is done; the worker's loop ends with its last client. */
void hfb_client_stop(struct hfb_client *c);
/* Calls fn(c) after `us` microseconds on the client's loop. */
void hfb_after(struct hfb_client *c, int64_t us, void (*fn)(struct hfb_client *c));
/* Remembers a hold to read back after the run. */
void hfb_verify_later(struct hfb_client *c, const char *hold, bool abandoned);

/* Makes a hold call for the client (over HTTP or the library), records what was observed in
 * the history and the counters, and calls `fn` with the answer on the client's loop. */
void hfb_call(struct hfb_client *c, const struct hfb_call *call, hfb_answer_fn fn);

/* Runs the clients on hfb_cfg.threads loops until each has stopped; sums their counters.
 * *out_workers stays valid (their verify lists) until hfb_workers_free(). */
int hfb_workers_run(hf_store *store, struct hfb_stats *total, struct hfb_worker **out_workers,
                    int *out_n);
void hfb_workers_free(struct hfb_worker *ws, int n);

/* Transports (worker.c): set up and tear down one client's connection. */
int hfb_http_open(struct hfb_client *c);
void hfb_http_close(struct hfb_client *c);

/* Scenarios (scen.c): set up the run's resources, then start one client. */
int hfb_scenario_setup(void);
void hfb_scenario_start(struct hfb_client *c);
/* Scenario-level checks after the run (seat race winners); returns violations. */
long hfb_scenario_check(FILE *out);
void hfb_scenario_rounds(int *n, long *winners); /* scenario 4: rounds tried, seats won */
void hfb_scenario_free(void);

/* Peers (peers.c). */
int hfb_peer_setup(void);                /* creates the keys or tables */
int hfb_peer_open(struct hfb_client *c); /* connects */
void hfb_peer_close(struct hfb_client *c);
void hfb_peer_start(struct hfb_client *c);
/* The peer's own end state, and the checker over the clients' view; returns violations. */
long hfb_peer_check(FILE *out, struct hfb_report *rep);
bool hfb_peer_supports(enum hfb_peer p, int scenario);

/* flights.c: scenario 6, flight bookings through sagas (or --plain), run, checked and
 * reported on its own; the exit code of holdfast-bench. */
int hfb_flights_main(void);

/* fill.c: --fill, the store made large (live holds on distinct resources); the exit code. */
int hfb_fill_main(void);

/* history.c: writes the observations as a holdfast-check history (JSON lines, see
 * docs/reliability.md) to `path`, replacing it; 0, or -1 if it could not be written. */
int hfb_history_write(struct hfb_history *h, const char *path);

#endif
