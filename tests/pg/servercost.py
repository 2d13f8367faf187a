"""servercost.py — where PostgreSQL's time goes per grant, holdfast beside the peer of the same
scenario: run under with_pg.sh (HF_PG_FSYNC=on for durable commits). Restarts the cluster
with pg_stat_statements, then runs holdfast-bench for S seconds against one holdfastd
(postgres://, workers=W) and against the peer (scenario 1: pg-lock-table, 3:
pg-conditional-update), and prints for each the statements per grant, the server's execution
time per grant, and the commits per grant: what a change costs inside the database, apart
from the round trips and the HTTP in front of it. Not a test: a measurement for
docs/operations.md.

Usage: servercost.py HOLDFASTD HOLDFAST_BENCH [--scenario 1|3] [--seconds S] [--clients N]
                     [--workers W]"""
import argparse
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pgtest  # noqa: E402

PEER = {1: "pg-lock-table", 3: "pg-conditional-update"}


def grants(bench, args, seconds, clients):
    out = subprocess.run([bench, "--json", "--duration", str(seconds), "--clients",
                          str(clients)] + args, capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise RuntimeError("holdfast-bench failed: %s %s" % (out.stdout[-400:], out.stderr[-400:]))
    j = json.loads(out.stdout)
    return j["throughput"]["grants_per_s"] * seconds


def snapshot():
    pgtest.psql("SELECT pg_stat_statements_reset()")
    pgtest.psql("SELECT pg_stat_reset()")


def report(label, n_grants):
    rows = pgtest.psql(
        "SELECT calls, total_exec_time, left(regexp_replace(query, '\\s+', ' ', 'g'), 70)"
        " FROM pg_stat_statements WHERE query NOT LIKE '%pg_stat%' ORDER BY total_exec_time DESC")
    commits = int(pgtest.psql("SELECT xact_commit FROM pg_stat_database"
                              " WHERE datname = 'postgres'")[0])
    calls = sum(int(r.split("|")[0]) for r in rows)
    ms = sum(float(r.split("|")[1]) for r in rows)
    print("%s: %.0f grants; per grant %.2f statements, %.3f ms executing, %.2f commits" %
          (label, n_grants, calls / n_grants, ms / n_grants, commits / n_grants))
    for r in rows[:8]:
        c, t, q = r.split("|", 2)
        print("   %8.2f calls/grant %7.3f ms/call  %s" % (int(c) / n_grants,
                                                          float(t) / max(int(c), 1), q))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("holdfastd")
    ap.add_argument("bench")
    ap.add_argument("--scenario", type=int, default=1, choices=(1, 3))
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--workers", type=int, default=16)
    a = ap.parse_args()
    pgtest.need_pg()
    pgtest.raise_fd_limit(4096)
    pgtest.psql("ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'")
    pgtest.pg_stop()
    pgtest.pg_start()
    pgtest.psql("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    pgtest.reset_schema()
    pg = "host=%s user=%s dbname=postgres" % (os.environ["HF_PG_DIR"], os.environ["HF_PG_USER"])
    srv = pgtest.Holdfastd(a.holdfastd,
                           url=os.environ["HF_TEST_ENGINE_URL"] + "&workers=%d" % a.workers)
    try:
        scen = ["--scenario", str(a.scenario)]
        grants(a.bench, ["--server", "http://127.0.0.1:%d" % srv.port] + scen, 1, a.clients)
        snapshot()
        n = grants(a.bench, ["--server", "http://127.0.0.1:%d" % srv.port] + scen, a.seconds,
                   a.clients)
        report("holdfast x1 (workers=%d), scenario %d" % (a.workers, a.scenario), n)
    finally:
        srv.stop()
    snapshot()
    n = grants(a.bench, ["--peer", PEER[a.scenario], "--pg", pg] + scen, a.seconds, a.clients)
    report("%s, scenario %d" % (PEER[a.scenario], a.scenario), n)


if __name__ == "__main__":
    main()
