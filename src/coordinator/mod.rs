//! The `RestartCoordinator`: receives every hang report, decides with the core's `RestartGate`
//! and `RestartPolicy`, asks the restart strategies in order, and publishes the supervisor's state.
//!
//! One freeze noticed by a thousand requests is one restart: the gate answers `StartRestart` to the
//! first report against the current generation and `AlreadyRestarting` or `Stale` to the rest.

mod messages;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use respawn_backends::{Restart, RestartReport, ServerActor, ServerExited, Start, Stop};
use respawn_core::{
    GateDecision, Generation, HangCause, Phase, PoisonTracker, PolicyDecision, RestartGate,
    RestartPolicy,
};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

pub use messages::{
    Hang, Ready, RequestSucceeded, RestartNow, Shutdown, StartupTimedOut, Unhealthy,
};

use crate::health_actor::Watch;
use crate::in_flight::InFlight;
use crate::metrics::Metrics;
use crate::state::{unix_now_s, LastRestart, SupervisorState};

/// One restart strategy the coordinator can ask, by name.
#[derive(Clone)]
pub struct Strategy {
    /// For logs and status (`process_kill`, `rest_endpoint`, `command`).
    pub name: &'static str,
    /// The actor that answers `Restart`.
    pub recipient: Recipient<Restart>,
}

impl std::fmt::Debug for Strategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Strategy")
            .field("name", &self.name)
            .finish()
    }
}

/// What the coordinator needs to know besides its collaborators.
#[derive(Clone, Debug)]
pub struct CoordinatorConfig {
    /// The server's name, for logs.
    pub name: String,
    /// Restart policy: backoff and intensity.
    pub policy: respawn_core::RestartPolicyConfig,
    /// Hangs a request may be in flight at before it is quarantined.
    pub poison_threshold: u32,
    /// `false`: detect and report hangs, never restart (the seed's `ENABLE_SERVER_RESTART=false`).
    pub enable_restart: bool,
}

/// The parts the coordinator drives.
pub struct CoordinatorParts {
    /// The restart strategies, best first.
    pub strategies: Vec<Strategy>,
    /// The owned server, when respawn owns the process (started at once, stopped at shutdown).
    pub server: Option<Addr<ServerActor>>,
    /// The health prober (told to watch each new generation).
    pub health: Recipient<Watch>,
    /// Where the state is published.
    pub state: watch::Sender<SupervisorState>,
    /// Shared counters.
    pub metrics: Arc<Metrics>,
    /// The requests in flight (for poison tracking).
    pub in_flight: Arc<InFlight>,
}

/// A restart under way: why, and since when (for the recovery time).
#[derive(Clone, Copy, Debug)]
struct PendingRestart {
    cause: HangCause,
    detected_at: Instant,
    at_unix: u64,
}

/// Decides and drives restarts; see the module docs.
pub struct RestartCoordinator {
    config: CoordinatorConfig,
    parts: CoordinatorParts,
    gate: RestartGate,
    policy: RestartPolicy,
    poison: PoisonTracker,
    origin: Instant,
    pending: Option<PendingRestart>,
    started_at: Option<Instant>,
    rng: u64,
    suspects: HashSet<respawn_core::Fingerprint>,
    quarantined: HashSet<respawn_core::Fingerprint>,
}

