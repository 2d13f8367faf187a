#!/usr/bin/env python3
"""test_relay.py — `holdfast relay` and `holdfast consume` end to end, on a real holdfastd, a
real RabbitMQ and a real Redis that the test starts itself (brokers.py), one broker start per
group. Kills the relay, the broker, holdfastd and an active relay with a standby mid-stream,
and checks that every event arrives, in order per resource, and is applied exactly once; a
consumer killed with entries pending, poison messages, a gap, the npm amqplib client.

Usage: test_relay.py --holdfastd BIN --holdfast BIN (amqp|redis) [SCENARIO...]
Exits 77 (skip) when rabbitmq-server or redis-server is not installed.
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
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "server"))
import brokers  # noqa: E402
import hfserver  # noqa: E402

HOLDFAST = ""
OWN = "holdfast.relay/"


class Scenario:
    """One holdfastd and a scratch dir; names (exchange, queue, streams) unique to it."""

    def __init__(self, name):
        self.name = name
        self.dir = tempfile.mkdtemp(prefix="hf-relay-%s-" % name)
        self.srv = hfserver.Server()
        self.procs = []
        self.dirs = [self.dir]

    def close(self, passed):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        self.srv.stop()
        if passed:  # a failure keeps its logs
            for d in self.dirs:
                shutil.rmtree(d, ignore_errors=True)

    # ---- the store ------------------------------------------------------------------
    def make_events(self, prefix, resources=6, rounds=20):
        """Declares resources and takes/releases single and two-resource holds."""
        names = ["%s.r%d" % (prefix, i) for i in range(resources)]
        for n in names:
            st, _, _ = self.srv.put("/v1/resources/" + urllib.parse.quote(n, safe=""),
                                    {"capacity": 2})
            assert st in (200, 201), st
        for r in range(rounds):
            a, b = names[r % resources], names[(r * 7 + 1) % resources]
            claims = [{"name": a, "units": 1}] + ([{"name": b, "units": 1}] if a != b else [])
            st, hold, _ = self.srv.post("/v1/holds", {"owner": "t", "resources": claims,
                                                      "ttl_ms": 60000})
            assert st == 201, (st, hold)
            st, _, _ = self.srv.post("/v1/holds/%s/release" % hold["id"],
                                     {"token": hold["token"]})
            assert st == 200, st
        return self.last_seq()

    def last_seq(self):
        _, body, _ = self.srv.get("/v1/events?after=0&limit=1")
        return body["last_seq"]

    def events(self, upto):
        """(seq, resource) of every event up to `upto` that a relay publishes."""
        out, after = [], 0
        while after < upto:
            _, body, _ = self.srv.get("/v1/events?after=%d&limit=1000" % after)
            for e in body["events"]:
                if e["seq"] <= upto and not (e["resource"] or "").startswith(OWN):
                    out.append(e)
            after = body["next_after"]
            if not body["events"]:
                break
        return out

    def checkpoint(self, relay_name):
        name = urllib.parse.quote(OWN + relay_name + "/checkpoint", safe="")
        st, body, _ = self.srv.get("/v1/resources/" + name)
        return body["meta"]["seq"] if st == 200 else 0

    def wait_checkpoint(self, relay_name, seq, timeout=90):
        """Until the checkpoint covers the last published event up to seq (the relay's own
        events after it, a checkpoint's or the lease's, move no checkpoint)."""
        seq = max([e["seq"] for e in self.events(seq)] or [0])
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.checkpoint(relay_name) >= seq:
                return
            time.sleep(0.1)
        raise AssertionError("checkpoint of %s never reached %d (at %d)"
                             % (relay_name, seq, self.checkpoint(relay_name)))

    # ---- processes --------------------------------------------------------------------
    def relay(self, dest, relay_name, *extra, tag=None):
        log = os.path.join(self.dir, "relay-%s.log" % (tag or relay_name))
        p = subprocess.Popen([HOLDFAST, "--server", self.srv.url, "relay", "--to", dest,
                              "--name", relay_name, "--owner", tag or relay_name] + list(extra),
                             stdout=subprocess.DEVNULL, stderr=open(log, "ab"))
        p.log_path = log
        self.procs.append(p)
        return p

    def consume(self, src, *extra, state=None, timeout=120):
        """Runs a consumer until idle: (exit code, applied lines, stderr)."""
        state = state or os.path.join(self.dir, "consumer.db")
        r = subprocess.run([HOLDFAST, "consume", "--from", src, "--state", state,
                            "--idle-exit", "1500"] + list(extra),
                           capture_output=True, text=True, timeout=timeout)
        lines = [json.loads(line) for line in r.stdout.splitlines() if line.strip()]
        return r.returncode, lines, r.stderr


def wait_log(proc, text, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        with open(proc.log_path, "rb") as f:
            if text.encode() in f.read():
                return
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    raise AssertionError("relay log never said %r:\n%s" % (text, open(proc.log_path).read()))


def stop(proc):
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0, open(proc.log_path).read()


def touched(e):
    """{resource: revision} of the messages the relay sends for event e: one per resource
    in its revisions (revision 0 when the server gives none)."""
    if e.get("revisions"):
        return e["revisions"]
    return {e["resource"]: e.get("revision", 0)} if e["resource"] else {}


def check_applied(sc, lines, upto, stderr=""):
    """Every published event up to `upto` applied exactly once per resource it touches, in
    order per resource (seq and revision increasing), revisions gap-free when given."""
    check_lines(sc.events(upto), lines, stderr)


def check_lines(events, lines, stderr=""):
    """check_applied against a list of the published events."""
    want = {e["seq"] for e in events}
    got = {}
    for ln in lines:
        got.setdefault(ln["resource"], []).append((ln["seq"], ln["revision"]))
        assert not ln["resource"].startswith(OWN), ln
        assert ln["event"]["seq"] == ln["seq"], ln
    seen = {s for per in got.values() for s, _ in per}
    assert seen == want, "missing %s, unexpected %s\n%s" % (
        sorted(want - seen)[:20], sorted(seen - want)[:20], stderr[-3000:])
    for res, per in got.items():
        seqs = [s for s, _ in per]
        assert seqs == sorted(set(seqs)), "%s out of order or twice: %s" % (res, seqs)
        revs = [r for _, r in per]
        if any(revs):
            assert revs == list(range(revs[0], revs[0] + len(revs))) and revs[0] == 1, \
                "%s revisions %s" % (res, revs)
    # Each event reached every resource it touches, with that resource's revision.
    for e in events:
        for res, rev in touched(e).items():
            assert (e["seq"], rev) in got.get(res, []), (e, got.get(res))


# ---- RabbitMQ ---------------------------------------------------------------------------
def amqp_declare(rabbit, exchange, queue, *extra):
    r = subprocess.run([HOLDFAST, "consume", "--from", rabbit.url, "--exchange", exchange,
                        "--queue", queue, "--declare-only"] + list(extra),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


def amqp_basic(rabbit, sc):
    amqp_declare(rabbit, "ex.basic", "q.basic")
    last = sc.make_events("basic")
    rel = sc.relay(rabbit.url, "basic", "--exchange", "ex.basic", "--until-seq", str(last))
    assert rel.wait(timeout=120) == 0, open(rel.log_path).read()
    rc, lines, err = sc.consume(rabbit.url, "--exchange", "ex.basic", "--queue", "q.basic")
    assert rc == 0, err
    check_applied(sc, lines, last, err)


def amqp_relay_killed(rabbit, sc):
    amqp_declare(rabbit, "ex.kill", "q.kill")
    last = sc.make_events("kill", rounds=150)
    rel = sc.relay(rabbit.url, "kill", "--exchange", "ex.kill", "--batch", "3",
                   "--lease-ms", "1500")
    sc.wait_checkpoint("kill", last // 3)
    rel.kill()  # SIGKILL mid-stream: a batch may be published and not checkpointed
    rel.wait()
    last = max(last, sc.make_events("kill2", rounds=20))
    rel = sc.relay(rabbit.url, "kill", "--exchange", "ex.kill", "--until-seq", str(last),
                   tag="kill-again")
    assert rel.wait(timeout=120) == 0, open(rel.log_path).read()
    rc, lines, err = sc.consume(rabbit.url, "--exchange", "ex.kill", "--queue", "q.kill")
    assert rc == 0, err
    check_applied(sc, lines, last, err)


def amqp_broker_restart(rabbit, sc):
    """The broker killed and restarted mid-stream, under a relay and a live consumer (on a
    second queue): both reconnect; every event arrives once."""
    amqp_declare(rabbit, "ex.restart", "q.restart")
    amqp_declare(rabbit, "ex.restart", "q.restart.live")
    live_out = os.path.join(sc.dir, "live.jsonl")
    live = subprocess.Popen([HOLDFAST, "consume", "--from", rabbit.url, "--exchange",
                             "ex.restart", "--queue", "q.restart.live", "--state",
                             os.path.join(sc.dir, "live.db")],
                            stdout=open(live_out, "wb"),
                            stderr=open(os.path.join(sc.dir, "live.err"), "wb"))
    sc.procs.append(live)
    rel = sc.relay(rabbit.url, "restart", "--exchange", "ex.restart", "--batch", "5",
                   "--backoff-max", "500")
    wait_log(rel, "msg=resume")
    done = []
    writer = threading.Thread(target=lambda: done.append(sc.make_events("rs", rounds=200)))
    writer.start()
    time.sleep(0.3)
    rabbit.restart()  # SIGKILL and start again on the same data
    writer.join()
    last = max(done[0], sc.make_events("rs2", rounds=10))
    sc.wait_checkpoint("restart", last)
    stop(rel)
    with open(rel.log_path) as f:
        assert "msg=deliver_failed" in f.read(), "the restart was never noticed"
    rc, lines, err = sc.consume(rabbit.url, "--exchange", "ex.restart", "--queue", "q.restart")
    assert rc == 0, err
    check_applied(sc, lines, last, err)
    # The live consumer has them all too, once it has caught up.
    want = len(lines)
    deadline = time.time() + 60
    while time.time() < deadline:
        with open(live_out) as f:
            if len(f.read().splitlines()) >= want:
                break
        time.sleep(0.1)
    live.send_signal(signal.SIGTERM)
    assert live.wait(timeout=60) == 0
    with open(live_out) as f:
        got = [json.loads(line) for line in f.read().splitlines()]
    with open(os.path.join(sc.dir, "live.err")) as f:
        err = f.read()
    assert "msg=reconnect" in err, err
    check_applied(sc, got, last, err)


def amqp_standby(rabbit, sc):
    amqp_declare(rabbit, "ex.standby", "q.standby")
    a = sc.relay(rabbit.url, "standby", "--exchange", "ex.standby", "--lease-ms", "1500",
                 tag="relay-a")
    wait_log(a, "msg=lease_taken")
    b = sc.relay(rabbit.url, "standby", "--exchange", "ex.standby", "--lease-ms", "1500",
                 tag="relay-b")
    wait_log(b, "msg=standby")
    last = sc.make_events("sb", rounds=40)
    sc.wait_checkpoint("standby", last)
    a.kill()
    a.wait()
    last = sc.make_events("sb2", rounds=40)
    wait_log(b, "msg=lease_taken")
    sc.wait_checkpoint("standby", last)
    stop(b)
    rc, lines, err = sc.consume(rabbit.url, "--exchange", "ex.standby", "--queue", "q.standby")
    assert rc == 0, err
    check_applied(sc, lines, last, err)


def amqp_holdfastd_killed(rabbit, sc):
    """holdfastd killed (SIGKILL) mid-stream and started again on the same store and port:
    the relay retries its reads (and takes its lease again if it ran out) and delivers all."""
    amqp_declare(rabbit, "ex.hfkill", "q.hfkill")
    rel = sc.relay(rabbit.url, "hfkill", "--exchange", "ex.hfkill", "--batch", "5",
                   "--lease-ms", "3000", "--backoff-max", "300")
    wait_log(rel, "msg=resume")
    sc.make_events("hk", rounds=60)
    old = sc.srv
    old.kill()
    time.sleep(1)
    sc.srv = hfserver.Server("--listen", "127.0.0.1:%d" % old.port, store_dir=old.dir)
    sc.dirs.append(old.dir)
    last = sc.make_events("hk2", rounds=30)
    sc.wait_checkpoint("hfkill", last)
    stop(rel)
    with open(rel.log_path) as f:
        assert "msg=read_error" in f.read(), "the restart was never noticed"
    rc, lines, err = sc.consume(rabbit.url, "--exchange", "ex.hfkill", "--queue", "q.hfkill")
    assert rc == 0, err
    check_applied(sc, lines, last, err)


def amqp_ttl(rabbit, sc):
    """A queue with x-message-ttl and x-max-priority: messages nobody consumed in time go to
    its dead letters (<queue>.dead), not nowhere."""
    amqp_declare(rabbit, "ex.ttl", "q.ttl", "--message-ttl", "50", "--max-priority", "5")
    last = sc.make_events("ttl", resources=2, rounds=3)
    rel = sc.relay(rabbit.url, "ttl", "--exchange", "ex.ttl", "--until-seq", str(last))
    assert rel.wait(timeout=120) == 0, open(rel.log_path).read()
    msgs = sum(len(touched(e)) for e in sc.events(last))
    deadline = time.time() + 30
    while rabbit.queue_depths().get("q.ttl.dead") != msgs and time.time() < deadline:
        time.sleep(0.2)
    depths = rabbit.queue_depths()
    assert depths.get("q.ttl.dead") == msgs and depths.get("q.ttl") == 0, (depths, msgs)


def amqp_unroutable(rabbit, sc):
    """No queue bound: every publish is returned (basic.return, then an ack): the relay must
    count it a failure and keep the checkpoint; once a queue is bound, all arrives."""
    last = sc.make_events("unroutable", resources=2, rounds=3)
    rel = sc.relay(rabbit.url, "unroutable", "--exchange", "ex.unroutable", "--backoff-max",
                   "300", "--until-seq", str(last))
    wait_log(rel, "returned unroutable")
    assert sc.checkpoint("unroutable") < last
    amqp_declare(rabbit, "ex.unroutable", "q.unroutable")
    assert rel.wait(timeout=120) == 0, open(rel.log_path).read()
    rc, lines, err = sc.consume(rabbit.url, "--exchange", "ex.unroutable", "--queue",
                                "q.unroutable")
    assert rc == 0, err
    check_applied(sc, lines, last, err)


def amqp_embedded(rabbit, sc):
    """The embedded engine (file:) gives revisions: messages carry them, message ids and
    dedupe use them, and a redelivered batch is applied once."""
    store = "file:" + os.path.join(sc.dir, "embedded.db")
    hf = [HOLDFAST, "--engine", store]
    for n in ("e.a", "e.b"):
        subprocess.run(hf + ["resources", "put", n, "--capacity", "2"], check=True,
                       capture_output=True)
    for _ in range(5):
        out = subprocess.run(hf + ["acquire", "e.a", "e.b", "--quiet"], check=True,
                             capture_output=True, text=True).stdout.split()
        subprocess.run(hf + ["release", out[0], out[1]], check=True, capture_output=True)
    amqp_declare(rabbit, "ex.embedded", "q.embedded")
    relay = hf + ["relay", "--to", rabbit.url, "--exchange", "ex.embedded", "--idle-exit", "500"]
    subprocess.run(relay, check=True, capture_output=True, timeout=120)
    # The same events once more, as a relay that lost its checkpoint would send them.
    subprocess.run(relay + ["--name", "again"], check=True, capture_output=True, timeout=120)
    rc, lines, err = sc.consume(rabbit.url, "--exchange", "ex.embedded", "--queue", "q.embedded")
    assert rc == 0, err
    per = {}
    for ln in lines:
        per.setdefault(ln["resource"], []).append(ln["revision"])
    # e.a and e.b: created, then 5 grants and 5 releases, each touching both: 11 revisions.
    assert per == {"e.a": list(range(1, 12)), "e.b": list(range(1, 12))}, per
    assert "duplicates=22" in err, err


def amqp_npm(rabbit, sc):
    """The npm amqplib client reads the relayed events: an ordinary topic exchange, binding
    key `hold.#`, JSON bodies, message ids, headers (amqplib_consumer.cjs checks each)."""
    npm_dir = os.environ.get("HF_RELAY_NPM_DIR", os.path.join(sc.dir, "npm"))
    if not shutil.which("node") or not shutil.which("npm"):
        print("skip amqp_npm: node or npm is not installed")
        return
    if not os.path.exists(os.path.join(npm_dir, "node_modules", "amqplib", "package.json")):
        os.makedirs(npm_dir, exist_ok=True)
        subprocess.run(["npm", "install", "--prefix", npm_dir, "--no-audit", "--no-fund",
                        "--loglevel=error", "amqplib@0.10"], check=True, timeout=300)
    env = dict(os.environ, NODE_PATH=os.path.join(npm_dir, "node_modules"))
    node = ["node", os.path.join(HERE, "amqplib_consumer.cjs"), rabbit.url, "ex.npm", "q.npm",
            "hold.#"]
    subprocess.run(node + ["0"], check=True, env=env, timeout=60)
    # `hold.#` alone would leave resource.* events unroutable: the relay would retry them.
    amqp_declare(rabbit, "ex.npm", "q.npm.all")
    last = sc.make_events("npm.x", resources=3, rounds=10)
    rel = sc.relay(rabbit.url, "npm", "--exchange", "ex.npm", "--until-seq", str(last))
    assert rel.wait(timeout=120) == 0, open(rel.log_path).read()
    r = subprocess.run(node + ["1500"], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    got = [json.loads(line) for line in r.stdout.splitlines()]
    holds = [e for e in sc.events(last) if e["type"].startswith("hold.")]
    assert {g["seq"] for g in got} == {e["seq"] for e in holds}, (got[:5], holds[:5])
    assert all(g["routingKey"].startswith("hold.") and "npm%2Ex%2Er" in g["routingKey"]
               for g in got), got[:5]


POISON_EXEC = 'case "$HF_RESOURCE" in *poison*) exit 3;; esac; cat >> "$APPLIED"'


def amqp_poison(rabbit, sc):
    amqp_declare(rabbit, "ex.poison", "q.poison")
    sc.make_events("ok", resources=2, rounds=4)
    last = sc.make_events("poison", resources=1, rounds=1)
    rel = sc.relay(rabbit.url, "poison", "--exchange", "ex.poison", "--until-seq", str(last))
    assert rel.wait(timeout=120) == 0
    applied = os.path.join(sc.dir, "applied.jsonl")
    os.environ["APPLIED"] = applied
    rc, _, err = sc.consume(rabbit.url, "--exchange", "ex.poison", "--queue", "q.poison",
                            "--exec", POISON_EXEC, "--max-attempts", "3", "--backoff", "10")
    msgs = [(res, e) for e in sc.events(last) for res in touched(e)]
    poison = [m for m in msgs if "poison" in m[0]]
    assert rc == 9, (rc, err)
    assert err.count("msg=dead_lettered") == len(poison), err
    assert err.count("msg=apply_failed") == 3 * len(poison), err
    assert rabbit.queue_depths().get("q.poison.dead") == len(poison), rabbit.queue_depths()
    with open(applied) as f:
        n = len(f.read().splitlines())
    assert n == len(msgs) - len(poison), (n, len(msgs), len(poison))


# ---- Redis Streams ------------------------------------------------------------------------
def request(rabbit, key, body, timeout_ms=20000):
    return subprocess.run([HOLDFAST, "request", "--to", rabbit.url, "--routing-key", key,
                           "--timeout", str(timeout_ms), body],
                          capture_output=True, text=True, timeout=120)


def responder(rabbit, sc, queue, count, *mode):
    """relay_responder on `queue`, answering `count` requests; returns once it consumes."""
    proc = subprocess.Popen([os.environ["HF_RELAY_RESPONDER"], rabbit.url, queue, str(count)]
                            + list(mode), stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc


def amqp_request(rabbit, sc):
    """Request/reply (seed 004): a private reply queue, correlation ids, a timeout; several
    requests at once each get their own reply; nobody listening is said so at once."""
    srv = responder(rabbit, sc, "svc.echo", 6)
    r = request(rabbit, "svc.echo", '{"n":0}')
    assert r.returncode == 0 and r.stdout.strip() == 'echo:{"n":0}', (r.returncode, r.stdout,
                                                                      r.stderr)
    procs = [subprocess.Popen([HOLDFAST, "request", "--to", rabbit.url, "--routing-key",
                               "svc.echo", "--timeout", "20000", '{"n":%d}' % i],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(1, 6)]
    for i, p in enumerate(procs, 1):
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0 and out.strip() == 'echo:{"n":%d}' % i, (i, out, err)
    assert srv.wait(timeout=60) == 0
    r = request(rabbit, "svc.nobody", "{}")
    assert r.returncode == 2 and "nobody listens" in r.stderr, (r.returncode, r.stderr)
    silent = responder(rabbit, sc, "svc.silent", 1, "silent")
    r = request(rabbit, "svc.silent", "{}", timeout_ms=500)
    assert r.returncode == 2 and "no reply" in r.stderr, (r.returncode, r.stderr)
    assert silent.wait(timeout=60) == 0


def fnv_partition(name, parts):
    h = 14695981039346656037
    for b in name.encode():
        h = ((h ^ b) * 1099511628211) % (1 << 64)
    return h % parts


def redis_basic(redis, sc):
    last = sc.make_events("basic")
    rel = sc.relay(redis.url, "basic", "--stream-prefix", "basic:", "--partitions", "4",
                   "--until-seq", str(last))
    assert rel.wait(timeout=120) == 0, open(rel.log_path).read()
    # Every resource's entries sit in its hash partition, in seq order.
    for p in range(4):
        out = redis.cli("--no-raw", "XRANGE", "basic:%d" % p, "-", "+")
        ids = redis.cli("XRANGE", "basic:%d" % p, "-", "+").splitlines()
        fields = ids  # field/value lines in order: id, seq, N, revision, N, resource, R, ...
        per = {}
        i = 0
        while i < len(fields):
            if fields[i] == "seq":
                seq, res = int(fields[i + 1]), fields[i + 5]
                assert fnv_partition(res, 4) == p, (res, p)
                per.setdefault(res, []).append(seq)
            i += 1
        for res, seqs in per.items():
            assert seqs == sorted(seqs), (res, seqs, out[:200])
    rc, lines, err = sc.consume(redis.url, "--stream-prefix", "basic:", "--partitions", "4")
    assert rc == 0, err
    check_applied(sc, lines, last, err)


def redis_relay_killed(redis, sc):
    last = sc.make_events("kill", rounds=150)
    rel = sc.relay(redis.url, "kill", "--stream-prefix", "kill:", "--batch", "3",
                   "--lease-ms", "1500")
    sc.wait_checkpoint("kill", last // 3)
    rel.kill()
    rel.wait()
    rel = sc.relay(redis.url, "kill", "--stream-prefix", "kill:", "--until-seq", str(last),
                   tag="kill-again")
    assert rel.wait(timeout=120) == 0, open(rel.log_path).read()
    rc, lines, err = sc.consume(redis.url, "--stream-prefix", "kill:")
    assert rc == 0, err
    check_applied(sc, lines, last, err)


def redis_claim(redis, sc):
    """A consumer killed with entries pending: another takes them over with XAUTOCLAIM."""
    last = sc.make_events("claim", rounds=30)
    rel = sc.relay(redis.url, "claim", "--stream-prefix", "claim:", "--until-seq", str(last))
    assert rel.wait(timeout=120) == 0
    state = os.path.join(sc.dir, "claim.db")
    stuck = subprocess.Popen([HOLDFAST, "consume", "--from", redis.url, "--stream-prefix",
                              "claim:", "--state", state, "--consumer", "dies",
                              "--prefetch", "3", "--exec", "sleep 600"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    sc.procs.append(stuck)
    deadline = time.time() + 30
    while time.time() < deadline:  # until it has taken entries and is stuck applying one
        if redis.cli("XPENDING", "claim:0", "holdfast").split("\n")[0] not in ("", "0"):
            break
        time.sleep(0.05)
    os.killpg(stuck.pid, signal.SIGKILL)  # the consumer and the command it was running
    stuck.wait()
    rc, lines, err = sc.consume(redis.url, "--stream-prefix", "claim:", "--consumer", "takes",
                                "--claim-idle", "300", state=state)
    assert rc == 0, err
    check_applied(sc, lines, last, err)
    for p in range(8):
        assert redis.cli("XPENDING", "claim:%d" % p, "holdfast").split("\n")[0] == "0"


def redis_poison(redis, sc):
    sc.make_events("ok", resources=2, rounds=4)
    last = sc.make_events("poison", resources=1, rounds=1)
    rel = sc.relay(redis.url, "poison", "--stream-prefix", "poison:", "--until-seq", str(last))
    assert rel.wait(timeout=120) == 0
    os.environ["APPLIED"] = os.path.join(sc.dir, "applied.jsonl")
    rc, _, err = sc.consume(redis.url, "--stream-prefix", "poison:", "--exec", POISON_EXEC,
                            "--max-attempts", "2", "--backoff", "10")
    poison = [res for e in sc.events(last) for res in touched(e) if "poison" in res]
    assert rc == 9, (rc, err)
    assert int(redis.cli("XLEN", "poison:dead")) == len(poison), err
    dead = redis.cli("XRANGE", "poison:dead", "-", "+")
    assert "apply failed" in dead and "poison.r0" in dead, dead


def redis_store_engine(redis, sc):
    """The relay reads a redis:// store directly (no holdfastd), into streams on the same
    Redis: the event log of another engine, through the same public API."""
    relay_store(redis, sc, redis.url + "?prefix=hfstore:", "eng:")


def pg_store_engine(redis, sc):
    """The same from a postgres:// store (with_pg.sh's HF_TEST_ENGINE_URL)."""
    relay_store(redis, sc, os.environ["HF_TEST_ENGINE_URL"], "pg:")


