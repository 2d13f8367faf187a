#!/usr/bin/env python3
"""report.py — turns the results of bench/run.sh into docs/benchmarks.md and its SVG charts.

    report.py RESULTS_DIR DOC_PATH CHARTS_DIR

Reads machine.txt, pg_test_fsync.txt, the baselines and one holdfast-bench JSON report per
run; fills the tables of bench/benchmarks.md.in; draws two bar charts as plain SVG (standard
library only). Every number written comes from those files.
"""
import html
import json
import math
import os
import re
import sys

RES, DOC, CHARTS = sys.argv[1], sys.argv[2], sys.argv[3]
HERE = os.path.dirname(os.path.abspath(__file__))


def read(name):
    with open(os.path.join(RES, name)) as f:
        return f.read()


def kv(text):
    out = {}
    for line in text.splitlines():
        if "=" in line:
            k, v = line.split("=", 1)
            out[k.strip()] = v.strip()
    return out


machine = kv(read("machine.txt"))
runs = {}
for f in sorted(os.listdir(RES)):
    if f.endswith(".json") and f != "latency.json":  # latency.json: bench/latency.py's own
        try:
            runs[f[:-5]] = json.loads(read(f))
        except ValueError:
            pass  # a failed run: its .err says why; it shows as missing below
commands = {}
loads = {}
cpu = {}  # name -> (server cores busy or None, bench cores busy)
if os.path.exists(os.path.join(RES, "commands.tsv")):
    for line in read("commands.tsv").splitlines():
        name, load, scpu, bcpu, others, busy, hot, attempts, cmd = line.split("\t")
        commands[name] = cmd
        loads[name] = "%s, others %s cores, attempt %s" % (load, others, attempts)
        cpu[name] = (None if scpu == "-" else float(scpu), float(bcpu), float(others), float(busy),
                     None if hot == "-" else float(hot))


def cpu_cell(name):
    if name not in cpu:
        return "—"
    s, b, o = cpu[name][:3]
    return ("{:.2f}".format(s) if s is not None else "in-proc.") + " / {:.2f} / {:.2f}".format(b, o)


def fmt(x, digits=0):
    if x is None:
        return "—"
    if digits == 0:
        return "{:,.0f}".format(x)
    return "{:,.{}f}".format(x, digits)


def ms(x):
    if x is None:
        return "—"
    return "{:.3f}".format(x) if x < 1 else "{:.2f}".format(x) if x < 10 else "{:.1f}".format(x)


def pct(x):
    return "—" if x is None else "{:.1f}%".format(100 * x)


def get(name, *path):
    r = runs.get(name)
    for p in path:
        if r is None:
            return None
        r = r.get(p)
    return r


def grants(name):
    return get(name, "throughput", "grants_per_s")


def requests(name):
    return get(name, "throughput", "requests_per_s")


def per_grant(name):
    """Requests (commands, calls) a grant took: what the scenario's flow asks of each side."""
    return ratio(requests(name), grants(name))


def status(name):
    r = runs.get(name)
    if r is None:
        return "**run failed**"
    if not r["checks"]["enabled"]:
        return "not checked"
    return "pass" if r["pass"] else "**FAIL ({} violations)**".format(r["checks"]["violations"])


SCEN = {1: "1 uncontended lock", 2: "2 hot lock", 3: "3 hot stock", 4: "4 seat race",
        5: "5 saga booking"}


