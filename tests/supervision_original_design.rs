//! The original design's three restart tests, in Rust, against real processes:
//! 1. full: respawn owns the server (process strategy): request, force a restart, see a new
//!    generation and PID, request again, clean up;
//! 2. fallback: a server respawn does not own, restarted through its REST `/restart` endpoint and
//!    brought back by its supervising parent (here another `respawn serve`, standing in for systemd);
//! 3. manual restart through a registry handle;
//!
//! and, with the same supervised server, what the original design's client did not check: a
//! path that no HTTP request can carry is refused before anything is sent.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use actix::Actor;
use respawn::auth::AdminToken;
use respawn::client_actor::{Call, ClientActor};
use respawn::metrics::FailureClass;
use respawn::registry::Registry;
use respawn::supervisor::{RestRestart, Supervisor, SupervisorConfig, Target};
use respawn::upstream::CallError;
use respawn_core::{Generation, Phase};

fn respawn_bin() -> &'static str {
    env!("CARGO_BIN_EXE_respawn")
}

/// A TCP port on 127.0.0.1 that is free now and that no other test of this binary is handed.
///
/// Ports come from below the kernel's ephemeral range (which starts at 32768 here), from a
/// per-process counter: tests of one binary run in parallel threads and never get the same port,
/// and nothing that binds port 0 (respawn choosing a child's port, a client socket) can take one
/// of them between the moment it is chosen and the moment it is bound.
fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    let offset = (std::process::id() * 7919) % SPAN;
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (LOW + (offset + n) % SPAN) as u16;
        // Free to bind, and nothing answers there (a listener that is shutting down, or one
        // that another process left behind, would).
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
            && std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
        {
            return port;
        }
    }
    panic!("no free port between {LOW} and {}", LOW + SPAN)
}

fn mock_target(name: &str, extra: &[&str]) -> Target {
    let mut args = vec!["mock", "--port", "{port}", "--token-latency", "1ms"];
    args.extend_from_slice(extra);
    let Target::Command(mut spec) = Target::command(name, respawn_bin(), args, free_port()) else {
        unreachable!("a command target")
    };
    spec.stop_grace = Duration::from_secs(2);
    Target::Command(spec)
}

fn fast_config(name: &str) -> SupervisorConfig {
    let mut config = SupervisorConfig::new(name);
    config.core.health.interval = Duration::from_millis(200);
    // A second per probe: a loaded machine can delay a healthy answer past a few hundred ms,
    // and three of those in a row would be a restart the test did not ask for.
    config.core.health.timeout = Duration::from_secs(1);
    config.core.health.startup_timeout = Duration::from_secs(20);
    config.core.progress.canary_interval = Duration::ZERO;
    config.stop_grace = Duration::from_secs(2);
    config
}

fn ask(prompt: &str) -> Call {
    Call::post_json(
        "/v1/chat/completions",
        &serde_json::json!({
            "model": "mock-llm",
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": 4,
        }),
    )
}

/// Asks `prompt` through `client` and checks that `generation` answered it successfully.
async fn answered_by(client: &actix::Addr<ClientActor>, prompt: &str, generation: Generation) {
    let answer = client
        .send(ask(prompt))
        .await
        .expect("actor")
        .expect("answer");
    assert!(answer.status.is_success());
    assert_eq!(answer.generation, generation);
}

fn group_alive(pgid: u32) -> bool {
    !respawn_backends::group_members(pgid).is_empty()
}

#[actix_rt::test]
async fn full_restart_through_the_process_strategy() {
    let supervisor =
        Supervisor::start(fast_config("full"), mock_target("full", &[])).expect("start");
    let first = supervisor
        .wait_ready(Duration::from_secs(20))
        .await
        .expect("ready");
    assert_eq!(first, Generation(1));
    let old_pid = supervisor.state().borrow().pid.expect("pid");
    let client = ClientActor::new(supervisor.upstream_shared().clone()).start();

    answered_by(&client, "hello", Generation(1)).await;

    supervisor.restart().await.expect("restart accepted");
    let mut state = supervisor.state();
    let second = respawn::state::wait_ready(&mut state, Generation(2), Duration::from_secs(20))
        .await
        .expect("new generation ready");
    assert_eq!(second, Generation(2));
    let new_pid = supervisor.state().borrow().pid.expect("pid");
    assert_ne!(old_pid, new_pid);
    assert!(
        !group_alive(old_pid),
        "nothing of the old process group remains"
    );

    answered_by(&client, "hello again", Generation(2)).await;

    supervisor.stop(Duration::from_secs(2)).await;
    assert_eq!(supervisor.state().borrow().phase, Phase::Stopped);
    assert!(!group_alive(new_pid), "stop leaves nothing behind");
}

/// Kills the supervising parent (and so its whole tree) when the test ends.
struct Parent(Child);

