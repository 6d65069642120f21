//! Shared helpers for the process tests: a `ServerActor` set up, started and stopped in one call,
//! free ports, scratch paths, an exit-event sink, polling for external conditions, a canned HTTP
//! server, and the re-exec roles.
//!
//! # Re-exec roles
//! Some tests need a second program: a guardian, a "fake respawn" parent that the test can
//! SIGKILL, or a process that listens on a port. Instead of shipping extra binaries, the test
//! binary re-executes itself (`std::env::current_exe()`) with `RESPAWN_TEST_ROLE` set. The role
//! is picked up by a function placed in `.init_array`, which the C runtime calls on the main
//! thread before `main`, so the role runs before the test harness starts any thread. That
//! matters for the guardian: it handles signals with `sigwait` and must be single-threaded,
//! or a process-directed signal could land on another thread. Arguments after `--` are the
//! role's arguments.
#![allow(dead_code)]

use std::ffi::{CStr, OsString};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::raw::c_char;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use parking_lot::Mutex;
use respawn_backends::{
    guardian_main, GuardianLaunch, ServerActor, ServerExited, ServerSpec, SpawnError, Start,
    Started, Stop, StopError, Stopped,
};
use respawn_core::Generation;
use tokio::sync::mpsc;

/// Environment variable naming the role a re-executed test binary plays.
pub const ROLE_ENV: &str = "RESPAWN_TEST_ROLE";

#[used]
#[link_section = ".init_array"]
static RUN_ROLE_BEFORE_MAIN: extern "C" fn(i32, *const *const c_char, *const *const c_char) =
    run_role_before_main;

extern "C" fn run_role_before_main(
    argc: i32,
    argv: *const *const c_char,
    _envp: *const *const c_char,
) {
    let Some(role) = std::env::var_os(ROLE_ENV) else {
        return;
    };
    let mut args: Vec<OsString> = Vec::new();
    for i in 0..argc.max(0) as usize {
        // SAFETY: glibc passes the process's argc/argv to `.init_array` functions; argv holds
        // argc valid NUL-terminated strings.
        let arg = unsafe { CStr::from_ptr(*argv.add(i)) };
        args.push(OsString::from_vec(arg.to_bytes().to_vec()));
    }
    let after_dashes: Vec<OsString> = args
        .iter()
        .position(|a| a == "--")
        .map(|at| args[at + 1..].to_vec())
        .unwrap_or_default();
    let code = match role.to_str() {
        Some("guardian") => guardian_main(after_dashes),
        Some("listen") => listen_forever(),
        Some("fake_parent") => fake_parent(after_dashes),
        _ => 99,
    };
    std::process::exit(code);
}

/// Role `listen`: accept connections on 127.0.0.1:$PORT until killed.
fn listen_forever() -> i32 {
    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    let Ok(listener) = TcpListener::bind(("127.0.0.1", port)) else {
        return 98;
    };
    println!("listening");
    let mut held = Vec::new();
    for stream in listener.incoming().flatten() {
        held.push(stream);
    }
    0
}

/// Environment variable choosing the fake parent's containment (`auto`, `cgroup`, `guardian`).
pub const CONTAINMENT_ENV: &str = "RESPAWN_TEST_CONTAINMENT";

