//! respawn-core: the decisions of respawn, with no I/O and no clock.
//!
//! Is the server hung? Restart now, later, or give up? Retry this request, wait for the next
//! server, or tell the client why not? Every such question is answered here by a small state
//! machine; everything that acts (processes, sockets, timers) lives in the crates around it.
//! This is the *sans-IO* split: the caller feeds inputs with the current time and carries out the
//! answers, so every edge case can be tested in microseconds on a virtual clock.
//!
//! * Time enters as a [`core::time::Duration`] since an origin the caller chooses (`now`).
//! * Randomness (jitter) enters as a number the caller draws.
//! * `#![no_std]` with `alloc`; serde derives behind the optional `serde` feature.
//!
//! | concept | type |
//! |---|---|
//! | **the supervisor's decisions, all of them** | [`Supervision`] (events in, [`Action`]s out) |
//! | what requests check, lock-free | [`Snapshot`] |
//! | one request's attempts and deadlines | [`RequestPlan`] |
//! | may a cut stream be continued | [`StreamResume`] |
//! | start counter | [`Generation`] |
//! | a report of a hang | [`Hang`], [`HangCause`] |
//! | probes → verdict | [`HealthTracker`] |
//! | backoff, intensity | [`RestartPolicy`] |
//! | one restart per generation | [`RestartGate`] |
//! | grace or SIGKILL, by the restart's cause | [`StopMode`] |
//! | one request's retries | [`RetryPlan`] |
//! | response deadlines | [`StreamWatch`] |
//! | quarantine by evidence | [`PoisonTracker`], [`Admission`] |
//! | deadlocks behind a green `/health` | [`ProgressWatch`], [`Liveness`] |
//! | what the supervisor is doing | [`Phase`] |
//! | which replica of a pool takes a request | [`route`], [`ReplicaView`] |
//! | every knob | [`CoreConfig`] |
//!
//! The machine, driven by hand (a driver does this with processes and timers):
//!
//! ```
//! use core::time::Duration;
//! use respawn_core::*;
//!
//! let mut machine = Supervision::try_new(SupervisionConfig::new(1), Duration::ZERO, 42)?;
//! machine.start(Duration::ZERO);
//! assert_eq!(machine.poll_action(), Some(Action::Spawn { generation: Generation(1) }));
//! machine.handle_spawned(Duration::from_millis(5));
//! machine.handle_probe(Duration::from_millis(20), Generation(1), ProbeAnswer::Status(200), &[], Traffic::default());
//! assert_eq!(machine.phase(), Phase::Ready);
//! // 1,000 requests time out against the same frozen server: one restart, with strategy 0.
//! for _ in 0..1000 {
//!     let hang = Hang::new(Generation(1), HangCause::FirstByteTimeout);
//!     machine.handle_hang(Duration::from_secs(90), hang, &[]);
//! }
//! let restarts = core::iter::from_fn(|| machine.poll_action())
//!     .filter(|a| matches!(a, Action::Restart { strategy: 0, .. }))
//!     .count();
//! assert_eq!(restarts, 1);
//! # Ok::<(), InvalidConfig>(())
//! ```
//!
//! Its parts, alone:
//!
//! ```
//! use core::time::Duration;
//! use respawn_core::*;
//!
//! let mut gate = RestartGate::new();
//! let generation = gate.started(); // the first child is generation 1
//! gate.ready();
//! // 1,000 requests time out against the same frozen server: one restart.
//! let hang = Hang { generation, cause: HangCause::FirstByteTimeout };
//! assert_eq!(gate.report(hang), GateDecision::StartRestart { generation });
//! assert!(matches!(gate.report(hang), GateDecision::AlreadyRestarting { .. }));
//! // The first restart is immediate; each caught request retries on the next generation.
//! let mut policy = RestartPolicy::try_new(RestartPolicyConfig::default())?;
//! assert_eq!(policy.on_restart_needed(Duration::from_secs(90), 0), PolicyDecision::RestartAfter(Duration::ZERO));
//! let mut plan = RetryPlan::new(RetryConfig::default());
//! assert_eq!(plan.decide(AttemptOutcome::FirstByteTimeout, generation, false), RetryDecision::WaitForGeneration(gate.started()));
//! # Ok::<(), InvalidConfig>(())
//! ```
#![no_std]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

extern crate alloc;

mod config;
mod error;
mod exponential;
mod generation;
mod hang;
mod health;
mod liveness;
mod phase;
mod poison;
mod progress;
mod request_plan;
mod restart_gate;
mod restart_policy;
mod resume;
mod retry_plan;
mod route;
mod snapshot;
mod stop_mode;
mod stream_watch;
mod supervision;

pub use config::*;
pub use error::*;
pub use generation::*;
pub use hang::*;
pub use health::*;
pub use liveness::*;
pub use phase::*;
pub use poison::*;
pub use progress::*;
pub use request_plan::*;
pub use restart_gate::*;
pub use restart_policy::*;
pub use resume::*;
pub use retry_plan::*;
pub use route::*;
pub use snapshot::*;
pub use stop_mode::*;
pub use stream_watch::*;
pub use supervision::*;
