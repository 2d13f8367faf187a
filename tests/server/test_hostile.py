"""test_hostile.py — holdfastd under hostile or clumsy clients (issue 9): signals during
start-up, bad UTF-8 in messages, request smuggling, odd methods, half-closed waiters, slow
consumers, slow senders, unauthenticated floods, big stores. Each test is short and bounded;
time bounds are one-sided.

usage: test_hostile.py PATH/TO/holdfastd [unittest args]
"""
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.parse

import hfserver
from hfserver import RawConn, Server, read_reply, send_raw

KEY = "hostile-key-0123456789abcdef"


def cpu_s(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def metric(s, name):
    st, text, _ = s.get("/metrics")
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError("no metric " + name)


class Startup(unittest.TestCase):
    def test_sigterm_during_startup_exits_0(self):
        """SIGTERM while holdfastd is still reading its config and opening the store: exit 0.

        The config file is a FIFO, so the signal provably lands before the store is opened:
        the test sends it as soon as holdfastd has opened the FIFO, then lets it go on."""
        d = tempfile.mkdtemp(prefix="hf-startterm-")
        for i in range(20):
            fifo = os.path.join(d, "conf-%d" % i)
            os.mkfifo(fifo)
            log = open(os.path.join(d, "log-%d" % i), "wb")
            p = subprocess.Popen([hfserver.BIN, "--listen", "127.0.0.1:0", "--config", fifo,
                                  "--engine", "file:" + os.path.join(d, "s%d.db" % i)],
                                 stderr=log, cwd=d)
            try:
                with open(fifo, "w") as f:  # returns once holdfastd opened it for reading
                    p.send_signal(signal.SIGTERM if i % 2 == 0 else signal.SIGINT)
                    f.write("log-level = info\n")
                self.assertEqual(p.wait(20), 0, "run %d" % i)
            finally:
                if p.poll() is None:
                    p.kill()
                    p.wait()
                log.close()


class Messages(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.s = Server()

    @classmethod
    def tearDownClass(cls):
        assert cls.s.stop() == 0, cls.s.log_text()

    def test_long_utf8_names_give_their_real_error(self):
        """Messages quoting long multi-byte names are clipped on a character boundary and the
        JSON error is the real one (404/409/422), never 503 out_of_memory."""
        for ch in ("\u00e9", "\u20ac", "\U0001d11e"):
            for nbytes in range(240, 256):
                n = nbytes // len(ch.encode())
                name = ch * n
                q = urllib.parse.quote(name, safe="")
                st, body, _ = self.s.get("/v1/resources/" + q)
                self.assertEqual((st, body["error"]["code"]), (404, "resource_not_found"), name)
                st, body, _ = self.s.post("/v1/holds", {"owner": "o", "resources": [
                    {"name": name, "units": 5, "capacity": 2}]})
                self.assertEqual((st, body["error"]["code"]), (422, "exceeds_capacity"), name)
                self.assertTrue(body["error"]["message"])
                st, body, _ = self.s.delete("/v1/resources/" + q)
                self.assertEqual(st, 404, body)


class Framing(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.s = Server("--max-waiters", "2")

    @classmethod
    def tearDownClass(cls):
        assert cls.s.stop() == 0, cls.s.log_text()

    def assert_refused(self, data, status=400, code="invalid_argument", libevent_ok=False):
        s = send_raw(self.s.port, data)
        try:
            st, h, body = read_reply(s)
            self.assertEqual(st, status, body)
            # libevent itself refuses some (a negative or non-decimal length) before we see
            # them, with its own HTML page; whatever reaches us gets the JSON error
            if h.get("content-type", "").startswith("application/json"):
                self.assertEqual(json.loads(body)["error"]["code"], code)
            else:
                self.assertTrue(libevent_ok, (data, body))
            # the connection is closed: nothing after the body is taken for a request
            st2, _, rest = read_reply(s, timeout=5)
            self.assertEqual((st2, rest), (0, b""))
        finally:
            s.close()

    def test_smuggling_is_refused(self):
        smuggled = b"PUT /v1/resources/smuggled HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"
        self.assert_refused(b"POST /v1/holds HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
                            b"Content-Length: %d\r\n\r\n{}" % (2 + len(smuggled)) + smuggled)
        for v in (b"+2", b"2,2", b"2 2", b"0x2", b"-2"):
            self.assert_refused(b"POST /v1/holds HTTP/1.1\r\nHost: x\r\nContent-Length: " + v +
                                b"\r\n\r\n{}", libevent_ok=v != b"+2")
        self.assertEqual(self.s.get("/v1/resources/smuggled")[0], 404)

    def test_connect_is_answered_and_closed(self):
        for target in (b"example.com:443", b"/healthz"):
            self.assert_refused(b"CONNECT " + target + b" HTTP/1.1\r\nHost: x\r\n\r\n", 405,
                                "method_not_allowed")

    def test_head_has_no_body(self):
        s = send_raw(self.s.port, b"HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
                     b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            s.settimeout(5)
            data = b""
            while data.count(b"HTTP/1.1 200") < 2 or not data.endswith(b"}\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
            head1, _, rest = data.partition(b"\r\n\r\n")
            self.assertIn(b"Content-Length: 16", head1)  # what GET would send
            self.assertTrue(rest.startswith(b"HTTP/1.1 200"), rest)  # no body in between
            self.assertTrue(rest.endswith(b'{"status":"ok"}\n'), rest)
        finally:
            s.close()

    def test_head_of_an_event_stream_ends(self):
        s = send_raw(self.s.port, b"HEAD /v1/events HTTP/1.1\r\nHost: x\r\n"
                     b"Accept: text/event-stream\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            s.settimeout(5)
            data = b""
            while not data.endswith(b'{"status":"ok"}\n'):
                chunk = s.recv(65536)
                self.assertTrue(chunk, data)
                data += chunk
            self.assertTrue(data.startswith(b"HTTP/1.1 200"), data)
            self.assertIn(b"text/event-stream", data)
        finally:
            s.close()

    def test_nul_in_query_is_refused(self):
        for q in ("after=0%00x", "limit=1%00", "%00=1"):
            st, body, _ = self.s.get("/v1/events?" + q)
            self.assertEqual((st, body["error"]["code"]), (400, "invalid_argument"), q)
        st, body, _ = self.s.get("/v1/holds?resource=a%00b")
        self.assertEqual(st, 400, body)

    def test_event_long_polls_count_as_waiters(self):
        socks = [send_raw(self.s.port, b"GET /v1/events?wait_ms=20000 HTTP/1.1\r\nHost: x\r\n\r\n")
                 for _ in range(2)]
        try:
            deadline = time.time() + 10
            while True:  # both parked: the third waiter is refused
                st, body, _ = self.s.get("/v1/events?wait_ms=20000")
                if st == 429 or time.time() > deadline:
                    break
            self.assertEqual((st, body["error"]["code"]), (429, "limit_exceeded"))
            self.assertEqual(self.s.get("/v1/events?wait_ms=0")[0], 200)  # no wait: served
        finally:
            for so in socks:
                so.close()
        deadline = time.time() + 10
        while self.s.get("/v1/events?wait_ms=1")[0] != 200:  # the slots come back
            self.assertLess(time.time(), deadline)
            time.sleep(0.05)


class HalfClose(unittest.TestCase):
    def test_half_closed_waiter_leaks_nothing(self):
        """A waiting acquire whose client shuts its write side: afterwards either the client
        got the token, or the resource is free. Never a hold nobody knows the token of."""
        s = Server()
        try:
            for i in range(40):
                name = "hc-%d" % i
                self.assertEqual(s.put("/v1/resources/" + name, {"capacity": 1})[0], 201)
                st, a, _ = s.post("/v1/holds", {"owner": "a", "resources": [name],
                                                "ttl_ms": 60000})
                self.assertEqual(st, 201, a)
                w = RawConn(hfserver.raw_request(s.port, "POST", "/v1/holds",
                                                 {"owner": "b", "resources": [name],
                                                  "wait_ms": 20000, "ttl_ms": 60000}))
                deadline = time.time() + 10
                while s.get("/v1/resources/" + name)[1]["waiters"] < 1:
                    self.assertLess(time.time(), deadline)
                    time.sleep(0.01)
                # the grant races the half-close: released just before or just after it
                rel = s.conn()
                body = json.dumps({"token": a["token"]})
                if i % 2:
                    rel.request("POST", "/v1/holds/%s/release" % a["id"], body=body)
                    time.sleep(0.0005 * (i % 7))
                    w.shutdown(socket.SHUT_WR)
                else:
                    w.shutdown(socket.SHUT_WR)
                    time.sleep(0.0005 * (i % 7))
                    rel.request("POST", "/v1/holds/%s/release" % a["id"], body=body)
                self.assertEqual(rel.getresponse().status, 200)
                rel.close()
                st, h, body = read_reply(w, timeout=10)
                w.close()
                got = json.loads(body) if st == 201 else None
                deadline = time.time() + 10
                while True:
                    r = s.get("/v1/resources/" + name)[1]
                    if r["held"] == 0 or got or time.time() > deadline:
                        break
                    time.sleep(0.02)
                if got:  # the client has its token: it can release
                    self.assertEqual(s.post("/v1/holds/%s/release" % got["id"],
                                            {"token": got["token"]})[0], 200)
                else:
                    self.assertEqual((r["held"], r["holds"]), (0, 0), (i, st, body))
        finally:
            self.assertEqual(s.stop(), 0)


def stats_bucket(name):
    """The hash bucket of holdfastd's per-resource counters (src/server/stats.c name_hash:
    FNV-1a, 1024 buckets), which /metrics writes in bucket order, a slice per loop turn."""
    h = 1469598103934665603
    for c in name.encode():
        h = ((h ^ c) * 1099511628211) % (1 << 64)
    return h % 1024


# A probe's answer that was ready when a phase began can come in the phase's first turn (the
# engine's completions of one turn are delivered together); the next one needs the loop to
# poll again. Two in a phase: the loop polled between its slices.
PROBES_PER_PHASE = 2


class BigStore(unittest.TestCase):
    """20,000 resources, 10,000 of them measured and none of those among the 10,000 listed:
    /v1/stats and /metrics are built a slice per turn of the loop, and other connections are
    served between the slices (before: the join held the loop for seconds; then the slices
    ran back to back, libevent running the zero-timeout "yield" before polling again).
    Shown without a clock, by the server's own counters: a probe connection pipelines refused
    acquires (409), which the server reads one at a time, each after the last one's answer,
    so one is in flight at every turn; the answers read counters at known points of their
    build, and the probes answered between two such points are the turns that phase gave."""

    N = 20000
    # in /v1/stats' last page (after r009500 by name), measured (acquired first), and in one
    # of the last hash buckets, whose /metrics lines come in the build's last slices
    PROBE = max(("r009500" + c for c in "abcdefghijklmnopqrstuvwxyz"), key=stats_bucket)

    @classmethod
    def setUpClass(cls):
        cls.s = Server("--log-level", "warn")
        st, body, _ = cls.s.post("/v1/holds", {"owner": "x", "ttl_ms": 600000,
                                               "resources": [{"name": cls.PROBE, "units": 1,
                                                              "capacity": 1}]})
        assert st == 201, body
        # highest names first: the first 9,999 measured are r010001..r019999, never listed
        reqs = []
        for k in reversed(range(0, cls.N, 64)):  # 64 claims an acquire: 313, pipelined
            body = json.dumps({"owner": "o", "ttl_ms": 600000, "resources": [
                {"name": "r%06d" % i, "units": 1, "capacity": 1}
                for i in range(k, min(cls.N, k + 64))]}).encode()
            reqs.append(b"POST /v1/holds HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
                        % len(body) + body)
        cls.granted = len(reqs) + 1
        so = socket.create_connection(("127.0.0.1", cls.s.port), timeout=120)
        sender = threading.Thread(target=lambda: so.sendall(b"".join(reqs)))
        sender.start()
        data = b""
        while data.count(b"HTTP/1.1 201") < len(reqs):
            chunk = so.recv(1 << 20)
            assert chunk, data[-300:]
            data += chunk
        sender.join()
        so.close()

    @classmethod
    def tearDownClass(cls):
        assert cls.s.stop() == 0, cls.s.log_text()

    def built_beside_probes(self, path):
        """GET path on one connection while another pipelines refused acquires of PROBE (the
        server reads the next only once it has answered the last: one in flight, always);
        returns (status, body) of path's answer."""
        probe = json.dumps({"owner": "p", "resources": [{"name": self.PROBE, "units": 1,
                                                          "capacity": 1}],
                            "wait_ms": 0}).encode()
        probes = (b"POST /v1/holds HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
                  % len(probe) + probe) * 20000
        big = send_raw(self.s.port, b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path.encode(),
                       timeout=120)
        p = socket.create_connection(("127.0.0.1", self.s.port), timeout=120)
        answered = []

        def send():
            try:
                p.sendall(probes)
            except OSError:
                pass  # closed below, once the answer is in

        def drain():  # read the probes' answers, so that they never wait on a full buffer
            n = 0
            try:
                while True:
                    chunk = p.recv(1 << 16)
                    if not chunk:
                        break
                    n += chunk.count(b"HTTP/1.1 409")
            except OSError:
                pass
            answered.append(n)

        threads = [threading.Thread(target=send), threading.Thread(target=drain)]
        for t in threads:
            t.start()
        try:
            st, _, body = read_reply(big, timeout=120)
        finally:
            big.close()
            p.shutdown(socket.SHUT_RDWR)
            for t in threads:
                t.join()
            p.close()
        self.assertGreater(answered[0], 0)
        return st, body

    def test_stats_do_not_block_the_loop(self):
        st, body = self.built_beside_probes("/v1/stats")
        self.assertEqual(st, 200, body[:300])
        st = json.loads(body)
        self.assertEqual(st["overall"]["resources"], 10000)
        self.assertTrue(st["truncated"])
        self.assertEqual(st["overall"]["acquisitions"]["granted"], self.granted)
        probe = [r for r in st["resources"] if r["name"] == self.PROBE]
        self.assertEqual(len(probe), 1)  # listed, with its counters
        # Each refusal counts as unavailable (the probe's and the overall counter) and as a
        # 4xx answer, in one step. Read: the probe's when its page came (then the measured,
        # unlisted 9,999 are joined), the overall one when the join ended (then 20,000 entries
        # are written out), the 4xx when the last was written.
        at_last_page = probe[0]["acquisitions"]["unavailable"]
        after_join = st["overall"]["acquisitions"]["unavailable"]
        after_write = st["http"]["4xx"]
        self.assertGreaterEqual(after_join - at_last_page, PROBES_PER_PHASE,
                                "probes answered while the join ran")
        self.assertGreaterEqual(after_write - after_join, PROBES_PER_PHASE,
                                "probes answered while the answer was written")

    def test_metrics_do_not_block_the_loop(self):
        st, body = self.built_beside_probes("/metrics")
        self.assertEqual(st, 200, body[:300])
        lines = body.decode().splitlines()

        def value(prefix):
            found = [ln for ln in lines if ln.startswith(prefix + " ")]
            self.assertEqual(len(found), 1, prefix)
            return int(found[0].rsplit(" ", 1)[1])

        self.assertEqual(value("holdfast_resources"), 10000)
        # Read: the overall counter before the per-resource lines, the probe's in its bucket's
        # slice, one of the last.
        before = value('holdfast_acquisitions_total{outcome="unavailable"}')
        at_probe = value('holdfast_resource_acquisitions_total{resource="%s",'
                         'outcome="unavailable"}' % self.PROBE)
        self.assertGreaterEqual(at_probe - before, PROBES_PER_PHASE,
                                "probes answered while the lines were written")


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class SlowConsumer(unittest.TestCase):
    def test_sse_streams_that_never_read_are_bounded(self):
        # under ASan, freed memory sits in a quarantine and counts in RSS: turn it off here
        asan = os.environ.get("ASAN_OPTIONS", "")
        s = Server("--timeout", "3", env={"ASAN_OPTIONS": asan + (":" if asan else "") +
                                          "quarantine_size_mb=0"})
        try:
            meta = {"pad": "x" * 60000}
            c = s.conn()
            for i in range(80):  # ~5 MB of events
                st, _, _ = s.put("/v1/resources/big-%d" % (i % 5), {"capacity": 1, "meta": meta},
                                 conn=c)
                self.assertIn(st, (200, 201))
            c.close()
            last = s.get("/v1/events?limit=1&after=0")[1]["last_seq"]
            before = rss_kb(s.proc.pid)
            socks = []
            for _ in range(8):
                so = socket.socket()
                so.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                so.connect(("127.0.0.1", s.port))
                so.sendall(b"GET /v1/events?after=0&limit=1000 HTTP/1.1\r\nHost: x\r\n"
                           b"Accept: text/event-stream\r\n\r\n")
                socks.append(so)
            t_open = time.time()
            time.sleep(1.5)
            grown = rss_kb(s.proc.pid) - before
            # unbounded, each stream would queue the whole log: 8 x 5 MB
            self.assertLess(grown, 20 * 1024, "RSS grew %d kB" % grown)
            # a stream that reads gets every event, in order, across its pauses
            r = socket.create_connection(("127.0.0.1", s.port), timeout=30)
            r.sendall(b"GET /v1/events?after=0&limit=1000 HTTP/1.1\r\nHost: x\r\n"
                      b"Accept: text/event-stream\r\n\r\n")
            data, want = b"", ("id: %d\n" % last).encode()
            while want not in data:
                chunk = r.recv(1 << 20)
                self.assertTrue(chunk)
                data += chunk
            r.close()
            ids = [int(x) for x in
                   __import__("re").findall(rb"^id: (\d+)$", data, __import__("re").M)]
            self.assertEqual(ids, list(range(1, last + 1)))
            # stalled longer than --timeout (3 s): the non-readers were dropped, so reading
            # them now ends in EOF (what the kernel buffered, then the close)
            time.sleep(max(0, t_open + 5 - time.time()))
            for so in socks:
                so.settimeout(10)
                got = 0
                while True:
                    chunk = so.recv(1 << 20)
                    if not chunk:
                        break
                    got += len(chunk)
                so.close()
            self.assertEqual(s.get("/healthz")[0], 200)
        finally:
            self.assertEqual(s.stop(), 0)


class Connections(unittest.TestCase):
    def test_slowloris_is_cut_at_the_timeout(self):
        """One header byte a second, forever: the timeout bounds the whole request."""
        s = Server("--timeout", "2")
        try:
            so = socket.create_connection(("127.0.0.1", s.port))
            so.settimeout(0.3)
            t0, closed = time.monotonic(), False
            msg = b"GET /healthz HTTP/1.1\r\nX-Slow: " + b"a" * 1000
            for i in range(len(msg)):
                try:
                    so.send(msg[i:i + 1])
                    if so.recv(1) == b"":
                        closed = True
                        break
                except socket.timeout:
                    pass
                except OSError:
                    closed = True
                    break
                if time.monotonic() - t0 > 8:
                    break
            so.close()
            self.assertTrue(closed)
            self.assertLess(time.monotonic() - t0, 6)
            self.assertGreaterEqual(metric(s, "holdfast_connections_unserved_total"
                                              '{reason="request_timeout"}'), 1)
        finally:
            self.assertEqual(s.stop(), 0)

    def test_out_of_descriptors_backs_off(self):
        """accept() failing with EMFILE: the listener pauses (no busy loop, one log line per
        episode), failures are counted, and service resumes when descriptors free up."""
        import resource
        d = tempfile.mkdtemp(prefix="hf-emfile-")

        def low_fds():
            resource.setrlimit(resource.RLIMIT_NOFILE, (40, 40))

        log = open(os.path.join(d, "log"), "wb")
        p = subprocess.Popen([hfserver.BIN, "--listen", "127.0.0.1:0", "--engine",
                              "file:" + os.path.join(d, "s.db")], stderr=log,
                             preexec_fn=low_fds, cwd=d)
        socks = []
        try:
            port = None
            deadline = time.time() + 10
            while port is None:
                self.assertLess(time.time(), deadline)
                text = open(os.path.join(d, "log")).read()
                m = __import__("re").search(r"msg=listening addr=\S+ port=(\d+)", text)
                port = int(m.group(1)) if m else None
                time.sleep(0.02)
            for _ in range(60):
                socks.append(socket.create_connection(("127.0.0.1", port)))
            time.sleep(0.5)
            c0, t0 = cpu_s(p.pid), time.monotonic()
            time.sleep(2)
            used = cpu_s(p.pid) - c0
            self.assertLess(used, 0.5 * (time.monotonic() - t0), "busy accept loop")
            text = open(os.path.join(d, "log")).read()
            self.assertLess(text.count("accept"), 10, text[-2000:])
            for so in socks:
                so.close()
            socks = []
            deadline = time.time() + 10
            while True:
                try:
                    c = send_raw(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n"
                                 b"Connection: close\r\n\r\n", timeout=2)
                    st, _, body = read_reply(c, timeout=3)
                    c.close()
                    if st == 200:
                        break
                except OSError:
                    pass
                self.assertLess(time.time(), deadline)
                time.sleep(0.1)
            m = __import__("re").search(rb"^holdfast_accept_errors_total (\d+)", body,
                                        __import__("re").M)
            self.assertGreater(int(m.group(1)), 0)
        finally:
            for so in socks:
                so.close()
            p.send_signal(signal.SIGTERM)
            self.assertEqual(p.wait(20), 0)
            log.close()

    def test_unauthenticated_clients_do_not_starve_keyed_ones(self):
        s = Server("--max-connections", "8", "--api-key", KEY, "--timeout", "20")
        idle, noisy = [], []
        try:
            for _ in range(8):  # asked without a key, keep the connection
                so = send_raw(s.port, b"GET /v1/resources HTTP/1.1\r\nHost: x\r\n\r\n")
                st, h, _ = read_reply(so)
                self.assertEqual(st, 401)
                noisy.append(so)
            for _ in range(8):  # connected, silent
                idle.append(socket.create_connection(("127.0.0.1", s.port)))
            for i in range(5):  # right away: a keyed request takes a pending one's place
                st, body, _ = s.get("/v1/resources", headers={"Authorization": "Bearer " + KEY})
                self.assertEqual(st, 200, body)
            # keyed connections hold their slots: a 9th, unauthenticated, is the one refused
            keyed = [s.conn() for _ in range(8)]
            for c in keyed:
                st, _, _ = s.request("GET", "/v1/resources", conn=c,
                                     headers={"Authorization": "Bearer " + KEY})
                self.assertEqual(st, 200)
            st, body, _ = s.get("/healthz")
            self.assertEqual((st, body["error"]["code"]), (429, "limit_exceeded"))
            for c in keyed:
                c.close()
        finally:
            for so in idle + noisy:
                so.close()
            self.assertEqual(s.stop(), 0)

    def test_bodies_before_authentication_are_bounded(self):
        s = Server("--api-key", KEY, "--max-body", "1048576")
        socks = []
        try:
            before = rss_kb(s.proc.pid)
            results = []

            def flood():
                so = RawConn(socket.create_connection(("127.0.0.1", s.port)))
                socks.append(so)
                try:
                    so.sendall(b"POST /v1/holds HTTP/1.1\r\nHost: x\r\nContent-Length: 4000000"
                               b"\r\n\r\n" + b"{" * (2 << 20))
                    results.append("sent all")
                except OSError:
                    results.append("closed")

            threads = [threading.Thread(target=flood) for _ in range(20)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(30)
            grown = rss_kb(s.proc.pid) - before
            self.assertLess(grown, 20 * 1024, "RSS grew %d kB (%s)" % (grown, results))
            for so in socks:
                st, _, body = read_reply(so, timeout=10)  # 401 or closed, never a wait
                self.assertIn(st, (0, 401), body)
            # a keyed client's body is read as usual
            st, body, _ = s.put("/v1/resources/big", {"capacity": 1, "meta": {"p": "x" * 200000}},
                                headers={"Authorization": "Bearer " + KEY})
            self.assertEqual(st, 400, body)
            self.assertEqual(body["error"]["code"], "invalid_argument")
        finally:
            for so in socks:
                so.close()
            self.assertEqual(s.stop(), 0)


if __name__ == "__main__":
    hfserver.BIN = sys.argv.pop(1)
    unittest.main()
