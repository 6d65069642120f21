//! The restart strategies, each answering `Restart`: process kill through the `ServerActor`,
//! a REST endpoint (against a canned HTTP server on loopback), and a command.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use common::{
    alive, canned_http, free_port, http_status, scratch_path, server_actor, start, start_server,
    KillGroupOnDrop,
};
use respawn_backends::{
    CommandRestart, ExitInfo, GetServerStatus, ProcessKill, RestEndpoint, Restart, RestartError,
    ServerSpec,
};
use respawn_core::{Generation, HangCause, StopMode};

fn restart() -> Restart {
    Restart {
        hung: Generation(1),
        next: Generation(2),
        cause: HangCause::Manual,
        stop: StopMode::Graceful,
    }
}

#[actix::test]
async fn process_kill_replaces_the_process_with_a_new_pid() {
    let spec = ServerSpec::new("x", "sleep", ["30"], 0);
    let (server, mut rx, first) = start_server(spec, Generation(1)).await;
    let _cleanup_first = KillGroupOnDrop(first.pid);
    let strategy = ProcessKill::new(server.clone(), Duration::from_secs(2)).start();

    let report = strategy.send(restart()).await.unwrap().unwrap();
    let pid = report.pid.expect("process kill knows the new pid");
    let _cleanup = KillGroupOnDrop(pid);
    assert_ne!(pid, first.pid);
    assert!(!alive(first.pid));
    assert!(alive(pid));
    assert!(!report.ready_confirmed);
    assert_eq!(report.strategy, "process_kill");
    let names: Vec<&str> = report.steps.iter().map(|(name, _)| *name).collect();
    assert_eq!(names, ["stop", "spawn"]);
    let status = server.send(GetServerStatus).await.unwrap();
    assert_eq!(status.generation, Generation(2));
    assert_eq!(status.pid, Some(pid));
    assert!(
        rx.try_recv().is_err(),
        "the restart's stop was reported as an exit"
    );
}

/// A server that appends `started` to `journal` when it starts and `TERM` when it gets SIGTERM
/// (then exits): the journal shows which signals each generation saw, in order.
fn journaling_server(journal: &std::path::Path) -> ServerSpec {
    let script = format!(
        "trap 'echo TERM >> {j}; exit 0' TERM; echo started >> {j}; while :; do sleep 0.05; done",
        j = journal.display()
    );
    ServerSpec::new("journal", "sh", ["-c", script.as_str()], 0)
}

