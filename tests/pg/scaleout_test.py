"""scaleout_test.py — 3 holdfastd over one PostgreSQL, hundreds of clients racing for seats and
stock, one instance SIGKILLed mid-run; the event log is replayed: no oversell, no double grant,
fences increasing, nothing acknowledged lost. Usage (under with_pg.sh): THIS.py HOLDFASTD"""
import collections
import http.client
import os
import random
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pgtest  # noqa: E402

CLIENTS = int(os.environ.get("HF_SCALE_CLIENTS", "240"))
SEATS = int(os.environ.get("HF_SCALE_SEATS", "80"))
STOCK = int(os.environ.get("HF_SCALE_STOCK", "400"))
RUN_S = float(os.environ.get("HF_SCALE_RUN_S", "14"))
KILL_AT_S = RUN_S * 0.4
MAX_TTL_MS = 3000
SLOW_S = 8.0  # no answer may take longer than its wait_ms plus this

failures = []


def fail(msg):
    if len(failures) < 50:
        failures.append(msg)
    print("FAIL:", msg, file=sys.stderr, flush=True)


class Ledger:
    """What the servers acknowledged to the clients."""

    def __init__(self):
        self.mu = threading.Lock()
        self.grants = {}      # hold id -> {name: (units, fence)}
        self.grant_at = []    # (monotonic time, instance index)
        self.confirmed = set()
        self.released = set()
        self.stats = collections.Counter()


def acquire_body(rng, owner):
    kind = rng.random()
    ttl = rng.randint(800, MAX_TTL_MS)
    wait = rng.choice([0, 0, 200, 800, 1500])
    if kind < 0.40:  # one seat
        res = [{"name": "seat-%03d" % rng.randrange(SEATS), "units": 1}]
        return "seat", {"owner": owner, "resources": res, "ttl_ms": ttl, "wait_ms": wait}
    if kind < 0.55:  # any of three seats (SKIP LOCKED)
        names = rng.sample(range(SEATS), 3)
        res = [{"name": "seat-%03d" % n, "units": 1} for n in names]
        return "seat", {"owner": owner, "resources": res, "ttl_ms": ttl, "wait_ms": wait,
                        "any": True}
    if kind < 0.85:  # hot stock
        res = [{"name": "stock", "units": rng.randint(1, 4)}]
        return "stock", {"owner": owner, "resources": res, "ttl_ms": ttl, "wait_ms": wait}
    # a seat and stock together, all or nothing; NOWAIT, because a waiter queued on a taken
    # seat would hold up the whole stock queue behind it (FIFO without barging)
    res = [{"name": "stock", "units": 1}, {"name": "seat-%03d" % rng.randrange(SEATS), "units": 1}]
    return "combo", {"owner": owner, "resources": res, "ttl_ms": ttl, "wait_ms": 0}


def client_main(idx, servers, alive, ledger, t0, stop):
    rng = random.Random(1000 + idx)
    owner = "c%d" % idx
    home = idx % len(servers)
    conns = {}

    def call(method, path, body=None, headers=None, wait_ms=0):
        """Sends to the home instance; if it is gone, moves home to a live one and raises."""
        nonlocal home
        c = conns.get(home)
        if c is None:
            c = conns[home] = servers[home].client(timeout=SLOW_S + wait_ms / 1000)
        start = time.monotonic()
        try:
            st, js = c.request(method, path, body, headers)
        except (OSError, http.client.HTTPException):
            if alive[home]:
                if time.monotonic() - start > SLOW_S + wait_ms / 1000 - 0.5:
                    fail("%s %s on live instance %d timed out" % (method, path, home))
                else:
                    fail("%s %s: connection to live instance %d failed" % (method, path, home))
            c.close()
            conns.pop(home, None)
            live = [i for i in range(len(servers)) if alive[i]]
            home = live[idx % len(live)]
            raise
        took = time.monotonic() - start
        if took > SLOW_S + wait_ms / 1000:
            fail("%s %s took %.1f s" % (method, path, took))
        return st, js

    def retrying(method, path, body=None, headers=None, wait_ms=0):
        """Retries once on another instance when the first died under the request."""
        try:
            return call(method, path, body, headers, wait_ms)
        except (OSError, http.client.HTTPException):
            with ledger.mu:
                ledger.stats["retried_after_kill"] += 1
            return call(method, path, body, headers, wait_ms)

    n = 0
    while not stop.is_set():
        n += 1
        kind, body = acquire_body(rng, owner)
        key = "k-%d-%d" % (idx, n)
        try:
            st, js = retrying("POST", "/v1/holds", body, {"Idempotency-Key": key},
                              body["wait_ms"])
        except (OSError, http.client.HTTPException):
            continue
        if st == 201:
            parts = {r["name"]: (r["units"], r["fence"]) for r in js["resources"]}
            with ledger.mu:
                if js["id"] in ledger.grants and not js.get("replayed"):
                    fail("hold id %s granted twice" % js["id"])
                ledger.grants[js["id"]] = parts
                ledger.grant_at.append((time.monotonic() - t0, home))
                ledger.stats["granted_" + kind] += 1
        else:
            code = (js or {}).get("error", {}).get("code")
            if st == 503 or code not in ("unavailable", "wait_timeout", "idempotency_in_flight"):
                fail("acquire %s: %s %s" % (body, st, js))
            with ledger.mu:
                ledger.stats[code or str(st)] += 1
            continue
        hold, token = js["id"], js["token"]
        time.sleep(rng.random() * 0.03)
        r = rng.random()
        confirm_p = 0.04 if kind == "seat" else 0.15
        if r < confirm_p:
            op = "confirm"
        elif r < 0.75:
            op = "release"
        else:
            continue  # left to expire
        try:
            st, js = retrying("POST", "/v1/holds/%s/%s" % (hold, op), {"token": token})
        except (OSError, http.client.HTTPException):
            continue
        if st == 200:
            with ledger.mu:
                (ledger.confirmed if op == "confirm" else ledger.released).add(hold)
        elif st == 410 and op == "release" and js["error"]["code"] == "hold_ended":
            pass  # expired first (short leases), or a retried release that had happened
        elif st == 410 and op == "confirm":
            pass  # the lease ran out before the confirm
        else:
            fail("%s %s: %s %s" % (op, hold, st, js))
    for c in conns.values():
        c.close()


