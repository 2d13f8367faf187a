#!/usr/bin/env python3
"""bench/cpu.py — CPU time per lock pair in each of holdfastd's threads, user and kernel, for
several builds side by side.

callgrind (bench/instructions.sh) counts user-space instructions only; what a request costs in
the kernel (system calls, the scheduler's wake-ups between the event loop and the journal
writer) is CPU time, read here from /proc/PID/task/TID/stat (utime, stime) and schedstat
(time on a CPU, in ns). Each build serves a fixed number of scenario-1 pairs (holdfast-bench
--ops) on a fresh store on tmpfs (durable journal, fsync cheap there), after a warm-up; the
builds of a round run one after the other, rounds repeated, and the median per thread is
printed. CPU time moves less with the machine's load than throughput does, but it moves
(caches, frequency): compare builds within one run.

    bench/cpu.py --bench build-bench/src/bench/holdfast-bench [--pairs 20000] [--clients 32] \\
        [--rounds 3] before=/path/to/holdfastd after=/path/to/holdfastd
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from latency import Holdfastd  # noqa: E402

TICK_US = 1e6 / os.sysconf("SC_CLK_TCK")


def thread_times(pid):
    """{thread name: (user us, kernel us, on-CPU us)}, threads of one name summed."""
    out = {}
    for tid in os.listdir("/proc/%d/task" % pid):
        base = "/proc/%d/task/%s/" % (pid, tid)
        try:
            with open(base + "comm") as f:
                name = f.read().strip()
            with open(base + "stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(base + "schedstat") as f:
                on_cpu_ns = int(f.read().split()[0])
        except FileNotFoundError:
            continue  # the thread ended meanwhile
        name = "loop" if tid == str(pid) else name
        u, k, c = out.get(name, (0.0, 0.0, 0.0))
        # stat's fields after the name: state is [0], utime [11], stime [12]
        out[name] = (u + int(fields[11]) * TICK_US, k + int(fields[12]) * TICK_US,
                     c + on_cpu_ns / 1e3)
    return out


def bench(args, url, pairs):
    cmd = [args.bench, "--server", url, "--scenario", "1", "--clients", str(args.clients),
           "--ops", str(pairs), "--no-check", "--seed", "42"]
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)


def measure(args, binary, directory, tag):
    store = os.path.join(directory, tag + ".db")
    server = Holdfastd(binary, store, os.path.join(directory, tag + ".log"))
    try:
        bench(args, server.url, args.warmup)
        before = thread_times(server.proc.pid)
        bench(args, server.url, args.pairs)
        after = thread_times(server.proc.pid)
    finally:
        server.stop()
    return {name: tuple((a - b) / args.pairs for a, b in zip(after[name], before.get(name, (0, 0, 0))))
            for name in after}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bench", required=True, help="holdfast-bench")
    ap.add_argument("--pairs", type=int, default=20000)
    ap.add_argument("--warmup", type=int, default=2000)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("builds", nargs="+", help="NAME=PATH/TO/holdfastd")
    args = ap.parse_args()
    builds = [b.split("=", 1) for b in args.builds]
    results = {name: [] for name, _ in builds}
    with tempfile.TemporaryDirectory(dir="/dev/shm", prefix="hf-cpu.") as directory:
        for r in range(args.rounds):
            for name, binary in builds:
                results[name].append(measure(args, binary, directory, "%s-%d" % (name, r)))
    print("scenario 1, %d clients, %d pairs a run, %d rounds; CPU us per pair (median): "
          "user + kernel, and on-CPU from schedstat" % (args.clients, args.pairs, args.rounds))
    base_total = None
    for name, _ in builds:
        threads = sorted({t for run in results[name] for t in run})
        parts, total = [], 0.0
        for t in threads:
            med = [statistics.median(run.get(t, (0, 0, 0))[i] for run in results[name])
                   for i in range(3)]
            total += med[2]
            parts.append("%s %.1f + %.1f (%.1f)" % (t, med[0], med[1], med[2]))
        base_total = base_total or total
        print("%s: %s; on-CPU total %.1f us, %.2fx the first" % (name, "; ".join(parts), total,
                                                                 total / base_total))


if __name__ == "__main__":
    main()
