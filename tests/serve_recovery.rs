//! `respawn serve` brings a hung or dead model server back and the requests it caught succeed:
//! a child frozen with SIGSTOP while requests are in flight, a child killed with SIGKILL, and a
//! wedge of `respawn mock --wedge-after` in the middle of a sequential run; a frozen child gets
//! SIGKILL at once while an operator's restart sends SIGTERM first.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use common::{chat, group_members, proc_stat, serve_mock, TempDir};
use nix::sys::signal::Signal;

const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

#[test]
fn a_frozen_child_is_restarted_once_and_every_caught_and_later_request_succeeds() {
    let serve = serve_mock(&[], &["--token-latency", "50ms"]);
    let addr = serve.addr;
    let first = serve.status();
    assert_eq!(first["generation"], 1);
    let old_guardian = serve.guardian_pid();
    let old_server = serve.server_pid();

    // Eight requests of about 6 s each are in flight when the child freezes, which follows at
    // once: none can have finished on the old server, even if the eight took a while to start.
    let caught: Vec<_> = (0..8)
        .map(|i| thread::spawn(move || chat(addr, &format!("caught {i}"), 120, CLIENT_TIMEOUT)))
        .collect();
    serve.wait_status(Duration::from_secs(30), "8 requests in flight", |s| {
        s["in_flight"].as_u64() >= Some(8)
    });
    common::signal(old_server, Signal::SIGSTOP);
    let stopped = common::wait_for(Duration::from_secs(30), || {
        (proc_stat(old_server).map(|s| s.state) == Some('T')).then_some(())
    });
    assert!(stopped.is_some(), "the server is stopped");

    // More requests keep coming during the freeze and the restart.
    let stop = Arc::new(AtomicBool::new(false));
    let later = {
        let stop = Arc::clone(&stop);
        thread::spawn(move || {
            let mut sent = Vec::new();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                sent.push(thread::spawn(move || {
                    chat(addr, &format!("later {i}"), 2, CLIENT_TIMEOUT)
                }));
                i += 1;
                thread::sleep(Duration::from_millis(100));
            }
            sent.into_iter()
                .map(|h| h.join().expect("client thread"))
                .collect::<Vec<_>>()
        })
    };

    for (i, handle) in caught.into_iter().enumerate() {
        let response = handle
            .join()
            .expect("client thread")
            .unwrap_or_else(|e| panic!("caught request {i}: {e}"));
        assert_eq!(
            response.status,
            200,
            "caught request {i}: {}",
            response.text()
        );
        assert_eq!(
            response.generation(),
            Some(2),
            "caught request {i} was retried on the new generation"
        );
        assert!(response.json()["choices"][0]["message"]["content"].is_string());
    }
    thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let later = later.join().expect("sender thread");
    assert!(later.len() >= 3, "requests kept coming ({})", later.len());
    for (i, response) in later.into_iter().enumerate() {
        let response = response.unwrap_or_else(|e| panic!("later request {i}: {e}"));
        assert_eq!(
            response.status,
            200,
            "later request {i}: {}",
            response.text()
        );
    }

    let status = serve.status();
    assert_eq!(status["restarts"], 1, "one freeze, one restart: {status}");
    assert_eq!(status["generation"], 2, "{status}");
    assert_eq!(status["state"], "ready");
    assert_eq!(status["last_cause"], "health_probes", "{status}");
    let new_guardian = status["guardian_pid"].as_u64().expect("guardian_pid") as u32;
    assert_ne!(new_guardian, old_guardian, "a new process group");
    assert_ne!(serve.server_pid(), old_server, "a new server process");
    assert!(
        group_members(old_guardian).is_empty(),
        "nothing of the frozen group is left"
    );
}

