"""servercost.py — where PostgreSQL's time goes per grant, holdfast beside the peer of the same
scenario: run under with_pg.sh (HF_PG_FSYNC=on for durable commits). Restarts the cluster
with pg_stat_statements, then runs holdfast-bench for S seconds against one holdfastd
(postgres://, workers=W) and against the peer (scenario 1: pg-lock-table, 3:
pg-conditional-update), and prints for each the statements per grant, the server's execution
time per grant, and the commits per grant: what a change costs inside the database, apart
from the round trips and the HTTP in front of it; and the WAL written and flushed per grant
(pg_stat_wal: bytes, records, flushes and their time). --nested also counts the statements
inside holdfast's functions (pg_stat_statements.track = all: which one takes the time);
--waits samples pg_stat_activity every 20 ms during the run and prints what the busy backends
were doing (CPU, or waiting: on a row, on the WAL flush, ...), as backends on average. Each
run also prints the CPU time per grant of PostgreSQL's processes, holdfastd and the bench
(/proc: user + system), and how busy the machine's cores were.
Not a test: a measurement for docs/operations.md.

Usage: servercost.py HOLDFASTD HOLDFAST_BENCH [--scenario 1|3] [--seconds S] [--clients N]
                     [--workers W] [--nested] [--waits] [--top N] [--resources N]
--resources N declares N idle resources first (pgtest.idle_resources)."""
import argparse
import collections
import json
import os
import subprocess
import sys
import threading
import time

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
    pgtest.psql("SELECT pg_stat_reset_shared('wal')")


class Waits:
    """Samples what the busy client backends do (wait_event, or CPU) while a run lasts."""

    def __init__(self, on):
        self.seen = collections.Counter()
        self.n = 0
        self.stop = threading.Event()
        self.t = threading.Thread(target=self.loop) if on else None

    def loop(self):
        while not self.stop.is_set():
            for r in pgtest.psql(
                    "SELECT coalesce(wait_event_type || ':' || wait_event, 'CPU') || '  '"
                    " || left(regexp_replace(query, '\\s+', ' ', 'g'), 40)"
                    " FROM pg_stat_activity WHERE backend_type = 'client backend'"
                    " AND state = 'active' AND pid <> pg_backend_pid()"):
                self.seen[r] += 1
            self.n += 1
            time.sleep(0.02)

    def __enter__(self):
        if self.t:
            self.t.start()
        return self

    def __exit__(self, *exc):
        if self.t:
            self.stop.set()
            self.t.join()
            print("   busy backends, on average over %d samples:" % self.n)
            for k, v in self.seen.most_common(10):
                print("   %8.2f  %s" % (v / max(self.n, 1), k))


TICK = os.sysconf("SC_CLK_TCK")


def proc_cpu(pick):
    """CPU seconds (user + system, and of reaped children: a backend that exited) of the
    processes for which pick(pid, name) holds."""
    total = 0.0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open("/proc/%s/stat" % pid) as f:
                raw = f.read()
        except OSError:
            continue
        if pick(int(pid), raw[raw.index("(") + 1:raw.rindex(")")]):
            total += sum(int(x) for x in raw[raw.rindex(")") + 2:].split()[11:15]) / TICK
    return total


class Cpu:
    """CPU time per grant of PostgreSQL, holdfastd (pid, if any) and the bench over a run."""

    def __init__(self, holdfastd_pid=None):
        self.groups = {"postgres": lambda pid, name: name == "postgres"}
        if holdfastd_pid:
            self.groups["holdfastd"] = lambda pid, name: pid == holdfastd_pid

    @staticmethod
    def busy():
        with open("/proc/stat") as f:
            t = [int(x) for x in f.readline().split()[1:]]
        return sum(t) - t[3] - t[4], sum(t)  # all but idle and iowait, all

    def __enter__(self):
        self.t0 = {k: proc_cpu(f) for k, f in self.groups.items()}
        self.b0, self.own0 = Cpu.busy(), os.times()
        return self

    def __exit__(self, *exc):
        own = os.times()
        b1 = Cpu.busy()
        self.cpu = {k: proc_cpu(f) - self.t0[k] for k, f in self.groups.items()}
        self.cpu["bench"] = (own.children_user - self.own0.children_user +
                             own.children_system - self.own0.children_system)
        self.cores_busy = (b1[0] - self.b0[0]) / max(1, b1[1] - self.b0[1])

    def report(self, n_grants):
        print("   CPU ms per grant: %s; the machine's cores %.0f %% busy" % (
            ", ".join("%s %.3f" % (k, v * 1000 / n_grants) for k, v in self.cpu.items()),
            self.cores_busy * 100))


