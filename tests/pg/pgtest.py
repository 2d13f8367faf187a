"""pgtest.py — helpers of the Python tests in tests/pg: holdfastd processes over with_pg.sh's
PostgreSQL, superuser psql sessions, stopping/starting that server, a keep-alive JSON client."""
import http.client
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time

URL = os.environ.get("HF_TEST_ENGINE_URL", "")
PG_DIR = os.environ.get("HF_PG_DIR", "")
PG_USER = os.environ.get("HF_PG_USER", "")
PGBIN = os.environ.get("PGBIN", "")


def need_pg():
    if not (URL and PG_DIR and PGBIN):
        raise SystemExit("run under tests/pg/with_pg.sh (HF_TEST_ENGINE_URL, HF_PG_DIR unset)")


def raise_fd_limit(want):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = min(hard, max(soft, want)) if hard != resource.RLIM_INFINITY else max(soft, want)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def _as_pg():
    # PostgreSQL runs as `nobody` when the tests run as root (see with_pg.sh).
    return ["runuser", "-u", "nobody", "--"] if os.getuid() == 0 else []


def psql(sql):
    """Runs SQL as the cluster's superuser (the initdb user); returns stdout rows."""
    out = subprocess.run([os.path.join(PGBIN, "psql"), "-q", "-X", "-A", "-t", "-v",
                          "ON_ERROR_STOP=1", "-h", PG_DIR, "-U", PG_USER, "-d", "postgres",
                          "-c", sql], capture_output=True, text=True, timeout=30)
    if out.returncode != 0:
        raise RuntimeError("psql failed: %s\n%s" % (sql, out.stderr))
    return [l for l in out.stdout.splitlines() if l != ""]


class Psql:
    """A long-lived superuser session (psql reading stdin) for open transactions."""

    def __init__(self):
        self.p = subprocess.Popen([os.path.join(PGBIN, "psql"), "-q", "-X", "-A", "-t", "-h",
                                   PG_DIR, "-U", PG_USER, "-d", "postgres"],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True, bufsize=1)

    def send(self, sql):
        """Runs sql and waits until psql has executed it; returns its output lines."""
        self.p.stdin.write(sql + "\n\\echo hf-mark\n")
        self.p.stdin.flush()
        out = []
        for line in self.p.stdout:
            if line.strip() == "hf-mark":
                return out
            out.append(line.rstrip("\n"))
        raise RuntimeError("psql session ended: %s" % out)

    def close(self):
        try:
            self.p.stdin.close()
            self.p.stdout.read()
        except OSError:
            pass
        try:
            self.p.wait(10)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()


def reset_schema():
    psql("DROP SCHEMA IF EXISTS hf_test CASCADE")


def idle_resources(schema, n):
    """Declares n idle resources idle-1..idle-n in schema (made by a holdfastd already), as n
    resource PUTs would leave them, in one statement; then VACUUM ANALYZE: the table as a
    long-running store has it. For measurements (speed.py, servercost.py --resources)."""
    psql("INSERT INTO %s.resources (name, capacity, version, declared) SELECT 'idle-' || i, 1,"
         " 1, true FROM generate_series(1, %d) i" % (schema, n))
    psql("VACUUM ANALYZE %s.resources" % schema)


def pg_stop(mode="fast"):
    """Stops the cluster: "fast" (clean) or "immediate" (like a crash: recovery at start)."""
    subprocess.run(_as_pg() + [os.path.join(PGBIN, "pg_ctl"), "-D", os.path.join(PG_DIR, "data"),
                               "-m", mode, "-w", "stop"],
                   check=True, stdout=subprocess.DEVNULL, timeout=60)


def pg_start(listen=""):
    # The same options as with_pg.sh: Unix socket in PG_DIR (and TCP on `listen` if given).
    opts = "-c listen_addresses='%s' -k %s -c fsync=%s -c max_connections=200" % (
        listen, PG_DIR, os.environ.get("HF_PG_FSYNC", "off"))
    subprocess.run(_as_pg() + [os.path.join(PGBIN, "pg_ctl"), "-D", os.path.join(PG_DIR, "data"),
                               "-l", os.path.join(PG_DIR, "server.log"), "-w", "-o", opts,
                               "start"], check=True, stdout=subprocess.DEVNULL, timeout=60)


class Holdfastd:
    """One holdfastd over the PostgreSQL engine on a free loopback port."""

    def __init__(self, binary, url=None, args=(), env=None):
        self.dir = tempfile.mkdtemp(prefix="hf-pg-")
        self.log_path = os.path.join(self.dir, "holdfastd.log")
        self.log = open(self.log_path, "wb")
        cmd = [binary, "--listen", "127.0.0.1:0", "--engine", url or URL] + list(args)
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=self.log, cwd=self.dir,
                                     env=dict(os.environ, **env) if env else None)
        deadline = time.time() + 20
        self.port = None
        while time.time() < deadline:
            m = re.search(r"msg=listening addr=\S+ port=(\d+)", self.log_text())
            if m:
                self.port = int(m.group(1))
                break
            if self.proc.poll() is not None:
                raise RuntimeError("holdfastd exited %s:\n%s" % (self.proc.returncode,
                                                                 self.log_text()))
            time.sleep(0.02)
        if self.port is None:
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError("holdfastd did not start:\n" + self.log_text())

    def log_text(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def client(self, timeout=30):
        return Client(self.port, timeout)

    def stop(self, timeout=30):
        """SIGTERM; returns the exit status (the process is killed if it does not exit)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise RuntimeError("holdfastd did not stop in %d s" % timeout)
        self.log.close()
        return self.proc.returncode

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


class Client:
    """A keep-alive JSON client; reconnects after a dropped connection."""

    def __init__(self, port, timeout=30, host="127.0.0.1"):
        self.host, self.port, self.timeout, self.c = host, port, timeout, None

    def request(self, method, path, body=None, headers=None):
        """Returns (status, parsed JSON). Raises OSError/HTTPException when the server is
        unreachable or the connection drops (the outcome is then unknown)."""
        if self.c is None:
            self.c = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            self.c.request(method, path, body=json.dumps(body) if body is not None else None,
                           headers=headers or {})
            r = self.c.getresponse()
            text = r.read().decode()
        except (OSError, http.client.HTTPException):
            self.close()
            raise
        if r.getheader("Connection", "").lower() == "close":
            self.close()
        return r.status, (json.loads(text) if text else None)

    def close(self):
        if self.c is not None:
            self.c.close()
            self.c = None


def all_events(client):
    """Every event from seq 1, paging with limit=1000."""
    out, after = [], 0
    while True:
        st, body = client.request("GET", "/v1/events?after=%d&limit=1000" % after)
        if st != 200:
            raise RuntimeError("events: %s %s" % (st, body))
        out += body["events"]
        if not body["events"]:
            return out, body["last_seq"]
        after = body["next_after"]


# ---- Failures, counted rather than raised: a test goes on and reports them all. ----

failures = []


def check(cond, msg):
    if not cond:
        failures.append(msg)
        print("FAIL:", msg, file=sys.stderr, flush=True)
    return cond


def finish(name, instances):
    """Stops the instances (each must still be alive and exit 0) and reports: the exit
    status of the test."""
    for s in instances:
        alive = s.proc.poll() is None
        check(alive, "instance on port %d died: %s" % (s.port, s.log_text()[-2000:]))
        if alive:
            rc = s.stop()
            check(rc == 0, "instance exited %s" % rc)
    if failures:
        print("%s: %d failure(s)" % (name, len(failures)), file=sys.stderr)
        return 1
    print("%s: ok" % name)
    return 0
