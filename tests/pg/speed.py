"""speed.py — issue 10's figures side by side, in one run on one PostgreSQL (run it under
with_pg.sh, with HF_PG_FSYNC=on so that every commit is durable): holdfastd over postgres://
(one instance, and three over the same database with the clients split between them) against
the plain-PostgreSQL patterns of the seeds, by holdfast-bench:
  scenario 1 (uncontended lock): the lock table of seed 004 (--peer pg-lock-table);
  scenario 3 (hot stock): the conditional UPDATE on one row, and SELECT ... FOR UPDATE.
Prints grants/s of each run, the ratios, and the machine's load average around the runs.
Not a test (timing targets live in benchmarks): a measurement, for docs/operations.md.

With --before OLD_HOLDFASTD, another build's holdfastd (one instance, its own schema) runs the
same two scenarios in the same run, for a before/after.

Usage: speed.py HOLDFASTD HOLDFAST_BENCH [--seconds S] [--clients N] [--before OLD_HOLDFASTD]
                [--workers N] [--resources N]
--workers N is the URL parameter workers= of every instance, the --before one's too.
--resources N declares N idle resources in each schema first (pgtest.idle_resources)."""
import argparse
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pgtest  # noqa: E402


def bench(binary, args, seconds, clients):
    cmd = [binary, "--json", "--duration", str(seconds), "--clients", str(clients)] + args
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return p


def collect(procs):
    total = 0.0
    for p in procs:
        out, err = p.communicate(timeout=600)
        if p.returncode != 0:
            raise RuntimeError("holdfast-bench failed (%s): %s %s" %
                               (p.returncode, out.decode()[-400:], err.decode()[-400:]))
        j = json.loads(out)
        if j["checks"]["enabled"] and j["checks"]["violations"]:
            raise RuntimeError("holdfast-bench found violations: %s" % out.decode()[-400:])
        total += j["throughput"]["grants_per_s"]
    return total


def split(n, parts):
    return [n // parts + (1 if i < n % parts else 0) for i in range(parts)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("holdfastd")
    ap.add_argument("bench")
    ap.add_argument("--seconds", type=float, default=8)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--before")
    ap.add_argument("--workers", type=int, help="the workers= URL parameter of both builds")
    ap.add_argument("--resources", type=int, default=0,
                    help="idle declared resources in each schema before the runs")
    a = ap.parse_args()
    pgtest.need_pg()
    pgtest.raise_fd_limit(4096)
    pg = "host=%s user=%s dbname=postgres" % (os.environ["HF_PG_DIR"], os.environ["HF_PG_USER"])
    pgtest.reset_schema()
    url = os.environ["HF_TEST_ENGINE_URL"] + ("&workers=%d" % a.workers if a.workers else "")
    # The second and third instances run only for the x3 runs: every instance over a schema
    # follows its event log (each NOTIFY sets off a read, and readers number the events), so
    # idle ones beside the x1 run would charge it work that the --before instance, alone on
    # its schema, does not pay.
    servers = [pgtest.Holdfastd(a.holdfastd, url=url)]
    old = None
    if a.before:
        old = pgtest.Holdfastd(a.before, url=url.replace("schema=hf_test", "schema=hf_before"))
    if a.resources:
        for schema in ["hf_test"] + (["hf_before"] if old else []):
            pgtest.idle_resources(schema, a.resources)
    res = {}
    load0 = os.getloadavg()
    try:
        for scen, peers in ((1, ["pg-lock-table"]), (3, ["pg-conditional-update",
                                                           "pg-for-update"])):
            for peer in peers:
                res[(scen, peer)] = collect([bench(a.bench, ["--peer", peer, "--pg", pg,
                                                            "--scenario", str(scen)],
                                                   a.seconds, a.clients)])
            if old:
                res[(scen, "before x1")] = collect([bench(
                    a.bench, ["--server", "http://127.0.0.1:%d" % old.port, "--scenario",
                              str(scen)], a.seconds, a.clients)])
            res[(scen, "holdfast x1")] = collect([bench(
                a.bench, ["--server", "http://127.0.0.1:%d" % servers[0].port, "--scenario",
                          str(scen)], a.seconds, a.clients)])
            # Three instances, one workload: the clients split between them. Scenario 3 is
            # one hot product, so the three share its tag (and skip the per-process checks,
            # which assume they are alone on it).
            tag = ["--tag", "hot3-%d" % os.getpid(), "--no-check"] if scen == 3 else []
            servers += [pgtest.Holdfastd(a.holdfastd, url=url) for _ in range(2)]
            procs = []
            for s, n in zip(servers, split(a.clients, 3)):
                procs.append(bench(a.bench, ["--server", "http://127.0.0.1:%d" % s.port,
                                             "--scenario", str(scen), "--seed",
                                             str(s.port)] + tag, a.seconds, n))
            res[(scen, "holdfast x3")] = collect(procs)
            for s in servers[1:]:
                s.stop()
            del servers[1:]
    finally:
        for s in servers + ([old] if old else []):
            s.stop()
    load1 = os.getloadavg()
    print("clients %d, %g s a run, fsync=%s, %d cores; load average %.2f before, %.2f after" %
          (a.clients, a.seconds, os.environ.get("HF_PG_FSYNC"), os.cpu_count(), load0[0],
           load1[0]))
    for (scen, name), v in res.items():
        print("scenario %d  %-22s %8.0f grants/s" % (scen, name, v))
    s1 = res[(1, "pg-lock-table")]
    s3 = res[(3, "pg-conditional-update")]
    print("ratios: s1 x1/lock-table %.2f, x3/lock-table %.2f, x3/x1 %.2f;"
          " s3 x1/conditional %.2f, x3/conditional %.2f, x3/x1 %.2f" %
          (res[(1, "holdfast x1")] / s1, res[(1, "holdfast x3")] / s1,
           res[(1, "holdfast x3")] / res[(1, "holdfast x1")], res[(3, "holdfast x1")] / s3,
           res[(3, "holdfast x3")] / s3, res[(3, "holdfast x3")] / res[(3, "holdfast x1")]))
    if old:
        print("ratios to --before: s1 x1/before %.2f, s3 x1/before %.2f" %
              (res[(1, "holdfast x1")] / res[(1, "before x1")],
               res[(3, "holdfast x1")] / res[(3, "before x1")]))


if __name__ == "__main__":
    main()
