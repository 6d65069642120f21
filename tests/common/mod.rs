//! What the process tests of `respawn serve` share: start `respawn serve` on a free loopback
//! port and wait until it is ready, a small blocking HTTP/1.1 client (whole responses, JSON, and
//! Server-Sent Events with the arrival time of every chunk), the process tree behind an instance
//! (guardian → real server), signals, and a guard that kills everything a test started even when
//! the test fails.

// Each test file uses a different part of this module.
#![allow(dead_code)]

use std::collections::{BTreeSet, VecDeque};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

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

/// Polls `check` every 50 ms until it answers `Some`, or `None` after `bound`.
pub fn wait_for<T>(bound: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + bound;
    loop {
        if let Some(value) = check() {
            return Some(value);
        }
        if Instant::now() >= deadline {
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

/// A whole HTTP response.
#[derive(Debug, Clone)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// Header names (lower-cased) and values, in order.
    pub headers: Vec<(String, String)>,
    /// The decoded body (chunked encoding removed).
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON (panics with the body when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|err| {
            panic!(
                "not JSON ({err}): status {} body {:?}",
                self.status,
                self.text()
            )
        })
    }

    /// The generation that answered, from `x-respawn-generation`.
    pub fn generation(&self) -> Option<u64> {
        self.header("x-respawn-generation")
            .and_then(|v| v.parse().ok())
    }
}

/// The head of a response whose body is still being read.
#[derive(Debug, Clone)]
pub struct Head {
    /// The status code.
    pub status: u16,
    /// Header names (lower-cased) and values.
    pub headers: Vec<(String, String)>,
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

enum Framing {
    Length(u64),
    Chunked,
    UntilClose,
}

/// A response read chunk by chunk as it arrives.
pub struct StreamingResponse {
    /// Status and headers.
    pub head: Head,
    reader: BufReader<TcpStream>,
    framing: Framing,
    finished: bool,
    /// Server-Sent Events are parsed across calls: one piece of the body may hold several
    /// events (a loaded proxy or client reads two of the child's writes at once), or a part of
    /// one; what [`StreamingResponse::events_until`] did not hand out yet waits here.
    sse: SseParser,
    parsed: VecDeque<SseEvent>,
}

/// One piece of a body and when it arrived.
#[derive(Debug, Clone)]
pub struct Chunk {
    /// When the last byte of the piece was read.
    pub at: Instant,
    /// The bytes.
    pub bytes: Vec<u8>,
}

/// How a streamed body ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyEnd {
    /// The chunked body's terminating chunk, or the declared length, or a clean close.
    Clean,
    /// The connection broke before the body's end (reset, truncated chunk, missing last chunk).
    Broken(String),
    /// Nothing arrived within the read timeout.
    TimedOut,
}

impl StreamingResponse {
    /// The next piece of the body; `Ok(None)` at its clean end.
    pub fn next_chunk(&mut self) -> Result<Option<Chunk>, BodyEnd> {
        if self.finished {
            return Ok(None);
        }
        let result = match self.framing {
            Framing::Chunked => self.next_http_chunk(),
            Framing::Length(0) => Ok(None),
            Framing::Length(left) => {
                let mut buf = vec![0u8; left.min(64 * 1024) as usize];
                match self.reader.read(&mut buf) {
                    Ok(0) => Err(BodyEnd::Broken(format!("closed with {left} bytes missing"))),
                    Ok(n) => {
                        buf.truncate(n);
                        self.framing = Framing::Length(left - n as u64);
                        Ok(Some(Chunk {
                            at: Instant::now(),
                            bytes: buf,
                        }))
                    }
                    Err(err) => Err(io_end(err)),
                }
            }
            Framing::UntilClose => {
                let mut buf = vec![0u8; 64 * 1024];
                match self.reader.read(&mut buf) {
                    Ok(0) => Ok(None),
                    Ok(n) => {
                        buf.truncate(n);
                        Ok(Some(Chunk {
                            at: Instant::now(),
                            bytes: buf,
                        }))
                    }
                    Err(err) => Err(io_end(err)),
                }
            }
        };
        if !matches!(result, Ok(Some(_))) {
            self.finished = true;
        }
        result
    }

    fn next_http_chunk(&mut self) -> Result<Option<Chunk>, BodyEnd> {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => return Err(BodyEnd::Broken("closed before the last chunk".into())),
            Ok(_) => {}
            Err(err) => return Err(io_end(err)),
        }
        let size_text = line.trim().split(';').next().unwrap_or("").to_owned();
        let size = u64::from_str_radix(&size_text, 16)
            .map_err(|_| BodyEnd::Broken(format!("bad chunk size line {line:?}")))?;
        if size == 0 {
            // Trailers (none expected) and the final CRLF.
            loop {
                let mut trailer = String::new();
                match self.reader.read_line(&mut trailer) {
                    Ok(0) => break,
                    Ok(_) if trailer.trim().is_empty() => break,
                    Ok(_) => {}
                    Err(err) => return Err(io_end(err)),
                }
            }
            return Ok(None);
        }
        let mut bytes = vec![0u8; size as usize + 2];
        if let Err(err) = self.reader.read_exact(&mut bytes) {
            return Err(match err.kind() {
                io::ErrorKind::UnexpectedEof => BodyEnd::Broken("closed inside a chunk".into()),
                _ => io_end(err),
            });
        }
        bytes.truncate(size as usize);
        Ok(Some(Chunk {
            at: Instant::now(),
            bytes,
        }))
    }

    /// Reads the body to its end: every piece with its arrival time, and how it ended.
    pub fn collect(mut self) -> (Vec<Chunk>, BodyEnd) {
        let mut chunks = Vec::new();
        loop {
            match self.next_chunk() {
                Ok(Some(chunk)) => chunks.push(chunk),
                Ok(None) => return (chunks, BodyEnd::Clean),
                Err(end) => return (chunks, end),
            }
        }
    }

    /// Reads Server-Sent Events until `stop` says so (that event included) or the body ends.
    /// Events that arrived with the stopping one are kept for the next call, never dropped.
    pub fn events_until(
        &mut self,
        mut stop: impl FnMut(&SseEvent) -> bool,
    ) -> (Vec<SseEvent>, BodyEnd) {
        let mut events = Vec::new();
        loop {
            while let Some(event) = self.parsed.pop_front() {
                let done = stop(&event);
                events.push(event);
                if done {
                    return (events, BodyEnd::Clean);
                }
            }
            match self.next_chunk() {
                Ok(Some(chunk)) => {
                    let fed = self.sse.feed(&chunk);
                    self.parsed.extend(fed);
                }
                Ok(None) => return (events, BodyEnd::Clean),
                Err(end) => return (events, end),
            }
        }
    }

    /// Every Server-Sent Event of the body and how the body ended.
    pub fn events(mut self) -> (Vec<SseEvent>, BodyEnd) {
        self.events_until(|_| false)
    }
}

