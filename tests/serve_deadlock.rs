//! The health-green deadlock: `/health` answers while completions hang. Found by the progress
//! metric while a request is in flight, by the canary while idle (before any client meets it),
//! and a server that is merely slow is left alone.

mod common;

use std::time::Duration;

use common::{serve_mock, TempDir};

#[test]
fn a_deadlock_with_a_request_in_flight_is_found_by_the_progress_metric() {
    let serve = serve_mock(&["--progress-timeout", "3s"], &["--deadlock-after", "2"]);
    for i in 0..2 {
        let response = serve
            .chat(&format!("fine {i}"), 4, Duration::from_secs(30))
            .expect("request");
        assert_eq!(response.status, 200);
    }
    // The third completion meets the deadlock: /health stays green, the token counter stops.
    let response = serve
        .chat("caught", 4, Duration::from_secs(60))
        .expect("the caught request");
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.generation(), Some(2), "answered after the restart");
    let status = serve.status();
    assert_eq!(status["last_cause"], "progress_stalled", "{status}");
    assert_eq!(status["restarts"], 1, "{status}");
}

#[test]
fn an_idle_deadlock_is_found_by_the_canary_before_any_client_request() {
    let dir = TempDir::new("canary");
    let state = dir.path().join("mock-state.json");
    let state = state.to_str().expect("utf-8 path").to_owned();
    // The first completion the server sees (the canary) deadlocks it, once for the whole job.
    // Every later canary answers: it gets seconds to do so, since a canary that a loaded machine
    // merely slows down would otherwise be a second restart.
    let serve = serve_mock(
        &["--canary-interval", "1s", "--canary-timeout", "5s"],
        &["--deadlock-after", "0", "--state-file", &state],
    );
    let status = serve.wait_status(Duration::from_secs(60), "a canary restart", |s| {
        s["last_restart"]["cause"] == "canary_timeout" && s["state"] == "ready"
    });
    assert_eq!(status["last_cause"], "canary_timeout", "{status}");
    assert_eq!(status["restarts"], 1, "{status}");
    assert_eq!(
        status["requests_total"], 0,
        "no client request was needed: {status}"
    );
    let response = serve
        .chat("after", 2, Duration::from_secs(30))
        .expect("request");
    assert_eq!(response.status, 200);
    assert_eq!(response.generation(), Some(2));
}

#[test]
fn a_slow_but_progressing_server_is_not_restarted() {
    // One token every 500 ms: an 8-token answer takes about 4 s, longer than the progress
    // timeout, but the counter keeps growing, so it is slowness and not a hang. The timeout is
    // six token times, so a loaded machine that delays a token (or a look at the counter) by a
    // second or two does not make it look stuck.
    let serve = serve_mock(&["--progress-timeout", "3s"], &["--token-latency", "500ms"]);
    let response = serve
        .chat("slow", 8, Duration::from_secs(60))
        .expect("request");
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(
        response.generation(),
        Some(1),
        "the same generation answered"
    );
    let status = serve.status();
    assert_eq!(status["restarts"], 0, "{status}");
    assert_eq!(status["last_cause"], serde_json::Value::Null, "{status}");
}
