#!/usr/bin/env python3
"""bench/ab.py — several holdfastd builds side by side in one run, against Redis with
appendfsync always: each build on its own fresh store on disk (file:, durable), the runs of a
round interleaved (every build, then the peer), rounds repeated; prints the grants/s and the
acquire p50 of every run and the median ratio of each build to the first and to the peer.

    bench/ab.py --bench BUILD/src/bench/holdfast-bench \
        before=OLD/src/server/holdfastd after=BUILD/src/server/holdfastd \
        [--scenario 1] [--clients 32] [--duration 5] [--rounds 3] [--dir /tmp]

The machine's load moves absolute figures; compare within a round. --clients 1 gives the
lone caller's latency (the acquire p50 column).
"""
import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "server"))
from hfserver import free_port  # noqa: E402
from latency import Holdfastd  # noqa: E402  (a holdfastd on a fresh file: store, ready)


def wait_port(port, seconds=10):
    """Waits for redis-server to listen."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"ab.py: nothing listens on port {port}")


def run_bench(args, target):
    cmd = [args.bench, "--clients", str(args.clients), "--duration", str(args.duration),
           "--seed", "42", "--json", "--scenario", str(args.scenario)] + target
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    d = json.loads(out)
    if d.get("checks", {}).get("violations"):
        sys.exit(f"ab.py: the checker found violations: {' '.join(cmd)}")
    return d["throughput"]["grants_per_s"], d["latency_ms"]["acquire"]["p50"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bench", required=True)
    ap.add_argument("builds", nargs="+", help="NAME=PATH/TO/holdfastd (the first is the base)")
    ap.add_argument("--scenario", type=int, default=1, choices=(1, 3))
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--duration", type=float, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dir", default="/tmp", help="where the stores go (a disk, for fsync)")
    args = ap.parse_args()
    builds = [b.split("=", 1) for b in args.builds]
    tmp = tempfile.mkdtemp(prefix="hf-ab.", dir=args.dir)
    servers, redis = {}, None
    try:
        for name, path in builds:
            os.makedirs(f"{tmp}/{name}")
            servers[name] = Holdfastd(path, f"{tmp}/{name}/store.db", f"{tmp}/{name}/log")
        rport = free_port()
        os.makedirs(f"{tmp}/aof")
        redis = subprocess.Popen(
            ["redis-server", "--port", str(rport), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes", "--appendfsync", "always", "--dir", f"{tmp}/aof"],
            stdout=subprocess.DEVNULL)
        wait_port(rport)
        peer = ["--peer", "redis-setnx" if args.scenario == 1 else "redis-decrby",
                "--redis", f"127.0.0.1:{rport}"]
        rows = []
        print(f"scenario {args.scenario}, {args.clients} clients, {args.duration} s a run; "
              "grants/s and acquire p50 (ms)")
        for r in range(args.rounds):
            row = {"load": os.getloadavg()[0]}
            for name, _ in builds:
                row[name] = run_bench(args, ["--server", servers[name].url])
            row["redis-aof"] = run_bench(args, peer)
            rows.append(row)
            print(f"round {r + 1} (load {row['load']:.2f}): " + " | ".join(
                f"{k} {v[0]:,.0f} {v[1]:.3f}" for k, v in row.items() if k != "load"))
        base = builds[0][0]
        for name, _ in builds:
            to_base = statistics.median(row[name][0] / row[base][0] for row in rows)
            to_peer = statistics.median(row[name][0] / row["redis-aof"][0] for row in rows)
            p50 = statistics.median(row[name][1] for row in rows)
            print(f"{name}: median ratio to {base} {to_base:.2f}, to Redis appendfsync "
                  f"always {to_peer:.2f}; acquire p50 {p50:.3f} ms")
        print(f"redis-aof: acquire p50 {statistics.median(r['redis-aof'][1] for r in rows):.3f} ms")
    finally:
        for srv in servers.values():
            srv.stop()
        if redis:
            redis.terminate()
            redis.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