def holdfast_table():
    rows = ["| scenario | holdfast via | grants/s | requests/s | acquire p50 | p90 | p99 | p99.9 | max "
            "| success | conflict | timeout | expiry | CPU server / bench / others | checks |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for s in range(1, 6):
        variants = [("HTTP (holdfastd)", "holdfast-http-s%d" % s),
                    ("library (file:)", "holdfast-engine-s%d" % s)]
        if s in (1, 3):
            variants += [("HTTP, store on tmpfs", "holdfast-http-tmpfs-s%d" % s),
                         ("library, store on tmpfs", "holdfast-engine-tmpfs-s%d" % s)]
        for via, name in variants:
            lat = get(name, "latency_ms", "acquire") or {}
            rt = get(name, "rates") or {}
            rows.append("| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |".format(
                SCEN[s], via, fmt(grants(name)), fmt(get(name, "throughput", "requests_per_s")),
                ms(lat.get("p50")), ms(lat.get("p90")), ms(lat.get("p99")), ms(lat.get("p999")),
                ms(lat.get("max")), pct(rt.get("success")), pct(rt.get("conflict")),
                pct(rt.get("timeout")), pct(rt.get("expiry")), cpu_cell(name), status(name)))
    return "\n".join(rows)


def handoff_table():
    rows = ["| system | grants/s | hand-off p50 | hand-off p99 | mean wait | max wait | max/mean | Jain index | checks |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for label, name in (("holdfast HTTP, FIFO wait", "holdfast-http-s2"),
                        ("holdfast library, FIFO wait", "holdfast-engine-s2"),
                        ("redis SET NX PX, retry every 1 ms", "redis-setnx-s2"),
                        ("redis lock → GET → SET → unlock", "redis-lock-rw-s2"),
                        ("redis (AOF always) SET NX PX", "redis-aof-setnx-s2")):
        h = get(name, "latency_ms", "handoff") or {}
        f = get(name, "fairness") or {}
        mean, mx = f.get("mean_wait_ms"), f.get("max_wait_ms")
        rows.append("| {} | {} | {} | {} | {} | {} | {} | {} | {} |".format(
            label, fmt(grants(name)), ms(h.get("p50")), ms(h.get("p99")), ms(mean), ms(mx),
            fmt(mx / mean, 1) if mean else "—",
            fmt(f.get("jain"), 3) if f.get("jain") is not None else "—", status(name)))
    return "\n".join(rows)


# (scenario, peer label, peer run) compared with holdfast over HTTP and through the library
PAIRS = [
    (1, "redis `SET NX PX` + Lua release", "redis-setnx-s1"),
    (1, "redis-aof: the same, `appendfsync always`", "redis-aof-setnx-s1"),
    (1, "redis lock → GET → SET → unlock", "redis-lock-rw-s1"),
    (1, "redis-aof: lock → GET → SET → unlock", "redis-aof-lock-rw-s1"),
    (2, "redis `SET NX PX`, retry 1 ms", "redis-setnx-s2"),
    (2, "redis-aof: the same", "redis-aof-setnx-s2"),
    (2, "redis lock → GET → SET → unlock", "redis-lock-rw-s2"),
    (2, "redis-aof: lock → GET → SET → unlock", "redis-aof-lock-rw-s2"),
    (3, "redis `DECRBY` / `INCRBY` rollback", "redis-decrby-s3"),
    (3, "redis-aof: the same", "redis-aof-decrby-s3"),
    (3, "postgres `SELECT … FOR UPDATE` + `UPDATE`", "pg-for-update-s3"),
    (3, "postgres `UPDATE … WHERE available >= n`", "pg-conditional-update-s3"),
]


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def rfmt(x):
    return "—" if x is None else "{:.2f}×".format(x)


def peers_table():
    rows = ["| scenario | peer pattern | peer grants/s | holdfast HTTP grants/s | **ratio HTTP/peer** "
            "| requests per grant, peer / HTTP | ratio of requests/s, HTTP/peer "
            "| holdfast library grants/s | ratio library/peer | peer acquire p50 / p99 | holdfast HTTP p50 / p99 | CPU peer server / bench / others | peer checks |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for s, label, name in PAIRS:
        http, eng = "holdfast-http-s%d" % s, "holdfast-engine-s%d" % s
        pl = get(name, "latency_ms", "acquire") or {}
        hl = get(http, "latency_ms", "acquire") or {}
        rows.append("| {} | {} | {} | {} | **{}** | {} / {} | {} | {} | {} | {} / {} | {} / {} | {} | {} |".format(
            SCEN[s], label, fmt(grants(name)), fmt(grants(http)), rfmt(ratio(grants(http), grants(name))),
            fmt(per_grant(name), 2), fmt(per_grant(http), 2), rfmt(ratio(requests(http), requests(name))),
            fmt(grants(eng)), rfmt(ratio(grants(eng), grants(name))), ms(pl.get("p50")), ms(pl.get("p99")),
            ms(hl.get("p50")), ms(hl.get("p99")), cpu_cell(name), status(name)))
    return "\n".join(rows)


# The shared engines (issue 10): (scenario, engine label, run, peer label, peer run, target
# ratio or the run it must at least match)
SHARED = [
    (1, "`file:` (embedded), holdfastd over HTTP", "holdfast-http-s1", "Redis `SET NX PX` + Lua release", "redis-setnx-s1", None),
    (1, "`postgres://`, 1 holdfastd", "holdfast-pg1-s1", "PostgreSQL lock table (seed 004)", "pg-lock-table-s1", 0.5),
    (1, "`postgres://`, 3 holdfastd", "holdfast-pg3-s1", "`postgres://`, 1 holdfastd", "holdfast-pg1-s1", 1.0),
    (1, "`redis://`, in-process", "holdfast-redis-s1", "Redis `SET NX PX` + Lua release", "redis-setnx-s1", 0.5),
    (1, "`redlock://` over 3 masters, in-process", "holdfast-redlock-s1", "Redis `SET NX PX` + Lua release", "redis-setnx-s1", 0.3),
    (3, "`file:` (embedded), holdfastd over HTTP", "holdfast-http-s3", "Redis `DECRBY` / `INCRBY`", "redis-decrby-s3", None),
    (3, "`postgres://`, 1 holdfastd", "holdfast-pg1-s3", "PostgreSQL `UPDATE … WHERE available >= n`", "pg-conditional-update-s3", 1.0),
    (3, "`postgres://`, 3 holdfastd", "holdfast-pg3-s3", "`postgres://`, 1 holdfastd", "holdfast-pg1-s3", 1.0),
    (3, "`redis://`, in-process", "holdfast-redis-s3", "Redis `DECRBY` / `INCRBY`", "redis-decrby-s3", None),
]


def shared_table():
    rows = ["| scenario | engine | grants/s | compared with | its grants/s | **ratio** | target | met | CPU server / bench / others | checks |",
            "| --- | --- | ---: | --- | ---: | ---: | ---: | --- | ---: | --- |"]
    for s, label, name, peer_label, peer, target in SHARED:
        r = ratio(grants(name), grants(peer))
        met = "—" if target is None or r is None else ("yes" if r >= target else "**no**")
        rows.append("| {} | {} | {} | {} | {} | **{}** | {} | {} | {} | {} |".format(
            SCEN[s], label, fmt(grants(name)), peer_label, fmt(grants(peer)), rfmt(r),
            "—" if target is None else "≥ {:.1f}×".format(target), met, cpu_cell(name),
            status(name)))
    return "\n".join(rows)


def baselines():
    rows = ["| baseline | what | per second | p50 / p99 latency (ms) |", "| --- | --- | ---: | ---: |"]
    for name in ("redis", "redis-aof"):
        path = os.path.join(RES, "baseline-%s.csv" % name)
        if not os.path.exists(path):
            continue
        for line in read("baseline-%s.csv" % name).splitlines():
            if line.startswith("#") or line.startswith('"test"'):
                continue
            cols = [c.strip('"') for c in line.split(",")]
            if len(cols) >= 7:
                rows.append("| redis-benchmark ({}) | `{}` | {} | {} / {} |".format(
                    "no persistence" if name == "redis" else "AOF, appendfsync always", cols[0],
                    fmt(float(cols[1])), cols[4], cols[6]))
    for mode, what in (("tpcb", "TPC-B-like transaction (5 statements, 1 commit)"),
                       ("select", "`-S`: one primary-key SELECT")):
        path = os.path.join(RES, "baseline-pgbench-%s.txt" % mode)
        if not os.path.exists(path):
            continue
        t = read("baseline-pgbench-%s.txt" % mode)
        tps = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", t)
        lat = re.search(r"latency average = ([0-9.]+) ms", t)
        rows.append("| pgbench | {} | {} tps | avg {} |".format(
            what, fmt(float(tps.group(1))) if tps else "—", lat.group(1) if lat else "—"))
    return "\n".join(rows)


def fsync_figures():
    path = os.path.join(RES, "pg_test_fsync.txt")
    if not os.path.exists(path):
        return {}
    t = read("pg_test_fsync.txt")
    out = {}
    block = t.split("using one 8kB write")[1] if "using one 8kB write" in t else t
    for meth in ("fdatasync", "fsync"):
        m = re.search(r"^\s+%s\s+([0-9.]+) ops/sec\s+([0-9]+) usecs/op" % meth, block, re.M)
        if m:
            out[meth] = (float(m.group(1)), int(m.group(2)))
    return out


# ---- charts: plain SVG ----

COLORS = {"holdfast HTTP": "#1f77b4", "holdfast library": "#6baed6",
          "holdfast HTTP, tmpfs": "#9467bd", "holdfast library, tmpfs": "#c5b0d5", "redis": "#d62728",
          "redis AOF always": "#ff9896", "postgres FOR UPDATE": "#2ca02c",
          "postgres conditional": "#98df8a"}


def bar_chart(path, title, groups, unit, log=True):
    """groups: [(group label, [(series, value)])]; horizontal bars, log scale by default."""
    bar_h, gap, left, right, top = 16, 12, 230, 90, 50
    n = sum(len(g[1]) for g in groups)
    height = top + n * bar_h + len(groups) * (gap + 18) + 40
    width = 820
    vals = [v for _, ser in groups for _, v in ser if v]
    vmax = max(vals) if vals else 1
    vmin = min(vals) if vals else 1
    lo = 10 ** math.floor(math.log10(max(vmin, 1e-9))) if log else 0
    hi = 10 ** math.ceil(math.log10(vmax)) if log else vmax * 1.1

    def x(v):
        span = width - left - right
        if log:
            return left + span * (math.log10(max(v, lo)) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))
        return left + span * v / hi

    out = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">' % (width, height),
           '<rect width="100%" height="100%" fill="white"/>',
           '<text x="10" y="22" font-size="15" font-weight="bold">%s</text>' % html.escape(title)]
    # grid
    if log:
        d = lo
        while d <= hi * 1.0001:
            gx = x(d)
            out.append('<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#ddd"/>' % (gx, top - 8, gx, height - 30))
            out.append('<text x="%.1f" y="%d" text-anchor="middle" fill="#555">%s</text>' % (gx, height - 14, "{:,.0f}".format(d) if d >= 1 else "{:g}".format(d)))
            d *= 10
    out.append('<text x="%d" y="%d" text-anchor="end" fill="#555">%s</text>' % (width - 10, height - 2, html.escape(unit + (" (log scale)" if log else ""))))
    y = top
    for label, ser in groups:
        out.append('<text x="10" y="%d" font-weight="bold">%s</text>' % (y + 4, html.escape(label)))
        y += 14
        for name, v in ser:
            out.append('<text x="%d" y="%d" text-anchor="end">%s</text>' % (left - 6, y + bar_h - 4, html.escape(name)))
            if v:
                out.append('<rect x="%d" y="%d" width="%.1f" height="%d" fill="%s"/>' % (left, y + 1, max(1, x(v) - left), bar_h - 3, COLORS.get(name, "#888")))
                out.append('<text x="%.1f" y="%d" fill="#222">%s</text>' % (x(v) + 4, y + bar_h - 4, "{:,.0f}".format(v) if v >= 10 else "{:.2f}".format(v)))
            else:
                out.append('<text x="%d" y="%d" fill="#a00">no result</text>' % (left + 4, y + bar_h - 4))
            y += bar_h
        y += gap
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def charts():
    os.makedirs(CHARTS, exist_ok=True)
    g = []
    for s, peers in ((1, [("redis", "redis-setnx-s1"), ("redis AOF always", "redis-aof-setnx-s1")]),
                     (2, [("redis", "redis-setnx-s2"), ("redis AOF always", "redis-aof-setnx-s2")]),
                     (3, [("redis", "redis-decrby-s3"), ("redis AOF always", "redis-aof-decrby-s3"),
                          ("postgres FOR UPDATE", "pg-for-update-s3"),
                          ("postgres conditional", "pg-conditional-update-s3")])):
        ser = [("holdfast HTTP", grants("holdfast-http-s%d" % s)),
               ("holdfast library", grants("holdfast-engine-s%d" % s))]
        if s in (1, 3):
            ser += [("holdfast HTTP, tmpfs", grants("holdfast-http-tmpfs-s%d" % s)),
                    ("holdfast library, tmpfs", grants("holdfast-engine-tmpfs-s%d" % s))]
        ser += [(n, grants(r)) for n, r in peers]
        g.append((SCEN[s], ser))
    bar_chart(os.path.join(CHARTS, "throughput.svg"),
              "Successful acquisitions per second, %s clients" % machine.get("clients", "?"), g, "grants/s")
    g = []
    for s, peers in ((1, [("redis", "redis-setnx-s1"), ("redis AOF always", "redis-aof-setnx-s1")]),
                     (3, [("redis", "redis-decrby-s3"), ("redis AOF always", "redis-aof-decrby-s3"),
                          ("postgres FOR UPDATE", "pg-for-update-s3"),
                          ("postgres conditional", "pg-conditional-update-s3")])):
        for q, qn in (("p50", "p50"), ("p99", "p99")):
            ser = [("holdfast HTTP", get("holdfast-http-s%d" % s, "latency_ms", "acquire", q)),
                   ("holdfast library", get("holdfast-engine-s%d" % s, "latency_ms", "acquire", q))]
            ser += [(n, get(r, "latency_ms", "acquire", q)) for n, r in peers]
            g.append(("%s, acquire %s" % (SCEN[s], qn), ser))
    bar_chart(os.path.join(CHARTS, "latency.svg"), "Acquire latency (send → grant), ms", g, "milliseconds")


