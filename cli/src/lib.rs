//! The `respawn` command line, as a library so that its tests can reach the configuration:
//! flags ([`cli`]), the layered configuration ([`config`]), `respawn serve` ([`serve`]), the
//! control commands (`status`, `restart`: [`control_client`]), `respawn batch` ([`batch`]),
//! `respawn demo` ([`demo`]), the check of the `http://` URLs they are given ([`http_url`]) and
//! the process's own limits ([`resources`]). The embeddable supervisor is the `respawn` crate; the
//! simulated model server is `respawn-mock`.

pub mod allocator;
pub mod batch;
pub mod cli;
pub mod config;
pub mod control_client;
pub mod demo;
pub mod http_url;
pub mod log_writer;
pub mod resources;
pub mod serve;