/// Role `fake_parent`: plays respawn — starts a `ServerActor` with a guardian running `args`
/// (contained as [`CONTAINMENT_ENV`] says), prints `pgid <pid> cgroup <dir or ->`, and waits
/// to be killed.
fn fake_parent(args: Vec<OsString>) -> i32 {
    let Some((program, rest)) = args.split_first() else {
        return 97;
    };
    let mut spec = ServerSpec::new("fake", program.clone(), rest.to_vec(), 0);
    spec.guardian = Some(guardian_launch());
    spec.env.push((ROLE_ENV.into(), "guardian".into()));
    if let Some(containment) = std::env::var(CONTAINMENT_ENV)
        .ok()
        .and_then(|c| c.parse().ok())
    {
        spec.containment = containment;
    }
    let system = System::new();
    system.block_on(async move {
        let (events, _rx) = exit_events();
        let server = respawn_backends::ServerActor::new(spec, events).start();
        let started = server
            .send(respawn_backends::Start {
                generation: respawn_core::Generation(1),
            })
            .await;
        match started {
            Ok(Ok(started)) => {
                let cgroup = match server.send(respawn_backends::GetServerStatus).await {
                    Ok(status) => status
                        .cgroup
                        .map_or_else(|| "-".to_owned(), |dir| dir.display().to_string()),
                    Err(_) => "-".to_owned(),
                };
                println!("pgid {} cgroup {cgroup}", started.pid);
                let _ = std::io::stdout().flush();
                std::future::pending::<()>().await;
                0
            }
            _ => 96,
        }
    })
}

/// How a test's `ServerSpec` starts this test binary as the guardian (with `ROLE_ENV=guardian`
/// in the spec's environment).
pub fn guardian_launch() -> GuardianLaunch {
    GuardianLaunch {
        program: std::env::current_exe().expect("current exe"),
        args: Vec::new(),
    }
}

/// A spec that runs the guardian role around `program args…`.
pub fn guarded_spec(program: &str, args: &[&str]) -> ServerSpec {
    let mut spec = ServerSpec::new("guarded", program, args.iter().copied(), 0);
    spec.guardian = Some(guardian_launch());
    spec.env.push((ROLE_ENV.into(), "guardian".into()));
    spec
}

/// Runs this test binary in `role` with `args` after `--`, with piped stdout.
pub fn spawn_role(role: &str, args: &[&str], env: &[(&str, &str)]) -> KillOnDrop {
    let mut command = Command::new(std::env::current_exe().expect("current exe"));
    command
        .arg("--")
        .args(args)
        .env(ROLE_ENV, role)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    KillOnDrop(command.spawn().expect("re-exec the test binary"))
}

/// A child process killed (and reaped) when the test ends, even on failure.
pub struct KillOnDrop(pub Child);

impl KillOnDrop {
    /// The first stdout line.
    pub fn read_line(&mut self) -> String {
        let stdout = self.0.stdout.as_mut().expect("piped stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read a line");
        line.trim_end().to_owned()
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Kills a whole process group when dropped, so that a failing test leaves nothing behind.
pub struct KillGroupOnDrop(pub u32);

impl Drop for KillGroupOnDrop {
    fn drop(&mut self) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(self.0 as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
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

/// The live processes whose command line is exactly `cmdline` (arguments joined by spaces, the
/// program by its file name): the tests give each helper a unique command line to find it
/// wherever it moved.
pub fn processes_running(cmdline: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| alive(*pid))
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|raw| {
                let mut words: Vec<String> = raw
                    .split(|b| *b == 0)
                    .filter(|w| !w.is_empty())
                    .map(|w| String::from_utf8_lossy(w).into_owned())
                    .collect();
                if let Some(program) = words.first_mut() {
                    *program = program.rsplit('/').next().unwrap_or_default().to_owned();
                }
                words.join(" ") == cmdline
            })
        })
        .collect()
}

/// The session id of `pid` (field 6 of `/proc/<pid>/stat`).
pub fn session_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..]
        .split_whitespace()
        .nth(3)?
        .parse()
        .ok()
}

/// Whether process `pid` exists and has not exited (zombies count as gone).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let after = &stat[stat.rfind(')').map_or(0, |i| i + 1)..];
            !matches!(after.split_whitespace().next(), Some("Z") | Some("X"))
        }
        Err(_) => false,
    }
}

