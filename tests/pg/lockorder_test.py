"""lockorder_test.py — one lock order over all the names of an acquire (schema 8;
docs/operations.md, "Schema version 8"), through real holdfastd over with_pg.sh's PostgreSQL.

1. Deadlock-free: two instances (workers=8 each), 12 keep-alive clients. Each round, every
   client runs all-of acquires over overlapping subsets of four names — two declared (their
   rows exist), two implicit (created by the first acquire, gone when idle, so they flip
   between missing and existing under the racing snapshots) — in opposite orders, plus
   NOWAIT any-of acquires over the implicit ones, releasing each grant at once. Every all-of
   must be granted, every any-of granted or `unavailable`, and PostgreSQL's deadlock count
   (pg_stat_database.deadlocks, read after the instances have closed their sessions, which
   flush their statistics as they end) must not grow: the engine runs a change that lost a
   deadlock again, so nothing else would show one.
2. A NOWAIT any-of never blocks on another change: with a superuser transaction creating one
   name (its advisory lock taken, its row inserted, not committed) and holding another's row
   locked, an any-of over them and a free name is granted the free one, through the one-call
   function and through ops.c's path (an Idempotency-Key sends it there); over the busy names
   alone it answers `unavailable`. Blocking would end in lock_timeout's 503 instead.

Usage: lockorder_test.py HOLDFASTD   (HF_LONG=1: 150 rounds instead of 25)"""
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pgtest  # noqa: E402
from pgtest import check  # noqa: E402

ROUNDS = 150 if os.environ.get("HF_LONG") == "1" else 25
CLIENTS = 12
CAP = 100  # every acquire fits: only lock order is under test, not capacity


def claim(name):
    return {"name": name, "units": 1, "capacity": CAP}


def acquire(cl, names, any_of=False, wait_ms=0, key=None):
    body = {"owner": "lockorder", "resources": [claim(n) for n in names], "ttl_ms": 30000,
            "wait_ms": wait_ms, "any": any_of}
    return cl.request("POST", "/v1/holds", body, {"Idempotency-Key": key} if key else None)


def release(cl, hold):
    st, body = cl.request("POST", "/v1/holds/%s/release" % hold["id"], {"token": hold["token"]})
    check(st == 200, "release of %s: %s %s" % (hold["id"], st, body))


def deadlocks():
    return int(pgtest.psql("SELECT deadlocks FROM pg_stat_database"
                           " WHERE datname = current_database()")[0])


def client_round(cl, idx, r, barrier):
    a, b, c, d = ("lo%d-%s" % (r, x) for x in "abcd")  # b, d declared; a, c implicit
    subsets = [[a, b, c, d], [d, c, b, a], [a, d], [c, b], [b, c, a], [d, a, c]]
    try:
        barrier.wait(30)
    except threading.BrokenBarrierError:
        check(False, "round %d: the clients did not meet" % r)
        return
    for k in range(3):
        names = subsets[(idx + k) % len(subsets)]
        st, body = acquire(cl, names, wait_ms=10000)
        if check(st == 201, "all-of %s: %s %s" % (names, st, body)):
            release(cl, body)
        names = [c, a] if (idx + k) % 2 else [a, c]
        st, body = acquire(cl, names, any_of=True)
        ok = st == 201 or (st == 409 and body["error"]["code"] == "unavailable")
        if check(ok, "NOWAIT any-of %s: %s %s" % (names, st, body)) and st == 201:
            release(cl, body)


def no_deadlocks(binary):
    url = pgtest.URL + "&workers=8"
    insts = [pgtest.Holdfastd(binary, url), pgtest.Holdfastd(binary, url)]
    before = deadlocks()
    clients = [insts[i % 2].client() for i in range(CLIENTS)]
    for r in range(ROUNDS):
        for x in "bd":
            st, body = clients[0].request("PUT", "/v1/resources/lo%d-%s" % (r, x),
                                          {"capacity": CAP})
            check(st == 201, "declare lo%d-%s: %s %s" % (r, x, st, body))
        barrier = threading.Barrier(CLIENTS)
        threads = [threading.Thread(target=client_round, args=(clients[i], i, r, barrier))
                   for i in range(CLIENTS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    st, body = clients[0].request("GET", "/v1/holds?state=tentative")
    check(st == 200 and not body["holds"], "holds left live: %s %s" % (st, body))
    for cl in clients:
        cl.close()
    for s in insts:
        check(s.stop() == 0, "instance exited with an error: %s" % s.log_text()[-2000:])
    # The sessions are gone (their statistics flushed as they ended) once none is listed.
    for _ in range(200):
        if pgtest.psql("SELECT count(*) FROM pg_stat_activity"
                       " WHERE application_name = 'holdfast'")[0] == "0":
            break
        time.sleep(0.05)
    after = deadlocks()
    check(after == before, "deadlocks: %d before, %d after %d rounds" % (before, after, ROUNDS))
    print("lockorder_test: %d rounds x %d clients, deadlocks %d -> %d" % (ROUNDS, CLIENTS,
                                                                          before, after))


def nowait_never_blocks(binary):
    inst = pgtest.Holdfastd(binary)
    cl = inst.client()
    st, body = cl.request("PUT", "/v1/resources/nw-locked", {"capacity": CAP})
    check(st == 201, "declare nw-locked: %s %s" % (st, body))
    other = pgtest.Psql()
    # Another change creating nw-new (its advisory lock, its row not yet committed) and
    # weighing nw-locked (its row locked).
    other.send("BEGIN; SELECT pg_advisory_xact_lock(729, hashtext('nw-new'));"
               " INSERT INTO hf_test.resources (name, capacity, version, declared)"
               " VALUES ('nw-new', %d, 0, false);"
               " SELECT 1 FROM hf_test.resources WHERE name = 'nw-locked' FOR UPDATE;" % CAP)
    for i, key in enumerate((None, "lockorder-nw")):  # the one call; ops.c's path
        free = "nw-free%d" % i
        st, body = acquire(cl, ["nw-new", "nw-locked", free], any_of=True, key=key)
        got = [p["name"] for p in body.get("resources", [])] if st == 201 else None
        if check(got == [free], "NOWAIT any-of past busy names (key %s): %s %s" % (key, st, body)):
            release(cl, body)
        st, body = acquire(cl, ["nw-new", "nw-locked"], any_of=True, key=key and key + "-busy")
        check(st == 409 and body["error"]["code"] == "unavailable",
              "NOWAIT any-of over busy names only (key %s): %s %s" % (key, st, body))
    other.send("ROLLBACK;")
    other.close()
    st, body = acquire(cl, ["nw-new"], any_of=True)
    if check(st == 201, "NOWAIT any-of once the creator rolled back: %s %s" % (st, body)):
        release(cl, body)
    cl.close()
    check(inst.stop() == 0, "instance exited with an error")
    print("lockorder_test: NOWAIT any-of passed over the busy names without waiting")


def main():
    pgtest.need_pg()
    pgtest.raise_fd_limit(1024)
    binary = sys.argv[1]
    pgtest.reset_schema()
    nowait_never_blocks(binary)
    no_deadlocks(binary)
    if pgtest.failures:
        print("lockorder_test: %d failure(s)" % len(pgtest.failures), file=sys.stderr)
        return 1
    print("lockorder_test: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
