//! The official `openai` Python client (pinned, its own retries off) against `respawn serve`:
//! streamed and non-streamed chat completions before, during and after a restart requested on
//! `POST /respawn/restart`, and across a model server frozen with SIGSTOP while the client's
//! requests are in flight, against `respawn mock` and (when installed) llama.cpp's `llama-server`.
//! The client must see zero errors.
//!
//! The venv comes from `bash scripts/ci-deps.sh` (found through `RESPAWN_OPENAI_PYTHON` or the
//! default cache path). Every test here is `#[ignore]`d, so a plain run reports them as ignored;
//! `--include-ignored` runs them (CI does), and then a missing venv (or `llama-server`, for the
//! last test) fails them with the install command.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{fast_args, llama_server, openai_python, proc_stat, Serve, ServeOptions, TempDir};
use nix::sys::signal::Signal;
use serde_json::Value;

const OPENAI_VERSION: &str = "1.109.1";
const TOKEN: &str = "openai-client-test-token";

/// `tests/openai_client.py` running in the venv, steered through its stdin; killed when dropped.
struct PythonClient {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
}

impl PythonClient {
    fn start(python: &Path, base_url: &str, extra: &[&str]) -> PythonClient {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/openai_client.py");
        let mut child = Command::new(python)
            .arg(script)
            .arg("--base-url")
            .arg(base_url)
            .args(extra)
            .env_remove("OPENAI_API_KEY")
            .env_remove("OPENAI_BASE_URL")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn the openai client");
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut client = PythonClient {
            child,
            stdin,
            lines,
        };
        let hello = client.next_line(Duration::from_secs(60));
        assert_eq!(hello["ready"], true, "the client starts: {hello}");
        client
    }

    fn next_line(&mut self, bound: Duration) -> Value {
        let line = self
            .lines
            .recv_timeout(bound)
            .unwrap_or_else(|err| panic!("no line from the openai client within {bound:?}: {err}"));
        serde_json::from_str(&line).unwrap_or_else(|err| panic!("not JSON ({err}): {line}"))
    }

    /// Sends `count` requests (half streamed), `concurrency` at a time; returns the summary.
    fn batch(&mut self, label: &str, count: usize, concurrency: usize) -> Batch {
        writeln!(self.stdin, "batch {label} {count} {concurrency}").expect("write to the client");
        self.stdin.flush().expect("flush the client's stdin");
        let summary = self.next_line(Duration::from_secs(300));
        assert_eq!(summary["label"], label, "summary of the batch: {summary}");
        Batch {
            ok: summary["ok"].as_u64().unwrap_or(0) as usize,
            errors: summary["errors"]
                .as_array()
                .map(|a| a.iter().map(|e| e.to_string()).collect())
                .unwrap_or_default(),
            generations: summary["generations"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_u64).collect())
                .unwrap_or_default(),
            max_attempts: summary["max_attempts"].as_u64().unwrap_or(0),
        }
    }
}

impl Drop for PythonClient {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "quit");
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a batch of requests gave.
#[derive(Debug)]
struct Batch {
    ok: usize,
    errors: Vec<String>,
    generations: Vec<u64>,
    max_attempts: u64,
}

impl Batch {
    fn assert_all_ok(&self, count: usize, what: &str) {
        assert!(
            self.errors.is_empty(),
            "{what}: the client saw errors: {:#?}",
            self.errors
        );
        assert_eq!(self.ok, count, "{what}: every request succeeded");
    }
}

fn serve_mock_with_token(overrides: &[&str], mock_args: &[&str]) -> Serve {
    let mut options = ServeOptions::mock(&[], mock_args).env("RESPAWN_ADMIN_TOKEN", TOKEN);
    options.args = fast_args(overrides);
    Serve::start(options)
}

fn post_restart(serve: &Serve) {
    let bearer = format!("Bearer {TOKEN}");
    let response = common::request(
        serve.addr,
        "POST",
        "/respawn/restart",
        &[("Authorization", bearer.as_str())],
        b"",
        Duration::from_secs(10),
    )
    .expect("POST /respawn/restart");
    assert_eq!(
        response.status,
        202,
        "restart accepted: {}",
        response.text()
    );
}

/// Freezes the real server (the guardian's child) and waits until the kernel shows it stopped.
fn freeze(serve: &Serve) -> u32 {
    let server = serve.server_pid();
    common::signal(server, Signal::SIGSTOP);
    let stopped = common::wait_for(Duration::from_secs(30), || {
        (proc_stat(server).map(|s| s.state) == Some('T')).then_some(())
    });
    assert!(stopped.is_some(), "the server {server} is stopped");
    server
}