/// Polls `condition` every 10 ms until it holds or `within` passes; returns whether it held.
pub async fn eventually(within: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if condition() {
            return true;
        }
        if start.elapsed() >= within {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Blocking version of [`eventually`] for tests without a runtime.
pub fn eventually_blocking(within: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if condition() {
            return true;
        }
        if start.elapsed() >= within {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Collects [`ServerExited`] events into a channel.
pub struct ExitEvents(mpsc::UnboundedSender<ServerExited>);

impl Actor for ExitEvents {
    type Context = Context<Self>;
}

impl Handler<ServerExited> for ExitEvents {
    type Result = ();
    fn handle(&mut self, msg: ServerExited, _ctx: &mut Self::Context) {
        let _ = self.0.send(msg);
    }
}

/// A recipient for a `ServerActor` and the receiving end of its exit events.
pub fn exit_events() -> (
    Recipient<ServerExited>,
    mpsc::UnboundedReceiver<ServerExited>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    (ExitEvents(tx).start().recipient(), rx)
}

/// A `ServerActor` for `spec`, not started yet, with the receiver of its exit reports.
pub fn server_actor(
    spec: ServerSpec,
) -> (Addr<ServerActor>, mpsc::UnboundedReceiver<ServerExited>) {
    let (events, exits) = exit_events();
    (ServerActor::new(spec, events).start(), exits)
}

/// A `ServerActor` for `spec` that was sent `Start { generation }`, with the receiver of its exit
/// reports; panics when the start fails (the tests that expect a failure use [`try_start`]).
pub async fn start_server(
    spec: ServerSpec,
    generation: Generation,
) -> (
    Addr<ServerActor>,
    mpsc::UnboundedReceiver<ServerExited>,
    Started,
) {
    let (server, exits) = server_actor(spec);
    let started = start(&server, generation).await;
    (server, exits, started)
}

/// Sends `Start { generation }` to `server`: the start, or why it failed.
pub async fn try_start(
    server: &Addr<ServerActor>,
    generation: Generation,
) -> Result<Started, SpawnError> {
    server
        .send(Start { generation })
        .await
        .expect("the server actor is running")
}

/// Sends `Start { generation }` to `server`; panics when the start fails.
pub async fn start(server: &Addr<ServerActor>, generation: Generation) -> Started {
    try_start(server, generation)
        .await
        .unwrap_or_else(|err| panic!("generation {} did not start: {err}", generation.get()))
}

/// Sends `Stop { grace }` to `server`: what the stop did, or why it failed.
pub async fn stop(server: &Addr<ServerActor>, grace: Duration) -> Result<Stopped, StopError> {
    server
        .send(Stop { grace })
        .await
        .expect("the server actor is running")
}

/// A path in the temporary directory for `label`, unique to this test process, with nothing at
/// it yet (a file or directory a test makes there is its own to remove).
pub fn scratch_path(label: &str) -> PathBuf {
    let path =
        std::env::temp_dir().join(format!("respawn-backends-{label}-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let _ = std::fs::remove_dir_all(&path);
    path
}

/// What the canned HTTP server saw and how it answers: given the request head, the full
/// response to write, or `None` to hold the connection open without answering.
pub type Responder = Arc<Mutex<dyn FnMut(&str) -> Option<String> + Send>>;

/// A canned HTTP/1.1 response with an empty body.
pub fn http_status(code: u16, reason: &str) -> String {
    format!("HTTP/1.1 {code} {reason}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
}

/// Starts a tiny HTTP server on loopback answering with `responder`; returns its base URL.
pub fn canned_http(responder: impl FnMut(&str) -> Option<String> + Send + 'static) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let responder: Responder = Arc::new(Mutex::new(responder));
    std::thread::spawn(move || {
        let mut held: Vec<TcpStream> = Vec::new();
        for stream in listener.incoming().flatten() {
            let mut stream = stream;
            let head = read_head(&mut stream);
            let answer = (responder.lock())(&head);
            match answer {
                Some(response) => {
                    let _ = stream.write_all(response.as_bytes());
                }
                None => held.push(stream),
            }
        }
    });
    format!("http://{addr}")
}

fn read_head(stream: &mut TcpStream) -> String {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}
