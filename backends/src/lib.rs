//! Restart strategies for respawn, as actix actors, and the [`ServerActor`] that owns a
//! model server's process.
//!
//! Every strategy answers the same [`Restart`] message with a [`RestartReport`] or a
//! [`RestartError`], so a coordinator can hold them as [`RestartRecipient`]s and fall through
//! from one to the next:
//!
//! - [`ProcessKill`]: for a server respawn owns. Stops the whole process group through the
//!   [`ServerActor`] (SIGTERM, SIGCONT, SIGKILL after a grace, then waits until no process of
//!   the group remains, the port is free and an optional release check passes) and starts a
//!   new one.
//! - [`RestEndpoint`]: for a server with an authenticated `POST /restart` that its service
//!   manager brings back. Fails fast when the server is too hung to answer.
//! - [`CommandRestart`]: runs a configured command such as `systemctl restart vllm`.
//!
//! Every generation is contained (see [`ContainmentMode`]): in its own cgroup where respawn may
//! create one, else by the [guardian](guardian_main), a child subreaper that tracks every
//! descendant of the server whatever session or group it moved to. No process of the server's
//! tree outlives respawn, even when respawn is killed with SIGKILL, and a new generation starts
//! only once none of the previous one is left.
//!
//! Linux only: process groups are inspected through `/proc` and the parent-death signal is a
//! Linux `prctl`.
#![deny(missing_docs)]

mod cgroup;
pub mod clock;
mod command_restart;
mod containment;
mod error;
mod exit;
mod group;
mod guardian;
mod output;
mod port;
mod proc_table;
mod process_kill;
mod program;
mod readiness;
mod release;
mod rest_endpoint;
mod restart;
mod server;
mod spawn;
mod spec;
mod stop;

pub use cgroup::{cgroup_parent, CgroupUnavailable};
pub use command_restart::{CommandRestart, DEFAULT_COMMAND_READY_TIMEOUT, DEFAULT_COMMAND_TIMEOUT};
pub use containment::{ContainmentMode, ContainmentRequest};
pub use error::{ContainmentError, SpawnError, StopError};
pub use exit::ExitInfo;
pub use group::group_members;
pub use guardian::{
    guardian_main, GUARDIAN_CGROUP_ENV, GUARDIAN_NOT_EXECUTABLE, GUARDIAN_NOT_FOUND,
    GUARDIAN_PARENT_ENV, GUARDIAN_REPORT_FD_ENV, GUARDIAN_SETUP_FAILED, PARENT_DEATH_SIGNAL,
};
pub use process_kill::ProcessKill;
pub use rest_endpoint::{RestEndpoint, DEFAULT_READY_TIMEOUT, DEFAULT_REQUEST_TIMEOUT};
pub use restart::{Restart, RestartError, RestartRecipient, RestartReport};
pub use server::{
    GetServerStatus, ServerActor, ServerExited, ServerStatus, SignalServer, Start, Started, Stop,
};
pub use spec::{
    GuardianLaunch, ServerSpec, DEFAULT_LOG_LINES, DEFAULT_RELEASE_TIMEOUT, DEFAULT_STOP_GRACE,
    SECRET_VARIABLES,
};
pub use stop::Stopped;
