//! The configuration of `respawn serve`: one serde struct with the documented defaults,
//! filled from four layers, each overriding the one before it:
//!
//! 1. the defaults ([`ServeConfig::default`]),
//! 2. the TOML file named by `--config` or `RESPAWN_CONFIG` (keys in snake_case),
//! 3. the environment (`RESPAWN_<KEY>`, plus the original design's `SERVER_RESTART_WAIT_TIME` and
//!    `ENABLE_SERVER_RESTART`),
//! 4. the flags.
//!
//! [`ServeConfig::load`] stacks them and checks the result; [`ServeConfig::core`] hands the
//! decision settings to [`respawn_core`]. Every key, flag and variable is listed in
//! `docs/CONFIG.md`.

pub mod choices;
mod environment;
mod error;
mod file;
mod flags;
mod layer;
pub mod value;

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use environment::{
    unknown_variables, variable_for, UnknownVariable, CONFIG_FILE_VAR, ORIGINAL_ENABLE_VAR,
    ORIGINAL_STARTUP_VAR, OTHER_VARIABLES,
};
pub use error::{ConfigError, USAGE_EXIT_CODE};
pub use file::suggest as suggest_key;
pub use layer::KEYS;

use crate::cli::ServeArgs;
use respawn::auth::AdminToken;
use respawn::registry::{SelectionError, Strategies, COMMAND, PROCESS_KILL, REST_ENDPOINT};

pub use respawn::deadlock_watch::ProgressMetric;

pub use choices::{Containment, GpuRelease, HangStop, LogFormat, Resume};

