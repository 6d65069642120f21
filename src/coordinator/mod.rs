//! The `RestartCoordinator`: owns the supervision machine ([`Supervision`]) and drives it.
//!
//! It decides nothing itself. Every message from the other actors becomes one `handle_*` call on
//! the machine with the current time; then the machine's actions are carried out in order:
//! spawn the server, tell the prober which generation to watch, ask restart strategy *i*, set a
//! timer for a backoff, publish the state, log and count. One freeze noticed by a thousand
//! requests is one restart because the machine says so, not because of anything here.
//!
//! What it keeps besides the machine is only what the status document shows and no rule reads:
//! the child's pid, the last error's text, the last completed restart.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use respawn_backends::{Restart, RestartReport, ServerActor, ServerExited, Start, Stop};
use respawn_core::{
    Action, CoreConfig, FailReason, Fingerprint, ProbeAnswer, Supervision, SupervisionConfig,
    Traffic, Triage,
};
use tokio::sync::watch;
use tracing::{debug, error, info, warn};

use crate::in_flight::InFlight;
use crate::messages::{
    CanaryResult, ClearQuarantine, HangReport, LivenessOrder, LivenessTick, ProbeResult,
    ProgressSample, RequestSucceeded, RestartNow, Shutdown, TrialEnded, TrialStarted, Watch,
};
use crate::metrics::Metrics;
use crate::replica::PoolMember;
use crate::state::{unix_now_s, Clock, LastRestart, SharedSnapshot, SupervisorState};

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
    /// Every threshold of the machine.
    pub core: CoreConfig,
    /// `false`: detect and report hangs, never restart (the original design's
    /// `ENABLE_SERVER_RESTART=false`).
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
    /// Where the state is published for waiting requests and the status endpoint.
    pub state: watch::Sender<SupervisorState>,
    /// Where the one-word snapshot is published for the request path.
    pub snapshot: Arc<SharedSnapshot>,
    /// The supervisor's clock.
    pub clock: Clock,
    /// Shared counters.
    pub metrics: Arc<Metrics>,
    /// The requests in flight (suspects at an incident).
    pub in_flight: Arc<InFlight>,
    /// The pool this server is a replica of, if any: its quarantine table is the pool's.
    pub pool: Option<PoolMember>,
}

/// Drives the supervision machine; see the module docs.
pub struct RestartCoordinator {
    name: String,
    parts: CoordinatorParts,
    machine: Supervision,
    /// The text of the last error, for the status document and the give-up message.
    last_error: Option<String>,
    /// The current child's pid, for the status document and the log.
    pid: Option<u32>,
    /// Whether the last health probe got an error status (its first one is logged loudly).
    probe_failing: bool,
}

