"""rides.py — starts the real app binaries (holdfast-rides, -shop, -library) for the
black-box tests and talks to them.

Runs under tests/pg/with_pg.sh and tests/redis/with_redis.sh (their PostgreSQL and Redis):
App starts an app on a loopback port (0: a free one, read from its "listening" log
line) over a holdfast engine URL; psql() runs SQL on the test's PostgreSQL. Python 3 standard
library only.
"""
import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time

PG_DIR = os.environ.get("HF_PG_DIR", "")
PG_USER = os.environ.get("HF_PG_USER", "")
PGBIN = os.environ.get("PGBIN", "")
REDIS_PORT = int((os.environ.get("HF_REDIS_PORTS") or "0").split()[0])
DB_URL = "postgresql:///postgres?host=%s&user=%s" % (PG_DIR, PG_USER)


def run_all(n, fn):
    """Runs fn(i) on n threads released together; returns their results in order."""
    barrier = threading.Barrier(n)
    out = [None] * n

    def one(i):
        barrier.wait()
        try:
            out[i] = fn(i)
        except Exception as e:  # noqa: BLE001 — reported by the caller's assertions
            out[i] = ("exception", repr(e))

    ts = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return out


def psql(sql):
    """Runs SQL on the test's PostgreSQL; returns the rows as lists of strings."""
    out = subprocess.run([os.path.join(PGBIN, "psql"), "-X", "-q", "-A", "-t", "-F", "\t",
                          "-v", "ON_ERROR_STOP=1", "-h", PG_DIR, "-U", PG_USER, "-d", "postgres",
                          "-c", sql], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(out.stderr.strip())
    return [line.split("\t") for line in out.stdout.splitlines() if line]


def port_free(port):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


class App:
    """One app process (holdfast-rides by default; any app binary: redis=False for the ones
    without --redis)."""

    def __init__(self, binary, holdfast_url, *args, port=0, redis=True):
        self.name = os.path.basename(binary)
        self.dir = tempfile.mkdtemp(prefix="hf-app-")
        self.log_path = os.path.join(self.dir, "%s-%d.log" % (self.name, time.monotonic_ns()))
        self.log = open(self.log_path, "wb")
        cmd = [binary, "--listen", "127.0.0.1:%d" % port, "--holdfast", holdfast_url,
               "--db", DB_URL] + (["--redis", "127.0.0.1:%d" % REDIS_PORT] if redis else [])
        cmd += list(args)
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=self.log)
        self.port = self._wait_port()

    def _wait_port(self):
        deadline = time.time() + 30
        while time.time() < deadline:
            text = self.log_text()
            m = re.search(r"listening on http://\S+:(\d+)", text)
            if m:
                return int(m.group(1))
            if self.proc.poll() is not None:
                raise RuntimeError("%s exited %s:\n%s" % (self.name, self.proc.returncode, text))
            time.sleep(0.02)
        self.proc.kill()
        self.proc.wait()
        raise RuntimeError("%s did not start:\n%s" % (self.name, self.log_text()))

    def log_text(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def conn(self, timeout=60):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def request(self, method, path, body=None, raw=None, conn=None):
        """Returns (status, parsed JSON body). Every answer must be JSON."""
        c = conn or self.conn()
        data = raw if raw is not None else (json.dumps(body) if body is not None else None)
        headers = {"Content-Type": "application/json"} if data is not None else {}
        c.request(method, path, body=data, headers=headers)
        r = c.getresponse()
        text = r.read().decode()
        if conn is None:
            c.close()
        if not r.getheader("Content-Type", "").startswith("application/json"):
            raise AssertionError("%s %s: not JSON (%s): %r" % (method, path, r.status, text))
        return r.status, json.loads(text)

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, body=None, **kw):
        return self.request("POST", path, body=body, **kw)

    def put(self, path, body=None, **kw):
        return self.request("PUT", path, body=body, **kw)

    def kill(self):
        """SIGKILL: no shutdown at all, as in a crash."""
        self.proc.kill()
        self.proc.wait()
        self.log.close()

    def stop_clean(self):
        """SIGTERM and a clean exit (0, and no sanitizer report in its log): the log's
        directory is removed; else an AssertionError carries the log."""
        rc = self.stop()
        text = self.log_text()
        if rc != 0 or "Sanitizer" in text or "runtime error" in text:
            raise AssertionError("%s exited %s:\n%s" % (self.name, rc, text[-4000:]))
        shutil.rmtree(self.dir, ignore_errors=True)

    def stop(self, timeout=30):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise
        self.log.close()
        return self.proc.returncode


def active_drivers_in_db():
    """{driver_id: booking_id} of the bookings that are assigned or accepted."""
    rows = psql("SELECT driver_id, id FROM bookings WHERE status IN ('assigned','accepted')")
    out = {}
    for d, b in rows:
        assert int(d) not in out, "driver %s on bookings %s and %s" % (d, out[int(d)], b)
        out[int(d)] = int(b)
    return out
