//! The command-line surface of `respawn serve`, `respawn status` and `respawn restart`.
//!
//! The `serve` flags are all optional values with no clap default, so that a flag that was not
//! given can be told apart from one given with the default value: the environment and the config
//! file fill what the flags leave out (see [`crate::config::ServeConfig::load`]). The defaults
//! are written into the help text by hand instead, next to each flag's environment variable.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::builder::TypedValueParser;

use crate::config::value::{parse_duration, parse_json, parse_listen, parse_size};
use respawn::deadlock_watch::ProgressMetric;

use crate::config::choices::{Containment, GpuRelease, HangStop, LogFormat, Resume};
use respawn::auth::AdminToken;

/// Options of `respawn serve`: supervise a model server and proxy its clients.
#[derive(clap::Args, Debug, Clone, Default)]
#[command(
    override_usage = "respawn serve [OPTIONS] -- COMMAND [ARGS...]\n       respawn serve [OPTIONS] --upstream URL"
)]
#[command(
    after_help = "Precedence: flags > environment > config file > defaults. \
Every key can also be set as RESPAWN_<KEY> (e.g. RESPAWN_HEALTH_INTERVAL=2s) or in the --config file \
(health_interval = \"2s\"). The original design's ENABLE_SERVER_RESTART=false detects and reports hangs but never \
restarts, and SERVER_RESTART_WAIT_TIME (seconds) sets --startup-timeout. Exit codes: 0 clean stop, \
1 runtime failure, 2 usage or configuration error, 3 gave up restarting (too many restarts, or the \
server never started), 4 cannot listen on --listen."
)]
pub struct ServeArgs {
    /// The supervision options (shared with `respawn batch`).
    #[command(flatten)]
    pub supervision: SupervisionArgs,

    /// Where clients connect [default: 127.0.0.1:8000] [env: RESPAWN_LISTEN]
    #[arg(long, value_name = "ADDR", value_parser = parse_listen, help_heading = "Server")]
    pub listen: Option<SocketAddr>,

    /// Supervise a server respawn does not own, instead of COMMAND (exactly one of the two) [env: RESPAWN_UPSTREAM]
    #[arg(long, value_name = "URL", help_heading = "Server")]
    pub upstream: Option<String>,

    /// Largest request body; 413 past it (e.g. 64MiB, 10MB, 1048576) [default: 64MiB] [env: RESPAWN_MAX_BODY_SIZE]
    #[arg(long, value_name = "SIZE", value_parser = parse_size, help_heading = "Requests")]
    pub max_body_size: Option<u64>,

    /// Requests that may wait for the server to be ready (during a start or a restart); past it 503 with Retry-After; 0 = none waits [default: 1024] [env: RESPAWN_MAX_WAITING]
    #[arg(long, value_name = "N", help_heading = "Requests")]
    pub max_waiting: Option<usize>,

    /// Body bytes the waiting requests may hold together; past it 503 with Retry-After [default: 256MiB] [env: RESPAWN_MAX_WAITING_BYTES]
    #[arg(long, value_name = "SIZE", value_parser = parse_size, help_heading = "Requests")]
    pub max_waiting_bytes: Option<u64>,

    /// How long a request may wait for the server to be ready, in all; then 503 with Retry-After [default: startup-timeout + stop-grace + 5s] [env: RESPAWN_MAX_WAIT_TIME]
    #[arg(long, value_name = "DUR", value_parser = parse_duration, help_heading = "Requests")]
    pub max_wait_time: Option<Duration>,

    /// Longest time a client may take to send its request head (slowloris bound) [default: 5s] [env: RESPAWN_HEADER_TIMEOUT]
    #[arg(long, value_name = "DUR", value_parser = parse_duration, help_heading = "Requests")]
    pub header_timeout: Option<Duration>,

    /// HTTP worker threads [default: number of cores] [env: RESPAWN_WORKERS]
    #[arg(long, value_name = "N", help_heading = "Requests")]
    pub workers: Option<usize>,

    /// Supervised replicas of the server behind one address, each on its own port ({port}, or --port BASE giving BASE+i) with {replica} and RESPAWN_REPLICA its index [default: 1] [env: RESPAWN_REPLICAS]
    #[arg(long, value_name = "N", help_heading = "Pool")]
    pub replicas: Option<usize>,

