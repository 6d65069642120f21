//! What a supervisor is given: what to supervise ([`Target`]) and how to behave
//! ([`SupervisorConfig`]), as plain values with documented defaults.

use std::ffi::OsString;
use std::time::Duration;

use respawn_backends::ServerSpec;
use respawn_core::CoreConfig;

use crate::deadlock_watch::ProgressMetric;
use crate::metrics::LogLinesDropped;
use crate::waiting::WaitLimits;

/// What to supervise.
#[derive(Clone, Debug)]
pub enum Target {
    /// respawn owns the process: it spawns, watches, kills and restarts it (tier 1).
    Command(Box<ServerSpec>),
    /// A server respawn does not own, at `base_url` (`http://host:port`); restarts go through the
    /// REST endpoint or the command configured in [`SupervisorConfig`] (tier 2).
    Url {
        /// `http://host:port` of the server.
        base_url: String,
    },
}

impl Target {
    /// A command that respawn owns, listening on 127.0.0.1:`port`.
    pub fn command<I, S>(name: &str, program: impl Into<OsString>, args: I, port: u16) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
        let program: OsString = program.into();
        Target::Command(Box::new(ServerSpec::new(name, program, args, port)))
    }

    /// `http://host:port` of the server.
    pub fn base_url(&self) -> String {
        match self {
            Target::Command(spec) => format!("http://{}:{}", url_host(spec.host), spec.port),
            Target::Url { base_url } => base_url.trim_end_matches('/').to_owned(),
        }
    }
}

fn url_host(ip: std::net::IpAddr) -> String {
    match ip {
        std::net::IpAddr::V4(v4) => v4.to_string(),
        std::net::IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

/// The REST restart endpoint of a server respawn does not own.
#[derive(Clone)]
pub struct RestRestart {
    /// `POST` here to make the server exit (e.g. `http://127.0.0.1:8001/restart`).
    pub url: String,
    /// The bearer token it requires.
    pub token: crate::auth::AdminToken,
}

impl std::fmt::Debug for RestRestart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestRestart")
            .field("url", &self.url)
            .field("token", &"<redacted>")
            .finish()
    }
}

/// How the supervisor behaves.
#[derive(Clone, Debug)]
pub struct SupervisorConfig {
    /// The server's name, for logs, metrics and the registry.
    pub name: String,
    /// Every decision's thresholds.
    pub core: CoreConfig,
    /// The health path probed on the server.
    pub health_path: String,
    /// SIGTERM → SIGKILL grace.
    pub stop_grace: Duration,
    /// `false`: detect and report hangs, never restart.
    pub enable_restart: bool,
    /// The server's REST restart endpoint (tier 2), if any.
    pub rest_restart: Option<RestRestart>,
    /// A command that restarts the server (`systemctl restart vllm`), tried last.
    pub restart_command: Option<Vec<OsString>>,
    /// Which token counter proves progress while busy.
    pub progress_metric: ProgressMetric,
    /// The idle canary's body (`None`: a one-token chat completion).
    pub canary_body: Option<serde_json::Value>,
    /// The restart strategies to ask, in order, by their registered names
    /// ([`Strategies`](crate::registry::Strategies)). `None`: the built-ins in
    /// [`DEFAULT_ORDER`](crate::registry::DEFAULT_ORDER), each where it applies (`process_kill`
    /// when respawn owns the process, then `rest_endpoint` when `rest_restart` is set, then
    /// `command` when `restart_command` is set).
    pub restart_strategies: Option<Vec<String>>,
    /// The counter of log lines the process's log writer dropped, shown in the metrics (a fresh
    /// counter by default, which stays at zero).
    pub log_lines_dropped: LogLinesDropped,
    /// How many requests may wait for a ready generation (during a start or a restart), with
    /// how many body bytes, for how long; past them a request is refused at once. Default
    /// [`WaitLimits::default`], whose time bound is [`restart_may_take`].
    pub waiting: WaitLimits,
    /// How cut streams are resumed; `Auto` is resolved from the command (vLLM's flags for vLLM).
    pub resume: respawn_core::ResumeConfig,
}

/// How long a start or restart may take, from the stop of the old generation to the new one
/// being ready: the stop grace, the start-up timeout, and 5 s for the reaping and the checks in
/// between. The default time a request may wait for a ready server, so that a request is never
/// refused for time while a restart that will succeed is still under way.
pub fn restart_may_take(startup_timeout: Duration, stop_grace: Duration) -> Duration {
    startup_timeout
        .saturating_add(stop_grace)
        .saturating_add(Duration::from_secs(5))
}

impl SupervisorConfig {
    /// The documented defaults for a server called `name`.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            core: CoreConfig::default(),
            health_path: "/health".to_owned(),
            stop_grace: Duration::from_secs(5),
            enable_restart: true,
            rest_restart: None,
            restart_command: None,
            progress_metric: ProgressMetric::Auto,
            canary_body: None,
            restart_strategies: None,
            log_lines_dropped: LogLinesDropped::new(),
            waiting: WaitLimits::default(),
            resume: respawn_core::ResumeConfig::default(),
        }
    }
}
