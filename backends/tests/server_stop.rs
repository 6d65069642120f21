//! Stopping a server: frozen children, children and grandchildren that ignore SIGTERM, the
//! port freed, and nothing of the old process group left behind.

mod common;

use std::time::{Duration, Instant};

use common::{
    alive, eventually, free_port, scratch_path, server_actor, spawn_role, start, start_server,
    stop, KillGroupOnDrop, ROLE_ENV,
};
use nix::sys::signal::Signal;
use respawn_backends::{group_members, GetServerStatus, ServerSpec, SignalServer, Stopped};
use respawn_core::Generation;

const SLACK: Duration = Duration::from_secs(5);

#[actix::test]
async fn a_frozen_child_ends_on_its_sigterm_without_a_kill() {
    let spec = ServerSpec::new("frozen", "sleep", ["30"], 0);
    let (server, mut rx, started) = start_server(spec, Generation(1)).await;
    let _cleanup = KillGroupOnDrop(started.pid);
    server
        .send(SignalServer {
            signal: Signal::SIGSTOP,
        })
        .await
        .unwrap()
        .unwrap();

    // A grace far longer than a SIGTERM takes even on a loaded machine: a SIGKILL at its end
    // would mean the SIGTERM never got through.
    let grace = Duration::from_secs(30);
    let stopped = stop(&server, grace).await.expect("the stop succeeds");
    assert_eq!(stopped.pid, Some(started.pid));
    assert!(!alive(started.pid));
    // SIGCONT let the pending SIGTERM through: no SIGKILL was needed.
    assert!(!stopped.escalated_to_kill, "{stopped:?}");
    // Our own stop is reported through `Stopped`, not as an exit of the server.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        rx.try_recv().is_err(),
        "a requested stop was reported as an exit"
    );
    let status = server.send(GetServerStatus).await.unwrap();
    assert!(!status.running);
    assert_eq!(status.pid, None);
}

#[actix::test]
async fn a_child_ignoring_sigterm_is_killed_after_the_grace() {
    let spec = ServerSpec::new(
        "stubborn",
        "sh",
        ["-c", "trap '' TERM; echo ready; sleep 60"],
        0,
    );
    let (server, _rx, started) = start_server(spec, Generation(1)).await;
    let _cleanup = KillGroupOnDrop(started.pid);
    let ready = eventually(SLACK, || group_members(started.pid).len() >= 2).await;
    assert!(ready, "the shell never started its sleep");

    let grace = Duration::from_millis(500);
    let begun = Instant::now();
    let stopped = stop(&server, grace).await.expect("the stop succeeds");
    let took = begun.elapsed();
    assert!(stopped.escalated_to_kill, "{stopped:?}");
    assert!(took >= grace, "killed before the grace ended: {took:?}");
    assert_eq!(stopped.exit, Some(respawn_backends::ExitInfo::Signal(9)));
    assert!(group_members(started.pid).is_empty());
}

#[actix::test]
async fn a_grandchild_ignoring_sigterm_leaves_nothing_of_the_group() {
    // The leader exits on SIGTERM at once; the grandchild ignores it.
    let script = "(trap '' TERM; exec sleep 61) & exec sleep 62";
    let spec = ServerSpec::new("forking", "sh", ["-c", script], 0);
    let (server, _rx, started) = start_server(spec, Generation(1)).await;
    let _cleanup = KillGroupOnDrop(started.pid);
    let ready = eventually(SLACK, || group_members(started.pid).len() >= 2).await;
    assert!(ready, "the grandchild never started");
    let grandchildren: Vec<u32> = group_members(started.pid)
        .into_iter()
        .filter(|&p| p != started.pid)
        .collect();

    let stopped = stop(&server, Duration::from_millis(300))
        .await
        .expect("the stop succeeds");
    assert!(
        group_members(started.pid).is_empty(),
        "{:?}",
        group_members(started.pid)
    );
    for pid in grandchildren {
        assert!(!alive(pid), "grandchild {pid} survived");
    }
    assert!(
        stopped.escalated_to_kill,
        "the grandchild needed SIGKILL: {stopped:?}"
    );
}

