"""test_rides_api.py — holdfast-rides end to end over a file: holdfast store: the seed's curl
examples as written (on port 3000 when it is free), the whole booking life, the demo data
loaded twice, every documented error code for invalid transitions and bad input, and the
unique index that backs the driver hold.

usage (under with_pg.sh and with_redis.sh): test_rides_api.py PATH/TO/holdfast-rides
"""
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import unittest

import rides
from rides import App, psql

BIN = ""

# The seed's manual test commands, exactly as written (seed 003, "Manual Testing").
SEED_CREATE = """curl -X POST http://localhost:3000/api/bookings \\
  -H "Content-Type: application/json" \\
  -d '{"rider_id": 1, "pickup_lat": 40.7128, "pickup_lng": -74.0060, "dropoff_lat": 40.7589, "dropoff_lng": -73.9851, "estimated_fare": 15.50}'"""
SEED_ASSIGN = "curl -X POST http://localhost:3000/api/bookings/1/assign"
SEED_STATS = "curl http://localhost:3000/api/locks/stats"
# The seed's request bodies of the other endpoints ("API Endpoints").
SEED_ACCEPT = {"driver_id": 1}
SEED_CANCEL = {"reason": "Driver not available", "user_id": 1, "user_type": "rider"}
SEED_COMPLETE = {"driver_id": 1, "actual_fare": 16.25}
SEED_BOOKING = {"rider_id": 1, "pickup_lat": 40.7128, "pickup_lng": -74.0060,
                "dropoff_lat": 40.7589, "dropoff_lng": -73.9851, "estimated_fare": 15.50}


def reset_db():
    psql("DROP TABLE IF EXISTS bookings, drivers, riders CASCADE")
    subprocess.run(["redis-cli", "-p", str(rides.REDIS_PORT), "FLUSHALL"], check=True,
                   capture_output=True)


