//! Process hygiene of `respawn serve`: nothing it started outlives it, even after `kill -9` and
//! even a grandchild that ignores SIGTERM; a restart leaves nothing of the old process group;
//! as PID 1 of a PID namespace (a container) it reaps orphaned zombies and turns SIGTERM into a
//! clean stop that empties the namespace.

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::signal::Signal;
use support::{alive, bin, descendants, free_port, get, group, request, signal, wait_for, Respawn};

/// A child (`sh` run as an argv, not through `--shell`) whose shell and background grandchild
/// both ignore SIGTERM.
const DEAF_TREE: [&str; 3] = ["sh", "-c", "trap '' TERM; sleep 300 & wait"];

#[test]
fn kill_9_of_respawn_leaves_no_child_and_no_grandchild_even_one_ignoring_sigterm() {
    let mut run = Respawn::serve(
        &[
            "--shell=false",
            "--startup-timeout",
            "120s",
            "--stop-grace",
            "1s",
        ],
        &DEAF_TREE,
        &[],
    );
    let respawn = run.pid();
    // The tree: respawn → guardian → sh → sleep.
    let tree = wait_for(Duration::from_secs(20), || {
        let tree = descendants(respawn);
        tree.iter()
            .any(|p| support::cmdline(p.pid).starts_with("sleep 300"))
            .then_some(tree)
    })
    .unwrap_or_else(|| panic!("the tree did not come up:\n{}", run.log_text()));
    let pids: Vec<u32> = tree.iter().map(|p| p.pid).collect();
    let groups: Vec<u32> = tree
        .iter()
        .map(|p| p.pgrp)
        .filter(|g| *g != respawn)
        .collect();
    assert!(pids.len() >= 3, "guardian, sh and sleep: {tree:?}");

    run.signal(Signal::SIGKILL);
    let _ = run.wait_exit(Duration::from_secs(30));
    let left = wait_for(Duration::from_secs(30), || {
        let left: Vec<u32> = pids.iter().copied().filter(|p| alive(*p)).collect();
        left.is_empty().then_some(())
    });
    let survivors: Vec<String> = pids
        .iter()
        .filter(|p| alive(**p))
        .map(|p| format!("{p} {}", support::cmdline(*p)))
        .collect();
    assert!(
        left.is_some(),
        "left behind after kill -9 of respawn: {survivors:?}"
    );
    for g in groups {
        assert!(group(g).is_empty(), "group {g} is empty: {:?}", group(g));
    }
}

#[test]
fn a_restart_leaves_nothing_of_the_old_group() {
    let token = "hygiene-token-11";
    // The server leaves a SIGTERM-deaf helper in its group.
    let script = format!(
        "trap '' TERM; sleep 300 & exec {} mock --port \"$PORT\"",
        bin()
    );
    let run = Respawn::serve_ready(
        &["--shell=false", "--stop-grace", "1s"],
        &["sh", "-c", &script],
        &[("RESPAWN_ADMIN_TOKEN", token)],
    );
    let old_group = run.guardian().expect("a guardian");
    let old_members = wait_for(Duration::from_secs(30), || {
        let members = group(old_group);
        (members.len() >= 3).then_some(members)
    })
    .unwrap_or_else(|| {
        panic!(
            "guardian, mock and sleep in group {old_group}: {:?}",
            group(old_group)
        )
    });

    let bearer = format!("Bearer {token}");
    let reply = request(
        run.addr(),
        "POST",
        "/respawn/restart",
        &[("Authorization", &bearer)],
        b"",
        Duration::from_secs(10),
    )
    .expect("an answer");
    assert_eq!(reply.status, 202, "{}", reply.text());
    let status = run.wait_status(Duration::from_secs(30), "the restart", |s| {
        s["generation"] == 2 && s["state"] == "ready"
    });
    let new_group = status["guardian_pid"].as_u64().expect("guardian_pid") as u32;
    assert_ne!(new_group, old_group);
    // Ready again means the old group was waited for: nothing of it is left, now.
    assert!(
        group(old_group).is_empty(),
        "old group {old_group} still has {:?}",
        group(old_group)
    );
    for pid in old_members {
        assert!(!alive(pid), "{pid} of the old group is alive");
    }
    assert!(
        group(new_group).len() >= 3,
        "the new generation runs: {:?}",
        group(new_group)
    );
}

