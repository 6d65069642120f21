//! Hangs: what was seen, and against which generation of the server.
//!
//! Every detector (health probes, a request's first-byte deadline, a stalled stream, the child's
//! exit, the progress metric, the idle canary, the startup budget, an operator) turns what it saw
//! into one [`Hang`] report. The [`RestartGate`](crate::RestartGate) decides what a report means.

use core::fmt;

use crate::Generation;

/// Why the server is believed to be hung (or gone): the detector that noticed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum HangCause {
    /// Consecutive health probes failed or timed out.
    HealthProbes,
    /// A request got no first byte of its response within its deadline.
    FirstByteTimeout,
    /// A streamed response went silent between chunks for too long.
    StreamStall,
    /// The server process exited.
    Exited,
    /// Requests were in flight but the progress counter did not grow (health-green deadlock).
    ProgressStalled,
    /// The one-token canary sent while idle did not answer in time.
    CanaryTimeout,
    /// A start did not become ready within the startup budget.
    StartupTimeout,
    /// An operator asked for a restart (`POST /respawn/restart`, `respawn restart`, an embedder's
    /// call): not a hang, see [`OperatorRestart`].
    Manual,
    /// An operator sent SIGHUP: not a hang either.
    Signal,
}

impl HangCause {
    /// Every cause, in declaration order: for metrics that must expose a zero for each label.
    pub const ALL: [HangCause; 9] = [
        HangCause::HealthProbes,
        HangCause::FirstByteTimeout,
        HangCause::StreamStall,
        HangCause::Exited,
        HangCause::ProgressStalled,
        HangCause::CanaryTimeout,
        HangCause::StartupTimeout,
        HangCause::Manual,
        HangCause::Signal,
    ];

    /// A stable snake_case name for logs, metric labels and status documents.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            HangCause::HealthProbes => "health_probes",
            HangCause::FirstByteTimeout => "first_byte_timeout",
            HangCause::StreamStall => "stream_stall",
            HangCause::Exited => "exited",
            HangCause::ProgressStalled => "progress_stalled",
            HangCause::CanaryTimeout => "canary_timeout",
            HangCause::StartupTimeout => "startup_timeout",
            HangCause::Manual => "manual",
            HangCause::Signal => "signal",
        }
    }

    /// Whether an operator asked for this restart: no incident, no backoff, no count toward the
    /// restart-intensity limit, no suspects.
    #[must_use]
    pub const fn is_operator(self) -> bool {
        matches!(self, HangCause::Manual | HangCause::Signal)
    }
}

/// Who asked for a restart that is not an incident.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum OperatorRestart {
    /// `POST /respawn/restart`, `respawn restart`, or an embedder's call.
    Manual,
    /// SIGHUP to respawn.
    Signal,
}

impl OperatorRestart {
    /// The cause recorded for it (status, metrics, logs).
    #[must_use]
    pub const fn cause(self) -> HangCause {
        match self {
            OperatorRestart::Manual => HangCause::Manual,
            OperatorRestart::Signal => HangCause::Signal,
        }
    }
}

impl fmt::Display for HangCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A report that the server of `generation` looks hung, and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Hang {
    /// The generation the detector was watching when it saw the hang.
    pub generation: Generation,
    /// The detector that saw it.
    pub cause: HangCause,
}

impl Hang {
    /// A report against `generation` for `cause`.
    #[must_use]
    pub const fn new(generation: Generation, cause: HangCause) -> Self {
        Hang { generation, cause }
    }
}

impl fmt::Display for Hang {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "generation {} hung ({})", self.generation, self.cause)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    #[test]
    fn names_are_stable_snake_case_and_distinct() {
        let names: alloc::vec::Vec<&str> = HangCause::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(
            names,
            [
                "health_probes",
                "first_byte_timeout",
                "stream_stall",
                "exited",
                "progress_stalled",
                "canary_timeout",
                "startup_timeout",
                "manual",
                "signal"
            ]
        );
        assert_eq!(HangCause::StreamStall.to_string(), "stream_stall");
    }

    #[test]
    fn hang_reads_as_a_sentence() {
        let hang = Hang::new(Generation(3), HangCause::Exited);
        assert_eq!(hang.to_string(), "generation 3 hung (exited)");
    }
}
