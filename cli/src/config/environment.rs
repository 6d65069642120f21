//! The environment as a configuration source: `RESPAWN_<KEY>` for every key, plus the two
//! variables of the original design (`SERVER_RESTART_WAIT_TIME`, `ENABLE_SERVER_RESTART`).
//!
//! The environment is read through an injected lookup function, never `std::env` directly, so
//! tests describe an environment instead of mutating the process's own.

use std::str::FromStr;

use super::error::ConfigError;
use super::file::closest;
use super::layer::{Layer, KEYS};
use super::value::{
    parse_argv, parse_bool, parse_duration, parse_json, parse_listen, parse_names, parse_seconds,
    parse_size,
};
use super::{Containment, GpuRelease, HangStop, LogFormat, ProgressMetric, Resume};
use respawn::auth::AdminToken;

/// The original design's variable for the start-up wait, in seconds; `RESPAWN_STARTUP_TIMEOUT` wins over it.
pub const ORIGINAL_STARTUP_VAR: &str = "SERVER_RESTART_WAIT_TIME";

/// The original design's switch for restarts; `RESPAWN_ENABLE_RESTART` wins over it.
pub const ORIGINAL_ENABLE_VAR: &str = "ENABLE_SERVER_RESTART";

/// The environment variable that names the config file when `--config` is not given.
pub const CONFIG_FILE_VAR: &str = "RESPAWN_CONFIG";

/// The `RESPAWN_*` variables respawn reads besides one per configuration key: the config file,
/// the log filter, the switch of the PID-1 init, the guardian's own, and those of respawn's
/// scripts and examples (so that setting them for those is not warned about).
pub const OTHER_VARIABLES: [&str; 6] = [
    CONFIG_FILE_VAR,
    "RESPAWN_LOG",
    "RESPAWN_NO_INIT",
    "RESPAWN_GUARDIAN_PARENT_PID",
    "RESPAWN_BIN",
    "RESPAWN_CACHE",
];

/// A `RESPAWN_*` variable that nothing reads: most likely a typo, which would otherwise be
/// silently ignored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownVariable {
    /// The variable as set.
    pub name: String,
    /// The known variable it most likely meant.
    pub did_you_mean: Option<String>,
}

impl std::fmt::Display for UnknownVariable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "unknown environment variable `{}` is ignored", self.name)?;
        if let Some(known) = &self.did_you_mean {
            write!(f, "; did you mean `{known}`?")?;
        }
        Ok(())
    }
}

/// The `RESPAWN_*` names among `names` that no key and nothing else of respawn reads, each with
/// the known variable closest to it, in the order given.
pub fn unknown_variables<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<UnknownVariable> {
    let known: Vec<String> = KEYS
        .iter()
        .map(|key| variable_for(key))
        .chain(OTHER_VARIABLES.iter().map(|v| (*v).to_owned()))
        .collect();
    let suffixes: Vec<String> = known
        .iter()
        .map(|v| v.trim_start_matches("RESPAWN_").to_ascii_lowercase())
        .collect();
    names
        .into_iter()
        .filter(|name| name.starts_with("RESPAWN_") && !known.iter().any(|k| k == name))
        .map(|name| UnknownVariable {
            name: name.to_owned(),
            did_you_mean: closest(
                name.trim_start_matches("RESPAWN_"),
                suffixes.iter().map(String::as_str),
            )
            .map(|suffix| format!("RESPAWN_{}", suffix.to_ascii_uppercase())),
        })
        .collect()
}

/// The name of the environment variable for a configuration key: `health_interval` →
/// `RESPAWN_HEALTH_INTERVAL`.
pub fn variable_for(key: &str) -> String {
    format!("RESPAWN_{}", key.to_ascii_uppercase())
}

/// Reads typed values from an environment lookup, naming the variable in every error.
struct Environment<'a> {
    lookup: &'a dyn Fn(&str) -> Option<String>,
}