#[test]
#[ignore = "needs the openai client venv: bash scripts/ci-deps.sh"]
fn the_openai_client_sees_no_error_across_a_requested_restart() {
    let python = openai_python(OPENAI_VERSION);
    let serve = serve_mock_with_token(&[], &["--token-latency", "20ms", "--tokens", "16"]);
    let mut client = PythonClient::start(&python, &serve.url(), &["--timeout", "60"]);

    let before = client.batch("before", 6, 2);
    before.assert_all_ok(6, "before the restart");
    assert_eq!(before.generations, vec![1]);

    post_restart(&serve);
    // Sent at once: these meet the restart under way and must wait for the next generation.
    let during = client.batch("during", 8, 8);
    during.assert_all_ok(8, "during the restart");

    let status = serve.wait_status(Duration::from_secs(30), "generation 2 ready", |s| {
        s["generation"] == 2 && s["state"] == "ready"
    });
    assert_eq!(status["restarts"], 1, "exactly one restart: {status}");
    assert_eq!(status["last_cause"], "manual", "{status}");

    let after = client.batch("after", 6, 2);
    after.assert_all_ok(6, "after the restart");
    assert_eq!(after.generations, vec![2]);
    assert_eq!(serve.status()["restarts"], 1, "no further restart");
}

#[test]
#[ignore = "needs the openai client venv: bash scripts/ci-deps.sh"]
fn the_openai_client_sees_no_error_when_the_server_wedges_under_its_requests() {
    let python = openai_python(OPENAI_VERSION);
    // After 4 completions every request and /health hang and stay hung through the stop grace:
    // the caught requests can only succeed by being retried on the next generation. The state
    // file makes the wedge fire once over the whole run.
    let dir = TempDir::new("openai-wedge");
    let state = dir.path().join("mock.json");
    let state = state.to_string_lossy();
    let serve = serve_mock_with_token(
        &[],
        &[
            "--token-latency",
            "20ms",
            "--tokens",
            "16",
            "--wedge-after",
            "4",
            "--state-file",
            &state,
        ],
    );
    let mut client = PythonClient::start(&python, &serve.url(), &["--timeout", "60"]);

    let before = client.batch("before", 4, 2);
    before.assert_all_ok(4, "before the wedge");
    assert_eq!(before.generations, vec![1]);

    let caught = client.batch("caught", 8, 8);
    caught.assert_all_ok(8, "requests caught by the wedge");
    assert_eq!(
        caught.generations,
        vec![2],
        "answered by the new generation"
    );
    assert!(
        caught.max_attempts >= 2,
        "the caught requests were retried: {caught:?}"
    );
    let status = serve.status();
    assert_eq!(status["restarts"], 1, "exactly one restart: {status}");

    let after = client.batch("after", 4, 2);
    after.assert_all_ok(4, "after the restart");
    assert_eq!(after.generations, vec![2]);
}

#[test]
#[ignore = "needs the openai client venv: bash scripts/ci-deps.sh"]
fn the_openai_client_sees_no_error_when_the_server_freezes_under_its_requests() {
    let python = openai_python(OPENAI_VERSION);
    let serve = serve_mock_with_token(&[], &["--token-latency", "20ms", "--tokens", "16"]);
    let mut client = PythonClient::start(&python, &serve.url(), &["--timeout", "60"]);

    client
        .batch("before", 4, 2)
        .assert_all_ok(4, "before the freeze");

    // Every request of this batch reaches a frozen server. It is restarted; a request the
    // resumed server finishes within the stop grace is answered by it, the others are retried.
    let frozen = freeze(&serve);
    let caught = client.batch("caught", 8, 8);
    caught.assert_all_ok(8, "requests caught by the freeze");

    let status = serve.wait_status(Duration::from_secs(30), "generation 2 ready", |s| {
        s["generation"] == 2 && s["state"] == "ready"
    });
    assert_eq!(status["restarts"], 1, "exactly one restart: {status}");
    assert!(
        !matches!(proc_stat(frozen), Some(s) if s.state != 'Z'),
        "the frozen server {frozen} is gone"
    );
    let after = client.batch("after", 4, 2);
    after.assert_all_ok(4, "after the restart");
    assert_eq!(after.generations, vec![2]);
}

#[test]
#[ignore = "needs the openai client venv and llama-server: bash scripts/ci-deps.sh"]
fn the_openai_client_sees_no_error_when_a_real_llama_server_freezes_under_its_requests() {
    let python = openai_python(OPENAI_VERSION);
    let (server, model) = llama_server();
    let mut options = ServeOptions::command(
        &[],
        &[
            &server,
            "--model",
            &model,
            "--host",
            "127.0.0.1",
            "--port",
            "{port}",
            "--metrics",
            "-c",
            "2048",
            "-np",
            "4",
            "-t",
            "1",
        ],
    );
    options.args = fast_args(&[
        "--startup-timeout",
        "60s",
        "--health-timeout",
        "1s",
        "--stop-grace",
        "0s",
    ]);
    let serve = Serve::start(options);
    let mut client = PythonClient::start(
        &python,
        &serve.url(),
        &["--timeout", "120", "--max-tokens", "24"],
    );

    client
        .batch("before", 4, 2)
        .assert_all_ok(4, "before the freeze");
    freeze(&serve);
    let caught = client.batch("caught", 4, 4);
    caught.assert_all_ok(4, "requests caught by the freeze");
    assert_eq!(
        caught.generations,
        vec![2],
        "answered by the new generation"
    );
    assert_eq!(serve.status()["restarts"], 1, "exactly one restart");
    client
        .batch("after", 4, 2)
        .assert_all_ok(4, "after the restart");
}