def replay(events, capacity):
    """Checks the log event by event; returns the final held units per resource and the final
    state per hold."""
    held = collections.Counter()
    live = {}  # hold id -> parts (name -> units)
    state = {}
    # Fences increase per resource (docs/semantics.md). Changes on different resources commit
    # side by side, so across resources the log's order need not be the fences' order.
    max_fence = collections.Counter()
    for i, ev in enumerate(events):
        if ev["seq"] != i + 1:
            fail("event log not gap-free: position %d has seq %d" % (i + 1, ev["seq"]))
            return held, state
        t, d = ev["type"], ev["data"]
        if t in ("resource.created", "resource.updated"):
            capacity[d["name"]] = d["capacity"]
        elif t == "hold.granted":
            hid = d["id"]
            if hid in state:
                fail("seq %d: hold %s granted twice" % (ev["seq"], hid))
            parts = {}
            for p in d["resources"]:
                if p["fence"] <= max_fence[p["name"]]:
                    fail("seq %d: fence %d of %s not above %d" %
                         (ev["seq"], p["fence"], p["name"], max_fence[p["name"]]))
                max_fence[p["name"]] = p["fence"]
                held[p["name"]] += p["units"]
                parts[p["name"]] = p["units"]
                if held[p["name"]] > capacity.get(p["name"], 0):
                    fail("seq %d: oversold %s: %d held, capacity %d" %
                         (ev["seq"], p["name"], held[p["name"]], capacity.get(p["name"], 0)))
            live[hid] = parts
            state[hid] = "tentative"
        elif t == "hold.confirmed":
            if state.get(d["id"]) != "tentative":
                fail("seq %d: confirm of a hold in state %s" % (ev["seq"], state.get(d["id"])))
            state[d["id"]] = "confirmed"
        elif t in ("hold.released", "hold.expired"):
            hid = d["id"]
            if hid not in live:
                fail("seq %d: %s of a hold not live" % (ev["seq"], t))
                continue
            if t == "hold.expired" and state[hid] != "tentative":
                fail("seq %d: a %s hold expired" % (ev["seq"], state[hid]))
            for name, units in live.pop(hid).items():
                held[name] -= units
            state[hid] = "released" if t == "hold.released" else "expired"
    return held, state


