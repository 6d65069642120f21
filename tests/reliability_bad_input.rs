//! `respawn serve` against bad input: every mistake ends in a clear message and a documented
//! exit code (3: gave up, 4: listen address in use, 0: stopped), or in a definite HTTP error for
//! the client — never a panic, a hot loop or a hang. Every wait is bounded.
//!
//! The configuration mistakes that stop respawn before it starts anything (no command, invalid
//! TOML, unknown key, bad duration: exit 2) are covered by `cli_serve_errors.rs`.

mod support;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use support::{bin, chat, get, group, raw_exchange, request, wait_for, Respawn, Scratch};

const EXIT_BOUND: Duration = Duration::from_secs(60);

/// Asserts respawn never panicked.
fn no_panic(run: &Respawn) {
    let log = run.log_text();
    assert!(!log.contains("panicked"), "respawn panicked:\n{log}");
}

/// The line respawn prints last when it gives up.
fn gave_up_line(run: &Respawn) -> String {
    run.log_text()
        .lines()
        .rev()
        .find(|l| l.starts_with("respawn serve: gave up:"))
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("no `gave up` line:\n{}", run.log_text()))
}

fn spawn_count(run: &Respawn) -> usize {
    run.log_text()
        .lines()
        .filter(|l| l.contains("server spawned"))
        .count()
}

#[test]
fn a_command_that_does_not_exist_gives_up_with_3_naming_it() {
    let mut run = Respawn::serve(
        &["--startup-timeout", "10s"],
        &["/nonexistent/model-server"],
        &[],
    );
    assert_eq!(run.exit_code(EXIT_BOUND), 3, "{}", run.log_text());
    let line = gave_up_line(&run);
    assert!(
        line.contains("`/nonexistent/model-server` not found"),
        "{line}"
    );
    no_panic(&run);
}

#[test]
fn a_command_that_is_not_executable_gives_up_with_3_naming_it() {
    let dir = Scratch::new("noexec");
    let program = dir.file("model-server", "#!/bin/sh\nexit 0\n");
    let mut run = Respawn::serve(&["--startup-timeout", "10s"], &[&program], &[]);
    assert_eq!(run.exit_code(EXIT_BOUND), 3, "{}", run.log_text());
    let line = gave_up_line(&run);
    assert!(
        line.contains(&format!("`{program}` is not executable")),
        "{line}"
    );
    no_panic(&run);
}

#[test]
fn a_child_that_exits_at_once_is_restarted_with_backoff_then_respawn_gives_up_with_3() {
    let started = Instant::now();
    let mut run = Respawn::serve(
        &[
            "--max-restarts",
            "3",
            "--restart-window",
            "10m",
            "--startup-timeout",
            "10s",
        ],
        &["false"],
        &[],
    );
    assert_eq!(run.exit_code(EXIT_BOUND), 3, "{}", run.log_text());
    let took = started.elapsed();
    // The first start and three restarts: not a hot loop of hundreds.
    assert_eq!(spawn_count(&run), 4, "{}", run.log_text());
    let backoffs = run
        .log_text()
        .lines()
        .filter(|l| l.contains("backing off before the restart"))
        .count();
    assert!(backoffs >= 2, "restarts back off:\n{}", run.log_text());
    assert!(took < EXIT_BOUND, "gave up after {took:?}");
    let line = gave_up_line(&run);
    assert!(line.contains("3 restarts"), "{line}");
    no_panic(&run);
}

#[test]
fn a_child_that_never_becomes_healthy_gives_up_with_3_naming_the_startup_timeout() {
    let mut run = Respawn::serve(
        &[
            "--startup-timeout",
            "2s",
            "--max-restarts",
            "1",
            "--stop-grace",
            "1s",
        ],
        &["sleep", "300"],
        &[],
    );
    assert_eq!(run.exit_code(EXIT_BOUND), 3, "{}", run.log_text());
    let line = gave_up_line(&run);
    // The reason respawn stopped must say what was wrong: no answer within the 2 s budget.
    assert!(
        line.contains("startup timeout") && line.contains("2s"),
        "the final message should name the startup timeout and its value (2s): {line}"
    );
    no_panic(&run);
}

#[test]
fn a_childs_port_taken_by_another_process_gives_up_with_3_naming_the_port() {
    let holder = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    let port = holder.local_addr().expect("addr").port().to_string();
    let mut run = Respawn::serve(
        &["--port", &port, "--startup-timeout", "10s"],
        &[bin(), "mock", "--port", "{port}"],
        &[],
    );
    assert_eq!(run.exit_code(EXIT_BOUND), 3, "{}", run.log_text());
    let line = gave_up_line(&run);
    assert!(
        line.contains(&format!("port {port}")) && line.contains("already in use"),
        "{line}"
    );
    no_panic(&run);
}

