//! Requests waiting for a ready server are bounded: while the model server is still loading (a
//! mock held in `--start-delay` until the test ends it through `/debug/finish-loading`), at most
//! `--max-waiting` requests wait, holding at most `--max-waiting-bytes` of body, for at most
//! `--max-wait-time`. A request past a bound is refused at once with a 503 that has `Retry-After`
//! and an OpenAI-shaped body, never a 502; the requests that were let wait are served once the
//! server is ready.

mod support;

use std::net::SocketAddr;
use std::thread::JoinHandle;
use std::time::Duration;

use nix::sys::signal::Signal;

use support::{bin, chat_body, metric, request, wait_for, Reply, Respawn};

const BOUND: Duration = Duration::from_secs(60);

/// A mock that stays loading until the test says it has loaded.
fn loading_mock() -> Vec<&'static str> {
    vec![
        bin(),
        "mock",
        "--port",
        "{port}",
        "--debug-endpoints",
        "--start-delay",
        "1h",
    ]
}

/// Starts `respawn serve OPTIONS` over a loading mock; answers it and the mock's own address,
/// once respawn is listening.
fn serve_loading(options: &[&str]) -> (Respawn, SocketAddr) {
    let run = Respawn::serve(options, &loading_mock(), &[]);
    let port = wait_for(BOUND, || {
        let log = run.log_text();
        let (_, rest) = log.split_once("child_port=")?;
        rest.split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse::<u16>()
            .ok()
    })
    .unwrap_or_else(|| panic!("respawn did not start listening:\n{}", run.log_text()));
    run.wait_status(BOUND, "the first generation spawned and loading", |s| {
        s["state"] == "starting" && s["generation"] == 1 && s["pid"].is_u64()
    });
    (run, SocketAddr::from(([127, 0, 0, 1], port)))
}

/// Ends the mock's loading: from now on it is ready.
fn finish_loading(mock: SocketAddr) {
    let reply = request(
        mock,
        "POST",
        "/debug/finish-loading",
        &[],
        b"",
        Duration::from_secs(10),
    )
    .expect("the mock answers");
    assert_eq!(reply.status, 200, "{}", reply.text());
}

/// Sends `body` as a chat completion on a thread of its own.
fn send(addr: SocketAddr, body: String) -> JoinHandle<Reply> {
    std::thread::spawn(move || {
        request(
            addr,
            "POST",
            "/v1/chat/completions",
            &[("content-type", "application/json")],
            body.as_bytes(),
            BOUND * 2,
        )
        .expect("an answer")
    })
}

fn post(addr: SocketAddr, body: &str) -> Reply {
    request(
        addr,
        "POST",
        "/v1/chat/completions",
        &[("content-type", "application/json")],
        body.as_bytes(),
        BOUND,
    )
    .expect("an answer")
}

fn waiting(run: &Respawn) -> (f64, f64) {
    let text = run.metrics();
    (
        metric(&text, "respawn_requests_waiting{server=\"server\"}").unwrap_or(-1.0),
        metric(&text, "respawn_requests_waiting_bytes{server=\"server\"}").unwrap_or(-1.0),
    )
}

/// Waits until `requests` requests holding `bytes` wait.
fn wait_waiting(run: &Respawn, requests: usize, bytes: usize) {
    let want = (requests as f64, bytes as f64);
    wait_for(BOUND, || (waiting(run) == want).then_some(())).unwrap_or_else(|| {
        panic!(
            "not {want:?} waiting but {:?}:\n{}",
            waiting(run),
            run.metrics()
        )
    });
}

fn refused(run: &Respawn, bound: &str) -> f64 {
    metric(
        &run.metrics(),
        &format!("respawn_requests_waiting_refused_total{{server=\"server\",bound=\"{bound}\"}}"),
    )
    .unwrap_or(-1.0)
}

/// A 503 with `Retry-After` (whole seconds, at least one) and an OpenAI-shaped error of `kind`;
/// answers its message.
fn assert_refused(reply: &Reply, kind: &str) -> String {
    assert_eq!(reply.status, 503, "{}", reply.text());
    let after = reply
        .header("retry-after")
        .unwrap_or_else(|| panic!("a 503 without Retry-After: {:?}", reply.headers));
    assert!(
        after.parse::<u64>().is_ok_and(|s| s >= 1),
        "Retry-After: {after}"
    );
    let json = reply
        .try_json()
        .unwrap_or_else(|| panic!("a 503 without a JSON body: {:?}", reply.text()));
    assert_eq!(json["error"]["type"], kind, "{json}");
    assert_eq!(json["error"]["code"], 503, "{json}");
    json["error"]["message"]
        .as_str()
        .unwrap_or_else(|| panic!("no message: {json}"))
        .to_owned()
}

fn assert_served(reply: &Reply) {
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(reply.text().contains("chat.completion"), "{}", reply.text());
}