    /// Pause between starting one replica and the next (a model load's memory peak) [default: 0s] [env: RESPAWN_START_STAGGER]
    #[arg(long, value_name = "DUR", value_parser = parse_duration, help_heading = "Pool")]
    pub start_stagger: Option<Duration>,

    /// The pool is ready (/respawn/readyz, status) while at least this many replicas are [default: 1] [env: RESPAWN_MIN_READY]
    #[arg(long, value_name = "N", help_heading = "Pool")]
    pub min_ready: Option<usize>,

    /// Bearer token of POST /respawn/restart; without a token that endpoint refuses everyone (visible in `ps`: prefer the environment) [env: RESPAWN_ADMIN_TOKEN]
    #[arg(long, value_name = "TOKEN", value_parser = TokenParser, help_heading = "Control")]
    pub admin_token: Option<AdminToken>,

    /// Log format [default: text] [env: RESPAWN_LOG_FORMAT]
    #[arg(long, value_name = "FORMAT", value_enum, help_heading = "Control")]
    pub log_format: Option<LogFormat>,

    /// The server to run and its arguments; `{port}` becomes the child's port [env: RESPAWN_COMMAND, split on whitespace]
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<OsString>,
}

/// The options that say how a model server is supervised: shared by `respawn serve` and
/// `respawn batch`, with the same flags, environment variables and config keys.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct SupervisionArgs {
    /// The server's name in logs and metrics [default: server] [env: RESPAWN_NAME]
    #[arg(long, value_name = "NAME", help_heading = "Server")]
    pub name: Option<String>,

    /// The child's port, exported as PORT; `{port}` in ARGS becomes it [default: a free one] [env: RESPAWN_PORT]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..), help_heading = "Server")]
    pub port: Option<u16>,

    /// Run COMMAND through `sh -c` instead of as an argv [default: off] [env: RESPAWN_SHELL]
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true",
          value_parser = parse_flag_bool, help_heading = "Server")]
    pub shell: Option<bool>,

    /// The child's health path [default: /health] [env: RESPAWN_HEALTH_PATH]
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

    /// Time to a response's first byte [default: 60s, the original design's] [env: RESPAWN_REQUEST_TIMEOUT]
    #[arg(long, value_name = "DUR", value_parser = parse_duration, help_heading = "Hang detection")]
    pub request_timeout: Option<Duration>,

    /// Longest silence between streamed chunks [default: 30s] [env: RESPAWN_STALL_TIMEOUT]
    #[arg(long, value_name = "DUR", value_parser = parse_duration, help_heading = "Hang detection")]
    pub stall_timeout: Option<Duration>,

    /// Past its request or stall timeout, a request waits this long (from sending) while the server shows life; then that request alone is cut [default: 30m] [env: RESPAWN_MAX_REQUEST_TIME]
    #[arg(long, value_name = "DUR", value_parser = parse_duration, help_heading = "Hang detection")]
    pub max_request_time: Option<Duration>,

    /// When nothing is in flight and nothing has completed for this long, send a one-token canary; 0 = off [default: 10s] [env: RESPAWN_CANARY_INTERVAL]
    #[arg(long, value_name = "DUR", value_parser = parse_duration, help_heading = "Hang detection")]
    pub canary_interval: Option<Duration>,

    /// A canary that takes longer is a hang [default: 10s] [env: RESPAWN_CANARY_TIMEOUT]
    #[arg(long, value_name = "DUR", value_parser = parse_duration, help_heading = "Hang detection")]
    pub canary_timeout: Option<Duration>,

    /// The canary request [default: a one-token chat completion to the first model /v1/models lists] [env: RESPAWN_CANARY_BODY]
    #[arg(long, value_name = "JSON", value_parser = parse_json, help_heading = "Hang detection")]
    pub canary_body: Option<serde_json::Value>,

    /// A Prometheus counter on the child's /metrics that grows while it generates; `none` = off [default: auto, found among the known counters of vLLM, llama.cpp, SGLang and TGI] [env: RESPAWN_PROGRESS_METRIC]
    #[arg(long, value_name = "NAME", value_parser = parse_progress_metric, help_heading = "Hang detection")]
    pub progress_metric: Option<ProgressMetric>,

    /// Requests in flight for this long while the counter does not grow = a hang [default: 15s] [env: RESPAWN_PROGRESS_TIMEOUT]
    #[arg(long, value_name = "DUR", value_parser = parse_duration, help_heading = "Hang detection")]
    pub progress_timeout: Option<Duration>,

    /// How long a start may take [default: 600s] [env: RESPAWN_STARTUP_TIMEOUT, or SERVER_RESTART_WAIT_TIME in seconds]
    #[arg(long, value_name = "DUR", value_parser = parse_duration, help_heading = "Restarts")]
    pub startup_timeout: Option<Duration>,

    /// Time from SIGTERM to SIGKILL when stopping the child; 0 = SIGKILL at once [default: 5s] [env: RESPAWN_STOP_GRACE]
    #[arg(long, value_name = "DUR", value_parser = parse_duration, help_heading = "Restarts")]
    pub stop_grace: Option<Duration>,

    /// How a restart caused by a hang stops the hung server: `kill` = SIGKILL of its whole group at once (it would not honour SIGTERM), `grace` = SIGTERM and --stop-grace as for a manual restart [default: kill] [env: RESPAWN_HANG_STOP]
    #[arg(long, value_name = "HOW", value_enum, help_heading = "Restarts")]
    pub hang_stop: Option<HangStop>,

    /// Restarts allowed within --restart-window; past it respawn exits non-zero so systemd/Kubernetes take over [default: 5] [env: RESPAWN_MAX_RESTARTS]
    #[arg(long, value_name = "N", help_heading = "Restarts")]
    pub max_restarts: Option<u32>,

    /// The window of --max-restarts [default: 10m] [env: RESPAWN_RESTART_WINDOW]
    #[arg(long, value_name = "DUR", value_parser = parse_duration, help_heading = "Restarts")]
    pub restart_window: Option<Duration>,

    /// How long the server must stay ready before the restart backoff starts over [default: 60s] [env: RESPAWN_STABLE_AFTER]
    #[arg(long, value_name = "DUR", value_parser = parse_duration, help_heading = "Restarts")]
    pub stable_after: Option<Duration>,

    /// The restart strategies to try, in order, comma-separated: process_kill, rest_endpoint, command [default: process_kill when respawn owns the server, then rest_endpoint and command when configured] [env: RESPAWN_RESTART_STRATEGIES]
    #[arg(long, value_name = "NAMES", help_heading = "Restarts")]
    pub restart_strategies: Option<String>,

    /// The server's REST restart endpoint, for a server respawn does not own [env: RESPAWN_RESTART_URL]
    #[arg(long, value_name = "URL", help_heading = "Restarts")]
    pub restart_url: Option<String>,

    /// The bearer token of --restart-url (visible in `ps`: prefer the environment) [env: RESPAWN_RESTART_TOKEN]
    #[arg(long, value_name = "TOKEN", value_parser = TokenParser, help_heading = "Restarts")]
    pub restart_token: Option<AdminToken>,

    /// A command that restarts the server, split on whitespace (e.g. "systemctl restart vllm") [env: RESPAWN_RESTART_COMMAND]
    #[arg(long, value_name = "ARGV", help_heading = "Restarts")]
    pub restart_command: Option<String>,

    /// A command that succeeds once the old server's resources are released (e.g. an nvidia-smi query), split on whitespace [env: RESPAWN_RELEASE_CHECK]
    #[arg(long, value_name = "ARGV", help_heading = "Restarts")]
    pub release_check: Option<String>,

    /// After a stop, ask nvidia-smi (when on PATH) until no process of the old generation holds GPU memory [default: auto] [env: RESPAWN_GPU_RELEASE]
    #[arg(long, value_name = "WHEN", value_enum, help_heading = "Restarts")]
    pub gpu_release: Option<GpuRelease>,

    /// Bound for each wait after a stop: old processes gone, port free, release check, GPU memory released [default: 30s] [env: RESPAWN_RELEASE_TIMEOUT]
    #[arg(long, value_name = "DUR", value_parser = parse_duration, help_heading = "Restarts")]
    pub release_timeout: Option<Duration>,

    /// How the server's processes are contained: a cgroup per generation, or the guardian that tracks every descendant; auto = cgroup where respawn may create one [default: auto] [env: RESPAWN_CONTAINMENT]
    #[arg(long, value_name = "MODE", value_enum, help_heading = "Server")]
    pub containment: Option<Containment>,

    /// Let the server inherit respawn's own secrets (RESPAWN_ADMIN_TOKEN, RESPAWN_RESTART_TOKEN), which are removed from its environment otherwise [default: off] [env: RESPAWN_PASS_SECRETS]
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true",
          value_parser = parse_flag_bool, help_heading = "Server")]
    pub pass_secrets: Option<bool>,

    /// Attempts per request after the first (and per continuation of a resumed stream) [default: 3] [env: RESPAWN_RETRIES]
    #[arg(long, value_name = "N", help_heading = "Requests")]
    pub retries: Option<u32>,

    /// Hangs a request may be present at (with no success between) before it goes on trial, sent alone; a hang during its trial quarantines it [default: 2] [env: RESPAWN_POISON_AFTER]
    #[arg(long, value_name = "N", help_heading = "Requests")]
    pub poison_after: Option<u32>,

    /// How long a quarantine lasts [default: 10m] [env: RESPAWN_QUARANTINE_TTL]
    #[arg(long, value_name = "DUR", value_parser = parse_duration, help_heading = "Requests")]
    pub quarantine_ttl: Option<Duration>,

    /// How a stream cut mid-answer (hang, exit, broken body) is continued on the next generation: prefill = a trailing assistant message, vllm = with continue_final_message, auto = vllm's way when the command is vLLM, else prefill; off = end it with an error event [default: auto] [env: RESPAWN_RESUME]
    #[arg(long, value_name = "MODE", value_enum, help_heading = "Requests")]
    pub resume: Option<Resume>,

    /// How many times one stream may be resumed; past it, an error event [default: 2] [env: RESPAWN_RESUME_LIMIT]
    #[arg(long, value_name = "N", help_heading = "Requests")]
    pub resume_limit: Option<u32>,

    /// TOML file with the same keys in snake_case; precedence: flags > environment > file > defaults [env: RESPAWN_CONFIG]
    #[arg(long, value_name = "FILE", help_heading = "Control")]
    pub config: Option<PathBuf>,
}

