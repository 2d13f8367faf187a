#!/usr/bin/env python3
"""callgrind_split.py — splits one callgrind dump by component, for bench/instructions.sh.

    callgrind_split.py DUMP PAIRS LABEL SERVER > result.json

Sums the *self* instruction counts (Ir) of every function by the object it lives in (the
executable or a shared library) and groups the objects into components: jansson, libc, SQLite,
libevent, holdfast (holdfastd itself), redis (redis-server itself), ld.so and other. Kernel
time is never in a callgrind dump (it counts user-space instructions only). Divides by PAIRS
(acquire+release pairs, or SET NX PX + EVAL pairs), lists the costliest functions and
counts holdfast's journal transactions (calls of hf__journal_write) per pair.
Standard library only.
"""
import json
import re
import sys

DUMP, PAIRS, LABEL, SERVER = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]

COMPONENTS = [
    ("jansson", re.compile(r"libjansson")),
    ("libc", re.compile(r"/libc\.so|/libm\.so|/libpthread")),
    ("SQLite", re.compile(r"libsqlite3")),
    ("libevent", re.compile(r"libevent")),
    ("holdfast", re.compile(r"/holdfastd$|libholdfast")),
    ("redis", re.compile(r"/redis-server$|/redis-check")),
    ("ld.so", re.compile(r"/ld-linux")),
    ("OpenSSL", re.compile(r"libcrypto|libssl")),
]


def component(ob):
    for name, rx in COMPONENTS:
        if rx.search(ob):
            return name
    return "other"  # "???": PLT stubs and code without an object; vdso


def parse(path):
    names = {"ob": {}, "fn": {}}
    ob = fn = cfn = "???"
    self_by_fn = {}
    skip_next = False  # the cost line after calls= is the callee's inclusive cost
    calls_to = {}  # callee name -> calls counted
    rx_def = re.compile(r"^(ob|fn|cob|cfn|fl|fi|fe|cfi|cfl)=\((\d+)\)(?: (.*))?$")
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            c = line[0]
            if c.isdigit() or c in "+-*":
                if skip_next:
                    skip_next = False
                    continue
                parts = line.split()
                if len(parts) >= 2:
                    key = (ob, fn)
                    self_by_fn[key] = self_by_fn.get(key, 0) + int(parts[1])
                continue
            if line.startswith("calls="):
                skip_next = True
                calls_to[cfn] = calls_to.get(cfn, 0) + int(line.split()[0][6:])
                continue
            m = rx_def.match(line)
            if m:
                kind, ident, name = m.group(1), m.group(2), m.group(3)
                table = "ob" if kind in ("ob", "cob") else "fn" if kind in ("fn", "cfn") else None
                if table:
                    if name is not None:
                        names[table][ident] = name
                    if kind == "ob":
                        ob = names["ob"].get(ident, "???")
                    elif kind == "fn":
                        fn = names["fn"].get(ident, "???")
                    elif kind == "cfn":
                        cfn = names["fn"].get(ident, "???")
    return self_by_fn, calls_to


def main():
    self_by_fn, calls_to = parse(DUMP)
    total = sum(self_by_fn.values())
    comps = {}
    for (ob, _fn), ir in self_by_fn.items():
        comps[component(ob)] = comps.get(component(ob), 0) + ir
    top = sorted(self_by_fn.items(), key=lambda kv: -kv[1])[:25]
    out = {
        "label": LABEL,
        "server": SERVER,
        "pairs": PAIRS,
        "total_ir": total,
        "per_pair": round(total / PAIRS),
        "components": {k: round(v / PAIRS) for k, v in sorted(comps.items(), key=lambda kv: -kv[1])},
        # journal transactions (group commits) per pair: SQLite's share moves with it
        "commits_per_pair": round(calls_to.get("hf__journal_write", 0) / PAIRS, 3),
        "top": [
            {"fn": fn, "component": component(ob), "per_pair": round(ir / PAIRS)}
            for (ob, fn), ir in top
        ],
    }
    json.dump(out, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
