//! Containment: processes that leave the server's process group (a helper in a new session, a
//! daemonizing double fork) are still found and ended, by the generation's cgroup or by the
//! guardian, on a stop, when the server exits on its own, and when the supervisor is SIGKILLed.
//!
//! Each helper is a `sleep` with a unique duration, so that its command line finds it in `/proc`
//! wherever it moved.

mod common;

use std::time::Duration;

use common::{
    alive, eventually, eventually_blocking, guarded_spec, processes_running, scratch_path,
    session_of, spawn_role, start, start_server, stop, KillGroupOnDrop, CONTAINMENT_ENV,
};
use respawn_backends::{ContainmentMode, ContainmentRequest, GetServerStatus, ServerSpec};
use respawn_core::Generation;

const SLACK: Duration = Duration::from_secs(10);

/// A shell line that starts a helper in a new session (`setsid sleep A`) and a daemon by a
/// double fork (`sleep B`, orphaned at once), then becomes `sleep C`.
fn escaping(a: u32, b: u32, c: u32) -> String {
    format!("setsid sleep {a} & (setsid sh -c 'sleep {b} & exit 0' &); exec sleep {c}")
}

/// Whether this machine lets respawn create cgroups (root, or a delegated cgroup).
fn cgroups_available() -> bool {
    match respawn_backends::cgroup_parent() {
        Ok(_) => true,
        Err(why) => {
            eprintln!("skipped: {why}");
            false
        }
    }
}

/// Waits until each of `cmdlines` runs (one process each), and returns their pids.
async fn helpers(cmdlines: &[String]) -> Vec<u32> {
    let mut pids = Vec::new();
    for cmdline in cmdlines {
        let found = eventually(SLACK, || processes_running(cmdline).len() == 1).await;
        assert!(found, "`{cmdline}` never ran");
        pids.extend(processes_running(cmdline));
    }
    pids
}

async fn a_stop_ends_processes_that_left_the_group(
    spec: ServerSpec,
    base: u32,
    expected: ContainmentMode,
) {
    let (server, _rx, started) = start_server(spec, Generation(1)).await;
    let _cleanup = KillGroupOnDrop(started.pid);
    let status = server.send(GetServerStatus).await.unwrap();
    assert_eq!(status.containment, Some(expected));
    let names: Vec<String> = (base..base + 3).map(|n| format!("sleep {n}")).collect();
    let pids = helpers(&names).await;
    let leader_session = session_of(started.pid).expect("the leader runs");
    assert_ne!(
        session_of(pids[0]),
        Some(leader_session),
        "the setsid helper left the session"
    );
    assert_ne!(
        session_of(pids[1]),
        Some(leader_session),
        "the daemon left the session"
    );
    if expected == ContainmentMode::Cgroup {
        let dir = status.cgroup.clone().expect("a cgroup while running");
        let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap();
        for pid in &pids {
            assert!(
                procs.split_whitespace().any(|p| p == pid.to_string()),
                "{pid} is in {procs}"
            );
        }
    }

    let stopped = stop(&server, Duration::from_secs(2))
        .await
        .expect("the stop succeeds");
    for (pid, name) in pids.iter().zip(&names) {
        assert!(
            !alive(*pid),
            "`{name}` ({pid}) survived the stop: {stopped:?}"
        );
    }
    if let Some(dir) = status.cgroup {
        assert!(
            !dir.exists(),
            "the generation's cgroup {} was not removed",
            dir.display()
        );
    }
}

#[actix::test]
async fn in_cgroup_containment_a_stop_ends_helpers_in_other_sessions() {
    if !cgroups_available() {
        return;
    }
    let mut spec = ServerSpec::new("cg", "sh", ["-c".to_owned(), escaping(7101, 7102, 7103)], 0);
    spec.containment = ContainmentRequest::Cgroup;
    a_stop_ends_processes_that_left_the_group(spec, 7101, ContainmentMode::Cgroup).await;
}

#[actix::test]
async fn in_guardian_containment_a_stop_ends_helpers_in_other_sessions() {
    let script = escaping(7111, 7112, 7113);
    let mut spec = guarded_spec("sh", &["-c", &script]);
    spec.containment = ContainmentRequest::Guardian;
    a_stop_ends_processes_that_left_the_group(spec, 7111, ContainmentMode::Guardian).await;
}

/// A shell line for a server that, in its first generation only (no `mark` file yet), starts a
/// daemon by a double fork (`sleep <helper>`), writes the daemon's pid to `mark` and exits 3;
/// later generations run `sleep <helper + 1>`.
fn exits_leaving_a_daemon(mark: &std::path::Path, helper: u32) -> String {
    let mark = mark.display();
    format!(
        "if [ ! -e {mark} ]; then \
           (setsid sh -c 'sleep {helper} & echo $! > {mark}.tmp; mv {mark}.tmp {mark}; exit 0' &); \
           while [ ! -e {mark} ]; do sleep 0.01; done; exit 3; \
         fi; exec sleep {}",
        helper + 1
    )
}