impl RestartCoordinator {
    /// A coordinator; fails if a threshold is invalid.
    pub fn new(
        config: CoordinatorConfig,
        parts: CoordinatorParts,
    ) -> Result<Self, respawn_core::InvalidConfig> {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u64::from(d.subsec_nanos()))
            .unwrap_or(0x9e37_79b9);
        let machine = Supervision::try_new(
            SupervisionConfig {
                core: config.core,
                strategies: parts.strategies.len(),
                enable_restart: config.enable_restart,
                shared_quarantine: parts.pool.is_some(),
            },
            parts.clock.now(),
            seed,
        )?;
        Ok(Self {
            name: config.name,
            parts,
            machine,
            last_error: None,
            pid: None,
            probe_failing: false,
        })
    }

    fn now(&self) -> std::time::Duration {
        self.parts.clock.now()
    }

    fn in_flight(&self) -> Vec<Fingerprint> {
        self.parts.in_flight.fingerprints()
    }

    fn publish(&self, update: impl FnOnce(&mut SupervisorState)) {
        self.parts.state.send_modify(update);
    }

    /// Records the model server's own pid and its guardian's (the pid to signal is the former).
    fn set_pids(&mut self, pid: Option<u32>, guardian_pid: Option<u32>) {
        self.pid = pid;
        self.publish(|s| {
            s.pid = pid;
            s.guardian_pid = guardian_pid;
        });
    }

    fn set_error(&mut self, message: String) {
        self.last_error = Some(message.clone());
        self.publish(|s| s.last_error = Some(message));
    }

    /// Carries out every action the machine has queued, in order.
    fn drive(&mut self, ctx: &mut Context<Self>) {
        while let Some(action) = self.machine.poll_action() {
            self.act(ctx, action);
        }
    }

    fn act(&mut self, ctx: &mut Context<Self>, action: Action) {
        let name = self.name.clone();
        match action {
            Action::Spawn { generation } => match self.parts.server.clone() {
                Some(server) => {
                    server
                        .send(Start { generation })
                        .into_actor(self)
                        .map(move |result, act, ctx| {
                            let now = act.now();
                            match result {
                                Ok(Ok(started)) => {
                                    act.set_pids(Some(started.server_pid), started.guardian_pid);
                                    act.machine.handle_spawned(now);
                                }
                                Ok(Err(err)) => {
                                    act.set_error(format!("cannot start the model server: {err}"));
                                    act.machine.handle_spawn_failed(now);
                                }
                                Err(err) => {
                                    act.set_error(format!("the server actor is gone: {err}"));
                                    act.machine.handle_spawn_failed(now);
                                }
                            }
                            act.drive(ctx);
                        })
                        .spawn(ctx);
                }
                // Not owned: the server is already running; generation 1 is what answers now.
                None => {
                    let now = self.now();
                    self.machine.handle_spawned(now);
                }
            },
            Action::Watch { generation } => {
                let pid = self.pid.unwrap_or(0);
                info!(server = %name, generation = generation.get(), pid, "server started; waiting until it is ready");
                self.publish(|s| s.ready_at = None);
                self.parts.health.do_send(Watch { generation });
            }
            Action::Restart {
                hung,
                next,
                cause,
                stop,
                strategy,
            } => self.ask_strategy(
                ctx,
                Restart {
                    hung,
                    next,
                    cause,
                    stop,
                },
                strategy,
            ),
            Action::WakeAt(at) => {
                let delay = at.saturating_sub(self.now());
                ctx.run_later(delay, |act, ctx| {
                    let now = act.now();
                    act.machine.handle_timeout(now);
                    act.drive(ctx);
                });
            }
            Action::Detected { hang, triage } => {
                if !hang.cause.is_operator() {
                    self.parts.metrics.hang_detected(hang.cause);
                }
                let generation = hang.generation;
                let cause = hang.cause.as_str();
                match triage {
                    Triage::Operator => {
                        info!(server = %name, generation = generation.get(), cause, "restart requested by the operator")
                    }
                    Triage::Incident => {
                        warn!(server = %name, generation = generation.get(), cause, "hang detected")
                    }
                    Triage::ReportOnly => {
                        warn!(server = %name, generation = generation.get(), cause, "hang detected");
                        warn!(server = %name, generation = generation.get(), "restarts are disabled (ENABLE_SERVER_RESTART=false): reporting only");
                    }
                    Triage::FailedStart => {
                        warn!(server = %name, generation = generation.get(), cause, "the new generation failed during its start")
                    }
                    Triage::Joined => {
                        debug!(server = %name, generation = generation.get(), cause, "hang report joins the restart under way")
                    }
                    Triage::Stale => {
                        debug!(server = %name, generation = generation.get(), cause, "stale hang report ignored")
                    }
                }
            }
            Action::StartupTimedOut { generation, after } => {
                warn!(server = %name, generation = generation.get(), after_s = after.as_secs(), "the server did not become ready within the startup timeout");
                self.set_error(format!(
                    "the server did not become ready within the startup timeout ({}s)",
                    after.as_secs()
                ));
            }
            Action::RestartScheduled { cause, delay } => {
                self.parts.metrics.restart_started(cause);
                if !delay.is_zero() {
                    info!(server = %name, delay_ms = delay.as_millis() as u64, "backing off before the restart");
                }
            }
            Action::StrategiesExhausted => {
                warn!(server = %name, "every restart strategy failed; backing off");
            }
            Action::Ready {
                generation,
                startup,
                recovery,
            } => {
                let last = recovery.map(|r| {
                    self.parts.metrics.recovered(r.took);
                    info!(
                        server = %name,
                        generation = generation.get(),
                        cause = r.cause.as_str(),
                        recovery_ms = r.took.as_millis() as u64,
                        "recovered: the new generation is ready"
                    );
                    LastRestart {
                        cause: r.cause,
                        duration_ms: u64::try_from(r.took.as_millis()).unwrap_or(u64::MAX),
                        at: unix_now_s().saturating_sub(r.took.as_secs()),
                    }
                });
                if last.is_none() {
                    info!(server = %name, generation = generation.get(), startup_ms = startup.as_millis() as u64, "server ready");
                }
                self.publish(|s| {
                    s.ready_at = Some(unix_now_s());
                    if let Some(last) = last {
                        s.last_restart = Some(last);
                    }
                });
            }
            Action::Suspects(suspects) => {
                if let Some(pool) = &self.parts.pool {
                    info!(
                        server = %name,
                        replica = pool.replica,
                        suspects = suspects.len(),
                        "the pool's quarantine counts the requests in flight at this replica's incident"
                    );
                    // Counted before this report is acknowledged: a request it caught is admitted
                    // on another replica only after that (see `Upstream::after_failure_counted`).
                    for fingerprint in pool.quarantine.on_hang(pool.replica, &suspects) {
                        self.quarantined(fingerprint);
                    }
                }
            }
            Action::Quarantined(fingerprint) => self.quarantined(fingerprint),
            Action::QuarantineCleared { released } => {
                self.parts.metrics.quarantine_released(released);
                info!(server = %name, released, "the quarantine was cleared by the operator");
            }
            Action::Failed(reason) => {
                // Say what kept failing, not only that the limit was reached.
                let message = match (reason, self.last_error.clone()) {
                    (FailReason::FirstStartFailed, Some(last)) => last,
                    (FailReason::Exhausted(reason), Some(last)) => {
                        format!("{reason}; last failure: {last}")
                    }
                    (reason, None) => reason.to_string(),
                };
                error!(server = %name, reason = %message, "giving up on the model server");
                self.set_error(message);
            }
            Action::Life { generation, at } => {
                self.parts.snapshot.publish_life(generation, at);
            }
            Action::Publish(status) => {
                self.parts.snapshot.publish(&status, self.machine.poison());
                self.publish(|s| {
                    s.phase = status.phase;
                    s.generation = status.generation;
                    s.restarts = status.restarts;
                    s.last_cause = status.last_cause;
                });
            }
        }
    }

    fn quarantined(&self, fingerprint: Fingerprint) {
        self.parts.metrics.quarantined();
        warn!(server = %self.name, fingerprint = %format_args!("{:016x}", fingerprint.0), "request quarantined: it hung the server on its own");
    }

    fn ask_strategy(&mut self, ctx: &mut Context<Self>, restart: Restart, index: usize) {
        let Restart {
            hung,
            next,
            cause,
            stop,
        } = restart;
        let Some(strategy) = self.parts.strategies.get(index).cloned() else {
            let now = self.now();
            self.machine.handle_restart_failed(now, index);
            return;
        };
        info!(server = %self.name, strategy = strategy.name, hung = hung.get(), next = next.get(), cause = cause.as_str(), stop = stop.as_str(), "restarting");
        strategy
            .recipient
            .send(restart)
            .into_actor(self)
            .map(move |result, act, ctx| {
                let outcome: Result<RestartReport, String> = match result {
                    Ok(Ok(report)) => Ok(report),
                    Ok(Err(err)) => Err(err.to_string()),
                    Err(err) => Err(format!("the strategy actor is gone: {err}")),
                };
                let now = act.now();
                match outcome {
                    Ok(report) => {
                        debug!(server = %act.name, strategy = report.strategy, steps = ?report.steps, "restart strategy done");
                        act.set_pids(report.pid, report.guardian_pid);
                        act.machine
                            .handle_restart_done(now, index, report.ready_confirmed);
                    }
                    Err(message) => {
                        warn!(server = %act.name, strategy = strategy.name, error = %message, "restart strategy failed; trying the next one");
                        act.set_error(format!("{}: {message}", strategy.name));
                        act.machine.handle_restart_failed(now, index);
                    }
                }
                act.drive(ctx);
            })
            .spawn(ctx);
    }
}

