//! What the process tests of `respawn serve` share: start `respawn serve` on a free loopback
//! port and wait until it is ready, the tests' HTTP client (`tests/http_client`: whole answers,
//! JSON, and Server-Sent Events with the arrival time of every chunk), the process tree behind an
//! instance (guardian → real server), signals, and a guard that kills everything a test started
//! even when the test fails.

// Each test file uses a different part of this module.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::io::{self, BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use parking_lot::Mutex;
use serde_json::Value;

/// The `respawn` binary under test.
pub fn respawn_bin() -> &'static str {
    env!("CARGO_BIN_EXE_respawn")
}

/// A TCP port on 127.0.0.1 that is free now and that no other test of this binary is handed.
///
/// Ports come from below the kernel's ephemeral range (which starts at 32768 here), from a
/// per-process counter: tests of one binary run in parallel threads and never get the same port,
/// and nothing that binds port 0 (respawn choosing a child's port, a client socket) can take one
/// of them between the moment it is chosen and the moment it is bound.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    let offset = (std::process::id() * 7919) % SPAN;
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (LOW + (offset + n) % SPAN) as u16;
        // Free to bind, and nothing answers there (a listener that is shutting down, or one
        // that another process left behind, would).
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
            && std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
        {
            return port;
        }
    }
    panic!("no free port between {LOW} and {}", LOW + SPAN)
}

