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
import threading
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


def workload(port, requests, connections=64):
    """The proxy's everyday work as a load generator sends it: keep-alive connections at once, each
    asking for GETs and small chat completions; then a streamed completion and the control routes."""
    failures = []

    def one_connection():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        try:
            for _ in range(max(1, requests // connections)):
                for method, path, body in (("GET", "/health", None),
                                           ("POST", "/v1/chat/completions", chat())):
                    status, _ = call(conn, method, path, body)
                    if status != 200:
                        failures.append(f"{method} {path} answered {status}")
        except (OSError, http.client.HTTPException) as err:
            failures.append(str(err))
        finally:
            conn.close()

    threads = [threading.Thread(target=one_connection) for _ in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failures:
        raise RuntimeError(f"{len(failures)} requests failed, the first: {failures[0]}")
    # Clients that give up: 64 connections at once, each closed right after its request is sent.
    request = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    socks = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(64)]
    for sock in socks:
        sock.sendall(request)
    for sock in socks:
        sock.close()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    status, body = call(conn, "POST", "/v1/chat/completions", chat(stream=True, max_tokens=8))
    if status != 200 or b"[DONE]" not in body:
        raise RuntimeError(f"the streamed completion answered {status}")
    auth = {"Authorization": f"Bearer {TOKEN}"}
    for path in ("/respawn/status", "/respawn/metrics"):
        status, _ = call(conn, "GET", path, headers=auth)
        if status != 200:
            raise RuntimeError(f"GET {path} answered {status}")
    conn.close()


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
    port = free_port()
    argv = ["valgrind", "--tool=callgrind", "--demangle=no", f"--callgrind-out-file={out_file}",
            respawn, "serve", "--listen", f"127.0.0.1:{port}", "--port", str(free_port()),
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
