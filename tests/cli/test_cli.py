#!/usr/bin/env python3
"""test_cli.py — the holdfast command line end to end against a real holdfastd.

Each group starts its own holdfastd on a free loopback port with a fresh store, drives the
`holdfast` binary as a user or a script would, and checks output, --json and exit codes.

usage: test_cli.py --holdfastd PATH --holdfast PATH [GROUP...]   (no GROUP: all of them)
"""
import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "server"))
from hfserver import free_port  # noqa: E402

# Exit codes of docs/cli.md.
OK, USAGE, BUSY, NOT_FOUND, HOLD_GONE, UNREACHABLE, AUTH, SERVER = 0, 1, 2, 3, 4, 5, 6, 7
LOCK_LOST, NOT_FOUND_EXEC = 75, 127

HOLDFASTD = HOLDFAST = None


class Server:
    """One holdfastd on a free port with its own store; stop() ends it."""

    def __init__(self, extra=()):
        self.dir = tempfile.mkdtemp(prefix="hf-cli-test-")
        self.extra = list(extra)
        self.proc = None
        for _ in range(5):
            self.port = free_port()
            self.url = f"http://127.0.0.1:{self.port}"
            log = open(os.path.join(self.dir, "holdfastd.log"), "ab")
            self.proc = subprocess.Popen(
                [HOLDFASTD, "--listen", f"127.0.0.1:{self.port}", "--engine",
                 f"file:{self.dir}/holdfast.db", "--log-level", "warn"] + self.extra,
                stdout=log, stderr=log)
            log.close()
            if self._ready():
                return
            self.proc.kill()
            self.proc.wait()
        raise RuntimeError("holdfastd did not start; see " + self.dir)

    def _ready(self):
        for _ in range(200):
            if self.proc.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=1):
                    return True
            except Exception:
                time.sleep(0.05)
        return False

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class Result:
    def __init__(self, p):
        self.code, self.out, self.err = p.returncode, p.stdout, p.stderr

    def json(self):
        return json.loads(self.out)

    def __repr__(self):
        return f"exit {self.code}\nstdout: {self.out!r}\nstderr: {self.err!r}"


def hf(server, *args, env=None, timeout=60, url=None):
    """Runs `holdfast ARGS` against the server; returns its Result."""
    e = dict(os.environ)
    e["HOLDFAST_SERVER"] = url or server.url
    e["HOLDFAST_OWNER"] = "tester"
    e.update(env or {})
    p = subprocess.run([HOLDFAST] + [str(a) for a in args], capture_output=True, text=True,
                       env=e, timeout=timeout)
    return Result(p)


def expect(r, code, what=""):
    if r.code != code:
        raise AssertionError(f"{what}: want exit {code}, got {r!r}")
    return r


def check(cond, what):
    if not cond:
        raise AssertionError(what)


# ---- Groups. -----------------------------------------------------------------------------

def test_basic(s):
    """help, version, usage errors, the server option and an unreachable server."""
    expect(hf(s, "--help"), OK, "--help")
    expect(hf(s, "--version"), OK, "--version")
    for cmd in ["acquire", "extend", "confirm", "release", "get", "list", "resources",
                "events", "stats", "run"]:
        r = expect(hf(s, cmd, "--help"), OK, f"{cmd} --help")
        check("usage: holdfast " + cmd in r.out, f"{cmd} --help shows its usage: {r.out!r}")
    expect(hf(s), USAGE, "no command")
    expect(hf(s, "frobnicate"), USAGE, "unknown command")
    expect(hf(s, "acquire"), USAGE, "acquire without a resource")
    expect(hf(s, "acquire", "x", "--ttl", "0"), USAGE, "ttl out of range")
    expect(hf(s, "acquire", "x", "--bogus"), USAGE, "unknown option")
    expect(hf(s, "extend", "only-an-id"), USAGE, "extend without token")
    expect(hf(s, "run", "--", "true"), USAGE, "run without --lock")
    # The server may be named by option (before or after the command) or env.
    dead = f"http://127.0.0.1:{free_port()}"
    r = expect(hf(s, "list", url=dead), UNREACHABLE, "unreachable server")
    check("refused" in r.err and "127.0.0.1" in r.err, f"message names the server: {r.err!r}")
    expect(hf(s, "--server", s.url, "list", url=dead), OK, "--server before the command")
    expect(hf(s, "list", "--server", s.url, url=dead), OK, "--server after the command")
    r = expect(hf(s, "--json", "list", url=dead), UNREACHABLE, "--json error")
    check(r.json()["error"]["code"] == "engine_unavailable", r)
    # Any engine URL works: the embedded engine, no server at all.
    eng = f"file:{s.dir}/cli-embedded.db"
    r = expect(hf(s, "--engine", eng, "--json", "acquire", "--capacity", "1", "emb"), OK,
               "embedded engine")
    check(len(r.json()["token"]) == 32, r)
    expect(hf(s, "--engine", eng, "acquire", "--capacity", "1", "emb"), BUSY, "embedded busy")
    expect(hf(s, "--engine", eng, "stats"), USAGE, "stats needs a server")
    expect(hf(s, "--engine", "nosuch:thing", "list"), USAGE, "unknown engine scheme")