#[test]
fn a_killed_child_is_restarted_and_the_next_requests_succeed() {
    let serve = serve_mock(&[], &[]);
    let response = serve
        .chat("before", 2, CLIENT_TIMEOUT)
        .expect("first request");
    assert_eq!(response.status, 200);
    assert_eq!(response.generation(), Some(1));
    let old_guardian = serve.guardian_pid();
    let old_server = serve.server_pid();

    common::signal(old_server, Signal::SIGKILL);
    for i in 0..5 {
        let response = serve
            .chat(&format!("after {i}"), 2, CLIENT_TIMEOUT)
            .expect("request after the kill");
        assert_eq!(response.status, 200, "{}", response.text());
        assert_eq!(
            response.generation(),
            Some(2),
            "answered by the new generation"
        );
    }

    let status = serve.wait_status(Duration::from_secs(30), "the restart is recorded", |s| {
        s["last_restart"]["cause"] == "exited"
    });
    assert_eq!(status["restarts"], 1, "{status}");
    assert_eq!(status["last_cause"], "exited", "{status}");
    assert!(status["last_restart"]["duration_ms"].is_u64(), "{status}");
    assert_ne!(
        status["guardian_pid"].as_u64(),
        Some(u64::from(old_guardian))
    );
    assert!(
        group_members(old_guardian).is_empty(),
        "nothing of the killed group is left"
    );
}

#[test]
fn a_wedge_in_a_sequential_run_costs_one_restart_and_no_request() {
    let dir = TempDir::new("wedge");
    let state = dir.path().join("mock-state.json");
    let state = state.to_str().expect("utf-8 path").to_owned();
    let serve = serve_mock(&[], &["--wedge-after", "5", "--state-file", &state]);
    for i in 0..20 {
        let response = serve
            .chat(&format!("sample {i}"), 4, CLIENT_TIMEOUT)
            .unwrap_or_else(|e| panic!("request {i}: {e}"));
        assert_eq!(response.status, 200, "request {i}: {}", response.text());
        let expected = if i < 5 { 1 } else { 2 };
        assert_eq!(response.generation(), Some(expected), "request {i}");
    }
    let status = serve.status();
    assert_eq!(status["restarts"], 1, "one wedge, one restart: {status}");
    assert_eq!(status["generation"], 2, "{status}");
}

/// The lines of respawn's log that contain `needle`, in order.
fn lines_with(log: &str, needle: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains(needle))
        .map(str::to_owned)
        .collect()
}

#[test]
fn a_frozen_child_is_killed_at_once_and_an_operator_restart_sends_sigterm_first() {
    // A grace far longer than the test: a hang's stop that honoured it would show as a SIGTERM
    // exit or an "ignored SIGTERM" warning below, never as a SIGKILL without one.
    let serve = serve_mock(&["--stop-grace", "60s"], &[]);
    let frozen = serve.server_pid();
    common::signal(frozen, Signal::SIGSTOP);
    serve.wait_status(Duration::from_secs(60), "generation 2 ready", |s| {
        s["generation"] == 2 && s["state"] == "ready"
    });
    // SIGHUP to respawn: an operator's restart of the healthy generation 2.
    serve.signal(Signal::SIGHUP);
    let status = serve.wait_status(Duration::from_secs(60), "generation 3 ready", |s| {
        s["generation"] == 3 && s["state"] == "ready"
    });
    assert_eq!(status["restarts"], 2, "{status}");
    assert_eq!(status["last_cause"], "signal", "{status}");

    let log = serve.log_text();
    let asked = lines_with(&log, "restarting by process kill");
    assert_eq!(asked.len(), 2, "{log}");
    assert!(
        asked[0].contains(r#"cause="health_probes""#) && asked[0].contains(r#"stop="kill""#),
        "the hang's restart kills: {}",
        asked[0]
    );
    assert!(
        asked[1].contains(r#"cause="signal""#) && asked[1].contains(r#"stop="graceful""#),
        "the operator's restart is graceful: {}",
        asked[1]
    );
    let stopped = lines_with(&log, "server stopped");
    assert!(stopped.len() >= 2, "{log}");
    // The frozen generation's leader died of SIGKILL, with no SIGTERM before it (a SIGTERM
    // with SIGCONT would have let the guardian exit with the server's status).
    assert!(
        stopped[0].contains("killed by signal 9"),
        "the frozen generation was killed: {}",
        stopped[0]
    );
    assert!(
        !log.contains("ignored SIGTERM"),
        "no grace was waited for: {log}"
    );
    // The healthy generation exited on its SIGTERM, within the grace.
    assert!(
        stopped[1].contains("exit code") && stopped[1].contains("escalated_to_kill: false"),
        "the operator's restart let the server exit on SIGTERM: {}",
        stopped[1]
    );
}
