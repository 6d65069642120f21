//! Never restart a healthy server. Each rule of the supervision machine against false restarts,
//! with real processes: evidence of life beats a deadline (and silence still decides), what
//! `/health` answers matters (busy 503 is no hang, a dead engine's 503 is), operator restarts are
//! not incidents, and a request whose client left is cancelled upstream and never retried.
//!
//! The tests assert causes and the order of events; the figures (how long each took) are in
//! docs/RELIABILITY.md.

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::Duration;

use common::{
    chat_body, fast_args, free_port, get, prometheus_value, request, serve_mock, wait_for, Serve,
    ServeOptions, TempDir,
};
use nix::sys::signal::Signal;

const TOKEN: &str = "false-restarts-token-0123456789abcdef";
const CLIENT_TIMEOUT: Duration = Duration::from_secs(90);

/// A counter or gauge of the mock, read on the child's own port.
fn mock_value(child: SocketAddr, name: &str) -> Option<f64> {
    let text = get(child, "/metrics", Duration::from_secs(5)).ok()?.text();
    prometheus_value(&text, name)
}

fn state_file(dir: &TempDir) -> String {
    dir.path()
        .join("mock-state.json")
        .to_str()
        .expect("utf-8 path")
        .to_owned()
}

// ---------------------------------------------------------------------------------------------
// 1. Evidence of life beats a deadline.

#[test]
fn a_long_generation_with_tokens_flowing_outlives_its_request_timeout_without_a_restart() {
    // 40 tokens at 100 ms: about 4 s of generation, twice the request timeout, and nothing of
    // the answer before its end (not streamed). The token counter grows the whole time.
    let mut options = ServeOptions::mock(&[], &["--token-latency", "100ms"]);
    options.args = fast_args(&["--request-timeout", "2s"]);
    let serve = Serve::start(options.env("RESPAWN_LOG", "info,respawn::upstream=debug"));
    let response = serve
        .chat("a long answer", 40, CLIENT_TIMEOUT)
        .expect("the long request");
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(
        response.generation(),
        Some(1),
        "answered by the first server"
    );
    assert_eq!(response.header("x-respawn-attempts"), None, "one attempt");
    let status = serve.status();
    assert_eq!(status["restarts"], 0, "{status}");
    assert_eq!(status["last_cause"], serde_json::Value::Null, "{status}");
    assert!(
        serve.logged("past the deadline, but the server shows life"),
        "the deadline passed and was beaten by life:\n{}",
        serve.log_text()
    );
    assert!(!serve.logged("hang detected"), "{}", serve.log_text());
}

#[test]
fn with_no_progress_metric_and_no_other_traffic_a_silent_server_is_still_restarted() {
    let dir = TempDir::new("silent");
    let state = state_file(&dir);
    // The first completion deadlocks the engine, once for the job: /health stays green and
    // nothing answers. Without a progress metric there is no sign of life to weigh.
    let serve = serve_mock(
        &["--request-timeout", "2s", "--progress-metric", "none"],
        &["--deadlock-after", "0", "--state-file", &state],
    );
    let response = serve
        .chat("caught", 4, CLIENT_TIMEOUT)
        .expect("the caught request");
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.generation(), Some(2), "answered after the restart");
    let status = serve.status();
    assert_eq!(status["restarts"], 1, "{status}");
    assert_eq!(status["last_cause"], "first_byte_timeout", "{status}");
}

// ---------------------------------------------------------------------------------------------
// 2. What /health answers matters.

#[test]
fn a_server_answering_503_while_busy_is_not_restarted_and_every_request_succeeds() {
    // Default probing (1 s, 3 strikes): /health answers 503 whenever a completion runs, for the
    // whole 5 s of twenty concurrent requests of 100 tokens at 50 ms.
    let child_port = free_port();
    let port = child_port.to_string();
    let serve = serve_mock(
        &[
            "--port",
            &port,
            "--health-interval",
            "1s",
            "--health-timeout",
            "1s",
        ],
        &["--busy-health", "--token-latency", "50ms"],
    );
    let child = SocketAddr::from(([127, 0, 0, 1], child_port));
    let addr = serve.addr;
    let clients: Vec<_> = (0..20)
        .map(|i| {
            thread::spawn(move || common::chat(addr, &format!("busy {i}"), 100, CLIENT_TIMEOUT))
        })
        .collect();
    let busy = wait_for(Duration::from_secs(10), || {
        let health = get(child, "/health", Duration::from_secs(5)).ok()?;
        (health.status == 503 && health.text().contains("busy")).then_some(())
    });
    assert!(busy.is_some(), "the mock answers 503 while busy");
    for (i, client) in clients.into_iter().enumerate() {
        let response = client.join().expect("client thread").expect("request");
        assert_eq!(response.status, 200, "request {i}: {}", response.text());
        assert_eq!(response.generation(), Some(1), "request {i}");
    }
    let status = serve.status();
    assert_eq!(status["restarts"], 0, "{status}");
    assert_eq!(status["generation"], 1, "{status}");
    assert!(
        serve.logged("the health probe got an error status"),
        "the 503 is in the log:\n{}",
        serve.log_text()
    );
}

