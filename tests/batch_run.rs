//! `respawn batch` from outside the process: a batch against a simulated server that wedges,
//! a SIGKILL of respawn part way and the rerun, resume and repair of the output file, and the
//! input and output errors that must stop a run before anything is sent.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use respawn::clock::Clock;

use serde_json::Value;

const RESPAWN: &str = env!("CARGO_BIN_EXE_respawn");

/// A per-test directory; every process whose command line mentions it (the mocks get their
/// `--state-file` there) is killed when the test ends, even when it fails.
struct Job {
    dir: PathBuf,
}

impl Job {
    fn new(name: &str) -> Job {
        let dir = std::env::temp_dir().join(format!("respawn-batch-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the test directory");
        Job { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Writes `count` chat requests; `poison` puts the wedge marker into one prompt.
    fn input(&self, name: &str, count: usize, poison: Option<usize>) -> PathBuf {
        let mut text = String::new();
        for i in 0..count {
            let content = if poison == Some(i) {
                "please POISON the server".to_owned()
            } else {
                format!("question {i}")
            };
            let line = serde_json::json!({
                "custom_id": format!("request-{i}"),
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {"model": "mock-llm", "messages": [{"role": "user", "content": content}]},
            });
            text.push_str(&line.to_string());
            text.push('\n');
        }
        let path = self.path(name);
        std::fs::write(&path, text).expect("write the input");
        path
    }

    /// `respawn batch` with fast hang detection, before `extra` and the mock's own flags.
    ///
    /// Probes are frequent but each gets a second, and a first byte fifteen: a loaded machine
    /// slows healthy answers, and a restart the test did not cause would put innocent requests
    /// at two hangs (quarantined) or change the counts the tests check. The wedges the tests
    /// inject are found by the probes within seconds.
    fn batch(&self, input: &Path, output: &Path, extra: &[&str], mock: &[&str]) -> Command {
        let mut cmd = Command::new(RESPAWN);
        cmd.arg("batch")
            .arg("--input")
            .arg(input)
            .arg("--output")
            .arg(output)
            .args([
                "--health-interval",
                "200ms",
                "--health-timeout",
                "1s",
                "--request-timeout",
                "15s",
            ])
            .args([
                "--stop-grace",
                "1s",
                "--startup-timeout",
                "60s",
                "--log-interval",
                "1s",
            ])
            .args(extra);
        if !mock.is_empty() {
            cmd.arg("--").args([
                RESPAWN,
                "mock",
                "--port",
                "{port}",
                "--workers",
                "2",
                "--state-file",
            ]);
            cmd.arg(self.path("mock-state.json")).args(mock);
        }
        for var in [
            "RESPAWN_COMMAND",
            "RESPAWN_UPSTREAM",
            "RESPAWN_CONFIG",
            "RESPAWN_PORT",
            "PORT",
            "NOTIFY_SOCKET",
        ] {
            cmd.env_remove(var);
        }
        cmd.env("RESPAWN_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        cmd
    }

    /// The pids of the processes whose command line mentions this job's directory.
    fn processes(&self) -> Vec<i32> {
        let needle = self.dir.to_string_lossy().into_owned();
        let me = std::process::id() as i32;
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .filter_map(Result::ok)
            .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
            .filter(|&pid| pid != me)
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline"))
                    .map(|raw| String::from_utf8_lossy(&raw).contains(&needle))
                    .unwrap_or(false)
            })
            .collect()
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        for pid in self.processes() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A running `respawn batch`, SIGKILLed on drop.
struct Running {
    child: Child,
    log: mpsc::Receiver<String>,
    lines: Vec<String>,
}

impl Running {
    fn start(mut cmd: Command) -> Running {
        let mut child = cmd.spawn().expect("spawn respawn batch");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, log) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Running {
            child,
            log,
            lines: Vec::new(),
        }
    }

    /// Waits for the exit (generously bounded) and returns the code and the whole log.
    fn finish(mut self, bound: Duration) -> (i32, String) {
        // Running time: a pause of the machine does not count (respawn::clock).
        let clock = Clock::new();
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                break status;
            }
            assert!(
                clock.now() < bound,
                "respawn batch did not finish within {bound:?}:\n{}",
                self.drain()
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        let log = self.drain_to_end(bound.saturating_sub(clock.now()));
        (status.code().unwrap_or(-1), log)
    }

    /// The log so far, without waiting (for messages about a run that is still going).
    fn drain(&mut self) -> String {
        while let Ok(line) = self.log.try_recv() {
            self.lines.push(line);
        }
        self.lines.join("\n")
    }

    /// The whole log of a run that has exited: every line up to the end of the pipe, which the
    /// reader thread reaches on its own schedule (a loaded machine may hold it back for long).
    /// Each wait for a line is what is left of `within` (running time), and at least 10 s.
    fn drain_to_end(&mut self, within: Duration) -> String {
        let clock = Clock::new();
        loop {
            let left = within
                .saturating_sub(clock.now())
                .max(Duration::from_secs(10));
            match self.log.recv_timeout(left) {
                Ok(line) => self.lines.push(line),
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!(
                        "the log pipe stayed open after respawn batch exited:\n{}",
                        self.lines.join("\n")
                    )
                }
            }
        }
        self.lines.join("\n")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run(cmd: Command) -> (i32, String) {
    Running::start(cmd).finish(Duration::from_secs(180))
}

fn run_quick(mut cmd: Command) -> Output {
    cmd.output().expect("run respawn batch")
}

/// Every output line, parsed; panics on a line that is not JSON.
fn records(output: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(output).expect("read the output");
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "the output ends with a whole line"
    );
    text.lines()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|e| panic!("bad output line {line:?}: {e}"))
        })
        .collect()
}

