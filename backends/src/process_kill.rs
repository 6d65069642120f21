//! [`ProcessKill`]: the restart strategy for a server respawn owns — stop the whole process
//! group, then start a new one, through the [`ServerActor`].

use std::time::Duration;

use actix::prelude::*;
use respawn_core::StopMode;
use tokio::time::Instant;

use crate::restart::{Restart, RestartError, RestartReport};
use crate::server::{ServerActor, Start, Stop};

/// Restarts an owned server by [`Stop`] then [`Start`]. Its report has
/// `ready_confirmed = false`: the caller's health checker confirms readiness.
///
/// The stop follows the restart's [`StopMode`]: the grace for [`StopMode::Graceful`], none for
/// [`StopMode::Kill`] (SIGKILL to every process of the old generation, no SIGTERM first: a hung
/// server would spend the whole grace ignoring it).
#[derive(Debug, Clone)]
pub struct ProcessKill {
    /// The actor owning the server.
    pub server: Addr<ServerActor>,
    /// Time between SIGTERM and SIGKILL in a graceful stop.
    pub grace: Duration,
}

impl ProcessKill {
    /// The strategy's name in reports, logs and a supervisor's `restart_strategies`.
    pub const NAME: &'static str = "process_kill";

    /// A strategy that restarts the server owned by `server`, granting it `grace` to exit.
    pub fn new(server: Addr<ServerActor>, grace: Duration) -> Self {
        Self { server, grace }
    }
}

impl Actor for ProcessKill {
    type Context = Context<Self>;
}

impl Handler<Restart> for ProcessKill {
    type Result = ResponseFuture<Result<RestartReport, RestartError>>;

    fn handle(&mut self, msg: Restart, _ctx: &mut Self::Context) -> Self::Result {
        let server = self.server.clone();
        let grace = match msg.stop {
            StopMode::Graceful => self.grace,
            StopMode::Kill => Duration::ZERO,
        };
        Box::pin(async move {
            let begun = Instant::now();
            tracing::info!(
                hung = msg.hung.0,
                next = msg.next.0,
                cause = msg.cause.as_str(),
                stop = msg.stop.as_str(),
                "restarting by process kill"
            );
            let gone = || RestartError::ActorGone { actor: "server" };
            server
                .send(Stop { grace })
                .await
                .map_err(|_| gone())?
                .map_err(RestartError::Stop)?;
            let stopped_at = Instant::now();
            let started = server
                .send(Start {
                    generation: msg.next,
                })
                .await
                .map_err(|_| gone())?
                .map_err(RestartError::Spawn)?;
            Ok(RestartReport {
                strategy: Self::NAME,
                pid: Some(started.server_pid),
                guardian_pid: started.guardian_pid,
                ready_confirmed: false,
                steps: vec![
                    ("stop", stopped_at - begun),
                    ("spawn", stopped_at.elapsed()),
                ],
                total: begun.elapsed(),
            })
        })
    }
}
