//! A restart storm that must not happen: 256 requests are in flight when the child freezes, and
//! one freeze is exactly one restart, after which all 256 succeed.

mod common;

use std::thread;
use std::time::Duration;

use common::{chat, free_port, get, prometheus_value, serve_mock, wait_for};
use nix::sys::signal::Signal;

const IN_FLIGHT: usize = 256;

#[test]
fn two_hundred_fifty_six_requests_in_flight_at_a_freeze_make_one_restart_and_all_succeed() {
    let child_port = free_port().to_string();
    let serve = serve_mock(
        &["--port", &child_port],
        &["--token-latency", "100ms", "--workers", "2"],
    );
    let child =
        std::net::SocketAddr::from(([127, 0, 0, 1], child_port.parse::<u16>().expect("port")));
    let addr = serve.addr;
    let server = serve.server_pid();

    // About 6 s of generation each: the first ones are still running when the last one has
    // arrived, even on a loaded machine, and the freeze comes as soon as they all run.
    let clients: Vec<_> = (0..IN_FLIGHT)
        .map(|i| {
            thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn(move || chat(addr, &format!("storm {i}"), 60, Duration::from_secs(120)))
                .expect("spawn a client thread")
        })
        .collect();
    let running = wait_for(Duration::from_secs(20), || {
        let text = get(child, "/metrics", Duration::from_secs(5)).ok()?.text();
        let running = prometheus_value(&text, "mock:requests_running")?;
        (running as usize >= IN_FLIGHT).then_some(running)
    });
    assert!(
        running.is_some(),
        "all {IN_FLIGHT} requests reached the child"
    );
    common::signal(server, Signal::SIGSTOP);
    assert!(serve.status()["in_flight"].as_u64() >= Some(IN_FLIGHT as u64));

    let mut ok = 0;
    for (i, client) in clients.into_iter().enumerate() {
        let response = client
            .join()
            .expect("client thread")
            .unwrap_or_else(|e| panic!("request {i}: {e}"));
        assert_eq!(response.status, 200, "request {i}: {}", response.text());
        assert_eq!(
            response.generation(),
            Some(2),
            "request {i} was retried on the new generation"
        );
        ok += 1;
    }
    assert_eq!(ok, IN_FLIGHT);
    let status = serve.status();
    assert_eq!(status["restarts"], 1, "one freeze, one restart: {status}");
    assert_eq!(status["generation"], 2, "{status}");
    let metrics = serve.get("/respawn/metrics").expect("metrics").text();
    let restarts: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("respawn_restarts_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(
        restarts, 1.0,
        "respawn_restarts_total over every cause:\n{metrics}"
    );
}
