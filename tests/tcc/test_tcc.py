#!/usr/bin/env python3
"""test_tcc.py — TCC transactions (POST /v1/transactions) end to end: the real holdfastd on a
temporary embedded store, holdfast's own holds as participants, and HTTP participants served by
a small bank in this process that keeps dtm's barrier table (docs/sagas.md, "TCC").

Checks: all confirm; one try refused → every try cancelled; the timeout → every try cancelled;
a cancel that reaches the bank before its (delayed) try → the late try holds nothing; SIGKILL
of holdfastd between the tries and the confirms → after the restart confirmed or cancelled,
nothing held; validation errors and idempotent starts; the CLI (`holdfast tx`).

usage: test_tcc.py PATH/TO/holdfastd PATH/TO/holdfast   (Python 3 standard library only)
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
import urllib.parse

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "server"))
import hfserver  # noqa: E402


class Bank:
    """A TCC participant: POST /try|/confirm|/cancel?gid=&branch_id=&op= with {"account"}.
    The barrier (dtm's table): a row per (gid, branch, op), inserted once; a cancel also inserts
    the try's row, so a try that comes after its cancel finds its row taken and does nothing,
    and a cancel whose try never came does nothing either. `refuse` holds accounts whose try
    answers 409; `delay` maps an account to seconds its try sleeps before the barrier."""

    def __init__(self):
        self.lock = threading.Lock()
        self.barrier = set()
        self.held = {}    # (gid, branch) -> "tried" | "confirmed"
        self.log = []     # (op, gid, branch, what)
        self.refuse = set()
        self.delay = {}
        bank = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(n) or b"{}")
                u = urllib.parse.urlparse(self.path)
                q = dict(urllib.parse.parse_qsl(u.query))
                op = u.path.strip("/")
                status, what = bank.handle(op, q["gid"], q["branch_id"], q["op"], body)
                out = json.dumps({"result": what}).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(out)))
                    self.send_header("Connection", "close")
                    self.end_headers()
                    self.wfile.write(out)
                except OSError:
                    pass  # the caller left: a timeout, a killed holdfastd

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = "http://127.0.0.1:%d" % self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def handle(self, path, gid, branch, op, body):
        assert path == op, (path, op)
        account = body.get("account")
        if op == "try" and account in self.delay:
            time.sleep(self.delay[account])
        with self.lock:
            what = self._apply(op, gid, branch, account)
            self.log.append((op, gid, branch, what))
        return (409 if what == "refused" else 200), what

    def _apply(self, op, gid, branch, account):
        if (gid, branch, op) in self.barrier:
            return "skipped"  # a repeat, or a try after its cancel
        if op == "try":
            if account in self.refuse:
                return "refused"  # nothing inserted: the try did not happen
            self.barrier.add((gid, branch, "try"))
            self.held[(gid, branch)] = "tried"
            return "held"
        self.barrier.add((gid, branch, op))
        if op == "confirm":
            self.held[(gid, branch)] = "confirmed"
            return "confirmed"
        if (gid, branch, "try") not in self.barrier:
            self.barrier.add((gid, branch, "try"))  # the late try will find it
            return "null_cancel"
        self.held.pop((gid, branch), None)
        return "cancelled"

    def holding(self, gid):
        with self.lock:
            return {b: s for (g, b), s in self.held.items() if g == gid}

    def ops(self, gid):
        with self.lock:
            return [(op, b, what) for op, g, b, what in self.log if g == gid]


class T:
    def __init__(self, binary, cli):
        hfserver.BIN = os.path.abspath(binary)
        self.cli = os.path.abspath(cli)
        self.dir = tempfile.mkdtemp(prefix="hf-tcc-test-")
        self.srv = hfserver.Server(store_dir=self.dir)
        self.bank = Bank()
        self.n = 0

    def restart(self):
        self.srv.kill()
        self.srv = hfserver.Server(store_dir=self.dir)

    def http(self, account, body=None):
        b = self.bank.url
        return {"http": {"try": b + "/try", "confirm": b + "/confirm", "cancel": b + "/cancel",
                         "body": body or {"account": account, "amount": 30}}}

    def start(self, participants, timeout_ms=10000, key=None):
        h = {"Idempotency-Key": key} if key else None
        st, body, _ = self.srv.post("/v1/transactions",
                                    {"participants": participants, "timeout_ms": timeout_ms}, headers=h)
        assert st == 201, (st, body)
        return body

    def wait(self, tid, states, timeout=60):
        return self.srv.wait_state("/v1/transactions/" + tid, states, timeout)

    def live_holds(self, tid):
        return self.srv.live_holds("saga/" + tid)

    def seat(self, tag):
        self.n += 1
        return {"hold": {"resource": "tcc/%s/%d" % (tag, self.n), "capacity": 1}}

    def close(self):
        assert self.srv.stop() == 0, self.srv.log_text()[-3000:]
        self.bank.httpd.shutdown()
        shutil.rmtree(self.dir, ignore_errors=True)


def test_all_confirm(t):
    tx = t.start([t.seat("ok"), t.http("alice"), t.seat("ok"), t.http("bob")])
    assert tx["state"] in ("trying", "confirming", "confirmed"), tx
    body = t.wait(tx["id"], ["confirmed", "cancelled", "cancel_failed"])
    assert body["state"] == "confirmed", body
    assert [p["state"] for p in body["participants"]] == ["confirmed"] * 4, body
    assert [p["branch_id"] for p in body["participants"]] == ["01", "02", "03", "04"]
    held = t.live_holds(tx["id"])
    assert sorted(h["state"] for h in held) == ["confirmed", "confirmed"], held
    assert t.bank.holding(tx["id"]) == {"02": "confirmed", "04": "confirmed"}
    assert "token" not in json.dumps(body)


def test_one_try_fails_all_released(t):
    t.bank.refuse.add("carol")
    tx = t.start([t.seat("ko"), t.http("alice"), t.http("carol"), t.seat("ko")])
    body = t.wait(tx["id"], ["confirmed", "cancelled", "cancel_failed"])
    assert body["state"] == "cancelled", body
    states = [p["state"] for p in body["participants"]]
    assert states == ["cancelled", "cancelled", "try_failed", "pending"], states
    assert t.live_holds(tx["id"]) == []
    assert t.bank.holding(tx["id"]) == {}
    # reverse order: alice (02) cancelled, carol's refused try is not cancelled
    assert [o for o in t.bank.ops(tx["id"]) if o[0] == "cancel"] == [("cancel", "02", "cancelled")]


def test_taken_seat_fails_the_transaction(t):
    seat = t.seat("taken")
    first = t.start([seat])
    assert t.wait(first["id"], ["confirmed", "cancelled"])["state"] == "confirmed"
    tx = t.start([t.http("dave"), seat])
    body = t.wait(tx["id"], ["confirmed", "cancelled", "cancel_failed"])
    assert body["state"] == "cancelled" and body["error"]["code"] == "unavailable", body
    assert t.bank.holding(tx["id"]) == {}
    assert len(t.live_holds(first["id"])) == 1


def test_timeout_releases_all(t):
    t.bank.delay["slow"] = 3.0
    tx = t.start([t.seat("to"), t.http("alice"), t.http("slow")], timeout_ms=800)
    body = t.wait(tx["id"], ["confirmed", "cancelled", "cancel_failed"])
    assert body["state"] == "cancelled" and body["error"]["code"] == "lease_expired", body
    assert t.live_holds(tx["id"]) == []
    # The slow try was sent and never answered in time: its cancel ran (a null cancel at the
    # bank), and when the try finally arrives, the barrier makes it a no-op.
    deadline = time.time() + 20
    while len([o for o in t.bank.ops(tx["id"]) if o[0] == "try" and o[1] == "03"]) < 1:
        assert time.time() < deadline, t.bank.ops(tx["id"])
        time.sleep(0.05)
    ops = t.bank.ops(tx["id"])
    assert ("cancel", "03", "null_cancel") in ops, ops
    assert ("try", "03", "skipped") in ops, ops
    assert ops.index(("cancel", "03", "null_cancel")) < ops.index(("try", "03", "skipped")), ops
    assert t.bank.holding(tx["id"]) == {}, t.bank.holding(tx["id"])
    del t.bank.delay["slow"]


def test_kill_between_try_and_confirm(t):
    """SIGKILL while tries are in flight or just done (a slow try keeps the transaction in its
    try phase); after the restart every transaction ends confirmed or cancelled, nothing held."""
    t.bank.delay["sleepy"] = 0.6
    txs = []
    for k in range(3):
        tx = t.start([t.seat("kill"), t.http("alice"), t.http("sleepy"), t.seat("kill")],
                     timeout_ms=5000)
        txs.append(tx["id"])
        time.sleep(0.2 + 0.3 * k)
        t.restart()
    del t.bank.delay["sleepy"]
    for tid in txs:
        body = t.wait(tid, ["confirmed", "cancelled", "cancel_failed"])
        assert body["state"] in ("confirmed", "cancelled"), body
        held = t.live_holds(tid)
        bank = t.bank.holding(tid)
        if body["state"] == "confirmed":
            assert sorted(h["state"] for h in held) == ["confirmed", "confirmed"], held
            assert bank == {"02": "confirmed", "03": "confirmed"}, bank
        else:
            assert held == [] and bank == {}, (held, bank)
    # the deadline holds are gone too
    st, body, _ = t.srv.get("/v1/holds?limit=1000")
    assert not [h for h in body["holds"] if h["state"] == "tentative"], body


def test_kill_then_deadline_passes(t):
    """SIGKILL while a try is at the bank, restart after the deadline: the try's step never
    checkpointed, yet it may have acted, so its cancel is sent (a barrier step) — the bank,
    whatever the order in which the late try and the cancel arrive, ends holding nothing."""
    t.bank.delay["late"] = 2.5
    tx = t.start([t.http("late"), t.seat("late")], timeout_ms=600)
    time.sleep(0.3)
    t.srv.kill()
    time.sleep(0.6)  # past the deadline
    t.srv = hfserver.Server(store_dir=t.dir)
    body = t.wait(tx["id"], ["confirmed", "cancelled", "cancel_failed"])
    assert body["state"] == "cancelled" and body["error"]["code"] == "lease_expired", body
    assert body["participants"][0]["state"] == "cancelled", body
    deadline = time.time() + 20
    while not [o for o in t.bank.ops(tx["id"]) if o[0] == "try"]:
        assert time.time() < deadline, t.bank.ops(tx["id"])
        time.sleep(0.05)
    ops = t.bank.ops(tx["id"])
    assert [o for o in ops if o[0] == "cancel"], ops
    assert t.bank.holding(tx["id"]) == {}, ops
    assert t.live_holds(tx["id"]) == []
    del t.bank.delay["late"]


def test_validation_and_idempotency(t):
    bad = [({"participants": []}, "participants"),
           ({"participants": [{"hold": {"resource": "x"}}]}, "timeout_ms"),
           ({"participants": [{"hold": {"resource": ""}}], "timeout_ms": 10}, "participants[0]"),
           ({"participants": [{"hold": {"resource": "x", "units": 0}}], "timeout_ms": 10}, "units"),
           ({"participants": [{"http": {"try": "ftp://x", "confirm": "http://x", "cancel": "http://x"}}],
             "timeout_ms": 10}, "http.try"),
           ({"participants": [{"hold": {"resource": "x"}, "http": {}}], "timeout_ms": 10}, "participants[0]"),
           ({"participants": [{"hold": {"resource": "x"}}] * 32, "timeout_ms": 10}, "1..31"),
           ({"participants": [{"hold": {"resource": "x"}}], "timeout_ms": 10, "x": 1}, "unknown field")]
    for req, what in bad:
        st, body, _ = t.srv.post("/v1/transactions", req)
        assert st == 400 and body["error"]["code"] == "invalid_argument", (req, st, body)
        assert what in body["error"]["message"], (what, body)
    seat = t.seat("idem")
    a = t.start([seat], key="tx-idem-1")
    st, b, _ = t.srv.post("/v1/transactions", {"participants": [seat], "timeout_ms": 10000},
                          headers={"Idempotency-Key": "tx-idem-1"})
    assert st == 200 and b["id"] == a["id"], (st, b)
    st, c, _ = t.srv.post("/v1/transactions", {"participants": [seat], "timeout_ms": 9000},
                          headers={"Idempotency-Key": "tx-idem-1"})
    assert st == 422 and c["error"]["code"] == "idempotency_mismatch", (st, c)
    st, d, _ = t.srv.get("/v1/transactions/" + "0" * 32)
    assert st == 404, (st, d)
    # a saga is not a transaction
    st, _, _ = t.srv.put("/v1/saga-types/plain", {"steps": [
        {"name": "s", "action": {"hold": {"op": "acquire", "resource": "plain", "ttl_ms": 1000}}}]})
    st, s, _ = t.srv.post("/v1/sagas", {"type": "plain", "input": {}})
    st, d, _ = t.srv.get("/v1/transactions/" + s["id"])
    assert st == 404 and "saga" in d["error"]["message"], (st, d)
    # and a transaction is a saga, listed under its type
    st, lst, _ = t.srv.get("/v1/sagas?type=transaction")
    assert a["id"] in [i["id"] for i in lst["items"]], lst


def test_cli(t):
    env = dict(os.environ, HOLDFAST_SERVER=t.srv.url)

    def run(*args, stdin=None):
        p = subprocess.run([t.cli] + list(args), input=stdin,
                           capture_output=True, text=True, env=env, timeout=60)
        return p.returncode, p.stdout, p.stderr

    req = json.dumps({"participants": [t.seat("cli"), t.http("erin")], "timeout_ms": 10000})
    rc, out, err = run("tx", "start", "--idempotency-key", "cli-tx-1", "-", stdin=req)
    assert rc == 0, (rc, out, err)
    tid = json.loads(out)["id"]
    t.wait(tid, ["confirmed"])
    rc, out, err = run("tx", "get", tid)
    assert rc == 0 and json.loads(out)["state"] == "confirmed", (rc, out, err)
    rc, out, err = run("tx", "start", "{\"participants\": []}")
    assert rc != 0 and "participants" in err, (rc, out, err)


def main():
    t = T(sys.argv[1], sys.argv[2])
    return hfserver.run_tests(globals(), t, [t.srv])


if __name__ == "__main__":
    sys.exit(main())
