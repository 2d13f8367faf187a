"""test_waiters.py — 10,000 parked waiters on one holdfastd: the server keeps answering
while they wait, a release wakes exactly one (FIFO), clients that leave stop waiting, and
SIGTERM answers the rest with shutting_down and exits 0. Bounded well under 60 s.

usage: test_waiters.py PATH/TO/holdfastd
"""
import selectors
import sys
import time
import unittest

import hfserver
from hfserver import Server, raw_request

WAITERS = 10000


class Waiters(unittest.TestCase):
    def test_ten_thousand_parked(self):
        limit = hfserver.raise_fd_limit(WAITERS + 500)
        if limit < WAITERS + 200:
            self.skipTest("fd limit %d is too low for %d waiters" % (limit, WAITERS))
        t_start = time.time()
        s = Server("--log-level", "warn", "--drain-timeout", "20")
        socks = []
        try:
            s.put("/v1/resources/crowd", {"capacity": 1})
            st, h, _ = s.post("/v1/holds", {"owner": "holder", "resources": ["crowd"],
                                            "ttl_ms": 600000})
            self.assertEqual(st, 201)
            for i in range(WAITERS):
                socks.append(raw_request(s.port, "POST", "/v1/holds", {
                    "owner": "w%d" % i, "resources": ["crowd"], "wait_ms": 120000}))
            deadline = time.time() + 30
            while time.time() < deadline:
                w = s.get("/v1/resources/crowd")[1]["waiters"]
                if w == WAITERS:
                    break
                time.sleep(0.1)
            self.assertEqual(w, WAITERS)
            print("parked %d waiters in %.1fs" % (WAITERS, time.time() - t_start),
                  file=sys.stderr)
            # the server stays responsive while they wait
            for _ in range(20):
                t = time.time()
                self.assertEqual(s.get("/healthz")[0], 200)
                self.assertLess(time.time() - t, 0.5)
            st, other, _ = s.post("/v1/holds", {"owner": "x", "resources": [
                {"name": "elsewhere", "capacity": 1}]})
            self.assertEqual(st, 201)
            # a release wakes exactly one waiter: the first in line
            sel = selectors.DefaultSelector()
            for i, sk in enumerate(socks):
                sel.register(sk, selectors.EVENT_READ, i)
            s.post("/v1/holds/%s/release" % h["id"], {"token": h["token"]})
            ready = sel.select(timeout=5)
            time.sleep(0.3)
            ready += [r for r in sel.select(timeout=0) if r not in ready]
            self.assertEqual(len(ready), 1)
            key, _ = ready[0]
            self.assertEqual(key.data, 0)  # FIFO: w0 came first
            reply = key.fileobj.recv(65536)
            self.assertIn(b" 201 ", reply.split(b"\r\n")[0])
            self.assertIn(b'"owner":"w0"', reply)
            self.assertEqual(s.get("/v1/resources/crowd")[1]["waiters"], WAITERS - 1)
            # half of them leave: their waits end and they take nothing
            for sk in socks[1:WAITERS // 2 + 1]:
                sel.unregister(sk)
                sk.close()
            deadline = time.time() + 20
            while time.time() < deadline:
                w = s.get("/v1/resources/crowd")[1]["waiters"]
                if w == WAITERS // 2 - 1:
                    break
                time.sleep(0.1)
            self.assertEqual(w, WAITERS // 2 - 1)
            r = s.get("/v1/resources/crowd")[1]
            self.assertEqual(r["holds"], 1)
            # SIGTERM: every remaining waiter is answered shutting_down, exit 0
            t = time.time()
            self.assertEqual(s.stop(), 0)
            self.assertLess(time.time() - t, 20)
            answered = 0
            for sk in socks[WAITERS // 2 + 1:]:
                sk.settimeout(5)
                data = sk.recv(65536)
                if b"shutting_down" in data and b" 503 " in data.split(b"\r\n")[0]:
                    answered += 1
            self.assertEqual(answered, WAITERS - WAITERS // 2 - 1)
        finally:
            for sk in socks:
                sk.close()
            s.kill()
        self.assertLess(time.time() - t_start, 60)


if __name__ == "__main__":
    hfserver.BIN = sys.argv.pop(1)
    unittest.main()
