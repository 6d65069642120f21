//! `respawn demo` end to end: the real executable, a real simulated server that wedges, respawn's
//! proxy in between; the JSON report and the table a pipe receives.

use std::io::Read;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::Duration;

use respawn::clock::Clock;

/// Far above what a small demo needs (about 10 s): proves "it finished", not how fast.
const BOUND: Duration = Duration::from_secs(180);

/// The demo process, killed if the test ends before it does.
struct Demo {
    child: Child,
    stdout: Option<JoinHandle<String>>,
    stderr: Option<JoinHandle<String>>,
}

impl Drop for Demo {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn reader(mut stream: impl Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stream.read_to_string(&mut text);
        text
    })
}

/// Runs `respawn demo ARGS` with stdout and stderr on pipes; answers its exit status, stdout and
/// stderr.
fn demo(args: &[&str]) -> (ExitStatus, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_respawn"))
        .arg("demo")
        .args(args)
        .env_remove("RESPAWN_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn respawn demo");
    let stdout = child.stdout.take().map(reader);
    let stderr = child.stderr.take().map(reader);
    let mut demo = Demo {
        child,
        stdout,
        stderr,
    };
    // Running time: a pause of the machine does not count (respawn::clock).
    let clock = Clock::new();
    let status = loop {
        if let Some(status) = demo.child.try_wait().expect("wait for respawn demo") {
            break status;
        }
        assert!(
            clock.now() < BOUND,
            "respawn demo {args:?} did not finish within {BOUND:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = demo
        .stdout
        .take()
        .map(|h| h.join().unwrap())
        .unwrap_or_default();
    let err = demo
        .stderr
        .take()
        .map(|h| h.join().unwrap())
        .unwrap_or_default();
    (status, out, err)
}

#[test]
fn json_run_answers_every_sample_with_one_restart_per_wedge() {
    let (status, out, err) = demo(&["--requests", "200", "--concurrency", "8", "--json"]);
    assert!(
        status.success(),
        "exit {status}\nstdout:\n{out}\nstderr:\n{err}"
    );
    let line = out.trim();
    assert_eq!(line.lines().count(), 1, "one JSON object on stdout: {out}");
    let report: serde_json::Value = serde_json::from_str(line).expect("stdout is JSON");
    let object = report.as_object().expect("a JSON object");
    let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "failed",
            "no_restart_estimate_s",
            "recovery_ms_max",
            "recovery_ms_median",
            "requests",
            "restarts",
            "succeeded",
            "wall_s",
            "wedges"
        ],
        "{report}"
    );
    let count = |key: &str| {
        report[key]
            .as_u64()
            .unwrap_or_else(|| panic!("{key}: {report}"))
    };
    assert_eq!(count("requests"), 200, "{report}");
    assert_eq!(count("succeeded"), 200, "{report}");
    assert_eq!(count("failed"), 0, "{report}");
    assert_eq!(
        count("wedges"),
        2,
        "the story scaled to 200 samples wedges twice: {report}"
    );
    assert_eq!(count("restarts"), count("wedges"), "{report}");
    let median = count("recovery_ms_median");
    let max = count("recovery_ms_max");
    assert!(median <= max, "{report}");
    let wall = report["wall_s"].as_f64().expect("wall_s");
    assert!(wall > 0.0, "{report}");
    let estimate = report["no_restart_estimate_s"]
        .as_f64()
        .expect("no_restart_estimate_s");
    // 120 stuck samples, 8 at a time, 4 tries of 60 s each: at least 15 × 240 s.
    assert!(estimate >= 3600.0, "{report}");
}

#[test]
fn a_pipe_gets_the_table_and_no_terminal_escapes() {
    let (status, out, err) = demo(&["--requests", "60", "--concurrency", "4"]);
    assert!(
        status.success(),
        "exit {status}\nstdout:\n{out}\nstderr:\n{err}"
    );
    for row in [
        "with respawn",
        "the original design's way, no restart",
        "requests",
        "succeeded",
        "failed",
        "wedges",
        "restarts",
        "recovery (median)",
        "recovery (max)",
        "wall time",
        "× 60 s timeout × 4 tries",
    ] {
        assert!(out.contains(row), "missing {row:?} in the table:\n{out}");
    }
    let succeeded = out
        .lines()
        .find(|l| l.starts_with("succeeded"))
        .and_then(|l| l.split_whitespace().nth(1))
        .expect("a succeeded row");
    assert_eq!(succeeded, "60", "{out}");
    assert!(
        err.contains("progress: 60/60 samples"),
        "plain progress lines on a pipe:\n{err}"
    );
    for (name, text) in [("stdout", &out), ("stderr", &err)] {
        assert!(
            !text.contains('\u{1b}'),
            "escape sequence on {name}:\n{text}"
        );
        assert!(!text.contains('\r'), "carriage return on {name}:\n{text}");
    }
}

#[test]
fn zero_requests_is_refused_by_the_parser() {
    let (status, _out, err) = demo(&["--requests", "0"]);
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains("--requests"), "{err}");
}
