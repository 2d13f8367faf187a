"""orphan_test.py — waiter rows nobody waits on any more must not block a free resource: they
lapse within the waiter lease (HF__PG_WAITER_LEASE_MS, 15 s; docs/operations.md) or are deleted
sooner by their instance. Cases: a row the instance does not track while it keeps other waits
(and the stats follower's event read) parked; a wait that ends while PostgreSQL is stopped or
crashed; a park whose COMMIT reply is lost; a grant whose COMMIT reply is lost (the client must
get the hold, not "wait lost"; if its wait ends first, the hold is released). The lost replies come from the engine's test hook
HF_PG_TEST_LOSE_COMMIT (src/engine/postgres/engine.c). Usage (under with_pg.sh):
orphan_test.py HOLDFASTD"""
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pgtest  # noqa: E402

LEASE_S = 15.0               # HF__PG_WAITER_LEASE_MS
BOUND_S = LEASE_S + 4.0      # lease + the purge (at most 1 s) + slack for a loaded machine

check = pgtest.check


class Async:
    """One request in a thread of its own: .result = (status, body, seconds)."""

    def __init__(self, server, method, path, body=None):
        self.result = None
        self.t = threading.Thread(target=self._run, args=(server, method, path, body))
        self.t.start()

    def _run(self, server, method, path, body):
        c = server.client(timeout=90)
        t0 = time.monotonic()
        try:
            st, js = c.request(method, path, body)
        except Exception as e:  # noqa: BLE001 — recorded as the result
            st, js = None, str(e)
        self.result = (st, js, time.monotonic() - t0)
        c.close()

    def wait(self, timeout):
        self.t.join(timeout)
        return self.result


def acq_body(owner, name, wait_ms=0, ttl_ms=60000):
    return {"owner": owner, "ttl_ms": ttl_ms, "wait_ms": wait_ms,
            "resources": [{"name": name, "units": 1, "capacity": 1}]}


def acquire(c, owner, name, wait_ms=0, ttl_ms=60000):
    return c.request("POST", "/v1/holds", acq_body(owner, name, wait_ms, ttl_ms))


def release(c, hold):
    return c.request("POST", "/v1/holds/%s/release" % hold["id"], {"token": hold["token"]})


def waiters(c, name):
    st, js = c.request("GET", "/v1/resources/" + name)
    return js["waiters"] if st == 200 else -1