/// Everything `respawn serve` needs to know, after the defaults, the file, the environment and
/// the flags have been stacked.
///
/// It deserializes from the same TOML the `--config` file holds (every key optional), so an
/// application embedding respawn can keep it in its own configuration.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServeConfig {
    /// The server's name in logs and metrics. Default `server`.
    pub name: String,
    /// Where clients connect. Default `127.0.0.1:8000`.
    pub listen: SocketAddr,
    /// The child's port; `None` picks a free one. Exported to the child as `PORT`; `{port}` in
    /// the command's arguments is replaced with it when the child is spawned (not here).
    pub port: Option<u16>,
    /// The child's health path. Default `/health`.
    pub health_path: String,
    /// Time between health probes. Default 1 s.
    #[serde(with = "humantime_serde")]
    pub health_interval: Duration,
    /// How long one probe may take. Default 1 s.
    #[serde(with = "humantime_serde")]
    pub health_timeout: Duration,
    /// Consecutive failed probes that mean a hang. Default 3.
    pub unhealthy_after: u32,
    /// Time to a response's first byte. Default 60 s (the original design's).
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Longest silence between streamed chunks. Default 30 s.
    #[serde(with = "humantime_serde")]
    pub stall_timeout: Duration,
    /// How long, from sending, a request past its request or stall timeout may keep waiting while
    /// the server shows life; past it that request alone is cut. Default 30 min.
    #[serde(with = "humantime_serde")]
    pub max_request_time: Duration,
    /// Idle time after which a one-token canary is sent; zero turns the canary off. Default 10 s.
    #[serde(with = "humantime_serde")]
    pub canary_interval: Duration,
    /// A canary slower than this is a hang. Default 10 s.
    #[serde(with = "humantime_serde")]
    pub canary_timeout: Duration,
    /// The canary request; `None` means a one-token chat completion to the first model that
    /// `/v1/models` lists.
    pub canary_body: Option<serde_json::Value>,
    /// The progress counter to watch while requests are in flight. Default [`ProgressMetric::Auto`].
    pub progress_metric: ProgressMetric,
    /// Requests in flight this long while the counter does not grow is a hang. Default 15 s.
    #[serde(with = "humantime_serde")]
    pub progress_timeout: Duration,
    /// How long a start may take. Default 600 s (also `SERVER_RESTART_WAIT_TIME`, in seconds).
    #[serde(with = "humantime_serde")]
    pub startup_timeout: Duration,
    /// Time between SIGTERM and SIGKILL when stopping the child; zero kills at once. Default 5 s.
    #[serde(with = "humantime_serde")]
    pub stop_grace: Duration,
    /// How a restart caused by a hang stops the hung server: SIGKILL at once (`kill`, the
    /// default) or SIGTERM and `stop_grace` (`grace`). Operator restarts always get the grace.
    pub hang_stop: HangStop,
    /// Restarts allowed within `restart_window` before respawn gives up and exits non-zero, so
    /// systemd or Kubernetes take over. Default 5.
    pub max_restarts: u32,
    /// The window of `max_restarts`. Default 10 min.
    #[serde(with = "humantime_serde")]
    pub restart_window: Duration,
    /// How long a generation must stay ready before the restart backoff starts over: a hang after
    /// that is restarted at once, a hang sooner waits for the growing backoff. Default 60 s.
    #[serde(with = "humantime_serde")]
    pub stable_after: Duration,
    /// Attempts per request after the first. Default 3.
    pub retries: u32,
    /// The bearer token of `POST /respawn/restart`; without one, that endpoint refuses everyone.
    #[serde(skip_serializing)]
    pub admin_token: Option<AdminToken>,
    /// The admin token came from `--admin-token`, where `ps` shows it to every local user:
    /// worth a warning at start.
    #[serde(skip)]
    pub admin_token_from_flag: bool,
    /// `false` (the original design's `ENABLE_SERVER_RESTART=false`): detect and report hangs, never
    /// restart. Default `true`.
    pub enable_restart: bool,
    /// Largest request body accepted (413 past it). Default 64 MiB.
    pub max_body_size: u64,
    /// Requests that may wait for a ready server (during a start or a restart); past it a
    /// request is refused with 503 and `Retry-After`. `0`: none waits. Default 1024.
    pub max_waiting: usize,
    /// Body bytes the waiting requests may hold together; past it 503. Default 256 MiB.
    pub max_waiting_bytes: u64,
    /// How long a request may wait for a ready server, in all; then 503. `None`: as long as a
    /// restart may take (`startup_timeout` + `stop_grace` + 5 s).
    #[serde(with = "humantime_serde")]
    pub max_wait_time: Option<Duration>,
    /// Longest time a client may take to send its request head (bounds slowloris). Default 5 s.
    #[serde(with = "humantime_serde")]
    pub header_timeout: Duration,
    /// HTTP worker threads. Default: the number of cores.
    pub workers: usize,
    /// Supervised replicas behind one address. Default 1 (a lone server, as before pools).
    pub replicas: usize,
    /// Pause between starting one replica and the next. Default 0 (together).
    #[serde(with = "humantime_serde")]
    pub start_stagger: Duration,
    /// The pool is ready while at least this many replicas are. Default 1.
    pub min_ready: usize,
    /// Hangs a request may be present at (with no success between) before it goes on trial,
    /// sent alone; a hang during its trial quarantines it. Default 2.
    pub poison_after: u32,
    /// How long a quarantine lasts. Default 10 min.
    #[serde(with = "humantime_serde")]
    pub quarantine_ttl: Duration,
    /// How a stream cut mid-answer is continued. Default auto.
    pub resume: Resume,
    /// How many times one stream may be resumed. Default 2.
    pub resume_limit: u32,
    /// Run the command through `sh -c` (off by default: the command is an argv).
    pub shell: bool,
    /// The command respawn owns, as an argv (`["vllm", "serve", "m", "--port", "{port}"]`).
    pub command: Vec<String>,
    /// A server respawn does not own (`http://host:port`), supervised instead of `command`.
    pub upstream: Option<String>,
    /// The restart strategies to try, in order, by name (`["process_kill", "command"]`). `None`:
    /// `process_kill` when respawn owns the server, then `rest_endpoint` when `restart_url` is
    /// set, then `command` when `restart_command` is set.
    pub restart_strategies: Option<Vec<String>>,
    /// The server's REST restart endpoint (tier 2), called with `restart_token`.
    pub restart_url: Option<String>,
    /// The bearer token of `restart_url`.
    #[serde(skip_serializing)]
    pub restart_token: Option<AdminToken>,
    /// A command that restarts the server (`["systemctl", "restart", "vllm"]`), tier 3.
    pub restart_command: Option<Vec<String>>,
    /// A command that succeeds once the old server's resources (GPU memory) are released.
    pub release_check: Option<Vec<String>>,
    /// Ask `nvidia-smi` after a stop until no old pid holds GPU memory. Default auto.
    pub gpu_release: GpuRelease,
    /// Bound for each wait after a stop: processes gone, port free, release check, GPU memory.
    /// Default 30 s.
    #[serde(with = "humantime_serde")]
    pub release_timeout: Duration,
    /// How the server's processes are contained. Default auto.
    pub containment: Containment,
    /// Let the model server inherit respawn's own secrets (`RESPAWN_ADMIN_TOKEN`,
    /// `RESPAWN_RESTART_TOKEN`). Default false: they are removed from its environment.
    pub pass_secrets: bool,
    /// How respawn writes its logs. Default text.
    pub log_format: LogFormat,
}