def command_list():
    lines = []
    for name in sorted(commands):
        lines.append("%s  (load %s)\n    %s" % (name, loads[name], commands[name]))
    return "\n".join(lines)


def main():
    charts()
    fs = fsync_figures()
    with open(os.path.join(HERE, "benchmarks.md.in")) as f:
        doc = f.read()
    fails = [n for n in runs if not runs[n]["pass"] and not n.startswith("demo-")]
    fails += [n for n in commands if n not in runs]
    subst = {
        "DATE": machine.get("date", "?"),
        "SOURCE": machine.get("source", "?"),
        "NPROC": machine.get("nproc", "?"),
        "CPU": machine.get("cpu", "?"),
        "MEM": machine.get("mem", "?"),
        "KERNEL": machine.get("kernel", "?"),
        "DISK": machine.get("disk", "?"),
        "LOAD_BEFORE": machine.get("load_before", "?"),
        "LOAD_AFTER": machine.get("load_after", "?"),
        "REDIS": machine.get("redis", "?"),
        "POSTGRES": machine.get("postgres", "?"),
        "DURATION": machine.get("duration", "?"),
        "CLIENTS": machine.get("clients", "?"),
        "FDATASYNC": "{:,.0f} per second ({} µs each)".format(*fs["fdatasync"]) if "fdatasync" in fs else "not measured",
        "FSYNC": "{:,.0f} per second ({} µs each)".format(*fs["fsync"]) if "fsync" in fs else "not measured",
        "TABLE_HOLDFAST": holdfast_table(),
        "TABLE_HANDOFF": handoff_table(),
        "TABLE_PEERS": peers_table(),
        "TABLE_BASELINES": baselines(),
        "TABLE_SHARED": shared_table(),
        "COMMANDS": command_list(),
        "CHECKS": ("every run passed its checks (but the deliberate failure below)" if not fails
                   else "runs that failed: " + ", ".join(sorted(fails))),
        "SAGA_WAIT": saga_wait(),
        "FLIGHTS": flights(),
        "LIMITS": limits(),
        "INSTRUCTIONS": instructions(),
        "LATENCY": fragment("latency.md", "bench/latency.py --doc"),
        "DEMO": demo(),
        "FSYNCVERDICT": fsync_verdict(),
    }
    for _ in range(2):  # twice: the prose of limits.md carries placeholders of its own
        for k, v in subst.items():
            doc = doc.replace("@@%s@@" % k, str(v))
    doc = re.sub(r"@@([A-Z0-9]+):([^@]+)@@", lambda m: figure(m.group(1), m.group(2).split(":")), doc)
    left = re.findall(r"@@[A-Z_]+@@", doc)
    if left:
        sys.exit("report.py: unfilled placeholders " + ", ".join(left))
    with open(DOC, "w") as f:
        f.write(doc)