fn io_end(err: io::Error) -> BodyEnd {
    match err.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => BodyEnd::TimedOut,
        _ => BodyEnd::Broken(err.to_string()),
    }
}

/// One Server-Sent Event.
#[derive(Debug, Clone)]
pub struct SseEvent {
    /// When the chunk that completed it arrived.
    pub at: Instant,
    /// The `event:` field, if any.
    pub event: Option<String>,
    /// The `data:` lines joined by newlines.
    pub data: String,
}

#[derive(Default)]
struct SseParser {
    pending: String,
}

impl SseParser {
    fn feed(&mut self, chunk: &Chunk) -> Vec<SseEvent> {
        self.pending
            .push_str(&String::from_utf8_lossy(&chunk.bytes));
        let mut out = Vec::new();
        while let Some(end) = self.pending.find("\n\n") {
            let block: String = self.pending[..end].to_owned();
            self.pending.drain(..end + 2);
            let mut event = None;
            let mut data = Vec::new();
            for line in block.lines() {
                if let Some(rest) = line.strip_prefix("event:") {
                    event = Some(rest.trim().to_owned());
                } else if let Some(rest) = line.strip_prefix("data:") {
                    data.push(rest.strip_prefix(' ').unwrap_or(rest).to_owned());
                }
            }
            if event.is_some() || !data.is_empty() {
                out.push(SseEvent {
                    at: chunk.at,
                    event,
                    data: data.join("\n"),
                });
            }
        }
        out
    }
}

