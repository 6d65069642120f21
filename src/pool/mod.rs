//! A pool of supervised replicas behind one address: each replica is a full [`Supervisor`] (its
//! own generation, detectors, restart gate and restart budget), and a router sends each request
//! to the ready replica with the fewest requests in flight, so that a hang costs the clients
//! nothing but one replica's capacity while it restarts.
//!
//! * Routing is the core's [`respawn_core::route`], fed from atomics ([`PoolUpstream`]).
//! * A request caught by a replica's hang is retried at once on another ready replica.
//! * One quarantine table for the pool ([`PoolQuarantine`]): a request's strikes on different
//!   replicas add up, and one trial request at a time runs for the whole pool.
//! * A rolling restart ([`Pool::rolling_restart`]) takes one replica at a time out of rotation,
//!   lets its requests finish within the grace, restarts it, waits until it is ready, and puts it
//!   back before the next; never two generations of one replica at once (its restart stops the
//!   old process group before the new one starts).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use respawn::pool::{Pool, PoolConfig, ReplicaSpec};
//! use respawn::supervisor::{SupervisorConfig, Target};
//! let replicas = (0..2u16)
//!     .map(|i| ReplicaSpec {
//!         config: SupervisorConfig::new(&format!("llm-{i}")),
//!         target: Target::command("llm", "respawn", ["mock", "--port", "{port}"], 8001 + i),
//!     })
//!     .collect();
//! let pool = Pool::start(PoolConfig::default(), replicas).await?;
//! pool.wait_ready(std::time::Duration::from_secs(30)).await?;
//! pool.rolling_restart().await;
//! pool.stop(std::time::Duration::from_secs(5)).await;
//! # Ok(()) }
//! ```

mod control;
pub mod sender;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use respawn_core::{Generation, OperatorRestart, Phase, PoisonTracker};
use tracing::{info, warn};

use crate::quarantine::PoolQuarantine;
use crate::registry::strategies::Strategies;
use crate::replica::PoolMember;
use crate::state::{wait_ready, SupervisorState, WaitError};
use crate::status::ReplicaStatus;
use crate::supervisor::{Supervisor, SupervisorConfig, SupervisorError, Target};

pub use control::PoolControl;
pub use sender::{PoolDelivery, PoolShared, PoolUpstream};

/// How the pool as a whole behaves.
#[derive(Clone, Debug)]
pub struct PoolConfig {
    /// The pool counts as ready (`/respawn/readyz`, the top-level status) while at least this
    /// many replicas are. Default 1.
    pub min_ready: usize,
    /// Pause between starting one replica and the next (a model load's memory peak); zero
    /// starts them together.
    pub start_stagger: Duration,
    /// How long a rolling restart lets a replica's requests finish before it stops it anyway.
    pub drain_grace: Duration,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            min_ready: 1,
            start_stagger: Duration::ZERO,
            drain_grace: Duration::from_secs(5),
        }
    }
}

/// One replica to start: its supervisor's settings and what it supervises.
#[derive(Clone, Debug)]
pub struct ReplicaSpec {
    /// Its supervisor's settings (give each replica its own name, for logs and metrics).
    pub config: SupervisorConfig,
    /// What it supervises (each replica its own port).
    pub target: Target,
}

/// Why a pool could not be started or asked.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// A pool needs at least one replica, and at most 64.
    #[error("a pool has 1 to {max} replicas, not {asked}")]
    Size {
        /// How many were asked for.
        asked: usize,
        /// The most a pool holds.
        max: usize,
    },
    /// A replica's supervisor could not be started.
    #[error("replica {replica}: {source}")]
    Replica {
        /// Its index.
        replica: usize,
        /// Why.
        source: SupervisorError,
    },
    /// No replica with that index.
    #[error("no replica {replica}: the pool has {len}")]
    NoSuchReplica {
        /// The index asked for.
        replica: usize,
        /// How many replicas the pool has.
        len: usize,
    },
}

