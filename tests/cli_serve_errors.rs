//! The real `respawn` binary on bad input: each mistake is a clear message naming what is wrong
//! and exit code 2 (usage/configuration), never a panic or a hang.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use respawn::clock::Clock;

/// A run of the binary, killed on drop if it is still going (it never should be).
struct Run(Child);

impl Drop for Run {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `respawn ARGS` with an empty environment (but PATH), waits at most 30 s, and returns
/// (exit code, stdout, stderr).
fn respawn(args: &[&str]) -> (i32, String, String) {
    let child = Command::new(env!("CARGO_BIN_EXE_respawn"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut run = Run(child);
    // Running time: a pause of the machine does not count (respawn::clock).
    let clock = Clock::new();
    let status = loop {
        if let Some(status) = run.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            clock.now() < Duration::from_secs(30),
            "respawn {args:?} did not exit within 30 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stdout = String::new();
    let mut stderr = String::new();
    run.0
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    run.0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (status.code().unwrap_or(-1), stdout, stderr)
}

/// A config file in the temp directory, removed when dropped.
struct TempFile(PathBuf);

impl TempFile {
    /// `label` must be unique among the tests of this file, which run in parallel.
    fn new(label: &str, text: &str) -> TempFile {
        let path = std::env::temp_dir().join(format!(
            "respawn-cli-errors-{}-{label}.toml",
            std::process::id()
        ));
        std::fs::write(&path, text).unwrap();
        TempFile(path)
    }

    fn arg(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn serve_help_lists_every_option_with_its_default() {
    let (code, stdout, _) = respawn(&["serve", "--help"]);
    assert_eq!(code, 0);
    for (flag, default) in [
        ("--listen", "[default: 127.0.0.1:8000]"),
        ("--port", "[default: a free one]"),
        ("--health-path", "[default: /health]"),
        ("--health-interval", "[default: 1s]"),
        ("--health-timeout", "[default: 1s]"),
        ("--unhealthy-after", "[default: 3]"),
        ("--request-timeout", "[default: 60s"),
        ("--stall-timeout", "[default: 30s]"),
        ("--canary-interval", "[default: 10s]"),
        ("--canary-timeout", "[default: 10s]"),
        ("--canary-body", "[default: a one-token chat completion"),
        ("--progress-metric", "[default: auto"),
        ("--progress-timeout", "[default: 15s]"),
        ("--startup-timeout", "[default: 600s]"),
        ("--stop-grace", "[default: 5s]"),
        ("--max-restarts", "[default: 5]"),
        ("--restart-window", "[default: 10m]"),
        ("--retries", "[default: 3]"),
        ("--admin-token", "RESPAWN_ADMIN_TOKEN"),
        ("--config", "RESPAWN_CONFIG"),
        ("--name", "[default: server]"),
        ("--shell", "[default: off]"),
        ("--upstream", "RESPAWN_UPSTREAM"),
        ("--restart-strategies", "[default: process_kill"),
        ("--restart-url", "RESPAWN_RESTART_URL"),
        ("--restart-token", "RESPAWN_RESTART_TOKEN"),
        ("--restart-command", "RESPAWN_RESTART_COMMAND"),
        ("--release-check", "RESPAWN_RELEASE_CHECK"),
        ("--max-body-size", "[default: 64MiB]"),
        ("--header-timeout", "[default: 5s]"),
        ("--workers", "[default: number of cores]"),
        ("--poison-after", "[default: 2]"),
        ("--log-format", "[default: text]"),
    ] {
        let entry = stdout.split("\n\n").find(|block| {
            block.lines().any(|line| {
                let rest = line.trim().strip_prefix(flag);
                rest.is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '[']))
            }) && block.contains(default)
        });
        assert!(
            entry.is_some(),
            "`serve --help` has no entry for {flag} showing {default}:\n{stdout}"
        );
    }
    assert!(
        stdout.contains("ENABLE_SERVER_RESTART") && stdout.contains("SERVER_RESTART_WAIT_TIME")
    );
    assert!(
        stdout.contains("respawn serve [OPTIONS] -- COMMAND [ARGS...]"),
        "{stdout}"
    );
}

#[test]
fn a_bad_duration_exits_2_naming_the_option_and_value() {
    let (code, _, stderr) = respawn(&["serve", "--health-interval", "10 parsecs", "--", "true"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("--health-interval") && stderr.contains("10 parsecs"),
        "{stderr}"
    );
}

#[test]
fn an_unknown_key_exits_2_naming_it() {
    let file = TempFile::new(
        "unknown",
        "command = [\"true\"]\nhelth_path = \"/health\"\n",
    );
    let (code, _, stderr) = respawn(&["serve", "--config", file.arg()]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("`helth_path`") && stderr.contains("did you mean `health_path`"),
        "{stderr}"
    );
    assert!(
        stderr.contains("(line 2)") && stderr.contains(file.arg()),
        "{stderr}"
    );
}

#[test]
fn invalid_toml_exits_2_with_line_and_column() {
    let file = TempFile::new("invalid", "command = [\"true\"]\nretries = = 3\n");
    let (code, _, stderr) = respawn(&["serve", "--config", file.arg()]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "invalid TOML in {} at line 2, column 11",
            file.arg()
        )),
        "{stderr}"
    );
}

#[test]
fn an_unknown_restart_strategy_exits_2_listing_the_known_ones_before_anything_starts() {
    let marker = std::env::temp_dir().join(format!(
        "respawn-cli-errors-{}-strategy-marker",
        std::process::id()
    ));
    let _ = std::fs::remove_file(&marker);
    let (code, _, stderr) = respawn(&[
        "serve",
        "--restart-strategies",
        "process_kill,orchestrator",
        "--",
        "touch",
        marker.to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("--restart-strategies")
            && stderr.contains("`orchestrator`")
            && stderr.contains("process_kill, rest_endpoint, command"),
        "{stderr}"
    );
    assert!(!marker.exists(), "the command was never started");
}

#[test]
fn a_named_restart_strategy_that_cannot_apply_exits_2_saying_what_it_needs() {
    let (code, _, stderr) = respawn(&[
        "serve",
        "--restart-strategies",
        "process_kill,command",
        "--",
        "true",
    ]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("`command` needs --restart-command"),
        "{stderr}"
    );
}

#[test]
fn no_command_exits_2_with_the_usage_hint() {
    let (code, _, stderr) = respawn(&["serve"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("respawn serve [OPTIONS] -- COMMAND [ARGS...] (or --upstream URL)"),
        "{stderr}"
    );
}

#[test]
fn a_missing_config_file_exits_2_naming_it() {
    let (code, _, stderr) = respawn(&[
        "serve",
        "--config",
        "/nonexistent/respawn.toml",
        "--",
        "true",
    ]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("cannot read config file /nonexistent/respawn.toml"),
        "{stderr}"
    );
}

#[test]
fn status_of_nothing_exits_1_naming_the_url() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let (code, _, stderr) = respawn(&["status", "--url", &url]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains(&url), "{stderr}");
}

#[test]
fn a_control_url_without_a_scheme_is_a_usage_error_exit_2_with_the_fix() {
    for command in ["status", "restart"] {
        let (code, _, stderr) = respawn(&[command, "--url", "127.0.0.1:9"]);
        assert_eq!(code, 2, "respawn {command}: {stderr}");
        assert!(stderr.contains("http://127.0.0.1:9"), "{stderr}");
    }
}