#[test]
fn a_listen_address_in_use_exits_4_naming_it() {
    let holder = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    let addr = holder.local_addr().expect("addr").to_string();
    let mut run = Respawn::run(
        &[
            "serve",
            "--listen",
            &addr,
            "--",
            bin(),
            "mock",
            "--port",
            "{port}",
        ],
        &[],
    );
    assert_eq!(run.exit_code(EXIT_BOUND), 4, "{}", run.log_text());
    let log = run.log_text();
    assert!(log.contains(&format!("cannot listen on {addr}")), "{log}");
    no_panic(&run);
}

/// A model server in Python that answers `/health` and ignores SIGTERM.
const DEAF_SERVER: &str = r#"
import http.server, os, signal
signal.signal(signal.SIGTERM, signal.SIG_IGN)
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.send_header("Content-Length", "2"); self.end_headers(); self.wfile.write(b"ok")
    def log_message(self, *a): pass
http.server.HTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"#;

#[test]
fn a_child_that_ignores_sigterm_is_killed_after_the_grace_and_respawn_exits_0() {
    let mut run = Respawn::serve_ready(
        &["--stop-grace", "1s", "--health-interval", "200ms"],
        &["python3", "-c", DEAF_SERVER],
        &[],
    );
    let guardian = run.guardian().expect("a guardian");
    let server = run.server().expect("the python server");
    let stopped_at = Instant::now();
    run.signal(Signal::SIGTERM);
    // Stopping takes the grace (1 s) and then a SIGKILL; the bound only ends a hung test.
    assert_eq!(
        run.exit_code(Duration::from_secs(30)),
        0,
        "{}",
        run.log_text()
    );
    let took = stopped_at.elapsed();
    assert!(
        took >= Duration::from_millis(900),
        "the grace was given before the SIGKILL ({took:?})"
    );
    let gone = wait_for(Duration::from_secs(30), || {
        group(guardian).is_empty().then_some(())
    });
    assert!(
        gone.is_some(),
        "the SIGTERM-deaf server {server} is gone: {:?}",
        group(guardian)
    );
    no_panic(&run);
}

#[test]
fn a_body_over_the_limit_is_413_and_respawn_serves_on() {
    let run = Respawn::serve_ready(
        &["--max-body-size", "1KiB"],
        &[bin(), "mock", "--port", "{port}"],
        &[],
    );
    let addr = run.addr();
    let big = format!("{{\"pad\":\"{}\"}}", "x".repeat(4096));
    let reply = request(
        addr,
        "POST",
        "/v1/chat/completions",
        &[],
        big.as_bytes(),
        Duration::from_secs(20),
    )
    .expect("an answer");
    assert_eq!(reply.status, 413, "{}", reply.text());
    assert_eq!(
        reply.error_type().as_deref(),
        Some("request_too_large"),
        "{}",
        reply.text()
    );

    // The same without a Content-Length: a chunked body that grows past the limit.
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let mut head = String::from(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
    );
    for _ in 0..4 {
        head.push_str(&format!("400\r\n{}\r\n", "y".repeat(0x400)));
    }
    head.push_str("0\r\n\r\n");
    let _ = stream.write_all(head.as_bytes());
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");

    let ok = chat(addr, "still here", 3, false, Duration::from_secs(20)).expect("a later request");
    assert_eq!(ok.status, 200, "{}", ok.text());
}

