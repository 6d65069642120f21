//! The errors of starting, containing and stopping a server, in one place so that the modules
//! that raise them (spawn, containment, stop, release) do not depend on one another for them.

use std::io;
use std::path::PathBuf;

use crate::cgroup::CgroupUnavailable;

/// Why a server could not be started, and what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// No such program: check the spelling or `PATH`.
    #[error("program `{program}` not found (check the name and PATH)")]
    NotFound {
        /// The program as given.
        program: String,
    },
    /// The program exists but cannot be executed: check its permissions (`chmod +x`).
    #[error("program `{program}` is not executable (check its permissions)")]
    NotExecutable {
        /// The program as given.
        program: String,
    },
    /// A child is already running: stop it first.
    #[error("the server is already running as pid {pid}; stop it first")]
    AlreadyRunning {
        /// The running child's pid.
        pid: u32,
    },
    /// A start or stop is under way; wait for it to finish.
    #[error("cannot start while a {doing} is under way")]
    Busy {
        /// What is under way (`"start"` or `"stop"`).
        doing: &'static str,
    },
    /// Another process accepts connections on the port: stop it or choose another port.
    #[error("port {port} on {host} is already in use by another process")]
    PortInUse {
        /// The port that is taken.
        port: u16,
        /// The address that was checked.
        host: std::net::IpAddr,
    },
    /// The previous generation, which exited on its own, is not released: some of its processes
    /// survived SIGKILL, or its GPU memory or other resources are still held (see the cause).
    #[error("the previous generation is not released: {0}")]
    PreviousGeneration(#[source] StopError),
    /// The containment asked for cannot be had: see the message for what to change.
    #[error(transparent)]
    Containment(#[from] ContainmentError),
    /// The generation's cgroup could not be created or entered.
    #[error("cannot place the server in cgroup {dir}: {source} (use --containment guardian to run without a cgroup)")]
    Cgroup {
        /// The cgroup's directory.
        dir: PathBuf,
        /// What the kernel said.
        #[source]
        source: io::Error,
    },
    /// The operating system refused to start the program.
    #[error("could not start `{program}`: {source}")]
    Io {
        /// The program as given.
        program: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

/// Why a stop did not end with everything released, and what is still holding on.
#[derive(Debug, thiserror::Error)]
pub enum StopError {
    /// Processes of the old generation are still alive after SIGKILL (stuck in the kernel,
    /// usually uninterruptible I/O on a device): inspect them before starting a new server.
    #[error(
        "processes of the generation led by {pgid} survived SIGKILL; remaining pids: {remaining:?}"
    )]
    GroupSurvived {
        /// The group id (the old leader's pid).
        pgid: u32,
        /// The pids still alive.
        remaining: Vec<u32>,
    },
    /// Something still accepts connections on the port after the group is gone: another
    /// process holds it.
    #[error("port {port} still accepts connections after the server's processes are gone")]
    PortStillBound {
        /// The port.
        port: u16,
    },
    /// The release check still lists pids of the old group (their memory is not released).
    #[error("the release check still lists pids {pids:?} of the stopped server")]
    ReleaseCheckTimedOut {
        /// The old pids still listed.
        pids: Vec<u32>,
    },
    /// `nvidia-smi` still shows pids of the old generation holding GPU memory after the release
    /// timeout: the driver has not freed it (check `nvidia-smi`; a reset may be needed).
    #[error("nvidia-smi still shows pids {pids:?} of the stopped server holding GPU memory")]
    GpuMemoryHeld {
        /// The old pids still holding memory.
        pids: Vec<u32>,
    },
    /// The release check could not be run or kept failing: fix the configured command.
    #[error("release check `{program}` failed: {reason}")]
    ReleaseCheckFailed {
        /// The check's program.
        program: String,
        /// What went wrong.
        reason: String,
    },
    /// A signal could not be delivered to the group (permission denied).
    #[error("could not send {signal} to process group {pgid}: {source}")]
    Signal {
        /// The group id.
        pgid: u32,
        /// The signal's name.
        signal: &'static str,
        /// The error from `killpg`.
        #[source]
        source: nix::errno::Errno,
    },
    /// There is no child to signal.
    #[error("the server is not running")]
    NotRunning,
    /// A start or stop is already under way; wait for it to finish.
    #[error("cannot stop while a {doing} is under way")]
    Busy {
        /// What is under way (`"start"` or `"stop"`).
        doing: &'static str,
    },
}

/// Why the requested containment cannot be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContainmentError {
    /// cgroup containment was forced but no cgroup can be created here: run as root or with a
    /// delegated cgroup (systemd `Delegate=yes`), or use `guardian`.
    #[error("cgroup containment is not available: {0} (run as root or in a delegated cgroup, or use --containment guardian)")]
    CgroupUnavailable(#[from] CgroupUnavailable),
    /// guardian containment was forced but the spec has no guardian to run.
    #[error("guardian containment needs a guardian program (ServerSpec::guardian)")]
    NoGuardian,
}