def wait_parked(c, name, n, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if waiters(c, name) >= n:
            return True
        time.sleep(0.02)
    return False


def retry(fn, timeout=15):
    """fn() until it returns (status, body) with a status < 500 (the database coming back)."""
    deadline = time.monotonic() + timeout
    while True:
        st, js = fn()
        if st < 500 or time.monotonic() > deadline:
            return st, js
        time.sleep(0.1)


def nowait_until_granted(c, name, owner, since, bound):
    """Polls a NOWAIT acquire of `name` until granted or `bound` s after `since`; returns
    (hold or None, seconds after `since`, the last answer)."""
    last = None
    while True:
        st, js = acquire(c, owner, name)
        took = time.monotonic() - since
        if st == 201:
            return js, took, (st, js)
        last = (st, js)
        if took > bound:
            return None, took, last
        time.sleep(0.25)


def untracked_row_lapses(a, b):
    """A waiter row of b that b does not track (as one left by a wait that ended while the
    database was away) lapses at its lease end, although b keeps renewing the waits it does
    track (one parked here, and the stats follower's event read): b's heartbeat renews its
    waits by ticket, not every row of the instance."""
    ca, cb = a.client(), b.client()
    st, keep_blocker = acquire(ca, "blocker", "or-keep")
    check(st == 201, "blocker: %s %s" % (st, keep_blocker))
    kept = Async(b, "POST", "/v1/holds", acq_body("kept", "or-keep", wait_ms=60000))
    check(wait_parked(ca, "or-keep", 1), "the tracked waiter did not park")
    inst = pgtest.psql("SELECT w.instance FROM hf_test.waiters w JOIN hf_test.waiter_claims c"
                       " ON c.ticket = w.ticket WHERE c.resource = 'or-keep'")
    check(len(inst) == 1, "one waiter row on or-keep expected: %s" % inst)
    st, held = acquire(ca, "holder", "or-lease")
    check(st == 201, "holder: %s %s" % (st, held))
    # The row a lost wait leaves: b's instance id, a fresh lease, queued on or-lease.
    pgtest.psql("WITH t AS (SELECT nextval('hf_test.tickets') AS n),"
                " w AS (INSERT INTO hf_test.waiters (ticket, instance, any_of, lease_until)"
                "  SELECT n, '%s', false, hf_test.now_ms() + %d FROM t RETURNING ticket)"
                " INSERT INTO hf_test.waiter_claims (ticket, idx, resource, units)"
                " SELECT ticket, 0, 'or-lease', 1 FROM w" % (inst[0], int(LEASE_S * 1000)))
    since = time.monotonic()
    st, js = release(ca, held)
    check(st == 200, "release: %s %s" % (st, js))
    st, js = acquire(ca, "probe", "or-lease")
    check(st == 409 and js["error"]["code"] == "unavailable",
          "NOWAIT before the untracked row lapsed: %s %s" % (st, js))
    hold, took, last = nowait_until_granted(ca, "or-lease", "after", since, BOUND_S)
    check(hold is not None, "an untracked waiter row of a live instance still blocks a free"
          " resource %.1f s later (lease %.0f s): %s" % (took, LEASE_S, last))
    print("untracked waiter row: NOWAIT granted %.1f s later" % took, flush=True)
    if hold:
        release(ca, hold)
    # The tracked wait outlived several leases' worth of heartbeats and is still there.
    check(kept.result is None and waiters(ca, "or-keep") == 1,
          "the tracked wait did not survive its heartbeats: %s" % (kept.result,))
    release(ca, keep_blocker)
    r = kept.wait(10)
    check(r is not None and r[0] == 201, "the tracked wait after its blocker left: %s" % (r,))
    if r and r[0] == 201:
        release(ca, r[1])
    ca.close()
    cb.close()


def wait_ends_in_outage(a, b, mode):
    """A wait on b times out while PostgreSQL is stopped (mode fast) or crashed (immediate): its
    row cannot be deleted then. After the restart the resource, once free, is granted to a
    waiter on a (mode immediate) or to a NOWAIT acquire (mode fast) within the bound."""
    name = "or-down-" + mode
    ca = a.client()
    st, held = acquire(ca, "holder", name)
    check(st == 201, "holder: %s %s" % (st, held))
    w = Async(b, "POST", "/v1/holds", acq_body("lost", name, wait_ms=2500))
    check(wait_parked(ca, name, 1), "the waiter did not park")
    pgtest.pg_stop(mode)
    r = w.wait(30)
    ended = time.monotonic()
    check(r is not None and r[0] in (409, 503), "the wait in the outage: %s" % (r,))
    pgtest.pg_start()
    st, js = retry(lambda: release(ca, held))
    check(st == 200, "release after the restart: %s %s" % (st, js))
    if mode == "immediate":
        w2 = Async(a, "POST", "/v1/holds", acq_body("next", name, wait_ms=int(BOUND_S * 1000)
                                                    + 10000))
        r = w2.wait(BOUND_S + 15)
        took = time.monotonic() - ended
        check(r is not None and r[0] == 201 and took <= BOUND_S,
              "a new waiter behind the wait that ended in the crash: %s after %.1f s" % (r, took))
        if r and r[0] == 201:
            release(ca, r[1])
    hold, took, last = nowait_until_granted(ca, name, "after", ended, BOUND_S)
    check(hold is not None, "the resource of a wait that ended in the outage (%s) is still"
          " blocked %.1f s later: %s" % (mode, took, last))
    print("wait ended in a %s outage: resource free %.1f s later" % (mode, took), flush=True)
    if hold:
        release(ca, hold)
    ca.close()


def park_reply_lost(a, c):
    """c parks a wait, but the reply of its COMMIT is lost: the client hears 503, the row was
    written. It must not keep the resource blocked once free."""
    ca, cc = a.client(), c.client()
    st, held = acquire(ca, "holder", "or-park")
    check(st == 201, "holder: %s %s" % (st, held))
    st, js = acquire(cc, "parker", "or-park", wait_ms=30000)
    ended = time.monotonic()
    check(st == 503 and js["error"]["code"] == "engine_unavailable",
          "a park whose COMMIT reply was lost: %s %s" % (st, js))
    # The hook answers so only after the park committed (its row may already be gone again).
    check(st == 503 and "test hook" in js["error"]["message"],
          "the test hook did not commit the park: %s" % (js,))
    st, js = release(ca, held)
    check(st == 200, "release: %s %s" % (st, js))
    hold, took, last = nowait_until_granted(ca, "or-park", "after", ended, BOUND_S)
    check(hold is not None, "the row of a park whose COMMIT reply was lost still blocks the"
          " free resource %.1f s later: %s" % (took, last))
    print("park with a lost COMMIT reply: resource free %.1f s later" % took, flush=True)
    if hold:
        release(ca, hold)
    ca.close()
    cc.close()


def grant_reply_lost(a, c):
    """c grants a parked wait, but the reply of the grant's COMMIT is lost: the client must get
    that hold (or no hold may be left): never "wait lost" with the hold living on."""
    ca = a.client()
    st, held = acquire(ca, "holder", "or-grant")
    check(st == 201, "holder: %s %s" % (st, held))
    w = Async(c, "POST", "/v1/holds", acq_body("granted", "or-grant", wait_ms=30000))
    check(wait_parked(ca, "or-grant", 1), "the waiter did not park")
    st, js = release(ca, held)
    check(st == 200, "release: %s %s" % (st, js))
    r = w.wait(20)
    live = pgtest.psql("SELECT id FROM hf_test.holds h WHERE state <= 1 AND EXISTS (SELECT 1"
                       " FROM hf_test.hold_parts p WHERE p.hold_id = h.id"
                       " AND p.resource = 'or-grant')")
    if check(r is not None and r[0] == 201,
             "a wait whose grant's COMMIT reply was lost: %s; live holds %s" % (r, live)):
        check(live == [r[1]["id"]], "the delivered hold %s, live holds %s" % (r[1]["id"], live))
        check(r[2] < 10, "the grant was delivered only after %.1f s" % r[2])
        st, js = release(ca, r[1])
        check(st == 200, "release of the delivered hold: %s %s" % (st, js))
    else:
        check(live == [], "the client heard no grant, but a hold lives on: %s" % live)
    print("grant with a lost COMMIT reply: %s" % (((r[0], r[2]) if r else None),), flush=True)
    ca.close()


def grant_reply_lost_then_timeout(a, d):
    """d grants a parked wait, the reply of the grant's COMMIT is lost, and the database stays
    unreachable for d's waiter thread (the hook: 4 s) past the wait's deadline. The client hears
    wait_timeout; the hold it never got must not live on: d releases it once it is back."""
    ca = a.client()
    st, held = acquire(ca, "holder", "or-late")
    check(st == 201, "holder: %s %s" % (st, held))
    t0 = time.monotonic()
    w = Async(d, "POST", "/v1/holds", acq_body("late", "or-late", wait_ms=3000))
    check(wait_parked(ca, "or-late", 1), "the waiter did not park")
    st, js = release(ca, held)
    check(st == 200, "release: %s %s" % (st, js))
    check(time.monotonic() - t0 < 2.5, "the release came too late to test anything")
    r = w.wait(20)
    check(r is not None and r[0] == 409 and r[1]["error"]["code"] == "wait_timeout",
          "a wait whose grant's reply was lost, deadline in the outage: %s" % (r,))
    granted = pgtest.psql("SELECT hold_id FROM hf_test.events WHERE type = 'hold.granted'"
                          " AND resource = 'or-late' AND hold_id <> '%s'" % held["id"])
    check(len(granted) == 1, "the hook's grant did not commit: %s" % granted)
    deadline = time.monotonic() + 15
    live = None
    while time.monotonic() < deadline:
        live = pgtest.psql("SELECT h.id FROM hf_test.holds h JOIN hf_test.hold_parts p"
                           " ON p.hold_id = h.id WHERE h.state <= 1 AND p.resource = 'or-late'")
        if not live:
            break
        time.sleep(0.2)
    check(live == [], "the hold of a grant nobody heard of lives on: %s" % live)
    if granted:
        ended = pgtest.psql("SELECT type FROM hf_test.events WHERE hold_id = '%s'"
                            " AND type <> 'hold.granted'" % granted[0])
        check(ended == ["hold.released"], "the unheard grant ended by %s" % ended)
    st, js = acquire(ca, "after", "or-late")
    check(st == 201, "NOWAIT after the unheard grant was released: %s %s" % (st, js))
    if st == 201:
        release(ca, js)
    print("grant with a lost COMMIT reply, deadline in the outage: %s, live holds after: %s" %
          ((r[0], r[1]["error"]["code"]) if r and isinstance(r[1], dict) else r, live),
          flush=True)
    ca.close()


def main():
    pgtest.need_pg()
    binary = os.path.abspath(sys.argv[1])
    pgtest.reset_schema()
    a = pgtest.Holdfastd(binary)
    b = pgtest.Holdfastd(binary)
    c = pgtest.Holdfastd(binary, env={"HF_PG_TEST_LOSE_COMMIT": "park,grant"})
    d = pgtest.Holdfastd(binary, env={"HF_PG_TEST_LOSE_COMMIT": "grant"})
    try:
        park_reply_lost(a, c)      # fires c's park hook
        grant_reply_lost(a, c)     # then its grant hook
        grant_reply_lost_then_timeout(a, d)
        wait_ends_in_outage(a, b, "immediate")
        wait_ends_in_outage(a, b, "fast")
        untracked_row_lapses(a, b)
    finally:
        rc = pgtest.finish("orphan_test", (a, b, c, d))
    return rc


if __name__ == "__main__":
    sys.exit(main())
