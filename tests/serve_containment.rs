//! Nothing of a generation outlives it, whatever session it moved to: for a helper started in a
//! new session, a daemonizing double fork, and a worker that calls `setsid()` and keeps the
//! listening socket (`respawn mock --escape setsid|daemon|worker`), in cgroup and in guardian
//! containment:
//!
//! 1. after a restart (SIGHUP), no process of the old generation remains (checked in `/proc`, by
//!    pid and start time) and the new generation starts without "Address already in use";
//! 2. after `kill -9` of respawn, no process of the generation remains, its cgroup is removed,
//!    and a new respawn starts its server on the same port without "Address already in use".
//!
//! Also: the GPU release check asks a fake `nvidia-smi` until the old server's pid is gone, and
//! a restart waits for it.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use common::{fast_args, proc_stat, Serve, ServeOptions, TempDir};
use nix::sys::signal::Signal;
use serde_json::Value;

const BOUND: Duration = Duration::from_secs(30);

/// One process, named for good: its pid and its start time (a reused pid is another process).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Process {
    pid: u32,
    start_time: u64,
}

/// The start time (field 22 of `/proc/<pid>/stat`) and session (field 6) of a live process.
fn start_and_session(pid: u32) -> Option<(u64, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    if matches!(fields.first(), Some(&"Z") | Some(&"X")) {
        return None;
    }
    Some((fields.get(19)?.parse().ok()?, fields.get(3)?.parse().ok()?))
}

fn still_runs(process: &Process) -> bool {
    start_and_session(process.pid).is_some_and(|(start, _)| start == process.start_time)
}

/// `root` and every live descendant, followed through parent links in `/proc`.
fn tree(root: u32) -> Vec<Process> {
    let all = common::all_processes();
    let mut found = vec![root];
    let mut at = 0;
    while at < found.len() {
        let parent = found[at];
        found.extend(
            all.iter()
                .filter(|p| p.ppid == parent && p.pid != parent)
                .map(|p| p.pid),
        );
        at += 1;
    }
    found
        .into_iter()
        .filter_map(|pid| start_and_session(pid).map(|(start_time, _)| Process { pid, start_time }))
        .collect()
}

/// The generation led by the guardian in `status`, once it holds a process in a session of its
/// own (the escape happened): every process of the guardian's tree.
fn generation_with_an_escape(serve: &Serve, status: &Value) -> Vec<Process> {
    let guardian = status["guardian_pid"].as_u64().expect("a guardian") as u32;
    let guardian_session = start_and_session(guardian).expect("the guardian runs").1;
    common::wait_for(BOUND, || {
        let processes = tree(guardian);
        processes
            .iter()
            .any(|p| {
                start_and_session(p.pid).is_some_and(|(_, session)| session != guardian_session)
            })
            .then_some(processes)
    })
    .unwrap_or_else(|| {
        panic!(
            "no process of generation {} left the session: {:?}\nlog:\n{}",
            status["generation"],
            tree(guardian),
            serve.log_text()
        )
    })
}

/// The directory of the generation's cgroup, from the server's `/proc/<pid>/cgroup`.
fn cgroup_of(pid: u32) -> Option<PathBuf> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let path = text.lines().find_map(|line| line.strip_prefix("0::"))?;
    let name = path.rsplit('/').next()?;
    name.starts_with("respawn-")
        .then(|| respawn_backends::cgroup_parent().ok())
        .flatten()
        .map(|parent| parent.join(name))
}

/// Whether `mode` can run here; cgroup containment needs root or a delegated cgroup.
fn available(mode: &str) -> bool {
    if mode != "cgroup" {
        return true;
    }
    match respawn_backends::cgroup_parent() {
        Ok(_) => true,
        Err(why) => {
            eprintln!("skipped: {why}");
            false
        }
    }
}

fn serve(mode: &str, escape: &str, port: u16) -> Serve {
    let mut options = ServeOptions::mock(&[], &["--escape", escape]);
    options.args = fast_args(&["--containment", mode, "--port", &port.to_string()]);
    Serve::start(options)
}

