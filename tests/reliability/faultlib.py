"""faultlib.py — the shared half of issue 15's fault harness (sigstop_test.py, faults_test.py):
the Jepsen-style history its clients write (docs/reliability.md, section 1), one client per
history `process`, holdfastd processes that can be killed and restarted on their port (also
inside a network namespace or under libfaketime), the background workload, and running
holdfast-check."""
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "pg"))
from pgtest import Client, check, failures  # noqa: E402,F401 (check and failures: for the tests)

# Answers that leave the outcome unknown (as holdfast-bench writes them: "info").
UNKNOWN = {"engine_unavailable", "protocol_error", "shutting_down", "storage_error",
           "internal_error", "out_of_memory"}


def seed_from_env():
    """The run's seed: HF_TEST_SEED or a fresh one; printed first, so a failure reproduces."""
    seed = int(os.environ.get("HF_TEST_SEED") or random.SystemRandom().randrange(1, 10**9))
    print("seed %d (HF_TEST_SEED=%d repeats it)" % (seed, seed), flush=True)
    return seed


class History:
    """The history in real-time order: a line's time is taken, and the line appended, under
    one lock — invocations before the request is sent, completions after the answer came."""

    def __init__(self):
        self.lock = threading.Lock()
        self.lines = []
        self.t0 = time.monotonic()

    def add(self, **line):
        with self.lock:
            line["time_us"] = int((time.monotonic() - self.t0) * 1e6)
            self.lines.append(line)
            return line

    def write(self, path):
        with open(path, "w") as f:
            for line in self.lines:
                f.write(json.dumps(line) + "\n")

    def granted(self):
        """Every hold id an acquire was answered with."""
        return [l["hold"] for l in self.lines if l.get("f") == "acquire" and
                l.get("type") == "ok"]


class Proc:
    """One client (a history `process`) of one holdfastd: at most one operation open. The
    connection is made again after it drops, to the server's port of the moment (a restarted
    server keeps its port)."""

    def __init__(self, hist, pid, server, timeout=60):
        self.hist, self.pid, self.server, self.timeout = hist, pid, server, timeout
        self.c = None
        self.unknown = False  # the last operation's outcome is unknown (no answer)

    def close(self):
        if self.c is not None:
            self.c.close()
            self.c = None

    def request(self, method, path, body=None):
        """(status, JSON); raises OSError/HTTPException when the outcome is unknown."""
        if self.c is None:
            self.c = Client(self.server.port, self.timeout, host=self.server.host)
        try:
            return self.c.request(method, path, body)
        except Exception:
            self.close()  # the next request connects to the server's address of that moment
            raise

    def _call(self, f, method, path, body, fields, ok_status):
        self.hist.add(process=self.pid, type="invoke", f=f, **fields)
        self.unknown = False
        try:
            st, js = self.request(method, path, body)
        except Exception as e:  # noqa: BLE001 — the outcome is unknown
            self.unknown = True
            self.hist.add(process=self.pid, type="info", f=f, error="connection: %s" % e,
                          **fields)
            return None, None
        if st == ok_status:
            return st, js
        err = (js or {}).get("error", {})
        code = err.get("code", "http_%d" % st)
        self.unknown = code in UNKNOWN
        self.hist.add(process=self.pid, type="info" if self.unknown else "fail", f=f,
                      error=code, message=err.get("message", ""), **fields)
        return st, js

    def acquire(self, res, ttl_ms, wait_ms=0):
        fields = {"resource": res, "capacity": 1, "units": 1, "ttl_ms": ttl_ms,
                  "wait_ms": wait_ms}
        body = {"owner": "p%d" % self.pid, "ttl_ms": ttl_ms, "wait_ms": wait_ms,
                "resources": [{"name": res, "units": 1, "capacity": 1}]}
        st, js = self._call("acquire", "POST", "/v1/holds", body, fields, 201)
        if st != 201:
            return None
        self.hist.add(process=self.pid, type="ok", f="acquire", hold=js["id"],
                      resource=res, capacity=1, units=1, fence=js["fence"][res])
        return js

    def hold_op(self, f, hold, ttl_ms=None):
        """extend, confirm or release; returns the error code, or None when it succeeded
        ("no answer" when the outcome is unknown)."""
        body = {"token": hold["token"]}
        fields = {"hold": hold["id"]}
        if ttl_ms is not None:
            body["ttl_ms"] = fields["ttl_ms"] = ttl_ms
        st, js = self._call(f, "POST", "/v1/holds/%s/%s" % (hold["id"], f), body, fields, 200)
        if st == 200:
            self.hist.add(process=self.pid, type="ok", f=f, hold=hold["id"])
            return None
        return (js or {}).get("error", {}).get("code", "no answer")

    def read(self, hold_id):
        self.hist.add(process=self.pid, type="invoke", f="read", hold=hold_id)
        try:
            st, js = self.request("GET", "/v1/holds/%s" % hold_id)
        except Exception as e:  # noqa: BLE001
            self.hist.add(process=self.pid, type="info", f="read", hold=hold_id, error=str(e))
            return None
        state = js["state"] if st == 200 else "not_found" if st == 404 else None
        if state is None:
            self.hist.add(process=self.pid, type="info", f="read", hold=hold_id,
                          error="http_%d" % st)
        else:
            self.hist.add(process=self.pid, type="ok", f="read", hold=hold_id, state=state)
        return state