impl Environment<'_> {
    /// The raw value of a variable; an empty value counts as unset, as in most service managers.
    fn raw(&self, variable: &str) -> Option<String> {
        (self.lookup)(variable).filter(|value| !value.trim().is_empty())
    }

    /// Reads `RESPAWN_<KEY>` with `parse`, turning a failure into [`ConfigError::BadValue`].
    fn read<T>(
        &self,
        key: &str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Option<T>, ConfigError> {
        let variable = variable_for(key);
        self.raw(&variable)
            .map(|value| {
                parse(&value).map_err(|expected| ConfigError::BadValue {
                    option: variable.clone(),
                    value,
                    expected,
                })
            })
            .transpose()
    }

    fn text(&self, key: &str) -> Result<Option<String>, ConfigError> {
        self.read(key, |value| Ok(value.to_owned()))
    }

    fn number<T: FromStr>(&self, key: &str, expected: &str) -> Result<Option<T>, ConfigError> {
        self.read(key, |value| {
            value
                .trim()
                .parse()
                .map_err(|_| format!("expected {expected}"))
        })
    }

    fn duration(&self, key: &str) -> Result<Option<std::time::Duration>, ConfigError> {
        let variable = variable_for(key);
        self.raw(&variable)
            .map(|value| {
                parse_duration(&value).map_err(|reason| ConfigError::BadDuration {
                    option: variable.clone(),
                    value,
                    reason,
                })
            })
            .transpose()
    }

    fn boolean(&self, key: &str) -> Result<Option<bool>, ConfigError> {
        self.read(key, parse_bool)
    }

    fn token(&self, key: &str) -> Result<Option<AdminToken>, ConfigError> {
        let variable = variable_for(key);
        self.raw(&variable)
            .map(|value| {
                AdminToken::new(value.trim()).map_err(|err| ConfigError::BadValue {
                    option: variable.clone(),
                    value: "<redacted>".to_owned(),
                    expected: err.to_string(),
                })
            })
            .transpose()
    }
}

/// What a count looks like, for error messages.
const COUNT: &str = "a whole number, e.g. 3";

