#!/usr/bin/env python3
"""bench/writer.py — how busy the embedded journal's writer thread is while holdfastd serves
one scenario over HTTP on a store on disk: commits (fdatasync calls, timed by perf's syscall
tracepoints), requests per commit, the writer's CPU per commit (schedstat), the time in
fdatasync, and the share of the run the writer spent on either. A writer busy for nearly the
whole run is the bound of the run: requests can only go faster by cheaper commits, shorter
fsyncs or more requests per commit.

    bench/writer.py --bench build-bench/src/bench/holdfast-bench \\
        [--scenario 1] [--clients 32] [--duration 5] [--rounds 3] [--dir /var/tmp] \\
        build-bench/src/server/holdfastd

Needs perf with the syscall tracepoints (root, or perf_event_paranoid allowing it).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cpu import thread_times  # noqa: E402  (per thread: user, kernel, on-CPU µs)
from latency import FsyncTrace, Holdfastd  # noqa: E402


def bench(args, url, duration, out=subprocess.DEVNULL):
    return subprocess.run([args.bench, "--server", url, "--scenario", str(args.scenario),
                           "--clients", str(args.clients), "--duration", str(duration),
                           "--no-check", "--seed", "42", "--json"],
                          stdout=out, stderr=subprocess.DEVNULL, check=False)


def one_round(args, directory, r):
    server = Holdfastd(args.holdfastd, os.path.join(directory, "s%d.db" % r),
                       os.path.join(directory, "log"))
    try:
        pid = server.proc.pid
        bench(args, server.url, 2)  # warm-up
        trace = FsyncTrace(pid, directory)
        before, t0 = thread_times(pid), time.monotonic()
        run = json.loads(bench(args, server.url, args.duration, subprocess.PIPE).stdout)
        after, t1 = thread_times(pid), time.monotonic()
        fsyncs = trace.stop()
    finally:
        server.stop()
    if not fsyncs:
        raise RuntimeError("perf could not trace fdatasync")
    if "hf-writer" not in after:
        raise RuntimeError("no hf-writer thread in holdfastd %d" % pid)
    writer_s = (after["hf-writer"][2] - before["hf-writer"][2]) / 1e6
    loop_s = (after["loop"][2] - before["loop"][2]) / 1e6
    commits, requests = len(fsyncs), run["counts"]["requests"]
    return {
        "grants_per_s": run["throughput"]["grants_per_s"],
        "requests_per_commit": requests / commits,
        "commits_per_s": commits / (t1 - t0),
        "writer_cpu_ms_per_commit": writer_s / commits * 1e3,
        "fsync_ms_p50": statistics.median(fsyncs),
        "writer_busy": (writer_s + sum(fsyncs) / 1e3) / (t1 - t0),
        "loop_cpu_us_per_request": loop_s / requests * 1e6,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bench", required=True, help="holdfast-bench")
    ap.add_argument("--scenario", type=int, default=1, choices=(1, 3))
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--duration", type=float, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dir", default="/var/tmp", help="where the store goes (a disk, for fsync)")
    ap.add_argument("holdfastd")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="hf-writer.", dir=args.dir) as directory:
        rounds = [one_round(args, directory, r) for r in range(args.rounds)]
    with open("/proc/loadavg") as f:
        load = f.read().split()[0]
    print("scenario %d, %d clients, %.0f s a run, %d rounds (load average %s at the end); "
          "per round:" % (args.scenario, args.clients, args.duration, args.rounds, load))
    for key in rounds[0]:
        print("  %-26s %s" % (key, ", ".join(("%.0f" if r[key] >= 100 else "%.3g") % r[key]
                                             for r in rounds)))


if __name__ == "__main__":
    main()
