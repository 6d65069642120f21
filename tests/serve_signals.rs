//! Signals to `respawn serve` and giving up: SIGTERM stops it cleanly with nothing of the child's
//! group left, SIGHUP restarts the child, and a child that cannot stay up makes respawn exit 3
//! after a bounded number of restarts, never in a hot loop. Streams still open when the grace of
//! a SIGTERM ends finish with an SSE `event: error`, never a silent cut.

mod common;

use std::time::{Duration, Instant};

use common::{group_members, serve_mock, Serve, ServeOptions, TempDir};
use nix::sys::signal::Signal;

#[test]
fn sigterm_stops_respawn_with_exit_0_and_leaves_nothing_of_the_group() {
    let mut serve = serve_mock(&[], &[]);
    let guardian = serve.guardian_pid();
    let server = serve.server_pid();
    assert!(group_members(guardian).contains(&server));
    serve.signal(Signal::SIGTERM);
    let status = serve
        .wait_exit(Duration::from_secs(20))
        .expect("respawn exits after SIGTERM");
    assert_eq!(status.code(), Some(0), "log:\n{}", serve.log_text());
    let gone = common::wait_for(Duration::from_secs(30), || {
        group_members(guardian).is_empty().then_some(())
    });
    assert!(gone.is_some(), "left behind: {:?}", group_members(guardian));
}

#[test]
fn sighup_restarts_the_child() {
    let serve = serve_mock(&[], &[]);
    let old = serve.guardian_pid();
    serve.signal(Signal::SIGHUP);
    let status = serve.wait_status(Duration::from_secs(20), "generation 2 ready", |s| {
        s["generation"] == 2 && s["state"] == "ready"
    });
    assert_eq!(status["restarts"], 1, "{status}");
    assert_ne!(
        status["guardian_pid"].as_u64(),
        Some(u64::from(old)),
        "a new process group"
    );
    assert_eq!(
        serve
            .chat("after", 2, Duration::from_secs(30))
            .expect("request")
            .status,
        200
    );
}

#[test]
fn a_child_that_exits_at_once_makes_respawn_give_up_with_exit_3_in_bounded_time() {
    let dir = TempDir::new("crashloop");
    let starts = dir.path().join("starts");
    let script = format!("echo started >> '{}'; exit 1", starts.display());
    let mut options = ServeOptions::command(&[], &["sh", "-c", &script]).no_wait();
    options.args = common::fast_args(&["--max-restarts", "2", "--restart-window", "1m"]);
    let began = Instant::now();
    let mut serve = Serve::start(options);
    let status = serve
        .wait_exit(Duration::from_secs(60))
        .expect("respawn gives up");
    assert_eq!(status.code(), Some(3), "log:\n{}", serve.log_text());
    let took = began.elapsed();
    let log = serve.log_text();
    assert!(log.contains("gave up"), "the reason is printed:\n{log}");
    assert!(
        log.contains("restarts within"),
        "the reason names the restart limit:\n{log}"
    );
    let count = std::fs::read_to_string(&starts)
        .unwrap_or_default()
        .lines()
        .count();
    assert!(
        (2..=3).contains(&count),
        "the child started {count} times with --max-restarts 2 (took {took:?})"
    );
}

#[test]
fn streams_open_at_sigterm_end_with_an_error_event_when_the_grace_ends() {
    // 400 tokens 50 ms apart: each stream would take 20 s, far past the 1 s grace.
    let mut serve = serve_mock(&[], &["--tokens", "400", "--token-latency", "50ms"]);
    let body = common::chat_body("a very long story", 400, true);
    let mut streams: Vec<_> = (0..3)
        .map(|_| {
            let mut response = common::open(
                serve.addr,
                "POST",
                "/v1/chat/completions",
                &[],
                body.as_bytes(),
                Duration::from_secs(30),
            )
            .expect("open a stream");
            assert_eq!(response.head.status, 200);
            // The stream is under way: its first token arrived.
            let (first, end) = response.events_until(|_| true);
            assert_eq!(end, common::BodyEnd::Clean, "{first:?}");
            assert!(first.iter().all(|e| e.event.is_none()), "{first:?}");
            response
        })
        .collect();

    serve.signal(Signal::SIGTERM);
    for (i, stream) in streams.drain(..).enumerate() {
        let (events, end) = stream.events();
        assert_eq!(
            end,
            common::BodyEnd::Clean,
            "stream {i} ended with its terminating chunk, not a cut connection; events {events:?}"
        );
        let last = events
            .last()
            .unwrap_or_else(|| panic!("stream {i}: no event after SIGTERM"));
        assert_eq!(
            last.event.as_deref(),
            Some("error"),
            "stream {i}: {events:?}"
        );
        let error: serde_json::Value = serde_json::from_str(&last.data).expect("JSON data");
        assert_eq!(error["error"]["type"], "server_shutting_down", "{error}");
        assert!(
            events.iter().all(|e| e.data != "[DONE]"),
            "stream {i} did not finish: {events:?}"
        );
        let errors = events.iter().filter(|e| e.event.is_some()).count();
        assert_eq!(errors, 1, "one error event, the last: {events:?}");
    }
    let status = serve
        .wait_exit(Duration::from_secs(30))
        .expect("respawn exits after SIGTERM");
    assert_eq!(status.code(), Some(0), "log:\n{}", serve.log_text());
}