def test_holds(s):
    """acquire, extend, confirm, release, get, list: output, --json and exit codes."""
    expect(hf(s, "resources", "put", "seat-1", "--capacity", "1"), OK, "declare seat-1")
    r = expect(hf(s, "--json", "acquire", "seat-1", "--ttl", "60000"), OK, "acquire")
    h = r.json()
    check(len(h["id"]) == 32 and len(h["token"]) == 32, f"id and token: {h}")
    check(h["state"] == "tentative" and h["owner"] == "tester", h)
    check(h["resources"][0]["name"] == "seat-1" and h["fence"]["seat-1"] >= 1, h)
    hid, tok = h["id"], h["token"]

    r = expect(hf(s, "acquire", "seat-1"), BUSY, "second acquire, nowait")
    check("unavailable" in r.err, r)
    r = expect(hf(s, "--json", "acquire", "seat-1", "--wait", "300"), BUSY, "wait timeout")
    check(r.json()["error"]["code"] == "wait_timeout", r)
    expect(hf(s, "acquire", "no-such-seat"), NOT_FOUND, "undeclared resource")
    r = expect(hf(s, "--json", "acquire", "seat-1", "--units", "5"), BUSY, "too many units")
    check(r.json()["error"]["code"] == "exceeds_capacity", r)

    r = expect(hf(s, "acquire", "-q", "--capacity", "3", "sem", "--units", "2"), OK, "quiet")
    qid, qtok = r.out.split()
    check(len(qid) == 32 and len(qtok) == 32, r)

    r = expect(hf(s, "extend", hid, tok, "--ttl", "90000"), OK, "extend")
    check("state    tentative" in r.out and "token" not in r.out, r)
    r = expect(hf(s, "--json", "extend", hid, "0" * 32), HOLD_GONE, "extend, bad token")
    check(r.json()["error"]["code"] == "bad_token", r)
    r = expect(hf(s, "--json", "confirm", hid, tok), OK, "confirm")
    check(r.json()["state"] == "confirmed" and r.json()["expires_at_ms"] is None, r)

    r = expect(hf(s, "--json", "get", hid), OK, "get")
    check(r.json()["state"] == "confirmed" and "token" not in r.json(), r)
    r = expect(hf(s, "get", hid), OK, "get, human")
    check(hid in r.out and "confirmed" in r.out, r)
    expect(hf(s, "get", "f" * 32), NOT_FOUND, "get unknown")

    r = expect(hf(s, "--json", "list", "--owner", "tester"), OK, "list")
    ids = {x["id"] for x in r.json()["holds"]}
    check({hid, qid} <= ids, f"list shows both holds: {r.out}")
    r = expect(hf(s, "--json", "list", "--state", "confirmed"), OK, "list by state")
    check([x["id"] for x in r.json()["holds"]] == [hid], r)
    r = expect(hf(s, "--json", "list", "--resource", "sem"), OK, "list by resource")
    check([x["id"] for x in r.json()["holds"]] == [qid], r)
    r = expect(hf(s, "--json", "list", "--limit", "1", "--all"), OK, "list, every page")
    check(len(r.json()["holds"]) == 2 and r.json()["more"] is False, r)
    r = expect(hf(s, "list"), OK, "list, human")
    check(hid in r.out and qid in r.out, r)
    expect(hf(s, "list", "--state", "bogus"), USAGE, "bad state")

    expect(hf(s, "release", hid, "0" * 32), HOLD_GONE, "release, bad token")
    r = expect(hf(s, "--json", "release", hid, tok), OK, "release")
    check(r.json()["state"] == "released", r)
    r = expect(hf(s, "--json", "release", hid, tok), HOLD_GONE, "release twice")
    check(r.json()["error"]["code"] == "hold_ended", r)
    expect(hf(s, "release", qid, qtok, "-q"), OK, "release quiet")

    # Idempotency: a retry returns the same hold, marked replayed.
    a = expect(hf(s, "--json", "acquire", "seat-1", "--idempotency-key", "k-1"), OK, "idem 1").json()
    b = expect(hf(s, "--json", "acquire", "seat-1", "--idempotency-key", "k-1"), OK, "idem 2").json()
    check(a["id"] == b["id"] and a["token"] == b["token"] and b.get("replayed") is True, (a, b))
    # Modes and --any.
    expect(hf(s, "release", a["id"], a["token"]), OK, "release idem hold")
    r1 = expect(hf(s, "--json", "acquire", "--capacity", "2", "--mode", "shared", "rw"), OK, "reader")
    expect(hf(s, "acquire", "--capacity", "2", "--mode", "exclusive", "rw"), BUSY, "writer blocked")
    expect(hf(s, "release", r1.json()["id"], r1.json()["token"]), OK, "reader leaves")
    w = expect(hf(s, "--json", "acquire", "--capacity", "2", "--mode", "exclusive", "rw"), OK,
               "writer").json()
    check(w["resources"][0]["units"] == 2, w)
    expect(hf(s, "acquire", "--capacity", "1", "--mode", "sideways", "rw"), USAGE, "bad mode")
    anyh = expect(hf(s, "--json", "acquire", "--capacity", "1", "--any", "rw2", "spare"), OK,
                  "any").json()
    check([p["name"] for p in anyh["resources"]] == ["rw2"], anyh)


