#!/usr/bin/env python3
"""test_saga_amqp.py — saga steps that call a service listening on RabbitMQ queues: the real
holdfastd on a temporary embedded store, a private rabbitmq-server (tests/relay/brokers.py
starts and stops it), and saga_amqp_service (tests/saga/amqp_service.c) on the queues
"payments" and "refunds", which logs every request with its message id.

Checks: the happy path (the payment's reply feeds a later step's template); the service
answers 402 → no retry, the holds compensated in reverse order, no refund; the service never
answers → the step times out, is uncertain, and its refund runs first, then the holds in
reverse order; validation errors name their path; SIGTERM while a request waits for its reply
stops holdfastd promptly, and the next one resumes the saga (its threads start at open) and
sends the request again with the same message id. Skips (77) without rabbitmq-server.

usage: test_saga_amqp.py PATH/TO/holdfastd PATH/TO/saga_amqp_service   (Python 3 stdlib only)
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "server"))
sys.path.insert(0, os.path.join(HERE, "..", "relay"))
import brokers  # noqa: E402
import hfserver  # noqa: E402


def hold_step(name, resource, capacity):
    return {"name": name,
            "action": {"hold": {"op": "acquire", "resource": resource, "capacity": capacity,
                                "ttl_ms": 60000}},
            "compensation": {"hold": {"op": "release", "of": name}}}


def booking_type():
    pay = {"amqp": {"url": "{{input.amqp}}", "routing_key": "payments",
                    "body": {"card": "{{input.card}}", "amount": 120, "saga": "{{saga.id}}"},
                    "ok": [201], "timeout_ms": 1500},
           "retry": {"attempts": 1}}
    refund = {"amqp": {"url": "{{input.amqp}}", "routing_key": "refunds",
                       "body": {"key": "{{step.idempotency_key}}"}}}
    receipt = {"amqp": {"url": "{{input.amqp}}", "exchange": "", "routing_key": "refunds",
                        "body": {"payment": "{{steps.pay.body.payment}}"}}}
    return {"defaults": {"retry": {"attempts": 3, "backoff_ms": 10, "max_backoff_ms": 50},
                         "timeout_ms": 5000},
            "steps": [hold_step("seat", "flight/{{input.tag}}/seat", 1),
                      hold_step("bags", "flight/{{input.tag}}/bags", 10),
                      {"name": "pay", "action": pay, "compensation": refund},
                      {"name": "confirm_seat", "action": {"hold": {"op": "confirm", "of": "seat"}}},
                      # A later step reads the payment's reply (a template over an AMQP result).
                      {"name": "echo", "action": receipt}]}


class T:
    def __init__(self, holdfastd, service):
        self.rabbit = brokers.Rabbit()
        self.dir = tempfile.mkdtemp(prefix="hf-saga-amqp-")
        hfserver.BIN = os.path.abspath(holdfastd)
        self.srv = hfserver.Server(store_dir=self.dir)
        self.svc = subprocess.Popen([service, self.rabbit.url], stdout=subprocess.PIPE, text=True)
        assert self.svc.stdout.readline().strip() == "ready"
        self.lines = []
        self.lock = threading.Lock()
        threading.Thread(target=self._read, daemon=True).start()
        st, body, _ = self.srv.put("/v1/saga-types/booking", booking_type())
        assert st in (200, 201), (st, body)
        self.n = 0

    def _read(self):
        for line in self.svc.stdout:
            with self.lock:
                self.lines.append(line.split(" ", 2))

    def calls(self, sid):
        with self.lock:
            return [(q, mid) for q, mid, body in self.lines if sid in mid or sid in body]

    def start(self, card, type_name="booking"):
        self.n += 1
        inp = {"amqp": self.rabbit.url, "card": card, "tag": "t%d" % self.n}
        st, body, _ = self.srv.post("/v1/sagas", {"type": type_name, "input": inp})
        assert st == 201, (st, body)
        return body["id"]

    def wait(self, sid, states, timeout=20):
        deadline = time.time() + timeout
        while True:
            st, body, _ = self.srv.get("/v1/sagas/" + sid)
            assert st == 200, (st, body)
            if body["state"] in states:
                return body
            assert time.time() < deadline, json.dumps(body, indent=1)
            time.sleep(0.02)

    def live_holds(self, sid):
        st, body, _ = self.srv.get("/v1/holds?owner=saga/%s" % sid)
        assert st == 200, (st, body)
        return [h for h in body["holds"] if h["state"] in ("tentative", "confirmed")]

    def close(self):
        try:
            assert self.srv.stop() == 0, self.srv.log_text()[-3000:]
        finally:
            self.svc.kill()
            self.svc.wait()
            self.rabbit.close()
            shutil.rmtree(self.dir, ignore_errors=True)


def compensations(body):
    return [e["step"] for e in body["timeline"]
            if e["phase"] == "compensation" and e["what"] == "succeeded"]


def test_happy_path(t):
    sid = t.start("ok")
    body = t.wait(sid, ("completed", "failed"))
    assert body["state"] == "completed", body
    pay = next(s for s in body["steps"] if s["name"] == "pay")
    assert pay["result"]["status"] == 201 and pay["result"]["body"]["payment"].startswith("pay-")
    echo = next(s for s in body["steps"] if s["name"] == "echo")
    assert echo["result"]["body"]["refunded"] == pay["result"]["body"]["payment"], echo
    # The message id is the step's idempotency key: "<saga id>/<step>/<phase>".
    assert (("payments", sid + "/pay/action") in t.calls(sid)), t.calls(sid)
    assert sorted(h["state"] for h in t.live_holds(sid)) == ["confirmed", "tentative"]


def test_declined(t):
    sid = t.start("declined")
    body = t.wait(sid, ("completed", "failed"))
    assert body["state"] == "failed", body
    assert "402" in body["error"]["message"], body["error"]
    pay = next(s for s in body["steps"] if s["name"] == "pay")
    assert pay["attempts"] == 1 and not pay.get("uncertain"), pay
    assert compensations(body) == ["bags", "seat"], body["timeline"]
    assert [q for q, _ in t.calls(sid)] == ["payments"], t.calls(sid)  # no refund
    assert t.live_holds(sid) == []


def test_no_answer(t):
    sid = t.start("silent")
    body = t.wait(sid, ("completed", "failed"))
    assert body["state"] == "failed", body
    pay = next(s for s in body["steps"] if s["name"] == "pay")
    assert pay["uncertain"] is True and "no reply" in pay["error"]["message"], pay
    # Sent but never answered: the refund runs first, then the holds in reverse order.
    assert compensations(body) == ["pay", "bags", "seat"], body["timeline"]
    assert t.calls(sid) == [("payments", sid + "/pay/action"),
                            ("refunds", sid + "/pay/compensation")], t.calls(sid)
    assert t.live_holds(sid) == []


def test_validation(t):
    bad = booking_type()
    del bad["steps"][2]["action"]["amqp"]["routing_key"]
    st, body, _ = t.srv.put("/v1/saga-types/bad", bad)
    assert st == 422 and body["error"]["message"].startswith(
        "steps[2].action.amqp.routing_key: "), body
    bad = booking_type()
    bad["steps"][2]["compensation"]["amqp"]["url"] = "http://x"
    st, body, _ = t.srv.put("/v1/saga-types/bad", bad)
    assert st == 422 and body["error"]["message"].startswith(
        "steps[2].compensation.amqp.url: must start with amqp://"), body
    bad = booking_type()
    bad["steps"][2]["action"]["amqp"]["reply_to"] = "x"
    st, body, _ = t.srv.put("/v1/saga-types/bad", bad)
    assert st == 422 and "unknown field \"reply_to\"" in body["error"]["message"], body


def until(what, fn, timeout=20):
    deadline = time.time() + timeout
    while not fn():
        assert time.time() < deadline, what
        time.sleep(0.02)


def test_stop_mid_call(t):
    """SIGTERM while a request waits 60 s for its reply: holdfastd stops before hfserver's 30 s
    (the wait looks at the stop flag); the next holdfastd finds the unfinished saga at open,
    starts its threads and sends the step again with the same message id."""
    slow = booking_type()
    slow["steps"][2]["action"]["amqp"]["timeout_ms"] = 60000
    st, body, _ = t.srv.put("/v1/saga-types/slow", slow)
    assert st in (200, 201), (st, body)
    sid = t.start("silent", "slow")
    sent = ("payments", sid + "/pay/action")
    until("the payment is sent", lambda: sent in t.calls(sid))
    assert t.srv.stop() == 0, t.srv.log_text()[-3000:]
    t.srv = hfserver.Server(store_dir=t.dir)
    until("the payment is sent again", lambda: t.calls(sid).count(sent) == 2)
    assert t.wait(sid, ("running", "completed", "failed"))["state"] == "running"


def main():
    if len(sys.argv) != 3:
        print(__doc__)
        return 2
    if not os.access(brokers.RABBITMQ_SERVER, os.X_OK):
        print("SKIP: %s is not installed (scripts/deps test)" % brokers.RABBITMQ_SERVER)
        return 77
    t = T(sys.argv[1], sys.argv[2])
    failed = 0
    try:
        for name, fn in list(globals().items()):
            if name.startswith("test_") and callable(fn):
                t0 = time.time()
                try:
                    fn(t)
                    print("ok   %s (%.1fs)" % (name, time.time() - t0))
                except Exception as e:  # report every test, then fail
                    failed += 1
                    print("FAIL %s: %r" % (name, e))
    finally:
        t.close()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
