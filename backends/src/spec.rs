//! What to run and how to stop it: the description a [`ServerActor`](crate::ServerActor) is built from.
//!
//! A spec is plain data. It is validated when the server is started (the program is looked up,
//! the port is checked), so a bad spec surfaces as a [`SpawnError`](crate::SpawnError) that names
//! what is wrong instead of a panic at construction.

use std::ffi::OsString;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

/// Default grace between SIGTERM and SIGKILL, matching `respawn serve --stop-grace`.
pub const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(5);
/// Default bound for waiting until the old group is gone, the port is free and the release
/// check passes.
pub const DEFAULT_RELEASE_TIMEOUT: Duration = Duration::from_secs(30);
/// Default number of recent output lines kept for status and error messages.
pub const DEFAULT_LOG_LINES: usize = 200;

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
    /// Bound for each wait after the signal step of a stop: group gone, port free, release check.
    pub release_timeout: Duration,
    /// How to start the guardian that leads the process group; `None` spawns the program
    /// directly. See [`guardian_main`](crate::guardian_main).
    pub guardian: Option<GuardianLaunch>,
    /// How many recent output lines to keep.
    pub log_lines: usize,
}

impl ServerSpec {
    /// A spec that executes `program args…` directly (no shell), listening on loopback `port`,
    /// with [`DEFAULT_STOP_GRACE`], [`DEFAULT_RELEASE_TIMEOUT`], [`DEFAULT_LOG_LINES`], no extra
    /// environment, no release check and no guardian.
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
            port,
            host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            shell: false,
            stop_grace: DEFAULT_STOP_GRACE,
            release_check: None,
            release_timeout: DEFAULT_RELEASE_TIMEOUT,
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