/// Asserts that every id `request-0..count` is recorded exactly once, and returns them by id.
fn assert_each_id_once(output: &Path, count: usize) -> HashMap<String, Value> {
    let mut by_id = HashMap::new();
    for record in records(output) {
        let id = record["custom_id"].as_str().expect("custom_id").to_owned();
        assert!(
            record["id"]
                .as_str()
                .is_some_and(|id| id.starts_with("batch_req_")),
            "{record}"
        );
        assert!(
            by_id.insert(id.clone(), record).is_none(),
            "custom_id {id} recorded twice"
        );
    }
    let expected: HashSet<String> = (0..count).map(|i| format!("request-{i}")).collect();
    let got: HashSet<String> = by_id.keys().cloned().collect();
    assert_eq!(got, expected, "every input id is in the output");
    by_id
}

fn succeeded(record: &Value) -> bool {
    record["error"].is_null() && record["response"]["status_code"] == 200
}

/// The `restarts=N` of the summary line.
fn summary_restarts(log: &str) -> u64 {
    let line = log
        .lines()
        .rfind(|l| l.contains("batch summary"))
        .unwrap_or_else(|| panic!("no summary in:\n{log}"));
    let field = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("restarts="))
        .expect("restarts field");
    field.parse().expect("a number")
}

#[test]
fn a_batch_through_several_wedges_records_every_request_once_and_successfully() {
    let job = Job::new("wedges");
    let input = job.input("in.jsonl", 120, None);
    let output = job.path("out.jsonl");
    let (code, log) = run(job.batch(
        &input,
        &output,
        &["--concurrency", "8"],
        &["--wedge-after", "30,80"],
    ));
    assert_eq!(code, 0, "{log}");
    let by_id = assert_each_id_once(&output, 120);
    assert!(by_id.values().all(succeeded), "every request succeeded");
    let record = &by_id["request-7"];
    assert_eq!(record["response"]["body"]["object"], "chat.completion");
    assert!(record["response"]["request_id"]
        .as_str()
        .is_some_and(|id| id.starts_with("req_")));
    assert!(
        summary_restarts(&log) >= 2,
        "both wedges fired and were restarted:\n{log}"
    );
}