def test_resources(s):
    """resources list/get/put/delete with versions."""
    r = expect(hf(s, "--json", "resources", "put", "room 1/ü", "--capacity", "4", "--meta",
                  '{"floor":2}'), OK, "put")
    res = r.json()
    check(res["name"] == "room 1/ü" and res["version"] == 1 and res["meta"] == {"floor": 2}, res)
    expect(hf(s, "resources", "put", "room 1/ü", "--capacity", "4", "--if-version", "0"),
           BUSY, "create-only on an existing one")
    r = expect(hf(s, "--json", "resources", "put", "room 1/ü", "--capacity", "5",
                  "--if-version", "9"), BUSY, "stale version")
    check(r.json()["error"]["code"] == "version_conflict", r)
    r = expect(hf(s, "--json", "resources", "put", "room 1/ü", "--capacity", "5",
                  "--if-version", "1"), OK, "update at version 1")
    check(r.json()["version"] == 2 and r.json()["capacity"] == 5, r)
    expect(hf(s, "resources", "put", "x"), USAGE, "put without capacity")
    expect(hf(s, "resources", "put", "x", "--capacity", "1", "--meta", "[1]"), USAGE,
           "meta not an object")
    r = expect(hf(s, "resources", "get", "room 1/ü"), OK, "get human")
    check("room 1/ü" in r.out and "capacity 5" in r.out, r)
    expect(hf(s, "resources", "get", "nope"), NOT_FOUND, "get unknown")
    for i in range(3):
        expect(hf(s, "resources", "put", f"r{i}", "--capacity", "1"), OK, "put r{i}")
    r = expect(hf(s, "--json", "resources", "--limit", "2"), OK, "list page")
    check(len(r.json()["resources"]) == 2 and r.json()["more"] is True, r)
    r = expect(hf(s, "--json", "resources", "list", "--limit", "2", "--all"), OK, "list all")
    check(len(r.json()["resources"]) == 4 and r.json()["more"] is False, r)
    r = expect(hf(s, "resources"), OK, "list human")
    check(r.out.count("\n") == 4, r)
    h = expect(hf(s, "--json", "acquire", "r0"), OK, "hold r0").json()
    r = expect(hf(s, "--json", "resources", "delete", "r0"), BUSY, "delete held")
    check(r.json()["error"]["code"] == "resource_held", r)
    expect(hf(s, "release", h["id"], h["token"]), OK, "release r0")
    expect(hf(s, "resources", "delete", "r0", "--if-version", "3"), BUSY, "delete stale")
    r = expect(hf(s, "resources", "delete", "r0"), OK, "delete")
    check(r.out.startswith("deleted r0"), r)
    expect(hf(s, "resources", "delete", "r0"), NOT_FOUND, "delete twice")
    expect(hf(s, "resources", "frob"), USAGE, "unknown subcommand")


