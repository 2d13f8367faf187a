"""faults_test.py — issue 15's fault harness: clients of holdfastd instances write one
Jepsen-style history (faultlib.py; docs/reliability.md, sections 1 and 9) while faults are
injected, and holdfast-check judges it: no two holders of a lock at once, fences increasing
in real time, nothing acknowledged lost (confirmed holds and acknowledged releases are read
back at the end).

Scenarios (each prints its figures; the run prints its seed first, HF_TEST_SEED=N repeats
the choices — kill moments, pauses, leases; the interleaving is the machine's):
  kill-pg            two holdfastd over PostgreSQL; one of them SIGKILLed and restarted, rounds
  kill-file          one holdfastd on file:; SIGKILLed and restarted (its clients see errors)
  pg-restart         two holdfastd over PostgreSQL; PostgreSQL crashed (-m immediate) or
                     stopped (-m fast) and started again, rounds
  redis-kill         holdfastd on redis:// over a redis-server with appendfsync always:
                     redis-server SIGKILLed and restarted; then the same without persistence,
                     which the checker must reject (out of scope: docs/redis.md, durability)
  clock-pg           two holdfastd over PostgreSQL, one under libfaketime: its clock jumps an
                     hour forward and back; leases are the database's
  clock-file         one holdfastd on file: under libfaketime: forward and backward jumps;
                     what the embedded engine does (wall-clock leases) is asserted
  partition-pg       a holdfastd in a network namespace, cut from PostgreSQL (veth link
                     down) and healed, while another one outside keeps serving
  partition-redlock  a holdfastd in a namespace on redlock:// over 3 redis-servers, cut from
                     one master, then from two, and healed; another one outside
  stall-pg           one stalled transaction on a resource with a due lease: changes of other
                     resources go on (the reproduction of a defect the harness found, fixed)
The pg and partition-pg scenarios run under tests/pg/with_pg.sh. Partitions need root (or
CAP_NET_ADMIN) and `ip netns`: without them the run exits 77 (CTest's skip) with the reason.
HF_FAULT_LONG=1: the long form (more rounds, longer faults).

Usage: faults_test.py HOLDFASTD HOLDFAST_CHECK SCENARIO..."""
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "pg"))
import pgtest  # noqa: E402
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "server"))
from hfserver import free_port  # noqa: E402
from faultlib import History, Holdfastd, Proc, background, check, count, failures, \
    read_back, run_check, seed_from_env  # noqa: E402

LONG = os.environ.get("HF_FAULT_LONG") == "1"
SKIP = 77
FAKETIME_LIB = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"
totals = {"ops": 0, "unknown": 0, "faults": 0, "scenarios": 0}


class Run:
    """One scenario's history, workload and verdict."""

    def __init__(self, name, checker, rng):
        self.name, self.checker, self.rng = name, checker, rng
        self.hist = History()
        self.stop = threading.Event()
        self.threads = []
        self.faults = 0
        self.keep = tempfile.mkdtemp(prefix="hf-faults-%s-" % name)
        self.path = os.path.join(self.keep, "history.jsonl")
        for res in ("bg-0", "bg-1", "bg-2"):
            self.hist.add(type="resource", name=res, capacity=1)

    def load(self, servers, per_server=2, first_pid=100, timeout=60, confirm=0.2):
        for i in range(per_server * len(servers)):
            t = threading.Thread(target=background, args=(
                self.hist, first_pid + i, servers[i % len(servers)],
                random.Random(self.rng.random()), self.stop),
                kwargs={"confirm": confirm, "timeout": timeout})
            t.start()
            self.threads.append(t)

    def end_load(self):
        self.stop.set()
        for t in self.threads:
            t.join(120)
            check(not t.is_alive(), "%s: a client did not finish" % self.name)

    def finish(self, servers=(), slack_us=None, expect=0, last=True, violation=None):
        """Writes the history, runs holdfast-check (expect: its exit status; violation: a
        check it must name), prints the figures; the history and the servers' logs are kept
        on a failure."""
        self.hist.write(self.path)
        args = ["--lease-slack-us", str(slack_us)] if slack_us else []
        rc, out = run_check(self.checker, self.path, "--max-print", "2", *args)
        ok = check(rc == expect and (violation is None or "VIOLATION %s:" % violation in out),
                   "%s: holdfast-check status %d, expected %d%s, on %s:\n%s" %
                   (self.name, rc, expect, " (%s)" % violation if violation else "",
                    self.path, out))
        ops, unknown = count(self.path)
        print("%s: %d operations (%d unknown), %d faults; holdfast-check%s: %s" %
              (self.name, ops, unknown, self.faults, " " + " ".join(args) if args else "",
               out.splitlines()[0] if out else "(nothing)"), flush=True)
        totals["ops"] += ops
        totals["unknown"] += unknown
        totals["faults"] += self.faults
        totals["scenarios"] += 1
        if not ok:
            for server in servers:
                print("log: %s" % server.log_path, flush=True)
        elif last and not failures:
            for d in [self.keep] + [server.dir for server in servers]:
                shutil.rmtree(d, ignore_errors=True)


