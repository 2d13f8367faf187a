"""fault_test.py — holdfastd when PostgreSQL fails under it: stopped/restarted (bounded 503s,
recovery by itself), a table every change reads locked (bounded 503), backends killed mid-transaction (no
partial hold). Usage (under with_pg.sh): fault_test.py HOLDFASTD"""
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pgtest  # noqa: E402

BOUND_S = 3.0  # an answer while the database is down (the Unix socket refuses at once)

check = pgtest.check


class Async:
    """One request in a thread of its own: .result = (status, body, seconds)."""

    def __init__(self, server, method, path, body=None, headers=None):
        self.result = None
        self.t = threading.Thread(target=self._run, args=(server, method, path, body, headers))
        self.t.start()

    def _run(self, server, method, path, body, headers):
        c = server.client(timeout=60)
        t0 = time.monotonic()
        try:
            st, js = c.request(method, path, body, headers)
        except Exception as e:  # noqa: BLE001 — recorded as the result
            st, js = None, str(e)
        self.result = (st, js, time.monotonic() - t0)
        c.close()

    def wait(self, timeout):
        self.t.join(timeout)
        return self.result


def timed(c, method, path, body=None, headers=None):
    t0 = time.monotonic()
    st, js = c.request(method, path, body, headers)
    return st, js, time.monotonic() - t0


def acquire(c, owner, names, wait_ms=0, ttl_ms=60000, capacity=1):
    body = {"owner": owner, "ttl_ms": ttl_ms, "wait_ms": wait_ms,
            "resources": [{"name": n, "units": 1, "capacity": capacity} for n in names]}
    return c.request("POST", "/v1/holds", body)


def is_engine_unavailable(st, js):
    return (st == 503 and isinstance(js, dict) and js.get("error", {}).get("code") ==
            "engine_unavailable" and len(js["error"].get("message", "")) > 10)


