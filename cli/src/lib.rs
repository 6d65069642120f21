//! The `respawn` command line, as a library so that its tests can reach the configuration:
//! flags ([`cli`]), the layered configuration ([`config`]), `respawn serve` ([`serve`]), the
//! control commands (`status`, `restart`: [`control_client`]), `respawn batch` ([`batch`]) and
//! `respawn demo` ([`demo`]). The embeddable supervisor is the `respawn` crate; the simulated
//! model server is `respawn-mock`.

pub mod batch;
pub mod cli;
pub mod config;
pub mod control_client;
pub mod demo;
pub mod log_writer;
pub mod serve;
