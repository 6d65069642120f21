//! How a restart ends the old generation: with a grace period, or with SIGKILL at once.
//!
//! A graceful stop (SIGTERM, then SIGKILL only after the grace) lets a working server finish its
//! requests, flush its logs and free its GPU memory in order. It is worth it only when the server
//! can still act on SIGTERM. A server found hung cannot: a frozen engine does not run its signal
//! handler, a deadlocked one never reaches its shutdown path, and the API server of vLLM waits on
//! its engine before it exits. Granting such a server the grace is dead time — a frozen vLLM
//! engine made every hang cost the whole 5 s grace on top of detection — while the requests it
//! holds are retried on the next generation anyway. So the rule, by the restart's cause:
//!
//! | cause | stop | why |
//! |---|---|---|
//! | `manual`, `signal` (operator, rolling restarts, SIGHUP) | graceful | the server is healthy: let it finish |
//! | `health_probes`, `first_byte_timeout`, `stream_stall`, `progress_stalled`, `canary_timeout` | kill | it stopped answering: it will not honour SIGTERM either |
//! | `startup_timeout` | kill | it never became ready: nothing to finish |
//! | `exited` | kill | the leader is gone: what is left of its generation is an orphan |
//!
//! Shutdown of respawn itself is not a restart and always keeps the grace.
//! [`CoreConfig::graceful_hang_stop`](crate::CoreConfig::graceful_hang_stop) restores the grace for
//! hangs too, for a server that must run its shutdown path whatever state it is in.

use core::fmt;

use crate::HangCause;

/// How the old generation is stopped before the next one starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum StopMode {
    /// SIGTERM (and SIGCONT) to every process of the generation, SIGKILL after the grace.
    Graceful,
    /// SIGKILL to every process of the generation at once, no SIGTERM before it.
    Kill,
}

impl StopMode {
    /// The stop a restart for `cause` gets; `graceful_hang_stop` grants the grace to hangs too.
    #[must_use]
    pub const fn for_cause(cause: HangCause, graceful_hang_stop: bool) -> StopMode {
        if cause.is_operator() || graceful_hang_stop {
            StopMode::Graceful
        } else {
            StopMode::Kill
        }
    }

    /// A stable snake_case name for logs.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            StopMode::Graceful => "graceful",
            StopMode::Kill => "kill",
        }
    }
}

impl fmt::Display for StopMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_operators_get_the_grace_unless_asked_for_hangs() {
        for cause in HangCause::ALL {
            let expected = if matches!(cause, HangCause::Manual | HangCause::Signal) {
                StopMode::Graceful
            } else {
                StopMode::Kill
            };
            assert_eq!(StopMode::for_cause(cause, false), expected, "{cause}");
            assert_eq!(
                StopMode::for_cause(cause, true),
                StopMode::Graceful,
                "{cause}"
            );
        }
    }
}
