"""load.py — a bounded throughput measurement: K holdfastd over one PostgreSQL, N keep-alive
clients looping lock + release, on distinct keys or one contended key; prints pairs/s and
latency. Usage (under with_pg.sh): load.py HOLDFASTD --help; figures: docs/operations.md."""
import argparse
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pgtest  # noqa: E402


def pct(xs, p):
    return xs[min(len(xs) - 1, int(p * len(xs)))] * 1000 if xs else float("nan")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("holdfastd")
    ap.add_argument("--instances", type=int, default=1)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--warmup", type=float, default=2)
    # distinct: client i locks its own key — no contention, only the engine's serialised
    # writes; contended: every client waits for one key — FIFO hand-offs across instances.
    # A pair (acquire + release) is two changes, two events.
    ap.add_argument("--mode", choices=("distinct", "contended"), default="distinct")
    a = ap.parse_args()
    if a.seconds > 120:
        raise SystemExit("--seconds: at most 120 (a bounded measurement)")
    pgtest.need_pg()
    pgtest.raise_fd_limit(4 * a.clients + 256)
    pgtest.reset_schema()
    binary = os.path.abspath(a.holdfastd)
    servers = [pgtest.Holdfastd(binary) for _ in range(a.instances)]
    stop = threading.Event()
    measuring = threading.Event()
    mu = threading.Lock()
    lat, pairs, errors = [], [0], []

    def client(i):
        c = servers[i % len(servers)].client()
        key = "k%d" % i if a.mode == "distinct" else "hot"
        body = {"owner": "c%d" % i, "ttl_ms": 30000, "wait_ms": 0 if a.mode == "distinct" else 10000}
        mine, my_pairs = [], 0
        while not stop.is_set():
            t0 = time.monotonic()
            st, js = c.request("POST", "/v1/locks/" + key, body)
            if st != 201:
                errors.append((st, js))
                break
            st2, js2 = c.request("POST", "/v1/holds/%s/release" % js["id"], {"token": js["token"]})
            if st2 != 200:
                errors.append((st2, js2))
                break
            if measuring.is_set():
                mine.append(time.monotonic() - t0)
                my_pairs += 1
        c.close()
        with mu:
            lat.extend(mine)
            pairs[0] += my_pairs

    ts = [threading.Thread(target=client, args=(i,)) for i in range(a.clients)]
    for t in ts:
        t.start()
    time.sleep(a.warmup)
    cpu0 = os.times()
    measuring.set()
    t0 = time.monotonic()
    time.sleep(a.seconds)
    measuring.clear()
    took = time.monotonic() - t0
    cpu1 = os.times()
    stop.set()
    for t in ts:
        t.join(30)
    st, js = servers[0].client().request("GET", "/v1/events?after=0&limit=1")
    for s in servers:
        s.stop()
    lat.sort()
    load_cpu = (cpu1.user - cpu0.user + cpu1.system - cpu0.system) / took
    print("mode=%s instances=%d clients=%d: %.0f pairs/s (%.0f changes/s), latency of a pair"
          " p50 %.1f ms p99 %.1f ms; %d events in the log; load generator used %.2f CPU" %
          (a.mode, a.instances, a.clients, pairs[0] / took, 2 * pairs[0] / took,
           pct(lat, 0.5), pct(lat, 0.99), js["last_seq"], load_cpu))
    if errors:
        print("errors: %s" % errors[:5], file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
