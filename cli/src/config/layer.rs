//! One source of configuration — the TOML file, the environment or the flags — as a set of
//! optional values, so that the sources can be stacked: a value a source does not give leaves
//! the one below it in place.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use super::value::serde_with;
use super::{Containment, GpuRelease, HangStop, LogFormat, ProgressMetric, Resume, ServeConfig};
use respawn::auth::AdminToken;

/// The keys a config file may hold, in the order of `docs/CONFIG.md`.
///
/// Kept next to [`Layer`] so a test can check that every key here is accepted by the file reader
/// and every field there is listed here (the "did you mean" suggestions come from this list).
pub const KEYS: &[&str] = &[
    "name",
    "listen",
    "port",
    "command",
    "shell",
    "upstream",
    "health_path",
    "health_interval",
    "health_timeout",
    "unhealthy_after",
    "request_timeout",
    "stall_timeout",
    "max_request_time",
    "canary_interval",
    "canary_timeout",
    "canary_body",
    "progress_metric",
    "progress_timeout",
    "startup_timeout",
    "stop_grace",
    "hang_stop",
    "max_restarts",
    "restart_window",
    "stable_after",
    "retries",
    "poison_after",
    "quarantine_ttl",
    "resume",
    "resume_limit",
    "enable_restart",
    "admin_token",
    "restart_strategies",
    "restart_url",
    "restart_token",
    "restart_command",
    "release_check",
    "gpu_release",
    "release_timeout",
    "containment",
    "pass_secrets",
    "max_body_size",
    "max_waiting",
    "max_waiting_bytes",
    "max_wait_time",
    "header_timeout",
    "workers",
    "log_format",
    "replicas",
    "start_stagger",
    "min_ready",
];

/// The values one source gives; `None` means "this source says nothing about it".
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Layer {
    pub name: Option<String>,
    #[serde(default, deserialize_with = "serde_with::listen")]
    pub listen: Option<SocketAddr>,
    pub port: Option<u16>,
    #[serde(default, deserialize_with = "serde_with::argv")]
    pub command: Option<Vec<String>>,
    pub shell: Option<bool>,
    pub upstream: Option<String>,
    pub health_path: Option<String>,
    #[serde(default, deserialize_with = "serde_with::duration")]
    pub health_interval: Option<Duration>,
    #[serde(default, deserialize_with = "serde_with::duration")]
    pub health_timeout: Option<Duration>,
    pub unhealthy_after: Option<u32>,
    #[serde(default, deserialize_with = "serde_with::duration")]
    pub request_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "serde_with::duration")]
    pub stall_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "serde_with::duration")]
    pub max_request_time: Option<Duration>,
    #[serde(default, deserialize_with = "serde_with::duration")]
    pub canary_interval: Option<Duration>,
    #[serde(default, deserialize_with = "serde_with::duration")]
    pub canary_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "serde_with::json")]
    pub canary_body: Option<serde_json::Value>,
    pub progress_metric: Option<ProgressMetric>,
    #[serde(default, deserialize_with = "serde_with::duration")]
    pub progress_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "serde_with::duration")]
    pub startup_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "serde_with::duration")]
    pub stop_grace: Option<Duration>,
    pub hang_stop: Option<HangStop>,
    pub max_restarts: Option<u32>,
    #[serde(default, deserialize_with = "serde_with::duration")]
    pub restart_window: Option<Duration>,
    #[serde(default, deserialize_with = "serde_with::duration")]
    pub stable_after: Option<Duration>,
    pub retries: Option<u32>,
    pub poison_after: Option<u32>,
    #[serde(default, deserialize_with = "serde_with::duration")]
    pub quarantine_ttl: Option<Duration>,
    pub resume: Option<Resume>,
    pub resume_limit: Option<u32>,
    pub enable_restart: Option<bool>,
    pub admin_token: Option<AdminToken>,
    #[serde(default, deserialize_with = "serde_with::names")]
    pub restart_strategies: Option<Vec<String>>,
    pub restart_url: Option<String>,
    pub restart_token: Option<AdminToken>,
    #[serde(default, deserialize_with = "serde_with::argv")]
    pub restart_command: Option<Vec<String>>,
    #[serde(default, deserialize_with = "serde_with::argv")]
    pub release_check: Option<Vec<String>>,
    pub gpu_release: Option<GpuRelease>,
    #[serde(default, deserialize_with = "serde_with::duration")]
    pub release_timeout: Option<Duration>,
    pub containment: Option<Containment>,
    pub pass_secrets: Option<bool>,
    #[serde(default, deserialize_with = "serde_with::size")]
    pub max_body_size: Option<u64>,
    pub max_waiting: Option<usize>,
    #[serde(default, deserialize_with = "serde_with::size")]
    pub max_waiting_bytes: Option<u64>,
    #[serde(default, deserialize_with = "serde_with::duration")]
    pub max_wait_time: Option<Duration>,
    #[serde(default, deserialize_with = "serde_with::duration")]
    pub header_timeout: Option<Duration>,
    pub workers: Option<usize>,
    pub log_format: Option<LogFormat>,
    pub replicas: Option<usize>,
    #[serde(default, deserialize_with = "serde_with::duration")]
    pub start_stagger: Option<Duration>,
    pub min_ready: Option<usize>,
}

/// Moves every value `layer` gives into `config`, leaving the others as they were.
macro_rules! overlay {
    ($config:ident, $layer:ident; $($plain:ident),* ; $($optional:ident),*) => {
        $( if let Some(value) = $layer.$plain { $config.$plain = value; } )*
        $( if let Some(value) = $layer.$optional { $config.$optional = Some(value); } )*
    };
}

impl Layer {
    /// Puts this layer on top of `config`.
    pub fn apply_to(self, config: &mut ServeConfig) {
        let layer = self;
        overlay!(config, layer;
            name, listen, command, shell, health_path, health_interval, health_timeout,
            unhealthy_after, request_timeout, stall_timeout, max_request_time, canary_interval,
            canary_timeout,
            progress_metric, progress_timeout, startup_timeout, stop_grace, hang_stop, max_restarts,
            restart_window, stable_after, retries, poison_after, quarantine_ttl, resume, resume_limit, enable_restart, max_body_size, header_timeout,
            workers, log_format, gpu_release, release_timeout, containment, pass_secrets,
            replicas, start_stagger, min_ready, max_waiting, max_waiting_bytes;
            port, upstream, canary_body, admin_token, restart_strategies, restart_url, restart_token,
            restart_command, release_check, max_wait_time
        );
    }
}
