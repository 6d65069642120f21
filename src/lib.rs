//! respawn keeps LLM inference servers answering: it owns the server process, notices a hang in
//! seconds, kills the whole process tree, starts it again, waits until it is ready, and retries the
//! requests that were caught, so the client never sees the hang.
//!
//! The decisions live in [`respawn_core`] (pure, `no_std`); the restart strategies and the actor
//! that owns the child live in [`respawn_backends`]; this crate wires them into actors
//! ([`coordinator::RestartCoordinator`], [`health_actor::HealthActor`],
//! [`client_actor::ClientActor`], [`deadlock_watch::DeadlockWatch`]), the [`registry::Registry`],
//! the [`proxy`], the embeddable actix-web control scope ([`web`]), the simulated model server
//! ([`mock`]) and the `respawn` command line.

pub mod auth;
pub mod batch;
pub mod cli;
pub mod client_actor;
pub mod config;
pub mod control_client;
pub mod coordinator;
pub mod deadlock_watch;
pub mod demo;
pub mod health_actor;
pub mod in_flight;
pub mod metrics;
pub mod mock;
pub mod proxy;
pub mod registry;
pub mod serve;
pub mod state;
pub mod supervisor;
pub mod systemd;
pub mod upstream;
pub mod web;

pub use respawn_backends as backends;
pub use respawn_core as core;
