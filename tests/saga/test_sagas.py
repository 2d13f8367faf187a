#!/usr/bin/env python3
"""test_sagas.py — sagas end to end: the real holdfastd on a temporary embedded store, and a
tiny HTTP service (in this process) that records every call and fails or stalls on demand.

Checks: the happy path; a step failing after its retries → compensations in reverse order
(the service's call log proves the order) and the holds released; a compensation failing past
its budget → compensation_failed, then resume after the service recovers → failed; a lease
running out during a slow HTTP step → compensated; idempotent start; validation errors; and
SIGKILL of holdfastd during a slow HTTP step, during a compensation and between steps → after a
restart every saga completes or compensates and no hold is left.

Also the CLI (`holdfast saga ...`, `holdfast saga-type ...`) over the http:// engine, which
forwards the saga calls to holdfastd's routes.

On PostgreSQL (run under tests/pg/with_pg.sh: HF_TEST_ENGINE_URL is set): the same tests over
postgres://, where a killed instance's sagas are taken over by the next one once their owner
lease (5 s) has run out; the disk-full checkpoint test is the embedded engine's only.

usage: test_sagas.py PATH/TO/holdfastd PATH/TO/holdfast   (Python 3 standard library only)
"""
import http.server
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "server"))
import hfserver  # noqa: E402


class Service:
    """Answers every path. `rules` maps a path's first segment to a behaviour:
    {"status": N (default 201 for POST, 200 for GET), "fail": K (the first K calls answer
    `fail_status`), "fail_status": N, "delay": seconds, "delay_calls": K (only the first K)}."""

    def __init__(self):
        self.calls = []  # (segment, method, path, idempotency key, body)
        self.rules = {}
        self.lock = threading.Lock()
        self.in_flight = threading.Event()
        svc = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def handle_one(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n).decode() if n else ""
                seg = self.path.strip("/").split("/")[0]
                with svc.lock:
                    rule = svc.rules.get(seg, {})
                    seen = sum(1 for c in svc.calls if c[0] == seg)
                    svc.calls.append((seg, self.command, self.path,
                                      self.headers.get("Idempotency-Key"), body))
                if rule.get("delay") and seen < rule.get("delay_calls", 1 << 30):
                    svc.in_flight.set()
                    time.sleep(rule["delay"])
                status = rule.get("status", 201 if self.command == "POST" else 200)
                if seen < rule.get("fail", 0):
                    status = rule.get("fail_status", 503)
                out = json.dumps({"id": "%s-%d" % (seg, seen), "amount": 42,
                                  "path": self.path}).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(out)))
                    self.send_header("Connection", "close")
                    self.end_headers()
                    self.wfile.write(out)
                except OSError:
                    pass  # the caller left (a timeout, a killed holdfastd)

            do_GET = do_POST = do_PUT = do_DELETE = handle_one

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = "http://127.0.0.1:%d" % self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def log(self, prefix=None):
        with self.lock:
            return [c for c in self.calls if prefix is None or c[2].startswith(prefix)]


def http_step(name, seg, comp=True, ok=None, timeout_ms=None, retry=None, comp_retry=None):
    action = {"http": {"method": "POST", "url": "{{input.url}}/%s/{{input.tag}}" % seg,
                       "body": {"tag": "{{input.tag}}", "saga": "{{saga.id}}"}}}
    if ok:
        action["http"]["ok"] = ok
    if timeout_ms:
        action["http"]["timeout_ms"] = timeout_ms
    if retry:
        action["retry"] = retry
    step = {"name": name, "action": action}
    if comp:
        step["compensation"] = {"http": {
            "method": "POST",
            "url": "{{input.url}}/undo_%s/{{input.tag}}/{{steps.%s.body.id}}" % (seg, name)}}
        if comp_retry:
            step["compensation"]["retry"] = comp_retry
    return step


def seat_step(ttl="{{input.ttl}}"):
    return {"name": "seat",
            "action": {"hold": {"op": "acquire", "resource": "seat/{{input.tag}}",
                                "capacity": 1, "ttl_ms": ttl}},
            "compensation": {"hold": {"op": "release", "of": "seat"}}}