#[test]
fn a_dead_engine_answering_503_for_good_is_restarted() {
    let dir = TempDir::new("dead-engine");
    let state = state_file(&dir);
    // The second completion kills the engine: completions hang, the counter stops, /health
    // answers 503 for good. The request that killed it waits without a first byte, and the health
    // probes tell first (its first-byte timeout is far longer).
    let serve = serve_mock(
        &["--progress-timeout", "2s"],
        &["--engine-dead-after", "1", "--state-file", &state],
    );
    let first = serve
        .chat("fine", 4, CLIENT_TIMEOUT)
        .expect("the first request");
    assert_eq!(first.status, 200);
    // Either the client gives up first, or (when the restart is quicker than its second) the
    // request is retried on the next generation: the restart's cause is what this test checks.
    match serve.chat("kills the engine", 4, Duration::from_secs(1)) {
        Err(_) => {}
        Ok(answer) => {
            assert_eq!(answer.status, 200, "{}", answer.text());
            assert_eq!(answer.generation(), Some(2), "answered after the restart");
        }
    }
    let status = serve.wait_status(Duration::from_secs(30), "a restart", |s| {
        s["generation"] == 2 && s["state"] == "ready"
    });
    assert_eq!(status["last_cause"], "health_probes", "{status}");
    assert_eq!(status["restarts"], 1, "{status}");
    let log = serve.log_text();
    let warned = log
        .lines()
        .position(|l| l.contains("the health probe got an error status") && l.contains("503"));
    let detected = log
        .lines()
        .position(|l| l.contains("hang detected") && l.contains("health_probes"));
    assert!(
        warned.is_some() && detected.is_some() && warned < detected,
        "the 503 is logged, then the hang:\n{log}"
    );
    assert!(
        log.contains("engine dead"),
        "the body is in the log:\n{log}"
    );
    let after = serve
        .chat("after", 4, CLIENT_TIMEOUT)
        .expect("after the restart");
    assert_eq!(after.status, 200);
    assert_eq!(after.generation(), Some(2));
}

#[test]
fn a_wrong_health_path_is_obvious_in_the_log() {
    let mut options = ServeOptions::mock(&[], &[]);
    options.args = fast_args(&[
        "--health-path",
        "/no-such-health",
        "--startup-timeout",
        "2s",
    ]);
    let mut serve = Serve::start(options.no_wait());
    let exit = serve.wait_exit(Duration::from_secs(60));
    assert_eq!(exit.and_then(|s| s.code()), Some(3), "gave up");
    let log = serve.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("the health probe got an error status"))
        .unwrap_or_else(|| panic!("no warning about the health path:\n{log}"));
    assert!(line.contains("404"), "{line}");
}

// ---------------------------------------------------------------------------------------------
// 3. Operator restarts are not incidents.

fn post_restart(serve: &Serve) -> common::Reply {
    let bearer = format!("Bearer {TOKEN}");
    request(
        serve.addr,
        "POST",
        "/respawn/restart",
        &[("Authorization", &bearer)],
        b"",
        Duration::from_secs(10),
    )
    .expect("POST /respawn/restart")
}