#[actix::test]
async fn the_port_is_free_after_stop_and_a_new_start_can_bind_it() {
    let port = free_port();
    let exe = std::env::current_exe().unwrap();
    let mut spec = ServerSpec::new("listener", exe.as_os_str(), Vec::<String>::new(), port);
    spec.env.push((ROLE_ENV.into(), "listen".into()));
    let (server, _rx) = server_actor(spec);
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let connects = || std::net::TcpStream::connect(addr).is_ok();

    let started = start(&server, Generation(1)).await;
    let _cleanup = KillGroupOnDrop(started.pid);
    assert!(
        eventually(SLACK, connects).await,
        "the child never listened"
    );
    let stopped = stop(&server, Duration::from_secs(2))
        .await
        .expect("the stop succeeds");
    assert!(!connects(), "port still accepts after {stopped:?}");

    let again = start(&server, Generation(2)).await;
    let _cleanup_again = KillGroupOnDrop(again.pid);
    assert_ne!(again.pid, started.pid);
    assert!(
        eventually(SLACK, connects).await,
        "the new child never listened"
    );
    stop(&server, Duration::from_secs(2))
        .await
        .expect("the stop succeeds");
}

#[actix::test]
async fn a_port_taken_by_someone_else_fails_the_stop() {
    let port = free_port();
    let mut spec = ServerSpec::new("x", "sleep", ["30"], port);
    spec.release_timeout = Duration::from_millis(300);
    let (server, _rx, started) = start_server(spec, Generation(1)).await;
    let _cleanup = KillGroupOnDrop(started.pid);
    // A process outside the server's group starts listening on the server's port.
    let _holder = spawn_role("listen", &[], &[("PORT", &port.to_string())]);
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    assert!(eventually(SLACK, || std::net::TcpStream::connect(addr).is_ok()).await);

    let err = stop(&server, Duration::from_secs(1)).await.unwrap_err();
    assert!(
        matches!(err, respawn_backends::StopError::PortStillBound { port: p } if p == port),
        "{err:?}"
    );
    assert!(!alive(started.pid), "the server itself must be gone anyway");
}

#[actix::test]
async fn a_release_check_listing_an_old_pid_fails_the_stop() {
    let mut spec = ServerSpec::new("gpu", "sleep", ["30"], 0);
    spec.release_timeout = Duration::from_millis(400);
    // The check prints a file that names the server's pid, as `nvidia-smi` would list a
    // process still holding GPU memory.
    let marker = scratch_path("release");
    spec.release_check = Some(vec!["cat".into(), marker.clone().into_os_string()]);
    let (server, _rx, started) = start_server(spec, Generation(1)).await;
    let _cleanup = KillGroupOnDrop(started.pid);
    std::fs::write(&marker, format!("{}, 1024 MiB\n", started.pid)).unwrap();
    let err = stop(&server, Duration::from_secs(1)).await.unwrap_err();
    let _ = std::fs::remove_file(&marker);
    assert!(
        matches!(&err, respawn_backends::StopError::ReleaseCheckTimedOut { pids } if pids == &[started.pid]),
        "{err:?}"
    );
    assert!(!alive(started.pid));
}

#[actix::test]
async fn a_release_check_that_lists_nothing_passes() {
    let mut spec = ServerSpec::new("gpu", "sleep", ["30"], 0);
    spec.release_check = Some(vec!["echo".into(), "4000000000".into()]);
    let (server, _rx, started) = start_server(spec, Generation(1)).await;
    let _cleanup = KillGroupOnDrop(started.pid);
    let stopped = stop(&server, Duration::from_secs(1))
        .await
        .expect("the stop succeeds");
    assert_eq!(stopped.pid, Some(started.pid));
    assert!(stopped.total >= stopped.release_check);
}

#[actix::test]
async fn stopping_with_nothing_running_succeeds() {
    let spec = ServerSpec::new("idle", "sleep", ["30"], 0);
    let (server, _rx) = server_actor(spec);
    let stopped = stop(&server, Duration::from_secs(1))
        .await
        .expect("the stop succeeds");
    assert_eq!(stopped, Stopped::nothing_to_stop());
    let err = server
        .send(SignalServer {
            signal: Signal::SIGSTOP,
        })
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(err, respawn_backends::StopError::NotRunning),
        "{err:?}"
    );
}