FAST = {"retry": {"attempts": 3, "backoff_ms": 10, "max_backoff_ms": 50}, "timeout_ms": 10000}


PG_URL = os.environ.get("HF_TEST_ENGINE_URL", "")
if PG_URL and not PG_URL.startswith("postgres"):
    PG_URL = ""


class T:
    def __init__(self, binary):
        hfserver.BIN = os.path.abspath(binary)
        self.dir = tempfile.mkdtemp(prefix="hf-saga-test-")
        # the last --engine wins: the embedded store by default, else the PostgreSQL one
        self.engine = ["--engine", PG_URL] if PG_URL else []
        if PG_URL:
            subprocess.run(os.environ["HF_TEST_ENGINE_RESET"], shell=True, check=True)
        self.srv = hfserver.Server(*self.engine, store_dir=self.dir)
        self.svc = Service()
        self.n = 0

    def restart(self, kill=True, env=None):
        if kill:
            self.srv.kill()
        else:
            assert self.srv.stop() == 0
        self.srv = hfserver.Server(*self.engine, store_dir=self.dir, env=env)

    def put_type(self, name, steps, defaults=FAST):
        st, body, _ = self.srv.put("/v1/saga-types/" + name, {"defaults": defaults, "steps": steps})
        assert st in (200, 201), (st, body)

    def start(self, type_name, ttl=60000, key=None, **extra):
        self.n += 1
        tag = "t%d" % self.n
        inp = {"url": self.svc.url, "tag": tag, "ttl": ttl}
        inp.update(extra)
        st, body, _ = self.srv.post("/v1/sagas", {"type": type_name, "input": inp},
                                    headers={"Idempotency-Key": key} if key else None)
        assert st == 201, (st, body)
        assert body["state"] == "running" and len(body["id"]) == 32
        return body["id"], tag

    def wait(self, sid, states, timeout=60):
        return self.srv.wait_state("/v1/sagas/" + sid, states, timeout)

    def live_holds(self, sid):
        return self.srv.live_holds("saga/" + sid)

    def parked_gauge(self):
        st, text, _ = self.srv.get("/metrics")
        assert st == 200, (st, text)
        for line in text.splitlines():
            if line.startswith("holdfast_sagas_compensation_failed "):
                return int(line.split()[1])
        raise AssertionError("no holdfast_sagas_compensation_failed in /metrics")

    def events(self, sid):
        st, body, _ = self.srv.get("/v1/events?limit=1000")
        return [e["type"] for e in body["events"] if e["resource"] == "saga/" + sid]

    def close(self):
        assert self.srv.stop() == 0, self.srv.log_text()[-3000:]  # a sanitizer report fails it
        self.svc.httpd.shutdown()
        shutil.rmtree(self.dir, ignore_errors=True)


def no_token_anywhere(body):
    assert "token" not in json.dumps(body), body


def test_happy_path(t):
    t.put_type("happy", [http_step("book", "book"), seat_step(),
                         {"name": "extend_seat",
                          "action": {"hold": {"op": "extend", "of": "seat", "ttl_ms": 120000}}},
                         http_step("pay", "pay"),
                         {"name": "confirm_seat",
                          "action": {"hold": {"op": "confirm", "of": "seat"}}}])
    sid, tag = t.start("happy")
    body = t.wait(sid, ["completed", "failed", "compensation_failed"])
    assert body["state"] == "completed", body
    assert [s["state"] for s in body["steps"]] == ["succeeded"] * 5
    assert body["steps"][2]["hold"]["expires_at_ms"] > body["steps"][2]["started_at_ms"] + 60000
    assert body["steps"][0]["result"]["body"]["id"] == "book-0"
    no_token_anywhere(body)
    calls = [c for c in t.svc.log() if c[2].endswith("/" + tag)]
    assert [c[0] for c in calls] == ["book", "pay"], calls
    assert calls[0][3] == "%s/book/action" % sid
    assert json.loads(calls[0][4]) == {"tag": tag, "saga": sid}
    holds = t.live_holds(sid)
    assert len(holds) == 1 and holds[0]["state"] == "confirmed", holds
    ev = t.events(sid)
    assert ev[0] == "saga.started" and ev[-1] == "saga.completed", ev
    assert ev.count("saga.step_completed") == 5, ev


