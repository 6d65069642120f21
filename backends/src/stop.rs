//! Stopping a server completely: the signal sequence, and the waits that prove it is gone.
//!
//! The sequence is SIGTERM to the group, SIGCONT to the group (a process frozen with SIGSTOP
//! keeps SIGTERM pending until it runs again), SIGKILL to the group after the grace if the
//! leader has not exited, then three bounded waits, each polled with short sleeps because they
//! wait on conditions outside our control: no process of the old group remains (stragglers get
//! what is left of the grace, then SIGKILL), the port accepts no connection, and the optional
//! release check no longer lists any of the old pids. There is no fixed sleep anywhere: a server
//! that exits at once is stopped in milliseconds.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitPidFlag};
use nix::unistd::Pid;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::exit::ExitInfo;
use crate::group::{members, signal_group};
use crate::port::accepts_connections;
use crate::release::wait_released;

/// Pause between two looks at an external condition (group members, the port).
const POLL_EVERY: Duration = Duration::from_millis(10);

/// Why a stop did not end with everything released, and what is still holding on.
#[derive(Debug, thiserror::Error)]
pub enum StopError {
    /// Processes of the old group are still alive after SIGKILL (stuck in the kernel, usually
    /// uninterruptible I/O on a device): inspect them before starting a new server.
    #[error("process group {pgid} survived SIGKILL; remaining pids: {remaining:?}")]
    GroupSurvived {
        /// The group id (the old leader's pid).
        pgid: u32,
        /// The pids still alive.
        remaining: Vec<u32>,
    },
    /// Something still accepts connections on the port after the group is gone: another
    /// process holds it.
    #[error("port {port} still accepts connections after the server's processes are gone")]
    PortStillBound {
        /// The port.
        port: u16,
    },
    /// The release check still lists pids of the old group (their memory is not released).
    #[error("the release check still lists pids {pids:?} of the stopped server")]
    ReleaseCheckTimedOut {
        /// The old pids still listed.
        pids: Vec<u32>,
    },
    /// The release check could not be run or kept failing: fix the configured command.
    #[error("release check `{program}` failed: {reason}")]
    ReleaseCheckFailed {
        /// The check's program.
        program: String,
        /// What went wrong.
        reason: String,
    },
    /// A signal could not be delivered to the group (permission denied).
    #[error("could not send {signal} to process group {pgid}: {source}")]
    Signal {
        /// The group id.
        pgid: u32,
        /// The signal's name.
        signal: &'static str,
        /// The error from `killpg`.
        #[source]
        source: nix::errno::Errno,
    },
    /// There is no child to signal.
    #[error("the server is not running")]
    NotRunning,
    /// A start or stop is already under way; wait for it to finish.
    #[error("cannot stop while a {doing} is under way")]
    Busy {
        /// What is under way (`"start"` or `"stop"`).
        doing: &'static str,
    },
}

/// What a stop did, step by step, so that slow steps can be seen and measured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stopped {
    /// The stopped leader's pid, or `None` when there was nothing to stop.
    pub pid: Option<u32>,
    /// How the leader ended (`None` when there was nothing to stop).
    pub exit: Option<ExitInfo>,
    /// From SIGTERM to the leader's exit.
    pub signal_to_exit: Duration,
    /// Whether the grace ran out and the group got SIGKILL.
    pub escalated_to_kill: bool,
    /// From the leader's exit until no process of the group remained.
    pub group_gone: Duration,
    /// From then until the port accepted no connection.
    pub port_free: Duration,
    /// From then until the release check passed (zero without one).
    pub release_check: Duration,
    /// The whole stop.
    pub total: Duration,
}

impl Stopped {
    /// The report for a stop that found nothing to stop.
    pub fn nothing_to_stop() -> Self {
        Self {
            pid: None,
            exit: None,
            signal_to_exit: Duration::ZERO,
            escalated_to_kill: false,
            group_gone: Duration::ZERO,
            port_free: Duration::ZERO,
            release_check: Duration::ZERO,
            total: Duration::ZERO,
        }
    }
}

/// Everything the stop sequence needs, detached from the actor so that it can run as a future.
#[derive(Debug)]
pub(crate) struct StopPlan {
    pub(crate) server: Arc<str>,
    pub(crate) pgid: u32,
    pub(crate) grace: Duration,
    pub(crate) release_timeout: Duration,
    pub(crate) port: Option<SocketAddr>,
    pub(crate) release_check: Option<Vec<OsString>>,
    pub(crate) exited: watch::Receiver<Option<ExitInfo>>,
}