impl RestartCoordinator {
    /// A coordinator; fails if the restart policy is invalid.
    pub fn new(
        config: CoordinatorConfig,
        parts: CoordinatorParts,
    ) -> Result<Self, respawn_core::InvalidConfig> {
        let policy = RestartPolicy::try_new(config.policy)?;
        let poison = PoisonTracker::new(config.poison_threshold.max(1));
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos() as u64)
            .unwrap_or(0x9e37_79b9);
        Ok(Self {
            config,
            parts,
            gate: RestartGate::new(),
            policy,
            poison,
            origin: Instant::now(),
            pending: None,
            started_at: None,
            rng: seed | 1,
            suspects: HashSet::new(),
            quarantined: HashSet::new(),
        })
    }

    fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    fn jitter(&mut self) -> u32 {
        // xorshift64: jitter needs spread, not secrecy.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng >> 32) as u32
    }

    fn publish(&self, update: impl FnOnce(&mut SupervisorState)) {
        self.parts.state.send_modify(update);
    }

    fn phase(&self) -> Phase {
        self.parts.state.borrow().phase
    }

    /// The first start of the server (generation 1).
    fn start_first(&mut self, ctx: &mut Context<Self>) {
        let generation = self.gate.generation().next();
        match self.parts.server.clone() {
            Some(server) => {
                self.publish(|s| s.phase = Phase::Starting);
                server
                    .send(Start { generation })
                    .into_actor(self)
                    .map(move |result, act, ctx| match result {
                        Ok(Ok(started)) => act.on_started(
                            ctx,
                            started.generation,
                            Some(started.server_pid),
                            started.guardian_pid,
                            false,
                        ),
                        Ok(Err(err)) => act.fail(format!("cannot start the model server: {err}")),
                        Err(err) => act.fail(format!("the server actor is gone: {err}")),
                    })
                    .spawn(ctx);
            }
            None => {
                // Not owned: the server is already running; generation 1 is what answers now.
                self.on_started(ctx, generation, None, None, false);
            }
        }
    }

    fn on_started(
        &mut self,
        ctx: &mut Context<Self>,
        expected: Generation,
        pid: Option<u32>,
        guardian_pid: Option<u32>,
        ready_confirmed: bool,
    ) {
        let generation = self.gate.started();
        if generation != expected {
            warn!(server = %self.config.name, %generation, %expected, "generation mismatch after a start");
        }
        self.started_at = Some(Instant::now());
        self.publish(|s| {
            s.generation = generation;
            s.pid = pid;
            s.guardian_pid = guardian_pid;
            s.phase = Phase::Starting;
            s.ready_at = None;
        });
        info!(server = %self.config.name, %generation, pid = pid.unwrap_or(0), "server started; waiting until it is ready");
        self.parts.health.do_send(Watch { generation });
        if ready_confirmed {
            let startup = self.started_at.map(|t| t.elapsed()).unwrap_or_default();
            self.on_ready(ctx, generation, startup);
        }
    }

    fn on_ready(&mut self, _ctx: &mut Context<Self>, generation: Generation, startup: Duration) {
        if generation != self.gate.generation() || self.phase() == Phase::Ready {
            return;
        }
        self.gate.ready();
        let now = self.now();
        self.policy.on_ready(now, startup);
        let last = self.pending.take().map(|p| {
            let took = p.detected_at.elapsed();
            self.parts.metrics.recovered(took);
            info!(
                server = %self.config.name,
                %generation,
                cause = p.cause.as_str(),
                recovery_ms = took.as_millis() as u64,
                "recovered: the new generation is ready"
            );
            LastRestart {
                cause: p.cause.as_str(),
                duration_ms: u64::try_from(took.as_millis()).unwrap_or(u64::MAX),
                at: p.at_unix,
            }
        });
        if last.is_none() {
            info!(server = %self.config.name, %generation, startup_ms = startup.as_millis() as u64, "server ready");
        }
        self.publish(|s| {
            s.phase = Phase::Ready;
            s.ready_at = Some(unix_now_s());
            if let Some(last) = last {
                s.last_restart = Some(last);
            }
        });
    }

    fn on_hang(&mut self, ctx: &mut Context<Self>, generation: Generation, cause: HangCause) {
        let phase = self.phase();
        if matches!(phase, Phase::Failed | Phase::Stopping | Phase::Stopped) {
            return;
        }
        self.parts.metrics.hang_detected(cause);
        // A start that dies or never becomes ready is a failed restart, not a new hang: the gate
        // already has a restart under way for this generation.
        if phase == Phase::Starting
            && generation == self.gate.generation()
            && matches!(cause, HangCause::Exited | HangCause::StartupTimeout)
            && self.gate.is_restarting()
        {
            warn!(server = %self.config.name, %generation, cause = cause.as_str(), "the new generation failed during its start");
            let pending = self.pending.get_or_insert(PendingRestart {
                cause,
                detected_at: Instant::now(),
                at_unix: unix_now_s(),
            });
            pending.cause = cause;
            self.schedule_restart(ctx, generation, cause);
            return;
        }
        match self.gate.report(respawn_core::Hang { generation, cause }) {
            GateDecision::StartRestart { generation } => {
                warn!(server = %self.config.name, %generation, cause = cause.as_str(), "hang detected");
                self.update_poison();
                self.publish(|s| s.last_cause = Some(cause));
                if !self.config.enable_restart {
                    warn!(server = %self.config.name, %generation, "restarts are disabled (ENABLE_SERVER_RESTART=false): reporting only");
                    // Nothing will be restarted: close the gate again so the next hang is reported
                    // too, and keep probing the same generation so that a recovery is seen.
                    self.gate.abandon();
                    self.parts.health.do_send(Watch { generation });
                    return;
                }
                self.pending = Some(PendingRestart {
                    cause,
                    detected_at: Instant::now(),
                    at_unix: unix_now_s(),
                });
                self.schedule_restart(ctx, generation, cause);
            }
            GateDecision::AlreadyRestarting { generation } => {
                debug!(server = %self.config.name, %generation, cause = cause.as_str(), "hang report joins the restart under way");
            }
            GateDecision::Stale { reported, current } => {
                debug!(server = %self.config.name, %reported, %current, cause = cause.as_str(), "stale hang report ignored");
            }
        }
    }

    fn update_poison(&mut self) {
        let in_flight = self.parts.in_flight.fingerprints();
        for fp in self.poison.on_hang(&in_flight) {
            warn!(server = %self.config.name, fingerprint = fp.0, "request quarantined: it was in flight at repeated hangs");
            self.quarantined.insert(fp);
        }
        for fp in in_flight {
            if self.poison.strikes(fp) > 0 {
                self.suspects.insert(fp);
            }
        }
        self.publish_poison();
    }

    fn publish_poison(&self) {
        self.parts
            .in_flight
            .publish_poison(self.suspects.clone(), self.quarantined.clone());
    }

    fn schedule_restart(&mut self, ctx: &mut Context<Self>, hung: Generation, cause: HangCause) {
        let now = self.now();
        let jitter = self.jitter();
        match self.policy.on_restart_needed(now, jitter) {
            PolicyDecision::GiveUp(reason) => {
                // Say what kept failing, not only that the limit was reached.
                let last = self.parts.state.borrow().last_error.clone();
                self.fail(match last {
                    Some(last) => format!("{reason}; last failure: {last}"),
                    None => format!("{reason}"),
                });
            }
            PolicyDecision::RestartAfter(delay) => {
                self.parts.metrics.restart_started(cause);
                self.publish(|s| {
                    s.restarts += 1;
                    s.phase = if delay.is_zero() {
                        Phase::Restarting
                    } else {
                        Phase::BackingOff
                    };
                });
                if delay.is_zero() {
                    self.run_strategy(ctx, hung, cause, 0);
                } else {
                    info!(server = %self.config.name, delay_ms = delay.as_millis() as u64, "backing off before the restart");
                    ctx.run_later(delay, move |act, ctx| act.run_strategy(ctx, hung, cause, 0));
                }
            }
        }
    }

    fn run_strategy(
        &mut self,
        ctx: &mut Context<Self>,
        hung: Generation,
        cause: HangCause,
        index: usize,
    ) {
        if matches!(
            self.phase(),
            Phase::Failed | Phase::Stopping | Phase::Stopped
        ) {
            return;
        }
        let Some(strategy) = self.parts.strategies.get(index).cloned() else {
            warn!(server = %self.config.name, "every restart strategy failed; backing off");
            self.schedule_restart(ctx, hung, cause);
            return;
        };
        self.publish(|s| s.phase = Phase::Restarting);
        let next = self.gate.generation().next();
        info!(server = %self.config.name, strategy = strategy.name, %hung, %next, cause = cause.as_str(), "restarting");
        strategy
            .recipient
            .send(Restart { hung, next, cause })
            .into_actor(self)
            .map(move |result, act, ctx| {
                let outcome: Result<RestartReport, String> = match result {
                    Ok(Ok(report)) => Ok(report),
                    Ok(Err(err)) => Err(err.to_string()),
                    Err(err) => Err(format!("the strategy actor is gone: {err}")),
                };
                match outcome {
                    Ok(report) => {
                        debug!(server = %act.config.name, strategy = report.strategy, steps = ?report.steps, "restart strategy done");
                        act.on_started(
                            ctx,
                            next,
                            report.pid,
                            report.guardian_pid,
                            report.ready_confirmed,
                        );
                    }
                    Err(message) => {
                        warn!(server = %act.config.name, strategy = strategy.name, error = %message, "restart strategy failed; trying the next one");
                        act.publish(|s| s.last_error = Some(format!("{}: {message}", strategy.name)));
                        act.run_strategy(ctx, hung, cause, index + 1);
                    }
                }
            })
            .spawn(ctx);
    }

    fn fail(&mut self, reason: String) {
        error!(server = %self.config.name, %reason, "giving up on the model server");
        self.gate.abandon();
        self.pending = None;
        self.publish(|s| {
            s.phase = Phase::Failed;
            s.last_error = Some(reason);
        });
    }
}