impl Actor for RestartCoordinator {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let delay = self
            .parts
            .pool
            .as_ref()
            .map_or(Duration::ZERO, |member| member.start_after);
        if delay.is_zero() {
            let now = self.now();
            self.machine.start(now);
            self.drive(ctx);
            return;
        }
        info!(server = %self.name, delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX), "staggered start: the server starts later");
        ctx.run_later(delay, |act, ctx| {
            // A shutdown meanwhile leaves it unstarted (the machine starts nothing after one).
            let now = act.now();
            act.machine.start(now);
            act.drive(ctx);
        });
    }
}

impl Handler<HangReport> for RestartCoordinator {
    type Result = ();

    fn handle(&mut self, msg: HangReport, ctx: &mut Self::Context) {
        let now = self.now();
        let in_flight = self.in_flight();
        self.machine.handle_hang(now, msg.0, &in_flight);
        self.drive(ctx);
    }
}

impl Handler<ProbeResult> for RestartCoordinator {
    type Result = Option<respawn_core::NextProbe>;

    fn handle(&mut self, msg: ProbeResult, ctx: &mut Self::Context) -> Self::Result {
        if msg.answer.is_success() {
            self.probe_failing = false;
        } else {
            let body = msg.body_head.as_deref().unwrap_or("");
            match msg.answer {
                // A wrong health path answering 404 must be obvious: the first error status of a
                // run is a warning, with the start of its body.
                ProbeAnswer::Status(status) if !self.probe_failing => {
                    warn!(server = %self.name, generation = msg.generation.get(), status, body, "the health probe got an error status")
                }
                answer => {
                    debug!(server = %self.name, generation = msg.generation.get(), ?answer, body, "health probe failed")
                }
            }
            self.probe_failing = matches!(msg.answer, ProbeAnswer::Status(_));
        }
        let now = self.now();
        let in_flight = self.in_flight();
        let traffic = Traffic {
            last_heard: self.parts.in_flight.last_heard(),
            oldest_open: self.parts.in_flight.oldest_open(),
        };
        self.machine
            .handle_probe(now, msg.generation, msg.answer, &in_flight, traffic);
        self.drive(ctx);
        self.machine.next_probe(msg.generation)
    }
}

