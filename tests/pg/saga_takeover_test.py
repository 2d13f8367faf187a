#!/usr/bin/env python3
"""saga_takeover_test.py — sagas on PostgreSQL with two holdfastd instances over one schema: a
saga is owned by one instance at a time (owner lease HF__PG_SAGA_LEASE_MS, 5 s; docs/sagas.md).

Cases:
- the instance running a saga is SIGKILLed in the middle of an HTTP step: the other takes the
  saga over once the lease has run out, runs that step again with the same Idempotency-Key,
  and completes it; the seat hold is confirmed, none left tentative;
- the same mid-step kill where a later step fails for good: the other instance compensates
  (the undo calls in reverse order), no hold left;
- the instance running a saga is stopped (SIGSTOP) past its lease mid-step: the other takes
  the saga over and completes it; resumed (SIGCONT), the stopped one's checkpoint is refused
  (its version is old), so the saga's record stays the other's: one timeline, each step once;
- neither instance runs a saga the other owns while that one lives (one owner at a time).

usage (under tests/pg/with_pg.sh): saga_takeover_test.py PATH/TO/holdfastd
"""
import json
import os
import signal
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "saga"))
sys.path.insert(0, os.path.join(HERE, "..", "server"))
import hfserver  # noqa: E402
import pgtest  # noqa: E402
from test_sagas import Service, http_step, seat_step, FAST  # noqa: E402

TAKEOVER_S = 60  # the lease (5 s) + the rescan (1 s), with room for a loaded machine

CONFIRM = {"name": "confirm_seat", "action": {"hold": {"op": "confirm", "of": "seat"}}}


class Pair:
    def __init__(self, binary):
        pgtest.need_pg()
        pgtest.reset_schema()
        self.binary = os.path.abspath(binary)
        self.a = pgtest.Holdfastd(self.binary)
        self.b = pgtest.Holdfastd(self.binary)
        self.svc = Service()
        self.n = 0

    def req(self, srv, method, path, body=None):
        c = srv.client()
        try:
            return c.request(method, path, body)
        finally:
            c.close()

    def put_type(self, name, steps):
        st, body = self.req(self.a, "PUT", "/v1/saga-types/" + name,
                            {"defaults": FAST, "steps": steps})
        assert st in (200, 201), (st, body)

    def start(self, srv, type_name):
        self.n += 1
        tag = "k%d" % self.n
        st, body = self.req(srv, "POST", "/v1/sagas",
                            {"type": type_name, "input": {"url": self.svc.url, "tag": tag,
                                                          "ttl": 60000}})
        assert st == 201, (st, body)
        return body["id"], tag

    def wait(self, srv, sid, states, timeout=TAKEOVER_S):
        deadline = time.time() + timeout
        while True:
            st, body = self.req(srv, "GET", "/v1/sagas/" + sid)
            assert st == 200, (st, body)
            if body["state"] in states:
                return body
            if time.time() > deadline:
                raise AssertionError("saga %s stays %s: %s" % (sid, body["state"],
                                                              json.dumps(body, indent=1)))
            time.sleep(0.05)

    def live_holds(self, srv, sid):
        st, body = self.req(srv, "GET", "/v1/holds?owner=saga/%s" % sid)
        assert st == 200, (st, body)
        return [h for h in body["holds"] if h["state"] in ("tentative", "confirmed")]

    def owner(self, sid):
        rows = pgtest.psql("SELECT owner FROM hf_test.sagas WHERE id = '%s'" % sid)
        return rows[0] if rows else None

    def replace_a(self):
        """A new instance in the place of the killed one: two instances again."""
        self.a = pgtest.Holdfastd(self.binary)

    def close(self):
        for s in (self.a, self.b):
            if s.proc.poll() is None:
                assert s.stop() == 0, s.log_text()[-3000:]
        self.svc.httpd.shutdown()


