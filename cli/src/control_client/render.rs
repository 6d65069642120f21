//! The status document as an aligned table for people: what the supervisor is doing first, then
//! the traffic and the server's name.

use std::fmt::Write as _;
use std::time::{Duration, UNIX_EPOCH};

use respawn::state::LastRestart;
use respawn::status::{ReplicaStatus, StatusDocument};

/// One `label  value` line per field, the labels padded to one width.
pub(super) fn status_table(status: &StatusDocument) -> String {
    let rows: Vec<(&str, String)> = vec![
        ("state", status.state.as_str().to_owned()),
        ("generation", status.generation.get().to_string()),
        ("pid", optional(status.pid)),
        ("restarts", status.restarts.to_string()),
        (
            "last restart",
            status
                .last_restart
                .as_ref()
                .map_or_else(|| "-".to_owned(), last_restart),
        ),
        (
            "uptime",
            status.uptime_s.map_or_else(
                || "-".to_owned(),
                |s| humantime::format_duration(Duration::from_secs(s)).to_string(),
            ),
        ),
        ("in flight", status.in_flight.to_string()),
        (
            "last cause",
            optional(status.last_cause.map(|c| c.as_str())),
        ),
        ("last error", optional(status.last_error.as_deref())),
        ("requests total", status.requests_total.to_string()),
        ("server", status.server.clone()),
    ];
    let width = rows
        .iter()
        .map(|(label, _)| label.chars().count())
        .max()
        .unwrap_or(0);
    let mut rows = rows;
    if let (Some(ready), Some(replicas)) = (status.ready_replicas, &status.replicas) {
        rows.insert(
            1,
            ("ready replicas", format!("{ready} of {}", replicas.len())),
        );
    }
    let width = width.max("ready replicas".len());
    let mut out = String::new();
    for (label, value) in rows {
        let _ = writeln!(out, "{label:<width$}  {value}");
    }
    if let Some(replicas) = &status.replicas {
        out.push('\n');
        out.push_str(&replica_table(replicas));
    }
    out.trim_end().to_owned()
}

/// One row per replica of a pool: index, state, generation, pid, port, restarts, in flight.
fn replica_table(replicas: &[ReplicaStatus]) -> String {
    let header = [
        "replica",
        "state",
        "generation",
        "pid",
        "port",
        "restarts",
        "in flight",
    ];
    let rows: Vec<[String; 7]> = replicas
        .iter()
        .map(|r| {
            [
                r.replica.to_string(),
                r.state.as_str().to_owned(),
                r.generation.get().to_string(),
                optional(r.pid),
                optional(r.port),
                r.restarts.to_string(),
                r.in_flight.to_string(),
            ]
        })
        .collect();
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            rows.iter()
                .map(|row| row[i].len())
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    let line = |cells: Vec<&str>, out: &mut String| {
        let cells: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        let _ = writeln!(out, "{}", cells.join("  ").trim_end());
    };
    line(header.to_vec(), &mut out);
    for row in &rows {
        line(row.iter().map(String::as_str).collect(), &mut out);
    }
    out
}

/// `health_probes, ready again after 1s 800ms, at 2025-01-01T00:00:00Z`.
fn last_restart(restart: &LastRestart) -> String {
    let at = UNIX_EPOCH
        .checked_add(Duration::from_secs(restart.at))
        .unwrap_or(UNIX_EPOCH);
    format!(
        "{}, ready again after {}, at {}",
        restart.cause.as_str(),
        humantime::format_duration(Duration::from_millis(restart.duration_ms)),
        humantime::format_rfc3339_seconds(at)
    )
}

/// A value, or `-` when there is none.
fn optional(value: Option<impl ToString>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

#[cfg(test)]
mod tests {
    use respawn::core::{Generation, HangCause, Phase};

    use super::*;

    fn document() -> StatusDocument {
        StatusDocument {
            server: "llm".to_owned(),
            state: Phase::Ready,
            generation: Generation(3),
            pid: Some(42),
            guardian_pid: Some(41),
            containment: Some("guardian".to_owned()),
            restarts: 2,
            last_restart: Some(LastRestart {
                cause: HangCause::HealthProbes,
                duration_ms: 1800,
                at: 0,
            }),
            last_cause: Some(HangCause::HealthProbes),
            last_error: None,
            uptime_s: Some(3725),
            in_flight: 0,
            requests_total: 9,
            quarantined: Vec::new(),
            on_trial: None,
            replicas: None,
            ready_replicas: None,
        }
    }

    #[test]
    fn a_pool_prints_a_row_per_replica() {
        let mut pool = document();
        pool.pid = None;
        pool.ready_replicas = Some(1);
        pool.replicas = Some(vec![
            ReplicaStatus {
                replica: 0,
                state: Phase::Ready,
                generation: Generation(2),
                pid: Some(42),
                port: Some(8001),
                restarts: 1,
                in_flight: 3,
                last_restart: None,
            },
            ReplicaStatus {
                replica: 1,
                state: Phase::Restarting,
                generation: Generation(1),
                pid: None,
                port: Some(8002),
                restarts: 1,
                in_flight: 0,
                last_restart: None,
            },
        ]);
        let table = status_table(&pool);
        let lines: Vec<&str> = table.lines().collect();
        let header = lines
            .iter()
            .position(|l| l.starts_with("replica"))
            .expect("a replica header");
        assert!(lines[header + 1]
            .split_whitespace()
            .eq(["0", "ready", "2", "42", "8001", "1", "3"]));
        assert!(lines[header + 2].split_whitespace().eq([
            "1",
            "restarting",
            "1",
            "-",
            "8002",
            "1",
            "0"
        ]));
        assert!(table.contains("ready replicas  1 of 2"));
    }

    #[test]
    fn the_supervisor_comes_first_and_the_server_name_last() {
        let table = status_table(&document());
        let lines: Vec<&str> = table.lines().collect();
        assert!(
            lines[0].starts_with("state") && lines[0].ends_with("ready"),
            "{table}"
        );
        assert!(table.contains("uptime          1h 2m 5s"), "{table}");
        assert!(
            table.contains("health_probes, ready again after 1s 800ms, at 1970-01-01T00:00:00Z"),
            "{table}"
        );
        assert!(table.contains("last error      -"), "{table}");
        assert!(
            lines.last().is_some_and(|l| l.starts_with("server")),
            "{table}"
        );
    }

    #[test]
    fn a_server_that_is_not_ready_shows_dashes() {
        let mut status = document();
        status.state = Phase::Restarting;
        status.pid = None;
        status.uptime_s = None;
        status.last_restart = None;
        let table = status_table(&status);
        for row in [
            "pid             -",
            "uptime          -",
            "last restart    -",
        ] {
            assert!(table.contains(row), "missing {row:?} in:\n{table}");
        }
    }
}