fn journal_lines(journal: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(journal)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Runs one restart with `stop` of a journaling server (frozen first when `freeze`); returns
/// the journal once the new generation has written its line.
async fn restart_journal(
    label: &str,
    stop: StopMode,
    cause: HangCause,
    freeze: bool,
) -> Vec<String> {
    let dir = scratch_path(label);
    std::fs::create_dir_all(&dir).unwrap();
    let journal = dir.join("journal");
    let (server, _rx, first) = start_server(journaling_server(&journal), Generation(1)).await;
    let _cleanup_first = KillGroupOnDrop(first.pid);
    assert!(
        common::eventually(Duration::from_secs(10), || journal_lines(&journal).len()
            == 1)
        .await,
        "the first generation never started"
    );
    if freeze {
        server
            .send(respawn_backends::SignalServer {
                signal: nix::sys::signal::Signal::SIGSTOP,
            })
            .await
            .unwrap()
            .unwrap();
    }
    // A grace longer than any test: a graceful stop ends on the SIGTERM, never on this bound.
    let strategy = ProcessKill::new(server, Duration::from_secs(60)).start();
    let report = strategy
        .send(Restart {
            cause,
            stop,
            ..restart()
        })
        .await
        .unwrap()
        .unwrap();
    let _cleanup = KillGroupOnDrop(report.pid.expect("the new pid"));
    assert!(!alive(first.pid));
    assert!(
        common::eventually(Duration::from_secs(10), || journal_lines(&journal)
            .last()
            .is_some_and(|l| l == "started")
            && journal_lines(&journal).len() >= 2)
        .await,
        "the second generation never started: {:?}",
        journal_lines(&journal)
    );
    let lines = journal_lines(&journal);
    let _ = std::fs::remove_dir_all(&dir);
    lines
}

#[actix::test]
async fn a_hang_restart_kills_the_group_without_sigterm_first() {
    let journal =
        restart_journal("kill-stop", StopMode::Kill, HangCause::HealthProbes, false).await;
    assert_eq!(
        journal,
        ["started", "started"],
        "no SIGTERM reached the old generation"
    );
}

#[actix::test]
async fn a_frozen_server_is_killed_without_waiting_for_the_grace() {
    // Frozen: a SIGTERM-first stop would need SIGCONT to let the trap run, and would journal
    // it; the kill needs neither.
    let journal =
        restart_journal("kill-frozen", StopMode::Kill, HangCause::HealthProbes, true).await;
    assert_eq!(journal, ["started", "started"]);
}

#[actix::test]
async fn a_manual_restart_sends_sigterm_before_the_next_start() {
    let journal = restart_journal(
        "graceful-stop",
        StopMode::Graceful,
        HangCause::Manual,
        false,
    )
    .await;
    assert_eq!(journal, ["started", "TERM", "started"]);
}

#[actix::test]
async fn process_kill_reports_a_failed_start() {
    use std::os::unix::fs::PermissionsExt;
    let dir = scratch_path("process-kill");
    std::fs::create_dir_all(&dir).unwrap();
    let script = dir.join("server");
    std::fs::write(&script, "#!/bin/sh\nexec sleep 30\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let spec = ServerSpec::new("x", script.as_os_str(), Vec::<String>::new(), 0);
    let (server, _rx) = server_actor(spec);
    let first = start(&server, Generation(1)).await;
    let _cleanup = KillGroupOnDrop(first.pid);
    // The program disappears while the server runs (an upgrade gone wrong).
    std::fs::remove_dir_all(&dir).unwrap();
    let strategy = ProcessKill::new(server, Duration::from_secs(2)).start();
    let err = strategy.send(restart()).await.unwrap().unwrap_err();
    assert!(
        matches!(
            err,
            RestartError::Spawn(respawn_backends::SpawnError::NotFound { .. })
        ),
        "{err:?}"
    );
    assert!(
        !alive(first.pid),
        "the old server was stopped before the failed start"
    );
}

fn rest(base: &str) -> RestEndpoint {
    let mut strategy =
        RestEndpoint::new(format!("{base}/restart"), "tok", format!("{base}/health"));
    strategy.request_timeout = Duration::from_millis(500);
    strategy.ready_timeout = Duration::from_secs(10);
    strategy
}

#[actix::test]
async fn rest_endpoint_maps_401_to_unauthorized() {
    let base = canned_http(|_| Some(http_status(401, "Unauthorized")));
    let strategy = rest(&base).start();
    let err = strategy.send(restart()).await.unwrap().unwrap_err();
    assert!(
        matches!(&err, RestartError::Unauthorized { url } if url.ends_with("/restart")),
        "{err:?}"
    );
}

#[actix::test]
async fn rest_endpoint_fails_fast_against_a_hung_server() {
    // Accepts the connection, never answers: what a frozen server looks like.
    let base = canned_http(|_| None);
    let strategy = rest(&base).start();
    let err = strategy.send(restart()).await.unwrap().unwrap_err();
    // Its own request timeout ended it, not the 10 s ready timeout or anything longer.
    assert!(
        matches!(err, RestartError::Timeout { after, .. } if after == Duration::from_millis(500)),
        "{err:?}"
    );
}

#[actix::test]
async fn rest_endpoint_reports_an_unreachable_server() {
    let base = format!("http://127.0.0.1:{}", free_port());
    let strategy = rest(&base).start();
    let err = strategy.send(restart()).await.unwrap().unwrap_err();
    assert!(matches!(err, RestartError::Unreachable { .. }), "{err:?}");
}

#[actix::test]
async fn rest_endpoint_waits_for_the_server_to_go_down_and_come_back() {
    // Healthy; after an authorized /restart, two failed health probes, then healthy again.
    let failures_left = Arc::new(AtomicUsize::new(usize::MAX));
    let left = failures_left.clone();
    let base = canned_http(move |head| {
        if head.starts_with("POST /restart ") {
            if !head.contains("authorization: Bearer tok\r\n")
                && !head.contains("Authorization: Bearer tok\r\n")
            {
                return Some(http_status(401, "Unauthorized"));
            }
            left.store(2, Ordering::SeqCst);
            return Some(http_status(202, "Accepted"));
        }
        let before_restart = left.load(Ordering::SeqCst) == usize::MAX;
        if before_restart {
            return Some(http_status(200, "OK"));
        }
        match left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)) {
            Ok(_) => Some(http_status(503, "Service Unavailable")),
            Err(_) => Some(http_status(200, "OK")),
        }
    });
    let strategy = rest(&base).start();
    let report = strategy.send(restart()).await.unwrap().unwrap();
    assert!(report.ready_confirmed);
    assert_eq!(report.strategy, "rest_endpoint");
    let names: Vec<&str> = report.steps.iter().map(|(name, _)| *name).collect();
    assert_eq!(names, ["request", "old_gone", "ready"]);
    assert_eq!(
        failures_left.load(Ordering::SeqCst),
        0,
        "both failing probes were seen"
    );
}

