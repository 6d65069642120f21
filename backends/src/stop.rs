//! Stopping a server completely: the signal sequence, and the waits that prove it is gone.
//!
//! The sequence is SIGTERM to every process of the generation (its group, and each process that
//! left the group but is still its descendant or in its cgroup), SIGCONT likewise (a process
//! frozen with SIGSTOP keeps SIGTERM pending until it runs again), SIGKILL to all of them (and
//! `cgroup.kill`) after the grace if the leader has not exited, then bounded waits, each polled
//! with short sleeps because they wait on conditions outside our control: no process of the old
//! generation remains (stragglers get what is left of the grace, then SIGKILL) and its cgroup is
//! removed, the port accepts no connection, the optional release check no longer lists any of the
//! old pids, and `nvidia-smi` shows none of them holding GPU memory. There is no fixed sleep
//! anywhere: a server that exits at once is stopped in milliseconds.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::sync::watch;

use crate::clock::{self, Clock};
use crate::containment::{Scope, SharedScope};
use crate::error::StopError;
use crate::exit::ExitInfo;
use crate::port::accepts_connections;
use crate::release::{wait_gpu_released, wait_released};

/// Pause between two looks at an external condition (the port).
const POLL_EVERY: Duration = Duration::from_millis(10);

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
    /// From the leader's exit until no process of the generation remained (and its cgroup was
    /// removed).
    pub group_gone: Duration,
    /// From then until the port accepted no connection.
    pub port_free: Duration,
    /// From then until the release check passed (zero without one).
    pub release_check: Duration,
    /// From then until no old pid held GPU memory (zero without `nvidia-smi`).
    pub gpu_release: Duration,
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
            gpu_release: Duration::ZERO,
            total: Duration::ZERO,
        }
    }
}

/// Everything the stop sequence needs, detached from the actor so that it can run as a future.
#[derive(Debug)]
pub(crate) struct StopPlan {
    pub(crate) server: Arc<str>,
    pub(crate) pgid: u32,
    pub(crate) scope: SharedScope,
    /// The `nvidia-smi` to ask, when the GPU release check is on and one is installed.
    pub(crate) gpu_query: Option<PathBuf>,
    pub(crate) grace: Duration,
    pub(crate) release_timeout: Duration,
    pub(crate) port: Option<SocketAddr>,
    pub(crate) release_check: Option<Vec<OsString>>,
    pub(crate) exited: watch::Receiver<Option<ExitInfo>>,
}

/// Sends `signal` to every process of the generation.
fn send(scope: &SharedScope, pgid: u32, signal: Signal) -> Result<(), StopError> {
    scope
        .with(|scope| scope.signal(signal))
        .map_err(|source| StopError::Signal {
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
    let scope = plan.scope.clone();
    // Running time: a pause of the machine (a suspended VM, a laptop asleep) during a stop is
    // neither grace used nor time the group took (crate::clock).
    let started = Clock::new();

    if plan.grace.is_zero() {
        // No grace: SIGKILL at once. (SIGCONT first would let a frozen server run for the instant
        // before the kill and start answering requests it cannot finish.)
        scope.with(Scope::kill);
    } else {
        send(&scope, pgid, Signal::SIGTERM)?;
        send(&scope, pgid, Signal::SIGCONT)?;
    }
    let mut escalated = plan.grace.is_zero();
    let exit = match clock::timeout(plan.grace, leader_exit(&mut plan.exited)).await {
        Some(exit) => exit,
        None => {
            if !plan.grace.is_zero() {
                tracing::warn!(server = %plan.server, pgid, grace = ?plan.grace,
                    "server ignored SIGTERM for the whole grace; sending SIGKILL to every process of its generation");
            }
            escalated = true;
            scope.with(Scope::kill);
            match clock::timeout(plan.release_timeout, leader_exit(&mut plan.exited)).await {
                Some(exit) => exit,
                None => {
                    return Err(StopError::GroupSurvived {
                        pgid,
                        remaining: scope.with(Scope::live).iter().map(|p| p.pid).collect(),
                    })
                }
            }
        }
    };
    let signal_to_exit = started.now();

    // Workers and helpers get what is left of the grace to finish on their own, then SIGKILL.
    let step = Clock::new();
    let kill_at = if escalated {
        (step, Duration::ZERO)
    } else {
        (started, plan.grace)
    };
    match scope.wait_gone(kill_at, plan.release_timeout).await {
        Ok(killed) => escalated |= killed,
        Err(remaining) => return Err(StopError::GroupSurvived { pgid, remaining }),
    }
    let group_gone = step.now();

    let step = Clock::new();
    if let Some(addr) = plan.port {
        while accepts_connections(addr).await {
            if step.now() >= plan.release_timeout {
                return Err(StopError::PortStillBound { port: addr.port() });
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
    }
    let port_free = step.now();

    let seen = scope.with(|scope| scope.seen_pids());
    let step = Clock::new();
    if let Some(check) = &plan.release_check {
        wait_released(check, &seen, plan.release_timeout).await?;
    }
    let release_check = step.now();

    let step = Clock::new();
    if let Some(query) = &plan.gpu_query {
        wait_gpu_released(query, &seen, plan.release_timeout).await?;
    }
    let gpu_release = step.now();

    let stopped = Stopped {
        pid: Some(pgid),
        exit: Some(exit),
        signal_to_exit,
        escalated_to_kill: escalated,
        group_gone,
        port_free,
        release_check,
        gpu_release,
        total: started.now(),
    };
    tracing::info!(server = %plan.server, pid = pgid, exit = %exit, ?stopped, "server stopped");
    Ok(stopped)
}
