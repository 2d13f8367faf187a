"""test_api.py — black-box tests of holdfastd: every route and every error over HTTP, against
the real binary (argv[1]) with a temporary file: store.

usage: test_api.py PATH/TO/holdfastd [unittest args]
"""
import json
import os
import shutil
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
from hfserver import Server, raw_request


class Api(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.s = Server("--max-body", "65536")

    @classmethod
    def tearDownClass(cls):
        rc = cls.s.stop()
        if rc != 0:
            raise AssertionError("holdfastd exited %s\n%s" % (rc, cls.s.log_text()))

    def err(self, resp, status, code):
        st, body, _ = resp
        self.assertEqual(st, status, body)
        self.assertIsInstance(body, dict, body)
        self.assertEqual(body["error"]["code"], code, body)
        self.assertTrue(body["error"]["message"])
        return body["error"]["message"]

    def acquire(self, owner, names, **kw):
        body = {"owner": owner, "resources": names}
        body.update(kw)
        return self.s.post("/v1/holds", body)

    # ---- probes -------------------------------------------------------------------
    def test_probes(self):
        self.assertEqual(self.s.get("/healthz")[:2], (200, {"status": "ok"}))
        st, body, _ = self.s.get("/readyz")
        self.assertEqual(st, 200)
        self.assertEqual(body["status"], "ready")

    # ---- resources ----------------------------------------------------------------
    def test_resource_lifecycle(self):
        st, r, h = self.s.put("/v1/resources/room-1", {"capacity": 2, "meta": {"floor": 3}})
        self.assertEqual(st, 201, r)
        self.assertEqual(r["version"], 1)
        self.assertEqual(r["meta"], {"floor": 3})
        self.assertTrue(r["declared"])
        self.assertEqual(h.getheader("ETag"), '"1"')
        st, r, _ = self.s.put("/v1/resources/room-1", {"capacity": 3}, headers={"If-Match": '"1"'})
        self.assertEqual((st, r["version"], r["capacity"]), (200, 2, 3))
        self.err(self.s.put("/v1/resources/room-1", {"capacity": 4}, headers={"If-Match": "1"}),
                 409, "version_conflict")
        self.err(self.s.put("/v1/resources/room-1", {"capacity": 4},
                            headers={"If-None-Match": "*"}), 409, "version_conflict")
        self.assertEqual(self.s.get("/v1/resources/room-1")[1]["capacity"], 3)
        # held: delete refused, capacity below held refused
        st, hold, _ = self.acquire("o", [{"name": "room-1", "units": 2}])
        self.assertEqual(st, 201, hold)
        self.err(self.s.delete("/v1/resources/room-1"), 409, "resource_held")
        self.err(self.s.put("/v1/resources/room-1", {"capacity": 1}), 409, "capacity_in_use")
        self.assertEqual(self.s.post("/v1/holds/%s/release" % hold["id"],
                                     {"token": hold["token"]})[0], 200)
        self.err(self.s.delete("/v1/resources/room-1", headers={"If-Match": "1"}), 409,
                 "version_conflict")
        st, r, _ = self.s.delete("/v1/resources/room-1", headers={"If-Match": "2"})
        self.assertEqual((st, r["name"]), (200, "room-1"))
        self.err(self.s.get("/v1/resources/room-1"), 404, "resource_not_found")
        self.err(self.s.delete("/v1/resources/room-1"), 404, "resource_not_found")

    def test_resource_errors(self):
        for body, frag in [({}, "capacity is missing"), ({"capacity": "2"}, "integer"),
                           ({"capacity": 0}, "between"), ({"capacity": 10**12}, "between"),
                           ({"capacity": 1.5}, "integer"), ({"capacity": 1, "meta": [1]}, "meta"),
                           ({"capacity": 1, "extra": 1}, "unknown field")]:
            msg = self.err(self.s.put("/v1/resources/bad", body), 400, "invalid_argument")
            self.assertIn(frag, msg)
        self.err(self.s.put("/v1/resources/bad", raw="[1,2"), 400, "invalid_json")
        self.err(self.s.put("/v1/resources/bad", raw="[1,2]"), 400, "invalid_argument")
        self.err(self.s.put("/v1/resources/bad", {"capacity": 1}, headers={"If-Match": "x"}),
                 400, "invalid_argument")
        self.err(self.s.put("/v1/resources/bad%01x", {"capacity": 1}), 400, "invalid_argument")
        self.err(self.s.put("/v1/resources/bad%00x", {"capacity": 1}), 400, "invalid_argument")
        self.err(self.s.put("/v1/resources/" + "n" * 256, {"capacity": 1}), 400,
                 "invalid_argument")
        self.err(self.s.put("/v1/resources/bad%ff", {"capacity": 1}), 400, "invalid_argument")
        self.err(self.s.get("/v1/resources/nope"), 404, "resource_not_found")
        self.err(self.s.put("/v1/resources/bad", {"capacity": 1, "meta": {"x": "y" * 70000}}),
                 413, "body_too_large")

    def test_resource_names_percent_decoded(self):
        name = "seat 12/A é"
        path = "/v1/resources/" + urllib.parse.quote(name, safe="")
        st, r, _ = self.s.put(path, {"capacity": 1})
        self.assertEqual((st, r["name"]), (201, name))
        self.assertEqual(self.s.get(path)[1]["name"], name)

    def test_list_resources_paging(self):
        for i in range(5):
            self.s.put("/v1/resources/page-%d" % i, {"capacity": 1})
        seen, cursor = [], None
        while True:
            q = "/v1/resources?limit=2" + ("&cursor=" + urllib.parse.quote(cursor) if cursor else "")
            st, body, _ = self.s.get(q)
            self.assertEqual(st, 200)
            seen += [r["name"] for r in body["resources"]]
            if not body["more"]:
                break
            cursor = body["next_cursor"]
        self.assertEqual([n for n in seen if n.startswith("page-")],
                         ["page-%d" % i for i in range(5)])
        self.err(self.s.get("/v1/resources?limit=0"), 400, "invalid_argument")
        self.err(self.s.get("/v1/resources?limit=abc"), 400, "invalid_argument")
        self.err(self.s.get("/v1/resources?limit=1001"), 400, "invalid_argument")
        self.err(self.s.get("/v1/resources?bogus=1"), 400, "invalid_argument")

    # ---- holds --------------------------------------------------------------------
    def test_hold_lifecycle(self):
        self.s.put("/v1/resources/seat-12A", {"capacity": 1})
        st, h, _ = self.acquire("alice", [{"name": "seat-12A", "units": 1}], ttl_ms=900000)
        self.assertEqual(st, 201, h)
        self.assertEqual(len(h["id"]), 32)
        self.assertEqual(len(h["token"]), 32)
        self.assertEqual(h["state"], "tentative")
        self.assertGreater(h["fence"]["seat-12A"], 0)
        self.assertEqual(h["resources"][0]["fence"], h["fence"]["seat-12A"])
        self.assertIsNotNone(h["expires_at_ms"])
        self.err(self.acquire("bob", ["seat-12A"]), 409, "unavailable")
        t = time.time()
        self.err(self.acquire("bob", ["seat-12A"], wait_ms=200), 409, "wait_timeout")
        self.assertGreaterEqual(time.time() - t, 0.15)
        st, g, _ = self.s.get("/v1/holds/" + h["id"])
        self.assertEqual(st, 200)
        self.assertNotIn("token", g)
        self.assertEqual(g["owner"], "alice")
        hid, tok = h["id"], h["token"]
        self.err(self.s.post("/v1/holds/%s/extend" % hid, {"token": "0" * 32, "ttl_ms": 1000}),
                 403, "bad_token")
        st, e, _ = self.s.post("/v1/holds/%s/extend" % hid, {"token": tok, "ttl_ms": 60000})
        self.assertEqual(st, 200, e)
        self.assertNotIn("token", e)
        st, c, _ = self.s.post("/v1/holds/%s/confirm" % hid, {"token": tok})
        self.assertEqual((st, c["state"], c["expires_at_ms"]), (200, "confirmed", None))
        st, body, _ = self.s.get("/v1/holds?owner=alice&state=confirmed")
        self.assertIn(hid, [x["id"] for x in body["holds"]])
        self.assertTrue(all("token" not in x for x in body["holds"]))
        st, body, _ = self.s.get("/v1/holds?resource=seat-12A")
        self.assertIn(hid, [x["id"] for x in body["holds"]])
        st, r, _ = self.s.post("/v1/holds/%s/release" % hid, {"token": tok})
        self.assertEqual((st, r["state"]), (200, "released"))
        self.assertIsNotNone(r["ended_at_ms"])
        self.err(self.s.post("/v1/holds/%s/release" % hid, {"token": tok}), 410, "hold_ended")
        self.err(self.s.post("/v1/holds/%s/extend" % hid, {"token": tok}), 410, "hold_ended")
        st, h2, _ = self.acquire("bob", ["seat-12A"])
        self.assertEqual(st, 201)
        self.assertGreater(h2["fence"]["seat-12A"], h["fence"]["seat-12A"])

    def test_hold_errors(self):
        self.s.put("/v1/resources/small", {"capacity": 2})
        self.err(self.acquire("a", [{"name": "small", "units": 3}]), 422, "exceeds_capacity")
        self.err(self.acquire("a", ["no-such-resource"]), 404, "resource_not_found")
        self.err(self.acquire("a", [{"name": "small", "capacity": 5}]), 409, "capacity_mismatch")
        self.err(self.s.get("/v1/holds/" + "0" * 32), 404, "hold_not_found")
        self.err(self.s.post("/v1/holds/%s/release" % ("0" * 32), {"token": "1" * 32}), 404,
                 "hold_not_found")
        # a malformed id names no hold: the library answers hold_not_found, naming the format
        self.assertIn("32", self.err(self.s.get("/v1/holds/xyz"), 404, "hold_not_found"))
        self.err(self.s.post("/v1/holds/%s/release" % ("0" * 32), {}), 400, "invalid_argument")
        self.err(self.s.get("/v1/holds?state=bogus"), 400, "invalid_argument")
        cases = [
            ({"resources": ["small"]}, "owner"),
            ({"owner": "a"}, "resources"),
            ({"owner": "a", "resources": []}, "resources"),
            ({"owner": "a", "resources": "small"}, "resources"),
            ({"owner": 7, "resources": ["small"]}, "owner"),
            ({"owner": "", "resources": ["small"]}, "owner"),
            ({"owner": "a", "resources": [{"name": "small", "units": -1}]}, "units"),
            ({"owner": "a", "resources": [{"name": "small", "units": "1"}]}, "units"),
            ({"owner": "a", "resources": [{"units": 1}]}, "name"),
            ({"owner": "a", "resources": [7]}, "resources[0]"),
            ({"owner": "a", "resources": ["small", "small"]}, "twice"),
            ({"owner": "a", "resources": ["small"], "ttl_ms": -5}, "ttl_ms"),
            ({"owner": "a", "resources": ["small"], "ttl_ms": 0}, "ttl_ms"),
            ({"owner": "a", "resources": ["small"], "ttl_ms": 10**15}, "ttl_ms"),
            ({"owner": "a", "resources": ["small"], "wait_ms": 3600001}, "wait_ms"),
            ({"owner": "a", "resources": ["small"], "wait_ms": 1.5}, "wait_ms"),
            ({"owner": "a", "resources": ["small"], "mode": "greedy"}, "mode"),
            ({"owner": "a", "resources": ["small"], "any": "yes"}, "any"),
            ({"owner": "a", "resources": ["small"], "wait": 100}, "unknown field"),
            ({"owner": "a", "resources": ["r%d" % i for i in range(65)]}, "64"),
            ({"owner": "a\x01", "resources": ["small"]}, "owner"),
        ]
        for body, frag in cases:
            msg = self.err(self.s.post("/v1/holds", body), 400, "invalid_argument")
            self.assertIn(frag, msg, body)
        self.err(self.s.post("/v1/holds", raw='{"owner":'), 400, "invalid_json")
        self.err(self.s.post("/v1/holds", raw='{"owner":"a","owner":"b"}'), 400, "invalid_json")
        self.err(self.s.post("/v1/holds", raw="x" * 70000), 413, "body_too_large")
        # nothing was taken by any of these
        self.assertEqual(self.s.get("/v1/resources/small")[1]["held"], 0)

    def test_implicit_modes_any(self):
        st, a, _ = self.acquire("r1", [{"name": "doc", "capacity": 3}], mode="shared")
        self.assertEqual((st, a["resources"][0]["units"]), (201, 1))
        st, b, _ = self.acquire("r2", [{"name": "doc", "capacity": 3}], mode="shared")
        self.assertEqual(st, 201)
        self.err(self.acquire("w", [{"name": "doc", "capacity": 3}], mode="exclusive"), 409,
                 "unavailable")
        self.err(self.acquire("w", [{"name": "doc", "capacity": 4}]), 409, "capacity_mismatch")
        r = self.s.get("/v1/resources/doc")[1]
        self.assertEqual((r["declared"], r["held"], r["holds"]), (False, 2, 2))
        for h in (a, b):
            self.s.post("/v1/holds/%s/release" % h["id"], {"token": h["token"]})
        self.err(self.s.get("/v1/resources/doc"), 404, "resource_not_found")  # gone when idle
        # any: the first free of a list
        for n in ("any-1", "any-2", "any-3"):
            self.s.put("/v1/resources/" + n, {"capacity": 1})
        got = []
        for i in range(3):
            st, h, _ = self.acquire("p%d" % i, ["any-1", "any-2", "any-3"], any=True)
            self.assertEqual(st, 201, h)
            self.assertEqual(len(h["resources"]), 1)
            got.append(h["resources"][0]["name"])
        self.assertEqual(got, ["any-1", "any-2", "any-3"])
        self.err(self.acquire("p9", ["any-1", "any-2", "any-3"], any=True), 409, "unavailable")

    def test_multi_resource_all_or_nothing(self):
        self.s.put("/v1/resources/mr-a", {"capacity": 1})
        self.s.put("/v1/resources/mr-b", {"capacity": 1})
        st, h, _ = self.acquire("x", ["mr-b"])
        self.err(self.acquire("y", ["mr-a", "mr-b"]), 409, "unavailable")
        self.assertEqual(self.s.get("/v1/resources/mr-a")[1]["held"], 0)
        self.s.post("/v1/holds/%s/release" % h["id"], {"token": h["token"]})
        st, h, _ = self.acquire("y", ["mr-a", "mr-b"])
        self.assertEqual(st, 201)
        self.assertEqual(set(h["fence"]), {"mr-a", "mr-b"})

    def test_idempotency(self):
        self.s.put("/v1/resources/idem", {"capacity": 5})
        hdr = {"Idempotency-Key": "order-77"}
        body = {"owner": "o", "resources": [{"name": "idem", "units": 2}]}
        st, a, _ = self.s.post("/v1/holds", body, headers=hdr)
        self.assertEqual(st, 201)
        st, b, _ = self.s.post("/v1/holds", body, headers=hdr)
        self.assertEqual(st, 201)
        self.assertEqual((b["id"], b["token"], b.get("replayed")), (a["id"], a["token"], True))
        self.assertEqual(self.s.get("/v1/resources/idem")[1]["held"], 2)
        body["resources"][0]["units"] = 3
        self.err(self.s.post("/v1/holds", body, headers=hdr), 422, "idempotency_mismatch")
        self.err(self.s.post("/v1/holds", body, headers={"Idempotency-Key": "\x7fbad"}), 400,
                 "invalid_argument")

    def test_expiry(self):
        st, h, _ = self.acquire("e", [{"name": "short", "capacity": 1}], ttl_ms=100)
        self.assertEqual(st, 201)
        time.sleep(0.3)
        st, g, _ = self.s.get("/v1/holds/" + h["id"])
        self.assertEqual(g["state"], "expired")
        self.err(self.s.post("/v1/holds/%s/extend" % h["id"], {"token": h["token"]}), 410,
                 "hold_ended")

    # ---- locks and semaphores ------------------------------------------------------
    def test_locks(self):
        st, l1, _ = self.s.post("/v1/locks/job-42", {"owner": "w1", "ttl_ms": 10000})
        self.assertEqual((st, l1["mode"]), (201, "exclusive"), l1)
        self.assertEqual(l1["resources"][0]["name"], "lock:job-42")
        self.err(self.s.post("/v1/locks/job-42", {"owner": "w2"}), 409, "unavailable")
        self.err(self.s.post("/v1/locks/job-42", {"owner": "w2", "mode": "shared"}), 409,
                 "unavailable")
        # a waiter gets it when the holder releases
        res = {}

        def waiter():
            res["r"] = self.s.post("/v1/locks/job-42", {"owner": "w3", "wait_ms": 5000})

        t = threading.Thread(target=waiter)
        t.start()
        time.sleep(0.2)
        self.assertEqual(self.s.post("/v1/holds/%s/release" % l1["id"],
                                     {"token": l1["token"]})[0], 200)
        t.join()
        st, l3, _ = res["r"]
        self.assertEqual(st, 201)
        self.assertGreater(l3["fence"]["lock:job-42"], l1["fence"]["lock:job-42"])
        self.s.post("/v1/holds/%s/release" % l3["id"], {"token": l3["token"]})
        # readers share, a writer excludes them
        r1 = self.s.post("/v1/locks/cfg", {"owner": "r1", "mode": "shared"})
        r2 = self.s.post("/v1/locks/cfg", {"owner": "r2", "mode": "shared"})
        self.assertEqual((r1[0], r2[0]), (201, 201))
        self.err(self.s.post("/v1/locks/cfg", {"owner": "w"}), 409, "unavailable")
        self.err(self.s.post("/v1/locks/cfg", {"owner": "w", "mode": "units"}), 400,
                 "invalid_argument")
        self.err(self.s.post("/v1/locks/cfg", {"ttl_ms": 5}), 400, "invalid_argument")
        self.err(self.s.post("/v1/locks/" + "k" * 252, {"owner": "w"}), 400, "invalid_argument")

    def test_semaphores(self):
        got = []
        for i in range(3):
            st, h, _ = self.s.post("/v1/semaphores/pool", {"permits": 3, "owner": "c%d" % i})
            self.assertEqual(st, 201, h)
            got.append(h)
        self.err(self.s.post("/v1/semaphores/pool", {"permits": 3, "owner": "c9"}), 409,
                 "unavailable")
        self.err(self.s.post("/v1/semaphores/pool", {"permits": 4, "owner": "c9"}), 409,
                 "capacity_mismatch")
        self.err(self.s.post("/v1/semaphores/big", {"permits": 2, "units": 3, "owner": "c"}),
                 422, "exceeds_capacity")
        self.err(self.s.post("/v1/semaphores/pool", {"owner": "c"}), 400, "invalid_argument")
        self.err(self.s.post("/v1/semaphores/pool", {"permits": 0, "owner": "c"}), 400,
                 "invalid_argument")
        self.s.post("/v1/holds/%s/release" % got[0]["id"], {"token": got[0]["token"]})
        st, h, _ = self.s.post("/v1/semaphores/pool", {"permits": 3, "owner": "c9", "units": 1})
        self.assertEqual(st, 201)

    # ---- events -------------------------------------------------------------------
    def test_events_long_poll(self):
        st, body, _ = self.s.get("/v1/events?after=0&limit=1000")
        self.assertEqual(st, 200)
        last = body["last_seq"]
        seqs = [e["seq"] for e in body["events"]]
        self.assertEqual(seqs, sorted(seqs))
        res = {}

        def poll():
            t = time.time()
            res["r"] = self.s.get("/v1/events?after=%d&wait_ms=5000" % last)
            res["t"] = time.time() - t

        t = threading.Thread(target=poll)
        t.start()
        time.sleep(0.3)
        self.s.put("/v1/resources/ev-trigger", {"capacity": 1, "meta": {"k": 1}})
        t.join()
        st, body, _ = res["r"]
        self.assertEqual(st, 200)
        self.assertLess(res["t"], 4)
        ev = body["events"][0]
        self.assertEqual((ev["seq"], ev["type"], ev["resource"]),
                         (last + 1, "resource.created", "ev-trigger"))
        self.assertIsInstance(ev["data"], dict)
        self.assertEqual(body["next_after"], body["events"][-1]["seq"])
        # nothing new: answers empty after the wait
        st, body, _ = self.s.get("/v1/events?after=%d&wait_ms=100" % body["last_seq"])
        self.assertEqual((st, body["events"]), (200, []))
        self.err(self.s.get("/v1/events?after=-1"), 400, "invalid_argument")
        self.err(self.s.get("/v1/events?wait_ms=99999999"), 400, "invalid_argument")

    def test_events_revisions(self):
        """Each event carries its resource's revision; a multi-resource hold's, every part's."""
        self.s.put("/v1/resources/rv-a", {"capacity": 2})
        st, h, _ = self.acquire("r", ["rv-a", {"name": "rv-b", "capacity": 1}])
        self.assertEqual(st, 201, h)
        st, r, _ = self.s.post("/v1/holds/%s/release" % h["id"], {"token": h["token"]})
        self.assertEqual(st, 200, r)
        st, body, _ = self.s.get("/v1/events?after=0&limit=1000")
        evs = [e for e in body["events"] if e["resource"] in ("rv-a", "rv-b")]
        self.assertEqual([(e["type"], e["revision"], e.get("revisions")) for e in evs],
                         [("resource.created", 1, None),
                          ("hold.granted", 2, {"rv-a": 2, "rv-b": 1}),
                          ("hold.released", 3, {"rv-a": 3, "rv-b": 2})])

    def test_events_sse(self):
        st, body, _ = self.s.get("/v1/events?limit=1")
        last = body["last_seq"]
        sock = raw_request(self.s.port, "GET", "/v1/events?after=%d" % last,
                           headers={"Accept": "text/event-stream"})
        sock.settimeout(5)
        self.s.put("/v1/resources/sse-1", {"capacity": 1})
        self.s.put("/v1/resources/sse-2", {"capacity": 1})
        buf = b""
        deadline = time.time() + 5
        while buf.count(b"event: resource.created") < 2 and time.time() < deadline:
            buf += sock.recv(65536)
        text = buf.decode()
        self.assertIn("text/event-stream", text)
        self.assertIn("id: %d\n" % (last + 1), text)
        self.assertIn('"resource":"sse-2","revision":1,', text)
        sock.close()
        # resuming with Last-Event-ID skips what was seen
        sock = raw_request(self.s.port, "GET", "/v1/events",
                           headers={"Accept": "text/event-stream", "Last-Event-ID": str(last + 1)})
        sock.settimeout(5)
        buf = b""
        deadline = time.time() + 5
        while b"sse-2" not in buf and time.time() < deadline:
            buf += sock.recv(65536)
        self.assertNotIn(b"id: %d\n" % (last + 1), buf)
        self.assertIn(b"id: %d\n" % (last + 2), buf)
        sock.close()

    # ---- stats and metrics ----------------------------------------------------------
    def test_stats_and_metrics(self):
        self.s.put("/v1/resources/st-1", {"capacity": 1})
        st, h, _ = self.acquire("s", ["st-1"])
        self.err(self.acquire("s2", ["st-1"]), 409, "unavailable")
        self.err(self.acquire("s3", ["st-1"], wait_ms=50), 409, "wait_timeout")
        st, body, _ = self.s.get("/v1/stats")
        self.assertEqual(st, 200, body)
        o = body["overall"]
        for k in ("acquisitions", "rates", "latency_ms", "holds_ended", "waiters", "holds_live",
                  "units_held", "resources"):
            self.assertIn(k, o)
        r = [x for x in body["resources"] if x["name"] == "st-1"][0]
        self.assertEqual(r["acquisitions"]["attempts"], 3)
        self.assertEqual(r["acquisitions"]["granted"], 1)
        self.assertEqual(r["acquisitions"]["unavailable"], 1)
        self.assertEqual(r["acquisitions"]["timeouts"], 1)
        self.assertAlmostEqual(r["rates"]["success"], 1 / 3, places=3)
        self.assertEqual((r["held"], r["holds"]), (1, 1))
        self.assertGreater(r["latency_ms"]["p99"], 0)
        self.s.post("/v1/holds/%s/release" % h["id"], {"token": h["token"]})
        deadline = time.time() + 3
        while time.time() < deadline:
            body = self.s.get("/v1/stats")[1]
            r = [x for x in body["resources"] if x["name"] == "st-1"][0]
            if r["holds_ended"]["released"] == 1:
                break
            time.sleep(0.05)
        self.assertEqual(r["holds_ended"]["released"], 1)
        st, text, resp = self.s.get("/metrics")
        self.assertEqual(st, 200)
        self.assertTrue(resp.getheader("Content-Type").startswith("text/plain"))
        self.assertIn('holdfast_acquisitions_total{outcome="granted"}', text)
        self.assertIn('holdfast_resource_acquisitions_total{resource="st-1",outcome="unavailable"} 1',
                      text)
        self.assertIn("holdfast_waiters ", text)
        self.assertIn('holdfast_acquire_latency_seconds{quantile="0.99"}', text)

    # ---- HTTP layer ----------------------------------------------------------------
    def test_routes_and_methods(self):
        self.err(self.s.get("/v2/nothing"), 404, "route_not_found")
        self.err(self.s.get("/v1/resources/"), 404, "route_not_found")
        st, body, resp = self.s.request("PATCH", "/v1/resources/x")
        self.assertEqual((st, body["error"]["code"]), (405, "method_not_allowed"))
        self.assertEqual(resp.getheader("Allow"), "PUT, GET, DELETE")
        self.err(self.s.request("DELETE", "/v1/holds"), 405, "method_not_allowed")
        self.err(self.s.request("POST", "/healthz"), 405, "method_not_allowed")

    def test_keep_alive(self):
        c = self.s.conn()
        for i in range(20):
            st, body, _ = self.s.get("/healthz", conn=c)
            self.assertEqual(st, 200)
        c.close()

    def test_client_disconnect_cancels_wait(self):
        self.s.put("/v1/resources/dc", {"capacity": 1})
        st, h, _ = self.acquire("holder", ["dc"])
        socks = [raw_request(self.s.port, "POST", "/v1/holds",
                             {"owner": "gone-%d" % i, "resources": ["dc"], "wait_ms": 30000})
                 for i in range(5)]
        deadline = time.time() + 5
        while self.s.get("/v1/resources/dc")[1]["waiters"] < 5 and time.time() < deadline:
            time.sleep(0.02)
        self.assertEqual(self.s.get("/v1/resources/dc")[1]["waiters"], 5)
        for s in socks:
            s.close()
        deadline = time.time() + 5
        while self.s.get("/v1/resources/dc")[1]["waiters"] > 0 and time.time() < deadline:
            time.sleep(0.02)
        self.assertEqual(self.s.get("/v1/resources/dc")[1]["waiters"], 0)
        self.s.post("/v1/holds/%s/release" % h["id"], {"token": h["token"]})
        time.sleep(0.1)
        r = self.s.get("/v1/resources/dc")[1]
        self.assertEqual((r["held"], r["holds"]), (0, 0))  # nobody who left took it
        st, body, _ = self.s.get("/v1/holds?resource=dc&state=tentative")
        self.assertEqual(body["holds"], [])

    def test_slow_client_times_out(self):
        s2 = Server("--timeout", "1")
        try:
            sock = socket.create_connection(("127.0.0.1", s2.port))
            sock.sendall(b"POST /v1/holds HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n{")
            sock.settimeout(5)
            t = time.time()
            data = sock.recv(4096)
            while data:
                more = sock.recv(4096)
                if not more:
                    break
                data += more
            self.assertLess(time.time() - t, 4)  # closed by the server's timeout
            # a parked wait longer than the timeout is not cut by it
            s2.put("/v1/resources/tw", {"capacity": 1})
            st, h, _ = s2.post("/v1/holds", {"owner": "a", "resources": ["tw"]})
            t = time.time()
            st, body, _ = s2.post("/v1/holds",
                                  {"owner": "b", "resources": ["tw"], "wait_ms": 2500})
            self.assertEqual(body["error"]["code"], "wait_timeout")
            self.assertGreater(time.time() - t, 2.3)
        finally:
            self.assertEqual(s2.stop(), 0)


class Retention(unittest.TestCase):
    def test_events_trimmed_names_the_floor(self):
        """A read below the oldest kept event is 410 events_trimmed with the floor as a
        number (trimmed_upto), and reading after that floor goes on."""
        s = Server("--events-keep-count", "10")
        try:
            for i in range(60):
                self.assertEqual(s.put("/v1/resources/trim-%d" % i, {"capacity": 1})[0], 201)
            deadline = time.time() + 10
            while time.time() < deadline:
                st, body, _ = s.get("/v1/events?after=0")
                if st == 410:
                    break
                time.sleep(0.1)
            self.assertEqual(st, 410, body)
            err = body["error"]
            self.assertEqual(err["code"], "events_trimmed")
            floor = err["trimmed_upto"]
            self.assertIsInstance(floor, int)
            self.assertIn("events up to seq %d were trimmed" % floor, err["message"])
            st, body, _ = s.get("/v1/events?after=%d" % floor)
            self.assertEqual(st, 200, body)
            self.assertEqual(body["events"][0]["seq"], floor + 1)
            # other errors carry no floor
            st, body, _ = s.get("/v1/events?after=-1")
            self.assertEqual(st, 400)
            self.assertNotIn("trimmed_upto", body["error"])
        finally:
            self.assertEqual(s.stop(), 0)


class Options(unittest.TestCase):
    def test_help_documents_every_option(self):
        out = subprocess.run([hfserver.BIN, "--help"], capture_output=True, text=True)
        self.assertEqual(out.returncode, 0)
        for opt in ("--listen", "--engine", "--config", "--api-key", "--api-key-file",
                    "--tls-cert", "--tls-key", "--max-body", "--max-headers", "--timeout",
                    "--max-connections", "--max-waiters", "--drain-timeout", "--log-level",
                    "HOLDFAST_"):
            self.assertIn(opt, out.stdout)

    def test_bad_options(self):
        for args in (["--bogus"], ["--max-body", "abc"], ["--listen"], ["stray"],
                     ["--tls-cert", "x"], ["--log-level", "loud"]):
            out = subprocess.run([hfserver.BIN] + args, capture_output=True, text=True)
            self.assertEqual(out.returncode, 2, args)
            self.assertIn("holdfastd:", out.stderr)

    def test_config_file_and_env(self):
        d = tempfile.mkdtemp(prefix="hf-cfg-")
        cfg = os.path.join(d, "holdfastd.conf")
        with open(cfg, "w") as f:
            f.write("# test config\nmax_body = 2048\nlog-level = debug\n")
        s = Server("--config", cfg, env={"HOLDFAST_API_KEY": "env-key-0123456789abcdef"},
                   store_dir=d)
        try:
            st, body, _ = s.put("/v1/resources/x", {"capacity": 1})
            self.assertEqual(st, 401)
            s.api_key = "env-key-0123456789abcdef"
            st, body, _ = s.put("/v1/resources/x", {"capacity": 1, "meta": {"p": "x" * 3000}})
            self.assertEqual((st, body["error"]["code"]), (413, "body_too_large"))
            self.assertIn("msg=fd_limit", s.log_text())  # log-level debug from the file
        finally:
            self.assertEqual(s.stop(), 0)

    def test_default_engine_creates_var(self):
        d = tempfile.mkdtemp(prefix="hf-default-")
        log = open(os.path.join(d, "log"), "wb")
        p = subprocess.Popen([hfserver.BIN, "--listen", "127.0.0.1:0"], cwd=d, stderr=log)
        try:
            deadline = time.time() + 10
            while not os.path.exists(os.path.join(d, "var", "holdfast.db")):
                self.assertLess(time.time(), deadline)
                time.sleep(0.05)
        finally:
            p.send_signal(signal.SIGTERM)
            self.assertEqual(p.wait(20), 0)
            log.close()


class Auth(unittest.TestCase):
    KEY = "test-key-0123456789abcdef"

    def test_api_key(self):
        d = tempfile.mkdtemp(prefix="hf-auth-")
        kf = os.path.join(d, "keys")
        with open(kf, "w") as f:
            f.write("# keys\nfile-key-0123456789abcdef\n")
        s = Server("--api-key", self.KEY, "--api-key-file", kf, store_dir=d)
        try:
            st, body, resp = s.get("/v1/resources")
            self.assertEqual((st, body["error"]["code"]), (401, "unauthorized"))
            self.assertEqual(resp.getheader("WWW-Authenticate"), "Bearer")
            st, body, _ = s.get("/v1/resources", headers={"Authorization": "Bearer wrong-key"})
            self.assertEqual(st, 401)
            st, body, _ = s.get("/v1/resources", headers={"Authorization": "Basic " + self.KEY})
            self.assertEqual(st, 401)
            self.assertEqual(s.get("/v1/resources",
                                   headers={"Authorization": "Bearer " + self.KEY})[0], 200)
            self.assertEqual(s.get("/v1/resources", headers={
                "Authorization": "Bearer file-key-0123456789abcdef"})[0], 200)
            self.assertEqual(s.get("/healthz")[0], 200)  # probes are public
            self.assertEqual(s.get("/metrics")[0], 401)
        finally:
            self.assertEqual(s.stop(), 0)


@unittest.skipUnless(shutil.which("openssl"), "no openssl command to make a certificate")
class Tls(unittest.TestCase):
    def test_tls(self):
        d = tempfile.mkdtemp(prefix="hf-tls-")
        cert, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                        "-out", cert, "-days", "1", "-subj", "/CN=127.0.0.1"],
                       check=True, capture_output=True)
        s = Server("--tls-cert", cert, "--tls-key", key, store_dir=d, tls=True)
        try:
            self.assertEqual(s.get("/healthz")[:2], (200, {"status": "ok"}))
            st, body, _ = s.put("/v1/resources/tls-seat", {"capacity": 1})
            self.assertEqual(st, 201)
        finally:
            self.assertEqual(s.stop(), 0)


