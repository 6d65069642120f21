//! The status document of `GET /respawn/status`: one type, written by the server and read back
//! by `respawn status`, so that both ends agree on every field's name and type by construction.
//!
//! ```json
//! {"server": "llm", "state": "ready", "generation": 3, "pid": 4242, "restarts": 2,
//!  "last_restart": {"cause": "health_probes", "duration_ms": 1800, "at": 1700000000},
//!  "last_cause": "health_probes", "last_error": null, "uptime_s": 61,
//!  "in_flight": 0, "requests_total": 120}
//! ```
//!
//! # Adding a field
//! The fields above are the first version's and every instance sends them. A field added later
//! is an `Option` (or has a default) marked `#[serde(default, skip_serializing_if = ...)]`: a
//! newer `respawn status` then still reads an older instance, and an older one ignores the
//! field, since unknown fields are skipped when reading.

use respawn_core::{Generation, HangCause, Phase};
use serde::{Deserialize, Serialize};

use crate::state::{LastRestart, SupervisorState};

/// What `GET /respawn/status` answers: the supervised server's phase, generation and restart
/// history, and the traffic respawn is carrying.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusDocument {
    /// The server's name (`--name`).
    pub server: String,
    /// What the supervisor is doing (`starting`, `ready`, `restarting`, `backing_off`,
    /// `failed`, `stopping`, `stopped`).
    pub state: Phase,
    /// The generation that is (or is becoming) current: 0 before the first start.
    pub generation: Generation,
    /// The PID of the model server itself (the process to signal); `null` while none runs.
    pub pid: Option<u32>,
    /// The PID of the guardian that leads the server's process group, when respawn owns it.
    #[serde(default)]
    pub guardian_pid: Option<u32>,
    /// How the owned server's processes are contained (`cgroup` or `guardian`); `null` for a
    /// server respawn does not own.
    #[serde(default)]
    pub containment: Option<String>,
    /// Restarts so far.
    pub restarts: u64,
    /// The last completed restart: its cause, how long until ready again, and when.
    pub last_restart: Option<LastRestart>,
    /// The cause of the last hang that was acted upon.
    pub last_cause: Option<HangCause>,
    /// The last error: a failed restart strategy, or why respawn gave up.
    pub last_error: Option<String>,
    /// Seconds the current generation has been ready; `null` unless it is ready.
    pub uptime_s: Option<u64>,
    /// Requests being proxied now.
    pub in_flight: u64,
    /// Requests received since respawn started.
    pub requests_total: u64,
    /// The request fingerprints under quarantine now (never the prompt text).
    #[serde(default)]
    pub quarantined: Vec<QuarantinedFingerprint>,
    /// The fingerprint of the suspect request being tried alone now (its trial: a hang before it
    /// ends convicts it); absent when no trial runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_trial: Option<String>,
    /// A pool's replicas, ordered by index (absent for a lone server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<Vec<ReplicaStatus>>,
    /// How many of a pool's replicas are ready (absent for a lone server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<u32>,
}

/// One replica of a pool, as `/respawn/status` lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaStatus {
    /// Its index, 0..N-1 (`{replica}` and `RESPAWN_REPLICA` in its command).
    pub replica: u32,
    /// What its supervisor is doing.
    pub state: Phase,
    /// Its own generation.
    pub generation: Generation,
    /// The PID of its model server; `null` while none runs.
    pub pid: Option<u32>,
    /// The port its model server listens on (`null` for a server respawn does not own).
    pub port: Option<u16>,
    /// Its restarts so far.
    pub restarts: u64,
    /// Requests open on it now.
    pub in_flight: u64,
    /// Its last completed restart.
    pub last_restart: Option<LastRestart>,
}

/// One quarantined request fingerprint, as `/respawn/status` lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuarantinedFingerprint {
    /// The fingerprint of method, path and body, as 16 hex digits.
    pub fingerprint: String,
    /// When it was convicted (Unix seconds).
    pub since: u64,
    /// The hangs it was present at.
    pub hangs: u32,
    /// When the quarantine ends (Unix seconds).
    pub expires: u64,
}

impl StatusDocument {
    /// The document for the server `name` in `state`, with the current traffic figures.
    pub fn new(name: &str, state: &SupervisorState, in_flight: usize, requests_total: u64) -> Self {
        Self {
            server: name.to_owned(),
            state: state.phase,
            generation: state.generation,
            pid: state.pid,
            guardian_pid: state.guardian_pid,
            containment: None,
            restarts: state.restarts,
            last_restart: state.last_restart.clone(),
            last_cause: state.last_cause,
            last_error: state.last_error.clone(),
            uptime_s: state.uptime_s(),
            in_flight: u64::try_from(in_flight).unwrap_or(u64::MAX),
            requests_total,
            quarantined: Vec::new(),
            on_trial: None,
            replicas: None,
            ready_replicas: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_has_the_documented_shape_and_reads_back() {
        let mut state = SupervisorState::initial();
        state.generation = Generation(3);
        state.phase = Phase::Restarting;
        state.pid = Some(4242);
        state.guardian_pid = Some(4241);
        state.restarts = 2;
        state.last_cause = Some(HangCause::HealthProbes);
        state.last_restart = Some(LastRestart {
            cause: HangCause::FirstByteTimeout,
            duration_ms: 1800,
            at: 1_700_000_000,
        });
        let document = StatusDocument::new("llm", &state, 1, 120);
        let json = serde_json::to_value(&document).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "server": "llm", "state": "restarting", "generation": 3, "pid": 4242,
                "guardian_pid": 4241, "containment": null, "restarts": 2, "last_cause": "health_probes", "last_error": null,
                "last_restart": {"cause": "first_byte_timeout", "duration_ms": 1800, "at": 1_700_000_000u64},
                "uptime_s": null, "in_flight": 1, "requests_total": 120, "quarantined": [],
            })
        );
        let back: StatusDocument = serde_json::from_value(json).unwrap();
        assert_eq!(back, document);
    }

    #[test]
    fn unknown_fields_from_a_newer_instance_are_ignored() {
        let text = r#"{"server":"s","state":"ready","generation":1,"pid":7,"restarts":0,
            "last_restart":null,"last_cause":null,"last_error":null,"uptime_s":5,
            "in_flight":0,"requests_total":1,"added_later":{"x":1}}"#;
        let document: StatusDocument = serde_json::from_str(text).unwrap();
        assert_eq!((document.state, document.uptime_s), (Phase::Ready, Some(5)));
    }
}