impl Handler<LivenessTick> for RestartCoordinator {
    type Result = LivenessOrder;

    fn handle(&mut self, msg: LivenessTick, ctx: &mut Self::Context) -> Self::Result {
        let now = self.now();
        let step = self
            .machine
            .liveness_step(now, msg.in_flight, msg.last_activity, msg.answered);
        self.drive(ctx);
        LivenessOrder {
            generation: self.machine.generation(),
            step,
        }
    }
}

impl Handler<ProgressSample> for RestartCoordinator {
    type Result = ();

    fn handle(&mut self, msg: ProgressSample, ctx: &mut Self::Context) {
        let now = self.now();
        let in_flight = self.in_flight();
        self.machine
            .handle_progress(now, msg.generation, msg.reading, &in_flight);
        self.drive(ctx);
    }
}

impl Handler<CanaryResult> for RestartCoordinator {
    type Result = ();

    fn handle(&mut self, msg: CanaryResult, ctx: &mut Self::Context) {
        let now = self.now();
        let in_flight = self.in_flight();
        self.machine
            .handle_canary(now, msg.generation, msg.answered, &in_flight);
        self.drive(ctx);
    }
}

impl Handler<ServerExited> for RestartCoordinator {
    type Result = ();

    fn handle(&mut self, msg: ServerExited, ctx: &mut Self::Context) {
        warn!(server = %self.name, generation = msg.generation.get(), pid = msg.pid, exit = %msg.status, "the server exited");
        self.set_error(format!("the server exited: {}", msg.status));
        let now = self.now();
        let in_flight = self.in_flight();
        self.machine.handle_exit(now, msg.generation, &in_flight);
        self.drive(ctx);
    }
}

impl Handler<RestartNow> for RestartCoordinator {
    type Result = MessageResult<RestartNow>;

    fn handle(&mut self, msg: RestartNow, ctx: &mut Self::Context) -> Self::Result {
        let now = self.now();
        let generation = self.machine.handle_operator_restart(now, msg.by);
        self.drive(ctx);
        MessageResult(generation)
    }
}

impl Handler<RequestSucceeded> for RestartCoordinator {
    type Result = ();

    fn handle(&mut self, msg: RequestSucceeded, ctx: &mut Self::Context) {
        let now = self.now();
        if let Some(pool) = &self.parts.pool {
            pool.quarantine.on_success(msg.fingerprint);
        }
        self.machine.handle_request_succeeded(now, msg.fingerprint);
        self.drive(ctx);
    }
}

impl Handler<TrialStarted> for RestartCoordinator {
    type Result = ();

    fn handle(&mut self, msg: TrialStarted, ctx: &mut Self::Context) {
        let now = self.now();
        debug!(server = %self.name, fingerprint = %format_args!("{:016x}", msg.fingerprint.0), "a suspect is sent alone, on trial");
        self.machine.handle_trial_started(now, msg.fingerprint);
        self.drive(ctx);
    }
}

impl Handler<TrialEnded> for RestartCoordinator {
    type Result = ();

    fn handle(&mut self, msg: TrialEnded, ctx: &mut Self::Context) {
        let now = self.now();
        self.machine.handle_trial_ended(now, msg.fingerprint);
        self.drive(ctx);
    }
}

impl Handler<ClearQuarantine> for RestartCoordinator {
    type Result = usize;

    fn handle(&mut self, _msg: ClearQuarantine, ctx: &mut Self::Context) -> usize {
        if let Some(pool) = &self.parts.pool {
            let released = pool.quarantine.clear();
            self.parts.metrics.quarantine_released(released);
            info!(server = %self.name, released, "the pool's quarantine was cleared by the operator");
            return released;
        }
        let now = self.now();
        let released = self.machine.handle_quarantine_cleared(now);
        self.drive(ctx);
        released
    }
}

impl Handler<Shutdown> for RestartCoordinator {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, msg: Shutdown, ctx: &mut Self::Context) -> Self::Result {
        let now = self.now();
        self.machine.handle_shutdown(now);
        self.drive(ctx);
        let server = self.parts.server.clone();
        let name = self.name.clone();
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
            .map(|(), act, ctx| {
                let now = act.now();
                act.machine.handle_stopped(now);
                act.drive(ctx);
            }),
        )
    }
}

#[cfg(test)]
mod tests;