impl Drop for Parent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[actix_rt::test]
async fn fallback_restart_through_the_rest_endpoint_and_a_supervising_parent() {
    let token = "fallback-test-token";
    let port = free_port();
    // The wedge fires once per job, not once per process.
    let state_file = std::env::temp_dir().join(format!(
        "respawn-fallback-{}-{port}.json",
        std::process::id()
    ));
    let _ = std::fs::remove_file(&state_file);
    let listen = free_port();
    // The service manager: restarts the mock on the same port whenever it exits, as systemd's
    // Restart=always would. Its health checks are slow so that it does not notice the wedge first.
    let parent = Command::new(respawn_bin())
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{listen}"),
            "--port",
            &port.to_string(),
            "--health-interval",
            "30s",
            "--health-timeout",
            "30s",
            "--canary-interval",
            "0",
            "--progress-metric",
            "none",
            // The mock's own /restart takes the same token: pass it on (respawn keeps its
            // secrets from the child unless asked).
            "--pass-secrets",
            "--",
            respawn_bin(),
            "mock",
            "--port",
            "{port}",
            "--wedge-after",
            "2",
            "--state-file",
            state_file.to_str().expect("utf-8 path"),
        ])
        .env("RESPAWN_ADMIN_TOKEN", token)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the supervising parent");
    let _parent = Parent(parent);

    let mut config = fast_config("fallback");
    config.rest_restart = Some(RestRestart {
        url: format!("http://127.0.0.1:{port}/restart"),
        token: AdminToken::new(token).expect("token"),
    });
    let target = Target::Url {
        base_url: format!("http://127.0.0.1:{port}"),
    };
    let supervisor = Supervisor::start(config, target).expect("start");
    supervisor
        .wait_ready(Duration::from_secs(20))
        .await
        .expect("the server answers");
    let client = ClientActor::new(supervisor.upstream_shared().clone()).start();
    // The third completion wedges the server: respawn sees the health probes fail, asks the
    // server to exit over REST, and the parent starts a fresh one.
    for i in 0..5 {
        let answer = client
            .send(ask(&format!("sample {i}")))
            .await
            .expect("actor")
            .expect("every request succeeds");
        assert!(answer.status.is_success(), "sample {i}");
    }
    let state = supervisor.state().borrow().clone();
    assert_eq!(state.restarts, 1, "one wedge, one restart");
    assert_eq!(state.generation, Generation(2));
    assert!(state.last_error.is_none(), "{:?}", state.last_error);
    let _ = std::fs::remove_file(&state_file);
}

#[actix_rt::test]
async fn manual_restart_through_a_registry_handle() {
    let mut registry = Registry::new();
    for name in ["alpha", "beta"] {
        let supervisor =
            Supervisor::start(fast_config(name), mock_target(name, &[])).expect("start");
        registry.register(supervisor).expect("unique name");
    }
    assert_eq!(registry.names().collect::<Vec<_>>(), ["alpha", "beta"]);
    for (_, supervisor) in registry.iter() {
        supervisor
            .wait_ready(Duration::from_secs(20))
            .await
            .expect("ready");
    }
    let beta = registry.get("beta").expect("registered");
    let before = beta.state().borrow().pid;
    beta.restart().await.expect("restart");
    let mut state = beta.state();
    respawn::state::wait_ready(&mut state, Generation(2), Duration::from_secs(20))
        .await
        .expect("beta is back");
    assert_ne!(beta.state().borrow().pid, before);
    // The other supervisor is untouched.
    let alpha = registry.get("alpha").expect("registered");
    assert_eq!(alpha.state().borrow().generation, Generation(1));
    assert_eq!(alpha.state().borrow().restarts, 0);
    let duplicate =
        Supervisor::start(fast_config("alpha"), mock_target("alpha", &[])).expect("start");
    assert!(registry.register(duplicate.clone()).is_err());
    duplicate.stop(Duration::from_secs(2)).await;
    for (_, supervisor) in registry.iter() {
        supervisor.stop(Duration::from_secs(2)).await;
    }
}

#[actix_rt::test]
async fn a_path_no_request_can_carry_is_refused_before_anything_is_sent() {
    let supervisor =
        Supervisor::start(fast_config("paths"), mock_target("paths", &[])).expect("start");
    supervisor
        .wait_ready(Duration::from_secs(20))
        .await
        .expect("ready");
    let client = ClientActor::new(supervisor.upstream_shared().clone()).start();
    for (path, why) in [
        ("v1/chat/completions", "does not start with `/`"),
        ("/v1/chat completions", "invalid uri character"),
    ] {
        let mut call = ask("hello");
        call.path = path.to_owned();
        let err = client
            .send(call)
            .await
            .expect("actor")
            .expect_err("refused");
        assert!(
            matches!(&err, CallError::InvalidPath { path: given, .. } if given == path),
            "{err:?}"
        );
        assert_eq!(err.status(), 400);
        assert_eq!(err.class(), FailureClass::BadRequest);
        assert!(err.to_string().contains(why), "{err}");
    }
    // Nothing reached the server: it finished no completion, and the next request is its first.
    let mut metrics = ask("");
    metrics.method = actix_web::http::Method::GET;
    metrics.path = "/metrics".to_owned();
    metrics.body = bytes::Bytes::new();
    let answer = client.send(metrics).await.expect("actor").expect("metrics");
    let text = String::from_utf8_lossy(&answer.body).into_owned();
    assert!(text.contains("mock:completions_total 0"), "{text}");
    answered_by(&client, "hello", Generation(1)).await;
    supervisor.stop(Duration::from_secs(2)).await;
}