class Api(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        reset_db()
        cls.tmp = tempfile.mkdtemp(prefix="hf-rides-api-")
        cls.url = "file:" + os.path.join(cls.tmp, "holdfast.db")
        try:  # the seed's port, unless something else has it
            cls.app = App(BIN, cls.url, "--demo-data", port=3000 if rides.port_free(3000) else 0)
        except RuntimeError as e:
            print("port 3000: %s; on a free port instead" % str(e).splitlines()[-1])
            cls.app = App(BIN, cls.url, "--demo-data")

    @classmethod
    def tearDownClass(cls):
        assert cls.app.stop() == 0, cls.app.log_text()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def curl(self, cmd):
        if self.app.port != 3000:
            print("port 3000 is taken on this machine: the seed's commands run on port %d"
                  % self.app.port)
            cmd = cmd.replace("localhost:3000", "localhost:%d" % self.app.port)
        out = subprocess.run(["sh", "-c", cmd + " -s"], capture_output=True, text=True)
        self.assertEqual(out.returncode, 0, out.stderr)
        return json.loads(out.stdout)

    def err(self, status_body, status, code):
        st, body = status_body
        self.assertEqual((st, body.get("error", {}).get("code")), (status, code), body)
        self.assertIsInstance(body["error"]["message"], str)
        self.assertTrue(body["error"]["message"])

    def new_booking(self, **over):
        b = dict(SEED_BOOKING, **over)
        st, body = self.app.post("/api/bookings", b)
        self.assertEqual(st, 201, body)
        return body["id"]

    def assigned(self, **over):
        bid = self.new_booking(**over)
        st, body = self.app.post("/api/bookings/%d/assign" % bid)
        self.assertEqual(st, 200, body)
        return bid, body["driver_id"]

    # Runs first (tests run in name order): the seed's commands need booking 1.
    def test_0_seed_examples(self):
        b = self.curl(SEED_CREATE)
        self.assertEqual((b["id"], b["status"], b["rider_id"], b["estimated_fare"]),
                         (1, "requested", 1, 15.5))
        a = self.curl(SEED_ASSIGN)
        # Driver 1 is the demo driver nearest to the seed's pickup point.
        self.assertEqual((a["id"], a["status"], a["driver_id"]), (1, "assigned", 1))
        self.assertTrue(a["driver_hold_active"])
        self.assertNotIn("driver_hold_token", a)
        st, acc = self.app.post("/api/bookings/1/accept", SEED_ACCEPT)
        self.assertEqual((st, acc["status"]), (200, "accepted"), acc)
        st, done = self.app.post("/api/bookings/1/complete", SEED_COMPLETE)
        self.assertEqual((st, done["status"], done["actual_fare"]), (200, "completed", 16.25))
        self.assertFalse(done["driver_hold_active"])
        # A second booking, cancelled by its rider with the seed's body: driver 1 again.
        st, b2 = self.app.post("/api/bookings", SEED_BOOKING)
        self.assertEqual(st, 201)
        st, a2 = self.app.post("/api/bookings/%d/assign" % b2["id"])
        self.assertEqual((st, a2["driver_id"]), (200, 1), a2)
        st, c2 = self.app.post("/api/bookings/%d/cancel" % b2["id"], SEED_CANCEL)
        self.assertEqual((st, c2["status"], c2["cancel_reason"]),
                         (200, "cancelled", "Driver not available"), c2)
        self.assertEqual(c2["cancelled_by"], {"user_id": 1, "user_type": "rider"})
        st, g = self.app.get("/api/bookings/1")
        self.assertEqual((st, g["status"], g["driver_id"]), (200, "completed", 1))
        st, mine = self.app.get("/api/users/1/bookings?user_type=rider")
        self.assertEqual(st, 200)
        self.assertEqual([x["id"] for x in mine["bookings"]], [b2["id"], 1])
        st, theirs = self.app.get("/api/users/1/bookings?user_type=driver")
        self.assertEqual(sorted(x["id"] for x in theirs["bookings"]), [1, b2["id"]])
        stats = self.curl(SEED_STATS)
        locks = stats["locks"]
        for k in ("acquired", "released", "expired", "contested", "timeouts"):
            self.assertIn(k, locks)
        self.assertEqual(locks["acquired"], locks["released"])
        self.assertGreaterEqual(locks["acquired"], 5)
        self.assertEqual(stats["driver_holds"]["taken"], 2)
        self.assertEqual(stats["driver_holds"]["released"], 2)
        print("seed flow: lock acquisition p50 %.3f ms, p99 %.3f ms over %d locks (file: engine)"
              % (locks["acquisition_latency"]["p50_ms"], locks["acquisition_latency"]["p99_ms"],
                 locks["acquisition_latency"]["samples"]))

    def test_demo_data_idempotent(self):
        self.assertEqual(psql("SELECT count(*), min(id), max(id) FROM riders WHERE id <= 100"),
                         [["100", "1", "100"]])
        self.assertEqual(psql("SELECT count(*) FROM drivers WHERE id <= 50"), [["50"]])
        # A second app process on the same database loads the demo data again: nothing
        # changes, and both serve.
        other = App(BIN, "file:" + os.path.join(self.tmp, "other.db"), "--demo-data")
        try:
            self.assertEqual(psql("SELECT count(*) FROM riders WHERE id <= 100"), [["100"]])
            self.assertEqual(psql("SELECT count(*) FROM drivers WHERE id <= 50"), [["50"]])
            st, _ = other.get("/api/bookings/1")
            self.assertEqual(st, 200)
        finally:
            self.assertEqual(other.stop(), 0)
        # New riders and drivers get ids after the demo ones.
        st, r = self.app.post("/api/riders", {"name": "Ada"})
        self.assertEqual(st, 201, r)
        self.assertGreater(r["id"], 100)
        st, d = self.app.post("/api/drivers", {"name": "Bo", "lat": 40.0, "lng": -75.0})
        self.assertEqual(st, 201, d)
        self.assertGreater(d["id"], 50)
        st, m = self.app.put("/api/drivers/%d/location" % d["id"], {"lat": 40.5, "lng": -75.5})
        self.assertEqual((st, m["lat"], m["lng"]), (200, 40.5, -75.5), m)

    def test_invalid_transitions(self):
        a = self.app
        bid = self.new_booking()
        # requested: only assign and cancel
        self.err(a.post("/api/bookings/%d/accept" % bid, {"driver_id": 1}), 409,
                 "invalid_transition")
        self.err(a.post("/api/bookings/%d/complete" % bid, {"driver_id": 1, "actual_fare": 1}),
                 409, "invalid_transition")
        st, body = a.post("/api/bookings/%d/assign" % bid)
        self.assertEqual(st, 200, body)
        drv = body["driver_id"]
        other = drv + 1
        # assigned: not again, only the assigned driver accepts, no completing yet
        self.err(a.post("/api/bookings/%d/assign" % bid), 409, "invalid_transition")
        self.err(a.post("/api/bookings/%d/accept" % bid, {"driver_id": other}), 403,
                 "wrong_driver")
        self.err(a.post("/api/bookings/%d/complete" % bid, {"driver_id": drv, "actual_fare": 1}),
                 409, "invalid_transition")
        self.err(a.post("/api/bookings/%d/cancel" % bid,
                        {"reason": "x", "user_id": 99, "user_type": "rider"}), 403,
                 "not_participant")
        self.err(a.post("/api/bookings/%d/cancel" % bid,
                        {"reason": "x", "user_id": other, "user_type": "driver"}), 403,
                 "not_participant")
        st, body = a.post("/api/bookings/%d/accept" % bid, {"driver_id": drv})
        self.assertEqual((st, body["status"]), (200, "accepted"))
        self.err(a.post("/api/bookings/%d/accept" % bid, {"driver_id": drv}), 409,
                 "invalid_transition")
        self.err(a.post("/api/bookings/%d/complete" % bid, {"driver_id": other, "actual_fare": 1}),
                 403, "wrong_driver")
        st, body = a.post("/api/bookings/%d/complete" % bid, {"driver_id": drv, "actual_fare": 9})
        self.assertEqual((st, body["status"]), (200, "completed"))
        # completed: nothing more
        for verb, b in (("assign", None), ("accept", {"driver_id": drv}),
                        ("complete", {"driver_id": drv, "actual_fare": 1}),
                        ("cancel", {"reason": "x", "user_id": 1, "user_type": "rider"})):
            self.err(a.post("/api/bookings/%d/%s" % (bid, verb), b), 409, "invalid_transition")
        # cancelled by the driver: frees the driver, and nothing more
        bid2, drv2 = self.assigned()
        st, body = a.post("/api/bookings/%d/cancel" % bid2,
                          {"reason": "flat tyre", "user_id": drv2, "user_type": "driver"})
        self.assertEqual((st, body["status"], body["driver_hold_active"]),
                         (200, "cancelled", False), body)
        for verb, b in (("assign", None), ("accept", {"driver_id": drv2}),
                        ("complete", {"driver_id": drv2, "actual_fare": 1}),
                        ("cancel", {"user_id": 1, "user_type": "rider"})):
            self.err(a.post("/api/bookings/%d/%s" % (bid2, verb), b), 409, "invalid_transition")
        # a rider cancels before any driver: fine, no reason needed
        bid3 = self.new_booking()
        st, body = a.post("/api/bookings/%d/cancel" % bid3, {"user_id": 1, "user_type": "rider"})
        self.assertEqual((st, body["status"]), (200, "cancelled"), body)

    def test_no_driver_available(self):
        # The middle of the Atlantic: no driver within 10 km.
        bid = self.new_booking(pickup_lat=30.0, pickup_lng=-40.0)
        self.err(self.app.post("/api/bookings/%d/assign" % bid), 409, "no_driver_available")
        st, body = self.app.get("/api/bookings/%d" % bid)
        self.assertEqual((st, body["status"], body["driver_id"]), (200, "requested", None))

    def test_bad_input(self):
        a = self.app
        cases = [
            (a.post("/api/bookings", {}), 422, "missing_field"),
            (a.post("/api/bookings", dict(SEED_BOOKING, rider_id="one")), 422, "invalid_field"),
            (a.post("/api/bookings", dict(SEED_BOOKING, rider_id=0)), 422, "invalid_field"),
            (a.post("/api/bookings", dict(SEED_BOOKING, rider_id=1.5)), 422, "invalid_field"),
            (a.post("/api/bookings", dict(SEED_BOOKING, pickup_lat=91)), 422, "invalid_field"),
            (a.post("/api/bookings", dict(SEED_BOOKING, pickup_lng="x")), 422, "invalid_field"),
            (a.post("/api/bookings", dict(SEED_BOOKING, estimated_fare=-1)), 422,
             "invalid_field"),
            (a.post("/api/bookings", dict(SEED_BOOKING, rider_id=999999)), 404,
             "rider_not_found"),
            (a.post("/api/bookings", raw="{not json"), 400, "invalid_json"),
            (a.post("/api/bookings", raw="[1,2]"), 400, "invalid_json"),
            (a.post("/api/bookings", raw='{"a":1,"a":2}'), 400, "invalid_json"),
            (a.post("/api/bookings"), 400, "invalid_json"),
            (a.post("/api/bookings", raw="{" + " " * 70000 + "}"), 413, "body_too_large"),
            (a.get("/api/bookings/999999"), 404, "booking_not_found"),
            (a.post("/api/bookings/999999/assign"), 404, "booking_not_found"),
            (a.post("/api/bookings/999999/accept", {"driver_id": 1}), 404, "booking_not_found"),
            (a.get("/api/bookings/abc"), 400, "invalid_id"),
            (a.get("/api/bookings/0"), 400, "invalid_id"),
            (a.get("/api/bookings/-1"), 400, "invalid_id"),
            (a.get("/api/bookings/99999999999999999999"), 400, "invalid_id"),
            (a.post("/api/bookings/1/accept", {}), 422, "missing_field"),
            (a.post("/api/bookings/1/accept", {"driver_id": "1"}), 422, "invalid_field"),
            (a.post("/api/bookings/1/complete", {"driver_id": 1}), 422, "missing_field"),
            (a.post("/api/bookings/1/complete", {"driver_id": 1, "actual_fare": "x"}), 422,
             "invalid_field"),
            (a.post("/api/bookings/1/cancel", {"user_id": 1}), 422, "missing_field"),
            (a.post("/api/bookings/1/cancel", {"user_id": 1, "user_type": "admin"}), 422,
             "invalid_field"),
            (a.post("/api/bookings/1/cancel", {"user_id": 1, "user_type": "rider", "reason": 5}),
             422, "invalid_field"),
            (a.get("/api/users/1/bookings?user_type=admin"), 400, "invalid_user_type"),
            (a.get("/api/users/999999/bookings?user_type=rider"), 404, "rider_not_found"),
            (a.get("/api/users/999999/bookings?user_type=driver"), 404, "driver_not_found"),
            (a.post("/api/riders", {}), 422, "missing_field"),
            (a.post("/api/riders", {"name": ""}), 422, "invalid_field"),
            (a.post("/api/drivers", {"name": "x", "lat": 200, "lng": 0}), 422, "invalid_field"),
            (a.put("/api/drivers/999999/location", {"lat": 1, "lng": 1}), 404,
             "driver_not_found"),
            (a.put("/api/drivers/1/location", {"lat": 1}), 422, "missing_field"),
            (a.get("/api/nothing"), 404, "route_not_found"),
            (a.request("DELETE", "/api/bookings/1"), 405, "method_not_allowed"),
            (a.get("/api/bookings"), 405, "method_not_allowed"),
        ]
        for got, status, code in cases:
            with self.subTest(code=code, status=status):
                self.err(got, status, code)

    def test_garbage_never_crashes(self):
        rnd = random.Random(13)
        paths = ["/api/bookings", "/api/bookings/1/assign", "/api/bookings/1/accept",
                 "/api/bookings/1/cancel", "/api/bookings/1/complete", "/api/riders",
                 "/api/drivers", "/api/drivers/1/location"]
        values = [None, True, -1, 0, 1e308, -1e308, "", "x" * 300, [], {}, 1.5, 2**62, "1"]
        keys = ["rider_id", "pickup_lat", "pickup_lng", "dropoff_lat", "dropoff_lng",
                "estimated_fare", "driver_id", "actual_fare", "reason", "user_id", "user_type",
                "name", "lat", "lng"]
        for _ in range(300):
            body = {k: rnd.choice(values) for k in rnd.sample(keys, rnd.randint(0, len(keys)))}
            path = rnd.choice(paths)
            st, got = self.app.request("PUT" if path.endswith("location") else "POST", path, body)
            self.assertLess(st, 500, (path, body, got))
        # Clients that leave before their answer, or mid-request: the answer is dropped.
        body = json.dumps(SEED_BOOKING).encode()
        for i in range(30):
            path = ["/api/bookings", "/api/bookings/1/assign", "/api/locks/stats"][i % 3]
            s = socket.create_connection(("127.0.0.1", self.app.port))
            n = len(body) if i % 2 else len(body) + 100  # odd: whole; even: cut short
            s.sendall(b"POST %s HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n"
                      % (path.encode(), n) + body)
            s.close()
        time.sleep(0.5)
        st, _ = self.app.get("/health")
        self.assertEqual(st, 200)

    def test_unique_index_second_line(self):
        # Holdfast keeps a driver on one active booking; behind it, PostgreSQL refuses a
        # second active booking for the same driver even if something bypassed the hold.
        b1, drv = self.assigned()
        b2 = self.new_booking()
        with self.assertRaises(RuntimeError) as cm:
            psql("UPDATE bookings SET status = 'assigned', driver_id = %d WHERE id = %d"
                 % (drv, b2))
        self.assertIn("bookings_one_active_per_driver", str(cm.exception))
        self.assertEqual(rides.active_drivers_in_db().get(drv), b1)


if __name__ == "__main__":
    BIN = os.path.abspath(sys.argv.pop(1))
    unittest.main(verbosity=2)
