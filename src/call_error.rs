//! Why a request could not be delivered: the one error of the sending path, shared by the
//! proxy, the `ClientActor` and the messages they exchange.

use std::time::Duration;

use respawn_core::GiveUpReason;

use crate::metrics::FailureClass;
use crate::state::WaitError;

/// Why a request could not be delivered.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// No ready server (gave up, stopping, or not ready within the wait bound).
    #[error(transparent)]
    Unavailable(#[from] WaitError),
    /// The request plan gave up.
    #[error("{reason} (last attempt: {last})")]
    GaveUp {
        /// Why the plan gave up.
        reason: GiveUpReason,
        /// What the last attempt ran into.
        last: String,
        /// The status a proxy should answer with.
        status: u16,
    },
    /// The request was quarantined as poison: it hung the server on its own.
    #[error("this request was in flight when the model server hung {hangs} times, hung it again when sent alone, and is quarantined for another {}s (an operator can lift it: DELETE /respawn/quarantine)", remaining.as_secs().max(1))]
    Quarantined {
        /// Hangs it was present at.
        hangs: u32,
        /// Until the quarantine ends.
        remaining: Duration,
    },
    /// The path is not one an HTTP request can carry: nothing was sent.
    #[error("`{path}` is not a path and query for the model server: {reason}")]
    InvalidPath {
        /// The path as given.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl CallError {
    /// The HTTP status a proxy answers with.
    pub fn status(&self) -> u16 {
        match self {
            CallError::Unavailable(_) => 503,
            CallError::GaveUp { status, .. } => *status,
            CallError::Quarantined { .. } => 422,
            CallError::InvalidPath { .. } => 400,
        }
    }

    /// Whether a client may well succeed by trying again later: the server was not ready and the
    /// request could not wait (longer) for it. A proxy says when with `Retry-After`.
    pub fn worth_retrying_later(&self) -> bool {
        matches!(
            self,
            CallError::Unavailable(WaitError::Full { .. } | WaitError::TimedOut { .. })
        )
    }

    /// The failure class for metrics.
    pub fn class(&self) -> FailureClass {
        match self {
            CallError::Unavailable(WaitError::Full { .. }) => FailureClass::WaitingFull,
            CallError::Unavailable(_) => FailureClass::Unavailable,
            CallError::GaveUp { .. } => FailureClass::RetriesExhausted,
            CallError::Quarantined { .. } => FailureClass::Quarantined,
            CallError::InvalidPath { .. } => FailureClass::BadRequest,
        }
    }
}
