//! What the reliability tests share: the `respawn` binary started with a guard that kills it and
//! every process group it made (even when a test fails), the tests' HTTP client (through
//! `tests/common`; it also tells a cleanly ended body from a broken one), and views of `/proc`
//! (process trees, groups, zombies, resident memory).

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

/// The helpers the `serve_*` tests use too (ports, polling, request bodies, /proc, HTTP).
#[path = "../common/mod.rs"]
mod common;

#[allow(unused_imports)] // each test file uses a different part
pub use common::{
    all_processes as processes, chat_body, cmdline, free_port, group_members as group,
    proc_stat as stat, wait_for, wait_log_end, ProcStat as Stat,
};

/// The `respawn` binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_respawn")
}

/// A scratch directory removed when dropped.
pub struct Scratch(PathBuf);

impl Scratch {
    /// A fresh directory whose name carries `label`, the test process id and a counter.
    pub fn new(label: &str) -> Scratch {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let path = std::env::temp_dir().join(format!(
            "respawn-reliability-{label}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&path).expect("create a scratch directory");
        Scratch(path)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Writes `name` in the directory and returns its path as text.
    pub fn file(&self, name: &str, text: &str) -> String {
        let path = self.0.join(name);
        std::fs::write(&path, text).expect("write a scratch file");
        path.to_str().expect("utf-8 path").to_owned()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------------------------

#[allow(unused_imports)] // each test file uses a different part
pub use common::{raw_exchange, request, sse_events, BodyEnd, Reply, SseEvent};

/// `GET path` (10 s bound): the whole answer, or an error.
pub fn get(addr: SocketAddr, path: &str) -> io::Result<Reply> {
    request(addr, "GET", path, &[], b"", Duration::from_secs(10))
}

/// `POST /v1/chat/completions`: the answer however its body ended ([`Reply::end`] says how);
/// an error only when no head arrived.
pub fn chat(
    addr: SocketAddr,
    prompt: &str,
    max_tokens: u64,
    stream: bool,
    timeout: Duration,
) -> io::Result<Reply> {
    let body = chat_body(prompt, max_tokens, stream);
    Ok(common::open(
        addr,
        "POST",
        "/v1/chat/completions",
        &[],
        body.as_bytes(),
        timeout,
    )?
    .into_reply())
}

/// The value of the sample `name{labels}` (exact label text) in a Prometheus exposition.
pub fn metric(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name_and_labels)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

// ---------------------------------------------------------------------------------------------
// /proc
// ---------------------------------------------------------------------------------------------

/// Whether `pid` exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    stat(pid).is_some_and(|s| s.state != 'Z' && s.state != 'X')
}

/// Every descendant of `root` (children, grandchildren, ...), zombies included.
pub fn descendants(root: u32) -> Vec<Stat> {
    let all = processes();
    let mut found: Vec<Stat> = Vec::new();
    let mut frontier = vec![root];
    while let Some(parent) = frontier.pop() {
        for p in all.iter().filter(|p| p.ppid == parent) {
            if !found.iter().any(|f| f.pid == p.pid) {
                found.push(*p);
                frontier.push(p.pid);
            }
        }
    }
    found
}

/// The live children of `pid`.
pub fn children(pid: u32) -> Vec<u32> {
    processes()
        .into_iter()
        .filter(|p| p.ppid == pid && p.state != 'Z')
        .map(|p| p.pid)
        .collect()
}

/// Resident memory of `pid` in KiB (`VmRSS` of `/proc/<pid>/status`).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Sends `sig` to `pid`, ignoring a process that is already gone.
pub fn signal(pid: u32, sig: Signal) {
    let _ = kill(Pid::from_raw(pid as i32), sig);
}

// ---------------------------------------------------------------------------------------------
// Running respawn
// ---------------------------------------------------------------------------------------------

/// A running `respawn` process with its stderr captured. Dropping it kills it, then every
/// process group it was seen to lead a child in, and every descendant still around.
pub struct Respawn {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
    /// Reads `log` from the stderr pipe.
    reader: Option<std::thread::JoinHandle<()>>,
    groups: Mutex<BTreeSet<u32>>,
    exit: Option<ExitStatus>,
    /// Where `serve` listens, when known.
    pub addr: Option<SocketAddr>,
}

/// Environment variables that would change how respawn behaves, removed from every run.
const INHERITED: [&str; 6] = [
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "PORT",
    "ENABLE_SERVER_RESTART",
    "SERVER_RESTART_WAIT_TIME",
];

impl Respawn {
    /// Runs `program args` (usually [`bin`]) with a clean respawn environment plus `env`.
    pub fn spawn_program(program: &str, args: &[String], env: &[(&str, &str)]) -> Respawn {
        Respawn::spawn_adjusted(program, args, env, &|_| {})
    }

    /// [`Respawn::spawn_program`], with `adjust` applied to the command before it is spawned
    /// (resource limits, for instance).
    pub fn spawn_adjusted(
        program: &str,
        args: &[String],
        env: &[(&str, &str)],
        adjust: &dyn Fn(&mut Command),
    ) -> Respawn {
        let mut cmd = Command::new(program);
        cmd.args(args);
        for (name, _) in std::env::vars() {
            if name.starts_with("RESPAWN_") || INHERITED.contains(&name.as_str()) {
                cmd.env_remove(name);
            }
        }
        // RESPAWN_TEST_LOG sets the filter of the respawn under test (a failing run's details).
        let filter = std::env::var("RESPAWN_TEST_LOG").unwrap_or_else(|_| "info".to_owned());
        cmd.env("RESPAWN_LOG", filter);
        for (name, value) in env {
            cmd.env(name, value);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        adjust(&mut cmd);
        let mut child = cmd.spawn().expect("spawn respawn");
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&log);
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().push(line);
            }
        });
        Respawn {
            child,
            log,
            reader: Some(reader),
            groups: Mutex::new(BTreeSet::new()),
            exit: None,
            addr: None,
        }
    }

    /// `respawn ARGS`.
    pub fn run(args: &[&str], env: &[(&str, &str)]) -> Respawn {
        let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
        Respawn::spawn_program(bin(), &args, env)
    }

    /// `respawn serve --listen 127.0.0.1:PORT --workers 2 OPTIONS -- COMMAND`, not waited for.
    pub fn serve(options: &[&str], command: &[&str], env: &[(&str, &str)]) -> Respawn {
        Respawn::serve_adjusted(options, command, env, &|_| {})
    }

    /// [`Respawn::serve`], with `adjust` applied to the command before it is spawned.
    pub fn serve_adjusted(
        options: &[&str],
        command: &[&str],
        env: &[(&str, &str)],
        adjust: &dyn Fn(&mut Command),
    ) -> Respawn {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
        let mut args = vec![
            "serve".to_owned(),
            "--listen".to_owned(),
            addr.to_string(),
            "--workers".to_owned(),
            "2".to_owned(),
        ];
        args.extend(options.iter().map(|s| (*s).to_owned()));
        args.push("--".to_owned());
        args.extend(command.iter().map(|s| (*s).to_owned()));
        let mut run = Respawn::spawn_adjusted(bin(), &args, env, adjust);
        run.addr = Some(addr);
        run
    }

    /// Like [`Respawn::serve`], then waits (≤ 30 s) for `/respawn/readyz`; panics with the log.
    ///
    /// Tests run in parallel and each picks "a free port" a moment before it is bound, so two can
    /// pick the same one: a start that fails because a port was taken (exit 4, or a child port
    /// already in use) is retried on new ports, up to five times.
    pub fn serve_ready(options: &[&str], command: &[&str], env: &[(&str, &str)]) -> Respawn {
        Respawn::serve_ready_adjusted(options, command, env, &|_| {})
    }

    /// [`Respawn::serve_ready`], with `adjust` applied to the command before it is spawned.
    pub fn serve_ready_adjusted(
        options: &[&str],
        command: &[&str],
        env: &[(&str, &str)],
        adjust: &dyn Fn(&mut Command),
    ) -> Respawn {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match Respawn::try_serve_ready(options, command, env, adjust) {
                Ok(run) => return run,
                Err(run) if attempt < 5 => drop(run),
                Err(run) => panic!(
                    "respawn could not get a free port in {attempt} attempts:\n{}",
                    run.log_text()
                ),
            }
        }
    }

