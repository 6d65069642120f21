//! The environment as a configuration source: `RESPAWN_<KEY>` for every key, plus the two
//! variables of the seed script (`SERVER_RESTART_WAIT_TIME`, `ENABLE_SERVER_RESTART`).
//!
//! The environment is read through an injected lookup function, never `std::env` directly, so
//! tests describe an environment instead of mutating the process's own.

use std::str::FromStr;

use super::error::ConfigError;
use super::layer::Layer;
use super::value::{
    parse_argv, parse_bool, parse_duration, parse_json, parse_listen, parse_seconds, parse_size,
};
use super::{LogFormat, ProgressMetric};
use respawn::auth::AdminToken;

/// The seed's variable for the start-up wait, in seconds; `RESPAWN_STARTUP_TIMEOUT` wins over it.
pub const SEED_STARTUP_VAR: &str = "SERVER_RESTART_WAIT_TIME";

/// The seed's switch for restarts; `RESPAWN_ENABLE_RESTART` wins over it.
pub const SEED_ENABLE_VAR: &str = "ENABLE_SERVER_RESTART";

/// The environment variable that names the config file when `--config` is not given.
pub const CONFIG_FILE_VAR: &str = "RESPAWN_CONFIG";

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
        max_restarts: env.number("max_restarts", COUNT)?,
        restart_window: env.duration("restart_window")?,
        stable_after: env.duration("stable_after")?,
        retries: env.number("retries", COUNT)?,
        poison_after: env.number("poison_after", COUNT)?,
        quarantine_ttl: env.duration("quarantine_ttl")?,
        enable_restart: env.boolean("enable_restart")?,
        admin_token: env.token("admin_token")?,
        restart_url: env.text("restart_url")?,
        restart_token: env.token("restart_token")?,
        restart_command: env.read("restart_command", parse_argv)?,
        release_check: env.read("release_check", parse_argv)?,
        max_body_size: env.read("max_body_size", parse_size)?,
        header_timeout: env.duration("header_timeout")?,
        workers: env.number("workers", "a number of worker threads, 1 or more")?,
        log_format: env.read("log_format", LogFormat::from_str)?,
    };
    if layer.startup_timeout.is_none() {
        layer.startup_timeout = env
            .raw(SEED_STARTUP_VAR)
            .map(|value| {
                parse_seconds(&value).map_err(|reason| ConfigError::BadDuration {
                    option: SEED_STARTUP_VAR.to_owned(),
                    value,
                    reason,
                })
            })
            .transpose()?;
    }
    if layer.enable_restart.is_none() {
        layer.enable_restart = env
            .raw(SEED_ENABLE_VAR)
            .map(|value| {
                parse_bool(&value).map_err(|expected| ConfigError::BadValue {
                    option: SEED_ENABLE_VAR.to_owned(),
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
    fn variable_names_are_upper_snake_with_prefix() {
        assert_eq!(variable_for("health_interval"), "RESPAWN_HEALTH_INTERVAL");
        assert_eq!(variable_for("admin_token"), "RESPAWN_ADMIN_TOKEN");
    }
}
