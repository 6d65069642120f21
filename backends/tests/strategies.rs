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
use respawn_core::{Generation, HangCause};

fn restart() -> Restart {
    Restart {
        hung: Generation(1),
        next: Generation(2),
        cause: HangCause::Manual,
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