def test_kill_mid_step_other_completes(p):
    p.svc.rules["slowA"] = {"delay": 3, "delay_calls": 1}
    p.put_type("take1", [seat_step(), http_step("slow", "slowA"), CONFIRM])
    p.svc.in_flight.clear()
    sid, tag = p.start(p.a, "take1")
    assert p.svc.in_flight.wait(30)
    first_owner = p.owner(sid)
    p.a.kill()
    body = p.wait(p.b, sid, ["completed", "failed", "compensation_failed"])
    assert body["state"] == "completed", body
    assert p.owner(sid) != first_owner, "the saga was not taken over"
    slow = p.svc.log("/slowA/" + tag)
    assert len(slow) == 2 and slow[0][3] == slow[1][3] == "%s/slow/action" % sid, slow
    holds = p.live_holds(p.b, sid)
    assert len(holds) == 1 and holds[0]["state"] == "confirmed", holds
    p.replace_a()


def test_kill_mid_step_other_compensates(p):
    p.svc.rules["slowB"] = {"delay": 3, "delay_calls": 1}
    p.svc.rules["payB"] = {"status": 400}
    p.put_type("take2", [http_step("a", "aB"), seat_step(), http_step("slow", "slowB"),
                         http_step("pay", "payB", comp=False)])
    p.svc.in_flight.clear()
    sid, tag = p.start(p.b, "take2")
    assert p.svc.in_flight.wait(30)
    p.b.kill()
    body = p.wait(p.a, sid, ["completed", "failed", "compensation_failed"])
    assert body["state"] == "failed", body
    order = [c[0] for c in p.svc.log() if tag in c[2]]
    assert order == ["aB", "slowB", "slowB", "payB", "undo_slowB", "undo_aB"], order
    assert p.live_holds(p.a, sid) == []
    p.b = pgtest.Holdfastd(p.binary)


def test_stopped_owner_checkpoint_refused(p):
    p.svc.rules["slowC"] = {"delay": 2, "delay_calls": 1}
    p.put_type("take3", [seat_step(), http_step("slow", "slowC"), CONFIRM])
    p.svc.in_flight.clear()
    sid, tag = p.start(p.a, "take3")
    assert p.svc.in_flight.wait(30)
    os.kill(p.a.proc.pid, signal.SIGSTOP)
    try:
        body = p.wait(p.b, sid, ["completed", "failed", "compensation_failed"])
    finally:
        os.kill(p.a.proc.pid, signal.SIGCONT)
    assert body["state"] == "completed", body
    version = body["version"]
    # the stopped instance's step ends now; its checkpoint must not land
    deadline = time.time() + 8
    while time.time() < deadline:
        st, now = p.req(p.a, "GET", "/v1/sagas/" + sid)
        assert st == 200 and now["state"] == "completed" and now["version"] == version, now
        time.sleep(0.2)
    assert [s["state"] for s in now["steps"]] == ["succeeded"] * 3, now
    c = p.a.client()
    events, _ = pgtest.all_events(c)
    c.close()
    mine = [e["type"] for e in events if e["resource"] == "saga/" + sid]
    assert mine.count("saga.step_completed") == 3 and mine[-1] == "saga.completed", mine
    assert mine.count("saga.completed") == 1, mine
    holds = p.live_holds(p.a, sid)
    assert len(holds) == 1 and holds[0]["state"] == "confirmed", holds


def test_one_owner_while_alive(p):
    """Sagas started on each instance stay with it while it lives: the other's rescan leaves
    them (its run would be refused), so each step runs once."""
    p.svc.rules["slowD"] = {"delay": 1}
    p.put_type("take4", [http_step("slow", "slowD"), seat_step(), CONFIRM])
    sagas = [p.start(srv, "take4") for srv in (p.a, p.b, p.a, p.b)]
    for sid, tag in sagas:
        body = p.wait(p.a, sid, ["completed", "failed", "compensation_failed"])
        assert body["state"] == "completed", body
        assert len(p.svc.log("/slowD/" + tag)) == 1, p.svc.log("/slowD/" + tag)


def main():
    pgtest.raise_fd_limit(1024)
    p = Pair(sys.argv[1])
    return hfserver.run_tests(globals(), p, [p.a, p.b])


if __name__ == "__main__":
    sys.exit(main())
