//! The one message every restart strategy answers, its report and its errors.
//!
//! A coordinator holds a list of [`RestartRecipient`]s and tries them in order; a strategy
//! that cannot help fails fast with a [`RestartError`] that says why, so the next one can try.

use std::time::Duration;

use actix::Message;
use respawn_core::{Generation, HangCause, StopMode};

use crate::error::{SpawnError, StopError};
use crate::exit::ExitInfo;

/// Restart the server: generation `hung` is stuck because of `cause`; the new one is `next`;
/// the old one is stopped as `stop` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Message)]
#[rtype(result = "Result<RestartReport, RestartError>")]
pub struct Restart {
    /// The generation found hung.
    pub hung: Generation,
    /// The generation the restarted server will be.
    pub next: Generation,
    /// Why it is being restarted.
    pub cause: HangCause,
    /// How a strategy that owns the process ends the old generation: SIGKILL at once for a hung
    /// server, the grace for an operator's restart (the core decides, by the cause).
    pub stop: StopMode,
}

/// What a strategy did, with the time each step took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestartReport {
    /// The strategy's name (`"process_kill"`, `"rest_endpoint"`, `"command"`).
    pub strategy: &'static str,
    /// The new model server's pid, when the strategy knows it.
    pub pid: Option<u32>,
    /// The pid of the guardian leading the new server's process group, if there is one.
    pub guardian_pid: Option<u32>,
    /// Whether the strategy itself saw the new server answer its health check; when false the
    /// caller must confirm readiness.
    pub ready_confirmed: bool,
    /// Named steps and their durations, in order.
    pub steps: Vec<(&'static str, Duration)>,
    /// The whole restart.
    pub total: Duration,
}

/// Why a strategy could not restart the server, so the caller can try the next one.
#[derive(Debug, thiserror::Error)]
pub enum RestartError {
    /// Stopping the old server failed.
    #[error("stopping the old server failed: {0}")]
    Stop(#[source] StopError),
    /// Starting the new server failed.
    #[error("starting the new server failed: {0}")]
    Spawn(#[source] SpawnError),
    /// The restart endpoint refused our token: check the configured token.
    #[error("the restart endpoint {url} refused the token (check the configured token)")]
    Unauthorized {
        /// The endpoint.
        url: String,
    },
    /// The restart endpoint answered with an unexpected status.
    #[error("the restart endpoint {url} answered {status}")]
    Rejected {
        /// The endpoint.
        url: String,
        /// The HTTP status code.
        status: u16,
    },
    /// The endpoint could not be reached at all.
    #[error("cannot reach {url}: {reason}")]
    Unreachable {
        /// The endpoint.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// A step did not finish in time (a hung server makes the REST strategy fail here).
    #[error("{what} did not finish within {after:?}")]
    Timeout {
        /// The step that timed out.
        what: &'static str,
        /// The bound that was reached.
        after: Duration,
    },
    /// The restart command could not be started.
    #[error("cannot run restart command `{program}`: {reason}")]
    CommandNotRun {
        /// The command's program.
        program: String,
        /// What went wrong.
        reason: String,
    },
    /// The restart command ran and failed.
    #[error("restart command `{program}` failed with {status}: {stderr_tail}")]
    CommandFailed {
        /// The command's program.
        program: String,
        /// How it ended.
        status: ExitInfo,
        /// The last lines of its stderr.
        stderr_tail: String,
    },
    /// The restarted server did not answer its health check in time.
    #[error("{url} did not become healthy within {after:?}")]
    NotReady {
        /// The health URL.
        url: String,
        /// The bound that was reached.
        after: Duration,
    },
    /// The strategy was configured wrongly (e.g. an empty command).
    #[error("invalid restart configuration: {0}")]
    Invalid(&'static str),
    /// An actor needed for the restart is gone.
    #[error("the {actor} actor is not running")]
    ActorGone {
        /// Which actor.
        actor: &'static str,
    },
}

/// Anything that answers [`Restart`]: how a coordinator holds its strategies.
pub type RestartRecipient = actix::Recipient<Restart>;