def report(label, n_grants, top):
    rows = pgtest.psql(
        "SELECT calls, total_exec_time, wal_bytes, toplevel,"
        " left(regexp_replace(query, '\\s+', ' ', 'g'), 70)"
        " FROM pg_stat_statements WHERE query NOT LIKE '%pg_stat%' ORDER BY total_exec_time DESC")
    commits = int(pgtest.psql("SELECT xact_commit FROM pg_stat_database"
                              " WHERE datname = 'postgres'")[0])
    wal = pgtest.psql("SELECT wal_bytes, wal_records, wal_sync, wal_sync_time FROM pg_stat_wal")
    wal_b, wal_r, syncs, sync_ms = (float(x) for x in wal[0].split("|"))
    tops = [r.split("|", 4) for r in rows if r.split("|")[3] == "t"]
    calls = sum(int(r[0]) for r in tops)
    ms = sum(float(r[1]) for r in tops)
    print("%s: %.0f grants; per grant %.2f statements, %.3f ms executing, %.2f commits" %
          (label, n_grants, calls / n_grants, ms / n_grants, commits / n_grants))
    print("   WAL per grant %.0f bytes, %.1f records; %.2f flushes per grant, %.2f ms each" %
          (wal_b / n_grants, wal_r / n_grants, syncs / n_grants, sync_ms / max(syncs, 1)))
    for r in (r.split("|", 4) for r in rows[:top]):
        c, t, wb, lvl, q = r
        print("   %8.2f calls/grant %7.3f ms/call %6.0f WAL B/call %s %s" % (
            int(c) / n_grants, float(t) / max(int(c), 1), float(wb) / max(int(c), 1),
            " " if lvl == "t" else ">", q))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("holdfastd")
    ap.add_argument("bench")
    ap.add_argument("--scenario", type=int, default=1, choices=(1, 3))
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--workers", type=int, default=16)
    ap.add_argument("--nested", action="store_true",
                    help="also the statements inside functions (marked >)")
    ap.add_argument("--waits", action="store_true", help="sample pg_stat_activity")
    ap.add_argument("--top", type=int, default=8, help="statements shown")
    ap.add_argument("--resources", type=int, default=0,
                    help="idle declared resources in the schema before the runs")
    a = ap.parse_args()
    pgtest.need_pg()
    pgtest.raise_fd_limit(4096)
    pgtest.psql("ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'")
    pgtest.psql("ALTER SYSTEM SET track_wal_io_timing = on")
    pgtest.pg_stop()
    pgtest.pg_start()
    if a.nested:  # a setting of the library: known once it is loaded
        pgtest.psql("ALTER SYSTEM SET pg_stat_statements.track = 'all'")
        pgtest.psql("SELECT pg_reload_conf()")
    pgtest.psql("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    pgtest.reset_schema()
    pg = "host=%s user=%s dbname=postgres" % (os.environ["HF_PG_DIR"], os.environ["HF_PG_USER"])
    srv = pgtest.Holdfastd(a.holdfastd,
                           url=os.environ["HF_TEST_ENGINE_URL"] + "&workers=%d" % a.workers)
    try:
        if a.resources:
            pgtest.idle_resources("hf_test", a.resources)
        scen = ["--scenario", str(a.scenario)]
        grants(a.bench, ["--server", "http://127.0.0.1:%d" % srv.port] + scen, 1, a.clients)
        snapshot()
        with Waits(a.waits), Cpu(srv.proc.pid) as cpu:
            n = grants(a.bench, ["--server", "http://127.0.0.1:%d" % srv.port] + scen,
                       a.seconds, a.clients)
        report("holdfast x1 (workers=%d), scenario %d" % (a.workers, a.scenario), n, a.top)
        cpu.report(n)
    finally:
        srv.stop()
    snapshot()
    with Waits(a.waits), Cpu() as cpu:
        n = grants(a.bench, ["--peer", PEER[a.scenario], "--pg", pg] + scen, a.seconds,
                   a.clients)
    report("%s, scenario %d" % (PEER[a.scenario], a.scenario), n, a.top)
    cpu.report(n)


if __name__ == "__main__":
    main()