/// The layer the environment gives, or the first variable that cannot be read.
pub(crate) fn layer(lookup: &dyn Fn(&str) -> Option<String>) -> Result<Layer, ConfigError> {
    let env = Environment { lookup };
    let mut layer = Layer {
        name: env.text("name")?,
        listen: env.read("listen", parse_listen)?,
        port: env.number("port", "a port number from 1 to 65535")?,
        command: env.read("command", parse_argv)?,
        shell: env.boolean("shell")?,
        upstream: env.text("upstream")?,
        health_path: env.text("health_path")?,
        health_interval: env.duration("health_interval")?,
        health_timeout: env.duration("health_timeout")?,
        unhealthy_after: env.number("unhealthy_after", COUNT)?,
        request_timeout: env.duration("request_timeout")?,
        stall_timeout: env.duration("stall_timeout")?,
        max_request_time: env.duration("max_request_time")?,
        canary_interval: env.duration("canary_interval")?,
        canary_timeout: env.duration("canary_timeout")?,
        canary_body: env.read("canary_body", parse_json)?,
        progress_metric: env.read("progress_metric", ProgressMetric::from_str)?,
        progress_timeout: env.duration("progress_timeout")?,
        startup_timeout: env.duration("startup_timeout")?,
        stop_grace: env.duration("stop_grace")?,
        hang_stop: env.read("hang_stop", HangStop::from_str)?,
        max_restarts: env.number("max_restarts", COUNT)?,
        restart_window: env.duration("restart_window")?,
        stable_after: env.duration("stable_after")?,
        retries: env.number("retries", COUNT)?,
        poison_after: env.number("poison_after", COUNT)?,
        quarantine_ttl: env.duration("quarantine_ttl")?,
        resume: env.read("resume", Resume::from_str)?,
        resume_limit: env.number("resume_limit", COUNT)?,
        enable_restart: env.boolean("enable_restart")?,
        admin_token: env.token("admin_token")?,
        restart_strategies: env.read("restart_strategies", parse_names)?,
        restart_url: env.text("restart_url")?,
        restart_token: env.token("restart_token")?,
        restart_command: env.read("restart_command", parse_argv)?,
        release_check: env.read("release_check", parse_argv)?,
        gpu_release: env.read("gpu_release", GpuRelease::from_str)?,
        release_timeout: env.duration("release_timeout")?,
        containment: env.read("containment", Containment::from_str)?,
        pass_secrets: env.boolean("pass_secrets")?,
        max_body_size: env.read("max_body_size", parse_size)?,
        max_waiting: env.number("max_waiting", "a whole number of requests, e.g. 1024")?,
        max_waiting_bytes: env.read("max_waiting_bytes", parse_size)?,
        max_wait_time: env.duration("max_wait_time")?,
        header_timeout: env.duration("header_timeout")?,
        workers: env.number("workers", "a number of worker threads, 1 or more")?,
        log_format: env.read("log_format", LogFormat::from_str)?,
        replicas: env.number("replicas", "a number of replicas, 1 to 64")?,
        start_stagger: env.duration("start_stagger")?,
        min_ready: env.number("min_ready", "a number of replicas, 1 or more")?,
    };
    if layer.startup_timeout.is_none() {
        layer.startup_timeout = env
            .raw(ORIGINAL_STARTUP_VAR)
            .map(|value| {
                parse_seconds(&value).map_err(|reason| ConfigError::BadDuration {
                    option: ORIGINAL_STARTUP_VAR.to_owned(),
                    value,
                    reason,
                })
            })
            .transpose()?;
    }
    if layer.enable_restart.is_none() {
        layer.enable_restart = env
            .raw(ORIGINAL_ENABLE_VAR)
            .map(|value| {
                parse_bool(&value).map_err(|expected| ConfigError::BadValue {
                    option: ORIGINAL_ENABLE_VAR.to_owned(),
                    value,
                    expected,
                })
            })
            .transpose()?;
    }
    Ok(layer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_variables_are_found_with_the_closest_known_one() {
        let found = unknown_variables([
            "RESPAWN_HELTH_PATH",
            "RESPAWN_HEALTH_PATH",
            "RESPAWN_LOGS",
            "RESPAWN_BANANA",
            "RESPAWN_CONFIG",
            "RESPAWN_NO_INIT",
            "PATH",
            "HF_TOKEN",
        ]);
        let named: Vec<(&str, Option<&str>)> = found
            .iter()
            .map(|u| (u.name.as_str(), u.did_you_mean.as_deref()))
            .collect();
        assert_eq!(
            named,
            vec![
                ("RESPAWN_HELTH_PATH", Some("RESPAWN_HEALTH_PATH")),
                ("RESPAWN_LOGS", Some("RESPAWN_LOG")),
                ("RESPAWN_BANANA", None),
            ]
        );
        assert_eq!(
            found[0].to_string(),
            "unknown environment variable `RESPAWN_HELTH_PATH` is ignored; did you mean `RESPAWN_HEALTH_PATH`?"
        );
    }

    #[test]
    fn every_key_has_a_known_variable() {
        let names: Vec<String> = KEYS.iter().map(|key| variable_for(key)).collect();
        assert!(unknown_variables(names.iter().map(String::as_str)).is_empty());
        assert!(unknown_variables(OTHER_VARIABLES).is_empty());
    }

    #[test]
    fn variable_names_are_upper_snake_with_prefix() {
        assert_eq!(variable_for("health_interval"), "RESPAWN_HEALTH_INTERVAL");
        assert_eq!(variable_for("admin_token"), "RESPAWN_ADMIN_TOKEN");
    }
}