/// The documented defaults, in one place.
pub mod defaults {
    use std::time::Duration;

    /// `name`.
    pub const NAME: &str = "server";
    /// `listen`.
    pub const LISTEN: &str = "127.0.0.1:8000";
    /// `health_path`.
    pub const HEALTH_PATH: &str = "/health";
    /// `health_interval`.
    pub const HEALTH_INTERVAL: Duration = Duration::from_secs(1);
    /// `health_timeout`.
    pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(1);
    /// `unhealthy_after`.
    pub const UNHEALTHY_AFTER: u32 = 3;
    /// `request_timeout`: the original design's 60 s.
    pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
    /// `stall_timeout`.
    pub const STALL_TIMEOUT: Duration = Duration::from_secs(30);
    /// `max_request_time`.
    pub const MAX_REQUEST_TIME: Duration = Duration::from_secs(30 * 60);
    /// `canary_interval`.
    pub const CANARY_INTERVAL: Duration = Duration::from_secs(10);
    /// `canary_timeout`.
    pub const CANARY_TIMEOUT: Duration = Duration::from_secs(10);
    /// `progress_timeout`.
    pub const PROGRESS_TIMEOUT: Duration = Duration::from_secs(15);
    /// `startup_timeout`.
    pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(600);
    /// `stop_grace`.
    pub const STOP_GRACE: Duration = Duration::from_secs(5);
    /// `max_restarts`.
    pub const MAX_RESTARTS: u32 = 5;
    /// `restart_window`.
    pub const RESTART_WINDOW: Duration = Duration::from_secs(600);
    /// `stable_after`.
    pub const STABLE_AFTER: Duration = Duration::from_secs(60);
    /// `retries`.
    pub const RETRIES: u32 = 3;
    /// `max_body_size`: 64 MiB.
    pub const MAX_BODY_SIZE: u64 = 64 << 20;
    /// `max_waiting`: see [`respawn::waiting::WaitLimits::DEFAULT_MAX_REQUESTS`] for why.
    pub const MAX_WAITING: usize = respawn::waiting::WaitLimits::DEFAULT_MAX_REQUESTS;
    /// `max_waiting_bytes`: 256 MiB.
    pub const MAX_WAITING_BYTES: u64 = respawn::waiting::WaitLimits::DEFAULT_MAX_BYTES;
    /// `header_timeout`.
    pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
    /// `poison_after`.
    pub const POISON_AFTER: u32 = 2;
    /// `release_timeout`.
    pub const RELEASE_TIMEOUT: Duration = Duration::from_secs(30);
    /// `quarantine_ttl`.
    pub const QUARANTINE_TTL: Duration = Duration::from_secs(600);

