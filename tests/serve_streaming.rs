//! Streams through the proxy: chunks pass through as the child produces them (not buffered to
//! the end), the event stream ends with `[DONE]`, and, with resumption off (`--resume off`), a
//! stream that breaks or stalls mid-way ends with an explicit `event: error` instead of a silent
//! cut. (With resumption on, the default, such a stream is continued: `tests/stream_resume.rs`.)

mod common;

use std::time::Duration;

use common::{chat_body, open, serve_mock, BodyEnd, SseEvent};
use nix::sys::signal::Signal;

fn stream(serve: &common::Serve, max_tokens: u64) -> common::StreamingResponse {
    let body = chat_body("tell me a story", max_tokens, true);
    let response = open(
        serve.addr,
        "POST",
        "/v1/chat/completions",
        &[],
        body.as_bytes(),
        Duration::from_secs(30),
    )
    .expect("open the stream");
    assert_eq!(response.head.status, 200);
    response
}

fn token_events(events: &[SseEvent]) -> Vec<&SseEvent> {
    events
        .iter()
        .filter(|e| e.event.is_none() && e.data != "[DONE]")
        .filter(|e| {
            serde_json::from_str::<serde_json::Value>(&e.data)
                .map(|v| v["choices"][0]["delta"]["content"].is_string())
                .unwrap_or(false)
        })
        .collect()
}

#[test]
fn chunks_pass_through_before_the_child_has_finished_and_the_stream_ends_with_done() {
    let serve = serve_mock(&[], &["--token-latency", "100ms"]);
    let (events, end) = stream(&serve, 10).events();
    assert_eq!(end, BodyEnd::Clean);
    assert_eq!(
        events.last().map(|e| e.data.as_str()),
        Some("[DONE]"),
        "{events:?}"
    );
    assert!(
        events.iter().all(|e| e.event.is_none()),
        "no error event: {events:?}"
    );
    let tokens = token_events(&events);
    assert_eq!(tokens.len(), 10, "{events:?}");

    // A thousand tokens take the child 100 s; the first three reach the client long before
    // that, each read bounded by the client's 30 s timeout. A proxy that held the body back
    // until the child finished (or until a buffer filled) would deliver nothing by then.
    let mut long = stream(&serve, 1000);
    let mut tokens = 0;
    while tokens < 3 {
        let (events, end) = long.events_until(|_| true);
        assert!(
            end == BodyEnd::Clean && !events.is_empty(),
            "the stream goes on: {events:?} {end:?}"
        );
        tokens += token_events(&events).len();
    }
}

#[test]
fn a_stream_the_child_drops_mid_way_ends_with_an_error_event() {
    let serve = serve_mock(
        &["--resume", "off"],
        &["--token-latency", "20ms", "--drop-stream-rate", "1.0"],
    );
    let (events, end) = stream(&serve, 10).events();
    assert_eq!(
        end,
        BodyEnd::Clean,
        "the proxy ends the body itself after the error event"
    );
    // The child cut its chunked body without the terminating chunk; through the proxy that must
    // not look like a complete answer.
    assert!(
        !token_events(&events).is_empty(),
        "some tokens came before the drop: {events:?}"
    );
    assert!(events.iter().all(|e| e.data != "[DONE]"), "{events:?}");
    let last = events.last().expect("events");
    assert_eq!(last.event.as_deref(), Some("error"), "{events:?}");
    let error: serde_json::Value =
        serde_json::from_str(&last.data).expect("the error event is JSON");
    assert!(
        error["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{error}"
    );
}

#[test]
fn a_stream_that_stalls_mid_way_ends_with_an_error_event() {
    // Health probes slow to conclude, so that the stall detector is the one that notices.
    let serve = serve_mock(
        &[
            "--stall-timeout",
            "1s",
            "--unhealthy-after",
            "25",
            "--resume",
            "off",
        ],
        &["--token-latency", "100ms"],
    );
    let server = serve.server_pid();
    let mut response = stream(&serve, 100);
    let (mut events, _) = response.events_until(|_| true);
    let (more, _) = response.events_until(|_| true);
    events.extend(more);
    assert_eq!(token_events(&events).len(), 2, "{events:?}");
    common::signal(server, Signal::SIGSTOP);
    let (rest, end) = response.events();
    events.extend(rest);
    assert_ne!(end, BodyEnd::TimedOut, "the stream was not left hanging");
    assert!(events.iter().all(|e| e.data != "[DONE]"), "{events:?}");
    let last = events.last().expect("events");
    assert_eq!(
        last.event.as_deref(),
        Some("error"),
        "ends with an explicit error: {events:?}"
    );
    let status = serve.wait_status(
        Duration::from_secs(20),
        "the stalled child is restarted",
        |s| s["generation"] == 2 && s["state"] == "ready",
    );
    // Health probes would need half a minute of failures: the stall timeout ended the stream.
    assert_eq!(status["last_cause"], "stream_stall", "{status}");
}

#[test]
fn a_stream_cut_by_the_childs_death_ends_with_an_error_event() {
    let serve = serve_mock(&["--resume", "off"], &["--token-latency", "100ms"]);
    let server = serve.server_pid();
    let mut response = stream(&serve, 100);
    let (mut events, _) = response.events_until(|_| true);
    assert_eq!(token_events(&events).len(), 1, "{events:?}");
    common::signal(server, Signal::SIGKILL);
    let (rest, end) = response.events();
    events.extend(rest);
    assert_ne!(end, BodyEnd::TimedOut, "the stream was not left hanging");
    assert!(events.iter().all(|e| e.data != "[DONE]"), "{events:?}");
    let last = events.last().expect("events");
    assert_eq!(
        last.event.as_deref(),
        Some("error"),
        "a cut stream must not look complete: {events:?}"
    );
}
