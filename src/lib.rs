//! respawn keeps LLM inference servers answering: it owns the server process, notices a hang in
//! seconds, kills the whole process tree, starts it again, waits until it is ready, and retries the
//! requests that were caught, so the client never sees the hang.
//!
//! The decisions live in [`respawn_core`] (pure, `no_std`): one supervision machine
//! ([`respawn_core::Supervision`]) and a small plan per request ([`respawn_core::RequestPlan`]).
//! The restart strategies and the actor that owns the child live in [`respawn_backends`]; this
//! crate wires them into driver actors ([`coordinator::RestartCoordinator`], which owns the
//! machine, [`health_actor::HealthActor`], [`client_actor::ClientActor`],
//! [`deadlock_watch::DeadlockWatch`], all talking through [`messages`]), the [`registry::Registry`],
//! the [`proxy`] (whose `GET /respawn/status` answers a [`status::StatusDocument`], and whose
//! requests wait for a restart within the bounds of [`waiting`]) and the embeddable actix-web control scope ([`web`]). Configuration arrives as
//! plain typed structs with documented defaults ([`supervisor::SupervisorConfig`]); the command
//! line, its configuration file and the simulated model server are separate crates
//! (`respawn-cli`, `respawn-mock`) that this library does not depend on.

mod aside;
pub mod auth;
pub mod call_error;
pub mod client_actor;
/// The supervisor's clock, which counts only the time respawn ran (kept with the backends, whose
/// stops and waits measure by it too).
pub use respawn_backends::clock;
pub mod coordinator;
pub mod deadlock_watch;
pub mod health_actor;
pub mod in_flight;
pub mod messages;
pub mod metrics;
pub mod pool;
pub mod proxy;
pub mod quarantine;
pub mod registry;
pub mod replica;
pub mod state;
pub mod status;
pub mod supervisor;
pub mod systemd;
#[cfg(test)]
mod test_servers;
pub mod upstream;
pub mod waiting;
pub mod web;

pub use respawn_backends as backends;
pub use respawn_core as core;