def test_failure_compensates_in_reverse(t):
    t.svc.rules["pay2"] = {"status": 503}  # always: fails after its 3 attempts
    t.put_type("reverse", [http_step("a", "a2"), seat_step(), http_step("b", "b2"),
                           http_step("pay", "pay2", comp=False)])
    sid, tag = t.start("reverse")
    body = t.wait(sid, ["completed", "failed", "compensation_failed"])
    assert body["state"] == "failed", body
    assert body["error"]["code"] == "step_failed", body
    assert [s["state"] for s in body["steps"]] == ["compensated", "compensated", "compensated",
                                                   "failed"], body["steps"]
    assert body["steps"][3]["attempts"] == 3, body["steps"][3]
    calls = [c for c in t.svc.log() if tag in c[2]]
    assert [c[0] for c in calls] == ["a2", "b2", "pay2", "pay2", "pay2", "undo_b2", "undo_a2"], calls
    assert {c[3] for c in calls if c[0] == "pay2"} == {"%s/pay/action" % sid}
    assert calls[-1][2] == "/undo_a2/%s/a2-0" % tag, calls[-1]
    assert calls[-2][3] == "%s/b/compensation" % sid
    assert t.live_holds(sid) == []
    what = [(e["step"], e["phase"], e["what"]) for e in body["timeline"]]
    assert ("pay", "action", "retrying") in what and what[-1] == ("a", "compensation", "succeeded")
    ev = t.events(sid)
    assert "saga.compensating" in ev and ev[-1] == "saga.failed", ev


def test_final_4xx_is_not_retried(t):
    t.svc.rules["pay4"] = {"status": 402}
    t.put_type("declined", [seat_step(), http_step("pay", "pay4", comp=False)])
    sid, tag = t.start("declined")
    body = t.wait(sid, ["completed", "failed", "compensation_failed"])
    assert body["state"] == "failed" and body["steps"][1]["attempts"] == 1, body
    assert "HTTP 402" in body["error"]["message"], body["error"]
    assert t.live_holds(sid) == []


def test_compensation_budget_then_resume(t):
    t.svc.rules["undo_a3"] = {"status": 500}
    t.svc.rules["pay3"] = {"status": 400}
    t.put_type("stuck", [http_step("a", "a3", comp_retry={"attempts": 2, "backoff_ms": 10}),
                         seat_step(), http_step("pay", "pay3", comp=False)])
    sid, tag = t.start("stuck")
    body = t.wait(sid, ["completed", "failed", "compensation_failed"])
    assert body["state"] == "compensation_failed", body
    assert body["error"]["code"] == "compensation_failed", body["error"]
    assert body["steps"][0]["state"] == "compensation_failed"
    assert body["steps"][1]["state"] == "compensated"  # the hold went back before step a
    assert t.live_holds(sid) == []
    assert len([c for c in t.svc.log("/undo_a3/" + tag)]) == 2
    assert t.events(sid)[-1] == "saga.compensation_failed"
    parked = t.parked_gauge()
    assert parked >= 1, parked
    st, listed, _ = t.srv.get("/v1/sagas?state=compensation_failed&type=stuck")
    assert st == 200 and [s["id"] for s in listed["items"]] == [sid], listed
    # The service recovers; the operator resumes.
    t.svc.rules["undo_a3"] = {"status": 200}
    st, body, _ = t.srv.post("/v1/sagas/%s/resume" % sid)
    # The answer is the saga as it is after the wake: an idle worker may already have finished
    # the one compensation left (seen on PostgreSQL under load).
    assert st == 200 and body["state"] in ("compensating", "failed"), (st, body)
    body = t.wait(sid, ["failed", "compensation_failed"])
    assert body["state"] == "failed", body
    assert body["steps"][0]["state"] == "compensated"
    assert len([c for c in t.svc.log("/undo_a3/" + tag)]) == 3
    assert t.parked_gauge() == parked - 1
    st, again, _ = t.srv.post("/v1/sagas/%s/resume" % sid)
    assert st == 409 and again["error"]["code"] == "saga_state", again