def pause(rng, lo, hi):
    time.sleep(rng.uniform(lo, hi))


def rounds(short, long_):
    return long_ if LONG else short


# ---------------------------------------------------------------- SIGKILL and restart

def kill_rounds(run, servers, rng, n):
    """Kills one of `servers` at a random moment under load, restarts it after a pause."""
    for rnd in range(n):
        pause(rng, 0.3, 1.0)
        s = rng.choice(servers)
        s.kill()
        run.faults += 1
        pause(rng, 0.0, 0.5)
        s.start()


def scenario_kill_pg(binary, checker, rng):
    pgtest.reset_schema()
    a, b = Holdfastd(binary, pgtest.URL), Holdfastd(binary, pgtest.URL)
    run = Run("kill-pg", checker, rng)
    run.load([a, b])
    try:
        kill_rounds(run, [a, b], rng, rounds(3, 30))
    finally:
        run.end_load()
    read_back(run.hist, a)
    check(a.stop() == 0 and b.stop() == 0, "kill-pg: holdfastd did not stop cleanly")
    run.finish([a, b])


def scenario_kill_file(binary, checker, rng):
    d = tempfile.mkdtemp(prefix="hf-faults-file-")
    a = Holdfastd(binary, "file:%s/store.db" % d)
    run = Run("kill-file", checker, rng)
    run.load([a], per_server=4)
    try:
        kill_rounds(run, [a], rng, rounds(3, 30))
    finally:
        run.end_load()
    read_back(run.hist, a)
    check(a.stop() == 0, "kill-file: holdfastd did not stop cleanly")
    run.finish([a])
    shutil.rmtree(d, ignore_errors=True)


# ---------------------------------------------------------------- database restarts

def scenario_pg_restart(binary, checker, rng):
    pgtest.reset_schema()
    a, b = Holdfastd(binary, pgtest.URL), Holdfastd(binary, pgtest.URL)
    run = Run("pg-restart", checker, rng)
    run.load([a, b])
    try:
        for rnd in range(rounds(2, 20)):
            pause(rng, 0.5, 1.2)
            pgtest.pg_stop(rng.choice(["immediate", "immediate", "fast"]))
            run.faults += 1
            pause(rng, 0.0, 1.0)
            pgtest.pg_start()
        pause(rng, 0.5, 1.0)
    finally:
        run.end_load()
    read_back(run.hist, a)
    check(a.stop() == 0 and b.stop() == 0, "pg-restart: holdfastd did not stop cleanly")
    run.finish([a, b])