def wait_parked(c, name, n, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st, js = c.request("GET", "/v1/resources/" + name)
        if st == 200 and js["waiters"] >= n:
            return True
        time.sleep(0.02)
    return False


def consistent():
    """Every resource's held/holds equal the sums over the live holds' parts; no part without
    a hold; the event sequence is gap-free."""
    bad = pgtest.psql(
        "SELECT r.name || ' held ' || r.held || ' parts ' || coalesce(sum(p.units), 0)"
        " FROM hf_test.resources r LEFT JOIN hf_test.hold_parts p ON p.resource = r.name"
        "  AND EXISTS (SELECT 1 FROM hf_test.holds h WHERE h.id = p.hold_id AND h.state <= 1)"
        " GROUP BY r.name, r.held, r.holds"
        " HAVING r.held <> coalesce(sum(p.units), 0) OR r.holds <> count(p.hold_id)")
    orphans = pgtest.psql("SELECT count(*) FROM hf_test.hold_parts p WHERE NOT EXISTS"
                          " (SELECT 1 FROM hf_test.holds h WHERE h.id = p.hold_id)")
    # Readers number the committed events (sequence_events): then seq is 1..n, no gap.
    pgtest.psql("SELECT hf_test.sequence_events()")
    gaps = pgtest.psql("SELECT (SELECT last_seq FROM hf_test.event_head) - count(*),"
                       " coalesce(max(seq), 0) - count(*) FROM hf_test.events")
    check(not bad, "resources disagree with their live holds: %s" % bad)
    check(orphans == ["0"], "hold parts without a hold: %s" % orphans)
    check(gaps == ["0|0"], "event log not gap-free: %s" % gaps)


def outage(a, b, mode):
    """The database goes away under two running instances and comes back."""
    ca, cb = a.client(), b.client()
    st, held = acquire(ca, "holder", ["door-" + mode])
    check(st == 201, "acquire before the outage: %s %s" % (st, held))
    parked = Async(b, "POST", "/v1/holds", {"owner": "waiter", "wait_ms": 30000,
                                           "resources": [{"name": "door-" + mode, "units": 1,
                                                          "capacity": 1}]})
    check(wait_parked(ca, "door-" + mode, 1), "the waiter did not park")

    pgtest.pg_stop(mode)
    down_at = time.monotonic()
    # Every kind of request answers, quickly, with a clear error; the processes stay up.
    for i in range(3):
        for c in (ca, cb):
            for method, path, body in (
                    ("GET", "/v1/resources/door-" + mode, None),
                    ("POST", "/v1/holds", {"owner": "x", "resources": [
                        {"name": "other", "units": 1, "capacity": 1}]}),
                    ("POST", "/v1/holds/%s/release" % held["id"], {"token": held["token"]}),
                    ("GET", "/v1/events?after=0", None),
                    ("GET", "/v1/holds?owner=holder", None),
                    ("GET", "/readyz", None)):
                st, js, took = timed(c, method, path, body)
                check(is_engine_unavailable(st, js),
                      "%s %s with the database down (%s): %s %s" % (method, path, mode, st, js))
                check(took < BOUND_S, "%s %s took %.1f s with the database down" %
                      (method, path, took))
        st, js, _ = timed(ca, "GET", "/healthz")
        check(st == 200, "healthz while the database is down: %s" % st)
        time.sleep(0.3)
    check(a.proc.poll() is None and b.proc.poll() is None, "an instance died in the outage")
    check(parked.result is None, "the parked wait ended during a short outage: %s" %
          (parked.result,))

    pgtest.pg_start()
    # Recovery by itself: reads, writes and readiness come back within a few seconds.
    deadline = time.monotonic() + 10
    ok = False
    while time.monotonic() < deadline and not ok:
        ok = all(timed(c, "GET", "/readyz")[0] == 200 for c in (ca, cb))
        time.sleep(0.1)
    check(ok, "not ready 10 s after the database came back (%s)" % mode)
    print("%s outage: %.1f s down, ready again" % (mode, time.monotonic() - down_at), flush=True)
    for c in (ca, cb):
        st, js, _ = timed(c, "GET", "/v1/resources/door-" + mode)
        check(st == 200 and js["held"] == 1 and js["waiters"] == 1,
              "after the outage: %s %s" % (st, js))
    # The waiter parked on b before the outage is granted by a release on a: across instances,
    # through NOTIFY on the re-established LISTEN connection.
    t0 = time.monotonic()
    st, js = ca.request("POST", "/v1/holds/%s/release" % held["id"], {"token": held["token"]})
    check(st == 200, "release after the outage: %s %s" % (st, js))
    r = parked.wait(10)
    check(r is not None and r[0] == 201, "the waiter parked across the outage: %s" % (r,))
    print("waiter parked across the outage granted %.3f s after the release" %
          (time.monotonic() - t0), flush=True)
    # New waits are woken promptly again: NOTIFY, not the 1 s safety re-check.
    lat = []
    hold = r[1] if r and r[0] == 201 else None
    for i in range(5):
        if not hold:
            break
        w = Async(b, "POST", "/v1/holds", {"owner": "w%d" % i, "wait_ms": 10000, "resources": [
            {"name": "door-" + mode, "units": 1, "capacity": 1}]})
        check(wait_parked(ca, "door-" + mode, 1), "wait %d did not park" % i)
        t0 = time.monotonic()
        st, js = ca.request("POST", "/v1/holds/%s/release" % hold["id"], {"token": hold["token"]})
        r = w.wait(10)
        lat.append(time.monotonic() - t0)
        check(r is not None and r[0] == 201, "wait %d after recovery: %s" % (i, r))
        hold = r[1] if r and r[0] == 201 else None
    lat.sort()
    check(lat and lat[len(lat) // 2] < 0.3,
          "wake-ups after recovery are slow (NOTIFY lost?): %s" % lat)
    print("wake-up latency after recovery: %s" % ["%.3f" % x for x in lat], flush=True)
    if hold:
        ca.request("POST", "/v1/holds/%s/release" % hold["id"], {"token": hold["token"]})
    ca.close()
    cb.close()
    consistent()


def find_blocked_backend(timeout=10):
    """The pid of a holdfast session waiting for a lock (our row in events), or None."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = pgtest.psql("SELECT pid FROM pg_stat_activity WHERE application_name = 'holdfast'"
                           " AND wait_event_type = 'Lock' AND query LIKE '%INSERT INTO events%'")
        if rows:
            return rows[0]
        time.sleep(0.02)
    return None


def block_revision(name):
    """A superuser transaction that writes NAME's event revision counter, uncommitted: the
    engine's next event on NAME (its change's last statement) then waits on it, in the middle
    of its transaction."""
    s = pgtest.Psql()
    s.send("BEGIN; INSERT INTO hf_test.event_revisions AS v VALUES ('%s', 0)"
           " ON CONFLICT (resource) DO UPDATE SET revision = v.revision;" % name)
    return s


def killed_mid_acquire(a):
    c = a.client()
    names = ["mid-%d" % i for i in range(6)]
    blocker = block_revision(names[-1])
    req = Async(a, "POST", "/v1/holds", {"owner": "mid", "resources": [
        {"name": n, "units": 1, "capacity": 1} for n in names]},
        {"Idempotency-Key": "mid-1"})
    pid = find_blocked_backend()
    check(pid is not None, "the acquire never blocked inside its transaction")
    if pid:
        # By now the hold, its parts and the resources' counts are written, uncommitted.
        parts = pgtest.psql("SELECT count(*) FROM pg_locks WHERE pid = %s AND mode ="
                            " 'RowExclusiveLock'" % pid)
        check(parts and int(parts[0]) > 0, "the blocked acquire had written nothing yet")
        pgtest.psql("SELECT pg_terminate_backend(%s)" % pid)
    r = req.wait(15)
    blocker.send("ROLLBACK;")
    blocker.close()
    check(r is not None and is_engine_unavailable(r[0], r[1]),
          "acquire whose session was killed: %s" % (r,))
    for n in names:
        st, js = c.request("GET", "/v1/resources/" + n)
        check(st == 404 or (st == 200 and js["held"] == 0 and js["holds"] == 0),
              "partial hold left on %s: %s %s" % (n, st, js))
    st, js = c.request("GET", "/v1/holds?owner=mid")
    check(st == 200 and js["holds"] == [], "a hold of the killed acquire exists: %s %s" % (st, js))
    consistent()
    # The same request again (same key: nothing was remembered) succeeds on a new connection.
    st, js = c.request("POST", "/v1/holds", {"owner": "mid", "resources": [
        {"name": n, "units": 1, "capacity": 1} for n in names]}, {"Idempotency-Key": "mid-1"})
    check(st == 201 and not js.get("replayed"), "retry after the kill: %s %s" % (st, js))
    if st == 201:
        c.request("POST", "/v1/holds/%s/release" % js["id"], {"token": js["token"]})
    consistent()
    c.close()
    print("killed mid-acquire: no partial hold, retry granted", flush=True)


def killed_mid_waiter_grant(a, b):
    """The waiter thread's grant transaction is killed: the waiter stays parked and is granted
    once its instance has reconnected; nothing partial is left."""
    ca = a.client()
    names = ["wg-%d" % i for i in range(4)]
    st, held = acquire(ca, "holder", names[:1])
    check(st == 201, "holder: %s %s" % (st, held))
    w = Async(b, "POST", "/v1/holds", {"owner": "wg", "wait_ms": 30000, "resources": [
        {"name": n, "units": 1, "capacity": 1} for n in names]})
    check(wait_parked(ca, names[0], 1), "the multi-resource waiter did not park")
    blocker = block_revision(names[-1])  # not the release's: the waiter's grant
    st, js = ca.request("POST", "/v1/holds/%s/release" % held["id"], {"token": held["token"]})
    check(st == 200, "release: %s %s" % (st, js))
    pid = find_blocked_backend()
    check(pid is not None, "the waiter's grant never blocked inside its transaction")
    if pid:
        pgtest.psql("SELECT pg_terminate_backend(%s)" % pid)
    time.sleep(0.2)
    blocker.send("ROLLBACK;")
    blocker.close()
    r = w.wait(15)
    check(r is not None and r[0] == 201, "the waiter after its grant was killed: %s" % (r,))
    if r and r[0] == 201:
        check(r[2] < 10, "the waiter was granted only after %.1f s" % r[2])
        ca.request("POST", "/v1/holds/%s/release" % r[1]["id"], {"token": r[1]["token"]})
    consistent()
    ca.close()
    print("killed mid-grant of a waiter: granted after reconnecting, no partial hold",
          flush=True)


def locked_counter(a):
    """A session sitting on a lock every change needs (the live hold count's table): requests
    end at lock_timeout, not never."""
    c = a.client()
    s = pgtest.Psql()
    s.send("BEGIN; LOCK TABLE hf_test.live_holds IN ACCESS EXCLUSIVE MODE;")
    time.sleep(0.3)
    st, js, took = timed(c, "POST", "/v1/holds", {"owner": "x", "resources": [
        {"name": "lk", "units": 1, "capacity": 1}]})
    check(is_engine_unavailable(st, js), "acquire with live_holds locked: %s %s" % (st, js))
    check(took < 8, "acquire with live_holds locked took %.1f s" % took)
    s.send("ROLLBACK;")
    s.close()
    st, js = c.request("POST", "/v1/holds", {"owner": "x", "resources": [
        {"name": "lk", "units": 1, "capacity": 1}]})
    check(st == 201, "acquire after the lock went: %s %s" % (st, js))
    if st == 201:
        c.request("POST", "/v1/holds/%s/release" % js["id"], {"token": js["token"]})
    c.close()
    print("locked live_holds: 503 after %.1f s" % took, flush=True)


def main():
    pgtest.need_pg()
    binary = os.path.abspath(sys.argv[1])
    pgtest.reset_schema()
    a = pgtest.Holdfastd(binary)
    b = pgtest.Holdfastd(binary)
    try:
        outage(a, b, "fast")
        outage(a, b, "immediate")
        killed_mid_acquire(a)
        killed_mid_waiter_grant(a, b)
        locked_counter(a)
    finally:
        rc = pgtest.finish("fault_test", (a, b))
    return rc


if __name__ == "__main__":
    sys.exit(main())