async fn the_next_start_waits_for_the_remains_of_an_exit(spec: ServerSpec, mark: &std::path::Path) {
    let (server, mut exits, first) = start_server(spec, Generation(1)).await;
    let _cleanup = KillGroupOnDrop(first.pid);
    let exited = tokio::time::timeout(SLACK, exits.recv())
        .await
        .expect("the exit is reported")
        .unwrap();
    assert_eq!(exited.generation, Generation(1));
    let daemon: u32 = std::fs::read_to_string(mark)
        .expect("the first generation wrote its daemon's pid before exiting")
        .trim()
        .parse()
        .expect("a pid");
    let second = start(&server, Generation(2)).await;
    let _cleanup_second = KillGroupOnDrop(second.pid);
    assert!(
        !alive(daemon),
        "the daemon {daemon} of generation 1 still ran when generation 2 started"
    );
    let _ = std::fs::remove_file(mark);
}

#[actix::test]
async fn in_cgroup_containment_the_next_start_waits_until_an_exited_generation_is_gone() {
    if !cgroups_available() {
        return;
    }
    let mark = scratch_path("containment-cgroup-exit");
    let mut spec = ServerSpec::new(
        "cg-exit",
        "sh",
        ["-c".to_owned(), exits_leaving_a_daemon(&mark, 7121)],
        0,
    );
    spec.containment = ContainmentRequest::Cgroup;
    the_next_start_waits_for_the_remains_of_an_exit(spec, &mark).await;
}

#[actix::test]
async fn in_guardian_containment_the_next_start_waits_until_an_exited_generation_is_gone() {
    let mark = scratch_path("containment-guardian-exit");
    let script = exits_leaving_a_daemon(&mark, 7131);
    let mut spec = guarded_spec("sh", &["-c", &script]);
    spec.containment = ContainmentRequest::Guardian;
    the_next_start_waits_for_the_remains_of_an_exit(spec, &mark).await;
}

#[actix::test]
async fn the_guardian_reports_the_servers_own_pid() {
    let spec = guarded_spec("sleep", &["7141"]);
    let (server, _rx, started) = start_server(spec, Generation(1)).await;
    let _cleanup = KillGroupOnDrop(started.pid);
    assert_eq!(started.guardian_pid, Some(started.pid));
    assert_ne!(started.server_pid, started.pid);
    assert!(
        eventually(SLACK, || processes_running("sleep 7141")
            == vec![started.server_pid])
        .await,
        "the reported pid {} is not the server's: {:?}, guardian {}",
        started.server_pid,
        processes_running("sleep 7141"),
        started.pid
    );
    let status = server.send(GetServerStatus).await.unwrap();
    assert_eq!(status.server_pid, Some(started.server_pid));
    assert_eq!(status.guardian_pid, Some(started.pid));

    let plain = ServerSpec::new("plain", "sleep", ["7142"], 0);
    let (_plain, _rx, started) = start_server(plain, Generation(1)).await;
    let _cleanup = KillGroupOnDrop(started.pid);
    assert_eq!(
        started.server_pid, started.pid,
        "without a guardian the leader is the server"
    );
    assert_eq!(started.guardian_pid, None);
}

fn sigkill_of_the_parent_ends_helpers_in_other_sessions(containment: &str, base: u32) {
    let script = escaping(base, base + 1, base + 2);
    let mut parent = spawn_role(
        "fake_parent",
        &["sh", "-c", &script],
        &[(CONTAINMENT_ENV, containment)],
    );
    let line = parent.read_line();
    let mut words = line.split_whitespace();
    let (Some("pgid"), Some(pgid), Some("cgroup"), Some(cgroup)) =
        (words.next(), words.next(), words.next(), words.next())
    else {
        panic!("unexpected line from the fake parent: {line:?}");
    };
    let pgid: u32 = pgid.parse().expect("a pgid");
    let _cleanup = KillGroupOnDrop(pgid);
    let names: Vec<String> = (base..base + 3).map(|n| format!("sleep {n}")).collect();
    assert!(
        eventually_blocking(SLACK, || names
            .iter()
            .all(|n| processes_running(n).len() == 1)),
        "the helpers never all ran"
    );
    let pids: Vec<u32> = names.iter().flat_map(|n| processes_running(n)).collect();

    parent.0.kill().expect("SIGKILL the fake parent");
    parent.0.wait().expect("reap the fake parent");
    for (pid, name) in pids.iter().zip(&names) {
        assert!(
            eventually_blocking(SLACK, || !alive(*pid)),
            "`{name}` ({pid}) outlived its supervisor ({containment} containment)"
        );
    }
    if cgroup != "-" {
        assert!(
            eventually_blocking(SLACK, || !std::path::Path::new(cgroup).exists()),
            "the guardian did not remove the cgroup {cgroup}"
        );
    }
}

#[test]
fn in_cgroup_containment_sigkill_of_the_parent_ends_helpers_in_other_sessions() {
    if !cgroups_available() {
        return;
    }
    sigkill_of_the_parent_ends_helpers_in_other_sessions("cgroup", 7151);
}

#[test]
fn in_guardian_containment_sigkill_of_the_parent_ends_helpers_in_other_sessions() {
    sigkill_of_the_parent_ends_helpers_in_other_sessions("guardian", 7161);
}