/// A running pool: its replicas' supervisors and what the router shares.
#[derive(Clone)]
pub struct Pool {
    replicas: Arc<[Supervisor]>,
    ports: Arc<[Option<u16>]>,
    shared: Arc<PoolShared>,
    config: PoolConfig,
    rolling: Arc<tokio::sync::Mutex<()>>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("replicas", &self.replicas.len())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Pool {
    /// Starts every replica's supervisor with the built-in restart strategies; their servers
    /// start `config.start_stagger` apart, in the background (the pool answers at once, and its
    /// requests wait for a ready replica as during any start).
    /// Must run inside an actix system.
    pub async fn start(config: PoolConfig, replicas: Vec<ReplicaSpec>) -> Result<Self, PoolError> {
        Self::start_with(&Strategies::builtin(), config, replicas).await
    }

    /// Starts every replica's supervisor asking the restart strategies of `strategies`; their
    /// servers start `config.start_stagger` apart, in the background. A replica refused before
    /// its server started stops the ones already started.
    pub async fn start_with(
        strategies: &Strategies,
        config: PoolConfig,
        replicas: Vec<ReplicaSpec>,
    ) -> Result<Self, PoolError> {
        let asked = replicas.len();
        if asked == 0 || asked > respawn_core::ReplicaSet::CAPACITY {
            return Err(PoolError::Size {
                asked,
                max: respawn_core::ReplicaSet::CAPACITY,
            });
        }
        // One quarantine table for the whole pool, with the first replica's thresholds.
        let quarantine = replicas
            .first()
            .map(|spec| {
                PoolQuarantine::new(
                    spec.config.core.poison_threshold,
                    spec.config.core.quarantine_ttl,
                )
            })
            .unwrap_or_else(|| {
                PoolQuarantine::new(PoisonTracker::DEFAULT_THRESHOLD, PoisonTracker::DEFAULT_TTL)
            });
        let mut started: Vec<Supervisor> = Vec::with_capacity(asked);
        let mut ports = Vec::with_capacity(asked);
        for (replica, spec) in replicas.into_iter().enumerate() {
            ports.push(match &spec.target {
                Target::Command(server) => Some(server.port),
                Target::Url { .. } => None,
            });
            let stop_grace = spec.config.stop_grace;
            let member = PoolMember {
                quarantine: Arc::clone(&quarantine),
                replica,
                // Staggered in the background: the pool (and the listener in front) is up at once.
                start_after: config
                    .start_stagger
                    .saturating_mul(u32::try_from(replica).unwrap_or(u32::MAX)),
            };
            match Supervisor::start_member(strategies, spec.config, spec.target, Some(member)) {
                Ok(supervisor) => {
                    info!(replica, "replica started");
                    started.push(supervisor);
                }
                Err(source) => {
                    for supervisor in &started {
                        supervisor.stop(stop_grace).await;
                    }
                    return Err(PoolError::Replica { replica, source });
                }
            }
        }
        let wait_bound = started
            .iter()
            .map(|s| s.upstream_shared().config.wait_bound)
            .max()
            .unwrap_or(Duration::from_secs(60));
        let shared = Arc::new(PoolShared {
            cursor: AtomicUsize::new(0),
            held_out: (0..asked).map(|_| AtomicBool::new(false)).collect(),
            states: started.iter().map(Supervisor::state).collect(),
            wait_bound,
        });
        Ok(Self {
            replicas: started.into(),
            ports: ports.into(),
            shared,
            config,
            rolling: Arc::new(tokio::sync::Mutex::new(())),
        })
    }

    /// The replicas' supervisors, in index order.
    pub fn replicas(&self) -> &[Supervisor] {
        &self.replicas
    }

    /// How many replicas the pool has.
    pub fn len(&self) -> usize {
        self.replicas.len()
    }

    /// Whether the pool has no replica (never, once started).
    pub fn is_empty(&self) -> bool {
        self.replicas.is_empty()
    }

    /// The pool's settings.
    pub fn config(&self) -> &PoolConfig {
        &self.config
    }

    /// A sender for the current thread (one per actix-web worker).
    pub fn upstream(&self) -> PoolUpstream {
        PoolUpstream::new(
            self.replicas.iter().map(Supervisor::upstream).collect(),
            Arc::clone(&self.shared),
        )
    }

    /// How many replicas are ready and in rotation now.
    pub fn ready_count(&self) -> usize {
        self.replicas
            .iter()
            .enumerate()
            .filter(|(i, s)| {
                s.snapshot().load().phase == Phase::Ready && !self.shared.is_held_out(*i)
            })
            .count()
    }

    /// Whether at least `min_ready` replicas are ready.
    pub fn is_ready(&self) -> bool {
        self.ready_count() >= self.config.min_ready.max(1)
    }

    /// Whether every replica has been given up (the pool cannot serve again).
    pub fn all_given_up(&self) -> bool {
        self.replicas
            .iter()
            .all(|s| s.state().borrow().phase == Phase::Failed)
    }

    /// Waits until at least `min_ready` replicas are ready, within `bound`.
    pub async fn wait_ready(&self, bound: Duration) -> Result<(), WaitError> {
        // Running time: a pause of the machine is not time waited (crate::clock).
        let began = crate::clock::Clock::new();
        let mut states: Vec<_> = self.replicas.iter().map(Supervisor::state).collect();
        loop {
            for state in &mut states {
                state.borrow_and_update();
            }
            if self.is_ready() {
                return Ok(());
            }
            if self.all_given_up() {
                return Err(WaitError::Failed {
                    reason: "every replica was given up".to_owned(),
                });
            }
            let waited = began.now();
            if waited >= bound {
                return Err(WaitError::TimedOut { waited });
            }
            let changes = states.iter_mut().map(|state| Box::pin(state.changed()));
            let _ = tokio::time::timeout(bound - waited, futures_util::future::select_all(changes))
                .await;
        }
    }

    /// Restarts replica `replica` now (the operator's button); answers the generation being
    /// replaced. The router stops sending it requests as soon as it is no longer ready.
    pub async fn restart_replica(
        &self,
        replica: usize,
        by: OperatorRestart,
    ) -> Result<Generation, PoolError> {
        let supervisor = self.replicas.get(replica).ok_or(PoolError::NoSuchReplica {
            replica,
            len: self.replicas.len(),
        })?;
        Ok(supervisor.restart_for(by).await.unwrap_or(Generation::NONE))
    }

    /// Restarts every replica, one at a time: hold it out of rotation, let its requests finish
    /// within the drain grace, restart it, wait until its next generation is ready, put it back,
    /// then the next. A replica that has been given up is left alone. Rolling restarts asked for
    /// while one runs wait for it. Answers how many replicas were restarted.
    pub async fn rolling_restart(&self) -> usize {
        self.rolling_restart_for(OperatorRestart::Manual).await
    }

    /// Like [`rolling_restart`](Self::rolling_restart), recording who asked.
    pub async fn rolling_restart_for(&self, by: OperatorRestart) -> usize {
        let _one_at_a_time = self.rolling.lock().await;
        let mut restarted = 0;
        for (replica, supervisor) in self.replicas.iter().enumerate() {
            let phase = supervisor.state().borrow().phase;
            if matches!(phase, Phase::Failed | Phase::Stopping | Phase::Stopped) {
                continue;
            }
            info!(replica, "rolling restart: draining the replica");
            self.hold_out(replica, true);
            self.drain(supervisor).await;
            let replaced = match supervisor.restart_for(by).await {
                Ok(generation) => generation,
                Err(err) => {
                    warn!(replica, error = %err, "rolling restart: the replica's coordinator is gone");
                    self.hold_out(replica, false);
                    continue;
                }
            };
            let mut state = supervisor.state();
            let bound = self.shared.wait_bound;
            match wait_ready(&mut state, replaced.next(), bound).await {
                Ok(generation) => {
                    info!(
                        replica,
                        generation = generation.get(),
                        "rolling restart: the replica is back"
                    );
                    restarted += 1;
                }
                Err(err) => {
                    warn!(replica, error = %err, "rolling restart: the replica did not come back")
                }
            }
            self.hold_out(replica, false);
        }
        restarted
    }

    fn hold_out(&self, replica: usize, held: bool) {
        if let Some(flag) = self.shared.held_out.get(replica) {
            flag.store(held, Ordering::Release);
        }
    }

    /// Waits until `supervisor` has no request in flight (woken by the last one's end), or the
    /// drain grace ends.
    async fn drain(&self, supervisor: &Supervisor) {
        let emptied = supervisor.in_flight().until_empty();
        if crate::clock::timeout(self.config.drain_grace, emptied)
            .await
            .is_none()
        {
            warn!(
                in_flight = supervisor.in_flight().count(),
                "rolling restart: the drain grace ended with requests still in flight"
            );
        }
    }

    /// Each replica as `/respawn/status` lists it.
    pub fn replica_statuses(&self) -> Vec<ReplicaStatus> {
        self.replicas
            .iter()
            .enumerate()
            .map(|(index, supervisor)| {
                let state: SupervisorState = supervisor.state().borrow().clone();
                ReplicaStatus {
                    replica: u32::try_from(index).unwrap_or(u32::MAX),
                    state: state.phase,
                    generation: state.generation,
                    pid: state.pid,
                    port: self.ports.get(index).copied().flatten(),
                    restarts: state.restarts,
                    in_flight: u64::try_from(supervisor.in_flight().count()).unwrap_or(u64::MAX),
                    last_restart: state.last_restart,
                }
            })
            .collect()
    }

    /// Stops every replica (together: each stops its own process group).
    pub async fn stop(&self, grace: Duration) {
        let stops = self.replicas.iter().map(|s| s.stop(grace));
        futures_util::future::join_all(stops).await;
    }
}