def relay_store(redis, sc, store, prefix):
    hf = [HOLDFAST, "--engine", store]
    for n in ("s.a", "s.b", "s.c"):
        subprocess.run(hf + ["resources", "put", n, "--capacity", "2"], check=True,
                       capture_output=True)
    for i in range(8):
        names = ["s.a", "s.b", "s.c"][i % 3:][:2] or ["s.a"]
        out = subprocess.run(hf + ["acquire"] + names + ["--quiet"], check=True,
                             capture_output=True, text=True).stdout.split()
        subprocess.run(hf + ["release", out[0], out[1]], check=True, capture_output=True)
    log = json.loads(subprocess.run(hf + ["events", "--json", "--limit", "1000"], check=True,
                                    capture_output=True, text=True).stdout)
    last = log["last_seq"]
    subprocess.run(hf + ["relay", "--to", redis.url, "--stream-prefix", prefix, "--until-seq",
                         str(last)], check=True, capture_output=True, timeout=120)
    rc, lines, err = sc.consume(redis.url, "--stream-prefix", prefix)
    assert rc == 0, err
    events = [e for e in log["events"] if not (e["resource"] or "").startswith(OWN)]
    check_lines(events, lines, err)


def redis_gap(redis, sc):
    """Revisions 1, 2, 4 of one resource: 3 is reported missing, never skipped silently."""
    for rev, seq in ((1, 10), (2, 11), (4, 13), (4, 13)):
        ev = json.dumps({"seq": seq, "type": "hold.granted", "resource": "g"})
        redis.cli("XADD", "gap:0", "*", "seq", str(seq), "revision", str(rev), "resource", "g",
                  "type", "hold.granted", "event", ev)
    rc, lines, err = sc.consume(redis.url, "--stream-prefix", "gap:", "--partitions", "1")
    assert rc == 8, (rc, err)
    assert 'msg=gap resource="g" missing=3..3' in err, err
    assert [ln["revision"] for ln in lines] == [1, 2, 4], lines
    assert "duplicates=1 gaps=1" in err, err