fn send(pgid: u32, signal: Signal) -> Result<bool, StopError> {
    signal_group(pgid, signal).map_err(|source| StopError::Signal {
        pgid,
        signal: signal.as_str(),
        source,
    })
}

/// Waits until the exit watcher publishes the leader's status.
async fn leader_exit(exited: &mut watch::Receiver<Option<ExitInfo>>) -> ExitInfo {
    match exited.wait_for(Option::is_some).await {
        Ok(status) => status.unwrap_or(ExitInfo::Unknown),
        // The watcher ended without a status: the leader has been reaped anyway.
        Err(_) => ExitInfo::Unknown,
    }
}

/// Runs the whole stop sequence for the group described by `plan`.
///
/// # Cancel safety
/// Not cancel safe: dropping it part way leaves the group signalled but not waited for. The
/// actor's group guard still kills the group when the actor ends.
pub(crate) async fn stop_group(mut plan: StopPlan) -> Result<Stopped, StopError> {
    let pgid = plan.pgid;
    let started = Instant::now();
    let mut seen: BTreeSet<u32> = members(pgid).into_iter().map(|m| m.pid).collect();
    seen.insert(pgid);

    if plan.grace.is_zero() {
        // No grace: SIGKILL at once. (SIGCONT first would let a frozen server run for the instant
        // before the kill and start answering requests it cannot finish.)
        send(pgid, Signal::SIGKILL)?;
    } else {
        send(pgid, Signal::SIGTERM)?;
        send(pgid, Signal::SIGCONT)?;
    }
    let mut escalated = plan.grace.is_zero();
    let exit = match tokio::time::timeout(plan.grace, leader_exit(&mut plan.exited)).await {
        Ok(exit) => exit,
        Err(_) => {
            if !plan.grace.is_zero() {
                tracing::warn!(server = %plan.server, pgid, grace = ?plan.grace,
                    "server ignored SIGTERM for the whole grace; sending SIGKILL to its group");
            }
            escalated = true;
            send(pgid, Signal::SIGKILL)?;
            tokio::time::timeout(plan.release_timeout, leader_exit(&mut plan.exited))
                .await
                .map_err(|_| StopError::GroupSurvived {
                    pgid,
                    remaining: crate::group_members(pgid),
                })?
        }
    };
    let signal_to_exit = started.elapsed();

    let step = Instant::now();
    let me = std::process::id();
    loop {
        let now = members(pgid);
        let mut live = Vec::new();
        for member in &now {
            seen.insert(member.pid);
            if !member.zombie {
                live.push(member.pid);
            } else if member.ppid == me && member.pid != pgid {
                // An orphan that reparented to us (we are a subreaper): reap it so that it
                // does not linger as a zombie of ours.
                let _ = waitpid(Pid::from_raw(member.pid as i32), Some(WaitPidFlag::WNOHANG));
            }
        }
        if live.is_empty() {
            break;
        }
        // Workers get what is left of the grace to finish on their own, then SIGKILL.
        if escalated || started.elapsed() >= plan.grace {
            escalated |= !live.is_empty();
            send(pgid, Signal::SIGKILL)?;
        }
        if step.elapsed() >= plan.release_timeout {
            return Err(StopError::GroupSurvived {
                pgid,
                remaining: live,
            });
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
    let group_gone = step.elapsed();

    let step = Instant::now();
    if let Some(addr) = plan.port {
        while accepts_connections(addr).await {
            if step.elapsed() >= plan.release_timeout {
                return Err(StopError::PortStillBound { port: addr.port() });
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
    }
    let port_free = step.elapsed();

    let step = Instant::now();
    if let Some(check) = &plan.release_check {
        wait_released(check, &seen, plan.release_timeout).await?;
    }
    let release_check = step.elapsed();

    let stopped = Stopped {
        pid: Some(pgid),
        exit: Some(exit),
        signal_to_exit,
        escalated_to_kill: escalated,
        group_gone,
        port_free,
        release_check,
        total: started.elapsed(),
    };
    tracing::info!(server = %plan.server, pid = pgid, exit = %exit, ?stopped, "server stopped");
    Ok(stopped)
}
