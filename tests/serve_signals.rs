//! Signals to `respawn serve` and giving up: SIGTERM stops it cleanly with nothing of the child's
//! group left, SIGHUP restarts the child, and a child that cannot stay up makes respawn exit 3
//! after a bounded number of restarts, never in a hot loop.

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
        status["pid"].as_u64(),
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
