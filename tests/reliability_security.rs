//! `respawn serve`'s control surface under attack: `POST /respawn/restart` refuses a missing,
//! wrong or malformed token (and everyone when no token is configured) without restarting
//! anything; the token never reaches respawn's log even at debug level; a non-loopback listener
//! without a token is warned about; nothing of respawn's or the child's environment leaks
//! through `/respawn/status` or `/respawn/metrics`; the model server (and its guardian) never
//! inherit respawn's own secrets unless `--pass-secrets` asks for it.

mod support;

use std::time::Duration;

use nix::sys::signal::Signal;
use support::{bin, get, request, wait_for, Respawn};

const TOKEN: &str = "s3cret-admin-token-4b1d";

fn restart(run: &Respawn, authorization: Option<&str>) -> u16 {
    let headers: Vec<(&str, &str)> = authorization
        .map(|a| ("Authorization", a))
        .into_iter()
        .collect();
    request(
        run.addr(),
        "POST",
        "/respawn/restart",
        &headers,
        b"",
        Duration::from_secs(10),
    )
    .expect("an answer from /respawn/restart")
    .status
}

fn mock() -> [&'static str; 4] {
    [bin(), "mock", "--port", "{port}"]
}

#[test]
fn restart_refuses_missing_wrong_and_malformed_tokens_and_restarts_nothing() {
    let run = Respawn::serve_ready(&[], &mock(), &[("RESPAWN_ADMIN_TOKEN", TOKEN)]);
    let wrong = [
        None,
        Some("Bearer wrong-token"),
        Some("Bearer "),
        Some("Bearer"),
        Some("bearer s3cret-admin-token-4b1"),
        Some("Bearer s3cret-admin-token-4b1"),
        Some("Bearer s3cret-admin-token-4b1dX"),
        Some("Basic czNjcmV0LWFkbWluLXRva2VuLTRiMWQ="),
        Some(TOKEN),
        Some("Bearer S3CRET-ADMIN-TOKEN-4B1D"),
    ];
    for authorization in wrong {
        assert_eq!(restart(&run, authorization), 401, "for {authorization:?}");
    }
    let status = run.status();
    assert_eq!(
        status["generation"], 1,
        "no refused call restarted anything: {status}"
    );
    assert_eq!(status["restarts"], 0, "{status}");

    assert_eq!(restart(&run, Some(&format!("Bearer {TOKEN}"))), 202);
    run.wait_status(Duration::from_secs(30), "the authorized restart", |s| {
        s["generation"] == 2 && s["state"] == "ready"
    });
}

#[test]
fn with_no_token_configured_restart_refuses_everyone() {
    let run = Respawn::serve_ready(&[], &mock(), &[]);
    for authorization in [
        None,
        Some("Bearer "),
        Some("Bearer anything"),
        Some("Bearer null"),
    ] {
        assert_eq!(restart(&run, authorization), 401, "for {authorization:?}");
    }
    // GET is not a way around it.
    let reply = get(run.addr(), "/respawn/restart").expect("an answer");
    assert_ne!(reply.status, 202);
    assert_eq!(run.status()["restarts"], 0);
}

#[test]
fn the_token_never_appears_in_the_log_even_at_debug_level() {
    let run = Respawn::serve_ready(
        &[],
        &mock(),
        &[("RESPAWN_ADMIN_TOKEN", TOKEN), ("RESPAWN_LOG", "debug")],
    );
    assert_eq!(restart(&run, Some("Bearer s3cret-admin-token-4b1e")), 401);
    assert_eq!(restart(&run, Some(&format!("Bearer {TOKEN}"))), 202);
    run.wait_status(Duration::from_secs(30), "the restart", |s| {
        s["generation"] == 2 && s["state"] == "ready"
    });
    // A proxied request carrying the token as its own credential is the client's business, but it
    // must not be logged either.
    let bearer = format!("Bearer {TOKEN}");
    let body = support::chat_body("hello", 2, false);
    let reply = request(
        run.addr(),
        "POST",
        "/v1/chat/completions",
        &[("Authorization", &bearer)],
        body.as_bytes(),
        Duration::from_secs(20),
    )
    .expect("a proxied answer");
    assert_eq!(reply.status, 200, "{}", reply.text());
    run.signal(Signal::SIGTERM);
    let mut run = run;
    assert_eq!(run.exit_code(Duration::from_secs(20)), 0);
    let log = run.log_text();
    assert!(log.lines().count() > 10, "debug logging is on:\n{log}");
    assert!(
        !log.contains("s3cret-admin-token"),
        "a token (or its prefix) reached the log:\n{log}"
    );
}