#[test]
fn a_sigkilled_run_is_resumed_and_every_request_is_recorded_exactly_once() {
    let job = Job::new("sigkill");
    let count = 300;
    let input = job.input("in.jsonl", count, None);
    let output = job.path("out.jsonl");
    let mock = ["--wedge-after", "20,150", "--token-latency", "10ms"];
    let mut first = Running::start(job.batch(&input, &output, &["--concurrency", "4"], &mock));
    let clock = Clock::new();
    loop {
        let written = std::fs::read(&output)
            .map(|t| t.iter().filter(|&&b| b == b'\n').count())
            .unwrap_or(0);
        if written >= 40 {
            break;
        }
        assert!(
            first.child.try_wait().expect("wait").is_none(),
            "the first run ended early:\n{}",
            first.drain()
        );
        assert!(
            clock.now() < Duration::from_secs(120),
            "no progress:\n{}",
            first.drain()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    first.child.kill().expect("SIGKILL respawn batch");
    first.child.wait().expect("reap");
    let partial = std::fs::read(&output)
        .expect("read")
        .iter()
        .filter(|&&b| b == b'\n')
        .count();
    assert!(
        partial < count,
        "killed part way ({partial} of {count} recorded)"
    );

    // Killing respawn takes its server's whole process group with it.
    let clock = Clock::new();
    while !job.processes().is_empty() {
        assert!(
            clock.now() < Duration::from_secs(15),
            "the server outlived the SIGKILLed respawn: {:?}",
            job.processes()
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let (code, log) = run(job.batch(&input, &output, &["--concurrency", "4"], &mock));
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("resuming"), "the rerun resumed:\n{log}");
    let by_id = assert_each_id_once(&output, count);
    assert!(by_id.values().all(succeeded));
}

#[test]
fn duplicate_ids_are_refused_before_anything_is_sent() {
    let job = Job::new("duplicates");
    let input = job.path("in.jsonl");
    let line = |id: &str| {
        format!(
            r#"{{"custom_id":"{id}","method":"POST","url":"/v1/chat/completions","body":{{"model":"m"}}}}"#
        )
    };
    std::fs::write(
        &input,
        [line("a"), line("dup"), line("b"), line("c"), line("dup")].join("\n"),
    )
    .expect("write");
    let output = job.path("out.jsonl");
    let mut cmd = job.batch(&input, &output, &[], &[]);
    cmd.args(["--", "/nonexistent/model-server"]);
    let out = run_quick(cmd);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("`dup`") && stderr.contains("lines 2, 5"),
        "names the id and its lines: {stderr}"
    );
    assert!(!output.exists(), "nothing was written");
    assert!(
        !stderr.contains("spawned"),
        "no server was started: {stderr}"
    );
}

#[test]
fn malformed_lines_and_non_post_urls_are_named_by_line() {
    let job = Job::new("malformed");
    let output = job.path("out.jsonl");
    let good = r#"{"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":{}}"#;
    let cases = [
        ("{not json", "input line 2"),
        (
            r#"{"custom_id":"b","method":"GET","url":"/v1/models","body":{}}"#,
            "input line 2: method `GET`",
        ),
        (
            r#"{"custom_id":"b","method":"POST","url":"http://elsewhere/v1","body":{}}"#,
            "not a POST path",
        ),
    ];
    for (bad, expected) in cases {
        let input = job.path("in.jsonl");
        std::fs::write(&input, format!("{good}\n{bad}\n")).expect("write");
        let mut cmd = job.batch(&input, &output, &[], &[]);
        cmd.args(["--", "/nonexistent/model-server"]);
        let out = run_quick(cmd);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bad}: {stderr}");
        assert!(
            stderr.contains(expected),
            "{bad}: expected {expected:?} in {stderr}"
        );
    }
    let mut cmd = job.batch(&job.path("missing.jsonl"), &output, &[], &[]);
    cmd.args(["--", "/nonexistent/model-server"]);
    let out = run_quick(cmd);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read the input file"));
}

#[test]
fn an_output_that_cannot_be_written_is_a_clear_error() {
    let job = Job::new("unwritable");
    let input = job.input("in.jsonl", 3, None);
    let mut cmd = job.batch(&input, &job.path("no-such-dir/out.jsonl"), &[], &[]);
    cmd.args(["--", "/nonexistent/model-server"]);
    let out = run_quick(cmd);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("cannot open the output file"), "{stderr}");
}

