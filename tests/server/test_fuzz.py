"""test_fuzz.py — seeded random and malformed requests against the real holdfastd.

Every route gets bodies, paths, query strings and headers built from valid requests by random
mutation, plus raw garbage on the socket. Every answer must be a JSON object (success) or a
JSON error with a code from the error table; the server must stay up and answer /healthz;
and afterwards the books must balance: each resource's held units equal the sum over its
live holds, never above capacity. HF_TEST_SEED picks the seed (printed on failure).
"""
import json
import os
import random
import re
import socket
import sys
import unittest
import urllib.parse

import hfserver
from hfserver import Server

HEADER = os.path.join(os.path.dirname(__file__), "..", "..", "include", "holdfast.h")
with open(HEADER) as f:
    CODES = set(re.findall(r'X\(E\w+, -\d+, \d+, "(\w+)"', f.read()))

SEED = int(os.environ.get("HF_TEST_SEED", "20261122"))
ROUNDS = int(os.environ.get("HF_TEST_FUZZ_ROUNDS", "1500"))

NAMES = ["seat-1", "seat-2", "stock", "x", "", "a" * 256, "é", "\u0000", "%00", "..", "a/b"]
VALUES = [None, True, False, 0, 1, -1, 2, 3, 2**31, 2**63 - 1, -(2**63), 1e308, 0.5, "",
          "1", "shared", "exclusive", "units", "bogus", [], {}, [1], {"a": 1}, "x" * 70000]


def valid_bodies(rng, hold):
    name = rng.choice(NAMES[:4])
    claim = {"name": name, "units": rng.randint(1, 3)}
    if rng.random() < 0.5:
        claim["capacity"] = rng.randint(1, 5)
    return {
        "resource": {"capacity": rng.randint(1, 5), "meta": {"k": rng.randint(0, 9)}},
        "hold": {"owner": "f%d" % rng.randint(0, 3), "resources": [claim],
                 "ttl_ms": rng.randint(1, 5000), "wait_ms": rng.choice([0, 0, 0, 5]),
                 "mode": rng.choice(["units", "shared", "exclusive"]), "any": rng.random() < 0.2},
        "token": {"token": hold.get("token", "0" * 32), "ttl_ms": rng.randint(1, 5000)},
        "lock": {"owner": "f", "ttl_ms": rng.randint(1, 5000), "mode": "exclusive"},
        "sem": {"owner": "f", "permits": rng.randint(1, 4), "units": rng.randint(1, 2)},
    }


def mutate(rng, value, depth=0):
    """Returns a randomly damaged copy of a JSON value."""
    if isinstance(value, dict) and value and depth < 4:
        v = dict(value)
        k = rng.choice(list(v))
        op = rng.random()
        if op < 0.3:
            del v[k]
        elif op < 0.6:
            v[k] = rng.choice(VALUES)
        elif op < 0.8:
            v[k] = mutate(rng, v[k], depth + 1)
        else:
            v[rng.choice(["extra", "units", "owner", "ttl_ms"])] = rng.choice(VALUES)
        return v
    if isinstance(value, list) and depth < 4:
        v = list(value)
        if v and rng.random() < 0.5:
            i = rng.randrange(len(v))
            v[i] = mutate(rng, v[i], depth + 1)
        else:
            v.append(rng.choice(VALUES))
        return v
    return rng.choice(VALUES)