def test_lease_expiry_during_slow_step(t):
    """The slow call is cut at the seat's lease end. It was sent without an answer, so it may
    have acted: its own compensation runs first (it must not need the reply), then the rest."""
    t.svc.rules["slow5"] = {"delay": 5}
    slow = http_step("slow", "slow5")
    slow["compensation"]["http"]["url"] = "{{input.url}}/undo_slow5/{{input.tag}}/{{saga.id}}"
    t.put_type("lease", [http_step("a", "a5"), seat_step(), slow])
    sid, tag = t.start("lease", ttl=700)
    body = t.wait(sid, ["completed", "failed", "compensation_failed"])
    assert body["state"] == "failed", body
    assert body["error"]["code"] == "lease_expired", body["error"]
    assert body["steps"][2]["state"] == "compensated" and body["steps"][2]["uncertain"], body
    assert body["steps"][0]["state"] == "compensated" and body["steps"][1]["state"] == "compensated"
    assert t.live_holds(sid) == []
    assert [c[0] for c in t.svc.log() if tag in c[2]] == ["a5", "slow5", "undo_slow5", "undo_a5"]


def test_confirmed_hold_no_longer_bounds(t):
    """Once confirmed, a hold is no deadline: a slow step after the confirm outlives the old
    lease (and the lease an extend gave) and the saga completes."""
    t.svc.rules["slow11"] = {"delay": 2}
    t.put_type("confirmed", [seat_step(),
                             {"name": "extend_seat",
                              "action": {"hold": {"op": "extend", "of": "seat", "ttl_ms": 700}}},
                             {"name": "confirm_seat",
                              "action": {"hold": {"op": "confirm", "of": "seat"}}},
                             http_step("slow", "slow11")])
    sid, tag = t.start("confirmed", ttl=700)
    body = t.wait(sid, ["completed", "failed", "compensation_failed"])
    assert body["state"] == "completed", body
    assert [h["state"] for h in t.live_holds(sid)] == ["confirmed"]


def test_idempotent_start_and_errors(t):
    t.put_type("idem", [http_step("a", "a6")])
    key = "start-%d" % time.monotonic_ns()
    sid, tag = t.start("idem", key=key)
    inp = {"url": t.svc.url, "tag": tag, "ttl": 60000}
    st, again, _ = t.srv.post("/v1/sagas", {"type": "idem", "input": inp},
                              headers={"Idempotency-Key": key})
    assert st == 200 and again["id"] == sid, (st, again)
    inp["tag"] = "other"
    st, bad, _ = t.srv.post("/v1/sagas", {"type": "idem", "input": inp},
                            headers={"Idempotency-Key": key})
    assert st == 422 and bad["error"]["code"] == "idempotency_mismatch", (st, bad)
    t.wait(sid, ["completed"])
    assert len(t.svc.log("/a6/" + tag)) == 1
    st, bad, _ = t.srv.put("/v1/saga-types/bad", {"steps": [
        {"name": "a", "action": {"http": {"method": "POST", "url": "{{steps.x.body.id}}"}}}]})
    assert st == 422 and bad["error"]["code"] == "invalid_saga_type", (st, bad)
    assert bad["error"]["message"] == \
        'steps[0].action.http.url: template refers to unknown step "x"', bad
    st, bad, _ = t.srv.post("/v1/sagas", {"type": "nope", "input": {}})
    assert st == 404 and bad["error"]["code"] == "unknown_saga_type", (st, bad)
    st, bad, _ = t.srv.get("/v1/sagas/" + "0" * 32)
    assert st == 404 and bad["error"]["code"] == "saga_not_found", (st, bad)
    st, bad, _ = t.srv.get("/v1/sagas?state=sleeping")
    assert st == 400, (st, bad)
    many = {"steps": [{"name": "s%d" % i, "action": {"http": {"method": "GET",
                                                              "url": "http://127.0.0.1:9/"}}}
                      for i in range(65)]}
    st, bad, _ = t.srv.put("/v1/saga-types/many", many)
    assert st == 422 and "1..64 steps" in bad["error"]["message"], (st, bad)
    st, bad, _ = t.srv.put("/v1/saga-types/bad%20name", {"steps": []})
    assert st == 400 and bad["error"]["code"] == "invalid_argument", (st, bad)
    st, bad, _ = t.srv.request("PUT", "/v1/saga-types/x", raw="{not json")
    assert st == 400 and bad["error"]["code"] == "invalid_json", (st, bad)
    st, bad, _ = t.srv.post("/v1/sagas", {"type": "idem", "input": [1]})
    assert st == 400 and bad["error"]["code"] == "invalid_argument", (st, bad)
    st, bad, _ = t.srv.post("/v1/sagas", {"type": "idem", "input": {}, "extra": 1})
    assert st == 400 and "extra" in bad["error"]["message"], (st, bad)
    st, bad, _ = t.srv.post("/v1/sagas", {"type": "idem", "input": {"x": "y" * 70000}})
    assert st == 400 and bad["error"]["code"] == "invalid_argument", (st, bad)
    st, bad, _ = t.srv.post("/v1/sagas/%s/resume" % ("0" * 32))
    assert st == 404 and bad["error"]["code"] == "saga_not_found", (st, bad)
    st, bad, _ = t.srv.get("/v1/sagas/not-an-id")
    assert st == 404 and bad["error"]["code"] == "saga_not_found", (st, bad)
    st, got, _ = t.srv.get("/v1/saga-types/idem")
    assert st == 200 and got["version"] == 1 and got["type"]["steps"][0]["name"] == "a", got


