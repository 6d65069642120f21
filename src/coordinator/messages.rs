//! What the detectors, the server and the operator tell the coordinator.

use std::time::Duration;

use actix::Message;
use respawn_core::{Generation, HangCause};

/// A detector saw generation `generation` hang.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Message)]
#[rtype(result = "()")]
pub struct Hang {
    /// The generation the detector was talking to.
    pub generation: Generation,
    /// What the detector saw.
    pub cause: HangCause,
}

/// The health probes found `generation` ready, `startup` after it was started.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Message)]
#[rtype(result = "()")]
pub struct Ready {
    /// The generation that answered.
    pub generation: Generation,
    /// How long it took from the start to the first good probe.
    pub startup: Duration,
}

/// The health probes failed `failures` times in a row against `generation`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Message)]
#[rtype(result = "()")]
pub struct Unhealthy {
    /// The generation that stopped answering.
    pub generation: Generation,
    /// Consecutive failed probes.
    pub failures: u32,
}

/// `generation` did not become ready within the startup budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Message)]
#[rtype(result = "()")]
pub struct StartupTimedOut {
    /// The generation that never became ready.
    pub generation: Generation,
    /// How long it was given.
    pub after: Duration,
}

/// Restart now, whatever the health of the server (the operator's button).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Message)]
#[rtype(result = "Generation")]
pub struct RestartNow;

/// A request with this fingerprint succeeded: it is not poison.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Message)]
#[rtype(result = "()")]
pub struct RequestSucceeded {
    /// The request's fingerprint.
    pub fingerprint: respawn_core::Fingerprint,
}

/// Stop supervising: stop the child's whole process group and stay stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Message)]
#[rtype(result = "()")]
pub struct Shutdown {
    /// SIGTERM → SIGKILL grace for the child.
    pub grace: Duration,
}