def figure(kind, args):
    """Inline figures for the prose: GRANTS:run, RATIO:run:run, P50:run, P99:run, HANDOFF:run,
    REQS:run, CONFLICT:run, TIMEOUT:run, SCPU:run, BCPU:run, CORES:run:who."""
    if kind == "GRANTS":
        return fmt(grants(args[0]))
    if kind == "REQS":
        return fmt(get(args[0], "throughput", "requests_per_s"))
    if kind == "RATIO":
        return rfmt(ratio(grants(args[0]), grants(args[1])))
    if kind in ("P50", "P99"):
        return ms(get(args[0], "latency_ms", "acquire", kind.lower()))
    if kind == "HANDOFF":
        return ms(get(args[0], "latency_ms", "handoff", "p50"))
    if kind in ("SCPU", "BCPU"):  # CPU µs per request: the server's, or holdfast-bench's
        c = cpu.get(args[0])
        reqs = get(args[0], "throughput", "requests_per_s")
        if not c or not reqs or (kind == "SCPU" and c[0] is None):
            return "—"
        return "{:.0f}".format((c[0] if kind == "SCPU" else c[1]) / reqs * 1e6)
    if kind == "CORES":  # CORES:run:server|bench|others
        c = cpu.get(args[0])
        i = {"server": 0, "bench": 1, "others": 2, "machine": 3, "thread": 4}[args[1]]
        return "—" if not c or c[i] is None else "{:.2f}".format(c[i])
    if kind == "GAIN":  # GAIN:base:other — how much faster `other` is, or "no faster"
        a, b = grants(args[0]), grants(args[1])
        if not a or not b:
            return "—"
        d = b / a - 1
        if abs(d) < 0.15:
            return "{:+.0f} % (within this machine's noise)".format(100 * d)
        return "{:+.0f} %".format(100 * d)
    if kind == "MAXMEAN":
        f = get(args[0], "fairness") or {}
        return "—" if not f.get("mean_wait_ms") else "{:.0f}".format(f["max_wait_ms"] / f["mean_wait_ms"])
    if kind == "PGBENCH":
        m = re.search(r"tps = ([0-9.]+) \(without", read("baseline-pgbench-tpcb.txt"))
        return fmt(float(m.group(1))) if m else "—"
    if kind == "CONFLICT":
        return pct(get(args[0], "rates", "conflict"))
    if kind == "TIMEOUT":
        return pct(get(args[0], "rates", "timeout"))
    return "@@?%s@@" % kind


