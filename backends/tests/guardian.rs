//! The guardian: it mirrors the server's exit status, kills leftovers of the group when the
//! server exits, and takes the whole group down when its parent is SIGKILLed.
//!
//! The guardian and the "fake respawn" parent are this test binary re-executed in a role; see
//! `common/mod.rs` for how the role runs before the test harness starts.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{
    alive, eventually, eventually_blocking, guarded_spec, spawn_role, start_server, stop,
    KillGroupOnDrop, ROLE_ENV,
};
use respawn_backends::{group_members, ExitInfo, GUARDIAN_NOT_FOUND};
use respawn_core::Generation;

const SLACK: Duration = Duration::from_secs(5);

fn run_guardian(args: &[&str]) -> std::process::ExitStatus {
    Command::new(std::env::current_exe().unwrap())
        .arg("--")
        .args(args)
        .env(ROLE_ENV, "guardian")
        .status()
        .expect("run the guardian")
}

#[test]
fn the_guardian_exits_with_the_servers_code() {
    assert_eq!(run_guardian(&["sh", "-c", "exit 7"]).code(), Some(7));
    assert_eq!(run_guardian(&["true"]).code(), Some(0));
}

#[test]
fn the_guardian_reports_a_signal_as_128_plus_its_number() {
    assert_eq!(
        run_guardian(&["sh", "-c", "kill -TERM $$"]).code(),
        Some(128 + 15)
    );
}

#[test]
fn the_guardian_reports_a_missing_program_like_a_shell() {
    assert_eq!(
        run_guardian(&["respawn-test-no-such-program"]).code(),
        Some(GUARDIAN_NOT_FOUND)
    );
}

#[actix::test]
async fn with_a_guardian_stop_kills_a_grandchild_ignoring_sigterm_without_escalating() {
    let script = "(trap '' TERM; exec sleep 61) & exec sleep 62";
    let spec = guarded_spec("sh", &["-c", script]);
    let (server, _rx, started) = start_server(spec, Generation(1)).await;
    let _cleanup = KillGroupOnDrop(started.pid);
    // guardian + server + grandchild, all in the guardian's group.
    assert!(eventually(SLACK, || group_members(started.pid).len() >= 3).await);

    // A long grace: the guardian, not the grace, must end the grandchild.
    let stopped = stop(&server, Duration::from_secs(20))
        .await
        .expect("the stop succeeds");
    // No SIGKILL: the group was gone long before the 20 s grace ran out.
    assert!(!stopped.escalated_to_kill, "{stopped:?}");
    assert_eq!(
        stopped.exit,
        Some(ExitInfo::Code(128 + 15)),
        "mirrors the server's SIGTERM"
    );
    assert!(group_members(started.pid).is_empty());
}

#[actix::test]
async fn with_a_guardian_an_exit_is_reported_with_the_servers_code() {
    let spec = guarded_spec("sh", &["-c", "exit 5"]);
    let (_server, mut rx, started) = start_server(spec, Generation(3)).await;
    let exited = tokio::time::timeout(SLACK, rx.recv())
        .await
        .expect("exit reported")
        .unwrap();
    assert_eq!(
        exited.pid, started.pid,
        "the reported pid is the guardian's"
    );
    assert_eq!(exited.status, ExitInfo::Code(5));
}

#[test]
fn sigkill_of_the_parent_leaves_no_process_of_the_group() {
    let script = "(trap '' TERM; exec sleep 61) & exec sleep 62";
    let mut parent = spawn_role("fake_parent", &["sh", "-c", script], &[]);
    let line = parent.read_line();
    let pgid: u32 = line
        .strip_prefix("pgid ")
        .and_then(|p| p.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("unexpected line from the fake parent: {line:?}"));
    let _cleanup = KillGroupOnDrop(pgid);
    assert!(
        eventually_blocking(SLACK, || group_members(pgid).len() >= 3),
        "guardian, server and grandchild never all ran: {:?}",
        group_members(pgid)
    );
    let members = group_members(pgid);

    parent.0.kill().expect("SIGKILL the fake parent");
    parent.0.wait().expect("reap the fake parent");
    assert!(
        eventually_blocking(SLACK, || group_members(pgid).is_empty()),
        "left behind: {:?}",
        group_members(pgid)
    );
    for pid in members {
        assert!(!alive(pid), "{pid} survived its supervisor's death");
    }
}