#[test]
fn a_non_loopback_listener_without_a_token_is_warned_about() {
    // Bound on every interface with port 0; no traffic is sent to it.
    let mut open = Respawn::run(
        &[
            "serve",
            "--listen",
            "0.0.0.0:0",
            "--",
            bin(),
            "mock",
            "--port",
            "{port}",
        ],
        &[],
    );
    let warned = wait_for(Duration::from_secs(20), || {
        open.log_text()
            .lines()
            .find(|l| l.contains("WARN") && l.contains("non-loopback") && l.contains("admin token"))
            .map(str::to_owned)
    });
    open.signal(Signal::SIGTERM);
    assert_eq!(
        open.exit_code(Duration::from_secs(20)),
        0,
        "{}",
        open.log_text()
    );
    assert!(warned.is_some(), "no warning:\n{}", open.log_text());

    let mut guarded = Respawn::run(
        &[
            "serve",
            "--listen",
            "0.0.0.0:0",
            "--",
            bin(),
            "mock",
            "--port",
            "{port}",
        ],
        &[("RESPAWN_ADMIN_TOKEN", TOKEN)],
    );
    let listening = wait_for(Duration::from_secs(20), || {
        guarded.log_text().contains("server ready").then_some(())
    });
    guarded.signal(Signal::SIGTERM);
    assert_eq!(
        guarded.exit_code(Duration::from_secs(20)),
        0,
        "{}",
        guarded.log_text()
    );
    assert!(listening.is_some(), "{}", guarded.log_text());
    assert!(
        !guarded.log_text().contains("non-loopback"),
        "no warning with a token:\n{}",
        guarded.log_text()
    );
}

#[test]
fn status_and_metrics_do_not_leak_the_environment_or_the_token() {
    let secret = "sk-live-environment-secret-91c2";
    let run = Respawn::serve_ready(
        &[],
        &mock(),
        &[
            ("OPENAI_API_KEY", secret),
            ("HF_TOKEN", secret),
            ("RESPAWN_ADMIN_TOKEN", TOKEN),
        ],
    );
    let reply =
        support::chat(run.addr(), "hi", 2, false, Duration::from_secs(20)).expect("a request");
    assert_eq!(reply.status, 200);
    for path in [
        "/respawn/status",
        "/respawn/metrics",
        "/respawn/livez",
        "/respawn/readyz",
    ] {
        let reply = get(run.addr(), path).expect("an answer");
        assert_eq!(reply.status, 200, "{path}");
        let text = reply.text();
        assert!(
            !text.contains(secret),
            "{path} leaks the environment: {text}"
        );
        assert!(
            !text.contains(TOKEN),
            "{path} leaks the admin token: {text}"
        );
        assert!(
            !text.contains("OPENAI_API_KEY") && !text.contains("HF_TOKEN"),
            "{path}: {text}"
        );
    }
    assert!(
        !run.log_text().contains(secret),
        "the log leaks the environment:\n{}",
        run.log_text()
    );
}

/// The environment of process `pid`, as `NAME=VALUE` entries.
fn environment_of(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/environ"))
        .map(|raw| {
            raw.split(|b| *b == 0)
                .filter(|entry| !entry.is_empty())
                .map(|entry| String::from_utf8_lossy(entry).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

const RESTART_TOKEN: &str = "s3cret-restart-token-77aa";

#[test]
fn the_model_server_inherits_none_of_respawns_secrets_unless_asked() {
    let env = [
        ("RESPAWN_ADMIN_TOKEN", TOKEN),
        ("RESPAWN_RESTART_TOKEN", RESTART_TOKEN),
        ("HF_TOKEN", "hf-for-the-server"),
    ];
    let run = Respawn::serve_ready(&[], &mock(), &env);
    let server = run.server().expect("a server pid");
    let guardian = run.guardian().expect("a guardian pid");
    for (who, pid) in [("server", server), ("guardian", guardian)] {
        let environment = environment_of(pid);
        assert!(
            !environment.is_empty(),
            "the {who}'s environment is readable"
        );
        for entry in &environment {
            assert!(
                !entry.contains(TOKEN) && !entry.contains(RESTART_TOKEN),
                "the {who} inherited a secret: {entry}"
            );
        }
    }
    assert!(
        environment_of(server).contains(&"HF_TOKEN=hf-for-the-server".to_owned()),
        "the server's own variables still reach it"
    );
    // respawn itself still has its token: the restart endpoint takes it.
    assert_eq!(restart(&run, Some(&format!("Bearer {TOKEN}"))), 202);
    drop(run);

    let run = Respawn::serve_ready(&["--pass-secrets"], &mock(), &env);
    let environment = environment_of(run.server().expect("a server pid"));
    for expected in [
        format!("RESPAWN_ADMIN_TOKEN={TOKEN}"),
        format!("RESPAWN_RESTART_TOKEN={RESTART_TOKEN}"),
    ] {
        assert!(
            environment.contains(&expected),
            "--pass-secrets passes {expected}"
        );
    }
}
