//! The restart gate: one restart per generation, however many detectors noticed the hang.
//!
//! When a server freezes, every request in flight times out, the health prober fails, the
//! progress watcher fires — hundreds of reports of one event. The gate lets the first report
//! against the current generation start a restart and answers every other one with
//! [`AlreadyRestarting`](GateDecision::AlreadyRestarting) (join the restart under way) or
//! [`Stale`](GateDecision::Stale) (the server it talks about has already been replaced).
//!
//! Lifecycle, driven by the caller:
//!
//! ```text
//! new() ─► started() (gen 1) ─► ready() ─► report(gen 1) = StartRestart ─► started() (gen 2)
//!                                             report(gen 1) = AlreadyRestarting   │
//!                                                                                 ▼
//!                       report(gen 1) = Stale ◄── ready() (restart finished) ◄────┘
//! ```
//!
//! While a restart is under way (from `StartRestart` until [`RestartGate::ready`] after a newer
//! generation started, or [`RestartGate::abandon`]) the gate never answers `StartRestart`: a
//! start that fails or times out is retried by the restart flow itself (it calls
//! [`RestartGate::started`] again), not by a new report. A `ready()` before any new child was
//! started (the hung server answered again while it was being stopped) does not end the restart.
//! So between two calls of `abandon`, each generation is restarted at most once.

use crate::{Generation, Hang};

/// The gate's answer to a hang report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum GateDecision {
    /// This report is the first against the current generation: restart it now.
    StartRestart {
        /// The generation to replace.
        generation: Generation,
    },
    /// A restart is already under way; wait for the generation after `generation`.
    AlreadyRestarting {
        /// The current generation (the one being replaced or, if already spawned, its successor).
        generation: Generation,
    },
    /// The report is about a server that is no longer current; nothing to do.
    Stale {
        /// The generation the report was about.
        reported: Generation,
        /// The current generation.
        current: Generation,
    },
}

/// Single-flight restarts with generations; see the module docs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RestartGate {
    generation: Generation,
    /// The generation being replaced, while a restart is under way.
    replacing: Option<Generation>,
}

impl RestartGate {
    /// A gate before any start: generation 0, not restarting.
    #[must_use]
    pub fn new() -> Self {
        RestartGate::default()
    }

    /// The current (latest started) generation.
    #[must_use]
    pub fn generation(&self) -> Generation {
        self.generation
    }

    /// Whether a restart is under way (from `StartRestart` until `ready` or `abandon`).
    #[must_use]
    pub fn is_restarting(&self) -> bool {
        self.replacing.is_some()
    }

    /// The generation being replaced, while a restart is under way.
    #[must_use]
    pub fn replacing(&self) -> Option<Generation> {
        self.replacing
    }

    /// Decides what a hang report means.
    ///
    /// * against the current generation, no restart under way → `StartRestart`, and a restart
    ///   is now under way;
    /// * against the current generation, restart under way → `AlreadyRestarting`;
    /// * against any other generation (older, or a nonsensical newer one) → `Stale`, never a
    ///   restart.
    pub fn report(&mut self, hang: Hang) -> GateDecision {
        let current = self.generation;
        if hang.generation != current {
            return GateDecision::Stale {
                reported: hang.generation,
                current,
            };
        }
        if self.replacing.is_some() {
            GateDecision::AlreadyRestarting {
                generation: current,
            }
        } else {
            self.replacing = Some(current);
            GateDecision::StartRestart {
                generation: current,
            }
        }
    }

    /// A new child was spawned: the generation grows by one and is returned. A restart under way
    /// stays under way until [`ready`](Self::ready): reports against the new generation join it.
    pub fn started(&mut self) -> Generation {
        self.generation = self.generation.next();
        self.generation
    }

    /// The current generation is ready. If it is newer than the one a restart is replacing, the
    /// restart is finished and the next report against this generation may start a new one. If
    /// no new child has started since `StartRestart` (the old server answered again while being
    /// stopped), the restart stays under way: it must not be started twice.
    pub fn ready(&mut self) {
        if self.replacing.is_some_and(|old| self.generation > old) {
            self.replacing = None;
        }
    }

    /// The restart was given up (the supervisor entered `Failed`): no restart is under way any
    /// more. Reports against older generations stay `Stale`; the next report against the current
    /// generation (for instance a manual restart by an operator) answers `StartRestart` again.
    pub fn abandon(&mut self) {
        self.replacing = None;
    }

    /// Whether `generation` is the current one.
    #[must_use]
    pub fn is_current(&self, generation: Generation) -> bool {
        self.generation == generation
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::HangCause;

    fn hang(generation: u64) -> Hang {
        Hang::new(Generation(generation), HangCause::FirstByteTimeout)
    }

    #[test]
    fn a_new_gate_is_idle_at_generation_zero() {
        let gate = RestartGate::new();
        assert_eq!(gate.generation(), Generation(0));
        assert!(!gate.is_restarting());
    }

    #[test]
    fn first_report_restarts_and_the_rest_join_it() {
        let mut gate = RestartGate::new();
        assert_eq!(gate.started(), Generation(1));
        gate.ready();
        assert_eq!(
            gate.report(hang(1)),
            GateDecision::StartRestart {
                generation: Generation(1)
            }
        );
        assert!(gate.is_restarting());
        for _ in 0..1000 {
            assert_eq!(
                gate.report(hang(1)),
                GateDecision::AlreadyRestarting {
                    generation: Generation(1)
                }
            );
        }
    }

    #[test]
    fn old_and_future_generations_are_stale() {
        let mut gate = RestartGate::new();
        gate.started();
        gate.started();
        assert_eq!(
            gate.report(hang(1)),
            GateDecision::Stale {
                reported: Generation(1),
                current: Generation(2)
            }
        );
        assert!(matches!(gate.report(hang(9)), GateDecision::Stale { .. }));
        assert!(!gate.is_restarting());
    }

    #[test]
    fn reports_against_the_new_child_join_until_it_is_ready() {
        let mut gate = RestartGate::new();
        gate.started();
        gate.report(hang(1));
        assert_eq!(gate.started(), Generation(2));
        assert!(gate.is_restarting());
        assert_eq!(
            gate.report(hang(2)),
            GateDecision::AlreadyRestarting {
                generation: Generation(2)
            }
        );
        assert!(matches!(gate.report(hang(1)), GateDecision::Stale { .. }));
        gate.ready();
        assert_eq!(
            gate.report(hang(2)),
            GateDecision::StartRestart {
                generation: Generation(2)
            }
        );
    }

    #[test]
    fn ready_before_a_new_child_started_does_not_end_the_restart() {
        let mut gate = RestartGate::new();
        gate.started();
        gate.report(hang(1));
        gate.ready();
        assert!(gate.is_restarting());
        assert_eq!(gate.replacing(), Some(Generation(1)));
        assert_eq!(
            gate.report(hang(1)),
            GateDecision::AlreadyRestarting {
                generation: Generation(1)
            }
        );
        gate.started();
        gate.ready();
        assert!(!gate.is_restarting());
    }

    #[test]
    fn abandon_ends_the_restart_and_a_manual_report_can_start_another() {
        let mut gate = RestartGate::new();
        gate.started();
        gate.report(hang(1));
        gate.abandon();
        assert!(!gate.is_restarting());
        assert!(matches!(gate.report(hang(0)), GateDecision::Stale { .. }));
        assert_eq!(
            gate.report(Hang::new(Generation(1), HangCause::Manual)),
            GateDecision::StartRestart {
                generation: Generation(1)
            }
        );
        assert!(gate.is_current(Generation(1)));
    }
}