impl Actor for RestartCoordinator {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.start_first(ctx);
    }
}

impl Handler<Hang> for RestartCoordinator {
    type Result = ();

    fn handle(&mut self, msg: Hang, ctx: &mut Self::Context) {
        self.on_hang(ctx, msg.generation, msg.cause);
    }
}

impl Handler<Unhealthy> for RestartCoordinator {
    type Result = ();

    fn handle(&mut self, msg: Unhealthy, ctx: &mut Self::Context) {
        debug!(server = %self.config.name, generation = %msg.generation, failures = msg.failures, "health probes failing");
        self.on_hang(ctx, msg.generation, HangCause::HealthProbes);
    }
}

impl Handler<StartupTimedOut> for RestartCoordinator {
    type Result = ();

    fn handle(&mut self, msg: StartupTimedOut, ctx: &mut Self::Context) {
        warn!(server = %self.config.name, generation = %msg.generation, after_s = msg.after.as_secs(), "the server did not become ready within the startup timeout");
        self.publish(|s| {
            s.last_error = Some(format!(
                "the server did not become ready within the startup timeout ({}s)",
                msg.after.as_secs()
            ))
        });
        self.on_hang(ctx, msg.generation, HangCause::StartupTimeout);
    }
}

impl Handler<Ready> for RestartCoordinator {
    type Result = ();