    /// One start for [`Respawn::serve_ready`]; `Err` when a port collision stopped it.
    fn try_serve_ready(
        options: &[&str],
        command: &[&str],
        env: &[(&str, &str)],
        adjust: &dyn Fn(&mut Command),
    ) -> Result<Respawn, Box<Respawn>> {
        let mut run = Respawn::serve_adjusted(options, command, env, adjust);
        let addr = run.addr();
        let ready = wait_for(Duration::from_secs(30), || {
            if let Ok(Some(status)) = run.child.try_wait() {
                return Some(Err(status));
            }
            match get(addr, "/respawn/readyz") {
                Ok(r) if r.status == 200 => Some(Ok(())),
                _ => None,
            }
        });
        match ready {
            Some(Ok(())) => {
                run.status();
                Ok(run)
            }
            Some(Err(status)) => {
                run.exit = Some(status);
                // The line naming a taken port may be the last one: read the log to its end.
                run.wait_exit(Duration::ZERO);
                let log = run.log_text();
                if status.code() == Some(4) || log.contains("already in use") {
                    return Err(Box::new(run));
                }
                panic!("respawn exited with {status} before it was ready:\n{log}")
            }
            None => panic!("respawn was not ready within 30 s:\n{}", run.log_text()),
        }
    }

    /// The listen address.
    pub fn addr(&self) -> SocketAddr {
        self.addr.expect("a serve instance")
    }