fn nothing_outlives_a_generation(mode: &str, escape: &str) {
    if !available(mode) {
        return;
    }
    let port = common::free_port();
    let mut first = serve(mode, escape, port);
    let status = first.status();
    assert_eq!(status["containment"], mode, "{status}");
    let generation_1 = generation_with_an_escape(&first, &status);

    // 1. A restart.
    first.signal(Signal::SIGHUP);
    let status = first.wait_status(BOUND, "generation 2 ready", |s| {
        s["generation"] == 2 && s["state"] == "ready"
    });
    let survivors: Vec<&Process> = generation_1.iter().filter(|p| still_runs(p)).collect();
    assert!(
        survivors.is_empty(),
        "processes of generation 1 survived the restart ({mode}, {escape}): {survivors:?}\nlog:\n{}",
        first.log_text()
    );
    assert!(
        !first.logged("Address already in use"),
        "log:\n{}",
        first.log_text()
    );
    assert_eq!(
        first
            .chat("after the restart", 2, BOUND)
            .expect("a request")
            .status,
        200
    );

    // 2. kill -9 of respawn.
    let generation_2 = generation_with_an_escape(&first, &status);
    let server = status["pid"].as_u64().expect("a server pid") as u32;
    let cgroup = cgroup_of(server);
    assert_eq!(
        cgroup.is_some(),
        mode == "cgroup",
        "the server runs in a cgroup of its generation exactly in cgroup containment"
    );
    first.signal(Signal::SIGKILL);
    first.wait_exit(BOUND).expect("respawn is dead");
    let survivors = common::wait_for(BOUND, || {
        let left: Vec<&Process> = generation_2.iter().filter(|p| still_runs(p)).collect();
        left.is_empty().then_some(())
    });
    assert!(
        survivors.is_some(),
        "processes of generation 2 outlived respawn ({mode}, {escape}): {:?}",
        generation_2
            .iter()
            .filter(|p| still_runs(p))
            .collect::<Vec<_>>()
    );
    if let Some(dir) = cgroup {
        let removed = common::wait_for(BOUND, || (!dir.exists()).then_some(()));
        assert!(removed.is_some(), "{} was not removed", dir.display());
    }

    // A new respawn on the same port: the old socket is gone with its holder.
    let second = serve(mode, escape, port);
    assert!(
        !second.logged("Address already in use"),
        "log:\n{}",
        second.log_text()
    );
    assert_eq!(
        second
            .chat("a new respawn", 2, BOUND)
            .expect("a request")
            .status,
        200
    );
}

#[test]
fn cgroup_a_helper_in_a_new_session_outlives_nothing() {
    nothing_outlives_a_generation("cgroup", "setsid");
}

#[test]
fn cgroup_a_daemonizing_double_fork_outlives_nothing() {
    nothing_outlives_a_generation("cgroup", "daemon");
}

#[test]
fn cgroup_a_worker_in_its_own_session_keeping_the_socket_outlives_nothing() {
    nothing_outlives_a_generation("cgroup", "worker");
}

#[test]
fn guardian_a_helper_in_a_new_session_outlives_nothing() {
    nothing_outlives_a_generation("guardian", "setsid");
}

#[test]
fn guardian_a_daemonizing_double_fork_outlives_nothing() {
    nothing_outlives_a_generation("guardian", "daemon");
}

#[test]
fn guardian_a_worker_in_its_own_session_keeping_the_socket_outlives_nothing() {
    nothing_outlives_a_generation("guardian", "worker");
}

/// A fake `nvidia-smi` in `dir`: while `dir/busy` holds a pid, its first three runs list that
/// pid holding GPU memory; every run is counted in `dir/runs`.
fn fake_nvidia_smi(dir: &TempDir) {
    let d = dir.path().display();
    let script = format!(
        "#!/bin/sh\n\
         [ \"$1 $2\" = \"--query-compute-apps=pid,used_memory --format=csv,noheader\" ] || exit 9\n\
         [ -e {d}/busy ] || exit 0\n\
         echo run >> {d}/runs\n\
         [ \"$(wc -l < {d}/runs)\" -le 3 ] && echo \"$(cat {d}/busy), 20480 MiB\"\n\
         exit 0\n"
    );
    let path = dir.path().join("nvidia-smi");
    std::fs::write(&path, script).expect("write the fake nvidia-smi");
    let mut permissions = std::fs::metadata(&path).expect("metadata").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o755);
    std::fs::set_permissions(&path, permissions).expect("chmod");
}

