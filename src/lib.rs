//! respawn keeps LLM inference servers answering: it owns the server process, notices a hang in
//! seconds, kills the whole process tree, starts it again, waits until it is ready, and retries the
//! requests that were caught, so the client never sees the hang.
//!
//! The decisions live in [`respawn_core`] (pure, `no_std`); the restart strategies and the actor
//! that owns the child live in [`respawn_backends`]; this crate wires them into actors, the proxy,
//! the embeddable actix-web control scope and the `respawn` command line.

pub mod auth;
pub mod cli;
pub mod config;
pub mod control_client;
pub mod mock;
pub mod systemd;
pub mod web;

pub use respawn_backends as backends;
pub use respawn_core as core;
