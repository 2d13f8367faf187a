#!/usr/bin/env python3
"""scale.py — issue 14's scale figures for one embedded holdfastd: a store of N live holds
(1,000,000) with W parked waiters (10,000) beside it, against the same server on an empty
store; memory per hold and per waiter, the start-up time of the large store, and scenario 1
(uncontended lock + release over HTTP) on both, as a ratio. Python 3 standard library.

  bench/scale.py BUILD/src/server/holdfastd BUILD/src/bench/holdfast-bench \
      [--holds N] [--waiters W] [--seconds S] [--dir DIR]

The store is filled in-process on tmpfs (holdfast-bench --fill, 64 threads: no fsync to wait
for), closed, and moved to DIR (a disk; default a new directory under /var/tmp): the server
that is measured keeps its journal on that disk, durable as in production. Memory is the
server's resident set (VmRSS) read from /proc. Not a test: a measurement for
docs/benchmarks.md ("Scale"); it prints a Markdown table and the commands it ran."""
import argparse
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS for %d" % pid)


def http(port, method, path, body=None):
    c = socket.create_connection(("127.0.0.1", port), timeout=600)
    data = json.dumps(body).encode() if body is not None else b""
    c.sendall(("%s %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               "Content-Length: %d\r\nConnection: close\r\n\r\n" % (method, path, len(data))).encode()
              + data)
    buf = b""
    while True:
        chunk = c.recv(65536)
        if not chunk:
            break
        buf += chunk
    c.close()
    head, _, text = buf.partition(b"\r\n\r\n")
    status = int(head.split()[1])
    return status, json.loads(text) if text.strip() else None


class Server:
    def __init__(self, binary, store, log, limits):
        self.log = open(log, "wb")
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        cmd = [binary, "--listen", "127.0.0.1:%d" % self.port, "--engine", "file:" + store,
               "--log-level", "warn"] + limits
        t0 = time.time()
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=self.log)
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError("holdfastd exited: see %s" % log)
            try:
                if http(self.port, "GET", "/readyz")[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(0.05)
        self.start_s = time.time() - t0

    def rss(self):
        return rss_kib(self.proc.pid)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(120)
        self.log.close()


def bench_s1(bench, port, seconds):
    cmd = [bench, "--server", "http://127.0.0.1:%d" % port, "--scenario", "1", "--clients", "32",
           "--duration", str(seconds), "--seed", "42", "--json"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    j = json.loads(out)
    if not j["pass"]:
        raise RuntimeError("scenario 1 failed its checks: %s" % out[-500:])
    return j["throughput"]["grants_per_s"], " ".join(cmd[:1] + ["--server", "URL"] + cmd[3:])


def park(port, n, name):
    """n parked acquires of `name` (held by someone else), each on its own connection."""
    body = json.dumps({"owner": "scale-waiter", "resources": [{"name": name, "capacity": 1}],
                       "ttl_ms": 60000, "wait_ms": 3600000}).encode()
    req = ("POST /v1/holds HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
           "Content-Length: %d\r\n\r\n" % len(body)).encode() + body
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=30)
        s.sendall(req)
        socks.append(s)
    deadline = time.time() + 300
    while True:
        st, r = http(port, "GET", "/v1/resources/" + name)
        if st == 200 and r.get("waiters", 0) >= n:
            return socks
        if time.time() > deadline:
            raise RuntimeError("only %s of %d waiters parked" % (r, n))
        time.sleep(0.2)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("holdfastd")
    ap.add_argument("bench")
    ap.add_argument("--holds", type=int, default=1000000)
    ap.add_argument("--waiters", type=int, default=10000)
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--dir")
    a = ap.parse_args()
    want = a.waiters + 2000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < want:
        sys.exit("scale.py: %d waiters need %d file descriptors; the hard limit is %d" %
                 (a.waiters, want, hard))
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), hard))
    work = a.dir or tempfile.mkdtemp(prefix="hf-scale-", dir="/var/tmp")
    shm = tempfile.mkdtemp(prefix="hf-scale-", dir="/dev/shm")
    room = str(a.holds + 100000)
    limits = ["--max-holds", room, "--max-resources", room, "--max-waiters", str(a.waiters + 1000),
              "--max-connections", str(a.waiters + 1000)]
    rows = []
    try:
        # 1. the empty store
        empty = Server(a.holdfastd, os.path.join(work, "empty.db"), os.path.join(work, "empty.log"),
                       limits)
        rss_empty = empty.rss()
        s1_empty, s1_cmd = bench_s1(a.bench, empty.port, a.seconds)
        empty.stop()
        # 2. the large store, filled on tmpfs and moved to the disk
        t0 = time.time()
        subprocess.run([a.bench, "--engine", "file:" + os.path.join(shm, "big.db"), "--fill",
                        str(a.holds), "--clients", "64"], check=True)
        fill_s = time.time() - t0
        for f in os.listdir(shm):
            shutil.move(os.path.join(shm, f), os.path.join(work, f))
        store_mb = os.path.getsize(os.path.join(work, "big.db")) / 1e6
        big = Server(a.holdfastd, os.path.join(work, "big.db"), os.path.join(work, "big.log"), limits)
        rss_holds = big.rss()
        # 3. the waiters, parked on a lock someone holds
        st, h = http(big.port, "POST", "/v1/holds",
                     {"owner": "scale", "resources": [{"name": "scale-hot", "capacity": 1}],
                      "ttl_ms": 3600000})
        assert st == 201, (st, h)
        socks = park(big.port, a.waiters, "scale-hot")
        time.sleep(1)
        rss_waiters = big.rss()
        s1_full, _ = bench_s1(a.bench, big.port, a.seconds)
        for s in socks:
            s.close()
        big.stop()
    finally:
        shutil.rmtree(shm, ignore_errors=True)
    per_hold = (rss_holds - rss_empty) * 1024 / a.holds
    per_waiter = (rss_waiters - rss_holds) * 1024 / a.waiters
    load = open("/proc/loadavg").read().split()[:3]
    print("| | figure |")
    print("| --- | ---: |")
    print("| live holds in the store | %s |" % format(a.holds, ","))
    print("| filled in-process on tmpfs (64 threads) | %.0f s (%s holds/s) |" %
          (fill_s, format(int(a.holds / fill_s), ",")))
    print("| the store on disk | %.0f MB (%.0f bytes per hold, its events included) |" %
          (store_mb, store_mb * 1e6 / a.holds))
    print("| holdfastd start-up on it (open to ready) | %.1f s (empty store: %.2f s) |" %
          (big.start_s, empty.start_s))
    print("| resident memory, empty store | %.1f MiB |" % (rss_empty / 1024))
    print("| resident memory with the holds | %.1f MiB: **%.0f bytes per live hold** |" %
          (rss_holds / 1024, per_hold))
    print("| parked waiters (one connection each) | %s: **%.0f bytes per waiter** (its connection "
          "and request included) |" % (format(a.waiters, ","), per_waiter))
    print("| scenario 1 over HTTP, empty store | %s grants/s |" % format(int(s1_empty), ","))
    print("| scenario 1 over HTTP, with the holds and the waiters | %s grants/s: **%.2f× the empty "
          "store's** |" % (format(int(s1_full), ","), s1_full / s1_empty))
    print("| load average after | %s |" % " ".join(load))
    print()
    print("Commands: `bench/scale.py --holds %d --waiters %d --seconds %g`; inside it "
          "`holdfast-bench --engine file:TMPFS/big.db --fill %d --clients 64` and `%s`." %
          (a.holds, a.waiters, a.seconds, a.holds, s1_cmd))
    if not a.dir:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
