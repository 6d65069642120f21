//! The flags of `respawn batch`: the batch's own (input, output, concurrency, where the server
//! is) and the supervision options it shares with `respawn serve`.
//!
//! The shared options keep `serve`'s names, meanings and layering (flags > environment >
//! `--config` file > defaults): [`BatchArgs::serve_args`] turns them into a
//! [`ServeArgs`] that [`crate::config::ServeConfig::load`] stacks exactly as for `serve`. Options
//! that only make sense for a listening proxy (`--listen`, `--workers`, `--admin-token`, ...)
//! are left out, since a batch opens no listener.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::builder::TypedValueParser;

use crate::auth::AdminToken;
use crate::cli::ServeArgs;
use crate::config::value::{parse_duration, parse_json};
use crate::config::ProgressMetric;

/// Options of `respawn batch`: run an OpenAI batch file against a supervised server.
#[derive(clap::Args, Debug, Clone)]
#[command(
    override_usage = "respawn batch [OPTIONS] --input FILE --output FILE -- COMMAND [ARGS...]\n       \
respawn batch [OPTIONS] --input FILE --output FILE --url URL"
)]
#[command(
    after_help = "Input lines: {\"custom_id\", \"method\": \"POST\", \"url\": \"/v1/...\", \"body\": {...}}. \
Output lines (completion order): {\"id\", \"custom_id\", \"response\": {\"status_code\", \"request_id\", \"body\"}, \"error\"}. \
A rerun with the same --output resumes: finished ids are skipped, a torn last line is repaired. \
Exit codes: 0 every request succeeded, 1 some failed for good (written as error lines), \
2 usage, configuration or input error (nothing was sent), 3 the server could not be kept up \
(rerun to resume), 130 interrupted (rerun to resume). See docs/BATCH.md."
)]
pub struct BatchArgs {
    /// The requests, one JSON object per line (the OpenAI batch input format)
    #[arg(long, short = 'i', value_name = "FILE", help_heading = "Batch")]
    pub input: PathBuf,

    /// Where results are appended, one JSON object per line; an existing file is resumed
    #[arg(long, short = 'o', value_name = "FILE", help_heading = "Batch")]
    pub output: PathBuf,

    /// Requests in flight at once
    #[arg(long, value_name = "N", default_value_t = 16,
          value_parser = clap::value_parser!(u32).range(1..=4096), help_heading = "Batch")]
    pub concurrency: u32,

    /// Drive a server respawn does not own instead of COMMAND (restarted through --restart-url or --restart-command when given)
    #[arg(long, value_name = "URL", help_heading = "Batch")]
    pub url: Option<String>,

    /// On resume, send again the requests the earlier run recorded as failed (error lines and non-2xx answers)
    #[arg(long, help_heading = "Batch")]
    pub retry_failed: bool,

    /// Time between progress lines when stderr is not a terminal (a terminal gets a progress bar)
    #[arg(long, value_name = "DUR", value_parser = parse_duration, default_value = "10s", help_heading = "Batch")]
    pub log_interval: Duration,

    /// The options shared with `respawn serve`.
    #[command(flatten)]
    pub supervision: SupervisionArgs,

    /// The server to run and its arguments; `{port}` becomes the server's port
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<OsString>,
}

