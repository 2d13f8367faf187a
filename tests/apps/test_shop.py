"""test_shop.py — holdfast-shop (seed 001) black-box, over a holdfast engine URL: the API and
its error codes; 100 concurrent customers on a product of 1,000 units (never oversold; the
confirmed quantities equal initial minus final stock in the database and in holdfast); the
app killed (SIGKILL) and restarted mid-run (no acknowledged order lost, none reserved
twice); a restart loads the stock without counting it twice. Asserts outcomes, not timing.

usage (under with_pg.sh and with_redis.sh):
  test_shop.py SHOP HOLDFASTD [http | file]
(http: a holdfastd started here over a file: store; file: an embedded store)
"""
import os
import random
import shutil
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "server"))
import hfserver  # noqa: E402
from rides import App, psql, run_all  # noqa: E402

BIN = HOLDFASTD = ""
ENGINE = "http"
N_CUSTOMERS = 100


class Shop(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        hfserver.raise_fd_limit(4096)
        psql("DROP TABLE IF EXISTS outbox, orders, products CASCADE")
        cls.tmp = tempfile.mkdtemp(prefix="hf-shop-")
        cls.hf = None
        if ENGINE == "http":
            hfserver.BIN = HOLDFASTD
            cls.hf = hfserver.Server("--log-level", "warn", store_dir=cls.tmp)
            cls.url = cls.hf.url
        else:
            cls.url = "file:" + os.path.join(cls.tmp, "shop.db")
        cls.app = App(BIN, cls.url, "--workers", "16", redis=False)

    @classmethod
    def tearDownClass(cls):
        cls.app.stop()
        if cls.hf:
            cls.hf.stop()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    # ---- helpers ---------------------------------------------------------------------------

    def product(self, stock, name="widget"):
        st, p = self.app.post("/api/products", {"name": name, "stock": stock})
        self.assertEqual(st, 201, p)
        return p

    def wait_final(self, ids, timeout=60):
        """Waits until every order in ids is CONFIRMED or CANCELLED; returns {id: order}."""
        deadline = time.time() + timeout
        while True:
            rows = psql("SELECT id, status, quantity, hold_id FROM orders WHERE id IN (%s)"
                        % ",".join(str(i) for i in ids)) if ids else []
            got = {int(r[0]): {"status": r[1], "quantity": int(r[2]), "hold_id": r[3]}
                   for r in rows}
            if len(got) == len(ids) and all(o["status"] != "PENDING" for o in got.values()):
                return got
            self.assertLess(time.time(), deadline, "orders still pending: %s" % [
                i for i in ids if got.get(i, {}).get("status", "PENDING") == "PENDING"][:10])
            time.sleep(0.05)

    def check_books(self, pid, total, orders):
        """The seed's gap closed: database stock, holdfast and the confirmed orders agree."""
        confirmed = sum(o["quantity"] for o in orders.values() if o["status"] == "CONFIRMED")
        self.assertLessEqual(confirmed, total, "oversold")
        all_confirmed = int(psql("SELECT coalesce(sum(quantity),0) FROM orders WHERE "
                                 "product_id=%d AND status='CONFIRMED'" % pid)[0][0])
        self.assertEqual(all_confirmed, confirmed)
        st, p = self.app.get("/api/products/%d" % pid)
        self.assertEqual(st, 200, p)
        self.assertEqual(p["total_stock"], total)
        self.assertEqual(p["stock"], total - confirmed, p)
        self.assertEqual(p["sold"], confirmed)
        hf = p["holdfast"]
        self.assertEqual(hf["capacity"], total, p)
        self.assertEqual(hf["held"], confirmed, "holdfast holds %d units for %d confirmed"
                         % (hf["held"], confirmed))
        self.assertEqual(hf["available"], p["stock"])
        holds = [o["hold_id"] for o in orders.values() if o["status"] == "CONFIRMED"]
        self.assertEqual(len(holds), len(set(holds)), "two orders share a hold")
        # every order.saved processed, one outcome event per decided order
        self.assertEqual(psql("SELECT count(*) FROM outbox WHERE processed_at IS NULL")[0][0], "0")
        dup = psql("SELECT order_id FROM outbox WHERE type <> 'order.saved' "
                   "GROUP BY order_id HAVING count(*) > 1")
        self.assertEqual(dup, [], "an order decided twice")
        return confirmed

    def customers(self, pid, n, per_customer, stop=None):
        """n customers, each placing per_customer orders of 1-20 units; returns the ids of the
        orders the app acknowledged (202). Connection errors (the app killed) are retried."""
        rng = random.Random(13)
        qty = [[rng.randint(1, 20) for _ in range(per_customer)] for _ in range(n)]

        def one(i):
            ids = []
            for q in qty[i]:
                while True:
                    try:
                        st, o = self.app.post("/api/orders", {"product_id": pid, "quantity": q,
                                                             "customer": "c%d" % i})
                    except OSError:
                        time.sleep(0.05)  # killed: the restart is coming
                        continue
                    if st == 202:
                        self.assertEqual(o["status"], "PENDING")
                        ids.append(o["id"])
                        break
                    if st == 503:
                        time.sleep(0.05)
                        continue
                    return ("status", st, o)
            return ids

        out = run_all(n, one)
        bad = [r for r in out if not isinstance(r, list)]
        self.assertEqual(bad, [], bad[:3])
        return [i for r in out for i in r]

    # ---- tests ---------------------------------------------------------------------------

    def test_1_api(self):
        p = self.product(10, "lamp")
        self.assertEqual((p["stock"], p["sold"]), (10, 0))
        self.assertEqual(p["holdfast"]["capacity"], 10)
        self.assertEqual(p["holdfast"]["available"], 10)
        st, o = self.app.post("/api/orders", {"product_id": p["id"], "quantity": 4,
                                             "customer": "ann"})
        self.assertEqual(st, 202, o)
        self.assertEqual(o["status"], "PENDING")
        st, o2 = self.app.post("/api/orders", {"product_id": p["id"], "quantity": 7,
                                              "customer": "bob"})
        got = self.wait_final([o["id"], o2["id"]])
        self.assertEqual(got[o["id"]]["status"], "CONFIRMED")
        self.assertEqual(got[o2["id"]]["status"], "CANCELLED")
        st, g = self.app.get("/api/orders/%d" % o2["id"])
        self.assertEqual((st, g["cancel_reason"], g["hold_id"]), (200, "out_of_stock", None))
        st, g = self.app.get("/api/orders/%d" % o["id"])
        self.assertEqual((st, g["status"], g["customer"]), (200, "CONFIRMED", "ann"))
        self.assertEqual(len(g["hold_id"]), 32)
        self.check_books(p["id"], 10, got)
        # the outbox, in order: saved, saved, then the outcomes
        ev = psql("SELECT type, payload->>'order_id' FROM outbox WHERE order_id IN (%d,%d) "
                  "ORDER BY id" % (o["id"], o2["id"]))
        self.assertEqual([e[0] for e in ev].count("order.saved"), 2)
        self.assertIn(["order.confirmed", str(o["id"])], ev)
        self.assertIn(["order.cancelled", str(o2["id"])], ev)
        # more than the product ever had
        st, o3 = self.app.post("/api/orders", {"product_id": p["id"], "quantity": 11,
                                              "customer": "cy"})
        got = self.wait_final([o3["id"]])
        st, g = self.app.get("/api/orders/%d" % o3["id"])
        self.assertEqual((g["status"], g["cancel_reason"]), ("CANCELLED", "exceeds_total_stock"))
        # errors: stable codes, JSON bodies
        for method, path, body, status, code in [
                ("POST", "/api/products", {"stock": 3}, 422, "missing_field"),
                ("POST", "/api/products", {"name": "x", "stock": 0}, 422, "invalid_field"),
                ("POST", "/api/products", None, 400, "invalid_json"),
                ("GET", "/api/products/999999", None, 404, "product_not_found"),
                ("GET", "/api/products/abc", None, 400, "invalid_id"),
                ("POST", "/api/orders", {"product_id": 999999, "quantity": 1, "customer": "z"},
                 404, "product_not_found"),
                ("POST", "/api/orders", {"product_id": p["id"], "quantity": 0, "customer": "z"},
                 422, "invalid_field"),
                ("POST", "/api/orders", {"product_id": p["id"], "quantity": 1}, 422,
                 "missing_field"),
                ("GET", "/api/orders/999999", None, 404, "order_not_found"),
                ("DELETE", "/api/orders/1", None, 405, "method_not_allowed"),
                ("GET", "/api/nothing", None, 404, "route_not_found")]:
            st, b = self.app.request(method, path, body=body)
            self.assertEqual((st, b["error"]["code"]), (status, code), (method, path, b))
        st, b = self.app.request("POST", "/api/orders", raw="{nope")
        self.assertEqual((st, b["error"]["code"]), (400, "invalid_json"))

    def test_2_concurrent_customers(self):
        p = self.product(1000)
        t0 = time.time()
        ids = self.customers(p["id"], N_CUSTOMERS, 2)
        got = self.wait_final(ids)
        confirmed = self.check_books(p["id"], 1000, got)
        n_conf = sum(1 for o in got.values() if o["status"] == "CONFIRMED")
        print("\n  %d customers, %d orders in %.1f s: %d confirmed (%d units of 1000), %d "
              "cancelled" % (N_CUSTOMERS, len(ids), time.time() - t0, n_conf, confirmed,
                             len(ids) - n_conf), file=sys.stderr)
        self.assertGreater(confirmed, 900)  # demand (~2,100 units) far exceeds the stock

    def test_3_kill_and_restart(self):
        cls = type(self)
        p = self.product(1000, "kill-me")
        killed = threading.Event()

        def killer():
            deadline = time.time() + 30
            while time.time() < deadline:
                n = int(psql("SELECT count(*) FROM orders WHERE product_id=%d" % p["id"])[0][0])
                if n >= 60:
                    break
                time.sleep(0.01)
            cls.app.kill()
            killed.set()
            pending = psql("SELECT count(*) FROM orders WHERE product_id=%d AND "
                           "status='PENDING'" % p["id"])[0][0]
            print("\n  SIGKILL with %d orders saved, %s pending" % (n, pending),
                  file=sys.stderr)
            cls.app = App(BIN, cls.url, "--workers", "16", redis=False)

        k = threading.Thread(target=killer)
        k.start()
        ids = self.customers(p["id"], N_CUSTOMERS, 2)
        k.join()
        self.assertTrue(killed.is_set())
        got = self.wait_final(ids)
        self.assertEqual(len(got), len(ids), "an acknowledged order was lost")
        # orders saved by the killed process but never acknowledged (the customer retried)
        # are decided too: the books balance over all of them
        others = [int(r[0]) for r in psql("SELECT id FROM orders WHERE product_id=%d"
                                          % p["id"])]
        self.assertTrue(set(ids) <= set(others))
        confirmed = self.check_books(p["id"], 1000, self.wait_final(others))
        print("  after the restart: %d orders acknowledged, %d saved, %d units confirmed"
              % (len(ids), len(others), confirmed), file=sys.stderr)

    def test_9_clean_exit(self):
        """SIGTERM: a clean exit, and nothing for the sanitizers to report."""
        type(self).app.stop_clean()

    def test_4_restart_loads_once(self):
        cls = type(self)
        before = {int(r[0]): self.app.get("/api/products/%s" % r[0])[1]
                  for r in psql("SELECT id FROM products")}
        cls.app.stop_clean()
        cls.app = App(BIN, cls.url, "--workers", "4", redis=False)
        log = cls.app.log_text()
        self.assertIn("loaded the stock of %d products" % len(before), log)
        self.assertNotIn("units confirmed", log)  # the database's books balance
        self.assertNotIn("are sold", log)  # holdfast holds every unit sold
        for pid, p in before.items():
            st, q = self.app.get("/api/products/%d" % pid)
            self.assertEqual(q["holdfast"], p["holdfast"])
            self.assertEqual(q["stock"], p["stock"])

    def test_5_crash_between_hold_and_order(self):
        """The window the idempotency key closes: a dispatcher that took the hold and died
        before writing the order. Recreated by hand: the app stopped, an order saved with
        its order.saved event, and the hold taken on holdfastd as the dispatcher takes it
        (same owner, claim, lease and key). The restarted app finds the same hold (replayed)
        and confirms the order on it; nothing is reserved twice."""
        if ENGINE != "http":
            self.skipTest("needs the holdfastd of the http variant")
        cls = type(self)
        p = self.product(50, "crash-window")
        cls.app.stop()
        oid = int(psql("WITH o AS (INSERT INTO orders (product_id, quantity, customer) VALUES "
                       "(%d, 5, 'dora') RETURNING id), e AS (INSERT INTO outbox (order_id, "
                       "type, payload) SELECT id, 'order.saved', '{}' FROM o) SELECT id FROM o"
                       % p["id"])[0][0])
        st, h, _ = self.hf.post("/v1/holds", {"owner": "shop:order:%d" % oid, "resources": [
            {"name": "product:%d" % p["id"], "units": 5}], "ttl_ms": 60000, "wait_ms": 0},
            headers={"Idempotency-Key": "shop-order:%d" % oid})
        self.assertEqual(st, 201, h)
        cls.app = App(BIN, cls.url, "--workers", "4", redis=False)
        got = self.wait_final([oid])
        self.assertEqual(got[oid]["status"], "CONFIRMED")
        self.assertEqual(got[oid]["hold_id"], h["id"], "a second hold was taken")
        st, q = self.app.get("/api/products/%d" % p["id"])
        self.assertEqual((q["stock"], q["holdfast"]["held"], q["holdfast"]["available"]),
                         (45, 5, 45), q)


if __name__ == "__main__":
    BIN, HOLDFASTD = sys.argv[1], sys.argv[2]
    if len(sys.argv) > 3:
        ENGINE = sys.argv[3]
    unittest.main(argv=[sys.argv[0], "-v"])