    /// `workers`: the number of cores (1 when it cannot be told).
    pub fn workers() -> usize {
        std::thread::available_parallelism().map_or(1, usize::from)
    }
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            name: defaults::NAME.to_owned(),
            listen: SocketAddr::from(([127, 0, 0, 1], 8000)),
            port: None,
            health_path: defaults::HEALTH_PATH.to_owned(),
            health_interval: defaults::HEALTH_INTERVAL,
            health_timeout: defaults::HEALTH_TIMEOUT,
            unhealthy_after: defaults::UNHEALTHY_AFTER,
            request_timeout: defaults::REQUEST_TIMEOUT,
            stall_timeout: defaults::STALL_TIMEOUT,
            max_request_time: defaults::MAX_REQUEST_TIME,
            canary_interval: defaults::CANARY_INTERVAL,
            canary_timeout: defaults::CANARY_TIMEOUT,
            canary_body: None,
            progress_metric: ProgressMetric::Auto,
            progress_timeout: defaults::PROGRESS_TIMEOUT,
            startup_timeout: defaults::STARTUP_TIMEOUT,
            stop_grace: defaults::STOP_GRACE,
            hang_stop: HangStop::Kill,
            max_restarts: defaults::MAX_RESTARTS,
            restart_window: defaults::RESTART_WINDOW,
            stable_after: defaults::STABLE_AFTER,
            retries: defaults::RETRIES,
            admin_token: None,
            admin_token_from_flag: false,
            enable_restart: true,
            max_body_size: defaults::MAX_BODY_SIZE,
            max_waiting: defaults::MAX_WAITING,
            max_waiting_bytes: defaults::MAX_WAITING_BYTES,
            max_wait_time: None,
            header_timeout: defaults::HEADER_TIMEOUT,
            workers: defaults::workers(),
            replicas: 1,
            start_stagger: Duration::ZERO,
            min_ready: 1,
            poison_after: defaults::POISON_AFTER,
            quarantine_ttl: defaults::QUARANTINE_TTL,
            resume: Resume::Auto,
            resume_limit: 2,
            shell: false,
            command: Vec::new(),
            upstream: None,
            restart_strategies: None,
            restart_url: None,
            restart_token: None,
            restart_command: None,
            release_check: None,
            gpu_release: GpuRelease::Auto,
            release_timeout: defaults::RELEASE_TIMEOUT,
            containment: Containment::Auto,
            pass_secrets: false,
            log_format: LogFormat::Text,
        }
    }
}

