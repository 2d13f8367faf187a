"""test_concurrency.py — hundreds of concurrent clients race holdfastd for fewer seats than
clients: exactly as many grants as seats, no seat twice, fences strictly increasing, and a
capacity never exceeded (checked against the event log).

usage: test_concurrency.py PATH/TO/holdfastd
"""
import sys
import threading
import unittest

import hfserver
from hfserver import Server

CLIENTS = 300
SEATS = 40


class Race(unittest.TestCase):
    def setUp(self):
        hfserver.raise_fd_limit(4096)
        self.s = Server("--log-level", "warn")

    def tearDown(self):
        self.assertEqual(self.s.stop(), 0)

    def run_clients(self, n, fn):
        barrier = threading.Barrier(n)
        out = [None] * n

        def one(i):
            c = self.s.conn(timeout=60)
            barrier.wait()
            out[i] = fn(i, c)
            c.close()

        ts = [threading.Thread(target=one, args=(i,)) for i in range(n)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        return out

    def test_seats(self):
        seats = ["flight-7/seat-%02d" % i for i in range(SEATS)]
        for name in seats:
            self.assertEqual(self.s.put("/v1/resources/" + name.replace("/", "%2F"),
                                        {"capacity": 1})[0], 201)

        def grab(i, c):
            # each client wants any free seat, starting from a different one
            order = seats[i % SEATS:] + seats[:i % SEATS]
            return self.s.post("/v1/holds", {"owner": "client-%d" % i, "resources": order,
                                             "any": True, "ttl_ms": 600000}, conn=c)

        out = self.run_clients(CLIENTS, grab)
        granted = [b for st, b, _ in out if st == 201]
        refused = [b["error"]["code"] for st, b, _ in out if st != 201]
        self.assertEqual(len(granted), SEATS)
        self.assertEqual(set(refused), {"unavailable"})
        taken = [h["resources"][0]["name"] for h in granted]
        self.assertEqual(sorted(taken), sorted(seats))  # every seat once, none twice
        for name in seats:
            r = self.s.get("/v1/resources/" + name.replace("/", "%2F"))[1]
            self.assertEqual((r["held"], r["holds"]), (1, 1))

    def test_fences_and_capacity_under_waits(self):
        cap = 5
        self.assertEqual(self.s.put("/v1/resources/hot", {"capacity": cap})[0], 201)
        after = self.s.get("/v1/events?limit=1")[1]["last_seq"]

        def cycle(i, c):
            st, h, _ = self.s.post("/v1/holds", {"owner": "w%d" % i, "resources": ["hot"],
                                                 "wait_ms": 60000, "ttl_ms": 60000}, conn=c)
            if st != 201:
                return (st, h)
            st2, r, _ = self.s.post("/v1/holds/%s/release" % h["id"], {"token": h["token"]},
                                    conn=c)
            return (st, h, st2)

        out = self.run_clients(200, cycle)
        self.assertTrue(all(o[0] == 201 and o[2] == 200 for o in out), out[:3])
        fences = [o[1]["fence"]["hot"] for o in out]
        self.assertEqual(len(set(fences)), len(fences))
        # replay the event log: grants in order have strictly increasing fences, and the
        # units held never exceed the capacity
        events, held, top, last_fence = [], 0, 0, 0
        while True:
            body = self.s.get("/v1/events?after=%d&limit=1000" % after)[1]
            events += body["events"]
            if not body["events"]:
                break
            after = body["events"][-1]["seq"]
        for e in events:
            if e["resource"] != "hot":
                continue
            if e["type"] == "hold.granted":
                f = e["data"]["resources"][0]["fence"]
                self.assertGreater(f, last_fence)
                last_fence = f
                held += 1
                top = max(top, held)
            elif e["type"] in ("hold.released", "hold.expired"):
                held -= 1
        self.assertLessEqual(top, cap)
        self.assertEqual(held, 0)
        self.assertEqual(sum(1 for e in events if e["type"] == "hold.granted"
                             and e["resource"] == "hot"), 200)


if __name__ == "__main__":
    hfserver.BIN = sys.argv.pop(1)
    unittest.main()