#[test]
fn a_slowloris_client_is_cut_off_after_the_header_timeout_and_others_are_served() {
    let run = Respawn::serve_ready(
        &["--header-timeout", "1s"],
        &[bin(), "mock", "--port", "{port}"],
        &[],
    );
    let addr = run.addr();
    // Many clients that send part of a request head and then nothing.
    let slow: Vec<TcpStream> = (0..50)
        .map(|_| {
            let mut s = TcpStream::connect(addr).expect("connect");
            s.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Le")
                .expect("write a partial head");
            s.set_read_timeout(Some(Duration::from_secs(15)))
                .expect("timeout");
            s
        })
        .collect();
    // Everyone else is served meanwhile.
    for i in 0..5 {
        let reply = chat(
            addr,
            &format!("honest {i}"),
            2,
            false,
            Duration::from_secs(20),
        )
        .expect("an answer");
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    // Each slow connection is closed (with or without a 408) within the timeout + a margin.
    let started = Instant::now();
    for (i, mut s) in slow.into_iter().enumerate() {
        let mut rest = Vec::new();
        match s.read_to_end(&mut rest) {
            Ok(_) => {}
            Err(err) if err.kind() == std::io::ErrorKind::ConnectionReset => {}
            Err(err) => panic!(
                "slow client {i} was not closed: {err} after {:?}",
                started.elapsed()
            ),
        }
        let text = String::from_utf8_lossy(&rest);
        assert!(
            text.is_empty() || text.starts_with("HTTP/1.1 408"),
            "slow client {i} got {text:?}"
        );
    }
    let reply = get(addr, "/respawn/status").expect("status after the slow clients");
    assert_eq!(reply.status, 200);
}

#[test]
fn malformed_http_gets_400_and_respawn_serves_on() {
    let run = Respawn::serve_ready(&[], &[bin(), "mock", "--port", "{port}"], &[]);
    let addr = run.addr();
    let garbage: [&[u8]; 4] = [
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 garbage\r\n\r\n",
        b"GET / HTTP/9.9\r\n\r\n",
        b"NOT HTTP AT ALL\r\n\r\n",
        b"GET /v1/models HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
    ];
    for bytes in garbage {
        let answer = raw_exchange(addr, bytes, Duration::from_secs(10)).unwrap_or_default();
        let text = String::from_utf8_lossy(&answer);
        assert!(
            text.is_empty() || text.starts_with("HTTP/1.1 400") || text.starts_with("HTTP/1.1 505"),
            "for {:?}: {text:?}",
            String::from_utf8_lossy(bytes)
        );
    }
    let ok =
        chat(addr, "after garbage", 3, false, Duration::from_secs(20)).expect("a later request");
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(run.status()["restarts"], 0);
}

/// A model server that answers `/health` properly and anything else with bytes that are not HTTP.
const GARBAGE_SERVER: &str = r#"
import os, socket, threading
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(os.environ["PORT"]))); s.listen(64)
def serve(c):
    try:
        data = c.recv(65536)
        if data.startswith(b"GET /health"):
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        else:
            c.sendall(b"\x00\xffnot http at all\r\n\r\n\x01\x02garbage")
    finally:
        c.close()
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;

#[test]
fn a_child_answering_garbage_gives_the_client_a_definite_502_and_respawn_survives() {
    let run = Respawn::serve_ready(
        &[
            "--health-interval",
            "200ms",
            "--retries",
            "2",
            "--canary-interval",
            "0",
            "--progress-metric",
            "none",
        ],
        &["python3", "-c", GARBAGE_SERVER],
        &[],
    );
    let addr = run.addr();
    for i in 0..3 {
        let reply = chat(
            addr,
            &format!("garbage {i}"),
            2,
            false,
            Duration::from_secs(60),
        )
        .expect("an answer");
        assert_eq!(reply.status, 502, "{}", reply.text());
        assert_eq!(
            reply.error_type().as_deref(),
            Some("upstream_failed"),
            "{}",
            reply.text()
        );
    }
    let status = run.status();
    assert_eq!(status["state"], "ready", "{status}");
    no_panic(&run);
}

#[test]
fn a_token_on_the_command_line_works_and_warns_that_it_shows_in_ps() {
    let token = "cmdline-token-7f3a9c";
    let run = Respawn::serve_ready(
        &["--admin-token", token],
        &[bin(), "mock", "--port", "{port}"],
        &[],
    );
    let addr = run.addr();
    let bearer = format!("Bearer {token}");
    let reply = request(
        addr,
        "POST",
        "/respawn/restart",
        &[("Authorization", &bearer)],
        b"",
        Duration::from_secs(10),
    )
    .expect("an answer");
    assert_eq!(reply.status, 202, "{}", reply.text());
    run.wait_status(Duration::from_secs(30), "the restart", |s| {
        s["generation"] == 2 && s["state"] == "ready"
    });
    let log = run.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("--admin-token") && l.contains("`ps`") && l.contains("WARN")),
        "a warning names the flag and `ps`:\n{log}"
    );
    assert!(
        !log.contains(token),
        "the token itself is never logged:\n{log}"
    );
}

#[test]
fn a_port_zero_listener_logs_the_address_it_really_bound() {
    // With `--listen 127.0.0.1:0` the only way to find respawn is its log line.
    let mut run = Respawn::run(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--",
            bin(),
            "mock",
            "--port",
            "{port}",
        ],
        &[],
    );
    let line = wait_for(Duration::from_secs(20), || {
        run.log_text()
            .lines()
            .find(|l| l.contains("respawn is listening"))
            .map(str::to_owned)
    })
    .unwrap_or_else(|| panic!("no listening line:\n{}", run.log_text()));
    let bound: Option<SocketAddr> = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("listen="))
        .and_then(|a| a.parse().ok());
    // At once: the signal handlers are armed before respawn starts anything, let alone logs
    // where it listens, so even this early a SIGTERM is a clean stop.
    run.signal(Signal::SIGTERM);
    assert_eq!(
        run.wait_exit(Duration::from_secs(30))
            .and_then(|s| s.code()),
        Some(0),
        "{}",
        run.log_text()
    );
    let bound = bound.unwrap_or_else(|| panic!("no address in {line}"));
    assert_ne!(
        bound.port(),
        0,
        "the log names the real port, not 0: {line}"
    );
}