/// `unshare --pid --fork --mount-proc`, or the reason it cannot run here.
fn unshare_works() -> Result<(), String> {
    let out = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|err| format!("unshare cannot run: {err}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "unshare --pid --fork --mount-proc fails here (needs root): {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

#[test]
fn as_pid_1_respawn_reaps_orphaned_zombies_and_stops_cleanly_on_sigterm() {
    if let Err(reason) = unshare_works() {
        eprintln!("skipped: {reason}");
        return;
    }
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    // Every second the server's shell orphans a short-lived grandchild (a double fork).
    let script = format!(
        "( while true; do ( sleep 0.5 & ) ; sleep 1; done ) & exec {} mock --port \"$PORT\"",
        bin()
    );
    let args: Vec<String> = [
        "--pid",
        "--fork",
        "--mount-proc",
        bin(),
        "serve",
        "--listen",
        &listen,
        "--workers",
        "2",
        "--shell=false",
        "--stop-grace",
        "1s",
        "--",
        "sh",
        "-c",
        &script,
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let mut run = Respawn::spawn_program("unshare", &args, &[]);
    run.addr = Some(listen.parse().expect("address"));
    let unshare = run.pid();
    wait_for(Duration::from_secs(30), || {
        get(run.addr(), "/respawn/readyz")
            .ok()
            .filter(|r| r.status == 200)
    })
    .unwrap_or_else(|| {
        panic!(
            "respawn in the namespace was not ready:\n{}",
            run.log_text()
        )
    });
    // PID 1 of the namespace: unshare's only child.
    let init = support::children(unshare)
        .first()
        .copied()
        .expect("the namespace's PID 1");
    assert!(
        support::cmdline(init).contains("serve"),
        "PID 1 runs respawn: {}",
        support::cmdline(init)
    );

    // Orphans come and go for a few seconds (seen reparented away from the shell that made
    // them); none may stay a zombie.
    let mut orphans = std::collections::BTreeSet::new();
    let watch_until = std::time::Instant::now() + Duration::from_secs(4);
    while std::time::Instant::now() < watch_until {
        for p in descendants(unshare) {
            if p.state != 'Z'
                && support::cmdline(p.pid) == "sleep 0.5"
                && !support::cmdline(p.ppid).starts_with("sh")
            {
                orphans.insert(p.pid);
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        !orphans.is_empty(),
        "the double fork made orphans: {:?}",
        descendants(unshare)
    );
    let lingering = |bound: Duration| {
        wait_for(bound, || {
            let zombies: Vec<_> = descendants(unshare)
                .into_iter()
                .filter(|p| p.state == 'Z')
                .collect();
            // A zombie may exist for an instant before it is reaped: it must not stay.
            zombies.is_empty().then_some(())
        })
    };
    assert!(
        lingering(Duration::from_secs(3)).is_some(),
        "zombies stay in the namespace: {:?}",
        descendants(unshare)
            .into_iter()
            .filter(|p| p.state == 'Z')
            .map(|p| format!("{} (parent {}) {}", p.pid, p.ppid, support::cmdline(p.ppid)))
            .collect::<Vec<_>>()
    );
    let reply = support::chat(
        run.addr(),
        "in a container",
        2,
        false,
        Duration::from_secs(20),
    )
    .expect("a request");
    assert_eq!(reply.status, 200);

    // SIGTERM to the namespace's PID 1 from outside: respawn stops and the namespace empties.
    let inside: Vec<u32> = descendants(unshare).iter().map(|p| p.pid).collect();
    signal(init, Signal::SIGTERM);
    let code = run.exit_code(Duration::from_secs(20));
    assert_eq!(
        code,
        0,
        "unshare reports respawn's exit code:\n{}",
        run.log_text()
    );
    let empty = wait_for(Duration::from_secs(30), || {
        inside.iter().all(|p| !alive(*p)).then_some(())
    });
    assert!(
        empty.is_some(),
        "left in the namespace: {:?}",
        inside
            .iter()
            .filter(|p| alive(**p))
            .map(|p| support::cmdline(*p))
            .collect::<Vec<_>>()
    );
}