def test_kill_during_slow_step(t):
    """SIGKILL while step `slow` is in flight: after the restart it runs again with the same
    Idempotency-Key and the saga completes; the hold it took is confirmed, none left over."""
    t.svc.rules["slow7"] = {"delay": 3, "delay_calls": 1}
    t.put_type("crash1", [seat_step(), http_step("slow", "slow7"),
                          {"name": "confirm_seat", "action": {"hold": {"op": "confirm", "of": "seat"}}}])
    t.svc.in_flight.clear()
    sid, tag = t.start("crash1")
    assert t.svc.in_flight.wait(30)
    t.restart(kill=True)
    body = t.wait(sid, ["completed", "failed", "compensation_failed"])
    assert body["state"] == "completed", body
    slow = t.svc.log("/slow7/" + tag)
    assert len(slow) == 2 and slow[0][3] == slow[1][3] == "%s/slow/action" % sid, slow
    holds = t.live_holds(sid)
    assert len(holds) == 1 and holds[0]["state"] == "confirmed", holds


def test_kill_during_compensation(t):
    t.svc.rules["pay8"] = {"status": 400}
    t.svc.rules["undo_b8"] = {"delay": 3, "delay_calls": 1, "status": 200}
    t.put_type("crash2", [http_step("a", "a8"), seat_step(), http_step("b", "b8"),
                          http_step("pay", "pay8", comp=False)])
    t.svc.in_flight.clear()
    sid, tag = t.start("crash2")
    assert t.svc.in_flight.wait(30)
    t.restart(kill=True)
    body = t.wait(sid, ["completed", "failed", "compensation_failed"])
    assert body["state"] == "failed", body
    order = [c[0] for c in t.svc.log() if tag in c[2]]
    assert order == ["a8", "b8", "pay8", "undo_b8", "undo_b8", "undo_a8"], order
    assert t.live_holds(sid) == []


