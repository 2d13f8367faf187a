"""test_library.py — holdfast-library (seed 000) black-box, over a holdfast engine URL: books
(cache-aside in Redis, optimistic updates with If-Match: 428 without, 409 when stale), borrow
and return as holds, every error code; 50 users borrowing the last 3 copies at once (exactly
3 succeed); afterwards the read model (built from holdfast's events), the Redis cache, the
book event store and the database agree; a restart resumes the projector where it stopped.

usage (under with_pg.sh and with_redis.sh):
  test_library.py LIBRARY HOLDFASTD [http | file]
"""
import os
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "server"))
import hfserver  # noqa: E402
import rides  # noqa: E402
from rides import App, psql, run_all  # noqa: E402

BIN = HOLDFASTD = ""
ENGINE = "http"
N_USERS = 50


class Library(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        hfserver.raise_fd_limit(4096)
        psql("DROP TABLE IF EXISTS user_borrowings, book_events, borrowings, books, "
             "projector_position CASCADE")
        subprocess.run(["redis-cli", "-p", str(rides.REDIS_PORT), "FLUSHALL"], check=True,
                       capture_output=True)
        cls.tmp = tempfile.mkdtemp(prefix="hf-library-")
        cls.hf = None
        if ENGINE == "http":
            hfserver.BIN = HOLDFASTD
            cls.hf = hfserver.Server("--log-level", "warn", store_dir=cls.tmp)
            cls.url = cls.hf.url
        else:
            cls.url = "file:" + os.path.join(cls.tmp, "library.db")
        cls.app = App(BIN, cls.url, "--workers", "16")

    @classmethod
    def tearDownClass(cls):
        cls.app.stop()
        if cls.hf:
            cls.hf.stop()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    # ---- helpers ---------------------------------------------------------------------------

    def book(self, copies, title="Dế Mèn phiêu lưu ký"):
        st, b = self.app.post("/api/books", {"title": title, "copies": copies})
        self.assertEqual(st, 201, b)
        return b

    def put(self, bid, body, if_match=None):
        c = self.app.conn()
        h = {"Content-Type": "application/json"}
        if if_match is not None:
            h["If-Match"] = if_match
        import json
        c.request("PUT", "/api/books/%d" % bid, body=json.dumps(body), headers=h)
        r = c.getresponse()
        out = (r.status, json.loads(r.read().decode()), r.getheader("ETag"))
        c.close()
        return out

    def borrow(self, bid, user):
        return self.app.post("/api/books/%d/borrow" % bid, {"user_id": user})

    def settle(self, timeout=30):
        """Waits until the projector has applied every borrowing and return in the database;
        returns the position it answered with."""
        deadline = time.time() + timeout
        while True:
            want = psql("SELECT hold_id, user_id, book_id, status FROM borrowings "
                        "WHERE status <> 'VOID' ORDER BY hold_id")
            have = psql("SELECT hold_id, user_id, book_id, status FROM user_borrowings "
                        "ORDER BY hold_id")
            if want == have:
                break
            self.assertLess(time.time(), deadline, "the read model did not catch up")
            time.sleep(0.05)
        users = sorted({int(r[1]) for r in want})
        pos = 0
        for u in users:  # the route answers what the table holds, with its position
            st, rm = self.app.get("/api/users/%d/borrowings" % u)
            self.assertEqual(st, 200, rm)
            pos = rm["position"]
            self.assertEqual(sorted((b["hold_id"], b["book_id"], b["status"])
                                    for b in rm["borrowings"]),
                             sorted((r[0], int(r[2]), r[3]) for r in want if int(r[1]) == u))
        return pos

    def check_book(self, bid):
        """Database, holdfast, cache and event store agree on book bid."""
        copies = int(psql("SELECT copies FROM books WHERE id=%d" % bid)[0][0])
        out = int(psql("SELECT count(*) FROM borrowings WHERE book_id=%d AND status='BORROWED'"
                       % bid)[0][0])
        for _ in range(2):  # a miss fills the cache, the second read may hit it
            st, b = self.app.get("/api/books/%d" % bid)
            self.assertEqual(st, 200, b)
            self.assertEqual((b["copies"], b["available"], b["holdfast"]["held"]),
                             (copies, copies - out, out), b)
        ev = psql("SELECT version, type, data->>'hold_id' FROM book_events WHERE book_id=%d "
                  "ORDER BY hf_seq" % bid)
        self.assertEqual([int(e[0]) for e in ev], list(range(1, len(ev) + 1)),
                         "the book's events are not in order")
        n_borrowed = int(psql("SELECT count(*) FROM borrowings WHERE book_id=%d AND "
                              "status <> 'VOID'" % bid)[0][0])
        n_returned = int(psql("SELECT count(*) FROM borrowings WHERE book_id=%d AND "
                              "status = 'RETURNED'" % bid)[0][0])
        self.assertEqual([e[1] for e in ev].count("BOOK_BORROWED"), n_borrowed)
        self.assertEqual([e[1] for e in ev].count("BOOK_RETURNED"), n_returned)
        return b

    # ---- tests ---------------------------------------------------------------------------

    def test_1_books_and_errors(self):
        b = self.book(2)
        self.assertEqual((b["copies"], b["version"], b["available"]), (2, 1, 2))
        st, g = self.app.get("/api/books/%d" % b["id"])
        self.assertEqual((st, g["cache"]), (200, "hit"), g)  # the create filled it
        self.assertEqual(g["title"], "Dế Mèn phiêu lưu ký")
        # optimistic updates
        st, e, _ = self.put(b["id"], {"title": "x"})
        self.assertEqual((st, e["error"]["code"]), (428, "precondition_required"))
        st, u, etag = self.put(b["id"], {"title": "Tô Hoài"}, '"1"')
        self.assertEqual((st, u["version"], u["title"], etag), (200, 2, "Tô Hoài", '"2"'), u)
        st, e, _ = self.put(b["id"], {"title": "late"}, '"1"')
        self.assertEqual((st, e["error"]["code"]), (409, "version_conflict"), e)
        st, e, _ = self.put(b["id"], {"title": "late"}, 'abc')
        self.assertEqual((st, e["error"]["code"]), (400, "invalid_if_match"))
        st, g = self.app.get("/api/books/%d" % b["id"])
        self.assertEqual((g["title"], g["version"]), ("Tô Hoài", 2))  # the cache was dropped
        # borrow and return
        st, br = self.borrow(b["id"], 7)
        self.assertEqual((st, br["status"], br["user_id"]), (201, "BORROWED", 7), br)
        self.assertNotIn("hold_token", br)
        st, e, _ = self.put(b["id"], {"copies": 0}, '"2"')
        self.assertEqual((st, e["error"]["code"]), (422, "invalid_field"))
        st, br2 = self.borrow(b["id"], 8)
        self.assertEqual(st, 201)
        st, e, _ = self.put(b["id"], {"copies": 1}, '"2"')
        self.assertEqual((st, e["error"]["code"]), (409, "copies_on_loan"), e)
        st, e = self.borrow(b["id"], 9)
        self.assertEqual((st, e["error"]["code"]), (409, "no_copy_available"))
        st, rt = self.app.post("/api/borrowings/%d/return" % br["id"])
        self.assertEqual((st, rt["status"]), (200, "RETURNED"), rt)
        st, e = self.app.post("/api/borrowings/%d/return" % br["id"])
        self.assertEqual((st, e["error"]["code"]), (409, "not_borrowed"))
        st, u, _ = self.put(b["id"], {"copies": 3}, '"2"')
        self.assertEqual((st, u["copies"], u["version"]), (200, 3, 3), u)
        for method, path, body, status, code in [
                ("POST", "/api/books", {"copies": 1}, 422, "missing_field"),
                ("POST", "/api/books", {"title": "t", "copies": 0}, 422, "invalid_field"),
                ("GET", "/api/books/999999", None, 404, "book_not_found"),
                ("PUT", "/api/books/999999", {"title": "t"}, 428, "precondition_required"),
                ("POST", "/api/books/999999/borrow", {"user_id": 1}, 404, "book_not_found"),
                ("POST", "/api/books/%d/borrow" % b["id"], {"user_id": 0}, 422,
                 "invalid_field"),
                ("POST", "/api/books/%d/borrow" % b["id"], None, 400, "invalid_json"),
                ("POST", "/api/borrowings/999999/return", None, 404, "borrowing_not_found"),
                ("GET", "/api/users/x/borrowings", None, 400, "invalid_id"),
                ("DELETE", "/api/books/1", None, 405, "method_not_allowed"),
                ("GET", "/api/nothing", None, 404, "route_not_found")]:
            st, e = self.app.request(method, path, body=body)
            self.assertEqual((st, e["error"]["code"]), (status, code), (method, path, e))
        st, e, _ = self.put(999999, {"title": "t"}, '"1"')
        self.assertEqual((st, e["error"]["code"]), (404, "book_not_found"))
        self.settle()
        st, rm = self.app.get("/api/users/7/borrowings")
        self.assertEqual([(x["hold_id"], x["status"]) for x in rm["borrowings"]],
                         [(br["hold_id"], "RETURNED")])
        self.assertGreater(rm["position"], 0)
        self.check_book(b["id"])

    def test_2_last_three_copies(self):
        b = self.book(5, "the last three")
        for u in (1001, 1002):
            self.assertEqual(self.borrow(b["id"], u)[0], 201)
        self.settle()
        st, g = self.app.get("/api/books/%d" % b["id"])  # warm the cache: 3 available
        self.assertEqual(g["available"], 3, g)

        out = run_all(N_USERS, lambda i: self.borrow(b["id"], 2000 + i))
        won = [r[1] for r in out if r[0] == 201]
        lost = [r for r in out if r[0] != 201]
        self.assertEqual(len(won), 3, out[:5])
        self.assertTrue(all(r[0] == 409 and r[1]["error"]["code"] == "no_copy_available"
                            for r in lost), lost[:3])
        self.assertEqual(len({w["hold_id"] for w in won}), 3)
        st, rt = self.app.post("/api/borrowings/%d/return" % won[0]["id"])
        self.assertEqual(st, 200)
        pos = self.settle()
        g = self.check_book(b["id"])
        self.assertEqual(g["available"], 1)
        print("\n  %d users for the last 3 copies: %d borrowed, %d refused; read model at "
              "seq %d" % (N_USERS, len(won), len(lost), pos), file=sys.stderr)

    def test_9_clean_exit(self):
        """SIGTERM: a clean exit, and nothing for the sanitizers to report."""
        type(self).app.stop_clean()

    def test_3_restart_resumes(self):
        cls = type(self)
        n_events = int(psql("SELECT count(*) FROM book_events")[0][0])
        cls.app.stop_clean()
        cls.app = App(BIN, cls.url, "--workers", "4")
        b = self.book(1, "after the restart")
        st, br = self.borrow(b["id"], 42)
        self.assertEqual(st, 201)
        self.settle()
        self.assertEqual(int(psql("SELECT count(*) FROM book_events")[0][0]), n_events + 1,
                         "events projected twice or lost over the restart")
        for bid in [int(r[0]) for r in psql("SELECT id FROM books")]:
            self.check_book(bid)


if __name__ == "__main__":
    BIN, HOLDFASTD = sys.argv[1], sys.argv[2]
    if len(sys.argv) > 3:
        ENGINE = sys.argv[3]
    unittest.main(argv=[sys.argv[0], "-v"])
