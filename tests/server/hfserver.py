"""hfserver.py — starts the real holdfastd binary for the black-box tests and talks to it.

A Server runs holdfastd on a free loopback port (--listen 127.0.0.1:0, the port read from the
"listening" log line) with a temporary file: store, and offers small JSON helpers over
http.client; send_raw and read_reply talk HTTP over a raw socket for the tests of framing.
Python 3 standard library only.
"""
import http.client
import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

BIN = os.environ.get("HOLDFASTD", "")


def free_ports(n):
    """n distinct free loopback TCP ports. All n are bound at once, so none repeats; another
    process may still take one before the caller binds it, which the tests accept."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            socks.append(s)
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def free_port():
    return free_ports(1)[0]


def raise_fd_limit(want):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = min(hard, max(soft, want)) if hard != resource.RLIM_INFINITY else max(soft, want)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class Server:
    def __init__(self, *args, env=None, store_dir=None, tls=False, api_key=None):
        self.own_dir = store_dir is None  # removed after a clean stop; kept to debug a failure
        self.dir = store_dir or tempfile.mkdtemp(prefix="hf-server-")
        self.db = os.path.join(self.dir, "holdfast.db")
        self.api_key = api_key
        self.tls = tls
        cmd = [BIN, "--listen", "127.0.0.1:0", "--engine", "file:" + self.db]
        cmd += list(args)
        self.log_path = os.path.join(self.dir, "holdfastd-%d.log" % time.monotonic_ns())
        self.log = open(self.log_path, "wb")
        e = dict(os.environ)
        e.update(env or {})
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=self.log, env=e, cwd=self.dir)
        self.port = self._wait_port()

    def _wait_port(self):
        deadline = time.time() + 15
        while time.time() < deadline:
            with open(self.log_path, "rb") as f:
                text = f.read().decode(errors="replace")
            m = re.search(r"msg=listening addr=\S+ port=(\d+)", text)
            if m:
                return int(m.group(1))
            if self.proc.poll() is not None:
                raise RuntimeError("holdfastd exited %s:\n%s" % (self.proc.returncode, text))
            time.sleep(0.02)
        self.proc.kill()  # never leave a server behind
        self.proc.wait()
        raise RuntimeError("holdfastd did not start:\n" + self.log_text())

    @property
    def url(self):
        return "%s://127.0.0.1:%d" % ("https" if self.tls else "http", self.port)

    def conn(self, timeout=30):
        if self.tls:
            import ssl
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            return http.client.HTTPSConnection("127.0.0.1", self.port, timeout=timeout, context=ctx)
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def request(self, method, path, body=None, headers=None, conn=None, raw=None):
        """Returns (status, parsed JSON or text, response headers)."""
        c = conn or self.conn()
        h = dict(headers or {})
        if self.api_key and "Authorization" not in h:
            h["Authorization"] = "Bearer " + self.api_key
        data = raw if raw is not None else (json.dumps(body) if body is not None else None)
        c.request(method, path, body=data, headers=h)
        r = c.getresponse()
        text = r.read().decode()
        if conn is None:
            c.close()
        ctype = r.getheader("Content-Type", "")
        parsed = json.loads(text) if ctype.startswith("application/json") else text
        return r.status, parsed, r

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, body=None, **kw):
        return self.request("POST", path, body=body, **kw)

    def put(self, path, body=None, **kw):
        return self.request("PUT", path, body=body, **kw)

    def delete(self, path, **kw):
        return self.request("DELETE", path, **kw)

    def wait_state(self, path, states, timeout=60):
        """Polls GET path until its "state" is one of states; returns that body."""
        deadline = time.time() + timeout
        while True:
            st, body, _ = self.get(path)
            assert st == 200, (st, body)
            if body["state"] in states:
                return body
            if time.time() > deadline:
                raise AssertionError("%s stays %s: %s" % (path, body["state"],
                                                         json.dumps(body, indent=1)))
            time.sleep(0.02)

    def live_holds(self, owner):
        """The owner's holds that are tentative or confirmed."""
        st, body, _ = self.get("/v1/holds?owner=" + owner)
        assert st == 200, (st, body)
        return [h for h in body["holds"] if h["state"] in ("tentative", "confirmed")]

    def log_text(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def stop(self, sig=signal.SIGTERM, timeout=30):
        """Signals the server and returns its exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise
        self.log.close()
        if self.own_dir and self.proc.returncode == 0:
            shutil.rmtree(self.dir, ignore_errors=True)
        return self.proc.returncode

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def raw_request(port, method, path, body=None, headers=None):
    """Sends one request on a fresh socket and returns the socket, unread."""
    s = socket.create_connection(("127.0.0.1", port))
    data = json.dumps(body).encode() if body is not None else b""
    head = "%s %s HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n" % (method, path, len(data))
    for k, v in (headers or {}).items():
        head += "%s: %s\r\n" % (k, v)
    s.sendall(head.encode() + b"\r\n" + data)
    return s


class RawConn:
    """A raw socket to the server (the socket's methods pass through) and what was read past
    the last reply, which the next read_reply starts from."""

    def __init__(self, sock):
        self.sock = sock
        self.rest = b""

    def __getattr__(self, name):
        return getattr(self.sock, name)


def send_raw(port, data, timeout=10):
    """Connects to the server on port, sends data as it is, and returns the RawConn."""
    c = RawConn(socket.create_connection(("127.0.0.1", port), timeout=timeout))
    c.sendall(data)
    return c


def read_reply(c, timeout=10, no_body=False):
    """One HTTP reply off a RawConn: (status, headers with lowercase names, body). Status 0:
    the server closed first (body: what came before the close). Reads a Content-Length body, a
    chunked one (decoded), or up to the close; none for a 100 Continue or when no_body (the
    answer to a HEAD). What follows the reply stays in c.rest for the next call."""
    c.settimeout(timeout)
    buf = c.rest

    def more():
        nonlocal buf
        try:
            chunk = c.recv(65536)
        except ConnectionResetError:
            chunk = b""
        buf += chunk
        return bool(chunk)

    while b"\r\n\r\n" not in buf:
        if not more():
            c.rest = b""
            return 0, {}, buf
    head, _, buf = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for ln in lines[1:]:
        k, _, v = ln.partition(":")
        headers[k.strip().lower()] = v.strip()
    body = b""
    if status == 100 or no_body:
        pass
    elif "content-length" in headers:
        n = int(headers["content-length"])
        while len(buf) < n and more():
            pass
        body, buf = buf[:n], buf[n:]
    elif headers.get("transfer-encoding") == "chunked":
        while True:  # a close mid-body ends it: the body is then short
            while b"\r\n" not in buf and more():
                pass
            size_line, crlf, buf = buf.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16) if crlf else 0
            while len(buf) < size + 2 and more():
                pass
            body += buf[:size]
            buf = buf[size + 2:]
            if size == 0:
                break
    else:
        while more():
            pass
        body, buf = buf, b""
    c.rest = buf
    return status, headers, body


def run_tests(tests, fixture, servers):
    """Runs every test_* function of a test module (pass its globals()) on fixture, in order,
    printing each one's time. On success the fixture is closed; on a failure the servers'
    logs are named and the servers killed, so that the logs stay for reading."""
    ok = False
    try:
        for name, fn in list(tests.items()):
            if name.startswith("test_") and callable(fn):
                t0 = time.time()
                fn(fixture)
                print("ok %s (%.1fs)" % (name, time.time() - t0), flush=True)
        ok = True
    finally:
        if ok:
            fixture.close()
        else:
            print("holdfastd log(s): %s" % " ".join(s.log_path for s in servers), file=sys.stderr)
            for s in servers:
                s.kill()
    return 0
