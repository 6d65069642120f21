//! The original design's `ENABLE_SERVER_RESTART=false`: respawn detects and reports a hang, and never
//! restarts the server.

mod common;

use std::time::Duration;

use common::{Serve, ServeOptions};

#[test]
fn with_restarts_disabled_a_wedge_is_reported_but_never_restarted() {
    let options =
        ServeOptions::mock(&[], &["--wedge-after", "1"]).env("ENABLE_SERVER_RESTART", "false");
    let options = ServeOptions {
        args: common::fast_args(&[]),
        ..options
    };
    let serve = Serve::start(options);
    let guardian = serve.guardian_pid();
    let server = serve.server_pid();
    assert_eq!(
        serve
            .chat("fine", 2, Duration::from_secs(30))
            .expect("request")
            .status,
        200
    );
    // The next completion wedges the child: /health hangs too.
    let addr = serve.addr;
    let caught =
        std::thread::spawn(move || common::chat(addr, "caught", 2, Duration::from_secs(4)));
    let status = serve.wait_status(Duration::from_secs(20), "the hang is reported", |s| {
        s["last_cause"] == "health_probes"
    });
    assert_eq!(status["restarts"], 0, "{status}");
    std::thread::sleep(Duration::from_secs(2));
    let status = serve.status();
    assert_eq!(status["restarts"], 0, "never restarted: {status}");
    assert_eq!(status["generation"], 1, "{status}");
    assert_eq!(status["pid"].as_u64(), Some(u64::from(server)));
    assert_eq!(status["guardian_pid"].as_u64(), Some(u64::from(guardian)));
    assert!(
        common::proc_stat(server).is_some(),
        "the wedged server is left running"
    );
    let caught = caught.join().expect("client thread");
    assert!(
        caught.map(|r| r.status != 200).unwrap_or(true),
        "the wedged server cannot answer"
    );
    // The log says why nothing happens.
    serve.wait_logged("ENABLE_SERVER_RESTART=false", Duration::from_secs(30));
}