/// The supervision options of `respawn serve` that apply to a batch; each means what it means
/// for `serve` (see `respawn serve --help` and docs/CONFIG.md).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct SupervisionArgs {
    /// The server's name in logs [default: server] [env: RESPAWN_NAME]
    #[arg(long, value_name = "NAME", help_heading = "Server")]
    pub name: Option<String>,

    /// The server's port, exported as PORT; `{port}` in ARGS becomes it [default: a free one] [env: RESPAWN_PORT]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..), help_heading = "Server")]
    pub port: Option<u16>,

    /// Run COMMAND through `sh -c` instead of as an argv [default: off] [env: RESPAWN_SHELL]
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true",
          value_parser = parse_flag_bool, help_heading = "Server")]
    pub shell: Option<bool>,

    /// The server's health path [default: /health] [env: RESPAWN_HEALTH_PATH]
    #[arg(long, value_name = "PATH", help_heading = "Hang detection")]
    pub health_path: Option<String>,

    /// Time between health probes [default: 1s] [env: RESPAWN_HEALTH_INTERVAL]
    #[arg(long, value_name = "DUR", value_parser = parse_duration, help_heading = "Hang detection")]
    pub health_interval: Option<Duration>,

    /// How long one health probe may take [default: 1s] [env: RESPAWN_HEALTH_TIMEOUT]
    #[arg(long, value_name = "DUR", value_parser = parse_duration, help_heading = "Hang detection")]
    pub health_timeout: Option<Duration>,

    /// Consecutive failed probes that mean a hang [default: 3] [env: RESPAWN_UNHEALTHY_AFTER]
    #[arg(long, value_name = "N", help_heading = "Hang detection")]
    pub unhealthy_after: Option<u32>,

    /// Time to a response's first byte; a whole non-streamed completion must fit in it [default: 60s] [env: RESPAWN_REQUEST_TIMEOUT]
    #[arg(long, value_name = "DUR", value_parser = parse_duration, help_heading = "Hang detection")]
    pub request_timeout: Option<Duration>,

    /// Longest silence between streamed chunks [default: 30s] [env: RESPAWN_STALL_TIMEOUT]
    #[arg(long, value_name = "DUR", value_parser = parse_duration, help_heading = "Hang detection")]
    pub stall_timeout: Option<Duration>,

    /// When nothing is in flight for this long, send a one-token canary; 0 = off [default: 10s] [env: RESPAWN_CANARY_INTERVAL]
    #[arg(long, value_name = "DUR", value_parser = parse_duration, help_heading = "Hang detection")]
    pub canary_interval: Option<Duration>,

    /// A canary that takes longer is a hang [default: 10s] [env: RESPAWN_CANARY_TIMEOUT]
    #[arg(long, value_name = "DUR", value_parser = parse_duration, help_heading = "Hang detection")]
    pub canary_timeout: Option<Duration>,

    /// The canary request [default: a one-token chat completion] [env: RESPAWN_CANARY_BODY]
    #[arg(long, value_name = "JSON", value_parser = parse_json, help_heading = "Hang detection")]
    pub canary_body: Option<serde_json::Value>,

    /// A Prometheus counter on the server's /metrics that grows while it generates; `none` = off [default: auto] [env: RESPAWN_PROGRESS_METRIC]
    #[arg(long, value_name = "NAME", value_parser = parse_progress_metric, help_heading = "Hang detection")]
    pub progress_metric: Option<ProgressMetric>,

    /// Requests in flight for this long while the counter does not grow = a hang [default: 15s] [env: RESPAWN_PROGRESS_TIMEOUT]
    #[arg(long, value_name = "DUR", value_parser = parse_duration, help_heading = "Hang detection")]
    pub progress_timeout: Option<Duration>,

    /// How long a start may take [default: 600s] [env: RESPAWN_STARTUP_TIMEOUT]
    #[arg(long, value_name = "DUR", value_parser = parse_duration, help_heading = "Restarts")]
    pub startup_timeout: Option<Duration>,

    /// Time from SIGTERM to SIGKILL when stopping the server; 0 = SIGKILL at once [default: 5s] [env: RESPAWN_STOP_GRACE]
    #[arg(long, value_name = "DUR", value_parser = parse_duration, help_heading = "Restarts")]
    pub stop_grace: Option<Duration>,

    /// Restarts allowed within --restart-window; past it the batch stops with exit 3 [default: 5] [env: RESPAWN_MAX_RESTARTS]
    #[arg(long, value_name = "N", help_heading = "Restarts")]
    pub max_restarts: Option<u32>,

    /// The window of --max-restarts [default: 10m] [env: RESPAWN_RESTART_WINDOW]
    #[arg(long, value_name = "DUR", value_parser = parse_duration, help_heading = "Restarts")]
    pub restart_window: Option<Duration>,

    /// The server's REST restart endpoint, with --url [env: RESPAWN_RESTART_URL]
    #[arg(long, value_name = "URL", help_heading = "Restarts")]
    pub restart_url: Option<String>,

    /// The bearer token of --restart-url (visible in `ps`: prefer the environment) [env: RESPAWN_RESTART_TOKEN]
    #[arg(long, value_name = "TOKEN", value_parser = TokenParser, help_heading = "Restarts")]
    pub restart_token: Option<AdminToken>,

    /// A command that restarts the server, split on whitespace, with --url [env: RESPAWN_RESTART_COMMAND]
    #[arg(long, value_name = "ARGV", help_heading = "Restarts")]
    pub restart_command: Option<String>,

    /// A command that succeeds once the old server's resources are released, split on whitespace [env: RESPAWN_RELEASE_CHECK]
    #[arg(long, value_name = "ARGV", help_heading = "Restarts")]
    pub release_check: Option<String>,

    /// Attempts per request after the first [default: 3] [env: RESPAWN_RETRIES]
    #[arg(long, value_name = "N", help_heading = "Requests")]
    pub retries: Option<u32>,

    /// Hangs a request may be present at before it is quarantined (recorded as an error) [default: 2] [env: RESPAWN_POISON_AFTER]
    #[arg(long, value_name = "N", help_heading = "Requests")]
    pub poison_after: Option<u32>,

    /// TOML file with the same keys as `respawn serve`'s; precedence: flags > environment > file > defaults [env: RESPAWN_CONFIG]
    #[arg(long, value_name = "FILE", help_heading = "Control")]
    pub config: Option<PathBuf>,
}

