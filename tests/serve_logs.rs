//! respawn's own logs and what it reads from its environment: with `--log-format json` every line
//! is one JSON object from the first to the last (a usage error, a configuration error and the
//! final "gave up" included), each field keeps one JSON type across all lines, and a misspelled
//! `RESPAWN_*` variable is warned about with the one it most likely meant.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::Value;
use support::{bin, Respawn};

const FAST: [&str; 10] = [
    "--health-interval",
    "200ms",
    "--health-timeout",
    "200ms",
    "--unhealthy-after",
    "3",
    "--stop-grace",
    "1s",
    "--canary-interval",
    "0",
];

fn args(extra: &[&'static str]) -> Vec<&'static str> {
    let mut args = vec!["--log-format", "json"];
    args.extend_from_slice(&FAST);
    args.extend_from_slice(extra);
    args
}

/// Every line of `log` parsed as JSON; panics naming the first line that is not.
fn json_lines(log: &str) -> Vec<Value> {
    log.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|err| panic!("not a JSON line ({err}): {line}\nlog:\n{log}"))
        })
        .collect()
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Each field name of the lines' `fields` with every JSON type it was seen with.
fn field_types(lines: &[Value]) -> BTreeMap<String, BTreeMap<&'static str, String>> {
    let mut types: BTreeMap<String, BTreeMap<&'static str, String>> = BTreeMap::new();
    for line in lines {
        if let Some(fields) = line["fields"].as_object() {
            for (name, value) in fields {
                types
                    .entry(name.clone())
                    .or_default()
                    .entry(kind(value))
                    .or_insert_with(|| line.to_string());
            }
        }
    }
    types
}

#[test]
fn json_logs_are_json_from_the_first_line_to_the_last_with_one_type_per_field() {
    let mut lines = Vec::new();

    // A life: start, requests, a hang (SIGSTOP) and its restart, a SIGHUP restart, SIGTERM.
    let mut run = Respawn::serve_ready(
        &args(&[]),
        &[bin(), "mock", "--port", "{port}"],
        &[("RESPAWN_HELTH_PATH", "/health")],
    );
    let reply =
        support::chat(run.addr(), "hello", 4, false, Duration::from_secs(30)).expect("a request");
    assert_eq!(reply.status, 200);
    let server = run.server().expect("the model server");
    support::signal(server, Signal::SIGSTOP);
    run.wait_status(Duration::from_secs(30), "restarted after the hang", |s| {
        s["generation"] == 2 && s["state"] == "ready"
    });
    run.signal(Signal::SIGHUP);
    run.wait_status(Duration::from_secs(30), "restarted on SIGHUP", |s| {
        s["generation"] == 3 && s["state"] == "ready"
    });
    run.signal(Signal::SIGTERM);
    assert_eq!(
        run.exit_code(Duration::from_secs(30)),
        0,
        "{}",
        run.log_text()
    );
    lines.extend(json_lines(&run.log_text()));

    // A child that cannot start: respawn gives up, and its last line is JSON too.
    let mut failing = Respawn::serve(
        &args(&["--max-restarts", "1", "--startup-timeout", "5s"]),
        &["sh", "-c", "exit 1"],
        &[],
    );
    assert_eq!(failing.exit_code(Duration::from_secs(60)), 3);
    let last = json_lines(&failing.log_text());
    let final_line = last.last().expect("a line").clone();
    assert_eq!(final_line["level"], "ERROR", "{final_line}");
    assert!(
        final_line["fields"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("gave up: ")),
        "{final_line}"
    );
    lines.extend(last);

    let types = field_types(&lines);
    let mixed: Vec<_> = types.iter().filter(|(_, kinds)| kinds.len() > 1).collect();
    assert!(
        mixed.is_empty(),
        "fields with more than one type: {mixed:#?}"
    );
    assert_eq!(
        types
            .get("generation")
            .map(|k| k.keys().copied().collect::<Vec<_>>()),
        Some(vec!["number"]),
        "generation is a number"
    );
    for field in ["hung", "next", "pid"] {
        assert!(types.contains_key(field), "the life logged `{field}`");
    }

    // The misspelled variable was warned about, with the one it meant.
    let warning = lines
        .iter()
        .find(|l| l["fields"]["variable"] == "RESPAWN_HELTH_PATH")
        .unwrap_or_else(|| panic!("no warning about RESPAWN_HELTH_PATH"));
    assert_eq!(warning["level"], "WARN");
    assert_eq!(warning["fields"]["did_you_mean"], "RESPAWN_HEALTH_PATH");
}

#[test]
fn usage_and_configuration_errors_are_json_lines_too() {
    for (args, env) in [
        (
            vec!["serve", "--log-format", "json", "--no-such-flag"],
            vec![],
        ),
        (
            vec![
                "serve",
                "--log-format",
                "json",
                "--health-interval",
                "10 parsecs",
                "--",
                "x",
            ],
            vec![],
        ),
        (
            vec!["serve", "--", "x"],
            vec![("RESPAWN_LOG_FORMAT", "json"), ("RESPAWN_RETRIES", "three")],
        ),
    ] {
        let mut run = Respawn::run(&args, &env);
        assert_eq!(run.exit_code(Duration::from_secs(30)), 2, "{args:?}");
        let lines = json_lines(&run.log_text());
        assert_eq!(lines.len(), 1, "{args:?}: {lines:?}");
        assert_eq!(lines[0]["level"], "ERROR", "{}", lines[0]);
    }
}

#[test]
fn unknown_variables_are_warned_about_in_text_logs() {
    let run = Respawn::serve_ready(
        &FAST,
        &[bin(), "mock", "--port", "{port}"],
        &[("RESPAWN_STALL_TIMOUT", "10s"), ("RESPAWN_ZZZ", "1")],
    );
    let log = run.log_text();
    assert!(
        log.contains(
            "unknown environment variable `RESPAWN_STALL_TIMOUT` is ignored; did you mean `RESPAWN_STALL_TIMEOUT`?"
        ),
        "{log}"
    );
    assert!(
        log.contains("unknown environment variable `RESPAWN_ZZZ` is ignored"),
        "{log}"
    );
}
