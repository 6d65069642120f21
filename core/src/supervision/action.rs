//! What the supervision machine asks its driver to do, and what it publishes.

use core::fmt;
use core::time::Duration;

use crate::{Fingerprint, Generation, GiveUpReason, Hang, HangCause, Phase, Snapshot, StopMode};

/// The part of the machine's state that the world sees: waiting requests, the status endpoint,
/// metrics. Published with [`Action::Publish`] whenever it changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Status {
    /// What the supervisor is doing.
    pub phase: Phase,
    /// The current (latest started) generation; 0 before the first start.
    pub generation: Generation,
    /// Restarts begun so far.
    pub restarts: u64,
    /// The cause of the last hang acted upon.
    pub last_cause: Option<HangCause>,
    /// Grows whenever the poison table changes (see [`Snapshot::poison_epoch`]).
    pub poison_epoch: u32,
}

impl Status {
    /// The one-word form requests check.
    #[must_use]
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            generation: self.generation,
            phase: self.phase,
            poison_epoch: self.poison_epoch,
        }
    }
}

/// What the machine made of one hang report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Triage {
    /// The first report against the current generation: a restart begins.
    Incident,
    /// The first report against the current generation, but restarts are disabled: it is only
    /// reported, and the same generation stays watched.
    ReportOnly,
    /// A generation that was just started died or never became ready: the restart under way
    /// failed and is tried again.
    FailedStart,
    /// A restart is already under way: the report joins it.
    Joined,
    /// The report is about a server that is no longer current.
    Stale,
    /// An operator asked for a restart: not an incident. It begins at once, with no backoff and
    /// no count toward the restart-intensity limit, and makes no request a suspect.
    Operator,
}

/// Why the machine gave up for good.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailReason {
    /// The very first start of the server failed (the driver knows the error).
    FirstStartFailed,
    /// The restart policy gave up (the restart-intensity limit).
    Exhausted(GiveUpReason),
}

impl fmt::Display for FailReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FailReason::FirstStartFailed => f.write_str("the model server could not be started"),
            FailReason::Exhausted(reason) => write!(f, "{reason}"),
        }
    }
}

/// A restart that finished: what caused it and how long the service was interrupted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Recovery {
    /// The cause of the hang that started it (or of the last failed start of it).
    pub cause: HangCause,
    /// From the hang report to the new generation being ready.
    pub took: Duration,
}

/// One thing for the driver to do; drained with
/// [`Supervision::poll_action`](crate::Supervision::poll_action), in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Start the server for the first time as `generation`; answer with
    /// [`handle_spawned`](crate::Supervision::handle_spawned) or
    /// [`handle_spawn_failed`](crate::Supervision::handle_spawn_failed). A server respawn does
    /// not own is already running: answer `handle_spawned` at once.
    Spawn {
        /// The generation the started server is.
        generation: Generation,
    },
    /// Probe `generation`'s health path now, and after each result as
    /// [`next_probe_in`](crate::Supervision::next_probe_in) says.
    Watch {
        /// The generation to probe.
        generation: Generation,
    },
    /// Ask restart strategy number `strategy` (0 = the best) to replace `hung` by `next`; answer
    /// with [`handle_restart_done`](crate::Supervision::handle_restart_done) or
    /// [`handle_restart_failed`](crate::Supervision::handle_restart_failed).
    Restart {
        /// The generation being replaced.
        hung: Generation,
        /// The generation the restarted server is.
        next: Generation,
        /// Why.
        cause: HangCause,
        /// How the strategy ends `hung`, when it owns the process: decided by the cause
        /// ([`StopMode::for_cause`]).
        stop: StopMode,
        /// Which strategy, by index in the configured order.
        strategy: usize,
    },
    /// Call [`handle_timeout`](crate::Supervision::handle_timeout) at this time (a backoff).
    WakeAt(Duration),
    /// A hang report was considered (every report counts, for metrics), and what it meant.
    Detected {
        /// The report.
        hang: Hang,
        /// What the machine made of it.
        triage: Triage,
    },
    /// `generation` did not become ready within the startup budget.
    StartupTimedOut {
        /// The generation.
        generation: Generation,
        /// How long it was given.
        after: Duration,
    },
    /// A restart was decided for `cause`; it begins after `delay` (zero: at once).
    RestartScheduled {
        /// Why.
        cause: HangCause,
        /// The backoff before it.
        delay: Duration,
    },
    /// Every strategy failed this round; the restart is scheduled again.
    StrategiesExhausted,
    /// `generation` answered its health check, `startup` after its start; `recovery` when this
    /// ends a restart.
    Ready {
        /// The generation.
        generation: Generation,
        /// From its start to its first good probe.
        startup: Duration,
        /// The restart this ends, if any.
        recovery: Option<Recovery>,
    },
    /// An incident happened while these requests were in flight, and the quarantine's table is
    /// shared with other machines
    /// ([`SupervisionConfig::shared_quarantine`](crate::SupervisionConfig::shared_quarantine)):
    /// count them there (with the trial request in flight on this server, if any).
    Suspects(alloc::vec::Vec<Fingerprint>),
    /// Requests with this fingerprint are refused from now on (for the quarantine's TTL).
    Quarantined(Fingerprint),
    /// An operator cleared the quarantine; `released` fingerprints were quarantined.
    QuarantineCleared {
        /// How many convictions were lifted.
        released: usize,
    },
    /// The machine gave up: the supervisor is `Failed`.
    Failed(FailReason),
    /// The status changed: publish it.
    Publish(Status),
    /// The last sign of life of `generation` changed (`None`: none yet); requests past their
    /// deadline read it (see [`RequestPlan`](crate::RequestPlan)).
    Life {
        /// The generation.
        generation: Generation,
        /// When it last showed life.
        at: Option<Duration>,
    },
}
