#!/usr/bin/env python3
"""Lists the functions of `respawn` that run while it serves, hottest first, for the linker.

Runs `respawn serve` (supervising `respawn mock`) under valgrind's callgrind, drives the work a
proxy does (serve_workload.py: start-up, readiness, keep-alive GETs and small chat completions, a
streamed completion, the status and metrics routes, an operator's restart and the requests after
it, the shutdown), and writes the Rust functions that ran, by their own instruction count, one mangled
name a line. `cli/build.rs` hands the list to the linker of release builds
(`--symbol-ordering-file`), which places those functions next to each other at the start of the
code: the pages a serving process touches are then a compact block instead of being spread over
the whole binary (where the kernel maps each touched page with its neighbours). Python standard
library only; run it through scripts/function-order.sh.
"""

import argparse
import collections
import os
import re
import sys
import tempfile

import serve_workload


def parse_callgrind(path, binary):
    """{name: instructions executed in the function itself} for the functions of `binary` in a
    callgrind output file. Objects, files and functions are named at their first mention (also in
    the `cob=`/`cfn=` lines of a call), then by number; a callee's object is the caller's unless a
    `cob=` line says otherwise."""
    objects, names, owner = {}, {}, {}
    cost = collections.Counter()
    ob = cob = current = None
    after_calls = False
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            m = re.match(r"(c?)ob=\((\d+)\)(?: (.*))?$", line)
            if m:
                call, ident, name = m.groups()
                if name:
                    objects[ident] = name
                if call:
                    cob = objects.get(ident)
                else:
                    ob = cob = objects.get(ident)
                continue
            m = re.match(r"(c?)fn=\((\d+)\)(?: (.*))?$", line)
            if m:
                call, ident, name = m.groups()
                if name:
                    names[ident] = name
                owner.setdefault(ident, cob if call else ob)
                if not call:
                    current, after_calls = ident, False
                    cob = ob
                continue
            if line.startswith("calls="):
                after_calls = True  # the next cost line is the call's inclusive cost
                continue
            if line and (line[0].isdigit() or line[0] in "+-*"):
                if after_calls:
                    after_calls = False
                    cob = ob
                    continue
                parts = line.split()
                if current is not None and len(parts) >= 2 and parts[1].isdigit():
                    cost[current] += int(parts[1])
    binary = os.path.realpath(binary)
    return {name: cost[ident] for ident, name in names.items()
            if owner.get(ident) and os.path.realpath(owner[ident]) == binary}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--respawn", required=True, help="the release binary")
    ap.add_argument("--out", required=True, help="the list to write")
    ap.add_argument("--requests", type=int, default=640, help="GET + POST pairs before the restart (a third of it after)")
    args = ap.parse_args()
    respawn = os.path.abspath(args.respawn)
    work = tempfile.mkdtemp(prefix="respawn-order-")
    out_file = os.path.join(work, "callgrind.out")
    serve_workload.run(["valgrind", "--tool=callgrind", "--demangle=no",
                        f"--callgrind-out-file={out_file}"],
                       respawn, args.requests, os.path.join(work, "serve.log"))
    if not os.path.exists(out_file):
        raise RuntimeError(f"callgrind wrote no profile; see {work}/serve.log")
    costs = parse_callgrind(out_file, respawn)
    ordered = sorted(((c, n) for n, c in costs.items()), key=lambda cn: (-cn[0], cn[1]))
    with open(args.out, "w") as f:
        f.write("# The functions of `respawn` that run while it serves, hottest first: the order\n"
                "# the linker gives them in release builds (cli/build.rs). Made by\n"
                "# scripts/function-order.sh; names it no longer finds are skipped.\n")
        for _, name in ordered:
            f.write(name + "\n")
    print(f"{len(ordered)} functions listed in {args.out} (profile and log in {work})", file=sys.stderr)


if __name__ == "__main__":
    main()
