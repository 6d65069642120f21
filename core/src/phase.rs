//! The supervisor's phase: one word that tells waiting requests and the status endpoint what is
//! going on.

use core::fmt;

/// What the supervisor is doing; published to waiting requests and the status endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum Phase {
    /// A server was started and is not ready yet; requests wait.
    Starting,
    /// The server answers; requests go through.
    Ready,
    /// A hang was detected and the server is being stopped and started again; requests wait.
    Restarting,
    /// Restarts failed in a row; the next attempt waits out its backoff delay; requests wait.
    BackingOff,
    /// The restart policy gave up; requests fail at once with the reason.
    Failed,
    /// The supervisor is shutting down; new requests are refused.
    Stopping,
    /// The supervisor has stopped the server for good.
    Stopped,
}

impl Phase {
    /// Every phase, in declaration order: for metrics that expose one gauge per phase.
    pub const ALL: [Phase; 7] = [
        Phase::Starting,
        Phase::Ready,
        Phase::Restarting,
        Phase::BackingOff,
        Phase::Failed,
        Phase::Stopping,
        Phase::Stopped,
    ];

    /// A stable snake_case name for logs, metrics and status documents.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Phase::Starting => "starting",
            Phase::Ready => "ready",
            Phase::Restarting => "restarting",
            Phase::BackingOff => "backing_off",
            Phase::Failed => "failed",
            Phase::Stopping => "stopping",
            Phase::Stopped => "stopped",
        }
    }

    /// Whether a request may be sent to the server right now (only when it is ready).
    #[must_use]
    pub const fn accepts_requests(self) -> bool {
        matches!(self, Phase::Ready)
    }

    /// Whether a request that arrives now should wait for the server instead of failing: the
    /// supervisor is on its way to `Ready`.
    #[must_use]
    pub const fn is_recovering(self) -> bool {
        matches!(
            self,
            Phase::Starting | Phase::Restarting | Phase::BackingOff
        )
    }

    /// Whether the phase is final: nothing will bring the server back without outside help.
    #[must_use]
    pub const fn is_terminal(self) -> bool {
        matches!(self, Phase::Failed | Phase::Stopping | Phase::Stopped)
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_ready_accepts_requests_and_every_phase_is_classified_once() {
        for phase in Phase::ALL {
            let classes = [
                phase.accepts_requests(),
                phase.is_recovering(),
                phase.is_terminal(),
            ];
            assert_eq!(classes.iter().filter(|c| **c).count(), 1, "{phase}");
        }
        assert!(Phase::Ready.accepts_requests());
        assert_eq!(Phase::BackingOff.as_str(), "backing_off");
    }
}