impl ServeConfig {
    /// Stacks the layers — flags > environment > file > defaults — and validates the result.
    ///
    /// `env` looks up one environment variable (`|name| std::env::var(name).ok()` in the
    /// binary); it is injected so tests describe an environment instead of changing the
    /// process's own. The file is `args.supervision.config`, else `RESPAWN_CONFIG`, else none.
    pub fn load(
        args: &ServeArgs,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<ServeConfig, ConfigError> {
        let mut config = ServeConfig::default();
        let file = args.supervision.config.clone().or_else(|| {
            env(CONFIG_FILE_VAR)
                .filter(|path| !path.trim().is_empty())
                .map(std::path::PathBuf::from)
        });
        if let Some(path) = file {
            file::read(&path)?.apply_to(&mut config);
        }
        environment::layer(env)?.apply_to(&mut config);
        let flags = flags::layer(args)?;
        let token_from_flag = flags.admin_token.is_some();
        flags.apply_to(&mut config);
        config.admin_token_from_flag = token_from_flag;
        config.validate()?;
        Ok(config)
    }

    /// Parses config file text on its own (no environment, no flags) and validates it; `path`
    /// only names the file in errors. Useful to check a file before deploying it.
    pub fn from_toml(path: &std::path::Path, text: &str) -> Result<ServeConfig, ConfigError> {
        let mut config = ServeConfig::default();
        file::parse(path, text)?.apply_to(&mut config);
        config.validate()?;
        Ok(config)
    }

    /// Checks what each value alone cannot: ranges, and settings that need or exclude others.
    pub fn validate(&self) -> Result<(), ConfigError> {
        match (self.command.is_empty(), &self.upstream) {
            (true, None) => return Err(ConfigError::NoCommand),
            (false, Some(_)) => return Err(ConfigError::CommandAndUpstream),
            _ => {}
        }
        if let Some(program) = self.command.first() {
            if program.trim().is_empty() {
                return Err(bad_value(
                    "command",
                    program,
                    "a program name or path as the first word",
                ));
            }
        }
        if self.shell && self.upstream.is_some() {
            return Err(ConfigError::Conflict {
                option: "--shell".to_owned(),
                reason:
                    "needs a command to run; --upstream supervises a server respawn does not start"
                        .to_owned(),
            });
        }
        if self.port == Some(0) {
            return Err(bad_value(
                "port",
                "0",
                "a port from 1 to 65535; leave --port out to pick a free one",
            ));
        }
        if !self.health_path.starts_with('/') {
            return Err(bad_value(
                "health_path",
                &self.health_path,
                "a path that starts with `/`, e.g. /health",
            ));
        }
        if self.name.trim().is_empty() || self.name.chars().any(char::is_control) {
            return Err(bad_value(
                "name",
                &self.name,
                "a non-empty name without control characters",
            ));
        }
        for (key, value) in [
            ("health_interval", self.health_interval),
            ("health_timeout", self.health_timeout),
            ("request_timeout", self.request_timeout),
            ("stall_timeout", self.stall_timeout),
            ("max_request_time", self.max_request_time),
            ("quarantine_ttl", self.quarantine_ttl),
            ("canary_timeout", self.canary_timeout),
            ("progress_timeout", self.progress_timeout),
            ("startup_timeout", self.startup_timeout),
            ("restart_window", self.restart_window),
            ("stable_after", self.stable_after),
            ("header_timeout", self.header_timeout),
            ("release_timeout", self.release_timeout),
            (
                "max_wait_time",
                self.max_wait_time.unwrap_or(Duration::from_secs(1)),
            ),
        ] {
            if value.is_zero() {
                return Err(ConfigError::BadDuration {
                    option: option_names(key),
                    value: "0".to_owned(),
                    reason: "must be longer than zero".to_owned(),
                });
            }
        }
        for (key, value, expected) in [
            (
                "unhealthy_after",
                self.unhealthy_after,
                "1 or more failed probes",
            ),
            (
                "max_restarts",
                self.max_restarts,
                "1 or more; to never restart, set ENABLE_SERVER_RESTART=false",
            ),
            ("poison_after", self.poison_after, "1 or more hangs"),
        ] {
            if value == 0 {
                return Err(bad_value(key, "0", expected));
            }
        }
        if self.workers == 0 {
            return Err(bad_value("workers", "0", "1 or more worker threads"));
        }
        if self.replicas == 0 || self.replicas > respawn::core::ReplicaSet::CAPACITY {
            return Err(bad_value(
                "replicas",
                &self.replicas.to_string(),
                "1 to 64 replicas",
            ));
        }
        if self.min_ready == 0 || self.min_ready > self.replicas {
            return Err(bad_value(
                "min_ready",
                &self.min_ready.to_string(),
                "1 to the number of replicas",
            ));
        }
        if self.replicas > 1 && self.upstream.is_some() {
            return Err(ConfigError::Conflict {
                option: "--replicas".to_owned(),
                reason: "starts several servers, so it needs a command; --upstream supervises one server respawn does not start".to_owned(),
            });
        }
        if self.max_body_size == 0 {
            return Err(bad_value(
                "max_body_size",
                "0",
                "1 byte or more, e.g. 64MiB",
            ));
        }
        if self.max_waiting_bytes == 0 {
            return Err(bad_value(
                "max_waiting_bytes",
                "0",
                "1 byte or more, e.g. 256MiB (to let no request wait, set max_waiting to 0)",
            ));
        }
        for (key, url) in [
            ("upstream", &self.upstream),
            ("restart_url", &self.restart_url),
        ] {
            if let Some(url) = url {
                check_http_url(key, url)?;
            }
        }
        if self.restart_url.is_some() && self.restart_token.is_none() {
            return Err(ConfigError::Conflict {
                option: "--restart-url".to_owned(),
                reason: "needs --restart-token (or RESPAWN_RESTART_TOKEN): the server's restart endpoint is authenticated"
                    .to_owned(),
            });
        }
        for (key, argv) in [
            ("restart_command", &self.restart_command),
            ("release_check", &self.release_check),
        ] {
            if let Some(argv) = argv {
                if argv
                    .first()
                    .map_or(true, |program| program.trim().is_empty())
                {
                    return Err(bad_value(
                        key,
                        &argv.join(" "),
                        "a program and its arguments",
                    ));
                }
            }
        }
        if let Some(names) = &self.restart_strategies {
            self.check_restart_strategies(names)?;
        }
        if let Some(body) = &self.canary_body {
            if !body.is_object() {
                return Err(bad_value(
                    "canary_body",
                    &body.to_string(),
                    "a JSON object (the request body)",
                ));
            }
        }
        self.core().validate()?;
        Ok(())
    }

    /// Checks `restart_strategies` against [`restart_strategies`] (every name known, none twice)
    /// and against the other keys (each named strategy has what it needs), so that a mistake is
    /// reported before anything starts.
    fn check_restart_strategies(&self, names: &[String]) -> Result<(), ConfigError> {
        let key = "restart_strategies";
        let resolved = restart_strategies().check(names).map_err(|err| match err {
            SelectionError::Unknown { name, registered } => bad_value(
                key,
                &name,
                &format!("a known restart strategy: {}", registered.join(", ")),
            ),
            SelectionError::Duplicate { name } => bad_value(key, &name, "each strategy named once"),
            other => bad_value(key, &names.join(","), &other.to_string()),
        })?;
        for name in resolved {
            let missing = match name {
                PROCESS_KILL if self.upstream.is_some() => Some(
                    "needs a command to own; --upstream supervises a server respawn does not start",
                ),
                REST_ENDPOINT if self.restart_url.is_none() => Some("needs --restart-url"),
                COMMAND if self.restart_command.is_none() => Some("needs --restart-command"),
                _ => None,
            };
            if let Some(missing) = missing {
                return Err(ConfigError::Conflict {
                    option: option_names(key),
                    reason: format!("`{name}` {missing}"),
                });
            }
        }
        Ok(())
    }

    /// The decision settings for [`respawn_core`], from the keys that map onto them; the rest
    /// of the core's settings keep the core's defaults.
    ///
    /// `retries` → `retry.max_retries`, `request_timeout` → `stream.first_byte`,
    /// `stall_timeout` → `stream.between_chunks`, `max_request_time` →
    /// `stream.max_request_time`, `max_restarts`/`restart_window` →
    /// `policy.intensity`, `poison_after` → `poison_threshold`, and the health and progress
    /// keys onto their namesakes.
    pub fn core(&self) -> respawn_core::CoreConfig {
        let mut core = respawn_core::CoreConfig::default();
        core.health.interval = self.health_interval;
        core.health.timeout = self.health_timeout;
        core.health.unhealthy_after = self.unhealthy_after;
        core.health.startup_timeout = self.startup_timeout;
        core.policy.intensity.max_restarts = self.max_restarts;
        core.policy.intensity.window = self.restart_window;
        core.policy.stable_after = self.stable_after;
        core.retry.max_retries = self.retries;
        core.stream.first_byte = self.request_timeout;
        core.stream.between_chunks = self.stall_timeout;
        core.stream.max_request_time = self.max_request_time;
        core.progress.progress_timeout = self.progress_timeout;
        core.progress.canary_interval = self.canary_interval;
        core.progress.canary_timeout = self.canary_timeout;
        core.poison_threshold = self.poison_after;
        core.quarantine_ttl = self.quarantine_ttl;
        core.graceful_hang_stop = self.hang_stop == HangStop::Grace;
        core
    }

    /// Whether clients can only reach respawn from this machine; a non-loopback listener
    /// without an admin token deserves a warning.
    pub fn listen_is_loopback(&self) -> bool {
        self.listen.ip().is_loopback()
    }

    /// The bounds of the requests waiting for a ready server.
    pub fn wait_limits(&self) -> respawn::waiting::WaitLimits {
        respawn::waiting::WaitLimits {
            max_requests: self.max_waiting,
            max_bytes: self.max_waiting_bytes,
            max_time: self.max_wait_time,
        }
    }

    /// Whether the idle canary is on (a zero `canary_interval` turns it off).
    pub fn canary_enabled(&self) -> bool {
        !self.canary_interval.is_zero()
    }
}

/// The restart strategies `respawn` can name: the library's built-ins. The configuration is
/// checked against them, and `serve` and `batch` build their supervisors with them.
pub fn restart_strategies() -> Strategies {
    Strategies::builtin()
}

/// The flag and the file key of a setting, for errors found after the layers were merged.
fn option_names(key: &str) -> String {
    format!(
        "--{} / {} / `{key}`",
        key.replace('_', "-"),
        variable_for(key)
    )
}

fn bad_value(key: &str, value: &str, expected: &str) -> ConfigError {
    ConfigError::BadValue {
        option: option_names(key),
        value: value.to_owned(),
        expected: expected.to_owned(),
    }
}

/// Checks that `url` is a plain `http://host[:port][/path]` URL (respawn speaks HTTP/1.1 without
/// TLS, to servers on the same host or network).
fn check_http_url(key: &str, url: &str) -> Result<(), ConfigError> {
    crate::http_url::HttpUrl::parse(url).map(drop).map_err(|_| {
        bad_value(
            key,
            url,
            "an http:// URL, e.g. http://127.0.0.1:8080 (TLS is not supported)",
        )
    })
}
