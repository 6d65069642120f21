//! The embedder's entry point: build a supervisor for a command (respawn owns the process) or for
//! a URL (a server respawn does not own, restarted through its REST endpoint or a command), start
//! it inside an actix system, and get one handle to send requests, restart, watch state and stop.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use respawn::supervisor::{Supervisor, SupervisorConfig, Target};
//! let target = Target::command("llm", "respawn", ["mock", "--port", "{port}"], 8001);
//! let supervisor = Supervisor::start(SupervisorConfig::new("llm"), target)?;
//! supervisor.wait_ready(std::time::Duration::from_secs(30)).await?;
//! let generation = supervisor.restart().await?;
//! println!("restarting generation {generation}");
//! supervisor.stop(std::time::Duration::from_secs(5)).await;
//! # Ok(()) }
//! ```

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use respawn_backends::{ContainmentError, ContainmentMode, ServerActor};
use respawn_core::{Generation, OperatorRestart, RequestConfig};
use tokio::sync::watch;

use crate::coordinator::{CoordinatorConfig, CoordinatorParts, RestartCoordinator};
use crate::deadlock_watch::{DeadlockWatch, DeadlockWatchConfig};
use crate::health_actor::HealthActor;
use crate::in_flight::InFlight;
use crate::messages::{RestartNow, Shutdown};
use crate::metrics::Metrics;
use crate::registry::strategies::{SelectionError, Strategies, StrategyContext};
use crate::replica::PoolMember;
use crate::state::{self, Clock, SharedSnapshot, SupervisorState, WaitError};
use crate::upstream::{Upstream, UpstreamConfig, UpstreamShared};
use crate::waiting::Waiting;

pub mod config;

pub use config::{restart_may_take, RestRestart, SupervisorConfig, Target};