GROUPS = {
    "amqp": (brokers.Rabbit, [amqp_basic, amqp_relay_killed, amqp_broker_restart, amqp_standby,
                              amqp_holdfastd_killed, amqp_ttl, amqp_unroutable, amqp_embedded,
                              amqp_npm, amqp_poison, amqp_request]),
    "redis": (brokers.Redis, [redis_basic, redis_relay_killed, redis_claim, redis_poison,
                              redis_store_engine, redis_gap]),
    # Under tests/pg/with_pg.sh: a PostgreSQL store.
    "pg": (brokers.Redis, [pg_store_engine]),
}


def main():
    global HOLDFAST
    ap = argparse.ArgumentParser()
    ap.add_argument("--holdfastd", required=True)
    ap.add_argument("--holdfast", required=True)
    ap.add_argument("group", choices=sorted(GROUPS))
    ap.add_argument("only", nargs="*")
    a = ap.parse_args()
    HOLDFAST = a.holdfast
    hfserver.BIN = a.holdfastd
    why = brokers.available()
    if why:
        print("skip: " + why)
        return 77
    start, scenarios = GROUPS[a.group]
    broker = start()
    failed = 0
    try:
        for fn in scenarios:
            if a.only and fn.__name__ not in a.only:
                continue
            sc = Scenario(fn.__name__)
            t0 = time.time()
            passed = False
            try:
                fn(broker, sc)
                passed = True
                print("ok   %s (%.1f s)" % (fn.__name__, time.time() - t0), flush=True)
            except Exception as e:  # report every scenario, then fail
                failed += 1
                print("FAIL %s: %s: %s\n  (logs in %s)" % (fn.__name__, type(e).__name__, e,
                                                           sc.dir), flush=True)
            finally:
                sc.close(passed)
    finally:
        broker.close()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
