#!/usr/bin/env python3
"""The work a serving respawn does, driven from outside, for the scripts that profile it.

`run(prefix, respawn, requests, log_path)` starts `respawn serve` (supervising `respawn mock`),
optionally under a tool (`prefix`, e.g. valgrind), and drives the work a proxy does: start-up,
readiness, keep-alive GETs and small chat completions from 64 connections at once, clients that
give up, a streamed completion, the status and metrics routes, an operator's restart and the
requests after it, the shutdown (SIGTERM). Used by function_order.py (which functions run, for the
linker's order) and pgo_profile.py (how often each branch is taken, for the compiler). Python
standard library only.
"""

import http.client
import json
import os
import signal
import socket
import subprocess
import threading
import time

TOKEN = "serve-workload-token-0123456789"


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


def run(prefix, respawn, requests, log_path):
    """Starts `respawn serve` under `prefix` (a list, possibly empty), drives `requests` GET + POST
    pairs, an operator's restart and a third as many pairs after it, then stops it with SIGTERM
    and waits for its exit."""
    port = free_port()
    argv = [*prefix, respawn, "serve", "--listen", f"127.0.0.1:{port}", "--port", str(free_port()),
            "--", respawn, "mock", "--port", "{port}", "--tokens", "1", "--token-latency", "0ms"]
    env = dict(os.environ, RESPAWN_ADMIN_TOKEN=TOKEN, RESPAWN_LOG="info")
    with open(log_path, "w") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_ready(port, 120)
        workload(port, requests)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        status, _ = call(conn, "POST", "/respawn/restart", headers={"Authorization": f"Bearer {TOKEN}"})
        conn.close()
        if status not in (200, 202):
            raise RuntimeError(f"POST /respawn/restart answered {status}")
        time.sleep(0.5)
        wait_ready(port, 120)
        workload(port, requests // 3)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def main():
    import argparse
    import sys
    import tempfile
    ap = argparse.ArgumentParser(description="Drives respawn serve through the work a proxy does.")
    ap.add_argument("--respawn", required=True, help="the binary to run")
    ap.add_argument("--requests", type=int, default=640,
                    help="GET + POST pairs before the restart (a third of it after)")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="respawn-workload-")
    run([], os.path.abspath(args.respawn), args.requests, os.path.join(work, "serve.log"))
    print(f"done (log in {work}/serve.log)", file=sys.stderr)


if __name__ == "__main__":
    main()
