//! respawn never blocks on output. A model server floods stdout and stderr
//! (`respawn mock --flood-output`) while respawn's own stderr is a pipe that nobody reads for 30 s:
//! the server is never held up by its writes, a SIGSTOP of the server is detected and recovered
//! while nobody reads, the lines respawn could not write are counted in
//! `respawn_log_lines_dropped_total`, and once its stderr is read again respawn says how many.

mod common;

use std::time::{Duration, Instant};

use common::{fast_args, prometheus_value, Serve, ServeOptions};
use nix::sys::signal::Signal;

/// How long respawn's stderr stays unread.
const UNREAD_FOR: Duration = Duration::from_secs(30);

/// Bound for one detection and restart with the settings below (3 probes of at most 1 s each,
/// 1 s of stop grace, a start): what "recovered within the usual budget" means here. A respawn
/// that blocks on its log never recovers while its stderr is unread.
const RECOVERY_BUDGET: Duration = Duration::from_secs(20);

/// Lines the flooding server has written so far, from its `/metrics` through the proxy.
fn lines_written(serve: &Serve) -> Option<f64> {
    let text = serve.get("/metrics").ok()?.text();
    prometheus_value(&text, "mock:output_lines_total")
}

fn dropped(serve: &Serve) -> f64 {
    let text = serve.get("/respawn/metrics").expect("metrics").text();
    text.lines()
        .find_map(|line| line.strip_prefix("respawn_log_lines_dropped_total{server=\"server\"} "))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("no respawn_log_lines_dropped_total in:\n{text}"))
}

/// Samples the flood counter once a second until `until`, asserting that it grows between every
/// two samples (the server's writes never block) and that generation `generation` stays ready.
fn flood_keeps_flowing(serve: &Serve, generation: u64, until: Instant) {
    let mut last = lines_written(serve).expect("the flood counter");
    while Instant::now() < until {
        std::thread::sleep(Duration::from_secs(1));
        let now = lines_written(serve).expect("the flood counter");
        assert!(
            now > last,
            "the flooding server stopped writing ({last} then {now} lines): it blocks on its output"
        );
        last = now;
        let status = serve.status();
        assert_eq!(
            status["generation"], generation,
            "no false restart: {status}"
        );
        assert_eq!(status["state"], "ready", "{status}");
    }
}

#[test]
fn a_flooding_server_and_an_unread_stderr_block_neither_the_server_nor_hang_detection() {
    let mut options = ServeOptions::mock(&[], &["--flood-output"]).hold_stderr();
    options.args = fast_args(&["--health-interval", "500ms", "--health-timeout", "1s"]);
    let serve = Serve::start(options);
    let unread_since = Instant::now();

    // Generation 1 floods; nobody reads respawn's stderr.
    flood_keeps_flowing(&serve, 1, unread_since + Duration::from_secs(8));
    assert!(
        dropped(&serve) > 0.0,
        "respawn's stderr is full: lines must have been dropped"
    );

    // A frozen server is detected and replaced while the stderr stays unread.
    let frozen = serve.server_pid();
    common::signal(frozen, Signal::SIGSTOP);
    let stopped_at = Instant::now();
    let status = serve.wait_status(RECOVERY_BUDGET, "recovered from the SIGSTOP", |s| {
        s["generation"] == 2 && s["state"] == "ready"
    });
    assert_eq!(status["last_cause"], "health_probes", "{status}");
    assert!(
        stopped_at.elapsed() < UNREAD_FOR,
        "the recovery happened while the stderr was unread"
    );
    assert!(
        common::proc_stat(frozen).map_or(true, |s| s.state == 'Z'),
        "the frozen server is gone"
    );

    // Generation 2 floods too, still unread, until 30 s have passed.
    flood_keeps_flowing(&serve, 2, unread_since + UNREAD_FOR);
    let dropped_while_unread = dropped(&serve);

    // Reading again: the queued lines come out, then the count of the lost ones.
    serve.read_stderr();
    common::wait_for(Duration::from_secs(30), || {
        serve.logged("log lines were dropped").then_some(())
    })
    .unwrap_or_else(|| panic!("no warning about dropped lines once stderr was read again"));
    let log = serve.log_text();
    assert!(
        log.contains("dropped_total="),
        "the warning carries the count: {}",
        log.lines()
            .find(|l| l.contains("log lines were dropped"))
            .unwrap_or_default()
    );
    assert!(dropped(&serve) >= dropped_while_unread);
}