/// Polls `check` every 50 ms until it answers `Some`, or `None` after `bound` of running time
/// (a pause of the machine does not count: see [`pause`]).
pub fn wait_for<T>(bound: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let bound = pause::Bound::new(bound);
    loop {
        if let Some(value) = check() {
            return Some(value);
        }
        if bound.passed() {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A chat completion request body.
pub fn chat_body(prompt: &str, max_tokens: u64, stream: bool) -> String {
    serde_json::json!({
        "model": "mock-llm",
        "messages": [{ "role": "user", "content": prompt }],
        "max_tokens": max_tokens,
        "stream": stream,
    })
    .to_string()
}

/// A scratch directory removed when dropped.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// A fresh, empty directory named after `label`.
    pub fn new(label: &str) -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = std::env::temp_dir().join(format!(
            "respawn-test-{label}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&path).expect("create the scratch directory");
        TempDir { path }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------------------------

/// Every request of the process tests goes through one client: awc on a thread of its own.
#[path = "../http_client/mod.rs"]
mod http_client;

#[allow(unused_imports)] // each test file uses a different part
pub use http_client::{
    open, pause, raw_exchange, request, sse_events, BodyEnd, Chunk, Head, Reply, SseEvent,
    StreamingResponse,
};

/// A whole streamed completion as the client saw it: its head, its bytes, its events and how
/// its body ended.
pub struct Streamed {
    pub head: Head,
    pub raw: String,
    pub events: Vec<SseEvent>,
    pub end: BodyEnd,
}

impl Streamed {
    /// The JSON chunks, in order (not `[DONE]`, not named events such as `error`).
    pub fn json(&self) -> Vec<Value> {
        chunks(&self.events)
    }

    /// The pieces of text (chat deltas or text completions), in order.
    pub fn pieces(&self) -> Vec<String> {
        pieces(&self.events)
    }

    pub fn text(&self) -> String {
        self.pieces().concat()
    }

    /// The distinct `id`s, in order of appearance.
    pub fn ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .json()
            .iter()
            .filter_map(|v| v["id"].as_str().map(str::to_owned))
            .collect();
        ids.dedup();
        ids
    }

    pub fn dones(&self) -> usize {
        self.events.iter().filter(|e| e.data == "[DONE]").count()
    }

    pub fn errors(&self) -> Vec<&SseEvent> {
        self.events
            .iter()
            .filter(|e| e.event.as_deref() == Some("error"))
            .collect()
    }

    /// How many times respawn marked a resumption in the stream.
    pub fn resumptions(&self) -> usize {
        self.raw.matches(": respawn resumed").count()
    }

    /// The last usage object, if the stream reported one.
    pub fn usage(&self) -> Option<Value> {
        self.json()
            .into_iter()
            .rev()
            .find_map(|v| v.get("usage").filter(|u| u.is_object()).cloned())
    }
}

fn chunks(events: &[SseEvent]) -> Vec<Value> {
    events
        .iter()
        .filter(|e| e.event.is_none() && e.data != "[DONE]")
        .filter_map(|e| serde_json::from_str(&e.data).ok())
        .collect()
}

/// The pieces of text in `events` (chat deltas or text completions), in order.
pub fn pieces(events: &[SseEvent]) -> Vec<String> {
    chunks(events)
        .iter()
        .filter_map(|v| {
            let choice = &v["choices"][0];
            choice["delta"]["content"]
                .as_str()
                .or_else(|| choice["text"].as_str())
                .filter(|t| !t.is_empty())
                .map(str::to_owned)
        })
        .collect()
}

/// Sends `body` to `path` as a stream and reads it whole (the answer must be a 200); once
/// `cut_after` pieces of text arrived, calls `fault` once with the answer's head.
pub fn stream(
    addr: SocketAddr,
    path: &str,
    body: &Value,
    timeout: Duration,
    cut_after: Option<usize>,
    fault: impl FnOnce(&Head),
) -> Streamed {
    let body = body.to_string();
    let mut response =
        open(addr, "POST", path, &[], body.as_bytes(), timeout).expect("open the stream");
    assert_eq!(response.head.status, 200);
    let mut raw = Vec::new();
    let mut fault = Some(fault);
    let end = loop {
        match response.next_chunk() {
            Ok(Some(chunk)) => raw.extend_from_slice(&chunk.bytes),
            Ok(None) => break BodyEnd::Clean,
            Err(end) => break end,
        }
        if let Some(after) = cut_after {
            if fault.is_some() && pieces(&sse_events(&raw)).len() >= after {
                if let Some(fault) = fault.take() {
                    fault(&response.head);
                }
            }
        }
    };
    Streamed {
        head: response.head.clone(),
        raw: String::from_utf8_lossy(&raw).into_owned(),
        events: sse_events(&raw),
        end,
    }
}

/// `GET path`: the whole answer, or an error when none came complete within `timeout`.
pub fn get(addr: SocketAddr, path: &str, timeout: Duration) -> io::Result<Reply> {
    request(addr, "GET", path, &[], b"", timeout)
}

/// `POST path` with a JSON body: the whole answer, or an error.
pub fn post_json(addr: SocketAddr, path: &str, body: &str, timeout: Duration) -> io::Result<Reply> {
    request(addr, "POST", path, &[], body.as_bytes(), timeout)
}

/// One non-streamed chat completion to `addr`: the whole answer, or an error.
pub fn chat(
    addr: SocketAddr,
    prompt: &str,
    max_tokens: u64,
    timeout: Duration,
) -> io::Result<Reply> {
    post_json(
        addr,
        "/v1/chat/completions",
        &chat_body(prompt, max_tokens, false),
        timeout,
    )
}

/// The value of an unlabelled sample `name` in a Prometheus text exposition.
pub fn prometheus_value(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
}

// ---------------------------------------------------------------------------------------------
// Real servers
// ---------------------------------------------------------------------------------------------
//
// The tests that need llama.cpp's `llama-server` or the official OpenAI Python client are
// `#[ignore]`d, so that a run without them reports them as ignored rather than passed; CI runs
// them with `--include-ignored` (`RESPAWN_REQUIRE_REAL_SERVERS=1 bash scripts/test.sh`). A test
// that runs needs what it names: a missing one fails the test with the command that installs it.

/// The command that installs what the real-server tests need.
pub const INSTALL_REAL_SERVERS: &str = "bash scripts/ci-deps.sh";

/// Where `scripts/ci-deps.sh` builds and downloads into: `RESPAWN_CACHE`, else
/// `~/.cache/respawn`.
pub fn cache_root() -> PathBuf {
    match std::env::var_os("RESPAWN_CACHE") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/respawn"),
    }
}

/// llama.cpp's `llama-server` and its small model (`RESPAWN_LLAMA_SERVER`, `RESPAWN_LLAMA_MODEL`,
/// or where `scripts/install-llama-server.sh` puts them).
///
/// # Panics
/// When either is missing, with the command that installs them.
pub fn llama_server() -> (String, String) {
    let cache = cache_root().join("llama-11434");
    let server = std::env::var_os("RESPAWN_LLAMA_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| cache.join("bin/llama-server"));
    let model = std::env::var_os("RESPAWN_LLAMA_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| cache.join("models/SmolLM2-135M-Instruct.Q4_1.gguf"));
    for (what, path) in [("llama-server", &server), ("its model", &model)] {
        assert!(
            path.is_file(),
            "this test needs {what}, which is not installed at {}: run `{INSTALL_REAL_SERVERS}`",
            path.display()
        );
    }
    (
        server.to_string_lossy().into_owned(),
        model.to_string_lossy().into_owned(),
    )
}

/// The Python interpreter of the venv with the pinned `openai` client version
/// (`RESPAWN_OPENAI_PYTHON`, or where `scripts/openai-client-venv.sh` puts it).
///
/// # Panics
/// When it is missing, with the command that installs it.
pub fn openai_python(version: &str) -> PathBuf {
    let path = match std::env::var_os("RESPAWN_OPENAI_PYTHON") {
        Some(path) => PathBuf::from(path),
        None => cache_root()
            .join(format!("openai-{version}"))
            .join("venv/bin/python"),
    };
    assert!(
        path.is_file(),
        "this test needs the openai {version} client venv, which is not installed at {}: run `{INSTALL_REAL_SERVERS}`",
        path.display()
    );
    path
}

// ---------------------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------------------

/// One entry of `/proc/<pid>/stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    /// The process id.
    pub pid: u32,
    /// The state letter (`R`, `S`, `T` stopped, `Z` zombie, ...).
    pub state: char,
    /// The parent's pid.
    pub ppid: u32,
    /// The process group id.
    pub pgrp: u32,
}

/// Reads `/proc/<pid>/stat`; `None` when the process is gone.
pub fn proc_stat(pid: u32) -> Option<ProcStat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces: parse after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some(ProcStat {
        pid,
        state,
        ppid,
        pgrp,
    })
}

/// Every process on the machine, as `/proc` shows it now.
pub fn all_processes() -> Vec<ProcStat> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(proc_stat)
        .collect()
}

/// The live children of `pid` (zombies excluded).
pub fn children_of(pid: u32) -> Vec<u32> {
    let mut found = BTreeSet::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for task in tasks.flatten() {
            if let Ok(text) = std::fs::read_to_string(task.path().join("children")) {
                found.extend(
                    text.split_whitespace()
                        .filter_map(|p| p.parse::<u32>().ok()),
                );
            }
        }
    }
    if found.is_empty() {
        found.extend(
            all_processes()
                .into_iter()
                .filter(|p| p.ppid == pid)
                .map(|p| p.pid),
        );
    }
    found
        .into_iter()
        .filter(|p| proc_stat(*p).is_some_and(|s| s.state != 'Z' && s.ppid == pid))
        .collect()
}

/// Live (not zombie) processes whose process group is `pgid`.
pub fn group_members(pgid: u32) -> Vec<u32> {
    all_processes()
        .into_iter()
        .filter(|p| p.pgrp == pgid && p.state != 'Z' && p.state != 'X')
        .map(|p| p.pid)
        .collect()
}

/// The command line of `pid`, arguments joined by spaces.
pub fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|raw| {
            raw.split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

/// Sends `signal` to `pid`.
pub fn signal(pid: u32, signal: Signal) {
    kill(Pid::from_raw(pid as i32), signal)
        .unwrap_or_else(|err| panic!("kill({pid}, {signal}): {err}"));
}

/// Sends `signal` to every process of the group `pgid`.
pub fn signal_group(pgid: u32, signal: Signal) {
    killpg(Pid::from_raw(pgid as i32), signal)
        .unwrap_or_else(|err| panic!("killpg({pgid}, {signal}): {err}"));
}

// ---------------------------------------------------------------------------------------------
// respawn serve
// ---------------------------------------------------------------------------------------------

/// How to start a `respawn serve`.
#[derive(Clone, Debug, Default)]
pub struct ServeOptions {
    /// Options before `--` (without `--listen`, which is chosen here).
    pub args: Vec<String>,
    /// The child's command after `--`.
    pub command: Vec<String>,
    /// Extra environment.
    pub env: Vec<(String, String)>,
    /// Do not wait for `/respawn/readyz` (for instances expected to fail).
    pub no_wait: bool,
    /// Leave respawn's stderr unread (a pipe nobody reads) until [`Serve::read_stderr`].
    pub hold_stderr: bool,
}

impl ServeOptions {
    /// `respawn serve ARGS -- respawn mock --port {port} MOCK_ARGS`.
    pub fn mock(args: &[&str], mock_args: &[&str]) -> Self {
        let mut command = vec![
            respawn_bin().to_owned(),
            "mock".into(),
            "--port".into(),
            "{port}".into(),
        ];
        command.extend(mock_args.iter().map(|s| (*s).to_owned()));
        ServeOptions {
            args: args.iter().map(|s| (*s).to_owned()).collect(),
            command,
            env: Vec::new(),
            no_wait: false,
            hold_stderr: false,
        }
    }

    /// `respawn serve ARGS -- COMMAND`.
    pub fn command(args: &[&str], command: &[&str]) -> Self {
        ServeOptions {
            args: args.iter().map(|s| (*s).to_owned()).collect(),
            command: command.iter().map(|s| (*s).to_owned()).collect(),
            env: Vec::new(),
            no_wait: false,
            hold_stderr: false,
        }
    }

    /// Adds an environment variable.
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Returns as soon as the process runs, without waiting for readiness.
    pub fn no_wait(mut self) -> Self {
        self.no_wait = true;
        self
    }

    /// Leaves respawn's stderr a pipe that nobody reads, until [`Serve::read_stderr`].
    pub fn hold_stderr(mut self) -> Self {
        self.hold_stderr = true;
        self
    }
}

/// Fast detection settings for tests that are not about the defaults.
///
/// Probes are frequent, but each one gets a second to answer: a loaded machine can hold a
/// healthy child's answer back for a few hundred milliseconds, and three such answers in a row
/// would be a hang that never happened (a restart the test did not cause).
pub const FAST: &[&str] = &[
    "--health-interval",
    "200ms",
    "--health-timeout",
    "1s",
    "--unhealthy-after",
    "3",
    "--stop-grace",
    "1s",
    "--startup-timeout",
    "20s",
    "--canary-interval",
    "0",
];

/// [`FAST`] with `overrides` (pairs of `--flag value`) replacing or adding to it.
pub fn fast_args(overrides: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = FAST.iter().map(|s| (*s).to_owned()).collect();
    for pair in overrides.chunks(2) {
        let (flag, value) = (pair[0], pair.get(1).copied());
        match (args.iter().position(|a| a == flag), value) {
            (Some(at), Some(value)) => args[at + 1] = value.to_owned(),
            (None, Some(value)) => args.extend([flag.to_owned(), value.to_owned()]),
            (_, None) => args.push(flag.to_owned()),
        }
    }
    args
}

/// `respawn serve FAST+overrides -- respawn mock --port {port} MOCK_ARGS`, started and ready.
pub fn serve_mock(overrides: &[&str], mock_args: &[&str]) -> Serve {
    let mut options = ServeOptions::mock(&[], mock_args);
    options.args = fast_args(overrides);
    Serve::start(options)
}

/// A running `respawn serve`, killed with its whole child tree when dropped.
pub struct Serve {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
    held_stderr: Mutex<Option<std::process::ChildStderr>>,
    /// The thread reading stderr into `log`: joined once respawn exited, so the log is whole.
    reader: Mutex<Option<std::thread::JoinHandle<()>>>,
    groups: Mutex<BTreeSet<u32>>,
    exit: Option<ExitStatus>,
}

impl Serve {
    /// Starts `respawn serve` on a free loopback port; unless `no_wait`, waits (≤ 30 s) until
    /// `/respawn/readyz` answers 200.
    pub fn start(options: ServeOptions) -> Serve {
        for _ in 0..5 {
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
            let mut serve = Serve::spawn(&options, addr);
            if options.no_wait {
                return serve;
            }
            let ready = wait_for(Duration::from_secs(30), || {
                if let Ok(Some(status)) = serve.child.try_wait() {
                    return Some(Err(status));
                }
                match get(addr, "/respawn/readyz", Duration::from_secs(2)) {
                    Ok(r) if r.status == 200 => Some(Ok(())),
                    _ => None,
                }
            });
            match ready {
                Some(Ok(())) => {
                    serve.status();
                    return serve;
                }
                // Exit 4: the listen port was taken in between; pick another.
                Some(Err(status)) if status.code() == Some(4) => {
                    serve.exit = Some(status);
                    continue;
                }
                Some(Err(status)) => {
                    serve.exit = Some(status);
                    panic!(
                        "respawn serve exited with {status} before it was ready; log:\n{}",
                        serve.log_text()
                    );
                }
                None => panic!(
                    "respawn serve was not ready within 30 s; log:\n{}",
                    serve.log_text()
                ),
            }
        }
        panic!("no free listen port after 5 tries");
    }

    fn spawn(options: &ServeOptions, addr: SocketAddr) -> Serve {
        let mut cmd = Command::new(respawn_bin());
        cmd.arg("serve")
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--workers")
            .arg("2");
        cmd.args(&options.args).arg("--").args(&options.command);
        for (name, _) in std::env::vars() {
            if name.starts_with("RESPAWN_") {
                cmd.env_remove(name);
            }
        }
        for name in [
            "NOTIFY_SOCKET",
            "WATCHDOG_USEC",
            "WATCHDOG_PID",
            "PORT",
            "ENABLE_SERVER_RESTART",
            "SERVER_RESTART_WAIT_TIME",
        ] {
            cmd.env_remove(name);
        }
        cmd.env("RESPAWN_LOG", "info");
        for (name, value) in &options.env {
            cmd.env(name, value);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn respawn serve");
        let stderr = child.stderr.take().expect("piped stderr");
        let serve = Serve {
            child,
            addr,
            log: Arc::new(Mutex::new(Vec::new())),
            held_stderr: Mutex::new(Some(stderr)),
            reader: Mutex::new(None),
            groups: Mutex::new(BTreeSet::new()),
            exit: None,
        };
        if !options.hold_stderr {
            serve.read_stderr();
        }
        serve
    }

    /// Starts reading respawn's stderr into the log (at once, unless the options held it).
    pub fn read_stderr(&self) {
        let Some(stderr) = self.held_stderr.lock().take() else {
            return;
        };
        let sink = Arc::clone(&self.log);
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().push(line);
            }
        });
        *self.reader.lock() = Some(reader);
    }

    /// `http://ADDR`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// respawn's own pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything respawn wrote to stderr so far.
    pub fn log_text(&self) -> String {
        self.log.lock().join("\n")
    }

    /// Whether a logged line contains `needle`.
    pub fn logged(&self, needle: &str) -> bool {
        self.log.lock().iter().any(|l| l.contains(needle))
    }

    /// `GET /respawn/status` as JSON (remembers the guardian's group for the clean-up).
    pub fn status(&self) -> Value {
        let response = get(self.addr, "/respawn/status", Duration::from_secs(10))
            .expect("GET /respawn/status");
        assert_eq!(response.status, 200, "status: {}", response.text());
        let status = response.json();
        self.remember(&status);
        status
    }

    /// Remembers the process group (the guardian's pid) named by a status document.
    fn remember(&self, status: &Value) {
        if let Some(pid) = status["guardian_pid"].as_u64() {
            self.groups.lock().insert(pid as u32);
        }
    }

    /// Waits (≤ `bound`) until `check` accepts the status document; panics with the last one.
    pub fn wait_status(
        &self,
        bound: Duration,
        what: &str,
        check: impl Fn(&Value) -> bool,
    ) -> Value {
        let mut last = Value::Null;
        let found = wait_for(bound, || {
            let status = get(self.addr, "/respawn/status", Duration::from_secs(5))
                .ok()?
                .json();
            self.remember(&status);
            last = status.clone();
            check(&status).then_some(status)
        });
        found.unwrap_or_else(|| {
            panic!(
                "{what}: not within {bound:?}; last status {last}\nlog:\n{}",
                self.log_text()
            )
        })
    }

    /// The guardian's pid (the child's process group id), from the status.
    pub fn guardian_pid(&self) -> u32 {
        let status = self.status();
        status["guardian_pid"]
            .as_u64()
            .unwrap_or_else(|| panic!("a guardian_pid in the status: {status}")) as u32
    }

    /// The real server's pid, from the status (`pid` is the model server's, not the guardian's).
    pub fn server_pid(&self) -> u32 {
        let status = self.status();
        status["pid"]
            .as_u64()
            .unwrap_or_else(|| panic!("a pid in the status: {status}")) as u32
    }

    /// `POST path` with a JSON body through the proxy.
    pub fn post(&self, path: &str, body: &str, timeout: Duration) -> io::Result<Reply> {
        post_json(self.addr, path, body, timeout)
    }

    /// `GET path` through the proxy.
    pub fn get(&self, path: &str) -> io::Result<Reply> {
        get(self.addr, path, Duration::from_secs(10))
    }

    /// One chat completion through the proxy (non-streamed).
    pub fn chat(&self, prompt: &str, max_tokens: u64, timeout: Duration) -> io::Result<Reply> {
        chat(self.addr, prompt, max_tokens, timeout)
    }

    /// Waits (≤ `bound`) for respawn to exit; then its whole log is in [`Serve::log_text`].
    pub fn wait_exit(&mut self, bound: Duration) -> Option<ExitStatus> {
        if let Some(status) = self.exit {
            wait_log_end(&mut self.reader.lock());
            return Some(status);
        }
        let child = &mut self.child;
        let status = wait_for(bound, || child.try_wait().ok().flatten());
        self.exit = status;
        if status.is_some() {
            wait_log_end(&mut self.reader.lock());
        }
        status
    }

    /// Waits (≤ `bound`) until a logged line contains `needle`: the log is read on another
    /// thread, so a line respawn wrote is not there at once. Panics with the log.
    pub fn wait_logged(&self, needle: &str, bound: Duration) {
        if wait_for(bound, || self.logged(needle).then_some(())).is_none() {
            panic!(
                "{needle:?} not logged within {bound:?}:\n{}",
                self.log_text()
            );
        }
    }

    /// Sends `signal` to respawn itself.
    pub fn signal(&self, sig: Signal) {
        signal(self.child.id(), sig);
    }

    /// The process groups of every generation seen so far.
    pub fn groups_seen(&self) -> Vec<u32> {
        self.groups.lock().iter().copied().collect()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if self.exit.is_none() && matches!(self.child.try_wait(), Ok(None)) {
            if let Ok(response) = get(self.addr, "/respawn/status", Duration::from_secs(1)) {
                if let Some(pid) = serde_json::from_slice::<Value>(&response.body)
                    .ok()
                    .and_then(|s| s["guardian_pid"].as_u64())
                {
                    self.groups.lock().insert(pid as u32);
                }
            }
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        // The guardian kills its generation when respawn dies (its descendants, its cgroup); give
        // it the time to, and only then make sure of it (a stopped child too).
        let groups: Vec<u32> = self.groups.lock().iter().copied().collect();
        wait_for(Duration::from_secs(5), || {
            groups
                .iter()
                .all(|g| group_members(*g).is_empty())
                .then_some(())
        });
        for pgid in &groups {
            if !group_members(*pgid).is_empty() {
                let _ = killpg(Pid::from_raw(*pgid as i32), Signal::SIGKILL);
            }
        }
        if std::thread::panicking() {
            eprintln!("--- respawn serve log ---\n{}", self.log_text());
        }
    }
}

/// Waits until the thread reading a process's stderr has reached the end of the pipe, which it
/// does on its own schedule after the process exits: a loaded machine may keep it from reading
/// the last lines for a long while. Bounded, for a descendant that keeps the pipe open.
pub fn wait_log_end(reader: &mut Option<std::thread::JoinHandle<()>>) {
    let bound = pause::Bound::new(Duration::from_secs(30));
    if let Some(handle) = reader.take() {
        while !handle.is_finished() && !bound.passed() {
            std::thread::sleep(Duration::from_millis(10));
        }
        if handle.is_finished() {
            let _ = handle.join();
        }
    }
}