#[test]
fn ten_manual_restarts_go_at_once_and_count_toward_nothing_but_real_hangs_still_do() {
    let mut options = ServeOptions::mock(&[], &[]);
    options.args = fast_args(&["--max-restarts", "2"]);
    let mut serve = Serve::start(options.env("RESPAWN_ADMIN_TOKEN", TOKEN));
    for n in 1..=10u64 {
        let accepted = post_restart(&serve);
        assert_eq!(accepted.status, 202, "{}", accepted.text());
        serve.wait_status(Duration::from_secs(20), "the next generation", |s| {
            s["generation"] == n + 1 && s["state"] == "ready"
        });
    }
    serve.signal(Signal::SIGHUP);
    let status = serve.wait_status(Duration::from_secs(20), "generation 12", |s| {
        s["generation"] == 12 && s["state"] == "ready"
    });
    assert_eq!(status["restarts"], 11, "{status}");
    assert_eq!(status["last_cause"], "signal", "{status}");
    let log = serve.log_text();
    assert_eq!(
        log.matches("restart requested by the operator").count(),
        11,
        "{log}"
    );
    assert!(!log.contains("hang detected"), "{log}");
    assert!(!log.contains("backing off"), "no backoff:\n{log}");
    let metrics = serve.get("/respawn/metrics").expect("metrics").text();
    assert!(
        metrics.contains("respawn_restarts_total{server=\"server\",cause=\"manual\"} 10"),
        "{metrics}"
    );
    assert!(
        metrics.contains("respawn_hangs_detected_total{server=\"server\",detector=\"manual\"} 0"),
        "{metrics}"
    );

    // Real incidents: the server dies. Two are within --max-restarts 2 ...
    for generation in [13u64, 14] {
        common::signal(serve.server_pid(), Signal::SIGKILL);
        serve.wait_status(Duration::from_secs(30), "a restart after a kill", |s| {
            s["generation"] == generation && s["state"] == "ready"
        });
    }
    // ... the third gives up, as documented.
    common::signal(serve.server_pid(), Signal::SIGKILL);
    let exit = serve.wait_exit(Duration::from_secs(60));
    assert_eq!(exit.and_then(|s| s.code()), Some(3), "gave up");
}

#[test]
fn a_request_caught_by_a_manual_restart_is_retried_and_never_a_suspect() {
    // With --poison-after 1, a request that became a suspect at one incident would be refused.
    let mut options = ServeOptions::mock(&[], &["--token-latency", "50ms"]);
    options.args = fast_args(&["--poison-after", "1"]);
    let serve = Serve::start(options.env("RESPAWN_ADMIN_TOKEN", TOKEN));
    let addr = serve.addr;
    let caught = thread::spawn(move || common::chat(addr, "caught", 40, CLIENT_TIMEOUT));
    serve.wait_status(Duration::from_secs(10), "the request in flight", |s| {
        s["in_flight"] == 1
    });
    assert_eq!(post_restart(&serve).status, 202);
    let response = caught.join().expect("client").expect("request");
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.generation(), Some(2), "retried on the new server");
    // The same request again: not quarantined.
    let again = serve.chat("caught", 40, CLIENT_TIMEOUT).expect("again");
    assert_eq!(again.status, 200, "{}", again.text());
}

// ---------------------------------------------------------------------------------------------
// 4. Abandoned requests are cancelled.

#[test]
fn a_client_that_leaves_a_non_streamed_request_cancels_it_upstream_without_retry() {
    let child_port = free_port();
    let port = child_port.to_string();
    let serve = serve_mock(&["--port", &port], &["--token-latency", "100ms"]);
    let child = SocketAddr::from(([127, 0, 0, 1], child_port));
    assert_eq!(mock_value(child, "mock:requests_running"), Some(0.0));

    // 100 tokens at 100 ms: about 10 s of generation, answered only at its end.
    let body = chat_body("a long answer nobody waits for", 100, false);
    // A raw socket on purpose: the test must close the connection itself, mid-request.
    let mut client = TcpStream::connect(serve.addr).expect("connect");
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        serve.addr,
        body.len()
    );
    client.write_all(head.as_bytes()).expect("head");
    client.write_all(body.as_bytes()).expect("body");
    let generating = wait_for(Duration::from_secs(10), || {
        (mock_value(child, "mock:requests_running") == Some(1.0)).then_some(())
    });
    assert!(generating.is_some(), "the child generates");
    drop(client);

    // The child sees the request cancelled while it is still generating: no completion yet.
    let cancelled = wait_for(Duration::from_secs(10), || {
        (mock_value(child, "mock:requests_cancelled_total") == Some(1.0)).then_some(())
    });
    assert!(
        cancelled.is_some(),
        "the upstream request was not cancelled"
    );
    assert_eq!(
        mock_value(child, "mock:completions_total"),
        Some(0.0),
        "cancelled before the generation ended"
    );
    let status = serve.wait_status(Duration::from_secs(10), "nothing in flight", |s| {
        s["in_flight"] == 0
    });
    // Gone for good: nothing was sent again, nothing restarted.
    assert_eq!(status["restarts"], 0, "{status}");
    assert_eq!(mock_value(child, "mock:requests_running"), Some(0.0));
    let metrics = serve.get("/respawn/metrics").expect("metrics").text();
    assert!(
        metrics.contains("respawn_requests_retried_total{server=\"server\"} 0"),
        "{metrics}"
    );
}

// ---------------------------------------------------------------------------------------------
// 5. A pause of the machine is not a hang.