def main():
    pgtest.need_pg()
    binary = os.path.abspath(sys.argv[1])
    pgtest.raise_fd_limit(4 * CLIENTS + 256)
    pgtest.reset_schema()
    # Three instances started at once: the schema migration runs exactly once.
    servers = [None] * 3
    errs = []

    def start(i):
        try:
            servers[i] = pgtest.Holdfastd(binary)
        except Exception as e:  # noqa: BLE001 — reported below
            errs.append(e)

    ts = [threading.Thread(target=start, args=(i,)) for i in range(3)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if errs:
        for s in servers:
            if s:
                s.kill()
        raise SystemExit("start failed: %s" % errs[0])
    try:
        run(servers)
    finally:
        for s in servers:
            if s.proc.poll() is None:
                rc = s.stop()
                if rc != 0:
                    fail("instance on port %d exited %s" % (s.port, rc))
    if failures:
        print("scaleout_test: %d failure(s)" % len(failures), file=sys.stderr)
        return 1
    print("scaleout_test: ok")
    return 0


def run(servers):
    admin = servers[0].client()
    for i in range(SEATS):
        st, js = admin.request("PUT", "/v1/resources/seat-%03d" % i, {"capacity": 1})
        assert st == 201, (st, js)
    st, js = admin.request("PUT", "/v1/resources/stock", {"capacity": STOCK})
    assert st == 201, (st, js)

    alive = [True] * 3
    ledger = Ledger()
    stop = threading.Event()
    t0 = time.monotonic()
    threads = [threading.Thread(target=client_main, args=(i, servers, alive, ledger, t0, stop),
                                daemon=True) for i in range(CLIENTS)]
    for t in threads:
        t.start()
    time.sleep(KILL_AT_S)
    victim = 2
    alive[victim] = False
    kill_t = time.monotonic() - t0
    servers[victim].proc.kill()  # SIGKILL, mid-run, with requests in flight
    servers[victim].proc.wait()
    servers[victim].log.close()
    print("killed instance %d at %.1f s" % (victim, kill_t), flush=True)
    time.sleep(RUN_S - KILL_AT_S)
    stop.set()
    for t in threads:
        t.join(SLOW_S + 5)
        if t.is_alive():
            fail("a client did not finish")
    end_t = time.monotonic() - t0
    with ledger.mu:
        stats = dict(ledger.stats)
        grants = dict(ledger.grants)
        grant_at = list(ledger.grant_at)
    print("run %.1f s: %d acked grants, %d confirms, %d releases; %s" %
          (end_t, len(grants), len(ledger.confirmed), len(ledger.released), stats), flush=True)

    # The survivors went on: acknowledged grants in every second after the kill.
    for sec in range(int(kill_t) + 1, int(end_t) - 1):
        got = sum(1 for at, _ in grant_at if sec <= at < sec + 1)
        if got == 0:
            fail("no grant acknowledged between %d and %d s (after the kill)" % (sec, sec + 1))
    for i in range(3):
        if i != victim and not any(at > kill_t and h == i for at, h in grant_at):
            fail("instance %d acknowledged nothing after the kill" % i)

    # Let every tentative lease end, so the end state is the confirmed holds only.
    time.sleep(MAX_TTL_MS / 1000 + 0.3)
    survivors = [s for i, s in enumerate(servers) if alive[i]]
    clients = [s.client() for s in survivors]
    final_res = {}
    for name in ["seat-%03d" % i for i in range(SEATS)] + ["stock"]:
        st, js = clients[len(final_res) % len(clients)].request("GET", "/v1/resources/" + name)
        if st != 200:
            fail("GET resource %s: %s %s" % (name, st, js))
            continue
        final_res[name] = js

    # Every instance serves the same, gap-free log.
    logs = [pgtest.all_events(c) for c in clients]
    events, last_seq = logs[0]
    for other, other_last in logs[1:]:
        if other != events or other_last != last_seq:
            fail("instances serve different event logs (%d vs %d events)" %
                 (len(events), len(other)))
    if len(events) != last_seq:
        fail("log has %d events but last_seq %d" % (len(events), last_seq))
    capacity = {}
    held, state = replay(events, capacity)
    print("event log: %d events, identical on %d instances" % (len(events), len(clients)),
          flush=True)

    # Nothing acknowledged is lost.
    granted_in_log = {}
    for ev in events:
        if ev["type"] == "hold.granted":
            granted_in_log[ev["data"]["id"]] = {p["name"]: (p["units"], p["fence"])
                                               for p in ev["data"]["resources"]}
    for hid, parts in grants.items():
        if granted_in_log.get(hid) != parts:
            fail("acknowledged grant %s %s is not in the log as such (%s)" %
                 (hid, parts, granted_in_log.get(hid)))
    for n, hid in enumerate(sorted(ledger.confirmed)):
        st, js = clients[n % len(clients)].request("GET", "/v1/holds/" + hid)
        if st != 200 or js["state"] != "confirmed":
            fail("acknowledged confirm of %s lost: %s %s" % (hid, st, js))
        if state.get(hid) != "confirmed":
            fail("log: acknowledged confirm of %s ends in state %s" % (hid, state.get(hid)))
    for hid in ledger.released:
        if state.get(hid) != "released":
            fail("log: acknowledged release of %s ends in state %s" % (hid, state.get(hid)))

    # The end state: held units are exactly the confirmed holds' (the log's replay agrees), no
    # units held by a hold that does not exist, no double booking of a seat.
    confirmed_units = collections.Counter()
    seat_owners = collections.Counter()
    for hid, parts in granted_in_log.items():
        if state.get(hid) == "confirmed":
            for name, (units, _) in parts.items():
                confirmed_units[name] += units
                if name.startswith("seat-"):
                    seat_owners[name] += 1
    for name, js in final_res.items():
        if js["held"] != confirmed_units[name] or held[name] != confirmed_units[name]:
            fail("%s: server says %d held, log replay %d, confirmed holds %d" %
                 (name, js["held"], held[name], confirmed_units[name]))
        if js["held"] > js["capacity"]:
            fail("%s oversold at the end: %d > %d" % (name, js["held"], js["capacity"]))
    for name, n in seat_owners.items():
        if n > 1:
            fail("%s booked %d times" % (name, n))
    print("end: %d seats booked, %d/%d stock sold" %
          (len(seat_owners), confirmed_units["stock"], STOCK), flush=True)
    for c in clients:
        c.close()
    admin.close()


if __name__ == "__main__":
    sys.exit(main())
