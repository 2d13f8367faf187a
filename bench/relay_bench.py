#!/usr/bin/env python3
"""relay_bench.py — relay throughput to RabbitMQ and Redis Streams against a plain publisher.

Starts a private RabbitMQ and Redis (tests/relay/brokers.py) and a holdfastd on a file: store,
writes EVENTS events through it (holds on one or two of 50 resources, taken and released),
stops it, then times `holdfast --engine file:STORE relay --until-seq LAST` to each broker
(every event is read, published, confirmed and checkpointed) and, as the yardstick,
holdfast-relay-baseline publishing the same number of messages of the same average size with
the same client code and confirms per batch, without the store. Prints a markdown table.

usage: bench/relay_bench.py BUILD_DIR [EVENTS] [BATCH...]
       (BUILD_DIR with holdfast, holdfastd and holdfast-relay-baseline built; defaults 20000,
       batches 100 1000)
"""
import datetime
import http.client
import json
import os
import subprocess
import shutil
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "relay"))
sys.path.insert(0, os.path.join(ROOT, "tests", "server"))
import brokers  # noqa: E402
import hfserver  # noqa: E402


def write_events(srv, n):
    c = http.client.HTTPConnection("127.0.0.1", srv.port)

    def call(method, path, body):
        c.request(method, path, json.dumps(body))
        r = c.getresponse()
        return r.status, json.loads(r.read())

    names = ["bench.r%d" % i for i in range(50)]
    for name in names:
        call("PUT", "/v1/resources/" + name, {"capacity": 4})
    i = 0
    while True:
        claims = [{"name": names[i % 50]}] + ([{"name": names[(i * 7 + 3) % 50]}] if i % 3 == 0
                                              and (i * 7 + 3) % 50 != i % 50 else [])
        st, hold = call("POST", "/v1/holds", {"owner": "bench", "resources": claims,
                                             "ttl_ms": 600000})
        assert st == 201, hold
        call("POST", "/v1/holds/%s/release" % hold["id"], {"token": hold["token"]})
        i += 1
        if i % 200 == 0:
            c.request("GET", "/v1/events?after=0&limit=1")
            last = json.loads(c.getresponse().read())["last_seq"]
            if last >= n:
                return last


def relay_once(build, store, dest, name, last, batch, extra):
    hf = os.path.join(build, "src", "cli", "holdfast")
    r = subprocess.run([hf, "--engine", "file:" + store, "relay", "--to", dest, "--name", name,
                        "--batch", str(batch), "--until-seq", str(last)] + extra,
                       capture_output=True, text=True, timeout=3600)
    assert r.returncode == 0, r.stderr
    # From its msg=resume to its msg=stop: the relaying, without the process start, the
    # store's open (replaying its journal) and the lease.
    stamps = {}
    for line in r.stderr.splitlines():
        for what in ("msg=resume", "msg=stop"):
            if what in line:
                ts = line.split()[0][len("ts="):].rstrip("Z")
                stamps[what] = datetime.datetime.fromisoformat(ts)
    dt = (stamps["msg=stop"] - stamps["msg=resume"]).total_seconds()
    delivered = int(r.stderr.rsplit("delivered=", 1)[1].split()[0])
    return dt, delivered


def baseline(build, dest, target, n, batch, size):
    b = os.path.join(build, "src", "relay", "holdfast-relay-baseline")
    r = subprocess.run([b, dest, target, str(n), str(batch), str(size)], capture_output=True,
                       text=True, timeout=3600)
    assert r.returncode == 0, r.stderr
    return float(r.stdout.split(": ")[1].split()[0])


def main():
    build = os.path.abspath(sys.argv[1])
    events = int(sys.argv[2]) if len(sys.argv) > 2 else 20000
    batches = [int(b) for b in sys.argv[3:]] or [100, 1000]
    hfserver.BIN = os.path.join(build, "src", "server", "holdfastd")
    hf = os.path.join(build, "src", "cli", "holdfast")
    rabbit, redis = brokers.Rabbit(), brokers.Redis()
    srv, work = None, None
    try:
        work = tempfile.mkdtemp(prefix="hf-relay-bench-")
        srv = hfserver.Server(store_dir=work)  # kept after stop: the relays read its store
        last = write_events(srv, events)
        store = srv.db
        _, body, _ = srv.get("/v1/events?after=0&limit=1000")
        size = sum(len(json.dumps(e, separators=(",", ":"))) for e in body["events"]) \
            // len(body["events"])
        srv.stop()
        subprocess.run([hf, "consume", "--from", rabbit.url, "--queue", "bench",
                        "--declare-only"], check=True, capture_output=True)
        subprocess.run([hf, "consume", "--from", rabbit.url, "--exchange", "baseline",
                        "--queue", "baseline", "--declare-only"], check=True,
                       capture_output=True)
        print("%d events (seq 1..%d), about %d bytes of JSON each\n" % (last, last, size))
        print("| destination | batch | relay events/s | relay messages/s | plain publisher "
              "messages/s | relay / plain |")
        print("| --- | --- | --- | --- | --- | --- |")
        for dest, label, target in ((rabbit.url, "RabbitMQ (confirms)", "baseline"),
                                    (redis.url, "Redis Streams (8 partitions)", "baseline:")):
            for batch in batches:
                name = "bench-%s-%d" % (label.split()[0].lower(), batch)
                dt, msgs = relay_once(build, store, dest, name, last, batch, [])
                plain = baseline(build, dest, target, msgs, batch, size)
                print("| %s | %d | %.0f | %.0f | %.0f | %.2f |" % (
                    label, batch, last / dt, msgs / dt, plain, (msgs / dt) / plain), flush=True)
    finally:
        if srv and srv.proc.poll() is None:
            srv.kill()
        rabbit.close()
        redis.close()
        if work:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