class RedisServer:
    """A private redis-server (foreground child) on a free port; kill() and start() again with
    the same data directory. aof: appendonly with appendfsync always, else no persistence."""

    def __init__(self, aof, bind=("127.0.0.1",)):
        self.dir = tempfile.mkdtemp(prefix="hf-faults-redis-")
        self.port, self.aof, self.bind = free_port(), aof, list(bind)
        self.proc = None
        self.start()

    def start(self):
        cmd = ["redis-server", "--port", str(self.port), "--bind", " ".join(self.bind),
               "--dir", self.dir, "--save", "", "--logfile", os.path.join(self.dir, "log"),
               "--appendonly", "yes" if self.aof else "no", "--appendfsync", "always",
               "--protected-mode", "no"]  # the namespace reaches it on a veth address
        deadline = time.monotonic() + 20
        while True:
            self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL)
            while time.monotonic() < deadline and self.proc.poll() is None:
                out = subprocess.run(["redis-cli", "-p", str(self.port), "info", "server"],
                                     capture_output=True, text=True).stdout
                if "process_id:%d" % self.proc.pid in out:
                    return
                time.sleep(0.05)
            if time.monotonic() >= deadline:
                raise RuntimeError("redis-server did not start on %d" % self.port)
            time.sleep(0.1)  # the killed one's port not free yet

    def kill(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def close(self):
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


def redis_no_persistence(binary, checker, rng):
    """Without persistence a killed Redis forgets everything: a confirmed hold is gone, the
    lock is granted again with a fence that went back. holdfast promises nothing here
    (docs/redis.md, "Durability"); the checker must see it."""
    r = RedisServer(aof=False)
    a = Holdfastd(binary, "redis://127.0.0.1:%d?prefix=hff:" % r.port)
    run = Run("redis-kill-no-persistence", checker, rng)
    p, q = Proc(run.hist, 1, a), Proc(run.hist, 2, a)
    try:
        for _ in range(3):
            h = p.acquire("lock", ttl_ms=60000)
            check(h and p.hold_op("release", h) is None, "redis: a lock before the kill")
        h = p.acquire("lock", ttl_ms=60000)
        check(h and p.hold_op("confirm", h) is None, "redis: the confirmed hold")
        r.kill()
        run.faults += 1
        r.start()
        deadline = time.monotonic() + 20
        h2 = None
        while h2 is None and time.monotonic() < deadline:
            h2 = q.acquire("lock", ttl_ms=60000)
            if h2 is None:
                time.sleep(0.1)
        check(h2 is not None, "redis: no grant after a restart without persistence")
        p.read(h["id"])
    finally:
        p.close()
        q.close()
        a.stop()
        r.close()
    run.finish([a], expect=1, violation="lost_confirm")


def scenario_redis_kill(binary, checker, rng):
    r = RedisServer(aof=True)
    a = Holdfastd(binary, "redis://127.0.0.1:%d?prefix=hff:" % r.port)
    b = Holdfastd(binary, "redis://127.0.0.1:%d?prefix=hff:" % r.port)
    run = Run("redis-kill", checker, rng)
    run.load([a, b])
    try:
        for rnd in range(rounds(2, 20)):
            pause(rng, 0.5, 1.2)
            r.kill()
            run.faults += 1
            pause(rng, 0.0, 1.0)
            r.start()
        pause(rng, 0.5, 1.0)
    finally:
        run.end_load()
    read_back(run.hist, a)
    check(a.stop() == 0 and b.stop() == 0, "redis-kill: holdfastd did not stop cleanly")
    r.close()
    run.finish([a, b])
    redis_no_persistence(binary, checker, rng)


# ---------------------------------------------------------------- clock jumps

class FakeClock:
    """libfaketime driven through a file read on every clock call (FAKETIME_NO_CACHE): the
    offset of CLOCK_REALTIME from the real time. The monotonic clock is left alone
    (FAKETIME_DONT_FAKE_MONOTONIC): a step of the wall clock, as an NTP step or an operator's
    `date -s`, does not move CLOCK_MONOTONIC either."""

    def __init__(self):
        if not os.path.exists(FAKETIME_LIB):
            print("SKIP: libfaketime not installed (apt-get install faketime)", flush=True)
            sys.exit(SKIP)
        fd, self.path = tempfile.mkstemp(prefix="hf-faketime-")
        os.close(fd)
        self.set(0)
        self.env = {"LD_PRELOAD": FAKETIME_LIB, "FAKETIME_TIMESTAMP_FILE": self.path,
                    "FAKETIME_NO_CACHE": "1", "FAKETIME_DONT_FAKE_MONOTONIC": "1"}

    def set(self, offset_s):
        with open(self.path + ".new", "w") as f:
            f.write("%+d\n" % offset_s)
        os.rename(self.path + ".new", self.path)

    def close(self):
        os.unlink(self.path)


JUMP_S = 3600


def scenario_clock_pg(binary, checker, rng):
    """A's clock jumps an hour forward and back while its client holds a lock: the database
    judges the lease, so B's client is refused it all along and A's client keeps it."""
    pgtest.reset_schema()
    clock = FakeClock()
    a = Holdfastd(binary, pgtest.URL, env=clock.env)
    b = Holdfastd(binary, pgtest.URL)
    run = Run("clock-pg", checker, rng)
    run.load([a, b])
    pa, pb = Proc(run.hist, 1, a), Proc(run.hist, 2, b)
    try:
        for rnd in range(rounds(1, 10)):
            res = "clock-lock-%d" % rnd
            lease = rng.randrange(2000, 4000)
            h = pa.acquire(res, ttl_ms=lease)
            if not check(h, "clock-pg: the acquire through A"):
                continue
            for offset in (JUMP_S, -JUMP_S, 0):
                clock.set(offset)
                run.faults += 1
                pause(rng, 0.1, 0.3)
                check(pb.acquire(res, ttl_ms=1000) is None,
                      "clock-pg: B granted a lock A's client holds (A's clock %+d s)" % offset)
                check(pa.hold_op("extend", h, ttl_ms=lease) is None,
                      "clock-pg: A's extend failed with its clock at %+d s" % offset)
            check(pa.hold_op("release", h) is None, "clock-pg: A's release")
            h2 = pb.acquire(res, ttl_ms=1000)
            check(h2 and h2["fence"][res] > h["fence"][res], "clock-pg: B after A's release")
            if h2:
                pb.hold_op("release", h2)
    finally:
        pa.close()
        pb.close()
        clock.set(0)
        run.end_load()
    read_back(run.hist, b)
    check(a.stop() == 0 and b.stop() == 0, "clock-pg: holdfastd did not stop cleanly")
    clock.close()
    run.finish([a, b])


def scenario_clock_file(binary, checker, rng):
    """The embedded engine judges leases by the wall clock (CLOCK_REALTIME; hf_now_ms). A
    forward step ends leases early by the step: another client is granted a lock whose
    holder's lease had most of its time left — the checker, judging by the clients' clock,
    must call that a lease cut short unless told the drift (--lease-slack-us). A backward step
    stretches leases by the step: nothing is granted early (safe), expiry comes late."""
    clock = FakeClock()
    d = tempfile.mkdtemp(prefix="hf-faults-file-")
    a = Holdfastd(binary, "file:%s/store.db" % d, env=clock.env)
    run = Run("clock-file", checker, rng)
    run.load([a])
    p, q = Proc(run.hist, 1, a), Proc(run.hist, 2, a)
    step = 60
    try:
        # Forward: the lease (30 s) has most of its time left; the step ends it.
        h = p.acquire("fwd-lock", ttl_ms=30000)
        clock.set(step)
        run.faults += 1
        h2 = None
        deadline = time.monotonic() + 10
        while h2 is None and time.monotonic() < deadline:
            h2 = q.acquire("fwd-lock", ttl_ms=1000)
            time.sleep(0 if h2 else 0.1)
        check(h and h2 and h2["fence"]["fwd-lock"] > h["fence"]["fwd-lock"],
              "clock-file: after a forward step the lock was not granted again (the "
              "engine's leases are on the wall clock)")
        check(p.hold_op("extend", h, ttl_ms=30000) == "hold_ended",
              "clock-file: the cut-short hold was extended")
        # Backward: a lease of 1.5 s stretched by the step; still held after 2 s.
        h3 = p.acquire("back-lock", ttl_ms=1500)
        clock.set(0)
        run.faults += 1
        time.sleep(2.0)
        check(q.acquire("back-lock", ttl_ms=1000) is None,
              "clock-file: after a backward step a lease ended on the real time")
        check(h3 and p.read(h3["id"]) == "tentative", "clock-file: the stretched hold")
        check(h3 and p.hold_op("release", h3) is None, "clock-file: its release")
        h4 = q.acquire("back-lock", ttl_ms=1000)
        check(h3 and h4 and h4["fence"]["back-lock"] > h3["fence"]["back-lock"],
              "clock-file: fences after a backward step")
    finally:
        p.close()
        q.close()
        clock.set(0)
        run.end_load()
    read_back(run.hist, a)
    check(a.stop() == 0, "clock-file: holdfastd did not stop cleanly")
    clock.close()
    # Judged by the clients' clock the forward step cut leases short; with the step as the
    # lease slack (the drift between the engine's clock and the clients') it is valid.
    run.finish([a], expect=1, last=False, violation="lease_cut_short")
    run.name = "clock-file (slack = the step)"
    totals["scenarios"] -= 1
    run.finish([a], slack_us=(step + 1) * 1000000)
    shutil.rmtree(d, ignore_errors=True)


# ---------------------------------------------------------------- partitions

def ip(*args, check_rc=True):
    out = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check_rc and out.returncode != 0:
        raise RuntimeError("ip %s: %s" % (" ".join(args), out.stderr.strip()))
    return out


class Netns:
    """A network namespace joined to this one by veth pairs, one per link k: the host end
    10.<net>.<k>.1/30, the namespace end 10.<net>.<k>.2/30. cut(k) sets the host end down:
    packets on that link are dropped silently (no reset), as in a partition; heal(k) sets it
    up again (open TCP connections survive a short cut, their segments are retransmitted)."""

    def __init__(self, links):
        tag = "%d" % (os.getpid() % 100000)
        self.ns, self.net = "hff%s" % tag, 100 + os.getpid() % 100
        self.hosts = ["hf%sh%d" % (tag, k) for k in range(links)]
        ip("netns", "add", self.ns)
        try:
            ip("-n", self.ns, "link", "set", "lo", "up")
            for k, host in enumerate(self.hosts):
                ip("link", "add", host, "type", "veth", "peer", "name", "nsend%d" % k,
                   "netns", self.ns)
                ip("addr", "add", self.host_ip(k) + "/30", "dev", host)
                ip("link", "set", host, "up")
                ip("-n", self.ns, "addr", "add", self.ns_ip(k) + "/30", "dev", "nsend%d" % k)
                ip("-n", self.ns, "link", "set", "nsend%d" % k, "up")
        except Exception:
            self.close()
            raise
        self.wrap = ["ip", "netns", "exec", self.ns]

    def host_ip(self, k):
        return "10.%d.%d.1" % (self.net, k)

    def ns_ip(self, k):
        return "10.%d.%d.2" % (self.net, k)

    def cut(self, k):
        ip("link", "set", self.hosts[k], "down")

    def heal(self, k):
        ip("link", "set", self.hosts[k], "up")
        # Neighbour entries that failed during the cut would answer "No route to host" for
        # seconds after it: forget them, as a healed network's next packet would re-resolve.
        ip("neigh", "flush", "dev", self.hosts[k], check_rc=False)
        ip("-n", self.ns, "neigh", "flush", "dev", "nsend%d" % k, check_rc=False)

    def close(self):
        ip("netns", "del", self.ns, check_rc=False)
        for host in self.hosts:
            ip("link", "del", host, check_rc=False)


def netns_or_skip(links):
    if shutil.which("ip") is None:
        print("SKIP: no `ip` (iproute2)", flush=True)
        sys.exit(SKIP)
    try:
        return Netns(links)
    except RuntimeError as e:
        print("SKIP: network namespaces refused here (needs CAP_NET_ADMIN): %s" % e,
              flush=True)
        sys.exit(SKIP)


def pg_listen_on(addr):
    """PostgreSQL listens on addr too (TCP, trust from 10/8): restarted with that option."""
    hba = os.path.join(pgtest.PG_DIR, "data", "pg_hba.conf")
    with open(hba, "a") as f:
        f.write("host all all 10.0.0.0/8 trust\n")
    pgtest.pg_stop("fast")
    pgtest.pg_start(listen=addr)


def scenario_partition_pg(binary, checker, rng):
    """A (in a namespace, TCP to PostgreSQL over link 1; its clients over link 0) is cut from
    the database, then healed; B, outside, goes on. Each round A's client holds a lock and
    sends an extend into the cut; B's client waits for the lock and must be granted it while
    A is cut off (the lease is the database's); healed, A's extend must answer hold_ended."""
    net = netns_or_skip(2)
    try:
        pgtest.reset_schema()
        pg_listen_on(net.host_ip(1))
        url = "postgres://%s@%s:5432/postgres?schema=hf_test" % (pgtest.PG_USER,
                                                                 net.host_ip(1))
        a = Holdfastd(binary, url, host=net.ns_ip(0), wrap=net.wrap)
        b = Holdfastd(binary, pgtest.URL)
        run = Run("partition-pg", checker, rng)
        run.load([a, b])
        pa, pb = Proc(run.hist, 1, a), Proc(run.hist, 2, b)
        try:
            for rnd in range(rounds(2, 6)):
                pause(rng, 0.3, 0.8)
                res, lease = "part-lock-%d" % rnd, rng.randrange(800, 1500)
                h = pa.acquire(res, ttl_ms=lease)
                net.cut(1)
                run.faults += 1
                ext = {}
                t = threading.Thread(target=lambda: ext.update(
                    code=pa.hold_op("extend", h, ttl_ms=60000) if h else None))
                t.start()
                h2 = pb.acquire(res, ttl_ms=2000, wait_ms=lease + 30000)
                check(h2, "partition-pg: B did not grant the lock of A's cut-off client")
                # The long form also outlasts tcp_user_timeout (20 s): A's connections die.
                pause(rng, 0.0, 1.0) if not LONG else pause(rng, 2.0, 25.0)
                net.heal(1)
                t.join(90)
                # hold_ended; in the long form A's connection may have died (503).
                check(not h or ext.get("code") == "hold_ended" or
                      (LONG and ext.get("code") == "engine_unavailable"),
                      "partition-pg: A's extend sent into the cut answered %s" %
                      ext.get("code"))
                if h2:
                    pb.hold_op("release", h2)
            pause(rng, 0.5, 1.0)
        finally:
            net.heal(1)
            pa.close()
            pb.close()
            run.end_load()
        read_back(run.hist, b)
        check(a.stop() == 0 and b.stop() == 0, "partition-pg: holdfastd did not stop cleanly")
        run.finish([a, b])
    finally:
        net.close()


def scenario_partition_redlock(binary, checker, rng):
    """A (in a namespace; link 0 for its clients, link k+1 to master k) and B (outside) on
    redlock:// over the same 3 masters. A is cut from one master (it still has a majority),
    then from two (it has none: its acquires fail, its holds lapse), and healed."""
    net = netns_or_skip(4)
    masters = []
    try:
        masters = [RedisServer(aof=False, bind=("127.0.0.1", net.host_ip(k + 1)))
                   for k in range(3)]
        a = Holdfastd(binary, "redlock://" + ",".join(
            "%s:%d" % (net.host_ip(k + 1), m.port) for k, m in enumerate(masters)),
            host=net.ns_ip(0), wrap=net.wrap)
        b = Holdfastd(binary, "redlock://" + ",".join(
            "127.0.0.1:%d" % m.port for m in masters))
        run = Run("partition-redlock", checker, rng)
        run.load([a, b], confirm=0.0)
        pa = Proc(run.hist, 1, a)
        try:
            for rnd in range(rounds(2, 8)):
                cut = rng.sample(range(3), 1 + rnd % 2)
                pause(rng, 0.5, 1.0)
                for k in cut:
                    net.cut(k + 1)
                run.faults += 1
                # The cut is seen: with one master gone A still has a majority, with two not.
                h = pa.acquire("probe-%d" % rnd, ttl_ms=1000)
                check((h is not None) == (len(cut) == 1), "partition-redlock: A cut from %d "
                      "of 3 masters %s a lock" % (len(cut), "took" if h else "did not take"))
                if h:
                    pa.hold_op("release", h)
                pause(rng, 1.5, 3.0)
                for k in cut:
                    net.heal(k + 1)
            pause(rng, 0.5, 1.0)
        finally:
            for k in range(3):
                net.heal(k + 1)
            pa.close()
            run.end_load()
        check(a.stop() == 0 and b.stop() == 0,
              "partition-redlock: holdfastd did not stop cleanly")
        # Redlock's validity is the lease less its drift allowance (1 % + 2 ms: 14 ms at the
        # workload's longest lease, 1,200 ms): the lease slack the checker must allow.
        run.finish([a, b], slack_us=15000)
    finally:
        for m in masters:
            m.close()
        net.close()


def scenario_stall_pg(binary, checker, rng):
    """A transaction that stalls holding a resource's row (an instance paused or cut off
    mid-change) while a lease on that resource is due: changes of other resources must go on.
    Before the fix (docs/reliability.md, section 9) every change of every instance waited
    for it and answered 503 after lock_timeout (5 s), until the stalled transaction ended
    (idle_in_transaction_session_timeout, 30 s). The stall is a superuser session here."""
    pgtest.reset_schema()
    b = Holdfastd(binary, pgtest.URL)
    run = Run("stall-pg", checker, rng)
    p = Proc(run.hist, 1, b)
    s = None
    try:
        p.acquire("x", ttl_ms=200)
        s = pgtest.Psql()
        s.send("SET search_path TO hf_test; BEGIN;"
               " SELECT name FROM resources WHERE name = 'x' FOR UPDATE;")
        run.faults += 1
        time.sleep(0.5)  # x's lease is due now; its row stays locked
        for name in ("y", "z"):
            t0 = time.monotonic()
            h = p.acquire(name, ttl_ms=1000)
            check(h, "stall-pg: an acquire of '%s' (untouched by the stalled transaction) "
                  "answered %s after %.1f s" % (name, run.hist.lines[-1].get("message"),
                                                time.monotonic() - t0))
    finally:
        if s:
            s.send("ROLLBACK;")
            s.close()
        p.close()
        b.stop()
    run.finish([b])


SCENARIOS = {
    "stall-pg": scenario_stall_pg,
    "kill-pg": scenario_kill_pg, "kill-file": scenario_kill_file,
    "pg-restart": scenario_pg_restart, "redis-kill": scenario_redis_kill,
    "clock-pg": scenario_clock_pg, "clock-file": scenario_clock_file,
    "partition-pg": scenario_partition_pg, "partition-redlock": scenario_partition_redlock,
}


def main():
    if len(sys.argv) < 4 or any(s not in SCENARIOS for s in sys.argv[3:]):
        raise SystemExit(__doc__)
    binary, checker = (os.path.abspath(p) for p in sys.argv[1:3])
    if any(s in ("kill-pg", "pg-restart", "clock-pg", "partition-pg", "stall-pg")
           for s in sys.argv[3:]):
        pgtest.need_pg()
    seed = seed_from_env()
    for name in sys.argv[3:]:
        t0 = time.monotonic()
        SCENARIOS[name](binary, checker, random.Random("%d/%s" % (seed, name)))
        print("%s: %.1f s" % (name, time.monotonic() - t0), flush=True)
    print("total: %d scenarios, %d operations checked (%d unknown), %d faults injected; "
          "seed %d" % (totals["scenarios"], totals["ops"], totals["unknown"],
                       totals["faults"], seed), flush=True)
    if failures:
        print("%d failure(s); seed %d (HF_TEST_SEED=%d repeats it)" %
              (len(failures), seed, seed), flush=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
