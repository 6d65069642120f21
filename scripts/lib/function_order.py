#!/usr/bin/env python3
"""Lists the functions of `respawn` that run while it serves, hottest first, for the linker.

Runs `respawn serve` (supervising `respawn mock`) under valgrind's callgrind, drives the work a
proxy does (start-up, readiness, keep-alive GETs and small chat completions, a streamed
completion, the status and metrics routes, an operator's restart and the requests after it, the
shutdown), and writes the Rust functions that ran, by their own instruction count, one mangled
name a line. `cli/build.rs` hands the list to the linker of release builds
(`--symbol-ordering-file`), which places those functions next to each other at the start of the
code: the pages a serving process touches are then a compact block instead of being spread over
the whole binary (where the kernel maps each touched page with its neighbours). Python standard
library only; run it through scripts/function-order.sh.
"""

import argparse
import collections
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time

TOKEN = "function-order-token-0123456789"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(conn, method, path, body=None, headers=None):
    data = None if body is None else json.dumps(body).encode()
    hdrs = {"Content-Type": "application/json"} if data else {}
    hdrs.update(headers or {})
    conn.request(method, path, body=data, headers=hdrs)
    resp = conn.getresponse()
    return resp.status, resp.read()


def wait_ready(port, bound):
    deadline = time.time() + bound
    while time.time() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            status, body = call(conn, "GET", "/respawn/status")
            conn.close()
            if status == 200 and json.loads(body).get("state") == "ready":
                return
        except (OSError, http.client.HTTPException, ValueError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"respawn serve on port {port} was not ready within {bound} s")


def chat(stream=False, max_tokens=1):
    return {"model": "mock-llm", "messages": [{"role": "user", "content": "order"}],
            "max_tokens": max_tokens, "stream": stream}


def workload(port, requests):
    """The proxy's everyday work, on keep-alive connections as a load generator sends it."""
    conns = [http.client.HTTPConnection("127.0.0.1", port, timeout=60) for _ in range(4)]
    for i in range(requests):
        conn = conns[i % len(conns)]
        for method, path, body in (("GET", "/health", None),
                                   ("POST", "/v1/chat/completions", chat())):
            status, _ = call(conn, method, path, body)
            if status != 200:
                raise RuntimeError(f"{method} {path} answered {status}")
    status, body = call(conns[0], "POST", "/v1/chat/completions", chat(stream=True, max_tokens=8))
    if status != 200 or b"[DONE]" not in body:
        raise RuntimeError(f"the streamed completion answered {status}")
    auth = {"Authorization": f"Bearer {TOKEN}"}
    for path in ("/respawn/status", "/respawn/metrics"):
        status, _ = call(conns[0], "GET", path, headers=auth)
        if status != 200:
            raise RuntimeError(f"GET {path} answered {status}")
    for conn in conns:
        conn.close()


def parse_callgrind(path):
    """{mangled name: instructions executed in the function itself} from a callgrind output file
    (names are given once, at their first mention, then by number)."""
    names = {}
    cost = collections.Counter()
    current = None
    after_calls = False
    with open(path) as f:
        for line in f:
            m = re.match(r"(c?fn)=\((\d+)\)(?: (.*))?$", line.rstrip("\n"))
            if m:
                kind, ident, name = m.groups()
                if name:
                    names[ident] = name
                if kind == "fn":
                    current, after_calls = ident, False
                continue
            if line.startswith("calls="):
                after_calls = True  # the next cost line is the call's inclusive cost
                continue
            if line[:1].isdigit() or line[:1] in "+-*":
                if after_calls:
                    after_calls = False
                    continue
                parts = line.split()
                if current is not None and len(parts) >= 2 and parts[1].isdigit():
                    cost[current] += int(parts[1])
    return {name: cost[ident] for ident, name in names.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--respawn", required=True, help="the release binary")
    ap.add_argument("--out", required=True, help="the list to write")
    ap.add_argument("--requests", type=int, default=300, help="GET + POST pairs before and after the restart")
    args = ap.parse_args()
    respawn = os.path.abspath(args.respawn)
    work = tempfile.mkdtemp(prefix="respawn-order-")
    out_file = os.path.join(work, "callgrind.out")
    port = free_port()
    argv = ["valgrind", "--tool=callgrind", "--demangle=no", f"--callgrind-out-file={out_file}",
            respawn, "serve", "--listen", f"127.0.0.1:{port}",
            "--", respawn, "mock", "--port", "{port}", "--tokens", "1", "--token-latency", "0ms"]
    env = dict(os.environ, RESPAWN_ADMIN_TOKEN=TOKEN, RESPAWN_LOG="info")
    log_path = os.path.join(work, "serve.log")
    with open(log_path, "w") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_ready(port, 120)
        workload(port, args.requests)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        status, _ = call(conn, "POST", "/respawn/restart", headers={"Authorization": f"Bearer {TOKEN}"})
        conn.close()
        if status not in (200, 202):
            raise RuntimeError(f"POST /respawn/restart answered {status}")
        time.sleep(0.5)
        wait_ready(port, 120)
        workload(port, args.requests // 3)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    if not os.path.exists(out_file):
        raise RuntimeError(f"callgrind wrote no profile; see {log_path}")
    costs = parse_callgrind(out_file)
    rust = sorted(((c, n) for n, c in costs.items() if n.startswith(("_ZN", "_R"))),
                  key=lambda cn: (-cn[0], cn[1]))
    with open(args.out, "w") as f:
        f.write("# The functions of `respawn` that run while it serves, hottest first: the order\n"
                "# the linker gives them in release builds (cli/build.rs). Made by\n"
                "# scripts/function-order.sh; names it no longer finds are skipped.\n")
        for _, name in rust:
            f.write(name + "\n")
    print(f"{len(rust)} functions listed in {args.out} (profile and log in {work})", file=sys.stderr)


if __name__ == "__main__":
    main()
