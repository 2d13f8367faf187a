"""roundtrips.py — how many statements (each one round trip between holdfastd and PostgreSQL)
one operation costs on postgres://: run under with_pg.sh. Logs every statement
(log_statement = all, with the backend's pid), starts HOLDFASTD on its own schema, sends each
operation REPEAT times from one client, one at a time, and counts the statements the worker
connections ran for it (the waiter thread's connection, the one that LISTENs, is left out: its
periodic re-checks are no operation's), apart from the stats follower's reads of the event
log that each change's NOTIFY sets off. Not a test: a measurement for docs/operations.md.

Usage: roundtrips.py HOLDFASTD [--repeat N]"""
import argparse
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pgtest  # noqa: E402

LINE = re.compile(r"^\[(\d+)\] LOG:  (statement|execute [^:]*):")
# The stats follower's reads of the event log (after each NOTIFY), on worker connections too:
# counted apart, they are no operation's own.
FOLLOWER = ("sequence_events()", "FROM events WHERE seq",
            "SELECT EXISTS (SELECT 1 FROM holds WHERE state = 0 AND expires_at <= now_ms())")


def statements(log, since):
    """(operation's, follower's) statements in the server log after byte `since`, by worker
    connections: the waiter thread's, which LISTENs, is left out."""
    with open(log, "rb") as f:
        lines = f.read().decode(errors="replace").splitlines()
    skip = {m.group(1) for m in map(LINE.match, lines) if m and "LISTEN" in m.string}
    with open(log, "rb") as f:
        f.seek(since)
        text = f.read().decode(errors="replace")
    own = follower = 0
    for line in text.splitlines():
        m = LINE.match(line)
        if not m or m.group(1) in skip:
            continue
        if any(f in line for f in FOLLOWER):
            follower += 1
        else:
            own += 1
    return own, follower


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("holdfastd")
    ap.add_argument("--repeat", type=int, default=20)
    a = ap.parse_args()
    pgtest.need_pg()
    log = os.path.join(os.environ["HF_PG_DIR"], "server.log")
    pgtest.psql("ALTER SYSTEM SET log_statement = 'all'")
    pgtest.psql("ALTER SYSTEM SET log_line_prefix = '[%p] '")
    pgtest.psql("SELECT pg_reload_conf()")
    pgtest.reset_schema()
    srv = pgtest.Holdfastd(a.holdfastd)
    c = srv.client()

    def count(label, fn):
        # A warm-up first: the connection's first call prepares, and upkeep runs at most
        # once a second per connection (its two purges are counted where they fall).
        fn(0)
        since = os.path.getsize(log)
        for i in range(1, a.repeat + 1):
            fn(i)
        own, follower = statements(log, since)
        print("%-38s %5.2f statements per call (+%.2f of the event follower)" %
              (label, own / a.repeat, follower / a.repeat))

    holds = {}

    def acquire(i, name=None, cap=1):
        claim = {"name": name or "rt-%d" % i, "units": 1}
        if cap:
            claim["capacity"] = cap
        st, js = c.request("POST", "/v1/holds", {"owner": "rt", "ttl_ms": 60000,
                                                 "resources": [claim]})
        assert st in (201, 409), (st, js)
        if st == 201:
            holds[i] = js
        return js

    def op(kind):
        def f(i):
            h = holds[i]
            body = {"token": h["token"]}
            if kind == "extend":
                body["ttl_ms"] = 60000
            st, js = c.request("POST", "/v1/holds/%s/%s" % (h["id"], kind), body)
            assert st == 200, (st, js)
        return f

    count("acquire (new implicit lock)", acquire)
    count("extend", op("extend"))
    count("confirm", op("confirm"))
    count("release", op("release"))
    st, js = c.request("PUT", "/v1/resources/rt-stock", {"capacity": 1000000})
    assert st in (200, 201), (st, js)
    count("acquire (existing resource, 1 unit)",
          lambda i: acquire(i, name="rt-stock", cap=0))
    count("release (resource stays)", op("release"))
    acquire(-1, name="rt-busy")
    count("acquire refused (unavailable)", lambda i: acquire(i + 1000, name="rt-busy"))
    c.close()
    srv.stop()


if __name__ == "__main__":
    main()