impl BatchArgs {
    /// The supervision options as `serve`'s flags, so that they are layered over the environment
    /// and the config file exactly as for `respawn serve`; `--url` becomes `--upstream`.
    pub fn serve_args(&self) -> ServeArgs {
        let s = &self.supervision;
        ServeArgs {
            name: s.name.clone(),
            port: s.port,
            shell: s.shell,
            upstream: self.url.clone(),
            health_path: s.health_path.clone(),
            health_interval: s.health_interval,
            health_timeout: s.health_timeout,
            unhealthy_after: s.unhealthy_after,
            request_timeout: s.request_timeout,
            stall_timeout: s.stall_timeout,
            canary_interval: s.canary_interval,
            canary_timeout: s.canary_timeout,
            canary_body: s.canary_body.clone(),
            progress_metric: s.progress_metric.clone(),
            progress_timeout: s.progress_timeout,
            startup_timeout: s.startup_timeout,
            stop_grace: s.stop_grace,
            max_restarts: s.max_restarts,
            restart_window: s.restart_window,
            restart_url: s.restart_url.clone(),
            restart_token: s.restart_token.clone(),
            restart_command: s.restart_command.clone(),
            release_check: s.release_check.clone(),
            retries: s.retries,
            poison_after: s.poison_after,
            config: s.config.clone(),
            command: self.command.clone(),
            ..ServeArgs::default()
        }
    }
}

/// Reads `--shell=BOOL` with the same words as the environment (`true`, `no`, `1`, ...).
fn parse_flag_bool(text: &str) -> Result<bool, String> {
    crate::config::value::parse_bool(text)
}

/// Reads `--progress-metric`.
fn parse_progress_metric(text: &str) -> Result<ProgressMetric, String> {
    text.parse()
}

/// Reads a token flag without ever echoing the value in an error (clap's own errors would).
#[derive(Clone, Copy, Debug)]
struct TokenParser;

impl TypedValueParser for TokenParser {
    type Value = AdminToken;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<Self::Value, clap::Error> {
        let flag = arg.map_or_else(
            || "the token".to_owned(),
            |arg| format!("--{}", arg.get_id()).replace('_', "-"),
        );
        let invalid = |reason: String| {
            clap::Error::raw(
                clap::error::ErrorKind::InvalidValue,
                format!("invalid value for {flag}: {reason}\n"),
            )
            .with_cmd(cmd)
        };
        let text = value
            .to_str()
            .ok_or_else(|| invalid("not valid Unicode".to_owned()))?;
        AdminToken::new(text.trim()).map_err(|err| invalid(err.to_string()))
    }
}
