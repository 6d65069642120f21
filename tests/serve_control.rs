//! respawn's own routes under `/respawn/` and the `respawn status` / `respawn restart` commands
//! against a running instance.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{fast_args, request, respawn_bin, Serve, ServeOptions};

const TOKEN: &str = "test-admin-token-0123456789abcdef";

fn serve_with_token(token: Option<&str>) -> Serve {
    let mut options = ServeOptions::mock(&[], &[]);
    options.args = fast_args(&[]);
    if let Some(token) = token {
        options = options.env("RESPAWN_ADMIN_TOKEN", token);
    }
    Serve::start(options)
}

fn post_restart(serve: &Serve, authorization: Option<&str>) -> common::Reply {
    let headers: Vec<(&str, &str)> = authorization
        .iter()
        .map(|v| ("Authorization", *v))
        .collect();
    request(
        serve.addr,
        "POST",
        "/respawn/restart",
        &headers,
        b"",
        Duration::from_secs(10),
    )
    .expect("POST /respawn/restart")
}

#[test]
fn status_reports_every_documented_field() {
    let serve = serve_with_token(None);
    let response = serve
        .chat("hello", 2, Duration::from_secs(30))
        .expect("request");
    assert_eq!(response.status, 200);
    let status = serve.status();
    assert_eq!(status["server"], "server");
    assert_eq!(status["state"], "ready");
    assert_eq!(status["generation"], 1);
    assert!(status["pid"].as_u64().is_some_and(|p| p > 1), "{status}");
    assert_eq!(status["restarts"], 0);
    assert!(status["last_restart"].is_null(), "{status}");
    assert!(status["last_cause"].is_null(), "{status}");
    assert!(status["uptime_s"].is_u64(), "{status}");
    assert_eq!(status["in_flight"], 0);
    assert!(status["requests_total"].as_u64() >= Some(1), "{status}");
    let guardian = status["guardian_pid"].as_u64().expect("guardian_pid") as u32;
    assert!(
        common::cmdline(guardian).contains("__guardian"),
        "guardian_pid is the group's guardian"
    );
    let server = status["pid"].as_u64().expect("pid") as u32;
    assert!(
        common::cmdline(server).contains(" mock "),
        "pid is the model server's own: {}",
        common::cmdline(server)
    );
    assert_eq!(
        common::proc_stat(server).map(|s| s.ppid),
        Some(guardian),
        "the server is the guardian's child"
    );
    assert!(
        matches!(status["containment"].as_str(), Some("cgroup" | "guardian")),
        "{status}"
    );
    assert_eq!(
        common::proc_stat(guardian).map(|s| s.pgrp),
        Some(guardian),
        "it leads its group"
    );
}

#[test]
fn restart_needs_the_right_token_and_then_starts_a_new_generation() {
    let serve = serve_with_token(Some(TOKEN));
    assert_eq!(post_restart(&serve, None).status, 401, "no token");
    assert_eq!(
        post_restart(&serve, Some("Bearer wrong-token-0123456789abcdef")).status,
        401,
        "wrong token"
    );
    assert_eq!(
        post_restart(&serve, Some(TOKEN)).status,
        401,
        "a token without the Bearer scheme"
    );
    assert_eq!(
        serve.status()["generation"],
        1,
        "refused requests restart nothing"
    );

    let accepted = post_restart(&serve, Some(&format!("Bearer {TOKEN}")));
    assert_eq!(accepted.status, 202, "{}", accepted.text());
    let status = serve.wait_status(Duration::from_secs(20), "generation 2 ready", |s| {
        s["generation"] == 2 && s["state"] == "ready"
    });
    assert_eq!(status["restarts"], 1);
    assert_eq!(status["last_restart"]["cause"], "manual", "{status}");
    assert!(!serve.logged(TOKEN), "the token never appears in the log");
}

#[test]
fn without_a_configured_token_restart_refuses_everyone() {
    let serve = serve_with_token(None);
    assert_eq!(post_restart(&serve, None).status, 401);
    assert_eq!(
        post_restart(&serve, Some("Bearer anything-at-all-0123456789")).status,
        401
    );
    assert_eq!(post_restart(&serve, Some("Bearer ")).status, 401);
    std::thread::sleep(Duration::from_millis(300));
    let status = serve.status();
    assert_eq!(status["generation"], 1, "{status}");
    assert_eq!(status["restarts"], 0, "{status}");
}