    /// respawn's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything respawn wrote to stderr so far.
    pub fn log_text(&self) -> String {
        self.log.lock().join("\n")
    }

    /// `GET /respawn/status`, remembering the child's process group for the clean-up.
    pub fn status(&self) -> Value {
        let reply = get(self.addr(), "/respawn/status").expect("GET /respawn/status");
        assert_eq!(reply.status, 200, "{}", reply.text());
        let status = reply.json();
        self.remember(&status);
        status
    }

    /// Remembers the process group named by a status document.
    pub fn remember(&self, status: &Value) {
        if let Some(pid) = status["guardian_pid"].as_u64() {
            self.groups.lock().insert(pid as u32);
        }
    }

    /// Waits (≤ `bound`) until `check` accepts the status; panics with the last one and the log.
    pub fn wait_status(
        &self,
        bound: Duration,
        what: &str,
        check: impl Fn(&Value) -> bool,
    ) -> Value {
        let mut last = Value::Null;
        let found = wait_for(bound, || {
            let status = get(self.addr(), "/respawn/status").ok()?.try_json()?;
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

    /// The guardian (the child's process group leader), from the status.
    pub fn guardian(&self) -> Option<u32> {
        self.status()["guardian_pid"].as_u64().map(|p| p as u32)
    }

    /// The model server (`pid` in the status is the server's own, not the guardian's).
    pub fn server(&self) -> Option<u32> {
        self.status()["pid"].as_u64().map(|p| p as u32)
    }

    /// `GET /respawn/metrics` as text.
    pub fn metrics(&self) -> String {
        get(self.addr(), "/respawn/metrics")
            .expect("GET /respawn/metrics")
            .text()
    }

    /// Waits (≤ `bound`) for respawn to exit; then its whole log is in [`Respawn::log_text`].
    pub fn wait_exit(&mut self, bound: Duration) -> Option<ExitStatus> {
        if let Some(status) = self.exit {
            wait_log_end(&mut self.reader);
            return Some(status);
        }
        let child = &mut self.child;
        let status = wait_for(bound, || child.try_wait().ok().flatten());
        self.exit = status;
        if status.is_some() {
            wait_log_end(&mut self.reader);
        }
        status
    }

    /// Waits (≤ `bound`) for respawn to exit; panics with the log when it does not.
    pub fn exit_code(&mut self, bound: Duration) -> i32 {
        match self.wait_exit(bound) {
            Some(status) => status.code().unwrap_or(-1),
            None => panic!(
                "respawn did not exit within {bound:?}:\n{}",
                self.log_text()
            ),
        }
    }

    /// Sends `sig` to respawn itself.
    pub fn signal(&self, sig: Signal) {
        signal(self.child.id(), sig);
    }
}

impl Drop for Respawn {
    fn drop(&mut self) {
        let pid = self.child.id();
        let mut tree: Vec<u32> = descendants(pid).iter().map(|p| p.pid).collect();
        if self.exit.is_none() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        // The guardian cleans up after respawn's death (its descendants, its cgroup); give it
        // the time to, and only then kill what is left of its group.
        let groups: Vec<u32> = self.groups.lock().iter().copied().collect();
        wait_for(Duration::from_secs(5), || {
            groups.iter().all(|g| group(*g).is_empty()).then_some(())
        });
        for pgid in &groups {
            if !group(*pgid).is_empty() {
                let _ = killpg(Pid::from_raw(*pgid as i32), Signal::SIGKILL);
            }
        }
        tree.retain(|p| alive(*p));
        for p in tree {
            signal(p, Signal::SIGKILL);
        }
        if std::thread::panicking() {
            eprintln!("--- respawn log ---\n{}", self.log_text());
        }
    }
}