fn serve_with_nvidia_smi(dir: &TempDir, gpu_release: &str) -> Serve {
    let path = format!(
        "{}:{}",
        dir.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut options = ServeOptions::mock(&[], &[]).env("PATH", &path);
    options.args = fast_args(&["--gpu-release", gpu_release]);
    Serve::start(options)
}

/// Makes generation 1 end by `end` (a SIGHUP restart, or a SIGKILL of the server) while the fake
/// `nvidia-smi` lists the server's pid, and checks that generation 2 starts only once it no
/// longer does.
fn the_next_generation_waits_for_the_gpu_memory(end: impl FnOnce(&Serve, u32)) {
    let dir = TempDir::new("nvidia-smi");
    fake_nvidia_smi(&dir);
    let serve = serve_with_nvidia_smi(&dir, "auto");
    let old_server = serve.server_pid();
    std::fs::write(dir.path().join("busy"), old_server.to_string()).expect("write busy");

    end(&serve, old_server);
    serve.wait_status(BOUND, "generation 2 ready", |s| {
        s["generation"] == 2 && s["state"] == "ready"
    });
    let runs = std::fs::read_to_string(dir.path().join("runs")).unwrap_or_default();
    assert_eq!(
        runs.lines().count(),
        4,
        "asked while the old pid was listed (3 times), then once more"
    );
    let log = serve.log_text();
    let waiting = log
        .find("waiting for the old generation's GPU memory")
        .unwrap_or_else(|| panic!("the wait is logged:\n{log}"));
    let spawned = log
        .find("server spawned server=server generation=2")
        .unwrap_or_else(|| panic!("generation 2 spawned:\n{log}"));
    assert!(
        waiting < spawned,
        "generation 2 started before the GPU memory was released:\n{log}"
    );
    assert!(
        log[waiting..]
            .lines()
            .next()
            .is_some_and(|line| line.contains(&old_server.to_string())),
        "the wait names the old pid"
    );
}

#[test]
fn a_restart_waits_until_nvidia_smi_no_longer_lists_the_old_server() {
    the_next_generation_waits_for_the_gpu_memory(|serve, _| serve.signal(Signal::SIGHUP));
}

#[test]
fn after_a_crash_the_next_start_waits_until_nvidia_smi_no_longer_lists_the_old_server() {
    the_next_generation_waits_for_the_gpu_memory(|_, server| {
        common::signal(server, Signal::SIGKILL)
    });
}

#[test]
fn with_gpu_release_off_nvidia_smi_is_never_asked() {
    let dir = TempDir::new("nvidia-smi-off");
    fake_nvidia_smi(&dir);
    let serve = serve_with_nvidia_smi(&dir, "off");
    std::fs::write(dir.path().join("busy"), serve.server_pid().to_string()).expect("busy");
    serve.signal(Signal::SIGHUP);
    serve.wait_status(BOUND, "generation 2 ready", |s| {
        s["generation"] == 2 && s["state"] == "ready"
    });
    assert!(
        !dir.path().join("runs").exists(),
        "nvidia-smi was asked although --gpu-release off"
    );
}

#[test]
fn the_status_names_the_servers_pid_and_the_guardians_separately() {
    let serve = common::serve_mock(&[], &[]);
    let status = serve.status();
    let server = status["pid"].as_u64().expect("pid") as u32;
    let guardian = status["guardian_pid"].as_u64().expect("guardian_pid") as u32;
    assert_ne!(server, guardian);
    assert_eq!(proc_stat(server).map(|s| s.ppid), Some(guardian));
    assert!(
        common::cmdline(server).contains(" mock "),
        "{}",
        common::cmdline(server)
    );
    assert!(common::cmdline(guardian).contains("__guardian"));
    // Signalling `pid` reaches the server itself: it exits, and respawn restarts it.
    common::signal(server, Signal::SIGKILL);
    let status = serve.wait_status(BOUND, "restarted after the kill", |s| {
        s["generation"] == 2 && s["state"] == "ready"
    });
    assert_eq!(status["last_cause"], "exited", "{status}");
    let seen: BTreeSet<u64> = [status["pid"].as_u64(), status["guardian_pid"].as_u64()]
        .into_iter()
        .flatten()
        .collect();
    assert!(!seen.contains(&u64::from(server)), "{status}");
}
