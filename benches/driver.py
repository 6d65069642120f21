#!/usr/bin/env python3
"""respawn's benchmark driver (Python standard library only; run it through scripts/bench.sh).

Measures, side by side in one run, against `respawn mock` (a real process):
  1. recovery from a hard hang (SIGSTOP) with respawn (and with the grace a hang's stop used to
     get, `--hang-stop grace`), and with the original design's ServerManager loop;
  2. health-green engine deadlocks, busy (progress metric) and idle (canary);
  3. a restart storm (256 requests in flight at a freeze);
  4. proxy overhead: direct vs nginx vs respawn, with wrk, and the stacks used plainly (a bare
     actix-web + awc proxy, and a hyper proxy); (4a) the same with respawn and nginx
     each started in a session of its own, as runs before 2026-12-03 did; (4b) the release build's resident
     size under that load with and without its function order (cli/function-order.txt); and (4c)
     the release build with and without its compiler profile (cli/pgo/respawn.profdata); (4d) the
     release build (on the C library's allocator) and the same built on mimalloc;
  5. streaming: chunk arrival times through respawn, through nginx and a second direct stream,
     each against direct;
  6. respawn's own time in a restart, by step;
  7. the cost of supervising 1, 8 and 64 servers at rest;
  8. many concurrent streams (1,000 streams of 100 tokens at 20 ms): direct vs nginx vs respawn,
     the proxy's CPU per stream, its peak RSS and each chunk's extra lag;
and writes docs/BENCHMARKS.md with the figures. Nothing here is a pass/fail test.

`--only PART,...` reruns some parts (hard_hang, deadlock, storm, overhead, launch, code_layout, pgo, allocator, streaming,
restart_time, scaling, many_streams) and takes the others from the last run's target/bench/results.json.
"""

import argparse
import contextlib
import datetime
import json
import os
import platform
import re
import selectors
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time

TOKEN = "bench-admin-token-0123456789"
CLK_TCK = os.sysconf("SC_CLK_TCK")
ORIGINAL_WAIT_AFTER_TERM = 5.0  # the original design: terminate(), wait(timeout=5), then kill()
ORIGINAL_SLEEP_AFTER_KILL = 3.0  # the original design: time.sleep(3) "wait for cleanup"
ORIGINAL_HEALTH_POLL = 1.0  # the original design polls /health until it answers (interval assumed: 1 s)


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


_handed_out = set()


def free_port():
    """A loopback port that was free a moment ago and that this driver has not handed out before."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def request(port, method, path, body=None, timeout=120.0, headers=None):
    """One HTTP/1.1 request on a fresh connection: (status, body bytes); raises on failure."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        data = None if body is None else json.dumps(body).encode()
        hdrs = {"Content-Type": "application/json"} if data else {}
        hdrs.update(headers or {})
        conn.request(method, path, body=data, headers=hdrs)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def chat(prompt, max_tokens=1, stream=False):
    return {
        "model": "mock-llm",
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "stream": stream,
    }


def completion_ok(port, prompt, max_tokens=1, timeout=120.0):
    try:
        status, body = request(port, "POST", "/v1/chat/completions", chat(prompt, max_tokens), timeout)
        return status == 200 and bool(json.loads(body).get("choices"))
    except Exception:
        return False


def wait_until(pred, bound, step=0.05):
    deadline = time.time() + bound
    while time.time() < deadline:
        if pred():
            return True
        time.sleep(step)
    return False


def health_ok(port, timeout=1.0):
    try:
        return request(port, "GET", "/health", timeout=timeout)[0] == 200
    except Exception:
        return False


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_ticks(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime + stime
    except (OSError, IndexError, ValueError):
        return 0


def machine_ticks():
    """The whole machine's CPU ticks from /proc/stat: (busy, all). Busy counts user, system, the
    interrupts and softirqs (where the kernel carries loopback TCP: charged to whichever process
    they interrupt, or to none where the kernel accounts interrupt time apart) and time stolen by
    the hypervisor; idle and iowait are not busy."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


# How the processes under test (respawn, nginx) are started. Where the kernel groups scheduling
# by session (autogroup: /proc/sys/kernel/sched_autogroup_enabled = 1), the CPU is shared fairly
# between sessions first, then between the threads of each session: a proxy started in a session
# of its own with `respawn mock` in another gets two shares against wrk's one, while respawn shares
# its session (and so one share) with the model server it supervises. Each is started instead as
# the leader of a process group of its own in the driver's session (stop_group still reaches the
# whole group), so that wrk, the proxy and the model server all compete as plain threads. SESSIONS
# is the launch of runs before 2026-12-03, measured beside it by the `launch` part.
GROUP = {"process_group": 0}
SESSIONS = {"start_new_session": True}


def autogroup():
    """Whether the kernel schedules by session (autogroup): "on", "off" or "unknown"."""
    try:
        with open("/proc/sys/kernel/sched_autogroup_enabled") as f:
            return "on" if f.read().strip() == "1" else "off"
    except OSError:
        return "unknown"


def cpuidle():
    """The kernel's CPU idle driver (haltpoll on a KVM guest, intel_idle, acpi_idle...), or "unknown"."""
    try:
        with open("/sys/devices/system/cpu/cpuidle/current_driver") as f:
            return f.read().strip() or "none"
    except OSError:
        return "unknown"


def stop_group(proc, sig, timeout):
    """Stops `proc` (started as the leader of a process group, GROUP or SESSIONS) with `sig`; when
    it has not exited within `timeout` seconds, SIGKILLs its whole process group. Nothing when it
    already exited."""
    if proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def children(pid):
    out = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                out += [int(p) for p in f.read().split()]
    except OSError:
        pass
    return out


def parse_ts(line):
    m = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+)Z", line)
    if not m:
        return None
    return datetime.datetime.fromisoformat(m.group(1)[:26]).replace(tzinfo=datetime.timezone.utc).timestamp()


def round_ratios(xs, ys):
    """Each round's x over the same round's y (rounds where y is 0 left out)."""
    return [x / y for x, y in zip(xs, ys) if y]


def median(xs):
    return statistics.median(xs) if xs else float("nan")


class Serve:
    """`respawn serve` supervising `respawn mock`, with its log in a file; stopped on exit."""

    def __init__(self, respawn, workdir, mock_args=(), serve_args=(), log_level="info", child_port=None,
                 mock=None, launch=GROUP, env=None):
        self.port = free_port()
        self.child_port = child_port
        self.log_path = os.path.join(workdir, f"serve-{self.port}.log")
        argv = [respawn, "serve", "--listen", f"127.0.0.1:{self.port}", *serve_args]
        if child_port:
            argv += ["--port", str(child_port)]
        # The model server: `respawn mock` of this build, or of the build `mock` names. `env` is for
        # respawn alone: the model server runs without it (`env -u`), as it runs for every build.
        unset = [f"--unset={name}" for name in env or {}]
        argv += ["--", *(["env", *unset] if unset else []), mock or respawn, "mock", "--port", "{port}", *mock_args]
        env = dict(os.environ, RESPAWN_LOG=log_level, RESPAWN_ADMIN_TOKEN=TOKEN, **(env or {}))
        self.log_file = open(self.log_path, "w")
        self.proc = subprocess.Popen(argv, stdout=self.log_file, stderr=subprocess.STDOUT, env=env,
                                     stdin=subprocess.DEVNULL, **launch)

    def __enter__(self):
        if not wait_until(lambda: self.state() == "ready", 60):
            raise RuntimeError(f"respawn serve did not become ready; see {self.log_path}")
        return self

    def __exit__(self, *exc):
        self.stop()

    def stop(self):
        stop_group(self.proc, signal.SIGTERM, 15)
        self.log_file.close()

    def status(self):
        try:
            return json.loads(request(self.port, "GET", "/respawn/status", timeout=2)[1])
        except Exception:
            return {}

    def state(self):
        return self.status().get("state")

    def server_pid(self):
        """The model server itself: the child of respawn's group-leading guardian."""
        guardian = self.status().get("pid")
        kids = children(guardian) if guardian else []
        return kids[0] if kids else guardian

    def log_lines(self):
        with open(self.log_path) as f:
            return f.read().splitlines()

    def restart(self):
        return request(self.port, "POST", "/respawn/restart", timeout=5,
                       headers={"Authorization": f"Bearer {TOKEN}"})[0]


class ClientLoop(threading.Thread):
    """A client sending one small chat completion after another; records (sent, done, ok)."""

    def __init__(self, send):
        super().__init__(daemon=True)
        self.send = send
        self.records = []
        self.halt = threading.Event()

    def run(self):
        i = 0
        while not self.halt.is_set():
            i += 1
            sent = time.time()
            ok = self.send(f"loop sample {i} {sent}")
            self.records.append((sent, time.time(), ok))

    def successes_after(self, t):
        return [r for r in self.records if r[2] and r[1] > t]

    def stop(self):
        self.halt.set()
        self.join(timeout=300)


def recovery_from(records, t_freeze):
    """Freeze → next success: the first success that finished after the freeze and was held by it."""
    held = [r for r in records if r[2] and r[1] > t_freeze + 0.05]
    if not held:
        return None
    return held[0][1] - t_freeze


# 1. Recovery from a hard hang -------------------------------------------------------------------

def respawn_hard_hang(respawn, workdir, serve_args=()):
    with Serve(respawn, workdir, serve_args=serve_args, log_level="debug") as serve:
        loop = ClientLoop(lambda p: completion_ok(serve.port, p, timeout=300))
        loop.start()
        wait_until(lambda: len(loop.records) >= 20, 30)
        pid = serve.server_pid()
        t_freeze = time.time()
        os.kill(pid, signal.SIGSTOP)
        wait_until(lambda: len(loop.successes_after(t_freeze + 0.05)) >= 3, 120)
        loop.stop()
        status = serve.status()
        recovery = recovery_from(loop.records, t_freeze)
        lost = sum(1 for r in loop.records if not r[2])
        lines = serve.log_lines()
        steps = restart_steps(lines)
        detected = log_event_times(lines).get("detected")
        return {"recovery_s": recovery, "lost": lost, "restarts": status.get("restarts"),
                "detect_s": (detected - t_freeze) if detected else None,
                "duration_ms": (status.get("last_restart") or {}).get("duration_ms"), "steps": steps}


class OriginalDesignManager:
    """The original design's ServerManager: start (Popen + poll /health), restart (terminate, wait
    5 s, kill, sleep 3 s, start)."""

    def __init__(self, respawn, port, logf):
        self.argv = [respawn, "mock", "--port", str(port)]
        self.port = port
        self.logf = logf
        self.proc = None

    def start_server(self):
        self.proc = subprocess.Popen(self.argv, stdout=self.logf, stderr=self.logf,
                                     stdin=subprocess.DEVNULL, env=dict(os.environ, RESPAWN_LOG="warn"))
        while not health_ok(self.port, timeout=1.0):
            time.sleep(ORIGINAL_HEALTH_POLL)

    def restart_server(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=ORIGINAL_WAIT_AFTER_TERM)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        time.sleep(ORIGINAL_SLEEP_AFTER_KILL)
        self.start_server()

    def stop_server(self):
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.kill()
            self.proc.wait()


def original_hard_hang(respawn, workdir, timeout_s):
    port = free_port()
    with open(os.path.join(workdir, f"original-{port}.log"), "w") as logf:
        manager = OriginalDesignManager(respawn, port, logf)
        manager.start_server()
        restarts = [0]

        def call(prompt):
            # The original design's call_vllm_api: a timeout triggers a restart, then the request
            # is retried.
            for _attempt in range(4):
                try:
                    status, body = request(port, "POST", "/v1/chat/completions", chat(prompt), timeout_s)
                    if status == 200:
                        return True
                except socket.timeout:
                    manager.restart_server()
                    restarts[0] += 1
                except Exception:
                    time.sleep(1)
            return False

        loop = ClientLoop(call)
        loop.start()
        try:
            wait_until(lambda: len(loop.records) >= 20, 30)
            t_freeze = time.time()
            os.kill(manager.proc.pid, signal.SIGSTOP)
            wait_until(lambda: len(loop.successes_after(t_freeze + 0.05)) >= 3, timeout_s * 2 + 60)
            loop.stop()
        finally:
            manager.stop_server()
        return {"recovery_s": recovery_from(loop.records, t_freeze),
                "lost": sum(1 for r in loop.records if not r[2]), "restarts": restarts[0]}


def child_ts(line):
    """The child's own timestamp of a forwarded line (its log line inside respawn's), else respawn's."""
    m = re.search(r"Z\s+\w+\s+(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z)", line)
    return parse_ts(m.group(1)) if m else parse_ts(line)


def restart_steps(lines):
    """Per restart: the stop's parts, respawn's time from the old group gone to the new child
    spawned, the child's own start (spawned → listening, by its own clock), and respawn's time
    from the child listening to respawn noticing it ready."""
    out = []
    cur = None
    last_asked = None
    for line in lines:
        ts = parse_ts(line)
        if "restarting by process kill" in line:
            last_asked = line
        if "server stopped" in line and "signal_to_exit" in line:
            def dur(name):
                m = re.search(name + r": ([\d.]+)(ns|µs|us|ms|s)\b", line)
                if not m:
                    return None
                v, u = float(m.group(1)), m.group(2)
                return v * {"ns": 1e-6, "µs": 1e-3, "us": 1e-3, "ms": 1.0, "s": 1000.0}[u]
            cur = {"signal_to_exit_ms": dur("signal_to_exit"), "group_gone_ms": dur("group_gone"),
                   "port_free_ms": dur("port_free"), "stop_total_ms": dur("total"),
                   "escalated": "escalated_to_kill: true" in line, "t_stopped": ts,
                   "killed_at_once": bool(last_asked) and 'stop="kill"' in last_asked}
        elif cur is not None and "restart strategy done" in line:
            m = re.search(r'\("spawn", ([\d.]+)(µs|ms|s)\)', line)
            if m:
                cur["spawn_ms"] = float(m.group(1)) * {"µs": 1e-3, "ms": 1.0, "s": 1000.0}[m.group(2)]
        elif cur is not None and "server spawned" in line:
            cur["t_spawned"] = ts
            # The old group was gone when the port check began: after group_gone, before port_free.
            gone_to_stopped = (cur["port_free_ms"] or 0) / 1000
            cur["gone_to_spawned_ms"] = (ts - cur["t_stopped"] + gone_to_stopped) * 1000
        elif cur is not None and "respawn mock listening on" in line:
            # The child's line may be logged before respawn's "server spawned": its own clock says
            # when it happened.
            cur["t_listening"] = child_ts(line)
        elif cur is not None and "recovered: the new generation is ready" in line:
            m = re.search(r"recovery_ms=(\d+)", line)
            cur["recovery_ms"] = int(m.group(1)) if m else None
            if "t_listening" in cur:
                cur["ready_lag_ms"] = (ts - cur["t_listening"]) * 1000
                if "t_spawned" in cur:
                    # Two clocks (the child's line, respawn's log after the spawn returned): a child
                    # that listens at once can read as a hair before its own spawn.
                    cur["child_start_ms"] = max(0.0, (cur["t_listening"] - cur["t_spawned"]) * 1000)
            if cur.get("ready_lag_ms") is not None and cur.get("gone_to_spawned_ms") is not None:
                cur["own_ms"] = cur["gone_to_spawned_ms"] + cur["ready_lag_ms"]
            for k in ("t_spawned", "t_listening", "t_stopped"):
                cur.pop(k, None)
            out.append(cur)
            cur = None
    return out


# 2. Health-green deadlock -----------------------------------------------------------------------

def log_event_times(lines):
    t = {}
    for line in lines:
        ts = parse_ts(line)
        if "--deadlock-after" in line and "reached" in line and "deadlock" not in t:
            t["deadlock"] = ts
        elif "hang detected" in line and "detected" not in t:
            t["detected"] = ts
            m = re.search(r'cause="?([a-z_]+)', line)
            t["cause"] = m.group(1) if m else "?"
        elif "recovered: the new generation is ready" in line and "ready" not in t:
            t["ready"] = ts
    return t