def test_events(s):
    """events: a page, --json, and --follow receiving a live event then stopping on SIGINT."""
    expect(hf(s, "resources", "put", "ev-1", "--capacity", "1"), OK, "put")
    r = expect(hf(s, "--json", "events"), OK, "events")
    evs = r.json()["events"]
    check(evs and evs[0]["seq"] == 1 and evs[0]["type"] == "resource.created", r)
    check(evs[0]["revision"] == 1 and "revisions" not in evs[0], r)
    last = r.json()["last_seq"]
    r = expect(hf(s, "events", "--after", "0"), OK, "events human")
    check("resource.created" in r.out and "resource=ev-1  revision=1" in r.out, r)
    r = expect(hf(s, "--json", "events", "--after", last, "--wait", "200"), OK, "empty poll")
    check(r.json()["events"] == [], r)

    e = dict(os.environ, HOLDFAST_SERVER=s.url, HOLDFAST_OWNER="tester")
    f = subprocess.Popen([HOLDFAST, "--json", "events", "--follow", "--after", str(last)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=e)
    time.sleep(0.3)
    h = expect(hf(s, "--json", "acquire", "ev-1"), OK, "make an event").json()
    line = [None]

    def read_one():
        line[0] = f.stdout.readline()

    t = threading.Thread(target=read_one)
    t.start()
    t.join(10)
    check(line[0], "follow printed the new event")
    ev = json.loads(line[0])
    check(ev["type"] == "hold.granted" and ev["hold_id"] == h["id"] and ev["seq"] == last + 1, ev)
    check(ev["revision"] == 2, ev)
    f.send_signal(signal.SIGINT)
    try:
        code = f.wait(5)
    except subprocess.TimeoutExpired:
        f.kill()
        raise AssertionError("events --follow did not stop on SIGINT")
    check(code == OK, f"follow exits 0 on SIGINT, got {code}: {f.stderr.read()!r}")


def test_stats(s):
    """stats: human and JSON."""
    expect(hf(s, "acquire", "--capacity", "1", "st"), OK, "some activity")
    r = expect(hf(s, "--json", "stats"), OK, "stats --json")
    check(isinstance(r.json(), dict) and r.json(), r)
    r = expect(hf(s, "stats"), OK, "stats human")
    check(":" in r.out, r)
    expect(hf(s, "stats", "extra"), USAGE, "stats with an argument")
    expect(hf(s, "stats", url=f"http://127.0.0.1:{free_port()}"), UNREACHABLE, "stats unreachable")


def test_run(s):
    """run: exit codes through, environment, signals forwarded, busy lock, missing command."""
    expect(hf(s, "run", "--lock", "job", "--", "true"), OK, "true")
    expect(hf(s, "run", "--lock", "job", "--", "sh", "-c", "exit 7"), 7, "exit 7 passes through")
    expect(hf(s, "run", "--lock", "job", "--", "sh", "-c", "kill -KILL $$"), 128 + 9,
           "killed by a signal: 128+N")
    r = expect(hf(s, "run", "--lock", "job", "sh", "-c",
                  'echo "$HOLDFAST_LOCK $HOLDFAST_HOLD_ID $HOLDFAST_FENCE"'), OK, "environment")
    lock, hid, fence = r.out.split()
    check(lock == "job" and len(hid) == 32 and int(fence) >= 1, r)
    expect(hf(s, "run", "--lock", "job", "--", "/no/such/command"), NOT_FOUND_EXEC, "no command")
    # The lock is released after each run: the key is free (implicit resources vanish).
    r = expect(hf(s, "--json", "list", "--resource", "job", "--state", "tentative"), OK, "list")
    check(r.json()["holds"] == [], f"no live hold left on 'job': {r.out}")
    # Busy: --wait 0 fails at once with 2, or the --conflict-exit-code.
    h = expect(hf(s, "--json", "acquire", "--capacity", "1", "busy"), OK, "hold busy").json()
    r = expect(hf(s, "run", "--lock", "busy", "--wait", "0", "--", "true"), BUSY, "busy lock")
    expect(hf(s, "run", "--lock", "busy", "--wait", "0", "--conflict-exit-code", "9", "--",
              "true"), 9, "conflict exit code")
    t0 = time.monotonic()
    expect(hf(s, "run", "--lock", "busy", "--wait", "300", "--", "true"), BUSY, "wait timeout")
    check(time.monotonic() - t0 >= 0.25, "run waited")
    expect(hf(s, "release", h["id"], h["token"]), OK, "release busy")
    # A semaphore: two runs at once with --permits 2.
    # SIGTERM to holdfast reaches the command; the lock is still released.
    e = dict(os.environ, HOLDFAST_SERVER=s.url)
    p = subprocess.Popen([HOLDFAST, "run", "--lock", "sig", "--", "sleep", "30"], env=e,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(0.5)
    p.send_signal(signal.SIGTERM)
    code = p.wait(10)
    check(code == 128 + signal.SIGTERM, f"forwarded SIGTERM ends the command: {code}")
    expect(hf(s, "run", "--lock", "sig", "--wait", "0", "--", "true"), OK, "sig released")


def test_exclusion(s):
    """Runs on one key serialize; a semaphore admits N at once."""
    log = os.path.join(s.dir, "intervals")
    script = f'echo "start $(date +%s.%N)" >> {log}; sleep 0.4; echo "end $(date +%s.%N)" >> {log}'
    e = dict(os.environ, HOLDFAST_SERVER=s.url)
    procs = [subprocess.Popen([HOLDFAST, "run", "--lock", "mutex", "--wait", "20000", "--",
                               "sh", "-c", script], env=e, stderr=subprocess.PIPE)
             for _ in range(3)]
    codes = [p.wait(60) for p in procs]
    check(codes == [0, 0, 0], f"all three ran: {codes}")
    events = [line.split() for line in open(log).read().splitlines()]
    check(len(events) == 6, events)
    # Serialized: the log alternates start, end, start, end, ...
    check([e[0] for e in events] == ["start", "end"] * 3, f"no overlap: {events}")

    # --permits 2: two at once, the third after one of them.
    os.unlink(log)
    procs = [subprocess.Popen([HOLDFAST, "run", "--lock", "sem", "--permits", "2", "--wait",
                               "20000", "--", "sh", "-c", script], env=e)
             for _ in range(3)]
    codes = [p.wait(60) for p in procs]
    check(codes == [0, 0, 0], codes)
    depth = peak = 0
    for kind, _ in sorted((line.split() for line in open(log).read().splitlines()),
                          key=lambda x: float(x[1])):
        depth += 1 if kind == "start" else -1
        peak = max(peak, depth)
    check(peak == 2, f"two at once, never three: peak {peak}")


def test_lock_lost(s):
    """Losing the lock stops the command: SIGTERM, then SIGKILL; exit 75."""
    e = dict(os.environ, HOLDFAST_SERVER=s.url)
    # 1. Someone releases the hold behind run's back: the next extension is refused.
    p = subprocess.Popen([HOLDFAST, "--json", "run", "--lock", "lost-1", "--ttl", "900", "--",
                          "sleep", "30"], env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    hold = json.loads(read_json_object(p.stdout))
    expect(hf(s, "release", hold["id"], hold["token"]), OK, "steal the lock")
    t0 = time.monotonic()
    code = p.wait(10)
    err = p.stderr.read()
    check(code == LOCK_LOST, f"lock lost: exit {code}, stderr {err!r}")
    check(time.monotonic() - t0 < 5, "stopped promptly")
    check("lost the lock" in err, err)

    # 2. A command that ignores SIGTERM gets SIGKILL after --grace.
    ignore = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
              "print('ready', flush=True); time.sleep(30)")
    p = subprocess.Popen([HOLDFAST, "--json", "run", "--lock", "lost-2", "--ttl", "900",
                          "--grace", "500", "--", sys.executable, "-c", ignore], env=e,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    hold = json.loads(read_json_object(p.stdout))
    check(p.stdout.readline().strip() == "ready", "command started")
    expect(hf(s, "release", hold["id"], hold["token"]), OK, "steal the lock")
    code = p.wait(10)
    err = p.stderr.read()
    check(code == LOCK_LOST and "SIGKILL" in err, f"SIGKILL after grace: {code} {err!r}")

    # 3. The server dies: extensions fail until the lease runs out; the command is stopped.
    s2 = Server()
    try:
        e2 = dict(os.environ, HOLDFAST_SERVER=s2.url)
        p = subprocess.Popen([HOLDFAST, "run", "--lock", "lost-3", "--ttl", "1500", "--",
                              "sleep", "30"], env=e2, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        time.sleep(0.5)
        s2.proc.kill()
        s2.proc.wait()
        code = p.wait(15)
        err = p.stderr.read()
        check(code == LOCK_LOST, f"server gone, lease over: exit {code}, {err!r}")
    finally:
        s2.cleanup()


def test_auth(s):
    """An API key from HOLDFAST_API_KEY is sent as a bearer token (engine and stats)."""
    key = "cli-test-key-0123456789"
    s2 = Server(["--api-key", key])
    try:
        r = expect(hf(s2, "--json", "list", env={"HOLDFAST_API_KEY": ""}), AUTH, "no key")
        check(r.json()["error"]["code"] == "unauthorized", r)
        expect(hf(s2, "list", env={"HOLDFAST_API_KEY": "wrong-key-wrong-key-00"}), AUTH, "bad key")
        expect(hf(s2, "stats", env={"HOLDFAST_API_KEY": ""}), AUTH, "stats, no key")
        good = {"HOLDFAST_API_KEY": key}
        expect(hf(s2, "acquire", "--capacity", "1", "k", env=good), OK, "with the key")
        expect(hf(s2, "list", env=good), OK, "list with the key")
        expect(hf(s2, "stats", env=good), OK, "stats with the key")
        expect(hf(s2, "run", "--lock", "k2", "--", "true", env=good), OK, "run with the key")
    finally:
        s2.cleanup()


def read_json_object(f):
    """Reads one pretty-printed JSON object (up to its closing brace line) from a stream."""
    lines = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        line = f.readline()
        if not line:
            break
        lines.append(line)
        if line.rstrip() == "}":
            return "".join(lines)
    raise AssertionError(f"no JSON object on stdout: {lines!r}")


GROUPS = {
    "basic": test_basic,
    "holds": test_holds,
    "resources": test_resources,
    "events": test_events,
    "stats": test_stats,
    "run": test_run,
    "exclusion": test_exclusion,
    "lock_lost": test_lock_lost,
    "auth": test_auth,
}


def main():
    global HOLDFASTD, HOLDFAST
    ap = argparse.ArgumentParser()
    ap.add_argument("--holdfastd", required=True)
    ap.add_argument("--holdfast", required=True)
    ap.add_argument("groups", nargs="*")
    a = ap.parse_args()
    HOLDFASTD, HOLDFAST = os.path.abspath(a.holdfastd), os.path.abspath(a.holdfast)
    failed = 0
    for name in a.groups or list(GROUPS):
        s = Server()
        t0 = time.monotonic()
        try:
            GROUPS[name](s)
            print(f"ok   {name} ({time.monotonic() - t0:.1f} s)")
        except Exception:
            failed += 1
            print(f"FAIL {name}")
            traceback.print_exc()
            s.stop()
            print("--- holdfastd log ---")
            print(open(os.path.join(s.dir, "holdfastd.log")).read()[-4000:])
        finally:
            s.cleanup()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