def test_kill_between_steps(t):
    """Kills land wherever the saga is (between steps or in one); each time the restarted
    store goes on from the checkpoint; in the end each saga completed or failed cleanly."""
    t.svc.rules["pay9"] = {"status": 400}
    t.put_type("crash3ok", [http_step("a", "a9"), seat_step(), http_step("b", "b9"),
                            {"name": "confirm_seat", "action": {"hold": {"op": "confirm", "of": "seat"}}}])
    t.put_type("crash3ko", [http_step("a", "a9"), seat_step(), http_step("b", "b9"),
                            http_step("pay", "pay9", comp=False)])
    sagas = []
    for k in range(3):  # after step k's checkpoint (or as close after as the polling gets)
        for name in ("crash3ok", "crash3ko"):
            sid, tag = t.start(name)
            sagas.append((name, sid, tag))
            deadline = time.time() + 30
            while time.time() < deadline:
                st, body, _ = t.srv.get("/v1/sagas/" + sid)
                if body["state"] != "running" or \
                        body["steps"][k]["state"] not in ("pending", "running"):
                    break
            t.restart(kill=True)
    for name, sid, tag in sagas:
        body = t.wait(sid, ["completed", "failed", "compensation_failed"])
        want = "completed" if name == "crash3ok" else "failed"
        assert body["state"] == want, body
        holds = t.live_holds(sid)
        assert (len(holds) == 1) if want == "completed" else holds == [], (name, holds)
        # every step's HTTP call carried its one key, whatever the number of tries
        for c in t.svc.log():
            if tag in c[2]:
                assert c[3].startswith("%s/" % sid), c


def test_checkpoint_fails_then_recovers(t):
    """The disk is full when a step ends: its checkpoint fails, the saga waits (logged) and
    goes on once commits work again."""
    if PG_URL:
        return  # HF_TEST_JOURNAL_FAULTS is the embedded engine's journal
    full = os.path.join(t.dir, "disk-full")
    t.restart(kill=False, env={"HF_TEST_JOURNAL_FAULTS": "fail_while=" + full})
    t.svc.rules["slow12"] = {"delay": 1, "delay_calls": 1}
    t.put_type("diskfull", [http_step("slow", "slow12"), seat_step()])
    t.svc.in_flight.clear()
    sid, tag = t.start("diskfull")
    assert t.svc.in_flight.wait(30)
    open(full, "w").close()
    deadline = time.time() + 60
    while "saga paused" not in t.srv.log_text():
        assert time.time() < deadline, t.srv.log_text()[-2000:]
        time.sleep(0.05)
    os.unlink(full)
    body = t.wait(sid, ["completed", "failed", "compensation_failed"])
    assert body["state"] == "completed", body
    assert len(t.live_holds(sid)) == 1
    t.restart(kill=False)


def test_cli(t):
    cli = os.path.abspath(sys.argv[2])
    env = dict(os.environ, HOLDFAST_SERVER=t.srv.url)

    def run(*args, stdin=None):
        p = subprocess.run([cli] + list(args), env=env, capture_output=True, text=True,
                           input=stdin, timeout=60)
        return p.returncode, p.stdout, p.stderr

    typ = {"defaults": FAST, "steps": [http_step("a", "a10"), seat_step()]}
    rc, out, err = run("saga-type", "put", "cli_type", "-", stdin=json.dumps(typ))
    assert rc == 0 and json.loads(out)["version"] == 1, (rc, out, err)
    rc, out, err = run("saga-type", "put", "cli_bad", "-", stdin='{"steps":[]}')
    assert rc == 1 and "invalid_saga_type" in err, (rc, out, err)
    t.n += 1
    inp = json.dumps({"url": t.svc.url, "tag": "t%d" % t.n, "ttl": 60000})
    rc, out, err = run("saga", "start", "cli_type", inp, "--idempotency-key", "cli-1")
    assert rc == 0, (rc, out, err)
    sid = json.loads(out)["id"]
    rc, out, err = run("saga", "start", "--idempotency-key", "cli-1", "cli_type", inp)
    assert rc == 0 and json.loads(out)["id"] == sid, (rc, out, err)
    t.wait(sid, ["completed"])
    rc, out, err = run("saga", "get", sid)
    assert rc == 0 and json.loads(out)["state"] == "completed" and "token" not in out, out
    rc, out, err = run("saga", "list", "--type", "cli_type", "--state", "completed")
    assert rc == 0 and out.split()[:3] == [sid, "completed", "cli_type"], out
    rc, out, err = run("saga", "resume", sid)
    assert rc == 2 and "saga_state" in err, (rc, err)
    rc, out, err = run("saga", "get", "0" * 32)
    assert rc == 3 and "saga_not_found" in err, (rc, err)


def main():
    t = T(sys.argv[1])
    return hfserver.run_tests(globals(), t, [t.srv])


if __name__ == "__main__":
    sys.exit(main())