def deadlock_busy(respawn, workdir):
    state = os.path.join(workdir, f"deadlock-busy-{time.time()}.json")
    with Serve(respawn, workdir, mock_args=["--deadlock-after", "30", "--state-file", state]) as serve:
        loop = ClientLoop(lambda p: completion_ok(serve.port, p, max_tokens=16, timeout=300))
        loop.start()
        wait_until(lambda: "ready" in log_event_times(serve.log_lines()), 120)
        t = log_event_times(serve.log_lines())
        wait_until(lambda: len(loop.successes_after(t.get("ready", time.time()))) >= 1, 60)
        loop.stop()
        nxt = [r for r in loop.records if r[2] and r[1] > t.get("deadlock", 0) + 0.5]
        return {"cause": t.get("cause"), "detect_s": t["detected"] - t["deadlock"],
                "next_success_s": (nxt[0][1] - t["deadlock"]) if nxt else None,
                "lost": sum(1 for r in loop.records if not r[2])}


def deadlock_idle(respawn, workdir):
    state = os.path.join(workdir, f"deadlock-idle-{time.time()}.json")
    with Serve(respawn, workdir, mock_args=["--deadlock-after", "5", "--state-file", state]) as serve:
        for i in range(5):
            completion_ok(serve.port, f"idle warmup {i}")
        t_idle = time.time()
        wait_until(lambda: "deadlock" in log_event_times(serve.log_lines()), 60)
        t = log_event_times(serve.log_lines())
        # A user arrives 1 s into the deadlock.
        time.sleep(max(0.0, t["deadlock"] + 1.0 - time.time()))
        ok = completion_ok(serve.port, "a user arrives during the deadlock", timeout=300)
        t_done = time.time()
        wait_until(lambda: "ready" in log_event_times(serve.log_lines()), 60)
        t = log_event_times(serve.log_lines())
        return {"cause": t.get("cause"), "idle_to_deadlock_s": t["deadlock"] - t_idle,
                "detect_s": t["detected"] - t["deadlock"], "idle_to_detect_s": t["detected"] - t_idle,
                "next_success_s": (t_done - t["deadlock"]) if ok else None, "lost": 0 if ok else 1}


# 3. Restart storm -------------------------------------------------------------------------------

def storm(respawn, workdir, n=256):
    with Serve(respawn, workdir, mock_args=["--token-latency", "10ms"]) as serve:
        results = []
        lock = threading.Lock()

        def one(i):
            ok = completion_ok(serve.port, f"storm {i}", max_tokens=300, timeout=300)
            with lock:
                results.append(ok)

        threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(n)]
        for th in threads:
            th.start()
        reached = wait_until(lambda: (serve.status().get("in_flight") or 0) >= n, 30, step=0.02)
        in_flight = serve.status().get("in_flight")
        os.kill(serve.server_pid(), signal.SIGSTOP)
        for th in threads:
            th.join(timeout=300)
        status = serve.status()
        return {"in_flight_at_freeze": in_flight, "all_in_flight": reached, "requests": n,
                "succeeded": sum(results), "restarts": status.get("restarts")}


# 4. Proxy overhead ------------------------------------------------------------------------------

NGINX_CONF = """worker_processes auto;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {d}/body;
  proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi;
  scgi_temp_path {d}/scgi;
  upstream model {{ server 127.0.0.1:{up}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://model;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
  }}
}}
"""


# The allocator part's second build: the release build with glibc's per-thread cache holding up to 64
# free blocks of each size (7 by default), set for respawn's process alone.
TCACHE_TUNABLES = "glibc.malloc.tcache_count=64"


CHAT_LUA = """wrk.method = "POST"
wrk.body = '{"model":"mock-llm","messages":[{"role":"user","content":"bench"}],"max_tokens":1}'
wrk.headers["Content-Type"] = "application/json"
"""


@contextlib.contextmanager
def idle_polling():
    """While the block runs, holds the CPUs' idle state to polling (a PM QoS request of 0 µs on
    /dev/cpu_dma_latency, which needs root; released when the file closes). At 1 connection each
    request wakes a sleeping CPU several times; on a VM a CPU woken from a halt exits to the host
    first, which takes more time than the proxies' own work and varies from run to run. Polling
    takes that out of every path alike, leaving what the proxies add. Yields whether it holds."""
    try:
        f = open("/dev/cpu_dma_latency", "wb", buffering=0)
    except OSError:
        yield False
        return
    try:
        f.write(struct.pack("i", 0))
        yield True
    finally:
        f.close()


def wrk(port, conns, seconds, path="/health", script=None):
    threads = min(conns, 2)
    argv = ["wrk", f"-t{threads}", f"-c{conns}", f"-d{seconds}s", "--latency"]
    if script:
        argv += ["-s", script]
    out = subprocess.run([*argv, f"http://127.0.0.1:{port}{path}"], capture_output=True, text=True,
                         check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    m = re.search(r"50%\s+([\d.]+)(us|ms|s)\b", out)
    p50_ms = float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1000.0}[m.group(2)]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    return {"rps": rps, "p50_ms": p50_ms, "non2xx": int(errors.group(1)) if errors else 0,
            "socket_errors": socket_errors.group(1) if socket_errors else ""}


class Sampler:
    """Calls `measure` every `every` seconds in a thread while its `with` block runs; the values in
    `values` (appended to the list given, if one is)."""

    def __init__(self, measure, every, values=None):
        self.measure = measure
        self.every = every
        self.values = [] if values is None else values
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.values.append(self.measure())
            time.sleep(self.every)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