class Shutdown(unittest.TestCase):
    def test_sigterm_drains_and_is_durable(self):
        d = tempfile.mkdtemp(prefix="hf-term-")
        s = Server(store_dir=d)
        s.put("/v1/resources/keep", {"capacity": 1})
        st, h, _ = s.post("/v1/holds", {"owner": "a", "resources": ["keep"], "ttl_ms": 600000})
        self.assertEqual(st, 201)
        res = {}

        def waiter():
            res["w"] = s.post("/v1/holds", {"owner": "b", "resources": ["keep"],
                                            "wait_ms": 60000})

        t = threading.Thread(target=waiter)
        t.start()
        deadline = time.time() + 5
        while s.get("/v1/resources/keep")[1]["waiters"] < 1 and time.time() < deadline:
            time.sleep(0.02)
        idle = s.conn()
        s.get("/healthz", conn=idle)  # an idle keep-alive connection must not hold the drain
        t0 = time.time()
        self.assertEqual(s.stop(), 0)
        self.assertLess(time.time() - t0, 8)
        t.join(10)
        st, body, _ = res["w"]
        self.assertEqual((st, body["error"]["code"]), (503, "shutting_down"))
        self.assertIn("msg=draining", s.log_text())
        with self.assertRaises(OSError):
            s.conn(timeout=2).request("GET", "/healthz") or s.conn().getresponse()
        # everything acknowledged is there after a restart
        s2 = Server(store_dir=d)
        try:
            st, g, _ = s2.get("/v1/holds/" + h["id"])
            self.assertEqual((st, g["state"]), (200, "tentative"))
            self.assertEqual(s2.get("/v1/resources/keep")[1]["held"], 1)
        finally:
            self.assertEqual(s2.stop(signal.SIGINT), 0)


if __name__ == "__main__":
    hfserver.BIN = sys.argv.pop(1)
    unittest.main()