    fn handle(&mut self, msg: Ready, ctx: &mut Self::Context) {
        self.on_ready(ctx, msg.generation, msg.startup);
    }
}

impl Handler<ServerExited> for RestartCoordinator {
    type Result = ();

    fn handle(&mut self, msg: ServerExited, ctx: &mut Self::Context) {
        warn!(server = %self.config.name, generation = %msg.generation, pid = msg.pid, status = %msg.status, "the server exited");
        self.publish(|s| s.last_error = Some(format!("the server exited: {}", msg.status)));
        self.on_hang(ctx, msg.generation, HangCause::Exited);
    }
}

impl Handler<RestartNow> for RestartCoordinator {
    type Result = MessageResult<RestartNow>;

    fn handle(&mut self, _msg: RestartNow, ctx: &mut Self::Context) -> Self::Result {
        let generation = self.gate.generation();
        self.on_hang(ctx, generation, HangCause::Manual);
        MessageResult(generation)
    }
}

impl Handler<RequestSucceeded> for RestartCoordinator {
    type Result = ();

    fn handle(&mut self, msg: RequestSucceeded, _ctx: &mut Self::Context) {
        self.poison.on_success(msg.fingerprint);
        if self.suspects.remove(&msg.fingerprint) {
            self.publish_poison();
        }
    }
}

impl Handler<Shutdown> for RestartCoordinator {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, msg: Shutdown, _ctx: &mut Self::Context) -> Self::Result {
        self.publish(|s| s.phase = Phase::Stopping);
        let server = self.parts.server.clone();
        let name = self.config.name.clone();
        Box::pin(
            async move {
                if let Some(server) = server {
                    match server.send(Stop { grace: msg.grace }).await {
                        Ok(Ok(stopped)) => info!(server = %name, total_ms = stopped.total.as_millis() as u64, "server stopped"),
                        Ok(Err(err)) => warn!(server = %name, error = %err, "stopping the server"),
                        Err(err) => warn!(server = %name, error = %err, "the server actor is gone"),
                    }
                }
            }
            .into_actor(self)
            .map(|(), act, _ctx| act.publish(|s| s.phase = Phase::Stopped)),
        )
    }
}

#[cfg(test)]
mod tests;