#[actix::test]
async fn command_false_is_a_failed_command() {
    let strategy = CommandRestart::new(["false"], None).start();
    let err = strategy.send(restart()).await.unwrap().unwrap_err();
    assert!(
        matches!(
            err,
            RestartError::CommandFailed {
                status: ExitInfo::Code(1),
                ..
            }
        ),
        "{err:?}"
    );
}

#[actix::test]
async fn command_failure_carries_the_stderr_tail() {
    let strategy = CommandRestart::new(
        ["sh", "-c", "echo unit vllm.service not found >&2; exit 4"],
        None,
    )
    .start();
    let err = strategy.send(restart()).await.unwrap().unwrap_err();
    match err {
        RestartError::CommandFailed {
            program,
            status,
            stderr_tail,
        } => {
            assert_eq!(program, "sh");
            assert_eq!(status, ExitInfo::Code(4));
            assert_eq!(stderr_tail, "unit vllm.service not found");
        }
        other => panic!("{other:?}"),
    }
}

#[actix::test]
async fn command_true_succeeds_without_confirming_readiness() {
    let strategy = CommandRestart::new(["true"], None).start();
    let report = strategy.send(restart()).await.unwrap().unwrap();
    assert_eq!(report.strategy, "command");
    assert!(!report.ready_confirmed);
}

#[actix::test]
async fn command_with_a_health_url_confirms_readiness() {
    let base = canned_http(|_| Some(http_status(200, "OK")));
    let strategy = CommandRestart::new(["true"], Some(format!("{base}/health"))).start();
    let report = strategy.send(restart()).await.unwrap().unwrap();
    assert!(report.ready_confirmed);
    let names: Vec<&str> = report.steps.iter().map(|(name, _)| *name).collect();
    assert_eq!(names, ["command", "ready"]);
}

#[actix::test]
async fn command_that_never_gets_healthy_is_not_ready() {
    let base = canned_http(|_| Some(http_status(503, "Service Unavailable")));
    let mut strategy = CommandRestart::new(["true"], Some(format!("{base}/health")));
    strategy.ready_timeout = Duration::from_millis(300);
    let err = strategy.start().send(restart()).await.unwrap().unwrap_err();
    assert!(matches!(err, RestartError::NotReady { .. }), "{err:?}");
}

#[actix::test]
async fn a_missing_command_cannot_run() {
    let strategy = CommandRestart::new(["respawn-test-no-such-command"], None).start();
    let err = strategy.send(restart()).await.unwrap().unwrap_err();
    assert!(matches!(err, RestartError::CommandNotRun { .. }), "{err:?}");
}