def demo():
    name = "demo-redis-lock-rw-ttl5-s2"
    r = runs.get(name)
    if r is None:
        return "(the demonstration run is missing)"
    err = read(name + ".err").strip() if os.path.exists(os.path.join(RES, name + ".err")) else ""
    c = r["counts"]
    text = ("{} lock grants, {} of them lost to the 5 ms lease before their release "
            "(expiry rate {}); verdict: **{}**, exit status {}. What it printed:\n\n```\n{}\n```").format(
        fmt(c["granted"]), fmt(c["expired"]), pct(r["rates"]["expiry"]),
        "pass" if r["pass"] else "FAIL", 0 if r["pass"] else 1, err or "(nothing)")
    if r["pass"] and not c["expired"]:
        # A quiet machine: no section outlived 5 ms, so there was nothing to catch.
        text += ("\n\nIn this run no critical section outlived the 5 ms lease (the machine was "
                 "quiet), so no update was lost and the checker rightly found nothing; on a busy "
                 "machine the same run loses updates and fails with `VIOLATION lost_update`.")
    return text


def fsync_verdict():
    """The reading of the tmpfs rows, written from this run's numbers (they move between runs)."""
    def gain(a, b):
        x, y = grants(a), grants(b)
        return None if not x or not y else y / x - 1
    gl = [g for g in (gain("holdfast-engine-s1", "holdfast-engine-tmpfs-s1"),
                      gain("holdfast-engine-s3", "holdfast-engine-tmpfs-s3")) if g is not None]
    gh = [g for g in (gain("holdfast-http-s1", "holdfast-http-tmpfs-s1"),
                      gain("holdfast-http-s3", "holdfast-http-tmpfs-s3")) if g is not None]
    if not gl or not gh:
        return "(the tmpfs runs are missing)"
    gl, gh = sum(gl) / len(gl), sum(gh) / len(gh)
    lib = ("**in-process, fsync is the main limit** (removing it {} the rate)".format(
        "about doubles" if gl >= 0.8 else "raises by {:.0f} %".format(100 * gl)) if gl >= 0.3
        else "in-process, fsync is a minor cost in this run")
    if gh < 0.15:
        http = "over HTTP removing it changes nothing measurable: the disk is not what holds holdfastd's figure"
    elif gh < gl:
        http = ("over HTTP it matters less (+{:.0f} % on average): holdfastd's own request path, "
                "below, holds more of the figure").format(100 * gh)
    else:
        http = "over HTTP it matters as much (+{:.0f} % on average)".format(100 * gh)
    return lib + "; " + http