#[test]
fn requests_past_the_count_are_refused_at_once_and_those_waiting_are_served_after_the_start() {
    let (run, mock) = serve_loading(&["--max-waiting", "2"]);
    let admitted: Vec<_> = (0..2)
        .map(|i| send(run.addr(), chat_body(&format!("waits {i}"), 2, false)))
        .collect();
    let body_len = chat_body("waits 0", 2, false).len();
    wait_waiting(&run, 2, 2 * body_len);

    for i in 0..2 {
        let reply = post(
            run.addr(),
            &chat_body(&format!("one too many {i}"), 2, false),
        );
        let message = assert_refused(&reply, "too_many_waiting");
        assert!(message.contains("--max-waiting"), "{message}");
    }
    // Refused while the server was still loading and the admitted ones still waited for it.
    assert!(admitted.iter().all(|t| !t.is_finished()));
    assert_eq!(run.status()["state"], "starting");
    assert_eq!(refused(&run, "requests"), 2.0);
    assert_eq!(
        metric(
            &run.metrics(),
            "respawn_requests_failed_total{server=\"server\",reason=\"waiting_full\"}"
        ),
        Some(2.0)
    );

    finish_loading(mock);
    for thread in admitted {
        assert_served(&thread.join().expect("a client thread"));
    }
    assert_eq!(waiting(&run), (0.0, 0.0), "every place was given back");
    assert_served(&post(run.addr(), &chat_body("after the start", 2, false)));
}

#[test]
fn a_body_past_the_waiting_bytes_is_refused_while_a_smaller_one_still_waits() {
    let (run, mock) = serve_loading(&["--max-waiting-bytes", "1000"]);
    let large = chat_body(&"x".repeat(500), 2, false);
    assert!(large.len() > 500 && large.len() < 1000);
    let first = send(run.addr(), large.clone());
    wait_waiting(&run, 1, large.len());

    let reply = post(run.addr(), &large.replace('x', "y"));
    let message = assert_refused(&reply, "too_many_waiting");
    assert!(message.contains("--max-waiting-bytes"), "{message}");
    assert_eq!(refused(&run, "bytes"), 1.0);
    assert_eq!(refused(&run, "requests"), 0.0);

    // The bound is on bytes, not on requests: a body that still fits waits.
    let small = chat_body("small", 2, false);
    assert!(large.len() + small.len() <= 1000);
    let second = send(run.addr(), small.clone());
    wait_waiting(&run, 2, large.len() + small.len());
    assert!(!first.is_finished() && !second.is_finished());

    finish_loading(mock);
    assert_served(&first.join().expect("a client thread"));
    assert_served(&second.join().expect("a client thread"));
    assert_eq!(waiting(&run), (0.0, 0.0), "every place was given back");
}

#[test]
fn a_request_that_waited_as_long_as_allowed_is_refused_while_the_server_still_loads() {
    let (run, mock) = serve_loading(&["--max-wait-time", "1s"]);
    let reply = post(run.addr(), &chat_body("waits too long", 2, false));
    let message = assert_refused(&reply, "server_unavailable");
    assert!(message.contains("not ready within"), "{message}");
    // The cause: the server was still loading, nothing else went wrong.
    let status = run.status();
    assert_eq!(
        (status["state"].as_str(), status["restarts"].as_u64()),
        (Some("starting"), Some(0)),
        "{status}"
    );
    assert_eq!(refused(&run, "time"), 1.0);
    assert_eq!(waiting(&run), (0.0, 0.0), "its place was given back");

    finish_loading(mock);
    run.wait_status(BOUND, "the server is ready", |s| s["state"] == "ready");
    assert_served(&post(run.addr(), &chat_body("once loaded", 2, false)));
}

#[test]
fn a_pause_of_respawn_while_a_request_waits_is_not_time_waited() {
    // A request may wait 2 s for the loading server; respawn is stopped for 3 s while it waits,
    // as a suspended machine stops it, and the server is ready 0.3 s after the resume. By the
    // monotonic clock the request waited over 3 s; respawn ran for well under 2 s of it.
    let (run, mock) = serve_loading(&["--max-wait-time", "2s"]);
    let body = chat_body("waits through a pause", 2, false);
    let len = body.len();
    let waiter = send(run.addr(), body);
    wait_waiting(&run, 1, len);
    run.signal(Signal::SIGSTOP);
    std::thread::sleep(Duration::from_secs(3));
    run.signal(Signal::SIGCONT);
    std::thread::sleep(Duration::from_millis(300));
    finish_loading(mock);

    assert_served(&waiter.join().expect("the waiting request's thread"));
    assert_eq!(refused(&run, "time"), 0.0, "{}", run.metrics());
    // Because respawn saw the pause and left it out.
    let paused = metric(
        &run.metrics(),
        "respawn_paused_seconds_total{server=\"server\"}",
    )
    .unwrap_or(-1.0);
    assert!(
        (2.0..3.5).contains(&paused),
        "the 3 s stop counted as paused: {paused}"
    );
}
