"""sigstop_test.py — issue 15's fault harness, one fault: a holdfastd stopped (SIGSTOP) for
longer than a lease its client holds. Two holdfastd instances over one PostgreSQL; clients of
both write one Jepsen-style history (docs/reliability.md, section 1) that holdfast-check judges:
no two holders overlap, fences increase in real time, nothing acknowledged is lost.

Each round: a client of A takes a lock; A is stopped; the client sends an extend (it sits in
A's socket); a client of B waits for the lock and must be granted it once the lease has run
out, while A is still stopped; A continues: the extend must answer hold_ended (a paused server
must not revive a lease), and so must the release. Meanwhile background clients of both
instances take and release other locks, so that their requests to A are caught by the stop
too. The run's choices (leases, lock names, background timing) come from the seed, printed
first; HF_TEST_SEED=N repeats them (the thread interleaving is the machine's).

Usage (under tests/pg/with_pg.sh): sigstop_test.py HOLDFASTD HOLDFAST_CHECK"""
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "pg"))
import pgtest  # noqa: E402
from faultlib import History, Holdfastd, Proc, background, check, failures, run_check, \
    seed_from_env  # noqa: E402

ROUNDS = 2
WAIT_BOUND_S = 30  # B must grant within this after the lease ends (not a timing assertion:
                   # a liveness bound far above the expiry sweep's delay)


def one_round(hist, a, b, rng, rnd, first_pid):
    """Processes first_pid (A's holder), +1 (B's waiter), +2 (a late acquire through A). A
    stop may catch A inside a transaction of a background client: that client's locks then
    stay taken (B's requests for them answer 503 after lock_timeout, recorded as unknown)
    until A continues; the stopped holder's lock is not among them."""
    lease = rng.randrange(800, 1600)
    res = "stop-lock-%d-%d" % (rnd, rng.randrange(1000))
    p1, p2, p3 = (Proc(hist, first_pid + i, s) for i, s in enumerate((a, b, a)))
    h1 = p1.acquire(res, ttl_ms=lease)
    if not check(h1, "round %d: the first acquire on A was refused" % rnd):
        return
    os.kill(a.proc.pid, signal.SIGSTOP)
    t_stop = time.monotonic()
    # The extend waits in A's socket until A continues (long enough to outlive B's grant, if
    # it were wrongly applied).
    ext = {}
    t_ext = threading.Thread(target=lambda: ext.update(
        code=p1.hold_op("extend", h1, ttl_ms=60000)))
    t_ext.start()
    got = {}
    t_b = threading.Thread(target=lambda: got.update(
        hold=p2.acquire(res, ttl_ms=60000, wait_ms=lease + WAIT_BOUND_S * 1000)))
    t_b.start()
    t_b.join(lease / 1000 + WAIT_BOUND_S + 5)
    stopped_for = time.monotonic() - t_stop
    h2 = got.get("hold")
    check(h2, "round %d: B did not grant the lock after A's client's lease (%d ms) ran out"
          % (rnd, lease))
    # A stays stopped until B's grant, which can only come once the lease has run out (the
    # checker judges that: no overlap): so the stop outlasts the lease, counted from the grant
    # (stopped_for is counted from the SIGSTOP, a little after the grant).
    os.kill(a.proc.pid, signal.SIGCONT)
    t_ext.join(60)
    t_b.join(1)
    check(ext.get("code") == "hold_ended", "round %d: the extend A took while stopped answered "
          "%s, not hold_ended" % (rnd, ext.get("code")))
    check(p1.hold_op("release", h1) == "hold_ended",
          "round %d: the release of the expired hold did not answer hold_ended" % rnd)
    check(p1.read(h1["id"]) == "expired", "round %d: the first hold is not expired" % rnd)
    if h2:
        check(h2["fence"][res] > h1["fence"][res], "round %d: fence %d after %d" %
              (rnd, h2["fence"][res], h1["fence"][res]))
        check(p3.acquire(res, ttl_ms=1000) is None,
              "round %d: A granted the lock that B's client holds" % rnd)
        check(p2.hold_op("extend", h2, ttl_ms=60000) is None, "round %d: B's extend" % rnd)
        check(p2.hold_op("release", h2) is None, "round %d: B's release" % rnd)
    print("round %d: lease %d ms, A stopped %.0f ms until B's grant, fences %s -> %s" %
          (rnd, lease, stopped_for * 1000, h1["fence"][res], h2 and h2["fence"][res]),
          flush=True)
    for p in (p1, p2, p3):
        p.close()


def main():
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    binary, checker = (os.path.abspath(p) for p in sys.argv[1:3])
    pgtest.need_pg()
    seed = seed_from_env()
    rng = random.Random(seed)
    pgtest.reset_schema()
    a = Holdfastd(binary, pgtest.URL)
    b = Holdfastd(binary, pgtest.URL)
    hist = History()
    for name in ("bg-0", "bg-1", "bg-2"):
        hist.add(type="resource", name=name, capacity=1)
    stop = threading.Event()
    bg = [threading.Thread(target=background,
                           args=(hist, 100 + i, (a, b)[i % 2], random.Random(rng.random()),
                                 stop))
          for i in range(4)]
    keep = tempfile.mkdtemp(prefix="hf-sigstop-")
    path = os.path.join(keep, "history.jsonl")
    try:
        for t in bg:
            t.start()
        for rnd in range(ROUNDS):
            one_round(hist, a, b, rng, rnd, 10 * (rnd + 1))
    finally:
        os.kill(a.proc.pid, signal.SIGCONT)  # never leave it stopped
        stop.set()
        for t in bg:
            t.join(90)
        hist.write(path)
        ra, rb = a.stop(), b.stop()
    check(ra == 0 and rb == 0, "holdfastd exit status %s, %s" % (ra, rb))
    rc, out = run_check(checker, path)
    check(rc == 0, "holdfast-check: status %d on %s:\n%s" % (rc, path, out))
    # The checker must see what a wrong engine would do: the instance, continued, acts on
    # the lease it knew before the stop — the first round's holder's extend and release
    # succeed, and the hold reads back released — though B had granted the lock meanwhile.
    lines = [json.loads(l) for l in open(path)]
    for i, line in enumerate(lines):
        if line.get("process") != 10 or line.get("type") == "invoke":
            continue
        if line["f"] in ("extend", "release"):
            lines[i] = {"process": 10, "type": "ok", "f": line["f"], "hold": line["hold"],
                        "time_us": line["time_us"]}
        elif line["f"] == "read":
            line["state"] = "released"
    bad = os.path.join(keep, "history-bad.jsonl")
    with open(bad, "w") as f:
        f.write("".join(json.dumps(x) + "\n" for x in lines))
    rc_bad, out_bad = run_check(checker, bad, "--max-print", "1")
    check(rc_bad == 1, "holdfast-check did not reject the stopped instance's extend answered "
          "ok (status %d):\n%s" % (rc_bad, out_bad))
    ops = sum(1 for x in lines if x.get("type") == "invoke")
    print("%d operations, %d SIGSTOPs longer than a lease; holdfast-check: %s; the same "
          "history with the stopped instance acting on its old lease: %s" %
          (ops, ROUNDS, out.strip(), out_bad.strip().splitlines()[0] if out_bad.strip()
           else "(nothing)"), flush=True)
    if failures:
        print("%d failure(s); seed %d; history %s; logs %s %s" %
              (len(failures), seed, path, a.log_path, b.log_path))
        sys.exit(1)
    subprocess.run(["rm", "-rf", keep, a.dir, b.dir], check=False)


if __name__ == "__main__":
    main()