#[test]
fn metrics_livez_and_readyz_answer() {
    let serve = serve_with_token(Some(TOKEN));
    assert_eq!(
        serve
            .chat("hello", 2, Duration::from_secs(30))
            .expect("request")
            .status,
        200
    );
    let metrics = serve.get("/respawn/metrics").expect("metrics");
    assert_eq!(metrics.status, 200);
    let text = metrics.text();
    for name in [
        "respawn_restarts_total",
        "respawn_hangs_detected_total",
        "respawn_requests_total",
        "respawn_requests_retried_total",
        "respawn_requests_failed_total",
        "respawn_recovery_seconds",
        "respawn_upstream_up",
        "respawn_requests_in_flight",
    ] {
        assert!(
            text.contains(&format!("# TYPE {name}")),
            "{name} missing:\n{text}"
        );
    }
    assert!(
        text.contains("respawn_upstream_up{server=\"server\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("respawn_requests_total{server=\"server\"} 1"),
        "{text}"
    );
    assert_eq!(serve.get("/respawn/livez").expect("livez").status, 200);
    assert_eq!(serve.get("/respawn/readyz").expect("readyz").status, 200);

    assert_eq!(
        post_restart(&serve, Some(&format!("Bearer {TOKEN}"))).status,
        202
    );
    serve.wait_status(Duration::from_secs(20), "generation 2 ready", |s| {
        s["generation"] == 2 && s["state"] == "ready"
    });
    let text = serve.get("/respawn/metrics").expect("metrics").text();
    assert!(
        text.contains("respawn_restarts_total{server=\"server\",cause=\"manual\"} 1"),
        "a manual restart is counted:\n{text}"
    );
    assert!(
        text.contains("respawn_recovery_seconds_count{server=\"server\"} 1"),
        "{text}"
    );
}

fn respawn(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = Command::new(respawn_bin());
    cmd.args(args).env_remove("RESPAWN_ADMIN_TOKEN");
    for (name, value) in env {
        cmd.env(name, value);
    }
    cmd.output().expect("run respawn")
}

#[test]
fn the_status_and_restart_commands_talk_to_a_running_instance() {
    let serve = serve_with_token(Some(TOKEN));
    let url = serve.url();

    let out = respawn(&["status", "--url", &url], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("ready"), "{text}");

    let out = respawn(&["status", "--url", &url, "--json"], &[]);
    assert!(out.status.success());
    let json: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("status --json is JSON");
    assert_eq!(json["generation"], 1);

    let out = respawn(&["restart", "--url", &url], &[]);
    assert!(!out.status.success(), "a restart without a token fails");
    let out = respawn(
        &[
            "restart",
            "--url",
            &url,
            "--token",
            "wrong-token-0123456789abcdef",
        ],
        &[],
    );
    assert!(!out.status.success(), "a restart with a wrong token fails");
    assert_eq!(serve.status()["generation"], 1);

    let out = respawn(&["restart", "--url", &url, "--token", TOKEN], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains(TOKEN),
        "the token is not echoed"
    );
    serve.wait_status(Duration::from_secs(20), "generation 2 ready", |s| {
        s["generation"] == 2 && s["state"] == "ready"
    });

    let out = respawn(
        &["restart", "--url", &url],
        &[("RESPAWN_ADMIN_TOKEN", TOKEN)],
    );
    assert!(
        out.status.success(),
        "the token from the environment: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serve.wait_status(Duration::from_secs(20), "generation 3 ready", |s| {
        s["generation"] == 3 && s["state"] == "ready"
    });
}

#[test]
fn a_control_url_without_the_http_scheme_is_a_usage_error() {
    // docs/CONFIG.md: a URL that is not http://HOST:PORT exits 2, before anything is sent.
    for args in [
        ["status", "--url", "127.0.0.1:8000"],
        ["restart", "--url", "localhost:8000"],
    ] {
        let out = respawn(&args, &[]);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("http://HOST:PORT"), "{args:?}: {stderr}");
    }
}
