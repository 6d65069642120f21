//! The supervisor's published state: one `watch` channel that waiting requests, the status
//! endpoint, metrics and embedders all read, and only the coordinator writes.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use respawn_core::{Generation, HangCause, Phase};
use serde::Serialize;
use tokio::sync::watch;

/// When and why the last restart happened, and how long it took to be ready again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LastRestart {
    /// What caused it (`health_probes`, `first_byte_timeout`, ...).
    pub cause: &'static str,
    /// From the hang report to the new generation being ready, in milliseconds.
    pub duration_ms: u64,
    /// When the restart was decided, as seconds since the Unix epoch.
    pub at: u64,
}

/// A snapshot of what the supervisor is doing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SupervisorState {
    /// The generation that is (or is becoming) current: 0 before the first start.
    pub generation: Generation,
    /// What the supervisor is doing.
    pub phase: Phase,
    /// The PID of the current child (or of its guardian, which leads its process group).
    pub pid: Option<u32>,
    /// Restarts so far.
    pub restarts: u64,
    /// The cause of the last hang that was acted upon.
    pub last_cause: Option<HangCause>,
    /// The last error (a failed strategy, the reason for `Failed`).
    pub last_error: Option<String>,
    /// The last completed restart.
    pub last_restart: Option<LastRestart>,
    /// When the current generation became ready, as seconds since the Unix epoch.
    pub ready_at: Option<u64>,
}

impl SupervisorState {
    /// The state before anything has started.
    pub fn initial() -> Self {
        Self {
            generation: Generation(0),
            phase: Phase::Starting,
            pid: None,
            restarts: 0,
            last_cause: None,
            last_error: None,
            last_restart: None,
            ready_at: None,
        }
    }

    /// Whether requests for at least `generation` can be sent now.
    pub fn ready_for(&self, generation: Generation) -> bool {
        self.phase == Phase::Ready && self.generation >= generation
    }

    /// Whether `generation` is on its way out: its restart has begun, or a later generation
    /// exists. Whatever its server starts to answer now is cut when it is stopped.
    pub fn replacing(&self, generation: Generation) -> bool {
        self.generation > generation
            || (self.generation == generation
                && matches!(self.phase, Phase::Restarting | Phase::BackingOff))
    }

    /// Seconds the current generation has been ready, if it is.
    pub fn uptime_s(&self) -> Option<u64> {
        match (self.phase, self.ready_at) {
            (Phase::Ready, Some(at)) => Some(unix_now_s().saturating_sub(at)),
            _ => None,
        }
    }
}

/// Seconds since the Unix epoch, for timestamps shown to people.
pub fn unix_now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
}

/// Why waiting for a ready server ended without one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WaitError {
    /// The supervisor gave up restarting the server.
    #[error("the model server is down and respawn gave up restarting it: {reason}")]
    Failed {
        /// The reason it gave up.
        reason: String,
    },
    /// The supervisor is stopping.
    #[error("respawn is shutting down")]
    Stopping,
    /// No ready server within the bound.
    #[error("the model server was not ready within {waited:?}")]
    TimedOut {
        /// How long the request waited.
        waited: Duration,
    },
}

/// Waits until the published state is ready for `generation` (or a later one).
///
/// # Cancel safety
/// Cancel safe: dropping the future only stops waiting.
pub async fn wait_ready(
    rx: &mut watch::Receiver<SupervisorState>,
    generation: Generation,
    bound: Duration,
) -> Result<Generation, WaitError> {
    // The common case, a ready server, costs no timer.
    {
        let state = rx.borrow_and_update();
        if state.ready_for(generation) {
            return Ok(state.generation);
        }
    }
    let wait = async {
        loop {
            {
                let state = rx.borrow_and_update();
                if state.ready_for(generation) {
                    return Ok(state.generation);
                }
                match state.phase {
                    Phase::Failed => {
                        return Err(WaitError::Failed {
                            reason: state
                                .last_error
                                .clone()
                                .unwrap_or_else(|| "restart limit reached".to_owned()),
                        })
                    }
                    Phase::Stopping | Phase::Stopped => return Err(WaitError::Stopping),
                    _ => {}
                }
            }
            if rx.changed().await.is_err() {
                return Err(WaitError::Stopping);
            }
        }
    };
    match tokio::time::timeout(bound, wait).await {
        Ok(result) => result,
        Err(_) => Err(WaitError::TimedOut { waited: bound }),
    }
}

/// Creates the channel the coordinator publishes on.
pub fn channel() -> (
    watch::Sender<SupervisorState>,
    watch::Receiver<SupervisorState>,
) {
    watch::channel(SupervisorState::initial())
}