class Nginx:
    """nginx as a keep-alive reverse proxy to the model server on `up`, with the configuration
    `conf(d=its directory, up=up, port=its port)`, in a directory of its own under `workdir`;
    stopped (SIGQUIT, then SIGKILL) when its `with` block ends."""

    def __init__(self, workdir, up, conf=NGINX_CONF.format, prefix="nginx-", launch=GROUP):
        self.launch = launch
        self.dir = tempfile.mkdtemp(prefix=prefix, dir=workdir)
        self.port = free_port()
        with open(os.path.join(self.dir, "nginx.conf"), "w") as f:
            f.write(conf(d=self.dir, up=up, port=self.port))
        self.proc = None

    def __enter__(self):
        self.proc = subprocess.Popen(["nginx", "-p", self.dir, "-c", os.path.join(self.dir, "nginx.conf"),
                                      "-g", "daemon off;"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **self.launch)
        if not wait_until(lambda: health_ok(self.port), 10):
            self.stop()
            raise RuntimeError(f"nginx did not start; see {self.dir}/error.log")
        return self

    def __exit__(self, *exc):
        self.stop()

    def stop(self):
        if self.proc is not None:
            stop_group(self.proc, signal.SIGQUIT, 10)

    def pids(self):
        """Its master and workers."""
        return proc_tree(self.proc.pid)

    def version(self):
        out = subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip()
        return out.replace("nginx version: ", "")


def big_post(port, size, timeout=120.0):
    """One POST of `size` bytes to /v1/chat/completions, sent in 1 MiB writes; its status (0: cut)."""
    chunk = b"x" * (1 << 20)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall((f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                       f"Content-Type: application/json\r\nContent-Length: {size}\r\n"
                       "Connection: close\r\n\r\n").encode())
            left = size
            while left:
                n = min(left, len(chunk))
                s.sendall(chunk[:n])
                left -= n
            head = s.recv(64)
            m = re.match(rb"HTTP/1\.1 (\d{3})", head)
            return int(m.group(1)) if m else 0
    except OSError:
        return 0


def big_bodies_rss(pid, port, n=8, size=30 << 20):
    """respawn's RSS at rest, at its peak while `n` concurrent bodies of `size` bytes pass through
    it, and a second after they ended."""
    time.sleep(2)
    idle = rss_kib(pid)
    statuses = [None] * n

    def one(i):
        statuses[i] = big_post(port, size)

    senders = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    with Sampler(lambda: rss_kib(pid), 0.05, [idle]) as peak:
        for t in senders:
            t.start()
        for t in senders:
            t.join()
    time.sleep(1)
    return {"idle_kib": idle, "peak_kib": max(peak.values), "after_kib": rss_kib(pid), "bodies": n,
            "body_bytes": size, "statuses": sorted(set(statuses))}


OVERHEAD_LOADS = {"get": "GET /health", "post": "POST /v1/chat/completions (1 token)"}


def example_path(respawn, name):
    """An example program (examples/NAME.rs), built beside the binary."""
    path = os.path.join(os.path.dirname(respawn), "examples", name)
    if not os.path.exists(path):
        raise RuntimeError(f"{path} is missing: scripts/release-build.sh --example {name}")
    return path


class PlainProxy:
    """A plain reverse proxy (`binary LISTEN ORIGIN`) in front of the model server on `up`, in a
    process group of its own; stopped when its `with` block ends. `name` is its source, for errors."""

    def __init__(self, binary, up, name, launch=GROUP):
        self.port = free_port()
        self.name = name
        self.proc = subprocess.Popen([binary, f"127.0.0.1:{self.port}", f"http://127.0.0.1:{up}"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     stdin=subprocess.DEVNULL, **launch)

    def __enter__(self):
        if not wait_until(lambda: health_ok(self.port), 10):
            self.stop()
            raise RuntimeError(f"{self.name} did not start")
        return self

    def __exit__(self, *exc):
        self.stop()

    def stop(self):
        stop_group(self.proc, signal.SIGTERM, 10)


def BareProxy(respawn, up, launch=GROUP):
    """examples/bare_proxy.rs (actix-web and awc with nothing of respawn's supervision), built
    beside `respawn`."""
    return PlainProxy(example_path(respawn, "bare_proxy"), up, "examples/bare_proxy.rs", launch)


def HyperProxy(binary, up, launch=GROUP):
    """benches/hyper_proxy (a reverse proxy on hyper, used as plainly as examples/bare_proxy.rs
    uses actix-web and awc); `binary` is its release build."""
    return PlainProxy(binary, up, "benches/hyper_proxy", launch)


def proxy_overhead(respawn, workdir, hyper_proxy, rounds=9, seconds=6, latency_seconds=4):
    """Direct, nginx, the bare actix-web + awc proxy, the hyper proxy (`hyper_proxy`: its binary)
    and respawn, interleaved by round."""
    child_port = free_port()
    with Serve(respawn, workdir, mock_args=["--tokens", "1", "--token-latency", "0ms"],
               child_port=child_port) as serve, Nginx(workdir, child_port) as nginx, \
            BareProxy(respawn, child_port) as bare, \
            HyperProxy(hyper_proxy, child_port) as hyper:
        chat_lua = os.path.join(nginx.dir, "chat.lua")
        with open(chat_lua, "w") as f:
            f.write(CHAT_LUA)
        loads = {"get": ("/health", None), "post": ("/v1/chat/completions", chat_lua)}
        targets = {"direct": child_port, "nginx": nginx.port, "bare": bare.port, "hyper": hyper.port,
                   "respawn": serve.port}
        for port in targets.values():  # warm up connections and caches
            for path, script in loads.values():
                wrk(port, 64, 2, path, script)
        res = {load: {k: {"rps": [], "p50_ms": [], "non2xx": 0} for k in targets} for load in loads}
        rss = []
        polled = False
        for r in range(rounds):
            for load, (path, script) in loads.items():
                for name, port in targets.items():
                    if name == "respawn":
                        with Sampler(lambda: rss_kib(serve.proc.pid), 0.5, rss):
                            out = wrk(port, 64, seconds, path, script)
                    else:
                        out = wrk(port, 64, seconds, path, script)
                    res[load][name]["rps"].append(out["rps"])
                    res[load][name]["non2xx"] += out["non2xx"]
                    log(f"  round {r + 1} {load} {name}: {out['rps']:.0f} req/s at 64 connections")
                with idle_polling() as polled:
                    for name, port in targets.items():
                        out = wrk(port, 1, latency_seconds, path, script)
                        res[load][name]["p50_ms"].append(out["p50_ms"])
                        res[load][name]["non2xx"] += out["non2xx"]
                        log(f"  round {r + 1} {load} {name}: median {out['p50_ms']:.3f} ms at 1 connection")
        bodies = big_bodies_rss(serve.proc.pid, serve.port)
        log(f"  RSS idle {bodies['idle_kib']} KiB, peak {bodies['peak_kib']} KiB with {bodies['bodies']} "
            f"bodies of {bodies['body_bytes']} bytes, {bodies['after_kib']} KiB a second after")
        return {"results": res, "rss_max_kib": max(rss) if rss else None, "bodies": bodies,
                "nginx": nginx.version(), "rounds": rounds, "seconds": seconds,
                "latency_seconds": latency_seconds, "idle_polling": polled}


def launch_fairness(respawn, workdir, rounds=3, seconds=5):
    """Part 4's load through nginx and respawn started two ways (GROUP, as every part starts them
    now, and SESSIONS, as runs before 2026-12-03 did): per round, in alternating order, a fresh
    `respawn serve` and nginx in front of its model server, launched the same way; each load for
    `seconds` at 64 connections through nginx, then through respawn. The ratio respawn / nginx of
    each launch tells how much of part 4's ratio came from the scheduler rather than the proxy."""
    chat_lua = os.path.join(workdir, "chat-launch.lua")
    with open(chat_lua, "w") as f:
        f.write(CHAT_LUA)
    loads = {"get": ("/health", None), "post": ("/v1/chat/completions", chat_lua)}
    launches = {"group": GROUP, "sessions": SESSIONS}
    res = {name: {load: {"nginx": [], "respawn": []} for load in loads} for name in launches}
    names = list(launches)
    for r in range(rounds):
        for name in (names if r % 2 == 0 else names[::-1]):
            launch = launches[name]
            child_port = free_port()
            with Serve(respawn, workdir, mock_args=["--tokens", "1", "--token-latency", "0ms"],
                       child_port=child_port, launch=launch) as serve, \
                    Nginx(workdir, child_port, prefix="nginx-launch-", launch=launch) as nginx:
                for port in (nginx.port, serve.port):  # warm up connections and caches
                    for path, script in loads.values():
                        wrk(port, 64, 1, path, script)
                for load, (path, script) in loads.items():
                    for target, port in (("nginx", nginx.port), ("respawn", serve.port)):
                        out = wrk(port, 64, seconds, path, script)
                        res[name][load][target].append(out["rps"])
                    got = res[name][load]
                    log(f"  round {r + 1} {name} {load}: nginx {got['nginx'][-1]:.0f}, respawn "
                        f"{got['respawn'][-1]:.0f} req/s ({got['respawn'][-1] / got['nginx'][-1]:.2f} ×)")
    return {"results": res, "rounds": rounds, "seconds": seconds, "autogroup": autogroup()}


# 4b. Code layout --------------------------------------------------------------------------------

FUNCTION_ORDER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "cli", "function-order.txt")


def code_rss_kib(pid, binary):
    """The resident part of `binary`'s executable mapping in process `pid`: its code in memory."""
    real = os.path.realpath(binary)
    total, inside = 0, False
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            parts = line.split()
            if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
                inside = len(parts) >= 6 and parts[1].startswith("r-x") and os.path.realpath(parts[5]) == real
            elif inside and line.startswith("Rss:"):
                total += int(parts[1])
    return total


def function_order_coverage(respawn):
    """How many of the functions cli/function-order.txt lists the binary defines (a list gone stale
    after a change of toolchain or dependencies names functions the binary no longer has)."""
    with open(FUNCTION_ORDER) as f:
        listed = [line.strip() for line in f if line.strip() and not line.startswith("#")]
    out = subprocess.run(["nm", "--defined-only", respawn], capture_output=True, text=True, check=True).stdout
    names = {line.split()[-1] for line in out.splitlines() if line.split()}
    return {"listed": len(listed), "found": sum(1 for name in listed if name in names)}


def code_layout(builds, workdir, rounds=3, seconds=5):
    """The same load through builds that differ only in where their functions sit: per round and
    build, a fresh `respawn serve`, 64 connections of GET then of the small POST; its largest RSS
    (sampled every 0.25 s), its code's resident size at the end, and the requests/s."""
    chat_lua = os.path.join(workdir, "chat-layout.lua")
    with open(chat_lua, "w") as f:
        f.write(CHAT_LUA)
    res = {name: {"rss_max_kib": [], "code_kib": [], "rps_get": [], "rps_post": []} for name in builds}
    names = list(builds)
    for r in range(rounds):
        for name in (names if r % 2 == 0 else names[::-1]):
            binary = builds[name]
            with Serve(binary, workdir, mock_args=["--tokens", "1", "--token-latency", "0ms"]) as serve:
                rss = []
                with Sampler(lambda: rss_kib(serve.proc.pid), 0.25, rss):
                    get = wrk(serve.port, 64, seconds, "/health")
                    post = wrk(serve.port, 64, seconds, "/v1/chat/completions", chat_lua)
                m = res[name]
                m["rss_max_kib"].append(max(rss))
                m["code_kib"].append(code_rss_kib(serve.proc.pid, binary))
                m["rps_get"].append(get["rps"])
                m["rps_post"].append(post["rps"])
            log(f"  round {r + 1} {name}: largest RSS {m['rss_max_kib'][-1]} KiB, code {m['code_kib'][-1]} KiB, "
                f"{get['rps']:.0f} / {post['rps']:.0f} req/s")
    return res


# 4c. Profile-guided optimisation ----------------------------------------------------------------

def cpu_seconds(pid):
    """utime + stime of process `pid` (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def build_ab(builds, mock, workdir, rounds=5, seconds=5, latency_seconds=3, bodies=False, envs=None):
    """The same proxy work through builds of the same code (`builds`: name → binary), all serving at
    once, each supervising the same model server binary (`mock`, so that only the proxy differs):
    per round and load (GET, small POST), each build in turn (the order alternating by round) for
    `seconds` at 64 connections (requests/s, and the proxy's CPU per request from /proc), then the
    model server directly and each build for `latency_seconds` at 1 connection (median latency).
    `bodies`: then, for each build in turn, its RSS around 8 concurrent 30 MiB bodies. `envs`: name →
    environment variables of that build's respawn (not of its model server)."""
    chat_lua = os.path.join(workdir, "chat-ab.lua")
    with open(chat_lua, "w") as f:
        f.write(CHAT_LUA)
    loads = {"get": ("/health", None), "post": ("/v1/chat/completions", chat_lua)}
    names = list(builds)
    with contextlib.ExitStack() as stack:
        serves = {name: stack.enter_context(Serve(binary, workdir, mock=mock, child_port=free_port(),
                                                  mock_args=["--tokens", "1", "--token-latency", "0ms"],
                                                  env=(envs or {}).get(name)))
                  for name, binary in builds.items()}
        direct = serves[names[0]].child_port
        for serve in serves.values():  # warm up connections and caches
            for path, script in loads.values():
                wrk(serve.port, 64, 2, path, script)
        res = {load: {name: {"rps": [], "cpu_us": [], "p50_ms": []} for name in [*names, "direct"]}
               for load in loads}
        rss = {name: [] for name in names}
        polled = False
        for r in range(rounds):
            order = names if r % 2 == 0 else names[::-1]
            for load, (path, script) in loads.items():
                for name in order:
                    serve = serves[name]
                    before = cpu_seconds(serve.proc.pid)
                    with Sampler(lambda: rss_kib(serve.proc.pid), 0.5, rss[name]):
                        out = wrk(serve.port, 64, seconds, path, script)
                    used = cpu_seconds(serve.proc.pid) - before
                    m = res[load][name]
                    m["rps"].append(out["rps"])
                    m["cpu_us"].append(used / max(1.0, out["rps"] * seconds) * 1e6)
                    log(f"  round {r + 1} {load} {name}: {out['rps']:.0f} req/s, {m['cpu_us'][-1]:.1f} µs of CPU a request")
                with idle_polling() as polled:
                    for name in ["direct", *order]:
                        port = direct if name == "direct" else serves[name].port
                        out = wrk(port, 1, latency_seconds, path, script)
                        res[load][name]["p50_ms"].append(out["p50_ms"])
                        log(f"  round {r + 1} {load} {name}: median {out['p50_ms']:.3f} ms at 1 connection")
        got = {"results": res, "rss_max_kib": {name: max(v) for name, v in rss.items() if v},
               "rounds": rounds, "seconds": seconds, "latency_seconds": latency_seconds,
               "idle_polling": polled}
        if bodies:
            got["bodies"] = {}
            for name in names:
                got["bodies"][name] = big_bodies_rss(serves[name].proc.pid, serves[name].port)
                b = got["bodies"][name]
                log(f"  {name}: RSS idle {b['idle_kib']} KiB, peak {b['peak_kib']} KiB, a second after {b['after_kib']} KiB")
        return got


# 5. Streaming -----------------------------------------------------------------------------------

# nginx as an SSE proxy: the keep-alive upstream of section 4, with response buffering off so that
# each event is passed on as it comes.
NGINX_SSE_LINE = 'proxy_set_header Connection "";'


def nginx_sse_conf(**kw):
    conf = NGINX_CONF.format(**kw)
    if NGINX_SSE_LINE not in conf:
        raise RuntimeError("the nginx configuration changed: place `proxy_buffering off;` by hand")
    return conf.replace(NGINX_SSE_LINE, NGINX_SSE_LINE + "\n      proxy_buffering off;")


def stream_request(tokens):
    body = json.dumps(chat("stream timing", max_tokens=tokens, stream=True)).encode()
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    return head + body


def stream_pair(ports, tokens):
    """The same streamed completion sent at once to each port (raw sockets, TCP_NODELAY), read side
    by side: for each port, the arrival time of every SSE event after its own request was sent.
    Sent together, the streams see the same moments of the machine, and the mock paces each from
    its start, so chunk i of one is generated when chunk i of the other is."""
    request = stream_request(tokens)
    socks = [socket.create_connection(("127.0.0.1", port), timeout=60) for port in ports]
    sel = selectors.DefaultSelector()
    state = {}
    for s in socks:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for s in socks:
        state[s] = {"sent": time.perf_counter(), "times": [], "buf": b""}
        s.sendall(request)
        sel.register(s, selectors.EVENT_READ)
    deadline = time.time() + 60 + tokens
    while sel.get_map() and time.time() < deadline:
        for key, _ in sel.select(timeout=1.0):
            s = key.fileobj
            data = s.recv(65536)
            now = time.perf_counter()
            st = state[s]
            if data:
                st["buf"] += data
                n = st["buf"].count(b"data: ")
                st["times"] += [now - st["sent"]] * (n - len(st["times"]))
            if not data or b"[DONE]" in st["buf"]:
                sel.unregister(s)
    sel.close()
    for s in socks:
        s.close()
    return [state[s]["times"] for s in socks]


def percentile(xs, q):
    """The nearest-rank q-quantile (0 ≤ q ≤ 1) of xs; nan when empty."""
    if not xs:
        return float("nan")
    ys = sorted(xs)
    return ys[min(len(ys) - 1, max(0, int(round(q * (len(ys) - 1)))))]


def spread(xs):
    """p50, p99 and max of xs (in the unit of xs)."""
    return {"p50": percentile(xs, 0.5), "p99": percentile(xs, 0.99), "max": max(xs) if xs else float("nan")}


def stream_lags(first, second):
    """Per chunk, how much later `second` had it than `first` (ms), over the chunks both had."""
    n = min(len(first), len(second))
    return [(second[i] - first[i]) * 1000 for i in range(n)]


def streaming(respawn, workdir, trials=20, tokens=50, shared_steps=True):
    """Per trial three pairs, each sent at once and read side by side: direct and respawn (the
    figure), direct and nginx (a well-known proxy on the same machine), and direct and direct again
    (the method's floor: what it reads with nothing in between). Which stream of a pair is sent
    first alternates; so does the order of the three pairs. With `shared_steps` the mock gives every
    stream its tokens on one step clock (`--shared-steps`); without, each stream has a timer of its
    own."""
    child_port = free_port()
    mock_args = ["--token-latency", "20ms"] + (["--shared-steps"] if shared_steps else [])
    with Serve(respawn, workdir, mock_args=mock_args, child_port=child_port) as serve, \
            Nginx(workdir, child_port, conf=nginx_sse_conf, prefix="nginx-stream-") as nginx:
        others = {"respawn": serve.port, "nginx": nginx.port, "control": child_port}
        for port in others.values():
            stream_pair([child_port, port], 5)
        worst = {k: [] for k in others}
        first = {k: [] for k in others}
        extra = {k: [] for k in others}
        gaps_direct, gaps_proxy = [], []
        for t in range(trials):
            names = list(others) if t % 2 == 0 else list(reversed(others))
            for name in names:
                if t % 2:
                    o, d = stream_pair([others[name], child_port], tokens)
                else:
                    d, o = stream_pair([child_port, others[name]], tokens)
                lags = stream_lags(d, o)
                extra[name] += lags
                worst[name].append(max(lags))
                first[name].append(lags[0])
                if name == "respawn":
                    n = len(lags)
                    gaps_direct.append(max(b - a for a, b in zip(d, d[1:])) * 1000)
                    gaps_proxy.append(max(b - a for a, b in zip(o, o[1:])) * 1000)
            log(f"  trial {t + 1}: worst chunk later than direct: respawn {worst['respawn'][-1]:.2f} ms, "
                f"nginx {worst['nginx'][-1]:.2f} ms, a second direct stream {worst['control'][-1]:.2f} ms")
        peers = {k: {"worst_extra_ms": worst[k], "first_extra_ms": first[k], "extra_ms": spread(extra[k])}
                 for k in ("nginx", "control")}
        return {"trials": trials, "tokens": tokens, "chunks": n, "first_extra_ms": first["respawn"],
                "worst_extra_ms": worst["respawn"], "extra_ms": spread(extra["respawn"]),
                "max_gap_direct_ms": gaps_direct, "max_gap_proxy_ms": gaps_proxy, "nginx": nginx.version(),
                "peers": peers, "shared_steps": shared_steps}


# 6. respawn's own time in a restart -------------------------------------------------------------

def restart_time(respawn, workdir, trials=3):
    steps = []
    for _ in range(trials):
        with Serve(respawn, workdir, log_level="debug") as serve:
            completion_ok(serve.port, "before the restart")
            serve.restart()
            wait_until(lambda: serve.status().get("generation") == 2 and serve.state() == "ready", 60)
            wait_until(lambda: any("recovered:" in l for l in serve.log_lines()), 10)
            steps += restart_steps(serve.log_lines())
    return steps


# 7. The cost of supervising many servers --------------------------------------------------------

def scaling(respawn, workdir, sizes=(1, 8, 64), window=30):
    out = []
    for n in sizes:
        # Distinct child ports chosen here: 64 instances each picking "a free port" at the same
        # moment can pick the same one.
        ports = set()
        while len(ports) < n:
            ports.add(free_port())
        serves = [Serve(respawn, workdir, log_level="warn", child_port=p) for p in sorted(ports)]
        try:
            for s in serves:
                s.__enter__()
            time.sleep(5)
            pids = [s.proc.pid for s in serves]
            guardians = [s.status().get("guardian_pid") for s in serves]
            mocks = [s.server_pid() for s in serves]
            t0 = time.time()
            c0 = sum(cpu_ticks(p) for p in pids)
            g0 = sum(cpu_ticks(p) for p in guardians if p)
            time.sleep(window)
            c1 = sum(cpu_ticks(p) for p in pids)
            g1 = sum(cpu_ticks(p) for p in guardians if p)
            elapsed = time.time() - t0
            out.append({
                "servers": n,
                "cpu_pct_per_server": (c1 - c0) / CLK_TCK / elapsed * 100 / n,
                "guardian_cpu_pct": (g1 - g0) / CLK_TCK / elapsed * 100 / n,
                "rss_kib_per_server": sum(rss_kib(p) for p in pids) / n,
                "guardian_rss_kib": sum(rss_kib(p) for p in guardians if p) / n,
                "mock_rss_kib": sum(rss_kib(p) for p in mocks if p) / n,
                "all_ready": all(s.state() == "ready" for s in serves),
            })
            log(f"  {n} servers: {out[-1]['cpu_pct_per_server']:.3f} % CPU and "
                f"{out[-1]['rss_kib_per_server'] / 1024:.1f} MiB each")
        finally:
            for s in serves:
                if s.proc.poll() is None:
                    s.proc.send_signal(signal.SIGTERM)
            for s in serves:
                s.stop()
    return out


# 8. Many concurrent streams ---------------------------------------------------------------------

def stream_clients_path(respawn):
    """The load generator of this part (examples/stream_clients.rs), built beside the binary."""
    return example_path(respawn, "stream_clients")


def many_streams_round(client, port, streams, tokens, ramp_s):
    """`streams` streamed chat completions at once (their starts spread evenly over `ramp_s`), sent by
    the Rust client: each stream's event arrival times after its request, in seconds (None if it
    failed), and the client's CPU time."""
    before = os.times()
    out = subprocess.run([client, str(port), str(streams), str(tokens), str(int(ramp_s * 1000))],
                         capture_output=True, text=True, check=True).stdout
    after = os.times()
    expected = tokens + 2  # the tokens, the finish chunk, [DONE]
    offsets = []
    for line in out.splitlines():
        times = [int(x) / 1e6 for x in line.split()] if line != "failed" else []
        offsets.append(times if len(times) == expected else None)
    cpu = (after.children_user + after.children_system) - (before.children_user + before.children_system)
    return offsets, cpu


def proc_tree(pid):
    return [pid] + children(pid)


def many_streams(respawn, workdir, streams=1000, tokens=100, latency_ms=20, rounds=5, ramp_s=1.0):
    """Many concurrent streams three ways (direct, nginx, respawn), rounds interleaved: the proxy's
    CPU (utime + stime from /proc, nginx's master and workers together) per stream, its peak RSS
    (sampled), and each chunk's lag."""
    client = stream_clients_path(respawn)
    child_port = free_port()
    with Serve(respawn, workdir, mock_args=["--token-latency", f"{latency_ms}ms"], log_level="warn",
               child_port=child_port) as serve, \
            Nginx(workdir, child_port, conf=nginx_sse_conf, prefix="nginx-sse-") as nginx:
        mock_pid = serve.server_pid()
        targets = {"direct": (child_port, lambda: []),
                   "nginx": (nginx.port, nginx.pids),
                   "respawn": (serve.port, lambda: [serve.proc.pid])}
        for port, _ in targets.values():  # warm up: connections, workers, allocators
            many_streams_round(client, port, min(streams, 100), 5, 0.1)
        out = {k: {"offsets": [], "failed": 0, "cpu_s": [], "rss_kib": [], "mock_cpu_s": [],
                   "client_cpu_s": [], "wall_s": [], "machine_busy": []} for k in targets}
        for r in range(rounds):
            for name, (port, pids) in targets.items():
                c0 = sum(cpu_ticks(p) for p in pids())
                m0 = cpu_ticks(mock_pid)
                b0, a0 = machine_ticks()
                t0 = time.time()
                with Sampler(lambda: sum(rss_kib(p) for p in pids()), 0.1) as rss:
                    offsets, client_cpu = many_streams_round(client, port, streams, tokens, ramp_s)
                wall = time.time() - t0
                b1, a1 = machine_ticks()
                res = out[name]
                res["machine_busy"].append((b1 - b0) / max(1, a1 - a0))
                res["cpu_s"].append((sum(cpu_ticks(p) for p in pids()) - c0) / CLK_TCK)
                res["mock_cpu_s"].append((cpu_ticks(mock_pid) - m0) / CLK_TCK)
                res["client_cpu_s"].append(client_cpu)
                res["wall_s"].append(wall)
                res["rss_kib"].append(max(rss.values) if rss.values else 0)
                res["offsets"].append([o for o in offsets if o is not None])
                res["failed"] += sum(1 for o in offsets if o is None)
                log(f"  round {r + 1} {name}: {wall:.1f} s, proxy CPU {res['cpu_s'][-1]:.2f} s, mock CPU "
                    f"{res['mock_cpu_s'][-1]:.2f} s, client CPU {res['client_cpu_s'][-1]:.2f} s, machine "
                    f"{res['machine_busy'][-1]:.0%} busy, {sum(1 for o in offsets if o is None)} failed")
    return summarize_many_streams(out, streams=streams, tokens=tokens, latency_ms=latency_ms, rounds=rounds,
                                  ramp_s=ramp_s)


def summarize_many_streams(out, **params):
    """Each chunk's lag: its time after its stream's first chunk, minus the median of that time over
    all direct streams (so the first chunk, which carries the connection and the request, is apart).
    Percentiles are taken per round and the median over the rounds is kept (a stall of the whole
    machine during one round then does not stand for all); a path's extra lag at a percentile is
    its figure minus direct's. The first chunk's extra is its time after the request minus the
    direct median, likewise."""
    direct = [o for rnd in out["direct"]["offsets"] for o in rnd]
    n = min((len(o) for o in direct), default=0)
    ref = [median([o[i] - o[0] for o in direct]) for i in range(n)]
    ref_first = median([o[0] for o in direct])
    summary = dict(params)
    for name, res in out.items():
        lag_rounds, first_rounds = [], []
        for rnd in res["offsets"]:
            lag_rounds.append(spread([((o[i] - o[0]) - ref[i]) * 1000 for o in rnd for i in range(1, n)]))
            first_rounds.append(spread([(o[0] - ref_first) * 1000 for o in rnd]))
        summary[name] = {
            "streams_done": sum(len(rnd) for rnd in res["offsets"]), "failed": res["failed"],
            "lag_ms": {q: median([x[q] for x in lag_rounds]) for q in ("p50", "p99", "max")},
            "first_ms": {q: median([x[q] for x in first_rounds]) for q in ("p50", "p99", "max")},
            "lag_rounds_ms": lag_rounds,
            "cpu_s": res["cpu_s"], "mock_cpu_s": res["mock_cpu_s"], "client_cpu_s": res["client_cpu_s"],
            "wall_s": res["wall_s"], "rss_kib": res["rss_kib"], "machine_busy": res.get("machine_busy", []),
            "cpu_ms_per_stream": median([c * 1000 / params["streams"] for c in res["cpu_s"]]),
        }
    for name in ("nginx", "respawn"):
        s = summary[name]
        s["extra_lag_ms"] = {q: s["lag_ms"][q] - summary["direct"]["lag_ms"][q] for q in ("p50", "p99", "max")}
    return summary


# The document -----------------------------------------------------------------------------------

def busy_cell(x):
    busy = x.get("machine_busy") or []
    return f"{median(busy):.0%}" if busy else "—"


def verdict(ok):
    return "met" if ok else "**missed**"


def fmt(x, digits=1):
    return "n/a" if x is None else f"{x:.{digits}f}"


def build_ab_table(add, res, rss, builds):
    """The table of a side-by-side of builds (`build_ab`'s results): `builds` is (name, label) pairs."""
    add("| Build | Load | Requests/s at 64 conns (min–max) | CPU per request (min–max) | Median latency, 1 conn (min–max) | Added over direct | Largest RSS |")
    add("|---|---|---|---|---|---|---|")
    for name, label in builds:
        for load in ("get", "post"):
            m, d = res[load][name], res[load]["direct"]
            add(f"| {label} | {OVERHEAD_LOADS[load]} | {median(m['rps']):.0f} ({min(m['rps']):.0f}–{max(m['rps']):.0f}) | "
                f"{median(m['cpu_us']):.1f} µs ({min(m['cpu_us']):.1f}–{max(m['cpu_us']):.1f}) | "
                f"{median(m['p50_ms']):.3f} ms ({min(m['p50_ms']):.3f}–{max(m['p50_ms']):.3f}) | "
                f"+{median(m['p50_ms']) - median(d['p50_ms']):.3f} ms | {rss[name] / 1024:.1f} MiB |")


def build_ab_rounds(a, b):
    """Build b against build a, round by round (one load of `build_ab`'s results): requests/s b/a,
    CPU per request b/a, and the latency at 1 connection b saved (ms)."""
    return (round_ratios(b["rps"], a["rps"]),
            round_ratios(b["cpu_us"], a["cpu_us"]),
            [x - y for x, y in zip(a["p50_ms"], b["p50_ms"])])


def write_doc(path, r, command, machine, started, finished, reruns=()):
    L = []
    add = L.append
    add("# Benchmarks")
    add("")
    add("Every figure below comes from one run of the benchmark script on the machine described, all "
        "measured side by side in that run. Nothing here is a pass/fail test: machines are noisy, so "
        "read the figures as this machine's, and rerun the script on yours.")
    add("")
    add(f"- Command: `{command}` (release build by `scripts/release-build.sh`: fat LTO, `codegen-units = 1`, "
        f"`panic = \"abort\"`, compiled with the profile `cli/pgo/respawn.profdata`)")
    add(f"- Machine: {machine['nproc']} cores, {machine['cpu']}, Linux {machine['kernel']} (scheduling by session, "
        f"autogroup: {machine.get('autogroup', 'unknown')}; CPU idle driver: {machine.get('cpuidle', 'unknown')}), "
        f"{machine['mem']}")
    add(f"- Tools: {machine['rustc']}; {r['overhead']['nginx']}; {machine['wrk']}; Python {machine['python']}")
    add(f"- Date: {started} to {finished} (UTC)")
    for rerun in reruns:
        add(f"- Rerun of {', '.join(rerun['parts'])} on {rerun['started']} to {rerun['finished']} (UTC) "
            f"with `--only`; the other figures are from the run above")
    add("- The model server is `respawn mock` (a real process; see `docs/MOCK.md`) with its defaults "
        "unless stated; respawn runs with its default settings (health probe every 1 s, 1 s timeout, "
        "3 failures; progress timeout 15 s; canary every 10 s idle, 10 s timeout; stop grace 5 s for "
        "an operator's restart, SIGKILL at once after a hang; readiness polled from 1 ms, at most 20 ms apart).")
    add("")

    targets = []
    # 1
    hh = r["hard_hang"]
    rs = [t["recovery_s"] for t in hh["respawn"] if t["recovery_s"] is not None]
    lost = sum(t["lost"] for t in hh["respawn"])
    graceful = hh.get("respawn_grace") or []
    rg = [t["recovery_s"] for t in graceful if t["recovery_s"] is not None]
    s60 = [t["recovery_s"] for t in hh["original_60"] if t["recovery_s"] is not None]
    sT = [t["recovery_s"] for t in hh["original_same"] if t["recovery_s"] is not None]
    m_rs = median(rs)

    def after_detection(trials):
        return [t["recovery_s"] - t["detect_s"] for t in trials
                if t.get("recovery_s") is not None and t.get("detect_s") is not None]

    def detection(trials):
        return [t["detect_s"] for t in trials if t.get("detect_s") is not None]

    add("## 1. Recovery from a hard hang (SIGSTOP)")
    add("")
    add("A client sends small chat completions one after another; the model server is frozen with "
        "SIGSTOP; the figure is the time from the freeze to the next successful answer. The original "
        "design's approach is reproduced faithfully by `benches/driver.py` (`OriginalDesignManager`): "
        "a request timeout T, then `terminate()`, `wait(timeout=5)`, `kill()`, `sleep(3)`, start, poll "
        "`/health` (every 1 s) until it answers, and retry the request. It runs against the same mock, "
        "in the same run. `respawn --hang-stop grace` is respawn as it stopped a hung server before: "
        "SIGTERM (with SIGCONT) and the grace, instead of SIGKILL at once.")
    add("")
    add("| Approach | Trials | Freeze → next success (median) | Each trial | Freeze → detected (median) | Detected → next success (median) | Requests lost |")
    add("|---|---|---|---|---|---|---|")
    for label, trials, vals in (("respawn (defaults)", hh["respawn"], rs),
                                ("respawn, `--hang-stop grace` (the stop before)", graceful, rg)):
        if not trials:
            continue
        add(f"| {label} | {len(vals)} | **{fmt(median(vals), 2)} s** | {', '.join(fmt(x, 2) for x in vals)} s | "
            f"{fmt(median(detection(trials)), 2)} s | {fmt(median(after_detection(trials)), 2)} s | "
            f"{sum(t['lost'] for t in trials)} |")
    add(f"| the original design, T = 60 s | {len(s60)} | {fmt(median(s60), 1)} s | {', '.join(fmt(x, 1) for x in s60)} s | — | — | "
        f"{sum(t['lost'] for t in hh['original_60'])} |")
    add(f"| the original design, T = {hh['same_t']} s (respawn's figure, rounded up) | {len(sT)} | {fmt(median(sT), 1)} s | "
        f"{', '.join(fmt(x, 1) for x in sT)} s | — | — | {sum(t['lost'] for t in hh['original_same'])} |")
    add("")
    add(f"Ratio: the original design's way takes **{fmt(median(s60) / m_rs, 1)}×** as long as respawn at its 60 s "
        f"timeout, and **{fmt(median(sT) / m_rs, 1)}×** as long even with a {hh['same_t']} s timeout "
        "(its fixed 5 s wait and 3 s sleep remain, and a timeout that short fails slow generations).")
    add("")
    add("Detection is the silence rule: a probe timed out and the server has said nothing (no probe "
        "answer, no byte of any answer) for the detection budget (1 s timeout + 2 × 1 s interval = 3 s) "
        "while asked; with the client's requests flowing, its last word is the moment of the freeze, and "
        "the probes after the first unanswered one are placed to end exactly when the budget does. Before "
        "it, detection waited for 3 failed probes, the first of them sent up to one interval after the "
        "freeze: 3 to 4 s. What follows detection is respawn's stop, the new child's start and respawn "
        "noticing it ready.")
    add("")
    m_after = median(after_detection(hh["respawn"]))
    targets.append(("Hard hang: freeze → next success ≤ detection budget (3 probes × 1 s) + 0.3 s, none lost",
                    f"{fmt(m_rs, 2)} s, {lost} lost", m_rs <= 3.3 and lost == 0))
    targets.append(("Hard hang: detected → next success ≤ 0.3 s, none lost", f"{fmt(m_after, 2)} s, {lost} lost",
                    m_after <= 0.3 and lost == 0))
    # 2
    db, di = r["deadlock_busy"], r["deadlock_idle"]
    add("## 2. Health-green engine deadlock")
    add("")
    add("`respawn mock --deadlock-after N`: completions hang while `/health` stays 200 and the token "
        "counter stops. Times are from the deadlock (the mock's own log line) to respawn's \"hang "
        "detected\" and to the client's next successful answer, read from respawn's log.")
    add("")
    add("| Case | Detector (cause) | Deadlock → detected | Deadlock → next success | Lost |")
    add("|---|---|---|---|---|")
    add(f"| busy: a request in flight | {db['cause']} | {fmt(db['detect_s'])} s | **{fmt(db['next_success_s'])} s** | {db['lost']} |")
    add(f"| idle: a user arrives 1 s into it | {di['cause']} | {fmt(di['detect_s'])} s | **{fmt(di['next_success_s'])} s** | {di['lost']} |")
    add(f"| the original design (60 s timeout), either case | none: `/health` is green | ≥ 60 s | {fmt(median(s60))} s (as measured in 1.) | — |")
    add("")
    add(f"Idle: the deadlock showed at the first completion after the client went idle, which was respawn's "
        f"canary, {fmt(di['idle_to_deadlock_s'])} s into the idle time; the worst case from going idle to "
        f"detection is the canary interval plus its timeout (20 s by default); here {fmt(di['idle_to_detect_s'])} s. "
        "The original design has no idle detection at all: the next user waits its full timeout.")
    add("")
    worst_dl = max(x for x in (db["next_success_s"], di["next_success_s"]) if x is not None)
    targets.append(("Deadlock (busy and idle) → next success ≤ 25 s", f"{fmt(db['next_success_s'])} s / {fmt(di['next_success_s'])} s",
                    worst_dl <= 25 and db["lost"] == 0 and di["lost"] == 0))
    # 3
    st = r["storm"]
    add("## 3. Restart storm")
    add("")
    add(f"{st['requests']} chat completions (300 tokens at 10 ms each) in flight through respawn "
        f"(its status showed {st['in_flight_at_freeze']} in flight), then the model server is frozen.")
    add("")
    add("| Requests in flight | Restarts | Succeeded |")
    add("|---|---|---|")
    add(f"| {st['requests']} | **{st['restarts']}** | **{st['succeeded']}** |")
    add("")
    targets.append(("Storm: exactly 1 restart, 256 succeed", f"{st['restarts']} restart(s), {st['succeeded']} succeeded",
                    st["restarts"] == 1 and st["succeeded"] == st["requests"]))
    # 4
    ov = r["overhead"]
    by_load = ov["results"] if "get" in ov["results"] else {"get": ov["results"]}  # runs before POST was measured
    add("## 4. Proxy overhead")
    add("")
    add(f"The same child (`respawn mock --tokens 1 --token-latency 0ms`), the same load generator (wrk), "
        f"{len(by_load['get'])} ways: direct, through {ov['nginx']} as a keep-alive reverse proxy "
        "(`upstream { keepalive 64; }`, `proxy_http_version 1.1`, `proxy_set_header Connection \"\"`, "
        "`worker_processes auto`), through `examples/bare_proxy.rs` (\"bare\": a reverse proxy on actix-web and "
        "awc with respawn's client and header settings and nothing of its supervision: no held body, no "
        "in-flight table, no hang watch, no admission; the floor of the stack respawn is built on), "
        + ("through `benches/hyper_proxy` (\"hyper\": the same plain proxy on hyper 1 and hyper-util's pooled "
           "client, set up as bare is: a worker per core, `TCP_NODELAY` both ways, the same hop-by-hop rules; "
           "another well-kept Rust HTTP stack, measured so that the choice of actix-web and awc is weighed "
           "against it) " if "hyper" in by_load["get"] else "")
        + "and through `respawn serve` (default workers: one per core, as for bare); two loads: "
        "`GET /health` and a small `POST /v1/chat/completions` (a wrk script; the mock answers 1 token "
        f"at once). Runs interleaved (per round and load: {', '.join(k for k in by_load['get'])}) × {ov['rounds']}; the "
        f"median of the rounds is shown with their spread (min–max). Requests/s: {ov['seconds']} s at 64 "
        f"connections; latency: wrk's median over {ov['latency_seconds']} s at 1 connection"
        + (", with the CPUs' idle state held to polling (`/dev/cpu_dma_latency` = 0) during those runs: on "
           "this VM a CPU woken from a halt takes longer than the proxies' own work, and by a different "
           "amount each run, so without it the added latencies were mostly the wake-ups'"
           if ov.get("idle_polling") else "")
        + ". The ratio's "
        "spread is that of the per-round ratios (each round's respawn over the same round's nginx). respawn "
        "and nginx are started in the benchmark's own session, as wrk is (see \"How the proxies are started, "
        "and the scheduler\" below).")
    add("")
    added_1c = {}  # load → respawn's added median latency at 1 connection, for the table of changes
    for load, figures in by_load.items():
        rps = {k: median(v["rps"]) for k, v in figures.items()}
        p50 = {k: median(v["p50_ms"]) for k, v in figures.items()}
        add(f"**{OVERHEAD_LOADS.get(load, load)}**")
        add("")
        add("| Path | Requests/s at 64 conns (min–max) | Each round | Median latency, 1 conn (min–max) | Added over direct | Non-2xx |")
        add("|---|---|---|---|---|---|")
        for k in (k for k in ("direct", "nginx", "bare", "hyper", "respawn") if k in figures):
            f = figures[k]
            added = "—" if k == "direct" else f"{p50[k] - p50['direct']:+.3f} ms"
            add(f"| {k} | {rps[k]:.0f} ({min(f['rps']):.0f}–{max(f['rps']):.0f}) | "
                f"{', '.join(f'{x:.0f}' for x in f['rps'])} | {p50[k]:.3f} ms "
                f"({min(f['p50_ms']):.3f}–{max(f['p50_ms']):.3f}) | {added} | {f['non2xx']} |")
        add("")
        ratio = rps["respawn"] / rps["nginx"]
        ratios = round_ratios(figures["respawn"]["rps"], figures["nginx"]["rps"])
        added = added_1c[load] = p50["respawn"] - p50["direct"]
        nginx_added = p50["nginx"] - p50["direct"]
        # Two readings of the same rounds: the ratio of the medians, and the median of each round's
        # ratio (the pair measured back to back). The target counts as met only when both reach it.
        paired = median(ratios)
        add(f"respawn / nginx requests/s: **{ratio:.2f}** (the ratio of the medians; each round's ratio "
            f"{min(ratios):.2f}–{max(ratios):.2f}, their median **{paired:.2f}**); added "
            f"median latency at 1 connection: respawn **{added:+.3f} ms**, nginx {nginx_added:+.3f} ms.")
        add("")
        def paired_ratio(a, b):
            return median(round_ratios(figures[a]["rps"], figures[b]["rps"]))
        if "bare" in figures:
            add(f"The stack's floor: bare / nginx requests/s **{paired_ratio('bare', 'nginx'):.2f}** and respawn / "
                f"bare **{paired_ratio('respawn', 'bare'):.2f}** (medians of the rounds' ratios); added median "
                f"latency at 1 connection: bare {p50['bare'] - p50['direct']:+.3f} ms. The first is what actix-web "
                "and awc cost against nginx on this machine when used plainly; the second is respawn against that "
                "plain use: its supervision's cost net of what its ways of using the stack save (the date "
                "service run aside, whole answers at once; \"What changed\" above). Above 1, respawn with its "
                "supervision is leaner than the stack used plainly.")
            add("")
        if "hyper" in figures:
            add(f"Another stack: hyper / nginx requests/s **{paired_ratio('hyper', 'nginx'):.2f}**, hyper / bare "
                f"**{paired_ratio('hyper', 'bare'):.2f}** and respawn / hyper **{paired_ratio('respawn', 'hyper'):.2f}** "
                f"(medians of the rounds' ratios); added median latency at 1 connection: hyper "
                f"{p50['hyper'] - p50['direct']:+.3f} ms. hyper / bare is what the choice of stack alone is worth "
                "for a plain proxy on this machine; respawn keeps actix-web and awc (the design names them), so "
                "its requests/s are bounded by bare's, not by hyper's.")
            add("")
        name = OVERHEAD_LOADS.get(load, load).split(" (")[0]
        targets.append((f"Proxy, {name}: requests/s ≥ 0.9 × nginx (goal ≥ 1.1 ×), as the ratio of the medians "
                        "and as the median of the rounds' ratios",
                        f"{ratio:.2f} × and {paired:.2f} × (rounds {min(ratios):.2f}–{max(ratios):.2f})",
                        ratio >= 0.9 and paired >= 0.9))
        targets.append((f"Proxy, {name}: added median latency at 1 connection ≤ nginx's",
                        f"{added:+.3f} ms vs {nginx_added:+.3f} ms", added <= nginx_added))
    rss_mib = (ov["rss_max_kib"] or 0) / 1024
    add(f"respawn's largest RSS during its 64-connection runs: **{rss_mib:.1f} MiB** (VmRSS of the "
        "`respawn serve` process, sampled every 0.5 s). On 2 cores the load generator, the proxy and the "
        "model server share the CPUs, so the proxies' absolute figures are lower than they would be on "
        "separate machines; the ratio is the comparable figure.")
    add("")
    targets.append(("Proxy: RSS under load ≤ 10 MiB", f"{rss_mib:.1f} MiB", rss_mib <= 10))
    bodies = ov.get("bodies")
    if bodies:
        idle, peak, after = (bodies[k] / 1024 for k in ("idle_kib", "peak_kib", "after_kib"))
        add(f"Large bodies: {bodies['bodies']} concurrent `POST`s of {bodies['body_bytes'] / 2**20:.0f} MiB each "
            "through respawn to the mock (which may refuse them; respawn holds each whole body first, so that "
            f"it can be sent again; answers: {', '.join(str(x) for x in bodies['statuses'])}). respawn's RSS: "
            f"**{idle:.1f} MiB** at rest before, **{peak:.1f} MiB** at the peak (sampled every 50 ms), "
            f"**{after:.1f} MiB** a second after they ended.")
        add("")
        targets.append((f"Proxy: RSS a second after {bodies['bodies']} × {bodies['body_bytes'] / 2**20:.0f} MiB bodies "
                         "back near idle (≤ idle + 2 MiB)",
                        f"{after:.1f} MiB (idle {idle:.1f}, peak {peak:.1f})", after - idle <= 2))
    la = r.get("launch")
    if la:
        add("### How the proxies are started, and the scheduler")
        add("")
        add(f"This kernel schedules by session (autogroup: `/proc/sys/kernel/sched_autogroup_enabled` is "
            f"{la['autogroup']}): the CPU is shared fairly between sessions first, then between the threads of "
            "each. respawn and the model server it supervises are one session, as they are in use. Runs "
            "before 2026-12-03 started respawn and nginx each in a session of its own: nginx's path then had "
            "three shares (wrk's session, nginx's, and the model server's in respawn's session), respawn's path "
            "two, with respawn and the model server splitting one. Both proxies are now started in the "
            "driver's session (each leading a process group of its own, so that it can still be stopped as a "
            "whole), where wrk, the proxy and the model server compete as plain threads. The two launches, "
            f"side by side in this run: per round (× {la['rounds']}, order alternating) a fresh respawn and "
            f"nginx in front of its model server, {la['seconds']} s at 64 connections through each.")
        add("")
        add("| Launch | Load | nginx req/s (median) | respawn req/s (median) | respawn / nginx, each round | Median of the rounds' ratios |")
        add("|---|---|---|---|---|---|")
        labels = {"group": "one session (every part now)", "sessions": "a session each (before)"}
        for name in ("group", "sessions"):
            for load, got in la["results"][name].items():
                ratios = round_ratios(got["respawn"], got["nginx"])
                add(f"| {labels[name]} | {OVERHEAD_LOADS.get(load, load).split(' (')[0]} | {median(got['nginx']):.0f} | "
                    f"{median(got['respawn']):.0f} | {', '.join(f'{x:.2f}' for x in ratios)} | **{median(ratios):.2f}** |")
        add("")
    cl = r.get("code_layout")
    if cl:
        b, cov = cl["builds"], cl["coverage"]
        add("### Where the code sits, and the resident size")
        add("")
        add("Release builds hand the linker `cli/function-order.txt` (see `cli/build.rs`): the functions that "
            "ran while `respawn serve` started, proxied GETs, small and streamed chat completions from 64 "
            "connections at once, answered its control routes, restarted its child and shut down (a callgrind "
            "run made by `scripts/function-order.sh`), hottest first. The linker places them together at the "
            "start of the code, so a serving process touches one compact block of pages instead of pages "
            "spread over the whole binary, each of which the kernel maps with its neighbours. In this run "
            f"the build has {cov['found']:,} of the {cov['listed']:,} functions the list names. Below, the same "
            "release build linked with the list and without it (`RESPAWN_FUNCTION_ORDER=off`): per round "
            "and build a fresh `respawn serve`, 5 s of GET and 5 s of the small POST at 64 connections (wrk), "
            "builds alternating; medians of 3 rounds.")
        add("")
        add("| Build | Largest RSS under load | Each round | Its code resident (r-x mapping) | Requests/s GET | Requests/s POST |")
        add("|---|---|---|---|---|---|")
        for name, label in (("unordered", "functions where the compiler put them"), ("ordered", "with the function order (the default)")):
            m = b[name]
            add(f"| {label} | **{median(m['rss_max_kib']) / 1024:.1f} MiB** | "
                f"{', '.join(f'{x / 1024:.1f}' for x in m['rss_max_kib'])} MiB | {median(m['code_kib']) / 1024:.1f} MiB | "
                f"{median(m['rps_get']):.0f} | {median(m['rps_post']):.0f} |")
        add("")
    ab = r.get("pgo")
    if ab:
        res, rss = ab["results"], ab["rss_max_kib"]
        add("### Profile-guided optimisation")
        add("")
        add("Release builds made by `scripts/release-build.sh` (which `scripts/bench.sh` uses) hand the compiler "
            "`cli/pgo/respawn.profdata`: how often each branch and call ran in an instrumented build of "
            "`respawn serve` doing the work of the function-order run above (made by `scripts/pgo-profile.sh`). "
            "The compiler lays the paths that run out straight, inlines along them and moves the rest aside. "
            "Below, that build and the same code built without the profile (`RESPAWN_PGO=off`, the function "
            "order kept), serving side by side, each supervising the same model server binary: per round and "
            f"load, each build for {ab['seconds']} s at 64 connections (wrk), then the model server directly and each "
            f"build for {ab['latency_seconds']} s at 1 connection"
            + (" (the CPUs' idle state held to polling, as in section 4)" if ab.get("idle_polling") else "")
            + f", the builds' order alternating by round; medians of "
            f"{ab['rounds']} rounds, with the spread. CPU per request: utime + stime of `respawn serve` from `/proc` over "
            "the 64-connection run, divided by the requests it answered. The function order is made from the "
            "build with the profile, whose functions differ from the other's by what was inlined, so the twin "
            "without the profile lacks some of the functions the list names"
            + (f" ({ab['coverage']['no_pgo']['found']:,} of {ab['coverage']['no_pgo']['listed']:,} found, against "
               f"{ab['coverage']['pgo']['found']:,})" if ab.get("coverage") else "")
            + ": its larger RSS is mostly the order's loss, not the profile's gain.")
        add("")
        build_ab_table(add, res, rss, (("no_pgo", "without the profile"), ("pgo", "with the profile (the release build)")))
        add("")
        for load in ("get", "post"):
            ratios, _, paired = build_ab_rounds(res[load]["no_pgo"], res[load]["pgo"])
            add(f"- {OVERHEAD_LOADS[load]}: requests/s with the profile over without, per round: "
                f"{', '.join(f'{x:.2f}' for x in ratios)} (median {median(ratios):.2f}); latency at 1 connection "
                f"saved per round: {', '.join(f'{x * 1000:+.0f}' for x in paired)} µs (median {median(paired) * 1000:+.0f} µs).")
        add("")
    al = r.get("allocator")
    if al:
        res, rss = al["results"], al["rss_max_kib"]
        add("### The allocator")
        add("")
        tcache = "tcache" in res["get"]
        # The setting the run used (recorded with its figures), and the number of blocks it sets.
        tunables = al.get("tunables", TCACHE_TUNABLES)
        tcache_count = tunables.rsplit("=", 1)[-1]
        add("The release build allocates with the C library's allocator (glibc here); `--features mimalloc` "
            "builds the same program on mimalloc (`cli/src/allocator.rs`; built without transparent huge pages, "
            "and after a large body it collects its free memory at once and again 100 ms later). Below, the "
            "release build"
            + (f", the release build again with glibc's per-thread cache holding up to {tcache_count} free blocks "
               f"of each size instead of 7 (`GLIBC_TUNABLES={tunables}` in "
               "respawn's environment; its model server runs without it)," if tcache else "")
            + " and the same code and profile built with `--features mimalloc`, serving side by "
            "side as in the part above, each supervising the same model server binary (the release build's "
            f"`respawn mock`, so only the proxy's allocator differs); medians of {al['rounds']} rounds, with the "
            "spread. After the rounds, each build in turn passes 8 concurrent 30 MiB bodies; its RSS at rest "
            "before, at the peak and a second after. The function order and the compiler profile name the "
            "release build's functions; the other build's own functions carry other names (its features differ)"
            + (f": {al['coverage']['mimalloc']['found']:,} of {al['coverage']['mimalloc']['listed']:,} found, against "
               f"{al['coverage']['system']['found']:,}" if al.get("coverage") else "")
            + ". mimalloc keeps pages of each size class for each thread: its largest RSS under load here is "
            f"{rss['mimalloc'] / 1024:.1f} MiB against {rss['system'] / 1024:.1f} MiB, "
            + ("over the proxy's memory budget (≤ 10 MiB under load), which is why the release build stays on "
               "the C library's allocator." if rss["mimalloc"] > 10 * 1024 else
               "within the proxy's memory budget (≤ 10 MiB under load) in this run; the release build stays on "
               "the C library's allocator, whose margin to that budget is the larger."))
        add("")
        if tcache:
            add("Why the allocator matters here: in a profile of the release build under the same 64 connections "
                "(`perf record -e cycles:u -p PID`, its samples added up by symbol), about a fifth of respawn's "
                "user-space time was glibc's `malloc` and `free` outside their per-thread cache (`_int_malloc`, "
                "`_int_free`, `malloc_consolidate`, `unlink_chunk`). A proxied request allocates about twenty "
                "blocks; six are larger than the 1032 bytes that cache takes (awc's two 8 KiB buffers, its boxed "
                "send, the response head it decodes, actix-web's boxed handler), and with dozens of requests in "
                "flight per worker the small ones overflow its 7 places per size. A larger per-thread cache keeps "
                "more of them out of the arenas; what it costs is resident memory, since a thread keeps what it "
                "freed "
                f"({rss['tcache'] / 1024:.1f} MiB under load against {rss['system'] / 1024:.1f} MiB here). glibc "
                "reads the setting only when a process starts, from its environment: respawn leaves it to the "
                "deployment, which sets it for respawn's own process (the model server inherits respawn's "
                "environment, so a unit that sets it for respawn alone runs the server through `env -u "
                "GLIBC_TUNABLES`).")
            add("")
        rows = [("system", "the C library's allocator (the release build)")]
        if tcache:
            rows.append(("tcache", f"the same, `GLIBC_TUNABLES={tunables}`"))
        rows.append(("mimalloc", "mimalloc (`--features mimalloc`)"))
        build_ab_table(add, res, rss, rows)
        add("")
        others = ([("tcache", "with the larger per-thread cache")] if tcache else []) + [("mimalloc", "on mimalloc")]
        for load in ("get", "post"):
            for name, label in others:
                ratios, cpu, paired = build_ab_rounds(res[load]["system"], res[load][name])
                add(f"- {OVERHEAD_LOADS[load]}: requests/s {label} over the release build's, per round: "
                    f"{', '.join(f'{x:.2f}' for x in ratios)} (median {median(ratios):.2f}); CPU per request, the same "
                    f"ratio: {', '.join(f'{x:.2f}' for x in cpu)} (median {median(cpu):.2f}); latency at 1 connection "
                    f"saved per round: {', '.join(f'{x * 1000:+.0f}' for x in paired)} µs (median {median(paired) * 1000:+.0f} µs).")
        for name, label in (("system", "the C library's allocator"), ("tcache", "with the larger per-thread cache"),
                            ("mimalloc", "mimalloc")):
            b = al.get("bodies", {}).get(name)
            if b:
                add(f"- 8 × 30 MiB bodies, {label}: RSS {b['idle_kib'] / 1024:.1f} MiB at rest, {b['peak_kib'] / 1024:.1f} "
                    f"MiB at the peak, {b['after_kib'] / 1024:.1f} MiB a second after (answers {', '.join(map(str, b['statuses']))}).")
        add("")
    # 5
    sm = r["streaming"]
    add("## 5. Streaming")
    add("")
    peers = sm.get("peers", {})
    if peers:
        add(f"A streamed chat completion of {sm.get('tokens', 50)} tokens at 20 ms each; the arrival time of every "
            f"SSE chunk measured at the client (raw sockets, TCP_NODELAY). {sm['trials']} trials, each of three "
            "pairs: direct and through respawn, direct and through nginx "
            f"({sm.get('nginx', 'nginx')}, `proxy_buffering off`), and direct and direct again. The two "
            "requests of a pair are sent at once (which one first alternates, as does the order of the "
            "pairs) and read side by side. "
            + ("The mock runs with `--shared-steps`: one step clock gives every stream its next token at "
               "the same moment, as a batching engine's decode step does, so chunk i of both streams of a "
               "pair is written on the same event. "
               if sm.get("shared_steps") else
               "The mock paces each stream with a timer of its own from its start. ")
            + "Extra lag of chunk i = its arrival through the proxy minus its arrival direct, each "
            "after its own request. The direct–direct pair has nothing in between: what it reads is the "
            "method's floor on this machine (the mock's two streams, the client's one thread, wake-ups on "
            "2 shared cores).")
    else:
        add(f"A streamed chat completion of {sm.get('tokens', 50)} tokens at 20 ms each; the arrival time of every SSE "
            f"chunk measured at the client (raw sockets, TCP_NODELAY), direct and through respawn, {sm['trials']} "
            "pairs. The two requests of a pair are sent at once (which one first alternates) and read side by "
            "side, and the mock paces each stream on a fixed schedule from its start, so chunk i of both is "
            "generated at the same moment and both see the same moments of the machine. Extra lag of chunk i = "
            "its arrival through respawn minus its arrival direct, each after its own request.")
    add("")
    add("| Figure | Median | Worst |")
    add("|---|---|---|")
    add(f"| first chunk, extra | {median(sm['first_extra_ms']):.2f} ms | {max(sm['first_extra_ms']):.2f} ms |")
    add(f"| worst chunk of a stream, extra | **{median(sm['worst_extra_ms']):.2f} ms** | {max(sm['worst_extra_ms']):.2f} ms |")
    for key, label in (("nginx", "through nginx"), ("control", "a second direct stream (the floor)")):
        if key in peers:
            w = peers[key]["worst_extra_ms"]
            add(f"| worst chunk of a stream, extra, {label} | {median(w):.2f} ms | {max(w):.2f} ms |")
    add(f"| largest gap between chunks, direct | {median(sm['max_gap_direct_ms']):.1f} ms | {max(sm['max_gap_direct_ms']):.1f} ms |")
    add(f"| largest gap between chunks, through respawn | {median(sm['max_gap_proxy_ms']):.1f} ms | {max(sm['max_gap_proxy_ms']):.1f} ms |")
    add("")
    ex = sm.get("extra_ms")
    if ex:
        add(f"Extra lag over all {sm['trials']} × {sm['chunks']} chunks: p50 **{ex['p50']:.2f} ms**, "
            f"p99 **{ex['p99']:.2f} ms**, max {ex['max']:.2f} ms.")
        for key, label in (("nginx", "Through nginx"), ("control", "A second direct stream")):
            if key in peers:
                e = peers[key]["extra_ms"]
                add(f"{label}: p50 {e['p50']:.2f} ms, p99 {e['p99']:.2f} ms, max {e['max']:.2f} ms.")
        add("")
    own = r.get("streaming_own_timers")
    if own and own.get("peers"):
        add("The same measure with a timer per stream in the mock (`--shared-steps` off), as runs before "
            "2026-12-04 measured it: each stream's timer is rounded up to the next millisecond on its own, "
            "so chunk i of the two streams of a pair can be written a millisecond apart, and the floor "
            "shows it.")
        add("")
        add("| Worst chunk of a stream, extra, timer per stream | Median | Worst |")
        add("|---|---|---|")
        for label, w in (("through respawn", own["worst_extra_ms"]),
                         ("through nginx", own["peers"]["nginx"]["worst_extra_ms"]),
                         ("a second direct stream (the floor)", own["peers"]["control"]["worst_extra_ms"])):
            add(f"| {label} | {median(w):.2f} ms | {max(w):.2f} ms |")
        add("")
    worst_median = median(sm["worst_extra_ms"])
    beside = ", ".join(f"{label} {median(peers[key]['worst_extra_ms']):.2f} ms"
                       for key, label in (("nginx", "nginx"), ("control", "floor")) if key in peers)
    targets.append(("Streaming: worst chunk of a stream ≤ 1 ms later than direct (median over the runs)",
                    f"{worst_median:.2f} ms" + (f" ({beside})" if beside else ""), worst_median <= 1.0))
    # 6
    rt = r["restart_time"]
    hard = [s for t in hh["respawn"] for s in t["steps"]]
    hard_grace = [s for t in graceful for s in t["steps"]]
    add("## 6. respawn's own time in a restart")
    add("")
    add("From respawn's log at debug level (`restarting by process kill` with the stop decided, `server "
        "stopped` with the stop's parts, `server spawned`, the child's own \"listening on\" line with "
        "the child's own timestamp, and `recovered` with `recovery_ms`, which is also the status's "
        "`last_restart.duration_ms`). respawn's own time = from the old group gone to the new child "
        "spawned (the port check, any release check, the spawn) + from the child listening to respawn "
        "noticing it ready. The stop (signal → old group gone) is listed apart: with the grace it is "
        "the child's own exit; after a hang it is the kernel's SIGKILL.")
    add("")
    add("| Restart | Stop | Recovery (status) | Signal → leader exit | Leader exit → group gone | Group gone → spawned | Child's own start (→ listening) | Listening → noticed | **respawn's own** |")
    add("|---|---|---|---|---|---|---|---|---|")
    rows_by_label = (("manual (idle child)", rt), ("hard hang (frozen child)", hard),
                     ("hard hang, `--hang-stop grace`", hard_grace))
    for label, rows in rows_by_label:
        for s in rows:
            stop = "SIGKILL at once" if s.get("killed_at_once") else (
                "SIGTERM, SIGKILL after the grace" if s.get("escalated") else "SIGTERM")
            add(f"| {label} | {stop} | {s.get('recovery_ms')} ms | {fmt(s.get('signal_to_exit_ms'))} ms | "
                f"{fmt(s.get('group_gone_ms'), 2)} ms | {fmt(s.get('gone_to_spawned_ms'), 2)} ms | "
                f"{fmt(s.get('child_start_ms'))} ms | {fmt(s.get('ready_lag_ms'))} ms | **{fmt(s.get('own_ms'))} ms** |")
    own = [s["own_ms"] for s in rt + hard + hard_grace if s.get("own_ms") is not None]
    add("")
    add(f"Median of respawn's own time: **{fmt(median(own))} ms** (max {fmt(max(own) if own else None)} ms). "
        "The hard-hang rows exclude detection (3 s of silence, see section 1), which section 1 includes.")
    add("")
    add("### What changed, and the profile that motivated it")
    add("")
    before_stop = [s["stop_total_ms"] for s in hard_grace if s.get("stop_total_ms") is not None]
    after_stop = [s["stop_total_ms"] for s in hard if s.get("stop_total_ms") is not None]
    after_lag = [s["ready_lag_ms"] for s in rt + hard + hard_grace if s.get("ready_lag_ms") is not None]
    after_gone = [s["group_gone_ms"] for s in rt + hard + hard_grace if s.get("group_gone_ms") is not None]
    add("| Change | Before | After (this run) |")
    add("|---|---|---|")
    add(f"| A hang's restart SIGKILLs the generation at once (the core's `StopMode`, `--hang-stop`) | "
        f"stop of the frozen child (SIGTERM, SIGCONT, its own exit): median {fmt(median(before_stop))} ms "
        f"(`--hang-stop grace`, this run); detected → next success {fmt(median(after_detection(graceful)), 2)} s | "
        f"stop: median {fmt(median(after_stop))} ms; detected → next success {fmt(median(after_detection(hh['respawn'])), 2)} s |")
    add(f"| Readiness polled from 1 ms, at most 20 ms apart (was from 10 ms, doubling to 1 s) | "
        "ready noticed 17.4–21.5 ms after the child's ready line (last recorded run, 2026-11-29) | "
        f"listening → noticed: median {fmt(median(after_lag))} ms, max {fmt(max(after_lag) if after_lag else None)} ms |")
    add(f"| The wait for the old group wakes on pidfds (was a 10 ms poll) | "
        "a process still exiting at the first look cost a whole 10 ms poll | "
        f"leader exit → group gone (cgroup removal included): median {fmt(median(after_gone), 2)} ms, "
        f"max {fmt(max(after_gone) if after_gone else None, 2)} ms |")
    add("")
    add("The profile behind them, from respawn's debug log of the hard hangs (the timestamps of "
        "`restarting`, `stopping server`, `server stopped` with its parts, `server spawned`, the child's "
        f"own lines and `recovered`): of the {fmt(median(after_detection(graceful)), 2)} s between detection "
        "and the next success with the stop of before, all but a few tens of milliseconds were the frozen "
        "child's own exit after SIGTERM + SIGCONT (the mock's graceful "
        "shutdown, 0.3 s idle and 1.3 s with a request in flight, as actix-web's shutdown timeout "
        "rounds up to a second; a frozen vLLM never exits and took the whole 5 s grace). The rest was "
        "respawn's: the readiness probes (10, 20, 40 ms apart after the spawn) landed up to ~20 ms after "
        "the child was ready, and the wait for the group looked every 10 ms. The largest part of "
        "what remains is in the `Group gone → spawned` column: moving the new child into its "
        "generation's cgroup (its write to `cgroup.procs` before exec waits on the kernel's "
        "cgroup-wide lock: 10 to 25 ms on this machine, against under 1 ms for a plain spawn). "
        "Starting the child inside its cgroup with `clone3(CLONE_INTO_CGROUP)`, or forking it "
        "during the stop and letting it exec once the old group is gone, would take that off the "
        "restart; guardian containment (`--containment guardian`) has no migration at all.")
    add("")
    targets.append(("respawn's own time in a restart < 50 ms", f"median {fmt(median(own))} ms, max {fmt(max(own) if own else None)} ms",
                    bool(own) and max(own) < 50))
    # 7
    sc = r["scaling"]
    add("## 7. The cost of supervising more servers")
    add("")
    add("N independent `respawn serve` processes, each supervising one `respawn mock`, all idle (so "
        "each probes `/health` every second, watches for progress and sends its canary every 10 s). "
        "CPU from `/proc/PID/stat` (utime + stime) over 30 s at rest; RSS from `/proc/PID/status`. "
        "Each child also has a guardian (`respawn __guardian`, the group leader), shown separately.")
    add("")
    add("| Servers | respawn serve CPU each | RSS each | guardian CPU each | guardian RSS each | mock RSS each (for scale) | all ready |")
    add("|---|---|---|---|---|---|---|")
    for s in sc:
        add(f"| {s['servers']} | {s['cpu_pct_per_server']:.3f} % | {s['rss_kib_per_server'] / 1024:.1f} MiB | "
            f"{s['guardian_cpu_pct']:.3f} % | {s['guardian_rss_kib'] / 1024:.1f} MiB | {s['mock_rss_kib'] / 1024:.1f} MiB | {s['all_ready']} |")
    add("")
    # 8
    ms = r.get("many_streams")
    if ms:
        add("## 8. Many concurrent streams")
        add("")
        add(f"{ms['streams']} streamed chat completions at once ({ms['tokens']} tokens at {ms['latency_ms']} ms "
            f"each from `respawn mock --token-latency {ms['latency_ms']}ms`, the streams' starts spread over "
            f"{ms['ramp_s']:g} s), three ways: direct, through {r.get('overhead', {}).get('nginx', 'nginx')} "
            "(the configuration of section 4 plus `proxy_buffering off`) and through `respawn serve` "
            f"(defaults). Rounds interleaved (direct, nginx, respawn) × {ms['rounds']}; the client is "
            "`examples/stream_clients.rs` (one thread, raw sockets, TCP_NODELAY), on the same 2 cores. CPU: utime + stime "
            "of the proxy's processes from `/proc` over the round (nginx's master and workers together), "
            "divided by the streams, median of the rounds. RSS: the largest sum of VmRSS of those processes, "
            "sampled every 0.1 s. Lag of a chunk: its time after its stream's first chunk, minus the median "
            "of that time over all direct streams; its p50, p99 and max are taken per round and the median "
            "over the rounds is shown (one round caught in a stall of the whole machine does not stand for "
            "all); extra = the path's figure minus direct's. The first chunk (connection, request, the "
            "proxy's own connection upstream) is shown apart. Each round's wall time is listed: a round "
            "much longer than the streams' own (ramp + tokens × latency) was slowed by the machine. Machine "
            "busy: the share of both CPUs not idle over the round, from `/proc/stat` (every process and the "
            "kernel's softirqs, where it carries loopback TCP, whichever process they are charged to), "
            "median of the rounds.")
        add("")
        add("| Path | CPU per stream | Peak RSS | Chunk lag p50 / p99 / max | Extra p50 / p99 / max | First chunk, extra p50 / p99 | Mock CPU per round | Client CPU per round | Machine busy | Rounds' wall time | Failed |")
        add("|---|---|---|---|---|---|---|---|---|---|---|")
        first_direct = ms["direct"]["first_ms"]
        for k in ("direct", "nginx", "respawn"):
            x = ms[k]
            lag = x["lag_ms"]
            if k == "direct":
                cpu, rss, extra, first = "—", "—", "—", "—"
            else:
                cpu = f"{x['cpu_ms_per_stream']:.2f} ms"
                rss = f"{max(x['rss_kib']) / 1024:.1f} MiB"
                e = x["extra_lag_ms"]
                extra = f"**{e['p50']:+.2f} / {e['p99']:+.2f} / {e['max']:+.2f} ms**"
                first = f"{x['first_ms']['p50'] - first_direct['p50']:+.2f} / {x['first_ms']['p99'] - first_direct['p99']:+.2f} ms"
            add(f"| {k} | {cpu} | {rss} | {lag['p50']:.2f} / {lag['p99']:.2f} / {lag['max']:.2f} ms | {extra} | {first} | "
                f"{median(x['mock_cpu_s']):.2f} s | {median(x['client_cpu_s']):.2f} s | "
                f"{busy_cell(x)} | {', '.join(f'{w:.1f}' for w in x['wall_s'])} s | {x['failed']} |")
        add("")
        cpu_ratio = ms["respawn"]["cpu_ms_per_stream"] / ms["nginx"]["cpu_ms_per_stream"]
        add(f"respawn / nginx CPU per stream: **{cpu_ratio:.2f}**. On 2 shared cores the client, the mock and "
            "the proxy compete for the CPUs: a proxy's CPU also slows the mock and the client, which shows "
            "in the lag of its rounds.")
        busiest = max((median(ms[k].get("machine_busy") or [0]) for k in ("nginx", "respawn")), default=0)
        if busiest >= 0.9:
            add("")
            add(f"The proxied rounds kept the machine {busiest:.0%} busy: with the CPUs that full, a chunk waits "
                "for a CPU as much as for the proxy, and the lag of those rounds is mostly the machine's "
                "queueing (compare the rounds' spread in `target/bench/results.json`); the CPU per stream is "
                "the figure that compares the proxies.")
        add("")
        targets.append(("Many streams: respawn's CPU per stream ≤ 1.5 × nginx's", f"{cpu_ratio:.2f} ×", cpu_ratio <= 1.5))
    # This round's changes, before and after
    add("## What changed in the last round, before and after")
    add("")
    add("Each row: a change, the figure it moved before it (from the run named, or measured by the "
        "command given) and after it (this run unless said otherwise), and the profile that motivated it.")
    add("")
    add("| Change | Figure | Before | After | What motivated it |")
    add("|---|---|---|---|---|")
    det = detection(hh["respawn"])
    add(f"| Silence rule: a ready server whose probe timed out and that said nothing while asked for the "
        f"detection budget is hung; the next probes are placed to end with the budget | hard hang, freeze → "
        f"detected (median) | 3.88 s (last recorded run, 2026-12-01) | {fmt(median(det), 2)} s | the log of the "
        "hard hangs: three probes time out after the freeze, the first sent up to an interval after it; "
        "the client's last answer marked the freeze to the millisecond |")
    if r.get("streaming"):
        add(f"| The streaming benchmark sends each direct and proxied stream at once (they were sent one after "
            f"the other), and the mock paces tokens from the completion's start; TCP_NODELAY towards the model "
            f"server | worst chunk of a stream later than direct (median) | 1.46 ms (last recorded run) | "
            f"{median(r['streaming']['worst_extra_ms']):.2f} ms | strace of one stream through respawn: per "
            "chunk one `recvfrom` from the server and one `sendto` to the client ~55 µs apart, no "
            "coalescing; the rest of the old figure was two mock runs drifting apart (20 ms sleeps rounded "
            "up to the next millisecond) |")
    own = r.get("streaming_own_timers")
    if r.get("streaming", {}).get("shared_steps") and own and own.get("peers"):
        add(f"| The streaming benchmark's mock gives both streams of a pair their tokens on one step clock "
            f"(`--shared-steps`), and each trial also measures a direct–direct pair (the method's floor) and "
            f"nginx | worst chunk of a stream later than direct (median), and the floor | "
            f"{median(own['worst_extra_ms']):.2f} ms, floor {median(own['peers']['control']['worst_extra_ms']):.2f} ms "
            f"(same run, a timer per stream) | {median(r['streaming']['worst_extra_ms']):.2f} ms, floor "
            f"{median(r['streaming']['peers']['control']['worst_extra_ms']):.2f} ms | with a timer per stream "
            f"the direct–direct pair, with nothing in between, read "
            f"{median(own['peers']['control']['worst_extra_ms']):.2f} ms against respawn's "
            f"{median(own['worst_extra_ms']):.2f} ms (medians of the worst chunk, {own['trials']} trials), "
            "its worst chunks about 1 ms late: the two streams' timers firing on different milliseconds |")
    add("| The in-flight table in per-thread shards of reusable slots (no shared lock, no hashing, no "
        "allocation per request); `Host` and `x-respawn-generation` values made once per worker; headers "
        "appended into the client's own map; the senders' state borrowed, not cloned; each worker's own "
        "end-of-grace handle | instructions / allocations per request, `GET` and small `POST` (2,000 "
        "keep-alive requests after a warm-up, `valgrind --tool=callgrind` and `--tool=dhat`, release "
        "builds side by side, 2026-12-02) | GET 60,745 / 35.0; POST 74,865 / 39.1 | GET 56,589 / 28.1; "
        "POST 69,843 / 32.2 | callgrind of the proxy: the table's lock and hash per request, a header map "
        "copied per attempt, per-request clones of shared state |")
    add("| Each proxy worker writes only its own cache lines per request: the in-flight table's counts and "
        "times (open, answers, last activity, last heard) kept per thread and added up when read, the request "
        "counter per thread, one reference to the server's shared parts per streamed body instead of four and "
        "an actor address | instructions per request, `GET` and small `POST` (2,000 keep-alive requests after "
        "300 of warm-up, `valgrind --tool=callgrind`, release builds side by side, 2026-12-02) | GET 56,002; "
        "POST 70,700 | GET 55,658; POST 69,693 | the shared counters were written by both workers for every "
        "request (about ten writes to lines the other core held, and five reference counts); the cost that "
        "matters is the lines moving between cores, which callgrind does not count and this machine's "
        "noise hides (respawn's CPU per request from `/proc` over 4 s wrk runs at 64 connections, the "
        "two builds side by side, 4 interleaved rounds each: GET median 29.5 → 27.7 µs, POST 28.3 → "
        "29.3 µs, the rounds spread over 26–43 µs) |")
    if cl:
        b = cl["builds"]
        add(f"| Release builds place the functions that run while respawn serves next to each other "
            f"(`cli/function-order.txt`, from a callgrind run of `respawn serve` by `scripts/function-order.sh`; "
            f"lld's `--symbol-ordering-file`, given by `cli/build.rs`) | largest RSS of `respawn serve` at 64 "
            f"connections (median of 3 rounds); its code resident | "
            f"{median(b['unordered']['rss_max_kib']) / 1024:.1f} MiB; code {median(b['unordered']['code_kib']) / 1024:.1f} MiB "
            f"(this run, the same build with `RESPAWN_FUNCTION_ORDER=off`) | "
            f"{median(b['ordered']['rss_max_kib']) / 1024:.1f} MiB; code {median(b['ordered']['code_kib']) / 1024:.1f} MiB | "
            "`/proc/PID/smaps` of the proxy under load: about 4.5 MiB of its 11.5 were its own code, nearly all "
            "of the binary's 5.1 MB of machine code, though the functions that ran are 1.4 MB of it: each "
            "touched page is mapped with its neighbours (the kernel's fault-around, 64 KiB), and the "
            "functions that run were spread over the whole binary |")
    if ab:
        res = ab["results"]
        add(f"| Release builds are compiled with a profile of respawn serving (`cli/pgo/respawn.profdata`, "
            f"by `scripts/pgo-profile.sh`; `scripts/release-build.sh` passes `-Cprofile-use`) | median latency at "
            f"1 connection, GET / POST; CPU per request at 64 connections, GET / POST (section 4, "
            f"\"Profile-guided optimisation\") | "
            f"{median(res['get']['no_pgo']['p50_ms']):.3f} / {median(res['post']['no_pgo']['p50_ms']):.3f} ms; "
            f"{median(res['get']['no_pgo']['cpu_us']):.1f} / {median(res['post']['no_pgo']['cpu_us']):.1f} µs "
            f"(this run, the same code without the profile) | "
            f"{median(res['get']['pgo']['p50_ms']):.3f} / {median(res['post']['pgo']['p50_ms']):.3f} ms; "
            f"{median(res['get']['pgo']['cpu_us']):.1f} / {median(res['post']['pgo']['cpu_us']):.1f} µs | "
            "callgrind of the proxy (2,000 keep-alive requests after 300 of warm-up): the instructions of a "
            "request spread over actix-web, awc, tokio and respawn, no function above 2 %, so no one place to "
            "cut, but calls and branches all along the path, which a profile lays out for the path that runs. "
            "`valgrind --tool=callgrind`, the two builds side by side, 2026-12-03: GET 54,650 → 46,920 "
            "instructions, POST 67,360 → 58,400; without the single-byte steps of `rep stosb` in `memset`, "
            "which callgrind counts one by one (actix's decoder clears its header arrays at every parse), "
            "39,170 → 31,440 and 45,710 → 36,740 (−20 %) |")
    add("| Each attempt's URI put together from the model server's scheme and authority (parsed once per "
        "worker) and the client's path as actix-web parsed it, instead of a URL written out and parsed again; "
        "the compiler profile and the function order remade after it | instructions per request, `GET` and "
        "small `POST` (2,000 keep-alive requests after 300 of warm-up, `valgrind --tool=callgrind`, release "
        "builds side by side, 2026-12-03; in brackets without the counted steps of `memset`) | without the "
        "profile: GET 54,762 (39,281), POST 67,746 (46,087); with it: GET 47,065 (31,581), POST 58,645 "
        "(36,985) | without the profile: GET 53,762 (38,277), POST 66,330 (44,669); with it: GET 46,145 "
        "(30,662), POST 57,415 (35,756) | callgrind of the proxy: `http::Uri::from_shared` ~800 "
        "instructions a request, and two strings allocated for the path |")
    if la:
        def launch_ratio(name, load):
            got = la["results"][name][load]
            return median(round_ratios(got["respawn"], got["nginx"]))
        add(f"| The benchmark starts respawn and nginx in its own session (each leading a process group), not "
            f"each in a session of its own (section 4, \"How the proxies are started\") | respawn / nginx "
            f"requests/s at 64 connections, GET / POST (median of the rounds' ratios) | "
            f"{launch_ratio('sessions', 'get'):.2f} / {launch_ratio('sessions', 'post'):.2f} (this run, a "
            f"session each) | {launch_ratio('group', 'get'):.2f} / {launch_ratio('group', 'post'):.2f} | perf of "
            "`respawn serve` supervising the mock and of `respawn serve --upstream` in front of the same mock "
            "started apart: the same functions in the same shares, yet the supervising one served 12–18 % fewer "
            "requests a second, and ran at nginx's pace when started in the load generator's session; the "
            "kernel's autogroup gave nginx's path a CPU share more |")
    if al:
        res = al["results"]

        def both(name, key):
            return " / ".join(f"{median(res[load][name][key]):{'.0f' if key == 'rps' else '.1f'}}" for load in ("get", "post"))
        add(f"| A build of the program on mimalloc, `--features mimalloc` (section 4, \"The allocator\"); the "
            f"release build stays on the C library's allocator | requests/s at 64 connections, GET / POST; CPU per "
            f"request, GET / POST; largest RSS under that load | {both('system', 'rps')}; {both('system', 'cpu_us')} µs; "
            f"{al['rss_max_kib']['system'] / 1024:.1f} MiB (the release build, this run) | "
            f"{both('mimalloc', 'rps')}; {both('mimalloc', 'cpu_us')} µs; {al['rss_max_kib']['mimalloc'] / 1024:.1f} MiB | "
            "perf of the proxy at 64 connections put 8.2 % of its samples in libc's malloc, free and memcpy "
            "against nginx's 3.3 % in all of libc; a request allocates awc's 8 KiB read and write buffers and "
            "a codec, which glibc serves from its arenas rather than its per-thread cache. Side by side "
            "before the change (builds without the profile or the function order, 6 paired rounds, "
            "2026-12-04; each round a fresh `respawn serve --listen 127.0.0.1:18080 --port 18081 -- respawn "
            "mock --port {port} --tokens 1 --token-latency 0ms` per build, `wrk -t2 -c64 -d5s` on "
            "`GET /health`, CPU from fields 14 and 15 of `/proc/PID/stat`): 9 % less CPU per GET, 7 % more "
            "GETs a second; mimalloc's transparent huge pages took the idle RSS (`VmRSS` after a 2 s warm-up "
            "under the same wrk) from 11 to 23 MiB, hence the build without them; without them, still ~1.7 "
            "MiB more under load (this file's code-layout measure, `code_layout` in benches/driver.py, 3 "
            "rounds), hence not the default |")
    if "post" in added_1c:
        add(f"| awc's sends run with a task set of respawn's own entered (`src/aside.rs`): the date service that "
            f"awc's HTTP/1 codec starts for every request is run 10 ms later, in a batch with the others, by "
            f"which time a short request's has been aborted and is only dropped; the compiler profile and the "
            f"function order remade after it | added median latency at 1 connection, GET / POST | +0.035 / "
            f"+0.034 ms (the run of 2026-12-04 06:19–06:51 UTC; nginx +0.016 / +0.016) | "
            f"{added_1c['get']:+.3f} / {added_1c['post']:+.3f} ms | perf with call graphs of the proxy at one "
            "connection: 99.8 % of its `write`s were tokio's eventfd, woken by that date service's first timer "
            "(due at the next millisecond, earlier than anything the driver slept for), about one per request; "
            "strace: 1 eventfd `write` per request beside the same 6 socket and epoll calls as nginx. Side by "
            "side before and after the change (builds without the profile or the function order, `build_ab` "
            "of benches/driver.py, 6 rounds, 2026-12-04): median at 1 connection GET 0.051 → 0.034 ms, POST "
            "0.053 → 0.039 (direct 0.014 / 0.018); requests/s at 64 connections unchanged (56.1k → 56.7k GET, "
            "46.8k → 46.8k POST, the rounds' ratios 0.82–1.12), CPU per request 19.5 → 19.0 µs GET, 21.8 → "
            "21.3 POST; at one connection the eventfd `write`s fell to 0.09 per request under strace (the "
            "drainer's own timer, at most one per 10 ms) |")
    add("| An answer whose first chunk holds the whole length its head declares is read to its end at once "
        "(the end is already decoded: no wait), which gives its connection back to awc's pool, and is sent "
        "as one body, without the watched body that follows a stream chunk by chunk (`src/upstream.rs`, "
        "`whole`); the compiler profile and the function order remade after it | instructions per request, "
        "`GET` and small `POST` (`valgrind --tool=callgrind` of `respawn serve`, 2,000 keep-alive requests "
        "after 300 of warm-up, release builds without the profile side by side, 2026-12-04; in brackets "
        "without the counted steps of `memset`) | GET 53,768 (38,285), POST 66,430 (44,767) | GET 52,990 "
        "(37,506), POST 65,627 (43,967) | perf of the proxy at 64 connections: the watched body's polls, "
        "its end-of-body bookkeeping and a second poll of awc's payload for every small answer; requests/s "
        "side by side (`build_ab`, 5 rounds, builds without the profile): median ratio after / before 1.00 "
        "GET, 1.05 POST, CPU per request 1.02 / 0.97, inside the rounds' spread (±3 %) |")
    bodies = ov.get("bodies") if isinstance(ov, dict) else None
    if bodies:
        add(f"| Free memory returned to the system after a body of 1 MiB or more (glibc's `malloc_trim`; on "
            f"mimalloc, a collect at once and another 100 ms later, for the buffers freed after the request) | RSS a "
            f"second after 8 concurrent 30 MiB bodies | 13.9 MiB (idle 12.1; release build before the change, "
            f"2026-12-02) | {bodies['after_kib'] / 1024:.1f} MiB (idle {bodies['idle_kib'] / 1024:.1f}) | "
            "the bodies' chunks, copied and freed, stayed resident in the allocator |")
    add("")
    add("Where the time goes (perf, cpu-clock sampling at 2 kHz, this VM has no hardware counters; 64 connections "
        "of `GET /health`, 2026-12-02): of respawn's samples 68.6 % are in the kernel (loopback TCP, wake-ups, "
        "context switches), 22.5 % in its own binary (actix-web, awc, tokio and respawn together, no function "
        "above 2 %) and 8.2 % in libc (malloc, memcpy); of nginx's 82.4 % kernel, 14.3 % nginx, 3.3 % libc. "
        "Per request both make the same four socket calls (respawn 2 `sendto` + 2 `recvfrom`, head and body in "
        "one write, no spare read that meets EAGAIN; nginx 2 `writev` + 2 `recvfrom`); respawn calls "
        "`epoll_wait` 0.4 times per request against nginx's 0.14 and writes tokio's eventfd 0.17 times, every "
        "one of those writes (8,549 of 8,549 sampled with their call stacks) from awc's date service.")
    add("")
    add("Left as it is: awc still builds a new HTTP/1 codec with a default configuration for every request, "
        "and its date service is still spawned, allocated and, after the request, dropped unrun in a batch "
        "(the table above); only awc can share that configuration, which would save the task too. Before "
        "the set-aside, a per-worker timer that kept the driver's next wake within the current millisecond "
        "(so that awc's timer needed no wake) halved the eventfd writes (0.17 → 0.08 per request at 64 "
        "connections) and moved neither requests/s nor the latency at one connection beyond the noise of "
        "the time (without the CPUs' idle state held to polling: median 128–170 µs with and without it, "
        "nginx 102–108 µs, 4 rounds); not kept, as it leaned on tokio's internals. actix's request decoder clears ~3 KB of header arrays for each request, which "
        "callgrind counts as 12,000–21,000 instructions (it counts every iteration of `rep stos`) but "
        "sampling puts at 0.6 % of the proxy's time. A release build at `opt-level = \"s\"` shrinks the code "
        "from 6.24 to 4.16 MB and the RSS under 64 connections from 11.4 to 9.9 MiB, at 10 % more "
        "instructions per request (callgrind: GET 55,658 → 61,498, POST 69,693 → 76,757); per-crate levels "
        "do not survive fat LTO (6.01 MB). Not adopted: it would trade the requests/s target for the RSS one; "
        "the function order (section 4) takes the RSS down without it, at the same instructions.")
    add("")
    add("Also tried and not kept (2026-12-04, builds without the profile, interleaved rounds of GET at 64 "
        "connections): a per-thread cache of freed 1–16 KiB blocks in front of glibc on the proxy's workers "
        "(512-byte classes, at most 8 blocks a class and 128 KiB a thread) left requests/s (median of 4 rounds "
        "64,907 → 64,724) and CPU per request (16.44 → 16.45 µs) where they were and raised the peak RSS "
        "(11.4–11.6 → 12.1–12.4 MiB): with call graphs, glibc's remaining slow allocations come from small "
        "blocks overflowing its own per-thread cache with about 32 requests in flight a worker, not from "
        "large ones. Three workers instead of one per core raised respawn's requests/s (71.7, 70.5, 71.5k → "
        "73.5, 75.4, 78.9k) but nginx's as much with three workers of its own (78.6 → 79.4k, 70.5 → 82.5k): a "
        "larger share of the shared cores, not a saving. For a POST, actix-http's dispatcher polls the handler "
        "once before it feeds the body it has already read; the body's arrival then wakes the task while it "
        "runs, and the task is polled once more for nothing (a counter around the handler, debug build, "
        "2026-12-05: 3 polls per keep-alive GET, 4 per small POST). A handler cannot skip that wake safely (a "
        "pipelined request whose body is still arriving would not be polled again); it belongs in the "
        "dispatcher, which could feed the chunks it has buffered before its first poll of the handler.")
    add("")
    # Summary
    add("## Targets")
    add("")
    add("| Target | This run | |")
    add("|---|---|---|")
    for name, value, ok in targets:
        add(f"| {name} | {value} | {verdict(ok)} |")
    add("")
    missed = [t for t in targets if not t[2]]
    add("## Closing note")
    add("")
    if not missed:
        add("Every target was met in this run.")
    else:
        add("Missed in this run: " + "; ".join(f"{n} ({v})" for n, v, _ in missed) + ".")
        add("")
        # Targets that differ only by their load share a note: it is said once, after their names.
        by_note = {}
        for n, _, _ in missed:
            by_note.setdefault(missed_note(n), []).append(n)
        for note, names in by_note.items():
            add(f"- {'; '.join(names)}: {note}")
    add("")
    add("Reproduce: `scripts/bench.sh` (it installs wrk and nginx-light with apt-get when they are "
        "missing, builds the release binaries and rewrites this file; about 40 minutes on 2 cores, four release builds included; "
        "`scripts/bench.sh --only hard_hang,restart_time` reruns those parts in about 3). "
        "Raw figures of the run: `target/bench/results.json`.")
    add("")
    with open(path, "w") as f:
        f.write("\n".join(L))


PROXY_COST_NOTE = (
    "respawn's per-request cost is the HTTP stack's (actix-web in front, awc behind) plus its own "
    "bookkeeping, on 2 cores shared with the load generator and the model server, where every "
    "cycle of proxy CPU is taken from them. Section 4 measures the two apart in the same rounds: "
    "\"bare\" (`examples/bare_proxy.rs`) is the stack used plainly, with respawn's client and header "
    "settings and none of its supervision: bare / nginx is what actix-web and awc cost as they come, "
    "and respawn / bare is respawn's supervision net of what its ways of using the stack save; \"hyper\" "
    "(`benches/hyper_proxy`) is the same plain proxy on hyper, so that hyper / bare is what another "
    "well-kept stack would be worth (section 4 gives both). The gap to nginx is in user space: CPU per request at 64 "
    "connections from fields 14 and 15 of `/proc/PID/stat` (4 s `wrk -t2 -c64` runs on `GET /health`, "
    "2026-12-03) was 5.4 µs user + 7.8 µs system for respawn against 2.5 + 7.7 for nginx: the same "
    "kernel work (the same four socket calls per request), 2.9 µs more in user space, of which 0.9× "
    "nginx's requests/s needs about 0.6–0.7 µs gone. perf of respawn's user-space cycles "
    "(`perf record -e cycles:u` under the same load) splits them into glibc's malloc and free ~24 %, "
    "actix-http 20 %, respawn's own code 17 %, awc 9 %, tokio 6 %, memcpy and memset 6 %, with no "
    "function of respawn above 5 %. The allocator's share comes from size, not count: a GET makes 19 "
    "allocations, 6 of them above the 1,032 bytes of glibc's per-thread cache (awc's two 8 KiB "
    "buffers and its 6.7 KB boxed send, the 3.4 KB decode of the response head, actix-web's 2.4 KB "
    "boxed handler), which take glibc's arena path and its consolidation at every request. Section 4, "
    "\"The allocator\", measures what serving those from a cache gives and what it costs in RSS, which "
    "is why the release build keeps the C library's allocator as it comes. callgrind of 2,000 "
    "keep-alive requests (release builds without the profile, 2026-12-04): about 53,000 instructions "
    "per GET and 65,600 per small POST (of which 15,500 and 21,700 are the single-byte steps of `rep "
    "stosb` in `memset`, which callgrind counts one by one: actix's decoder clears its header arrays "
    "at every parse); the release build, with its compiler profile, 44,900 and 56,000 (section 4). The largest part "
    "that remains and is not respawn's: awc builds a new HTTP/1 codec with a default configuration for "
    "every request, whose date service is a task spawned and allocated per request (~17 KB with the "
    "configuration). Since 2026-12-04 respawn runs that task aside and drops it unrun (\"What changed\" "
    "above), which took away its timer and the wake of tokio's driver through the eventfd (once per "
    "request at one connection, 0.8 at 64): the latency at one connection fell by 14–17 µs, the "
    "requests/s at 64 connections did not move beyond the noise. The spawn and the allocation remain, "
    "and only awc can avoid them: every send path of awc goes through its HTTP/1 sender, which builds "
    "the codec; a connection taken from awc's pool can only be given back by awc itself "
    "(`H1Connection::on_release` is private to the crate), and a client middleware that answered in "
    "awc's place could not build its `ClientResponse` (`ClientResponse::new` is private too). Measured "
    "on 2026-12-04 with actix-http changed outside this repository so that `ClientCodec::default()` "
    "shares one configuration per thread (one line; not shipped, since it is that crate's code and "
    "belongs upstream), against the released crate, both without the compiler profile, 4 interleaved "
    "rounds: +8 % requests/s at 64 connections (59.1k → 64.1k) and −9 % CPU per request. "
    "The process that uses more CPU per request is also the one preempted more on 2 shared cores: "
    "respawn is switched out involuntarily 0.37–0.41 times per request against nginx's 0.28 "
    "(`/proc/PID/task/*/status` over 4 s wrk runs, 2026-12-03). Next: propose to actix-http a shared "
    "codec configuration and a decoder that does not clear its header arrays, and to awc buffers sized "
    "to the request, which would take the large allocations away for every user of the crates."
)

MISSED_NOTES = {
    "Hard hang: freeze → next success ≤ detection budget (3 probes × 1 s) + 0.3 s, none lost":
        "detection took longer than the budget: look at the `freeze → detected` column; the silence "
        "rule finds a freeze under traffic one budget after the server's last word, so a larger figure "
        "means the probes could not be placed (a loaded machine delaying them) or the client was idle "
        "at the freeze (then the silence begins at the first unanswered probe).",
    "Proxy: requests/s ≥ 0.9 × nginx":
        PROXY_COST_NOTE,
    "Proxy: added median latency at 1 connection ≤ nginx's":
        "with the CPUs' idle state held to polling (section 4) the medians at one connection move by a "
        "few microseconds from round to round, so the gap is respawn's own: the request-path cost of the "
        "note above, on the way of every request, and the same work closes both. Without polling (a run "
        "by a user who cannot write /dev/cpu_dma_latency) the wake-ups of halted CPUs dominate and the "
        "comparison says little.",
    "Proxy: RSS under load ≤ 10 MiB":
        "compare the two builds of \"Where the code sits\" (section 4): a build whose function list "
        "has gone stale (few of its names found) maps nearly all of its code again; rerun "
        "`scripts/function-order.sh`. Under load the heap holds mostly awc's 16 KiB request buffers "
        "and actix-web's per-connection codec (dhat at 64 connections: 3.9 MB peak), whose sizes neither "
        "exposes; section 4, \"The allocator\", shows what the allocator adds.",
    "respawn's own time in a restart < 50 ms":
        "see the steps of section 6: the readiness cadence (from 1 ms, at most 20 ms apart) bounds the "
        "listening → noticed part; a loaded machine can delay the spawn or a probe by more.",
    "Hard hang: detected → next success ≤ 0.3 s, none lost":
        "see section 6 for which step took the time; on a loaded machine the new child's own start "
        "(exec, bind) can take more than the 0.3 s by itself.",
    "Deadlock (busy and idle) → next success ≤ 25 s":
        "the default progress timeout (15 s) and canary interval + timeout (20 s) bound it; shorter "
        "settings close it for servers whose generations never pause that long.",
    "Streaming: worst chunk of a stream ≤ 1 ms later than direct (median over the runs)":
        "compare the per-chunk p50 and p99 of section 5 with the worst chunk: a stream's worst chunk "
        "is the largest of its chunks' extra lags, so a single late wake-up of the proxy's worker, "
        "the mock or the client on 2 shared cores sets it; section 8 shows the same lag under load.",
    "Many streams: respawn's CPU per stream ≤ 1.5 × nginx's":
        "respawn's per-chunk work is actix-web's response writer, awc's chunked decoder and its own "
        "watch of the stream (a clock read, the plan's deadline, the in-flight table's last-heard time "
        "and the copy kept for resumption); a profile of the respawn rounds (perf record -g on the "
        "serve process) shows which of them costs most.",
    "Storm: exactly 1 restart, 256 succeed":
        "see respawn's log of the run (target/bench/) for the extra restart's cause.",
}


def missed_note(name):
    """The note for a missed target: its own, or that of the target it is a variant of (the proxy's
    targets carry the load in their names: "Proxy, GET /health: requests/s ...")."""
    if name in MISSED_NOTES:
        return MISSED_NOTES[name]
    general = re.sub(r"^Proxy, [^:]+: ", "Proxy: ", name)
    general = re.sub(r" \(goal[^)]*\).*$", "", general)
    return MISSED_NOTES.get(general, "see the figures above.")


def machine_info():
    def run(argv):
        try:
            return subprocess.run(argv, capture_output=True, text=True).stdout.strip()
        except OSError:
            return "unknown"
    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = "unknown"
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB RAM"
    wrk_version = run(["wrk", "--version"]).splitlines()
    return {"nproc": os.cpu_count(), "cpu": cpu, "kernel": platform.release(), "mem": mem,
            "rustc": run(["rustc", "--version"]), "wrk": wrk_version[0].split(" [")[0] if wrk_version else "wrk",
            "python": platform.python_version(), "autogroup": autogroup(), "cpuidle": cpuidle()}


# The parts that need a build besides --respawn, and the option that gives it.
PART_BUILDS = {"overhead": "--hyper-proxy", "code_layout": "--respawn-unordered", "pgo": "--respawn-no-pgo",
               "allocator": "--respawn-mimalloc"}
PARTS = ("hard_hang", "deadlock", "storm", "overhead", "launch", "code_layout", "pgo", "allocator", "streaming", "restart_time", "scaling",
         "many_streams")


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--respawn", required=True, help="the release build of respawn")
    ap.add_argument("--out", required=True, help="the Markdown file to write")
    ap.add_argument("--command", default="scripts/bench.sh", help="the command shown in the document")
    ap.add_argument("--workdir", default=None, help="where logs go (default: a temporary directory)")
    ap.add_argument("--respawn-unordered", default=None,
                    help="the same release build linked without cli/function-order.txt "
                         "(RESPAWN_FUNCTION_ORDER=off), for the code-layout part")
    ap.add_argument("--respawn-no-pgo", default=None,
                    help="the same code built without cli/pgo/respawn.profdata (RESPAWN_PGO=off), for the "
                         "profile-guided optimisation part")
    ap.add_argument("--respawn-mimalloc", default=None,
                    help="the same code built on mimalloc (--features mimalloc), for the allocator part")
    ap.add_argument("--hyper-proxy", default=None,
                    help="the release build of benches/hyper_proxy, for the overhead part")
    ap.add_argument("--only", default=None,
                    help=f"comma-separated parts to run ({','.join(PARTS)}); the others come from "
                         "the last run's target/bench/results.json")
    args = ap.parse_args()
    respawn = os.path.abspath(args.respawn)
    workdir = os.path.abspath(args.workdir or tempfile.mkdtemp(prefix="respawn-bench-"))
    os.makedirs(workdir, exist_ok=True)
    started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M")
    only = set(args.only.split(",")) if args.only else set(PARTS)
    unknown = only - set(PARTS)
    if unknown:
        ap.error(f"unknown part(s) {', '.join(sorted(unknown))}; known: {', '.join(PARTS)}")
    # The builds that some parts compare, checked before anything is measured.
    missing = [f"the {part} part needs {flag}" for part, flag in PART_BUILDS.items()
               if part in only and not getattr(args, flag[2:].replace("-", "_"))]
    if missing:
        ap.error(f"{'; '.join(missing)} (scripts/bench.sh builds them)")
    r = {}
    reruns = []
    first_started = started
    if only != set(PARTS):
        try:
            with open("target/bench/results.json") as f:
                earlier = json.load(f)
            r = earlier["results"]
            first_started = earlier.get("started", "an earlier run")
            first_finished = earlier.get("finished", "")
            reruns = earlier.get("reruns", [])
        except (OSError, ValueError, KeyError):
            ap.error("--only needs the figures of an earlier full run in target/bench/results.json")
    if "hard_hang" in only:
        trials = []
        graceful = []
        for i in range(3):
            # Interleaved: the stop of today and the stop of before, under the same load.
            trials.append(respawn_hard_hang(respawn, workdir))
            log(f"  respawn trial {i + 1}: {fmt(trials[-1]['recovery_s'], 2)} s, lost {trials[-1]['lost']}")
            graceful.append(respawn_hard_hang(respawn, workdir, serve_args=["--hang-stop", "grace"]))
            log(f"  respawn --hang-stop grace, trial {i + 1}: {fmt(graceful[-1]['recovery_s'], 2)} s, "
                f"lost {graceful[-1]['lost']}")
        m = median([t["recovery_s"] for t in trials if t["recovery_s"] is not None])
        same_t = max(1, int(m + 0.999)) if m == m else 5
        log("1. hard hang: the original design's loop at T = 60 s (about 70 s)")
        original60 = [original_hard_hang(respawn, workdir, 60)]
        log(f"  the original design, T=60: {fmt(original60[0]['recovery_s'])} s")
        log(f"1. hard hang: the original design's loop at T = {same_t} s, 2 trials")
        original_same = [original_hard_hang(respawn, workdir, same_t) for _ in range(2)]
        log(f"  the original design, T={same_t}: {', '.join(fmt(t['recovery_s']) for t in original_same)} s")
        r["hard_hang"] = {"respawn": trials, "respawn_grace": graceful, "original_60": original60,
                          "original_same": original_same, "same_t": same_t}
    if "deadlock" in only:
        log("2. deadlock, busy")
        r["deadlock_busy"] = deadlock_busy(respawn, workdir)
        log(f"  {r['deadlock_busy']}")
        log("2. deadlock, idle")
        r["deadlock_idle"] = deadlock_idle(respawn, workdir)
        log(f"  {r['deadlock_idle']}")
    if "storm" in only:
        log("3. restart storm, 256 in flight")
        r["storm"] = storm(respawn, workdir)
        log(f"  {r['storm']}")
    if "overhead" in only:
        log("4. proxy overhead, 9 rounds (about 12 minutes)")
        r["overhead"] = proxy_overhead(respawn, workdir, os.path.abspath(args.hyper_proxy))
    if "launch" in only:
        log("4a. launch: respawn and nginx each in a session of its own vs in the driver's, 3 rounds (about 2 minutes)")
        r["launch"] = launch_fairness(respawn, workdir)
    if "code_layout" in only:
        log("4b. code layout: the release build with and without its function order, 3 rounds (about 1 minute)")
        r["code_layout"] = {
            "builds": code_layout({"ordered": respawn, "unordered": os.path.abspath(args.respawn_unordered)},
                                  workdir),
            "coverage": function_order_coverage(respawn),
        }
    if "pgo" in only:
        log("4c. profile-guided optimisation: the release build with and without its profile, 5 rounds (about 4 minutes)")
        builds = {"no_pgo": os.path.abspath(args.respawn_no_pgo), "pgo": respawn}
        r["pgo"] = build_ab(builds, respawn, workdir)
        r["pgo"]["coverage"] = {name: function_order_coverage(binary) for name, binary in builds.items()}
    if "allocator" in only:
        log("4d. allocator: the release build, the same with a larger glibc per-thread cache, and the same on "
            "mimalloc, 5 rounds (about 8 minutes)")
        builds = {"system": respawn, "tcache": respawn, "mimalloc": os.path.abspath(args.respawn_mimalloc)}
        r["allocator"] = build_ab(builds, respawn, workdir, bodies=True,
                                  envs={"tcache": {"GLIBC_TUNABLES": TCACHE_TUNABLES}})
        r["allocator"]["tunables"] = TCACHE_TUNABLES
        r["allocator"]["coverage"] = {name: function_order_coverage(binary) for name, binary in builds.items()}
    if "streaming" in only:
        log("5. streaming: 20 trials of three pairs, on the mock's shared step clock (about 1 minute)")
        r["streaming"] = streaming(respawn, workdir)
        log("5. streaming: the same with a timer per stream, as runs before 2026-12-04 (about 1 minute)")
        r["streaming_own_timers"] = streaming(respawn, workdir, shared_steps=False)
    if "restart_time" in only:
        log("6. restart steps")
        r["restart_time"] = restart_time(respawn, workdir)
    if "scaling" in only:
        log("7. supervising 1, 8 and 64 servers (about 2 minutes)")
        r["scaling"] = scaling(respawn, workdir)
    if "many_streams" in only:
        log("8. many concurrent streams: 1,000 × 100 tokens, direct, nginx, respawn, 5 rounds (about 1 minute)")
        r["many_streams"] = many_streams(respawn, workdir)
    finished = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M")
    if only == set(PARTS):
        first_finished = finished
    else:
        # Each part's figures come from its latest run: a rerun supersedes earlier reruns of the
        # same parts.
        reruns = [x for x in reruns if not set(x["parts"]) <= only]
        reruns.append({"parts": sorted(only), "started": started, "finished": finished})
    os.makedirs("target/bench", exist_ok=True)
    with open("target/bench/results.json", "w") as f:
        json.dump({"machine": machine_info(), "results": r, "started": first_started,
                   "finished": first_finished, "reruns": reruns}, f, indent=2)
    # Figures measured by other commands (the batch run, the real llama-server) live after this
    # marker; a rerun keeps them.
    marker = "<!-- figures measured by other commands: kept across reruns -->"
    kept = ""
    if os.path.exists(args.out):
        with open(args.out) as f:
            old = f.read()
        if marker in old:
            kept = old[old.index(marker):]
    write_doc(args.out, r, args.command, machine_info(), first_started, first_finished, reruns)
    if kept:
        with open(args.out, "a") as f:
            f.write("\n" + kept)
    log(f"wrote {args.out}; logs in {workdir}")


if __name__ == "__main__":
    main()
