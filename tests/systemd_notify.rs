//! The sd_notify protocol against a real notify socket created by the test: `READY=1`, watchdog
//! pings from the event loop (which stop while it is blocked), `STOPPING=1`, and silence when
//! `NOTIFY_SOCKET` is unset. Driven through `respawn mock`, which uses `respawn::web`.

// The child-process harness below is the same in every process test; not every test uses all of it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// A `respawn mock` child process, killed when dropped (even when the test fails).
struct Mock {
    child: Child,
    addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
}

impl Mock {
    fn start(args: &[&str]) -> Mock {
        Mock::start_with_env(args, &[])
    }

    fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Mock {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_respawn"));
        cmd.arg("mock")
            .args(["--port", "0", "--workers", "2"])
            .args(args)
            .env_remove("RESPAWN_ADMIN_TOKEN")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .env_remove("PORT")
            .env("RESPAWN_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn respawn mock");
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening on http://").nth(1) {
                    let _ = tx.send(rest.trim().to_owned());
                }
                sink.lock().push(line);
            }
        });
        let mut mock = Mock {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            log,
        };
        let addr = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the mock logs its address");
        mock.addr = addr.parse().expect("a socket address");
        mock
    }

    /// One request on a fresh connection; `None` when no complete answer came within `wait`.
    fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
        wait: Duration,
    ) -> Option<Answer> {
        let mut stream = TcpStream::connect(self.addr).ok()?;
        stream.set_read_timeout(Some(wait)).ok()?;
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
            self.addr,
            body.len()
        );
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).ok()?;
        stream.write_all(body.as_bytes()).ok()?;
        let deadline = Instant::now() + wait;
        let mut raw = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            if Instant::now() > deadline {
                return None;
            }
            match stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => raw.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => {
                    return None
                }
                Err(_) => break, // reset by peer: what was read is the answer
            }
        }
        if raw.is_empty() {
            return Some(Answer {
                status: 0,
                head: String::new(),
                body: String::new(),
            });
        }
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        Some(Answer {
            status,
            head: head.to_owned(),
            body: body.to_owned(),
        })
    }

    fn get(&self, path: &str) -> Option<Answer> {
        self.request("GET", path, &[], "", Duration::from_secs(10))
    }

    fn post(&self, path: &str, body: &str) -> Option<Answer> {
        self.request("POST", path, &[], body, Duration::from_secs(10))
    }

    /// Waits for the process to exit; `None` if it is still running after `wait`.
    fn wait_exit(&mut self, wait: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    fn logged(&self, needle: &str) -> bool {
        self.log.lock().iter().any(|l| l.contains(needle))
    }

    fn sigterm(&self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    }
}

impl Drop for Mock {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A raw HTTP answer.
#[derive(Debug)]
struct Answer {
    status: u16,
    head: String,
    body: String,
}

impl Answer {
    /// The `data:` payloads of an SSE body, in order.
    fn sse_data(&self) -> Vec<String> {
        self.body
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .map(str::to_owned)
            .collect()
    }

