//! Starting a server: argv and shell modes, `{port}`/`PORT`, clear spawn errors, captured
//! output, and exits reported with their code or signal.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use actix::prelude::*;
use common::{
    alive, eventually, free_port, scratch_path, server_actor, start_server, try_start,
    KillGroupOnDrop,
};
use nix::sys::signal::Signal;
use respawn_backends::{
    ExitInfo, GetServerStatus, ServerActor, ServerSpec, SignalServer, SpawnError,
};
use respawn_core::Generation;

const WAIT: Duration = Duration::from_secs(10);

async fn lines_of(server: &Addr<ServerActor>) -> Vec<String> {
    server
        .send(GetServerStatus)
        .await
        .expect("actor alive")
        .recent_lines
}

async fn wait_for_line(server: &Addr<ServerActor>, wanted: &str) -> Vec<String> {
    let start = std::time::Instant::now();
    loop {
        let lines = lines_of(server).await;
        if lines.iter().any(|l| l == wanted) || start.elapsed() > WAIT {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[actix::test]
async fn argv_mode_substitutes_port_and_exports_it_without_a_shell() {
    let port = free_port();
    let spec = ServerSpec::new("echo", "echo", ["--port={port}", "$PORT"], port);
    let (server, _rx, _started) = start_server(spec, Generation(1)).await;
    let wanted = format!("--port={port} $PORT");
    let lines = wait_for_line(&server, &wanted).await;
    assert!(
        lines.contains(&wanted),
        "no shell expansion expected: {lines:?}"
    );

    let spec = ServerSpec::new("env", "printenv", ["PORT"], port);
    let (server, _rx, _started) = start_server(spec, Generation(1)).await;
    let lines = wait_for_line(&server, &port.to_string()).await;
    assert!(
        lines.contains(&port.to_string()),
        "PORT not exported: {lines:?}"
    );
}

#[actix::test]
async fn shell_mode_runs_a_shell_line_with_port() {
    let port = free_port();
    let mut spec = ServerSpec::new("sh", "echo", ["env=$PORT", "arg={port}"], port);
    spec.shell = true;
    let (server, _rx, _started) = start_server(spec, Generation(1)).await;
    let wanted = format!("env={port} arg={port}");
    let lines = wait_for_line(&server, &wanted).await;
    assert!(lines.contains(&wanted), "{lines:?}");
}

#[actix::test]
async fn stdout_and_stderr_lines_are_kept() {
    let spec = ServerSpec::new("both", "sh", ["-c", "echo to-out; echo to-err >&2"], 0);
    let (server, mut rx, _started) = start_server(spec, Generation(1)).await;
    let exited = tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("exit reported")
        .unwrap();
    assert_eq!(exited.status, ExitInfo::Code(0));
    // Each stream has its own reader: the two lines may be kept in either order, so each is
    // waited for.
    let lines = wait_for_line(&server, "to-out").await;
    assert!(lines.contains(&"to-out".to_owned()), "{lines:?}");
    let lines = wait_for_line(&server, "to-err").await;
    assert!(lines.contains(&"to-err".to_owned()), "{lines:?}");
    assert!(lines.contains(&"to-out".to_owned()), "{lines:?}");
}

#[actix::test]
async fn a_missing_program_is_not_found() {
    let spec = ServerSpec::new("x", "respawn-test-no-such-program", Vec::<String>::new(), 0);
    let (server, _rx) = server_actor(spec);
    let err = try_start(&server, Generation(1)).await.unwrap_err();
    assert!(
        matches!(&err, SpawnError::NotFound { program } if program == "respawn-test-no-such-program"),
        "{err:?}"
    );
    assert!(err.to_string().contains("not found"));
}

#[actix::test]
async fn a_file_without_execute_permission_is_not_executable() {
    let dir = scratch_path("noexec");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("server.sh");
    std::fs::write(&file, "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let spec = ServerSpec::new("x", file.as_os_str(), Vec::<String>::new(), 0);
    let (server, _rx) = server_actor(spec);
    let err = try_start(&server, Generation(1)).await.unwrap_err();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(matches!(err, SpawnError::NotExecutable { .. }), "{err:?}");
}

#[actix::test]
async fn a_taken_port_is_reported_with_its_number() {
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = holder.local_addr().unwrap().port();
    let spec = ServerSpec::new("x", "sleep", ["30"], port);
    let (server, _rx) = server_actor(spec);
    let err = try_start(&server, Generation(1)).await.unwrap_err();
    assert!(
        matches!(err, SpawnError::PortInUse { port: p, .. } if p == port),
        "{err:?}"
    );
    assert!(err.to_string().contains(&port.to_string()));
    let status = server.send(GetServerStatus).await.unwrap();
    assert!(!status.running);
}

#[actix::test]
async fn a_second_start_is_refused_while_running() {
    let spec = ServerSpec::new("x", "sleep", ["30"], 0);
    let (server, _rx, started) = start_server(spec, Generation(1)).await;
    let _cleanup = KillGroupOnDrop(started.pid);
    let err = try_start(&server, Generation(2)).await.unwrap_err();
    assert!(
        matches!(err, SpawnError::AlreadyRunning { pid } if pid == started.pid),
        "{err:?}"
    );
    let status = server.send(GetServerStatus).await.unwrap();
    assert_eq!(status.generation, Generation(1));
    assert_eq!(status.pid, Some(started.pid));
    assert!(status.running);
}

#[actix::test]
async fn an_exit_code_is_reported() {
    let spec = ServerSpec::new("x", "sh", ["-c", "exit 3"], 0);
    let (server, mut rx, started) = start_server(spec, Generation(4)).await;
    let exited = tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("exit reported")
        .unwrap();
    assert_eq!(exited.generation, Generation(4));
    assert_eq!(exited.pid, started.pid);
    assert_eq!(exited.status, ExitInfo::Code(3));
    let status = server.send(GetServerStatus).await.unwrap();
    assert!(!status.running);
    assert_eq!(status.last_exit, Some(ExitInfo::Code(3)));
}

#[actix::test]
async fn a_kill_by_signal_is_reported() {
    let spec = ServerSpec::new("x", "sleep", ["30"], 0);
    let (server, mut rx, started) = start_server(spec, Generation(1)).await;
    let _cleanup = KillGroupOnDrop(started.pid);
    server
        .send(SignalServer {
            signal: Signal::SIGKILL,
        })
        .await
        .unwrap()
        .unwrap();
    let exited = tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("exit reported")
        .unwrap();
    assert_eq!(exited.status, ExitInfo::Signal(9));
    assert_eq!(exited.status.to_string(), "killed by signal 9 (SIGKILL)");
}

#[actix::test]
async fn dropping_the_actor_kills_the_group() {
    let spec = ServerSpec::new("x", "sleep", ["30"], 0);
    let (server, _rx, started) = start_server(spec, Generation(1)).await;
    let _cleanup = KillGroupOnDrop(started.pid);
    assert!(alive(started.pid));
    drop(server);
    assert!(
        eventually(WAIT, || !alive(started.pid)).await,
        "the child outlived its actor"
    );
}