class Fuzz(unittest.TestCase):
    def setUp(self):
        self.s = Server("--max-body", "65536")
        self.rng = random.Random(SEED)

    def tearDown(self):
        log = self.s.log_text()  # the store dir goes with a clean stop
        self.assertEqual(self.s.stop(), 0, log[-2000:])

    def check_answer(self, what, status, body):
        if status < 400:
            self.assertIsInstance(body, (dict, str), what)
            return
        self.assertIsInstance(body, dict, "%s -> %s %r" % (what, status, body))
        code = body.get("error", {}).get("code")
        self.assertIn(code, CODES, "%s -> %s %r (seed %d)" % (what, status, body, SEED))
        self.assertTrue(body["error"].get("message"), what)

    def request(self, method, path, raw, headers):
        c = self.s.conn(timeout=10)
        try:
            c.request(method, path, body=raw, headers=headers)
            r = c.getresponse()
            text = r.read().decode(errors="replace")
            ctype = r.getheader("Content-Type", "")
            body = json.loads(text) if ctype.startswith("application/json") else text
            return r.status, body
        finally:
            c.close()

    def test_random_requests(self):
        rng = self.rng
        holds = []
        routes = [
            ("PUT", "/v1/resources/{n}", "resource"), ("GET", "/v1/resources/{n}", None),
            ("DELETE", "/v1/resources/{n}", None), ("GET", "/v1/resources?limit={q}", None),
            ("POST", "/v1/holds", "hold"), ("POST", "/v1/holds/{h}/extend", "token"),
            ("POST", "/v1/holds/{h}/confirm", "token"), ("POST", "/v1/holds/{h}/release", "token"),
            ("GET", "/v1/holds/{h}", None), ("GET", "/v1/holds?owner={q}&state={q}", None),
            ("POST", "/v1/locks/{n}", "lock"), ("POST", "/v1/semaphores/{n}", "sem"),
            ("GET", "/v1/events?after={q}&limit={q}", None), ("GET", "/v1/stats", None),
            ("PATCH", "/v1/holds", "hold"), ("GET", "/v2/{n}", None),
        ]
        recent = []
        for i in range(ROUNDS):
            method, path, kind = rng.choice(routes)
            hold = rng.choice(holds) if holds and rng.random() < 0.7 else {}
            name = rng.choice(NAMES[:4]) if rng.random() < 0.8 else rng.choice(NAMES)
            path = path.replace("{n}", urllib.parse.quote(name, safe="-_.")[:300] or "%20")
            path = path.replace("{h}", hold.get("id", "f" * 32) if rng.random() < 0.9
                                else rng.choice(["zz", "0" * 33, "%2e%2e"]))
            path = path.replace("{q}", urllib.parse.quote(str(rng.choice(VALUES))[:50]))
            raw = None
            if kind:
                body = valid_bodies(rng, hold)[kind]
                if rng.random() < 0.6:
                    body = mutate(rng, body)
                raw = json.dumps(body)
                if rng.random() < 0.1:
                    raw = raw[:rng.randrange(len(raw) + 1)] + rng.choice(["", "}", "\x00", "\\"])
            headers = {"Content-Type": "application/json"}
            if rng.random() < 0.1:
                headers["If-Match"] = str(rng.choice(VALUES))
            if rng.random() < 0.05:
                headers["Idempotency-Key"] = rng.choice(["k1", "k2", "bad key", "é"])
            what = "#%d %s %s %r %r" % (i, method, path, raw and raw[:200],
                                        {k: v[:100] for k, v in headers.items()})
            recent = (recent + [what])[-4:]
            # A header block over --max-headers (16 KiB) is refused before any route sees
            # the request: a JSON 400 like every other refusal, and the connection closed.
            huge_headers = sum(len(k) + len(v) + 4 for k, v in headers.items()) > 16384
            try:
                status, body = self.request(method, path, raw, headers)
            except (BrokenPipeError, ConnectionResetError):
                # The server may answer and close before reading an oversized request.
                self.assertTrue(huge_headers or len(raw or "") > 65536,
                                "%s\nserver exit %s, log:\n%s" % (
                                    "\n".join(recent), self.s.proc.poll(),
                                    self.s.log_text()[-3000:]))
                continue
            if huge_headers:
                self.assertEqual(status, 400, what[:300])
                self.check_answer(what[:300], status, body)
                continue
            self.check_answer(what, status, body)
            if len(raw or "") > 65536:  # too large, unless the route or path was refused first
                self.assertIn(status, (400, 404, 405, 413), what[:300])
            if status == 201 and isinstance(body, dict) and "token" in body:
                holds.append(body)
        self.assertEqual(self.s.get("/healthz")[0], 200)
        self.check_books()

    def test_raw_garbage(self):
        rng = self.rng
        for i in range(200):
            data = bytes(rng.randrange(256) for _ in range(rng.randint(1, 400)))
            if rng.random() < 0.5:
                data = b"POST /v1/holds HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % len(data) + data
            s = socket.create_connection(("127.0.0.1", self.s.port), timeout=5)
            try:
                s.sendall(data)
                s.shutdown(socket.SHUT_WR)
                while s.recv(65536):
                    pass
            except OSError:
                pass  # the server may close first: fine, as long as it lives
            finally:
                s.close()
        self.assertEqual(self.s.get("/healthz")[0], 200)

    def check_books(self):
        # The resources and the holds are two reads: a lease that ends between them (the fuzz
        # uses short ones) would make them disagree. So the resources are read before and
        # after the holds, and the books compared only when nothing changed in between (after
        # the fuzz only lease ends change anything, and they only lower counts).
        for _ in range(20):
            before = self.resources()
            held = self.held_by_live_holds()
            resources = self.resources()
            if resources == before:
                break
        self.assertEqual(resources, before, "the books kept changing")
        for r in resources:
            self.assertLessEqual(r["held"], r["capacity"], r)
            self.assertEqual(r["held"], held.get(r["name"], 0), r)

    def resources(self):
        st, body, _ = self.s.get("/v1/resources?limit=1000")
        self.assertEqual(st, 200)
        return body["resources"] if isinstance(body, dict) else body

    def held_by_live_holds(self):
        held = {}
        cursor = None
        while True:
            q = "/v1/holds?limit=1000" + ("&cursor=" + cursor if cursor else "")
            st, page, _ = self.s.get(q)
            self.assertEqual(st, 200, page)
            for h in page["holds"]:
                if h["state"] in ("tentative", "confirmed"):
                    for p in h["resources"]:
                        held[p["name"]] = held.get(p["name"], 0) + p["units"]
            if not page.get("more"):
                break
            cursor = page["holds"][-1]["id"]
        return held


if __name__ == "__main__":
    hfserver.BIN = sys.argv.pop(1)
    unittest.main()