    /// The body as JSON (the mock answers short JSON bodies with a Content-Length).
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// A notify socket in a fresh directory; messages arrive on a channel with their arrival time.
struct NotifySocket {
    dir: PathBuf,
    path: PathBuf,
    messages: mpsc::Receiver<(Instant, String)>,
}

impl NotifySocket {
    fn new(name: &str) -> NotifySocket {
        let dir =
            std::env::temp_dir().join(format!("respawn-notify-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        let path = dir.join("notify.sock");
        let socket = UnixDatagram::bind(&path).expect("bind notify socket");
        NotifySocket {
            dir,
            path,
            messages: listen(socket),
        }
    }

    fn env(&self) -> String {
        self.path.to_str().expect("utf-8 path").to_owned()
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn listen(socket: UnixDatagram) -> mpsc::Receiver<(Instant, String)> {
    let (tx, rx) = mpsc::channel();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("set timeout");
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        loop {
            match socket.recv(&mut buf) {
                Ok(n) => {
                    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                    for line in text.lines() {
                        if tx.send((Instant::now(), line.to_owned())).is_err() {
                            return;
                        }
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => {
                    // Stop once the test has dropped the receiver.
                    if tx.send((Instant::now(), String::new())).is_err() {
                        return;
                    }
                }
                Err(_) => return,
            }
        }
    });
    rx
}

/// Waits up to `wait` for `line`; returns when it arrived.
fn wait_for(rx: &mpsc::Receiver<(Instant, String)>, line: &str, wait: Duration) -> Option<Instant> {
    let deadline = Instant::now() + wait;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok((at, got)) if got == line => return Some(at),
            Ok(_) => {}
            Err(_) => return None,
        }
    }
    None
}

/// Every `line` received during the next `span`.
fn collect(rx: &mpsc::Receiver<(Instant, String)>, line: &str, span: Duration) -> Vec<Instant> {
    let deadline = Instant::now() + span;
    let mut seen = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok((at, got)) if got == line => seen.push(at),
            Ok(_) => {}
            Err(_) => break,
        }
    }
    seen
}

fn largest_gap(times: &[Instant]) -> Duration {
    times
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default()
}

#[test]
fn ready_watchdog_pings_block_and_stopping() {
    let notify = NotifySocket::new("lifecycle");
    let mut mock = Mock::start_with_env(
        &["--debug-endpoints"],
        &[
            ("NOTIFY_SOCKET", &notify.env()),
            ("WATCHDOG_USEC", "200000"),
        ],
    );
    wait_for(&notify.messages, "READY=1", Duration::from_secs(30)).expect("READY=1 arrives");

    let pings = collect(&notify.messages, "WATCHDOG=1", Duration::from_secs(2));
    assert!(
        pings.len() >= 5,
        "pings about every 100 ms, got {} in 2 s",
        pings.len()
    );
    assert!(
        largest_gap(&pings) < Duration::from_millis(900),
        "gaps: {:?}",
        largest_gap(&pings)
    );

    let blocked = mock
        .request(
            "POST",
            "/debug/block?ms=1500",
            &[],
            "",
            Duration::from_secs(10),
        )
        .expect("the block request is answered");
    assert_eq!(blocked.status, 200);
    let around = collect(&notify.messages, "WATCHDOG=1", Duration::from_secs(4));
    assert!(
        largest_gap(&around) >= Duration::from_millis(1000),
        "no ping while the loop is blocked; largest gap {:?}",
        largest_gap(&around)
    );
    let last = *around.last().expect("pings resume after the block");
    assert!(
        last.elapsed() < Duration::from_secs(2),
        "pings resume after the block"
    );
    assert_eq!(mock.get("/health").expect("an answer").status, 200);

    mock.sigterm();
    wait_for(&notify.messages, "STOPPING=1", Duration::from_secs(15)).expect("STOPPING=1 arrives");
    let status = mock
        .wait_exit(Duration::from_secs(15))
        .expect("exits on SIGTERM");
    assert_eq!(status.code(), Some(0));
}

#[test]
fn ready_waits_for_the_slow_start() {
    let notify = NotifySocket::new("slow");
    let mock = Mock::start_with_env(
        &["--start-delay", "1s"],
        &[("NOTIFY_SOCKET", &notify.env())],
    );
    assert_eq!(mock.get("/health").expect("an answer").status, 503);
    wait_for(&notify.messages, "READY=1", Duration::from_secs(30)).expect("READY=1 arrives");
    assert_eq!(
        mock.get("/health").expect("an answer").status,
        200,
        "READY=1 only once loaded"
    );
}

#[test]
fn a_wedged_server_stops_pinging() {
    let notify = NotifySocket::new("wedge");
    let mock = Mock::start_with_env(
        &["--wedge-on", "POISON"],
        &[
            ("NOTIFY_SOCKET", &notify.env()),
            ("WATCHDOG_USEC", "200000"),
        ],
    );
    wait_for(&notify.messages, "READY=1", Duration::from_secs(30)).expect("READY=1 arrives");
    assert!(!collect(&notify.messages, "WATCHDOG=1", Duration::from_secs(1)).is_empty());
    let poison = r#"{"messages":[{"role":"user","content":"POISON"}]}"#;
    assert!(mock
        .request(
            "POST",
            "/v1/chat/completions",
            &[],
            poison,
            Duration::from_secs(1)
        )
        .is_none());
    // A ping already in flight may land just after the wedge; then silence.
    let _ = collect(&notify.messages, "WATCHDOG=1", Duration::from_millis(300));
    assert!(collect(&notify.messages, "WATCHDOG=1", Duration::from_secs(1)).is_empty());
}

#[test]
fn watchdog_is_off_when_watchdog_pid_names_another_process() {
    let notify = NotifySocket::new("pid");
    let _mock = Mock::start_with_env(
        &[],
        &[
            ("NOTIFY_SOCKET", &notify.env()),
            ("WATCHDOG_USEC", "200000"),
            ("WATCHDOG_PID", "1"),
        ],
    );
    wait_for(&notify.messages, "READY=1", Duration::from_secs(30)).expect("READY=1 arrives");
    assert!(collect(&notify.messages, "WATCHDOG=1", Duration::from_secs(1)).is_empty());
}

#[test]
fn abstract_socket_names_work() {
    let name = format!("respawn-notify-test-{}", std::process::id());
    let addr =
        <std::os::unix::net::SocketAddr as std::os::linux::net::SocketAddrExt>::from_abstract_name(
            name.as_bytes(),
        )
        .expect("abstract address");
    let socket = UnixDatagram::bind_addr(&addr).expect("bind abstract socket");
    let messages = listen(socket);
    let _mock = Mock::start_with_env(&[], &[("NOTIFY_SOCKET", &format!("@{name}"))]);
    wait_for(&messages, "READY=1", Duration::from_secs(30)).expect("READY=1 arrives");
}

#[test]
fn runs_normally_without_notify_socket() {
    let mut mock = Mock::start(&["--debug-endpoints"]);
    assert_eq!(mock.get("/health").expect("an answer").status, 200);
    assert_eq!(
        mock.post("/v1/completions", r#"{"prompt":"hi","max_tokens":2}"#)
            .expect("an answer")
            .status,
        200
    );
    mock.sigterm();
    assert_eq!(
        mock.wait_exit(Duration::from_secs(15))
            .and_then(|s| s.code()),
        Some(0)
    );
}
