#!/usr/bin/env python3
"""instructions_report.py — renders the results of bench/instructions.sh as markdown.

    instructions_report.py RESULTS_DIR OUT_MD [DOC]

Reads every RESULTS_DIR/*.json (one per measured tree, in the order of their dates), writes
OUT_MD (the tables of the "Instructions per lock pair" section) and, when DOC is given,
replaces what lies between "<!-- instructions:begin -->" and "<!-- instructions:end -->" in it
with the same text, so that docs/benchmarks.md follows without a full bench/run.sh.
bench/report.py includes OUT_MD the same way (@@INSTRUCTIONS@@). Standard library only.
"""
import glob
import json
import os
import sys

RES, OUT = sys.argv[1], sys.argv[2]
DOC = sys.argv[3] if len(sys.argv) > 3 else None
ORDER = ["jansson", "libc", "SQLite", "libevent", "holdfast", "redis", "ld.so", "OpenSSL", "other"]


def n(x):
    return "{:,}".format(int(x))


def main():
    runs = [json.load(open(p)) for p in glob.glob(os.path.join(RES, "*.json"))]
    runs.sort(key=lambda r: r["date"])
    if not runs:
        sys.exit("instructions_report.py: no results in " + RES)
    comps = [c for c in ORDER if any(c in r["holdfastd"]["components"] for r in runs)]
    lines = []
    lines.append("| tree | date | holdfastd instructions per pair | × Redis | " +
                 " | ".join(comps) + " | commits per pair |")
    lines.append("| --- | --- | ---: | ---: | " + " | ".join("---:" for _ in comps) + " | ---: |")
    for r in runs:
        h = r["holdfastd"]
        cells = []
        for c in comps:
            v = h["components"].get(c, 0)
            cells.append("%s (%.0f %%)" % (n(v), 100.0 * v / h["per_pair"]) if v else "0")
        cpp = h.get("commits_per_pair")
        lines.append("| %s (%s) | %s | **%s** | %.1f× | %s | %s |" % (
            r["label"], r["source"], r["date"], n(h["per_pair"]),
            h["per_pair"] / r["redis"]["per_pair"], " | ".join(cells),
            "%.2f" % cpp if cpp is not None else "–"))
    last = runs[-1]
    rd = last["redis"]
    lines.append("")
    lines.append("Redis (`SET NX PX` + `EVAL` release, no persistence), same client, same pairs, "
                 "in the run of %s: **%s instructions per pair** (%s)." % (
                     last["label"], n(rd["per_pair"]),
                     ", ".join("%s %s" % (k, n(v)) for k, v in rd["components"].items())))
    tp = last.get("throughput_s1") or {}
    if tp.get("holdfastd_grants_s") and tp.get("redis_grants_s"):
        lines.append("")
        lines.append(
            "Scenario 1 throughput in the same run (32 clients, wall clock, so it depends on "
            "the load: %s just before): holdfastd over HTTP, store on tmpfs, %s grants/s; Redis "
            "%s grants/s; ratio **%.2f×**." % (tp.get("load", "?"), n(tp["holdfastd_grants_s"]),
                                                n(tp["redis_grants_s"]),
                                                tp["holdfastd_grants_s"] / tp["redis_grants_s"]))
    lines.append("")
    lines.append("The costliest functions (self instructions per pair) in %s:" % last["label"])
    lines.append("")
    lines.append("| function | component | per pair |")
    lines.append("| --- | --- | ---: |")
    for t in last["holdfastd"]["top"][:15]:
        lines.append("| `%s` | %s | %s |" % (t["fn"], t["component"], n(t["per_pair"])))
    lines.append("")
    lines.append("Commands (`bench/instructions.sh %s`):" % last["label"])
    lines.append("")
    lines.append("```")
    for k in ("holdfastd", "redis", "client"):
        lines.append(last["commands"][k])
    lines.append("```")
    text = "\n".join(lines) + "\n"
    with open(OUT, "w") as f:
        f.write(text)
    if DOC and os.path.exists(DOC):
        doc = open(DOC).read()
        b, e = "<!-- instructions:begin -->", "<!-- instructions:end -->"
        i, j = doc.find(b), doc.find(e)
        if i >= 0 and j > i:
            doc = doc[:i + len(b)] + "\n" + text + doc[j:]
            with open(DOC, "w") as f:
                f.write(doc)


if __name__ == "__main__":
    main()