def background(hist, pid, server, rng, stop, names=("bg-0", "bg-1", "bg-2"), confirm=0.0,
               timeout=60):
    """Takes and releases locks until told to stop; some holds are extended, some left to
    expire. With probability `confirm` a step instead takes a lock of its own and confirms it,
    and keeps it: a confirmed hold must never be lost (read_back reads it at the end).
    After an answer that leaves the outcome unknown the client pauses a little (a killed
    server refuses at once)."""
    p = Proc(hist, pid, server, timeout=timeout)
    kept = 0
    while not stop.is_set():
        if rng.random() < confirm:
            kept += 1
            h = p.acquire("keep-%d-%d" % (pid, kept), ttl_ms=2000)
            if h:
                p.hold_op("confirm", h)
            if p.unknown:
                time.sleep(0.05)
            continue
        res = rng.choice(names)
        h = p.acquire(res, ttl_ms=rng.choice([300, 600, 1200]), wait_ms=rng.choice([0, 500]))
        if p.unknown:
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 0.1))
        if h and rng.random() < 0.85:
            if rng.random() < 0.3:
                p.hold_op("extend", h, ttl_ms=rng.choice([300, 900]))
            p.hold_op("release", h)
            if p.unknown:
                time.sleep(0.05)
    p.close()


def read_back(hist, server, pid=1000000):
    """Reads every hold granted in the history back (the final read of holdfast-bench): a
    confirmed hold must be there, an acknowledged release must have stuck."""
    p = Proc(hist, pid, server)
    for h in hist.granted():
        p.read(h)
    p.close()


def run_check(checker, path, *args):
    out = subprocess.run([checker, *args, path], capture_output=True, text=True, timeout=300)
    return out.returncode, (out.stdout + out.stderr).strip()


def count(path):
    lines = [json.loads(l) for l in open(path) if l.strip()]
    return (sum(1 for x in lines if x.get("type") == "invoke"),
            sum(1 for x in lines if x.get("type") == "info"))


class Holdfastd:
    """One holdfastd on host:port (port 0: a free one, kept across restarts). `wrap` prefixes
    the command (e.g. `ip netns exec NS`: it execs, so the pid is holdfastd's); `env` adds to
    the environment (e.g. libfaketime's). Its log collects every start."""

    def __init__(self, binary, engine, host="127.0.0.1", wrap=(), env=None, args=()):
        self.binary, self.engine, self.host = binary, engine, host
        self.wrap, self.env, self.args = list(wrap), env, list(args)
        self.dir = tempfile.mkdtemp(prefix="hf-fault-")
        self.log_path = os.path.join(self.dir, "holdfastd.log")
        self.port, self.proc, self.starts = 0, None, 0
        self.start()

    def log_text(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def start(self, bound_s=20):
        """Starts (again); a port still held by the killed process is retried until free."""
        deadline = time.monotonic() + bound_s
        while True:
            skip = len(self.log_text()) if os.path.exists(self.log_path) else 0
            log = open(self.log_path, "ab")
            self.proc = subprocess.Popen(
                self.wrap + [self.binary, "--listen", "%s:%d" % (self.host, self.port),
                             "--engine", self.engine] + self.args,
                stdout=log, stderr=log, cwd=self.dir,
                env=dict(os.environ, **self.env) if self.env else None)
            log.close()
            while time.monotonic() < deadline:
                m = re.search(r"msg=listening addr=\S+ port=(\d+)", self.log_text()[skip:])
                if m:
                    self.port = int(m.group(1))
                    self.starts += 1
                    return
                if self.proc.poll() is not None:
                    break
                time.sleep(0.02)
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            if time.monotonic() >= deadline:
                raise RuntimeError("holdfastd did not start:\n" + self.log_text()[skip:])
            time.sleep(0.1)

    def kill(self):
        """SIGKILL: no drain, no journal flush beyond what was already committed."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self, timeout=30):
        """SIGTERM; returns the exit status (the process is killed if it does not exit)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                return "did not stop in %d s" % timeout
        return self.proc.returncode