/// Sends one request on a fresh connection and returns once the response head arrived.
/// `timeout` bounds every read and write.
pub fn open(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> io::Result<StreamingResponse> {
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.set_nodelay(true)?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\n");
    if !headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("connection"))
    {
        head.push_str("Connection: close\r\n");
    }
    let mut has_type = false;
    for (name, value) in headers {
        has_type |= name.eq_ignore_ascii_case("content-type");
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() && !has_type {
        head.push_str("Content-Type: application/json\r\n");
    }
    if method != "GET" || !body.is_empty() {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    let mut writer = stream.try_clone()?;
    writer.write_all(head.as_bytes())?;
    writer.write_all(body)?;
    writer.flush()?;
    let mut reader = BufReader::new(stream);
    let mut status_line = String::new();
    if reader.read_line(&mut status_line)? == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "closed before the status line",
        ));
    }
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("bad status line {status_line:?}"),
            )
        })?;
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed inside the head",
            ));
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
    }
    let head = Head { status, headers };
    let framing = if head
        .header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    {
        Framing::Chunked
    } else if let Some(length) = head.header("content-length").and_then(|v| v.parse().ok()) {
        Framing::Length(length)
    } else if method == "HEAD" || status == 204 || status == 304 {
        Framing::Length(0)
    } else {
        Framing::UntilClose
    };
    Ok(StreamingResponse {
        head,
        reader,
        framing,
        finished: false,
        sse: SseParser::default(),
        parsed: VecDeque::new(),
    })
}

/// Sends one request and reads the whole response; an error when it did not end cleanly.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> io::Result<Response> {
    let streaming = open(addr, method, path, headers, body, timeout)?;
    let head = streaming.head.clone();
    let (chunks, end) = streaming.collect();
    if end != BodyEnd::Clean {
        return Err(io::Error::other(format!(
            "status {} body ended badly: {end:?}",
            head.status
        )));
    }
    Ok(Response {
        status: head.status,
        headers: head.headers,
        body: chunks.into_iter().flat_map(|c| c.bytes).collect(),
    })
}

/// `GET path`.
pub fn get(addr: SocketAddr, path: &str, timeout: Duration) -> io::Result<Response> {
    request(addr, "GET", path, &[], b"", timeout)
}

/// `POST path` with a JSON body.
pub fn post_json(
    addr: SocketAddr,
    path: &str,
    body: &str,
    timeout: Duration,
) -> io::Result<Response> {
    request(addr, "POST", path, &[], body.as_bytes(), timeout)
}

/// One non-streamed chat completion to `addr`.
pub fn chat(
    addr: SocketAddr,
    prompt: &str,
    max_tokens: u64,
    timeout: Duration,
) -> io::Result<Response> {
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
        }
    }

    /// `respawn serve ARGS -- COMMAND`.
    pub fn command(args: &[&str], command: &[&str]) -> Self {
        ServeOptions {
            args: args.iter().map(|s| (*s).to_owned()).collect(),
            command: command.iter().map(|s| (*s).to_owned()).collect(),
            env: Vec::new(),
            no_wait: false,
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
    /// Reads `log` from the stderr pipe.
    reader: Option<std::thread::JoinHandle<()>>,
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
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&log);
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().push(line);
            }
        });
        Serve {
            child,
            addr,
            log,
            reader: Some(reader),
            groups: Mutex::new(BTreeSet::new()),
            exit: None,
        }
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
        if let Some(pid) = status["pid"].as_u64() {
            self.groups.lock().insert(pid as u32);
        }
        status
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
            if let Some(pid) = status["pid"].as_u64() {
                self.groups.lock().insert(pid as u32);
            }
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
        self.status()["pid"].as_u64().expect("a pid in the status") as u32
    }

    /// The real server: the guardian's child (waits ≤ 30 s for it to appear).
    pub fn server_pid(&self) -> u32 {
        let guardian = self.guardian_pid();
        wait_for(Duration::from_secs(30), || {
            children_of(guardian).first().copied()
        })
        .unwrap_or_else(|| panic!("the guardian {guardian} has no child"))
    }

    /// `POST path` with a JSON body through the proxy.
    pub fn post(&self, path: &str, body: &str, timeout: Duration) -> io::Result<Response> {
        post_json(self.addr, path, body, timeout)
    }

    /// `GET path` through the proxy.
    pub fn get(&self, path: &str) -> io::Result<Response> {
        get(self.addr, path, Duration::from_secs(10))
    }

    /// One chat completion through the proxy (non-streamed).
    pub fn chat(&self, prompt: &str, max_tokens: u64, timeout: Duration) -> io::Result<Response> {
        chat(self.addr, prompt, max_tokens, timeout)
    }

    /// Waits (≤ `bound`) for respawn to exit; then its whole log is in [`Serve::log_text`].
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
                    .and_then(|s| s["pid"].as_u64())
                {
                    self.groups.lock().insert(pid as u32);
                }
            }
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        // The guardian kills its group when respawn dies; make sure of it (a stopped child too).
        for pgid in self.groups.lock().iter() {
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
fn wait_log_end(reader: &mut Option<std::thread::JoinHandle<()>>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    if let Some(handle) = reader.take() {
        while !handle.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if handle.is_finished() {
            let _ = handle.join();
        }
    }
}