/// Why a supervisor could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    /// A threshold is invalid.
    #[error("invalid configuration: {0}")]
    InvalidConfig(#[from] respawn_core::InvalidConfig),
    /// The named restart strategies cannot be used: unknown, repeated, or not applicable.
    #[error(transparent)]
    Strategy(#[from] SelectionError),
    /// The containment asked for (`ServerSpec::containment`) is not available here.
    #[error(transparent)]
    Containment(#[from] ContainmentError),
    /// A URL target has no strategy that could restart it.
    #[error("the server at {url} is not owned by respawn and no restart endpoint or restart command is configured; hangs will be reported but cannot be fixed")]
    NoStrategy {
        /// The server's URL.
        url: String,
    },
}

/// A running supervisor: the handles of its actors and the shared state.
#[derive(Clone)]
pub struct Supervisor {
    name: String,
    coordinator: Addr<RestartCoordinator>,
    server: Option<Addr<ServerActor>>,
    containment: Option<ContainmentMode>,
    health: Addr<HealthActor>,
    state: watch::Receiver<SupervisorState>,
    metrics: Arc<Metrics>,
    in_flight: Arc<InFlight>,
    upstream: Arc<UpstreamShared>,
    strategies: Arc<[&'static str]>,
    snapshot: Arc<SharedSnapshot>,
    clock: Clock,
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervisor")
            .field("name", &self.name)
            .field("strategies", &self.strategies)
            .finish_non_exhaustive()
    }
}

impl Supervisor {
    /// Starts the actors and the first generation, with the built-in restart strategies
    /// ([`Strategies::builtin`]). Must run inside an actix system.
    pub fn start(config: SupervisorConfig, target: Target) -> Result<Self, SupervisorError> {
        Self::start_with(&Strategies::builtin(), config, target)
    }

    /// Starts the actors and the first generation, asking the strategies that
    /// `config.restart_strategies` names in `strategies` (a [`Registry`](crate::registry::Registry)
    /// passes its own). A selection that cannot be used is refused before the server is started.
    /// Must run inside an actix system.
    pub fn start_with(
        strategies: &Strategies,
        config: SupervisorConfig,
        target: Target,
    ) -> Result<Self, SupervisorError> {
        Self::start_member(strategies, config, target, None)
    }

    /// Like [`start_with`](Self::start_with), as replica `pool.replica` of a pool: its incidents
    /// and successes go to the pool's one quarantine table, and its requests read that table.
    pub(crate) fn start_member(
        strategies: &Strategies,
        config: SupervisorConfig,
        target: Target,
        pool: Option<PoolMember>,
    ) -> Result<Self, SupervisorError> {
        config.core.validate()?;
        let base_url = target.base_url();
        let (state_tx, state_rx) = state::channel();
        let clock = Clock::new();
        let snapshot = match &pool {
            Some(member) => SharedSnapshot::sharing(Arc::clone(member.quarantine.board())),
            None => SharedSnapshot::with_clock(clock),
        };
        let replica = pool.as_ref().map_or(0, |member| member.replica);
        let metrics = Arc::new(
            Metrics::with_log_lines_dropped(config.log_lines_dropped.clone())
                .with_waiting(Waiting::new(config.waiting)),
        );
        let in_flight = InFlight::with_clock(clock);
        let health_url = format!("{base_url}{}", config.health_path);
        let core = config.core;
        let coordinator_config = CoordinatorConfig {
            name: config.name.clone(),
            core,
            enable_restart: config.enable_restart,
        };
        // The coordinator's address exists before the coordinator, so that the actors that report
        // to it can be built first and handed to it.
        let ctx: Context<RestartCoordinator> = Context::new();
        let me = ctx.address();
        // Only an actor: the process is spawned when the coordinator starts, after every check.
        let mut containment = None;
        let server = match &target {
            Target::Command(spec) => {
                let server = ServerActor::new((**spec).clone(), me.clone().recipient());
                containment = Some(server.containment()?);
                Some(server.start())
            }
            Target::Url { .. } => None,
        };
        let strategies = strategies.build(
            config.restart_strategies.as_deref(),
            &StrategyContext {
                config: &config,
                target: &target,
                server: server.as_ref(),
                base_url: &base_url,
                health_url: &health_url,
            },
        )?;
        if strategies.is_empty() && matches!(target, Target::Url { .. }) && config.enable_restart {
            return Err(SupervisorError::NoStrategy { url: base_url });
        }
        let names: Arc<[&'static str]> = strategies.iter().map(|s| s.name).collect();
        let health = HealthActor::new(
            health_url.clone(),
            core.health.timeout,
            me.clone().recipient(),
        )
        .start();
        let parts = CoordinatorParts {
            strategies,
            server: server.clone(),
            health: health.clone().recipient(),
            state: state_tx,
            snapshot: Arc::clone(&snapshot),
            clock,
            metrics: Arc::clone(&metrics),
            in_flight: Arc::clone(&in_flight),
            pool,
        };
        let coordinator = ctx.run(RestartCoordinator::new(coordinator_config, parts)?);
        DeadlockWatch::new(
            DeadlockWatchConfig {
                base_url: base_url.clone(),
                canary_timeout: core.progress.canary_timeout,
                metric: config.progress_metric.clone(),
                canary_body: config.canary_body.clone(),
                tick: Duration::from_millis(500),
            },
            Arc::clone(&in_flight),
            coordinator.clone(),
        )
        .start();
        let upstream = Arc::new(UpstreamShared {
            config: UpstreamConfig {
                base_url,
                request: RequestConfig::from_core(&core, config.enable_restart),
                wait_bound: config.waiting.max_time.unwrap_or_else(|| {
                    config::restart_may_take(core.health.startup_timeout, config.stop_grace)
                }),
                resume: crate::proxy::resume::resolve(
                    config.resume,
                    matches!(&target, Target::Command(spec)
                        if crate::proxy::resume::command_is_vllm(&spec.program, &spec.args)),
                ),
            },
            state: state_rx.clone(),
            snapshot: Arc::clone(&snapshot),
            clock,
            coordinator: coordinator.clone(),
            metrics: Arc::clone(&metrics),
            in_flight: Arc::clone(&in_flight),
            replica,
        });
        Ok(Self {
            name: config.name,
            coordinator,
            server,
            containment,
            health,
            state: state_rx,
            metrics,
            in_flight,
            upstream,
            strategies: names,
            snapshot,
            clock,
        })
    }

    /// The machine's published snapshot (phase, generation, the quarantine table).
    pub fn snapshot(&self) -> &Arc<SharedSnapshot> {
        &self.snapshot
    }

    /// The supervisor's clock.
    pub fn clock(&self) -> Clock {
        self.clock
    }

    /// Lifts every quarantine; answers how many fingerprints were quarantined.
    pub async fn clear_quarantine(&self) -> Result<usize, MailboxError> {
        self.coordinator
            .send(crate::messages::ClearQuarantine)
            .await
    }

    /// The server's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The names of the restart strategies it asks, in order.
    pub fn strategy_names(&self) -> &[&'static str] {
        &self.strategies
    }

    /// A receiver of the published state.
    pub fn state(&self) -> watch::Receiver<SupervisorState> {
        self.state.clone()
    }

    /// The coordinator (send it the [`crate::messages`]: `HangReport`, `RestartNow`, `Shutdown`).
    pub fn coordinator(&self) -> &Addr<RestartCoordinator> {
        &self.coordinator
    }

    /// The actor owning the child, when respawn owns it.
    pub fn server(&self) -> Option<&Addr<ServerActor>> {
        self.server.as_ref()
    }

    /// How the owned server's processes are contained (`None` for a server respawn does not own).
    pub fn containment(&self) -> Option<ContainmentMode> {
        self.containment
    }

    /// The health prober.
    pub fn health(&self) -> &Addr<HealthActor> {
        &self.health
    }

    /// Shared counters.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The requests in flight.
    pub fn in_flight(&self) -> &Arc<InFlight> {
        &self.in_flight
    }

    /// What every worker's sender shares.
    pub fn upstream_shared(&self) -> &Arc<UpstreamShared> {
        &self.upstream
    }

    /// A sender for the current thread (one per actix-web worker).
    pub fn upstream(&self) -> Upstream {
        Upstream::new(Arc::clone(&self.upstream))
    }

    /// Waits until a generation is ready.
    pub async fn wait_ready(&self, bound: Duration) -> Result<Generation, WaitError> {
        let mut rx = self.state.clone();
        state::wait_ready(&mut rx, Generation(1), bound).await
    }

    /// Restarts now (the operator's button); answers the generation that is being replaced.
    /// Not an incident: it goes at once and does not count toward the restart-intensity limit.
    pub async fn restart(&self) -> Result<Generation, MailboxError> {
        self.restart_for(OperatorRestart::Manual).await
    }

    /// Like [`restart`](Self::restart), recording who asked (a signal, or the operator's call).
    pub async fn restart_for(&self, by: OperatorRestart) -> Result<Generation, MailboxError> {
        self.coordinator.send(RestartNow { by }).await
    }

    /// Stops the child's whole process group and the supervision.
    pub async fn stop(&self, grace: Duration) {
        let _ = self.coordinator.send(Shutdown { grace }).await;
    }
}