/// A pause of the whole machine as respawn and its server see it: both stopped for `pause`;
/// then respawn runs again first, and the server's group (led by `guardian`) 0.3 s later.
fn pause_machine(serve: &Serve, guardian: u32, pause: Duration) {
    common::signal(serve.pid(), Signal::SIGSTOP);
    common::signal_group(guardian, Signal::SIGSTOP);
    thread::sleep(pause);
    common::signal(serve.pid(), Signal::SIGCONT);
    thread::sleep(Duration::from_millis(300));
    common::signal_group(guardian, Signal::SIGCONT);
}

#[test]
fn a_pause_of_the_whole_machine_mid_stream_costs_no_restart() {
    // No progress metric: at a stall deadline, nothing but the deadline decides. The stall
    // timeout is 1 s; respawn and its server are both stopped for 3 s, as a suspended machine
    // stops them, in the middle of a stream.
    let serve = serve_mock(
        &["--progress-metric", "none", "--stall-timeout", "1s"],
        &["--token-latency", "100ms"],
    );
    let guardian = serve.guardian_pid();
    let body = serde_json::from_str(&chat_body("through a pause", 30, true)).expect("json");
    let streamed = common::stream(
        serve.addr,
        "/v1/chat/completions",
        &body,
        CLIENT_TIMEOUT,
        Some(5),
        // The server continues 0.3 s after respawn (less than the stall timeout): by the
        // monotonic clock, the stream has been silent for over 3 s.
        |_| pause_machine(&serve, guardian, Duration::from_secs(3)),
    );
    assert_eq!(streamed.end, common::BodyEnd::Clean, "{}", streamed.raw);
    assert_eq!(
        common::pieces(&streamed.events).len(),
        30,
        "every token, once: {}",
        streamed.raw
    );
    assert_eq!(streamed.head.header("x-respawn-generation"), Some("1"));
    let status = serve.status();
    assert_eq!(status["restarts"], 0, "{status}");
    assert!(!serve.logged("hang detected"), "{}", serve.log_text());
    // Because respawn saw the pause, and said so.
    serve.wait_logged("respawn did not run for a while", Duration::from_secs(10));
    let metrics = serve.get("/respawn/metrics").expect("metrics").text();
    let paused = prometheus_value(&metrics, "respawn_paused_seconds_total{server=\"server\"}");
    assert!(
        paused.is_some_and(|s| (2.0..3.5).contains(&s)),
        "the 3 s stop counted as paused, less what a busy machine could take for lateness: {metrics}"
    );
}

#[test]
fn a_pause_of_the_whole_machine_during_a_graceful_stop_does_not_use_up_its_grace() {
    // A server that takes a while to exit on SIGTERM: a shell that leads the mock and, on
    // SIGTERM, sleeps 2 s before it exits. A manual restart gives it a 4 s grace; the machine
    // is paused for 5 s in the middle of that sleep.
    let script = format!(
        "{} mock --port \"$PORT\" & m=$!; trap 'sleep 2; exit 0' TERM; wait $m; wait $m",
        common::respawn_bin()
    );
    let mut options = ServeOptions::command(&[], &["sh", "-c", &script]);
    options.args = fast_args(&["--stop-grace", "4s"]);
    let serve = Serve::start(options.env("RESPAWN_ADMIN_TOKEN", TOKEN));
    let guardian = serve.guardian_pid();
    let accepted = post_restart(&serve);
    assert_eq!(accepted.status, 202, "{}", accepted.text());
    // The shell got its SIGTERM: its trap's sleep runs.
    let sleeping = wait_for(Duration::from_secs(10), || {
        common::group_members(guardian)
            .into_iter()
            .find(|&pid| common::cmdline(pid).starts_with("sleep"))
    });
    assert!(sleeping.is_some(), "the shell's trap did not run");
    // respawn sends SIGCONT right after the SIGTERM (for a frozen server): let it be sent
    // before the pause, or the group would be continued by it at the resume.
    thread::sleep(Duration::from_millis(300));
    // By the monotonic clock, the grace has been over for a second when the server continues.
    pause_machine(&serve, guardian, Duration::from_secs(5));

    serve.wait_status(Duration::from_secs(30), "generation 2 ready", |s| {
        s["generation"] == 2 && s["state"] == "ready"
    });
    let log = serve.log_text();
    assert!(
        !log.contains("ignored SIGTERM"),
        "the pause used up no grace: {log}"
    );
    let stopped: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("server stopped"))
        .collect();
    assert!(
        stopped
            .first()
            .is_some_and(|l| l.contains("escalated_to_kill: false") && l.contains("exit code 0")),
        "the shell exited on its own, after its sleep: {stopped:?}"
    );
    // Because respawn saw the pause, and said so.
    assert!(
        log.contains("respawn did not run for a while"),
        "the pause was logged: {log}"
    );
}