def limits():
    """The prose on limits lives in bench/limits.md (it is read with the figures)."""
    p = os.path.join(HERE, "limits.md")
    return open(p).read().strip() if os.path.exists(p) else "(bench/limits.md missing)"


def fragment(name, how):
    """A section another script writes (bench/NAME), as it last wrote it."""
    p = os.path.join(HERE, name)
    return open(p).read().strip() if os.path.exists(p) else "(bench/%s missing: run %s)" % (name, how)


def instructions():
    """The tables of bench/instructions.sh live in bench/instructions.md (it writes them)."""
    return fragment("instructions.md", "bench/instructions.sh")


def saga_wait():
    a, b = "holdfast-http-s5", "holdfast-http-s5-wait"
    rows = ["| booking waits | grants/s | success | conflict | timeout | acquire p50 | p99 | checks |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for label, n in (("0 ms: refused at once, retry after 1 ms", a), ("up to 50 ms in the FIFO line", b)):
        lat = get(n, "latency_ms", "acquire") or {}
        rt = get(n, "rates") or {}
        rows.append("| {} | {} | {} | {} | {} | {} | {} | {} |".format(
            label, fmt(grants(n)), pct(rt.get("success")), pct(rt.get("conflict")), pct(rt.get("timeout")),
            ms(lat.get("p50")), ms(lat.get("p99")), status(n)))
    return "\n".join(rows)


def flights():
    """Scenario 6: bookings through sagas next to the same bookings without one."""
    rows = ["| via | booking made as | completed/s | all bookings/s | completed | declined | seat taken "
            "| booking p50 | p99 | **completed/s, saga / plain** | checks |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for via, base in (("HTTP (holdfastd)", "holdfast-http-s6"), ("library (file:)", "holdfast-engine-s6")):
        plain = get(base + "-plain", "bookings_per_s")
        for mode, n in (("saga", base), ("plain acquire/pay/confirm", base + "-plain")):
            r = runs.get(n) or {}
            lat = r.get("latency_ms") or {}
            rows.append("| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |".format(
                via, mode, fmt(r.get("bookings_per_s"), 1), fmt(r.get("sagas_per_s"), 1),
                fmt(r.get("completed")), fmt(r.get("declined")), fmt(r.get("seat_taken")),
                ms(lat.get("p50")), ms(lat.get("p99")),
                rfmt(ratio(r.get("bookings_per_s"), plain)) if mode == "saga" else "1",
                status(n) if n in runs else "**not run**"))
    return "\n".join(rows)


main()