#[test]
fn a_torn_final_line_is_repaired_and_its_request_sent_again() {
    let job = Job::new("torn");
    let input = job.input("in.jsonl", 20, None);
    let output = job.path("out.jsonl");
    let (code, log) = run(job.batch(&input, &output, &[], &["--tokens", "4"]));
    assert_eq!(code, 0, "{log}");
    assert_each_id_once(&output, 20);

    // A crash in the middle of the last write: cut the last line short.
    let text = std::fs::read_to_string(&output).expect("read");
    let last_start = text.trim_end_matches('\n').rfind('\n').map_or(0, |i| i + 1);
    let torn_id = serde_json::from_str::<Value>(&text[last_start..text.len() - 1]).expect("json")
        ["custom_id"]
        .as_str()
        .expect("id")
        .to_owned();
    std::fs::write(&output, &text[..last_start + 40]).expect("tear the last line");

    let (code, log) = run(job.batch(&input, &output, &[], &["--tokens", "4"]));
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("repaired the output file"), "{log}");
    let by_id = assert_each_id_once(&output, 20);
    assert!(by_id.values().all(succeeded));
    let after = std::fs::read_to_string(&output).expect("read");
    let redone = after
        .lines()
        .last()
        .map(|l| serde_json::from_str::<Value>(l).expect("json"));
    assert_eq!(
        redone.map(|r| r["custom_id"].clone()),
        Some(Value::String(torn_id)),
        "the torn request was the one sent again"
    );

    // Everything is recorded now: a rerun sends nothing and starts no server.
    let mut cmd = job.batch(&input, &output, &[], &[]);
    cmd.args(["--", "/nonexistent/model-server"]);
    let out = run_quick(cmd);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(&output).expect("read"),
        after,
        "nothing was appended"
    );
}

#[test]
fn a_quarantined_request_is_an_error_line_and_the_run_goes_on() {
    let job = Job::new("poison");
    let input = job.input("in.jsonl", 8, Some(3));
    let output = job.path("out.jsonl");
    let (code, log) = run(job.batch(
        &input,
        &output,
        &["--concurrency", "1"],
        &["--wedge-on", "POISON"],
    ));
    assert_eq!(code, 1, "a request failed for good:\n{log}");
    let by_id = assert_each_id_once(&output, 8);
    let poisoned = &by_id["request-3"];
    assert!(poisoned["response"].is_null(), "{poisoned}");
    assert_eq!(poisoned["error"]["code"], "quarantined");
    assert!(
        by_id
            .iter()
            .filter(|(id, _)| *id != "request-3")
            .all(|(_, r)| succeeded(r)),
        "the others succeeded"
    );

    // --retry-failed sends it again (to a server that no longer wedges on it), once.
    let (code, log) = run(job.batch(&input, &output, &["--retry-failed"], &["--tokens", "4"]));
    assert_eq!(code, 0, "{log}");
    let by_id = assert_each_id_once(&output, 8);
    assert!(by_id.values().all(succeeded));
}

#[test]
fn url_mode_drives_a_running_server() {
    let job = Job::new("url");
    let mut mock = Command::new(RESPAWN);
    mock.args(["mock", "--port", "0", "--workers", "1", "--state-file"])
        .arg(job.path("mock-state.json"))
        .env_remove("PORT")
        .env("RESPAWN_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut server = Running::start(mock);
    let clock = Clock::new();
    let addr = loop {
        let line = server
            .log
            .recv_timeout(Duration::from_secs(30))
            .expect("the mock logs its address");
        if let Some(rest) = line.split("listening on http://").nth(1) {
            break rest.trim().to_owned();
        }
        assert!(
            clock.now() < Duration::from_secs(30),
            "the mock did not start"
        );
    };
    let input = job.input("in.jsonl", 10, None);
    let output = job.path("out.jsonl");
    let url = format!("http://{addr}");
    let (code, log) = run(job.batch(&input, &output, &["--url", &url], &[]));
    assert_eq!(code, 0, "{log}");
    let by_id = assert_each_id_once(&output, 10);
    assert!(by_id.values().all(succeeded));
    assert!(
        server.child.try_wait().expect("wait").is_none(),
        "a server respawn does not own is left running"
    );
}
