//! What to run and how to stop it: the description a [`ServerActor`](crate::ServerActor) is built from.
//!
//! A spec is plain data. It is validated when the server is started (the program is looked up,
//! the port is checked), so a bad spec surfaces as a [`SpawnError`](crate::SpawnError) that names
//! what is wrong instead of a panic at construction.

use std::ffi::OsString;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

use crate::containment::ContainmentRequest;

/// Default grace between SIGTERM and SIGKILL, matching `respawn serve --stop-grace`.
pub const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(5);
/// Default bound for waiting until the old group is gone, the port is free and the release
/// check passes.
pub const DEFAULT_RELEASE_TIMEOUT: Duration = Duration::from_secs(30);
/// Default number of recent output lines kept for status and error messages.
pub const DEFAULT_LOG_LINES: usize = 200;

/// respawn's own secrets: removed from the child's environment unless the spec's
/// [`env_remove`](ServerSpec::env_remove) is changed (the model server has no use for the token
/// that restarts it, and whatever it runs could read them from its environment).
pub const SECRET_VARIABLES: &[&str] = &["RESPAWN_ADMIN_TOKEN", "RESPAWN_RESTART_TOKEN"];

/// Everything needed to start one model server and to stop it cleanly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSpec {
    /// Name used in logs (tracing field `server`), e.g. `"vllm"`.
    pub name: String,
    /// `argv[0]`: looked up in `PATH` like `execvp` unless it contains a `/`.
    pub program: OsString,
    /// The remaining arguments; every `{port}` inside them is replaced by [`ServerSpec::port`].
    pub args: Vec<OsString>,
    /// Extra environment variables for the child; `PORT=<port>` is always exported as well.
    pub env: Vec<(OsString, OsString)>,
    /// Variables of respawn's own environment that the child does not inherit; by default
    /// [`SECRET_VARIABLES`]. [`env`](ServerSpec::env) is applied after, so it can still set them.
    pub env_remove: Vec<OsString>,
    /// The port the child listens on: substituted for `{port}`, exported as `PORT`, and
    /// checked to be free before a start and after a stop. `0` disables both checks.
    pub port: u16,
    /// Where the child listens, for the port checks (loopback by default).
    pub host: IpAddr,
    /// Run `sh -c "<program> <args…>"` instead of executing the argv directly. Only when the
    /// user explicitly asks for a shell line.
    pub shell: bool,
    /// The grace between SIGTERM and SIGKILL that owners pass in [`Stop`](crate::Stop) by default.
    pub stop_grace: Duration,
    /// An optional command polled after a stop until none of the old group's PIDs appear in its
    /// output, e.g. `nvidia-smi --query-compute-apps=pid --format=csv,noheader`: a new server
    /// must not start into memory that its predecessor's processes still hold.
    pub release_check: Option<Vec<OsString>>,
    /// Ask `nvidia-smi --query-compute-apps` (when it is on `PATH`) after a stop until none of
    /// the old generation's pids holds GPU memory: a new vLLM must not start into memory its
    /// predecessor's workers still hold. On by default; without `nvidia-smi` it does nothing.
    pub gpu_release: bool,
    /// Bound for each wait after the signal step of a stop: processes gone, port free, release
    /// check, GPU memory released.
    pub release_timeout: Duration,
    /// How the generation's processes are contained: a cgroup per generation where possible
    /// (`Auto`), else the guardian. See [`ContainmentMode`](crate::ContainmentMode).
    pub containment: ContainmentRequest,
    /// How to start the guardian that leads the process group; `None` spawns the program
    /// directly. See [`guardian_main`](crate::guardian_main).
    pub guardian: Option<GuardianLaunch>,
    /// How many recent output lines to keep.
    pub log_lines: usize,
}

impl ServerSpec {
    /// A spec that executes `program args…` directly (no shell), listening on loopback `port`,
    /// with [`DEFAULT_STOP_GRACE`], [`DEFAULT_RELEASE_TIMEOUT`], [`DEFAULT_LOG_LINES`], no extra
    /// environment (and [`SECRET_VARIABLES`] removed from it), no release check, the GPU
    /// release check on, automatic containment and no guardian.
    pub fn new(
        name: impl Into<String>,
        program: impl Into<OsString>,
        args: impl IntoIterator<Item = impl Into<OsString>>,
        port: u16,
    ) -> Self {
        Self {
            name: name.into(),
            program: program.into(),
            args: args.into_iter().map(Into::into).collect(),
            env: Vec::new(),
            env_remove: SECRET_VARIABLES.iter().map(OsString::from).collect(),
            port,
            host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            shell: false,
            stop_grace: DEFAULT_STOP_GRACE,
            release_check: None,
            gpu_release: true,
            release_timeout: DEFAULT_RELEASE_TIMEOUT,
            containment: ContainmentRequest::Auto,
            guardian: None,
            log_lines: DEFAULT_LOG_LINES,
        }
    }
}

/// How to start the guardian process that leads the server's process group.
///
/// The guardian is started as `program args… -- PROGRAM ARGS…`; for the `respawn` binary that is
/// `GuardianLaunch { program: current_exe, args: ["__guardian"] }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuardianLaunch {
    /// The executable that runs [`guardian_main`](crate::guardian_main).
    pub program: PathBuf,
    /// Arguments placed before the `--` that separates them from the server's argv.
    pub args: Vec<OsString>,
}

impl GuardianLaunch {
    /// The guardian as the current executable run with `__guardian`, the way the `respawn`
    /// binary dispatches to it.
    ///
    /// # Errors
    /// Fails when the path of the current executable cannot be read.
    pub fn current_exe() -> std::io::Result<Self> {
        Ok(Self {
            program: std::env::current_exe()?,
            args: vec![OsString::from("__guardian")],
        })
    }
}
