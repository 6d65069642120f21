//! `POST /restart` of `respawn::web`, driven through `respawn mock` (which embeds it): the
//! bearer-token rules, the 202, the cleanup hook and the documented exit code.

// The child-process harness below is the same in every process test; not every test uses all of it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
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

const TOKEN: &str = "test-token-4f9a2c";

fn restart(mock: &Mock, authorization: Option<&str>) -> Answer {
    let headers: Vec<(&str, &str)> = authorization
        .map(|a| ("Authorization", a))
        .into_iter()
        .collect();
    mock.request("POST", "/restart", &headers, "", Duration::from_secs(10))
        .expect("/restart answers")
}

#[test]
fn restart_refuses_missing_and_wrong_tokens() {
    let mut mock = Mock::start_with_env(&[], &[("RESPAWN_ADMIN_TOKEN", TOKEN)]);
    for auth in [
        None,
        Some("Bearer wrong-token"),
        Some(TOKEN),
        Some("Bearer test-token-4f9a2"),
        Some("Basic dGVzdA=="),
    ] {
        let answer = restart(&mock, auth);
        assert_eq!(answer.status, 401, "{auth:?}");
        assert!(
            answer
                .head
                .to_ascii_lowercase()
                .contains("www-authenticate: bearer"),
            "{}",
            answer.head
        );
    }
    assert_eq!(mock.get("/health").expect("an answer").status, 200);
    assert!(
        mock.wait_exit(Duration::from_millis(200)).is_none(),
        "still running"
    );
    assert!(!mock.logged(TOKEN), "the token never appears in logs");
}

#[test]
fn restart_refuses_everyone_when_no_token_is_configured() {
    let mut mock = Mock::start(&[]);
    let answer = restart(&mock, Some("Bearer anything"));
    assert_eq!(answer.status, 401);
    assert!(
        answer.body.contains("no admin token is configured"),
        "{}",
        answer.body
    );
    let answer = restart(&mock, None);
    assert_eq!(answer.status, 401);
    assert!(
        mock.wait_exit(Duration::from_millis(200)).is_none(),
        "still running"
    );
}

#[test]
fn restart_with_the_right_token_answers_202_runs_cleanup_and_exits_75() {
    let mut mock = Mock::start_with_env(&[], &[("RESPAWN_ADMIN_TOKEN", TOKEN)]);
    assert_eq!(mock.get("/health").expect("an answer").status, 200);
    let answer = restart(&mock, Some(&format!("Bearer {TOKEN}")));
    assert_eq!(answer.status, 202, "{answer:?}");
    let status = mock
        .wait_exit(Duration::from_secs(15))
        .expect("the process exits");
    assert_eq!(status.code(), Some(respawn::web::EXIT_RESTART));
    assert_eq!(respawn::web::EXIT_RESTART, 75);
    // The stderr reader may lag the exit by a moment.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !mock.logged("cleanup hook ran") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(mock.logged("cleanup hook ran"));
    assert!(!mock.logged(TOKEN), "the token never appears in logs");
}

#[test]
fn restart_works_on_a_wedged_server_and_the_exit_code_is_configurable() {
    let mut mock = Mock::start_with_env(
        &["--wedge-on", "POISON", "--restart-exit-code", "3"],
        &[("RESPAWN_ADMIN_TOKEN", TOKEN)],
    );
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
    let answer = restart(&mock, Some(&format!("Bearer {TOKEN}")));
    assert_eq!(answer.status, 202);
    let status = mock
        .wait_exit(Duration::from_secs(15))
        .expect("the process exits");
    assert_eq!(status.code(), Some(3));
}

#[test]
fn token_comparison_is_exact() {
    let token = respawn::auth::AdminToken::new(TOKEN).expect("valid");
    assert!(token.verify_header(Some(format!("Bearer {TOKEN}").as_bytes())));
    assert!(!token.verify_header(Some(b"Bearer test-token-4f9a2d")));
    assert!(!token.verify_header(Some(b"Bearer test-token-4f9a2")));
    assert!(!token.verify_header(Some(b"Bearer test-token-4f9a2c-and-more")));
    assert!(
        !token.verify_header(Some(TOKEN.as_bytes())),
        "missing the Bearer scheme"
    );
    assert!(!token.verify_header(Some(b"")));
    assert!(!token.verify_header(None));
}