/// Options of `respawn status`: ask a running instance how its server is doing.
#[derive(clap::Args, Debug, Clone)]
pub struct StatusArgs {
    /// Where the running `respawn serve` listens
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:8000")]
    pub url: String,

    /// Print the status as JSON instead of a table
    #[arg(long)]
    pub json: bool,
}

/// Options of `respawn restart`: ask a running instance to restart its server now.
#[derive(clap::Args, Debug, Clone)]
pub struct RestartArgs {
    /// Where the running `respawn serve` listens
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:8000")]
    pub url: String,

    /// The instance's admin token (visible in `ps`: prefer the environment)
    #[arg(long, value_name = "TOKEN", env = "RESPAWN_ADMIN_TOKEN", hide_env_values = true, value_parser = TokenParser)]
    pub token: Option<AdminToken>,

    /// Restart only this replica of a pool (its index, 0..N-1)
    #[arg(long, value_name = "I", conflicts_with = "rolling")]
    pub replica: Option<usize>,

    /// Restart every replica of a pool, one at a time (what a pool does without --replica)
    #[arg(long)]
    pub rolling: bool,
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
        let text = value.to_str().ok_or_else(|| {
            clap::Error::raw(
                clap::error::ErrorKind::InvalidValue,
                format!("invalid value for {flag}: not valid Unicode\n"),
            )
            .with_cmd(cmd)
        })?;
        AdminToken::new(text.trim()).map_err(|err| {
            clap::Error::raw(
                clap::error::ErrorKind::InvalidValue,
                format!("invalid value for {flag}: {err}\n"),
            )
            .with_cmd(cmd)
        })
    }
}
